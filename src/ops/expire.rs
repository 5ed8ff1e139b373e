//! `expire` (SPEC §2 `[[expiry]]`, §3, §6): the rows an expiry rule's `select` returns lose their
//! files through the deletion queue, then each row whose every file is settled is removed by the
//! rule's `delete`, in a transaction of its own.
//!
//! A row is removed only when the newest entry of each of its files — queued by this rule for
//! this row — ended `deleted`, `quarantined`, `already_gone` or `kept: shared`. Otherwise it stays
//! and a later run picks it up again:
//! - a file with no entry yet is queued (due now);
//! - a file whose entry is `failed` is retried (the same entry, attempts reset: a copy an
//!   interrupted move may have left in the trash is found by the worker, never forgotten);
//! - a file whose entry waits (`pending` after a failed attempt, backoff) keeps its schedule: the
//!   run processes it when it is due, else a later run (or any worker) does;
//! - a file whose entry was dropped otherwise (an `ignore` glob, a person's `queue drop`) is never
//!   deleted, and its row stays: that is reported at every run.
//!
//! A file already deleted is never queued again, so a run killed between a file's deletion and
//! its row's `delete` deletes nothing twice: the next run finds the file settled and removes the
//! row.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use indexmap::IndexMap;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{Config, ExpiryConfig};
use crate::domain::event::Event;
use crate::domain::queue::{Entry, NewEntry, QueueState, Reason, Selection};
use crate::domain::{ObjectId, ResourceType};
use crate::error::{Error, Result};
use crate::queue::transition::KEPT_SHARED;
use crate::queue::{self, RunOptions, Totals};
use crate::refs::{Db, DbError, IdBinding, RowSink};
use crate::state::QueueStore as _;

/// The actor of the audit rows `expire` writes.
pub const ACTOR: &str = "expire";

/// The `grp` of a row whose `grp` is NULL (or that has no `grp` column).
pub const NO_GROUP: &str = "(none)";

/// Rows a dry run lists.
const SAMPLE: usize = 20;

/// Entries queued in one state transaction.
const ENQUEUE_CHUNK: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only this rule (else every `[[expiry]]` rule, in config order).
    pub rule: Option<String>,
    /// Run only `select`: nothing is queued, deleted or written.
    pub dry_run: bool,
}

/// What one run did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Every rule ran to its end: no query failed, no entry became `failed` in this run, the API
    /// budget did not stop the worker.
    pub complete: bool,
    pub rules: Vec<RuleReport>,
}

impl Report {
    /// Every rule's database (or every store the worker tried) was out of reach.
    pub fn nothing_reached(&self) -> bool {
        !self.rules.is_empty() && self.rules.iter().all(|r| r.unreachable)
    }
}

/// Counts of one rule, or of one `grp` of it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Figures {
    /// Distinct ids `select` returned.
    pub rows_selected: u64,
    /// Rows `delete` removed (dry run: rows that would be expired).
    pub rows_expired: u64,
    /// Files of the expired rows (dry run: files that would be queued).
    pub files: u64,
    /// Files deleted (or moved to quarantine) in this run.
    pub files_deleted: u64,
    /// Files found gone by this run's worker.
    pub already_gone: u64,
    /// Files kept because a row outside `releases` references them (this run).
    pub kept_shared: u64,
    /// Files whose entry is `failed`, or waits for a retry after a failed attempt, and rows whose
    /// `delete` failed.
    pub failures: u64,
    /// Rows that stay for a later run.
    pub rows_left: u64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.rows_selected += o.rows_selected;
        self.rows_expired += o.rows_expired;
        self.files += o.files;
        self.files_deleted += o.files_deleted;
        self.already_gone += o.already_gone;
        self.kept_shared += o.kept_shared;
        self.failures += o.failures;
        self.rows_left += o.rows_left;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub grp: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A row that stays, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LeftRow {
    pub id: String,
    pub grp: String,
    pub why: String,
}

/// A file of a row, as the store names it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct File {
    pub resource_type: ResourceType,
    pub key: String,
}

/// A row a dry run would expire.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRow {
    pub id: String,
    pub grp: String,
    pub files: Vec<File>,
}

