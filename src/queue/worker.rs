//! The queue worker (SPEC §6): claims due entries in batches, re-checks their references
//! (invariant 1), moves them to quarantine or deletes them with the store's bulk call, and hands
//! what it observed to the pure transition (`queue::transition`), whose decisions the state
//! database applies with their audit rows. `queue run`, `purge --confirm` and (later) `serve`
//! all drain the queue through [`run`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::recheck::{Cost, Recheck};
use super::transition::{self, Settings};
use crate::app::App;
use crate::config::{Config, StoreConfig};
use crate::domain::ResourceType;
use crate::domain::event::Event;
use crate::domain::queue::{Completion, Entry, Outcome, QueueState};
use crate::error::{Error, Result};
use crate::state::QueueStore as _;
use crate::store::{
    Gone, KeyError, KeyFailure, MoveOptions, Moved, Store, StoreError, quarantine_key,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub batch_size: usize,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Stop after this many entries were claimed.
    pub limit: Option<u64>,
    /// Who asked, for the audit log (`queue run`, `purge`, a token name).
    pub actor: String,
}

impl RunOptions {
    pub fn from_config(cfg: &Config, actor: &str) -> Self {
        RunOptions {
            batch_size: cfg.queue.batch_size,
            max_attempts: cfg.queue.max_attempts,
            backoff: cfg.queue.backoff,
            backoff_max: cfg.queue.backoff_max,
            limit: None,
            actor: actor.to_string(),
        }
    }

    fn settings(&self, store: Option<&StoreConfig>) -> Settings {
        Settings {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            backoff_max: self.backoff_max,
            keep: store.and_then(|s| s.quarantine.as_ref()).map(|q| q.keep),
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub claimed: u64,
    pub batches: u64,
    pub deleted: u64,
    pub quarantined: u64,
    pub already_gone: u64,
    pub referenced: u64,
    /// Failed this time and rescheduled.
    pub retrying: u64,
    /// Failed for good this run (now `failed`).
    pub failed: u64,
    /// Left `pending` untried (budget stop, or a claim taken over).
    pub deferred: u64,
    /// Dropped without a store call (an `ignore` glob matches).
    pub dropped: u64,
    /// Calls the stores made.
    pub store_calls: u64,
    pub recheck: Cost,
    /// Claims of dead workers returned to `pending` before the run.
    pub released: u64,
    pub budget_stop: Option<String>,
    /// Failure messages of this run (first few), for the console.
    pub errors: Vec<String>,
    /// Stores that answered at least one call of this run, and those that could not be reached.
    pub reached: BTreeSet<String>,
    pub unreachable: BTreeSet<String>,
    /// A database the re-check needed could not be reached.
    pub db_unreachable: bool,
}

impl Totals {
    fn count(&mut self, e: &Entry, o: &Outcome, c: &Completion) {
        match o {
            Outcome::Deleted => self.deleted += 1,
            Outcome::AlreadyGone => self.already_gone += 1,
            Outcome::Quarantined { .. } => self.quarantined += 1,
            Outcome::Referenced(_) => self.referenced += 1,
            Outcome::Failed { error, .. } => {
                if c.update.state == QueueState::Failed {
                    self.failed += 1;
                } else {
                    self.retrying += 1;
                }
                if self.errors.len() < 10 {
                    self.errors
                        .push(format!("{} {}: {error}", e.object.store, e.object.key));
                }
            }
            Outcome::Deferred => self.deferred += 1,
            Outcome::Dropped(_) => self.dropped += 1,
        }
    }

    /// Every store the run tried was out of reach (SPEC §3 exit 1).
    pub fn nothing_reached(&self) -> bool {
        self.reached.is_empty() && (!self.unreachable.is_empty() || self.db_unreachable)
    }
}

/// This process, as a claim holder: `host:pid`.
pub fn worker_id() -> String {
    format!("{}:{}", host(), std::process::id())
}

fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Whether a claim holder is a process of this host that no longer runs.
fn is_dead(holder: &str) -> bool {
    let Some((h, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if h != host() || pid == i32::try_from(std::process::id()).unwrap_or(-1) {
        return false;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

struct Worker<'a> {
    app: &'a App,
    opts: &'a RunOptions,
    me: String,
    recheck: Recheck,
    /// The stores this run used, with the calls each had made before (the process shares them).
    stores: Vec<(Arc<dyn Store>, u64)>,
    reached: BTreeSet<String>,
    unreachable: BTreeSet<String>,
}

/// One group of a batch: entries of one store and resource type, with the outcome of each as it
/// becomes known.
struct Group<'e> {
    entries: Vec<&'e Entry>,
    out: Vec<Option<Outcome>>,
    /// The reference that points at each entry's key now, when one does.
    by: Vec<Option<String>>,
}

impl Group<'_> {
    fn open(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.entries.len()).filter(|&i| self.out[i].is_none())
    }

    /// Every entry still open gets `f`'s outcome.
    fn settle_rest(&mut self, f: impl Fn(&Entry) -> Outcome) {
        for (i, e) in self.entries.iter().enumerate() {
            if self.out[i].is_none() {
                self.out[i] = Some(f(e));
            }
        }
    }
}

fn failed(error: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        permanent: false,
    }
}

/// One key that failed: it waits when the budget stopped its call, fails at once when trying
/// again cannot help (a refusal, a key the store cannot hold), and is retried otherwise.
fn key_failed(err: KeyError) -> Outcome {
    match err.kind {
        KeyFailure::BudgetStopped => Outcome::Deferred,
        KeyFailure::Permanent | KeyFailure::AlreadyExists => Outcome::Failed {
            error: err.message,
            permanent: true,
        },
        KeyFailure::Transient => failed(err.message),
    }
}

impl Worker<'_> {
    fn cfg(&self) -> &Config {
        &self.app.cfg
    }

