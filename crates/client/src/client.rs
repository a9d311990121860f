//! [`Client`]: the handle users hold, and [`Channels`], its channel operations.

use crate::channel::Channel;
use crate::config::ClientConfig;
use crate::connection::{Command, Driver, Endpoint, Nodes};
use crate::error::ClientError;
use crate::event::{ClientEvent, EventStream};
use crate::rest::Rest;
use crate::subscription::Subscription;
use crate::token::CurrentToken;
use herald_proto::frames::{ChannelListOk, ChannelOk, ConnectOk, CreateChannel, DirectoryOk, Request};
use herald_proto::{ChannelSummary, DirectoryEntry, Hash32, UserInfo};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// A connection to a Herald server that reconnects and resumes by itself.
///
/// Cheap to clone: clones share one connection. The connection closes when the last clone
/// (and the last [`Channel`] or [`Subscription`] made from it) is dropped, or on
/// [`Client::close`].
///
/// Requests sent while the client is reconnecting wait for the connection. Requests in
/// flight when it drops fail with [`ClientError::Disconnected`] (they may or may not have
/// been applied), except `message.send` with a `client_id` (every [`Channel::send`] has
/// one), which is resent after the reconnect and answered once.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    rest: Rest,
    connected: ConnectOk,
    config: ClientConfig,
    next_sub: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl Client {
    /// Connects with the default configuration. See [`Client::connect_with`].
    pub async fn connect(url: &str, token: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, token, ClientConfig::default()).await
    }

    /// Connects to `url` (`http://host:port` or `ws://host:port`; the WebSocket is at
    /// `/v1/ws`, REST under `/v1`) and sends `connect` with `token`. Fails if this first
    /// attempt fails; later drops are reconnected with backoff. With
    /// [`ClientConfig::token_provider`], every attempt asks the provider for its token and
    /// `token` is only the fallback of the first attempt (it may be empty).
    pub async fn connect_with(url: &str, token: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(url)?;
        let fallbacks =
            config.fallback_urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let token = CurrentToken::new(token.to_owned());
        let tls = crate::tls::client_config(&config.root_certificates)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| ClientError::Tls(format!("cannot build the HTTP client: {e}")))?;
        let base = crate::rest::CurrentBase::new(endpoint.http.clone());
        let rest = Rest::new(http, base.clone(), token.clone());
        let nodes = Nodes { first: endpoint, fallbacks, rest_base: base };
        let driver = Driver::new(nodes, token, tls, config.clone(), rx, ready_tx);
        // The task ends when every handle is dropped (the command channel closes) or on
        // `close`: the `Client` owns it through `commands`.
        tokio::spawn(driver.run());
        let connected = ready_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Client {
            inner: Arc::new(Inner { commands: tx, rest, connected, config, next_sub: AtomicU64::new(1) }),
        })
    }

    /// The user the server authenticated.
    pub fn user(&self) -> &UserInfo {
        &self.inner.connected.user
    }

    /// The `connect` answer of the first connection.
    pub fn connect_info(&self) -> &ConnectOk {
        &self.inner.connected
    }

    pub(crate) fn rest(&self) -> &Rest {
        &self.inner.rest
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.inner.commands.send(cmd).map_err(|_| ClientError::Closed)
    }

    /// Every event from now on: server pushes (log events verified, deduplicated, in order),
    /// connection changes and chain errors. Each call makes an independent stream. The
    /// first stream made also gets what arrived since `connect` (up to 10,000 events),
    /// starting with [`ClientEvent::Connected`].
    pub fn events(&self) -> EventStream {
        let (listener, stream) = crate::event::stream(self.inner.config.event_buffer);
        // If the client is closed the stream simply ends.
        let _ = self.command(Command::Listen(listener));
        stream
    }

    /// Sends any request and returns its raw `ok`. While the client is reconnecting the
    /// request waits for the connection; if it times out meanwhile it is never sent.
    pub async fn request(&self, request: Request) -> Result<Value, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Request { request, reply })?;
        self.wait(rx).await
    }

    async fn wait(&self, rx: oneshot::Receiver<Result<Value, ClientError>>) -> Result<Value, ClientError> {
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Sends a request and decodes its `ok` as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T, ClientError> {
        let op = request.op();
        let ok = self.request(request).await?;
        serde_json::from_value(ok)
            .map_err(|e| ClientError::Protocol(format!("unreadable reply to {op}: {e}")))
    }

    /// `ping`: a round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request(Request::Ping {}).await.map(drop)
    }

    /// Subscribes to a subject. The subscription is renewed after every reconnect.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::channel(self.inner.config.event_buffer.max(1));
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tx = crate::subscription::SubscriptionTx { tx, dropped: dropped.clone() };
        let (reply, reply_rx) = oneshot::channel();
        let sub_id = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        self.command(Command::Subscribe { subject: subject.to_owned(), sub_id, tx, reply })?;
        let subscription = Subscription {
            subject: subject.to_owned(),
            sub_id,
            rx,
            dropped,
            commands: self.inner.commands.clone(),
        };
        // On failure the subscription is dropped, which removes it again.
        self.wait(reply_rx).await?;
        Ok(subscription)
    }

    /// Publishes `data` to every subscriber of `subject` (this client too, if subscribed).
    pub async fn publish(&self, subject: &str, data: Value) -> Result<(), ClientError> {
        self.request(Request::Publish { subject: subject.to_owned(), data }).await.map(drop)
    }

    /// Channel operations.
    pub fn channels(&self) -> Channels {
        Channels { client: self.clone() }
    }

    pub(crate) async fn chain_anchor(&self, channel: &str, after: u64) -> Option<(u64, Hash32)> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Anchor { channel: channel.to_owned(), after, reply }).ok()?;
        rx.await.ok().flatten()
    }

    pub(crate) fn emit(&self, event: ClientEvent) {
        let _ = self.command(Command::Emit(event));
    }

    /// Closes the connection. Waiting requests fail with [`ClientError::Closed`]; every
    /// stream ends. Other clones become unusable.
    pub async fn close(&self) {
        let _ = self.command(Command::Close);
        // Wait until the socket task has gone: the command channel closes with it.
        self.inner.commands.closed().await;
    }
}

