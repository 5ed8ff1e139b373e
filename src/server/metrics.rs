//! `GET /metrics` (SPEC §8): Prometheus text. Two parts, one after the other:
//!
//! - what this process saw: HTTP requests by route and status with their latency, counted by
//!   [`track`] into a `metrics-exporter-prometheus` recorder, and the Cloudinary calls of this
//!   process with their budgets (the ledger);
//! - what the state database holds, read at scrape time so that every instance sharing it
//!   answers the same: scans by state and the latest complete scan's findings, the queue by
//!   state, the audit log by outcome, job runs by status with their run time. Read at most once
//!   a second ([`STATE_TTL`]), whoever scrapes.
//!
//! Labels carry route templates (never a raw path, so neither ids nor keys), methods, statuses,
//! states, outcomes, job, store and cloud names: nothing secret and a bounded set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

use super::AppState;
use crate::domain::Spelling as _;
use crate::domain::scan::{ScanState, StoreStats};
use crate::state::{Figures, LatestScan};

/// The state database is read for a scrape at most this often.
pub const STATE_TTL: Duration = Duration::from_secs(1);

/// Request latency buckets, in seconds: the API answers in well under a millisecond when
/// cached, a scan's pages in tens of milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram samples wait in the recorder until a scrape or an upkeep folds them into buckets;
/// an upkeep every this many requests bounds them when nobody scrapes.
const UPKEEP_EVERY: u64 = 4096;

/// The queue's states, reported even when no entry is in one (a dashboard sees a 0, not a gap).
const QUEUE_STATES: &[&str] = &["pending", "claimed", "failed", "done", "dropped"];

const HTTP_REQUESTS: &str = "assetgc_http_requests_total";
const HTTP_DURATION: &str = "assetgc_http_request_duration_seconds";

/// The request metrics of one server, and its cache of the state database's figures.
///
/// Each server has its own recorder, used through [`metrics::with_local_recorder`], rather than
/// one installed process-wide: a process-wide recorder can be installed once only, and tests
/// run several servers in one process whose counts must not mix.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    requests: AtomicU64,
    /// The state database's part of the last scrape.
    state_part: super::cache::Fresh<String>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!(
                HTTP_REQUESTS,
                "HTTP requests answered, by method, route template and status."
            );
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "Time to answer an HTTP request, by method and route template."
            );
        });
        let handle = recorder.handle();
        Metrics {
            recorder,
            handle,
            requests: AtomicU64::new(0),
            state_part: super::cache::Fresh::new(STATE_TTL),
        }
    }

    /// Counts one answered request.
    fn observe(&self, method: &'static str, route: String, status: StatusCode, took: Duration) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!(
                HTTP_REQUESTS,
                "method" => method,
                "route" => route.clone(),
                "status" => status.as_u16().to_string(),
            )
            .increment(1);
            metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
                .record(took.as_secs_f64());
        });
        if self.requests.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.handle.run_upkeep();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `/metrics`, behind a read token unless `[server] metrics_public`.
pub fn routes(state: AppState) -> Router<AppState> {
    let r = Router::new().route("/metrics", axum::routing::get(scrape));
    if state.app.cfg.server.metrics_public {
        r
    } else {
        r.route_layer(axum::middleware::from_fn_with_state(
            state,
            super::auth::require,
        ))
    }
}

/// Counts every request by route and status, with its latency.
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route's template (`/api/scans/{id}`), never the path asked for: bounded, and no ids
    // or keys in labels. Requests no route matched share one label.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let response = next.run(req).await;
    s.metrics
        .observe(method, route, response.status(), started.elapsed());
    response
}

/// The request log: one `debug` line per answer (method, path, status, time) in this crate's
/// target, so `-v` shows it and the default level costs a disabled span per request.
pub type RequestLog = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
    (),
    fn(&Response, Duration, &tracing::Span),
    (),
    (),
    (),
>;

