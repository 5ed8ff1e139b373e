//! The API budget's figures as the state database keeps them and the console shows them.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;

/// The provider's own view of the budget, from its rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: DateTime<Utc>,
}

/// What the state database holds of an account: calls per minute (minutes since the epoch) of
/// the last hour, counted by every run that used the account, and the provider's last word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    pub minutes: Vec<(i64, u64)>,
    pub provider: Option<Provider>,
}

/// An account's usage at the end of a run, for the console and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub cloud: String,
    /// Calls made by this run.
    pub run_calls: u64,
    /// Calls spent in the current window (this run and every other one), against `limit`.
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

/// The rolling window our own count covers when the provider gives no reset time.
pub const WINDOW_MINUTES: i64 = 60;

/// Calls spent in the current window and the window's limit: the provider's figures while its
/// reset time lies ahead, else our count of the last 60 minutes (since the provider's last
/// reset, when that is nearer). `calls_since(minute)` sums the calls counted from that minute
/// (minutes since the epoch) on.
pub fn window_used(
    provider: Option<Provider>,
    calls_per_hour: u64,
    now: DateTime<Utc>,
    calls_since: impl Fn(i64) -> u64,
) -> (u64, u64) {
    if let Some(p) = provider.filter(|p| p.reset_at > now) {
        return (p.limit.saturating_sub(p.remaining), p.limit);
    }
    let mut from = crate::time::minute_of(now) - (WINDOW_MINUTES - 1);
    if let Some(p) = provider {
        from = from.max(crate::time::minute_of(p.reset_at));
    }
    let limit = provider.map_or(calls_per_hour, |p| p.limit.max(1));
    (calls_since(from), limit)
}

/// `used / limit`, 1.0 when there is no limit to spend.
#[allow(clippy::cast_precision_loss)] // call counts are far below 2^52
pub fn share(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        1.0
    } else {
        used as f64 / limit as f64
    }
}

/// Where the budgets of metered accounts are kept between runs (the state database). Calls are
/// added as they happen, never rewritten, so every run that uses an account is counted.
#[async_trait]
pub trait BudgetLog: Send + Sync {
    /// Every account's calls of the hour up to `now`, and the provider's last figures.
    async fn load_budgets(&self, now: DateTime<Utc>) -> Result<HashMap<String, Persisted>>;
    /// Adds `calls` (minute, count) to `account`'s counts and answers its counts of the hour up
    /// to `now`, every run's included.
    async fn add_calls(
        &self,
        account: &str,
        calls: &[(i64, u64)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, u64)>>;
    /// `account`'s counts of the hour up to `now`, every run's included.
    async fn counts(&self, account: &str, now: DateTime<Utc>) -> Result<Vec<(i64, u64)>>;
    async fn save_provider(&self, account: &str, p: Provider, now: DateTime<Utc>) -> Result<()>;
}
