//! Runs of `[[jobs]]` and their leases (SPEC §8), written once for both backends.
//!
//! A run starts in one transaction: the run's row (unique per job and scheduled time, so one
//! instance gets each window) and the job's lease (inserted, or taken over once expired), so
//! that no two runs of one job go on at once, across instances sharing a PostgreSQL state.
//! Lease times are the database's clock, so hosts whose clocks differ agree on what expired.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Mode, State, Tx, context};
use crate::error::{Error, Result};
use crate::time::{after, rfc3339};

/// A recorded run of a job.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
    pub holder: String,
    pub command: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub exit_code: Option<i64>,
    pub summary: Option<String>,
    pub output: Option<String>,
    pub report_path: Option<String>,
    pub report: Option<String>,
    pub scan_id: Option<i64>,
}

/// What asking to start a run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The run's id; its lease is held.
    Started(i64),
    /// Another run of the job holds its lease (here or on another instance).
    Busy { holder: String, run_id: Option<i64> },
    /// Another instance already has a run for this scheduled time.
    WindowTaken,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub succeeded: bool,
    pub exit_code: Option<i64>,
    pub summary: String,
    pub output: String,
    pub scan_id: Option<i64>,
    pub report_path: Option<String>,
    pub report: Option<String>,
}

const RUN_COLUMNS: &str = "id, job, scheduled_for, trigger, holder, command, started_at, finished_at, status, exit_code, summary, output, report_path, report, scan_id";
/// The same columns for lists of runs: whether a report is kept, not the report itself (up to
/// 16 MiB each), so a page of runs stays small.
const LIST_COLUMNS: &str = "id, job, scheduled_for, trigger, holder, command, started_at, finished_at, status, exit_code, summary, output, report_path, CASE WHEN report IS NULL THEN NULL ELSE '' END, scan_id";

fn run_of(mut r: super::Row) -> Result<JobRun> {
    Ok(JobRun {
        id: r.int(0)?,
        job: r.text(1)?,
        scheduled_for: r.opt_time(2)?,
        trigger: r.text(3)?,
        holder: r.text(4)?,
        command: r.text(5)?,
        started_at: r.time(6)?,
        finished_at: r.opt_time(7)?,
        status: r.text(8)?,
        exit_code: r.opt_int(9)?,
        summary: r.opt_text(10)?,
        output: r.opt_text(11)?,
        report_path: r.opt_text(12)?,
        report: r.opt_text(13)?,
        scan_id: r.opt_int(14)?,
    })
}

/// The summary of a run found `running` with no live lease: its process is gone.
pub const ABANDONED: &str =
    "abandoned: the process running it stopped without recording an end (its lease expired)";

