//! The overview page: the latest complete scan's figures (the same ones `GET /api/scans/{id}`
//! answers, read the same way), the API budgets of metered accounts, the trend of orphans and
//! missing files, and the last few scans.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::super::svg::{self, BudgetBar, TrendPoint};
use super::super::{Chrome, render, require};
use crate::config::{Config, StoreLocation};
use crate::domain::Spelling as _;
use crate::domain::budget::Persisted;
use crate::domain::budget::window_used;
use crate::domain::scan::{ScanMode, ScanState, Summary};
use crate::report::{count, size_mb};
use crate::server::AppState;
use crate::state::ScanLog as _;
use crate::state::findings_pages::ScanView;

/// Complete scans the trend shows.
const TREND_SCANS: usize = 30;
/// Scans read per step while looking for complete ones, and the most read in all: a long run
/// of failed scans leaves the trend shorter rather than the page slow.
const TREND_PAGE: u32 = 100;
const TREND_READ_AT_MOST: usize = 1000;
/// The trend chart's size in user units: narrow enough that its text stays legible when it is
/// scaled down to a phone's width.
const TREND_WIDTH: u32 = 480;
const TREND_HEIGHT: u32 = 240;
/// Scans the "latest scans" list shows.
const LATEST_SCANS: u32 = 5;

/// One figure of the latest scan: its name (for tests and scripts), label, raw value, and how
/// people read it.
pub struct Figure {
    pub name: &'static str,
    pub label: &'static str,
    pub raw: String,
    pub shown: String,
}

/// The latest complete scan.
pub struct Latest {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub window: String,
    pub mode: &'static str,
    pub duration: Option<String>,
    pub stores: String,
    pub figures: Vec<Figure>,
}

/// A line of the latest scans list.
pub struct ScanLine {
    pub id: i64,
    pub started_at: String,
    pub date: String,
    pub state: &'static str,
    pub orphans: Option<(u64, String)>,
    pub missing: Option<(u64, String)>,
}

/// A row of the trend's table.
pub struct TrendRow {
    pub id: i64,
    pub date: String,
    pub orphans: Option<(u64, String)>,
    pub missing: Option<(u64, String)>,
}

/// An account's budget: who it is, its figures, and the bar (which says them in words).
pub struct BudgetView {
    pub label: String,
    pub used: u64,
    pub limit: u64,
    pub svg: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Page {
    chrome: Chrome,
    latest: Option<Latest>,
    budgets: Vec<BudgetView>,
    trend_svg: String,
    trend: Vec<TrendRow>,
    scans: Vec<ScanLine>,
    max_trend: usize,
    error: Option<String>,
}

pub async fn overview(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&s, &headers, "/overview").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut page = Page {
        chrome: Chrome::new(&s, &session, "Overview", "overview"),
        latest: None,
        budgets: Vec::new(),
        trend_svg: svg::trend(&[], TREND_WIDTH, TREND_HEIGHT),
        trend: Vec::new(),
        scans: Vec::new(),
        max_trend: TREND_SCANS,
        error: None,
    };
    if let Err(e) = fill(&s, &mut page).await {
        tracing::warn!(error = %crate::error::one_line(&e), "the overview could not read the state database");
        page.error = Some(
            "The state database could not be read; the figures below may be incomplete. The server log has the details."
                .to_string(),
        );
    }
    render(&page)
}

