//! Races and crashes of the deletion queue with real processes (SPEC §6, invariant 5): a worker
//! whose claim is taken over while its store call hangs, workers killed inside S3's copy/delete
//! window or right after a delete, and a claim held by a process this host cannot judge. Each
//! ends with no referenced object gone, no copy in the trash without its record, and no entry
//! done twice.
//!
//! The slow store is moto behind a small TCP proxy of this file, which holds the requests a test
//! names until the test lets them go, and drops a held request whose client hung up meanwhile
//! (as a request the worker abandoned before it was sent on).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::s3::Bucket;
use common::{StateBackend, StateDb, assetgc, both_states, require_service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which requests the proxy holds: a test of the request's first bytes (its head).
type Matcher = fn(&str) -> bool;

struct Shared {
    upstream: String,
    hold: AtomicBool,
    /// Answer matching requests that open a connection with a 403 instead of sending them on.
    refuse: AtomicBool,
    matcher: Matcher,
    /// Requests held so far, and those dropped because their client hung up while held.
    seen: AtomicU64,
    dropped: AtomicU64,
    release: tokio::sync::watch::Sender<bool>,
}

/// A TCP proxy in front of moto that holds matching requests.
struct Proxy {
    addr: String,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: &str, matcher: Matcher) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let shared = Arc::new(Shared {
            upstream,
            hold: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            matcher,
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            release: tokio::sync::watch::channel(false).0,
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let s = Arc::clone(&shared);
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, Arc::clone(&s)));
            }
        });
        Proxy {
            addr,
            shared,
            _rt: rt,
        }
    }

    fn hold(&self, on: bool) {
        self.shared.hold.store(on, Ordering::SeqCst);
    }

    fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    fn release(&self) {
        self.shared.release.send_replace(true);
    }

    fn seen(&self) -> u64 {
        self.shared.seen.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

async fn serve(mut client: tokio::net::TcpStream, p: Arc<Shared>) {
    if p.refuse.load(Ordering::SeqCst) {
        let mut first = [0u8; 4096];
        let n = client.peek(&mut first).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&first[..n]).to_ascii_lowercase();
        if (p.matcher)(&head) {
            p.seen.fetch_add(1, Ordering::SeqCst);
            let _ = client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let Ok(up) = tokio::net::TcpStream::connect(&p.upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        let head = String::from_utf8_lossy(&chunk).to_ascii_lowercase();
        if p.hold.load(Ordering::SeqCst) && (p.matcher)(&head) {
            p.seen.fetch_add(1, Ordering::SeqCst);
            let mut rx = p.release.subscribe();
            let mut probe = [0u8; 1];
            let hung_up = loop {
                tokio::select! {
                    r = rx.wait_for(|go| *go) => break r.is_err(),
                    r = cr.read(&mut probe) => match r {
                        Ok(0) | Err(_) => break true,
                        Ok(_) => chunk.push(probe[0]),
                    },
                }
            };
            if hung_up {
                p.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        if uw.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = uw.shutdown().await;
}

fn is_copy(head: &str) -> bool {
    head.starts_with("put ") && head.contains("x-amz-copy-source")
}

/// The single DELETE that ends an S3 move, after its copy.
fn is_delete_of_source(head: &str) -> bool {
    head.starts_with("delete ") && head.contains("/app/tmp/")
}

fn config(dir: &Path, state: &StateDb, bucket: &Bucket, endpoint: &str, extra: &str) -> PathBuf {
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS files (id integer PRIMARY KEY, path text);")
        .expect("schema");
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            r#"{state}
[stores.media]
url = "s3://{bucket}/app/"
endpoint = "{endpoint}"
access_key_id = "testing"
secret_access_key = "testing"
min_age = "0s"
{extra}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "files"
query = "SELECT id, path AS key FROM files"
"#,
            state = state.config_section(),
            bucket = bucket.name,
        ),
    )
    .expect("config");
    path
}

fn reference(dir: &Path, id: i64, key: &str) {
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute(
        "INSERT INTO files (id, path) VALUES (?1, ?2)",
        rusqlite::params![id, key],
    )
    .expect("insert");
}

fn spawn_worker(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_assetgc"))
        .arg("--config")
        .arg(config)
        .args(["queue", "run"])
        .env("NO_COLOR", "1")
        .env_remove("ASSETGC_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a worker")
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `limit` for the child to exit; whether it did.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn keys(bucket: &Bucket) -> BTreeSet<String> {
    common::block_on(async {
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

/// Every object in the trash has its quarantine record: nothing was moved there unseen.
fn every_copy_is_recorded(bucket: &Bucket, state: &StateDb) {
    let recorded: BTreeSet<String> = state
        .query("SELECT quarantine_key FROM quarantine", &[])
        .into_iter()
        .filter_map(|r| r[0].clone())
        .map(|q| format!("app/{q}"))
        .collect();
    for k in keys(bucket) {
        if k.starts_with("app/.assetgc-trash/") {
            assert!(recorded.contains(&k), "{k} has no record ({recorded:?})");
        }
    }
}

/// A worker stops (here: SIGSTOP) while its CopyObject hangs in the network; its claim times
/// out and a second worker takes the entry over, finds the key referenced again and leaves it.
/// When the first worker runs again, its claim is gone: it abandons the call, so the copy and
/// the delete that would follow never happen, and it records nothing.
fn a_worker_whose_claim_is_taken_over_mid_call_acts_on_nothing(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let bucket = common::block_on(Bucket::create(&endpoint));
    common::block_on(bucket.put("app/tmp/k.jpg", b"k"));
    let proxy = Proxy::start(&endpoint, is_copy);
    let config = config(dir, &db, &bucket, &proxy.addr, "");
    let add = assetgc(&config, &["queue", "add", "--store", "media", "tmp/k.jpg"]);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);

    proxy.hold(true);
    let mut a = spawn_worker(&config);
    wait_until("the first worker's copy", Duration::from_secs(30), || {
        proxy.seen() >= 1
    });
    signal(&a, rustix::process::Signal::STOP);
    proxy.hold(false);
    // Ten minutes pass for the claim (the first worker is stopped, or its host's clock is late).
    db.query(
        "UPDATE queue SET claimed_at = '2000-01-01T00:00:00Z' WHERE state = 'claimed'",
        &[],
    );
    reference(dir, 1, "tmp/k.jpg");
    let b = assetgc(&config, &["queue", "run"]);
    assert_eq!(b.code, 0, "{}{}", b.stdout, b.stderr);
    assert!(b.stdout.contains("referenced:    1"), "{}", b.stdout);

    signal(&a, rustix::process::Signal::CONT);
    // Its next renewal finds the claim gone: it gives the call up and ends.
    let gave_up = exits_within(&mut a, Duration::from_secs(20));
    proxy.release();
    assert!(
        gave_up || exits_within(&mut a, Duration::from_secs(30)),
        "the first worker did not end"
    );
    let out = a.wait_with_output().expect("output");
    assert!(gave_up, "the first worker waited for its call: {out:?}");
    assert_eq!(proxy.dropped(), 1, "its copy request was never sent on");

    let now = keys(&bucket);
    assert!(
        now.contains("app/tmp/k.jpg"),
        "a referenced key is gone: {now:?}"
    );
    every_copy_is_recorded(&bucket, &db);
    let audit: Vec<String> = db
        .query("SELECT outcome FROM audit WHERE key = 'tmp/k.jpg'", &[])
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert_eq!(audit, ["referenced"], "one outcome, the second worker's");
}
both_states!(a_worker_whose_claim_is_taken_over_mid_call_acts_on_nothing);

/// Workers killed between S3's copy and its delete leave a copy and the object: the next worker
/// records the copy (or moves the object again and records both), and no copy stays unrecorded.
fn a_worker_killed_inside_the_copy_delete_window_leaves_no_unrecorded_copy(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let bucket = common::block_on(Bucket::create(&endpoint));
    let proxy = Proxy::start(&endpoint, is_delete_of_source);
    let config = config(dir, &db, &bucket, &proxy.addr, "");
    let n = 3;
    for i in 0..n {
        common::block_on(bucket.put(&format!("app/tmp/k{i}.jpg"), b"k"));
    }
    let names: Vec<String> = (0..n).map(|i| format!("tmp/k{i}.jpg")).collect();
    let mut args = vec!["queue", "add", "--store", "media"];
    args.extend(names.iter().map(String::as_str));
    let add = assetgc(&config, &args);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);

    // Each round: the copy is made, the delete hangs, the worker is killed.
    for round in 1..=n {
        proxy.hold(true);
        let mut a = spawn_worker(&config);
        let seen = proxy.seen();
        wait_until("a held delete", Duration::from_secs(30), || {
            proxy.seen() > seen || a.try_wait().ok().flatten().is_some()
        });
        a.kill().expect("SIGKILL");
        a.wait().expect("reap");
        proxy.hold(false);
        if proxy.seen() == seen {
            break;
        }
        assert!(
            keys(&bucket)
                .iter()
                .any(|k| k.starts_with("app/.assetgc-trash/")),
            "round {round}: the copy was made"
        );
    }
    let last = assetgc(&config, &["queue", "run"]);
    assert_eq!(last.code, 0, "{}{}", last.stdout, last.stderr);
    let now = keys(&bucket);
    for name in &names {
        assert!(
            !now.contains(&format!("app/{name}")),
            "{name} still there: {now:?}"
        );
        let quarantined = db.count(
            "SELECT COUNT(*) FROM audit WHERE key = $1 AND outcome = 'quarantined'",
            &[name],
        );
        assert_eq!(quarantined, 1, "{name} quarantined once");
    }
    every_copy_is_recorded(&bucket, &db);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'claimed') AND reason <> 'quarantine'", &[]),
        0
    );
}
both_states!(a_worker_killed_inside_the_copy_delete_window_leaves_no_unrecorded_copy);

/// Two containers share a host name and each has its own PID namespace: a claim written by a
/// worker in the other one (here in the form `host:pid`, which says nothing of the namespace)
/// names a PID that does not run here. It is not freed as a dead worker's: it waits for the
/// claim timeout, and its object stays.
fn a_claim_of_another_pid_namespace_on_the_same_host_is_not_taken(state: StateBackend) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let media = dir.join("media");
    common::write_file(&media, "tmp/k.jpg", b"k", std::time::SystemTime::now());
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("db");
    conn.execute_batch("CREATE TABLE files (id integer PRIMARY KEY, path text);")
        .expect("schema");
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[stores.media]\nurl = \"./media\"\nmin_age = \"0s\"\nquarantine = false\n\n[databases.app]\nurl = \"sqlite://app.db\"\n\n[[references]]\nname = \"files\"\nquery = \"SELECT id, path AS key FROM files\"\n",
            db.config_section()
        ),
    )
    .expect("config");
    let add = assetgc(&config, &["queue", "add", "--store", "media", "tmp/k.jpg"]);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    // A PID above this namespace's pid_max: it runs nowhere here.
    let other = format!("{}:4194000", host.trim());
    for holder in [other, format!("{}:4194000:other-boot:1:1", host.trim())] {
        db.query(
            "UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, in_flight = 1",
            &[
                &holder,
                &chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ],
        );
        let r = assetgc(&config, &["queue", "run"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("Processed 0"), "{holder}: {}", r.stdout);
        assert!(media.join("tmp/k.jpg").exists(), "{holder}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM queue WHERE state = 'claimed'", &[]),
            1,
            "{holder}"
        );
    }
}
both_states!(a_claim_of_another_pid_namespace_on_the_same_host_is_not_taken);

