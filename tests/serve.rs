//! `assetgc serve` as a whole (SPEC §8): tokens and scopes on every route, the error shape, the
//! body cap, the rate limit, and the story over a real socket.

mod common;

use common::api::{Api, assert_error_shape};

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("media")).unwrap();
    let path = dir.join("assetgc.toml");
    std::fs::write(&path, format!("[stores.media]\nurl = \"./media\"\n{extra}")).unwrap();
    path
}

#[tokio::test]
async fn health_needs_no_token_and_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::open(&config(dir.path(), "")).await;
    let h = api.call("GET", "/healthz", None, None).await;
    assert_eq!(h.status, 200);
    let s = api.call("GET", "/api/cleanup/stats", None, None).await;
    assert_eq!(s.status, 401);
    assert_error_shape(&s);
    let s = api.get("/api/cleanup/stats").await;
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(s.json["success"], true);
    api.close().await;
}

/// Every operation the OpenAPI document lists, with its path parameters filled in.
async fn operations(api: &Api) -> Vec<(String, String)> {
    let doc = api.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, 200, "{doc:?}");
    let mut ops = Vec::new();
    for (path, item) in doc.json["paths"].as_object().expect("paths") {
        let filled: String = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    if seg.contains("name") {
                        "no-such-job"
                    } else {
                        "999999"
                    }
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.push((method.to_uppercase(), filled.clone()));
            }
        }
    }
    assert!(!ops.is_empty());
    ops
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::open(&config(dir.path(), "[server]\nrate_limit = false\n")).await;
    let ops = operations(&api).await;
    for (method, path) in &ops {
        let body = (method != "GET").then(|| serde_json::json!({}));
        let none = api.call(method, path, None, body.clone()).await;
        assert_eq!(
            none.status, 401,
            "{method} {path} without a token: {none:?}"
        );
        assert_error_shape(&none);
        let bad = api
            .call(method, path, Some("agc_not-a-token"), body.clone())
            .await;
        assert_eq!(bad.status, 401, "{method} {path} with a bad token: {bad:?}");
        assert_error_shape(&bad);
        let read = api
            .call(method, path, Some(&api.read.clone()), body.clone())
            .await;
        if method == "GET" {
            assert!(
                read.status != 401 && read.status != 403,
                "{method} {path} with a read token: {read:?}"
            );
        } else {
            assert_eq!(
                read.status, 403,
                "{method} {path} with a read token: {read:?}"
            );
            assert_error_shape(&read);
        }
        let write = api.call(method, path, Some(&api.write.clone()), body).await;
        assert!(
            write.status != 401 && write.status != 403,
            "{method} {path} with a write token: {write:?}"
        );
        assert!(
            !write.status.is_server_error(),
            "{method} {path} with a write token: {write:?}"
        );
        if !write.status.is_success() {
            assert_error_shape(&write);
        }
    }
    // /metrics needs a read token unless metrics_public; /healthz none.
    assert_eq!(api.call("GET", "/metrics", None, None).await.status, 401);
    assert_eq!(api.get("/metrics").await.status, 200);
    assert_eq!(api.call("GET", "/healthz", None, None).await.status, 200);
    api.close().await;
}

#[tokio::test]
async fn bodies_past_one_mib_are_413_and_bad_json_is_400_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::open(&config(dir.path(), "[server]\nrate_limit = false\n")).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let a = api
        .call(
            "POST",
            "/api/deletions",
            Some(&api.write.clone()),
            Some(serde_json::json!({ "store": "media", "keys": [big] })),
        )
        .await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_error_shape(&a);
    use axum::body::Body;
    use tower::ServiceExt as _;
    let req = axum::http::Request::post("/api/deletions")
        .header("authorization", format!("Bearer {}", api.write))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["success"], false);
    assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()));
    let unknown = api.get("/api/no-such-thing").await;
    assert_eq!(unknown.status, 404);
    assert_error_shape(&unknown);
    api.close().await;
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::open(&config(
        dir.path(),
        "[server]\nrate_limit = { per_second = 1, burst = 3 }\n",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(api.get("/api/cleanup/stats").await.status, 200);
    }
    let limited = api.get("/api/cleanup/stats").await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_error_shape(&limited);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // The limit is per token: the write token still has its burst.
    assert_eq!(
        api.call("GET", "/api/cleanup/stats", Some(&api.write.clone()), None)
            .await
            .status,
        200
    );
    api.close().await;
}

