//! The state database: every scan with its findings (SPEC §5), the API budgets, the deletion
//! queue, the audit log and the quarantine records (SPEC §6). SQLite by default, created when
//! missing; PostgreSQL (schema `assetgc`) for instances that share one.
//!
//! One layer, written once: the operations live in [`scans`], [`queue`], [`audit`] and
//! [`budget`] as SQL text with `$N` placeholders, run through a small [`Tx`] that each backend
//! implements ([`sqlite`], [`postgres`]). The dialects differ only where [`Dialect`] says (row
//! locks for claims); placeholders are rewritten for SQLite by its backend. Consumers see narrow
//! traits per concern ([`ScanLog`], [`QueueStore`], [`AuditLog`], [`QuarantineLog`],
//! [`BudgetLog`], the last one defined beside the budget it keeps), all implemented by [`State`]; jobs and API tokens will get theirs the same way.
//! Migrations: `migrations/sqlite` and `migrations/postgres`, numbered in step.

mod api_pages;
mod audit;
mod budget;
mod cleanups;
pub mod findings_pages;
mod jobs;
mod metrics;
mod notifications;
mod postgres;
mod queue;
mod scans;
mod sqlite;
mod tokens;
mod ui_sessions;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::StateUrl;
use crate::domain::ObjectId;
use crate::domain::queue::{
    AuditRow, Changed, Completion, Entry, Hold, NewEntry, QuarantineRecord, Retry, Selection, Stats,
};
use crate::domain::scan::{Findings, ScanMode, Window};
use crate::error::{Error, Result};

pub use crate::domain::budget::BudgetLog;
pub use api_pages::{CleanTally, RowPage};
pub use cleanups::CleanupRecord;
pub use jobs::{JobRun, RunEnd, Start};
pub use metrics::{Figures, JobRuns, LatestScan};
pub use notifications::NotificationRecord;
pub use queue::CLAIM_TIMEOUT;
pub use scans::ScanRecord;
pub use tokens::StoredToken;
pub use ui_sessions::UiSession;

/// One value bound to a statement. Nulls carry their type: PostgreSQL needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(Some(s))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(Some(s))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(Some(n))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(n: Option<i64>) -> Self {
        Arg::Int(n)
    }
}

/// A count or a size as a column value; past i64 (never, in practice) it saturates.
pub(crate) fn int(n: u64) -> Arg<'static> {
    Arg::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// One column of a result row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// A result row; columns are read by position, in the order the statement names them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Value>);

impl Row {
    fn bad(&self, i: usize, want: &str) -> Error {
        Error::State(format!(
            "column {i} of a state row is {:?}, not {want}",
            self.0.get(i)
        ))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        match self.0.get(i) {
            Some(Value::Int(n)) => Ok(*n),
            _ => Err(self.bad(i, "an integer")),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// A count: never negative in our tables; a negative one reads as 0.
    pub fn count(&self, i: usize) -> Result<u64> {
        Ok(u64::try_from(self.int(i)?).unwrap_or(0))
    }

    /// Moves a text column out of the row.
    pub fn text(&mut self, i: usize) -> Result<String> {
        match self.0.get_mut(i) {
            Some(Value::Text(s)) => Ok(std::mem::take(s)),
            _ => Err(self.bad(i, "text")),
        }
    }

    pub fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A time column as the state database writes them (RFC 3339).
    pub fn time(&mut self, i: usize) -> Result<DateTime<Utc>> {
        let t = self.text(i)?;
        crate::time::parse_rfc3339(&t)
            .ok_or_else(|| Error::State(format!("`{t}` in the state database is not a time")))
    }

    pub fn opt_time(&mut self, i: usize) -> Result<Option<DateTime<Utc>>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.time(i).map(Some),
        }
    }

    /// A closed word (a state, a mode) read back typed.
    pub fn word<T: crate::domain::Spelling>(&mut self, i: usize, what: &str) -> Result<T> {
        let s = self.text(i)?;
        T::parse(&s)
            .ok_or_else(|| Error::State(format!("`{s}` in the state database is not a {what}")))
    }
}

