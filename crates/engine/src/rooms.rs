//! Rooms (PROTOCOL.md §8): the participants of channels entered as rooms, direct and
//! broadcast room messages (optionally with binary attachments), streams with credit-based
//! flow control, and coalesced presence. Nothing here is stored.
//!
//! # Shape
//!
//! Every node keeps a replica of every room's participants and of every open stream, built
//! only from [`RoomEnvelope`]s that travel through the [`Broker`] like every other event:
//! an op validates against the replica, publishes an envelope, and each node's [`Rooms`]
//! (a [`BrokerSubscriber`]) applies its [`RoomChange`] and delivers its frame to the
//! participants connected to *that* node. A frame addressed to one participant (`to`) is
//! delivered by the node holding its connection; a broadcast by every node to its own.
//!
//! Presence (`participant_added/updated/removed`, `presence_count`) is coalesced on the
//! delivering node: changes wait in the room's pending set (the latest state per
//! participant; an enter and a leave inside one interval cancel out when nobody entered in
//! between) and a timer flushes them every `presence_interval_ms`. Past
//! `presence_list_max` participants a flush sends one `presence_count` per local participant
//! instead of per-participant events, so entering n participants costs O(n × intervals)
//! frames, not O(n²).
//!
//! Streams: the writer's node enforces the credit (chunks beyond it are `rate_limited`),
//! credits and the accept travel back as envelopes, so the reader's pace bounds the bytes in
//! flight on every node.
//!
//! # Invariants
//!
//! - The state lock (a `parking_lot::Mutex`) is never held across an `.await` nor while
//!   publishing on the broker (the in-process broker delivers synchronously, back into
//!   [`Rooms::receive`]).
//! - Removals that a broker delivery causes (a participant's user left the channel) are
//!   published later by the rooms task, never from inside a delivery.
//! - Fan-out never blocks: frames are `try_push`ed into the bounded per-connection queue.

use crate::broker::{Broker, BrokerSubscriber, Envelope};
use crate::conn::ConnShared;
use crate::error::EngineError;
use crate::events::to_bytes;
use crate::ops::{ConnHandle, Engine};
use crate::{IdGen, Principal};
use bytes::Bytes;
use herald_proto::ChannelName;
use herald_proto::frames::encode_binary;
use herald_proto::names::looks_like_uuid;
use herald_proto::rooms::{
    DEFAULT_STREAM_CREDIT, EnterOk, MAX_ATTRIBUTES_BYTES, Participant, ParticipantsOk, RoomEvent,
    RoomRequest, StreamOpenOk,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The limits of rooms; every one is configurable from the server's config.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// Presence events of one participant reach the others at most once per this many ms
    /// (0: at once, uncoalesced).
    pub presence_interval_ms: u64,
    /// Above this many participants a room sends `presence_count` instead of
    /// per-participant events, and `room.enter` answers with the count only.
    pub presence_list_max: usize,
    /// Largest attachment of `room.send` / `room.broadcast` and largest stream chunk, in bytes
    /// after the binary frame's header (the limit itself allowed).
    pub max_attachment_bytes: usize,
    /// How long `stream.open` waits for the target to accept or reject.
    pub stream_open_timeout: Duration,
    /// Largest page of `room.participants`.
    pub participants_page_max: u32,
    /// Largest `message` / `header` JSON of a room message or stream, serialized.
    pub max_message_bytes: usize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            presence_interval_ms: 100,
            presence_list_max: 1000,
            max_attachment_bytes: 16 << 20,
            stream_open_timeout: Duration::from_secs(30),
            participants_page_max: 1000,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// Page size of `room.participants` when the request names none.
const DEFAULT_PAGE: u32 = 100;

/// What a room envelope changes in every node's replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RoomChange {
    Entered {
        participant: Participant,
    },
    Updated {
        participant: Participant,
    },
    Left {
        participant_id: String,
    },
    StreamOpened {
        stream_id: String,
        writer: String,
        reader: String,
    },
    StreamAccepted {
        stream_id: String,
        credit: u64,
    },
    StreamCredit {
        stream_id: String,
        bytes: u64,
    },
    /// Closed by either side, rejected by the reader, or abandoned by the writer's node.
    StreamEnded {
        stream_id: String,
        rejected: bool,
    },
}

/// One unit of room traffic between nodes: a change to apply, a frame to deliver, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEnvelope {
    pub app: String,
    /// The channel id.
    pub channel: String,
    /// Deliver `frame` to this participant only.
    pub to: Option<String>,
    /// Deliver `frame` to every participant of the room but this one (ignored with `to`).
    pub skip: Option<String>,
    /// The frame (text JSON, or a §1 binary frame); empty when there is nothing to deliver.
    pub frame: Bytes,
    pub change: Option<RoomChange>,
}

/// Whether a queued frame is a §1 binary frame rather than JSON text. JSON frames start with
/// `{`; a binary frame starts with its header length as a big-endian u32, whose first byte
/// could be `{` only for a header of nearly 2 GiB, far past every limit.
pub fn is_binary_frame(frame: &[u8]) -> bool {
    frame.first() != Some(&b'{')
}

/// Counters the server exports.
#[derive(Debug, Default)]
pub struct RoomStats {
    /// Participants on every node, as this node's replica has them.
    pub participants: AtomicU64,
    /// Room frames (presence, messages, stream traffic) queued to this node's connections.
    pub frames: AtomicU64,
    /// Presence events folded away by coalescing (superseded or cancelled changes).
    pub coalesced: AtomicU64,
}

