//! Bad input through the built binary: every refusal is one line on stderr with the right exit
//! code (SPEC §3, precedence 2 > 1 > 4 > 3 > 0), no panic, no secret, no control character from
//! the input, no megabyte of echoed input; and the state database is only touched by runs that
//! can do something.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use common::{Backend, TestDb, block_on, require_service};
use tempfile::TempDir;

const PASSWORD: &str = "hunter2";
/// Nothing listens there: connecting is refused.
const UNREACHABLE_PG: &str = "postgres://u:hunter2@127.0.0.1:1/x";
/// An error line is at most this long, whatever the input.
const LINE_BUDGET: usize = 1500;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| s.chars().take(3000).collect::<String>();
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

/// A folder with a store `media` (one old file, `a.jpg`), a SQLite database `app` whose table
/// `p` references it, and a config over both.
struct Fx {
    dir: TempDir,
}

const BASE: &str = r#"[stores.media]
url = "./media"
min_age = "1h"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "pictures"
query = "SELECT id, img AS key FROM p"
"#;

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("assetgc-bad-")
            .tempdir()
            .expect("temp dir");
        let fx = Fx { dir };
        common::write_file(
            &fx.path("media"),
            "a.jpg",
            b"x",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645),
        );
        let db = rusqlite::Connection::open(fx.path("app.db")).expect("app.db");
        db.execute_batch(
            "CREATE TABLE p (id INTEGER, img TEXT); INSERT INTO p VALUES (1, 'a.jpg');",
        )
        .expect("fixture SQL");
        fx.config(BASE);
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, text: &str) {
        fs::write(self.path("assetgc.toml"), text).expect("write config");
    }

    /// The base config with `from` replaced by `to` (once).
    fn config_with(&self, from: &str, to: &str) {
        assert!(BASE.contains(from), "`{from}` is not in the base config");
        self.config(&BASE.replacen(from, to, 1));
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("assetgc").expect("the assetgc binary");
        c.current_dir(self.dir.path())
            .env_remove("ASSETGC_CONFIG")
            .env_remove("ASSETGC_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("CLOUDINARY_URL")
            .env_remove("CLOUDCUBE_URL")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .args(args)
            .timeout(Duration::from_secs(120));
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        out(&mut self.cmd(args))
    }

    fn state_exists(&self) -> bool {
        self.path("assetgc.db").exists()
    }

    /// `SELECT COUNT(*)` on the SQLite state.
    fn count(&self, sql: &str) -> i64 {
        let db = rusqlite::Connection::open(self.path("assetgc.db")).expect("state db");
        db.query_row(sql, [], |r| r.get(0)).expect("count")
    }
}

