//! The S3 store, for AWS and every S3-compatible service (MinIO, R2, Spaces, Cloudcube).
//!
//! Look-ups and deletes (DeleteObjects, 1000 keys a call) go through `object_store`'s `AmazonS3`.
//! Listings do not: `object_store` parses every key of a page into a `Path` and fails the whole
//! page (and so the rest of the listing) on one key with an empty, `.` or `..` segment or a control
//! character, and SPEC §2 wants such keys counted, not fatal. So ListObjectsV2 is sent here by hand, signed with `object_store`'s own SigV4
//! signer, and keys stay raw strings until they are known to be representable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt, RetryConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::cloud::{self, CallError};
use super::{
    Capabilities, Gone, KeyError, ListOptions, ListStream, Listed, MoveOptions, Moved, Object,
    Store, StoreError, Usage, plain_only,
};
use crate::key::{ResourceType, is_representable};

mod copy;

pub use copy::MultipartCopy;

#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix the store is scoped to, "" or ending in '/'; a hard boundary: nothing outside it
    /// is listed, looked up or touched, and keys are reported relative to it.
    pub prefix: String,
    /// e.g. `http://127.0.0.1:5000` (moto, MinIO, R2, Spaces); `None` is AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub allow_http: bool,
    /// `false` is path-style (moto, MinIO).
    pub virtual_hosted_style: bool,
    /// Top-level prefixes listed at once; 1 lists sequentially.
    pub list_concurrency: usize,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("list_concurrency", &self.list_concurrency)
            .finish()
    }
}

/// Keys a ListObjectsV2 call returns at most; S3's own ceiling.
const PAGE: u32 = 1000;
/// Listing pages waiting for the consumer; bounds memory to a few pages whatever the bucket.
const PAGES_IN_FLIGHT: usize = 4;
/// HEAD requests in flight in one `lookup_many`.
const HEADS_AT_ONCE: usize = 16;
/// Keys a DeleteObjects call takes at most; S3's own ceiling.
const DELETES_PER_CALL: usize = 1000;
/// DeleteObjects calls in flight in one `delete_many`.
const DELETE_CALLS_AT_ONCE: usize = 4;
/// Attempts of one listing call before the listing fails.
const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_mins(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4's rule).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub struct S3Store {
    inner: Arc<Inner>,
    heads: AmazonS3,
}

struct Inner {
    name: String,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: String,
    /// The bucket's base URL, path-style or virtual-hosted, without a trailing `/`.
    bucket_url: String,
    credential: Option<AwsCredential>,
    list_concurrency: usize,
    http: reqwest::Client,
    /// For copies, which may take minutes on the server (see `s3/copy.rs`).
    copy_http: reqwest::Client,
    multipart: MultipartCopy,
    calls: AtomicU64,
}

impl S3Store {
    pub fn new(name: &str, settings: S3Settings) -> Result<S3Store, StoreError> {
        let S3Settings {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
            allow_http,
            virtual_hosted_style,
            list_concurrency,
        } = settings;
        let config = |msg: String| StoreError::permanent(format!("s3 store `{name}`: {msg}"));
        if bucket.is_empty() {
            return Err(config("no bucket".to_owned()));
        }
        let prefix_ok = prefix.is_empty() || prefix.strip_suffix('/').is_some_and(is_representable);
        if !prefix_ok {
            return Err(config(format!(
                "prefix `{prefix}` must be empty or a key path ending in `/`"
            )));
        }
        let credential = match (access_key_id, secret_access_key) {
            (Some(key_id), Some(secret_key)) => Some(AwsCredential {
                key_id,
                secret_key,
                token: session_token,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(config(
                    "an access key id was given without a secret access key".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(config(
                    "a secret access key was given without an access key id".to_owned(),
                ));
            }
        };
        let bucket_url = bucket_url(&bucket, endpoint.as_deref(), &region, virtual_hosted_style)
            .map_err(config)?;

        let (http, copy_http) = (client(REQUEST_TIMEOUT), client(copy::COPY_TIMEOUT));
        let (http, copy_http) = (http.map_err(config)?, copy_http.map_err(config)?);

        // Given the bucket URL already worked out, object_store takes it as-is in
        // virtual-hosted mode, so listings and look-ups always address the same place.
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_endpoint(&bucket_url)
            .with_virtual_hosted_style_request(true)
            .with_allow_http(allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: FIRST_BACKOFF,
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: (TRIES - 1) as usize,
                retry_timeout: Duration::from_mins(2),
            });
        builder = match &credential {
            Some(c) => {
                let b = builder
                    .with_access_key_id(&c.key_id)
                    .with_secret_access_key(&c.secret_key);
                match &c.token {
                    Some(t) => b.with_token(t),
                    None => b,
                }
            }
            None => builder.with_skip_signature(true),
        };
        let heads = builder
            .build()
            .map_err(|e| config(format!("invalid settings: {e}")))?;

        Ok(S3Store {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                bucket,
                prefix,
                endpoint,
                region,
                bucket_url,
                credential,
                list_concurrency: list_concurrency.max(1),
                http,
                copy_http,
                multipart: MultipartCopy::default(),
                calls: AtomicU64::new(0),
            }),
            heads,
        })
    }