struct Entry {
    p: Participant,
    /// The connection, when it is on this node.
    conn: Option<Arc<ConnShared>>,
    /// The change counter when it entered: it saw, in its enter reply, every change before.
    tick: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Added,
    Updated,
    Removed,
}

struct Pending {
    kind: PendingKind,
    p: Participant,
    tick: u64,
}

struct Room {
    app: String,
    participants: BTreeMap<String, Entry>,
    pending: BTreeMap<String, Pending>,
    /// Tick of the latest enter, so an enter+leave pair cancels only when nobody who saw the
    /// enter in a reply could miss the leave.
    last_enter: u64,
    /// The count last sent as `presence_count`.
    count_sent: Option<u64>,
}

struct StreamRec {
    channel: String,
    writer: String,
    reader: String,
    accepted: bool,
    /// Bytes the writer may still send (exact on the writer's node).
    credit: u64,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    streams: HashMap<String, StreamRec>,
    /// Connection key → (channel id, participant id) it entered, on this node.
    by_conn: HashMap<u64, Vec<(String, String)>>,
    /// `stream.open`s of this node waiting for the reader.
    opening: HashMap<String, oneshot::Sender<Result<(), EngineError>>>,
    /// Rooms with pending presence.
    dirty: HashSet<String>,
    tick: u64,
}

/// Work the rooms task does outside broker deliveries.
enum Task {
    /// A user left a channel (or it was deleted): remove these local participants.
    Remove(Vec<(String, String, String)>),
}

/// The room registry of a node. See the module doc.
pub struct Rooms {
    state: Mutex<State>,
    broker: Arc<dyn Broker>,
    ids: Arc<dyn IdGen>,
    config: RoomsConfig,
    tasks: mpsc::UnboundedSender<Task>,
    pub stats: RoomStats,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Removes a connection's participants when dropped (the gateway holds one per connection).
pub struct RoomGuard {
    rooms: Arc<Rooms>,
    app: String,
    key: u64,
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        self.rooms.conn_gone(&self.app, self.key);
    }
}

fn forbidden(msg: impl Into<String>) -> EngineError {
    EngineError::Forbidden(msg.into())
}

fn not_found(msg: impl Into<String>) -> EngineError {
    EngineError::NotFound(msg.into())
}

fn json_len(v: &impl Serialize) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

impl Rooms {
    /// The registry, subscribed to `broker`, with its task (presence flushes, deferred
    /// removals), which stops when the registry is dropped. Must run inside a Tokio runtime.
    pub fn start(broker: Arc<dyn Broker>, ids: Arc<dyn IdGen>, config: RoomsConfig) -> Arc<Rooms> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rooms = Arc::new(Rooms {
            state: Mutex::new(State::default()),
            broker: broker.clone(),
            ids,
            config,
            tasks: tx,
            stats: RoomStats::default(),
        });
        broker.subscribe(rooms.clone());
        tokio::spawn(run(Arc::downgrade(&rooms), rx));
        rooms
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// A guard that removes every participant of `conn` when dropped.
    pub fn guard(self: &Arc<Self>, conn: &ConnShared) -> RoomGuard {
        RoomGuard { rooms: self.clone(), app: conn.app.to_string(), key: conn.key }
    }

    fn publish(&self, envelope: RoomEnvelope) {
        self.broker.publish(&[Envelope::Room(envelope)]);
    }

    fn left(&self, app: &str, channel: &str, pid: &str) {
        self.publish(RoomEnvelope {
            app: app.to_owned(),
            channel: channel.to_owned(),
            to: None,
            skip: None,
            frame: Bytes::new(),
            change: Some(RoomChange::Left { participant_id: pid.to_owned() }),
        });
    }

