//! The state database on PostgreSQL (`[state] url = "postgres://…"`, schema `assetgc`): the
//! same story as on SQLite, and two workers draining one queue at once, each entry taken once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Backend, TestDb, assetgc, write_file};
use serde_json::Value;

fn app(dir: &Path, state_url: &str, files: usize) -> PathBuf {
    let media = dir.join("media");
    let three_days = SystemTime::now() - Duration::from_secs(3 * 86_400);
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("app db");
    conn.execute_batch("CREATE TABLE posts (id integer PRIMARY KEY, image text)")
        .expect("schema");
    for i in 0..files {
        let key = format!("f/{i:05}.jpg");
        write_file(&media, &key, key.as_bytes(), three_days);
        // Every 4th file is referenced.
        if i % 4 == 0 {
            conn.execute(
                "INSERT INTO posts (id, image) VALUES (?1, ?2)",
                rusqlite::params![i64::try_from(i).expect("small"), key],
            )
            .expect("row");
        }
    }
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[state]
url = "{state_url}"

[stores.media]
url = "./media"
min_age = "1h"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "posts"
query = "SELECT id, image AS key FROM posts"

[safety]
max_orphan_share = 0.9
"#
        ),
    )
    .expect("config");
    config
}

fn ok(config: &Path, args: &[&str]) -> String {
    let r = assetgc(config, args);
    assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
    r.stdout
}

