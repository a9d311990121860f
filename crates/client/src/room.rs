//! Rooms (PROTOCOL.md §8): [`Room`] handles from [`crate::Client::room`], room messages with
//! binary attachments, and streams: [`StreamWriter`] (writes wait for the reader's credit)
//! and [`StreamReader`] (a `futures::Stream` of chunks that grants credit as it is consumed).
//!
//! Room requests bypass the session's resend logic: a participant lives as long as one
//! connection, so a room request in flight when the connection drops fails with
//! [`ClientError::Disconnected`], and every [`RoomEvents`] stream then yields
//! [`RoomIncoming::Disconnected`]: enter again after the reconnect.
//!
//! Inside the connection task, [`RoomDriver`] sorts room replies (by their id range) and
//! room events (by their name) out of the socket before the session sees them.

use crate::client::Client;
use crate::error::ClientError;
use bytes::Bytes;
use futures::Stream;
use herald_proto::frames::{encode_binary, parse_binary_frame};
use herald_proto::rooms::{
    DEFAULT_STREAM_CREDIT, EnterOk, Participant, ParticipantsOk, RoomEvent, RoomRequest, StreamOpenOk,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Room request ids start here, far above the session's, so a reply is sorted by its id.
const FIRST_ROOM_ID: u64 = 1 << 40;

/// Room events queued per listener; a listener further behind is dropped (its stream ends
/// with [`RoomIncoming::Lagged`]).
const LISTENER_BUFFER: usize = 4096;

/// Stream events that arrived before their stream was routed (a writer's first credit comes
/// before the `stream.open` reply), kept per stream, at most this many streams.
const EARLY_STREAMS: usize = 256;

/// Largest chunk a [`StreamWriter`] sends in one frame.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// One thing a room listener receives.
// `Event` is the common case; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RoomIncoming {
    /// A room event; `bytes` are those of a binary frame (an attachment, a chunk).
    Event { event: RoomEvent, bytes: Option<Bytes> },
    /// The connection dropped: every participant of this client is gone; enter again.
    Disconnected,
    /// This listener fell [`LISTENER_BUFFER`] events behind and was dropped.
    Lagged,
}

pub(crate) type RoomTx = mpsc::Sender<RoomIncoming>;

