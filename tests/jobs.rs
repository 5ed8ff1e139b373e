//! The scheduler of `[[jobs]]` (SPEC §8) with real child processes of the assetgc binary: history
//! with the scan and its report, no overlap of one job's runs (in one process, across instances
//! on one PostgreSQL state, and against a run asked for through the API), timeouts, one
//! catch-up run after missed windows, shutdown in the middle of a run, and `jobs export` read
//! back by other parsers.
//!
//! A slow job is a real one: `scan --all` whose reference query is a recursive CTE counting to
//! two billion in SQLite — minutes of work — so it only ends when it is stopped.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assetgc::app::App;
use assetgc::server::AppState;
use common::api::{Api, assert_error_shape, test_options};
use common::{StateBackend, StateDb, StateRow};

const SLOW_QUERY: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT 'kept.txt' AS key FROM c WHERE x = 2000000000";
const FAST_QUERY: &str = "SELECT 'kept.txt' AS key";

/// A folder store with one kept and one orphaned file, a SQLite reference database whose
/// query is `query`, the state section of `state`, and `jobs` (TOML) after them.
fn setup(dir: &Path, state: &StateDb, query: &str, jobs: &str) -> PathBuf {
    let old = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
    common::write_file(&dir.join("media"), "kept.txt", b"kept", old);
    common::write_file(&dir.join("media"), "orphan.txt", b"orphan", old);
    let db = rusqlite::Connection::open(dir.join("app.db")).expect("app.db");
    db.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        .expect("table");
    drop(db);
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            "{state}[stores.media]\nurl = \"./media\"\n\n[databases.app]\nurl = \"sqlite://app.db\"\n\n[[references]]\nname = \"files\"\ndatabase = \"app\"\nquery = \"{query}\"\n\n{jobs}",
            state = state.config_section(),
        ),
    )
    .expect("config");
    path
}

fn job(name: &str, schedule: &str, command: &str, timeout: &str) -> String {
    format!(
        "[[jobs]]\nname = \"{name}\"\nschedule = \"{schedule}\"\ncommand = \"{command}\"\ntimeout = \"{timeout}\"\n\n"
    )
}

/// A server's state with the scheduler running, as `serve` runs it (no HTTP needed).
struct Instance {
    state: AppState,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(config: &Path) -> Instance {
        let cfg = assetgc::config::load(Some(config))
            .expect("config loads")
            .expect("config exists");
        let app = App::open(cfg).await.expect("app opens");
        let state = AppState::new(Arc::clone(&app), test_options());
        let scheduler = tokio::spawn(assetgc::jobs::run_scheduler(state.clone()));
        Instance { state, scheduler }
    }

    async fn stop(self) {
        self.state.shutdown.cancel();
        self.scheduler.await.expect("the scheduler ends");
        self.state.tasks.close();
        self.state.tasks.wait().await;
        self.state.app.close().await;
    }
}

/// A run as the test reads it back: (id, job, scheduled_for, trigger, started_at, finished_at,
/// status, summary, scan_id, report_path, report, output).
fn runs(state: &StateDb, job: &str) -> Vec<StateRow> {
    state.query(
        "SELECT id, job, scheduled_for, trigger, started_at, finished_at, status, summary, scan_id, report_path, report, output FROM job_runs WHERE job = $1 ORDER BY id",
        &[job],
    )
}

fn col(r: &StateRow, i: usize) -> &str {
    r[i].as_deref().unwrap_or("")
}