#[tokio::test]
async fn postgres_state_story() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(db) = TestDb::create(Backend::Postgres, tmp.path()).await else {
        return;
    };
    let config = app(tmp.path(), &db.url, 40);
    let r = assetgc(&config, &["scan", "--all", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let scan: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(scan["scan"]["id"], 1);
    assert_eq!(scan["summary"]["orphans"], 30);
    // Nothing was written beside the config: the state is in PostgreSQL.
    assert!(!tmp.path().join("assetgc.db").exists());
    let history = ok(&config, &["history"]);
    assert!(history.contains("all"), "{history}");

    let dry = ok(&config, &["purge"]);
    assert!(dry.contains("Would delete 30 objects"), "{dry}");
    let out = ok(&config, &["purge", "--confirm"]);
    assert!(out.contains("quarantined:   30"), "{out}");
    assert!(!tmp.path().join("media/f/00001.jpg").exists());
    assert!(tmp.path().join("media/f/00000.jpg").exists());
    let out = ok(&config, &["restore", "f/00001.jpg"]);
    assert!(out.contains("Restored"), "{out}");
    assert!(tmp.path().join("media/f/00001.jpg").exists());
    let stats: Value =
        serde_json::from_str(&ok(&config, &["queue", "stats", "--json"])).expect("stats");
    assert_eq!(stats["total_pending"], 29, "{stats}");
    let audit: Value =
        serde_json::from_str(&ok(&config, &["audit", "--json", "--key", "f/00001.jpg"]))
            .expect("audit");
    let outcomes: Vec<&str> = audit
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["restored", "quarantined"]);

    // Bad ids are refused the same way.
    let r = assetgc(&config, &["queue", "drop", "4242"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    db.drop_db().await;
}

/// Two workers started together on one queue: every entry is taken by one of them, once.
async fn two_workers(config: &Path, n: usize) -> BTreeMap<String, u64> {
    let keys: Vec<String> = (0..n).map(|i| format!("f/{i:05}.jpg")).collect();
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("bin");
    let added = cmd
        .arg("--config")
        .arg(config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .expect("queue add");
    assert_eq!(added.status.code(), Some(0));
    let bin = assert_cmd::cargo::cargo_bin("assetgc");
    let spawn = || {
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(config)
            .args(["queue", "run", "--batch-size", "20"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (
            a.join().expect("join").expect("run a"),
            b.join().expect("join").expect("run b"),
        )
    });
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!(
        "worker a: {}\nworker b: {}",
        text(&a).lines().next().unwrap_or_default(),
        text(&b).lines().next().unwrap_or_default()
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    // What each worker claimed: a claim that overwrote the other's (the fencing token then keeps
    // the loser from acting, so the audit alone cannot tell) still counts twice here.
    let claimed = |o: &std::process::Output| -> usize {
        let out = text(o);
        let first = out.lines().next().unwrap_or_default();
        first
            .strip_prefix("Processed ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `Processed N` line in {out}"))
    };
    assert_eq!(
        claimed(&a) + claimed(&b),
        n,
        "the two workers claimed {} and {} of {n} entries: some entry was claimed by both",
        claimed(&a),
        claimed(&b)
    );
    let audit: Value = serde_json::from_str(&ok(config, &["audit", "--json", "--limit", "100000"]))
        .expect("audit");
    // Every audit row of the run counts, whatever its outcome: an entry taken by both workers
    // shows as a second row for its key (`already_gone` after the other's move, or a move of
    // its own), and a worker's `quarantined` or `referenced` is the only first word there is.
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for row in audit.as_array().expect("array") {
        let outcome = row["outcome"].as_str().expect("outcome");
        assert!(
            outcome == "quarantined" || outcome == "referenced",
            "every file was there and each entry had one worker, yet {} ended `{outcome}`",
            row["key"]
        );
        *per_key
            .entry(row["key"].as_str().expect("key").to_string())
            .or_default() += 1;
    }
    per_key
}

#[tokio::test]
async fn postgres_two_workers_never_take_the_same_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(db) = TestDb::create(Backend::Postgres, tmp.path()).await else {
        return;
    };
    let n = 600;
    let config = app(tmp.path(), &db.url, n);
    let per_key = two_workers(&config, n).await;
    assert_eq!(per_key.len(), n, "every entry was processed");
    assert!(
        per_key.values().all(|&c| c == 1),
        "an entry was taken twice"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_two_workers_never_take_the_same_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let n = 600;
    let config = app(tmp.path(), "sqlite://state.db", n);
    let per_key = two_workers(&config, n).await;
    assert_eq!(per_key.len(), n, "every entry was processed");
    assert!(
        per_key.values().all(|&c| c == 1),
        "an entry was taken twice"
    );
}

/// Many claimers at once over one queue, through the state layer itself: every entry is
/// claimed exactly once. (`FOR UPDATE SKIP LOCKED` is what keeps their claims apart on
/// PostgreSQL; the story tests above cannot tell, since a second claimer's move finds nothing.)
async fn many_claimers_take_disjoint_entries(state_url: &str, dir: &Path) {
    use assetgc::state::QueueStore as _;
    let n = 2000;
    let config = app(dir, state_url, 0);
    let keys: Vec<String> = (0..n).map(|i| format!("f/{i:05}.jpg")).collect();
    let added = assert_cmd::Command::cargo_bin("assetgc")
        .expect("bin")
        .arg("--config")
        .arg(&config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .expect("queue add");
    assert_eq!(added.status.code(), Some(0), "{added:?}");
    let cfg = assetgc::config::load(Some(&config))
        .expect("config")
        .expect("a config");
    let app = assetgc::app::App::open(cfg).await.expect("app");
    let claimers: Vec<_> = (0..8)
        .map(|w| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let (batch, _) = app
                        .state
                        .claim(&format!("claimer-{w}"), 25, None)
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        break mine;
                    }
                    mine.extend(batch.into_iter().map(|e| e.id));
                }
            })
        })
        .collect();
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    let mut per_claimer = Vec::new();
    for c in claimers {
        let ids = c.await.expect("claimer");
        per_claimer.push(ids.len());
        for id in ids {
            *seen.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<i64> = seen
        .iter()
        .filter(|&(_, &c)| c > 1)
        .map(|(&id, _)| id)
        .collect();
    assert!(
        twice.is_empty(),
        "claimed more than once: {} entries, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(seen.len(), n, "every entry claimed ({per_claimer:?})");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_many_claimers_never_take_the_same_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(db) = TestDb::create(Backend::Postgres, tmp.path()).await else {
        return;
    };
    many_claimers_take_disjoint_entries(&db.url, tmp.path()).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_many_claimers_never_take_the_same_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    many_claimers_take_disjoint_entries("sqlite://state.db", tmp.path()).await;
}

#[test]
fn an_unreachable_postgres_state_is_exit_1_without_the_password() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = app(
        tmp.path(),
        "postgres://someone:hunter2-secret@127.0.0.1:1/nowhere",
        4,
    );
    for args in [&["history"][..], &["queue", "stats"], &["scan", "--all"]] {
        let r = assetgc(&config, args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("state database"), "{}", r.stderr);
        assert!(!r.stderr.contains("hunter2-secret"), "{}", r.stderr);
    }
}

/// SPEC §6 invariant 5 on the PostgreSQL state: workers killed with SIGKILL mid-work lose no
/// entry and quarantine nothing twice.
#[tokio::test]
async fn postgres_state_survives_killed_workers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(db) = TestDb::create(Backend::Postgres, tmp.path()).await else {
        return;
    };
    let n = 3000;
    let config = app(tmp.path(), &db.url, n);
    let keys: Vec<String> = (0..n).map(|i| format!("f/{i:05}.jpg")).collect();
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("bin");
    let added = cmd
        .arg("--config")
        .arg(&config)
        .args(["queue", "add", "--store", "media", "-"])
        .write_stdin(keys.join("\n"))
        .output()
        .expect("queue add");
    assert_eq!(added.status.code(), Some(0));
    let bin = assert_cmd::cargo::cargo_bin("assetgc");
    let done = || -> u64 {
        let stats: Value =
            serde_json::from_str(&ok(&config, &["queue", "stats", "--json"])).expect("stats");
        stats["total_done"].as_u64().unwrap_or(0) + stats["total_dropped"].as_u64().unwrap_or(0)
    };
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let (mut kills, mut runs) = (0, 0);
    while kills < 10 && runs < 200 {
        runs += 1;
        let before = done();
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(["queue", "run", "--batch-size", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(40 + seed % 120));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            if done() > before {
                kills += 1;
            }
        }
    }
    assert!(kills >= 10, "only {kills} kills mid-work in {runs} runs");
    ok(&config, &["queue", "run"]);
    let audit: Value =
        serde_json::from_str(&ok(&config, &["audit", "--json", "--limit", "100000"]))
            .expect("audit");
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in audit.as_array().expect("array") {
        let key = row["key"].as_str().expect("key");
        if key.starts_with("f/") {
            per_key
                .entry(key.to_string())
                .or_default()
                .push(row["outcome"].as_str().expect("outcome").to_string());
        }
    }
    assert_eq!(per_key.len(), n, "every entry ended");
    for (i, key) in keys.iter().enumerate() {
        let want = if i % 4 == 0 {
            "referenced"
        } else {
            "quarantined"
        };
        assert_eq!(per_key[key], [want], "{key}");
        assert_eq!(
            tmp.path().join("media").join(key).exists(),
            i % 4 == 0,
            "{key}"
        );
    }
    db.drop_db().await;
}
