//! Dashboard sessions (SPEC §8): a login with an API token sets a cookie that is `HttpOnly`,
//! `SameSite=Strict`, and `Secure` when the request came over TLS (behind a proxy that says so,
//! with `trust_forwarded_proto`). The cookie stands for the token until logout or 12 hours;
//! every request that changes something must also carry the session's CSRF token and come from
//! the dashboard's own origin.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::super::AppState;
use super::super::auth::Caller;

/// The session cookie's name.
pub const COOKIE: &str = "assetgc_session";
/// The header the dashboard's scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// A logged-in visitor: the token's caller and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// The SHA-256 (hex) of the cookie's value: the session's key.
    pub id_sha256: String,
}

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session the request's cookie names, while it lasts and its token is still known.
pub async fn from_request(s: &AppState, headers: &HeaderMap) -> Option<Session> {
    let value = cookie(headers, COOKIE)?;
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id_sha256 = sha256_hex(value);
    let stored = match s.app.state.ui_session(&id_sha256, Utc::now()).await {
        Ok(x) => x?,
        Err(e) => {
            tracing::warn!(error = %crate::error::one_line(&e), "cannot read a dashboard session");
            return None;
        }
    };
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&stored.token_sha256, &mut digest).ok()?;
    let caller = s.auth.identify_digest(&s.app.state, &digest).await?;
    Some(Session {
        caller,
        csrf: stored.csrf,
        id_sha256,
    })
}

/// Whether the request came over TLS: only a trusted proxy's `X-Forwarded-Proto: https` can
/// say so (`serve` itself speaks plain HTTP).
pub fn is_https(headers: &HeaderMap, trust_forwarded_proto: bool) -> bool {
    trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            })
}