    /// Copies objects larger than `multipart.above` bytes in parts of `multipart.part_size`
    /// instead of above S3's 5 GiB ceiling: tests use it to take the multipart path with small
    /// objects (moto wants parts of at least 5 MiB but the last).
    #[must_use]
    pub fn with_multipart_copy(mut self, multipart: MultipartCopy) -> S3Store {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.multipart = multipart;
        }
        self
    }

    /// Gives a copy request `timeout` instead of [`copy::COPY_TIMEOUT`] before its answer is
    /// given up on and the copy confirmed by a look-up: tests use it with a slow server.
    #[must_use]
    pub fn with_copy_timeout(mut self, timeout: Duration) -> S3Store {
        if let (Some(inner), Ok(http)) = (Arc::get_mut(&mut self.inner), client(timeout)) {
            inner.copy_http = http;
        }
        self
    }

    /// Requests sent to the service so far (listing calls, retries included, look-ups and
    /// DeleteObjects calls).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

/// An HTTP client whose requests time out after `timeout`.
fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

fn bucket_url(
    bucket: &str,
    endpoint: Option<&str>,
    region: &str,
    virtual_hosted: bool,
) -> Result<String, String> {
    let Some(endpoint) = endpoint else {
        return Ok(if virtual_hosted {
            format!("https://{bucket}.s3.{region}.amazonaws.com")
        } else {
            format!("https://s3.{region}.amazonaws.com/{bucket}")
        });
    };
    let endpoint = endpoint.trim_end_matches('/');
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| format!("endpoint `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("endpoint `{endpoint}` is not an http(s) URL"));
    }
    if !virtual_hosted {
        return Ok(format!("{endpoint}/{bucket}"));
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    if !host.starts_with(&format!("{bucket}.")) {
        url.set_host(Some(&format!("{bucket}.{host}")))
            .map_err(|e| format!("endpoint `{endpoint}`: {e}"))?;
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

// ---- ListObjectsV2 ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(default)]
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Content {
    key: String,
    #[serde(default)]
    size: u64,
    last_modified: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommonPrefix {
    prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// A name as S3 sent it: decoded from `encoding-type=url` when the answer says so. Non-UTF-8 after
/// decoding keeps the bytes for a lossy rendering.
enum RawKey {
    Utf8(String),
    Bytes(Vec<u8>),
}

fn decode_name(name: &str, url_encoded: bool) -> RawKey {
    if !url_encoded {
        return RawKey::Utf8(name.to_owned());
    }
    // S3 encodes names form-style: a space may come back as `+`, a literal `+` always as `%2B`.
    let plus_as_space = name.replace('+', " ");
    let bytes: Vec<u8> = percent_decode_str(&plus_as_space).collect();
    match String::from_utf8(bytes) {
        Ok(s) => RawKey::Utf8(s),
        Err(e) => RawKey::Bytes(e.into_bytes()),
    }
}

struct ListQuery<'a> {
    prefix: &'a str,
    delimiter: bool,
    max_keys: u32,
    token: Option<&'a str>,
}

impl Inner {
    fn what(&self) -> String {
        format!("s3 store `{}` (bucket `{}`)", self.name, self.bucket)
    }

    fn describe(&self) -> String {
        let endpoint = self
            .endpoint
            .as_deref()
            .map_or_else(|| format!("AWS {}", self.region), str::to_owned);
        format!("s3://{}/{} ({endpoint})", self.bucket, self.prefix)
    }

    fn list_url(&self, q: &ListQuery<'_>) -> String {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut query = format!(
            "list-type=2&encoding-type=url&max-keys={}&prefix={}",
            q.max_keys,
            enc(q.prefix)
        );
        if q.delimiter {
            query.push_str("&delimiter=%2F");
        }
        if let Some(token) = q.token {
            query.push_str("&continuation-token=");
            query.push_str(&enc(token));
        }
        format!("{}/?{query}", self.bucket_url)
    }

    /// One GET, signed when there are credentials, its XML answer read as `T`. Counts the call.
    async fn get_once<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, CallError> {
        let fail = |msg: String, retry: bool| CallError {
            msg,
            status: None,
            retry,
        };
        let mut req = http::Request::builder()
            .method(http::Method::GET)
            .uri(url)
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| fail(format!("bad request URL: {e}"), false))?;
        if let Some(credential) = &self.credential {
            AwsAuthorizer::new(credential, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|e| fail(format!("cannot sign the request: {e}"), false))?;
        }
        let mut builder = self.http.get(url);
        for (name, value) in req.headers() {
            builder = builder.header(name, value);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = builder.send().await.map_err(|e| {
            let retry = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
            fail(format!("request failed: {}", error_chain(&e)), retry)
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            fail(
                format!("reading the answer failed: {}", error_chain(&e)),
                true,
            )
        })?;
        if status.is_success() {
            return quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| fail(format!("unreadable answer: {e}"), false));
        }
        let err: ErrorBody = quick_xml::de::from_reader(body.as_ref()).unwrap_or_default();
        let code = err.code.unwrap_or_default();
        let retry = status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || code == "SlowDown";
        let mut msg = format!("HTTP {}", status.as_u16());
        if !code.is_empty() {
            msg = format!("{msg} {code}");
        }
        if let Some(m) = err.message.filter(|m| !m.is_empty()) {
            msg = format!("{msg}: {m}");
        }
        Err(CallError {
            msg,
            status: Some(status.as_u16()),
            retry,
        })
    }

    /// One listing call, tried up to [`TRIES`] times with doubling, jittered waits.
    async fn list_call(&self, q: &ListQuery<'_>) -> Result<ListBucketResult, CallError> {
        let url = self.list_url(q);
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.get_once::<ListBucketResult>(&url).await {
                Err(e) if e.retry && attempt < TRIES => {
                    tokio::time::sleep(jitter(wait)).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(mut e) => {
                    if e.retry {
                        e.msg = format!("{} (gave up after {TRIES} tries)", e.msg);
                    }
                    return Err(e);
                }
                Ok(page) => return Ok(page),
            }
        }
    }

    fn failed(&self, prefix: &str, e: CallError) -> StoreError {
        let message = format!("{}: listing `{prefix}` failed: {}", self.what(), e.msg);
        e.into_store_error(message)
    }

    fn excluded(opts: &ListOptions, relative: &str) -> bool {
        opts.exclude_prefixes
            .iter()
            .any(|p| relative.starts_with(p.as_str()))
    }

    /// Turns the `Contents` of a page into entries relative to the store prefix.
    fn entries(
        &self,
        contents: Vec<Content>,
        url_encoded: bool,
        opts: &ListOptions,
    ) -> Vec<Listed> {
        let mut items = Vec::with_capacity(contents.len());
        for c in contents {
            let key = match decode_name(&c.key, url_encoded) {
                RawKey::Utf8(k) => k,
                RawKey::Bytes(b) => {
                    let lossy = String::from_utf8_lossy(&b).into_owned();
                    let relative = lossy.strip_prefix(self.prefix.as_str()).unwrap_or(&lossy);
                    if !Self::excluded(opts, relative) {
                        items.push(Listed::Unrepresentable(relative.to_owned()));
                    }
                    continue;
                }
            };
            // The server was asked for this prefix only; anything else is not this store's.
            let Some(relative) = key.strip_prefix(self.prefix.as_str()) else {
                continue;
            };
            if c.size == 0 && (relative.is_empty() || relative.ends_with('/')) {
                // A console folder marker, not an object (SPEC §2).
                continue;
            }
            if Self::excluded(opts, relative) {
                continue;
            }
            if !is_representable(relative) {
                let shown = if relative.chars().any(char::is_control) {
                    relative.escape_debug().to_string()
                } else {
                    relative.to_owned()
                };
                items.push(Listed::Unrepresentable(shown));
                continue;
            }
            let modified = c
                .last_modified
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            items.push(Listed::Object(Object::plain(
                relative.to_owned(),
                Some(c.size),
                modified,
            )));
        }
        items
    }

    /// Lists everything under `prefix` (absolute), page by page into `tx`. `Err(None)` when the
    /// receiver is gone, `Err(Some(_))` when a call failed.
    async fn list_prefix(
        &self,
        prefix: &str,
        opts: &ListOptions,
        tx: &Pages,
    ) -> Result<(), Option<StoreError>> {
        let mut token: Option<String> = None;
        loop {
            let q = ListQuery {
                prefix,
                delimiter: false,
                max_keys: PAGE,
                token: token.as_deref(),
            };
            let page = self
                .list_call(&q)
                .await
                .map_err(|e| Some(self.failed(prefix, e)))?;
            let url_encoded = is_url_encoded(page.encoding_type.as_deref());
            let items = self.entries(page.contents, url_encoded, opts);
            if !items.is_empty() && tx.send(Ok(items)).await.is_err() {
                return Err(None);
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                (true, None) => {
                    return Err(Some(StoreError::transient(format!(
                        "{}: listing `{prefix}` was cut short: a truncated page came without a \
                         continuation token",
                        self.what()
                    ))));
                }
                (false, _) => return Ok(()),
            }
        }
    }

    /// Discovers the top-level common prefixes (sending the top-level objects on the way), then
    /// lists each of them fully, `list_concurrency` at once.
    async fn list_parallel(
        self: &Arc<Self>,
        opts: &ListOptions,
        tx: &Pages,
    ) -> Result<(), Option<StoreError>> {
        let mut prefixes: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let q = ListQuery {
                prefix: &self.prefix,
                delimiter: true,
                max_keys: PAGE,
                token: token.as_deref(),
            };
            let page = self
                .list_call(&q)
                .await
                .map_err(|e| Some(self.failed(&self.prefix, e)))?;
            let url_encoded = is_url_encoded(page.encoding_type.as_deref());
            for cp in page.common_prefixes {
                // Common prefixes are listed by their raw (decoded) bytes; one that is not UTF-8
                // is still listed so each key below it is reported.
                let name = match decode_name(&cp.prefix, url_encoded) {
                    RawKey::Utf8(s) => s,
                    RawKey::Bytes(b) => {
                        let lossy = String::from_utf8_lossy(&b).into_owned();
                        let relative = lossy.strip_prefix(self.prefix.as_str()).unwrap_or(&lossy);
                        if !Self::excluded(opts, relative) {
                            let item = Listed::Unrepresentable(format!(
                                "{relative} (a prefix that is not UTF-8: nothing below it is listed)"
                            ));
                            if tx.send(Ok(vec![item])).await.is_err() {
                                return Err(None);
                            }
                        }
                        continue;
                    }
                };
                let Some(relative) = name.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                if !Self::excluded(opts, relative) {
                    prefixes.push(name);
                }
            }
            let items = self.entries(page.contents, url_encoded, opts);
            if !items.is_empty() && tx.send(Ok(items)).await.is_err() {
                return Err(None);
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                (true, None) => {
                    return Err(Some(StoreError::transient(format!(
                        "{}: the prefix discovery listing was cut short: a truncated page came \
                         without a continuation token",
                        self.what()
                    ))));
                }
                (false, _) => break,
            }
        }
        futures::stream::iter(prefixes)
            .map(|p| async move { self.list_prefix(&p, opts, tx).await })
            .buffer_unordered(self.list_concurrency)
            .try_collect::<()>()
            .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        let q = ListQuery {
            prefix: &self.prefix,
            delimiter: false,
            max_keys: 1,
            token: None,
        };
        match self.list_call(&q).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let cause = match e.status {
                    Some(403) => format!("access denied ({})", e.msg),
                    Some(404) => format!("no such bucket ({})", e.msg),
                    _ => e.msg.clone(),
                };
                let message = format!("{} at {}: {cause}", self.what(), self.describe());
                Err(e.into_unreached(message))
            }
        }
    }
}

