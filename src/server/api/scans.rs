//! `/api/scans*` (SPEC §8): start a scan in the background, read the history, a scan's report
//! (`scan`, `summary` and `state`), its orphans and missing rows page by page, its CSV report
//! from the state database, and purge its orphans with the checks of `purge --scan ID`.
//!
//! Pages are read by keyset (the cursor is the place of the previous page's last row), never by
//! OFFSET, so a page deep in a million orphans costs what the first does. A finished scan never
//! changes: its state and the totals of each filter are kept in memory ([`PageCache`]), and a
//! page then costs one indexed read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{Page, PageQuery};
use crate::domain::Spelling as _;
use crate::domain::scan::{ScanMode, ScanState, Summary, Window};
use crate::error::Error;
use crate::ops::purge::{self, PurgePlan, PurgeRequest, Source, StoreTotal};
use crate::ops::scan::{ReportTo, ScanRequest};
use crate::report::{self, Format};
use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::state::findings_pages::{
    Filter, FindingKind, KeyPart, MissingRow, OrphanRow, PageAsk, PageRows, ScanView, Sort,
};

/// Keys a purge preview lists.
const PREVIEW_KEYS: usize = 20;
/// Rows report.csv reads from the state database at a time.
const CSV_PAGE: u32 = 2000;
/// Totals kept before the cache starts over (each is a few dozen bytes).
const CACHE_ENTRIES: usize = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_scan, list_scans))
        .routes(routes!(get_scan))
        .routes(routes!(orphans))
        .routes(routes!(missing))
        .routes(routes!(report_csv))
        .routes(routes!(purge_scan))
}

/// What the server remembers of finished scans: their state and stores, and the totals of the
/// filters asked for. A finished scan's findings never change, so neither goes stale.
#[derive(Default)]
pub struct PageCache {
    finished: Mutex<HashMap<i64, (ScanState, Vec<String>)>>,
    totals: Mutex<HashMap<(i64, FindingKind, Filter), u64>>,
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, k: K, v: V) {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    if m.len() >= CACHE_ENTRIES {
        m.clear();
    }
    m.insert(k, v);
}

/// The state and stores of scan `id`: 404 when it is not recorded.
async fn scan_facts(s: &AppState, id: i64) -> ApiResult<(ScanState, Vec<String>)> {
    if let Some(known) = s
        .scan_pages
        .finished
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return Ok(known.clone());
    }
    let view = s
        .app
        .state
        .scan_view(id)
        .await?
        .ok_or_else(|| no_scan(id))?;
    let facts = (view.state, view.stores);
    if facts.0 != ScanState::Running {
        remember(&s.scan_pages.finished, id, facts.clone());
    }
    Ok(facts)
}

fn no_scan(id: i64) -> ApiError {
    ApiError::not_found(format!(
        "scan {id} is not recorded; GET /api/scans lists the scans"
    ))
}

/// Cursors are opaque to callers: hex of a small JSON value.
fn encode_cursor<T: Serialize>(v: &T) -> String {
    hex::encode(serde_json::to_vec(v).unwrap_or_default())
}

fn decode_cursor<T: serde::de::DeserializeOwned>(s: &str) -> ApiResult<T> {
    hex::decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "the cursor is not one this server gave (pass a page's next_cursor as it is); start again without it",
            )
        })
}

// ---------------------------------------------------------------------------------------------
// POST /api/scans

/// `POST /api/scans`: what to scan, as `scan`'s flags; everything optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ScanBody {
    /// Objects uploaded in the last N days (default 30). Not with `all` or `since`.
    pub days: Option<u32>,
    /// No window. Not with `days` or `since`.
    pub all: Option<bool>,
    /// Objects uploaded since this date or RFC 3339 time. Not with `days` or `all`.
    pub since: Option<String>,
    /// Look for orphans only. Not with `missing_only`.
    pub orphans_only: Option<bool>,
    /// Look for missing files only. Not with `orphans_only`.
    pub missing_only: Option<bool>,
    /// Store names; all stores when absent or empty.
    pub stores: Option<Vec<String>>,
    /// Send the scan's summary where `[notify]` says, as the CLI's `--notify` (its `on` applies).
    pub notify: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanStarted {
    pub scan_id: i64,
}

