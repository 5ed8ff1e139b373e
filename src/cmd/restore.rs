//! `assetgc restore KEY…`: brings quarantined objects back from their newest quarantine copy
//! (SPEC §6 invariant 4). Reads the quarantine records; never lists the store.

use crate::cli::{Global, RestoreArgs};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::state::State;
use crate::store::{self, MoveOptions, Moved};

pub async fn run(g: &Global, args: &RestoreArgs) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    let state = State::open(&cfg.state_url).await?;
    let result = restore(&cfg, &state, args).await;
    state.close().await;
    result
}

async fn restore(cfg: &Config, state: &State, args: &RestoreArgs) -> Result<Exit> {
    let store_cfg = match &args.store {
        Some(name) => super::queue::store_named(cfg, name)?,
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
    // Every key is checked before anything moves.
    let mut plan = Vec::new();
    for k in &args.keys {
        let (rt, key) = store::typed_key(store_cfg, args.resource_type.as_deref(), k)?;
        let rec = state
            .newest_quarantine(&store_cfg.name, rt.as_str(), &key)
            .await?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no quarantined copy of `{key}` in store `{}`: it was never moved there, was restored already, or its copy was removed after `keep` (`assetgc audit --key {key}` tells)",
                    store_cfg.name
                ))
            })?;
        plan.push((rt, key, rec));
    }
    let ledger = store::Ledger::new(state.load_budgets(chrono::Utc::now()).await?);
    let store = store::open(store_cfg, &ledger).map_err(|e| Error::Unreachable(e.to_string()))?;
    if !args.overwrite {
        for (rt, key, _) in &plan {
            let found = store
                .lookup_many(*rt, std::slice::from_ref(key))
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?;
            if found.first().is_some_and(Option::is_some) {
                return Err(Error::Usage(format!(
                    "`{key}` exists in store `{}`; pass --overwrite to replace it with the quarantined copy",
                    store_cfg.name
                )));
            }
        }
    }
    let mut exit = Exit::Ok;
    let mut restored = 0;
    for (rt, key, rec) in &plan {
        let pair = [(rec.quarantine_key.clone(), key.clone())];
        let opts = MoveOptions {
            replace: args.overwrite,
        };
        let answer = store.move_many(*rt, &pair, opts).await;
        let moved = match answer {
            Ok(m) => m,
            // Some keys came back already: the run did part of its work (exit 4).
            Err(e) if restored > 0 => {
                eprintln!("error: cannot restore `{key}`: {e}");
                exit = exit.max(Exit::Incomplete);
                continue;
            }
            Err(e) => return Err(Error::Unreachable(e.to_string())),
        };
        match moved.into_iter().next() {
            Some(Ok(Moved::Moved)) => {
                state.mark_restored(rec, "restore").await?;
                restored += 1;
                println!("Restored {key} (from {}).", rec.quarantine_key);
            }
            Some(Ok(Moved::SourceGone)) => {
                eprintln!(
                    "error: the quarantined copy {} of `{key}` is no longer in store `{}`",
                    rec.quarantine_key, store_cfg.name
                );
                exit = exit.max(Exit::Incomplete);
            }
            Some(Err(why)) => {
                eprintln!("error: cannot restore `{key}`: {why}");
                exit = exit.max(Exit::Incomplete);
            }
            None => exit = exit.max(Exit::Incomplete),
        }
    }
    Ok(exit)
}