/// What room handles ask of the connection task.
pub(crate) enum RoomCommand {
    Request {
        request: RoomRequest,
        bytes: Option<Bytes>,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    Listen(RoomTx),
    /// Routes the events of one stream to `tx` (and what arrived for it already).
    Route {
        stream_id: String,
        tx: RoomTx,
    },
}

/// The room part of the connection task.
pub(crate) struct RoomDriver {
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>,
    listeners: Vec<RoomTx>,
    routes: HashMap<String, RoomTx>,
    early: HashMap<String, Vec<RoomIncoming>>,
}

impl Default for RoomDriver {
    fn default() -> Self {
        RoomDriver {
            next_id: FIRST_ROOM_ID,
            pending: HashMap::new(),
            listeners: Vec::new(),
            routes: HashMap::new(),
            early: HashMap::new(),
        }
    }
}

/// The id of a reply frame, read from its start (`{"id":N,…`), without parsing the frame.
fn reply_id(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"id\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Whether a text frame is a room event (the server writes the `event` tag first).
fn is_room_event(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("{\"event\":\"") else { return false };
    herald_proto::rooms::ROOM_EVENTS.iter().any(|e| rest.starts_with(e) && rest[e.len()..].starts_with('"'))
}

fn stream_of(event: &RoomEvent) -> Option<&str> {
    match event {
        RoomEvent::StreamChunk { stream_id, .. }
        | RoomEvent::StreamCredit { stream_id, .. }
        | RoomEvent::StreamClosed { stream_id }
        | RoomEvent::StreamAborted { stream_id, .. } => Some(stream_id),
        _ => None,
    }
}

impl RoomDriver {
    /// Takes a text frame if it is a room reply or event; false leaves it to the session.
    pub(crate) fn handle_text(&mut self, text: &str) -> bool {
        if let Some(id) = reply_id(text) {
            if id < FIRST_ROOM_ID {
                return false;
            }
            match serde_json::from_str::<herald_proto::frames::Reply>(text) {
                Ok(reply) => self.answer(id, reply.ok, reply.error),
                Err(e) => tracing::warn!(error = %e, "unreadable room reply ignored"),
            }
            return true;
        }
        if !is_room_event(text) {
            return false;
        }
        match serde_json::from_str::<RoomEvent>(text) {
            Ok(event) => self.dispatch(RoomIncoming::Event { event, bytes: None }),
            Err(e) => tracing::warn!(error = %e, "unreadable room event ignored"),
        }
        true
    }

    /// A binary frame: a room event with bytes, or the reply to a binary request.
    pub(crate) fn handle_binary(&mut self, frame: &Bytes) {
        let Ok((header, body)) = parse_binary_frame(frame) else {
            tracing::warn!("unreadable binary frame ignored");
            return;
        };
        let start = frame.len() - body.len();
        let header = Value::Object(header);
        if header.get("event").is_some() {
            match serde_json::from_value::<RoomEvent>(header) {
                Ok(event) => self.dispatch(RoomIncoming::Event { event, bytes: Some(frame.slice(start..)) }),
                Err(e) => tracing::warn!(error = %e, "unreadable binary room event ignored"),
            }
        }
    }

    fn answer(&mut self, id: u64, ok: Option<Value>, error: Option<herald_proto::ErrorDetail>) {
        let Some(tx) = self.pending.remove(&id) else { return };
        let result = match (ok, error) {
            (_, Some(e)) => Err(ClientError::Server(e)),
            (Some(ok), None) => Ok(ok),
            (None, None) => Err(ClientError::Protocol(format!("reply {id} has neither ok nor error"))),
        };
        let _ = tx.send(result);
    }

    fn dispatch(&mut self, incoming: RoomIncoming) {
        if let RoomIncoming::Event { event, .. } = &incoming
            && let Some(stream_id) = stream_of(event)
        {
            let stream_id = stream_id.to_owned();
            let ends = matches!(event, RoomEvent::StreamClosed { .. } | RoomEvent::StreamAborted { .. });
            match self.routes.get(&stream_id) {
                Some(tx) => {
                    if tx.try_send(incoming).is_err() || ends {
                        self.routes.remove(&stream_id);
                    }
                }
                None if self.early.len() < EARLY_STREAMS || self.early.contains_key(&stream_id) => {
                    let list = self.early.entry(stream_id).or_default();
                    if list.len() < LISTENER_BUFFER {
                        list.push(incoming);
                    }
                }
                None => tracing::debug!(stream_id, "event of an unknown stream ignored"),
            }
            return;
        }
        self.listeners.retain(|tx| match tx.try_send(incoming.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Lagging: the listener is told once it drains (best effort) and dropped.
                let _ = tx.try_send(RoomIncoming::Lagged);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// A command while connected: the frame to write, if any.
    pub(crate) fn command(&mut self, cmd: RoomCommand) -> Option<Message> {
        match cmd {
            RoomCommand::Request { request, bytes, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                let frame = herald_proto::rooms::RoomRequestFrame { id: Value::from(id), request };
                let header = match serde_json::to_vec(&frame) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ =
                            reply.send(Err(ClientError::Protocol(format!("cannot encode the request: {e}"))));
                        return None;
                    }
                };
                self.pending.insert(id, reply);
                Some(match bytes {
                    Some(b) => Message::Binary(Bytes::from(encode_binary(&header, &b))),
                    None => Message::Text(String::from_utf8_lossy(&header).into_owned().into()),
                })
            }
            RoomCommand::Listen(tx) => {
                self.listeners.push(tx);
                None
            }
            RoomCommand::Route { stream_id, tx } => {
                for incoming in self.early.remove(&stream_id).unwrap_or_default() {
                    let _ = tx.try_send(incoming);
                }
                self.routes.insert(stream_id, tx);
                None
            }
        }
    }

    /// A command while offline: room requests fail at once (a participant does not outlive
    /// its connection).
    pub(crate) fn offline(&mut self, cmd: RoomCommand) {
        match cmd {
            RoomCommand::Request { reply, .. } => {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
            other => {
                let _ = self.command(other);
            }
        }
    }

    /// The connection dropped: requests in flight fail, listeners and streams hear of it.
    pub(crate) fn disconnected(&mut self) {
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Err(ClientError::Disconnected));
        }
        for (_, tx) in self.routes.drain() {
            let _ = tx.try_send(RoomIncoming::Disconnected);
        }
        self.early.clear();
        self.listeners.retain(|tx| tx.try_send(RoomIncoming::Disconnected).is_ok());
    }
}

/// A channel used as a room, from [`Client::room`].
#[derive(Debug, Clone)]
pub struct Room {
    client: Client,
    channel: String,
}

/// A stream of every [`RoomIncoming`] of the client's rooms from now on (stream chunks go
/// to their [`StreamReader`] / [`StreamWriter`] instead).
#[derive(Debug)]
pub struct RoomEvents {
    rx: mpsc::Receiver<RoomIncoming>,
    channel: Option<String>,
}

fn event_channel(event: &RoomEvent) -> Option<&str> {
    match event {
        RoomEvent::ParticipantAdded { channel, .. }
        | RoomEvent::ParticipantUpdated { channel, .. }
        | RoomEvent::ParticipantRemoved { channel, .. }
        | RoomEvent::PresenceCount { channel, .. }
        | RoomEvent::RoomMessage { channel, .. }
        | RoomEvent::StreamRequest { channel, .. } => Some(channel),
        _ => None,
    }
}

impl Stream for RoomEvents {
    type Item = RoomIncoming;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomIncoming>> {
        loop {
            let item = match self.rx.poll_recv(cx) {
                Poll::Ready(Some(i)) => i,
                other => return other,
            };
            if let (Some(want), RoomIncoming::Event { event, .. }) = (&self.channel, &item)
                && event_channel(event).is_some_and(|c| c != want)
            {
                continue;
            }
            return Poll::Ready(Some(item));
        }
    }
}

impl RoomEvents {
    /// The next item, or `None` once the client is closed.
    pub async fn next(&mut self) -> Option<RoomIncoming> {
        futures::StreamExt::next(self).await
    }
}

impl Client {
    /// The room of a channel (its id, or its name) that the caller is a member of.
    pub fn room(&self, channel: &str) -> Room {
        Room { client: self.clone(), channel: channel.to_owned() }
    }

    /// Every room event of every room of this client (see [`Room::events`] for one room).
    pub fn room_events(&self) -> RoomEvents {
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        let _ = self.command(crate::connection::Command::Room(RoomCommand::Listen(tx)));
        RoomEvents { rx, channel: None }
    }

    pub(crate) async fn room_request(
        &self,
        request: RoomRequest,
        bytes: Option<Bytes>,
    ) -> Result<Value, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(crate::connection::Command::Room(RoomCommand::Request { request, bytes, reply }))?;
        let timeout = self.config().request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    pub(crate) async fn room_call<T: serde::de::DeserializeOwned>(
        &self,
        request: RoomRequest,
        bytes: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let op = request.op();
        let ok = self.room_request(request, bytes).await?;
        serde_json::from_value(ok)
            .map_err(|e| ClientError::Protocol(format!("unreadable reply to {op}: {e}")))
    }
}

impl Room {
    /// The channel reference this handle was made with.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Enters the room with `attributes` (at most 4 KiB serialized): the caller's
    /// participant id and the participants (or their count, in a large room). Subscribe to
    /// [`Room::events`] first to miss nothing after it.
    pub async fn enter(&self, attributes: Map<String, Value>) -> Result<EnterOk, ClientError> {
        let req = RoomRequest::Enter { channel: self.channel.clone(), attributes: Some(attributes) };
        self.client.room_call(req, None).await
    }

    /// Replaces the caller's attributes.
    pub async fn update(&self, attributes: Map<String, Value>) -> Result<(), ClientError> {
        self.client
            .room_request(RoomRequest::Update { channel: self.channel.clone(), attributes }, None)
            .await?;
        Ok(())
    }

    pub async fn leave(&self) -> Result<(), ClientError> {
        self.client.room_request(RoomRequest::Leave { channel: self.channel.clone() }, None).await?;
        Ok(())
    }

    /// One page of participants after `after` (a participant id), in id order.
    pub async fn participants_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ParticipantsOk, ClientError> {
        let req = RoomRequest::Participants {
            channel: self.channel.clone(),
            after: after.map(str::to_owned),
            limit: Some(limit),
        };
        self.client.room_call(req, None).await
    }

    /// Every participant, paging through the list.
    pub async fn participants(&self) -> Result<Vec<Participant>, ClientError> {
        let mut all: Vec<Participant> = Vec::new();
        loop {
            let after = all.last().map(|p| p.participant_id.clone());
            let page = self.participants_page(after.as_deref(), 1000).await?;
            let more = page.has_more && !page.participants.is_empty();
            all.extend(page.participants);
            if !more {
                return Ok(all);
            }
        }
    }

    /// A direct message to one participant, with an optional attachment (a binary frame).
    pub async fn send(
        &self,
        to: &str,
        kind: &str,
        message: Value,
        attachment: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let req = RoomRequest::Send {
            channel: self.channel.clone(),
            to: to.to_owned(),
            kind: kind.to_owned(),
            message,
        };
        self.client.room_request(req, attachment).await?;
        Ok(())
    }

    /// A message to every other participant, with an optional attachment.
    pub async fn broadcast(
        &self,
        kind: &str,
        message: Value,
        attachment: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let req = RoomRequest::Broadcast { channel: self.channel.clone(), kind: kind.to_owned(), message };
        self.client.room_request(req, attachment).await?;
        Ok(())
    }

    /// This room's events from now on (participants, messages, stream requests).
    pub fn events(&self) -> RoomEvents {
        let mut events = self.client.room_events();
        // Events carry the channel id; a name is matched once the first event names an id
        // (see `RoomEvents`): with a name, every room event of the client passes.
        events.channel = herald_proto::names::looks_like_uuid(&self.channel).then(|| self.channel.clone());
        events
    }

    /// Calls `f` with every room message (and its attachment) of this room, on a task that
    /// lives as long as the returned handle.
    pub fn on_message(
        &self,
        f: impl Fn(&Participant, &str, &Value, Option<&Bytes>) + Send + 'static,
    ) -> OnMessage {
        let mut events = self.events();
        let task = tokio::spawn(async move {
            while let Some(item) = events.next().await {
                if let RoomIncoming::Event {
                    event: RoomEvent::RoomMessage { from, kind, message, .. },
                    bytes,
                } = &item
                {
                    f(from, kind, message, bytes.as_ref());
                }
            }
        });
        OnMessage { task }
    }

    /// Opens a stream to participant `to`: resolves once it accepts (`forbidden` if it
    /// rejects, `not_found` if it is gone or does not answer in 30 s).
    pub async fn create_stream(&self, to: &str, header: Value) -> Result<StreamWriter, ClientError> {
        let req = RoomRequest::StreamOpen { channel: self.channel.clone(), to: to.to_owned(), header };
        let (reply, rx) = oneshot::channel();
        self.client.command(crate::connection::Command::Room(RoomCommand::Request {
            request: req,
            bytes: None,
            reply,
        }))?;
        // The reader may take up to the server's 30 s to answer.
        let wait = self.client.config().request_timeout.max(std::time::Duration::from_secs(35));
        let ok = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => return Err(ClientError::Timeout(wait)),
        };
        let ok: StreamOpenOk = serde_json::from_value(ok)
            .map_err(|e| ClientError::Protocol(format!("unreadable stream.open reply: {e}")))?;
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        self.client.command(crate::connection::Command::Room(RoomCommand::Route {
            stream_id: ok.stream_id.clone(),
            tx,
        }))?;
        Ok(StreamWriter {
            client: self.client.clone(),
            stream_id: ok.stream_id,
            credit: 0,
            events: rx,
            closed: false,
        })
    }

    /// Accepts a `stream_request` with a credit window (default 1 MiB): the returned reader
    /// yields its chunks and grants the writer more credit as they are consumed.
    pub async fn accept(&self, stream_id: &str, credit: Option<u64>) -> Result<StreamReader, ClientError> {
        let window = credit.unwrap_or(DEFAULT_STREAM_CREDIT).max(1);
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        self.client.command(crate::connection::Command::Room(RoomCommand::Route {
            stream_id: stream_id.to_owned(),
            tx,
        }))?;
        let req = RoomRequest::StreamAccept { stream_id: stream_id.to_owned(), credit: Some(window) };
        self.client.room_request(req, None).await?;
        Ok(StreamReader {
            client: self.client.clone(),
            stream_id: stream_id.to_owned(),
            window,
            consumed: 0,
            events: rx,
            done: false,
        })
    }

    /// Rejects a `stream_request`: its writer gets `forbidden`.
    pub async fn reject(&self, stream_id: &str) -> Result<(), ClientError> {
        let req = RoomRequest::StreamReject { stream_id: stream_id.to_owned(), credit: None };
        self.client.room_request(req, None).await?;
        Ok(())
    }
}

/// Keeps an [`Room::on_message`] callback running; dropping it stops the callback.
#[derive(Debug)]
pub struct OnMessage {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OnMessage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writing side of a stream. [`StreamWriter::write`] sends within the reader's credit
/// and waits for more, so a slow reader paces it.
#[derive(Debug)]
pub struct StreamWriter {
    client: Client,
    stream_id: String,
    credit: u64,
    events: mpsc::Receiver<RoomIncoming>,
    closed: bool,
}

fn stream_gone(why: &str) -> ClientError {
    ClientError::Server(herald_proto::ErrorDetail {
        code: herald_proto::ErrorCode::NotFound,
        message: why.to_owned(),
        retry_after_ms: None,
    })
}

impl StreamWriter {
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Credit the reader has granted and this writer not used yet.
    pub fn credit(&self) -> u64 {
        self.credit
    }

