//! `/api/cleanup/*` (SPEC §8), the names the seed apps' clients call; every path also answers
//! with a trailing `/`.
//!
//! `POST /api/cleanup/bulk` runs the retention policies (`ops::clean`): the plan is made while
//! the request waits (60 s at most), the deletions run in the background and are polled through
//! `GET /api/cleanup/bulk/{job_id}`. `POST /api/cleanup/run` works one batch of the queue.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, routing};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::queue::Stats;
use crate::error::Error;
use crate::ops::clean::{self, CleanOutcome, CleanRequest};
use crate::queue::{RunOptions, Totals};
use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::state::{CleanTally, QueueStore as _};

/// Stats may be this stale (SPEC §9: "at most 1 s"): one queue read serves every caller.
pub const STATS_TTL: Duration = Duration::from_secs(1);

/// How long a finished bulk run waits for its entries that another worker (serve's own) still
/// holds, before it records what it knows: a claim older than this returns to `pending`.
const CLAIM_WAIT: Duration = Duration::from_mins(11);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .route("/api/cleanup/stats/", routing::get(stats))
        .routes(routes!(bulk))
        .route("/api/cleanup/bulk/", routing::post(bulk))
        .routes(routes!(bulk_status))
        .route("/api/cleanup/bulk/{job_id}/", routing::get(bulk_status))
        .routes(routes!(run_batch))
        .route("/api/cleanup/run/", routing::post(run_batch))
}

/// A JSON body, read whatever its `Content-Type` says: empty is `T`'s default (the seed clients
/// may POST none), anything else must parse as `T`, else 400 saying why.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid here: {e}")))
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
    let answer = s
        .stats_cache
        .get(generation, || async {
            let stats = s.app.state.queue_stats().await?;
            Ok(StatsResponse {
                success: true,
                stats: QueueStats::from(&stats),
            })
        })
        .await?;
    Ok(Json(answer))
}

/// `POST /api/cleanup/bulk`'s body; every field may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct BulkRequest {
    /// Replaces `older_than` of every selected policy, in whole days.
    pub retention_days: Option<u64>,
    /// Plan only, queue nothing. Default `true`: a caller that does not say otherwise deletes
    /// nothing.
    pub dry_run: Option<bool>,
    /// One policy by name; left out: every policy.
    pub policy: Option<String>,
    /// Send the run's summary where `[notify]` says once it is over, as the CLI's `--notify`.
    pub notify: Option<bool>,
}

/// A bulk cleanup's figures (SPEC §2 Policies): in the answer to the POST they say what was
/// queued (or would be, in a dry run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct BulkResponse {
    /// Every policy's plan was complete (and, once done, no entry failed for good).
    pub success: bool,
    pub message: String,
    /// Objects queued (or that would be, in a dry run).
    pub deleted_count: u64,
    pub deleted_size_mb: f64,
    /// `total_files_scanned` − `deleted_count`.
    pub retained_count: u64,
    /// Objects listed under the policies' prefixes after `exclude`.
    pub total_files_scanned: u64,
    pub dry_run: bool,
    /// The first 10 keys.
    pub deleted_files_sample: Vec<String>,
    /// The `retention_days` asked for, else the policies' common `older_than` in days (`null`
    /// when they differ).
    #[schema(value_type = Option<f64>)]
    pub retention_days: Option<serde_json::Value>,
    /// The run's id: poll `GET /api/cleanup/bulk/{job_id}`.
    pub job_id: i64,
    /// Every policy's join saw all it needed; a policy whose listing or queries failed queued
    /// nothing.
    pub complete: bool,
}

/// The answer when the plan takes longer than 60 s: it goes on in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkAccepted {
    pub job_id: i64,
}

/// `GET /api/cleanup/bulk/{job_id}`: the run's figures and how far it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkStatus {
    #[serde(flatten)]
    pub run: BulkResponse,
    /// `running` or `done`.
    pub state: String,
    /// The objects queued (a dry run: that would be); `deleted_count` too while running.
    pub queued: u64,
    /// Once done (a real run): entries dropped because a reference names the key again.
    pub dropped_referenced: u64,
    /// Once done: entries that failed for good (`failed` in the queue).
    pub failed: u64,
    /// Once done: entries whose object was gone already.
    pub already_gone: u64,
    /// Once done: entries still waiting (a failed attempt to be retried, a budget stop).
    pub retrying: u64,
}

