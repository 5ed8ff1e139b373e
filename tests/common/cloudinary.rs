//! A Cloudinary Admin API emulator for tests and benchmarks, written from Cloudinary's public
//! reference and not from any client of ours:
//!
//! - Admin API reference, <https://cloudinary.com/documentation/admin_api>: endpoints under
//!   `/v1_1/{cloud_name}`, HTTP Basic authentication with the API key and secret, errors as
//!   `{"error":{"message":…}}`, the hourly rate limit reported in `X-FeatureRateLimit-Limit`,
//!   `-Remaining` and `-Reset` (an HTTP date) and answered with 420 once spent; *Get resources*
//!   and *Delete resources*; `ping` and `usage`.
//! - Cloudinary's OpenAPI description of that API,
//!   <https://cloudinary.github.io/api-schemas/asset-management/schema.yml>: `max_results` 1–500
//!   (default 10), `public_ids` at most 100, `direction` asc|desc (default desc, by `created_at`;
//!   with `prefix`, by public ID), `start_at` only without `prefix` and `public_ids`; the delete
//!   request (`public_ids`, or `prefix` / `all` "up to a maximum of 1000 original resources": past
//!   that the answer has `"partial": true` and a `next_cursor` to send with the next delete); the
//!   `list_response`, `search_parameters` and `search_response` shapes.
//! - Search API, <https://cloudinary.com/documentation/search_api>, and its expression language,
//!   <https://cloudinary.com/documentation/search_expressions>: `expression`, `sort_by` (default
//!   `[{"created_at":"desc"}]`), `max_results` (default 50, at most 500, 0 for a count only),
//!   `next_cursor`.
//!
//! - Upload API reference, *rename* method,
//!   <https://cloudinary.com/documentation/image_upload_api_reference#rename_method>:
//!   `POST /v1_1/{cloud_name}/{resource_type}/rename` with `from_public_id`, `to_public_id`,
//!   `type`, `to_type`, `overwrite` and `invalidate`; like every Upload API call it is a signed
//!   request (`api_key`, `timestamp`, `signature`), see
//!   <https://cloudinary.com/documentation/authentication_signatures>: the SHA-1 of the sorted
//!   `name=value` pairs joined by `&`, the API secret appended. The Upload API has no hourly
//!   limit, so it spends none of the Admin API's allowance and answers no rate-limit headers.
//!
//! Left out on purpose: tags, context and structured metadata (accepted, never returned),
//! derived assets, tokenised full-text matching (a term without a field matches public IDs that
//! contain it; `field:value` on a text field is an exact match, `value*` a prefix match).
//!
//! The server runs on a thread and runtime of its own, so plain `#[test]`s and `#[tokio::test]`s
//! use it alike; dropping the [`Emulator`] stops it. Nothing here depends on the other test
//! helpers: `examples/cloudinary_emulator.rs` compiles this file on its own.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, Months, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use sha1::{Digest as _, Sha1};

/// `max_results` of a listing: "up to 500", default 10.
const LIST_DEFAULT: u64 = 10;
/// `max_results` of a search: default 50, at most 500.
const SEARCH_DEFAULT: u64 = 50;
const MAX_RESULTS: u64 = 500;
/// `public_ids` of a by-ids listing or a delete: "up to 100".
const MAX_PUBLIC_IDS: usize = 100;
/// Originals one delete by `prefix` or `all` removes before it answers `partial`.
const DELETE_BATCH: usize = 1000;
/// The 420 body's message.
const RATE_LIMITED: &str = "Rate limit exceeded";
/// How far a signed request's `timestamp` may be from now, in seconds: "valid for one hour".
const SIGNATURE_VALID_FOR: u64 = 3600;
/// Parameters a signature does not cover.
const UNSIGNED_PARAMS: [&str; 5] = [
    "file",
    "cloud_name",
    "resource_type",
    "api_key",
    "signature",
];

/// One asset, keyed by (`resource_type`, `delivery_type`, `public_id`) as Cloudinary keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub public_id: String,
    /// `image`, `video` or `raw`.
    pub resource_type: String,
    /// The delivery type, `type` on the wire: `upload` unless a test says otherwise.
    pub delivery_type: String,
    /// Empty for raw files, whose extension is part of the public ID.
    pub format: String,
    pub bytes: u64,
    pub created_at: DateTime<Utc>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl Resource {
    pub fn image(public_id: &str, created_at: DateTime<Utc>) -> Self {
        Resource {
            public_id: public_id.to_owned(),
            resource_type: "image".to_owned(),
            delivery_type: "upload".to_owned(),
            format: "jpg".to_owned(),
            bytes: 4_096,
            created_at,
            width: Some(800),
            height: Some(600),
        }
    }

    pub fn video(public_id: &str, created_at: DateTime<Utc>) -> Self {
        Resource {
            resource_type: "video".to_owned(),
            format: "mp4".to_owned(),
            bytes: 8_192,
            width: Some(1280),
            height: Some(720),
            ..Resource::image(public_id, created_at)
        }
    }

    pub fn raw(public_id_with_ext: &str, created_at: DateTime<Utc>) -> Self {
        Resource {
            resource_type: "raw".to_owned(),
            format: String::new(),
            bytes: 2_048,
            width: None,
            height: None,
            ..Resource::image(public_id_with_ext, created_at)
        }
    }

    fn key(&self) -> StoreKey {
        (
            self.resource_type.clone(),
            self.delivery_type.clone(),
            self.public_id.clone(),
        )
    }

    /// The folder part of the public ID (fixed folder mode), `""` at the root.
    fn folder(&self) -> &str {
        self.public_id.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    fn filename(&self) -> &str {
        self.public_id
            .rsplit_once('/')
            .map_or(self.public_id.as_str(), |(_, name)| name)
    }

    fn version(&self) -> i64 {
        self.created_at.timestamp()
    }

    fn created_nanos(&self) -> i64 {
        nanos(self.created_at)
    }

    /// 32 hex digits, stable for one (resource type, type, public ID).
    fn asset_id(&self) -> String {
        let text = format!(
            "{}/{}/{}",
            self.resource_type, self.delivery_type, self.public_id
        );
        format!(
            "{:016x}{:016x}",
            fnv1a(0xcbf2_9ce4_8422_2325, &text),
            fnv1a(0x8422_2325_cbf2_9ce4, &text)
        )
    }

    fn url(&self, scheme: &str, cloud: &str) -> String {
        let ext = if self.format.is_empty() {
            String::new()
        } else {
            format!(".{}", self.format)
        };
        format!(
            "{scheme}://res.cloudinary.com/{cloud}/{}/{}/v{}/{}{ext}",
            self.resource_type,
            self.delivery_type,
            self.version(),
            self.public_id
        )
    }

    /// The asset as the listing answers it; a search adds the fields it documents on top.
    fn to_json(&self, cloud: &str, search: bool) -> Value {
        let mut m = Map::new();
        m.insert("asset_id".into(), self.asset_id().into());
        m.insert("public_id".into(), self.public_id.clone().into());
        m.insert("format".into(), self.format.clone().into());
        m.insert("version".into(), self.version().into());
        m.insert("resource_type".into(), self.resource_type.clone().into());
        m.insert("type".into(), self.delivery_type.clone().into());
        m.insert("created_at".into(), timestamp(self.created_at).into());
        m.insert("bytes".into(), self.bytes.into());
        m.insert("width".into(), self.width.into());
        m.insert("height".into(), self.height.into());
        m.insert("folder".into(), self.folder().into());
        m.insert("asset_folder".into(), self.folder().into());
        m.insert("display_name".into(), self.filename().into());
        m.insert("url".into(), self.url("http", cloud).into());
        m.insert("secure_url".into(), self.url("https", cloud).into());
        if search {
            m.insert("filename".into(), self.filename().into());
            m.insert("uploaded_at".into(), timestamp(self.created_at).into());
            m.insert("status".into(), "active".into());
        }
        Value::Object(m)
    }
}

type StoreKey = (String, String, String);

/// How the emulator answers; [`Options::default`] is a free plan's 500 calls an hour.
#[derive(Debug, Clone)]
pub struct Options {
    pub cloud: String,
    pub api_key: String,
    pub api_secret: String,
    /// Waited before answering each request; requests wait side by side.
    pub latency: Duration,
    /// Admin API calls a window allows.
    pub rate_limit: u64,
    /// Windows follow each other from the start; each one refills the allowance.
    pub window: Duration,
    /// Whether responses carry the `X-FeatureRateLimit-*` headers.
    pub rate_limit_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cloud: "demo-cloud".to_owned(),
            api_key: "123456789012345".to_owned(),
            api_secret: "emulator-secret".to_owned(),
            latency: Duration::ZERO,
            rate_limit: 500,
            window: Duration::from_secs(3600),
            rate_limit_headers: true,
        }
    }
}

