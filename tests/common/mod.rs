//! Helpers shared by the integration tests: which services a test may use, a fresh database per
//! test on SQLite, PostgreSQL and MariaDB, files with a chosen modification time, and the binary
//! with its two-section CSV report read back.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod cloudinary;
pub mod conformance;
pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sqlx::{AssertSqlSafe, Connection};

/// The URL of a service a test needs, from `env_var`; `None` (after saying so) when it is unset.
///
/// With `CI=true` an unset variable fails the test instead: `.ci/run` sets every variable and
/// checks that its server answers, so in CI a skip can only be a mistake that would hide a failure.
/// The test's name is taken from its thread, which the test harness names after the test.
pub fn require_service(service: &str, env_var: &str) -> Option<String> {
    if let Some(url) = std::env::var(env_var).ok().filter(|v| !v.trim().is_empty()) {
        return Some(url);
    }
    let test = match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "this test".to_string(),
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    assert!(
        !in_ci,
        "{test} needs {service}, but {env_var} is not set: in CI (CI=true) no test may be skipped; \
         set {env_var} or run the tests through .ci/test"
    );
    eprintln!("skipped: {test} needs {service} (set {env_var})");
    None
}

/// The SQL databases a reference can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::MariaDb => "MariaDB",
        }
    }
}

/// A database made for one test: a file in the test's folder for SQLite, a uniquely named
/// database on the shared server for PostgreSQL and MariaDB. Call [`TestDb::drop_db`] at the end
/// of the test; a test that fails before leaves the database behind, which is harmless (the names
/// never repeat) and useful to look at.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    /// What the product's config gets as `[databases.*] url`.
    pub url: String,
    /// The server URL the database was created from (the `test` database), `None` for SQLite.
    admin_url: Option<String>,
    name: String,
}

impl TestDb {
    /// A fresh, empty database, or `None` when the test is skipped because its server is not
    /// configured (see [`require_service`]). `dir` holds the SQLite file.
    pub async fn create(backend: Backend, dir: &Path) -> Option<TestDb> {
        let name = unique_name("assetgc_t");
        match backend {
            Backend::Sqlite => {
                let path = dir.join(format!("{name}.db"));
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true);
                let conn = sqlx::SqliteConnection::connect_with(&opts)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot create SQLite file {}: {e}", path.display())
                    });
                conn.close().await.expect("close SQLite");
                Some(TestDb {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    admin_url: None,
                    name,
                })
            }
            Backend::Postgres => {
                let admin = require_service("PostgreSQL", "ASSETGC_TEST_POSTGRES_URL")?;
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e}"));
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                conn.close().await.expect("close PostgreSQL");
                Some(TestDb {
                    backend,
                    url: with_database(&admin, &name),
                    admin_url: Some(admin),
                    name,
                })
            }
            Backend::MariaDb => {
                let admin = require_service("MariaDB", "ASSETGC_TEST_MYSQL_URL")?;
                let mut conn = sqlx::MySqlConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach MariaDB at {admin}: {e}"));
                // Keys are Unicode: the server's default character set may be latin1.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                conn.close().await.expect("close MariaDB");
                Some(TestDb {
                    backend,
                    url: with_database(&admin, &name),
                    admin_url: Some(admin),
                    name,
                })
            }
        }
    }

    /// Runs each statement in turn, on one connection (MariaDB takes one statement per query).
    pub async fn execute<S: AsRef<str>>(&self, statements: &[S]) {
        macro_rules! run_all {
            ($conn:ty) => {{
                let mut conn = <$conn>::connect(&self.url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
                for sql in statements {
                    let sql = sql.as_ref();
                    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| {
                            panic!("{} rejected `{sql}`: {e}", self.backend.name())
                        });
                }
                conn.close().await.expect("close connection");
            }};
        }
        match self.backend {
            Backend::Sqlite => run_all!(sqlx::SqliteConnection),
            Backend::Postgres => run_all!(sqlx::PgConnection),
            Backend::MariaDb => run_all!(sqlx::MySqlConnection),
        }
    }

    /// Drops the server database; SQLite's file goes with the test's temporary folder.
    pub async fn drop_db(self) {
        let Some(admin) = &self.admin_url else {
            return;
        };
        match self.backend {
            Backend::Sqlite => {}
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(admin)
                    .await
                    .expect("reach PostgreSQL");
                // WITH (FORCE): a pool of the product may not have said goodbye yet.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .execute(&mut conn)
                .await
                .expect("drop test database");
                conn.close().await.expect("close PostgreSQL");
            }
            Backend::MariaDb => {
                let mut conn = sqlx::MySqlConnection::connect(admin)
                    .await
                    .expect("reach MariaDB");
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {}",
                    self.name
                )))
                .execute(&mut conn)
                .await
                .expect("drop test database");
                conn.close().await.expect("close MariaDB");
            }
        }
    }
}

