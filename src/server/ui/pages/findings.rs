//! The findings page (SPEC §8): a recorded scan's orphans and records with missing files,
//! filtered, sorted and paged exactly as `GET /api/scans/{id}/orphans` and `/missing` answer
//! them — the page calls those handlers, so it shares their keyset cursors (a cursor taken from
//! the API opens the same page here), their checks and their cache of finished scans' totals.
//! Selecting orphans and queueing them is done by `assets/findings.js` through
//! `POST /api/scans/{id}/purge`, whose guard and checks are the CLI's.

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::super::{Chrome, render, require};
use crate::domain::Spelling as _;
use crate::domain::scan::ScanState;
use crate::server::AppState;
use crate::server::api::page::MAX_LIMIT;
use crate::server::api::scans::{self, FindingsQuery, MissingItem, OrphanItem};
use crate::state::findings_pages::{FindingKind, ScanView, Sort};

/// Rows a page shows unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 50;
/// Scans the picker offers (the newest ones; the one shown is always among them).
const PICKER_SCANS: u32 = 50;

/// What the page was asked for, checked: `?scan=&kind=&store=&prefix=&status=&sort=&cursor=&limit=`.
/// Empty values count as absent (an "All stores" choice submits `store=`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    scan: Option<i64>,
    kind: FindingKind,
    store: Option<String>,
    prefix: Option<String>,
    /// Missing rows only: `ACTIVE` or `DELETED`.
    status: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    limit: u32,
}

impl Default for Ask {
    fn default() -> Ask {
        Ask {
            scan: None,
            kind: FindingKind::Orphans,
            store: None,
            prefix: None,
            status: None,
            sort: None,
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

fn kind_word(k: FindingKind) -> &'static str {
    match k {
        FindingKind::Orphans => "orphans",
        FindingKind::Missing => "missing",
    }
}

/// Reads the query string. Every value that can be read is kept, so the form shows what was
/// asked; the first value that cannot is the error the page shows instead of the rows.
fn parse_query(raw: Option<&str>) -> (Ask, Option<String>) {
    let mut ask = Ask::default();
    let mut error: Option<String> = None;
    let mut fail = |e: String| {
        if error.is_none() {
            error = Some(e);
        }
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let value = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    if let Some(k) = value("kind") {
        match k.as_str() {
            "orphans" => ask.kind = FindingKind::Orphans,
            "missing" => ask.kind = FindingKind::Missing,
            _ => fail(format!("kind `{k}` is not orphans or missing")),
        }
    }
    if let Some(id) = value("scan") {
        match id.trim().parse::<i64>() {
            Ok(n) if n > 0 => ask.scan = Some(n),
            _ => fail(format!("scan `{id}` is not a scan id (a positive number)")),
        }
    }
    ask.store = value("store");
    ask.prefix = value("prefix");
    if ask.kind == FindingKind::Missing
        && let Some(status) = value("status")
    {
        let up = status.trim().to_ascii_uppercase();
        if up == "ACTIVE" || up == "DELETED" {
            ask.status = Some(up);
        } else {
            fail(format!("status `{status}` is not ACTIVE or DELETED"));
        }
    }
    if let Some(sort) = value("sort") {
        match Sort::parse(ask.kind, Some(&sort)) {
            Ok(_) => ask.sort = Some(sort),
            Err(e) => fail(crate::error::one_line(&e)),
        }
    }
    if let Some(limit) = value("limit") {
        match limit.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => ask.limit = n,
            Ok(n) => fail(format!(
                "limit {n} is out of range; ask for 1 to {MAX_LIMIT} rows"
            )),
            Err(_) => fail(format!(
                "limit `{limit}` is not a number of rows (1 to {MAX_LIMIT})"
            )),
        }
    }
    ask.cursor = value("cursor");
    (ask, error)
}

impl Ask {
    /// The page's address for this question; only what differs from the defaults is written.
    fn href(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(id) = self.scan {
            q.append_pair("scan", &id.to_string());
        }
        q.append_pair("kind", kind_word(self.kind));
        for (name, v) in [
            ("store", &self.store),
            ("prefix", &self.prefix),
            ("status", &self.status),
            ("sort", &self.sort),
            ("cursor", &self.cursor),
        ] {
            if let Some(v) = v {
                q.append_pair(name, v);
            }
        }
        if self.limit != DEFAULT_LIMIT {
            q.append_pair("limit", &self.limit.to_string());
        }
        format!("/findings?{}", q.finish())
    }

    /// The other tab (or this one) from its first page: filters kept, the sort dropped (the
    /// tables have other columns), the status only where it applies.
    fn tab(&self, kind: FindingKind) -> Ask {
        Ask {
            kind,
            sort: if kind == self.kind {
                self.sort.clone()
            } else {
                None
            },
            status: self.status.clone().filter(|_| kind == FindingKind::Missing),
            cursor: None,
            ..self.clone()
        }
    }

    /// The API's question for this page.
    fn api_query(&self, kind: FindingKind, limit: u32) -> FindingsQuery {
        let same = kind == self.kind;
        FindingsQuery {
            limit: Some(limit),
            cursor: self.cursor.clone().filter(|_| same),
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            status: self.status.clone().filter(|_| kind == FindingKind::Missing),
            sort: self.sort.clone().filter(|_| same),
        }
    }

    /// The header of a sortable column: its link (ascending first, then the other way) and
    /// its `aria-sort`.
    fn head(&self, label: &'static str, column: &'static str, num: bool) -> Head {
        let current = self.sort.as_deref().unwrap_or("");
        let (desc, name) = match current.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, current),
        };
        // `size_mb` is how a person may write the size column; it is `size_bytes` underneath.
        let name = if name == "size_mb" {
            "size_bytes"
        } else {
            name
        };
        let aria_sort = match (name == column, desc) {
            (true, false) => "ascending",
            (true, true) => "descending",
            (false, _) => "none",
        };
        let next = if aria_sort == "ascending" {
            format!("-{column}")
        } else {
            column.to_string()
        };
        let href = Ask {
            sort: Some(next),
            cursor: None,
            ..self.clone()
        }
        .href();
        Head {
            label,
            href,
            aria_sort,
            num,
        }
    }
}