/// Polls `f` every 200 ms until it holds or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {what}, in vain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No two runs' [start, end] overlap (times are whole seconds: a run may start in the second
/// the previous one ended).
fn assert_no_overlap(rows: &[StateRow]) {
    let mut spans: Vec<(String, String)> = rows
        .iter()
        .map(|r| (col(r, 4).to_string(), col(r, 5).to_string()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            !w[0].1.is_empty() && w[1].0 >= w[0].1,
            "two runs overlap: {:?} and {:?} (all: {rows:?})",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_runs_keep_history_with_their_scan_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        FAST_QUERY,
        &job("detect", "*/1 * * * * *", "scan --all", "1m"),
    );
    let inst = Instance::start(&config).await;
    wait_for("two finished runs", Duration::from_secs(60), || {
        runs(&state, "detect")
            .iter()
            .filter(|r| col(r, 6) == "succeeded")
            .count()
            >= 2
    })
    .await;
    inst.stop().await;
    let rows = runs(&state, "detect");
    assert_no_overlap(&rows);
    for r in rows.iter().filter(|r| col(r, 6) == "succeeded") {
        assert_eq!(col(r, 3), "schedule");
        assert!(col(r, 7).starts_with("exit 0: success"), "{r:?}");
        let scan_id = col(r, 8);
        assert!(!scan_id.is_empty(), "the run names its scan: {r:?}");
        // The scan names the run too.
        assert_eq!(
            state.count(
                "SELECT COUNT(*) FROM scans WHERE id = CAST($1 AS INTEGER) AND job_run_id = CAST($2 AS INTEGER)",
                &[scan_id, col(r, 0)]
            ),
            1
        );
        let report_path = col(r, 9);
        let on_disk = std::fs::read_to_string(report_path).expect("the report file");
        assert_eq!(col(r, 10), on_disk, "the run keeps the report's content");
        assert!(on_disk.contains("orphan.txt"), "{on_disk}");
        assert!(col(r, 11).contains("orphan.txt"), "the output is kept");
    }
    // The API serves the kept report back as the scan wrote it, and pages the history.
    let api = Api::open(&config).await;
    let page = api.get("/api/jobs/detect/runs?limit=1").await;
    assert_eq!(page.status, 200, "{page:?}");
    let total = page.json["total"].as_u64().unwrap();
    assert_eq!(total, u64::try_from(rows.len()).unwrap());
    let newest = &page.json["items"][0];
    let cursor = page.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let next = api
        .get(&format!("/api/jobs/detect/runs?limit=1&cursor={cursor}"))
        .await;
    assert!(next.json["items"][0]["id"].as_i64() < newest["id"].as_i64());
    let done = rows.iter().find(|r| col(r, 6) == "succeeded").unwrap();
    let report = api
        .get(&format!("/api/jobs/detect/runs/{}/report", col(done, 0)))
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.text, col(done, 10));
    let none = api.get("/api/jobs/detect/runs/999999/report").await;
    assert_eq!(none.status, 404);
    assert_error_shape(&none);
    api.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_job_never_overlaps_itself_and_is_stopped_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        SLOW_QUERY,
        &job("slow", "*/1 * * * * *", "scan --all", "3s"),
    );
    let inst = Instance::start(&config).await;
    wait_for(
        "two runs stopped at their timeout",
        Duration::from_secs(60),
        || {
            runs(&state, "slow")
                .iter()
                .filter(|r| col(r, 7).starts_with("timed out after 3s"))
                .count()
                >= 2
        },
    )
    .await;
    inst.stop().await;
    let rows = runs(&state, "slow");
    assert_no_overlap(&rows);
    for r in &rows {
        assert_eq!(col(r, 6), "failed", "{r:?}");
        assert!(
            col(r, 7).starts_with("timed out after 3s")
                || col(r, 7) == "stopped: the server shut down",
            "{r:?}"
        );
    }
    // Windows passed while each run went on (one a second, runs of 3 s) and were skipped.
    let first = chrono::DateTime::parse_from_rfc3339(col(&rows[0], 2)).unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(col(rows.last().unwrap(), 2)).unwrap();
    let windows = (last - first).num_seconds() + 1;
    assert!(
        i64::try_from(rows.len()).unwrap() < windows,
        "{} runs for {windows} windows",
        rows.len()
    );
    assert_eq!(state.count("SELECT COUNT(*) FROM job_leases", &[]), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_window_runs_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        FAST_QUERY,
        &job("tick", "*/2 * * * * *", "check", "1m"),
    );
    let inst = Instance::start(&config).await;
    wait_for("a scheduled run", Duration::from_secs(60), || {
        runs(&state, "tick")
            .iter()
            .any(|r| col(r, 6) == "succeeded")
    })
    .await;
    inst.stop().await;
    let before = runs(&state, "tick");
    assert!(
        before.iter().all(|r| col(r, 3) == "schedule"),
        "no history at first: nothing to catch up: {before:?}"
    );
    // Several windows pass with no server.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let inst = Instance::start(&config).await;
    wait_for("the catch-up run", Duration::from_secs(60), || {
        runs(&state, "tick")
            .iter()
            .any(|r| col(r, 3) == "catch_up" && col(r, 6) != "running")
    })
    .await;
    // A few more windows on the schedule.
    tokio::time::sleep(Duration::from_secs(3)).await;
    inst.stop().await;
    let after = runs(&state, "tick");
    let catch_up: Vec<&StateRow> = after.iter().filter(|r| col(r, 3) == "catch_up").collect();
    assert_eq!(catch_up.len(), 1, "exactly one catch-up run: {after:?}");
    let last_before = before.iter().map(|r| col(r, 2)).max().unwrap();
    assert!(
        col(catch_up[0], 2) > last_before,
        "the catch-up run is for a later window than the last run: {after:?}"
    );
    assert_no_overlap(&after);
}

