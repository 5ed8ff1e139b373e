//! Stores: the conformance suite on the folder store and on S3 (moto), what only a folder can hold
//! — symbolic links, names that are not UTF-8, control characters in names — against SPEC §2 and
//! SPEC §6 invariant 6 (the folder store never touches a path outside its root), and what only S3
//! can hold: unrepresentable keys, folder markers, keys outside the store's prefix.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use assetgc::key::ResourceType;
use assetgc::store::local::LocalStore;
use assetgc::store::memory::MemoryStore;
use assetgc::store::s3::{S3Settings, S3Store};
use assetgc::store::{KeyFailure, ListOptions, MoveOptions, Moved, Store, StoreError};
use common::conformance::{self, Backend, Listing, Seeder, list_all};
use common::s3::Bucket;
use common::write_file;

/// Seeds the folder store the way an application fills it: files under the root.
struct Files<'a> {
    root: &'a Path,
}

impl Seeder for Files<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        write_file(self.root, key, body, SystemTime::now());
    }
}

#[tokio::test]
async fn folder_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path().to_path_buf());
    let files = Files { root: dir.path() };
    conformance::run(&Backend {
        tells_already_gone: true,
        ..Backend::plain(&store, &files)
    })
    .await;
}

/// Seeds the memory store: objects put into its map.
struct InMemory<'a> {
    store: &'a MemoryStore,
}

impl Seeder for InMemory<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        let size = u64::try_from(body.len()).expect("a small body");
        self.store
            .put(ResourceType::Plain, key, size, chrono::Utc::now());
    }
}

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    let store = MemoryStore::new("conformance");
    let seed = InMemory { store: &store };
    conformance::run(&Backend {
        tells_already_gone: true,
        ..Backend::plain(&store, &seed)
    })
    .await;
}

/// A temporary folder holding the store's root and, beside it, files the store must never reach.
struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    write_file(&outside, "secret.jpg", b"secret", SystemTime::now());
    write_file(&outside, "dir/inner.jpg", b"inner", SystemTime::now());
    write_file(&root, "real.jpg", b"real", SystemTime::now());
    Layout {
        _dir: dir,
        root,
        outside,
    }
}

/// The path of a file named by raw bytes (a name that may not be UTF-8) below `dir`.
fn raw_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn write_raw(dir: &Path, name: &[u8]) -> PathBuf {
    let path = raw_path(dir, name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, b"x").expect("write a file with an odd name");
    path
}

async fn list_both_ways(store: &LocalStore) -> [Listing; 2] {
    let mut listings = Vec::new();
    for with_meta in [false, true] {
        listings.push(
            list_all(
                store,
                ListOptions {
                    with_meta,
                    exclude_prefixes: Vec::new(),
                    since: None,
                },
            )
            .await,
        );
    }
    listings.try_into().expect("two listings")
}

fn sorted_keys(listing: &Listing) -> Vec<&str> {
    let mut keys = listing.keys();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_never_listed_or_looked_up() {
    let l = layout();
    write_file(&l.root, "sub/ok.jpg", b"ok", SystemTime::now());
    symlink(&l.outside, l.root.join("out-dir")).expect("link to a folder");
    symlink(l.outside.join("secret.jpg"), l.root.join("out-file.jpg")).expect("link to a file");
    symlink(&l.outside, l.root.join("sub/deeper")).expect("link to a folder, one level down");
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg", "sub/ok.jpg"],
            "objects of a root holding links out: {listing:?}"
        );
        assert!(
            listing.unrepresentable.is_empty(),
            "a link is skipped, not unrepresentable: {listing:?}"
        );
    }

    let keys: Vec<String> = [
        "out-dir/secret.jpg",
        "out-dir/dir/inner.jpg",
        "out-file.jpg",
        "sub/deeper/secret.jpg",
        "sub/deeper/dir/inner.jpg",
        "real.jpg",
    ]
    .map(String::from)
    .into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    let found: Vec<&str> = keys
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(found, ["real.jpg"], "look-ups through links: {answers:?}");
}

