//! Reference queries, streamed from SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! sqlx's `Any` driver breaks on booleans and timestamps, so each database has its own typed pool
//! behind `Db`. Queries are sent unprepared (`raw_sql`): PostgreSQL's simple protocol and MySQL's
//! text protocol return every value as text, and SQLite converts any value to text on request, so
//! one decoder reads integer or UUID ids and every kind of timestamp alike.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use log::LevelFilter;
use sqlx::ConnectOptions as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{
    AssertSqlSafe, Column, ColumnIndex, Database, Decode, Executor, Row, SqlSafeStr, Statement,
};
use tokio::sync::mpsc;

use crate::config::{DatabaseConfig, DbKind};

#[derive(Debug, Clone)]
pub enum Db {
    /// The pool serves `check`; reference rows are read through rusqlite from the same file.
    Sqlite(sqlx::SqlitePool, SqliteFile),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

#[derive(Debug, Clone)]
pub struct SqliteFile {
    path: std::path::PathBuf,
    read_only: bool,
}

/// Receives a query's rows one at a time, as the text of the wanted columns, and gathers them
/// into batches for another task.
pub trait RowSink: Send + 'static {
    type Batch: Send + 'static;
    /// Takes one row; returns a batch when one is full.
    fn row(&mut self, cols: &[Option<&str>]) -> Option<Self::Batch>;
    /// What is left at the end.
    fn flush(&mut self) -> Option<Self::Batch>;
}

