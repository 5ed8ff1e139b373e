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
    /// A retention policy (`clean`): held by `min_age` like a purge.
    Clean,
    /// An expiry rule (`expire`): its `rule` and `row_id` name the expiring row.
    Expire,
    /// An old value a database trigger (or the app itself) put into the outbox.
    Trigger,
}

impl Spelling for Reason {
    const ALL: &'static [Self] = &[
        Self::Purge,
        Self::Add,
        Self::Quarantine,
        Self::Clean,
        Self::Expire,
        Self::Trigger,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Self::Purge => "purge",
            Self::Add => "queue add",
            Self::Quarantine => "quarantine",
            Self::Clean => "clean",
            Self::Expire => "expire",
            Self::Trigger => "trigger",
        }
    }
}
spelled!(
    Reason,
    "queue reason (purge, queue add, quarantine, clean, expire, trigger)"
);

/// An entry to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub object: ObjectId,
    pub reason: Reason,
    /// The policy or expiry rule that queued it (empty otherwise): its releases apply.
    pub rule: String,
    /// The expiring row's id, as text, for an expiry rule.
    pub row_id: String,
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
    /// Where a move of this entry went or was going: set right before its first move (the time
    /// of that move), kept until the copy's fate is known. `queue list` shows it.
    #[serde(rename = "trash_key", skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
    /// A store call for it started and its outcome was never recorded (its worker stopped, its
    /// claim was taken over, or the call failed): whatever the call did must be looked at.
    #[serde(skip)]
    pub reclaimed: bool,
    /// The fencing token of the claim that returned it: every write of the worker names it, so a
    /// claim taken over meanwhile writes nothing.
    #[serde(skip)]
    pub claim_token: i64,
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

    /// Held by `min_age` at claim (invariant 2): entries that come from a scan or a policy (a
    /// copy's removal waits for `keep` instead).
    pub fn held_by_min_age(&self) -> bool {
        !self.is_copy_removal()
            && (matches!(self.reason, Reason::Purge | Reason::Clean) || self.scan_id.is_some())
    }

    /// An earlier attempt may have moved the object to `quarantine_key`: its copy must be found
    /// (and recorded, or moved back) before the entry may leave the queue.
    pub fn may_have_moved(&self) -> bool {
        !self.is_copy_removal() && self.quarantine_key.is_some()
    }
}

/// Where a quarantine move goes: `<folder>/<key>`, the folder being `<prefix><time of the move>`.
/// When that key is taken already (a copy of the same key moved within the same second), the
/// state database picks `<folder>-2/<key>`, `<folder>-3/<key>`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashSpot {
    pub folder: String,
    pub key: String,
}

impl TrashSpot {
    /// The `n`th candidate (from 1).
    pub fn candidate(&self, n: u32) -> String {
        if n <= 1 {
            format!("{}/{}", self.folder, self.key)
        } else {
            format!("{}-{n}/{}", self.folder, self.key)
        }
    }
}

/// One claim a worker renews right before (or during) a store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: i64,
    pub token: i64,
    /// Mark the entry in flight: a store call for it starts now.
    pub start: bool,
    /// Where its move goes if it has no quarantine key yet.
    pub spot: Option<TrashSpot>,
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
    /// An expiring row's file that another row still references: dropped, never deleted, and
    /// settled for the expiring row (audit `kept: shared`).
    KeptShared(String),
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
    /// Gone by the hand of an earlier attempt whose outcome was never recorded (a stopped
    /// worker, a lost claim): audited `deleted`, with this note.
    DeletedBefore(String),
    /// Held by `min_age` (invariant 2, evaluated at claim): back to `pending` until then, no
    /// attempt counted.
    Held(DateTime<Utc>),
    /// Dropped as too recent (its upload time is unknown, so it counts as too recent).
    TooRecent(String),
    /// A copy this entry's earlier move left at `quarantine_key` stays there, recorded `kept`
    /// (its key is taken again, or the object was found at both places); `then` is what
    /// becomes of the entry itself, whose next move goes elsewhere.
    Kept {
        quarantine_key: String,
        why: String,
        then: Box<Outcome>,
    },
    /// Nothing moved: its quarantine key is taken by an object that is not its own. Due again
    /// shortly with another key, no attempt counted.
    Retarget,
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
    /// The copy at the entry's quarantine key is accounted for: its next move picks a new key.
    pub forget_quarantine_key: bool,
}

/// What happens to quarantine records along with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineChange {
    /// A new record of a move; its removal entry's id is filled in by the state database.
    /// `state`: `held` (its removal is queued) or `kept`.
    Record {
        quarantine_key: String,
        moved_at: DateTime<Utc>,
        state: QuarantineState,
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
    /// The claim's fencing token: nothing is written unless the entry is still claimed with it.
    pub token: i64,
    pub update: EntryUpdate,
    /// The follow-up removal of a quarantined copy.
    pub removal: Option<NewEntry>,
    pub quarantine: Option<QuarantineChange>,
    /// The audit rows, the entry's own first.
    pub audit: Vec<AuditEntry>,
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
    /// Not dropped by `drop --all-failed`: an earlier attempt may have moved its object to the
    /// trash, and the worker must find that copy first (`queue retry` lets it).
    Refused,
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
