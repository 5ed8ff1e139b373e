//! `assetgc check`: validate the config, reach every store and database, run every reference
//! query with `LIMIT 1`. Exit 2 for config errors, 1 when anything is unreachable, 4 when a
//! query fails (SPEC §3).

use super::Ui;
use crate::cli::Global;
use crate::error::{Exit, Result};
use crate::refs::Db;
use crate::report::Style;
use crate::store::{ListOptions, Listed, Store, StoreError};
use futures::StreamExt as _;

pub async fn run(g: &Global, ui: Ui) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    let st = Style { color: ui.color };
    let ok = st.good("ok");
    let mut exit = Exit::Ok;
    let mut warnings = Vec::new();
    let origin = cfg.path.as_ref().map_or_else(
        || "(no file: DATABASE_URL / CLOUDINARY_URL / CLOUDCUBE_URL)".into(),
        |p| p.display().to_string(),
    );
    println!(
        "config {origin}: {} store(s), {} database(s), {} reference(s)",
        cfg.stores.len(),
        cfg.databases.len(),
        cfg.references.len()
    );

    // `check` spends a few calls of a metered account; they are not recorded against its budget.
    let ledger = crate::store::Ledger::default();
    let ledger = &ledger;
    let stores = cfg.stores.iter().map(|s| async move {
        match crate::store::open(s, ledger) {
            Ok(store) => {
                let reached = match store.check().await {
                    Ok(()) => probe_store(store.as_ref()).await,
                    Err(e) => Err(e),
                };
                (s, store.describe(), reached)
            }
            Err(e) => (s, s.location.describe(), Err(e)),
        }
    });
    for (s, describe, result) in futures::future::join_all(stores).await {
        match result {
            Ok(()) => println!("store {} ({describe}): {ok}", s.name),
            Err(e) => {
                println!("store {}: {}", s.name, st.bad(&format!("UNREACHABLE: {e}")));
                exit = exit.max(Exit::Unreachable);
            }
        }
        if !cfg
            .references
            .iter()
            .any(|r| cfg.stores[r.store].name == s.name)
        {
            warnings.push(format!(
                "store {} has no [[references]]: a scan would report every object in it as an orphan",
                s.name
            ));
        }
    }
    for (i, a) in cfg.stores.iter().enumerate() {
        for b in &cfg.stores[i + 1..] {
            if a.location.contains(&b.location).is_some()
                || b.location.contains(&a.location).is_some()
            {
                warnings.push(format!(
                    "stores {} and {} overlap ({} and {}): an object in both is protected by the references of both",
                    a.name,
                    b.name,
                    a.location.describe(),
                    b.location.describe()
                ));
            }
        }
    }

    let dbs = cfg
        .databases
        .iter()
        .map(|d| async move { (d, Db::connect(d, 2).await) });
    let dbs: Vec<_> = futures::future::join_all(dbs).await;
    for (d, result) in &dbs {
        match result {
            Ok(_) => println!("database {} ({}): {ok}", d.name, d.display_url()),
            Err(e) => {
                println!(
                    "database {}: {}",
                    d.name,
                    st.bad(&format!("UNREACHABLE: {e}"))
                );
                exit = exit.max(Exit::Unreachable);
            }
        }
    }
    for r in &cfg.references {
        let Ok(db) = &dbs[r.database].1 else {
            println!(
                "reference {}: skipped (database {} unreachable)",
                r.name, cfg.databases[r.database].name
            );
            continue;
        };
        match db.probe(&r.query).await {
            Ok(cols) => {
                let lower: Vec<String> = cols.iter().map(|c| c.to_ascii_lowercase()).collect();
                if !lower.iter().any(|c| c == "key") {
                    println!(
                        "reference {}: {}",
                        r.name,
                        st.bad(&format!(
                            "FAILED: the query returns no `key` column (it returns: {}); alias the column, e.g. `SELECT image AS key …`",
                            cols.join(", ")
                        ))
                    );
                    exit = exit.max(Exit::Incomplete);
                    continue;
                }
                if let Some(link) = &r.link {
                    for col in link.columns() {
                        if !lower.iter().any(|c| c.eq_ignore_ascii_case(col)) {
                            warnings.push(format!(
                                "reference {}: link uses `{{{col}}}`, which the query does not return",
                                r.name
                            ));
                        }
                    }
                }
                println!(
                    "reference {} → store {}: {ok} (columns: {})",
                    r.name,
                    cfg.stores[r.store].name,
                    cols.join(", ")
                );
            }
            Err(e) => {
                println!("reference {}: {}", r.name, st.bad(&format!("FAILED: {e}")));
                exit = exit.max(Exit::Incomplete);
            }
        }
    }
    for (_, db) in &dbs {
        if let Ok(db) = db {
            db.close().await;
        }
    }
    for w in &warnings {
        println!("{}", st.warn(&format!("warning: {w}")));
    }
    if exit == Exit::Ok {
        println!("{}", st.good("everything answered"));
    }
    Ok(exit)
}

/// Lists one page and looks its first object up again: proves listing and point look-ups both
/// work with the configured credentials (an empty store proves the listing only).
async fn probe_store(store: &dyn Store) -> Result<(), StoreError> {
    let mut pages = store.list(ListOptions::default());
    let first = loop {
        match pages.next().await {
            Some(Ok(items)) => {
                if let Some(found) = items.into_iter().find_map(|i| match i {
                    Listed::Object(o) => Some((o.resource_type, o.key)),
                    _ => None,
                }) {
                    break Some(found);
                }
            }
            Some(Err(e)) => return Err(e),
            None => break None,
        }
    };
    drop(pages);
    if let Some((rt, key)) = first {
        match store
            .lookup_many(rt, std::slice::from_ref(&key))
            .await?
            .first()
        {
            Some(Some(_)) => {}
            _ => {
                return Err(StoreError::transient(format!(
                    "`{key}` was listed but a look-up does not find it"
                )));
            }
        }
    }
    Ok(())
}
