//! Reference queries, streamed from SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! sqlx's `Any` driver breaks on booleans and timestamps, so each database has its own typed pool
//! behind `Db`. Queries are sent unprepared (`raw_sql`): PostgreSQL's simple protocol and MySQL's
//! text protocol return every value as text, and SQLite converts any value to text on request, so
//! one decoder reads integer or UUID ids and every kind of timestamp alike.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Column, ColumnIndex, Database, Decode, Executor, Row};

use crate::config::{DatabaseConfig, DbKind};

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Query(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
                    .create_if_missing(false);
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(opts)
                        .await
                        .map_err(unreachable)?,
                )
            }
            DbKind::Postgres => {
                let opts = PgConnectOptions::from_str(cfg.url.expose()).map_err(unreachable)?;
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
                let opts = MySqlConnectOptions::from_str(cfg.url.expose()).map_err(unreachable)?;
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

    /// Streams a query's rows as the text of the `wanted` columns, found by name (case-insensitive).
    /// The first wanted column is required; the others are `None` when the query lacks them.
    pub fn rows<'a>(
        &'a self,
        sql: &str,
        wanted: &[&str],
    ) -> BoxStream<'a, Result<Vec<Option<String>>, DbError>> {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_ascii_lowercase()).collect();
        match self {
            Db::Sqlite(p) => text_rows(p, sql.to_string(), wanted),
            Db::Postgres(p) => text_rows(p, sql.to_string(), wanted),
            Db::MySql(p) => text_rows(p, sql.to_string(), wanted),
        }
    }

    /// The column names a query returns, from its first row (none when it returns no row).
    pub async fn probe(&self, sql: &str) -> Result<Option<Vec<String>>, DbError> {
        let wrapped = format!("SELECT * FROM ({sql}) AS assetgc_q LIMIT 1");
        match self {
            Db::Sqlite(p) => first_columns(p, wrapped).await,
            Db::Postgres(p) => first_columns(p, wrapped).await,
            Db::MySql(p) => first_columns(p, wrapped).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
            Db::MySql(p) => p.close().await,
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn first_columns<DB>(
    pool: &sqlx::Pool<DB>,
    sql: String,
) -> Result<Option<Vec<String>>, DbError>
where
    DB: Database,
    for<'e> &'e sqlx::Pool<DB>: Executor<'e, Database = DB>,
{
    let row = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_optional(pool)
        .await
        .map_err(|e| DbError::Query(one_line(&e.to_string())))?;
    Ok(row.map(|r| r.columns().iter().map(|c| c.name().to_string()).collect()))
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
                        return Err(DbError::Query(format!(
                            "the query returns no `{}` column (it returns: {}); alias the column, e.g. `SELECT image AS key …`",
                            wanted.first().map_or("key", String::as_str),
                            cols.join(", ")
                        )));
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

/// Reads a time as the databases write it: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f][+zz[:zz]]`, or a
/// bare date. Times without a zone are UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    // Unix seconds, as some apps keep them.
    s.parse::<i64>()
        .ok()
        .and_then(|n| DateTime::from_timestamp(n, 0))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_in_every_database_format() {
        let want = "2025-09-15T14:30:00+00:00";
        for s in [
            "2025-09-15T14:30:00Z",
            "2025-09-15 14:30:00",
            "2025-09-15 14:30:00.000",
            "2025-09-15 14:30:00+00",
            "2025-09-15 16:30:00+02",
            "2025-09-15 16:30:00+02:00",
            "2025-09-15T14:30:00",
            "1757946600",
        ] {
            assert_eq!(
                parse_time(s).map(|t| t.to_rfc3339()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        assert!(parse_time("2025-09-15").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
