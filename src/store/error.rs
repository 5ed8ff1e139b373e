//! What a store call can fail with, in the kinds callers branch on: whether the store was reached
//! at all (exit 1 when nothing was), whether trying again may help (the queue's retries), and
//! whether the API budget stopped the run (the queue defers instead of failing).
//!
//! Messages are one line, complete on their own (they already name the cause), so callers print
//! `{e}`; `source` keeps the cause as a value where there is one, for callers that inspect it.

use std::time::Duration;

use crate::Exit;

/// The cause of a failure, when there is one as a value.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A call that failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached at all: a missing folder, a DNS or connection failure before
    /// any answer.
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// The credentials were refused (401/403) before the store answered anything else. Counts as
    /// unreachable.
    #[error("{message}")]
    CredentialsRefused { message: String },
    /// The store itself (bucket, container, cloud) does not exist. Counts as unreachable.
    #[error("{message}")]
    NotFound { message: String },
    /// The provider kept answering "slow down" past the retries; `wait` is how long it asked for.
    #[error("{message}")]
    RateLimited {
        message: String,
        wait: Option<Duration>,
    },
    /// The API budget stopped the run cleanly (`stop_at`, or a reset beyond `max_wait`): the
    /// work left waits for the next window.
    #[error("{message}")]
    BudgetStopped { message: String },
    /// A call that will fail again the same way: 400, 403 after answers, bad settings, a
    /// resource type the store does not hold.
    #[error("{message}")]
    Permanent {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// 5xx, timeouts, answers cut short: trying later may work.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    pub fn unreachable(message: impl Into<String>) -> Self {
        StoreError::Unreachable {
            message: message.into(),
            source: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        StoreError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        StoreError::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// The same error with `source` as its cause (kinds without a cause are left as they are).
    #[must_use]
    pub fn with_source(mut self, cause: impl Into<Cause>) -> Self {
        if let StoreError::Unreachable { source, .. }
        | StoreError::Permanent { source, .. }
        | StoreError::Transient { source, .. } = &mut self
        {
            *source = Some(cause.into());
        }
        self
    }

    /// The same kind of error with its message rewritten by `f` (to add context).
    #[must_use]
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        let message = match &mut self {
            StoreError::Unreachable { message, .. }
            | StoreError::CredentialsRefused { message }
            | StoreError::NotFound { message }
            | StoreError::RateLimited { message, .. }
            | StoreError::BudgetStopped { message }
            | StoreError::Permanent { message, .. }
            | StoreError::Transient { message, .. } => message,
        };
        *message = f(message);
        self
    }

    /// Whether the store answered: false when it could not be reached, refused the credentials
    /// or does not exist, which is what makes a run "nothing useful could be done" (exit 1).
    pub fn reached(&self) -> bool {
        !matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::CredentialsRefused { .. }
                | StoreError::NotFound { .. }
        )
    }

    /// The exit code this failure alone gives a run (SPEC §3): 1 when the store was not reached,
    /// else 4 (the work stopped early or in part).
    pub fn exit(&self) -> Exit {
        if self.reached() {
            Exit::Incomplete
        } else {
            Exit::Unreachable
        }
    }

    /// The status an HTTP answer about this failure carries. The store is an upstream of ours:
    /// 503 when it cannot be reached or trying later may work (with the budget, after the
    /// reset), 502 when it answered with something that will not change by waiting (refused
    /// credentials, no such bucket, a permanent refusal), 429 when it asks us to slow down.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Unreachable { .. }
            | StoreError::BudgetStopped { .. }
            | StoreError::Transient { .. } => 503,
            StoreError::CredentialsRefused { .. }
            | StoreError::NotFound { .. }
            | StoreError::Permanent { .. } => 502,
            StoreError::RateLimited { .. } => 429,
        }
    }
}

/// Why one key of a bulk call failed; the other keys of the call go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    pub kind: KeyFailure,
    pub message: String,
}

/// What the queue does with a key that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFailure {
    /// It will fail again the same way (an unusable key, permission refused): failed at once.
    Permanent,
    /// Trying later may work: retried with backoff.
    Transient,
    /// A move without replace found its destination taken; nothing moved.
    AlreadyExists,
    /// The API budget stopped the run before this key was sent: it waits, no attempt counted.
    BudgetStopped,
}

impl KeyError {
    pub fn permanent(message: impl Into<String>) -> Self {
        KeyError {
            kind: KeyFailure::Permanent,
            message: message.into(),
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        KeyError {
            kind: KeyFailure::Transient,
            message: message.into(),
        }
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        KeyError {
            kind: KeyFailure::AlreadyExists,
            message: message.into(),
        }
    }

    /// A key of a call that failed as a whole: it fails the way the call did.
    pub fn of_call(e: &StoreError) -> Self {
        let kind = match e {
            StoreError::BudgetStopped { .. } => KeyFailure::BudgetStopped,
            StoreError::Permanent { .. } => KeyFailure::Permanent,
            _ => KeyFailure::Transient,
        };
        KeyError {
            kind,
            message: e.to_string(),
        }
    }

    /// The same failure with its message rewritten by `f` (to add context).
    #[must_use]
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        KeyError {
            kind: self.kind,
            message: f(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_not_reached_is_exit_1_and_the_rest_exit_4() {
        let not_reached = [
            StoreError::unreachable("no route"),
            StoreError::CredentialsRefused {
                message: "refused".into(),
            },
            StoreError::NotFound {
                message: "no bucket".into(),
            },
        ];
        for e in &not_reached {
            assert!(!e.reached(), "{e:?}");
            assert_eq!(e.exit(), Exit::Unreachable);
        }
        let reached = [
            StoreError::permanent("400"),
            StoreError::transient("503"),
            StoreError::RateLimited {
                message: "slow down".into(),
                wait: None,
            },
            StoreError::BudgetStopped {
                message: "stop_at".into(),
            },
        ];
        for e in &reached {
            assert!(e.reached(), "{e:?}");
            assert_eq!(e.exit(), Exit::Incomplete);
        }
        assert_eq!(reached[2].http_status(), 429);
        assert_eq!(not_reached[1].http_status(), 502);
        assert_eq!(not_reached[0].http_status(), 503);
    }

    #[test]
    fn keys_of_a_failed_call_fail_its_way_and_messages_keep_their_kind() {
        let stopped = StoreError::BudgetStopped {
            message: "stop".into(),
        };
        assert_eq!(KeyError::of_call(&stopped).kind, KeyFailure::BudgetStopped);
        assert_eq!(
            KeyError::of_call(&StoreError::permanent("400")).kind,
            KeyFailure::Permanent
        );
        assert_eq!(
            KeyError::of_call(&StoreError::unreachable("gone")).kind,
            KeyFailure::Transient
        );
        let e = StoreError::NotFound {
            message: "no bucket".into(),
        }
        .map_message(|m| format!("listing: {m}"));
        assert!(matches!(&e, StoreError::NotFound { message } if message == "listing: no bucket"));
        let io = std::io::Error::other("disk");
        let e = StoreError::transient("cannot read").with_source(io);
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("disk".into())
        );
    }
}
