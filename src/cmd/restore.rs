//! `assetgc restore KEY…`: brings quarantined objects back from their newest quarantine copy
//! (SPEC §6 invariant 4).

use std::fmt::Write as _;

use crate::cli::{Global, RestoreArgs};
use crate::error::{Exit, Result};
use crate::ops::restore::{self, RestoreRequest};

pub async fn run(g: &Global, args: &RestoreArgs) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    // A wrong name is a usage error (2) even when the state database is out of reach (1).
    if let Some(store) = &args.store {
        crate::app::store_named(&cfg, store)?;
    }
    let req = RestoreRequest {
        store: args.store.clone(),
        resource_type: args.resource_type.clone(),
        keys: args.keys.clone(),
        overwrite: args.overwrite,
        actor: "restore".into(),
    };
    super::with_app(cfg, |app| async move {
        let out = restore::restore(&app, &req).await?;
        let mut text = String::new();
        for (key, from) in &out.restored {
            let _ = writeln!(text, "Restored {key} (from {from}).");
        }
        super::print(&text)?;
        for why in &out.failed {
            eprintln!("error: {}", crate::error::sanitize(why));
        }
        // Some keys could not come back: the run did part of its work.
        Ok(if out.failed.is_empty() {
            Exit::Ok
        } else {
            Exit::Incomplete
        })
    })
    .await
}
