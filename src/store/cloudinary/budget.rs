//! The Admin API budget of Cloudinary accounts (SPEC §4).
//!
//! One [`Budget`] per account (cloud name + API key), shared by every store on it. It counts the
//! calls of the last 60 minutes per minute (so that a second run within the hour starts from what
//! the first one spent: the [`Ledger`] is loaded from and saved to the state database), and it
//! takes the provider's `X-FeatureRateLimit-*` headers over its own count whenever they were
//! seen and their reset time has not passed. Before each call [`Budget::admit`] spaces calls by
//! `min_interval` and stops the run cleanly at `stop_at`; a 420 or 429 answer waits for the
//! reset when it is at most `max_wait` away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::ApiBudget;

/// The provider's own view of the budget, from its rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: DateTime<Utc>,
}

/// What the state database keeps of an account between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Calls per minute (minutes since the epoch), the last 60 minutes.
    pub minutes: Vec<(i64, u64)>,
    pub provider: Option<Provider>,
}

/// An account's usage at the end of a run, for the console and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub cloud: String,
    /// Calls made by this run.
    pub run_calls: u64,
    /// Calls spent in the current window (this run and earlier ones), against `limit`.
    pub used: u64,
    pub limit: u64,
    /// The provider's last `remaining`/`limit`, when its headers were seen.
    pub provider: Option<Provider>,
}

impl Usage {
    pub fn percent(&self) -> f64 {
        share(self.used, self.limit) * 100.0
    }
}

#[allow(clippy::cast_precision_loss)] // call counts are far below 2^52
fn share(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        1.0
    } else {
        used as f64 / limit as f64
    }
}

/// Every account's budget in one run.
#[derive(Default)]
pub struct Ledger {
    persisted: HashMap<String, Persisted>,
    budgets: Mutex<Vec<Arc<Budget>>>,
}

impl Ledger {
    pub fn new(persisted: HashMap<String, Persisted>) -> Self {
        Ledger {
            persisted,
            budgets: Mutex::default(),
        }
    }

    /// The budget of `account`, made on first use from what the state database kept.
    pub fn budget(&self, account: &str, cloud: &str, settings: ApiBudget) -> Arc<Budget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = budgets.iter().find(|b| b.account == account) {
            return b.clone();
        }
        let kept = self.persisted.get(account).cloned().unwrap_or_default();
        let b = Arc::new(Budget {
            account: account.to_string(),
            cloud: cloud.to_string(),
            settings,
            inner: Mutex::new(Inner {
                minutes: kept.minutes.into_iter().collect(),
                provider: kept.provider,
                next_start: None,
                run_calls: 0,
                warning: None,
                stopped: None,
            }),
        });
        budgets.push(b.clone());
        b
    }

    fn all(&self) -> Vec<Arc<Budget>> {
        self.budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What to keep for the next run, per account.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Vec<(String, Persisted)> {
        self.all()
            .iter()
            .map(|b| (b.account.clone(), b.persisted(now)))
            .collect()
    }

    /// Each used account's usage, in the order first used.
    pub fn usage(&self, now: DateTime<Utc>) -> Vec<Usage> {
        self.all().iter().map(|b| b.usage(now)).collect()
    }

    /// Why a budget of the run stopped it, when one did.
    pub fn stopped(&self) -> Option<String> {
        self.budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find_map(|b| b.lock().stopped.clone())
    }

    /// The `warn_at` and `stop_at` lines of this run.
    pub fn warnings(&self) -> Vec<String> {
        self.all()
            .iter()
            .flat_map(|b| {
                let inner = b.lock();
                [inner.warning.clone(), inner.stopped.clone()]
            })
            .flatten()
            .collect()
    }
}

pub struct Budget {
    account: String,
    cloud: String,
    settings: ApiBudget,
    inner: Mutex<Inner>,
}

struct Inner {
    minutes: BTreeMap<i64, u64>,
    provider: Option<Provider>,
    next_start: Option<tokio::time::Instant>,
    run_calls: u64,
    warning: Option<String>,
    stopped: Option<String>,
}

const WINDOW_MINUTES: i64 = 60;

fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

impl Inner {
    /// Calls spent in the current window and the window's limit: the provider's figures while
    /// its reset time lies ahead, else our count of the last 60 minutes (since the provider's
    /// last reset, when that is nearer).
    fn used(&self, settings: &ApiBudget, now: DateTime<Utc>) -> (u64, u64) {
        if let Some(p) = self.provider.filter(|p| p.reset_at > now) {
            return (p.limit.saturating_sub(p.remaining), p.limit);
        }
        let mut from = minute_of(now) - (WINDOW_MINUTES - 1);
        if let Some(p) = self.provider {
            from = from.max(minute_of(p.reset_at));
        }
        let used = self.minutes.range(from..).map(|(_, n)| n).sum();
        let limit = self
            .provider
            .map_or(settings.calls_per_hour, |p| p.limit.max(1));
        (used, limit)
    }
}

