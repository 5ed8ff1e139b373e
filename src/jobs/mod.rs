//! The scheduler of `[[jobs]]` (SPEC §8): runs each job's command on its cron schedule (in its
//! `tz`) as a child process of the assetgc binary, one run of a job at a time — here through an
//! in-process guard, across instances through the job's lease in the state database — and keeps
//! each run's history: start, end, status, summary, captured output, and the scan and report it
//! made.
//!
//! Missed windows are not replayed in a burst: at start, when the schedule's latest time at or
//! before now is later than the job's latest recorded scheduled run, the job runs once
//! (`catch_up`), then follows its schedule. A job with no scheduled run recorded at all is not
//! caught up: a new job (or a new state database) starts at its next window instead of running
//! the moment the server first starts.

pub mod export;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::app::App;
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::server::AppState;
use crate::state::{JobRun, RunEnd, Start};
use crate::time::rfc3339;

/// The child of a job run finds its run's id here (`scan` records it on the scan).
pub const RUN_ENV: &str = "ASSETGC_JOB_RUN";
/// A run holds its job's lease this long past its last renewal; a run whose process died is
/// noticed (and recorded `abandoned`) once it passes.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// After SIGTERM, the run's process group has this long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// The stored output keeps the last this many bytes of stdout and stderr together.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// A report larger than this is not copied into the run's history (its path still is).
pub const REPORT_CAP: u64 = 16 * 1024 * 1024;

/// The run id a job run's child was given, when this process is one.
pub fn current_run() -> Option<i64> {
    std::env::var(RUN_ENV).ok()?.trim().parse().ok()
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
        }
    }
}

/// The next time of `job`'s schedule strictly after `t`.
pub fn next_after(job: &JobConfig, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.cron
        .find_next_occurrence(&t.with_timezone(&job.tz), false)
        .ok()
        .map(|n| n.with_timezone(&Utc))
}

/// The latest time of `job`'s schedule at or before `t`.
pub fn latest_at_or_before(job: &JobConfig, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.cron
        .find_previous_occurrence(&t.with_timezone(&job.tz), true)
        .ok()
        .map(|n| n.with_timezone(&Utc))
}

/// One run, as `jobs list --json` and the API show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
    /// The schedule's time this run is for (RFC 3339 UTC); `null` when asked for.
    pub scheduled_for: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub exit_code: Option<i64>,
    pub summary: Option<String>,
    /// The scan the run made, if it made one.
    pub scan_id: Option<i64>,
    pub report_path: Option<String>,
}

impl From<&JobRun> for RunView {
    fn from(r: &JobRun) -> RunView {
        RunView {
            id: r.id,
            trigger: r.trigger.clone(),
            scheduled_for: r.scheduled_for.map(rfc3339),
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            status: r.status.clone(),
            exit_code: r.exit_code,
            summary: r.summary.clone(),
            scan_id: r.scan_id,
            report_path: r.report_path.clone(),
        }
    }
}

/// A job with its last run and its next one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    /// The cron expression as written.
    pub schedule: String,
    /// The time zone the schedule is read in (IANA name).
    pub tz: String,
    /// The assetgc command line it runs.
    pub command: String,
    /// As written in the config's form, e.g. `10m`.
    pub timeout: String,
    pub timeout_seconds: u64,
    pub last_run: Option<RunView>,
    /// RFC 3339 UTC.
    pub next_run: Option<String>,
    /// A run of it goes on now, here or on another instance.
    pub running: bool,
    /// The newest runs, newest first (up to 5).
    pub recent: Vec<RunView>,
}

/// How many runs [`JobView::recent`] shows.
const RECENT: u32 = 5;

/// Every job of the config with its history, as of now.
pub async fn views(app: &App) -> Result<Vec<JobView>> {
    let _ = app.state.abandon_job_runs().await?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(app.cfg.jobs.len());
    for job in &app.cfg.jobs {
        let runs = app.state.job_runs(&job.name, RECENT, None).await?;
        let recent: Vec<RunView> = runs.iter().map(RunView::from).collect();
        out.push(JobView {
            name: job.name.clone(),
            schedule: job.schedule.clone(),
            tz: job.tz.name().to_string(),
            command: job.command.clone(),
            timeout: humantime::format_duration(job.timeout).to_string(),
            timeout_seconds: job.timeout.as_secs(),
            last_run: recent.first().cloned(),
            next_run: next_after(job, now).map(rfc3339),
            running: app.state.job_lease(&job.name).await?.is_some(),
            recent,
        });
    }
    Ok(out)
}

