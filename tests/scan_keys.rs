//! How the scan matches reference values to listed keys, through the built binary: Unicode
//! spellings in every mode and at the re-check before a delete, S3 URL forms, `path` values that
//! name unusable listed keys, a reference query that dies mid-stream, failed look-ups, and the
//! report details (order, `record_id`, console wording, Cloudinary URLs).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use common::cloudinary::{Emulator, Options, Resource};
use common::s3::Bucket;
use common::{Backend, Run, TestDb, assetgc, write_file};

const CAFE_NFC: &str = "caf\u{e9}.jpg";
const CAFE_NFD: &str = "cafe\u{301}.jpg";
const RESUME_NFC: &str = "r\u{e9}sum\u{e9}.jpg";
const RESUME_NFD: &str = "re\u{301}sume\u{301}.jpg";

fn days_ago(n: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(n * 86_400)
}

/// A folder store `media` and a SQLite database `app.db` in a temporary folder.
struct Folder {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
}

impl Folder {
    fn new() -> Folder {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("media")).expect("media");
        Folder {
            config: dir.join("assetgc.toml"),
            dir,
            _tmp: tmp,
        }
    }

    fn file(&self, key: &str, age_days: u64) {
        write_file(&self.dir.join("media"), key, b"x", days_ago(age_days));
    }

    fn sql(&self, statements: &[&str]) {
        let conn = rusqlite::Connection::open(self.dir.join("app.db")).expect("app db");
        for s in statements {
            conn.execute_batch(s).expect("sql");
        }
    }

    /// `[stores.media]` with `store_extra`, the SQLite database, and `references` appended.
    fn config(&self, store_extra: &str, references: &str) {
        std::fs::write(
            &self.config,
            format!(
                "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\n{store_extra}\n\n[databases.app]\nurl = \"sqlite://app.db\"\n\n{references}"
            ),
        )
        .expect("config");
    }

    fn run(&self, args: &[&str]) -> Run {
        assetgc(&self.config, args)
    }

    fn exists(&self, key: &str) -> bool {
        self.dir.join("media").join(key).exists()
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", run.stdout, run.stderr))
}

fn keys_of(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_string())
        .collect()
}

fn warnings(v: &Value) -> String {
    v["scan"]["warnings"].to_string()
}

// ---- Unicode (SPEC §2; deletion finding 1) ----

#[test]
fn nfd_row_protects_nfc_file_in_every_scan_mode() {
    let f = Folder::new();
    // In the window, on disk in NFC; its row in NFD and created long ago (outside the missing
    // window, so only the orphan side can see the match). And the reverse spelling, with a row
    // in the window.
    f.file(CAFE_NFC, 3);
    f.file(RESUME_NFD, 3);
    f.file("orphan.jpg", 3);
    f.sql(&[
        "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT, created_at TEXT)",
        &format!("INSERT INTO f VALUES (1, '{CAFE_NFD}', '2020-01-01 00:00:00')"),
        &format!(
            "INSERT INTO f VALUES (2, '{RESUME_NFC}', '{}')",
            Utc::now().format("%Y-%m-%d %H:%M:%S")
        ),
        "INSERT INTO f VALUES (3, 'gone.jpg', NULL)",
    ]);
    f.config(
        "",
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key, created_at FROM f\"\n",
    );
    for mode in [
        &["scan", "--json"][..],
        &["scan", "--json", "--orphans-only"],
        &["scan", "--json", "--missing-only"],
        &["scan", "--json", "--all"],
    ] {
        let run = f.run(mode);
        assert_eq!(run.code, 0, "{mode:?}: {}{}", run.stdout, run.stderr);
        let v = json(&run);
        let orphans = keys_of(&v["orphans"]);
        let missing = keys_of(&v["missing"]);
        let orphans_wanted = !mode.contains(&"--missing-only");
        let missing_wanted = !mode.contains(&"--orphans-only");
        assert_eq!(
            orphans,
            if orphans_wanted {
                vec!["orphan.jpg"]
            } else {
                vec![]
            },
            "{mode:?}"
        );
        assert_eq!(
            missing,
            if missing_wanted {
                vec!["gone.jpg"]
            } else {
                vec![]
            },
            "{mode:?}"
        );
        let w = warnings(&v);
        assert!(
            w.contains("only after Unicode normalisation"),
            "{mode:?}: {w}"
        );
        if orphans_wanted {
            assert_eq!(v["summary"]["valid"], 2, "{mode:?}");
        }
    }
}

