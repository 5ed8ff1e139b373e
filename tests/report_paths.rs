//! Default report paths through the built binary (SPEC §5): scans started in the same second
//! each get a file of their own (`_2`, `_3`…), and each records the file it wrote.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

const CONFIG: &str = r#"[stores.media]
url = "./media"
min_age = "1h"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "pictures"
query = "SELECT id, img AS key FROM p"
"#;

/// Scans run at once in each round.
const AT_ONCE: usize = 6;

/// A folder with a store `media` (`a.jpg` referenced, `b.jpg` an orphan), a SQLite database
/// `app` and a config over both.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("assetgc-reports-")
        .tempdir()
        .expect("temp dir");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
    common::write_file(&dir.path().join("media"), "a.jpg", b"a", old);
    common::write_file(&dir.path().join("media"), "b.jpg", b"bb", old);
    let db = rusqlite::Connection::open(dir.path().join("app.db")).expect("app.db");
    db.execute_batch("CREATE TABLE p (id INTEGER, img TEXT); INSERT INTO p VALUES (1, 'a.jpg');")
        .expect("fixture SQL");
    fs::write(dir.path().join("assetgc.toml"), CONFIG).expect("config");
    dir
}

fn scan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_assetgc"));
    c.current_dir(dir)
        .env_remove("ASSETGC_CONFIG")
        .env_remove("ASSETGC_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("CLOUDINARY_URL")
        .env_remove("CLOUDCUBE_URL")
        .env("NO_COLOR", "1")
        .args(["scan", "--all", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The report path a `--quiet` scan printed.
fn printed_path(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scan failed: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, path) = stdout
        .trim_end()
        .rsplit_once(" — report ")
        .unwrap_or_else(|| panic!("no report path in `{stdout}`"));
    PathBuf::from(path)
}

/// Starts `AT_ONCE` scans just after a second begins, so that they most likely start in the
/// same second; returns the report path each printed.
fn round(dir: &Path) -> Vec<PathBuf> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock");
    std::thread::sleep(Duration::from_millis(
        u64::from(1000 - now.subsec_millis()) + 5,
    ));
    let children: Vec<_> = (0..AT_ONCE)
        .map(|_| scan(dir).spawn().expect("spawn assetgc"))
        .collect();
    children
        .into_iter()
        .map(|c| printed_path(&c.wait_with_output().expect("wait for assetgc")))
        .collect()
}

/// `asset_detection_2026-12-04_162101_3.csv` → `asset_detection_2026-12-04_162101`.
fn second_of(path: &Path) -> String {
    let name = path.file_stem().expect("a file name").to_string_lossy();
    match name.rsplit_once('_') {
        Some((head, n)) if head.matches('_').count() == 3 && n.parse::<u32>().is_ok() => {
            head.to_string()
        }
        _ => name.into_owned(),
    }
}

#[test]
fn scans_started_in_the_same_second_write_and_record_distinct_complete_reports() {
    let dir = fixture();
    // A first scan alone: it creates the state database, and its report is the reference.
    let first = printed_path(&scan(dir.path()).output().expect("run assetgc"));
    let expected = fs::read_to_string(&first).expect("the first report");
    assert!(
        expected.contains("ORPHANED FILES")
            && expected.contains("media,b.jpg,")
            && expected.contains("RECORDS WITH MISSING FILES"),
        "{expected}"
    );
    let mut printed = vec![first];
    let mut same_second = false;
    for _ in 0..5 {
        let paths = round(dir.path());
        let mut per_second: BTreeMap<String, usize> = BTreeMap::new();
        for p in &paths {
            *per_second.entry(second_of(p)).or_default() += 1;
        }
        printed.extend(paths);
        if per_second.values().any(|&n| n > 1) {
            same_second = true;
            break;
        }
    }
    assert!(
        same_second,
        "no two scans of 5 rounds started in the same second: {printed:?}"
    );

    let distinct: BTreeSet<&PathBuf> = printed.iter().collect();
    assert_eq!(
        distinct.len(),
        printed.len(),
        "two scans printed the same report path: {printed:?}"
    );
    let state = rusqlite::Connection::open(dir.path().join("assetgc.db")).expect("state db");
    let recorded: Vec<Option<String>> = state
        .prepare("SELECT report_path FROM scans ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .expect("scans");
    assert_eq!(recorded.len(), printed.len(), "{recorded:?}");
    let recorded: BTreeSet<PathBuf> = recorded
        .into_iter()
        .map(|p| PathBuf::from(p.expect("every scan records its report")))
        .collect();
    assert_eq!(
        recorded,
        distinct.into_iter().cloned().collect(),
        "each scan records the report it printed, and no two the same"
    );
    for path in &recorded {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("recorded report {}: {e}", path.display()));
        assert_eq!(text, expected, "{} is not the full report", path.display());
    }
    let files: Vec<_> = fs::read_dir(dir.path().join("reports"))
        .expect("reports folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files.len(),
        recorded.len(),
        "nothing but the reports (no placeholder, no temporary file): {files:?}"
    );
}