/// What the worker did for the rule in this run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerFigures {
    pub queued: u64,
    pub retried: u64,
    pub processed: u64,
    pub deleted: u64,
    pub quarantined: u64,
    pub already_gone: u64,
    pub kept_shared: u64,
    pub retrying: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub store: String,
    pub complete: bool,
    #[serde(skip)]
    pub unreachable: bool,
    /// Why the rule stopped early, when it did.
    pub error: Option<String>,
    #[serde(flatten)]
    pub totals: Figures,
    pub groups: Vec<GroupReport>,
    /// Rows that stay, with why (all of them).
    pub left: Vec<LeftRow>,
    /// Dry run: the first rows that would be expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Vec<PlannedRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerFigures>,
    pub warnings: Vec<String>,
}

impl RuleReport {
    fn new(x: &ExpiryConfig, cfg: &Config) -> RuleReport {
        RuleReport {
            name: x.name.clone(),
            store: cfg.stores[x.store].name.clone(),
            complete: true,
            unreachable: false,
            error: None,
            totals: Figures::default(),
            groups: Vec::new(),
            left: Vec::new(),
            sample: None,
            worker: None,
            warnings: Vec::new(),
        }
    }

    fn stop(&mut self, why: String) {
        self.complete = false;
        if self.error.is_none() {
            self.error = Some(why);
        }
    }
}

/// A rule whose queries passed validation.
struct Prepared {
    db: Db,
    columns: Vec<String>,
    layout: Layout,
    binding: IdBinding,
}

/// One row of `select`, its files read in the rule's key format.
#[derive(Debug, Clone)]
struct RowPlan {
    id: String,
    grp: String,
    files: Vec<ObjectId>,
    /// Why the row is not expired this run: its files are not all known, or its id cannot be
    /// bound to `delete`.
    problem: Option<String>,
}

/// Where the columns of `select` are.
#[derive(Debug, Clone)]
struct Layout {
    id: usize,
    grp: Option<usize>,
    media_type: Option<usize>,
    /// Key columns: index, name, the resource type a bare public_id takes from the name.
    keys: Vec<(usize, String, Option<ResourceType>)>,
}

impl Layout {
    /// `Err`: what the query lacks (a config error).
    fn of(columns: &[String], rule: &str) -> std::result::Result<Layout, String> {
        let lower: Vec<String> = columns.iter().map(|c| c.to_ascii_lowercase()).collect();
        let find = |n: &str| lower.iter().position(|c| c == n);
        let keys: Vec<(usize, String, Option<ResourceType>)> = lower
            .iter()
            .enumerate()
            .filter(|(_, c)| *c == "key" || c.starts_with("key_"))
            .map(|(i, c)| {
                let forced = c
                    .strip_prefix("key_")
                    .and_then(ResourceType::parse_cloudinary);
                (i, c.clone(), forced)
            })
            .collect();
        let Some(id) = find("id") else {
            return Err(format!(
                "expiry rule `{rule}`: `select` returns no `id` column (it returns: {}); select the row's primary key as `id`, e.g. SELECT p.id, p.featured_image AS key …",
                columns.join(", ")
            ));
        };
        if keys.is_empty() {
            return Err(format!(
                "expiry rule `{rule}`: `select` returns no key column (it returns: {}); alias each file column as `key` or `key_<name>` (`key_image`, `key_video`, `key_raw` give a bare Cloudinary public_id its type)",
                columns.join(", ")
            ));
        }
        Ok(Layout {
            id,
            grp: find("grp"),
            media_type: find("media_type"),
            keys,
        })
    }
}

/// Gathers `select`'s rows, every wanted column as text.
#[derive(Default)]
struct Rows(Vec<Vec<Option<String>>>);

impl RowSink for Rows {
    type Batch = Vec<Vec<Option<String>>>;

    fn row(&mut self, cols: &[Option<&str>]) -> Option<Self::Batch> {
        self.0
            .push(cols.iter().map(|c| c.map(str::to_string)).collect());
        (self.0.len() >= 1024).then(|| std::mem::take(&mut self.0))
    }

