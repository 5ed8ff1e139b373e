//! The state database on PostgreSQL (`[state] url = "postgres://…"`, schema `assetgc`), for
//! several instances sharing one queue and one history. The same tables and the same answers as
//! the SQLite state (`state.rs`, `queue.rs`); claims take `FOR UPDATE SKIP LOCKED`, so two
//! workers on two machines never take the same entry.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, Postgres, Row, Transaction};

use crate::budget;
use crate::error::{Error, Result};
use crate::queue::{
    AuditRow, Entry, NewEntry, Outcome, QuarantineRecord, REASON_QUARANTINE, Selection, Stats,
};
use crate::reconcile::{Findings, Mode, Window};
use crate::report::rfc3339;
use crate::state::{
    DetailRow, OrphanRow, ScanDetail, ScanRecord, ScanRow, finish_fields, list_costs_of,
    scan_detail_of, scan_record,
};

pub struct PgState {
    pool: PgPool,
    /// The URL without its password, for messages.
    label: String,
}

fn err(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| Error::State(format!("{what}: {}", one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

const ENTRY_COLUMNS: &str = crate::queue::ENTRY_COLUMNS;

fn entry(r: &PgRow) -> std::result::Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get(0)?,
        store: r.try_get(1)?,
        resource_type: r.try_get(2)?,
        key: r.try_get(3)?,
        reason: r.try_get(4)?,
        rule: r.try_get(5)?,
        row_id: r.try_get(6)?,
        client_id: r.try_get(7)?,
        scan_id: r.try_get(8)?,
        queued_at: r.try_get(9)?,
        uploaded_at: r.try_get(10)?,
        attempts: u32::try_from(r.try_get::<i64, _>(11)?).unwrap_or(u32::MAX),
        last_error: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        state: r.try_get(14)?,
        actor: r.try_get(15)?,
        original_key: r.try_get(16)?,
        quarantine_key: r.try_get(17)?,
        reclaimed: false,
    })
}

fn quarantine_record(r: &PgRow) -> std::result::Result<QuarantineRecord, sqlx::Error> {
    Ok(QuarantineRecord {
        id: r.try_get(0)?,
        store: r.try_get(1)?,
        resource_type: r.try_get(2)?,
        key: r.try_get(3)?,
        quarantine_key: r.try_get(4)?,
        moved_at: r.try_get(5)?,
        state: r.try_get(6)?,
        queue_id: r.try_get(7)?,
    })
}

fn scan_detail(r: &PgRow) -> Result<ScanDetail> {
    let e = err("cannot read a scan");
    Ok(scan_detail_of(DetailRow {
        id: r.try_get(0).map_err(&e)?,
        started_at: r.try_get(1).map_err(&e)?,
        state: r.try_get(2).map_err(&e)?,
        mode: r.try_get(3).map_err(&e)?,
        stores: r.try_get(4).map_err(&e)?,
        window: r.try_get(5).map_err(&e)?,
        store_stats: r.try_get(6).map_err(&e)?,
    }))
}

