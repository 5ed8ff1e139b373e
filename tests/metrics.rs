//! `GET /metrics` (SPEC §8): a read token unless `metrics_public`; the text gives this server's
//! requests by route template and status, and the state database's scans, queue, audit log and
//! job runs — checked by value, and read back by Prometheus' own Python parser.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assetgc::domain::ObjectId;
use assetgc::domain::queue::{NewEntry, Reason};
use assetgc::state::{AuditLog as _, QueueStore as _};
use common::api::{Api, assert_error_shape};
use common::{StateBackend, StateDb};

/// A folder store with one referenced file, one orphan and one missing file, its app database,
/// and `[server]` with `server_lines`; a scan of it is recorded. Answers the config's path.
fn fixture(dir: &Path, state: &StateDb, server_lines: &str) -> PathBuf {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
    common::write_file(dir, "media/posts/a.jpg", b"aaaa", old);
    common::write_file(dir, "media/orphans/old.jpg", b"orphan!", old);
    let app_db = dir.join("app.db");
    let conn = rusqlite::Connection::open(&app_db).expect("app db");
    conn.execute_batch(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, image TEXT);
         INSERT INTO posts VALUES (1, 'posts/a.jpg'), (2, 'posts/gone.jpg');",
    )
    .expect("app rows");
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"{state}
[stores.media]
url = "./media"
min_age = "1h"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "posts"
query = "SELECT id, image AS key FROM posts"

[server]
rate_limit = false
{server_lines}
"#,
            state = state.config_section()
        ),
    )
    .expect("config");
    let scan = common::assetgc(&config, &["scan", "--all"]);
    assert_eq!(scan.code, 0, "{scan:?}");
    config
}

/// Samples of the text format, by `name{labels}` as written (labels in their order).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no `{series}` among {:#?}", s.keys().collect::<Vec<_>>()))
}

fn entry(key: &str) -> NewEntry {
    let now = chrono::Utc::now();
    NewEntry {
        object: ObjectId::new("media", assetgc::domain::ResourceType::Plain, key),
        reason: Reason::Add,
        rule: String::new(),
        row_id: String::new(),
        client_id: String::new(),
        scan_id: None,
        uploaded_at: None,
        // Not due for an hour: nothing takes it while the test looks.
        next_attempt_at: now + chrono::TimeDelta::hours(1),
        original_key: None,
    }
}

