//! The scan operation (SPEC §4): reaches the run's databases and stores at once, streams every
//! reference query and every listing into the join (`reconcile`), records the scan and its
//! findings in the state database, writes the report, and returns what it found. Prints nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::Config;
use crate::domain::event::{Event, FIRST_ITEMS};
use crate::domain::scan::{
    Findings, ReferenceStats, ScanMode, StoreStats, Summary, Warning, Window,
};
use crate::error::{Error, Result};
use crate::reconcile::{self, Listing, Progress, RefBatch, RowParser, StoreJob, StoreOutcome};
use crate::refs::{Db, DbError};
use crate::report::{self, Format};
use crate::state::ScanLog as _;
use crate::store::{Store, StoreError};

pub struct ScanRequest {
    pub window: Window,
    pub mode: ScanMode,
    /// Names of the stores to scan; empty means all.
    pub stores: Vec<String>,
    /// Where to write the report; `None` writes none.
    pub report: Option<(ReportTo, Format)>,
    pub progress: Option<Progress>,
}

/// Where a scan's report goes.
#[derive(Debug, Clone)]
pub enum ReportTo {
    /// This file, replaced when it exists (`--output`).
    Path(PathBuf),
    /// A new file in this folder named after the scan's start (SPEC §5), claimed when the scan
    /// is recorded so that scans started in the same second get names of their own.
    Dir(PathBuf),
}

/// A finished scan: its id in the state database and what it found.
pub struct ScanOutcome {
    pub id: i64,
    pub findings: Findings,
    pub report_path: Option<PathBuf>,
}

/// The stores a request names (all when none), checked against the config.
pub fn selected_stores(cfg: &Config, names: &[String]) -> Result<Vec<usize>> {
    for name in names {
        crate::app::store_named(cfg, name)?;
    }
    let selected: Vec<usize> = (0..cfg.stores.len())
        .filter(|&i| names.is_empty() || names.contains(&cfg.stores[i].name))
        .collect();
    if selected.is_empty() {
        return Err(Error::Usage(
            "the config has no [stores.*] section: add one, e.g. [stores.media] url = \"./media\""
                .into(),
        ));
    }
    Ok(selected)
}

/// Runs a scan and records it. `Err` only when nothing useful could be done (every store or
/// database out of reach) or the request is wrong; partial failures come back as warnings with
/// `complete = false`.
pub async fn run(app: &Arc<App>, req: ScanRequest) -> Result<ScanOutcome> {
    run_announced(app, req, None).await
}