/// A running emulator on `127.0.0.1`.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts on a free port.
    pub fn start(opts: Options) -> Emulator {
        Emulator::start_on(0, opts)
    }

    /// Starts on `port` (0: any free port). The socket is bound before this returns, so requests
    /// may follow at once.
    pub fn start_on(port: u16, opts: Options) -> Emulator {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cloudinary emulator: bind 127.0.0.1:{port}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("cloudinary emulator: non-blocking listener");
        let addr = listener.local_addr().expect("cloudinary emulator: address");
        let shared = Arc::new(Shared::new(opts));
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("cloudinary-emulator-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("cloudinary emulator: tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("cloudinary emulator: tokio listener");
                    let serve = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    tokio::select! {
                        result = serve => {
                            if let Err(e) = result {
                                eprintln!("cloudinary emulator on {addr} stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Connections still open (keep-alive, a request in its latency) end here.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("cloudinary emulator: thread");
        Emulator {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, the `upload_prefix` a client is given.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `CLOUDINARY_URL` an SDK reads: `cloudinary://KEY:SECRET@CLOUD?upload_prefix=…`.
    pub fn cloudinary_url(&self) -> String {
        let o = &self.shared.opts;
        format!(
            "cloudinary://{}:{}@{}?upload_prefix={}",
            o.api_key,
            o.api_secret,
            o.cloud,
            self.base_url()
        )
    }

    /// Adds `r`, replacing an asset with the same resource type, type and public ID.
    pub fn add(&self, r: Resource) {
        lock(&self.shared.store).insert(r.key(), r);
    }

    pub fn add_many(&self, rs: impl IntoIterator<Item = Resource>) {
        let mut store = lock(&self.shared.store);
        for r in rs {
            store.insert(r.key(), r);
        }
    }

    /// Removes the asset of every delivery type with this resource type and public ID; whether
    /// there was one.
    pub fn remove(&self, resource_type: &str, public_id: &str) -> bool {
        let mut store = lock(&self.shared.store);
        let before = store.len();
        store.retain(|(rt, _, id), _| !(rt == resource_type && id == public_id));
        store.len() != before
    }

    pub fn exists(&self, resource_type: &str, public_id: &str) -> bool {
        lock(&self.shared.store)
            .keys()
            .any(|(rt, _, id)| rt == resource_type && id == public_id)
    }

    /// Everything stored, by (resource type, public ID, type).
    pub fn resources(&self) -> Vec<Resource> {
        let mut all: Vec<Resource> = lock(&self.shared.store).values().cloned().collect();
        all.sort_by(|a, b| {
            (&a.resource_type, &a.public_id, &a.delivery_type).cmp(&(
                &b.resource_type,
                &b.public_id,
                &b.delivery_type,
            ))
        });
        all
    }

    /// Requests answered, whatever their status, since the start or [`Emulator::reset_calls`]:
    /// Admin API calls and Upload API calls (`rename`) alike.
    pub fn calls(&self) -> u64 {
        lock(&self.shared.calls).total
    }

    /// Requests whose `METHOD /path` (the path after `/v1_1/{cloud}`) contains `fragment`:
    /// `calls_to("/resources/search")`, `calls_to("DELETE /resources/image/upload")`,
    /// `calls_to("POST /image/rename")`.
    pub fn calls_to(&self, fragment: &str) -> u64 {
        lock(&self.shared.calls)
            .by_endpoint
            .iter()
            .filter(|(endpoint, _)| endpoint.contains(fragment))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_calls(&self) {
        *lock(&self.shared.calls) = Calls::default();
    }

    /// Calls left in the current window.
    pub fn set_remaining(&self, n: u64) {
        let mut limiter = lock(&self.shared.limiter);
        limiter.roll(
            Instant::now(),
            self.shared.opts.window,
            self.shared.opts.rate_limit,
        );
        limiter.remaining = n;
    }

    /// Ends the current window after `d`; the next one has the usual length.
    pub fn set_window_reset_in(&self, d: Duration) {
        let mut limiter = lock(&self.shared.limiter);
        let now = Instant::now();
        limiter.roll(now, self.shared.opts.window, self.shared.opts.rate_limit);
        limiter.resets_at = now + d;
    }

    /// The next `n` authenticated Admin API calls answer `status` with an error body, before the
    /// rate limit is looked at (they spend none of it). Upload API calls (`rename`) pass these
    /// failures by: see [`Emulator::fail_renames_of`].
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut faults = lock(&self.shared.faults);
        faults.fail_next = n;
        faults.status = StatusCode::from_u16(status)
            .unwrap_or_else(|e| panic!("fail_next: bad status {status}: {e}"));
    }

    /// A delete that would remove this public ID answers 500 and removes nothing. The reference
    /// documents no per-asset failure in a delete's answer (`deleted` maps an ID to `deleted` or
    /// `not_found` only), so the whole call fails, as a server error would make it.
    pub fn fail_deletes_of(&self, public_id: &str) {
        lock(&self.shared.faults)
            .fail_deletes
            .insert(public_id.to_owned());
    }

    /// Deletes and renames fail no more: undoes [`Emulator::fail_deletes_of`] and
    /// [`Emulator::fail_renames_of`].
    #[allow(dead_code)] // tests/cloudinary_emulator.rs compiles this file alone and needs no heal
    pub fn heal(&self) {
        let mut faults = lock(&self.shared.faults);
        faults.fail_deletes.clear();
        faults.fail_renames.clear();
    }

    /// A rename whose `from_public_id` is one of these answers 500 and moves nothing, once its
    /// signature has been accepted and whether or not the asset exists.
    pub fn fail_renames_of(&self, public_ids: &[&str]) {
        lock(&self.shared.faults)
            .fail_renames
            .extend(public_ids.iter().map(|id| (*id).to_owned()));
    }

    /// A rename whose `from_public_id` is one of these answers `status` (a client error: the
    /// asset cannot be renamed, as a moderated or restricted one cannot) and moves nothing,
    /// once its signature has been accepted.
    pub fn refuse_renames_of(&self, public_ids: &[&str], status: u16) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|e| panic!("refuse_renames_of: bad status {status}: {e}"));
        lock(&self.shared.faults)
            .refuse_renames
            .extend(public_ids.iter().map(|id| ((*id).to_owned(), status)));
    }

    /// `params` signed with this emulator's credentials, ready for an Upload API call: with
    /// `timestamp` (now, unless `params` has one), `api_key` and `signature` added.
    pub fn signed_params(&self, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let o = &self.shared.opts;
        let mut out: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !params.iter().any(|(k, _)| *k == "timestamp") {
            out.push(("timestamp".to_owned(), Utc::now().timestamp().to_string()));
        }
        out.push(("api_key".to_owned(), o.api_key.clone()));
        let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let signature = api_sign_request(&pairs, &o.api_secret);
        out.push(("signature".to_owned(), signature));
        out
    }
}

/// The `signature` of an Upload API request with these parameters, as Cloudinary's reference and
/// SDKs compute it: `file`, `cloud_name`, `resource_type`, `api_key` and `signature` itself left
/// out, and parameters with an empty value too (the SDKs drop them); the rest sorted by name,
/// written `name=value` and joined with `&`, the API secret appended; the SHA-1 of that in
/// lowercase hex. A list is one comma-joined value (`tags=a,b`); a name given more than once
/// has its values joined the same way, as the emulator reads a repeated name as a list.
pub fn api_sign_request(params: &[(&str, &str)], api_secret: &str) -> String {
    let mut signed: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in params {
        signed
            .entry(k)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(v);
            })
            .or_insert_with(|| (*v).to_owned());
    }
    sha1_hex(&format!("{}{api_secret}", string_to_sign(&signed)))
}

/// `a=1&b=2`: the signed parameters of `params`, in name order.
fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(params: &BTreeMap<K, V>) -> String {
    params
        .iter()
        .filter(|(k, v)| !UNSIGNED_PARAMS.contains(&k.as_ref()) && !v.as_ref().is_empty())
        .map(|(k, v)| format!("{}={}", k.as_ref(), v.as_ref()))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---- shared state ----

struct Shared {
    opts: Options,
    store: Mutex<BTreeMap<StoreKey, Resource>>,
    calls: Mutex<Calls>,
    limiter: Mutex<Limiter>,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Calls {
    total: u64,
    by_endpoint: HashMap<String, u64>,
}

struct Limiter {
    remaining: u64,
    resets_at: Instant,
}

impl Limiter {
    /// Moves to the window `now` falls in, refilled, when the current one has ended.
    fn roll(&mut self, now: Instant, window: Duration, limit: u64) {
        if now < self.resets_at {
            return;
        }
        let window = window.max(Duration::from_millis(1)).as_nanos();
        let behind = (now - self.resets_at).as_nanos() % window;
        let left = u64::try_from(window - behind).unwrap_or(u64::MAX);
        self.resets_at = now + Duration::from_nanos(left);
        self.remaining = limit;
    }
}

struct Faults {
    fail_next: usize,
    status: StatusCode,
    fail_deletes: HashSet<String>,
    fail_renames: HashSet<String>,
    refuse_renames: HashMap<String, StatusCode>,
}

/// What the rate-limit headers of one response say.
#[derive(Clone, Copy)]
struct LimitState {
    limit: u64,
    remaining: u64,
    resets_at: Instant,
}

impl Shared {
    fn new(opts: Options) -> Shared {
        let limiter = Limiter {
            remaining: opts.rate_limit,
            resets_at: Instant::now() + opts.window,
        };
        Shared {
            store: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Calls::default()),
            limiter: Mutex::new(limiter),
            faults: Mutex::new(Faults {
                fail_next: 0,
                status: StatusCode::INTERNAL_SERVER_ERROR,
                fail_deletes: HashSet::new(),
                fail_renames: HashSet::new(),
                refuse_renames: HashMap::new(),
            }),
            opts,
        }
    }

    fn count(&self, endpoint: String) {
        let mut calls = lock(&self.calls);
        calls.total += 1;
        *calls.by_endpoint.entry(endpoint).or_default() += 1;
    }

    /// Spends one call of the window; `Err` when none is left.
    fn spend(&self) -> Result<LimitState, LimitState> {
        let mut limiter = lock(&self.limiter);
        limiter.roll(Instant::now(), self.opts.window, self.opts.rate_limit);
        let spent = limiter.remaining > 0;
        if spent {
            limiter.remaining -= 1;
        }
        let state = LimitState {
            limit: self.opts.rate_limit,
            remaining: limiter.remaining,
            resets_at: limiter.resets_at,
        };
        if spent { Ok(state) } else { Err(state) }
    }

    fn peek_limit(&self) -> LimitState {
        let mut limiter = lock(&self.limiter);
        limiter.roll(Instant::now(), self.opts.window, self.opts.rate_limit);
        LimitState {
            limit: self.opts.rate_limit,
            remaining: limiter.remaining,
            resets_at: limiter.resets_at,
        }
    }

    fn take_failure(&self) -> Option<StatusCode> {
        let mut faults = lock(&self.faults);
        if faults.fail_next == 0 {
            return None;
        }
        faults.fail_next -= 1;
        Some(faults.status)
    }

    /// Basic auth against the cloud in the path. The messages are the ones Cloudinary answers
    /// with; the reference names the status (401) but not the wording.
    fn authenticate(&self, headers: &HeaderMap, cloud: &str) -> Result<(), String> {
        let Some((key, secret)) = basic_credentials(headers) else {
            return Err("Must supply api_key".to_owned());
        };
        if cloud != self.opts.cloud {
            return Err(format!("Invalid cloud_name {cloud}"));
        }
        if key != self.opts.api_key {
            return Err(format!("Unknown API key {key}"));
        }
        if secret != self.opts.api_secret {
            return Err("api_secret mismatch".to_owned());
        }
        Ok(())
    }

    /// A signed Upload API request: the key, the signature over every other parameter, then the
    /// timestamp's age. Refusals are 401, a stale or missing timestamp 400; the reference does
    /// not give the messages' wording.
    fn verify_signature(&self, cloud: &str, params: &Params) -> Result<(), ApiError> {
        let unauthorized = |message: String| ApiError::new(StatusCode::UNAUTHORIZED, message);
        if cloud != self.opts.cloud {
            return Err(unauthorized(format!("Invalid cloud_name {cloud}")));
        }
        let Some(key) = params.str("api_key").filter(|k| !k.is_empty()) else {
            return Err(unauthorized("Must supply api_key".to_owned()));
        };
        if key != self.opts.api_key {
            return Err(unauthorized(format!("Unknown API key {key}")));
        }
        let Some(stamp) = params.str("timestamp").filter(|t| !t.is_empty()) else {
            return Err(ApiError::bad_request(
                "Missing required parameter - timestamp",
            ));
        };
        let Some(signature) = params.str("signature").filter(|s| !s.is_empty()) else {
            return Err(unauthorized(
                "Missing required parameter - signature".to_owned(),
            ));
        };
        let signed: BTreeMap<&str, String> = params
            .0
            .keys()
            .filter_map(|k| Some((k.as_str(), params.joined(k)?)))
            .collect();
        let to_sign = string_to_sign(&signed);
        let expected = sha1_hex(&format!("{to_sign}{}", self.opts.api_secret));
        if !signature.eq_ignore_ascii_case(&expected) {
            return Err(unauthorized(format!(
                "Invalid Signature {signature}. String to sign - '{to_sign}'."
            )));
        }
        let Ok(seconds) = stamp.parse::<i64>() else {
            return Err(ApiError::bad_request(format!("Invalid timestamp {stamp}")));
        };
        let now = Utc::now().timestamp();
        if now.abs_diff(seconds) > SIGNATURE_VALID_FOR {
            let reported =
                DateTime::from_timestamp(seconds, 0).map_or_else(|| stamp.clone(), timestamp);
            return Err(ApiError::bad_request(format!(
                "Stale request - reported time is {reported} which is more than 1 hour away"
            )));
        }
        Ok(())
    }
}

/// A poisoned lock only means another request panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    Some((key.to_owned(), secret.to_owned()))
}

// ---- HTTP ----

fn router(shared: Arc<Shared>) -> axum::Router {
    let api = axum::Router::new()
        .route("/ping", get(ping))
        .route("/usage", get(usage))
        .route("/resources/search", get(search).post(search))
        .route("/resources/{resource_type}", get(list_all_types))
        .route(
            "/resources/{resource_type}/{type}",
            get(list_one_type).delete(delete_resources),
        )
        .route("/{resource_type}/rename", post(rename));
    axum::Router::new()
        .nest("/v1_1/{cloud}", api)
        .fallback(unknown_endpoint)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// What every request goes through: latency, the call count, authentication, injected
/// failures, the rate limit and its headers.
async fn gate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !shared.opts.latency.is_zero() {
        tokio::time::sleep(shared.opts.latency).await;
    }
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/v1_1/") else {
        return next.run(req).await;
    };
    let (cloud, endpoint) = rest.split_once('/').unwrap_or((rest, ""));
    shared.count(format!("{} /{endpoint}", req.method()));
    // The Upload API signs each request instead, and the Admin API's hourly limit is not its own.
    if is_upload_api(endpoint) {
        return next.run(req).await;
    }
    // An unauthenticated call is no account's: it spends no allowance and reports none.
    if let Err(message) = shared.authenticate(req.headers(), cloud) {
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    }
    if let Some(status) = shared.take_failure() {
        let message = if status.as_u16() == 420 {
            RATE_LIMITED
        } else {
            status_message(status)
        };
        let resp = ApiError::new(status, message).into_response();
        return shared.with_limit_headers(resp, shared.peek_limit());
    }
    match shared.spend() {
        Ok(state) => {
            let resp = next.run(req).await;
            shared.with_limit_headers(resp, state)
        }
        Err(state) => {
            let resp = ApiError::new(rate_limited_status(), RATE_LIMITED).into_response();
            shared.with_limit_headers(resp, state)
        }
    }
}

/// `image/rename`: an Upload API endpoint, past `/v1_1/{cloud}/`.
fn is_upload_api(endpoint: &str) -> bool {
    matches!(
        endpoint.split('/').collect::<Vec<_>>().as_slice(),
        ["image" | "video" | "raw", "rename"]
    )
}

impl Shared {
    fn with_limit_headers(&self, mut resp: Response, state: LimitState) -> Response {
        if !self.opts.rate_limit_headers {
            return resp;
        }
        let until_reset = state.resets_at.saturating_duration_since(Instant::now());
        let reset = Utc::now() + TimeDelta::from_std(until_reset).unwrap_or(TimeDelta::zero());
        let h = resp.headers_mut();
        h.insert(
            HeaderName::from_static("x-featureratelimit-limit"),
            HeaderValue::from(state.limit),
        );
        h.insert(
            HeaderName::from_static("x-featureratelimit-remaining"),
            HeaderValue::from(state.remaining),
        );
        if let Ok(v) = HeaderValue::from_str(&http_date(reset)) {
            h.insert(HeaderName::from_static("x-featureratelimit-reset"), v);
        }
        resp
    }
}

fn rate_limited_status() -> StatusCode {
    StatusCode::from_u16(420).expect("420 is a valid status code")
}

/// The reference's names for its error statuses.
fn status_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Authorization required",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Already exists",
        420 | 429 => RATE_LIMITED,
        _ => "Internal error",
    }
}

