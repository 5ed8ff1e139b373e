//! Helpers shared by the integration tests: which services a test may use, a fresh database per
//! test on SQLite, PostgreSQL and MariaDB, files with a chosen modification time, and the binary
//! with its two-section CSV report read back.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod api;
pub mod cloudinary;
pub mod conformance;
pub mod notify;
pub mod receiver;
pub mod s3;
pub mod smtp;

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

/// Runs a future to completion on a runtime of its own, in a thread of its own named like the
/// caller (so [`require_service`] still names the test): sync and async tests alike can call it.
/// A panic inside is the caller's panic.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let name = std::thread::current().name().unwrap_or("main").to_string();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(name)
            .spawn_scoped(s, || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(fut)
            })
            .expect("spawn a thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where the product keeps its state (SPEC §2 `[state]`) in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// The default: no `[state]` section, `assetgc.db` beside the config.
    Sqlite,
    /// A fresh database on the shared server, schema `assetgc`.
    Postgres,
}

impl StateBackend {
    pub fn name(self) -> &'static str {
        match self {
            StateBackend::Sqlite => "SQLite",
            StateBackend::Postgres => "PostgreSQL",
        }
    }

    /// Whether a test may run on this backend; `false` after printing the `skipped:` line (and a
    /// failure instead under `CI=true`), as [`require_service`] decides.
    pub fn available(self) -> bool {
        match self {
            StateBackend::Sqlite => true,
            StateBackend::Postgres => {
                require_service("PostgreSQL", "ASSETGC_TEST_POSTGRES_URL").is_some()
            }
        }
    }
}

/// The state database of one test. A PostgreSQL database is dropped with this value, unless the
/// test is failing: then it is left behind to be looked at, as [`TestDb`] does.
#[derive(Debug)]
pub struct StateDb {
    pub backend: StateBackend,
    /// The SQLite file the product makes when no `[state]` section is given.
    sqlite: PathBuf,
    postgres: Option<TestDb>,
}

/// One row of [`StateDb::query`]: each value as text (numbers in decimal), NULL as `None`.
pub type StateRow = Vec<Option<String>>;

impl StateDb {
    /// The state of a config kept in `dir`. For PostgreSQL, check [`StateBackend::available`]
    /// first: this creates the database and panics when its server is not configured.
    pub fn create(backend: StateBackend, dir: &Path) -> StateDb {
        let postgres = match backend {
            StateBackend::Sqlite => None,
            StateBackend::Postgres => Some(
                block_on(TestDb::create(Backend::Postgres, dir))
                    .expect("ASSETGC_TEST_POSTGRES_URL is set (StateBackend::available)"),
            ),
        };
        StateDb {
            backend,
            sqlite: dir.join("assetgc.db"),
            postgres,
        }
    }

    /// What the config gets before its first table: nothing for SQLite (the default), a
    /// `[state]` table with the database's URL for PostgreSQL.
    pub fn config_section(&self) -> String {
        match &self.postgres {
            None => String::new(),
            Some(db) => format!("[state]\nurl = \"{}\"\n", db.url),
        }
    }

    /// Runs one statement on the state database, bound to `params` in order, and returns its
    /// rows. Placeholders are written `$1`, `$2`…, PostgreSQL's way (SQLite reads them as `?1`…);
    /// table names are unqualified (PostgreSQL's `search_path` is set to `assetgc`).
    pub fn query(&self, sql: &str, params: &[&str]) -> Vec<StateRow> {
        match &self.postgres {
            None => self.query_sqlite(&sql.replace('$', "?"), params),
            Some(db) => block_on(query_postgres(&db.url, sql, params)),
        }
    }

    /// The one integer a `SELECT COUNT(*) …` returns.
    pub fn count(&self, sql: &str, params: &[&str]) -> i64 {
        let rows = self.query(sql, params);
        match rows.as_slice() {
            [row] if row.len() == 1 => row[0]
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("`{sql}` gave {row:?}, not a count")),
            _ => panic!("`{sql}` gave {rows:?}, not one count"),
        }
    }

    fn query_sqlite(&self, sql: &str, params: &[&str]) -> Vec<StateRow> {
        use rusqlite::types::ValueRef;
        let conn = rusqlite::Connection::open(&self.sqlite)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.sqlite.display()));
        // A worker may be writing: wait for its lock as the product does.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("busy timeout");
        let mut stmt = conn
            .prepare(sql)
            .unwrap_or_else(|e| panic!("SQLite state rejected `{sql}`: {e}"));
        let params = rusqlite::params_from_iter(params.iter());
        if stmt.column_count() == 0 {
            stmt.execute(params)
                .unwrap_or_else(|e| panic!("SQLite state: `{sql}`: {e}"));
            return Vec::new();
        }
        let width = stmt.column_count();
        stmt.query_map(params, |row| {
            (0..width)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n.to_string()),
                        ValueRef::Real(x) => Some(x.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect()
        })
        .and_then(Iterator::collect)
        .unwrap_or_else(|e| panic!("SQLite state: `{sql}`: {e}"))
    }
}

