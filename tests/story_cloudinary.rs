//! The scan story with a Cloudinary store, told to the Admin API emulator: a prompts app in the
//! manner of Django's `CloudinaryField` (featured images and videos, soft deletes, avatars kept
//! as bare public_ids, attachments with no type at all), more than a thousand resources so that
//! every listing pages, images and videos sharing public_ids. The expected findings are written
//! out by hand; the emulator counts the calls.
//!
//! Then the API budget: the warning at `warn_at`, the clean stop at `stop_at` (exit 4, a partial
//! report), the count carried into the next run of the hour, the provider's headers over the
//! configured budget, a 420 waited out, refused credentials, and two scans at once whose calls
//! are both kept (on either state database).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use common::cloudinary::{Emulator, Options, Resource};
use common::{Backend, StateBackend, StateDb, TestDb, assetgc, both_states, parse_csv_report};
use serde_json::Value;

/// Prompts 1..=PROMPTS each have a featured image `prompts/p{i:04}` that exists.
const PROMPTS: usize = 1100;
/// Prompts 1..=VIDEOS also have a featured video under the same public_id.
const VIDEOS: usize = 150;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    emulator: Emulator,
    db: TestDb,
    now: DateTime<Utc>,
}

fn days_ago(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    now - chrono::Duration::days(days)
}

fn sql_time(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"))
}

fn image_field(id: &str) -> String {
    format!("image/upload/v1699999999/{id}.jpg")
}

fn video_field(id: &str) -> String {
    format!("video/upload/v1699999999/{id}.mp4")
}

