//! What the cloud stores share: listings sent by hand (Azure and GCS), their retries, the
//! parallel listing over top-level prefixes, and bulk deletes through `object_store` (all three).
//!
//! `object_store` parses every name of a listing page into a `Path` and fails the whole page on one
//! name with an empty, `.` or `..` segment or a control character (its Azure and GCS listings as
//! much as its S3 one), and SPEC §2 wants such names counted, not fatal. So each of these stores
//! sends its provider's list call itself and implements [`PageSource`]; this module turns pages
//! into a listing stream, classifies names, and retries.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::mpsc;

use super::{
    Gone, KeyError, KeyFailure, ListOptions, ListStream, Listed, Moved, Object, StoreError,
    unusable,
};
use crate::key::is_representable;

/// Listing pages waiting for the consumer; bounds memory to a few pages whatever the container.
const PAGES_IN_FLIGHT: usize = 4;
/// Attempts of one call before it fails.
pub(super) const TRIES: u32 = 5;
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_mins(1);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One failed call: what to say, and whether another try may help.
pub(super) struct CallError {
    pub msg: String,
    pub status: Option<u16>,
    pub retry: bool,
}

impl CallError {
    /// A request that got no answer: timeouts and refused connections are worth another try.
    pub fn request(e: &reqwest::Error) -> CallError {
        CallError {
            msg: format!("request failed: {}", error_chain(e)),
            status: None,
            retry: e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
        }
    }

    pub fn fatal(msg: String) -> CallError {
        CallError {
            msg,
            status: None,
            retry: false,
        }
    }

    /// An error answer. 5xx and 429 are retried, as are the providers' own "slow down" codes.
    pub fn status(status: reqwest::StatusCode, code: Option<&str>, message: Option<&str>) -> Self {
        let code = code.unwrap_or_default();
        let retry = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || matches!(code, "ServerBusy" | "OperationTimedOut" | "SlowDown");
        let mut msg = format!("HTTP {}", status.as_u16());
        if !code.is_empty() {
            msg.push(' ');
            msg.push_str(code);
        }
        if let Some(m) = message.map(str::trim).filter(|m| !m.is_empty()) {
            msg.push_str(": ");
            // Azure's messages carry a RequestId and Time on further lines: one line is enough.
            msg.push_str(m.lines().next().unwrap_or(m));
        }
        CallError {
            msg,
            status: Some(status.as_u16()),
            retry,
        }
    }
}

impl CallError {
    /// The error of a call to a store that was checked before (a listing): permanent unless
    /// another try could have helped; a 429 past the retries is the provider asking to slow down.
    pub fn into_store_error(self, message: String) -> StoreError {
        match self.status {
            Some(429) => StoreError::RateLimited {
                message,
                wait: None,
            },
            _ if self.retry => StoreError::transient(message),
            _ => StoreError::permanent(message),
        }
    }

    /// The error of `check`: refused credentials, no such bucket or container, or out of reach
    /// (a store that cannot be checked cannot be used, whatever it answered).
    pub fn into_unreached(self, message: String) -> StoreError {
        match self.status {
            Some(401 | 403) => StoreError::CredentialsRefused { message },
            Some(404) => StoreError::NotFound { message },
            _ => StoreError::unreachable(message),
        }
    }
}

/// What one key's failure from `object_store` means for it. Refused permissions and rejected
/// names fail again. S3's DeleteObjects reports failures per key with S3's own codes, which
/// `object_store` keeps only in the message (its error type is private): `(code: AccessDenied)`.
/// Its codes for a busy or failing server may pass later; every other code names something about
/// the object or the permissions that will not change by waiting. (`object_store` retries an
/// answer that mentions `InternalError` or `SlowDown` as a whole, so those two reach us as a
/// failed request, which is transient as well.)
pub(super) fn key_failure(e: &object_store::Error) -> KeyFailure {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. } => KeyFailure::Permanent,
        object_store::Error::Generic { .. } => match s3_code(&e.to_string()) {
            Some("InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout") | None => {
                KeyFailure::Transient
            }
            Some(_) => KeyFailure::Permanent,
        },
        _ => KeyFailure::Transient,
    }
}