/// An Admin API error: `{"error":{"message":…}}` with its status.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "message": self.message } })),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn unknown_endpoint(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Not found - {method} {}", uri.path()),
    )
}

async fn ping() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn usage(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let (count, bytes) = {
        let store = lock(&shared.store);
        (store.len(), store.values().map(|r| r.bytes).sum::<u64>())
    };
    let requests = lock(&shared.calls).total;
    Json(json!({
        "plan": "Emulator",
        "last_updated": Utc::now().format("%Y-%m-%d").to_string(),
        "resources": count,
        "derived_resources": 0,
        "requests": requests,
        "objects": { "usage": count },
        "storage": { "usage": bytes },
        "bandwidth": { "usage": 0 },
        "transformations": { "usage": 0 },
    }))
}

async fn list_all_types(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    let delivery_type = params.str("type");
    list(
        &shared,
        &path["resource_type"],
        delivery_type.as_deref(),
        &params,
    )
}

async fn list_one_type(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    list(
        &shared,
        &path["resource_type"],
        Some(path["type"].as_str()),
        &params,
    )
}

fn check_resource_type(rt: &str) -> Result<(), ApiError> {
    if matches!(rt, "image" | "video" | "raw") {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("Invalid resource_type {rt}")))
    }
}

/// Get resources: by IDs, or a page in `created_at` order (public ID order with a prefix).
fn list(shared: &Shared, rt: &str, delivery_type: Option<&str>, params: &Params) -> ApiResult {
    check_resource_type(rt)?;
    let cloud = &shared.opts.cloud;
    let of_type =
        |r: &Resource| r.resource_type == rt && delivery_type.is_none_or(|t| r.delivery_type == t);

    let ids = params.list("public_ids");
    if !ids.is_empty() {
        if ids.len() > MAX_PUBLIC_IDS {
            return Err(ApiError::bad_request(format!(
                "Too many public_ids: {} given, at most {MAX_PUBLIC_IDS} allowed",
                ids.len()
            )));
        }
        let store = lock(&shared.store);
        let resources: Vec<Value> = ids
            .iter()
            .flat_map(|id| {
                store
                    .values()
                    .filter(move |r| of_type(r) && &r.public_id == id)
                    .map(|r| r.to_json(cloud, false))
            })
            .collect();
        return Ok(Json(json!({ "resources": resources })));
    }

    let max = params.max_results(LIST_DEFAULT, 1)?;
    let prefix = params.str("prefix").filter(|p| !p.is_empty());
    let start_at = match (&prefix, params.str("start_at")) {
        (None, Some(s)) => Some(
            parse_instant(&s)
                .map(|(t, _)| t)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid start_at {s}")))?,
        ),
        _ => None,
    };
    let spec = if prefix.is_some() {
        // The reference: with a prefix, `direction` is ignored and results come by public ID.
        SortSpec::new(vec![(Field::PublicId, Dir::Asc)])
    } else {
        let dir = match params.str("direction").as_deref() {
            None | Some("desc" | "-1") => Dir::Desc,
            Some("asc" | "1") => Dir::Asc,
            Some(other) => {
                return Err(ApiError::bad_request(format!("Invalid direction {other}")));
            }
        };
        SortSpec::new(vec![(Field::CreatedAt, dir)])
    };
    let after = params.cursor(&spec)?;

    let store = lock(&shared.store);
    let candidates: Vec<&Resource> = store
        .values()
        .filter(|r| of_type(r))
        .filter(|r| prefix.as_ref().is_none_or(|p| r.public_id.starts_with(p)))
        .filter(|r| start_at.is_none_or(|t| r.created_at >= t))
        .filter(|r| after.as_ref().is_none_or(|a| spec.is_after(r, a)))
        .collect();
    let (page, more) = first_n(candidates, &spec, max);
    let mut answer = Map::new();
    answer.insert(
        "resources".into(),
        page.iter().map(|r| r.to_json(cloud, false)).collect(),
    );
    if more && let Some(last) = page.last() {
        answer.insert("next_cursor".into(), spec.cursor_after(last).into());
    }
    Ok(Json(Value::Object(answer)))
}

