//! API tokens made by `assetgc token new` (SPEC §8): only each token's SHA-256 is kept.

use chrono::{DateTime, Utc};

use super::{Mode, State, context};
use crate::config::Scope;
use crate::error::{Error, Result};
use crate::time::rfc3339;

/// A token as the state database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub name: String,
    /// Lowercase hex of the SHA-256 of the token.
    pub sha256: String,
    pub scope: Scope,
}

impl State {
    /// Records a new token's hash. `name` defaults to `token-N` (N its id).
    pub async fn create_token(
        &self,
        name: Option<&str>,
        sha256_hex: &str,
        scope: Scope,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let e = context("cannot record the token");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        if let Some(n) = name
            && !tx
                .query("SELECT 1 FROM api_tokens WHERE name = $1", &[n.into()])
                .await
                .map_err(&e)?
                .is_empty()
        {
            return Err(Error::Usage(format!(
                "a token named `{n}` exists already; pick another --name"
            )));
        }
        let rows = tx
            .query(
                "INSERT INTO api_tokens (name, sha256, scope, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    name.unwrap_or("").into(),
                    sha256_hex.into(),
                    scope.as_str().into(),
                    rfc3339(now).as_str().into(),
                ],
            )
            .await
            .map_err(&e)?;
        let id = rows
            .first()
            .ok_or_else(|| Error::State("cannot record the token: no id came back".into()))?
            .int(0)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                // `token-N`, or, when someone named a token so, `token-N-<id>`.
                let mut n = format!("token-{id}");
                if !tx
                    .query(
                        "SELECT 1 FROM api_tokens WHERE name = $1",
                        &[n.as_str().into()],
                    )
                    .await
                    .map_err(&e)?
                    .is_empty()
                {
                    n = format!("token-{id}-{id}");
                }
                tx.execute(
                    "UPDATE api_tokens SET name = $1 WHERE id = $2",
                    &[n.as_str().into(), id.into()],
                )
                .await
                .map_err(&e)?;
                n
            }
        };
        tx.commit().await.map_err(&e)?;
        Ok(name)
    }

    /// Every token `token new` made.
    pub async fn tokens(&self) -> Result<Vec<StoredToken>> {
        let rows = self
            .read(
                "SELECT name, sha256, scope FROM api_tokens ORDER BY id",
                &[],
            )
            .await
            .map_err(context("cannot read the API tokens"))?;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            let scope = r.text(2)?;
            out.push(StoredToken {
                name: r.text(0)?,
                sha256: r.text(1)?,
                scope: Scope::parse(&scope).unwrap_or(Scope::Read),
            });
        }
        Ok(out)
    }
}