async fn fill(s: &AppState, page: &mut Page) -> crate::error::Result<()> {
    let state = &s.app.state;
    page.scans = state
        .scan_views(None, LATEST_SCANS)
        .await?
        .iter()
        .map(scan_line)
        .collect();
    let complete = complete_scans(s).await?;
    if let Some(v) = complete.first() {
        let duration_ms = state.scan(v.id).await?.and_then(|r| r.duration_ms);
        page.latest = Some(latest(v, duration_ms));
    }
    let points: Vec<TrendPoint> = complete.iter().rev().map(trend_point).collect();
    page.trend_svg = svg::trend(&points, TREND_WIDTH, TREND_HEIGHT);
    page.trend = points
        .iter()
        .map(|p| TrendRow {
            id: p.scan_id,
            date: p.label.clone(),
            orphans: p.orphans.map(|n| (n, count(n))),
            missing: p.missing.map(|n| (n, count(n))),
        })
        .collect();
    let kept = crate::domain::budget::BudgetLog::load_budgets(state, Utc::now()).await?;
    page.budgets = budgets(&s.app.cfg, &kept, Utc::now())
        .into_iter()
        .map(|b| BudgetView {
            label: b.label.clone(),
            used: b.used,
            limit: b.limit,
            svg: svg::budget_bar(&b, 402, 60),
        })
        .collect();
    Ok(())
}

/// The last [`TREND_SCANS`] complete scans, newest first.
async fn complete_scans(s: &AppState) -> crate::error::Result<Vec<ScanView>> {
    let mut out = Vec::new();
    let mut before = None;
    let mut read = 0;
    while out.len() < TREND_SCANS && read < TREND_READ_AT_MOST {
        let views = s.app.state.scan_views(before, TREND_PAGE).await?;
        let Some(last) = views.last() else {
            break;
        };
        before = Some(last.id);
        read += views.len();
        let full = views.len() == TREND_PAGE as usize;
        out.extend(
            views
                .into_iter()
                .filter(|v| v.state == ScanState::Complete && v.summary.is_some()),
        );
        if !full {
            break;
        }
    }
    out.truncate(TREND_SCANS);
    Ok(out)
}

/// The orphans and missing figures of a scan, `None` where its mode did not look.
fn looked(mode: ScanMode, summary: Option<&Summary>) -> (Option<u64>, Option<u64>) {
    let Some(sum) = summary else {
        return (None, None);
    };
    (
        (mode != ScanMode::MissingOnly).then_some(sum.orphans),
        (mode != ScanMode::OrphansOnly).then_some(sum.missing),
    )
}

fn date_of(rfc3339: &str) -> String {
    rfc3339.get(..10).unwrap_or(rfc3339).to_string()
}

fn trend_point(v: &ScanView) -> TrendPoint {
    let (orphans, missing) = looked(v.mode, v.summary.as_ref());
    TrendPoint {
        scan_id: v.id,
        label: date_of(&v.started_at),
        orphans,
        missing,
    }
}

fn scan_line(v: &ScanView) -> ScanLine {
    let (orphans, missing) = looked(v.mode, v.summary.as_ref());
    ScanLine {
        id: v.id,
        started_at: v.started_at.clone(),
        date: v
            .started_at
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string(),
        state: v.state.as_str(),
        orphans: orphans.map(|n| (n, count(n))),
        missing: missing.map(|n| (n, count(n))),
    }
}

/// "2,411.52 MB": the product's MB (SPEC §5) with separators.
fn mb(bytes: u64) -> String {
    let text = size_mb(bytes);
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "00"));
    let whole = whole
        .parse::<u64>()
        .map_or_else(|_| whole.to_string(), count);
    format!("{whole}.{frac} MB")
}

fn duration(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    if ms < 60_000 {
        #[allow(clippy::cast_precision_loss)] // a scan's milliseconds are far below 2^52
        let secs = ms as f64 / 1000.0;
        // As the console says it: a demo scan takes hundredths of a second.
        format!("{secs:.2} s")
    } else {
        let secs = ms / 1000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h} h {m} min {s} s")
        } else {
            format!("{m} min {s} s")
        }
    }
}

fn figure(name: &'static str, label: &'static str, n: u64) -> Figure {
    Figure {
        name,
        label,
        raw: n.to_string(),
        shown: count(n),
    }
}

