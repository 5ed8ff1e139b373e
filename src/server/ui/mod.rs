//! The dashboard (SPEC §8) at `/`: server-rendered pages (templates compiled into the binary)
//! and a small script, both served from the binary itself, no CDN. Reading is done here from the
//! state database; every change goes through the JSON API with the session's cookie and CSRF
//! token, so the dashboard can do exactly what the caller's token may.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::AppState;
use crate::config::Scope;

pub mod pages;
pub mod session;
pub mod svg;

use session::Session;

/// The files under `assets/`, compiled in.
#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// What every page's frame shows: the title, which tab is active, who is logged in, whether
/// their token may change things, and the session's CSRF token for the scripts.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub active: &'static str,
    pub app_name: String,
    pub user: String,
    pub can_write: bool,
    pub csrf: String,
}

impl Chrome {
    pub fn new(s: &AppState, session: &Session, title: &str, active: &'static str) -> Chrome {
        Chrome {
            title: title.to_string(),
            active,
            app_name: s.app.cfg.app_name.clone(),
            user: session.caller.name.clone(),
            can_write: session.caller.scope == Scope::Write,
            csrf: session.csrf.clone(),
        }
    }

    /// The navigation: (path, label, active).
    pub fn nav(&self) -> Vec<(&'static str, &'static str, bool)> {
        [
            ("/overview", "Overview"),
            ("/findings", "Findings"),
            ("/queue", "Queue"),
            ("/jobs", "Jobs"),
            ("/audit", "Audit"),
        ]
        .into_iter()
        .map(|(p, l)| (p, l, p.trim_start_matches('/') == self.active))
        .collect()
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/login", get(login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/overview", get(pages::overview))
        .route("/findings", get(pages::findings))
        .route("/queue", get(pages::queue))
        .route("/jobs", get(pages::jobs))
        .route("/audit", get(pages::audit))
        .route("/assets/{*path}", get(asset))
}

async fn root(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match session::from_request(&s, &headers).await {
        Some(_) => Redirect::to("/overview").into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    next: &'a str,
}

#[derive(Debug, serde::Deserialize)]
pub struct NextQuery {
    pub next: Option<String>,
}

async fn login_form(axum::extract::Query(q): axum::extract::Query<NextQuery>) -> Response {
    login_page(None, &session::safe_next(q.next.as_deref()), StatusCode::OK)
}

/// The login page, with why the last attempt failed.
pub fn login_page(error: Option<&str>, next: &str, status: StatusCode) -> Response {
    let mut r = render(&LoginPage { error, next });
    *r.status_mut() = status;
    r
}

/// A page's HTML with the dashboard's headers: no caching, no framing, scripts and styles from
/// this server only.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = Html(html).into_response();
            secure_headers(r.headers_mut());
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page failed to render");
            let mut r = (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>Error</title><p>The page could not be shown; the server log has the details.</p>".to_string())).into_response();
            secure_headers(r.headers_mut());
            r
        }
    }
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The session of a page's request, or the redirect to the login page that comes back here.
pub async fn require(s: &AppState, headers: &HeaderMap, here: &str) -> Result<Session, Response> {
    match session::from_request(s, headers).await {
        Some(x) => Ok(x),
        None => {
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Err(Redirect::to(&format!("/login?next={next}")).into_response())
        }
    }
}

async fn asset(Path(path): Path<String>) -> Response {
    match Assets::get(&path) {
        Some(f) => {
            let mime = mime_guess::from_path(&path).first_or_octet_stream();
            let mut r = f.data.into_owned().into_response();
            if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
