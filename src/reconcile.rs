//! The anti-join: store listings × reference queries → orphans, missing, too recent (SPEC §4).
//!
//! Each store gets one task that owns its reference set. Reference queries stream rows into it
//! while the store is listed; listing pages that arrive before the reference set is complete are
//! kept as compact keys, and every later page is classified as it arrives, so memory is the
//! reference set plus what the listing ran ahead, never the bucket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use unicode_normalization::UnicodeNormalization;

use crate::config::{Config, ReferenceConfig, StoreConfig};
use crate::error::{Error, Result};
use crate::key::{KeyContext, KeyFormat, ResourceType};
use crate::refs::{Db, DbError};
use crate::store::{self, Ledger, ListOptions, Listed, Object, Store, StoreError};

/// Which objects are orphan candidates, and which rows are checked for missing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Days(u32),
    All,
    Since(DateTime<Utc>),
}

impl Window {
    pub fn cutoff(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Window::Days(d) => Some(now - chrono::Duration::days(i64::from(d))),
            Window::All => None,
            Window::Since(t) => Some(t),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Window::Days(1) => "last day".into(),
            Window::Days(d) => format!("last {d} days"),
            Window::All => "all objects".into(),
            Window::Since(t) => format!("since {}", crate::report::rfc3339(t)),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        match self {
            Window::Days(d) => serde_json::json!({ "days": d }),
            Window::All => serde_json::json!({ "all": true }),
            Window::Since(t) => serde_json::json!({ "since": crate::report::rfc3339(t) }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Both,
    OrphansOnly,
    MissingOnly,
}

impl Mode {
    fn orphans(self) -> bool {
        self != Mode::MissingOnly
    }
    fn missing(self) -> bool {
        self != Mode::OrphansOnly
    }
}

/// Called with a store's name and how many entries it has listed so far.
pub type Progress = Arc<dyn Fn(&str, u64) + Send + Sync>;

#[derive(Clone)]
pub struct ScanOptions {
    pub window: Window,
    pub mode: Mode,
    /// Names of the stores to scan; empty means all.
    pub stores: Vec<String>,
    pub now: DateTime<Utc>,
    pub progress: Option<Progress>,
    /// The API budgets of metered accounts (Cloudinary), loaded from the state database.
    pub ledger: Arc<Ledger>,
    /// Per store: the calls its last full listing cost (from the state database), weighed
    /// against look-ups on metered stores.
    pub list_costs: HashMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub store: String,
    pub key: String,
    pub resource_type: ResourceType,
    pub size: u64,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub url: Option<String>,
    /// The format the store reports (Cloudinary); else the key's extension is used.
    pub format: Option<String>,
}

impl Orphan {
    /// The report's `format` column: the store's word (Cloudinary), else the key's extension,
    /// lower-case.
    pub fn format(&self) -> String {
        if let Some(f) = &self.format {
            return f.clone();
        }
        let name = self.key.rsplit('/').next().unwrap_or(&self.key);
        match name.rfind('.') {
            Some(i) if i > 0 && i + 1 < name.len() => name[i + 1..].to_ascii_lowercase(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub reference: String,
    pub reference_index: usize,
    pub record_id: Option<String>,
    pub title: Option<String>,
    pub owner: Option<String>,
    pub media_type: Option<String>,
    pub key: String,
    pub created_at: Option<DateTime<Utc>>,
    pub status: String,
    pub link: Option<String>,
}

impl Missing {
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }
}

#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub name: String,
    pub location: String,
    pub reachable: bool,
    /// Entries the listing returned, in the window or not.
    pub listed: u64,
    pub objects_scanned: u64,
    pub valid: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub too_recent: u64,
    pub ignored: u64,
    pub unrepresentable: u64,
    pub list_time: Duration,
    pub api_calls: u64,
    /// `Some(n)`: n referenced keys were confirmed with point look-ups instead of a listing.
    pub lookups: Option<u64>,
    /// Referenced keys were confirmed with a full listing because look-ups would cost more.
    pub listed_instead: bool,
    /// Calls the full listings of this run cost (metered stores), for next time's choice.
    pub full_list_calls: Option<u64>,
    pub complete: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ReferenceStats {
    pub name: String,
    pub store: String,
    pub rows: u64,
    pub values: u64,
    pub unparsed: u64,
    pub query_time: Duration,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Findings {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub window: Window,
    pub mode: Mode,
    pub stores: Vec<StoreStats>,
    pub references: Vec<ReferenceStats>,
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    pub warnings: Vec<String>,
    pub complete: bool,
    /// Usage of the API budgets this run drew on.
    pub budgets: Vec<store::budget::Usage>,
}

impl Findings {
    pub fn has_findings(&self) -> bool {
        !self.orphans.is_empty() || !self.missing.is_empty()
    }

    pub fn duration(&self) -> Duration {
        (self.finished_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }
}

type OpenedStore = std::result::Result<Arc<dyn Store>, store::StoreError>;

/// Runs a scan. `Err` only when nothing useful could be done (every store or database out of
/// reach) or the options are wrong; partial failures come back as warnings with `complete = false`.
pub async fn scan(cfg: &Config, opts: ScanOptions) -> Result<Findings> {
    let started_at = opts.now;
    for name in &opts.stores {
        if !cfg.stores.iter().any(|s| &s.name == name) {
            return Err(Error::Usage(format!(
                "--store {name}: no such store in the config (stores: {})",
                cfg.stores
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let selected: Vec<usize> = (0..cfg.stores.len())
        .filter(|&i| opts.stores.is_empty() || opts.stores.contains(&cfg.stores[i].name))
        .collect();
    if selected.is_empty() {
        return Err(Error::Usage(
            "the config has no [stores.*] section: add one, e.g. [stores.media] url = \"./media\""
                .into(),
        ));
    }
    let refs: Vec<usize> = (0..cfg.references.len())
        .filter(|&r| selected.contains(&cfg.references[r].store))
        .collect();
    let mut warnings = Vec::new();
    let mut complete = true;

    // Databases and stores are reached concurrently; a run goes on with what answers.
    let db_indices: Vec<usize> = {
        let mut v: Vec<usize> = refs.iter().map(|&r| cfg.references[r].database).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let db_futs = db_indices.iter().map(|&d| {
        let uses = refs
            .iter()
            .filter(|&&r| cfg.references[r].database == d)
            .count();
        let db_cfg = cfg.databases[d].clone();
        async move {
            (
                d,
                Db::connect(&db_cfg, u32::try_from(uses).unwrap_or(4).clamp(1, 8)).await,
            )
        }
    });
    let store_handles: Vec<(usize, OpenedStore)> = selected
        .iter()
        .map(|&s| (s, store::open(&cfg.stores[s], &opts.ledger)))
        .collect();
    let store_futs = store_handles.iter().map(|(s, st)| async move {
        let checked = match st {
            // A metered store's first real call tells as much, and a check would cost a call.
            Ok(st) if st.capabilities().checked_by_first_call => Ok(()),
            Ok(st) => st.check().await,
            Err(e) => Err(StoreError::unreachable(e.to_string())),
        };
        (*s, checked)
    });
    let (db_results, store_checks) = futures::join!(
        futures::future::join_all(db_futs),
        futures::future::join_all(store_futs)
    );

    let mut dbs: HashMap<usize, Db> = HashMap::new();
    let mut db_errors = Vec::new();
    for (d, r) in db_results {
        match r {
            Ok(db) => {
                dbs.insert(d, db);
            }
            Err(e) => db_errors.push(e.to_string()),
        }
    }
    if !db_indices.is_empty() && dbs.is_empty() {
        return Err(Error::Unreachable(db_errors.join("; ")));
    }
    let mut store_errors = Vec::new();
    let mut reachable: Vec<bool> = vec![false; cfg.stores.len()];
    for (s, r) in store_checks {
        match r {
            Ok(()) => reachable[s] = true,
            Err(e) => store_errors.push(format!("store {}: {e}", cfg.stores[s].name)),
        }
    }
    if selected.iter().all(|&s| !reachable[s]) {
        return Err(Error::Unreachable(store_errors.join("; ")));
    }
    if !db_errors.is_empty() || !store_errors.is_empty() {
        complete = false;
        warnings.extend(db_errors);
        warnings.extend(store_errors.iter().cloned());
    }
    for &s in &selected {
        if !refs.iter().any(|&r| cfg.references[r].store == s) {
            warnings.push(format!(
                "store {} has no [[references]]: every object in it is reported as an orphan",
                cfg.stores[s].name
            ));
        }
    }

    let cutoff = opts.window.cutoff(opts.now);
    let mut store_tasks = Vec::new();
    let mut ref_tasks = Vec::new();
    for (s, handle) in store_handles {
        let Ok(handle) = handle else { continue };
        if !reachable[s] {
            continue;
        }
        let (tx, rx) = mpsc::channel::<RefBatch>(16);
        for &r in refs.iter().filter(|&&r| cfg.references[r].store == s) {
            let rc = cfg.references[r].clone();
            let ctx = cfg.stores[s].key_context(&rc.key_prefix);
            let store_name = cfg.stores[s].name.clone();
            let Some(db) = dbs.get(&rc.database).cloned() else {
                ref_tasks.push(tokio::spawn(async move {
                    ReferenceStats {
                        name: rc.name.clone(),
                        store: store_name,
                        error: Some("its database is unreachable".into()),
                        ..ReferenceStats::default()
                    }
                }));
                continue;
            };
            let tx = tx.clone();
            let mode = opts.mode;
            ref_tasks.push(tokio::spawn(async move {
                let mut stats = run_reference(&db, r, &rc, ctx, cutoff, mode, &tx).await;
                stats.store = store_name;
                stats
            }));
        }
        drop(tx);
        let store_cfg = cfg.stores[s].clone();
        let opts = opts.clone();
        let exclude = quarantine_prefixes(cfg, s);
        store_tasks.push(tokio::spawn(async move {
            reconcile_store(&store_cfg, handle.as_ref(), rx, &opts, cutoff, exclude).await
        }));
    }

    let mut references = Vec::new();
    for t in ref_tasks {
        let stats = t
            .await
            .map_err(|e| Error::State(format!("reference task failed: {e}")))?;
        references.push(stats);
    }
    let mut stores = Vec::new();
    let mut orphans = Vec::new();
    let mut missing = Vec::new();
    for t in store_tasks {
        let out = t
            .await
            .map_err(|e| Error::State(format!("store task failed: {e}")))?;
        if !out.stats.reachable {
            reachable[selected
                .iter()
                .copied()
                .find(|&s| cfg.stores[s].name == out.stats.name)
                .unwrap_or_default()] = false;
            store_errors.extend(out.warnings.iter().cloned());
        }
        complete &= out.stats.complete;
        warnings.extend(out.warnings);
        stores.push(out.stats);
        orphans.extend(out.orphans);
        missing.extend(out.missing);
    }
    for &s in &selected {
        if !reachable[s] && !stores.iter().any(|st| st.name == cfg.stores[s].name) {
            stores.push(StoreStats {
                name: cfg.stores[s].name.clone(),
                location: cfg.stores[s].location.describe(),
                ..StoreStats::default()
            });
        }
    }
    // A store refused at its first call (metered stores are checked that way) is out of reach
    // like one that failed its check: when none answered, nothing useful was done.
    if selected.iter().all(|&s| !reachable[s]) {
        for db in dbs.values() {
            db.close().await;
        }
        return Err(Error::Unreachable(store_errors.join("; ")));
    }
    warnings.extend(opts.ledger.warnings());
    for r in &references {
        warnings.extend(r.warnings.iter().cloned());
        if r.unparsed > NAMED_WARNINGS {
            warnings.push(format!(
                "reference `{}`: {} more values could not be read",
                r.name,
                r.unparsed - NAMED_WARNINGS
            ));
        }
        if let Some(e) = &r.error {
            complete = false;
            warnings.push(format!("reference `{}` failed: {e}", r.name));
        } else if r.unparsed * 100 > r.values {
            complete = false;
            warnings.push(format!(
                "reference `{}`: {} of {} values could not be read (more than 1 %): check its key_format",
                r.name, r.unparsed, r.values
            ));
        }
    }
    for db in dbs.values() {
        db.close().await;
    }

    orphans.sort_by(|a, b| {
        (&a.store, &a.key, a.resource_type).cmp(&(&b.store, &b.key, b.resource_type))
    });
    missing.sort_by(|a, b| {
        status_rank(&a.status)
            .cmp(&status_rank(&b.status))
            .then(a.reference_index.cmp(&b.reference_index))
            .then_with(|| natural_cmp(a.record_id.as_deref(), b.record_id.as_deref()))
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(Findings {
        started_at,
        finished_at: Utc::now().max(started_at),
        window: opts.window,
        mode: opts.mode,
        stores,
        references,
        orphans,
        missing,
        warnings,
        complete,
        budgets: opts.ledger.usage(Utc::now()),
    })
}

/// The quarantine prefixes to leave out of a store's listing: its own, and those of every other
/// folder store that lies inside it (SPEC §6 invariant 4).
fn quarantine_prefixes(cfg: &Config, s: usize) -> Vec<String> {
    let me = &cfg.stores[s];
    let mut out = Vec::new();
    if let Some(prefix) = store::trash_prefix(me) {
        out.push(prefix);
    }
    for (i, other) in cfg.stores.iter().enumerate() {
        if i == s {
            continue;
        }
        if let (Some(q), Some(rel)) = (&other.quarantine, me.location.contains(&other.location))
            && !rel.is_empty()
        {
            out.push(format!("{rel}{}", q.prefix));
        }
    }
    out
}

fn status_rank(status: &str) -> u8 {
    match status {
        "ACTIVE" => 0,
        "DELETED" => 2,
        _ => 1,
    }
}

/// Record ids compare as numbers when both are integers, else as text.
fn natural_cmp(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    match (
        a.and_then(|a| a.parse::<i128>().ok()),
        b.and_then(|b| b.parse::<i128>().ok()),
    ) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(&b),
    }
}

/// Reference rows parsed by a query's task, held compactly: keys end to end in one string, and
/// for rows checked for missing files, their report fields encoded in one buffer.
#[derive(Default)]
struct RefBatch {
    reference: usize,
    name: Arc<str>,
    keys: String,
    key_ends: Vec<usize>,
    /// Per key: the index of its row in `rows`, or `NO_ROW` when that row is not checked for missing.
    key_rows: Vec<u32>,
    /// Per row checked for missing: where its fields start in `details`.
    rows: Vec<usize>,
    details: Vec<u8>,
}

const NO_ROW: u32 = u32::MAX;
/// The type part of a Cloudinary reference that names no resource type: it matches the
/// public_id in every type (SPEC §2).
const ANY_TYPE: &str = "*";

/// The identity of a listed object in the reference set: the key, or for Cloudinary
/// `type/public_id` (resource types have no `/`, so the first one splits it).
fn ident(rt: ResourceType, key: &str) -> std::borrow::Cow<'_, str> {
    if rt == ResourceType::Plain {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(format!("{}/{key}", rt.as_str()))
    }
}

/// A typed identity back into its resource type (`None` for `*`) and public_id.
fn split_ident(ident: &str) -> (Option<ResourceType>, &str) {
    match ident.split_once('/') {
        Some((t, key)) => (ResourceType::parse_cloudinary(t), key),
        None => (None, ident),
    }
}
const COLUMNS: [&str; 7] = [
    "key",
    "id",
    "title",
    "owner",
    "status",
    "created_at",
    "media_type",
];
const BATCH_KEYS: usize = 4096;
const NAMED_WARNINGS: u64 = 5;

/// Turns one reference's rows into batches; runs on the query's own thread or task.
#[derive(Default)]
struct RowParser {
    index: usize,
    name: Arc<str>,
    format: KeyFormat,
    ctx: KeyContext,
    link: Option<crate::config::LinkTemplate>,
    link_cols: Vec<String>,
    cutoff: Option<DateTime<Utc>>,
    missing: bool,
    /// A Cloudinary store: keys carry their resource type (see [`ident`]).
    typed: bool,
    stats: ReferenceStats,
    batch: RefBatch,
    link_buf: String,
}

impl RowParser {
    fn new(
        index: usize,
        rc: &ReferenceConfig,
        ctx: KeyContext,
        cutoff: Option<DateTime<Utc>>,
        mode: Mode,
    ) -> Self {
        let name: Arc<str> = Arc::from(rc.name.as_str());
        RowParser {
            index,
            name: name.clone(),
            format: rc.key_format.clone(),
            typed: ctx.cloud_name.is_some(),
            ctx,
            link: rc.link.clone(),
            link_cols: rc
                .link
                .as_ref()
                .map(|l| l.columns().map(str::to_string).collect())
                .unwrap_or_default(),
            cutoff,
            missing: mode.missing(),
            stats: ReferenceStats {
                name: rc.name.clone(),
                ..ReferenceStats::default()
            },
            batch: RefBatch {
                reference: index,
                name,
                ..RefBatch::default()
            },
            link_buf: String::new(),
        }
    }

    fn wanted(&self) -> Vec<String> {
        COLUMNS
            .iter()
            .map(|c| (*c).to_string())
            .chain(self.link_cols.iter().cloned())
            .collect()
    }

    fn unparsed(&mut self, cols: &[Option<&str>], value: &str, reason: &str) {
        self.stats.unparsed += 1;
        if self.stats.unparsed <= NAMED_WARNINGS {
            let id = cols[1].unwrap_or("?");
            self.stats.warnings.push(format!(
                "reference `{}`: row id {id}: cannot read `{}`: {reason}",
                self.name,
                shorten(value)
            ));
        }
    }

    fn push_key(&mut self, key: &str) {
        self.batch.keys.push_str(key);
        self.batch.key_ends.push(self.batch.keys.len());
        self.batch.key_rows.push(NO_ROW);
    }

    /// A Cloudinary key: `type/public_id`, or `*/public_id` when the value names no type.
    fn push_typed(&mut self, rt: Option<ResourceType>, key: &str) {
        let keys = &mut self.batch.keys;
        keys.push_str(match rt {
            Some(ResourceType::Plain) | None => ANY_TYPE,
            Some(t) => t.as_str(),
        });
        keys.push('/');
        keys.push_str(key);
        self.batch.key_ends.push(keys.len());
        self.batch.key_rows.push(NO_ROW);
    }
}

impl crate::refs::RowSink for RowParser {
    type Batch = RefBatch;

    fn row(&mut self, cols: &[Option<&str>]) -> Option<RefBatch> {
        self.stats.rows += 1;
        let value = cols[0].filter(|v| !v.trim().is_empty())?;
        let first_key = self.batch.key_rows.len();
        if matches!(self.format, KeyFormat::Path) && !self.typed {
            // The common case, without allocating: the key is a slice of the value.
            match crate::key::path_key(value, &self.ctx.key_prefix) {
                Ok(Some(key)) => {
                    self.stats.values += 1;
                    self.push_key(key);
                }
                Ok(None) => {}
                Err(reason) => {
                    self.stats.values += 1;
                    self.unparsed(cols, value, reason);
                }
            }
        } else {
            let parsed = self.format.parse(value, cols[6], &self.ctx);
            self.stats.values += (parsed.keys.len() + parsed.unparsed.len()) as u64;
            for reason in &parsed.unparsed {
                self.unparsed(cols, value, reason);
            }
            for k in &parsed.keys {
                if self.typed {
                    self.push_typed(k.resource_type, &k.key);
                } else {
                    // Other stores have no resource types: the key alone is the identity.
                    self.push_key(&k.key);
                }
            }
        }
        if self.batch.key_rows.len() == first_key {
            return None;
        }
        let created_at = if self.missing {
            cols[5].and_then(crate::refs::parse_time)
        } else {
            None
        };
        let in_window = match (self.cutoff, created_at) {
            (Some(c), Some(t)) => t >= c,
            _ => true,
        };
        if self.missing && in_window {
            let row = u32::try_from(self.batch.rows.len()).unwrap_or(NO_ROW);
            let detail_at = self.batch.details.len();
            let status = cols[4]
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_uppercase);
            self.link_buf.clear();
            if let Some(link) = &self.link {
                for part in &link.parts {
                    match part {
                        crate::config::LinkPart::Text(t) => self.link_buf.push_str(t),
                        crate::config::LinkPart::Column(c) => {
                            let pos = COLUMNS
                                .iter()
                                .copied()
                                .chain(self.link_cols.iter().map(String::as_str))
                                .position(|w| w.eq_ignore_ascii_case(c));
                            if let Some(v) = pos.and_then(|p| cols[p]) {
                                self.link_buf.push_str(v);
                            }
                        }
                    }
                }
            }
            let link = self.link.as_ref().map(|_| self.link_buf.as_str());
            let d = &mut self.batch.details;
            put_varint(d, self.index as u64);
            // Seconds since the epoch, zigzagged, plus one; zero when the row has no time.
            put_varint(
                d,
                created_at.map_or(0, |t| {
                    let s = t.timestamp();
                    ((s << 1) ^ (s >> 63)).cast_unsigned() + 1
                }),
            );
            for field in [
                cols[1],
                cols[2],
                cols[3],
                cols[6],
                Some(status.as_deref().unwrap_or("ACTIVE")),
                link,
            ] {
                put_field(d, field);
            }
            self.batch.rows.push(detail_at);
            for r in &mut self.batch.key_rows[first_key..] {
                *r = row;
            }
        }
        (self.batch.key_ends.len() >= BATCH_KEYS).then(|| self.take())
    }

    fn flush(&mut self) -> Option<RefBatch> {
        (!self.batch.key_ends.is_empty()).then(|| self.take())
    }
}

impl RowParser {
    fn take(&mut self) -> RefBatch {
        std::mem::replace(
            &mut self.batch,
            RefBatch {
                reference: self.index,
                name: self.name.clone(),
                ..RefBatch::default()
            },
        )
    }
}

async fn run_reference(
    db: &Db,
    index: usize,
    rc: &ReferenceConfig,
    ctx: KeyContext,
    cutoff: Option<DateTime<Utc>>,
    mode: Mode,
    tx: &mpsc::Sender<RefBatch>,
) -> ReferenceStats {
    let started = Instant::now();
    let parser = RowParser::new(index, rc, ctx, cutoff, mode);
    let wanted = parser.wanted();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let (parser, result) = db.feed(&rc.query, &wanted, parser, tx).await;
    let mut stats = parser.stats;
    stats.name.clone_from(&rc.name);
    if let Err(DbError::Query(e) | DbError::Unreachable(e)) = result {
        stats.error = Some(e);
    }
    stats.query_time = started.elapsed();
    stats
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The reference set of one store: every key any reference yields (interned, so each distinct
/// key is held once, contiguously), and for rows checked for missing files, a compact record.
struct RefSet {
    keys: crate::keyset::KeySet,
    seen: Vec<u64>,
    items: Vec<Item>,
    /// Per row checked for missing: where its fields start in `details`.
    rows: Vec<usize>,
    details: Vec<u8>,
    names: Vec<Arc<str>>,
    /// Reused by [`RefSet::mark_typed`].
    scratch: String,
}

#[derive(Clone, Copy)]
struct Item {
    sym: u32,
    row: u32,
}

impl RefSet {
    fn new() -> Self {
        RefSet {
            keys: crate::keyset::KeySet::new(),
            seen: Vec::new(),
            items: Vec::new(),
            rows: Vec::new(),
            details: Vec::new(),
            names: Vec::new(),
            scratch: String::new(),
        }
    }

    fn add(&mut self, batch: RefBatch) {
        if self.names.len() <= batch.reference {
            self.names.resize(batch.reference + 1, Arc::from(""));
        }
        self.names[batch.reference] = batch.name;
        let row_base = u32::try_from(self.rows.len()).unwrap_or(NO_ROW);
        let detail_base = self.details.len();
        self.details.extend_from_slice(&batch.details);
        self.rows
            .extend(batch.rows.into_iter().map(|at| detail_base + at));
        let mut start = 0;
        for (&end, &row) in batch.key_ends.iter().zip(&batch.key_rows) {
            let sym = self.keys.insert(&batch.keys[start..end]);
            start = end;
            if row != NO_ROW {
                self.items.push(Item {
                    sym,
                    row: row_base + row,
                });
            }
        }
    }

    fn finish(&mut self) {
        self.seen = vec![0; self.keys.len().div_ceil(64)];
    }

    /// Marks a listed key and says whether any reference yields it.
    fn mark(&mut self, key: &str) -> bool {
        match self.keys.find(key) {
            Some(sym) => {
                let i = sym as usize;
                self.seen[i / 64] |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }

    /// Marks a listed Cloudinary object under its type and under `*` (references without a
    /// type); says whether either is referenced.
    fn mark_typed(&mut self, rt: ResourceType, key: &str) -> bool {
        // Both identities are written into one reused buffer: no allocation per object.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.push_str(rt.as_str());
        buf.push('/');
        buf.push_str(key);
        let typed = self.mark(&buf);
        buf.clear();
        buf.push_str(ANY_TYPE);
        buf.push('/');
        buf.push_str(key);
        let any = self.mark(&buf);
        self.scratch = buf;
        typed | any
    }

    fn is_seen(&self, sym: u32) -> bool {
        let i = sym as usize;
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    fn key(&self, sym: u32) -> &str {
        self.keys.get(sym)
    }

    /// The report row of a reference whose key no object has. `key` is the identity; on a
    /// Cloudinary store it is split into the public_id and, when it names one, the type that
    /// goes into `media_type`.
    fn missing(&self, item: Item, key: String, typed: bool) -> Missing {
        let mut at = self.rows[item.row as usize];
        let reference = usize::try_from(take_varint(&self.details, &mut at)).unwrap_or(usize::MAX);
        let created_at = match take_varint(&self.details, &mut at) {
            0 => None,
            n => {
                let z = n - 1;
                let secs = (z >> 1).cast_signed() ^ -((z & 1).cast_signed());
                DateTime::from_timestamp(secs, 0)
            }
        };
        let mut next = || take_field(&self.details, &mut at);
        let record_id = next();
        let title = next();
        let owner = next();
        let mut media_type = next();
        let status = next().unwrap_or_else(|| "ACTIVE".into());
        let link = next();
        let key = if typed {
            let (rt, public_id) = split_ident(&key);
            if let Some(rt) = rt {
                media_type = Some(rt.as_str().to_string());
            }
            public_id.to_string()
        } else {
            key
        };
        Missing {
            reference: self
                .names
                .get(reference)
                .map(ToString::to_string)
                .unwrap_or_default(),
            reference_index: reference,
            record_id,
            title,
            owner,
            media_type,
            key,
            created_at,
            status,
            link,
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

fn take_varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = buf[*at];
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return n;
        }
    }
}

/// Length-prefixed optional text: a varint of len+1, 0 for none.
fn put_field(buf: &mut Vec<u8>, field: Option<&str>) {
    put_varint(buf, field.map_or(0, |f| f.len() as u64 + 1));
    if let Some(f) = field {
        buf.extend_from_slice(f.as_bytes());
    }
}

fn take_field(buf: &[u8], at: &mut usize) -> Option<String> {
    let n = take_varint(buf, at);
    if n == 0 {
        return None;
    }
    let len = usize::try_from(n - 1).unwrap_or(0);
    let s = String::from_utf8_lossy(&buf[*at..*at + len]).into_owned();
    *at += len;
    Some(s)
}

/// Listing entries that arrived before the reference set was complete, held compactly.
#[derive(Default)]
struct Pending {
    keys: String,
    ends: Vec<usize>,
    meta: Vec<(u64, Option<DateTime<Utc>>)>,
    others: Vec<Listed>,
}

impl Pending {
    fn push(&mut self, item: Listed) {
        match item {
            Listed::Object(o) if o.resource_type == ResourceType::Plain => {
                self.keys.push_str(&o.key);
                self.ends.push(self.keys.len());
                if o.size.is_some() || o.modified.is_some() {
                    self.meta.push((o.size.unwrap_or(0), o.modified));
                }
            }
            // Typed objects (Cloudinary) keep their format and URL: held whole.
            other => self.others.push(other),
        }
    }

    /// Classifies what was held, reading keys in place: only candidates are copied out.
    fn drain_into(self, c: &mut Classifier<'_>, set: &mut RefSet) {
        let with_meta = self.meta.len() == self.ends.len();
        for item in self.others {
            c.take(set, item);
        }
        let mut start = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            let (size, modified) = if with_meta {
                (Some(self.meta[i].0), self.meta[i].1)
            } else {
                (None, None)
            };
            c.object(set, &self.keys[start..end], size, modified);
            start = end;
        }
    }
}

struct StoreOutcome {
    stats: StoreStats,
    orphans: Vec<Orphan>,
    missing: Vec<Missing>,
    warnings: Vec<String>,
}

/// Classifies listed objects against a complete reference set.
struct Classifier<'a> {
    cfg: &'a StoreConfig,
    cutoff: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    stats: StoreStats,
    orphans: Vec<Orphan>,
    need_meta: Vec<String>,
    /// NFC form → listed identity, for listed keys that are not in NFC themselves.
    nfc: HashMap<String, String>,
    unrepresentable: Vec<String>,
    skipped: Vec<String>,
    orphans_wanted: bool,
}

impl Classifier<'_> {
    fn take(&mut self, set: &mut RefSet, item: Listed) {
        match item {
            Listed::Object(o) if o.resource_type != ResourceType::Plain => {
                self.typed_object(set, o);
            }
            Listed::Object(o) => self.object(set, o.key, o.size, o.modified),
            Listed::Unrepresentable(name) => {
                self.stats.listed += 1;
                self.stats.unrepresentable += 1;
                self.unrepresentable.push(name);
            }
            Listed::Skipped(why) => {
                self.stats.listed += 1;
                self.skipped.push(why);
            }
        }
    }

    /// One listed object; the key is copied only when it has to be kept (an orphan candidate).
    fn object<K: AsRef<str> + Into<String>>(
        &mut self,
        set: &mut RefSet,
        key: K,
        size: Option<u64>,
        modified: Option<DateTime<Utc>>,
    ) {
        self.stats.listed += 1;
        let k = key.as_ref();
        let referenced = set.mark(k);
        if !self.orphans_wanted {
            return;
        }
        self.note_nfc(k, k);
        match self.sort(referenced, k, modified) {
            Sorted::Done => {}
            Sorted::Candidate => self.candidate(Object::plain(key.into(), size, modified)),
            Sorted::NeedMeta => self.need_meta.push(key.into()),
        }
    }

    /// A Cloudinary object: referenced under its own type or by a reference without a type.
    fn typed_object(&mut self, set: &mut RefSet, o: Object) {
        self.stats.listed += 1;
        let referenced = set.mark_typed(o.resource_type, &o.key);
        if !self.orphans_wanted {
            return;
        }
        if !o.key.is_ascii() {
            let id = ident(o.resource_type, &o.key).into_owned();
            self.note_nfc(&o.key, &id);
        }
        match self.sort(referenced, &o.key, o.modified) {
            Sorted::Done => {}
            // Listings and look-ups of typed stores always carry the upload time.
            Sorted::Candidate | Sorted::NeedMeta => self.candidate(o),
        }
    }

    /// Only names not already in NFC are kept: a reference that differs from an NFC name
    /// only in normalisation finds it among the orphans instead (SPEC §2).
    fn note_nfc(&mut self, key: &str, id: &str) {
        if !key.is_ascii()
            && unicode_normalization::is_nfc_quick(key.chars())
                != unicode_normalization::IsNormalized::Yes
            && !unicode_normalization::is_nfc(key)
        {
            self.nfc.insert(id.nfc().collect(), id.to_string());
        }
    }

    /// Counts an object that is out of the window, referenced or ignored; else says what the
    /// candidate still needs.
    fn sort(&mut self, referenced: bool, key: &str, modified: Option<DateTime<Utc>>) -> Sorted {
        let in_window = match (self.cutoff, modified) {
            (Some(c), Some(t)) => t >= c,
            _ => true,
        };
        if !in_window {
            return Sorted::Done;
        }
        if referenced {
            self.stats.valid += 1;
            self.stats.objects_scanned += 1;
            Sorted::Done
        } else if self.cfg.ignore.matches(key) {
            self.stats.ignored += 1;
            self.stats.objects_scanned += 1;
            Sorted::Done
        } else if modified.is_some() {
            Sorted::Candidate
        } else {
            Sorted::NeedMeta
        }
    }

    fn candidate(&mut self, o: Object) {
        self.stats.objects_scanned += 1;
        let young = o.modified.is_some_and(|t| {
            self.now
                .signed_duration_since(t)
                .to_std()
                .unwrap_or_default()
                < self.cfg.min_age
        });
        if young {
            self.stats.too_recent += 1;
            return;
        }
        let size = o.size.unwrap_or(0);
        self.stats.orphans += 1;
        self.stats.orphan_bytes += size;
        let url = o.url.or_else(|| {
            self.cfg
                .public_url
                .as_deref()
                .map(|base| public_url(base, &o.key))
        });
        self.orphans.push(Orphan {
            store: self.cfg.name.clone(),
            key: o.key,
            resource_type: o.resource_type,
            size,
            uploaded_at: o.modified,
            url,
            format: o.format,
        });
    }
}

enum Sorted {
    Done,
    Candidate,
    NeedMeta,
}

/// Marks a listed entry as present without classifying it (a listing that only confirms
/// referenced keys).
fn mark_listed(set: &mut RefSet, item: &Listed) {
    if let Listed::Object(o) = item {
        if o.resource_type == ResourceType::Plain {
            set.mark(&o.key);
        } else {
            set.mark_typed(o.resource_type, &o.key);
        }
    }
}

/// An object's address under a store's `public_url`, each segment percent-encoded.
pub fn public_url(base: &str, key: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'\\')
        .add(b'^')
        .add(b'|');
    let mut url = base.trim_end_matches('/').to_string();
    for seg in key.split('/') {
        url.push('/');
        url.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    url
}

const LOOKUP_CHUNK: usize = 1000;
const LOOKUP_CONCURRENCY: usize = 4;

/// Point look-ups of one resource type in chunks, a few at once; results come back in any order.
fn look_up(
    store: &dyn Store,
    rt: ResourceType,
    keys: Vec<String>,
) -> impl futures::Stream<Item = Result<Vec<Option<Object>>, store::StoreError>> + '_ {
    let mut chunks = Vec::new();
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        chunks.push(keys.by_ref().take(LOOKUP_CHUNK).collect::<Vec<_>>());
    }
    futures::stream::iter(chunks)
        .map(move |chunk| async move { store.lookup_many(rt, &chunk).await })
        .buffer_unordered(LOOKUP_CONCURRENCY)
}

/// A failed call of a store: a warning and an incomplete store; an unreachable one when the
/// store says so (metered stores do when their first call is refused).
fn store_failed(c: &mut Classifier<'_>, warnings: &mut Vec<String>, what: &str, e: &StoreError) {
    c.stats.complete = false;
    if e.reached() {
        warnings.push(format!("store {}: {what}: {e}", c.cfg.name));
    } else {
        c.stats.reachable = false;
        warnings.push(format!("store {}: {e}", c.cfg.name));
    }
}

/// Confirms the referenced keys no listing of this run returned: by point look-ups while they
/// cost less than a listing (SPEC §4), else by listing the whole store (marks only).
async fn confirm_unseen(
    c: &mut Classifier<'_>,
    set: &mut RefSet,
    store: &dyn Store,
    opts: &ScanOptions,
    exclude: Vec<String>,
    warnings: &mut Vec<String>,
) {
    let mut syms: Vec<u32> = set
        .items
        .iter()
        .map(|i| i.sym)
        .filter(|&s| !set.is_seen(s))
        .collect();
    syms.sort_unstable();
    syms.dedup();
    if syms.is_empty() {
        return;
    }
    let caps = store.capabilities();
    let types = &caps.resource_types;
    let has_types = !types.contains(&ResourceType::Plain);
    // Keys per resource type; a Cloudinary reference without a type is looked up in each.
    let mut wanted: Vec<(ResourceType, Vec<String>)> =
        types.iter().map(|&t| (t, Vec::new())).collect();
    for &sym in &syms {
        let key = set.key(sym);
        if has_types {
            let (rt, public_id) = split_ident(key);
            for (t, keys) in &mut wanted {
                if rt.is_none_or(|rt| rt == *t) {
                    keys.push(public_id.to_string());
                }
            }
        } else {
            wanted[0].1.push(key.to_string());
        }
    }
    let keys: usize = wanted.iter().map(|(_, k)| k.len()).sum();
    let look = match caps.lookup_batch {
        Some(batch) => {
            let lookup_calls: u64 = wanted
                .iter()
                .map(|(_, k)| k.len().div_ceil(batch) as u64)
                .sum();
            // The last full listing's cost, else one call per 500 referenced keys a type.
            let list_calls = opts
                .list_costs
                .get(&c.cfg.name)
                .copied()
                .unwrap_or_else(|| {
                    (types.len() * set.keys.len().div_ceil(caps.list_page.max(1))) as u64
                });
            tracing::debug!(store = %c.cfg.name, lookup_calls, list_calls, "look-ups or a listing");
            lookup_calls <= list_calls
        }
        None => keys <= c.cfg.max_lookups,
    };
    if look {
        c.stats.lookups = Some(c.stats.lookups.unwrap_or(0) + keys as u64);
        for (rt, keys) in wanted {
            let mut looked = look_up(store, rt, keys);
            while let Some(result) = looked.next().await {
                match result {
                    Ok(objs) => {
                        for o in objs.into_iter().flatten() {
                            mark_listed(set, &Listed::Object(o));
                        }
                    }
                    Err(e) => store_failed(c, warnings, "look-up failed", &e),
                }
            }
        }
    } else {
        c.stats.listed_instead = true;
        let mut listing = store.list(ListOptions {
            with_meta: false,
            exclude_prefixes: exclude,
            since: None,
        });
        while let Some(page) = listing.next().await {
            match page {
                Ok(items) => items.iter().for_each(|i| mark_listed(set, i)),
                Err(e) => store_failed(c, warnings, "listing incomplete", &e),
            }
        }
    }
}

async fn reconcile_store(
    cfg: &StoreConfig,
    store: &dyn Store,
    mut refs_rx: mpsc::Receiver<RefBatch>,
    opts: &ScanOptions,
    cutoff: Option<DateTime<Utc>>,
    exclude: Vec<String>,
) -> StoreOutcome {
    let mut set = RefSet::new();
    let mut warnings = Vec::new();
    let caps = store.capabilities();
    let typed = !caps.resource_types.contains(&ResourceType::Plain);
    let mut c = Classifier {
        cfg,
        cutoff,
        now: opts.now,
        stats: StoreStats {
            name: cfg.name.clone(),
            location: store.describe(),
            reachable: true,
            complete: true,
            ..StoreStats::default()
        },
        orphans: Vec::new(),
        need_meta: Vec::new(),
        nfc: HashMap::new(),
        unrepresentable: Vec::new(),
        skipped: Vec::new(),
        orphans_wanted: opts.mode.orphans(),
    };

    let started = Instant::now();
    if opts.mode.orphans() {
        let since = cutoff.filter(|_| caps.lists_since);
        let mut listing = store.list(ListOptions {
            with_meta: cutoff.is_some(),
            exclude_prefixes: exclude.clone(),
            since,
        });
        let mut pending = Some(Pending::default());
        let mut refs_open = true;
        let mut list_open = true;
        while refs_open || list_open {
            tokio::select! {
                batch = refs_rx.recv(), if refs_open => match batch {
                    Some(b) => set.add(b),
                    None => {
                        refs_open = false;
                        tracing::debug!(store = %cfg.name, keys = set.keys.len(), elapsed = ?started.elapsed(), "reference set complete");
                        set.finish();
                        if let Some(p) = pending.take() {
                            p.drain_into(&mut c, &mut set);
                        }
                    }
                },
                page = listing.next(), if list_open => match page {
                    Some(Ok(items)) => {
                        if let Some(p) = &opts.progress {
                            p(&cfg.name, c.stats.listed + items.len() as u64 + pending.as_ref().map_or(0, |p| (p.ends.len() + p.others.len()) as u64));
                        }
                        match pending.as_mut() {
                            Some(p) => items.into_iter().for_each(|i| p.push(i)),
                            None => items.into_iter().for_each(|i| c.take(&mut set, i)),
                        }
                    }
                    Some(Err(e)) => store_failed(&mut c, &mut warnings, "listing incomplete", &e),
                    None => {
                        list_open = false;
                        tracing::debug!(store = %cfg.name, listed = c.stats.listed, pending = pending.as_ref().map_or(0, |p| p.ends.len()), elapsed = ?started.elapsed(), "listing complete");
                    }
                },
            }
        }
        // Objects listed without their size and time (`--all`): stat only the candidates.
        let need = std::mem::take(&mut c.need_meta);
        tracing::debug!(store = %cfg.name, candidates = need.len(), elapsed = ?started.elapsed(), "classified; looking up candidates");
        let mut looked = look_up(store, ResourceType::Plain, need);
        while let Some(result) = looked.next().await {
            match result {
                Ok(objs) => objs.into_iter().flatten().for_each(|o| c.candidate(o)),
                Err(e) => {
                    c.stats.complete = false;
                    warnings.push(format!("store {}: look-up failed: {e}", cfg.name));
                }
            }
        }
        drop(looked);
        // A listing limited to the window says nothing of older objects: referenced keys it did
        // not return are confirmed before they are called missing.
        if since.is_some() && opts.mode.missing() && c.stats.reachable {
            confirm_unseen(&mut c, &mut set, store, opts, exclude, &mut warnings).await;
        }
        tracing::debug!(store = %cfg.name, elapsed = ?started.elapsed(), "candidates looked up");
    } else {
        while let Some(b) = refs_rx.recv().await {
            set.add(b);
        }
        set.finish();
        confirm_unseen(&mut c, &mut set, store, opts, exclude, &mut warnings).await;
    }
    c.stats.list_time = started.elapsed();

    let mut missing = Vec::new();
    if opts.mode.missing() && c.stats.reachable && !c.stats.complete {
        // A listing or look-up that failed leaves unseen references unknown, not missing.
        let unseen = set.items.iter().filter(|i| !set.is_seen(i.sym)).count();
        if unseen > 0 {
            warnings.push(format!(
                "store {}: {unseen} reference(s) could not be confirmed and are not reported missing: the store's listing or look-ups did not finish",
                cfg.name
            ));
        }
    } else if opts.mode.missing() && c.stats.reachable {
        let mut orphan_by_nfc: HashMap<String, usize> = HashMap::new();
        for (i, o) in c.orphans.iter().enumerate() {
            if !o.key.is_ascii() {
                orphan_by_nfc.insert(ident(o.resource_type, &o.key).nfc().collect(), i);
            }
        }
        let mut drop_orphans = Vec::new();
        for &item in &set.items {
            if set.is_seen(item.sym) {
                continue;
            }
            let key = set.key(item.sym).to_string();
            if !key.is_ascii() {
                let norm: String = key.nfc().collect();
                let listed = c.nfc.get(&norm).cloned().or_else(|| {
                    orphan_by_nfc
                        .get(&norm)
                        .map(|&i| ident(c.orphans[i].resource_type, &c.orphans[i].key).into_owned())
                        .filter(|k| *k != key)
                });
                if let Some(listed) = listed {
                    warnings.push(format!(
                        "store {}: reference key `{key}` matches `{listed}` only after Unicode normalisation: neither orphan nor missing",
                        cfg.name
                    ));
                    if let Some(&i) = orphan_by_nfc.get(&norm) {
                        drop_orphans.push(i);
                    }
                    continue;
                }
            }
            missing.push(set.missing(item, key, typed));
        }
        drop_orphans.sort_unstable();
        drop_orphans.dedup();
        for i in drop_orphans.into_iter().rev() {
            let o = c.orphans.remove(i);
            c.stats.orphans -= 1;
            c.stats.orphan_bytes -= o.size;
            c.stats.objects_scanned -= 1;
        }
    }

    if !c.unrepresentable.is_empty() {
        warnings.push(format!(
            "store {}: {} name(s) that are not usable keys were skipped (never orphans): {}",
            cfg.name,
            c.unrepresentable.len(),
            name_list(&c.unrepresentable)
        ));
    }
    if !c.skipped.is_empty() {
        warnings.push(format!(
            "store {}: {} entr{} skipped: {}",
            cfg.name,
            c.skipped.len(),
            if c.skipped.len() == 1 { "y" } else { "ies" },
            name_list(&c.skipped)
        ));
    }
    let usage = store.usage();
    c.stats.api_calls = usage.api_calls;
    c.stats.full_list_calls = Some(usage.full_list_calls).filter(|&n| n > 0);
    StoreOutcome {
        stats: c.stats,
        orphans: c.orphans,
        missing,
        warnings,
    }
}

fn name_list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
