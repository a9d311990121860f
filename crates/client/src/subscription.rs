//! Pub/sub subjects: a [`Subscription`] is a stream of [`Publication`]s.

use crate::connection::Command;
use futures::Stream;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// One message published on a subject (never stored by the server).
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub subject: String,
    /// The publisher's user id.
    pub from: String,
    pub data: Value,
}

/// The publications of one subject, from [`crate::Client::subscribe`].
///
/// The client subscribes again after every reconnect. Publications sent while the client
/// was disconnected are lost: subjects are live-only by design. Dropping the subscription
/// unsubscribes (on the server too when it was the last one of its subject). The stream
/// ends when the client is closed.
///
/// The queue holds [`crate::ClientConfig::event_buffer`] publications; while it is full, new
/// ones are dropped and counted ([`Subscription::dropped`]): presence and cursors want the
/// latest state, not an ever-growing backlog.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) subject: String,
    pub(crate) sub_id: u64,
    pub(crate) rx: mpsc::Receiver<Publication>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// The connection's end of a [`Subscription`].
#[derive(Debug)]
pub(crate) struct SubscriptionTx {
    pub(crate) tx: mpsc::Sender<Publication>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl SubscriptionTx {
    /// Queues a publication (or counts it as dropped); false once the subscription is gone.
    pub(crate) fn offer(&self, p: &Publication) -> bool {
        match self.tx.try_send(p.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl Subscription {
    /// The subject subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publications dropped so far because this subscription's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next publication, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Publication> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = Publication;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Publication>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The client may be gone already; then there is nothing to unsubscribe from.
        let _ = self
            .commands
            .send(Command::Unsubscribe { subject: std::mem::take(&mut self.subject), sub_id: self.sub_id });
    }
}