/// The Search API over everything stored.
async fn search(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let started = Instant::now();
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    let now = Utc::now();
    let expr = match params.str("expression") {
        Some(text) => Expr::parse(&text, now).map_err(|e| {
            ApiError::bad_request(format!("Invalid search expression `{text}`: {e}"))
        })?,
        None => Expr::All,
    };
    let spec = params.sort_by()?;
    let max = params.max_results(SEARCH_DEFAULT, 0)?;
    let after = params.cursor(&spec)?;

    let store = lock(&shared.store);
    let matching: Vec<&Resource> = store.values().filter(|r| expr.matches(r)).collect();
    let total = matching.len();
    let candidates: Vec<&Resource> = matching
        .into_iter()
        .filter(|r| after.as_ref().is_none_or(|a| spec.is_after(r, a)))
        .collect();
    let (page, more) = first_n(candidates, &spec, max);
    let cloud = &shared.opts.cloud;
    let mut answer = Map::new();
    answer.insert("total_count".into(), total.into());
    answer.insert(
        "time".into(),
        u64::try_from(started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .into(),
    );
    answer.insert(
        "resources".into(),
        page.iter().map(|r| r.to_json(cloud, true)).collect(),
    );
    if more && let Some(last) = page.last() {
        answer.insert("next_cursor".into(), spec.cursor_after(last).into());
    }
    Ok(Json(Value::Object(answer)))
}

/// Delete resources: up to 100 public IDs, or up to 1000 originals by prefix or all, then
/// `partial` with a cursor for the next call.
async fn delete_resources(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    let rt = path["resource_type"].as_str();
    let delivery_type = path["type"].as_str();
    check_resource_type(rt)?;
    let keep_original = params.bool("keep_original");
    let ids = params.list("public_ids");
    let prefix = params.str("prefix").filter(|p| !p.is_empty());
    let all = params.bool("all");

    let mut store = lock(&shared.store);
    let (targets, next) = if !ids.is_empty() {
        if ids.len() > MAX_PUBLIC_IDS {
            return Err(ApiError::bad_request(format!(
                "Too many public_ids: {} given, at most {MAX_PUBLIC_IDS} allowed",
                ids.len()
            )));
        }
        (ids, None)
    } else if prefix.is_some() || all {
        let spec = SortSpec::new(vec![(Field::PublicId, Dir::Asc)]);
        let after = params.cursor(&spec)?;
        let candidates: Vec<&Resource> = store
            .values()
            .filter(|r| r.resource_type == rt && r.delivery_type == delivery_type)
            .filter(|r| prefix.as_ref().is_none_or(|p| r.public_id.starts_with(p)))
            .filter(|r| after.as_ref().is_none_or(|a| spec.is_after(r, a)))
            .collect();
        let (batch, more) = first_n(candidates, &spec, DELETE_BATCH);
        let next = if more {
            batch.last().map(|r| spec.cursor_after(r))
        } else {
            None
        };
        (batch.iter().map(|r| r.public_id.clone()).collect(), next)
    } else {
        return Err(ApiError::bad_request(
            "Missing required parameter - public_ids",
        ));
    };

    {
        let faults = lock(&shared.faults);
        if let Some(id) = targets.iter().find(|id| faults.fail_deletes.contains(*id)) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Internal error while deleting {id}"),
            ));
        }
    }

    let mut deleted = Map::new();
    let mut counts = Map::new();
    for id in targets {
        let key = (rt.to_owned(), delivery_type.to_owned(), id.clone());
        let found = if keep_original {
            store.contains_key(&key)
        } else {
            store.remove(&key).is_some()
        };
        let original = u8::from(found && !keep_original);
        deleted.insert(
            id.clone(),
            (if found { "deleted" } else { "not_found" }).into(),
        );
        counts.insert(id, json!({ "original": original, "derived": 0 }));
    }
    let mut answer = Map::new();
    answer.insert("deleted".into(), Value::Object(deleted));
    answer.insert("deleted_counts".into(), Value::Object(counts));
    answer.insert("partial".into(), next.is_some().into());
    if let Some(cursor) = next {
        answer.insert("next_cursor".into(), cursor.into());
    }
    Ok(Json(Value::Object(answer)))
}

