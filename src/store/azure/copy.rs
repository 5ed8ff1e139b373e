//! Copy Blob sent by hand, for moves. `object_store`'s Azure copy returns on any 2xx without
//! reading `x-ms-copy-status`: Azure may answer 202 with the copy still `pending`, and a move that
//! deleted its source then could lose the object. So a move here asks for the copy itself (with
//! `If-None-Match: *` when it must not replace), follows `x-ms-copy-status` by Get Blob Properties
//! while it is `pending`, and reports the copy done only once the status is `success` and the new
//! blob has the source's size.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, Method};
use percent_encoding::utf8_percent_encode;

use super::{Inner, KEY_PATH};
use crate::store::KeyError;
use crate::store::cloud::{self, CallError, Copied};

/// How long a pending copy is followed before the move gives up (the source stays).
const PENDING_PATIENCE: Duration = Duration::from_mins(5);
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

/// What Get Blob Properties says of a blob.
pub(super) struct Props {
    pub size: u64,
    pub copy_status: Option<String>,
    pub copy_id: Option<String>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl Inner {
    fn blob_url(&self, full: &str) -> String {
        format!(
            "{}/{}",
            self.container_url,
            utf8_percent_encode(full, KEY_PATH)
        )
    }

    /// One request signed with the store's credential, tried once; counts it. Answers the
    /// status and headers of a 2xx, else the error.
    async fn signed(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<(u16, HeaderMap), CallError> {
        let out = self.signed_request(method, url, headers).await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = out.send().await.map_err(|e| CallError::request(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if status.is_success() {
            return Ok((status.as_u16(), headers));
        }
        let code = header(&headers, "x-ms-error-code");
        let body = resp.text().await.unwrap_or_default();
        let message = body
            .split("<Message>")
            .nth(1)
            .and_then(|m| m.split("</Message>").next())
            .map(str::to_owned);
        Err(CallError::status(
            status,
            code.as_deref(),
            message.as_deref(),
        ))
    }

    /// Get Blob Properties of `full` (the full name); `None` when there is no such blob.
    pub(super) async fn props(&self, full: &str) -> Result<Option<Props>, CallError> {
        let url = self.blob_url(full);
        match cloud::retrying(|| self.signed(Method::HEAD, &url, &[])).await {
            Ok((_, h)) => {
                let size = header(&h, "content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| CallError::fatal("no Content-Length in the answer".into()))?;
                Ok(Some(Props {
                    size,
                    copy_status: header(&h, "x-ms-copy-status"),
                    copy_id: header(&h, "x-ms-copy-id"),
                }))
            }
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies `from` to `to` (full names) and confirms it, refusing an existing destination
    /// unless `replace`.
    pub(super) async fn copy_confirmed(&self, from: &str, to: &str, replace: bool) -> Copied {
        match self.copy_steps(from, to, replace).await {
            Ok(copied) => copied,
            Err(e) => Copied::Failed(if e.retry || e.status.is_none() {
                KeyError::transient(format!("copy failed: {}", e.msg))
            } else {
                KeyError::permanent(format!("copy failed: {}", e.msg))
            }),
        }
    }

    async fn copy_steps(&self, from: &str, to: &str, replace: bool) -> Result<Copied, CallError> {
        let Some(source) = self.props(from).await? else {
            return Ok(Copied::SourceGone);
        };
        let mut headers = vec![
            ("x-ms-copy-source", self.blob_url(from)),
            ("content-length", "0".to_owned()),
        ];
        if !replace {
            // Azure (and Azurite) refuse with 409 BlobAlreadyExists when `to` exists.
            headers.push(("if-none-match", "*".to_owned()));
        }
        let url = self.blob_url(to);
        let answer = cloud::retrying(|| self.signed(Method::PUT, &url, &headers)).await;
        let (_, h) = match answer {
            Ok(a) => a,
            Err(e) if e.status == Some(404) => return Ok(Copied::SourceGone),
            Err(e) if !replace && matches!(e.status, Some(409 | 412)) => {
                return Ok(Copied::Exists);
            }
            Err(e) => return Err(e),
        };
        let copy_id = header(&h, "x-ms-copy-id");
        let mut status = header(&h, "x-ms-copy-status").unwrap_or_default();
        let deadline = tokio::time::Instant::now() + PENDING_PATIENCE;
        let mut wait = FIRST_POLL;
        let mut size = None;
        loop {
            if status != "pending" {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CallError {
                    msg: format!("the copy to `{to}` is still pending; the original stays"),
                    status: None,
                    retry: true,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
            let Some(p) = self.props(to).await? else {
                return Err(CallError::fatal(format!(
                    "the copy to `{to}` vanished while pending"
                )));
            };
            if p.copy_id.is_some() && copy_id.is_some() && p.copy_id != copy_id {
                return Err(CallError::fatal(format!(
                    "`{to}` was replaced by another copy while this one was pending"
                )));
            }
            status = p.copy_status.unwrap_or_default();
            size = Some(p.size);
        }
        if status != "success" {
            return Err(CallError::fatal(format!(
                "the copy to `{to}` ended `{status}`; the original stays"
            )));
        }
        let size = match size {
            Some(s) => s,
            None => match self.props(to).await? {
                Some(p) => p.size,
                None => {
                    return Err(CallError::fatal(format!("the copy `{to}` is not there")));
                }
            },
        };
        if size != source.size {
            return Err(CallError::fatal(format!(
                "the copy `{to}` has {size} bytes, the original {}; the original stays",
                source.size
            )));
        }
        Ok(Copied::Done)
    }
}
