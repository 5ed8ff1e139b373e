//! Cloudinary's two APIs as the store calls them, in one place. Every Admin API call goes through
//! [`Client::admin`], which passes the account's [`Budget`] first (`admit`), hands the answer's
//! rate-limit headers back to it (`observe`) and asks it how long a 420 or 429 may be waited out
//! (`rate_limited`). The Upload API (`rename`) has no hourly limit and spends none of the budget,
//! so [`Client::upload`] signs and sends its calls without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::budget::Budget;
use crate::config::CloudinaryLocation;
use crate::store::StoreError;
use crate::store::cloud::{FIRST_BACKOFF, TRIES, error_chain, http_client};

/// Rate-limit waits one call accepts before it gives up.
const RATE_LIMIT_WAITS: u32 = 3;

/// An Admin API request's body.
pub(super) enum Body<'a> {
    None,
    Form(&'a [(String, String)]),
    Json(serde_json::Value),
}

/// An Upload API call that did not succeed: its status (`None` when nothing answered) and what
/// Cloudinary said, or why nothing answered.
pub(super) struct Refusal {
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    error: ApiMessage,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    message: String,
}

/// Cloudinary's message in an error answer, or the start of the body when it is not JSON.
fn message_of(text: &str) -> String {
    serde_json::from_str::<ApiError>(text)
        .map_or_else(|_| text.chars().take(200).collect(), |e| e.error.message)
}

pub(super) struct Client {
    http: reqwest::Client,
    /// `{api_base}/v1_1/{cloud}`
    base: String,
    cloud: String,
    api_key: String,
    api_secret: String,
    budget: Arc<Budget>,
    calls: AtomicU64,
    /// Whether any call was answered: a refusal before that means the store is out of reach.
    answered: AtomicBool,
}

impl Client {
    pub fn new(loc: &CloudinaryLocation, budget: Arc<Budget>) -> Result<Client, StoreError> {
        Ok(Client {
            http: http_client().map_err(StoreError::permanent)?,
            base: format!("{}/v1_1/{}", loc.api_base, loc.cloud),
            cloud: loc.cloud.clone(),
            api_key: loc.api_key.clone(),
            api_secret: loc.api_secret.expose().to_string(),
            budget,
            calls: AtomicU64::new(0),
            answered: AtomicBool::new(false),
        })
    }

    /// Admin API calls sent so far, retries included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether any call (either API) was answered.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    fn mark_answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }

    /// One Admin API call: the budget first, then the request, with retries on 5xx and lost
    /// connections and waits on 420/429 (up to `max_wait`, by the budget). A refusal, a lost
    /// connection or a 404 before anything was answered means the store is out of reach (bad
    /// credentials, no such cloud); after that it is a failure of this call.
    pub async fn admin<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: &Body<'_>,
    ) -> Result<T, StoreError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 1;
        let mut waits = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.budget
                .admit()
                .await
                .map_err(|message| StoreError::BudgetStopped { message })?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(&self.api_key, Some(&self.api_secret))
                .query(query);
            match body {
                Body::None => {}
                Body::Form(fields) => req = req.form(fields),
                Body::Json(v) => req = req.json(v),
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let retry = e.is_timeout() || e.is_connect() || e.is_request();
                    if retry && attempt < TRIES {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                        continue;
                    }
                    return Err(self.unanswered(e));
                }
            };
            self.budget.observe(resp.headers());
            let status = resp.status();
            if status.is_success() {
                self.mark_answered();
                let bytes = resp.bytes().await.map_err(|e| {
                    StoreError::transient(format!(
                        "Cloudinary's answer to {path} was cut short: {}",
                        error_chain(&e)
                    ))
                    .with_source(e)
                })?;
                return serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::permanent(format!(
                        "Cloudinary's answer to {path} is not what the Admin API documents: {e}"
                    ))
                    .with_source(e)
                });
            }
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let said = format!("HTTP {}: {}", status.as_u16(), message_of(&text).trim());
            match status.as_u16() {
                420 | 429 if waits < RATE_LIMIT_WAITS => {
                    let wait = self
                        .budget
                        .rate_limited(&headers)
                        .map_err(|message| StoreError::BudgetStopped { message })?;
                    waits += 1;
                    tokio::time::sleep(wait).await;
                }
                420 | 429 => {
                    return Err(StoreError::RateLimited {
                        message: format!("Cloudinary answered {path} with {said}"),
                        wait: retry_after(&headers),
                    });
                }
                _ if status.is_server_error() && attempt < TRIES => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                _ => return Err(self.refused(status, path, &said)),
            }
        }
    }

    /// A call that got no answer: out of reach when nothing was ever answered, else a failure of
    /// this call that trying later may mend.
    fn unanswered(&self, e: reqwest::Error) -> StoreError {
        let message = format!(
            "cannot reach the Cloudinary API at {}: {}",
            crate::config::redact_url(&self.base),
            error_chain(&e)
        );
        if self.answered() {
            StoreError::transient(message)
        } else {
            StoreError::unreachable(message)
        }
        .with_source(e)
    }

    /// An answer that is not a success (nor a rate limit): refused credentials, no such cloud, a
    /// server error after its retries, or a request the API will refuse again.
    fn refused(&self, status: StatusCode, path: &str, said: &str) -> StoreError {
        if matches!(status.as_u16(), 401 | 403) {
            let message = format!(
                "Cloudinary refused API key {} of cloud `{}` ({said}); check the key and secret in the store's url or CLOUDINARY_URL",
                self.api_key, self.cloud
            );
            return if self.answered() {
                StoreError::permanent(message)
            } else {
                StoreError::CredentialsRefused { message }
            };
        }
        let message = format!("Cloudinary answered {path} with {said}");
        if status == StatusCode::NOT_FOUND && !self.answered() {
            StoreError::NotFound { message }
        } else if status.is_server_error() {
            StoreError::transient(message)
        } else {
            StoreError::permanent(message)
        }
    }

    /// One signed Upload API call, `POST {base}/{path}` with `params` (the signature's
    /// `timestamp`, `api_key` and `signature` are added here), tried again on lost connections,
    /// 5xx, 420 and 429. Any answer but a refusal of the credentials shows the API is there.
    pub async fn upload(&self, path: &str, params: &[(&str, String)]) -> Result<(), Refusal> {
        let url = format!("{}/{path}", self.base);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut signed: Vec<(&str, String)> = params.to_vec();
            signed.push(("timestamp", Utc::now().timestamp().to_string()));
            let signature = upload_signature(&signed, &self.api_secret);
            signed.push(("api_key", self.api_key.clone()));
            signed.push(("signature", signature));
            let resp = match self.http.post(&url).form(&signed).send().await {
                Ok(r) => r,
                Err(e) if attempt < TRIES && (e.is_timeout() || e.is_connect()) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(Refusal {
                        status: None,
                        message: format!(
                            "cannot reach the Cloudinary Upload API: {}",
                            error_chain(&e)
                        ),
                    });
                }
            };
            let status = resp.status();
            if status.is_success() {
                self.mark_answered();
                return Ok(());
            }
            let message = message_of(&resp.text().await.unwrap_or_default());
            if !matches!(status.as_u16(), 401 | 403) {
                self.mark_answered();
            }
            if (status.is_server_error() || matches!(status.as_u16(), 420 | 429)) && attempt < TRIES
            {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
                continue;
            }
            return Err(Refusal {
                status: Some(status.as_u16()),
                message: message.trim().to_string(),
            });
        }
    }
}

/// `Retry-After` in seconds, when an answer gave one.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The signature of an Upload API call: the lowercase hex SHA-1 of its parameters sorted by
/// name as `name=value` joined with `&`, then the API secret.
fn upload_signature(params: &[(&str, String)], secret: &str) -> String {
    use sha1::Digest;
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let joined = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    hex::encode(sha1::Sha1::digest(format!("{joined}{secret}").as_bytes()))
}
