//! The queue's state machine, as pure functions: given an entry, what the worker observed, the
//! settings and the time, what becomes of the entry, its attempts and next attempt, the follow-up
//! removal of a quarantined copy, the quarantine record and the audit row. The state database only
//! applies the answer ([`crate::state::QueueStore::finish`]), the same way on every backend.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::ObjectId;
use crate::domain::queue::{
    AuditEntry, Completion, Entry, EntryUpdate, NewEntry, Outcome, QuarantineChange,
    QuarantineState, QueueState, Reason, Retry,
};
use crate::time::rfc3339;

pub use crate::time::{after, last_time};

/// The audit outcome (and the queue's `outcome`) of an expiry entry whose file another row
/// still references.
pub const KEPT_SHARED: &str = "kept: shared";

/// The wait before an entry whose quarantine key was taken tries another (a new second).
const RETARGET_SECS: u64 = 2;

/// What decides an entry's fate besides what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// The entry's store keeps quarantined copies this long; `None`: quarantine is off there.
    pub keep: Option<Duration>,
}

/// The wait before attempt `attempts_before + 1`: `backoff × 2^attempts_before`, capped.
pub fn backoff(settings: &Settings, attempts_before: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts_before.min(30));
    settings
        .backoff
        .checked_mul(factor)
        .unwrap_or(settings.backoff_max)
        .min(settings.backoff_max)
}

fn finished(state: QueueState, attempts: u32, outcome: &str) -> EntryUpdate {
    EntryUpdate {
        state,
        attempts,
        last_error: None,
        next_attempt_at: None,
        outcome: Some(outcome.to_string()),
        finished: true,
        forget_quarantine_key: false,
    }
}

/// Back to `pending`, due at `at` (unchanged when `None`), with `attempts`.
fn waiting(attempts: u32, at: Option<DateTime<Utc>>) -> EntryUpdate {
    EntryUpdate {
        state: QueueState::Pending,
        attempts,
        last_error: None,
        next_attempt_at: at,
        outcome: None,
        finished: false,
        forget_quarantine_key: false,
    }
}

fn audit(e: &Entry, outcome: impl Into<String>, detail: Option<String>) -> AuditEntry {
    AuditEntry {
        object: e.object.clone(),
        outcome: outcome.into(),
        detail,
    }
}

/// The decision about one claimed entry.
pub fn complete(e: &Entry, outcome: &Outcome, s: &Settings, now: DateTime<Utc>) -> Completion {
    let mut c = Completion {
        id: e.id,
        token: e.claim_token,
        update: finished(QueueState::Done, e.attempts, ""),
        removal: None,
        quarantine: None,
        audit: Vec::new(),
    };
    match outcome {
        Outcome::Deleted | Outcome::AlreadyGone | Outcome::DeletedBefore(_) => {
            let (word, note) = match outcome {
                Outcome::AlreadyGone => ("already_gone", None),
                Outcome::DeletedBefore(note) => ("deleted", Some(note.clone())),
                _ => ("deleted", None),
            };
            c.update = finished(QueueState::Done, e.attempts, word);
            if e.is_copy_removal() {
                c.quarantine = Some(QuarantineChange::SetState(QuarantineState::Removed));
            }
            c.audit.push(audit(e, word, note));
        }
        Outcome::Quarantined {
            quarantine_key,
            moved_at,
        } => quarantined(&mut c, e, quarantine_key, *moved_at, s),
        Outcome::Referenced(detail) | Outcome::KeptShared(detail) => {
            // An expiring row's file that another row still names stays with that row: the
            // expiring row may go (SPEC §2, expiry). Kept by the row itself (restored since),
            // it is only referenced.
            let word = if matches!(outcome, Outcome::KeptShared(_)) && e.reason == Reason::Expire {
                KEPT_SHARED
            } else {
                "referenced"
            };
            c.update = finished(QueueState::Dropped, e.attempts, word);
            if e.is_copy_removal() {
                c.quarantine = Some(QuarantineChange::SetState(QuarantineState::Kept));
            }
            c.audit.push(audit(e, word, Some(detail.clone())));
        }
        Outcome::Dropped(detail) => {
            c.update = finished(QueueState::Dropped, e.attempts, "dropped");
            c.audit.push(audit(e, "dropped", Some(detail.clone())));
        }
        Outcome::TooRecent(detail) => {
            c.update = finished(QueueState::Dropped, e.attempts, "too_recent");
            c.audit.push(audit(e, "too_recent", Some(detail.clone())));
        }
        Outcome::Failed { error, permanent } => {
            let attempts = e.attempts.saturating_add(1);
            let gave_up = *permanent || attempts >= s.max_attempts;
            c.update = if gave_up {
                EntryUpdate {
                    last_error: Some(error.clone()),
                    ..finished(QueueState::Failed, attempts, "failed")
                }
            } else {
                EntryUpdate {
                    last_error: Some(error.clone()),
                    ..waiting(attempts, Some(after(now, backoff(s, e.attempts))))
                }
            };
            let mut detail = format!("attempt {attempts} of {}", s.max_attempts);
            if *permanent {
                detail.push_str("; permanent: not retried");
            }
            c.audit
                .push(audit(e, format!("failed: {error}"), Some(detail)));
        }
        Outcome::Deferred => c.update = waiting(e.attempts, None),
        Outcome::Held(until) => c.update = waiting(e.attempts, Some(*until)),
        Outcome::Retarget => {
            c.update = EntryUpdate {
                forget_quarantine_key: true,
                ..waiting(
                    e.attempts,
                    Some(after(now, Duration::from_secs(RETARGET_SECS))),
                )
            };
        }
        Outcome::Kept {
            quarantine_key,
            why,
            then,
        } => {
            c = complete(e, then, s, now);
            c.update.forget_quarantine_key = true;
            c.quarantine = Some(QuarantineChange::Record {
                quarantine_key: quarantine_key.clone(),
                moved_at: now,
                state: QuarantineState::Kept,
            });
            c.audit.insert(
                0,
                audit(
                    e,
                    "kept",
                    Some(format!("its copy {quarantine_key} is kept: {why}")),
                ),
            );
        }
    }
    c
}

