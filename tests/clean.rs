//! Retention policies (`clean`, SPEC §2 `[[policies]]`): what a policy deletes and keeps, its
//! figures against a count made here, `--retention-days`, `--dry-run`, releases (in the plan and
//! in the worker's re-check), and bad input. The README's worked examples run as written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Backend, TestDb, block_on, write_file};

const DAY: Duration = Duration::from_secs(86_400);

fn days_ago(d: u64) -> SystemTime {
    SystemTime::now() - DAY * u32::try_from(d).expect("days") - Duration::from_secs(60)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `assetgc <args>` with the config given and extra variables set.
fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("the assetgc binary");
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

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Every file under `root`, as keys.
fn files(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn state_count(dir: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("assetgc.db")).expect("state db");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("assetgc.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// The README's QR codes example, as written: QR codes older than 30 days go unless a row uses
/// them; `exclude` and younger ones stay; the figures match a count made here.
#[test]
fn qr_codes_older_than_30_days_go_unless_a_row_uses_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    let ages = [1, 10, 29, 31, 35, 45, 60, 90];
    for d in ages {
        write_file(&media, &format!("qr_codes/q{d}.png"), b"qr", days_ago(d));
    }
    write_file(&media, "qr_codes/static/logo.png", b"logo", days_ago(400));
    write_file(&media, "avatars/old.png", b"avatar", days_ago(400));
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE qrcodes (id INTEGER PRIMARY KEY, qr_image TEXT)",
        "INSERT INTO qrcodes (qr_image) VALUES ('qr_codes/q45.png'), ('qr_codes/q1.png'), (NULL)",
    ]));
    let config = write_config(dir.path(), &common::readme_example("qr-codes"));
    let root = media.display().to_string();
    let env = [
        ("MEDIA_ROOT", root.as_str()),
        ("DATABASE_URL", db.url.as_str()),
    ];

    // Counted here: under qr_codes/ minus static/, older than 30 days, not referenced.
    let scanned = ages.len() as u64;
    let expected: BTreeSet<String> = [31, 35, 60, 90]
        .iter()
        .map(|d| format!("qr_codes/q{d}.png"))
        .collect();

    let before = files(&media);
    let dry = json(&run(&config, &["clean", "--dry-run", "--json"], &env));
    assert_eq!(files(&media), before, "a dry run deletes nothing");
    assert_eq!(state_count(dir.path(), "SELECT COUNT(*) FROM queue"), 0);
    assert_eq!(state_count(dir.path(), "SELECT COUNT(*) FROM audit"), 0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["total_files_scanned"], scanned);
    assert_eq!(dry["deleted_count"], expected.len() as u64);
    assert_eq!(dry["retained_count"], scanned - expected.len() as u64);
    assert_eq!(dry["retention_days"], 30);
    assert_eq!(dry["deleted_size_mb"], 0.0);
    let sample: BTreeSet<String> = dry["deleted_files_sample"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|v| v.as_str().expect("key").to_string())
        .collect();
    assert_eq!(sample, expected);
    for field in ["success", "message", "job_id"] {
        assert!(dry.get(field).is_some(), "{field} in {dry}");
    }

    // --retention-days replaces older_than: 50 days leaves only the 60- and 90-day-old ones.
    let longer = json(&run(
        &config,
        &["clean", "--dry-run", "--json", "--retention-days", "50"],
        &env,
    ));
    assert_eq!(longer["deleted_count"], 2);
    assert_eq!(longer["retention_days"], 50);

    let real = json(&run(&config, &["clean", "--json"], &env));
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["deleted_count"], expected.len() as u64);
    assert_eq!(real["deleted"], expected.len() as u64);
    assert_eq!(real["failed"], 0);
    let gone: BTreeSet<String> = before.difference(&files(&media)).cloned().collect();
    assert_eq!(gone, expected, "exactly the expired, unreferenced QR codes");
    // Recorded: the run, its entries with the policy as their rule, one audit row each.
    let job = real["job_id"].as_i64().expect("job id");
    assert_eq!(
        state_count(
            dir.path(),
            &format!(
                "SELECT COUNT(*) FROM cleanups WHERE id = {job} AND state = 'done' AND dry_run = 0"
            )
        ),
        1
    );
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM queue WHERE reason = 'clean' AND rule = 'qr' AND state = 'done'"
        ),
        4
    );
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM audit WHERE outcome = 'deleted'"
        ),
        4
    );
    // A second run finds nothing left to do.
    let again = json(&run(&config, &["clean", "--json"], &env));
    assert_eq!(again["deleted_count"], 0);
    assert_eq!(again["total_files_scanned"], scanned - 4);
}

