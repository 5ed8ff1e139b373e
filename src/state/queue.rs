//! The deletion queue, written once for both backends. Every decision about an entry is made by
//! `queue::transition`; here it is applied, in one transaction per batch, and only to entries the
//! worker still holds.

use async_trait::async_trait;
use chrono::Utc;

use super::{Arg, Mode, QueueStore, Row, State, Tx, context, int, placeholders};
use crate::domain::queue::{
    Changed, Completion, Entry, NewEntry, QuarantineChange, QueueState, Reason, Retry, Selection,
    Stats,
};
use crate::domain::{ObjectId, ResourceType, Spelling};
use crate::error::{Error, Result};
use crate::time::rfc3339;

/// A claim older than this returns to `pending` (SPEC §6).
pub const CLAIM_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

pub(crate) const ENTRY_COLUMNS: &str = "id, store, resource_type, key, reason, rule, row_id, client_id, scan_id, queued_at, uploaded_at, attempts, last_error, next_attempt_at, state, actor, original_key, quarantine_key";

/// Ids one statement's `IN (…)` list carries.
const IN_LIST: usize = 500;

fn entry(mut r: Row) -> Result<Entry> {
    let rt = r.text(2)?;
    Ok(Entry {
        id: r.int(0)?,
        object: ObjectId {
            store: r.text(1)?,
            resource_type: ResourceType::parse_cloudinary(&rt).unwrap_or(ResourceType::Plain),
            key: r.text(3)?,
        },
        reason: r.word(4, "queue reason")?,
        rule: r.text(5)?,
        row_id: r.text(6)?,
        client_id: r.text(7)?,
        scan_id: r.opt_int(8)?,
        queued_at: r.time(9)?,
        uploaded_at: r.opt_time(10)?,
        attempts: u32::try_from(r.int(11)?).unwrap_or(u32::MAX),
        last_error: r.opt_text(12)?,
        next_attempt_at: r.time(13)?,
        state: r.word(14, "queue state")?,
        actor: r.text(15)?,
        original_key: r.opt_text(16)?,
        quarantine_key: r.opt_text(17)?,
        reclaimed: false,
    })
}

/// One audit row, in the caller's transaction.
pub(super) async fn audit(
    tx: &mut dyn Tx,
    at: &str,
    actor: &str,
    object: &ObjectId,
    outcome: &str,
    detail: Option<&str>,
    queue_id: Option<i64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, store, resource_type, key, outcome, detail, queue_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            at.into(),
            actor.into(),
            object.store.as_str().into(),
            object.resource_type.as_str().into(),
            object.key.as_str().into(),
            outcome.into(),
            detail.into(),
            queue_id.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Queues one entry unless its object has a live one; whether it was added.
async fn insert_entry(tx: &mut dyn Tx, actor: &str, now: &str, e: &NewEntry) -> Result<bool> {
    let uploaded = e.uploaded_at.map(rfc3339);
    let due = rfc3339(e.next_attempt_at);
    let added = tx
        .execute(
            "INSERT INTO queue (store, resource_type, key, reason, client_id, scan_id, queued_at, uploaded_at, next_attempt_at, actor, original_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
            &[
                e.object.store.as_str().into(),
                e.object.resource_type.as_str().into(),
                e.object.key.as_str().into(),
                e.reason.as_str().into(),
                e.client_id.as_str().into(),
                e.scan_id.into(),
                now.into(),
                uploaded.as_deref().into(),
                due.as_str().into(),
                actor.into(),
                e.original_key.as_deref().into(),
            ],
        )
        .await?;
    Ok(added == 1)
}

/// The live (`pending` or `claimed`) entry of an object, other than `except`.
async fn live_entry(tx: &mut dyn Tx, object: &ObjectId, except: i64) -> Result<Option<i64>> {
    let rows = tx
        .query(
            "SELECT id FROM queue WHERE store = $1 AND resource_type = $2 AND key = $3 AND state IN ('pending', 'claimed') AND id <> $4",
            &[
                object.store.as_str().into(),
                object.resource_type.as_str().into(),
                object.key.as_str().into(),
                except.into(),
            ],
        )
        .await?;
    rows.first().map(|r| r.int(0)).transpose()
}

/// Applies one completion: the entry's row, the removal of its quarantined copy, the quarantine
/// record and the audit row.
async fn apply(tx: &mut dyn Tx, actor: &str, now: &str, c: &Completion) -> Result<()> {
    let u = &c.update;
    let due = u.next_attempt_at.map(rfc3339);
    tx.execute(
        "UPDATE queue SET state = $1, attempts = $2, last_error = COALESCE($3, last_error), next_attempt_at = COALESCE($4, next_attempt_at), outcome = COALESCE($5, outcome), finished_at = COALESCE($6, finished_at), claimed_by = NULL, claimed_at = NULL WHERE id = $7",
        &[
            u.state.as_str().into(),
            i64::from(u.attempts).into(),
            u.last_error.as_deref().into(),
            due.as_deref().into(),
            u.outcome.as_deref().into(),
            u.finished.then_some(now).into(),
            c.id.into(),
        ],
    )
    .await?;
    let removal = match &c.removal {
        None => None,
        // Added now, or queued already (by hand): the live entry removes the copy.
        Some(r) => {
            insert_entry(tx, actor, now, r).await?;
            live_entry(tx, &r.object, 0).await?
        }
    };
    match &c.quarantine {
        None => {}
        Some(QuarantineChange::Record {
            quarantine_key,
            moved_at,
        }) => {
            let Some(audit) = &c.audit else {
                return Err(Error::State("a quarantine move without its object".into()));
            };
            let moved = rfc3339(*moved_at);
            tx.execute(
                "INSERT INTO quarantine (store, resource_type, key, quarantine_key, moved_at, queue_id) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    audit.object.store.as_str().into(),
                    audit.object.resource_type.as_str().into(),
                    audit.object.key.as_str().into(),
                    quarantine_key.as_str().into(),
                    moved.as_str().into(),
                    removal.into(),
                ],
            )
            .await?;
        }
        Some(QuarantineChange::SetState(s)) => {
            tx.execute(
                "UPDATE quarantine SET state = $1 WHERE queue_id = $2",
                &[s.as_str().into(), c.id.into()],
            )
            .await?;
        }
    }
    if let Some(a) = &c.audit {
        audit(
            tx,
            now,
            actor,
            &a.object,
            &a.outcome,
            a.detail.as_deref(),
            Some(c.id),
        )
        .await?;
    }
    Ok(())
}

