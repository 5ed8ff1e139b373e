//! The scan story with its files in S3 (moto) instead of a folder: tricky keys, every key format,
//! soft-deleted and missing rows, a store prefix that is a hard boundary; the same through a
//! Cloudcube URL whose cube is the prefix; and a server that stops answering midway through a
//! listing, which makes the scan incomplete (exit 4).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::s3::Bucket;
use common::{Backend, TestDb, assetgc, parse_csv_report};

async fn refs_db(dir: &Path) -> TestDb {
    let db = TestDb::create(Backend::Sqlite, dir)
        .await
        .expect("SQLite always runs");
    db.execute(&[
        "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT, deleted_at TEXT)",
        "INSERT INTO files VALUES
            (1, 'profile_pics/alice.jpg', NULL),
            (2, '/profile_pics/bob smith.jpg', NULL),
            (3, './café/naïve résumé.jpg', NULL),
            (4, '.hidden/x.png', NULL),
            (5, 'deleted/kept.jpg', '2026-01-01'),
            (6, 'profile_pics/gone.jpg', NULL),
            (7, 'deleted/gone.jpg', '2026-01-01'),
            (8, NULL, NULL),
            (9, '', NULL)",
        "CREATE TABLE avatars (id INTEGER PRIMARY KEY, url TEXT)",
        "INSERT INTO avatars VALUES
            (1, 'https://cdn.example.com/media/100%25%20sure%2Bplus%23hash.png?v=2'),
            (2, 'https://other.example.com/media/uploads/tmp-1.jpg')",
        "CREATE TABLE articles (id INTEGER PRIMARY KEY, body TEXT)",
        "INSERT INTO articles VALUES
            (1, '<p><img src=\"https://cdn.example.com/media/a/b/c/d/e/f.jpg\"> and <img src=\"https://cdn.example.com/media/body/gone.png\"></p>')",
    ])
    .await;
    db
}

fn config(dir: &Path, store_url: &str, endpoint: &str, db_url: &str) -> std::path::PathBuf {
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            r#"[stores.media]
url = "{store_url}"
endpoint = "{endpoint}"
# moto checks no signature, but refuses unsigned look-ups: any key pair does.
access_key_id = "testing"
secret_access_key = "testing"
min_age = "0s"
ignore = ["static/**"]
public_url = "https://cdn.example.com/media"

[databases.app]
url = "{db_url}"

[[references]]
name = "files"
query = "SELECT id, path AS key, CASE WHEN deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status FROM files"

[[references]]
name = "avatars"
query = "SELECT id, url AS key FROM avatars"
key_format = "url"

[[references]]
name = "bodies"
query = "SELECT id, body AS key FROM articles"
key_format = {{ regex = 'src="(?P<key>[^"]+)"' }}
"#
        ),
    )
    .unwrap();
    path
}

const INSIDE: &[&str] = &[
    "profile_pics/alice.jpg",
    "profile_pics/bob smith.jpg",
    "café/naïve résumé.jpg",
    "100% sure+plus#hash.png",
    ".hidden/x.png",
    "a/b/c/d/e/f.jpg",
    "deleted/kept.jpg",
    "static/logo.svg",
    "uploads/tmp-1.jpg",
    "uploads/tmp 2.jpg",
    "ünïcode/orphan.png",
    "-dash.jpg",
];

