//! The story of one app, told to SQLite, PostgreSQL and MariaDB alike: a media folder and a
//! database that have drifted apart in every way we know of, scanned with a window and without
//! one. The expected findings are written out by hand below, so the test never agrees with the
//! product by sharing its logic.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use common::{Backend, CsvRow, TestDb, assetgc, parse_csv_report, write_file};
use serde_json::Value;

#[tokio::test]
async fn story_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test]
async fn story_postgres() {
    story(Backend::Postgres).await;
}

#[tokio::test]
async fn story_mariadb() {
    story(Backend::MariaDb).await;
}

const PUBLIC_URL: &str = "https://cdn.example.com/media";

/// The fixture's clock: every time in the database and on disk is one of these.
struct Times {
    now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
enum When {
    /// A file uploaded a few days ago: in a 30-day window and older than `min_age`.
    Recent,
    /// A file uploaded 60 days ago: outside a 30-day window.
    Old,
    /// A file uploaded just now: younger than `min_age = "1h"`.
    JustNow,
    /// A row created two days ago.
    RowRecent,
    /// A row created 90 days ago: not checked for missing files with `--days 30`.
    RowOld,
    /// A row soft-deleted yesterday.
    RowDeleted,
}

impl Times {
    fn new() -> Times {
        Times {
            now: Utc::now().trunc_subsecs(0),
        }
    }

    fn at(&self, when: When) -> DateTime<Utc> {
        self.now
            - match when {
                When::Recent => Duration::days(3),
                When::Old => Duration::days(60),
                When::JustNow => Duration::zero(),
                When::RowRecent => Duration::days(2),
                When::RowOld => Duration::days(90),
                When::RowDeleted => Duration::days(1),
            }
    }

    fn system(&self, when: When) -> SystemTime {
        SystemTime::from(self.at(when))
    }

