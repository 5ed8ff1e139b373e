//! `assetgc clean`: run retention policies (SPEC §2 `[[policies]]`). Plans each policy with the
//! scan's join, queues what it found (none with `--dry-run`), works those entries, and prints
//! SPEC's figures (or, with `--json`, the answer of `POST /api/cleanup/bulk`).

use std::fmt::Write as _;

use super::Ui;
use crate::cli::{CleanArgs, Global};
use crate::error::{Exit, Result};
use crate::ops::clean::{self, CleanOutcome, CleanRequest};
use crate::report::size_mb;

pub async fn run(g: &Global, args: &CleanArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    clean::selected_policies(&cfg, args.policy.as_deref())?;
    let req = CleanRequest {
        policy: args.policy.clone(),
        retention_days: args.retention_days,
        dry_run: args.dry_run,
        actor: "clean".into(),
        progress: None,
    };
    super::with_app(cfg, |app| async move {
        let watch = args
            .notify
            .then(|| crate::notify::Watch::new(&app, crate::notify::Kind::Clean));
        let out = clean::run(&app, req).await?;
        let sent = match watch {
            Some(w) => Some(w.finish(Some(out.id)).await),
            None => None,
        };
        if args.json {
            super::print(&format!("{:#}\n", out.to_json()))?;
        } else {
            let mut text = render(&out, ui.quiet);
            if let Some(s) = sent.filter(|_| !ui.quiet) {
                text.push_str(&s.line());
                text.push('\n');
            }
            super::print(&text)?;
        }
        Ok(exit(&out))
    })
    .await
}

/// 4 when a policy's plan was incomplete or an entry failed for good; else 0.
fn exit(out: &CleanOutcome) -> Exit {
    let failed = out
        .worked
        .as_ref()
        .is_some_and(|t| t.failed > 0 || t.budget_stop.is_some());
    if !out.complete() || failed {
        Exit::Incomplete
    } else {
        Exit::Ok
    }
}

fn render(out: &CleanOutcome, quiet: bool) -> String {
    let mut t = String::new();
    if quiet {
        let _ = writeln!(t, "{}", out.message());
        return t;
    }
    for p in &out.policies {
        let _ = writeln!(
            t,
            "Policy {} (store {}, older than {} day{}, cutoff {}){}",
            p.policy,
            p.store,
            days(p.retention_days),
            if (p.retention_days - 1.0).abs() < f64::EPSILON {
                ""
            } else {
                "s"
            },
            crate::time::rfc3339(p.cutoff),
            if p.complete {
                ""
            } else {
                " — INCOMPLETE: nothing queued"
            }
        );
        let _ = writeln!(t, "  total files scanned: {}", p.total_files_scanned);
        let _ = writeln!(
            t,
            "  {}: {} ({} MB)",
            if out.dry_run {
                "would delete"
            } else {
                "queued"
            },
            p.deleted_count,
            size_mb(p.deleted_bytes)
        );
        let _ = writeln!(
            t,
            "  retained: {} ({} referenced or kept by the keep query, {} younger than min_age, {} ignored, the rest newer than the cutoff)",
            p.retained_count, p.referenced, p.too_recent, p.ignored
        );
        if p.already_queued > 0 {
            let _ = writeln!(t, "  already queued: {}", p.already_queued);
        }
        for k in &p.deleted_files_sample {
            let _ = writeln!(t, "    {k}");
        }
        if p.deleted_count > p.deleted_files_sample.len() as u64 {
            let _ = writeln!(
                t,
                "    … and {} more",
                p.deleted_count - p.deleted_files_sample.len() as u64
            );
        }
        for w in &p.warnings {
            let _ = writeln!(t, "  warning: {w}");
        }
    }
    if let Some(w) = &out.worked {
        let _ = writeln!(
            t,
            "Deletion: {} deleted, {} quarantined, {} already gone, {} kept (referenced again), {} retrying, {} failed",
            w.deleted, w.quarantined, w.already_gone, w.referenced, w.retrying, w.failed
        );
        for e in &w.errors {
            let _ = writeln!(t, "  error: {e}");
        }
    }
    let _ = writeln!(t, "{} (run {})", out.message(), out.id);
    t
}

fn days(d: f64) -> String {
    if d.fract() == 0.0 {
        format!("{d:.0}")
    } else {
        format!("{d:.2}")
    }
}
