//! The deletion queue over HTTP (SPEC §6, §8): `POST /api/deletions` queues keys by hand,
//! `GET /api/queue` pages through the entries, `POST /api/queue/retry` and `/drop` are a
//! person's retry and drop. Each goes through `ops::queue`, with the caller as the audit actor.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cleanup::json_body;
use super::page::{Page, PageQuery};
use crate::domain::Spelling as _;
use crate::domain::queue::{Changed, Entry, QueueState, Selection};
use crate::ops;
use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::error::{ApiError, ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deletions))
        .routes(routes!(list))
        .routes(routes!(retry))
        .routes(routes!(drop_entries))
}

/// `POST /api/deletions`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct DeletionsRequest {
    /// A configured store's name.
    pub store: Option<String>,
    /// Cloudinary: `image`, `video` or `raw`; needed for a bare public_id unless the store
    /// lists a single resource type (the `cloudinary` key format carries its own).
    pub resource_type: Option<String>,
    pub keys: Option<Vec<String>>,
    /// The caller's own reference, kept with each entry.
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionsResponse {
    /// Entries added to the queue.
    pub queued: u64,
    /// Keys that had a live entry already (not added again).
    pub already_queued: u64,
}

/// Queues keys of one store for deletion, due at once (SPEC §6: explicit deletions are not
/// held by `min_age`; the reference re-check right before the delete still guards them). One
/// bad key queues nothing.
#[utoipa::path(
    post,
    path = "/api/deletions",
    tag = "queue",
    request_body = DeletionsRequest,
    responses(
        (status = 202, description = "Queued; the worker deletes them", body = DeletionsResponse),
        (status = 400, description = "Bad input: no store, an unknown store, no keys, a key the store cannot hold, a bare Cloudinary public_id without its resource type", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 409, description = "A key in a store's quarantine (trash) is refused", body = ErrorBody),
        (status = 413, description = "Body past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn deletions(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeletionsResponse>)> {
    let b: DeletionsRequest = json_body(&body)?;
    let store = b
        .store
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("`store` is required: a configured store's name"))?;
    let keys = b.keys.unwrap_or_default();
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "`keys` is required: a non-empty list of keys to delete",
        ));
    }
    let rt = b.resource_type.filter(|t| !t.is_empty());
    let (queued, already_queued) = ops::queue::add(
        &s.app,
        &store,
        rt.as_deref(),
        &keys,
        b.client_id.as_deref().unwrap_or_default(),
        &caller.actor(),
    )
    .await?;
    s.queue_changed();
    Ok((
        StatusCode::ACCEPTED,
        Json(DeletionsResponse {
            queued,
            already_queued,
        }),
    ))
}

/// `?state=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueFilter {
    /// Only entries in this state: pending, claimed, failed, done or dropped.
    pub state: Option<String>,
}

/// A queue entry: the columns of SPEC §6.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    pub id: i64,
    pub store: String,
    /// `image`, `video` or `raw` on Cloudinary; empty elsewhere.
    pub resource_type: String,
    pub key: String,
    /// What queued it: purge, queue add, quarantine, clean, expire, trigger.
    pub reason: String,
    /// The expiry rule or policy that queued it (empty otherwise).
    pub rule: String,
    /// The expiring row, for an expiry rule.
    pub row_id: String,
    pub client_id: String,
    /// RFC 3339 UTC.
    pub queued_at: String,
    pub uploaded_at: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    /// pending, claimed, failed, done or dropped.
    pub state: String,
}

impl From<Entry> for QueueItem {
    fn from(e: Entry) -> QueueItem {
        QueueItem {
            id: e.id,
            resource_type: e.object.resource_type.as_str().to_string(),
            store: e.object.store,
            key: e.object.key,
            reason: e.reason.as_str().to_string(),
            rule: e.rule,
            row_id: e.row_id,
            client_id: e.client_id,
            queued_at: crate::time::rfc3339(e.queued_at),
            uploaded_at: e.uploaded_at.map(crate::time::rfc3339),
            attempts: e.attempts,
            last_error: e.last_error,
            next_attempt_at: crate::time::rfc3339(e.next_attempt_at),
            state: e.state.as_str().to_string(),
        }
    }
}

