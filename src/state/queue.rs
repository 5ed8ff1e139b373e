//! The deletion queue, written once for both backends. Every decision about an entry is made by
//! `queue::transition`; here it is applied, in one transaction per batch, and only to entries the
//! worker still holds.

use async_trait::async_trait;
use chrono::Utc;

use super::{Mode, QueueStore, Row, State, Tx, context, int};
use crate::domain::queue::{
    Changed, Completion, Entry, Hold, NewEntry, QuarantineChange, QueueState, Reason, Retry,
    Selection, Stats,
};
use crate::domain::{ObjectId, ResourceType, Spelling};
use crate::error::{Error, Result};
use crate::time::rfc3339;

/// A claim older than this returns to `pending` (SPEC §6).
pub const CLAIM_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Row ids bound in one `IN (…)` list: far below both databases' parameter limits.
const ROW_IDS_PER_QUERY: usize = 500;

pub(crate) const ENTRY_COLUMNS: &str = "id, store, resource_type, key, reason, rule, row_id, client_id, scan_id, queued_at, uploaded_at, attempts, last_error, next_attempt_at, state, actor, original_key, quarantine_key, claim_token, in_flight";

pub(super) fn entry(mut r: Row) -> Result<Entry> {
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
        claim_token: r.int(18)?,
        reclaimed: r.int(19)? != 0,
    })
}

/// The database's clock, as our times are written.
pub(super) async fn db_now(tx: &mut dyn Tx, dialect: super::Dialect) -> Result<String> {
    let mut rows = tx.query(dialect.now_sql(), &[]).await?;
    match rows.pop() {
        Some(mut r) => r.text(0),
        None => Err(Error::State("the database did not tell its time".into())),
    }
}

fn parse_time(t: &str) -> Result<chrono::DateTime<Utc>> {
    crate::time::parse_rfc3339(t)
        .ok_or_else(|| Error::State(format!("`{t}` from the state database is not a time")))
}

/// Whether a quarantine key is taken in the store already: by a recorded copy, a copy's
/// removal, or another entry's move.
async fn spot_taken(tx: &mut dyn Tx, store: &str, rt: &str, q: &str, id: i64) -> Result<bool> {
    let rows = tx
        .query(
            // Three index look-ups: `quarantine_spot`, `queue_object`, `queue_spot`. The copies
            // are asked by key alone (a copy of that name in another store also counts as taken,
            // which only moves this one to the next folder), so that no planner, even one without
            // statistics yet, answers them by scanning every row of the store.
            "SELECT 1 FROM quarantine WHERE quarantine_key = $3
             UNION ALL SELECT 1 FROM queue WHERE store = $1 AND resource_type = $2 AND key = $3 AND id <> $4
             UNION ALL SELECT 1 FROM queue WHERE quarantine_key = $3 AND id <> $4",
            &[store.into(), rt.into(), q.into(), id.into()],
        )
        .await?;
    Ok(!rows.is_empty())
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
            "INSERT INTO queue (store, resource_type, key, reason, client_id, scan_id, queued_at, uploaded_at, next_attempt_at, actor, original_key, rule, row_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
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
                e.rule.as_str().into(),
                e.row_id.as_str().into(),
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
/// Whether it was still the worker's to write (claimed under the completion's token).
async fn apply(tx: &mut dyn Tx, actor: &str, now: &str, c: &Completion) -> Result<bool> {
    let u = &c.update;
    let due = u.next_attempt_at.map(rfc3339);
    // A finished entry is no longer in flight; one back to `pending` stays so when it was:
    // the next attempt looks at what this one may have done.
    let changed = tx.execute(
        "UPDATE queue SET state = $1, attempts = $2, last_error = COALESCE($3, last_error), next_attempt_at = COALESCE($4, next_attempt_at), outcome = COALESCE($5, outcome), finished_at = COALESCE($6, finished_at), claimed_by = NULL, claimed_at = NULL,
           in_flight = CASE WHEN $6 IS NULL THEN in_flight ELSE 0 END, quarantine_key = CASE WHEN $8 = 1 THEN NULL ELSE quarantine_key END
         WHERE id = $7 AND state = 'claimed' AND claim_token = $9",
        &[
            u.state.as_str().into(),
            i64::from(u.attempts).into(),
            u.last_error.as_deref().into(),
            due.as_deref().into(),
            u.outcome.as_deref().into(),
            u.finished.then_some(now).into(),
            c.id.into(),
            i64::from(u.forget_quarantine_key).into(),
            c.token.into(),
        ],
    )
    .await?;
    if changed == 0 {
        return Ok(false);
    }
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
            state,
        }) => {
            let Some(audit) = c.audit.first() else {
                return Err(Error::State("a quarantine move without its object".into()));
            };
            let moved = rfc3339(*moved_at);
            tx.execute(
                "INSERT INTO quarantine (store, resource_type, key, quarantine_key, moved_at, queue_id, state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    audit.object.store.as_str().into(),
                    audit.object.resource_type.as_str().into(),
                    audit.object.key.as_str().into(),
                    quarantine_key.as_str().into(),
                    moved.as_str().into(),
                    removal.into(),
                    state.as_str().into(),
                ],
            )
            .await?;
        }
        // A restored copy stays restored, whatever its removal's worker saw.
        Some(QuarantineChange::SetState(s)) => {
            tx.execute(
                "UPDATE quarantine SET state = $1 WHERE queue_id = $2 AND state <> 'restored'",
                &[s.as_str().into(), c.id.into()],
            )
            .await?;
        }
    }
    for a in &c.audit {
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
    Ok(true)
}