    /// As the report writes times: RFC 3339, UTC, whole seconds.
    fn report(&self, when: When) -> String {
        self.at(when).format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// As a SQL literal for the backend's timestamp columns.
    fn sql(&self, backend: Backend, when: When) -> String {
        let t = self.at(when).format("%Y-%m-%d %H:%M:%S");
        match backend {
            // Explicitly UTC for `timestamptz`; `timestamp` columns ignore the zone.
            Backend::Postgres => format!("'{t}+00'"),
            Backend::Sqlite | Backend::MariaDb => format!("'{t}'"),
        }
    }
}

fn schema(backend: Backend) -> Vec<String> {
    // (short text, long text, UUID, timestamp with zone, timestamp without zone)
    let (text, long, uuid, tstz, ts) = match backend {
        Backend::Sqlite => ("text", "text", "text", "text", "text"),
        Backend::Postgres => ("text", "text", "uuid", "timestamptz", "timestamp"),
        Backend::MariaDb => ("varchar(255)", "text", "char(36)", "datetime", "datetime"),
    };
    let mut sql = Vec::new();
    if backend == Backend::Postgres {
        // Servers often run in local time: `timestamptz` then comes back with an offset (a
        // half-hour one here), while `timestamp` comes back as written and means UTC.
        sql.push(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone TO %L', \
             current_database(), 'Asia/Kolkata'); END $$"
                .to_string(),
        );
    }
    sql.extend([
        format!("CREATE TABLE users (id integer PRIMARY KEY, username {text} NOT NULL)"),
        format!(
            "CREATE TABLE posts (id integer PRIMARY KEY, title {text} NOT NULL, \
             owner_id integer NOT NULL REFERENCES users (id), image {text}, \
             created_at {tstz} NOT NULL, deleted_at {tstz} NULL)"
        ),
        format!(
            "CREATE TABLE profiles (id {uuid} PRIMARY KEY, \
             user_id integer NOT NULL REFERENCES users (id), avatar_url {text}, \
             created_at {ts} NOT NULL)"
        ),
        format!(
            "CREATE TABLE articles (id integer PRIMARY KEY, title {text} NOT NULL, body {long}, \
             created_at {tstz} NULL, deleted_at {tstz} NULL)"
        ),
    ]);
    sql
}

/// A SQL string literal, or NULL.
fn lit(s: Option<&str>) -> String {
    s.map_or_else(
        || "NULL".to_string(),
        |s| format!("'{}'", s.replace('\'', "''")),
    )
}

const UUID_1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const UUID_2: &str = "0a1b2c3d-0000-4000-8000-000000000002";
const UUID_3: &str = "0a1b2c3d-0000-4000-8000-000000000003";
const UUID_4: &str = "0a1b2c3d-0000-4000-8000-000000000004";
const UUID_5: &str = "0a1b2c3d-0000-4000-8000-000000000005";
const UUID_6: &str = "0a1b2c3d-0000-4000-8000-000000000006";
const UUID_7: &str = "0a1b2c3d-0000-4000-8000-000000000007";
const UUID_8: &str = "0a1b2c3d-0000-4000-8000-000000000008";
const UUID_9: &str = "0a1b2c3d-0000-4000-8000-000000000009";
const UUID_A: &str = "0a1b2c3d-0000-4000-8000-00000000000a";

/// (id, title, owner_id, image, created_at, deleted_at)
type PostRow = (
    i32,
    &'static str,
    i32,
    Option<&'static str>,
    When,
    Option<When>,
);
/// (id, title, body, created_at, deleted_at)
type ArticleRow = (
    i32,
    &'static str,
    Option<&'static str>,
    Option<When>,
    Option<When>,
);

fn rows(backend: Backend, t: &Times) -> Vec<String> {
    use When::{RowDeleted, RowOld, RowRecent};
    let ts = |w: Option<When>| w.map_or_else(|| "NULL".to_string(), |w| t.sql(backend, w));
    let mut sql = vec![
        "INSERT INTO users (id, username) VALUES (1, 'alice'), (2, 'bob'), (3, '@carol')"
            .to_string(),
    ];

    // Read with key_format = "path".
    let posts: [PostRow; 18] = [
        (1, "Plain", 1, Some("uploads/plain.jpg"), RowRecent, None),
        (
            2,
            "Spaces",
            1,
            Some("./uploads/with space.jpg"),
            RowRecent,
            None,
        ),
        (
            3,
            "Unicode",
            2,
            Some("/caf\u{e9}/na\u{ef}ve r\u{e9}sum\u{e9}.jpg"),
            RowRecent,
            None,
        ),
        (4, "Percent", 2, Some("weird/100%.png"), RowRecent, None),
        (5, "Plus", 2, Some("weird/a+b.png"), RowRecent, None),
        (6, "Hash", 2, Some("weird/c#1.png"), RowRecent, None),
        (7, "Hidden", 1, Some(".hidden/x.png"), RowRecent, None),
        (8, "Deep", 1, Some("./a/b/c/d/e/f.jpg"), RowRecent, None),
        (
            9,
            "Soft-deleted, file kept",
            1,
            Some("trash/soft-deleted.jpg"),
            RowRecent,
            Some(RowDeleted),
        ),
        (10, "Gone", 1, Some("uploads/gone.jpg"), RowRecent, None),
        (
            11,
            "Gone and deleted",
            2,
            Some("/uploads/gone-deleted.jpg"),
            RowRecent,
            Some(RowDeleted),
        ),
        (12, "No image", 1, None, RowRecent, None),
        (13, "Empty image", 1, Some(""), RowRecent, None),
        (
            14,
            "Old and gone",
            3,
            Some("uploads/old-gone.jpg"),
            RowOld,
            None,
        ),
        (
            15,
            "Old row, new file",
            3,
            Some("uploads/recent-by-old-row.jpg"),
            RowOld,
            None,
        ),
        (
            16,
            "Old file",
            3,
            Some("archive/old-referenced.jpg"),
            RowOld,
            None,
        ),
        (17, "=1+1", 3, Some("-draft/missing.jpg"), RowRecent, None),
        (
            18,
            "Unicode gone",
            2,
            Some("./missing dir/\u{fc}n\u{ef}+%.jpg"),
            RowRecent,
            None,
        ),
    ];
    for (id, title, owner, image, created, deleted) in posts {
        sql.push(format!(
            "INSERT INTO posts (id, title, owner_id, image, created_at, deleted_at) \
             VALUES ({id}, {}, {owner}, {}, {}, {})",
            lit(Some(title)),
            lit(image),
            ts(Some(created)),
            ts(deleted),
        ));
    }

    // (id, user_id, avatar_url); read with key_format = "url".
    let profiles: [(&str, i32, Option<&str>); 10] = [
        (
            UUID_1,
            1,
            Some("https://cdn.example.com/media/avatars/caf%c3%a9%20au%20lait.png"),
        ),
        (
            UUID_2,
            2,
            Some("HTTPS://CDN.Example.COM/media/avatars/100%25%20sure.png?size=64#top"),
        ),
        (
            UUID_3,
            3,
            Some("https://cdn.example.com/media/avatars/c%23sharp.png"),
        ),
        (
            UUID_4,
            1,
            Some("https://cdn.example.com/media/avatars/a+b.png"),
        ),
        (
            UUID_5,
            2,
            Some("https://other.example.org/media/avatars/elsewhere.png"),
        ),
        (
            UUID_6,
            3,
            Some("https://other.example.org/media/orphans/lonely.jpg"),
        ),
        (
            UUID_7,
            1,
            Some("https://cdn.example.com/media/avatars/missing%20one.png"),
        ),
        (UUID_8, 2, None),
        (UUID_9, 3, Some("")),
        (
            UUID_A,
            2,
            Some("https://cdn.example.com/media/avatars/%E2%9C%93%20done.png"),
        ),
    ];
    for (id, user, avatar) in profiles {
        sql.push(format!(
            "INSERT INTO profiles (id, user_id, avatar_url, created_at) VALUES ({}, {user}, {}, {})",
            lit(Some(id)),
            lit(avatar),
            ts(Some(RowRecent)),
        ));
    }

    // Bodies are read with a regex over <img src="…">.
    let articles: [ArticleRow; 7] = [
        (
            1,
            "Two images",
            Some(
                "<h1>Two</h1><img src=\"https://cdn.example.com/media/articles/one.jpg\"><p>and</p>\
                 <img alt=\"second\" src=\"https://cdn.example.com/media/articles/two%20words.jpg\">\
                 <img src=\"https://other.example.org/media/articles/ext.jpg\">",
            ),
            Some(RowRecent),
            None,
        ),
        (
            2,
            "Two lost",
            Some(
                "<img src=\"https://cdn.example.com/media/articles/one.jpg\">\
                 <p>gone:</p><img src=\"https://cdn.example.com/media/articles/lost-1.jpg\">\
                 <img class=\"wide\" src=\"//cdn.example.com/media/articles/lost%202.jpg\">",
            ),
            Some(RowRecent),
            None,
        ),
        (
            3,
            "Undated",
            Some("<img src=\"https://cdn.example.com/media/articles/no-date.jpg\">"),
            None,
            None,
        ),
        (
            4,
            "Deleted article",
            Some("<img src=\"https://cdn.example.com/media/articles/deleted-gone.jpg\">"),
            Some(RowRecent),
            Some(RowDeleted),
        ),
        (
            5,
            "Relative",
            Some("<p><img src=\"inline/pic.png\" alt=\"inline\"></p>"),
            Some(RowRecent),
            None,
        ),
        (
            6,
            "Text only",
            Some("<p>No pictures here.</p>"),
            Some(RowRecent),
            None,
        ),
        (7, "Null body", None, Some(RowRecent), None),
    ];
    for (id, title, body, created, deleted) in articles {
        sql.push(format!(
            "INSERT INTO articles (id, title, body, created_at, deleted_at) \
             VALUES ({id}, {}, {}, {}, {})",
            lit(Some(title)),
            lit(body),
            ts(created),
            ts(deleted),
        ));
    }
    sql
}

/// Every file in `media/`. Orphans hold 6 bytes, so their sizes are known.
fn write_media(media: &Path, t: &Times) {
    use When::{JustNow, Old, Recent};
    let referenced = [
        ("uploads/plain.jpg", Recent),
        ("uploads/with space.jpg", Recent),
        ("caf\u{e9}/na\u{ef}ve r\u{e9}sum\u{e9}.jpg", Recent),
        ("weird/100%.png", Recent),
        ("weird/a+b.png", Recent),
        ("weird/c#1.png", Recent),
        (".hidden/x.png", Recent),
        ("a/b/c/d/e/f.jpg", Recent),
        ("trash/soft-deleted.jpg", Recent),
        ("uploads/recent-by-old-row.jpg", Recent),
        ("archive/old-referenced.jpg", Old),
        ("avatars/caf\u{e9} au lait.png", Recent),
        ("avatars/100% sure.png", Recent),
        ("avatars/c#sharp.png", Recent),
        ("avatars/a+b.png", Recent),
        ("articles/one.jpg", Recent),
        ("articles/two words.jpg", Recent),
        ("inline/pic.png", Recent),
        // Ignored (static/**), in the window and out of it.
        ("static/app.css", Recent),
        ("static/img/logo.png", Recent),
        ("static/old.css", Old),
        // Unreferenced but too young to be an orphan.
        ("uploads/just-now.jpg", JustNow),
        // In the quarantine prefix: never listed, never counted.
        (".assetgc-trash/uploads/was-deleted.jpg", Recent),
    ];
    for (key, when) in referenced {
        write_file(media, key, b"referenced file", t.system(when));
    }
    for (key, when) in ORPHANS {
        write_file(media, key, b"orphan", t.system(*when));
    }
}

/// Every orphan on disk, with its upload time.
const ORPHANS: &[(&str, When)] = &[
    ("'quoted.jpg", When::Recent),
    (".hidden/orphan.png", When::Recent),
    ("@mention.png", When::Recent),
    ("a/b/c/d/e/orphan.jpg", When::Recent),
    ("archive/old orphan.jpg", When::Old),
    // `+` in a URL is a plus, so the avatar `a+b.png` never protects this file.
    ("avatars/a b.png", When::Recent),
    ("caf\u{e9}/orphan \u{fc}.jpg", When::Recent),
    // Named by another host's URL, which is no reference of this store.
    ("orphans/lonely.jpg", When::Recent),
    ("orphans/new photo.jpg", When::Recent),
    ("orphans/old-unreferenced.jpg", When::Old),
    ("weird/50% off #2.png", When::Recent),
];

fn write_config(dir: &Path, backend: Backend, db_url: &str) -> PathBuf {
    // KEY is a reserved word in MariaDB: its users quote the alias, as they would in their app.
    let key = match backend {
        Backend::MariaDb => "`key`",
        Backend::Sqlite | Backend::Postgres => "key",
    };
    let config = format!(
        r#"app_name = "Story"

[stores.media]
url = "./media"
ignore = ["static/**"]
min_age = "1h"
public_url = "{PUBLIC_URL}"

[databases.app]
url = "{db_url}"

[[references]]
name = "post images"
query = """
  SELECT p.id, p.title, u.username AS owner, p.image AS {key}, p.created_at,
         CASE WHEN p.deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status
  FROM posts p JOIN users u ON u.id = p.owner_id
"""
link = "https://app.example.com/posts/{{id}}"

[[references]]
name = "profile avatars"
query = "SELECT pr.id, u.username AS owner, pr.avatar_url AS {key}, pr.created_at FROM profiles pr JOIN users u ON u.id = pr.user_id"
key_format = "url"

[[references]]
name = "article images"
query = """
  SELECT a.id, a.title, a.body AS {key}, a.created_at,
         CASE WHEN a.deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status
  FROM articles a;
"""
key_format = {{ regex = '<img[^>]*\ssrc="(?P<key>[^"]+)"' }}
"#
    );
    let path = dir.join("assetgc.toml");
    std::fs::write(&path, config).expect("write assetgc.toml");
    path
}

/// Which scan a set of expectations is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Days30,
    All,
}

impl Scan {
    fn args(self) -> &'static [&'static str] {
        match self {
            Scan::Days30 => &["--days", "30"],
            Scan::All => &["--all"],
        }
    }
}