/// [`run`], sending the scan's id on `started_tx` as soon as the scan is recorded (`POST
/// /api/scans` answers with it while the scan goes on). The sender is dropped unsent when the
/// scan fails before it is recorded.
pub async fn run_announced(
    app: &Arc<App>,
    req: ScanRequest,
    started_tx: Option<tokio::sync::oneshot::Sender<i64>>,
) -> Result<ScanOutcome> {
    let cfg = &app.cfg;
    let selected = selected_stores(cfg, &req.stores)?;
    let started = Utc::now();
    let names: Vec<String> = selected
        .iter()
        .map(|&s| cfg.stores[s].name.clone())
        .collect();
    let list_costs = app.state.list_costs(&names).await?;
    let id = app
        .state
        .begin_scan(started, req.window, req.mode, &names)
        .await?;
    if let Some(tx) = started_tx {
        let _ = tx.send(id);
    }
    // A scan run by a job names its run, so that the run's history finds its report.
    if let Some(run) = crate::jobs::current_run() {
        app.state.link_scan_to_job_run(id, run).await?;
    }
    let fingerprints: HashMap<String, String> = selected
        .iter()
        .map(|&s| {
            let store = &cfg.stores[s];
            (store.name.clone(), crate::overlap::fingerprint(store))
        })
        .collect();
    app.state.record_fingerprints(id, &fingerprints).await?;
    let scanned = scan(app, &req, &selected, started, &list_costs).await;
    let findings = match scanned {
        Ok(f) => f,
        Err(e) => {
            let _ = app.state.fail_scan(id, &e.to_string()).await;
            // Notifications carry it: one line, secrets in URLs shown as `***`.
            app.publish(Event::ScanFailed {
                scan_id: id,
                error: crate::error::one_line(&e),
            });
            return Err(e);
        }
    };
    // Recorded before the report is written: a report that cannot be written (a full disk, a
    // wrong --output) must not lose the findings nor leave the scan `running`.
    let report = req.report.as_ref().map(|(to, format)| {
        let path = match to {
            ReportTo::Path(p) => Ok(p.clone()),
            ReportTo::Dir(dir) => report::claim_default_path(dir, started, *format),
        };
        (path, *format)
    });
    let report_path = report.as_ref().and_then(|(p, _)| p.as_ref().ok().cloned());
    app.state
        .finish_scan(id, &findings, report_path.as_deref())
        .await?;
    app.publish(Event::ScanFinished {
        scan_id: id,
        window: findings.window,
        mode: findings.mode,
        complete: findings.complete,
        summary: Summary::of(&findings),
        report_path: report_path.as_ref().map(|p| p.display().to_string()),
        started_at: findings.started_at,
        finished_at: findings.finished_at,
        stores: findings.stores.iter().map(|s| s.name.clone()).collect(),
        api_calls: findings.api_calls(),
        warnings: findings.warnings.iter().map(ToString::to_string).collect(),
        api_usage: report::api_usage(&findings),
        first_orphans: findings.orphans.iter().take(FIRST_ITEMS).cloned().collect(),
        first_missing: findings.missing.iter().take(FIRST_ITEMS).cloned().collect(),
    });
    let stopped = app.ledger.stopped();
    for message in app.ledger.warnings() {
        app.publish(if stopped.as_ref() == Some(&message) {
            Event::BudgetStopped { message }
        } else {
            Event::BudgetWarning { message }
        });
    }
    if let Some((path, format)) = report {
        let claimed = matches!(req.report, Some((ReportTo::Dir(_), _)));
        path.and_then(|p| {
            report::write_file(&findings, id, &p, format).inspect_err(|_| {
                if claimed {
                    // Our own empty placeholder: no report is better than an empty one.
                    let _ = std::fs::remove_file(&p);
                }
            })
        })
        .map_err(|e| match e {
            Error::Io { context, source } => Error::Io {
                context: format!(
                    "scan {id} is recorded with its findings (see `assetgc history`), but {context}"
                ),
                source,
            },
            other => other,
        })?;
    }
    Ok(ScanOutcome {
        id,
        findings,
        report_path,
    })
}