/// `1234567` as `1,234,567`.
fn separated(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MB with two decimals and separators: `1,234.57`.
fn megabytes(bytes: u64) -> String {
    let s = crate::report::size_mb(bytes);
    match s.split_once('.') {
        Some((int, frac)) => match int.parse::<u64>() {
            Ok(n) => format!("{}.{frac}", separated(n)),
            Err(_) => s,
        },
        None => s,
    }
}

/// A link target shown as a link only when it is a web address.
fn web_link(u: Option<&str>) -> Option<String> {
    u.filter(|u| {
        let l = u.to_ascii_lowercase();
        l.starts_with("https://") || l.starts_with("http://")
    })
    .map(str::to_string)
}

struct Head {
    label: &'static str,
    href: String,
    aria_sort: &'static str,
    num: bool,
}

struct ScanChoice {
    id: i64,
    label: String,
    selected: bool,
}

struct StoreChoice {
    name: String,
    selected: bool,
}

struct Tab {
    label: &'static str,
    href: String,
    total: Option<u64>,
    total_shown: String,
    current: bool,
}

struct OrphanLine {
    store: String,
    key: String,
    resource_type: String,
    size_bytes: u64,
    size_mb: String,
    uploaded_at: String,
    format: String,
    url: String,
    url_link: Option<String>,
}

impl From<OrphanItem> for OrphanLine {
    fn from(o: OrphanItem) -> OrphanLine {
        OrphanLine {
            size_mb: megabytes(o.size_bytes),
            url_link: web_link(o.url.as_deref()),
            url: o.url.unwrap_or_default(),
            store: o.store,
            key: o.key,
            resource_type: o.resource_type,
            size_bytes: o.size_bytes,
            uploaded_at: o.uploaded_at.unwrap_or_default(),
            format: o.format,
        }
    }
}

struct MissingLine {
    reference: String,
    record_id: String,
    title: String,
    owner: String,
    media_type: String,
    key: String,
    created_at: String,
    status: String,
    link: String,
    link_href: Option<String>,
}

impl From<MissingItem> for MissingLine {
    fn from(m: MissingItem) -> MissingLine {
        MissingLine {
            link_href: web_link(m.link.as_deref()),
            link: m.link.unwrap_or_default(),
            reference: m.reference,
            record_id: m.record_id,
            title: m.title.unwrap_or_default(),
            owner: m.owner.unwrap_or_default(),
            media_type: m.media_type.unwrap_or_default(),
            key: m.key,
            created_at: m.created_at.unwrap_or_default(),
            status: m.status,
        }
    }
}

/// The scan a page shows.
struct Shown {
    id: i64,
    state: &'static str,
    complete: bool,
    started_at: String,
}

#[derive(Template)]
#[template(path = "findings.html")]
struct Page {
    chrome: Chrome,
    /// Why the rows are not shown (a bad query, an unknown scan).
    error: Option<String>,
    /// No scan is recorded at all.
    no_scan: bool,
    scans: Vec<ScanChoice>,
    scan: Option<Shown>,
    orphans_kind: bool,
    stores: Vec<StoreChoice>,
    prefix: String,
    status: String,
    sort: String,
    limit: u32,
    tabs: Vec<Tab>,
    heads: Vec<Head>,
    orphans: Vec<OrphanLine>,
    missing: Vec<MissingLine>,
    /// Rows of every page together, with the filters applied.
    total: u64,
    total_shown: String,
    next_href: Option<String>,
    first_href: Option<String>,
    filter_store: String,
    filter_prefix: String,
}

impl Page {
    fn empty(chrome: Chrome, ask: &Ask) -> Page {
        Page {
            chrome,
            error: None,
            no_scan: false,
            scans: Vec::new(),
            scan: None,
            orphans_kind: ask.kind == FindingKind::Orphans,
            stores: Vec::new(),
            prefix: ask.prefix.clone().unwrap_or_default(),
            status: ask.status.clone().unwrap_or_default(),
            sort: ask.sort.clone().unwrap_or_default(),
            limit: ask.limit,
            tabs: Vec::new(),
            heads: Vec::new(),
            orphans: Vec::new(),
            missing: Vec::new(),
            total: 0,
            total_shown: "0".into(),
            next_href: None,
            first_href: None,
            filter_store: ask.store.clone().unwrap_or_default(),
            filter_prefix: ask.prefix.clone().unwrap_or_default(),
        }
    }

    fn limit_is_default(&self) -> bool {
        self.limit == DEFAULT_LIMIT
    }
}

/// A recorded RFC 3339 time as people read it: `2025-09-15 14:30:00 UTC`.
fn when(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    match t.strip_suffix('Z') {
        Some(rest) => format!("{rest} UTC"),
        None => t,
    }
}

fn choice_label(v: &ScanView) -> String {
    format!(
        "Scan {} · {} · {}",
        v.id,
        when(&v.started_at),
        v.state.as_str()
    )
}

/// The scan asked for, or the latest complete one, else the latest; with the picker's list.
async fn pick_scan(
    s: &AppState,
    asked: Option<i64>,
) -> crate::error::Result<(Option<ScanView>, Vec<ScanView>)> {
    let recent = s.app.state.scan_views(None, PICKER_SCANS).await?;
    if let Some(id) = asked {
        let found = match recent.iter().find(|v| v.id == id) {
            Some(v) => Some(v.clone()),
            None => s.app.state.scan_view(id).await?,
        };
        return Ok((found, recent));
    }
    if let Some(v) = recent.iter().find(|v| v.state == ScanState::Complete) {
        return Ok((Some(v.clone()), recent));
    }
    // Past the picker's scans: look further back for a complete one, a page at a time.
    let mut before = recent.last().map(|v| v.id);
    while let Some(b) = before {
        let older = s.app.state.scan_views(Some(b), 500).await?;
        if let Some(v) = older.iter().find(|v| v.state == ScanState::Complete) {
            return Ok((Some(v.clone()), recent));
        }
        before = older.last().map(|v| v.id);
    }
    Ok((recent.first().cloned(), recent))
}

fn orphan_heads(ask: &Ask) -> Vec<Head> {
    vec![
        ask.head("Store", "store", false),
        ask.head("Key", "key", false),
        ask.head("Type", "resource_type", false),
        ask.head("Size (MB)", "size_bytes", true),
        ask.head("Uploaded", "uploaded_at", false),
        ask.head("Format", "format", false),
        ask.head("URL", "url", false),
    ]
}

fn missing_heads(ask: &Ask) -> Vec<Head> {
    vec![
        ask.head("Reference", "reference", false),
        ask.head("Record", "record_id", false),
        ask.head("Title", "title", false),
        ask.head("Owner", "owner", false),
        ask.head("Media type", "media_type", false),
        ask.head("Key", "key", false),
        ask.head("Created", "created_at", false),
        ask.head("Status", "status", false),
        ask.head("Link", "link", false),
    ]
}

/// How many findings of `kind` pass the page's filters: the API's total (kept for a finished
/// scan, so this costs one tiny read).
async fn tab_total(s: &AppState, id: i64, ask: &Ask, kind: FindingKind) -> Option<u64> {
    // Only the total is wanted: no sort (an unindexed sort would be paid for a count that is
    // kept anyway) and no cursor.
    let q = Query(FindingsQuery {
        sort: None,
        cursor: None,
        ..ask.api_query(kind, 1)
    });
    let total = match kind {
        FindingKind::Orphans => scans::orphans(State(s.clone()), Path(id), q)
            .await
            .map(|p| p.0.total),
        FindingKind::Missing => scans::missing(State(s.clone()), Path(id), q)
            .await
            .map(|p| p.0.total),
    };
    total.ok()
}

/// The two tabs, with their totals under the page's filters when `counted`.
async fn tabs(s: &AppState, id: i64, ask: &Ask, counted: bool) -> Vec<Tab> {
    let mut tabs = Vec::new();
    for k in [FindingKind::Orphans, FindingKind::Missing] {
        let total = if counted {
            tab_total(s, id, ask, k).await
        } else {
            None
        };
        tabs.push(Tab {
            label: match k {
                FindingKind::Orphans => "Orphaned files",
                FindingKind::Missing => "Records with missing files",
            },
            href: ask.tab(k).href(),
            total,
            total_shown: total.map(separated).unwrap_or_default(),
            current: k == ask.kind,
        });
    }
    tabs
}

/// The picker's scans, the one shown selected (and added when it is older than the list).
fn scan_choices(recent: &[ScanView], shown: Option<&ScanView>) -> Vec<ScanChoice> {
    let id = shown.map(|v| v.id);
    let mut scans: Vec<ScanChoice> = recent
        .iter()
        .map(|v| ScanChoice {
            id: v.id,
            label: choice_label(v),
            selected: Some(v.id) == id,
        })
        .collect();
    if let Some(v) = shown
        && !scans.iter().any(|c| c.selected)
    {
        scans.push(ScanChoice {
            id: v.id,
            label: choice_label(v),
            selected: true,
        });
    }
    scans
}

/// The scan's stores; a store asked for that the scan does not have stays offered, selected,
/// so the form shows what the rows are filtered by.
fn store_choices(view: &ScanView, asked: Option<&str>) -> Vec<StoreChoice> {
    let mut stores: Vec<StoreChoice> = view
        .stores
        .iter()
        .map(|st| StoreChoice {
            name: st.clone(),
            selected: asked == Some(st.as_str()),
        })
        .collect();
    if let Some(st) = asked
        && !view.stores.iter().any(|x| x == st)
    {
        stores.push(StoreChoice {
            name: st.to_string(),
            selected: true,
        });
    }
    stores
}

/// Fills the page; answers the status the page is sent with.
async fn fill(s: &AppState, ask: &Ask, error: Option<String>, page: &mut Page) -> StatusCode {
    let (shown, recent) = match pick_scan(s, ask.scan).await {
        Ok(x) => x,
        Err(e) => {
            page.error = Some(crate::server::error::ApiError::from(e).message);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    };
    let Some(view) = shown else {
        if let Some(id) = ask.scan {
            page.error = Some(format!(
                "Scan {id} is not recorded; pick one of the scans listed."
            ));
            page.scans = scan_choices(&recent, None);
            return StatusCode::NOT_FOUND;
        }
        page.no_scan = true;
        return StatusCode::OK;
    };
    page.scans = scan_choices(&recent, Some(&view));
    page.stores = store_choices(&view, ask.store.as_deref());
    page.scan = Some(Shown {
        id: view.id,
        state: view.state.as_str(),
        complete: view.state == ScanState::Complete,
        started_at: when(&view.started_at),
    });
    // The links of this page name the scan shown, so a newer scan never changes a link's page.
    let ask = Ask {
        scan: Some(view.id),
        ..ask.clone()
    };
    page.tabs = tabs(s, view.id, &ask, error.is_none()).await;
    if let Some(e) = error {
        page.error = Some(e);
        return StatusCode::BAD_REQUEST;
    }
    let q = Query(ask.api_query(ask.kind, ask.limit));
    let answer = match ask.kind {
        FindingKind::Orphans => scans::orphans(State(s.clone()), Path(view.id), q)
            .await
            .map(|p| {
                let p = p.0;
                page.orphans = p.items.into_iter().map(OrphanLine::from).collect();
                (p.next_cursor, p.total)
            }),
        FindingKind::Missing => scans::missing(State(s.clone()), Path(view.id), q)
            .await
            .map(|p| {
                let p = p.0;
                page.missing = p.items.into_iter().map(MissingLine::from).collect();
                (p.next_cursor, p.total)
            }),
    };
    let (next, total) = match answer {
        Ok(x) => x,
        Err(e) => {
            page.error = Some(e.message);
            return e.status;
        }
    };
    page.heads = match ask.kind {
        FindingKind::Orphans => orphan_heads(&ask),
        FindingKind::Missing => missing_heads(&ask),
    };
    page.total = total;
    page.total_shown = separated(total);
    page.next_href = next.map(|c| {
        Ask {
            cursor: Some(c),
            ..ask.clone()
        }
        .href()
    });
    page.first_href = ask.cursor.as_ref().map(|_| {
        Ask {
            cursor: None,
            ..ask.clone()
        }
        .href()
    });
    StatusCode::OK
}

pub async fn findings(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let here = match raw.as_deref() {
        Some(q) if !q.is_empty() => format!("/findings?{q}"),
        _ => "/findings".to_string(),
    };
    let session = match require(&s, &headers, &here).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (ask, error) = parse_query(raw.as_deref());
    let mut page = Page::empty(Chrome::new(&s, &session, "Findings", "findings"), &ask);
    let status = fill(&s, &ask, error, &mut page).await;
    let mut r = render(&page);
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_query_is_the_latest_scans_orphans_fifty_at_a_time() {
        assert_eq!(parse_query(None), (Ask::default(), None));
        let (ask, err) = parse_query(Some("scan=&store=&prefix=&status=&sort=&cursor=&limit="));
        assert_eq!(err, None);
        assert_eq!(ask, Ask::default());
        assert_eq!(ask.limit, 50);
        assert_eq!(ask.kind, FindingKind::Orphans);
    }

    #[test]
    fn every_parameter_is_read() {
        let (ask, err) = parse_query(Some(
            "scan=7&kind=missing&store=media&prefix=posts%2F&status=deleted&sort=-created_at&cursor=abc&limit=1000",
        ));
        assert_eq!(err, None);
        assert_eq!(
            ask,
            Ask {
                scan: Some(7),
                kind: FindingKind::Missing,
                store: Some("media".into()),
                prefix: Some("posts/".into()),
                status: Some("DELETED".into()),
                sort: Some("-created_at".into()),
                cursor: Some("abc".into()),
                limit: 1000,
            }
        );
    }

    #[test]
    fn bad_values_are_an_error_for_the_page_not_a_failure() {
        for (q, says) in [
            ("limit=0", "limit 0 is out of range"),
            ("limit=1001", "limit 1001 is out of range"),
            ("limit=ten", "limit `ten`"),
            ("sort=nope", "cannot sort by `nope`"),
            (
                "kind=missing&sort=size_bytes",
                "cannot sort by `size_bytes`",
            ),
            ("kind=everything", "kind `everything`"),
            ("scan=x", "scan `x`"),
            ("scan=-1", "scan `-1`"),
            ("kind=missing&status=GONE", "status `GONE`"),
        ] {
            let (ask, err) = parse_query(Some(q));
            let err = err.unwrap_or_else(|| panic!("{q} was accepted: {ask:?}"));
            assert!(err.contains(says), "{q}: {err}");
        }
        // What can be read is kept for the form.
        let (ask, err) = parse_query(Some("prefix=a%2F&limit=0"));
        assert!(err.is_some());
        assert_eq!(ask.prefix.as_deref(), Some("a/"));
        assert_eq!(ask.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn orphans_take_no_status_and_sort_by_size_in_mb() {
        let (ask, err) = parse_query(Some("status=ACTIVE&sort=-size_mb"));
        assert_eq!(err, None);
        assert_eq!(ask.status, None);
        assert_eq!(ask.sort.as_deref(), Some("-size_mb"));
        let size = ask.head("Size (MB)", "size_bytes", true);
        assert_eq!(size.aria_sort, "descending");
        assert!(size.href.contains("sort=size_bytes"), "{}", size.href);
    }

    #[test]
    fn links_read_back_as_the_same_question() {
        let ask = Ask {
            scan: Some(3),
            kind: FindingKind::Orphans,
            store: Some("media files".into()),
            prefix: Some("posts/é&x=1".into()),
            status: None,
            sort: Some("-key".into()),
            cursor: Some("7b22".into()),
            limit: 200,
        };
        let href = ask.href();
        let query = href.strip_prefix("/findings?").expect("page path");
        assert_eq!(parse_query(Some(query)), (ask, None));
        assert_eq!(Ask::default().href(), "/findings?kind=orphans");
    }

    #[test]
    fn a_sort_link_goes_ascending_then_descending_and_back_to_the_first_page() {
        let ask = Ask {
            cursor: Some("deep".into()),
            ..Ask::default()
        };
        let key = ask.head("Key", "key", false);
        assert_eq!(key.aria_sort, "none");
        assert_eq!(key.href, "/findings?kind=orphans&sort=key");
        let ask = Ask {
            sort: Some("key".into()),
            ..ask
        };
        let key = ask.head("Key", "key", false);
        assert_eq!(key.aria_sort, "ascending");
        assert_eq!(key.href, "/findings?kind=orphans&sort=-key");
        assert_eq!(ask.head("Store", "store", false).aria_sort, "none");
    }

    #[test]
    fn tabs_keep_the_filters_and_drop_the_sort_cursor_and_foreign_status() {
        let ask = Ask {
            scan: Some(2),
            kind: FindingKind::Missing,
            store: Some("media".into()),
            prefix: Some("p/".into()),
            status: Some("ACTIVE".into()),
            sort: Some("title".into()),
            cursor: Some("c".into()),
            limit: 50,
        };
        assert_eq!(
            ask.tab(FindingKind::Orphans).href(),
            "/findings?scan=2&kind=orphans&store=media&prefix=p%2F"
        );
        assert_eq!(
            ask.tab(FindingKind::Missing).href(),
            "/findings?scan=2&kind=missing&store=media&prefix=p%2F&status=ACTIVE&sort=title"
        );
        let q = ask.api_query(FindingKind::Orphans, 1);
        assert_eq!((q.status, q.sort, q.cursor), (None, None, None));
        let q = ask.api_query(FindingKind::Missing, 50);
        assert_eq!(q.cursor.as_deref(), Some("c"));
        assert_eq!(q.status.as_deref(), Some("ACTIVE"));
    }

    #[test]
    fn figures_for_people_carry_separators() {
        assert_eq!(separated(0), "0");
        assert_eq!(separated(999), "999");
        assert_eq!(separated(1000), "1,000");
        assert_eq!(separated(1_234_567), "1,234,567");
        assert_eq!(megabytes(0), "0.00");
        assert_eq!(megabytes(1_048_576 * 1234 + 524_288), "1,234.50");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(when("2025-09-15T14:30:00Z"), "2025-09-15 14:30:00 UTC");
        assert_eq!(
            when("2025-09-15T14:30:00+02:00"),
            "2025-09-15 14:30:00+02:00"
        );
    }

    #[test]
    fn only_web_addresses_become_links() {
        assert_eq!(
            web_link(Some("https://cdn.example/a.jpg")).as_deref(),
            Some("https://cdn.example/a.jpg")
        );
        assert_eq!(web_link(Some("javascript:alert(1)")), None);
        assert_eq!(web_link(None), None);
    }
}
