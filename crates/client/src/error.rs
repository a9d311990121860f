//! The one error type of the SDK.
//!
//! Protocol error codes arrive as [`ClientError::Server`] with the server's
//! [`ErrorDetail`] untouched, so callers match on `detail.code` exactly as PROTOCOL.md §1
//! lists them. Everything else is about the connection, not the request.

use herald_proto::{ChainError, ErrorDetail};
use std::time::Duration;

/// Why a request, a connection or a REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error reply (`{"error": {...}}`).
    #[error("server refused: {0}")]
    Server(ErrorDetail),
    /// The token was refused (reply `unauthorized` to `connect`, or close code 4401). The
    /// client does not reconnect after this.
    #[error("unauthorized: the server refused the token")]
    Unauthorized,
    /// The connection dropped while the request was in flight: it may or may not have been
    /// applied. Only `message.send` with a `client_id` is resent by itself (it is idempotent).
    #[error("connection lost before the reply arrived; the request may or may not have been applied")]
    Disconnected,
    /// The client was closed (or gave up reconnecting) and takes no more requests.
    #[error("client is closed")]
    Closed,
    /// No reply within the configured request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A transport error: connecting, reading or writing the socket, or an HTTP call.
    #[error("i/o: {0}")]
    Io(String),
    /// TLS failed: the server's certificate was refused (unknown CA, wrong name, expired), or
    /// a root certificate given to [`crate::ClientConfig`] is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// The server sent something this SDK cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A log page or entry failed hash-chain verification.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The URL given to [`crate::Client::connect`] cannot be used.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
}

impl ClientError {
    /// The protocol error code, when the server refused the request.
    pub fn code(&self) -> Option<herald_proto::ErrorCode> {
        match self {
            ClientError::Server(d) => Some(d.code),
            _ => None,
        }
    }
}
