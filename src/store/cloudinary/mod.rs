//! Cloudinary through its Admin API: list resources (500 a call, per resource type, the types in
//! parallel), the Search API for a listing limited to recent uploads, look-ups of up to 100
//! public_ids a call, and deletes of up to 100 public_ids a call. Every call passes the account's
//! [`Budget`] first and reports the provider's rate-limit headers back to it.
//!
//! Written against the REST API with `reqwest`: no maintained Rust crate covers the Admin API.
//!
//! Keys are public_ids; the identity of an object is (resource type, public_id), so the typed
//! [`Store::head_many_of`] and [`Store::delete_many_of`] are the real entry points, and the plain
//! ones work only on a store that lists a single resource type.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod budget;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::cloud::{FIRST_BACKOFF, TRIES, error_chain, http_client};
use super::{
    ListOptions, ListStream, Listed, MoveResult, Moved, Object, Store, StoreError, unusable,
};
use crate::config::{CloudinaryLocation, StoreConfig};
use crate::key::{KeyFormat, ResourceType, is_representable};
use budget::Budget;

/// Resources one list or search call returns, the API's maximum.
pub const LIST_PAGE: usize = 500;
/// public_ids one look-up or delete call takes, the API's maximum.
pub const IDS_PER_CALL: usize = 100;
/// Bytes of `public_ids[]=…` one look-up URL carries at most: under the 8 KiB request line
/// that common front servers accept, whatever the public_ids.
const LOOKUP_URL_BYTES: usize = 7000;
/// Calls of one look-up or delete in flight at once.
const CALLS_IN_FLIGHT: usize = 4;
/// Listing pages waiting for the consumer.
const PAGES_IN_FLIGHT: usize = 4;
/// Rate-limit waits one call accepts before it gives up.
const RATE_LIMIT_WAITS: u32 = 3;
/// Follow-up calls one delete batch makes while Cloudinary answers `partial`.
const PARTIAL_ROUNDS: usize = 10;

pub struct CloudinaryStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    location: String,
    cloud: String,
    api_key: String,
    api_secret: String,
    /// `{api_base}/v1_1/{cloud}`
    base: String,
    types: Vec<ResourceType>,
    delivery: String,
    client: reqwest::Client,
    budget: Arc<Budget>,
    calls: AtomicU64,
    full_list_calls: AtomicU64,
    /// Whether any call was answered: a refusal before that means the store is out of reach.
    answered: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Deserialize)]
#[allow(clippy::struct_field_names)] // the Admin API's own field names
struct Resource {
    public_id: String,
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    /// The Search API's name for the upload time, when `created_at` is left out.
    #[serde(default)]
    uploaded_at: Option<String>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    secure_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    #[serde(default)]
    deleted: HashMap<String, String>,
    #[serde(default)]
    partial: bool,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    error: ApiMessage,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    message: String,
}

/// One key's delete outcome.
type Outcome = (String, super::GoneResult);
/// One delete call's outcomes, or why the call failed.
type BatchAnswer = Result<Vec<Outcome>, StoreError>;

enum Body<'a> {
    None,
    Form(&'a [(String, String)]),
    Json(serde_json::Value),
}