/// Runs the retention policies (SPEC §2 `[[policies]]`, the same run as `assetgc clean`).
///
/// The plan is made while the request waits, 60 s at most: then 200 with its figures; past
/// that 202 with `job_id` alone, and the run goes on. In a real run the figures say what was
/// queued; the deletions go on in the background (the queue's worker, with every check of SPEC
/// §6), and `GET /api/cleanup/bulk/{job_id}` says when they are done and what they did.
///
/// `dry_run` defaults to `true`, as `POST /api/scans/{id}/purge`'s does: SPEC leaves this
/// endpoint's default open, and a request that does not say `"dry_run": false` deletes nothing.
/// A real run deletes nothing younger than `min_age`, nothing referenced (re-checked right
/// before each delete), and moves to quarantine where it is on.
#[utoipa::path(
    post,
    path = "/api/cleanup/bulk",
    tag = "cleanup",
    request_body(content = BulkRequest, description = "All fields optional; without \"dry_run\": false it is a dry run"),
    responses(
        (status = 200, description = "The plan: what was queued (or would be, in a dry run)", body = BulkResponse),
        (status = 202, description = "Planning takes longer than 60 s: it goes on; poll the job", body = BulkAccepted),
        (status = 400, description = "Bad input (a body that does not parse, an unknown policy, no policies)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 413, description = "Body past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "Every store or database of the policies is out of reach, or the state database failed", body = ErrorBody),
    )
)]
pub async fn bulk(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let b: BulkRequest = json_body(&body)?;
    let req = CleanRequest {
        policy: b.policy,
        retention_days: b.retention_days,
        dry_run: b.dry_run.unwrap_or(true),
        actor: caller.actor(),
        progress: None,
    };
    let id = clean::begin(&s.app, &req).await?;
    let (tx, rx) = oneshot::channel();
    let watch = (b.notify == Some(true))
        .then(|| crate::notify::Watch::new(&s.app, crate::notify::Kind::Clean));
    s.spawn(bulk_job(s.clone(), id, req, tx, watch));
    match tokio::time::timeout(s.opts.plan_wait, rx).await {
        Ok(Ok(Ok(out))) => Ok(Json(response(&out)).into_response()),
        Ok(Ok(Err(e))) => Err(ApiError::from(e)),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the cleanup stopped before its plan was made; the server log has the details",
        )),
        Err(_) => Ok((StatusCode::ACCEPTED, Json(BulkAccepted { job_id: id })).into_response()),
    }
}

fn response(out: &CleanOutcome) -> BulkResponse {
    serde_json::from_value(out.to_json()).unwrap_or_default()
}

/// A bulk run in the background: plans and queues (handing the plan to the request that
/// waits, if it still does), then works the entries, waits for those another worker holds, and
/// records what became of the entries this run queued.
async fn bulk_job(
    s: AppState,
    id: i64,
    req: CleanRequest,
    plan_to: oneshot::Sender<crate::error::Result<CleanOutcome>>,
    watch: Option<crate::notify::Watch>,
) {
    let app = &s.app;
    let planned = async {
        let before = app.state.max_queue_id().await?;
        let out = clean::plan_and_queue(app, id, &req).await?;
        let upto = app.state.max_queue_id().await?;
        Ok::<_, Error>((before, out, upto))
    }
    .await;
    let (before, mut out, upto) = match planned {
        Ok(p) => p,
        Err(e) => {
            record_failure(&s, id, req.dry_run, &e).await;
            let _ = plan_to.send(Err(e));
            return;
        }
    };
    if req.dry_run {
        clean::finished(app, &out);
        let _ = plan_to.send(Ok(out));
        notify(watch, id).await;
        return;
    }
    s.queue_changed();
    let _ = plan_to.send(Ok(out.clone()));
    let tally = match work_and_settle(&s, &out, before, upto, &req.actor).await {
        Ok(t) => t,
        Err(e) => {
            record_failure(&s, id, false, &e).await;
            return;
        }
    };
    out.worked = Some(Totals {
        deleted: tally.deleted,
        quarantined: tally.quarantined,
        already_gone: tally.already_gone,
        referenced: tally.referenced,
        failed: tally.failed,
        retrying: tally.pending + tally.claimed,
        dropped: tally.dropped,
        ..Totals::default()
    });
    if let Err(e) = app.state.update_cleanup(id, &out.to_json(), true).await {
        tracing::warn!(job_id = id, error = %crate::error::one_line(&e), "bulk cleanup: cannot record its outcome");
    }
    clean::finished(app, &out);
    notify(watch, id).await;
}

