//! An HTTP receiver on a real socket for the webhook channels: it records every request (path,
//! headers, raw body) and answers with a scripted sequence of statuses, then 200.
//!
//! It runs on a runtime of its own in a thread of its own, so it keeps answering whatever the
//! test's runtime is doing, and stops when dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};

/// One request as it arrived.
#[derive(Clone)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lower-case; a repeated header keeps its last value.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.method,
            self.path,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body to {} is not JSON ({e}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Request>,
    statuses: VecDeque<u16>,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Answers the first requests with `statuses` in turn (whatever their path), then 200.
    pub fn start(statuses: &[u16]) -> Receiver {
        let shared = Arc::new(Mutex::new(Shared {
            requests: Vec::new(),
            statuses: statuses.iter().copied().collect(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new().fallback(
                        move |method: axum::http::Method,
                              uri: Uri,
                              headers: HeaderMap,
                              body: Bytes| {
                            let state = Arc::clone(&state);
                            async move { record(&state, method, &uri, &headers, &body) }
                        },
                    );
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("receiver serves");
                });
            })
            .expect("spawn the receiver thread");
        Receiver {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().expect("receiver state").requests.clone()
    }

    /// The requests once there are at least `n`; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < end,
                "the receiver got {} requests in {timeout:?}, not {n}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn record(
    state: &Mutex<Shared>,
    method: axum::http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    let mut s = state.lock().expect("receiver state");
    s.requests.push(Request {
        at: Instant::now(),
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let code = s.statuses.pop_front().unwrap_or(200);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A 429 asks for one second, as Slack and Discord do with theirs.
    let retry_after = if code == 429 { "1" } else { "0" };
    (status, [("retry-after", retry_after)])
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