/// The orphan keys a scan must report, in report order (store, then key as exact strings).
fn expected_orphans(scan: Scan) -> Vec<&'static str> {
    let mut keys = vec![
        "'quoted.jpg",
        ".hidden/orphan.png",
        "@mention.png",
        "a/b/c/d/e/orphan.jpg",
        "archive/old orphan.jpg",
        "avatars/a b.png",
        "caf\u{e9}/orphan \u{fc}.jpg",
        "orphans/lonely.jpg",
        "orphans/new photo.jpg",
        "orphans/old-unreferenced.jpg",
        "weird/50% off #2.png",
    ];
    if scan == Scan::Days30 {
        // Uploaded 60 days ago: outside the window, so neither orphans nor counted.
        keys.retain(|k| {
            !matches!(
                *k,
                "archive/old orphan.jpg" | "orphans/old-unreferenced.jpg"
            )
        });
    }
    keys
}

/// One expected row of the missing section, every column as the CSV writes it.
struct MissingRow {
    reference: &'static str,
    record_id: &'static str,
    title: &'static str,
    owner: &'static str,
    key: &'static str,
    created_at: Option<When>,
    status: &'static str,
    link: &'static str,
}

/// The missing rows a scan must report, in report order: ACTIVE first, DELETED last, then by
/// reference order in the config, record_id, key.
fn expected_missing(scan: Scan) -> Vec<MissingRow> {
    let row = |reference, record_id, title, owner, key, created_at, status, link| MissingRow {
        reference,
        record_id,
        title,
        owner,
        key,
        created_at,
        status,
        link,
    };
    let recent = Some(When::RowRecent);
    let mut rows = vec![
        row(
            "post images",
            "10",
            "Gone",
            "alice",
            "uploads/gone.jpg",
            recent,
            "ACTIVE",
            "https://app.example.com/posts/10",
        ),
        // Created 90 days ago: checked only without a window.
        row(
            "post images",
            "14",
            "Old and gone",
            "@carol",
            "uploads/old-gone.jpg",
            Some(When::RowOld),
            "ACTIVE",
            "https://app.example.com/posts/14",
        ),
        row(
            "post images",
            "17",
            "=1+1",
            "@carol",
            "-draft/missing.jpg",
            recent,
            "ACTIVE",
            "https://app.example.com/posts/17",
        ),
        row(
            "post images",
            "18",
            "Unicode gone",
            "bob",
            "missing dir/\u{fc}n\u{ef}+%.jpg",
            recent,
            "ACTIVE",
            "https://app.example.com/posts/18",
        ),
        row(
            "profile avatars",
            UUID_7,
            "",
            "alice",
            "avatars/missing one.png",
            recent,
            "ACTIVE",
            "",
        ),
        row(
            "profile avatars",
            UUID_A,
            "",
            "bob",
            "avatars/\u{2713} done.png",
            recent,
            "ACTIVE",
            "",
        ),
        // One row per missing match of the body; the match that exists is not reported.
        row(
            "article images",
            "2",
            "Two lost",
            "",
            "articles/lost 2.jpg",
            recent,
            "ACTIVE",
            "",
        ),
        row(
            "article images",
            "2",
            "Two lost",
            "",
            "articles/lost-1.jpg",
            recent,
            "ACTIVE",
            "",
        ),
        // No created_at: checked whatever the window.
        row(
            "article images",
            "3",
            "Undated",
            "",
            "articles/no-date.jpg",
            None,
            "ACTIVE",
            "",
        ),
        row(
            "post images",
            "11",
            "Gone and deleted",
            "bob",
            "uploads/gone-deleted.jpg",
            recent,
            "DELETED",
            "https://app.example.com/posts/11",
        ),
        row(
            "article images",
            "4",
            "Deleted article",
            "",
            "articles/deleted-gone.jpg",
            recent,
            "DELETED",
            "",
        ),
    ];
    if scan == Scan::Days30 {
        rows.retain(|r| r.record_id != "14");
    }
    rows
}

