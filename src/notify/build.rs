//! Notices from events: what a run announced becomes the message every channel sends.
//!
//! A run that notifies opens a [`Watch`] before it starts (a listener of the application's
//! events) and closes it when it is over: the event that ended the run — a finished scan (with its
//! first items), a purge's queueing and the queue run after it, a clean or expire run, a queue
//! run — is turned into one [`Notice`], `[notify] on` decides whether it goes, and the channels
//! send it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use serde_json::{Value, json};

use super::{Alert, Delivery, Figure, Item, Kind, List, Notice, Retry};
use crate::app::App;
use crate::config::NotifyOn;
use crate::domain::event::Event;
use crate::domain::scan::{Missing, Orphan, ScanMode, Summary};
use crate::report::{count, size_mb, size_mb_number};
use crate::state::ScanLog as _;
use crate::time::rfc3339;

/// Listens to a run's events from before it starts until it ends. It taps the application's
/// events ([`App::tap`]): each is looked at as it is published, and only those that end a run are
/// kept, so that no flood of others (one per failed deletion) can push the run's end out.
pub struct Watch {
    app: Arc<App>,
    kind: Kind,
    kept: Arc<Mutex<VecDeque<Event>>>,
    tap: Option<Arc<crate::app::Tap>>,
}

/// How many run-ending events a watch keeps: `serve`'s worker ends a queue run every few
/// seconds, and a watched scan may last hours.
const KEPT: usize = 256;

fn ends_a_run(e: &Event) -> bool {
    matches!(
        e,
        Event::ScanFinished { .. }
            | Event::ScanFailed { .. }
            | Event::PurgeQueued { .. }
            | Event::QueueRunFinished { .. }
            | Event::CleanFinished { .. }
            | Event::ExpireFinished { .. }
    )
}

/// What a watched run's notification came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// `on` (or an empty `[notify]`) said not to send; the reason in words.
    Skipped(String),
    /// Each configured channel's delivery.
    Delivered(Vec<Delivery>),
}

impl Sent {
    /// The console's line: `Notifications: sent to email, slack; webhook failed (…)`.
    pub fn line(&self) -> String {
        match self {
            Sent::Skipped(why) => format!("Notifications: none sent ({why})"),
            Sent::Delivered(d) => {
                let ok: Vec<&str> = d
                    .iter()
                    .filter(|x| x.error.is_none())
                    .map(|x| x.channel)
                    .collect();
                let mut line = String::from("Notifications: ");
                if ok.is_empty() {
                    line.push_str("none sent");
                } else {
                    let _ = write!(line, "sent to {}", ok.join(", "));
                }
                for x in d.iter().filter(|x| x.error.is_some()) {
                    let _ = write!(
                        line,
                        "; {} failed after {} attempt{} ({})",
                        x.channel,
                        x.attempts,
                        if x.attempts == 1 { "" } else { "s" },
                        x.error.as_deref().unwrap_or_default()
                    );
                }
                line
            }
        }
    }
}

impl Watch {
    /// Starts listening: call before the run starts, so that none of its events is missed.
    pub fn new(app: &Arc<App>, kind: Kind) -> Watch {
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let into = Arc::clone(&kept);
        let tap = app.tap(move |e| {
            if ends_a_run(e) {
                let mut k = into.lock().unwrap_or_else(PoisonError::into_inner);
                if k.len() == KEPT {
                    k.pop_front();
                }
                k.push_back(e.clone());
            }
        });
        Watch {
            app: Arc::clone(app),
            kind,
            kept,
            tap: Some(tap),
        }
    }

    /// The run is over: builds its notice from the events it published (for a scan or a clean
    /// run, those of run `id`: `serve` runs several at once), and sends it where `[notify]` says
    /// when `on` lets it. A channel that failed is reported on stderr in one line and recorded;
    /// nothing here fails the run.
    pub async fn finish(mut self, id: Option<i64>) -> Sent {
        self.tap = None;
        let events = Vec::from(std::mem::take(
            &mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner),
        ));
        let Some(notice) = notice(&self.app, self.kind, id, &events).await else {
            return Sent::Skipped("the run announced no end".into());
        };
        deliver(&self.app, &notice).await
    }
}