impl State {
    async fn db_now(&self, tx: &mut Box<dyn Tx>) -> Result<DateTime<Utc>> {
        let rows = tx.query(self.dialect().now_sql(), &[]).await?;
        let mut r = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::State("the database gave no time".into()))?;
        r.time(0)
    }

    /// Marks the runs left `running` without a live lease (of `job`, or of every job) as
    /// failed, abandoned. How many.
    async fn abandon_in(&self, tx: &mut Box<dyn Tx>, job: Option<&str>, now: &str) -> Result<u64> {
        tx.execute(
            "UPDATE job_runs SET status = 'failed', finished_at = $1, summary = $2 \
             WHERE status = 'running' AND ($3 IS NULL OR job = $3) AND NOT EXISTS \
             (SELECT 1 FROM job_leases l WHERE l.job = job_runs.job AND l.run_id = job_runs.id AND l.expires_at > $1)",
            &[now.into(), ABANDONED.into(), job.into()],
        )
        .await
    }

    /// Marks every run left `running` by a process that is gone (its lease expired) as failed.
    pub async fn abandon_job_runs(&self) -> Result<u64> {
        let e = context("cannot check the job runs");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = rfc3339(self.db_now(&mut tx).await.map_err(&e)?);
        let n = self.abandon_in(&mut tx, None, &now).await.map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(n)
    }

    /// Starts a run of `job`: its row and its lease (for `ttl`), in one transaction, or neither.
    pub async fn start_job_run(
        &self,
        job: &str,
        trigger: &str,
        scheduled_for: Option<DateTime<Utc>>,
        holder: &str,
        command: &str,
        ttl: Duration,
    ) -> Result<Start> {
        let e = context("cannot start the job run");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = self.db_now(&mut tx).await.map_err(&e)?;
        let now_text = rfc3339(now);
        self.abandon_in(&mut tx, Some(job), &now_text)
            .await
            .map_err(&e)?;
        let window = scheduled_for.map(rfc3339);
        // The row first: on PostgreSQL a second instance inserting the same window waits here
        // for the first's transaction, then finds the conflict and stands back.
        let rows = tx
            .query(
                "INSERT INTO job_runs (job, scheduled_for, trigger, holder, command, started_at, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'running') \
                 ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id",
                &[
                    job.into(),
                    window.as_deref().into(),
                    trigger.into(),
                    holder.into(),
                    command.into(),
                    rfc3339(Utc::now()).as_str().into(),
                ],
            )
            .await
            .map_err(&e)?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(Start::WindowTaken);
        };
        let id = row.int(0)?;
        let expires = rfc3339(after(now, ttl));
        let taken = tx
            .execute(
                "INSERT INTO job_leases (job, holder, run_id, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, run_id = excluded.run_id, \
                 expires_at = excluded.expires_at WHERE job_leases.expires_at <= $5",
                &[
                    job.into(),
                    holder.into(),
                    id.into(),
                    expires.as_str().into(),
                    now_text.as_str().into(),
                ],
            )
            .await
            .map_err(&e)?;
        if taken == 0 {
            let mut rows = tx
                .query(
                    "SELECT holder, run_id FROM job_leases WHERE job = $1",
                    &[job.into()],
                )
                .await
                .map_err(&e)?;
            // Dropped without a commit: the run's row goes too.
            let (holder, run_id) = match rows.first_mut() {
                Some(r) => (r.text(0)?, r.opt_int(1)?),
                None => (String::new(), None),
            };
            return Ok(Start::Busy { holder, run_id });
        }
        tx.commit().await.map_err(&e)?;
        Ok(Start::Started(id))
    }

    /// Extends the lease of a run that goes on; `false` when it is no longer this run's.
    pub async fn renew_job_lease(&self, job: &str, run_id: i64, ttl: Duration) -> Result<bool> {
        let e = context("cannot renew the job's lease");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now = self.db_now(&mut tx).await.map_err(&e)?;
        let n = tx
            .execute(
                "UPDATE job_leases SET expires_at = $1 WHERE job = $2 AND run_id = $3",
                &[
                    rfc3339(after(now, ttl)).as_str().into(),
                    job.into(),
                    run_id.into(),
                ],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(n > 0)
    }

    /// Records how a run ended and releases its lease, together.
    pub async fn finish_job_run(&self, job: &str, run_id: i64, end: &RunEnd) -> Result<()> {
        let e = context("cannot record the end of the job run");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE job_runs SET finished_at = $1, status = $2, exit_code = $3, summary = $4, output = $5, \
             scan_id = $6, report_path = $7, report = $8 WHERE id = $9",
            &[
                rfc3339(Utc::now()).as_str().into(),
                if end.succeeded { "succeeded" } else { "failed" }.into(),
                end.exit_code.into(),
                end.summary.as_str().into(),
                end.output.as_str().into(),
                end.scan_id.into(),
                end.report_path.as_deref().into(),
                end.report.as_deref().into(),
                run_id.into(),
            ],
        )
        .await
        .map_err(&e)?;
        tx.execute(
            "DELETE FROM job_leases WHERE job = $1 AND run_id = $2",
            &[job.into(), run_id.into()],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// Runs of `job`, newest first, older than `before` (an id) when given; `report` is `""`
    /// when one is kept (read it with [`State::job_run`]).
    pub async fn job_runs(
        &self,
        job: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<JobRun>> {
        let rows = self
            .read(
                &format!(
                    "SELECT {LIST_COLUMNS} FROM job_runs WHERE job = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
                ),
                &[job.into(), before.into(), i64::from(limit).into()],
            )
            .await
            .map_err(context("cannot read the job runs"))?;
        rows.into_iter().map(run_of).collect()
    }

    pub async fn count_job_runs(&self, job: &str) -> Result<u64> {
        let rows = self
            .read(
                "SELECT COUNT(*) FROM job_runs WHERE job = $1",
                &[job.into()],
            )
            .await
            .map_err(context("cannot count the job runs"))?;
        rows.first().map_or(Ok(0), |r| r.count(0))
    }

    pub async fn job_run(&self, id: i64) -> Result<Option<JobRun>> {
        let rows = self
            .read(
                &format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE id = $1"),
                &[id.into()],
            )
            .await
            .map_err(context("cannot read the job run"))?;
        rows.into_iter().next().map(run_of).transpose()
    }

    /// The latest scheduled time `job` has a run for (by the schedule or a catch-up).
    pub async fn last_scheduled_run(&self, job: &str) -> Result<Option<DateTime<Utc>>> {
        let mut rows = self
            .read(
                "SELECT MAX(scheduled_for) FROM job_runs WHERE job = $1 AND scheduled_for IS NOT NULL",
                &[job.into()],
            )
            .await
            .map_err(context("cannot read the job runs"))?;
        match rows.first_mut() {
            Some(r) => r.opt_time(0),
            None => Ok(None),
        }
    }

    /// The run holding `job`'s live lease, if one does: (holder, run id).
    pub async fn job_lease(&self, job: &str) -> Result<Option<(String, Option<i64>)>> {
        let e = context("cannot read the job's lease");
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        let now = rfc3339(self.db_now(&mut tx).await.map_err(&e)?);
        let mut rows = tx
            .query(
                "SELECT holder, run_id FROM job_leases WHERE job = $1 AND expires_at > $2",
                &[job.into(), now.as_str().into()],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        match rows.first_mut() {
            Some(r) => Ok(Some((r.text(0)?, r.opt_int(1)?))),
            None => Ok(None),
        }
    }

    /// Names a scan as the work of a job run (the run's history then names its scan).
    pub async fn link_scan_to_job_run(&self, scan_id: i64, run_id: i64) -> Result<()> {
        let e = context("cannot record the scan's job run");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE scans SET job_run_id = $1 WHERE id = $2",
            &[run_id.into(), scan_id.into()],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// The newest scan a job run made: (scan id, report path).
    pub async fn job_run_scan(&self, run_id: i64) -> Result<Option<(i64, Option<String>)>> {
        let mut rows = self
            .read(
                "SELECT id, report_path FROM scans WHERE job_run_id = $1 ORDER BY id DESC LIMIT 1",
                &[run_id.into()],
            )
            .await
            .map_err(context("cannot read the job run's scan"))?;
        match rows.first_mut() {
            Some(r) => Ok(Some((r.int(0)?, r.opt_text(1)?))),
            None => Ok(None),
        }
    }
}
