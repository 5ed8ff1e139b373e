//! `/api/scans*` (SPEC §8): a scan started over the API and polled to its end, its orphans and
//! missing rows walked page by page by keyset cursor (filters, sorts both ways, bad input), its
//! CSV report rebuilt from the state database byte for byte, and purges of it — a preview, a
//! real one that queues, the mass-deletion guard's refusal as 409 — on SQLite and PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assetgc::state::{AuditLog as _, QueueStore as _};
use common::api::{Answer, Api, assert_error_shape};
use common::{StateBackend, StateDb, both_states, write_file};
use serde_json::{Value, json};

const DAY: Duration = Duration::from_secs(86_400);

/// The five orphans of [`Setup::story`], in the report's order, with their sizes.
const ORPHANS: [(&str, usize); 5] = [
    ("o/a.jpg", 1),
    ("o/b.png", 3),
    ("p/c.jpg", 2),
    ("p/d.gif", 5),
    ("q.txt", 4),
];

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    _state: StateDb,
}

impl Setup {
    /// Store `media` (a folder) with `valid` referenced objects, the `orphans` given, and rows
    /// naming `missing` keys that have no object: (key, status).
    fn new(
        backend: StateBackend,
        valid: usize,
        orphans: &[(String, usize)],
        missing: &[(&str, &str)],
    ) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let state = StateDb::create(backend, &dir);
        let media = dir.join("media");
        std::fs::create_dir_all(&media).expect("mkdir");
        let old = SystemTime::now() - 3 * DAY;
        let conn = rusqlite::Connection::open(dir.join("app.db")).expect("app db");
        conn.execute_batch(
            "CREATE TABLE rows (id integer PRIMARY KEY, key text, title text, status text)",
        )
        .expect("table");
        for i in 0..valid {
            let key = format!("v/{i:04}.jpg");
            write_file(&media, &key, b"x", old);
            conn.execute(
                "INSERT INTO rows (key, title, status) VALUES (?1, 'ok', 'ACTIVE')",
                [&key],
            )
            .expect("row");
        }
        for (key, size) in orphans {
            write_file(&media, key, &vec![b'o'; *size], old);
        }
        for (key, status) in missing {
            conn.execute(
                "INSERT INTO rows (key, title, status) VALUES (?1, 'gone', ?2)",
                [key, status],
            )
            .expect("row");
        }
        let config = dir.join("assetgc.toml");
        std::fs::write(
            &config,
            format!(
                "{}[server]\nrate_limit = false\n\n[databases.app]\nurl = \"sqlite://app.db\"\n\n[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\nquarantine = false\n\n[[references]]\nname = \"rows\"\nstore = \"media\"\nquery = \"SELECT id, key, title, status FROM rows\"\n",
                state.config_section()
            ),
        )
        .expect("config");
        Setup {
            _tmp: tmp,
            dir,
            config,
            _state: state,
        }
    }

    /// Five orphans, three valid objects, three missing rows (two ACTIVE, one DELETED).
    fn story(backend: StateBackend) -> Setup {
        let orphans: Vec<(String, usize)> = ORPHANS
            .iter()
            .map(|(k, n)| ((*k).to_string(), *n))
            .collect();
        Setup::new(
            backend,
            3,
            &orphans,
            &[
                ("gone/1.jpg", "ACTIVE"),
                ("gone/2.jpg", "DELETED"),
                ("gone/3.jpg", "active"),
            ],
        )
    }
}