#[test]
fn two_instances_on_postgres_never_run_one_window_twice() {
    if !StateBackend::Postgres.available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Postgres, dir.path());
    let config = setup(
        dir.path(),
        &state,
        SLOW_QUERY,
        &format!(
            "{}{}",
            job("slow", "*/1 * * * * *", "scan --all", "2s"),
            job("quick", "*/1 * * * * *", "queue stats", "1m")
        ),
    );
    common::block_on(async {
        let a = Instance::start(&config).await;
        let b = Instance::start(&config).await;
        wait_for("runs of both jobs", Duration::from_secs(90), || {
            runs(&state, "slow")
                .iter()
                .filter(|r| col(r, 6) == "failed")
                .count()
                >= 3
                && runs(&state, "quick")
                    .iter()
                    .filter(|r| col(r, 6) == "succeeded")
                    .count()
                    >= 4
        })
        .await;
        a.stop().await;
        b.stop().await;
    });
    for name in ["slow", "quick"] {
        let rows = runs(&state, name);
        let mut windows: Vec<&str> = rows.iter().map(|r| col(r, 2)).collect();
        let n = windows.len();
        windows.sort_unstable();
        windows.dedup();
        assert_eq!(windows.len(), n, "a window ran twice: {rows:?}");
        assert_no_overlap(&rows);
    }
    assert_eq!(
        state.count(
            "SELECT COUNT(*) FROM job_runs WHERE status = 'running'",
            &[]
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_run_answers_202_then_409_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        SLOW_QUERY,
        &format!(
            "{}{}",
            job("slow", "0 0 1 1 *", "scan --all", "10m"),
            job("quick", "0 0 1 1 *", "queue stats", "1m")
        ),
    );
    let api = Api::open(&config).await;
    let a = api.post("/api/jobs/slow/run", serde_json::json!({})).await;
    assert_eq!(a.status, 202, "{a:?}");
    let run_id = a.json["run_id"].as_i64().expect("run_id");
    let again = api.post("/api/jobs/slow/run", serde_json::json!({})).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_error_shape(&again);
    // `jobs run` from another process meets the same lease.
    let cli = common::assetgc(&config, &["jobs", "run", "slow"]);
    assert_eq!(cli.code, 2, "{cli:?}");
    assert!(cli.stderr.contains("running already"), "{cli:?}");
    let nope = api.post("/api/jobs/nope/run", serde_json::json!({})).await;
    assert_eq!(nope.status, 404);
    assert_error_shape(&nope);
    let read_only = api
        .call("POST", "/api/jobs/slow/run", Some(&api.read.clone()), None)
        .await;
    assert_eq!(read_only.status, 403);

    let list = api.get("/api/jobs").await;
    assert_eq!(list.status, 200, "{list:?}");
    let slow = list.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "slow")
        .expect("the slow job")
        .clone();
    assert_eq!(slow["running"], true, "{slow}");
    assert_eq!(slow["last_run"]["id"], run_id);
    assert_eq!(slow["last_run"]["status"], "running");
    assert_eq!(slow["schedule"], "0 0 1 1 *");
    assert_eq!(slow["tz"], "UTC");
    assert_eq!(slow["timeout"], "10m");
    assert!(
        slow["next_run"]
            .as_str()
            .unwrap()
            .ends_with("-01-01T00:00:00Z")
    );

    // Another job runs meanwhile, to its end, with its output in the history.
    let q = api.post("/api/jobs/quick/run", serde_json::json!({})).await;
    assert_eq!(q.status, 202, "{q:?}");
    let quick_id = q.json["run_id"].as_i64().unwrap();
    let start = Instant::now();
    loop {
        let page = api.get("/api/jobs/quick/runs?limit=10").await;
        assert_eq!(page.status, 200, "{page:?}");
        let item = &page.json["items"][0];
        assert_eq!(item["id"], quick_id);
        if item["status"] != "running" {
            assert_eq!(item["status"], "succeeded", "{item}");
            assert_eq!(item["trigger"], "manual");
            assert!(item["output"].as_str().is_some(), "{item}");
            assert_eq!(page.json["total"], 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{page:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bad = api.get("/api/jobs/quick/runs?limit=0").await;
    assert_eq!(bad.status, 400);
    assert_eq!(api.get("/api/jobs/nope/runs").await.status, 404);

    let doc = api.get("/api/openapi.json").await.json;
    let paths = &doc["paths"];
    for (path, method, statuses) in [
        ("/api/jobs", "get", &["200", "401", "429"][..]),
        (
            "/api/jobs/{name}/run",
            "post",
            &["202", "401", "403", "404", "409", "429"][..],
        ),
        ("/api/jobs/{name}/runs", "get", &["200", "400", "404"][..]),
        (
            "/api/jobs/{name}/runs/{id}/report",
            "get",
            &["200", "404"][..],
        ),
    ] {
        for status in statuses {
            assert!(
                paths[path][method]["responses"][status].is_object(),
                "{method} {path} documents {status}: {}",
                paths[path]
            );
        }
    }

    // Shutting down stops the slow run and records it.
    api.close().await;
    let rows = runs(&state, "slow");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(col(&rows[0], 6), "failed");
    assert_eq!(col(&rows[0], 7), "stopped: the server shut down");
    assert_eq!(state.count("SELECT COUNT(*) FROM job_leases", &[]), 0);
}

#[test]
fn jobs_run_prints_the_output_and_exits_with_the_childs_code() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        FAST_QUERY,
        &format!(
            "{}{}",
            job("strict", "0 4 * * *", "scan --all --fail-on-findings", "1m"),
            job("slow", "0 4 * * *", "scan --all", "2s"),
        ),
    );
    let r = common::assetgc(&config, &["jobs", "run", "strict"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("orphan.txt"), "{r:?}");
    let rows = runs(&state, "strict");
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&rows[0], 3), "manual");
    assert_eq!(col(&rows[0], 6), "succeeded");
    assert!(col(&rows[0], 7).starts_with("exit 3"), "{rows:?}");
    assert!(
        col(&rows[0], 10).contains("orphan.txt"),
        "the report is kept"
    );

    let nope = common::assetgc(&config, &["jobs", "run", "nope"]);
    assert_eq!(nope.code, 2);
    assert_eq!(nope.stderr.trim().lines().count(), 1, "{nope:?}");
    assert!(nope.stderr.contains("no job named `nope`"), "{nope:?}");

    let list = common::assetgc(&config, &["jobs", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v[0]["name"], "strict");
    assert_eq!(v[0]["last_run"]["status"], "succeeded");
    assert_eq!(v[1]["last_run"], serde_json::Value::Null);
    let table = common::assetgc(&config, &["jobs", "list"]);
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert!(table.stdout.contains("0 4 * * * (UTC)"), "{table:?}");
}

/// The processes of a job run: their environment names the run and their command line the
/// test's config (run ids of other tests' state databases are the same numbers).
fn processes_of_run(run_id: &str, config: &Path) -> Vec<String> {
    let want = format!("ASSETGC_JOB_RUN={run_id}");
    let config = std::fs::canonicalize(config).unwrap();
    let config = config.to_str().unwrap().as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|b| *b == 0).any(|v| v == want.as_bytes())
            && std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|v| v == config))
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_run_past_its_timeout_is_killed_and_recorded_failed() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        SLOW_QUERY,
        &job("slow", "0 4 * * *", "scan --all", "2s"),
    );
    let r = common::assetgc(&config, &["jobs", "run", "slow"]);
    assert_eq!(r.code, 4, "{r:?}");
    let rows = runs(&state, "slow");
    assert_eq!(col(&rows[0], 6), "failed");
    assert!(
        col(&rows[0], 7).starts_with("timed out after 2s"),
        "{rows:?}"
    );
    assert!(processes_of_run(col(&rows[0], 0), &config).is_empty());
    assert_eq!(state.count("SELECT COUNT(*) FROM job_leases", &[]), 0);
    // The scan the stopped command left unfinished is recorded failed, not `running` for good.
    assert_eq!(
        state.count("SELECT COUNT(*) FROM scans WHERE state = 'running'", &[]),
        0
    );
    assert_eq!(
        state.count("SELECT COUNT(*) FROM scans WHERE state = 'failed'", &[]),
        1
    );
}