/// `min_age` wins over `older_than`: a policy of "0s" still keeps what is younger than the
/// store's `min_age`, and counts it as retained.
#[test]
fn nothing_younger_than_min_age_is_queued() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    write_file(&media, "tmp/new.bin", b"new", SystemTime::now());
    write_file(&media, "tmp/old.bin", b"old", days_ago(2));
    let config = write_config(
        dir.path(),
        &format!(
            "[stores.media]\nurl = \"{}\"\nmin_age = \"1d\"\nquarantine = false\n\n[[policies]]\nname = \"tmp\"\nstore = \"media\"\nolder_than = \"0s\"\n",
            media.display()
        ),
    );
    let r = json(&run(&config, &["clean", "--json"], &[]));
    assert_eq!(r["deleted_count"], 1);
    assert_eq!(r["retained_count"], 1);
    assert_eq!(r["policies"][0]["too_recent"], 1);
    assert!(media.join("tmp/new.bin").exists());
    assert!(!media.join("tmp/old.bin").exists());
    let check = common::assetgc(&config, &["check"]);
    assert!(
        check
            .stdout
            .contains("older_than (0s) is below the min_age"),
        "{}",
        check.stdout
    );
}

fn releases_config(dir: &Path, media: &Path, db_url: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"[stores.media]
url = "{}"
min_age = "0s"
quarantine = false

[databases.app]
url = "{db_url}"

[[references]]
name = "clip rows"
store = "media"
query = "SELECT id, path AS key FROM clips"

[[references]]
name = "thumbs"
store = "media"
query = "SELECT id, path AS key FROM thumbs"

[[policies]]
name = "clips"
store = "media"
prefix = "clips/"
older_than = "1d"
keep_referenced = false
releases = ["clip rows"]
"#,
            media.display()
        ),
    )
}

/// `keep_referenced = false` with `releases`: objects only the released reference names go; an
/// object another reference also names survives (SPEC §2, invariant 1).
#[test]
fn released_references_do_not_protect_but_every_other_does() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    for k in ["clips/a.mp4", "clips/b.mp4", "clips/c.mp4"] {
        write_file(&media, k, b"clip", days_ago(3));
    }
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE clips (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO clips (path) VALUES ('clips/a.mp4'), ('clips/b.mp4')",
        "CREATE TABLE thumbs (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO thumbs (path) VALUES ('clips/b.mp4')",
    ]));
    let config = releases_config(dir.path(), &media, &db.url);
    let r = json(&run(&config, &["clean", "--json"], &[]));
    assert_eq!(r["deleted_count"], 2, "{r}");
    assert!(
        !media.join("clips/a.mp4").exists(),
        "named only by released rows"
    );
    assert!(!media.join("clips/c.mp4").exists(), "named by nothing");
    assert!(media.join("clips/b.mp4").exists(), "also named by thumbs");
}

