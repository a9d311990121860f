//! [`Channel`]: a handle on one channel the user is a member of.

use crate::client::Client;
use crate::error::ClientError;
use crate::event::ClientEvent;
use crate::history::HistoryQueryExt;
use crate::rest::{BlobRef, verify_log_page};
use futures::StreamExt;
use herald_proto::frames::{
    Event, HistoryPage, HistoryQuery, LogPage, MessageOk, ReactionOk, Request, SendMessage,
};
use herald_proto::{Channel as ChannelInfo, Message};
use serde_json::Value;

/// A channel, from `client.channels().create(…)` or `.join(…)`.
#[derive(Clone, Debug)]
pub struct Channel {
    client: Client,
    info: ChannelInfo,
}

/// A callback registered with [`Channel::on_message`]. It runs until the client closes or
/// [`Listener::cancel`] is called; dropping the handle leaves it running.
#[derive(Debug)]
pub struct Listener {
    pub(crate) task: tokio::task::AbortHandle,
}

impl Listener {
    /// Stops the callback.
    pub fn cancel(&self) {
        self.task.abort();
    }
}

/// A fresh idempotency key for `message.send`: 128 random bits in hex (32 chars, within the
/// 64-char limit of PROTOCOL.md §3).
pub(crate) fn new_client_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Channel {
    pub(crate) fn new(client: Client, info: ChannelInfo) -> Channel {
        Channel { client, info }
    }

    /// The channel id (a UUIDv7 string).
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The channel name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.info.name.as_deref()
    }

    /// The channel as the server described it when this handle was made.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// The client this handle belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn channel(&self) -> String {
        self.info.id.clone()
    }

    /// Sends a `chat.text` message. It carries a generated `client_id`, so it is resent
    /// after a reconnect and still appended at most once.
    pub async fn send(&self, content: &str) -> Result<Message, ClientError> {
        self.send_with(SendMessage { content: content.to_owned(), ..SendMessage::default() }).await
    }

    /// Sends a message with every option of `message.send`. A `client_id` is generated when
    /// `message.client_id` is `None`.
    pub async fn send_with(&self, mut message: SendMessage) -> Result<Message, ClientError> {
        if message.client_id.is_none() {
            message.client_id = Some(new_client_id());
        }
        let ok: MessageOk =
            self.client.call(Request::MessageSend { channel: self.channel(), message }).await?;
        Ok(ok.message)
    }

    /// Replaces the content of one's own message.
    pub async fn edit(&self, message_id: &str, content: &str) -> Result<Message, ClientError> {
        let ok: MessageOk = self
            .client
            .call(Request::MessageEdit {
                channel: self.channel(),
                message_id: message_id.to_owned(),
                content: content.to_owned(),
                epoch: None,
            })
            .await?;
        Ok(ok.message)
    }

    /// Hard-deletes one's own message.
    pub async fn delete_message(&self, message_id: &str) -> Result<(), ClientError> {
        self.client
            .request(Request::MessageDelete { channel: self.channel(), message_id: message_id.to_owned() })
            .await
            .map(drop)
    }

    /// Adds a reaction; returns its id.
    pub async fn react(&self, message_id: &str, emoji: &str) -> Result<String, ClientError> {
        let ok: ReactionOk = self
            .client
            .call(Request::ReactionAdd {
                channel: self.channel(),
                message_id: message_id.to_owned(),
                emoji: emoji.to_owned(),
            })
            .await?;
        Ok(ok.reaction_id)
    }

    /// Removes a reaction by its id.
    pub async fn unreact(&self, reaction_id: &str) -> Result<(), ClientError> {
        self.client
            .request(Request::ReactionRemove { channel: self.channel(), reaction_id: reaction_id.to_owned() })
            .await
            .map(drop)
    }

    /// Marks everything up to `message_id` read.
    pub async fn read(&self, message_id: &str) -> Result<(), ClientError> {
        self.client
            .request(Request::Read { channel: self.channel(), message_id: message_id.to_owned() })
            .await
            .map(drop)
    }

    /// Tells the other members the user is (or stopped) typing.
    pub async fn typing(&self, is_typing: bool) -> Result<(), ClientError> {
        self.client.request(Request::Typing { channel: self.channel(), is_typing }).await.map(drop)
    }

    /// Sends an unstored `ephemeral` event to the other members.
    pub async fn ephemeral(&self, subject: &str, data: Value) -> Result<(), ClientError> {
        self.client
            .request(Request::Ephemeral { channel: self.channel(), subject: subject.to_owned(), data })
            .await
            .map(drop)
    }

    /// A page of messages: `HistoryQuery::latest(100)`, `::before(seq, n)`, `::after(seq, n)`
    /// (with [`crate::HistoryQueryExt`] in scope).
    pub async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, ClientError> {
        self.client.call(Request::History { channel: self.channel(), query }).await
    }

    /// Raw log entries after `after`, verified link by link (and against the chain head this
    /// client has verified, where they meet). A broken link fails with
    /// [`ClientError::Chain`] and is also delivered as [`ClientEvent::ChainError`].
    pub async fn log(&self, after: u64, limit: u32) -> Result<LogPage, ClientError> {
        let page = self.client.rest().log(self.id(), after, limit).await?;
        let known = self.client.chain_anchor(self.id(), after).await;
        if let Err(e) = verify_log_page(self.id(), after, &page, known) {
            self.client.emit(ClientEvent::ChainError(e.clone()));
            return Err(ClientError::Chain(e));
        }
        Ok(page)
    }

    /// Raw log entries after `after`, exactly as the server sent them, NOT verified: for tools
    /// that check the chain themselves (`herald verify`). Use [`Channel::log`] otherwise.
    pub async fn raw_log(&self, after: u64, limit: u32) -> Result<LogPage, ClientError> {
        self.client.rest().log(self.id(), after, limit).await
    }

    /// Leaves the channel.
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.client.request(Request::ChannelLeave { channel: self.channel() }).await.map(drop)
    }

    /// Adds a user to the channel.
    pub async fn add_member(&self, user: &str) -> Result<(), ClientError> {
        self.client
            .request(Request::ChannelAddMember { channel: self.channel(), user: user.to_owned() })
            .await
            .map(drop)
    }

    /// Removes a user from the channel.
    pub async fn remove_member(&self, user: &str) -> Result<(), ClientError> {
        self.client
            .request(Request::ChannelRemoveMember { channel: self.channel(), user: user.to_owned() })
            .await
            .map(drop)
    }

    /// Uploads a blob (`PUT /v1/channels/{id}/blobs`).
    pub async fn put_blob(&self, bytes: impl Into<Vec<u8>>) -> Result<BlobRef, ClientError> {
        self.client.rest().put_blob(self.id(), bytes.into()).await
    }

    /// Downloads a blob by its id.
    pub async fn get_blob(&self, blob_id: &str) -> Result<Vec<u8>, ClientError> {
        self.client.rest().get_blob(self.id(), blob_id).await
    }

    /// Calls `f` with every new message of this channel (verified, once each, in order),
    /// from a task of its own. Must be called within a Tokio runtime. If `f` is so slow that
    /// its event stream lags, the listener opens a new stream and pages the gap from history,
    /// so no message is skipped.
    pub fn on_message<F>(&self, mut f: F) -> Listener
    where
        F: FnMut(Message) + Send + 'static,
    {
        let mut events = self.client.events();
        let channel = self.clone();
        let task = tokio::spawn(async move {
            let mut last = 0u64;
            while let Some(event) = events.next().await {
                match event {
                    ClientEvent::Event(event) => {
                        if let Event::Message { channel: c, message, .. } = *event
                            && c == channel.info.id
                            && message.seq > last
                        {
                            last = message.seq;
                            f(message);
                        }
                    }
                    ClientEvent::Lagged { .. } => {
                        // New stream first, so nothing arriving while we page is lost.
                        events = channel.client.events();
                        loop {
                            let page = match channel.history(HistoryQuery::after(last, 500)).await {
                                Ok(p) => p,
                                Err(e) => {
                                    tracing::warn!(error = %e, "on_message: cannot page the gap");
                                    break;
                                }
                            };
                            for m in page.messages {
                                if m.seq > last {
                                    last = m.seq;
                                    f(m);
                                }
                            }
                            if !page.has_more {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        Listener { task: task.abort_handle() }
    }
}
