//! A recorded scan's findings read page by page for the API (SPEC §8): keyset paging (never
//! OFFSET, so a page deep in a million orphans costs what the first one does), filters by store,
//! key prefix and status, and a sort on any report column with the report's order (SPEC §5) as
//! the tie-break, so that every row has one place and a cursor walks each row once.
//!
//! Text is compared byte-wise on both backends (`COLLATE "C"` on PostgreSQL, SQLite's binary
//! default): that is the report's order (Rust's `str` order), and the indexes of
//! `0011_finding_pages.sql` are built the same way.

use std::fmt::Write as _;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{Arg, Dialect, Row, State, context};
use crate::domain::scan::{ScanMode, ScanState, Summary, Window};
use crate::error::{Error, Result};

/// One value of a row's place in an order: what a cursor carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyPart {
    Int(i64),
    Text(String),
}

/// A column the pages may be sorted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    name: &'static str,
    /// Can be NULL: sorted and compared as `''` so that row comparisons never meet a NULL.
    nullable: bool,
    int: bool,
}

const fn text(name: &'static str, nullable: bool) -> Column {
    Column {
        name,
        nullable,
        int: false,
    }
}

const ORPHAN_COLUMNS: [Column; 7] = [
    text("store", false),
    text("key", false),
    text("resource_type", false),
    Column {
        name: "size_bytes",
        nullable: false,
        int: true,
    },
    text("uploaded_at", true),
    text("format", false),
    text("url", true),
];

/// The report's order of orphans (SPEC §5), also every orphan sort's tie-break.
const ORPHAN_ORDER: [Column; 3] = [ORPHAN_COLUMNS[0], ORPHAN_COLUMNS[1], ORPHAN_COLUMNS[2]];

const MISSING_COLUMNS: [Column; 9] = [
    text("reference", false),
    text("record_id", true),
    text("title", true),
    text("owner", true),
    text("media_type", true),
    text("key", false),
    text("created_at", true),
    text("status", false),
    text("link", true),
];

/// `ord` is the report's order of missing rows (SPEC §5), recorded as the scan wrote them.
const MISSING_ORDER: [Column; 1] = [Column {
    name: "ord",
    nullable: false,
    int: true,
}];

/// Which findings a page reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    Orphans,
    Missing,
}

impl FindingKind {
    fn table(self) -> &'static str {
        match self {
            FindingKind::Orphans => "scan_orphans",
            FindingKind::Missing => "scan_missing",
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            FindingKind::Orphans => &ORPHAN_COLUMNS,
            FindingKind::Missing => &MISSING_COLUMNS,
        }
    }

    fn tie_break(self) -> &'static [Column] {
        match self {
            FindingKind::Orphans => &ORPHAN_ORDER,
            FindingKind::Missing => &MISSING_ORDER,
        }
    }

    fn select(self) -> &'static str {
        match self {
            FindingKind::Orphans => {
                "store, resource_type, key, size_bytes, uploaded_at, format, url"
            }
            FindingKind::Missing => {
                "ord, reference, record_id, title, owner, media_type, key, created_at, status, link"
            }
        }
    }
}

/// A sort asked for: a column of the findings (`size_mb` is `size_bytes`), descending when
/// written with a leading `-`. Unknown columns are a usage error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    column: Option<Column>,
    pub descending: bool,
}

impl std::hash::Hash for Column {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.name.hash(h);
    }
}

