//! The audit log and the quarantine records, written once for both backends.

use async_trait::async_trait;
use chrono::Utc;

use super::queue::audit;
use super::{AuditLog, Mode, QuarantineLog, State, context};
use crate::domain::queue::{AuditRow, QuarantineRecord};
use crate::domain::{ObjectId, ResourceType, Spelling};
use crate::error::Result;
use crate::time::rfc3339;

fn resource_type(s: &str) -> ResourceType {
    ResourceType::parse_cloudinary(s).unwrap_or(ResourceType::Plain)
}

#[async_trait]
impl AuditLog for State {
    async fn audit_one(
        &self,
        actor: &str,
        object: &ObjectId,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let e = context("cannot write the audit log");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        audit(tx.as_mut(), &now, actor, object, outcome, detail, None)
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    async fn audit_log(&self, limit: usize, key: Option<&str>) -> Result<Vec<AuditRow>> {
        let cols = "id, at, actor, store, resource_type, key, outcome, detail, queue_id";
        let limit = super::int(limit as u64);
        let rows = match key {
            // A key's own rows and those of its quarantined copies.
            Some(k) => self
                .read(
                    &format!("SELECT {cols} FROM audit WHERE key = $1 OR queue_id IN (SELECT id FROM queue WHERE original_key = $1) ORDER BY id DESC LIMIT $2"),
                    &[k.into(), limit],
                )
                .await,
            None => self
                .read(&format!("SELECT {cols} FROM audit ORDER BY id DESC LIMIT $1"), &[limit])
                .await,
        }
        .map_err(context("cannot read the audit log"))?;
        rows.into_iter()
            .map(|mut r| {
                Ok(AuditRow {
                    id: r.int(0)?,
                    at: r.text(1)?,
                    actor: r.text(2)?,
                    store: r.text(3)?,
                    resource_type: resource_type(&r.text(4)?),
                    key: r.text(5)?,
                    outcome: r.text(6)?,
                    detail: r.opt_text(7)?,
                    queue_id: r.opt_int(8)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl QuarantineLog for State {
    async fn newest_quarantine(&self, object: &ObjectId) -> Result<Option<QuarantineRecord>> {
        let rows = self
            .read(
                "SELECT id, store, resource_type, key, quarantine_key, moved_at, state, queue_id FROM quarantine
                 WHERE store = $1 AND resource_type = $2 AND key = $3 AND state IN ('held', 'kept') ORDER BY moved_at DESC, id DESC LIMIT 1",
                &[
                    object.store.as_str().into(),
                    object.resource_type.as_str().into(),
                    object.key.as_str().into(),
                ],
            )
            .await
            .map_err(context("cannot read quarantine records"))?;
        rows.into_iter()
            .next()
            .map(|mut r| {
                let rt = r.text(2)?;
                Ok(QuarantineRecord {
                    id: r.int(0)?,
                    object: ObjectId {
                        store: r.text(1)?,
                        resource_type: resource_type(&rt),
                        key: r.text(3)?,
                    },
                    quarantine_key: r.text(4)?,
                    moved_at: r.text(5)?,
                    state: r.word(6, "quarantine state")?,
                    queue_id: r.opt_int(7)?,
                })
            })
            .transpose()
    }

    async fn mark_restored(&self, rec: &QuarantineRecord, actor: &str) -> Result<()> {
        let e = context("cannot record the restore");
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE quarantine SET state = $1 WHERE id = $2",
            &[
                crate::domain::queue::QuarantineState::Restored
                    .as_str()
                    .into(),
                rec.id.into(),
            ],
        )
        .await
        .map_err(&e)?;
        if let Some(q) = rec.queue_id {
            tx.execute(
                "UPDATE queue SET state = 'dropped', outcome = 'restored', finished_at = $1 WHERE id = $2 AND state IN ('pending', 'failed')",
                &[now.as_str().into(), q.into()],
            )
            .await
            .map_err(&e)?;
        }
        let detail = format!("from {}", rec.quarantine_key);
        audit(
            tx.as_mut(),
            &now,
            actor,
            &rec.object,
            "restored",
            Some(&detail),
            rec.queue_id,
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }
}
