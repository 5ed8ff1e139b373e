//! `assetgc triggers install|uninstall|status` (SPEC §7): renders what `crate::triggers` did.

use std::fmt::Write as _;

use crate::cli::{Global, TriggersCommand};
use crate::error::{Exit, Result, sanitize};
use crate::triggers::{self, Report};

pub async fn run(g: &Global, c: &TriggersCommand) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    match c {
        TriggersCommand::Install(a) => {
            let report = triggers::install(&cfg, a.reference.as_deref()).await?;
            render(&report, g.quiet)
        }
        TriggersCommand::Status(a) => {
            let status = triggers::status(&cfg, a.reference.as_deref()).await?;
            let mut out = String::new();
            for r in &status.references {
                let _ = writeln!(
                    out,
                    "reference {} (database {}): {}; outbox: {} pending, {} due{}",
                    r.reference,
                    r.database,
                    if r.installed {
                        "installed"
                    } else {
                        "NOT installed"
                    },
                    r.pending,
                    r.due,
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    }
                );
                if r.definer_ok == Some(false) {
                    eprintln!(
                        "warning: reference {}: its trigger function is not SECURITY DEFINER with a pinned search_path; run `assetgc triggers install` again",
                        sanitize(&r.reference)
                    );
                }
            }
            if status.references.is_empty() {
                out.push_str("no reference has `track`\n");
            }
            let exit = render(&status.report, g.quiet)?;
            super::print(&out)?;
            Ok(exit)
        }
        TriggersCommand::Uninstall(a) => {
            let (only, discard) = (a.reference.clone(), a.discard_pending);
            super::with_app(cfg, |app| async move {
                let report = triggers::uninstall(&app, only.as_deref(), discard).await?;
                render(&report, g.quiet)
            })
            .await
        }
    }
}

/// What was done on stdout, warnings and per-database errors on stderr, one line each.
fn render(report: &Report, quiet: bool) -> Result<Exit> {
    let mut out = String::new();
    for d in &report.databases {
        if !quiet {
            for line in &d.done {
                let _ = writeln!(out, "{}", sanitize(line));
            }
        }
        for w in &d.warnings {
            eprintln!("warning: {}", sanitize(w));
        }
        if let Some(e) = &d.error {
            eprintln!("error: {}", sanitize(e));
        }
    }
    super::print(&out)?;
    Ok(report.exit())
}
