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