/// The job named `name`, or a not-found error that says where the names are.
pub fn job_named<'a>(app_jobs: &'a [JobConfig], name: &str) -> Result<&'a JobConfig> {
    app_jobs.iter().find(|j| j.name == name).ok_or_else(|| {
        Error::NotFound(format!(
            "no job named `{name}` in [[jobs]]; `assetgc jobs list` shows them"
        ))
    })
}

/// What asking for a run came to.
pub enum Begun {
    Run(Box<RunTicket>),
    /// A run of the job goes on (here or elsewhere); the message says which.
    Busy(String),
    /// Another instance has this scheduled time.
    WindowTaken,
}

/// A started run: its row is `running` and its lease held. [`Scheduler::execute`] ends it.
pub struct RunTicket {
    pub id: i64,
    job: JobConfig,
    _guard: Guard,
}

/// Holds a job in this process's set of running jobs while alive.
struct Guard {
    set: Arc<Mutex<HashSet<String>>>,
    job: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.job);
    }
}

/// How a run's child ended, before it is recorded.
pub struct Finished {
    pub run_id: i64,
    pub succeeded: bool,
    /// The child's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    pub summary: String,
    pub output: String,
}

/// Runs jobs: starts runs (row and lease), executes their children, records their ends.
pub struct Scheduler {
    app: Arc<App>,
    exe: PathBuf,
    /// This scheduler as a lease holder: the process, and which scheduler of it.
    holder: String,
    running: Arc<Mutex<HashSet<String>>>,
}

static SCHEDULERS: AtomicU64 = AtomicU64::new(0);

impl Scheduler {
    pub fn new(app: Arc<App>, exe: PathBuf) -> Scheduler {
        // Several servers may live in one process (tests): each holds leases under its own name.
        let n = SCHEDULERS.fetch_add(1, Ordering::Relaxed);
        Scheduler {
            app,
            exe,
            holder: format!("{}#{n}", crate::queue::worker::worker_id()),
            running: Arc::default(),
        }
    }

    /// Starts a run of `job` unless one goes on: first in this process, then through the
    /// state database (the run's row, unique per scheduled time, and the job's lease).
    pub async fn begin(
        &self,
        job: &JobConfig,
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Result<Begun> {
        {
            let mut set = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if !set.insert(job.name.clone()) {
                return Ok(Begun::Busy(format!(
                    "job `{}` is running already (in this process); wait for its run to end",
                    job.name
                )));
            }
        }
        let guard = Guard {
            set: Arc::clone(&self.running),
            job: job.name.clone(),
        };
        let started = self
            .app
            .state
            .start_job_run(
                &job.name,
                trigger.as_str(),
                scheduled_for,
                &self.holder,
                &job.command,
                LEASE_TTL,
            )
            .await?;
        Ok(match started {
            Start::Started(id) => Begun::Run(Box::new(RunTicket {
                id,
                job: job.clone(),
                _guard: guard,
            })),
            Start::Busy { holder, run_id } => Begun::Busy(match run_id {
                Some(id) => format!(
                    "job `{}` is running already (run {id}, held by {holder}); wait for it to end",
                    job.name
                ),
                None => format!(
                    "job `{}` is running already (held by {holder}); wait for it to end",
                    job.name
                ),
            }),
            Start::WindowTaken => Begun::WindowTaken,
        })
    }

    /// Runs the ticket's child to its end (or its timeout, or `stop`), and records the end:
    /// status, summary, output, the scan it made and that scan's report. The lease is released.
    pub async fn execute(&self, ticket: Box<RunTicket>, stop: &CancellationToken) -> Finished {
        let job = &ticket.job;
        let run_id = ticket.id;
        let ended = self.run_child(job, run_id, stop).await;
        // A scan or clean run the child left `running` (stopped at its timeout, or at shutdown)
        // is closed now that the child is gone.
        crate::server::close_abandoned(
            &self.app,
            &crate::queue::worker::is_dead,
            &format!(
                "stopped: job `{}` run {run_id} ended before it finished",
                job.name
            ),
        )
        .await;
        let (scan_id, report_path, report) = self.report_of(run_id).await;
        let end = RunEnd {
            succeeded: ended.succeeded,
            exit_code: ended.exit_code.map(i64::from),
            summary: ended.summary.clone(),
            output: ended.output.clone(),
            scan_id,
            report_path,
            report,
        };
        // The end must be recorded even when the state database blinks: a few tries.
        let mut tries = 0;
        loop {
            match self.app.state.finish_job_run(&job.name, run_id, &end).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(job = %job.name, run = run_id, error = %crate::error::one_line(&e), "cannot record the run's end; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(job = %job.name, run = run_id, error = %crate::error::one_line(&e), "cannot record the run's end; it will be marked abandoned when its lease expires");
                    break;
                }
            }
        }
        tracing::info!(job = %job.name, run = run_id, succeeded = ended.succeeded, summary = %ended.summary, "job run ended");
        drop(ticket);
        ended
    }

