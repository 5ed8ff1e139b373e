//! Spike alerts (SPEC §2 `[notify] spike`, §5): a scan's orphans or missing rows compared with
//! the comparable scan of invariant 7 — the last earlier complete scan with the same stores and
//! window, and orphans checked, that a purge accepted, else the first such scan.

use crate::config::SpikeConfig;
use crate::domain::scan::{ScanMode, Summary};
use crate::report::count;
use crate::state::ScanRecord;

use super::Alert;

/// The baseline of `scan` among `complete` (newest first), as invariant 7 picks it: the newest
/// earlier alike scan whose level a purge accepted for any of its stores, else the oldest alike.
pub fn baseline<'a>(scan: &ScanRecord, complete: &'a [ScanRecord]) -> Option<&'a ScanRecord> {
    let mut stores = scan.stores.clone();
    stores.sort();
    let mut first = None;
    for s in complete.iter().filter(|s| {
        let mut theirs = s.stores.clone();
        theirs.sort();
        s.id < scan.id && theirs == stores && s.window == scan.window && s.mode.orphans()
    }) {
        if !s.guard_accepted.is_empty() {
            return Some(s);
        }
        first = Some(s);
    }
    first
}

/// The alert `now` (of scan `scan_id`, in `mode`) raises against `then` (scan `then_id`), or
/// `None` when no threshold is met. Missing rows are compared only when both scans checked them;
/// the ratio only when the baseline had orphans (from none, `orphans_increase` speaks).
pub fn compare(
    cfg: &SpikeConfig,
    now: &Summary,
    mode: ScanMode,
    then: &ScanRecord,
    then_summary: &Summary,
) -> Option<Alert> {
    let mut lines = Vec::new();
    let since = format!(
        "since scan {} ({})",
        then.id,
        crate::time::rfc3339(then.started_at)
    );
    if mode.orphans() && then.mode.orphans() {
        let (a, b) = (then_summary.orphans, now.orphans);
        let up = b.saturating_sub(a);
        #[allow(clippy::cast_precision_loss)]
        let ratio = (a > 0).then(|| b as f64 / a as f64);
        let by_count = cfg.orphans_increase.is_some_and(|n| up >= n);
        let by_ratio = matches!((cfg.orphans_ratio, ratio), (Some(r), Some(x)) if x >= r);
        if by_count || by_ratio {
            let mut why = Vec::new();
            if let (true, Some(n)) = (by_count, cfg.orphans_increase) {
                why.push(format!("orphans_increase {n}"));
            }
            if let (true, Some(r)) = (by_ratio, cfg.orphans_ratio) {
                why.push(format!("orphans_ratio {r}"));
            }
            lines.push(format!(
                "Orphaned files rose from {} to {} (+{}{}) {since}: at or over {}",
                count(a),
                count(b),
                count(up),
                ratio.map_or_else(String::new, |x| format!(", ×{x:.1}")),
                why.join(" and ")
            ));
        }
    }
    if mode.missing()
        && then.mode.missing()
        && let Some(n) = cfg.missing_increase
    {
        let (a, b) = (then_summary.missing, now.missing);
        let up = b.saturating_sub(a);
        if up >= n {
            lines.push(format!(
                "Records with missing files rose from {} to {} (+{}) {since}: at or over missing_increase {n}",
                count(a),
                count(b),
                count(up)
            ));
        }
    }
    (!lines.is_empty()).then_some(Alert {
        baseline_scan: then.id,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scan::{ScanState, Window};

    fn record(id: i64, stores: &[&str], accepted: bool) -> ScanRecord {
        ScanRecord {
            id,
            started_at: chrono::Utc::now(),
            state: ScanState::Complete,
            mode: ScanMode::Both,
            window: Window::Days(30),
            stores: stores.iter().map(ToString::to_string).collect(),
            summary: None,
            store_stats: None,
            api_calls: 0,
            duration_ms: None,
            fingerprints: None,
            guard_accepted: if accepted {
                vec![stores[0].to_string()]
            } else {
                Vec::new()
            },
        }
    }

    fn summary(orphans: u64, missing: u64) -> Summary {
        Summary {
            orphans,
            missing,
            ..Summary::default()
        }
    }

    #[test]
    fn the_baseline_is_the_last_accepted_alike_scan_else_the_first() {
        let now = record(9, &["b", "a"], false);
        let history = vec![
            record(8, &["a", "b"], false),
            record(7, &["a"], true),
            record(6, &["a", "b"], true),
            record(5, &["a", "b"], false),
        ];
        assert_eq!(baseline(&now, &history).map(|s| s.id), Some(6));
        let none_accepted = vec![record(8, &["a", "b"], false), record(5, &["a", "b"], false)];
        assert_eq!(baseline(&now, &none_accepted).map(|s| s.id), Some(5));
        assert!(baseline(&now, &[record(7, &["a"], true)]).is_none());
    }

    #[test]
    fn any_threshold_met_raises_the_alert() {
        let cfg = SpikeConfig {
            orphans_increase: Some(50),
            missing_increase: Some(10),
            orphans_ratio: Some(2.0),
        };
        let then = record(1, &["a"], false);
        let alert =
            |now: Summary, before: Summary| compare(&cfg, &now, ScanMode::Both, &then, &before);
        assert!(alert(summary(12, 3), summary(10, 1)).is_none());
        assert!(alert(summary(70, 0), summary(60, 0)).is_none());
        let a = alert(summary(25, 0), summary(10, 0)).unwrap();
        assert!(a.lines[0].contains("orphans_ratio 2"), "{a:?}");
        let a = alert(summary(160, 0), summary(100, 0)).unwrap();
        assert!(a.lines[0].contains("orphans_increase 50"), "{a:?}");
        let a = alert(summary(0, 15), summary(0, 5)).unwrap();
        assert!(a.lines[0].contains("missing_increase 10"), "{a:?}");
        // From no orphans, only the count speaks.
        assert!(alert(summary(5, 0), summary(0, 0)).is_none());
    }
}
