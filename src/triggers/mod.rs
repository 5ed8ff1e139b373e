//! `assetgc triggers` (SPEC §7): database triggers that write a tracked column's old value into
//! the outbox `assetgc_outbox` when it changes or its row is deleted, and the move of due outbox
//! rows into the deletion queue, where the worker's re-check (invariant 1) still decides.
//!
//! A trigger writes inside the app's own transaction, so a rolled-back change leaves no outbox
//! row, and a committed one cannot lose its row. `delay` is measured on the database's clock.

pub mod sql;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Row as _};

use crate::app::App;
use crate::config::{Config, DatabaseConfig, DbKind, ReferenceConfig, StoreLocation};
use crate::domain::ObjectId;
use crate::domain::queue::{NewEntry, Reason};
use crate::error::{Error, Exit, Result};
use crate::refs::{Db, DbError};
use crate::state::QueueStore as _;
use sql::Names;

/// Outbox rows read (and queued) at a time.
const BATCH: usize = 1000;
/// Ids deleted by one statement: below every database's parameter limit.
const DELETE_CHUNK: usize = 500;
/// The wait of rows an app wrote itself for a reference without `track`: track's own default.
const UNTRACKED_DELAY: Duration = Duration::from_mins(10);
/// Who queued an entry, in the queue and the audit log.
pub const ACTOR: &str = "trigger";

/// What one command did to one database.
#[derive(Debug, Default)]
pub struct DbReport {
    pub database: String,
    /// What was done, one line each.
    pub done: Vec<String>,
    pub warnings: Vec<String>,
    /// Why the work on this database stopped (it is then partly done at most).
    pub error: Option<String>,
    pub unreachable: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub databases: Vec<DbReport>,
}

impl Report {
    /// SPEC §3: 1 when no database could be reached, 4 when one failed or was out of reach.
    pub fn exit(&self) -> Exit {
        if !self.databases.is_empty() && self.databases.iter().all(|d| d.unreachable) {
            Exit::Unreachable
        } else if self.databases.iter().any(|d| d.error.is_some()) {
            Exit::Incomplete
        } else {
            Exit::Ok
        }
    }
}

/// How one tracked reference stands (`status`).
#[derive(Debug)]
pub struct RefStatus {
    pub reference: String,
    pub database: String,
    /// Both triggers are there, on the tracked table, enabled.
    pub installed: bool,
    /// What is there or missing, and on PostgreSQL the function's security settings.
    pub detail: String,
    /// PostgreSQL: the function is SECURITY DEFINER with a pinned search_path.
    pub definer_ok: Option<bool>,
    pub pending: u64,
    pub due: u64,
}

#[derive(Debug, Default)]
pub struct Status {
    pub references: Vec<RefStatus>,
    pub report: Report,
}

/// The references and databases a command works on.
struct Scope {
    /// Tracked references (indices).
    refs: Vec<usize>,
    /// Databases (indices), in config order.
    dbs: Vec<usize>,
    /// The whole config (no `--reference`): the outbox itself is created or removed.
    whole: bool,
}

fn scope(cfg: &Config, only: Option<&str>) -> Result<Scope> {
    if let Some(name) = only {
        let Some(i) = cfg.references.iter().position(|r| r.name == name) else {
            let names: Vec<&str> = cfg.references.iter().map(|r| r.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--reference `{name}`: the config has no such reference (it has: {}); name one of its [[references]]",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if cfg.references[i].track.is_none() {
            return Err(Error::Usage(format!(
                "--reference `{name}` has no `track`, so it has no triggers; add track = {{ table = \"…\", column = \"…\", pk = \"id\" }} to that reference"
            )));
        }
        return Ok(Scope {
            refs: vec![i],
            dbs: vec![cfg.references[i].database],
            whole: false,
        });
    }
    let refs: Vec<usize> = (0..cfg.references.len())
        .filter(|&i| cfg.references[i].track.is_some())
        .collect();
    let dbs: BTreeSet<usize> = cfg.references.iter().map(|r| r.database).collect();
    Ok(Scope {
        refs,
        dbs: dbs.into_iter().collect(),
        whole: true,
    })
}

fn tracked<'a>(
    cfg: &'a Config,
    scope: &Scope,
    db: usize,
) -> Vec<(&'a ReferenceConfig, &'a crate::config::Track)> {
    scope
        .refs
        .iter()
        .map(|&i| &cfg.references[i])
        .filter(|r| r.database == db)
        .filter_map(|r| r.track.as_ref().map(|t| (r, t)))
        .collect()
}