/// A point look-up that failed: "cannot tell", never "missing". Refused permissions (S3 without
/// `s3:GetObject`) fail again; anything else may pass later.
pub(super) fn lookup_failed(message: String, e: object_store::Error) -> StoreError {
    match key_failure(&e) {
        KeyFailure::Permanent => StoreError::permanent(message),
        _ => StoreError::transient(message),
    }
    .with_source(e)
}

/// Whether a key's failure is the store's answer about that key — S3's DeleteObjects lists an
/// `<Error>` with its code per refused key, an Azure batch a status per part — rather than a
/// request that got no answer or was refused as a whole (refused credentials, no such bucket).
fn answered_for_key(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. }) && s3_code(&e.to_string()).is_some()
}

/// The S3 error code at the end of an `object_store` DeleteObjects message, `… (code: X)`.
fn s3_code(msg: &str) -> Option<&str> {
    let start = msg.rfind("(code: ")? + "(code: ".len();
    let code = msg[start..].strip_suffix(')')?;
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric())).then_some(code)
}

/// The HTTP client for hand-sent calls, with the same timeouts as `object_store`'s.
pub(super) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", error_chain(&e)))
}

/// A store prefix is "" or a representable key path followed by `/`.
pub(super) fn is_valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || prefix.strip_suffix('/').is_some_and(is_representable)
}

/// `object_store`'s retry settings matching [`TRIES`] and [`FIRST_BACKOFF`].
pub(super) fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: FIRST_BACKOFF,
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: (TRIES - 1) as usize,
        retry_timeout: Duration::from_mins(2),
    }
}

/// `object_store`'s client options for a base URL: plain HTTP only when the URL says so.
pub(super) fn client_options(base_url: &str) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_allow_http(base_url.starts_with("http://"))
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
}

/// Runs `call` up to [`TRIES`] times with doubling, jittered waits while it fails retryably.
pub(super) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.retry && attempt < TRIES => {
                tokio::time::sleep(jitter(wait)).await;
                wait *= 2;
                attempt += 1;
            }
            Err(mut e) => {
                if e.retry {
                    e.msg = format!("{} (gave up after {TRIES} tries)", e.msg);
                }
                return Err(e);
            }
            Ok(v) => return Ok(v),
        }
    }
}

/// `err` and its sources on one line: reqwest's own message rarely says why a connection failed.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `wait` give or take a quarter, so parallel listings that failed together do not retry together.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // nanos % 501 is 0..=500, i.e. 750‰..=1250‰ of the wait.
    wait * (750 + nanos % 501) / 1000
}

/// One list call's question: names under `prefix` (absolute), one level only with `delimiter`.
pub(super) struct PageQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: bool,
    pub max_results: u32,
    pub token: Option<&'a str>,
}

/// One list call's answer.
pub(super) struct Page {
    /// Entries already relative to the store prefix, excluded prefixes left out.
    pub items: Vec<Listed>,
    /// With a delimiter: the absolute common prefixes, each ending in `/`.
    pub prefixes: Vec<String>,
    /// The token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// A store whose list call is sent by hand.
pub(super) trait PageSource: Send + Sync + 'static {
    /// `<kind> store `name` (container `x`)`, to start messages with.
    fn what(&self) -> String;
    fn describe(&self) -> String;
    /// The store prefix, "" or ending in `/`.
    fn prefix(&self) -> &str;
    fn list_concurrency(&self) -> usize;
    fn page_size(&self) -> u32;
    /// One call, tried once; counts it.
    fn call(
        &self,
        q: &PageQuery<'_>,
        opts: &ListOptions,
    ) -> impl Future<Output = Result<Page, CallError>> + Send;
}

/// What a listed name is to the scan: an object relative to `store_prefix`, an unrepresentable
/// name, or nothing (outside the prefix, excluded, a folder marker).
pub(super) fn entry(
    store_prefix: &str,
    name: &str,
    size: u64,
    modified: Option<DateTime<Utc>>,
    opts: &ListOptions,
) -> Option<Listed> {
    // The server was asked for this prefix only; anything else is not this store's.
    let relative = name.strip_prefix(store_prefix)?;
    if size == 0 && (relative.is_empty() || relative.ends_with('/')) {
        // A folder marker (consoles and hierarchical-namespace tools make them), not an object.
        return None;
    }
    if excluded(opts, relative) {
        return None;
    }
    if !is_representable(relative) {
        let shown = if relative.chars().any(char::is_control) {
            relative.escape_debug().to_string()
        } else {
            relative.to_owned()
        };
        return Some(Listed::Unrepresentable(shown));
    }
    Some(Listed::Object(Object::plain(
        relative.to_owned(),
        Some(size),
        modified,
    )))
}

