//! The cleanup, deletion, queue and audit endpoints of SPEC §8: `POST /api/cleanup/bulk` (its
//! figures against files counted here, the 202 and the poll), `POST /api/cleanup/run` (one
//! batch, and the stats right after), `POST /api/deletions`, `GET /api/queue` and
//! `GET /api/audit` paged by cursor, `POST /api/queue/retry` and `/drop`, trailing slashes,
//! scopes and bad input.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::Request;
use common::api::{Answer, Api, assert_error_shape, test_options};
use common::{Backend, StateBackend, StateDb, TestDb, both_states, write_file};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const DAY: Duration = Duration::from_secs(86_400);
/// Bytes of each old clip: 13 of them are 1.24 MB.
const CLIP: usize = 100_000;

fn days_ago(d: u32) -> SystemTime {
    SystemTime::now() - DAY * d - Duration::from_secs(60)
}

/// A folder store with clips (13 old and unreferenced, one old and referenced by a row of the
/// app's SQLite database, one younger than the policy) and a file outside the policy's prefix;
/// a policy `clips` of 5 days. Answers the config's path and the media folder.
async fn clips_setup(dir: &Path, state: &str) -> (PathBuf, PathBuf) {
    let media = dir.join("media");
    for i in 0..13 {
        write_file(
            &media,
            &format!("clips/old{i:02}.mp4"),
            &vec![b'x'; CLIP],
            days_ago(10),
        );
    }
    write_file(&media, "clips/kept.mp4", b"kept", days_ago(10));
    write_file(&media, "clips/recent.mp4", b"recent", days_ago(2));
    write_file(&media, "other/x.jpg", b"other", days_ago(10));
    let db = TestDb::create(Backend::Sqlite, dir).await.expect("sqlite");
    db.execute(&[
        "CREATE TABLE clips (id INTEGER PRIMARY KEY, path TEXT)",
        "INSERT INTO clips (path) VALUES ('clips/kept.mp4')",
    ])
    .await;
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            r#"{state}
[server]
rate_limit = false

[stores.media]
url = "{media}"
min_age = "1h"
quarantine = false

[databases.app]
url = "{db}"

[[references]]
name = "clip rows"
store = "media"
query = "SELECT id, path AS key FROM clips"

[[policies]]
name = "clips"
store = "media"
prefix = "clips/"
older_than = "5d"
"#,
            media = media.display(),
            db = db.url,
        ),
    )
    .expect("config");
    (path, media)
}

/// A folder store `media` and a Cloudinary store `cdn` (never called: nothing is deleted).
fn queue_setup(dir: &Path, state: &str) -> PathBuf {
    let media = dir.join("media");
    std::fs::create_dir_all(&media).expect("media");
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            "{state}\n[server]\nrate_limit = false\n\n[queue]\nmax_attempts = 1\n\n[stores.media]\nurl = \"{}\"\nquarantine = false\n\n[stores.cdn]\nurl = \"cloudinary://key:secret@demo?upload_prefix=http://127.0.0.1:9\"\n",
            media.display()
        ),
    )
    .expect("config");
    path
}