/// Sends `notice` as `[notify]` says: `on` first, then every channel at once; records and
/// reports what failed.
pub async fn deliver(app: &App, notice: &Notice) -> Sent {
    let cfg = &app.cfg.notify;
    match cfg.on {
        NotifyOn::Never if notice.kind != Kind::Test => {
            return Sent::Skipped("[notify] on = \"never\"".into());
        }
        NotifyOn::Findings if !notice.noteworthy && notice.kind != Kind::Test => {
            return Sent::Skipped("nothing found or done, and [notify] on = \"findings\"".into());
        }
        _ => {}
    }
    if cfg.channels().is_empty() {
        tracing::warn!(
            "notify: [notify] configures no channel (email, slack, discord or webhook): nothing was sent"
        );
        return Sent::Skipped("no channel configured".into());
    }
    let deliveries = super::send_all(cfg, notice, Retry::default()).await;
    for d in &deliveries {
        if let Some(e) = &d.error {
            tracing::warn!(
                "notify {}: not sent after {} attempt{}: {e}; the run's result and report are unchanged",
                d.channel,
                d.attempts,
                if d.attempts == 1 { "" } else { "s" }
            );
        }
    }
    let rows: Vec<(&str, u32, Option<&str>)> = deliveries
        .iter()
        .map(|d| (d.channel, d.attempts, d.error.as_deref()))
        .collect();
    if let Err(e) = app
        .state
        .record_notifications(
            notice.kind.as_str(),
            notice.run_id,
            crate::jobs::current_run(),
            Utc::now(),
            &rows,
        )
        .await
    {
        tracing::warn!("notify: {}", crate::error::one_line(&e));
    }
    Sent::Delivered(deliveries)
}

/// The notice of a run of `kind` from its events; `None` when the run announced no end.
pub async fn notice(app: &App, kind: Kind, id: Option<i64>, events: &[Event]) -> Option<Notice> {
    let name = app.cfg.app_name.clone();
    match kind {
        Kind::Scan => {
            let end = events.iter().rev().find(|e| match e {
                Event::ScanFinished { scan_id, .. } | Event::ScanFailed { scan_id, .. } => {
                    id.is_none_or(|i| i == *scan_id)
                }
                _ => false,
            })?;
            match end {
                Event::ScanFinished { .. } => {
                    let alert = spike_alert(app, end).await;
                    scan_notice(name, end, alert)
                }
                Event::ScanFailed { scan_id, error } => Some(failed_scan(name, *scan_id, error)),
                _ => None,
            }
        }
        Kind::Purge => {
            let queued = events
                .iter()
                .rev()
                .find(|e| matches!(e, Event::PurgeQueued { .. }))?;
            let worked = events
                .iter()
                .rev()
                .find(|e| matches!(e, Event::QueueRunFinished { .. }));
            Some(purge_notice(name, queued, worked))
        }
        Kind::Clean => events
            .iter()
            .rev()
            .find(|e| {
                matches!(e, Event::CleanFinished { run_id, .. } if id.is_none_or(|i| i == *run_id))
            })
            .map(|e| clean_notice(name, e)),
        Kind::Expire => events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::ExpireFinished { .. }))
            .map(|e| expire_notice(name, e)),
        Kind::QueueRun => events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::QueueRunFinished { .. }))
            .map(|e| queue_notice(name, e)),
        Kind::Test => Some(test_notice(name, &app.cfg.notify.channels())),
    }
}

/// The spike alert a finished scan raises, when `[notify] spike` is set and the scan is
/// complete with a comparable scan before it.
async fn spike_alert(app: &App, end: &Event) -> Option<Alert> {
    let cfg = app.cfg.notify.spike.as_ref()?;
    let Event::ScanFinished {
        scan_id,
        complete: true,
        summary,
        mode,
        ..
    } = end
    else {
        return None;
    };
    let complete = match app.state.complete_scans().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("notify: no spike check: {}", crate::error::one_line(&e));
            return None;
        }
    };
    let this = match complete.iter().find(|s| s.id == *scan_id) {
        Some(s) => s.clone(),
        // A missing-only scan is not among them: its missing rows are compared with the
        // previous complete scan of the same stores and window that checked them.
        None => app.state.scan(*scan_id).await.ok().flatten()?,
    };
    let then = super::spike::baseline(&this, &complete)?;
    let then_summary = then.summary.as_ref()?;
    super::spike::compare(cfg, summary, *mode, then, then_summary)
}

fn orphan_item(o: &Orphan) -> Item {
    let rt = o.resource_type.as_str();
    let uploaded = o.uploaded_at.map(rfc3339);
    let mut text = format!("{}: {}", o.store, o.key);
    if !rt.is_empty() {
        let _ = write!(text, " [{rt}]");
    }
    let _ = write!(text, "  {} MB", size_mb(o.size));
    if let Some(u) = &uploaded {
        let _ = write!(text, "  {u}");
    }
    let format = o.format();
    if !format.is_empty() {
        let _ = write!(text, "  {format}");
    }
    Item {
        text,
        link: o.url.clone(),
        json: json!({
            "store": o.store,
            "key": o.key,
            "resource_type": rt,
            "size_bytes": o.size,
            "size_mb": size_mb_number(o.size),
            "format": format,
            "uploaded_at": uploaded,
            "url": o.url,
        }),
    }
}