#[tokio::test]
async fn tokens_listed_in_the_config_are_honoured_with_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let token = "a-token-from-the-config";
    let sha = hex::encode(assetgc::server::auth::digest(token));
    let api = Api::open(&config(
        dir.path(),
        &format!(
            "[server]\nrate_limit = false\ntokens = [ {{ name = \"ops\", sha256 = \"{}\", scope = \"read\" }} ]\n",
            sha.to_uppercase()
        ),
    ))
    .await;
    let ok = api
        .call("GET", "/api/cleanup/stats", Some(token), None)
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let post = api
        .call("POST", "/api/cleanup/run", Some(token), None)
        .await;
    assert_eq!(post.status, 403, "{post:?}");
    assert!(post.json["error"].as_str().unwrap().contains("ops"));
    api.close().await;
}

fn assetgc(dir: &std::path::Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_assetgc"));
    c.current_dir(dir).env_remove("ASSETGC_CONFIG");
    c
}

#[test]
fn token_new_prints_the_token_alone_once_and_keeps_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "");
    let out = assetgc(dir.path())
        .args(["token", "new", "--scope", "write", "--name", "deploy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone: {stdout:?}");
    let token = lines[0];
    assert!(token.len() >= 40);
    let db = rusqlite::Connection::open(dir.path().join("assetgc.db")).unwrap();
    let (name, sha, scope): (String, String, String) = db
        .query_row("SELECT name, sha256, scope FROM api_tokens", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(name, "deploy");
    assert_eq!(scope, "write");
    assert_eq!(sha, hex::encode(assetgc::server::auth::digest(token)));
    let raw: String = db
        .query_row(
            "SELECT group_concat(name || sha256 || scope) FROM api_tokens",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!raw.contains(token), "the token itself is never stored");
    // A second token is another token; the default scope is read.
    let second = assetgc(dir.path()).args(["token", "new"]).output().unwrap();
    let second = String::from_utf8(second.stdout).unwrap();
    assert_ne!(second.trim(), token);
    let scope: String = db
        .query_row(
            "SELECT scope FROM api_tokens ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(scope, "read");
}

#[test]
fn bad_server_and_jobs_sections_are_config_errors_naming_their_line() {
    let cases = [
        ("[server]\nlisten = \"nowhere\"\n", "listen"),
        ("[server]\nrate_limit = { per_second = 0 }\n", "per_second"),
        (
            "[server]\ntokens = [ { name = \"a\", sha256 = \"xyz\" } ]\n",
            "sha256",
        ),
        (
            "[server]\ntokens = [ { name = \"a\", sha256 = \"00\", scope = \"admin\" } ]\n",
            "sha256",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"every day\"\ncommand = \"scan\"\n",
            "cron",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"scan --dayz 7\"\n",
            "dayz",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"serve\"\n",
            "server",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ntz = \"Mars/Olympus\"\ncommand = \"scan\"\n",
            "time zone",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"scan\"\ntimeout = \"soon\"\n",
            "timeout",
        ),
        (
            "[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\n",
            "command",
        ),
    ];
    for (extra, word) in cases {
        let dir = tempfile::tempdir().unwrap();
        config(dir.path(), extra);
        let out = assetgc(dir.path()).arg("check").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("line "), "names the line: {err}");
        assert!(err.contains(word), "{extra}: says `{word}`: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_good_jobs_section_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "[[jobs]]\nname = \"daily-detect\"\nschedule = \"0 4 * * *\"\ntz = \"Europe/Paris\"\ncommand = \"scan --days 7 --notify\"\ntimeout = \"10m\"\n\n[[jobs]]\nname = \"fast\"\nschedule = \"*/5 * * * * *\"\ncommand = \"assetgc queue run --limit 10\"\n",
    );
    let cfg = assetgc::config::load(Some(&path)).unwrap().unwrap();
    assert_eq!(cfg.jobs.len(), 2);
    assert_eq!(cfg.jobs[0].args, ["scan", "--days", "7", "--notify"]);
    assert_eq!(cfg.jobs[0].timeout, std::time::Duration::from_secs(600));
    assert_eq!(cfg.jobs[0].tz, chrono_tz::Europe::Paris);
    assert_eq!(cfg.jobs[1].args, ["queue", "run", "--limit", "10"]);
    assert_eq!(cfg.jobs[1].timeout, assetgc::config::DEFAULT_JOB_TIMEOUT);
}

fn state_count(dir: &std::path::Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.join("assetgc.db")).unwrap();
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn sigterm_during_a_queue_run_loses_nothing_and_deletes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "quarantine = false\n[queue]\nbatch_size = 5\n[server]\nrate_limit = false\n",
    );
    let n = 1500;
    let keys: Vec<String> = (0..n).map(|i| format!("f/{i:05}.jpg")).collect();
    std::fs::create_dir_all(dir.path().join("media/f")).unwrap();
    for k in &keys {
        std::fs::write(dir.path().join("media").join(k), b"x").unwrap();
    }
    let out = assetgc(dir.path())
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // First life: stopped while the worker drains the queue.
    let mut server = common::api::ServeProcess::start(&path, &[]);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let status = server.terminate();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM queue WHERE state = 'claimed'"
        ),
        0,
        "the batch in hand was finished before the process ended"
    );
    let done = state_count(
        dir.path(),
        "SELECT COUNT(*) FROM queue WHERE state = 'done'",
    );
    let pending = state_count(
        dir.path(),
        "SELECT COUNT(*) FROM queue WHERE state = 'pending'",
    );
    assert_eq!(done + pending, n, "no entry lost");
    let left = keys
        .iter()
        .filter(|k| dir.path().join("media").join(k).exists())
        .count();
    assert_eq!(
        usize::try_from(pending).unwrap(),
        left,
        "pending entries are the files still there"
    );
    // Second life: the rest is worked, nothing twice.
    let mut server = common::api::ServeProcess::start(&path, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while state_count(
        dir.path(),
        "SELECT COUNT(*) FROM queue WHERE state <> 'done'",
    ) > 0
    {
        assert!(std::time::Instant::now() < deadline, "the queue drains");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(server.terminate().success());
    assert!(
        keys.iter()
            .all(|k| !dir.path().join("media").join(k).exists())
    );
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM audit WHERE outcome = 'deleted'"
        ),
        n,
        "one deletion per file"
    );
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM (SELECT key FROM audit WHERE outcome = 'deleted' GROUP BY key HAVING COUNT(*) > 1)"
        ),
        0
    );
    eprintln!("stopped after {done} of {n} deletions");
}