fn keys_under(root: &Path) -> BTreeSet<String> {
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

fn old_clips() -> BTreeSet<String> {
    (0..13).map(|i| format!("clips/old{i:02}.mp4")).collect()
}

fn size_mb(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1_048_576.0;
    (mb * 100.0).round() / 100.0
}

/// A POST with a raw body (not necessarily JSON).
async fn post_raw(api: &Api, path: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {}", api.write))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Polls a bulk run until it is `done` (or fails the test after a minute).
async fn poll_done(api: &Api, job: i64) -> Value {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let a = api.get(&format!("/api/cleanup/bulk/{job}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        if a.json["state"] == "done" {
            return a.json;
        }
        assert_eq!(a.json["state"], "running", "{a:?}");
        assert!(Instant::now() < deadline, "job {job} never finished: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_bulk_fields(v: &Value) {
    for f in [
        "success",
        "message",
        "deleted_count",
        "deleted_size_mb",
        "retained_count",
        "total_files_scanned",
        "dry_run",
        "deleted_files_sample",
        "retention_days",
        "job_id",
    ] {
        assert!(v.get(f).is_some(), "`{f}` in {v}");
    }
}

/// A dry run's figures match a count made here and delete nothing; the real run queues exactly
/// those, deletes them in the background, and its job says so once done.
#[tokio::test]
async fn bulk_dry_run_and_real_run_match_the_files_on_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let (config, media) = clips_setup(dir.path(), "").await;
    let api = Api::open(&config).await;
    let before = keys_under(&media);
    let expected = old_clips();
    let bytes = CLIP as u64 * expected.len() as u64;

    let dry = api
        .post(
            "/api/cleanup/bulk",
            json!({"dry_run": true, "policy": "clips"}),
        )
        .await;
    assert_eq!(dry.status, 200, "{dry:?}");
    assert_bulk_fields(&dry.json);
    assert_eq!(dry.json["success"], true);
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["total_files_scanned"], 15, "13 old, kept, recent");
    assert_eq!(dry.json["deleted_count"], 13);
    assert_eq!(dry.json["retained_count"], 2);
    assert_eq!(dry.json["deleted_size_mb"], size_mb(bytes));
    assert_eq!(dry.json["retention_days"], 5);
    let sample: Vec<String> = dry.json["deleted_files_sample"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|v| v.as_str().expect("key").to_string())
        .collect();
    assert_eq!(
        sample,
        expected.iter().take(10).cloned().collect::<Vec<_>>(),
        "the first 10 keys"
    );
    assert_eq!(keys_under(&media), before, "a dry run deletes nothing");
    assert_eq!(api.get("/api/queue").await.json["total"], 0);
    let job = dry.json["job_id"].as_i64().expect("job id");
    let status = poll_done(&api, job).await;
    assert_eq!(status["dry_run"], true);
    assert_eq!(
        status["deleted_count"], 13,
        "a dry run's figures stay the plan's"
    );

    // retention_days replaces older_than: nothing is 30 days old.
    let longer = api
        .post(
            "/api/cleanup/bulk/",
            json!({"dry_run": true, "retention_days": 30}),
        )
        .await;
    assert_eq!(longer.status, 200, "{longer:?}");
    assert_eq!(longer.json["deleted_count"], 0);
    assert_eq!(longer.json["retention_days"], 30);

    let real = api
        .post(
            "/api/cleanup/bulk",
            json!({"dry_run": false, "policy": "clips"}),
        )
        .await;
    assert_eq!(real.status, 200, "{real:?}");
    assert_bulk_fields(&real.json);
    assert_eq!(real.json["dry_run"], false);
    assert_eq!(real.json["deleted_count"], 13, "what was queued");
    assert_eq!(real.json["retained_count"], 2);
    assert_eq!(real.json["total_files_scanned"], 15);
    let job = real.json["job_id"].as_i64().expect("job id");
    let done = poll_done(&api, job).await;
    assert_bulk_fields(&done);
    assert_eq!(done["deleted_count"], 13, "{done}");
    assert_eq!(done["dropped_referenced"], 0);
    assert_eq!(done["failed"], 0);
    assert_eq!(done["success"], true);
    let gone: BTreeSet<String> = before.difference(&keys_under(&media)).cloned().collect();
    assert_eq!(gone, expected, "exactly the old, unreferenced clips");
    let audit = api.get("/api/audit?limit=1000").await;
    let deleted = audit.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["outcome"] == "deleted" && i["actor"] == "token:writer")
        .count();
    assert_eq!(deleted, 13);
    api.close().await;
}

/// Past the plan's wait the POST answers 202 with the job id alone; the job is polled until
/// done, and then counts the objects actually deleted.
#[tokio::test]
async fn bulk_past_the_wait_answers_202_and_the_job_reports_what_was_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (config, media) = clips_setup(dir.path(), "").await;
    let opts = assetgc::server::ServeOptions {
        plan_wait: Duration::ZERO,
        ..test_options()
    };
    let api = Api::open_with(&config, opts).await;
    let before = keys_under(&media);
    let a = api
        .call(
            "POST",
            "/api/cleanup/bulk/",
            Some(&api.write),
            Some(json!({"dry_run": false})),
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    let obj = a.json.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "job_id alone: {a:?}");
    let job = obj["job_id"].as_i64().expect("job id");
    let done = poll_done(&api, job).await;
    let gone = before.difference(&keys_under(&media)).count();
    assert_eq!(gone, 13);
    assert_eq!(done["deleted_count"], gone, "{done}");
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["total_files_scanned"], 15);
    assert_eq!(done["failed"], 0);
    assert_eq!(
        api.get(&format!("/api/cleanup/bulk/{job}/")).await.json["state"],
        "done",
        "the trailing-slash twin"
    );
    api.close().await;
}

