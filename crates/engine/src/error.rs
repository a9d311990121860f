//! [`EngineError`]: why a request was refused, mapped to a protocol error code in one place.

use herald_proto::{ErrorCode, NameError};
use herald_store::StoreError;

/// A refused or failed request. The `Display` text is the human sentence sent to the client,
/// so it never carries internal details (those are logged where they happen).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("only the author may change this message")]
    NotAuthor,
    #[error("channel {0:?} not found")]
    ChannelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("channel name {0:?} is registered by another user")]
    NameTaken(String),
    #[error("that epoch is not the channel's head epoch: fetch the new commits and seal again")]
    StaleEpoch,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("too many requests; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("internal error")]
    Internal,
}

impl EngineError {
    /// The protocol error code (PROTOCOL.md §1).
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::BadRequest(_) => ErrorCode::BadRequest,
            EngineError::InvalidName(_) => ErrorCode::InvalidName,
            EngineError::Unauthorized(_) => ErrorCode::Unauthorized,
            EngineError::Forbidden(_) => ErrorCode::Forbidden,
            EngineError::NotAuthor => ErrorCode::NotAuthor,
            EngineError::ChannelNotFound(_) => ErrorCode::ChannelNotFound,
            EngineError::NotFound(_) => ErrorCode::NotFound,
            EngineError::NameTaken(_) => ErrorCode::NameTaken,
            EngineError::StaleEpoch => ErrorCode::StaleEpoch,
            EngineError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            EngineError::RateLimited { .. } => ErrorCode::RateLimited,
            EngineError::Internal => ErrorCode::Internal,
        }
    }

    /// The error as the protocol's error object.
    pub fn detail(&self) -> herald_proto::ErrorDetail {
        herald_proto::ErrorDetail {
            code: self.code(),
            message: self.to_string(),
            retry_after_ms: match self {
                EngineError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }

    /// Maps a store refusal; `channel` names the channel in the message.
    pub fn from_store(e: StoreError, channel: &str) -> EngineError {
        match e {
            StoreError::ChannelNotFound => EngineError::ChannelNotFound(channel.to_owned()),
            StoreError::NotFound(what) => EngineError::NotFound(format!("{what} not found")),
            StoreError::NotMember => EngineError::Forbidden(format!("not a member of channel {channel:?}")),
            StoreError::Forbidden(why) => EngineError::Forbidden(why.to_owned()),
            StoreError::NotAuthor => EngineError::NotAuthor,
            StoreError::NameTaken => EngineError::NameTaken(channel.to_owned()),
            StoreError::StaleEpoch => EngineError::StaleEpoch,
            StoreError::InboxFull => EngineError::RateLimited { retry_after_ms: 1000 },
            StoreError::Invalid(why) => EngineError::BadRequest(why),
            StoreError::Backend(why) => {
                tracing::error!(error = %why, "store failure");
                EngineError::Internal
            }
            StoreError::Closed => EngineError::Internal,
        }
    }
}
