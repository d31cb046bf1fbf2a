//! SSM's error shape: `{"__type": "<Code>", "message": "<text>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::sigv4::SigError;
use crate::store::StoreError;

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// The AWS error code (`__type`).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// A client fault (HTTP 400).
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }

    /// A server fault (HTTP 500); the detail goes to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalServerError",
            message: "internal server error".into(),
        }
    }
}

impl From<SigError> for ApiError {
    fn from(e: SigError) -> Self {
        ApiError::bad(e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.code, "message": self.message });
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/x-amz-json-1.1")], body.to_string())
            .into_response()
    }
}