impl Budget {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn line(&self, used: u64, limit: u64) -> String {
        format!(
            "Cloudinary account {}: {used}/{limit} API calls used ({:.0}%)",
            self.cloud,
            share(used, limit) * 100.0
        )
    }

    /// Waits until the next call may start (`min_interval`), then counts it. `Err` with the
    /// reason when the budget has reached `stop_at`: the run stops cleanly.
    pub async fn admit(&self) -> Result<(), String> {
        loop {
            let wait = {
                let mut inner = self.lock();
                if let Some(why) = &inner.stopped {
                    return Err(why.clone());
                }
                let now = Utc::now();
                let (used, limit) = inner.used(&self.settings, now);
                if share(used, limit) >= self.settings.stop_at {
                    let why = format!(
                        "{} — stop_at is {:.0}%: stopped cleanly, the rest waits for the next window",
                        self.line(used, limit),
                        self.settings.stop_at * 100.0
                    );
                    tracing::warn!("{why}");
                    inner.stopped = Some(why.clone());
                    return Err(why);
                }
                let clock = tokio::time::Instant::now();
                match inner.next_start {
                    Some(at) if at > clock => at - clock,
                    _ => {
                        inner.next_start = Some(clock + self.settings.min_interval);
                        *inner.minutes.entry(minute_of(now)).or_default() += 1;
                        inner.run_calls += 1;
                        if let Some(p) = inner.provider.as_mut().filter(|p| p.reset_at > now) {
                            p.remaining = p.remaining.saturating_sub(1);
                        }
                        self.check_warning(&mut inner, now);
                        return Ok(());
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn check_warning(&self, inner: &mut Inner, now: DateTime<Utc>) {
        if inner.warning.is_some() {
            return;
        }
        let (used, limit) = inner.used(&self.settings, now);
        if share(used, limit) >= self.settings.warn_at {
            let line = format!(
                "{} — past warn_at {:.0}%; the scan stops at {:.0}%",
                self.line(used, limit),
                self.settings.warn_at * 100.0,
                self.settings.stop_at * 100.0
            );
            tracing::warn!("{line}");
            inner.warning = Some(line);
        }
    }

    /// Takes the provider's rate-limit headers of an answer, when it sent them.
    pub fn observe(&self, headers: &http::HeaderMap) {
        let Some(p) = provider_of(headers) else {
            return;
        };
        let mut inner = self.lock();
        inner.provider = Some(p);
        self.check_warning(&mut inner, Utc::now());
    }

    /// A 420 or 429 answer: how long to wait before trying again (until the reset), or `Err`
    /// when that is more than `max_wait` away — then the run stops cleanly.
    pub fn rate_limited(&self, headers: &http::HeaderMap) -> Result<Duration, String> {
        let now = Utc::now();
        let provider = provider_of(headers);
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut inner = self.lock();
        if let Some(mut p) = provider {
            p.remaining = 0;
            inner.provider = Some(p);
        }
        let wait = match (provider, retry_after) {
            (_, Some(d)) => d,
            (Some(p), None) => (p.reset_at - now).to_std().unwrap_or_default(),
            // No word on when: a short pause, then the caller's retry decides.
            (None, None) => Duration::from_secs(5),
        };
        if wait > self.settings.max_wait {
            let why = format!(
                "Cloudinary account {}: rate limited until {} ({}s away, more than max_wait {}s): stopped cleanly",
                self.cloud,
                provider.map_or_else(
                    || "later".to_string(),
                    |p| crate::report::rfc3339(p.reset_at)
                ),
                wait.as_secs(),
                self.settings.max_wait.as_secs()
            );
            tracing::warn!("{why}");
            inner.stopped = Some(why.clone());
            return Err(why);
        }
        tracing::info!(
            cloud = %self.cloud,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "rate limited; waiting for the reset"
        );
        // The reset header and Retry-After count whole seconds, so the true reset may be up to
        // a second later than they say: wait that second too, so the next call lands in the
        // new window instead of spending another of the few rate-limited retries.
        Ok(wait + Duration::from_secs(1))
    }

    pub fn usage(&self, now: DateTime<Utc>) -> Usage {
        let inner = self.lock();
        let (used, limit) = inner.used(&self.settings, now);
        Usage {
            cloud: self.cloud.clone(),
            run_calls: inner.run_calls,
            used,
            limit,
            provider: inner.provider.filter(|p| p.reset_at > now),
        }
    }

    fn persisted(&self, now: DateTime<Utc>) -> Persisted {
        let inner = self.lock();
        let from = minute_of(now) - (WINDOW_MINUTES - 1);
        Persisted {
            minutes: inner.minutes.range(from..).map(|(&m, &n)| (m, n)).collect(),
            provider: inner.provider,
        }
    }
}

/// `X-FeatureRateLimit-Limit`, `-Remaining` and `-Reset` (an HTTP date), all three or nothing.
fn provider_of(headers: &http::HeaderMap) -> Option<Provider> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let limit = text("x-featureratelimit-limit")?.trim().parse().ok()?;
    let remaining = text("x-featureratelimit-remaining")?.trim().parse().ok()?;
    let reset = text("x-featureratelimit-reset")?.trim();
    // An HTTP date as Cloudinary sends it; RFC 3339 and Unix seconds are read too.
    let reset_at = DateTime::parse_from_rfc2822(reset)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| DateTime::parse_from_rfc3339(reset).map(|t| t.with_timezone(&Utc)))
        .ok()
        .or_else(|| {
            reset
                .parse::<i64>()
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0))
        })?;
    Some(Provider {
        limit,
        remaining,
        reset_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ApiBudget {
        ApiBudget {
            calls_per_hour: 10,
            ..ApiBudget::default()
        }
    }

    #[tokio::test]
    async fn stops_at_stop_at_and_warns_once_at_warn_at() {
        let ledger = Ledger::default();
        let b = ledger.budget("c:k", "c", settings());
        for _ in 0..9 {
            b.admit().await.expect("below stop_at");
        }
        // 9/10 = 90 % < 95 %: one more call goes; then 100 % stops.
        b.admit().await.expect("the tenth call");
        let why = b.admit().await.expect_err("stopped");
        assert!(why.contains("10/10 API calls used (100%)"), "{why}");
        let warnings = ledger.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("8/10"), "{warnings:?}");
        assert_eq!(ledger.usage(Utc::now())[0].run_calls, 10);
    }

    #[tokio::test]
    async fn a_new_run_starts_from_the_persisted_minutes() {
        let now = Utc::now();
        let first = Ledger::default();
        let b = first.budget("c:k", "c", settings());
        for _ in 0..5 {
            b.admit().await.expect("admitted");
        }
        let kept: HashMap<_, _> = first.snapshot(now).into_iter().collect();
        let second = Ledger::new(kept);
        let b = second.budget("c:k", "c", settings());
        assert_eq!(second.usage(now)[0].used, 5);
        b.admit().await.expect("admitted");
        assert_eq!(second.usage(now)[0].used, 6);
        assert_eq!(second.usage(now)[0].run_calls, 1);
        // Minutes older than an hour no longer count.
        let old = Ledger::new(HashMap::from([(
            "c:k".to_string(),
            Persisted {
                minutes: vec![(minute_of(now) - 61, 9)],
                provider: None,
            },
        )]));
        old.budget("c:k", "c", settings());
        assert_eq!(old.usage(now)[0].used, 0);
    }

    #[test]
    fn provider_headers_win_while_their_window_lasts() {
        let ledger = Ledger::default();
        let b = ledger.budget("c:k", "c", settings());
        let mut h = http::HeaderMap::new();
        h.insert("X-FeatureRateLimit-Limit", "500".parse().expect("value"));
        h.insert(
            "X-FeatureRateLimit-Remaining",
            "120".parse().expect("value"),
        );
        let reset = (Utc::now() + chrono::Duration::minutes(30)).to_rfc2822();
        h.insert(
            "X-FeatureRateLimit-Reset",
            reset.replace("+0000", "GMT").parse().expect("value"),
        );
        b.observe(&h);
        let u = b.usage(Utc::now());
        assert_eq!((u.used, u.limit), (380, 500));
        assert!(u.provider.is_some());
    }

    #[test]
    fn a_reset_in_unix_seconds_is_read_too() {
        let reset = Utc::now() + chrono::Duration::minutes(10);
        let mut h = http::HeaderMap::new();
        h.insert("X-FeatureRateLimit-Limit", "50".parse().expect("value"));
        h.insert("X-FeatureRateLimit-Remaining", "5".parse().expect("value"));
        h.insert(
            "X-FeatureRateLimit-Reset",
            reset.timestamp().to_string().parse().expect("value"),
        );
        let p = provider_of(&h).expect("provider");
        assert_eq!((p.limit, p.remaining), (50, 5));
        assert_eq!(p.reset_at.timestamp(), reset.timestamp());
        // Only part of the three headers: nothing.
        h.remove("X-FeatureRateLimit-Limit");
        assert!(provider_of(&h).is_none());
    }

    #[tokio::test]
    async fn min_interval_spaces_the_starts_of_calls() {
        let ledger = Ledger::default();
        let b = ledger.budget(
            "c:k",
            "c",
            ApiBudget {
                min_interval: Duration::from_millis(40),
                ..ApiBudget::default()
            },
        );
        let started = std::time::Instant::now();
        for _ in 0..4 {
            b.admit().await.expect("admitted");
        }
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn rate_limited_waits_for_the_reset_up_to_max_wait() {
        let ledger = Ledger::default();
        let b = ledger.budget("c:k", "c", settings());
        let mut h = http::HeaderMap::new();
        h.insert("Retry-After", "3".parse().expect("value"));
        assert!(b.rate_limited(&h).expect("short wait") >= Duration::from_secs(3));
        h.insert("Retry-After", "3600".parse().expect("value"));
        assert!(b.rate_limited(&h).is_err());
    }
}
