//! The socket task: one per [`crate::Client`], the only owner of the WebSocket.
//!
//! It connects, feeds every frame to the [`Session`], writes what the session asks for, and
//! fans events out to listeners and subscriptions. When the connection drops it waits a
//! backoff (serving commands meanwhile: requests made offline are queued by the session) and
//! reconnects with the resume points. It stops when the client is dropped or closed, when
//! the server refuses the token (close code 4401 or an `unauthorized` reply to `connect`),
//! or after `max_reconnect_attempts`. With a token provider it asks for a token before every
//! attempt and refreshes it on the open connection (`auth.refresh`) before it expires; a 4401
//! close after `connect` (the token ran out) is then reconnected with a fresh token, and only
//! an `unauthorized` reply to `connect` stops it.

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::event::ClientEvent;
use crate::session::{Output, Session};
use crate::subscription::Publication;
use crate::token::{CurrentToken, TokenFuture, TokenProvider, jwt_exp, now_ms, refresh_delay};
use futures::{SinkExt, StreamExt};
use herald_proto::frames::{ConnectOk, Event, Request};
use herald_proto::{ErrorCode, Hash32};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Close code of an authentication failure: never reconnect after it.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// How many events wait for the first listener at most.
const BACKLOG_CAP: usize = 10_000;

pub(crate) type Waiter = oneshot::Sender<Result<Value, ClientError>>;

/// The WebSocket and REST addresses derived from the URL given to `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `ws://host:port/v1/ws`
    pub ws: String,
    /// `http://host:port` (REST paths are appended, starting with `/v1`).
    pub http: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let invalid = |reason| ClientError::InvalidUrl { url: url.to_owned(), reason };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| invalid("expected http://, https://, ws:// or wss://"))?;
        let (ws, http) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("ws", "http"),
            "https" | "wss" => ("wss", "https"),
            _ => return Err(invalid("expected http://, https://, ws:// or wss://")),
        };
        let mut base = rest.trim_end_matches('/');
        for suffix in ["/v1/ws", "/v1"] {
            if let Some(b) = base.strip_suffix(suffix) {
                base = b;
                break;
            }
        }
        if base.is_empty() {
            return Err(invalid("missing host"));
        }
        Ok(Endpoint { ws: format!("{ws}://{base}/v1/ws"), http: format!("{http}://{base}") })
    }
}

/// When to refresh `token`: at 80% of its remaining lifetime (`None` without a readable `exp`).
fn refresh_after(token: &str) -> Option<Duration> {
    jwt_exp(token).map(|exp| refresh_delay(now_ms(), exp.saturating_mul(1000)))
}

/// When to try again after a failed refresh: closer to `exp` each time, at least 500 ms on.
fn retry_refresh(token: &str) -> tokio::time::Instant {
    let wait = refresh_after(token).unwrap_or(Duration::from_secs(5)).max(Duration::from_millis(500));
    tokio::time::Instant::now() + wait
}