/// The worker's re-check applies a policy's releases and nothing else: an entry of the policy
/// named only by a released reference is deleted; one that another reference names is dropped
/// `referenced`; the same key queued without the rule is never deleted.
#[test]
fn the_recheck_releases_only_what_the_entry_rule_releases() {
    use assetgc::domain::ObjectId;
    use assetgc::domain::queue::{NewEntry, Reason};
    use assetgc::state::QueueStore as _;
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    for k in ["clips/a.mp4", "clips/b.mp4", "clips/d.mp4"] {
        write_file(&media, k, b"clip", days_ago(3));
    }
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE clips (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO clips (path) VALUES ('clips/a.mp4'), ('clips/b.mp4'), ('clips/d.mp4')",
        "CREATE TABLE thumbs (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO thumbs (path) VALUES ('clips/b.mp4')",
    ]));
    let config = releases_config(dir.path(), &media, &db.url);
    let cfg = assetgc::config::load(Some(&config))
        .expect("config")
        .expect("a config");
    block_on(async {
        let app = assetgc::app::App::open(cfg).await.expect("app");
        let now = chrono::Utc::now();
        let entry = |key: &str, reason: Reason, rule: &str| NewEntry {
            object: ObjectId::new("media", assetgc::domain::ResourceType::Plain, key),
            reason,
            rule: rule.into(),
            row_id: String::new(),
            client_id: String::new(),
            scan_id: None,
            uploaded_at: Some(now - chrono::TimeDelta::days(3)),
            next_attempt_at: now,
            original_key: None,
        };
        app.state
            .enqueue(
                "test",
                &[
                    entry("clips/a.mp4", Reason::Clean, "clips"),
                    entry("clips/b.mp4", Reason::Clean, "clips"),
                    entry("clips/d.mp4", Reason::Add, ""),
                ],
            )
            .await
            .expect("enqueue");
        app.close().await;
    });
    let r = common::assetgc(&config, &["queue", "run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!media.join("clips/a.mp4").exists(), "released: deleted");
    assert!(media.join("clips/b.mp4").exists(), "thumbs still names it");
    assert!(
        media.join("clips/d.mp4").exists(),
        "no rule: every reference protects"
    );
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM audit WHERE outcome = 'referenced'"
        ),
        2
    );
}

