//! `assetgc triggers` (SPEC §7), one story run against SQLite, PostgreSQL and MariaDB: the README's
//! profile-pictures config as written, replaced and deleted files queued after `delay` and
//! deleted by `queue run`, nothing from a rolled-back transaction, a file another row still names
//! kept, the app's own outbox INSERT, `uninstall` moving (or, with `--discard-pending`, dropping)
//! pending rows and leaving the catalogue as it found it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{Backend, TestDb, readme_example, unique_name, write_file};
use sqlx::{AssertSqlSafe, Connection as _, Row as _};

const BULK: usize = 1000;
const DELAY: &str = "2s";
/// What the worker waits at least before a row is due; used to look "before the delay" without
/// racing the clock: the same rows, read with an hour's delay, are not due.
const LONG_DELAY: &str = "1h";

#[tokio::test]
async fn triggers_story_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test]
async fn triggers_story_postgres() {
    story(Backend::Postgres).await;
}

#[tokio::test]
async fn triggers_story_mariadb() {
    story(Backend::MariaDb).await;
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The binary with the README example's variables set.
fn run(dir: &Path, db_url: &str, delay: &str, args: &[&str]) -> Run {
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("the assetgc binary is built");
    cmd.arg("--config")
        .arg(dir.join("assetgc.toml"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("MEDIA_DIR", dir.join("media"))
        .env("DATABASE_URL", db_url)
        .env("TRIGGER_DELAY", delay)
        .env_remove("ASSETGC_CONFIG")
        .env_remove("ASSETGC_LOG");
    let out = cmd.output().expect("run assetgc");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: &Run, what: &str) {
    assert_eq!(
        r.code, 0,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    );
}

/// `(key, reason, state, outcome)` of every queue entry, from the state database beside the
/// config.
async fn queue(dir: &Path) -> Vec<(String, String, String, String)> {
    let url = format!("sqlite://{}", dir.join("assetgc.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the state database");
    let rows =
        sqlx::query("SELECT key, reason, state, COALESCE(outcome, '') FROM queue ORDER BY key, id")
            .fetch_all(&mut conn)
            .await
            .expect("read the queue");
    conn.close().await.expect("close");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Everything the database's catalogue says about user objects: tables, columns, indexes,
/// triggers, functions and privileges.
async fn catalogue(db: &TestDb) -> Vec<String> {
    let sql: &[&str] = match db.backend {
        Backend::Sqlite => &[
            "SELECT type || ' ' || name || ' ' || tbl_name || ' ' || COALESCE(sql, '') FROM sqlite_master ORDER BY 1",
        ],
        Backend::Postgres => &[
            "SELECT 'class ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || COALESCE(c.relacl::text, '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
            "SELECT 'trigger ' || tgname || ' ' || tgrelid::regclass::text FROM pg_trigger ORDER BY 1",
            "SELECT 'function ' || p.oid::regprocedure::text || ' ' || COALESCE(p.proacl::text, '') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            "SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
            "SELECT 'namespace ' || nspname || ' ' || COALESCE(nspacl::text, '') FROM pg_namespace ORDER BY 1",
        ],
        Backend::MariaDb => &[
            "SELECT CONCAT('table ', TABLE_NAME, ' ', TABLE_TYPE) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
            "SELECT CONCAT('column ', TABLE_NAME, '.', COLUMN_NAME, ' ', COLUMN_TYPE) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
            "SELECT CONCAT('index ', TABLE_NAME, '.', INDEX_NAME, '.', COLUMN_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
            "SELECT CONCAT('trigger ', TRIGGER_NAME, ' ', EVENT_OBJECT_TABLE) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1",
            "SELECT CONCAT('routine ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1",
            "SELECT CONCAT('grant ', GRANTEE, ' ', TABLE_NAME, ' ', PRIVILEGE_TYPE) FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
        ],
    };
    let mut out = Vec::new();
    for q in sql {
        out.extend(strings(db, q).await);
    }
    out
}

/// The first column of every row, as text.
async fn strings(db: &TestDb, sql: &str) -> Vec<String> {
    macro_rules! go {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(&db.url).await.expect("connect");
            let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            conn.close().await.expect("close");
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).expect("text"))
                .collect()
        }};
    }
    match db.backend {
        Backend::Sqlite => go!(sqlx::SqliteConnection),
        Backend::Postgres => go!(sqlx::PgConnection),
        Backend::MariaDb => go!(sqlx::MySqlConnection),
    }
}

fn exists(dir: &Path, key: &str) -> bool {
    dir.join("media").join(key).exists()
}

fn bulk_key(i: usize) -> String {
    format!("bulk/{i:04}.jpg")
}

/// Waits until every outbox row is due on the database's clock, then runs `queue run` once:
/// it must empty the outbox (rows in batches of 1000, read in id order).
fn drain(dir: &Path, url: &str) {
    let start = Instant::now();
    let due = loop {
        let s = run(dir, url, DELAY, &["triggers", "status"]);
        ok(&s, "triggers status");
        let (pending, due) = counts(&s.stdout);
        if pending == due {
            break due;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the outbox rows never came due:\n{}",
            s.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let r = run(dir, url, DELAY, &["queue", "run"]);
    ok(&r, "queue run");
    // The summary says how many outbox rows the run moved.
    if due > 0 {
        assert!(
            r.stdout
                .contains(&format!("from the outbox: {due} row(s) moved")),
            "{}",
            r.stdout
        );
    }
    let s = run(dir, url, DELAY, &["triggers", "status"]);
    assert_eq!(counts(&s.stdout), (0, 0), "{}", s.stdout);
}

/// `outbox: P pending, D due` of the status line.
fn counts(status: &str) -> (u64, u64) {
    let at = status.find("outbox: ").expect("a status line") + 8;
    let mut words = status[at..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty());
    let mut next = || words.next().and_then(|w| w.parse().ok()).expect("a count");
    (next(), next())
}

async fn story(backend: Backend) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let Some(db) = TestDb::create(backend, dir).await else {
        return;
    };
    let url = db.url.clone();
    // The README's worked example, as written, plus one reference without `track`.
    let config = format!(
        "{}\n[[references]]\nname = \"documents\"\nstore = \"media\"\nquery = \"SELECT id, file AS key FROM documents\"\n",
        readme_example("profile-pictures")
    );
    std::fs::write(dir.join("assetgc.toml"), config).expect("write config");

    let id = if backend == Backend::Postgres {
        "id SERIAL PRIMARY KEY"
    } else if backend == Backend::MariaDb {
        "id INTEGER AUTO_INCREMENT PRIMARY KEY"
    } else {
        "id INTEGER PRIMARY KEY"
    };
    let mut values: Vec<String> = vec![
        "('one', 'old/1.jpg')".into(),
        "('two', 'old/2.jpg')".into(),
        "('three', 'old/3.jpg')".into(),
        "('four', 'shared.jpg')".into(),
        "('five', 'shared.jpg')".into(),
        "('six', 'old/6.jpg')".into(),
        "('seven', NULL)".into(),
        "('eight', 'old/8.jpg')".into(),
    ];
    values.extend((0..BULK).map(|i| format!("('bulk', '{}')", bulk_key(i))));
    db.execute(&[
        format!("CREATE TABLE profiles ({id}, name VARCHAR(50), avatar VARCHAR(200))"),
        format!("CREATE TABLE documents ({id}, file VARCHAR(200))"),
        format!(
            "INSERT INTO profiles (name, avatar) VALUES {}",
            values.join(", ")
        ),
    ])
    .await;
    let old = SystemTime::now() - Duration::from_secs(86_400 * 30);
    let media = dir.join("media");
    let mut files: Vec<String> = [
        "old/1.jpg",
        "old/2.jpg",
        "old/3.jpg",
        "shared.jpg",
        "old/6.jpg",
        "old/8.jpg",
        "new/1.jpg",
        "new/3.jpg",
        "new/6.jpg",
        "new/8.jpg",
        "uploads/abandoned.jpg",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    files.extend((0..BULK).map(bulk_key));
    files.extend((0..BULK).map(|i| format!("bulk2/{i:04}.jpg")));
    for f in &files {
        write_file(&media, f, b"x", old);
    }

    // On PostgreSQL the app's changes are made by a role that may only read and change
    // its own table: the trigger function writes the outbox as its owner.
    let app_url = if backend == Backend::Postgres {
        let role = unique_name("app");
        db.execute(&[
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT SELECT, UPDATE, DELETE ON profiles TO {role}"),
        ])
        .await;
        let mut u = url::Url::parse(&url).expect("url");
        u.set_username(&role).expect("user");
        Some((u.to_string(), role))
    } else {
        None
    };

    let pristine = catalogue(&db).await;

    // Bad input: a reference without `track` is one line, exit 2, nothing created.
    let bad = run(
        dir,
        &url,
        DELAY,
        &["triggers", "install", "--reference", "documents"],
    );
    assert_eq!(
        bad.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        bad.stdout, bad.stderr
    );
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("documents") && bad.stderr.contains("track"),
        "{}",
        bad.stderr
    );
    let unknown = run(
        dir,
        &url,
        DELAY,
        &["triggers", "install", "--reference", "nope"],
    );
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert_eq!(
        catalogue(&db).await,
        pristine,
        "a refused install changed the catalogue"
    );

    // Installing twice is harmless.
    ok(&run(dir, &url, DELAY, &["triggers", "install"]), "install");
    let installed = catalogue(&db).await;
    assert_ne!(installed, pristine, "install created nothing");
    let again = run(dir, &url, DELAY, &["triggers", "install"]);
    ok(&again, "second install");
    assert!(
        again.stdout.contains("already installed"),
        "{}",
        again.stdout
    );
    assert_eq!(
        catalogue(&db).await,
        installed,
        "a second install changed the catalogue"
    );
    let status = run(dir, &url, DELAY, &["triggers", "status"]);
    ok(&status, "status");
    if backend == Backend::Postgres {
        assert!(
            status
                .stdout
                .contains("SECURITY DEFINER, search_path pinned"),
            "{}",
            status.stdout
        );
    }
    assert!(
        status
            .stdout
            .contains("reference profile pictures (database app): installed; outbox: 0 pending"),
        "{}",
        status.stdout
    );

    // The app's changes.
    let app = app_url.as_ref().map_or(url.clone(), |(u, _)| u.clone());
    exec(
        backend,
        &app,
        &[
            // A replaced file.
            "UPDATE profiles SET avatar = 'new/1.jpg' WHERE name = 'one'".to_string(),
            // 1,000 replaced in one statement.
            "UPDATE profiles SET avatar = REPLACE(avatar, 'bulk/', 'bulk2/') WHERE name = 'bulk'"
                .to_string(),
            // A deleted row.
            "DELETE FROM profiles WHERE name = 'two'".to_string(),
            // A shared file replaced in one row only.
            "UPDATE profiles SET avatar = 'new/4.jpg' WHERE name = 'four'".to_string(),
            // Unchanged values and a NULL becoming a key queue nothing.
            "UPDATE profiles SET avatar = avatar WHERE name = 'six'".to_string(),
            "UPDATE profiles SET avatar = 'new/7.jpg' WHERE name = 'seven'".to_string(),
        ],
    )
    .await;
    // A rolled-back transaction queues nothing.
    rolled_back(backend, &app).await;
    // The app's own INSERT. On PostgreSQL the app's role has no privilege on the outbox (its
    // UPDATEs above fired the SECURITY DEFINER function all the same) until the GRANT the
    // README shows.
    let own = "INSERT INTO assetgc_outbox (reference, pk, old_value) VALUES ('profile pictures', 'upload 17', 'uploads/abandoned.jpg')";
    if let Some((app_url, role)) = &app_url {
        let denied = try_exec(app_url, own).await;
        assert!(
            denied
                .as_ref()
                .is_err_and(|e| e.contains("permission denied")),
            "the app's role could write the outbox without a GRANT: {denied:?}"
        );
        db.execute(&[format!("GRANT INSERT ON assetgc_outbox TO {role}")])
            .await;
    }
    exec(backend, &app, &[own]).await;

    let expected: BTreeSet<String> = [
        "old/1.jpg",
        "old/2.jpg",
        "shared.jpg",
        "uploads/abandoned.jpg",
    ]
    .into_iter()
    .map(String::from)
    .chain((0..BULK).map(bulk_key))
    .collect();
    let pending = run(dir, &url, LONG_DELAY, &["triggers", "status"]);
    ok(&pending, "status");
    assert!(
        pending
            .stdout
            .contains(&format!("outbox: {} pending, 0 due", expected.len())),
        "{}",
        pending.stdout
    );

    // Before the delay: nothing queued, nothing deleted.
    ok(
        &run(dir, &url, LONG_DELAY, &["queue", "run"]),
        "queue run before the delay",
    );
    assert!(queue(dir).await.is_empty(), "queued before the delay");
    assert!(
        files.iter().all(|f| exists(dir, f)),
        "deleted before the delay"
    );

    // After it: exactly the replaced and deleted files, queued and deleted; the shared one kept.
    drain(dir, &url);
    let q = queue(dir).await;
    let keys: BTreeSet<String> = q.iter().map(|e| e.0.clone()).collect();
    assert_eq!(keys, expected, "queued keys");
    assert_eq!(q.len(), expected.len(), "one entry per file: {q:?}");
    for (key, reason, state, outcome) in &q {
        assert_eq!(reason, "trigger", "{key}");
        if key == "shared.jpg" {
            assert_eq!(
                (state.as_str(), outcome.as_str()),
                ("dropped", "referenced"),
                "{key}"
            );
        } else {
            assert_eq!(
                (state.as_str(), outcome.as_str()),
                ("done", "deleted"),
                "{key}"
            );
        }
    }
    for f in &files {
        let gone = expected.contains(f) && f != "shared.jpg";
        assert_eq!(exists(dir, f), !gone, "{f}");
    }

    // `uninstall` with a pending row moves it into the queue first.
    exec(
        backend,
        &app,
        &["UPDATE profiles SET avatar = 'new/3.jpg' WHERE name = 'three'"],
    )
    .await;
    let un = run(dir, &url, DELAY, &["triggers", "uninstall"]);
    ok(&un, "uninstall");
    assert!(
        un.stdout
            .contains("moved 1 pending outbox row(s) into the queue"),
        "{}",
        un.stdout
    );
    assert_eq!(
        catalogue(&db).await,
        pristine,
        "uninstall left the catalogue changed"
    );
    let moved: Vec<_> = queue(dir)
        .await
        .into_iter()
        .filter(|e| e.0 == "old/3.jpg")
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        (moved[0].1.as_str(), moved[0].2.as_str()),
        ("trigger", "pending")
    );
    // Due once its delay is over; then deleted.
    let start = Instant::now();
    while exists(dir, "old/3.jpg") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "old/3.jpg never deleted"
        );
        std::thread::sleep(Duration::from_millis(300));
        ok(&run(dir, &url, DELAY, &["queue", "run", "-q"]), "queue run");
    }
    // Changes after uninstall queue nothing.
    exec(
        backend,
        &app,
        &["UPDATE profiles SET avatar = 'new/8.jpg' WHERE name = 'eight'"],
    )
    .await;

    // `--discard-pending` drops pending rows: their files stay.
    ok(
        &run(dir, &url, DELAY, &["triggers", "install"]),
        "install again",
    );
    exec(
        backend,
        &app,
        &["UPDATE profiles SET avatar = 'new/6.jpg' WHERE name = 'six'"],
    )
    .await;
    let before = queue(dir).await;
    let discard = run(
        dir,
        &url,
        DELAY,
        &["triggers", "uninstall", "--discard-pending"],
    );
    ok(&discard, "uninstall --discard-pending");
    assert!(
        discard.stdout.contains("discarded 1 pending outbox row(s)"),
        "{}",
        discard.stdout
    );
    assert_eq!(
        catalogue(&db).await,
        pristine,
        "uninstall left the catalogue changed"
    );
    std::thread::sleep(Duration::from_millis(2100));
    ok(&run(dir, &url, DELAY, &["queue", "run", "-q"]), "queue run");
    assert_eq!(queue(dir).await, before, "discarded rows were queued");
    assert!(exists(dir, "old/6.jpg") && exists(dir, "old/8.jpg"));

    if let Some((_, role)) = app_url {
        let admin = std::env::var("ASSETGC_TEST_POSTGRES_URL").expect("set");
        db.drop_db().await;
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {role}")))
            .execute(&mut conn)
            .await
            .expect("drop role");
        conn.close().await.expect("close");
    } else {
        db.drop_db().await;
    }
}

