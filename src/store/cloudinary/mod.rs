//! Cloudinary through its Admin API: list resources (500 a call, per resource type, the types in
//! parallel), the Search API for a listing limited to recent uploads, look-ups of up to 100
//! public_ids a call, and deletes of up to 100 public_ids a call. Every Admin API call passes the
//! account's [`Budget`] first and reports the provider's rate-limit headers back to it, all in
//! `client.rs`. Moves (quarantine and restore) are the Upload API's `rename`.
//!
//! Written against the REST API with `reqwest`: no maintained Rust crate covers the Admin API.
//!
//! Keys are public_ids; the identity of an object is (resource type, public_id), so every call
//! names its type; `Plain` stands for the store's type only when it lists a single one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod budget;
mod client;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    Capabilities, Gone, KeyError, KeyFailure, ListOptions, ListStream, Listed, MoveOptions, Moved,
    Object, Store, StoreError, Usage, resolve_type, unusable,
};
use crate::config::{CloudinaryLocation, StoreConfig};
use crate::key::{KeyFormat, ResourceType, is_representable};
use budget::Budget;
use client::{Body, Client, Refusal};

/// Resources one list or search call returns, the API's maximum.
const LIST_PAGE: usize = 500;
/// public_ids one look-up or delete call takes, the API's maximum.
const IDS_PER_CALL: usize = 100;
/// Bytes of `public_ids[]=…` one look-up URL carries at most: under the 8 KiB request line
/// that common front servers accept, whatever the public_ids.
const LOOKUP_URL_BYTES: usize = 7000;
/// Calls of one look-up or delete in flight at once.
const CALLS_IN_FLIGHT: usize = 4;
/// Listing pages waiting for the consumer.
const PAGES_IN_FLIGHT: usize = 4;
/// Follow-up calls one delete batch makes while Cloudinary answers `partial`.
const PARTIAL_ROUNDS: usize = 10;

pub struct CloudinaryStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    location: String,
    types: Vec<ResourceType>,
    delivery: String,
    client: Client,
    full_list_calls: AtomicU64,
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

/// One key's delete outcome.
type Outcome = (String, Result<Gone, KeyError>);
/// One delete call's outcomes, or why the call failed.
type BatchAnswer = Result<Vec<Outcome>, StoreError>;

impl CloudinaryStore {
    pub fn new(
        name: &str,
        loc: &CloudinaryLocation,
        budget: Arc<Budget>,
    ) -> Result<Self, StoreError> {
        Ok(CloudinaryStore {
            inner: Arc::new(Inner {
                name: name.to_string(),
                location: loc.describe(),
                types: loc.resource_types.clone(),
                delivery: loc.delivery_type.clone(),
                client: Client::new(loc, budget)?,
                full_list_calls: AtomicU64::new(0),
            }),
        })
    }

    /// The resource type a call goes to, or why the store cannot take it.
    fn typed(&self, resource_type: ResourceType) -> Result<ResourceType, StoreError> {
        resolve_type(
            &format!("store {}", self.inner.name),
            &self.inner.types,
            resource_type,
        )
    }
}

impl Inner {
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
                .client
                .admin(Method::GET, &path, &query, &Body::None)
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
                .client
                .admin(Method::POST, "/resources/search", &[], &Body::Json(body))
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