/// The whole story over a real socket: token → scan → poll → orphans → purge (dry, real) →
/// cleanup/run → stats → bulk cleanup (dry, real) → poll the bulk job until done.
#[tokio::test(flavor = "multi_thread")]
async fn the_story_over_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let media = d.join("media");
    for sub in ["uploads", "tmp"] {
        std::fs::create_dir_all(media.join(sub)).unwrap();
    }
    let used = ["uploads/a.jpg", "uploads/b.jpg"];
    let orphans = ["uploads/o1.jpg", "uploads/o2.jpg", "uploads/o3.jpg"];
    for k in used.iter().chain(&orphans) {
        std::fs::write(media.join(k), b"12345").unwrap();
    }
    let app_db = rusqlite::Connection::open(d.join("app.db")).unwrap();
    app_db
        .execute_batch(
            "CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT);
             INSERT INTO photos (path) VALUES ('uploads/a.jpg'), ('uploads/b.jpg'), ('uploads/gone.jpg');",
        )
        .unwrap();
    drop(app_db);
    let path = d.join("assetgc.toml");
    std::fs::write(
        &path,
        r#"
[stores.media]
url = "./media"
min_age = "0s"
quarantine = false

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "photos"
store = "media"
query = "SELECT id, path AS key FROM photos"

[[policies]]
name = "tmp"
store = "media"
prefix = "tmp/"
older_than = "0s"

[server]
rate_limit = false
"#,
    )
    .unwrap();
    let token = assetgc(d)
        .args(["token", "new", "--scope", "write"])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    // The worker stays off: this story works the queue through POST /api/cleanup/run.
    let mut server = common::api::ServeProcess::start(&path, &["--no-worker"]);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let call = |method: reqwest::Method, p: &str, body: Option<serde_json::Value>| {
        let mut r = http
            .request(method, format!("{base}{p}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.expect("answer");
            let status = resp.status().as_u16();
            let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            (status, json)
        }
    };
    use reqwest::Method;
    // A scan, polled until complete.
    let (st, started) = call(
        Method::POST,
        "/api/scans",
        Some(serde_json::json!({"all": true})),
    )
    .await;
    assert_eq!(st, 202, "{started}");
    let id = started["scan_id"].as_i64().expect("scan_id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let scan = loop {
        let (st, s) = call(Method::GET, &format!("/api/scans/{id}"), None).await;
        assert_eq!(st, 200, "{s}");
        if s["state"] != "running" {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the scan finishes");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(scan["state"], "complete", "{scan}");
    assert_eq!(scan["summary"]["orphans"], 3, "{scan}");
    assert_eq!(scan["summary"]["missing"], 1, "{scan}");
    // Orphans, two a page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = match &cursor {
            Some(c) => format!("/api/scans/{id}/orphans?limit=2&cursor={c}"),
            None => format!("/api/scans/{id}/orphans?limit=2"),
        };
        let (st, page) = call(Method::GET, &p, None).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(page["total"], 3);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["key"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = orphans.iter().map(ToString::to_string).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
    // Purge: a dry run deletes nothing, a real one queues the three.
    let (st, preview) = call(
        Method::POST,
        &format!("/api/scans/{id}/purge"),
        Some(serde_json::json!({"filter": {"store": "media"}})),
    )
    .await;
    assert_eq!(st, 200, "{preview}");
    assert!(
        orphans.iter().all(|k| media.join(k).exists()),
        "a dry run deletes nothing"
    );
    let (st, queued) = call(
        Method::POST,
        &format!("/api/scans/{id}/purge"),
        Some(serde_json::json!({"filter": {"store": "media"}, "dry_run": false})),
    )
    .await;
    assert_eq!(st, 202, "{queued}");
    assert_eq!(queued["queued"], 3, "{queued}");
    let (_, stats) = call(Method::GET, "/api/cleanup/stats", None).await;
    assert_eq!(stats["stats"]["total_pending"], 3, "{stats}");
    // One batch works them.
    let (st, run) = call(Method::POST, "/api/cleanup/run/?batch_size=100", None).await;
    assert_eq!(st, 200, "{run}");
    assert_eq!(run["processed"], 3, "{run}");
    assert_eq!(run["deleted"], 3, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert_eq!(run["remaining"], 0, "{run}");
    assert!(orphans.iter().all(|k| !media.join(k).exists()));
    assert!(used.iter().all(|k| media.join(k).exists()));
    let (st, stats) = call(Method::GET, "/api/cleanup/stats/", None).await;
    assert_eq!(st, 200);
    assert_eq!(stats["success"], true);
    assert_eq!(stats["stats"]["total_pending"], 0, "{stats}");
    assert_eq!(stats["stats"]["total_failed"], 0, "{stats}");
    // A bulk cleanup of tmp/: dry run, then real, polled until done.
    for k in ["tmp/x.bin", "tmp/y.bin"] {
        std::fs::write(media.join(k), vec![0u8; 1024 * 1024]).unwrap();
    }
    let (st, dry) = call(
        Method::POST,
        "/api/cleanup/bulk",
        Some(serde_json::json!({"dry_run": true, "policy": "tmp"})),
    )
    .await;
    assert_eq!(st, 200, "{dry}");
    assert_eq!(dry["success"], true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deleted_count"], 2, "{dry}");
    assert_eq!(dry["deleted_size_mb"], 2.0, "{dry}");
    assert_eq!(dry["total_files_scanned"], 2, "{dry}");
    assert!(media.join("tmp/x.bin").exists());
    let (st, real) = call(
        Method::POST,
        "/api/cleanup/bulk/",
        Some(serde_json::json!({"dry_run": false, "policy": "tmp", "retention_days": 0})),
    )
    .await;
    assert!(st == 200 || st == 202, "{real}");
    let job = real["job_id"].as_i64().expect("job_id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let (st, j) = call(Method::GET, &format!("/api/cleanup/bulk/{job}"), None).await;
        assert_eq!(st, 200, "{j}");
        if j["state"] == "done" {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bulk job finishes: {j}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done["deleted_count"], 2, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["dropped_referenced"], 0, "{done}");
    assert!(!media.join("tmp/x.bin").exists() && !media.join("tmp/y.bin").exists());
    assert!(server.terminate().success());
}

/// Two `serve` processes on one PostgreSQL state database share the queue: every entry is
/// worked once, by one of them.
#[test]
fn two_instances_on_postgres_state_share_the_queue_without_doing_anything_twice() {
    use common::{StateBackend, StateDb};
    if !StateBackend::Postgres.available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Postgres, dir.path());
    std::fs::create_dir_all(dir.path().join("media/f")).unwrap();
    let path = dir.path().join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            "{}[stores.media]\nurl = \"./media\"\nquarantine = false\n[queue]\nbatch_size = 20\n[server]\nrate_limit = false\n",
            state.config_section()
        ),
    )
    .unwrap();
    let n = 2000;
    let keys: Vec<String> = (0..n).map(|i| format!("f/{i:05}.jpg")).collect();
    for k in &keys {
        std::fs::write(dir.path().join("media").join(k), b"x").unwrap();
    }
    let out = assetgc(dir.path())
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut a = common::api::ServeProcess::start(&path, &[]);
    let mut b = common::api::ServeProcess::start(&path, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while state.count("SELECT COUNT(*) FROM queue WHERE state <> 'done'", &[]) > 0 {
        assert!(std::time::Instant::now() < deadline, "the queue drains");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert!(
        keys.iter()
            .all(|k| !dir.path().join("media").join(k).exists())
    );
    assert_eq!(
        state.count("SELECT COUNT(*) FROM audit WHERE outcome = 'deleted'", &[]),
        i64::from(n)
    );
    assert_eq!(
        state.count(
            "SELECT COUNT(*) FROM (SELECT key FROM audit WHERE outcome = 'deleted' GROUP BY key HAVING COUNT(*) > 1) AS twice",
            &[]
        ),
        0
    );
}

/// `--log-format json`: every line serve writes on stderr is one JSON object, the "listening"
/// line and the per-request lines included.
#[test]
fn json_logs_are_one_object_a_line() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "[server]\nrate_limit = false\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
        .arg("--config")
        .arg(&path)
        .args([
            "-v",
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        seen.push(v.clone());
        if v["fields"]["message"] == "listening" {
            address = v["fields"]["address"].as_str().map(ToString::to_string);
            break;
        }
    }
    let address = address.expect("a listening line");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("{address}/healthz"))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for line in lines {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        seen.push(v);
    }
    assert!(child.wait().unwrap().success());
    assert!(
        seen.iter().any(|v| v.to_string().contains("/healthz")),
        "a line for the request: {seen:?}"
    );
}

/// The README's three jobs load as written, and their next runs are where a reader expects.
#[test]
fn the_readme_jobs_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &common::readme_example("jobs"));
    let cfg = assetgc::config::load(Some(&path)).unwrap().unwrap();
    let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["daily-expiry", "daily-detect", "weekly-deep-scan"]);
    let monday = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let next = assetgc::jobs::next_after(&cfg.jobs[2], monday).unwrap();
    // Sunday 05:00 in Paris (UTC+1 in December) is 04:00 UTC.
    assert_eq!(next.to_rfc3339(), "2026-12-13T04:00:00+00:00");
    let aliased = config(
        dir.path(),
        "[[jobs]]\nname = \"a\"\nschedule = \"@daily\"\ncommand = \"check\"\n",
    );
    assert!(assetgc::config::load(Some(&aliased)).is_ok());
}