impl CloudinaryStore {
    pub fn new(
        name: &str,
        loc: &CloudinaryLocation,
        budget: Arc<Budget>,
    ) -> Result<Self, StoreError> {
        let client = http_client().map_err(StoreError::Unreachable)?;
        Ok(CloudinaryStore {
            inner: Arc::new(Inner {
                name: name.to_string(),
                location: loc.describe(),
                cloud: loc.cloud.clone(),
                api_key: loc.api_key.clone(),
                api_secret: loc.api_secret.expose().to_string(),
                base: format!("{}/v1_1/{}", loc.api_base, loc.cloud),
                types: loc.resource_types.clone(),
                delivery: loc.delivery_type.clone(),
                client,
                budget,
                calls: AtomicU64::new(0),
                full_list_calls: AtomicU64::new(0),
                answered: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    fn single_type(&self) -> Result<ResourceType, StoreError> {
        match self.inner.types.as_slice() {
            [only] => Ok(*only),
            _ => Err(StoreError::Failed(format!(
                "store {}: a Cloudinary key needs its resource type (the store lists {})",
                self.inner.name,
                type_names(&self.inner.types)
            ))),
        }
    }
}

fn type_names(types: &[ResourceType]) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Inner {
    /// One Admin API call: the budget first, then the request, with retries on 5xx and lost
    /// connections and waits on 420/429 (up to `max_wait`, by the budget).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: &Body<'_>,
    ) -> Result<T, StoreError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 1;
        let mut waits = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.budget.admit().await.map_err(StoreError::Failed)?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .client
                .request(method.clone(), &url)
                .basic_auth(&self.api_key, Some(&self.api_secret))
                .query(query);
            match body {
                Body::None => {}
                Body::Form(fields) => req = req.form(fields),
                Body::Json(v) => req = req.json(v),
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let retry = e.is_timeout() || e.is_connect() || e.is_request();
                    if retry && attempt < TRIES {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                        continue;
                    }
                    let msg = format!(
                        "cannot reach the Cloudinary API at {}: {}",
                        crate::config::redact_url(&self.base),
                        error_chain(&e)
                    );
                    return Err(if self.answered.load(Ordering::Relaxed) {
                        StoreError::Failed(msg)
                    } else {
                        StoreError::Unreachable(msg)
                    });
                }
            };
            self.budget.observe(resp.headers());
            let status = resp.status();
            if status.is_success() {
                self.answered.store(true, Ordering::Relaxed);
                let bytes = resp.bytes().await.map_err(|e| {
                    StoreError::Failed(format!(
                        "Cloudinary's answer to {path} was cut short: {}",
                        error_chain(&e)
                    ))
                })?;
                return serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Failed(format!(
                        "Cloudinary's answer to {path} is not what the Admin API documents: {e}"
                    ))
                });
            }
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ApiError>(&text)
                .map_or_else(|_| text.chars().take(200).collect(), |e| e.error.message);
            let said = format!("HTTP {}: {}", status.as_u16(), message.trim());
            match status.as_u16() {
                420 | 429 if waits < RATE_LIMIT_WAITS => {
                    let wait = self
                        .budget
                        .rate_limited(&headers)
                        .map_err(StoreError::Failed)?;
                    waits += 1;
                    tokio::time::sleep(wait).await;
                }
                401 | 403 => {
                    let msg = format!(
                        "Cloudinary refused API key {} of cloud `{}` ({said}); check the key and secret in the store's url or CLOUDINARY_URL",
                        self.api_key, self.cloud
                    );
                    return Err(if self.answered.load(Ordering::Relaxed) {
                        StoreError::Failed(msg)
                    } else {
                        StoreError::Unreachable(msg)
                    });
                }
                _ if status.is_server_error() && attempt < TRIES => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                _ => {
                    let msg = format!("Cloudinary answered {path} with {said}");
                    return Err(
                        if status == StatusCode::NOT_FOUND && !self.answered.load(Ordering::Relaxed)
                        {
                            StoreError::Unreachable(msg)
                        } else {
                            StoreError::Failed(msg)
                        },
                    );
                }
            }
        }
    }

    fn resources_path(&self, rt: ResourceType) -> String {
        format!("/resources/{}/{}", rt.as_str(), self.delivery)
    }

    fn listed(asked: ResourceType, r: Resource) -> Listed {
        let rt = r
            .resource_type
            .as_deref()
            .and_then(ResourceType::parse_cloudinary)
            .unwrap_or(asked);
        if !is_representable(&r.public_id) {
            return Listed::Unrepresentable(format!("{}/{}", rt.as_str(), r.public_id));
        }
        Listed::Object(Self::object(rt, r))
    }

    fn object(rt: ResourceType, r: Resource) -> Object {
        Object {
            modified: r
                .created_at
                .as_deref()
                .or(r.uploaded_at.as_deref())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            size: r.bytes,
            resource_type: rt,
            format: r.format.filter(|f| !f.is_empty()),
            url: r.secure_url,
            key: r.public_id,
        }
    }

    /// Every resource of one type, page by page into `tx`. `Err(None)`: the receiver is gone.
    async fn list_type(
        &self,
        rt: ResourceType,
        opts: &ListOptions,
        tx: &mpsc::Sender<Result<Vec<Listed>, StoreError>>,
    ) -> Result<(), Option<StoreError>> {
        let path = self.resources_path(rt);
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("max_results".to_string(), LIST_PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("next_cursor".into(), c.clone()));
            }
            let page: Page = self
                .call(Method::GET, &path, &query, &Body::None)
                .await
                .map_err(|e| Some(Self::listing_error(e, rt.as_str())))?;
            self.full_list_calls.fetch_add(1, Ordering::Relaxed);
            self.send_page(rt, page.resources, opts, tx).await?;
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Resources uploaded since `since` (a day early, whole days), every listed type in one
    /// Search API query.
    async fn search_since(
        &self,
        since: DateTime<Utc>,
        opts: &ListOptions,
        tx: &mpsc::Sender<Result<Vec<Listed>, StoreError>>,
    ) -> Result<(), Option<StoreError>> {
        let days = (Utc::now() - since).num_days().max(0) + 1;
        let types: Vec<String> = self
            .types
            .iter()
            .map(|t| format!("resource_type:{}", t.as_str()))
            .collect();
        let expression = format!(
            "({}) AND type:{} AND uploaded_at>{days}d",
            types.join(" OR "),
            self.delivery
        );
        let mut cursor: Option<String> = None;
        loop {
            let mut body = serde_json::json!({
                "expression": expression,
                "max_results": LIST_PAGE,
            });
            if let Some(c) = &cursor {
                body["next_cursor"] = serde_json::Value::String(c.clone());
            }
            let page: Page = self
                .call(Method::POST, "/resources/search", &[], &Body::Json(body))
                .await
                .map_err(|e| Some(Self::listing_error(e, "search")))?;
            // Each resource names its own type; the first listed type is only a fallback.
            self.send_page(self.types[0], page.resources, opts, tx)
                .await?;
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    fn listing_error(e: StoreError, what: &str) -> StoreError {
        match e {
            StoreError::Unreachable(m) => StoreError::Unreachable(m),
            StoreError::Failed(m) => StoreError::Failed(format!("listing {what}: {m}")),
        }
    }

    async fn send_page(
        &self,
        rt: ResourceType,
        resources: Vec<Resource>,
        opts: &ListOptions,
        tx: &mpsc::Sender<Result<Vec<Listed>, StoreError>>,
    ) -> Result<(), Option<StoreError>> {
        let items: Vec<Listed> = resources
            .into_iter()
            .filter(|r| {
                !opts
                    .exclude_prefixes
                    .iter()
                    .any(|p| r.public_id.starts_with(p.as_str()))
            })
            .map(|r| Self::listed(rt, r))
            .collect();
        if !items.is_empty() && tx.send(Ok(items)).await.is_err() {
            return Err(None);
        }
        Ok(())
    }

    /// Look-ups of one resource type, up to 100 public_ids a call.
    async fn head_of(
        &self,
        rt: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        let path = self.resources_path(rt);
        let chunks = lookup_chunks(keys);
        let answers: Vec<Result<HashMap<String, Object>, StoreError>> =
            futures::stream::iter(chunks)
                .map(|chunk| {
                    let path = &path;
                    async move {
                        let mut found = HashMap::new();
                        let mut cursor: Option<String> = None;
                        loop {
                            let mut query: Vec<(String, String)> = chunk
                                .iter()
                                .map(|k| ("public_ids[]".to_string(), k.clone()))
                                .collect();
                            query.push(("max_results".into(), IDS_PER_CALL.to_string()));
                            if let Some(c) = &cursor {
                                query.push(("next_cursor".into(), c.clone()));
                            }
                            let page: Page =
                                self.call(Method::GET, path, &query, &Body::None).await?;
                            for r in page.resources {
                                let rt = r
                                    .resource_type
                                    .as_deref()
                                    .and_then(ResourceType::parse_cloudinary)
                                    .unwrap_or(rt);
                                let o = Self::object(rt, r);
                                found.insert(o.key.clone(), o);
                            }
                            match page.next_cursor.filter(|c| !c.is_empty()) {
                                Some(c) => cursor = Some(c),
                                None => return Ok(found),
                            }
                        }
                    }
                })
                .buffer_unordered(CALLS_IN_FLIGHT)
                .collect()
                .await;
        let mut found = HashMap::new();
        for a in answers {
            found.extend(a?);
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    /// Deletes of one resource type, up to 100 public_ids a call; `not_found` is success, and a
    /// `partial` answer sends what is left again.
    async fn delete_of(
        &self,
        rt: ResourceType,
        keys: &[String],
    ) -> Result<Vec<super::GoneResult>, StoreError> {
        let path = self.resources_path(rt);
        let mut outcome: HashMap<String, super::GoneResult> = HashMap::new();
        let usable: Vec<String> = keys
            .iter()
            .filter(|k| match unusable(k) {
                Some(why) => {
                    outcome.insert((*k).clone(), Err(why));
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        let batches: Vec<Vec<String>> = usable.chunks(IDS_PER_CALL).map(<[_]>::to_vec).collect();
        let answers: Vec<(Vec<String>, BatchAnswer)> = futures::stream::iter(batches)
            .map(|batch| {
                let path = &path;
                async move {
                    let sent = batch.clone();
                    (sent, self.delete_batch(path, batch).await)
                }
            })
            .buffer_unordered(CALLS_IN_FLIGHT)
            .collect()
            .await;
        // A call that failed fails its own keys; what the other calls deleted stays reported
        // (a budget stop part way must not hide deletes that happened). Only when no call
        // got through does the whole delete fail.
        let mut first_error = None;
        let mut answered = false;
        for (sent, a) in answers {
            match a {
                Ok(v) => {
                    answered = true;
                    outcome.extend(v);
                }
                Err(e) => {
                    for k in sent {
                        outcome.insert(k, Err(e.to_string()));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (false, Some(e)) = (answered, first_error) {
            return Err(e);
        }
        Ok(keys
            .iter()
            .map(|k| {
                outcome
                    .remove(k.as_str())
                    .unwrap_or_else(|| Err("not in Cloudinary's answer".into()))
            })
            .collect())
    }

    async fn delete_batch(
        &self,
        path: &str,
        batch: Vec<String>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut left = batch;
        let mut out = Vec::new();
        for _ in 0..PARTIAL_ROUNDS {
            let form: Vec<(String, String)> = left
                .iter()
                .map(|k| ("public_ids[]".to_string(), k.clone()))
                .collect();
            let answer: Deleted = self
                .call(Method::DELETE, path, &[], &Body::Form(&form))
                .await?;
            let mut rest = Vec::new();
            for k in left {
                match answer.deleted.get(&k).map(String::as_str) {
                    Some("deleted") => out.push((k, Ok(super::Gone::Deleted))),
                    Some("not_found") => out.push((k, Ok(super::Gone::AlreadyGone))),
                    Some(other) => out.push((k, Err(format!("Cloudinary said `{other}`")))),
                    None if answer.partial => rest.push(k),
                    None => out.push((k, Err("not in Cloudinary's answer".into()))),
                }
            }
            if rest.is_empty() {
                return Ok(out);
            }
            left = rest;
        }
        out.extend(left.into_iter().map(|k| {
            (
                k,
                Err(format!(
                    "still not deleted after {PARTIAL_ROUNDS} partial answers"
                )),
            )
        }));
        Ok(out)
    }
}

/// Delete outcomes without the already-gone distinction.
fn unit(results: Vec<super::GoneResult>) -> Vec<Result<(), String>> {
    results.into_iter().map(|r| r.map(|_| ())).collect()
}

/// Upload API `rename` calls in flight at once (one call per move; none counts in the Admin
/// API budget).
const RENAMES_IN_FLIGHT: usize = 8;

/// The signature of an Upload API call: the lowercase hex SHA-1 of its parameters sorted by
/// name as `name=value` joined with `&`, then the API secret.
fn upload_signature(params: &[(&str, String)], secret: &str) -> String {
    use sha1::Digest;
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let joined = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    hex::encode(sha1::Sha1::digest(format!("{joined}{secret}").as_bytes()))
}

impl Inner {
    /// Moves by the Upload API's `rename` (same resource type, `invalidate = true`,
    /// `overwrite = true`); "Resource not found" is [`Moved::SourceGone`].
    async fn rename_of(
        &self,
        rt: ResourceType,
        moves: &[(String, String)],
        overwrite: bool,
    ) -> Result<Vec<MoveResult>, StoreError> {
        let url = format!("{}/{}/rename", self.base, rt.as_str());
        let answers: Vec<MoveResult> = futures::stream::iter(moves.iter().cloned())
            .map(|(from, to)| {
                let url = &url;
                async move {
                    if let Some(why) = unusable(&from).or_else(|| unusable(&to)) {
                        return Err(why);
                    }
                    self.rename_one(url, &from, &to, overwrite).await
                }
            })
            .buffered(RENAMES_IN_FLIGHT)
            .collect()
            .await;
        let failed = answers.iter().filter(|a| a.is_err()).count();
        if failed == answers.len()
            && !self.answered.load(Ordering::Relaxed)
            && let Some(Err(why)) = answers.iter().find(|a| a.is_err())
        {
            return Err(StoreError::Unreachable(format!(
                "store {}: {why}",
                self.name
            )));
        }
        Ok(answers)
    }

    async fn rename_one(&self, url: &str, from: &str, to: &str, overwrite: bool) -> MoveResult {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=TRIES {
            let mut params: Vec<(&str, String)> = vec![
                ("from_public_id", from.to_string()),
                ("to_public_id", to.to_string()),
                ("type", self.delivery.clone()),
                ("invalidate", "true".to_string()),
                ("overwrite", overwrite.to_string()),
                ("timestamp", Utc::now().timestamp().to_string()),
            ];
            let signature = upload_signature(&params, &self.api_secret);
            params.push(("api_key", self.api_key.clone()));
            params.push(("signature", signature));
            let sent = self.client.post(url).form(&params).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < TRIES && (e.is_timeout() || e.is_connect()) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot reach the Cloudinary Upload API: {}",
                        error_chain(&e)
                    ));
                }
            };
            let status = resp.status();
            if status.is_success() {
                self.answered.store(true, Ordering::Relaxed);
                return Ok(Moved::Moved);
            }
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ApiError>(&text)
                .map_or_else(|_| text.chars().take(200).collect(), |e| e.error.message);
            // Any answer but a refusal of the credentials shows the API is there.
            if !matches!(status.as_u16(), 401 | 403) {
                self.answered.store(true, Ordering::Relaxed);
            }
            if status == StatusCode::NOT_FOUND {
                return Ok(Moved::SourceGone);
            }
            if (status.is_server_error() || status.as_u16() == 420 || status.as_u16() == 429)
                && attempt < TRIES
            {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                continue;
            }
            return Err(format!(
                "Cloudinary's Upload API answered rename of `{from}` with HTTP {}: {}",
                status.as_u16(),
                message.trim()
            ));
        }
        Err(format!("rename of `{from}` failed after {TRIES} tries"))
    }
}

/// The quarantine prefix as public_ids spell it: without its leading dot (SPEC §6), since a
/// public_id cannot start with one.
pub(super) fn trash_prefix(prefix: &str) -> String {
    prefix.trim_start_matches('.').to_string()
}

/// A public_id or Cloudinary URL typed on the command line, with its resource type: `explicit`
/// (`--resource-type`), else the one the value names, else the store's only type. `Err` is the
/// usage message.
pub(super) fn typed_key(
    cfg: &StoreConfig,
    loc: &CloudinaryLocation,
    explicit: Option<ResourceType>,
    key: &str,
) -> Result<(ResourceType, String), String> {
    let ctx = cfg.key_context("");
    let parsed = KeyFormat::Cloudinary.parse(key, explicit.map(ResourceType::as_str), &ctx);
    let Some(k) = parsed.keys.into_iter().next() else {
        return Err(format!(
            "`{key}` is not a public_id or Cloudinary URL of store `{}`",
            cfg.name
        ));
    };
    let rt = match (explicit, k.resource_type) {
        (Some(t), _) => t,
        (None, Some(t)) if t != ResourceType::Plain => t,
        _ => match loc.resource_types.as_slice() {
            [only] => *only,
            _ => {
                return Err(format!(
                    "`{key}` is a bare public_id: give its type with --resource-type image|video|raw, or write it as image/upload/{key}"
                ));
            }
        },
    };
    if !loc.resource_types.contains(&rt) {
        return Err(format!(
            "store `{}` does not list resource type `{}`",
            cfg.name,
            rt.as_str()
        ));
    }
    Ok((rt, k.key))
}

/// What `&public_ids%5B%5D=<id>` adds to a URL.
fn query_bytes(id: &str) -> usize {
    "&public_ids%5B%5D=".len()
        + url::form_urlencoded::byte_serialize(id.as_bytes())
            .map(str::len)
            .sum::<usize>()
}

/// Keys in calls of at most 100, and at most [`LOOKUP_URL_BYTES`] of public_ids a URL.
fn lookup_chunks(keys: &[String]) -> Vec<Vec<String>> {
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for k in keys.iter().filter(|k| is_representable(k)) {
        let cost = query_bytes(k);
        match chunks.last_mut() {
            Some(c) if c.len() < IDS_PER_CALL && bytes + cost <= LOOKUP_URL_BYTES => {
                c.push(k.clone());
                bytes += cost;
            }
            _ => {
                chunks.push(vec![k.clone()]);
                bytes = cost;
            }
        }
    }
    chunks
}

#[async_trait]
impl Store for CloudinaryStore {
    fn describe(&self) -> String {
        self.inner.location.clone()
    }

    async fn check(&self) -> Result<(), StoreError> {
        let query = [("max_results".to_string(), "1".to_string())];
        let path = self.inner.resources_path(self.inner.types[0]);
        self.inner
            .call::<Page>(Method::GET, &path, &query, &Body::None)
            .await
            .map(|_| ())
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        let (tx, rx) = mpsc::channel(PAGES_IN_FLIGHT);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let result = match opts.since {
                Some(since) => inner.search_since(since, &opts, &tx).await,
                None => {
                    let lists = inner
                        .types
                        .iter()
                        .map(|&rt| inner.list_type(rt, &opts, &tx));
                    // The types are listed at once; the first failure is reported.
                    futures::future::join_all(lists)
                        .await
                        .into_iter()
                        .find(Result::is_err)
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(Some(e)) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    fn api_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    fn full_list_calls(&self) -> u64 {
        self.inner.full_list_calls.load(Ordering::Relaxed)
    }

    fn lists_since(&self) -> bool {
        true
    }

    fn lookup_batch(&self) -> Option<usize> {
        Some(IDS_PER_CALL)
    }

    fn checked_by_first_call(&self) -> bool {
        true
    }

    fn resource_types(&self) -> Vec<ResourceType> {
        self.inner.types.clone()
    }

    async fn head_many(&self, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError> {
        let rt = self.single_type()?;
        self.inner.head_of(rt, keys).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<Vec<Result<(), String>>, StoreError> {
        let rt = self.single_type()?;
        Ok(unit(self.inner.delete_of(rt, keys).await?))
    }

    async fn delete_many_gone(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<super::GoneResult>, StoreError> {
        let rt = if resource_type == ResourceType::Plain {
            self.single_type()?
        } else {
            resource_type
        };
        self.inner.delete_of(rt, keys).await
    }

    async fn move_many(&self, moves: &[(String, String)]) -> Result<Vec<MoveResult>, StoreError> {
        let rt = self.single_type()?;
        self.inner.rename_of(rt, moves, true).await
    }

    async fn move_many_no_replace_of(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
    ) -> Result<Vec<MoveResult>, StoreError> {
        let rt = if resource_type == ResourceType::Plain {
            self.single_type()?
        } else {
            resource_type
        };
        self.inner.rename_of(rt, moves, false).await
    }

    async fn move_many_of(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
    ) -> Result<Vec<MoveResult>, StoreError> {
        if resource_type == ResourceType::Plain {
            return self.move_many(moves).await;
        }
        self.inner.rename_of(resource_type, moves, true).await
    }

    async fn head_many_of(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        if resource_type == ResourceType::Plain {
            return self.head_many(keys).await;
        }
        self.inner.head_of(resource_type, keys).await
    }

    async fn delete_many_of(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<(), String>>, StoreError> {
        if resource_type == ResourceType::Plain {
            return self.delete_many(keys).await;
        }
        Ok(unit(self.inner.delete_of(resource_type, keys).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_time_falls_back_to_uploaded_at() {
        let r: Resource = serde_json::from_str(
            r#"{"public_id": "a", "resource_type": "video", "format": "",
                "uploaded_at": "2026-11-01T10:00:00Z", "bytes": 7}"#,
        )
        .expect("resource");
        let o = Inner::object(ResourceType::Image, r);
        assert_eq!(o.resource_type, ResourceType::Image);
        assert_eq!(
            o.modified.map(|t| t.to_rfc3339()),
            Some("2026-11-01T10:00:00+00:00".to_string())
        );
        assert_eq!((o.size, o.format), (Some(7), None));
    }

    #[test]
    fn look_ups_go_100_a_call_and_keep_urls_short() {
        let keys: Vec<String> = (0..250)
            .map(|i| format!("bench/f{i:02}/img-{i:06}"))
            .collect();
        let chunks = lookup_chunks(&keys);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let long: Vec<String> = (0..100)
            .map(|i| format!("{}{i}", "x".repeat(200)))
            .collect();
        let chunks = lookup_chunks(&long);
        assert!(chunks.len() > 1);
        assert!(
            chunks
                .iter()
                .all(|c| c.iter().map(|k| query_bytes(k)).sum::<usize>() <= LOOKUP_URL_BYTES)
        );
        let bad = vec!["a//b".to_string(), "ok".to_string()];
        assert_eq!(lookup_chunks(&bad), vec![vec!["ok".to_string()]]);
    }
}
