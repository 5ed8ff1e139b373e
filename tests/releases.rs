//! SPEC §6 invariant 1 for expiry rules: right before a batch is deleted, the only row that does
//! not protect an entry's file is the entry's own expiring row, while its rule still selects it.
//! A file another row names is `kept: shared`; a file whose own row was restored is only
//! `referenced` (never settled for the row).

mod common;

use std::time::{Duration, SystemTime};

use assetgc::domain::queue::{NewEntry, Reason};
use assetgc::domain::{ObjectId, ResourceType};
use assetgc::state::QueueStore as _;
use common::{Backend, TestDb, block_on, write_file};

#[test]
fn only_the_selected_expiring_row_releases_its_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    let old = SystemTime::now() - Duration::from_secs(86_400);
    for k in ["own.jpg", "restored.jpg", "shared.jpg", "no-rule.jpg"] {
        write_file(&media, k, b"img", old);
    }
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(db.execute(&[
        "CREATE TABLE prompts (id INTEGER PRIMARY KEY, img TEXT, deleted INTEGER)",
        // 1: expiring, its file only its own; 2: restored (no longer selected); 3: expiring,
        // its file also used by the live row 4; 5: expiring, queued without the rule.
        "INSERT INTO prompts VALUES (1, 'own.jpg', 1), (2, 'restored.jpg', 0), (3, 'shared.jpg', 1), (4, 'shared.jpg', 0), (5, 'no-rule.jpg', 1)",
    ]));
    let config = dir.path().join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[stores.media]
url = "{}"
quarantine = false

[databases.app]
url = "{}"

[[references]]
name = "prompt images"
query = "SELECT id, img AS key FROM prompts"

[[expiry]]
name = "trash"
store = "media"
select = "SELECT id, img AS key FROM prompts WHERE deleted = 1"
delete = "DELETE FROM prompts WHERE id = ?"
releases = ["prompt images"]
"#,
            media.display(),
            db.url
        ),
    )
    .expect("config");
    let cfg = assetgc::config::load(Some(&config))
        .expect("config")
        .expect("a config");
    block_on(async {
        let app = assetgc::app::App::open(cfg).await.expect("app");
        let now = chrono::Utc::now();
        let entry = |key: &str, reason: Reason, rule: &str, row: &str| NewEntry {
            object: ObjectId::new("media", ResourceType::Plain, key),
            reason,
            rule: rule.into(),
            row_id: row.into(),
            client_id: String::new(),
            scan_id: None,
            uploaded_at: None,
            next_attempt_at: now,
            original_key: None,
        };
        app.state
            .enqueue(
                "test",
                &[
                    entry("own.jpg", Reason::Expire, "trash", "1"),
                    entry("restored.jpg", Reason::Expire, "trash", "2"),
                    entry("shared.jpg", Reason::Expire, "trash", "3"),
                    entry("no-rule.jpg", Reason::Add, "", ""),
                ],
            )
            .await
            .expect("enqueue");
        app.close().await;
    });
    let r = common::assetgc(&config, &["queue", "run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !media.join("own.jpg").exists(),
        "released by its own selected row"
    );
    assert!(media.join("restored.jpg").exists(), "its row was restored");
    assert!(media.join("shared.jpg").exists(), "row 4 still uses it");
    assert!(
        media.join("no-rule.jpg").exists(),
        "no rule releases nothing"
    );
    let conn = rusqlite::Connection::open(dir.path().join("assetgc.db")).expect("state");
    let outcome = |key: &str| -> String {
        conn.query_row("SELECT outcome FROM queue WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .expect(key)
    };
    assert_eq!(outcome("own.jpg"), "deleted");
    assert_eq!(
        outcome("restored.jpg"),
        "referenced",
        "not shared: its own row"
    );
    assert_eq!(outcome("shared.jpg"), "kept: shared");
    assert_eq!(outcome("no-rule.jpg"), "referenced");
}

/// SPEC §2: a reference an expiry rule releases must return `id`; `check` says so as a config
/// error (exit 2), as `expire` does.
#[test]
fn check_refuses_a_released_reference_without_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).expect("media");
    let db = block_on(TestDb::create(Backend::Sqlite, dir.path())).expect("sqlite");
    block_on(
        db.execute(&["CREATE TABLE prompts (id INTEGER PRIMARY KEY, img TEXT, deleted INTEGER)"]),
    );
    let config = dir.path().join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            "[stores.media]\nurl = \"{}\"\n\n[databases.app]\nurl = \"{}\"\n\n[[references]]\nname = \"prompt images\"\nquery = \"SELECT img AS key FROM prompts\"\n\n[[expiry]]\nname = \"trash\"\nstore = \"media\"\nselect = \"SELECT id, img AS key FROM prompts WHERE deleted = 1\"\ndelete = \"DELETE FROM prompts WHERE id = ?\"\nreleases = [\"prompt images\"]\n",
            media.display(),
            db.url
        ),
    )
    .expect("config");
    let r = common::assetgc(&config, &["check"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("its query returns no `id`"),
        "{}",
        r.stdout
    );
}