/// `prefix_<16 hex digits>`, different in every test and every run: a valid SQL identifier.
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{prefix}_{:016x}", h.finish())
}

/// The server URL with its database (the path) replaced; query parameters are kept.
fn with_database(url: &str, database: &str) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("bad database URL {url}: {e}"));
    u.set_path(&format!("/{database}"));
    u.to_string()
}

/// Writes `contents` to `root/key` (folders created) and sets its modification time.
pub fn write_file(root: &Path, key: &str, contents: &[u8], modified: SystemTime) -> PathBuf {
    let path = root.join(key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(modified))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
    path
}

/// What one run of the binary gave back.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `assetgc --config <config> <args…>` with colour and progress bars off.
pub fn assetgc(config: &Path, args: &[&str]) -> Run {
    let mut cmd = assert_cmd::Command::cargo_bin("assetgc").expect("the assetgc binary is built");
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ASSETGC_CONFIG")
        .env_remove("ASSETGC_LOG");
    let out = cmd.output().expect("run assetgc");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub const ORPHANS_TITLE: &str = "ORPHANED FILES";
pub const MISSING_TITLE: &str = "RECORDS WITH MISSING FILES";
pub const ORPHAN_HEADER: [&str; 8] = [
    "store",
    "key",
    "resource_type",
    "size_bytes",
    "size_mb",
    "format",
    "uploaded_at",
    "url",
];
pub const MISSING_HEADER: [&str; 9] = [
    "reference",
    "record_id",
    "title",
    "owner",
    "media_type",
    "key",
    "created_at",
    "status",
    "link",
];

/// One CSV row, by column name, with the formula-injection `'` already stripped.
pub type CsvRow = HashMap<String, String>;

/// The two sections of a CSV report (SPEC §5).
#[derive(Debug)]
pub struct CsvReport {
    pub orphans: Vec<CsvRow>,
    pub missing: Vec<CsvRow>,
}

/// Reads our CSV report back, checking its layout on the way: both titles, the exact headers, two
/// empty lines between the sections, every row as wide as its header. Readers strip exactly one
/// leading `'` from a cell (SPEC §5).
pub fn parse_csv_report(text: &str) -> CsvReport {
    let marker = format!("\n\n\n{MISSING_TITLE}\n");
    let at = text.find(&marker).unwrap_or_else(|| {
        panic!("no `{MISSING_TITLE}` after two empty lines in the report:\n{text}")
    });
    let (first, second) = (&text[..=at], &text[at + 3..]);
    CsvReport {
        orphans: parse_section(first, ORPHANS_TITLE, &ORPHAN_HEADER),
        missing: parse_section(second, MISSING_TITLE, &MISSING_HEADER),
    }
}

fn parse_section(text: &str, title: &str, header: &[&str]) -> Vec<CsvRow> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records().map(|r| r.expect("well-formed CSV"));
    let got_title = records.next().expect("a section title");
    assert_eq!(
        got_title.iter().collect::<Vec<_>>(),
        [title],
        "section title"
    );
    let got_header = records.next().expect("a section header");
    assert_eq!(
        got_header.iter().collect::<Vec<_>>(),
        header,
        "{title} header"
    );
    records
        .map(|r| {
            assert_eq!(r.len(), header.len(), "{title}: row width of {r:?}");
            header
                .iter()
                .zip(r.iter())
                .map(|(h, cell)| {
                    let cell = cell.strip_prefix('\'').unwrap_or(cell);
                    ((*h).to_string(), cell.to_string())
                })
                .collect()
        })
        .collect()
}