    /// The scan a run made and its report's content (when the file is there and not too big).
    async fn report_of(&self, run_id: i64) -> (Option<i64>, Option<String>, Option<String>) {
        let Ok(Some((scan_id, path))) = self.app.state.job_run_scan(run_id).await else {
            return (None, None, None);
        };
        let report = match &path {
            Some(p) => read_report(&self.app.cfg.base_dir, Path::new(p)).await,
            None => None,
        };
        (Some(scan_id), path, report)
    }

    /// Renews the run's lease; `false` when the run must stop: another run holds the job now, or
    /// renewals have failed so long that the lease may run out before the next one.
    async fn keep_lease(
        &self,
        job: &JobConfig,
        run_id: i64,
        renewed_at: &mut tokio::time::Instant,
    ) -> bool {
        match self
            .app
            .state
            .renew_job_lease(&job.name, run_id, LEASE_TTL)
            .await
        {
            Ok(true) => {
                *renewed_at = tokio::time::Instant::now();
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(job = %job.name, run = run_id, error = %crate::error::one_line(&e), "cannot renew the run's lease");
                renewed_at.elapsed() + RENEW_EVERY < LEASE_TTL
            }
        }
    }

    async fn run_child(&self, job: &JobConfig, run_id: i64, stop: &CancellationToken) -> Finished {
        let mut cmd = tokio::process::Command::new(&self.exe);
        if let Some(path) = &self.app.cfg.path {
            cmd.arg("--config").arg(absolute(path));
        }
        cmd.args(&job.args)
            .env(RUN_ENV, run_id.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a timeout or a shutdown stops it and anything it started.
            .process_group(0)
            .kill_on_drop(true);
        let fail = |summary: String, output: String| Finished {
            run_id,
            succeeded: false,
            exit_code: None,
            summary,
            output,
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return fail(
                    format!("cannot start {}: {e}", self.exe.display()),
                    String::new(),
                );
            }
        };
        let pid = child.id();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let readers = [
            child
                .stdout
                .take()
                .map(|o| tokio::spawn(capture(o, Arc::clone(&tail)))),
            child
                .stderr
                .take()
                .map(|e| tokio::spawn(capture(e, Arc::clone(&tail)))),
        ];
        let deadline = tokio::time::sleep(job.timeout);
        tokio::pin!(deadline);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.tick().await;
        // When renewals keep failing, the lease may run out and another instance start the job:
        // the run stops before that can happen.
        let mut renewed_at = tokio::time::Instant::now();
        let how = loop {
            tokio::select! {
                status = child.wait() => break How::Exited(status),
                () = &mut deadline => break How::TimedOut,
                () = stop.cancelled() => break How::Stopped,
                _ = renew.tick() => {
                    if !self.keep_lease(job, run_id, &mut renewed_at).await {
                        break How::LeaseLost;
                    }
                }
            }
        };
        if matches!(how, How::TimedOut | How::Stopped | How::LeaseLost) {
            terminate(&mut child, pid).await;
        }
        for r in readers.into_iter().flatten() {
            // A grandchild outside the group could hold the pipes open: do not wait for ever.
            let _ = tokio::time::timeout(KILL_GRACE, r).await;
        }
        let output = tail.lock().unwrap_or_else(PoisonError::into_inner).text();
        let last = last_line(&output);
        let with_last = |head: String| match &last {
            Some(l) => format!("{head} — {l}"),
            None => head,
        };
        match how {
            How::TimedOut => fail(
                with_last(format!(
                    "timed out after {}: stopped",
                    humantime::format_duration(job.timeout)
                )),
                output,
            ),
            How::Stopped => fail("stopped: the server shut down".to_string(), output),
            How::LeaseLost => fail(
                "stopped: the job's lease could not be kept (the state database was out of reach too long)".to_string(),
                output,
            ),
            How::Exited(Err(e)) => fail(format!("cannot wait for the run: {e}"), output),
            How::Exited(Ok(status)) => {
                let code = status.code();
                Finished {
                    run_id,
                    succeeded: matches!(code, Some(0 | 3)),
                    exit_code: code,
                    summary: with_last(exit_meaning(code)),
                    output,
                }
            }
        }
    }
}

/// How a run's child came to its end.
enum How {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Stopped,
    LeaseLost,
}