/// The summary figures, counted by hand from the fixture.
struct Counts {
    objects_scanned: u64,
    valid: u64,
    orphans: u64,
    orphan_bytes: u64,
    too_recent: u64,
    ignored: u64,
    missing: u64,
    missing_active: u64,
    /// (folder, count, bytes), in no particular order.
    folders: &'static [(&'static str, u64, u64)],
}

fn expected_counts(scan: Scan) -> Counts {
    match scan {
        // valid: 10 post files, 4 avatars, 3 article images; ignored: static/app.css and
        // static/img/logo.png; too recent: uploads/just-now.jpg.
        Scan::Days30 => Counts {
            objects_scanned: 29,
            valid: 17,
            orphans: 9,
            orphan_bytes: 54,
            too_recent: 1,
            ignored: 2,
            missing: 10,
            missing_active: 8,
            folders: &[
                ("/", 2, 12),
                ("orphans/", 2, 12),
                (".hidden/", 1, 6),
                ("a/", 1, 6),
                ("avatars/", 1, 6),
                ("caf\u{e9}/", 1, 6),
                ("weird/", 1, 6),
            ],
        },
        // + archive/old-referenced.jpg (valid), static/old.css (ignored), two old orphans.
        Scan::All => Counts {
            objects_scanned: 33,
            valid: 18,
            orphans: 11,
            orphan_bytes: 66,
            too_recent: 1,
            ignored: 3,
            missing: 11,
            missing_active: 9,
            folders: &[
                ("/", 2, 12),
                ("orphans/", 3, 18),
                (".hidden/", 1, 6),
                ("a/", 1, 6),
                ("archive/", 1, 6),
                ("avatars/", 1, 6),
                ("caf\u{e9}/", 1, 6),
                ("weird/", 1, 6),
            ],
        },
    }
}

