//! The Azure and GCS stores against their emulators (Azurite, fake-gcs-server): the conformance
//! suite, the prefix boundary, names no key can spell (SPEC §2), and unreachable stores.

mod common;

use std::time::SystemTime;

use assetgc::key::ResourceType;
use assetgc::store::azure::{AzureSettings, AzureStore, EMULATOR_ACCOUNT};
use assetgc::store::gcs::{GcsSettings, GcsStore};
use assetgc::store::{ListOptions, Store, StoreError};
use common::conformance::{self, Backend, Seeder, list_all};
use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};

/// Name characters left as they are in a request path; everything else is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `name` as a URL path: each segment percent-encoded, the `/`s (empty segments too) kept.
fn url_path(name: &str) -> String {
    name.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A container or bucket name no other test or run uses.
fn fresh_name() -> String {
    // Tests run at once and the clock can give two of them one reading: a counter too.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("assetgc-{nanos:x}-{n}")
}

/// Beside the store's prefix `app/`: names a prefix match without the `/` would take for its own.
const OUTSIDE_APP: &[&str] = &["other/x.jpg", "app2/y.jpg", "appx.jpg", "app", "ap/p.jpg"];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

/// Runs an async put from the suite's synchronous [`Seeder`].
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

// ---- Azure (Azurite) ----

/// Azurite's development key, published by Microsoft.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A fresh container on the Azurite the tests were given, and raw, signed puts into it.
struct Container {
    /// `http://127.0.0.1:PORT/devstoreaccount1`
    account_url: String,
    name: String,
    credential: AzureCredential,
    http: reqwest::Client,
}

impl Container {
    fn new(endpoint: &str, name: String) -> Container {
        Container {
            account_url: endpoint.trim_end_matches('/').to_owned(),
            name,
            credential: AzureCredential::AccessKey(
                AzureAccessKey::try_new(AZURITE_KEY).expect("the dev key is base64"),
            ),
            http: reqwest::Client::new(),
        }
    }

    async fn create(endpoint: &str) -> Container {
        let c = Container::new(endpoint, fresh_name());
        let url = format!("{}/{}?restype=container", c.account_url, c.name);
        let status = c.send(http::Method::PUT, &url, &[], Vec::new()).await;
        assert_eq!(status, 201, "create container {}", c.name);
        c
    }

    /// One signed request; its status.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> u16 {
        let mut req = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut req = req
            .body(object_store::client::HttpRequestBody::empty())
            .expect("a request");
        AzureAuthorizer::new(&self.credential, EMULATOR_ACCOUNT)
            .try_authorize(&mut req)
            .expect("sign a request");
        let mut builder = self.http.request(method, url);
        for (name, value) in req.headers() {
            builder = builder.header(name, value);
        }
        let resp = builder
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            panic!("{url}: HTTP {status}: {text}");
        }
        status
    }

    /// Puts a block blob named exactly `name` (container-absolute).
    async fn put(&self, name: &str, body: &[u8]) {
        let url = format!("{}/{}/{}", self.account_url, self.name, url_path(name));
        let headers = [
            ("x-ms-blob-type", "BlockBlob".to_owned()),
            ("content-length", body.len().to_string()),
            ("content-type", "application/octet-stream".to_owned()),
        ];
        self.send(http::Method::PUT, &url, &headers, body.to_vec())
            .await;
    }

    fn store(&self, prefix: &str, list_concurrency: usize) -> AzureStore {
        AzureStore::new(
            "test",
            AzureSettings {
                account: String::new(),
                container: self.name.clone(),
                prefix: prefix.to_owned(),
                access_key: None,
                endpoint: Some(self.account_url.clone()),
                use_emulator: true,
                list_concurrency,
            },
        )
        .expect("an Azure store over Azurite")
    }
}

/// Seeds an Azure store the way an application fills it: blobs put under the store's prefix.
struct Blobs<'a> {
    container: &'a Container,
    prefix: &'a str,
}

impl Seeder for Blobs<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        block_on(self.container.put(&format!("{}{key}", self.prefix), body));
    }
}

