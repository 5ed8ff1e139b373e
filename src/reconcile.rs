//! The anti-join: store listings × reference rows → orphans, missing, too recent (SPEC §4).
//!
//! Pure over streams: [`reconcile_store`] takes one store's listing pages and the batches of
//! reference rows that point into it, and classifies as they arrive. Listing pages that arrive
//! before the reference set is complete are kept as compact keys, and every later page is
//! classified as it arrives, so memory is the reference set plus what the listing ran ahead, never
//! the bucket. The store itself is only asked for point look-ups (metadata of candidates,
//! confirmation of referenced keys a windowed listing did not return). Opening stores and
//! databases and spawning the tasks is the scan operation's work (`ops::scan`); retention
//! policies reuse the same join.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use unicode_normalization::UnicodeNormalization;

use crate::config::{Config, ReferenceConfig, StoreConfig};
use crate::domain::budget::Usage;
use crate::domain::scan::{
    Findings, Missing, Orphan, ReferenceStats, ScanMode, StoreStats, Warning, Window,
};
use crate::key::{KeyContext, KeyFormat, ResourceType};
use crate::store::{ListOptions, ListStream, Listed, Object, Store, StoreError};

/// Called with a store's name and how many entries it has listed so far.
pub type Progress = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// What one store's reconciliation needs besides its two streams.
#[derive(Clone)]
pub struct StoreJob {
    pub cfg: StoreConfig,
    pub mode: ScanMode,
    pub now: DateTime<Utc>,
    /// Objects uploaded before this are not orphan candidates; references created before it
    /// are not checked for missing files.
    pub cutoff: Option<DateTime<Utc>>,
    /// Key prefixes left out of every listing (quarantine prefixes).
    pub exclude: Vec<String>,
    /// The calls the store's last full listing cost (from the state database), weighed
    /// against look-ups on metered stores.
    pub list_cost: Option<u64>,
    pub progress: Option<Progress>,
    /// A retention policy's join: only its objects count, and the candidates are those older
    /// than its cutoff (not those in a scan's window).
    pub policy: Option<PolicyScope>,
}

/// What a retention policy (`clean`) looks at: the objects under `prefix`, minus `exclude`,
/// and of those the ones uploaded before `before` are candidates. Objects outside the scope
/// are neither counted nor candidates; an object whose upload time cannot be learnt is kept.
#[derive(Clone, Debug)]
pub struct PolicyScope {
    pub prefix: String,
    pub exclude: crate::config::Ignore,
    pub before: DateTime<Utc>,
}

impl PolicyScope {
    fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && !self.exclude.matches(key)
    }
}

impl StoreJob {
    /// The listing the job wants: with sizes and times when there is a window, and limited to
    /// it where the store can do that.
    pub fn list_options(&self, store: &dyn Store) -> ListOptions {
        ListOptions {
            with_meta: self.cutoff.is_some() || self.policy.is_some(),
            exclude_prefixes: self.exclude.clone(),
            since: self.cutoff.filter(|_| store.capabilities().lists_since),
        }
    }
}

/// One store's share of the findings.
pub struct StoreOutcome {
    pub stats: StoreStats,
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    pub warnings: Vec<Warning>,
}

/// The quarantine prefixes to leave out of a store's listing: its own, and those of every store
/// that overlaps it, identical roots included (SPEC §6 invariants 1 and 4).
pub fn quarantine_prefixes(cfg: &Config, s: usize) -> Vec<String> {
    crate::overlap::trash_prefixes(cfg, s)
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
pub struct RefBatch {
    reference: usize,
    name: Arc<str>,
    keys: String,
    key_ends: Vec<usize>,
    /// Per key: the index of its row in `rows`, or `NO_ROW` when that row is not checked for missing.
    key_rows: Vec<u32>,
    /// Per row checked for missing: where its fields start in `details`.
    rows: Vec<usize>,
    details: Vec<u8>,
    /// Per key: how a `path` value wrote it besides the key itself ([`WRITTEN_SLASH`],
    /// [`WRITTEN_DOT_SLASH`]), so a listed key spelt that way is known to be named.
    key_flags: Vec<u8>,
    /// `path` values that are no usable key, as written (row number, name): a listed key spelt
    /// exactly so is named by them (SPEC §2), and they are then no longer unparsed.
    raw: Vec<(u64, String)>,
    /// The reference's query failed after these rows (or before any): the reference set of its
    /// store is partial.
    failed: Option<String>,
}

impl RefBatch {
    /// The last word of a reference whose query failed: what its store's join was sent is not
    /// every row, so objects no row named cannot be called orphans.
    #[must_use]
    pub fn failed(reference: usize, name: &str, error: &str) -> RefBatch {
        RefBatch {
            reference,
            name: Arc::from(name),
            failed: Some(error.to_string()),
            ..RefBatch::default()
        }
    }
}

impl RefBatch {
    /// The batch's keys as another store that overlaps theirs spells them (SPEC §6 invariant
    /// 1): they protect its objects, and are checked for missing files only in their own store.
    #[must_use]
    pub fn translated(&self, view: &crate::overlap::View) -> RefBatch {
        let mut out = RefBatch {
            reference: self.reference,
            name: self.name.clone(),
            // A failed query leaves every store that counts it with a partial reference set.
            failed: self.failed.clone(),
            ..RefBatch::default()
        };
        let mut start = 0;
        for &end in &self.key_ends {
            if let Some(k) = view.from_other(&self.keys[start..end]) {
                out.keys.push_str(&k);
                out.key_ends.push(out.keys.len());
                out.key_rows.push(NO_ROW);
            }
            start = end;
        }
        out
    }
}

const NO_ROW: u32 = u32::MAX;
/// A `path` value wrote the key with a leading `/` (`/k`) or `./` (`./k`).
const WRITTEN_SLASH: u8 = 1;
const WRITTEN_DOT_SLASH: u8 = 2;
/// Unusable `path` values kept per reference to match unusable listed names: past this many
/// they stay unparsed (memory stays bounded when a whole column is unreadable).
const RAW_KEPT: u64 = 10_000;
/// The type part of a Cloudinary reference that names no resource type: it matches the
/// public_id in every type (SPEC §2).
const ANY_TYPE: &str = "*";

/// A Cloudinary identity in the reference set (`type/public_id`; resource types have no `/`)
/// back into its resource type (`None` for `*`) and public_id.
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
pub struct RowParser {
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
    /// Unusable values kept in `raw` so far (at most [`RAW_KEPT`]).
    raw_kept: u64,
}

impl RowParser {
    pub fn new(
        index: usize,
        rc: &ReferenceConfig,
        ctx: KeyContext,
        cutoff: Option<DateTime<Utc>>,
        mode: ScanMode,
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
            raw_kept: 0,
        }
    }

    /// The columns the parser reads, in the order it reads them.
    pub fn wanted(&self) -> Vec<String> {
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
            self.stats.warnings.push(Warning::Unparsed {
                reference: self.name.to_string(),
                row_id: id.to_string(),
                value: shorten(value),
                reason: reason.to_string(),
            });
        }
    }

    fn push_key(&mut self, key: &str) {
        self.batch.keys.push_str(key);
        self.batch.key_ends.push(self.batch.keys.len());
        self.batch.key_rows.push(NO_ROW);
        self.batch.key_flags.push(0);
    }

    /// A `path` value that yields no usable key: kept as written (and with a leading `/` or
    /// `./` dropped), the way a listing names such an object.
    fn push_raw(&mut self, value: &str) {
        if self.raw_kept >= RAW_KEPT {
            return;
        }
        self.raw_kept += 1;
        let row = self.stats.rows;
        let prefix = &self.ctx.key_prefix;
        let stripped = value
            .strip_prefix("./")
            .or_else(|| value.strip_prefix('/'))
            .unwrap_or(value);
        let forms = [
            written_under(value, prefix),
            written_under(stripped, prefix),
        ];
        for (i, form) in forms.iter().enumerate() {
            if let Some(form) = form.filter(|f| !f.is_empty())
                && (i == 0 || forms[0] != Some(form))
            {
                self.batch.raw.push((row, listed_name(form)));
            }
        }
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
        self.batch.key_flags.push(0);
    }
}