/// What `check` learnt of a reference query.
pub struct Probe {
    /// The columns the query returns.
    pub columns: Vec<String>,
    /// Why the query cannot be wrapped in `LIMIT 1`, when it cannot (it was only prepared).
    pub unwrapped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Query(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Values bound in one `IN (…)` list: far below every database's parameter limit.
pub const IN_LIST: usize = 500;

impl Db {
    /// Connects and proves the connection with one round trip. Messages never carry the password.
    pub async fn connect(cfg: &DatabaseConfig, max_connections: u32) -> Result<Db, DbError> {
        let unreachable = |e: sqlx::Error| {
            DbError::Unreachable(format!(
                "database {} ({}) is unreachable: {}",
                cfg.name,
                cfg.display_url(),
                one_line(&e.to_string())
            ))
        };
        let max = max_connections.max(1);
        let db = match cfg.kind {
            DbKind::Sqlite => {
                let path = cfg.sqlite_path.clone().unwrap_or_default();
                if !path.is_file() {
                    return Err(DbError::Unreachable(format!(
                        "database {}: SQLite file {} does not exist",
                        cfg.name,
                        path.display()
                    )));
                }
                let opts = SqliteConnectOptions::new()
                    .filename(&path)
                    .read_only(cfg.sqlite_read_only)
                    .create_if_missing(false)
                    .log_statements(LevelFilter::Off)
                    .log_slow_statements(LevelFilter::Off, Duration::ZERO);
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(opts)
                        .await
                        .map_err(unreachable)?,
                    SqliteFile {
                        path,
                        read_only: cfg.sqlite_read_only,
                    },
                )
            }
            DbKind::Postgres => {
                let opts = PgConnectOptions::from_str(cfg.url.expose())
                    .map_err(unreachable)?
                    .log_statements(LevelFilter::Off)
                    .log_slow_statements(LevelFilter::Off, Duration::ZERO);
                first_contact::<sqlx::PgConnection>(&opts)
                    .await
                    .map_err(unreachable)?;
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(opts)
                        .await
                        .map_err(unreachable)?,
                )
            }
            DbKind::MySql => {
                let opts = MySqlConnectOptions::from_str(cfg.url.expose())
                    .map_err(unreachable)?
                    .log_statements(LevelFilter::Off)
                    .log_slow_statements(LevelFilter::Off, Duration::ZERO);
                first_contact::<sqlx::MySqlConnection>(&opts)
                    .await
                    .map_err(unreachable)?;
                Db::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(opts)
                        .await
                        .map_err(unreachable)?,
                )
            }
        };
        Ok(db)
    }

    /// Runs a query and hands every row to `sink` as the text of the `wanted` columns, found by
    /// name (case-insensitive); the first wanted column is required, the others are `None` when
    /// the query lacks them. Full batches go to `tx`. Returns the sink for its counters.
    pub async fn feed<S: RowSink + Default>(
        &self,
        sql: &str,
        wanted: &[&str],
        mut sink: S,
        tx: &mpsc::Sender<S::Batch>,
    ) -> (S, Result<(), DbError>) {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_ascii_lowercase()).collect();
        let mut rows = match self {
            Db::Sqlite(_, file) => {
                let (file, sql, tx) = (file.clone(), sql.to_string(), tx.clone());
                let joined = tokio::task::spawn_blocking(move || {
                    let r = sqlite_feed(&file, &sql, &wanted, &mut sink, &tx);
                    (sink, r)
                })
                .await;
                return joined
                    .unwrap_or_else(|e| (S::default(), Err(DbError::Query(e.to_string()))));
            }
            Db::Postgres(p) => text_rows(p, sql.to_string(), wanted),
            Db::MySql(p) => text_rows(p, mysql_key_alias(sql), wanted),
        };
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) => return (sink, Err(e)),
            };
            let cols: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
            if let Some(batch) = sink.row(&cols)
                && tx.send(batch).await.is_err()
            {
                return (sink, Ok(()));
            }
        }
        if let Some(batch) = sink.flush() {
            let _ = tx.send(batch).await;
        }
        (sink, Ok(()))
    }

    /// Like [`Db::feed`] for a query that takes one bind parameter, a time: a policy's
    /// `keep_query` and its cutoff (SPEC §2). The time is bound as the parameter's own type on
    /// PostgreSQL (`timestamptz`, `timestamp` as UTC, `date`, or text), as a UTC date-time on
    /// MySQL/MariaDB (sqlx's sessions run in UTC), and as `YYYY-MM-DD HH:MM:SS` text on SQLite
    /// (the form Django and SQLAlchemy store there). Values are read as text; integers are
    /// written out.
    pub async fn feed_bound<S: RowSink + Default>(
        &self,
        sql: &str,
        at: chrono::DateTime<chrono::Utc>,
        wanted: &[&str],
        mut sink: S,
        tx: &mpsc::Sender<S::Batch>,
    ) -> (S, Result<(), DbError>) {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_ascii_lowercase()).collect();
        let q = |e: sqlx::Error| DbError::Query(one_line(&e.to_string()));
        macro_rules! pump {
            ($rows:expr) => {{
                let mut rows = $rows;
                let mut index: Option<Vec<Option<usize>>> = None;
                while let Some(row) = rows.next().await {
                    let row = match row {
                        Ok(r) => r,
                        Err(e) => return (sink, Err(q(e))),
                    };
                    let idx = match &index {
                        Some(i) => i,
                        None => {
                            let cols: Vec<String> = row
                                .columns()
                                .iter()
                                .map(|c| c.name().to_ascii_lowercase())
                                .collect();
                            let found: Vec<Option<usize>> = wanted
                                .iter()
                                .map(|w| cols.iter().position(|c| c == w))
                                .collect();
                            if found.first().copied().flatten().is_none() {
                                return (sink, Err(missing_key_column(&wanted, &cols)));
                            }
                            index.insert(found)
                        }
                    };
                    let values: Vec<Option<String>> =
                        idx.iter()
                            .map(|i| {
                                i.and_then(|i| {
                                    row.try_get::<Option<String>, _>(i).ok().flatten().or_else(
                                        || {
                                            row.try_get::<Option<i64>, _>(i)
                                                .ok()
                                                .flatten()
                                                .map(|n| n.to_string())
                                        },
                                    )
                                })
                            })
                            .collect();
                    let cols: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
                    if let Some(batch) = sink.row(&cols)
                        && tx.send(batch).await.is_err()
                    {
                        return (sink, Ok(()));
                    }
                }
            }};
        }
        match self {
            Db::Postgres(p) => {
                let query = match pg_time_query(p, sql, at).await {
                    Ok(q) => q,
                    Err(e) => return (sink, Err(e)),
                };
                pump!(query.fetch(p));
            }
            Db::MySql(p) => {
                let sql = mysql_key_alias(sql);
                pump!(
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(at.naive_utc())
                        .fetch(p)
                );
            }
            Db::Sqlite(p, _) => {
                let text = at.format("%Y-%m-%d %H:%M:%S").to_string();
                pump!(
                    sqlx::query(AssertSqlSafe(sql.to_string()))
                        .bind(text)
                        .fetch(p)
                );
            }
        }
        if let Some(batch) = sink.flush() {
            let _ = tx.send(batch).await;
        }
        (sink, Ok(()))
    }

    /// Runs a query wrapped in `LIMIT 1` and returns the column names it yields (from the
    /// prepared statement, so a query without rows still shows its columns). A query that runs
    /// but cannot be wrapped (MariaDB refuses a derived table with two columns of one name) is
    /// prepared alone, never run whole here: [`Probe::unwrapped`] says why the wrap failed.
    pub async fn probe(&self, sql: &str) -> Result<Probe, DbError> {
        let wrapped = format!("SELECT * FROM ({sql}) AS assetgc_q LIMIT 1");
        let (wrapped, sql) = match self {
            Db::MySql(_) => (mysql_key_alias(&wrapped), mysql_key_alias(sql)),
            _ => (wrapped, sql.to_string()),
        };
        let prepared = match self {
            Db::Sqlite(p, _) => prepare_columns(p, &wrapped).await,
            Db::Postgres(p) => prepare_columns(p, &wrapped).await,
            Db::MySql(p) => prepare_columns(p, &wrapped).await,
        };
        let columns = match prepared {
            Ok(c) => c,
            Err(DbError::Query(wrap_error)) => {
                let alone = match self {
                    Db::Sqlite(p, _) => prepare_columns(p, &sql).await,
                    Db::Postgres(p) => prepare_columns(p, &sql).await,
                    Db::MySql(p) => prepare_columns(p, &sql).await,
                };
                return alone.map(|columns| Probe {
                    columns,
                    unwrapped: Some(wrap_error),
                });
            }
            Err(e) => return Err(e),
        };
        match self {
            Db::Sqlite(p, _) => run_first(p, wrapped).await?,
            Db::Postgres(p) => run_first(p, wrapped).await?,
            Db::MySql(p) => run_first(p, wrapped).await?,
        }
        Ok(Probe {
            columns,
            unwrapped: None,
        })
    }

    /// Prepares a statement without running it (an expiry rule's `delete`, for `check`).
    pub async fn prepare_only(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p, _) => prepare_columns(p, sql).await.map(drop),
            Db::Postgres(p) => prepare_columns(p, sql).await.map(drop),
            Db::MySql(p) => prepare_columns(p, sql).await.map(drop),
        }
    }

    /// Runs a policy's keep query wrapped in `LIMIT 1`, its cutoff bound when it takes one;
    /// fails when it returns no `key` column.
    pub async fn probe_keep(
        &self,
        sql: &str,
        cutoff: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), DbError> {
        #[derive(Default)]
        struct Nothing;
        impl RowSink for Nothing {
            type Batch = ();
            fn row(&mut self, _: &[Option<&str>]) -> Option<()> {
                None
            }
            fn flush(&mut self) -> Option<()> {
                None
            }
        }
        let Some(at) = cutoff else {
            let probe = self.probe(sql).await?;
            return if probe.columns.iter().any(|c| c.eq_ignore_ascii_case("key")) {
                Ok(())
            } else {
                Err(missing_key_column(&["key".to_string()], &probe.columns))
            };
        };
        let wrapped = format!("SELECT * FROM ({sql}) AS assetgc_q LIMIT 1");
        let (tx, _rx) = mpsc::channel(1);
        let columns = match self {
            Db::Sqlite(p, _) => prepare_columns(p, &wrapped).await?,
            Db::Postgres(p) => prepare_columns(p, &wrapped).await?,
            Db::MySql(p) => prepare_columns(p, &mysql_key_alias(&wrapped)).await?,
        };
        if !columns.iter().any(|c| c.eq_ignore_ascii_case("key")) {
            return Err(missing_key_column(&["key".to_string()], &columns));
        }
        self.feed_bound(&wrapped, at, &["key"], Nothing, &tx)
            .await
            .1
    }

    /// The `key` values of `sql`'s rows whose `key` is one of `values`: the query wrapped as
    /// `SELECT assetgc_q.key FROM (<sql>) AS assetgc_q WHERE assetgc_q.key IN (…)`, the values
    /// bound as parameters (never spliced into the text), at most [`IN_LIST`] a statement.
    /// `Err(Query)` when the query cannot be wrapped or its key is not text: the caller then
    /// runs it whole.
    pub async fn matching_keys(
        &self,
        sql: &str,
        values: &[String],
    ) -> Result<Vec<String>, DbError> {
        let rows = self.matching(sql, values, false).await?;
        Ok(rows.into_iter().map(|(k, _)| k).collect())
    }

    /// Like [`Db::matching_keys`], with the `id` of each row as text (`None` when NULL):
    /// `SELECT assetgc_q.key, CAST(assetgc_q.id AS …) FROM (<sql>) AS assetgc_q WHERE … IN (…)`.
    /// `Err(Query)` also when the query returns no `id` (the caller runs it whole, and rows
    /// without an id protect their keys).
    pub async fn matching_rows(
        &self,
        sql: &str,
        values: &[String],
    ) -> Result<Vec<(String, Option<String>)>, DbError> {
        self.matching(sql, values, true).await
    }

    /// The wrapped `IN (…)` look-up behind [`Db::matching_keys`] and [`Db::matching_rows`].
    async fn matching(
        &self,
        sql: &str,
        values: &[String],
        with_id: bool,
    ) -> Result<Vec<(String, Option<String>)>, DbError> {
        let q_err = |e: sqlx::Error| DbError::Query(one_line(&e.to_string()));
        let mut out = Vec::new();
        for chunk in values.chunks(IN_LIST) {
            macro_rules! run {
                ($pool:expr, $sql:expr, $placeholder:expr, $col:expr, $text:expr) => {{
                    let marks: Vec<String> = (1..=chunk.len()).map($placeholder).collect();
                    let id = if with_id {
                        format!(", CAST(assetgc_q.id AS {})", $text)
                    } else {
                        String::new()
                    };
                    let wrapped = format!(
                        "SELECT assetgc_q.{col}{id} FROM ({sql}) AS assetgc_q WHERE assetgc_q.{col} IN ({})",
                        marks.join(", "),
                        col = $col,
                        sql = $sql,
                    );
                    let mut q = sqlx::query(AssertSqlSafe(wrapped));
                    for v in chunk {
                        q = q.bind(v.as_str());
                    }
                    for row in q.fetch_all($pool).await.map_err(q_err)? {
                        let k: Option<String> = row.try_get(0).map_err(q_err)?;
                        let id: Option<String> = if with_id {
                            row.try_get(1).map_err(q_err)?
                        } else {
                            None
                        };
                        if let Some(k) = k {
                            out.push((k, id));
                        }
                    }
                }};
            }
            match self {
                Db::Sqlite(p, _) => run!(p, sql, |_| "?".to_string(), "key", "TEXT"),
                Db::Postgres(p) => run!(p, sql, |i| format!("${i}"), "key", "TEXT"),
                Db::MySql(p) => run!(
                    p,
                    mysql_key_alias(sql),
                    |_| "?".to_string(),
                    "`key`",
                    "CHAR"
                ),
            }
        }
        Ok(out)
    }

    /// How an expiry rule's `delete` takes a row's id: the type its parameter has, found by
    /// preparing it (PostgreSQL compares no text parameter with an integer, numeric or UUID
    /// column), or on MySQL/MariaDB and SQLite, whose parameters carry no type, from the type of
    /// `select`'s `id` column. `delete` is prepared on every database, so a statement that cannot
    /// run is known before any file goes. Nothing runs. `Ok(Err(why))`: a PostgreSQL parameter
    /// of a type no id is bound as, which would fail only once the row's files are gone.
    pub async fn id_binding(
        &self,
        select: &str,
        delete: &str,
    ) -> Result<Result<IdBinding, String>, DbError> {
        let q = |e: sqlx::Error| DbError::Query(one_line(&e.to_string()));
        match self {
            Db::Postgres(p) => {
                let stmt = p
                    .prepare(AssertSqlSafe(delete.to_string()).into_sql_str())
                    .await
                    .map_err(q)?;
                let name = match stmt.parameters() {
                    Some(sqlx::Either::Left(types)) => types
                        .first()
                        .map(|t| sqlx::TypeInfo::name(t).to_ascii_uppercase()),
                    _ => None,
                };
                let Some(name) = name else {
                    return Ok(Err(
                        "`delete` takes no parameter; compare the id column with $1".into(),
                    ));
                };
                Ok(Ok(match name.as_str() {
                    "INT2" => IdBinding::I16,
                    "INT4" => IdBinding::I32,
                    "INT8" => IdBinding::I64,
                    "NUMERIC" => IdBinding::Decimal,
                    "UUID" => IdBinding::Uuid,
                    "TEXT" | "VARCHAR" | "NAME" => IdBinding::Text,
                    "CHAR" => IdBinding::Bpchar,
                    other => {
                        // The id is read as the column's text output, so a text parameter cast
                        // to the column's type finds the same row.
                        let ty = other.to_ascii_lowercase();
                        return Ok(Err(format!(
                            "`delete`'s parameter $1 is of type {ty}, which assetgc cannot bind an id as (it binds smallint, integer, bigint, numeric, uuid, text, varchar, char, name); cast it from text, e.g. `WHERE id = $1::text::{ty}`, or use an id of a supported type"
                        )));
                    }
                }))
            }
            Db::MySql(p) => {
                prepare_columns(p, delete).await?;
                integer_id(p, &mysql_key_alias(select)).await.map(Ok)
            }
            Db::Sqlite(p, _) => {
                prepare_columns(p, delete).await?;
                integer_id(p, select).await.map(Ok)
            }
        }
    }

    /// Runs `delete` with `id` bound as `binding` says, in a transaction of its own; how many
    /// rows it removed. A statement that removes more than one row is rolled back: it was meant
    /// to remove the one row with that id.
    pub async fn delete_row(
        &self,
        delete: &str,
        id: &str,
        binding: IdBinding,
    ) -> Result<u64, DbError> {
        let q = |e: sqlx::Error| DbError::Query(one_line(&e.to_string()));
        let bad = |what: &str| DbError::Query(format!("id `{id}` is not {what}"));
        macro_rules! run {
            ($pool:expr, $value:expr) => {{
                let mut tx = $pool.begin().await.map_err(q)?;
                let n = sqlx::query(AssertSqlSafe(delete.to_string()))
                    .bind($value)
                    .execute(&mut *tx)
                    .await
                    .map_err(q)?
                    .rows_affected();
                if n > 1 {
                    tx.rollback().await.map_err(q)?;
                    return Err(DbError::Query(format!(
                        "`delete` removed {n} rows for id `{id}` and was rolled back: it must remove only the row with that id"
                    )));
                }
                tx.commit().await.map_err(q)?;
                Ok(n)
            }};
        }
        let int = id.trim().parse::<i64>().ok();
        match self {
            Db::Postgres(p) => match binding {
                IdBinding::I16 => {
                    let v: i16 = id.trim().parse().map_err(|_| bad("a smallint"))?;
                    run!(p, v)
                }
                IdBinding::I32 => {
                    let v: i32 = id.trim().parse().map_err(|_| bad("an integer"))?;
                    run!(p, v)
                }
                IdBinding::I64 => {
                    let v = int.ok_or_else(|| bad("a bigint"))?;
                    run!(p, v)
                }
                IdBinding::Decimal => {
                    let v = decimal(id).ok_or_else(|| bad("a number of at most 28 digits"))?;
                    run!(p, v)
                }
                IdBinding::Uuid => {
                    let v = uuid::Uuid::parse_str(id.trim()).map_err(|_| bad("a UUID"))?;
                    run!(p, v)
                }
                IdBinding::Bpchar => run!(p, id.trim_end().to_string()),
                IdBinding::Text | IdBinding::IntegerWhenNumeric => {
                    run!(p, id.to_string())
                }
            },
            Db::MySql(p) => match (binding, int) {
                (IdBinding::IntegerWhenNumeric, Some(v)) => {
                    run!(p, v)
                }
                _ => run!(p, id.to_string()),
            },
            Db::Sqlite(p, _) => match (binding, int) {
                (IdBinding::IntegerWhenNumeric, Some(v)) => {
                    run!(p, v)
                }
                _ => run!(p, id.to_string()),
            },
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p, _) => p.close().await,
            Db::Postgres(p) => p.close().await,
            Db::MySql(p) => p.close().await,
        }
    }
}

