//! `assetgc demo`: builds a small sample app — a SQLite database with users and posts (some
//! soft-deleted), a media folder with referenced files, orphans, an ignored folder, a file younger
//! than `min_age`, and rows whose files are gone — then scans it. No service is needed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::Ui;
use crate::cli::{DemoArgs, Global, ScanArgs};
use crate::error::{Error, Exit, Result};

const MARKER: &str = ".assetgc-demo";

const CONFIG: &str = r#"# The demo app's assetgc configuration (written by `assetgc demo`).
app_name = "Demo Gallery"

[stores.media]
url = "./media"
ignore = ["static/**"]
min_age = "1h"
public_url = "https://cdn.example.com/media"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "post images"
query = """
  SELECT p.id, p.title, u.username AS owner, p.image AS key, 'image' AS media_type, p.created_at,
         CASE WHEN p.deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status, p.slug
  FROM posts p JOIN users u ON u.id = p.author_id
"""
link = "https://gallery.example.com/p/{slug}/"

[[references]]
name = "avatars"
query = """
  SELECT id, username AS title, username AS owner, avatar AS key, created_at,
         CASE WHEN deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status
  FROM users
"""
link = "https://gallery.example.com/admin/users/{id}/"
"#;

/// A tiny deterministic generator, so every demo looks the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("demo: cannot write {}", what.display()), e)
}

