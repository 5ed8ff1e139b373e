//! `assetgc token new`: a token printed alone on stdout, once; only its SHA-256 is kept.

use chrono::Utc;

use crate::cli::{Global, TokenCommand, TokenScope};
use crate::config::Scope;
use crate::error::{Error, Exit, Result};
use crate::server::auth;

pub async fn run(g: &Global, c: &TokenCommand) -> Result<Exit> {
    let TokenCommand::New(a) = c;
    if let Some(name) = &a.name
        && (name.trim().is_empty() || name.chars().any(char::is_control))
    {
        return Err(Error::Usage(
            "--name must be a non-empty name without control characters".into(),
        ));
    }
    let cfg = super::config_or_env(g)?;
    if let Some(name) = &a.name
        && cfg.server.tokens.iter().any(|t| &t.name == name)
    {
        return Err(Error::Usage(format!(
            "[server] tokens already has a token named `{name}`; pick another --name"
        )));
    }
    let scope = match a.scope {
        TokenScope::Read => Scope::Read,
        TokenScope::Write => Scope::Write,
    };
    let token = auth::new_token()?;
    let sha = hex::encode(auth::digest(&token));
    super::with_app(cfg, |app| async move {
        let name = app
            .state
            .create_token(a.name.as_deref(), &sha, scope, Utc::now())
            .await?;
        tracing::info!(name = %name, scope = scope.as_str(), "token stored");
        super::print(&format!("{token}\n"))?;
        Ok(Exit::Ok)
    })
    .await
}