/// Starts a scan over all time and polls it until it is no longer running; its id.
async fn scan(api: &Api, body: Value) -> (i64, Answer) {
    let started = api.post("/api/scans", body).await;
    assert_eq!(started.status, 202, "{started:?}");
    let id = started.json["scan_id"].as_i64().expect("scan_id");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = api.get(&format!("/api/scans/{id}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        if a.json["state"] != "running" {
            return (id, a);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scan {id} still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every page of `path` (which has its query) at `limit` a page: the items in order, checking
/// `total` on each page and that only the last page has no cursor.
async fn walk(api: &Api, path: &str, limit: u32) -> (Vec<Value>, u64) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let a = api.get(&url).await;
        assert_eq!(a.status, 200, "{url}: {a:?}");
        let page = a.json["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize, "{url}: {a:?}");
        let t = a.json["total"].as_u64().expect("total");
        assert_eq!(*total.get_or_insert(t), t, "total changes between pages");
        items.extend(page);
        match a.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (items, t),
        }
    }
    panic!("{path}: more than 100 pages");
}

fn want_order() -> Vec<&'static str> {
    ORPHANS.iter().map(|(k, _)| *k).collect()
}

fn keys(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["key"].as_str().expect("key"))
        .collect()
}

async fn a_scan_started_over_the_api_is_paged_reported_and_purged(backend: StateBackend) {
    let s = Setup::story(backend);
    let api = Api::open(&s.config).await;

    // Bad requests are refused before anything runs.
    for (body, why) in [
        (json!({"days": 3, "all": true}), "one of days"),
        (json!({"since": "2025-01-01", "days": 3}), "one of days"),
        (
            json!({"orphans_only": true, "missing_only": true}),
            "exclude",
        ),
        (json!({"stores": ["nope"]}), "no store named"),
        (json!({"since": "yesterday-ish"}), "not a date"),
        (json!({"days": "three"}), ""),
    ] {
        let a = api.post("/api/scans", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_error_shape(&a);
        assert!(
            a.json["error"].as_str().unwrap_or("").contains(why),
            "{a:?}"
        );
    }
    let read = api
        .call("POST", "/api/scans", Some(&api.read), Some(json!({})))
        .await;
    assert_eq!(read.status, 403, "{read:?}");

    let (id, detail) = scan(&api, json!({"all": true, "notify": true})).await;
    assert_eq!(detail.json["state"], "complete", "{detail:?}");
    assert_eq!(detail.json["scan"]["id"], id);
    assert_eq!(detail.json["scan"]["complete"], true);
    assert_eq!(detail.json["scan"]["window"], json!({"all": true}));
    assert_eq!(detail.json["scan"]["stores"], json!(["media"]));
    assert!(detail.json["scan"]["finished_at"].is_string());
    assert!(detail.json["scan"]["warnings"].is_array());
    assert!(detail.json["scan"]["api_calls"].is_object());
    assert_eq!(detail.json["summary"]["orphans"], 5);
    assert_eq!(detail.json["summary"]["objects_scanned"], 8);
    assert_eq!(detail.json["summary"]["missing"], 3);
    assert_eq!(detail.json["summary"]["missing_active"], 2);

    let list = api.get("/api/scans").await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.json["items"][0]["id"], id);
    assert_eq!(list.json["items"][0]["state"], "complete");
    assert_eq!(list.json["items"][0]["summary"]["orphans"], 5);
    assert!(list.json["next_cursor"].is_null());

    // Two at a time, the cursor walks every orphan once, in the report's order.
    let base = format!("/api/scans/{id}/orphans");
    let (all, total) = walk(&api, &base, 2).await;
    assert_eq!(total, 5);
    let want: Vec<&str> = ORPHANS.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys(&all), want);
    let first = &all[0];
    assert_eq!(first["store"], "media");
    assert_eq!(first["resource_type"], "");
    assert_eq!(first["size_bytes"], 1);
    assert_eq!(first["format"], "jpg");
    assert!(
        first["uploaded_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(first["size_mb"].is_number());
    for field in [
        "store",
        "key",
        "resource_type",
        "size_bytes",
        "size_mb",
        "format",
        "uploaded_at",
        "url",
    ] {
        assert!(
            first.get(field).is_some(),
            "orphan items carry {field}: {first}"
        );
    }

    // Filters, and the total follows them.
    let (p, total) = walk(&api, &format!("{base}?prefix=p/"), 1).await;
    assert_eq!((keys(&p), total), (vec!["p/c.jpg", "p/d.gif"], 2));
    let (m, total) = walk(&api, &format!("{base}?store=media&prefix=o/"), 1).await;
    assert_eq!((keys(&m), total), (vec!["o/a.jpg", "o/b.png"], 2));
    let (m, total) = walk(&api, &format!("{base}?store=media&prefix=p/&sort=-key"), 1).await;
    assert_eq!((keys(&m), total), (vec!["p/d.gif", "p/c.jpg"], 2));
    let (m, total) = walk(&api, &format!("{base}?store=media&sort=store"), 2).await;
    assert_eq!((keys(&m), total), (want_order(), 5));
    let (none, total) = walk(&api, &format!("{base}?store=elsewhere"), 2).await;
    assert_eq!((none.len(), total), (0, 0));

    // Sorts both ways, across pages.
    let sizes = |items: &[Value]| -> Vec<u64> {
        items
            .iter()
            .map(|i| i["size_bytes"].as_u64().expect("size"))
            .collect()
    };
    let (by_size, _) = walk(&api, &format!("{base}?sort=size_bytes"), 2).await;
    assert_eq!(sizes(&by_size), [1, 2, 3, 4, 5]);
    let (by_size_desc, _) = walk(&api, &format!("{base}?sort=-size_bytes"), 2).await;
    assert_eq!(sizes(&by_size_desc), [5, 4, 3, 2, 1]);
    let (by_key_desc, _) = walk(&api, &format!("{base}?sort=-key"), 2).await;
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(keys(&by_key_desc), rev);
    let (by_format, _) = walk(&api, &format!("{base}?sort=format&prefix=o/"), 1).await;
    assert_eq!(keys(&by_format), ["o/a.jpg", "o/b.png"]);
    let (by_time, total) = walk(&api, &format!("{base}?sort=-uploaded_at"), 2).await;
    assert_eq!((by_time.len(), total), (5, 5));

    // Bad input: 400 in the error shape.
    let page = api.get(&format!("{base}?sort=size_bytes&limit=2")).await;
    let cursor = page.json["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    for bad in [
        format!("{base}?sort=colour"),
        format!("{base}?sort=-nope"),
        format!("{base}?limit=1001"),
        format!("{base}?limit=0"),
        format!("{base}?limit=many"),
        format!("{base}?cursor=zz"),
        format!("{base}?cursor={cursor}"),
        format!("{base}?status=ACTIVE"),
        format!("/api/scans/{id}/missing?status=gone"),
        format!("/api/scans/{id}/missing?sort=size_bytes"),
    ] {
        let a = api.get(&bad).await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_error_shape(&a);
    }
    let max = api.get(&format!("{base}?limit=1000")).await;
    assert_eq!(max.status, 200, "{max:?}");

    // Missing rows: ACTIVE first, DELETED last; the status filter in any case.
    let (missing, total) = walk(&api, &format!("/api/scans/{id}/missing"), 2).await;
    assert_eq!(total, 3);
    let statuses: Vec<&str> = missing
        .iter()
        .map(|m| m["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses.last(), Some(&"DELETED"), "{missing:?}");
    assert!(
        missing.iter().all(|m| m["record_id"].is_string()),
        "{missing:?}"
    );
    assert_eq!(missing[0]["reference"], "rows");
    assert_eq!(missing[0]["title"], "gone");
    let (active, total) = walk(
        &api,
        &format!("/api/scans/{id}/missing?status=active&sort=-status"),
        1,
    )
    .await;
    assert_eq!(total, 2);
    assert!(active.iter().all(|m| m["status"] == "ACTIVE"), "{active:?}");
    let (deleted, total) = walk(&api, &format!("/api/scans/{id}/missing?status=DELETED"), 10).await;
    assert_eq!((keys(&deleted), total), (vec!["gone/2.jpg"], 1));
    let (of_media, total) = walk(
        &api,
        &format!("/api/scans/{id}/missing?store=media&sort=-key"),
        2,
    )
    .await;
    assert_eq!(
        (keys(&of_media), total),
        (vec!["gone/3.jpg", "gone/2.jpg", "gone/1.jpg"], 3)
    );

    // The CSV report from the state database: the bytes the scan wrote to [reports] dir.
    let csv = api.get(&format!("/api/scans/{id}/report.csv")).await;
    assert_eq!(csv.status, 200, "{csv:?}");
    assert!(
        csv.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv")),
        "{csv:?}"
    );
    let written = report_file(&s.dir.join("reports"));
    assert_eq!(csv.text, written, "report.csv is the scan's own report");
    let (orphan_section, missing_section) = csv
        .text
        .split_once("\n\n\n")
        .expect("two sections, two empty lines between");
    let lines: Vec<&str> = orphan_section.lines().collect();
    assert_eq!(lines[0], "ORPHANED FILES");
    assert_eq!(
        lines[1],
        "store,key,resource_type,size_bytes,size_mb,format,uploaded_at,url"
    );
    assert_eq!(lines.len(), 2 + 5);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(missing_section.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("csv")).collect();
    assert_eq!(&rows[0][0], "RECORDS WITH MISSING FILES");
    assert_eq!(
        rows[1].iter().collect::<Vec<_>>(),
        [
            "reference",
            "record_id",
            "title",
            "owner",
            "media_type",
            "key",
            "created_at",
            "status",
            "link"
        ]
    );
    assert_eq!(rows.len(), 2 + 3);

    // Purge: a preview by default, then a real one that queues.
    let before = api.get("/api/cleanup/stats").await;
    assert_eq!(before.json["stats"]["total_pending"], 0, "{before:?}");
    let dry = api
        .post(
            &format!("/api/scans/{id}/purge"),
            json!({"keys": ["o/a.jpg", "o/b.png", "v/0001.jpg", "nope.jpg"]}),
        )
        .await;
    assert_eq!(dry.status, 200, "{dry:?}");
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["count"], 2, "{dry:?}");
    assert_eq!(dry.json["bytes"], 4);
    assert_eq!(
        dry.json["skipped"], 2,
        "a valid key and an unknown one: {dry:?}"
    );
    assert_eq!(
        keys(dry.json["first_keys"].as_array().expect("first_keys")),
        ["o/a.jpg", "o/b.png"]
    );
    assert_eq!(dry.json["per_store"][0]["store"], "media");
    let dry_filter = api
        .post(
            &format!("/api/scans/{id}/purge"),
            json!({"filter": {"store": "media", "prefix": "p/"}, "dry_run": true}),
        )
        .await;
    assert_eq!(dry_filter.status, 200, "{dry_filter:?}");
    assert_eq!(dry_filter.json["count"], 2);
    assert_eq!(dry_filter.json["bytes"], 7);
    let still = api.get("/api/cleanup/stats").await;
    assert_eq!(
        still.json["stats"]["total_pending"], 0,
        "a dry run queues nothing"
    );

    let read = api
        .call(
            "POST",
            &format!("/api/scans/{id}/purge"),
            Some(&api.read),
            Some(json!({"dry_run": false})),
        )
        .await;
    assert_eq!(read.status, 403, "{read:?}");
    let unknown_store = api
        .post(
            &format!("/api/scans/{id}/purge"),
            json!({"filter": {"store": "nope"}}),
        )
        .await;
    assert_eq!(unknown_store.status, 400, "{unknown_store:?}");
    let empty = api
        .post(&format!("/api/scans/{id}/purge"), json!({"keys": []}))
        .await;
    assert_eq!(empty.status, 400, "{empty:?}");

    let real = api
        .post(
            &format!("/api/scans/{id}/purge"),
            json!({"keys": ["o/a.jpg", "p/d.gif", "nope.jpg"], "dry_run": false}),
        )
        .await;
    assert_eq!(real.status, 202, "{real:?}");
    assert_eq!(real.json["queued"], 2, "{real:?}");
    assert_eq!(real.json["skipped"], 1, "{real:?}");
    let after = api.get("/api/cleanup/stats").await;
    assert_eq!(after.json["stats"]["total_pending"], 2, "{after:?}");
    let entries = api.app.state.queue_list(false, 10).await.expect("queue");
    let mut queued: Vec<&str> = entries.iter().map(|e| e.object.key.as_str()).collect();
    queued.sort_unstable();
    assert_eq!(queued, ["o/a.jpg", "p/d.gif"]);

    // An unknown scan is 404 everywhere.
    for path in [
        "/api/scans/999".to_string(),
        "/api/scans/999/orphans".to_string(),
        "/api/scans/999/missing?limit=5".to_string(),
        "/api/scans/999/report.csv".to_string(),
    ] {
        let a = api.get(&path).await;
        assert_eq!(a.status, 404, "{path}: {a:?}");
        assert_error_shape(&a);
    }
    let a = api.post("/api/scans/999/purge", json!({})).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_error_shape(&a);
    api.close().await;
}

both_states!(async a_scan_started_over_the_api_is_paged_reported_and_purged);

/// The one report the scan wrote into `dir`.
fn report_file(dir: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reports dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).expect("report")
}

async fn the_guard_refuses_a_purge_over_the_api_with_409(backend: StateBackend) {
    // 80 orphans of 120 objects scanned: past max_orphan_share (0.5) from 100 objects.
    let orphans: Vec<(String, usize)> = (0..80).map(|i| (format!("bulk/{i:03}.jpg"), 1)).collect();
    let s = Setup::new(backend, 40, &orphans, &[]);
    let api = Api::open(&s.config).await;
    let (id, detail) = scan(&api, json!({"all": true})).await;
    assert_eq!(detail.json["state"], "complete", "{detail:?}");
    let path = format!("/api/scans/{id}/purge");
    for body in [
        json!({}),
        json!({"dry_run": false}),
        json!({"keys": ["bulk/000.jpg"], "dry_run": false}),
    ] {
        let a = api.post(&path, body.clone()).await;
        assert_eq!(a.status, 409, "{body}: {a:?}");
        assert_error_shape(&a);
        assert!(
            a.json["error"]
                .as_str()
                .is_some_and(|e| e.contains("max_orphan_share")),
            "{a:?}"
        );
    }
    let stats = api.get("/api/cleanup/stats").await;
    assert_eq!(
        stats.json["stats"]["total_pending"], 0,
        "a refusal queues nothing"
    );
    // The override is the caller's to give, per request.
    let preview = api.post(&path, json!({"allow_mass_delete": true})).await;
    assert_eq!(preview.status, 200, "{preview:?}");
    assert_eq!(preview.json["count"], 80);
    assert_eq!(
        preview.json["first_keys"].as_array().map(Vec::len),
        Some(20)
    );
    assert!(
        preview.json["overridden"][0]
            .as_str()
            .is_some_and(|r| r.contains("max_orphan_share")),
        "{preview:?}"
    );
    let real = api
        .post(&path, json!({"allow_mass_delete": true, "dry_run": false}))
        .await;
    assert_eq!(real.status, 202, "{real:?}");
    assert_eq!(real.json["queued"], 80);
    let audit = api.app.state.audit_log(10, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|r| r.outcome == "mass_delete_override" && r.actor == "token:writer"),
        "{audit:?}"
    );
    api.close().await;
}