#[tokio::test]
async fn lookup_many_never_leaves_the_root() {
    let l = layout();
    write_file(&l.root, "sub/inside.jpg", b"inside", SystemTime::now());
    let store = LocalStore::new(l.root.clone());
    let absolute = l.outside.join("secret.jpg");
    let keys: Vec<String> = vec![
        "../outside/secret.jpg".into(),
        "sub/../../outside/secret.jpg".into(),
        absolute.to_str().expect("UTF-8 temp path").into(),
        "sub/../real.jpg".into(),
        "./real.jpg".into(),
        "sub//inside.jpg".into(),
    ];
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert_eq!(answers.len(), keys.len());
    for (key, answer) in keys.iter().zip(&answers) {
        assert!(
            answer.is_none(),
            "{key:?} is not a representable key, yet a look-up found {answer:?}"
        );
    }
}

/// A file that is still there, read without following a link at its own name.
fn survives(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[tokio::test]
async fn delete_many_never_removes_through_a_link_or_a_link_itself() {
    let l = layout();
    write_file(&l.root, "sub/ok.jpg", b"ok", SystemTime::now());
    symlink(&l.outside, l.root.join("out-dir")).expect("link to a folder");
    symlink(l.outside.join("secret.jpg"), l.root.join("out-file.jpg")).expect("link to a file");
    symlink(&l.outside, l.root.join("sub/deeper")).expect("link to a folder, one level down");
    let store = LocalStore::new(l.root.clone());

    let keys: Vec<String> = [
        "out-dir/secret.jpg",
        "out-dir/dir/inner.jpg",
        "out-file.jpg",
        "sub/deeper/secret.jpg",
        "sub/deeper/dir/inner.jpg",
        "sub/deeper",
        "real.jpg",
        "sub/ok.jpg",
    ]
    .map(String::from)
    .into();
    let outcomes = store
        .delete_many(ResourceType::Plain, &keys)
        .await
        .expect("delete_many");
    let deleted: Vec<&str> = keys
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_ok())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        deleted,
        ["real.jpg", "sub/ok.jpg"],
        "deletes through links: {outcomes:?}"
    );
    for (key, outcome) in keys.iter().zip(&outcomes) {
        if let Err(reason) = outcome {
            assert!(
                reason.message.contains("symbolic link"),
                "{key:?}: {reason}"
            );
        }
    }
    assert!(!survives(&l.root.join("real.jpg")) && !survives(&l.root.join("sub/ok.jpg")));
    for outside in ["secret.jpg", "dir/inner.jpg"] {
        assert!(survives(&l.outside.join(outside)), "{outside} was removed");
    }
    for link in ["out-dir", "out-file.jpg", "sub/deeper"] {
        assert!(survives(&l.root.join(link)), "the link {link} was removed");
    }
}

#[tokio::test]
async fn delete_many_refuses_keys_out_of_the_root_and_folders() {
    let l = layout();
    write_file(&l.root, "sub/inside.jpg", b"inside", SystemTime::now());
    let store = LocalStore::new(l.root.clone());
    let absolute = l.outside.join("secret.jpg");
    let keys: Vec<String> = vec![
        "../outside/secret.jpg".into(),
        "sub/../../outside/secret.jpg".into(),
        absolute.to_str().expect("UTF-8 temp path").into(),
        "sub/../real.jpg".into(),
        "./real.jpg".into(),
        "sub//inside.jpg".into(),
        "sub/".into(),
        "sub".into(),
    ];
    let outcomes = store
        .delete_many(ResourceType::Plain, &keys)
        .await
        .expect("delete_many");
    assert_eq!(outcomes.len(), keys.len());
    for (key, outcome) in keys.iter().zip(&outcomes) {
        assert!(outcome.is_err(), "{key:?} was not refused: {outcome:?}");
    }
    assert!(
        outcomes[7]
            .as_ref()
            .is_err_and(|reason| reason.message.contains("folder")),
        "{outcomes:?}"
    );
    // Keys out of the root fail for good; a folder in the way may be gone next time.
    for outcome in &outcomes[..7] {
        assert!(
            outcome
                .as_ref()
                .is_err_and(|e| e.kind == KeyFailure::Permanent),
            "{outcomes:?}"
        );
    }
    assert!(
        outcomes[7]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::Transient),
        "{outcomes:?}"
    );
    for path in [
        absolute,
        l.root.join("real.jpg"),
        l.root.join("sub/inside.jpg"),
    ] {
        assert!(survives(&path), "{} was removed", path.display());
    }
}