/// Requests, a queued entry, audit rows and job runs, then one scrape: every figure as made.
async fn figures_on(backend: StateBackend) {
    if !backend.available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(backend, dir.path());
    let config = fixture(dir.path(), &state, "");
    let api = Api::open(&config).await;

    for _ in 0..3 {
        assert_eq!(api.get("/api/cleanup/stats").await.status, 200);
    }
    assert_eq!(api.get("/api/cleanup/stats/").await.status, 200);
    let refused = api.call("GET", "/api/cleanup/stats", None, None).await;
    assert_eq!(refused.status, 401);
    let unknown = api.get("/secret-key-path/agc_abc/x.jpg").await;
    assert_eq!(unknown.status, 404);

    api.app
        .state
        .enqueue("test", &[entry("orphans/old.jpg")])
        .await
        .expect("enqueue");
    let object = ObjectId::new("media", assetgc::domain::ResourceType::Plain, "x/y.jpg");
    for outcome in [
        "deleted",
        "deleted",
        "failed: HTTP 500 from the store",
        "dropped",
    ] {
        api.app
            .state
            .audit_one("test", &object, outcome, None)
            .await
            .expect("audit row");
    }
    for (job, status, started, finished) in [
        (
            "nightly",
            "succeeded",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:01:30Z"),
        ),
        (
            "nightly",
            "failed",
            "2026-01-02T00:00:00Z",
            Some("2026-01-02T00:00:10Z"),
        ),
        ("nightly", "running", "2026-01-03T00:00:00Z", None),
    ] {
        match finished {
            Some(f) => state.query(
                "INSERT INTO job_runs (job, trigger, holder, command, started_at, finished_at, status) VALUES ($1, 'manual', 'test', 'scan --all', $2, $3, $4)",
                &[job, started, f, status],
            ),
            None => state.query(
                "INSERT INTO job_runs (job, trigger, holder, command, started_at, status) VALUES ($1, 'manual', 'test', 'scan --all', $2, $3)",
                &[job, started, status],
            ),
        };
    }

    let scrape = api.get("/metrics").await;
    assert_eq!(scrape.status, 200, "{scrape:?}");
    let content_type = scrape.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = &scrape.text;
    assert!(
        !text.contains("secret-key-path") && !text.contains("agc_abc"),
        "{text}"
    );
    assert!(!text.contains(&api.read) && !text.contains(&api.write));
    let s = samples(text);

    let req = |route: &str, status: u16| {
        format!(
            "assetgc_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"{status}\"}}"
        )
    };
    assert!((value(&s, &req("/api/cleanup/stats", 200)) - 3.0).abs() < f64::EPSILON);
    assert!((value(&s, &req("/api/cleanup/stats/", 200)) - 1.0).abs() < f64::EPSILON);
    assert!((value(&s, &req("/api/cleanup/stats", 401)) - 1.0).abs() < f64::EPSILON);
    assert!((value(&s, &req("unmatched", 404)) - 1.0).abs() < f64::EPSILON);
    let count = value(
        &s,
        "assetgc_http_request_duration_seconds_count{method=\"GET\",route=\"/api/cleanup/stats\"}",
    );
    assert!((count - 4.0).abs() < f64::EPSILON, "{count}");
    let inf = value(
        &s,
        "assetgc_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/cleanup/stats\",le=\"+Inf\"}",
    );
    assert!((inf - 4.0).abs() < f64::EPSILON, "{inf}");

    let eq = |series: &str, want: f64| {
        let got = value(&s, series);
        assert!((got - want).abs() < 1e-9, "{series} is {got}, not {want}");
    };
    eq("assetgc_state_up", 1.0);
    eq("assetgc_scans{state=\"complete\"}", 1.0);
    eq("assetgc_scans{state=\"failed\"}", 0.0);
    eq("assetgc_latest_scan_orphans{store=\"media\"}", 1.0);
    eq("assetgc_latest_scan_objects{store=\"media\"}", 2.0);
    eq("assetgc_latest_scan_orphan_bytes{store=\"media\"}", 7.0);
    eq("assetgc_latest_scan_missing", 1.0);
    eq("assetgc_queue_entries{state=\"pending\"}", 1.0);
    eq("assetgc_queue_entries{state=\"failed\"}", 0.0);
    eq("assetgc_deletions_total{outcome=\"deleted\"}", 2.0);
    eq("assetgc_deletions_total{outcome=\"failed\"}", 1.0);
    eq("assetgc_deletions_total{outcome=\"dropped\"}", 1.0);
    eq(
        "assetgc_job_runs{job=\"nightly\",status=\"succeeded\"}",
        1.0,
    );
    eq("assetgc_job_runs{job=\"nightly\",status=\"failed\"}", 1.0);
    eq("assetgc_job_runs{job=\"nightly\",status=\"running\"}", 1.0);
    eq(
        "assetgc_job_run_duration_seconds_count{job=\"nightly\"}",
        2.0,
    );
    eq(
        "assetgc_job_run_duration_seconds_sum{job=\"nightly\"}",
        100.0,
    );
    for family in [
        "assetgc_http_requests_total counter",
        "assetgc_http_request_duration_seconds histogram",
        "assetgc_queue_entries gauge",
        "assetgc_deletions_total counter",
        "assetgc_job_run_duration_seconds summary",
        "assetgc_api_calls_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}: {text}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(name.starts_with("assetgc_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    api.close().await;
}

#[tokio::test]
async fn figures_of_requests_and_the_state_database_on_sqlite() {
    figures_on(StateBackend::Sqlite).await;
}

#[tokio::test]
async fn figures_of_requests_and_the_state_database_on_postgres() {
    figures_on(StateBackend::Postgres).await;
}

#[tokio::test]
async fn a_read_token_is_needed_unless_metrics_are_public() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = fixture(dir.path(), &state, "");
    let api = Api::open(&config).await;
    let none = api.call("GET", "/metrics", None, None).await;
    assert_eq!(none.status, 401);
    assert_error_shape(&none);
    let bad = api.call("GET", "/metrics", Some("agc_nope"), None).await;
    assert_eq!(bad.status, 401);
    assert_error_shape(&bad);
    assert_eq!(api.get("/metrics").await.status, 200);
    let write = api.call("GET", "/metrics", Some(&api.write), None).await;
    assert_eq!(write.status, 200);
    api.close().await;

    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = fixture(dir.path(), &state, "metrics_public = true");
    let api = Api::open(&config).await;
    let open = api.call("GET", "/metrics", None, None).await;
    assert_eq!(open.status, 200, "{open:?}");
    assert!(open.text.contains("assetgc_queue_entries"));
    // The API itself still needs a token.
    assert_eq!(
        api.call("GET", "/api/cleanup/stats", None, None)
            .await
            .status,
        401
    );
    api.close().await;
}