/// Statements run in turn on one connection to `url` (the app's role on PostgreSQL).
async fn exec<S: AsRef<str>>(backend: Backend, url: &str, statements: &[S]) {
    macro_rules! go {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            for sql in statements {
                let sql = sql.as_ref();
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            conn.close().await.expect("close");
        }};
    }
    match backend {
        Backend::Sqlite => go!(sqlx::SqliteConnection),
        Backend::Postgres => go!(sqlx::PgConnection),
        Backend::MariaDb => go!(sqlx::MySqlConnection),
    }
}

/// One statement on PostgreSQL, its error as text.
async fn try_exec(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let r = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    conn.close().await.expect("close");
    r
}

/// A change inside a transaction that is rolled back.
async fn rolled_back(backend: Backend, url: &str) {
    macro_rules! go {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await.expect("connect");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("UPDATE profiles SET avatar = 'new/3.jpg' WHERE name = 'three'")
                .execute(&mut *tx)
                .await
                .expect("update");
            sqlx::query("DELETE FROM profiles WHERE name = 'eight'")
                .execute(&mut *tx)
                .await
                .expect("delete");
            tx.rollback().await.expect("rollback");
            conn.close().await.expect("close");
        }};
    }
    match backend {
        Backend::Sqlite => go!(sqlx::SqliteConnection),
        Backend::Postgres => go!(sqlx::PgConnection),
        Backend::MariaDb => go!(sqlx::MySqlConnection),
    }
}

