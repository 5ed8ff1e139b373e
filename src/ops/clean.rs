//! Retention policies (`clean`, SPEC §2 `[[policies]]`): the objects under a policy's prefix
//! that are older than its `older_than` are queued with the policy as their `rule`, except
//! those a reference protects (unless the policy releases it), those its `keep_query` returns,
//! and those younger than the store's `min_age`.
//!
//! The plan is the scan's own join (`reconcile`) over the policy's store: its listing against
//! the references of every store that overlaps it, with the keep query fed in as one more
//! reference and a [`PolicyScope`] deciding which objects are candidates. An incomplete join
//! (a listing that ended early, a query that failed) queues nothing for that policy (invariant
//! 2). The entries then go through the one queue and its worker, whose re-check applies the
//! policy's releases and nothing more (invariant 1).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{Config, PolicyConfig, ReferenceConfig};
use crate::domain::ObjectId;
use crate::domain::event::Event;
use crate::domain::queue::{NewEntry, Reason};
use crate::domain::scan::{Orphan, ScanMode, Warning};
use crate::error::{Error, Result};
use crate::queue::{RunOptions, Totals};
use crate::reconcile::{self, PolicyScope, Progress, RefBatch, RowParser, StoreJob};
use crate::refs::{Db, DbError};
use crate::state::QueueStore as _;

/// How many keys a run's summary names.
pub const SAMPLE: usize = 10;

pub struct CleanRequest {
    /// One policy by name; `None`: every policy.
    pub policy: Option<String>,
    /// Replaces `older_than` of every selected policy (`--retention-days`).
    pub retention_days: Option<u64>,
    pub dry_run: bool,
    /// Who asked, for the audit log (`clean`, a token name).
    pub actor: String,
    pub progress: Option<Progress>,
}

/// What one policy planned (and, in a real run, queued).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyRun {
    pub policy: String,
    pub store: String,
    /// The effective `older_than`, in days.
    pub retention_days: f64,
    #[serde(serialize_with = "rfc3339")]
    pub cutoff: DateTime<Utc>,
    /// Objects listed under the prefix after `exclude` (the trash left out).
    pub total_files_scanned: u64,
    /// Objects queued (or that would be, in a dry run).
    pub deleted_count: u64,
    pub deleted_bytes: u64,
    pub retained_count: u64,
    /// The first keys queued, in key order.
    pub deleted_files_sample: Vec<String>,
    /// Old enough for the policy, but younger than the store's `min_age`: kept.
    pub too_recent: u64,
    /// Protected by a reference or the keep query.
    pub referenced: u64,
    pub ignored: u64,
    /// The join saw everything it needed; otherwise nothing was queued.
    pub complete: bool,
    /// Entries added to the queue (an object with a live entry already is not added again).
    pub queued: u64,
    pub already_queued: u64,
    pub warnings: Vec<String>,
}

/// A whole `clean` run.
#[derive(Debug, Clone)]
pub struct CleanOutcome {
    /// The run's id in the state database (its job id).
    pub id: i64,
    pub dry_run: bool,
    pub retention_days: Option<u64>,
    pub policies: Vec<PolicyRun>,
    /// What the worker did with the run's entries (real runs).
    pub worked: Option<Totals>,
}

impl CleanOutcome {
    pub fn complete(&self) -> bool {
        self.policies.iter().all(|p| p.complete)
    }

    fn sum(&self, f: impl Fn(&PolicyRun) -> u64) -> u64 {
        self.policies.iter().map(f).sum()
    }

