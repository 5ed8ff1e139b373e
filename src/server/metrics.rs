//! `GET /metrics` (SPEC §8): Prometheus text. Filled in by the metrics work.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

pub struct Metrics;

impl Metrics {
    pub fn new() -> Metrics {
        Metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `/metrics`.
pub fn routes(_state: AppState) -> Router<AppState> {
    Router::new()
}

/// Counts every request by route and status, with its latency.
pub async fn track(State(_s): State<AppState>, req: Request, next: Next) -> Response {
    next.run(req).await
}