/// A `serve` process; a test that fails before stopping it stops it on the way out, so that its
/// job's child does not outlive the test.
struct Serve(std::process::Child);

impl Serve {
    fn term(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.0.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.0.wait().expect("serve ends")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.term();
        }
    }
}

#[test]
fn sigterm_to_serve_during_a_run_records_it_failed_and_nothing_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        SLOW_QUERY,
        &job("slow", "*/2 * * * * *", "scan --all", "10m"),
    );
    let serve = || {
        Serve(
            std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
                .arg("--config")
                .arg(&config)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("serve starts"),
        )
    };
    let term = |serve: &mut Serve| serve.term();
    let running = || -> Option<String> {
        runs(&state, "slow")
            .iter()
            .find(|r| col(r, 6) == "running")
            .map(|r| col(r, 0).to_string())
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "waited for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // The state made first, so that the test can read it from the start.
    assert_eq!(common::assetgc(&config, &["jobs", "list"]).code, 0);
    let mut first = serve();
    wait("a run", &|| running().is_some());
    let run_id = running().unwrap();
    assert!(
        !processes_of_run(&run_id, &config).is_empty(),
        "the run's child runs"
    );
    let status = term(&mut first);
    assert!(status.success(), "{status:?}");
    let rows = runs(&state, "slow");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(col(&rows[0], 6), "failed");
    assert_eq!(col(&rows[0], 7), "stopped: the server shut down");
    assert!(
        processes_of_run(&run_id, &config).is_empty(),
        "the child is gone"
    );
    assert_eq!(state.count("SELECT COUNT(*) FROM job_leases", &[]), 0);

    // Restarted: one run (a catch-up, the windows having moved on), never two at once.
    std::thread::sleep(Duration::from_secs(3));
    let mut second = serve();
    wait("a run after the restart", &|| {
        runs(&state, "slow").len() >= 2 && running().is_some()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(term(&mut second).success());
    let rows = runs(&state, "slow");
    assert_eq!(
        rows.len(),
        2,
        "one run after the restart, no burst: {rows:?}"
    );
    assert_eq!(col(&rows[1], 3), "catch_up");
    assert_no_overlap(&rows);
    assert!(rows.iter().all(|r| col(r, 6) == "failed"));
    assert_eq!(state.count("SELECT COUNT(*) FROM job_leases", &[]), 0);
}

#[test]
fn a_run_left_running_by_a_dead_process_is_marked_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        FAST_QUERY,
        &job("quick", "0 4 * * *", "check", "1m"),
    );
    // The state made, then a run and its lease as a process killed mid-run left them.
    assert_eq!(common::assetgc(&config, &["jobs", "list"]).code, 0);
    state.query(
        "INSERT INTO job_runs (job, trigger, holder, command, started_at, status) VALUES ('quick', 'manual', 'gone:1', 'check', '2026-01-01T00:00:00Z', 'running')",
        &[],
    );
    state.query(
        "INSERT INTO job_leases (job, holder, run_id, expires_at) VALUES ('quick', 'gone:1', 1, '2026-01-01T00:00:30Z')",
        &[],
    );
    let r = common::assetgc(&config, &["jobs", "run", "quick"]);
    assert_eq!(r.code, 0, "the expired lease is taken over: {r:?}");
    let rows = runs(&state, "quick");
    assert_eq!(col(&rows[0], 6), "failed");
    assert!(col(&rows[0], 7).starts_with("abandoned"), "{rows:?}");
    assert_eq!(col(&rows[1], 6), "succeeded");
}

