//! The operations as a library: one `App`, typed requests and results, nothing printed, and the
//! events they announce (what notifications and the API will consume). A folder store and a
//! SQLite app database, the same real parts the binary uses.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use assetgc::app::App;
use assetgc::domain::event::{Event, Guard};
use assetgc::domain::queue::QueueState;
use assetgc::domain::scan::{ScanMode, ScanState, Window};
use assetgc::ops::purge::{self, PurgeRequest, Source};
use assetgc::ops::scan::{self, ScanRequest};
use assetgc::queue::{self, RunOptions};
use assetgc::state::{AuditLog as _, QueueStore as _, ScanLog as _};
use common::write_file;

const DAY: Duration = Duration::from_secs(86_400);

/// `posts/p1..p5.jpg` referenced, `tmp/o01..o10.jpg` orphans, all three days old.
fn app_dir(dir: &Path, extra: &str) -> PathBuf {
    let media = dir.join("media");
    let three_days = SystemTime::now() - 3 * DAY;
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("app db");
    conn.execute_batch("CREATE TABLE posts (id integer PRIMARY KEY, image text)")
        .expect("schema");
    for i in 1..=5 {
        let key = format!("posts/p{i}.jpg");
        write_file(&media, &key, key.as_bytes(), three_days);
        conn.execute(
            "INSERT INTO posts (id, image) VALUES (?1, ?2)",
            rusqlite::params![i, key],
        )
        .expect("row");
    }
    for i in 1..=10 {
        let key = format!("tmp/o{i:02}.jpg");
        write_file(&media, &key, key.as_bytes(), three_days);
    }
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[stores.media]
url = "./media"
min_age = "1h"
{extra}

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "post images"
query = "SELECT id, image AS key FROM posts"
"#
        ),
    )
    .expect("config");
    config
}

async fn open(config: &Path) -> Arc<App> {
    let cfg = assetgc::config::load(Some(config))
        .expect("config")
        .expect("a config file");
    App::open(cfg).await.expect("app")
}

fn scan_all() -> ScanRequest {
    ScanRequest {
        window: Window::All,
        mode: ScanMode::Both,
        stores: Vec::new(),
        report: None,
        progress: None,
    }
}

fn latest() -> PurgeRequest {
    PurgeRequest {
        source: Source::Latest,
        older_than: None,
        stores: Vec::new(),
        prefix: None,
    }
}

/// Every event published so far.
fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_a_purge_plan_and_a_queue_run_return_typed_results_and_announce_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = app_dir(tmp.path(), "quarantine = false");
    let app = open(&config).await;
    let mut events = app.events();

    let out = scan::run(&app, scan_all()).await.expect("scan");
    assert_eq!(out.findings.orphans.len(), 10);
    assert!(out.findings.complete);
    assert!(out.report_path.is_none(), "no report was asked for");
    let recorded = app
        .state
        .scan(out.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(recorded.state, ScanState::Complete);
    assert_eq!(recorded.store_counts("media"), Some((15, 10)));
    assert!(matches!(
        drain(&mut events).as_slice(),
        [Event::ScanFinished { scan_id, complete: true, summary, .. }]
            if *scan_id == out.id && summary.orphans == 10
    ));

    // The plan changes nothing; 10 of 15 objects orphaned is more than max_orphan_share would
    // allow only from 100 objects on, so nothing refuses.
    let plan = purge::plan(&app, &latest()).await.expect("plan");
    assert_eq!(plan.total().count, 10);
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert_eq!(plan.held().count(), 0, "three days old, min_age 1h");
    assert_eq!(
        app.state.queue_stats().await.expect("stats").total_pending,
        0
    );

    let done = purge::enqueue(&app, &plan, false, "test")
        .await
        .expect("enqueue");
    assert_eq!((done.added, done.already_queued, done.held), (10, 0, 0));
    let opts = RunOptions::from_config(&app.cfg, "test");
    let totals = queue::run(&app, &opts, &|_| {}).await.expect("run");
    assert_eq!((totals.claimed, totals.deleted), (10, 10));
    assert!(!tmp.path().join("media/tmp/o01.jpg").exists());
    assert!(tmp.path().join("media/posts/p1.jpg").exists());
    let seen = drain(&mut events);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::PurgeQueued { added: 10, .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::QueueRunFinished { deleted: 10, .. })),
        "{seen:?}"
    );
    let audit = app
        .state
        .audit_log(100, Some("tmp/o01.jpg"))
        .await
        .expect("audit");
    assert_eq!(audit[0].outcome, "deleted");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plan_is_refused_again_at_enqueue_and_announced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = app_dir(tmp.path(), "");
    // 200 more orphans: 210 of 215 objects, far past max_orphan_share.
    let media = tmp.path().join("media");
    for i in 0..200 {
        write_file(
            &media,
            &format!("junk/{i:03}.bin"),
            b"x",
            SystemTime::now() - 3 * DAY,
        );
    }
    let app = open(&config).await;
    scan::run(&app, scan_all()).await.expect("scan");
    let mut events = app.events();
    let plan = purge::plan(&app, &latest()).await.expect("plan");
    assert_eq!(plan.refusals.len(), 1);
    assert_eq!(plan.refusals[0].guard, Guard::OrphanShare);
    let refused = purge::enqueue(&app, &plan, false, "test").await;
    assert!(matches!(refused, Err(assetgc::Error::Refused(_))));
    assert_eq!(refused.err().map(|e| e.http_status()), Some(409));
    assert!(matches!(
        drain(&mut events).as_slice(),
        [Event::PurgeRefused { guard: Guard::OrphanShare, store, .. }] if store == "media"
    ));
    assert_eq!(
        app.state.queue_stats().await.expect("stats").total_pending,
        0
    );

    // The override goes through, is audited and announced.
    let done = purge::enqueue(&app, &plan, true, "test")
        .await
        .expect("override");
    assert_eq!(done.added, 210);
    let audit = app.state.audit_log(10, None).await.expect("audit");
    assert!(
        audit.iter().any(|a| a.outcome == "mass_delete_override"),
        "{audit:?}"
    );
    assert!(
        drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::PurgeOverridden { .. }))
    );
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deletion_is_announced_and_retried_later() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = app_dir(tmp.path(), "quarantine = false");
    // A folder where a file should be: the delete fails, and trying later may work.
    std::fs::create_dir_all(tmp.path().join("media/tmp/dir.jpg/inner")).expect("dir");
    let app = open(&config).await;
    let mut events = app.events();
    let (added, _) = assetgc::ops::queue::add(
        &app,
        "media",
        None,
        &["tmp/dir.jpg".to_string()],
        "",
        "test",
    )
    .await
    .expect("add");
    assert_eq!(added, 1);
    let opts = RunOptions::from_config(&app.cfg, "test");
    let totals = queue::run(&app, &opts, &|_| {}).await.expect("run");
    assert_eq!((totals.retrying, totals.failed), (1, 0));
    let seen = drain(&mut events);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::DeletionFailed { object, gave_up: false, .. } if object.key == "tmp/dir.jpg"
        )),
        "{seen:?}"
    );
    let pending = app.state.queue_list(false, 10).await.expect("list");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, QueueState::Pending);
    assert_eq!(pending[0].attempts, 1);
    assert!(
        pending[0].next_attempt_at > chrono::Utc::now(),
        "held for the backoff"
    );
    app.close().await;
}