fn write_file(root: &Path, key: &str, size: usize, age: Duration) -> Result<()> {
    let path = root.join(key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let body: Vec<u8> = (0..size)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    std::fs::write(&path, body).map_err(io(&path))?;
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.set_modified(SystemTime::now() - age).map_err(io(&path))?;
    Ok(())
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_none();
        if dir.join(MARKER).exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        } else if !empty {
            return Err(Error::Usage(format!(
                "{} exists and is not a demo folder; choose another with --dir DIR",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::write(
        dir.join(MARKER),
        "built by `assetgc demo`; safe to delete\n",
    )
    .map_err(io(dir))
}

const DAY: Duration = Duration::from_hours(24);

/// Users and posts, some soft-deleted, a few pointing at files that are gone; the files of the
/// others.
async fn sample_rows(mut db: SqliteConnection, media: &Path, rng: &mut Rng) -> Result<()> {
    let sql_err = |e: sqlx::Error| Error::State(format!("demo database: {e}"));
    let now = chrono::Utc::now();
    let stamp = |days_ago: u64| {
        (now - chrono::Duration::days(i64::try_from(days_ago).unwrap_or(0))
            - chrono::Duration::hours(3))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
    };
    let mut tx = db.begin().await.map_err(sql_err)?;
    for id in 1..=60u64 {
        let age = 2 + rng.below(24);
        let deleted = (id % 13 == 0).then(|| stamp(1));
        // Three users point at avatars that were removed by hand.
        let gone = matches!(id, 7 | 23 | 26 | 41);
        let avatar = if id % 10 == 5 {
            None
        } else {
            Some(format!("avatars/user_{id:03}.jpg"))
        };
        if let Some(a) = &avatar
            && !gone
        {
            let size = 8_000 + usize::try_from(rng.below(40_000)).unwrap_or(0);
            write_file(media, a, size, DAY * u32::try_from(age).unwrap_or(1))?;
        }
        sqlx::query("INSERT INTO users (id, username, avatar, created_at, deleted_at) VALUES (?, ?, ?, ?, ?)")
            .bind(i64::try_from(id).unwrap_or(0))
            .bind(format!("user{id:03}"))
            .bind(avatar)
            .bind(stamp(age))
            .bind(deleted)
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
    }
    let words = [
        "sunset", "harbour", "forest", "city", "portrait", "mountain", "river", "market",
    ];
    for id in 1..=240u64 {
        let age = 1 + rng.below(25);
        let word = words[usize::try_from(id).unwrap_or(0) % words.len()];
        let key = format!("posts/{word}/post-{id:04}.jpg");
        // Some apps store a leading `/`; both forms name the same file.
        let stored = if id % 17 == 0 {
            format!("/{key}")
        } else {
            key.clone()
        };
        let deleted = (id % 11 == 0).then(|| stamp(1));
        let gone = id % 29 == 0 || id % 61 == 0 || matches!(id, 44 | 143);
        if !gone {
            let size = 40_000 + usize::try_from(rng.below(400_000)).unwrap_or(0);
            write_file(media, &key, size, DAY * u32::try_from(age).unwrap_or(1))?;
        }
        sqlx::query("INSERT INTO posts (id, author_id, title, slug, image, created_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(i64::try_from(id).unwrap_or(0))
            .bind(i64::try_from(1 + id % 60).unwrap_or(1))
            .bind(format!("A {word} photo #{id}"))
            .bind(format!("{word}-{id}"))
            .bind(stored)
            .bind(stamp(age))
            .bind(deleted)
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
    }
    tx.commit().await.map_err(sql_err)?;
    db.close().await.map_err(sql_err)?;
    Ok(())
}

/// Orphans (failed saves, replaced avatars, test uploads), an old file outside the window,
/// ignored files and one uploaded just now.
fn sample_files(media: &Path, rng: &mut Rng) -> Result<()> {
    // Orphans: failed saves, replaced avatars, test uploads.
    for n in 1..=14u32 {
        let size = 50_000 + usize::try_from(rng.below(900_000)).unwrap_or(0);
        write_file(
            media,
            &format!("posts/tmp/upload-{n:03}.jpg"),
            size,
            DAY * (2 + n % 9),
        )?;
    }
    for n in 1..=6u32 {
        write_file(
            media,
            &format!("avatars/replaced/user_{n:03}_old.png"),
            20_000,
            DAY * (3 + n),
        )?;
    }
    write_file(media, "test upload (copy).jpg", 123_456, DAY * 4)?;
    // Outside the 30-day window: not a candidate for a default scan.
    write_file(media, "posts/archive/2019-banner.jpg", 300_000, DAY * 45)?;
    // Ignored, and too young to be an orphan.
    write_file(media, "static/logo.svg", 2_000, DAY * 20)?;
    write_file(media, "static/site.css", 9_000, DAY * 20)?;
    write_file(
        media,
        "posts/tmp/just-uploaded.jpg",
        70_000,
        Duration::from_mins(5),
    )?;

    Ok(())
}

pub async fn run(g: &Global, args: &DemoArgs, ui: Ui) -> Result<Exit> {
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    prepare_dir(&dir)?;
    let media = dir.join("media");
    let db_path = dir.join("app.db");
    let opts = SqliteConnectOptions::new()
        .filename(&db_path)
        .create_if_missing(true);
    let mut db = SqliteConnection::connect_with(&opts)
        .await
        .map_err(|e| Error::State(format!("demo database {}: {e}", db_path.display())))?;
    let sql_err = |e: sqlx::Error| Error::State(format!("demo database: {e}"));
    sqlx::raw_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT NOT NULL, avatar TEXT, created_at TEXT NOT NULL, deleted_at TEXT);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL REFERENCES users(id), title TEXT NOT NULL,
                             slug TEXT NOT NULL, image TEXT, created_at TEXT NOT NULL, deleted_at TEXT);",
    )
    .execute(&mut db)
    .await
    .map_err(sql_err)?;

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    sample_rows(db, &media, &mut rng).await?;
    sample_files(&media, &mut rng)?;
    std::fs::write(dir.join("assetgc.toml"), CONFIG).map_err(io(&dir))?;
    let cfg_path = dir.join("assetgc.toml");
    let cfg = crate::config::load(Some(&cfg_path))?
        .ok_or_else(|| Error::Usage("demo: the config vanished".into()))?;
    if !ui.quiet {
        outln!("Built a sample app in {}:", dir.display());
        outln!("  {}  (assetgc configuration)", cfg_path.display());
        outln!(
            "  {}  (SQLite: 60 users, 240 posts, some soft-deleted)",
            db_path.display()
        );
        outln!(
            "  {}  (uploads: referenced files, orphans, static/ ignored, one file uploaded just now)",
            media.display()
        );
        outln!(
            "Scanning it, as `assetgc --config {} scan` would:\n",
            cfg_path.display()
        );
    }
    let _ = g;
    let scan = ScanArgs {
        days: None,
        all: false,
        since: None,
        orphans_only: false,
        missing_only: false,
        stores: Vec::new(),
        output: None,
        format: None,
        json: false,
        notify: false,
        fail_on_findings: false,
        limit_list: 10,
    };
    super::scan::run_with(cfg, &scan, ui).await
}
