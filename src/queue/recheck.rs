//! SPEC §6 invariant 1: right before a batch is deleted, the references of its store — and of
//! every store whose location overlaps it — are asked about the batch's keys, and a key that is
//! referenced now is never deleted.
//!
//! `path` references are asked only about the batch: the query is wrapped as
//! `SELECT assetgc_q.key FROM (<query>) AS assetgc_q WHERE assetgc_q.key IN (…)` over every
//! stored form of each key (`k`, `/k`, `./k`, with `key_prefix` in front when set), the forms
//! bound as parameters. Every other format (and a query that cannot be wrapped) runs whole; its
//! normalised keys are reused for at most [`FULL_QUERY_TTL`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use unicode_normalization::UnicodeNormalization;

use crate::config::{Config, ReferenceConfig};
use crate::key::{KeyContext, KeyFormat, ResourceType, path_key};
use crate::refs::{Db, DbError, RowSink};

/// How long the keys of a whole reference query are reused.
pub const FULL_QUERY_TTL: Duration = Duration::from_mins(1);

type KeySet = HashSet<(Option<ResourceType>, String)>;
/// Keys of a whole query with the ids of the rows that yield them.
type RowSet = HashMap<(Option<ResourceType>, String), Vec<Option<String>>>;
/// How a key of one store reads in another (`None`: not under it).
type View<'v> = Box<dyn Fn(&str) -> Option<String> + 'v>;
/// Keys of a batch as one reference reads them: (batch index, type, key).
type Translated = Vec<(usize, ResourceType, String)>;

/// Which rows do not protect one entry's key (SPEC §6 invariant 1): only those the entry's rule
/// releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Every row of every reference protects.
    Nothing,
    /// A policy with `keep_referenced = false`: these references do not protect.
    References(Vec<usize>),
    /// An expiry rule (index into `[[expiry]]`): the row of a reference in its `releases` whose
    /// `id` is `row_id` does not protect, while the rule's `select` still returns it.
    Row { rule: usize, row_id: String },
}

impl Release {
    /// What an entry's `rule` releases, by the configuration of now: a rule no longer
    /// configured releases nothing.
    pub fn of(cfg: &Config, e: &crate::domain::queue::Entry) -> Release {
        use crate::domain::queue::Reason;
        if e.rule.is_empty() {
            return Release::Nothing;
        }
        match e.reason {
            Reason::Clean => cfg
                .policies
                .iter()
                .find(|p| p.name == e.rule && !p.keep_referenced)
                .map_or(Release::Nothing, |p| {
                    Release::References(p.releases.clone())
                }),
            Reason::Expire => {
                cfg.expiry
                    .iter()
                    .position(|x| x.name == e.rule)
                    .map_or(Release::Nothing, |rule| Release::Row {
                        rule,
                        row_id: e.row_id.clone(),
                    })
            }
            _ => Release::Nothing,
        }
    }

    /// Whether reference `r`'s rows are asked about with their ids (this rule releases some).
    fn by_row(&self, cfg: &Config, r: usize) -> bool {
        matches!(self, Release::Row { rule, .. } if cfg.expiry[*rule].releases.contains(&r))
    }

    fn skips(&self, r: usize) -> bool {
        matches!(self, Release::References(refs) if refs.contains(&r))
    }
}

/// What protects a key now: the reference whose row names it, and whether that row is another
/// row than the entry's own expiring row (for expiry entries: kept because the file is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protector {
    pub reference: String,
    /// `false` only when the sole protecting row is the expiring row itself, which its rule no
    /// longer selects (the row was restored): the file is not shared, it is the row's again.
    pub other_row: bool,
}

/// What the re-checks of a run cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub batches: u64,
    /// Wrapped `IN (…)` statements sent.
    pub queries: u64,
    /// Whole reference queries run (not served from the 60 s reuse).
    pub full_queries: u64,
    pub time: Duration,
}

pub struct Recheck {
    cfg: Arc<Config>,
    dbs: HashMap<usize, Db>,
    full: HashMap<usize, (Instant, Arc<KeySet>)>,
    full_rows: HashMap<usize, (Instant, Arc<RowSet>)>,
    /// References whose query could not be wrapped: run whole from then on.
    unwrappable: HashSet<usize>,
    pub cost: Cost,
    /// A database of the references could not be reached this run.
    pub db_unreachable: bool,
}

