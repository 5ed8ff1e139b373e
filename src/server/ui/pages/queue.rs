//! The queue page: the figures of `GET /api/cleanup/stats`, then the pending and the failed
//! entries, each table paged on its own (keyset on the entry id, as `GET /api/queue`). Running
//! the queue, retrying and dropping are done by assets/queue.js through the JSON API.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::super::{Chrome, render, require};
use crate::domain::Spelling as _;
use crate::domain::queue::{Entry, QueueState};
use crate::report::count;
use crate::server::AppState;
use crate::server::api::cleanup::{QueueStats, stats};
use crate::time::{parse_rfc3339, rfc3339};

/// Entries per table and page.
const PER_PAGE: u32 = 50;

/// `?pending_cursor=&failed_cursor=`: where each table's page starts (the last id of the page
/// before it), so paging one table keeps the other where it was.
#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    pub pending_cursor: Option<String>,
    pub failed_cursor: Option<String>,
}

/// A cursor as a link gave it; anything else is the first page (a stale or edited link should
/// still show the queue, not an error).
fn cursor(c: Option<&str>) -> Option<i64> {
    c.and_then(|c| c.trim().parse::<i64>().ok())
        .filter(|&n| n > 0)
}

/// A figure: its text for people and its raw value for `data-value`.
struct Figure {
    name: &'static str,
    label: &'static str,
    text: String,
    raw: String,
}

struct Row {
    id: i64,
    key: String,
    store: String,
    resource_type: String,
    reason: String,
    attempts: u32,
    last_error: String,
    next_attempt_raw: String,
    next_attempt: String,
    queued_raw: String,
    queued: String,
}

impl Row {
    fn new(e: Entry, now: DateTime<Utc>) -> Row {
        let next = if e.state == QueueState::Failed {
            // A failed entry waits for a person, not for a time.
            "after a retry".to_string()
        } else {
            due(e.next_attempt_at, now)
        };
        Row {
            id: e.id,
            resource_type: e.object.resource_type.as_str().to_string(),
            store: e.object.store,
            key: e.object.key,
            reason: e.reason.as_str().to_string(),
            attempts: e.attempts,
            last_error: e.last_error.unwrap_or_default(),
            next_attempt_raw: rfc3339(e.next_attempt_at),
            next_attempt: next,
            queued_raw: rfc3339(e.queued_at),
            queued: when(e.queued_at),
        }
    }
}

