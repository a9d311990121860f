//! Pub/sub subjects: a [`Subscription`] is a stream of [`Publication`]s.

use crate::connection::Command;
use futures::Stream;
use serde_json::Value;
use std::pin::Pin;
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
#[derive(Debug)]
pub struct Subscription {
    pub(crate) subject: String,
    pub(crate) sub_id: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<Publication>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The subject subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
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
