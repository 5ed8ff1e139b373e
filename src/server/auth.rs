//! Who is calling (SPEC §8): `Authorization: Bearer TOKEN`, checked against the SHA-256 of the
//! tokens `token new` stored and those `[server] tokens` lists, in constant time; read scope for
//! GET, write scope for the rest; a per-token rate limit (429 with `Retry-After`).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::error::ApiError;
use crate::config::{RateLimit, Scope, ServerConfig};
use crate::state::State as StateDb;

/// Tokens made by `token new` are read again at most this often (a new one works within it).
const REFRESH: Duration = Duration::from_secs(2);

/// The caller of a request, once its token is known: handlers read it from the request's
/// extensions (the audit log's actor is `token:<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    /// The SHA-256 of the token: the rate limit's key (one bucket per token, whatever names
    /// say).
    pub digest: [u8; 32],
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

struct Known {
    sha256: [u8; 32],
    name: String,
    scope: Scope,
}

struct Cache {
    read_at: Option<Instant>,
    stored: Vec<Known>,
}

/// The tokens and the rate limiter of one server.
pub struct Auth {
    configured: Vec<Known>,
    cache: Mutex<Cache>,
    limiter: Option<RateLimiter<[u8; 32], DefaultKeyedStateStore<[u8; 32]>, DefaultClock>>,
}

/// The SHA-256 of a token, as `[server] tokens` and the state database keep it.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `agc_` and 64 hex digits (32 random bytes).
pub fn new_token() -> crate::error::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        crate::error::Error::Usage(format!("cannot get random bytes for a token: {e}"))
    })?;
    Ok(format!("agc_{}", hex::encode(bytes)))
}

impl Auth {
    pub fn new(server: &ServerConfig) -> Auth {
        let configured = server
            .tokens
            .iter()
            .map(|t| Known {
                sha256: t.sha256,
                name: t.name.clone(),
                scope: t.scope,
            })
            .collect();
        let limiter = server.rate_limit.map(|RateLimit { per_second, burst }| {
            let per = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_second(per).allow_burst(burst))
        });
        Auth {
            configured,
            cache: Mutex::new(Cache {
                read_at: None,
                stored: Vec::new(),
            }),
            limiter,
        }
    }

    /// The caller a token belongs to. Every known hash is compared, in constant time, whatever
    /// matched before.
    pub async fn identify(&self, state: &StateDb, token: &str) -> Option<Caller> {
        self.identify_digest(state, &digest(token)).await
    }

    /// The caller whose token has this SHA-256 (a dashboard session keeps only the hash), while
    /// that token is still known.
    pub async fn identify_digest(&self, state: &StateDb, presented: &[u8; 32]) -> Option<Caller> {
        let presented = *presented;
        // The stored tokens are read again at most once per REFRESH (so bad tokens cannot make
        // every request a database read), and also while known ones are used: a token deleted
        // from the state database stops working, and so do the dashboard sessions opened with
        // it, within REFRESH. The first caller past the interval claims the read; the others go
        // on with the list they have.
        let due = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            let due = cache.read_at.is_none_or(|t| t.elapsed() >= REFRESH);
            if due {
                cache.read_at = Some(Instant::now());
            }
            due
        };
        if due {
            match state.tokens().await {
                Ok(stored) => {
                    let stored = stored
                        .into_iter()
                        .filter_map(|t| {
                            let mut sha256 = [0u8; 32];
                            hex::decode_to_slice(&t.sha256, &mut sha256).ok()?;
                            Some(Known {
                                sha256,
                                name: t.name,
                                scope: t.scope,
                            })
                        })
                        .collect();
                    let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                    cache.stored = stored;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the API tokens"),
            }
        }
        self.find(&presented, due)
    }

    fn find(&self, presented: &[u8; 32], _fresh: bool) -> Option<Caller> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Option<&Known> = None;
        for k in self.configured.iter().chain(cache.stored.iter()) {
            if bool::from(k.sha256.ct_eq(presented)) && found.is_none() {
                found = Some(k);
            }
        }
        found.map(|k| Caller {
            name: k.name.clone(),
            scope: k.scope,
            digest: k.sha256,
        })
    }

    /// `Err(wait)` when the caller is past its rate limit.
    pub fn admit(&self, caller: &Caller) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&caller.digest)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The token of a request, from `Authorization: Bearer TOKEN`.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The scope a request needs: read for GET (and HEAD), write for the rest.
pub fn needed(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// Checks the token (or the dashboard's session cookie, with its CSRF token on every request
/// that changes something), its scope and its rate, then hands the request on with its
/// [`Caller`].
pub async fn require(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match bearer(&req) {
        None => match super::ui::session::from_request(&s, req.headers()).await {
            Some(session) => {
                if needed(req.method()) == Scope::Write
                    && let Err(why) = super::ui::session::check_write(
                        req.headers(),
                        &session,
                        s.app.cfg.server.trust_forwarded_proto,
                    )
                {
                    return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
                }
                session.caller
            }
            None => {
                return unauthorized(
                    "a token is needed: send `Authorization: Bearer TOKEN` (make one with `assetgc token new`)",
                );
            }
        },
        Some(token) => match s.auth.identify(&s.app.state, token).await {
            Some(c) => c,
            None => return unauthorized("the token is not valid"),
        },
    };
    let need = needed(req.method());
    if caller.scope < need {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has {} scope; this request needs a {} token (`assetgc token new --scope write`)",
                caller.name,
                caller.scope.as_str(),
                need.as_str()
            ),
        )
        .into_response();
    }
    if let Err(wait) = s.auth.admit(&caller) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "token `{}` is past its rate limit; retry in {secs} s",
                caller.name
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return r;
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Shared so that one `Auth` serves every clone of the state.
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_plain() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert!(a.starts_with("agc_") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn get_reads_and_the_rest_write() {
        assert_eq!(needed(&Method::GET), Scope::Read);
        assert_eq!(needed(&Method::POST), Scope::Write);
        assert_eq!(needed(&Method::DELETE), Scope::Write);
    }

    #[test]
    fn a_token_past_its_burst_must_wait() {
        let auth = Auth::new(&ServerConfig {
            rate_limit: Some(RateLimit {
                per_second: 1,
                burst: 2,
            }),
            ..ServerConfig::default()
        });
        let c = Caller {
            name: "ops".into(),
            scope: Scope::Read,
            digest: digest("one"),
        };
        assert!(auth.admit(&c).is_ok());
        assert!(auth.admit(&c).is_ok());
        let wait = auth.admit(&c).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Another token of the same name has its own bucket.
        let twin = Caller {
            digest: digest("two"),
            ..c
        };
        assert!(auth.admit(&twin).is_ok());
    }
}
