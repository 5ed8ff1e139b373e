//! The state database on SQLite (the default): one file, created when missing, in WAL mode.
//!
//! Migrations run through sqlx; every statement after that runs on one rusqlite connection of
//! the process, on the caller's thread: a batch's outcomes are many small writes in one
//! transaction, and sqlx would hand each of them to its worker thread and back. Writers take
//! SQLite's write lock up front (`BEGIN IMMEDIATE`), so two workers — in one process or two —
//! never read the same due entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Arg, Backend, Dialect, Mode, Row, Tx, Value};
use crate::error::{Error, Result};

pub(crate) struct SqliteBackend {
    path: PathBuf,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

/// Runs blocking work on this worker, telling a multi-threaded runtime to move its other tasks
/// elsewhere meanwhile; on a current-thread runtime it simply runs.
fn in_place<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn err(e: &rusqlite::Error) -> Error {
    Error::State(e.to_string())
}

impl SqliteBackend {
    pub async fn open(path: &Path) -> Result<SqliteBackend> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::State(format!(
                    "cannot create folder {} for {}: {e}",
                    dir.display(),
                    path.display()
                ))
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        // Two processes starting on a fresh file would both create the tables and one would
        // fail ("table scans already exists"): the second waits here for the first's migrations.
        let lock = migration_lock(path).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| Error::State(format!("cannot open {}: {e}", path.display())))?;
        let migrated = sqlx::migrate!("migrations/sqlite").run(&pool).await;
        pool.close().await;
        drop(lock);
        migrated.map_err(|e| Error::State(format!("cannot migrate {}: {e}", path.display())))?;
        let conn = in_place(|| -> rusqlite::Result<rusqlite::Connection> {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            // Statement journals (an upsert, a RETURNING) stay in memory: on disk they cost a
            // write per page touched, which was most of the time of queueing 100,000 keys.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.set_prepared_statement_cache_capacity(128);
            Ok(conn)
        })
        .map_err(|e| Error::State(format!("cannot open {}: {e}", path.display())))?;
        Ok(SqliteBackend {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

/// An exclusive lock on `<db>.lock` beside the database, held while migrating. A file of its
/// own: a second descriptor on the database file would drop SQLite's own locks when closed.
async fn migration_lock(db: &Path) -> Result<std::fs::File> {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let path = db.with_file_name(name);
    let shown = path.display().to_string();
    let cannot = move |e: std::io::Error| Error::State(format!("cannot lock {shown}: {e}"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(&cannot)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| cannot(std::io::Error::other(e)))?
        .map_err(cannot)
}

#[async_trait]
impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>> {
        let conn = Arc::clone(&self.conn).lock_owned().await;
        let begin = match mode {
            Mode::Read => "BEGIN",
            Mode::Write => "BEGIN IMMEDIATE",
        };
        // Waiting for another process's write lock (busy_timeout) blocks: off the runtime's back.
        in_place(|| conn.execute_batch(begin)).map_err(|e| {
            Error::State(format!(
                "cannot begin a transaction on {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(Box::new(SqliteTx { conn, open: true }))
    }

    async fn close(&self) {}
}

struct SqliteTx {
    conn: OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
}

/// `$N` placeholders as SQLite numbers them (`?N`): the SQL text is written once for both
/// backends in PostgreSQL's form.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, args: &[Arg<'_>]) -> rusqlite::Result<()> {
    for (i, a) in args.iter().enumerate() {
        match *a {
            Arg::Int(n) => stmt.raw_bind_parameter(i + 1, n)?,
            Arg::Text(s) => stmt.raw_bind_parameter(i + 1, s)?,
        }
    }
    Ok(())
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // No REAL columns in our tables; a stray one reads as its whole part.
        #[allow(clippy::cast_possible_truncation)]
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Value::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let run = || -> rusqlite::Result<usize> {
            let mut stmt = self.conn.prepare_cached(&sqlite_sql(sql))?;
            bind(&mut stmt, args)?;
            stmt.raw_execute()
        };
        run().map(|n| n as u64).map_err(|e| err(&e))
    }

    async fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        let run = || -> rusqlite::Result<Vec<Row>> {
            let mut stmt = self.conn.prepare_cached(&sqlite_sql(sql))?;
            bind(&mut stmt, args)?;
            let n = stmt.column_count();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut cols = Vec::with_capacity(n);
                for i in 0..n {
                    cols.push(value(r.get_ref(i)?));
                }
                out.push(Row(cols));
            }
            Ok(out)
        };
        run().map_err(|e| err(&e))
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.open = false;
        // A commit may wait for the disk: off the runtime's back.
        in_place(|| self.conn.execute_batch("COMMIT")).map_err(|e| err(&e))
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_sql;

    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(
            sqlite_sql("UPDATE q SET a = $2 WHERE id = $1 AND b IN ($10, $3)"),
            "UPDATE q SET a = ?2 WHERE id = ?1 AND b IN (?10, ?3)"
        );
        assert_eq!(sqlite_sql("SELECT '$' || x"), "SELECT '$' || x");
    }
}
