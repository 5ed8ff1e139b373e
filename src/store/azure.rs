//! The Azure Blob store (and Azurite, the emulator).
//!
//! Look-ups and deletes go through `object_store`'s `MicrosoftAzure`, which also resolves the
//! credential. Listings do not: its List Blobs parses every name of a page into a `Path` and fails
//! the whole page on one name like `a//b`, which Azure stores as written. So List Blobs is sent here
//! by hand (see `store/cloud.rs`), signed with `object_store`'s own `AzureAuthorizer` and that
//! same credential, and names stay raw strings until they are known to be representable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::azure::{AzureAuthorizer, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

use super::cloud::{self, CallError, Page, PageQuery, PageSource};
use super::{
    Capabilities, Gone, KeyError, ListOptions, ListStream, MoveOptions, Moved, Object, Store,
    StoreError, Usage, plain_only,
};
use crate::key::{ResourceType, is_representable};

mod copy;

/// Azurite's development account and its key, published by Microsoft; not a secret.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's usual blob address, when the emulator is asked for without an endpoint.
const EMULATOR_BLOB_URL: &str = "http://127.0.0.1:10000";

/// Names a List Blobs call returns at most; Azure's own ceiling.
const PAGE: u32 = 5000;
/// Names per delete request. `object_store` deletes Azure blobs only through Blob Batch (up to
/// 256 names); against Azurite, batches of 256 several at once failed part way ("error sending
/// request") and even one at a time ran no faster than single names, so each name goes alone.
const DELETES_PER_CALL: usize = 1;
/// Delete requests in flight in one `delete_many`.
const DELETE_CALLS_AT_ONCE: usize = 16;
/// HEAD requests in flight in one `lookup_many`.
const HEADS_AT_ONCE: usize = 16;

/// A blob name in a URL path: unreserved characters and `/` stay.
const KEY_PATH: &AsciiSet = &QUERY_VALUE.remove(b'/');

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone)]
pub struct AzureSettings {
    /// The storage account; may be empty with `use_emulator` (Azurite's dev account).
    pub account: String,
    pub container: String,
    /// Name prefix the store is scoped to, "" or ending in '/'; a hard boundary: nothing outside
    /// it is listed, looked up or touched, and keys are reported relative to it.
    pub prefix: String,
    /// The account's shared key (base64). `None` leaves the credential to `object_store`'s own
    /// chain (AZURE_* variables, workload or managed identity, Azure CLI), or with
    /// `use_emulator` the well-known development key.
    pub access_key: Option<String>,
    /// The account's blob URL: `https://<account>.blob.core.windows.net` when `None`. For Azurite,
    /// `http://127.0.0.1:PORT/devstoreaccount1`, or its base URL, to which the account is added.
    pub endpoint: Option<String>,
    pub use_emulator: bool,
    /// Top-level prefixes listed at once; 1 lists sequentially.
    pub list_concurrency: usize,
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key.as_ref().map(|_| "***"))
            .field("endpoint", &self.endpoint)
            .field("use_emulator", &self.use_emulator)
            .field("list_concurrency", &self.list_concurrency)
            .finish()
    }
}

pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    account: String,
    container: String,
    prefix: String,
    /// `<account URL>/<container>`, without a trailing `/`.
    container_url: String,
    heads: MicrosoftAzure,
    list_concurrency: usize,
    page_size: u32,
    http: reqwest::Client,
    calls: AtomicU64,
}