/// The README's clips example, as written, on S3 (moto) with PostgreSQL: clips past the
/// retention go, completed clips within it stay (keep query, its cutoff bound as a
/// `timestamptz`), a clip a showcase names stays; `--retention-days` overrides. moto cannot
/// backdate an upload, so the retention is seconds here (`CLIPS_RETENTION`), not days.
#[test]
fn clips_past_retention_go_unless_completed_within_it_or_showcased() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let Some(db) = block_on(TestDb::create(Backend::Postgres, dir.path())) else {
        return;
    };
    let bucket = block_on(common::s3::Bucket::create(&endpoint));
    let old = [
        "clips/expired-1.mp4",
        "clips/expired-2.mp4",
        "clips/pending-old.mp4",
        "clips/completed-recent.mp4",
        "clips/completed-long-ago.mp4",
        "clips/showcased.mp4",
        "clips/no-row.mp4",
    ];
    block_on(async {
        for k in old {
            bucket.put(k, b"clip").await;
        }
        bucket.put("other/old.mp4", b"not a clip").await;
    });
    block_on(db.execute(&[
        "CREATE TABLE clips (id SERIAL PRIMARY KEY, s3_key TEXT, status TEXT, created_at TIMESTAMPTZ)",
        "INSERT INTO clips (s3_key, status, created_at) VALUES
            ('clips/expired-1.mp4', 'failed', now() - interval '9 days'),
            ('clips/expired-2.mp4', 'completed', now() - interval '9 days'),
            ('clips/pending-old.mp4', 'pending', now()),
            -- Within the retention however long the test takes.
            ('clips/completed-recent.mp4', 'completed', now() + interval '1 hour'),
            ('clips/completed-long-ago.mp4', 'completed', now() - interval '1 hour'),
            ('clips/showcased.mp4', 'failed', now() - interval '9 days'),
            ('clips/fresh.mp4', 'pending', now())",
        "CREATE TABLE showcases (id SERIAL PRIMARY KEY, clip_key TEXT)",
        "INSERT INTO showcases (clip_key) VALUES ('clips/showcased.mp4')",
    ]));
    let config = write_config(dir.path(), &common::readme_example("clips-retention"));
    let env = [
        ("CLIPS_BUCKET", bucket.name.as_str()),
        ("S3_ENDPOINT", endpoint.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("CLIPS_RETENTION", "4s"),
        ("MIN_AGE", "1s"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    // A retention of a day keeps every clip.
    let day = json(&run(
        &config,
        &["clean", "--dry-run", "--json", "--retention-days", "1"],
        &env,
    ));
    assert_eq!(day["deleted_count"], 0);
    assert_eq!(day["total_files_scanned"], 7);
    // The objects above are now older than the retention; the one put next is not.
    std::thread::sleep(Duration::from_secs(6));
    block_on(bucket.put("clips/fresh.mp4", b"clip"));
    let expected: BTreeSet<&str> = [
        "clips/expired-1.mp4",
        "clips/expired-2.mp4",
        "clips/pending-old.mp4",
        "clips/completed-long-ago.mp4",
        "clips/no-row.mp4",
    ]
    .into_iter()
    .collect();
    // A retention of a day keeps every clip.
    let day = json(&run(
        &config,
        &["clean", "--dry-run", "--json", "--retention-days", "1"],
        &env,
    ));
    assert_eq!(day["deleted_count"], 0);
    assert_eq!(day["total_files_scanned"], 8);
    let r = json(&run(&config, &["clean", "--json"], &env));
    assert_eq!(r["total_files_scanned"], 8, "{r}");
    assert_eq!(r["deleted_count"], expected.len() as u64, "{r}");
    assert_eq!(r["retained_count"], 3);
    assert_eq!(r["deleted"], expected.len() as u64);
    let left: BTreeSet<String> = block_on(bucket_keys(&bucket)).into_iter().collect();
    for k in old.iter().chain(&["clips/fresh.mp4", "other/old.mp4"]) {
        assert_eq!(
            left.contains(*k),
            !expected.contains(k),
            "{k}: left {left:?}"
        );
    }
    block_on(db.drop_db());
}

/// The keys of a bucket (the trash included), listed with the store the product uses.
async fn bucket_keys(bucket: &common::s3::Bucket) -> Vec<String> {
    let store = bucket.store("", 1);
    let listing =
        common::conformance::list_all(&store, assetgc::store::ListOptions::default()).await;
    listing.keys().into_iter().map(str::to_string).collect()
}

/// Bad input: one line on stderr, exit 2, nothing deleted.
#[test]
fn bad_policies_are_refused_with_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    write_file(&media, "clips/a.mp4", b"clip", days_ago(30));
    let base = format!(
        "[stores.media]\nurl = \"{}\"\nquarantine = false\n\n[databases.app]\nurl = \"sqlite://app.db\"\n\n[[references]]\nname = \"clip rows\"\nquery = \"SELECT path AS key FROM clips\"\n\n",
        media.display()
    );
    let cases = [
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\n",
            "has no `older_than`",
        ),
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"5d\"\nkeep_referenced = false\n",
            "keep_referenced = false needs `releases`",
        ),
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"5d\"\nkeep_referenced = false\nreleases = [\"nope\"]\n",
            "releases names `nope`, which is not a reference",
        ),
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"5d\"\nkeep_query = { sql = \"SELECT path AS key FROM clips WHERE a > ? AND b > ?\" }\n",
            "at most one parameter",
        ),
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"5d\"\nprefix = \"../\"\n",
            "is not a key prefix inside the store",
        ),
    ];
    for (policy, says) in cases {
        let config = write_config(dir.path(), &format!("{base}{policy}"));
        let r = common::assetgc(&config, &["clean"]);
        assert_eq!(r.code, 2, "{policy}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{policy}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(media.join("clips/a.mp4").exists());
    }
    let config = write_config(
        dir.path(),
        &format!("{base}[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\n"),
    );
    let r = common::assetgc(&config, &["clean", "--policy", "other"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no policy is named `other`"),
        "{}",
        r.stderr
    );
    assert!(media.join("clips/a.mp4").exists());
}

/// Invariant 2: a policy whose keep query fails (or whose reference fails) queues nothing and
/// exits 4; nothing is deleted.
#[test]
fn a_failing_query_makes_the_policy_incomplete_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    write_file(&media, "clips/a.mp4", b"clip", days_ago(30));
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&["CREATE TABLE clips (id INTEGER PRIMARY KEY, path TEXT)"]));
    let head = format!(
        "[stores.media]\nurl = \"{}\"\nmin_age = \"0s\"\nquarantine = false\n\n[databases.app]\nurl = \"{}\"\n\n",
        media.display(),
        db.url
    );
    for (rest, failing) in [
        (
            "[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\nkeep_query = { sql = \"SELECT path AS key FROM no_such_table WHERE created_at >= ?\" }\n",
            "keep_query",
        ),
        (
            "[[references]]\nname = \"clip rows\"\nquery = \"SELECT path AS key FROM no_such_table\"\n\n[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\n",
            "clip rows",
        ),
    ] {
        let config = write_config(dir.path(), &format!("{head}{rest}"));
        let r = run(&config, &["clean", "--json"], &[]);
        assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        assert_eq!(j["complete"], false);
        assert_eq!(j["deleted_count"], 0);
        assert!(j.to_string().contains(failing), "{j}");
        assert!(media.join("clips/a.mp4").exists());
    }
}