#[tokio::test]
async fn delete_many_of_a_missing_root_fails_the_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path().join("missing"));
    let keys = vec!["a.jpg".to_owned()];
    assert!(
        matches!(
            store.delete_many(ResourceType::Plain, &keys).await,
            Err(StoreError::Unreachable { .. })
        ),
        "a missing root is no store, not a store where everything is already gone"
    );
}

#[tokio::test]
async fn names_that_are_not_utf8_are_unrepresentable_never_objects() {
    let l = layout();
    write_raw(&l.root, b"bad\xff.jpg");
    write_raw(&l.root, b"sub/odd\xfe.png");
    write_raw(&l.root, b"dir\xfd/inner.jpg");
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg"],
            "objects of a root holding names that are not UTF-8: {listing:?}"
        );
        // Each name is reported (the folder alone may stand for the file inside it).
        for part in ["bad", "odd", "dir"] {
            assert!(
                listing.unrepresentable.iter().any(|n| n.contains(part)),
                "no unrepresentable entry names `{part}…`: {listing:?}"
            );
        }
    }

    // The lossy renderings are not keys of anything either.
    let keys: Vec<String> = [
        "bad\u{fffd}.jpg",
        "sub/odd\u{fffd}.png",
        "dir\u{fffd}/inner.jpg",
    ]
    .map(String::from)
    .into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
}

#[tokio::test]
async fn names_with_control_characters_are_unrepresentable() {
    let l = layout();
    let names = [
        "line\nbreak.jpg",
        "tab\there.jpg",
        "sub/cr\r.jpg",
        "del\u{7f}.jpg",
        "nel\u{85}.jpg",
    ];
    for name in names {
        write_raw(&l.root, name.as_bytes());
    }
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg"],
            "objects of a root holding names with control characters: {listing:?}"
        );
        assert_eq!(
            listing.unrepresentable.len(),
            names.len(),
            "one unrepresentable entry per name: {listing:?}"
        );
    }

    // The files exist under exactly these names; the keys are still never looked up.
    let keys: Vec<String> = names.map(String::from).into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
}

#[tokio::test]
async fn a_missing_root_fails_check_and_listing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path().join("missing"));
    match store.check().await {
        Err(StoreError::Unreachable { .. }) => {}
        other => panic!("check() of a missing root: {other:?}"),
    }

    // Listing it is an error, never an empty store: every reference would read as missing.
    let mut pages = store.list(ListOptions::default());
    let mut failed = false;
    while let Some(page) = futures::StreamExt::next(&mut pages).await {
        match page {
            Err(_) => failed = true,
            Ok(items) => assert!(items.is_empty(), "a missing root listed {items:?}"),
        }
    }
    assert!(failed, "listing a missing root ended without an error");
}

#[tokio::test]
async fn a_root_that_is_a_file_fails_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_file(dir.path(), "not-a-folder", b"x", SystemTime::now());
    let store = LocalStore::new(file);
    match store.check().await {
        Err(StoreError::Unreachable { .. }) => {}
        other => panic!("check() of a root that is a file: {other:?}"),
    }
}