both_states!(async the_guard_refuses_a_purge_over_the_api_with_409);

#[tokio::test]
async fn a_scan_that_fails_ends_failed_and_cannot_be_purged() {
    let s = Setup::new(StateBackend::Sqlite, 1, &[], &[]);
    // Every store out of reach: the scan is recorded, then fails.
    std::fs::remove_dir_all(s.dir.join("media")).expect("rm media");
    let api = Api::open(&s.config).await;
    let (id, detail) = scan(&api, json!({})).await;
    assert_eq!(detail.json["state"], "failed", "{detail:?}");
    assert_eq!(detail.json["scan"]["complete"], false);
    assert!(detail.json["summary"].is_null(), "{detail:?}");
    assert_eq!(detail.json["scan"]["window"], json!({"days": 30}));
    let purge = api.post(&format!("/api/scans/{id}/purge"), json!({})).await;
    assert_eq!(purge.status, 409, "{purge:?}");
    assert_error_shape(&purge);
    let csv = api.get(&format!("/api/scans/{id}/report.csv")).await;
    assert_eq!(csv.status, 409, "{csv:?}");
    let orphans = api.get(&format!("/api/scans/{id}/orphans")).await;
    assert_eq!(orphans.status, 200, "{orphans:?}");
    assert_eq!(orphans.json["total"], 0);
    api.close().await;
}