pub fn request_log() -> RequestLog {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> tracing::Span)
        .on_request(())
        .on_response(answered as fn(&Response, Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        // Failures are logged where they happen (the error mapping, the panic handler).
        .on_failure(())
}

fn request_span(req: &Request) -> tracing::Span {
    // The path, never the query string: a query may carry keys or prefixes.
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

fn answered(res: &Response, took: Duration, _span: &tracing::Span) {
    tracing::debug!(
        status = res.status().as_u16(),
        ms = took.as_secs_f64() * 1000.0,
        "answered"
    );
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn scrape(State(s): State<AppState>) -> Response {
    let mut out = s.metrics.handle.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&ledger_part(&s));
    out.push_str(&state_part(&s).await);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

/// The state database's figures as text, at most [`STATE_TTL`] old: one scrape reads them
/// while the others wait for its answer.
async fn state_part(s: &AppState) -> String {
    let read = || async {
        Ok(match s.app.state.metric_figures().await {
            Ok(f) => render_figures(&f),
            Err(e) => {
                tracing::warn!(error = %crate::error::one_line(&e), "cannot read the state database for /metrics");
                let mut out = String::new();
                family(
                    &mut out,
                    "assetgc_state_up",
                    "gauge",
                    "1 when the state database could be read for this scrape.",
                );
                out.push_str("assetgc_state_up 0\n");
                out
            }
        })
    };
    s.metrics.state_part.get(0, read).await.unwrap_or_default()
}

/// Cloudinary calls and budgets of the accounts this process used, by cloud name.
fn ledger_part(s: &AppState) -> String {
    #[derive(Default)]
    struct Cloud {
        calls: u64,
        used: u64,
        limit: u64,
    }
    let mut clouds: BTreeMap<String, Cloud> = BTreeMap::new();
    for u in s.app.ledger.usage(chrono::Utc::now()) {
        // Two accounts (API keys) of one cloud are one series: keys never go into labels.
        let c = clouds.entry(u.cloud).or_default();
        c.calls += u.run_calls;
        c.used += u.used;
        c.limit += u.limit;
    }
    let mut out = String::new();
    family(
        &mut out,
        "assetgc_api_calls_total",
        "counter",
        "Cloudinary Admin API calls this process made, by cloud.",
    );
    for (cloud, c) in &clouds {
        sample(
            &mut out,
            "assetgc_api_calls_total",
            &[("cloud", cloud)],
            c.calls,
        );
    }
    family(
        &mut out,
        "assetgc_api_budget_used_calls",
        "gauge",
        "Calls spent in the budget's current window by every run sharing the state database, by cloud.",
    );
    for (cloud, c) in &clouds {
        sample(
            &mut out,
            "assetgc_api_budget_used_calls",
            &[("cloud", cloud)],
            c.used,
        );
    }
    family(
        &mut out,
        "assetgc_api_budget_limit_calls",
        "gauge",
        "Calls the budget allows in its window, by cloud.",
    );
    for (cloud, c) in &clouds {
        sample(
            &mut out,
            "assetgc_api_budget_limit_calls",
            &[("cloud", cloud)],
            c.limit,
        );
    }
    out
}

/// The state database's figures in the exposition format.
pub fn render_figures(f: &Figures) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "assetgc_state_up",
        "gauge",
        "1 when the state database could be read for this scrape.",
    );
    out.push_str("assetgc_state_up 1\n");

    family(
        &mut out,
        "assetgc_scans",
        "gauge",
        "Scans recorded in the state database, by state.",
    );
    let mut scans: BTreeMap<&str, u64> = ScanState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (state, n) in &f.scans {
        *scans.entry(state.as_str()).or_default() += n;
    }
    for (state, n) in &scans {
        sample(&mut out, "assetgc_scans", &[("state", state)], *n);
    }
    if let Some(latest) = &f.latest_scan {
        render_latest_scan(&mut out, latest);
    }
    render_queue_and_audit(&mut out, f);
    render_job_runs(&mut out, f);
    out
}

/// A store's figure in a scan's counts.
type StoreFigure = fn(&StoreStats) -> u64;

fn render_latest_scan(out: &mut String, latest: &LatestScan) {
    family(
        out,
        "assetgc_latest_scan_id",
        "gauge",
        "Id of the newest complete scan.",
    );
    sample(out, "assetgc_latest_scan_id", &[], latest.id);
    family(
        out,
        "assetgc_latest_scan_start_time_seconds",
        "gauge",
        "When the newest complete scan started, in seconds since the Unix epoch.",
    );
    sample(
        out,
        "assetgc_latest_scan_start_time_seconds",
        &[],
        latest.started_at,
    );
    if let Some(summary) = &latest.summary {
        family(
            out,
            "assetgc_latest_scan_missing",
            "gauge",
            "References to missing files found by the newest complete scan.",
        );
        sample(out, "assetgc_latest_scan_missing", &[], summary.missing);
    }
    let per_store: [(&str, &str, StoreFigure); 3] = [
        (
            "assetgc_latest_scan_objects",
            "Objects the newest complete scan looked at, by store.",
            |s| s.objects_scanned,
        ),
        (
            "assetgc_latest_scan_orphans",
            "Orphans the newest complete scan found, by store.",
            |s| s.orphans,
        ),
        (
            "assetgc_latest_scan_orphan_bytes",
            "Bytes of the orphans the newest complete scan found, by store.",
            |s| s.orphan_bytes,
        ),
    ];
    for (name, help, value) in per_store {
        family(out, name, "gauge", help);
        for st in &latest.stores {
            sample(out, name, &[("store", &st.name)], value(st));
        }
    }
}

fn render_queue_and_audit(out: &mut String, f: &Figures) {
    family(
        out,
        "assetgc_queue_entries",
        "gauge",
        "Deletion queue entries, by state.",
    );
    let mut queue: BTreeMap<&str, u64> = QUEUE_STATES.iter().map(|s| (*s, 0)).collect();
    for (state, n) in &f.queue {
        *queue.entry(state.as_str()).or_default() += n;
    }
    for (state, n) in &queue {
        sample(out, "assetgc_queue_entries", &[("state", state)], *n);
    }

    family(
        out,
        "assetgc_deletions_total",
        "counter",
        "Audit log entries by outcome (deleted, quarantined, already_gone, referenced, failed, …).",
    );
    // `failed: <reason>` and `kept: <why>` are one outcome each: reasons are unbounded text.
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for (outcome, n) in &f.audit {
        let word = outcome.split(':').next().unwrap_or_default().trim();
        *outcomes.entry(word).or_default() += n;
    }
    for (outcome, n) in &outcomes {
        sample(out, "assetgc_deletions_total", &[("outcome", outcome)], *n);
    }
}

fn render_job_runs(out: &mut String, f: &Figures) {
    family(
        out,
        "assetgc_job_runs",
        "gauge",
        "Runs of [[jobs]] recorded in the state database, by job and status.",
    );
    let mut durations: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &f.job_runs {
        sample(
            out,
            "assetgc_job_runs",
            &[("job", &r.job), ("status", &r.status)],
            r.count,
        );
        let d = durations.entry(r.job.as_str()).or_default();
        d.0 += r.finished;
        d.1 += r.duration_ms;
    }
    family(
        out,
        "assetgc_job_run_duration_seconds",
        "summary",
        "Run time of finished job runs, by job.",
    );
    for (job, (count, ms)) in &durations {
        let mut secs = String::new();
        let _ = write!(secs, "{}.{:03}", ms / 1000, ms % 1000);
        sample(
            out,
            "assetgc_job_run_duration_seconds_sum",
            &[("job", job)],
            secs,
        );
        sample(
            out,
            "assetgc_job_run_duration_seconds_count",
            &[("job", job)],
            count,
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format needs it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobRuns;

    #[test]
    fn reasons_are_folded_into_their_outcome_and_labels_are_escaped() {
        let f = Figures {
            audit: vec![
                ("deleted".into(), 3),
                ("failed: timeout".into(), 1),
                ("failed: 500 \"oops\"".into(), 2),
            ],
            job_runs: vec![JobRuns {
                job: "nightly\"scan".into(),
                status: "succeeded".into(),
                count: 2,
                finished: 2,
                duration_ms: 1500,
            }],
            ..Figures::default()
        };
        let text = render_figures(&f);
        assert!(
            text.contains("assetgc_deletions_total{outcome=\"failed\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("assetgc_deletions_total{outcome=\"deleted\"} 3\n"));
        assert!(text.contains("assetgc_queue_entries{state=\"pending\"} 0\n"));
        assert!(text.contains("assetgc_scans{state=\"running\"} 0\n"));
        assert!(
            text.contains("assetgc_job_runs{job=\"nightly\\\"scan\",status=\"succeeded\"} 2\n")
        );
        assert!(
            text.contains("assetgc_job_run_duration_seconds_sum{job=\"nightly\\\"scan\"} 1.500\n")
        );
    }
}
