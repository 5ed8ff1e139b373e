//! The state database: every scan is recorded here (SPEC §5), with the deletion queue, the audit
//! log and the quarantine records. SQLite by default, created when missing (this file and
//! `queue.rs`); PostgreSQL (`state_pg.rs`, schema `assetgc`) for instances that share one.
//! Migrations in `migrations/sqlite` and `migrations/postgres`.

use std::time::Duration;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::budget;
use crate::config::StateUrl;
use crate::error::{Error, Result};
use crate::reconcile::{Findings, Mode, Window};
use crate::report::{self, Summary};

pub struct SqliteState {
    pool: SqlitePool,
    path: std::path::PathBuf,
    /// One rusqlite connection for the queue's transactions, opened on first use.
    conn: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// One line of `history`.
#[derive(Debug, Clone)]
pub struct ScanRecord {
    pub id: i64,
    pub started_at: String,
    pub window: serde_json::Value,
    pub mode: String,
    pub stores: Vec<String>,
    pub state: String,
    pub summary: Option<serde_json::Value>,
    pub api_calls: u64,
    pub duration_ms: Option<i64>,
}

/// Runs blocking work on this worker, telling a multi-threaded runtime to move its other tasks
/// elsewhere meanwhile; on a current-thread runtime it simply runs.
fn in_place<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn state_err(e: impl std::fmt::Display) -> Error {
    Error::State(e.to_string())
}

impl SqliteState {
    pub async fn open(path: &std::path::Path) -> Result<SqliteState> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::State(format!(
                    "cannot create folder {} for {}: {e}",
                    dir.display(),
                    path.display()
                ))
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| Error::State(format!("cannot open {}: {e}", path.display())))?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| Error::State(format!("cannot migrate {}: {e}", path.display())))?;
        Ok(SqliteState {
            pool,
            path: path.to_path_buf(),
            conn: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` on the state's rusqlite connection, on this thread (see [`in_place`]).
    pub(crate) fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        in_place(|| {
            let mut guard = self
                .conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if guard.is_none() {
                let conn = rusqlite::Connection::open(&self.path)?;
                conn.busy_timeout(Duration::from_secs(30))?;
                *guard = Some(conn);
            }
            f(guard.as_mut().expect("opened above"))
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Records the start of a scan and returns its id.
    pub async fn begin_scan(
        &self,
        started_at: chrono::DateTime<chrono::Utc>,
        window: Window,
        mode: Mode,
        stores: &[String],
    ) -> Result<i64> {
        let mode = match mode {
            Mode::Both => "both",
            Mode::OrphansOnly => "orphans",
            Mode::MissingOnly => "missing",
        };
        let row = sqlx::query(
            "INSERT INTO scans (started_at, scan_window, mode, stores, state) VALUES (?, ?, ?, ?, 'running') RETURNING id",
        )
        .bind(report::rfc3339(started_at))
        .bind(window.to_json().to_string())
        .bind(mode)
        .bind(json!(stores).to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(state_err)?;
        row.try_get::<i64, _>(0).map_err(state_err)
    }

    // Async like the rest of the state API; the write itself runs in place on this worker
    // (`block_in_place`), borrowing the findings instead of copying them to another thread.
    #[allow(clippy::unused_async)]
    pub async fn finish_scan(
        &self,
        id: i64,
        f: &Findings,
        report_path: Option<&std::path::Path>,
    ) -> Result<()> {
        let update = finish_fields(f);
        let report_path = report_path.map(|p| p.display().to_string());
        let duration_ms = i64::try_from(f.duration().as_millis()).unwrap_or(i64::MAX);
        // The scan's row and its findings land together or not at all. Findings can run to
        // hundreds of thousands of rows: rusqlite inserts them through one prepared statement
        // on this thread (sqlx would send each row through its worker channel).
        in_place(|| {
            let mut conn = rusqlite::Connection::open(&self.path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE scans SET finished_at = ?1, state = ?2, summary = ?3, store_stats = ?4, api_calls = ?5, warnings = ?6, report_path = ?7, duration_ms = ?8 WHERE id = ?9",
                rusqlite::params![
                    update[0], update[1], update[2], update[3], update[4], update[5],
                    report_path, duration_ms, id
                ],
            )?;
            {
                let mut orphan = tx.prepare(
                    "INSERT OR IGNORE INTO scan_orphans (scan_id, store, resource_type, key, size_bytes, uploaded_at, format, url) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for o in &f.orphans {
                    orphan.execute(rusqlite::params![
                        id,
                        o.store,
                        o.resource_type.as_str(),
                        o.key,
                        i64::try_from(o.size).unwrap_or(i64::MAX),
                        o.uploaded_at.map(report::rfc3339),
                        o.format(),
                        o.url,
                    ])?;
                }
                let mut missing = tx.prepare(
                    "INSERT INTO scan_missing (scan_id, ord, reference, record_id, title, owner, media_type, key, created_at, status, link) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for (ord, m) in f.missing.iter().enumerate() {
                    missing.execute(rusqlite::params![
                        id,
                        i64::try_from(ord).unwrap_or(i64::MAX),
                        m.reference,
                        m.record_id,
                        m.title,
                        m.owner,
                        m.media_type,
                        m.key,
                        m.created_at.map(report::rfc3339),
                        m.status,
                        m.link,
                    ])?;
                }
            }
            tx.commit()
        })
        .map_err(|e: rusqlite::Error| {
            Error::State(format!("cannot record scan {id} in {}: {e}", self.path.display()))
        })
    }

    /// The newest `limit` scans, newest first.
    pub async fn history(&self, limit: u32) -> Result<Vec<ScanRecord>> {
        let rows = sqlx::query(
            "SELECT id, started_at, scan_window, mode, stores, state, summary, api_calls, duration_ms FROM scans ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(state_err)?;
        rows.iter()
            .map(|row| {
                Ok(scan_record(ScanRow {
                    id: row.try_get(0).map_err(state_err)?,
                    started_at: row.try_get(1).map_err(state_err)?,
                    window: row.try_get(2).map_err(state_err)?,
                    mode: row.try_get(3).map_err(state_err)?,
                    stores: row.try_get(4).map_err(state_err)?,
                    state: row.try_get(5).map_err(state_err)?,
                    summary: row.try_get(6).map_err(state_err)?,
                    api_calls: row.try_get(7).map_err(state_err)?,
                    duration_ms: row.try_get(8).map_err(state_err)?,
                }))
            })
            .collect()
    }

    pub async fn fail_scan(&self, id: i64, why: &str) -> Result<()> {
        sqlx::query(
            "UPDATE scans SET state = 'failed', finished_at = ?, warnings = ? WHERE id = ?",
        )
        .bind(report::rfc3339(chrono::Utc::now()))
        .bind(json!([why]).to_string())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(state_err)?;
        Ok(())
    }

    /// What earlier runs spent of each metered account's budget (the last hour of it).
    pub async fn load_budgets(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, budget::Persisted>> {
        let from = now.timestamp().div_euclid(60) - 59;
        let mut out: HashMap<String, budget::Persisted> = HashMap::new();
        let rows = sqlx::query(
            "SELECT account, minute, calls FROM api_budget_calls WHERE minute >= ? ORDER BY account, minute",
        )
        .bind(from)
        .fetch_all(&self.pool)
        .await
        .map_err(state_err)?;
        for row in rows {
            let account: String = row.try_get(0).map_err(state_err)?;
            let minute: i64 = row.try_get(1).map_err(state_err)?;
            let calls: i64 = row.try_get(2).map_err(state_err)?;
            out.entry(account)
                .or_default()
                .minutes
                .push((minute, u64::try_from(calls).unwrap_or(0)));
        }
        let rows =
            sqlx::query("SELECT account, rate_limit, remaining, reset_at FROM api_budget_provider")
                .fetch_all(&self.pool)
                .await
                .map_err(state_err)?;
        for row in rows {
            let account: String = row.try_get(0).map_err(state_err)?;
            let limit: i64 = row.try_get(1).map_err(state_err)?;
            let remaining: i64 = row.try_get(2).map_err(state_err)?;
            let reset_at: String = row.try_get(3).map_err(state_err)?;
            if let Ok(reset_at) = DateTime::parse_from_rfc3339(&reset_at) {
                out.entry(account).or_default().provider = Some(budget::Provider {
                    limit: u64::try_from(limit).unwrap_or(0),
                    remaining: u64::try_from(remaining).unwrap_or(0),
                    reset_at: reset_at.with_timezone(&Utc),
                });
            }
        }
        Ok(out)
    }

    /// Keeps each account's calls of the last hour and the provider's last figures, in one
    /// transaction; older minutes are dropped.
    pub async fn save_budgets(
        &self,
        now: DateTime<Utc>,
        budgets: &[(String, budget::Persisted)],
    ) -> Result<()> {
        if budgets.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(state_err)?;
        for (account, kept) in budgets {
            sqlx::query("DELETE FROM api_budget_calls WHERE account = ?")
                .bind(account)
                .execute(&mut *tx)
                .await
                .map_err(state_err)?;
            for &(minute, calls) in &kept.minutes {
                sqlx::query(
                    "INSERT INTO api_budget_calls (account, minute, calls) VALUES (?, ?, ?)",
                )
                .bind(account)
                .bind(minute)
                .bind(i64::try_from(calls).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(state_err)?;
            }
            if let Some(p) = kept.provider {
                sqlx::query(
                    "INSERT INTO api_budget_provider (account, rate_limit, remaining, reset_at, seen_at) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (account) DO UPDATE SET rate_limit = excluded.rate_limit, remaining = excluded.remaining, reset_at = excluded.reset_at, seen_at = excluded.seen_at",
                )
                .bind(account)
                .bind(i64::try_from(p.limit).unwrap_or(i64::MAX))
                .bind(i64::try_from(p.remaining).unwrap_or(i64::MAX))
                .bind(report::rfc3339(p.reset_at))
                .bind(report::rfc3339(now))
                .execute(&mut *tx)
                .await
                .map_err(state_err)?;
            }
        }
        // Minutes of accounts no longer in use age out too.
        sqlx::query("DELETE FROM api_budget_calls WHERE minute < ?")
            .bind(now.timestamp().div_euclid(60) - 59)
            .execute(&mut *tx)
            .await
            .map_err(state_err)?;
        tx.commit().await.map_err(state_err)
    }

    /// Per store: the calls its most recent complete full listing cost, from recorded scans.
    pub async fn list_costs(&self, stores: &[String]) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT store_stats FROM scans WHERE store_stats IS NOT NULL ORDER BY id DESC LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(state_err)?;
        let stats: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(state_err)?;
        Ok(list_costs_of(&stats, stores))
    }

    /// One recorded scan, with what `purge` needs of it.
    pub async fn scan_detail(&self, id: i64) -> Result<Option<ScanDetail>> {
        let row = sqlx::query(
            "SELECT id, started_at, state, mode, stores, scan_window, store_stats FROM scans WHERE id = ?",
        )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(state_err)?;
        row.map(|r| scan_detail(&r)).transpose()
    }

    /// Complete scans that looked for orphans, newest first.
    pub async fn complete_scans(&self) -> Result<Vec<ScanDetail>> {
        let rows = sqlx::query(
            "SELECT id, started_at, state, mode, stores, scan_window, store_stats FROM scans WHERE state = 'complete' AND mode <> 'missing' ORDER BY id DESC LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(state_err)?;
        rows.iter().map(scan_detail).collect()
    }

    /// The orphans a scan recorded, by store and key.
    pub async fn scan_orphans(&self, id: i64) -> Result<Vec<OrphanRow>> {
        let rows = sqlx::query(
            "SELECT store, resource_type, key, size_bytes, uploaded_at FROM scan_orphans WHERE scan_id = ? ORDER BY store, key, resource_type",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(state_err)?;
        rows.iter()
            .map(|r| {
                Ok(OrphanRow {
                    store: r.try_get(0).map_err(state_err)?,
                    resource_type: r.try_get(1).map_err(state_err)?,
                    key: r.try_get(2).map_err(state_err)?,
                    size: u64::try_from(r.try_get::<i64, _>(3).map_err(state_err)?).unwrap_or(0),
                    uploaded_at: r
                        .try_get::<Option<String>, _>(4)
                        .map_err(state_err)?
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                })
            })
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn scan_detail(r: &sqlx::sqlite::SqliteRow) -> Result<ScanDetail> {
    Ok(scan_detail_of(DetailRow {
        id: r.try_get(0).map_err(state_err)?,
        started_at: r.try_get(1).map_err(state_err)?,
        state: r.try_get(2).map_err(state_err)?,
        mode: r.try_get(3).map_err(state_err)?,
        stores: r.try_get(4).map_err(state_err)?,
        window: r.try_get(5).map_err(state_err)?,
        store_stats: r.try_get(6).map_err(state_err)?,
    }))
}

/// A `scans` row as `purge` reads it, JSON columns still text.
pub(crate) struct DetailRow {
    pub id: i64,
    pub started_at: String,
    pub state: String,
    pub mode: String,
    pub stores: Option<String>,
    pub window: Option<String>,
    pub store_stats: Option<String>,
}

/// A [`ScanDetail`] from its row, for both state databases.
pub(crate) fn scan_detail_of(r: DetailRow) -> ScanDetail {
    let json = |t: Option<String>| -> serde_json::Value {
        t.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    ScanDetail {
        id: r.id,
        started_at: r.started_at,
        state: r.state,
        mode: r.mode,
        stores: serde_json::from_value(json(r.stores)).unwrap_or_default(),
        window: json(r.window),
        store_stats: match json(r.store_stats) {
            serde_json::Value::Array(a) => a,
            _ => Vec::new(),
        },
    }
}

/// Per store of `stores`: the calls its most recent complete full listing cost, from the
/// `store_stats` of recorded scans, newest first. For both state databases.
pub(crate) fn list_costs_of(stats: &[String], stores: &[String]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for text in stats {
        let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(text) else {
            continue;
        };
        for e in entries {
            let name = e["store"].as_str().unwrap_or_default();
            if !stores.iter().any(|s| s == name) || out.contains_key(name) {
                continue;
            }
            if let (Some(calls), Some(true)) =
                (e["full_list_calls"].as_u64(), e["complete"].as_bool())
            {
                out.insert(name.to_string(), calls);
            }
        }
    }
    out
}

/// The scan row's fields at its end: finished_at, state, summary, store_stats, api_calls,
/// warnings (JSON text), shared by both state databases.
pub(crate) fn finish_fields(f: &Findings) -> [String; 6] {
    let summary = report::summary_json(&Summary::of(f));
    let stores: Vec<serde_json::Value> = f
        .stores
        .iter()
        .map(|s| {
            json!({
                "store": s.name, "reachable": s.reachable, "complete": s.complete,
                "listed": s.listed, "objects_scanned": s.objects_scanned, "valid": s.valid,
                "orphans": s.orphans, "orphan_bytes": s.orphan_bytes,
                "too_recent": s.too_recent, "ignored": s.ignored,
                "api_calls": s.api_calls, "full_list_calls": s.full_list_calls,
            })
        })
        .collect();
    let api_calls: serde_json::Map<String, serde_json::Value> = f
        .stores
        .iter()
        .map(|s| (s.name.clone(), json!(s.api_calls)))
        .collect();
    [
        report::rfc3339(f.finished_at),
        (if f.complete { "complete" } else { "incomplete" }).to_string(),
        summary.to_string(),
        json!(stores).to_string(),
        serde_json::Value::Object(api_calls).to_string(),
        json!(f.warnings).to_string(),
    ]
}

/// A `history` row as stored: JSON columns still text.
pub(crate) struct ScanRow {
    pub id: i64,
    pub started_at: String,
    pub window: String,
    pub mode: String,
    pub stores: String,
    pub state: String,
    pub summary: Option<String>,
    pub api_calls: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A `history` line from its row, for both state databases.
pub(crate) fn scan_record(r: ScanRow) -> ScanRecord {
    let parse = |t: Option<&str>| t.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    ScanRecord {
        id: r.id,
        started_at: r.started_at,
        window: parse(Some(&r.window)).unwrap_or_default(),
        mode: r.mode,
        stores: parse(Some(&r.stores))
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        state: r.state,
        summary: parse(r.summary.as_deref()),
        api_calls: parse(r.api_calls.as_deref())
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .map_or(0, |m| {
                m.values().filter_map(serde_json::Value::as_u64).sum()
            }),
        duration_ms: r.duration_ms,
    }
}

/// A recorded scan, as `purge` reads it.
#[derive(Debug, Clone)]
pub struct ScanDetail {
    pub id: i64,
    pub started_at: String,
    pub state: String,
    pub mode: String,
    pub stores: Vec<String>,
    pub window: serde_json::Value,
    /// Per store: `{"store", "objects_scanned", "orphans", …}`.
    pub store_stats: Vec<serde_json::Value>,
}

impl ScanDetail {
    /// (objects scanned, orphans) of one store in this scan.
    pub fn store_counts(&self, store: &str) -> Option<(u64, u64)> {
        self.store_stats
            .iter()
            .find(|s| s["store"].as_str() == Some(store))
            .map(|s| {
                (
                    s["objects_scanned"].as_u64().unwrap_or(0),
                    s["orphans"].as_u64().unwrap_or(0),
                )
            })
    }
}

/// One orphan of a recorded scan.
#[derive(Debug, Clone)]
pub struct OrphanRow {
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub size: u64,
    pub uploaded_at: Option<DateTime<Utc>>,
}

/// The state database of a run: SQLite or PostgreSQL, with one API.
pub enum State {
    Sqlite(SqliteState),
    Postgres(crate::state_pg::PgState),
}

/// Methods both backends have; SQLite's queue methods run in place (see `queue.rs`).
macro_rules! both {
    ($(
        $(#[$doc:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty => $($sqlite_await:ident)?;
    )*) => {$(
        $(#[$doc])*
        pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                State::Sqlite(s) => s.$name($($arg),*)$(.$sqlite_await)?,
                State::Postgres(p) => p.$name($($arg),*).await,
            }
        }
    )*};
}

impl State {
    pub async fn open(url: &StateUrl) -> Result<State> {
        Ok(match url {
            StateUrl::Sqlite(path) => State::Sqlite(SqliteState::open(path).await?),
            StateUrl::Postgres(url) => {
                State::Postgres(crate::state_pg::PgState::open(url.expose()).await?)
            }
        })
    }

    /// Where the state lives, for messages (no password).
    pub fn describe(&self) -> String {
        match self {
            State::Sqlite(s) => s.path().display().to_string(),
            State::Postgres(p) => p.label().to_string(),
        }
    }

    both! {
        pub async fn close(&self) -> () => await;
        pub async fn begin_scan(&self, started_at: DateTime<Utc>, window: Window, mode: Mode, stores: &[String]) -> Result<i64> => await;
        pub async fn finish_scan(&self, id: i64, f: &Findings, report_path: Option<&std::path::Path>) -> Result<()> => await;
        pub async fn history(&self, limit: u32) -> Result<Vec<ScanRecord>> => await;
        pub async fn fail_scan(&self, id: i64, why: &str) -> Result<()> => await;
        pub async fn load_budgets(&self, now: DateTime<Utc>) -> Result<HashMap<String, budget::Persisted>> => await;
        pub async fn save_budgets(&self, now: DateTime<Utc>, budgets: &[(String, budget::Persisted)]) -> Result<()> => await;
        pub async fn list_costs(&self, stores: &[String]) -> Result<HashMap<String, u64>> => await;
        pub async fn scan_detail(&self, id: i64) -> Result<Option<ScanDetail>> => await;
        pub async fn complete_scans(&self) -> Result<Vec<ScanDetail>> => await;
        pub async fn scan_orphans(&self, id: i64) -> Result<Vec<OrphanRow>> => await;
        pub async fn enqueue(&self, actor: &str, entries: &[crate::queue::NewEntry]) -> Result<(u64, u64)> =>;
        pub async fn release_stale_claims(&self, is_dead: &(dyn Fn(&str) -> bool + Sync)) -> Result<u64> =>;
        pub async fn claim(&self, worker: &str, n: usize, quarantine: &(dyn Fn(&crate::queue::Entry) -> Option<String> + Sync)) -> Result<Vec<crate::queue::Entry>> =>;
        pub async fn finish(&self, worker: &str, actor: &str, max_attempts: u32, results: &[(&crate::queue::Entry, crate::queue::Outcome)]) -> Result<()> =>;
        pub async fn hold_claims(&self, worker: &str, ids: &[i64]) -> Result<Vec<i64>> =>;
        pub async fn queue_stats(&self) -> Result<crate::queue::Stats> =>;
        pub async fn queue_list(&self, failed: bool, limit: usize) -> Result<Vec<crate::queue::Entry>> =>;
        pub async fn queue_retry(&self, sel: &crate::queue::Selection, actor: &str, min_age: &(dyn Fn(&str) -> Option<Duration> + Sync)) -> Result<Vec<String>> =>;
        pub async fn queue_drop(&self, sel: &crate::queue::Selection, actor: &str) -> Result<Vec<String>> =>;
        pub async fn audit_one(&self, actor: &str, ident: (&str, &str, &str), outcome: &str, detail: Option<&str>) -> Result<()> =>;
        pub async fn audit_log(&self, limit: usize, key: Option<&str>) -> Result<Vec<crate::queue::AuditRow>> =>;
        pub async fn newest_quarantine(&self, store: &str, resource_type: &str, key: &str) -> Result<Option<crate::queue::QuarantineRecord>> =>;
        pub async fn mark_restored(&self, rec: &crate::queue::QuarantineRecord, actor: &str) -> Result<()> =>;
    }

    /// The comparable scan of SPEC §6 invariant 7: the previous complete scan with the same
    /// stores, the same window and orphans checked.
    pub async fn comparable_scan(&self, of: &ScanDetail) -> Result<Option<ScanDetail>> {
        let mut stores = of.stores.clone();
        stores.sort();
        Ok(self.complete_scans().await?.into_iter().find(|s| {
            let mut theirs = s.stores.clone();
            theirs.sort();
            s.id < of.id && theirs == stores && s.window == of.window
        }))
    }
}
