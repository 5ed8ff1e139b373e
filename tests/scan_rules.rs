//! Scan rules that the story test does not reach: Unicode normalisation (SPEC §2) and the
//! quarantine prefix left out of listings (SPEC §6 invariant 4).

mod common;

use std::time::{Duration, SystemTime};

use common::{Backend, TestDb, assetgc, parse_csv_report, write_file};

async fn fixture(dir: &std::path::Path, keys: &[&str]) -> TestDb {
    let db = TestDb::create(Backend::Sqlite, dir)
        .await
        .expect("SQLite always runs");
    let mut stmts = vec!["CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)".to_string()];
    for (i, k) in keys.iter().enumerate() {
        stmts.push(format!(
            "INSERT INTO f VALUES ({}, '{}')",
            i + 1,
            k.replace('\'', "''")
        ));
    }
    db.execute(&stmts).await;
    std::fs::write(
        dir.join("assetgc.toml"),
        format!(
            "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\n[databases.app]\nurl = \"{}\"\n[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n",
            db.url
        ),
    )
    .unwrap();
    db
}

fn days_ago(n: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(n * 86_400)
}

#[tokio::test]
async fn names_equal_only_after_nfc_are_neither_orphan_nor_missing() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    // On disk in NFC; the row in NFD (as macOS uploads write it), and the reverse.
    write_file(&media, "caf\u{e9}.jpg", b"x", days_ago(3));
    write_file(&media, "re\u{301}sume\u{301}.jpg", b"x", days_ago(3));
    write_file(&media, "orphan.jpg", b"x", days_ago(3));
    let _db = fixture(
        dir.path(),
        &["cafe\u{301}.jpg", "r\u{e9}sum\u{e9}.jpg", "gone.jpg"],
    )
    .await;
    let out = dir.path().join("r.csv");
    let run = assetgc(
        &dir.path().join("assetgc.toml"),
        &["scan", "--all", "--output", out.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = parse_csv_report(&std::fs::read_to_string(&out).unwrap());
    let orphans: Vec<&str> = report.orphans.iter().map(|r| r["key"].as_str()).collect();
    let missing: Vec<&str> = report.missing.iter().map(|r| r["key"].as_str()).collect();
    assert_eq!(orphans, ["orphan.jpg"]);
    assert_eq!(missing, ["gone.jpg"]);
    assert_eq!(
        run.stdout
            .matches("only after Unicode normalisation")
            .count(),
        2,
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn quarantined_objects_are_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    write_file(
        &media,
        ".assetgc-trash/20260101T000000Z/old.jpg",
        b"x",
        days_ago(3),
    );
    write_file(&media, "kept.jpg", b"x", days_ago(3));
    write_file(&media, "orphan.jpg", b"x", days_ago(3));
    let _db = fixture(dir.path(), &["kept.jpg"]).await;
    let run = assetgc(
        &dir.path().join("assetgc.toml"),
        &["scan", "--all", "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["summary"]["objects_scanned"], 2);
    let orphans: Vec<&str> = json["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(orphans, ["orphan.jpg"]);
}

/// SPEC's queries alias the column `AS key`; `KEY` is reserved on MySQL/MariaDB, and the scan
/// must still read such a query there.
#[tokio::test]
async fn unquoted_key_alias_works_on_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDb::create(Backend::MariaDb, dir.path()).await else {
        return;
    };
    db.execute(&[
        "CREATE TABLE f (id INT PRIMARY KEY, k VARCHAR(200), note VARCHAR(50))",
        "INSERT INTO f VALUES (1, 'kept.jpg', 'x AS key'), (2, 'gone.jpg', NULL)",
    ])
    .await;
    let media = dir.path().join("media");
    write_file(&media, "kept.jpg", b"x", days_ago(3));
    write_file(&media, "orphan.jpg", b"x", days_ago(3));
    std::fs::write(
        dir.path().join("assetgc.toml"),
        format!(
            "[stores.media]\nurl = \"./media\"\n[databases.app]\nurl = \"{}\"\n[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key, note AS title FROM f\"\n",
            db.url
        ),
    )
    .unwrap();
    let config = dir.path().join("assetgc.toml");
    let check = assetgc(&config, &["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let run = assetgc(&config, &["scan", "--all", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["orphans"][0]["key"], "orphan.jpg");
    assert_eq!(json["missing"][0]["key"], "gone.jpg");
    assert_eq!(json["summary"]["missing"], 1);
    db.drop_db().await;
}
