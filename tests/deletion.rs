//! Deleting safely (SPEC §6) on the folder store: the story of a purge, the seven invariants
//! (each test named for its invariant fails when its guard is removed), faults, bad input and
//! crash safety under SIGKILL. Every test runs twice, with the state database on SQLite (the
//! default, `assetgc.db` beside the config) and on PostgreSQL (`[state] url`): `<test>::sqlite_state`
//! and `<test>::postgres_state`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{StateBackend, StateDb, assetgc, both_states, write_file};
use serde_json::Value;

/// A small app: a media folder, a SQLite database with `posts.image` pointing into it, and a
/// config. Referenced: `posts/p1.jpg`…`posts/p5.jpg`; orphans: `tmp/o01.jpg`…`tmp/o10.jpg`, all
/// uploaded three days ago. The product's own state is kept in `state`.
struct App {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    media: PathBuf,
    config: PathBuf,
    state: StateDb,
}

const DAY: Duration = Duration::from_secs(86_400);

fn days_ago(n: u64) -> SystemTime {
    SystemTime::now() - DAY * u32::try_from(n).expect("small")
}

impl App {
    fn new(state: StateBackend, store_extra: &str, top_extra: &str) -> App {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let media = dir.join("media");
        std::fs::create_dir_all(&media).expect("media");
        let app = App {
            _tmp: tmp,
            dir: dir.clone(),
            media,
            config: dir.join("assetgc.toml"),
            state: StateDb::create(state, &dir),
        };
        app.sql(&["CREATE TABLE posts (id integer PRIMARY KEY, image text)"]);
        for i in 1..=5 {
            app.file(&format!("posts/p{i}.jpg"), 3);
            app.sql(&[&format!(
                "INSERT INTO posts (id, image) VALUES ({i}, 'posts/p{i}.jpg')"
            )]);
        }
        for i in 1..=10 {
            app.file(&format!("tmp/o{i:02}.jpg"), 3);
        }
        app.write_config(store_extra, top_extra);
        app
    }

