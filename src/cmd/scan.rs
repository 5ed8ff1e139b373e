//! `assetgc scan`: detect orphaned and missing files (SPEC §4).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::Ui;
use crate::cli::{Global, ReportFormat, ScanArgs};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::reconcile::{self, Mode, ScanOptions, Window};
use crate::report::{self, Format, Style};
use crate::state::State;

pub fn window(args: &ScanArgs) -> Result<Window> {
    if args.all {
        return Ok(Window::All);
    }
    if let Some(s) = &args.since {
        let t = crate::refs::parse_time(s).ok_or_else(|| {
            Error::Usage(format!(
                "--since `{s}` is not a date: write 2025-09-01 or 2025-09-01T12:00:00Z"
            ))
        })?;
        return Ok(Window::Since(t));
    }
    Ok(Window::Days(args.days.unwrap_or(30)))
}

fn output(
    args: &ScanArgs,
    cfg: &Config,
    started: chrono::DateTime<Utc>,
) -> Result<(PathBuf, Format)> {
    let flag = args.format.map(|f| match f {
        ReportFormat::Csv => Format::Csv,
        ReportFormat::Json => Format::Json,
    });
    let Some(p) = &args.output else {
        let format = flag.unwrap_or(Format::Csv);
        return Ok((
            report::default_path(&cfg.reports_dir, started, format),
            format,
        ));
    };
    let Some(format) = flag.or_else(|| Format::from_path(p)) else {
        return Err(Error::Usage(format!(
            "--output {}: cannot tell the format from the extension; use .csv or .json, or add --format csv|json",
            p.display()
        )));
    };
    Ok((p.clone(), format))
}

pub async fn run(g: &Global, args: &ScanArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    run_with(&cfg, args, ui).await
}

pub async fn run_with(cfg: &Config, args: &ScanArgs, ui: Ui) -> Result<Exit> {
    let window = window(args)?;
    let mode = if args.orphans_only {
        Mode::OrphansOnly
    } else if args.missing_only {
        Mode::MissingOnly
    } else {
        Mode::Both
    };
    let started = Utc::now();
    // Validate the output before any work is done.
    let (path, format) = output(args, cfg, started)?;
    let state = State::open(&cfg.state_url).await?;
    let stores: Vec<String> = cfg
        .stores
        .iter()
        .filter(|s| args.stores.is_empty() || args.stores.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    let id = state.begin_scan(started, window, mode, &stores).await?;
    let ledger = Arc::new(crate::store::Ledger::new(
        state.load_budgets(started).await?,
    ));
    let list_costs = state.list_costs(&stores).await?;

    let bars = (ui.bars && !args.json).then(indicatif::MultiProgress::new);
    let progress: Option<reconcile::Progress> = bars.as_ref().map(|mp| {
        let mp = mp.clone();
        let bars: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>> =
            std::sync::Mutex::default();
        Arc::new(move |store: &str, n: u64| {
            let mut bars = bars
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let bar = bars.entry(store.to_string()).or_insert_with(|| {
                let b = mp.add(indicatif::ProgressBar::new_spinner());
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
        }) as reconcile::Progress
    });
    let opts = ScanOptions {
        window,
        mode,
        stores: args.stores.clone(),
        now: started,
        progress,
        ledger: ledger.clone(),
        list_costs,
    };
    let scanned = reconcile::scan(cfg, opts).await;
    // What this run spent of metered budgets is kept whatever became of the scan.
    state
        .save_budgets(Utc::now(), &ledger.snapshot(Utc::now()))
        .await?;
    let findings = match scanned {
        Ok(f) => f,
        Err(e) => {
            let _ = state.fail_scan(id, &e.to_string()).await;
            state.close().await;
            return Err(e);
        }
    };
    if let Some(mp) = bars {
        let _ = mp.clear();
    }
    if args.notify {
        tracing::warn!(
            "--notify: notifications are not supported yet by this version; nothing was sent"
        );
    }
    tracing::debug!(elapsed = ?(Utc::now() - started), "findings ready");
    report::write_file(&findings, id, &path, format)?;
    tracing::debug!(elapsed = ?(Utc::now() - started), "report written");
    state.finish_scan(id, &findings, Some(&path)).await?;
    state.close().await;

    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report::to_json(&findings, id))
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else if ui.quiet {
        writeln!(stdout, "{}", report::quiet_line(&findings, Some(&path)))
    } else {
        write!(
            stdout,
            "{}",
            report::console(&report::ConsoleInput {
                app_name: &cfg.app_name,
                findings: &findings,
                report_path: Some(&path),
                limit_list: args.limit_list,
                style: Style { color: ui.color },
            })
        )
    };
    // A closed pipe (`| head`) is not an error of the scan.
    if let Err(e) = printed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(Error::io("cannot write to stdout", e));
    }
    if !findings.complete {
        return Ok(Exit::Incomplete);
    }
    if args.fail_on_findings && findings.has_findings() {
        return Ok(Exit::Findings);
    }
    Ok(Exit::Ok)
}
