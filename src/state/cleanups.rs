//! Retention policy runs (`clean`): each is recorded with its figures, written once for both
//! backends. A run's id is its job id (SPEC §8 `GET /api/cleanup/bulk/{job_id}`).

use chrono::{DateTime, Utc};

use super::{Mode, State, context};
use crate::error::{Error, Result};
use crate::time::rfc3339;

/// A recorded `clean` run.
#[derive(Debug, Clone)]
pub struct CleanupRecord {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running` or `done`.
    pub state: String,
    pub dry_run: bool,
    pub policies: Vec<String>,
    /// The run's figures as recorded (JSON), once it has any.
    pub summary: Option<serde_json::Value>,
}

impl State {
    pub async fn begin_cleanup(
        &self,
        started_at: DateTime<Utc>,
        dry_run: bool,
        policies: &[String],
    ) -> Result<i64> {
        let e = context("cannot record the clean run");
        let names = serde_json::to_string(policies)
            .map_err(|err| Error::State(format!("cannot record the clean run: {err}")))?;
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let rows = tx
            .query(
                "INSERT INTO cleanups (started_at, dry_run, policies, state, holder) VALUES ($1, $2, $3, 'running', $4) RETURNING id",
                &[
                    rfc3339(started_at).as_str().into(),
                    i64::from(dry_run).into(),
                    names.as_str().into(),
                    crate::queue::worker::worker_id().as_str().into(),
                ],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        rows.first()
            .ok_or_else(|| Error::State("cannot record the clean run: no id came back".into()))?
            .int(0)
    }

    /// Records a run's figures; `done` once its entries were worked.
    pub async fn update_cleanup(
        &self,
        id: i64,
        summary: &serde_json::Value,
        done: bool,
    ) -> Result<()> {
        let e = context("cannot record the clean run");
        let text = summary.to_string();
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE cleanups SET summary = $1, state = $2, finished_at = $3 WHERE id = $4",
            &[
                text.as_str().into(),
                if done { "done" } else { "running" }.into(),
                done.then(|| rfc3339(Utc::now())).as_deref().into(),
                id.into(),
            ],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    pub async fn cleanup(&self, id: i64) -> Result<Option<CleanupRecord>> {
        let rows = self
            .read(
                "SELECT id, started_at, finished_at, state, dry_run, policies, summary FROM cleanups WHERE id = $1",
                &[id.into()],
            )
            .await
            .map_err(context("cannot read the clean run"))?;
        let Some(mut r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let policies = r.text(5)?;
        let summary = r.opt_text(6)?;
        Ok(Some(CleanupRecord {
            id: r.int(0)?,
            started_at: r.time(1)?,
            finished_at: r.opt_time(2)?,
            state: r.text(3)?,
            dry_run: r.int(4)? != 0,
            policies: serde_json::from_str(&policies).unwrap_or_default(),
            summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        }))
    }
}

impl State {
    /// Scans and clean runs left `running` by a process for which `gone(holder)` holds: scans
    /// become `failed`, clean runs `done` with a failure message, both saying `why`. Rows of
    /// live processes, or of processes on other hosts (which cannot be told from here), stay.
    /// How many of each.
    pub async fn close_abandoned(
        &self,
        gone: &(dyn for<'x> Fn(&'x str) -> bool + Sync),
        why: &str,
    ) -> Result<(u64, u64)> {
        use super::ScanLog as _;
        let e = context("cannot close abandoned runs");
        let scans = self
            .read(
                "SELECT id, holder FROM scans WHERE state = 'running' AND holder IS NOT NULL",
                &[],
            )
            .await
            .map_err(&e)?;
        let mut closed = (0, 0);
        for mut r in scans {
            let (id, holder) = (r.int(0)?, r.text(1)?);
            if gone(&holder) {
                self.fail_scan(id, why).await.map_err(&e)?;
                closed.0 += 1;
            }
        }
        let runs = self
            .read(
                "SELECT id, holder, summary, dry_run FROM cleanups WHERE state = 'running' AND holder IS NOT NULL",
                &[],
            )
            .await
            .map_err(&e)?;
        for mut r in runs {
            let (id, holder) = (r.int(0)?, r.text(1)?);
            if !gone(&holder) {
                continue;
            }
            let mut summary: serde_json::Value = r
                .opt_text(2)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            if let Some(obj) = summary.as_object_mut() {
                obj.insert("success".into(), serde_json::Value::Bool(false));
                obj.insert("message".into(), serde_json::Value::String(why.to_string()));
                obj.insert("job_id".into(), serde_json::Value::from(id));
                obj.entry("dry_run")
                    .or_insert(serde_json::Value::Bool(r.int(3)? != 0));
            }
            self.update_cleanup(id, &summary, true).await.map_err(&e)?;
            closed.1 += 1;
        }
        Ok(closed)
    }
}