fn missing_item(m: &Missing) -> Item {
    let mut text = format!(
        "{} {} #{}",
        m.status,
        m.reference,
        m.record_id.as_deref().unwrap_or("?")
    );
    if let Some(t) = &m.title {
        let _ = write!(text, " \"{t}\"");
    }
    if let Some(o) = &m.owner {
        let _ = write!(text, " ({o})");
    }
    let _ = write!(text, ": {}", m.key);
    Item {
        text,
        link: m.link.clone(),
        json: json!({
            "reference": m.reference,
            "record_id": m.record_id.as_deref().unwrap_or_default(),
            "title": m.title,
            "owner": m.owner,
            "media_type": m.media_type,
            "key": m.key,
            "created_at": m.created_at.map(rfc3339),
            "status": m.status,
            "link": m.link,
        }),
    }
}

fn plain_item(text: String) -> Item {
    Item {
        json: Value::String(text.clone()),
        text,
        link: None,
    }
}

fn figure(label: &str, value: impl Into<String>) -> Figure {
    Figure {
        label: label.to_string(),
        value: value.into(),
    }
}

/// `15 orphans (2.30 MB), 3 missing (2 ACTIVE, 1 DELETED)`, for what the scan looked for.
fn scan_headline(s: &Summary, mode: ScanMode) -> String {
    let mut parts = Vec::new();
    if mode.orphans() {
        parts.push(format!(
            "{} orphan{} ({} MB)",
            count(s.orphans),
            if s.orphans == 1 { "" } else { "s" },
            size_mb(s.orphan_bytes)
        ));
    }
    if mode.missing() {
        parts.push(format!(
            "{} missing ({} ACTIVE, {} DELETED)",
            count(s.missing),
            count(s.missing_active),
            count(s.missing - s.missing_active)
        ));
    }
    parts.join(", ")
}

/// What to do next, fitted to what the scan found.
fn scan_actions(
    s: &Summary,
    id: i64,
    complete: bool,
    report: Option<&str>,
    alert: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if !complete {
        out.push(
            "This scan is incomplete (see the warnings), so it can never feed a deletion: fix what failed and scan again."
                .to_string(),
        );
    }
    if alert {
        out.push(
            "Orphans or missing files jumped since the comparable scan: check that the references' key_format, key_prefix and the stores' locations still match before deleting anything (purge's mass-deletion guard may refuse)."
                .to_string(),
        );
    }
    if s.orphans > 0 {
        out.push(format!(
            "Review the {} orphaned file{} in the report{}.",
            count(s.orphans),
            if s.orphans == 1 { "" } else { "s" },
            report.map_or_else(String::new, |p| format!(" ({p})"))
        ));
        if complete {
            out.push(format!(
                "Delete them with `assetgc purge --scan {id}` (a dry run first), then `assetgc purge --scan {id} --confirm`: they go through the queue and are quarantined first where quarantine is on."
            ));
        }
        #[allow(clippy::cast_precision_loss)]
        let share = s.orphans as f64 / s.objects_scanned.max(1) as f64;
        if share > 0.2 || alert {
            out.push(
                "If these are recent uploads whose rows are written later, raise the store's min_age so that they are not judged before they are referenced."
                    .to_string(),
            );
        }
    }
    if s.missing_active > 0 {
        out.push(format!(
            "Re-upload or restore the {} file{} that ACTIVE records still point to (`assetgc restore KEY` brings back a file assetgc quarantined), or fix those records.",
            count(s.missing_active),
            if s.missing_active == 1 { "" } else { "s" }
        ));
    }
    let deleted = s.missing - s.missing_active;
    if deleted > 0 {
        out.push(format!(
            "{} missing file{} belong to DELETED records: clear those references or expire the rows (`[[expiry]]`, `assetgc expire`).",
            count(deleted),
            if deleted == 1 { "" } else { "s" }
        ));
    }
    if s.unparsed > 0 {
        out.push(format!(
            "{} stored value{} could not be read as keys: check the references' key_format.",
            count(s.unparsed),
            if s.unparsed == 1 { "" } else { "s" }
        ));
    }
    if out.is_empty() {
        out.push("Nothing to do: storage and database agree.".to_string());
    }
    out
}

fn alert_json(alert: Option<&Alert>) -> Value {
    alert.map_or(
        Value::Null,
        |a| json!({"baseline_scan": a.baseline_scan, "lines": a.lines}),
    )
}

