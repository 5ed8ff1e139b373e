//! The error type callers branch on, and the exit code each kind maps to (SPEC §3).

use std::fmt::{self, Write as _};

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

/// Longest quoted input an error repeats whole; longer input is cut (SPEC §3: one line).
const QUOTE_MAX: usize = 200;
/// Longest error line; the rest of a longer one is cut from its middle.
const LINE_MAX: usize = 1000;

/// An error, its causes after it, as one line fit for a terminal (SPEC §3): whitespace runs
/// become one space, control characters from user input are escaped (`\u{1b}`, `\0`) so they
/// cannot drive the terminal, quoted input is cut, and a password in a URL shows as `***`.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    sanitize(&s)
}

/// The treatment of [`one_line`] for any text headed for stderr.
pub fn sanitize(text: &str) -> String {
    // Newlines and tabs are whitespace to fold; every other control character is escaped.
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' || c == '\t' {
            escaped.push(' ');
        } else if c.is_control() {
            escaped.extend(c.escape_debug());
        } else if is_bidi_control(c) {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    let folded = escaped
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cap_line(&cut_quotes(&redact_passwords(&folded)))
}

/// Unicode's invisible direction overrides (U+202A–U+202E, U+2066–U+2069) reorder what a
/// terminal shows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `scheme://user:password@` anywhere in the text: the password becomes `***`, up to the last
/// `@` of the word (an S3 secret has `/` and `+` in it, and an unencoded `@` may be in one);
/// `scheme://name@`, a user name alone (often a token), becomes `scheme://***@`.
fn redact_passwords(s: &str) -> String {
    static URL_USERINFO: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s/:@`'\x22]*)(?::([^\s`'\x22]*))?@")
            .expect("a valid pattern")
    });
    URL_USERINFO
        .replace_all(s, |c: &regex::Captures<'_>| match c.get(3) {
            Some(p) if p.as_str() == "***" => c[0].to_string(),
            Some(_) => format!("{}{}:***@", &c[1], &c[2]),
            None if c[2].is_empty() || &c[2] == "***" => c[0].to_string(),
            None => format!("{}***@", &c[1]),
        })
        .into_owned()
}

/// Each `quoted` or 'quoted' run longer than [`QUOTE_MAX`] characters is cut to its start, `…`
/// and its full length.
fn cut_quotes(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * LINE_MAX));
    let mut rest = s;
    while let Some(open) = rest.find(['`', '\'']) {
        let q = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(q) else {
            rest = after;
            continue;
        };
        let inner = &after[..close];
        let n = inner.chars().count();
        if n > QUOTE_MAX {
            out.extend(inner.chars().take(QUOTE_MAX));
            let _ = write!(out, "…{q} ({n} characters)");
        } else {
            out.push_str(inner);
            out.push(q);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A line longer than [`LINE_MAX`] characters keeps its start (what failed) and its end (what
/// to do), with the middle cut.
fn cap_line(s: &str) -> String {
    let n = s.chars().count();
    if n <= LINE_MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(LINE_MAX * 7 / 10).collect();
    let tail: String = s.chars().skip(n - LINE_MAX / 4).collect();
    format!(
        "{head} … ({} characters cut) … {tail}",
        n - head.chars().count() - LINE_MAX / 4
    )
}

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

    #[test]
    fn error_lines_escape_controls_cut_quotes_and_hide_passwords() {
        assert_eq!(
            sanitize("key `\u{1b}]0;x\u{7}a.jpg`\r\0 ok"),
            "key `\\u{1b}]0;x\\u{7}a.jpg`\\r\\0 ok"
        );
        assert_eq!(sanitize("a\n  b\tc"), "a b c");
        let long = format!("unknown field `{}`, expected one of `a`", "x".repeat(5000));
        let cut = sanitize(&long);
        assert!(cut.len() < 400, "{cut}");
        assert!(
            cut.contains("(5000 characters)") && cut.ends_with("expected one of `a`"),
            "{cut}"
        );
        assert_eq!(
            sanitize("cannot reach postgres://u:hunter2@h/db (and mysql://root:p%40ss@m:3306)"),
            "cannot reach postgres://u:***@h/db (and mysql://root:***@m:3306)"
        );
        assert_eq!(sanitize("cloudinary://k:***@c"), "cloudinary://k:***@c");
        assert_eq!(
            sanitize("bad s3://AKIA:ab/c+d@e@bucket/x and https://ghp_tok@host/p"),
            "bad s3://AKIA:***@bucket/x and https://***@host/p"
        );
        assert_eq!(sanitize("https://***@h"), "https://***@h");
        assert_eq!(
            sanitize("https://h/@user file:///a@b"),
            "https://h/@user file:///a@b"
        );
        let huge = "y ".repeat(100_000);
        assert!(sanitize(&huge).chars().count() < 1100);
        // An apostrophe inside a text is no quote: nothing is lost.
        assert_eq!(sanitize("can't read `f`"), "can't read `f`");
    }
}
