//! What the SDK hands its user: [`ClientEvent`]s on an [`EventStream`].

use futures::Stream;
use herald_proto::frames::{ConnectOk, Event};
use herald_proto::{ChainError, ErrorDetail};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// One thing that happened on the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A `connect` succeeded (the first one, and every reconnect after it).
    Connected(ConnectOk),
    /// The connection dropped; the client is reconnecting unless it was closed or refused.
    Disconnected { reason: String },
    /// A server push. Log events have been verified against the channel's chain and are
    /// delivered exactly once, in `seq` order per channel.
    Event(Box<Event>),
    /// An entry failed verification and was not delivered as an event.
    ChainError(ChainError),
    /// The server replayed only the newest entries after a resume; entries before `from_seq`
    /// must be paged with `Channel::log` or `Channel::history`.
    ResumeTruncated { channel: String, from_seq: u64 },
    /// An error reply that answers no request (e.g. to a frame the server could not parse).
    ServerError(ErrorDetail),
}

impl ClientEvent {
    /// The server event, if this is one.
    pub fn as_event(&self) -> Option<&Event> {
        match self {
            ClientEvent::Event(e) => Some(e),
            _ => None,
        }
    }
}

/// A stream of every [`ClientEvent`], from [`crate::Client::events`].
///
/// Each stream has its own queue, so a slow reader never makes the connection wait (which
/// could stall the replies its own task is awaiting) and never loses an event (which would
/// break the no-gap guarantee). The queue is unbounded: drop a stream you stop reading.
/// The stream ends when the client is closed.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::UnboundedReceiver<ClientEvent>,
}

impl EventStream {
    /// The next event, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }
}

impl Stream for EventStream {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}
