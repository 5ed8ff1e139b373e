//! `assetgc audit`: the audit log of deletions, quarantines, drops, retries and overrides.

use crate::cli::{AuditArgs, Global};
use crate::error::{Error, Exit, Result};
use crate::state::{AuditLog as _, State};

pub async fn run(g: &Global, args: &AuditArgs) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    let state = State::open(&cfg.state_url).await?;
    let rows = state.audit_log(args.limit, args.key.as_deref()).await;
    state.close().await;
    let rows = rows?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| Error::State(e.to_string()))?
        );
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        outln!("The audit log is empty.");
        return Ok(Exit::Ok);
    }
    outln!(
        "{:<20}  {:<12}  {:<10}  {:<16}  KEY",
        "AT (UTC)",
        "ACTOR",
        "STORE",
        "OUTCOME"
    );
    for r in &rows {
        let key = if r.resource_type.as_str().is_empty() {
            r.key.clone()
        } else {
            format!("{}/{}", r.resource_type.as_str(), r.key)
        };
        outln!(
            "{:<20}  {:<12}  {:<10}  {:<16}  {key}{}",
            r.at,
            r.actor,
            r.store,
            r.outcome,
            r.detail
                .as_ref()
                .map_or_else(String::new, |d| format!("  ({d})"))
        );
    }
    Ok(Exit::Ok)
}
