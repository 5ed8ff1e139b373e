//! Notifications end to end through the built binary (SPEC §2 `[notify]`, §5): which runs send,
//! what a failing channel changes (nothing but one warning line and a record), spike alerts
//! against the comparable scan, and the runs that `serve` and jobs start.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use tempfile::TempDir;

const PASSWORD: &str = "hunter2-smtp";
const SECRET: &str = "s3cr3t-hmac-value";

/// A folder store `media` and a SQLite database `app` whose table `p` references some of its
/// files: `referenced` files present, `orphans` files no row names, `missing` rows whose file
/// is absent (the first one DELETED, the rest ACTIVE).
struct Fx {
    dir: TempDir,
    next_orphan: usize,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn days_ago(d: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(d * 86_400)
}

impl Fx {
    fn new(referenced: usize, orphans: usize, missing: usize) -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("assetgc-notify-")
            .tempdir()
            .expect("temp dir");
        let mut fx = Fx {
            dir,
            next_orphan: 0,
        };
        let db = rusqlite::Connection::open(fx.path("app.db")).expect("app.db");
        db.execute_batch("CREATE TABLE p (id INTEGER, title TEXT, img TEXT, status TEXT);")
            .expect("fixture SQL");
        for i in 0..referenced {
            let key = format!("photos/p{i:04}.jpg");
            common::write_file(&fx.path("media"), &key, b"jpeg", days_ago(3));
            db.execute(
                "INSERT INTO p VALUES (?1, ?2, ?3, 'ACTIVE')",
                rusqlite::params![i as i64, format!("Photo {i}"), key],
            )
            .expect("insert");
        }
        for i in 0..missing {
            db.execute(
                "INSERT INTO p VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    10_000 + i as i64,
                    format!("Lost {i}"),
                    format!("photos/gone{i:04}.jpg"),
                    if i == 0 { "DELETED" } else { "ACTIVE" }
                ],
            )
            .expect("insert");
        }
        fx.add_orphans(orphans);
        fx.config("");
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `n` more files that no row names.
    fn add_orphans(&mut self, n: usize) {
        for _ in 0..n {
            let key = format!("tmp/upload-{:05}.jpg", self.next_orphan);
            self.next_orphan += 1;
            common::write_file(&self.path("media"), &key, &[7u8; 2048], days_ago(2));
        }
    }

