//! The API budgets of metered accounts, written once for both backends. Calls are added to the
//! per-minute counts as they happen (an upsert that adds), never by deleting and re-inserting an
//! account's rows: two concurrent runs, a killed run and `check` are all counted.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Mode, State, context, int};
use crate::domain::budget::{BudgetLog, Persisted, Provider};
use crate::error::Result;
use crate::time::{minute_of, parse_rfc3339, rfc3339};

/// Minutes a budget window counts back (SPEC §4: a rolling 60 minutes).
const WINDOW_MINUTES: i64 = 60;

fn first_minute(now: DateTime<Utc>) -> i64 {
    minute_of(now) - (WINDOW_MINUTES - 1)
}

#[async_trait]
impl BudgetLog for State {
    async fn load_budgets(&self, now: DateTime<Utc>) -> Result<HashMap<String, Persisted>> {
        let e = context("cannot read API budgets");
        let mut out: HashMap<String, Persisted> = HashMap::new();
        let mut tx = self.begin(Mode::Read).await.map_err(&e)?;
        for mut r in tx
            .query(
                "SELECT account, minute, calls FROM api_budget_calls WHERE minute >= $1 ORDER BY account, minute",
                &[first_minute(now).into()],
            )
            .await
            .map_err(&e)?
        {
            let (minute, calls) = (r.int(1)?, r.count(2)?);
            out.entry(r.text(0)?).or_default().minutes.push((minute, calls));
        }
        for mut r in tx
            .query(
                "SELECT account, rate_limit, remaining, reset_at FROM api_budget_provider",
                &[],
            )
            .await
            .map_err(&e)?
        {
            let (limit, remaining) = (r.count(1)?, r.count(2)?);
            if let Some(reset_at) = parse_rfc3339(&r.text(3)?) {
                out.entry(r.text(0)?).or_default().provider = Some(Provider {
                    limit,
                    remaining,
                    reset_at,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn add_calls(
        &self,
        account: &str,
        calls: &[(i64, u64)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, u64)>> {
        let e = context("cannot count API calls");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        for &(minute, n) in calls.iter().filter(|c| c.1 > 0) {
            tx.execute(
                "INSERT INTO api_budget_calls (account, minute, calls) VALUES ($1, $2, $3)
                 ON CONFLICT (account, minute) DO UPDATE SET calls = api_budget_calls.calls + excluded.calls",
                &[account.into(), minute.into(), int(n)],
            )
            .await
            .map_err(&e)?;
        }
        // Minutes older than any window age out, whichever account they count.
        tx.execute(
            "DELETE FROM api_budget_calls WHERE minute < $1",
            &[first_minute(now).into()],
        )
        .await
        .map_err(&e)?;
        let rows = tx
            .query(
                "SELECT minute, calls FROM api_budget_calls WHERE account = $1 AND minute >= $2 ORDER BY minute",
                &[account.into(), first_minute(now).into()],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        rows.iter().map(|r| Ok((r.int(0)?, r.count(1)?))).collect()
    }

    async fn counts(&self, account: &str, now: DateTime<Utc>) -> Result<Vec<(i64, u64)>> {
        self.read(
            "SELECT minute, calls FROM api_budget_calls WHERE account = $1 AND minute >= $2 ORDER BY minute",
            &[account.into(), first_minute(now).into()],
        )
        .await
        .map_err(context("cannot read API budgets"))?
        .iter()
        .map(|r| Ok((r.int(0)?, r.count(1)?)))
        .collect()
    }

    async fn save_provider(&self, account: &str, p: Provider, now: DateTime<Utc>) -> Result<()> {
        let e = context("cannot keep API budgets");
        let (reset, seen) = (rfc3339(p.reset_at), rfc3339(now));
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "INSERT INTO api_budget_provider (account, rate_limit, remaining, reset_at, seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account) DO UPDATE SET rate_limit = excluded.rate_limit, remaining = excluded.remaining, reset_at = excluded.reset_at, seen_at = excluded.seen_at",
            &[account.into(), int(p.limit), int(p.remaining), reset.as_str().into(), seen.as_str().into()],
        )
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)
    }
}
