//! Deleting safely on Cloudinary, against the emulator: quarantine by the Upload API's `rename`
//! (not counted in the Admin API budget), removal by the Admin API's bulk delete (100 a call),
//! restore, the re-check of typed references, and typed keys on the command line. The story runs
//! with the state database on SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::cloudinary::{Emulator, Options, Resource};
use common::{StateBackend, StateDb, assetgc, both_states};
use serde_json::Value;

fn days_ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

struct App {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    emulator: Emulator,
    config: PathBuf,
    _state: StateDb,
}

/// Referenced: image `posts/a`, video `clips/v`; orphans: images `tmp/o1`…`tmp/o5`, video
/// `clips/old`, raw `files/r.txt`; and image `shared` referenced as a video only.
fn app(quarantine: &str) -> App {
    app_on(StateBackend::Sqlite, quarantine)
}

/// [`app`] with its state database on `state`.
fn app_on(state: StateBackend, quarantine: &str) -> App {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let emulator = Emulator::start(Options::default());
    emulator.add_many([
        Resource::image("posts/a", days_ago(3)),
        Resource::video("clips/v", days_ago(3)),
        Resource::video("clips/old", days_ago(3)),
        Resource::raw("files/r.txt", days_ago(3)),
        Resource::image("shared", days_ago(3)),
    ]);
    for i in 1..=5 {
        emulator.add(Resource::image(&format!("tmp/o{i}"), days_ago(3)));
    }
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute_batch(
        "CREATE TABLE posts (id integer PRIMARY KEY, image text, video text);
         INSERT INTO posts VALUES (1, 'image/upload/v1699999999/posts/a.jpg', 'video/upload/v1699999999/clips/v.mp4');
         INSERT INTO posts VALUES (2, NULL, 'video/upload/v1699999999/shared.mp4');",
    )
    .expect("schema");
    let config = dir.join("assetgc.toml");
    let state = StateDb::create(state, &dir);
    std::fs::write(
        &config,
        format!(
            r#"{state}
[stores.media]
url = "{}"
resource_types = ["image", "video", "raw"]
min_age = "1h"
{quarantine}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "images"
query = "SELECT id, image AS key FROM posts"

[[references]]
name = "videos"
query = "SELECT id, video AS key FROM posts"
"#,
            emulator.cloudinary_url(),
            state = state.config_section(),
        ),
    )
    .expect("config");
    App {
        _tmp: tmp,
        dir,
        emulator,
        config,
        _state: state,
    }
}

