//! `check`: reaches every store and database and runs every reference query with `LIMIT 1`
//! (SPEC §3). The calls it spends on a metered account count in that account's budget.

use futures::StreamExt as _;

use crate::app::App;
use crate::error::Exit;
use crate::refs::{Db, Probe};
use crate::store::{ListOptions, Listed, Store, StoreError};

/// How one store answered.
pub struct StoreCheck {
    pub name: String,
    pub location: String,
    pub result: Result<(), String>,
}

pub struct DatabaseCheck {
    pub name: String,
    pub location: String,
    pub result: Result<(), String>,
}

pub enum ReferenceCheck {
    /// The query ran; the columns it returns.
    Ok {
        store: String,
        columns: Vec<String>,
    },
    /// It cannot be wrapped in `LIMIT 1` (`why`), so it was prepared, not run; a scan's re-check
    /// runs such a query whole.
    Unwrapped {
        store: String,
        columns: Vec<String>,
        why: String,
    },
    /// It ran but returns no `key` column.
    NoKey {
        columns: Vec<String>,
    },
    Failed(String),
    /// Its database could not be reached.
    Skipped {
        database: String,
    },
}

/// How a statement of a policy or expiry rule answered: `Ok` with what was done to it.
pub enum RuleCheck {
    Ok(String),
    Failed(String),
    /// A configuration error only the database could reveal (exit 2).
    Invalid(String),
    Skipped {
        database: String,
    },
}

pub struct CheckReport {
    pub stores: Vec<StoreCheck>,
    pub databases: Vec<DatabaseCheck>,
    pub references: Vec<(String, ReferenceCheck)>,
    /// Keep queries (run with `LIMIT 1`), expiry selects (run with `LIMIT 1`) and deletes
    /// (prepared, never run), each with what it belongs to.
    pub rules: Vec<(String, RuleCheck)>,
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// SPEC §3: 1 when anything is unreachable, 4 when a query fails.
    pub fn exit(&self) -> Exit {
        let mut exit = Exit::Ok;
        if self
            .rules
            .iter()
            .any(|(_, r)| matches!(r, RuleCheck::Invalid(_)))
        {
            exit = exit.max(Exit::Usage);
        }
        if self.stores.iter().any(|s| s.result.is_err())
            || self.databases.iter().any(|d| d.result.is_err())
        {
            exit = exit.max(Exit::Unreachable);
        }
        if self
            .references
            .iter()
            .any(|(_, r)| matches!(r, ReferenceCheck::NoKey { .. } | ReferenceCheck::Failed(_)))
            || self
                .rules
                .iter()
                .any(|(_, r)| matches!(r, RuleCheck::Failed(_)))
        {
            exit = exit.max(Exit::Incomplete);
        }
        exit
    }
}