/// Invariant 1: a policy on a store counts the references and `ignore` globs of every store
/// that overlaps it.
#[test]
fn overlapping_stores_references_and_ignores_keep_their_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    for k in [
        "uploads/a.bin",
        "uploads/keep/b.bin",
        "uploads/c.bin",
        "d.bin",
    ] {
        write_file(&media, k, b"old", days_ago(10));
    }
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO files (path) VALUES ('a.bin')",
    ]));
    let config = write_config(
        dir.path(),
        &format!(
            r#"[stores.media]
url = "{root}"
min_age = "0s"
quarantine = false

[stores.uploads]
url = "{root}/uploads"
min_age = "0s"
quarantine = false
ignore = ["keep/**"]

[databases.app]
url = "{db}"

[[references]]
name = "files"
store = "uploads"
query = "SELECT id, path AS key FROM files"

[[policies]]
name = "all"
store = "media"
older_than = "1d"
"#,
            root = media.display(),
            db = db.url
        ),
    );
    let r = json(&run(&config, &["clean", "--json"], &[]));
    assert_eq!(r["deleted_count"], 2, "{r}");
    assert_eq!(r["failed"], 0);
    assert!(
        media.join("uploads/a.bin").exists(),
        "referenced through uploads"
    );
    assert!(
        media.join("uploads/keep/b.bin").exists(),
        "ignored by uploads"
    );
    assert!(!media.join("uploads/c.bin").exists());
    assert!(!media.join("d.bin").exists());
}

/// SPEC §3 exit 1: every database a policy needs is out of reach; nothing is deleted and the
/// password is not shown.
#[test]
fn clean_with_every_database_out_of_reach_is_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    write_file(&media, "clips/a.mp4", b"clip", days_ago(30));
    let config = write_config(
        dir.path(),
        &format!(
            "[stores.media]\nurl = \"{}\"\nquarantine = false\n\n[databases.app]\nurl = \"postgres://app:s3cr3t@127.0.0.1:1/app\"\n\n[[references]]\nname = \"clip rows\"\nquery = \"SELECT path AS key FROM clips\"\n\n[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\n",
            media.display()
        ),
    );
    let r = common::assetgc(&config, &["clean"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("s3cr3t") && !r.stdout.contains("s3cr3t"));
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(media.join("clips/a.mp4").exists());
}