type Pages = mpsc::Sender<Result<Vec<Listed>, StoreError>>;

fn is_url_encoded(encoding: Option<&str>) -> bool {
    encoding.is_some_and(|e| e.eq_ignore_ascii_case("url"))
}

/// `err` and its sources on one line: reqwest's own message rarely says why a connection failed.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `wait` give or take a quarter, so parallel listings that failed together do not retry together.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // nanos % 501 is 0..=500, i.e. 750‰..=1250‰ of the wait.
    wait * (750 + nanos % 501) / 1000
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Moves without replace refuse atomically on AWS, which honours `If-None-Match: *` on
    /// CopyObject. Elsewhere (moto, which ignores it there, and other S3-compatible services)
    /// the look-up of the destination just before the copy is the check.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_no_replace: self.inner.endpoint.is_none(),
            ..Capabilities::plain(PAGE as usize)
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            api_calls: self.calls(),
            full_list_calls: 0,
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        let (tx, rx) = mpsc::channel(PAGES_IN_FLIGHT);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let result = if inner.list_concurrency > 1 {
                inner.list_parallel(&opts, &tx).await
            } else {
                inner.list_prefix(&inner.prefix, &opts, &tx).await
            };
            if let Err(Some(e)) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        super::pages(rx)
    }

    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        self.plain(resource_type)?;
        futures::stream::iter(keys.iter().cloned())
            .map(|key| self.head_one(key))
            .buffered(HEADS_AT_ONCE)
            .try_collect()
            .await
    }

    async fn delete_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        cloud::delete_many(self.deletes(), keys).await
    }

    /// A server-side copy (multipart above 5 GiB; without `replace`, refusing an existing
    /// destination: see `s3/copy.rs`), then DeleteObjects for the sources.
    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        let inner = &*self.inner;
        cloud::move_many_with(self.deletes(), moves, |from: Path, to: Path| async move {
            inner.copy(from.as_ref(), to.as_ref(), opts.replace).await
        })
        .await
    }
}