impl State {
    /// Ids of `ids` that do not exist or cannot be changed, with why: the first one, if any.
    async fn refused_id(&self, ids: &[i64], retry: bool) -> Result<Option<String>> {
        let mut tx = self.begin(Mode::Read).await?;
        for &id in ids {
            let mut rows = tx
                .query(
                    "SELECT state, reason, next_attempt_at FROM queue WHERE id = $1",
                    &[id.into()],
                )
                .await?;
            let why = match rows.pop() {
                None => Some(format!(
                    "queue entry {id} does not exist; `assetgc queue list` shows the ids"
                )),
                Some(mut r) => {
                    let (state, reason, at) = (r.text(0)?, r.text(1)?, r.text(2)?);
                    if state != "failed" && state != "pending" {
                        Some(format!(
                            "queue entry {id} is {state}; only failed or pending entries can be {}",
                            if retry { "retried" } else { "dropped" }
                        ))
                    } else if retry && state == "pending" && reason == Reason::Quarantine.as_str() {
                        Some(format!(
                            "queue entry {id} removes a quarantined copy when `keep` is over ({at}); it is not brought forward"
                        ))
                    } else {
                        None
                    }
                }
            };
            if why.is_some() {
                return Ok(why);
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// The selected ids, in the change's transaction.
    async fn selected(&self, tx: &mut dyn Tx, sel: &Selection) -> Result<Vec<i64>> {
        match sel {
            Selection::Ids(ids) => Ok(ids.clone()),
            Selection::AllFailed => tx
                .query(
                    &format!(
                        "SELECT id FROM queue WHERE state = 'failed' ORDER BY id{}",
                        self.dialect().for_update()
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.int(0))
                .collect(),
        }
    }
}

#[async_trait]
impl QueueStore for State {
    async fn enqueue(&self, actor: &str, entries: &[NewEntry]) -> Result<(u64, u64)> {
        let e = context("cannot queue deletions");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let mut added = 0;
        for entry in entries {
            if insert_entry(tx.as_mut(), actor, &now, entry)
                .await
                .map_err(&e)?
            {
                added += 1;
            }
        }
        tx.commit().await.map_err(&e)?;
        Ok((added, entries.len() as u64 - added))
    }

    async fn release_stale_claims(
        &self,
        is_dead: &(dyn for<'x> Fn(&'x str) -> bool + Sync),
    ) -> Result<u64> {
        let e = context("cannot release stale claims");
        let cutoff = rfc3339(Utc::now() - CLAIM_TIMEOUT);
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let holders = tx
            .query(
                "SELECT DISTINCT claimed_by FROM queue WHERE state = 'claimed'",
                &[],
            )
            .await
            .map_err(&e)?;
        let mut released = 0;
        for mut h in holders {
            let holder = h.opt_text(0)?.unwrap_or_default();
            released += if is_dead(&holder) {
                tx.execute(
                    "UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = $1",
                    &[holder.as_str().into()],
                )
                .await
            } else {
                tx.execute(
                    "UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = $1 AND claimed_at < $2",
                    &[holder.as_str().into(), cutoff.as_str().into()],
                )
                .await
            }
            .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)?;
        Ok(released)
    }

    async fn claim(
        &self,
        worker: &str,
        n: usize,
        quarantine: &(dyn for<'x> Fn(&'x Entry) -> Option<String> + Sync),
    ) -> Result<Vec<Entry>> {
        let e = context("cannot claim queue entries");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2{}",
                    self.dialect().skip_locked()
                ),
                &[now.as_str().into(), int(n as u64)],
            )
            .await
            .map_err(&e)?;
        let mut entries = rows.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        for en in &mut entries {
            en.reclaimed = en.quarantine_key.is_some();
            if en.quarantine_key.is_none() {
                en.quarantine_key = quarantine(en);
            }
            en.state = QueueState::Claimed;
            tx.execute(
                "UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, quarantine_key = $3 WHERE id = $4",
                &[
                    worker.into(),
                    now.as_str().into(),
                    en.quarantine_key.as_deref().into(),
                    en.id.into(),
                ],
            )
            .await
            .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)?;
        Ok(entries)
    }