impl AzureStore {
    pub fn new(name: &str, settings: AzureSettings) -> Result<AzureStore, StoreError> {
        let AzureSettings {
            mut account,
            container,
            prefix,
            mut access_key,
            endpoint,
            use_emulator,
            list_concurrency,
        } = settings;
        let config = |msg: String| StoreError::permanent(format!("azure store `{name}`: {msg}"));
        if container.is_empty() {
            return Err(config("no container".to_owned()));
        }
        if !cloud::is_valid_prefix(&prefix) {
            return Err(config(format!(
                "prefix `{prefix}` must be empty or a key path ending in `/`"
            )));
        }
        if use_emulator {
            if account.is_empty() {
                EMULATOR_ACCOUNT.clone_into(&mut account);
            }
            if access_key.is_none() && account == EMULATOR_ACCOUNT {
                access_key = Some(EMULATOR_ACCOUNT_KEY.to_owned());
            }
        }
        if account.is_empty() {
            return Err(config("no storage account".to_owned()));
        }
        let account_url =
            account_url(&account, endpoint.as_deref(), use_emulator).map_err(config)?;
        if let Some(key) = &access_key
            && object_store::azure::AzureAccessKey::try_new(key).is_err()
        {
            return Err(config("the access key is not valid base64".to_owned()));
        }

        // Azurite is addressed like any account at its own URL (path-style, the account in the
        // path): `object_store`'s emulator mode takes its address from an environment variable
        // instead of the endpoint given here.
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_use_emulator(false)
            .with_account(&account)
            .with_container_name(&container)
            .with_endpoint(account_url.clone())
            .with_allow_http(account_url.starts_with("http://"))
            .with_client_options(cloud::client_options(&account_url))
            .with_retry(cloud::retry_config());
        if let Some(key) = &access_key {
            builder = builder.with_access_key(key);
        }
        let heads = builder
            .build()
            .map_err(|e| config(format!("invalid settings: {}", one_line(&e))))?;

        Ok(AzureStore {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                container_url: format!("{account_url}/{container}"),
                account,
                container,
                prefix,
                heads,
                list_concurrency: list_concurrency.max(1),
                page_size: PAGE,
                http: cloud::http_client().map_err(config)?,
                calls: AtomicU64::new(0),
            }),
        })
    }

    /// Lists with pages of at most `names` (1..=5000) instead of Azure's ceiling: more calls, each
    /// smaller. Tests use it to cross page boundaries with few objects.
    #[must_use]
    pub fn with_page_size(mut self, names: u32) -> AzureStore {
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

/// The account's blob URL without a trailing `/`.
fn account_url(account: &str, endpoint: Option<&str>, emulator: bool) -> Result<String, String> {
    let Some(endpoint) = endpoint.or(emulator.then_some(EMULATOR_BLOB_URL)) else {
        return Ok(format!("https://{account}.blob.core.windows.net"));
    };
    let endpoint = endpoint.trim_end_matches('/');
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("endpoint `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("endpoint `{endpoint}` is not an http(s) URL"));
    }
    // Azurite serves accounts path-style: a base URL gets the account added.
    if emulator && matches!(url.path(), "" | "/") {
        return Ok(format!("{endpoint}/{account}"));
    }
    Ok(endpoint.to_owned())
}

/// An `object_store` error on one line (its messages can hold a response body).
fn one_line(e: &dyn std::error::Error) -> String {
    cloud::error_chain(e).replace(['\r', '\n'], " ")
}

// ---- List Blobs ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    next_marker: Option<String>,
    #[serde(default)]
    blobs: Blobs,
}

/// Blobs and prefixes come interleaved in name order, hence one list of either.
#[derive(Debug, Default, Deserialize)]
struct Blobs {
    #[serde(rename = "$value", default)]
    items: Vec<BlobItem>,
}

