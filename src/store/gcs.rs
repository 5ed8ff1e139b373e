//! The Google Cloud Storage store (and fake-gcs-server, the emulator).
//!
//! Look-ups and deletes go through `object_store`'s `GoogleCloudStorage`, which also resolves the
//! credential. Listings do not: it lists through the XML API and parses every name of a page into
//! a `Path`, failing the whole page on one name like `a//b` or `x/../y`, which GCS stores as
//! written. So the JSON API's objects.list is sent here by hand (see `store/cloud.rs`), with a
//! bearer token from that same credential, and names stay raw strings until they are known to be
//! representable.
//!
//! Credentials: against an emulator (`endpoint` set, no key) every call is anonymous. Otherwise
//! the token comes from `object_store`: the service account key given, else Application Default
//! Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials, the metadata server).
//! Only the anonymous emulator path is exercised by the tests; real GCS could not be reached here.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::cloud::{self, CallError, Page, PageQuery, PageSource};
use super::{
    Capabilities, Gone, KeyError, ListOptions, ListStream, MoveOptions, Moved, Object, Store,
    StoreError, Usage, plain_only,
};
use crate::key::{ResourceType, is_representable};

const GCS_BASE_URL: &str = "https://storage.googleapis.com";

/// Names an objects.list call returns at most; the JSON API's own ceiling.
const PAGE: u32 = 1000;
/// `object_store` deletes GCS objects one request each (the JSON API's batch is not offered).
const DELETES_PER_CALL: usize = 1;
/// Delete requests in flight in one `delete_many`.
const DELETE_CALLS_AT_ONCE: usize = 16;
/// HEAD requests in flight in one `lookup_many`.
const HEADS_AT_ONCE: usize = 16;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone)]
pub struct GcsSettings {
    pub bucket: String,
    /// Name prefix the store is scoped to, "" or ending in '/'; a hard boundary: nothing outside
    /// it is listed, looked up or touched, and keys are reported relative to it.
    pub prefix: String,
    /// An emulator's base URL (`http://127.0.0.1:4443`); `None` is Google's.
    pub endpoint: Option<String>,
    /// A service account key: a path to its JSON file, or the JSON itself.
    pub service_account_key: Option<String>,
    /// Top-level prefixes listed at once; 1 lists sequentially.
    pub list_concurrency: usize,
}

impl fmt::Debug for GcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A path is not secret, but the same field may hold the key itself.
        f.debug_struct("GcsSettings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field(
                "service_account_key",
                &self.service_account_key.as_ref().map(|_| "***"),
            )
            .field("list_concurrency", &self.list_concurrency)
            .finish()
    }
}

pub struct GcsStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    bucket: String,
    prefix: String,
    base_url: String,
    /// `<base>/storage/v1/b/<bucket>/o`
    objects_url: String,
    /// `false` against an emulator without a key: calls carry no token.
    signed: bool,
    heads: GoogleCloudStorage,
    list_concurrency: usize,
    page_size: u32,
    http: reqwest::Client,
    calls: AtomicU64,
}

impl GcsStore {
    pub fn new(name: &str, settings: GcsSettings) -> Result<GcsStore, StoreError> {
        let GcsSettings {
            bucket,
            prefix,
            endpoint,
            service_account_key,
            list_concurrency,
        } = settings;
        let config = |msg: String| StoreError::permanent(format!("gcs store `{name}`: {msg}"));
        if bucket.is_empty() {
            return Err(config("no bucket".to_owned()));
        }
        if !cloud::is_valid_prefix(&prefix) {
            return Err(config(format!(
                "prefix `{prefix}` must be empty or a key path ending in `/`"
            )));
        }
        let base_url = match endpoint.as_deref() {
            None => GCS_BASE_URL.to_owned(),
            Some(e) => {
                let e = e.trim_end_matches('/');
                let url = url::Url::parse(e)
                    .map_err(|err| config(format!("endpoint `{e}` is not a URL: {err}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(config(format!("endpoint `{e}` is not an http(s) URL")));
                }
                e.to_owned()
            }
        };
        let signed = endpoint.is_none() || service_account_key.is_some();

        let mut builder = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&bucket)
            .with_base_url(&base_url)
            .with_client_options(cloud::client_options(&base_url))
            .with_retry(cloud::retry_config())
            .with_skip_signature(!signed);
        match service_account_key.as_deref().map(str::trim) {
            Some(key) if key.starts_with('{') => {
                builder = builder.with_service_account_key(key);
            }
            Some(path) => builder = builder.with_service_account_path(path),
            // `object_store` 0.14 asks for a token before a DELETE even with `skip_signature` (its
            // requests other than reads ignore that setting), and an emulator without a key
            // takes any: it gets a placeholder, so deletes need no metadata server either.
            None if !signed => {
                builder = builder.with_credentials(Arc::new(
                    object_store::StaticCredentialProvider::new(object_store::gcp::GcpCredential {
                        bearer: "anonymous".to_owned(),
                    }),
                ));
            }
            None => {}
        }
        // The key's own message can quote the key: say only what failed.
        let heads = builder.build().map_err(|e| {
            let what = if service_account_key.is_some() {
                "the service account key cannot be used".to_owned()
            } else {
                format!("invalid settings: {}", one_line(&e))
            };
            config(what)
        })?;

        Ok(GcsStore {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                objects_url: format!(
                    "{base_url}/storage/v1/b/{}/o",
                    utf8_percent_encode(&bucket, URL_PART)
                ),
                base_url,
                bucket,
                prefix,
                signed,
                heads,
                list_concurrency: list_concurrency.max(1),
                page_size: PAGE,
                http: cloud::http_client().map_err(config)?,
                calls: AtomicU64::new(0),
            }),
        })
    }

    /// Lists with pages of at most `names` (1..=1000) instead of the API's ceiling: more calls,
    /// each smaller. Tests use it to cross page boundaries with few objects.
    #[must_use]
    pub fn with_page_size(mut self, names: u32) -> GcsStore {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.page_size = names.clamp(1, PAGE);
        }
        self
    }

    /// Requests sent to the service so far (listing calls, retries included, look-ups and
    /// deletes).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    cloud::error_chain(e).replace(['\r', '\n'], " ")
}

