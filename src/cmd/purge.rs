//! `assetgc purge`: delete the orphans of a recorded complete scan (SPEC §6). A dry run unless
//! `--confirm`; with it, the orphans are queued (held until `min_age` from their upload time)
//! and the queue runs.

use std::fmt::Write as _;

use super::Ui;
use crate::cli::{Global, PurgeArgs};
use crate::config::parse_duration;
use crate::error::{Error, Exit, Result};
use crate::ops::purge::{self, PurgePlan, PurgeRequest, Source};
use crate::queue::RunOptions;
use crate::report::size_mb;

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub async fn run(g: &Global, args: &PurgeArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    for s in &args.stores {
        crate::app::store_named(&cfg, s)?;
    }
    let older_than = args
        .older_than
        .as_deref()
        .map(|d| parse_duration(d).map_err(|e| Error::Usage(format!("--older-than `{d}`: {e}"))))
        .transpose()?;
    if let crate::config::StateUrl::Sqlite(db) = &cfg.state_url
        && !db.exists()
    {
        return Err(Error::Refused(format!(
            "no scans recorded yet ({} does not exist): run `assetgc scan` first",
            db.display()
        )));
    }
    let source = match (&args.from_report, args.scan) {
        (Some(path), scan) => Source::Report {
            path: path.clone(),
            scan,
        },
        (None, Some(id)) => Source::Scan(id),
        (None, None) => Source::Latest,
    };
    let req = PurgeRequest {
        source,
        older_than,
        stores: args.stores.clone(),
        prefix: args.prefix.clone(),
    };
    super::with_app(cfg, |app| async move {
        let plan = purge::plan(&app, &req).await?;
        purge::check_guard(&app, &plan, args.allow_mass_delete)?;
        let watch = args
            .notify
            .then(|| crate::notify::Watch::new(&app, crate::notify::Kind::Purge));
        if !args.confirm {
            let mut text = dry_run(&plan, args.limit_list);
            if let Some(w) = watch {
                purge::announce_dry_run(&app, &plan);
                text.push_str(&w.finish(None).await.line());
                text.push('\n');
            }
            super::print(&text)?;
            return Ok(Exit::Ok);
        }
        let done = purge::enqueue(&app, &plan, args.allow_mass_delete, "purge").await?;
        let total = plan.total();
        let mut text = format!(
            "Queued {} of {} orphan{} of {} ({} MB)",
            done.added,
            total.count,
            plural(total.count),
            plan.source,
            size_mb(total.bytes)
        );
        if done.already_queued > 0 {
            let _ = write!(text, ", {} already queued", done.already_queued);
        }
        if done.held > 0 {
            let _ = write!(
                text,
                ", {} held until they are older than min_age",
                done.held
            );
        }
        text.push_str(".\n");
        if plan.skipped > 0 {
            let _ = writeln!(
                text,
                "{} report row(s) skipped: not in a complete scan.",
                plan.skipped
            );
        }
        super::print(&text)?;
        let opts = RunOptions::from_config(&app.cfg, "purge");
        let totals = super::queue::drain(&app, &opts, ui).await;
        super::queue::notify_and_print(&app, totals, watch, ui.quiet).await
    })
    .await
}

/// What a dry run prints: counts and bytes per store, the first keys, the guard's overridden
/// refusals.
fn dry_run(plan: &PurgePlan, limit_list: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dry run: nothing is deleted. Orphans of {}:",
        plan.source
    );
    for (store, t) in &plan.per_store {
        let _ = writeln!(
            out,
            "  {store}: {} object{} ({} MB)",
            t.count,
            plural(t.count),
            size_mb(t.bytes)
        );
    }
    let total = plan.total();
    let _ = writeln!(
        out,
        "Would delete {} object{} ({} MB).",
        total.count,
        plural(total.count),
        size_mb(total.bytes)
    );
    if plan.skipped > 0 {
        let _ = writeln!(
            out,
            "{} report row(s) skipped: not in a complete scan.",
            plan.skipped
        );
    }
    for c in plan.candidates.iter().take(limit_list) {
        let o = &c.orphan;
        let rt = o.resource_type.as_str();
        let _ = writeln!(
            out,
            "  {}  {}{}  {} bytes",
            o.store,
            if rt.is_empty() {
                String::new()
            } else {
                format!("{rt}/")
            },
            o.key,
            o.size
        );
    }
    if plan.candidates.len() > limit_list {
        let _ = writeln!(out, "  … and {} more", plan.candidates.len() - limit_list);
    }
    for r in &plan.refusals {
        let _ = writeln!(
            out,
            "Mass-deletion guard for {} (overridden by --allow-mass-delete): {}",
            r.store, r.reason
        );
    }
    if total.count > 0 {
        let _ = writeln!(
            out,
            "Run again with --confirm to delete them (through the queue, quarantined first where quarantine is on)."
        );
    }
    out
}