impl App {
    fn ok(&self, args: &[&str]) -> String {
        let r = assetgc(&self.config, args);
        assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn ids(&self) -> BTreeSet<String> {
        self.emulator
            .resources()
            .iter()
            .map(|r| format!("{}/{}", r.resource_type, r.public_id))
            .collect()
    }

    fn sql(&self, s: &str) {
        rusqlite::Connection::open(self.dir.join("app.db"))
            .expect("db")
            .execute_batch(s)
            .expect("sql");
    }
}

fn orphans() -> BTreeSet<String> {
    let mut o: BTreeSet<String> = (1..=5).map(|i| format!("image/tmp/o{i}")).collect();
    o.extend([
        "video/clips/old".into(),
        "raw/files/r.txt".into(),
        "image/shared".into(),
    ]);
    o
}

fn scan_orphans(config: &Path) -> BTreeSet<String> {
    let r = assetgc(config, &["scan", "--all", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    v["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["resource_type"].as_str().expect("type"),
                o["key"].as_str().expect("key")
            )
        })
        .collect()
}

fn cloudinary_story_scan_purge_restore(state: StateBackend) {
    let app = app_on(state, "");
    let before = app.ids();
    assert_eq!(scan_orphans(&app.config), orphans());

    let dry = app.ok(&["purge"]);
    assert!(dry.contains("Would delete 8 objects"), "{dry}");
    assert_eq!(app.ids(), before, "a dry run deletes nothing");

    app.emulator.reset_calls();
    let out = app.ok(&["purge", "--confirm"]);
    assert!(out.contains("quarantined:   8"), "{out}");
    // One Upload API rename per object; no Admin API delete yet (the copies wait `keep`).
    assert_eq!(app.emulator.calls_to("POST /image/rename"), 6, "{out}");
    assert_eq!(app.emulator.calls_to("POST /video/rename"), 1);
    assert_eq!(app.emulator.calls_to("POST /raw/rename"), 1);
    assert_eq!(app.emulator.calls_to("DELETE /resources"), 0);
    let after = app.ids();
    for id in ["image/posts/a", "video/clips/v"] {
        assert!(after.contains(id), "referenced {id} gone");
    }
    let trash: Vec<&String> = after
        .iter()
        .filter(|id| id.contains("/assetgc-trash/"))
        .collect();
    assert_eq!(trash.len(), 8, "{after:?}");
    // The public_id is assetgc-trash/<time>/<public_id>, in the same resource type.
    assert!(
        trash
            .iter()
            .any(|id| id.starts_with("video/assetgc-trash/") && id.ends_with("/clips/old")),
        "{trash:?}"
    );
    assert!(
        trash
            .iter()
            .any(|id| id.starts_with("raw/assetgc-trash/") && id.ends_with("/files/r.txt"))
    );

    // Scans leave the quarantine out.
    assert!(scan_orphans(&app.config).is_empty());

    // Restore needs the type of a bare public_id on a store of several types.
    let r = assetgc(&app.config, &["restore", "tmp/o2"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--resource-type"), "{}", r.stderr);
    let out = app.ok(&["restore", "tmp/o2", "--resource-type", "image"]);
    assert!(out.contains("Restored tmp/o2"), "{out}");
    // …or a key in the cloudinary format.
    app.ok(&["restore", "video/upload/v1/clips/old.mp4"]);
    assert_eq!(
        scan_orphans(&app.config),
        BTreeSet::from(["image/tmp/o2".to_string(), "video/clips/old".to_string()])
    );
}
both_states!(cloudinary_story_scan_purge_restore);

#[test]
fn cloudinary_removal_deletes_100_a_call_and_the_recheck_is_typed() {
    let app = app("quarantine = false");
    for i in 0..250 {
        app.emulator
            .add(Resource::image(&format!("bulk/b{i:03}"), days_ago(3)));
    }
    app.ok(&["scan", "--all"]);
    // After the scan: `tmp/o1` is referenced as an image, `clips/old` as an image (wrong type:
    // the video is still an orphan), and a bare public_id `files/r.txt` (any type).
    app.sql(
        "INSERT INTO posts VALUES (10, 'image/upload/v1/tmp/o1.jpg', NULL);
         INSERT INTO posts VALUES (11, 'image/upload/v1/clips/old.jpg', NULL);
         INSERT INTO posts VALUES (12, 'files/r.txt', NULL);",
    );
    app.emulator.reset_calls();
    let out = app.ok(&["purge", "--confirm", "--allow-mass-delete"]);
    assert!(out.contains("referenced:    2"), "{out}");
    assert!(out.contains("deleted:       256"), "{out}");
    let ids = app.ids();
    assert!(ids.contains("image/tmp/o1"));
    assert!(ids.contains("raw/files/r.txt"));
    assert!(
        !ids.contains("video/clips/old"),
        "a reference of another type protects nothing"
    );
    assert!(!ids.contains("image/bulk/b000"));
    // 254 images in batches of 100 (the default batch size): 100 + 100 + 54, one call each.
    let deletes = app.emulator.calls_to("DELETE /resources/image/upload");
    assert!((3..=4).contains(&deletes), "{deletes} delete calls\n{out}");
    assert_eq!(app.emulator.calls_to("DELETE /resources/video/upload"), 1);
}

#[test]
fn cloudinary_failing_renames_are_retried_then_failed() {
    let app = app("");
    app.ok(&["scan", "--all"]);
    app.emulator.fail_renames_of(&["tmp/o3"]);
    let cfg = std::fs::read_to_string(&app.config).expect("c");
    std::fs::write(&app.config, format!("{cfg}\n[queue]\nbackoff = \"0s\"\n")).expect("c");
    let r = assetgc(&app.config, &["purge", "--confirm", "--allow-mass-delete"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("quarantined:   7"), "{}", r.stdout);
    assert!(r.stdout.contains("failed:        1"), "{}", r.stdout);
    assert!(app.ids().contains("image/tmp/o3"));
    let list: Value =
        serde_json::from_str(&app.ok(&["queue", "list", "--failed", "--json"])).expect("json");
    assert_eq!(list[0]["key"], "tmp/o3");
    assert_eq!(list[0]["resource_type"], "image");
    assert_eq!(list[0]["attempts"], 3);
}

/// A rename Cloudinary refuses with a client error will be refused again: the entry fails at once,
/// after one attempt, while the others are quarantined.
#[test]
fn cloudinary_renames_refused_for_good_fail_at_once() {
    let app = app("");
    app.ok(&["scan", "--all"]);
    app.emulator.refuse_renames_of(&["tmp/o3"], 400);
    let cfg = std::fs::read_to_string(&app.config).expect("c");
    std::fs::write(&app.config, format!("{cfg}\n[queue]\nbackoff = \"0s\"\n")).expect("c");
    let r = assetgc(&app.config, &["purge", "--confirm", "--allow-mass-delete"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("quarantined:   7"), "{}", r.stdout);
    assert!(r.stdout.contains("failed:        1"), "{}", r.stdout);
    assert!(app.ids().contains("image/tmp/o3"));
    let list: Value =
        serde_json::from_str(&app.ok(&["queue", "list", "--failed", "--json"])).expect("json");
    assert_eq!(list[0]["key"], "tmp/o3");
    assert_eq!(list[0]["attempts"], 1, "{list}");
    assert!(
        list[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be renamed")),
        "{list}"
    );
}

#[test]
fn cloudinary_queue_add_needs_a_resource_type() {
    let app = app("quarantine = false");
    let r = assetgc(&app.config, &["queue", "add", "--store", "media", "tmp/o1"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1);
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "--resource-type",
        "image",
        "tmp/o1",
    ]);
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "video/upload/v3/clips/old.mp4",
    ]);
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "image/upload/v1/never/there.jpg",
    ]);
    let out = app.ok(&["queue", "run"]);
    assert!(out.contains("deleted:       2"), "{out}");
    // Cloudinary's `not_found` is success, audited as such.
    assert!(out.contains("already gone:  1"), "{out}");
    assert!(!app.ids().contains("image/tmp/o1"));
    assert!(!app.ids().contains("video/clips/old"));
}

#[test]
fn cloudinary_budget_stop_leaves_entries_pending_without_an_attempt() {
    let app = app("quarantine = false\napi_budget = { max_wait = \"1s\" }");
    // The account is out of calls for the next ten minutes: the first call answers 420.
    app.emulator.set_remaining(0);
    app.emulator
        .set_window_reset_in(std::time::Duration::from_secs(600));
    app.ok(&[
        "queue",
        "add",
        "--store",
        "media",
        "--resource-type",
        "image",
        "tmp/o1",
        "tmp/o2",
    ]);
    let r = assetgc(&app.config, &["queue", "run"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("deferred:      2"), "{}", r.stdout);
    assert!(r.stdout.contains("Stopped:"), "{}", r.stdout);
    let list: Value = serde_json::from_str(&app.ok(&["queue", "list", "--json"])).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|e| e["state"] == "pending" && e["attempts"] == 0),
        "{list:?}"
    );
    assert!(app.ids().contains("image/tmp/o1"));
}

