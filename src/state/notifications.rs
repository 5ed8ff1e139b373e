//! The notifications a run sent, or failed to send, per channel.

use chrono::{DateTime, Utc};

use super::{Mode, State, context};
use crate::error::Result;
use crate::time::rfc3339;

/// One channel's delivery of one run's notice, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub kind: String,
    pub run_id: Option<i64>,
    pub job_run_id: Option<i64>,
    pub channel: String,
    pub sent_at: String,
    pub attempts: i64,
    /// `None`: sent.
    pub error: Option<String>,
}

impl State {
    /// Records each channel's delivery of one notice.
    pub async fn record_notifications(
        &self,
        kind: &str,
        run_id: Option<i64>,
        job_run_id: Option<i64>,
        at: DateTime<Utc>,
        deliveries: &[(&str, u32, Option<&str>)],
    ) -> Result<()> {
        let e = context("cannot record the notifications");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let at = rfc3339(at);
        for (channel, attempts, error) in deliveries {
            tx.execute(
                "INSERT INTO notifications (kind, run_id, job_run_id, channel, sent_at, attempts, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    kind.into(),
                    run_id.into(),
                    job_run_id.into(),
                    (*channel).into(),
                    at.as_str().into(),
                    i64::from(*attempts).into(),
                    (*error).into(),
                ],
            )
            .await
            .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)
    }

    /// The deliveries recorded for a run, oldest first.
    pub async fn notifications(
        &self,
        kind: &str,
        run_id: Option<i64>,
    ) -> Result<Vec<NotificationRecord>> {
        let rows = match run_id {
            Some(id) => {
                self.read(
                    "SELECT kind, run_id, job_run_id, channel, sent_at, attempts, error FROM notifications WHERE kind = $1 AND run_id = $2 ORDER BY id",
                    &[kind.into(), id.into()],
                )
                .await
            }
            None => {
                self.read(
                    "SELECT kind, run_id, job_run_id, channel, sent_at, attempts, error FROM notifications WHERE kind = $1 ORDER BY id",
                    &[kind.into()],
                )
                .await
            }
        }
        .map_err(context("cannot read the notifications"))?;
        rows.into_iter()
            .map(|mut r| {
                Ok(NotificationRecord {
                    kind: r.text(0)?,
                    run_id: r.opt_int(1)?,
                    job_run_id: r.opt_int(2)?,
                    channel: r.text(3)?,
                    sent_at: r.text(4)?,
                    attempts: r.int(5)?,
                    error: r.opt_text(6)?,
                })
            })
            .collect()
    }
}