/// `check` on MariaDB: a tracked table that is the child of an `ON DELETE CASCADE` key loses
/// rows without firing its triggers, and says so.
#[tokio::test]
async fn check_warns_when_a_tracked_table_is_a_cascading_child() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let Some(db) = TestDb::create(Backend::MariaDb, dir).await else {
        return;
    };
    db.execute(&[
        "CREATE TABLE users (id INT PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE profiles (id INT PRIMARY KEY, user_id INT, avatar VARCHAR(200), CONSTRAINT profiles_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE) ENGINE=InnoDB",
    ])
    .await;
    std::fs::create_dir_all(dir.join("media")).expect("media");
    std::fs::write(dir.join("assetgc.toml"), readme_example("profile-pictures")).expect("config");
    let r = run(dir, &db.url, DELAY, &["check"]);
    ok(&r, "check");
    assert!(
        r.stdout.contains(
            "warning: reference profile pictures: table profiles of database app is the child of foreign key profiles_user ON DELETE CASCADE (parent users)"
        ),
        "{}",
        r.stdout
    );
    db.execute(&["ALTER TABLE profiles DROP FOREIGN KEY profiles_user"])
        .await;
    let r = run(dir, &db.url, DELAY, &["check"]);
    ok(&r, "check");
    assert!(!r.stdout.contains("CASCADE"), "{}", r.stdout);
    db.drop_db().await;
}