/// Why `queue drop` leaves an entry whose object an earlier attempt may have moved to the trash:
/// dropped, that copy would be nobody's (no record, left out of every listing). The worker
/// settles it — records the copy, or moves it back — when the entry is retried; an entry of a
/// store taken out of the configuration waits until the store is back.
fn refused_drop(id: i64, q: &str, store: &str) -> String {
    format!(
        "queue entry {id} may have moved its object to {q} in store `{store}` before it stopped; it is not dropped until that copy is found and recorded: `assetgc queue retry {id}` lets the worker settle it (with store `{store}` in the configuration)"
    )
}

impl State {
    /// Ids of `ids` that do not exist or cannot be changed, with why: the first one, if any.
    async fn refused_id(&self, ids: &[i64], retry: bool) -> Result<Option<String>> {
        let mut tx = self.begin(Mode::Read).await?;
        for &id in ids {
            let mut rows = tx
                .query(
                    "SELECT state, reason, next_attempt_at, quarantine_key, store FROM queue WHERE id = $1",
                    &[id.into()],
                )
                .await?;
            let why = match rows.pop() {
                None => Some(format!(
                    "queue entry {id} does not exist; `assetgc queue list` shows the ids"
                )),
                Some(mut r) => {
                    let (state, reason, at) = (r.text(0)?, r.text(1)?, r.text(2)?);
                    let trash = r
                        .opt_text(3)?
                        .filter(|_| reason != Reason::Quarantine.as_str());
                    if state != "failed" && state != "pending" {
                        Some(format!(
                            "queue entry {id} is {state}; only failed or pending entries can be {}",
                            if retry { "retried" } else { "dropped" }
                        ))
                    } else if retry && state == "pending" && reason == Reason::Quarantine.as_str() {
                        Some(format!(
                            "queue entry {id} removes a quarantined copy when `keep` is over ({at}); it is not brought forward"
                        ))
                    } else if let (false, Some(q)) = (retry, trash) {
                        Some(refused_drop(id, &q, &r.text(4)?))
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
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = parse_time(&db_now(tx.as_mut(), self.dialect()).await.map_err(&e)?)?;
        let cutoff = rfc3339(now.checked_sub_signed(CLAIM_TIMEOUT).unwrap_or(now));
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
        only_rule: Option<(Reason, &str)>,
    ) -> Result<(Vec<Entry>, chrono::DateTime<Utc>)> {
        let e = context("cannot claim queue entries");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = db_now(tx.as_mut(), self.dialect()).await.map_err(&e)?;
        let (reason, rule) = only_rule.map_or(("", ""), |(r, n)| (r.as_str(), n));
        let rows = tx
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue WHERE state = 'pending' AND next_attempt_at <= $1 AND ($3 = '' OR (reason = $3 AND rule = $4)) ORDER BY next_attempt_at, id LIMIT $2{}",
                    self.dialect().skip_locked()
                ),
                &[now.as_str().into(), int(n as u64), reason.into(), rule.into()],
            )
            .await
            .map_err(&e)?;
        let mut entries = rows.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        for en in &mut entries {
            en.state = QueueState::Claimed;
            en.claim_token += 1;
            tx.execute(
                "UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, claim_token = $3 WHERE id = $4",
                &[
                    worker.into(),
                    now.as_str().into(),
                    en.claim_token.into(),
                    en.id.into(),
                ],
            )
            .await
            .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)?;
        Ok((entries, parse_time(&now)?))
    }

    async fn hold_claims(
        &self,
        worker: &str,
        holds: &[Hold],
    ) -> Result<Vec<(i64, Option<String>)>> {
        let e = context("cannot renew claims");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = db_now(tx.as_mut(), self.dialect()).await.map_err(&e)?;
        let mut held = Vec::with_capacity(holds.len());
        for h in holds {
            let Some(mut r) = tx
                .query(
                    "UPDATE queue SET claimed_at = $1, in_flight = CASE WHEN $4 = 1 THEN 1 ELSE in_flight END
                     WHERE id = $2 AND state = 'claimed' AND claimed_by = $3 AND claim_token = $5
                     RETURNING quarantine_key, store, resource_type",
                    &[
                        now.as_str().into(),
                        h.id.into(),
                        worker.into(),
                        i64::from(h.start).into(),
                        h.token.into(),
                    ],
                )
                .await
                .map_err(&e)?
                .pop()
            else {
                continue;
            };
            let mut q = r.opt_text(0)?;
            if let (None, Some(spot), true) = (&q, &h.spot, h.start) {
                let (store, rt) = (r.text(1)?, r.text(2)?);
                let mut n = 1;
                let mut key = spot.candidate(n);
                while spot_taken(tx.as_mut(), &store, &rt, &key, h.id)
                    .await
                    .map_err(&e)?
                {
                    n += 1;
                    key = spot.candidate(n);
                }
                tx.execute(
                    "UPDATE queue SET quarantine_key = $1 WHERE id = $2",
                    &[key.as_str().into(), h.id.into()],
                )
                .await
                .map_err(&e)?;
                q = Some(key);
            }
            held.push((h.id, q));
        }
        tx.commit().await.map_err(&e)?;
        Ok(held)
    }

    async fn finish(&self, worker: &str, actor: &str, done: &[Completion]) -> Result<()> {
        let e = context("cannot record deletion outcomes");
        let now = rfc3339(Utc::now());
        let mine_sql = format!(
            "SELECT 1 FROM queue WHERE id = $1 AND state = 'claimed' AND claimed_by = $2 AND claim_token = $3{}",
            self.dialect().for_update()
        );
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        for c in done {
            // A claim taken over meanwhile writes nothing: not its row, not its audit rows,
            // records or removals.
            let mine = !tx
                .query(&mine_sql, &[c.id.into(), worker.into(), c.token.into()])
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
                    Changed::Dropped | Changed::Refused => "dropped",
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

    async fn rule_row_entries(
        &self,
        reason: Reason,
        rule: &str,
        row_ids: &[String],
    ) -> Result<Vec<(Entry, Option<String>)>> {
        let e = context("cannot read the rule's queue entries");
        let mut newest: std::collections::HashMap<(String, ObjectId), (Entry, Option<String>)> =
            std::collections::HashMap::new();
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        for chunk in row_ids.chunks(ROW_IDS_PER_QUERY) {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS}, outcome FROM queue WHERE reason = $1 AND rule = $2 AND row_id IN ({}) ORDER BY id",
                super::placeholders(3, chunk.len())
            );
            let mut args: Vec<super::Arg<'_>> = vec![reason.as_str().into(), rule.into()];
            args.extend(chunk.iter().map(|id| super::Arg::from(id.as_str())));
            for mut r in tx.query(&sql, &args).await.map_err(&e)? {
                let outcome = r.opt_text(20)?;
                let en = entry(r)?;
                // Ascending ids: a later entry of the same (row, object) replaces the earlier.
                newest.insert((en.row_id.clone(), en.object.clone()), (en, outcome));
            }
        }
        tx.commit().await.map_err(&e)?;
        let mut out: Vec<(Entry, Option<String>)> = newest.into_values().collect();
        out.sort_by_key(|(en, _)| en.id);
        Ok(out)
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
                    "UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = $1 WHERE id = $2 AND state IN ('failed', 'pending') AND (quarantine_key IS NULL OR reason = $3) RETURNING store, resource_type, key",
                    &[now.as_str().into(), id.into(), Reason::Quarantine.as_str().into()],
                )
                .await
                .map_err(&e)?
                .pop()
            else {
                changed.push(Changed::Refused);
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

/// `restore`'s hold on a quarantined copy's removal (SPEC §6 invariant 4): cancelled before the
/// copy moves, so that no worker removes the copy or marks its record `removed` meanwhile.
impl State {
    /// Cancels the pending (or failed) removal `id` of a copy that `restore` is about to move.
    /// `Err(Usage)` when a worker holds it right now; `Ok(false)` when there is none to cancel.
    pub async fn cancel_removal(&self, id: i64) -> Result<bool> {
        let e = context("cannot hold the copy's removal");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = db_now(tx.as_mut(), self.dialect()).await.map_err(&e)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT state, key FROM queue WHERE id = $1{}",
                    self.dialect().for_update()
                ),
                &[id.into()],
            )
            .await
            .map_err(&e)?;
        let Some(mut r) = rows.into_iter().next() else {
            return Ok(false);
        };
        let (state, key) = (r.text(0)?, r.text(1)?);
        if state == "claimed" {
            return Err(Error::Usage(format!(
                "the removal of {key} (queue entry {id}) is running now; try again in a minute"
            )));
        }
        let n = tx
            .execute(
                "UPDATE queue SET state = 'dropped', outcome = 'restored', finished_at = $1 WHERE id = $2 AND state IN ('pending', 'failed')",
                &[now.as_str().into(), id.into()],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(n == 1)
    }

    /// The restore did not happen: the cancelled removal `id` waits again.
    pub async fn reinstate_removal(&self, id: i64) -> Result<()> {
        let e = context("cannot put the copy's removal back");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE queue SET state = 'pending', outcome = NULL, finished_at = NULL WHERE id = $1 AND state = 'dropped' AND outcome = 'restored'",
            &[id.into()],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// A move to the trash made outside the worker (`restore --overwrite` moving aside what it
    /// replaces): the record, the copy's removal due at `remove_at`, and the audit row.
    pub async fn record_move(
        &self,
        actor: &str,
        object: &ObjectId,
        quarantine_key: &str,
        moved_at: chrono::DateTime<Utc>,
        remove_at: chrono::DateTime<Utc>,
        why: &str,
    ) -> Result<()> {
        let e = context("cannot record the move");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let removal = NewEntry {
            object: ObjectId::new(
                object.store.clone(),
                object.resource_type,
                quarantine_key.to_string(),
            ),
            reason: Reason::Quarantine,
            rule: String::new(),
            row_id: String::new(),
            client_id: String::new(),
            scan_id: None,
            uploaded_at: None,
            next_attempt_at: remove_at,
            original_key: Some(object.key.clone()),
        };
        insert_entry(tx.as_mut(), actor, &now, &removal)
            .await
            .map_err(&e)?;
        let queue_id = live_entry(tx.as_mut(), &removal.object, 0)
            .await
            .map_err(&e)?;
        let moved = rfc3339(moved_at);
        tx.execute(
            "INSERT INTO quarantine (store, resource_type, key, quarantine_key, moved_at, queue_id) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                object.store.as_str().into(),
                object.resource_type.as_str().into(),
                object.key.as_str().into(),
                quarantine_key.into(),
                moved.as_str().into(),
                queue_id.into(),
            ],
        )
        .await
        .map_err(&e)?;
        let detail = format!(
            "moved to {quarantine_key} ({why}); removed for good after {}",
            rfc3339(remove_at)
        );
        audit(
            tx.as_mut(),
            &now,
            actor,
            object,
            "quarantined",
            Some(&detail),
            queue_id,
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// Whether a quarantine key is free of records and entries.
    pub async fn trash_key_free(&self, object: &ObjectId, quarantine_key: &str) -> Result<bool> {
        let mut tx = self.begin(Mode::Read).await?;
        let taken = spot_taken(
            tx.as_mut(),
            &object.store,
            object.resource_type.as_str(),
            quarantine_key,
            0,
        )
        .await?;
        tx.commit().await?;
        Ok(!taken)
    }
}
