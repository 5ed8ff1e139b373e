//! The state database on PostgreSQL (`[state] url = "postgres://…"`, schema `assetgc`, created
//! when missing), for several instances sharing one queue and one history. Claims take
//! `FOR UPDATE SKIP LOCKED` (see [`super::Dialect`]), so two workers on two machines never take
//! the same entry.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{
    AssertSqlSafe, ConnectOptions as _, Connection as _, PgPool, Postgres, Row as _, TypeInfo as _,
    ValueRef as _,
};

use super::{Arg, Backend, Dialect, Mode, Row, Tx, Value};
use crate::error::{Error, Result};

/// The advisory lock key held while the schema is created and migrated ("assetgc" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_7373_6574_6763;

pub(crate) struct PgBackend {
    pool: PgPool,
    /// The URL without its password, for messages.
    label: String,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn err(e: &sqlx::Error) -> Error {
    Error::State(one_line(&e.to_string()))
}

impl PgBackend {
    /// Connects, creates the schema `assetgc` when missing and migrates it.
    pub async fn open(url: &str) -> Result<PgBackend> {
        let label = crate::config::redact_url(url);
        let unreachable = |e: &sqlx::Error| {
            Error::Unreachable(format!(
                "the state database {label} is unreachable: {}",
                one_line(&e.to_string())
            ))
        };
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::State(format!("[state] url {label}: {e}")))?
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
        let mut first = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect_with(&opts),
        )
        .await
        .map_err(|_| unreachable(&sqlx::Error::PoolTimedOut))?
        .map_err(|e| unreachable(&e))?;
        // Instances starting together would race `CREATE SCHEMA` (a unique violation) and the
        // migrations: the first holds this lock until they are done, the others wait for it.
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut first)
            .await
            .map_err(|e| Error::State(format!("cannot lock the migrations: {}", err(&e))))?;
        let migrated = async {
            sqlx::query("CREATE SCHEMA IF NOT EXISTS assetgc")
                .execute(&mut first)
                .await
                .map_err(|e| {
                    Error::State(format!("cannot create the schema assetgc: {}", err(&e)))
                })?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.options([("search_path", "assetgc")]))
                .await
                .map_err(|e| unreachable(&e))?;
            if let Err(e) = sqlx::migrate!("migrations/postgres").run(&pool).await {
                pool.close().await;
                return Err(Error::State(format!("cannot migrate {label}: {e}")));
            }
            Ok(pool)
        }
        .await;
        // Closing the session releases its advisory lock.
        let _ = first.close().await;
        Ok(PgBackend {
            pool: migrated?,
            label,
        })
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn begin(&self, _mode: Mode) -> Result<Box<dyn Tx>> {
        let tx = self.pool.begin().await.map_err(|e| {
            Error::State(format!(
                "cannot begin a transaction on {}: {}",
                self.label,
                err(&e)
            ))
        })?;
        Ok(Box::new(PgTx { tx }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
}

fn statement<'q>(
    sql: &str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql.to_string()));
    for a in args {
        q = match *a {
            Arg::Int(n) => q.bind(n),
            Arg::Text(s) => q.bind(s),
        };
    }
    q
}

/// A column by its type: the state's tables hold integers and text; sums come as NUMERIC.
fn value(row: &PgRow, i: usize) -> std::result::Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let name = raw.type_info().name().to_string();
    Ok(match name.as_str() {
        "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
        "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
        "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i)?)),
        "BOOL" => Value::Int(i64::from(row.try_get::<bool, _>(i)?)),
        "NUMERIC" => {
            let d: rust_decimal::Decimal = row.try_get(i)?;
            Value::Int(rust_decimal::prelude::ToPrimitive::to_i64(&d.trunc()).unwrap_or(i64::MAX))
        }
        _ => Value::Text(row.try_get::<String, _>(i)?),
    })
}

#[async_trait]
impl Tx for PgTx {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        statement(sql, args)
            .execute(&mut *self.tx)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| err(&e))
    }

    async fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        let rows = statement(sql, args)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| err(&e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| value(r, i))
                    .collect::<std::result::Result<_, _>>()
                    .map(Row)
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| err(&e))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(|e| err(&e))
    }
}
