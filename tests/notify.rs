//! Notifications end to end through the built binary (SPEC §2 `[notify]`, §5): which runs send,
//! what a failing channel changes (nothing but one warning line and a record), spike alerts
//! against the comparable scan, and the runs that `serve` and jobs start.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use common::receiver::Receiver;
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

/// `[notify]` with the three HTTP channels pointed at `r` (`/slack`, `/discord`, `/hook`).
fn hooks_section(r: &Receiver, on: &str, extra: &str) -> String {
    format!(
        "[notify]\non = \"{on}\"\nslack = {{ webhook_url = \"{}\" }}\ndiscord = {{ webhook_url = \"{}\" }}\nwebhook = {{ url = \"{}\", secret = \"{SECRET}\" }}\n{extra}",
        r.url("/slack"),
        r.url("/discord"),
        r.url("/hook")
    )
}

/// The webhook request among what `r` received (the last one).
fn webhook_body(r: &Receiver) -> serde_json::Value {
    r.requests()
        .iter()
        .rev()
        .find(|q| q.path == "/hook")
        .expect("a webhook request")
        .json()
}

fn signed_as_spec_says(q: &common::receiver::Request) {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&q.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(q.header("x-assetgc-signature"), Some(want.as_str()));
    let body = q.json();
    assert_eq!(
        q.header("x-assetgc-timestamp"),
        body["sent_at"].as_str(),
        "the timestamp header is the body's sent_at"
    );
}

