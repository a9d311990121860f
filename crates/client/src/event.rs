//! What the SDK hands its user: [`ClientEvent`]s on an [`EventStream`].

use futures::Stream;
use herald_proto::frames::{ConnectOk, Event};
use herald_proto::{ChainError, ErrorDetail};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The last item of an [`EventStream`] whose reader fell `capacity` events behind: the
    /// stream ends here rather than grow without bound or drop events silently. Open a new
    /// stream with [`crate::Client::events`] and page what was missed with
    /// [`crate::Channel::history`] or [`crate::Channel::log`].
    Lagged { capacity: usize },
    /// A server push this SDK's protocol types do not describe, as JSON (the E2EE events
    /// `dm` and `keys_needed` of PROTOCOL.md §7, read by [`crate::e2ee`]).
    Raw(Arc<serde_json::Value>),
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
/// Each stream has its own bounded queue ([`crate::ClientConfig::event_buffer`] events), so a
/// slow reader never makes the connection wait (which could stall the replies its own task is
/// awaiting) and never grows memory without bound. A reader that falls that far behind gets a
/// final [`ClientEvent::Lagged`] and the stream ends: nothing is ever skipped silently.
/// The stream also ends when the client is closed.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<ClientEvent>,
    lagged: Arc<AtomicBool>,
    capacity: usize,
}

/// The connection's end of an [`EventStream`].
#[derive(Debug)]
pub(crate) struct Listener {
    tx: mpsc::Sender<ClientEvent>,
    lagged: Arc<AtomicBool>,
}

impl Listener {
    /// Queues an event; false once the stream is gone or has lagged (then drop the listener).
    pub(crate) fn offer(&self, event: &ClientEvent) -> bool {
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A new stream and the connection's end of it.
pub(crate) fn stream(capacity: usize) -> (Listener, EventStream) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let lagged = Arc::new(AtomicBool::new(false));
    (Listener { tx, lagged: lagged.clone() }, EventStream { rx, lagged, capacity })
}

impl EventStream {
    fn end(&self) -> Option<ClientEvent> {
        self.lagged.swap(false, Ordering::AcqRel).then_some(ClientEvent::Lagged { capacity: self.capacity })
    }

    /// The next event, or `None` once the client is closed (or after [`ClientEvent::Lagged`]).
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        match self.rx.recv().await {
            Some(e) => Some(e),
            None => self.end(),
        }
    }
}

impl Stream for EventStream {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(self.end()),
            other => other,
        }
    }
}