    /// Notes whether a store call reached the store.
    fn note<T>(&mut self, store: &str, r: &std::result::Result<T, StoreError>) {
        match r {
            Err(e) if !e.reached() => {
                self.unreachable.insert(store.to_string());
            }
            _ => {
                self.reached.insert(store.to_string());
            }
        }
    }

    /// A whole call failed: the budget's clean stop defers the entries untried; anything else
    /// is a failed attempt, retried with backoff (a call refused as a whole is more often a
    /// setting to mend than a key that can never go).
    fn call_failed(err: &StoreError) -> Outcome {
        match err {
            StoreError::BudgetStopped { .. } => Outcome::Deferred,
            _ => failed(err.to_string()),
        }
    }

    /// The outcomes of one group, in its order.
    async fn group(&mut self, entries: Vec<&Entry>) -> Vec<Outcome> {
        let first = entries[0];
        let mut g = Group {
            out: vec![None; entries.len()],
            by: vec![None; entries.len()],
            entries,
        };
        let Some(si) = self
            .cfg()
            .stores
            .iter()
            .position(|s| s.name == first.object.store)
        else {
            let why = format!(
                "store `{}` is not in the configuration; add it back, or `assetgc queue drop` its entries",
                first.object.store
            );
            g.settle_rest(|_| failed(why.clone()));
            return g.out.into_iter().flatten().collect();
        };
        // Deleting through a store applies the rules of every store that overlaps it.
        let store_cfg = crate::overlap::effective_store(self.cfg(), si);
        let store = match self.app.store(&store_cfg.name) {
            Ok(s) => s,
            Err(e) => {
                self.unreachable.insert(store_cfg.name.clone());
                g.settle_rest(|_| failed(e.to_string()));
                return g.out.into_iter().flatten().collect();
            }
        };
        // A metered store (its first call tells reachability) spends the run's API budget: once
        // that stopped, its entries wait for the next window untried.
        if store.capabilities().checked_by_first_call && self.app.ledger.stopped().is_some() {
            return vec![Outcome::Deferred; g.entries.len()];
        }
        if !self.stores.iter().any(|(s, _)| Arc::ptr_eq(s, &store)) {
            self.stores
                .push((Arc::clone(&store), store.usage().api_calls));
        }
        self.refuse_guarded(si, &mut g).await;
        Self::drop_ignored(&crate::overlap::rules(self.cfg(), si), &mut g);
        if self.recheck_and_hold(si, &mut g).await {
            self.act(&store_cfg, store.as_ref(), &mut g).await;
        }
        g.out
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Deferred))
            .collect()
    }

    /// `ignore` globs: never deleted, whoever queued the key.
    fn drop_ignored(rules: &crate::overlap::Rules, g: &mut Group<'_>) {
        for (i, e) in g.entries.iter().enumerate() {
            if g.out[i].is_none()
                && !e.is_copy_removal()
                && let Some(store) = rules.ignored(&e.object.key)
            {
                g.out[i] = Some(Outcome::Dropped(format!(
                    "matches an ignore glob of store {store}"
                )));
            }
        }
    }

    /// Entries that may not act, with no store call: a key in any overlapping store's
    /// quarantine (only a copy's own removal goes there), and an entry queued while the store
    /// pointed elsewhere (its fingerprint changed since, SPEC §6).
    async fn refuse_guarded(&mut self, si: usize, g: &mut Group<'_>) {
        let cfg = std::sync::Arc::clone(&self.app.cfg);
        let ids: Vec<i64> = g.entries.iter().map(|e| e.id).collect();
        let now = crate::overlap::fingerprint(&cfg.stores[si]);
        let trash = crate::overlap::trash_prefixes(&cfg, si);
        let then = match self.app.state.entry_fingerprints(&ids).await {
            Ok(m) => m,
            Err(e) => {
                let why = e.to_string();
                g.settle_rest(|_| failed(why.clone()));
                return;
            }
        };
        for (i, e) in g.entries.iter().enumerate() {
            let refused = match then.get(&e.id) {
                Some(fp) if *fp != now => Some(format!(
                    "store {} was re-pointed since this entry was queued (then {fp}, now {now}); queue it again from a new scan",
                    e.object.store
                )),
                _ if e.is_copy_removal() => None,
                _ => crate::overlap::trash_reason(&cfg.stores[si].name, &trash, &e.object.key),
            };
            if let Some(error) = refused {
                g.out[i] = Some(Outcome::Failed {
                    error,
                    permanent: true,
                });
            }
        }
    }

    /// Invariant 1: the references, asked right before the store call; then the claims are
    /// renewed, and entries whose claim was taken over meanwhile are left alone. `false` when
    /// nothing may be done to the group.
    async fn recheck_and_hold(&mut self, si: usize, g: &mut Group<'_>) -> bool {
        let asked: Vec<usize> = g.open().collect();
        let keys: Vec<(ResourceType, String)> = asked
            .iter()
            .map(|&i| {
                (
                    g.entries[i].resource_type(),
                    g.entries[i].checked_key().to_string(),
                )
            })
            .collect();
        let referenced = match self.recheck.referenced(si, &keys).await {
            Ok(refs) => refs,
            Err(why) => {
                g.settle_rest(|_| failed(why.clone()));
                return false;
            }
        };
        let ids: Vec<i64> = g.entries.iter().map(|e| e.id).collect();
        let Ok(held) = self
            .app
            .state
            .hold_claims(&self.me, &ids)
            .await
            .map(|h| h.into_iter().collect::<HashSet<i64>>())
        else {
            g.settle_rest(|_| Outcome::Deferred);
            return false;
        };
        for (i, e) in g.entries.iter().enumerate() {
            if !held.contains(&e.id) {
                g.out[i] = Some(Outcome::Deferred);
            }
        }
        for (&i, name) in asked.iter().zip(referenced) {
            g.by[i].clone_from(&name);
            if let (None, Some(name)) = (&g.out[i], name) {
                let e = g.entries[i];
                g.out[i] = Some(Outcome::Referenced(if e.is_copy_removal() {
                    format!(
                        "`{}` is referenced again by `{name}`: its quarantined copy {} is kept",
                        e.checked_key(),
                        e.object.key
                    )
                } else {
                    format!("referenced by `{name}`")
                }));
            }
        }
        true
    }

    /// Moves, deletes and moves back what the group's outcomes so far leave to do.
    async fn act(&mut self, store_cfg: &StoreConfig, store: &dyn Store, g: &mut Group<'_>) {
        self.move_back_referenced(store, g).await;
        let (mut deletes, mut moves) = (Vec::new(), Vec::new());
        for i in g.open().collect::<Vec<_>>() {
            let e = g.entries[i];
            match (&store_cfg.quarantine, &e.quarantine_key) {
                (Some(_), Some(q)) if !e.is_copy_removal() => moves.push((i, q.clone())),
                _ => deletes.push(i),
            }
        }
        if !deletes.is_empty() {
            self.delete(store_cfg, store, g, &deletes).await;
        }
        if !moves.is_empty() {
            self.quarantine(store_cfg, store, g, &moves).await;
        }
    }

    /// A referenced entry that an earlier attempt moved before it stopped (reclaimed, its copy
    /// there): moved back.
    async fn move_back_referenced(&self, store: &dyn Store, g: &mut Group<'_>) {
        for i in 0..g.entries.len() {
            let e = g.entries[i];
            let (Some(Outcome::Referenced(_)), Some(name)) = (&g.out[i], &g.by[i]) else {
                continue;
            };
            if !e.reclaimed || e.is_copy_removal() {
                continue;
            }
            let Some(q) = &e.quarantine_key else {
                continue;
            };
            let rt = e.resource_type();
            let there = store.lookup_many(rt, std::slice::from_ref(q)).await;
            if !matches!(there.as_deref(), Ok([Some(_)])) {
                continue;
            }
            let back = store
                .move_many(
                    rt,
                    &[(q.clone(), e.object.key.clone())],
                    MoveOptions { replace: true },
                )
                .await;
            g.out[i] = Some(match back.as_deref() {
                Ok([Ok(_)]) => Outcome::Referenced(format!(
                    "referenced by `{name}`; moved back from {q}, where a stopped run had put it"
                )),
                _ => failed(format!(
                    "referenced by `{name}`, but its copy {q} could not be moved back"
                )),
            });
        }
    }

    /// The store's bulk delete. With quarantine off now, an entry moved by a stopped run is
    /// deleted at its copy too.
    async fn delete(
        &mut self,
        store_cfg: &StoreConfig,
        store: &dyn Store,
        g: &mut Group<'_>,
        deletes: &[usize],
    ) {
        let rt = g.entries[deletes[0]].resource_type();
        let mut keys: Vec<String> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for &i in deletes {
            let e = g.entries[i];
            keys.push(e.object.key.clone());
            owner.push(i);
            if e.reclaimed
                && !e.is_copy_removal()
                && let Some(q) = &e.quarantine_key
            {
                keys.push(q.clone());
                owner.push(i);
            }
        }
        let answer = store.delete_many(rt, &keys).await;
        self.note(&store_cfg.name, &answer);
        match answer {
            Ok(results) => {
                for (&i, r) in owner.iter().zip(results) {
                    let outcome = match r {
                        Ok(Gone::Deleted) => Outcome::Deleted,
                        Ok(Gone::AlreadyGone) => Outcome::AlreadyGone,
                        Err(why) => key_failed(why),
                    };
                    // Of an entry's two keys, a failure wins.
                    if !matches!(g.out[i], Some(Outcome::Failed { .. } | Outcome::Deferred)) {
                        g.out[i] = Some(outcome);
                    }
                }
            }
            Err(err) => {
                for &i in deletes {
                    g.out[i] = Some(Self::call_failed(&err));
                }
            }
        }
    }

    /// Quarantine moves. Nothing at a key: deleted by someone else, or moved by an earlier
    /// attempt that stopped before recording it — the copy tells which.
    async fn quarantine(
        &mut self,
        store_cfg: &StoreConfig,
        store: &dyn Store,
        g: &mut Group<'_>,
        moves: &[(usize, String)],
    ) {
        let rt = g.entries[moves[0].0].resource_type();
        let pairs: Vec<(String, String)> = moves
            .iter()
            .map(|(i, to)| (g.entries[*i].object.key.clone(), to.clone()))
            .collect();
        let answer = store
            .move_many(rt, &pairs, MoveOptions { replace: true })
            .await;
        self.note(&store_cfg.name, &answer);
        let results = match answer {
            Ok(r) => r,
            Err(err) => {
                for (i, _) in moves {
                    g.out[*i] = Some(Self::call_failed(&err));
                }
                return;
            }
        };
        let now = Utc::now();
        let into_trash = |to: &str| Outcome::Quarantined {
            quarantine_key: to.to_string(),
            moved_at: now,
        };
        let mut gone = Vec::new();
        for ((i, to), r) in moves.iter().zip(results) {
            match r {
                Ok(Moved::Moved) => g.out[*i] = Some(into_trash(to)),
                Ok(Moved::SourceGone) => gone.push((*i, to.clone())),
                Err(why) => g.out[*i] = Some(key_failed(why)),
            }
        }
        if gone.is_empty() {
            return;
        }
        let copies: Vec<String> = gone.iter().map(|(_, q)| q.clone()).collect();
        match store.lookup_many(rt, &copies).await {
            Ok(found) => {
                for ((i, to), f) in gone.into_iter().zip(found) {
                    g.out[i] = Some(if f.is_some() {
                        into_trash(&to)
                    } else {
                        Outcome::AlreadyGone
                    });
                }
            }
            Err(err) => {
                for (i, _) in gone {
                    g.out[i] = Some(Self::call_failed(&err));
                }
            }
        }
    }
}