#[test]
fn nfd_row_committed_after_the_scan_keeps_the_nfc_file_at_purge() {
    let f = Folder::new();
    f.file(CAFE_NFC, 3);
    f.file(RESUME_NFC, 3);
    f.file("kept.jpg", 3);
    f.file("orphan.jpg", 3);
    f.sql(&[
        "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)",
        "INSERT INTO f VALUES (1, 'kept.jpg')",
        "CREATE TABLE links (id INTEGER PRIMARY KEY, url TEXT)",
    ]);
    f.config(
        "quarantine = false\npublic_url = \"https://cdn.example.com/media\"",
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n\n\
         [[references]]\nname = \"links\"\nquery = \"SELECT id, url AS key FROM links\"\nkey_format = \"url\"\n",
    );
    let scan = f.run(&["scan", "--all", "--json"]);
    assert_eq!(scan.code, 0, "{}{}", scan.stdout, scan.stderr);
    assert_eq!(
        keys_of(&json(&scan)["orphans"]),
        [CAFE_NFC, "orphan.jpg", RESUME_NFC]
    );
    // After the scan, rows spelt in NFD: a `path` row (asked with IN) and a `url` row (the
    // whole query runs).
    f.sql(&[
        &format!("INSERT INTO f VALUES (2, '{CAFE_NFD}')"),
        &format!("INSERT INTO links VALUES (1, 'https://cdn.example.com/media/{RESUME_NFD}')"),
    ]);
    let purge = f.run(&["purge", "--confirm"]);
    assert_eq!(purge.code, 0, "{}{}", purge.stdout, purge.stderr);
    assert!(f.exists(CAFE_NFC), "deleted while referenced in NFD");
    assert!(f.exists(RESUME_NFC), "deleted while referenced in NFD");
    assert!(!f.exists("orphan.jpg"));
    let audit = f.run(&["audit", "--json"]);
    let audit: Value = serde_json::from_str(&audit.stdout).expect("audit JSON");
    let referenced: Vec<&str> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["outcome"] == "referenced")
        .map(|e| e["key"].as_str().expect("key"))
        .collect();
    assert_eq!(referenced.len(), 2, "{audit}");
}

// ---- a reference query that dies mid-stream (reliability finding 1) ----