#[test]
fn a_live_lease_of_another_instance_refuses_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::create(StateBackend::Sqlite, dir.path());
    let config = setup(
        dir.path(),
        &state,
        FAST_QUERY,
        &job("quick", "0 4 * * *", "check", "1m"),
    );
    assert_eq!(common::assetgc(&config, &["jobs", "list"]).code, 0);
    state.query(
        "INSERT INTO job_leases (job, holder, run_id, expires_at) VALUES ('quick', 'elsewhere:1', NULL, '2999-01-01T00:00:00Z')",
        &[],
    );
    let r = common::assetgc(&config, &["jobs", "run", "quick"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("elsewhere:1"), "{r:?}");
    assert_eq!(
        state.count("SELECT COUNT(*) FROM job_runs", &[]),
        0,
        "a refused run leaves no row"
    );
}

fn export_config(dir: &Path) -> PathBuf {
    let state = StateDb::create(StateBackend::Sqlite, dir);
    setup(
        dir,
        &state,
        FAST_QUERY,
        "[[jobs]]\nname = \"daily-detect\"\nschedule = \"0 4 * * *\"\ncommand = \"scan --days 7 --notify\"\ntimeout = \"10m\"\n\n\
         [[jobs]]\nname = \"weekday_paris\"\nschedule = \"30 6 * * 1-5\"\ntz = \"Europe/Paris\"\ncommand = \"purge --confirm --older-than 7d\"\n\n",
    )
}

