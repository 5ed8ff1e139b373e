//! `GET /api/audit` (SPEC §6, §8): the audit log, newest first, a page at a time.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{Page, PageQuery};
use crate::domain::queue::AuditRow;
use crate::server::AppState;
use crate::server::error::{ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `?key=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only this key's lines (and those of its quarantined copies).
    pub key: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditItem {
    pub id: i64,
    /// RFC 3339 UTC.
    pub time: String,
    /// `token:<name>`, a command, or `trigger`.
    pub actor: String,
    pub store: String,
    pub resource_type: String,
    pub key: String,
    /// deleted, quarantined, already_gone, referenced, too_recent, `kept: shared`,
    /// `failed: …`, dropped, retried, mass_delete_override, restored, kept.
    pub outcome: String,
    pub detail: Option<String>,
    /// The queue entry it concerns, when there is one.
    pub queue_id: Option<i64>,
}

impl From<AuditRow> for AuditItem {
    fn from(r: AuditRow) -> AuditItem {
        AuditItem {
            id: r.id,
            time: r.at,
            actor: r.actor,
            store: r.store,
            resource_type: r.resource_type.as_str().to_string(),
            key: r.key,
            outcome: r.outcome,
            detail: r.detail,
            queue_id: r.queue_id,
        }
    }
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(PageQuery, AuditFilter),
    responses(
        (status = 200, description = "One page of lines", body = Page<AuditItem>),
        (status = 400, description = "A limit out of 1..=1000 or a cursor this endpoint did not give", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Past the token's rate limit", body = ErrorBody),
        (status = 503, description = "The state database failed", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<AuditFilter>,
) -> ApiResult<Json<Page<AuditItem>>> {
    let limit = page.limit()?;
    let before = page.id_cursor()?;
    let key = filter.key.as_deref().filter(|k| !k.is_empty());
    let rows = s.app.state.audit_page(key, before, limit).await?;
    let next_cursor = if rows.more {
        rows.items.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.items.into_iter().map(AuditItem::from).collect(),
        next_cursor,
        total: rows.total,
    }))
}
