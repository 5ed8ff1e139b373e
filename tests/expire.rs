//! `assetgc expire` (SPEC §2 `[[expiry]]`, §3, §6): the trash-expiry story on each database
//! (free and premium authors' prompts soft-deleted 4, 6, 29 and 31 days ago, their images and
//! videos on the Cloudinary emulator, one image shared with a live prompt, one whose move fails),
//! the dry run that changes nothing, a run killed at random between file deletions and row
//! deletions, and the bad configurations refused before anything is done.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::cloudinary::{Emulator, Options, Resource};
use common::{Backend, Run, StateBackend, StateDb, TestDb, block_on, readme_example, write_file};
use serde_json::Value;

/// Runs `assetgc --config <config> <args…>` with `env` set, colour off.
fn assetgc_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("the assetgc binary is built");
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ASSETGC_CONFIG")
        .env_remove("ASSETGC_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run assetgc");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `deleted_at` N days ago, `NULL` for a live prompt, in each database's own date arithmetic.
fn days_ago(backend: Backend, days: Option<u32>) -> String {
    match (days, backend) {
        (None, _) => "NULL".into(),
        (Some(d), Backend::Sqlite) => format!("datetime('now', '-{d} days')"),
        (Some(d), Backend::Postgres) => format!("now() - interval '{d} days'"),
        (Some(d), Backend::MariaDb) => format!("NOW() - INTERVAL {d} DAY"),
    }
}

/// The SPEC's example `select`, adapted to each database's date arithmetic.
fn expiry_rule(backend: Backend) -> String {
    let (cutoff, param) = match backend {
        Backend::Sqlite => (
            "p.deleted_at < datetime('now', CASE WHEN u.is_premium THEN '-30 days' ELSE '-5 days' END)",
            "?",
        ),
        Backend::Postgres => (
            "p.deleted_at < now() - CASE WHEN u.is_premium THEN interval '30 days' ELSE interval '5 days' END",
            "$1",
        ),
        Backend::MariaDb => (
            "p.deleted_at < NOW() - INTERVAL (CASE WHEN u.is_premium THEN 30 ELSE 5 END) DAY",
            "?",
        ),
    };
    format!(
        r#"[[expiry]]
name = "trash"
store = "media"
select = """
  SELECT p.id, p.featured_image AS key, p.featured_video AS key_video,
         CASE WHEN u.is_premium THEN 'premium' ELSE 'free' END AS grp
  FROM prompts p JOIN auth_user u ON u.id = p.author_id
  WHERE {cutoff}
"""
delete = "DELETE FROM prompts WHERE id = {param} AND deleted_at IS NOT NULL"
releases = ["prompt images", "prompt videos"]
"#
    )
}

/// One prompt of the story: id, premium author, days since its soft delete, image, video.
struct Prompt {
    id: u32,
    premium: bool,
    deleted: Option<u32>,
    image: &'static str,
    video: Option<&'static str>,
}

const fn p(
    id: u32,
    premium: bool,
    deleted: Option<u32>,
    image: &'static str,
    video: Option<&'static str>,
) -> Prompt {
    Prompt {
        id,
        premium,
        deleted,
        image,
        video,
    }
}

/// Free authors keep their trash 5 days, premium ones 30: 2, 3, 4, 8 and 10 expire. Prompt 3's
/// image is also the image of live prompt 9; prompt 10's image cannot be moved at first; prompt
/// 11's image is a bare public_id with no type, never enough to delete: it stays, and its row.
const PROMPTS: [Prompt; 11] = [
    p(
        1,
        false,
        Some(4),
        "prompts/free-4d",
        Some("prompts/free-4d"),
    ),
    p(
        2,
        false,
        Some(6),
        "prompts/free-6d",
        Some("prompts/free-6d"),
    ),
    p(3, false, Some(29), "prompts/shared", None),
    p(
        4,
        false,
        Some(31),
        "prompts/free-31d",
        Some("prompts/free-31d"),
    ),
    p(5, true, Some(4), "prompts/prem-4d", Some("prompts/prem-4d")),
    p(6, true, Some(6), "prompts/prem-6d", None),
    p(
        7,
        true,
        Some(29),
        "prompts/prem-29d",
        Some("prompts/prem-29d"),
    ),
    p(
        8,
        true,
        Some(31),
        "prompts/prem-31d",
        Some("prompts/prem-31d"),
    ),
    p(9, false, None, "prompts/shared", Some("prompts/live")),
    p(10, false, Some(40), "prompts/stuck", None),
    p(11, false, Some(40), "prompts/bare", None),
];

const EXPIRED: [u32; 5] = [2, 3, 4, 8, 10];