/// Channel operations of a [`Client`]: `client.channels().create("project-x")`.
#[derive(Clone, Debug)]
pub struct Channels {
    client: Client,
}

impl Channels {
    /// Creates a channel named `name` (a second create of one's own name is a join).
    pub async fn create(&self, name: &str) -> Result<Channel, ClientError> {
        self.create_with(CreateChannel { name: Some(name.to_owned()), ..CreateChannel::default() }).await
    }

    /// Creates a channel with every option of `channel.create`.
    pub async fn create_with(&self, create: CreateChannel) -> Result<Channel, ClientError> {
        let ok: ChannelOk = self.client.call(Request::ChannelCreate(create)).await?;
        Ok(Channel::new(self.client.clone(), ok.channel))
    }

    /// Joins a channel by name or id.
    pub async fn join(&self, channel: &str) -> Result<Channel, ClientError> {
        let ok: ChannelOk = self.client.call(Request::ChannelJoin { channel: channel.to_owned() }).await?;
        Ok(Channel::new(self.client.clone(), ok.channel))
    }

    /// A handle to a channel the user is already a member of (by name or id), without joining
    /// it: `forbidden` if not a member, `channel_not_found` if there is no such channel.
    pub async fn get(&self, channel: &str) -> Result<Channel, ClientError> {
        let info = self.client.rest().channel(channel).await?;
        Ok(Channel::new(self.client.clone(), info))
    }

    /// The channels the user is a member of, with unread counts.
    pub async fn list(&self) -> Result<Vec<ChannelSummary>, ClientError> {
        let ok: ChannelListOk = self.client.call(Request::ChannelList {}).await?;
        Ok(ok.channels)
    }

    /// Every named channel of the app the user may join.
    pub async fn directory(&self) -> Result<Vec<DirectoryEntry>, ClientError> {
        let ok: DirectoryOk = self.client.call(Request::ChannelDirectory {}).await?;
        Ok(ok.channels)
    }

    /// Deletes a channel (by id or name).
    pub async fn delete(&self, channel: &str) -> Result<(), ClientError> {
        self.client.request(Request::ChannelDelete { channel: channel.to_owned() }).await.map(drop)
    }
}
