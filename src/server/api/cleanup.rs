//! `/api/cleanup/*` (SPEC §8), the names the seed apps' clients call; every path also answers
//! with a trailing `/`.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::queue::Stats;
use crate::server::AppState;
use crate::server::error::{ApiResult, ErrorBody};
use crate::state::QueueStore as _;

/// Stats may be this stale (SPEC §9: "at most 1 s"): one queue read serves every caller.
const STATS_TTL: Duration = Duration::from_secs(1);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .route("/api/cleanup/stats/", axum::routing::get(stats))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptsCount {
    pub attempts: u32,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueStats {
    /// Entries `pending` or `claimed`.
    pub total_pending: u64,
    pub total_failed: u64,
    /// RFC 3339 UTC; `null` when nothing waits.
    pub oldest_queued: Option<String>,
    pub newest_queued: Option<String>,
    /// Pending and claimed entries grouped by attempts so far.
    pub by_attempts: Vec<AttemptsCount>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsResponse {
    pub success: bool,
    pub stats: QueueStats,
}

impl From<&Stats> for QueueStats {
    fn from(s: &Stats) -> QueueStats {
        QueueStats {
            total_pending: s.total_pending,
            total_failed: s.total_failed,
            oldest_queued: s.oldest_queued.clone(),
            newest_queued: s.newest_queued.clone(),
            by_attempts: s
                .by_attempts
                .iter()
                .map(|&(attempts, count)| AttemptsCount { attempts, count })
                .collect(),
        }
    }
}

/// The deletion queue's figures.
#[utoipa::path(
    get,
    path = "/api/cleanup/stats",
    tag = "cleanup",
    responses(
        (status = 200, description = "The queue's figures (at most 1 s old)", body = StatsResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn stats(State(s): State<AppState>) -> ApiResult<Json<StatsResponse>> {
    let generation = s.queue_generation.load(Ordering::Relaxed);
    if let Some((g, at, cached)) = s
        .stats_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        && *g == generation
        && at.elapsed() < STATS_TTL
    {
        return Ok(Json(cached.clone()));
    }
    let stats = s.app.state.queue_stats().await?;
    let answer = StatsResponse {
        success: true,
        stats: QueueStats::from(&stats),
    };
    *s.stats_cache.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((generation, Instant::now(), answer.clone()));
    Ok(Json(answer))
}