    fn flush(&mut self) -> Option<Self::Batch> {
        (!self.0.is_empty()).then(|| std::mem::take(&mut self.0))
    }
}

/// Reads one row's files. Any value that cannot be read makes the row's files unknown.
fn plan_row(
    cols: &[Option<String>],
    layout: &Layout,
    x: &ExpiryConfig,
    cfg: &Config,
    ctx: &crate::key::KeyContext,
    trash: &[String],
) -> std::result::Result<RowPlan, String> {
    let Some(id) = cols
        .get(layout.id)
        .cloned()
        .flatten()
        .filter(|v| !v.is_empty())
    else {
        return Err(format!(
            "expiry rule `{}`: a row without an `id` is left alone",
            x.name
        ));
    };
    let grp = layout
        .grp
        .and_then(|g| cols.get(g).cloned().flatten())
        .unwrap_or_else(|| NO_GROUP.to_string());
    let store = &cfg.stores[x.store];
    let media_type = layout
        .media_type
        .and_then(|m| cols.get(m).cloned().flatten());
    let mut files: Vec<ObjectId> = Vec::new();
    let mut problem: Option<String> = None;
    for (i, name, forced) in &layout.keys {
        let Some(value) = cols.get(*i).cloned().flatten().filter(|v| !v.is_empty()) else {
            continue;
        };
        let mt = forced.map(ResourceType::as_str).or(media_type.as_deref());
        let parsed = x.key_format.parse(&value, mt, ctx);
        if let Some(why) = parsed.unparsed.first() {
            problem.get_or_insert_with(|| {
                format!(
                    "`{name}` value `{value}` cannot be read as {}: {why}",
                    x.key_format.name()
                )
            });
            continue;
        }
        if parsed.keys.is_empty() {
            problem.get_or_insert_with(|| {
                format!(
                    "`{name}` value `{value}` is not a file of store {}",
                    store.name
                )
            });
            continue;
        }
        for k in parsed.keys {
            let Some(rt) = k.resource_type else {
                problem.get_or_insert_with(|| {
                    format!(
                        "`{name}` value `{value}` is a bare public_id with no resource type, never enough to delete: select it as key_image, key_video or key_raw, or return a media_type column"
                    )
                });
                continue;
            };
            if let Some(why) = crate::overlap::trash_reason(&store.name, trash, &k.key) {
                problem.get_or_insert(why);
                continue;
            }
            let o = ObjectId::new(store.name.clone(), rt, k.key);
            if !files.contains(&o) {
                files.push(o);
            }
        }
    }
    Ok(RowPlan {
        id,
        grp,
        files,
        problem,
    })
}

/// Runs `select` and reads every row's files; rows of one id (a join) are merged.
async fn select_rows(
    db: &Db,
    x: &ExpiryConfig,
    cfg: &std::sync::Arc<Config>,
    columns: &[String],
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> std::result::Result<IndexMap<String, RowPlan>, DbError> {
    let wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
    // `feed` finds columns by name and needs the first: `id` leads, the rest keep their places.
    let mut order: Vec<&str> = vec![wanted[layout.id]];
    order.extend(
        wanted
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != layout.id)
            .map(|(_, c)| *c),
    );
    let reordered: Vec<String> = order.iter().map(|c| (*c).to_string()).collect();
    let layout = Layout::of(&reordered, &x.name).map_err(DbError::Query)?;
    let (tx, mut rx) = mpsc::channel::<Vec<Vec<Option<String>>>>(8);
    let store = &cfg.stores[x.store];
    let ctx = store.key_context("");
    let si = crate::overlap::index(cfg, &store.name).unwrap_or(x.store);
    let trash = crate::overlap::trash_prefixes(cfg, si);
    let (x2, cfg2) = (x.clone(), std::sync::Arc::clone(cfg));
    let gather = tokio::spawn(async move {
        let mut rows: IndexMap<String, RowPlan> = IndexMap::new();
        let mut warnings: Vec<String> = Vec::new();
        while let Some(batch) = rx.recv().await {
            for cols in batch {
                match plan_row(&cols, &layout, &x2, &cfg2, &ctx, &trash) {
                    Err(w) => warnings.push(w),
                    Ok(p) => match rows.get_mut(&p.id) {
                        Some(seen) => {
                            for f in p.files {
                                if !seen.files.contains(&f) {
                                    seen.files.push(f);
                                }
                            }
                            if seen.problem.is_none() {
                                seen.problem = p.problem;
                            }
                        }
                        None => {
                            rows.insert(p.id.clone(), p);
                        }
                    },
                }
            }
        }
        (rows, warnings)
    });
    let (_, result) = db.feed(&x.select, &order, Rows::default(), &tx).await;
    drop(tx);
    let (rows, w) = gather
        .await
        .map_err(|e| DbError::Query(format!("reading the rows stopped: {e}")))?;
    result?;
    warnings.extend(w);
    Ok(rows)
}