impl Sort {
    /// `None` or `""`: the report's order.
    pub fn parse(findings: FindingKind, s: Option<&str>) -> Result<Sort> {
        let s = s.unwrap_or("").trim();
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.is_empty() {
            return Ok(Sort {
                column: None,
                descending,
            });
        }
        let name = if findings == FindingKind::Orphans && name == "size_mb" {
            "size_bytes"
        } else {
            name
        };
        let column = findings
            .columns()
            .iter()
            .find(|c| c.name == name)
            .copied()
            .ok_or_else(|| {
                Error::Usage(format!(
                    "cannot sort by `{name}`; sort by one of {} (a leading `-` sorts descending)",
                    findings
                        .columns()
                        .iter()
                        .map(|c| c.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(Sort {
            column: Some(column),
            descending,
        })
    }

    /// How the sort is written, for cursors: a cursor of one sort is refused by another.
    pub fn spelling(&self) -> String {
        format!(
            "{}{}",
            if self.descending { "-" } else { "" },
            self.column.map_or("", |c| c.name)
        )
    }

    /// The columns of the order, the sorted one first, then the tie-break; a column the
    /// filter fixes to one value is left out (it orders nothing, and SQLite would sort the
    /// rest of each page's rows in a temporary tree instead of seeking the index).
    fn order(&self, findings: FindingKind, filter: &Filter) -> Vec<Column> {
        let fixed = |c: &Column| match (findings, c.name) {
            (FindingKind::Orphans, "store") => filter.store.is_some(),
            (FindingKind::Missing, "status") => filter.status.is_some(),
            _ => false,
        };
        let mut cols: Vec<Column> = self.column.into_iter().collect();
        cols.extend(
            findings
                .tie_break()
                .iter()
                .filter(|c| Some(**c) != self.column),
        );
        cols.retain(|c| !fixed(c));
        cols
    }
}

/// What a page, or a count, is narrowed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Orphans: of this store.
    pub store: Option<String>,
    /// Missing rows: of these references (a store's, from the config); `Some(empty)` matches
    /// nothing.
    pub references: Option<Vec<String>>,
    /// The key starts with this.
    pub prefix: Option<String>,
    /// Missing rows: this status, exactly (`ACTIVE`, `DELETED`).
    pub status: Option<String>,
}

/// One page's question.
#[derive(Debug, Clone)]
pub struct PageAsk<'a> {
    pub scan_id: i64,
    pub findings: FindingKind,
    pub filter: &'a Filter,
    pub sort: Sort,
    /// The place of the last row of the previous page.
    pub after: Option<&'a [KeyPart]>,
    pub limit: u32,
}

/// An orphan row as recorded; times are the recorded RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanRow {
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub size_bytes: u64,
    pub uploaded_at: Option<String>,
    pub format: String,
    pub url: Option<String>,
}

/// A missing row as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRow {
    pub ord: i64,
    pub reference: String,
    pub record_id: Option<String>,
    pub title: Option<String>,
    pub owner: Option<String>,
    pub media_type: Option<String>,
    pub key: String,
    pub created_at: Option<String>,
    pub status: String,
    pub link: Option<String>,
}

impl OrphanRow {
    fn part(&self, c: &Column) -> KeyPart {
        let t = |s: &str| KeyPart::Text(s.to_string());
        match c.name {
            "store" => t(&self.store),
            "key" => t(&self.key),
            "resource_type" => t(&self.resource_type),
            "size_bytes" => KeyPart::Int(i64::try_from(self.size_bytes).unwrap_or(i64::MAX)),
            "uploaded_at" => t(self.uploaded_at.as_deref().unwrap_or("")),
            "format" => t(&self.format),
            _ => t(self.url.as_deref().unwrap_or("")),
        }
    }

    /// As the report writers take it.
    pub fn to_orphan(&self) -> crate::domain::scan::Orphan {
        crate::domain::scan::Orphan {
            store: self.store.clone(),
            key: self.key.clone(),
            resource_type: crate::domain::ResourceType::parse_cloudinary(&self.resource_type)
                .unwrap_or(crate::domain::ResourceType::Plain),
            size: self.size_bytes,
            uploaded_at: self
                .uploaded_at
                .as_deref()
                .and_then(crate::time::parse_rfc3339),
            url: self.url.clone(),
            format: Some(self.format.clone()),
        }
    }
}

impl MissingRow {
    fn part(&self, c: &Column) -> KeyPart {
        let t = |s: Option<&str>| KeyPart::Text(s.unwrap_or("").to_string());
        match c.name {
            "ord" => KeyPart::Int(self.ord),
            "reference" => t(Some(&self.reference)),
            "record_id" => t(self.record_id.as_deref()),
            "title" => t(self.title.as_deref()),
            "owner" => t(self.owner.as_deref()),
            "media_type" => t(self.media_type.as_deref()),
            "key" => t(Some(&self.key)),
            "created_at" => t(self.created_at.as_deref()),
            "status" => t(Some(&self.status)),
            _ => t(self.link.as_deref()),
        }
    }

