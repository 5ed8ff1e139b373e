//! The durable deletion queue, the audit log and the quarantine records in the state database
//! (SPEC §6). Every deletion assetgc makes is an entry here first; the worker (`worker.rs`)
//! claims due entries in batches and writes each outcome back with its audit row in one
//! transaction, so a crash at any point leaves every entry either finished or still queued.
//!
//! Written with rusqlite on the caller's thread (see `State::with_conn`): claims need
//! `BEGIN IMMEDIATE` (the write lock taken up front, so two workers never read the same due
//! entries), and a batch's outcomes are many small writes in one transaction.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::{Error, Result};
use crate::key::ResourceType;
use crate::report::rfc3339;
use crate::state::SqliteState;

/// A claim older than this returns to `pending` (SPEC §6).
pub const CLAIM_TIMEOUT: TimeDelta = TimeDelta::minutes(10);

/// What queued an entry: its `reason` column.
pub const REASON_PURGE: &str = "purge";
pub const REASON_ADD: &str = "queue add";
/// The removal of a quarantined copy, due `keep` after the move.
pub const REASON_QUARANTINE: &str = "quarantine";

#[derive(Debug, Clone)]
pub struct NewEntry {
    pub store: String,
    pub resource_type: ResourceType,
    pub key: String,
    pub reason: &'static str,
    pub client_id: String,
    pub scan_id: Option<i64>,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub original_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub reason: String,
    pub rule: String,
    pub row_id: String,
    pub client_id: String,
    pub scan_id: Option<i64>,
    pub queued_at: String,
    pub uploaded_at: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    pub state: String,
    pub actor: String,
    pub original_key: Option<String>,
    pub quarantine_key: Option<String>,
    /// Claimed before (its worker stopped or its claim timed out): its move may have happened.
    pub reclaimed: bool,
}

impl Entry {
    pub fn resource_type(&self) -> ResourceType {
        ResourceType::parse_cloudinary(&self.resource_type).unwrap_or(ResourceType::Plain)
    }

    /// The key whose references decide: a quarantined copy is kept while its original is used.
    pub fn checked_key(&self) -> &str {
        self.original_key.as_deref().unwrap_or(&self.key)
    }

    pub fn is_copy_removal(&self) -> bool {
        self.reason == REASON_QUARANTINE
    }
}

pub(crate) const ENTRY_COLUMNS: &str = "id, store, resource_type, key, reason, rule, row_id, client_id, scan_id, queued_at, uploaded_at, attempts, last_error, next_attempt_at, state, actor, original_key, quarantine_key";

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: row.get(0)?,
        store: row.get(1)?,
        resource_type: row.get(2)?,
        key: row.get(3)?,
        reason: row.get(4)?,
        rule: row.get(5)?,
        row_id: row.get(6)?,
        client_id: row.get(7)?,
        scan_id: row.get(8)?,
        queued_at: row.get(9)?,
        uploaded_at: row.get(10)?,
        attempts: row.get(11)?,
        last_error: row.get(12)?,
        next_attempt_at: row.get(13)?,
        state: row.get(14)?,
        actor: row.get(15)?,
        original_key: row.get(16)?,
        quarantine_key: row.get(17)?,
        reclaimed: false,
    })
}

/// How one claimed entry ended this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    AlreadyGone,
    /// Moved to `quarantine_key` at `moved_at`; its removal is queued for `remove_at`.
    Quarantined {
        quarantine_key: String,
        moved_at: DateTime<Utc>,
        remove_at: DateTime<Utc>,
    },
    /// Referenced again: dropped, never deleted (a quarantined copy is kept).
    Referenced(String),
    /// Failed; `retry_at` is `None` when the entry has used its attempts and is now `failed`.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Not tried (the API budget stopped the run): back to `pending`, no attempt counted.
    Deferred,
    /// Dropped without a store call, with why (an `ignore` glob matches the key).
    Dropped(String),
}