fn delay_of(r: &ReferenceConfig) -> Duration {
    r.track.as_ref().map_or(UNTRACKED_DELAY, |t| t.delay)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A bind parameter.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

enum Conn {
    Pg(PoolConnection<sqlx::Postgres>),
    My(PoolConnection<sqlx::MySql>),
    Lite(PoolConnection<sqlx::Sqlite>),
}

/// One connection to a reference database, with the schema our objects live in.
struct Session {
    db: Db,
    conn: Conn,
    kind: DbKind,
    home: String,
    name: String,
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Session {
    async fn open(cfg: &DatabaseConfig) -> std::result::Result<Session, DbError> {
        let db = Db::connect(cfg, 1).await?;
        let acquired = match &db {
            Db::Sqlite(p, _) => p.acquire().await.map(Conn::Lite),
            Db::Postgres(p) => p.acquire().await.map(Conn::Pg),
            Db::MySql(p) => p.acquire().await.map(Conn::My),
        };
        let conn = match acquired {
            Ok(c) => c,
            Err(e) => {
                db.close().await;
                return Err(DbError::Unreachable(format!(
                    "database {}: {}",
                    cfg.name,
                    one_line(&e)
                )));
            }
        };
        let mut s = Session {
            db,
            conn,
            kind: cfg.kind,
            home: String::new(),
            name: cfg.name.clone(),
        };
        match s.value(sql::home_query(cfg.kind), &[]).await {
            Ok(Some(home)) => s.home = home,
            Ok(None) => {
                s.close().await;
                return Err(DbError::Query(format!(
                    "database {}: the connection has no current schema (name a database in its URL)",
                    cfg.name
                )));
            }
            Err(e) => {
                s.close().await;
                return Err(DbError::Query(e));
            }
        }
        Ok(s)
    }

    async fn close(self) {
        drop(self.conn);
        self.db.close().await;
    }

    async fn exec(&mut self, text: &str) -> std::result::Result<u64, String> {
        let q = sqlx::raw_sql(AssertSqlSafe(text.to_string()));
        let r = match &mut self.conn {
            Conn::Pg(c) => q.execute(&mut **c).await.map(|r| r.rows_affected()),
            Conn::My(c) => q.execute(&mut **c).await.map(|r| r.rows_affected()),
            Conn::Lite(c) => q.execute(&mut **c).await.map(|r| r.rows_affected()),
        };
        r.map_err(|e| one_line(&e))
    }

    /// Rows of text columns (every query here casts its columns to text).
    async fn rows(
        &mut self,
        text: &str,
        args: &[Arg],
    ) -> std::result::Result<Vec<Vec<Option<String>>>, String> {
        macro_rules! fetch {
            ($c:expr) => {{
                let mut q = sqlx::query(AssertSqlSafe(text.to_string()));
                for a in args {
                    q = match a {
                        Arg::Text(s) => q.bind(s.clone()),
                        Arg::Int(i) => q.bind(*i),
                    };
                }
                let rows = q.fetch_all(&mut **$c).await.map_err(|e| one_line(&e))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i).map_err(|e| one_line(&e)))
                            .collect::<std::result::Result<Vec<_>, _>>()
                    })
                    .collect()
            }};
        }
        match &mut self.conn {
            Conn::Pg(c) => fetch!(c),
            Conn::My(c) => fetch!(c),
            Conn::Lite(c) => fetch!(c),
        }
    }

    async fn value(
        &mut self,
        text: &str,
        args: &[Arg],
    ) -> std::result::Result<Option<String>, String> {
        Ok(self
            .rows(text, args)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    async fn count(&mut self, text: &str, args: &[Arg]) -> std::result::Result<u64, String> {
        Ok(self
            .value(text, args)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    async fn has_outbox(&mut self) -> std::result::Result<bool, String> {
        Ok(self
            .count(&sql::outbox_exists(self.kind, &self.home), &[])
            .await?
            > 0)
    }

    /// Our triggers: `(name, table, extra)` (MySQL: the action statement; PostgreSQL: whether
    /// enabled). On MySQL/MariaDB the catalogue shows the triggers of every database the role
    /// sees: only those writing into this database's outbox are this install's (another config's
    /// install in another database is not ours to replace or remove).
    async fn triggers(&mut self) -> std::result::Result<Vec<Installed>, String> {
        let rows = self.rows(&sql::list_triggers(self.kind), &[]).await?;
        let writes_ours = format!("INSERT INTO {} ", sql::outbox(self.kind, &self.home));
        let kind = self.kind;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter().map(Option::unwrap_or_default);
                Installed {
                    name: it.next().unwrap_or_default(),
                    table: it.next().unwrap_or_default(),
                    extra: it.next().unwrap_or_default(),
                    schema: it.next().unwrap_or_default(),
                }
            })
            .filter(|i| kind != DbKind::MySql || i.extra.starts_with(&writes_ours))
            .collect())
    }

    /// Statements that form one change: in a transaction where the database has transactional
    /// DDL (PostgreSQL, SQLite); MySQL/MariaDB commits each DDL statement by itself.
    async fn atomically(&mut self, stmts: &[String]) -> std::result::Result<(), String> {
        let transactional = self.kind != DbKind::MySql;
        if transactional {
            self.exec(self.begin()).await?;
        }
        for s in stmts {
            if let Err(e) = self.exec(s).await {
                if transactional {
                    let _ = self.exec("ROLLBACK").await;
                }
                return Err(e);
            }
        }
        if transactional {
            self.exec("COMMIT").await?;
        }
        Ok(())
    }

    /// SQLite takes the write lock at once, so no writer slips in between our reads and writes.
    fn begin(&self) -> &'static str {
        if self.kind == DbKind::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        }
    }

    /// The tracked table as the catalogue names it, to compare with [`Installed::table`].
    async fn table_id(&mut self, table: &str) -> std::result::Result<String, String> {
        Ok(match self.kind {
            DbKind::Postgres => self
                .value(
                    "SELECT to_regclass($1)::text",
                    &[Arg::Text(sql::table(DbKind::Postgres, table))],
                )
                .await?
                .unwrap_or_default(),
            DbKind::MySql => match sql::split_table(table) {
                (Some(s), t) => format!("{s}.{t}"),
                (None, t) => format!("{}.{t}", self.home),
            },
            DbKind::Sqlite => sql::split_table(table).1.to_string(),
        })
    }
}

#[derive(Debug, Clone)]
struct Installed {
    name: String,
    table: String,
    extra: String,
    schema: String,
}

fn same_table(kind: DbKind, a: &str, b: &str) -> bool {
    match kind {
        DbKind::Postgres => a == b,
        DbKind::MySql | DbKind::Sqlite => a.eq_ignore_ascii_case(b),
    }
}