/// The queue's entries, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/queue",
    tag = "queue",
    params(PageQuery, QueueFilter),
    responses(
        (status = 200, description = "One page of entries", body = Page<QueueItem>),
        (status = 400, description = "A limit out of 1..=1000, a cursor this endpoint did not give, an unknown state", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<QueueFilter>,
) -> ApiResult<Json<Page<QueueItem>>> {
    let limit = page.limit()?;
    let after = page.id_cursor()?;
    let state = match filter.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(w) => Some(QueueState::parse(w).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state `{w}` is not a queue state; use pending, claimed, failed, done or dropped"
            ))
        })?),
    };
    let rows = s.app.state.queue_page(state, after, limit).await?;
    let next_cursor = if rows.more {
        rows.items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.items.into_iter().map(QueueItem::from).collect(),
        next_cursor,
        total: rows.total,
    }))
}

/// Which entries: `{"ids": [...]}` or `{"all_failed": true}`, exactly one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SelectRequest {
    pub ids: Option<Vec<i64>>,
    pub all_failed: Option<bool>,
}

impl SelectRequest {
    fn selection(self) -> ApiResult<Selection> {
        match (self.ids, self.all_failed.unwrap_or(false)) {
            (Some(_), true) => Err(ApiError::bad_request(
                "give either `ids` or `all_failed`, not both",
            )),
            (Some(ids), false) if ids.is_empty() => Err(ApiError::bad_request(
                "`ids` is empty: name the entries (GET /api/queue shows their ids)",
            )),
            (Some(ids), false) => Ok(Selection::Ids(ids)),
            (None, true) => Ok(Selection::AllFailed),
            (None, false) => Err(ApiError::bad_request(
                "give `ids` (a list of queue entry ids) or `\"all_failed\": true`",
            )),
        }
    }
}

/// What a retry or drop changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeResponse {
    pub success: bool,
    /// Entries changed: retried plus dropped.
    pub changed: u64,
    /// Entries due again with their attempts reset.
    pub retried: u64,
    /// Entries dropped (by a drop, or by a retry because their object is queued again).
    pub dropped: u64,
    /// Entries `all_failed` left as they are: an earlier attempt may have moved their object
    /// to the trash, and the worker must find that copy first (retry them).
    pub refused: u64,
}

fn changes(done: &[Changed]) -> ChangeResponse {
    let count = |w: Changed| done.iter().filter(|&&c| c == w).count() as u64;
    let (retried, dropped, refused) = (
        count(Changed::Retried),
        count(Changed::Dropped),
        count(Changed::Refused),
    );
    ChangeResponse {
        success: true,
        changed: retried + dropped,
        retried,
        dropped,
        refused,
    }
}

/// Failed (or waiting) entries become due again with their attempts reset; entries that came
/// from a scan or policy never before `min_age` after their upload.
#[utoipa::path(
    post,
    path = "/api/queue/retry",
    tag = "queue",
    request_body = SelectRequest,
    responses(
        (status = 200, description = "What changed", body = ChangeResponse),
        (status = 400, description = "Neither or both of ids and all_failed; an id that does not exist or cannot be retried", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 413, description = "Body past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn retry(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<ChangeResponse>> {
    let sel = json_body::<SelectRequest>(&body)?.selection()?;
    let done = ops::queue::retry(&s.app, &sel, &caller.actor()).await?;
    s.queue_changed();
    Ok(Json(changes(&done)))
}

/// Pending or failed entries are dropped: never deleted, audited `dropped`.
#[utoipa::path(
    post,
    path = "/api/queue/drop",
    tag = "queue",
    request_body = SelectRequest,
    responses(
        (status = 200, description = "What changed", body = ChangeResponse),
        (status = 400, description = "Neither or both of ids and all_failed; an id that does not exist or cannot be dropped", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 413, description = "Body past 1 MiB", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn drop_entries(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<ChangeResponse>> {
    let sel = json_body::<SelectRequest>(&body)?.selection()?;
    let done = ops::queue::drop(&s.app, &sel, &caller.actor()).await?;
    s.queue_changed();
    Ok(Json(changes(&done)))
}
