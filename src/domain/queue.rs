//! The deletion queue's data (SPEC §6): entries and their states, what a worker observed of one,
//! the decision about what becomes of it ([`Completion`], made by `queue::transition`), the audit
//! log and the quarantine records.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ObjectId, ResourceType, Spelling, spelled};

/// SQL and JSON: `pending`, `claimed`, `failed`, `done`, `dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    Pending,
    Claimed,
    Failed,
    Done,
    Dropped,
}

impl Spelling for QueueState {
    const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Claimed,
        Self::Failed,
        Self::Done,
        Self::Dropped,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Failed => "failed",
            Self::Done => "done",
            Self::Dropped => "dropped",
        }
    }
}
spelled!(
    QueueState,
    "queue state (pending, claimed, failed, done, dropped)"
);

/// What queued an entry: its `reason` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Purge,
    Add,
    /// The removal of a quarantined copy, due `keep` after the move.
    Quarantine,
}

impl Spelling for Reason {
    const ALL: &'static [Self] = &[Self::Purge, Self::Add, Self::Quarantine];
    fn as_str(self) -> &'static str {
        match self {
            Self::Purge => "purge",
            Self::Add => "queue add",
            Self::Quarantine => "quarantine",
        }
    }
}
spelled!(Reason, "queue reason (purge, queue add, quarantine)");

/// An entry to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub object: ObjectId,
    pub reason: Reason,
    pub client_id: String,
    pub scan_id: Option<i64>,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    /// For the removal of a quarantined copy: the key it was moved from.
    pub original_key: Option<String>,
}

/// A queue entry as the state database holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    #[serde(flatten)]
    pub object: ObjectId,
    pub reason: Reason,
    pub rule: String,
    pub row_id: String,
    pub client_id: String,
    pub scan_id: Option<i64>,
    #[serde(serialize_with = "as_rfc3339")]
    pub queued_at: DateTime<Utc>,
    #[serde(serialize_with = "as_opt_rfc3339")]
    pub uploaded_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub last_error: Option<String>,
    #[serde(serialize_with = "as_rfc3339")]
    pub next_attempt_at: DateTime<Utc>,
    pub state: QueueState,
    #[serde(skip)]
    pub actor: String,
    #[serde(skip)]
    pub original_key: Option<String>,
    #[serde(skip)]
    pub quarantine_key: Option<String>,
    /// Claimed before (its worker stopped or its claim timed out): its move may have happened.
    #[serde(skip)]
    pub reclaimed: bool,
}

fn as_rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::rfc3339(*t))
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands over `&Option<T>`
fn as_opt_rfc3339<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => as_rfc3339(t, s),
        None => s.serialize_none(),
    }
}

impl Entry {
    pub fn resource_type(&self) -> ResourceType {
        self.object.resource_type
    }

    /// The key whose references decide: a quarantined copy is kept while its original is used.
    pub fn checked_key(&self) -> &str {
        self.original_key.as_deref().unwrap_or(&self.object.key)
    }

    pub fn is_copy_removal(&self) -> bool {
        self.reason == Reason::Quarantine
    }
}

/// How one claimed entry ended this time, as the worker observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    AlreadyGone,
    /// Moved to `quarantine_key` at `moved_at`.
    Quarantined {
        quarantine_key: String,
        moved_at: DateTime<Utc>,
    },
    /// Referenced again: dropped, never deleted (a quarantined copy is kept).
    Referenced(String),
    /// The store call failed. `permanent`: trying again cannot help (a 403, a key the store
    /// cannot hold), so the entry fails at once instead of spending its attempts.
    Failed {
        error: String,
        permanent: bool,
    },
    /// Not tried (the API budget stopped the run, or the claim was lost): back to `pending`, no
    /// attempt counted.
    Deferred,
    /// Dropped without a store call, with why (an `ignore` glob matches the key).
    Dropped(String),
}

/// What becomes of a queue row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryUpdate {
    pub state: QueueState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the entry is due again (only for `pending`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The row's `outcome` column (finished entries).
    pub outcome: Option<String>,
    /// Set `finished_at` (the entry left the queue for good).
    pub finished: bool,
}

/// What happens to quarantine records along with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineChange {
    /// A new record of a move; its removal entry's id is filled in by the state database.
    Record {
        quarantine_key: String,
        moved_at: DateTime<Utc>,
    },
    /// The records whose removal this entry is take this state (`removed`, `kept`).
    SetState(QuarantineState),
}

/// SQL: `held`, `removed`, `restored`, `kept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuarantineState {
    Held,
    Removed,
    Restored,
    Kept,
}

impl Spelling for QuarantineState {
    const ALL: &'static [Self] = &[Self::Held, Self::Removed, Self::Restored, Self::Kept];
    fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Removed => "removed",
            Self::Restored => "restored",
            Self::Kept => "kept",
        }
    }
}
spelled!(
    QuarantineState,
    "quarantine state (held, removed, restored, kept)"
);

/// One audit-log line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub object: ObjectId,
    pub outcome: String,
    pub detail: Option<String>,
}

/// The decision about one claimed entry, made by `queue::transition::complete` and applied by
/// the state database in the batch's transaction, only while the worker still holds the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub id: i64,
    pub update: EntryUpdate,
    /// The follow-up removal of a quarantined copy.
    pub removal: Option<NewEntry>,
    pub quarantine: Option<QuarantineChange>,
    pub audit: Option<AuditEntry>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub store: String,
    pub resource_type: ResourceType,
    pub key: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub queue_id: Option<i64>,
}

/// `queue stats`, with the API's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `pending` and `claimed`.
    pub total_pending: u64,
    pub total_failed: u64,
    pub total_done: u64,
    pub total_dropped: u64,
    /// Of the pending ones: how many are due now.
    pub due_now: u64,
    pub oldest_queued: Option<String>,
    pub newest_queued: Option<String>,
    pub next_due: Option<String>,
    /// Pending and claimed entries grouped by attempts so far.
    pub by_attempts: Vec<(u32, u64)>,
}

/// A quarantine move, as `restore` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    pub id: i64,
    pub object: ObjectId,
    pub quarantine_key: String,
    pub moved_at: String,
    pub state: QuarantineState,
    pub queue_id: Option<i64>,
}

/// Which entries a `retry` or `drop` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<i64>),
    AllFailed,
}

/// What a `retry` or `drop` did to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Retried,
    /// Dropped (by `drop`, or by `retry` because its object is queued again).
    Dropped,
}

/// What `queue retry` does to one entry (a failed one, or one that waits); decided by
/// `queue::transition::retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Due again at this time with its attempts reset.
    Due(DateTime<Utc>),
    /// The object is queued again as entry `other`: this older entry is dropped.
    DropForNewer { other: i64 },
}