/// How a row's id (read as text) is bound to an expiry rule's `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdBinding {
    I16,
    I32,
    I64,
    /// PostgreSQL `numeric`.
    Decimal,
    Uuid,
    Text,
    /// PostgreSQL `char(n)`: bound as text without the padding its text output carries, which a
    /// comparison with text would not ignore.
    Bpchar,
    /// MySQL/MariaDB and SQLite with an integer `id` column: an integer when the id reads as
    /// one, else text.
    IntegerWhenNumeric,
}

impl IdBinding {
    /// `Err(why)` when `id` cannot be bound this way: its row's `delete` could not run, so its
    /// files must not go.
    pub fn check(self, id: &str) -> Result<(), String> {
        let t = id.trim();
        let fits = match self {
            IdBinding::I16 => t.parse::<i16>().is_ok(),
            IdBinding::I32 => t.parse::<i32>().is_ok(),
            IdBinding::I64 => t.parse::<i64>().is_ok(),
            IdBinding::Decimal => decimal(id).is_some(),
            IdBinding::Uuid => uuid::Uuid::parse_str(t).is_ok(),
            IdBinding::Text | IdBinding::Bpchar | IdBinding::IntegerWhenNumeric => true,
        };
        if fits {
            Ok(())
        } else {
            Err(format!(
                "its id `{id}` does not fit `delete`'s {} parameter",
                self.sql_type()
            ))
        }
    }