// ---- objects.list ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Objects {
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    prefixes: Vec<String>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Item {
    name: String,
    /// A decimal string: JSON numbers cannot hold every `u64`.
    #[serde(default)]
    size: Option<String>,
    updated: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorReason>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorReason {
    reason: Option<String>,
}

impl Inner {
    fn list_url(&self, q: &PageQuery<'_>) -> String {
        let enc = |v: &str| utf8_percent_encode(v, URL_PART).to_string();
        let mut url = format!(
            "{}?maxResults={}&prefix={}&fields=items(name%2Csize%2Cupdated)%2Cprefixes%2CnextPageToken",
            self.objects_url,
            q.max_results,
            enc(q.prefix)
        );
        if q.delimiter {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = q.token {
            url.push_str("&pageToken=");
            url.push_str(&enc(token));
        }
        url
    }

    /// One JSON API GET, with a bearer token unless anonymous: the answer's status and body.
    /// Counts the call.
    async fn get_json(&self, url: &str) -> Result<(reqwest::StatusCode, Vec<u8>), CallError> {
        let mut req = self.http.get(url);
        if self.signed {
            let credential = self
                .heads
                .credentials()
                .get_credential()
                .await
                .map_err(|e| {
                    CallError::fatal(format!("no credential for the bucket: {}", one_line(&e)))
                })?;
            req = req.bearer_auth(&credential.bearer);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| CallError::request(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map(Vec::from).map_err(|e| CallError {
            msg: format!("reading the answer failed: {}", cloud::error_chain(&e)),
            status: None,
            retry: true,
        })?;
        Ok((status, body))
    }

    /// One objects.list call, with a bearer token unless anonymous. Counts the call.
    async fn list_once(&self, q: &PageQuery<'_>) -> Result<Objects, CallError> {
        let (status, body) = self.get_json(&self.list_url(q)).await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| CallError::fatal(format!("unreadable answer: {e}")));
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .unwrap_or_default()
            .error
            .unwrap_or_default();
        let reason = detail.errors.into_iter().find_map(|e| e.reason);
        Err(CallError::status(
            status,
            reason.as_deref(),
            detail.message.as_deref(),
        ))
    }

    /// Copies the object named `from` to `to` (full names) with `rewriteTo`, following the
    /// rewrite token until the service says done (in [`Inner::rewrite`]). Without `replace` the rewrite carries
    /// `ifGenerationMatch=0`, which GCS refuses with 412 when `to` exists; fake-gcs-server ignores
    /// it, so an objects.get of `to` comes first (and only GCS itself refuses atomically).
    async fn copy(&self, from: &str, to: &str, replace: bool) -> cloud::Copied {
        if !replace {
            match cloud::retrying(|| self.get_once(to)).await {
                Ok(None) => {}
                Ok(Some(_)) => return cloud::Copied::Exists,
                Err(e) => {
                    return cloud::Copied::Failed(KeyError::transient(format!(
                        "look-up of the destination failed: {}",
                        e.msg
                    )));
                }
            }
        }
        self.rewrite(from, to, replace).await
    }

    fn rewrite_url(&self, from: &str, to: &str, replace: bool) -> String {
        let enc = |v: &str| utf8_percent_encode(v, URL_PART).to_string();
        let bucket = enc(&self.bucket);
        let mut url = format!(
            "{}/storage/v1/b/{bucket}/o/{}/rewriteTo/b/{bucket}/o/{}",
            self.base_url,
            enc(from),
            enc(to)
        );
        if !replace {
            url.push_str("?ifGenerationMatch=0");
        }
        url
    }

    /// The rewrite itself, `ifGenerationMatch=0` without `replace`; see [`Inner::copy`].
    async fn rewrite(&self, from: &str, to: &str, replace: bool) -> cloud::Copied {
        let url = self.rewrite_url(from, to, replace);
        let mut token: Option<String> = None;
        let mut backoff = cloud::FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut req = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body("{}");
            if let Some(t) = &token {
                req = req.query(&[("rewriteToken", t)]);
            }
            if self.signed {
                match self.heads.credentials().get_credential().await {
                    Ok(c) => req = req.bearer_auth(&c.bearer),
                    Err(e) => {
                        return cloud::Copied::Failed(KeyError::transient(format!(
                            "no credential for the bucket: {}",
                            one_line(&e)
                        )));
                    }
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < cloud::TRIES => {
                    let _ = e;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return cloud::Copied::Failed(KeyError::transient(format!(
                        "copy failed: {}",
                        cloud::error_chain(&e)
                    )));
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return cloud::Copied::SourceGone;
            }
            if !replace && status == reqwest::StatusCode::PRECONDITION_FAILED {
                return cloud::Copied::Exists;
            }
            if status.is_server_error() && attempt < cloud::TRIES {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
                continue;
            }
            let body = resp.bytes().await.unwrap_or_default();
            if !status.is_success() {
                let detail = serde_json::from_slice::<ErrorBody>(&body)
                    .unwrap_or_default()
                    .error
                    .unwrap_or_default();
                let message = format!(
                    "copy failed: HTTP {}: {}",
                    status.as_u16(),
                    detail.message.unwrap_or_default()
                );
                // Past the retries a server error may still pass later; a refusal will not.
                return cloud::Copied::Failed(
                    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        KeyError::transient(message)
                    } else {
                        KeyError::permanent(message)
                    },
                );
            }
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            // `done` is absent from some emulators' answers: the copy was made in one call.
            if answer["done"].as_bool() != Some(false) {
                return cloud::Copied::Done;
            }
            match answer["rewriteToken"].as_str() {
                Some(t) if !t.is_empty() => {
                    token = Some(t.to_string());
                    self.calls.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    return cloud::Copied::Failed(KeyError::transient(
                        "copy failed: no rewrite token",
                    ));
                }
            }
        }
    }

    /// objects.get of `full` (the full name) through the JSON API, the one the listing uses:
    /// `None` when there is no such object. One call, tried once; counts it.
    async fn get_once(&self, full: &str) -> Result<Option<Item>, CallError> {
        let url = format!(
            "{}/{}?fields=name%2Csize%2Cupdated",
            self.objects_url,
            utf8_percent_encode(full, URL_PART)
        );
        let (status, body) = self.get_json(&url).await?;
        if status.is_success() {
            let item: Item = serde_json::from_slice(&body)
                .map_err(|e| CallError::fatal(format!("unreadable answer: {e}")))?;
            // An answer about another object is no answer about this one.
            return if item.name == full {
                Ok(Some(item))
            } else {
                Err(CallError::fatal(format!(
                    "the answer names `{}`",
                    item.name.escape_debug()
                )))
            };
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .unwrap_or_default()
            .error
            .unwrap_or_default();
        let reason = detail.errors.into_iter().find_map(|e| e.reason);
        Err(CallError::status(
            status,
            reason.as_deref(),
            detail.message.as_deref(),
        ))
    }

    /// A point look-up through objects.get (never `object_store`'s XML HEAD: an endpoint that
    /// serves the JSON API but not the XML one would make every key read as missing).
    async fn head_one(&self, key: String) -> Result<Option<Object>, StoreError> {
        if !is_representable(&key) {
            return Ok(None);
        }
        let full = format!("{}{key}", self.prefix);
        let item = cloud::retrying(|| self.get_once(&full))
            .await
            .map_err(|e| {
                // Anything but 404 (403 included) is "cannot tell", never "missing".
                let message = format!("{}: look-up of `{key}` failed: {}", self.what(), e.msg);
                if e.retry || e.status.is_none() {
                    StoreError::transient(message)
                } else {
                    StoreError::permanent(message)
                }
            })?;
        let Some(item) = item else {
            return Ok(None);
        };
        let size = item
            .size
            .as_deref()
            .map(str::parse::<u64>)
            .transpose()
            .map_err(|_| {
                StoreError::transient(format!(
                    "{}: look-up of `{key}`: unreadable size {:?}",
                    self.what(),
                    item.size
                ))
            })?;
        let modified = item
            .updated
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(Some(Object::plain(key, size, modified)))
    }
}

impl PageSource for Inner {
    fn what(&self) -> String {
        format!("gcs store `{}` (bucket `{}`)", self.name, self.bucket)
    }

    fn describe(&self) -> String {
        format!("gs://{}/{} ({})", self.bucket, self.prefix, self.base_url)
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn list_concurrency(&self) -> usize {
        self.list_concurrency
    }

    fn page_size(&self) -> u32 {
        self.page_size
    }

    async fn call(&self, q: &PageQuery<'_>, opts: &ListOptions) -> Result<Page, CallError> {
        let answer = self.list_once(q).await?;
        let mut items = Vec::with_capacity(answer.items.len());
        for item in answer.items {
            let size = match item.size.as_deref().map(str::parse::<u64>) {
                Some(Ok(n)) => n,
                None => 0,
                Some(Err(_)) => {
                    return Err(CallError::fatal(format!(
                        "unreadable answer: object `{}` has size {:?}",
                        item.name.escape_debug(),
                        item.size
                    )));
                }
            };
            let modified = item
                .updated
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(e) = cloud::entry(&self.prefix, &item.name, size, modified, opts) {
                items.push(e);
            }
        }
        Ok(Page {
            items,
            prefixes: answer.prefixes,
            next: answer.next_page_token.filter(|t| !t.is_empty()),
        })
    }
}

#[async_trait]
impl Store for GcsStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Moves without replace refuse atomically on GCS itself (`ifGenerationMatch=0`); an
    /// emulator's (fake-gcs-server ignores the condition) rely on the look-up just before.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_no_replace: self.inner.base_url == GCS_BASE_URL,
            ..Capabilities::plain(self.inner.page_size as usize)
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            api_calls: self.calls(),
            full_list_calls: 0,
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        cloud::check(&*self.inner).await
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        cloud::list(&self.inner, opts)
    }

    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        self.plain(resource_type)?;
        futures::stream::iter(keys.iter().cloned())
            .map(|key| self.inner.head_one(key))
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

    /// Without `replace` an existing destination is refused: see [`Inner::copy`].
    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        // Copies by the JSON API's `rewriteTo`, which copies objects of any size (in steps,
        // by its rewrite token) and which emulators answer; then one bulk delete.
        let inner = &*self.inner;
        cloud::move_many_with(self.deletes(), moves, |from: Path, to: Path| async move {
            inner.copy(from.as_ref(), to.as_ref(), opts.replace).await
        })
        .await
    }
}

impl GcsStore {
    fn plain(&self, resource_type: ResourceType) -> Result<(), StoreError> {
        plain_only(&self.inner.describe(), resource_type)
    }

    fn deletes(&self) -> cloud::Deletes<'_, GoogleCloudStorage> {
        let inner = &*self.inner;
        cloud::Deletes {
            store: &inner.heads,
            what: inner.what(),
            prefix: &inner.prefix,
            per_call: DELETES_PER_CALL,
            at_once: DELETE_CALLS_AT_ONCE,
            not_found_is_gone: true,
            calls: &inner.calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_are_read() {
        let json = r#"{"kind":"storage#objects","items":[
            {"name":"app/a b.jpg","size":"12","updated":"2024-01-02T03:04:05.678Z"},
            {"name":"app/x//y","size":"0"}],
            "prefixes":["app/d/"],"nextPageToken":"tok"}"#;
        let o: Objects = serde_json::from_str(json).unwrap();
        assert_eq!(o.items.len(), 2);
        assert_eq!(o.items[0].size.as_deref(), Some("12"));
        assert_eq!(o.prefixes, ["app/d/"]);
        assert_eq!(o.next_page_token.as_deref(), Some("tok"));
        let empty: Objects = serde_json::from_str(r#"{"kind":"storage#objects"}"#).unwrap();
        assert!(empty.items.is_empty() && empty.next_page_token.is_none());
    }

    #[test]
    fn debug_hides_the_key() {
        let settings = GcsSettings {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: None,
            service_account_key: Some(r#"{"private_key":"s3cr3t"}"#.into()),
            list_concurrency: 8,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn an_unusable_key_is_named_without_its_contents() {
        let Err(e) = GcsStore::new(
            "media",
            GcsSettings {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None,
                service_account_key: Some(r#"{"private_key":"s3cr3t"}"#.into()),
                list_concurrency: 8,
            },
        ) else {
            panic!("a key without its fields was accepted");
        };
        let msg = e.to_string();
        assert!(msg.contains("`media`") && !msg.contains("s3cr3t"), "{msg}");
    }
}
