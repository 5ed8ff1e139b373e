//! The queue worker (SPEC §6): claims due entries in batches, re-checks their references
//! (invariant 1), moves them to quarantine or deletes them with the store's bulk call, and
//! writes every outcome back with its audit row. `queue run`, `purge --confirm` and (later)
//! `serve` all drain the queue through [`run`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::key::ResourceType;
use crate::queue::{Entry, Outcome};
use crate::recheck::{Cost, Recheck};
use crate::state::State;
use crate::store::{
    self, Gone, KeyError, KeyFailure, Ledger, MoveOptions, Moved, Store, StoreError, quarantine_key,
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
    /// Bytes are unknown to the queue; calls the stores made.
    pub store_calls: u64,
    pub recheck: Cost,
    /// Claims of dead workers returned to `pending` before the run.
    pub released: u64,
    pub budget_stop: Option<String>,
    /// Failure messages of this run (first few), for the console.
    pub errors: Vec<String>,
    /// Stores that answered at least one call of this run, and those that could not be reached.
    pub reached: std::collections::BTreeSet<String>,
    pub unreachable: std::collections::BTreeSet<String>,
    /// A database the re-check needed could not be reached.
    pub db_unreachable: bool,
}

impl Totals {
    fn count(&mut self, o: &Outcome, max_attempts: u32, e: &Entry) {
        match o {
            Outcome::Deleted => self.deleted += 1,
            Outcome::AlreadyGone => self.already_gone += 1,
            Outcome::Quarantined { .. } => self.quarantined += 1,
            Outcome::Referenced(_) => self.referenced += 1,
            Outcome::Failed { error, retry_at } => {
                if retry_at.is_some() && e.attempts + 1 < max_attempts {
                    self.retrying += 1;
                } else {
                    self.failed += 1;
                }
                if self.errors.len() < 10 {
                    self.errors.push(format!("{} {}: {error}", e.store, e.key));
                }
            }
            Outcome::Deferred => self.deferred += 1,
            Outcome::Dropped(_) => self.dropped += 1,
        }
    }

    /// Entries that left the queue for good this run.
    pub fn finished(&self) -> u64 {
        self.deleted
            + self.quarantined
            + self.already_gone
            + self.referenced
            + self.failed
            + self.dropped
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

fn backoff(opts: &RunOptions, attempts_before: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts_before.min(30));
    opts.backoff
        .checked_mul(factor)
        .unwrap_or(opts.backoff_max)
        .min(opts.backoff_max)
}

struct Worker<'a> {
    cfg: &'a Config,
    opts: &'a RunOptions,
    ledger: Arc<Ledger>,
    stores: HashMap<usize, Arc<dyn Store>>,
    recheck: Recheck<'a>,
    reached: std::collections::BTreeSet<String>,
    unreachable: std::collections::BTreeSet<String>,
}

