//! Exit codes of a deleting run against a store that answers and one that does not (SPEC §3):
//! exit 1 only when nothing could be reached, exit 4 when entries became `failed`.
//!
//! S3 refuses a key of a DeleteObjects call inside a 200 answer, with an `<Error>` naming the
//! key and its code (`AccessDenied` under a bucket policy denying `s3:DeleteObject`). moto
//! enforces no bucket policy here, so a small proxy in front of it answers DeleteObjects that
//! way and passes every other request through.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use common::s3::Bucket;
use common::{StateBackend, StateDb, assetgc, block_on, require_service};

/// Every request goes to moto.
const FORWARD: u8 = 0;
/// DeleteObjects is answered with an `AccessDenied` per key; the rest goes to moto.
const DENY_DELETES: u8 = 1;
/// The proxy stops listening: its port refuses connections.
const GONE: u8 = 2;
/// CopyObject is refused with S3's 403 `AccessDenied`; the rest goes to moto.
const DENY_COPIES: u8 = 3;
/// Every request is refused as S3 refuses an unknown access key.
const REFUSE_CREDENTIALS: u8 = 4;

/// An HTTP/1.1 proxy in front of moto, one connection per request.
struct Proxy {
    endpoint: String,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_end_matches('/')
            .strip_prefix("http://")
            .expect("moto is reached over http")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let m = Arc::clone(&mode);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if m.load(Ordering::SeqCst) == GONE {
                    // The listener is dropped with this thread: connections are refused.
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (m, upstream) = (Arc::clone(&m), upstream.clone());
                std::thread::spawn(move || serve(conn, &upstream, &m));
            }
        });
        Proxy { endpoint, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == GONE {
            // Wakes the accept loop so that it sees the mode and drops the listener.
            let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Reads one request (head and `Content-Length` body).
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn serve(mut conn: TcpStream, upstream: &str, mode: &AtomicU8) {
    let Some((head, body)) = read_request(&mut conn) else {
        return;
    };
    let request_line = head.lines().next().unwrap_or_default();
    if mode.load(Ordering::SeqCst) == REFUSE_CREDENTIALS {
        let _ = conn.write_all(&refusal(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
        return;
    }
    if mode.load(Ordering::SeqCst) == DENY_DELETES
        && request_line.starts_with("POST ")
        && request_line.contains("?delete")
    {
        let _ = conn.write_all(&denied(&String::from_utf8_lossy(&body)));
        return;
    }
    if mode.load(Ordering::SeqCst) == DENY_COPIES
        && request_line.starts_with("PUT ")
        && head.to_ascii_lowercase().contains("\r\nx-amz-copy-source:")
    {
        let _ = conn.write_all(&refusal("AccessDenied", "Access Denied"));
        return;
    }
    // Passed on with `Connection: close`, so that the answer ends where moto's connection does.
    let mut forwarded: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let mut answer = Vec::new();
    if up.write_all(forwarded.as_bytes()).is_ok()
        && up.write_all(&body).is_ok()
        && up.read_to_end(&mut answer).is_ok()
    {
        let _ = conn.write_all(&answer);
    }
}

/// S3's 403 with its code (a HEAD's answer carries the body too; clients ignore it).
fn refusal(code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// S3's answer to a DeleteObjects call that refuses every key it names.
fn denied(request: &str) -> Vec<u8> {
    let mut errors = String::new();
    for part in request.split("<Key>").skip(1) {
        let key = part.split("</Key>").next().unwrap_or_default();
        errors.push_str(&format!(
            "<Error><Key>{key}</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        ));
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{errors}</DeleteResult>"
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const KEPT: &str = "app/uploads/keep-1.jpg";
const ORPHANS: [&str; 3] = ["app/tmp/o1.jpg", "app/tmp/o2.jpg", "app/tmp/o3.jpg"];

/// A bucket with one referenced object and three orphans, a config whose store goes through
/// `proxy` (quarantine on or off), a complete scan of it, and its orphans queued.
fn scanned(dir: &Path, bucket: &Bucket, proxy: &Proxy, quarantine: bool) -> PathBuf {
    block_on(async {
        for k in ORPHANS.iter().chain([&KEPT]) {
            bucket.put(k, k.as_bytes()).await;
        }
    });
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute_batch(
        "CREATE TABLE files (id integer PRIMARY KEY, path text);
         INSERT INTO files VALUES (1, 'uploads/keep-1.jpg');",
    )
    .expect("schema");
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[stores.media]
url = "s3://{}/app/"
endpoint = "{}"
access_key_id = "testing"
secret_access_key = "testing"
min_age = "0s"
quarantine = {quarantine}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "files"
query = "SELECT id, path AS key FROM files"
"#,
            bucket.name, proxy.endpoint
        ),
    )
    .expect("config");
    let r = assetgc(&config, &["scan", "--all"]);
    assert_eq!(r.code, 0, "scan: {}{}", r.stdout, r.stderr);
    let r = assetgc(
        &config,
        &[
            "queue",
            "add",
            "--store",
            "media",
            "tmp/o1.jpg",
            "tmp/o2.jpg",
            "tmp/o3.jpg",
        ],
    );
    assert_eq!(r.code, 0, "queue add: {}{}", r.stdout, r.stderr);
    config
}

fn objects(bucket: &Bucket) -> BTreeSet<String> {
    block_on(async {
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
    })
}

#[test]
fn deletes_refused_key_by_key_fail_the_entries_and_exit_4() {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = block_on(Bucket::create(&endpoint));
    let proxy = Proxy::start(&endpoint);
    let tmp = tempfile::tempdir().expect("tmp");
    let state = StateDb::create(StateBackend::Sqlite, tmp.path());
    let config = scanned(tmp.path(), &bucket, &proxy, false);

    proxy.set(DENY_DELETES);
    let r = assetgc(&config, &["queue", "run"]);
    assert_eq!(
        r.code, 4,
        "a store that answered and refused every key is not unreachable:\n{}{}",
        r.stdout, r.stderr
    );
    let rows = state.query("SELECT key, state, last_error FROM queue ORDER BY key", &[]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row[1].as_deref(), Some("failed"), "{rows:?}");
        let why = row[2].as_deref().unwrap_or_default();
        assert!(why.contains("AccessDenied"), "{rows:?}");
    }
    let left = objects(&bucket);
    for k in ORPHANS.iter().chain([&KEPT]) {
        assert!(left.contains(*k), "{k} is gone: {left:?}");
    }
}

#[test]
fn quarantine_copies_refused_by_an_answering_store_fail_the_entries_and_exit_4() {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = block_on(Bucket::create(&endpoint));
    let proxy = Proxy::start(&endpoint);
    let tmp = tempfile::tempdir().expect("tmp");
    let state = StateDb::create(StateBackend::Sqlite, tmp.path());
    let config = scanned(tmp.path(), &bucket, &proxy, true);

    proxy.set(DENY_COPIES);
    let r = assetgc(&config, &["queue", "run"]);
    assert_eq!(
        r.code, 4,
        "a store that answered and refused every copy is not unreachable:\n{}{}",
        r.stdout, r.stderr
    );
    let rows = state.query("SELECT key, state, last_error FROM queue ORDER BY key", &[]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row[1].as_deref(), Some("failed"), "{rows:?}");
        let why = row[2].as_deref().unwrap_or_default();
        assert!(why.contains("AccessDenied"), "{rows:?}");
    }
    let left = objects(&bucket);
    assert!(
        !left.iter().any(|k| k.contains(".assetgc-trash")),
        "{left:?}"
    );
    for k in ORPHANS.iter().chain([&KEPT]) {
        assert!(left.contains(*k), "{k} is gone: {left:?}");
    }
}

#[test]
fn a_store_not_reached_or_refusing_the_credentials_still_exits_1() {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    // Deleting and quarantining alike.
    for (mode, quarantine) in [
        (GONE, false),
        (GONE, true),
        (REFUSE_CREDENTIALS, false),
        (REFUSE_CREDENTIALS, true),
    ] {
        let bucket = block_on(Bucket::create(&endpoint));
        let proxy = Proxy::start(&endpoint);
        let tmp = tempfile::tempdir().expect("tmp");
        let state = StateDb::create(StateBackend::Sqlite, tmp.path());
        let config = scanned(tmp.path(), &bucket, &proxy, quarantine);

        proxy.set(mode);
        let r = assetgc(&config, &["queue", "run"]);
        let case = format!("mode {mode}, quarantine = {quarantine}");
        assert_eq!(r.code, 1, "{case}: {}{}", r.stdout, r.stderr);
        assert_eq!(
            state.count("SELECT COUNT(*) FROM queue WHERE state = 'failed'", &[]),
            0,
            "{case}"
        );
        let left = objects(&bucket);
        for k in ORPHANS.iter().chain([&KEPT]) {
            assert!(left.contains(*k), "{k} is gone: {left:?}");
        }
    }
}