/// Where the SQL of the two backends differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Appended to the claim's `SELECT`: SQLite's `BEGIN IMMEDIATE` already holds the one write
    /// lock, PostgreSQL takes row locks and skips rows another worker holds.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The database's clock as our times are written (RFC 3339 UTC, whole seconds). Claims
    /// compare with it, so that workers on hosts whose clocks differ agree on what is due and
    /// which claims are stale.
    pub fn now_sql(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
            Dialect::Postgres => {
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            }
        }
    }

    /// Appended to a `SELECT` whose rows the transaction then changes.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// Says which state operation failed, in front of the database's own words.
pub(crate) fn context(what: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::State(m) => Error::State(format!("{what}: {m}")),
        other => other,
    }
}

/// `$from, $from+1, …` for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A transaction on the state database. Dropped without [`Tx::commit`], it rolls back.
#[async_trait]
pub(crate) trait Tx: Send {
    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;
    async fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>>;
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Reads only, or writes: SQLite takes its write lock up front for the latter (`BEGIN
/// IMMEDIATE`), so that two writers never both read the same due entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

#[async_trait]
pub(crate) trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    fn describe(&self) -> String;
    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>>;
    async fn close(&self);
}

/// The state database of a process: cheap to clone, `'static`, shared by every operation.
#[derive(Clone)]
pub struct State {
    db: Arc<dyn Backend>,
}

impl State {
    pub async fn open(url: &StateUrl) -> Result<State> {
        let db: Arc<dyn Backend> = match url {
            StateUrl::Sqlite(path) => Arc::new(sqlite::SqliteBackend::open(path).await?),
            StateUrl::Postgres(url) => Arc::new(postgres::PgBackend::open(url.expose()).await?),
        };
        Ok(State { db })
    }

