//! `assetgc init`: write a commented assetgc.toml.
use crate::cli::InitArgs;
use crate::error::{Exit, Result};
pub fn run(_a: &InitArgs) -> Result<Exit> {
    Ok(Exit::Ok)
}