#[test]
fn crontab_export_reads_back_as_cron_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = export_config(dir.path());
    let abs = std::fs::canonicalize(&config).unwrap();
    let r = common::assetgc(&config, &["jobs", "export", "--format", "crontab"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut tz = None;
    let mut entries = Vec::new();
    for line in r.stdout.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(z) = line.strip_prefix("CRON_TZ=") {
            tz = Some(z.to_string());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() > 5, "{line}");
        assert!(assetgc::config::parse_cron(&fields[..5].join(" ")).is_ok());
        let words = shell_words::split(&fields[5..].join(" ")).unwrap();
        entries.push((fields[..5].join(" "), tz.clone(), words));
    }
    assert_eq!(entries.len(), 2, "{}", r.stdout);
    assert_eq!(entries[0].0, "0 4 * * *");
    assert_eq!(entries[0].1, None);
    assert_eq!(
        entries[0].2,
        [
            "assetgc",
            "--config",
            abs.to_str().unwrap(),
            "scan",
            "--days",
            "7",
            "--notify"
        ]
    );
    assert_eq!(entries[1].0, "30 6 * * 1-5");
    assert_eq!(entries[1].1.as_deref(), Some("Europe/Paris"));

    // Seconds cannot go to cron.
    let secs = dir.path().join("secs.toml");
    std::fs::write(
        &secs,
        std::fs::read_to_string(&config).unwrap()
            + "[[jobs]]\nname = \"fast\"\nschedule = \"*/5 * * * * *\"\ncommand = \"check\"\n",
    )
    .unwrap();
    for format in ["crontab", "k8s"] {
        let r = common::assetgc(&secs, &["jobs", "export", "--format", format]);
        assert_eq!(r.code, 2, "{r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
        assert!(r.stderr.contains("seconds"), "{r:?}");
    }
}

/// A unit file's settings: (section, key, value).
type Settings = Vec<(String, String, String)>;

/// `# file: NAME` sections as (name, settings).
fn units(text: &str) -> Vec<(String, Settings)> {
    let mut out: Vec<(String, Settings)> = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# file: ") {
            out.push((name.to_string(), Vec::new()));
        } else if line.starts_with('#') || line.trim().is_empty() {
        } else if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            out.last_mut().expect("a file header first").1.push((
                section.clone(),
                k.to_string(),
                v.to_string(),
            ));
        }
    }
    out
}