/// What the client's handles ask of the socket task.
pub(crate) enum Command {
    Request {
        request: Request,
        reply: Waiter,
    },
    Subscribe {
        subject: String,
        sub_id: u64,
        tx: crate::subscription::SubscriptionTx,
        reply: Waiter,
    },
    Unsubscribe {
        subject: String,
        sub_id: u64,
    },
    Listen(crate::event::Listener),
    /// Room and stream traffic (§8), handled by [`crate::room::RoomDriver`].
    Room(crate::room::RoomCommand),
    /// Deliver an event found outside the socket (a chain error of a log page).
    Emit(ClientEvent),
    Anchor {
        channel: String,
        after: u64,
        reply: oneshot::Sender<Option<(u64, Hash32)>>,
    },
    Close,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// How one connection ended.
enum End {
    /// The client was closed or dropped.
    Closed,
    /// The token was refused.
    Unauthorized,
    /// Refused `connect` for another reason.
    Rejected(herald_proto::ErrorDetail),
    /// Network trouble or a server restart: reconnect.
    Lost { reason: String },
    /// The TLS handshake failed: reconnect (a certificate may be renewed), but a first
    /// `connect` fails with [`ClientError::Tls`].
    Tls { reason: String },
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// Where a [`Driver`] connects: the node given to `connect`, then the others in turn; and the
/// REST base it moves along with the WebSocket.
pub(crate) struct Nodes {
    pub(crate) first: Endpoint,
    pub(crate) fallbacks: Vec<Endpoint>,
    pub(crate) rest_base: crate::rest::CurrentBase,
}

pub(crate) struct Driver {
    /// The node connected to next: `endpoints[next]`.
    endpoint: Endpoint,
    /// Every node this client may use: the URL given to `connect`, then
    /// [`ClientConfig::fallback_urls`]. A lost connection moves to the next one.
    endpoints: Vec<Endpoint>,
    next: usize,
    /// Where REST calls go: moved with the WebSocket.
    rest_base: crate::rest::CurrentBase,
    /// The token of the next `connect`, shared with REST calls.
    token: CurrentToken,
    /// For `wss://`: the same rustls configuration REST uses.
    tls: Arc<rustls::ClientConfig>,
    /// Whether no connect attempt has been made yet (the given token is the fallback of the
    /// first one when the provider fails).
    first_attempt: bool,
    config: ClientConfig,
    session: Session<Waiter>,
    commands: mpsc::UnboundedReceiver<Command>,
    listeners: Vec<crate::event::Listener>,
    /// Events received before the first listener registered, handed to it: without this a
    /// user could not see what arrives between `connect` returning and `events()`.
    backlog: Option<Vec<ClientEvent>>,
    subscriptions: HashMap<String, Vec<(u64, crate::subscription::SubscriptionTx)>>,
    /// Answered with the first `connect` outcome, then `None`.
    ready: Option<oneshot::Sender<Result<ConnectOk, ClientError>>>,
    /// The first `connect` answer, kept until the resume points are seeded: `connect`
    /// returns only then, so a restart right after it cannot lose a quiet channel.
    first_ok: Option<ConnectOk>,
    /// Room replies and events, sorted out of the socket before the session sees them.
    rooms: crate::room::RoomDriver,
}

impl Driver {
    pub(crate) fn new(
        nodes: Nodes,
        token: CurrentToken,
        tls: Arc<rustls::ClientConfig>,
        config: ClientConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        ready: oneshot::Sender<Result<ConnectOk, ClientError>>,
    ) -> Driver {
        let Nodes { first: endpoint, fallbacks, rest_base } = nodes;
        let endpoints = std::iter::once(endpoint.clone()).chain(fallbacks).collect();
        let device = config.device.clone();
        let keeper_events = config.keeper_events;
        Driver {
            endpoint,
            endpoints,
            next: 0,
            rest_base,
            token,
            tls,
            first_attempt: true,
            config,
            session: {
                let mut s = Session::seeding();
                s.set_device(device);
                s.set_pass_foreign(keeper_events);
                s
            },
            commands,
            listeners: Vec::new(),
            backlog: Some(Vec::new()),
            subscriptions: HashMap::new(),
            ready: Some(ready),
            first_ok: None,
            rooms: crate::room::RoomDriver::default(),
        }
    }

