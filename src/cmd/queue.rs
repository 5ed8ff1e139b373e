//! `assetgc queue add|run|stats|list|retry|drop` (SPEC §6).

use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _};
use std::sync::Arc;

use super::Ui;
use crate::app::App;
use crate::cli::{
    Global, QueueAddArgs, QueueCommand, QueueListArgs, QueueRunArgs, QueueSelectArgs,
};
use crate::domain::queue::{Changed, Entry, Selection};
use crate::error::{Error, Exit, Result};
use crate::ops;
use crate::queue::{self, RunOptions, Totals};
use crate::state::QueueStore as _;

pub async fn run(g: &Global, cmd: &QueueCommand, ui: Ui) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    // A wrong name is a usage error (2) even when the state database is out of reach (1).
    if let QueueCommand::Add(a) = cmd {
        crate::app::store_named(&cfg, &a.store)?;
    }
    super::with_app(cfg, |app| async move {
        match cmd {
            QueueCommand::Add(a) => add(&app, a).await,
            QueueCommand::Run(a) => run_queue(&app, a, ui).await,
            QueueCommand::Stats(a) => stats(&app, a.json).await,
            QueueCommand::List(a) => list(&app, a).await,
            QueueCommand::Retry(a) => change(&app, a, true).await,
            QueueCommand::Drop(a) => change(&app, a, false).await,
        }
    })
    .await
}

/// The keys of `queue add`: as given, `-` reading one a line from stdin.
fn keys(a: &QueueAddArgs) -> Result<Vec<String>> {
    let mut raw: Vec<String> = Vec::new();
    for k in &a.keys {
        if k == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| match e.kind() {
                    // A key is UTF-8 text (SPEC §2), typed or piped alike.
                    std::io::ErrorKind::InvalidData => Error::Usage(
                        "stdin holds bytes that are not UTF-8: keys are UTF-8 text, one a line"
                            .into(),
                    ),
                    _ => Error::io("cannot read keys from stdin", e),
                })?;
                let line = line.trim_end_matches('\r');
                if !line.trim().is_empty() {
                    raw.push(line.to_string());
                }
            }
        } else {
            raw.push(k.clone());
        }
    }
    Ok(raw)
}

async fn add(app: &App, a: &QueueAddArgs) -> Result<Exit> {
    let store = app.store_config(&a.store)?.name.clone();
    let keys = keys(a)?;
    let (added, already) = ops::queue::add(
        app,
        &store,
        a.resource_type.as_deref(),
        &keys,
        a.client_id.as_deref().unwrap_or_default(),
        "queue add",
    )
    .await?;
    super::print(&format!(
        "Queued {added} deletion{} for store {store}{}. Run `assetgc queue run` to process them.\n",
        plural(added),
        if already > 0 {
            format!(" ({already} already queued)")
        } else {
            String::new()
        }
    ))?;
    Ok(Exit::Ok)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Runs the worker with a progress line on a terminal, then prints what it did.
pub async fn drain(app: &App, opts: &RunOptions, ui: Ui) -> Result<Totals> {
    let bar = ui.bars.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let progress = |t: &Totals| {
        if let Some(b) = &bar {
            b.set_message(format!(
                "{} processed: {} deleted, {} quarantined, {} referenced, {} failed",
                t.claimed,
                t.deleted,
                t.quarantined,
                t.referenced,
                t.failed + t.retrying
            ));
        }
    };
    let totals = queue::run(app, opts, &progress).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    totals
}

/// The summary of a worker run; the exit code it means (4 when an entry became `failed` or
/// the budget stopped the run).
/// The run's figures one a line, the re-check's cost, errors, and the queue after.
fn verbose(t: &Totals, queue: &crate::domain::queue::Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Processed {} entr{} in {} batch{}:",
        t.claimed,
        if t.claimed == 1 { "y" } else { "ies" },
        t.batches,
        if t.batches == 1 { "" } else { "es" }
    );
    let _ = writeln!(out, "  deleted:       {}", t.deleted);
    let _ = writeln!(out, "  quarantined:   {}", t.quarantined);
    let _ = writeln!(out, "  already gone:  {}", t.already_gone);
    let _ = writeln!(
        out,
        "  referenced:    {} (dropped: referenced again, not deleted)",
        t.referenced
    );
    let _ = writeln!(
        out,
        "  retrying:      {} (failed this time; retried after backoff)",
        t.retrying
    );
    let _ = writeln!(
        out,
        "  failed:        {} (attempts used up; `assetgc queue retry --all-failed`)",
        t.failed
    );
    if t.dropped > 0 {
        let _ = writeln!(
            out,
            "  dropped:       {} (an ignore glob matches: never deleted)",
            t.dropped
        );
    }
    if t.deferred > 0 {
        let _ = writeln!(
            out,
            "  deferred:      {} (left pending: the API budget stopped the run)",
            t.deferred
        );
    }
    if t.outbox_rows > 0 {
        let _ = writeln!(
            out,
            "  from the outbox: {} row(s) moved, {} entr{} queued (triggers)",
            t.outbox_rows,
            t.outbox_queued,
            if t.outbox_queued == 1 { "y" } else { "ies" }
        );
    }
    if t.released > 0 {
        let _ = writeln!(
            out,
            "  reclaimed:     {} (claims of a stopped worker, back to pending)",
            t.released
        );
    }
    let r = &t.recheck;
    let per = if r.batches > 0 {
        r.time.as_secs_f64() * 1000.0 / r.batches as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "Re-check of references: {} batch{}, {} look-up quer{}, {} whole quer{}, {:.1} ms ({per:.2} ms a batch)",
        r.batches,
        if r.batches == 1 { "" } else { "es" },
        r.queries,
        if r.queries == 1 { "y" } else { "ies" },
        r.full_queries,
        if r.full_queries == 1 { "y" } else { "ies" },
        r.time.as_secs_f64() * 1000.0
    );
    let _ = writeln!(out, "Store calls: {}", t.store_calls);
    for e in &t.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    if let Some(why) = &t.budget_stop {
        let _ = writeln!(out, "Stopped: {why}");
    }
    let _ = writeln!(
        out,
        "Queue: {} pending ({} due now{}), {} failed",
        queue.total_pending,
        queue.due_now,
        queue
            .next_due
            .as_ref()
            .filter(|_| queue.total_pending > queue.due_now)
            .map_or_else(String::new, |t| format!(", next due {t}")),
        queue.total_failed
    );
    out
}