    fn take_event(&mut self, item: RoomIncoming) -> Result<(), ClientError> {
        match item {
            RoomIncoming::Event { event: RoomEvent::StreamCredit { bytes, .. }, .. } => {
                self.credit = self.credit.saturating_add(bytes);
                Ok(())
            }
            RoomIncoming::Event { event: RoomEvent::StreamAborted { reason, .. }, .. } => {
                self.closed = true;
                Err(stream_gone(&format!("stream aborted: {reason}")))
            }
            RoomIncoming::Event { event: RoomEvent::StreamClosed { .. }, .. } => {
                self.closed = true;
                Err(stream_gone("the reader closed the stream"))
            }
            RoomIncoming::Disconnected => {
                self.closed = true;
                Err(ClientError::Disconnected)
            }
            _ => Ok(()),
        }
    }

    /// Writes `chunk` (in frames of at most [`CHUNK_BYTES`]), waiting for credit as needed.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            // Take every credit already announced, then wait if there is none.
            while let Ok(item) = self.events.try_recv() {
                self.take_event(item)?;
            }
            while self.credit == 0 {
                match self.events.recv().await {
                    Some(item) => self.take_event(item)?,
                    None => return Err(ClientError::Closed),
                }
            }
            if self.closed {
                return Err(stream_gone("the stream is closed"));
            }
            let n = rest.len().min(CHUNK_BYTES).min(usize::try_from(self.credit).unwrap_or(usize::MAX));
            let (now, later) = rest.split_at(n);
            let req = RoomRequest::StreamChunk { stream_id: self.stream_id.clone(), header: None };
            self.client.room_request(req, Some(Bytes::copy_from_slice(now))).await?;
            self.credit -= n as u64;
            rest = later;
        }
        Ok(())
    }