/// Sends a bulk run's notification when its request asked for one.
async fn notify(watch: Option<crate::notify::Watch>, id: i64) {
    if let Some(w) = watch {
        let sent = w.finish(Some(id)).await;
        tracing::info!(job_id = id, "{}", sent.line());
    }
}

/// Works the run's entries (with every other entry of its policies that is due), then reads
/// how they stand. Another worker (serve's own) may hold some of them, or have them locked in a
/// claim not yet committed (skipped by this one's claim): while any is claimed, or pending and
/// due, it looks again — until [`CLAIM_WAIT`] is over, the API budget stopped the work, or the
/// server stops. Entries waiting for a retry after a failed attempt count as `retrying`.
async fn work_and_settle(
    s: &AppState,
    out: &CleanOutcome,
    before: i64,
    upto: i64,
    actor: &str,
) -> crate::error::Result<CleanTally> {
    let deadline = Instant::now() + CLAIM_WAIT;
    loop {
        let budget_stop = match clean::work(&s.app, out, actor, Some(&s.shutdown)).await {
            Ok(t) => t.budget_stop.is_some(),
            Err(e) => {
                tracing::warn!(error = %crate::error::one_line(&e), "bulk cleanup: working its entries failed");
                false
            }
        };
        s.queue_changed();
        let mut all = CleanTally::default();
        for p in &out.policies {
            let t = s
                .app
                .state
                .clean_tally(before, upto, actor, &p.policy)
                .await?;
            all.deleted += t.deleted;
            all.quarantined += t.quarantined;
            all.already_gone += t.already_gone;
            all.referenced += t.referenced;
            all.dropped += t.dropped;
            all.failed += t.failed;
            all.pending += t.pending;
            all.due += t.due;
            all.claimed += t.claimed;
        }
        let settled = all.claimed == 0 && (all.due == 0 || budget_stop);
        if settled || Instant::now() >= deadline || s.shutdown.is_cancelled() {
            return Ok(all);
        }
        tokio::select! {
            () = s.shutdown.cancelled() => {},
            () = tokio::time::sleep(Duration::from_millis(500)) => {},
        }
    }
}

/// A run that failed is recorded `done` with why, so that polling it ends.
async fn record_failure(s: &AppState, id: i64, dry_run: bool, e: &Error) {
    let why = match e {
        Error::Usage(_) | Error::NotFound(_) | Error::Refused(_) => crate::error::one_line(e),
        // Which database or store, and where, stays in the server's log.
        Error::Unreachable(_) => {
            "a store or database could not be reached; the server log has the details".to_string()
        }
        _ => "the server failed; its log has the details".to_string(),
    };
    tracing::warn!(job_id = id, error = %crate::error::one_line(e), "bulk cleanup failed");
    let summary = serde_json::json!({
        "success": false,
        "message": format!("the cleanup failed: {why}"),
        "dry_run": dry_run,
        "job_id": id,
    });
    if let Err(e) = s.app.state.update_cleanup(id, &summary, true).await {
        tracing::warn!(job_id = id, error = %crate::error::one_line(&e), "bulk cleanup: cannot record its failure");
    }
}