/// Collects `key`, `media_type` and (when asked) `id` of every row of a whole query.
#[derive(Default)]
struct Collect(Vec<(String, Option<String>, Option<String>)>);

impl RowSink for Collect {
    type Batch = Vec<(String, Option<String>, Option<String>)>;

    fn row(&mut self, cols: &[Option<&str>]) -> Option<Self::Batch> {
        if let Some(key) = cols.first().copied().flatten().filter(|k| !k.is_empty()) {
            self.0.push((
                key.to_string(),
                cols.get(1).copied().flatten().map(str::to_string),
                cols.get(2).copied().flatten().map(str::to_string),
            ));
        }
        (self.0.len() >= 4096).then(|| std::mem::take(&mut self.0))
    }

    fn flush(&mut self) -> Option<Self::Batch> {
        (!self.0.is_empty()).then(|| std::mem::take(&mut self.0))
    }
}

fn context(cfg: &Config, rc: &ReferenceConfig) -> KeyContext {
    cfg.stores[rc.store].key_context(&rc.key_prefix)
}

/// `key` and its other canonical normal forms (NFC, NFD): the spellings a row may have.
fn unicode_forms(key: &str) -> Vec<String> {
    let mut out = vec![key.to_string()];
    if !key.is_ascii() {
        for form in [key.nfc().collect::<String>(), key.nfd().collect::<String>()] {
            if !out.contains(&form) {
                out.push(form);
            }
        }
    }
    out
}

/// Every stored value of a `path` reference that reads as `key`.
fn path_forms(key: &str, key_prefix: &str) -> [String; 3] {
    let p = key_prefix
        .strip_prefix("./")
        .or_else(|| key_prefix.strip_prefix('/'))
        .unwrap_or(key_prefix);
    let base = if p.is_empty() {
        key.to_string()
    } else if p.ends_with('/') {
        format!("{p}{key}")
    } else {
        format!("{p}/{key}")
    };
    [format!("/{base}"), format!("./{base}"), base]
}

/// Every stored spelling of each key of a batch, in each Unicode normal form (SPEC §6
/// invariant 1: a row that matches only after NFC counts as a reference), once each.
fn batch_forms(translated: &[(usize, ResourceType, String)], key_prefix: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    translated
        .iter()
        .flat_map(|(_, _, k)| unicode_forms(k))
        .flat_map(|k| path_forms(&k, key_prefix))
        .filter(|f| seen.insert(f.clone()))
        .collect()
}

impl Recheck {
    pub fn new(cfg: Arc<Config>) -> Self {
        Recheck {
            cfg,
            dbs: HashMap::new(),
            full: HashMap::new(),
            full_rows: HashMap::new(),
            unwrappable: HashSet::new(),
            cost: Cost::default(),
            db_unreachable: false,
        }
    }

    async fn db(&mut self, i: usize) -> Result<Db, String> {
        if let Some(db) = self.dbs.get(&i) {
            return Ok(db.clone());
        }
        let db = match Db::connect(&self.cfg.databases[i], 4).await {
            Ok(db) => db,
            Err(e) => {
                if matches!(e, DbError::Unreachable(_)) {
                    self.db_unreachable = true;
                }
                return Err(e.to_string());
            }
        };
        self.dbs.insert(i, db.clone());
        Ok(db)
    }

    /// The stores whose references can name an object of store `s`, with how a key of `s`
    /// reads there (`None`: not under that store).
    fn views(&self, s: usize) -> Vec<(usize, View<'static>)> {
        crate::overlap::with_self(&self.cfg, s)
            .into_iter()
            .map(|o| {
                let view = o.view;
                let f: View<'static> = Box::new(move |k: &str| view.to_other(k));
                (o.store, f)
            })
            .collect()
    }

