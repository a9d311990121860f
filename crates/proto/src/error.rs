//! The protocol's error codes (PROTOCOL.md §1) and the `{"error": {...}}` body.
//!
//! Every error a client can see is one of these codes; the mapping from internal errors to a
//! code happens in exactly one place per layer (the server's `ApiError`).

use serde::{Deserialize, Serialize};

/// An error code of PROTOCOL.md §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    BadRequest,
    InvalidName,
    Unauthorized,
    Forbidden,
    NotAuthor,
    ChannelNotFound,
    NotFound,
    NameTaken,
    /// An encrypted-channel write names an epoch that is no longer the head (§7).
    StaleEpoch,
    PayloadTooLarge,
    RateLimited,
    Internal,
}

impl ErrorCode {
    /// The HTTP status a REST answer with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidName => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::NotAuthor => 403,
            ErrorCode::ChannelNotFound | ErrorCode::NotFound => 404,
            ErrorCode::NameTaken | ErrorCode::StaleEpoch => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotAuthor => "not_author",
            ErrorCode::ChannelNotFound => "channel_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inner object of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `{"error": {"code": …, "message": …}}`, the body of every REST error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code, message: message.into(), retry_after_ms: None } }
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorDetail {}