fn out(c: &mut Command) -> Out {
    let o = c.output().expect("run assetgc");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Exit `code`, exactly one short line on stderr without panic, backtrace, password or raw
/// control character. Returns that line.
fn one_line(out: &Out, code: i32) -> String {
    assert_eq!(out.code, code, "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {out:?}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace", PASSWORD] {
        assert!(!out.stderr.contains(bad), "`{bad}` on stderr: {out:?}");
    }
    assert!(
        !out.stderr
            .trim_end_matches('\n')
            .chars()
            .any(char::is_control),
        "a raw control character on stderr: {out:?}"
    );
    assert!(
        lines[0].len() <= LINE_BUDGET,
        "an error line of {} bytes: {out:?}",
        lines[0].len()
    );
    lines[0].to_string()
}

fn assert_line(msg: &str, line: usize) {
    assert!(
        msg.contains(&format!("line {line}")),
        "should name line {line}: {msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Exit precedence and the state database (scan #5, reliability #6, scan #19, #20)
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_store_is_usage_before_an_unreachable_postgres_state() {
    let f = Fx::new();
    f.config(&format!("[state]\nurl = \"{UNREACHABLE_PG}\"\n\n{BASE}"));
    for args in [
        &["scan", "--store", "typo"][..],
        &["queue", "add", "--store", "typo", "a.jpg"],
        &["restore", "--store", "typo", "a.jpg"],
        &["purge", "--store", "typo"],
    ] {
        let line = one_line(&f.run(args), 2);
        assert!(
            line.contains("typo") && line.contains("media"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn scan_refused_for_its_request_or_config_creates_no_state_and_records_nothing() {
    let f = Fx::new();
    one_line(&f.run(&["scan", "--store", "typo"]), 2);
    assert!(
        !f.state_exists(),
        "a refused scan created the state database"
    );
    f.config("app_name = \"empty\"\n");
    one_line(&f.run(&["scan"]), 2);
    assert!(
        !f.state_exists(),
        "a refused scan created the state database"
    );
    // Once the state exists, a refused scan still records nothing.
    f.config(BASE);
    assert_eq!(f.run(&["scan"]).code, 0);
    one_line(&f.run(&["scan", "--store", "typo"]), 2);
    one_line(&f.run(&["scan", "--output", "r.txt"]), 2);
    assert_eq!(f.count("SELECT COUNT(*) FROM scans"), 1);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM scans WHERE state = 'failed'"),
        0
    );
}

#[test]
fn check_without_any_store_is_exit_2_and_says_so() {
    let f = Fx::new();
    f.config("app_name = \"empty\"\n");
    let line = one_line(&f.run(&["check"]), 2);
    assert!(line.contains("no [stores.*]"), "{line}");
    assert!(!f.state_exists(), "{line}");
    // Without a config file, DATABASE_URL alone is still checked (README).
    fs::remove_file(f.path("assetgc.toml")).expect("rm config");
    let db_only = out(f.cmd(&["check"]).env("DATABASE_URL", "sqlite://app.db"));
    assert_eq!(db_only.code, 0, "{db_only:?}");
}

#[test]
fn check_that_printed_warnings_does_not_say_plain_everything_answered() {
    let f = Fx::new();
    let clean = f.run(&["check"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(
        clean.stdout.lines().any(|l| l == "everything answered"),
        "{clean:?}"
    );
    // Two stores without references: two warnings, nothing failed.
    for d in ["spare", "other"] {
        fs::create_dir_all(f.path(d)).expect("mkdir");
    }
    f.config(&format!(
        "{}store = \"media\"\n\n[stores.spare]\nurl = \"./spare\"\n\n[stores.other]\nurl = \"./other\"\n",
        BASE
    ));
    let warned = f.run(&["check"]);
    assert_eq!(warned.code, 0, "{warned:?}");
    assert_eq!(warned.stdout.matches("warning: ").count(), 2, "{warned:?}");
    assert!(
        warned
            .stdout
            .lines()
            .any(|l| l == "everything answered, with 2 warnings"),
        "{warned:?}"
    );
    assert!(
        !warned.stdout.lines().any(|l| l == "everything answered"),
        "{warned:?}"
    );
}

#[test]
fn check_reaches_the_state_database_and_exits_1_when_it_cannot() {
    let f = Fx::new();
    f.config(&format!("[state]\nurl = \"{UNREACHABLE_PG}\"\n\n{BASE}"));
    let line = one_line(&f.run(&["check"]), 1);
    assert!(line.contains("state database"), "{line}");
    assert!(line.contains("u:***@127.0.0.1:1"), "{line}");
}

#[test]
fn check_with_a_wrong_state_password_is_exit_1_without_the_password() {
    let Some(admin) = require_service("PostgreSQL", "ASSETGC_TEST_POSTGRES_URL") else {
        return;
    };
    // A role that does not exist fails authentication whatever pg_hba.conf trusts.
    let mut u = url::Url::parse(&admin).expect("admin url");
    u.set_username("assetgc_no_such_role").expect("user");
    u.set_password(Some(PASSWORD)).expect("password");
    let f = Fx::new();
    f.config(&format!("[state]\nurl = \"{u}\"\n\n{BASE}"));
    let line = one_line(&f.run(&["check"]), 1);
    assert!(line.contains("state database"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// check and queries it cannot wrap (scan #4)
// ---------------------------------------------------------------------------------------------

#[test]
fn check_names_a_query_it_cannot_wrap_and_does_not_fail_it_on_mariadb() {
    let f = Fx::new();
    let Some(db) = block_on(TestDb::create(Backend::MariaDb, f.dir.path())) else {
        return;
    };
    block_on(db.execute(&[
        "CREATE TABLE p (id INT, img VARCHAR(200))",
        "CREATE TABLE q (id INT, p_id INT)",
        "INSERT INTO p VALUES (1, 'a.jpg')",
        "INSERT INTO q VALUES (7, 1)",
    ]));
    let query = "SELECT p.id, q.id, p.img AS key FROM p JOIN q ON q.p_id = p.id";
    f.config(
        &BASE
            .replace("sqlite://app.db", &db.url)
            .replace("SELECT id, img AS key FROM p", query),
    );
    let out = f.run(&["check"]);
    // The query itself runs: a scan over it is complete.
    let scan = f.run(&["scan", "--all", "--json"]);
    let broken = {
        f.config(&BASE.replace("sqlite://app.db", &db.url).replace(
            "SELECT id, img AS key FROM p",
            "SELECT p.id, no_such AS key FROM p",
        ));
        f.run(&["check"])
    };
    block_on(db.drop_db());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("pictures") && out.stdout.contains("cannot be wrapped"),
        "names the query that cannot be wrapped: {out:?}"
    );
    assert!(
        out.stdout.contains("warning: reference pictures"),
        "{out:?}"
    );
    assert_eq!(scan.code, 0, "{scan:?}");
    // A query that does not run at all still fails check.
    assert_eq!(broken.code, 4, "{broken:?}");
    assert!(broken.stdout.contains("FAILED"), "{broken:?}");
}

// ---------------------------------------------------------------------------------------------
// Windows and durations (scan #6, deletion #14)
// ---------------------------------------------------------------------------------------------

#[test]
fn huge_and_ancient_windows_never_panic() {
    let f = Fx::new();
    for args in [
        &["scan", "--days", "100000000"][..],
        &["scan", "--days", "4294967295"],
        &["scan", "--since", "0001-01-01"],
        &["scan", "--since", "0001-01-01T00:00:00Z", "--missing-only"],
    ] {
        let out = f.run(args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
    }
    for args in [
        &["scan", "--days", "18446744073709551615"][..],
        &["scan", "--days", "9223372036854775808"],
        &["scan", "--since", "99999999-01-01"],
        &["scan", "--since", "-262144-01-01"],
    ] {
        one_line(&f.run(args), 2);
    }
    assert_eq!(
        f.count("SELECT COUNT(*) FROM scans WHERE state <> 'complete'"),
        0
    );
}

#[test]
fn durations_over_100_years_are_config_errors_naming_key_and_line() {
    let f = Fx::new();
    for (from, to, line, key) in [
        ("min_age = \"1h\"", "min_age = \"1000000y\"", 3, "min_age"),
        (
            "min_age = \"1h\"",
            "quarantine = { keep = \"1000000y\" }",
            3,
            "quarantine keep",
        ),
        (
            "min_age = \"1h\"",
            "min_age = \"99999999999999999999999999y\"",
            3,
            "min_age",
        ),
    ] {
        f.config_with(from, to);
        let msg = one_line(&f.run(&["scan"]), 2);
        assert!(msg.contains(key), "{msg}");
        assert_line(&msg, line);
    }
    f.config(&format!("{BASE}\n[queue]\nbackoff = \"200y\"\n"));
    let msg = one_line(&f.run(&["scan"]), 2);
    assert!(
        msg.contains("backoff") && msg.contains("100 years"),
        "{msg}"
    );
    assert_line(&msg, 13);
    f.config(BASE);
    assert_eq!(f.run(&["scan"]).code, 0);
    let msg = one_line(&f.run(&["purge", "--older-than", "1000000y"]), 2);
    assert!(msg.contains("--older-than"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// A report that cannot be written (scan #7)
// ---------------------------------------------------------------------------------------------

#[test]
fn report_write_failure_keeps_the_scan_recorded_and_exits_4() {
    let f = Fx::new();
    fs::write(f.path("media/b.jpg"), b"orphan").expect("write");
    fs::File::options()
        .write(true)
        .open(f.path("media/b.jpg"))
        .and_then(|file| {
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645))
        })
        .expect("mtime");
    let line = one_line(
        &f.run(&["scan", "--all", "--output", "/proc/nope/x.csv"]),
        4,
    );
    assert!(
        line.contains("/proc/nope") && line.contains("recorded"),
        "{line}"
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM scans WHERE state = 'complete'"),
        1,
        "the scan is recorded, not left running"
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM scan_orphans"),
        1,
        "its findings are kept"
    );
    let history = f.run(&["history"]);
    assert!(history.stdout.contains("complete"), "{history:?}");
}

// ---------------------------------------------------------------------------------------------
// Config errors: untagged tables, secrets, ${VAR} (scan #8, #9, #10)
// ---------------------------------------------------------------------------------------------

#[test]
fn typos_inside_quarantine_and_key_format_tables_name_the_key_line_and_choices() {
    let f = Fx::new();
    for (from, to, line, wants) in [
        (
            "min_age = \"1h\"",
            "quarantine = { prefix = \"t/\", kep = \"7d\" }",
            3,
            &["`kep`", "`prefix`", "`keep`"][..],
        ),
        (
            "min_age = \"1h\"",
            "quarantine = \"yes\"",
            3,
            &["quarantine = false, true or {"],
        ),
        (
            "name = \"pictures\"",
            "name = \"pictures\"\nkey_format = { regx = '(?P<key>.*)' }",
            10,
            &["`regx`", "`regex`"],
        ),
        (
            "name = \"pictures\"",
            "name = \"pictures\"\nkey_format = 3",
            10,
            &["\"path\"", "\"url\"", "\"cloudinary\"", "regex"],
        ),
    ] {
        f.config_with(from, to);
        let msg = one_line(&f.run(&["check"]), 2);
        assert!(
            !msg.contains("untagged") && !msg.contains("variant"),
            "{msg}"
        );
        for w in wants {
            assert!(msg.contains(w), "`{w}` missing from: {msg}");
        }
        assert_line(&msg, line);
    }
}

#[test]
fn secrets_in_bad_urls_show_as_stars() {
    let f = Fx::new();
    for (from, to) in [
        (
            "url = \"sqlite://app.db\"",
            "url = \"postgres://u:hunter2@h/${DB\"",
        ),
        (
            "min_age = \"1h\"",
            "public_url = \"https://u:hunter2@exa mple.com/\"",
        ),
        (
            "url = \"./media\"",
            "url = \"https://AKIA:hunter2@cloud-cube-us2.s3.amazonaws.com/\"",
        ),
        (
            "url = \"sqlite://app.db\"",
            "url = \"postgres://u:hunter2@h/${D B}\"",
        ),
    ] {
        f.config_with(from, to);
        one_line(&f.run(&["scan"]), 2);
    }
    // Any error naming a URL hides its password, whoever wrote the message.
    f.config(&BASE.replace("sqlite://app.db", UNREACHABLE_PG));
    let line = one_line(&f.run(&["scan"]), 1);
    assert!(line.contains("***"), "{line}");
}

#[test]
fn credentials_in_bucket_urls_and_user_name_tokens_are_never_echoed() {
    let f = Fx::new();
    // An S3 secret holds `/` and `+`; a URL with a user name alone carries a token.
    for (url, shown) in [
        ("s3://AKIAKEY:hunter2@my-bucket/media", "s3://"),
        ("s3://AKIAKEY:hun/ter2+x@my-bucket/media", "s3://"),
        ("s3://hunter2@my-bucket", "s3://"),
        ("gs://k:hunter2@my-bucket/p", "gs://"),
        ("az://hunter2@container", "az://"),
        (
            "https://hunter2@files.example/media",
            "https://***@files.example",
        ),
        (
            "ftp://u:hun/ter2@files.example/media",
            "ftp://u:***@files.example",
        ),
    ] {
        f.config_with("url = \"./media\"", &format!("url = \"{url}\""));
        let line = one_line(&f.run(&["scan"]), 2);
        assert!(
            !line.contains("ter2") && !line.contains("hun/") && line.contains(shown),
            "{url}: {line}"
        );
    }
}

#[test]
fn variables_expand_in_key_format_names_and_regex_patterns() {
    let f = Fx::new();
    f.config_with(
        "name = \"pictures\"",
        "name = \"pictures\"\nkey_format = \"${KF}\"",
    );
    let out = out(f.cmd(&["scan", "--all", "--json"]).env("KF", "path"));
    assert_eq!(out.code, 0, "{out:?}");
    f.config_with(
        "name = \"pictures\"",
        "name = \"pictures\"\nkey_format = { regex = '${KEY_RE}' }",
    );
    let out = out_json(
        f.cmd(&["scan", "--all", "--json"])
            .env("KEY_RE", "(?P<key>[a-z]+\\.jpg)"),
    );
    assert_eq!(out["summary"]["orphans"], 0, "{out}");
    let msg = one_line(&f.run(&["scan"]), 2);
    assert!(msg.contains("KEY_RE"), "{msg}");
    assert_line(&msg, 10);
}

fn out_json(c: &mut Command) -> serde_json::Value {
    let o = out(c);
    assert_eq!(o.code, 0, "{o:?}");
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"))
}

// ---------------------------------------------------------------------------------------------
// stdin, control characters, huge input (reliability #2, #3, #4)
// ---------------------------------------------------------------------------------------------

#[test]
fn argument_errors_are_one_line_naming_what_is_missing_or_allowed() {
    let f = Fx::new();
    let line = one_line(&f.run(&["queue", "add"]), 2);
    assert!(line.contains("--store") && line.contains("<KEY>"), "{line}");
    let line = one_line(&f.run(&["scan", "--format", "xml"]), 2);
    assert!(line.contains("csv, json"), "{line}");
}

#[test]
fn queue_add_with_non_utf8_stdin_is_exit_2() {
    let f = Fx::new();
    let out = out(f
        .cmd(&["queue", "add", "--store", "media", "-"])
        .write_stdin(b"good.jpg\n\xff\xfebad.jpg\n".to_vec()));
    let line = one_line(&out, 2);
    assert!(line.contains("UTF-8"), "{line}");
}

#[test]
fn control_characters_from_input_are_escaped_in_errors() {
    let f = Fx::new();
    // A NUL cannot be an argument; it comes through stdin and a file below.
    let evil = "\u{1b}]0;pwned\u{7}x\r\u{9b}.jpg";
    let line = one_line(&f.run(&["queue", "add", "--store", "nope", evil]), 2);
    assert!(line.contains("nope"), "{line}");
    let line = one_line(&f.run(&["queue", "add", "--store", evil, "k.jpg"]), 2);
    assert!(
        line.contains("\\u{1b}]0;pwned\\u{7}x\\r\\u{9b}.jpg"),
        "{line}"
    );
    let out = out(f
        .cmd(&["queue", "add", "--store", "media", "-"])
        .write_stdin(format!("{evil}\u{0}\n")));
    let line = one_line(&out, 2);
    assert!(line.contains("\\u{1b}") && line.contains("\\0"), "{line}");
    // clap's own messages quote the value too (and drop what reads as an escape sequence).
    let line = one_line(&f.run(&["scan", "--days", evil]), 2);
    assert!(
        line.contains("--days") && line.contains("\\r\\u{9b}"),
        "{line}"
    );
    let out = f.run(&["restore", "--store", "media", evil]);
    for l in out.stderr.lines() {
        assert!(!l.chars().any(char::is_control), "{out:?}");
    }
    assert!(!out.stdout.contains('\u{1b}'), "{out:?}");
    // A report whose header line holds a NUL and an escape sequence.
    assert_eq!(f.run(&["scan"]).code, 0);
    fs::write(
        f.path("evil.csv"),
        format!("ORPHANED FILES{evil}\u{0}\nx\n"),
    )
    .expect("write");
    let line = one_line(&f.run(&["purge", "--from-report", "evil.csv"]), 2);
    assert!(line.contains("evil.csv"), "{line}");
}

#[test]
fn huge_input_is_cut_in_error_lines() {
    let f = Fx::new();
    let mb = "k".repeat(1 << 20);
    for (from, to) in [
        (
            "name = \"pictures\"",
            format!("name = \"pictures\"\nkey_format = \"{mb}\""),
        ),
        ("min_age = \"1h\"", format!("{mb} = 1")),
        ("url = \"./media\"", format!("url = \"zz://{mb}\"")),
        ("url = \"./media\"", format!("url = \"${{{mb}}}\"")),
        ("url = \"./media\"", format!("url = \"${{X{mb}}}\"")),
    ] {
        f.config_with(from, &to);
        let line = one_line(&f.run(&["scan"]), 2);
        assert!(
            line.contains("characters"),
            "says how long the input was: {line}"
        );
    }
    f.config(BASE);
    // An argument is at most 128 KiB (MAX_ARG_STRLEN); a megabyte comes through stdin.
    let arg = "k".repeat(100_000);
    one_line(&f.run(&["queue", "add", "--store", &arg, "k.jpg"]), 2);
    one_line(
        &f.run(&["restore", "--store", "media", &format!("a//{arg}")]),
        2,
    );
    let out = out(f
        .cmd(&["queue", "add", "--store", "media", "-"])
        .write_stdin(format!("a//{mb}\n")));
    one_line(&out, 2);
    assert_eq!(f.run(&["scan"]).code, 0);
    fs::write(f.path("big.csv"), format!("{}\n", "h".repeat(20 << 20))).expect("write");
    one_line(&f.run(&["purge", "--from-report", "big.csv"]), 2);
}

// ---------------------------------------------------------------------------------------------
// Colour (reliability #5)
// ---------------------------------------------------------------------------------------------

#[test]
fn warnings_carry_no_colour_codes_unless_asked() {
    let f = Fx::new();
    // `--notify` with `on = "always"` and no channel to send to: a warning on stderr.
    f.config(&format!("{BASE}\n[notify]\non = \"always\"\n"));
    let warn = |color: Option<&str>, no_color: bool| {
        let mut args = Vec::new();
        if let Some(c) = color {
            args.extend(["--color", c]);
        }
        args.extend(["-q", "scan", "--notify"]);
        let mut c = f.cmd(&args);
        if !no_color {
            c.env_remove("NO_COLOR");
        }
        let o = out(&mut c);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains("notif"), "{o:?}");
        o.stderr.contains('\u{1b}')
    };
    assert!(!warn(None, false), "stderr is not a terminal");
    assert!(!warn(Some("never"), false));
    assert!(!warn(Some("auto"), true));
    assert!(warn(Some("always"), false), "--color always keeps colours");
    assert!(
        warn(Some("always"), true),
        "--color always wins over NO_COLOR"
    );
}

// ---------------------------------------------------------------------------------------------
// Fresh state databases opened by several processes at once (reliability #8)
// ---------------------------------------------------------------------------------------------

/// Starts `n` runs of `args` at once and waits for them all.
fn at_once(f: &Fx, n: usize, args: &[&str]) -> Vec<Out> {
    let children: Vec<std::process::Child> = (0..n)
        .map(|_| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"));
            c.current_dir(f.dir.path())
                .env_remove("ASSETGC_CONFIG")
                .env_remove("ASSETGC_LOG")
                .env("NO_COLOR", "1")
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawn assetgc")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().expect("wait");
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        })
        .collect()
}

#[test]
fn processes_starting_together_on_a_fresh_sqlite_state_all_succeed() {
    for _ in 0..3 {
        let f = Fx::new();
        for o in at_once(&f, 8, &["-q", "scan"]) {
            assert_eq!(o.code, 0, "{o:?}");
        }
        assert_eq!(
            f.count("SELECT COUNT(*) FROM scans WHERE state = 'complete'"),
            8
        );
    }
}

#[test]
fn processes_starting_together_on_a_fresh_postgres_state_all_succeed() {
    let f = Fx::new();
    let Some(db) = block_on(TestDb::create(Backend::Postgres, f.dir.path())) else {
        return;
    };
    f.config(&format!("[state]\nurl = \"{}\"\n\n{BASE}", db.url));
    let runs = at_once(&f, 8, &["-q", "scan"]);
    block_on(db.drop_db());
    for o in runs {
        assert_eq!(o.code, 0, "{o:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// README (scan #13, #21)
// ---------------------------------------------------------------------------------------------

#[test]
fn check_spends_the_admin_calls_the_readme_states() {
    use common::cloudinary::{Emulator, Options, Resource};
    let now = chrono::Utc::now() - chrono::TimeDelta::days(3);
    for (types, per_type, low, high) in [
        (r#"["image", "video"]"#, 1200, 4, 6),
        (r#"["image", "video", "raw"]"#, 1200, 5, 8),
        (r#"["image", "video"]"#, 0, 3, 3),
    ] {
        let emulator = Emulator::start(Options::default());
        emulator.add_many((0..per_type).flat_map(|i| {
            [
                Resource::image(&format!("p/{i}"), now),
                Resource::video(&format!("v/{i}"), now),
                Resource::raw(&format!("r/{i}.txt"), now),
            ]
        }));
        let f = Fx::new();
        f.config(&format!(
            "[stores.media]\nurl = \"{}\"\nresource_types = {types}\n",
            emulator.cloudinary_url()
        ));
        let out = f.run(&["check"]);
        assert_eq!(out.code, 0, "{out:?}");
        let calls = emulator.calls();
        assert!(
            (low..=high).contains(&calls),
            "{types}, {per_type} a type: check made {calls} calls, the README says {low} to {high}"
        );
    }
}

#[test]
fn readme_documents_checks_cost_and_the_variables_read() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for needle in ["ASSETGC_LOG", "NO_COLOR", "Admin API calls"] {
        assert!(readme.contains(needle), "README does not mention {needle}");
    }
    assert!(
        !readme.contains("check spends a call or two"),
        "README understates check's cost"
    );
}
