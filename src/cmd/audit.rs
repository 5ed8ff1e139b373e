//! `assetgc audit`: the audit log of deletions, quarantines, drops, retries and overrides.

use crate::cli::{AuditArgs, Global};
use crate::error::{Error, Exit, Result};
use crate::state::State;

pub async fn run(g: &Global, args: &AuditArgs) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    let state = State::open(&cfg.state_url).await?;
    let rows = state.audit_log(args.limit, args.key.as_deref()).await;
    state.close().await;
    let rows = rows?;
    if args.json {
        let all: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "at": r.at, "actor": r.actor, "store": r.store,
                    "resource_type": r.resource_type, "key": r.key, "outcome": r.outcome,
                    "detail": r.detail, "queue_id": r.queue_id,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| Error::State(e.to_string()))?
        );
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        println!("The audit log is empty.");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<20}  {:<12}  {:<10}  {:<16}  KEY",
        "AT (UTC)", "ACTOR", "STORE", "OUTCOME"
    );
    for r in &rows {
        let key = if r.resource_type.is_empty() {
            r.key.clone()
        } else {
            format!("{}/{}", r.resource_type, r.key)
        };
        println!(
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