/// Groups of one store and resource type, in claim order.
fn groups(batch: &[Entry]) -> Vec<Vec<&Entry>> {
    let mut groups: Vec<Vec<&Entry>> = Vec::new();
    for e in batch {
        match groups.iter_mut().find(|g| {
            g[0].object.store == e.object.store
                && g[0].object.resource_type == e.object.resource_type
        }) {
            Some(g) => g.push(e),
            None => groups.push(vec![e]),
        }
    }
    groups
}

/// Drains the queue: batches of due entries until none is due (or `limit` were claimed).
/// `progress` is called after each batch with the totals so far.
pub async fn run(
    app: &App,
    opts: &RunOptions,
    progress: &(dyn Fn(&Totals) + Sync),
) -> Result<Totals> {
    let mut w = Worker {
        app,
        opts,
        me: worker_id(),
        recheck: Recheck::new(Arc::clone(&app.cfg)),
        stores: Vec::new(),
        reached: BTreeSet::new(),
        unreachable: BTreeSet::new(),
    };
    let mut totals = Totals {
        released: app.state.release_stale_claims(&is_dead).await?,
        ..Totals::default()
    };
    let result = loop {
        match batch(&mut w, &mut totals).await {
            Ok(true) => progress(&totals),
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        if let Some(why) = app.ledger.stopped() {
            app.publish(Event::BudgetStopped {
                message: why.clone(),
            });
            totals.budget_stop = Some(why);
            break Ok(());
        }
    };
    totals.store_calls = w
        .stores
        .iter()
        .map(|(s, before)| s.usage().api_calls.saturating_sub(*before))
        .sum();
    totals.reached = std::mem::take(&mut w.reached);
    totals.unreachable = std::mem::take(&mut w.unreachable);
    totals.db_unreachable = w.recheck.db_unreachable;
    totals.recheck = w.recheck.cost;
    w.recheck.close().await;
    app.ledger.flush().await;
    app.publish(Event::QueueRunFinished {
        claimed: totals.claimed,
        deleted: totals.deleted,
        quarantined: totals.quarantined,
        already_gone: totals.already_gone,
        referenced: totals.referenced,
        retrying: totals.retrying,
        failed: totals.failed,
        deferred: totals.deferred,
    });
    result.map(|()| totals).map_err(|e: Error| e)
}

/// Claims and works one batch; `false` when nothing was due.
async fn batch(w: &mut Worker<'_>, totals: &mut Totals) -> Result<bool> {
    let (app, opts) = (w.app, w.opts);
    let room = opts
        .limit
        .map_or(opts.batch_size as u64, |l| l.saturating_sub(totals.claimed))
        .min(opts.batch_size as u64);
    if room == 0 {
        return Ok(false);
    }
    let now = Utc::now();
    let cfg = &app.cfg;
    let quarantine = |e: &Entry| {
        if e.is_copy_removal() {
            return None;
        }
        crate::overlap::index(cfg, &e.object.store).and_then(|i| {
            quarantine_key(&crate::overlap::effective_store(cfg, i), &e.object.key, now)
        })
    };
    let batch = app
        .state
        .claim(
            &w.me,
            usize::try_from(room).unwrap_or(usize::MAX),
            &quarantine,
        )
        .await?;
    if batch.is_empty() {
        return Ok(false);
    }
    totals.claimed += batch.len() as u64;
    totals.batches += 1;
    let mut results: Vec<(&Entry, Outcome)> = Vec::with_capacity(batch.len());
    for g in groups(&batch) {
        let outcomes = w.group(g.clone()).await;
        results.extend(g.into_iter().zip(outcomes));
    }
    let now = Utc::now();
    let mut done = Vec::with_capacity(results.len());
    for (e, o) in &results {
        let store = crate::overlap::index(cfg, &e.object.store)
            .map(|i| crate::overlap::effective_store(cfg, i));
        let c = transition::complete(e, o, &opts.settings(store.as_ref()), now);
        totals.count(e, o, &c);
        if let Outcome::Failed { error, .. } = o {
            app.publish(Event::DeletionFailed {
                queue_id: e.id,
                object: e.object.clone(),
                error: error.clone(),
                gave_up: c.update.state == QueueState::Failed,
            });
        }
        done.push(c);
    }
    app.state.finish(&w.me, &opts.actor, &done).await?;
    totals.recheck = w.recheck.cost;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_of_this_process_or_another_host_is_never_dead() {
        assert!(!is_dead(&worker_id()));
        assert!(!is_dead("elsewhere.example:1"));
        assert!(!is_dead("garbage"));
    }
}