impl Outcome {
    pub(crate) fn audit(&self) -> String {
        match self {
            Outcome::Deleted => "deleted".into(),
            Outcome::AlreadyGone => "already_gone".into(),
            Outcome::Quarantined { .. } => "quarantined".into(),
            Outcome::Referenced(_) => "referenced".into(),
            Outcome::Failed { error, .. } => format!("failed: {error}"),
            Outcome::Deferred => "deferred".into(),
            Outcome::Dropped(_) => "dropped".into(),
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub queue_id: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `pending` and `claimed`.
    pub total_pending: u64,
    pub total_failed: u64,
    pub total_done: u64,
    pub total_dropped: u64,
    /// Of the pending ones: how many are due now, and how many wait (`next_attempt_at` ahead).
    pub due_now: u64,
    pub oldest_queued: Option<String>,
    pub newest_queued: Option<String>,
    pub next_due: Option<String>,
    /// Pending and claimed entries grouped by attempts so far.
    pub by_attempts: Vec<(u32, u64)>,
}

/// A quarantine move, as `restore` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    pub id: i64,
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub quarantine_key: String,
    pub moved_at: String,
    pub state: String,
    pub queue_id: Option<i64>,
}

fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::State(format!("{what}: {e}"))
}

fn audit(
    tx: &Transaction<'_>,
    at: &str,
    actor: &str,
    e: (&str, &str, &str),
    outcome: &str,
    detail: Option<&str>,
    queue_id: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, store, resource_type, key, outcome, detail, queue_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![at, actor, e.0, e.1, e.2, outcome, detail, queue_id])?;
    Ok(())
}

fn insert_entry(
    tx: &Transaction<'_>,
    actor: &str,
    now: &str,
    e: &NewEntry,
) -> rusqlite::Result<Option<i64>> {
    let n = tx
        .prepare_cached(
            "INSERT INTO queue (store, resource_type, key, reason, client_id, scan_id, queued_at, uploaded_at, next_attempt_at, actor, original_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            e.store,
            e.resource_type.as_str(),
            e.key,
            e.reason,
            e.client_id,
            e.scan_id,
            now,
            e.uploaded_at.map(rfc3339),
            rfc3339(e.next_attempt_at),
            actor,
            e.original_key,
        ])?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}

/// Which entries a `retry` or `drop` applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<i64>),
    AllFailed,
}