    /// As the report writers take it.
    pub fn to_missing(&self) -> crate::domain::scan::Missing {
        crate::domain::scan::Missing {
            reference: self.reference.clone(),
            reference_index: 0,
            record_id: self.record_id.clone(),
            title: self.title.clone(),
            owner: self.owner.clone(),
            media_type: self.media_type.clone(),
            key: self.key.clone(),
            created_at: self
                .created_at
                .as_deref()
                .and_then(crate::time::parse_rfc3339),
            status: self.status.clone(),
            link: self.link.clone(),
        }
    }
}

/// A page of one kind of findings.
#[derive(Debug, Clone)]
pub enum PageRows {
    Orphans(Vec<OrphanRow>),
    Missing(Vec<MissingRow>),
}

impl PageRows {
    pub fn len(&self) -> usize {
        match self {
            PageRows::Orphans(v) => v.len(),
            PageRows::Missing(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A page and, when more rows follow, the place of its last row.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: PageRows,
    pub next: Option<Vec<KeyPart>>,
}

/// A recorded scan as the API shows it: the JSON report's `scan` and `summary` (SPEC §5).
#[derive(Debug, Clone)]
pub struct ScanView {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub window: Window,
    pub mode: ScanMode,
    pub stores: Vec<String>,
    pub state: ScanState,
    pub api_calls: IndexMap<String, u64>,
    pub warnings: Vec<String>,
    pub summary: Option<Summary>,
}

const VIEW_COLUMNS: &str =
    "id, started_at, finished_at, scan_window, mode, stores, state, api_calls, warnings, summary";

fn json<T: serde::de::DeserializeOwned>(t: Option<String>) -> Option<T> {
    t.and_then(|t| serde_json::from_str(&t).ok())
}

fn view(mut r: Row) -> Result<ScanView> {
    let window_text = r.text(3)?;
    let window = serde_json::from_str(&window_text)
        .map_err(|e| Error::State(format!("scan window `{window_text}` cannot be read: {e}")))?;
    Ok(ScanView {
        id: r.int(0)?,
        started_at: r.text(1)?,
        finished_at: r.opt_text(2)?,
        window,
        mode: r.word(4, "scan mode")?,
        stores: json(Some(r.text(5)?)).unwrap_or_default(),
        state: r.word(6, "scan state")?,
        api_calls: json(r.opt_text(7)?).unwrap_or_default(),
        warnings: json(r.opt_text(8)?).unwrap_or_default(),
        summary: json(r.opt_text(9)?),
    })
}

/// SQL text and its arguments, numbered as they are added.
struct Sql<'a> {
    text: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Sql<'a> {
    fn arg(&mut self, a: Arg<'a>) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }
}

/// A column as it is sorted and compared: byte-wise, NULL as `''`.
fn expr(d: Dialect, c: &Column) -> String {
    let base = if c.nullable {
        format!("COALESCE({}, '')", c.name)
    } else {
        c.name.to_string()
    };
    if c.int || d == Dialect::Sqlite {
        base
    } else {
        format!("{base} COLLATE \"C\"")
    }
}

/// The smallest string after every string that starts with `p` (byte-wise, which for UTF-8
/// is code point order): `p` with its last character raised by one; `None` when there is none.
fn prefix_end(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The `WHERE` of a page or a count; `end` is the prefix's [`prefix_end`]. `cursor`: a cursor bounds the rows on one side (below
/// when ascending, `Some(false)`; above when descending), so the prefix's bound on that side
/// is left to it: SQLite seeks by one lower bound, and it must be the cursor's.
fn where_clause<'a>(
    d: Dialect,
    sql: &mut Sql<'a>,
    scan_id: i64,
    f: &'a Filter,
    end: Option<&'a str>,
    cursor: Option<bool>,
) {
    let id = sql.arg(scan_id.into());
    let _ = write!(sql.text, " WHERE scan_id = {id}");
    if let Some(store) = &f.store {
        let p = sql.arg(store.as_str().into());
        let _ = write!(sql.text, " AND store = {p}");
    }
    if let Some(refs) = &f.references {
        if refs.is_empty() {
            sql.text.push_str(" AND 1 = 0");
        } else {
            let list: Vec<String> = refs.iter().map(|r| sql.arg(r.as_str().into())).collect();
            let _ = write!(sql.text, " AND reference IN ({})", list.join(", "));
        }
    }
    if let Some(prefix) = f.prefix.as_deref().filter(|p| !p.is_empty()) {
        // The range lets an index on the key bound the walk; the `substr` is the exact test.
        let key = expr(d, &text("key", false));
        let p = sql.arg(prefix.into());
        if cursor != Some(false) {
            let _ = write!(sql.text, " AND {key} >= {p}");
        }
        if cursor != Some(true)
            && let Some(end) = end
        {
            let e = sql.arg(end.into());
            let _ = write!(sql.text, " AND {key} < {e}");
        }
        let n = sql.arg(
            i64::try_from(prefix.chars().count())
                .unwrap_or(i64::MAX)
                .into(),
        );
        let _ = write!(sql.text, " AND substr(key, 1, CAST({n} AS INTEGER)) = {p}");
    }
    if let Some(status) = &f.status {
        let p = sql.arg(status.as_str().into());
        let _ = write!(sql.text, " AND status = {p}");
    }
}

impl State {
    /// One page of a scan's orphans or missing rows.
    pub async fn findings_page(&self, ask: &PageAsk<'_>) -> Result<Page> {
        let d = self.dialect();
        let order = ask.sort.order(ask.findings, ask.filter);
        let mut sql = Sql {
            text: format!(
                "SELECT {} FROM {}",
                ask.findings.select(),
                ask.findings.table()
            ),
            args: Vec::new(),
        };
        let end = ask.filter.prefix.as_deref().and_then(prefix_end);
        let cursor = ask.after.map(|_| ask.sort.descending);
        where_clause(d, &mut sql, ask.scan_id, ask.filter, end.as_deref(), cursor);
        if let Some(after) = ask.after {
            if after.len() != order.len()
                || after
                    .iter()
                    .zip(&order)
                    .any(|(p, c)| matches!(p, KeyPart::Int(_)) != c.int)
            {
                return Err(Error::Usage(
                    "the cursor does not belong to this list or sort; start again without it"
                        .into(),
                ));
            }
            let exprs: Vec<String> = order.iter().map(|c| expr(d, c)).collect();
            let values: Vec<String> = after
                .iter()
                .map(|p| {
                    sql.arg(match p {
                        KeyPart::Int(n) => (*n).into(),
                        KeyPart::Text(s) => s.as_str().into(),
                    })
                })
                .collect();
            let op = if ask.sort.descending { "<" } else { ">" };
            // SQLite seeks an index on an expression (`COALESCE(uploaded_at, '')`) by a plain
            // comparison, not by a row value: then the first column's bound is given alone too.
            // (Elsewhere it would make SQLite seek by that column alone, not the whole row.)
            if order[0].nullable {
                let _ = write!(sql.text, " AND {} {op}= {}", exprs[0], values[0]);
            }
            let _ = write!(
                sql.text,
                " AND ({}) {op} ({})",
                exprs.join(", "),
                values.join(", ")
            );
        }
        let dir = if ask.sort.descending { " DESC" } else { "" };
        let by: Vec<String> = order
            .iter()
            .map(|c| format!("{}{dir}", expr(d, c)))
            .collect();
        // One row more than asked says whether another page follows.
        let limit = sql.arg((i64::from(ask.limit) + 1).into());
        let _ = write!(sql.text, " ORDER BY {} LIMIT {limit}", by.join(", "));
        let rows = self
            .read(&sql.text, &sql.args)
            .await
            .map_err(context("cannot read a scan's findings"))?;
        let want = ask.limit as usize;
        let more = rows.len() > want;
        let page = match ask.findings {
            FindingKind::Orphans => {
                let mut rows = rows
                    .into_iter()
                    .map(orphan_row)
                    .collect::<Result<Vec<_>>>()?;
                rows.truncate(want);
                let next = rows
                    .last()
                    .filter(|_| more)
                    .map(|r| order.iter().map(|c| r.part(c)).collect());
                Page {
                    rows: PageRows::Orphans(rows),
                    next,
                }
            }
            FindingKind::Missing => {
                let mut rows = rows
                    .into_iter()
                    .map(missing_row)
                    .collect::<Result<Vec<_>>>()?;
                rows.truncate(want);
                let next = rows
                    .last()
                    .filter(|_| more)
                    .map(|r| order.iter().map(|c| r.part(c)).collect());
                Page {
                    rows: PageRows::Missing(rows),
                    next,
                }
            }
        };
        Ok(page)
    }

    /// How many of a scan's orphans or missing rows pass `filter`.
    pub async fn count_findings(
        &self,
        scan_id: i64,
        findings: FindingKind,
        filter: &Filter,
    ) -> Result<u64> {
        let mut sql = Sql {
            text: format!("SELECT COUNT(*) FROM {}", findings.table()),
            args: Vec::new(),
        };
        let end = filter.prefix.as_deref().and_then(prefix_end);
        where_clause(
            self.dialect(),
            &mut sql,
            scan_id,
            filter,
            end.as_deref(),
            None,
        );
        let rows = self
            .read(&sql.text, &sql.args)
            .await
            .map_err(context("cannot count a scan's findings"))?;
        rows.first().map_or(Ok(0), |r| r.count(0))
    }

    /// A recorded scan, or `None`.
    pub async fn scan_view(&self, id: i64) -> Result<Option<ScanView>> {
        self.read(
            &format!("SELECT {VIEW_COLUMNS} FROM scans WHERE id = $1"),
            &[id.into()],
        )
        .await
        .map_err(context("cannot read a scan"))?
        .into_iter()
        .next()
        .map(view)
        .transpose()
    }

    /// Scans newest first, from below `before` (an id) when given.
    pub async fn scan_views(&self, before: Option<i64>, limit: u32) -> Result<Vec<ScanView>> {
        let limit = i64::from(limit);
        let rows = match before {
            Some(b) => {
                self.read(
                    &format!(
                        "SELECT {VIEW_COLUMNS} FROM scans WHERE id < $1 ORDER BY id DESC LIMIT $2"
                    ),
                    &[b.into(), limit.into()],
                )
                .await
            }
            None => {
                self.read(
                    &format!("SELECT {VIEW_COLUMNS} FROM scans ORDER BY id DESC LIMIT $1"),
                    &[limit.into()],
                )
                .await
            }
        }
        .map_err(context("cannot read the scan history"))?;
        rows.into_iter().map(view).collect()
    }

    pub async fn count_scans(&self) -> Result<u64> {
        let rows = self
            .read("SELECT COUNT(*) FROM scans", &[])
            .await
            .map_err(context("cannot read the scan history"))?;
        rows.first().map_or(Ok(0), |r| r.count(0))
    }
}

fn orphan_row(mut r: Row) -> Result<OrphanRow> {
    Ok(OrphanRow {
        store: r.text(0)?,
        resource_type: r.text(1)?,
        key: r.text(2)?,
        size_bytes: r.count(3)?,
        uploaded_at: r.opt_text(4)?,
        format: r.text(5)?,
        url: r.opt_text(6)?,
    })
}

fn missing_row(mut r: Row) -> Result<MissingRow> {
    Ok(MissingRow {
        ord: r.int(0)?,
        reference: r.text(1)?,
        record_id: r.opt_text(2)?,
        title: r.opt_text(3)?,
        owner: r.opt_text(4)?,
        media_type: r.opt_text(5)?,
        key: r.text(6)?,
        created_at: r.opt_text(7)?,
        status: r.text(8)?,
        link: r.opt_text(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_put_the_column_first_and_keep_the_report_order_as_tie_break() {
        let s = Sort::parse(FindingKind::Orphans, Some("-size_mb")).expect("sort");
        assert!(s.descending);
        assert_eq!(s.spelling(), "-size_bytes");
        let names: Vec<&str> = s
            .order(FindingKind::Orphans, &Filter::default())
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["size_bytes", "store", "key", "resource_type"]);
        let key: Vec<&str> = Sort::parse(FindingKind::Orphans, Some("key"))
            .expect("sort")
            .order(FindingKind::Orphans, &Filter::default())
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(key, ["key", "store", "resource_type"]);
        let none = Sort::parse(FindingKind::Missing, None).expect("sort");
        assert_eq!(
            none.order(FindingKind::Missing, &Filter::default())[0].name,
            "ord"
        );
        assert!(Sort::parse(FindingKind::Missing, Some("size_bytes")).is_err());
        assert!(Sort::parse(FindingKind::Orphans, Some("-nope")).is_err());
    }

    #[test]
    fn a_store_filter_takes_the_store_out_of_the_order() {
        let f = Filter {
            store: Some("media".into()),
            ..Filter::default()
        };
        let names: Vec<&str> = Sort::parse(FindingKind::Orphans, None)
            .expect("sort")
            .order(FindingKind::Orphans, &f)
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["key", "resource_type"]);
    }

    #[test]
    fn a_prefix_ends_before_the_first_string_without_it() {
        assert_eq!(prefix_end("p/").as_deref(), Some("p0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        for k in ["p/", "p/x", "p/\u{10FFFF}\u{10FFFF}"] {
            assert!(k < "p0", "{k}");
        }
    }
}
