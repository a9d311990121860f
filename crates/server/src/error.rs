//! [`ApiError`]: the one place where REST failures become `{"error": {...}}` responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_engine::EngineError;
use herald_proto::{ErrorBody, ErrorCode, ErrorDetail};

/// A REST error: a protocol error code with a human sentence.
#[derive(Debug)]
pub struct ApiError(pub ErrorDetail);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ErrorDetail { code, message: message.into(), retry_after_ms: None })
    }
}

impl ApiError {
    /// `rate_limited` with the wait in milliseconds (sent as `Retry-After` too).
    pub fn rate_limited(retry_after_ms: u64) -> ApiError {
        ApiError(ErrorDetail {
            code: ErrorCode::RateLimited,
            message: format!("over the REST rate limit; retry in {retry_after_ms} ms"),
            retry_after_ms: Some(retry_after_ms),
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError(e.detail())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.0.retry_after_ms;
        let mut resp = (status, Json(ErrorBody { error: self.0 })).into_response();
        if let Some(ms) = retry
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
