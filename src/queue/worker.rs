//! The queue worker (SPEC §6): claims due entries in batches, re-checks their references
//! (invariant 1), moves them to quarantine or deletes them with the store's bulk call, and hands
//! what it observed to the pure transition (`queue::transition`), whose decisions the state
//! database applies with their audit rows. `queue run`, `purge --confirm` and (later) `serve`
//! all drain the queue through [`run`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::recheck::{Cost, Recheck, Release};
use super::transition::{self, Settings};
use crate::app::App;
use crate::config::{Config, StoreConfig};
use crate::domain::ResourceType;
use crate::domain::event::Event;
use crate::domain::queue::{Completion, Entry, Hold, Outcome, QueueState, Reason, TrashSpot};
use crate::error::{Error, Result};
use crate::state::QueueStore as _;
use crate::store::{
    Gone, KeyError, KeyFailure, MoveOptions, Moved, Store, StoreError, trash_prefix,
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
    /// Claim only the entries this rule queued (`expire` works its own entries).
    pub only_rule: Option<(Reason, String)>,
    /// Once cancelled, the run stops after the batch it holds (`serve` shutting down).
    pub stop: Option<tokio_util::sync::CancellationToken>,
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
            only_rule: None,
            stop: None,
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
    /// Due rows of the databases' outboxes (triggers) moved into the queue before the run, and
    /// the entries they added.
    pub outbox_rows: u64,
    pub outbox_queued: u64,
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
            Outcome::Deleted | Outcome::DeletedBefore(_) => self.deleted += 1,
            Outcome::Kept { then, .. } => self.count(e, then, c),
            Outcome::AlreadyGone => self.already_gone += 1,
            Outcome::Quarantined { .. } => self.quarantined += 1,
            Outcome::Referenced(_) | Outcome::KeptShared(_) => self.referenced += 1,
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
            Outcome::Deferred | Outcome::Held(_) | Outcome::Retarget => self.deferred += 1,
            Outcome::Dropped(_) | Outcome::TooRecent(_) => self.dropped += 1,
        }
    }

    /// Every store the run tried was out of reach (SPEC §3 exit 1).
    pub fn nothing_reached(&self) -> bool {
        self.reached.is_empty() && (!self.unreachable.is_empty() || self.db_unreachable)
    }
}

/// This process, as a claim holder: `host:pid:boot id:PID namespace:start time`. A host name
/// alone does not tell a process: containers share one, and a PID means something only in its
/// namespace, on one boot, while the process that had it runs.
pub fn worker_id() -> String {
    let me = Identity::of_self();
    format!(
        "{}:{}:{}:{}:{}",
        host(),
        std::process::id(),
        me.boot,
        me.pid_ns,
        me.start
    )
}

fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// What tells a process apart from any other that ever ran, as far as this machine can say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    boot: String,
    pid_ns: String,
    start: String,
}

impl Identity {
    fn of_self() -> Identity {
        Identity {
            boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map_or_else(|_| "?".into(), |s| s.trim().to_string()),
            // `pid:[4026531836]`: the namespace's inode number.
            pid_ns: std::fs::read_link("/proc/self/ns/pid").map_or_else(
                |_| "?".into(),
                |p| {
                    p.to_string_lossy()
                        .trim_start_matches("pid:[")
                        .trim_end_matches(']')
                        .to_string()
                },
            ),
            start: start_time("self").unwrap_or_else(|| "?".into()),
        }
    }
}