pub async fn print_totals(app: &App, t: &Totals, quiet: bool) -> Result<Exit> {
    let queue = app.state.queue_stats().await?;
    if quiet {
        super::print(&format!(
            "{} processed: {} deleted, {} quarantined, {} already gone, {} referenced, {} retrying, {} failed; {} pending\n",
            t.claimed,
            t.deleted,
            t.quarantined,
            t.already_gone,
            t.referenced,
            t.retrying,
            t.failed,
            queue.total_pending
        ))?;
    } else {
        super::print(&verbose(t, &queue))?;
    }
    if t.nothing_reached() {
        let mut names: Vec<String> = t.unreachable.iter().map(|s| format!("store {s}")).collect();
        if t.db_unreachable {
            names.push("a database of the references".into());
        }
        return Err(crate::error::Error::Unreachable(format!(
            "nothing could be reached ({}): nothing was deleted; the entries wait for their next attempt{}",
            names.join(", "),
            t.errors
                .first()
                .map_or_else(String::new, |e| format!(" ({e})"))
        )));
    }
    Ok(if t.failed > 0 || t.budget_stop.is_some() {
        Exit::Incomplete
    } else {
        Exit::Ok
    })
}

async fn run_queue(app: &Arc<App>, a: &QueueRunArgs, ui: Ui) -> Result<Exit> {
    let mut opts = RunOptions::from_config(&app.cfg, "queue run");
    if let Some(n) = a.batch_size {
        opts.batch_size = usize::try_from(n).unwrap_or(crate::config::MAX_BATCH);
    }
    if let Some(n) = a.max_attempts {
        opts.max_attempts = n;
    }
    opts.limit = a.limit;
    let watch = a
        .notify
        .then(|| crate::notify::Watch::new(app, crate::notify::Kind::QueueRun));
    let totals = drain(app, &opts, ui).await;
    notify_and_print(app, totals, watch, ui.quiet).await
}

/// Sends the run's notification (when watched), then prints its totals. A drain that failed is
/// still notified (its events say what was done) before its error is returned.
pub async fn notify_and_print(
    app: &Arc<App>,
    totals: Result<Totals>,
    watch: Option<crate::notify::Watch>,
    quiet: bool,
) -> Result<Exit> {
    let sent = match watch {
        Some(w) => Some(w.finish(None).await),
        None => None,
    };
    let exit = print_totals(app, &totals?, quiet).await;
    if let Some(s) = sent
        && !quiet
    {
        super::print(&format!("{}\n", s.line()))?;
    }
    exit
}