// ---- S3 (moto) ----
//
// moto does not check signatures, so refused credentials (403 InvalidAccessKeyId,
// SignatureDoesNotMatch) cannot be tested here; the tests run unsigned, as moto allows.

/// Seeds an S3 store the way an application fills it: objects put under the store's prefix.
struct S3Objects<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
}

impl Seeder for S3Objects<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        let key = format!("{}{key}", self.prefix);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.bucket.put(&key, body));
        });
    }
}

/// Beside the store's prefix `app/`: keys a prefix match without the `/` would take for its own.
const OUTSIDE_APP: &[&str] = &["other/x.jpg", "app2/y.jpg", "appx.jpg", "app", "ap/p.jpg"];

async fn s3_conformance(list_concurrency: usize) {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for key in OUTSIDE_APP {
        bucket.put(key, b"not this store's").await;
    }
    let store = bucket.store("app/", list_concurrency);
    let seed = S3Objects {
        bucket: &bucket,
        prefix: "app/",
    };
    conformance::run(&Backend::plain(&store, &seed)).await;

    // Keys are relative to the prefix: no key reaches the objects beside it.
    let keys: Vec<String> = ["other/x.jpg", "../other/x.jpg", "2/y.jpg", "x.jpg", ""]
        .map(String::from)
        .into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert!(store.calls() > 0, "calls are counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_passes_the_conformance_suite() {
    s3_conformance(8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_passes_the_conformance_suite_listing_sequentially() {
    s3_conformance(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_unrepresentable_keys_never_stop_a_listing_and_markers_are_not_objects() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for (key, body) in [
        ("app/a//b.jpg", &b"x"[..]),
        ("app/x/./y.jpg", b"x"),
        ("app/../z", b"x"),
        // A tab, not a line break: moto's router refuses `%0A` in a path.
        ("app/tab\there.jpg", b"x"),
        // A console folder marker: zero bytes, ending in `/`.
        ("app/dir/", b""),
        ("app/dir/inside.jpg", b"inside"),
        // Not zero bytes: a real object whose name ends in `/`, which no key can name.
        ("app/notdir/", b"x"),
        ("app/ok.jpg", b"ok"),
        ("app/zz.jpg", b"zz"),
        ("appx.jpg", b"outside"),
    ] {
        bucket.put(key, body).await;
    }
    for list_concurrency in [8, 1] {
        let store = bucket.store("app/", list_concurrency);
        for with_meta in [false, true] {
            let listing = list_all(
                &store,
                ListOptions {
                    with_meta,
                    exclude_prefixes: Vec::new(),
                    since: None,
                },
            )
            .await;
            let what = format!("list_concurrency = {list_concurrency}, with_meta = {with_meta}");
            assert_eq!(
                sorted_keys(&listing),
                ["dir/inside.jpg", "ok.jpg", "zz.jpg"],
                "{what}: {listing:?}"
            );
            let mut unrepresentable = listing.unrepresentable.clone();
            unrepresentable.sort_unstable();
            assert_eq!(
                unrepresentable,
                ["../z", "a//b.jpg", "notdir/", "tab\\there.jpg", "x/./y.jpg"],
                "{what}: {listing:?}"
            );
        }
        let keys: Vec<String> = [
            "a//b.jpg",
            "x/./y.jpg",
            "../z",
            "dir",
            "dir/",
            "notdir/",
            "ok.jpg",
        ]
        .map(String::from)
        .into();
        let answers = store
            .lookup_many(ResourceType::Plain, &keys)
            .await
            .expect("lookup_many");
        let found: Vec<&str> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_some())
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(found, ["ok.jpg"], "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_delete_many_sends_1000_keys_a_call_and_stays_inside_the_prefix() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for key in OUTSIDE_APP
        .iter()
        .chain(&["app/x.jpg", "app/0999.jpg", "app/keep.jpg"])
    {
        bucket.put(key, b"x").await;
    }
    let store = bucket.store("app/", 8);
    // 1001 keys, two of them present: two DeleteObjects calls. `x.jpg` is `app/x.jpg`, never
    // `appx.jpg`; `../other/x.jpg` is refused before it could reach `other/x.jpg`.
    let mut keys: Vec<String> = (0..1000).map(|i| format!("{i:04}.jpg")).collect();
    keys.push("x.jpg".to_owned());
    keys.extend(["../other/x.jpg", "", "/x.jpg"].map(String::from));
    let calls = store.calls();
    let outcomes = store
        .delete_many(ResourceType::Plain, &keys)
        .await
        .expect("delete_many");
    assert_eq!(store.calls() - calls, 2, "1001 keys in calls of 1000");
    assert!(outcomes[..1001].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(outcomes[1001..].iter().all(Result::is_err), "{outcomes:?}");

    let listing = list_all(&bucket.store("", 1), ListOptions::default()).await;
    let mut expected: Vec<&str> = OUTSIDE_APP.to_vec();
    expected.push("app/keep.jpg");
    expected.sort_unstable();
    assert_eq!(sorted_keys(&listing), expected, "{listing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_delete_many_on_a_server_that_does_not_answer_fails_the_call() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let store = Bucket::named(&format!("http://127.0.0.1:{port}"), "gone").store("app/", 1);
    let keys = vec!["a.jpg".to_owned(), "../b".to_owned()];
    match store.delete_many(ResourceType::Plain, &keys).await {
        Err(StoreError::Unreachable { message, .. }) => {
            assert!(message.contains("bucket `gone`"), "{message}");
        }
        other => panic!("delete_many against a closed port: {other:?}"),
    }
    assert_eq!(
        store.calls(),
        1,
        "one DeleteObjects call (its retries are object_store's)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_check_of_a_missing_bucket_is_unreachable_and_names_the_bucket() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::named(&endpoint, "assetgc-never-created");
    let store = bucket.store("", 8);
    match store.check().await {
        Err(StoreError::NotFound { message: msg }) => {
            assert!(msg.contains("assetgc-never-created"), "{msg}");
            assert!(msg.contains("NoSuchBucket"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        other => panic!("check() of a missing bucket: {other:?}"),
    }
}

/// A server that stops answering ends the listing with an error after the retries, never with a
/// quiet, shorter listing (which would turn every reference into "missing").
#[tokio::test(flavor = "multi_thread")]
async fn s3_listing_of_a_server_that_does_not_answer_fails() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bucket = Bucket::named(&format!("http://127.0.0.1:{port}"), "gone");
    for list_concurrency in [8, 1] {
        let store = bucket.store("app/", list_concurrency);
        let mut pages = store.list(ListOptions::default());
        let mut failed = false;
        while let Some(page) = futures::StreamExt::next(&mut pages).await {
            match page {
                Err(e) => {
                    failed = true;
                    assert!(e.to_string().contains("gave up after"), "{e}");
                }
                Ok(items) => panic!("a server that does not answer listed {items:?}"),
            }
        }
        assert!(failed, "the listing ended without an error");
        assert_eq!(store.calls(), 5, "one call, tried five times");
        assert!(matches!(
            store.check().await,
            Err(StoreError::Unreachable { .. })
        ));
    }
}

/// A stand-in S3 endpoint that answers the first `failures` requests with `503 SlowDown` and the
/// rest with an empty listing; it counts the requests it saw.
async fn flaky_endpoint(
    failures: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let (status, body) = if n < failures {
                (
                    "503 Slow Down",
                    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                )
            } else {
                (
                    "200 OK",
                    "<ListBucketResult><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType></ListBucketResult>",
                )
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (endpoint, seen)
}

fn unsigned_store(endpoint: &str) -> S3Store {
    S3Store::new(
        "flaky",
        S3Settings {
            bucket: "b".to_owned(),
            prefix: String::new(),
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: true,
            virtual_hosted_style: false,
            list_concurrency: 1,
        },
    )
    .expect("an S3 store")
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_slow_down_answers_are_retried_with_backoff() {
    let (endpoint, seen) = flaky_endpoint(2).await;
    let store = unsigned_store(&endpoint);
    let listing = list_all(&store, ListOptions::default()).await;
    assert!(listing.objects.is_empty(), "{listing:?}");
    assert_eq!(store.calls(), 3, "two refusals, then the listing");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_listing_that_keeps_failing_ends_with_an_error_naming_the_cause() {
    let (endpoint, _) = flaky_endpoint(usize::MAX).await;
    let store = unsigned_store(&endpoint);
    let mut pages = store.list(ListOptions::default());
    let mut errors = Vec::new();
    while let Some(page) = futures::StreamExt::next(&mut pages).await {
        match page {
            Err(e) => errors.push(e.to_string()),
            Ok(items) => panic!("a failing server listed {items:?}"),
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("SlowDown") && errors[0].contains("gave up after 5 tries"),
        "{errors:?}"
    );
    assert_eq!(store.calls(), 5);
    match store.check().await {
        Err(StoreError::Unreachable { message: msg, .. }) => {
            assert!(
                msg.contains("bucket `b`") && msg.contains("SlowDown"),
                "{msg}"
            );
        }
        other => panic!("check() of a failing server: {other:?}"),
    }
}

#[tokio::test]
async fn folder_moves_without_replace_refuse_an_existing_destination() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    write_file(root, ".trash/t/a.jpg", b"copy", SystemTime::now());
    write_file(root, "a.jpg", b"newer upload", SystemTime::now());
    let store = LocalStore::new(root.to_path_buf());
    let pair = [(".trash/t/a.jpg".to_string(), "a.jpg".to_string())];
    let out = store
        .move_many(ResourceType::Plain, &pair, MoveOptions { replace: false })
        .await
        .expect("call");
    assert!(
        out[0]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::AlreadyExists && e.message.contains("exists")),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(root.join("a.jpg")).expect("a"),
        b"newer upload"
    );
    assert_eq!(
        std::fs::read(root.join(".trash/t/a.jpg")).expect("copy"),
        b"copy"
    );
    // With replace, as `restore --overwrite` does.
    let out = store
        .move_many(ResourceType::Plain, &pair, MoveOptions { replace: true })
        .await
        .expect("call");
    assert_eq!(out, [Ok(Moved::Moved)]);
    assert_eq!(std::fs::read(root.join("a.jpg")).expect("a"), b"copy");
}

#[tokio::test]
async fn folder_failures_say_whether_trying_again_can_help() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    write_file(root, "a.jpg", b"a", SystemTime::now());
    std::fs::create_dir_all(root.join("d.jpg")).expect("a folder where a file should be");
    let store = LocalStore::new(root.to_path_buf());

    // A name longer than the filesystem takes is refused the same way every time.
    let long = format!(".trash/t/{}.jpg", "n".repeat(300));
    let out = store
        .move_many(
            ResourceType::Plain,
            &[("a.jpg".to_string(), long)],
            MoveOptions { replace: true },
        )
        .await
        .expect("call");
    assert!(
        out[0]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::Permanent),
        "{out:?}"
    );
    assert_eq!(std::fs::read(root.join("a.jpg")).expect("a"), b"a");

    // A folder where a file should be may be a file again by the next attempt.
    let out = store
        .delete_many(ResourceType::Plain, &["d.jpg".to_string()])
        .await
        .expect("call");
    assert!(
        out[0]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::Transient && e.message.contains("folder")),
        "{out:?}"
    );
    let moved = store
        .move_many(
            ResourceType::Plain,
            &[("d.jpg".to_string(), ".trash/t/d.jpg".to_string())],
            MoveOptions { replace: true },
        )
        .await
        .expect("call");
    assert!(
        moved[0]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::Transient),
        "{moved:?}"
    );
}

/// A stand-in S3 endpoint that answers every request with `200 OK` and `body`, once it has read
/// the request whole.
async fn answering_endpoint(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break request.len(),
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            };
            let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while request.len() < head_end + length {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    endpoint
}

/// DeleteObjects answers per key; S3's code says whether the key can go later: refused access
/// and an archived object will not, a busy server may. (An answer naming `SlowDown` or
/// `InternalError` anywhere is retried by `object_store` as a whole, then fails every key of the
/// request as a request would: transient too.)
#[tokio::test(flavor = "multi_thread")]
async fn s3_keys_refused_by_delete_objects_fail_by_their_code() {
    let endpoint = answering_endpoint(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Deleted><Key>ok.jpg</Key></Deleted>
<Error><Key>denied.jpg</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
<Error><Key>archived.jpg</Key><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message></Error>
<Error><Key>busy.jpg</Key><Code>ServiceUnavailable</Code><Message>Please try again.</Message></Error>
</DeleteResult>"#,
    )
    .await;
    let store = unsigned_store(&endpoint);
    let keys: Vec<String> = ["ok.jpg", "denied.jpg", "archived.jpg", "busy.jpg"]
        .map(String::from)
        .into();
    let out = store
        .delete_many(ResourceType::Plain, &keys)
        .await
        .expect("one answer");
    assert_eq!(out[0], Ok(assetgc::store::Gone::Deleted), "{out:?}");
    let failed = |i: usize, kind: KeyFailure, code: &str| {
        assert!(
            out[i]
                .as_ref()
                .is_err_and(|e| e.kind == kind && e.message.contains(code)),
            "{}: {:?}",
            keys[i],
            out[i]
        );
    };
    failed(1, KeyFailure::Permanent, "AccessDenied");
    failed(2, KeyFailure::Permanent, "InvalidObjectState");
    failed(3, KeyFailure::Transient, "ServiceUnavailable");
    assert_eq!(store.calls(), 1, "one DeleteObjects call");
}

/// GETs the bucket-absolute `key` from moto: its status, body and ETag.
async fn s3_get(bucket: &Bucket, key: &str) -> (u16, Vec<u8>, String) {
    let path: Vec<String> = key
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect();
    let resp = reqwest::get(format!(
        "{}/{}/{}",
        bucket.endpoint,
        bucket.name,
        path.join("/")
    ))
    .await
    .expect("get");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, resp.bytes().await.expect("body").to_vec(), etag)
}

/// SPEC §6 invariant 4: objects above the single-copy ceiling (5 GiB on S3, lowered here to
/// 5 MiB) are quarantined by a multipart copy of ranged UploadPartCopy parts: the copy is whole,
/// byte for byte, moto's ETag says it was put together from 3 parts, and the source is gone.
/// Without replace, an existing destination is refused and both objects stay.
#[tokio::test(flavor = "multi_thread")]
async fn s3_objects_above_the_copy_ceiling_are_moved_by_a_multipart_copy() {
    use assetgc::store::s3::MultipartCopy;
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    const MIB: u64 = 1024 * 1024;
    let bucket = Bucket::create(&endpoint).await;
    let store = bucket.store("app/", 1).with_multipart_copy(MultipartCopy {
        above: 5 * MIB,
        part_size: 5 * MIB,
    });
    // 12 MiB and a bit: parts of 5, 5 and 2 MiB; every byte's value depends on its offset.
    let body: Vec<u8> = (0..12 * MIB + 3).map(|i| (i % 251) as u8).collect();
    bucket.put("app/big.bin", &body).await;
    bucket.put("app/small.bin", b"small").await;
    let moves = [
        ("big.bin".to_owned(), ".trash/t/big.bin".to_owned()),
        ("small.bin".to_owned(), ".trash/t/small.bin".to_owned()),
    ];
    let out = store
        .move_many(ResourceType::Plain, &moves, MoveOptions { replace: false })
        .await
        .expect("move_many");
    assert_eq!(out, [Ok(Moved::Moved), Ok(Moved::Moved)]);
    let (status, copied, etag) = s3_get(&bucket, "app/.trash/t/big.bin").await;
    assert_eq!(status, 200);
    assert!(copied == body, "the multipart copy holds the same bytes");
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "put together from 3 parts: ETag {etag}"
    );
    let small = store
        .lookup_many(ResourceType::Plain, &[".trash/t/small.bin".to_owned()])
        .await
        .expect("look-up");
    assert_eq!(small[0].as_ref().and_then(|o| o.size), Some(5), "{small:?}");
    assert_eq!(s3_get(&bucket, "app/big.bin").await.0, 404, "source gone");

    // Without replace onto an object that exists: refused, neither touched.
    bucket.put("app/big.bin", &body).await;
    bucket.put("app/taken.bin", b"someone else's").await;
    let out = store
        .move_many(
            ResourceType::Plain,
            &[("big.bin".to_owned(), "taken.bin".to_owned())],
            MoveOptions { replace: false },
        )
        .await
        .expect("move_many");
    assert!(
        out[0]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::AlreadyExists),
        "{out:?}"
    );
    let both = store
        .lookup_many(
            ResourceType::Plain,
            &["taken.bin".to_owned(), "big.bin".to_owned()],
        )
        .await
        .expect("look-ups");
    let sizes: Vec<Option<u64>> = both
        .iter()
        .map(|o| o.as_ref().and_then(|o| o.size))
        .collect();
    assert_eq!(sizes, [Some(14), Some(12 * MIB + 3)], "neither was touched");
}

/// Deletion finding 16: a CopyObject that outlasts the client's timeout may still complete on
/// the server. A proxy in front of moto holds back the CopyObject answer past the copy timeout
/// (lowered to 1 s here, 5 minutes in use): the move is confirmed by a look-up of the
/// destination (there, with the source's size) and completes, never fails with a copy left
/// behind.
#[tokio::test(flavor = "multi_thread")]
async fn s3_copy_whose_answer_times_out_is_confirmed_by_a_look_up() {
    use axum::extract::{Request, State};
    use std::sync::Arc;
    use std::time::Duration;
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    async fn forward(State(target): State<Arc<String>>, req: Request) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("a request body");
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out =
            reqwest::Client::new().request(parts.method.clone(), format!("{target}{path}"));
        for (name, value) in &parts.headers {
            if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                out = out.header(name, value);
            }
        }
        let resp = out.body(body).send().await.expect("moto answers");
        if parts.headers.contains_key("x-amz-copy-source") {
            // The copy is done on the server; its answer comes too late.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let status = resp.status();
        let mut headers = resp.headers().clone();
        headers.remove(http::header::TRANSFER_ENCODING);
        let mut answer = axum::response::Response::new(axum::body::Body::from(
            resp.bytes().await.unwrap_or_default(),
        ));
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        answer
    }
    let bucket = Bucket::create(&endpoint).await;
    bucket.put("app/slow.bin", b"a large object").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a proxy");
    let proxy = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::new(endpoint.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = Bucket::named(&proxy, &bucket.name)
        .store("app/", 1)
        .with_copy_timeout(Duration::from_secs(1));
    let out = store
        .move_many(
            ResourceType::Plain,
            &[("slow.bin".to_owned(), ".trash/t/slow.bin".to_owned())],
            MoveOptions { replace: false },
        )
        .await
        .expect("move_many");
    assert_eq!(
        out,
        [Ok(Moved::Moved)],
        "the copy is confirmed by its look-up"
    );
    let direct = bucket.store("app/", 1);
    let found = direct
        .lookup_many(
            ResourceType::Plain,
            &["slow.bin".to_owned(), ".trash/t/slow.bin".to_owned()],
        )
        .await
        .expect("look-ups");
    assert!(found[0].is_none(), "the source is gone: {found:?}");
    assert_eq!(found[1].as_ref().and_then(|o| o.size), Some(14));
}
