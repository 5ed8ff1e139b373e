//! `assetgc demo`.
use super::Ui;
use crate::cli::{DemoArgs, Global};
use crate::error::{Exit, Result};
pub async fn run(_g: &Global, _a: &DemoArgs, _ui: Ui) -> Result<Exit> {
    tokio::task::yield_now().await;
    Ok(Exit::Ok)
}