    async fn hold_claims(&self, worker: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let e = context("cannot renew claims");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let mut held = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_LIST) {
            let sql = format!(
                "UPDATE queue SET claimed_at = $1 WHERE state = 'claimed' AND claimed_by = $2 AND id IN ({}) RETURNING id",
                placeholders(3, chunk.len())
            );
            let mut args: Vec<Arg<'_>> = vec![now.as_str().into(), worker.into()];
            args.extend(chunk.iter().map(|&id| Arg::from(id)));
            for r in tx.query(&sql, &args).await.map_err(&e)? {
                held.push(r.int(0)?);
            }
        }
        tx.commit().await.map_err(&e)?;
        Ok(held)
    }

    async fn finish(&self, worker: &str, actor: &str, done: &[Completion]) -> Result<()> {
        let e = context("cannot record deletion outcomes");
        let now = rfc3339(Utc::now());
        let mine_sql = format!(
            "SELECT 1 FROM queue WHERE id = $1 AND state = 'claimed' AND claimed_by = $2{}",
            self.dialect().for_update()
        );
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        for c in done {
            let mine = !tx
                .query(&mine_sql, &[c.id.into(), worker.into()])
                .await
                .map_err(&e)?
                .is_empty();
            if mine {
                apply(tx.as_mut(), actor, &now, c).await.map_err(&e)?;
            }
        }
        tx.commit().await.map_err(&e)
    }

    async fn queue_stats(&self) -> Result<Stats> {
        let e = context("cannot read the queue");
        let now = rfc3339(Utc::now());
        let mut s = Stats::default();
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        for mut r in tx
            .query("SELECT state, COUNT(*) FROM queue GROUP BY state", &[])
            .await
            .map_err(&e)?
        {
            let n = r.count(1)?;
            match QueueState::parse(&r.text(0)?) {
                Some(QueueState::Pending | QueueState::Claimed) => s.total_pending += n,
                Some(QueueState::Failed) => s.total_failed = n,
                Some(QueueState::Done) => s.total_done = n,
                Some(QueueState::Dropped) => s.total_dropped = n,
                None => {}
            }
        }
        if let Some(mut r) = tx
            .query(
                "SELECT MIN(queued_at), MAX(queued_at), MIN(CASE WHEN state = 'pending' THEN next_attempt_at END) FROM queue WHERE state IN ('pending', 'claimed')",
                &[],
            )
            .await
            .map_err(&e)?
            .pop()
        {
            s.oldest_queued = r.opt_text(0)?;
            s.newest_queued = r.opt_text(1)?;
            s.next_due = r.opt_text(2)?;
        }
        s.due_now = tx
            .query(
                "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND next_attempt_at <= $1",
                &[now.as_str().into()],
            )
            .await
            .map_err(&e)?
            .first()
            .map_or(Ok(0), |r| r.count(0))?;
        for r in tx
            .query(
                "SELECT attempts, COUNT(*) FROM queue WHERE state IN ('pending', 'claimed') GROUP BY attempts ORDER BY attempts",
                &[],
            )
            .await
            .map_err(&e)?
        {
            s.by_attempts
                .push((u32::try_from(r.int(0)?).unwrap_or(u32::MAX), r.count(1)?));
        }
        tx.commit().await?;
        Ok(s)
    }

    async fn queue_list(&self, failed: bool, limit: usize) -> Result<Vec<Entry>> {
        let states = if failed {
            "('failed')"
        } else {
            "('pending', 'claimed')"
        };
        self.read(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM queue WHERE state IN {states} ORDER BY id LIMIT $1"
            ),
            &[int(limit as u64)],
        )
        .await
        .map_err(context("cannot read the queue"))?
        .into_iter()
        .map(entry)
        .collect()
    }

    async fn queue_retry(
        &self,
        sel: &Selection,
        actor: &str,
        decide: &(dyn for<'x> Fn(&'x Entry, Option<i64>) -> Retry + Sync),
    ) -> Result<Vec<Changed>> {
        if let Selection::Ids(ids) = sel
            && let Some(why) = self.refused_id(ids, true).await?
        {
            return Err(Error::Usage(why));
        }
        let e = context("cannot change queue entries");
        let now = Utc::now();
        let at = rfc3339(now);
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let mut changed = Vec::new();
        for id in self.selected(tx.as_mut(), sel).await.map_err(&e)? {
            let Some(row) = tx
                .query(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM queue WHERE id = $1{}",
                        self.dialect().for_update()
                    ),
                    &[id.into()],
                )
                .await
                .map_err(&e)?
                .pop()
            else {
                continue;
            };
            let entry = entry(row)?;
            let other = live_entry(tx.as_mut(), &entry.object, id)
                .await
                .map_err(&e)?;
            let (n, what, detail) = match decide(&entry, other) {
                Retry::DropForNewer { other } => (
                    tx.execute(
                        "UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = $1 WHERE id = $2 AND state IN ('failed', 'pending')",
                        &[at.as_str().into(), id.into()],
                    )
                    .await
                    .map_err(&e)?,
                    Changed::Dropped,
                    Some(format!("queued again as entry {other}")),
                ),
                Retry::Due(due) => (
                    tx.execute(
                        "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $1, finished_at = NULL, outcome = NULL WHERE id = $2 AND (state = 'failed' OR (state = 'pending' AND reason <> $3))",
                        &[rfc3339(due).as_str().into(), id.into(), Reason::Quarantine.as_str().into()],
                    )
                    .await
                    .map_err(&e)?,
                    Changed::Retried,
                    None,
                ),
            };
            if n == 1 {
                let word = match what {
                    Changed::Retried => "retried",
                    Changed::Dropped => "dropped",
                };
                audit(
                    tx.as_mut(),
                    &at,
                    actor,
                    &entry.object,
                    word,
                    detail.as_deref(),
                    Some(id),
                )
                .await
                .map_err(&e)?;
                changed.push(what);
            }
        }
        tx.commit().await.map_err(&e)?;
        Ok(changed)
    }

    async fn queue_drop(&self, sel: &Selection, actor: &str) -> Result<Vec<Changed>> {
        if let Selection::Ids(ids) = sel
            && let Some(why) = self.refused_id(ids, false).await?
        {
            return Err(Error::Usage(why));
        }
        let e = context("cannot change queue entries");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let mut changed = Vec::new();
        for id in self.selected(tx.as_mut(), sel).await.map_err(&e)? {
            let Some(mut r) = tx
                .query(
                    "UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = $1 WHERE id = $2 AND state IN ('failed', 'pending') RETURNING store, resource_type, key",
                    &[now.as_str().into(), id.into()],
                )
                .await
                .map_err(&e)?
                .pop()
            else {
                continue;
            };
            let rt = r.text(1)?;
            let object = ObjectId {
                store: r.text(0)?,
                resource_type: ResourceType::parse_cloudinary(&rt).unwrap_or(ResourceType::Plain),
                key: r.text(2)?,
            };
            tx.execute(
                "UPDATE quarantine SET state = 'kept' WHERE queue_id = $1",
                &[id.into()],
            )
            .await
            .map_err(&e)?;
            audit(tx.as_mut(), &now, actor, &object, "dropped", None, Some(id))
                .await
                .map_err(&e)?;
            changed.push(Changed::Dropped);
        }
        tx.commit().await.map_err(&e)?;
        Ok(changed)
    }
}
