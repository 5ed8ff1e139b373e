//! The queue's operations besides the worker (`queue::run`): queueing keys by hand, and a
//! person's retry and drop.

use chrono::Utc;

use crate::app::App;
use crate::config::StoreConfig;
use crate::domain::ObjectId;
use crate::domain::ResourceType;
use crate::domain::queue::{Changed, NewEntry, Reason, Selection};
use crate::error::{Error, Result};
use crate::key::{KeyFormat, unrepresentable_reason};
use crate::queue::transition;
use crate::state::QueueStore as _;

/// A key typed on the command line or posted, with its resource type (SPEC §3): on Cloudinary
/// from `resource_type` or the `cloudinary` key format, a bare public_id only when the store
/// lists a single type; elsewhere the key as written.
pub fn typed_key(
    store: &StoreConfig,
    resource_type: Option<&str>,
    key: &str,
) -> Result<(ResourceType, String)> {
    let explicit = match resource_type {
        None => None,
        Some(t) => Some(ResourceType::parse_cloudinary(t).ok_or_else(|| {
            Error::Usage(format!("--resource-type `{t}`: use image, video or raw"))
        })?),
    };
    let Some(cloud) = store.location.cloudinary() else {
        if explicit.is_some() {
            return Err(Error::Usage(format!(
                "--resource-type is for Cloudinary stores; store `{}` has no resource types",
                store.name
            )));
        }
        if let Some(why) = unrepresentable_reason(key) {
            return Err(Error::Usage(format!(
                "`{key}` is not a key of store `{}` ({why}); keys are relative to the store root, like `uploads/a.jpg`",
                store.name
            )));
        }
        return Ok((ResourceType::Plain, key.to_string()));
    };
    let ctx = store.key_context("");
    let parsed = KeyFormat::Cloudinary.parse(key, explicit.map(ResourceType::as_str), &ctx);
    let Some(k) = parsed.keys.into_iter().next() else {
        return Err(Error::Usage(format!(
            "`{key}` is not a public_id or Cloudinary URL of store `{}`",
            store.name
        )));
    };
    let rt = match (explicit, k.resource_type) {
        (Some(t), _) => t,
        (None, Some(t)) if t != ResourceType::Plain => t,
        _ => match cloud.resource_types.as_slice() {
            [only] => *only,
            _ => {
                return Err(Error::Usage(format!(
                    "`{key}` is a bare public_id: give its type with --resource-type image|video|raw, or write it as image/upload/{key}"
                )));
            }
        },
    };
    if !cloud.resource_types.contains(&rt) {
        return Err(Error::Usage(format!(
            "store `{}` does not list resource type `{}`",
            store.name,
            rt.as_str()
        )));
    }
    Ok((rt, k.key))
}

/// Queues keys of one store for deletion, due now (explicit deletions are not held by
/// `min_age`; invariant 1 still guards them). Every key is checked before any is queued: one
/// bad key queues nothing. (added, already queued).
pub async fn add(
    app: &App,
    store: &str,
    resource_type: Option<&str>,
    keys: &[String],
    client_id: &str,
    actor: &str,
) -> Result<(u64, u64)> {
    let store = app.store_config(store)?;
    if keys.is_empty() {
        return Err(Error::Usage("no keys given (stdin was empty)".into()));
    }
    let now = Utc::now();
    let entries = keys
        .iter()
        .map(|k| {
            let (rt, key) = typed_key(store, resource_type, k)?;
            Ok(NewEntry {
                object: ObjectId::new(store.name.clone(), rt, key),
                reason: Reason::Add,
                client_id: client_id.to_string(),
                scan_id: None,
                uploaded_at: None,
                next_attempt_at: now,
                original_key: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    app.state.enqueue(actor, &entries).await
}

/// `queue retry`: failed (or waiting) entries become due again with their attempts reset —
/// never before `min_age` after their upload time when they came from a scan.
pub async fn retry(app: &App, sel: &Selection, actor: &str) -> Result<Vec<Changed>> {
    let now = Utc::now();
    let cfg = &app.cfg;
    let decide = |e: &crate::domain::queue::Entry, other: Option<i64>| {
        let min_age = cfg
            .stores
            .iter()
            .find(|s| s.name == e.object.store)
            .map(|s| s.min_age);
        transition::retry(e, other, min_age, now)
    };
    app.state.queue_retry(sel, actor, &decide).await
}

/// `queue drop`: pending or failed entries are dropped, never deleted.
pub async fn drop(app: &App, sel: &Selection, actor: &str) -> Result<Vec<Changed>> {
    app.state.queue_drop(sel, actor).await
}