/// With serve's own worker running beside the bulk run's, which of the two deletes an entry
/// does not change the job's figures: once done, `deleted_count` counts every object the run's
/// entries deleted.
async fn bulk_counts_what_serve_worker_deleted_too(state: StateBackend) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = StateDb::create(state, dir.path());
    let (config, media) = clips_setup(dir.path(), &db.config_section()).await;
    let opts = assetgc::server::ServeOptions {
        worker: true,
        worker_poll: Duration::from_millis(10),
        ..test_options()
    };
    let api = Api::open_with(&config, opts).await;
    let worker = tokio::spawn(assetgc::server::worker::run(api.state.clone()));
    let before = keys_under(&media);
    let real = api
        .post("/api/cleanup/bulk", json!({"dry_run": false}))
        .await;
    assert_eq!(real.status, 200, "{real:?}");
    assert_eq!(real.json["deleted_count"], 13);
    let done = poll_done(&api, real.json["job_id"].as_i64().expect("job id")).await;
    let gone: BTreeSet<String> = before.difference(&keys_under(&media)).cloned().collect();
    assert_eq!(
        gone,
        old_clips(),
        "{done} {:?}",
        api.get("/api/queue").await.json
    );
    assert_eq!(done["deleted_count"], 13, "{done}");
    assert_eq!(done["failed"], 0);
    api.state.shutdown.cancel();
    worker.await.expect("worker stops");
    api.close().await;
}
both_states!(async bulk_counts_what_serve_worker_deleted_too);

#[tokio::test]
async fn bulk_refuses_bad_input_and_unknown_jobs() {
    let dir = tempfile::tempdir().expect("tmp");
    let (config, _media) = clips_setup(dir.path(), "").await;
    let api = Api::open(&config).await;
    for body in [
        json!({"policy": "nope"}),
        json!({"retention_days": "five"}),
        json!({"retention_days": -1}),
        json!({"dry_run": "yes"}),
        json!([1, 2]),
    ] {
        let a = api.post("/api/cleanup/bulk", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_error_shape(&a);
    }
    let a = post_raw(&api, "/api/cleanup/bulk", "{not json").await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_error_shape(&a);
    let a = api.get("/api/cleanup/bulk/999999").await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_error_shape(&a);
    let a = api.get("/api/cleanup/bulk/abc").await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_error_shape(&a);
    // Nothing was queued or deleted by any of them.
    assert_eq!(api.get("/api/queue").await.json["total"], 0);
    api.close().await;
}

/// `POST /api/cleanup/run` works one batch of at most `batch_size` entries, and the stats read
/// right after already count what it did.
#[tokio::test]
async fn cleanup_run_processes_one_batch_and_stats_follow_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = queue_setup(dir.path(), "");
    let media = dir.path().join("media");
    let keys: Vec<String> = (0..5).map(|i| format!("up/{i}.jpg")).collect();
    for k in &keys {
        write_file(&media, k, b"x", SystemTime::now());
    }
    let api = Api::open(&config).await;
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(stats.json["stats"]["total_pending"], 0);

    let q = api
        .post(
            "/api/deletions",
            json!({"store": "media", "keys": keys, "client_id": "app-1"}),
        )
        .await;
    assert_eq!(q.status, 202, "{q:?}");
    assert_eq!(q.json["queued"], 5);
    let stats = api.get("/api/cleanup/stats/").await;
    assert_eq!(stats.json["stats"]["total_pending"], 5, "{stats:?}");

    // Explicit deletions are not held by min_age (24 h by default): files written just now go.
    let r = api
        .call(
            "POST",
            "/api/cleanup/run?batch_size=2",
            Some(&api.write),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["processed"], 2);
    assert_eq!(r.json["deleted"], 2);
    assert_eq!(r.json["failed"], 0);
    assert_eq!(r.json["remaining"], 3);
    assert_eq!(keys_under(&media).len(), 3);
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(stats.json["stats"]["total_pending"], 3, "{stats:?}");

    let r = api
        .call(
            "POST",
            "/api/cleanup/run/?batch_size=1000",
            Some(&api.write),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["processed"], 3);
    assert_eq!(r.json["deleted"], 3);
    assert_eq!(r.json["remaining"], 0);
    assert!(keys_under(&media).is_empty());
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(stats.json["stats"]["total_pending"], 0);

    for bad in ["1001", "0", "-1", "abc"] {
        let r = api
            .call(
                "POST",
                &format!("/api/cleanup/run?batch_size={bad}"),
                Some(&api.write),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "batch_size={bad}: {r:?}");
        assert_error_shape(&r);
    }
    api.close().await;
}