/// Upload API *rename*: moves an asset to another public ID (and delivery type, with `to_type`),
/// keeping everything else; the answer is the asset as it now is.
async fn rename(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    shared.verify_signature(&path["cloud"], &params)?;
    let rt = path["resource_type"].as_str();
    check_resource_type(rt)?;
    let required = |name: &str| {
        params
            .str(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("Missing required parameter - {name}")))
    };
    let from = required("from_public_id")?;
    let to = required("to_public_id")?;
    let from_type = params
        .str("type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "upload".to_owned());
    let to_type = params
        .str("to_type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| from_type.clone());
    // `invalidate` only concerns CDN caches, which the emulator has none of.
    let overwrite = params.bool("overwrite");

    if lock(&shared.faults).fail_renames.contains(&from) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal error while renaming {from}"),
        ));
    }
    if let Some(status) = lock(&shared.faults).refuse_renames.get(&from).copied() {
        return Err(ApiError::new(
            status,
            format!("Asset {from} cannot be renamed"),
        ));
    }
    let mut store = lock(&shared.store);
    let from_key = (rt.to_owned(), from_type, from.clone());
    let to_key = (rt.to_owned(), to_type.clone(), to.clone());
    let mut moved = store.get(&from_key).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Resource not found - {from}"),
        )
    })?;
    if store.contains_key(&to_key) && !overwrite {
        return Err(ApiError::bad_request(format!(
            "to_public_id {to} already exists"
        )));
    }
    store.remove(&from_key);
    moved.public_id = to;
    moved.delivery_type = to_type;
    let answer = moved.to_json(&shared.opts.cloud, false);
    store.insert(to_key, moved);
    Ok(Json(answer))
}

/// The `n` first of `items` in `spec` order, and whether more follow. Selecting before sorting
/// keeps a page of a large store linear in its size.
fn first_n<'a>(
    mut items: Vec<&'a Resource>,
    spec: &SortSpec,
    n: usize,
) -> (Vec<&'a Resource>, bool) {
    let more = items.len() > n;
    if more {
        items.select_nth_unstable_by(n, |a, b| spec.cmp(a, b));
        items.truncate(n);
    }
    items.sort_by(|a, b| spec.cmp(a, b));
    (items, more)
}

// ---- parameters: query string, form body or JSON body ----

/// Request parameters from the query string and the body, form-encoded or JSON, as one JSON
/// object: `public_ids[]=a&public_ids[]=b` becomes `"public_ids": ["a", "b"]`,
/// `sort_by[][created_at]=desc` becomes `"sort_by": [{"created_at": "desc"}]`.
#[derive(Debug, Default)]
struct Params(Map<String, Value>);

/// The `boundary` of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (mime, rest) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    rest.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The text fields of a `multipart/form-data` body: each part's `name` and its value.
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("Invalid multipart body: {why}"));
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part
            .split_once("\r\n\r\n")
            .ok_or_else(|| bad("a part without headers"))?;
        let name = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .find_map(|l| l.split(';').find_map(|p| p.trim().strip_prefix("name=")))
            .map(|n| n.trim_matches('"').to_owned())
            .ok_or_else(|| bad("a part without a name"))?;
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.push((name, value.to_owned()));
    }
    Ok(fields)
}

impl Params {
    fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Params, ApiError> {
        let mut params = Params::default();
        if let Some(q) = query {
            params.add_form(q.as_bytes());
        }
        let text = body.trim_ascii();
        if text.is_empty() {
            return Ok(params);
        }
        let json_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The SDKs post Upload API calls as multipart/form-data (RFC 7578), as an upload is.
        if let Some(boundary) = multipart_boundary(content_type) {
            for (name, value) in multipart_fields(body, &boundary)? {
                params.add_pair(&name, value);
            }
            return Ok(params);
        }
        if json_type || text.starts_with(b"{") {
            let value: Value = serde_json::from_slice(text)
                .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
            let Value::Object(fields) = value else {
                return Err(ApiError::bad_request("Invalid JSON body: not an object"));
            };
            params.0.extend(fields);
        } else {
            params.add_form(text);
        }
        Ok(params)
    }

    fn add_form(&mut self, encoded: &[u8]) {
        for (k, v) in url::form_urlencoded::parse(encoded) {
            self.add_pair(&k, v.into_owned());
        }
    }

