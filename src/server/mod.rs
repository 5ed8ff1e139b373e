//! `assetgc serve` (SPEC §8): one process that is the HTTP API, the scheduler of `[[jobs]]` and
//! the queue worker, all on one [`App`]. [`router`] builds the whole API from a state (tests
//! drive it with `tower::ServiceExt::oneshot`); [`serve`] only binds it, starts the worker and
//! the scheduler, and on SIGTERM or SIGINT stops taking requests, lets the worker finish the
//! batch it holds, and waits for background work before it closes the state database.
//!
//! Long work (a scan, a real bulk cleanup) runs as a background task on the state's
//! [`TaskTracker`] and is polled through its id; no request waits for it.

pub mod api;
pub mod auth;
pub mod cache;
pub mod error;
pub mod metrics;
pub mod ui;
pub mod worker;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::App;
use crate::error::{Error, Result};

/// How long a stopping server waits for background work (scans, bulk cleanups) before it
/// records what is unfinished as stopped and exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Request bodies past this are refused with 413 (SPEC §8).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How a server is set up beyond its config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The assetgc binary that job runs execute (this process's own, by default).
    pub exe: PathBuf,
    /// Run the queue worker in this process.
    pub worker: bool,
    /// Run the scheduler of `[[jobs]]` in this process.
    pub scheduler: bool,
    /// How often the worker looks for due entries when nothing woke it.
    pub worker_poll: Duration,
    /// How long `POST /api/cleanup/bulk` waits for its plan before answering 202 (SPEC: 60 s).
    pub plan_wait: Duration,
    /// Logs are JSON lines (`--log-format json`): the "listening" line on stderr is one too.
    pub json_logs: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("assetgc")),
            worker: true,
            scheduler: true,
            worker_poll: Duration::from_secs(5),
            plan_wait: Duration::from_mins(1),
            json_logs: false,
        }
    }
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub app: Arc<App>,
    pub opts: ServeOptions,
    pub auth: auth::Auth,
    pub metrics: metrics::Metrics,
    pub jobs: crate::jobs::Scheduler,
    /// Background work (scans, bulk cleanups, job runs) the server waits for on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server is asked to stop.
    pub shutdown: CancellationToken,
    /// Wakes the worker at once (entries were just queued).
    pub worker_wake: Notify,
    /// Bumped whenever this server changes the queue; cached figures older than it are stale.
    pub queue_generation: AtomicU64,
    /// `GET /api/cleanup/stats`'s last answer, by queue generation.
    pub stats_cache: cache::Fresh<api::cleanup::StatsResponse>,
    /// Finished scans' states and findings totals (`/api/scans/{id}/orphans`, `/missing`).
    pub scan_pages: api::scans::PageCache,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(app: Arc<App>, opts: ServeOptions) -> AppState {
        let auth = auth::Auth::new(&app.cfg.server);
        let jobs = crate::jobs::Scheduler::new(Arc::clone(&app), opts.exe.clone());
        AppState(Arc::new(Inner {
            metrics: metrics::Metrics::new(),
            app,
            opts,
            auth,
            jobs,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            worker_wake: Notify::new(),
            queue_generation: AtomicU64::new(0),
            stats_cache: cache::Fresh::new(api::cleanup::STATS_TTL),
            scan_pages: api::scans::PageCache::default(),
        }))
    }

    /// Says the queue changed: cached figures are stale, and the worker looks at once.
    pub fn queue_changed(&self) {
        self.queue_generation.fetch_add(1, Ordering::Relaxed);
        self.worker_wake.notify_one();
    }

    /// Runs `work` in the background; shutdown waits for it.
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }
}

/// The whole HTTP API over `state`: `/api/*` behind tokens, `/healthz`, `/metrics`,
/// `/api/openapi.json`; every non-2xx answer in the error shape.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api::routes(state.clone()).split_for_parts();
    let openapi = Arc::new(api::finish_openapi(openapi));
    let open = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&openapi);
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(metrics::routes(state.clone()));
    Router::new()
        .merge(api)
        .merge(open)
        .merge(ui::routes())
        .fallback(not_found)
        // Innermost first: the body cap, then the error shape over everything inside and the
        // cap's own 413, then the request metrics over the final status.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::map_response(error::shape))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(metrics::request_log())
        // A handler that panics answers 500 in the error shape, never a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    axum::response::IntoResponse::into_response(error::ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed; its log has the details",
    ))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint; GET /api/openapi.json lists them")
}

/// Binds `listen`, serves until SIGTERM or SIGINT, then shuts down gracefully: no new requests,
/// the worker finishes its batch, background work finishes, the state database is closed.
pub async fn serve(app: Arc<App>, listen: &str, opts: ServeOptions) -> Result<()> {
    // Scans and clean runs that a process on this host left running when it died.
    close_abandoned(
        &app,
        &crate::queue::worker::is_dead,
        "stopped: the process running it ended before it finished",
    )
    .await;
    let signalled = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::Usage(format!(
            "cannot listen on {listen}: {e}; pick a free address with --listen or [server] listen"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    tracing::info!(address = %local, state = %app.state.describe(), "assetgc serve is listening");
    // Tests and scripts read this line to learn the port when asked for port 0.
    if opts.json_logs {
        eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": crate::time::rfc3339(chrono::Utc::now()),
                "level": "INFO",
                "fields": {"message": "listening", "address": format!("http://{local}")},
            })
        );
    } else {
        eprintln!("listening on http://{local}");
    }
    let state = AppState::new(Arc::clone(&app), opts);
    let worker = state
        .opts
        .worker
        .then(|| tokio::spawn(worker::run(state.clone())));
    let scheduler = state
        .opts
        .scheduler
        .then(|| tokio::spawn(crate::jobs::run_scheduler(state.clone())));
    let stop = state.shutdown.clone();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            signalled.await;
            tracing::info!("shutting down: finishing the current batch and background work");
            stop.cancel();
        }
    });
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        })
        .await
        .map_err(|e| Error::io("the server stopped", e));
    stop.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    state.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait())
        .await
        .is_err()
    {
        // Scans and bulk cleanups still going on are abandoned; their rows say so.
        let me = crate::queue::worker::worker_id();
        close_abandoned(
            &app,
            &|holder: &str| holder == me,
            "stopped: the server shut down before it finished",
        )
        .await;
    }
    app.close().await;
    tracing::info!("stopped");
    served
}

/// Records the scans and clean runs left `running` by processes for which `gone` holds as
/// stopped, saying `why`; logs what it did. A failure is logged, never fatal.
pub async fn close_abandoned(
    app: &App,
    gone: &(dyn for<'x> Fn(&'x str) -> bool + Sync),
    why: &str,
) {
    match app.state.close_abandoned(gone, why).await {
        Ok((0, 0)) => {}
        Ok((scans, runs)) => {
            tracing::warn!(
                scans,
                clean_runs = runs,
                why,
                "closed unfinished scans and clean runs"
            );
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::one_line(&e), "cannot close unfinished scans and clean runs");
        }
    }
}

/// SIGTERM or SIGINT, listened for from the moment this is called (before the server says it
/// listens, so that a signal right after that line is never the default "terminate now").
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