    /// Ends the stream: the reader's stream ends after the last chunk.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.closed = true;
        self.client
            .room_request(RoomRequest::StreamClose { stream_id: self.stream_id.clone() }, None)
            .await?;
        Ok(())
    }
}

/// The reading side of a stream: chunks in order; each consumed chunk counts toward the next
/// credit grant (half the window at a time), so the writer runs at the reader's pace.
#[derive(Debug)]
pub struct StreamReader {
    client: Client,
    stream_id: String,
    window: u64,
    consumed: u64,
    events: mpsc::Receiver<RoomIncoming>,
    done: bool,
}

impl StreamReader {
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn grant(&mut self) {
        if self.consumed >= self.window / 2 {
            let bytes = std::mem::take(&mut self.consumed);
            let client = self.client.clone();
            let req = RoomRequest::StreamCredit { stream_id: self.stream_id.clone(), bytes };
            // Fire and forget, in order with every other command of the connection.
            let (reply, _) = oneshot::channel();
            let _ = client.command(crate::connection::Command::Room(RoomCommand::Request {
                request: req,
                bytes: None,
                reply,
            }));
        }
    }
}

impl Stream for StreamReader {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let item = match self.events.poll_recv(cx) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(ClientError::Closed)));
                }
                Poll::Pending => return Poll::Pending,
            };
            match item {
                RoomIncoming::Event { event: RoomEvent::StreamChunk { .. }, bytes } => {
                    let bytes = bytes.unwrap_or_default();
                    self.consumed += bytes.len() as u64;
                    self.grant();
                    return Poll::Ready(Some(Ok(bytes)));
                }
                RoomIncoming::Event { event: RoomEvent::StreamClosed { .. }, .. } => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                RoomIncoming::Event { event: RoomEvent::StreamAborted { reason, .. }, .. } => {
                    self.done = true;
                    return Poll::Ready(Some(Err(stream_gone(&format!("stream aborted: {reason}")))));
                }
                RoomIncoming::Disconnected => {
                    self.done = true;
                    return Poll::Ready(Some(Err(ClientError::Disconnected)));
                }
                _ => continue,
            }
        }
    }
}