    fn add_pair(&mut self, key: &str, value: String) {
        let (base, brackets) = key.find('[').map_or((key, ""), |i| key.split_at(i));
        let segments: Vec<&str> = brackets
            .split(']')
            .filter_map(|s| s.strip_prefix('['))
            .collect();
        let entry = self.0.entry(base.to_owned());
        match segments.as_slice() {
            [] => match entry {
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(Value::String(value));
                }
                serde_json::map::Entry::Occupied(mut e) => push(e.get_mut(), Value::String(value)),
            },
            [""] => push(entry.or_insert(Value::Array(vec![])), Value::String(value)),
            [_, field] => {
                let mut item = Map::new();
                item.insert((*field).to_owned(), Value::String(value));
                push(entry.or_insert(Value::Array(vec![])), Value::Object(item));
            }
            [field] => {
                let slot = entry.or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert((*field).to_owned(), Value::String(value));
                }
            }
            _ => {}
        }
    }

    fn str(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            // A repeated plain key: the last one counts, as in Rails-style parsing.
            Value::Array(a) => a.last().and_then(scalar),
            _ => None,
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// The value as a signature covers it: a list's items joined with commas.
    fn joined(&self, name: &str) -> Option<String> {
        let text = |v: &Value| scalar(v).unwrap_or_else(|| v.to_string());
        match self.0.get(name)? {
            Value::Null => None,
            Value::Array(a) => Some(a.iter().map(text).collect::<Vec<_>>().join(",")),
            v => Some(text(v)),
        }
    }

    fn bool(&self, name: &str) -> bool {
        self.str(name)
            .is_some_and(|v| matches!(v.as_str(), "true" | "1"))
    }

    fn max_results(&self, default: u64, min: u64) -> Result<usize, ApiError> {
        let n = match self.str("max_results") {
            None => default,
            Some(s) => s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("Invalid max_results {s}: not a whole number"))
            })?,
        };
        if !(min..=MAX_RESULTS).contains(&n) {
            return Err(ApiError::bad_request(format!(
                "Invalid max_results {n}: must be between {min} and {MAX_RESULTS}"
            )));
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The position `next_cursor` points after, checked against the order of this request.
    fn cursor(&self, spec: &SortSpec) -> Result<Option<Vec<Key>>, ApiError> {
        match self.str("next_cursor").filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(c) => spec
                .decode_cursor(&c)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid next_cursor {c}"))),
        }
    }

    /// `sort_by` as the reference gives it (`[{"created_at": "desc"}]`), as a JSON string in a
    /// query, or as `sort_by[][created_at]=desc`.
    fn sort_by(&self) -> Result<SortSpec, ApiError> {
        let raw = match self.0.get("sort_by") {
            None => return Ok(SortSpec::new(vec![(Field::CreatedAt, Dir::Desc)])),
            Some(Value::String(s)) => {
                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
            }
            Some(v) => v.clone(),
        };
        let items = match raw {
            Value::Array(items) => items,
            other => vec![other],
        };
        let mut keys = Vec::new();
        for item in items {
            let pairs: Vec<(String, String)> = match item {
                Value::Object(m) => m
                    .into_iter()
                    .map(|(k, v)| (k, scalar(&v).unwrap_or_default()))
                    .collect(),
                Value::String(s) => match s.split_once(':') {
                    Some((f, d)) => vec![(f.to_owned(), d.to_owned())],
                    None => vec![(s, "desc".to_owned())],
                },
                other => return Err(ApiError::bad_request(format!("Invalid sort_by {other}"))),
            };
            for (field, dir) in pairs {
                let f = Field::from_name(&field)
                    .ok_or_else(|| ApiError::bad_request(format!("Invalid sort_by {field}")))?;
                let d = match dir.as_str() {
                    "asc" | "1" => Dir::Asc,
                    "desc" | "-1" => Dir::Desc,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid sort_by direction {dir}"
                        )));
                    }
                };
                keys.push((f, d));
            }
        }
        if keys.is_empty() {
            keys.push((Field::CreatedAt, Dir::Desc));
        }
        Ok(SortSpec::new(keys))
    }
}

fn push(slot: &mut Value, item: Value) {
    match slot {
        Value::Array(a) => a.push(item),
        other => {
            let first = std::mem::take(other);
            *other = Value::Array(vec![first, item]);
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---- order and cursors ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    CreatedAt,
    PublicId,
    ResourceType,
    DeliveryType,
    Bytes,
    Format,
    Width,
    Height,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Asc,
    Desc,
}

/// One value of a position in an order, as a cursor keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Int(i64),
    Text(String),
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::CreatedAt => "created_at",
            Field::PublicId => "public_id",
            Field::ResourceType => "resource_type",
            Field::DeliveryType => "type",
            Field::Bytes => "bytes",
            Field::Format => "format",
            Field::Width => "width",
            Field::Height => "height",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "created_at" | "uploaded_at" => Field::CreatedAt,
            "public_id" => Field::PublicId,
            "resource_type" => Field::ResourceType,
            "type" => Field::DeliveryType,
            "bytes" => Field::Bytes,
            "format" => Field::Format,
            "width" => Field::Width,
            "height" => Field::Height,
            _ => return None,
        })
    }

    fn text(self, r: &Resource) -> Option<&str> {
        match self {
            Field::PublicId => Some(&r.public_id),
            Field::ResourceType => Some(&r.resource_type),
            Field::DeliveryType => Some(&r.delivery_type),
            Field::Format => Some(&r.format),
            _ => None,
        }
    }

    fn int(self, r: &Resource) -> i64 {
        match self {
            Field::CreatedAt => r.created_nanos(),
            Field::Bytes => i64::try_from(r.bytes).unwrap_or(i64::MAX),
            Field::Width => r.width.map_or(-1, i64::from),
            Field::Height => r.height.map_or(-1, i64::from),
            _ => 0,
        }
    }

    fn key(self, r: &Resource) -> Key {
        match self.text(r) {
            Some(s) => Key::Text(s.to_owned()),
            None => Key::Int(self.int(r)),
        }
    }

    fn cmp(self, a: &Resource, b: &Resource) -> Ordering {
        match (self.text(a), self.text(b)) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => self.int(a).cmp(&self.int(b)),
        }
    }

    fn cmp_key(self, r: &Resource, k: &Key) -> Ordering {
        match (self.text(r), k) {
            (Some(x), Key::Text(y)) => x.cmp(y.as_str()),
            (None, Key::Int(y)) => self.int(r).cmp(y),
            // A cursor is checked against its fields when it is decoded.
            _ => Ordering::Equal,
        }
    }
}

/// A total order: the requested fields, then resource type, type and public ID, which together
/// name one asset.
#[derive(Debug, Clone)]
struct SortSpec(Vec<(Field, Dir)>);

impl SortSpec {
    fn new(mut fields: Vec<(Field, Dir)>) -> SortSpec {
        for f in [Field::ResourceType, Field::DeliveryType, Field::PublicId] {
            if !fields.iter().any(|(g, _)| *g == f) {
                fields.push((f, Dir::Asc));
            }
        }
        SortSpec(fields)
    }

    fn cmp(&self, a: &Resource, b: &Resource) -> Ordering {
        for (f, d) in &self.0 {
            let o = f.cmp(a, b);
            let o = if *d == Dir::Desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Whether `r` comes after the position `keys`: cursors are positions, not offsets, so
    /// assets added or removed between pages neither repeat nor hide the ones that stayed.
    fn is_after(&self, r: &Resource, keys: &[Key]) -> bool {
        for ((f, d), k) in self.0.iter().zip(keys) {
            let o = f.cmp_key(r, k);
            let o = if *d == Dir::Desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o == Ordering::Greater;
            }
        }
        false
    }

    fn order_names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(f, d)| {
                format!(
                    "{}:{}",
                    f.name(),
                    if *d == Dir::Asc { "asc" } else { "desc" }
                )
            })
            .collect()
    }

    fn cursor_after(&self, r: &Resource) -> String {
        let keys: Vec<Value> = self
            .0
            .iter()
            .map(|(f, _)| match f.key(r) {
                Key::Int(i) => Value::from(i),
                Key::Text(s) => Value::from(s),
            })
            .collect();
        let doc = json!({ "order": self.order_names(), "after": keys });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    fn decode_cursor(&self, cursor: &str) -> Option<Vec<Key>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let doc: Value = serde_json::from_slice(&bytes).ok()?;
        let order: Vec<String> = doc
            .get("order")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        if order != self.order_names() {
            return None;
        }
        let after = doc.get("after")?.as_array()?;
        if after.len() != self.0.len() {
            return None;
        }
        self.0
            .iter()
            .zip(after)
            .map(|((f, _), v)| match f {
                Field::PublicId | Field::ResourceType | Field::DeliveryType | Field::Format => {
                    v.as_str().map(|s| Key::Text(s.to_owned()))
                }
                _ => v.as_i64().map(Key::Int),
            })
            .collect()
    }
}