    /// Notes a participant of a connection of this node, before its `Entered` envelope is
    /// published, so the replica's entry carries the connection when the envelope arrives.
    fn note_local(&self, app: &str, channel: &str, me: &Participant, conn: &Arc<ConnShared>) {
        let mut st = self.state.lock();
        st.by_conn.entry(conn.key).or_default().push((channel.to_owned(), me.participant_id.clone()));
        let room = st.rooms.entry(channel.to_owned()).or_insert_with(|| Room {
            app: app.to_owned(),
            participants: BTreeMap::new(),
            pending: BTreeMap::new(),
            last_enter: 0,
            count_sent: None,
        });
        let entry = Entry { p: me.clone(), conn: Some(conn.clone()), tick: u64::MAX };
        if room.participants.insert(me.participant_id.clone(), entry).is_none() {
            self.stats.participants.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn conn_gone(&self, app: &str, key: u64) {
        let entered = self.state.lock().by_conn.remove(&key).unwrap_or_default();
        for (channel, pid) in entered {
            self.left(app, &channel, &pid);
        }
    }

    /// The participant `conn` is in `channel`, if it entered.
    fn my_participant(&self, conn: &ConnShared, channel: &str) -> Option<Participant> {
        let st = self.state.lock();
        let pid = st.by_conn.get(&conn.key)?.iter().find(|(c, _)| c == channel)?.1.clone();
        st.rooms.get(channel)?.participants.get(&pid).map(|e| e.p.clone())
    }

    fn push(&self, conn: &ConnShared, frame: &Bytes) {
        if conn.try_push(frame) == crate::conn::Pushed::Queued {
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends pending presence of every dirty room (the timer, or at once with interval 0).
    fn flush(&self) {
        let mut st = self.state.lock();
        let dirty: Vec<String> = st.dirty.drain().collect();
        for channel in dirty {
            let Some(room) = st.rooms.get_mut(&channel) else { continue };
            let pending = std::mem::take(&mut room.pending);
            let n = room.participants.len();
            if n > self.config.presence_list_max {
                let count = n as u64;
                if room.count_sent != Some(count) {
                    room.count_sent = Some(count);
                    let frame = to_bytes(&RoomEvent::PresenceCount { channel: channel.clone(), count });
                    for e in room.participants.values() {
                        if let Some(c) = &e.conn {
                            self.push(c, &frame);
                        }
                    }
                }
                continue;
            }
            if room.count_sent.take().is_some() && n > 0 {
                // Back under the list size: one count so every participant's figure is right;
                // the list itself is `room.participants`.
                let frame = to_bytes(&RoomEvent::PresenceCount { channel: channel.clone(), count: n as u64 });
                for e in room.participants.values() {
                    if let Some(c) = &e.conn {
                        self.push(c, &frame);
                    }
                }
            }
            for (pid, change) in pending {
                let channel = channel.clone();
                let participant = change.p;
                let ev = match change.kind {
                    PendingKind::Added => RoomEvent::ParticipantAdded { channel, participant },
                    PendingKind::Updated => RoomEvent::ParticipantUpdated { channel, participant },
                    PendingKind::Removed => RoomEvent::ParticipantRemoved { channel, participant },
                };
                let frame = to_bytes(&ev);
                for (other, e) in &room.participants {
                    if *other == pid || e.tick >= change.tick {
                        continue;
                    }
                    if let Some(c) = &e.conn {
                        self.push(c, &frame);
                    }
                }
            }
        }
    }

    fn note_pending(&self, st: &mut State, channel: &str, kind: PendingKind, p: Participant) {
        let tick = st.tick;
        let Some(room) = st.rooms.get_mut(channel) else { return };
        let pid = p.participant_id.clone();
        let previous = room.pending.remove(&pid);
        if previous.is_some() {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        let next = match (previous.map(|p| (p.kind, p.tick)), kind) {
            // Still new to everyone: an update keeps it an addition, with the latest state.
            (Some((PendingKind::Added, t)), PendingKind::Updated) if room.last_enter <= t => {
                Some(Pending { kind: PendingKind::Added, p, tick: t })
            }
            // Entered and left within one interval, nobody entered since: nothing to say.
            (Some((PendingKind::Added, t)), PendingKind::Removed) if room.last_enter <= t => None,
            _ => Some(Pending { kind, p, tick }),
        };
        if let Some(n) = next {
            room.pending.insert(pid, n);
        }
        st.dirty.insert(channel.to_owned());
    }

    fn apply(&self, st: &mut State, env: &RoomEnvelope) {
        let Some(change) = &env.change else { return };
        st.tick += 1;
        let tick = st.tick;
        match change {
            RoomChange::Entered { participant } => {
                let room = st.rooms.entry(env.channel.clone()).or_insert_with(|| Room {
                    app: env.app.clone(),
                    participants: BTreeMap::new(),
                    pending: BTreeMap::new(),
                    last_enter: 0,
                    count_sent: None,
                });
                room.last_enter = tick;
                // The local connection was noted by the op before publishing (see `enter`).
                let conn = room.participants.get(&participant.participant_id).and_then(|e| e.conn.clone());
                if room
                    .participants
                    .insert(participant.participant_id.clone(), Entry { p: participant.clone(), conn, tick })
                    .is_none()
                {
                    self.stats.participants.fetch_add(1, Ordering::Relaxed);
                }
                self.note_pending(st, &env.channel, PendingKind::Added, participant.clone());
            }
            RoomChange::Updated { participant } => {
                let Some(e) = st
                    .rooms
                    .get_mut(&env.channel)
                    .and_then(|r| r.participants.get_mut(&participant.participant_id))
                else {
                    return;
                };
                e.p = participant.clone();
                self.note_pending(st, &env.channel, PendingKind::Updated, participant.clone());
            }
            RoomChange::Left { participant_id } => {
                let Some(room) = st.rooms.get_mut(&env.channel) else { return };
                let Some(gone) = room.participants.remove(participant_id) else { return };
                self.stats.participants.fetch_sub(1, Ordering::Relaxed);
                if let Some(c) = &gone.conn
                    && let Some(list) = st.by_conn.get_mut(&c.key)
                {
                    list.retain(|(ch, pid)| !(ch == &env.channel && pid == participant_id));
                }
                self.note_pending(st, &env.channel, PendingKind::Removed, gone.p);
                self.abort_streams_of(st, participant_id);
                if st.rooms.get(&env.channel).is_some_and(|r| r.participants.is_empty()) {
                    st.rooms.remove(&env.channel);
                    st.dirty.remove(&env.channel);
                }
            }
            RoomChange::StreamOpened { stream_id, writer, reader } => {
                st.streams.insert(
                    stream_id.clone(),
                    StreamRec {
                        channel: env.channel.clone(),
                        writer: writer.clone(),
                        reader: reader.clone(),
                        accepted: false,
                        credit: 0,
                    },
                );
            }
            RoomChange::StreamAccepted { stream_id, credit } => {
                if let Some(s) = st.streams.get_mut(stream_id) {
                    s.accepted = true;
                    s.credit = s.credit.saturating_add(*credit);
                }
                if let Some(tx) = st.opening.remove(stream_id) {
                    let _ = tx.send(Ok(()));
                }
            }
            RoomChange::StreamCredit { stream_id, bytes } => {
                if let Some(s) = st.streams.get_mut(stream_id) {
                    s.credit = s.credit.saturating_add(*bytes);
                }
            }
            RoomChange::StreamEnded { stream_id, rejected } => {
                st.streams.remove(stream_id);
                if let Some(tx) = st.opening.remove(stream_id) {
                    let _ = tx.send(Err(if *rejected {
                        forbidden("the participant rejected the stream")
                    } else {
                        not_found("the stream was closed before it was accepted")
                    }));
                }
            }
        }
    }

    /// A participant is gone: its streams end, the other side (if here) hears why.
    fn abort_streams_of(&self, st: &mut State, pid: &str) {
        let ids: Vec<String> = st
            .streams
            .iter()
            .filter(|(_, s)| s.writer == pid || s.reader == pid)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(s) = st.streams.remove(&id) else { continue };
            if let Some(tx) = st.opening.remove(&id) {
                let _ = tx.send(Err(not_found("the participant left the room")));
            }
            let other = if s.writer == pid { &s.reader } else { &s.writer };
            let conn =
                st.rooms.get(&s.channel).and_then(|r| r.participants.get(other)).and_then(|e| e.conn.clone());
            if let Some(c) = conn {
                let frame = to_bytes(&RoomEvent::StreamAborted {
                    stream_id: id.clone(),
                    reason: "the other participant left the room or disconnected".into(),
                });
                self.push(&c, &frame);
            }
        }
    }

    fn deliver(&self, st: &State, env: &RoomEnvelope) {
        if env.frame.is_empty() {
            return;
        }
        let Some(room) = st.rooms.get(&env.channel) else { return };
        if room.app != env.app {
            return;
        }
        match &env.to {
            Some(to) => {
                if let Some(c) = room.participants.get(to).and_then(|e| e.conn.as_ref()) {
                    self.push(c, &env.frame);
                }
            }
            None => {
                for (pid, e) in &room.participants {
                    if env.skip.as_deref() == Some(pid.as_str()) {
                        continue;
                    }
                    if let Some(c) = &e.conn {
                        self.push(c, &env.frame);
                    }
                }
            }
        }
    }

    /// The local participants of `user` in `channel` (every one when `user` is `None`).
    fn local_of(&self, st: &State, channel: &str, user: Option<&str>) -> Vec<(String, String, String)> {
        let Some(room) = st.rooms.get(channel) else { return Vec::new() };
        room.participants
            .iter()
            .filter(|(_, e)| e.conn.is_some() && user.is_none_or(|u| u == e.p.user))
            .map(|(pid, _)| (room.app.clone(), channel.to_owned(), pid.clone()))
            .collect()
    }
}

impl BrokerSubscriber for Rooms {
    fn receive(&self, envelope: &Envelope) {
        match envelope {
            Envelope::Room(env) => {
                let mut st = self.state.lock();
                // An addressed frame goes out before a removal (the leaver's own goodbye), and
                // after an addition.
                let removal = matches!(
                    env.change,
                    Some(RoomChange::Left { .. }) | Some(RoomChange::StreamEnded { .. })
                );
                if removal {
                    self.deliver(&st, env);
                    self.apply(&mut st, env);
                } else {
                    self.apply(&mut st, env);
                    self.deliver(&st, env);
                }
                drop(st);
                if self.config.presence_interval_ms == 0 {
                    self.flush();
                }
            }
            Envelope::Channel(ev) if !ev.left.is_empty() || ev.deleted => {
                let st = self.state.lock();
                if !st.rooms.contains_key(&ev.channel) {
                    return;
                }
                let mut gone = Vec::new();
                if ev.deleted {
                    gone.extend(self.local_of(&st, &ev.channel, None));
                }
                for user in &ev.left {
                    gone.extend(self.local_of(&st, &ev.channel, Some(user)));
                }
                drop(st);
                if !gone.is_empty() {
                    let _ = self.tasks.send(Task::Remove(gone));
                }
            }
            _ => {}
        }
    }
}

/// The rooms task: flushes presence every interval and publishes deferred removals. Ends when
/// the registry is dropped.
async fn run(rooms: Weak<Rooms>, mut tasks: mpsc::UnboundedReceiver<Task>) {
    let interval_ms = match rooms.upgrade() {
        Some(r) => r.config.presence_interval_ms,
        None => return,
    };
    let mut ticker = (interval_ms > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_millis(interval_ms));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            task = tasks.recv() => {
                let Some(task) = task else { return };
                let Some(rooms) = rooms.upgrade() else { return };
                match task {
                    Task::Remove(list) => {
                        for (app, channel, pid) in list {
                            {
                                let mut st = rooms.state.lock();
                                for v in st.by_conn.values_mut() {
                                    v.retain(|(c, p)| !(c == &channel && p == &pid));
                                }
                            }
                            rooms.left(&app, &channel, &pid);
                        }
                    }
                }
            }
            () = tick => {
                let Some(rooms) = rooms.upgrade() else { return };
                rooms.flush();
            }
        }
    }
}

/// Builds a room frame: JSON text, or a §1 binary frame with `bytes` after the event.
fn room_frame(event: &RoomEvent, bytes: Option<&[u8]>) -> Bytes {
    match bytes {
        None => to_bytes(event),
        Some(b) => {
            let header = to_bytes(event);
            Bytes::from(encode_binary(&header, b))
        }
    }
}

/// What a room op answers.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RoomOk {
    Empty(crate::ops::Empty),
    Enter(EnterOk),
    Participants(ParticipantsOk),
    StreamOpen(StreamOpenOk),
}

fn empty() -> RoomOk {
    RoomOk::Empty(crate::ops::Empty {})
}

impl Engine {
    /// Resolves a channel reference to an id the caller is a member of (entering never
    /// joins): `channel_not_found`, `forbidden` otherwise.
    async fn room_channel(&self, who: &Principal, channel: &str) -> Result<String, EngineError> {
        let id = if looks_like_uuid(channel) {
            channel.to_owned()
        } else {
            ChannelName::parse(channel)?;
            self.store()
                .channel(&who.app, channel)
                .await
                .map_err(|e| EngineError::from_store(e, channel))?
                .ok_or_else(|| EngineError::ChannelNotFound(channel.to_owned()))?
                .id
        };
        let member = match self.hub().is_member(&who.app, &id, &who.user.id) {
            Some(m) => m,
            None => self
                .store()
                .is_member(&who.app, &id, &who.user.id)
                .await
                .map_err(|e| EngineError::from_store(e, channel))?,
        };
        if member {
            return Ok(id);
        }
        let exists = self
            .store()
            .channel(&who.app, &id)
            .await
            .map_err(|e| EngineError::from_store(e, channel))?
            .is_some();
        if exists {
            Err(forbidden(format!("not a member of channel {channel:?}; only members may enter its room")))
        } else {
            Err(EngineError::ChannelNotFound(channel.to_owned()))
        }
    }