/// SIGTERM to the run's process group, SIGKILL after [`KILL_GRACE`].
async fn terminate(child: &mut tokio::process::Child, pid: Option<u32>) {
    let group = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(g) = group {
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
        // The leader is gone; anything left in its group gets the same end.
        if let Some(g) = group {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
        }
        return;
    }
    if let Some(g) = group {
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// What an exit code means (SPEC §3).
fn exit_meaning(code: Option<i32>) -> String {
    match code {
        Some(0) => "exit 0: success".into(),
        Some(1) => "exit 1: nothing could be reached".into(),
        Some(2) => "exit 2: usage or configuration error, or a safety refusal".into(),
        Some(3) => "exit 3: complete, with findings".into(),
        Some(4) => "exit 4: stopped early or in part".into(),
        Some(n) => format!("exit {n}"),
        None => "killed by a signal".into(),
    }
}

/// The last non-empty line of `text`, cut to 200 characters.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        s.push('…');
    }
    Some(s)
}

/// The end of a stream: the last [`OUTPUT_CAP`] bytes written to it.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > OUTPUT_CAP {
            let extra = self.buf.len() - OUTPUT_CAP;
            self.buf.drain(..extra);
            self.cut = true;
        }
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        if self.cut {
            format!("[… earlier output cut; the last {OUTPUT_CAP} bytes follow]\n{text}")
        } else {
            text.into_owned()
        }
    }
}

async fn capture<R: tokio::io::AsyncRead + Unpin>(mut r: R, tail: Arc<Mutex<Tail>>) {
    let mut chunk = vec![0u8; 8192];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(&chunk[..n]);
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

async fn read_report(base: &Path, p: &Path) -> Option<String> {
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if meta.len() > REPORT_CAP {
        tracing::warn!(path = %path.display(), "the run's report is too large to keep in its history");
        return None;
    }
    let bytes = tokio::fs::read(&path).await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs jobs on their schedules until the server stops; a run going on at shutdown is stopped
/// (SIGTERM to its group) and recorded failed, and this returns once every run has ended.
pub async fn run_scheduler(state: AppState) {
    let jobs = state.app.cfg.jobs.clone();
    if jobs.is_empty() {
        state.shutdown.cancelled().await;
        return;
    }
    match state.app.state.abandon_job_runs().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "job runs left running by a stopped process were marked failed (abandoned)"
        ),
        Err(e) => {
            tracing::warn!(error = %crate::error::one_line(&e), "cannot check for abandoned job runs");
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(job_loop(state.clone(), job));
    }
    while set.join_next().await.is_some() {}
}

/// One job: a catch-up run when a window was missed, then each window of its schedule.
async fn job_loop(state: AppState, job: JobConfig) {
    let now = Utc::now();
    let mut last_fired = now;
    if let Some(window) = latest_at_or_before(&job, now) {
        match state.app.state.last_scheduled_run(&job.name).await {
            Ok(Some(last)) if window > last => {
                tracing::info!(job = %job.name, window = %rfc3339(window), "a window was missed: running once to catch up");
                fire(&state, &job, Trigger::CatchUp, window).await;
                last_fired = window.max(now);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %job.name, error = %crate::error::one_line(&e), "cannot read the job's history; not catching up");
            }
        }
    }
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        // Windows that passed while a run went on are skipped, not replayed.
        let from = Utc::now().max(last_fired);
        let Some(next) = next_after(&job, from) else {
            tracing::warn!(job = %job.name, "the schedule has no next time; the job will not run again");
            state.shutdown.cancelled().await;
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A timer may fire a hair early by the wall clock; the window is still `next`.
        last_fired = next;
        fire(&state, &job, Trigger::Schedule, next).await;
    }
}

async fn fire(state: &AppState, job: &JobConfig, trigger: Trigger, window: DateTime<Utc>) {
    if state.shutdown.is_cancelled() {
        return;
    }
    match state.jobs.begin(job, trigger, Some(window)).await {
        Ok(Begun::Run(ticket)) => {
            tracing::info!(job = %job.name, run = ticket.id, trigger = trigger.as_str(), "job run started");
            state.jobs.execute(ticket, &state.shutdown).await;
        }
        Ok(Begun::Busy(why)) => {
            tracing::info!(job = %job.name, window = %rfc3339(window), "window skipped: {why}");
        }
        Ok(Begun::WindowTaken) => {
            tracing::debug!(job = %job.name, window = %rfc3339(window), "another instance has this window");
        }
        Err(e) => {
            tracing::warn!(job = %job.name, error = %crate::error::one_line(&e), "cannot start the job run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_output_keeps_the_end() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; OUTPUT_CAP]);
        t.push(b"\nlast line\n");
        let text = t.text();
        assert!(text.starts_with("[… earlier output cut"));
        assert!(text.ends_with("last line\n"));
        assert_eq!(last_line(&text).as_deref(), Some("last line"));
    }

    #[test]
    fn findings_count_as_success_in_the_summary() {
        assert_eq!(exit_meaning(Some(3)), "exit 3: complete, with findings");
        assert_eq!(exit_meaning(None), "killed by a signal");
    }
}
