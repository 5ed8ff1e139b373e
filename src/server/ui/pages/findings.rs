//! The findings page.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::super::{Chrome, render, require};
use crate::server::AppState;

#[derive(Template)]
#[template(path = "findings.html")]
struct Page {
    chrome: Chrome,
}

pub async fn findings(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&s, &headers, "/findings").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&Page {
        chrome: Chrome::new(&s, &session, "Findings", "findings"),
    })
}