fn excluded(opts: &ListOptions, relative: &str) -> bool {
    opts.exclude_prefixes
        .iter()
        .any(|p| relative.starts_with(p.as_str()))
}

type Pages = mpsc::Sender<Result<Vec<Listed>, StoreError>>;

/// Streams the store: sequentially when `list_concurrency` is 1, else the top-level prefixes are
/// found with a delimiter listing and listed `list_concurrency` at once. A listing task runs
/// ahead of the consumer by at most [`PAGES_IN_FLIGHT`] pages and stops when the stream is dropped.
pub(super) fn list<S: PageSource>(source: &Arc<S>, opts: ListOptions) -> ListStream<'static> {
    let (tx, rx) = mpsc::channel(PAGES_IN_FLIGHT);
    let source = Arc::clone(source);
    tokio::spawn(async move {
        let result = if source.list_concurrency() > 1 {
            list_parallel(&*source, &opts, &tx).await
        } else {
            list_prefix(&*source, source.prefix(), &opts, &tx).await
        };
        if let Err(Some(e)) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    super::pages(rx)
}

async fn call_with_retries<S: PageSource>(
    source: &S,
    q: &PageQuery<'_>,
    opts: &ListOptions,
) -> Result<Page, StoreError> {
    retrying(|| source.call(q, opts)).await.map_err(|e| {
        let message = format!(
            "{}: listing `{}` failed: {}",
            source.what(),
            q.prefix,
            e.msg
        );
        e.into_store_error(message)
    })
}

/// Lists everything under `prefix` (absolute), page by page into `tx`. `Err(None)` when the
/// receiver is gone, `Err(Some(_))` when a call failed.
async fn list_prefix<S: PageSource>(
    source: &S,
    prefix: &str,
    opts: &ListOptions,
    tx: &Pages,
) -> Result<(), Option<StoreError>> {
    let mut token: Option<String> = None;
    loop {
        let q = PageQuery {
            prefix,
            delimiter: false,
            max_results: source.page_size(),
            token: token.as_deref(),
        };
        let page = call_with_retries(source, &q, opts).await.map_err(Some)?;
        if !page.items.is_empty() && tx.send(Ok(page.items)).await.is_err() {
            return Err(None);
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(()),
        }
    }
}

/// Discovers the top-level common prefixes (sending the top-level objects on the way), then lists
/// each of them fully, `list_concurrency` at once.
async fn list_parallel<S: PageSource>(
    source: &S,
    opts: &ListOptions,
    tx: &Pages,
) -> Result<(), Option<StoreError>> {
    let mut prefixes: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut token: Option<String> = None;
    loop {
        let q = PageQuery {
            prefix: source.prefix(),
            delimiter: true,
            max_results: source.page_size(),
            token: token.as_deref(),
        };
        let page = call_with_retries(source, &q, opts).await.map_err(Some)?;
        for name in page.prefixes {
            let Some(relative) = name.strip_prefix(source.prefix()) else {
                continue;
            };
            // A prefix must be listed once however often it is reported: fake-gcs-server repeats
            // on every page the prefixes of all names after the page start.
            if !excluded(opts, relative) && seen.insert(name.clone()) {
                prefixes.push(name);
            }
        }
        if !page.items.is_empty() && tx.send(Ok(page.items)).await.is_err() {
            return Err(None);
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    futures::stream::iter(prefixes)
        .map(|p| async move { list_prefix(source, &p, opts, tx).await })
        .buffer_unordered(source.list_concurrency())
        .try_collect::<()>()
        .await
}

/// One listing call of at most one name under the store prefix; every failure is one of the kinds
/// that are not reached.
pub(super) async fn check<S: PageSource>(source: &S) -> Result<(), StoreError> {
    let q = PageQuery {
        prefix: source.prefix(),
        delimiter: false,
        max_results: 1,
        token: None,
    };
    let opts = ListOptions::default();
    match retrying(|| source.call(&q, &opts)).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let cause = match e.status {
                Some(401 | 403) => format!("access denied ({})", e.msg),
                Some(404) => format!("not found ({})", e.msg),
                _ => e.msg.clone(),
            };
            let message = format!("{} at {}: {cause}", source.what(), source.describe());
            Err(e.into_unreached(message))
        }
    }
}

/// How a backend's `delete_stream` is driven by [`delete_many`].
pub(super) struct Deletes<'a, S> {
    pub store: &'a S,
    /// `<kind> store `name` (…)`, to start messages with.
    pub what: String,
    /// The store prefix, "" or ending in `/`: keys are relative to it.
    pub prefix: &'a str,
    /// Keys per request: the backend's bulk limit, or 1 where it deletes one object a request.
    pub per_call: usize,
    /// Requests in flight at once.
    pub at_once: usize,
    /// Whether a key's own `NotFound` means "already gone". S3 reports no such thing per key
    /// (DeleteObjects answers "deleted" for absent keys), so a 404 there is about the bucket.
    pub not_found_is_gone: bool,
    pub calls: &'a AtomicU64,
}