    /// For each `(resource type, key)` of store `s`: the name of a reference that points at
    /// it now, or `None`. `releases[i]` says which rows do not protect `keys[i]` (missing:
    /// none). `Err` when a reference query (or a rule's `select`) fails: then nothing may be
    /// deleted.
    pub async fn referenced(
        &mut self,
        s: usize,
        keys: &[(ResourceType, String)],
        releases: &[Release],
    ) -> Result<Vec<Option<Protector>>, String> {
        let started = Instant::now();
        self.cost.batches += 1;
        let mut out: Vec<Option<Protector>> = vec![None; keys.len()];
        // A protecting row that is another row wins over the expiring row itself.
        let mark = |slot: &mut Option<Protector>, name: &str, other_row: bool| match slot {
            Some(p) if p.other_row || !other_row => {}
            _ => {
                *slot = Some(Protector {
                    reference: name.to_string(),
                    other_row,
                });
            }
        };
        let cfg = Arc::clone(&self.cfg);
        let nothing = Release::Nothing;
        let release = |i: usize| releases.get(i).unwrap_or(&nothing);
        // (reference index, translated keys with their batch index, of which those asked with
        // their rows' ids). The views (not `Send`) live only in this block, never across an await.
        let asks: Vec<(usize, Translated, Translated)> = {
            let views = self.views(s);
            let mut asks: Vec<(usize, Translated, Translated)> = Vec::new();
            for (t, view) in &views {
                for (r, rc) in cfg.references.iter().enumerate() {
                    if rc.store != *t {
                        continue;
                    }
                    let (mut plain, mut by_row) = (Vec::new(), Vec::new());
                    for (i, (rt, k)) in keys.iter().enumerate() {
                        let rel = release(i);
                        if rel.skips(r) {
                            continue;
                        }
                        if let Some(k) = view(k) {
                            if rel.by_row(&cfg, r) {
                                by_row.push((i, *rt, k));
                            } else {
                                plain.push((i, *rt, k));
                            }
                        }
                    }
                    if !plain.is_empty() || !by_row.is_empty() {
                        asks.push((r, plain, by_row));
                    }
                }
            }
            asks
        };
        // The ids each expiry rule of the batch still selects, asked once per batch.
        let mut selected: HashMap<usize, HashSet<String>> = HashMap::new();
        for (r, plain, by_row) in asks {
            let rc = &cfg.references[r];
            let failed = |e: String| format!("re-check of reference `{}` failed: {e}", rc.name);
            if !plain.is_empty() {
                for i in self.ask(r, rc, &plain).await.map_err(failed)? {
                    mark(&mut out[i], &rc.name, true);
                }
            }
            if by_row.is_empty() {
                continue;
            }
            let rows = self.ask_rows(r, rc, &by_row).await.map_err(failed)?;
            for (i, ids) in rows {
                let Release::Row { rule, row_id } = release(i) else {
                    continue;
                };
                // Another row (or a row without an id) protects; the expiring row itself only
                // while its rule no longer selects it.
                let other = ids.iter().any(|id| id.as_deref() != Some(row_id.as_str()));
                if other {
                    mark(&mut out[i], &rc.name, true);
                } else if !ids.is_empty() {
                    if !selected.contains_key(rule) {
                        let ids = self.selected_ids(*rule).await.map_err(|e| {
                            format!(
                                "re-check of expiry rule `{}` failed: {e}",
                                cfg.expiry[*rule].name
                            )
                        })?;
                        selected.insert(*rule, ids);
                    }
                    if !selected[rule].contains(row_id) {
                        mark(&mut out[i], &rc.name, false);
                    }
                }
            }
        }
        self.cost.time += started.elapsed();
        Ok(out)
    }

    /// The ids (as text) that expiry rule `rule`'s `select` returns now.
    async fn selected_ids(&mut self, rule: usize) -> Result<HashSet<String>, String> {
        let x = self.cfg.expiry[rule].clone();
        let db = self.db(x.database).await?;
        let (tx, mut rx) = mpsc::channel::<Vec<(String, Option<String>, Option<String>)>>(8);
        let gather = tokio::spawn(async move {
            let mut ids = HashSet::new();
            while let Some(batch) = rx.recv().await {
                ids.extend(batch.into_iter().map(|(id, _, _)| id));
            }
            ids
        });
        let (_, result) = db.feed(&x.select, &["id"], Collect::default(), &tx).await;
        drop(tx);
        let ids = gather.await.map_err(|e| e.to_string())?;
        result.map_err(|e| e.to_string())?;
        self.cost.full_queries += 1;
        Ok(ids)
    }

