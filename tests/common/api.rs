//! The HTTP API in tests: a router built from a config file (no socket, `oneshot`), tokens of
//! each scope, and calls that answer status, headers and the JSON body.

use std::path::Path;
use std::sync::Arc;

use assetgc::app::App;
use assetgc::config::Scope;
use assetgc::server::{self, AppState, ServeOptions};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use tower::ServiceExt as _;

/// A server's router on the config at `path`, with one read and one write token.
pub struct Api {
    pub app: Arc<App>,
    pub state: AppState,
    pub router: Router,
    pub read: String,
    pub write: String,
}

/// What a call answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON; see `text`).
    pub json: serde_json::Value,
    pub text: String,
}

/// Options for a test server: no worker and no scheduler unless a test asks; job runs execute
/// the assetgc binary of this build.
pub fn test_options() -> ServeOptions {
    ServeOptions {
        exe: std::path::PathBuf::from(env!("CARGO_BIN_EXE_assetgc")),
        worker: false,
        scheduler: false,
        worker_poll: std::time::Duration::from_millis(200),
        plan_wait: std::time::Duration::from_mins(1),
        json_logs: false,
    }
}

impl Api {
    pub async fn open(config: &Path) -> Api {
        Api::open_with(config, test_options()).await
    }

    pub async fn open_with(config: &Path, opts: ServeOptions) -> Api {
        let cfg = assetgc::config::load(Some(config))
            .expect("config loads")
            .expect("config exists");
        let app = App::open(cfg).await.expect("app opens");
        let read = Api::token_on(&app, "reader", Scope::Read).await;
        let write = Api::token_on(&app, "writer", Scope::Write).await;
        let state = AppState::new(Arc::clone(&app), opts);
        let router = server::router(state.clone());
        Api {
            app,
            state,
            router,
            read,
            write,
        }
    }

    /// Makes a token of `scope` named `name` and answers it.
    pub async fn token_on(app: &App, name: &str, scope: Scope) -> String {
        let token = server::auth::new_token().expect("token");
        let sha = hex::encode(server::auth::digest(&token));
        app.state
            .create_token(Some(name), &sha, scope, chrono::Utc::now())
            .await
            .expect("token stored");
        token
    }

    /// Any call; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("answer");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    /// GET with the read token.
    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, Some(&self.read), None).await
    }

    /// POST with the write token.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> Answer {
        self.call("POST", path, Some(&self.write), Some(body)).await
    }

    pub async fn close(self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        self.state.tasks.wait().await;
        self.app.close().await;
    }
}

/// Asserts the SPEC §8 error shape: `{"success": false, "error": "..."}` with a non-empty error.
pub fn assert_error_shape(a: &Answer) {
    assert_eq!(a.json["success"], serde_json::Value::Bool(false), "{a:?}");
    assert!(
        a.json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an error message: {a:?}"
    );
}

/// A real `assetgc serve` process on a free loopback port.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub base: String,
    /// What the server wrote on stderr so far (filled by a reader thread).
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// Starts `assetgc --config CONFIG serve --listen 127.0.0.1:0 EXTRA…` and waits for its
    /// `listening on http://ADDR` line.
    pub fn start(config: &Path, extra: &[&str]) -> ServeProcess {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assetgc"))
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("assetgc serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(addr.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let base = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start: {}", log.lock().unwrap());
            }
        };
        ServeProcess {
            child,
            base,
            stderr: log,
        }
    }

    /// Sends SIGTERM and waits (at most 60 s) for the process to end; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not stop within 60 s of SIGTERM: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