/// One delete request's answer: an outcome per path sent, or why the request failed as a whole.
type RequestAnswer = Result<Vec<object_store::Result<Path>>, KeyError>;

/// A reason kept to one readable line: `object_store`'s request errors name every key of the
/// request.
fn reason(e: &dyn std::error::Error) -> String {
    const MAX: usize = 300;
    let msg = error_chain(e).replace(['\r', '\n'], " ");
    match msg.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &msg[..cut]),
        None => msg,
    }
}

/// Bulk delete through `object_store`: unusable keys are refused here, the rest are sent
/// `per_call` to a request (each request counted), `at_once` requests at a time. A request that
/// fails as a whole fails each of its keys; when no key sent got an answer of its own (gone, or
/// refused by the store by name), the call fails.
pub(super) async fn delete_many<S: ObjectStore>(
    d: Deletes<'_, S>,
    keys: &[String],
) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
    let mut out: Vec<Result<Gone, KeyError>> = vec![Ok(Gone::Deleted); keys.len()];
    let mut sendable: Vec<(usize, Path)> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        if let Some(refused) = unusable(key) {
            out[i] = Err(refused);
            continue;
        }
        // Never `Path::from`, which would re-encode the key into another name.
        match Path::parse(format!("{}{key}", d.prefix)) {
            Ok(path) => sendable.push((i, path)),
            Err(e) => out[i] = Err(KeyError::permanent(format!("not a usable key ({e})"))),
        }
    }
    let chunks: Vec<Vec<(usize, Path)>> = sendable
        .chunks(d.per_call.max(1))
        .map(<[_]>::to_vec)
        .collect();
    let sendable_is_empty = sendable.is_empty();
    let d = &d;
    let answers: Vec<(Vec<usize>, RequestAnswer)> = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let (indices, paths): (Vec<usize>, Vec<Path>) = chunk.into_iter().unzip();
            let n = paths.len();
            d.calls.fetch_add(1, Ordering::Relaxed);
            let results: Vec<object_store::Result<Path>> = d
                .store
                .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed())
                .collect()
                .await;
            // One answer per key, in order; anything else is the request failing as a whole.
            let answer = if results.len() == n {
                Ok(results)
            } else {
                Err(results.into_iter().find_map(Result::err).map_or_else(
                    || KeyError::transient("the answer named the wrong keys"),
                    |e| KeyError {
                        kind: key_failure(&e),
                        message: reason(&e),
                    },
                ))
            };
            (indices, answer)
        })
        .buffer_unordered(d.at_once.max(1))
        .collect()
        .await;
    let mut answered = 0;
    let mut last_failure = String::new();
    for (indices, answer) in answers {
        match answer {
            Ok(results) => {
                for (i, result) in indices.into_iter().zip(results) {
                    out[i] = match result {
                        Ok(_) => Ok(Gone::Deleted),
                        Err(object_store::Error::NotFound { .. }) if d.not_found_is_gone => {
                            Ok(Gone::AlreadyGone)
                        }
                        Err(e) => {
                            if answered_for_key(&e) {
                                answered += 1;
                            }
                            Err(KeyError {
                                kind: key_failure(&e),
                                message: format!("delete failed: {}", reason(&e)),
                            })
                        }
                    };
                    match &out[i] {
                        Ok(_) => answered += 1,
                        Err(e) => last_failure.clone_from(&e.message),
                    }
                }
            }
            Err(e) => {
                let e = e.map_message(|m| format!("delete failed: {m}"));
                for i in indices {
                    out[i] = Err(e.clone());
                }
                last_failure = e.message;
            }
        }
    }
    // No key got an answer of its own: the store is not answering, or refuses this store's
    // credentials. (A request of one key that cannot be sent looks like that key's failure.) A
    // store that answered and refused every key reached the store: those keys fail, each.
    if !sendable_is_empty && answered == 0 {
        return Err(StoreError::unreachable(format!(
            "{}: {last_failure}",
            d.what
        )));
    }
    Ok(out)
}