#[derive(Debug, Deserialize)]
enum BlobItem {
    Blob(Blob),
    BlobPrefix(BlobPrefix),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Blob {
    name: BlobName,
    properties: Properties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlobPrefix {
    name: BlobName,
}

/// Names with characters XML cannot carry come percent-encoded, marked `Encoded="true"`.
#[derive(Debug, Deserialize)]
struct BlobName {
    #[serde(rename = "@Encoded", default)]
    encoded: Option<String>,
    #[serde(rename = "$text", default)]
    text: String,
}

impl BlobName {
    fn decoded(self) -> String {
        if self.encoded.is_some_and(|e| e.eq_ignore_ascii_case("true")) {
            percent_decode_str(&self.text)
                .decode_utf8_lossy()
                .into_owned()
        } else {
            self.text
        }
    }
}

#[derive(Debug, Deserialize)]
struct Properties {
    #[serde(rename = "Last-Modified")]
    last_modified: Option<String>,
    #[serde(rename = "Content-Length", default)]
    content_length: u64,
    /// `directory` for the folders of an account with a hierarchical namespace.
    #[serde(rename = "ResourceType")]
    resource_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

impl Inner {
    fn list_url(&self, q: &PageQuery<'_>) -> String {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut url = format!(
            "{}?restype=container&comp=list&maxresults={}&prefix={}",
            self.container_url,
            q.max_results,
            enc(q.prefix)
        );
        if q.delimiter {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = q.token {
            url.push_str("&marker=");
            url.push_str(&enc(token));
        }
        url
    }

    /// A request signed with the store's credential, ready to send. A SAS credential goes into
    /// the query, so the URL is sent as signed.
    async fn signed_request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, CallError> {
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let mut req = builder
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| CallError::fatal(format!("bad request: {e}")))?;
        let credential = self
            .heads
            .credentials()
            .get_credential()
            .await
            .map_err(|e| {
                CallError::fatal(format!("no credential for the account: {}", one_line(&e)))
            })?;
        AzureAuthorizer::new(&credential, &self.account)
            .try_authorize(&mut req)
            .map_err(|e| CallError::fatal(format!("cannot sign the request: {}", one_line(&e))))?;
        let mut out = self.http.request(method, req.uri().to_string());
        for (name, value) in req.headers() {
            out = out.header(name, value);
        }
        Ok(out)
    }

    /// One List Blobs call, signed with the store's credential. Counts the call.
    async fn list_once(&self, q: &PageQuery<'_>) -> Result<EnumerationResults, CallError> {
        let builder = self
            .signed_request(http::Method::GET, &self.list_url(q), &[])
            .await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = builder.send().await.map_err(|e| CallError::request(&e))?;
        let status = resp.status();
        let header_code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| CallError {
            msg: format!("reading the answer failed: {}", cloud::error_chain(&e)),
            status: None,
            retry: true,
        })?;
        if status.is_success() {
            return quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| CallError::fatal(format!("unreadable answer: {e}")));
        }
        let err: ErrorBody = quick_xml::de::from_reader(body.as_ref()).unwrap_or_default();
        Err(CallError::status(
            status,
            header_code.or(err.code).as_deref(),
            err.message.as_deref(),
        ))
    }

    async fn head_one(&self, key: String) -> Result<Option<Object>, StoreError> {
        if !is_representable(&key) {
            return Ok(None);
        }
        let full = format!("{}{key}", self.prefix);
        let path = Path::parse(&full).map_err(|e| {
            StoreError::permanent(format!("{}: cannot look up `{key}`: {e}", self.what()))
        })?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.heads.head(&path).await {
            Ok(meta) => Ok(Some(Object::plain(
                key,
                Some(meta.size),
                Some(meta.last_modified),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            // Anything else (403 included) is "cannot tell", never "missing".
            Err(e) => Err(cloud::lookup_failed(
                format!(
                    "{}: look-up of `{key}` failed: {}",
                    self.what(),
                    one_line(&e)
                ),
                e,
            )),
        }
    }
}

impl PageSource for Inner {
    fn what(&self) -> String {
        format!(
            "azure store `{}` (container `{}`)",
            self.name, self.container
        )
    }

    fn describe(&self) -> String {
        format!(
            "az://{}/{} ({})",
            self.container,
            self.prefix,
            self.container_url
                .strip_suffix(&format!("/{}", self.container))
                .unwrap_or(&self.container_url)
        )
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
        let mut page = Page {
            items: Vec::new(),
            prefixes: Vec::new(),
            next: answer.next_marker.filter(|m| !m.is_empty()),
        };
        for item in answer.blobs.items {
            match item {
                BlobItem::Blob(b) => {
                    if b.properties.resource_type.as_deref() == Some("directory") {
                        continue;
                    }
                    let modified = b
                        .properties
                        .last_modified
                        .as_deref()
                        .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
                        .map(|t| t.with_timezone(&Utc));
                    let name = b.name.decoded();
                    if let Some(e) = cloud::entry(
                        &self.prefix,
                        &name,
                        b.properties.content_length,
                        modified,
                        opts,
                    ) {
                        page.items.push(e);
                    }
                }
                BlobItem::BlobPrefix(p) => page.prefixes.push(p.name.decoded()),
            }
        }
        Ok(page)
    }
}

#[async_trait]
impl Store for AzureStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_no_replace: true,
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

    /// Copy Blob (confirmed: `x-ms-copy-status` `success` and the source's size, see
    /// `azure/copy.rs`), then one delete per source. Without `replace` an existing destination
    /// is refused atomically with `If-None-Match: *`.
    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        let inner = &*self.inner;
        cloud::move_many_with(self.deletes(), moves, |from: Path, to: Path| async move {
            inner
                .copy_confirmed(from.as_ref(), to.as_ref(), opts.replace)
                .await
        })
        .await
    }
}

impl AzureStore {
    fn plain(&self, resource_type: ResourceType) -> Result<(), StoreError> {
        plain_only(&self.inner.describe(), resource_type)
    }

