//! The inbound/outbound state machine of one client, with no I/O (quinn-style).
//!
//! [`Session`] takes frames in ([`Session::handle_text`]) and requests from the user
//! ([`Session::request`]) and yields [`Output`]s: text frames to write, replies to hand to
//! their waiters, and events to deliver. The socket task in `connection` only moves bytes
//! between it and the network, so everything that matters (id matching, chain verification,
//! dedupe on resume, what to resend after a reconnect) is tested here without a server.
//!
//! The waiter type `W` is whatever the driver uses to answer a caller (a oneshot sender in
//! the real client, a plain tag in tests).

use crate::error::ClientError;
use crate::event::ClientEvent;
use herald_proto::chain::Verdict;
use herald_proto::frames::{
    ChannelListOk, ConnectOk, Event, Reply, Request, ServerFrame, parse_server_frame,
};
use herald_proto::{ChainError, ChainVerifier, ErrorCode, ErrorDetail};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A caller waiting for a reply. A waiter that has given up (its request timed out) is not
/// sent at all if it was still queued: a request the caller was told failed must not be
/// applied later behind its back.
pub trait Waiter {
    /// Whether nobody awaits the reply any more.
    fn is_abandoned(&self) -> bool {
        false
    }
}

impl Waiter for &str {}

impl<T> Waiter for tokio::sync::oneshot::Sender<T> {
    fn is_abandoned(&self) -> bool {
        self.is_closed()
    }
}

/// What the driver must do after feeding the session.
#[derive(Debug)]
pub enum Output<W> {
    /// Write this text frame to the socket.
    Send(String),
    /// Answer a caller.
    Reply { waiter: W, result: Result<Value, ClientError> },
    /// Deliver an event to listeners.
    Event(ClientEvent),
    /// The server refused `connect`. With [`ErrorCode::Unauthorized`] the client must stop.
    Rejected(ErrorDetail),
}

#[derive(Debug)]
struct Pending<W> {
    request: Request,
    /// `None` for requests the session makes itself (resubscribe, unsubscribe).
    waiter: Option<W>,
}

impl<W> Pending<W> {
    /// A send with an idempotency key can be resent after a reconnect: the server answers a
    /// repeated `client_id` with the original message and appends nothing.
    fn retryable(&self) -> bool {
        matches!(&self.request, Request::MessageSend { message, .. } if message.client_id.is_some())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offline,
    Connecting { id: u64 },
    Ready,
}

/// The pure core of a client connection. See the module docs.
#[derive(Debug)]
pub struct Session<W> {
    next_id: u64,
    phase: Phase,
    /// Sent on the current connection, awaiting a reply.
    in_flight: HashMap<u64, Pending<W>>,
    /// Not sent yet (made while offline, or retried sends), in id order.
    queued: BTreeMap<u64, Pending<W>>,
    verifier: ChainVerifier,
    /// Channels whose chain head is known: the resume points.
    channels: BTreeSet<String>,
    /// Resume points of channels whose chain head is not known yet: a member channel that has
    /// delivered nothing this session (a quiet one), seeded from the `last_seq` of
    /// `channel.list`, `channel.create` or `channel.join`. A verified head always wins.
    cursors: BTreeMap<String, u64>,
    /// Whether every `connect` is followed by a `channel.list` that seeds `cursors`.
    seed_on_connect: bool,
    /// The id of that `channel.list` while it is in flight.
    seeding: Option<u64>,
    /// Subjects subscribed to, with the number of local subscriptions.
    subjects: BTreeMap<String, usize>,
    /// The verified head a channel had when the server truncated its replay: the anchor
    /// that a log page fetched to fill the hole must link to.
    truncated_at: HashMap<String, (u64, herald_proto::Hash32)>,
    /// The device declared on every `connect` (PROTOCOL.md §7), if any.
    device: Option<String>,
    /// Pass log events of channels this user is not known to be a member of through
    /// unverified and untracked: a keeper receives `member_left` of channels it is not in
    /// (PROTOCOL.md §7), a sparse subset of their log that no chain can link.
    pass_foreign: bool,
}

impl<W> Default for Session<W> {
    fn default() -> Self {
        Session {
            next_id: 1,
            phase: Phase::Offline,
            in_flight: HashMap::new(),
            queued: BTreeMap::new(),
            verifier: ChainVerifier::new(),
            channels: BTreeSet::new(),
            cursors: BTreeMap::new(),
            seed_on_connect: false,
            seeding: None,
            subjects: BTreeMap::new(),
            truncated_at: HashMap::new(),
            device: None,
            pass_foreign: false,
        }
    }
}

#[derive(Serialize)]
struct OutFrame<'a> {
    id: u64,
    #[serde(flatten)]
    request: &'a Request,
}

