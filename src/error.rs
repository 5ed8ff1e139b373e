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
            Error::Usage(_) | Error::Config { .. } | Error::Refused(_) => Exit::Usage,
            Error::Unreachable(_) | Error::State(_) => Exit::Unreachable,
            Error::Io { .. } => Exit::Incomplete,
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