/// Whether the store answers a listing (one page under its prefix) with these credentials: it
/// tells a store that refused every copy by name from one that refuses the credentials, which
/// an S3 HEAD's 403 without a body cannot.
async fn answers<S: ObjectStore>(d: &Deletes<'_, S>) -> bool {
    let prefix = match d.prefix.strip_suffix('/') {
        Some(p) => match Path::parse(p) {
            Ok(p) => Some(p),
            Err(_) => return false,
        },
        None => None,
    };
    d.calls.fetch_add(1, Ordering::Relaxed);
    let first = d.store.list(prefix.as_ref()).next().await;
    !matches!(first, Some(Err(_)))
}

/// How one server-side copy ended.
pub(super) enum Copied {
    Done,
    SourceGone,
    /// A copy without replace found an object at the destination and copied nothing.
    Exists,
    Failed(KeyError),
}

/// Server-side moves: every copy first (`at_once × 4` at a time, by `copy`), then the sources
/// of the copies that landed go through [`delete_many`], so a move costs one copy plus its share
/// of a bulk delete. A crash between the two leaves both copies, never neither: the next
/// attempt copies again (same destination) and deletes. `copy` honours the move's `replace`:
/// [`Copied::Exists`] becomes [`KeyFailure::AlreadyExists`] and leaves the source where it is.
pub(super) async fn move_many_with<S, F, Fut>(
    d: Deletes<'_, S>,
    moves: &[(String, String)],
    copy: F,
) -> Result<Vec<Result<Moved, KeyError>>, StoreError>
where
    S: ObjectStore,
    F: Fn(Path, Path) -> Fut,
    Fut: std::future::Future<Output = Copied>,
{
    let mut out: Vec<Result<Moved, KeyError>> = vec![Ok(Moved::Moved); moves.len()];
    let mut sendable: Vec<(usize, Path, Path)> = Vec::with_capacity(moves.len());
    for (i, (from, to)) in moves.iter().enumerate() {
        if let Some(refused) = unusable(from).or_else(|| unusable(to)) {
            out[i] = Err(refused);
            continue;
        }
        match (
            Path::parse(format!("{}{from}", d.prefix)),
            Path::parse(format!("{}{to}", d.prefix)),
        ) {
            (Ok(f), Ok(t)) => sendable.push((i, f, t)),
            (Err(e), _) | (_, Err(e)) => {
                out[i] = Err(KeyError::permanent(format!("not a usable key ({e})")));
            }
        }
    }
    let d = &d;
    let copy = &copy;
    let copies: Vec<(usize, Copied)> = futures::stream::iter(sendable)
        .map(|(i, from, to)| async move {
            d.calls.fetch_add(1, Ordering::Relaxed);
            (i, copy(from, to).await)
        })
        .buffer_unordered(d.at_once.max(1) * 4)
        .collect()
        .await;
    let mut sources = Vec::new();
    let mut moved_from = Vec::new();
    let mut landed = 0;
    let mut refused = false;
    let mut last_failure = String::new();
    for (i, result) in copies {
        match result {
            Copied::Done => {
                landed += 1;
                moved_from.push(i);
                sources.push(moves[i].0.clone());
            }
            Copied::SourceGone => {
                landed += 1;
                out[i] = Ok(Moved::SourceGone);
            }
            Copied::Exists => {
                landed += 1;
                out[i] = Err(KeyError::already_exists(format!(
                    "`{}` exists; it is not replaced",
                    moves[i].1
                )));
            }
            Copied::Failed(e) => {
                refused |= e.kind == KeyFailure::Permanent;
                last_failure.clone_from(&e.message);
                out[i] = Err(e);
            }
        }
    }
    // No copy landed: the store is not answering, or refuses the credentials — unless it
    // refused copies by name and still answers a listing, when those keys fail, each.
    if landed == 0 && !last_failure.is_empty() && !(refused && answers(d).await) {
        return Err(StoreError::unreachable(format!(
            "{}: {last_failure}",
            d.what
        )));
    }
    if !sources.is_empty() {
        let deleted = delete_many(
            Deletes {
                store: d.store,
                what: d.what.clone(),
                prefix: d.prefix,
                per_call: d.per_call,
                at_once: d.at_once,
                not_found_is_gone: d.not_found_is_gone,
                calls: d.calls,
            },
            &sources,
        )
        .await?;
        for (i, result) in moved_from.into_iter().zip(deleted) {
            if let Err(e) = result {
                out[i] = Err(e.map_message(|m| format!("copied, but the original stays: {m}")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_relative_to_the_prefix_and_classified() {
        let opts = ListOptions {
            with_meta: false,
            exclude_prefixes: vec![".trash/".to_owned()],
            since: None,
        };
        let object = |k: &str| Some(Listed::Object(Object::plain(k.to_owned(), Some(3), None)));
        assert_eq!(entry("app/", "app/a.jpg", 3, None, &opts), object("a.jpg"));
        assert_eq!(entry("app/", "appx.jpg", 3, None, &opts), None);
        assert_eq!(entry("app/", "app/.trash/x", 3, None, &opts), None);
        assert_eq!(entry("app/", "app/dir/", 0, None, &opts), None);
        assert_eq!(
            entry("app/", "app/notdir/", 3, None, &opts),
            Some(Listed::Unrepresentable("notdir/".to_owned()))
        );
        assert_eq!(
            entry("", "a//b", 3, None, &opts),
            Some(Listed::Unrepresentable("a//b".to_owned()))
        );
        assert_eq!(
            entry("", "l\nb", 3, None, &opts),
            Some(Listed::Unrepresentable("l\\nb".to_owned()))
        );
    }

    #[test]
    fn error_answers_say_whether_to_retry() {
        let e = CallError::status(reqwest::StatusCode::SERVICE_UNAVAILABLE, None, None);
        assert!(e.retry);
        let e = CallError::status(
            reqwest::StatusCode::FORBIDDEN,
            Some("AuthenticationFailed"),
            Some("Server failed to authenticate.\nRequestId:1"),
        );
        assert!(!e.retry);
        assert_eq!(
            e.msg,
            "HTTP 403 AuthenticationFailed: Server failed to authenticate."
        );
        assert!(CallError::status(reqwest::StatusCode::TOO_MANY_REQUESTS, None, None).retry);
    }

    #[test]
    fn s3_codes_of_failed_keys_say_whether_to_retry() {
        let failed = |code: &str| object_store::Error::Generic {
            store: "S3",
            source: format!("DeleteObjects request failed for key a.jpg: it failed (code: {code})")
                .into(),
        };
        assert_eq!(key_failure(&failed("AccessDenied")), KeyFailure::Permanent);
        assert_eq!(
            key_failure(&failed("InvalidObjectState")),
            KeyFailure::Permanent
        );
        for code in ["InternalError", "SlowDown", "ServiceUnavailable"] {
            assert_eq!(key_failure(&failed(code)), KeyFailure::Transient, "{code}");
        }
        let refused = object_store::Error::PermissionDenied {
            path: "a.jpg".into(),
            source: "403".into(),
        };
        assert_eq!(key_failure(&refused), KeyFailure::Permanent);
        let cut = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        assert_eq!(key_failure(&cut), KeyFailure::Transient);
        assert_eq!(s3_code("x (code: )"), None);
        // A code per key is the store's answer; a refused or cut request is not.
        assert!(answered_for_key(&failed("AccessDenied")));
        assert!(!answered_for_key(&refused));
        assert!(!answered_for_key(&cut));
    }

    #[test]
    fn jitter_stays_near_the_wait() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(400));
            assert!(j >= Duration::from_millis(300) && j <= Duration::from_millis(500));
        }
    }
}
