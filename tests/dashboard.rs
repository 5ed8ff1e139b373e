//! The dashboard (SPEC §8) at `/`. First without a browser, through the router: the login's
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` only behind a trusted TLS proxy), the CSRF
//! token and same-origin check every change from a session needs, logout, read-only sessions,
//! cookies the server never issued, and the pages' Content-Security-Policy with no inline script.
//! Then the whole story in a real Chromium (tests/dashboard/e2e.mjs, playwright-core) against
//! `assetgc serve` over a scanned store: log in, figures equal to the API's, select and queue
//! orphans, work the queue, run a job, a guard refusal shown, log out, a read token refused, every
//! page screenshotted at two sizes and checked with axe-core.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::api::Api;
use common::write_file;
use tower::ServiceExt as _;

const DAY: Duration = Duration::from_secs(86_400);

/// The host every request of the router tests names; a same-origin request's `Origin`.
const HOST: &str = "dash.test";
const ORIGIN: &str = "http://dash.test";

/// Every page behind the login.
const PAGES: [&str; 5] = ["/overview", "/findings", "/queue", "/jobs", "/audit"];

/// Store `media`: 12 referenced objects, 9 orphans under `tmp/` and 3 under `keep/`, all three
/// days old; the app database names 5 keys no store has (3 ACTIVE, 2 DELETED). Store `bulk`: 40
/// referenced objects and 80 orphans under `bulk/`, past `max_orphan_share` (0.5 of at least 100
/// scanned), so a purge from it is refused. One job, `detect`, scans everything.
struct Story {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
}

impl Story {
    fn new(server_extra: &str) -> Story {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let old = SystemTime::now() - 3 * DAY;
        let media = dir.join("media");
        let bulk = dir.join("bulk");
        std::fs::create_dir_all(&media).expect("mkdir media");
        std::fs::create_dir_all(&bulk).expect("mkdir bulk");
        let conn = rusqlite::Connection::open(dir.join("app.db")).expect("app db");
        conn.execute_batch(
            "CREATE TABLE rows (id integer PRIMARY KEY, key text, title text, status text);
             CREATE TABLE bulk_rows (id integer PRIMARY KEY, key text, title text, status text);",
        )
        .expect("tables");
        for i in 0..12 {
            let key = format!("img/{i:02}.jpg");
            write_file(&media, &key, b"referenced", old);
            conn.execute(
                "INSERT INTO rows (key, title, status) VALUES (?1, 'kept', 'ACTIVE')",
                [&key],
            )
            .expect("row");
        }
        for i in 0..9 {
            // Sizes differ so that a sort by size means something.
            write_file(
                &media,
                &format!("tmp/{i:02}.jpg"),
                &vec![b't'; 100 * (i + 1)],
                old,
            );
        }
        for i in 0..3 {
            write_file(&media, &format!("keep/{i:02}.png"), &vec![b'k'; 2048], old);
        }
        for (key, status) in [
            ("gone/a1.jpg", "ACTIVE"),
            ("gone/a2.jpg", "ACTIVE"),
            ("gone/a3.jpg", "ACTIVE"),
            ("gone/d1.jpg", "DELETED"),
            ("gone/d2.jpg", "DELETED"),
        ] {
            conn.execute(
                "INSERT INTO rows (key, title, status) VALUES (?1, 'lost', ?2)",
                [key, status],
            )
            .expect("row");
        }
        for i in 0..40 {
            let key = format!("b/{i:03}.jpg");
            write_file(&bulk, &key, b"b", old);
            conn.execute(
                "INSERT INTO bulk_rows (key, title, status) VALUES (?1, 'kept', 'ACTIVE')",
                [&key],
            )
            .expect("row");
        }
        for i in 0..80 {
            write_file(&bulk, &format!("bulk/{i:03}.jpg"), b"orphan", old);
        }
        drop(conn);
        let config = dir.join("assetgc.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nrate_limit = false\n{server_extra}\n\
                 [databases.app]\nurl = \"sqlite://app.db\"\n\n\
                 [stores.media]\nurl = \"./media\"\nmin_age = \"1h\"\nquarantine = false\n\n\
                 [stores.bulk]\nurl = \"./bulk\"\nmin_age = \"1h\"\nquarantine = false\n\n\
                 [[references]]\nname = \"rows\"\nstore = \"media\"\nquery = \"SELECT id, key, title, status FROM rows\"\n\n\
                 [[references]]\nname = \"bulk_rows\"\nstore = \"bulk\"\nquery = \"SELECT id, key, title, status FROM bulk_rows\"\n\n\
                 [[jobs]]\nname = \"detect\"\nschedule = \"0 4 * * *\"\ncommand = \"scan --all\"\n"
            ),
        )
        .expect("config");
        Story {
            _tmp: tmp,
            dir,
            config,
        }
    }

    /// The story after `assetgc scan --all`: a complete scan for the pages to show.
    fn scanned(server_extra: &str) -> Story {
        let s = Story::new(server_extra);
        let run = common::assetgc(&s.config, &["scan", "--all"]);
        assert_eq!(run.code, 0, "scan --all: {run:?}");
        s
    }
}

/// What the router answered, as text.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn location(&self) -> &str {
        self.header(header::LOCATION)
    }

    fn set_cookie(&self) -> &str {
        self.header(header::SET_COOKIE)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

/// One request to the router with the given headers (`Host` is always [`HOST`]); `form` is sent
/// URL-encoded, `json` as JSON.
async fn send(
    api: &Api,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Payload,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Payload::None => req.body(Body::empty()),
        Payload::Form(pairs) => {
            let text = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(text))
        }
        Payload::Json(v) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
    }
    .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A request's body.
enum Payload {
    None,
    Form(Vec<(&'static str, String)>),
    Json(serde_json::Value),
}

/// A logged-in session: the cookie's value and the CSRF token its pages carry.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn cookie_header(&self) -> String {
        format!("assetgc_session={}", self.cookie)
    }
}

/// The value `Set-Cookie` gives `assetgc_session`.
fn session_cookie(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.trim().strip_prefix("assetgc_session="))
        .unwrap_or_else(|| panic!("Set-Cookie names no assetgc_session: {set_cookie:?}"))
        .to_string()
}

/// The `content` of the page's `<meta name="csrf-token">`.
fn meta_csrf(html: &str) -> String {
    let re = regex::Regex::new(r#"<meta\s+name="csrf-token"\s+content="([^"]*)""#).expect("re");
    re.captures(html)
        .map(|c| c[1].to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| panic!("no <meta name=\"csrf-token\"> with a token in:\n{html}"))
}

/// Logs in with `token` as a browser would, then reads the CSRF token from the overview page.
async fn login(api: &Api, token: &str) -> Session {
    let r = send(
        api,
        "POST",
        "/login",
        &[("origin", ORIGIN)],
        Payload::Form(vec![("token", token.to_string())]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {r:?}");
    let cookie = session_cookie(r.set_cookie());
    let page = send(
        api,
        "GET",
        "/overview",
        &[("cookie", &format!("assetgc_session={cookie}"))],
        Payload::None,
    )
    .await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "overview after login: {page:?}"
    );
    Session {
        csrf: meta_csrf(&page.text),
        cookie,
    }
}

/// The page at `path` with the session's cookie.
async fn page(api: &Api, s: &Session, path: &str) -> Reply {
    send(
        api,
        "GET",
        path,
        &[("cookie", &s.cookie_header())],
        Payload::None,
    )
    .await
}

/// `POST /api/cleanup/run` (a change: it works the queue) from the session, with the headers
/// given besides the cookie.
async fn run_queue(api: &Api, s: &Session, extra: &[(&str, &str)]) -> Reply {
    let cookie = s.cookie_header();
    let mut headers = vec![("cookie", cookie.as_str())];
    headers.extend_from_slice(extra);
    send(
        api,
        "POST",
        "/api/cleanup/run?batch_size=100",
        &headers,
        Payload::Json(serde_json::json!({})),
    )
    .await
}

fn assert_refused(r: &Reply, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    let json = r.json();
    assert_eq!(
        json["success"], false,
        "{what}: the API's error shape: {r:?}"
    );
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: an error message: {r:?}"
    );
}

/// Where a redirect to the login page means to come back to.
fn login_next(location: &str) -> Option<String> {
    let query = location.strip_prefix("/login?")?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn without_a_session_every_page_sends_to_the_login() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    for path in PAGES {
        let r = send(&api, "GET", path, &[], Payload::None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}: {r:?}");
        assert_eq!(
            login_next(r.location()).as_deref(),
            Some(path),
            "{path} sends to /login?next={path}: {r:?}"
        );
    }
    let root = send(&api, "GET", "/", &[], Payload::None).await;
    assert_eq!(root.status, StatusCode::SEE_OTHER, "{root:?}");
    assert!(root.location().starts_with("/login"), "{root:?}");
    let form = send(&api, "GET", "/login?next=%2Fqueue", &[], Payload::None).await;
    assert_eq!(form.status, StatusCode::OK, "{form:?}");
    assert!(form.text.contains(r#"id="token""#), "{}", form.text);
    assert!(form.text.contains(r#"value="/queue""#), "{}", form.text);
    api.close().await;
}

#[tokio::test]
async fn a_login_sets_an_http_only_strict_cookie_without_secure_over_plain_http() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    // An untrusted X-Forwarded-Proto is not believed: this server speaks plain HTTP.
    for forwarded in [None, Some("https")] {
        let mut headers = vec![("origin", ORIGIN)];
        if let Some(p) = forwarded {
            headers.push(("x-forwarded-proto", p));
        }
        let r = send(
            &api,
            "POST",
            "/login",
            &headers,
            Payload::Form(vec![("token", api.write.clone())]),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        assert_eq!(r.location(), "/", "{r:?}");
        let c = r.set_cookie();
        let attrs: Vec<&str> = c.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"HttpOnly"), "{c}");
        assert!(attrs.contains(&"SameSite=Strict"), "{c}");
        assert!(attrs.contains(&"Path=/"), "{c}");
        assert!(
            !attrs.iter().any(|a| a.eq_ignore_ascii_case("secure")),
            "no Secure over plain HTTP (forwarded: {forwarded:?}): {c}"
        );
        let value = session_cookie(c);
        assert_eq!(value.len(), 64, "a 256-bit session id: {c}");
        assert_ne!(value, api.write, "the cookie is not the token");
    }
    // Back to where the login was asked for, on this site only.
    for (next, to) in [
        ("/queue", "/queue"),
        ("/findings?kind=missing", "/findings?kind=missing"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
    ] {
        let r = send(
            &api,
            "POST",
            "/login",
            &[],
            Payload::Form(vec![
                ("token", api.read.clone()),
                ("next", next.to_string()),
            ]),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{next}: {r:?}");
        assert_eq!(r.location(), to, "next={next}: {r:?}");
    }
    // A login posted from another site opens no session.
    let r = send(
        &api,
        "POST",
        "/login",
        &[("origin", "http://evil.example")],
        Payload::Form(vec![("token", api.write.clone())]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.set_cookie().is_empty(), "{r:?}");
    api.close().await;
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_cookie_is_secure() {
    let s = Story::scanned("trust_forwarded_proto = true\n");
    let api = Api::open(&s.config).await;
    let login_with = |proto: &'static str| {
        let token = api.write.clone();
        let api = &api;
        async move {
            send(
                api,
                "POST",
                "/login",
                &[("x-forwarded-proto", proto)],
                Payload::Form(vec![("token", token)]),
            )
            .await
        }
    };
    let r = login_with("https").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let attrs: Vec<&str> = r.set_cookie().split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Secure"), "{r:?}");
    assert!(
        attrs.contains(&"HttpOnly") && attrs.contains(&"SameSite=Strict"),
        "{r:?}"
    );
    let r = login_with("http").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert!(
        !r.set_cookie().contains("Secure"),
        "a proxy that says http: {r:?}"
    );
    api.close().await;
}

#[tokio::test]
async fn a_bad_token_gets_the_login_page_again_with_401() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    for token in ["not-a-token", "", &api.write[..api.write.len() - 1]] {
        let r = send(
            &api,
            "POST",
            "/login",
            &[],
            Payload::Form(vec![("token", token.to_string())]),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "token {token:?}: {r:?}");
        assert!(
            r.header(header::CONTENT_TYPE).starts_with("text/html"),
            "an HTML page: {r:?}"
        );
        assert!(
            r.text.contains(r#"id="token""#),
            "the form again: {}",
            r.text
        );
        assert!(r.text.contains("not valid"), "says why: {}", r.text);
        assert!(r.set_cookie().is_empty(), "no session: {r:?}");
    }
    api.close().await;
}

#[tokio::test]
async fn a_change_from_a_session_needs_its_csrf_token_and_its_own_origin() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    let session = login(&api, &api.write).await;

    // Reading needs the cookie only.
    let cookie = session.cookie_header();
    let r = send(
        &api,
        "GET",
        "/api/cleanup/stats",
        &[("cookie", &cookie)],
        Payload::None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    let r = run_queue(&api, &session, &[]).await;
    assert_refused(&r, StatusCode::FORBIDDEN, "no X-CSRF-Token");
    assert!(r.text.contains("CSRF"), "says why: {r:?}");
    let wrong = "0".repeat(session.csrf.len());
    let r = run_queue(&api, &session, &[("x-csrf-token", &wrong)]).await;
    assert_refused(&r, StatusCode::FORBIDDEN, "a wrong X-CSRF-Token");
    let r = run_queue(&api, &session, &[("x-csrf-token", "")]).await;
    assert_refused(&r, StatusCode::FORBIDDEN, "an empty X-CSRF-Token");
    let r = run_queue(
        &api,
        &session,
        &[
            ("x-csrf-token", &session.csrf),
            ("origin", "http://evil.example"),
        ],
    )
    .await;
    assert_refused(
        &r,
        StatusCode::FORBIDDEN,
        "the right token from another origin",
    );
    let r = run_queue(
        &api,
        &session,
        &[
            ("x-csrf-token", &session.csrf),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "Sec-Fetch-Site: cross-site");
    let r = run_queue(
        &api,
        &session,
        &[
            ("x-csrf-token", &session.csrf),
            ("referer", "http://evil.example/page"),
        ],
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "a Referer from another site");
    // Another session's token is no good here.
    let other = login(&api, &api.write).await;
    assert_ne!(other.csrf, session.csrf, "each session its own CSRF token");
    let r = run_queue(
        &api,
        &session,
        &[("x-csrf-token", &other.csrf), ("origin", ORIGIN)],
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "another session's CSRF token");

    let r = run_queue(
        &api,
        &session,
        &[
            ("x-csrf-token", &session.csrf),
            ("origin", ORIGIN),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the right token, same origin: {r:?}"
    );
    assert_eq!(r.json()["success"], true, "{r:?}");
    api.close().await;
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_ends_the_session() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    let session = login(&api, &api.write).await;
    let cookie = session.cookie_header();

    for (what, form) in [
        ("an empty csrf", vec![("csrf", String::new())]),
        (
            "a wrong csrf",
            vec![("csrf", "0".repeat(session.csrf.len()))],
        ),
    ] {
        let r = send(
            &api,
            "POST",
            "/logout",
            &[("cookie", &cookie)],
            Payload::Form(form),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "logout with {what}: {r:?}");
        assert!(r.set_cookie().is_empty(), "{what}: {r:?}");
    }
    // No csrf field at all: refused too, whatever the status says.
    let r = send(
        &api,
        "POST",
        "/logout",
        &[("cookie", &cookie)],
        Payload::Form(vec![]),
    )
    .await;
    assert!(r.status.is_client_error(), "logout without csrf: {r:?}");
    assert!(r.set_cookie().is_empty(), "{r:?}");
    let r = send(
        &api,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("origin", "http://evil.example")],
        Payload::Form(vec![("csrf", session.csrf.clone())]),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "logout from another site: {r:?}"
    );
    assert_eq!(
        page(&api, &session, "/overview").await.status,
        StatusCode::OK,
        "refused logouts leave the session alone"
    );

    let r = send(
        &api,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("origin", ORIGIN)],
        Payload::Form(vec![("csrf", session.csrf.clone())]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(r.location(), "/login", "{r:?}");
    let c = r.set_cookie();
    assert!(
        c.starts_with("assetgc_session=;"),
        "the cookie emptied: {c}"
    );
    assert!(c.contains("Max-Age=0"), "and expired: {c}");

    // The old cookie is dead on the server too, not only in the browser.
    let r = page(&api, &session, "/overview").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(
        login_next(r.location()).as_deref(),
        Some("/overview"),
        "{r:?}"
    );
    let r = run_queue(
        &api,
        &session,
        &[("x-csrf-token", &session.csrf), ("origin", ORIGIN)],
    )
    .await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "the API with a logged-out cookie",
    );
    api.close().await;
}

#[tokio::test]
async fn a_read_token_session_sees_every_page_and_changes_nothing() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    let session = login(&api, &api.read).await;
    for path in PAGES {
        let r = page(&api, &session, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    let r = run_queue(
        &api,
        &session,
        &[("x-csrf-token", &session.csrf), ("origin", ORIGIN)],
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "a read session's change");
    assert!(
        r.text.contains("scope"),
        "says it is the token's scope: {r:?}"
    );
    api.close().await;
}

#[tokio::test]
async fn a_cookie_the_server_never_issued_sends_to_the_login() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    let _real = login(&api, &api.write).await;
    for value in [
        "garbage".to_string(),
        String::new(),
        "f".repeat(64),
        format!("{}Z", "a".repeat(63)),
    ] {
        let cookie = format!("assetgc_session={value}");
        let r = send(
            &api,
            "GET",
            "/overview",
            &[("cookie", &cookie)],
            Payload::None,
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "cookie {value:?}: {r:?}");
        assert_eq!(
            login_next(r.location()).as_deref(),
            Some("/overview"),
            "{r:?}"
        );
        let r = send(
            &api,
            "GET",
            "/api/cleanup/stats",
            &[("cookie", &cookie)],
            Payload::None,
        )
        .await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "the API with a bad cookie");
    }
    api.close().await;
}

/// Tags of `html` whose name is `name` (case-insensitive), each up to its `>`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let re = regex::Regex::new(&format!(r"(?is)<{name}\b[^>]*>")).expect("re");
    re.find_iter(html).map(|m| m.as_str()).collect()
}

/// What the CSP (`script-src 'self'`, `style-src 'self'`) would block on `html`, in words.
fn inline_code(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    let src = regex::Regex::new(r#"(?i)\ssrc\s*="#).expect("re");
    for tag in tags(html, "script") {
        if !src.is_match(tag) {
            found.push(format!("an inline script: {tag}"));
        }
    }
    for tag in tags(html, "style") {
        found.push(format!("a <style> element: {tag}"));
    }
    let attrs = regex::Regex::new(r#"(?is)<[a-z][a-z0-9-]*\b[^>]*?\s(style|on[a-z]+)\s*=[^>]*>"#)
        .expect("re");
    for m in attrs.captures_iter(html) {
        found.push(format!("a `{}` attribute: {}", &m[1], &m[0]));
    }
    let js_urls = regex::Regex::new(r#"(?i)(href|src|action)\s*=\s*"\s*javascript:"#).expect("re");
    if let Some(m) = js_urls.find(html) {
        found.push(format!("a javascript: URL: {}", m.as_str()));
    }
    found
}

fn assert_csp(r: &Reply, path: &str) {
    let csp = r.header(header::CONTENT_SECURITY_POLICY);
    assert!(!csp.is_empty(), "{path}: no Content-Security-Policy: {r:?}");
    let directive = |name: &str| {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    let script = directive("script-src");
    let script = if script.is_empty() {
        directive("default-src")
    } else {
        script
    };
    assert!(script.contains("'self'"), "{path}: script-src: {csp}");
    assert!(
        !csp.contains("'unsafe-inline'") && !csp.contains("'unsafe-eval'"),
        "{path}: {csp}"
    );
    assert!(
        directive("frame-ancestors").contains("'none'"),
        "{path}: {csp}"
    );
    let found = inline_code(&r.text);
    assert!(
        found.is_empty(),
        "{path}: the CSP would block:\n{}\n\nthe page:\n{}",
        found.join("\n"),
        r.text
    );
}

#[tokio::test]
async fn every_page_has_a_csp_and_no_inline_code() {
    let s = Story::scanned("");
    let api = Api::open(&s.config).await;
    // Detected findings, a queued entry and a failed one, so the pages show their tables.
    let write = login(&api, &api.write).await;
    let scan_id = {
        let r = send(
            &api,
            "GET",
            "/api/scans?limit=1",
            &[("cookie", &write.cookie_header())],
            Payload::None,
        )
        .await;
        r.json()["items"][0]["id"].as_i64().expect("a scan id")
    };
    let r = send(
        &api,
        "POST",
        &format!("/api/scans/{scan_id}/purge"),
        &[
            ("cookie", &write.cookie_header()),
            ("x-csrf-token", &write.csrf),
            ("origin", ORIGIN),
        ],
        Payload::Json(serde_json::json!({"keys": ["tmp/00.jpg", "tmp/01.jpg"], "dry_run": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");

    let login_form = send(&api, "GET", "/login", &[], Payload::None).await;
    assert_eq!(login_form.status, StatusCode::OK);
    assert_csp(&login_form, "/login");
    let refused = send(
        &api,
        "POST",
        "/login",
        &[],
        Payload::Form(vec![("token", "wrong".into())]),
    )
    .await;
    assert_csp(&refused, "POST /login (refused)");
    for session in [&write, &login(&api, &api.read).await] {
        for path in PAGES.iter().map(|p| (*p).to_string()).chain([
            format!("/findings?scan={scan_id}&kind=missing"),
            format!("/findings?scan={scan_id}&kind=orphans&prefix=tmp%2F&sort=-size_bytes"),
            "/audit?key=tmp%2F00.jpg".to_string(),
        ]) {
            let r = page(&api, session, &path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
            assert!(
                r.header(header::CONTENT_TYPE).starts_with("text/html"),
                "{path}: {r:?}"
            );
            assert_csp(&r, &path);
            assert_eq!(
                r.header(header::CACHE_CONTROL),
                "no-store",
                "{path}: a page with a CSRF token is not cached"
            );
        }
    }
    // The pages' scripts are this server's own files.
    let src_of = regex::Regex::new(r#"src="([^"]+)""#).expect("re");
    for tag in tags(&page(&api, &write, "/overview").await.text, "script") {
        let src = src_of
            .captures(tag)
            .map(|c| c[1].to_string())
            .expect("a src");
        assert!(src.starts_with("/assets/"), "{tag}");
        let r = send(&api, "GET", &src, &[], Payload::None).await;
        assert_eq!(r.status, StatusCode::OK, "{src}: {r:?}");
        assert!(
            r.header(header::CONTENT_TYPE).contains("javascript"),
            "{src}: {r:?}"
        );
    }
    api.close().await;
}

#[test]
fn the_inline_code_check_sees_what_the_csp_blocks() {
    assert!(inline_code(r#"<script src="/assets/app.js" defer></script><p class="x">"#).is_empty());
    for html in [
        "<script>alert(1)</script>",
        "<SCRIPT type=\"module\">x()</SCRIPT>",
        "<style>p{}</style>",
        r#"<p style="color:red">"#,
        r#"<button type="button" onclick="go()">"#,
        r#"<a href="javascript:go()">"#,
    ] {
        assert!(!inline_code(html).is_empty(), "{html}");
    }
}

/// `assetgc token new --scope SCOPE --name NAME`: the token, alone on stdout.
fn token_new(config: &Path, scope: &str, name: &str) -> String {
    let run = common::assetgc(config, &["token", "new", "--scope", scope, "--name", name]);
    assert_eq!(run.code, 0, "token new: {run:?}");
    let token = run.stdout.trim().to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "{run:?}"
    );
    token
}

#[test]
fn the_dashboard_story_in_a_real_browser() {
    let Some(chromium) = common::require_service("Chromium", "ASSETGC_TEST_CHROMIUM") else {
        return;
    };
    let Some(modules) =
        common::require_service("playwright-core and axe-core", "ASSETGC_TEST_NODE_MODULES")
    else {
        return;
    };
    let s = Story::scanned("");
    let write = token_new(&s.config, "write", "browser-writer");
    let read = token_new(&s.config, "read", "browser-reader");
    // The queue is worked by the page's "Run queue now", not behind its back.
    let mut server =
        common::api::ServeProcess::start(&s.config, &["--no-worker", "--no-scheduler"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let out = std::process::Command::new("node")
        .arg(root.join("tests/dashboard/e2e.mjs"))
        .env("BASE_URL", &server.base)
        .env("WRITE_TOKEN", &write)
        .env("READ_TOKEN", &read)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    server.terminate();
    assert!(
        out.status.success(),
        "tests/dashboard/e2e.mjs failed ({}):\n{stdout}\n{stderr}\n--- assetgc serve ---\n{}",
        out.status,
        server.stderr.lock().expect("log").as_str()
    );
    // What the browser queued and the queue run deleted is gone from the store, and only that.
    let left = std::fs::read_dir(s.dir.join("media/tmp"))
        .expect("media/tmp")
        .count();
    assert_eq!(left, 7, "two of the nine tmp/ orphans deleted");
    assert_eq!(
        std::fs::read_dir(s.dir.join("bulk/bulk"))
            .expect("bulk/bulk")
            .count(),
        80,
        "the refused purge deleted nothing"
    );
}
