//! The error type callers branch on, and the exit code each kind maps to (SPEC §3).

use std::fmt;

/// Exit codes of every command (SPEC §3). Precedence when several apply: 2 > 1 > 4 > 3 > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok,
    Findings,
    Incomplete,
    Unreachable,
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Unreachable => 1,
            Exit::Usage => 2,
            Exit::Findings => 3,
            Exit::Incomplete => 4,
        }
    }

    /// The stronger of two outcomes, by the precedence of SPEC §3.
    #[must_use]
    pub fn max(self, other: Exit) -> Exit {
        std::cmp::max(self, other)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command line that cannot work as written.
    #[error("{0}")]
    Usage(String),
    /// The configuration file is wrong; `line` points at the offending value when known.
    #[error("{}", config_message(path, *line, msg))]
    Config {
        path: String,
        line: Option<usize>,
        msg: String,
    },
    /// Nothing useful could be done: every store or database of the run, or the state DB, is out of reach.
    #[error("{0}")]
    Unreachable(String),
    /// A safety check refused the operation.
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    State(String),
    /// Something asked for by name or id does not exist (a scan, a queue entry, a store).
    #[error("{0}")]
    NotFound(String),
}

fn config_message(path: &str, line: Option<usize>, msg: &str) -> String {
    match line {
        Some(line) => format!("{path} line {line}: {msg}"),
        None => format!("{path}: {msg}"),
    }
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::Config { .. } | Error::Refused(_) | Error::NotFound(_) => {
                Exit::Usage
            }
            Error::Unreachable(_) | Error::State(_) => Exit::Unreachable,
            Error::Io { .. } => Exit::Incomplete,
        }
    }

    /// The HTTP status an API answer carries for this error (SPEC §8): 400 bad input, 404 an
    /// unknown id, 409 a safety refusal, 503 what cannot be reached, 500 the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Usage(_) => 400,
            Error::NotFound(_) => 404,
            Error::Refused(_) => 409,
            Error::Unreachable(_) | Error::State(_) => 503,
            Error::Config { .. } | Error::Io { .. } => 500,
        }
    }

    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_statuses_follow_the_spec() {
        let refused = Error::Refused("guard".into());
        assert_eq!((refused.exit().code(), refused.http_status()), (2, 409));
        let usage = Error::Usage("bad".into());
        assert_eq!((usage.exit().code(), usage.http_status()), (2, 400));
        let gone = Error::Unreachable("down".into());
        assert_eq!((gone.exit().code(), gone.http_status()), (1, 503));
        let io = Error::io("report", std::io::Error::other("disk full"));
        assert_eq!((io.exit().code(), io.http_status()), (4, 500));
        assert_eq!(Error::NotFound("scan 9".into()).http_status(), 404);
        assert_eq!(Exit::Usage.max(Exit::Incomplete), Exit::Usage);
        assert_eq!(Exit::Unreachable.max(Exit::Incomplete), Exit::Unreachable);
        assert_eq!(Exit::Findings.max(Exit::Incomplete), Exit::Incomplete);
    }
}
