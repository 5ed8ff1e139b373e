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
        .query_row("SELECT group_concat(name || sha256 || scope) FROM api_tokens", [], |r| {
            r.get(0)
        })
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
        ("[server]\ntokens = [ { name = \"a\", sha256 = \"xyz\" } ]\n", "sha256"),
        ("[server]\ntokens = [ { name = \"a\", sha256 = \"00\", scope = \"admin\" } ]\n", "sha256"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"every day\"\ncommand = \"scan\"\n", "cron"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"scan --dayz 7\"\n", "dayz"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"serve\"\n", "server"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ntz = \"Mars/Olympus\"\ncommand = \"scan\"\n", "time zone"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\ncommand = \"scan\"\ntimeout = \"soon\"\n", "timeout"),
        ("[[jobs]]\nname = \"j\"\nschedule = \"0 4 * * *\"\n", "command"),
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