    /// For each of `translated` that reference `r` points at: its batch index and the ids of
    /// the rows that name it.
    async fn ask_rows(
        &mut self,
        r: usize,
        rc: &ReferenceConfig,
        translated: &[(usize, ResourceType, String)],
    ) -> Result<Vec<(usize, Vec<Option<String>>)>, String> {
        let db = self.db(rc.database).await?;
        if matches!(rc.key_format, KeyFormat::Path) && !self.unwrappable.contains(&r) {
            let forms = batch_forms(translated, &rc.key_prefix);
            match db.matching_rows(&rc.query, &forms).await {
                Ok(rows) => {
                    self.cost.queries += forms.len().div_ceil(crate::refs::IN_LIST) as u64;
                    let mut by_key: HashMap<String, Vec<Option<String>>> = HashMap::new();
                    for (v, id) in rows {
                        if let Ok(Some(k)) = path_key(&v, &rc.key_prefix) {
                            by_key.entry(k.nfc().collect()).or_default().push(id);
                        }
                    }
                    return Ok(translated
                        .iter()
                        .filter_map(|(i, _, k)| {
                            by_key
                                .get(&k.nfc().collect::<String>())
                                .map(|ids| (*i, ids.clone()))
                        })
                        .collect());
                }
                Err(DbError::Unreachable(e)) => {
                    self.db_unreachable = true;
                    return Err(e);
                }
                Err(DbError::Query(e)) => {
                    tracing::warn!(
                        reference = %rc.name,
                        "the query cannot be wrapped for batched look-ups ({e}); it runs whole instead"
                    );
                    self.unwrappable.insert(r);
                }
            }
        }
        let rows = self.full_rows(r, rc, &db).await?;
        Ok(translated
            .iter()
            .filter_map(|(i, rt, k)| {
                let norm: String = k.nfc().collect();
                let mut ids: Vec<Option<String>> = Vec::new();
                for k in [k.clone(), norm] {
                    for t in [Some(*rt), None] {
                        if let Some(found) = rows.get(&(t, k.clone())) {
                            ids.extend(found.iter().cloned());
                        }
                    }
                }
                (!ids.is_empty()).then_some((*i, ids))
            })
            .collect())
    }

    /// Every key reference `r` yields with the ids of its rows; reused for 60 s.
    async fn full_rows(
        &mut self,
        r: usize,
        rc: &ReferenceConfig,
        db: &Db,
    ) -> Result<Arc<RowSet>, String> {
        if let Some((at, set)) = self.full_rows.get(&r)
            && at.elapsed() < FULL_QUERY_TTL
        {
            return Ok(Arc::clone(set));
        }
        let at = Instant::now();
        let set = Arc::new(
            self.whole(rc, db, true, |set: &mut RowSet, key, id| {
                set.entry(key).or_default().push(id);
            })
            .await?,
        );
        self.full_rows.insert(r, (at, Arc::clone(&set)));
        Ok(set)
    }

    /// Runs reference `rc`'s query whole and hands `add` every key it yields (normalised by
    /// its format, and again in NFC when not ASCII) with its row's `id` when `with_id`.
    async fn whole<T, F>(
        &mut self,
        rc: &ReferenceConfig,
        db: &Db,
        with_id: bool,
        mut add: F,
    ) -> Result<T, String>
    where
        T: Default + Send + 'static,
        F: FnMut(&mut T, (Option<ResourceType>, String), Option<String>) + Send + 'static,
    {
        self.cost.full_queries += 1;
        let ctx = context(&self.cfg, rc);
        let (tx, mut rx) = mpsc::channel::<Vec<(String, Option<String>, Option<String>)>>(8);
        let format = rc.key_format.clone();
        let gather = tokio::spawn(async move {
            let mut set = T::default();
            while let Some(batch) = rx.recv().await {
                for (value, media_type, id) in batch {
                    for k in format.parse(&value, media_type.as_deref(), &ctx).keys {
                        if !k.key.is_ascii() {
                            add(
                                &mut set,
                                (k.resource_type, k.key.nfc().collect()),
                                id.clone(),
                            );
                        }
                        add(&mut set, (k.resource_type, k.key), id.clone());
                    }
                }
            }
            set
        });
        let wanted: &[&str] = if with_id {
            &["key", "media_type", "id"]
        } else {
            &["key", "media_type"]
        };
        let (_, result) = db.feed(&rc.query, wanted, Collect::default(), &tx).await;
        drop(tx);
        let set = gather.await.map_err(|e| e.to_string())?;
        result.map_err(|e| e.to_string())?;
        Ok(set)
    }