/// The ids `select` returns now.
async fn selected_ids(db: &Db, x: &ExpiryConfig) -> std::result::Result<HashSet<String>, DbError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Vec<Option<String>>>>(8);
    let gather = tokio::spawn(async move {
        let mut ids = HashSet::new();
        while let Some(batch) = rx.recv().await {
            ids.extend(
                batch
                    .into_iter()
                    .filter_map(|r| r.into_iter().next().flatten()),
            );
        }
        ids
    });
    let (_, result) = db.feed(&x.select, &["id"], Rows::default(), &tx).await;
    drop(tx);
    let ids = gather
        .await
        .map_err(|e| DbError::Query(format!("reading the ids stopped: {e}")))?;
    result?;
    Ok(ids)
}

/// What the newest entry of one (row, file) says about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    /// No entry of this rule and row yet.
    Unqueued,
    /// Deleted, quarantined, already gone, or kept for another row: the row may go.
    Settled(Settled),
    /// `failed`: retried by the next run.
    Failed(String),
    /// Waiting (`pending`, maybe after a failed attempt) or being worked on.
    Waiting {
        state: QueueState,
        due: String,
        error: Option<String>,
    },
    /// Dropped for another reason: never deleted, so the row stays.
    Dropped(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Deleted,
    AlreadyGone,
    KeptShared,
}

fn file_state(found: Option<&(Entry, Option<String>)>) -> FileState {
    let Some((e, outcome)) = found else {
        return FileState::Unqueued;
    };
    let outcome = outcome.as_deref().unwrap_or_default();
    match e.state {
        QueueState::Done => FileState::Settled(if outcome == "already_gone" {
            Settled::AlreadyGone
        } else {
            Settled::Deleted
        }),
        QueueState::Dropped if outcome == KEPT_SHARED => FileState::Settled(Settled::KeptShared),
        QueueState::Dropped => FileState::Dropped(outcome.to_string()),
        QueueState::Failed => FileState::Failed(e.last_error.clone().unwrap_or_default()),
        QueueState::Pending | QueueState::Claimed => FileState::Waiting {
            state: e.state,
            due: crate::time::rfc3339(e.next_attempt_at),
            error: e.last_error.clone().filter(|_| e.attempts > 0),
        },
    }
}

type Newest = HashMap<(String, ObjectId), (Entry, Option<String>)>;

async fn newest(app: &App, rule: &str, ids: &[String]) -> Result<Newest> {
    Ok(app
        .state
        .rule_row_entries(Reason::Expire, rule, ids)
        .await?
        .into_iter()
        .map(|(e, o)| ((e.row_id.clone(), e.object.clone()), (e, o)))
        .collect())
}