/// A process's start time, in clock ticks since boot (`/proc/<pid>/stat`, field 22).
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Whether a claim holder is a process that no longer runs: one of this boot and PID namespace
/// (else nothing here can tell) whose PID is free or belongs to a process started later.
/// Holders written another way (an older version's `host:pid`) are never dead: their claims
/// wait for the claim timeout.
pub fn is_dead(holder: &str) -> bool {
    let mut parts = holder.rsplitn(5, ':');
    let (Some(start), Some(ns), Some(boot), Some(pid), Some(_host)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let me = Identity::of_self();
    if me.boot == "?" || me.pid_ns == "?" || boot != me.boot || ns != me.pid_ns {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return start != me.start;
    }
    match start_time(&pid.to_string()) {
        Some(now) => now != start,
        None => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// How often the batch's claims are renewed while a store call runs.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The longest one store call may run before it is abandoned: well below the claim timeout,
/// so that a claim renewed right before the call cannot run out while it runs.
const CALL_BOUND: Duration = Duration::from_mins(4);

struct Worker<'a> {
    app: &'a App,
    opts: &'a RunOptions,
    me: String,
    /// The batch's claims (id, fencing token), renewed while a store call runs.
    claims: Vec<(i64, i64)>,
    /// The database's time at the batch's claim.
    claimed_at: DateTime<Utc>,
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
    /// Where each entry's move goes this time (set when its claim is held), and when that
    /// destination was chosen: the time of the move.
    trash: Vec<Option<String>>,
    move_time: DateTime<Utc>,
}

impl Group<'_> {
    fn open(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.entries.len()).filter(|&i| self.out[i].is_none())
    }

    /// Entries not to be deleted that would need a look at the store get none this time: they
    /// wait (their copy's fate is not known yet).
    fn spare_nothing(&mut self) {
        for (i, e) in self.entries.iter().enumerate() {
            if needs_look(e, self.out[i].as_ref()) {
                self.out[i] = Some(Outcome::Deferred);
            }
        }
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

    /// Runs one store call for `acting` entries while the batch's claims are renewed every
    /// [`RENEW_EVERY`]. The call is abandoned (dropped, so nothing more of it is sent) when a
    /// renewal fails, when one of `acting` was taken over, or past [`CALL_BOUND`]; `Err` says
    /// why. What an abandoned call did is looked at by whoever claims the entries next: they
    /// are in flight.
    async fn guarded<T>(
        &self,
        acting: &[i64],
        call: impl Future<Output = T>,
    ) -> std::result::Result<T, String> {
        let mut call = std::pin::pin!(call);
        let bound = tokio::time::sleep(CALL_BOUND);
        let mut bound = std::pin::pin!(bound);
        let start = tokio::time::Instant::now() + RENEW_EVERY;
        let mut renew = tokio::time::interval_at(start, RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut call => return Ok(out),
                () = &mut bound => {
                    return Err(format!(
                        "the store call ran longer than {}; abandoned",
                        humantime::format_duration(CALL_BOUND)
                    ));
                }
                _ = renew.tick() => {
                    let holds: Vec<Hold> = self
                        .claims
                        .iter()
                        .map(|&(id, token)| Hold { id, token, start: false, spot: None })
                        .collect();
                    match self.app.state.hold_claims(&self.me, &holds).await {
                        Ok(held) => {
                            let held: HashSet<i64> = held.into_iter().map(|(id, _)| id).collect();
                            if acting.iter().any(|id| !held.contains(id)) {
                                return Err("its claim was taken over during the store call, which was abandoned".into());
                            }
                        }
                        Err(e) => {
                            return Err(format!("its claim could not be renewed during the store call, which was abandoned ({e})"));
                        }
                    }
                }
            }
        }
    }

    /// The outcomes of one group, in its order.
    async fn group(&mut self, entries: Vec<&Entry>) -> Vec<Outcome> {
        let first = entries[0];
        let mut g = Group {
            out: vec![None; entries.len()],
            by: vec![None; entries.len()],
            trash: entries.iter().map(|e| e.quarantine_key.clone()).collect(),
            move_time: Utc::now(),
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
        // `store_cfg` carries the largest `min_age` of the overlapping stores.
        self.hold_min_age(&store_cfg, &mut g);
        Self::drop_ignored(&crate::overlap::rules(self.cfg(), si), &mut g);
        if self.recheck_and_hold(si, &store_cfg, &mut g).await {
            self.act(&store_cfg, store.as_ref(), &mut g).await;
        }
        g.out
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Deferred))
            .collect()
    }

    /// Invariant 2 at claim: an entry from a scan or a policy waits until its upload time plus
    /// the store's `min_age` of now (a raised `min_age` holds entries queued before); one whose
    /// upload time is unknown counts as too recent.
    fn hold_min_age(&self, store: &StoreConfig, g: &mut Group<'_>) {
        for (i, e) in g.entries.iter().enumerate() {
            match transition::min_age_hold(e, store.min_age, self.claimed_at) {
                None => {}
                Some(Ok(until)) => g.out[i] = Some(Outcome::Held(until)),
                Some(Err(why)) => g.out[i] = Some(Outcome::TooRecent(why)),
            }
        }
    }

    /// `ignore` globs of the store and of every store overlapping it: never deleted, whoever
    /// queued the key. (An entry whose earlier move may have left a copy has that copy settled
    /// first, in [`Self::settle_spared`].)
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
    /// renewed under their tokens, the entries about to be acted on are marked in flight and
    /// get their quarantine keys (chosen now: the time of the move), and entries whose claim was
    /// taken over meanwhile are left alone. `false` when nothing may be done to the group.
    async fn recheck_and_hold(
        &mut self,
        si: usize,
        store: &StoreConfig,
        g: &mut Group<'_>,
    ) -> bool {
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
        let releases: Vec<Release> = asked
            .iter()
            .map(|&i| Release::of(self.cfg(), g.entries[i]))
            .collect();
        let referenced = if keys.is_empty() {
            Vec::new()
        } else {
            match self.recheck.referenced(si, &keys, &releases).await {
                Ok(refs) => refs,
                Err(why) => {
                    g.settle_rest(|_| failed(why.clone()));
                    g.spare_nothing();
                    return false;
                }
            }
        };
        for (&i, by) in asked.iter().zip(referenced) {
            g.by[i] = by.as_ref().map(|p| p.reference.clone());
            if let Some(p) = by {
                let (e, name) = (g.entries[i], &p.reference);
                g.out[i] = Some(if e.is_copy_removal() {
                    Outcome::Referenced(format!(
                        "`{}` is referenced again by `{name}`: its quarantined copy {} is kept",
                        e.checked_key(),
                        e.object.key
                    ))
                } else if p.other_row {
                    Outcome::KeptShared(format!("referenced by `{name}`"))
                } else {
                    Outcome::Referenced(format!(
                        "referenced by `{name}`: its own row, which its rule no longer selects"
                    ))
                });
            }
        }
        g.move_time = Utc::now();
        let folder =
            trash_prefix(store).map(|p| format!("{p}{}", g.move_time.format("%Y%m%dT%H%M%SZ")));
        let holds: Vec<Hold> = g
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let acts = g.out[i].is_none() || needs_look(e, g.out[i].as_ref());
                Hold {
                    id: e.id,
                    token: e.claim_token,
                    start: acts,
                    spot: folder
                        .as_ref()
                        .filter(|_| acts && g.out[i].is_none() && !e.is_copy_removal())
                        .map(|f| TrashSpot {
                            folder: f.clone(),
                            key: e.object.key.clone(),
                        }),
                }
            })
            .collect();
        let Ok(held) = self.app.state.hold_claims(&self.me, &holds).await else {
            for (i, e) in g.entries.iter().enumerate() {
                // Not in flight: nothing was marked, nothing is done; the claim's timeout
                // returns it.
                if g.out[i].is_none() || needs_look(e, g.out[i].as_ref()) {
                    g.out[i] = Some(Outcome::Deferred);
                }
            }
            return false;
        };
        let held: std::collections::HashMap<i64, Option<String>> = held.into_iter().collect();
        for (i, e) in g.entries.iter().enumerate() {
            match held.get(&e.id) {
                None => g.out[i] = Some(Outcome::Deferred),
                Some(q) => g.trash[i].clone_from(q),
            }
        }
        true
    }

    /// Moves, deletes and looks at what the group's outcomes so far leave to do.
    async fn act(&mut self, store_cfg: &StoreConfig, store: &dyn Store, g: &mut Group<'_>) {
        self.settle_spared(store, g).await;
        let (mut deletes, mut moves) = (Vec::new(), Vec::new());
        for i in g.open().collect::<Vec<_>>() {
            let e = g.entries[i];
            match (&store_cfg.quarantine, &g.trash[i]) {
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

    /// Entries that are not to be deleted (referenced, ignored, too recent) but whose earlier
    /// attempt may have acted: a copy left in the trash is moved back — never over an object
    /// at the key again, where it is kept and recorded instead — and a key a stopped worker
    /// deleted is recorded as deleted. A look that fails is a failed attempt: the entry waits,
    /// never dropped with its copy unseen.
    async fn settle_spared(&self, store: &dyn Store, g: &mut Group<'_>) {
        for i in 0..g.entries.len() {
            let e = g.entries[i];
            let Some(spared) = g.out[i].clone() else {
                continue;
            };
            if !needs_look(e, Some(&spared)) {
                continue;
            }
            let rt = e.resource_type();
            let look = e
                .quarantine_key
                .clone()
                .unwrap_or_else(|| e.object.key.clone());
            let there = self
                .guarded(&[e.id], store.lookup_many(rt, std::slice::from_ref(&look)))
                .await;
            let found = match there {
                Ok(Ok(found)) => found.into_iter().next().flatten().is_some(),
                Ok(Err(err)) => {
                    g.out[i] = Some(failed(format!(
                        "cannot tell whether {look} is there: {err}"
                    )));
                    continue;
                }
                Err(why) => {
                    g.out[i] = Some(failed(why));
                    continue;
                }
            };
            g.out[i] = Some(match (e.may_have_moved(), found) {
                // Quarantine off: the key is there (never deleted), or a stopped worker deleted it.
                (false, true) | (true, false) => spared,
                (false, false) => Outcome::DeletedBefore(format!(
                    "deleted by a stopped worker before it could record it; now: {}",
                    describe(&spared)
                )),
                (true, true) => self.move_back(store, e, &look, spared).await,
            });
        }
    }

    /// Brings a copy left by an earlier move back to its key, without replacing anything.
    async fn move_back(&self, store: &dyn Store, e: &Entry, q: &str, spared: Outcome) -> Outcome {
        let back = self
            .guarded(
                &[e.id],
                store.move_many(
                    e.resource_type(),
                    &[(q.to_string(), e.object.key.clone())],
                    MoveOptions { replace: false },
                ),
            )
            .await;
        match back {
            Ok(Ok(r)) => match r.into_iter().next() {
                Some(Ok(Moved::Moved)) => with_note(
                    spared,
                    &format!("moved back from {q}, where a stopped run had put it"),
                ),
                Some(Err(err)) if err.kind == KeyFailure::AlreadyExists => Outcome::Kept {
                    quarantine_key: q.to_string(),
                    why: format!(
                        "`{}` exists again, and is not replaced ({})",
                        e.object.key,
                        describe(&spared)
                    ),
                    then: Box::new(spared),
                },
                Some(Ok(Moved::SourceGone)) => {
                    failed(format!("its copy {q} went away while it was moved back"))
                }
                Some(Err(err)) => failed(format!(
                    "its copy {q} could not be moved back: {}",
                    err.message
                )),
                None => failed(format!("its copy {q} could not be moved back: no answer")),
            },
            Ok(Err(err)) => failed(format!("its copy {q} could not be moved back: {err}")),
            Err(why) => failed(why),
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
            if e.may_have_moved()
                && let Some(q) = &e.quarantine_key
            {
                keys.push(q.clone());
                owner.push(i);
            }
        }
        let ids: Vec<i64> = deletes.iter().map(|&i| g.entries[i].id).collect();
        let answer = match self.guarded(&ids, store.delete_many(rt, &keys)).await {
            Ok(a) => a,
            Err(why) => {
                for &i in deletes {
                    g.out[i] = Some(failed(why.clone()));
                }
                return;
            }
        };
        self.note(&store_cfg.name, &answer);
        match answer {
            Ok(results) => {
                for (&i, r) in owner.iter().zip(results) {
                    let e = g.entries[i];
                    let outcome = match r {
                        Ok(Gone::Deleted) => Outcome::Deleted,
                        // In flight before: the earlier attempt's call went through.
                        Ok(Gone::AlreadyGone) if e.reclaimed => Outcome::DeletedBefore(
                            "deleted by a stopped worker before it could record it".into(),
                        ),
                        Ok(Gone::AlreadyGone) => Outcome::AlreadyGone,
                        Err(why) => key_failed(why),
                    };
                    // Of an entry's two keys, a failure wins, then a deletion.
                    let keep = matches!(
                        g.out[i],
                        Some(Outcome::Failed { .. } | Outcome::Deferred | Outcome::Deleted)
                    );
                    if !keep {
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

    /// Quarantine moves, never over an existing object. Nothing at a key: deleted by someone
    /// else, or moved by an earlier attempt that stopped before recording it — the copy tells
    /// which.
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
        let ids: Vec<i64> = moves.iter().map(|(i, _)| g.entries[*i].id).collect();
        let answer = match self
            .guarded(
                &ids,
                store.move_many(rt, &pairs, MoveOptions { replace: false }),
            )
            .await
        {
            Ok(a) => a,
            Err(why) => {
                for (i, _) in moves {
                    g.out[*i] = Some(failed(why.clone()));
                }
                return;
            }
        };
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
        let (fresh, now) = (g.move_time, Utc::now());
        let mut gone = Vec::new();
        for ((i, to), r) in moves.iter().zip(results) {
            let e = g.entries[*i];
            // A key chosen for this attempt carries the move's time; an earlier one is reused.
            let moved_at = if e.quarantine_key.is_some() {
                now
            } else {
                fresh
            };
            g.out[*i] = Some(match r {
                Ok(Moved::Moved) => into_trash(to, moved_at),
                Ok(Moved::SourceGone) if e.reclaimed || e.may_have_moved() => {
                    gone.push((*i, to.clone()));
                    continue;
                }
                Ok(Moved::SourceGone) => Outcome::AlreadyGone,
                // Both there: an earlier move copied and stopped before it deleted. That copy
                // stays, recorded; the object moves again, elsewhere.
                Err(err) if err.kind == KeyFailure::AlreadyExists && e.may_have_moved() => {
                    Outcome::Kept {
                        quarantine_key: to.clone(),
                        why: format!(
                            "an earlier move copied `{}` there and stopped before it removed it; the object is moved again",
                            e.object.key
                        ),
                        then: Box::new(Outcome::Deferred),
                    }
                }
                Err(err) if err.kind == KeyFailure::AlreadyExists => Outcome::Retarget,
                Err(why) => key_failed(why),
            });
        }
        if gone.is_empty() {
            return;
        }
        let copies: Vec<String> = gone.iter().map(|(_, q)| q.clone()).collect();
        let ids: Vec<i64> = gone.iter().map(|(i, _)| g.entries[*i].id).collect();
        match self.guarded(&ids, store.lookup_many(rt, &copies)).await {
            Ok(Ok(found)) => {
                for ((i, to), f) in gone.into_iter().zip(found) {
                    g.out[i] = Some(if f.is_some() {
                        into_trash(&to, now)
                    } else {
                        Outcome::AlreadyGone
                    });
                }
            }
            Ok(Err(err)) => {
                for (i, _) in gone {
                    g.out[i] = Some(Self::call_failed(&err));
                }
            }
            Err(why) => {
                for (i, _) in gone {
                    g.out[i] = Some(failed(why.clone()));
                }
            }
        }
    }
}

fn into_trash(to: &str, moved_at: DateTime<Utc>) -> Outcome {
    Outcome::Quarantined {
        quarantine_key: to.to_string(),
        moved_at,
    }
}

/// Whether an entry that is not to be deleted must first be looked at in the store: an earlier
/// attempt may have moved it to the trash, or (quarantine off) deleted it.
fn needs_look(e: &Entry, decided: Option<&Outcome>) -> bool {
    matches!(
        decided,
        Some(
            Outcome::Referenced(_)
                | Outcome::KeptShared(_)
                | Outcome::Dropped(_)
                | Outcome::TooRecent(_)
        )
    ) && !e.is_copy_removal()
        && (e.may_have_moved() || e.reclaimed)
}

/// What an outcome says, for a note.
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Referenced(d)
        | Outcome::KeptShared(d)
        | Outcome::Dropped(d)
        | Outcome::TooRecent(d) => d.clone(),
        other => format!("{other:?}"),
    }
}

/// The same outcome with a note added to what it says.
fn with_note(o: Outcome, note: &str) -> Outcome {
    match o {
        Outcome::Referenced(d) => Outcome::Referenced(format!("{d}; {note}")),
        Outcome::KeptShared(d) => Outcome::KeptShared(format!("{d}; {note}")),
        Outcome::Dropped(d) => Outcome::Dropped(format!("{d}; {note}")),
        Outcome::TooRecent(d) => Outcome::TooRecent(format!("{d}; {note}")),
        other => other,
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
        claims: Vec::new(),
        claimed_at: Utc::now(),
        recheck: Recheck::new(Arc::clone(&app.cfg)),
        stores: Vec::new(),
        reached: BTreeSet::new(),
        unreachable: BTreeSet::new(),
    };
    let moved = crate::triggers::drain(app, opts).await;
    let mut totals = Totals {
        released: app.state.release_stale_claims(&is_dead).await?,
        outbox_rows: moved.rows,
        outbox_queued: moved.queued,
        ..Totals::default()
    };
    let result = loop {
        if opts
            .stop
            .as_ref()
            .is_some_and(tokio_util::sync::CancellationToken::is_cancelled)
        {
            break Ok(());
        }
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
        dropped: totals.dropped,
        errors: totals.errors.clone(),
        budget_stop: totals.budget_stop.clone(),
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
    let cfg = &app.cfg;
    let (batch, claimed_at) = app
        .state
        .claim(
            &w.me,
            usize::try_from(room).unwrap_or(usize::MAX),
            opts.only_rule.as_ref().map(|(r, n)| (*r, n.as_str())),
        )
        .await?;
    if batch.is_empty() {
        return Ok(false);
    }
    w.claims = batch.iter().map(|e| (e.id, e.claim_token)).collect();
    w.claimed_at = claimed_at;
    totals.claimed += batch.len() as u64;
    totals.batches += 1;
    let mut results: Vec<(&Entry, Outcome)> = Vec::with_capacity(batch.len());
    for g in groups(&batch) {
        let outcomes = w.group(g.clone()).await;
        results.extend(g.into_iter().zip(outcomes));
    }
    let now = Utc::now();
    let mut done = Vec::with_capacity(results.len());
    // Once per store of the batch: the overlapping stores' rules ask the filesystem about
    // folder roots.
    let mut settings: HashMap<&str, Settings> = HashMap::new();
    for (e, o) in &results {
        let s = *settings.entry(e.object.store.as_str()).or_insert_with(|| {
            let store = crate::overlap::index(cfg, &e.object.store)
                .map(|i| crate::overlap::effective_store(cfg, i));
            opts.settings(store.as_ref())
        });
        let c = transition::complete(e, o, &s, now);
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

    /// Two containers share a host name; their PIDs mean nothing to each other.
    #[test]
    fn a_worker_of_another_pid_namespace_or_boot_is_never_dead() {
        let me = Identity::of_self();
        assert_ne!(me.boot, "?", "this test needs /proc");
        // A PID that runs nowhere here, on this host, in another namespace: not ours to judge.
        let free = 4_194_000;
        assert!(!std::path::Path::new(&format!("/proc/{free}")).exists());
        let h = host();
        assert!(!is_dead(&format!("{h}:{free}:{}:1:{}", me.boot, me.start)));
        assert!(!is_dead(&format!(
            "{h}:{free}:another-boot:{}:1",
            me.pid_ns
        )));
        // The old form `host:pid` says too little: never dead.
        assert!(!is_dead(&format!("{h}:{free}")));
        // Same boot and namespace, PID free: dead.
        assert!(is_dead(&format!("{h}:{free}:{}:{}:1", me.boot, me.pid_ns)));
        // Our own PID with another start time: an earlier process that had it, dead.
        let pid = std::process::id();
        assert!(is_dead(&format!("{h}:{pid}:{}:{}:0", me.boot, me.pid_ns)));
        // PID 1 runs, started when it did: alive.
        let one = start_time("1").expect("pid 1");
        assert!(!is_dead(&format!("{h}:1:{}:{}:{one}", me.boot, me.pid_ns)));
        assert!(is_dead(&format!("{h}:1:{}:{}:{one}9", me.boot, me.pid_ns)));
    }
}
