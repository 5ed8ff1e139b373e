//! Deleting safely on S3 (moto): quarantine by server-side copy then delete, restore, and bulk
//! deletes of 1000 keys a call. The story runs with the state database on SQLite and on
//! PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::s3::Bucket;
use common::{StateBackend, StateDb, assetgc, both_states, require_service};
use serde_json::Value;

fn config(dir: &Path, bucket: &Bucket, extra_store: &str, extra_top: &str) -> PathBuf {
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS files (id integer PRIMARY KEY, path text);
         INSERT OR IGNORE INTO files VALUES (1, 'uploads/keep-1.jpg'), (2, '/uploads/keep-2.jpg');",
    )
    .expect("schema");
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            r#"{extra_top}
[stores.media]
url = "s3://{}/app/"
endpoint = "{}"
access_key_id = "testing"
secret_access_key = "testing"
min_age = "0s"
{extra_store}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "files"
query = "SELECT id, path AS key FROM files"
"#,
            bucket.name, bucket.endpoint
        ),
    )
    .expect("config");
    path
}

fn scan_orphans(config: &Path) -> BTreeSet<String> {
    let r = assetgc(config, &["scan", "--all", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    v["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_string())
        .collect()
}

async fn keys(bucket: &Bucket) -> BTreeSet<String> {
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

fn ok(config: &Path, args: &[&str]) -> String {
    let r = assetgc(config, args);
    assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
    r.stdout
}

async fn s3_story_scan_purge_restore(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for k in [
        "app/uploads/keep-1.jpg",
        "app/uploads/keep-2.jpg",
        "outside/o.jpg",
    ] {
        bucket.put(k, k.as_bytes()).await;
    }
    for i in 1..=6 {
        let k = format!("app/tmp/o{i}.jpg");
        bucket.put(&k, k.as_bytes()).await;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let state = StateDb::create(state, tmp.path());
    let config = config(tmp.path(), &bucket, "", &state.config_section());
    let expected: BTreeSet<String> = (1..=6).map(|i| format!("tmp/o{i}.jpg")).collect();
    assert_eq!(scan_orphans(&config), expected);

    let before = keys(&bucket).await;
    let dry = ok(&config, &["purge"]);
    assert!(dry.contains("Would delete 6 objects"), "{dry}");
    assert_eq!(keys(&bucket).await, before);

    let out = ok(&config, &["purge", "--confirm"]);
    assert!(out.contains("quarantined:   6"), "{out}");
    let after = keys(&bucket).await;
    for k in [
        "app/uploads/keep-1.jpg",
        "app/uploads/keep-2.jpg",
        "outside/o.jpg",
    ] {
        assert!(after.contains(k), "{k} gone: {after:?}");
    }
    let copies: Vec<&String> = after
        .iter()
        .filter(|k| k.starts_with("app/.assetgc-trash/"))
        .collect();
    assert_eq!(copies.len(), 6, "{after:?}");
    assert!(!after.contains("app/tmp/o1.jpg"));
    assert!(scan_orphans(&config).is_empty());

    let out = ok(&config, &["restore", "tmp/o4.jpg"]);
    assert!(out.contains("Restored tmp/o4.jpg"), "{out}");
    assert!(keys(&bucket).await.contains("app/tmp/o4.jpg"));
    assert_eq!(
        scan_orphans(&config),
        BTreeSet::from(["tmp/o4.jpg".to_string()])
    );
}
both_states!(async s3_story_scan_purge_restore);

#[tokio::test]
async fn s3_deletes_1000_keys_a_call() {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    bucket.put("app/uploads/keep-1.jpg", b"k").await;
    let n = 1500;
    futures::future::join_all((0..n).map(|i| {
        let bucket = &bucket;
        async move { bucket.put(&format!("app/bulk/b{i:04}.jpg"), b"x").await }
    }))
    .await;
    let tmp = tempfile::tempdir().expect("tmp");
    let config = config(
        tmp.path(),
        &bucket,
        "quarantine = false",
        "[queue]\nbatch_size = 1000\n",
    );
    ok(&config, &["scan", "--all"]);
    let out = ok(&config, &["purge", "--confirm", "--allow-mass-delete"]);
    assert!(out.contains(&format!("deleted:       {n}")), "{out}");
    // 1500 keys in batches of 1000: one DeleteObjects call per batch.
    assert!(out.contains("Store calls: 2"), "{out}");
    let left = keys(&bucket).await;
    assert_eq!(
        left,
        BTreeSet::from(["app/uploads/keep-1.jpg".to_string()]),
        "{out}"
    );
}
