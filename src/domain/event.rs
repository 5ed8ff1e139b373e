//! What the operations announce as they happen: the feed notifications and the HTTP API consume.
//! An operation publishes its events on the application's channel (`App::events`); nobody has to
//! listen, and an operation never waits for a listener.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ObjectId;
use super::scan::{Missing, Orphan, ScanMode, Summary, Window};

/// How many orphans and missing rows a finished scan's event names (its notifications list
/// them).
pub const FIRST_ITEMS: usize = 20;

/// Which mass-deletion guard refused a purge (SPEC §6 invariant 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// More than `max_orphan_share` of the store's objects are orphans.
    OrphanShare,
    /// Orphans grew more than `max_orphan_jump` times since the comparable scan.
    OrphanJump,
    /// The scan recorded no readable counts for the store.
    NoCounts,
}

// A finished scan's event is the largest (its first items); events are few (one per run, one
// per failed deletion) and short-lived, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ScanFinished {
        scan_id: i64,
        window: Window,
        mode: ScanMode,
        complete: bool,
        summary: Summary,
        report_path: Option<String>,
        #[serde(serialize_with = "crate::time::serialize_rfc3339")]
        started_at: DateTime<Utc>,
        #[serde(serialize_with = "crate::time::serialize_rfc3339")]
        finished_at: DateTime<Utc>,
        stores: Vec<String>,
        /// Calls per store, as the JSON report's `api_calls`.
        api_calls: indexmap::IndexMap<String, u64>,
        warnings: Vec<String>,
        /// The console's API usage lines (the budgets in the seed's wording, this run's calls).
        api_usage: Vec<String>,
        /// The first [`FIRST_ITEMS`] orphans and missing rows, in the report's order.
        #[serde(skip)]
        first_orphans: Vec<Orphan>,
        #[serde(skip)]
        first_missing: Vec<Missing>,
    },
    ScanFailed {
        scan_id: i64,
        error: String,
    },
    PurgeRefused {
        store: String,
        scan_id: i64,
        guard: Guard,
        reason: String,
    },
    /// A guard was overridden with `--allow-mass-delete` (audited as `mass_delete_override`).
    PurgeOverridden {
        store: String,
        scan_id: i64,
        guard: Guard,
        reason: String,
    },
    PurgeQueued {
        /// What the orphans came from (`scan 12`, `report.csv`).
        source: String,
        /// A dry run: nothing was queued (`added`, `already_queued` and `held` are 0).
        dry_run: bool,
        /// Orphans in the plan, and their bytes.
        candidates: u64,
        bytes: u64,
        added: u64,
        already_queued: u64,
        held: u64,
        /// The first [`FIRST_ITEMS`] orphans queued, as `store/key`.
        first_keys: Vec<String>,
    },
    DeletionFailed {
        queue_id: i64,
        object: ObjectId,
        error: String,
        /// The entry is `failed` now (attempts used up, or a permanent failure).
        gave_up: bool,
    },
    BudgetWarning {
        message: String,
    },
    BudgetStopped {
        message: String,
    },
    QueueRunFinished {
        claimed: u64,
        deleted: u64,
        quarantined: u64,
        already_gone: u64,
        referenced: u64,
        retrying: u64,
        failed: u64,
        deferred: u64,
        /// Dropped without a store call (an `ignore` glob matches).
        dropped: u64,
        /// The first failure messages of the run.
        errors: Vec<String>,
        /// Why the run stopped early on an API budget.
        budget_stop: Option<String>,
    },
    /// A `clean` run (CLI or API) is over: `summary` is `clean --json`'s answer.
    CleanFinished {
        run_id: i64,
        dry_run: bool,
        complete: bool,
        summary: serde_json::Value,
    },
    /// An `expire` run is over: `report` is `expire --json`'s answer.
    ExpireFinished {
        dry_run: bool,
        complete: bool,
        report: serde_json::Value,
    },
}