async fn stats(app: &App, json: bool) -> Result<Exit> {
    let s = app.state.queue_stats().await?;
    if json {
        let by: Vec<serde_json::Value> = s
            .by_attempts
            .iter()
            .map(|(a, n)| serde_json::json!({"attempts": a, "count": n}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "total_pending": s.total_pending,
                "total_failed": s.total_failed,
                "oldest_queued": s.oldest_queued,
                "newest_queued": s.newest_queued,
                "by_attempts": by,
                "due_now": s.due_now,
                "next_due": s.next_due,
                "total_done": s.total_done,
                "total_dropped": s.total_dropped,
            }))
            .map_err(|e| Error::State(e.to_string()))?
        );
        return Ok(Exit::Ok);
    }
    outln!("Deletion queue");
    outln!(
        "  total_pending:  {} ({} due now)",
        s.total_pending,
        s.due_now
    );
    outln!("  total_failed:   {}", s.total_failed);
    outln!(
        "  oldest_queued:  {}",
        s.oldest_queued.as_deref().unwrap_or("-")
    );
    outln!(
        "  newest_queued:  {}",
        s.newest_queued.as_deref().unwrap_or("-")
    );
    outln!("  next_due:       {}", s.next_due.as_deref().unwrap_or("-"));
    let by: Vec<String> = s
        .by_attempts
        .iter()
        .map(|(a, n)| format!("{a} attempt{}: {n}", if *a == 1 { "" } else { "s" }))
        .collect();
    outln!(
        "  by_attempts:    {}",
        if by.is_empty() {
            "-".to_string()
        } else {
            by.join(", ")
        }
    );
    outln!("  total_done:     {}", s.total_done);
    outln!("  total_dropped:  {}", s.total_dropped);
    Ok(Exit::Ok)
}

async fn list(app: &App, a: &QueueListArgs) -> Result<Exit> {
    let entries: Vec<Entry> = app.state.queue_list(a.failed, a.limit).await?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).map_err(|e| Error::State(e.to_string()))?
        );
        return Ok(Exit::Ok);
    }
    if entries.is_empty() {
        outln!(
            "{}",
            if a.failed {
                "No failed entries."
            } else {
                "The queue is empty."
            }
        );
        return Ok(Exit::Ok);
    }
    outln!(
        "{:>6}  {:<8}  {:<10}  {:<5}  {:>8}  {:<20}  {:<10}  KEY / LAST ERROR",
        "ID",
        "STATE",
        "STORE",
        "TYPE",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "REASON"
    );
    for e in &entries {
        outln!(
            "{:>6}  {:<8}  {:<10}  {:<5}  {:>8}  {:<20}  {:<10}  {}{}",
            e.id,
            e.state.to_string(),
            e.object.store,
            e.object.resource_type.as_str(),
            e.attempts,
            crate::time::rfc3339(e.next_attempt_at),
            e.reason.to_string(),
            e.object.key,
            e.quarantine_key
                .as_ref()
                .filter(|_| !e.is_copy_removal())
                .map_or_else(String::new, |q| format!("  [trash: {q}]"))
                + &e.last_error
                    .as_ref()
                    .map_or_else(String::new, |m| format!("  ({m})"))
        );
    }
    Ok(Exit::Ok)
}

async fn change(app: &App, a: &QueueSelectArgs, retry: bool) -> Result<Exit> {
    let sel = if a.all_failed {
        Selection::AllFailed
    } else {
        Selection::Ids(a.ids.clone())
    };
    let changed = if retry {
        ops::queue::retry(app, &sel, "queue retry").await?
    } else {
        ops::queue::drop(app, &sel, "queue drop").await?
    };
    let count = |what: Changed| changed.iter().filter(|&&o| o == what).count() as u64;
    let n = count(if retry {
        Changed::Retried
    } else {
        Changed::Dropped
    });
    outln!(
        "{} {n} entr{}.",
        if retry { "Retried" } else { "Dropped" },
        if n == 1 { "y" } else { "ies" }
    );
    if !retry && count(Changed::Refused) > 0 {
        outln!(
            "Left {} whose object may be in the trash from an interrupted attempt: `assetgc queue retry` lets the worker find that copy and record it, or move it back.",
            count(Changed::Refused)
        );
    }
    if retry && count(Changed::Dropped) > 0 {
        outln!(
            "Dropped {} whose object is queued again (the newer entry stays).",
            count(Changed::Dropped)
        );
    }
    if retry && n > 0 && std::io::stdout().is_terminal() {
        outln!("They are due now: `assetgc queue run` processes them.");
    }
    Ok(Exit::Ok)
}