#[test]
fn systemd_export_reads_back_as_units() {
    let dir = tempfile::tempdir().unwrap();
    let config = export_config(dir.path());
    let r = common::assetgc(&config, &["jobs", "export", "--format", "systemd"]);
    assert_eq!(r.code, 0, "{r:?}");
    let units = units(&r.stdout);
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "assetgc-daily-detect.service",
            "assetgc-daily-detect.timer",
            "assetgc-weekday_paris.service",
            "assetgc-weekday_paris.timer"
        ]
    );
    let get = |unit: usize, section: &str, key: &str| -> Vec<String> {
        units[unit]
            .1
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    assert_eq!(get(0, "Service", "Type"), ["oneshot"]);
    assert_eq!(get(0, "Service", "TimeoutStartSec"), ["600"]);
    let exec = shell_words::split(&get(0, "Service", "ExecStart")[0]).unwrap();
    assert!(exec[0].ends_with("assetgc"), "{exec:?}");
    assert_eq!(&exec[3..], ["scan", "--days", "7", "--notify"]);
    assert_eq!(get(1, "Timer", "OnCalendar"), ["*-*-* 04:00:00 UTC"]);
    assert_eq!(
        get(3, "Timer", "OnCalendar"),
        ["Mon,Tue,Wed,Thu,Fri *-*-* 06:30:00 Europe/Paris"]
    );
    assert_eq!(get(3, "Install", "WantedBy"), ["timers.target"]);
    // systemd itself reads the calendars, where it is installed.
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("calendar")
        .args(get(1, "Timer", "OnCalendar"))
        .args(get(3, "Timer", "OnCalendar"))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Normalized form: *-*-* 04:00:00 UTC"),
            "{text}"
        );
        assert!(
            text.contains("Mon..Fri *-*-* 06:30:00 Europe/Paris"),
            "{text}"
        );
        // And the units as files: `verify` refuses a bad setting or calendar.
        let units_dir = dir.path().join("units");
        std::fs::create_dir_all(&units_dir).unwrap();
        let mut files = Vec::new();
        for chunk in r.stdout.split("# file: ").skip(1) {
            let (name, body) = chunk.split_once('\n').unwrap();
            let path = units_dir.join(name);
            std::fs::write(&path, body).unwrap();
            files.push(path);
        }
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("systemd-analyze is not installed: the units are checked by our reading only");
    }
}

#[test]
fn k8s_export_reads_back_as_cronjobs() {
    use serde::Deserialize as _;
    let dir = tempfile::tempdir().unwrap();
    let config = export_config(dir.path());
    let abs = std::fs::canonicalize(&config).unwrap();
    let r = common::assetgc(&config, &["jobs", "export", "--format", "k8s"]);
    assert_eq!(r.code, 0, "{r:?}");
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&r.stdout)
        .map(|d| serde_json::Value::deserialize(d).expect("a YAML document"))
        .collect();
    assert_eq!(docs.len(), 2, "{}", r.stdout);
    for d in &docs {
        assert_eq!(d["apiVersion"], "batch/v1");
        assert_eq!(d["kind"], "CronJob");
        assert_eq!(d["spec"]["concurrencyPolicy"], "Forbid");
        let c = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][0], "--config");
        assert_eq!(c["args"][1], abs.to_str().unwrap());
    }
    assert_eq!(docs[0]["metadata"]["name"], "assetgc-daily-detect");
    assert_eq!(docs[0]["spec"]["schedule"], "0 4 * * *");
    assert_eq!(docs[0]["spec"]["timeZone"], "UTC");
    assert_eq!(
        docs[0]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"],
        600
    );
    assert_eq!(docs[1]["metadata"]["name"], "assetgc-weekday-paris");
    assert_eq!(docs[1]["spec"]["timeZone"], "Europe/Paris");
    assert_eq!(
        docs[1]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"],
        3600
    );
    let args = &docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[2], "purge");
    assert_eq!(args[5], "7d");
}

#[test]
fn heroku_export_names_the_nearest_frequency_and_warns_when_not_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = export_config(dir.path());
    let r = common::assetgc(&config, &["jobs", "export", "--format", "heroku"]);
    assert_eq!(r.code, 0, "{r:?}");
    let blocks: Vec<&str> = r.stdout.split("\njob: ").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{}", r.stdout);
    assert!(
        blocks[0].contains("frequency: every day at 04:00 UTC"),
        "{}",
        r.stdout
    );
    assert!(!blocks[0].contains("warning:"), "04:00 UTC daily is exact");
    assert!(
        blocks[1].contains("frequency: every day at 05:30 UTC"),
        "{}",
        r.stdout
    );
    assert!(blocks[1].contains("warning:"), "weekdays only is not exact");
    assert!(r.stderr.contains("weekday_paris"), "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "web: assetgc serve --listen 0.0.0.0:$PORT")
    );
}