/// `uninstall --reference NAME` removes that reference's triggers and queues its rows; the
/// other reference's triggers and the outbox stay.
#[tokio::test]
async fn uninstall_of_one_reference_leaves_the_others() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let db = TestDb::create(Backend::Sqlite, dir)
        .await
        .expect("SQLite needs no server");
    db.execute(&[
        "CREATE TABLE profiles (id INTEGER PRIMARY KEY, avatar TEXT, banner TEXT)",
        "INSERT INTO profiles (avatar, banner) VALUES ('a/1.jpg', 'b/1.jpg')",
    ])
    .await;
    std::fs::create_dir_all(dir.join("media")).expect("media");
    let config = format!(
        "{}\n[[references]]\nname = \"banners\"\nstore = \"media\"\nquery = \"SELECT id, banner AS key FROM profiles\"\ntrack = {{ table = \"profiles\", column = \"banner\", pk = \"id\", delay = \"1h\" }}\n",
        readme_example("profile-pictures")
    );
    std::fs::write(dir.join("assetgc.toml"), config).expect("config");
    ok(
        &run(dir, &db.url, LONG_DELAY, &["triggers", "install"]),
        "install",
    );
    db.execute(&["UPDATE profiles SET avatar = 'a/2.jpg', banner = 'b/2.jpg'"])
        .await;
    let r = run(
        dir,
        &db.url,
        LONG_DELAY,
        &["triggers", "uninstall", "--reference", "banners"],
    );
    ok(&r, "uninstall --reference banners");
    assert!(
        r.stdout
            .contains("moved 1 pending outbox row(s) into the queue"),
        "{}",
        r.stdout
    );
    let triggers = strings(
        &db,
        "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1",
    )
    .await;
    assert_eq!(triggers.len(), 2, "{triggers:?}");
    assert!(
        triggers
            .iter()
            .all(|t| t.starts_with("assetgc_t_profile_pictures_"))
    );
    let outbox = strings(&db, "SELECT old_value FROM assetgc_outbox").await;
    assert_eq!(outbox, ["a/1.jpg"]);
    let q = queue(dir).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].0.as_str(), q[0].2.as_str()), ("b/1.jpg", "pending"));
    let s = run(dir, &db.url, LONG_DELAY, &["triggers", "status"]);
    ok(&s, "status");
    assert!(
        s.stdout
            .contains("reference banners (database app): NOT installed"),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout.contains(
            "reference profile pictures (database app): installed; outbox: 1 pending, 0 due"
        ),
        "{}",
        s.stdout
    );
}