/// One table of entries: a page of rows and the links around it.
struct Table {
    rows: Vec<Row>,
    total: u64,
    total_text: String,
    next: Option<String>,
    first: Option<String>,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct Page {
    chrome: Chrome,
    error: Option<String>,
    figures: Vec<Figure>,
    /// (attempts, count, count as text).
    by_attempts: Vec<(u32, u64, String)>,
    pending: Table,
    failed: Table,
    total_failed: u64,
    /// Entries the worker holds right now: counted as pending by the stats, shown in no table.
    claimed: u64,
}

fn href(pending: Option<&str>, failed: Option<&str>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(c) = pending {
        q.append_pair("pending_cursor", c);
    }
    if let Some(c) = failed {
        q.append_pair("failed_cursor", c);
    }
    let q = q.finish();
    if q.is_empty() {
        "/queue".to_string()
    } else {
        format!("/queue?{q}")
    }
}

/// Reads one table's page; `links` turns (its next cursor) into the next page's href.
async fn table(
    s: &AppState,
    state: QueueState,
    after: Option<i64>,
    now: DateTime<Utc>,
    links: impl Fn(Option<&str>) -> String,
) -> crate::error::Result<Table> {
    let page = s.app.state.queue_page(Some(state), after, PER_PAGE).await?;
    let next = if page.more {
        page.items.last().map(|e| links(Some(&e.id.to_string())))
    } else {
        None
    };
    Ok(Table {
        total: page.total,
        total_text: count(page.total),
        rows: page.items.into_iter().map(|e| Row::new(e, now)).collect(),
        next,
        first: after.map(|_| links(None)),
    })
}

fn figures(st: &QueueStats) -> Vec<Figure> {
    let time = |t: Option<&String>| match t.and_then(|t| parse_rfc3339(t)) {
        Some(x) => when(x),
        None => "none".to_string(),
    };
    vec![
        Figure {
            name: "total_pending",
            label: "Pending",
            text: count(st.total_pending),
            raw: st.total_pending.to_string(),
        },
        Figure {
            name: "total_failed",
            label: "Failed",
            text: count(st.total_failed),
            raw: st.total_failed.to_string(),
        },
        Figure {
            name: "oldest_queued",
            label: "Oldest queued",
            text: time(st.oldest_queued.as_ref()),
            raw: st.oldest_queued.clone().unwrap_or_default(),
        },
        Figure {
            name: "newest_queued",
            label: "Newest queued",
            text: time(st.newest_queued.as_ref()),
            raw: st.newest_queued.clone().unwrap_or_default(),
        },
    ]
}

pub async fn queue(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
) -> Response {
    let session = match require(&s, &headers, "/queue").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let chrome = Chrome::new(&s, &session, "Queue", "queue");
    let now = Utc::now();
    let (pc, fc) = (q.pending_cursor.as_deref(), q.failed_cursor.as_deref());
    let (pa, fa) = (cursor(pc), cursor(fc));
    // Keep only cursors that mean something in the links, so a bad one is dropped, not carried.
    let (pc, fc) = (pa.map(|n| n.to_string()), fa.map(|n| n.to_string()));
    let read = async {
        // The API's own figures (and its cache), so the page and the API never disagree.
        let st = stats(State(s.clone()))
            .await
            .map_err(|e| e.message)?
            .0
            .stats;
        let pending = table(&s, QueueState::Pending, pa, now, |c| href(c, fc.as_deref()))
            .await
            .map_err(|e| crate::server::error::ApiError::from(e).message)?;
        let failed = table(&s, QueueState::Failed, fa, now, |c| href(pc.as_deref(), c))
            .await
            .map_err(|e| crate::server::error::ApiError::from(e).message)?;
        let claimed = s
            .app
            .state
            .queue_page(Some(QueueState::Claimed), None, 1)
            .await
            .map_err(|e| crate::server::error::ApiError::from(e).message)?
            .total;
        Ok::<_, String>((st, pending, failed, claimed))
    };
    let page = match read.await {
        Ok((st, pending, failed, claimed)) => Page {
            chrome,
            error: None,
            figures: figures(&st),
            by_attempts: st
                .by_attempts
                .iter()
                .map(|a| (a.attempts, a.count, count(a.count)))
                .collect(),
            total_failed: st.total_failed,
            pending,
            failed,
            claimed,
        },
        Err(msg) => Page {
            chrome,
            error: Some(format!("The queue could not be read: {msg}.")),
            figures: Vec::new(),
            by_attempts: Vec::new(),
            total_failed: 0,
            claimed: 0,
            pending: empty(),
            failed: empty(),
        },
    };
    render(&page)
}

fn empty() -> Table {
    Table {
        rows: Vec::new(),
        total: 0,
        total_text: "0".into(),
        next: None,
        first: None,
    }
}

/// A time for people: `2026-12-05 04:00 UTC`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A span of whole seconds in its two largest units: `45 s`, `3 min 5 s`, `2 h 10 min`,
/// `3 d 4 h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a} {ua}")
        } else {
            format!("{a} {ua} {b} {ub}")
        }
    };
    if d > 0 {
        pair(d, "d", h, "h")
    } else if h > 0 {
        pair(h, "h", m, "min")
    } else if m > 0 {
        pair(m, "min", s, "s")
    } else {
        format!("{s} s")
    }
}