    /// The answer SPEC §3 and §8 give for `clean --json` and `POST /api/cleanup/bulk`, with
    /// each policy's own figures and what the worker did besides.
    pub fn to_json(&self) -> serde_json::Value {
        let deleted_count = self.sum(|p| p.deleted_count);
        let bytes = self.sum(|p| p.deleted_bytes);
        let mut sample: Vec<String> = self
            .policies
            .iter()
            .flat_map(|p| p.deleted_files_sample.iter().cloned())
            .collect();
        sample.truncate(SAMPLE);
        let retention_days = match self.retention_days {
            Some(d) => serde_json::json!(d),
            None => {
                let mut days = self.policies.iter().map(|p| p.retention_days);
                match days.next() {
                    Some(first) if days.all(|d| (d - first).abs() < f64::EPSILON) => {
                        days_value(first)
                    }
                    _ => serde_json::Value::Null,
                }
            }
        };
        let worked = self.worked.as_ref();
        serde_json::json!({
            "success": self.complete() && worked.is_none_or(|t| t.failed == 0),
            "message": self.message(),
            "deleted_count": deleted_count,
            "deleted_size_mb": crate::report::size_mb_number(bytes),
            "retained_count": self.sum(|p| p.retained_count),
            "total_files_scanned": self.sum(|p| p.total_files_scanned),
            "dry_run": self.dry_run,
            "deleted_files_sample": sample,
            "retention_days": retention_days,
            "job_id": self.id,
            "complete": self.complete(),
            "deleted": worked.map_or(0, |t| t.deleted + t.quarantined),
            "already_gone": worked.map_or(0, |t| t.already_gone),
            "dropped_referenced": worked.map_or(0, |t| t.referenced),
            "dropped": worked.map_or(0, |t| t.dropped),
            "failed": worked.map_or(0, |t| t.failed),
            "retrying": worked.map_or(0, |t| t.retrying),
            "policies": self.policies,
        })
    }

    pub fn message(&self) -> String {
        let n = self.sum(|p| p.deleted_count);
        let mb = crate::report::size_mb(self.sum(|p| p.deleted_bytes));
        let retained = self.sum(|p| p.retained_count);
        let scanned = self.sum(|p| p.total_files_scanned);
        let head = if self.dry_run {
            format!("Dry run: {n} file(s) ({mb} MB) would be deleted")
        } else {
            format!("{n} file(s) ({mb} MB) queued for deletion")
        };
        let mut m = format!("{head}; {retained} of {scanned} retained");
        if !self.complete() {
            m.push_str(
                "; incomplete: nothing was queued for a policy whose listing or queries failed",
            );
        }
        m
    }
}

fn days_value(d: f64) -> serde_json::Value {
    if d.fract() == 0.0 && (0.0..1e15).contains(&d) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = d as u64;
        serde_json::json!(whole)
    } else {
        serde_json::json!(d)
    }
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::rfc3339(*t))
}

/// The policies a request names (all when none); an unknown name is a usage error.
pub fn selected_policies(cfg: &Config, name: Option<&str>) -> Result<Vec<usize>> {
    match name {
        Some(n) => cfg
            .policies
            .iter()
            .position(|p| p.name == n)
            .map(|i| vec![i])
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no policy is named `{n}`; configured policies: {}",
                    crate::config::list_names(cfg.policies.iter().map(|p| p.name.as_str()))
                ))
            }),
        None if cfg.policies.is_empty() => Err(Error::Usage(
            "the config has no [[policies]]: add one, e.g. [[policies]] name = \"clips\" store = \"media\" older_than = \"5d\""
                .into(),
        )),
        None => Ok((0..cfg.policies.len()).collect()),
    }
}

/// A policy's effective `older_than`.
pub fn older_than(p: &PolicyConfig, retention_days: Option<u64>) -> Duration {
    retention_days.map_or(p.older_than, |d| {
        Duration::from_secs(d.saturating_mul(86_400))
    })
}

/// Plans every selected policy, queues what each found (unless a dry run), works those
/// entries, and records the run.
pub async fn run(app: &Arc<App>, req: CleanRequest) -> Result<CleanOutcome> {
    let id = begin(app, &req).await?;
    let mut out = plan_and_queue(app, id, &req).await?;
    if !req.dry_run {
        out.worked = Some(work(app, &out, &req.actor, None).await?);
        app.state.update_cleanup(id, &out.to_json(), true).await?;
    }
    finished(app, &out);
    Ok(out)
}

