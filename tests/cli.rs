//! The built `assetgc` binary, end to end, on a temp folder store and a SQLite database: exit
//! codes (SPEC §3), the CSV, JSON and `-q` reports (§5), one-line errors for bad input, and the
//! folder store never leaving its root (§6 invariant 6).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};
use tempfile::TempDir;

/// Upload time of the fixture's old files: 2024-01-02T03:04:05Z.
const OLD_SECS: u64 = 1_704_164_645;
const OLD: &str = "2024-01-02T03:04:05Z";

const ORPHAN_HEADER: &str = "store,key,resource_type,size_bytes,size_mb,format,uploaded_at,url";
const MISSING_HEADER: &str =
    "reference,record_id,title,owner,media_type,key,created_at,status,link";

/// Nothing listens there: connecting is refused.
const UNREACHABLE_PG: &str = "postgres://u:hunter2@127.0.0.1:1/x";
const PASSWORD: &str = "hunter2";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A temp folder that holds the config, the database, the store and the reports.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("assetgc-cli-")
            .tempdir()
            .expect("temp dir");
        Fixture { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes `size` bytes at `rel`, with the given modification time (`None`: now).
    fn file(&self, rel: &str, size: usize, modified: Option<SystemTime>) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(&p, vec![b'x'; size]).expect("write");
        if let Some(t) = modified {
            fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(t))
                .expect("set mtime");
        }
    }

    /// An old file: past any `min_age`, uploaded at `OLD`.
    fn old(&self, rel: &str, size: usize) {
        self.file(rel, size, Some(old_time()));
    }

    fn mkdir(&self, rel: &str) {
        fs::create_dir_all(self.path(rel)).expect("mkdir");
    }

    fn config(&self, text: &str) {
        fs::write(self.path("assetgc.toml"), text).expect("write config");
    }

    /// Creates `rel` as a SQLite database and runs `sql` in it.
    fn sqlite(&self, rel: &str, sql: &str) {
        let path = self.path(rel);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut conn = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Delete)
                .connect()
                .await
                .expect("open sqlite");
            sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .expect("fixture SQL");
            conn.close().await.expect("close sqlite");
        });
    }

    /// Runs the binary in the fixture's folder with a clean environment.
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::cargo_bin("assetgc")
            .expect("the assetgc binary")
            .current_dir(self.root())
            .env_remove("ASSETGC_CONFIG")
            .env_remove("ASSETGC_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("CLOUDINARY_URL")
            .env_remove("CLOUDCUBE_URL")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .args(args)
            .timeout(Duration::from_secs(120))
            .output()
            .expect("run assetgc");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// The report files written under `reports/`.
    fn reports(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.path("reports"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Snapshot filters: the temp folder, report file times and durations.
    fn filters(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for p in [
            self.root().to_path_buf(),
            self.root().canonicalize().expect("canonical temp dir"),
        ] {
            v.push((regex::escape(&p.display().to_string()), "[TMP]".to_string()));
        }
        v.push((
            r"asset_detection_\d{4}-\d{2}-\d{2}_\d{6}(_\d+)?".to_string(),
            "asset_detection_[TIME]".to_string(),
        ));
        v.push((r"\b\d+\.\d{2} s\b".to_string(), "[DURATION]".to_string()));
        v
    }
}

fn old_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(OLD_SECS)
}

/// Exit `code`, nothing on stdout, exactly one line on stderr, no panic text, no password.
/// Returns that line.
fn one_line_error(out: &Output, code: i32) -> String {
    assert_eq!(out.code, code, "{out:?}");
    assert_eq!(out.stdout, "", "errors go to stderr only: {out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {out:?}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace", PASSWORD] {
        assert!(!out.stderr.contains(bad), "`{bad}` on stderr: {out:?}");
    }
    lines[0].to_string()
}

/// The line number a config error names (`... line N: ...`).
fn assert_names_line(msg: &str, line: usize) {
    assert!(
        msg.contains(&format!("line {line}")),
        "the message should name line {line}: {msg}"
    );
}

/// The CSV layout of SPEC §5, exactly: both titles and headers, two empty lines between the
/// sections, one line per row, a final newline.
fn assert_csv_layout(csv: &str, orphans: usize, missing: usize) {
    let lines: Vec<&str> = csv.split('\n').collect();
    assert_eq!(lines[0], "ORPHANED FILES", "{csv}");
    assert_eq!(lines[1], ORPHAN_HEADER, "{csv}");
    let gap = 2 + orphans;
    for row in &lines[2..gap] {
        assert!(!row.is_empty(), "an orphan row is empty: {csv}");
    }
    assert_eq!(lines[gap], "", "first empty line between sections: {csv}");
    assert_eq!(
        lines[gap + 1],
        "",
        "second empty line between sections: {csv}"
    );
    assert_eq!(lines[gap + 2], "RECORDS WITH MISSING FILES", "{csv}");
    assert_eq!(lines[gap + 3], MISSING_HEADER, "{csv}");
    let end = gap + 4 + missing;
    for row in &lines[gap + 4..end] {
        assert!(!row.is_empty(), "a missing row is empty: {csv}");
    }
    assert_eq!(
        lines.len(),
        end + 1,
        "one line per row, then a newline: {csv}"
    );
    assert_eq!(lines[end], "", "{csv}");
}

/// The non-empty, non-title, non-header CSV records of a report.
fn csv_records(csv: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv.as_bytes())
        .records()
        .map(|r| {
            r.expect("valid CSV")
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .collect()
}

fn keys(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|o| o["key"].as_str().expect("a key").to_string())
        .collect()
}

const POSTS_TABLE: &str = "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, owner TEXT, image TEXT, created_at TEXT, deleted_at TEXT, slug TEXT);";

const POSTS_REFERENCE: &str = r#"
[[references]]
name = "post images"
query = """
  SELECT id, title, owner, image AS key, created_at,
         CASE WHEN deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status, slug
  FROM posts;
"""
link = "https://example.com/p/{slug}/"
"#;

/// A store `media`, a database `app` with one table `posts`, one reference over it.
fn config_text(extra_store_lines: &str) -> String {
    format!(
        r#"app_name = "Fixture"

[stores.media]
url = "./media"
ignore = ["static/**"]
min_age = "1h"
public_url = "https://cdn.example.com/media"
{extra_store_lines}
[databases.app]
url = "sqlite://app.db"
{POSTS_REFERENCE}"#
    )
}

/// The fixed fixture: referenced, soft-deleted-but-referenced, orphan (two of them named like
/// formulas), ignored, too-recent and quarantined files, and rows whose files are missing.
fn standard() -> Fixture {
    let f = Fixture::new();
    f.old("media/posts/a.jpg", 100);
    f.old("media/posts/b.png", 200);
    f.old("media/posts/c.jpg", 300);
    f.old("media/-dash.txt", 10);
    f.old("media/=cmd.jpg", 20);
    f.old("media/orphans/old.jpg", 2_411_520);
    f.old("media/static/logo.png", 50);
    f.file("media/fresh/new.jpg", 30, None);
    f.old("media/.assetgc-trash/20240101T000000Z/q.jpg", 40);
    f.config(&config_text(""));
    f.sqlite(
        "app.db",
        &format!(
            "{POSTS_TABLE}
             INSERT INTO posts VALUES
               (1, 'Sunset', 'alice', 'posts/a.jpg', '2024-01-01 10:00:00', NULL, 'sunset'),
               (2, 'Beach', 'bob', '/posts/b.png', '2024-01-01T11:00:00Z', NULL, 'beach'),
               (3, '=SUM(A1:A9)', '-mallory', 'posts/gone.jpg', '2024-02-03T04:05:06Z', NULL, 'gone'),
               (4, 'Old draft', 'carol', 'posts/deleted-gone.jpg', '2024-03-01 00:00:00', '2024-03-02', 'old'),
               (5, 'No image', 'dave', NULL, '2024-03-01 00:00:00', NULL, 'none'),
               (6, 'Trashed but kept', 'erin', 'posts/c.jpg', '2024-03-01 00:00:00', '2024-03-05', 'kept');"
        ),
    );
    f
}

/// Every file referenced, nothing missing.
fn clean() -> Fixture {
    let f = Fixture::new();
    f.old("media/posts/a.jpg", 100);
    f.config(&config_text(""));
    f.sqlite(
        "app.db",
        &format!(
            "{POSTS_TABLE}
             INSERT INTO posts VALUES (1, 'Sunset', 'alice', 'posts/a.jpg', '2024-01-01 10:00:00', NULL, 'sunset');"
        ),
    );
    f
}

// ---------------------------------------------------------------------------------------------
// Exit codes of `scan` (SPEC §3)
// ---------------------------------------------------------------------------------------------

#[test]
fn complete_scan_with_findings_exits_0() {
    let f = standard();
    let out = f.run(&["scan", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(f.reports().len(), 1, "one report written: {out:?}");
}

#[test]
fn complete_scan_without_findings_exits_0_and_writes_both_empty_sections() {
    let f = clean();
    let out = f.run(&["scan", "--all", "--output", "report.csv"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        f.read("report.csv"),
        format!(
            "ORPHANED FILES\n{ORPHAN_HEADER}\n\n\nRECORDS WITH MISSING FILES\n{MISSING_HEADER}\n"
        )
    );
}

#[test]
fn fail_on_findings_with_findings_exits_3() {
    let f = standard();
    let out = f.run(&["scan", "--all", "--fail-on-findings"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(f.reports().len(), 1, "the report is still written: {out:?}");
}

#[test]
fn fail_on_findings_without_findings_exits_0() {
    let f = clean();
    let out = f.run(&["scan", "--all", "--fail-on-findings"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn failing_reference_query_is_exit_4_and_the_report_is_marked_incomplete() {
    let f = standard();
    f.config(&format!(
        r#"{}
[[references]]
name = "broken"
query = "SELECT image AS key FROM no_such_table"
"#,
        config_text("")
    ));
    let out = f.run(&["scan", "--all", "--json", "--output", "report.csv"]);
    assert_eq!(out.code, 4, "{out:?}");
    let json = out.json();
    assert_eq!(json["scan"]["complete"], Value::Bool(false), "{out:?}");
    let warnings = json["scan"]["warnings"].to_string();
    assert!(
        warnings.contains("broken") && warnings.contains("no_such_table"),
        "a warning names the failed reference and why: {warnings}"
    );
    // What was done is still reported: the missing rows; the store's orphans are undecided,
    // since the failed reference may name them.
    assert!(warnings.contains("left undecided"), "{warnings}");
    let csv = f.read("report.csv");
    assert_csv_layout(&csv, 0, 2);
    let quiet = f.run(&["-q", "scan", "--all"]);
    assert_eq!(quiet.code, 4, "{quiet:?}");
    assert!(
        quiet.stdout.starts_with("INCOMPLETE: "),
        "the -q line says the scan is incomplete: {quiet:?}"
    );
}

#[test]
fn one_missing_store_folder_of_two_is_exit_4() {
    let f = standard();
    // A second store whose folder does not exist; the reference now has to name its store.
    f.config(&format!(
        "{}store = \"media\"\n\n[stores.gone]\nurl = \"./no-such-folder\"\n",
        config_text("")
    ));
    let out = f.run(&["scan", "--all", "--json"]);
    assert_eq!(out.code, 4, "{out:?}");
    let json = out.json();
    assert_eq!(json["scan"]["complete"], Value::Bool(false));
    assert!(
        json["scan"]["warnings"].to_string().contains("gone"),
        "a warning names the unreachable store: {}",
        json["scan"]["warnings"]
    );
    assert_eq!(
        json["summary"]["orphans"], 3,
        "the reachable store is still scanned"
    );
    assert_eq!(f.reports().len(), 1, "the report is still written");
}

#[test]
fn incomplete_scan_with_findings_and_fail_on_findings_is_exit_4_not_3() {
    let f = standard();
    f.config(&format!(
        "{}\n[[references]]\nname = \"broken\"\nquery = \"SELECT x AS key FROM no_such_table\"\n",
        config_text("")
    ));
    let out = f.run(&["scan", "--all", "--fail-on-findings"]);
    assert_eq!(out.code, 4, "4 wins over 3: {out:?}");
}

#[test]
fn only_store_folder_missing_is_exit_1_with_one_line() {
    let f = standard();
    fs::remove_dir_all(f.path("media")).expect("remove media");
    let out = f.run(&["scan", "--all"]);
    let line = one_line_error(&out, 1);
    assert!(
        line.contains("media"),
        "names the store or its folder: {line}"
    );
}

#[test]
fn only_database_file_missing_is_exit_1_with_one_line_and_creates_nothing() {
    let f = standard();
    fs::remove_file(f.path("app.db")).expect("remove app.db");
    let out = f.run(&["scan", "--all"]);
    let line = one_line_error(&out, 1);
    assert!(line.contains("app.db"), "names the database file: {line}");
    assert!(
        !f.path("app.db").exists(),
        "a scan never creates the application's database"
    );
}

#[test]
fn unreachable_database_is_exit_1_with_one_line_and_no_password() {
    let f = standard();
    f.config(&config_text("").replace("sqlite://app.db", UNREACHABLE_PG));
    let out = f.run(&["scan", "--all"]);
    let line = one_line_error(&out, 1);
    assert!(line.contains("***"), "the password is shown as ***: {line}");
}

#[test]
fn usage_error_wins_over_an_unreachable_store_exit_2() {
    let f = standard();
    fs::remove_dir_all(f.path("media")).expect("remove media");
    let out = f.run(&["scan", "--all", "--output", "report.txt"]);
    one_line_error(&out, 2);
}

// ---------------------------------------------------------------------------------------------
// Reports (SPEC §5)
// ---------------------------------------------------------------------------------------------

#[test]
fn csv_report_has_the_spec_layout_escapes_formulas_and_matches_its_snapshot() {
    let f = standard();
    let out = f.run(&["scan", "--all", "--output", "report.csv"]);
    assert_eq!(out.code, 0, "{out:?}");
    let csv = f.read("report.csv");
    assert_csv_layout(&csv, 3, 2);

    let records = csv_records(&csv);
    let orphan_keys: Vec<&str> = records[2..5].iter().map(|r| r[1].as_str()).collect();
    // Ordered by key; a cell starting with `-` or `=` gets one leading `'`.
    assert_eq!(orphan_keys, ["'-dash.txt", "'=cmd.jpg", "orphans/old.jpg"]);
    let old = &records[4];
    assert_eq!(old[3], "2411520");
    assert_eq!(old[4], "2.30", "size_mb is MiB with two decimals");
    assert_eq!(old[5], "jpg");
    assert_eq!(old[6], OLD, "RFC 3339 UTC to whole seconds");
    assert_eq!(old[7], "https://cdn.example.com/media/orphans/old.jpg");
    // ACTIVE first, DELETED last; formula-like title and owner escaped.
    let active = &records[7];
    assert_eq!(active[0], "post images");
    assert_eq!(active[1], "3");
    assert_eq!(active[2], "'=SUM(A1:A9)");
    assert_eq!(active[3], "'-mallory");
    assert_eq!(active[5], "posts/gone.jpg");
    assert_eq!(active[6], "2024-02-03T04:05:06Z");
    assert_eq!(active[7], "ACTIVE");
    assert_eq!(active[8], "https://example.com/p/gone/");
    assert_eq!(records[8][7], "DELETED");
    assert_eq!(records[8][5], "posts/deleted-gone.jpg");

    let filters = f.filters();
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("csv_report", csv);
    });
}

#[test]
fn json_report_is_the_only_stdout_output_and_matches_its_snapshot() {
    let f = standard();
    let out = f.run(&["scan", "--all", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut json = out.json();

    let scan = &json["scan"];
    assert!(scan["id"].is_i64(), "scan.id is an integer: {scan}");
    assert_eq!(scan["window"], serde_json::json!({ "all": true }));
    assert_eq!(scan["stores"], serde_json::json!(["media"]));
    assert_eq!(scan["complete"], Value::Bool(true));
    assert!(scan["api_calls"].is_object());
    assert!(scan["warnings"].is_array());
    let s = &json["summary"];
    // objects_scanned = valid + orphans + too_recent + ignored; quarantine is never listed.
    assert_eq!(s["objects_scanned"], 8, "{s}");
    assert_eq!(s["valid"], 3, "{s}");
    assert_eq!(s["orphans"], 3, "{s}");
    assert_eq!(s["orphan_bytes"], 2_411_550, "{s}");
    assert_eq!(s["too_recent"], 1, "{s}");
    assert_eq!(s["ignored"], 1, "{s}");
    assert_eq!(s["missing"], 2, "{s}");
    assert_eq!(s["missing_active"], 1, "{s}");
    // Unescaped in JSON; numbers are numbers; record_id is a string.
    assert_eq!(
        keys(&json["orphans"]),
        ["-dash.txt", "=cmd.jpg", "orphans/old.jpg"]
    );
    assert_eq!(json["orphans"][2]["size_bytes"], 2_411_520);
    assert!(json["orphans"][2]["size_mb"].is_number());
    assert_eq!(json["missing"][0]["record_id"], "3");
    assert_eq!(json["missing"][0]["title"], "=SUM(A1:A9)");

    for (field, to) in [
        ("id", "[id]"),
        ("started_at", "[time]"),
        ("finished_at", "[time]"),
    ] {
        json["scan"][field] = Value::String(to.to_string());
    }
    insta::assert_json_snapshot!("json_report", json);
}

#[test]
fn json_report_file_matches_the_stdout_report() {
    let f = standard();
    let out = f.run(&["scan", "--all", "--json", "--output", "report.json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let file: Value = serde_json::from_str(&f.read("report.json")).expect("JSON file");
    assert_eq!(file, out.json());
}

#[test]
fn quiet_scan_prints_one_summary_line_matching_its_snapshot() {
    let f = standard();
    let out = f.run(&["-q", "scan", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    let report = f.reports().pop().expect("a report");
    assert!(
        out.stdout.contains(&report.display().to_string()),
        "the line names the report: {out:?}"
    );
    let filters = f.filters();
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("quiet_line", out.stdout);
    });
}

#[test]
fn console_report_matches_its_snapshot() {
    let f = standard();
    let out = f.run(&["scan", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    let filters = f.filters();
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("console_report", out.stdout);
    });
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 2, one line on stderr, no panic, no secret
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_config_file_is_exit_2_naming_the_path() {
    let f = standard();
    let out = f.run(&["--config", "nope.toml", "scan"]);
    let line = one_line_error(&out, 2);
    assert!(line.contains("nope.toml"), "{line}");
}

#[test]
fn toml_syntax_error_is_exit_2_with_its_line() {
    let f = standard();
    f.config("app_name = \"x\"\n\n[stores.media]\nurl = \"./media\n");
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert_names_line(&line, 4);
}

#[test]
fn unknown_key_is_exit_2_with_the_key_and_its_line() {
    let f = standard();
    f.config(&config_text("bogus_key = 1"));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("bogus_key"), "{line}");
    assert_names_line(&line, 8);
}

#[test]
fn bad_duration_is_exit_2_with_the_value_and_its_line() {
    let f = standard();
    f.config(&config_text("").replace("min_age = \"1h\"", "min_age = \"soon\""));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("soon"), "{line}");
    assert_names_line(&line, 6);
}

#[test]
fn bad_glob_is_exit_2_with_the_pattern_and_its_line() {
    let f = standard();
    f.config(&config_text("").replace("ignore = [\"static/**\"]", "ignore = [\"a[\"]"));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("a["), "{line}");
    assert_names_line(&line, 5);
}

#[test]
fn bad_regex_is_exit_2_with_its_line() {
    let f = standard();
    f.config(&format!(
        "{}key_format = {{ regex = '(?P<key>[a-z' }}\n",
        config_text("")
    ));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("regex"), "{line}");
    assert_names_line(&line, 20);
}

#[test]
fn regex_without_a_key_group_is_exit_2_saying_so() {
    let f = standard();
    f.config(&format!(
        "{}key_format = {{ regex = 'src=\"([^\"]+)\"' }}\n",
        config_text("")
    ));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("key"), "{line}");
    assert_names_line(&line, 20);
}

#[test]
fn unknown_store_in_a_reference_is_exit_2_naming_it() {
    let f = standard();
    f.config(&format!("{}store = \"nowhere\"\n", config_text("")));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("nowhere"), "{line}");
    assert_names_line(&line, 20);
}

#[test]
fn database_password_never_shows_in_a_config_error() {
    let f = standard();
    // An error elsewhere in a config that holds a password.
    f.config(
        &config_text("")
            .replace("sqlite://app.db", UNREACHABLE_PG)
            .replace("min_age = \"1h\"", "min_age = \"soon\""),
    );
    one_line_error(&f.run(&["scan"]), 2);
    // An error in the URL itself.
    f.config(&config_text("").replace(
        "sqlite://app.db",
        "postgres://u:hunter2@127.0.0.1:99999999/x",
    ));
    let line = one_line_error(&f.run(&["scan"]), 2);
    assert!(line.contains("***"), "the password is shown as ***: {line}");
}

#[test]
fn orphans_only_with_missing_only_is_exit_2() {
    let f = standard();
    let line = one_line_error(&f.run(&["scan", "--orphans-only", "--missing-only"]), 2);
    assert!(line.contains("--missing-only"), "{line}");
}

#[test]
fn negative_days_is_exit_2() {
    let f = standard();
    let line = one_line_error(&f.run(&["scan", "--days", "-1"]), 2);
    assert!(line.contains("-1"), "{line}");
}

#[test]
fn unknown_report_extension_is_exit_2_before_any_work() {
    let f = standard();
    let line = one_line_error(&f.run(&["scan", "--output", "report.txt"]), 2);
    assert!(line.contains("report.txt"), "{line}");
    assert!(!f.path("report.txt").exists());
    assert!(f.reports().is_empty(), "no report written");
}

// ---------------------------------------------------------------------------------------------
// The folder store never leaves its root (SPEC §6 invariant 6)
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
fn with_links_out(f: &Fixture) {
    use std::os::unix::fs::symlink;
    f.old("outside_dir/secret_outside.jpg", 11);
    f.old("outside_dir/deep/deep_outside.jpg", 12);
    f.old("outside_file.jpg", 13);
    f.mkdir("media");
    symlink(f.path("outside_dir"), f.path("media/linked")).expect("symlink to a folder");
    symlink(f.path("outside_file.jpg"), f.path("media/linked_file.jpg"))
        .expect("symlink to a file");
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_root_are_never_listed_or_orphans() {
    let f = standard();
    with_links_out(&f);
    // `--all` lists names only and stats the candidates; a window lists with sizes and times.
    for window in [["--all", ""], ["--days", "3650"]] {
        let window: Vec<&str> = window.into_iter().filter(|a| !a.is_empty()).collect();
        let mut args = vec!["scan", "--json", "--output", "report.csv"];
        args.extend(&window);
        let out = f.run(&args);
        assert_eq!(out.code, 0, "{window:?}: {out:?}");
        let json = out.json();
        assert_eq!(
            keys(&json["orphans"]),
            ["-dash.txt", "=cmd.jpg", "orphans/old.jpg"],
            "{window:?}: nothing behind a link is an orphan"
        );
        assert_eq!(
            json["summary"]["objects_scanned"], 8,
            "{window:?}: links are not objects"
        );
        let csv = f.read("report.csv");
        for text in [&out.stdout, &csv, &out.stderr] {
            for outside in [
                "outside_dir",
                "secret_outside",
                "deep_outside",
                "outside_file",
            ] {
                assert!(
                    !text.contains(outside),
                    "{window:?}: `{outside}` (outside the root) appears in the output:\n{text}"
                );
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn missing_only_looks_keys_up_and_never_through_a_link() {
    let f = standard();
    with_links_out(&f);
    f.sqlite(
        "app.db",
        "INSERT INTO posts VALUES
           (7, 'Via link', 'x', 'linked/secret_outside.jpg', '2024-03-01 00:00:00', NULL, 'l'),
           (8, 'File link', 'x', 'linked_file.jpg', '2024-03-01 00:00:00', NULL, 'lf');",
    );
    let out = f.run(&["scan", "--all", "--missing-only", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let json = out.json();
    assert_eq!(
        keys(&json["missing"]),
        [
            "posts/gone.jpg",
            "linked/secret_outside.jpg",
            "linked_file.jpg",
            "posts/deleted-gone.jpg"
        ],
        "present keys (posts/a.jpg, posts/b.png, posts/c.jpg) are not missing; keys only reachable through a link are"
    );
    assert!(json["orphans"].as_array().expect("orphans").is_empty());
    // The console says it used point look-ups: one per distinct representable key.
    let console = f.run(&["scan", "--all", "--missing-only"]);
    assert_eq!(console.code, 0, "{console:?}");
    assert!(
        console.stdout.contains("7 point look-ups"),
        "{}",
        console.stdout
    );
    // A listing finds the same missing rows as the look-ups.
    let listed = f.run(&["scan", "--all", "--json"]);
    assert_eq!(keys(&listed.json()["missing"]), keys(&json["missing"]));
}

#[test]
fn dot_dot_reference_values_are_never_looked_up_or_orphans() {
    let f = standard();
    // `media/../outside.jpg` exists; `media/a/../../x.jpg` does not.
    f.old("outside.jpg", 14);
    f.config(&format!(
        r#"{}
[[references]]
name = "escapes"
query = "SELECT id, value AS key FROM escapes"
"#,
        config_text("")
    ));
    f.sqlite(
        "app.db",
        "CREATE TABLE escapes (id INTEGER, value TEXT);
         INSERT INTO escapes VALUES (1, '../outside.jpg'), (2, 'a/../../x.jpg');",
    );
    let out = f.run(&["scan", "--all", "--missing-only", "--json"]);
    let json = out.json();
    // Unreadable values: counted, warned about by row id, never missing.
    assert_eq!(json["summary"]["unparsed"], 2, "{out:?}");
    let warnings = json["scan"]["warnings"].to_string();
    assert!(
        warnings.contains("escapes")
            && warnings.contains("row id 1")
            && warnings.contains("row id 2"),
        "{warnings}"
    );
    assert_eq!(
        keys(&json["missing"]),
        ["posts/gone.jpg", "posts/deleted-gone.jpg"],
        "{out:?}"
    );
    // Every value of `escapes` is unreadable (more than 1 %): the scan is incomplete.
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(json["scan"]["complete"], Value::Bool(false));
    // Only the five representable keys of `post images` are looked up.
    let console = f.run(&["scan", "--all", "--missing-only"]);
    assert!(console.stdout.contains("5 point look-ups"), "{console:?}");

    let full = f.run(&["scan", "--all", "--json", "--output", "report.csv"]);
    let json = full.json();
    assert_eq!(
        keys(&json["orphans"]),
        ["-dash.txt", "=cmd.jpg", "orphans/old.jpg"]
    );
    assert_eq!(
        keys(&json["missing"]),
        ["posts/gone.jpg", "posts/deleted-gone.jpg"]
    );
    let csv = f.read("report.csv");
    let sections: Vec<String> = csv_records(&csv)
        .into_iter()
        .flat_map(|r| r.into_iter())
        .collect();
    assert!(
        !sections
            .iter()
            .any(|c| c.contains("outside") || c.contains("x.jpg")),
        "no path outside the root in the report: {csv}"
    );
}

// ---------------------------------------------------------------------------------------------
// init, check, demo
// ---------------------------------------------------------------------------------------------

/// Fills each empty `url = ""` with the value for the section it is in.
fn fill_in_urls(template: &str, store: &str, database: &str) -> String {
    let mut section = String::new();
    let mut filled = (0, 0);
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        let empty_url = trimmed.starts_with("url") && trimmed.contains("\"\"");
        if empty_url && section.starts_with("[stores.") {
            out.push_str(&line.replacen("\"\"", &format!("\"{store}\""), 1));
            filled.0 += 1;
        } else if empty_url && section.starts_with("[databases.") {
            out.push_str(&line.replacen("\"\"", &format!("\"{database}\""), 1));
            filled.1 += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        filled,
        (1, 1),
        "one empty store url and one empty database url:\n{template}"
    );
    out
}

#[test]
fn init_writes_a_commented_config() {
    let f = Fixture::new();
    let out = f.run(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = f.read("assetgc.toml");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            >= 5,
        "the config explains itself in comments:\n{text}"
    );
    toml::from_str::<toml::Table>(&text).expect("valid TOML");
}

#[test]
fn init_never_overwrites_without_force() {
    let f = Fixture::new();
    f.config("# mine\n");
    let line = one_line_error(&f.run(&["init"]), 2);
    assert!(line.contains("--force"), "says how to overwrite: {line}");
    assert_eq!(f.read("assetgc.toml"), "# mine\n", "the file is untouched");
    let out = f.run(&["init", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(f.read("assetgc.toml"), "# mine\n");
}

#[test]
fn init_config_passes_check_once_its_two_urls_are_filled_in() {
    let f = Fixture::new();
    let out = f.run(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    f.mkdir("media");
    f.sqlite("app.db", POSTS_TABLE);
    f.config(&fill_in_urls(
        &f.read("assetgc.toml"),
        "./media",
        "sqlite://app.db",
    ));
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn check_accepts_a_good_config_with_exit_0() {
    let f = standard();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn check_config_error_is_exit_2_with_one_line() {
    let f = standard();
    f.config(&config_text("bogus_key = 1"));
    let line = one_line_error(&f.run(&["check"]), 2);
    assert!(line.contains("bogus_key"), "{line}");
    assert_names_line(&line, 8);
}

#[test]
fn check_unreachable_store_is_exit_1() {
    let f = standard();
    fs::remove_dir_all(f.path("media")).expect("remove media");
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn check_unreachable_database_is_exit_1_without_password() {
    let f = standard();
    f.config(&config_text("").replace("sqlite://app.db", UNREACHABLE_PG));
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
        "{out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn check_failing_reference_query_is_exit_4() {
    let f = standard();
    f.config(&format!(
        "{}\n[[references]]\nname = \"broken\"\nquery = \"SELECT x AS key FROM no_such_table\"\n",
        config_text("")
    ));
    let out = f.run(&["check"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stdout.contains("broken") || out.stderr.contains("broken"),
        "names the failed reference: {out:?}"
    );
}

#[test]
fn demo_builds_a_sample_app_scans_it_and_prints_the_report_path() {
    let f = Fixture::new();
    let out = f.run(&["demo", "--dir", "D"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(f.path("D/assetgc.toml").is_file(), "{out:?}");
    assert!(f.path("D/app.db").is_file(), "{out:?}");
    assert!(f.path("D/media").is_dir(), "{out:?}");
    // The summary names a report that exists.
    let report = out
        .stdout
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| "`'\"(),".contains(c)))
        .filter(|w| {
            Path::new(w)
                .extension()
                .is_some_and(|e| e == "csv" || e == "json")
        })
        .map(|w| f.root().join(w))
        .find(|p| p.is_file());
    assert!(report.is_some(), "no existing report path in: {out:?}");
    // What the demo wrote is a working configuration.
    let check = f.run(&["--config", "D/assetgc.toml", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn scans_and_their_findings_are_recorded_and_history_lists_them() {
    let f = standard();
    let first = f.run(&["scan", "--all", "--json"]);
    assert_eq!(first.code, 0, "{first:?}");
    let json = first.json();
    let id = json["scan"]["id"].as_i64().expect("scan id");
    let second = f.run(&["scan", "--days", "7", "--missing-only"]);
    assert_eq!(second.code, 0, "{second:?}");

    // The findings of the first scan, as the report has them, are in the state database.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (orphans, missing) = rt.block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(f.path("assetgc.db"))
            .connect()
            .await
            .expect("state db");
        let orphans: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT store, key, size_bytes, format FROM scan_orphans WHERE scan_id = ? ORDER BY key",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .expect("orphans");
        let missing: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, status FROM scan_missing WHERE scan_id = ? ORDER BY ord",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .expect("missing");
        conn.close().await.expect("close");
        (orphans, missing)
    });
    assert_eq!(
        orphans,
        [
            ("media".into(), "-dash.txt".into(), 10, "txt".into()),
            ("media".into(), "=cmd.jpg".into(), 20, "jpg".into()),
            (
                "media".into(),
                "orphans/old.jpg".into(),
                2_411_520,
                "jpg".into()
            ),
        ]
    );
    assert_eq!(
        missing,
        [
            ("posts/gone.jpg".into(), "ACTIVE".into()),
            ("posts/deleted-gone.jpg".into(), "DELETED".into()),
        ]
    );

    let history = f.run(&["history"]);
    assert_eq!(history.code, 0, "{history:?}");
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", history.stdout);
    assert!(
        lines[0].starts_with("ID  STARTED (UTC)"),
        "{}",
        history.stdout
    );
    // Newest first: the missing-only scan of 7 days, then the full one.
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(newest[0], (id + 1).to_string());
    assert!(
        lines[1].contains("7 days") && lines[1].contains("missing"),
        "{}",
        lines[1]
    );
    let full: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(full[0], id.to_string());
    // ID, date, time, window, mode, result, objects, orphans, missing, active …
    assert_eq!(
        &full[3..10],
        ["all", "both", "complete", "8", "3", "2", "1"]
    );
    let limited = f.run(&["history", "--limit", "1"]);
    assert_eq!(limited.stdout.lines().count(), 2, "{limited:?}");
    let bad = f.run(&["history", "--limit", "0"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn history_without_any_scan_says_so_and_creates_nothing() {
    let f = Fixture::new();
    let out = f.run(&["history"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("No scans recorded yet"), "{out:?}");
    assert!(!f.path("assetgc.db").exists());
}

#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo = dir.path().join("demo");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
        .args(["demo", "--dir"])
        .arg(&demo)
        .env("NO_COLOR", "1")
        .output()
        .expect("demo");
    assert!(made.status.success());
    for args in [["queue", "stats"], ["history", "--limit"]] {
        let mut args: Vec<&str> = args.to_vec();
        if args[0] == "history" {
            args.push("50");
        }
        // The reading end is closed before the command writes: `assetgc … | head -0`.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
            .arg("--config")
            .arg(demo.join("assetgc.toml"))
            .args(&args)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