async fn open_db(cfg: &DatabaseConfig, report: &mut DbReport) -> Option<Session> {
    match Session::open(cfg).await {
        Ok(s) => Some(s),
        Err(e) => {
            report.unreachable = matches!(e, DbError::Unreachable(_));
            report.error = Some(e.to_string());
            None
        }
    }
}

/// `triggers install`: the outbox in every database in scope, and each tracked reference's
/// triggers. Installing again replaces them with the same definition (PostgreSQL and SQLite in
/// one transaction; MySQL/MariaDB leaves an unchanged trigger in place).
pub async fn install(cfg: &Config, only: Option<&str>) -> Result<Report> {
    let scope = scope(cfg, only)?;
    if scope.refs.is_empty() {
        return Err(Error::Usage(
            "no reference has `track`, so there is nothing to install; add track = { table = \"…\", column = \"…\", pk = \"id\" } to a [[references]] entry".into(),
        ));
    }
    let mut report = Report::default();
    for &d in &scope.dbs {
        let dc = &cfg.databases[d];
        let mut r = DbReport {
            database: dc.name.clone(),
            ..DbReport::default()
        };
        if let Some(mut s) = open_db(dc, &mut r).await {
            if let Err(e) = install_db(&mut s, &tracked(cfg, &scope, d), &mut r).await {
                r.error = Some(format!("database {}: {e}", dc.name));
            }
            s.close().await;
        }
        report.databases.push(r);
    }
    Ok(report)
}

async fn install_db(
    s: &mut Session,
    refs: &[(&ReferenceConfig, &crate::config::Track)],
    report: &mut DbReport,
) -> std::result::Result<(), String> {
    let kind = s.kind;
    validate(s, refs).await?;
    let before = s.triggers().await?;
    let had_outbox = s.has_outbox().await?;
    let mut stmts = vec![sql::create_outbox(kind, &s.home)];
    let mut lines = Vec::new();
    for (r, t) in refs {
        lines.push(plan_reference(s, r, t, &before, &mut stmts).await?);
    }
    s.atomically(&stmts).await?;
    report.done.push(format!(
        "database {} ({}): outbox {} {}",
        s.name,
        kind.name(),
        sql::outbox(kind, &s.home).replace(['"', '`'], ""),
        if had_outbox { "present" } else { "created" }
    ));
    report.done.extend(lines);
    Ok(())
}

/// Every tracked table and column exists.
async fn validate(
    s: &mut Session,
    refs: &[(&ReferenceConfig, &crate::config::Track)],
) -> std::result::Result<(), String> {
    let kind = s.kind;
    for (r, t) in refs {
        let probe = sql::probe_columns(kind, t);
        let found = s.rows(&probe, &[]).await.map_err(|e| {
            format!(
                "reference {}: table `{}` with columns `{}` and `{}` cannot be read ({e}); fix track",
                r.name, t.table, t.pk, t.column
            )
        })?;
        if kind == DbKind::Sqlite {
            if sql::split_table(&t.table).0.is_some_and(|s| s != "main") {
                return Err(format!(
                    "reference {}: on SQLite, track.table names a table of the main database (`{}` names another)",
                    r.name, t.table
                ));
            }
            let n = found
                .first()
                .and_then(|row| row.first().cloned().flatten())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let want = if t.pk.eq_ignore_ascii_case(&t.column) {
                1
            } else {
                2
            };
            if n < want {
                return Err(format!(
                    "reference {}: table `{}` has no column `{}` or `{}`; fix track",
                    r.name, t.table, t.pk, t.column
                ));
            }
        }
    }
    Ok(())
}

/// The statements that install one reference's triggers; the line that says so.
async fn plan_reference(
    s: &mut Session,
    r: &ReferenceConfig,
    t: &crate::config::Track,
    before: &[Installed],
    stmts: &mut Vec<String>,
) -> std::result::Result<String, String> {
    let kind = s.kind;
    let n = Names::of(&r.name);
    let table = s.table_id(&t.table).await?;
    // The reference's triggers on a table it no longer tracks stop with it.
    for old in before.iter().filter(|i| {
        (i.name == n.update || i.name == n.delete) && !same_table(kind, &i.table, &table)
    }) {
        stmts.push(drop_trigger(kind, old));
    }
    let there = before
        .iter()
        .filter(|i| {
            (i.name == n.update || i.name == n.delete) && same_table(kind, &i.table, &table)
        })
        .count();
    let mut replaced = 0;
    if kind == DbKind::MySql {
        let (update, delete) = sql::mysql_bodies(&r.name, t, &s.home);
        let create = sql::create_triggers(kind, &s.home, &r.name, t);
        for ((name, body), create) in [(&n.update, update), (&n.delete, delete)]
            .into_iter()
            .zip(create)
        {
            let same = before
                .iter()
                .any(|i| &i.name == name && same_table(kind, &i.table, &table) && i.extra == body);
            if !same {
                stmts.push(format!(
                    "DROP TRIGGER IF EXISTS {}",
                    sql::mysql_trigger(t, name)
                ));
                stmts.push(create);
                replaced += 1;
            }
        }
    } else {
        stmts.extend(sql::create_triggers(kind, &s.home, &r.name, t));
        replaced = 2;
    }
    Ok(match (there, replaced) {
        (2, 0) => format!(
            "reference {}: already installed on {} ({}, {}); left as it was",
            r.name, t.table, n.update, n.delete
        ),
        (2, _) if kind == DbKind::MySql => format!(
            "reference {}: already installed on {} ({}, {}); a changed trigger was replaced",
            r.name, t.table, n.update, n.delete
        ),
        (2, _) => format!(
            "reference {}: already installed on {} ({}, {}); replaced by the same definition in one transaction",
            r.name, t.table, n.update, n.delete
        ),
        _ => format!(
            "reference {}: installed on {} ({} on UPDATE, {} on DELETE of {}; delay {})",
            r.name,
            t.table,
            n.update,
            n.delete,
            t.column,
            humantime::format_duration(t.delay)
        ),
    })
}