/// Databases by index, reached at once; the errors of those that did not answer.
pub(crate) async fn connect_databases(
    cfg: &Config,
    refs: &[usize],
) -> (HashMap<usize, Db>, Vec<String>, bool) {
    let mut wanted: Vec<usize> = refs.iter().map(|&r| cfg.references[r].database).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let futs = wanted.iter().map(|&d| {
        let uses = refs
            .iter()
            .filter(|&&r| cfg.references[r].database == d)
            .count();
        let db_cfg = cfg.databases[d].clone();
        async move {
            (
                d,
                Db::connect(&db_cfg, u32::try_from(uses).unwrap_or(4).clamp(1, 8)).await,
            )
        }
    });
    let mut dbs = HashMap::new();
    let mut errors = Vec::new();
    for (d, r) in futures::future::join_all(futs).await {
        match r {
            Ok(db) => {
                dbs.insert(d, db);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let none = !wanted.is_empty() && dbs.is_empty();
    (dbs, errors, none)
}

/// The selected stores, opened and checked at once: (index, store) of those that answered, and
/// a warning for each that did not.
pub(crate) async fn reach_stores(
    app: &App,
    selected: &[usize],
) -> (Vec<(usize, Arc<dyn Store>)>, Vec<Warning>) {
    let futs = selected.iter().map(|&s| async move {
        let name = &app.cfg.stores[s].name;
        let checked = match app.store(name) {
            // A metered store's first real call tells as much, and a check would cost a call.
            Ok(st) if st.capabilities().checked_by_first_call => Ok(st),
            Ok(st) => st.check().await.map(|()| st),
            Err(e) => Err(StoreError::unreachable(e.to_string())),
        };
        (s, checked)
    });
    let mut reached = Vec::new();
    let mut errors = Vec::new();
    for (s, r) in futures::future::join_all(futs).await {
        match r {
            Ok(st) => reached.push((s, st)),
            Err(e) => errors.push(Warning::StoreUnreachable {
                store: app.cfg.stores[s].name.clone(),
                error: e.to_string(),
            }),
        }
    }
    (reached, errors)
}

pub(crate) fn unreachable(warnings: &[Warning]) -> Error {
    Error::Unreachable(
        warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

async fn scan(
    app: &Arc<App>,
    req: &ScanRequest,
    selected: &[usize],
    started: DateTime<Utc>,
    list_costs: &HashMap<String, u64>,
) -> Result<Findings> {
    let cfg = &app.cfg;
    // The references of every scanned store and of every store that overlaps one: an object
    // referenced through another store is valid (SPEC §6 invariant 1).
    // `--missing-only` lists nothing: only the stores' own references are asked.
    let near: Vec<usize> = selected
        .iter()
        .flat_map(|&s| crate::overlap::with_self(cfg, s))
        .filter(|o| req.mode.orphans() || selected.contains(&o.store))
        .map(|o| o.store)
        .collect();
    let refs: Vec<usize> = (0..cfg.references.len())
        .filter(|&r| near.contains(&cfg.references[r].store))
        .collect();
    // Databases and stores are reached concurrently; a run goes on with what answers.
    let ((dbs, db_errors, no_db), (reached, store_errors)) =
        futures::join!(connect_databases(cfg, &refs), reach_stores(app, selected));
    if no_db {
        return Err(Error::Unreachable(db_errors.join("; ")));
    }
    if reached.is_empty() {
        return Err(unreachable(&store_errors));
    }
    let mut complete = db_errors.is_empty() && store_errors.is_empty();
    let mut warnings: Vec<Warning> = db_errors
        .into_iter()
        .map(Warning::DatabaseUnreachable)
        .collect();
    warnings.extend(store_errors.iter().cloned());
    for &s in selected {
        if !refs.iter().any(|&r| cfg.references[r].store == s) {
            warnings.push(Warning::NoReferences {
                store: cfg.stores[s].name.clone(),
            });
        }
    }
    let (references, mut outcomes) =
        join_all_stores(app, req, &refs, &dbs, reached, started, list_costs).await?;
    for db in dbs.values() {
        db.close().await;
    }
    // A store refused at its first call (metered stores are checked that way) is out of reach
    // like one that failed its check: when none answered, nothing useful was done.
    if outcomes.iter().all(|o| !o.stats.reachable) {
        let mut all = store_errors;
        for o in &outcomes {
            all.extend(o.warnings.iter().cloned());
        }
        return Err(unreachable(&all));
    }
    for &s in selected {
        if !outcomes.iter().any(|o| o.stats.name == cfg.stores[s].name) {
            complete = false;
            outcomes.push(StoreOutcome {
                stats: StoreStats {
                    name: cfg.stores[s].name.clone(),
                    location: cfg.stores[s].location.describe(),
                    ..StoreStats::default()
                },
                orphans: Vec::new(),
                missing: Vec::new(),
                warnings: Vec::new(),
            });
        }
    }
    warnings.extend(app.ledger.warnings().into_iter().map(Warning::Budget));
    Ok(reconcile::findings(
        started,
        req.window,
        req.mode,
        outcomes,
        references,
        warnings,
        complete,
        app.ledger.usage(Utc::now()),
    ))
}

/// Spawns every reference query and every store's join, and waits for them all.
async fn join_all_stores(
    app: &App,
    req: &ScanRequest,
    refs: &[usize],
    dbs: &HashMap<usize, Db>,
    reached: Vec<(usize, Arc<dyn Store>)>,
    started: DateTime<Utc>,
    list_costs: &HashMap<String, u64>,
) -> Result<(Vec<ReferenceStats>, Vec<StoreOutcome>)> {
    let cfg = &app.cfg;
    let cutoff = req.window.cutoff(started);
    let mut store_tasks = Vec::new();
    let mut ref_tasks = Vec::new();
    let mut senders: Vec<(usize, mpsc::Sender<RefBatch>)> = Vec::new();
    for (s, store) in reached {
        let (tx, rx) = mpsc::channel::<RefBatch>(16);
        senders.push((s, tx));
        let job = StoreJob {
            cfg: cfg.stores[s].clone(),
            mode: req.mode,
            now: started,
            cutoff,
            exclude: reconcile::quarantine_prefixes(cfg, s),
            list_cost: list_costs.get(&cfg.stores[s].name).copied(),
            progress: req.progress.clone(),
            policy: None,
        };
        store_tasks.push(tokio::spawn(reconcile_one(job, store, rx)));
    }
    for &r in refs {
        let own = cfg.references[r].store;
        // Each query runs once; its keys go to its own store's join and, translated, to the
        // join of every scanned store that overlaps its store.
        let mut targets: Vec<Target> = Vec::new();
        for (t, tx) in &senders {
            if *t == own {
                targets.push((tx.clone(), None));
            } else if let Some(o) = crate::overlap::overlapping(cfg, *t)
                .into_iter()
                .find(|o| o.store == own && req.mode.orphans())
            {
                targets.push((tx.clone(), Some(o.view)));
            }
        }
        if targets.is_empty() {
            continue;
        }
        let db = dbs.get(&cfg.references[r].database);
        ref_tasks.push(spawn_reference(cfg, r, db, cutoff, req.mode, targets));
    }
    drop(senders);
    let mut references = Vec::new();
    for t in ref_tasks {
        references.push(
            t.await
                .map_err(|e| Error::State(format!("reference task failed: {e}")))?,
        );
    }
    let mut outcomes = Vec::new();
    for t in store_tasks {
        outcomes.push(
            t.await
                .map_err(|e| Error::State(format!("store task failed: {e}")))?,
        );
    }
    Ok((references, outcomes))
}

/// One store's join, on its own task.
pub(crate) async fn reconcile_one(
    job: StoreJob,
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<RefBatch>,
) -> StoreOutcome {
    let before = store.usage();
    let mut rx = rx;
    let refs = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let listing = job.mode.orphans().then(|| {
        let opts = job.list_options(store.as_ref());
        let limited = opts.since.is_some();
        Listing {
            pages: store.list(opts),
            limited,
        }
    });
    let mut out = reconcile::reconcile_store(&job, store.as_ref(), listing, refs).await;
    // The store is shared by the process: this run's calls are what it made meanwhile.
    let after = store.usage();
    out.stats.api_calls = after.api_calls.saturating_sub(before.api_calls);
    out.stats.full_list_calls =
        Some(after.full_list_calls.saturating_sub(before.full_list_calls)).filter(|&n| n > 0);
    out
}

/// A store's join a reference feeds, and how its keys read there (`None`: its own store).
pub(crate) type Target = (mpsc::Sender<RefBatch>, Option<crate::overlap::View>);

/// Sends each batch to every target, translated where the target is another store.
async fn fan_out(mut rx: mpsc::Receiver<RefBatch>, targets: Vec<Target>) {
    while let Some(batch) = rx.recv().await {
        for (tx, view) in &targets {
            let b = match view {
                Some(v) => batch.translated(v),
                None => continue,
            };
            let _ = tx.send(b).await;
        }
        if let Some((tx, _)) = targets.iter().find(|(_, v)| v.is_none()) {
            let _ = tx.send(batch).await;
        }
    }
}

/// Streams one reference query into its store's join and those of the stores overlapping it.
pub(crate) fn spawn_reference(
    cfg: &Config,
    r: usize,
    db: Option<&Db>,
    cutoff: Option<DateTime<Utc>>,
    mode: ScanMode,
    targets: Vec<Target>,
) -> tokio::task::JoinHandle<ReferenceStats> {
    let rc = cfg.references[r].clone();
    let store = &cfg.stores[rc.store];
    let store_name = store.name.clone();
    let ctx = store.key_context(&rc.key_prefix);
    let db = db.cloned();
    tokio::spawn(async move {
        let Some(db) = db else {
            // The store's join must know its reference set is partial (no orphans then).
            // So must every overlapping store's join that counts this reference.
            for (tx, _) in &targets {
                let _ = tx
                    .send(RefBatch::failed(r, &rc.name, "its database is unreachable"))
                    .await;
            }
            return ReferenceStats {
                name: rc.name.clone(),
                store: store_name,
                error: Some("its database is unreachable".into()),
                ..ReferenceStats::default()
            };
        };
        let started = std::time::Instant::now();
        let parser = RowParser::new(r, &rc, ctx, cutoff, mode);
        let wanted = parser.wanted();
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let (tx, rx) = mpsc::channel::<RefBatch>(16);
        let query = rc.query.clone();
        let name = rc.name.clone();
        let feed = async move {
            let (mut parser, result) = db.feed(&query, &wanted, parser, &tx).await;
            if let Err(DbError::Query(e) | DbError::Unreachable(e)) = &result {
                // The rows read before the failure still name objects.
                if let Some(rows_read) = crate::refs::RowSink::flush(&mut parser) {
                    let _ = tx.send(rows_read).await;
                }
                // The last word: every join this reference feeds learns its set is partial.
                let _ = tx.send(RefBatch::failed(r, &name, e)).await;
            }
            drop(tx);
            (parser, result)
        };
        let ((parser, result), ()) = futures::join!(feed, fan_out(rx, targets));
        let mut stats = parser.into_stats();
        stats.name.clone_from(&rc.name);
        stats.store = store_name;
        if let Err(DbError::Query(e) | DbError::Unreachable(e)) = result {
            stats.error = Some(e);
        }
        stats.query_time = started.elapsed();
        stats
    })
}
