//! `restore`: brings quarantined objects back from their newest quarantine copy (SPEC §6
//! invariant 4). Reads the quarantine records; never lists the store.

use chrono::Utc;

use crate::app::App;
use crate::domain::ObjectId;
use crate::domain::queue::QuarantineRecord;
use crate::error::{Error, Result};
use crate::state::QuarantineLog as _;
use crate::store::{KeyFailure, MoveOptions, Moved, Store, quarantine_key};

pub struct RestoreRequest {
    /// The store; may be left out when the config has one.
    pub store: Option<String>,
    pub resource_type: Option<String>,
    pub keys: Vec<String>,
    /// Replace an object that exists at the key again.
    pub overwrite: bool,
    pub actor: String,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// (key, the quarantine key it came back from).
    pub restored: Vec<(String, String)>,
    /// One line per key that could not be brought back.
    pub failed: Vec<String>,
}

/// Brings the keys back. Nothing moves unless every key has a quarantined copy and, without
/// `overwrite`, is free; an error before the first move is returned as such.
pub async fn restore(app: &App, req: &RestoreRequest) -> Result<RestoreOutcome> {
    let cfg = &app.cfg;
    let store_cfg = match &req.store {
        Some(name) => app.store_config(name)?,
        None => match cfg.stores.as_slice() {
            [only] => only,
            _ => {
                return Err(Error::Usage(
                    "the config has several stores: name one with --store".into(),
                ));
            }
        },
    };
    if store_cfg.quarantine.is_none() {
        return Err(Error::Usage(format!(
            "store `{}` has quarantine turned off (`quarantine = false`): its deletions are final and there is nothing to restore",
            store_cfg.name
        )));
    }
    let mut plan = Vec::new();
    for k in &req.keys {
        let (rt, key) = crate::store::typed_key(store_cfg, req.resource_type.as_deref(), k)?;
        let object = ObjectId::new(store_cfg.name.clone(), rt, key.clone());
        let rec = app.state.newest_quarantine(&object).await?.ok_or_else(|| {
            Error::Usage(format!(
                "no quarantined copy of `{key}` in store `{}`: it was never moved there, was restored already, or its copy was removed after `keep` (`assetgc audit --key {key}` tells)",
                store_cfg.name
            ))
        })?;
        plan.push(rec);
    }
    let store = app
        .store(&store_cfg.name)
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    if !req.overwrite {
        for rec in &plan {
            let o = &rec.object;
            let found = store
                .lookup_many(o.resource_type, std::slice::from_ref(&o.key))
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?;
            if found.first().is_some_and(Option::is_some) {
                return Err(Error::Usage(format!(
                    "`{}` exists in store `{}`; pass --overwrite to replace it with the quarantined copy",
                    o.key, store_cfg.name
                )));
            }
        }
    }
    let mut out = RestoreOutcome::default();
    for rec in &plan {
        match restore_one(app, store_cfg, store.as_ref(), rec, req).await {
            Ok(()) => out
                .restored
                .push((rec.object.key.clone(), rec.quarantine_key.clone())),
            // Nothing came back yet: the run failed as a whole.
            Err(Failure::Call(e)) if out.restored.is_empty() && out.failed.is_empty() => {
                return Err(e);
            }
            Err(Failure::Call(e)) => out
                .failed
                .push(format!("cannot restore `{}`: {e}", rec.object.key)),
            Err(Failure::Key(why)) => out.failed.push(why),
        }
    }
    Ok(out)
}

/// Why one key did not come back: the call failed, or this key could not.
enum Failure {
    Call(Error),
    Key(String),
}