/// A keep query whose values do not read as keys of the store keeps nothing it meant to: the
/// policy is incomplete and deletes nothing. Its `key_format` and `key_prefix` read them as a
/// reference's would.
#[test]
fn keep_query_values_are_read_in_its_key_format_or_nothing_is_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    for k in ["clips/keep.mp4", "clips/go.mp4"] {
        write_file(&media, k, b"clip", days_ago(10));
    }
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE kept (url TEXT, abs TEXT)",
        "INSERT INTO kept VALUES ('https://cdn.example.com/media/clips/keep.mp4', 'cube/clips/keep.mp4')",
    ]));
    let config_with = |keep: &str| {
        write_config(
            dir.path(),
            &format!(
                "[stores.media]\nurl = \"{}\"\nmin_age = \"0s\"\nquarantine = false\npublic_url = \"https://cdn.example.com/media\"\n\n[databases.app]\nurl = \"{}\"\n\n[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\nkeep_query = {keep}\n",
                media.display(),
                db.url
            ),
        )
    };
    // URLs read as paths: unreadable, so nothing is deleted (exit 4).
    let config = config_with("{ sql = \"SELECT url AS key FROM kept\" }");
    let r = run(&config, &["clean", "--dry-run", "--json"], &[]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["deleted_count"], 0);
    assert!(j.to_string().contains("could not be read as keys"), "{j}");
    // Read as URLs, or as bucket-absolute keys with their prefix: the kept clip stays.
    for keep in [
        "{ sql = \"SELECT url AS key FROM kept\", key_format = \"url\" }",
        "{ sql = \"SELECT abs AS key FROM kept\", key_prefix = \"cube/\" }",
    ] {
        let config = config_with(keep);
        let j = json(&run(&config, &["clean", "--dry-run", "--json"], &[]));
        assert_eq!(j["deleted_count"], 1, "{keep}: {j}");
        assert_eq!(j["deleted_files_sample"][0], "clips/go.mp4", "{keep}");
    }
}

/// A policy on a Cloudinary store (the emulator): public_ids under the prefix older than the
/// cutoff go, in both resource types; a reference that names a type protects only that type,
/// and the keep query (cloudinary format by default) keeps what it names.
#[test]
fn a_policy_on_cloudinary_deletes_old_unprotected_resources_of_every_type() {
    use common::cloudinary::{Emulator, Options, Resource};
    let dir = tempfile::tempdir().expect("tmp");
    let emulator = Emulator::start(Options::default());
    let now = chrono::Utc::now();
    let days = |d: i64| now - chrono::TimeDelta::days(d);
    emulator.add_many([
        Resource::image("tmp/old-a", days(10)),
        Resource::video("tmp/old-b", days(10)),
        Resource::image("tmp/named", days(10)),
        Resource::video("tmp/named", days(10)),
        Resource::image("tmp/kept", days(10)),
        Resource::image("tmp/new", days(1)),
        Resource::image("other/old", days(10)),
    ]);
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, image TEXT)",
        "INSERT INTO posts (image) VALUES ('image/upload/v1/tmp/named.jpg')",
        "CREATE TABLE pins (public_id TEXT)",
        "INSERT INTO pins VALUES ('image/upload/v1/tmp/kept.jpg')",
    ]));
    let config = write_config(
        dir.path(),
        &format!(
            "[stores.media]\nurl = \"{}\"\nmin_age = \"1h\"\nquarantine = false\n\n[databases.app]\nurl = \"{}\"\n\n[[references]]\nname = \"posts\"\nquery = \"SELECT id, image AS key FROM posts\"\n\n[[policies]]\nname = \"tmp\"\nstore = \"media\"\nprefix = \"tmp/\"\nolder_than = \"5d\"\nkeep_query = {{ sql = \"SELECT public_id AS key FROM pins\" }}\n",
            emulator.cloudinary_url(),
            db.url
        ),
    );
    let dry = json(&run(&config, &["clean", "--dry-run", "--json"], &[]));
    assert_eq!(dry["total_files_scanned"], 6, "{dry}");
    assert_eq!(dry["deleted_count"], 3, "{dry}");
    let r = json(&run(&config, &["clean", "--json"], &[]));
    assert_eq!(r["deleted"], 3, "{r}");
    assert!(!emulator.exists("image", "tmp/old-a"));
    assert!(!emulator.exists("video", "tmp/old-b"));
    assert!(
        !emulator.exists("video", "tmp/named"),
        "the reference names the image only"
    );
    assert!(emulator.exists("image", "tmp/named"));
    assert!(
        emulator.exists("image", "tmp/kept"),
        "the keep query names it"
    );
    assert!(emulator.exists("image", "tmp/new"));
    assert!(emulator.exists("image", "other/old"), "outside the prefix");
}