// ---- search expressions ----

/// A parsed search expression.
#[derive(Debug)]
enum Expr {
    All,
    Pred(Pred),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug)]
enum Pred {
    /// A term without a field: public IDs that contain it, ignoring case.
    Text(String),
    Str(StrField, StrTest),
    Num(NumField, Bound<i64>, Bound<i64>),
    Date(Bound<DateTime<Utc>>, Bound<DateTime<Utc>>),
    /// A field the emulator does not hold: like an unknown field in Cloudinary, no match.
    Never,
}

#[derive(Debug, Clone, Copy)]
enum StrField {
    PublicId,
    Filename,
    Folder,
    ResourceType,
    DeliveryType,
    Format,
    AssetId,
}

#[derive(Debug)]
enum StrTest {
    Exact(String),
    Prefix(String),
    Range(Bound<String>, Bound<String>),
}

#[derive(Debug, Clone, Copy)]
enum NumField {
    Bytes,
    Width,
    Height,
}

impl StrField {
    fn from_name(name: &str) -> Option<StrField> {
        Some(match name {
            "public_id" => StrField::PublicId,
            "filename" | "display_name" => StrField::Filename,
            "folder" | "asset_folder" => StrField::Folder,
            "resource_type" => StrField::ResourceType,
            "type" => StrField::DeliveryType,
            "format" => StrField::Format,
            "asset_id" => StrField::AssetId,
            _ => return None,
        })
    }

    /// Keyword fields match regardless of case; names and paths as they are.
    fn folds_case(self) -> bool {
        matches!(
            self,
            StrField::ResourceType | StrField::DeliveryType | StrField::Format
        )
    }

    fn value(self, r: &Resource) -> String {
        let v = match self {
            StrField::PublicId => r.public_id.clone(),
            StrField::Filename => r.filename().to_owned(),
            StrField::Folder => r.folder().to_owned(),
            StrField::ResourceType => r.resource_type.clone(),
            StrField::DeliveryType => r.delivery_type.clone(),
            StrField::Format => r.format.clone(),
            StrField::AssetId => r.asset_id(),
        };
        if self.folds_case() {
            v.to_lowercase()
        } else {
            v
        }
    }
}

impl NumField {
    fn value(self, r: &Resource) -> i64 {
        match self {
            NumField::Bytes => i64::try_from(r.bytes).unwrap_or(i64::MAX),
            NumField::Width => r.width.map_or(-1, i64::from),
            NumField::Height => r.height.map_or(-1, i64::from),
        }
    }
}

impl Expr {
    fn parse(text: &str, now: DateTime<Utc>) -> Result<Expr, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(Expr::All);
        }
        let mut p = ExprParser {
            tokens,
            pos: 0,
            now,
        };
        let e = p.or()?;
        if p.pos != p.tokens.len() {
            return Err(format!("unexpected {:?}", p.tokens[p.pos]));
        }
        Ok(e)
    }

    fn matches(&self, r: &Resource) -> bool {
        match self {
            Expr::All => true,
            Expr::Pred(p) => p.matches(r),
            Expr::Not(e) => !e.matches(r),
            Expr::And(a, b) => a.matches(r) && b.matches(r),
            Expr::Or(a, b) => a.matches(r) || b.matches(r),
        }
    }
}

