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
/// How a key of one store reads in another (`None`: not under it).
type View<'v> = Box<dyn Fn(&str) -> Option<String> + 'v>;
/// Keys of a batch as one reference reads them: (batch index, type, key).
type Translated = Vec<(usize, ResourceType, String)>;

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
    /// References whose query could not be wrapped: run whole from then on.
    unwrappable: HashSet<usize>,
    pub cost: Cost,
    /// A database of the references could not be reached this run.
    pub db_unreachable: bool,
}

/// Collects `key` and `media_type` of every row of a whole query.
#[derive(Default)]
struct Collect(Vec<(String, Option<String>)>);

impl RowSink for Collect {
    type Batch = Vec<(String, Option<String>)>;

    fn row(&mut self, cols: &[Option<&str>]) -> Option<Self::Batch> {
        if let Some(key) = cols.first().copied().flatten().filter(|k| !k.is_empty()) {
            self.0.push((
                key.to_string(),
                cols.get(1).copied().flatten().map(str::to_string),
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

impl Recheck {
    pub fn new(cfg: Arc<Config>) -> Self {
        Recheck {
            cfg,
            dbs: HashMap::new(),
            full: HashMap::new(),
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
    /// it now, or `None`. `Err` when a reference query fails: then nothing may be deleted.
    pub async fn referenced(
        &mut self,
        s: usize,
        keys: &[(ResourceType, String)],
    ) -> Result<Vec<Option<String>>, String> {
        let started = Instant::now();
        self.cost.batches += 1;
        let mut out: Vec<Option<String>> = vec![None; keys.len()];
        let views = self.views(s);
        let cfg = Arc::clone(&self.cfg);
        // (reference index, translated keys with their batch index)
        let mut asks: Vec<(usize, Translated)> = Vec::new();
        for (t, view) in &views {
            for (r, rc) in cfg.references.iter().enumerate() {
                if rc.store != *t {
                    continue;
                }
                let translated: Vec<(usize, ResourceType, String)> = keys
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (rt, k))| view(k).map(|k| (i, *rt, k)))
                    .collect();
                if !translated.is_empty() {
                    asks.push((r, translated));
                }
            }
        }
        drop(views);
        for (r, translated) in asks {
            let rc = &cfg.references[r];
            let hits = self
                .ask(r, rc, &translated)
                .await
                .map_err(|e| format!("re-check of reference `{}` failed: {e}", rc.name))?;
            for i in hits {
                out[i].get_or_insert_with(|| rc.name.clone());
            }
        }
        self.cost.time += started.elapsed();
        Ok(out)
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
            let forms: Vec<String> = {
                let mut seen = HashSet::new();
                translated
                    .iter()
                    .flat_map(|(_, _, k)| unicode_forms(k))
                    .flat_map(|k| path_forms(&k, &rc.key_prefix))
                    .filter(|f| seen.insert(f.clone()))
                    .collect()
            };
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
        self.cost.full_queries += 1;
        let at = Instant::now();
        let ctx = context(&self.cfg, rc);
        let (tx, mut rx) = mpsc::channel::<Vec<(String, Option<String>)>>(8);
        let format = rc.key_format.clone();
        let gather = tokio::spawn(async move {
            let mut set = KeySet::new();
            while let Some(batch) = rx.recv().await {
                for (value, media_type) in batch {
                    for k in format.parse(&value, media_type.as_deref(), &ctx).keys {
                        if !k.key.is_ascii() {
                            set.insert((k.resource_type, k.key.nfc().collect()));
                        }
                        set.insert((k.resource_type, k.key));
                    }
                }
            }
            set
        });
        let (_, result) = db
            .feed(&rc.query, &["key", "media_type"], Collect::default(), &tx)
            .await;
        drop(tx);
        let set = gather.await.map_err(|e| e.to_string())?;
        result.map_err(|e| e.to_string())?;
        let set = Arc::new(set);
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
