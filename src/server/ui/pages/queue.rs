//! The queue page.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::super::{Chrome, render, require};
use crate::server::AppState;

#[derive(Template)]
#[template(path = "queue.html")]
struct Page {
    chrome: Chrome,
}

pub async fn queue(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&s, &headers, "/queue").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&Page {
        chrome: Chrome::new(&s, &session, "Queue", "queue"),
    })
}