fn expected_orphans() -> BTreeSet<String> {
    [
        "uploads/tmp-1.jpg",
        "uploads/tmp 2.jpg",
        "ünïcode/orphan.png",
        "-dash.jpg",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn expected_missing() -> Vec<(String, String, String)> {
    [
        ("files", "profile_pics/gone.jpg", "ACTIVE"),
        ("bodies", "body/gone.png", "ACTIVE"),
        ("files", "deleted/gone.jpg", "DELETED"),
    ]
    .iter()
    .map(|(r, k, s)| ((*r).to_string(), (*k).to_string(), (*s).to_string()))
    .collect()
}

fn scan(config: &Path, out: &Path) -> (common::Run, common::CsvReport) {
    let run = assetgc(
        config,
        &["scan", "--all", "--output", out.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("{e}: {}{}", run.stdout, run.stderr));
    (run, parse_csv_report(&text))
}

fn orphan_keys(r: &common::CsvReport) -> BTreeSet<String> {
    r.orphans.iter().map(|o| o["key"].clone()).collect()
}

fn missing_rows(r: &common::CsvReport) -> Vec<(String, String, String)> {
    r.missing
        .iter()
        .map(|m| {
            (
                m["reference"].clone(),
                m["key"].clone(),
                m["status"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn story_s3() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for key in INSIDE {
        bucket.put(&format!("app/media/{key}"), b"object").await;
    }
    // Beside the prefix: never listed, never orphans, never found for a reference.
    for key in [
        "other/x.jpg",
        "app/media2/uploads/tmp-1.jpg",
        "app/mediax.jpg",
        "app/profile_pics/gone.jpg",
    ] {
        bucket.put(key, b"outside").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = refs_db(dir.path()).await;
    let cfg = config(
        dir.path(),
        &format!("s3://{}/app/media", bucket.name),
        &endpoint,
        &db.url,
    );
    let (run, report) = scan(&cfg, &dir.path().join("r.csv"));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(orphan_keys(&report), expected_orphans());
    assert_eq!(missing_rows(&report), expected_missing());
    for o in &report.orphans {
        assert_eq!(o["store"], "media");
        assert_eq!(o["size_bytes"], "6");
        assert!(!o["uploaded_at"].is_empty());
    }
}

#[tokio::test]
async fn story_through_a_cloudcube_url_stays_inside_the_cube() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create_named(&endpoint, "cloud-cube-us2").await;
    let cube = common::unique_name("cube");
    let neighbour = format!("{cube}x");
    for key in INSIDE {
        bucket.put(&format!("{cube}/{key}"), b"object").await;
        // Another cube holding the same names, and one whose name only starts like ours.
        bucket.put(&format!("{neighbour}/{key}"), b"object").await;
    }
    bucket.put("profile_pics/gone.jpg", b"bucket root").await;
    let dir = tempfile::tempdir().unwrap();
    let db = refs_db(dir.path()).await;
    let cfg = config(
        dir.path(),
        &format!("https://cloud-cube-us2.s3.amazonaws.com/{cube}"),
        &endpoint,
        &db.url,
    );
    let (run, report) = scan(&cfg, &dir.path().join("r.csv"));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(orphan_keys(&report), expected_orphans());
    assert_eq!(missing_rows(&report), expected_missing());
    let json = assetgc(&cfg, &["scan", "--all", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["summary"]["objects_scanned"], INSIDE.len());
}

/// A TCP proxy that passes `limit` bytes of answers, then drops every connection and refuses new
/// ones: a server that stops answering midway.
async fn dying_proxy(upstream: String, limit: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if dead.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                break;
            };
            let (sent, dead) = (sent.clone(), dead.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || dead.load(Ordering::SeqCst) {
                            break;
                        }
                        if sent.fetch_add(n, Ordering::SeqCst) + n > limit {
                            dead.store(true, Ordering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_midway_makes_the_scan_incomplete() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Arc::new(Bucket::create(&endpoint).await);
    let mut puts = Vec::new();
    for i in 0..2_500 {
        let b = bucket.clone();
        puts.push(tokio::spawn(async move {
            b.put(&format!("m/f{i:05}.jpg"), b"x").await
        }));
        if puts.len() == 32 {
            for p in puts.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in puts {
        p.await.unwrap();
    }
    let proxy = dying_proxy(endpoint.trim_start_matches("http://").to_string(), 150_000).await;
    let dir = tempfile::tempdir().unwrap();
    let db = refs_db(dir.path()).await;
    let cfg = config(
        dir.path(),
        &format!("s3://{}/m", bucket.name),
        &proxy,
        &db.url,
    );
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("min_age = \"0s\"", "min_age = \"0s\"\nlist_concurrency = 1"),
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let run = assetgc(
        &cfg,
        &["-q", "scan", "--all", "--output", out.to_str().unwrap()],
    );
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("INCOMPLETE"), "{}", run.stdout);
    let report = parse_csv_report(&std::fs::read_to_string(&out).unwrap());
    assert!(
        report.orphans.len() < 2_500,
        "a listing that ended early reports only what it saw"
    );
}

/// A server that refuses every request with S3's 403 `InvalidAccessKeyId`.
async fn refusing_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65_536];
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>";
                // One answer per request read; keep-alive clients send several.
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let answer = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_are_exit_1_naming_the_store_without_the_secret() {
    let endpoint = refusing_server().await;
    let dir = tempfile::tempdir().unwrap();
    let db = refs_db(dir.path()).await;
    let cfg = config(dir.path(), "s3://some-bucket/app", &endpoint, &db.url);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "secret_access_key = \"testing\"",
            "secret_access_key = \"hunter2secret\"",
        ),
    )
    .unwrap();
    for args in [&["scan", "--all"][..], &["check"][..]] {
        let run = assetgc(&cfg, args);
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("hunter2secret"), "{all}");
        assert!(
            all.contains("media") && all.contains("InvalidAccessKeyId"),
            "{all}"
        );
        if args[0] == "scan" {
            assert_eq!(
                run.stderr.trim().lines().count(),
                1,
                "one line: {}",
                run.stderr
            );
        }
    }
}