fn scan_window(b: &ScanBody) -> ApiResult<Window> {
    let all = b.all == Some(true);
    let given = usize::from(b.days.is_some()) + usize::from(all) + usize::from(b.since.is_some());
    if given > 1 {
        return Err(ApiError::bad_request(
            "give one of days, all and since, not several",
        ));
    }
    if all {
        return Ok(Window::All);
    }
    if let Some(since) = &b.since {
        let t = crate::time::parse_time(since).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since `{since}` is not a date: write 2025-09-01 or 2025-09-01T12:00:00Z"
            ))
        })?;
        return Ok(Window::Since(t));
    }
    Ok(Window::Days(b.days.unwrap_or(30)))
}

/// Starts a scan in the background and answers its id at once; poll `GET /api/scans/{id}`.
/// The scan writes its CSV report to `[reports] dir` as `assetgc scan` does.
#[utoipa::path(
    post,
    path = "/api/scans",
    tag = "scans",
    request_body(content = Option<ScanBody>, description = "What to scan (all optional)"),
    responses(
        (status = 202, description = "The scan is recorded and runs in the background", body = ScanStarted),
        (status = 400, description = "Bad input: exclusive fields together, an unknown store, a bad date", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 413, description = "The body is past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn start_scan(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<ScanStarted>)> {
    // Read whatever the Content-Type says (or lacks): a body never goes unread.
    let body: ScanBody = super::cleanup::json_body(&body)?;
    let window = scan_window(&body)?;
    let mode = match (
        body.orphans_only == Some(true),
        body.missing_only == Some(true),
    ) {
        (true, true) => {
            return Err(ApiError::bad_request(
                "orphans_only and missing_only exclude each other; give one",
            ));
        }
        (true, false) => ScanMode::OrphansOnly,
        (false, true) => ScanMode::MissingOnly,
        (false, false) => ScanMode::Both,
    };
    let stores = body.stores.unwrap_or_default();
    crate::ops::scan::selected_stores(&s.app.cfg, &stores)?;
    let req = ScanRequest {
        window,
        mode,
        stores,
        report: Some((ReportTo::Dir(s.app.cfg.reports_dir.clone()), Format::Csv)),
        progress: None,
    };
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<Error>();
    let app = Arc::clone(&s.app);
    let watch = (body.notify == Some(true))
        .then(|| crate::notify::Watch::new(&s.app, crate::notify::Kind::Scan));
    s.spawn(async move {
        // The id goes to the waiting request and is kept here: a scan that fails once recorded
        // is notified as that scan (several may run at once).
        let (inner_tx, inner_rx) = tokio::sync::oneshot::channel();
        let forward = async move {
            let id = inner_rx.await.ok();
            if let Some(id) = id {
                let _ = id_tx.send(id);
            }
            id
        };
        let (result, id) = tokio::join!(
            crate::ops::scan::run_announced(&app, req, Some(inner_tx)),
            forward
        );
        match result {
            Ok(done) => {
                tracing::info!(scan_id = done.id, state = %done.findings.state(), "scan finished");
            }
            Err(e) => {
                // The scan is recorded `failed` by the operation; before it was recorded, the
                // request that started it is still waiting for this error.
                tracing::warn!(error = %crate::error::one_line(&e), "scan failed");
                let _ = err_tx.send(e);
            }
        }
        if let (Some(w), Some(id)) = (watch, id) {
            let sent = w.finish(Some(id)).await;
            tracing::info!(scan_id = id, "{}", sent.line());
        }
    });
    match id_rx.await {
        Ok(scan_id) => Ok((StatusCode::ACCEPTED, Json(ScanStarted { scan_id }))),
        Err(_) => Err(err_rx.await.map_or_else(
            |_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the scan could not start; the server log has the details",
                )
            },
            ApiError::from,
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// GET /api/scans, GET /api/scans/{id}

#[derive(Debug, Serialize, ToSchema)]
pub struct FolderCount {
    pub folder: String,
    pub count: u64,
    pub bytes: u64,
}

/// The report's `summary` (SPEC §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportSummary {
    pub objects_scanned: u64,
    pub valid: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub too_recent: u64,
    pub ignored: u64,
    pub unparsed: u64,
    pub references: u64,
    pub missing: u64,
    pub missing_active: u64,
    pub orphans_by_folder: Vec<FolderCount>,
}

impl From<&Summary> for ReportSummary {
    fn from(s: &Summary) -> ReportSummary {
        ReportSummary {
            objects_scanned: s.objects_scanned,
            valid: s.valid,
            orphans: s.orphans,
            orphan_bytes: s.orphan_bytes,
            too_recent: s.too_recent,
            ignored: s.ignored,
            unparsed: s.unparsed,
            references: s.references,
            missing: s.missing,
            missing_active: s.missing_active,
            orphans_by_folder: s
                .orphans_by_folder
                .iter()
                .map(|f| FolderCount {
                    folder: f.folder.clone(),
                    count: f.count,
                    bytes: f.bytes,
                })
                .collect(),
        }
    }
}

/// The report's `scan` (SPEC §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportScan {
    pub id: i64,
    pub started_at: String,
    /// `null` while the scan runs.
    pub finished_at: Option<String>,
    /// `{"days": N}`, `{"all": true}` or `{"since": RFC 3339}`.
    #[schema(value_type = Object)]
    pub window: serde_json::Value,
    pub stores: Vec<String>,
    pub complete: bool,
    /// Store name → API calls.
    #[schema(value_type = HashMap<String, u64>)]
    pub api_calls: indexmap::IndexMap<String, u64>,
    pub warnings: Vec<String>,
}

/// `GET /api/scans/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanDetail {
    pub scan: ReportScan,
    /// `null` while the scan runs and for a failed scan.
    pub summary: Option<ReportSummary>,
    /// `running`, `complete`, `incomplete` or `failed`.
    pub state: String,
}

