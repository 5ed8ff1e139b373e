//! The audit page: the audit log newest first, a key's lines alone when asked, paged as
//! `GET /api/audit` pages it (keyset on the line id, the cursor the last id shown).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::super::{Chrome, render, require};
use crate::domain::queue::AuditRow;
use crate::report::count;
use crate::server::AppState;

/// Lines a page shows.
const PAGE: u32 = 50;

/// `?key=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    pub key: Option<String>,
    pub cursor: Option<String>,
}

/// One line as the table shows it.
pub struct Line {
    pub id: i64,
    pub time: String,
    /// `2025-09-15 14:30:00`: the same instant, easier to read (the column says UTC).
    pub time_shown: String,
    pub actor: String,
    pub store: String,
    pub resource_type: &'static str,
    pub key: String,
    /// `/audit?key=KEY`: this key's lines alone.
    pub key_href: String,
    pub outcome: String,
    pub detail: String,
    pub queue_id: Option<i64>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct Page {
    chrome: Chrome,
    key: String,
    lines: Vec<Line>,
    total: u64,
    total_shown: String,
    /// The next page's URL, when more lines follow.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first one is shown).
    paged: bool,
    first: String,
    error: Option<String>,
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/audit` with these parameters, the empty ones left out.
fn href(key: &str, cursor: Option<i64>) -> String {
    let mut parts = Vec::new();
    if !key.is_empty() {
        parts.push(format!("key={}", encode(key)));
    }
    if let Some(c) = cursor {
        parts.push(format!("cursor={c}"));
    }
    if parts.is_empty() {
        "/audit".to_string()
    } else {
        format!("/audit?{}", parts.join("&"))
    }
}

fn line(r: AuditRow) -> Line {
    Line {
        id: r.id,
        key_href: href(&r.key, None),
        time_shown: r.at.replace('T', " ").trim_end_matches('Z').to_string(),
        time: r.at,
        actor: r.actor,
        store: r.store,
        resource_type: r.resource_type.as_str(),
        key: r.key,
        outcome: r.outcome,
        detail: r.detail.unwrap_or_default(),
        queue_id: r.queue_id,
    }
}

pub async fn audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let key = q.key.unwrap_or_default();
    let here = href(&key, None);
    let session = match require(&s, &headers, &here).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut page = Page {
        chrome: Chrome::new(&s, &session, "Audit", "audit"),
        first: here,
        key,
        lines: Vec::new(),
        total: 0,
        total_shown: "0".into(),
        next: None,
        paged: false,
        error: None,
    };
    let mut status = StatusCode::OK;
    // As the API reads its cursor: the last id the previous page showed; empty is the start.
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                status = StatusCode::BAD_REQUEST;
                page.error = Some(
                    "That page link is not one this page gave; showing the first page.".into(),
                );
                None
            }
        },
    };
    page.paged = before.is_some();
    let key = Some(page.key.as_str()).filter(|k| !k.is_empty());
    match s.app.state.audit_page(key, before, PAGE).await {
        Ok(rows) => {
            page.next = rows
                .items
                .last()
                .filter(|_| rows.more)
                .map(|r| href(&page.key, Some(r.id)));
            page.total = rows.total;
            page.total_shown = count(rows.total);
            page.lines = rows.items.into_iter().map(line).collect();
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::one_line(&e), "the audit page could not read the state database");
            status = StatusCode::SERVICE_UNAVAILABLE;
            page.error = Some(
                "The audit log could not be read from the state database; the server log has the details."
                    .into(),
            );
        }
    }
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
    fn links_keep_the_filter_and_encode_the_key() {
        assert_eq!(href("", None), "/audit");
        assert_eq!(href("", Some(40)), "/audit?cursor=40");
        assert_eq!(
            href("a b/c&d=é.jpg", Some(7)),
            "/audit?key=a+b%2Fc%26d%3D%C3%A9.jpg&cursor=7"
        );
    }
}
