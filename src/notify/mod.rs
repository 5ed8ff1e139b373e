//! Notifications (SPEC §2 `[notify]`, §5): a finished run's summary by email, Slack, Discord and
//! a signed webhook, fed by the events the operations publish.
//!
//! A run given `--notify` (or a job or API run that asks for it) watches the application's
//! events ([`Watch`]); when it ends, the event that closes it becomes one [`Notice`] — a neutral
//! message: headline, figures, the first items, recommended actions, API usage, report path, and a
//! spike alert when one is due — which each channel renders in its own shape and sends, all at
//! once. A channel that fails is tried again a few times, then reported on stderr as one line and
//! recorded in the state database; it never changes the run's exit code.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::NotifyConfig;

pub mod build;
pub mod discord;
pub mod email;
pub mod slack;
pub mod spike;
pub mod webhook;

pub use build::{Sent, Watch, deliver};

/// The kind of run a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scan,
    Purge,
    Clean,
    Expire,
    QueueRun,
    /// `assetgc notify test`.
    Test,
}

impl Kind {
    /// As people read it: `scan`, `purge`, `clean`, `expire`, `queue run`, `test`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Scan => "scan",
            Kind::Purge => "purge",
            Kind::Clean => "clean",
            Kind::Expire => "expire",
            Kind::QueueRun => "queue run",
            Kind::Test => "test",
        }
    }

    /// As JSON and the state database say it: `scan`, …, `queue_run`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::QueueRun => "queue_run",
            other => other.label(),
        }
    }
}

/// One headline figure: `Orphaned files` → `15 (12.5%), 2.30 MB`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub label: String,
    pub value: String,
}

/// One row of a list: a line of text for people, its JSON for the webhook, and a link when the
/// row has one (the orphan's URL, the record's page).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub text: String,
    pub link: Option<String>,
    pub json: Value,
}

/// A titled list: its first items (20 at most; Slack and Discord show 5) and how many there are.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    /// `Orphaned files`, `Records with missing files`, `Deletion errors`…
    pub title: String,
    /// The key the webhook's `items` object gives this list: `orphans`, `missing`, `errors`…
    pub key: &'static str,
    pub total: u64,
    pub items: Vec<Item>,
}

/// A spike alert: one line per threshold met, compared with the comparable scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The scan compared with.
    pub baseline_scan: i64,
    pub lines: Vec<String>,
}

/// A finished run as every channel sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: Kind,
    pub app_name: String,
    /// The scan's id, the clean run's id; `None` for runs the state database does not number.
    pub run_id: Option<i64>,
    /// The headline figures on one line: `15 orphans (2.30 MB), 3 missing (2 ACTIVE, 1 DELETED)`.
    pub headline: String,
    pub complete: bool,
    /// The run found or did something (what `on = "findings"` sends).
    pub noteworthy: bool,
    pub alert: Option<Alert>,
    pub figures: Vec<Figure>,
    pub lists: Vec<List>,
    /// Recommended actions, fitted to what the run found.
    pub actions: Vec<String>,
    /// API usage in the console's wording (`API calls: 5/500 used (1%) — Rate limit remaining: …`).
    pub api_usage: Vec<String>,
    pub report_path: Option<String>,
    /// The CSV report to attach to email (when at most `attach_max`).
    pub attachment: Option<PathBuf>,
    pub warnings: Vec<String>,
    /// The webhook body's `scan`: for a scan, the JSON report's `scan` object; for other runs,
    /// what identifies the run. Both carry `kind` and `app_name`.
    pub scan_json: Value,
    /// The webhook body's `summary`: the JSON report's `summary` for a scan, the run's figures
    /// otherwise; both with `headline`, `actions`, `api_usage`, `report_path` and `alert`.
    pub summary_json: Value,
}

impl Notice {
    /// `[myapp] scan: 15 orphans (2.30 MB), 3 missing (2 ACTIVE, 1 DELETED)`, led by `SPIKE` when
    /// an alert is due and followed by `(incomplete)` when the run was.
    pub fn subject(&self) -> String {
        format!(
            "[{}] {}{}: {}{}",
            self.app_name,
            if self.alert.is_some() {
                "SPIKE ALERT — "
            } else {
                ""
            },
            self.kind.label(),
            self.headline,
            if self.complete { "" } else { " (incomplete)" }
        )
    }

    /// The webhook body's `items`: each list's first items under its key.
    pub fn items_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for l in &self.lists {
            m.insert(
                l.key.to_string(),
                Value::Array(l.items.iter().map(|i| i.json.clone()).collect()),
            );
        }
        Value::Object(m)
    }
}