impl Worker<'_> {
    fn store(&mut self, i: usize) -> std::result::Result<Arc<dyn Store>, String> {
        if let Some(s) = self.stores.get(&i) {
            return Ok(Arc::clone(s));
        }
        let s = store::open(&self.cfg.stores[i], &self.ledger).map_err(|e| e.to_string())?;
        self.stores.insert(i, Arc::clone(&s));
        Ok(s)
    }

    fn failed(&self, e: &Entry, error: String) -> Outcome {
        Outcome::Failed {
            error,
            retry_at: Some(
                Utc::now()
                    + TimeDelta::from_std(backoff(self.opts, e.attempts)).unwrap_or(TimeDelta::MAX),
            ),
        }
    }

    /// Notes whether a store call reached the store.
    fn note<T>(&mut self, store: &str, r: &Result<T, StoreError>) {
        match r {
            Err(e) if !e.reached() => {
                self.unreachable.insert(store.to_string());
            }
            _ => {
                self.reached.insert(store.to_string());
            }
        }
    }

    /// A store call that failed as a whole: its entries wait when the API budget stopped it,
    /// else they are retried with backoff.
    fn call_failed(&self, e: &Entry, err: &StoreError) -> Outcome {
        if matches!(err, StoreError::BudgetStopped { .. }) {
            Outcome::Deferred
        } else {
            self.failed(e, err.to_string())
        }
    }

    /// One key that failed: it waits when the budget stopped its call, fails at once when
    /// trying again cannot help, and is retried with backoff otherwise.
    fn key_failed(&self, e: &Entry, err: KeyError) -> Outcome {
        match err.kind {
            KeyFailure::BudgetStopped => Outcome::Deferred,
            KeyFailure::Permanent | KeyFailure::AlreadyExists => Outcome::Failed {
                error: err.message,
                retry_at: None,
            },
            KeyFailure::Transient => self.failed(e, err.message),
        }
    }

    /// One group of a batch: entries of one store and resource type.
    async fn group(&mut self, state: &State, me: &str, entries: &[&Entry]) -> Vec<Outcome> {
        let first = entries[0];
        let Some(si) = self.cfg.stores.iter().position(|s| s.name == first.store) else {
            let why = format!(
                "store `{}` is not in the configuration; add it back, or `assetgc queue drop` its entries",
                first.store
            );
            return entries
                .iter()
                .map(|e| self.failed(e, why.clone()))
                .collect();
        };
        let store = match self.store(si) {
            Ok(s) => s,
            Err(why) => {
                self.unreachable.insert(first.store.clone());
                return entries
                    .iter()
                    .map(|e| self.failed(e, why.clone()))
                    .collect();
            }
        };
        // A metered store (its first call tells reachability) spends the run's API budget: once
        // that stopped, its entries wait for the next window untried.
        if store.capabilities().checked_by_first_call && self.ledger.stopped().is_some() {
            return vec![Outcome::Deferred; entries.len()];
        }
        let rt = first.resource_type();
        let mut out: Vec<Option<Outcome>> = vec![None; entries.len()];

        // `ignore` globs: never deleted, whoever queued the key.
        let ignore = &self.cfg.stores[si].ignore;
        for (i, e) in entries.iter().enumerate() {
            if !e.is_copy_removal() && ignore.matches(&e.key) {
                out[i] = Some(Outcome::Dropped(format!(
                    "matches an ignore glob of store {}",
                    e.store
                )));
            }
        }

        // Invariant 1: the references, asked right before the store call.
        let asked: Vec<usize> = (0..entries.len()).filter(|&i| out[i].is_none()).collect();
        let keys: Vec<(ResourceType, String)> = asked
            .iter()
            .map(|&i| (rt, entries[i].checked_key().to_string()))
            .collect();
        let mut referenced = Vec::new();
        match self.recheck.referenced(si, &keys).await {
            Ok(refs) => {
                for (&i, r) in asked.iter().zip(refs) {
                    if let Some(name) = r {
                        referenced.push((i, name));
                    }
                }
            }
            Err(why) => {
                return entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| out[i].take().unwrap_or_else(|| self.failed(e, why.clone())))
                    .collect();
            }
        }
        // A claim can time out while the re-check runs: act only on claims still held.
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let Ok(held) = state
            .hold_claims(me, &ids)
            .await
            .map(|h| h.into_iter().collect::<std::collections::HashSet<i64>>())
        else {
            return vec![Outcome::Deferred; entries.len()];
        };
        for (i, e) in entries.iter().enumerate() {
            if !held.contains(&e.id) {
                out[i] = Some(Outcome::Deferred);
            }
        }
        for (i, name) in referenced {
            if out[i].is_some() {
                continue;
            }
            let e = entries[i];
            out[i] = Some(Outcome::Referenced(if e.is_copy_removal() {
                format!(
                    "`{}` is referenced again by `{name}`: its quarantined copy {} is kept",
                    e.checked_key(),
                    e.key
                )
            } else {
                format!("referenced by `{name}`")
            }));
            // Moved by an earlier attempt that stopped before recording it: move it back.
            if e.reclaimed
                && !e.is_copy_removal()
                && let Some(q) = &e.quarantine_key
                && let Ok(found) = store.lookup_many(rt, std::slice::from_ref(q)).await
                && found.first().is_some_and(Option::is_some)
            {
                let back = store
                    .move_many(
                        rt,
                        &[(q.clone(), e.key.clone())],
                        MoveOptions { replace: true },
                    )
                    .await;
                out[i] = Some(match back.as_ref().map(|r| r.first().cloned()) {
                    Ok(Some(Ok(_))) => Outcome::Referenced(format!(
                        "referenced by `{name}`; moved back from {q}, where a stopped run had put it"
                    )),
                    _ => self.failed(
                        e,
                        format!("referenced by `{name}`, but its copy {q} could not be moved back"),
                    ),
                });
            }
        }

        let quarantine = self.cfg.stores[si].quarantine.clone();
        let (mut deletes, mut moves) = (Vec::new(), Vec::new());
        for (i, e) in entries.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match (&quarantine, &e.quarantine_key) {
                (Some(_), Some(q)) if !e.is_copy_removal() => moves.push((i, q.clone())),
                _ => deletes.push(i),
            }
        }

        if !deletes.is_empty() {
            // With quarantine off now, an entry moved by a stopped run is deleted at its copy.
            let mut keys: Vec<String> = Vec::new();
            let mut owner: Vec<usize> = Vec::new();
            for &i in &deletes {
                let e = entries[i];
                keys.push(e.key.clone());
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
            self.note(&first.store, &answer);
            match answer {
                Ok(results) => {
                    for (&i, r) in owner.iter().zip(results) {
                        let outcome = match r {
                            Ok(Gone::Deleted) => Outcome::Deleted,
                            Ok(Gone::AlreadyGone) => Outcome::AlreadyGone,
                            Err(why) => self.key_failed(entries[i], why),
                        };
                        // Of an entry's two keys, a failure wins.
                        if !matches!(out[i], Some(Outcome::Failed { .. } | Outcome::Deferred)) {
                            out[i] = Some(outcome);
                        }
                    }
                }
                Err(err) => {
                    for &i in &deletes {
                        out[i] = Some(self.call_failed(entries[i], &err));
                    }
                }
            }
        }

        if let (false, Some(q)) = (moves.is_empty(), &quarantine) {
            let pairs: Vec<(String, String)> = moves
                .iter()
                .map(|(i, to)| (entries[*i].key.clone(), to.clone()))
                .collect();
            let keep = TimeDelta::from_std(q.keep).unwrap_or(TimeDelta::MAX);
            let answer = store
                .move_many(rt, &pairs, MoveOptions { replace: true })
                .await;
            self.note(&first.store, &answer);
            match answer {
                Ok(results) => {
                    let now = Utc::now();
                    let mut gone = Vec::new();
                    for ((i, to), r) in moves.iter().zip(results) {
                        out[*i] = Some(match r {
                            Ok(Moved::Moved) => Outcome::Quarantined {
                                quarantine_key: to.clone(),
                                moved_at: now,
                                remove_at: now + keep,
                            },
                            Ok(Moved::SourceGone) => {
                                gone.push((*i, to.clone()));
                                continue;
                            }
                            Err(why) => self.key_failed(entries[*i], why),
                        });
                    }
                    // Nothing at the key: deleted by someone else, or moved by an earlier
                    // attempt that stopped before recording it. The copy tells which.
                    if !gone.is_empty() {
                        let qkeys: Vec<String> = gone.iter().map(|(_, q)| q.clone()).collect();
                        match store.lookup_many(rt, &qkeys).await {
                            Ok(found) => {
                                for ((i, to), f) in gone.into_iter().zip(found) {
                                    out[i] = Some(match f {
                                        Some(_) => Outcome::Quarantined {
                                            quarantine_key: to,
                                            moved_at: now,
                                            remove_at: now + keep,
                                        },
                                        None => Outcome::AlreadyGone,
                                    });
                                }
                            }
                            Err(err) => {
                                for (i, _) in gone {
                                    out[i] = Some(self.call_failed(entries[i], &err));
                                }
                            }
                        }
                    }
                }
                Err(err) => {
                    for (i, _) in &moves {
                        out[*i] = Some(self.call_failed(entries[*i], &err));
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Outcome::Deferred))
            .collect()
    }
}

/// Drains the queue: batches of due entries until none is due (or `limit` were claimed).
/// `progress` is called after each batch with the totals so far.
pub async fn run(
    cfg: &Config,
    state: &State,
    opts: &RunOptions,
    progress: &(dyn Fn(&Totals) + Sync),
) -> Result<Totals> {
    let ledger = Arc::new(Ledger::new(state.load_budgets(Utc::now()).await?));
    let me = worker_id();
    let mut totals = Totals {
        released: state.release_stale_claims(&is_dead).await?,
        ..Totals::default()
    };
    let mut w = Worker {
        cfg,
        opts,
        ledger: Arc::clone(&ledger),
        stores: HashMap::new(),
        recheck: Recheck::new(cfg),
        reached: std::collections::BTreeSet::new(),
        unreachable: std::collections::BTreeSet::new(),
    };
    let result = loop {
        let room = opts
            .limit
            .map_or(opts.batch_size as u64, |l| l.saturating_sub(totals.claimed))
            .min(opts.batch_size as u64);
        if room == 0 {
            break Ok(());
        }
        let now = Utc::now();
        let quarantine = |e: &Entry| {
            if e.is_copy_removal() {
                return None;
            }
            cfg.stores
                .iter()
                .find(|s| s.name == e.store)
                .and_then(|s| quarantine_key(s, &e.key, now))
        };
        let claimed = state
            .claim(
                &me,
                usize::try_from(room).unwrap_or(usize::MAX),
                &quarantine,
            )
            .await;
        let batch = match claimed {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        if batch.is_empty() {
            break Ok(());
        }
        totals.claimed += batch.len() as u64;
        totals.batches += 1;
        // Groups of one store and resource type, in claim order.
        let mut groups: Vec<Vec<&Entry>> = Vec::new();
        for e in &batch {
            match groups
                .iter_mut()
                .find(|g| g[0].store == e.store && g[0].resource_type == e.resource_type)
            {
                Some(g) => g.push(e),
                None => groups.push(vec![e]),
            }
        }
        let mut results: Vec<(&Entry, Outcome)> = Vec::with_capacity(batch.len());
        for g in &groups {
            let outcomes = w.group(state, &me, g).await;
            results.extend(g.iter().copied().zip(outcomes));
        }
        for (e, o) in &results {
            totals.count(o, opts.max_attempts, e);
        }
        if let Err(e) = state
            .finish(&me, &opts.actor, opts.max_attempts, &results)
            .await
        {
            break Err(e);
        }
        totals.recheck = w.recheck.cost;
        progress(&totals);
        if let Some(why) = ledger.stopped() {
            totals.budget_stop = Some(why);
            break Ok(());
        }
    };
    totals.store_calls = w.stores.values().map(|s| s.usage().api_calls).sum();
    totals.reached = std::mem::take(&mut w.reached);
    totals.unreachable = std::mem::take(&mut w.unreachable);
    totals.db_unreachable = w.recheck.db_unreachable;
    totals.recheck = w.recheck.cost;
    w.recheck.close().await;
    state
        .save_budgets(Utc::now(), &ledger.snapshot(Utc::now()))
        .await?;
    result.map(|()| totals).map_err(|e: Error| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap() {
        let opts = RunOptions {
            batch_size: 100,
            max_attempts: 3,
            backoff: Duration::from_mins(1),
            backoff_max: Duration::from_hours(1),
            limit: None,
            actor: "t".into(),
        };
        assert_eq!(backoff(&opts, 0), Duration::from_mins(1));
        assert_eq!(backoff(&opts, 1), Duration::from_mins(2));
        assert_eq!(backoff(&opts, 2), Duration::from_mins(4));
        assert_eq!(backoff(&opts, 10), Duration::from_hours(1));
        assert_eq!(backoff(&opts, 40), Duration::from_hours(1));
    }

    #[test]
    fn a_worker_of_this_process_or_another_host_is_never_dead() {
        assert!(!is_dead(&worker_id()));
        assert!(!is_dead("elsewhere.example:1"));
        assert!(!is_dead("garbage"));
    }
}
