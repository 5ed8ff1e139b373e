//! `assetgc jobs list | run NAME | export --format …` (SPEC §3, §8).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{ExportFormat, Global, JobsCommand, JobsExportArgs};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::jobs::{self, Begun, Scheduler, Trigger, export};

pub async fn run(g: &Global, c: &JobsCommand) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    match c {
        JobsCommand::List(a) => list(cfg, a.json).await,
        JobsCommand::Run(a) => run_now(cfg, &a.name).await,
        JobsCommand::Export(a) => export_jobs(&cfg, a),
    }
}

async fn list(cfg: Config, json: bool) -> Result<Exit> {
    super::with_app(cfg, |app| async move {
        let views = jobs::views(&app).await?;
        if json {
            let mut text = serde_json::to_string_pretty(&views)
                .map_err(|e| Error::io("cannot write JSON", std::io::Error::other(e)))?;
            text.push('\n');
            return super::print(&text).map(|()| Exit::Ok);
        }
        if views.is_empty() {
            super::print("no [[jobs]] in the config\n")?;
            return Ok(Exit::Ok);
        }
        let rows: Vec<[String; 4]> = views
            .iter()
            .map(|v| {
                let last = match (&v.last_run, v.running) {
                    (Some(r), _) => format!("{} {}", r.started_at, r.status),
                    (None, true) => "running".to_string(),
                    (None, false) => "never".to_string(),
                };
                [
                    v.name.clone(),
                    format!("{} ({})", v.schedule, v.tz),
                    last,
                    v.next_run.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let head = ["NAME", "SCHEDULE", "LAST RUN", "NEXT RUN"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut text = String::new();
        let line = |text: &mut String, cells: [&str; 4]| {
            let _ = writeln!(
                text,
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        };
        line(&mut text, head);
        for r in &rows {
            line(&mut text, [&r[0], &r[1], &r[2], &r[3]]);
        }
        super::print(&text).map(|()| Exit::Ok)
    })
    .await
}

/// Runs a job now, in the foreground, with the lease and history of a scheduled run; prints
/// its captured output; exits with the child's code (4 when it was stopped or could not run).
async fn run_now(cfg: Config, name: &str) -> Result<Exit> {
    let job = jobs::job_named(&cfg.jobs, name)?.clone();
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the assetgc binary to run the job", e))?;
    super::with_app(cfg, |app| async move {
        let sched = Scheduler::new(Arc::clone(&app), exe);
        let ticket = match sched.begin(&job, Trigger::Manual, None).await? {
            Begun::Run(t) => t,
            Begun::Busy(why) => return Err(Error::Refused(why)),
            Begun::WindowTaken => {
                return Err(Error::Refused(format!("job `{name}` is running already")));
            }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let on_signal = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
            })
        };
        let done = sched.execute(ticket, &stop).await;
        on_signal.abort();
        super::print(&done.output)?;
        eprintln!("run {}: {}", done.run_id, done.summary);
        Ok(match done.exit_code {
            Some(0) => Exit::Ok,
            Some(1) => Exit::Unreachable,
            Some(2) => Exit::Usage,
            Some(3) => Exit::Findings,
            _ => Exit::Incomplete,
        })
    })
    .await
}

fn config_path(cfg: &Config) -> Option<PathBuf> {
    cfg.path.as_ref().map(|p| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.clone())
    })
}

fn export_jobs(cfg: &Config, a: &JobsExportArgs) -> Result<Exit> {
    let config = config_path(cfg);
    let config = config.as_deref();
    let text = match a.format {
        ExportFormat::Crontab => export::crontab(&cfg.jobs, config)?,
        ExportFormat::Systemd => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("cannot find the assetgc binary", e))?;
            export::systemd(&cfg.jobs, config, &exe)?
        }
        ExportFormat::K8s => export::k8s(&cfg.jobs, config)?,
        ExportFormat::Heroku => {
            let (text, warnings) = export::heroku(&cfg.jobs, config);
            for w in warnings {
                eprintln!("warning: {}", crate::error::sanitize(&w));
            }
            text
        }
    };
    super::print(&text).map(|()| Exit::Ok)
}