/// A move to the trash: recorded, and the copy's removal queued `keep` after the move.
fn quarantined(
    c: &mut Completion,
    e: &Entry,
    quarantine_key: &str,
    moved_at: DateTime<Utc>,
    s: &Settings,
) {
    // With quarantine off by now (a move left by an earlier run), the copy has no
    // reason to stay: its removal is due at once.
    let remove_at = s.keep.map_or(moved_at, |keep| after(moved_at, keep));
    c.update = finished(QueueState::Done, e.attempts, "quarantined");
    c.removal = Some(NewEntry {
        object: ObjectId::new(
            e.object.store.clone(),
            e.object.resource_type,
            quarantine_key.to_string(),
        ),
        reason: Reason::Quarantine,
        rule: String::new(),
        row_id: String::new(),
        client_id: String::new(),
        scan_id: e.scan_id,
        uploaded_at: None,
        next_attempt_at: remove_at,
        original_key: Some(e.object.key.clone()),
    });
    c.quarantine = Some(QuarantineChange::Record {
        quarantine_key: quarantine_key.to_string(),
        moved_at,
        state: QuarantineState::Held,
    });
    c.audit.push(audit(
        e,
        "quarantined",
        Some(format!(
            "moved to {quarantine_key}; removed for good after {}",
            rfc3339(remove_at)
        )),
    ));
}

/// When an entry from a scan or a policy may be deleted (invariant 2, evaluated at claim with
/// the store's `min_age` of that moment): `None` when now; `Some(Ok(t))` held until `t`;
/// `Some(Err(why))` never from this entry (its upload time is unknown, so it counts as too
/// recent; a later scan that knows it queues the object again).
pub fn min_age_hold(
    e: &Entry,
    min_age: Duration,
    now: DateTime<Utc>,
) -> Option<std::result::Result<DateTime<Utc>, String>> {
    if !e.held_by_min_age() || min_age.is_zero() {
        return None;
    }
    match e.uploaded_at {
        None => Some(Err(format!(
            "its upload time is unknown, so it counts as younger than min_age ({})",
            humantime::format_duration(min_age)
        ))),
        Some(t) => {
            let until = after(t, min_age);
            (until > now).then_some(Ok(until))
        }
    }
}