/// Every page of `path` (which has no `?` yet) with `limit`: the items, and `total` of each.
async fn all_pages(api: &Api, path: &str, limit: u32) -> (Vec<Value>, Vec<u64>) {
    let mut items = Vec::new();
    let mut totals = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let a = api.get(&url).await;
        assert_eq!(a.status, 200, "{url}: {a:?}");
        let page = a.json["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize);
        totals.push(a.json["total"].as_u64().expect("total"));
        items.extend(page);
        match a.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(items.len() < 10_000, "paging never ends");
    }
    (items, totals)
}

/// `POST /api/deletions` queues (202), with its checks; `GET /api/queue` pages by cursor with
/// no entry twice and none left out, filters by state, and carries SPEC §6's columns.
async fn deletions_are_queued_and_the_queue_pages_by_cursor(state: StateBackend) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = StateDb::create(state, dir.path());
    let config = queue_setup(dir.path(), &db.config_section());
    let api = Api::open(&config).await;

    let keys: Vec<String> = (0..23).map(|i| format!("a/{i:03}.jpg")).collect();
    let q = api
        .post(
            "/api/deletions",
            json!({"store": "media", "keys": keys, "client_id": "c-7"}),
        )
        .await;
    assert_eq!(q.status, 202, "{q:?}");
    assert_eq!(q.json["queued"], 23);
    let again = api
        .post(
            "/api/deletions",
            json!({"store": "media", "keys": ["a/000.jpg"]}),
        )
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json["queued"], 0, "a live entry is not queued twice");

    // Cloudinary: a bare public_id needs its resource type; the cloudinary format carries one.
    let bare = api
        .post(
            "/api/deletions",
            json!({"store": "cdn", "keys": ["folder/id"]}),
        )
        .await;
    assert_eq!(bare.status, 400, "{bare:?}");
    assert_error_shape(&bare);
    let typed = api
        .post(
            "/api/deletions",
            json!({"store": "cdn", "resource_type": "video", "keys": ["folder/id"]}),
        )
        .await;
    assert_eq!(typed.status, 202, "{typed:?}");
    let formatted = api
        .post(
            "/api/deletions",
            json!({"store": "cdn", "keys": ["image/upload/v1699999999/folder/pic.jpg"]}),
        )
        .await;
    assert_eq!(formatted.status, 202, "{formatted:?}");
    assert_eq!(formatted.json["queued"], 1);

    for body in [
        json!({"store": "nope", "keys": ["a.jpg"]}),
        json!({"store": "media", "keys": []}),
        json!({"store": "media"}),
        json!({"keys": ["a.jpg"]}),
        json!({"store": "media", "keys": ["../etc/passwd"]}),
        json!({"store": "media", "keys": "a.jpg"}),
        json!({"store": "media", "keys": ["fine.jpg", "a//b.jpg"]}),
    ] {
        let a = api.post("/api/deletions", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_error_shape(&a);
    }
    let a = post_raw(&api, "/api/deletions", "{\"store\": ").await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_error_shape(&a);

    // 25 entries, in pages of 10, 10 and 5.
    let (items, totals) = all_pages(&api, "/api/queue", 10).await;
    assert_eq!(totals, vec![25, 25, 25]);
    let ids: Vec<i64> = items
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 25, "no entry twice: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let listed: BTreeSet<String> = items
        .iter()
        .filter(|i| i["store"] == "media")
        .map(|i| i["key"].as_str().expect("key").to_string())
        .collect();
    assert_eq!(listed, keys.iter().cloned().collect::<BTreeSet<_>>());
    let first = &items[0];
    for col in [
        "id",
        "store",
        "resource_type",
        "key",
        "reason",
        "rule",
        "row_id",
        "client_id",
        "queued_at",
        "uploaded_at",
        "attempts",
        "last_error",
        "next_attempt_at",
        "state",
    ] {
        assert!(first.get(col).is_some(), "`{col}` in {first}");
    }
    assert_eq!(first["client_id"], "c-7");
    assert_eq!(first["reason"], "queue add");
    assert_eq!(first["state"], "pending");
    assert_eq!(first["resource_type"], "");
    let cdn: Vec<&Value> = items.iter().filter(|i| i["store"] == "cdn").collect();
    let types: BTreeSet<&str> = cdn
        .iter()
        .map(|i| i["resource_type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, BTreeSet::from(["image", "video"]));

    // Pages of one and of the maximum cover the same entries.
    let (ones, _) = all_pages(&api, "/api/queue", 1).await;
    assert_eq!(ones, items);
    let (whole, totals) = all_pages(&api, "/api/queue", 1000).await;
    assert_eq!(whole, items);
    assert_eq!(totals, vec![25]);

    let pending = api.get("/api/queue?state=pending").await;
    assert_eq!(pending.json["total"], 25);
    let done = api.get("/api/queue?state=done").await;
    assert_eq!(done.json["total"], 0);
    assert_eq!(done.json["items"], json!([]));
    assert_eq!(done.json["next_cursor"], Value::Null);
    for bad in [
        "/api/queue?state=bogus",
        "/api/queue?limit=0",
        "/api/queue?limit=1001",
        "/api/queue?cursor=abc",
    ] {
        let a = api.get(bad).await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_error_shape(&a);
    }
    api.close().await;
}
both_states!(async deletions_are_queued_and_the_queue_pages_by_cursor);

/// Retry and drop take `ids` or `all_failed`, exactly one; they change what they say and the
/// audit log records each change with the caller.
#[tokio::test]
async fn retry_and_drop_change_failed_entries() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = queue_setup(dir.path(), "");
    let media = dir.path().join("media");
    // A folder is not a file: its deletion fails, and with max_attempts = 1 for good.
    for d in ["d1", "d2", "d3"] {
        write_file(&media, &format!("{d}/x.jpg"), b"x", SystemTime::now());
    }
    let api = Api::open(&config).await;
    let q = api
        .post(
            "/api/deletions",
            json!({"store": "media", "keys": ["d1", "d2", "d3"]}),
        )
        .await;
    assert_eq!(q.status, 202, "{q:?}");
    let r = api
        .call("POST", "/api/cleanup/run", Some(&api.write), None)
        .await;
    assert_eq!(r.json["processed"], 3, "{r:?}");
    assert_eq!(r.json["failed"], 3, "{r:?}");
    assert_eq!(r.json["deleted"], 0);
    assert_eq!(r.json["remaining"], 0);
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(stats.json["stats"]["total_failed"], 3, "{stats:?}");
    let failed = api.get("/api/queue?state=failed").await;
    assert_eq!(failed.json["total"], 3);
    let ids: Vec<i64> = failed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert!(
        failed.json["items"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("folder")),
        "{failed:?}"
    );

    for body in [
        json!({}),
        json!({"ids": []}),
        json!({"ids": [ids[0]], "all_failed": true}),
        json!({"all_failed": false}),
        json!({"ids": "1"}),
        json!({"ids": [999_999]}),
    ] {
        for path in ["/api/queue/retry", "/api/queue/drop"] {
            let a = api.post(path, body.clone()).await;
            assert_eq!(a.status, 400, "{path} {body}: {a:?}");
            assert_error_shape(&a);
        }
    }

    let retried = api.post("/api/queue/retry", json!({"ids": [ids[0]]})).await;
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.json["success"], true);
    assert_eq!(retried.json["changed"], 1);
    assert_eq!(retried.json["retried"], 1);
    assert_eq!(api.get("/api/queue?state=pending").await.json["total"], 1);
    let dropped = api.post("/api/queue/drop", json!({"ids": [ids[0]]})).await;
    assert_eq!(dropped.status, 200, "{dropped:?}");
    assert_eq!(dropped.json["dropped"], 1);
    // Dropped already: neither can change it now.
    let again = api.post("/api/queue/drop", json!({"ids": [ids[0]]})).await;
    assert_eq!(again.status, 400, "{again:?}");
    assert_error_shape(&again);

    let all = api
        .post("/api/queue/retry", json!({"all_failed": true}))
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.json["retried"], 2);
    let r = api
        .call("POST", "/api/cleanup/run", Some(&api.write), None)
        .await;
    assert_eq!(r.json["failed"], 2, "{r:?}");
    let all = api
        .post("/api/queue/drop", json!({"all_failed": true}))
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.json["dropped"], 2);
    assert_eq!(all.json["changed"], 2);
    assert_eq!(api.get("/api/queue?state=dropped").await.json["total"], 3);
    assert_eq!(api.get("/api/queue?state=failed").await.json["total"], 0);
    assert!(media.join("d1/x.jpg").exists(), "nothing deleted");

    let audit = api.get("/api/audit?key=d1").await;
    let outcomes: Vec<&str> = audit.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes[0], "dropped", "newest first: {outcomes:?}");
    assert_eq!(outcomes[1], "retried");
    assert!(outcomes[2].starts_with("failed: "), "{outcomes:?}");
    assert_eq!(audit.json["total"], 3);
    assert_eq!(audit.json["items"][0]["actor"], "token:writer");
    api.close().await;
}