impl SqliteState {
    /// Queues entries in one transaction. Returns (added, already queued): an object with a
    /// live entry (`pending` or `claimed`) gets no second one.
    pub fn enqueue(&self, actor: &str, entries: &[NewEntry]) -> Result<(u64, u64)> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut added = 0;
            for e in entries {
                if insert_entry(&tx, actor, &now, e)?.is_some() {
                    added += 1;
                }
            }
            tx.commit()?;
            Ok((added, entries.len() as u64 - added))
        })
        .map_err(db_err("cannot queue deletions"))
    }

    /// Returns claims to `pending` when they are older than [`CLAIM_TIMEOUT`] or their worker
    /// (`host:pid`) is on this host and no longer runs. Returns how many.
    pub fn release_stale_claims(&self, is_dead: &dyn Fn(&str) -> bool) -> Result<u64> {
        let now = Utc::now();
        let cutoff = rfc3339(now - CLAIM_TIMEOUT);
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let holders: Vec<(String, String)> = tx
                .prepare("SELECT claimed_by, MIN(claimed_at) FROM queue WHERE state = 'claimed' GROUP BY claimed_by")?
                .query_map([], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get::<_, Option<String>>(1)?.unwrap_or_default())))?
                .collect::<rusqlite::Result<_>>()?;
            let mut released = 0;
            for (holder, _) in holders {
                let n = if is_dead(&holder) {
                    tx.execute(
                        "UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = ?1",
                        params![holder],
                    )?
                } else {
                    tx.execute(
                        "UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = ?1 AND claimed_at < ?2",
                        params![holder, cutoff],
                    )?
                };
                released += n as u64;
            }
            tx.commit()?;
            Ok(released)
        })
        .map_err(db_err("cannot release stale claims"))
    }

    /// Claims up to `n` due entries for `worker`, atomically (`BEGIN IMMEDIATE`). `quarantine`
    /// gives the key an entry's move goes to, fixed at its first claim so that a retry after a
    /// crash moves to the same place.
    pub fn claim(
        &self,
        worker: &str,
        n: usize,
        quarantine: &dyn Fn(&Entry) -> Option<String>,
    ) -> Result<Vec<Entry>> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut entries: Vec<Entry> = tx
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
                ))?
                .query_map(params![now, i64::try_from(n).unwrap_or(i64::MAX)], entry)?
                .collect::<rusqlite::Result<_>>()?;
            {
                let mut claim = tx.prepare_cached(
                    "UPDATE queue SET state = 'claimed', claimed_by = ?1, claimed_at = ?2, quarantine_key = ?3 WHERE id = ?4",
                )?;
                for e in &mut entries {
                    e.reclaimed = e.quarantine_key.is_some();
                    if e.quarantine_key.is_none() {
                        e.quarantine_key = quarantine(e);
                    }
                    e.state = "claimed".into();
                    claim.execute(params![worker, now, e.quarantine_key, e.id])?;
                }
            }
            tx.commit()?;
            Ok(entries)
        })
        .map_err(db_err("cannot claim queue entries"))
    }

    /// Writes the outcomes of a claimed batch with their audit rows, quarantine records and
    /// removal entries, in one transaction. Only entries still claimed by `worker` are written.
    pub fn finish(
        &self,
        worker: &str,
        actor: &str,
        max_attempts: u32,
        results: &[(&Entry, Outcome)],
    ) -> Result<()> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (e, outcome) in results {
                let ident = (e.store.as_str(), e.resource_type.as_str(), e.key.as_str());
                let mine: bool = tx
                    .prepare_cached("SELECT 1 FROM queue WHERE id = ?1 AND state = 'claimed' AND claimed_by = ?2")?
                    .query_row(params![e.id, worker], |_| Ok(true))
                    .optional()?
                    .unwrap_or(false);
                if !mine {
                    continue;
                }
                let done = |state: &str, out: &str| -> rusqlite::Result<()> {
                    tx.prepare_cached(
                        "UPDATE queue SET state = ?1, outcome = ?2, finished_at = ?3, claimed_by = NULL, claimed_at = NULL WHERE id = ?4",
                    )?
                    .execute(params![state, out, now, e.id])?;
                    Ok(())
                };
                match outcome {
                    Outcome::Deleted | Outcome::AlreadyGone => {
                        done("done", &outcome.audit())?;
                        if e.is_copy_removal() {
                            tx.execute(
                                "UPDATE quarantine SET state = 'removed' WHERE queue_id = ?1",
                                params![e.id],
                            )?;
                        }
                        audit(&tx, &now, actor, ident, &outcome.audit(), None, Some(e.id))?;
                    }
                    Outcome::Quarantined { quarantine_key, moved_at, remove_at } => {
                        done("done", "quarantined")?;
                        let removal = match insert_entry(
                            &tx,
                            actor,
                            &now,
                            &NewEntry {
                                store: e.store.clone(),
                                resource_type: e.resource_type(),
                                key: quarantine_key.clone(),
                                reason: REASON_QUARANTINE,
                                client_id: String::new(),
                                scan_id: e.scan_id,
                                uploaded_at: None,
                                next_attempt_at: *remove_at,
                                original_key: Some(e.key.clone()),
                            },
                        )? {
                            Some(id) => Some(id),
                            // The copy's key is queued already (by hand): that entry removes it.
                            None => tx
                                .query_row(
                                    "SELECT id FROM queue WHERE store = ?1 AND resource_type = ?2 AND key = ?3 AND state IN ('pending', 'claimed')",
                                    params![e.store, e.resource_type, quarantine_key],
                                    |r| r.get(0),
                                )
                                .optional()?,
                        };
                        tx.prepare_cached(
                            "INSERT INTO quarantine (store, resource_type, key, quarantine_key, moved_at, queue_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?
                        .execute(params![e.store, e.resource_type, e.key, quarantine_key, rfc3339(*moved_at), removal])?;
                        audit(
                            &tx,
                            &now,
                            actor,
                            ident,
                            "quarantined",
                            Some(&format!("moved to {quarantine_key}; removed for good after {}", rfc3339(*remove_at))),
                            Some(e.id),
                        )?;
                    }
                    Outcome::Dropped(detail) => {
                        done("dropped", "dropped")?;
                        audit(&tx, &now, actor, ident, "dropped", Some(detail), Some(e.id))?;
                    }
                    Outcome::Referenced(detail) => {
                        done("dropped", "referenced")?;
                        if e.is_copy_removal() {
                            tx.execute(
                                "UPDATE quarantine SET state = 'kept' WHERE queue_id = ?1",
                                params![e.id],
                            )?;
                        }
                        audit(&tx, &now, actor, ident, "referenced", Some(detail), Some(e.id))?;
                    }
                    Outcome::Failed { error, retry_at } => {
                        let attempts = e.attempts + 1;
                        match retry_at.filter(|_| attempts < max_attempts) {
                            Some(at) => tx
                                .prepare_cached(
                                    "UPDATE queue SET state = 'pending', attempts = ?1, last_error = ?2, next_attempt_at = ?3, claimed_by = NULL, claimed_at = NULL WHERE id = ?4",
                                )?
                                .execute(params![attempts, error, rfc3339(at), e.id])?,
                            None => tx
                                .prepare_cached(
                                    "UPDATE queue SET state = 'failed', attempts = ?1, last_error = ?2, outcome = 'failed', finished_at = ?3, claimed_by = NULL, claimed_at = NULL WHERE id = ?4",
                                )?
                                .execute(params![attempts, error, now, e.id])?,
                        };
                        audit(
                            &tx,
                            &now,
                            actor,
                            ident,
                            &outcome.audit(),
                            Some(&format!("attempt {attempts} of {max_attempts}")),
                            Some(e.id),
                        )?;
                    }
                    Outcome::Deferred => {
                        tx.prepare_cached(
                            "UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE id = ?1",
                        )?
                        .execute(params![e.id])?;
                    }
                }
            }
            tx.commit()
        })
        .map_err(db_err("cannot record deletion outcomes"))
    }

    /// Renews this worker's claims on `ids` (right before a store call) and returns the ids it
    /// still holds: a claim taken over after a timeout is not acted on.
    pub fn hold_claims(&self, worker: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut held = Vec::with_capacity(ids.len());
            {
                let mut touch = tx.prepare_cached(
                    "UPDATE queue SET claimed_at = ?1 WHERE id = ?2 AND state = 'claimed' AND claimed_by = ?3",
                )?;
                for &id in ids {
                    if touch.execute(params![now, id, worker])? == 1 {
                        held.push(id);
                    }
                }
            }
            tx.commit()?;
            Ok(held)
        })
        .map_err(db_err("cannot renew claims"))
    }

    pub fn queue_stats(&self) -> Result<Stats> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let mut s = Stats::default();
            let mut counts = conn.prepare("SELECT state, COUNT(*) FROM queue GROUP BY state")?;
            for row in counts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match state.as_str() {
                    "pending" | "claimed" => s.total_pending += n,
                    "failed" => s.total_failed = n,
                    "done" => s.total_done = n,
                    "dropped" => s.total_dropped = n,
                    _ => {}
                }
            }
            (s.oldest_queued, s.newest_queued, s.next_due) = conn.query_row(
                "SELECT MIN(queued_at), MAX(queued_at), MIN(CASE WHEN state = 'pending' THEN next_attempt_at END) FROM queue WHERE state IN ('pending', 'claimed')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            s.due_now = conn.query_row(
                "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND next_attempt_at <= ?1",
                params![now],
                |r| r.get::<_, i64>(0),
            )?
            .try_into()
            .unwrap_or(0);
            let mut by = conn.prepare(
                "SELECT attempts, COUNT(*) FROM queue WHERE state IN ('pending', 'claimed') GROUP BY attempts ORDER BY attempts",
            )?;
            s.by_attempts = by
                .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))?
                .map(|r| r.map(|(a, n)| (a, u64::try_from(n).unwrap_or(0))))
                .collect::<rusqlite::Result<_>>()?;
            Ok(s)
        })
        .map_err(db_err("cannot read the queue"))
    }

    /// Live entries (`pending`, `claimed`), or the `failed` ones, oldest first.
    pub fn queue_list(&self, failed: bool, limit: usize) -> Result<Vec<Entry>> {
        let states = if failed {
            "('failed')"
        } else {
            "('pending', 'claimed')"
        };
        self.with_conn(|conn| {
            conn.prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM queue WHERE state IN {states} ORDER BY id LIMIT ?1"
            ))?
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], entry)?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(db_err("cannot read the queue"))
    }

    /// Ids of `ids` that do not exist or cannot be changed: (id, why).
    fn refused_ids(&self, ids: &[i64], retry: bool) -> Result<Vec<(i64, String)>> {
        self.with_conn(|conn| {
            let mut out = Vec::new();
            let mut get = conn.prepare("SELECT state, reason, next_attempt_at FROM queue WHERE id = ?1")?;
            for &id in ids {
                let row: Option<(String, String, String)> = get
                    .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let why = match row {
                    None => Some(format!(
                        "queue entry {id} does not exist; `assetgc queue list` shows the ids"
                    )),
                    Some((state, _, _)) if state != "failed" && state != "pending" => Some(format!(
                        "queue entry {id} is {state}; only failed or pending entries can be {}",
                        if retry { "retried" } else { "dropped" }
                    )),
                    Some((state, reason, at)) if retry && state == "pending" && reason == REASON_QUARANTINE => {
                        Some(format!(
                            "queue entry {id} removes a quarantined copy when `keep` is over ({at}); it is not brought forward"
                        ))
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    out.push((id, why));
                }
            }
            Ok(out)
        })
        .map_err(db_err("cannot read the queue"))
    }

    /// `queue retry`: failed entries (or waiting ones) become due with their attempts reset —
    /// due now, or when `min_age` after their upload time is over for entries from a scan
    /// (`min_age` gives each store's). An object queued again meanwhile keeps its newer entry
    /// and this one is dropped. Unknown ids are an error and nothing changes.
    pub fn queue_retry(
        &self,
        sel: &Selection,
        actor: &str,
        min_age: &dyn Fn(&str) -> Option<std::time::Duration>,
    ) -> Result<Vec<String>> {
        self.change(sel, actor, true, |tx, id, now| {
            let (store, rt, key, scan, uploaded): (String, String, String, Option<i64>, Option<String>) =
                tx.query_row(
                    "SELECT store, resource_type, key, scan_id, uploaded_at FROM queue WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?;
            let live: Option<i64> = tx
                .query_row(
                    "SELECT id FROM queue WHERE store = ?1 AND resource_type = ?2 AND key = ?3 AND state IN ('pending', 'claimed') AND id <> ?4",
                    params![store, rt, key, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = live {
                let n = tx.execute(
                    "UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = ?1 WHERE id = ?2 AND state IN ('failed', 'pending')",
                    params![now, id],
                )?;
                return Ok((n == 1).then(|| ("dropped".to_string(), Some(format!("queued again as entry {other}")))));
            }
            // A purge entry is never due before its object is older than min_age.
            let mut due = now.to_string();
            if scan.is_some()
                && let (Some(t), Some(age)) = (
                    uploaded.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                    min_age(&store),
                )
            {
                let held = rfc3339(t.with_timezone(&Utc) + TimeDelta::from_std(age).unwrap_or(TimeDelta::MAX));
                if held > due {
                    due = held;
                }
            }
            let n = tx.execute(
                "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?1, finished_at = NULL, outcome = NULL WHERE id = ?2 AND (state = 'failed' OR (state = 'pending' AND reason <> ?3))",
                params![due, id, REASON_QUARANTINE],
            )?;
            Ok((n == 1).then(|| ("retried".to_string(), None)))
        })
    }

    /// `queue drop`: pending or failed entries are dropped, never deleted.
    pub fn queue_drop(&self, sel: &Selection, actor: &str) -> Result<Vec<String>> {
        self.change(sel, actor, false, |tx, id, now| {
            let n = tx.execute(
                "UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = ?1 WHERE id = ?2 AND state IN ('failed', 'pending')",
                params![now, id],
            )?;
            if n == 1 {
                tx.execute(
                    "UPDATE quarantine SET state = 'kept' WHERE queue_id = ?1",
                    params![id],
                )?;
            }
            Ok((n == 1).then(|| ("dropped".to_string(), None)))
        })
    }

    /// Applies `apply` to each selected entry in one transaction, auditing each change. `apply`
    /// changes an entry only in the states it allows (checked in the same statement), and says
    /// `None` when the entry moved on meanwhile (a worker claimed it): then it is left alone.
    fn change(
        &self,
        sel: &Selection,
        actor: &str,
        retry: bool,
        apply: impl Fn(
            &Transaction<'_>,
            i64,
            &str,
        ) -> rusqlite::Result<Option<(String, Option<String>)>>,
    ) -> Result<Vec<String>> {
        if let Selection::Ids(ids) = sel
            && let Some((_, why)) = self.refused_ids(ids, retry)?.into_iter().next()
        {
            return Err(Error::Usage(why));
        }
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<i64> = match sel {
                Selection::Ids(ids) => ids.clone(),
                Selection::AllFailed => tx
                    .prepare("SELECT id FROM queue WHERE state = 'failed' ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            let mut changed = Vec::new();
            for id in ids {
                let (store, rt, key): (String, String, String) = tx.query_row(
                    "SELECT store, resource_type, key FROM queue WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let Some((outcome, detail)) = apply(&tx, id, &now)? else {
                    continue;
                };
                audit(
                    &tx,
                    &now,
                    actor,
                    (&store, &rt, &key),
                    &outcome,
                    detail.as_deref(),
                    Some(id),
                )?;
                changed.push(outcome);
            }
            tx.commit()?;
            Ok(changed)
        })
        .map_err(db_err("cannot change queue entries"))
    }

    /// One audit row outside a batch (overrides, restores).
    pub fn audit_one(
        &self,
        actor: &str,
        ident: (&str, &str, &str),
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            audit(&tx, &now, actor, ident, outcome, detail, None)?;
            tx.commit()
        })
        .map_err(db_err("cannot write the audit log"))
    }

    /// The newest `limit` audit rows, newest first; only those of `key` when given.
    pub fn audit_log(&self, limit: usize, key: Option<&str>) -> Result<Vec<AuditRow>> {
        self.with_conn(|conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let map = |r: &rusqlite::Row<'_>| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    store: r.get(3)?,
                    resource_type: r.get(4)?,
                    key: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                    queue_id: r.get(8)?,
                })
            };
            let cols = "id, at, actor, store, resource_type, key, outcome, detail, queue_id";
            match key {
                Some(k) => conn
                    .prepare(&format!("SELECT {cols} FROM audit WHERE key = ?1 OR id IN (SELECT a.id FROM audit a JOIN queue q ON q.id = a.queue_id WHERE q.original_key = ?1) ORDER BY id DESC LIMIT ?2"))?
                    .query_map(params![k, limit], map)?
                    .collect(),
                None => conn
                    .prepare(&format!("SELECT {cols} FROM audit ORDER BY id DESC LIMIT ?1"))?
                    .query_map(params![limit], map)?
                    .collect(),
            }
        })
        .map_err(db_err("cannot read the audit log"))
    }

    /// The newest quarantine move of an object that is still held.
    pub fn newest_quarantine(
        &self,
        store: &str,
        resource_type: &str,
        key: &str,
    ) -> Result<Option<QuarantineRecord>> {
        self.with_conn(|conn| {
            conn.query_row(
                "SELECT id, store, resource_type, key, quarantine_key, moved_at, state, queue_id FROM quarantine
                 WHERE store = ?1 AND resource_type = ?2 AND key = ?3 AND state IN ('held', 'kept') ORDER BY moved_at DESC, id DESC LIMIT 1",
                params![store, resource_type, key],
                |r| {
                    Ok(QuarantineRecord {
                        id: r.get(0)?,
                        store: r.get(1)?,
                        resource_type: r.get(2)?,
                        key: r.get(3)?,
                        quarantine_key: r.get(4)?,
                        moved_at: r.get(5)?,
                        state: r.get(6)?,
                        queue_id: r.get(7)?,
                    })
                },
            )
            .optional()
        })
        .map_err(db_err("cannot read quarantine records"))
    }

    /// After a restore: the record is `restored`, its pending removal dropped, both audited.
    pub fn mark_restored(&self, rec: &QuarantineRecord, actor: &str) -> Result<()> {
        let now = rfc3339(Utc::now());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE quarantine SET state = 'restored' WHERE id = ?1",
                params![rec.id],
            )?;
            if let Some(q) = rec.queue_id {
                tx.execute(
                    "UPDATE queue SET state = 'dropped', outcome = 'restored', finished_at = ?1 WHERE id = ?2 AND state IN ('pending', 'failed')",
                    params![now, q],
                )?;
            }
            audit(
                &tx,
                &now,
                actor,
                (&rec.store, &rec.resource_type, &rec.key),
                "restored",
                Some(&format!("from {}", rec.quarantine_key)),
                rec.queue_id,
            )?;
            tx.commit()
        })
        .map_err(db_err("cannot record the restore"))
    }
}