/// `queue retry`: due now, or — for an entry from a scan — not before `min_age` after its upload
/// time (invariant 2: a retry never lifts a hold); dropped when its object is queued again.
pub fn retry(
    e: &Entry,
    live_other: Option<i64>,
    min_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Retry {
    if let Some(other) = live_other {
        return Retry::DropForNewer { other };
    }
    let mut due = now;
    if e.held_by_min_age()
        && let Some(age) = min_age
    {
        // An unknown upload time counts as too recent: never due before `min_age` from now.
        due = due.max(after(e.uploaded_at.unwrap_or(now), age));
    }
    Retry::Due(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResourceType;

    const HOUR: Duration = Duration::from_hours(1);

    fn settings(quarantine: bool) -> Settings {
        Settings {
            max_attempts: 3,
            backoff: Duration::from_mins(1),
            backoff_max: HOUR,
            keep: quarantine.then_some(Duration::from_hours(7 * 24)),
        }
    }

    fn entry(attempts: u32, reason: Reason) -> Entry {
        let now = Utc::now();
        Entry {
            id: 7,
            object: ObjectId::new("media", ResourceType::Plain, "tmp/a.jpg"),
            reason,
            rule: String::new(),
            row_id: String::new(),
            client_id: String::new(),
            scan_id: Some(1),
            queued_at: now,
            uploaded_at: Some(now),
            attempts,
            last_error: None,
            next_attempt_at: now,
            state: QueueState::Claimed,
            actor: "purge".into(),
            original_key: (reason == Reason::Quarantine).then(|| "tmp/a.jpg".to_string()),
            quarantine_key: None,
            reclaimed: false,
            claim_token: 3,
        }
    }

    /// What the table expects of one case.
    struct Want {
        state: QueueState,
        counts_attempt: bool,
        retried: bool,
        row_outcome: Option<&'static str>,
        audit: Option<&'static str>,
        removal: bool,
        quarantine: Option<&'static str>,
    }

    /// A finished entry: its state, row outcome and audit word, nothing else.
    fn ends(state: QueueState, word: &'static str, quarantine: Option<&'static str>) -> Want {
        Want {
            state,
            counts_attempt: false,
            retried: false,
            row_outcome: Some(word),
            audit: Some(word),
            removal: false,
            quarantine,
        }
    }

    /// The row of the table for one outcome, for a copy's removal or not, with attempts left
    /// or not.
    fn want(outcome: &Outcome, copy: bool, left: bool) -> Want {
        match outcome {
            Outcome::Deleted => ends(QueueState::Done, "deleted", copy.then_some("removed")),
            Outcome::AlreadyGone => {
                ends(QueueState::Done, "already_gone", copy.then_some("removed"))
            }
            Outcome::Quarantined { .. } => Want {
                removal: true,
                ..ends(QueueState::Done, "quarantined", Some("record"))
            },
            Outcome::Referenced(_) => {
                ends(QueueState::Dropped, "referenced", copy.then_some("kept"))
            }
            Outcome::Dropped(_) => ends(QueueState::Dropped, "dropped", None),
            Outcome::Failed { permanent, .. } => {
                let retried = left && !permanent;
                Want {
                    state: if retried {
                        QueueState::Pending
                    } else {
                        QueueState::Failed
                    },
                    counts_attempt: true,
                    retried,
                    row_outcome: (!retried).then_some("failed"),
                    audit: Some(if *permanent {
                        "failed: 403 AccessDenied"
                    } else {
                        "failed: EIO"
                    }),
                    removal: false,
                    quarantine: None,
                }
            }
            Outcome::Deferred => Want {
                state: QueueState::Pending,
                counts_attempt: false,
                retried: false,
                row_outcome: None,
                audit: None,
                removal: false,
                quarantine: None,
            },
            other => panic!("{other:?} has its own test"),
        }
    }

    fn check(c: &Completion, e: &Entry, s: &Settings, want: &Want, now: DateTime<Utc>, case: &str) {
        assert_eq!(c.id, e.id, "{case}");
        assert_eq!(c.update.state, want.state, "{case}");
        let attempts = e.attempts + u32::from(want.counts_attempt);
        assert_eq!(c.update.attempts, attempts, "{case}");
        let finished = want.state != QueueState::Pending;
        assert_eq!(c.update.finished, finished, "{case}");
        assert_eq!(c.update.outcome.as_deref(), want.row_outcome, "{case}");
        assert!(c.audit.len() <= 1, "{case}");
        assert_eq!(c.token, e.claim_token, "{case}");
        let audit = c.audit.first().map(|a| a.outcome.as_str());
        assert_eq!(audit, want.audit, "{case}");
        if let Some(a) = c.audit.first() {
            assert_eq!(a.object, e.object, "{case}");
        }
        // A retry is due after the backoff; nothing else moves the due time.
        if want.retried {
            let due = after(now, backoff(s, e.attempts));
            assert_eq!(c.update.next_attempt_at, Some(due), "{case}");
            assert_eq!(c.update.last_error.as_deref(), Some("EIO"), "{case}");
        } else {
            assert_eq!(c.update.next_attempt_at, None, "{case}");
        }
        assert_eq!(c.removal.is_some(), want.removal, "{case}");
        if let Some(r) = &c.removal {
            assert_eq!(r.reason, Reason::Quarantine, "{case}");
            assert_eq!(r.original_key.as_deref(), Some("tmp/a.jpg"), "{case}");
            assert_eq!(r.object.key, ".assetgc-trash/20260101T000000Z/tmp/a.jpg");
            let due = s.keep.map_or(now, |keep| after(now, keep));
            assert_eq!(r.next_attempt_at, due, "{case}");
        }
        let q = c.quarantine.as_ref().map(|q| match q {
            QuarantineChange::Record { .. } => "record",
            QuarantineChange::SetState(s) => crate::domain::Spelling::as_str(*s),
        });
        assert_eq!(q, want.quarantine, "{case}");
    }

    #[test]
    fn every_outcome_quarantine_on_and_off_attempts_left_and_used_up() {
        let now = Utc::now();
        let outcomes = [
            Outcome::Deleted,
            Outcome::AlreadyGone,
            Outcome::Quarantined {
                quarantine_key: ".assetgc-trash/20260101T000000Z/tmp/a.jpg".into(),
                moved_at: now,
            },
            Outcome::Referenced("referenced by `posts`".into()),
            Outcome::Dropped("matches an ignore glob".into()),
            Outcome::Failed {
                error: "EIO".into(),
                permanent: false,
            },
            Outcome::Failed {
                error: "403 AccessDenied".into(),
                permanent: true,
            },
            Outcome::Deferred,
        ];
        let mut cases = 0;
        for reason in [Reason::Purge, Reason::Quarantine] {
            for quarantine in [false, true] {
                // attempts before: 0 of 3 leaves attempts; 2 of 3 uses the last one up.
                for (attempts, left) in [(0, true), (2, false)] {
                    for outcome in &outcomes {
                        let e = entry(attempts, reason);
                        let s = settings(quarantine);
                        let c = complete(&e, outcome, &s, now);
                        let case = format!(
                            "{outcome:?}, {reason:?}, quarantine {quarantine}, attempts {attempts}"
                        );
                        let w = want(outcome, reason == Reason::Quarantine, left);
                        check(&c, &e, &s, &w, now, &case);
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 2 * 2 * 8);
    }

    #[test]
    fn a_copy_left_by_an_earlier_move_is_recorded_kept_and_its_key_forgotten() {
        let now = Utc::now();
        let e = entry(1, Reason::Purge);
        let o = Outcome::Kept {
            quarantine_key: ".assetgc-trash/20260101T000000Z/tmp/a.jpg".into(),
            why: "`tmp/a.jpg` exists again".into(),
            then: Box::new(Outcome::Referenced("referenced by `posts`".into())),
        };
        let c = complete(&e, &o, &settings(true), now);
        assert_eq!(c.update.state, QueueState::Dropped);
        assert!(c.update.forget_quarantine_key);
        assert!(c.removal.is_none(), "a kept copy is never removed");
        assert!(matches!(
            c.quarantine,
            Some(QuarantineChange::Record { state: QuarantineState::Kept, ref quarantine_key, .. })
                if quarantine_key.ends_with("/tmp/a.jpg")
        ));
        let words: Vec<&str> = c.audit.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(words, ["kept", "referenced"]);
        // Found at both places: the copy is kept, the entry waits for its next move.
        let o = Outcome::Kept {
            quarantine_key: "q".into(),
            why: "both".into(),
            then: Box::new(Outcome::Deferred),
        };
        let c = complete(&e, &o, &settings(true), now);
        assert_eq!(c.update.state, QueueState::Pending);
        assert_eq!(c.update.attempts, 1);
        assert!(c.update.forget_quarantine_key);
    }

    #[test]
    fn min_age_holds_at_claim_and_an_unknown_upload_time_is_too_recent() {
        let now = Utc::now();
        let mut e = entry(0, Reason::Purge);
        e.uploaded_at = Some(now - chrono::TimeDelta::minutes(10));
        let held = min_age_hold(&e, HOUR, now);
        assert_eq!(held, Some(Ok(after(e.uploaded_at.expect("t"), HOUR))));
        let c = complete(&e, &Outcome::Held(after(now, HOUR)), &settings(false), now);
        assert_eq!(
            (c.update.state, c.update.attempts, c.audit.len()),
            (QueueState::Pending, 0, 0),
            "a hold counts no attempt"
        );
        assert_eq!(min_age_hold(&e, Duration::from_mins(5), now), None);
        e.uploaded_at = None;
        assert!(matches!(min_age_hold(&e, HOUR, now), Some(Err(_))));
        let c = complete(
            &e,
            &Outcome::TooRecent("unknown".into()),
            &settings(false),
            now,
        );
        assert_eq!(c.update.state, QueueState::Dropped);
        assert_eq!(c.audit[0].outcome, "too_recent");
        // Queued by hand: no hold.
        e.reason = Reason::Add;
        e.scan_id = None;
        assert_eq!(min_age_hold(&e, HOUR, now), None);
        // `queue retry` of a scan entry without an upload time is not due at once.
        let mut e = entry(3, Reason::Purge);
        e.uploaded_at = None;
        assert_eq!(
            retry(&e, None, Some(HOUR), now),
            Retry::Due(after(now, HOUR))
        );
    }

    #[test]
    fn a_delete_by_a_stopped_worker_is_audited_deleted_with_its_note() {
        let now = Utc::now();
        let e = entry(0, Reason::Purge);
        let o = Outcome::DeletedBefore("deleted by a stopped worker".into());
        let c = complete(&e, &o, &settings(false), now);
        assert_eq!(c.update.outcome.as_deref(), Some("deleted"));
        assert_eq!(c.audit[0].outcome, "deleted");
        assert_eq!(
            c.audit[0].detail.as_deref(),
            Some("deleted by a stopped worker")
        );
    }

    #[test]
    fn huge_keep_and_backoff_saturate_instead_of_panicking() {
        let now = Utc::now();
        let s = Settings {
            max_attempts: 3,
            backoff: Duration::from_secs(u64::MAX / 4),
            backoff_max: Duration::from_secs(u64::MAX / 2),
            keep: Some(Duration::from_secs(u64::MAX / 2)),
        };
        let e = entry(0, Reason::Purge);
        let q = Outcome::Quarantined {
            quarantine_key: "q/tmp/a.jpg".into(),
            moved_at: now,
        };
        let c = complete(&e, &q, &s, now);
        let due = c.removal.map(|r| r.next_attempt_at).expect("removal");
        assert_eq!(due, last_time());
        // Written as the state database orders its times: after now, never before.
        assert!(rfc3339(due) > rfc3339(now), "{}", rfc3339(due));
        let c = complete(&e, &failed_eio(), &s, now);
        assert_eq!(c.update.next_attempt_at, Some(last_time()));
        let mut e = entry(0, Reason::Purge);
        e.uploaded_at = Some(now);
        assert_eq!(
            min_age_hold(&e, Duration::from_secs(u64::MAX / 2), now),
            Some(Ok(last_time()))
        );
    }

    fn failed_eio() -> Outcome {
        Outcome::Failed {
            error: "EIO".into(),
            permanent: false,
        }
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap() {
        let s = settings(false);
        assert_eq!(backoff(&s, 0), Duration::from_mins(1));
        assert_eq!(backoff(&s, 1), Duration::from_mins(2));
        assert_eq!(backoff(&s, 2), Duration::from_mins(4));
        assert_eq!(backoff(&s, 10), HOUR);
        assert_eq!(backoff(&s, 40), HOUR);
    }

    #[test]
    fn retry_keeps_min_age_holds_and_yields_to_a_newer_entry() {
        let now = Utc::now();
        let mut e = entry(3, Reason::Purge);
        e.uploaded_at = Some(now - chrono::TimeDelta::minutes(10));
        // From a scan, uploaded 10 minutes ago, min_age 1h: due 50 minutes from now.
        assert_eq!(
            retry(&e, None, Some(HOUR), now),
            Retry::Due(after(e.uploaded_at.expect("t"), HOUR))
        );
        assert_eq!(retry(&e, None, Some(Duration::ZERO), now), Retry::Due(now));
        // Queued by hand: no hold.
        e.scan_id = None;
        e.reason = Reason::Add;
        assert_eq!(retry(&e, None, Some(HOUR), now), Retry::Due(now));
        assert_eq!(
            retry(&e, Some(9), Some(HOUR), now),
            Retry::DropForNewer { other: 9 }
        );
    }
}