/// The audit log pages newest first with no line twice and none left out; `?key=` filters.
async fn audit_pages_newest_first(state: StateBackend) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = StateDb::create(state, dir.path());
    let config = queue_setup(dir.path(), &db.config_section());
    let media = dir.path().join("media");
    let keys: Vec<String> = (0..7).map(|i| format!("p/{i}.jpg")).collect();
    for k in &keys {
        write_file(&media, k, b"x", SystemTime::now());
    }
    let api = Api::open(&config).await;
    assert_eq!(api.get("/api/audit").await.json["total"], 0);
    api.post("/api/deletions", json!({"store": "media", "keys": keys}))
        .await;
    // One batch at a time: seven audit rows written in order.
    for _ in 0..7 {
        let r = api
            .call(
                "POST",
                "/api/cleanup/run?batch_size=1",
                Some(&api.write),
                None,
            )
            .await;
        assert_eq!(r.json["deleted"], 1, "{r:?}");
    }
    let (items, totals) = all_pages(&api, "/api/audit", 3).await;
    assert_eq!(totals, vec![7, 7, 7]);
    let ids: Vec<i64> = items
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 7);
    let audited: BTreeSet<String> = items
        .iter()
        .map(|i| i["key"].as_str().expect("key").to_string())
        .collect();
    assert_eq!(audited, keys.iter().cloned().collect::<BTreeSet<_>>());
    for col in [
        "time",
        "actor",
        "store",
        "resource_type",
        "key",
        "outcome",
        "detail",
        "queue_id",
    ] {
        assert!(items[0].get(col).is_some(), "`{col}` in {}", items[0]);
    }
    assert_eq!(items[0]["outcome"], "deleted");
    assert_eq!(items[0]["actor"], "token:writer");
    assert!(items[0]["queue_id"].is_i64());
    let one = api.get("/api/audit?key=p/3.jpg").await;
    assert_eq!(one.json["total"], 1);
    assert_eq!(one.json["items"][0]["key"], "p/3.jpg");
    let (filtered, _) = all_pages(&api, "/api/audit?key=p/3.jpg", 1).await;
    assert_eq!(filtered.len(), 1);
    for bad in ["/api/audit?limit=0", "/api/audit?cursor=x"] {
        let a = api.get(bad).await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_error_shape(&a);
    }
    api.close().await;
}
both_states!(async audit_pages_newest_first);

