//! The jobs page: every `[[jobs]]` entry with its last run (status, times, summary, output,
//! report) and its next one, read as `GET /api/jobs` reads them. "Run now" is assets/jobs.js
//! calling `POST /api/jobs/{name}/run`.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::super::{Chrome, render, require};
use super::queue::{span, when};
use crate::config::JobConfig;
use crate::server::AppState;
use crate::state::JobRun;
use crate::time::rfc3339;

struct LastRun {
    id: i64,
    status: String,
    trigger: String,
    started_raw: String,
    started: String,
    /// How long it took, or has been going on.
    duration: String,
    duration_secs: u64,
    summary: String,
    output: String,
    report: Option<String>,
}

struct Row {
    name: String,
    command: String,
    schedule: String,
    /// The time zone, when not UTC.
    tz: Option<String>,
    timeout: String,
    running: bool,
    last: Option<LastRun>,
    next_raw: String,
    next: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Page {
    chrome: Chrome,
    error: Option<String>,
    jobs: Vec<Row>,
}

/// A trigger in words: people read "scheduled", not the API's `schedule`, and "catch-up",
/// not `catch_up`.
fn trigger_text(t: &str) -> &str {
    match t {
        "schedule" => "scheduled",
        "catch_up" => "catch-up",
        "manual" => "run by hand",
        other => other,
    }
}

/// The run's length: from start to end, or to `now` while it goes on.
fn run_secs(started: DateTime<Utc>, finished: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u64 {
    let end = finished.unwrap_or(now);
    u64::try_from((end - started).num_seconds()).unwrap_or(0)
}

fn duration_text(secs: u64, finished: bool) -> String {
    if finished {
        span(secs)
    } else {
        format!("running for {}", span(secs))
    }
}

/// When the next run is, from `now`: `2026-12-06 04:00 UTC (in 3 h 50 min)`.
fn next_text(next: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = u64::try_from((next - now).num_seconds()).unwrap_or(0);
    format!("{} (in {})", when(next), span(secs))
}

fn report_href(job: &str, run: i64) -> String {
    let job: String = url::form_urlencoded::byte_serialize(job.as_bytes()).collect();
    format!("/api/jobs/{job}/runs/{run}/report")
}

fn last_run(job: &str, r: JobRun, now: DateTime<Utc>) -> LastRun {
    let secs = run_secs(r.started_at, r.finished_at, now);
    LastRun {
        id: r.id,
        trigger: trigger_text(&r.trigger).to_string(),
        started_raw: rfc3339(r.started_at),
        started: when(r.started_at),
        duration: duration_text(secs, r.finished_at.is_some()),
        duration_secs: secs,
        summary: r.summary.unwrap_or_default(),
        output: r.output.unwrap_or_default(),
        report: r.report.is_some().then(|| report_href(job, r.id)),
        status: r.status,
    }
}

async fn row(s: &AppState, job: &JobConfig, now: DateTime<Utc>) -> crate::error::Result<Row> {
    let last = s
        .app
        .state
        .job_runs(&job.name, 1, None)
        .await?
        .into_iter()
        .next()
        .map(|r| last_run(&job.name, r, now));
    let next = crate::jobs::next_after(job, now);
    Ok(Row {
        name: job.name.clone(),
        command: job.command.clone(),
        schedule: job.schedule.clone(),
        tz: (job.tz != chrono_tz::UTC).then(|| job.tz.name().to_string()),
        timeout: humantime::format_duration(job.timeout).to_string(),
        running: s.app.state.job_lease(&job.name).await?.is_some(),
        last,
        next_raw: next.map(rfc3339).unwrap_or_default(),
        next: next.map_or_else(|| "never".to_string(), |n| next_text(n, now)),
    })
}

pub async fn jobs(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&s, &headers, "/jobs").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let chrome = Chrome::new(&s, &session, "Jobs", "jobs");
    let now = Utc::now();
    let read = async {
        // As `GET /api/jobs`: runs whose process is gone are failed before they are shown.
        let _ = s.app.state.abandon_job_runs().await?;
        let mut rows = Vec::with_capacity(s.app.cfg.jobs.len());
        for job in &s.app.cfg.jobs {
            rows.push(row(&s, job, now).await?);
        }
        Ok::<_, crate::error::Error>(rows)
    };
    let page = match read.await {
        Ok(jobs) => Page {
            chrome,
            error: None,
            jobs,
        },
        Err(e) => Page {
            chrome,
            error: Some(format!(
                "The jobs could not be read: {}.",
                crate::server::error::ApiError::from(e).message
            )),
            jobs: Vec::new(),
        },
    };
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    fn t(s: &str) -> DateTime<Utc> {
        parse_rfc3339(s).expect("time")
    }

    #[test]
    fn a_finished_run_lasts_from_start_to_end() {
        let now = t("2026-12-05T01:00:00Z");
        let secs = run_secs(
            t("2026-12-05T00:10:00Z"),
            Some(t("2026-12-05T00:11:05Z")),
            now,
        );
        assert_eq!(secs, 65);
        assert_eq!(duration_text(secs, true), "1 min 5 s");
    }

    #[test]
    fn a_run_going_on_is_measured_to_now() {
        let now = t("2026-12-05T00:12:00Z");
        let secs = run_secs(t("2026-12-05T00:10:00Z"), None, now);
        assert_eq!(duration_text(secs, false), "running for 2 min");
    }

    #[test]
    fn clocks_that_disagree_never_give_a_negative_length() {
        let now = t("2026-12-05T00:09:00Z");
        assert_eq!(run_secs(t("2026-12-05T00:10:00Z"), None, now), 0);
    }

    #[test]
    fn next_run_says_when_and_how_soon() {
        let now = t("2026-12-05T00:10:00Z");
        assert_eq!(
            next_text(t("2026-12-05T04:00:00Z"), now),
            "2026-12-05 04:00 UTC (in 3 h 50 min)"
        );
    }

    #[test]
    fn triggers_read_as_words() {
        assert_eq!(trigger_text("schedule"), "scheduled");
        assert_eq!(trigger_text("catch_up"), "catch-up");
        assert_eq!(trigger_text("manual"), "run by hand");
    }

    fn render(jobs: Vec<Row>, can_write: bool) -> String {
        Page {
            chrome: Chrome {
                title: "Jobs".into(),
                active: "jobs",
                app_name: "Test".into(),
                user: "token-1".into(),
                can_write,
                csrf: "c".into(),
            },
            error: None,
            jobs,
        }
        .render()
        .expect("render")
    }

    fn job(last: Option<LastRun>) -> Row {
        Row {
            name: "detect".into(),
            command: "scan --days 7".into(),
            schedule: "0 4 * * *".into(),
            tz: Some("Europe/Paris".into()),
            timeout: "1h".into(),
            running: false,
            last,
            next_raw: "2026-12-06T03:00:00Z".into(),
            next: "2026-12-06 03:00 UTC (in 1 d 2 h)".into(),
        }
    }

    #[test]
    fn no_jobs_shows_how_to_add_one() {
        let html = render(Vec::new(), true);
        assert!(html.contains("No [[jobs]] in the configuration"));
        assert!(html.contains(r#"schedule = "0 4 * * *""#));
        assert!(!html.contains(r#"<table id="jobs">"#));
    }

    #[test]
    fn a_job_row_shows_its_last_run_output_report_and_next_run() {
        let run = LastRun {
            id: 12,
            status: "failed".into(),
            trigger: "scheduled".into(),
            started_raw: "2026-12-05T04:00:00Z".into(),
            started: "2026-12-05 04:00 UTC".into(),
            duration: "1 min 5 s".into(),
            duration_secs: 65,
            summary: "exit 2: a store failed".into(),
            output: "line <one>".into(),
            report: Some(report_href("detect", 12)),
        };
        let html = render(vec![job(Some(run))], true);
        assert!(html.contains(r#"<tr data-job="detect">"#));
        assert!(html.contains(r#"data-status="failed""#));
        assert!(html.contains(r#"<span class="duration" data-value="65">1 min 5 s</span>"#));
        assert!(html.contains("<details><summary>Output</summary><pre class=\"output\">line &#60;one&#62;</pre></details>"), "{html}");
        assert!(html.contains(r#"href="/api/jobs/detect/runs/12/report""#));
        assert!(html.contains("Europe/Paris"));
        assert!(html.contains(r#"data-value="2026-12-06T03:00:00Z""#));
        assert!(html.contains(r#"data-run="detect" aria-describedby="job-detect">Run now"#));
    }

    #[test]
    fn a_read_only_session_cannot_start_a_run() {
        let html = render(vec![job(None)], false);
        assert!(html.contains("Your token is read-only: changes are refused."));
        assert!(
            html.contains(r#"data-run="detect" aria-describedby="job-detect" disabled>Run now"#)
        );
        assert!(html.contains("never run"));
    }

    #[test]
    fn report_link_is_the_api_path_of_the_run() {
        assert_eq!(
            report_href("daily-detect", 12),
            "/api/jobs/daily-detect/runs/12/report"
        );
    }
}
