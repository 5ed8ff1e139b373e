//! Dashboard sessions: the SHA-256 of each session cookie, the token it was opened with (by its
//! hash) and its CSRF token. Kept in the state database so that several `serve` instances behind
//! one address share them.

use chrono::{DateTime, Utc};

use super::{Mode, State, context};
use crate::error::Result;
use crate::time::rfc3339;

/// A session as the state database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// Lowercase hex SHA-256 of the token the session was opened with.
    pub token_sha256: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl State {
    /// Records a new session (and forgets the expired ones).
    pub async fn create_ui_session(
        &self,
        id_sha256: &str,
        token_sha256: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let e = context("cannot record the session");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let now_text = rfc3339(now);
        tx.execute(
            "DELETE FROM ui_sessions WHERE expires_at < $1",
            &[now_text.as_str().into()],
        )
        .await
        .map_err(&e)?;
        tx.execute(
            "INSERT INTO ui_sessions (id_sha256, token_sha256, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                id_sha256.into(),
                token_sha256.into(),
                csrf.into(),
                now_text.as_str().into(),
                rfc3339(expires_at).as_str().into(),
            ],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    /// The live session of that cookie hash, if any.
    pub async fn ui_session(
        &self,
        id_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UiSession>> {
        let rows = self
            .read(
                "SELECT token_sha256, csrf, expires_at FROM ui_sessions WHERE id_sha256 = $1 AND expires_at > $2",
                &[id_sha256.into(), rfc3339(now).as_str().into()],
            )
            .await
            .map_err(context("cannot read the session"))?;
        rows.into_iter()
            .next()
            .map(|mut r| {
                Ok(UiSession {
                    token_sha256: r.text(0)?,
                    csrf: r.text(1)?,
                    expires_at: r.time(2)?,
                })
            })
            .transpose()
    }

    /// Ends a session (logout).
    pub async fn end_ui_session(&self, id_sha256: &str) -> Result<()> {
        let e = context("cannot end the session");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "DELETE FROM ui_sessions WHERE id_sha256 = $1",
            &[id_sha256.into()],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }
}
