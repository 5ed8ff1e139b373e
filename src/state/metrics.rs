//! The figures `GET /metrics` reads from the state database at scrape time (SPEC §8), so that
//! every instance sharing one state database reports the same scans, queue, audit and job runs.

use super::{Dialect, Mode, Row, State, context};
use crate::domain::scan::{StoreStats, Summary};
use crate::error::Result;

/// The state database's part of a scrape: counts grouped by a word, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Scans by state (`running`, `complete`, `incomplete`, `failed`).
    pub scans: Vec<(String, u64)>,
    pub latest_scan: Option<LatestScan>,
    /// Queue entries by state.
    pub queue: Vec<(String, u64)>,
    /// Audit rows by outcome, as written (`failed: …` included; callers shorten them).
    pub audit: Vec<(String, u64)>,
    pub job_runs: Vec<JobRuns>,
}

/// The newest complete scan's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatestScan {
    pub id: i64,
    /// Seconds since the epoch when it started.
    pub started_at: i64,
    pub summary: Option<Summary>,
    pub stores: Vec<StoreStats>,
}

/// The runs of one job in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRuns {
    pub job: String,
    pub status: String,
    pub count: u64,
    /// Of these runs, those that finished, and their total run time in milliseconds.
    pub finished: u64,
    pub duration_ms: u64,
}

/// A JSON column; unreadable text reads as absent, never as zeros.
fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn counts(rows: Vec<Row>) -> Result<Vec<(String, u64)>> {
    rows.into_iter()
        .map(|mut r| Ok((r.text(0)?, r.count(1)?)))
        .collect()
}

impl State {
    /// Every figure `/metrics` takes from the state database.
    pub async fn metric_figures(&self) -> Result<Figures> {
        let e = context("cannot read the figures for /metrics");
        // Times are RFC 3339 text in both backends; the run time is summed in whole ms.
        let duration_ms = match self.dialect() {
            Dialect::Sqlite => {
                "CAST(COALESCE(SUM(ROUND((julianday(finished_at) - julianday(started_at)) * 86400000.0)), 0) AS INTEGER)"
            }
            Dialect::Postgres => {
                "CAST(COALESCE(SUM(EXTRACT(EPOCH FROM (CAST(finished_at AS timestamptz) - CAST(started_at AS timestamptz))) * 1000), 0) AS BIGINT)"
            }
        };
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        let scans = counts(
            tx.query(
                "SELECT state, COUNT(*) FROM scans GROUP BY state ORDER BY state",
                &[],
            )
            .await
            .map_err(&e)?,
        )?;
        let latest = tx
            .query(
                "SELECT id, started_at, summary, store_stats FROM scans WHERE state = 'complete' ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(&e)?;
        let queue = counts(
            tx.query(
                "SELECT state, COUNT(*) FROM queue GROUP BY state ORDER BY state",
                &[],
            )
            .await
            .map_err(&e)?,
        )?;
        let audit = counts(
            tx.query(
                "SELECT outcome, COUNT(*) FROM audit GROUP BY outcome ORDER BY outcome",
                &[],
            )
            .await
            .map_err(&e)?,
        )?;
        let runs = tx
            .query(
                &format!(
                    "SELECT job, status, COUNT(*), COUNT(finished_at), {duration_ms} FROM job_runs GROUP BY job, status ORDER BY job, status"
                ),
                &[],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;

        let latest_scan = match latest.into_iter().next() {
            None => None,
            Some(mut r) => Some(LatestScan {
                id: r.int(0)?,
                started_at: r.time(1)?.timestamp(),
                summary: json(r.opt_text(2)?),
                stores: json(r.opt_text(3)?).unwrap_or_default(),
            }),
        };
        let job_runs = runs
            .into_iter()
            .map(|mut r| {
                Ok(JobRuns {
                    job: r.text(0)?,
                    status: r.text(1)?,
                    count: r.count(2)?,
                    finished: r.count(3)?,
                    duration_ms: r.count(4)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Figures {
            scans,
            latest_scan,
            queue,
            audit,
            job_runs,
        })
    }
}
