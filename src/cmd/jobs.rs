//! `assetgc jobs list | run NAME | export --format …`. Filled in by the scheduler work.

use crate::cli::{Global, JobsCommand};
use crate::error::{Error, Exit, Result};

#[allow(clippy::unused_async)]
pub async fn run(_g: &Global, _c: &JobsCommand) -> Result<Exit> {
    Err(Error::Usage("jobs: not built yet".into()))
}