/// Finding 16: the quarantine folder carries the time of the move, which is the time recorded
/// with it — not the time of an earlier claim, however long the call or the wait before it.
fn the_trash_folder_is_the_time_of_the_move(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let bucket = common::block_on(Bucket::create(&endpoint));
    common::block_on(bucket.put("app/tmp/k.jpg", b"k"));
    let proxy = Proxy::start(&endpoint, is_copy);
    let config = config(dir, &db, &bucket, &proxy.addr, "");
    let add = assetgc(&config, &["queue", "add", "--store", "media", "tmp/k.jpg"]);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    // A first claim whose worker died before it acted.
    db.query(
        "UPDATE queue SET state = 'claimed', claimed_by = 'gone:1', claimed_at = '2000-01-01T00:00:00Z'",
        &[],
    );
    proxy.hold(true);
    let mut a = spawn_worker(&config);
    wait_until("the copy", Duration::from_secs(30), || proxy.seen() >= 1);
    std::thread::sleep(Duration::from_millis(2500));
    proxy.release();
    assert!(exits_within(&mut a, Duration::from_secs(30)));
    let rows = db.query("SELECT quarantine_key, moved_at FROM quarantine", &[]);
    let (q, moved) = (
        rows[0][0].clone().expect("key"),
        rows[0][1].clone().expect("time"),
    );
    let folder = q
        .trim_start_matches(".assetgc-trash/")
        .split('/')
        .next()
        .expect("folder")
        .to_string();
    let moved = chrono::DateTime::parse_from_rfc3339(&moved).expect("moved_at");
    assert_eq!(folder, moved.format("%Y%m%dT%H%M%SZ").to_string());
    assert!(folder.starts_with("20"), "{q}");
    assert!(
        !folder.starts_with("2000"),
        "not the first claim's time: {q}"
    );
}
both_states!(the_trash_folder_is_the_time_of_the_move);

