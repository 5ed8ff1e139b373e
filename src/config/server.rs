//! `[server]` and `[[jobs]]` (SPEC §2, §8): what `assetgc serve` listens on, who may call it, and
//! the commands its scheduler runs. A job's command is parsed as a command line at load, so a
//! bad one is a config error, never a failed run at 4 a.m.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Cx, Text};
use crate::error::Result;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// A job without `timeout` is stopped after this long.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_hours(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<Text>,
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    trust_forwarded_proto: Option<Spanned<bool>>,
    metrics_public: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    name: Option<Text>,
    sha256: Option<Text>,
    scope: Option<Text>,
}

/// `rate_limit = { per_second, burst }` or `rate_limit = false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRateLimit {
    Off(bool),
    On(RawRate),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    // Plain numbers: spans do not survive an untagged enum.
    per_second: Option<i64>,
    burst: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    name: Option<Text>,
    schedule: Option<Text>,
    tz: Option<Text>,
    command: Option<Text>,
    timeout: Option<Text>,
}

/// What an API token may do: `read` answers GET, `write` everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// A token from `[server] tokens`: only its SHA-256 is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub name: String,
    /// 32 bytes, from the lowercase or uppercase hex in the file.
    pub sha256: [u8; 32],
    pub scope: Scope,
}

/// Requests a token may make: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `host:port` as written (`--listen` overrides it).
    pub listen: String,
    pub tokens: Vec<TokenConfig>,
    /// `None`: `rate_limit = false`.
    pub rate_limit: Option<RateLimit>,
    pub trust_forwarded_proto: bool,
    pub metrics_public: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.to_string(),
            tokens: Vec::new(),
            rate_limit: Some(RateLimit {
                per_second: 20,
                burst: 100,
            }),
            trust_forwarded_proto: false,
            metrics_public: false,
        }
    }
}

/// A `[[jobs]]` entry: an assetgc command line run on a cron schedule by `serve`.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    /// The cron expression as written (5 fields, or 6 with seconds first).
    pub schedule: String,
    pub cron: croner::Cron,
    pub tz: chrono_tz::Tz,
    /// The command line as written, e.g. `scan --days 7 --notify`.
    pub command: String,
    /// The command line split into arguments (without the program name).
    pub args: Vec<String>,
    pub timeout: Duration,
}

/// Parses a cron expression: five fields (minute first) or six (second first).
pub fn parse_cron(s: &str) -> std::result::Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(s.trim())
        .map_err(|e| format!("bad cron schedule `{s}`: {e} (write e.g. \"0 4 * * *\")"))
}

/// Splits a job's command line as a shell would and checks it parses as an assetgc command.
/// Global flags (`-v`, `--log-format`) may appear; `--config` may not (the job runs with the
/// server's config), nor may `serve` (a server inside the server).
pub fn parse_job_command(command: &str) -> std::result::Result<Vec<String>, String> {
    use crate::cli::Command;
    use clap::Parser as _;
    let args = shell_words::split(command)
        .map_err(|e| format!("command `{command}` cannot be split into arguments: {e}"))?;
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("assetgc") => args[1..].to_vec(),
        _ => args,
    };
    if args.is_empty() {
        return Err(
            "command is empty; write an assetgc command line, e.g. \"scan --days 7\"".into(),
        );
    }
    if args
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="))
    {
        return Err(format!(
            "command `{command}` sets --config; a job runs with the server's config, remove it"
        ));
    }
    let parsed = crate::cli::Cli::try_parse_from(
        std::iter::once("assetgc".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| {
        let text = e.render().to_string();
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_string();
        format!("command `{command}` is not an assetgc command line: {first}")
    })?;
    match parsed.command {
        Command::Serve(_) => Err(format!(
            "command `{command}` would start a server inside the server; schedule another command"
        )),
        Command::Demo(_) | Command::Init(_) | Command::Token(_) => Err(format!(
            "command `{command}` is not one to schedule; use scan, purge, clean, expire, queue, check or audit"
        )),
        _ => Ok(args),
    }
}