    /// Answers `ready` once the first `connect` succeeded and its seeding `channel.list` was
    /// answered (or the connection it was sent on is gone).
    fn answer_ready(&mut self) {
        if !self.session.is_seeding()
            && let Some(ok) = self.first_ok.take()
            && let Some(ready) = self.ready.take()
        {
            let _ = ready.send(Ok(ok));
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let (end, was_ready) = self.connect_once().await;
            // Participants do not outlive their connection.
            self.rooms.disconnected();
            // Connected, then lost before the seeding answer: still a successful connect.
            if let Some(ok) = self.first_ok.take()
                && let Some(ready) = self.ready.take()
            {
                let _ = ready.send(Ok(ok));
            }
            let reason = match end {
                End::Closed => return self.stop(|| ClientError::Closed, "closed"),
                End::Unauthorized => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(ClientError::Unauthorized));
                    }
                    return self.stop(|| ClientError::Unauthorized, "unauthorized");
                }
                End::Rejected(detail) => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(ClientError::Server(detail)));
                        return self.stop(|| ClientError::Closed, "connect refused");
                    }
                    format!("connect refused: {detail}")
                }
                End::Tls { reason } => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(ClientError::Tls(reason)));
                        return self.stop(|| ClientError::Closed, "first connect failed");
                    }
                    reason
                }
                End::Lost { reason } => {
                    if let Some(ready) = self.ready.take() {
                        // The first attempt failed: report it instead of retrying in silence.
                        let _ = ready.send(Err(ClientError::Io(reason)));
                        return self.stop(|| ClientError::Closed, "first connect failed");
                    }
                    reason
                }
            };
            let outs = self.session.disconnected(&reason);
            self.apply_offline(outs);
            // Another node of the deployment, if the client knows several: the resume that
            // follows works against any of them (PROTOCOL.md §10).
            if self.endpoints.len() > 1 {
                self.next = (self.next + 1) % self.endpoints.len();
                self.endpoint = self.endpoints[self.next].clone();
                self.rest_base.set(self.endpoint.http.clone());
            }
            attempt = if was_ready { 1 } else { attempt + 1 };
            if let Some(max) = self.config.max_reconnect_attempts
                && attempt > max
            {
                tracing::warn!(attempts = max, "giving up reconnecting");
                return self.stop(|| ClientError::Closed, "gave up reconnecting");
            }
            let delay = self.config.backoff(attempt, rand::random::<f64>());
            tracing::debug!(?delay, attempt, %reason, "reconnecting");
            if !self.idle(delay).await {
                return self.stop(|| ClientError::Closed, "closed");
            }
        }
    }

    fn stop(&mut self, error: impl Fn() -> ClientError, reason: &str) {
        let outs = self.session.shutdown(error);
        self.apply_offline(outs);
        self.broadcast(ClientEvent::Disconnected { reason: reason.to_owned() });
        // Dropping the listeners and subscription senders ends their streams.
        self.listeners.clear();
        self.subscriptions.clear();
    }

    /// Waits `delay` while serving commands. Returns false if the client was closed.
    async fn idle(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => return false,
                    Some(cmd) => {
                        let outs = self.command(cmd);
                        self.apply_offline(outs);
                    }
                }
            }
        }
    }

    /// One connection, from the handshake until it ends. Also says whether `connect` was
    /// answered, which resets the backoff.
    async fn connect_once(&mut self) -> (End, bool) {
        let first_attempt = std::mem::replace(&mut self.first_attempt, false);
        if let Some(provider) = self.config.token_provider.clone() {
            match tokio::time::timeout(self.config.connect_timeout, provider.fetch()).await {
                Ok(Ok(token)) => self.token.set(token),
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => format!("token provider failed: {e}"),
                        _ => format!("token provider gave no token within {:?}", self.config.connect_timeout),
                    };
                    if !first_attempt || self.token.get().is_empty() {
                        return (End::Lost { reason }, false);
                    }
                    tracing::warn!(%reason, "connecting with the token given to connect");
                }
            }
        }
        let ws = match tokio::time::timeout(
            self.config.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                self.endpoint.ws.as_str(),
                None,
                false,
                Some(Connector::Rustls(self.tls.clone())),
            ),
        )
        .await
        {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => {
                if let Some(tls) = crate::tls::tls_failure(&e) {
                    let reason = format!("tls handshake with {} failed: {tls}", self.endpoint.ws);
                    return (End::Tls { reason }, false);
                }
                return (End::Lost { reason: format!("cannot connect to {}: {e}", self.endpoint.ws) }, false);
            }
            Err(_) => {
                return (
                    End::Lost { reason: format!("connecting to {} timed out", self.endpoint.ws) },
                    false,
                );
            }
        };
        let (mut sink, mut stream) = ws.split();
        let token = self.token.get();
        let connect = self.session.connect(&token);
        if let Err(e) = sink.send(Message::text(connect)).await {
            return (End::Lost { reason: format!("write: {e}") }, false);
        }
        // Keepalive: a deadline pushed back by every frame from the server; at the deadline
        // ping once, at the next one give up on the connection.
        let keepalive = self.config.keepalive.filter(|d| !d.is_zero());
        let far = Duration::from_secs(365 * 24 * 3600);
        let quiet = tokio::time::sleep(keepalive.unwrap_or(far));
        tokio::pin!(quiet);
        let mut pinged = false;
        // Token refresh (only with a provider): at 80% of the token's remaining lifetime ask
        // the provider, send `auth.refresh`, and on `ok` start over with the new token.
        let provider = self.config.token_provider.clone();
        let mut refresh_armed = provider.is_some();
        let refresh = tokio::time::sleep(refresh_after(&token).unwrap_or(far));
        tokio::pin!(refresh);
        let mut fetching: Option<TokenFuture> = None;
        let mut refreshing: Option<(String, oneshot::Receiver<Result<Value, ClientError>>)> = None;
        let end = loop {
            let outs = tokio::select! {
                () = &mut refresh, if refresh_armed => {
                    refresh_armed = false;
                    fetching = provider.as_ref().map(TokenProvider::fetch);
                    Vec::new()
                }
                fetched = async {
                    match fetching.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if fetching.is_some() => {
                    fetching = None;
                    match fetched {
                        Ok(new) => {
                            let (tx, rx) = oneshot::channel();
                            refreshing = Some((new.clone(), rx));
                            self.session.request(Request::AuthRefresh { token: new }, tx)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "token provider failed; retrying");
                            refresh.as_mut().reset(retry_refresh(&self.token.get()));
                            refresh_armed = true;
                            Vec::new()
                        }
                    }
                }
                answer = async {
                    match refreshing.as_mut() {
                        Some((_, rx)) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if refreshing.is_some() => {
                    let new = refreshing.take().map(|(t, _)| t).unwrap_or_default();
                    match answer {
                        Ok(Ok(_)) => {
                            refresh.as_mut().reset(tokio::time::Instant::now() + refresh_after(&new).unwrap_or(far));
                            self.token.set(new);
                        }
                        failed => {
                            let error = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "no answer".to_owned(),
                            };
                            tracing::warn!(%error, "auth.refresh failed; retrying");
                            refresh.as_mut().reset(retry_refresh(&self.token.get()));
                        }
                    }
                    refresh_armed = true;
                    Vec::new()
                }
                () = &mut quiet, if keepalive.is_some() => {
                    let every = keepalive.unwrap_or(far);
                    if pinged {
                        break End::Lost { reason: format!("server silent for {:?}", every * 2) };
                    }
                    if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                        break End::Lost { reason: format!("write: {e}") };
                    }
                    pinged = true;
                    quiet.as_mut().reset(tokio::time::Instant::now() + every);
                    Vec::new()
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Normal,
                                reason: "client closed".into(),
                            })))
                            .await;
                        break End::Closed;
                    }
                    Some(Command::Room(c)) => {
                        if let Some(m) = self.rooms.command(c)
                            && let Err(e) = sink.send(m).await
                        {
                            break End::Lost { reason: format!("write: {e}") };
                        }
                        Vec::new()
                    }
                    Some(cmd) => self.command(cmd),
                },
                msg = stream.next() => {
                    if let Some(every) = keepalive {
                        pinged = false;
                        quiet.as_mut().reset(tokio::time::Instant::now() + every);
                    }
                    match msg {
                    None => break End::Lost { reason: "connection closed".into() },
                    Some(Err(e)) => break End::Lost { reason: format!("read: {e}") },
                    Some(Ok(Message::Text(text))) => {
                        if self.rooms.handle_text(text.as_str()) {
                            Vec::new()
                        } else {
                            self.session.handle_text(text.as_str())
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        // After `connect` was answered, 4401 means the token expired: with a
                        // provider, reconnect with a fresh one (a refused one stops us then).
                        if code == Some(CLOSE_UNAUTHORIZED) && provider.is_none() {
                            break End::Unauthorized;
                        }
                        let reason = match frame {
                            Some(f) => format!("server closed with {}: {}", u16::from(f.code), f.reason),
                            None => "server closed".to_owned(),
                        };
                        break End::Lost { reason };
                    }
                    Some(Ok(Message::Binary(b))) => {
                        self.rooms.handle_binary(&b);
                        Vec::new()
                    }
                    Some(Ok(_)) => Vec::new(),
                    }
                },
            };
            if let Err(end) = self.apply(outs, &mut sink).await {
                break end;
            }
            self.answer_ready();
        };
        (end, self.session.is_ready())
    }

    fn command(&mut self, cmd: Command) -> Vec<Output<Waiter>> {
        match cmd {
            Command::Request { request, reply } => self.session.request(request, reply),
            Command::Subscribe { subject, sub_id, tx, reply } => {
                self.subscriptions.entry(subject.clone()).or_default().push((sub_id, tx));
                self.session.subscribe(&subject, reply)
            }
            Command::Unsubscribe { subject, sub_id } => {
                let Some(subs) = self.subscriptions.get_mut(&subject) else {
                    return Vec::new();
                };
                let before = subs.len();
                subs.retain(|(id, _)| *id != sub_id);
                if subs.len() == before {
                    return Vec::new();
                }
                if subs.is_empty() {
                    self.subscriptions.remove(&subject);
                }
                self.session.unsubscribe(&subject)
            }
            Command::Listen(listener) => {
                let backlog = self.backlog.take().unwrap_or_default();
                if backlog.iter().all(|event| listener.offer(event)) {
                    self.listeners.push(listener);
                }
                Vec::new()
            }
            Command::Emit(event) => vec![Output::Event(event)],
            Command::Room(c) => {
                self.rooms.offline(c);
                Vec::new()
            }
            Command::Anchor { channel, after, reply } => {
                let _ = reply.send(self.session.anchor(&channel, after));
                Vec::new()
            }
            // Handled by the loops, which own the socket.
            Command::Close => Vec::new(),
        }
    }

    async fn apply(&mut self, outs: Vec<Output<Waiter>>, sink: &mut Sink) -> Result<(), End> {
        for out in outs {
            match out {
                Output::Send(frame) => {
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        return Err(End::Lost { reason: format!("write: {e}") });
                    }
                }
                Output::Rejected(detail) => {
                    if detail.code == ErrorCode::Unauthorized {
                        return Err(End::Unauthorized);
                    }
                    return Err(End::Rejected(detail));
                }
                other => self.deliver(other),
            }
        }
        Ok(())
    }

    fn apply_offline(&mut self, outs: Vec<Output<Waiter>>) {
        for out in outs {
            match out {
                // The session only sends when ready; nothing to write to while offline.
                Output::Send(_) | Output::Rejected(_) => {}
                other => self.deliver(other),
            }
        }
    }

    fn deliver(&mut self, out: Output<Waiter>) {
        match out {
            Output::Reply { waiter, result } => {
                // The caller may have timed out and gone: nothing to do then.
                let _ = waiter.send(result);
            }
            Output::Event(event) => {
                if let ClientEvent::Connected(ok) = &event
                    && self.ready.is_some()
                {
                    self.first_ok = Some(ok.clone());
                }
                if let ClientEvent::Event(ev) = &event
                    && let Event::Publication { subject, from, data } = ev.as_ref()
                    && let Some(subs) = self.subscriptions.get_mut(subject)
                {
                    let publication =
                        Publication { subject: subject.clone(), from: from.clone(), data: data.clone() };
                    subs.retain(|(_, tx)| tx.offer(&publication));
                }
                self.broadcast(event);
            }
            Output::Send(_) | Output::Rejected(_) => {}
        }
    }

    fn broadcast(&mut self, event: ClientEvent) {
        if let Some(backlog) = &mut self.backlog {
            if backlog.len() < BACKLOG_CAP {
                backlog.push(event.clone());
            } else {
                tracing::warn!("no event listener: early events discarded");
                self.backlog = None;
            }
        }
        self.listeners.retain(|listener| listener.offer(&event));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints_from_urls() {
        let e = Endpoint::parse("http://127.0.0.1:7700").unwrap();
        assert_eq!(e.ws, "ws://127.0.0.1:7700/v1/ws");
        assert_eq!(e.http, "http://127.0.0.1:7700");
        let e = Endpoint::parse("ws://127.0.0.1:7700/v1/ws").unwrap();
        assert_eq!(e.ws, "ws://127.0.0.1:7700/v1/ws");
        assert_eq!(e.http, "http://127.0.0.1:7700");
        let e = Endpoint::parse("https://chat.example/").unwrap();
        assert_eq!(e.ws, "wss://chat.example/v1/ws");
        assert!(Endpoint::parse("127.0.0.1:7700").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }
}
