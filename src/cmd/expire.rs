//! `assetgc expire [--rule NAME] [--dry-run] [--notify] [--json]` (SPEC §3): runs the expiry
//! rules and prints their summary by `grp`.

use std::fmt::Write as _;

use super::Ui;
use crate::cli::{ExpireArgs, Global};
use crate::error::{Error, Exit, Result};
use crate::ops::expire::{self, Figures, Report, Request, RuleReport};

pub async fn run(g: &Global, args: &ExpireArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    // A wrong name is a usage error (2) even when the state database is out of reach (1).
    expire::selected_rules(&cfg, args.rule.as_deref())?;
    let req = Request {
        rule: args.rule.clone(),
        dry_run: args.dry_run,
    };
    super::with_app(cfg, |app| async move {
        let watch = args
            .notify
            .then(|| crate::notify::Watch::new(&app, crate::notify::Kind::Expire));
        let report = expire::run(&app, &req).await?;
        let sent = match watch {
            Some(w) => Some(w.finish(None).await),
            None => None,
        };
        for rule in &report.rules {
            for w in &rule.warnings {
                tracing::warn!("{w}");
            }
        }
        if args.json {
            let text =
                serde_json::to_string_pretty(&report).map_err(|e| Error::State(e.to_string()))?;
            super::print(&format!("{text}\n"))?;
        } else {
            let mut text = render(&report, ui.quiet);
            if let Some(s) = sent.filter(|_| !ui.quiet) {
                text.push_str(&s.line());
                text.push('\n');
            }
            super::print(&text)?;
        }
        for rule in &report.rules {
            if let Some(e) = &rule.error {
                tracing::warn!("{e}");
            }
        }
        Ok(if report.nothing_reached() {
            Exit::Unreachable
        } else if report.complete {
            Exit::Ok
        } else {
            Exit::Incomplete
        })
    })
    .await
}

fn render(report: &Report, quiet: bool) -> String {
    let mut out = String::new();
    for rule in &report.rules {
        if quiet {
            let t = &rule.totals;
            let _ = writeln!(
                out,
                "{}{}: {} rows selected, {} {}expired, {} files{}, {} kept shared, {} failures, {} rows left",
                rule.name,
                if report.dry_run { " (dry run)" } else { "" },
                t.rows_selected,
                t.rows_expired,
                if report.dry_run { "would be " } else { "" },
                if report.dry_run {
                    t.files
                } else {
                    t.files_deleted
                },
                if report.dry_run { "" } else { " deleted" },
                t.kept_shared,
                t.failures,
                t.rows_left
            );
            continue;
        }
        render_rule(&mut out, rule, report.dry_run);
    }
    out
}

fn render_rule(out: &mut String, rule: &RuleReport, dry_run: bool) {
    let _ = writeln!(
        out,
        "Expiry rule `{}` (store {}){}",
        rule.name,
        rule.store,
        if dry_run {
            ": dry run, nothing was queued, deleted or changed"
        } else {
            ""
        }
    );
    if let Some(e) = &rule.error
        && rule.groups.is_empty()
    {
        let _ = writeln!(out, "  stopped: {e}");
        return;
    }
    let row = |out: &mut String, name: &str, f: &Figures| {
        if dry_run {
            let _ = writeln!(
                out,
                "  {name:<16} {:>8} {:>14} {:>8} {:>6}",
                f.rows_selected, f.rows_expired, f.files, f.rows_left
            );
        } else {
            let _ = writeln!(
                out,
                "  {name:<16} {:>8} {:>8} {:>8} {:>8} {:>12} {:>9} {:>6}",
                f.rows_selected,
                f.rows_expired,
                f.files_deleted,
                f.already_gone,
                f.kept_shared,
                f.failures,
                f.rows_left
            );
        }
    };
    if dry_run {
        let _ = writeln!(
            out,
            "  {:<16} {:>8} {:>14} {:>8} {:>6}",
            "grp", "rows", "would expire", "files", "left"
        );
    } else {
        let _ = writeln!(
            out,
            "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>12} {:>9} {:>6}",
            "grp", "rows", "expired", "deleted", "gone", "kept shared", "failures", "left"
        );
    }
    for g in &rule.groups {
        row(out, &g.grp, &g.figures);
    }
    if rule.groups.len() != 1 {
        row(out, "total", &rule.totals);
    }
    render_details(out, rule);
}

/// The rows a dry run would expire, the worker's figures, the rows left and why.
fn render_details(out: &mut String, rule: &RuleReport) {
    if let Some(sample) = &rule.sample
        && !sample.is_empty()
    {
        let _ = writeln!(
            out,
            "  Would expire (first {} of {} rows):",
            sample.len(),
            rule.totals.rows_expired
        );
        for r in sample {
            let files: Vec<String> = r
                .files
                .iter()
                .map(|f| {
                    if f.resource_type.as_str().is_empty() {
                        f.key.clone()
                    } else {
                        format!("{} {}", f.resource_type.as_str(), f.key)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "    {} ({}): {}",
                r.id,
                r.grp,
                if files.is_empty() {
                    "no files".to_string()
                } else {
                    files.join(", ")
                }
            );
        }
    }
    if let Some(w) = &rule.worker {
        let _ = writeln!(
            out,
            "  Queue: {} queued, {} retried, {} processed ({} deleted, {} quarantined, {} already gone, {} kept shared, {} retrying, {} failed)",
            w.queued,
            w.retried,
            w.processed,
            w.deleted,
            w.quarantined,
            w.already_gone,
            w.kept_shared,
            w.retrying,
            w.failed
        );
    }
    if !rule.left.is_empty() {
        let _ = writeln!(out, "  Rows left for the next run:");
        for l in rule.left.iter().take(20) {
            let _ = writeln!(out, "    {} ({}): {}", l.id, l.grp, l.why);
        }
        if rule.left.len() > 20 {
            let _ = writeln!(
                out,
                "    … and {} more (--json lists all)",
                rule.left.len() - 20
            );
        }
    }
    if let Some(e) = &rule.error {
        let _ = writeln!(out, "  incomplete: {e}");
    }
}