/// The keep query's cutoff on MariaDB, bound as a UTC date-time against a `DATETIME` column.
#[test]
fn keep_query_cutoff_is_bound_on_mariadb() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(db) = block_on(TestDb::create(Backend::MariaDb, dir.path())) else {
        return;
    };
    let media = dir.path().join("media");
    for k in [
        "clips/recent.mp4",
        "clips/long-ago.mp4",
        "clips/pending.mp4",
    ] {
        write_file(&media, k, b"clip", days_ago(10));
    }
    block_on(db.execute(&[
        "CREATE TABLE clips (s3_key VARCHAR(200), status VARCHAR(20), created_at DATETIME)",
        "INSERT INTO clips VALUES ('clips/recent.mp4', 'completed', UTC_TIMESTAMP() - INTERVAL 1 DAY), ('clips/long-ago.mp4', 'completed', UTC_TIMESTAMP() - INTERVAL 9 DAY), ('clips/pending.mp4', 'pending', UTC_TIMESTAMP())",
    ]));
    let config = write_config(
        dir.path(),
        &format!(
            "[stores.media]\nurl = \"{}\"\nmin_age = \"0s\"\nquarantine = false\n\n[databases.app]\nurl = \"{}\"\n\n[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"5d\"\nkeep_query = {{ sql = \"SELECT s3_key AS key FROM clips WHERE status = 'completed' AND created_at >= ?\" }}\n",
            media.display(),
            db.url
        ),
    );
    let r = json(&run(&config, &["clean", "--json"], &[]));
    assert_eq!(r["deleted_count"], 2, "{r}");
    assert!(media.join("clips/recent.mp4").exists());
    assert!(!media.join("clips/long-ago.mp4").exists());
    assert!(!media.join("clips/pending.mp4").exists());
    block_on(db.drop_db());
}

/// `check` runs every keep query with `LIMIT 1` and prepares every expiry `delete` without
/// running it: a broken one is a failed line and exit 4; nothing is deleted.
#[test]
fn check_runs_keep_queries_and_prepares_expiry_deletes() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    write_file(&media, "clips/a.mp4", b"clip", days_ago(30));
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE clips (id INTEGER PRIMARY KEY, path TEXT, gone INTEGER)",
        "INSERT INTO clips (path, gone) VALUES ('clips/a.mp4', 1)",
    ]));
    let with = |keep_table: &str, delete_table: &str| {
        write_config(
            dir.path(),
            &format!(
                "[stores.media]\nurl = \"{}\"\n\n[databases.app]\nurl = \"{}\"\n\n[[references]]\nname = \"clip rows\"\nquery = \"SELECT id, path AS key FROM clips\"\n\n[[policies]]\nname = \"clips\"\nstore = \"media\"\nolder_than = \"1d\"\nkeep_query = {{ sql = \"SELECT path AS key FROM {keep_table} WHERE gone = 0\" }}\n\n[[expiry]]\nname = \"gone\"\nstore = \"media\"\nselect = \"SELECT id, path AS key FROM clips WHERE gone = 1\"\ndelete = \"DELETE FROM {delete_table} WHERE id = ?\"\nreleases = [\"clip rows\"]\n",
                media.display(),
                db.url
            ),
        )
    };
    let good = common::assetgc(&with("clips", "clips"), &["check"]);
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    assert!(
        good.stdout
            .contains("policy clips keep_query: ok (ran with LIMIT 1)"),
        "{}",
        good.stdout
    );
    assert!(
        good.stdout
            .contains("expiry gone delete: ok (prepared, not run)"),
        "{}",
        good.stdout
    );
    for (keep, delete, failing) in [
        ("nope", "clips", "policy clips keep_query: FAILED"),
        ("clips", "nope", "expiry gone delete: FAILED"),
    ] {
        let r = common::assetgc(&with(keep, delete), &["check"]);
        assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(failing), "{}", r.stdout);
    }
    // Prepared, never run: the row and its file are still there.
    assert!(media.join("clips/a.mp4").exists());
    let conn = rusqlite::Connection::open(db.url.trim_start_matches("sqlite://")).expect("db");
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM clips", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
}
