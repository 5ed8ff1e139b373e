//! `serve`'s queue worker: drains due entries with [`crate::queue::worker::run`] (the same code
//! as `queue run`, so every check of SPEC §6 holds), then waits for the next poll or for a wake
//! from an endpoint that just queued something. On shutdown it finishes the batch it holds and
//! stops; entries it had not claimed stay `pending`, and a claim it could not finish returns to
//! `pending` when its holder is gone (SPEC §6 invariant 5).

use crate::queue::worker::{self, RunOptions};

use super::AppState;

pub async fn run(state: AppState) {
    let mut opts = RunOptions::from_config(&state.app.cfg, "serve");
    opts.stop = Some(state.shutdown.clone());
    loop {
        if state.shutdown.is_cancelled() {
            break;
        }
        match worker::run(&state.app, &opts, &|_| {}).await {
            Ok(t) if t.claimed > 0 || t.outbox_rows > 0 => {
                state
                    .queue_generation
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    claimed = t.claimed,
                    deleted = t.deleted,
                    quarantined = t.quarantined,
                    already_gone = t.already_gone,
                    referenced = t.referenced,
                    retrying = t.retrying,
                    failed = t.failed,
                    outbox_rows = t.outbox_rows,
                    "queue worked"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::error::one_line(&e), "queue worker"),
        }
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            () = state.worker_wake.notified() => {},
            () = tokio::time::sleep(state.opts.worker_poll) => {},
        }
    }
}