    /// A listing's failure names what was listed, unless the store was not reached at all.
    fn listing_error(e: StoreError, what: &str) -> StoreError {
        if e.reached() {
            e.map_message(|m| format!("listing {what}: {m}"))
        } else {
            e
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
    async fn lookup_of(
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
                            let page: Page = self
                                .client
                                .admin(Method::GET, path, &query, &Body::None)
                                .await?;
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
        // `get`, not `remove`: a key asked twice is answered twice.
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Deletes of one resource type, up to 100 public_ids a call; `not_found` is success, and a
    /// `partial` answer sends what is left again.
    async fn delete_of(
        &self,
        rt: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        let path = self.resources_path(rt);
        let mut outcome: HashMap<String, Result<Gone, KeyError>> = HashMap::new();
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
        // A call that failed fails its own keys, the way it failed (a budget stop defers them);
        // what the other calls deleted stays reported (a budget stop part way must not hide
        // deletes that happened). Only when no call got through does the whole delete fail.
        let mut first_error = None;
        let mut answered = false;
        for (sent, a) in answers {
            match a {
                Ok(v) => {
                    answered = true;
                    outcome.extend(v);
                }
                Err(e) => {
                    let failed = KeyError::of_call(&e);
                    for k in sent {
                        outcome.insert(k, Err(failed.clone()));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (false, Some(e)) = (answered, first_error) {
            return Err(e);
        }
        // `get`, not `remove`: a key named twice is answered twice.
        Ok(keys
            .iter()
            .map(|k| {
                outcome
                    .get(k.as_str())
                    .cloned()
                    .unwrap_or_else(|| Err(KeyError::transient("not in Cloudinary's answer")))
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
                .client
                .admin(Method::DELETE, path, &[], &Body::Form(&form))
                .await?;
            let mut rest = Vec::new();
            // The reference documents `deleted` and `not_found` only; anything else is not
            // known to be final, so the key is tried again later.
            for k in left {
                match answer.deleted.get(&k).map(String::as_str) {
                    Some("deleted") => out.push((k, Ok(Gone::Deleted))),
                    Some("not_found") => out.push((k, Ok(Gone::AlreadyGone))),
                    Some(other) => out.push((
                        k,
                        Err(KeyError::transient(format!("Cloudinary said `{other}`"))),
                    )),
                    None if answer.partial => rest.push(k),
                    None => out.push((k, Err(KeyError::transient("not in Cloudinary's answer")))),
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
                Err(KeyError::transient(format!(
                    "still not deleted after {PARTIAL_ROUNDS} partial answers"
                ))),
            )
        }));
        Ok(out)
    }
}

/// Upload API `rename` calls in flight at once (one call per move; none counts in the Admin
/// API budget).
const RENAMES_IN_FLIGHT: usize = 8;

impl Inner {
    /// Moves by the Upload API's `rename` (same resource type, `invalidate = true`), replacing
    /// what is at the destination only with `overwrite`; "Resource not found" is
    /// [`Moved::SourceGone`]. When every move sent failed and nothing ever answered, the store is
    /// out of reach.
    async fn rename_of(
        &self,
        rt: ResourceType,
        moves: &[(String, String)],
        overwrite: bool,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        let path = format!("{}/rename", rt.as_str());
        let answers: Vec<(bool, Result<Moved, KeyError>)> =
            futures::stream::iter(moves.iter().cloned())
                .map(|(from, to)| {
                    let path = &path;
                    async move {
                        if let Some(why) = unusable(&from).or_else(|| unusable(&to)) {
                            return (false, Err(why));
                        }
                        (true, self.rename_one(path, &from, &to, overwrite).await)
                    }
                })
                .buffered(RENAMES_IN_FLIGHT)
                .collect()
                .await;
        let mut sent = answers.iter().filter(|(sent, _)| *sent).peekable();
        if sent.peek().is_some()
            && !self.client.answered()
            && let Some((_, Err(why))) = sent.find(|(_, a)| a.is_err())
            && answers.iter().all(|(_, a)| a.is_err())
        {
            return Err(StoreError::unreachable(format!(
                "store {}: {why}",
                self.name
            )));
        }
        Ok(answers.into_iter().map(|(_, a)| a).collect())
    }

    async fn rename_one(
        &self,
        path: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Moved, KeyError> {
        let params: [(&str, String); 5] = [
            ("from_public_id", from.to_string()),
            ("to_public_id", to.to_string()),
            ("type", self.delivery.clone()),
            ("invalidate", "true".to_string()),
            ("overwrite", overwrite.to_string()),
        ];
        let Refusal { status, message } = match self.client.upload(path, &params).await {
            Ok(()) => return Ok(Moved::Moved),
            Err(refusal) => refusal,
        };
        let Some(status) = status else {
            return Err(KeyError::transient(message));
        };
        if status == 404 {
            return Ok(Moved::SourceGone);
        }
        let said = format!(
            "Cloudinary's Upload API answered rename of `{from}` with HTTP {status}: {message}"
        );
        // `overwrite = false` onto a public_id that exists: "to_public_id … already exists".
        let kind = if !overwrite && status == 400 && message.contains("already exists") {
            KeyFailure::AlreadyExists
        } else if status >= 500 || matches!(status, 420 | 429) {
            KeyFailure::Transient
        } else {
            KeyFailure::Permanent
        };
        Err(KeyError {
            kind,
            message: said,
        })
    }
}

/// The quarantine prefix as public_ids spell it: without its leading dot (SPEC §6).
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
    if let Some(t) = crate::key::cloudinary_delivery_type(key)
        && t != loc.delivery_type
    {
        return Err(format!(
            "`{key}` is a `{t}` asset but store `{}` holds `{}` assets; name a store with delivery_type = \"{t}\"",
            cfg.name, loc.delivery_type
        ));
    }
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

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resource_types: self.inner.types.clone(),
            lists_since: true,
            lookup_batch: Some(IDS_PER_CALL),
            list_page: LIST_PAGE,
            checked_by_first_call: true,
            atomic_no_replace: true,
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            api_calls: self.inner.client.calls(),
            full_list_calls: self.inner.full_list_calls.load(Ordering::Relaxed),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        let query = [("max_results".to_string(), "1".to_string())];
        let path = self.inner.resources_path(self.inner.types[0]);
        self.inner
            .client
            .admin::<Page>(Method::GET, &path, &query, &Body::None)
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
        crate::store::pages(rx)
    }

    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        let rt = self.typed(resource_type)?;
        self.inner.lookup_of(rt, keys).await
    }

    async fn delete_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        let rt = self.typed(resource_type)?;
        self.inner.delete_of(rt, keys).await
    }

    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        let rt = self.typed(resource_type)?;
        self.inner.rename_of(rt, moves, opts.replace).await
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
