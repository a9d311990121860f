//! Herald's wire protocol, version 1: the typed frames of the WebSocket and REST API, the
//! validated names they carry, the error codes, and the channel log's hash chain.
//!
//! This crate is the API boundary every client and the server depend on. It does no I/O,
//! spawns nothing and reads no clock: time and randomness come in as arguments, so everything
//! here is a pure function that can be tested byte for byte against `PROTOCOL.md`.
//!
//! # Layout
//!
//! - [`names`]: validated newtypes for user ids, channel names, subjects, client ids.
//! - [`error`]: the protocol's error codes and the error body shape.
//! - [`chain`]: the BLAKE3 hash chain of a channel log (§5).
//! - [`model`]: channels, messages, log entries, members as they travel on the wire.
//! - [`frames`]: WebSocket requests, replies and events (§4), and the binary frame layout (§1).
//! - [`time`]: RFC 3339 millisecond timestamps.
//! - [`rooms`]: room and stream requests and events (§8), apart from the channel ops.

pub mod chain;
pub mod e2ee;
pub mod error;
pub mod frames;
pub mod model;
pub mod names;
pub mod rooms;
pub mod time;

pub use chain::{ChainError, ChainVerifier, EntryKind, Hash32};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use model::*;
pub use names::{ChannelName, ClientId, DeviceId, NameError, Subject, UserId};