/// One key: its copy's removal is cancelled first (in one transaction, refused while a worker
/// holds it), so that no worker removes the copy or records it `removed` while it moves; with
/// `overwrite`, what is at the key now goes to the trash first, recorded like any quarantine;
/// then the copy moves back, never over an object. A failure puts the removal back.
async fn restore_one(
    app: &App,
    store_cfg: &crate::config::StoreConfig,
    store: &dyn Store,
    rec: &QuarantineRecord,
    req: &RestoreRequest,
) -> std::result::Result<(), Failure> {
    let (rt, key) = (rec.object.resource_type, &rec.object.key);
    let cancelled = match rec.queue_id {
        Some(id) => app.state.cancel_removal(id).await.map_err(Failure::Call)?,
        None => false,
    };
    let result = async {
        if req.overwrite {
            set_aside(app, store_cfg, store, rec, &req.actor).await?;
        }
        let pair = [(rec.quarantine_key.clone(), key.clone())];
        let moved = store
            .move_many(rt, &pair, MoveOptions { replace: false })
            .await
            .map_err(|e| Failure::Call(Error::Unreachable(e.to_string())))?;
        match moved.into_iter().next() {
            Some(Ok(Moved::Moved)) => Ok(()),
            Some(Ok(Moved::SourceGone)) => Err(Failure::Key(format!(
                "the quarantined copy {} of `{key}` is no longer in store `{}`",
                rec.quarantine_key, store_cfg.name
            ))),
            Some(Err(why)) if why.kind == KeyFailure::AlreadyExists => Err(Failure::Key(format!(
                "cannot restore `{key}`: it exists again in store `{}` and is not replaced{}",
                store_cfg.name,
                if req.overwrite {
                    ""
                } else {
                    " (pass --overwrite)"
                }
            ))),
            Some(Err(why)) => Err(Failure::Key(format!("cannot restore `{key}`: {why}"))),
            None => Err(Failure::Key(format!(
                "cannot restore `{key}`: the store said nothing"
            ))),
        }
    }
    .await;
    match result {
        Ok(()) => app
            .state
            .mark_restored(rec, &req.actor)
            .await
            .map_err(Failure::Call),
        Err(f) => {
            if let (true, Some(id)) = (cancelled, rec.queue_id) {
                app.state
                    .reinstate_removal(id)
                    .await
                    .map_err(Failure::Call)?;
            }
            Err(f)
        }
    }
}

/// `--overwrite`: the object at the key now is moved to the trash (time of now), never
/// replacing anything there, and recorded with its removal queued like any quarantine.
async fn set_aside(
    app: &App,
    store_cfg: &crate::config::StoreConfig,
    store: &dyn Store,
    rec: &QuarantineRecord,
    actor: &str,
) -> std::result::Result<(), Failure> {
    let (rt, key) = (rec.object.resource_type, &rec.object.key);
    let found = store
        .lookup_many(rt, std::slice::from_ref(key))
        .await
        .map_err(|e| Failure::Call(Error::Unreachable(e.to_string())))?;
    if !found.first().is_some_and(Option::is_some) {
        return Ok(());
    }
    let now = Utc::now();
    let Some(mut to) = quarantine_key(store_cfg, key, now) else {
        return Err(Failure::Key(format!(
            "store `{}` has no quarantine",
            store_cfg.name
        )));
    };
    let mut n = 1;
    while !app
        .state
        .trash_key_free(&rec.object, &to)
        .await
        .map_err(Failure::Call)?
    {
        n += 1;
        let base = quarantine_key(store_cfg, "", now).unwrap_or_default();
        to = format!("{}-{n}/{key}", base.trim_end_matches('/'));
    }
    let moved = store
        .move_many(
            rt,
            &[(key.clone(), to.clone())],
            MoveOptions { replace: false },
        )
        .await
        .map_err(|e| Failure::Call(Error::Unreachable(e.to_string())))?;
    match moved.into_iter().next() {
        Some(Ok(Moved::Moved)) => {
            let keep = store_cfg
                .quarantine
                .as_ref()
                .map_or(std::time::Duration::ZERO, |q| q.keep);
            app.state
                .record_move(
                    actor,
                    &rec.object,
                    &to,
                    now,
                    crate::queue::transition::after(now, keep),
                    &format!(
                        "replaced by `restore --overwrite` from {}",
                        rec.quarantine_key
                    ),
                )
                .await
                .map_err(Failure::Call)
        }
        Some(Ok(Moved::SourceGone)) => Ok(()),
        Some(Err(why)) => Err(Failure::Key(format!(
            "cannot restore `{key}`: what is there now could not be moved to the trash first ({why})"
        ))),
        None => Err(Failure::Key(format!(
            "cannot restore `{key}`: the store said nothing"
        ))),
    }
}
