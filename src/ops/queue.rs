//! The queue's operations besides the worker (`queue::run`): queueing keys by hand, and a
//! person's retry and drop.

use chrono::Utc;

use crate::app::App;
use crate::domain::ObjectId;
use crate::domain::queue::{Changed, NewEntry, Reason, Selection};
use crate::error::{Error, Result};
use crate::queue::transition;
use crate::state::QueueStore as _;

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
    // Only a quarantine record removes a copy: no key in any overlapping store's trash.
    let trash = crate::overlap::index(&app.cfg, &store.name)
        .map(|s| crate::overlap::trash_prefixes(&app.cfg, s))
        .unwrap_or_default();
    let entries = keys
        .iter()
        .map(|k| {
            let (rt, key) = crate::store::typed_key(store, resource_type, k)?;
            if let Some(why) = crate::overlap::trash_reason(&store.name, &trash, &key) {
                return Err(Error::Refused(why));
            }
            Ok(NewEntry {
                object: ObjectId::new(store.name.clone(), rt, key),
                reason: Reason::Add,
                rule: String::new(),
                row_id: String::new(),
                client_id: client_id.to_string(),
                scan_id: None,
                uploaded_at: None,
                next_attempt_at: now,
                original_key: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let queued = app.state.enqueue(actor, &entries).await?;
    app.state
        .stamp_fingerprint(&store.name, &crate::overlap::fingerprint(store))
        .await?;
    Ok(queued)
}

/// `queue retry`: failed (or waiting) entries become due again with their attempts reset —
/// never before `min_age` after their upload time when they came from a scan.
pub async fn retry(app: &App, sel: &Selection, actor: &str) -> Result<Vec<Changed>> {
    let now = Utc::now();
    let cfg = &app.cfg;
    // The largest min_age of the stores overlapping each store (invariant 1), once per store.
    let min_ages: Vec<std::time::Duration> = (0..cfg.stores.len())
        .map(|s| crate::overlap::rules(cfg, s).min_age)
        .collect();
    let decide = |e: &crate::domain::queue::Entry, other: Option<i64>| {
        let min_age = crate::overlap::index(cfg, &e.object.store).map(|s| min_ages[s]);
        transition::retry(e, other, min_age, now)
    };
    app.state.queue_retry(sel, actor, &decide).await
}

/// `queue drop`: pending or failed entries are dropped, never deleted; never one whose object
/// may be in the trash from an interrupted move (the worker must find that copy first).
pub async fn drop(app: &App, sel: &Selection, actor: &str) -> Result<Vec<Changed>> {
    app.state.queue_drop(sel, actor).await
}