fn image_field(id: &str) -> String {
    if id == "prompts/bare" {
        return id.to_string();
    }
    format!("image/upload/v1699999999/{id}.jpg")
}

struct Story {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    emulator: Emulator,
    db: TestDb,
    state: StateDb,
    env: Vec<(String, String)>,
}

impl Story {
    async fn new(backend: Backend) -> Option<Story> {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let db = TestDb::create(backend, &dir).await?;
        let emulator = Emulator::start(Options::default());
        let old = Utc::now() - chrono::Duration::days(60);
        let mut resources = Vec::new();
        for pr in &PROMPTS {
            resources.push(Resource::image(pr.image, old));
            if let Some(v) = pr.video {
                resources.push(Resource::video(v, old));
            }
        }
        emulator.add_many(resources);
        let boolean = match backend {
            Backend::Postgres => "boolean",
            _ => "integer",
        };
        let time = match backend {
            Backend::Postgres => "timestamptz",
            Backend::MariaDb => "datetime",
            Backend::Sqlite => "text",
        };
        let truth = |b: bool| match (backend, b) {
            (Backend::Postgres, true) => "true",
            (Backend::Postgres, false) => "false",
            (_, true) => "1",
            (_, false) => "0",
        };
        let mut sql = vec![
            format!(
                "CREATE TABLE auth_user (id integer PRIMARY KEY, username varchar(50) NOT NULL, is_premium {boolean} NOT NULL)"
            ),
            format!(
                "CREATE TABLE prompts (id integer PRIMARY KEY, author_id integer NOT NULL, featured_image varchar(200), featured_video varchar(200), deleted_at {time} NULL)"
            ),
            format!(
                "INSERT INTO auth_user VALUES (1, 'free', {}), (2, 'premium', {})",
                truth(false),
                truth(true)
            ),
        ];
        for pr in &PROMPTS {
            sql.push(format!(
                "INSERT INTO prompts VALUES ({}, {}, '{}', {}, {})",
                pr.id,
                if pr.premium { 2 } else { 1 },
                image_field(pr.image),
                pr.video.map_or("NULL".into(), |v| format!("'{v}'")),
                days_ago(backend, pr.deleted)
            ));
        }
        db.execute(&sql).await;
        let state = StateDb::create(StateBackend::Sqlite, &dir);
        let config = dir.join("assetgc.toml");
        // PostgreSQL runs the README's worked example as written; the others its adaptation.
        let text = if backend == Backend::Postgres {
            readme_example("trash-expiry")
        } else {
            format!(
                r#"[stores.media]
url = "${{CLOUDINARY_URL}}"

[databases.app]
url = "${{DATABASE_URL}}"

[[references]]
name = "prompt images"
query = "SELECT p.id, p.featured_image AS key, 'image' AS media_type FROM prompts p"

[[references]]
name = "prompt videos"
query = "SELECT p.id, p.featured_video AS key, 'video' AS media_type FROM prompts p"

{}"#,
                expiry_rule(backend)
            )
        };
        // One attempt: a failed move leaves its entry `failed` at once.
        std::fs::write(&config, format!("{text}\n[queue]\nmax_attempts = 1\n")).expect("config");
        let env = vec![
            ("CLOUDINARY_URL".to_string(), emulator.cloudinary_url()),
            ("DATABASE_URL".to_string(), db.url.clone()),
        ];
        Some(Story {
            _tmp: tmp,
            config,
            emulator,
            db,
            state,
            env,
        })
    }

    fn run(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assetgc_env(&self.config, args, &env)
    }

    /// (resource type, public_id) of every asset outside the trash.
    fn files(&self) -> BTreeSet<(String, String)> {
        self.emulator
            .resources()
            .into_iter()
            .filter(|r| !r.public_id.starts_with("assetgc-trash/"))
            .map(|r| (r.resource_type, r.public_id))
            .collect()
    }

    async fn rows(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for p in &PROMPTS {
            if self.row_exists(p.id).await {
                ids.push(p.id);
            }
        }
        ids
    }

    async fn row_exists(&self, id: u32) -> bool {
        use sqlx::Connection as _;
        let sql = format!("SELECT COUNT(*) FROM prompts WHERE id = {id}");
        let n: i64 = match self.db.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db.url)
                    .await
                    .expect("sqlite");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut c)
                    .await
                    .expect("count")
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db.url).await.expect("pg");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut c)
                    .await
                    .expect("count")
            }
            Backend::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&self.db.url)
                    .await
                    .expect("mariadb");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut c)
                    .await
                    .expect("count")
            }
        };
        n == 1
    }

    fn audit(&self) -> Vec<Vec<Option<String>>> {
        self.state.query(
            "SELECT resource_type, key, outcome, actor FROM audit ORDER BY id",
            &[],
        )
    }

    fn queue(&self) -> Vec<Vec<Option<String>>> {
        self.state.query(
            "SELECT id, resource_type, key, state, outcome, rule, row_id FROM queue ORDER BY id",
            &[],
        )
    }
}