#[allow(clippy::too_many_lines)] // one notice, figure by figure
fn scan_notice(app_name: String, end: &Event, alert: Option<Alert>) -> Option<Notice> {
    let Event::ScanFinished {
        scan_id,
        window,
        mode,
        complete,
        summary: s,
        report_path,
        started_at,
        finished_at,
        stores,
        api_calls,
        warnings,
        api_usage,
        first_orphans,
        first_missing,
    } = end
    else {
        return None;
    };
    let headline = scan_headline(s, *mode);
    let actions = scan_actions(
        s,
        *scan_id,
        *complete,
        report_path.as_deref(),
        alert.is_some(),
    );
    let mut figures = vec![figure(
        "Scan",
        format!(
            "#{scan_id}, {}, {} s, stores {}",
            window.describe(),
            (*finished_at - *started_at).num_seconds(),
            stores.join(", ")
        ),
    )];
    if mode.orphans() {
        figures.push(figure("Objects scanned", count(s.objects_scanned)));
        figures.push(figure(
            "Valid files",
            format!(
                "{} ({:.1}%)",
                count(s.valid),
                Summary::percent(s.valid, s.objects_scanned)
            ),
        ));
        figures.push(figure(
            "Orphaned files",
            format!(
                "{} ({:.1}%), {} MB",
                count(s.orphans),
                Summary::percent(s.orphans, s.objects_scanned),
                size_mb(s.orphan_bytes)
            ),
        ));
        if s.too_recent > 0 {
            figures.push(figure(
                "Too recent (younger than min_age)",
                count(s.too_recent),
            ));
        }
        if !s.orphans_by_folder.is_empty() {
            let top: Vec<String> = s
                .orphans_by_folder
                .iter()
                .take(5)
                .map(|f| format!("{} {} ({} MB)", f.folder, count(f.count), size_mb(f.bytes)))
                .collect();
            figures.push(figure("Orphans by folder", top.join(", ")));
        }
    }
    if mode.missing() {
        figures.push(figure(
            "Records with missing files",
            format!(
                "{}: {} ACTIVE, {} DELETED",
                count(s.missing),
                count(s.missing_active),
                count(s.missing - s.missing_active)
            ),
        ));
    }
    let mut lists = Vec::new();
    if mode.orphans() {
        lists.push(List {
            title: "Orphaned files".into(),
            key: "orphans",
            total: s.orphans,
            items: first_orphans.iter().map(orphan_item).collect(),
        });
    }
    if mode.missing() {
        lists.push(List {
            title: "Records with missing files".into(),
            key: "missing",
            total: s.missing,
            items: first_missing.iter().map(missing_item).collect(),
        });
    }
    let attachment = report_path
        .as_ref()
        .filter(|p| p.to_ascii_lowercase().ends_with(".csv"))
        .map(std::path::PathBuf::from);
    // The console's lines without its column padding.
    let usage: Vec<String> = api_usage
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut summary_json = serde_json::to_value(s).unwrap_or_default();
    if let Value::Object(m) = &mut summary_json {
        m.insert(
            "missing_deleted".into(),
            json!(s.missing - s.missing_active),
        );
        m.insert("headline".into(), json!(headline));
        m.insert("actions".into(), json!(actions));
        m.insert("api_usage".into(), json!(usage));
        m.insert("report_path".into(), json!(report_path));
        m.insert("alert".into(), alert_json(alert.as_ref()));
    }
    Some(Notice {
        kind: Kind::Scan,
        run_id: Some(*scan_id),
        headline,
        complete: *complete,
        noteworthy: s.orphans > 0 || s.missing > 0,
        figures,
        lists,
        actions,
        api_usage: usage,
        report_path: report_path.clone(),
        attachment,
        warnings: warnings.clone(),
        scan_json: json!({
            "kind": "scan",
            "app_name": app_name,
            "id": scan_id,
            "started_at": rfc3339(*started_at),
            "finished_at": rfc3339(*finished_at),
            "window": window,
            "stores": stores,
            "complete": complete,
            "api_calls": api_calls,
            "warnings": warnings,
            "report_path": report_path,
        }),
        summary_json,
        alert,
        app_name,
    })
}

fn failed_scan(app_name: String, scan_id: i64, error: &str) -> Notice {
    let headline = format!("failed: {error}");
    let actions = vec![
        "Run `assetgc check` to see which store or database cannot be reached, then scan again."
            .to_string(),
    ];
    Notice {
        kind: Kind::Scan,
        run_id: Some(scan_id),
        complete: false,
        noteworthy: false,
        alert: None,
        figures: vec![figure("Scan", format!("#{scan_id}"))],
        lists: Vec::new(),
        actions: actions.clone(),
        api_usage: Vec::new(),
        report_path: None,
        attachment: None,
        warnings: vec![error.to_string()],
        scan_json: json!({"kind": "scan", "app_name": app_name, "id": scan_id, "complete": false, "error": error, "report_path": null}),
        summary_json: json!({"headline": headline, "actions": actions, "api_usage": [], "report_path": null, "alert": null}),
        headline,
        app_name,
    }
}

/// The queue run's figures as people read them.
fn queue_figures(e: &Event) -> (Vec<Figure>, u64, u64, Vec<String>, Option<String>) {
    let Event::QueueRunFinished {
        claimed,
        deleted,
        quarantined,
        already_gone,
        referenced,
        retrying,
        failed,
        deferred,
        dropped,
        errors,
        budget_stop,
    } = e
    else {
        return (Vec::new(), 0, 0, Vec::new(), None);
    };
    let figures = vec![
        figure("Processed", count(*claimed)),
        figure("Deleted", count(*deleted)),
        figure("Quarantined", count(*quarantined)),
        figure("Already gone", count(*already_gone)),
        figure("Kept (referenced again)", count(*referenced)),
        figure("Dropped (ignored)", count(*dropped)),
        figure("Retrying later", count(*retrying)),
        figure("Failed", count(*failed)),
        figure("Left untried", count(*deferred)),
    ];
    (
        figures,
        deleted + quarantined,
        *failed,
        errors.clone(),
        budget_stop.clone(),
    )
}

