//! Overlapping stores are one place (SPEC §6 invariant 1), on every backend family: folder
//! stores (one root inside the other, identical roots), S3 stores whose endpoints are written
//! differently (moto), and Cloudinary stores on one cloud (the emulator). Also the store
//! fingerprint (a re-pointed store never gets old findings or entries) and typed keys of
//! another delivery type.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{StateBackend, StateDb, assetgc, both_states, require_service, write_file};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

fn days_ago(n: u32) -> SystemTime {
    SystemTime::now() - DAY * n
}

/// A folder with an app database (`app.db`) and a config written by each test.
struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    state: StateDb,
}

impl Dir {
    fn new(state: StateBackend) -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Dir {
            config: dir.join("assetgc.toml"),
            state: StateDb::create(state, &dir),
            dir,
            _tmp: tmp,
        }
    }

    fn config(&self, body: &str) {
        std::fs::write(
            &self.config,
            format!(
                "{}\n[databases.app]\nurl = \"sqlite://app.db\"\n{body}",
                self.state.config_section()
            ),
        )
        .expect("config");
    }

    fn sql(&self, statements: &str) {
        let conn = rusqlite::Connection::open(self.dir.join("app.db")).expect("app db");
        conn.execute_batch(statements).expect("sql");
    }

    fn file(&self, path: &str, age_days: u32) {
        write_file(&self.dir, path, path.as_bytes(), days_ago(age_days));
    }

    fn exists(&self, path: &str) -> bool {
        self.dir.join(path).exists()
    }

    fn run(&self, args: &[&str]) -> common::Run {
        assetgc(&self.config, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn scan(&self, stores: &[&str]) -> Value {
        let mut args = vec!["scan", "--all", "--json"];
        for s in stores {
            args.extend(["--store", s]);
        }
        serde_json::from_str(&self.ok(&args)).expect("json")
    }
}

fn orphans(scan: &Value) -> BTreeSet<String> {
    scan["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_string())
        .collect()
}

fn reference(name: &str, store: &str, table: &str) -> String {
    format!(
        "\n[[references]]\nname = \"{name}\"\nstore = \"{store}\"\nquery = \"SELECT id, key FROM {table}\"\n"
    )
}

fn identical_folder_roots_are_one_place(state: StateBackend) {
    // `media` and `alias` name one folder (written differently); `alias` keeps its trash in
    // `bin/`. An object referenced only through `alias` is valid when `media` is scanned, and
    // neither store lists or deletes the other's trash.
    let d = Dir::new(state);
    d.sql(
        "CREATE TABLE a (id integer PRIMARY KEY, key text);
         CREATE TABLE b (id integer PRIMARY KEY, key text);
         INSERT INTO a VALUES (1, 'posts/p.jpg');
         INSERT INTO b VALUES (1, 'legacy/l.jpg');",
    );
    for f in ["media/posts/p.jpg", "media/legacy/l.jpg", "media/tmp/o.jpg"] {
        d.file(f, 3);
    }
    d.file("media/bin/20250101T000000Z/old.jpg", 3);
    d.file("media/.assetgc-trash/20250101T000000Z/older.jpg", 3);
    d.config(&format!(
        "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\n[stores.alias]\nurl = \"./media/./\"\nmin_age = \"1h\"\nquarantine = {{ prefix = \"bin/\" }}\n{}{}",
        reference("a rows", "media", "a"),
        reference("b rows", "alias", "b")
    ));
    let scan = d.scan(&["media"]);
    assert_eq!(
        orphans(&scan),
        BTreeSet::from(["tmp/o.jpg".to_string()]),
        "{scan}"
    );
    assert_eq!(
        scan["summary"]["objects_scanned"], 3,
        "both trashes left out"
    );
    // And the other way round.
    let scan = d.scan(&["alias"]);
    assert_eq!(orphans(&scan), BTreeSet::from(["tmp/o.jpg".to_string()]));
    assert_eq!(
        scan["summary"]["objects_scanned"], 3,
        "both trashes left out"
    );
    // A key in the other store's trash is refused as a deletion target (exit 2).
    for (store, key) in [
        ("media", "bin/20250101T000000Z/old.jpg"),
        ("alias", ".assetgc-trash/20250101T000000Z/older.jpg"),
    ] {
        let r = d.run(&["queue", "add", "--store", store, key]);
        assert_eq!(r.code, 2, "{store} {key}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("quarantine"), "{}", r.stderr);
    }
    d.ok(&["purge", "--confirm", "--store", "media"]);
    assert!(d.exists("media/legacy/l.jpg"));
    assert!(d.exists("media/bin/20250101T000000Z/old.jpg"));
    assert!(!d.exists("media/tmp/o.jpg"));
}
both_states!(identical_folder_roots_are_one_place);

#[test]
fn a_failed_query_of_an_overlapping_store_leaves_the_scanned_store_without_orphans() {
    // `clips` lies inside `media`; its reference query fails. A scan of `media` alone counts
    // `clips`' references, so its reference set is partial: no orphans (the unread rows may name
    // any of them), a warning, exit 4 — and purge refuses.
    let d = Dir::new(StateBackend::Sqlite);
    d.sql(
        "CREATE TABLE a (id integer PRIMARY KEY, key text);
         INSERT INTO a VALUES (1, 'posts/p.jpg');",
    );
    for f in ["media/posts/p.jpg", "media/clips/c.mp4", "media/tmp/o.jpg"] {
        d.file(f, 3);
    }
    d.config(&format!(
        "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\n[stores.clips]\nurl = \"./media/clips\"\nmin_age = \"1h\"\n{}{}",
        reference("a rows", "media", "a"),
        reference("clip rows", "clips", "no_such_table")
    ));
    let r = d.run(&["scan", "--all", "--json", "--store", "media"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    let scan: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(scan["scan"]["complete"], false, "{scan}");
    assert!(orphans(&scan).is_empty(), "{scan}");
    assert_eq!(scan["summary"]["orphans"], 0, "{scan}");
    let warnings = scan["scan"]["warnings"].to_string();
    assert!(warnings.contains("undecided"), "{warnings}");
    let r = d.run(&["purge", "--confirm", "--store", "media"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(d.exists("media/clips/c.mp4") && d.exists("media/tmp/o.jpg"));
}

#[test]
fn deleting_through_a_store_applies_every_overlapping_stores_rules() {
    // `media` has quarantine off, min_age 1h and no ignore; `clips` (inside it) has quarantine
    // on, min_age 5d and ignore `keep/**`. Deleting through `media` applies all three of
    // `clips`' rules.
    let d = Dir::new(StateBackend::Sqlite);
    d.sql("CREATE TABLE a (id integer PRIMARY KEY, key text);");
    d.file("media/clips/keep/k.mp4", 10);
    d.file("media/clips/young.mp4", 3);
    d.file("media/old.jpg", 10);
    d.config(&format!(
        "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\nquarantine = false\n[stores.clips]\nurl = \"./media/clips\"\nmin_age = \"5d\"\nignore = [\"keep/**\"]\n{}",
        reference("a rows", "media", "a")
    ));
    let scan = d.scan(&["media"]);
    assert_eq!(
        orphans(&scan),
        BTreeSet::from([
            "clips/keep/k.mp4".to_string(),
            "clips/young.mp4".into(),
            "old.jpg".into()
        ]),
        "the scan applies media's own rules"
    );
    let out = d.ok(&["purge", "--confirm", "--store", "media"]);
    assert!(
        d.exists("media/clips/keep/k.mp4"),
        "clips' ignore glob: {out}"
    );
    assert!(d.exists("media/clips/young.mp4"), "clips' min_age: {out}");
    assert!(!d.exists("media/old.jpg"));
    let trash: Vec<_> = std::fs::read_dir(d.dir.join("media/.assetgc-trash"))
        .expect("quarantined, as clips has quarantine on")
        .collect();
    assert_eq!(trash.len(), 1, "{out}");
}

#[test]
fn a_store_re_pointed_since_the_scan_or_the_queueing_is_refused() {
    let d = Dir::new(StateBackend::Sqlite);
    d.sql("CREATE TABLE a (id integer PRIMARY KEY, key text);");
    for root in ["staging", "prod"] {
        d.file(&format!("{root}/o.jpg"), 3);
        d.file(&format!("{root}/q.jpg"), 3);
    }
    let cfg = |root: &str| {
        format!(
            "[stores.media]\nurl = \"./{root}\"\nmin_age = \"1h\"\nquarantine = false\n{}",
            reference("a rows", "media", "a")
        )
    };
    d.config(&cfg("staging"));
    d.scan(&[]);
    d.ok(&["queue", "add", "--store", "media", "q.jpg"]);
    d.config(&cfg("prod"));
    let r = d.run(&["purge", "--confirm"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("changed since scan"), "{}", r.stderr);
    let r = d.run(&["queue", "run"]);
    assert!(d.exists("prod/o.jpg") && d.exists("prod/q.jpg"), "{r:?}");
    let list = d.ok(&["queue", "list", "--failed"]);
    assert!(list.contains("re-pointed"), "{list}");
}

#[test]
fn the_worker_refuses_an_entry_in_an_overlapping_stores_trash() {
    // Queued while no store kept its trash there; then `alias` (the same folder, trash `bin/`)
    // is added: the worker fails the entry for good, with no store call.
    let d = Dir::new(StateBackend::Sqlite);
    d.sql("CREATE TABLE a (id integer PRIMARY KEY, key text);");
    d.file("media/bin/20250101T000000Z/copy.jpg", 3);
    let media = format!(
        "[stores.media]\nurl = \"./media\"\nquarantine = false\n{}",
        reference("a rows", "media", "a")
    );
    d.config(&media);
    d.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "bin/20250101T000000Z/copy.jpg",
    ]);
    d.config(&format!(
        "{media}\n[stores.alias]\nurl = \"./media\"\nquarantine = {{ prefix = \"bin/\" }}\n"
    ));
    d.run(&["queue", "run"]);
    assert!(d.exists("media/bin/20250101T000000Z/copy.jpg"));
    let list = d.ok(&["queue", "list", "--failed"]);
    assert!(list.contains("lies in the quarantine `bin/`"), "{list}");
}

#[test]
fn a_cloudinary_key_of_another_delivery_type_is_refused() {
    let d = Dir::new(StateBackend::Sqlite);
    d.config("[stores.media]\nurl = \"cloudinary://k:s@demo\"\n");
    for key in [
        "image/private/v1/a.jpg",
        "https://res.cloudinary.com/demo/image/authenticated/v1/a.jpg",
    ] {
        let r = d.run(&["queue", "add", "--store", "media", key]);
        assert_eq!(r.code, 2, "{key}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("upload"), "{}", r.stderr);
    }
    d.ok(&["queue", "add", "--store", "media", "image/upload/v1/a.jpg"]);
}

#[test]
fn cloudinary_stores_on_one_cloud_count_each_others_references() {
    use common::cloudinary::{Emulator, Options, Resource};
    let emulator = Emulator::start(Options::default());
    let ago = chrono::Utc::now() - chrono::Duration::days(3);
    emulator.add_many([
        Resource::image("posts/a", ago),
        Resource::image("legacy/l", ago),
        Resource::image("tmp/o", ago),
        Resource::image("bin/20250101T000000Z/x", ago),
    ]);
    let d = Dir::new(StateBackend::Sqlite);
    d.sql(
        "CREATE TABLE a (id integer PRIMARY KEY, key text);
         CREATE TABLE b (id integer PRIMARY KEY, key text);
         INSERT INTO a VALUES (1, 'image/upload/v1/posts/a.jpg');
         INSERT INTO b VALUES (1, 'image/upload/v1/legacy/l.jpg');",
    );
    let url = emulator.cloudinary_url();
    d.config(&format!(
        "[stores.media]\nurl = \"{url}\"\nresource_types = [\"image\"]\nmin_age = \"1h\"\n[stores.legacy]\nurl = \"{url}\"\nresource_types = [\"image\", \"video\"]\nmin_age = \"1h\"\nquarantine = {{ prefix = \".bin/\" }}\n{}{}",
        reference("a rows", "media", "a"),
        reference("b rows", "legacy", "b")
    ));
    let scan = d.scan(&["media"]);
    assert_eq!(
        orphans(&scan),
        BTreeSet::from(["tmp/o".to_string()]),
        "{scan}"
    );
    let r = d.run(&[
        "queue",
        "add",
        "--store",
        "media",
        "image/upload/bin/20250101T000000Z/x",
    ]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    d.ok(&["purge", "--confirm", "--store", "media"]);
    assert!(emulator.exists("image", "legacy/l"));
    assert!(emulator.exists("image", "bin/20250101T000000Z/x"));
    assert!(!emulator.exists("image", "tmp/o"));
}

fn s3_config(endpoint_a: &str, endpoint_b: &str, bucket: &str) -> String {
    let store = |name: &str, prefix: &str, endpoint: &str| {
        format!(
            "[stores.{name}]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\nmin_age = \"0s\"\nquarantine = false\n"
        )
    };
    format!(
        "{}{}{}{}",
        store("whole", "", endpoint_a),
        store("clips", "clips/", endpoint_b),
        reference("a rows", "whole", "a"),
        reference("b rows", "clips", "b")
    )
}

#[test]
fn s3_stores_with_endpoints_written_differently_are_one_place() {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bucket = rt.block_on(common::s3::Bucket::create(&endpoint));
    for key in ["posts/p.jpg", "clips/c.mp4", "tmp/o.jpg"] {
        rt.block_on(bucket.put(key, b"x"));
    }
    let d = Dir::new(StateBackend::Sqlite);
    d.sql(
        "CREATE TABLE a (id integer PRIMARY KEY, key text);
         CREATE TABLE b (id integer PRIMARY KEY, key text);
         INSERT INTO a VALUES (1, 'posts/p.jpg');
         INSERT INTO b VALUES (1, 'c.mp4');",
    );
    // The same server: a trailing `/`, the scheme and host in upper case.
    let e = endpoint.trim_end_matches('/');
    let shouted = e
        .replacen("http://", "HTTP://", 1)
        .replace("localhost", "LOCALHOST");
    d.config(&s3_config(&format!("{e}/"), &shouted, &bucket.name));
    let scan = d.scan(&["whole"]);
    assert_eq!(
        orphans(&scan),
        BTreeSet::from(["tmp/o.jpg".to_string()]),
        "c.mp4 is referenced through `clips`: {scan}"
    );
    d.ok(&["purge", "--confirm", "--store", "whole"]);
    let left = rt.block_on(bucket_keys(&bucket));
    assert!(left.contains("clips/c.mp4"), "{left:?}");
    assert!(!left.contains("tmp/o.jpg"), "{left:?}");
}

async fn bucket_keys(bucket: &common::s3::Bucket) -> BTreeSet<String> {
    use futures::StreamExt;
    let store = bucket.store("", 1);
    let mut out = BTreeSet::new();
    let mut pages = assetgc::store::Store::list(&store, assetgc::store::ListOptions::default());
    while let Some(page) = pages.next().await {
        for item in page.expect("page") {
            if let assetgc::store::Listed::Object(o) = item {
                out.insert(o.key);
            }
        }
    }
    out
}