/// Reads the text with `prometheus_client.parser.text_string_to_metric_families` and prints
/// every family as JSON: name, type, help and samples.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;

/// Prometheus' own parser (PyPI `prometheus_client`) reads the whole scrape: every family typed
/// and described, and the figures it reads are ours.
#[tokio::test]
async fn prometheus_client_parses_the_scrape() {
    let Some(python) =
        common::require_service("a Python with prometheus_client", "ASSETGC_TEST_PYTHON")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = fixture(dir.path(), &state, "");
    let api = Api::open(&config).await;
    assert_eq!(api.get("/api/cleanup/stats").await.status, 200);
    assert_eq!(api.get("/nope").await.status, 404);
    api.app
        .state
        .enqueue("test", &[entry("orphans/old.jpg")])
        .await
        .expect("enqueue");
    let scrape = api.get("/metrics").await;
    assert_eq!(scrape.status, 200);
    api.close().await;

    let mut child = std::process::Command::new(&python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(scrape.text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse the scrape: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        scrape.text
    );
    let families: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_name: BTreeMap<&str, &serde_json::Value> = families
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f))
        .collect();
    for f in &families {
        assert_ne!(f["type"], "unknown", "{f}");
        assert!(!f["help"].as_str().unwrap_or_default().is_empty(), "{f}");
    }
    let find = |family: &str, sample: &str, labels: serde_json::Value| -> f64 {
        let f = by_name
            .get(family)
            .unwrap_or_else(|| panic!("no family {family} in {:?}", by_name.keys()));
        f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == sample && s["labels"] == labels)
            .unwrap_or_else(|| panic!("no {sample} {labels} in {f}"))["value"]
            .as_f64()
            .unwrap()
    };
    // The parser names a counter's family without `_total`, and its samples with it.
    assert_eq!(by_name["assetgc_http_requests"]["type"], "counter");
    let ok = find(
        "assetgc_http_requests",
        "assetgc_http_requests_total",
        serde_json::json!({"method": "GET", "route": "/api/cleanup/stats", "status": "200"}),
    );
    assert!((ok - 1.0).abs() < f64::EPSILON);
    assert_eq!(
        by_name["assetgc_http_request_duration_seconds"]["type"],
        "histogram"
    );
    let pending = find(
        "assetgc_queue_entries",
        "assetgc_queue_entries",
        serde_json::json!({"state": "pending"}),
    );
    assert!((pending - 1.0).abs() < f64::EPSILON);
    let orphans = find(
        "assetgc_latest_scan_orphans",
        "assetgc_latest_scan_orphans",
        serde_json::json!({"store": "media"}),
    );
    assert!((orphans - 1.0).abs() < f64::EPSILON);
    assert_eq!(
        by_name["assetgc_job_run_duration_seconds"]["type"],
        "summary"
    );
}