pub async fn check(app: &App) -> CheckReport {
    let cfg = &app.cfg;
    let stores = cfg.stores.iter().map(|s| async move {
        match app.store(&s.name) {
            Ok(store) => {
                let reached = match store.check().await {
                    Ok(()) => probe_store(store.as_ref()).await,
                    Err(e) => Err(e),
                };
                StoreCheck {
                    name: s.name.clone(),
                    location: store.describe(),
                    result: reached.map_err(|e| e.to_string()),
                }
            }
            Err(e) => StoreCheck {
                name: s.name.clone(),
                location: s.location.describe(),
                result: Err(e.to_string()),
            },
        }
    });
    let stores = futures::future::join_all(stores).await;
    let mut warnings = Vec::new();
    for s in &cfg.stores {
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
        for o in crate::overlap::overlapping(cfg, i) {
            let b = &cfg.stores[o.store];
            if o.store > i {
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
    let databases = dbs
        .iter()
        .map(|(d, r)| DatabaseCheck {
            name: d.name.clone(),
            location: d.display_url(),
            result: r.as_ref().map(|_| ()).map_err(ToString::to_string),
        })
        .collect();
    let references = check_references(app, &dbs, &mut warnings).await;
    let mut rules = check_rules(app, &dbs, &mut warnings).await;
    rules.extend(released_ids(cfg, &references));
    warnings.extend(crate::triggers::cascade_warnings(cfg, &dbs).await);
    for (_, db) in &dbs {
        if let Ok(db) = db {
            db.close().await;
        }
    }
    app.ledger.flush().await;
    CheckReport {
        stores,
        databases,
        references,
        rules,
        warnings,
    }
}

/// SPEC §2: a reference an expiry rule releases must return `id` (else a config error).
fn released_ids(
    cfg: &crate::config::Config,
    references: &[(String, ReferenceCheck)],
) -> Vec<(String, RuleCheck)> {
    let mut out = Vec::new();
    for x in &cfg.expiry {
        for &r in &x.releases {
            let Some(
                ReferenceCheck::Ok { columns, .. } | ReferenceCheck::Unwrapped { columns, .. },
            ) = references.get(r).map(|(_, c)| c)
            else {
                continue;
            };
            let label = format!("expiry {} releases {}", x.name, cfg.references[r].name);
            out.push((
                label,
                if columns.iter().any(|c| c.eq_ignore_ascii_case("id")) {
                    RuleCheck::Ok("returns `id`".into())
                } else {
                    RuleCheck::Invalid(format!(
                        "reference `{}` is in the releases of expiry rule `{}`, but its query returns no `id` (it returns: {}); add the row's id as `id`",
                        cfg.references[r].name,
                        x.name,
                        columns.join(", ")
                    ))
                },
            ));
        }
    }
    out
}

type Connected<'a> = [(
    &'a crate::config::DatabaseConfig,
    Result<Db, crate::refs::DbError>,
)];

/// Every policy's keep query with `LIMIT 1` (its cutoff bound), every expiry rule's `select`
/// with `LIMIT 1` and its `delete` prepared, never run; and the warnings the rules call for.
async fn check_rules(
    app: &App,
    dbs: &Connected<'_>,
    warnings: &mut Vec<String>,
) -> Vec<(String, RuleCheck)> {
    let cfg = &app.cfg;
    let mut out = Vec::new();
    let skipped = |d: usize| RuleCheck::Skipped {
        database: cfg.databases[d].name.clone(),
    };
    for (i, p) in cfg.policies.iter().enumerate() {
        let min_age = crate::overlap::effective_store(cfg, p.store).min_age;
        if p.older_than < min_age {
            warnings.push(format!(
                "policy {}: older_than ({}) is below the min_age of store {} ({}): objects younger than min_age are never deleted, they count as retained",
                p.name,
                humantime::format_duration(p.older_than),
                cfg.stores[p.store].name,
                humantime::format_duration(min_age)
            ));
        }
        let Some(kq) = &p.keep_query else { continue };
        let label = format!("policy {} keep_query", p.name);
        let outcome = match &dbs[kq.database].1 {
            Err(_) => skipped(kq.database),
            Ok(db) => {
                let cutoff = crate::time::before(
                    chrono::Utc::now(),
                    crate::ops::clean::older_than(&cfg.policies[i], None),
                );
                match db
                    .probe_keep(&kq.sql, kq.takes_cutoff.then_some(cutoff))
                    .await
                {
                    Ok(()) => RuleCheck::Ok("ran with LIMIT 1".into()),
                    Err(e) => RuleCheck::Failed(e.to_string()),
                }
            }
        };
        out.push((label, outcome));
    }
    for x in &cfg.expiry {
        let (select, delete) = match &dbs[x.database].1 {
            Err(_) => (skipped(x.database), skipped(x.database)),
            Ok(db) => (
                match db.probe(&x.select).await {
                    Ok(probe) => {
                        let lower: Vec<String> = probe
                            .columns
                            .iter()
                            .map(|c| c.to_ascii_lowercase())
                            .collect();
                        let keys = lower.iter().any(|c| c == "key" || c.starts_with("key_"));
                        if lower.iter().any(|c| c == "id") && keys {
                            RuleCheck::Ok(format!(
                                "ran with LIMIT 1 (columns: {})",
                                probe.columns.join(", ")
                            ))
                        } else {
                            RuleCheck::Failed(format!(
                                "select must return `id` and a key column (`key` or `key_*`); it returns: {}",
                                probe.columns.join(", ")
                            ))
                        }
                    }
                    Err(e) => RuleCheck::Failed(e.to_string()),
                },
                match db.prepare_only(&x.delete).await {
                    Ok(()) => RuleCheck::Ok("prepared, not run".into()),
                    Err(e) => RuleCheck::Failed(e.to_string()),
                },
            ),
        };
        out.push((format!("expiry {} select", x.name), select));
        out.push((format!("expiry {} delete", x.name), delete));
    }
    out
}

/// Every reference query, wrapped in `LIMIT 1`, on the databases that answered.
async fn check_references(
    app: &App,
    dbs: &[(
        &crate::config::DatabaseConfig,
        Result<Db, crate::refs::DbError>,
    )],
    warnings: &mut Vec<String>,
) -> Vec<(String, ReferenceCheck)> {
    let cfg = &app.cfg;
    let mut references = Vec::new();
    for r in &cfg.references {
        let outcome = match &dbs[r.database].1 {
            Err(_) => ReferenceCheck::Skipped {
                database: cfg.databases[r.database].name.clone(),
            },
            Ok(db) => match db.probe(&r.query).await {
                Ok(Probe { columns, unwrapped }) => {
                    let lower: Vec<String> =
                        columns.iter().map(|c| c.to_ascii_lowercase()).collect();
                    if lower.iter().any(|c| c == "key") {
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
                        let store = cfg.stores[r.store].name.clone();
                        match unwrapped {
                            Some(why) => {
                                warnings.push(format!(
                                    "reference {}: the query cannot be wrapped in `SELECT * FROM (…) LIMIT 1` ({why}), so check only prepared it; a scan runs it as written, and the re-check before each deletion runs it whole (give its columns distinct names to let it be wrapped)",
                                    r.name
                                ));
                                ReferenceCheck::Unwrapped {
                                    store,
                                    columns,
                                    why,
                                }
                            }
                            None => ReferenceCheck::Ok { store, columns },
                        }
                    } else {
                        ReferenceCheck::NoKey { columns }
                    }
                }
                Err(e) => ReferenceCheck::Failed(e.to_string()),
            },
        };
        references.push((r.name.clone(), outcome));
    }
    references
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
                return Err(StoreError::permanent(format!(
                    "`{key}` was listed but a look-up does not find it"
                )));
            }
        }
    }
    Ok(())
}