/// A tracked database out of reach is a warning for `queue run`, which goes on.
#[test]
fn queue_run_goes_on_when_a_tracked_database_is_out_of_reach() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("media")).expect("media");
    std::fs::write(dir.join("assetgc.toml"), readme_example("profile-pictures")).expect("config");
    let missing = format!("sqlite://{}", dir.join("gone.db").display());
    let r = run(dir, &missing, DELAY, &["queue", "run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("triggers: outbox not read"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("Processed 0 entries"), "{}", r.stdout);
}

/// A PostgreSQL URL whose connections create in (and first read from) `schema`, quoted as given.
fn in_schema(url: &str, schema: &str) -> String {
    format!("{url}?options=-csearch_path%3D%22{schema}%22")
}

/// The names of our objects anywhere in a PostgreSQL database: `class schema.name`, `trigger
/// name table`, `function schema.name`.
async fn pg_ours(db: &TestDb) -> Vec<String> {
    let mut out = strings(
        db,
        "SELECT 'class ' || n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE 'assetgc%' AND c.relkind = 'r' ORDER BY 1",
    )
    .await;
    out.extend(
        strings(
            db,
            "SELECT 'trigger ' || n.nspname || '.' || c.relname || ' ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname LIKE 'assetgc%' ORDER BY 1",
        )
        .await,
    );
    out.extend(
        strings(
            db,
            "SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname LIKE 'assetgc%' ORDER BY 1",
        )
        .await,
    );
    out
}

/// A current schema whose name has capitals (`"App"`), beside a schema `app`: the outbox, the
/// functions and the triggers go where the connection creates (`"App"`), `status` finds them,
/// `queue run` moves their rows, and `uninstall` leaves nothing in either schema. The config's
/// `track` names are read as the app's unquoted SQL reads them (`Profiles` is `profiles`).
#[tokio::test]
async fn a_mixed_case_postgres_schema_holds_the_whole_install() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let Some(db) = TestDb::create(Backend::Postgres, dir).await else {
        return;
    };
    db.execute(&[
        "CREATE SCHEMA \"App\"",
        "CREATE SCHEMA app",
        "CREATE TABLE \"App\".profiles (id INT PRIMARY KEY, avatar TEXT)",
        "INSERT INTO \"App\".profiles VALUES (1, 'a/1.jpg'), (2, 'a/2.jpg')",
    ])
    .await;
    let url = in_schema(&db.url, "App");
    std::fs::create_dir_all(dir.join("media")).expect("media");
    let config = readme_example("profile-pictures").replace(
        "track = { table = \"profiles\", column = \"avatar\", pk = \"id\"",
        "track = { table = \"Profiles\", column = \"Avatar\", pk = \"ID\"",
    );
    assert!(config.contains("\"Profiles\""), "{config}");
    std::fs::write(dir.join("assetgc.toml"), config).expect("config");

    let r = run(dir, &url, DELAY, &["triggers", "install"]);
    ok(&r, "install");
    assert!(
        r.stdout.contains("outbox App.assetgc_outbox created"),
        "{}",
        r.stdout
    );
    let ours = pg_ours(&db).await;
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert!(ours[0] == "class App.assetgc_outbox", "{ours:?}");
    assert!(ours[1].starts_with("trigger App.profiles assetgc_t_profile_pictures_"));
    assert!(ours[2].starts_with("trigger App.profiles assetgc_t_profile_pictures_"));
    assert!(ours[3].starts_with("function App.assetgc_t_profile_pictures_"));
    let s = run(dir, &url, DELAY, &["triggers", "status"]);
    ok(&s, "status");
    assert!(
        s.stdout
            .contains("reference profile pictures (database app): installed;"),
        "{}",
        s.stdout
    );

    exec(
        Backend::Postgres,
        &url,
        &["UPDATE profiles SET avatar = 'a/1b.jpg' WHERE id = 1"],
    )
    .await;
    drain(dir, &url);
    let q = queue(dir).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].0.as_str(), q[0].1.as_str()), ("a/1.jpg", "trigger"));

    exec(
        Backend::Postgres,
        &url,
        &["DELETE FROM profiles WHERE id = 2"],
    )
    .await;
    let r = run(dir, &url, DELAY, &["triggers", "uninstall"]);
    ok(&r, "uninstall");
    assert!(
        r.stdout
            .contains("moved 1 pending outbox row(s) into the queue"),
        "{}",
        r.stdout
    );
    assert_eq!(pg_ours(&db).await, Vec::<String>::new());
    let q = queue(dir).await;
    assert!(q.iter().any(|e| e.0 == "a/2.jpg"), "{q:?}");
    db.drop_db().await;
}