#[test]
fn cloudinary_restore_never_renames_over_an_existing_asset() {
    let app = app("");
    app.ok(&["scan", "--all"]);
    app.ok(&["purge", "--confirm"]);
    let trash = app
        .ids()
        .into_iter()
        .find(|id| id.starts_with("image/assetgc-trash/") && id.ends_with("/tmp/o1"))
        .expect("copy");
    let copy = trash.trim_start_matches("image/").to_string();
    app.emulator.add(Resource::image("tmp/o1", days_ago(0)));
    // An upload that lands at the key after restore's check: the rename itself must refuse.
    // The store's move is called as restore calls it, past any check.
    let cfg = assetgc::config::load(Some(&app.config))
        .expect("config")
        .expect("a config");
    let moved = common::block_on(async move {
        let app = assetgc::app::App::open(cfg).await.expect("app");
        let store = app.store("media").expect("store");
        store
            .move_many(
                assetgc::key::ResourceType::Image,
                &[(copy, "tmp/o1".to_string())],
                assetgc::store::MoveOptions { replace: false },
            )
            .await
            .expect("the call")
    });
    assert!(
        matches!(
            moved.as_slice(),
            [Err(e)] if e.kind == assetgc::store::KeyFailure::AlreadyExists
        ),
        "{moved:?}"
    );
    assert!(
        app.ids().contains(&trash),
        "the copy was not renamed over the new upload"
    );
    assert!(app.ids().contains("image/tmp/o1"));
    let r = assetgc(
        &app.config,
        &["restore", "tmp/o1", "--resource-type", "image"],
    );
    assert_eq!(
        r.code, 2,
        "the check refuses first: {}{}",
        r.stdout, r.stderr
    );
    assert!(r.stderr.contains("--overwrite"), "{}", r.stderr);
    // --overwrite moves the new upload to the trash first (recorded), then brings the copy back.
    let out = app.ok(&[
        "restore",
        "tmp/o1",
        "--resource-type",
        "image",
        "--overwrite",
    ]);
    assert!(out.contains("Restored"), "{out}");
    let ids = app.ids();
    assert!(!ids.contains(&trash));
    assert!(ids.contains("image/tmp/o1"));
    assert_eq!(
        ids.iter()
            .filter(|id| id.starts_with("image/assetgc-trash/") && id.ends_with("/tmp/o1"))
            .count(),
        1,
        "what was replaced is in the trash: {ids:?}"
    );
}