fn drop_trigger(kind: DbKind, t: &Installed) -> String {
    match kind {
        // regclass text is already quoted as needed.
        DbKind::Postgres => format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            sql::ident(kind, &t.name),
            t.table
        ),
        DbKind::MySql => format!(
            "DROP TRIGGER IF EXISTS {}.{}",
            sql::ident(kind, &t.schema),
            sql::ident(kind, &t.name)
        ),
        DbKind::Sqlite => format!("DROP TRIGGER IF EXISTS {}", sql::ident(kind, &t.name)),
    }
}

/// `triggers status`.
pub async fn status(cfg: &Config, only: Option<&str>) -> Result<Status> {
    let scope = scope(cfg, only)?;
    let mut out = Status::default();
    for &d in &scope.dbs {
        let dc = &cfg.databases[d];
        let mut r = DbReport {
            database: dc.name.clone(),
            ..DbReport::default()
        };
        if let Some(mut s) = open_db(dc, &mut r).await {
            match status_db(cfg, &mut s, &tracked(cfg, &scope, d), scope.whole, &mut r).await {
                Ok(mut refs) => out.references.append(&mut refs),
                Err(e) => r.error = Some(format!("database {}: {e}", dc.name)),
            }
            s.close().await;
        }
        out.report.databases.push(r);
    }
    Ok(out)
}

async fn status_db(
    cfg: &Config,
    s: &mut Session,
    refs: &[(&ReferenceConfig, &crate::config::Track)],
    whole: bool,
    report: &mut DbReport,
) -> std::result::Result<Vec<RefStatus>, String> {
    let kind = s.kind;
    let has_outbox = s.has_outbox().await?;
    let triggers = s.triggers().await?;
    let functions = if kind == DbKind::Postgres {
        s.rows(&sql::pg_list_functions(), &[]).await?
    } else {
        Vec::new()
    };
    report.done.push(format!(
        "database {} ({}): outbox {}",
        s.name,
        kind.name(),
        if has_outbox {
            sql::outbox(kind, &s.home).replace(['"', '`'], "")
        } else {
            "not installed".into()
        }
    ));
    let mut out = Vec::new();
    let mut known = BTreeSet::new();
    for (r, t) in refs {
        let n = Names::of(&r.name);
        known.extend([n.update.clone(), n.delete.clone()]);
        out.push(ref_status(s, r, t, &triggers, &functions, has_outbox).await?);
    }
    if whole {
        for i in triggers.iter().filter(|i| !known.contains(&i.name)) {
            report.warnings.push(format!(
                "database {}: trigger {} on {} belongs to no tracked reference of the config; `assetgc triggers uninstall` removes it",
                s.name, i.name, i.table
            ));
        }
        if has_outbox {
            for row in s.rows(&sql::rows_by_reference(kind, &s.home), &[]).await? {
                let name = row.first().cloned().flatten().unwrap_or_default();
                let n = row.get(1).cloned().flatten().unwrap_or_default();
                if !cfg.references.iter().any(|r| r.name == name) {
                    report.warnings.push(format!(
                        "database {}: the outbox holds {n} row(s) for reference `{name}`, which the config does not have; they stay until it does",
                        s.name
                    ));
                }
            }
        }
    }
    Ok(out)
}

async fn ref_status(
    s: &mut Session,
    r: &ReferenceConfig,
    t: &crate::config::Track,
    triggers: &[Installed],
    functions: &[Vec<Option<String>>],
    has_outbox: bool,
) -> std::result::Result<RefStatus, String> {
    let kind = s.kind;
    let names = Names::of(&r.name);
    let table = s.table_id(&t.table).await?;
    let mut missing = Vec::new();
    for name in [&names.update, &names.delete] {
        match triggers.iter().find(|i| &i.name == name) {
            Some(i) if !same_table(kind, &i.table, &table) => {
                missing.push(format!("{name} is on {}, not {}", i.table, t.table));
            }
            Some(i) if kind == DbKind::Postgres && i.extra == "D" => {
                missing.push(format!("{name} is disabled"));
            }
            Some(_) => {}
            None => missing.push(format!("{name} is missing")),
        }
    }
    let mut definer_ok = None;
    let mut detail = Vec::new();
    if kind == DbKind::Postgres {
        match functions
            .iter()
            .find(|f| f.get(1).cloned().flatten().as_deref() == Some(names.base.as_str()))
        {
            Some(f) => {
                let secdef = f.get(2).cloned().flatten().as_deref() == Some("true");
                let config = f.get(3).cloned().flatten().unwrap_or_default();
                let pinned = config.split(';').any(|c| c.starts_with("search_path="));
                let owner = f.get(4).cloned().flatten().unwrap_or_default();
                definer_ok = Some(secdef && pinned);
                detail.push(format!(
                    "function {} owned by {owner}: {}, {}",
                    names.base,
                    if secdef {
                        "SECURITY DEFINER"
                    } else {
                        "NOT security definer (the app's role needs INSERT on the outbox)"
                    },
                    if pinned {
                        "search_path pinned"
                    } else {
                        "search_path NOT pinned"
                    }
                ));
            }
            None => missing.push(format!("function {} is missing", names.base)),
        }
    }
    let installed = missing.is_empty() && has_outbox;
    if !has_outbox {
        missing.push("the outbox is missing".into());
    }
    let (pending, due) = if has_outbox {
        let row = s
            .rows(
                &sql::count_rows(kind, &s.home),
                &[Arg::Int(micros(t.delay)), Arg::Text(r.name.clone())],
            )
            .await?;
        let get = |i: usize| {
            row.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get(0), get(1))
    } else {
        (0, 0)
    };
    detail.splice(0..0, missing);
    Ok(RefStatus {
        reference: r.name.clone(),
        database: s.name.clone(),
        installed,
        detail: detail.join("; "),
        definer_ok,
        pending,
        due,
    })
}