/// Validates, then runs, the selected expiry rules. Config errors (a `select` without `id` or a
/// key column, a released reference without `id`) are found for every selected rule before any
/// rule does anything.
pub async fn run(app: &App, req: &Request) -> Result<Report> {
    let cfg = std::sync::Arc::clone(&app.cfg);
    let rules = selected_rules(&cfg, req.rule.as_deref())?;
    let mut dbs: HashMap<usize, std::result::Result<Db, String>> = HashMap::new();
    let mut reports: Vec<RuleReport> = Vec::new();
    let mut prepared: Vec<Option<Prepared>> = Vec::new();
    for &r in &rules {
        let x = &cfg.expiry[r];
        let mut report = RuleReport::new(x, &cfg);
        let db = connect(&cfg, &mut dbs, x.database).await;
        let ready = match db {
            Err(why) => {
                report.unreachable = true;
                report.stop(why);
                None
            }
            Ok(db) => match validate(&cfg, &mut dbs, x, &db, req.dry_run).await? {
                Ok((columns, layout, binding)) => Some(Prepared {
                    db,
                    columns,
                    layout,
                    binding,
                }),
                Err(why) => {
                    report.stop(why);
                    None
                }
            },
        };
        reports.push(report);
        prepared.push(ready);
    }
    for (report, ready) in reports.iter_mut().zip(prepared) {
        let Some(p) = ready else {
            continue;
        };
        let Some(x) = cfg.expiry.iter().find(|x| x.name == report.name) else {
            continue;
        };
        run_rule(app, x, &p, req.dry_run, report).await?;
    }
    for db in dbs.values().flatten() {
        db.close().await;
    }
    let report = Report {
        dry_run: req.dry_run,
        complete: reports.iter().all(|r| r.complete),
        rules: reports,
    };
    app.publish(Event::ExpireFinished {
        dry_run: report.dry_run,
        complete: report.complete,
        report: serde_json::to_value(&report).unwrap_or_default(),
    });
    Ok(report)
}

/// The indices of the rules a run covers: `name`'s alone, or all; a usage error when there is
/// none of that name, or no rule at all.
pub fn selected_rules(cfg: &Config, name: Option<&str>) -> Result<Vec<usize>> {
    if cfg.expiry.is_empty() {
        return Err(Error::Usage(
            "the config has no [[expiry]] rule; add one (name, store, select, delete, releases) to expire soft-deleted rows".into(),
        ));
    }
    match name {
        None => Ok((0..cfg.expiry.len()).collect()),
        Some(n) => cfg
            .expiry
            .iter()
            .position(|x| x.name == n)
            .map(|i| vec![i])
            .ok_or_else(|| {
                let names: Vec<&str> = cfg.expiry.iter().map(|x| x.name.as_str()).collect();
                Error::Usage(format!(
                    "no expiry rule named `{n}`; the config has: {}",
                    names.join(", ")
                ))
            }),
    }
}

async fn connect(
    cfg: &Config,
    dbs: &mut HashMap<usize, std::result::Result<Db, String>>,
    database: usize,
) -> std::result::Result<Db, String> {
    if let Some(db) = dbs.get(&database) {
        return db.clone();
    }
    let db = Db::connect(&cfg.databases[database], 2)
        .await
        .map_err(|e| e.to_string());
    dbs.insert(database, db.clone());
    db
}

fn config_error(cfg: &Config, msg: String) -> Error {
    Error::Config {
        path: cfg
            .path
            .as_ref()
            .map_or_else(|| "assetgc.toml".to_string(), |p| p.display().to_string()),
        line: None,
        msg,
    }
}