/// `value` without the reference's `key_prefix` (`None`: not under it), nothing else dropped.
fn written_under<'a>(value: &'a str, key_prefix: &str) -> Option<&'a str> {
    let prefix = key_prefix
        .strip_prefix("./")
        .or_else(|| key_prefix.strip_prefix('/'))
        .unwrap_or(key_prefix);
    if prefix.is_empty() {
        return Some(value);
    }
    let rest = value.strip_prefix(prefix)?;
    Some(if prefix.ends_with('/') {
        rest
    } else {
        rest.strip_prefix('/').unwrap_or(rest)
    })
}

/// A name as listings show an unusable key: control characters escaped.
fn listed_name(name: &str) -> String {
    if name.chars().any(char::is_control) {
        name.escape_debug().to_string()
    } else {
        name.to_string()
    }
}

/// How a `path` value wrote its key besides the key itself (only without a `key_prefix`: with
/// one, the value is not spelt relative to the store).
fn written_flag(value: &str, key_prefix: &str) -> u8 {
    if !key_prefix.is_empty() {
        0
    } else if value.starts_with("./") {
        WRITTEN_DOT_SLASH
    } else if value.starts_with('/') {
        WRITTEN_SLASH
    } else {
        0
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
                    let flag = written_flag(value, &self.ctx.key_prefix);
                    if let Some(f) = self.batch.key_flags.last_mut() {
                        *f = flag;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    self.stats.values += 1;
                    self.unparsed(cols, value, reason);
                    self.push_raw(value);
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
        (!self.batch.key_ends.is_empty() || !self.batch.raw.is_empty()).then(|| self.take())
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

impl RowParser {
    /// The counters of the rows read, once the query is done.
    pub fn into_stats(self) -> ReferenceStats {
        self.stats
    }
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
    /// Bit sets over keys: some `path` value wrote the key as `/k`, or as `./k` (empty when none did).
    slash: Vec<u64>,
    dot_slash: Vec<u64>,
    /// Unusable `path` values as written → the (reference, row) pairs that wrote them.
    raw: HashMap<String, Vec<(usize, u64)>>,
    /// NFC form → the keys not in NFC that normalise to it.
    nfc_index: HashMap<String, Vec<u32>>,
    /// Keys that a listed identity matches only after NFC, with that identity.
    nfc_hits: HashMap<u32, String>,
    /// Listed identities no key names exactly, kept only by an NFC match: (key, listed).
    nfc_saved: Vec<(u32, String)>,
    /// Unusable listed names that some reference names.
    unusable_named: Vec<String>,
    /// (reference, row) of unusable values whose name is listed: no longer unparsed.
    raw_hits: std::collections::HashSet<(usize, u64)>,
    /// NFC identities whose look-up failed: neither present nor missing.
    failed: std::collections::HashSet<String>,
    /// Nothing can tell whether unseen keys exist (a listing or look-ups did not finish).
    all_unseen_undecided: bool,
    /// References whose query failed: (name, error). Their store's reference set is partial.
    partial: Vec<(Arc<str>, String)>,
}

fn set_bit(bits: &mut Vec<u64>, i: u32) {
    let i = i as usize;
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

fn get_bit(bits: &[u64], i: u32) -> bool {
    let i = i as usize;
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// `s` in NFC, borrowed when it already is.
fn nfc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii()
        || unicode_normalization::is_nfc_quick(s.chars())
            == unicode_normalization::IsNormalized::Yes
    {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.nfc().collect())
    }
}

/// The other canonical spellings of `key` worth a look-up (NFC and NFD), without `key` itself.
fn other_forms(key: &str) -> Vec<String> {
    if key.is_ascii() {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for form in [key.nfc().collect::<String>(), key.nfd().collect::<String>()] {
        if form != key && !out.contains(&form) {
            out.push(form);
        }
    }
    out
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
            slash: Vec::new(),
            dot_slash: Vec::new(),
            raw: HashMap::new(),
            nfc_index: HashMap::new(),
            nfc_hits: HashMap::new(),
            nfc_saved: Vec::new(),
            unusable_named: Vec::new(),
            raw_hits: std::collections::HashSet::new(),
            failed: std::collections::HashSet::new(),
            all_unseen_undecided: false,
            partial: Vec::new(),
        }
    }

    fn add(&mut self, batch: RefBatch) {
        if self.names.len() <= batch.reference {
            self.names.resize(batch.reference + 1, Arc::from(""));
        }
        self.names[batch.reference] = batch.name.clone();
        if let Some(error) = batch.failed {
            self.partial.push((batch.name, error));
            return;
        }
        let row_base = u32::try_from(self.rows.len()).unwrap_or(NO_ROW);
        let detail_base = self.details.len();
        self.details.extend_from_slice(&batch.details);
        self.rows
            .extend(batch.rows.into_iter().map(|at| detail_base + at));
        let mut start = 0;
        for (i, (&end, &row)) in batch.key_ends.iter().zip(&batch.key_rows).enumerate() {
            let sym = self.keys.insert(&batch.keys[start..end]);
            start = end;
            let flag = batch.key_flags.get(i).copied().unwrap_or(0);
            if flag & WRITTEN_SLASH != 0 {
                set_bit(&mut self.slash, sym);
            }
            if flag & WRITTEN_DOT_SLASH != 0 {
                set_bit(&mut self.dot_slash, sym);
            }
            if row != NO_ROW {
                self.items.push(Item {
                    sym,
                    row: row_base + row,
                });
            }
        }
        for (row, name) in batch.raw {
            self.raw
                .entry(name)
                .or_default()
                .push((batch.reference, row));
        }
    }

    /// The set is complete: sized for marks, and keys not in NFC indexed by their NFC form.
    fn finish(&mut self) {
        self.seen = vec![0; self.keys.len().div_ceil(64)];
        for sym in 0..u32::try_from(self.keys.len()).unwrap_or(u32::MAX) {
            let key = self.keys.get(sym);
            if let std::borrow::Cow::Owned(norm) = nfc(key)
                && norm != key
            {
                self.nfc_index.entry(norm).or_default().push(sym);
            }
        }
    }

    /// SPEC §2: a listed identity that some key matches only after NFC of both. Records the
    /// match (that key is then not missing; when no key names the identity exactly, `exact` is
    /// false and the object is kept by this match alone) and says whether there was one.
    fn mark_nfc(&mut self, candidate: &str, listed: &str, exact: bool) -> bool {
        if candidate.is_ascii() {
            return false;
        }
        let norm = nfc(candidate);
        if self.nfc_index.is_empty() && matches!(norm, std::borrow::Cow::Borrowed(_)) {
            return false;
        }
        let mut hits: Vec<u32> = Vec::new();
        if norm != candidate
            && let Some(sym) = self.keys.find(&norm)
        {
            hits.push(sym);
        }
        if let Some(syms) = self.nfc_index.get(norm.as_ref()) {
            hits.extend(
                syms.iter()
                    .copied()
                    .filter(|&sym| self.keys.get(sym) != candidate),
            );
        }
        for &sym in &hits {
            self.nfc_hits
                .entry(sym)
                .or_insert_with(|| listed.to_string());
            if !exact {
                self.nfc_saved.push((sym, listed.to_string()));
            }
        }
        !hits.is_empty()
    }

    /// A listed name that is no usable key (SPEC §2): named by a `path` value written `/k` or
    /// `./k` whose key is `k`, or by an unusable value spelt exactly so. Such an object is never
    /// an orphan anyway; the rows naming it are neither missing nor unparsed.
    fn mark_unusable(&mut self, name: &str) -> bool {
        let named: Vec<u32> = [("./", &self.dot_slash), ("/", &self.slash)]
            .into_iter()
            .filter_map(|(written, bits)| {
                name.strip_prefix(written)
                    .and_then(|k| self.keys.find(k))
                    .filter(|&sym| get_bit(bits, sym))
            })
            .collect();
        let mut hit = !named.is_empty();
        for sym in named {
            let i = sym as usize;
            if let Some(w) = self.seen.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
        if let Some(rows) = self.raw.get(name) {
            self.raw_hits.extend(rows.iter().copied());
            hit = true;
        }
        if hit {
            self.unusable_named.push(name.to_string());
        }
        hit
    }

    /// Look-ups of these keys of one resource type failed: whether they exist is unknown.
    fn fail_lookups(&mut self, rt: ResourceType, keys: &[String]) {
        for k in keys {
            if rt == ResourceType::Plain {
                self.failed.insert(nfc(k).into_owned());
            } else {
                let k = nfc(k);
                self.failed.insert(format!("{}/{k}", rt.as_str()));
                self.failed.insert(format!("{ANY_TYPE}/{k}"));
            }
        }
    }

    /// Whether nothing could tell if key `sym`, unseen, exists.
    fn undecided(&self, sym: u32) -> bool {
        self.all_unseen_undecided
            || (!self.failed.is_empty() && self.failed.contains(nfc(self.key(sym)).as_ref()))
    }

    /// Rows of each reference whose unusable value names a listed key: (reference, rows).
    fn named_rows(&self) -> Vec<(String, u64)> {
        let mut per: HashMap<usize, u64> = HashMap::new();
        for &(r, _) in &self.raw_hits {
            *per.entry(r).or_default() += 1;
        }
        let mut out: Vec<(String, u64)> = per
            .into_iter()
            .map(|(r, n)| {
                (
                    self.names
                        .get(r)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    n,
                )
            })
            .collect();
        out.sort();
        out
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
        let exact = typed | any;
        if key.is_ascii() {
            return exact;
        }
        let listed = format!("{}/{key}", rt.as_str());
        let by_type = self.mark_nfc(&listed, &listed, exact);
        let by_any = self.mark_nfc(&format!("{ANY_TYPE}/{key}"), &listed, exact);
        exact | by_type | by_any
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

/// Classifies listed objects against a complete reference set.
struct Classifier<'a> {
    cfg: &'a StoreConfig,
    cutoff: Option<DateTime<Utc>>,
    policy: Option<&'a PolicyScope>,
    now: DateTime<Utc>,
    stats: StoreStats,
    orphans: Vec<Orphan>,
    need_meta: Vec<String>,
    unrepresentable: Vec<String>,
    skipped: Vec<String>,
    orphans_wanted: bool,
    /// A page of the listing failed: keys it did not return are not known to be absent.
    listing_failed: bool,
}

impl Classifier<'_> {
    fn take(&mut self, set: &mut RefSet, item: Listed) {
        match item {
            Listed::Object(o) if o.resource_type != ResourceType::Plain => {
                self.typed_object(set, o);
            }
            Listed::Object(o) => self.object(set, o.key, o.size, o.modified),
            // Neither is an object the scan counts: "objects listed" agrees with the summary.
            Listed::Unrepresentable(name) => {
                self.stats.unrepresentable += 1;
                set.mark_unusable(&name);
                self.unrepresentable.push(name);
            }
            Listed::Skipped(why) => {
                self.stats.skipped += 1;
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
        let k = key.as_ref();
        if self.policy.is_some_and(|p| !p.covers(k)) {
            return;
        }
        self.stats.listed += 1;
        let exact = set.mark(k);
        let by_nfc = set.mark_nfc(k, k, exact);
        if !self.orphans_wanted {
            return;
        }
        match self.sort(exact || by_nfc, k, modified) {
            Sorted::Done => {}
            Sorted::Candidate => self.candidate(Object::plain(key.into(), size, modified)),
            Sorted::NeedMeta => self.need_meta.push(key.into()),
        }
    }

    /// A Cloudinary object: referenced under its own type or by a reference without a type.
    fn typed_object(&mut self, set: &mut RefSet, o: Object) {
        if self.policy.is_some_and(|p| !p.covers(&o.key)) {
            return;
        }
        self.stats.listed += 1;
        let referenced = set.mark_typed(o.resource_type, &o.key);
        if !self.orphans_wanted {
            return;
        }
        match self.sort(referenced, &o.key, o.modified) {
            Sorted::Done => {}
            // Listings and look-ups of typed stores always carry the upload time.
            Sorted::Candidate | Sorted::NeedMeta => self.candidate(o),
        }
    }

    /// Counts an object that is out of the window, referenced or ignored; else says what the
    /// candidate still needs.
    fn sort(&mut self, referenced: bool, key: &str, modified: Option<DateTime<Utc>>) -> Sorted {
        let in_window = match (self.policy, self.cutoff, modified) {
            // A policy's candidates are the objects older than its cutoff; an object whose
            // time is not listed is looked up first.
            (Some(p), _, Some(t)) => t < p.before,
            (None, Some(c), Some(t)) => t >= c,
            (Some(_), _, None) | (None, _, _) => true,
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
        // A policy keeps what it cannot tell is old enough (the look-up gave no time, or a
        // later one).
        if let Some(p) = self.policy
            && o.modified.is_none_or(|t| t >= p.before)
        {
            return;
        }
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
        let url = match (
            self.cfg.public_url.as_deref(),
            self.cfg.location.cloudinary(),
        ) {
            // A custom delivery domain (CNAME) is the store's public_url: the report shows it.
            (Some(base), Some(cloud)) => Some(cloudinary_url(base, &o, &cloud.delivery_type)),
            (Some(base), None) => o.url.clone().or_else(|| Some(public_url(base, &o.key))),
            (None, _) => o.url.clone(),
        };
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

/// Marks a listed entry as present without classifying it (a listing or look-ups that only
/// confirm referenced keys); says whether it was an object.
fn mark_listed(set: &mut RefSet, item: &Listed) -> bool {
    match item {
        Listed::Object(o) if o.resource_type == ResourceType::Plain => {
            let exact = set.mark(&o.key);
            set.mark_nfc(&o.key, &o.key, exact);
            true
        }
        Listed::Object(o) => {
            set.mark_typed(o.resource_type, &o.key);
            true
        }
        Listed::Unrepresentable(name) => {
            set.mark_unusable(name);
            false
        }
        Listed::Skipped(_) => false,
    }
}

/// A Cloudinary object's address under the store's `public_url` (a CNAME, or
/// `https://res.cloudinary.com/CLOUD`): the delivery path of its `secure_url` (type, delivery
/// type, version, public_id and format) after that base, else one built from its public_id.
fn cloudinary_url(base: &str, o: &Object, delivery_type: &str) -> String {
    let marker = format!("/{}/{delivery_type}/", o.resource_type.as_str());
    let from_secure = o.url.as_deref().and_then(|u| {
        let after_scheme = u.find("://").map_or(0, |i| i + 3);
        let path_at = after_scheme + u[after_scheme..].find('/')?;
        u[path_at..]
            .find(&marker)
            .map(|i| u[path_at + i + 1..].to_string())
    });
    let path = from_secure.unwrap_or_else(|| {
        let mut id = o.key.clone();
        if o.resource_type != ResourceType::Raw
            && let Some(f) = o.format.as_deref().filter(|f| !f.is_empty())
        {
            id.push('.');
            id.push_str(f);
        }
        let built = public_url("", &id);
        format!("{}/{delivery_type}{built}", o.resource_type.as_str())
    });
    format!("{}/{path}", base.trim_end_matches('/'))
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

/// A chunk of keys looked up and what the store answered for it.
type LookedUp = (Vec<String>, Result<Vec<Option<Object>>, StoreError>);

/// Point look-ups of one resource type in chunks, a few at once; results come back in any
/// order, each with its chunk (a failed chunk leaves exactly its keys undecided).
fn look_up(
    store: &dyn Store,
    rt: ResourceType,
    keys: Vec<String>,
) -> impl futures::Stream<Item = LookedUp> + '_ {
    let mut chunks = Vec::new();
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        chunks.push(keys.by_ref().take(LOOKUP_CHUNK).collect::<Vec<_>>());
    }
    futures::stream::iter(chunks)
        .map(move |chunk| async move {
            let result = store.lookup_many(rt, &chunk).await;
            (chunk, result)
        })
        .buffer_unordered(LOOKUP_CONCURRENCY)
}

/// A failed call of a store: a warning and an incomplete store; an unreachable one when the
/// store says so (metered stores do when their first call is refused).
fn store_failed(c: &mut Classifier<'_>, warnings: &mut Vec<Warning>, what: &str, e: &StoreError) {
    c.stats.complete = false;
    if e.reached() {
        warnings.push(Warning::StoreCall {
            store: c.cfg.name.clone(),
            what: what.to_string(),
            error: e.to_string(),
        });
    } else {
        c.stats.reachable = false;
        warnings.push(Warning::StoreUnreachable {
            store: c.cfg.name.clone(),
            error: e.to_string(),
        });
    }
}

/// Confirms the referenced keys no listing of this run returned: by point look-ups while they
/// cost less than a listing (SPEC §4), else by listing the whole store (marks only) when
/// `may_list`, else they stay undecided. Keys are also looked up in their other Unicode normal
/// forms (SPEC §2: a key that matches only after NFC is neither missing nor orphan).
async fn confirm_unseen(
    c: &mut Classifier<'_>,
    set: &mut RefSet,
    store: &dyn Store,
    job: &StoreJob,
    warnings: &mut Vec<Warning>,
    may_list: bool,
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
                    keys.extend(other_forms(public_id));
                }
            }
        } else {
            wanted[0].1.push(key.to_string());
            wanted[0].1.extend(other_forms(key));
        }
    }
    for (_, keys) in &mut wanted {
        keys.sort_unstable();
        keys.dedup();
    }
    let keys: usize = wanted.iter().map(|(_, k)| k.len()).sum();
    let look = match caps.lookup_batch {
        Some(batch) => {
            let lookup_calls: u64 = wanted
                .iter()
                .map(|(_, k)| k.len().div_ceil(batch) as u64)
                .sum();
            // The last full listing's cost, else one call per 500 referenced keys a type.
            let list_calls = job.list_cost.unwrap_or_else(|| {
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
            while let Some((chunk, result)) = looked.next().await {
                match result {
                    Ok(objs) => {
                        for o in objs.into_iter().flatten() {
                            mark_listed(set, &Listed::Object(o));
                        }
                    }
                    Err(e) => {
                        store_failed(c, warnings, "look-up failed", &e);
                        set.fail_lookups(rt, &chunk);
                    }
                }
            }
        }
    } else if may_list {
        c.stats.listed_instead = true;
        let mut listing = store.list(ListOptions {
            with_meta: false,
            exclude_prefixes: job.exclude.clone(),
            since: None,
        });
        while let Some(page) = listing.next().await {
            match page {
                Ok(items) => {
                    for i in &items {
                        if mark_listed(set, i) {
                            c.stats.confirm_listed += 1;
                        }
                    }
                }
                Err(e) => {
                    store_failed(c, warnings, "listing incomplete", &e);
                    set.all_unseen_undecided = true;
                }
            }
        }
    } else {
        set.all_unseen_undecided = true;
    }
}

/// One store's listing as the join reads it.
pub struct Listing<'a> {
    pub pages: ListStream<'a>,
    /// The listing was limited to the window (`ListOptions::since`): referenced keys it did not
    /// return are confirmed before they are called missing.
    pub limited: bool,
}

/// Joins one store's listing with the reference batches that point into it. `listing` is `None`
/// for a missing-files-only scan (referenced keys are then confirmed by look-ups or a listing,
/// whichever costs less); `store` answers those look-ups and nothing else.
pub async fn reconcile_store(
    job: &StoreJob,
    store: &dyn Store,
    listing: Option<Listing<'_>>,
    mut refs: impl Stream<Item = RefBatch> + Unpin,
) -> StoreOutcome {
    let cfg = &job.cfg;
    let mut set = RefSet::new();
    let mut warnings = Vec::new();
    let typed = !store
        .capabilities()
        .resource_types
        .contains(&ResourceType::Plain);
    let mut c = Classifier {
        cfg,
        cutoff: job.cutoff,
        policy: job.policy.as_ref(),
        now: job.now,
        stats: StoreStats {
            name: cfg.name.clone(),
            location: store.describe(),
            reachable: true,
            complete: true,
            ..StoreStats::default()
        },
        orphans: Vec::new(),
        need_meta: Vec::new(),
        unrepresentable: Vec::new(),
        skipped: Vec::new(),
        orphans_wanted: job.mode.orphans(),
        listing_failed: false,
    };
    let started = Instant::now();
    match listing {
        Some(listing) => {
            join_listing(
                &mut c,
                &mut set,
                listing.pages,
                &mut refs,
                job,
                &mut warnings,
            )
            .await;
            look_up_candidates(&mut c, store, &mut warnings).await;
            // A listing limited to the window says nothing of older objects: referenced keys it
            // did not return are confirmed before they are called missing. A listing that ended
            // early says nothing of the pages it did not reach: those keys are looked up when
            // that is cheap (listing again could fail the same way), else left undecided.
            if job.mode.missing() && c.stats.reachable {
                if c.listing_failed {
                    confirm_unseen(&mut c, &mut set, store, job, &mut warnings, false).await;
                } else if listing.limited {
                    confirm_unseen(&mut c, &mut set, store, job, &mut warnings, true).await;
                }
            }
        }
        None => {
            while let Some(b) = refs.next().await {
                set.add(b);
            }
            set.finish();
            confirm_unseen(&mut c, &mut set, store, job, &mut warnings, true).await;
        }
    }
    c.stats.list_time = started.elapsed();
    if !set.partial.is_empty() {
        let why = set
            .partial
            .iter()
            .map(|(name, error)| format!("reference `{name}` failed: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        withhold_orphans(&mut c.stats, &mut c.orphans, &mut warnings, &why);
    }
    let missing = if job.mode.missing() && c.stats.reachable {
        missing_of(&c, &set, typed, &mut warnings)
    } else {
        Vec::new()
    };
    name_warnings(&mut c, &set, &mut warnings);
    StoreOutcome {
        stats: c.stats,
        orphans: c.orphans,
        missing,
        warnings,
    }
}

/// The warnings that name keys: Unicode matches, unusable names (referenced or not), skipped
/// entries; and the unusable values that turned out to name a listed key.
fn name_warnings(c: &mut Classifier<'_>, set: &RefSet, warnings: &mut Vec<Warning>) {
    let store = &c.cfg.name;
    warnings.extend(unicode_warnings(set, store));
    c.stats.unparsed_named = set.named_rows();
    c.stats.unusable_named.clone_from(&set.unusable_named);
    let list = |names: &[String]| (store.clone(), names.len(), name_list(names));
    if !set.unusable_named.is_empty() {
        let (store, count, names) = list(&set.unusable_named);
        warnings.push(Warning::UnusableNamed {
            store,
            count,
            names,
        });
    }
    if !c.unrepresentable.is_empty() {
        let (store, count, names) = list(&c.unrepresentable);
        warnings.push(Warning::Unrepresentable {
            store,
            count,
            names,
        });
    }
    if !c.skipped.is_empty() {
        let (store, count, names) = list(&c.skipped);
        warnings.push(Warning::Skipped {
            store,
            count,
            names,
        });
    }
}

/// Reads the listing and the reference batches at once: pages that come before the reference
/// set is complete are held compactly, later ones are classified as they arrive.
async fn join_listing(
    c: &mut Classifier<'_>,
    set: &mut RefSet,
    mut listing: ListStream<'_>,
    refs: &mut (impl Stream<Item = RefBatch> + Unpin),
    job: &StoreJob,
    warnings: &mut Vec<Warning>,
) {
    let name = &job.cfg.name;
    let started = Instant::now();
    let mut pending = Some(Pending::default());
    let mut refs_open = true;
    let mut list_open = true;
    while refs_open || list_open {
        tokio::select! {
            batch = refs.next(), if refs_open => match batch {
                Some(b) => set.add(b),
                None => {
                    refs_open = false;
                    tracing::debug!(store = %name, keys = set.keys.len(), elapsed = ?started.elapsed(), "reference set complete");
                    set.finish();
                    if let Some(p) = pending.take() {
                        p.drain_into(c, set);
                    }
                }
            },
            page = listing.next(), if list_open => match page {
                Some(Ok(items)) => {
                    if let Some(p) = &job.progress {
                        let held = pending.as_ref().map_or(0, |p| (p.ends.len() + p.others.len()) as u64);
                        p(name, c.stats.listed + items.len() as u64 + held);
                    }
                    match pending.as_mut() {
                        Some(p) => items.into_iter().for_each(|i| p.push(i)),
                        None => items.into_iter().for_each(|i| c.take(set, i)),
                    }
                }
                Some(Err(e)) => {
                    c.listing_failed = true;
                    store_failed(c, warnings, "listing incomplete", &e);
                }
                None => {
                    list_open = false;
                    tracing::debug!(store = %name, listed = c.stats.listed, elapsed = ?started.elapsed(), "listing complete");
                }
            },
        }
    }
}

/// Objects listed without their size and time (`--all`): only the candidates are looked up.
async fn look_up_candidates(
    c: &mut Classifier<'_>,
    store: &dyn Store,
    warnings: &mut Vec<Warning>,
) {
    let need = std::mem::take(&mut c.need_meta);
    let mut looked = look_up(store, ResourceType::Plain, need);
    while let Some((_, result)) = looked.next().await {
        match result {
            Ok(objs) => objs.into_iter().flatten().for_each(|o| c.candidate(o)),
            Err(e) => {
                c.stats.complete = false;
                warnings.push(Warning::StoreCall {
                    store: c.cfg.name.clone(),
                    what: "look-up failed".into(),
                    error: e.to_string(),
                });
            }
        }
    }
}

/// The references no object answered. A key that matches a listed one only after Unicode
/// normalisation is neither missing nor orphan (SPEC §2); a key whose listing page or look-up
/// did not answer is undecided, not missing: the rows confirmed absent are still reported.
fn missing_of(
    c: &Classifier<'_>,
    set: &RefSet,
    typed: bool,
    warnings: &mut Vec<Warning>,
) -> Vec<Missing> {
    let mut missing = Vec::new();
    let mut undecided = 0;
    // Missing rows written `/k` or `./k` and confirmed by look-ups: an object named `/k`
    // itself is never looked up (SPEC §2), only a listing would show it.
    let mut written_so = 0;
    for &item in &set.items {
        if set.is_seen(item.sym) || set.nfc_hits.contains_key(&item.sym) {
            continue;
        }
        if set.undecided(item.sym) {
            undecided += 1;
            continue;
        }
        if c.stats.lookups.is_some()
            && (get_bit(&set.slash, item.sym) || get_bit(&set.dot_slash, item.sym))
        {
            written_so += 1;
        }
        missing.push(set.missing(item, set.key(item.sym).to_string(), typed));
    }
    if undecided > 0 {
        warnings.push(Warning::Unconfirmed {
            store: c.cfg.name.clone(),
            count: undecided,
        });
    }
    if written_so > 0 {
        warnings.push(Warning::LookupsCannotSee {
            store: c.cfg.name.clone(),
            count: written_so,
        });
    }
    missing
}

/// One warning per reference key that matches a listed identity only after NFC (the first few
/// named, then a count).
fn unicode_warnings(set: &RefSet, store: &str) -> Vec<Warning> {
    let mut pairs: std::collections::BTreeSet<(&str, &str)> = set
        .nfc_saved
        .iter()
        .map(|(sym, listed)| (set.key(*sym), listed.as_str()))
        .collect();
    for (&sym, listed) in &set.nfc_hits {
        if !set.is_seen(sym) {
            pairs.insert((set.key(sym), listed.as_str()));
        }
    }
    let mut out: Vec<Warning> = pairs
        .iter()
        .take(usize::try_from(NAMED_WARNINGS).unwrap_or(usize::MAX))
        .map(|(key, listed)| Warning::UnicodeMatch {
            store: store.to_string(),
            reference_key: (*key).to_string(),
            listed: (*listed).to_string(),
        })
        .collect();
    if pairs.len() > out.len() {
        out.push(Warning::MoreUnicodeMatches {
            store: store.to_string(),
            count: pairs.len() - out.len(),
        });
    }
    out
}

/// A store whose reference set is partial (a reference query failed or its database was out of
/// reach) cannot tell an orphan from an object the unread rows name: its orphans become
/// undecided and leave the counts (SPEC §4: an incomplete scan never reports what it cannot know).
fn withhold_orphans(
    stats: &mut StoreStats,
    orphans: &mut Vec<Orphan>,
    warnings: &mut Vec<Warning>,
    why: &str,
) {
    stats.references_partial = true;
    stats.complete = false;
    let count = orphans.len() as u64;
    if count == 0 {
        return;
    }
    let bytes: u64 = orphans.iter().map(|o| o.size).sum();
    orphans.clear();
    stats.orphans = stats.orphans.saturating_sub(count);
    stats.orphan_bytes = stats.orphan_bytes.saturating_sub(bytes);
    stats.objects_scanned = stats.objects_scanned.saturating_sub(count);
    stats.undecided += count;
    warnings.push(Warning::OrphansUndecided {
        store: stats.name.clone(),
        count,
        why: why.to_string(),
    });
}

/// Puts the findings of every store and reference together, in report order (SPEC §5), with
/// the references' warnings and the completeness they decide.
#[allow(clippy::too_many_arguments)] // one call site, each part a different thing the scan gathered
pub fn findings(
    started_at: DateTime<Utc>,
    window: Window,
    mode: ScanMode,
    outcomes: Vec<StoreOutcome>,
    references: Vec<ReferenceStats>,
    mut warnings: Vec<Warning>,
    mut complete: bool,
    budgets: Vec<Usage>,
) -> Findings {
    let mut stores = Vec::new();
    let mut orphans = Vec::new();
    let mut missing = Vec::new();
    let mut references = references;
    credit_named_values(&mut references, &outcomes);
    for mut out in outcomes {
        // The join withholds a store's orphans when a reference tells it it failed; this also
        // covers a reference that never got to say so (its database out of reach).
        let failed: Vec<String> = references
            .iter()
            .filter(|r| r.store == out.stats.name)
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("reference `{}` failed: {e}", r.name))
            })
            .collect();
        if !failed.is_empty() && !out.stats.references_partial {
            withhold_orphans(
                &mut out.stats,
                &mut out.orphans,
                &mut out.warnings,
                &failed.join("; "),
            );
        }
        complete &= out.stats.complete;
        warnings.extend(out.warnings);
        stores.push(out.stats);
        orphans.extend(out.orphans);
        missing.extend(out.missing);
    }
    for r in &references {
        warnings.extend(r.warnings.iter().cloned());
        if r.unparsed > NAMED_WARNINGS {
            warnings.push(Warning::MoreUnparsed {
                reference: r.name.clone(),
                count: r.unparsed - NAMED_WARNINGS,
            });
        }
        if let Some(e) = &r.error {
            complete = false;
            warnings.push(Warning::ReferenceFailed {
                reference: r.name.clone(),
                error: e.clone(),
            });
        } else if r.unparsed * 100 > r.values {
            complete = false;
            warnings.push(Warning::TooManyUnparsed {
                reference: r.name.clone(),
                unparsed: r.unparsed,
                values: r.values,
            });
        }
    }
    // SPEC §5: by store, key, resource_type, each as text ("image" < "raw" < "video").
    orphans.sort_by(|a, b| {
        (&a.store, &a.key, a.resource_type.as_str()).cmp(&(
            &b.store,
            &b.key,
            b.resource_type.as_str(),
        ))
    });
    missing.sort_by(|a, b| {
        status_rank(&a.status)
            .cmp(&status_rank(&b.status))
            .then(a.reference_index.cmp(&b.reference_index))
            .then_with(|| natural_cmp(a.record_id.as_deref(), b.record_id.as_deref()))
            .then_with(|| a.key.cmp(&b.key))
    });
    Findings {
        started_at,
        finished_at: Utc::now().max(started_at),
        window,
        mode,
        stores,
        references,
        orphans,
        missing,
        warnings,
        complete,
        budgets,
    }
}

/// Unusable values that name a listed key are references, not unparsed (SPEC §2): taken off
/// each reference's unparsed count (once, when overlapping stores both list the name), and their
/// "cannot read" warnings dropped.
fn credit_named_values(references: &mut [ReferenceStats], outcomes: &[StoreOutcome]) {
    let mut credit: HashMap<&str, u64> = HashMap::new();
    let mut names: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for out in outcomes {
        for (reference, rows) in &out.stats.unparsed_named {
            let c = credit.entry(reference.as_str()).or_default();
            *c = (*c).max(*rows);
        }
        names.extend(out.stats.unusable_named.iter().map(String::as_str));
    }
    if credit.is_empty() {
        return;
    }
    for r in references.iter_mut() {
        let Some(&rows) = credit.get(r.name.as_str()) else {
            continue;
        };
        r.unparsed = r.unparsed.saturating_sub(rows);
        r.warnings.retain(|w| match w {
            Warning::Unparsed { value, .. } => {
                let stripped = value
                    .strip_prefix("./")
                    .or_else(|| value.strip_prefix('/'))
                    .unwrap_or(value);
                !names.contains(value.as_str()) && !names.contains(stripped)
            }
            _ => true,
        });
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;
    use futures::stream;

    use super::*;
    use crate::config::{Ignore, StoreLocation};
    use crate::store::memory::MemoryStore;
    use crate::store::{Capabilities, ListStream};

    const HOUR: Duration = Duration::from_hours(1);

    fn store_cfg(ignore: &[&str]) -> StoreConfig {
        let patterns: Vec<String> = ignore.iter().map(ToString::to_string).collect();
        StoreConfig {
            name: "media".into(),
            location: StoreLocation::Local {
                root: "/nowhere".into(),
            },
            ignore: Ignore::new(&patterns).expect("globs"),
            min_age: HOUR,
            public_url: None,
            quarantine: None,
            list_concurrency: 1,
            max_lookups: 10_000,
            overlaps: Vec::new(),
        }
    }

    fn reference() -> ReferenceConfig {
        ReferenceConfig {
            name: "posts".into(),
            database: 0,
            store: 0,
            query: "SELECT id, image AS key FROM posts".into(),
            key_format: KeyFormat::Path,
            key_prefix: String::new(),
            link: None,
            track: None,
        }
    }

    fn job(cfg: StoreConfig, mode: ScanMode, cutoff: Option<DateTime<Utc>>) -> StoreJob {
        StoreJob {
            cfg,
            mode,
            now: Utc::now(),
            cutoff,
            exclude: Vec::new(),
            list_cost: None,
            progress: None,
            policy: None,
        }
    }

    /// Reference rows `(id, key)` through the parser the scan uses, as the batches it sends.
    fn batches(rows: &[(&str, &str)], mode: ScanMode) -> Vec<RefBatch> {
        use crate::refs::RowSink as _;
        let mut p = RowParser::new(0, &reference(), KeyContext::default(), None, mode);
        let mut out = Vec::new();
        for (id, key) in rows {
            // The parser reads the columns of `wanted()`: key, id, then the optional ones.
            let cols = [Some(*key), Some(*id), None, None, None, None, None];
            out.extend(p.row(&cols));
        }
        out.extend(p.flush());
        out
    }

    fn old(store: &MemoryStore, key: &str) {
        let t = Utc::now() - TimeDelta::days(3);
        store.put(ResourceType::Plain, key, 10, t);
    }

    async fn join(
        job: &StoreJob,
        store: &MemoryStore,
        listing: Option<Listing<'_>>,
        refs: Vec<RefBatch>,
    ) -> StoreOutcome {
        reconcile_store(job, store, listing, stream::iter(refs)).await
    }

    fn listing(store: &MemoryStore, job: &StoreJob) -> Listing<'static> {
        // The memory store lists a snapshot: collect it so the listing outlives the borrow.
        let opts = job.list_options(store);
        let limited = opts.since.is_some();
        let pages: Vec<_> = futures::executor::block_on(store.list(opts).collect::<Vec<_>>());
        Listing {
            pages: Box::pin(stream::iter(pages)) as ListStream<'static>,
            limited,
        }
    }

    fn keys(orphans: &[Orphan]) -> Vec<&str> {
        orphans.iter().map(|o| o.key.as_str()).collect()
    }

    #[tokio::test]
    async fn orphans_missing_recent_and_ignored_are_told_apart() {
        let store = MemoryStore::new("m");
        for k in ["a.jpg", "b.jpg", "orphan.jpg", "static/logo.svg"] {
            old(&store, k);
        }
        store.put(ResourceType::Plain, "new.jpg", 5, Utc::now());
        let j = job(store_cfg(&["static/**"]), ScanMode::Both, None);
        let rows = [("1", "a.jpg"), ("2", "/b.jpg"), ("3", "gone.jpg")];
        let out = join(
            &j,
            &store,
            Some(listing(&store, &j)),
            batches(&rows, j.mode),
        )
        .await;
        assert_eq!(keys(&out.orphans), ["orphan.jpg"]);
        let missing: Vec<(&str, Option<&str>)> = out
            .missing
            .iter()
            .map(|m| (m.key.as_str(), m.record_id.as_deref()))
            .collect();
        assert_eq!(missing, [("gone.jpg", Some("3"))]);
        let s = &out.stats;
        assert_eq!(
            (s.listed, s.valid, s.orphans, s.too_recent, s.ignored),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(
            s.objects_scanned,
            s.valid + s.orphans + s.too_recent + s.ignored
        );
        assert!(s.complete && out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[tokio::test]
    async fn references_that_arrive_after_the_listing_give_the_same_answer() {
        let store = MemoryStore::new("m");
        for i in 0..3000 {
            old(&store, &format!("k/{i:04}.jpg"));
        }
        let rows: Vec<(String, String)> = (0..3000)
            .step_by(3)
            .map(|i| (i.to_string(), format!("k/{i:04}.jpg")))
            .collect();
        let rows: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let j = job(store_cfg(&[]), ScanMode::Both, None);
        // Early: every batch before the first page. Late: the listing is read first, held
        // compactly, and classified once the reference set is complete.
        let early = join(
            &j,
            &store,
            Some(listing(&store, &j)),
            batches(&rows, j.mode),
        )
        .await;
        let late_refs = stream::once(async { tokio::task::yield_now().await })
            .flat_map(|()| stream::iter(batches(&rows, ScanMode::Both)));
        let late =
            reconcile_store(&j, &store, Some(listing(&store, &j)), Box::pin(late_refs)).await;
        assert_eq!(early.orphans.len(), 2000);
        assert_eq!(keys(&early.orphans), keys(&late.orphans));
        assert_eq!(early.stats.valid, late.stats.valid);
    }

    #[tokio::test]
    async fn a_windowed_listing_confirms_older_references_by_look_ups() {
        let store = MemoryStore::new("m").with_capabilities(Capabilities {
            lists_since: true,
            ..Capabilities::plain(1000)
        });
        old(&store, "old-but-referenced.jpg");
        store.put(
            ResourceType::Plain,
            "fresh.jpg",
            1,
            Utc::now() - TimeDelta::hours(2),
        );
        let cutoff = Utc::now() - TimeDelta::days(1);
        let j = job(store_cfg(&[]), ScanMode::Both, Some(cutoff));
        let rows = [("1", "old-but-referenced.jpg"), ("2", "truly-gone.jpg")];
        let list = listing(&store, &j);
        assert!(list.limited);
        let out = join(&j, &store, Some(list), batches(&rows, j.mode)).await;
        // The old file is outside the window and was not listed, yet it is not missing.
        assert_eq!(out.missing.len(), 1);
        assert_eq!(out.missing[0].key, "truly-gone.jpg");
        assert_eq!(out.stats.lookups, Some(2));
        assert_eq!(keys(&out.orphans), ["fresh.jpg"]);
    }

    #[tokio::test]
    async fn a_reference_that_matches_only_after_nfc_is_neither_orphan_nor_missing() {
        let store = MemoryStore::new("m");
        old(&store, "caf\u{e9}.jpg");
        let j = job(store_cfg(&[]), ScanMode::Both, None);
        let rows = [("1", "cafe\u{301}.jpg")];
        let out = join(
            &j,
            &store,
            Some(listing(&store, &j)),
            batches(&rows, j.mode),
        )
        .await;
        assert!(out.orphans.is_empty(), "{:?}", out.orphans);
        assert!(out.missing.is_empty(), "{:?}", out.missing);
        assert!(
            matches!(out.warnings.as_slice(), [Warning::UnicodeMatch { .. }]),
            "{:?}",
            out.warnings
        );
    }

    #[tokio::test]
    async fn a_listing_that_fails_part_way_reports_no_unconfirmed_missing_files() {
        let store = MemoryStore::new("m");
        old(&store, "a.jpg");
        // No look-ups allowed: the keys the listing did not reach stay undecided.
        let mut cfg = store_cfg(&[]);
        cfg.max_lookups = 0;
        let j = job(cfg, ScanMode::Both, None);
        let pages: ListStream<'static> = Box::pin(stream::iter([
            Ok(vec![Listed::Object(Object::plain(
                "a.jpg".into(),
                Some(1),
                Some(Utc::now() - TimeDelta::days(3)),
            ))]),
            Err(StoreError::transient("connection reset")),
        ]));
        let rows = [("1", "a.jpg"), ("2", "maybe-on-page-2.jpg")];
        let out = join(
            &j,
            &store,
            Some(Listing {
                pages,
                limited: false,
            }),
            batches(&rows, j.mode),
        )
        .await;
        assert!(!out.stats.complete);
        assert!(out.stats.reachable);
        assert!(out.missing.is_empty());
        assert!(
            out.warnings
                .iter()
                .any(|w| matches!(w, Warning::Unconfirmed { count: 1, .. })),
            "{:?}",
            out.warnings
        );
    }

    fn failing_listing(first: &str) -> Listing<'static> {
        let pages: ListStream<'static> = Box::pin(stream::iter([
            Ok(vec![Listed::Object(Object::plain(
                first.into(),
                Some(1),
                Some(Utc::now() - TimeDelta::days(3)),
            ))]),
            Err(StoreError::transient("connection reset")),
        ]));
        Listing {
            pages,
            limited: false,
        }
    }

    #[tokio::test]
    async fn a_listing_that_fails_part_way_still_reports_keys_look_ups_confirm_absent() {
        let store = MemoryStore::new("m");
        old(&store, "a.jpg");
        old(&store, "on-page-2.jpg");
        let j = job(store_cfg(&[]), ScanMode::Both, None);
        let rows = [("1", "a.jpg"), ("2", "on-page-2.jpg"), ("3", "gone.jpg")];
        let out = join(
            &j,
            &store,
            Some(failing_listing("a.jpg")),
            batches(&rows, j.mode),
        )
        .await;
        assert!(!out.stats.complete);
        let missing: Vec<&str> = out.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["gone.jpg"], "{:?}", out.warnings);
    }

    /// Reference rows with a `created_at` far outside any window (never checked for missing).
    fn old_rows(
        rows: &[(&str, &str)],
        mode: ScanMode,
        cutoff: Option<DateTime<Utc>>,
    ) -> Vec<RefBatch> {
        use crate::refs::RowSink as _;
        let mut p = RowParser::new(0, &reference(), KeyContext::default(), cutoff, mode);
        let mut out = Vec::new();
        for (id, key) in rows {
            let cols = [
                Some(*key),
                Some(*id),
                None,
                None,
                None,
                Some("2001-01-01 00:00:00"),
                None,
            ];
            out.extend(p.row(&cols));
        }
        out.extend(p.flush());
        out
    }

    #[tokio::test]
    async fn an_nfd_row_outside_the_window_keeps_an_nfc_object_in_every_mode() {
        let store = MemoryStore::new("m");
        store.put(
            ResourceType::Plain,
            "caf\u{e9}.jpg",
            10,
            Utc::now() - TimeDelta::days(3),
        );
        let cutoff = Some(Utc::now() - TimeDelta::days(30));
        for mode in [ScanMode::Both, ScanMode::OrphansOnly, ScanMode::MissingOnly] {
            let j = job(store_cfg(&[]), mode, cutoff);
            let rows = [("1", "cafe\u{301}.jpg")];
            let listing = mode.orphans().then(|| listing(&store, &j));
            let out = join(&j, &store, listing, old_rows(&rows, mode, cutoff)).await;
            assert!(out.orphans.is_empty(), "{mode:?}: {:?}", out.orphans);
            assert!(out.missing.is_empty(), "{mode:?}: {:?}", out.missing);
            // A row outside the window is not checked for missing: only the orphan side speaks.
            if mode.orphans() {
                assert_eq!((out.stats.valid, out.stats.orphans), (1, 0), "{mode:?}");
                assert!(
                    out.warnings
                        .iter()
                        .any(|w| matches!(w, Warning::UnicodeMatch { .. })),
                    "{mode:?}: {:?}",
                    out.warnings
                );
            }
        }
    }

    #[tokio::test]
    async fn missing_only_looks_up_the_other_normal_forms() {
        let store = MemoryStore::new("m");
        old(&store, "cafe\u{301}.jpg");
        let j = job(store_cfg(&[]), ScanMode::MissingOnly, None);
        let rows = [("1", "caf\u{e9}.jpg"), ("2", "gone.jpg")];
        let out = join(&j, &store, None, batches(&rows, j.mode)).await;
        let missing: Vec<&str> = out.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["gone.jpg"]);
        assert!(
            matches!(out.warnings.as_slice(), [Warning::UnicodeMatch { .. }]),
            "{:?}",
            out.warnings
        );
    }

    #[tokio::test]
    async fn a_failed_reference_leaves_its_store_without_orphans() {
        let store = MemoryStore::new("m");
        for k in ["a.jpg", "b.jpg", "c.jpg"] {
            old(&store, k);
        }
        let j = job(store_cfg(&[]), ScanMode::Both, None);
        let mut refs = batches(&[("1", "a.jpg")], j.mode);
        refs.push(RefBatch::failed(0, "posts", "connection lost"));
        let out = join(&j, &store, Some(listing(&store, &j)), refs).await;
        assert!(out.orphans.is_empty(), "{:?}", out.orphans);
        let s = &out.stats;
        assert_eq!((s.orphans, s.undecided, s.valid), (0, 2, 1));
        assert_eq!(
            s.objects_scanned,
            s.valid + s.orphans + s.too_recent + s.ignored
        );
        assert!(!s.complete);
        assert!(
            out.warnings.iter().any(|w| matches!(
                w,
                Warning::OrphansUndecided { count: 2, why, .. } if why.contains("connection lost")
            )),
            "{:?}",
            out.warnings
        );
    }

    #[tokio::test]
    async fn path_values_name_unusable_listed_keys_spelt_as_written() {
        let store = MemoryStore::new("m");
        old(&store, "/uploads/lead.jpg");
        old(&store, "a//b.jpg");
        old(&store, "kept.jpg");
        let j = job(store_cfg(&[]), ScanMode::Both, None);
        let rows = [
            ("1", "/uploads/lead.jpg"),
            ("2", "a//b.jpg"),
            ("3", "/gone.jpg"),
            ("4", "/kept.jpg"),
            // Without the leading `/` this names `uploads/other.jpg` only.
            ("5", "uploads/other.jpg"),
        ];
        let out = join(
            &j,
            &store,
            Some(listing(&store, &j)),
            batches(&rows, j.mode),
        )
        .await;
        let missing: Vec<&str> = out.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["gone.jpg", "uploads/other.jpg"]);
        assert!(out.orphans.is_empty(), "{:?}", out.orphans);
        assert_eq!(out.stats.unparsed_named, [("posts".to_string(), 1)]);
        assert!(
            out.warnings
                .iter()
                .any(|w| matches!(w, Warning::UnusableNamed { count: 2, .. })),
            "{:?}",
            out.warnings
        );
        assert_eq!((out.stats.listed, out.stats.unrepresentable), (1, 2));
    }

    #[tokio::test]
    async fn missing_rows_written_with_a_leading_slash_say_look_ups_cannot_see_such_names() {
        let store = MemoryStore::new("m");
        old(&store, "/uploads/lead.jpg");
        let j = job(store_cfg(&[]), ScanMode::MissingOnly, None);
        let rows = [("1", "/uploads/lead.jpg"), ("2", "gone.jpg")];
        let out = join(&j, &store, None, batches(&rows, j.mode)).await;
        let missing: Vec<&str> = out.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["uploads/lead.jpg", "gone.jpg"]);
        assert!(
            out.warnings
                .iter()
                .any(|w| matches!(w, Warning::LookupsCannotSee { count: 1, .. })),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn orphans_sort_by_resource_type_as_text() {
        let o = |rt: ResourceType| Orphan {
            store: "media".into(),
            key: "a".into(),
            resource_type: rt,
            size: 1,
            uploaded_at: None,
            url: None,
            format: None,
        };
        let out = StoreOutcome {
            stats: StoreStats {
                name: "media".into(),
                complete: true,
                reachable: true,
                ..StoreStats::default()
            },
            orphans: vec![
                o(ResourceType::Video),
                o(ResourceType::Raw),
                o(ResourceType::Image),
            ],
            missing: Vec::new(),
            warnings: Vec::new(),
        };
        let f = findings(
            Utc::now(),
            Window::All,
            ScanMode::Both,
            vec![out],
            Vec::new(),
            Vec::new(),
            true,
            Vec::new(),
        );
        let order: Vec<&str> = f.orphans.iter().map(|o| o.resource_type.as_str()).collect();
        assert_eq!(order, ["image", "raw", "video"]);
    }

    #[test]
    fn cloudinary_orphan_urls_take_the_public_url() {
        let o = Object {
            url: Some("https://res.cloudinary.com/demo/image/upload/v17/f/a%20b.jpg".into()),
            format: Some("jpg".into()),
            ..Object::plain("f/a b".into(), Some(1), None)
        };
        let o = Object {
            resource_type: ResourceType::Image,
            ..o
        };
        assert_eq!(
            cloudinary_url("https://images.example.com/", &o, "upload"),
            "https://images.example.com/image/upload/v17/f/a%20b.jpg"
        );
        let bare = Object { url: None, ..o };
        assert_eq!(
            cloudinary_url("https://images.example.com", &bare, "upload"),
            "https://images.example.com/image/upload/f/a%20b.jpg"
        );
    }

    #[tokio::test]
    async fn missing_only_looks_keys_up_without_listing() {
        let store = MemoryStore::new("m");
        old(&store, "here.jpg");
        let j = job(store_cfg(&[]), ScanMode::MissingOnly, None);
        let rows = [("1", "here.jpg"), ("2", "gone.jpg")];
        let out = join(&j, &store, None, batches(&rows, j.mode)).await;
        assert_eq!(out.missing.len(), 1);
        assert_eq!(out.missing[0].key, "gone.jpg");
        assert_eq!(out.stats.listed, 0);
        assert_eq!(out.stats.lookups, Some(2));
    }

    #[test]
    fn findings_sort_missing_active_first_and_record_ids_as_numbers() {
        let m = |id: &str, status: &str| Missing {
            reference: "posts".into(),
            reference_index: 0,
            record_id: Some(id.into()),
            title: None,
            owner: None,
            media_type: None,
            key: format!("k{id}"),
            created_at: None,
            status: status.into(),
            link: None,
        };
        let out = StoreOutcome {
            stats: StoreStats {
                name: "media".into(),
                complete: true,
                reachable: true,
                ..StoreStats::default()
            },
            orphans: Vec::new(),
            missing: vec![m("10", "DELETED"), m("9", "ACTIVE"), m("10", "ACTIVE")],
            warnings: Vec::new(),
        };
        let f = findings(
            Utc::now(),
            Window::All,
            ScanMode::Both,
            vec![out],
            Vec::new(),
            Vec::new(),
            true,
            Vec::new(),
        );
        let order: Vec<(&str, &str)> = f
            .missing
            .iter()
            .map(|m| {
                (
                    m.record_id.as_deref().unwrap_or_default(),
                    m.status.as_str(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [("9", "ACTIVE"), ("10", "ACTIVE"), ("10", "DELETED")]
        );
        assert!(f.complete);
    }
}