async fn query_postgres(url: &str, sql: &str, params: &[&str]) -> Vec<StateRow> {
    use sqlx::{Column, Row, TypeInfo};
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL state at {url}: {e}"));
    sqlx::raw_sql("SET search_path TO assetgc")
        .execute(&mut conn)
        .await
        .expect("SET search_path");
    let mut query = sqlx::query(AssertSqlSafe(sql.to_string()));
    for p in params {
        query = query.bind(*p);
    }
    let rows = query
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL state rejected `{sql}`: {e}"));
    conn.close().await.expect("close PostgreSQL");
    let text = |row: &sqlx::postgres::PgRow, i: usize| -> Result<Option<String>, sqlx::Error> {
        let kind = row.columns()[i].type_info().name().to_string();
        Ok(match kind.as_str() {
            "INT2" => row.try_get::<Option<i16>, _>(i)?.map(|n| n.to_string()),
            "INT4" => row.try_get::<Option<i32>, _>(i)?.map(|n| n.to_string()),
            "INT8" => row.try_get::<Option<i64>, _>(i)?.map(|n| n.to_string()),
            // SUM of a BIGINT column.
            "NUMERIC" => row
                .try_get::<Option<rust_decimal::Decimal>, _>(i)?
                .map(|n| n.to_string()),
            "FLOAT4" | "FLOAT8" => row.try_get::<Option<f64>, _>(i)?.map(|x| x.to_string()),
            "BOOL" => row.try_get::<Option<bool>, _>(i)?.map(|b| b.to_string()),
            _ => row.try_get::<Option<String>, _>(i)?,
        })
    };
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| text(row, i))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("PostgreSQL state: `{sql}`: {e}"))
        })
        .collect()
}

impl Drop for StateDb {
    fn drop(&mut self) {
        if let Some(db) = self.postgres.take()
            && !std::thread::panicking()
        {
            block_on(db.drop_db());
        }
    }
}

/// Makes a test of each state backend from `fn name(state: StateBackend)`: a module `name`
/// holding the tests `name::sqlite_state` and `name::postgres_state`. The PostgreSQL one is
/// skipped, saying so, when ASSETGC_TEST_POSTGRES_URL is unset (a failure with `CI=true`).
/// `both_states!(async name)` does the same for an `async fn`.
#[allow(unused_macros)]
macro_rules! both_states {
    ($name:ident) => {
        mod $name {
            use $crate::common::StateBackend;

            #[test]
            fn sqlite_state() {
                super::$name(StateBackend::Sqlite);
            }

            #[test]
            fn postgres_state() {
                if StateBackend::Postgres.available() {
                    super::$name(StateBackend::Postgres);
                }
            }
        }
    };
    (async $name:ident) => {
        mod $name {
            use $crate::common::StateBackend;

            #[tokio::test]
            async fn sqlite_state() {
                super::$name(StateBackend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres_state() {
                if StateBackend::Postgres.available() {
                    super::$name(StateBackend::Postgres).await;
                }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_states;

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

/// The TOML block of the README that follows `<!-- example: NAME -->`: worked examples are
/// tested as the README writes them.
pub fn readme_example(name: &str) -> String {
    readme_block(name, "toml")
}

/// The first fenced block in `lang` after the README's `<!-- example: NAME -->`.
pub fn readme_block(name: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- example: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README has no `{marker}`"));
    let rest = &readme[at + marker.len()..];
    let fence = format!("```{lang}\n");
    let open = rest
        .find(&fence)
        .unwrap_or_else(|| panic!("a ```{lang} block after the marker"))
        + fence.len();
    let close = rest[open..].find("\n```").expect("the block's end");
    rest[open..open + close + 1].to_string()
}