/// Two installs in one PostgreSQL database, one per schema (two configs with the same
/// reference name): installing the second leaves the first alone, `status` of one does not
/// report the other's triggers, and uninstalling one leaves the other whole and working.
#[tokio::test]
async fn uninstall_in_one_postgres_schema_leaves_the_other_install() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let Some(db) = TestDb::create(Backend::Postgres, tmp.path()).await else {
        return;
    };
    let mut setup = Vec::new();
    for schema in ["a", "b"] {
        setup.push(format!("CREATE SCHEMA {schema}"));
        setup.push(format!(
            "CREATE TABLE {schema}.profiles (id INT PRIMARY KEY, avatar TEXT)"
        ));
        setup.push(format!(
            "INSERT INTO {schema}.profiles VALUES (1, '{schema}/1.jpg')"
        ));
    }
    db.execute(&setup).await;
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir_all(d.join("media")).expect("media");
        std::fs::write(d.join("assetgc.toml"), readme_example("profile-pictures")).expect("config");
    }
    let (url_a, url_b) = (in_schema(&db.url, "a"), in_schema(&db.url, "b"));
    ok(
        &run(&dir_a, &url_a, LONG_DELAY, &["triggers", "install"]),
        "install a",
    );
    ok(
        &run(&dir_b, &url_b, LONG_DELAY, &["triggers", "install"]),
        "install b",
    );
    let ours = pg_ours(&db).await;
    let in_b: Vec<&String> = ours.iter().filter(|o| o.contains(" b.")).collect();
    assert_eq!(ours.len(), 8, "{ours:?}");
    assert_eq!(in_b.len(), 4, "{ours:?}");
    for (d, u) in [(&dir_a, &url_a), (&dir_b, &url_b)] {
        let s = run(d, u, LONG_DELAY, &["triggers", "status"]);
        ok(&s, "status");
        assert!(
            s.stdout
                .contains("reference profile pictures (database app): installed;"),
            "{}",
            s.stdout
        );
        assert!(!s.stdout.contains("belongs to no tracked"), "{}", s.stdout);
    }

    let r = run(&dir_a, &url_a, LONG_DELAY, &["triggers", "uninstall"]);
    ok(&r, "uninstall a");
    assert!(
        r.stdout.contains("removed 2 trigger(s), 1 function(s)"),
        "{}",
        r.stdout
    );
    let left = pg_ours(&db).await;
    assert_eq!(
        left.iter().collect::<Vec<_>>(),
        in_b,
        "uninstall of schema a touched schema b"
    );
    let s = run(&dir_b, &url_b, LONG_DELAY, &["triggers", "status"]);
    ok(&s, "status b");
    assert!(
        s.stdout
            .contains("reference profile pictures (database app): installed;"),
        "{}",
        s.stdout
    );
    exec(
        Backend::Postgres,
        &url_b,
        &["UPDATE profiles SET avatar = 'b/2.jpg' WHERE id = 1"],
    )
    .await;
    assert_eq!(
        strings(&db, "SELECT old_value FROM b.assetgc_outbox").await,
        ["b/1.jpg"]
    );
    ok(
        &run(&dir_b, &url_b, LONG_DELAY, &["triggers", "uninstall"]),
        "uninstall b",
    );
    assert_eq!(pg_ours(&db).await, Vec::<String>::new());
    db.drop_db().await;
}

