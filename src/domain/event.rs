//! What the operations announce as they happen: the feed notifications and the HTTP API consume.
//! An operation publishes its events on the application's channel (`App::events`); nobody has to
//! listen, and an operation never waits for a listener.

use serde::Serialize;

use super::ObjectId;
use super::scan::{ScanMode, Summary, Window};

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
        added: u64,
        already_queued: u64,
        held: u64,
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
    },
}