fn encode(id: u64, request: &Request) -> Result<String, ClientError> {
    serde_json::to_string(&OutFrame { id, request })
        .map_err(|e| ClientError::Protocol(format!("cannot encode {}: {e}", request.op())))
}

impl<W: Waiter> Session<W> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session that sends `channel.list` right after every `connect` is answered and seeds
    /// the resume point of every member channel it does not follow yet from the channel's
    /// `last_seq`. Without it, a channel that delivered nothing in this session (a quiet
    /// one) is missing from `resume`, and whatever is posted to it while the client is
    /// reconnecting is never delivered. The real client always uses this.
    pub fn seeding() -> Self {
        Session { seed_on_connect: true, ..Self::default() }
    }

    /// Declares `device` on every `connect` from now on.
    pub fn set_device(&mut self, device: Option<String>) {
        self.device = device;
    }

    /// See [`crate::ClientConfig::keeper_events`].
    pub fn set_pass_foreign(&mut self, pass: bool) {
        self.pass_foreign = pass;
    }

    /// Whether the `channel.list` that seeds the resume points is still unanswered.
    pub fn is_seeding(&self) -> bool {
        self.seeding.is_some()
    }

    /// Seeds the resume point of `channel` at `seq` unless the channel already has one: a
    /// verified head or an earlier seed is never moved, neither backwards (that would
    /// replay) nor forwards (that could skip entries still on their way).
    pub fn seed(&mut self, channel: &str, seq: u64) {
        if self.channels.contains(channel) || self.verifier.head(channel).is_some() {
            return;
        }
        self.cursors.entry(channel.to_owned()).or_insert(seq);
    }

    /// Learns resume points from the answer of a request: every channel of `channel.list`,
    /// the channel of `channel.create` and `channel.join`.
    fn learn(&mut self, request: &Request, ok: &Value) {
        match request {
            Request::ChannelList {} => {
                if let Ok(list) = serde_json::from_value::<ChannelListOk>(ok.clone()) {
                    for c in list.channels {
                        self.seed(&c.id, c.last_seq);
                    }
                }
            }
            Request::ChannelCreate(_) | Request::ChannelJoin { .. } => {
                let id = ok.pointer("/channel/id").and_then(Value::as_str);
                let seq = ok.pointer("/channel/last_seq").and_then(Value::as_u64);
                if let (Some(id), Some(seq)) = (id, seq) {
                    self.seed(id, seq);
                }
            }
            _ => {}
        }
    }

    /// Whether `connect` has been answered on the current connection.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The last delivered `seq` of every channel seen: the `resume` of the next `connect`.
    pub fn resume_points(&self) -> BTreeMap<String, u64> {
        let mut points = self.cursors.clone();
        points.extend(
            self.channels.iter().filter_map(|c| self.verifier.head(c).map(|(seq, _)| (c.clone(), seq))),
        );
        points
    }

    /// The chain verifier, e.g. to anchor the verification of a log page.
    pub fn verifier(&self) -> &ChainVerifier {
        &self.verifier
    }

    /// A verified `(seq, hash)` of `channel` to anchor a log page fetched after `after`:
    /// the chain head, or the head the channel had before a truncated replay.
    pub fn anchor(&self, channel: &str, after: u64) -> Option<(u64, herald_proto::Hash32)> {
        let head = self.verifier.head(channel);
        match self.truncated_at.get(channel) {
            Some(&(seq, hash)) if seq == after => Some((seq, hash)),
            _ => head,
        }
    }

    /// Number of requests awaiting a reply or waiting to be sent.
    pub fn pending(&self) -> usize {
        self.in_flight.len() + self.queued.len()
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts a connection: returns the `connect` frame to send first, with the resume points.
    pub fn connect(&mut self, token: &str) -> String {
        let id = self.take_id();
        self.phase = Phase::Connecting { id };
        let request = Request::Connect { token: token.to_owned(), resume: self.resume_points() };
        // Only strings and integers: encoding cannot fail.
        let frame = encode(id, &request).unwrap_or_default();
        match &self.device {
            // The device this connection speaks for (PROTOCOL.md §7): DMs and envelopes
            // addressed to it reach this connection.
            Some(device) => match serde_json::from_str::<serde_json::Map<String, Value>>(&frame) {
                Ok(mut map) => {
                    map.insert("device".into(), Value::from(device.as_str()));
                    serde_json::to_string(&map).unwrap_or(frame)
                }
                Err(_) => frame,
            },
            None => frame,
        }
    }

    /// Queues or sends a request for a caller.
    pub fn request(&mut self, request: Request, waiter: W) -> Vec<Output<W>> {
        let mut out = Vec::new();
        self.push(request, Some(waiter), &mut out);
        out
    }

    fn push(&mut self, request: Request, waiter: Option<W>, out: &mut Vec<Output<W>>) {
        let id = self.take_id();
        let pending = Pending { request, waiter };
        if self.is_ready() {
            self.send(id, pending, out);
        } else {
            self.queued.insert(id, pending);
        }
    }

    fn send(&mut self, id: u64, pending: Pending<W>, out: &mut Vec<Output<W>>) {
        if pending.waiter.as_ref().is_some_and(Waiter::is_abandoned) {
            tracing::debug!(id, op = pending.request.op(), "abandoned request not sent");
            return;
        }
        match encode(id, &pending.request) {
            Ok(frame) => {
                out.push(Output::Send(frame));
                self.in_flight.insert(id, pending);
            }
            Err(e) => {
                if let Some(waiter) = pending.waiter {
                    out.push(Output::Reply { waiter, result: Err(e) });
                }
            }
        }
    }

    /// Adds a local subscription to `subject`; subscribes on the server (answering `waiter`)
    /// and again after every reconnect.
    pub fn subscribe(&mut self, subject: &str, waiter: W) -> Vec<Output<W>> {
        *self.subjects.entry(subject.to_owned()).or_insert(0) += 1;
        self.request(Request::Subscribe { subject: subject.to_owned() }, waiter)
    }

    /// Removes a local subscription; unsubscribes on the server when it was the last.
    pub fn unsubscribe(&mut self, subject: &str) -> Vec<Output<W>> {
        let mut out = Vec::new();
        let Some(n) = self.subjects.get_mut(subject) else {
            return out;
        };
        *n -= 1;
        if *n == 0 {
            self.subjects.remove(subject);
            if self.is_ready() {
                let request = Request::Unsubscribe { subject: subject.to_owned() };
                self.push(request, None, &mut out);
            }
        }
        out
    }

    /// Feeds one text frame received from the server.
    pub fn handle_text(&mut self, text: &str) -> Vec<Output<W>> {
        match parse_server_frame(text) {
            Ok(ServerFrame::Reply(reply)) => self.handle_reply(reply),
            Ok(ServerFrame::Event(event)) => self.handle_event(*event),
            Err(e) => match serde_json::from_str::<Value>(text) {
                // An event this SDK's protocol types do not know (the E2EE pushes `dm` and
                // `keys_needed`, PROTOCOL.md §7): handed on raw, for `crate::e2ee`.
                Ok(v) if v.get("event").and_then(Value::as_str).is_some() => {
                    vec![Output::Event(ClientEvent::Raw(std::sync::Arc::new(v)))]
                }
                _ => {
                    tracing::warn!(error = %e, "unreadable frame from server ignored");
                    Vec::new()
                }
            },
        }
    }

    fn handle_reply(&mut self, reply: Reply) -> Vec<Output<W>> {
        let mut out = Vec::new();
        let Some(id) = reply.id.as_u64() else {
            if let Some(detail) = reply.error {
                out.push(Output::Event(ClientEvent::ServerError(detail)));
            }
            return out;
        };
        if self.phase == (Phase::Connecting { id }) {
            self.handle_connect_reply(reply, &mut out);
            return out;
        }
        let Some(pending) = self.in_flight.remove(&id) else {
            tracing::debug!(id, "reply to no pending request ignored");
            return out;
        };
        if self.seeding == Some(id) {
            self.seeding = None;
        }
        let result = match (reply.ok, reply.error) {
            (_, Some(detail)) => Err(ClientError::Server(detail)),
            (Some(ok), None) => Ok(ok),
            (None, None) => Err(ClientError::Protocol(format!("reply {id} has neither ok nor error"))),
        };
        if let Ok(ok) = &result {
            self.learn(&pending.request, ok);
        }
        match pending.waiter {
            Some(waiter) => out.push(Output::Reply { waiter, result }),
            None => {
                if let Err(e) = result {
                    tracing::warn!(op = pending.request.op(), error = %e, "background request failed");
                }
            }
        }
        out
    }

    fn handle_connect_reply(&mut self, reply: Reply, out: &mut Vec<Output<W>>) {
        let ok = match (reply.ok, reply.error) {
            (_, Some(detail)) => {
                self.phase = Phase::Offline;
                out.push(Output::Rejected(detail));
                return;
            }
            (Some(ok), None) => serde_json::from_value::<ConnectOk>(ok),
            (None, None) => serde_json::from_value::<ConnectOk>(Value::Null),
        };
        let ok = match ok {
            Ok(ok) => ok,
            Err(e) => {
                self.phase = Phase::Offline;
                out.push(Output::Rejected(ErrorDetail {
                    code: ErrorCode::BadRequest,
                    message: format!("unreadable connect reply: {e}"),
                    retry_after_ms: None,
                }));
                return;
            }
        };
        self.phase = Phase::Ready;
        out.push(Output::Event(ClientEvent::Connected(ok)));
        if self.seed_on_connect {
            // First, so it is answered before anything the user queued.
            self.seeding = Some(self.next_id);
            self.push(Request::ChannelList {}, None, out);
        }
        // Resubscribe, except subjects a queued request subscribes to anyway.
        let queued_subjects: BTreeSet<&str> = self
            .queued
            .values()
            .filter_map(|p| match &p.request {
                Request::Subscribe { subject } => Some(subject.as_str()),
                _ => None,
            })
            .collect();
        let resubscribe: Vec<String> =
            self.subjects.keys().filter(|s| !queued_subjects.contains(s.as_str())).cloned().collect();
        for subject in resubscribe {
            self.push(Request::Subscribe { subject }, None, out);
        }
        for (id, pending) in std::mem::take(&mut self.queued) {
            self.send(id, pending, out);
        }
    }

    /// Feeds one server event: log events are verified and deduplicated.
    pub fn handle_event(&mut self, event: Event) -> Vec<Output<W>> {
        let mut out = Vec::new();
        if let Event::ResumeTruncated { channel, from_seq } = &event {
            // The entries between our head and `from_seq` will not come: re-anchor the chain
            // on the first replayed entry; the caller pages the hole over the log, anchored
            // on the head we had.
            if let Some(head) = self.verifier.head(channel) {
                self.truncated_at.insert(channel.clone(), head);
            }
            self.verifier.forget(channel);
            self.channels.remove(channel);
            out.push(Output::Event(ClientEvent::ResumeTruncated {
                channel: channel.clone(),
                from_seq: *from_seq,
            }));
            return out;
        }
        let foreign = self.pass_foreign
            && event.channel().is_some_and(|c| !self.channels.contains(c) && !self.cursors.contains_key(c));
        if foreign {
            out.push(Output::Event(ClientEvent::Event(Box::new(event))));
            return out;
        }
        if let Some(meta) = event.meta() {
            let verdict = match event.entry_ref() {
                Some(entry) => self.verifier.check(&entry),
                None => Err(ChainError::Malformed {
                    channel: event.channel().unwrap_or_default().to_owned(),
                    seq: meta.seq,
                    field: "ts",
                }),
            };
            match verdict {
                Ok(Verdict::Next) => {
                    if let Some(channel) = event.channel() {
                        self.cursors.remove(channel);
                        self.channels.insert(channel.to_owned());
                    }
                }
                Ok(Verdict::Duplicate) => return out,
                Err(e) => {
                    out.push(Output::Event(ClientEvent::ChainError(e)));
                    return out;
                }
            }
        }
        out.push(Output::Event(ClientEvent::Event(Box::new(event))));
        out
    }

    /// The connection dropped: fails what was in flight with `Disconnected`, except sends
    /// with a `client_id`, which are queued to be resent after the next `connect`.
    pub fn disconnected(&mut self, reason: &str) -> Vec<Output<W>> {
        let was_connected = self.phase == Phase::Ready;
        self.phase = Phase::Offline;
        self.seeding = None;
        let mut out = Vec::new();
        let mut in_flight: Vec<(u64, Pending<W>)> = self.in_flight.drain().collect();
        in_flight.sort_by_key(|(id, _)| *id);
        for (id, pending) in in_flight {
            if pending.retryable() {
                self.queued.insert(id, pending);
            } else if let Some(waiter) = pending.waiter {
                out.push(Output::Reply { waiter, result: Err(ClientError::Disconnected) });
            }
            // Background requests are redone after the reconnect (resubscribe).
        }
        // Background unsubscribes queued while offline are moot: we do not resubscribe.
        self.queued.retain(|_, p| p.waiter.is_some());
        if was_connected {
            out.push(Output::Event(ClientEvent::Disconnected { reason: reason.to_owned() }));
        }
        out
    }

    /// The client stops for good: every caller waiting gets `error()`.
    pub fn shutdown(&mut self, error: impl Fn() -> ClientError) -> Vec<Output<W>> {
        self.phase = Phase::Offline;
        self.seeding = None;
        let mut all: Vec<(u64, Pending<W>)> = self.in_flight.drain().collect();
        all.extend(std::mem::take(&mut self.queued));
        all.sort_by_key(|(id, _)| *id);
        all.into_iter()
            .filter_map(|(_, p)| p.waiter)
            .map(|waiter| Output::Reply { waiter, result: Err(error()) })
            .collect()
    }
}