fn group<'v>(rule: &'v Value, grp: &str) -> &'v Value {
    rule["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["grp"] == grp)
        .unwrap_or_else(|| panic!("no grp {grp} in {rule}"))
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", run.stdout, run.stderr))
}

async fn trash_expiry_story(backend: Backend) {
    let Some(s) = Story::new(backend).await else {
        return;
    };
    let name = backend.name();
    // The state exists before the dry run, so that it can be compared.
    let stats = s.run(&["queue", "stats"]);
    assert_eq!(stats.code, 0, "{name}: {}", stats.stderr);

    // --dry-run: only `select` runs; files, rows, queue and audit are as they were.
    let (files0, rows0, queue0, audit0) = (s.files(), s.rows().await, s.queue(), s.audit());
    let dry = s.run(&["expire", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{name}: {}{}", dry.stdout, dry.stderr);
    let report = json(&dry);
    assert_eq!(report["dry_run"], true);
    let rule = &report["rules"][0];
    assert_eq!(group(rule, "free")["rows_selected"], 5, "{name}: {rule}");
    assert_eq!(group(rule, "free")["rows_expired"], 4, "{name}: {rule}");
    assert_eq!(group(rule, "free")["rows_left"], 1, "{name}: {rule}");
    assert!(
        dry.stderr.contains("bare public_id"),
        "{name}: {}",
        dry.stderr
    );
    // free: 2 (image, video), 3 (image), 4 (image, video), 10 (image); premium: 8 (both).
    assert_eq!(group(rule, "free")["files"], 6, "{name}: {rule}");
    assert_eq!(group(rule, "premium")["rows_expired"], 1, "{name}: {rule}");
    assert_eq!(group(rule, "premium")["files"], 2, "{name}: {rule}");
    assert_eq!(s.files(), files0, "{name}: the dry run moved no file");
    assert_eq!(s.rows().await, rows0, "{name}: the dry run removed no row");
    assert_eq!(s.queue(), queue0, "{name}: the dry run queued nothing");
    assert_eq!(s.audit(), audit0, "{name}: the dry run wrote no audit row");

    // The run: prompt 10's image cannot be moved to the trash.
    s.emulator.fail_renames_of(&["prompts/stuck"]);
    let first = s.run(&["expire", "--json"]);
    assert_eq!(
        first.code, 4,
        "{name}: a failed entry makes the run incomplete: {}{}",
        first.stdout, first.stderr
    );
    let report = json(&first);
    let rule = &report["rules"][0];
    let free = group(rule, "free");
    assert_eq!(free["rows_selected"], 5, "{name}: {rule}");
    assert_eq!(free["rows_expired"], 3, "{name}: {rule}");
    assert_eq!(free["files_deleted"], 4, "{name}: {rule}");
    assert_eq!(free["kept_shared"], 1, "{name}: {rule}");
    assert_eq!(free["failures"], 1, "{name}: {rule}");
    assert_eq!(free["rows_left"], 2, "{name}: {rule}");
    let premium = group(rule, "premium");
    assert_eq!(premium["rows_expired"], 1, "{name}: {rule}");
    assert_eq!(premium["files_deleted"], 2, "{name}: {rule}");
    let left: BTreeSet<&str> = rule["left"]
        .as_array()
        .expect("left")
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    assert_eq!(left, BTreeSet::from(["10", "11"]), "{name}: {rule}");
    assert_eq!(
        s.rows().await,
        [1, 5, 6, 7, 9, 10, 11],
        "{name}: rows 2, 3, 4, 8 expired; 10 waits for its file, 11's file is not known"
    );
    let mut expect = files0.clone();
    for pr in PROMPTS
        .iter()
        .filter(|p| EXPIRED.contains(&p.id) && p.id != 10)
    {
        if pr.image != "prompts/shared" {
            expect.remove(&("image".to_string(), pr.image.to_string()));
        }
        if let Some(v) = pr.video {
            expect.remove(&("video".to_string(), v.to_string()));
        }
    }
    assert_eq!(
        s.files(),
        expect,
        "{name}: exactly the expired rows' files went"
    );
    assert!(s.emulator.exists("image", "prompts/shared"));
    assert!(s.emulator.exists("image", "prompts/stuck"));
    assert!(s.emulator.exists("image", "prompts/bare"));
    let shared: Vec<_> = s
        .audit()
        .into_iter()
        .filter(|r| r[1].as_deref() == Some("prompts/shared"))
        .collect();
    assert_eq!(
        shared,
        [vec![
            Some("image".to_string()),
            Some("prompts/shared".to_string()),
            Some("kept: shared".to_string()),
            Some("expire".to_string())
        ]],
        "{name}: the shared image is kept for the live prompt"
    );

    // A later run while the move still fails: the row stays.
    let again = s.run(&["expire"]);
    assert_eq!(again.code, 4, "{name}: {}{}", again.stdout, again.stderr);
    assert!(s.row_exists(10).await, "{name}");
    assert!(
        again.stdout.contains("10 (free):"),
        "{name}: the row left is named: {}",
        again.stdout
    );

    // Healed: the next run retries the failed entry and then removes the row.
    s.emulator.heal();
    let last = s.run(&["expire", "--json"]);
    assert_eq!(last.code, 0, "{name}: {}{}", last.stdout, last.stderr);
    let rule = &json(&last)["rules"][0];
    assert_eq!(group(rule, "free")["rows_expired"], 1, "{name}: {rule}");
    assert_eq!(group(rule, "free")["files_deleted"], 1, "{name}: {rule}");
    assert!(!s.row_exists(10).await, "{name}");
    assert!(!s.emulator.exists("image", "prompts/stuck"), "{name}");
    assert_eq!(s.rows().await, [1, 5, 6, 7, 9, 11], "{name}");
    assert!(s.emulator.exists("image", "prompts/bare"), "{name}");

    // Nothing twice: one `quarantined` per file that went.
    let moved = s.state.query(
        "SELECT resource_type, key, COUNT(*) FROM audit WHERE outcome = 'quarantined' GROUP BY resource_type, key ORDER BY resource_type, key",
        &[],
    );
    assert_eq!(moved.len(), 7, "{name}: {moved:?}");
    assert!(
        moved.iter().all(|r| r[2].as_deref() == Some("1")),
        "{name}: {moved:?}"
    );
    // A run with nothing to do.
    let idle = s.run(&["expire"]);
    assert_eq!(idle.code, 0, "{name}: {}{}", idle.stdout, idle.stderr);
    assert_eq!(s.rows().await, [1, 5, 6, 7, 9, 11], "{name}");
    s.db.drop_db().await;
}

#[tokio::test]
async fn trash_expiry_on_sqlite() {
    trash_expiry_story(Backend::Sqlite).await;
}

#[tokio::test]
async fn trash_expiry_on_postgres() {
    trash_expiry_story(Backend::Postgres).await;
}

#[tokio::test]
async fn trash_expiry_on_mariadb() {
    trash_expiry_story(Backend::MariaDb).await;
}

/// A folder store, a SQLite app database with `rows` soft-deleted prompts (two files each) and
/// live prompts of their own files; every 10th expiring prompt's cover is also a live prompt's.
struct Folder {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    media: PathBuf,
    app_db: PathBuf,
    state: StateDb,
}

impl Folder {
    fn new(rows: u32, expiry: &str, extra: &str) -> Folder {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let media = dir.join("media");
        let old = SystemTime::now() - Duration::from_secs(90 * 86_400);
        let app_db = dir.join("app.db");
        let conn = rusqlite::Connection::open(&app_db).expect("app db");
        conn.execute_batch(
            "CREATE TABLE prompts (id integer PRIMARY KEY, cover text, clip text, deleted_at text);",
        )
        .expect("schema");
        let tx = conn.unchecked_transaction().expect("tx");
        for i in 1..=rows {
            let cover = format!("covers/c{i:05}.jpg");
            let clip = format!("clips/v{i:05}.mp4");
            write_file(&media, &cover, b"c", old);
            write_file(&media, &clip, b"v", old);
            tx.execute(
                "INSERT INTO prompts VALUES (?1, ?2, ?3, datetime('now', '-40 days'))",
                rusqlite::params![i, cover, clip],
            )
            .expect("row");
            // A live prompt with a file of its own, and every 10th one sharing the cover.
            let live = format!("live/l{i:05}.jpg");
            write_file(&media, &live, b"l", old);
            let second = if i % 10 == 0 {
                format!("'{cover}'")
            } else {
                "NULL".into()
            };
            tx.execute(
                &format!("INSERT INTO prompts VALUES (?1, ?2, {second}, NULL)"),
                rusqlite::params![100_000 + i, live],
            )
            .expect("live row");
        }
        tx.commit().expect("commit");
        drop(conn);
        let state = StateDb::create(StateBackend::Sqlite, &dir);
        let config = dir.join("assetgc.toml");
        std::fs::write(
            &config,
            format!(
                r#"[stores.media]
url = "{media}"
quarantine = false
min_age = "1h"

[databases.app]
url = "sqlite://{db}"

[[references]]
name = "covers"
query = "SELECT id, cover AS key FROM prompts"

[[references]]
name = "clips"
query = "SELECT id, clip AS key FROM prompts"
{extra}
{expiry}"#,
                media = media.display(),
                db = app_db.display(),
            ),
        )
        .expect("config");
        Folder {
            _tmp: tmp,
            config,
            media,
            app_db,
            state,
        }
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.app_db).expect("app db");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy");
        conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    fn exists(&self, key: &str) -> bool {
        self.media.join(key).exists()
    }
}

const FOLDER_RULE: &str = r#"[[expiry]]
name = "trash"
store = "media"
select = "SELECT id, cover AS key, clip AS key_clip FROM prompts WHERE deleted_at < datetime('now', '-5 days')"
delete = "DELETE FROM prompts WHERE id = ?"
releases = ["covers", "clips"]
"#;

/// Kills at random during `expire`: runs stopped between a file's deletion and its row's
/// `delete` leave rows whose files are gone; the next run removes those rows without deleting
/// anything again, and no live row ever loses its file.
#[test]
fn a_killed_expire_is_finished_by_the_next_run() {
    let rows = 1500;
    let f = Folder::new(rows, FOLDER_RULE, "\n[queue]\nbatch_size = 50\n");
    let bin = assert_cmd::cargo::cargo_bin("assetgc");
    // Rows still there whose own files are all gone: a kill landed between the two steps.
    let orphaned_rows = || {
        let conn = rusqlite::Connection::open(&f.app_db).expect("app db");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy");
        let mut stmt = conn
            .prepare("SELECT id, clip FROM prompts WHERE deleted_at IS NOT NULL")
            .expect("prepare");
        let clips: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(1))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        clips.iter().filter(|c| !f.exists(c)).count()
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let (mut runs, mut landed) = (0, 0);
    while f.count("SELECT COUNT(*) FROM prompts WHERE deleted_at IS NOT NULL") > 0 && runs < 200 {
        runs += 1;
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&f.config)
            .arg("expire")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 900));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            if orphaned_rows() > 0 {
                landed += 1;
            }
        }
    }
    let last = common::assetgc(&f.config, &["expire", "--json"]);
    assert_eq!(last.code, 0, "{}{}", last.stdout, last.stderr);
    eprintln!("{landed} kills between a file deletion and its row's delete, in {runs} runs");
    assert!(
        landed >= 1,
        "no kill landed between a file deletion and its row's delete"
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM prompts WHERE deleted_at IS NOT NULL"),
        0,
        "every expiring row was removed"
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM prompts WHERE deleted_at IS NULL"),
        i64::from(rows),
        "no live row was touched"
    );
    for i in 1..=rows {
        assert!(f.exists(&format!("live/l{i:05}.jpg")), "live/l{i:05}.jpg");
        assert!(
            !f.exists(&format!("clips/v{i:05}.mp4")),
            "clips/v{i:05}.mp4"
        );
        let cover = format!("covers/c{i:05}.jpg");
        // Shared with a live row: kept.
        assert_eq!(f.exists(&cover), i % 10 == 0, "{cover}");
    }
    let outcomes = f.state.query(
        "SELECT outcome, COUNT(*) FROM audit GROUP BY outcome ORDER BY outcome",
        &[],
    );
    let shared = rows / 10;
    assert_eq!(
        outcomes,
        [
            vec![
                Some("deleted".to_string()),
                Some((2 * rows - shared).to_string())
            ],
            vec![Some("kept: shared".to_string()), Some(shared.to_string())],
        ],
        "every file deleted once, never found already gone; the shared covers kept"
    );
}

