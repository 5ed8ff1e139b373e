//! Hand-made notices for the channel tests: what a scan of the app "shop" would announce, every
//! field filled as a real run fills it.

use std::path::PathBuf;

use assetgc::notify::{Alert, Figure, Item, Kind, List, Notice};
use serde_json::json;

pub const REPORT_PATH: &str = "reports/asset_detection_2026-12-04_100000.csv";
pub const API_USAGE: &str = "API calls: 5/500 used (1%) — Rate limit remaining: 495/500 (99%)";
pub const ORPHAN_BYTES: u64 = 2_411_520;

/// The `i`th orphan's key: `media/a1.jpg`, `media/a2.jpg`…
pub fn orphan_key(i: usize) -> String {
    format!("media/a{i}.jpg")
}

/// A scan's notice: `orphans` orphans of 2.30 MB each and `missing` missing rows (ACTIVE and
/// DELETED in turn, ACTIVE first), the first 20 of each listed; a spike alert when `alert`; the
/// CSV report attached (for email) when `attachment` is given.
pub fn sample_notice(
    orphans: usize,
    missing: usize,
    alert: bool,
    attachment: Option<PathBuf>,
) -> Notice {
    let active = missing.div_ceil(2);
    let deleted = missing - active;
    let orphan_bytes = ORPHAN_BYTES * orphans as u64;
    let mb = |b: u64| format!("{:.2} MB", b as f64 / 1_048_576.0);
    let headline = format!(
        "{orphans} orphans ({}), {missing} missing ({active} ACTIVE, {deleted} DELETED)",
        mb(orphan_bytes)
    );
    let orphan_items: Vec<Item> = (1..=orphans.min(20))
        .map(|i| {
            let key = orphan_key(i);
            let url = format!("https://cdn.example.com/shop/{key}");
            Item {
                text: format!("{key}  {}", mb(ORPHAN_BYTES)),
                link: Some(url.clone()),
                json: json!({
                    "store": "media",
                    "key": key,
                    "resource_type": "",
                    "size_bytes": ORPHAN_BYTES,
                    "size_mb": "2.30",
                    "format": "jpg",
                    "uploaded_at": "2026-11-20T08:15:00Z",
                    "url": url,
                }),
            }
        })
        .collect();
    let missing_items: Vec<Item> = (1..=missing.min(20))
        .map(|i| {
            // ACTIVE rows first, as the report orders them.
            let status = if i <= active { "ACTIVE" } else { "DELETED" };
            let key = format!("media/p{i}.png");
            let link = format!("https://shop.example.com/admin/products/{i}");
            Item {
                text: format!("{status}  products #{i} “Product {i}”  {key}"),
                link: Some(link.clone()),
                json: json!({
                    "reference": "products",
                    "record_id": i.to_string(),
                    "title": format!("Product {i}"),
                    "owner": "ops@shop.example.com",
                    "media_type": "image",
                    "key": key,
                    "created_at": "2026-10-01T12:00:00Z",
                    "status": status,
                    "link": link,
                }),
            }
        })
        .collect();
    let alert = alert.then(|| Alert {
        baseline_scan: 41,
        lines: vec![format!(
            "Orphans grew by {} since scan #41 (threshold 50)",
            orphans.saturating_sub(3)
        )],
    });
    let actions = vec![
        format!(
            "Review the {orphans} orphaned files in the CSV report, then delete them with `assetgc purge --from-report {REPORT_PATH}`"
        ),
        format!(
            "Restore or clear the file fields of the {active} ACTIVE records with missing files"
        ),
    ];
    let alert_json = alert.as_ref().map_or(
        serde_json::Value::Null,
        |a| json!({ "baseline_scan": a.baseline_scan, "lines": a.lines }),
    );
    Notice {
        kind: Kind::Scan,
        app_name: "shop".into(),
        run_id: Some(42),
        headline: headline.clone(),
        complete: true,
        noteworthy: orphans + missing > 0,
        alert,
        figures: vec![
            Figure {
                label: "Objects scanned".into(),
                value: (orphans + 120).to_string(),
            },
            Figure {
                label: "Orphaned files".into(),
                value: format!("{orphans}, {}", mb(orphan_bytes)),
            },
            Figure {
                label: "Missing files".into(),
                value: format!("{missing} ({active} ACTIVE, {deleted} DELETED)"),
            },
            Figure {
                label: "Too recent".into(),
                value: "4".into(),
            },
        ],
        lists: vec![
            List {
                title: "Orphaned files".into(),
                key: "orphans",
                total: orphans as u64,
                items: orphan_items,
            },
            List {
                title: "Records with missing files".into(),
                key: "missing",
                total: missing as u64,
                items: missing_items,
            },
        ],
        actions: actions.clone(),
        api_usage: vec![API_USAGE.into()],
        report_path: Some(REPORT_PATH.into()),
        attachment,
        warnings: Vec::new(),
        scan_json: json!({
            "id": 42,
            "kind": "scan",
            "app_name": "shop",
            "started_at": "2026-12-04T10:00:00Z",
            "finished_at": "2026-12-04T10:00:07Z",
            "window": { "days": 7 },
            "stores": ["media"],
            "complete": true,
            "api_calls": { "media": 5 },
            "warnings": [],
            "report_path": REPORT_PATH,
        }),
        summary_json: json!({
            "objects_scanned": orphans + 120,
            "valid": 116,
            "orphans": orphans,
            "orphan_bytes": orphan_bytes,
            "too_recent": 4,
            "ignored": 0,
            "unparsed": 0,
            "references": 130,
            "missing": missing,
            "missing_active": active,
            "missing_deleted": deleted,
            "orphans_by_folder": [{ "folder": "media/", "count": orphans, "bytes": orphan_bytes }],
            "headline": headline,
            "actions": actions,
            "api_usage": [API_USAGE],
            "report_path": REPORT_PATH,
            "alert": alert_json,
        }),
    }
}
