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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::ApiBudget;
pub use crate::domain::budget::{BudgetLog, Persisted, Provider, Usage};
use crate::domain::budget::{share, window_used};
use crate::time::{minute_of, rfc3339};

/// How often a run's calls are added to the state database's counts (and the other runs' calls
/// read back): a killed run loses at most this much of its count.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Every account's budget in one process.
pub struct Ledger {
    persisted: HashMap<String, Persisted>,
    /// Where calls are added as they happen; `None` keeps them in memory only (unit tests).
    log: Option<Arc<dyn BudgetLog>>,
    budgets: Mutex<Vec<Arc<Budget>>>,
    /// Serialises flushes, so that two never add the same calls.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(HashMap::new(), None)
    }
}

impl Ledger {
    pub fn new(persisted: HashMap<String, Persisted>, log: Option<Arc<dyn BudgetLog>>) -> Self {
        Ledger {
            persisted,
            log,
            budgets: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds this process's calls to the state database every [`FLUSH_EVERY`] while the ledger
    /// lives; [`Ledger::flush`] once more at the end of a run.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let weak: Weak<Ledger> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ledger) = weak.upgrade() else {
                    return;
                };
                ledger.flush().await;
            }
        });
    }

    /// Adds the calls not yet counted in the state database, and reads every run's counts back.
    /// A failure to write is a warning in the log; the calls stay to be added next time.
    pub async fn flush(&self) {
        let Some(log) = &self.log else {
            return;
        };
        let _one = self.flushing.lock().await;
        for b in self.all() {
            let now = Utc::now();
            let (calls, provider) = b.take_unflushed();
            if calls.is_empty() {
                // Nothing to add: the other runs' calls are read back all the same.
                if let Ok(counts) = log.counts(&b.account, now).await {
                    b.counted(&counts);
                }
            } else {
                match log.add_calls(&b.account, &calls, now).await {
                    Ok(counts) => b.counted(&counts),
                    Err(e) => {
                        tracing::warn!(
                            "API calls of Cloudinary account {} not counted yet: {e}",
                            b.cloud
                        );
                        b.put_back(&calls);
                    }
                }
            }
            if let Some(p) = provider
                && let Err(e) = log.save_provider(&b.account, p, now).await
            {
                tracing::warn!(
                    "rate-limit figures of Cloudinary account {} not kept: {e}",
                    b.cloud
                );
            }
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
                counted: kept.minutes.into_iter().collect(),
                unflushed: BTreeMap::new(),
                provider: kept.provider,
                provider_seen: false,
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
    /// Calls per minute as the state database counted them at the last flush (every run's).
    counted: BTreeMap<i64, u64>,
    /// This run's calls not yet added there.
    unflushed: BTreeMap<i64, u64>,
    provider: Option<Provider>,
    /// The provider's headers changed since the last flush.
    provider_seen: bool,
    next_start: Option<tokio::time::Instant>,
    run_calls: u64,
    warning: Option<String>,
    stopped: Option<String>,
}

impl Inner {
    /// Calls spent in the current window and the window's limit ([`window_used`]).
    fn used(&self, settings: &ApiBudget, now: DateTime<Utc>) -> (u64, u64) {
        window_used(self.provider, settings.calls_per_hour, now, |from| {
            self.counted.range(from..).map(|(_, n)| n).sum::<u64>()
                + self.unflushed.range(from..).map(|(_, n)| n).sum::<u64>()
        })
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
                        *inner.unflushed.entry(minute_of(now)).or_default() += 1;
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
        inner.provider_seen = true;
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
            inner.provider_seen = true;
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
                provider.map_or_else(|| "later".to_string(), |p| rfc3339(p.reset_at)),
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

    /// This run's calls not yet counted in the state database, and the provider's figures when
    /// they changed; both are then counted as sent.
    fn take_unflushed(&self) -> (Vec<(i64, u64)>, Option<Provider>) {
        let mut inner = self.lock();
        let calls = std::mem::take(&mut inner.unflushed).into_iter().collect();
        let provider = std::mem::take(&mut inner.provider_seen)
            .then_some(inner.provider)
            .flatten();
        (calls, provider)
    }

    /// The state database's counts after a flush: every run's calls, this one's included.
    fn counted(&self, counts: &[(i64, u64)]) {
        self.lock().counted = counts.iter().copied().collect();
    }

    /// Calls a flush could not add: kept for the next one.
    fn put_back(&self, calls: &[(i64, u64)]) {
        let mut inner = self.lock();
        for &(m, n) in calls {
            *inner.unflushed.entry(m).or_default() += n;
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
        let kept = HashMap::from([(
            "c:k".to_string(),
            Persisted {
                minutes: vec![(minute_of(now), 5)],
                provider: None,
            },
        )]);
        let second = Ledger::new(kept, None);
        let b = second.budget("c:k", "c", settings());
        assert_eq!(second.usage(now)[0].used, 5);
        b.admit().await.expect("admitted");
        assert_eq!(second.usage(now)[0].used, 6);
        assert_eq!(second.usage(now)[0].run_calls, 1);
        // Minutes older than an hour no longer count.
        let old = Ledger::new(
            HashMap::from([(
                "c:k".to_string(),
                Persisted {
                    minutes: vec![(minute_of(now) - 61, 9)],
                    provider: None,
                },
            )]),
            None,
        );
        old.budget("c:k", "c", settings());
        assert_eq!(old.usage(now)[0].used, 0);
    }

    /// Two runs at once on one state database: each adds its calls, neither overwrites the
    /// other's, and each sees the other's after a flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_add_their_calls_and_see_each_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = crate::state::State::open(&crate::config::StateUrl::Sqlite(
            dir.path().join("state.db"),
        ))
        .await
        .expect("state");
        let log: Arc<dyn BudgetLog> = Arc::new(state.clone());
        let wide = ApiBudget {
            calls_per_hour: 1000,
            ..ApiBudget::default()
        };
        let runs: Vec<Arc<Ledger>> = (0..2)
            .map(|_| Arc::new(Ledger::new(HashMap::new(), Some(Arc::clone(&log)))))
            .collect();
        let calls = runs.iter().enumerate().map(|(i, ledger)| {
            let ledger = Arc::clone(ledger);
            async move {
                let b = ledger.budget("c:k", "c", wide);
                for n in 0..(20 + 5 * i) {
                    b.admit().await.expect("admitted");
                    if n % 7 == 0 {
                        ledger.flush().await;
                    }
                }
                ledger.flush().await;
            }
        });
        futures::future::join_all(calls).await;
        let kept = log.load_budgets(Utc::now()).await.expect("load");
        let total: u64 = kept["c:k"].minutes.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 45, "20 + 25 calls, both runs counted");
        // A flush reads every run's calls back: each run then counts the other's too.
        for ledger in &runs {
            ledger.flush().await;
            assert_eq!(ledger.usage(Utc::now())[0].used, 45);
        }
        state.close().await;
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