#[test]
fn cloudinary_stores_on_one_cloud_protect_each_others_assets() {
    let app = app("quarantine = false");
    // A second store on the same cloud (videos only) with its own reference.
    let cfg = std::fs::read_to_string(&app.config).expect("config");
    let url = app.emulator.cloudinary_url();
    std::fs::write(
        &app.config,
        format!(
            "{}\n[stores.clips]\nurl = \"{url}\"\nresource_types = [\"image\"]\nquarantine = false\n\n[[references]]\nname = \"clip stills\"\nstore = \"clips\"\nquery = \"SELECT id, still AS key FROM stills\"\n",
            cfg.replace("name = \"images\"\n", "name = \"images\"\nstore = \"media\"\n")
                .replace("name = \"videos\"\n", "name = \"videos\"\nstore = \"media\"\n")
        ),
    )
    .expect("config");
    app.sql("CREATE TABLE stills (id integer PRIMARY KEY, still text);");
    let r = assetgc(&app.config, &["scan", "--all", "--store", "media"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    app.sql("INSERT INTO stills VALUES (1, 'image/upload/v1/tmp/o2.jpg');");
    let out = app.ok(&[
        "purge",
        "--confirm",
        "--store",
        "media",
        "--allow-mass-delete",
    ]);
    assert!(app.ids().contains("image/tmp/o2"), "{out}");
    assert!(!app.ids().contains("image/tmp/o3"), "{out}");
}