/// A config whose one reference query runs for minutes: a scan of it stays `running`.
fn slow_scan_config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("media")).unwrap();
    rusqlite::Connection::open(dir.join("app.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (k TEXT);")
        .unwrap();
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        r#"
[stores.media]
url = "./media"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "slow"
store = "media"
query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT 'k' AS key FROM c WHERE x = 0"

[server]
rate_limit = false
"#,
    )
    .unwrap();
    path
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_scan_left_running_by_a_killed_process_is_closed_when_serve_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_scan_config(dir.path());
    let mut scan = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
        .arg("--config")
        .arg(&path)
        .args(["scan", "--all"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the scan is recorded", 30, || {
        dir.path().join("assetgc.db").exists()
            && std::panic::catch_unwind(|| {
                state_count(
                    dir.path(),
                    "SELECT COUNT(*) FROM scans WHERE state = 'running'",
                )
            })
            .is_ok_and(|n| n == 1)
    });
    scan.kill().unwrap();
    scan.wait().unwrap();
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM scans WHERE state = 'running'"
        ),
        1
    );
    let mut server = common::api::ServeProcess::start(&path, &["--no-worker", "--no-scheduler"]);
    assert_eq!(
        state_count(
            dir.path(),
            "SELECT COUNT(*) FROM scans WHERE state = 'failed'"
        ),
        1,
        "closed before the server listens"
    );
    let status = server.terminate();
    assert!(
        status.success(),
        "{status:?}: {}",
        server.stderr.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_server_records_its_unfinished_scan_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_scan_config(dir.path());
    let token = assetgc(dir.path())
        .args(["token", "new", "--scope", "write"])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let mut server = common::api::ServeProcess::start(&path, &["--no-worker", "--no-scheduler"]);
    let http = reqwest::Client::new();
    // No Content-Type: the body is read all the same (an unknown store is a 400, not a scan).
    let bad = http
        .post(format!("{}/api/scans", server.base))
        .bearer_auth(&token)
        .body(r#"{"stores": ["nope"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let started: serde_json::Value = http
        .post(format!("{}/api/scans", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["scan_id"].as_i64().expect("scan_id");
    let begun = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        begun.elapsed() < std::time::Duration::from_secs(45),
        "the grace is bounded: {:?}",
        begun.elapsed()
    );
    let db = rusqlite::Connection::open(dir.path().join("assetgc.db")).unwrap();
    let (state, warnings): (String, String) = db
        .query_row(
            "SELECT state, warnings FROM scans WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "failed");
    assert!(warnings.contains("shut down"), "{warnings}");
}

#[test]
fn token_names_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "");
    let first = assetgc(dir.path())
        .args(["token", "new", "--name", "w", "--scope", "write"])
        .output()
        .unwrap();
    assert!(first.status.success());
    let again = assetgc(dir.path())
        .args(["token", "new", "--name", "w"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(again.stdout.is_empty(), "no token printed");
    let err = String::from_utf8(again.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`w`"), "{err}");
}

#[test]
fn a_clean_run_left_running_by_a_killed_process_is_closed_when_serve_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_scan_config(dir.path());
    // A policy whose keep query runs for minutes: the run stays `running` while it plans.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "[server]",
        "[[policies]]\nname = \"all\"\nstore = \"media\"\nolder_than = \"0s\"\nkeep_query = { database = \"app\", sql = \"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT 'k' AS key FROM c WHERE x = 0\" }\n\n[server]",
    );
    std::fs::write(&path, text).unwrap();
    let mut clean = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
        .arg("--config")
        .arg(&path)
        .args(["clean"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the clean run is recorded", 30, || {
        dir.path().join("assetgc.db").exists()
            && std::panic::catch_unwind(|| {
                state_count(
                    dir.path(),
                    "SELECT COUNT(*) FROM cleanups WHERE state = 'running'",
                )
            })
            .is_ok_and(|n| n == 1)
    });
    clean.kill().unwrap();
    clean.wait().unwrap();
    let mut server = common::api::ServeProcess::start(&path, &["--no-worker", "--no-scheduler"]);
    let db = rusqlite::Connection::open(dir.path().join("assetgc.db")).unwrap();
    let (state, summary): (String, String) = db
        .query_row("SELECT state, summary FROM cleanups", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(state, "done");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["success"], false, "{summary}");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .contains("ended before it finished"),
        "{summary}"
    );
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
