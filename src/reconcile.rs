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
}

impl StoreJob {
    /// The listing the job wants: with sizes and times when there is a window, and limited to
    /// it where the store can do that.
    pub fn list_options(&self, store: &dyn Store) -> ListOptions {
        ListOptions {
            with_meta: self.cutoff.is_some(),
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
}

impl RefBatch {
    /// The batch's keys as another store that overlaps theirs spells them (SPEC §6 invariant
    /// 1): they protect its objects, and are checked for missing files only in their own store.
    #[must_use]
    pub fn translated(&self, view: &crate::overlap::View) -> RefBatch {
        let mut out = RefBatch {
            reference: self.reference,
            name: self.name.clone(),
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
) -> impl futures::Stream<Item = Result<Vec<Option<Object>>, StoreError>> + '_ {
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
/// cost less than a listing (SPEC §4), else by listing the whole store (marks only).
async fn confirm_unseen(
    c: &mut Classifier<'_>,
    set: &mut RefSet,
    store: &dyn Store,
    job: &StoreJob,
    warnings: &mut Vec<Warning>,
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
            exclude_prefixes: job.exclude.clone(),
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
        nfc: HashMap::new(),
        unrepresentable: Vec::new(),
        skipped: Vec::new(),
        orphans_wanted: job.mode.orphans(),
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
            // did not return are confirmed before they are called missing.
            if listing.limited && job.mode.missing() && c.stats.reachable {
                confirm_unseen(&mut c, &mut set, store, job, &mut warnings).await;
            }
        }
        None => {
            while let Some(b) = refs.next().await {
                set.add(b);
            }
            set.finish();
            confirm_unseen(&mut c, &mut set, store, job, &mut warnings).await;
        }
    }
    c.stats.list_time = started.elapsed();
    let missing = if job.mode.missing() && c.stats.reachable {
        missing_of(&mut c, &set, typed, &mut warnings)
    } else {
        Vec::new()
    };
    if !c.unrepresentable.is_empty() {
        warnings.push(Warning::Unrepresentable {
            store: cfg.name.clone(),
            count: c.unrepresentable.len(),
            names: name_list(&c.unrepresentable),
        });
    }
    if !c.skipped.is_empty() {
        warnings.push(Warning::Skipped {
            store: cfg.name.clone(),
            count: c.skipped.len(),
            names: name_list(&c.skipped),
        });
    }
    StoreOutcome {
        stats: c.stats,
        orphans: c.orphans,
        missing,
        warnings,
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
                Some(Err(e)) => store_failed(c, warnings, "listing incomplete", &e),
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
    while let Some(result) = looked.next().await {
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
/// normalisation is neither missing nor orphan (SPEC §2); when the listing or look-ups did not
/// finish, unseen references are unknown, not missing.
fn missing_of(
    c: &mut Classifier<'_>,
    set: &RefSet,
    typed: bool,
    warnings: &mut Vec<Warning>,
) -> Vec<Missing> {
    let store = &c.cfg.name;
    if !c.stats.complete {
        let unseen = set.items.iter().filter(|i| !set.is_seen(i.sym)).count();
        if unseen > 0 {
            warnings.push(Warning::Unconfirmed {
                store: store.clone(),
                count: unseen,
            });
        }
        return Vec::new();
    }
    let mut orphan_by_nfc: HashMap<String, usize> = HashMap::new();
    for (i, o) in c.orphans.iter().enumerate() {
        if !o.key.is_ascii() {
            orphan_by_nfc.insert(ident(o.resource_type, &o.key).nfc().collect(), i);
        }
    }
    let mut missing = Vec::new();
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
                warnings.push(Warning::UnicodeMatch {
                    store: store.clone(),
                    reference_key: key,
                    listed,
                });
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
    missing
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
    for out in outcomes {
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
        let j = job(store_cfg(&[]), ScanMode::Both, None);
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
