//! Server-side copies for moves, sent by hand and signed with `object_store`'s SigV4 signer.
//!
//! `object_store`'s S3 `copy` is one CopyObject, which S3 refuses above 5 GB, and it cannot ask
//! for "only if the destination is absent" on AWS. So a move here:
//! - looks the source up (absent: [`Copied::SourceGone`]; its size picks the copy),
//! - without `replace`, looks the destination up ([`Copied::Exists`] when it is there) and sends
//!   the copy with `If-None-Match: *`, which AWS refuses with 412 if the destination appeared in
//!   between. moto and some S3-compatible servers ignore that header on CopyObject, so there the
//!   look-up is the only check (see `Capabilities::atomic_no_replace`),
//! - copies with one CopyObject up to the multipart threshold (5 GiB), else with a multipart
//!   upload of ranged UploadPartCopy parts completed with `If-None-Match: *` (moto honours it),
//! - confirms a CopyObject whose answer never came (a large copy can outlast the client's
//!   timeout and still complete on the server) by a look-up of the destination instead of
//!   sending it again: there with the source's size (and absent before) is done.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method};
use object_store::aws::AwsAuthorizer;
use percent_encoding::{AsciiSet, utf8_percent_encode};

use super::{ErrorBody, Inner, QUERY_VALUE};
use crate::store::KeyError;
use crate::store::cloud::{self, CallError, Copied};

/// A key in a URL path: unreserved characters and `/` stay.
const KEY_PATH: &AsciiSet = &QUERY_VALUE.remove(b'/');

/// S3's ceiling for one CopyObject, and for one part of a multipart upload.
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a multipart copy (raised when an object would need more than `MAX_PARTS`).
pub const PART_SIZE: u64 = 512 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// UploadPartCopy calls in flight in one multipart copy.
const PARTS_AT_ONCE: usize = 4;
/// How long one copy request may take: a CopyObject of 5 GiB runs well past the minute other
/// calls get. One that still times out is confirmed by a look-up.
pub(super) const COPY_TIMEOUT: Duration = Duration::from_mins(5);

/// When a copy is multipart, and with which part size.
#[derive(Debug, Clone, Copy)]
pub struct MultipartCopy {
    /// Objects larger than this many bytes are copied in parts.
    pub above: u64,
    pub part_size: u64,
}

impl Default for MultipartCopy {
    fn default() -> Self {
        MultipartCopy {
            above: MAX_SINGLE_COPY,
            part_size: PART_SIZE,
        }
    }
}

