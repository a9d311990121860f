//! Herald's Rust SDK: one connection to a Herald server that reconnects and resumes by
//! itself, typed requests for every op of the protocol, typed events, and verification of
//! every channel's hash chain.
//!
//! What it must never do: deliver a log event twice or skip one without saying so (it
//! resumes by `seq` and drops duplicates), deliver an entry whose hash chain does not verify
//! (that becomes [`ClientEvent::ChainError`]), silently resend a request that is not
//! idempotent, or reconnect after the server refused its token (with a token provider, a
//! connection closed because its token expired is reconnected with a fresh one).
//!
//! ```no_run
//! use herald_client::{Client, ClientEvent, HistoryQuery, HistoryQueryExt};
//! use futures::StreamExt;
//!
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! let client = Client::connect("http://127.0.0.1:7700", "<jwt>").await?;
//! let mut events = client.events();
//! let channel = client.channels().create("project-x").await?;
//! let message = channel.send("hi").await?;
//! channel.react(&message.id, "👍").await?;
//! let page = channel.history(HistoryQuery::latest(100)).await?;
//! assert!(!page.messages.is_empty());
//! let _listener = channel.on_message(|m| println!("{}: {}", m.author, m.content));
//! while let Some(event) = events.next().await {
//!     if let ClientEvent::ChainError(e) = event {
//!         eprintln!("tampered history: {e}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`session`]: the pure state machine: request ids and replies, chain verification,
//!   dedupe on resume, what to resend after a reconnect. No I/O; unit-tested directly.
//! - `connection`: the one task that owns the WebSocket, reconnects with backoff and fans
//!   events out.
//! - [`client`]: [`Client`] and [`Channels`]. [`channel`]: the [`Channel`] handle.
//! - [`subscription`]: pub/sub [`Subscription`]s. [`event`]: [`ClientEvent`], [`EventStream`].
//! - [`rest`]: log pages and blobs over HTTP, and [`verify_log_page`].
//! - [`config`]: [`ClientConfig`] (backoff, timeouts, token provider). [`error`]: [`ClientError`].
//! - `tls`: the one rustls configuration of `wss://` and `https://`.
//! - [`token`]: [`TokenProvider`], reading a JWT's `exp`, when to refresh.
//! - [`room`]: rooms (§8): [`room::Room`], room messages with attachments, streams with
//!   credit ([`room::StreamWriter`], [`room::StreamReader`]).
//! - [`e2ee`]: end-to-end encryption: the device and its state file, DMs, encrypted
//!   channels and files, the keeper.
//! - [`history`]: [`HistoryQueryExt`] constructors for [`HistoryQuery`].

pub mod channel;
pub mod client;
pub mod config;
mod connection;
pub mod e2ee;
pub mod error;
pub mod event;
pub mod history;
pub mod rest;
pub mod room;
pub mod session;
pub mod subscription;
mod tls;
pub mod token;

pub use channel::{Channel, Listener};
pub use client::{Channels, Client};
pub use config::ClientConfig;
pub use connection::CLOSE_UNAUTHORIZED;
pub use error::ClientError;
pub use event::{ClientEvent, EventStream};
pub use history::HistoryQueryExt;
pub use rest::{BlobRef, verify_log_page};
pub use subscription::{Publication, Subscription};
pub use token::TokenProvider;

pub use herald_proto;
pub use herald_proto::frames::{
    ConnectOk, CreateChannel, Event, HistoryPage, HistoryQuery, LogPage, SendMessage,
};
pub use herald_proto::{ChainError, ErrorCode, ErrorDetail, Message};