fn deletion_actions(failed: u64, retrying: u64, budget_stop: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if failed > 0 {
        out.push(format!(
            "{} deletion{} failed for good: see `assetgc queue list --failed`, fix the cause, then `assetgc queue retry --all-failed`.",
            count(failed),
            if failed == 1 { "" } else { "s" }
        ));
    }
    if retrying > 0 {
        out.push(format!(
            "{} deletion{} will be tried again (`assetgc queue run`, or serve's worker).",
            count(retrying),
            if retrying == 1 { "" } else { "s" }
        ));
    }
    if let Some(why) = budget_stop {
        out.push(format!(
            "The run stopped on the API budget ({why}): the rest waits for the next run."
        ));
    }
    out
}

fn purge_notice(app_name: String, queued: &Event, worked: Option<&Event>) -> Notice {
    let Event::PurgeQueued {
        source,
        dry_run,
        candidates,
        bytes,
        added,
        already_queued,
        held,
        first_keys,
    } = queued
    else {
        return test_notice(app_name, &[]);
    };
    if *dry_run {
        return purge_dry_run_notice(app_name, queued);
    }
    let mut figures = vec![
        figure("Source", source.clone()),
        figure(
            "Orphans",
            format!("{} ({} MB)", count(*candidates), size_mb(*bytes)),
        ),
        figure("Queued", count(*added)),
        figure("Already queued", count(*already_queued)),
        figure("Held until older than min_age", count(*held)),
    ];
    let (more, gone, failed, errors, budget_stop) =
        worked.map_or_else(|| (Vec::new(), 0, 0, Vec::new(), None), queue_figures);
    figures.extend(more);
    let (retrying, referenced, dropped) = match worked {
        Some(Event::QueueRunFinished {
            retrying,
            referenced,
            dropped,
            ..
        }) => (*retrying, *referenced, *dropped),
        _ => (0, 0, 0),
    };
    // The queue run after the queueing works every due entry, older ones too: its figures are
    // the run's, not only this plan's.
    let headline = format!(
        "{} orphan{} ({} MB) of {source} queued; the queue run deleted {}{}",
        count(*candidates),
        if *candidates == 1 { "" } else { "s" },
        size_mb(*bytes),
        count(gone),
        if failed > 0 {
            format!(", {} failed", count(failed))
        } else {
            String::new()
        }
    );
    let mut actions = deletion_actions(failed, retrying, budget_stop.as_deref());
    if *held > 0 {
        actions.push(format!(
            "{} orphan{} held until older than min_age: a later `assetgc queue run` (or serve's worker) deletes them.",
            count(*held),
            if *held == 1 { " is" } else { "s are" }
        ));
    }
    let lists = vec![
        List {
            title: "Orphans queued".into(),
            key: "queued",
            total: *added,
            items: first_keys.iter().cloned().map(plain_item).collect(),
        },
        errors_list(&errors, failed),
    ];
    deletion_notice(DeletionParts {
        app_name,
        kind: Kind::Purge,
        run_id: None,
        headline,
        complete: failed == 0 && budget_stop.is_none(),
        // A failed attempt that will be tried again is a failure of this run all the same.
        noteworthy: gone > 0 || failed > 0 || retrying > 0 || referenced > 0 || dropped > 0,
        figures,
        lists,
        actions,
        summary: json!({
            "source": source, "dry_run": false, "candidates": candidates, "bytes": bytes,
            "queued": added, "already_queued": already_queued, "held": held,
            "worked": worked,
        }),
    })
}

/// `purge` without `--confirm`: what would be deleted. It deletes nothing, so only
/// `on = "always"` sends it.
fn purge_dry_run_notice(app_name: String, queued: &Event) -> Notice {
    let Event::PurgeQueued {
        source,
        candidates,
        bytes,
        first_keys,
        ..
    } = queued
    else {
        return test_notice(app_name, &[]);
    };
    let headline = format!(
        "dry run: {} orphan{} ({} MB) of {source} would be deleted",
        count(*candidates),
        if *candidates == 1 { "" } else { "s" },
        size_mb(*bytes)
    );
    deletion_notice(DeletionParts {
        app_name,
        kind: Kind::Purge,
        run_id: None,
        headline,
        complete: true,
        noteworthy: false,
        figures: vec![
            figure("Source", source.clone()),
            figure(
                "Would delete",
                format!("{} ({} MB)", count(*candidates), size_mb(*bytes)),
            ),
        ],
        lists: vec![List {
            title: "Orphans that would be deleted".into(),
            key: "queued",
            total: *candidates,
            items: first_keys.iter().cloned().map(plain_item).collect(),
        }],
        actions: if *candidates > 0 {
            vec!["Run `assetgc purge --confirm` (with the same options) to delete them.".into()]
        } else {
            Vec::new()
        },
        summary: json!({
            "source": source, "dry_run": true, "candidates": candidates, "bytes": bytes,
        }),
    })
}