/// Why a channel's attempt failed, in words that hold no secret (never the webhook URL's path,
/// the SMTP password or the HMAC secret), and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    pub retry: bool,
    /// How long the service asked to be left alone (`Retry-After`), when it said.
    pub after: Option<Duration>,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retry: true,
            after: None,
        }
    }
    pub fn fatal(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retry: false,
            after: None,
        }
    }

    /// An HTTP client error without its URL (reqwest's `Display` names it, path and all).
    pub fn http(e: reqwest::Error) -> SendError {
        let e = e.without_url();
        let head = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            e.to_string()
        };
        // The innermost cause says why (`Connection refused`, `invalid peer certificate`); it
        // names no URL, and one that would is left out.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let why = cause.to_string();
        let message =
            if std::ptr::addr_eq(cause, &raw const e) || why.contains("://") || head.contains(&why)
            {
                head
            } else {
                format!("{head}: {why}")
            };
        SendError::retry(message)
    }

    /// A non-2xx answer: 429 and 5xx are worth another try, other answers are not.
    pub fn status(status: reqwest::StatusCode) -> SendError {
        let message = format!("answered HTTP {}", status.as_u16());
        if status.as_u16() == 429 || status.is_server_error() {
            SendError::retry(message)
        } else {
            SendError::fatal(message)
        }
    }

    /// A non-2xx answer with its `Retry-After` (whole seconds; Slack and Discord send it with
    /// 429), which the next attempt waits for, up to [`MAX_RETRY_AFTER`].
    pub fn answer(resp: &reqwest::Response) -> SendError {
        let mut e = SendError::status(resp.status());
        if e.retry {
            e.after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())));
        }
        e
    }
}

/// What happened on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: &'static str,
    pub attempts: u32,
    /// `None`: sent.
    pub error: Option<String>,
}

/// The longest `Retry-After` a channel's next attempt waits for: a service that asks for more is
/// tried again after this long all the same, rather than holding the run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How many times a channel is tried, and the waits between tries (doubled each time).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
    /// Each attempt's time limit.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            first_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The HTTP client the webhook channels share: no redirects (a redirect would carry the signed
/// body elsewhere), a bounded connect time.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, SendError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .user_agent(concat!("assetgc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SendError::fatal(format!("cannot set up HTTPS: {}", e.without_url())))
}

/// Sends `notice` to every configured channel at once, each tried up to `retry.attempts` times.
/// Never fails: what went wrong is in the deliveries.
pub async fn send_all(cfg: &NotifyConfig, notice: &Notice, retry: Retry) -> Vec<Delivery> {
    let client = http_client(retry.timeout);
    let client = &client;
    let no_client = |channel: &'static str| {
        Box::pin(std::future::ready(Delivery {
            channel,
            attempts: 0,
            error: client.as_ref().err().map(|e| e.message.clone()),
        })) as futures::future::BoxFuture<'_, Delivery>
    };
    let mut sends: Vec<futures::future::BoxFuture<'_, Delivery>> = Vec::new();
    if let Some(e) = &cfg.email {
        sends.push(Box::pin(attempt("email", retry, move || {
            email::send(e, notice, retry.timeout)
        })));
    }
    match client {
        Ok(client) => {
            if let Some(url) = &cfg.slack {
                sends.push(Box::pin(attempt("slack", retry, move || {
                    slack::send(client, url.expose(), notice)
                })));
            }
            if let Some(url) = &cfg.discord {
                sends.push(Box::pin(attempt("discord", retry, move || {
                    discord::send(client, url.expose(), notice)
                })));
            }
            if let Some(w) = &cfg.webhook {
                sends.push(Box::pin(attempt("webhook", retry, move || {
                    webhook::send(
                        client,
                        w.url.expose(),
                        w.secret.expose(),
                        notice,
                        Utc::now(),
                    )
                })));
            }
        }
        Err(_) => {
            for (on, channel) in [
                (cfg.slack.is_some(), "slack"),
                (cfg.discord.is_some(), "discord"),
                (cfg.webhook.is_some(), "webhook"),
            ] {
                if on {
                    sends.push(no_client(channel));
                }
            }
        }
    }
    futures::future::join_all(sends).await
}

/// One channel's tries: again after `first_wait`, doubled each time, while the error says a retry
/// may help.
async fn attempt<F, Fut>(channel: &'static str, retry: Retry, mut send: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), SendError>>,
{
    let mut wait = retry.first_wait;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match tokio::time::timeout(retry.timeout, send()).await {
            Ok(r) => r,
            Err(_) => Err(SendError::retry(format!(
                "no answer within {}s",
                retry.timeout.as_secs()
            ))),
        };
        match result {
            Ok(()) => {
                return Delivery {
                    channel,
                    attempts,
                    error: None,
                };
            }
            Err(e) if e.retry && attempts < retry.attempts.max(1) => {
                tracing::debug!("notify {channel}: attempt {attempts} failed: {}", e.message);
                tokio::time::sleep(e.after.map_or(wait, |a| a.max(wait))).await;
                wait = wait.saturating_mul(2);
            }
            Err(e) => {
                return Delivery {
                    channel,
                    attempts,
                    error: Some(e.message),
                };
            }
        }
    }
}

/// `2026-12-04T10:00:00Z`: the webhook's `sent_at` and `X-Assetgc-Timestamp`.
pub fn sent_at(t: DateTime<Utc>) -> String {
    crate::time::rfc3339(t)
}