/// A bulk cleanup's figures and state (SPEC §8). While `running`, `deleted_count` is what was
/// queued (0 before the plan is made). Once `done`, in a real run `deleted_count` counts the
/// objects this run's entries actually deleted (moved to quarantine included), with
/// `dropped_referenced`, `failed`, `already_gone` and `retrying` beside it; `deleted_size_mb`
/// stays the planned size. A dry run's figures stay the plan's: it deletes nothing. Runs of
/// `assetgc clean` have job ids too and read the same way.
#[utoipa::path(
    get,
    path = "/api/cleanup/bulk/{job_id}",
    tag = "cleanup",
    params(("job_id" = i64, Path, description = "The `job_id` the POST answered")),
    responses(
        (status = 200, description = "The run's figures and state", body = BulkStatus),
        (status = 400, description = "A job id that is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn bulk_status(
    State(s): State<AppState>,
    Path(job_id): Path<i64>,
) -> ApiResult<Json<BulkStatus>> {
    let rec = s
        .app
        .state
        .cleanup(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cleanup run has job id {job_id}")))?;
    let summary = rec.summary.unwrap_or_else(|| serde_json::json!({}));
    let mut run: BulkResponse = serde_json::from_value(summary.clone()).unwrap_or_default();
    run.job_id = rec.id;
    run.dry_run = rec.dry_run;
    let done = rec.state == "done";
    let n = |k: &str| {
        summary
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let queued = run.deleted_count;
    if run.message.is_empty() {
        run.message = if done {
            "done".into()
        } else {
            "planning".into()
        };
    }
    let mut status = BulkStatus {
        state: if done { "done" } else { "running" }.into(),
        queued,
        dropped_referenced: 0,
        failed: 0,
        already_gone: 0,
        retrying: 0,
        run,
    };
    if done && !rec.dry_run {
        status.run.deleted_count = n("deleted");
        status.dropped_referenced = n("dropped_referenced");
        status.failed = n("failed");
        status.already_gone = n("already_gone");
        status.retrying = n("retrying");
    }
    Ok(Json(status))
}

/// `?batch_size=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Entries in the batch: 1 to 1000 (default: `[queue] batch_size`, 100).
    #[param(minimum = 1, maximum = 1000)]
    pub batch_size: Option<u32>,
}

/// What one batch did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    pub success: bool,
    /// Entries claimed and worked.
    pub processed: u64,
    /// Objects deleted (moved to quarantine included).
    pub deleted: u64,
    /// Entries that failed for good in this batch (now `failed`).
    pub failed: u64,
    /// Entries `pending` or `claimed` after the batch (`total_pending`).
    pub remaining: u64,
    pub already_gone: u64,
    /// Entries dropped because a reference names the key again.
    pub dropped_referenced: u64,
    /// Entries whose attempt failed and that will be tried again.
    pub retrying: u64,
}

/// Works one batch of the queue now (SPEC §6): due entries, up to `batch_size`, with every
/// check the worker makes, as the caller.
#[utoipa::path(
    post,
    path = "/api/cleanup/run",
    tag = "cleanup",
    params(RunQuery),
    responses(
        (status = 200, description = "What the batch did", body = RunResponse),
        (status = 400, description = "batch_size out of 1..=1000 or not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 413, description = "Body past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn run_batch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<RunResponse>> {
    let n = match q.batch_size {
        None => s.app.cfg.queue.batch_size,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "batch_size {n} is out of range; ask for 1 to 1000"
            )));
        }
    };
    let mut opts = RunOptions::from_config(&s.app.cfg, &caller.actor());
    opts.batch_size = n;
    opts.limit = Some(n as u64);
    opts.stop = Some(s.shutdown.clone());
    let ran = crate::queue::run(&s.app, &opts, &|_| {}).await;
    s.queue_changed();
    let t = ran?;
    let remaining = s.app.state.queue_stats().await?.total_pending;
    Ok(Json(RunResponse {
        success: true,
        processed: t.claimed,
        deleted: t.deleted + t.quarantined,
        failed: t.failed,
        remaining,
        already_gone: t.already_gone,
        dropped_referenced: t.referenced,
        retrying: t.retrying,
    }))
}
