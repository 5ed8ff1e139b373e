//! The jobs page.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::super::{Chrome, render, require};
use crate::server::AppState;

#[derive(Template)]
#[template(path = "jobs.html")]
struct Page {
    chrome: Chrome,
}

pub async fn jobs(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&s, &headers, "/jobs").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&Page {
        chrome: Chrome::new(&s, &session, "Jobs", "jobs"),
    })
}