/// One answered request: status, headers, body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The failure an S3 answer holds (S3 may answer a copy 200 with an `<Error>` body).
fn failure(status: u16, body: &[u8]) -> CallError {
    let err: ErrorBody = quick_xml::de::from_reader(body).unwrap_or_default();
    let code = err.code.unwrap_or_default();
    let status = reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
    // A 200 with an error inside is a failure to retry, like a 5xx.
    let status = if status.is_success() {
        reqwest::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    let mut e = CallError::status(status, Some(&code), err.message.as_deref());
    // 409 ConditionalRequestConflict: a concurrent write; AWS asks for another try.
    e.retry |= code == "ConditionalRequestConflict";
    e
}

impl Inner {
    fn object_url(&self, full: &str) -> String {
        format!(
            "{}/{}",
            self.bucket_url,
            utf8_percent_encode(full, KEY_PATH)
        )
    }

    fn copy_source(&self, full: &str) -> String {
        format!(
            "{}/{}",
            utf8_percent_encode(&self.bucket, QUERY_VALUE),
            utf8_percent_encode(full, KEY_PATH)
        )
    }

    /// One request, signed when there are credentials, tried once; counts it.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, CallError> {
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let mut req = builder
            .body(object_store::client::HttpRequestBody::from(body.clone()))
            .map_err(|e| CallError::fatal(format!("bad request: {e}")))?;
        if let Some(credential) = &self.credential {
            AwsAuthorizer::new(credential, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|e| CallError::fatal(format!("cannot sign the request: {e}")))?;
        }
        let mut out = self.copy_http.request(method, url);
        for (name, value) in req.headers() {
            out = out.header(name, value);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = out
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::request(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| CallError {
                msg: format!("reading the answer failed: {}", cloud::error_chain(&e)),
                status: None,
                retry: true,
            })?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The size of the object `full`; `None` when there is none.
    async fn size_of(&self, full: &str) -> Result<Option<u64>, CallError> {
        let url = self.object_url(full);
        let answer = cloud::retrying(|| async {
            let a = self.send(Method::HEAD, &url, &[], Vec::new()).await?;
            match a.status {
                200..=299 | 404 => Ok(a),
                s => Err(failure(s, &a.body)),
            }
        })
        .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        answer
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| CallError::fatal("no Content-Length in the answer".into()))
    }

    /// Copies `from` to `to` (full names); see the module's notes.
    pub(super) async fn copy(&self, from: &str, to: &str, replace: bool) -> Copied {
        match self.copy_steps(from, to, replace).await {
            Ok(copied) => copied,
            Err(e) => Copied::Failed(
                if e.retry || e.status.is_none_or(|s| s >= 500 || s == 429) {
                    KeyError::transient(format!("copy failed: {}", e.msg))
                } else {
                    KeyError::permanent(format!("copy failed: {}", e.msg))
                },
            ),
        }
    }

    async fn copy_steps(&self, from: &str, to: &str, replace: bool) -> Result<Copied, CallError> {
        let Some(size) = self.size_of(from).await? else {
            return Ok(Copied::SourceGone);
        };
        if !replace && self.size_of(to).await?.is_some() {
            return Ok(Copied::Exists);
        }
        if size > self.multipart.above {
            return self.multipart_copy(from, to, size, replace).await;
        }
        let mut headers = vec![("x-amz-copy-source", self.copy_source(from))];
        if !replace {
            headers.push(("if-none-match", "*".to_owned()));
        }
        let url = self.object_url(to);
        let answer = cloud::retrying(|| async {
            // A copy without an answer is not sent again (it may have run for minutes and still
            // be running): the look-up below decides.
            let a = self
                .send(Method::PUT, &url, &headers, Vec::new())
                .await
                .map_err(|e| CallError { retry: false, ..e })?;
            let ok = (200..300).contains(&a.status)
                && tag(&String::from_utf8_lossy(&a.body), "ETag").is_some();
            if ok || a.status == 404 || a.status == 412 {
                Ok(a)
            } else {
                Err(failure(a.status, &a.body))
            }
        })
        .await;
        match answer {
            Ok(a) if a.status == 404 => Ok(Copied::SourceGone),
            Ok(a) if a.status == 412 => Ok(Copied::Exists),
            Ok(_) => Ok(Copied::Done),
            // No answer: the copy may have completed on the server all the same. Only a move
            // without replace knows that nothing was at the destination before.
            Err(e) if e.status.is_none() && !replace && self.size_of(to).await? == Some(size) => {
                Ok(Copied::Done)
            }
            Err(e) if e.status.is_none() => Err(CallError { retry: true, ..e }),
            Err(e) => Err(e),
        }
    }

    /// A multipart upload of ranged UploadPartCopy parts, completed with `If-None-Match: *`
    /// unless `replace`; aborted on any failure.
    async fn multipart_copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        replace: bool,
    ) -> Result<Copied, CallError> {
        let url = self.object_url(to);
        let created = cloud::retrying(|| async {
            let a = self
                .send(Method::POST, &format!("{url}?uploads="), &[], Vec::new())
                .await?;
            match tag(&String::from_utf8_lossy(&a.body), "UploadId") {
                Some(id) if (200..300).contains(&a.status) => Ok(id.to_owned()),
                _ => Err(failure(a.status, &a.body)),
            }
        })
        .await?;
        let upload = utf8_percent_encode(&created, QUERY_VALUE).to_string();
        let result = self
            .parts_and_complete(from, &url, &upload, size, replace)
            .await;
        if !matches!(result, Ok(Copied::Done)) {
            // Best effort: a lifecycle rule cleans up what an abort leaves.
            let _ = self
                .send(
                    Method::DELETE,
                    &format!("{url}?uploadId={upload}"),
                    &[],
                    Vec::new(),
                )
                .await;
        }
        result
    }

    async fn parts_and_complete(
        &self,
        from: &str,
        url: &str,
        upload: &str,
        size: u64,
        replace: bool,
    ) -> Result<Copied, CallError> {
        let part_size = self
            .multipart
            .part_size
            .max(size.div_ceil(MAX_PARTS))
            .max(1);
        let ranges: Vec<(u64, u64, u64)> = (0..size.div_ceil(part_size))
            .map(|i| {
                let start = i * part_size;
                (i + 1, start, (start + part_size).min(size) - 1)
            })
            .collect();
        let source = self.copy_source(from);
        let etags: Vec<(u64, String)> = futures::stream::iter(ranges)
            .map(|(n, start, end)| {
                let source = &source;
                async move {
                    let headers = [
                        ("x-amz-copy-source", source.clone()),
                        ("x-amz-copy-source-range", format!("bytes={start}-{end}")),
                    ];
                    let part_url = format!("{url}?partNumber={n}&uploadId={upload}");
                    cloud::retrying(|| async {
                        let a = self
                            .send(Method::PUT, &part_url, &headers, Vec::new())
                            .await?;
                        match tag(&String::from_utf8_lossy(&a.body), "ETag") {
                            Some(etag) if (200..300).contains(&a.status) => {
                                Ok((n, etag.to_owned()))
                            }
                            _ => Err(failure(a.status, &a.body)),
                        }
                    })
                    .await
                }
            })
            .buffered(PARTS_AT_ONCE)
            .try_collect()
            .await?;
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &etags {
            let _ = write!(
                body,
                "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
            );
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut headers = vec![("content-type", "application/xml".to_owned())];
        if !replace {
            headers.push(("if-none-match", "*".to_owned()));
        }
        let complete_url = format!("{url}?uploadId={upload}");
        let a = cloud::retrying(|| async {
            let a = self
                .send(
                    Method::POST,
                    &complete_url,
                    &headers,
                    body.clone().into_bytes(),
                )
                .await?;
            let done = (200..300).contains(&a.status)
                && tag(&String::from_utf8_lossy(&a.body), "ETag").is_some();
            if done || a.status == 412 {
                Ok(a)
            } else {
                Err(failure(a.status, &a.body))
            }
        })
        .await?;
        Ok(if a.status == 412 {
            Copied::Exists
        } else {
            Copied::Done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read() {
        let xml = "<R><UploadId>abc</UploadId><ETag>&quot;x&quot;</ETag></R>";
        assert_eq!(tag(xml, "UploadId"), Some("abc"));
        assert_eq!(tag(xml, "ETag"), Some("&quot;x&quot;"));
        assert_eq!(tag(xml, "Nope"), None);
    }

    #[test]
    fn an_error_inside_a_200_is_retried() {
        let body = b"<Error><Code>InternalError</Code><Message>later</Message></Error>";
        let e = failure(200, body);
        assert!(e.retry, "{}", e.msg);
        let e = failure(403, b"<Error><Code>AccessDenied</Code></Error>");
        assert!(!e.retry);
    }
}