/// What moving outbox rows into the queue did.
#[derive(Debug, Default, Clone)]
pub struct Moved {
    /// Outbox rows taken out of the outbox.
    pub rows: u64,
    /// Queue entries added (an object already queued adds none).
    pub queued: u64,
    /// Rows dropped because their value names nothing this tool may delete (each warned).
    pub dropped: u64,
    pub warnings: Vec<String>,
}

/// Reads one reference's outbox rows (after `delay` when `only_due`) in batches, queues their
/// keys, then deletes them from the outbox. Queueing comes first: a crash between the two
/// leaves the rows to be moved again, and queueing an object twice is harmless (one live entry
/// per object; an entry already finished makes a second one that ends `already_gone`).
async fn move_rows(
    app: &App,
    s: &mut Session,
    r: &ReferenceConfig,
    only_due: bool,
    moved: &mut Moved,
) -> std::result::Result<(), String> {
    let cfg = &app.cfg;
    let store = &cfg.stores[r.store];
    let ctx = store.key_context(&r.key_prefix);
    let trash = crate::overlap::trash_prefixes(cfg, r.store);
    let delay = delay_of(r);
    let text = sql::read_rows(s.kind, &s.home, only_due, BATCH);
    let mut last = 0i64;
    let mut stamp = false;
    loop {
        let mut args = vec![Arg::Text(r.name.clone()), Arg::Int(last)];
        if only_due {
            args.push(Arg::Int(micros(delay)));
        }
        let rows = s.rows(&text, &args).await?;
        if rows.is_empty() {
            // Once per reference, not per batch: the stamp visits every live entry of the store.
            if stamp {
                app.state
                    .stamp_fingerprint(&store.name, &crate::overlap::fingerprint(store))
                    .await
                    .map_err(|e| format!("cannot queue the outbox rows: {e}"))?;
            }
            return Ok(());
        }
        let now = Utc::now();
        let mut entries = Vec::new();
        let mut ids = Vec::new();
        for row in rows {
            let mut it = row.into_iter();
            let id: i64 = it
                .next()
                .flatten()
                .and_then(|v| v.parse().ok())
                .ok_or("the outbox returned a row without an id")?;
            let pk = it.next().flatten().unwrap_or_default();
            let value = it.next().flatten().unwrap_or_default();
            let age = it.next().flatten().and_then(|v| v.parse::<i64>().ok());
            last = last.max(id);
            ids.push(id);
            let wait = age.map_or(0, |a| (micros(delay) - a).max(0));
            let at = Outbox {
                database: &s.name,
                id,
                pk: &pk,
                value: &value,
            };
            let before = entries.len();
            for (rt, key) in keys_of(cfg, r, &ctx, &trash, &at, &mut moved.warnings) {
                entries.push(NewEntry {
                    object: ObjectId::new(store.name.clone(), rt, key),
                    reason: Reason::Trigger,
                    rule: String::new(),
                    row_id: String::new(),
                    client_id: format!("outbox:{}:{id}", s.name),
                    scan_id: None,
                    uploaded_at: None,
                    next_attempt_at: now + chrono::Duration::microseconds(wait),
                    original_key: None,
                });
            }
            if entries.len() == before {
                moved.dropped += 1;
            }
        }
        if !entries.is_empty() {
            let (added, _) = app
                .state
                .enqueue(ACTOR, &entries)
                .await
                .map_err(|e| format!("cannot queue the outbox rows: {e}"))?;
            stamp = true;
            moved.queued += added;
        }
        for chunk in ids.chunks(DELETE_CHUNK) {
            let args: Vec<Arg> = chunk.iter().map(|&i| Arg::Int(i)).collect();
            s.exec_args(&sql::delete_rows(s.kind, &s.home, chunk.len()), &args)
                .await?;
        }
        moved.rows += ids.len() as u64;
    }
}

impl Session {
    async fn exec_args(&mut self, text: &str, args: &[Arg]) -> std::result::Result<(), String> {
        self.rows(text, args).await.map(|_| ())
    }
}

/// An outbox row, for warnings.
struct Outbox<'a> {
    database: &'a str,
    id: i64,
    pk: &'a str,
    value: &'a str,
}

impl std::fmt::Display for Outbox<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value: String = self.value.chars().take(200).collect();
        write!(
            f,
            "outbox row {} of database {} (pk {}, value `{}`)",
            self.id,
            self.database,
            self.pk,
            crate::error::sanitize(&value)
        )
    }
}