/// Announces a run that is over (its plan made, and in a real run its entries worked).
pub fn finished(app: &App, out: &CleanOutcome) {
    app.publish(Event::CleanFinished {
        run_id: out.id,
        dry_run: out.dry_run,
        complete: out.complete(),
        summary: out.to_json(),
    });
}

/// Checks the request's policy and records the run (`running`); its id is the job id. The
/// API answers it before the plan is made when planning takes long.
pub async fn begin(app: &App, req: &CleanRequest) -> Result<i64> {
    let cfg = &app.cfg;
    let selected = selected_policies(cfg, req.policy.as_deref())?;
    let names: Vec<String> = selected
        .iter()
        .map(|&i| cfg.policies[i].name.clone())
        .collect();
    app.state
        .begin_cleanup(Utc::now(), req.dry_run, &names)
        .await
}

/// The first half of a run: plans every selected policy and, unless a dry run, queues what
/// each found; records the plan (a dry run is then `done`, a real one stays `running` until
/// [`work`] has worked its entries).
pub async fn plan_and_queue(app: &Arc<App>, id: i64, req: &CleanRequest) -> Result<CleanOutcome> {
    let cfg = Arc::clone(&app.cfg);
    let selected = selected_policies(&cfg, req.policy.as_deref())?;
    let mut out = CleanOutcome {
        id,
        dry_run: req.dry_run,
        retention_days: req.retention_days,
        policies: Vec::new(),
        worked: None,
    };
    let mut reached_any = false;
    let mut last_unreachable = None;
    for &i in &selected {
        match plan(app, i, req).await {
            Ok((run, candidates)) => {
                reached_any = true;
                let mut run = run;
                if !req.dry_run && run.complete && !candidates.is_empty() {
                    let (added, already) =
                        enqueue(app, &cfg.policies[i], &candidates, &req.actor).await?;
                    run.queued = added;
                    run.already_queued = already;
                }
                out.policies.push(run);
            }
            Err(e @ Error::Unreachable(_)) => {
                out.policies.push(unreached(&cfg, i, req, &e));
                last_unreachable = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if !reached_any && let Some(e) = last_unreachable {
        app.state.update_cleanup(id, &out.to_json(), true).await?;
        return Err(e);
    }
    app.state
        .update_cleanup(id, &out.to_json(), req.dry_run)
        .await?;
    Ok(out)
}

/// The second half of a real run: works the entries of each of the run's policies (its own
/// and any of that policy still due) with the worker, as `actor`; once `stop` is cancelled it
/// stops after the batch it holds. Records nothing: the caller records the outcome.
pub async fn work(
    app: &App,
    out: &CleanOutcome,
    actor: &str,
    stop: Option<&tokio_util::sync::CancellationToken>,
) -> Result<Totals> {
    let cfg = &app.cfg;
    let mut all = Totals::default();
    for p in &out.policies {
        let mut opts = RunOptions::from_config(cfg, actor);
        opts.only_rule = Some((Reason::Clean, p.policy.clone()));
        opts.stop = stop.cloned();
        let t = crate::queue::run(app, &opts, &|_| {}).await?;
        add(&mut all, &t);
    }
    Ok(all)
}

fn add(all: &mut Totals, t: &Totals) {
    all.claimed += t.claimed;
    all.batches += t.batches;
    all.deleted += t.deleted;
    all.quarantined += t.quarantined;
    all.already_gone += t.already_gone;
    all.referenced += t.referenced;
    all.retrying += t.retrying;
    all.failed += t.failed;
    all.deferred += t.deferred;
    all.dropped += t.dropped;
    all.store_calls += t.store_calls;
    all.released += t.released;
    all.errors.extend(t.errors.iter().cloned());
    all.reached.extend(t.reached.iter().cloned());
    all.unreachable.extend(t.unreachable.iter().cloned());
    all.db_unreachable |= t.db_unreachable;
    if all.budget_stop.is_none() {
        all.budget_stop.clone_from(&t.budget_stop);
    }
}

/// A policy whose store could not be reached: nothing planned, incomplete.
fn unreached(cfg: &Config, i: usize, req: &CleanRequest, e: &Error) -> PolicyRun {
    let p = &cfg.policies[i];
    let older = older_than(p, req.retention_days);
    PolicyRun {
        policy: p.name.clone(),
        store: cfg.stores[p.store].name.clone(),
        retention_days: older.as_secs_f64() / 86_400.0,
        cutoff: crate::time::before(Utc::now(), older),
        complete: false,
        warnings: vec![e.to_string()],
        ..PolicyRun::default()
    }
}

/// The references that protect a policy's objects: those of its store and of every store
/// overlapping it, less the ones it releases.
fn protecting(cfg: &Config, p: &PolicyConfig) -> Vec<usize> {
    let near: Vec<usize> = crate::overlap::with_self(cfg, p.store)
        .into_iter()
        .map(|o| o.store)
        .collect();
    (0..cfg.references.len())
        .filter(|&r| near.contains(&cfg.references[r].store))
        .filter(|r| p.keep_referenced || !p.releases.contains(r))
        .collect()
}

/// The keep query as a reference of the policy's store, read in its `key_format` (default:
/// the store's) with its `key_prefix`.
fn keep_reference(p: &PolicyConfig, kq: &crate::config::KeepQuery) -> ReferenceConfig {
    ReferenceConfig {
        name: format!("keep_query of policy {}", p.name),
        database: kq.database,
        store: p.store,
        query: kq.sql.clone(),
        key_format: kq.key_format.clone(),
        key_prefix: kq.key_prefix.clone(),
        link: None,
        track: None,
    }
}

/// One policy's plan: the join of its store's listing with everything that protects.
async fn plan(app: &Arc<App>, i: usize, req: &CleanRequest) -> Result<(PolicyRun, Vec<Orphan>)> {
    let cfg = &app.cfg;
    let p = &cfg.policies[i];
    let now = Utc::now();
    let older = older_than(p, req.retention_days);
    let cutoff = crate::time::before(now, older);
    let refs = protecting(cfg, p);
    let (dbs, db_errors, _) = crate::ops::scan::connect_databases(cfg, &refs).await;
    let keep_db = match &p.keep_query {
        Some(kq) => match dbs.get(&kq.database) {
            Some(db) => Some(Ok(db.clone())),
            None => Some(
                Db::connect(&cfg.databases[kq.database], 1)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        },
        None => None,
    };
    // SPEC §3 exit 1: every database the policy needs is out of reach.
    let wanted_dbs = !refs.is_empty() || keep_db.is_some();
    if wanted_dbs && dbs.is_empty() && !matches!(keep_db, Some(Ok(_))) {
        let mut why = db_errors.clone();
        if let Some(Err(e)) = &keep_db
            && !why.contains(e)
        {
            why.push(e.clone());
        }
        return Err(Error::Unreachable(why.join("; ")));
    }
    let (reached, store_errors) = crate::ops::scan::reach_stores(app, &[p.store]).await;
    let Some((s, store)) = reached.into_iter().next() else {
        return Err(crate::ops::scan::unreachable(&store_errors));
    };
    // The rules of every store overlapping this one: the largest `min_age`, every `ignore`.
    let store_cfg = crate::overlap::effective_store(cfg, s);
    let (tx, rx) = mpsc::channel::<RefBatch>(16);
    let job = StoreJob {
        cfg: store_cfg.clone(),
        mode: ScanMode::OrphansOnly,
        now,
        cutoff: None,
        exclude: reconcile::quarantine_prefixes(cfg, s),
        list_cost: None,
        progress: req.progress.clone(),
        policy: Some(PolicyScope {
            prefix: p.prefix.clone(),
            exclude: p.exclude.clone(),
            before: cutoff,
        }),
    };
    let joined = tokio::spawn(crate::ops::scan::reconcile_one(job, store, rx));
    let feeds = feed_references(cfg, s, &refs, &dbs, &tx);
    let keep = match (&p.keep_query, keep_db) {
        (Some(kq), Some(db)) => {
            let rc = keep_reference(p, kq);
            Some(tokio::spawn(feed_keep(
                cfg.stores[p.store].key_context(&kq.key_prefix),
                rc,
                cfg.references.len(),
                db,
                kq.takes_cutoff.then_some(cutoff),
                tx.clone(),
            )))
        }
        _ => None,
    };
    drop(tx);
    let mut warnings: Vec<String> = db_errors;
    for f in feeds {
        let stats = f
            .await
            .map_err(|e| Error::State(format!("reference task failed: {e}")))?;
        if let Some(e) = stats.error {
            warnings.push(format!("reference `{}` failed: {e}", stats.name));
        }
        for w in stats.warnings {
            warnings.push(w.to_string());
        }
    }
    if let Some(k) = keep
        && let Some(e) = k
            .await
            .map_err(|e| Error::State(format!("keep query task failed: {e}")))?
    {
        warnings.push(format!("keep_query of policy `{}` failed: {e}", p.name));
    }
    let outcome = joined
        .await
        .map_err(|e| Error::State(format!("store task failed: {e}")))?;
    warnings.extend(outcome.warnings.iter().map(Warning::to_string));
    let head = PolicyRun {
        policy: p.name.clone(),
        store: cfg.stores[s].name.clone(),
        retention_days: older.as_secs_f64() / 86_400.0,
        cutoff,
        warnings,
        ..PolicyRun::default()
    };
    Ok(summarise(head, outcome, &crate::overlap::rules(cfg, s)))
}

/// A policy's figures from its join: what it would queue, and the rest retained. An
/// incomplete join queues nothing.
/// An `ignore` glob of a store overlapping this one keeps its objects too (the join applied
/// the store's own).
fn summarise(
    mut run: PolicyRun,
    outcome: reconcile::StoreOutcome,
    rules: &crate::overlap::Rules,
) -> (PolicyRun, Vec<Orphan>) {
    let stats = &outcome.stats;
    let complete = stats.complete && stats.reachable;
    let mut candidates = outcome.orphans;
    let before = candidates.len();
    candidates.retain(|o| rules.ignored(&o.key).is_none());
    let ignored_elsewhere = (before - candidates.len()) as u64;
    candidates.sort_by(|a, b| {
        (a.resource_type.as_str(), &a.key).cmp(&(b.resource_type.as_str(), &b.key))
    });
    if !complete {
        candidates.clear();
    }
    let count = candidates.len() as u64;
    run.total_files_scanned = stats.listed;
    run.deleted_count = count;
    run.deleted_bytes = candidates.iter().map(|o| o.size).sum();
    run.retained_count = stats.listed.saturating_sub(count);
    run.deleted_files_sample = candidates
        .iter()
        .take(SAMPLE)
        .map(|o| o.key.clone())
        .collect();
    run.too_recent = stats.too_recent;
    run.referenced = stats.valid;
    run.ignored = stats.ignored + ignored_elsewhere;
    run.complete = complete;
    (run, candidates)
}

/// Streams each protecting reference into the policy store's join (translated when it belongs
/// to an overlapping store), as a scan does.
fn feed_references(
    cfg: &Config,
    s: usize,
    refs: &[usize],
    dbs: &std::collections::HashMap<usize, Db>,
    tx: &mpsc::Sender<RefBatch>,
) -> Vec<tokio::task::JoinHandle<crate::domain::scan::ReferenceStats>> {
    let mut feeds = Vec::new();
    for &r in refs {
        let own = cfg.references[r].store;
        let view = if own == s {
            None
        } else {
            match crate::overlap::overlapping(cfg, s)
                .into_iter()
                .find(|o| o.store == own)
            {
                Some(o) => Some(o.view),
                None => continue,
            }
        };
        let db = dbs.get(&cfg.references[r].database);
        feeds.push(crate::ops::scan::spawn_reference(
            cfg,
            r,
            db,
            None,
            ScanMode::OrphansOnly,
            vec![(tx.clone(), view)],
        ));
    }
    feeds
}

/// Streams the keep query into the join as one more reference; the error, when it failed
/// (the join then holds back every candidate: its reference set is partial).
async fn feed_keep(
    ctx: crate::key::KeyContext,
    rc: ReferenceConfig,
    index: usize,
    db: std::result::Result<Db, String>,
    cutoff: Option<DateTime<Utc>>,
    tx: mpsc::Sender<RefBatch>,
) -> Option<String> {
    let db = match db {
        Ok(db) => db,
        Err(e) => {
            let _ = tx.send(RefBatch::failed(index, &rc.name, &e)).await;
            return Some(e);
        }
    };
    let parser = RowParser::new(index, &rc, ctx, None, ScanMode::OrphansOnly);
    let wanted = parser.wanted();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let (mut parser, result) = match cutoff {
        Some(at) => db.feed_bound(&rc.query, at, &wanted, parser, &tx).await,
        None => db.feed(&rc.query, &wanted, parser, &tx).await,
    };
    match result {
        Ok(()) => {
            // A value that reads as no key of the store keeps nothing it may have meant to:
            // when in doubt, the policy deletes nothing.
            let unparsed = parser.into_stats().unparsed;
            if unparsed == 0 {
                return None;
            }
            let e = format!(
                "{unparsed} of its values could not be read as keys of the store in its key format ({}); set keep_query's key_format (and key_prefix) to match what it returns",
                rc.key_format.name()
            );
            let _ = tx.send(RefBatch::failed(index, &rc.name, &e)).await;
            Some(e)
        }
        Err(DbError::Query(e) | DbError::Unreachable(e)) => {
            if let Some(rows) = crate::refs::RowSink::flush(&mut parser) {
                let _ = tx.send(rows).await;
            }
            let _ = tx.send(RefBatch::failed(index, &rc.name, &e)).await;
            Some(e)
        }
    }
}

/// Queues a policy's candidates: reason `clean`, the policy as their rule, with their upload
/// time (the worker holds them again until `min_age` after it).
async fn enqueue(
    app: &App,
    p: &PolicyConfig,
    candidates: &[Orphan],
    actor: &str,
) -> Result<(u64, u64)> {
    let now = Utc::now();
    let min_age = crate::overlap::effective_store(&app.cfg, p.store).min_age;
    let entries: Vec<NewEntry> = candidates
        .iter()
        .map(|o| NewEntry {
            object: ObjectId::new(o.store.clone(), o.resource_type, o.key.clone()),
            reason: Reason::Clean,
            rule: p.name.clone(),
            row_id: String::new(),
            client_id: String::new(),
            scan_id: None,
            uploaded_at: o.uploaded_at,
            next_attempt_at: o
                .uploaded_at
                .map_or(now, |t| crate::time::after(t, min_age).max(now)),
            original_key: None,
        })
        .collect();
    let mut added = 0;
    let mut already = 0;
    let store = &app.cfg.stores[p.store];
    for chunk in entries.chunks(10_000) {
        let (a, b) = app.state.enqueue(actor, chunk).await?;
        added += a;
        already += b;
    }
    app.state
        .stamp_fingerprint(&store.name, &crate::overlap::fingerprint(store))
        .await?;
    Ok((added, already))
}