impl Cx<'_> {
    pub(super) fn server(&self, raw: Option<&Spanned<RawServer>>) -> Result<ServerConfig> {
        let mut s = ServerConfig::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok(s);
        };
        if let Some(t) = &raw.listen {
            let listen = self.expand(t)?;
            check_listen(&listen).map_err(|m| self.err_at(t, m))?;
            s.listen = listen;
        }
        for t in &raw.tokens {
            let tok = t.get_ref();
            let name =
                self.required(tok.name.as_ref(), t, "a [server] tokens entry needs a name")?;
            let hex = self.required(
                tok.sha256.as_ref(),
                t,
                "a [server] tokens entry needs sha256 (the hex SHA-256 of the token)",
            )?;
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(hex.trim(), &mut sha256).map_err(|_| {
                self.err_at(
                    t,
                    format!(
                        "token `{name}`: sha256 must be 64 hex digits (e.g. from `printf %s TOKEN | sha256sum`)"
                    ),
                )
            })?;
            let scope = match &tok.scope {
                None => Scope::Read,
                Some(v) => {
                    let text = self.expand(v)?;
                    Scope::parse(text.trim()).ok_or_else(|| {
                        self.err_at(
                            v,
                            format!("token `{name}`: scope must be read or write, not `{text}`"),
                        )
                    })?
                }
            };
            if s.tokens.iter().any(|o| o.name == name) {
                return Err(self.err_at(
                    t,
                    format!("two [server] tokens are named `{name}`; give each its own name"),
                ));
            }
            s.tokens.push(TokenConfig {
                name,
                sha256,
                scope,
            });
        }
        if let Some(r) = &raw.rate_limit {
            s.rate_limit = match r.get_ref() {
                RawRateLimit::Off(false) => None,
                RawRateLimit::Off(true) => {
                    return Err(self.err_at(
                        r,
                        "[server] rate_limit is `false` or { per_second = N, burst = M }",
                    ));
                }
                RawRateLimit::On(rate) => {
                    let n = |v: Option<i64>, default: u32, what: &str| -> Result<u32> {
                        match v {
                            None => Ok(default),
                            Some(v) => u32::try_from(v).ok().filter(|n| *n >= 1).ok_or_else(|| {
                                self.err_at(
                                    r,
                                    format!("[server] rate_limit {what} must be 1 or more"),
                                )
                            }),
                        }
                    };
                    Some(RateLimit {
                        per_second: n(rate.per_second, 20, "per_second")?,
                        burst: n(rate.burst, 100, "burst")?,
                    })
                }
            };
        }
        if let Some(b) = &raw.trust_forwarded_proto {
            s.trust_forwarded_proto = *b.get_ref();
        }
        if let Some(b) = &raw.metrics_public {
            s.metrics_public = *b.get_ref();
        }
        Ok(s)
    }

    pub(super) fn jobs(&self, raw: &[Spanned<RawJob>]) -> Result<Vec<JobConfig>> {
        let mut jobs: Vec<JobConfig> = Vec::new();
        for j in raw {
            let r = j.get_ref();
            let name = self.required(r.name.as_ref(), j, "a [[jobs]] entry needs a name")?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(self.err_at(
                    j,
                    format!(
                        "job name `{name}` may use only letters, digits, `-`, `_` and `.` (it is part of URLs and unit names)"
                    ),
                ));
            }
            if jobs.iter().any(|o| o.name == name) {
                return Err(self.err_at(
                    j,
                    format!("two [[jobs]] are named `{name}`; give each its own name"),
                ));
            }
            let schedule = self.required(
                r.schedule.as_ref(),
                j,
                &format!("job `{name}` needs a schedule (cron, e.g. \"0 4 * * *\")"),
            )?;
            let at = r.schedule.as_ref().unwrap_or_else(|| unreachable!());
            let cron =
                parse_cron(&schedule).map_err(|m| self.err_at(at, format!("job `{name}`: {m}")))?;
            let tz = match &r.tz {
                None => chrono_tz::UTC,
                Some(t) => {
                    let text = self.expand(t)?;
                    text.trim().parse::<chrono_tz::Tz>().map_err(|_| {
                        self.err_at(
                            t,
                            format!(
                                "job `{name}`: unknown time zone `{text}` (write an IANA name, e.g. \"Europe/Paris\")"
                            ),
                        )
                    })?
                }
            };
            let command = self.required(
                r.command.as_ref(),
                j,
                &format!(
                    "job `{name}` needs a command (an assetgc command line, e.g. \"scan --days 7\")"
                ),
            )?;
            let at = r.command.as_ref().unwrap_or_else(|| unreachable!());
            let args = parse_job_command(&command)
                .map_err(|m| self.err_at(at, format!("job `{name}`: {m}")))?;
            let timeout = match &r.timeout {
                None => DEFAULT_JOB_TIMEOUT,
                Some(t) => {
                    let d = self.duration(t, &format!("job `{name}` timeout"))?;
                    if d.is_zero() {
                        return Err(
                            self.err_at(t, format!("job `{name}`: timeout must be above 0s"))
                        );
                    }
                    d
                }
            };
            jobs.push(JobConfig {
                name,
                schedule,
                cron,
                tz,
                command,
                args,
                timeout,
            });
        }
        Ok(jobs)
    }
}

/// `host:port`: an IP address with a port, or a host name with a port.
pub fn check_listen(s: &str) -> std::result::Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "listen address `{s}` is not host:port (write e.g. 127.0.0.1:8080 or 0.0.0.0:8080)"
        )),
    }
}