async fn story(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(db) = TestDb::create(backend, dir.path()).await else {
        return;
    };
    let t = Times::new();
    db.execute(&schema(backend)).await;
    db.execute(&rows(backend, &t)).await;
    write_media(&dir.path().join("media"), &t);
    let config = write_config(dir.path(), backend, &db.url);

    for scan in [Scan::Days30, Scan::All] {
        check_csv(backend, scan, &config, dir.path(), &t);
        check_json(backend, scan, &config);
    }
    db.drop_db().await;
}

fn check_csv(backend: Backend, scan: Scan, config: &Path, dir: &Path, t: &Times) {
    let what = format!("{} scan {scan:?}", backend.name());
    let out = dir.join(format!("{scan:?}.csv"));
    let mut args = vec!["scan"];
    args.extend(scan.args());
    let out_arg = out.to_str().expect("UTF-8 temp path");
    args.extend(["--output", out_arg]);
    let run = assetgc(config, &args);
    assert_eq!(
        run.code, 0,
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let text = std::fs::read_to_string(&out).expect("the CSV report is written");
    let report = parse_csv_report(&text);

    // Orphans: the exact set first (the clearest message), then every cell in report order.
    let got: BTreeSet<&str> = report.orphans.iter().map(|r| r["key"].as_str()).collect();
    let want_keys = expected_orphans(scan);
    let want: BTreeSet<&str> = want_keys.iter().copied().collect();
    assert_eq!(got, want, "{what}: orphan keys\n{text}");
    let got_rows: Vec<Vec<&str>> = report.orphans.iter().map(orphan_cells).collect();
    let uploaded: Vec<String> = want_keys
        .iter()
        .map(|k| {
            let (_, when) = ORPHANS
                .iter()
                .find(|(o, _)| o == k)
                .expect("an orphan on disk");
            t.report(*when)
        })
        .collect();
    let want_rows: Vec<Vec<&str>> = want_keys
        .iter()
        .zip(&uploaded)
        .map(|(key, uploaded)| {
            let format = key.rsplit_once('.').map_or("", |(_, ext)| ext);
            vec!["media", key, "", "6", "0.00", format, uploaded.as_str()]
        })
        .collect();
    assert_eq!(
        got_rows, want_rows,
        "{what}: orphan rows (without url), in order\n{text}"
    );
    for r in &report.orphans {
        check_orphan_url(&what, &r["key"], &r["url"]);
    }
    let url_of = |key: &str| {
        report
            .orphans
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| r["url"].clone())
    };
    assert_eq!(
        url_of("avatars/a b.png").as_deref(),
        Some("https://cdn.example.com/media/avatars/a%20b.png"),
        "{what}"
    );
    assert_eq!(
        url_of("caf\u{e9}/orphan \u{fc}.jpg").as_deref(),
        Some("https://cdn.example.com/media/caf%C3%A9/orphan%20%C3%BC.jpg"),
        "{what}"
    );

    // Missing: the exact set of (reference, record_id, key, status), then the order, then every
    // cell.
    let expected = expected_missing(scan);
    let got: BTreeSet<(&str, &str, &str, &str)> = report
        .missing
        .iter()
        .map(|r| {
            (
                r["reference"].as_str(),
                r["record_id"].as_str(),
                r["key"].as_str(),
                r["status"].as_str(),
            )
        })
        .collect();
    let want: BTreeSet<(&str, &str, &str, &str)> = expected
        .iter()
        .map(|m| (m.reference, m.record_id, m.key, m.status))
        .collect();
    assert_eq!(got, want, "{what}: missing rows\n{text}");
    let statuses: Vec<&str> = report
        .missing
        .iter()
        .map(|r| r["status"].as_str())
        .collect();
    let first_deleted = statuses
        .iter()
        .position(|s| *s == "DELETED")
        .unwrap_or(statuses.len());
    assert!(
        statuses[first_deleted..].iter().all(|s| *s == "DELETED"),
        "{what}: ACTIVE rows come before DELETED rows: {statuses:?}"
    );
    let got_order: Vec<(&str, &str, &str)> = report
        .missing
        .iter()
        .map(|r| {
            (
                r["reference"].as_str(),
                r["record_id"].as_str(),
                r["key"].as_str(),
            )
        })
        .collect();
    let want_order: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|m| (m.reference, m.record_id, m.key))
        .collect();
    assert_eq!(
        got_order, want_order,
        "{what}: missing rows in report order\n{text}"
    );
    let got_rows: Vec<Vec<&str>> = report.missing.iter().map(missing_cells).collect();
    let created: Vec<String> = expected
        .iter()
        .map(|m| m.created_at.map(|w| t.report(w)).unwrap_or_default())
        .collect();
    let want_rows: Vec<Vec<&str>> = expected
        .iter()
        .zip(&created)
        .map(|(m, created)| {
            vec![
                m.reference,
                m.record_id,
                m.title,
                m.owner,
                "",
                m.key,
                created.as_str(),
                m.status,
                m.link,
            ]
        })
        .collect();
    assert_eq!(
        got_rows, want_rows,
        "{what}: missing rows, every cell\n{text}"
    );
}