/// `Err(Error::Config)` when the rule's queries lack a column; `Ok(Err(why))` when a query
/// cannot run (the rule is skipped and the run is incomplete).
async fn validate(
    cfg: &Config,
    dbs: &mut HashMap<usize, std::result::Result<Db, String>>,
    x: &ExpiryConfig,
    db: &Db,
    dry_run: bool,
) -> Result<std::result::Result<(Vec<String>, Layout, IdBinding), String>> {
    let database = &cfg.databases[x.database];
    // A dry run runs only `select`; what else it asks of the database reads (LIMIT 1 probes,
    // prepared statements), so a read-only database serves it.
    if database.sqlite_read_only && !dry_run {
        return Err(config_error(
            cfg,
            format!(
                "expiry rule `{}`: database {} is opened read-only (mode=ro), and `expire` removes rows; use a URL without mode=ro for it",
                x.name, database.name
            ),
        ));
    }
    let probe = match db.probe(&x.select).await {
        Ok(p) => p,
        Err(e) => {
            return Ok(Err(format!(
                "expiry rule `{}`: `select` failed: {e}",
                x.name
            )));
        }
    };
    let layout = Layout::of(&probe.columns, &x.name).map_err(|m| config_error(cfg, m))?;
    for &r in &x.releases {
        let rc = &cfg.references[r];
        let rdb = match connect(cfg, dbs, rc.database).await {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        let columns = match rdb.probe(&rc.query).await {
            Ok(p) => p.columns,
            Err(e) => {
                return Ok(Err(format!(
                    "expiry rule `{}`: the query of released reference `{}` failed: {e}",
                    x.name, rc.name
                )));
            }
        };
        if !columns.iter().any(|c| c.eq_ignore_ascii_case("id")) {
            return Err(config_error(
                cfg,
                format!(
                    "expiry rule `{}`: reference `{}` is in `releases` but its query returns no `id` column (it returns: {}); select the row's primary key as `id`, so that only the expiring row stops protecting its files",
                    x.name,
                    rc.name,
                    columns.join(", ")
                ),
            ));
        }
    }
    // Prepared before any file goes: a row whose `delete` cannot run would lose its files and stay.
    let binding = match db.id_binding(&x.select, &x.delete).await {
        Ok(Ok(b)) => b,
        Ok(Err(why)) => {
            return Err(config_error(
                cfg,
                format!("expiry rule `{}`: {why}", x.name),
            ));
        }
        Err(e) => {
            return Ok(Err(format!(
                "expiry rule `{}`: `delete` cannot be prepared: {e}",
                x.name
            )));
        }
    };
    Ok(Ok((probe.columns, layout, binding)))
}

async fn run_rule(
    app: &App,
    x: &ExpiryConfig,
    p: &Prepared,
    dry_run: bool,
    report: &mut RuleReport,
) -> Result<()> {
    let cfg = std::sync::Arc::clone(&app.cfg);
    let mut warnings = Vec::new();
    let db = &p.db;
    let rows = match select_rows(db, x, &cfg, &p.columns, &p.layout, &mut warnings).await {
        Ok(mut r) => {
            for row in r.values_mut().filter(|r| r.problem.is_none()) {
                row.problem = p.binding.check(&row.id).err();
            }
            r
        }
        Err(e) => {
            report.warnings = warnings;
            report.stop(format!("expiry rule `{}`: `select` failed: {e}", x.name));
            return Ok(());
        }
    };
    report.warnings = warnings;
    let mut groups: BTreeMap<String, Figures> = BTreeMap::new();
    for row in rows.values() {
        groups.entry(row.grp.clone()).or_default().rows_selected += 1;
        if let Some(why) = &row.problem {
            report.warnings.push(format!(
                "expiry rule `{}`: row {} stays and keeps its files: {why}",
                x.name, row.id
            ));
            leave(report, &mut groups, row, why.clone());
        }
    }
    let ready: Vec<&RowPlan> = rows.values().filter(|r| r.problem.is_none()).collect();
    if dry_run {
        let mut sample = Vec::new();
        for row in &ready {
            let g = groups.entry(row.grp.clone()).or_default();
            g.rows_expired += 1;
            g.files += row.files.len() as u64;
            if sample.len() < SAMPLE {
                sample.push(PlannedRow {
                    id: row.id.clone(),
                    grp: row.grp.clone(),
                    files: row.files.iter().map(file).collect(),
                });
            }
        }
        report.sample = Some(sample);
        finish(report, groups);
        return Ok(());
    }
    let ids: Vec<String> = ready.iter().map(|r| r.id.clone()).collect();
    let before = newest(app, &x.name, &ids).await?;
    process_files(app, x, &ready, &before, report).await?;
    let after = newest(app, &x.name, &ids).await?;
    remove_rows(
        db,
        x,
        p.binding,
        &ready,
        &before,
        &after,
        &mut groups,
        report,
    )
    .await;
    finish(report, groups);
    Ok(())
}

/// Queues the rows' files that have no entry yet, retries the failed ones, and lets the worker
/// process the rule's due entries.
async fn process_files(
    app: &App,
    x: &ExpiryConfig,
    ready: &[&RowPlan],
    before: &Newest,
    report: &mut RuleReport,
) -> Result<()> {
    let cfg = std::sync::Arc::clone(&app.cfg);
    let now = Utc::now();
    let mut fresh: Vec<NewEntry> = Vec::new();
    let mut failed: Vec<i64> = Vec::new();
    for row in ready {
        for f in &row.files {
            let found = before.get(&(row.id.clone(), f.clone()));
            match file_state(found) {
                FileState::Unqueued => fresh.push(NewEntry {
                    object: f.clone(),
                    reason: Reason::Expire,
                    rule: x.name.clone(),
                    row_id: row.id.clone(),
                    client_id: String::new(),
                    scan_id: None,
                    uploaded_at: None,
                    next_attempt_at: now,
                    original_key: None,
                }),
                FileState::Failed(_) => failed.extend(found.map(|(e, _)| e.id)),
                _ => {}
            }
        }
    }
    let mut worker = WorkerFigures::default();
    for chunk in fresh.chunks(ENQUEUE_CHUNK) {
        let (added, _) = app.state.enqueue(ACTOR, chunk).await?;
        worker.queued += added;
    }
    if !fresh.is_empty() {
        let store = &cfg.stores[x.store];
        app.state
            .stamp_fingerprint(&store.name, &crate::overlap::fingerprint(store))
            .await?;
    }
    if !failed.is_empty() {
        match super::queue::retry(app, &Selection::Ids(failed), ACTOR).await {
            Ok(changed) => {
                worker.retried = changed
                    .iter()
                    .filter(|c| **c == crate::domain::queue::Changed::Retried)
                    .count() as u64;
            }
            Err(e) => report.warnings.push(format!(
                "expiry rule `{}`: failed entries could not be retried ({e}); their rows stay",
                x.name
            )),
        }
    }
    let mut opts = RunOptions::from_config(&cfg, ACTOR);
    opts.only_rule = Some((Reason::Expire, x.name.clone()));
    let totals = queue::run(app, &opts, &|_: &Totals| {}).await?;
    worker.processed = totals.claimed;
    worker.deleted = totals.deleted;
    worker.quarantined = totals.quarantined;
    worker.already_gone = totals.already_gone;
    worker.kept_shared = totals.referenced;
    worker.retrying = totals.retrying;
    worker.failed = totals.failed;
    if totals.failed > 0 {
        report.stop(format!(
            "{} file deletion{} failed for good in this run (`assetgc queue list --failed`); their rows stay and the next `expire` retries them",
            totals.failed,
            if totals.failed == 1 { "" } else { "s" }
        ));
    }
    if let Some(why) = &totals.budget_stop {
        report.stop(format!("the API budget stopped the worker: {why}"));
    }
    if totals.nothing_reached() {
        report.unreachable = true;
        report.stop(format!(
            "nothing could be reached: {}",
            totals.errors.first().cloned().unwrap_or_default()
        ));
    }
    report.worker = Some(worker);
    Ok(())
}

/// Removes each row whose files are all settled and that `select` still returns, each in a
/// transaction of its own; says why of every other.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn remove_rows(
    db: &Db,
    x: &ExpiryConfig,
    binding: IdBinding,
    ready: &[&RowPlan],
    before: &Newest,
    after: &Newest,
    groups: &mut BTreeMap<String, Figures>,
    report: &mut RuleReport,
) {
    // A row is removed only while `select` still returns it: one restored meanwhile stays.
    let still = match selected_ids(db, x).await {
        Ok(s) => Some(s),
        Err(e) => {
            report.stop(format!(
                "expiry rule `{}`: `select` failed before the rows' removal: {e}; no row was removed",
                x.name
            ));
            None
        }
    };
    for row in ready {
        let g = groups.entry(row.grp.clone()).or_default();
        let why_not = file_figures(g, row, before, after);
        if let Some(why) = why_not {
            leave_counted(report, g, row, why);
            continue;
        }
        let Some(still) = &still else {
            leave_counted(
                report,
                g,
                row,
                "its files are settled; the row is removed by the next run".into(),
            );
            continue;
        };
        if !still.contains(&row.id) {
            leave_counted(
                report,
                g,
                row,
                "`select` no longer returns it (restored?): the row stays".into(),
            );
            continue;
        }
        match db.delete_row(&x.delete, &row.id, binding).await {
            Ok(1) => {
                g.rows_expired += 1;
                g.files += row.files.len() as u64;
            }
            Ok(_) => leave_counted(
                report,
                g,
                row,
                "`delete` removed no row (gone already, or its condition no longer holds)".into(),
            ),
            Err(e) => {
                g.failures += 1;
                report.complete = false;
                report.error.get_or_insert_with(|| {
                    format!("expiry rule `{}`: `delete` failed: {e}", x.name)
                });
                leave_counted(report, g, row, format!("`delete` failed: {e}"));
            }
        }
    }
}