#[tokio::test]
async fn scans_are_listed_newest_first_page_by_page() {
    let s = Setup::story(StateBackend::Sqlite);
    let api = Api::open(&s.config).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(scan(&api, json!({"days": 7, "orphans_only": true})).await.0);
    }
    ids.reverse();
    let (items, total) = walk(&api, "/api/scans", 2).await;
    assert_eq!(total, 3);
    let got: Vec<i64> = items
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, ids);
    assert_eq!(items[0]["mode"], "orphans");
    assert_eq!(items[0]["window"], json!({"days": 7}));
    let bad = api.get("/api/scans?cursor=nothex").await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let doc = api.call("GET", "/api/openapi.json", None, None).await;
    for path in [
        "/api/scans",
        "/api/scans/{id}",
        "/api/scans/{id}/orphans",
        "/api/scans/{id}/missing",
        "/api/scans/{id}/report.csv",
        "/api/scans/{id}/purge",
    ] {
        assert!(doc.json["paths"][path].is_object(), "{path} is described");
    }
    assert!(
        doc.json["paths"]["/api/scans/{id}/purge"]["post"]["responses"]["409"].is_object(),
        "the guard's refusal is described"
    );
    api.close().await;
}

#[tokio::test]
async fn pages_of_a_scan_of_two_stores_walk_both_in_the_report_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let old = SystemTime::now() - 3 * DAY;
    for (store, keys) in [("a", ["x/2.jpg", "y/1.jpg"]), ("b", ["x/1.jpg", "z/3.jpg"])] {
        for k in keys {
            write_file(&dir.join(store), k, b"ab", old);
        }
    }
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        "[server]\nrate_limit = false\n\n[stores.a]\nurl = \"./a\"\nmin_age = \"1h\"\n\n[stores.b]\nurl = \"./b\"\nmin_age = \"1h\"\n",
    )
    .expect("config");
    let api = Api::open(&config).await;
    let (id, detail) = scan(&api, json!({"all": true})).await;
    assert_eq!(detail.json["summary"]["orphans"], 4, "{detail:?}");
    let base = format!("/api/scans/{id}/orphans");
    let both = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| {
                format!(
                    "{}:{}",
                    i["store"].as_str().unwrap_or(""),
                    i["key"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let (all, total) = walk(&api, &base, 1).await;
    assert_eq!(total, 4);
    assert_eq!(
        both(&all),
        ["a:x/2.jpg", "a:y/1.jpg", "b:x/1.jpg", "b:z/3.jpg"]
    );
    let (by_key, _) = walk(&api, &format!("{base}?sort=-key"), 1).await;
    assert_eq!(
        both(&by_key),
        ["b:z/3.jpg", "a:y/1.jpg", "a:x/2.jpg", "b:x/1.jpg"]
    );
    let (x, total) = walk(&api, &format!("{base}?prefix=x/"), 1).await;
    assert_eq!(
        (both(&x), total),
        (vec!["a:x/2.jpg".to_string(), "b:x/1.jpg".to_string()], 2)
    );
    let (b, total) = walk(&api, &format!("{base}?store=b&sort=-size_bytes"), 1).await;
    assert_eq!(
        (both(&b), total),
        (vec!["b:z/3.jpg".to_string(), "b:x/1.jpg".to_string()], 2)
    );
    let csv = api.get(&format!("/api/scans/{id}/report.csv")).await;
    assert_eq!(csv.text, report_file(&dir.join("reports")));
    api.close().await;
}