/// The latest complete scan's head and figures: the figures `GET /api/scans/{id}` gives in
/// `summary`, plus valid % (SPEC §5: valid / objects scanned) and the deleted missing rows.
fn latest(v: &ScanView, duration_ms: Option<i64>) -> Latest {
    let sum = v.summary.clone().unwrap_or_default();
    let percent = format!("{:.1}", Summary::percent(sum.valid, sum.objects_scanned));
    let figures = vec![
        Figure {
            name: "scan_id",
            label: "Scan",
            raw: v.id.to_string(),
            shown: v.id.to_string(),
        },
        figure("objects_scanned", "Objects scanned", sum.objects_scanned),
        figure("valid", "Valid files", sum.valid),
        Figure {
            name: "valid_percent",
            label: "Valid",
            raw: percent.clone(),
            shown: format!("{percent}%"),
        },
        figure("orphans", "Orphaned files", sum.orphans),
        Figure {
            name: "orphan_bytes",
            label: "Orphaned size",
            raw: sum.orphan_bytes.to_string(),
            shown: mb(sum.orphan_bytes),
        },
        figure("missing", "Records with missing files", sum.missing),
        figure(
            "missing_active",
            "Missing, active records",
            sum.missing_active,
        ),
        figure(
            "missing_deleted",
            "Missing, deleted records",
            sum.missing.saturating_sub(sum.missing_active),
        ),
    ];
    Latest {
        id: v.id,
        started_at: v.started_at.clone(),
        finished_at: v.finished_at.clone(),
        window: v.window.describe(),
        mode: match v.mode {
            ScanMode::Both => "orphans and missing files",
            ScanMode::OrphansOnly => "orphans only",
            ScanMode::MissingOnly => "missing files only",
        },
        duration: duration_ms.map(duration),
        stores: v.stores.join(", "),
        figures,
    }
}