    fn sql_type(self) -> &'static str {
        match self {
            IdBinding::I16 => "smallint",
            IdBinding::I32 | IdBinding::IntegerWhenNumeric => "integer",
            IdBinding::I64 => "bigint",
            IdBinding::Decimal => "numeric",
            IdBinding::Uuid => "uuid",
            IdBinding::Text => "text",
            IdBinding::Bpchar => "char",
        }
    }
}

/// A PostgreSQL `numeric` id read as text; `None` for `NaN` and for a value a `Decimal` (a 96-bit
/// mantissa, 28 or 29 digits) cannot hold exactly.
fn decimal(id: &str) -> Option<sqlx::types::Decimal> {
    sqlx::types::Decimal::from_str_exact(id.trim()).ok()
}

/// [`IdBinding::IntegerWhenNumeric`] when `select`'s `id` column is of an integer type.
async fn integer_id<DB>(pool: &sqlx::Pool<DB>, select: &str) -> Result<IdBinding, DbError>
where
    DB: Database,
    for<'e> &'e sqlx::Pool<DB>: Executor<'e, Database = DB>,
{
    use sqlx::TypeInfo as _;
    let stmt = pool
        .prepare(AssertSqlSafe(select.to_string()).into_sql_str())
        .await
        .map_err(|e| DbError::Query(one_line(&e.to_string())))?;
    let integer = stmt
        .columns()
        .iter()
        .find(|c| c.name().eq_ignore_ascii_case("id"))
        .is_some_and(|c| c.type_info().name().to_ascii_uppercase().contains("INT"));
    Ok(if integer {
        IdBinding::IntegerWhenNumeric
    } else {
        IdBinding::Text
    })
}