/// Bad input: one line on stderr, exit 2, nothing queued, deleted or removed.
#[test]
fn bad_expiry_rules_are_refused_before_anything_is_done() {
    let cases = [
        (
            "select without id",
            FOLDER_RULE.replace("SELECT id, cover AS key", "SELECT cover AS key"),
            "no `id`",
        ),
        (
            "select without a key column",
            FOLDER_RULE.replace("cover AS key, clip AS key_clip", "cover, clip"),
            "no key column",
        ),
        (
            "delete without a parameter",
            FOLDER_RULE.replace("WHERE id = ?", "WHERE deleted_at IS NOT NULL"),
            "exactly one parameter",
        ),
        (
            "a released reference without id",
            format!(
                "{}\n[[references]]\nname = \"thumbs\"\nquery = \"SELECT cover AS key FROM prompts\"\n",
                FOLDER_RULE.replace(
                    r#"releases = ["covers", "clips"]"#,
                    r#"releases = ["covers", "clips", "thumbs"]"#
                )
            ),
            "returns no `id`",
        ),
    ];
    for (what, rule, says) in cases {
        let f = Folder::new(3, &rule, "");
        for args in [&["expire"][..], &["expire", "--dry-run"][..]] {
            let run = common::assetgc(&f.config, args);
            assert_eq!(run.code, 2, "{what}: {}{}", run.stdout, run.stderr);
            assert_eq!(
                run.stderr.trim().lines().count(),
                1,
                "{what}: {}",
                run.stderr
            );
            assert!(run.stderr.contains(says), "{what}: {}", run.stderr);
        }
        assert_eq!(f.count("SELECT COUNT(*) FROM prompts"), 6, "{what}");
        assert!(
            f.exists("covers/c00001.jpg") && f.exists("clips/v00003.mp4"),
            "{what}"
        );
        if f.state_exists() {
            assert_eq!(
                f.state.count("SELECT COUNT(*) FROM queue", &[]),
                0,
                "{what}"
            );
        }
    }
    // A read-only app database cannot lose rows: refused before any file goes.
    let f = Folder::new(2, FOLDER_RULE, "");
    let text = std::fs::read_to_string(&f.config).expect("config");
    std::fs::write(&f.config, text.replace("app.db\"", "app.db?mode=ro\"")).expect("config");
    let run = common::assetgc(&f.config, &["expire"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("read-only"), "{}", run.stderr);
    assert!(f.exists("covers/c00001.jpg") && f.exists("clips/v00002.mp4"));
    let f = Folder::new(1, FOLDER_RULE, "");
    let run = common::assetgc(&f.config, &["expire", "--rule", "nope"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no expiry rule named `nope`"),
        "{}",
        run.stderr
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM prompts"), 2);
    // A usage error outranks an unreachable state (2 > 1).
    let f = Folder::new(
        1,
        FOLDER_RULE,
        "\n[state]\nurl = \"postgres://nobody@127.0.0.1:9/none\"\n",
    );
    let run = common::assetgc(&f.config, &["expire", "--rule", "nope"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let run = common::assetgc(&f.config, &["expire"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(f.exists("covers/c00001.jpg"));
}

impl Folder {
    fn state_exists(&self) -> bool {
        self.config.with_file_name("assetgc.db").exists()
    }
}

/// The PostgreSQL `delete` is bound in its parameter's type: a `bigint` and a `uuid` id column.
#[test]
fn postgres_ids_are_bound_in_their_columns_type() {
    block_on(async {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let Some(db) = TestDb::create(Backend::Postgres, &dir).await else {
            return;
        };
        let media = dir.join("media");
        let old = SystemTime::now() - Duration::from_secs(90 * 86_400);
        write_file(&media, "a/1.jpg", b"1", old);
        write_file(&media, "b/1.jpg", b"1", old);
        db.execute(&[
            "CREATE TABLE big (id bigint PRIMARY KEY, f text, gone boolean)",
            "CREATE TABLE uu (id uuid PRIMARY KEY, f text, gone boolean)",
            "INSERT INTO big VALUES (9000000000, 'a/1.jpg', true), (2, 'a/2.jpg', false)",
            "INSERT INTO uu VALUES ('6f1c2c2e-8f0e-4a53-9d5c-1f1f8e1f0a01', 'b/1.jpg', true)",
        ])
        .await;
        let config = dir.join("assetgc.toml");
        std::fs::write(
            &config,
            format!(
                r#"[stores.media]
url = "{}"
quarantine = false

[databases.app]
url = "{}"

[[references]]
name = "big"
query = "SELECT id, f AS key FROM big"

[[references]]
name = "uu"
query = "SELECT id, f AS key FROM uu"

[[expiry]]
name = "big"
store = "media"
select = "SELECT id, f AS key FROM big WHERE gone"
delete = "DELETE FROM big WHERE id = $1"
releases = ["big"]

[[expiry]]
name = "uu"
store = "media"
select = "SELECT id, f AS key FROM uu WHERE gone"
delete = "DELETE FROM uu WHERE id = $1"
releases = ["uu"]
"#,
                media.display(),
                db.url
            ),
        )
        .expect("config");
        let run = common::assetgc(&config, &["expire"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(!media.join("a/1.jpg").exists() && !media.join("b/1.jpg").exists());
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("pg");
        let left: i64 =
            sqlx::query_scalar("SELECT (SELECT COUNT(*) FROM big) + (SELECT COUNT(*) FROM uu)")
                .fetch_one(&mut c)
                .await
                .expect("count");
        assert_eq!(
            left, 1,
            "the bigint and the uuid rows went; the live one stayed"
        );
        c.close().await.expect("close");
        db.drop_db().await;
    });
}

/// A `delete` that cannot run is found by preparing it before any file goes: the rule stops
/// (exit 4), nothing is queued or deleted. An app database out of reach is exit 1.
#[test]
fn a_delete_that_cannot_run_deletes_nothing_and_an_unreachable_database_is_exit_1() {
    let f = Folder::new(
        3,
        &FOLDER_RULE.replace("DELETE FROM prompts", "DELETE FROM no_such_table"),
        "",
    );
    let run = common::assetgc(&f.config, &["expire"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("`delete` cannot be prepared"),
        "{}",
        run.stderr
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM prompts"), 6);
    assert!(f.exists("covers/c00001.jpg") && f.exists("clips/v00003.mp4"));
    assert_eq!(f.state.count("SELECT COUNT(*) FROM queue", &[]), 0);

    // Mended, the same rows go; without a `grp` column they are counted under `(none)`.
    let text = std::fs::read_to_string(&f.config).expect("config");
    std::fs::write(&f.config, text.replace("no_such_table", "prompts")).expect("config");
    let run = common::assetgc(&f.config, &["expire", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    let none = group(&report["rules"][0], "(none)");
    assert_eq!(none["rows_expired"], 3, "{report}");
    assert_eq!(none["files_deleted"], 6, "{report}");
    assert_eq!(f.count("SELECT COUNT(*) FROM prompts"), 3);

    let f = Folder::new(1, FOLDER_RULE, "");
    std::fs::remove_file(&f.app_db).expect("remove the app database");
    let run = common::assetgc(&f.config, &["expire"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(f.exists("covers/c00001.jpg"));
}

/// `files` in a folder store, 90 days old, and a config whose rule expires the PostgreSQL
/// `items` rows marked `gone` and removes them with `delete`. `releases`: the reference of every
/// row is released; without it, the reference reads the live rows alone.
fn pg_items(
    dir: &Path,
    db_url: &str,
    files: &[&str],
    delete: &str,
    releases: bool,
) -> (PathBuf, PathBuf) {
    let (reference, releases) = if releases {
        ("SELECT id, f AS key FROM items", r#"["items"]"#)
    } else {
        ("SELECT id, f AS key FROM items WHERE NOT gone", "[]")
    };
    let media = dir.join("media");
    let old = SystemTime::now() - Duration::from_secs(90 * 86_400);
    for f in files {
        write_file(&media, f, b"1", old);
    }
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[stores.media]
url = "{}"
quarantine = false

[databases.app]
url = "{db_url}"

[[references]]
name = "items"
query = "{reference}"

[[expiry]]
name = "items"
store = "media"
select = "SELECT id, f AS key FROM items WHERE gone"
delete = "{delete}"
releases = {releases}
"#,
            media.display(),
        ),
    )
    .expect("config");
    (config, media)
}

/// The files of the `items` rows left.
async fn pg_rows(url: &str) -> Vec<String> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    let ids: Vec<String> = sqlx::query_scalar("SELECT f FROM items ORDER BY f")
        .fetch_all(&mut c)
        .await
        .expect("ids");
    c.close().await.expect("close");
    ids
}

/// A `numeric` id is bound as a number: its row goes with its files. An id too long for the
/// binding keeps its row and its file (its `delete` could not run).
#[test]
fn postgres_numeric_ids_are_deleted_with_their_files() {
    block_on(async {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let Some(db) = TestDb::create(Backend::Postgres, &dir).await else {
            return;
        };
        db.execute(&[
            "CREATE TABLE items (id numeric PRIMARY KEY, f text, gone boolean)",
            "INSERT INTO items VALUES (7, 'a/1.jpg', true), (12.50, 'a/2.jpg', true), \
             (123456789012345678901234567890123456, 'a/3.jpg', true), (8, 'a/4.jpg', false)",
        ])
        .await;
        let files = ["a/1.jpg", "a/2.jpg", "a/3.jpg", "a/4.jpg"];
        let (config, media) = pg_items(
            &dir,
            &db.url,
            &files,
            "DELETE FROM items WHERE id = $1",
            true,
        );
        let run = common::assetgc(&config, &["expire", "--json"]);
        let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
        let totals = &report["rules"][0];
        assert_eq!(totals["rows_expired"], 2, "{report}{}", run.stderr);
        assert_eq!(totals["files_deleted"], 2, "{report}");
        assert_eq!(totals["rows_left"], 1, "{report}");
        assert!(!media.join("a/1.jpg").exists() && !media.join("a/2.jpg").exists());
        assert!(
            media.join("a/3.jpg").exists(),
            "an id whose delete cannot run keeps its file"
        );
        assert!(media.join("a/4.jpg").exists());
        assert_eq!(pg_rows(&db.url).await, ["a/3.jpg", "a/4.jpg"]);
        db.drop_db().await;
    });
}

/// A `delete` parameter of a type no id is bound as (`date`) is refused before anything is
/// queued: exit 2, one line naming the type and the cast; the cast it names then works.
#[test]
fn postgres_delete_parameter_of_an_unbindable_type_is_refused() {
    block_on(async {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let Some(db) = TestDb::create(Backend::Postgres, &dir).await else {
            return;
        };
        db.execute(&[
            "CREATE TABLE items (id date PRIMARY KEY, f text, gone boolean)",
            "INSERT INTO items VALUES ('2020-01-01', 'a/1.jpg', true), ('2020-01-02', 'a/2.jpg', false)",
        ])
        .await;
        let files = ["a/1.jpg", "a/2.jpg"];
        let (config, media) = pg_items(
            &dir,
            &db.url,
            &files,
            "DELETE FROM items WHERE id = $1",
            true,
        );
        for args in [&["expire"][..], &["expire", "--dry-run"][..]] {
            let run = common::assetgc(&config, args);
            assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
            assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
            assert!(
                run.stderr.contains("type date") && run.stderr.contains("$1::text::date"),
                "{}",
                run.stderr
            );
        }
        assert!(media.join("a/1.jpg").exists() && media.join("a/2.jpg").exists());
        assert_eq!(pg_rows(&db.url).await, files);

        let (config, media) = pg_items(
            &dir,
            &db.url,
            &files,
            "DELETE FROM items WHERE id = $1::text::date",
            true,
        );
        let run = common::assetgc(&config, &["expire"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            !media.join("a/1.jpg").exists() && media.join("a/2.jpg").exists(),
            "{}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(pg_rows(&db.url).await, ["a/2.jpg"]);
        db.drop_db().await;
    });
}

/// A dry run runs only `select`, so a read-only (mode=ro) app database serves it; the real run
/// is still refused.
#[test]
fn a_dry_run_reads_a_read_only_database() {
    let f = Folder::new(3, FOLDER_RULE, "");
    let text = std::fs::read_to_string(&f.config).expect("config");
    std::fs::write(&f.config, text.replace("app.db\"", "app.db?mode=ro\"")).expect("config");
    let before = std::fs::read(&f.app_db).expect("app db");
    let run = common::assetgc(&f.config, &["expire", "--dry-run", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    let totals = &report["rules"][0];
    assert_eq!(totals["rows_expired"], 3, "{report}");
    assert_eq!(totals["files"], 6, "{report}");
    assert_eq!(std::fs::read(&f.app_db).expect("app db"), before);
    assert!(f.exists("covers/c00001.jpg") && f.exists("clips/v00003.mp4"));
    assert_eq!(f.state.count("SELECT COUNT(*) FROM queue", &[]), 0);
    let run = common::assetgc(&f.config, &["expire"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("read-only"), "{}", run.stderr);
    assert_eq!(f.count("SELECT COUNT(*) FROM prompts"), 6);
}

/// A `char(n)` id, read with its padding, is bound without it: its row goes with its file.
#[test]
fn postgres_char_ids_are_deleted_with_their_files() {
    block_on(async {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let Some(db) = TestDb::create(Backend::Postgres, &dir).await else {
            return;
        };
        db.execute(&[
            "CREATE TABLE items (id char(8) PRIMARY KEY, f text, gone boolean)",
            "INSERT INTO items VALUES ('ab', 'a/1.jpg', true), ('cd', 'a/2.jpg', false)",
        ])
        .await;
        let files = ["a/1.jpg", "a/2.jpg"];
        let (config, media) = pg_items(
            &dir,
            &db.url,
            &files,
            "DELETE FROM items WHERE id = $1",
            false,
        );
        let run = common::assetgc(&config, &["expire", "--json"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
        assert_eq!(report["rules"][0]["rows_expired"], 1, "{report}");
        assert_eq!(report["rules"][0]["files_deleted"], 1, "{report}");
        assert!(!media.join("a/1.jpg").exists() && media.join("a/2.jpg").exists());
        assert_eq!(pg_rows(&db.url).await, ["a/2.jpg"]);
        db.drop_db().await;
    });
}