    /// The base config followed by `notify` (a `[notify]` section, or nothing).
    fn config(&self, notify: &str) {
        let text = format!(
            r#"app_name = "Shop"

[stores.media]
url = "./media"
min_age = "1h"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "photos"
query = "SELECT id, title, img AS key, status FROM p"

{notify}"#
        );
        fs::write(self.path("assetgc.toml"), text).expect("write config");
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("assetgc").expect("the assetgc binary");
        c.current_dir(self.dir.path())
            .env_remove("ASSETGC_CONFIG")
            .env_remove("ASSETGC_LOG")
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1")
            .args(args)
            .timeout(Duration::from_secs(120));
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = self.cmd(args).output().expect("run assetgc");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn reports(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.path("reports"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The recorded deliveries: (kind, run_id, job_run_id, channel, attempts, error).
    fn deliveries(&self) -> Vec<Delivery> {
        let db = rusqlite::Connection::open(self.path("assetgc.db")).expect("state db");
        let mut st = db
            .prepare(
                "SELECT kind, run_id, job_run_id, channel, attempts, error FROM notifications ORDER BY id",
            )
            .expect("prepare");
        st.query_map([], |r| {
            Ok(Delivery {
                kind: r.get(0)?,
                run_id: r.get(1)?,
                job_run_id: r.get(2)?,
                channel: r.get(3)?,
                attempts: r.get(4)?,
                error: r.get(5)?,
            })
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
    }
}

#[derive(Debug)]
#[allow(dead_code)] // every field is read by some test, not by all
struct Delivery {
    kind: String,
    run_id: Option<i64>,
    job_run_id: Option<i64>,
    channel: String,
    attempts: i64,
    error: Option<String>,
}

/// A port nothing listens on: connecting is refused.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

fn warning_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("notify")).collect()
}

#[test]
fn smtp_down_changes_neither_the_exit_code_nor_the_report_and_warns_once() {
    let fx = Fx::new(5, 3, 2);
    let plain = fx.run(&["scan", "--fail-on-findings"]);
    assert_eq!(plain.code, 3, "{plain:?}");
    fx.config(&format!(
        "[notify]\non = \"always\"\nemail = {{ smtp_url = \"smtp://ops:{PASSWORD}@127.0.0.1:{}\", from = \"assetgc@example.com\", to = [\"admin@example.com\"] }}\n",
        dead_port()
    ));
    let started = std::time::Instant::now();
    let run = fx.run(&["scan", "--fail-on-findings", "--notify"]);
    assert_eq!(run.code, 3, "the exit code is the scan's: {run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in reasonable time"
    );
    let reports = fx.reports();
    assert_eq!(
        reports.len(),
        2,
        "both scans wrote their report: {reports:?}"
    );
    let report = common::parse_csv_report(&fs::read_to_string(&reports[1]).expect("report"));
    assert_eq!(report.orphans.len(), 3);
    assert_eq!(report.missing.len(), 2);
    let warnings = warning_lines(&run.stderr);
    assert_eq!(warnings.len(), 1, "one warning line: {run:?}");
    assert!(warnings[0].contains("email"), "{run:?}");
    assert!(!run.stderr.contains(PASSWORD) && !run.stdout.contains(PASSWORD));
    assert!(
        run.stdout
            .contains("Notifications: none sent; email failed"),
        "the console says so: {run:?}"
    );
    let d = fx.deliveries();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].kind.as_str(), d[0].channel.as_str()),
        ("scan", "email")
    );
    assert_eq!(d[0].run_id, Some(2), "recorded with its scan");
    assert!(d[0].error.is_some());
    assert!(!d[0].error.as_deref().unwrap_or_default().contains(PASSWORD));
}

#[test]
fn bad_notify_sections_are_config_errors_naming_their_line_without_their_secrets() {
    let fx = Fx::new(1, 0, 0);
    let cases: [(&str, &str); 7] = [
        (
            "[notify]\non = \"sometimes\"\n",
            "findings, always or never",
        ),
        (
            &format!(
                "[notify]\nemail = {{ smtp_url = \"ftp://u:{PASSWORD}@mail.example.com\", from = \"a@example.com\", to = [\"b@example.com\"] }}\n"
            ),
            "smtp",
        ),
        (
            "[notify]\nemail = { smtp_url = \"smtps://mail.example.com\", from = \"not an address\", to = [\"b@example.com\"] }\n",
            "not an email address",
        ),
        (
            "[notify]\nemail = { smtp_url = \"smtps://mail.example.com\", from = \"a@example.com\", to = [] }\n",
            "needs to",
        ),
        (
            &format!("[notify]\nwebhook = {{ url = \"https://hooks.example.com/{SECRET}\" }}\n"),
            "secret",
        ),
        ("[notify]\nslack = { webhook_url = \"not a url\" }\n", "URL"),
        ("[notify]\nspike = { orphans_ratio = 0.5 }\n", "above 1"),
    ];
    for (section, says) in cases {
        fx.config(section);
        let out = fx.run(&["check"]);
        assert_eq!(out.code, 2, "{section}\n{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {out:?}");
        assert!(lines[0].contains(says), "{section}\n{out:?}");
        assert!(lines[0].contains("line 15"), "names the line: {out:?}");
        assert!(
            !out.stderr.contains(PASSWORD) && !out.stderr.contains(SECRET),
            "no secret: {out:?}"
        );
    }
}

#[test]
fn notify_test_without_a_channel_is_a_usage_error() {
    let fx = Fx::new(1, 0, 0);
    fx.config("[notify]\non = \"always\"\n");
    let out = fx.run(&["notify", "test"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no channel"), "{out:?}");
}