/// A read token may not POST to any of these (403, error shape), and changes nothing.
#[tokio::test]
async fn a_read_token_is_refused_on_every_post() {
    let dir = tempfile::tempdir().expect("tmp");
    let (config, media) = clips_setup(dir.path(), "").await;
    let api = Api::open(&config).await;
    let before = keys_under(&media);
    for (path, body) in [
        ("/api/cleanup/bulk", json!({"dry_run": false})),
        ("/api/cleanup/bulk/", json!({"dry_run": false})),
        ("/api/cleanup/run", json!({})),
        ("/api/cleanup/run/?batch_size=5", json!({})),
        (
            "/api/deletions",
            json!({"store": "media", "keys": ["other/x.jpg"]}),
        ),
        ("/api/queue/retry", json!({"all_failed": true})),
        ("/api/queue/drop", json!({"all_failed": true})),
    ] {
        let a = api.call("POST", path, Some(&api.read), Some(body)).await;
        assert_eq!(a.status, 403, "{path}: {a:?}");
        assert_error_shape(&a);
        let a = api.call("POST", path, None, None).await;
        assert_eq!(a.status, 401, "{path}: {a:?}");
        assert_error_shape(&a);
    }
    for path in [
        "/api/queue",
        "/api/audit",
        "/api/cleanup/stats",
        "/api/cleanup/stats/",
    ] {
        assert_eq!(api.get(path).await.status, 200, "{path}");
    }
    assert_eq!(keys_under(&media), before);
    assert_eq!(api.get("/api/queue").await.json["total"], 0);

    // The OpenAPI document lists every one of these operations.
    let doc = api.call("GET", "/api/openapi.json", None, None).await;
    let paths = &doc.json["paths"];
    for (path, method) in [
        ("/api/cleanup/bulk", "post"),
        ("/api/cleanup/bulk/{job_id}", "get"),
        ("/api/cleanup/run", "post"),
        ("/api/deletions", "post"),
        ("/api/queue", "get"),
        ("/api/queue/retry", "post"),
        ("/api/queue/drop", "post"),
        ("/api/audit", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} in the OpenAPI document"
        );
    }
    api.close().await;
}

/// A request that does not say `"dry_run": false` deletes nothing.
#[tokio::test]
async fn bulk_without_dry_run_is_a_dry_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let (config, media) = clips_setup(dir.path(), "").await;
    let api = Api::open(&config).await;
    let before = keys_under(&media);
    for body in [None, Some(json!({})), Some(json!({"retention_days": 0}))] {
        let a = api
            .call("POST", "/api/cleanup/bulk", Some(&api.write), body)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json["dry_run"], true, "{a:?}");
        assert!(a.json["deleted_count"].as_u64().unwrap() > 0, "{a:?}");
    }
    assert_eq!(keys_under(&media), before, "nothing deleted");
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(stats.json["stats"]["total_pending"], 0, "nothing queued");
    api.close().await;
}