    fn deletes(&self) -> cloud::Deletes<'_, MicrosoftAzure> {
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
    fn account_urls() {
        assert_eq!(
            account_url("acct", None, false).unwrap(),
            "https://acct.blob.core.windows.net"
        );
        assert_eq!(
            account_url("devstoreaccount1", None, true).unwrap(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            account_url("devstoreaccount1", Some("http://127.0.0.1:9/"), true).unwrap(),
            "http://127.0.0.1:9/devstoreaccount1"
        );
        assert_eq!(
            account_url(
                "devstoreaccount1",
                Some("http://127.0.0.1:9/devstoreaccount1"),
                true
            )
            .unwrap(),
            "http://127.0.0.1:9/devstoreaccount1"
        );
        assert!(account_url("a", Some("ftp://x"), false).is_err());
    }

    #[test]
    fn list_answers_with_interleaved_prefixes_and_encoded_names_are_read() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1/devstoreaccount1" ContainerName="c">
  <Prefix>app/</Prefix><MaxResults>2</MaxResults><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>app/a.jpg</Name><Properties><Last-Modified>Wed, 09 Sep 2009 09:20:02 GMT</Last-Modified><Content-Length>3</Content-Length></Properties></Blob>
    <BlobPrefix><Name>app/d/</Name></BlobPrefix>
    <Blob><Name Encoded="true">app/x%EF%BF%BEy</Name><Properties><Content-Length>1</Content-Length></Properties></Blob>
    <BlobPrefix><Name>app/e/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>tok</NextMarker>
</EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(r.next_marker.as_deref(), Some("tok"));
        let names: Vec<String> = r
            .blobs
            .items
            .into_iter()
            .map(|i| match i {
                BlobItem::Blob(b) => format!("blob {}", b.name.decoded()),
                BlobItem::BlobPrefix(p) => format!("prefix {}", p.name.decoded()),
            })
            .collect();
        assert_eq!(
            names,
            [
                "blob app/a.jpg",
                "prefix app/d/",
                "blob app/x\u{fffe}y",
                "prefix app/e/"
            ]
        );
        let empty: EnumerationResults = quick_xml::de::from_str(
            "<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>",
        )
        .unwrap();
        assert!(empty.blobs.items.is_empty());
        assert!(empty.next_marker.is_none_or(|m| m.is_empty()));
    }

    #[test]
    fn debug_hides_the_key() {
        let settings = AzureSettings {
            account: "acct".into(),
            container: "c".into(),
            prefix: String::new(),
            access_key: Some("c2VjcmV0a2V5".into()),
            endpoint: None,
            use_emulator: false,
            list_concurrency: 8,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("c2VjcmV0a2V5") && shown.contains("***"),
            "{shown}"
        );
    }
}