/// When a pending entry is next tried, from `now`: `due now` or `in 5 min`.
pub fn due(next: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (next - now).num_seconds();
    if secs <= 0 {
        "due now".to_string()
    } else {
        format!("in {}", span(secs.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_rfc3339(s).expect("time")
    }

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(span(0), "0 s");
        assert_eq!(span(45), "45 s");
        assert_eq!(span(60), "1 min");
        assert_eq!(span(185), "3 min 5 s");
        assert_eq!(span(7_800), "2 h 10 min");
        assert_eq!(span(7_205), "2 h");
        assert_eq!(span(3 * 86_400 + 4 * 3_600 + 59), "3 d 4 h");
    }

    #[test]
    fn an_entry_past_its_time_is_due_now() {
        let now = t("2026-12-05T00:10:00Z");
        assert_eq!(due(t("2026-12-05T00:09:00Z"), now), "due now");
        assert_eq!(due(now, now), "due now");
        assert_eq!(due(t("2026-12-05T00:15:30Z"), now), "in 5 min 30 s");
    }

    #[test]
    fn times_are_shown_in_utc_to_the_minute() {
        assert_eq!(when(t("2026-12-05T04:00:59Z")), "2026-12-05 04:00 UTC");
    }

    #[test]
    fn a_bad_cursor_is_the_first_page() {
        assert_eq!(cursor(Some("120")), Some(120));
        assert_eq!(cursor(Some("abc")), None);
        assert_eq!(cursor(Some("-3")), None);
        assert_eq!(cursor(Some("")), None);
        assert_eq!(cursor(None), None);
    }

    fn chrome(can_write: bool) -> Chrome {
        Chrome {
            title: "Queue".into(),
            active: "queue",
            app_name: "Test".into(),
            user: "token-1".into(),
            can_write,
            csrf: "c".into(),
        }
    }

    fn row(id: i64, key: &str) -> Row {
        Row {
            id,
            key: key.into(),
            store: "media".into(),
            resource_type: String::new(),
            reason: "purge".into(),
            attempts: 2,
            last_error: "503 <b>busy</b>".into(),
            next_attempt_raw: "2026-12-05T00:15:00Z".into(),
            next_attempt: "in 5 min".into(),
            queued_raw: "2026-12-05T00:00:00Z".into(),
            queued: "2026-12-05 00:00 UTC".into(),
        }
    }

    fn page(can_write: bool) -> String {
        let st = QueueStats {
            total_pending: 1234,
            total_failed: 1,
            oldest_queued: Some("2026-12-05T00:00:00Z".into()),
            newest_queued: None,
            by_attempts: Vec::new(),
        };
        Page {
            chrome: chrome(can_write),
            error: None,
            figures: figures(&st),
            by_attempts: vec![(0, 1233, "1,233".into()), (2, 1, "1".into())],
            pending: Table {
                rows: vec![row(7, "a <b>&\"c\".jpg")],
                total: 1234,
                total_text: count(1234),
                next: Some(href(Some("7"), None)),
                first: None,
            },
            failed: Table {
                rows: vec![row(9, "f.jpg")],
                total: 1,
                total_text: "1".into(),
                next: None,
                first: None,
            },
            total_failed: 1,
            claimed: 0,
        }
        .render()
        .expect("render")
    }

    #[test]
    fn figures_carry_their_raw_values_and_show_separators() {
        let html = page(true);
        assert!(
            html.contains(
                r#"<div data-stat="total_pending"><dt>Pending</dt><dd data-value="1234">1,234</dd>"#
            ),
            "{html}"
        );
        assert!(html.contains(r#"data-stat="oldest_queued""#));
        assert!(html.contains(r#"<dd data-value="2026-12-05T00:00:00Z"><time"#));
        assert!(html.contains(r#"<li data-attempts="0" data-value="1233">"#));
        assert!(html.contains(r#"<a href="/queue?pending_cursor=7" rel="next">Next page</a>"#));
    }

    #[test]
    fn rows_escape_keys_and_errors_and_carry_their_buttons() {
        let html = page(true);
        assert!(html.contains(r#"<tr data-id="7">"#));
        assert!(html.contains("a &#60;b&#62;&#38;&#34;c&#34;.jpg"), "{html}");
        assert!(!html.contains("<b>busy</b>"));
        assert!(html.contains(r#"data-retry="9""#) && html.contains(r#"data-drop="9""#));
        assert!(html.contains(r#"<button type="button" id="run-queue">"#));
        assert!(!html.contains("read-only"));
    }

    #[test]
    fn a_read_only_session_sees_disabled_buttons_and_why() {
        let html = page(false);
        assert!(html.contains("Your token is read-only: changes are refused."));
        for b in [
            r#"id="run-queue" disabled"#,
            r#"id="retry-all-failed" disabled"#,
            r#"aria-describedby="key-7" disabled>Retry"#,
            r#"aria-describedby="key-9" disabled>Drop"#,
        ] {
            assert!(html.contains(b), "{b} missing in {html}");
        }
    }

    #[test]
    fn paging_one_table_keeps_the_others_place() {
        assert_eq!(href(None, None), "/queue");
        assert_eq!(href(Some("50"), None), "/queue?pending_cursor=50");
        assert_eq!(
            href(Some("50"), Some("7")),
            "/queue?pending_cursor=50&failed_cursor=7"
        );
    }
}