    /// Where the state lives, for messages (no password).
    pub fn describe(&self) -> String {
        self.db.describe()
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    pub(crate) async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>> {
        self.db.begin(mode).await
    }

    /// Runs one read statement in its own transaction.
    pub(crate) async fn read(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        let mut tx = self.begin(Mode::Read).await?;
        let rows = tx.query(sql, args).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// Scans and their findings (SPEC §5): history, trends, `purge`'s source.
#[async_trait]
pub trait ScanLog: Send + Sync {
    async fn begin_scan(
        &self,
        started_at: DateTime<Utc>,
        window: Window,
        mode: ScanMode,
        stores: &[String],
    ) -> Result<i64>;
    /// The scan's row and its findings, together or not at all.
    async fn finish_scan(&self, id: i64, f: &Findings, report_path: Option<&Path>) -> Result<()>;
    async fn fail_scan(&self, id: i64, why: &str) -> Result<()>;
    /// The newest `limit` scans, newest first.
    async fn history(&self, limit: u32) -> Result<Vec<ScanRecord>>;
    async fn scan(&self, id: i64) -> Result<Option<ScanRecord>>;
    /// Complete scans that looked for orphans, newest first.
    async fn complete_scans(&self) -> Result<Vec<ScanRecord>>;
    /// The orphans a scan recorded, by store, key and resource type.
    async fn scan_orphans(&self, id: i64) -> Result<Vec<crate::domain::scan::Orphan>>;
    /// Per store of `stores`: the calls its most recent complete full listing cost.
    async fn list_costs(&self, stores: &[String]) -> Result<HashMap<String, u64>>;
}

/// The deletion queue (SPEC §6).
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Queues entries in one transaction; (added, already queued): an object with a live entry
    /// (`pending` or `claimed`) gets no second one.
    async fn enqueue(&self, actor: &str, entries: &[NewEntry]) -> Result<(u64, u64)>;
    /// Returns claims to `pending` when older than the claim timeout, or at once when
    /// `is_dead(holder)`. How many.
    async fn release_stale_claims(
        &self,
        is_dead: &(dyn for<'x> Fn(&'x str) -> bool + Sync),
    ) -> Result<u64>;
    /// Claims up to `n` due entries for `worker`, atomically, each with a new fencing token
    /// ([`Entry::claim_token`]); due and stale are judged by the database's clock, which is
    /// returned with them.
    async fn claim(
        &self,
        worker: &str,
        n: usize,
        only_rule: Option<(crate::domain::queue::Reason, &str)>,
    ) -> Result<(Vec<Entry>, DateTime<Utc>)>;
    /// Renews `worker`'s claims, each under its token; those marked `start` are in flight from
    /// now on and get their quarantine key when they have none (a free one, near the `spot`
    /// asked for). Returns the ids still held, with their quarantine keys.
    async fn hold_claims(&self, worker: &str, holds: &[Hold])
    -> Result<Vec<(i64, Option<String>)>>;
    /// Applies a batch's completions with their audit rows, quarantine records and removal
    /// entries, in one transaction; only entries still claimed by `worker` under the
    /// completion's token are written.
    async fn finish(&self, worker: &str, actor: &str, done: &[Completion]) -> Result<()>;
    async fn queue_stats(&self) -> Result<Stats>;
    /// Live entries (`pending`, `claimed`), or the `failed` ones, oldest first.
    async fn queue_list(&self, failed: bool, limit: usize) -> Result<Vec<Entry>>;
    /// `queue retry`: unknown ids, or entries in another state, are a usage error and nothing
    /// changes. `decide` says what becomes of each selected entry, given the id of its object's
    /// newer live entry if there is one (`queue::transition::retry`).
    async fn queue_retry(
        &self,
        sel: &Selection,
        actor: &str,
        decide: &(dyn for<'x> Fn(&'x Entry, Option<i64>) -> Retry + Sync),
    ) -> Result<Vec<Changed>>;
    /// `queue drop`: pending or failed entries are dropped, never deleted. An entry whose
    /// earlier move may have left its object in the trash (it has a quarantine key) is not: by
    /// id it is a usage error naming `queue retry`, with `--all-failed` it is left and counted
    /// as [`Changed::Refused`].
    async fn queue_drop(&self, sel: &Selection, actor: &str) -> Result<Vec<Changed>>;
    /// Of the entries `rule` queued with `reason` for the rows `row_ids`: the newest of each
    /// (row, object), with its `outcome` — what became of an expiring row's files so far.
    async fn rule_row_entries(
        &self,
        reason: crate::domain::queue::Reason,
        rule: &str,
        row_ids: &[String],
    ) -> Result<Vec<(Entry, Option<String>)>>;
}

/// The audit log of deletions, quarantines, drops, retries and overrides.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn audit_one(
        &self,
        actor: &str,
        object: &ObjectId,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<()>;
    /// The newest `limit` rows, newest first; only those of `key` (and its copies) when given.
    async fn audit_log(&self, limit: usize, key: Option<&str>) -> Result<Vec<AuditRow>>;
}

/// The records of quarantine moves, as `restore` reads them.
#[async_trait]
pub trait QuarantineLog: Send + Sync {
    /// The newest move of an object whose copy is still held.
    async fn newest_quarantine(&self, object: &ObjectId) -> Result<Option<QuarantineRecord>>;
    /// After a restore: the record is `restored`, its pending removal dropped, both audited.
    async fn mark_restored(&self, rec: &QuarantineRecord, actor: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lists_count_from_where_the_statement_is() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 1), "$1");
    }

    #[test]
    fn migrations_of_both_backends_are_numbered_in_step() {
        let names = |dir: &str| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
                    .expect("migrations")
                    .map(|e| {
                        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
                        name.split('_').next().unwrap_or_default().to_string()
                    })
                    .collect();
            v.sort();
            v
        };
        assert_eq!(
            names("migrations/sqlite"),
            names("migrations/postgres"),
            "every migration version exists for both backends"
        );
    }
}