/// Every configured Cloudinary account's budget now, from every run's calls as the state
/// database counts them (this server's own calls reach it within a fraction of a second): the
/// provider's figures while its reset lies ahead, else the calls of the last hour (since the
/// provider's last reset, when nearer) against `calls_per_hour`, as the ledger reckons them.
pub fn budgets(
    cfg: &Config,
    kept: &HashMap<String, Persisted>,
    now: DateTime<Utc>,
) -> Vec<BudgetBar> {
    let mut accounts: Vec<(String, String, Vec<String>, crate::config::ApiBudget)> = Vec::new();
    for st in &cfg.stores {
        let StoreLocation::Cloudinary(loc) = &st.location else {
            continue;
        };
        let account = loc.account();
        match accounts.iter_mut().find(|a| a.0 == account) {
            Some(a) => a.2.push(st.name.clone()),
            None => accounts.push((
                account,
                loc.cloud.clone(),
                vec![st.name.clone()],
                loc.budget,
            )),
        }
    }
    let same_cloud = |cloud: &str| accounts.iter().filter(|a| a.1 == cloud).count();
    accounts
        .iter()
        .map(|(account, cloud, stores, settings)| {
            let p = kept.get(account).cloned().unwrap_or_default();
            // The ledger's own reckoning, over what the state database kept.
            let (used, limit) = window_used(p.provider, settings.calls_per_hour, now, |from| {
                p.minutes
                    .iter()
                    .filter(|(m, _)| *m >= from)
                    .map(|(_, n)| n)
                    .sum()
            });
            // Two API keys of one cloud are told apart by their stores, never by the key.
            let label = if same_cloud(cloud) > 1 {
                format!("Cloudinary cloud {cloud} (stores {})", stores.join(", "))
            } else {
                format!("Cloudinary cloud {cloud}")
            };
            BudgetBar {
                label,
                used,
                limit,
                warn_at: settings.warn_at,
                stop_at: settings.stop_at,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::budget::Provider;
    use crate::domain::scan::Window;
    use crate::time::minute_of;

    fn view(id: i64, mode: ScanMode, summary: Option<Summary>) -> ScanView {
        ScanView {
            id,
            started_at: "2025-09-15T14:30:00Z".into(),
            finished_at: Some("2025-09-15T14:31:00Z".into()),
            window: Window::Days(30),
            mode,
            stores: vec!["media".into(), "docs".into()],
            state: ScanState::Complete,
            api_calls: indexmap::IndexMap::new(),
            warnings: Vec::new(),
            summary,
        }
    }

    fn summary() -> Summary {
        Summary {
            objects_scanned: 1_234_567,
            valid: 1_000_000,
            orphans: 234_567,
            orphan_bytes: 2_411_520,
            missing: 7,
            missing_active: 5,
            ..Summary::default()
        }
    }

    #[test]
    fn figures_carry_raw_values_and_readable_text() {
        let l = latest(&view(9, ScanMode::Both, Some(summary())), Some(83_000));
        let get = |n: &str| l.figures.iter().find(|f| f.name == n).expect(n);
        assert_eq!(get("scan_id").raw, "9");
        assert_eq!(get("objects_scanned").raw, "1234567");
        assert_eq!(get("objects_scanned").shown, "1,234,567");
        assert_eq!(get("valid_percent").raw, "81.0");
        assert_eq!(get("orphan_bytes").raw, "2411520");
        assert_eq!(get("orphan_bytes").shown, "2.30 MB");
        assert_eq!(get("missing_deleted").raw, "2");
        assert_eq!(l.duration.as_deref(), Some("1 min 23 s"));
        assert_eq!(l.window, "last 30 days");
        assert_eq!(l.stores, "media, docs");
    }

    #[test]
    fn mb_and_durations_read_well() {
        assert_eq!(mb(0), "0.00 MB");
        assert_eq!(mb(5_000 * 1_048_576), "5,000.00 MB");
        assert_eq!(duration(1_234), "1.23 s");
        assert_eq!(duration(20), "0.02 s");
        assert_eq!(duration(3_723_000), "1 h 2 min 3 s");
    }

    #[test]
    fn a_figure_a_scan_did_not_look_for_is_absent_not_zero() {
        let p = trend_point(&view(3, ScanMode::OrphansOnly, Some(summary())));
        assert_eq!((p.orphans, p.missing), (Some(234_567), None));
        let p = trend_point(&view(3, ScanMode::MissingOnly, Some(summary())));
        assert_eq!((p.orphans, p.missing), (None, Some(7)));
        assert_eq!(p.label, "2025-09-15");
    }

    fn config(toml: &str) -> Config {
        crate::config::parse(toml, "t.toml", std::path::Path::new("/tmp"), &|_| None)
            .expect("config")
    }

    #[test]
    fn budgets_follow_the_ledgers_reckoning() {
        let cfg = config(
            r#"
[stores.media]
url = "cloudinary://key1:secret@demo"

[stores.other]
url = "./files"
"#,
        );
        let now = DateTime::parse_from_rfc3339("2025-09-15T14:30:30Z")
            .expect("time")
            .with_timezone(&Utc);
        let m = minute_of(now);
        let mut kept = HashMap::new();
        kept.insert(
            "demo:key1".to_string(),
            Persisted {
                // The minute an hour ago is out of the window.
                minutes: vec![(m - 60, 100), (m - 59, 10), (m, 5)],
                provider: None,
            },
        );
        let b = budgets(&cfg, &kept, now);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].used, b[0].limit), (15, 500));
        assert_eq!(b[0].label, "Cloudinary cloud demo");
        assert!(!b[0].label.contains("key1"));
        // The provider's word wins while its reset lies ahead.
        kept.get_mut("demo:key1").expect("kept").provider = Some(Provider {
            limit: 2000,
            remaining: 1500,
            reset_at: now + chrono::TimeDelta::minutes(10),
        });
        let b = budgets(&cfg, &kept, now);
        assert_eq!((b[0].used, b[0].limit), (500, 2000));
        // Nothing counted yet: a bar at zero, not a missing one.
        let b = budgets(&cfg, &HashMap::new(), now);
        assert_eq!((b[0].used, b[0].limit), (0, 500));
    }
}