/// The store keys an old value names, read in the reference's `key_format`. What names nothing
/// deletable is warned about and yields nothing: a value that cannot be parsed, that is not this
/// store's, that lies in a quarantine, or a Cloudinary bare public_id whose type is unknown (never
/// enough to delete, SPEC §2). Such a row is then dropped from the outbox: it can never become a
/// deletion by waiting, and a scan still finds its file if it is an orphan.
fn keys_of(
    cfg: &Config,
    r: &ReferenceConfig,
    ctx: &crate::key::KeyContext,
    trash: &[String],
    at: &Outbox<'_>,
    warnings: &mut Vec<String>,
) -> Vec<(crate::domain::ResourceType, String)> {
    let store = &cfg.stores[r.store];
    let parsed = r.key_format.parse(at.value, None, ctx);
    for why in &parsed.unparsed {
        warnings.push(format!(
            "{at}, reference {}: not a key ({why}); dropped",
            r.name
        ));
    }
    if parsed.keys.is_empty() && parsed.unparsed.is_empty() {
        warnings.push(format!(
            "{at}, reference {}: not a key of store {}; dropped",
            r.name, store.name
        ));
    }
    let cloudinary = match &store.location {
        StoreLocation::Cloudinary(c) => Some(c),
        _ => None,
    };
    if let Some(c) = cloudinary
        && let Some(t) = crate::key::cloudinary_delivery_type(at.value)
        && t != c.delivery_type
    {
        warnings.push(format!(
            "{at}, reference {}: a `{t}` asset, but store {} holds `{}` assets; dropped",
            r.name, store.name, c.delivery_type
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for k in parsed.keys {
        let rt = match (k.resource_type, cloudinary) {
            (Some(t), None) => t,
            (Some(t), Some(c)) if c.resource_types.contains(&t) => t,
            (Some(t), Some(_)) => {
                warnings.push(format!(
                    "{at}, reference {}: store {} does not list resource type `{}`; dropped",
                    r.name,
                    store.name,
                    t.as_str()
                ));
                continue;
            }
            (None, Some(c)) if c.resource_types.len() == 1 => c.resource_types[0],
            (None, _) => {
                warnings.push(format!(
                    "{at}, reference {}: a bare public_id without its resource type is never enough to delete; dropped (store its type, e.g. image/upload/…)",
                    r.name
                ));
                continue;
            }
        };
        if let Some(why) = crate::overlap::trash_reason(&store.name, trash, &k.key) {
            warnings.push(format!("{at}, reference {}: {why}; dropped", r.name));
            continue;
        }
        out.push((rt, k.key));
    }
    out
}

/// The worker's first step (`queue run`, later `serve`): due outbox rows of every database a
/// reference uses become queue entries. Never fails the run: a database out of reach is a
/// warning when it has tracked references (its rows wait), and silent otherwise.
pub async fn drain(app: &App, opts: &crate::queue::RunOptions) -> Moved {
    let mut total = Moved::default();
    // `expire` works only its own entries: what it would queue here waits for the next worker.
    if opts.only_rule.is_some() {
        return total;
    }
    let cfg = &app.cfg;
    let dbs: BTreeSet<usize> = cfg.references.iter().map(|r| r.database).collect();
    for d in dbs {
        let dc = &cfg.databases[d];
        let has_track = cfg
            .references
            .iter()
            .any(|r| r.database == d && r.track.is_some());
        let mut s = match Session::open(dc).await {
            Ok(s) => s,
            Err(e) => {
                if has_track {
                    tracing::warn!(
                        "triggers: outbox not read: {e}; its rows wait for the next run"
                    );
                }
                continue;
            }
        };
        let result = drain_db(app, &mut s, &mut total).await;
        s.close().await;
        if let Err(e) = result {
            tracing::warn!(
                "triggers: outbox of database {} not read: {e}; its rows wait for the next run",
                dc.name
            );
        }
    }
    for w in &total.warnings {
        tracing::warn!("triggers: {w}");
    }
    if total.rows > 0 {
        tracing::info!(
            "triggers: {} outbox row(s) moved into the queue ({} entries added)",
            total.rows,
            total.queued
        );
    }
    total
}

async fn drain_db(
    app: &App,
    s: &mut Session,
    total: &mut Moved,
) -> std::result::Result<(), String> {
    if !s.has_outbox().await? {
        return Ok(());
    }
    let cfg = &app.cfg;
    let counts = s
        .rows(&sql::rows_by_reference(s.kind, &s.home), &[])
        .await?;
    for row in counts {
        let name = row.first().cloned().flatten().unwrap_or_default();
        match cfg.references.iter().find(|r| r.name == name) {
            Some(r) => move_rows(app, s, r, true, total).await?,
            None => total.warnings.push(format!(
                "database {}: the outbox holds {} row(s) for reference `{name}`, which the config does not have; they stay until it does",
                s.name,
                row.get(1).cloned().flatten().unwrap_or_default()
            )),
        }
    }
    Ok(())
}

/// `triggers uninstall`: removes the triggers (and, for the whole config, the outbox and the
/// functions) that `install` created, found in the catalogue by their names. Rows still in the
/// outbox are moved into the queue first — with their remaining delay — or, with
/// `discard_pending`, dropped. Rows naming a reference the config does not have cannot be
/// queued, so without `discard_pending` they stop the command before anything changes.
pub async fn uninstall(app: &App, only: Option<&str>, discard_pending: bool) -> Result<Report> {
    let cfg = &app.cfg;
    let scope = scope(cfg, only)?;
    let mut report = Report::default();
    let mut sessions = Vec::new();
    for &d in &scope.dbs {
        let dc = &cfg.databases[d];
        let mut r = DbReport {
            database: dc.name.clone(),
            ..DbReport::default()
        };
        let s = open_db(dc, &mut r).await;
        if let Some(mut s) = s {
            if scope.whole && !discard_pending {
                match unknown_rows(cfg, &mut s).await {
                    Ok(unknown) if !unknown.is_empty() => {
                        s.close().await;
                        for (_, s) in sessions {
                            if let Some(s) = s {
                                Session::close(s).await;
                            }
                        }
                        return Err(Error::Refused(format!(
                            "the outbox of database {} holds rows for {} which the config does not name, so they cannot be queued; add those references to the config, or pass --discard-pending to drop them",
                            dc.name,
                            unknown.join(", ")
                        )));
                    }
                    Ok(_) => {}
                    Err(e) => r.error = Some(format!("database {}: {e}", dc.name)),
                }
            }
            sessions.push((r, Some(s)));
        } else {
            sessions.push((r, None));
        }
    }
    for (mut r, s) in sessions {
        if let Some(mut s) = s {
            if r.error.is_none() {
                let refs: Vec<&ReferenceConfig> = if scope.whole {
                    cfg.references.iter().collect()
                } else {
                    scope.refs.iter().map(|&i| &cfg.references[i]).collect()
                };
                if let Err(e) =
                    uninstall_db(app, &mut s, &refs, scope.whole, discard_pending, &mut r).await
                {
                    r.error = Some(format!("database {}: {e}", r.database));
                }
            }
            s.close().await;
        }
        report.databases.push(r);
    }
    Ok(report)
}

async fn unknown_rows(cfg: &Config, s: &mut Session) -> std::result::Result<Vec<String>, String> {
    if !s.has_outbox().await? {
        return Ok(Vec::new());
    }
    Ok(s.rows(&sql::rows_by_reference(s.kind, &s.home), &[])
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .filter(|name| !cfg.references.iter().any(|r| &r.name == name))
        .map(|n| format!("`{n}`"))
        .collect())
}

async fn uninstall_db(
    app: &App,
    s: &mut Session,
    refs: &[&ReferenceConfig],
    whole: bool,
    discard: bool,
    report: &mut DbReport,
) -> std::result::Result<(), String> {
    let kind = s.kind;
    let ours: Vec<String> = refs
        .iter()
        .flat_map(|r| {
            let n = Names::of(&r.name);
            [n.update, n.delete]
        })
        .collect();
    let triggers: Vec<Installed> = s
        .triggers()
        .await?
        .into_iter()
        .filter(|i| whole || ours.contains(&i.name))
        .collect();
    let functions: Vec<String> = if kind == DbKind::Postgres {
        let bases: Vec<String> = refs.iter().map(|r| Names::of(&r.name).base).collect();
        s.rows(&sql::pg_list_functions(), &[])
            .await?
            .into_iter()
            .filter(|f| {
                whole
                    || f.get(1)
                        .cloned()
                        .flatten()
                        .is_some_and(|name| bases.contains(&name))
            })
            .filter_map(|f| f.into_iter().next().flatten())
            .collect()
    } else {
        Vec::new()
    };
    let has_outbox = s.has_outbox().await?;
    let ob = sql::outbox(kind, &s.home);
    // The triggers go first, then the outbox is locked: nothing can add a row between the
    // rows moved and the table dropped. On PostgreSQL and SQLite all of it is one transaction.
    let drops: Vec<String> = triggers.iter().map(|t| drop_trigger(kind, t)).collect();
    match kind {
        DbKind::MySql => {
            for d in &drops {
                s.exec(d).await?;
            }
        }
        _ => {
            s.exec(s.begin()).await?;
            for d in &drops {
                if let Err(e) = s.exec(d).await {
                    let _ = s.exec("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
    }
    let mut result = empty_outbox(app, s, refs, whole, discard, has_outbox, report).await;
    for f in &functions {
        if result.is_ok() {
            result = s
                .exec(&format!("DROP FUNCTION IF EXISTS {f}"))
                .await
                .map(|_| ());
        }
    }
    match (kind, &result) {
        (DbKind::MySql, _) => {
            if has_outbox {
                s.exec("UNLOCK TABLES").await?;
            }
        }
        (_, Ok(())) => {
            s.exec("COMMIT").await?;
        }
        (_, Err(_)) => {
            let _ = s.exec("ROLLBACK").await;
        }
    }
    result?;
    report.done.push(format!(
        "database {} ({}): removed {} trigger(s){}{}",
        s.name,
        kind.name(),
        triggers.len(),
        if functions.is_empty() {
            String::new()
        } else {
            format!(", {} function(s)", functions.len())
        },
        if whole && has_outbox {
            format!(" and the outbox {}", ob.replace(['"', '`'], ""))
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Moves (or discards) the outbox rows of `refs`, under a lock, and drops the outbox when the
/// whole config is uninstalled.
#[allow(clippy::too_many_arguments)]
async fn empty_outbox(
    app: &App,
    s: &mut Session,
    refs: &[&ReferenceConfig],
    whole: bool,
    discard: bool,
    has_outbox: bool,
    report: &mut DbReport,
) -> std::result::Result<(), String> {
    let kind = s.kind;
    let ob = sql::outbox(kind, &s.home);
    let mut moved = Moved::default();
    if has_outbox {
        match kind {
            DbKind::Postgres => {
                s.exec(&format!("LOCK TABLE {ob} IN ACCESS EXCLUSIVE MODE"))
                    .await?;
            }
            DbKind::MySql => {
                s.exec(&format!("LOCK TABLES {ob} WRITE")).await?;
            }
            DbKind::Sqlite => {}
        }
        if discard {
            let discarded = if whole {
                s.count(
                    &format!("SELECT CAST(COUNT(*) AS {}) FROM {ob}", text_type(kind)),
                    &[],
                )
                .await?
            } else {
                let mut n = 0;
                for r in refs {
                    n += s
                        .exec_count(
                            &format!("DELETE FROM {ob} WHERE reference = {}", sql::param(kind, 1)),
                            &[Arg::Text(r.name.clone())],
                        )
                        .await?;
                }
                n
            };
            report
                .done
                .push(format!("discarded {discarded} pending outbox row(s)"));
        } else {
            for r in refs {
                move_rows(app, s, r, false, &mut moved).await?;
            }
            report.done.push(format!(
                "moved {} pending outbox row(s) into the queue ({} entries added, {} dropped)",
                moved.rows, moved.queued, moved.dropped
            ));
        }
        if whole {
            s.exec(&format!("DROP TABLE {ob}")).await?;
        }
    }
    report.warnings.extend(moved.warnings);
    Ok(())
}

fn text_type(kind: DbKind) -> &'static str {
    if kind == DbKind::MySql {
        "CHAR"
    } else {
        "TEXT"
    }
}

impl Session {
    async fn exec_count(&mut self, text: &str, args: &[Arg]) -> std::result::Result<u64, String> {
        macro_rules! run {
            ($c:expr) => {{
                let mut q = sqlx::query(AssertSqlSafe(text.to_string()));
                for a in args {
                    q = match a {
                        Arg::Text(s) => q.bind(s.clone()),
                        Arg::Int(i) => q.bind(*i),
                    };
                }
                q.execute(&mut **$c)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| one_line(&e))
            }};
        }
        match &mut self.conn {
            Conn::Pg(c) => run!(c),
            Conn::My(c) => run!(c),
            Conn::Lite(c) => run!(c),
        }
    }
}

/// `check`: a tracked MySQL/MariaDB table that is the child of a cascading foreign key loses
/// rows without firing its triggers (MySQL runs no trigger for cascaded changes).
pub async fn cascade_warnings(
    cfg: &Config,
    dbs: &[(&DatabaseConfig, std::result::Result<Db, DbError>)],
) -> Vec<String> {
    let mut out = Vec::new();
    for r in &cfg.references {
        let (Some(t), Some((dc, Ok(Db::MySql(pool))))) = (&r.track, dbs.get(r.database)) else {
            continue;
        };
        let (schema, table) = sql::split_table(&t.table);
        let rows = sqlx::query(sql::mysql_cascades())
            .bind(schema)
            .bind(table)
            .fetch_all(pool)
            .await;
        match rows {
            Ok(rows) => {
                for row in rows {
                    let name: Option<String> = row.try_get(0).ok().flatten();
                    let parent: Option<String> = row.try_get(1).ok().flatten();
                    out.push(format!(
                        "reference {}: table {} of database {} is the child of foreign key {} ON DELETE CASCADE (parent {}); rows it deletes fire no trigger, so their files are not queued (a scan still finds them)",
                        r.name,
                        t.table,
                        dc.name,
                        name.unwrap_or_default(),
                        parent.unwrap_or_default()
                    ));
                }
            }
            Err(e) => out.push(format!(
                "reference {}: cannot read the foreign keys of {} ({}); cascading deletes fire no trigger",
                r.name,
                t.table,
                one_line(&e)
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResourceType;

    fn config(resource_types: &str, key_format: &str) -> Config {
        let text = format!(
            "[stores.media]\nurl = \"cloudinary://k:s@demo\"\n{resource_types}\n[databases.app]\nurl = \"sqlite://app.db\"\n[[references]]\nname = \"pictures\"\nquery = \"SELECT id, image AS key FROM p\"\nkey_format = \"{key_format}\"\ntrack = {{ table = \"p\", column = \"image\", pk = \"id\" }}\n"
        );
        crate::config::parse(&text, "t.toml", std::path::Path::new("/x"), &|_| None)
            .expect("a valid config")
    }

    fn keys(cfg: &Config, value: &str) -> (Vec<(ResourceType, String)>, Vec<String>) {
        let r = &cfg.references[0];
        let ctx = cfg.stores[r.store].key_context(&r.key_prefix);
        let at = Outbox {
            database: "app",
            id: 7,
            pk: "1",
            value,
        };
        let mut warnings = Vec::new();
        let keys = keys_of(cfg, r, &ctx, &[], &at, &mut warnings);
        (keys, warnings)
    }

    #[test]
    fn a_bare_public_id_is_never_enough_to_delete() {
        let cfg = config("", "cloudinary");
        let (found, warnings) = keys(&cfg, "avatars/abc");
        assert!(found.is_empty());
        assert!(warnings[0].contains("bare public_id"), "{warnings:?}");
        assert!(
            warnings[0].contains("outbox row 7 of database app"),
            "{warnings:?}"
        );

        let (found, warnings) = keys(&cfg, "image/upload/v1699999999/avatars/abc.jpg");
        assert_eq!(found, [(ResourceType::Image, "avatars/abc".to_string())]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn a_store_of_one_resource_type_gives_a_bare_public_id_its_type() {
        let cfg = config("resource_types = [\"video\"]", "cloudinary");
        let (found, _) = keys(&cfg, "clips/abc");
        assert_eq!(found, [(ResourceType::Video, "clips/abc".to_string())]);
        // A type the store does not list is not its to delete.
        let (found, warnings) = keys(&cfg, "image/upload/v1/clips/abc.jpg");
        assert!(found.is_empty());
        assert!(warnings[0].contains("does not list"), "{warnings:?}");
    }

    #[test]
    fn values_that_name_nothing_deletable_are_warned_about() {
        let cfg = config("", "cloudinary");
        let (found, warnings) = keys(
            &cfg,
            "https://res.cloudinary.com/other/image/upload/v1/a.jpg",
        );
        assert!(found.is_empty());
        assert!(
            warnings[0].contains("not a key of store media"),
            "{warnings:?}"
        );
        let (found, warnings) = keys(&cfg, "private/upload/v1/a.jpg");
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