/// MariaDB: a reference whose name holds a backslash (and a quote) is installed twice and the
/// second time leaves both triggers as they were; the triggers write the name exactly.
#[tokio::test]
async fn installing_twice_on_mariadb_leaves_a_backslash_name_alone() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let Some(db) = TestDb::create(Backend::MariaDb, dir).await else {
        return;
    };
    db.execute(&[
        "CREATE TABLE profiles (id INT PRIMARY KEY, avatar VARCHAR(200))",
        "INSERT INTO profiles VALUES (1, 'a/1.jpg')",
    ])
    .await;
    std::fs::create_dir_all(dir.join("media")).expect("media");
    let name = r"pictures\raw 'v2'";
    let config = readme_example("profile-pictures").replace(
        "name = \"profile pictures\"",
        &format!("name = \"{}\"", name.replace('\\', "\\\\")),
    );
    assert!(
        config.contains(r#"name = "pictures\\raw 'v2'""#),
        "{config}"
    );
    std::fs::write(dir.join("assetgc.toml"), config).expect("config");
    let triggers = "SELECT CONCAT(TRIGGER_NAME, ' ', CAST(CREATED AS CHAR)) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1";

    ok(
        &run(dir, &db.url, LONG_DELAY, &["triggers", "install"]),
        "install",
    );
    let first = strings(&db, triggers).await;
    assert_eq!(first.len(), 2, "{first:?}");
    // CREATED counts hundredths of a second: a trigger made again would show a later time.
    std::thread::sleep(Duration::from_millis(50));
    let r = run(dir, &db.url, LONG_DELAY, &["triggers", "install"]);
    ok(&r, "install again");
    assert!(
        r.stdout
            .contains(&format!("reference {name}: already installed on profiles"))
            && r.stdout.contains("left as it was"),
        "{}",
        r.stdout
    );
    assert_eq!(strings(&db, triggers).await, first);

    db.execute(&["UPDATE profiles SET avatar = 'a/2.jpg' WHERE id = 1"])
        .await;
    assert_eq!(
        strings(&db, "SELECT reference FROM assetgc_outbox").await,
        [name]
    );
    let r = run(dir, &db.url, LONG_DELAY, &["triggers", "uninstall"]);
    ok(&r, "uninstall");
    assert!(
        r.stdout
            .contains("moved 1 pending outbox row(s) into the queue"),
        "{}",
        r.stdout
    );
    assert!(strings(&db, triggers).await.is_empty());
    db.drop_db().await;
}