/// `sql` with `at` bound as its first parameter's own type (found by preparing it).
async fn pg_time_query<'q>(
    pool: &sqlx::PgPool,
    sql: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, DbError> {
    use sqlx::TypeInfo as _;
    let stmt = pool
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(|e| DbError::Query(one_line(&e.to_string())))?;
    let kind = stmt
        .parameters()
        .and_then(|p| {
            p.left()
                .and_then(|t| t.first().map(|t| t.name().to_string()))
        })
        .unwrap_or_default();
    let query = sqlx::query(AssertSqlSafe(sql.to_string()));
    Ok(match kind.as_str() {
        "TIMESTAMP" => query.bind(at.naive_utc()),
        "DATE" => query.bind(at.date_naive()),
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" => query.bind(crate::time::rfc3339(at)),
        _ => query.bind(at),
    })
}

/// One connection attempt before a pool is built: a pool retries a refused connection until its
/// acquire timeout, and a server that is down should be reported at once.
async fn first_contact<C: sqlx::Connection>(opts: &C::Options) -> Result<(), sqlx::Error> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, C::connect_with(opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    conn.close().await
}

fn missing_key_column(wanted: &[String], cols: &[String]) -> DbError {
    DbError::Query(format!(
        "the query returns no `{}` column (it returns: {}); alias the column, e.g. `SELECT image AS key …`",
        wanted.first().map_or("key", String::as_str),
        cols.join(", ")
    ))
}

