//! `/api/jobs` (SPEC §8): the `[[jobs]]` with their last and next runs, a run asked for now,
//! and each job's history with the captured output.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::jobs::{self, Begun, JobView, RunView, Trigger};
use crate::server::AppState;
use crate::server::api::page::{Page, PageQuery};
use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::state::JobRun;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(run_now))
        .routes(routes!(runs))
        .routes(routes!(run_report))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobsResponse {
    pub success: bool,
    pub jobs: Vec<JobView>,
}

/// The jobs, each with its last run, next run and whether a run goes on.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    responses(
        (status = 200, description = "Every [[jobs]] entry with its runs", body = JobsResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<JobsResponse>> {
    Ok(Json(JobsResponse {
        success: true,
        jobs: jobs::views(&s.app).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    pub run_id: i64,
}

/// Starts a run of the job now; it goes on in the background (`GET /api/jobs/{name}/runs`).
#[utoipa::path(
    post,
    path = "/api/jobs/{name}/run",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name in [[jobs]]")),
    responses(
        (status = 202, description = "The run started", body = RunStarted),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token may only read", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "A run of the job goes on (here or on another instance)", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database cannot be reached, or the server is stopping", body = ErrorBody),
    )
)]
pub async fn run_now(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    let job = jobs::job_named(&s.app.cfg.jobs, &name)?.clone();
    if s.shutdown.is_cancelled() {
        return Err(ApiError::from(crate::error::Error::Unreachable(
            "the server is stopping; ask again once it is back".into(),
        )));
    }
    match s.jobs.begin(&job, Trigger::Manual, None).await? {
        Begun::Run(ticket) => {
            let run_id = ticket.id;
            let state = s.clone();
            s.spawn(async move {
                state.jobs.execute(ticket, &state.shutdown).await;
            });
            Ok((StatusCode::ACCEPTED, Json(RunStarted { run_id })))
        }
        Begun::Busy(why) => Err(crate::error::Error::Refused(why).into()),
        Begun::WindowTaken => {
            Err(crate::error::Error::Refused(format!("job `{name}` is running already")).into())
        }
    }
}

/// A run with what it printed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    /// The assetgc command line it ran.
    pub command: String,
    /// The process that ran it.
    pub holder: String,
    /// stdout and stderr together (the last 64 KiB).
    pub output: Option<String>,
    /// The scan's report is kept with the run (`GET /api/jobs/{name}/runs/{id}/report`).
    pub has_report: bool,
}

impl From<&JobRun> for RunDetail {
    fn from(r: &JobRun) -> RunDetail {
        RunDetail {
            run: RunView::from(r),
            command: r.command.clone(),
            holder: r.holder.clone(),
            output: r.output.clone(),
            has_report: r.report.is_some(),
        }
    }
}

/// A job's runs, newest first, with their output.
#[utoipa::path(
    get,
    path = "/api/jobs/{name}/runs",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name in [[jobs]]"), PageQuery),
    responses(
        (status = 200, description = "One page of the job's runs", body = Page<RunDetail>),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn runs(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<RunDetail>>> {
    let limit = q.limit()?;
    // Ids are positive: a cursor of 0 or below is none this endpoint gave.
    let before = match q.id_cursor()? {
        Some(n) if n <= 0 => {
            return Err(ApiError::bad_request(format!(
                "cursor `{n}` is not one this endpoint gave; pass a page's next_cursor as it is"
            )));
        }
        other => other,
    };
    jobs::job_named(&s.app.cfg.jobs, &name)?;
    let _ = s.app.state.abandon_job_runs().await?;
    let mut rows = s.app.state.job_runs(&name, limit + 1, before).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(RunDetail::from).collect(),
        next_cursor,
        total: s.app.state.count_job_runs(&name).await?,
    }))
}

/// The report of the scan a run made, as the run kept it.
#[utoipa::path(
    get,
    path = "/api/jobs/{name}/runs/{id}/report",
    tag = "jobs",
    params(
        ("name" = String, Path, description = "The job's name in [[jobs]]"),
        ("id" = i64, Path, description = "The run's id"),
    ),
    responses(
        (status = 200, description = "The report, CSV or JSON as the scan wrote it", content(
            (String = "text/csv"),
            (serde_json::Value = "application/json"),
        )),
        (status = 400, description = "A bad id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job, run, or no report kept", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn run_report(
    State(s): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    jobs::job_named(&s.app.cfg.jobs, &name)?;
    let run = s
        .app
        .state
        .job_run(id)
        .await?
        .filter(|r| r.job == name)
        .ok_or_else(|| ApiError::not_found(format!("job `{name}` has no run {id}")))?;
    let report = run
        .report
        .ok_or_else(|| ApiError::not_found(format!("run {id} kept no report")))?;
    let kind = if run.report_path.as_deref().is_some_and(|p| {
        std::path::Path::new(p)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    }) {
        "application/json"
    } else {
        "text/csv; charset=utf-8"
    };
    Ok(([(axum::http::header::CONTENT_TYPE, kind)], report).into_response())
}