fn is_head(head: &str) -> bool {
    head.starts_with("head ")
}

/// Finding 6: a worker that cannot tell whether an earlier move's copy is in the trash (its
/// look-up fails) counts a failed attempt and keeps the entry; it never drops it as
/// `referenced` with the copy unseen. Once the store answers, the copy is moved back.
fn a_failed_look_at_a_copy_is_a_failed_attempt_never_referenced(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let bucket = common::block_on(Bucket::create(&endpoint));
    let q = ".assetgc-trash/20260101T000000Z/tmp/k.jpg";
    common::block_on(bucket.put(&format!("app/{q}"), b"k"));
    let proxy = Proxy::start(&endpoint, is_head);
    let config = config(dir, &db, &bucket, &proxy.addr, "");
    let add = assetgc(&config, &["queue", "add", "--store", "media", "tmp/k.jpg"]);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    // A worker moved it and stopped before it recorded the move; its claim has timed out.
    db.query(
        "UPDATE queue SET state = 'claimed', claimed_by = 'gone:1', claimed_at = '2000-01-01T00:00:00Z', quarantine_key = $1, in_flight = 1, claim_token = 1",
        &[q],
    );
    reference(dir, 1, "tmp/k.jpg");
    proxy.refuse(true);
    let r = assetgc(&config, &["queue", "run"]);
    assert!(
        r.stdout.contains("referenced:    0"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("retrying:      1"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(proxy.seen() >= 1, "the look-up was refused");
    let rows = db.query("SELECT state, attempts, quarantine_key FROM queue", &[]);
    assert_eq!(rows[0][0].as_deref(), Some("pending"));
    assert_eq!(rows[0][1].as_deref(), Some("1"));
    assert_eq!(rows[0][2].as_deref(), Some(q));
    assert!(keys(&bucket).contains(&format!("app/{q}")));

    proxy.refuse(false);
    let id = db.query("SELECT id FROM queue", &[])[0][0]
        .clone()
        .expect("id");
    assert_eq!(assetgc(&config, &["queue", "retry", &id]).code, 0);
    let r = assetgc(&config, &["queue", "run"]);
    assert!(
        r.stdout.contains("referenced:    1"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let now = keys(&bucket);
    assert!(now.contains("app/tmp/k.jpg"), "moved back: {now:?}");
    assert!(!now.contains(&format!("app/{q}")), "{now:?}");
}
both_states!(a_failed_look_at_a_copy_is_a_failed_attempt_never_referenced);

/// Two workers on one host name, the first in a PID namespace of its own (as in a second
/// container): while its CopyObject hangs, the second worker must not take its claim for a dead
/// worker's, though the first one's PID runs nowhere in the second's namespace.
fn a_worker_in_another_pid_namespace_keeps_its_claim(state: StateBackend) {
    let Some(endpoint) = require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("skipped: unshare --pid needs privileges this host does not give");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = StateDb::create(state, dir);
    let bucket = common::block_on(Bucket::create(&endpoint));
    common::block_on(bucket.put("app/tmp/k.jpg", b"k"));
    let proxy = Proxy::start(&endpoint, is_copy);
    let config = config(dir, &db, &bucket, &proxy.addr, "");
    let add = assetgc(&config, &["queue", "add", "--store", "media", "tmp/k.jpg"]);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    proxy.hold(true);
    // Inside its namespace the worker gets a PID past 200 (the loop spends the lower ones).
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done; '{}' --config '{}' queue run & wait $!",
        env!("CARGO_BIN_EXE_assetgc"),
        config.display()
    );
    let mut a = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until("the first worker's copy", Duration::from_secs(60), || {
        proxy.seen() >= 1
    });
    proxy.hold(false);
    let holder = db.query("SELECT claimed_by FROM queue", &[])[0][0]
        .clone()
        .expect("holder");
    let pid = holder.split(':').nth(1).expect("pid").to_string();
    if Path::new(&format!("/proc/{pid}")).exists() {
        eprintln!("skipped: PID {pid} of the other namespace also runs here");
        proxy.release();
        a.wait().expect("reap");
        return;
    }
    let b = assetgc(&config, &["queue", "run"]);
    assert_eq!(b.code, 0, "{}{}", b.stdout, b.stderr);
    assert!(b.stdout.contains("Processed 0"), "taken over: {}", b.stdout);
    proxy.release();
    assert!(exits_within(&mut a, Duration::from_secs(60)));
    let out = a.wait_with_output().expect("output");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM audit WHERE key = 'tmp/k.jpg' AND outcome = 'quarantined'",
            &[]
        ),
        1
    );
    every_copy_is_recorded(&bucket, &db);
    assert!(!keys(&bucket).contains("app/tmp/k.jpg"));
}
both_states!(a_worker_in_another_pid_namespace_keeps_its_claim);
