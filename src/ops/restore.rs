//! `restore`: brings quarantined objects back from their newest quarantine copy (SPEC §6
//! invariant 4). Reads the quarantine records; never lists the store.

use crate::app::App;
use crate::domain::ObjectId;
use crate::error::{Error, Result};
use crate::state::QuarantineLog as _;
use crate::store::{MoveOptions, Moved};

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
        let (rt, key) = (rec.object.resource_type, &rec.object.key);
        let pair = [(rec.quarantine_key.clone(), key.clone())];
        // Without --overwrite the move itself refuses an object that appeared since the
        // look-up, where the store can (see `Capabilities::atomic_no_replace`).
        let answer = store
            .move_many(
                rt,
                &pair,
                MoveOptions {
                    replace: req.overwrite,
                },
            )
            .await;
        let moved = match answer {
            Ok(m) => m,
            // Some keys came back already: the run did part of its work.
            Err(e) if !out.restored.is_empty() => {
                out.failed.push(format!("cannot restore `{key}`: {e}"));
                continue;
            }
            Err(e) => return Err(Error::Unreachable(e.to_string())),
        };
        match moved.into_iter().next() {
            Some(Ok(Moved::Moved)) => {
                app.state.mark_restored(rec, &req.actor).await?;
                out.restored.push((key.clone(), rec.quarantine_key.clone()));
            }
            Some(Ok(Moved::SourceGone)) => out.failed.push(format!(
                "the quarantined copy {} of `{key}` is no longer in store `{}`",
                rec.quarantine_key, store_cfg.name
            )),
            Some(Err(why)) => out.failed.push(format!("cannot restore `{key}`: {why}")),
            None => out
                .failed
                .push(format!("cannot restore `{key}`: the store said nothing")),
        }
    }
    Ok(out)
}