#[tokio::test]
async fn reference_query_that_dies_mid_stream_reports_no_orphans_for_its_store() {
    let f = Folder::new();
    let Some(db) = TestDb::create(Backend::Postgres, &f.dir).await else {
        return;
    };
    // Rows k1…k4999 are read; row 5000 divides by zero. Files named by rows that were read
    // are valid; those named only by rows after the failure, and true orphans, are undecided.
    for i in [1, 2, 4999] {
        f.file(&format!("k{i}"), 3);
    }
    for i in [6000, 7000] {
        f.file(&format!("k{i}"), 3);
    }
    f.file("orphan.jpg", 3);
    std::fs::write(
        &f.config,
        format!(
            "[stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\n\n[databases.app]\nurl = \"{}\"\n\n\
             [[references]]\nname = \"files\"\nquery = \"SELECT i AS id, CASE WHEN i < 5000 THEN 'k' || i ELSE (1 / (i - 5000))::text END AS key FROM generate_series(1, 10000) AS i\"\n",
            db.url
        ),
    )
    .expect("config");
    let run = f.run(&["scan", "--all", "--json"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    assert_eq!(v["scan"]["complete"], false);
    assert_eq!(v["summary"]["orphans"], 0, "{}", v["scan"]);
    assert!(keys_of(&v["orphans"]).is_empty());
    assert_eq!(v["summary"]["valid"], 3, "{}", v["summary"]);
    let w = warnings(&v);
    assert!(
        w.contains("3 object(s) no read reference row names were left undecided")
            && w.contains("reference `files` failed"),
        "{w}"
    );
    // The console says the same, and the scan can never feed a purge.
    let console = f.run(&["scan", "--all"]);
    assert_eq!(console.code, 4);
    assert!(
        console.stdout.contains("left undecided"),
        "{}",
        console.stdout
    );
    let purge = f.run(&["purge", "--confirm"]);
    assert_eq!(purge.code, 2, "{}{}", purge.stdout, purge.stderr);
    assert!(f.exists("k6000") && f.exists("orphan.jpg"));
    db.drop_db().await;
}

// ---- console and report details ----

#[cfg(unix)]
#[test]
fn skipped_symbolic_link_is_not_counted_as_listed() {
    let f = Folder::new();
    f.file("a.jpg", 3);
    f.file("b.jpg", 3);
    std::os::unix::fs::symlink(f.dir.join("media/a.jpg"), f.dir.join("media/link.jpg"))
        .expect("symlink");
    f.sql(&[
        "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)",
        "INSERT INTO f VALUES (1, 'a.jpg')",
    ]);
    f.config(
        "",
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n",
    );
    let v = json(&f.run(&["scan", "--all", "--json"]));
    assert_eq!(v["summary"]["objects_scanned"], 2);
    let console = f.run(&["scan", "--all"]);
    assert_eq!(console.code, 0, "{}{}", console.stdout, console.stderr);
    assert!(
        console
            .stdout
            .contains("2 objects listed (+ 1 entries skipped)"),
        "{}",
        console.stdout
    );
    assert!(
        console.stdout.contains("Objects scanned:  2"),
        "{}",
        console.stdout
    );
}

#[test]
fn missing_only_says_when_it_listed_instead_of_looking_up() {
    let f = Folder::new();
    for k in ["a.jpg", "b.jpg", "c.jpg"] {
        f.file(k, 3);
    }
    f.sql(&[
        "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)",
        "INSERT INTO f VALUES (1, 'a.jpg'), (2, 'gone.jpg')",
    ]);
    // One look-up allowed, two keys to confirm: the store is listed instead.
    f.config(
        "max_lookups = 1",
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n",
    );
    let console = f.run(&["scan", "--all", "--missing-only"]);
    assert_eq!(console.code, 0, "{}{}", console.stdout, console.stderr);
    assert!(
        console.stdout.contains(
            "3 objects listed to confirm referenced keys (a listing: look-ups would cost more calls)"
        ),
        "{}",
        console.stdout
    );
    assert!(
        !console.stdout.contains("0 objects listed"),
        "{}",
        console.stdout
    );
    let v = json(&f.run(&["scan", "--all", "--missing-only", "--json"]));
    assert_eq!(keys_of(&v["missing"]), ["gone.jpg"]);
}

#[test]
fn json_record_id_is_a_string_even_without_an_id_column() {
    let f = Folder::new();
    f.sql(&[
        "CREATE TABLE f (k TEXT)",
        "INSERT INTO f VALUES ('gone.jpg')",
    ]);
    f.config(
        "",
        "[[references]]\nname = \"files\"\nquery = \"SELECT k AS key FROM f\"\n",
    );
    let run = f.run(&["scan", "--all", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    assert_eq!(v["missing"][0]["key"], "gone.jpg");
    assert_eq!(v["missing"][0]["record_id"], Value::String(String::new()));
}

/// Cloudinary: orphans in text order of their resource type, with URLs under the store's
/// `public_url` (a CNAME) instead of `secure_url`. Also documents that a regex capture reads as
/// `cloudinary` there.
#[test]
fn cloudinary_orphans_sort_by_type_as_text_and_use_the_public_url() {
    let emulator = Emulator::start(Options::default());
    let old = Utc::now() - TimeDelta::days(3);
    emulator.add_many([
        Resource::image("same", old),
        Resource::video("same", old),
        Resource::raw("same", old),
        Resource::image("kept", old),
    ]);
    let f = Folder::new();
    f.sql(&[
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, body TEXT)",
        "INSERT INTO posts VALUES (1, '<img src=\"https://images.example.com/image/upload/v1/kept.jpg\">')",
    ]);
    std::fs::write(
        &f.config,
        format!(
            "[stores.media]\nurl = \"{}\"\nresource_types = [\"image\", \"video\", \"raw\"]\nmin_age = \"1h\"\npublic_url = \"https://images.example.com\"\n\n\
             [databases.app]\nurl = \"sqlite://app.db\"\n\n\
             [[references]]\nname = \"bodies\"\nquery = \"SELECT id, body AS key FROM posts\"\nkey_format = {{ regex = 'src=\"(?P<key>[^\"]+)\"' }}\n",
            emulator.cloudinary_url()
        ),
    )
    .expect("config");
    let run = f.run(&["scan", "--all", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    let orphans: Vec<(&str, &str, &str)> = v["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| {
            (
                o["key"].as_str().expect("key"),
                o["resource_type"].as_str().expect("type"),
                o["url"].as_str().expect("url"),
            )
        })
        .collect();
    assert_eq!(
        orphans.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(),
        [("same", "image"), ("same", "raw"), ("same", "video")],
        "{v}"
    );
    for (_, rt, url) in &orphans {
        assert!(
            url.starts_with(&format!("https://images.example.com/{rt}/upload/")),
            "{url}"
        );
    }
}

// ---- S3 (moto) ----

fn s3_config(dir: &Path, bucket: &Bucket, references: &str) -> PathBuf {
    let path = dir.join("assetgc.toml");
    std::fs::write(
        &path,
        format!(
            "[stores.media]\nurl = \"s3://{}\"\nendpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\nmin_age = \"0s\"\n\n\
             [databases.app]\nurl = \"sqlite://app.db\"\n\n{references}",
            bucket.name, bucket.endpoint
        ),
    )
    .expect("config");
    path
}

fn sqlite(dir: &Path, statements: &[&str]) {
    let conn = rusqlite::Connection::open(dir.join("app.db")).expect("app db");
    for s in statements {
        conn.execute_batch(s).expect("sql");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn url_rows_in_every_s3_form_protect_their_objects_without_public_url() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for k in [
        "uploads/virtual.jpg",
        "uploads/regional.jpg",
        "uploads/legacy.jpg",
        "uploads/path.jpg",
        "uploads/endpoint.jpg",
        "uploads/a b.jpg",
        "orphan.jpg",
    ] {
        bucket.put(k, b"x").await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let b = &bucket.name;
    let e = &bucket.endpoint;
    let upper = e.replace("http://", "HTTP://");
    sqlite(
        dir.path(),
        &[
            "CREATE TABLE f (id INTEGER PRIMARY KEY, url TEXT)",
            &format!(
                "INSERT INTO f VALUES
                 (1, 'https://{b}.s3.amazonaws.com/uploads/virtual.jpg'),
                 (2, 'https://{b}.s3.eu-west-3.amazonaws.com/uploads/regional.jpg?X-Amz-Expires=60'),
                 (3, 'https://{b}.s3-eu-west-1.amazonaws.com/uploads/legacy.jpg'),
                 (4, 'https://s3.eu-west-3.amazonaws.com/{b}/uploads/path.jpg'),
                 (5, '{upper}/{b}/uploads/endpoint.jpg'),
                 (6, '{e}/{b}/uploads/a%20b.jpg'),
                 (7, '{e}/{b}/uploads/gone.jpg'),
                 (8, 'https://other-bucket.s3.amazonaws.com/uploads/x.jpg')"
            ),
        ],
    );
    let cfg = s3_config(
        dir.path(),
        &bucket,
        "[[references]]\nname = \"urls\"\nquery = \"SELECT id, url AS key FROM f\"\nkey_format = \"url\"\n",
    );
    // A `url` reference without public_url is a valid config on an S3 store.
    let check = assetgc(&cfg, &["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let run = assetgc(&cfg, &["scan", "--all", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    assert_eq!(keys_of(&v["orphans"]), ["orphan.jpg"], "{v}");
    assert_eq!(keys_of(&v["missing"]), ["uploads/gone.jpg"], "{v}");
    assert_eq!(v["summary"]["unparsed"], 0);
    assert_eq!(v["summary"]["references"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn path_rows_naming_unusable_s3_keys_are_neither_missing_nor_unparsed() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    for k in [
        "/uploads/lead.jpg",
        "a//b.jpg",
        "uploads/plain.jpg",
        "/stray.jpg",
    ] {
        bucket.put(k, b"x").await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    sqlite(
        dir.path(),
        &[
            "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)",
            "INSERT INTO f VALUES
             (1, '/uploads/lead.jpg'),
             (2, 'a//b.jpg'),
             (3, '/uploads/plain.jpg'),
             (4, 'uploads/plain.jpg'),
             (5, 'gone.jpg')",
        ],
    );
    let cfg = s3_config(
        dir.path(),
        &bucket,
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n",
    );
    let run = assetgc(&cfg, &["scan", "--all", "--json"]);
    // Complete: `a//b.jpg` names a listed key, so it is no unparsed value (1 of 5 would be
    // more than 1 %).
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    assert_eq!(v["scan"]["complete"], true);
    assert_eq!(keys_of(&v["missing"]), ["gone.jpg"], "{v}");
    assert!(keys_of(&v["orphans"]).is_empty(), "{v}");
    assert_eq!(v["summary"]["unparsed"], 0, "{v}");
    let w = warnings(&v);
    assert!(
        w.contains("2 listed name(s) that are not usable keys are named by references")
            && w.contains("/uploads/lead.jpg")
            && w.contains("a//b.jpg")
            && !w.contains("cannot read"),
        "{w}"
    );
}

/// A proxy to `upstream` that answers 403 to every HEAD whose path contains `refuse`.
async fn refusing_heads(upstream: String, refuse: &'static str) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            if parts.method == axum::http::Method::HEAD && path.contains(refuse) {
                return Response::builder()
                    .status(403)
                    .body(Body::empty())
                    .expect("response");
            }
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("request body");
            let mut up = client.request(
                reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).expect("method"),
                format!("{upstream}{path}"),
            );
            for (name, value) in &parts.headers {
                if name != "host" {
                    up = up.header(name.as_str(), value.as_bytes());
                }
            }
            let answer = up.body(body.to_vec()).send().await.expect("upstream");
            let mut out = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                out = out.header(name.as_str(), value.as_bytes());
            }
            let bytes = answer.bytes().await.expect("upstream body");
            out.body(Body::from(bytes)).expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_look_up_call_keeps_the_rows_other_calls_confirmed_absent() {
    let Some(endpoint) = common::require_service("moto S3", "ASSETGC_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = Bucket::create(&endpoint).await;
    let proxy = refusing_heads(bucket.endpoint.clone(), "zz-refused").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 1,000 absent keys and the refused one: look-ups go 1,000 keys a call, in key order, so
    // the refused key is alone in the second call.
    let mut rows: Vec<String> = (0..1000)
        .map(|i| format!("({i}, 'a/gone{i:04}.jpg')"))
        .collect();
    rows.push("(5001, 'zz-refused.jpg')".into());
    sqlite(
        dir.path(),
        &[
            "CREATE TABLE f (id INTEGER PRIMARY KEY, k TEXT)",
            &format!("INSERT INTO f VALUES {}", rows.join(", ")),
        ],
    );
    let proxied = Bucket::named(&proxy, &bucket.name);
    let cfg = s3_config(
        dir.path(),
        &proxied,
        "[[references]]\nname = \"files\"\nquery = \"SELECT id, k AS key FROM f\"\n",
    );
    let run = assetgc(&cfg, &["scan", "--all", "--missing-only", "--json"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let v = json(&run);
    assert_eq!(v["scan"]["complete"], false);
    assert_eq!(v["summary"]["missing"], 1000, "{}", warnings(&v));
    assert!(!keys_of(&v["missing"]).contains(&"zz-refused.jpg".to_string()));
    let w = warnings(&v);
    assert!(
        w.contains("1 reference(s) could not be confirmed") && w.contains("look-up failed"),
        "{w}"
    );
}