fn azurite() -> Option<String> {
    common::require_service("Azurite", "ASSETGC_TEST_AZURITE_ENDPOINT")
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_store_passes_the_conformance_suite() {
    let Some(endpoint) = azurite() else {
        return;
    };
    let container = Container::create(&endpoint).await;
    for name in OUTSIDE_APP {
        container.put(name, b"not this store's").await;
    }
    let store = container.store("app/", 8);
    let seeder = Blobs {
        container: &container,
        prefix: "app/",
    };
    // A delete of a name that is not there answers 404, which `object_store` passes on.
    conformance::run(&Backend {
        tells_already_gone: true,
        ..Backend::plain(&store, &seeder)
    })
    .await;

    // Keys are relative to the prefix: no key reaches the blobs beside it.
    let keys: Vec<String> = ["other/x.jpg", "../other/x.jpg", "2/y.jpg", "x.jpg", ""]
        .map(String::from)
        .into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert!(store.calls() > 0, "calls are counted");

    // The same blobs listed sequentially in small pages: page boundaries fall everywhere.
    let store = container.store("app/", 1).with_page_size(97);
    let calls = store.calls();
    let listing = list_all(&store, ListOptions::default()).await;
    let parallel = list_all(&container.store("app/", 8), ListOptions::default()).await;
    assert_eq!(
        sorted(listing.keys().iter().map(|k| (*k).to_owned()).collect()),
        sorted(parallel.keys().iter().map(|k| (*k).to_owned()).collect()),
        "a sequential listing in pages of 97 holds what a parallel one does"
    );
    let pages = store.calls() - calls;
    let expected = listing.objects.len().div_ceil(97) as u64;
    assert!(
        pages >= expected,
        "{} objects in pages of 97 took {pages} calls",
        listing.objects.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_delete_many_counts_its_requests_and_stays_inside_the_prefix() {
    let Some(endpoint) = azurite() else {
        return;
    };
    let container = Container::create(&endpoint).await;
    for name in OUTSIDE_APP.iter().chain(&["app/x.jpg", "app/keep.jpg"]) {
        container.put(name, b"x").await;
    }
    let mut keys: Vec<String> = (0..300).map(|i| format!("many/{i:03}.jpg")).collect();
    for key in keys.iter().step_by(3) {
        container.put(&format!("app/{key}"), b"x").await;
    }
    keys.push("x.jpg".to_owned());
    keys.extend(["../other/x.jpg", "", "/x.jpg"].map(String::from));
    let store = container.store("app/", 8);
    let calls = store.calls();
    let outcomes = store
        .delete_many(ResourceType::Plain, &keys)
        .await
        .expect("delete_many");
    assert!(outcomes[..301].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(outcomes[301..].iter().all(Result::is_err), "{outcomes:?}");
    assert_eq!(store.calls() - calls, 301, "one request per name sent");

    let listing = list_all(&container.store("", 1), ListOptions::default()).await;
    let mut expected: Vec<String> = OUTSIDE_APP.iter().map(|k| (*k).to_owned()).collect();
    expected.push("app/keep.jpg".to_owned());
    assert_eq!(
        sorted(listing.keys().iter().map(|k| (*k).to_owned()).collect()),
        sorted(expected),
        "{listing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_unrepresentable_names_never_stop_a_listing() {
    let Some(endpoint) = azurite() else {
        return;
    };
    let container = Container::create(&endpoint).await;
    // Azurite keeps `//` in a blob name as Azure does. Names with `.` or `..` segments cannot be
    // seeded here: every URL library folds them away before the request is sent.
    for (name, body) in [
        ("app/a.jpg", &b"a"[..]),
        ("app/x//y.jpg", b"xy"),
        ("app/d/e//f.jpg", b"f"),
        ("app/d/ok.jpg", b"ok"),
        ("app/zz.jpg", b"zz"),
        ("appx//y.jpg", b"outside"),
    ] {
        container.put(name, body).await;
    }
    for list_concurrency in [8, 1] {
        // Pages of one name: the unrepresentable names sit on pages of their own, mid-listing.
        let store = container.store("app/", list_concurrency).with_page_size(1);
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
                sorted(listing.keys().iter().map(|k| (*k).to_owned()).collect()),
                ["a.jpg", "d/ok.jpg", "zz.jpg"],
                "{what}: {listing:?}"
            );
            assert_eq!(
                sorted(listing.unrepresentable.clone()),
                ["d/e//f.jpg", "x//y.jpg"],
                "{what}: {listing:?}"
            );
        }
        let keys: Vec<String> = ["x//y.jpg", "x/y.jpg", "d/e//f.jpg", "a.jpg"]
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
        assert_eq!(found, ["a.jpg"], "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_check_of_a_missing_container_is_unreachable_and_names_it() {
    let Some(endpoint) = azurite() else {
        return;
    };
    let container = Container::new(&endpoint, "assetgc-never-created".to_owned());
    match container.store("", 8).check().await {
        Err(StoreError::NotFound { message: msg }) => {
            assert!(msg.contains("assetgc-never-created"), "{msg}");
            assert!(msg.contains("ContainerNotFound"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(!msg.contains(AZURITE_KEY), "no secrets: {msg}");
        }
        other => panic!("check() of a missing container: {other:?}"),
    }
}

/// A refused connection ends the listing with an error after the retries, never with a quiet,
/// shorter listing; `check()` calls it unreachable.
#[tokio::test(flavor = "multi_thread")]
async fn azure_store_that_does_not_answer_fails_the_listing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let container = Container::new(
        &format!("http://127.0.0.1:{port}/{EMULATOR_ACCOUNT}"),
        "gone".to_owned(),
    );
    for list_concurrency in [8, 1] {
        let store = container.store("app/", list_concurrency);
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
        match store.check().await {
            Err(StoreError::Unreachable { message: msg, .. }) => {
                assert!(msg.contains("`gone`"), "{msg}");
                assert!(!msg.contains('\n'), "one line: {msg}");
            }
            other => panic!("check() of a refused port: {other:?}"),
        }
    }
}

// ---- GCS (fake-gcs-server) ----

/// A fresh bucket on the GCS emulator the tests were given, and uploads through its JSON API,
/// which takes the name as a query parameter: any name can be put, `.` and `..` segments too.
struct Bucket {
    endpoint: String,
    name: String,
    http: reqwest::Client,
}

impl Bucket {
    fn new(endpoint: &str, name: String) -> Bucket {
        Bucket {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            name,
            http: reqwest::Client::new(),
        }
    }

    async fn create(endpoint: &str) -> Bucket {
        let b = Bucket::new(endpoint, fresh_name());
        let resp = b
            .http
            .post(format!("{}/storage/v1/b?project=assetgc", b.endpoint))
            .header("content-type", "application/json")
            .body(format!(r#"{{"name":"{}"}}"#, b.name))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket on {endpoint}: {e}"));
        assert!(resp.status().is_success(), "create bucket: {resp:?}");
        b
    }

    async fn put(&self, name: &str, body: &[u8]) {
        let resp = self
            .http
            .post(format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
                self.endpoint,
                self.name,
                percent_encoding::utf8_percent_encode(name, PATH_SEGMENT)
            ))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {name:?}: {e}"));
        assert!(resp.status().is_success(), "put {name:?}: {resp:?}");
    }

    fn store(&self, prefix: &str, list_concurrency: usize) -> GcsStore {
        GcsStore::new(
            "test",
            GcsSettings {
                bucket: self.name.clone(),
                prefix: prefix.to_owned(),
                endpoint: Some(self.endpoint.clone()),
                service_account_key: None,
                list_concurrency,
            },
        )
        .expect("a GCS store over the emulator")
    }
}

struct GcsObjects<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
}

impl Seeder for GcsObjects<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        block_on(self.bucket.put(&format!("{}{key}", self.prefix), body));
    }
}

fn gcs_emulator() -> Option<String> {
    common::require_service("the GCS emulator", "ASSETGC_TEST_GCS_ENDPOINT")
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_store_passes_the_conformance_suite() {
    let Some(endpoint) = gcs_emulator() else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for name in OUTSIDE_APP {
        bucket.put(name, b"not this store's").await;
    }
    let store = bucket.store("app/", 8);
    let seeder = GcsObjects {
        bucket: &bucket,
        prefix: "app/",
    };
    // A delete of a name that is not there answers 404, which `object_store` passes on.
    conformance::run(&Backend {
        tells_already_gone: true,
        ..Backend::plain(&store, &seeder)
    })
    .await;

    let keys: Vec<String> = ["other/x.jpg", "../other/x.jpg", "2/y.jpg", "x.jpg", ""]
        .map(String::from)
        .into();
    let answers = store
        .lookup_many(ResourceType::Plain, &keys)
        .await
        .expect("lookup_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert!(store.calls() > 0, "calls are counted");

    // Sequentially, in the API's own pages of 1000 and in pages of 97.
    let parallel = list_all(&store, ListOptions::default()).await;
    let expected = sorted(parallel.keys().iter().map(|k| (*k).to_owned()).collect());
    for page_size in [1000, 97] {
        let store = bucket.store("app/", 1).with_page_size(page_size);
        let listing = list_all(&store, ListOptions::default()).await;
        assert_eq!(
            sorted(listing.keys().iter().map(|k| (*k).to_owned()).collect()),
            expected,
            "a sequential listing in pages of {page_size} holds what a parallel one does"
        );
        let min_calls = listing.objects.len().div_ceil(page_size as usize) as u64;
        assert!(
            store.calls() >= min_calls && min_calls > 1,
            "{} objects in pages of {page_size} took {} calls",
            listing.objects.len(),
            store.calls()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_unrepresentable_names_never_stop_a_listing() {
    let Some(endpoint) = gcs_emulator() else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for (name, body) in [
        ("app/a.jpg", &b"a"[..]),
        ("app/x//y.jpg", b"xy"),
        ("app/x/./y.jpg", b"x"),
        ("app/../z", b"x"),
        ("app/line\nbreak.jpg", b"x"),
        // A console folder marker: zero bytes, ending in `/`.
        ("app/dir/", b""),
        ("app/dir/inside.jpg", b"inside"),
        // Not zero bytes: a real object whose name ends in `/`, which no key can name.
        ("app/notdir/", b"x"),
        ("app/zz.jpg", b"zz"),
        ("appx//y.jpg", b"outside"),
    ] {
        bucket.put(name, body).await;
    }
    for list_concurrency in [8, 1] {
        // Pages of one name: the unrepresentable names sit on pages of their own, mid-listing.
        let store = bucket.store("app/", list_concurrency).with_page_size(1);
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
                sorted(listing.keys().iter().map(|k| (*k).to_owned()).collect()),
                ["a.jpg", "dir/inside.jpg", "zz.jpg"],
                "{what}: {listing:?}"
            );
            assert_eq!(
                sorted(listing.unrepresentable.clone()),
                [
                    "../z",
                    "line\\nbreak.jpg",
                    "notdir/",
                    "x/./y.jpg",
                    "x//y.jpg"
                ],
                "{what}: {listing:?}"
            );
        }
        let keys: Vec<String> = ["x//y.jpg", "x/./y.jpg", "../z", "dir", "dir/", "a.jpg"]
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
        assert_eq!(found, ["a.jpg"], "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_check_of_a_missing_bucket_is_unreachable_and_names_it() {
    let Some(endpoint) = gcs_emulator() else {
        return;
    };
    let bucket = Bucket::new(&endpoint, "assetgc-never-created".to_owned());
    match bucket.store("", 8).check().await {
        Err(StoreError::NotFound { message: msg }) => {
            assert!(msg.contains("assetgc-never-created"), "{msg}");
            assert!(msg.contains("404"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        other => panic!("check() of a missing bucket: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_store_that_does_not_answer_fails_the_listing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bucket = Bucket::new(&format!("http://127.0.0.1:{port}"), "gone".to_owned());
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
        match store.check().await {
            Err(StoreError::Unreachable { message: msg, .. }) => {
                assert!(msg.contains("`gone`"), "{msg}");
                assert!(!msg.contains('\n'), "one line: {msg}");
            }
            other => panic!("check() of a refused port: {other:?}"),
        }
    }
}

/// Scan finding 23 (SPEC §4: a look-up that cannot tell never reads as missing): look-ups go
/// through the JSON API that lists, not `object_store`'s XML HEAD. fake-gcs-server routes its
/// XML API only for its `-public-host` (`127.0.0.1:PORT`): reached as `localhost:PORT` it serves
/// the JSON API and 404s every XML HEAD, as it does when started without `-public-host`. Every
/// listed object is found by a look-up there, with the listing's size and time.
#[tokio::test(flavor = "multi_thread")]
async fn gcs_lookups_agree_with_the_listing_where_the_xml_api_answers_404() {
    let Some(endpoint) = gcs_emulator() else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    let keys = ["a.jpg", "dir/b c.png", "caf\u{e9}/x.jpg", "50%.png"];
    for (i, key) in keys.iter().enumerate() {
        bucket.put(&format!("app/{key}"), &vec![b'x'; i + 1]).await;
    }
    let other_host = bucket.endpoint.replacen("127.0.0.1", "localhost", 1);
    let xml_head = reqwest::Client::new()
        .head(format!("{other_host}/{}/app/a.jpg", bucket.name))
        .send()
        .await
        .expect("an XML HEAD");
    assert_eq!(
        xml_head.status().as_u16(),
        404,
        "precondition: the XML API does not answer at {other_host}"
    );
    let store = Bucket::new(&other_host, bucket.name.clone()).store("app/", 1);
    let listing = list_all(
        &store,
        ListOptions {
            with_meta: true,
            exclude_prefixes: Vec::new(),
            since: None,
        },
    )
    .await;
    assert_eq!(listing.objects.len(), keys.len(), "{listing:?}");
    let listed: Vec<String> = listing.objects.iter().map(|o| o.key.clone()).collect();
    let mut asked = listed.clone();
    asked.push("absent.jpg".to_owned());
    let found = store
        .lookup_many(ResourceType::Plain, &asked)
        .await
        .expect("look-ups answer");
    for (object, answer) in listing.objects.iter().zip(&found) {
        let answer = answer
            .as_ref()
            .unwrap_or_else(|| panic!("{:?} is listed but its look-up says missing", object.key));
        assert_eq!(answer.key, object.key);
        assert_eq!(answer.size, object.size, "{:?}", object.key);
        assert_eq!(answer.modified, object.modified, "{:?}", object.key);
    }
    assert_eq!(found.last(), Some(&None), "an absent key is absent");
}

/// What the proxy in front of Azurite says of a copy's `x-ms-copy-status`.
#[derive(Clone, Copy)]
enum CopyStatus {
    /// `pending` in the Copy Blob answer and the first two look-ups of the copy, then Azurite's
    /// own (`success`).
    PendingTwiceThenReal,
    /// `pending` in the Copy Blob answer, `failed` in every look-up of the copy.
    PendingThenFailed,
}

/// A proxy in front of Azurite that passes every request on and rewrites only
/// `x-ms-copy-status` on Copy Blob answers and on look-ups of names under `.trash/`: Azurite
/// copies within an account at once, and Azure answers `pending` for copies that are not.
async fn copy_status_proxy(azurite: &str, status: CopyStatus) -> String {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Proxy {
        target: String,
        status: CopyStatus,
        looked: AtomicUsize,
        http: reqwest::Client,
    }
    async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body: Bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("a request body");
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut out = p
            .http
            .request(parts.method.clone(), format!("{}{path}", p.target));
        for (name, value) in &parts.headers {
            // reqwest sets the length of the body it sends itself.
            if name != http::header::HOST
                && name != http::header::CONTENT_LENGTH
                && name != http::header::TRANSFER_ENCODING
            {
                out = out.header(name, value);
            }
        }
        let resp = out.body(body).send().await.expect("Azurite answers");
        let code = resp.status();
        let mut headers = resp.headers().clone();
        headers.remove(http::header::TRANSFER_ENCODING);
        let bytes = resp.bytes().await.expect("Azurite's body");
        let is_copy =
            parts.method == http::Method::PUT && parts.headers.contains_key("x-ms-copy-source");
        let is_copy_lookup = parts.method == http::Method::HEAD && path.contains("/.trash/");
        let rewritten = if is_copy {
            Some("pending")
        } else if is_copy_lookup {
            let n = p.looked.fetch_add(1, Ordering::SeqCst);
            match p.status {
                CopyStatus::PendingTwiceThenReal if n < 2 => Some("pending"),
                CopyStatus::PendingTwiceThenReal => None,
                CopyStatus::PendingThenFailed => Some("failed"),
            }
        } else {
            None
        };
        if let Some(s) = rewritten {
            headers.insert("x-ms-copy-status", http::HeaderValue::from_static(s));
        }
        let mut answer = axum::response::Response::new(axum::body::Body::from(bytes));
        *answer.status_mut() = code;
        *answer.headers_mut() = headers;
        answer
    }
    let account = azurite.trim_end_matches('/');
    let (base, account_path) = account
        .rsplit_once('/')
        .expect("an Azurite endpoint ends in its account");
    let proxy = Arc::new(Proxy {
        target: base.to_owned(),
        status,
        looked: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/{account_path}")
}

/// Deletion finding 5: an Azure move deletes its source only once the copy is confirmed
/// (`x-ms-copy-status` `success`, the source's size). A copy that Azure reports `pending` is
/// followed until it succeeds; one that ends `failed` fails the move and leaves the source.
#[tokio::test(flavor = "multi_thread")]
async fn azure_moves_delete_the_source_only_after_the_copy_is_confirmed() {
    use assetgc::store::{MoveOptions, Moved};
    let Some(endpoint) = azurite() else {
        return;
    };
    let container = Container::create(&endpoint).await;
    container.put("app/slow.jpg", b"slow copy").await;
    container.put("app/failing.jpg", b"failing copy").await;
    let direct = container.store("app/", 1);

    let proxied = Container::new(
        &copy_status_proxy(&endpoint, CopyStatus::PendingTwiceThenReal).await,
        container.name.clone(),
    );
    let out = proxied
        .store("app/", 1)
        .move_many(
            ResourceType::Plain,
            &[("slow.jpg".to_owned(), ".trash/t/slow.jpg".to_owned())],
            MoveOptions { replace: false },
        )
        .await
        .expect("move_many");
    assert_eq!(out, [Ok(Moved::Moved)], "a pending copy is waited for");
    let found = direct
        .lookup_many(
            ResourceType::Plain,
            &["slow.jpg".to_owned(), ".trash/t/slow.jpg".to_owned()],
        )
        .await
        .expect("look-ups");
    assert!(
        found[0].is_none(),
        "the source is gone once the copy succeeded"
    );
    assert_eq!(found[1].as_ref().and_then(|o| o.size), Some(9));

    let proxied = Container::new(
        &copy_status_proxy(&endpoint, CopyStatus::PendingThenFailed).await,
        container.name.clone(),
    );
    let out = proxied
        .store("app/", 1)
        .move_many(
            ResourceType::Plain,
            &[("failing.jpg".to_owned(), ".trash/t/failing.jpg".to_owned())],
            MoveOptions { replace: false },
        )
        .await;
    let failed = match &out {
        Err(_) => true,
        Ok(v) => v[0].is_err(),
    };
    assert!(failed, "a failed copy fails the move: {out:?}");
    let found = direct
        .lookup_many(ResourceType::Plain, &["failing.jpg".to_owned()])
        .await
        .expect("look-ups");
    assert_eq!(
        found[0].as_ref().and_then(|o| o.size),
        Some(12),
        "the source stays when the copy failed"
    );
}