impl Pred {
    fn matches(&self, r: &Resource) -> bool {
        match self {
            Pred::Text(t) => r.public_id.to_lowercase().contains(t.as_str()),
            Pred::Str(f, test) => {
                let v = f.value(r);
                match test {
                    StrTest::Exact(x) => &v == x,
                    // `folder:a/b/*` is the folder and everything below it.
                    StrTest::Prefix(x) => {
                        v.starts_with(x.as_str())
                            || (matches!(f, StrField::Folder)
                                && x.ends_with('/')
                                && v == x.trim_end_matches('/'))
                    }
                    StrTest::Range(lo, hi) => RangeBounds::<str>::contains(
                        &(
                            lo.as_ref().map(String::as_str),
                            hi.as_ref().map(String::as_str),
                        ),
                        v.as_str(),
                    ),
                }
            }
            Pred::Num(f, lo, hi) => (*lo, *hi).contains(&f.value(r)),
            Pred::Date(lo, hi) => (*lo, *hi).contains(&r.created_at),
            Pred::Never => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Colon,
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A value as written: its text with escapes resolved, and whether it ended in an unescaped `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Text(Word),
    Compare {
        field: String,
        op: Op,
        value: Word,
    },
    Range {
        field: String,
        lo: Bound<Word>,
        hi: Bound<Word>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Term(Term),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let followed = c.get(i + 1).is_some_and(|n| !n.is_whitespace());
        match ch {
            _ if ch.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '-' | '!' if followed => {
                out.push(Token::Not);
                i += 1;
            }
            '+' if followed => i += 1,
            _ => {
                let (token, next) = term_at(&c, i)?;
                out.push(token);
                i = next;
            }
        }
    }
    Ok(out)
}

/// The term (or `AND`/`OR`/`NOT`) starting at `c[i]`.
fn term_at(c: &[char], i: usize) -> Result<(Token, usize), String> {
    let mut j = i;
    while j < c.len() && (c[j].is_alphanumeric() || c[j] == '_' || c[j] == '.') {
        j += 1;
    }
    if j > i && j < c.len() && matches!(c[j], ':' | '=' | '<' | '>') {
        let field: String = c[i..j].iter().collect();
        let (op, mut k) = match (c[j], c.get(j + 1)) {
            ('>', Some('=')) => (Op::Ge, j + 2),
            ('<', Some('=')) => (Op::Le, j + 2),
            ('>', _) => (Op::Gt, j + 1),
            ('<', _) => (Op::Lt, j + 1),
            ('=', _) => (Op::Eq, j + 1),
            _ => (Op::Colon, j + 1),
        };
        if op == Op::Colon && matches!(c.get(k), Some('[' | '{')) {
            let lo_inclusive = c[k] == '[';
            k += 1;
            k = skip_space(c, k);
            let (lo, _, after_lo) = word_at(c, k, &[']', '}'])?;
            k = skip_space(c, after_lo);
            if c.get(k..k + 2) != Some(&['T', 'O'][..]) {
                return Err(format!("expected TO in the range of {field}"));
            }
            k = skip_space(c, k + 2);
            let (hi, _, after_hi) = word_at(c, k, &[']', '}'])?;
            k = skip_space(c, after_hi);
            let hi_inclusive = match c.get(k) {
                Some(']') => true,
                Some('}') => false,
                _ => return Err(format!("unclosed range of {field}")),
            };
            let bound = |w: Word, inclusive: bool| {
                if w.text.is_empty() && w.wildcard {
                    Bound::Unbounded
                } else if inclusive {
                    Bound::Included(w)
                } else {
                    Bound::Excluded(w)
                }
            };
            let term = Term::Range {
                field,
                lo: bound(lo, lo_inclusive),
                hi: bound(hi, hi_inclusive),
            };
            return Ok((Token::Term(term), k + 1));
        }
        let (value, quoted, next) = word_at(c, k, &[])?;
        if value.text.is_empty() && !value.wildcard && !quoted {
            return Err(format!("no value after {field}"));
        }
        return Ok((Token::Term(Term::Compare { field, op, value }), next));
    }
    let (word, quoted, next) = word_at(c, i, &[])?;
    let token = match word.text.as_str() {
        "AND" | "&&" if !quoted && !word.wildcard => Token::And,
        "OR" | "||" if !quoted && !word.wildcard => Token::Or,
        "NOT" if !quoted && !word.wildcard => Token::Not,
        _ => Token::Term(Term::Text(word)),
    };
    Ok((token, next))
}

fn skip_space(c: &[char], mut i: usize) -> usize {
    while c.get(i).is_some_and(|ch| ch.is_whitespace()) {
        i += 1;
    }
    i
}

/// A quoted or bare value at `c[i]`; a bare one ends at whitespace, `)` or one of `stops`.
fn word_at(c: &[char], mut i: usize, stops: &[char]) -> Result<(Word, bool, usize), String> {
    let mut text = String::new();
    let mut wildcard = false;
    let quoted = c.get(i) == Some(&'"');
    if quoted {
        i += 1;
        loop {
            match c.get(i) {
                None => return Err("unterminated quote".to_owned()),
                Some('\\') => {
                    if let Some(n) = c.get(i + 1) {
                        text.push(*n);
                    }
                    wildcard = false;
                    i += 2;
                }
                Some('"') => {
                    i += 1;
                    break;
                }
                Some('*') if c.get(i + 1) == Some(&'"') => {
                    wildcard = true;
                    i += 1;
                }
                Some(ch) => {
                    text.push(*ch);
                    i += 1;
                }
            }
        }
        if c.get(i) == Some(&'*') {
            wildcard = true;
            i += 1;
        }
        return Ok((Word { text, wildcard }, true, i));
    }
    let mut escaped_last = false;
    while let Some(&ch) = c.get(i) {
        if ch.is_whitespace() || ch == ')' || stops.contains(&ch) {
            break;
        }
        if ch == '\\' {
            if let Some(n) = c.get(i + 1) {
                text.push(*n);
            }
            escaped_last = true;
            i += 2;
        } else {
            text.push(ch);
            escaped_last = false;
            i += 1;
        }
    }
    if !escaped_last && text.ends_with('*') {
        text.pop();
        wildcard = true;
    }
    Ok((Word { text, wildcard }, false, i))
}

struct ExprParser {
    tokens: Vec<Token>,
    pos: usize,
    now: DateTime<Utc>,
}

impl ExprParser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// Terms side by side are ANDed, as with an explicit `AND`.
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                None | Some(Token::Close | Token::Or) => return Ok(left),
                Some(Token::And) => self.pos += 1,
                Some(_) => {}
            }
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            Some(Token::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing )".to_owned());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Term(t)) => Ok(Expr::Pred(self.compile(t)?)),
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("unexpected end".to_owned()),
        }
    }

    fn compile(&self, term: Term) -> Result<Pred, String> {
        let (field, lo, hi, op) = match term {
            Term::Text(w) => return Ok(Pred::Text(w.text.to_lowercase())),
            Term::Compare { field, op, value } => {
                let (lo, hi) = match op {
                    Op::Colon | Op::Eq => (Bound::Included(value.clone()), Bound::Included(value)),
                    Op::Gt => (Bound::Excluded(value), Bound::Unbounded),
                    Op::Ge => (Bound::Included(value), Bound::Unbounded),
                    Op::Lt => (Bound::Unbounded, Bound::Excluded(value)),
                    Op::Le => (Bound::Unbounded, Bound::Included(value)),
                };
                (field, lo, hi, Some(op))
            }
            Term::Range { field, lo, hi } => (field, lo, hi, None),
        };
        if matches!(field.as_str(), "created_at" | "uploaded_at") {
            return self.date(lo, hi, op);
        }
        let num = match field.as_str() {
            "bytes" => Some(NumField::Bytes),
            "width" => Some(NumField::Width),
            "height" => Some(NumField::Height),
            _ => None,
        };
        if let Some(f) = num {
            let lo = map_bound(lo, |w| size(&w.text))?;
            let hi = map_bound(hi, |w| size(&w.text))?;
            return Ok(Pred::Num(f, lo, hi));
        }
        let Some(f) = StrField::from_name(&field) else {
            return Ok(Pred::Never);
        };
        let fold = |w: &Word| {
            if f.folds_case() {
                w.text.to_lowercase()
            } else {
                w.text.clone()
            }
        };
        if matches!(op, Some(Op::Colon | Op::Eq))
            && let Bound::Included(w) = &lo
        {
            let test = if w.wildcard {
                StrTest::Prefix(fold(w))
            } else {
                StrTest::Exact(fold(w))
            };
            return Ok(Pred::Str(f, test));
        }
        let lo = map_bound(lo, |w| Ok(fold(&w)))?;
        let hi = map_bound(hi, |w| Ok(fold(&w)))?;
        Ok(Pred::Str(f, StrTest::Range(lo, hi)))
    }

    /// Dates are absolute (`2024-01-01`, `"2024-01-01T10:00:00Z"`) or relative to now
    /// (`1d`: a day ago; units s m h d w M y). `field:2024-01-01` is that whole day, `field:1d`
    /// the time since then.
    fn date(&self, lo: Bound<Word>, hi: Bound<Word>, op: Option<Op>) -> Result<Pred, String> {
        if matches!(op, Some(Op::Colon | Op::Eq))
            && let Bound::Included(w) = &lo
        {
            let (t, span) = self.instant(&w.text)?;
            return Ok(match span {
                Span::Day => {
                    Pred::Date(Bound::Included(t), Bound::Excluded(t + TimeDelta::days(1)))
                }
                Span::Second => Pred::Date(
                    Bound::Included(t),
                    Bound::Excluded(t + TimeDelta::seconds(1)),
                ),
                Span::SinceThen => Pred::Date(Bound::Included(t), Bound::Unbounded),
            });
        }
        let lo = map_bound(lo, |w| self.instant(&w.text).map(|(t, _)| t))?;
        let hi = map_bound(hi, |w| self.instant(&w.text).map(|(t, _)| t))?;
        Ok(Pred::Date(lo, hi))
    }

    fn instant(&self, text: &str) -> Result<(DateTime<Utc>, Span), String> {
        if let Some(t) = relative(text, self.now) {
            return Ok((t, Span::SinceThen));
        }
        parse_instant(text)
            .map(|(t, date_only)| (t, if date_only { Span::Day } else { Span::Second }))
            .ok_or_else(|| format!("invalid date {text}"))
    }
}

/// What an equality on a date value covers.
enum Span {
    Day,
    Second,
    SinceThen,
}

fn map_bound<T, U>(
    b: Bound<T>,
    f: impl FnOnce(T) -> Result<U, String>,
) -> Result<Bound<U>, String> {
    Ok(match b {
        Bound::Included(x) => Bound::Included(f(x)?),
        Bound::Excluded(x) => Bound::Excluded(f(x)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

/// `1500`, `10kb`, `1m`: binary multiples, k/kb, m/mb, g/gb, any case.
fn size(text: &str) -> Result<i64, String> {
    let lower = text.to_lowercase();
    let digits = lower.trim_end_matches(|ch: char| ch.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let factor: i64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(format!("invalid size {text}")),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("invalid number {text}"))?;
    Ok((n * factor as f64).round() as i64)
}

/// `4w` → four weeks before `now`.
fn relative(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let unit = text.chars().last()?;
    let n: u32 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        's' => Some(now - TimeDelta::seconds(n.into())),
        'm' => Some(now - TimeDelta::minutes(n.into())),
        'h' => Some(now - TimeDelta::hours(n.into())),
        'd' => Some(now - TimeDelta::days(n.into())),
        'w' => Some(now - TimeDelta::weeks(n.into())),
        'M' => now.checked_sub_months(Months::new(n)),
        'y' => now.checked_sub_months(Months::new(n.checked_mul(12)?)),
        _ => None,
    }
}

// ---- time ----

/// RFC 3339, `YYYY-MM-DDTHH:MM:SS` (UTC) or `YYYY-MM-DD` (midnight UTC; the flag says so).
fn parse_instant(text: &str) -> Option<(DateTime<Utc>, bool)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some((t.with_timezone(&Utc), false));
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, pattern) {
            return Some((t.and_utc(), false));
        }
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some((day.and_hms_opt(0, 0, 0)?.and_utc(), true))
}

/// `2024-05-01T10:00:00Z`, as the API writes `created_at`.
fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `Wed, 26 Nov 2026 09:00:00 GMT`, as `X-FeatureRateLimit-Reset` is written.
fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn fnv1a(seed: u64, text: &str) -> u64 {
    text.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