impl S3Store {
    fn plain(&self, resource_type: ResourceType) -> Result<(), StoreError> {
        plain_only(&self.inner.describe(), resource_type)
    }

    fn deletes(&self) -> cloud::Deletes<'_, AmazonS3> {
        cloud::Deletes {
            store: &self.heads,
            what: self.inner.what(),
            prefix: &self.inner.prefix,
            per_call: DELETES_PER_CALL,
            at_once: DELETE_CALLS_AT_ONCE,
            not_found_is_gone: false,
            calls: &self.inner.calls,
        }
    }

    async fn head_one(&self, key: String) -> Result<Option<Object>, StoreError> {
        if !is_representable(&key) {
            return Ok(None);
        }
        let inner = &self.inner;
        let full = format!("{}{key}", inner.prefix);
        let path = Path::parse(&full).map_err(|e| {
            StoreError::permanent(format!("{}: cannot look up `{key}`: {e}", inner.what()))
        })?;
        inner.calls.fetch_add(1, Ordering::Relaxed);
        match self.heads.head(&path).await {
            Ok(meta) => Ok(Some(Object::plain(
                key,
                Some(meta.size),
                Some(meta.last_modified),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            // Anything else (403 included) is "cannot tell", never "missing".
            Err(e) => Err(cloud::lookup_failed(
                format!("{}: look-up of `{key}` failed: {e}", inner.what()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_form_style() {
        let decoded = |s| match decode_name(s, true) {
            RawKey::Utf8(k) => k,
            RawKey::Bytes(_) => panic!("not UTF-8"),
        };
        assert_eq!(decoded("a+b%2Bc%20d"), "a b+c d");
        assert_eq!(decoded("caf%C3%A9/%0A"), "café/\n");
        assert!(matches!(decode_name("%FF", true), RawKey::Bytes(_)));
        assert!(matches!(decode_name("a+b", false), RawKey::Utf8(k) if k == "a+b"));
    }

    #[test]
    fn bucket_urls_follow_the_addressing_style() {
        assert_eq!(
            bucket_url("b", None, "eu-west-1", false).unwrap(),
            "https://s3.eu-west-1.amazonaws.com/b"
        );
        assert_eq!(
            bucket_url("b", None, "eu-west-1", true).unwrap(),
            "https://b.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            bucket_url("b", Some("http://127.0.0.1:5000/"), "us-east-1", false).unwrap(),
            "http://127.0.0.1:5000/b"
        );
        assert_eq!(
            bucket_url(
                "b",
                Some("https://nyc3.digitaloceanspaces.com"),
                "us-east-1",
                true
            )
            .unwrap(),
            "https://b.nyc3.digitaloceanspaces.com"
        );
        assert_eq!(
            bucket_url(
                "b",
                Some("https://b.nyc3.digitaloceanspaces.com"),
                "x",
                true
            )
            .unwrap(),
            "https://b.nyc3.digitaloceanspaces.com"
        );
        assert!(bucket_url("b", Some("not a url"), "x", false).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let settings = S3Settings {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            session_token: Some("tok3n".into()),
            allow_http: false,
            virtual_hosted_style: false,
            list_concurrency: 8,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("wJalrXUtnFEMI") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn jitter_stays_near_the_wait() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(400));
            assert!(j >= Duration::from_millis(300) && j <= Duration::from_millis(500));
        }
    }
}