impl Fixture {
    async fn new(backend: Backend, opts: Options) -> Option<Fixture> {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let db = TestDb::create(backend, &dir).await?;
        let now = Utc::now().trunc_subsecs(0);
        let emulator = Emulator::start(opts);

        // The store: every featured image and video, with what drifted.
        let mut resources = Vec::new();
        for i in 1..=PROMPTS {
            resources.push(Resource::image(
                &format!("prompts/p{i:04}"),
                days_ago(now, 5),
            ));
        }
        for i in 1..=VIDEOS {
            resources.push(Resource::video(
                &format!("prompts/p{i:04}"),
                days_ago(now, 5),
            ));
        }
        resources.extend([
            // Orphans in the window.
            Resource::image("orphans/o1", days_ago(now, 10)),
            Resource::image("orphans/o2", days_ago(now, 10)),
            Resource::image("loose", days_ago(now, 3)),
            // The image of a public_id whose video alone is referenced, and the other way round.
            Resource::image("shared/clip", days_ago(now, 4)),
            Resource::video("shared/clip", days_ago(now, 4)),
            Resource::video(&format!("prompts/p{:04}", PROMPTS), days_ago(now, 6)),
            // An orphan older than the 30-day window: found by --all only.
            Resource::image("orphans/ancient", days_ago(now, 60)),
            // A referenced image older than the window: never missing.
            Resource::image("legacy/banner", days_ago(now, 90)),
            // Too recent, ignored, quarantined: never orphans.
            Resource::image("fresh/new", now - chrono::Duration::minutes(5)),
            Resource::image("static/logo", days_ago(now, 10)),
            Resource::image("assetgc-trash/20260101T000000Z/old", days_ago(now, 10)),
            // Avatars (bare public_ids read as images) and attachments (bare, untyped).
            Resource::image("avatars/u1", days_ago(now, 20)),
            Resource::image("avatars/u2", days_ago(now, 20)),
            Resource::raw("docs/manual.pdf", days_ago(now, 8)),
            Resource::raw("docs/old.pdf", days_ago(now, 8)),
            Resource::video("docs/intro", days_ago(now, 8)),
        ]);
        emulator.add_many(resources);

        // The database.
        let mut sql = vec![
            "CREATE TABLE auth_user (id integer PRIMARY KEY, username text NOT NULL, avatar text)"
                .to_string(),
            "CREATE TABLE prompts (id integer PRIMARY KEY, title text NOT NULL, slug text NOT NULL, \
             author_id integer NOT NULL, featured_image text, featured_video text, \
             created_at text NOT NULL, deleted_at text NULL)"
                .to_string(),
            "CREATE TABLE attachments (id integer PRIMARY KEY, file text)".to_string(),
            "INSERT INTO auth_user VALUES (1, 'alice', 'avatars/u1'), (2, 'bob', 'avatars/u2'), \
             (3, 'carol', 'avatars/gone')"
                .to_string(),
            "INSERT INTO attachments VALUES (1, 'docs/manual.pdf'), (2, 'docs/intro'), (3, 'docs/nowhere')"
                .to_string(),
        ];
        let recent = sql_time(days_ago(now, 2));
        let deleted = sql_time(days_ago(now, 1));
        let mut rows = Vec::new();
        for i in 1..=PROMPTS {
            let id = format!("prompts/p{i:04}");
            let video = if i <= VIDEOS {
                format!("'{}'", video_field(&id))
            } else {
                "NULL".to_string()
            };
            // Every tenth prompt is soft-deleted: its files are still referenced.
            let deleted_at = if i % 10 == 0 {
                deleted.as_str()
            } else {
                "NULL"
            };
            rows.push(format!(
                "({i}, 'Prompt {i}', 'prompt-{i}', {}, '{}', {video}, {recent}, {deleted_at})",
                i % 3 + 1,
                image_field(&id),
            ));
        }
        let extra = [
            // Whose files are gone: two active, one soft-deleted.
            (2001, image_field("prompts/gone-a"), None, None),
            (
                2002,
                image_field("prompts/p0001"),
                Some(video_field("prompts/gone-v")),
                None,
            ),
            (2003, image_field("prompts/gone-d"), None, Some(deleted.clone())),
            // A delivery URL, and the video of the shared public_id.
            (
                2004,
                "https://res.cloudinary.com/demo-cloud/image/upload/c_fill,w_300/v1/legacy/banner.jpg"
                    .to_string(),
                Some(video_field("shared/clip")),
                None,
            ),
        ];
        for (id, image, video, deleted_at) in extra {
            rows.push(format!(
                "({id}, 'Prompt {id}', 'prompt-{id}', 1, '{image}', {}, {recent}, {})",
                video.map_or_else(|| "NULL".to_string(), |v| format!("'{v}'")),
                deleted_at.unwrap_or_else(|| "NULL".to_string()),
            ));
        }
        for chunk in rows.chunks(200) {
            sql.push(format!("INSERT INTO prompts VALUES {}", chunk.join(", ")));
        }
        db.execute(&sql).await;
        Some(Fixture {
            _dir: tmp,
            dir,
            emulator,
            db,
            now,
        })
    }

    fn config(&self, store_extra: &str) -> PathBuf {
        let path = self.dir.join("assetgc.toml");
        let status = "CASE WHEN p.deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status";
        std::fs::write(
            &path,
            format!(
                r#"app_name = "PromptFlow"

[stores.media]
url = "{url}"
resource_types = ["image", "video", "raw"]
min_age = "1h"
ignore = ["static/**"]
{store_extra}

[databases.app]
url = "{db}"

[[references]]
name = "prompt images"
query = "SELECT p.id, p.title, u.username AS owner, p.featured_image AS key, 'image' AS media_type, p.created_at, {status}, p.slug FROM prompts p JOIN auth_user u ON u.id = p.author_id"
link = "https://promptflow.example.com/prompt/{{slug}}/"

[[references]]
name = "prompt videos"
query = "SELECT p.id, p.title, p.featured_video AS key, 'video' AS media_type, p.created_at, {status} FROM prompts p"

[[references]]
name = "avatars"
query = "SELECT id, username AS title, avatar AS key, 'image' AS media_type FROM auth_user"

[[references]]
name = "attachments"
query = "SELECT id, file AS key FROM attachments"
"#,
                url = self.emulator.cloudinary_url(),
                db = self.db.url,
            ),
        )
        .expect("write config");
        path
    }
}