/// MariaDB: two installs on one server, one per database (the same config shape, so the same
/// trigger names): installing the second leaves the first alone, and uninstalling one leaves the
/// other's triggers and outbox in place.
#[tokio::test]
async fn uninstall_in_one_mariadb_database_leaves_the_other_install() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let Some(db_a) = TestDb::create(Backend::MariaDb, tmp.path()).await else {
        return;
    };
    let db_b = TestDb::create(Backend::MariaDb, tmp.path())
        .await
        .expect("the same server");
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (db, d) in [(&db_a, &dir_a), (&db_b, &dir_b)] {
        db.execute(&[
            "CREATE TABLE profiles (id INT PRIMARY KEY, avatar VARCHAR(200))",
            "INSERT INTO profiles VALUES (1, 'x/1.jpg')",
        ])
        .await;
        std::fs::create_dir_all(d.join("media")).expect("media");
        std::fs::write(d.join("assetgc.toml"), readme_example("profile-pictures")).expect("config");
    }
    let triggers = "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1";
    ok(
        &run(&dir_a, &db_a.url, LONG_DELAY, &["triggers", "install"]),
        "install a",
    );
    ok(
        &run(&dir_b, &db_b.url, LONG_DELAY, &["triggers", "install"]),
        "install b",
    );
    assert_eq!(strings(&db_a, triggers).await.len(), 2);
    let in_b = strings(&db_b, triggers).await;
    assert_eq!(in_b.len(), 2, "{in_b:?}");
    let s = run(&dir_a, &db_a.url, LONG_DELAY, &["triggers", "status"]);
    ok(&s, "status a");
    assert!(!s.stdout.contains("belongs to no tracked"), "{}", s.stdout);

    let r = run(&dir_a, &db_a.url, LONG_DELAY, &["triggers", "uninstall"]);
    ok(&r, "uninstall a");
    assert!(r.stdout.contains("removed 2 trigger(s)"), "{}", r.stdout);
    assert!(strings(&db_a, triggers).await.is_empty());
    assert_eq!(strings(&db_b, triggers).await, in_b);
    db_b.execute(&["UPDATE profiles SET avatar = 'x/2.jpg' WHERE id = 1"])
        .await;
    assert_eq!(
        strings(&db_b, "SELECT old_value FROM assetgc_outbox").await,
        ["x/1.jpg"]
    );
    let s = run(&dir_b, &db_b.url, LONG_DELAY, &["triggers", "status"]);
    assert!(
        s.stdout
            .contains("reference profile pictures (database app): installed;"),
        "{}",
        s.stdout
    );
    ok(
        &run(&dir_b, &db_b.url, LONG_DELAY, &["triggers", "uninstall"]),
        "uninstall b",
    );
    assert!(strings(&db_b, triggers).await.is_empty());
    db_a.drop_db().await;
    db_b.drop_db().await;
}
