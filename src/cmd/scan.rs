//! `assetgc scan`: detect orphaned and missing files (SPEC §4).

use std::sync::Arc;

use super::Ui;
use crate::cli::{Global, ReportFormat, ScanArgs};
use crate::config::Config;
use crate::domain::scan::{ScanMode, Window};
use crate::error::{Error, Exit, Result};
use crate::ops::{self, scan::ReportTo, scan::ScanOutcome, scan::ScanRequest};
use crate::reconcile;
use crate::report::{self, Format, Style};

pub fn window(args: &ScanArgs) -> Result<Window> {
    if args.all {
        return Ok(Window::All);
    }
    if let Some(s) = &args.since {
        let t = crate::time::parse_time(s).ok_or_else(|| {
            Error::Usage(format!(
                "--since `{s}` is not a date: write 2025-09-01 or 2025-09-01T12:00:00Z"
            ))
        })?;
        return Ok(Window::Since(t));
    }
    Ok(Window::Days(args.days.unwrap_or(30)))
}

fn output(args: &ScanArgs, cfg: &Config) -> Result<(ReportTo, Format)> {
    let flag = args.format.map(|f| match f {
        ReportFormat::Csv => Format::Csv,
        ReportFormat::Json => Format::Json,
    });
    let Some(p) = &args.output else {
        let format = flag.unwrap_or(Format::Csv);
        return Ok((ReportTo::Dir(cfg.reports_dir.clone()), format));
    };
    let Some(format) = flag.or_else(|| Format::from_path(p)) else {
        return Err(Error::Usage(format!(
            "--output {}: cannot tell the format from the extension; use .csv or .json, or add --format csv|json",
            p.display()
        )));
    };
    Ok((ReportTo::Path(p.clone()), format))
}

pub async fn run(g: &Global, args: &ScanArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    run_with(cfg, args, ui).await
}

/// A progress bar per store on a terminal.
fn bars(ui: Ui, args: &ScanArgs) -> Option<(indicatif::MultiProgress, reconcile::Progress)> {
    let mp = (ui.bars && !args.json).then(indicatif::MultiProgress::new)?;
    let shared = mp.clone();
    let bars: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>> =
        std::sync::Mutex::default();
    let progress = Arc::new(move |store: &str, n: u64| {
        let mut bars = bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bar = bars.entry(store.to_string()).or_insert_with(|| {
            let b = shared.add(indicatif::ProgressBar::new_spinner());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} listing {prefix}: {human_pos} objects ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_prefix(store.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        bar.set_position(n);
    }) as reconcile::Progress;
    Some((mp, progress))
}

pub async fn run_with(cfg: Config, args: &ScanArgs, ui: Ui) -> Result<Exit> {
    let window = window(args)?;
    let mode = if args.orphans_only {
        ScanMode::OrphansOnly
    } else if args.missing_only {
        ScanMode::MissingOnly
    } else {
        ScanMode::Both
    };
    // The output is validated before any work is done.
    let (path, format) = output(args, &cfg)?;
    ops::scan::selected_stores(&cfg, &args.stores)?;
    super::with_app(cfg, |app| async move {
        let watch = args
            .notify
            .then(|| crate::notify::Watch::new(&app, crate::notify::Kind::Scan));
        let bars = bars(ui, args);
        let req = ScanRequest {
            window,
            mode,
            stores: args.stores.clone(),
            report: Some((path, format)),
            progress: bars.as_ref().map(|(_, p)| Arc::clone(p)),
        };
        let outcome = ops::scan::run(&app, req).await;
        if let Some((mp, _)) = bars {
            let _ = mp.clear();
        }
        // After the scan is recorded and its report written, before anything is printed: a
        // notification that fails changes neither.
        let sent = match watch {
            Some(w) => Some(w.finish(outcome.as_ref().ok().map(|o| o.id)).await),
            None => None,
        };
        render(&app.cfg, &outcome?, args, ui, sent.as_ref())
    })
    .await
}

fn render(
    cfg: &Config,
    out: &ScanOutcome,
    args: &ScanArgs,
    ui: Ui,
    sent: Option<&crate::notify::Sent>,
) -> Result<Exit> {
    let findings = &out.findings;
    let path = out.report_path.as_deref();
    let text = if args.json {
        let mut t = serde_json::to_string_pretty(&report::JsonReport::of(findings, out.id))
            .map_err(|e| Error::io("cannot write the JSON report", std::io::Error::other(e)))?;
        t.push('\n');
        t
    } else if ui.quiet {
        format!("{}\n", report::quiet_line(findings, path))
    } else {
        let mut text = report::console(&report::ConsoleInput {
            app_name: &cfg.app_name,
            findings,
            report_path: path,
            limit_list: args.limit_list,
            style: Style { color: ui.color },
        });
        if let Some(s) = sent {
            text.push_str("  ");
            text.push_str(&s.line());
            text.push('\n');
        }
        text
    };
    super::print(&text)?;
    if !findings.complete {
        return Ok(Exit::Incomplete);
    }
    if args.fail_on_findings && findings.has_findings() {
        return Ok(Exit::Findings);
    }
    Ok(Exit::Ok)
}
