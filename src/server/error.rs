//! The one error shape of the API (SPEC §8): every non-2xx answer is
//! `{"success": false, "error": "..."}`, with no stack trace, secret or SQL text in it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// The body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong and, where the caller can act, what to do.
    pub error: String,
}

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            // The caller's own input, names and safety reasons: theirs to read.
            Error::Usage(_) | Error::NotFound(_) | Error::Refused(_) => crate::error::one_line(&e),
            // Database and file errors may carry SQL, paths or hosts: logged, never answered.
            Error::State(_) => {
                tracing::error!(error = %crate::error::one_line(&e), "state database error");
                "the state database failed; the server log has the details".to_string()
            }
            Error::Unreachable(_) => {
                tracing::error!(error = %crate::error::one_line(&e), "unreachable");
                "a store or database could not be reached; the server log has the details"
                    .to_string()
            }
            Error::Config { .. } | Error::Io { .. } => {
                tracing::error!(error = %crate::error::one_line(&e), "internal error");
                "the server failed; its log has the details".to_string()
            }
        };
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                success: false,
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Gives every non-2xx answer the error shape, including those axum and the layers make
/// themselves (unknown route, wrong method, a body past the cap, JSON that does not parse): their
/// plain-text reason becomes the `error`. A body axum rejects as unprocessable (422) is bad input
/// here: 400.
pub async fn shape(response: Response) -> Response {
    let status = response.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // The dashboard's pages answer in HTML, errors included.
    if is_json {
        return response;
    }
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let mut shaped = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        shaped.headers_mut().insert(name.clone(), value.clone());
    }
    shaped
}
