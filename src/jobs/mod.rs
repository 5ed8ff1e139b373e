//! The scheduler of `[[jobs]]` (SPEC §8). Filled in by the scheduler work.

use std::path::PathBuf;
use std::sync::Arc;

use crate::app::App;
use crate::server::AppState;

pub struct Scheduler {
    #[allow(dead_code)]
    app: Arc<App>,
    #[allow(dead_code)]
    exe: PathBuf,
}

impl Scheduler {
    pub fn new(app: Arc<App>, exe: PathBuf) -> Scheduler {
        Scheduler { app, exe }
    }
}

/// Runs jobs on their schedules until the server stops.
pub async fn run_scheduler(state: AppState) {
    state.shutdown.cancelled().await;
}