/// A request from another site is refused: its `Origin` (or, without one, `Referer`) must name
/// this host, and a browser's `Sec-Fetch-Site` must not say `cross-site` or `same-site`.
pub fn same_origin(headers: &HeaderMap, trust_forwarded: bool) -> bool {
    // Behind a proxy that rewrites `Host` (nginx's default), the browser's host is the one the
    // proxy forwards, when it is trusted.
    let forwarded = trust_forwarded
        .then(|| headers.get("x-forwarded-host"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let host = forwarded
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match from {
        // A request no browser would send cross-site without saying where from.
        None => true,
        Some("null") => false,
        Some(o) => url::Url::parse(o).ok().is_some_and(|u| {
            let authority = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return false,
            };
            !host.is_empty() && authority.eq_ignore_ascii_case(host)
        }),
    }
}

/// What a session's request that changes something must show: its own origin and the
/// session's CSRF token in `X-CSRF-Token`.
pub fn check_write(
    headers: &HeaderMap,
    session: &Session,
    trust_forwarded: bool,
) -> Result<(), String> {
    if !same_origin(headers, trust_forwarded) {
        return Err(
            "refused: a request from another site (its Origin is not this dashboard)".into(),
        );
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !csrf_matches(sent, &session.csrf) {
        return Err(
            "refused: the request lacks this session's CSRF token (reload the page)".into(),
        );
    }
    Ok(())
}

/// Constant-time comparison of a presented CSRF token with the session's.
pub fn csrf_matches(sent: &str, expected: &str) -> bool {
    !sent.is_empty()
        && sent.len() == expected.len()
        && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

fn set_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let v = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where to go after logging in: a path of this site only (never `//host` or a URL).
pub fn safe_next(next: Option<&str>) -> String {
    // Printable ASCII only: browsers drop tabs and newlines from a URL, so `/\t/evil.example`
    // would read as `//evil.example`; and the path must stay on this host once resolved.
    let ok = |n: &str| {
        n.starts_with('/')
            && n.bytes().all(|b| b.is_ascii_graphic())
            && !matches!(n.as_bytes().get(1), Some(b'/' | b'\\'))
            && url::Url::parse("http://assetgc.invalid/")
                .and_then(|base| base.join(n))
                .is_ok_and(|u| u.host_str() == Some("assetgc.invalid"))
    };
    match next {
        Some(n) if ok(n) => n.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    pub token: String,
    pub next: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct LogoutForm {
    pub csrf: String,
}

/// `POST /login`: the token is checked as the API checks it; a session is opened and its
/// cookie set, or the login page is shown again with why.
pub async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let trust = s.app.cfg.server.trust_forwarded_proto;
    if !same_origin(&headers, trust) {
        return super::login_page(
            Some("Refused: a login from another site."),
            "/",
            StatusCode::FORBIDDEN,
        );
    }
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let Some(caller) = s.auth.identify(&s.app.state, token).await else {
        return super::login_page(
            Some("That token is not valid."),
            &next,
            StatusCode::UNAUTHORIZED,
        );
    };
    let (Some(id), Some(csrf)) = (random_hex(), random_hex()) else {
        return super::login_page(
            Some("The server cannot make a session now."),
            &next,
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    // A browser that logs in again leaves its old session behind: end it.
    if let Some(old) = from_request(&s, &headers).await
        && let Err(e) = s.app.state.end_ui_session(&old.id_sha256).await
    {
        tracing::warn!(error = %crate::error::one_line(&e), "cannot end a dashboard session");
    }
    let now = Utc::now();
    if let Err(e) = s
        .app
        .state
        .create_ui_session(
            &sha256_hex(&id),
            &hex::encode(caller.digest),
            &csrf,
            now,
            now + LIFETIME,
        )
        .await
    {
        tracing::warn!(error = %crate::error::one_line(&e), "cannot record a dashboard session");
        return super::login_page(
            Some("The server cannot make a session now."),
            &next,
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    let secure = is_https(&headers, s.app.cfg.server.trust_forwarded_proto);
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&id, LIFETIME.num_seconds(), secure),
    );
    r
}

/// `POST /logout`: ends the session (with its CSRF token) and clears the cookie.
pub async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Response {
    let trust = s.app.cfg.server.trust_forwarded_proto;
    let secure = is_https(&headers, trust);
    let Some(session) = from_request(&s, &headers).await else {
        // No live session: clear whatever cookie is left.
        let mut r = Redirect::to("/login").into_response();
        r.headers_mut()
            .insert(header::SET_COOKIE, set_cookie("", 0, secure));
        return r;
    };
    if !same_origin(&headers, trust) || !csrf_matches(&form.csrf, &session.csrf) {
        return super::login_page(
            Some(
                "Refused: the logout lacks this session's CSRF token. Reload the page and try again.",
            ),
            "/",
            StatusCode::FORBIDDEN,
        );
    }
    if let Err(e) = s.app.state.end_ui_session(&session.id_sha256).await {
        tracing::warn!(error = %crate::error::one_line(&e), "cannot end a dashboard session");
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0, secure));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn same_origin_plain(h: &HeaderMap) -> bool {
        same_origin(h, false)
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_host_is_the_origin_s() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "dash.example"),
            ("origin", "https://dash.example"),
        ]);
        assert!(same_origin(&h, true));
        assert!(!same_origin(&h, false));
    }

    #[test]
    fn other_origins_are_refused() {
        assert!(same_origin_plain(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin_plain(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin_plain(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin_plain(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(!same_origin_plain(&headers(&[
            ("host", "a:1"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin_plain(&headers(&[
            ("host", "a:1"),
            ("referer", "http://b:1/x")
        ])));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/findings?scan=2")), "/findings?scan=2");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\t\\evil.example",
            "/\\evil.example",
            "/ /x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = headers(&[("cookie", "a=1; assetgc_session=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert!(csrf_matches("x1", "x1") && !csrf_matches("", "") && !csrf_matches("x1", "x2"));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = set_cookie("v", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(
            !set_cookie("v", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
        let mut h = headers(&[("x-forwarded-proto", "https")]);
        assert!(is_https(&h, true) && !is_https(&h, false));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!is_https(&h, true));
    }
}