/// Counts what became of a row's files in this run; why the row must stay, when it must.
fn file_figures(g: &mut Figures, row: &RowPlan, before: &Newest, after: &Newest) -> Option<String> {
    let mut why_not: Option<String> = None;
    for f in &row.files {
        let k = (row.id.clone(), f.clone());
        let now_state = file_state(after.get(&k));
        let was = file_state(before.get(&k));
        if let FileState::Settled(s) = now_state {
            // Counted once: in the run that settled it.
            if !matches!(was, FileState::Settled(_)) {
                match s {
                    Settled::Deleted => g.files_deleted += 1,
                    Settled::AlreadyGone => g.already_gone += 1,
                    Settled::KeptShared => g.kept_shared += 1,
                }
            }
            continue;
        }
        let why = match now_state {
            FileState::Unqueued => format!(
                "file {} is queued by another entry; the row waits until that entry is done",
                describe(f)
            ),
            FileState::Failed(e) => {
                g.failures += 1;
                format!("the deletion of {} failed: {e}", describe(f))
            }
            FileState::Waiting { state, due, error } => match error {
                Some(e) => {
                    g.failures += 1;
                    format!(
                        "the deletion of {} failed ({e}); retried at {due}",
                        describe(f)
                    )
                }
                None if state == QueueState::Claimed => {
                    format!("{} is being deleted by another worker", describe(f))
                }
                None => format!("{} is queued, due at {due}", describe(f)),
            },
            FileState::Dropped(o) => format!(
                "{} was dropped from the queue ({o}) and is never deleted by this rule; delete the row yourself if it should go",
                describe(f)
            ),
            FileState::Settled(_) => continue,
        };
        why_not.get_or_insert(why);
    }
    why_not
}