/// Reads rows in place on a blocking thread: no per-row hand-off, values copied into reused buffers.
fn sqlite_feed<S: RowSink>(
    file: &SqliteFile,
    sql: &str,
    wanted: &[String],
    sink: &mut S,
    tx: &mpsc::Sender<S::Batch>,
) -> Result<(), DbError> {
    use rusqlite::OpenFlags;
    use rusqlite::types::ValueRef;
    use std::fmt::Write as _;
    let q = |e: rusqlite::Error| DbError::Query(one_line(&e.to_string()));
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    flags |= if file.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = rusqlite::Connection::open_with_flags(&file.path, flags).map_err(|e| {
        DbError::Unreachable(format!(
            "cannot open {}: {}",
            file.path.display(),
            one_line(&e.to_string())
        ))
    })?;
    conn.busy_timeout(CONNECT_TIMEOUT).map_err(q)?;
    let mut stmt = conn.prepare(sql).map_err(q)?;
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let index: Vec<Option<usize>> = wanted
        .iter()
        .map(|w| names.iter().position(|n| n == w))
        .collect();
    if index.first().copied().flatten().is_none() {
        return Err(missing_key_column(wanted, &names));
    }
    let mut bufs: Vec<String> = vec![String::new(); wanted.len()];
    let mut present = vec![false; wanted.len()];
    let mut rows = stmt.query([]).map_err(q)?;
    while let Some(row) = rows.next().map_err(q)? {
        for (j, i) in index.iter().enumerate() {
            present[j] = false;
            let Some(i) = *i else { continue };
            let buf = &mut bufs[j];
            buf.clear();
            present[j] = match row.get_ref(i).map_err(q)? {
                ValueRef::Null => false,
                ValueRef::Integer(n) => write!(buf, "{n}").is_ok(),
                ValueRef::Real(f) => write!(buf, "{f}").is_ok(),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    buf.push_str(&String::from_utf8_lossy(t));
                    true
                }
            };
        }
        let cols: Vec<Option<&str>> = bufs
            .iter()
            .zip(&present)
            .map(|(b, &p)| p.then_some(b.as_str()))
            .collect();
        if let Some(batch) = sink.row(&cols)
            && tx.blocking_send(batch).is_err()
        {
            return Ok(());
        }
    }
    if let Some(batch) = sink.flush() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// `KEY` is a reserved word in MySQL/MariaDB, so the documented `… AS key` is a syntax error