fn errors_list(errors: &[String], failed: u64) -> List {
    List {
        title: "Deletion errors".into(),
        key: "errors",
        total: failed.max(errors.len() as u64),
        items: errors.iter().take(20).cloned().map(plain_item).collect(),
    }
}

struct DeletionParts {
    app_name: String,
    kind: Kind,
    run_id: Option<i64>,
    headline: String,
    complete: bool,
    noteworthy: bool,
    figures: Vec<Figure>,
    lists: Vec<List>,
    actions: Vec<String>,
    summary: Value,
}

fn deletion_notice(p: DeletionParts) -> Notice {
    let lists: Vec<List> = p
        .lists
        .into_iter()
        .filter(|l| !l.items.is_empty() || l.total > 0)
        .collect();
    let actions = if p.actions.is_empty() {
        vec!["Nothing to do.".to_string()]
    } else {
        p.actions
    };
    let mut summary = p.summary;
    if let Value::Object(m) = &mut summary {
        m.insert("headline".into(), json!(p.headline));
        m.insert("actions".into(), json!(actions));
        m.insert("api_usage".into(), json!([]));
        m.insert("report_path".into(), Value::Null);
        m.insert("alert".into(), Value::Null);
    }
    Notice {
        kind: p.kind,
        run_id: p.run_id,
        headline: p.headline,
        complete: p.complete,
        noteworthy: p.noteworthy,
        alert: None,
        figures: p.figures,
        lists,
        actions,
        api_usage: Vec::new(),
        report_path: None,
        attachment: None,
        warnings: Vec::new(),
        scan_json: json!({
            "kind": p.kind.as_str(),
            "app_name": p.app_name,
            "id": p.run_id,
            "complete": p.complete,
            "finished_at": rfc3339(Utc::now()),
            "report_path": null,
        }),
        summary_json: summary,
        app_name: p.app_name,
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

#[allow(clippy::too_many_lines)] // one notice, figure by figure
fn clean_notice(app_name: String, e: &Event) -> Notice {
    let Event::CleanFinished {
        run_id,
        dry_run,
        complete,
        summary,
    } = e
    else {
        return test_notice(app_name, &[]);
    };
    let (queued, deleted, failed, dropped) = (
        num(summary, "deleted_count"),
        num(summary, "deleted"),
        num(summary, "failed"),
        num(summary, "dropped_referenced"),
    );
    let mb = summary
        .get("deleted_size_mb")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let headline = if *dry_run {
        format!(
            "dry run: {} file(s) ({mb:.2} MB) would be deleted",
            count(queued)
        )
    } else {
        format!(
            "{} deleted of {} queued ({mb:.2} MB){}",
            count(deleted),
            count(queued),
            if failed > 0 {
                format!(", {} failed", count(failed))
            } else {
                String::new()
            }
        )
    };
    let mut figures = vec![
        figure(
            "Run",
            format!("#{run_id}{}", if *dry_run { " (dry run)" } else { "" }),
        ),
        figure("Files scanned", count(num(summary, "total_files_scanned"))),
        figure(
            if *dry_run { "Would delete" } else { "Queued" },
            format!("{} ({mb:.2} MB)", count(queued)),
        ),
        figure("Retained", count(num(summary, "retained_count"))),
    ];
    if !*dry_run {
        figures.push(figure("Deleted", count(deleted)));
        figures.push(figure("Already gone", count(num(summary, "already_gone"))));
        figures.push(figure("Kept (referenced again)", count(dropped)));
        figures.push(figure("Retrying later", count(num(summary, "retrying"))));
        figures.push(figure("Failed", count(failed)));
    }
    if let Some(Value::Array(ps)) = summary.get("policies") {
        for p in ps {
            figure_of_policy(&mut figures, p);
        }
    }
    let sample: Vec<Item> = summary
        .get("deleted_files_sample")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| plain_item(s.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut actions = deletion_actions(failed, num(summary, "retrying"), None);
    if *dry_run && queued > 0 {
        actions.push("Run `assetgc clean` without --dry-run to delete them.".into());
    }
    if !*complete {
        actions.push("A policy's listing or queries failed, so nothing was queued for it: see the warnings and run again.".into());
    }
    deletion_notice(DeletionParts {
        app_name,
        kind: Kind::Clean,
        run_id: Some(*run_id),
        headline,
        complete: *complete && failed == 0,
        noteworthy: !*dry_run
            && (deleted > 0
                || failed > 0
                || dropped > 0
                || num(summary, "dropped") > 0
                || num(summary, "retrying") > 0),
        figures,
        lists: vec![List {
            title: if *dry_run {
                "Files that would be deleted".into()
            } else {
                "Files queued".into()
            },
            key: "files",
            total: queued,
            items: sample,
        }],
        actions,
        summary: summary.clone(),
    })
}

fn figure_of_policy(figures: &mut Vec<Figure>, p: &Value) {
    let name = p.get("policy").and_then(Value::as_str).unwrap_or("?");
    let store = p.get("store").and_then(Value::as_str).unwrap_or("?");
    figures.push(figure(
        &format!("Policy {name}"),
        format!(
            "store {store}: {} of {} files{}",
            count(num(p, "deleted_count")),
            count(num(p, "total_files_scanned")),
            if p.get("complete").and_then(Value::as_bool) == Some(false) {
                " — INCOMPLETE"
            } else {
                ""
            }
        ),
    ));
}

#[allow(clippy::too_many_lines)] // one notice, figure by figure
fn expire_notice(app_name: String, e: &Event) -> Notice {
    let Event::ExpireFinished {
        dry_run,
        complete,
        report,
    } = e
    else {
        return test_notice(app_name, &[]);
    };
    let rules: Vec<&Value> = report
        .get("rules")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let total = |k: &str| -> u64 { rules.iter().map(|r| num(r, k)).sum() };
    let (expired, files, deleted, failures, left) = (
        total("rows_expired"),
        total("files"),
        total("files_deleted"),
        total("failures"),
        total("rows_left"),
    );
    let headline = if *dry_run {
        format!(
            "dry run: {} row(s) would expire, {} file(s)",
            count(expired),
            count(files)
        )
    } else {
        format!(
            "{} row(s) expired, {} file(s) deleted{}",
            count(expired),
            count(deleted),
            if failures > 0 {
                format!(", {} failure(s)", count(failures))
            } else {
                String::new()
            }
        )
    };
    let mut figures = Vec::new();
    let mut errors = Vec::new();
    for r in &rules {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("?");
        // A rule's totals are flattened into it (`expire --json`).
        let t = *r;
        figures.push(figure(
            &format!("Rule {name}"),
            format!(
                "{} selected, {} expired, {} files{}, {} kept shared, {} failures, {} left",
                count(num(t, "rows_selected")),
                count(num(t, "rows_expired")),
                count(if *dry_run {
                    num(t, "files")
                } else {
                    num(t, "files_deleted")
                }),
                if *dry_run { "" } else { " deleted" },
                count(num(t, "kept_shared")),
                count(num(t, "failures")),
                count(num(t, "rows_left"))
            ),
        ));
        if let Some(err) = r.get("error").and_then(Value::as_str) {
            errors.push(format!("{name}: {err}"));
        }
    }
    let mut actions = Vec::new();
    if failures > 0 {
        actions.push(
            "Some files or rows failed: see `assetgc queue list --failed` and the rules' errors; the rows stay and are retried next run."
                .to_string(),
        );
    }
    if left > 0 && !*dry_run {
        actions.push(format!(
            "{} row(s) were left for the next run (`expire --json` lists why).",
            count(left)
        ));
    }
    if *dry_run && expired > 0 {
        actions.push("Run `assetgc expire` without --dry-run to expire them.".into());
    }
    deletion_notice(DeletionParts {
        app_name,
        kind: Kind::Expire,
        run_id: None,
        headline,
        complete: *complete,
        noteworthy: !*dry_run && (expired > 0 || deleted > 0 || failures > 0),
        figures,
        lists: vec![List {
            title: "Errors".into(),
            key: "errors",
            total: errors.len() as u64,
            items: errors.into_iter().map(plain_item).collect(),
        }],
        actions,
        summary: report.clone(),
    })
}

fn queue_notice(app_name: String, e: &Event) -> Notice {
    let (figures, gone, failed, errors, budget_stop) = queue_figures(e);
    let (retrying, referenced, dropped, claimed) = match e {
        Event::QueueRunFinished {
            retrying,
            referenced,
            dropped,
            claimed,
            ..
        } => (*retrying, *referenced, *dropped, *claimed),
        _ => (0, 0, 0, 0),
    };
    let headline = format!(
        "{} deleted of {} processed{}",
        count(gone),
        count(claimed),
        if failed > 0 {
            format!(", {} failed", count(failed))
        } else {
            String::new()
        }
    );
    deletion_notice(DeletionParts {
        app_name,
        kind: Kind::QueueRun,
        run_id: None,
        headline,
        complete: failed == 0 && budget_stop.is_none(),
        noteworthy: gone > 0 || failed > 0 || retrying > 0 || referenced > 0 || dropped > 0,
        figures,
        lists: vec![errors_list(&errors, failed)],
        actions: deletion_actions(failed, retrying, budget_stop.as_deref()),
        summary: serde_json::to_value(e).unwrap_or_default(),
    })
}

/// `assetgc notify test`'s message.
pub fn test_notice(app_name: String, channels: &[&str]) -> Notice {
    let headline = "test message: notifications reach this channel".to_string();
    let actions = vec!["Nothing to do: this is a test sent by `assetgc notify test`.".to_string()];
    Notice {
        kind: Kind::Test,
        run_id: None,
        complete: true,
        noteworthy: true,
        alert: None,
        figures: vec![
            figure("Application", app_name.clone()),
            figure("Channels", channels.join(", ")),
            figure("Sent at", rfc3339(Utc::now())),
        ],
        lists: Vec::new(),
        actions: actions.clone(),
        api_usage: Vec::new(),
        report_path: None,
        attachment: None,
        warnings: Vec::new(),
        scan_json: json!({"kind": "test", "app_name": app_name, "id": null, "report_path": null}),
        summary_json: json!({"headline": headline, "actions": actions, "api_usage": [], "report_path": null, "alert": null}),
        headline,
        app_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ObjectId, ResourceType};

    async fn app(dir: &std::path::Path) -> Arc<App> {
        let text = format!(
            "[state]\nurl = \"sqlite://{}/state.db\"\n\n[stores.media]\nurl = \"{}\"\n\n[notify]\non = \"always\"\n",
            dir.display(),
            dir.display()
        );
        let cfg = crate::config::parse(&text, "t.toml", dir, &|_| None).expect("config");
        App::open(cfg).await.expect("app")
    }

    fn finished(id: i64, orphans: u64) -> Event {
        Event::ScanFinished {
            scan_id: id,
            window: crate::domain::scan::Window::All,
            mode: ScanMode::Both,
            complete: true,
            summary: Summary {
                orphans,
                ..Summary::default()
            },
            report_path: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            stores: vec!["media".into()],
            api_calls: indexmap::IndexMap::new(),
            warnings: Vec::new(),
            api_usage: Vec::new(),
            first_orphans: Vec::new(),
            first_missing: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_scan_s_notice_is_made_from_that_scan_s_events_only() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        // Two scans ended while this one's watch listened (serve runs several at once).
        let events = [finished(1, 7), finished(2, 0)];
        let n = notice(&app, Kind::Scan, Some(1), &events).await.unwrap();
        assert_eq!(n.run_id, Some(1));
        assert!(n.noteworthy);
        let n = notice(&app, Kind::Scan, Some(2), &events).await.unwrap();
        assert_eq!(n.run_id, Some(2));
        assert!(!n.noteworthy);
        assert!(notice(&app, Kind::Scan, Some(3), &events).await.is_none());
        app.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_other_events_never_pushes_the_run_s_end_out() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let w = Watch::new(&app, Kind::Purge);
        app.publish(Event::PurgeQueued {
            source: "scan 1".into(),
            dry_run: false,
            candidates: 5000,
            bytes: 1,
            added: 5000,
            already_queued: 0,
            held: 0,
            first_keys: Vec::new(),
        });
        // Four times the channel's backlog of failures, as a store that is down gives: the run
        // awaits between them, as a real one does.
        for i in 0..4096 {
            app.publish(Event::DeletionFailed {
                queue_id: i,
                object: ObjectId::new("media", ResourceType::Plain, format!("k{i}")),
                error: "store down".into(),
                gave_up: false,
            });
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        app.publish(Event::QueueRunFinished {
            claimed: 5000,
            deleted: 0,
            quarantined: 0,
            already_gone: 0,
            referenced: 0,
            retrying: 5000,
            failed: 0,
            deferred: 0,
            dropped: 0,
            errors: vec!["store down".into()],
            budget_stop: None,
        });
        // With no channel configured, a notice that was made says so; a lost one would say the
        // run announced no end.
        assert_eq!(
            w.finish(None).await,
            Sent::Skipped("no channel configured".into())
        );
        app.close().await;
    }

    #[test]
    fn a_purge_whose_deletions_all_wait_for_a_retry_is_findings() {
        let queued = Event::PurgeQueued {
            source: "scan 1".into(),
            dry_run: false,
            candidates: 2,
            bytes: 1,
            added: 2,
            already_queued: 0,
            held: 0,
            first_keys: Vec::new(),
        };
        let worked = Event::QueueRunFinished {
            claimed: 2,
            deleted: 0,
            quarantined: 0,
            already_gone: 0,
            referenced: 0,
            retrying: 2,
            failed: 0,
            deferred: 0,
            dropped: 0,
            errors: vec!["store down".into()],
            budget_stop: None,
        };
        let n = purge_notice("shop".into(), &queued, Some(&worked));
        assert!(n.noteworthy);
        assert!(
            n.actions.iter().any(|a| a.contains("tried again")),
            "{:?}",
            n.actions
        );
    }
}