fn file(o: &ObjectId) -> File {
    File {
        resource_type: o.resource_type,
        key: o.key.clone(),
    }
}

fn describe(o: &ObjectId) -> String {
    if o.resource_type == ResourceType::Plain {
        o.key.clone()
    } else {
        format!("{} {}", o.resource_type.as_str(), o.key)
    }
}

fn leave(
    report: &mut RuleReport,
    groups: &mut BTreeMap<String, Figures>,
    row: &RowPlan,
    why: String,
) {
    let g = groups.entry(row.grp.clone()).or_default();
    leave_counted(report, g, row, why);
}

fn leave_counted(report: &mut RuleReport, g: &mut Figures, row: &RowPlan, why: String) {
    g.rows_left += 1;
    report.left.push(LeftRow {
        id: row.id.clone(),
        grp: row.grp.clone(),
        why,
    });
}

fn finish(report: &mut RuleReport, groups: BTreeMap<String, Figures>) {
    let mut totals = Figures::default();
    for f in groups.values() {
        totals.add(f);
    }
    report.totals = totals;
    report.groups = groups
        .into_iter()
        .map(|(grp, figures)| GroupReport { grp, figures })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn a_select_needs_an_id_and_a_key_column() {
        assert!(
            Layout::of(&cols(&["key", "grp"]), "t")
                .unwrap_err()
                .contains("no `id`")
        );
        assert!(
            Layout::of(&cols(&["id", "grp", "keys"]), "t")
                .unwrap_err()
                .contains("no key column")
        );
        let l = Layout::of(&cols(&["ID", "Key", "key_video", "key_thumb", "grp"]), "t")
            .expect("a layout");
        assert_eq!(l.id, 0);
        assert_eq!(l.grp, Some(4));
        assert_eq!(
            l.keys.iter().map(|(i, _, t)| (*i, *t)).collect::<Vec<_>>(),
            [(1, None), (2, Some(ResourceType::Video)), (3, None)]
        );
    }
}