    fn write_config(&self, store_extra: &str, top_extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                r#"{top_extra}
{state}
[stores.media]
url = "./media"
min_age = "1h"
{store_extra}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "post images"
query = "SELECT id, image AS key FROM posts"
"#,
                state = self.state.config_section(),
            ),
        )
        .expect("config");
    }

    fn file(&self, key: &str, age_days: u64) -> PathBuf {
        write_file(&self.media, key, key.as_bytes(), days_ago(age_days))
    }

    fn sql(&self, statements: &[&str]) {
        let conn = rusqlite::Connection::open(self.dir.join("app.db")).expect("app db");
        for s in statements {
            conn.execute_batch(s).expect("sql");
        }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        assetgc(&self.config, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn exists(&self, key: &str) -> bool {
        self.media.join(key).exists()
    }

    /// Keys under the media folder, quarantine included.
    fn keys(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![self.media.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let e = e.expect("entry");
                let t = e.file_type().expect("type");
                if t.is_dir() {
                    todo.push(e.path());
                } else {
                    out.insert(
                        e.path()
                            .strip_prefix(&self.media)
                            .expect("under media")
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out
    }

    fn quarantined(&self) -> BTreeSet<String> {
        self.keys()
            .into_iter()
            .filter(|k| k.starts_with(".assetgc-trash/"))
            .collect()
    }

    fn audit(&self) -> Vec<Value> {
        let out = self.ok(&["audit", "--json", "--limit", "100000"]);
        match serde_json::from_str(&out).expect("audit json") {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        }
    }

    /// Audit outcomes of a key (its quarantined copy's included), newest first.
    fn outcomes_of(&self, key: &str) -> Vec<String> {
        let out = self.ok(&["audit", "--json", "--key", key, "--limit", "1000"]);
        let rows: Value = serde_json::from_str(&out).expect("audit json");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn stats(&self) -> Value {
        serde_json::from_str(&self.ok(&["queue", "stats", "--json"])).expect("stats json")
    }

    fn scan_json(&self) -> Value {
        let r = self.run(&["scan", "--all", "--json"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        serde_json::from_str(&r.stdout).expect("scan json")
    }
}

fn orphan_keys(scan: &Value) -> BTreeSet<String> {
    scan["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_string())
        .collect()
}

fn tmp_orphans() -> BTreeSet<String> {
    (1..=10).map(|i| format!("tmp/o{i:02}.jpg")).collect()
}

/// One line on stderr, exit 2.
fn assert_refused(r: &common::Run, needle: &str) {
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
    assert!(r.stderr.contains(needle), "`{needle}` not in: {}", r.stderr);
}

fn folder_story_scan_purge_restore(state: StateBackend) {
    let app = App::new(state, "", "");
    let before = app.keys();
    let scan = app.scan_json();
    assert_eq!(orphan_keys(&scan), tmp_orphans());
    // The state went where the config says: beside it only on SQLite.
    assert_eq!(
        app.dir.join("assetgc.db").exists(),
        state == StateBackend::Sqlite,
        "state on {}",
        state.name()
    );

    // Dry run: counts, bytes, keys, and nothing gone.
    let dry = app.ok(&["purge"]);
    assert!(dry.contains("Dry run"), "{dry}");
    assert!(dry.contains("Would delete 10 objects"), "{dry}");
    assert!(dry.contains("tmp/o01.jpg"), "{dry}");
    assert_eq!(app.keys(), before);

    // Confirm: every orphan moves to the quarantine, referenced files stay.
    let out = app.ok(&["purge", "--confirm"]);
    assert!(out.contains("quarantined:   10"), "{out}");
    for k in tmp_orphans() {
        assert!(!app.exists(&k), "{k} still there");
    }
    for i in 1..=5 {
        assert!(app.exists(&format!("posts/p{i}.jpg")));
    }
    let q = app.quarantined();
    assert_eq!(q.len(), 10, "{q:?}");
    for k in &q {
        // .assetgc-trash/<YYYYMMDDTHHMMSSZ>/<key>
        let rest = k.strip_prefix(".assetgc-trash/").expect("prefix");
        let (stamp, key) = rest.split_once('/').expect("time folder");
        assert_eq!(stamp.len(), 16, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{stamp}"
        );
        assert!(tmp_orphans().contains(key), "{key}");
    }
    // The removals wait `keep` (7 days by default).
    let stats = app.stats();
    assert_eq!(stats["total_pending"], 10, "{stats}");
    assert_eq!(stats["due_now"], 0, "{stats}");
    assert_eq!(app.outcomes_of("tmp/o01.jpg"), ["quarantined"]);

    // A new scan sees neither the orphans nor the quarantine.
    let again = app.scan_json();
    assert!(orphan_keys(&again).is_empty(), "{again}");
    assert_eq!(again["summary"]["objects_scanned"], 5);

    // Restore one; the next scan shows it back as an orphan.
    let out = app.ok(&["restore", "tmp/o03.jpg"]);
    assert!(out.contains("Restored tmp/o03.jpg"), "{out}");
    assert!(app.exists("tmp/o03.jpg"));
    assert_eq!(
        std::fs::read(app.media.join("tmp/o03.jpg")).expect("read"),
        b"tmp/o03.jpg"
    );
    let after = app.scan_json();
    assert_eq!(
        orphan_keys(&after),
        BTreeSet::from(["tmp/o03.jpg".to_string()])
    );
    assert_eq!(app.stats()["total_pending"], 9, "its removal is dropped");
}
both_states!(folder_story_scan_purge_restore);

fn invariant_1_referenced_again_after_the_scan_is_never_deleted(state: StateBackend) {
    // The race: a row that references an orphan is committed after the scan, before the purge.
    let app = App::new(state, "quarantine = false", "");
    app.scan_json();
    app.sql(&[
        "INSERT INTO posts (id, image) VALUES (100, 'tmp/o01.jpg')",
        // Every stored form of a path counts: `/k` and `./k` too.
        "INSERT INTO posts (id, image) VALUES (101, '/tmp/o02.jpg')",
        "INSERT INTO posts (id, image) VALUES (102, './tmp/o03.jpg')",
    ]);
    let out = app.ok(&["purge", "--confirm"]);
    assert!(out.contains("referenced:    3"), "{out}");
    assert!(out.contains("deleted:       7"), "{out}");
    for k in ["tmp/o01.jpg", "tmp/o02.jpg", "tmp/o03.jpg"] {
        assert!(app.exists(k), "{k} was deleted while referenced");
        assert_eq!(app.outcomes_of(k), ["referenced"], "{k}");
    }
    assert!(!app.exists("tmp/o04.jpg"));
    // Batched look-ups: one wrapped query for the batch, no whole query.
    assert!(
        out.contains("1 batch, 1 look-up query, 0 whole queries"),
        "{out}"
    );
}
both_states!(invariant_1_referenced_again_after_the_scan_is_never_deleted);

fn invariant_1_holds_for_references_that_run_whole_and_for_overlapping_stores(state: StateBackend) {
    // A `url` reference runs whole; a second store inside the first has its own reference.
    let app = App::new(
        state,
        "quarantine = false\npublic_url = \"https://cdn.example.com/media\"",
        "",
    );
    let mut cfg = std::fs::read_to_string(&app.config).expect("config");
    cfg.push_str(
        r#"
[[references]]
name = "urls"
store = "media"
query = "SELECT id, url AS key FROM links"
key_format = "url"

[stores.inner]
url = "./media/tmp"
quarantine = false

[[references]]
name = "inner files"
store = "inner"
query = "SELECT id, name AS key FROM inner_files"
"#,
    );
    std::fs::write(
        &app.config,
        cfg.replace(
            "name = \"post images\"\n",
            "name = \"post images\"\nstore = \"media\"\n",
        ),
    )
    .expect("config");
    app.sql(&[
        "CREATE TABLE links (id integer PRIMARY KEY, url text)",
        "CREATE TABLE inner_files (id integer PRIMARY KEY, name text)",
        // The overlapping store's row exists before the scan: the scan itself counts it.
        "INSERT INTO inner_files (id, name) VALUES (1, 'o06.jpg')",
    ]);
    let scan = app.run(&["scan", "--all", "--store", "media", "--json"]);
    assert_eq!(scan.code, 0, "{}{}", scan.stdout, scan.stderr);
    let json: serde_json::Value = serde_json::from_str(&scan.stdout).expect("json");
    let orphans = orphan_keys(&json);
    assert!(
        !orphans.contains("tmp/o06.jpg"),
        "an object referenced through the overlapping store is an orphan: {orphans:?}"
    );
    assert!(orphans.contains("tmp/o05.jpg"), "{orphans:?}");
    // The url row comes after the scan: the re-check before the delete must see it.
    app.sql(&[
        "INSERT INTO links (id, url) VALUES (1, 'https://cdn.example.com/media/tmp/o05.jpg?w=200')",
    ]);
    let out = app.ok(&["purge", "--confirm", "--store", "media"]);
    assert!(app.exists("tmp/o05.jpg"), "url reference ignored:\n{out}");
    assert!(
        app.exists("tmp/o06.jpg"),
        "overlapping store ignored:\n{out}"
    );
    assert!(!app.exists("tmp/o07.jpg"));
    assert_eq!(app.outcomes_of("tmp/o05.jpg"), ["referenced"]);
    assert!(
        app.outcomes_of("tmp/o06.jpg").is_empty(),
        "a valid object is never queued"
    );
}
both_states!(invariant_1_holds_for_references_that_run_whole_and_for_overlapping_stores);

fn invariant_2_nothing_from_an_incomplete_scan_or_younger_than_min_age(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    // A reference query that fails makes the scan incomplete.
    let good = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(
        &app.config,
        good.replace("FROM posts", "FROM no_such_table"),
    )
    .expect("config");
    let scan = app.run(&["scan", "--all", "--json"]);
    assert_eq!(scan.code, 4, "{}{}", scan.stdout, scan.stderr);
    let id = serde_json::from_str::<Value>(&scan.stdout).expect("json")["scan"]["id"]
        .as_i64()
        .expect("id");
    std::fs::write(&app.config, &good).expect("config");
    assert_refused(
        &app.run(&["purge", "--confirm", "--scan", &id.to_string()]),
        "incomplete",
    );
    assert_refused(&app.run(&["purge", "--confirm"]), "no complete scan");
    assert_eq!(app.keys().len(), 15, "nothing deleted");

    // Scanned with min_age 0s, purged with min_age 2h: the young orphan is held, not deleted.
    app.file("tmp/young.jpg", 0);
    std::fs::write(
        &app.config,
        good.replace("min_age = \"1h\"", "min_age = \"0s\""),
    )
    .expect("c");
    let scan = app.scan_json();
    assert!(orphan_keys(&scan).contains("tmp/young.jpg"));
    std::fs::write(
        &app.config,
        good.replace("min_age = \"1h\"", "min_age = \"2h\""),
    )
    .expect("c");
    let out = app.ok(&["purge", "--confirm"]);
    assert!(
        out.contains("1 held until they are older than min_age"),
        "{out}"
    );
    assert!(app.exists("tmp/young.jpg"), "{out}");
    assert!(!app.exists("tmp/o01.jpg"));
    let list: Value =
        serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("list json");
    let young = list
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["key"] == "tmp/young.jpg")
        .expect("still queued");
    assert_eq!(young["state"], "pending");
    assert!(
        young["next_attempt_at"].as_str().expect("time") > young["queued_at"].as_str().expect("t")
    );
}
both_states!(invariant_2_nothing_from_an_incomplete_scan_or_younger_than_min_age);

fn invariant_3_purge_without_confirm_is_a_dry_run(state: StateBackend) {
    let app = App::new(state, "", "");
    app.scan_json();
    let before = app.keys();
    for args in [
        vec!["purge"],
        vec!["purge", "--allow-mass-delete"],
        vec!["purge", "--store", "media", "--prefix", "tmp/"],
    ] {
        let out = app.ok(&args);
        assert!(out.contains("Dry run"), "{out}");
        assert!(out.contains("Would delete 10 objects"), "{out}");
    }
    assert_eq!(app.keys(), before);
    assert_eq!(app.stats()["total_pending"], 0);
    assert!(app.audit().is_empty());
}
both_states!(invariant_3_purge_without_confirm_is_a_dry_run);

fn invariant_4_quarantine_restore_and_removal_after_keep(state: StateBackend) {
    let app = App::new(
        state,
        "quarantine = { prefix = \".trash/\", keep = \"0s\" }",
        "",
    );
    app.scan_json();
    let out = app.ok(&["purge", "--confirm", "--prefix", "tmp/o0"]);
    assert!(out.contains("quarantined:   9"), "{out}");
    // keep = 0s: the removals were due at once and the same run removed the copies for good.
    assert!(out.contains("deleted:       9"), "{out}");
    assert!(
        app.keys().iter().all(|k| !k.starts_with(".trash/")),
        "{:?}",
        app.keys()
    );
    assert_eq!(app.outcomes_of("tmp/o01.jpg"), ["deleted", "quarantined"]);

    // Restore refuses what has no copy, and what exists without --overwrite.
    let r = app.run(&["restore", "tmp/o01.jpg"]);
    assert_refused(&r, "no quarantined copy");

    let app = App::new(state, "", "");
    app.scan_json();
    app.ok(&["purge", "--confirm"]);
    app.file("tmp/o02.jpg", 0);
    let r = app.run(&["restore", "tmp/o02.jpg"]);
    assert_refused(&r, "--overwrite");
    assert_eq!(
        std::fs::read(app.media.join("tmp/o02.jpg")).expect("read"),
        b"tmp/o02.jpg"
    );
    std::fs::write(app.media.join("tmp/o02.jpg"), b"uploaded again").expect("write");
    let out = app.ok(&["restore", "tmp/o02.jpg", "--overwrite"]);
    assert!(out.contains("Restored"), "{out}");
    // What --overwrite replaced went to the trash first, recorded with its removal queued.
    assert_eq!(app.quarantined().len(), 10, "{:?}", app.quarantined());
    let replaced = app.state.query(
        "SELECT quarantine_key FROM quarantine WHERE key = 'tmp/o02.jpg' AND state = 'held'",
        &[],
    );
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    let q = replaced[0][0].clone().expect("key");
    assert_eq!(
        std::fs::read(app.media.join(&q)).expect("the replaced object"),
        b"uploaded again"
    );
    assert_eq!(
        std::fs::read(app.media.join("tmp/o02.jpg")).expect("restored"),
        b"tmp/o02.jpg"
    );
    assert!(
        app.audit().iter().any(|a| a["key"] == "tmp/o02.jpg"
            && a["outcome"] == "quarantined"
            && a["detail"]
                .as_str()
                .is_some_and(|d| d.contains("restore --overwrite"))),
        "{:?}",
        app.audit()
    );
    assert_eq!(
        app.state.count(
            "SELECT COUNT(*) FROM queue WHERE key = $1 AND reason = 'quarantine' AND state = 'pending'",
            &[&q]
        ),
        1
    );

    // A copy whose original is referenced again when its removal comes due is kept.
    let app = App::new(
        state,
        "quarantine = { prefix = \".trash/\", keep = \"2s\" }",
        "",
    );
    app.scan_json();
    app.ok(&["purge", "--confirm"]);
    app.sql(&["INSERT INTO posts (id, image) VALUES (100, 'tmp/o04.jpg')"]);
    std::thread::sleep(Duration::from_secs(3));
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("deleted:       9"), "{out}");
    assert!(out.contains("referenced:    1"), "{out}");
    let kept: Vec<String> = app
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(".trash/"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with("/tmp/o04.jpg"));
    // …and can still be restored.
    app.ok(&["restore", "tmp/o04.jpg"]);
    assert!(app.exists("tmp/o04.jpg"));
}
both_states!(invariant_4_quarantine_restore_and_removal_after_keep);

fn invariant_6_the_folder_store_never_leaves_its_root(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    let outside = app.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret.jpg"), b"keep me").expect("secret");
    std::os::unix::fs::symlink(&outside, app.media.join("link")).expect("dir link");
    std::os::unix::fs::symlink(
        outside.join("secret.jpg"),
        app.media.join("tmp/file-link.jpg"),
    )
    .expect("file link");

    for key in [
        "../outside/secret.jpg",
        "/etc/passwd",
        "tmp/../../outside/secret.jpg",
    ] {
        let r = app.run(&["queue", "add", "--store", "media", key]);
        assert_refused(&r, "not a key");
    }
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "link/secret.jpg",
        "tmp/file-link.jpg",
    ]);
    let r = app.run(&["queue", "run", "--max-attempts", "1"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("failed:        2"), "{}", r.stdout);
    assert!(r.stdout.contains("symbolic link"), "{}", r.stdout);
    assert_eq!(
        std::fs::read(outside.join("secret.jpg")).expect("read"),
        b"keep me"
    );
    assert!(std::fs::symlink_metadata(app.media.join("tmp/file-link.jpg")).is_ok());

    // Quarantine moves refuse links as well.
    let app2 = App::new(state, "", "");
    let outside2 = app2.dir.join("outside");
    std::fs::create_dir_all(&outside2).expect("outside");
    std::fs::write(outside2.join("x.jpg"), b"keep").expect("x");
    std::os::unix::fs::symlink(&outside2, app2.media.join("link")).expect("link");
    app2.ok(&["queue", "add", "--store", "media", "link/x.jpg"]);
    let r = app2.run(&["queue", "run", "--max-attempts", "1"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read(outside2.join("x.jpg")).expect("read"),
        b"keep"
    );
}
both_states!(invariant_6_the_folder_store_never_leaves_its_root);

fn many_files(app: &App, n: usize, prefix: &str) {
    for i in 0..n {
        app.file(&format!("{prefix}{i:04}.jpg"), 3);
    }
}

fn invariant_7_mass_deletion_guard(state: StateBackend) {
    // A key_prefix that matches nothing makes every object look orphaned.
    let app = App::new(state, "", "");
    many_files(&app, 120, "bulk/f");
    let cfg = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(&app.config, format!("{cfg}key_prefix = \"wrong/\"\n")).expect("config");
    let scan = app.scan_json();
    assert_eq!(scan["summary"]["orphans"], 135);
    let before = app.keys();
    let r = app.run(&["purge", "--confirm"]);
    assert_refused(&r, "max_orphan_share");
    assert!(r.stderr.contains("--allow-mass-delete"), "{}", r.stderr);
    assert_eq!(app.keys(), before);
    assert!(app.audit().is_empty());

    // The override is one run's, and audited.
    let out = app.ok(&[
        "purge",
        "--confirm",
        "--allow-mass-delete",
        "--prefix",
        "bulk/f000",
    ]);
    assert!(out.contains("quarantined:   10"), "{out}");
    let audit = app.audit();
    assert!(
        audit.iter().any(|a| a["outcome"] == "mass_delete_override"),
        "{audit:?}"
    );

    // The jump: 10 orphans in the comparable scan, then 120 (of 1000+, under the share).
    let app = App::new(state, "", "[safety]\nmax_orphan_share = 0.9\n");
    many_files(&app, 900, "keep/k");
    let rows: Vec<String> = (0..900)
        .map(|i| {
            format!(
                "INSERT INTO posts (id, image) VALUES ({}, 'keep/k{i:04}.jpg')",
                1000 + i
            )
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    app.sql(&rows);
    let first = app.scan_json();
    assert_eq!(first["summary"]["orphans"], 10);
    many_files(&app, 110, "new/n");
    let second = app.scan_json();
    assert_eq!(second["summary"]["orphans"], 120);
    let r = app.run(&["purge", "--confirm"]);
    assert_refused(&r, "max_orphan_jump");
    // A different window is not comparable: its scan has no jump to compare with.
    let r = app.run(&["scan", "--days", "30", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = app.ok(&["purge"]);
    assert!(out.contains("Would delete 120"), "{out}");
}
both_states!(invariant_7_mass_deletion_guard);

fn faults_are_retried_with_backoff_then_failed_and_retry_brings_them_back(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "[queue]\nbackoff = \"1h\"\n");
    // A folder where a file should be: its delete fails, the others in the batch go on.
    std::fs::remove_file(app.media.join("tmp/o05.jpg")).expect("rm");
    std::fs::create_dir_all(app.media.join("tmp/o05.jpg")).expect("dir in the way");
    let keys: Vec<String> = (1..=10).map(|i| format!("tmp/o{i:02}.jpg")).collect();
    let mut args = vec!["queue", "add", "--store", "media", "--client-id", "job-7"];
    args.extend(keys.iter().map(String::as_str));
    let out = app.ok(&args);
    assert!(out.contains("Queued 10 deletions"), "{out}");

    let r = app.run(&["queue", "run"]);
    assert_eq!(
        r.code, 0,
        "a rescheduled entry does not change the code: {}{}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains("deleted:       9"), "{}", r.stdout);
    assert!(r.stdout.contains("retrying:      1"), "{}", r.stdout);
    let list: Value = serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("json");
    let e = &list.as_array().expect("array")[0];
    assert_eq!(e["key"], "tmp/o05.jpg");
    assert_eq!(e["attempts"], 1);
    assert_eq!(e["client_id"], "job-7");
    assert!(
        e["last_error"].as_str().expect("error").contains("folder"),
        "{e}"
    );
    // Backoff: the next attempt is about an hour away.
    let next = chrono::DateTime::parse_from_rfc3339(e["next_attempt_at"].as_str().expect("t"))
        .expect("time");
    let wait = next.signed_duration_since(chrono::Utc::now());
    assert!(
        wait > chrono::Duration::minutes(55) && wait <= chrono::Duration::minutes(61),
        "{wait}"
    );
    let stats = app.stats();
    assert_eq!(stats["total_pending"], 1);
    assert_eq!(
        stats["by_attempts"],
        serde_json::json!([{"attempts": 1, "count": 1}]),
        "{stats}"
    );

    // With no backoff, the attempts run out in one run: `failed`, exit 4.
    let cfg = std::fs::read_to_string(&app.config).expect("c");
    std::fs::write(
        &app.config,
        cfg.replace("backoff = \"1h\"", "backoff = \"0s\""),
    )
    .expect("c");
    app.ok(&["queue", "retry", &e["id"].to_string()]);
    let r = app.run(&["queue", "run", "--max-attempts", "3"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("failed:        1"), "{}", r.stdout);
    let failed: Value =
        serde_json::from_str(&app.ok(&["queue", "list", "--failed", "--json"])).expect("json");
    assert_eq!(failed.as_array().expect("a").len(), 1);
    assert_eq!(failed[0]["attempts"], 3);
    assert_eq!(app.stats()["total_failed"], 1);

    // Fixed, retried, done.
    std::fs::remove_dir(app.media.join("tmp/o05.jpg")).expect("rmdir");
    app.file("tmp/o05.jpg", 3);
    let out = app.ok(&["queue", "retry", "--all-failed"]);
    assert!(out.contains("Retried 1 entry"), "{out}");
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("deleted:       1"), "{out}");
    assert!(!app.exists("tmp/o05.jpg"));
    let outcomes = app.outcomes_of("tmp/o05.jpg");
    assert_eq!(
        outcomes.first().map(String::as_str),
        Some("deleted"),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"retried".to_string()), "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.starts_with("failed: "))
            .count(),
        4
    );

    // Drop: a failed entry is never deleted.
    std::fs::create_dir_all(app.media.join("tmp/o11.jpg")).expect("dir");
    app.ok(&["queue", "add", "--store", "media", "tmp/o11.jpg"]);
    app.run(&["queue", "run", "--max-attempts", "1"]);
    let out = app.ok(&["queue", "drop", "--all-failed"]);
    assert!(out.contains("Dropped 1 entry"), "{out}");
    assert_eq!(app.stats()["total_failed"], 0);
    assert!(
        app.outcomes_of("tmp/o11.jpg")
            .contains(&"dropped".to_string())
    );
}
both_states!(faults_are_retried_with_backoff_then_failed_and_retry_brings_them_back);

fn queue_add_reads_stdin_and_counts_what_is_already_queued(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("bin");
    let out = cmd
        .arg("--config")
        .arg(&app.config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin("tmp/o01.jpg\ntmp/o02.jpg\n\ntmp/o01.jpg\n")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Queued 2 deletions"), "{stdout}");
    assert!(stdout.contains("1 already queued"), "{stdout}");
    // Explicit deletions are not held by min_age: a file uploaded now goes at once.
    app.file("tmp/now.jpg", 0);
    app.ok(&["queue", "add", "--store", "media", "tmp/now.jpg"]);
    let out = app.ok(&["queue", "run", "--limit", "2"]);
    assert!(out.contains("Processed 2 entries"), "{out}");
    assert_eq!(app.stats()["total_pending"], 1);
    app.ok(&["queue", "run"]);
    assert!(!app.exists("tmp/now.jpg"));
    assert_eq!(app.stats()["total_done"], 3);
}
both_states!(queue_add_reads_stdin_and_counts_what_is_already_queued);

fn bad_input_is_one_line_exit_2_and_deletes_nothing(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    app.scan_json();
    let before = app.keys();
    let dir = &app.dir;

    let not_csv = dir.join("notes.txt");
    std::fs::write(&not_csv, "hello\nworld\n").expect("write");
    assert_refused(
        &app.run(&[
            "purge",
            "--confirm",
            "--from-report",
            not_csv.to_str().expect("p"),
        ]),
        "ORPHANED FILES",
    );

    let changed = dir.join("changed.csv");
    std::fs::write(
        &changed,
        "ORPHANED FILES\nstore,path,resource_type,size_bytes,size_mb,format,uploaded_at,url\nmedia,tmp/o01.jpg,,1,0.00,jpg,,\n",
    )
    .expect("write");
    assert_refused(
        &app.run(&[
            "purge",
            "--confirm",
            "--from-report",
            changed.to_str().expect("p"),
        ]),
        "header",
    );

    let other = dir.join("other.csv");
    std::fs::write(
        &other,
        "ORPHANED FILES\nstore,key,resource_type,size_bytes,size_mb,format,uploaded_at,url\nelsewhere,tmp/o01.jpg,,1,0.00,jpg,,\nmedia,posts/p1.jpg,,1,0.00,jpg,,\n\n\nRECORDS WITH MISSING FILES\nreference,record_id,title,owner,media_type,key,created_at,status,link\n",
    )
    .expect("write");
    assert_refused(
        &app.run(&[
            "purge",
            "--confirm",
            "--from-report",
            other.to_str().expect("p"),
        ]),
        "matches an orphan",
    );

    let r = app.run(&["queue", "run", "--batch-size", "5000"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);

    assert_refused(&app.run(&["queue", "drop", "4242"]), "4242");
    assert_refused(&app.run(&["queue", "retry", "4242"]), "4242");
    assert_refused(
        &app.run(&["queue", "add", "--store", "nope", "a.jpg"]),
        "no store named",
    );
    assert_refused(&app.run(&["purge", "--store", "nope"]), "no store named");
    assert_refused(&app.run(&["purge", "--older-than", "soon"]), "--older-than");
    assert_refused(&app.run(&["purge", "--scan", "999"]), "999");
    assert_refused(
        &app.run(&[
            "queue",
            "add",
            "--store",
            "media",
            "--resource-type",
            "image",
            "a.jpg",
        ]),
        "Cloudinary",
    );
    let r = app.run(&["queue", "retry"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(app.keys(), before);
    assert_eq!(app.stats()["total_pending"], 0);
}
both_states!(bad_input_is_one_line_exit_2_and_deletes_nothing);

fn purge_from_our_own_report_with_escaped_cells(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    app.file("=formula.jpg", 3);
    app.file("-dash.jpg", 3);
    let path = app.dir.join("report.csv");
    let r = app.run(&["scan", "--all", "--output", path.to_str().expect("p")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let report = std::fs::read_to_string(&path).expect("report");
    assert!(report.contains("media,'=formula.jpg"), "{report}");
    assert!(report.contains("media,'-dash.jpg"), "{report}");
    // Keep only three rows of the report: purge narrows to them.
    let mut lines: Vec<&str> = report.lines().collect();
    lines.retain(|l| {
        !l.starts_with("media,tmp/o")
            || l.starts_with("media,tmp/o01")
            || l.starts_with("media,tmp/o02")
    });
    let narrowed = app.dir.join("narrowed.csv");
    std::fs::write(&narrowed, lines.join("\n")).expect("write");
    let out = app.ok(&[
        "purge",
        "--confirm",
        "--from-report",
        narrowed.to_str().expect("p"),
    ]);
    assert!(out.contains("deleted:       4"), "{out}");
    assert!(!app.exists("=formula.jpg"));
    assert!(!app.exists("-dash.jpg"));
    assert!(!app.exists("tmp/o01.jpg"));
    assert!(app.exists("tmp/o03.jpg"));
}
both_states!(purge_from_our_own_report_with_escaped_cells);

/// Invariant 5: SIGKILL at random moments of `queue run`, at least 20 times; at the end every
/// entry is done once or still queued, none lost, nothing referenced gone.
fn invariant_5_a_killed_worker_loses_nothing_and_deletes_nothing_twice(state: StateBackend) {
    let app = App::new(state, "", "");
    let n = 8000;
    many_files(&app, n, "crash/c");
    // Every 10th file is referenced: queued, but never deleted.
    let rows: Vec<String> = (0..n)
        .step_by(10)
        .map(|i| {
            format!(
                "INSERT INTO posts (id, image) VALUES ({}, 'crash/c{i:04}.jpg')",
                1000 + i
            )
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    app.sql(&rows);
    let keys: Vec<String> = (0..n).map(|i| format!("crash/c{i:04}.jpg")).collect();
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("bin");
    let added = cmd
        .arg("--config")
        .arg(&app.config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .expect("queue add");
    assert_eq!(added.status.code(), Some(0));

    let bin = assert_cmd::cargo::cargo_bin("assetgc");
    let finished = || -> i64 {
        app.state.count(
            "SELECT COUNT(*) FROM queue WHERE reason = 'queue add' AND state IN ('done', 'dropped')",
            &[],
        )
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    // Kills that landed while the worker was making progress (it finished entries, and not all).
    let mut kills = 0;
    let mut runs = 0;
    while kills < 20 && runs < 300 {
        runs += 1;
        let before = finished();
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&app.config)
            // Small batches: many claims and commits to be killed between.
            .args(["queue", "run", "--batch-size", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 120));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            if finished() > before {
                kills += 1;
            }
        }
    }
    assert!(kills >= 20, "only {kills} kills mid-work in {runs} runs");
    eprintln!(
        "{kills} kills mid-work in {runs} runs; {} of {n} entries finished before the last run",
        finished()
    );
    // A last, undisturbed run finishes the work (dead workers' claims come back at once).
    let out = app.ok(&["queue", "run"]);
    assert!(!out.contains("failed:        1"), "{out}");

    let mut per_state: BTreeMap<String, u64> = BTreeMap::new();
    let rows: Vec<(String, Option<String>, String)> = app
        .state
        .query(
            "SELECT state, outcome, key FROM queue WHERE reason = 'queue add'",
            &[],
        )
        .into_iter()
        .map(|r| match <[Option<String>; 3]>::try_from(r) {
            Ok([Some(st), outcome, Some(key)]) => (st, outcome, key),
            Ok(r) => panic!("a queue row without state or key: {r:?}"),
            Err(r) => panic!("not three columns: {r:?}"),
        })
        .collect();
    assert_eq!(rows.len(), n, "no entry lost, none added twice");
    for (st, outcome, key) in &rows {
        *per_state
            .entry(format!("{st}/{}", outcome.as_deref().unwrap_or("-")))
            .or_default() += 1;
        let i: usize = key[7..11].parse().expect("index");
        if i.is_multiple_of(10) {
            assert_eq!(outcome.as_deref(), Some("referenced"), "{key}");
            assert!(app.exists(key), "referenced {key} is gone");
        } else {
            assert_eq!(outcome.as_deref(), Some("quarantined"), "{key}: {st}");
            assert!(!app.exists(key), "{key} still there");
        }
    }
    assert_eq!(
        per_state.get("done/quarantined"),
        Some(&7200),
        "{per_state:?}"
    );
    assert_eq!(
        per_state.get("dropped/referenced"),
        Some(&800),
        "{per_state:?}"
    );
    // Each object was quarantined once: one copy, one record, one removal entry.
    let copies = app.quarantined();
    assert_eq!(copies.len(), 7200, "one copy per deleted object");
    let records = app.state.count("SELECT COUNT(*) FROM quarantine", &[]);
    assert_eq!(records, 7200);
    let removals = app.state.count(
        "SELECT COUNT(*) FROM queue WHERE reason = 'quarantine'",
        &[],
    );
    assert_eq!(removals, 7200);
    let double = app.state.count(
        "SELECT COUNT(*) FROM (SELECT key FROM audit WHERE outcome = 'quarantined' GROUP BY key HAVING COUNT(*) > 1) AS twice",
        &[],
    );
    assert_eq!(double, 0, "an object was quarantined twice");
    let failed = app.state.count(
        "SELECT COUNT(*) FROM audit WHERE outcome LIKE 'failed:%'",
        &[],
    );
    assert_eq!(failed, 0, "a kill turned into an error");
}
both_states!(invariant_5_a_killed_worker_loses_nothing_and_deletes_nothing_twice);

async fn recheck_on(backend: common::Backend, state: StateBackend) {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(db) = common::TestDb::create(backend, tmp.path()).await else {
        return;
    };
    db.execute(&[
        "CREATE TABLE users (id integer PRIMARY KEY, avatar varchar(200))",
        "CREATE TABLE posts (id integer PRIMARY KEY, user_id integer, image varchar(200))",
        "INSERT INTO users (id, avatar) VALUES (1, 'avatars/u1.png')",
        "INSERT INTO posts (id, user_id, image) VALUES (1, 1, 'posts/p1.jpg')",
    ])
    .await;
    let app = App::new(state, "quarantine = false", "");
    app.file("avatars/u1.png", 3);
    // Two result columns named `id`: MariaDB cannot wrap it, so it runs whole.
    std::fs::write(
        &app.config,
        format!(
            r#"{state}
[stores.media]
url = "./media"
min_age = "1h"
quarantine = false

[databases.app]
url = "{}"

[[references]]
name = "post images"
query = "SELECT id, image AS key FROM posts;"

[[references]]
name = "avatars"
query = "SELECT u.id, u.avatar AS key, p.id FROM users u LEFT JOIN posts p ON p.user_id = u.id"
"#,
            db.url,
            state = app.state.config_section(),
        ),
    )
    .expect("config");
    let scan = app.scan_json();
    assert_eq!(orphan_keys(&scan).len(), 14, "{scan}");
    db.execute(&[
        "INSERT INTO posts (id, user_id, image) VALUES (10, 1, '/tmp/o01.jpg')",
        "INSERT INTO users (id, avatar) VALUES (10, 'tmp/o02.jpg')",
    ])
    .await;
    let out = app.ok(&["purge", "--confirm"]);
    assert!(
        out.contains("referenced:    2"),
        "{}: {out}",
        backend.name()
    );
    assert!(app.exists("tmp/o01.jpg") && app.exists("tmp/o02.jpg"));
    assert!(!app.exists("tmp/o03.jpg"));
    assert!(app.exists("posts/p1.jpg") && app.exists("avatars/u1.png"));
    db.drop_db().await;
}

async fn invariant_1_recheck_on_postgres(state: StateBackend) {
    recheck_on(common::Backend::Postgres, state).await;
}
both_states!(async invariant_1_recheck_on_postgres);

async fn invariant_1_recheck_on_mariadb(state: StateBackend) {
    recheck_on(common::Backend::MariaDb, state).await;
}
both_states!(async invariant_1_recheck_on_mariadb);

fn a_store_out_of_reach_is_exit_1_and_its_entries_wait(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "[queue]\nbackoff = \"1h\"\n");
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "tmp/o01.jpg",
        "tmp/o02.jpg",
    ]);
    std::fs::rename(&app.media, app.dir.join("moved-away")).expect("move the folder");
    let r = app.run(&["queue", "run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("nothing could be reached (store media)"),
        "{}",
        r.stderr
    );
    let stats = app.stats();
    assert_eq!(stats["total_pending"], 2, "{stats}");
    assert_eq!(
        stats["by_attempts"],
        serde_json::json!([{"attempts": 1, "count": 2}]),
        "{stats}"
    );
    std::fs::rename(app.dir.join("moved-away"), &app.media).expect("move back");
    assert!(app.exists("tmp/o01.jpg"));
}
both_states!(a_store_out_of_reach_is_exit_1_and_its_entries_wait);

/// A worker killed after moving an object and before recording it: the next run finds the copy.
/// Referenced meanwhile, the object is moved back; otherwise the move is recorded, once.
/// A claim holder as the worker writes itself, for a process of this boot and PID namespace.
fn holder_of(pid: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let ns = std::fs::read_link("/proc/self/ns/pid").expect("pid namespace");
    let ns = ns.to_string_lossy();
    let ns = ns.trim_start_matches("pid:[").trim_end_matches(']');
    format!("{}:{pid}:{}:{ns}:1", host.trim(), boot.trim())
}

/// A process that has ended: its claims are free to take at once.
fn dead_holder() -> String {
    let mut dead = std::process::Command::new("true").spawn().expect("spawn");
    let pid = dead.id();
    dead.wait().expect("reap");
    holder_of(pid)
}

fn a_move_left_unrecorded_by_a_killed_worker_is_recorded_or_undone(state: StateBackend) {
    let app = App::new(state, "", "");
    let keys = ["tmp/o01.jpg", "tmp/o02.jpg", "tmp/o03.jpg", "tmp/o04.jpg"];
    let mut args = vec!["queue", "add", "--store", "media"];
    args.extend(keys);
    app.ok(&args);
    // A worker that died right after its moves, before it recorded them (claimed an hour ago
    // by the database's clock, so only `is_dead` frees them).
    let holder = dead_holder();
    for k in keys {
        let q = format!(".assetgc-trash/20260101T000000Z/{k}");
        app.state.query(
            "UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, quarantine_key = $3, in_flight = 1, claim_token = 1 WHERE key = $4",
            &[&holder, &common_now(), &q, k],
        );
        let to = app.media.join(&q);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::rename(app.media.join(k), &to).expect("move");
    }
    // o01 referenced again; o03 referenced again and uploaded again at its key; o04 matches an
    // `ignore` glob added after the crash.
    app.sql(&[
        "INSERT INTO posts (id, image) VALUES (100, 'tmp/o01.jpg')",
        "INSERT INTO posts (id, image) VALUES (101, 'tmp/o03.jpg')",
    ]);
    std::fs::write(app.media.join("tmp/o03.jpg"), b"uploaded again").expect("re-upload");
    let cfg = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(
        &app.config,
        cfg.replace(
            "min_age = \"1h\"",
            "min_age = \"1h\"\nignore = [\"tmp/o04.jpg\"]",
        ),
    )
    .expect("config");
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("reclaimed:     4"), "{out}");
    assert!(out.contains("referenced:    2"), "{out}");
    assert!(out.contains("quarantined:   1"), "{out}");
    assert!(app.exists("tmp/o01.jpg"), "the referenced object is back");
    assert!(!app.exists(".assetgc-trash/20260101T000000Z/tmp/o01.jpg"));
    assert!(app.exists(".assetgc-trash/20260101T000000Z/tmp/o02.jpg"));
    // The move back never replaces: the new upload stays, the copy stays, recorded `kept`.
    assert_eq!(
        std::fs::read(app.media.join("tmp/o03.jpg")).expect("o03"),
        b"uploaded again"
    );
    assert!(app.exists(".assetgc-trash/20260101T000000Z/tmp/o03.jpg"));
    assert_eq!(
        app.state.count(
            "SELECT COUNT(*) FROM quarantine WHERE key = 'tmp/o03.jpg' AND state = 'kept' AND quarantine_key = '.assetgc-trash/20260101T000000Z/tmp/o03.jpg'",
            &[]
        ),
        1
    );
    assert_eq!(app.outcomes_of("tmp/o03.jpg")[..2], ["referenced", "kept"]);
    // The ignored key was not dropped with its copy unseen: the copy came back.
    assert!(app.exists("tmp/o04.jpg"));
    assert!(!app.exists(".assetgc-trash/20260101T000000Z/tmp/o04.jpg"));
    // No copy without its record.
    let recorded: BTreeSet<String> = app
        .state
        .query("SELECT quarantine_key FROM quarantine", &[])
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert_eq!(app.quarantined(), recorded);
    // The recorded move can be restored; so can the kept copy, with --overwrite.
    app.ok(&["restore", "tmp/o02.jpg"]);
    assert!(app.exists("tmp/o02.jpg"));
    app.ok(&["restore", "tmp/o03.jpg", "--overwrite"]);
    assert_eq!(
        std::fs::read(app.media.join("tmp/o03.jpg")).expect("o03"),
        b"tmp/o03.jpg"
    );
}

/// The state database's notion of now, as our times are written, taken from this host (the
/// test's database runs here).
fn common_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
both_states!(a_move_left_unrecorded_by_a_killed_worker_is_recorded_or_undone);

fn ignored_keys_are_never_deleted_and_retry_keeps_holds(state: StateBackend) {
    let app = App::new(
        state,
        "quarantine = { keep = \"1h\" }\nignore = [\"static/**\"]",
        "",
    );
    app.file("static/logo.png", 3);
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "static/logo.png",
        "tmp/o01.jpg",
    ]);
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("dropped:       1"), "{out}");
    assert!(app.exists("static/logo.png"));
    assert_eq!(app.outcomes_of("static/logo.png"), ["dropped"]);
    // The copy's removal waits for `keep`: retry does not bring it forward.
    let list: Value = serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("json");
    let removal = &list.as_array().expect("array")[0];
    assert_eq!(removal["reason"], "quarantine");
    let r = app.run(&["queue", "retry", &removal["id"].to_string()]);
    assert_refused(&r, "not brought forward");
}
both_states!(ignored_keys_are_never_deleted_and_retry_keeps_holds);

fn retrying_a_failed_entry_whose_object_is_queued_again_drops_the_old_one(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    std::fs::remove_file(app.media.join("tmp/o01.jpg")).expect("rm");
    std::fs::create_dir_all(app.media.join("tmp/o01.jpg")).expect("dir in the way");
    app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
    let r = app.run(&["queue", "run", "--max-attempts", "1"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    let out = app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
    assert!(
        out.contains("Queued 1 deletion"),
        "a failed entry does not block a new one: {out}"
    );
    let out = app.ok(&["queue", "retry", "--all-failed"]);
    assert!(out.contains("Retried 0 entries"), "{out}");
    assert!(
        out.contains("Dropped 1 whose object is queued again"),
        "{out}"
    );
    let stats = app.stats();
    assert_eq!(stats["total_pending"], 1, "{stats}");
    assert_eq!(stats["total_failed"], 0, "{stats}");
    assert_eq!(stats["total_dropped"], 1, "{stats}");
}
both_states!(retrying_a_failed_entry_whose_object_is_queued_again_drops_the_old_one);

fn a_key_already_gone_is_a_success_audited_as_already_gone(state: StateBackend) {
    for store_extra in ["quarantine = false", ""] {
        let app = App::new(state, store_extra, "");
        app.ok(&[
            "queue",
            "add",
            "--store",
            "media",
            "tmp/nothing-here.jpg",
            "gone/dir/x.jpg",
        ]);
        let out = app.ok(&["queue", "run"]);
        assert!(out.contains("already gone:  2"), "{store_extra}: {out}");
        assert_eq!(app.outcomes_of("tmp/nothing-here.jpg"), ["already_gone"]);
        assert_eq!(app.stats()["total_done"], 2);
    }
}
both_states!(a_key_already_gone_is_a_success_audited_as_already_gone);

fn purge_filters_by_scan_age_and_prefix_and_retry_keeps_min_age_holds(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    app.file("old/a.jpg", 40);
    app.file("old/b.jpg", 40);
    let first = app.scan_json();
    let first_id = first["scan"]["id"].as_i64().expect("id");
    // A later scan sees one more orphan; `--scan` takes the earlier one.
    app.file("tmp/later.jpg", 3);
    app.scan_json();
    let out = app.ok(&["purge", "--scan", &first_id.to_string()]);
    assert!(out.contains(&format!("scan {first_id}")), "{out}");
    assert!(out.contains("Would delete 12 objects"), "{out}");
    let out = app.ok(&["purge", "--older-than", "30d"]);
    assert!(out.contains("Would delete 2 objects"), "{out}");
    let out = app.ok(&["purge", "--prefix", "tmp/o0", "--limit-list", "3"]);
    assert!(out.contains("Would delete 9 objects"), "{out}");
    assert!(out.contains("… and 6 more"), "{out}");
    let out = app.ok(&["purge", "--confirm", "--older-than", "30d"]);
    assert!(out.contains("deleted:       2"), "{out}");
    assert!(!app.exists("old/a.jpg") && app.exists("tmp/o01.jpg"));

    // A purged entry held by min_age stays held when retried by hand.
    app.file("tmp/young.jpg", 0);
    let good = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(
        &app.config,
        good.replace("min_age = \"1h\"", "min_age = \"0s\""),
    )
    .expect("c");
    app.scan_json();
    std::fs::write(
        &app.config,
        good.replace("min_age = \"1h\"", "min_age = \"2h\""),
    )
    .expect("c");
    app.ok(&["purge", "--confirm", "--prefix", "tmp/young"]);
    let list: Value = serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("json");
    let young = &list.as_array().expect("array")[0];
    let held = young["next_attempt_at"].as_str().expect("time").to_string();
    app.ok(&["queue", "retry", &young["id"].to_string()]);
    let list: Value = serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("json");
    assert_eq!(
        list[0]["next_attempt_at"],
        held.as_str(),
        "the hold was kept"
    );
    app.ok(&["queue", "run"]);
    assert!(app.exists("tmp/young.jpg"));
}
both_states!(purge_filters_by_scan_age_and_prefix_and_retry_keeps_min_age_holds);

fn an_unreachable_database_is_exit_1_and_deletes_nothing(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
    std::fs::rename(app.dir.join("app.db"), app.dir.join("away.db")).expect("move the db");
    let r = app.run(&["queue", "run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("a database of the references"),
        "{}",
        r.stderr
    );
    assert!(app.exists("tmp/o01.jpg"));
    assert_eq!(app.stats()["total_pending"], 1);
}
both_states!(an_unreachable_database_is_exit_1_and_deletes_nothing);

fn a_store_reached_through_a_link_still_counts_as_overlapping(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    // `inner` is media/tmp, named through a link beside it: its references protect media's keys.
    std::os::unix::fs::symlink(&app.media, app.dir.join("alias")).expect("link");
    let cfg = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(
        &app.config,
        format!(
            "{}\n[stores.inner]\nurl = \"./alias/tmp\"\nquarantine = false\n\n[[references]]\nname = \"inner files\"\nstore = \"inner\"\nquery = \"SELECT id, name AS key FROM inner_files\"\n",
            cfg.replace("name = \"post images\"\n", "name = \"post images\"\nstore = \"media\"\n")
        ),
    )
    .expect("config");
    app.sql(&[
        "CREATE TABLE inner_files (id integer PRIMARY KEY, name text)",
        "INSERT INTO inner_files (id, name) VALUES (1, 'o07.jpg')",
    ]);
    let r = app.run(&["scan", "--all", "--store", "media", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert!(
        !orphan_keys(&json).contains("tmp/o07.jpg"),
        "referenced through the linked store, yet an orphan: {json}"
    );
    let out = app.ok(&["purge", "--confirm", "--store", "media"]);
    assert!(app.exists("tmp/o07.jpg"), "{out}");
    assert!(app.outcomes_of("tmp/o07.jpg").is_empty(), "never queued");
}
both_states!(a_store_reached_through_a_link_still_counts_as_overlapping);

/// Finding 6: an entry whose earlier move may have put its object in the trash leaves the queue
/// only once that copy is found: `queue list` shows where it may be, `queue drop` refuses it
/// (by id, and leaves it with `--all-failed`), a store taken out of the configuration keeps it
/// failed, and a retry with the store back records the copy.
fn an_entry_whose_copy_may_be_in_the_trash_is_never_dropped_unseen(state: StateBackend) {
    let app = App::new(state, "", "");
    app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
    let q = ".assetgc-trash/20260101T000000Z/tmp/o01.jpg";
    app.state.query(
        "UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, quarantine_key = $3, in_flight = 1, claim_token = 1 WHERE key = 'tmp/o01.jpg'",
        &[&dead_holder(), &common_now(), q],
    );
    let to = app.media.join(q);
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::rename(app.media.join("tmp/o01.jpg"), &to).expect("move");

    let good = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(
        &app.config,
        good.replace("[stores.media]", "[stores.elsewhere]"),
    )
    .expect("config");
    app.file("elsewhere-root-marker", 0);
    let r = app.run(&["queue", "run", "--max-attempts", "1"]);
    assert!(
        r.stdout.contains("failed:        1"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let list = app.ok(&["queue", "list", "--failed"]);
    assert!(list.contains(&format!("[trash: {q}]")), "{list}");
    let json: Value =
        serde_json::from_str(&app.ok(&["queue", "list", "--failed", "--json"])).expect("json");
    assert_eq!(json[0]["trash_key"], q);
    let id = json[0]["id"].to_string();
    assert_refused(
        &app.run(&["queue", "drop", &id]),
        "may have moved its object",
    );
    let out = app.ok(&["queue", "drop", "--all-failed"]);
    assert!(out.contains("Dropped 0 entries"), "{out}");
    assert!(out.contains("Left 1"), "{out}");
    assert_eq!(app.stats()["total_failed"], 1);

    std::fs::write(&app.config, &good).expect("config");
    app.ok(&["queue", "retry", &id]);
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("quarantined:   1"), "{out}");
    assert_eq!(
        app.state.count(
            "SELECT COUNT(*) FROM quarantine WHERE key = 'tmp/o01.jpg' AND quarantine_key = $1",
            &[q]
        ),
        1,
        "the copy is recorded"
    );
    app.ok(&["restore", "tmp/o01.jpg"]);
    assert!(app.exists("tmp/o01.jpg"));
}
both_states!(an_entry_whose_copy_may_be_in_the_trash_is_never_dropped_unseen);

/// Finding 10: `min_age` is evaluated again at claim, with the store's `min_age` of now: entries
/// queued under a lower `min_age` are held (no attempt counted), and an entry from a scan whose
/// upload time is unknown counts as too recent.
fn a_raised_min_age_holds_entries_already_queued(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    app.ok(&["queue", "stats"]);
    let half_hour_ago = (chrono::Utc::now() - chrono::TimeDelta::minutes(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (key, uploaded) in [
        ("tmp/o01.jpg", Some(half_hour_ago.as_str())),
        ("tmp/o02.jpg", None),
    ] {
        app.state.query(
            "INSERT INTO queue (store, resource_type, key, reason, scan_id, queued_at, uploaded_at, next_attempt_at, actor) VALUES ('media', '', $1, 'purge', 1, $2, $3, $2, 'purge')",
            &[key, &half_hour_ago, uploaded.unwrap_or_default()],
        );
    }
    app.state.query(
        "UPDATE queue SET uploaded_at = NULL WHERE key = 'tmp/o02.jpg'",
        &[],
    );
    // min_age is 1h in the config: the object uploaded 30 minutes ago waits 30 minutes more.
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("deleted:       0"), "{out}");
    assert!(app.exists("tmp/o01.jpg") && app.exists("tmp/o02.jpg"));
    let rows = app.state.query(
        "SELECT state, attempts, next_attempt_at, outcome FROM queue WHERE key = 'tmp/o01.jpg'",
        &[],
    );
    assert_eq!(rows[0][0].as_deref(), Some("pending"));
    assert_eq!(rows[0][1].as_deref(), Some("0"), "no attempt counted");
    assert!(rows[0][2].as_deref().expect("due") > common_now().as_str());
    assert_eq!(app.outcomes_of("tmp/o02.jpg"), ["too_recent"]);
    // `queue retry` does not make it due at once either.
    let id = app
        .state
        .query("SELECT id FROM queue WHERE key = 'tmp/o01.jpg'", &[])[0][0]
        .clone()
        .expect("id");
    app.ok(&["queue", "retry", &id]);
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("deleted:       0"), "{out}");
    assert!(app.exists("tmp/o01.jpg"));
}
both_states!(a_raised_min_age_holds_entries_already_queued);

/// Finding 13: with quarantine off, workers killed between their delete and its record: the
/// next worker finds the entry in flight and its object gone, and records it `deleted` (by a
/// stopped worker), never `already_gone` or `referenced`; nothing is deleted twice.
fn a_delete_by_a_killed_worker_is_recorded_as_deleted(state: StateBackend) {
    let app = App::new(state, "quarantine = false", "");
    let n = 3000;
    many_files(&app, n, "crash/c");
    let keys: Vec<String> = (0..n).map(|i| format!("crash/c{i:04}.jpg")).collect();
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("bin");
    let added = cmd
        .arg("--config")
        .arg(&app.config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .expect("queue add");
    assert_eq!(added.status.code(), Some(0));
    let bin = assert_cmd::cargo::cargo_bin("assetgc");
    let by_stopped = || {
        app.state.count(
            "SELECT COUNT(*) FROM audit WHERE outcome = 'deleted' AND detail LIKE '%stopped worker%'",
            &[],
        )
    };
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut runs = 0;
    while (by_stopped() < 3 || runs < 15) && runs < 200 {
        runs += 1;
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&app.config)
            .args(["queue", "run", "--batch-size", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 120));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }
    app.ok(&["queue", "run"]);
    eprintln!(
        "{} deletes recorded for stopped workers in {runs} runs",
        by_stopped()
    );
    assert!(
        by_stopped() >= 1,
        "no kill landed between a delete and its record"
    );
    for k in &keys {
        assert!(!app.exists(k), "{k}");
    }
    let rows = app.state.query(
        "SELECT outcome, COUNT(*) FROM audit GROUP BY outcome ORDER BY outcome",
        &[],
    );
    let n_str = n.to_string();
    assert_eq!(
        rows,
        [vec![Some("deleted".to_string()), Some(n_str)]],
        "every key deleted once, none already gone"
    );
}
both_states!(a_delete_by_a_killed_worker_is_recorded_as_deleted);

/// Finding 3: a key quarantined, uploaded again and quarantined again within the same second
/// goes to a second place: the first copy is never replaced.
fn a_second_quarantine_of_a_key_within_one_second_keeps_the_first_copy(state: StateBackend) {
    let app = App::new(state, "", "");
    for round in 0..5 {
        std::fs::write(app.media.join("tmp/o01.jpg"), b"first").expect("write");
        app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
        app.ok(&["queue", "run"]);
        std::fs::write(app.media.join("tmp/o01.jpg"), b"second").expect("write");
        app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
        app.ok(&["queue", "run"]);
        let rows = app.state.query(
            "SELECT quarantine_key FROM quarantine WHERE key = 'tmp/o01.jpg' ORDER BY id DESC LIMIT 2",
            &[],
        );
        let (second, first) = (
            rows[0][0].clone().expect("key"),
            rows[1][0].clone().expect("key"),
        );
        assert_ne!(first, second, "two copies, two places");
        assert_eq!(
            std::fs::read(app.media.join(&first)).expect("first"),
            b"first"
        );
        assert_eq!(
            std::fs::read(app.media.join(&second)).expect("second"),
            b"second"
        );
        let folder = |q: &str| q[..".assetgc-trash/20260101T000000Z".len()].to_string();
        if folder(&first) == folder(&second) {
            assert!(second.contains("Z-"), "{second}");
            return;
        }
        eprintln!("round {round}: the two moves fell in two seconds; again");
    }
    panic!("two quarantines never fell within one second");
}
both_states!(a_second_quarantine_of_a_key_within_one_second_keeps_the_first_copy);

/// Finding 15: `restore` takes the copy's removal out of the workers' reach first; while a
/// worker holds that removal, `restore` refuses and moves nothing, so the removal can never mark
/// a restored record `removed`.
fn restore_refuses_while_a_worker_removes_the_copy(state: StateBackend) {
    let app = App::new(
        state,
        "quarantine = { prefix = \".trash/\", keep = \"1h\" }",
        "",
    );
    app.ok(&["queue", "add", "--store", "media", "tmp/o01.jpg"]);
    app.ok(&["queue", "run"]);
    let copy = app.state.query(
        "SELECT quarantine_key FROM quarantine WHERE key = 'tmp/o01.jpg'",
        &[],
    )[0][0]
        .clone()
        .expect("copy");
    // A worker (alive, elsewhere) holds the copy's removal right now.
    app.state.query(
        "UPDATE queue SET state = 'claimed', claimed_by = 'worker.elsewhere:7', claimed_at = $1, claim_token = claim_token + 1 WHERE reason = 'quarantine'",
        &[&common_now()],
    );
    assert_refused(&app.run(&["restore", "tmp/o01.jpg"]), "is running now");
    assert!(app.exists(&copy) && !app.exists("tmp/o01.jpg"));
    // Once it lets go, restore cancels the removal first: no worker removes the copy after.
    app.state.query(
        "UPDATE queue SET state = 'pending', claimed_by = NULL, next_attempt_at = '2000-01-01T00:00:00Z' WHERE reason = 'quarantine'",
        &[],
    );
    app.ok(&["restore", "tmp/o01.jpg"]);
    assert!(app.exists("tmp/o01.jpg"));
    app.ok(&["queue", "run"]);
    assert!(app.exists("tmp/o01.jpg"));
    assert_eq!(
        app.state.query(
            "SELECT state FROM quarantine WHERE key = 'tmp/o01.jpg'",
            &[]
        ),
        [vec![Some("restored".to_string())]]
    );
}
both_states!(restore_refuses_while_a_worker_removes_the_copy);