fn orphans_of(json: &Value) -> BTreeSet<(String, String)> {
    json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| {
            (
                o["resource_type"].as_str().unwrap_or_default().to_string(),
                o["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn missing_of(json: &Value) -> Vec<(String, String, String, String)> {
    json["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|m| {
            (
                m["reference"].as_str().unwrap_or_default().to_string(),
                m["media_type"].as_str().unwrap_or_default().to_string(),
                m["key"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(t, k)| ((*t).to_string(), (*k).to_string()))
        .collect()
}

fn expected_missing() -> Vec<(String, String, String, String)> {
    [
        ("prompt images", "image", "prompts/gone-a", "ACTIVE"),
        ("prompt videos", "video", "prompts/gone-v", "ACTIVE"),
        ("avatars", "image", "avatars/gone", "ACTIVE"),
        ("attachments", "", "docs/nowhere", "ACTIVE"),
        ("prompt images", "image", "prompts/gone-d", "DELETED"),
    ]
    .iter()
    .map(|(r, t, k, s)| {
        (
            (*r).to_string(),
            (*t).to_string(),
            (*k).to_string(),
            (*s).to_string(),
        )
    })
    .collect()
}

fn run_json(config: &Path, args: &[&str]) -> (common::Run, Value) {
    let mut all = vec!["scan", "--json"];
    all.extend_from_slice(args);
    let run = assetgc(config, &all);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    (run, json)
}

async fn story(backend: Backend) {
    let Some(f) = Fixture::new(backend, Options::default()).await else {
        return;
    };
    let config = f.config("");

    // --all: every listing pages (1,100+ images at 500 a call), types listed at once.
    f.emulator.reset_calls();
    let (run, json) = run_json(&config, &["--all"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(json["scan"]["complete"], Value::Bool(true), "{json}");
    assert_eq!(
        orphans_of(&json),
        pairs(&[
            ("image", "loose"),
            ("image", "orphans/ancient"),
            ("image", "orphans/o1"),
            ("image", "orphans/o2"),
            ("image", "shared/clip"),
            ("raw", "docs/old.pdf"),
            ("video", &format!("prompts/p{PROMPTS:04}")),
        ]),
        "{json}"
    );
    assert_eq!(missing_of(&json), expected_missing(), "{json}");
    let images = PROMPTS + 11;
    let videos = VIDEOS + 3;
    let expected_calls = images.div_ceil(500) + videos.div_ceil(500) + 1;
    assert_eq!(json["scan"]["api_calls"]["media"], expected_calls, "{json}");
    assert_eq!(f.emulator.calls(), expected_calls as u64);
    let s = &json["summary"];
    // In the window (--all: everything) outside quarantine: valid + orphans + too recent + ignored.
    assert_eq!(s["orphans"], 7);
    assert_eq!(s["too_recent"], 1);
    assert_eq!(s["ignored"], 1);
    assert_eq!(s["objects_scanned"], images + videos + 2 - 1);
    assert_eq!(s["missing_active"], 4);
    // An orphan row carries what the API says of it.
    let old_pdf = json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .find(|o| o["key"] == "docs/old.pdf")
        .expect("docs/old.pdf");
    assert_eq!(old_pdf["resource_type"], "raw");
    assert!(
        old_pdf["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://res.cloudinary.com/demo-cloud/raw/upload/")),
        "{old_pdf}"
    );
    let o1 = json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .find(|o| o["key"] == "orphans/o1")
        .expect("orphans/o1");
    assert_eq!(o1["format"], "jpg");
    assert_eq!(
        o1["uploaded_at"],
        days_ago(f.now, 10).format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert!(
        o1["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/image/upload/v1/orphans/o1.jpg")
                || (u.starts_with("https://res.cloudinary.com/demo-cloud/image/upload/")
                    && u.ends_with("orphans/o1.jpg"))),
        "{o1}"
    );

    // The CSV report of the same run says the same, with the seed's columns.
    let csv_path = f.dir.join("all.csv");
    let run = assetgc(
        &config,
        &[
            "scan",
            "--all",
            "--output",
            csv_path.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = parse_csv_report(&std::fs::read_to_string(&csv_path).expect("report"));
    assert_eq!(report.orphans.len(), 7);
    assert!(report.orphans.iter().any(|o| o["key"] == "shared/clip"
        && o["resource_type"] == "image"
        && o["format"] == "jpg"));
    assert_eq!(report.missing.len(), 5);
    assert_eq!(report.missing[4]["status"], "DELETED");
    assert_eq!(
        report.missing[0]["link"],
        "https://promptflow.example.com/prompt/prompt-2001/"
    );
    // Console parity: valid %, orphans %, size in MB, missing ACTIVE/DELETED, API calls/budget.
    for want in [
        "Valid files:",
        "Orphaned files:   7 (",
        "Missing files:    5 (4 ACTIVE, 1 other)",
        // Two scans of 5 calls each so far, by the emulator's headers.
        "API calls: 10/500 used (2%) — Rate limit remaining: 490/500 (98%)",
        "Rate limit remaining: ",
    ] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }

    // --days 30: recent uploads come through the Search API; references to older resources
    // (legacy/banner) are confirmed by look-ups, never missing.
    f.emulator.reset_calls();
    let (run, json) = run_json(&config, &["--days", "30"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mut in_window = pairs(&[
        ("image", "loose"),
        ("image", "orphans/o1"),
        ("image", "orphans/o2"),
        ("image", "shared/clip"),
        ("raw", "docs/old.pdf"),
    ]);
    in_window.insert(("video".into(), format!("prompts/p{PROMPTS:04}")));
    assert_eq!(orphans_of(&json), in_window, "{json}");
    assert_eq!(missing_of(&json), expected_missing(), "{json}");
    assert!(
        f.emulator.calls_to("/resources/search") >= 3,
        "1,200+ recent resources: 3 pages"
    );
    let calls = json["scan"]["api_calls"]["media"].as_u64().expect("calls");
    assert!(
        calls <= (images + videos + 3).div_ceil(500) as u64 + 4,
        "search pages plus a few look-ups: {calls}"
    );

    // --missing-only: look-ups (100 public_ids a call, per type: 12 + 2 + 3 here) cost more
    // than the last full listing (5 calls), so it lists, and says so.
    f.emulator.reset_calls();
    let (run, json) = run_json(&config, &["--all", "--missing-only"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(missing_of(&json), expected_missing(), "{json}");
    assert!(json["orphans"].as_array().expect("orphans").is_empty());
    let calls = json["scan"]["api_calls"]["media"].as_u64().expect("calls");
    assert_eq!(calls, expected_calls as u64);
    let console = assetgc(&config, &["scan", "--all", "--missing-only"]);
    assert!(
        console.stdout.contains("look-ups would cost more calls"),
        "{}",
        console.stdout
    );

    f.db.drop_db().await;
}

#[tokio::test]
async fn cloudinary_story_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test]
async fn cloudinary_story_postgres() {
    story(Backend::Postgres).await;
}

/// A small account for the budget tests: three types, one page each (5 calls: image, video,
/// raw, and no check call).
fn small(opts: Options) -> (tempfile::TempDir, Emulator, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let emulator = Emulator::start(opts);
    let now = Utc::now();
    emulator.add_many([
        Resource::image("a", days_ago(now, 3)),
        Resource::image("b", days_ago(now, 3)),
        Resource::video("c", days_ago(now, 3)),
        Resource::raw("d.txt", days_ago(now, 3)),
    ]);
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("refs.db"), b"").expect("db file");
    (tmp, emulator, dir)
}

fn small_config(dir: &Path, emulator: &Emulator, budget: &str) -> PathBuf {
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            r#"[stores.media]
url = "{}"
resource_types = ["image", "video", "raw"]
min_age = "0s"
{budget}
"#,
            emulator.cloudinary_url()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn budget_warns_at_warn_at_and_a_second_run_starts_from_the_kept_count() {
    let (_tmp, emulator, dir) = small(Options {
        rate_limit_headers: false,
        ..Options::default()
    });
    // 3 calls a run against 7 an hour: the first run ends at 43 %, the second at 86 % (warns).
    let config = small_config(
        &dir,
        &emulator,
        "api_budget = { calls_per_hour = 7, warn_at = 0.8, stop_at = 0.95 }",
    );
    let first = assetgc(&config, &["scan", "--all"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("API calls: 3/7 used (43%)"),
        "{}",
        first.stdout
    );
    assert!(!first.stdout.contains("warn_at"), "{}", first.stdout);
    let second = assetgc(&config, &["scan", "--all"]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("API calls: 6/7 used (86%)"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("past warn_at 80%"),
        "the warning line: {}",
        second.stdout
    );
    assert_eq!(emulator.calls(), 6);
}

#[test]
fn budget_stops_cleanly_at_stop_at_with_a_partial_incomplete_report() {
    let (_tmp, emulator, dir) = small(Options {
        rate_limit_headers: false,
        ..Options::default()
    });
    // 2 calls an hour at most: the third list call is never sent.
    let config = small_config(&dir, &emulator, "api_budget = { calls_per_hour = 2 }");
    let out = dir.join("r.json");
    let run = assetgc(
        &config,
        &["scan", "--all", "--output", out.to_str().expect("utf-8")],
    );
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert_eq!(emulator.calls(), 2);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report")).expect("json");
    assert_eq!(json["scan"]["complete"], Value::Bool(false));
    assert!(
        json["scan"]["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("stop_at is 95%"))),
        "{json}"
    );
    // What two calls listed is still reported.
    assert!(
        json["summary"]["objects_scanned"].as_u64().expect("n") >= 1,
        "{json}"
    );
    // A second run in the same hour stops before any call.
    let again = assetgc(&config, &["scan", "--all"]);
    assert_eq!(again.code, 4, "{}{}", again.stdout, again.stderr);
    assert_eq!(emulator.calls(), 2);
}

#[test]
fn provider_headers_override_the_configured_budget() {
    // The account allows 2 calls an hour, whatever the config says (500).
    let (_tmp, emulator, dir) = small(Options {
        rate_limit: 2,
        ..Options::default()
    });
    let config = small_config(&dir, &emulator, "");
    let run = assetgc(&config, &["scan", "--all", "--json"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(json["scan"]["complete"], Value::Bool(false));
    assert!(
        json["scan"]["warnings"]
            .to_string()
            .contains("2/2 API calls used"),
        "{json}"
    );
    assert!(emulator.calls() <= 3, "{}", emulator.calls());
}

#[test]
fn rate_limited_420_waits_for_the_reset_and_completes() {
    let (_tmp, emulator, dir) = small(Options::default());
    emulator.set_remaining(0);
    emulator.set_window_reset_in(Duration::from_secs(2));
    let config = small_config(&dir, &emulator, "");
    let started = std::time::Instant::now();
    let run = assetgc(&config, &["scan", "--all", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(json["scan"]["complete"], Value::Bool(true), "{json}");
    assert_eq!(json["summary"]["orphans"], 4, "{json}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the reset"
    );
}

#[test]
fn a_reset_beyond_max_wait_stops_cleanly() {
    let (_tmp, emulator, dir) = small(Options::default());
    emulator.set_remaining(0);
    emulator.set_window_reset_in(Duration::from_secs(600));
    let config = small_config(&dir, &emulator, "api_budget = { max_wait = \"5s\" }");
    let run = assetgc(&config, &["scan", "--all"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("more than max_wait"), "{}", run.stdout);
}

#[test]
fn wrong_credentials_are_exit_1_in_one_line_without_the_secret() {
    let (_tmp, emulator, dir) = small(Options::default());
    let url = emulator
        .cloudinary_url()
        .replace("emulator-secret", "wrong-secret-value");
    let path = dir.join("assetgc.toml");
    std::fs::write(&path, format!("[stores.media]\nurl = \"{url}\"\n")).expect("config");
    let run = assetgc(&path, &["scan", "--all"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-secret-value"));
    assert!(!run.stdout.contains("wrong-secret-value"));
    let check = assetgc(&path, &["check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        !check.stdout.contains("wrong-secret-value")
            && !check.stderr.contains("wrong-secret-value")
    );
}

#[test]
fn cloudinary_url_alone_is_enough_for_check() {
    let (tmp, emulator, _dir) = small(Options::default());
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("binary");
    let out = cmd
        .current_dir(tmp.path())
        .arg("check")
        .env("CLOUDINARY_URL", emulator.cloudinary_url())
        .env_remove("DATABASE_URL")
        .env_remove("CLOUDCUBE_URL")
        .env_remove("ASSETGC_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("store default"), "{stdout}");
    assert!(!stdout.contains("emulator-secret"), "{stdout}");
}

#[tokio::test]
async fn missing_only_looks_up_once_that_costs_less_than_the_last_listing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let Some(db) = TestDb::create(Backend::Sqlite, tmp.path()).await else {
        return;
    };
    let emulator = Emulator::start(Options::default());
    let now = Utc::now();
    emulator
        .add_many((0..1200).map(|i| Resource::image(&format!("pics/{i:04}"), days_ago(now, 3))));
    // 300 references: 295 to existing images, 5 to gone ones.
    let values: Vec<String> = (0..300)
        .map(|i| {
            let id = if i < 295 {
                format!("pics/{:04}", i * 4)
            } else {
                format!("pics/gone-{i}")
            };
            format!("({i}, '{}')", image_field(&id))
        })
        .collect();
    db.execute(&[
        "CREATE TABLE pics (id integer PRIMARY KEY, image text)".to_string(),
        format!("INSERT INTO pics VALUES {}", values.join(", ")),
    ])
    .await;
    let config = tmp.path().join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            "[stores.media]\nurl = \"{}\"\n\n[databases.app]\nurl = \"{}\"\n\n[[references]]\nname = \"pics\"\nquery = \"SELECT id, image AS key FROM pics\"\n",
            emulator.cloudinary_url(),
            db.url
        ),
    )
    .expect("config");
    let gone: Vec<String> = (295..300).map(|i| format!("pics/gone-{i}")).collect();
    let missing_keys = |json: &Value| -> Vec<String> {
        json["missing"]
            .as_array()
            .expect("missing")
            .iter()
            .map(|m| m["key"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // No earlier listing: it is guessed at 500 referenced keys a call per type (2 calls), less
    // than 3 look-ups of 100, so it lists: 3 image pages and 1 video page.
    emulator.reset_calls();
    let (run, json) = run_json(&config, &["--all", "--missing-only"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(missing_keys(&json), gone);
    assert_eq!(emulator.calls(), 4);

    // That listing cost 4 calls; 3 look-ups now cost less.
    emulator.reset_calls();
    let (run, json) = run_json(&config, &["--all", "--missing-only"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(missing_keys(&json), gone);
    assert_eq!(emulator.calls(), 3);
    assert_eq!(emulator.calls_to("/resources/image/upload"), 3);
    let console = assetgc(&config, &["scan", "--all", "--missing-only"]);
    assert!(
        console.stdout.contains("300 point look-ups (no listing)"),
        "{}",
        console.stdout
    );
    db.drop_db().await;
}

#[test]
fn bad_cloudinary_settings_are_one_line_exit_2() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("assetgc.toml");
    let cases = [
        (
            "url = \"cloudinary://key@cloud\"",
            "lacks its API key, secret or cloud name",
        ),
        (
            "url = \"cloudinary://k:s@c?upload_prefix=ftp://x\"",
            "upload_prefix",
        ),
        (
            "url = \"cloudinary://k:s@c\"\nresource_types = [\"audio\"]",
            "not image, video or raw",
        ),
        (
            "url = \"cloudinary://k:s@c\"\ndelivery_type = \"fetch\"",
            "not upload, private or authenticated",
        ),
        (
            "url = \"cloudinary://k:s@c\"\napi_budget = { warn_at = 1.5 }",
            "warn_at",
        ),
        (
            "url = \"cloudinary://k:s@c\"\napi_budget = { calls = 5 }",
            "unknown field",
        ),
        (
            "url = \"./media\"\nresource_types = [\"image\"]",
            "is for Cloudinary stores",
        ),
        (
            "url = \"cloudinary://k:s@c\"\nregion = \"eu\"",
            "is for S3 stores",
        ),
        (
            "url = \"cloudinary://k:s@c\"\n[stores.other]\nurl = \"cloudinary://k:s@c\"\napi_budget = { calls_per_hour = 9 }",
            "same Cloudinary account",
        ),
    ];
    for (store, want) in cases {
        std::fs::write(&path, format!("[stores.media]\n{store}\n")).expect("config");
        let run = assetgc(&path, &["check"]);
        assert_eq!(run.code, 2, "{store}: {}{}", run.stdout, run.stderr);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{store}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(want), "{store}: {}", run.stderr);
        assert!(
            !run.stderr.contains(":s@"),
            "{store}: the secret shows: {}",
            run.stderr
        );
    }
    // A Cloudinary store reads public_ids: `path` and `url` are refused with the way out.
    std::fs::write(
        &path,
        "[stores.media]\nurl = \"cloudinary://k:s@c\"\n[databases.app]\nurl = \"sqlite://a.db\"\n[[references]]\nname = \"r\"\nquery = \"SELECT 1 AS key\"\nkey_format = \"path\"\n",
    )
    .expect("config");
    let run = assetgc(&path, &["check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("use key_format = \"cloudinary\""),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_budget_stop_reports_no_unconfirmed_missing_files() {
    let (tmp, emulator, dir) = small(Options {
        rate_limit_headers: false,
        ..Options::default()
    });
    let Some(db) = TestDb::create(Backend::Sqlite, tmp.path()).await else {
        return;
    };
    db.execute(&[
        "CREATE TABLE docs (id integer PRIMARY KEY, file text)",
        "INSERT INTO docs VALUES (1, 'raw/upload/v1/d.txt'), (2, 'image/upload/v1/a.jpg')",
    ])
    .await;
    let config = small_config(&dir, &emulator, "api_budget = { calls_per_hour = 1 }");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}\n[databases.app]\nurl = \"{}\"\n\n[[references]]\nname = \"docs\"\nquery = \"SELECT id, file AS key FROM docs\"\n",
            db.url
        ),
    )
    .expect("config");
    let (run, json) = run_json(&config, &["--all"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert_eq!(emulator.calls(), 1);
    // One type was listed before the stop; whatever was not seen is unknown, not missing.
    assert!(
        json["missing"].as_array().expect("missing").is_empty(),
        "{json}"
    );
    assert!(
        json["scan"]["warnings"]
            .to_string()
            .contains("could not be confirmed"),
        "{json}"
    );
    db.drop_db().await;
}

/// Two scans of one account started together: the state's count of the account's calls this
/// hour is every call the account answered, the first run's as well as the second's.
fn two_scans_at_once_are_both_counted_in_the_budget(state: StateBackend) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let opts = Options {
        // Each call waits: the two scans are under way at the same time.
        latency: Duration::from_millis(200),
        ..Options::default()
    };
    let account = format!("{}:{}", opts.cloud, opts.api_key);
    let emulator = Emulator::start(opts);
    let now = Utc::now();
    // Several pages a type (500 a page): images 3, videos 2, raw 1.
    let three_days = days_ago(now, 3);
    emulator.add_many((0..1200).map(|i| Resource::image(&format!("i/{i:04}"), three_days)));
    emulator.add_many((0..600).map(|i| Resource::video(&format!("v/{i:04}"), three_days)));
    emulator.add(Resource::raw("r/readme.txt", three_days));
    let state = StateDb::create(state, dir);
    let config = dir.join("assetgc.toml");
    std::fs::write(
        &config,
        format!(
            r#"{}
[stores.media]
url = "{}"
resource_types = ["image", "video", "raw"]
min_age = "0s"
"#,
            state.config_section(),
            emulator.cloudinary_url()
        ),
    )
    .expect("write config");
    // The state exists before the two scans (two first runs also race to create it), and each
    // scan has a report of its own (two default names from one second would be one file).
    let made = assetgc(&config, &["queue", "stats"]);
    assert_eq!(made.code, 0, "{}{}", made.stdout, made.stderr);
    emulator.reset_calls();
    let scan = |report: &str| {
        let report = dir.join(report);
        assetgc(
            &config,
            &["scan", "--all", "--output", report.to_str().expect("utf-8")],
        )
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| scan("a.csv"));
        let b = s.spawn(|| scan("b.csv"));
        (a.join().expect("scan a"), b.join().expect("scan b"))
    });
    for run in [&a, &b] {
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    }
    let answered = emulator.calls();
    let from = Utc::now().timestamp().div_euclid(60) - 59;
    let sum =
        format!("SELECT SUM(calls) FROM api_budget_calls WHERE account = $1 AND minute >= {from}");
    let counted = state.query(&sum, &[&account]);
    let counted: u64 = match counted.as_slice() {
        [row] if row.len() == 1 => row[0].as_deref().map_or(0, |n| n.parse().expect("a sum")),
        _ => panic!("not one sum: {counted:?}"),
    };
    let used = |run: &common::Run| {
        run.stdout
            .lines()
            .find(|l| l.contains("API calls:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(
        counted,
        answered,
        "the {} state counts {counted} calls of {account} this hour, the emulator answered \
         {answered} during the two scans (scan a: `{}`, scan b: `{}`)",
        state.backend.name(),
        used(&a),
        used(&b)
    );
}
both_states!(two_scans_at_once_are_both_counted_in_the_budget);

/// The scan operation announces the budget's warning and its stop, for notifications and the
/// API to pass on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_operation_announces_the_budget_warning_and_stop() {
    use assetgc::domain::event::Event;
    let (_tmp, emulator, dir) = small(Options {
        rate_limit_headers: false,
        ..Options::default()
    });
    // Three types to list against 2 calls an hour: warned at the 2nd call, stopped before the 3rd.
    let config = small_config(
        &dir,
        &emulator,
        "api_budget = { calls_per_hour = 2, warn_at = 0.5, stop_at = 0.95 }",
    );
    let cfg = assetgc::config::load(Some(&config))
        .expect("config")
        .expect("a config file");
    let app = assetgc::app::App::open(cfg).await.expect("app");
    let mut events = app.events();
    let out = assetgc::ops::scan::run(
        &app,
        assetgc::ops::scan::ScanRequest {
            window: assetgc::domain::scan::Window::All,
            mode: assetgc::domain::scan::ScanMode::Both,
            stores: Vec::new(),
            report: None,
            progress: None,
        },
    )
    .await
    .expect("scan");
    assert!(
        !out.findings.complete,
        "the stop leaves the scan incomplete"
    );
    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::BudgetWarning { message } if message.contains("warn_at"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::BudgetStopped { message } if message.contains("stop_at"))),
        "{seen:?}"
    );
    app.close().await;
    assert_eq!(emulator.calls(), 2);
}

/// `check` spends a call or two of the account: they count in its budget like any other.
#[test]
fn the_calls_of_check_are_counted_in_the_budget() {
    let (_tmp, emulator, dir) = small(Options {
        rate_limit_headers: false,
        ..Options::default()
    });
    let config = small_config(&dir, &emulator, "");
    let r = assetgc(&config, &["check"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let answered = emulator.calls();
    assert!(answered > 0, "check called the API");
    let state = rusqlite::Connection::open(dir.join("assetgc.db")).expect("state");
    let counted: i64 = state
        .query_row(
            "SELECT COALESCE(SUM(calls), 0) FROM api_budget_calls",
            [],
            |r| r.get(0),
        )
        .expect("sum");
    assert_eq!(u64::try_from(counted).expect("count"), answered);
}
