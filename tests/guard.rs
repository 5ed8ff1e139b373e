//! The mass-deletion guard (SPEC §6 invariant 7) on the folder store: per store, the share test
//! from 100 objects scanned, the jump test from 10 orphans in the comparable scan, a scan with no
//! counts, and the comparable scan itself — the last one a purge accepted — so that scanning
//! again never lifts a refusal, through `purge`, `--scan` and `--from-report` alike.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{StateBackend, StateDb, assetgc, both_states, write_file};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    state: StateDb,
}

impl Dir {
    /// Stores `a` and `b` (folders `./a`, `./b`), each with its reference table.
    fn new(state: StateBackend) -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let d = Dir {
            config: dir.join("assetgc.toml"),
            state: StateDb::create(state, &dir),
            dir,
            _tmp: tmp,
        };
        let mut body = String::new();
        for s in ["a", "b"] {
            std::fs::create_dir_all(d.dir.join(s)).expect("mkdir");
            body.push_str(&format!(
                "[stores.{s}]\nurl = \"./{s}\"\nmin_age = \"1h\"\nquarantine = false\n[[references]]\nname = \"{s} rows\"\nstore = \"{s}\"\nquery = \"SELECT id, key FROM {s}_rows\"\n"
            ));
        }
        std::fs::write(
            &d.config,
            format!(
                "{}\n[databases.app]\nurl = \"sqlite://app.db\"\n{body}",
                d.state.config_section()
            ),
        )
        .expect("config");
        d.sql("CREATE TABLE a_rows (id integer PRIMARY KEY, key text); CREATE TABLE b_rows (id integer PRIMARY KEY, key text);");
        d
    }

    fn sql(&self, statements: &str) {
        let conn = rusqlite::Connection::open(self.dir.join("app.db")).expect("app db");
        conn.execute_batch(statements).expect("sql");
    }

    /// `n` referenced objects in `store`.
    fn valid(&self, store: &str, n: usize) {
        let conn = rusqlite::Connection::open(self.dir.join("app.db")).expect("app db");
        for i in 0..n {
            let key = format!("v/{i:04}.jpg");
            self.put(store, &key);
            conn.execute(
                &format!("INSERT INTO {store}_rows (key) VALUES (?1)"),
                [&key],
            )
            .expect("insert");
        }
    }

    /// `n` orphans in `store`, under `batch/`.
    fn orphans(&self, store: &str, batch: &str, n: usize) {
        for i in 0..n {
            self.put(store, &format!("{batch}/{i:04}.jpg"));
        }
    }

    fn put(&self, store: &str, key: &str) {
        write_file(
            &self.dir.join(store),
            key,
            b"x",
            SystemTime::now() - 3 * DAY,
        );
    }

    fn run(&self, args: &[&str]) -> common::Run {
        assetgc(&self.config, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "assetgc {args:?}:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Scans every store over all time; the scan's id.
    fn scan(&self, extra: &[&str]) -> i64 {
        let mut args = vec!["scan", "--all", "--json"];
        args.extend(extra);
        let v: Value = serde_json::from_str(&self.ok(&args)).expect("json");
        v["scan"]["id"].as_i64().expect("scan id")
    }

    fn refused(&self, args: &[&str], why: &str) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 2,
            "assetgc {args:?} passed:\n{}{}",
            r.stdout, r.stderr
        );
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        r.stderr
    }
}

fn a_refused_jump_stays_refused_after_rescanning_until_allowed(state: StateBackend) {
    let d = Dir::new(state);
    d.valid("a", 290);
    d.valid("b", 20);
    d.orphans("a", "one", 10);
    d.scan(&[]);
    d.ok(&["purge", "--confirm"]);
    // 120 orphans against the 10 a purge accepted: more than ×10.
    d.orphans("a", "two", 120);
    d.scan(&[]);
    d.refused(&["purge", "--confirm"], "max_orphan_jump");
    // Scanning again does not make the refused level the baseline: through every source.
    let csv = d.dir.join("report.csv");
    let again = d.scan(&["--output", csv.to_str().expect("utf-8")]);
    let stderr = d.refused(&["purge", "--confirm"], "max_orphan_jump");
    assert!(stderr.contains("store a"), "{stderr}");
    d.refused(
        &["purge", "--confirm", "--scan", &again.to_string()],
        "max_orphan_jump",
    );
    d.refused(
        &[
            "purge",
            "--confirm",
            "--from-report",
            csv.to_str().expect("utf-8"),
        ],
        "max_orphan_jump",
    );
    assert!(d.dir.join("a/two/0000.jpg").exists());
    // The override accepts the new level ...
    d.ok(&["purge", "--confirm", "--allow-mass-delete"]);
    assert!(!d.dir.join("a/two/0000.jpg").exists());
    // ... and later comparable scans are measured against it (130 is not ×10 of 120).
    d.orphans("a", "three", 130);
    d.scan(&[]);
    d.ok(&["purge", "--confirm"]);
    assert!(!d.dir.join("a/three/0000.jpg").exists());
}
both_states!(a_refused_jump_stays_refused_after_rescanning_until_allowed);

#[test]
fn the_share_test_applies_per_store_from_100_objects_scanned() {
    for (n, refused) in [(99, false), (100, true)] {
        let d = Dir::new(StateBackend::Sqlite);
        d.orphans("a", "all", n);
        d.valid("b", 30);
        d.orphans("b", "few", 3);
        d.scan(&[]);
        if refused {
            let stderr = d.refused(&["purge"], "max_orphan_share");
            assert!(stderr.contains("store a"), "{stderr}");
            // The guard is per store: b alone goes through.
            d.ok(&["purge", "--store", "b"]);
        } else {
            d.ok(&["purge"]);
        }
    }
}

#[test]
fn the_jump_test_applies_from_10_orphans_in_the_comparable_scan() {
    for (before, refused) in [(9, false), (10, true)] {
        let d = Dir::new(StateBackend::Sqlite);
        d.valid("a", 300);
        d.valid("b", 10);
        d.orphans("a", "before", before);
        d.scan(&[]);
        d.ok(&["purge", "--confirm"]);
        d.orphans("a", "after", 101);
        d.scan(&[]);
        if refused {
            d.refused(&["purge"], "max_orphan_jump");
        } else {
            d.ok(&["purge"]);
        }
    }
}

#[test]
fn a_scan_with_no_counts_is_refused() {
    let d = Dir::new(StateBackend::Sqlite);
    d.valid("a", 5);
    d.orphans("a", "o", 2);
    d.valid("b", 5);
    let id = d.scan(&[]);
    let conn = rusqlite::Connection::open(d.dir.join("assetgc.db")).expect("state db");
    conn.execute(
        "UPDATE scans SET store_stats = 'not json' WHERE id = ?1",
        [id],
    )
    .expect("update");
    d.refused(&["purge"], "no counts");
}