/// there; an unquoted `AS key` alias is quoted as `` AS `key` `` (outside string literals).
fn mysql_key_alias(sql: &str) -> String {
    static ALIAS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b(AS\s+)key\b").expect("a valid pattern")
    });
    let mut out = String::with_capacity(sql.len() + 8);
    // Split on single quotes: even pieces are outside literals ('' escapes keep the parity).
    for (i, piece) in sql.split('\'').enumerate() {
        if i > 0 {
            out.push('\'');
        }
        if i % 2 == 0 {
            out.push_str(&ALIAS.replace_all(piece, "${1}`key`"));
        } else {
            out.push_str(piece);
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The column names of a statement, from preparing it (nothing runs).
async fn prepare_columns<DB>(pool: &sqlx::Pool<DB>, sql: &str) -> Result<Vec<String>, DbError>
where
    DB: Database,
    for<'e> &'e sqlx::Pool<DB>: Executor<'e, Database = DB>,
{
    let stmt = pool
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(|e| DbError::Query(one_line(&e.to_string())))?;
    Ok(stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

/// Runs a statement up to its first row.
async fn run_first<DB>(pool: &sqlx::Pool<DB>, sql: String) -> Result<(), DbError>
where
    DB: Database,
    for<'e> &'e sqlx::Pool<DB>: Executor<'e, Database = DB>,
{
    sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_optional(pool)
        .await
        .map_err(|e| DbError::Query(one_line(&e.to_string())))?;
    Ok(())
}

fn text_rows<'a, DB>(
    pool: &'a sqlx::Pool<DB>,
    sql: String,
    wanted: Vec<String>,
) -> BoxStream<'a, Result<Vec<Option<String>>, DbError>>
where
    DB: Database,
    &'a sqlx::Pool<DB>: Executor<'a, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB>,
{
    let mut index: Option<Vec<Option<usize>>> = None;
    sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch(pool)
        .map(move |row| {
            let row = row.map_err(|e| DbError::Query(one_line(&e.to_string())))?;
            let idx = match &index {
                Some(i) => i,
                None => {
                    let cols: Vec<String> = row
                        .columns()
                        .iter()
                        .map(|c| c.name().to_ascii_lowercase())
                        .collect();
                    let found: Vec<Option<usize>> = wanted
                        .iter()
                        .map(|w| cols.iter().position(|c| c == w))
                        .collect();
                    if found.first().copied().flatten().is_none() {
                        return Err(missing_key_column(&wanted, &cols));
                    }
                    index.insert(found)
                }
            };
            idx.iter()
                .map(|i| match i {
                    None => Ok(None),
                    Some(i) => row
                        .try_get_unchecked::<Option<String>, _>(*i)
                        .map_err(|e| DbError::Query(one_line(&e.to_string()))),
                })
                .collect()
        })
        .boxed()
}

pub use crate::time::parse_time;

#[cfg(test)]
mod tests {
    use super::mysql_key_alias;

    #[test]
    fn mysql_key_alias_is_quoted_outside_literals() {
        assert_eq!(
            mysql_key_alias("SELECT id, img AS key, 'x AS key' AS t, b as KEY_2 FROM p"),
            "SELECT id, img AS `key`, 'x AS key' AS t, b as KEY_2 FROM p"
        );
        assert_eq!(mysql_key_alias("SELECT a AS `key`"), "SELECT a AS `key`");
        assert_eq!(
            mysql_key_alias("SELECT a as\n key FROM t"),
            "SELECT a as\n `key` FROM t"
        );
    }
}