#[test]
fn on_findings_sends_a_scan_that_found_something_and_nothing_for_a_clean_one() {
    let r = Receiver::start(&[]);
    let mut fx = Fx::new(5, 0, 0);
    fx.config(&hooks_section(&r, "findings", ""));
    let clean = fx.run(&["scan", "--notify"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(
        clean.stdout.contains("Notifications: none sent"),
        "{clean:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.requests().is_empty(), "a clean scan sends nothing");

    fx.add_orphans(25);
    let found = fx.run(&["scan", "--notify"]);
    assert_eq!(found.code, 0, "{found:?}");
    assert!(
        found
            .stdout
            .contains("Notifications: sent to slack, discord, webhook"),
        "{found:?}"
    );
    let got = r.wait_for(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3, "one message a channel: {got:?}");
    let hook = got.iter().find(|q| q.path == "/hook").expect("webhook");
    signed_as_spec_says(hook);
    let body = hook.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["scan", "summary", "items", "sent_at"]);
    assert_eq!(body["scan"]["id"], 2);
    assert_eq!(body["scan"]["kind"], "scan");
    assert_eq!(body["scan"]["app_name"], "Shop");
    assert_eq!(body["scan"]["complete"], true);
    assert_eq!(body["summary"]["orphans"], 25);
    assert_eq!(body["summary"]["missing"], 0);
    assert_eq!(
        body["items"]["orphans"].as_array().map(Vec::len),
        Some(20),
        "the first 20 orphans"
    );
    assert_eq!(body["items"]["orphans"][0]["key"], "tmp/upload-00000.jpg");
    let report = body["scan"]["report_path"].as_str().expect("report path");
    assert!(Path::new(report).exists(), "{report}");
    assert!(body["summary"]["alert"].is_null());
    let slack = got
        .iter()
        .find(|q| q.path == "/slack")
        .expect("slack")
        .json();
    assert!(slack["blocks"].is_array(), "{slack}");
    let discord = got
        .iter()
        .find(|q| q.path == "/discord")
        .expect("discord")
        .json();
    assert!(
        discord["embeds"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("Shop"))
    );

    // `always` sends the clean kind too; `never` sends nothing at all.
    let before = r.requests().len();
    fx.config(&hooks_section(&r, "never", ""));
    let never = fx.run(&["scan", "--notify"]);
    assert_eq!(never.code, 0, "{never:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.requests().len(), before, "on = never sends nothing");
    let plain = fx.run(&["scan"]);
    assert_eq!(plain.code, 0);
    assert_eq!(r.requests().len(), before, "no --notify, nothing sent");
}

#[test]
fn a_spike_alert_leads_every_channel_when_orphans_jump_and_is_absent_for_a_small_change() {
    let spike = "spike = { orphans_increase = 50, missing_increase = 10, orphans_ratio = 3.0 }\n";
    let r = Receiver::start(&[]);
    let mut fx = Fx::new(5, 4, 1);
    fx.config(&hooks_section(&r, "always", spike));
    let first = fx.run(&["scan", "--notify"]);
    assert_eq!(first.code, 0, "{first:?}");
    r.wait_for(3, Duration::from_secs(10));
    assert!(
        webhook_body(&r)["summary"]["alert"].is_null(),
        "no baseline yet"
    );

    fx.add_orphans(60);
    let second = fx.run(&["scan", "--notify"]);
    assert_eq!(second.code, 0, "{second:?}");
    let got = r.wait_for(6, Duration::from_secs(10));
    let body = webhook_body(&r);
    let alert = &body["summary"]["alert"];
    assert_eq!(alert["baseline_scan"], 1, "{body}");
    let line = alert["lines"][0].as_str().expect("a line");
    assert!(
        line.contains("from 4 to 64") && line.contains("orphans_increase 50"),
        "{line}"
    );
    let slack = got[3..]
        .iter()
        .find(|q| q.path == "/slack")
        .expect("slack")
        .json();
    let first_section = slack["blocks"][1].to_string();
    assert!(
        first_section.to_lowercase().contains("spike"),
        "Slack leads with the alert: {slack}"
    );
    let discord = got[3..]
        .iter()
        .find(|q| q.path == "/discord")
        .expect("discord")
        .json();
    assert!(
        discord["embeds"][0]["description"]
            .as_str()
            .is_some_and(|d| d.to_lowercase().starts_with(":rotating_light:")
                || d.to_lowercase().contains("spike")),
        "Discord leads with the alert: {discord}"
    );

    // Another application's history: a small change raises nothing.
    let r2 = Receiver::start(&[]);
    let mut small = Fx::new(5, 10, 1);
    small.config(&hooks_section(&r2, "always", spike));
    assert_eq!(small.run(&["scan", "--notify"]).code, 0);
    small.add_orphans(3);
    assert_eq!(small.run(&["scan", "--notify"]).code, 0);
    r2.wait_for(6, Duration::from_secs(10));
    let body = webhook_body(&r2);
    assert_eq!(body["summary"]["orphans"], 13);
    assert!(body["summary"]["alert"].is_null(), "{body}");
}

#[test]
fn deletion_runs_notify_what_they_did_and_nothing_when_they_did_nothing() {
    let r = Receiver::start(&[]);
    let fx = Fx::new(3, 4, 0);
    fx.config(&hooks_section(&r, "findings", ""));
    assert_eq!(fx.run(&["scan"]).code, 0);
    let dry = fx.run(&["purge", "--notify"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.requests().is_empty(), "a dry run sends nothing");

    let purge = fx.run(&["purge", "--confirm", "--notify"]);
    assert_eq!(purge.code, 0, "{purge:?}");
    r.wait_for(3, Duration::from_secs(10));
    let body = webhook_body(&r);
    assert_eq!(body["scan"]["kind"], "purge", "{body}");
    assert_eq!(body["summary"]["candidates"], 4, "{body}");
    assert_eq!(body["summary"]["queued"], 4, "{body}");
    let worked = &body["summary"]["worked"];
    assert_eq!(
        worked["deleted"].as_u64().unwrap_or(0) + worked["quarantined"].as_u64().unwrap_or(0),
        4,
        "{body}"
    );
    assert_eq!(body["items"]["queued"].as_array().map(Vec::len), Some(4));
    assert!(
        body["summary"]["headline"]
            .as_str()
            .is_some_and(|h| h.starts_with("4 orphans (0.01 MB) of scan 1")
                && h.ends_with("queued; the queue run deleted 4")),
        "{body}"
    );

    let before = r.requests().len();
    let idle = fx.run(&["queue", "run", "--notify"]);
    assert_eq!(idle.code, 0, "{idle:?}");
    assert!(idle.stdout.contains("Notifications: none sent"), "{idle:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.requests().len(),
        before,
        "a run that did nothing sends nothing"
    );

    // Under `always`, a dry run is sent too, saying it is one.
    fx.config(&hooks_section(&r, "always", ""));
    let dry = fx.run(&["purge", "--notify"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    r.wait_for(before + 3, Duration::from_secs(10));
    let body = webhook_body(&r);
    assert_eq!(body["scan"]["kind"], "purge", "{body}");
    assert_eq!(body["summary"]["dry_run"], true, "{body}");
    assert!(
        body["summary"]["headline"]
            .as_str()
            .is_some_and(|h| h.starts_with("dry run: ")),
        "{body}"
    );
}

#[test]
fn a_job_s_run_notifies_and_its_deliveries_name_the_run() {
    let r = Receiver::start(&[500]);
    let fx = Fx::new(2, 1, 0);
    fx.config(&format!(
        "{}\n[[jobs]]\nname = \"detect\"\nschedule = \"0 4 * * *\"\ncommand = \"scan --notify\"\n",
        hooks_section(&r, "always", "")
    ));
    let run = fx.run(&["jobs", "run", "detect"]);
    assert_eq!(run.code, 0, "{run:?}");
    let got = r.wait_for(4, Duration::from_secs(10));
    assert_eq!(
        got.len(),
        4,
        "one channel's first try got 500, its retry went through"
    );
    let d = fx.deliveries();
    assert_eq!(d.len(), 3, "{d:?}");
    for x in &d {
        assert_eq!(x.job_run_id, Some(1), "{d:?}");
        assert_eq!(x.run_id, Some(1), "{d:?}");
        assert!(x.error.is_none(), "{d:?}");
    }
    assert_eq!(
        d.iter().map(|x| x.attempts).sum::<i64>(),
        4,
        "one retry among them: {d:?}"
    );
}

#[test]
fn notify_test_reaches_every_channel_and_says_which_failed() {
    let r = Receiver::start(&[]);
    let fx = Fx::new(1, 0, 0);
    fx.config(&format!(
        "[notify]\non = \"never\"\nslack = {{ webhook_url = \"{}\" }}\nwebhook = {{ url = \"http://127.0.0.1:{}/hook/{SECRET}\", secret = \"{SECRET}\" }}\n",
        r.url("/slack"),
        dead_port()
    ));
    let out = fx.run(&["notify", "test"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("slack: sent"), "{out:?}");
    assert!(
        out.stdout.contains("webhook: FAILED after 3 attempts"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "{out:?}"
    );
    let got = r.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].json()["text"]
            .as_str()
            .is_some_and(|t| t.contains("test"))
    );
}

#[test]
fn post_api_scans_with_notify_sends_once_the_scan_is_over() {
    let r = Receiver::start(&[]);
    let fx = Fx::new(2, 3, 2);
    fx.config(&hooks_section(&r, "findings", ""));
    common::block_on(async {
        let api = common::api::Api::open(&fx.path("assetgc.toml")).await;
        let started = api
            .post(
                "/api/scans",
                serde_json::json!({"all": true, "notify": true}),
            )
            .await;
        assert_eq!(started.status, 202, "{started:?}");
        let id = started.json["scan_id"].as_i64().expect("scan_id");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = r.requests();
            if got.len() >= 3 || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(got.len(), 3, "{got:?}");
        let body = webhook_body(&r);
        assert_eq!(body["scan"]["id"], id);
        assert_eq!(body["summary"]["orphans"], 3);
        assert_eq!(body["summary"]["missing_active"], 1);
        assert_eq!(body["summary"]["missing_deleted"], 1);
        // Without `notify`, nothing more is sent.
        let again = api
            .post("/api/scans", serde_json::json!({"all": true}))
            .await;
        assert_eq!(again.status, 202);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(r.requests().len(), 3);
        api.close().await;
    });
}

#[test]
fn clean_and_expire_runs_notify_what_they_deleted_and_their_dry_runs_do_not() {
    let r = Receiver::start(&[]);
    let fx = Fx::new(3, 4, 0);
    let db = rusqlite::Connection::open(fx.path("app.db")).expect("app.db");
    db.execute("UPDATE p SET status = 'DELETED' WHERE id = 0", [])
        .expect("soft-delete a row");
    fx.config(&format!(
        r#"{}
[[policies]]
name = "uploads"
store = "media"
prefix = "tmp/"
older_than = "1d"

[[expiry]]
name = "trash"
store = "media"
select = "SELECT id, img AS key FROM p WHERE status = 'DELETED'"
delete = "DELETE FROM p WHERE id = ? AND status = 'DELETED'"
releases = ["photos"]
"#,
        hooks_section(&r, "findings", "")
    ));
    for dry in [
        vec!["clean", "--dry-run", "--notify"],
        vec!["expire", "--dry-run", "--notify"],
    ] {
        let out = fx.run(&dry);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Notifications: none sent"), "{out:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.requests().is_empty(), "dry runs send nothing");

    let clean = fx.run(&["clean", "--notify"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    r.wait_for(3, Duration::from_secs(10));
    let body = webhook_body(&r);
    assert_eq!(body["scan"]["kind"], "clean", "{body}");
    assert_eq!(body["summary"]["deleted_count"], 4, "{body}");
    assert_eq!(body["summary"]["deleted"], 4, "{body}");
    assert_eq!(body["items"]["files"].as_array().map(Vec::len), Some(4));

    let expire = fx.run(&["expire", "--notify"]);
    assert_eq!(expire.code, 0, "{expire:?}");
    assert!(expire.stdout.contains("Notifications: sent"), "{expire:?}");
    r.wait_for(6, Duration::from_secs(10));
    let body = webhook_body(&r);
    assert_eq!(body["scan"]["kind"], "expire", "{body}");
    let totals = &body["summary"]["rules"][0];
    assert_eq!(totals["rows_expired"], 1, "{body}");
    assert_eq!(totals["files_deleted"], 1, "{body}");
    assert!(
        body["summary"]["headline"]
            .as_str()
            .is_some_and(|h| h.starts_with("1 row(s) expired, 1 file(s) deleted")),
        "{body}"
    );
}

#[test]
fn scan_notify_mails_the_summary_with_its_report_over_starttls_and_nothing_for_a_clean_scan() {
    use common::smtp::{SinkOptions, SmtpSink, Tls};
    use mail_parser::MessageParser;
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTls,
        auth: Some(("ops", PASSWORD)),
    }) else {
        return;
    };
    let fx = Fx::new(4, 0, 3);
    fx.config(&format!(
        "[notify]\nemail = {{ smtp_url = \"{}\", from = \"assetgc@example.com\", to = [\"admin@example.com\"] }}\n",
        sink.smtp_url(Some("ops"), Some(PASSWORD))
    ));
    let run = |fx: &Fx| {
        let o = fx
            .cmd(&["scan", "--notify", "--missing-only"])
            .env("SSL_CERT_FILE", sink.ca_pem_path())
            .output()
            .expect("run");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Missing rows are findings: sent.
    let (code, stdout, stderr) = run(&fx);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("Notifications: sent to email"),
        "{stdout}{stderr}\n{}",
        sink.log()
    );
    let mails = sink.messages(1);
    let msg = MessageParser::default().parse(&mails[0]).expect("MIME");
    let subject = msg.subject().expect("subject");
    assert!(
        subject.contains("[Shop]")
            && subject.contains("scan")
            && subject.contains("3 missing (2 ACTIVE, 1 DELETED)"),
        "{subject}"
    );
    let text = msg.body_text(0).expect("text part").into_owned();
    let html = msg.body_html(0).expect("HTML part").into_owned();
    for body in [&text, &html] {
        assert!(body.contains("photos/gone0001.jpg"), "{body}");
        assert!(
            body.contains("Re-upload or restore"),
            "an action fitted to missing files: {body}"
        );
    }
    let report = fx.reports().pop().expect("a report");
    let attached = msg.attachments().next().expect("the report is attached");
    assert_eq!(
        attached.contents(),
        fs::read(&report).expect("report").as_slice(),
        "the attachment is the report"
    );

    // The rows put right: nothing found, nothing mailed under on = "findings".
    let db = rusqlite::Connection::open(fx.path("app.db")).expect("app.db");
    db.execute("DELETE FROM p WHERE id >= 10000", [])
        .expect("fix rows");
    let (code, stdout, stderr) = run(&fx);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Notifications: none sent"), "{stdout}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.received().len(), 1, "no second message");
}