/// The counts of a scan in the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryCounts {
    pub objects_scanned: u64,
    pub valid: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub too_recent: u64,
    pub ignored: u64,
    pub missing: u64,
    pub missing_active: u64,
}

/// One scan of `GET /api/scans`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanItem {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `complete`, `incomplete` or `failed`.
    pub state: String,
    /// `both`, `orphans` or `missing`.
    pub mode: String,
    #[schema(value_type = Object)]
    pub window: serde_json::Value,
    pub stores: Vec<String>,
    /// `null` while the scan runs and for a failed scan.
    pub summary: Option<SummaryCounts>,
}

fn window_json(w: Window) -> serde_json::Value {
    serde_json::to_value(w).unwrap_or(serde_json::Value::Null)
}

impl From<ScanView> for ScanItem {
    fn from(v: ScanView) -> ScanItem {
        ScanItem {
            id: v.id,
            started_at: v.started_at,
            finished_at: v.finished_at,
            state: v.state.as_str().to_string(),
            mode: v.mode.as_str().to_string(),
            window: window_json(v.window),
            stores: v.stores,
            summary: v.summary.map(|s| SummaryCounts {
                objects_scanned: s.objects_scanned,
                valid: s.valid,
                orphans: s.orphans,
                orphan_bytes: s.orphan_bytes,
                too_recent: s.too_recent,
                ignored: s.ignored,
                missing: s.missing,
                missing_active: s.missing_active,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ScansCursor {
    before: i64,
}

/// The scans, newest first.
#[utoipa::path(
    get,
    path = "/api/scans",
    tag = "scans",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of scans, newest first", body = Page<ScanItem>),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn list_scans(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ScanItem>>> {
    let limit = q.limit()?;
    let before = q
        .cursor
        .as_deref()
        .map(decode_cursor::<ScansCursor>)
        .transpose()?
        .map(|c| c.before);
    let mut views = s.app.state.scan_views(before, limit + 1).await?;
    let more = views.len() > limit as usize;
    views.truncate(limit as usize);
    let next_cursor = views
        .last()
        .filter(|_| more)
        .map(|v| encode_cursor(&ScansCursor { before: v.id }));
    let total = s.app.state.count_scans().await?;
    Ok(Json(Page {
        items: views.into_iter().map(ScanItem::from).collect(),
        next_cursor,
        total,
    }))
}

/// A scan's report head: the JSON report's `scan` and `summary`, and its state.
#[utoipa::path(
    get,
    path = "/api/scans/{id}",
    tag = "scans",
    params(("id" = i64, Path, description = "The scan's id")),
    responses(
        (status = 200, description = "The scan", body = ScanDetail),
        (status = 400, description = "A bad id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such scan", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn get_scan(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ScanDetail>> {
    let v = s
        .app
        .state
        .scan_view(id)
        .await?
        .ok_or_else(|| no_scan(id))?;
    Ok(Json(ScanDetail {
        scan: ReportScan {
            id: v.id,
            started_at: v.started_at,
            finished_at: v.finished_at,
            window: window_json(v.window),
            stores: v.stores,
            complete: v.state == ScanState::Complete,
            api_calls: v.api_calls,
            warnings: v.warnings,
        },
        summary: v.summary.as_ref().map(ReportSummary::from),
        state: v.state.as_str().to_string(),
    }))
}

// ---------------------------------------------------------------------------------------------
// GET /api/scans/{id}/orphans, /missing

/// `?limit=&cursor=&store=&prefix=&status=&sort=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingsQuery {
    /// Items per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page stopped (its `next_cursor`); opaque, valid for the same sort.
    pub cursor: Option<String>,
    /// Only this store's findings (missing rows: of the references of this store).
    pub store: Option<String>,
    /// Only keys that start with this.
    pub prefix: Option<String>,
    /// Missing rows only: `ACTIVE` or `DELETED` (any case).
    pub status: Option<String>,
    /// A column of the CSV report, `-` in front for descending; default: the report's order.
    pub sort: Option<String>,
}

/// One orphan: the CSV report's columns (SPEC §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrphanItem {
    pub store: String,
    pub key: String,
    /// Cloudinary's `image`, `video` or `raw`; `""` elsewhere.
    pub resource_type: String,
    pub size_bytes: u64,
    pub size_mb: f64,
    pub format: String,
    pub uploaded_at: Option<String>,
    pub url: Option<String>,
}

impl From<OrphanRow> for OrphanItem {
    fn from(r: OrphanRow) -> OrphanItem {
        OrphanItem {
            size_mb: report::size_mb_number(r.size_bytes),
            store: r.store,
            key: r.key,
            resource_type: r.resource_type,
            size_bytes: r.size_bytes,
            format: r.format,
            uploaded_at: r.uploaded_at,
            url: r.url,
        }
    }
}

/// One missing row: the CSV report's columns (SPEC §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct MissingItem {
    pub reference: String,
    /// Always a string: `""` when the query has no `id` column.
    pub record_id: String,
    pub title: Option<String>,
    pub owner: Option<String>,
    pub media_type: Option<String>,
    pub key: String,
    pub created_at: Option<String>,
    /// `ACTIVE` or `DELETED`.
    pub status: String,
    pub link: Option<String>,
}

impl From<MissingRow> for MissingItem {
    fn from(r: MissingRow) -> MissingItem {
        MissingItem {
            reference: r.reference,
            record_id: r.record_id.unwrap_or_default(),
            title: r.title,
            owner: r.owner,
            media_type: r.media_type,
            key: r.key,
            created_at: r.created_at,
            status: r.status,
            link: r.link,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FindingsCursor {
    /// The sort the cursor was made for.
    s: String,
    k: Vec<KeyPart>,
}

/// The filter of a findings query, checked.
fn filter_of(s: &AppState, kind: FindingKind, q: &FindingsQuery) -> ApiResult<Filter> {
    let mut f = Filter {
        prefix: q.prefix.clone().filter(|p| !p.is_empty()),
        ..Filter::default()
    };
    match kind {
        FindingKind::Orphans => {
            if q.status.is_some() {
                return Err(ApiError::bad_request(
                    "status filters missing rows (ACTIVE, DELETED); orphans have none",
                ));
            }
            f.store.clone_from(&q.store);
        }
        FindingKind::Missing => {
            if let Some(status) = &q.status {
                let up = status.trim().to_ascii_uppercase();
                if up != "ACTIVE" && up != "DELETED" {
                    return Err(ApiError::bad_request(format!(
                        "status `{status}` is not ACTIVE or DELETED"
                    )));
                }
                f.status = Some(up);
            }
            // A missing row names its reference; the store is the reference's, by the config.
            if let Some(store) = &q.store {
                let cfg = &s.app.cfg;
                f.references = Some(
                    cfg.references
                        .iter()
                        .filter(|r| cfg.stores.get(r.store).is_some_and(|st| &st.name == store))
                        .map(|r| r.name.clone())
                        .collect(),
                );
            }
        }
    }
    Ok(f)
}

async fn findings_page(
    s: &AppState,
    id: i64,
    kind: FindingKind,
    q: &FindingsQuery,
) -> ApiResult<(PageRows, Option<String>, u64)> {
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let sort = Sort::parse(kind, q.sort.as_deref())?;
    let filter = filter_of(s, kind, q)?;
    let after = match q.cursor.as_deref() {
        Some(c) => {
            let c: FindingsCursor = decode_cursor(c)?;
            if c.s != sort.spelling() {
                return Err(ApiError::bad_request(
                    "the cursor was made for another sort; start again without it",
                ));
            }
            Some(c.k)
        }
        None => None,
    };
    let (state, stores) = scan_facts(s, id).await?;
    let mut filter = filter;
    // Every orphan of a scan of one store is that store's: saying so lets a prefix or a key
    // sort seek the index instead of walking the rest of the scan.
    if kind == FindingKind::Orphans
        && filter.store.is_none()
        && let [only] = stores.as_slice()
    {
        filter.store = Some(only.clone());
    }
    let page = s
        .app
        .state
        .findings_page(&PageAsk {
            scan_id: id,
            findings: kind,
            filter: &filter,
            sort,
            after: after.as_deref(),
            limit,
        })
        .await?;
    let total = total(s, id, state, kind, filter).await?;
    let next = page.next.map(|k| {
        encode_cursor(&FindingsCursor {
            s: sort.spelling(),
            k,
        })
    });
    Ok((page.rows, next, total))
}

/// How many findings pass the filter: counted once per finished scan and filter.
async fn total(
    s: &AppState,
    id: i64,
    state: ScanState,
    kind: FindingKind,
    filter: Filter,
) -> ApiResult<u64> {
    let key = (id, kind, filter);
    if let Some(n) = s
        .scan_pages
        .totals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(*n);
    }
    let n = s.app.state.count_findings(id, kind, &key.2).await?;
    if state != ScanState::Running {
        remember(&s.scan_pages.totals, key, n);
    }
    Ok(n)
}

/// A scan's orphans, a page at a time.
#[utoipa::path(
    get,
    path = "/api/scans/{id}/orphans",
    tag = "scans",
    params(("id" = i64, Path, description = "The scan's id"), FindingsQuery),
    responses(
        (status = 200, description = "A page of orphans", body = Page<OrphanItem>),
        (status = 400, description = "A bad limit, cursor, sort or filter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such scan", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn orphans(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<FindingsQuery>,
) -> ApiResult<Json<Page<OrphanItem>>> {
    let (rows, next_cursor, total) = findings_page(&s, id, FindingKind::Orphans, &q).await?;
    let items = match rows {
        PageRows::Orphans(r) => r.into_iter().map(OrphanItem::from).collect(),
        PageRows::Missing(_) => Vec::new(),
    };
    Ok(Json(Page {
        items,
        next_cursor,
        total,
    }))
}

/// A scan's records with missing files, a page at a time.
#[utoipa::path(
    get,
    path = "/api/scans/{id}/missing",
    tag = "scans",
    params(("id" = i64, Path, description = "The scan's id"), FindingsQuery),
    responses(
        (status = 200, description = "A page of missing rows", body = Page<MissingItem>),
        (status = 400, description = "A bad limit, cursor, sort or filter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such scan", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn missing(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<FindingsQuery>,
) -> ApiResult<Json<Page<MissingItem>>> {
    let (rows, next_cursor, total) = findings_page(&s, id, FindingKind::Missing, &q).await?;
    let items = match rows {
        PageRows::Missing(r) => r.into_iter().map(MissingItem::from).collect(),
        PageRows::Orphans(_) => Vec::new(),
    };
    Ok(Json(Page {
        items,
        next_cursor,
        total,
    }))
}

// ---------------------------------------------------------------------------------------------
// GET /api/scans/{id}/report.csv

/// Where the CSV stream is.
enum CsvStep {
    OrphansHead,
    Orphans(Option<Vec<KeyPart>>),
    MissingHead,
    Missing(Option<Vec<KeyPart>>),
    Done,
}

/// The next piece of the CSV and the step after it.
async fn csv_piece(
    state: &crate::state::State,
    id: i64,
    step: CsvStep,
) -> crate::error::Result<(Vec<u8>, CsvStep)> {
    let io = |e: std::io::Error| Error::io("cannot write the CSV report", e);
    let mut out = Vec::new();
    let filter = Filter::default();
    let page = |kind, after: Option<Vec<KeyPart>>| {
        let filter = &filter;
        async move {
            state
                .findings_page(&PageAsk {
                    scan_id: id,
                    findings: kind,
                    filter,
                    sort: Sort::parse(kind, None)?,
                    after: after.as_deref(),
                    limit: CSV_PAGE,
                })
                .await
        }
    };
    let next = match step {
        CsvStep::OrphansHead => {
            report::csv_orphans_head(&mut out).map_err(io)?;
            CsvStep::Orphans(None)
        }
        CsvStep::Orphans(after) => {
            let p = page(FindingKind::Orphans, after).await?;
            if let PageRows::Orphans(rows) = &p.rows {
                let orphans: Vec<_> = rows.iter().map(OrphanRow::to_orphan).collect();
                report::csv_orphan_rows(&orphans, &mut out).map_err(io)?;
            }
            match p.next {
                Some(k) => CsvStep::Orphans(Some(k)),
                None => CsvStep::MissingHead,
            }
        }
        CsvStep::MissingHead => {
            report::csv_missing_head(&mut out).map_err(io)?;
            CsvStep::Missing(None)
        }
        CsvStep::Missing(after) => {
            let p = page(FindingKind::Missing, after).await?;
            if let PageRows::Missing(rows) = &p.rows {
                let missing: Vec<_> = rows.iter().map(MissingRow::to_missing).collect();
                report::csv_missing_rows(&missing, &mut out).map_err(io)?;
            }
            match p.next {
                Some(k) => CsvStep::Missing(Some(k)),
                None => CsvStep::Done,
            }
        }
        CsvStep::Done => CsvStep::Done,
    };
    Ok((out, next))
}

/// The scan's CSV report (SPEC §5), built from the state database: the same bytes `scan` wrote.
#[utoipa::path(
    get,
    path = "/api/scans/{id}/report.csv",
    tag = "scans",
    params(("id" = i64, Path, description = "The scan's id")),
    responses(
        (status = 200, description = "The two-section CSV report", body = String, content_type = "text/csv"),
        (status = 400, description = "A bad id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such scan", body = ErrorBody),
        (status = 409, description = "The scan is running, or failed and found nothing", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn report_csv(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let v = s
        .app
        .state
        .scan_view(id)
        .await?
        .ok_or_else(|| no_scan(id))?;
    match v.state {
        ScanState::Running => {
            return Err(ApiError::conflict(format!(
                "scan {id} is still running; its report is ready when GET /api/scans/{id} says it is no longer running"
            )));
        }
        ScanState::Failed => {
            return Err(ApiError::conflict(format!(
                "scan {id} failed and has no findings; GET /api/scans/{id} says why"
            )));
        }
        ScanState::Complete | ScanState::Incomplete => {}
    }
    let name = crate::time::parse_rfc3339(&v.started_at).map_or_else(
        || format!("scan_{id}.csv"),
        |t| format!("asset_detection_{}.csv", t.format("%Y-%m-%d_%H%M%S")),
    );
    let state = s.app.state.clone();
    // Streamed a page at a time: a million orphans never sit in memory together.
    let stream = futures::stream::unfold(Some(CsvStep::OrphansHead), move |step| {
        let state = state.clone();
        async move {
            let step = step?;
            if matches!(step, CsvStep::Done) {
                return None;
            }
            match csv_piece(&state, id, step).await {
                Ok((bytes, next)) => Some((Ok(axum::body::Bytes::from(bytes)), Some(next))),
                Err(e) => {
                    tracing::error!(error = %crate::error::one_line(&e), scan_id = id, "report.csv stopped");
                    Some((
                        Err(std::io::Error::other("the state database failed")),
                        None,
                    ))
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// POST /api/scans/{id}/purge

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PurgeFilter {
    /// Only this store's orphans.
    pub store: Option<String>,
    /// Only keys that start with this.
    pub prefix: Option<String>,
}

/// `POST /api/scans/{id}/purge`: which orphans of the scan, all when neither `keys` nor
/// `filter` is given (as `purge --scan ID`); both narrow when both are given.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PurgeBody {
    /// Keys of orphans of this scan (in any of its stores and resource types); keys that are
    /// not among them are skipped and counted.
    pub keys: Option<Vec<String>>,
    pub filter: Option<PurgeFilter>,
    /// Default `true`: a preview, nothing is queued.
    pub dry_run: Option<bool>,
    /// Override the mass-deletion guard for this request (audited).
    pub allow_mass_delete: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeStoreCount {
    pub store: String,
    pub count: u64,
    pub bytes: u64,
    pub size_mb: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeKey {
    pub store: String,
    pub resource_type: String,
    pub key: String,
    pub size_bytes: u64,
}

/// A dry run's preview: what a real run would queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgePreview {
    pub dry_run: bool,
    pub scan_id: i64,
    /// Orphans a real run would queue.
    pub count: u64,
    pub bytes: u64,
    pub size_mb: f64,
    /// Of those, how many the queue would hold until they are older than `min_age`.
    pub held: u64,
    /// Keys given that are not orphans of the scan (with the filter applied).
    pub skipped: u64,
    pub per_store: Vec<PurgeStoreCount>,
    /// The first 20 orphans, in the report's order.
    pub first_keys: Vec<PurgeKey>,
    /// The guard's refusals that `allow_mass_delete` would override.
    pub overridden: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeQueued {
    /// Entries added to the deletion queue.
    pub queued: u64,
    /// Orphans that already had a live entry.
    pub already_queued: u64,
    /// Entries held until their objects are older than `min_age`.
    pub held: u64,
    /// Keys given that are not orphans of the scan (with the filter applied).
    pub skipped: u64,
}

/// Narrows a plan to `keys`: the candidates, the per-store totals and the refusals of the
/// stores left. Answers how many keys matched no candidate.
fn narrow_to_keys(plan: &mut PurgePlan, keys: &[String]) -> u64 {
    let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
    plan.candidates
        .retain(|c| wanted.contains(c.orphan.key.as_str()));
    let found: HashSet<&str> = plan
        .candidates
        .iter()
        .map(|c| c.orphan.key.as_str())
        .collect();
    let skipped = wanted.iter().filter(|k| !found.contains(**k)).count() as u64;
    let mut per_store: BTreeMap<String, StoreTotal> = BTreeMap::new();
    for c in &plan.candidates {
        let t = per_store.entry(c.orphan.store.clone()).or_default();
        t.count += 1;
        t.bytes += c.orphan.size;
    }
    plan.refusals.retain(|r| per_store.contains_key(&r.store));
    plan.per_store = per_store;
    skipped
}

fn preview(id: i64, plan: &PurgePlan, skipped: u64) -> PurgePreview {
    let total = plan.total();
    PurgePreview {
        dry_run: true,
        scan_id: id,
        count: total.count,
        bytes: total.bytes,
        size_mb: report::size_mb_number(total.bytes),
        held: plan.held().count() as u64,
        skipped,
        per_store: plan
            .per_store
            .iter()
            .map(|(store, t)| PurgeStoreCount {
                store: store.clone(),
                count: t.count,
                bytes: t.bytes,
                size_mb: report::size_mb_number(t.bytes),
            })
            .collect(),
        first_keys: plan
            .candidates
            .iter()
            .take(PREVIEW_KEYS)
            .map(|c| PurgeKey {
                store: c.orphan.store.clone(),
                resource_type: c.orphan.resource_type.as_str().to_string(),
                key: c.orphan.key.clone(),
                size_bytes: c.orphan.size,
            })
            .collect(),
        overridden: plan
            .refusals
            .iter()
            .map(|r| format!("store {}: {}", r.store, r.reason))
            .collect(),
    }
}

/// Queues a scan's orphans for deletion, or previews it (the default): the checks of `purge
/// --scan ID` — a complete scan, the stores' fingerprints, the mass-deletion guard, `min_age`
/// holds.
#[utoipa::path(
    post,
    path = "/api/scans/{id}/purge",
    tag = "scans",
    params(("id" = i64, Path, description = "The scan's id")),
    request_body(content = Option<PurgeBody>, description = "Which orphans; a dry run unless dry_run is false"),
    responses(
        (status = 200, description = "Dry run: what would be queued", body = PurgePreview),
        (status = 202, description = "Queued for deletion", body = PurgeQueued),
        (status = 400, description = "Bad input: an unknown store, an empty keys list", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 404, description = "No such scan", body = ErrorBody),
        (status = 409, description = "Refused: the mass-deletion guard, a scan that is not complete, a store re-pointed since", body = ErrorBody),
        (status = 413, description = "The body is past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
    )
)]
pub async fn purge_scan(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: PurgeBody = super::cleanup::json_body(&body)?;
    if body.keys.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::bad_request(
            "keys is empty; give the keys to purge, or leave keys out to purge every orphan of the scan",
        ));
    }
    let filter = body.filter.unwrap_or_default();
    if let Some(store) = &filter.store {
        s.app.store_config(store)?;
    }
    scan_facts(&s, id).await?;
    let req = PurgeRequest {
        source: Source::Scan(id),
        older_than: None,
        stores: filter.store.into_iter().collect(),
        prefix: filter.prefix.filter(|p| !p.is_empty()),
    };
    let app = &s.app;
    let mut plan = purge::plan(app, &req).await?;
    let skipped = match &body.keys {
        Some(keys) => narrow_to_keys(&mut plan, keys),
        None => 0,
    };
    let allow = body.allow_mass_delete == Some(true);
    purge::check_guard(app, &plan, allow)?;
    if body.dry_run != Some(false) {
        return Ok((StatusCode::OK, Json(preview(id, &plan, skipped))).into_response());
    }
    let done = purge::enqueue(app, &plan, allow, &caller.actor()).await?;
    s.queue_changed();
    Ok((
        StatusCode::ACCEPTED,
        Json(PurgeQueued {
            queued: done.added,
            already_queued: done.already_queued,
            held: done.held,
            skipped,
        }),
    )
        .into_response())
}