async fn audit(
    tx: &mut Transaction<'_, Postgres>,
    at: &str,
    actor: &str,
    e: (&str, &str, &str),
    outcome: &str,
    detail: Option<&str>,
    queue_id: Option<i64>,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit (at, actor, store, resource_type, key, outcome, detail, queue_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(at)
    .bind(actor)
    .bind(e.0)
    .bind(e.1)
    .bind(e.2)
    .bind(outcome)
    .bind(detail)
    .bind(queue_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_entry(
    tx: &mut Transaction<'_, Postgres>,
    actor: &str,
    now: &str,
    e: &NewEntry,
) -> std::result::Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO queue (store, resource_type, key, reason, client_id, scan_id, queued_at, uploaded_at, next_attempt_at, actor, original_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&e.store)
    .bind(e.resource_type.as_str())
    .bind(&e.key)
    .bind(e.reason)
    .bind(&e.client_id)
    .bind(e.scan_id)
    .bind(now)
    .bind(e.uploaded_at.map(rfc3339))
    .bind(rfc3339(e.next_attempt_at))
    .bind(actor)
    .bind(&e.original_key)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get::<i64, _>(0)).transpose()
}

impl PgState {
    /// Connects, creates the schema `assetgc` when missing and migrates it.
    pub async fn open(url: &str) -> Result<PgState> {
        let label = crate::config::redact_url(url);
        let unreachable = |e: sqlx::Error| {
            Error::Unreachable(format!(
                "the state database {label} is unreachable: {}",
                one_line(&e.to_string())
            ))
        };
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::State(format!("[state] url {label}: {e}")))?
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
        let mut first = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect_with(&opts),
        )
        .await
        .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
        .map_err(unreachable)?;
        sqlx::query("CREATE SCHEMA IF NOT EXISTS assetgc")
            .execute(&mut first)
            .await
            .map_err(err("cannot create the schema assetgc"))?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.options([("search_path", "assetgc")]))
            .await
            .map_err(unreachable)?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::State(format!("cannot migrate {label}: {e}")))?;
        Ok(PgState { pool, label })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn begin_scan(
        &self,
        started_at: DateTime<Utc>,
        window: Window,
        mode: Mode,
        stores: &[String],
    ) -> Result<i64> {
        let mode = match mode {
            Mode::Both => "both",
            Mode::OrphansOnly => "orphans",
            Mode::MissingOnly => "missing",
        };
        sqlx::query(
            "INSERT INTO scans (started_at, scan_window, mode, stores, state) VALUES ($1, $2, $3, $4, 'running') RETURNING id",
        )
        .bind(rfc3339(started_at))
        .bind(window.to_json().to_string())
        .bind(mode)
        .bind(json!(stores).to_string())
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .map_err(err("cannot record the scan"))
    }

    /// The scan's row and its findings in one transaction; findings go in by `UNNEST` arrays,
    /// 10,000 rows a statement.
    pub async fn finish_scan(
        &self,
        id: i64,
        f: &Findings,
        report_path: Option<&std::path::Path>,
    ) -> Result<()> {
        let u = finish_fields(f);
        let e = err("cannot record the scan's findings");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query(
            "UPDATE scans SET finished_at = $1, state = $2, summary = $3, store_stats = $4, api_calls = $5, warnings = $6, report_path = $7, duration_ms = $8 WHERE id = $9",
        )
        .bind(&u[0])
        .bind(&u[1])
        .bind(&u[2])
        .bind(&u[3])
        .bind(&u[4])
        .bind(&u[5])
        .bind(report_path.map(|p| p.display().to_string()))
        .bind(i64::try_from(f.duration().as_millis()).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        for chunk in f.orphans.chunks(10_000) {
            sqlx::query(
                "INSERT INTO scan_orphans (scan_id, store, resource_type, key, size_bytes, uploaded_at, format, url)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(chunk.iter().map(|o| o.store.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.resource_type.as_str().to_string()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.key.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| i64::try_from(o.size).unwrap_or(i64::MAX)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.uploaded_at.map(rfc3339)).collect::<Vec<_>>())
            .bind(chunk.iter().map(crate::reconcile::Orphan::format).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.url.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        }
        for (n, chunk) in f.missing.chunks(10_000).enumerate() {
            let base = i64::try_from(n * 10_000).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO scan_missing (scan_id, ord, reference, record_id, title, owner, media_type, key, created_at, status, link)
                 SELECT $1, * FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])",
            )
            .bind(id)
            .bind((0..chunk.len()).map(|i| base + i64::try_from(i).unwrap_or(0)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.reference.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.record_id.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.title.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.owner.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.media_type.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.key.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.created_at.map(rfc3339)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.status.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.link.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)
    }

    pub async fn history(&self, limit: u32) -> Result<Vec<ScanRecord>> {
        let e = err("cannot read the scan history");
        let rows = sqlx::query(
            "SELECT id, started_at, scan_window, mode, stores, state, summary, api_calls, duration_ms FROM scans ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?;
        rows.iter()
            .map(|row| {
                Ok(scan_record(ScanRow {
                    id: row.try_get(0).map_err(&e)?,
                    started_at: row.try_get(1).map_err(&e)?,
                    window: row.try_get(2).map_err(&e)?,
                    mode: row.try_get(3).map_err(&e)?,
                    stores: row.try_get(4).map_err(&e)?,
                    state: row.try_get(5).map_err(&e)?,
                    summary: row.try_get(6).map_err(&e)?,
                    api_calls: row.try_get(7).map_err(&e)?,
                    duration_ms: row.try_get(8).map_err(&e)?,
                }))
            })
            .collect()
    }

    pub async fn fail_scan(&self, id: i64, why: &str) -> Result<()> {
        sqlx::query(
            "UPDATE scans SET state = 'failed', finished_at = $1, warnings = $2 WHERE id = $3",
        )
        .bind(rfc3339(Utc::now()))
        .bind(json!([why]).to_string())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("cannot record the scan"))?;
        Ok(())
    }

    pub async fn load_budgets(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, budget::Persisted>> {
        let e = err("cannot read API budgets");
        let from = now.timestamp().div_euclid(60) - 59;
        let mut out: HashMap<String, budget::Persisted> = HashMap::new();
        let rows = sqlx::query(
            "SELECT account, minute, calls FROM api_budget_calls WHERE minute >= $1 ORDER BY account, minute",
        )
        .bind(from)
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?;
        for row in rows {
            let account: String = row.try_get(0).map_err(&e)?;
            let minute: i64 = row.try_get(1).map_err(&e)?;
            let calls: i64 = row.try_get(2).map_err(&e)?;
            out.entry(account)
                .or_default()
                .minutes
                .push((minute, u64::try_from(calls).unwrap_or(0)));
        }
        let rows =
            sqlx::query("SELECT account, rate_limit, remaining, reset_at FROM api_budget_provider")
                .fetch_all(&self.pool)
                .await
                .map_err(&e)?;
        for row in rows {
            let account: String = row.try_get(0).map_err(&e)?;
            let limit: i64 = row.try_get(1).map_err(&e)?;
            let remaining: i64 = row.try_get(2).map_err(&e)?;
            let reset_at: String = row.try_get(3).map_err(&e)?;
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

    pub async fn save_budgets(
        &self,
        now: DateTime<Utc>,
        budgets: &[(String, budget::Persisted)],
    ) -> Result<()> {
        if budgets.is_empty() {
            return Ok(());
        }
        let e = err("cannot keep API budgets");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        for (account, kept) in budgets {
            sqlx::query("DELETE FROM api_budget_calls WHERE account = $1")
                .bind(account)
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            for &(minute, calls) in &kept.minutes {
                sqlx::query(
                    "INSERT INTO api_budget_calls (account, minute, calls) VALUES ($1, $2, $3)",
                )
                .bind(account)
                .bind(minute)
                .bind(i64::try_from(calls).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            }
            if let Some(p) = kept.provider {
                sqlx::query(
                    "INSERT INTO api_budget_provider (account, rate_limit, remaining, reset_at, seen_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (account) DO UPDATE SET rate_limit = excluded.rate_limit, remaining = excluded.remaining, reset_at = excluded.reset_at, seen_at = excluded.seen_at",
                )
                .bind(account)
                .bind(i64::try_from(p.limit).unwrap_or(i64::MAX))
                .bind(i64::try_from(p.remaining).unwrap_or(i64::MAX))
                .bind(rfc3339(p.reset_at))
                .bind(rfc3339(now))
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            }
        }
        sqlx::query("DELETE FROM api_budget_calls WHERE minute < $1")
            .bind(now.timestamp().div_euclid(60) - 59)
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    pub async fn list_costs(&self, stores: &[String]) -> Result<HashMap<String, u64>> {
        let e = err("cannot read the scan history");
        let rows = sqlx::query(
            "SELECT store_stats FROM scans WHERE store_stats IS NOT NULL ORDER BY id DESC LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?;
        let stats: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(&e)?;
        Ok(list_costs_of(&stats, stores))
    }

    pub async fn scan_detail(&self, id: i64) -> Result<Option<ScanDetail>> {
        let row = sqlx::query(
            "SELECT id, started_at, state, mode, stores, scan_window, store_stats FROM scans WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("cannot read a scan"))?;
        row.map(|r| scan_detail(&r)).transpose()
    }

    pub async fn complete_scans(&self) -> Result<Vec<ScanDetail>> {
        let rows = sqlx::query(
            "SELECT id, started_at, state, mode, stores, scan_window, store_stats FROM scans WHERE state = 'complete' AND mode <> 'missing' ORDER BY id DESC LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read the scan history"))?;
        rows.iter().map(scan_detail).collect()
    }

    pub async fn scan_orphans(&self, id: i64) -> Result<Vec<OrphanRow>> {
        let e = err("cannot read a scan's orphans");
        let rows = sqlx::query(
            "SELECT store, resource_type, key, size_bytes, uploaded_at FROM scan_orphans WHERE scan_id = $1 ORDER BY store, key, resource_type",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?;
        rows.iter()
            .map(|r| {
                Ok(OrphanRow {
                    store: r.try_get(0).map_err(&e)?,
                    resource_type: r.try_get(1).map_err(&e)?,
                    key: r.try_get(2).map_err(&e)?,
                    size: u64::try_from(r.try_get::<i64, _>(3).map_err(&e)?).unwrap_or(0),
                    uploaded_at: r
                        .try_get::<Option<String>, _>(4)
                        .map_err(&e)?
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                })
            })
            .collect()
    }

    // The queue (see queue.rs for what each does).

    pub async fn enqueue(&self, actor: &str, entries: &[NewEntry]) -> Result<(u64, u64)> {
        let e = err("cannot queue deletions");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let mut added = 0;
        for entry in entries {
            if insert_entry(&mut tx, actor, &now, entry)
                .await
                .map_err(&e)?
                .is_some()
            {
                added += 1;
            }
        }
        tx.commit().await.map_err(&e)?;
        Ok((added, entries.len() as u64 - added))
    }

    pub async fn release_stale_claims(
        &self,
        is_dead: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<u64> {
        let e = err("cannot release stale claims");
        let cutoff = rfc3339(Utc::now() - crate::queue::CLAIM_TIMEOUT);
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let holders: Vec<Option<String>> =
            sqlx::query("SELECT DISTINCT claimed_by FROM queue WHERE state = 'claimed'")
                .fetch_all(&mut *tx)
                .await
                .map_err(&e)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()
                .map_err(&e)?;
        let mut released = 0;
        for holder in holders {
            let holder = holder.unwrap_or_default();
            let n = if is_dead(&holder) {
                sqlx::query("UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = $1")
                    .bind(&holder)
                    .execute(&mut *tx)
                    .await
            } else {
                sqlx::query("UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed' AND claimed_by = $1 AND claimed_at < $2")
                    .bind(&holder)
                    .bind(&cutoff)
                    .execute(&mut *tx)
                    .await
            }
            .map_err(&e)?;
            released += n.rows_affected();
        }
        tx.commit().await.map_err(&e)?;
        Ok(released)
    }

    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        quarantine: &(dyn Fn(&Entry) -> Option<String> + Sync),
    ) -> Result<Vec<Entry>> {
        let e = err("cannot claim queue entries");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM queue WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
        )))
        .bind(&now)
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(&e)?;
        let mut entries: Vec<Entry> = rows
            .iter()
            .map(entry)
            .collect::<std::result::Result<_, _>>()
            .map_err(&e)?;
        for en in &mut entries {
            en.reclaimed = en.quarantine_key.is_some();
            if en.quarantine_key.is_none() {
                en.quarantine_key = quarantine(en);
            }
            en.state = "claimed".into();
            sqlx::query("UPDATE queue SET state = 'claimed', claimed_by = $1, claimed_at = $2, quarantine_key = $3 WHERE id = $4")
                .bind(worker)
                .bind(&now)
                .bind(&en.quarantine_key)
                .bind(en.id)
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)?;
        Ok(entries)
    }

    pub async fn hold_claims(&self, worker: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let e = err("cannot renew claims");
        let rows = sqlx::query(
            "UPDATE queue SET claimed_at = $1 WHERE id = ANY($2) AND state = 'claimed' AND claimed_by = $3 RETURNING id",
        )
        .bind(rfc3339(Utc::now()))
        .bind(ids)
        .bind(worker)
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(&e)
    }

    pub async fn finish(
        &self,
        worker: &str,
        actor: &str,
        max_attempts: u32,
        results: &[(&Entry, Outcome)],
    ) -> Result<()> {
        let er = err("cannot record deletion outcomes");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&er)?;
        for (e, outcome) in results {
            let ident = (e.store.as_str(), e.resource_type.as_str(), e.key.as_str());
            let mine = sqlx::query("SELECT 1 FROM queue WHERE id = $1 AND state = 'claimed' AND claimed_by = $2 FOR UPDATE")
                .bind(e.id)
                .bind(worker)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&er)?
                .is_some();
            if !mine {
                continue;
            }
            let done = "UPDATE queue SET state = $1, outcome = $2, finished_at = $3, claimed_by = NULL, claimed_at = NULL WHERE id = $4";
            match outcome {
                Outcome::Deleted | Outcome::AlreadyGone => {
                    sqlx::query(done)
                        .bind("done")
                        .bind(outcome.audit())
                        .bind(&now)
                        .bind(e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                    if e.is_copy_removal() {
                        sqlx::query("UPDATE quarantine SET state = 'removed' WHERE queue_id = $1")
                            .bind(e.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(&er)?;
                    }
                    audit(
                        &mut tx,
                        &now,
                        actor,
                        ident,
                        &outcome.audit(),
                        None,
                        Some(e.id),
                    )
                    .await
                    .map_err(&er)?;
                }
                Outcome::Quarantined {
                    quarantine_key,
                    moved_at,
                    remove_at,
                } => {
                    sqlx::query(done)
                        .bind("done")
                        .bind("quarantined")
                        .bind(&now)
                        .bind(e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                    let removal = NewEntry {
                        store: e.store.clone(),
                        resource_type: e.resource_type(),
                        key: quarantine_key.clone(),
                        reason: REASON_QUARANTINE,
                        client_id: String::new(),
                        scan_id: e.scan_id,
                        uploaded_at: None,
                        next_attempt_at: *remove_at,
                        original_key: Some(e.key.clone()),
                    };
                    let removal_id = match insert_entry(&mut tx, actor, &now, &removal).await.map_err(&er)? {
                        Some(id) => Some(id),
                        None => sqlx::query("SELECT id FROM queue WHERE store = $1 AND resource_type = $2 AND key = $3 AND state IN ('pending', 'claimed')")
                            .bind(&e.store)
                            .bind(&e.resource_type)
                            .bind(quarantine_key)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(&er)?
                            .map(|r| r.try_get::<i64, _>(0))
                            .transpose()
                            .map_err(&er)?,
                    };
                    sqlx::query("INSERT INTO quarantine (store, resource_type, key, quarantine_key, moved_at, queue_id) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(&e.store)
                        .bind(&e.resource_type)
                        .bind(&e.key)
                        .bind(quarantine_key)
                        .bind(rfc3339(*moved_at))
                        .bind(removal_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                    let detail = format!(
                        "moved to {quarantine_key}; removed for good after {}",
                        rfc3339(*remove_at)
                    );
                    audit(
                        &mut tx,
                        &now,
                        actor,
                        ident,
                        "quarantined",
                        Some(&detail),
                        Some(e.id),
                    )
                    .await
                    .map_err(&er)?;
                }
                Outcome::Dropped(detail) => {
                    sqlx::query(done)
                        .bind("dropped")
                        .bind("dropped")
                        .bind(&now)
                        .bind(e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                    audit(
                        &mut tx,
                        &now,
                        actor,
                        ident,
                        "dropped",
                        Some(detail),
                        Some(e.id),
                    )
                    .await
                    .map_err(&er)?;
                }
                Outcome::Referenced(detail) => {
                    sqlx::query(done)
                        .bind("dropped")
                        .bind("referenced")
                        .bind(&now)
                        .bind(e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                    if e.is_copy_removal() {
                        sqlx::query("UPDATE quarantine SET state = 'kept' WHERE queue_id = $1")
                            .bind(e.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(&er)?;
                    }
                    audit(
                        &mut tx,
                        &now,
                        actor,
                        ident,
                        "referenced",
                        Some(detail),
                        Some(e.id),
                    )
                    .await
                    .map_err(&er)?;
                }
                Outcome::Failed { error, retry_at } => {
                    let attempts = e.attempts + 1;
                    match retry_at.filter(|_| attempts < max_attempts) {
                        Some(at) => sqlx::query("UPDATE queue SET state = 'pending', attempts = $1, last_error = $2, next_attempt_at = $3, claimed_by = NULL, claimed_at = NULL WHERE id = $4")
                            .bind(i64::from(attempts))
                            .bind(error)
                            .bind(rfc3339(at))
                            .bind(e.id)
                            .execute(&mut *tx)
                            .await,
                        None => sqlx::query("UPDATE queue SET state = 'failed', attempts = $1, last_error = $2, outcome = 'failed', finished_at = $3, claimed_by = NULL, claimed_at = NULL WHERE id = $4")
                            .bind(i64::from(attempts))
                            .bind(error)
                            .bind(&now)
                            .bind(e.id)
                            .execute(&mut *tx)
                            .await,
                    }
                    .map_err(&er)?;
                    let detail = format!("attempt {attempts} of {max_attempts}");
                    audit(
                        &mut tx,
                        &now,
                        actor,
                        ident,
                        &outcome.audit(),
                        Some(&detail),
                        Some(e.id),
                    )
                    .await
                    .map_err(&er)?;
                }
                Outcome::Deferred => {
                    sqlx::query("UPDATE queue SET state = 'pending', claimed_by = NULL, claimed_at = NULL WHERE id = $1")
                        .bind(e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(&er)?;
                }
            }
        }
        tx.commit().await.map_err(&er)
    }

    pub async fn queue_stats(&self) -> Result<Stats> {
        let e = err("cannot read the queue");
        let now = rfc3339(Utc::now());
        let mut s = Stats::default();
        for row in sqlx::query("SELECT state, COUNT(*) FROM queue GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(&e)?
        {
            let state: String = row.try_get(0).map_err(&e)?;
            let n = u64::try_from(row.try_get::<i64, _>(1).map_err(&e)?).unwrap_or(0);
            match state.as_str() {
                "pending" | "claimed" => s.total_pending += n,
                "failed" => s.total_failed = n,
                "done" => s.total_done = n,
                "dropped" => s.total_dropped = n,
                _ => {}
            }
        }
        let row = sqlx::query(
            "SELECT MIN(queued_at), MAX(queued_at), MIN(CASE WHEN state = 'pending' THEN next_attempt_at END) FROM queue WHERE state IN ('pending', 'claimed')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(&e)?;
        s.oldest_queued = row.try_get(0).map_err(&e)?;
        s.newest_queued = row.try_get(1).map_err(&e)?;
        s.next_due = row.try_get(2).map_err(&e)?;
        s.due_now = sqlx::query(
            "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND next_attempt_at <= $1",
        )
        .bind(&now)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .map_err(&e)?
        .try_into()
        .unwrap_or(0);
        for row in sqlx::query(
            "SELECT attempts, COUNT(*) FROM queue WHERE state IN ('pending', 'claimed') GROUP BY attempts ORDER BY attempts",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?
        {
            let a: i64 = row.try_get(0).map_err(&e)?;
            let n: i64 = row.try_get(1).map_err(&e)?;
            s.by_attempts.push((u32::try_from(a).unwrap_or(u32::MAX), u64::try_from(n).unwrap_or(0)));
        }
        Ok(s)
    }

    pub async fn queue_list(&self, failed: bool, limit: usize) -> Result<Vec<Entry>> {
        let states = if failed {
            "('failed')"
        } else {
            "('pending', 'claimed')"
        };
        let e = err("cannot read the queue");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM queue WHERE state IN {states} ORDER BY id LIMIT $1"
        )))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(&e)?
        .iter()
        .map(entry)
        .collect::<std::result::Result<_, _>>()
        .map_err(&e)
    }

    async fn refused_ids(&self, ids: &[i64], retry: bool) -> Result<Option<String>> {
        let e = err("cannot read the queue");
        for &id in ids {
            let row = sqlx::query("SELECT state, reason, next_attempt_at FROM queue WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(&e)?;
            let why = match row {
                None => Some(format!(
                    "queue entry {id} does not exist; `assetgc queue list` shows the ids"
                )),
                Some(r) => {
                    let state: String = r.try_get(0).map_err(&e)?;
                    let reason: String = r.try_get(1).map_err(&e)?;
                    let at: String = r.try_get(2).map_err(&e)?;
                    if state != "failed" && state != "pending" {
                        Some(format!(
                            "queue entry {id} is {state}; only failed or pending entries can be {}",
                            if retry { "retried" } else { "dropped" }
                        ))
                    } else if retry && state == "pending" && reason == REASON_QUARANTINE {
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
        Ok(None)
    }

    async fn selected(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        sel: &Selection,
    ) -> std::result::Result<Vec<i64>, sqlx::Error> {
        match sel {
            Selection::Ids(ids) => Ok(ids.clone()),
            Selection::AllFailed => {
                sqlx::query("SELECT id FROM queue WHERE state = 'failed' ORDER BY id FOR UPDATE")
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect()
            }
        }
    }

    pub async fn queue_retry(
        &self,
        sel: &Selection,
        actor: &str,
        min_age: &(dyn Fn(&str) -> Option<Duration> + Sync),
    ) -> Result<Vec<String>> {
        if let Selection::Ids(ids) = sel
            && let Some(why) = self.refused_ids(ids, true).await?
        {
            return Err(Error::Usage(why));
        }
        let e = err("cannot change queue entries");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let mut changed = Vec::new();
        for id in self.selected(&mut tx, sel).await.map_err(&e)? {
            let r = sqlx::query("SELECT store, resource_type, key, scan_id, uploaded_at FROM queue WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(&e)?;
            let (store, rt, key): (String, String, String) = (
                r.try_get(0).map_err(&e)?,
                r.try_get(1).map_err(&e)?,
                r.try_get(2).map_err(&e)?,
            );
            let scan: Option<i64> = r.try_get(3).map_err(&e)?;
            let uploaded: Option<String> = r.try_get(4).map_err(&e)?;
            let live: Option<i64> = sqlx::query("SELECT id FROM queue WHERE store = $1 AND resource_type = $2 AND key = $3 AND state IN ('pending', 'claimed') AND id <> $4")
                .bind(&store)
                .bind(&rt)
                .bind(&key)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&e)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(&e)?;
            let (outcome, detail, n) = if let Some(other) = live {
                let n = sqlx::query("UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = $1 WHERE id = $2 AND state IN ('failed', 'pending')")
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(&e)?
                    .rows_affected();
                ("dropped", Some(format!("queued again as entry {other}")), n)
            } else {
                let mut due = now.clone();
                if scan.is_some()
                    && let (Some(t), Some(age)) = (
                        uploaded
                            .as_deref()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                        min_age(&store),
                    )
                {
                    let held = rfc3339(
                        t.with_timezone(&Utc) + TimeDelta::from_std(age).unwrap_or(TimeDelta::MAX),
                    );
                    if held > due {
                        due = held;
                    }
                }
                let n = sqlx::query("UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $1, finished_at = NULL, outcome = NULL WHERE id = $2 AND (state = 'failed' OR (state = 'pending' AND reason <> $3))")
                    .bind(&due)
                    .bind(id)
                    .bind(REASON_QUARANTINE)
                    .execute(&mut *tx)
                    .await
                    .map_err(&e)?
                    .rows_affected();
                ("retried", None, n)
            };
            if n == 1 {
                audit(
                    &mut tx,
                    &now,
                    actor,
                    (&store, &rt, &key),
                    outcome,
                    detail.as_deref(),
                    Some(id),
                )
                .await
                .map_err(&e)?;
                changed.push(outcome.to_string());
            }
        }
        tx.commit().await.map_err(&e)?;
        Ok(changed)
    }

    pub async fn queue_drop(&self, sel: &Selection, actor: &str) -> Result<Vec<String>> {
        if let Selection::Ids(ids) = sel
            && let Some(why) = self.refused_ids(ids, false).await?
        {
            return Err(Error::Usage(why));
        }
        let e = err("cannot change queue entries");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let mut changed = Vec::new();
        for id in self.selected(&mut tx, sel).await.map_err(&e)? {
            let row = sqlx::query("UPDATE queue SET state = 'dropped', outcome = 'dropped', finished_at = $1 WHERE id = $2 AND state IN ('failed', 'pending') RETURNING store, resource_type, key")
                .bind(&now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&e)?;
            let Some(r) = row else { continue };
            let (store, rt, key): (String, String, String) = (
                r.try_get(0).map_err(&e)?,
                r.try_get(1).map_err(&e)?,
                r.try_get(2).map_err(&e)?,
            );
            sqlx::query("UPDATE quarantine SET state = 'kept' WHERE queue_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            audit(
                &mut tx,
                &now,
                actor,
                (&store, &rt, &key),
                "dropped",
                None,
                Some(id),
            )
            .await
            .map_err(&e)?;
            changed.push("dropped".to_string());
        }
        tx.commit().await.map_err(&e)?;
        Ok(changed)
    }

    pub async fn audit_one(
        &self,
        actor: &str,
        ident: (&str, &str, &str),
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let e = err("cannot write the audit log");
        let mut tx = self.pool.begin().await.map_err(&e)?;
        audit(
            &mut tx,
            &rfc3339(Utc::now()),
            actor,
            ident,
            outcome,
            detail,
            None,
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    pub async fn audit_log(&self, limit: usize, key: Option<&str>) -> Result<Vec<AuditRow>> {
        let e = err("cannot read the audit log");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cols = "id, at, actor, store, resource_type, key, outcome, detail, queue_id";
        let rows = match key {
            Some(k) => sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {cols} FROM audit WHERE key = $1 OR queue_id IN (SELECT id FROM queue WHERE original_key = $1) ORDER BY id DESC LIMIT $2")))
                .bind(k)
                .bind(limit)
                .fetch_all(&self.pool)
                .await,
            None => sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {cols} FROM audit ORDER BY id DESC LIMIT $1")))
                .bind(limit)
                .fetch_all(&self.pool)
                .await,
        }
        .map_err(&e)?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    store: r.try_get(3)?,
                    resource_type: r.try_get(4)?,
                    key: r.try_get(5)?,
                    outcome: r.try_get(6)?,
                    detail: r.try_get(7)?,
                    queue_id: r.try_get(8)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(&e)
    }

    pub async fn newest_quarantine(
        &self,
        store: &str,
        resource_type: &str,
        key: &str,
    ) -> Result<Option<QuarantineRecord>> {
        let e = err("cannot read quarantine records");
        sqlx::query("SELECT id, store, resource_type, key, quarantine_key, moved_at, state, queue_id FROM quarantine WHERE store = $1 AND resource_type = $2 AND key = $3 AND state IN ('held', 'kept') ORDER BY moved_at DESC, id DESC LIMIT 1")
            .bind(store)
            .bind(resource_type)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(&e)?
            .as_ref()
            .map(quarantine_record)
            .transpose()
            .map_err(&e)
    }

    pub async fn mark_restored(&self, rec: &QuarantineRecord, actor: &str) -> Result<()> {
        let e = err("cannot record the restore");
        let now = rfc3339(Utc::now());
        let mut tx = self.pool.begin().await.map_err(&e)?;
        sqlx::query("UPDATE quarantine SET state = 'restored' WHERE id = $1")
            .bind(rec.id)
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        if let Some(q) = rec.queue_id {
            sqlx::query("UPDATE queue SET state = 'dropped', outcome = 'restored', finished_at = $1 WHERE id = $2 AND state IN ('pending', 'failed')")
                .bind(&now)
                .bind(q)
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
        }
        let detail = format!("from {}", rec.quarantine_key);
        audit(
            &mut tx,
            &now,
            actor,
            (&rec.store, &rec.resource_type, &rec.key),
            "restored",
            Some(&detail),
            rec.queue_id,
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }
}