    /// Batch indices of `translated` that reference `r` points at.
    async fn ask(
        &mut self,
        r: usize,
        rc: &ReferenceConfig,
        translated: &[(usize, ResourceType, String)],
    ) -> Result<Vec<usize>, String> {
        let db = self.db(rc.database).await?;
        if matches!(rc.key_format, KeyFormat::Path) && !self.unwrappable.contains(&r) {
            // Every stored spelling of each key, in each Unicode normal form (SPEC §6
            // invariant 1: a row that matches only after NFC counts as a reference).
            let forms = batch_forms(translated, &rc.key_prefix);
            match db.matching_keys(&rc.query, &forms).await {
                Ok(values) => {
                    self.cost.queries += forms.len().div_ceil(crate::refs::IN_LIST) as u64;
                    let found: HashSet<String> = values
                        .iter()
                        .filter_map(|v| path_key(v, &rc.key_prefix).ok().flatten())
                        .map(|k| k.nfc().collect())
                        .collect();
                    return Ok(translated
                        .iter()
                        .filter(|(_, _, k)| found.contains(&k.nfc().collect::<String>()))
                        .map(|(i, _, _)| *i)
                        .collect());
                }
                Err(DbError::Unreachable(e)) => {
                    self.db_unreachable = true;
                    return Err(e);
                }
                Err(DbError::Query(e)) => {
                    tracing::warn!(
                        reference = %rc.name,
                        "the query cannot be wrapped for batched look-ups ({e}); it runs whole instead"
                    );
                    self.unwrappable.insert(r);
                }
            }
        }
        let set = self.full_keys(r, rc, &db).await?;
        // The set holds every key also in NFC: a key matches when the NFC forms agree.
        Ok(translated
            .iter()
            .filter(|(_, rt, k)| {
                let norm: String = k.nfc().collect();
                [k.clone(), norm]
                    .into_iter()
                    .any(|k| set.contains(&(Some(*rt), k.clone())) || set.contains(&(None, k)))
            })
            .map(|(i, _, _)| *i)
            .collect())
    }

    /// Every key reference `r` yields, normalised by its format; reused for 60 s.
    async fn full_keys(
        &mut self,
        r: usize,
        rc: &ReferenceConfig,
        db: &Db,
    ) -> Result<Arc<KeySet>, String> {
        if let Some((at, set)) = self.full.get(&r)
            && at.elapsed() < FULL_QUERY_TTL
        {
            return Ok(Arc::clone(set));
        }
        let at = Instant::now();
        let set = Arc::new(
            self.whole(rc, db, false, |set: &mut KeySet, key, _| {
                set.insert(key);
            })
            .await?,
        );
        self.full.insert(r, (at, Arc::clone(&set)));
        Ok(set)
    }

    pub async fn close(&self) {
        for db in self.dbs.values() {
            db.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_forms_cover_every_stored_spelling() {
        assert_eq!(
            path_forms("a/b.jpg", ""),
            ["/a/b.jpg", "./a/b.jpg", "a/b.jpg"]
        );
        assert_eq!(
            path_forms("a.jpg", "cube/"),
            ["/cube/a.jpg", "./cube/a.jpg", "cube/a.jpg"]
        );
        assert_eq!(
            path_forms("a.jpg", "/cube"),
            ["/cube/a.jpg", "./cube/a.jpg", "cube/a.jpg"]
        );
        for (k, p) in [("a/b.jpg", ""), ("a.jpg", "cube/"), ("a.jpg", "/cube")] {
            for f in path_forms(k, p) {
                assert_eq!(path_key(&f, p), Ok(Some(k)), "{f}");
            }
        }
    }
}