fn orphan_cells(r: &CsvRow) -> Vec<&str> {
    [
        "store",
        "key",
        "resource_type",
        "size_bytes",
        "size_mb",
        "format",
        "uploaded_at",
    ]
    .iter()
    .map(|c| r[*c].as_str())
    .collect()
}

fn missing_cells(r: &CsvRow) -> Vec<&str> {
    common::MISSING_HEADER
        .iter()
        .map(|c| r[*c].as_str())
        .collect()
}

/// An orphan's URL is the public URL of its key: under `public_url`, with nothing a URL parser
/// would take for a query or fragment, and the key again once percent-decoded.
fn check_orphan_url(what: &str, key: &str, url: &str) {
    let rest = url
        .strip_prefix(PUBLIC_URL)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{what}: url `{url}` of `{key}` is not under {PUBLIC_URL}/"));
    assert!(
        !rest.contains(['?', '#', ' ']),
        "{what}: url `{url}` of `{key}` is not encoded"
    );
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .expect("UTF-8 once decoded");
    assert_eq!(decoded, key, "{what}: url `{url}` does not name `{key}`");
}

fn check_json(backend: Backend, scan: Scan, config: &Path) {
    let what = format!("{} JSON scan {scan:?}", backend.name());
    let mut args = vec!["scan", "--json"];
    args.extend(scan.args());
    let run = assetgc(config, &args);
    assert_eq!(
        run.code, 0,
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let json: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{}", run.stdout));

    let s = &json["scan"];
    assert_eq!(
        s["complete"],
        Value::Bool(true),
        "{what}: scan.complete\n{json:#}"
    );
    assert!(s["id"].is_i64(), "{what}: scan.id is an integer\n{json:#}");
    let window = match scan {
        Scan::Days30 => serde_json::json!({ "days": 30 }),
        Scan::All => serde_json::json!({ "all": true }),
    };
    assert_eq!(s["window"], window, "{what}: scan.window");
    assert_eq!(
        s["stores"],
        serde_json::json!(["media"]),
        "{what}: scan.stores"
    );
    assert_eq!(
        s["warnings"],
        serde_json::json!([]),
        "{what}: scan.warnings"
    );

    let sum = &json["summary"];
    let n = |field: &str| {
        sum[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: summary.{field} is a number\n{sum:#}"))
    };
    assert_eq!(
        n("objects_scanned"),
        n("valid") + n("orphans") + n("too_recent") + n("ignored"),
        "{what}: objects_scanned = valid + orphans + too_recent + ignored\n{sum:#}"
    );
    let want = expected_counts(scan);
    let got = [
        n("objects_scanned"),
        n("valid"),
        n("orphans"),
        n("orphan_bytes"),
        n("too_recent"),
        n("ignored"),
        n("unparsed"),
        n("missing"),
        n("missing_active"),
    ];
    let expected = [
        want.objects_scanned,
        want.valid,
        want.orphans,
        want.orphan_bytes,
        want.too_recent,
        want.ignored,
        0,
        want.missing,
        want.missing_active,
    ];
    assert_eq!(
        got, expected,
        "{what}: [objects_scanned, valid, orphans, orphan_bytes, too_recent, ignored, unparsed, \
         missing, missing_active]\n{sum:#}"
    );
    let folders: Vec<(String, u64, u64)> = sum["orphans_by_folder"]
        .as_array()
        .expect("orphans_by_folder is an array")
        .iter()
        .map(|f| {
            (
                f["folder"].as_str().expect("folder").to_string(),
                f["count"].as_u64().expect("count"),
                f["bytes"].as_u64().expect("bytes"),
            )
        })
        .collect();
    let got_set: BTreeSet<(&str, u64, u64)> = folders
        .iter()
        .map(|(f, c, b)| (f.as_str(), *c, *b))
        .collect();
    let want_set: BTreeSet<(&str, u64, u64)> = want.folders.iter().copied().collect();
    assert_eq!(got_set, want_set, "{what}: orphans_by_folder");
    assert!(
        folders.windows(2).all(|w| w[0].1 >= w[1].1),
        "{what}: orphans_by_folder, largest first: {folders:?}"
    );

    // The findings agree with the CSV's.
    let orphans: Vec<&str> = json["orphans"]
        .as_array()
        .expect("orphans is an array")
        .iter()
        .map(|o| o["key"].as_str().expect("key is a string"))
        .collect();
    assert_eq!(orphans, expected_orphans(scan), "{what}: orphans");
    let missing: Vec<(&str, &str, &str, &str)> = json["missing"]
        .as_array()
        .expect("missing is an array")
        .iter()
        .map(|m| {
            (
                m["reference"].as_str().expect("reference"),
                m["record_id"].as_str().expect("record_id is a string"),
                m["key"].as_str().expect("key"),
                m["status"].as_str().expect("status"),
            )
        })
        .collect();
    let want_missing: Vec<(&str, &str, &str, &str)> = expected_missing(scan)
        .iter()
        .map(|m| (m.reference, m.record_id, m.key, m.status))
        .collect();
    assert_eq!(missing, want_missing, "{what}: missing");
}
