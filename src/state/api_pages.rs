//! The API's paged reads of the queue and the audit log (SPEC §8: `?limit=&cursor=`), and the
//! tally of a bulk cleanup's entries. Paging is by keyset on the row id (never OFFSET): a page
//! starts after the id the previous one ended on, so rows added or changed between two calls
//! neither repeat nor shift the pages.

use super::queue::{ENTRY_COLUMNS, entry};
use super::{Mode, State, context, int};
use crate::domain::queue::{AuditRow, Entry, QueueState};
use crate::domain::{ResourceType, Spelling};
use crate::error::Result;

/// One page of rows: the rows, whether more follow, and how many match in all.
#[derive(Debug, Clone)]
pub struct RowPage<T> {
    pub items: Vec<T>,
    pub more: bool,
    pub total: u64,
}

/// How the entries a bulk cleanup queued stand now, by state and outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanTally {
    pub deleted: u64,
    pub quarantined: u64,
    pub already_gone: u64,
    /// Dropped because a reference names the key again (`referenced`, `kept: shared`).
    pub referenced: u64,
    /// Dropped otherwise (by a person, an `ignore` glob, too recent).
    pub dropped: u64,
    pub failed: u64,
    pub pending: u64,
    /// Of the pending ones: due now (a worker is about to take them, or holds them locked).
    pub due: u64,
    pub claimed: u64,
}

fn page<T>(mut rows: Vec<T>, limit: u32, total: u64) -> RowPage<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    RowPage {
        items: rows,
        more,
        total,
    }
}

impl State {
    /// Queue entries in id order after `after`, optionally of one state.
    pub async fn queue_page(
        &self,
        state: Option<QueueState>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<RowPage<Entry>> {
        let e = context("cannot read the queue");
        let state = state.map_or("", QueueState::as_str);
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue WHERE ($1 = '' OR state = $1) AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[
                    state.into(),
                    after.unwrap_or(0).into(),
                    int(u64::from(limit) + 1),
                ],
            )
            .await
            .map_err(&e)?;
        let total = tx
            .query(
                "SELECT COUNT(*) FROM queue WHERE ($1 = '' OR state = $1)",
                &[state.into()],
            )
            .await
            .map_err(&e)?
            .first()
            .map_or(Ok(0), |r| r.count(0))?;
        tx.commit().await.map_err(&e)?;
        let entries = rows.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        Ok(page(entries, limit, total))
    }

    /// Audit rows newest first, before the id `before`; with `key`, that key's rows and those
    /// of its quarantined copies (as `assetgc audit --key` reads them).
    pub async fn audit_page(
        &self,
        key: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<RowPage<AuditRow>> {
        let e = context("cannot read the audit log");
        let cols = "id, at, actor, store, resource_type, key, outcome, detail, queue_id";
        let filter = "(key = $1 OR queue_id IN (SELECT id FROM queue WHERE original_key = $1))";
        let before = before.unwrap_or(i64::MAX);
        let fetch = int(u64::from(limit) + 1);
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        let (rows, count) = match key {
            Some(k) => (
                tx.query(
                    &format!(
                        "SELECT {cols} FROM audit WHERE {filter} AND id < $2 ORDER BY id DESC LIMIT $3"
                    ),
                    &[k.into(), before.into(), fetch],
                )
                .await
                .map_err(&e)?,
                tx.query(
                    &format!("SELECT COUNT(*) FROM audit WHERE {filter}"),
                    &[k.into()],
                )
                .await
                .map_err(&e)?,
            ),
            None => (
                tx.query(
                    &format!("SELECT {cols} FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2"),
                    &[before.into(), fetch],
                )
                .await
                .map_err(&e)?,
                tx.query("SELECT COUNT(*) FROM audit", &[])
                    .await
                    .map_err(&e)?,
            ),
        };
        tx.commit().await.map_err(&e)?;
        let total = count.first().map_or(Ok(0), |r| r.count(0))?;
        let items = rows
            .into_iter()
            .map(|mut r| {
                let rt = r.text(4)?;
                Ok(AuditRow {
                    id: r.int(0)?,
                    at: r.text(1)?,
                    actor: r.text(2)?,
                    store: r.text(3)?,
                    resource_type: ResourceType::parse_cloudinary(&rt)
                        .unwrap_or(ResourceType::Plain),
                    key: r.text(5)?,
                    outcome: r.text(6)?,
                    detail: r.opt_text(7)?,
                    queue_id: r.opt_int(8)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, limit, total))
    }

    /// The highest queue id so far (0 for an empty queue): a bulk cleanup's entries are those
    /// of its policies, queued by its actor, between the ids before and after it queued.
    pub async fn max_queue_id(&self) -> Result<i64> {
        let rows = self
            .read("SELECT COALESCE(MAX(id), 0) FROM queue", &[])
            .await
            .map_err(context("cannot read the queue"))?;
        rows.first().map_or(Ok(0), |r| r.int(0))
    }

    /// How the entries with ids in `(after, upto]` that policy `rule` queued as `actor` stand.
    pub async fn clean_tally(
        &self,
        after: i64,
        upto: i64,
        actor: &str,
        rule: &str,
    ) -> Result<CleanTally> {
        let now = crate::time::rfc3339(chrono::Utc::now());
        let rows = self
            .read(
                "SELECT state, COALESCE(outcome, ''), CASE WHEN next_attempt_at <= $5 THEN 1 ELSE 0 END, COUNT(*) FROM queue
                 WHERE id > $1 AND id <= $2 AND reason = 'clean' AND rule = $3 AND actor = $4 GROUP BY 1, 2, 3",
                &[after.into(), upto.into(), rule.into(), actor.into(), now.as_str().into()],
            )
            .await
            .map_err(context("cannot read the queue"))?;
        let mut t = CleanTally::default();
        for mut r in rows {
            let n = r.count(3)?;
            let due = r.int(2)? == 1;
            let (state, outcome) = (r.text(0)?, r.text(1)?);
            if due && state == QueueState::Pending.as_str() {
                t.due += n;
            }
            let slot = match (QueueState::parse(&state), outcome.as_str()) {
                (Some(QueueState::Done), "quarantined") => &mut t.quarantined,
                (Some(QueueState::Done), "already_gone") => &mut t.already_gone,
                (Some(QueueState::Done), _) => &mut t.deleted,
                (Some(QueueState::Dropped), "referenced" | "kept: shared") => &mut t.referenced,
                (Some(QueueState::Dropped), _) => &mut t.dropped,
                (Some(QueueState::Failed), _) => &mut t.failed,
                (Some(QueueState::Claimed), _) => &mut t.claimed,
                (Some(QueueState::Pending) | None, _) => &mut t.pending,
            };
            *slot += n;
        }
        Ok(t)
    }
}