    /// The caller's participant in `channel`, or `forbidden` if it has not entered.
    async fn entered(
        &self,
        who: &Principal,
        conn: &ConnHandle,
        channel: &str,
    ) -> Result<(String, Participant), EngineError> {
        let id = self.room_channel(who, channel).await?;
        let me = self
            .rooms()
            .my_participant(conn, &id)
            .ok_or_else(|| forbidden(format!("enter the room of channel {channel:?} first (room.enter)")))?;
        Ok((id, me))
    }

    fn check_json(&self, what: &str, v: &impl Serialize) -> Result<(), EngineError> {
        let len = json_len(v);
        let max = self.rooms().config.max_message_bytes;
        if len > max {
            return Err(EngineError::PayloadTooLarge(format!("{what} is {len} bytes; the limit is {max}")));
        }
        Ok(())
    }

    fn check_attachment(&self, bytes: Option<&Bytes>) -> Result<(), EngineError> {
        let max = self.rooms().config.max_attachment_bytes;
        match bytes {
            Some(b) if b.len() > max => Err(EngineError::PayloadTooLarge(format!(
                "the binary payload is {} bytes; the limit is {max} (--max-attachment-bytes)",
                b.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Runs one room or stream request (PROTOCOL.md §8) of a WebSocket connection. `bytes`
    /// are those after the header of a binary frame.
    pub async fn execute_room(
        &self,
        who: &Principal,
        conn: &ConnHandle,
        req: RoomRequest,
        bytes: Option<Bytes>,
    ) -> Result<RoomOk, EngineError> {
        let rooms = self.rooms();
        if bytes.is_some() && !req.takes_bytes() {
            return Err(EngineError::BadRequest(format!("{} takes no binary payload", req.op())));
        }
        self.check_attachment(bytes.as_ref())?;
        match req {
            RoomRequest::Enter { channel, attributes } => {
                let attributes = attributes.unwrap_or_default();
                check_attributes(&attributes)?;
                let id = self.room_channel(who, &channel).await?;
                self.enter(who, conn, id, attributes)
            }
            RoomRequest::Update { channel, attributes } => {
                check_attributes(&attributes)?;
                let (id, mut me) = self.entered(who, conn, &channel).await?;
                me.attributes = attributes;
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel: id,
                    to: None,
                    skip: None,
                    frame: Bytes::new(),
                    change: Some(RoomChange::Updated { participant: me }),
                });
                Ok(empty())
            }
            RoomRequest::Leave { channel } => {
                let (id, me) = self.entered(who, conn, &channel).await?;
                rooms.state.lock().by_conn.entry(conn.key).or_default().retain(|(c, _)| c != &id);
                rooms.left(&who.app, &id, &me.participant_id);
                Ok(empty())
            }
            RoomRequest::Participants { channel, after, limit } => {
                let id = self.room_channel(who, &channel).await?;
                let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, rooms.config.participants_page_max.max(1))
                    as usize;
                let st = rooms.state.lock();
                let mut participants = Vec::with_capacity(limit.min(1024));
                let mut has_more = false;
                if let Some(room) = st.rooms.get(&id) {
                    let range = match &after {
                        Some(a) => room.participants.range::<String, _>((
                            std::ops::Bound::Excluded(a.clone()),
                            std::ops::Bound::Unbounded,
                        )),
                        None => room.participants.range::<String, _>(..),
                    };
                    for (_, e) in range {
                        if participants.len() == limit {
                            has_more = true;
                            break;
                        }
                        participants.push(e.p.clone());
                    }
                }
                Ok(RoomOk::Participants(ParticipantsOk { participants, has_more }))
            }
            RoomRequest::Send { channel, to, kind, message } => {
                self.check_json("message", &message)?;
                let (id, me) = self.entered(who, conn, &channel).await?;
                let known =
                    rooms.state.lock().rooms.get(&id).is_some_and(|r| r.participants.contains_key(&to));
                if !known {
                    return Err(not_found(format!("no participant {to:?} in this room")));
                }
                let ev = RoomEvent::RoomMessage { channel: id.clone(), from: me, kind, message };
                let frame = room_frame(&ev, bytes.as_deref());
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel: id,
                    to: Some(to),
                    skip: None,
                    frame,
                    change: None,
                });
                Ok(empty())
            }
            RoomRequest::Broadcast { channel, kind, message } => {
                self.check_json("message", &message)?;
                let (id, me) = self.entered(who, conn, &channel).await?;
                let skip = Some(me.participant_id.clone());
                let ev = RoomEvent::RoomMessage { channel: id.clone(), from: me, kind, message };
                let frame = room_frame(&ev, bytes.as_deref());
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel: id,
                    to: None,
                    skip,
                    frame,
                    change: None,
                });
                Ok(empty())
            }
            RoomRequest::StreamOpen { channel, to, header } => {
                self.check_json("header", &header)?;
                let (id, me) = self.entered(who, conn, &channel).await?;
                if to == me.participant_id {
                    return Err(EngineError::BadRequest("a stream needs another participant".into()));
                }
                let stream_id = rooms.ids.new_id();
                let (tx, rx) = oneshot::channel();
                {
                    let mut st = rooms.state.lock();
                    if !st.rooms.get(&id).is_some_and(|r| r.participants.contains_key(&to)) {
                        return Err(not_found(format!("no participant {to:?} in this room")));
                    }
                    st.opening.insert(stream_id.clone(), tx);
                }
                let ev = RoomEvent::StreamRequest {
                    stream_id: stream_id.clone(),
                    channel: id.clone(),
                    from: me.clone(),
                    header,
                };
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel: id.clone(),
                    to: Some(to.clone()),
                    skip: None,
                    frame: to_bytes(&ev),
                    change: Some(RoomChange::StreamOpened {
                        stream_id: stream_id.clone(),
                        writer: me.participant_id,
                        reader: to.clone(),
                    }),
                });
                match tokio::time::timeout(rooms.config.stream_open_timeout, rx).await {
                    Ok(Ok(Ok(()))) => Ok(RoomOk::StreamOpen(StreamOpenOk { stream_id })),
                    Ok(Ok(Err(e))) => Err(e),
                    Ok(Err(_)) => Err(not_found("the stream was abandoned")),
                    Err(_) => {
                        rooms.state.lock().opening.remove(&stream_id);
                        let ev = RoomEvent::StreamAborted {
                            stream_id: stream_id.clone(),
                            reason: "not accepted in time".into(),
                        };
                        rooms.publish(RoomEnvelope {
                            app: who.app.clone(),
                            channel: id,
                            to: Some(to),
                            skip: None,
                            frame: to_bytes(&ev),
                            change: Some(RoomChange::StreamEnded { stream_id, rejected: false }),
                        });
                        Err(not_found("the participant did not accept the stream in time"))
                    }
                }
            }
            RoomRequest::StreamAccept { stream_id, credit } => {
                let (channel, writer) = self.stream_side(who, conn, &stream_id, Side::Reader, Some(false))?;
                let credit = credit.unwrap_or(DEFAULT_STREAM_CREDIT);
                let ev = RoomEvent::StreamCredit { stream_id: stream_id.clone(), bytes: credit };
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel,
                    to: Some(writer),
                    skip: None,
                    frame: to_bytes(&ev),
                    change: Some(RoomChange::StreamAccepted { stream_id, credit }),
                });
                Ok(empty())
            }
            RoomRequest::StreamReject { stream_id, .. } => {
                let (channel, _) = self.stream_side(who, conn, &stream_id, Side::Reader, Some(false))?;
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel,
                    to: None,
                    skip: None,
                    frame: Bytes::new(),
                    change: Some(RoomChange::StreamEnded { stream_id, rejected: true }),
                });
                Ok(empty())
            }
            RoomRequest::StreamCredit { stream_id, bytes: n } => {
                let (channel, writer) = self.stream_side(who, conn, &stream_id, Side::Reader, Some(true))?;
                let ev = RoomEvent::StreamCredit { stream_id: stream_id.clone(), bytes: n };
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel,
                    to: Some(writer),
                    skip: None,
                    frame: to_bytes(&ev),
                    change: Some(RoomChange::StreamCredit { stream_id, bytes: n }),
                });
                Ok(empty())
            }
            RoomRequest::StreamChunk { stream_id, header } => {
                if let Some(h) = &header {
                    self.check_json("header", h)?;
                }
                let payload = bytes.unwrap_or_default();
                let (channel, reader) = {
                    let mut st = rooms.state.lock();
                    let mine = st.by_conn.get(&conn.key).cloned().unwrap_or_default();
                    let Some(s) = st.streams.get_mut(&stream_id) else {
                        return Err(not_found(format!("no open stream {stream_id:?}")));
                    };
                    if !mine.iter().any(|(c, p)| c == &s.channel && p == &s.writer) {
                        return Err(forbidden("only the stream's writer sends chunks"));
                    }
                    if !s.accepted {
                        return Err(not_found(format!("stream {stream_id:?} is not accepted")));
                    }
                    let len = payload.len() as u64;
                    if len > s.credit {
                        // Wait for `stream_credit`: the reader has not granted this much yet.
                        return Err(EngineError::RateLimited { retry_after_ms: 0 });
                    }
                    s.credit -= len;
                    (s.channel.clone(), s.reader.clone())
                };
                let ev = RoomEvent::StreamChunk { stream_id, header };
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel,
                    to: Some(reader),
                    skip: None,
                    frame: room_frame(&ev, Some(&payload)),
                    change: None,
                });
                Ok(empty())
            }
            RoomRequest::StreamClose { stream_id } => {
                let (channel, other) = self.stream_side(who, conn, &stream_id, Side::Either, None)?;
                let ev = RoomEvent::StreamClosed { stream_id: stream_id.clone() };
                rooms.publish(RoomEnvelope {
                    app: who.app.clone(),
                    channel,
                    to: Some(other),
                    skip: None,
                    frame: to_bytes(&ev),
                    change: Some(RoomChange::StreamEnded { stream_id, rejected: false }),
                });
                Ok(empty())
            }
        }
    }

    fn enter(
        &self,
        who: &Principal,
        conn: &ConnHandle,
        channel: String,
        attributes: Map<String, Value>,
    ) -> Result<RoomOk, EngineError> {
        let rooms = self.rooms();
        if let Some(mut me) = rooms.my_participant(conn, &channel) {
            // Entering again on the same connection: the same participant, new attributes.
            me.attributes = attributes;
            let pid = me.participant_id.clone();
            rooms.publish(RoomEnvelope {
                app: who.app.clone(),
                channel: channel.clone(),
                to: None,
                skip: None,
                frame: Bytes::new(),
                change: Some(RoomChange::Updated { participant: me }),
            });
            return Ok(self.enter_ok(&channel, pid));
        }
        let pid = rooms.ids.new_id();
        let me = Participant {
            participant_id: pid.clone(),
            user: who.user.id.clone(),
            name: who.user.name.clone(),
            kind: who.user.kind,
            attributes,
        };
        rooms.note_local(&who.app, &channel, &me, conn.shared());
        rooms.publish(RoomEnvelope {
            app: who.app.clone(),
            channel: channel.clone(),
            to: None,
            skip: None,
            frame: Bytes::new(),
            change: Some(RoomChange::Entered { participant: me }),
        });
        Ok(self.enter_ok(&channel, pid))
    }

    fn enter_ok(&self, channel: &str, pid: String) -> RoomOk {
        let rooms = self.rooms();
        let st = rooms.state.lock();
        let Some(room) = st.rooms.get(channel) else {
            return RoomOk::Enter(EnterOk {
                participant_id: pid,
                participants: Some(Vec::new()),
                count: None,
            });
        };
        if room.participants.len() > rooms.config.presence_list_max {
            RoomOk::Enter(EnterOk {
                participant_id: pid,
                participants: None,
                count: Some(room.participants.len() as u64),
            })
        } else {
            let list = room.participants.values().map(|e| e.p.clone()).collect();
            RoomOk::Enter(EnterOk { participant_id: pid, participants: Some(list), count: None })
        }
    }

    /// Checks that the caller's connection is the given side of a stream (in the accepted
    /// state given, if any); returns the stream's channel and the other side's participant.
    fn stream_side(
        &self,
        _who: &Principal,
        conn: &ConnHandle,
        stream_id: &str,
        side: Side,
        accepted: Option<bool>,
    ) -> Result<(String, String), EngineError> {
        let st = self.rooms().state.lock();
        let s =
            st.streams.get(stream_id).ok_or_else(|| not_found(format!("no open stream {stream_id:?}")))?;
        let mine = st.by_conn.get(&conn.key);
        let is = |pid: &str| mine.is_some_and(|l| l.iter().any(|(c, p)| c == &s.channel && p == pid));
        let other = match side {
            Side::Reader if is(&s.reader) => s.writer.clone(),
            Side::Either if is(&s.reader) => s.writer.clone(),
            Side::Either if is(&s.writer) => s.reader.clone(),
            _ => return Err(forbidden("not a participant of this stream on this connection")),
        };
        match accepted {
            Some(false) if s.accepted => {
                Err(EngineError::BadRequest(format!("stream {stream_id:?} is already accepted")))
            }
            Some(true) if !s.accepted => Err(not_found(format!("stream {stream_id:?} is not accepted"))),
            _ => Ok((s.channel.clone(), other)),
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Reader,
    Either,
}

fn check_attributes(attributes: &Map<String, Value>) -> Result<(), EngineError> {
    let len = json_len(attributes);
    if len > MAX_ATTRIBUTES_BYTES {
        return Err(EngineError::PayloadTooLarge(format!(
            "attributes are {len} bytes serialized; the limit is {MAX_ATTRIBUTES_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::broker::LocalBroker;
    use crate::conn::QueueLimits;
    use crate::hub::Hub;

    struct Ids(AtomicU64);
    impl IdGen for Ids {
        fn new_id(&self) -> String {
            format!("s{}", self.0.fetch_add(1, Ordering::Relaxed))
        }
    }

    fn participant(pid: &str, attrs: Value) -> Participant {
        Participant {
            participant_id: pid.into(),
            user: format!("u-{pid}"),
            name: None,
            kind: herald_proto::model::UserKind::Human,
            attributes: attrs.as_object().cloned().unwrap_or_default(),
        }
    }

    fn change(c: RoomChange) -> Envelope {
        Envelope::Room(RoomEnvelope {
            app: "app".into(),
            channel: "ch".into(),
            to: None,
            skip: None,
            frame: Bytes::new(),
            change: Some(c),
        })
    }

    /// A registry whose timer never fires during a test (flushes are called by hand), with
    /// one local participant `l` whose frames the test reads.
    fn setup(list_max: usize) -> (Arc<Rooms>, mpsc::Receiver<Bytes>) {
        let config = RoomsConfig {
            presence_interval_ms: 3_600_000,
            presence_list_max: list_max,
            ..RoomsConfig::default()
        };
        let rooms = Rooms::start(LocalBroker::new(), Arc::new(Ids(AtomicU64::new(0))), config);
        let hub = Hub::new(QueueLimits { frames: 1024, bytes: 1 << 20 });
        let (conn, rx) = hub.new_conn("c1".into(), "app", "u-l");
        let me = participant("l", json_obj());
        rooms.note_local("app", "ch", &me, &conn);
        rooms.receive(&change(RoomChange::Entered { participant: me }));
        rooms.flush();
        (rooms, rx)
    }

    fn json_obj() -> Value {
        Value::Object(Map::new())
    }

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<RoomEvent> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn presence_is_coalesced_per_interval_to_the_latest_state() {
        let (rooms, mut rx) = setup(1000);
        rooms.receive(&change(RoomChange::Entered { participant: participant("a", json_obj()) }));
        rooms.receive(&change(RoomChange::Left { participant_id: "a".into() }));
        rooms.receive(&change(RoomChange::Entered {
            participant: participant("b", serde_json::json!({"v": 1})),
        }));
        rooms.receive(&change(RoomChange::Updated {
            participant: participant("b", serde_json::json!({"v": 2})),
        }));
        rooms.receive(&change(RoomChange::Updated {
            participant: participant("b", serde_json::json!({"v": 3})),
        }));
        assert!(drain(&mut rx).is_empty(), "nothing goes out before the interval ends");
        rooms.flush();
        let got = drain(&mut rx);
        assert_eq!(got.len(), 1, "{got:?}: an enter and leave cancel; three changes of b become one");
        match &got[0] {
            RoomEvent::ParticipantAdded { participant, .. } => {
                assert_eq!(participant.participant_id, "b");
                assert_eq!(participant.attributes.get("v"), Some(&Value::from(3)), "the latest state");
            }
            other => panic!("{other:?}"),
        }
        assert!(rooms.stats.coalesced.load(Ordering::Relaxed) >= 3);
        // In the next interval an update and a leave of b become one removal.
        rooms.receive(&change(RoomChange::Updated {
            participant: participant("b", serde_json::json!({"v": 4})),
        }));
        rooms.receive(&change(RoomChange::Left { participant_id: "b".into() }));
        rooms.flush();
        let got = drain(&mut rx);
        assert!(
            matches!(&got[..], [RoomEvent::ParticipantRemoved { participant, .. }] if participant.participant_id == "b"),
            "{got:?}"
        );
        rooms.flush();
        assert!(drain(&mut rx).is_empty(), "a quiet interval sends nothing");
    }

    /// Entering n participants must not cost O(n²) frames: past the list size each local
    /// participant gets one count per interval, whatever the number of changes.
    #[tokio::test]
    async fn past_the_list_max_a_flush_sends_one_count() {
        let (rooms, mut rx) = setup(10);
        for i in 0..500 {
            rooms.receive(&change(RoomChange::Entered {
                participant: participant(&format!("p{i:03}"), json_obj()),
            }));
        }
        rooms.flush();
        let got = drain(&mut rx);
        assert!(matches!(&got[..], [RoomEvent::PresenceCount { count: 501, .. }]), "{got:?}");
        rooms.flush();
        assert!(drain(&mut rx).is_empty(), "the same count is not sent twice");
        rooms.receive(&change(RoomChange::Left { participant_id: "p000".into() }));
        rooms.flush();
        assert!(matches!(&drain(&mut rx)[..], [RoomEvent::PresenceCount { count: 500, .. }]));
    }

    /// An enter and a leave cancel out only if nobody entered in between: one who did saw the
    /// enter in its own enter reply and must hear of the leave.
    #[tokio::test]
    async fn a_leave_is_not_cancelled_for_a_participant_that_saw_the_enter() {
        let (rooms, mut rx) = setup(1000);
        rooms.receive(&change(RoomChange::Entered { participant: participant("a", json_obj()) }));
        // A second local participant enters now (its reply lists a).
        let hub = Hub::new(QueueLimits { frames: 64, bytes: 1 << 20 });
        let (conn2, mut rx2) = hub.new_conn("c2".into(), "app", "u-m");
        let m = participant("m", json_obj());
        rooms.note_local("app", "ch", &m, &conn2);
        rooms.receive(&change(RoomChange::Entered { participant: m }));
        rooms.receive(&change(RoomChange::Left { participant_id: "a".into() }));
        rooms.flush();
        let at_m = drain(&mut rx2);
        assert!(
            matches!(&at_m[..], [RoomEvent::ParticipantRemoved { participant, .. }] if participant.participant_id == "a"),
            "{at_m:?}"
        );
        let at_l = drain(&mut rx);
        assert!(at_l.iter().any(|e| matches!(e, RoomEvent::ParticipantAdded { participant, .. } if participant.participant_id == "m")), "{at_l:?}");
    }
}
