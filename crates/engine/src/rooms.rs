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
use crate::presence_outbox::{PresenceKind, PresenceRecorder};
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
    /// The node that published it, as a networked broker says on arrival (`None`: this node,
    /// or the only one). It never travels inside the envelope: the broker knows its sender.
    pub node: Option<String>,
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
    /// Updates of a participant of this node so far (the webhook id of the next one).
    updates: u64,
    /// The node holding its connection, when another one (as the broker said).
    node: Option<String>,
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

impl Room {
    fn new(app: String) -> Room {
        Room { app, participants: BTreeMap::new(), pending: BTreeMap::new(), last_enter: 0, count_sent: None }
    }
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
    /// Rooms whose participants on other nodes this node asked for ([`Rooms::ensure_synced`]).
    synced: HashSet<String>,
    /// Rooms being synchronised now, and how to hear the end of it.
    syncing: HashMap<String, Arc<tokio::sync::Notify>>,
    /// Participants that left lately (at most [`LEFT_RECENT`]), so that an answer to a
    /// synchronisation made before they left does not bring them back.
    left_recent: std::collections::VecDeque<String>,
    left_recent_set: HashSet<String>,
}

/// Participants remembered as left, for synchronisations in flight.
const LEFT_RECENT: usize = 10_000;

/// Rooms remembered as synchronised at most (then forgotten together, and asked again).
const SYNCED_MAX: usize = 100_000;

/// Longest wait of a caller for another's synchronisation of the same room (the broker's own
/// timeout ends it sooner).
const SYNC_WAIT: Duration = Duration::from_secs(10);

impl State {
    fn note_left(&mut self, pid: &str) {
        if self.left_recent_set.insert(pid.to_owned()) {
            self.left_recent.push_back(pid.to_owned());
            if self.left_recent.len() > LEFT_RECENT
                && let Some(old) = self.left_recent.pop_front()
            {
                self.left_recent_set.remove(&old);
            }
        }
    }
}

/// Work the rooms task does outside broker deliveries.
enum Task {
    /// A user left a channel (or it was deleted): remove these local participants.
    Remove(Vec<(String, String, String)>),
    /// Synchronise these rooms (app, channel) with the other nodes again.
    Resync(Vec<(String, String)>),
}

/// The room registry of a node. See the module doc.
pub struct Rooms {
    state: Mutex<State>,
    broker: Arc<dyn Broker>,
    ids: Arc<dyn IdGen>,
    config: RoomsConfig,
    tasks: mpsc::UnboundedSender<Task>,
    recorder: std::sync::OnceLock<Arc<PresenceRecorder>>,
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
            recorder: std::sync::OnceLock::new(),
            stats: RoomStats::default(),
        });
        broker.subscribe(rooms.clone());
        let directory: Arc<dyn crate::broker::RoomDirectory> = rooms.clone();
        broker.serve_rooms(Arc::downgrade(&directory));
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
            node: None,
            change: Some(RoomChange::Left { participant_id: pid.to_owned() }),
        });
    }

    /// Notes a participant of a connection of this node, before its `Entered` envelope is
    /// published, so the replica's entry carries the connection when the envelope arrives.
    fn note_local(&self, app: &str, channel: &str, me: &Participant, conn: &Arc<ConnShared>) {
        let mut st = self.state.lock();
        st.by_conn.entry(conn.key).or_default().push((channel.to_owned(), me.participant_id.clone()));
        let room = st.rooms.entry(channel.to_owned()).or_insert_with(|| Room::new(app.to_owned()));
        let entry = Entry { p: me.clone(), conn: Some(conn.clone()), tick: u64::MAX, updates: 0, node: None };
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
                let room = st.rooms.entry(env.channel.clone()).or_insert_with(|| Room::new(env.app.clone()));
                room.last_enter = tick;
                // The local connection was noted by the op before publishing (see `enter`).
                let conn = room.participants.get(&participant.participant_id).and_then(|e| e.conn.clone());
                if room
                    .participants
                    .insert(
                        participant.participant_id.clone(),
                        Entry {
                            p: participant.clone(),
                            conn: conn.clone(),
                            tick,
                            updates: 0,
                            node: env.node.clone(),
                        },
                    )
                    .is_none()
                {
                    self.stats.participants.fetch_add(1, Ordering::Relaxed);
                }
                if conn.is_some() {
                    let ev = RoomEvent::ParticipantAdded {
                        channel: env.channel.clone(),
                        participant: participant.clone(),
                    };
                    self.record(
                        &env.app,
                        &env.channel,
                        &participant.participant_id,
                        PresenceKind::Added,
                        &ev,
                    );
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
                if e.conn.is_some() {
                    e.updates += 1;
                    let k = e.updates;
                    let ev = RoomEvent::ParticipantUpdated {
                        channel: env.channel.clone(),
                        participant: participant.clone(),
                    };
                    self.record(
                        &env.app,
                        &env.channel,
                        &participant.participant_id,
                        PresenceKind::Updated(k),
                        &ev,
                    );
                }
                self.note_pending(st, &env.channel, PendingKind::Updated, participant.clone());
            }
            RoomChange::Left { participant_id } => {
                st.note_left(participant_id);
                self.remove_participant(st, &env.channel, participant_id, false);
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

    /// Writes a change of a participant of this node to the webhooks' presence outbox, when
    /// webhooks want presence ([`Rooms::record_presence`]).
    fn record(&self, app: &str, channel: &str, pid: &str, kind: PresenceKind, ev: &RoomEvent) {
        if let Some(r) = self.recorder.get() {
            let json = |ev: &RoomEvent| String::from_utf8(to_bytes(ev).to_vec()).unwrap_or_default();
            // What its removal will say, should this node die first (presence_outbox's doc).
            let removal = match ev {
                RoomEvent::ParticipantAdded { channel, participant }
                | RoomEvent::ParticipantUpdated { channel, participant } => {
                    Some(json(&RoomEvent::ParticipantRemoved {
                        channel: channel.clone(),
                        participant: participant.clone(),
                    }))
                }
                _ => None,
            };
            r.record(app, channel, pid, kind, json(ev), removal);
        }
    }

    /// Takes a participant out of the replica: presence to the others, its streams ended, the
    /// room forgotten when empty. Its removal goes to the webhooks' outbox when it was this
    /// node's, or when `record_remote` (a dead node's, removed by every surviving node: the
    /// outbox keeps one row per id).
    fn remove_participant(&self, st: &mut State, channel: &str, pid: &str, record_remote: bool) -> bool {
        let Some(room) = st.rooms.get_mut(channel) else { return false };
        let Some(gone) = room.participants.remove(pid) else { return false };
        let app = room.app.clone();
        self.stats.participants.fetch_sub(1, Ordering::Relaxed);
        if gone.conn.is_some() || record_remote {
            let ev =
                RoomEvent::ParticipantRemoved { channel: channel.to_owned(), participant: gone.p.clone() };
            self.record(&app, channel, pid, PresenceKind::Removed, &ev);
        }
        if let Some(c) = &gone.conn
            && let Some(list) = st.by_conn.get_mut(&c.key)
        {
            list.retain(|(ch, p)| !(ch == channel && p == pid));
        }
        self.note_pending(st, channel, PendingKind::Removed, gone.p);
        self.abort_streams_of(st, pid);
        if st.rooms.get(channel).is_some_and(|r| r.participants.is_empty()) {
            st.rooms.remove(channel);
            st.dirty.remove(channel);
            // An empty room is synchronised again on the next interest (cheap, and keeps
            // `synced` as small as the rooms in use).
            st.synced.remove(channel);
        }
        true
    }

    /// Before this node's first interest in a room (an enter, a participant list), asks the
    /// other nodes for their participants of it: a node that started after they entered has
    /// not seen their envelopes. Once per room while it has participants here; a broker that
    /// cannot answer leaves the room unsynchronised, to try again next time.
    /// Concurrent callers share one question (a room of thousands entering a fresh node asks
    /// once).
    pub async fn ensure_synced(&self, app: &str, channel: &str) {
        let flight = {
            let mut st = self.state.lock();
            if st.synced.contains(channel) {
                return;
            }
            match st.syncing.get(channel) {
                Some(n) => Err(n.clone()),
                None => {
                    let n = Arc::new(tokio::sync::Notify::new());
                    st.syncing.insert(channel.to_owned(), n.clone());
                    Ok(n)
                }
            }
        };
        match flight {
            Err(other) => {
                let done = other.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                // The flight may have ended between the lock and `enable`.
                if !self.state.lock().syncing.contains_key(channel) {
                    return;
                }
                let _ = tokio::time::timeout(SYNC_WAIT, done).await;
            }
            Ok(mine) => {
                if let Err(e) = self.sync_room(app, channel).await {
                    tracing::warn!(channel, error = %e, "rooms: cannot ask the other nodes for the room's participants");
                }
                self.state.lock().syncing.remove(channel);
                mine.notify_waiters();
            }
        }
    }

    /// Asks every other node for its participants of `channel` and merges the answers: those
    /// not known are added (presence to the local participants), those a node no longer lists
    /// (known since before the question) are removed.
    async fn sync_room(&self, app: &str, channel: &str) -> Result<(), String> {
        let asked_at = self.state.lock().tick;
        let snapshots = self.broker.room_snapshot(app, channel).await?;
        let mut st = self.state.lock();
        for snap in snapshots {
            let listed: HashSet<&str> = snap.participants.iter().map(|p| p.participant_id.as_str()).collect();
            let stale: Vec<String> = st
                .rooms
                .get(channel)
                .map(|r| {
                    r.participants
                        .iter()
                        .filter(|(pid, e)| {
                            e.node.as_deref() == Some(snap.node.as_str())
                                && e.tick <= asked_at
                                && !listed.contains(pid.as_str())
                        })
                        .map(|(pid, _)| pid.clone())
                        .collect()
                })
                .unwrap_or_default();
            for pid in stale {
                self.remove_participant(&mut st, channel, &pid, false);
            }
            for p in snap.participants {
                if st.left_recent_set.contains(&p.participant_id) {
                    continue;
                }
                let known =
                    st.rooms.get(channel).is_some_and(|r| r.participants.contains_key(&p.participant_id));
                if known {
                    continue;
                }
                st.tick += 1;
                let tick = st.tick;
                let room = st.rooms.entry(channel.to_owned()).or_insert_with(|| Room::new(app.to_owned()));
                room.last_enter = tick;
                room.participants.insert(
                    p.participant_id.clone(),
                    Entry { p: p.clone(), conn: None, tick, updates: 0, node: Some(snap.node.clone()) },
                );
                self.stats.participants.fetch_add(1, Ordering::Relaxed);
                self.note_pending(&mut st, channel, PendingKind::Added, p);
            }
        }
        if st.synced.len() >= SYNCED_MAX {
            // Rooms asked about but never entered here are not forgotten otherwise.
            st.synced.clear();
        }
        st.synced.insert(channel.to_owned());
        drop(st);
        if self.config.presence_interval_ms == 0 {
            self.flush();
        }
        Ok(())
    }

    /// From now on, every presence change of this node's participants is written to the
    /// webhooks' outbox by `recorder` (set once; later calls change nothing).
    pub fn record_presence(&self, recorder: Arc<PresenceRecorder>) {
        let _ = self.recorder.set(recorder);
    }

    /// The presence recorder, if webhooks want presence.
    pub fn presence_recorder(&self) -> Option<&Arc<PresenceRecorder>> {
        self.recorder.get()
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

impl crate::broker::RoomDirectory for Rooms {
    fn local_participants(&self, app: &str, channel: &str) -> Vec<Participant> {
        let st = self.state.lock();
        let Some(room) = st.rooms.get(channel).filter(|r| r.app == app) else { return Vec::new() };
        room.participants.values().filter(|e| e.conn.is_some()).map(|e| e.p.clone()).collect()
    }

    fn node_gone(&self, node: &str) {
        // The participants it left in the store, this node's replica knowing them or not
        // (presence_outbox's doc).
        if let (Some(r), Ok(rt)) = (self.recorder.get(), tokio::runtime::Handle::try_current()) {
            let (r, node) = (r.clone(), node.to_owned());
            rt.spawn(async move {
                r.close_node(&node).await;
            });
        }
        let mut st = self.state.lock();
        let gone: Vec<(String, String)> = st
            .rooms
            .iter()
            .flat_map(|(ch, r)| {
                r.participants
                    .iter()
                    .filter(|(_, e)| e.node.as_deref() == Some(node))
                    .map(move |(pid, _)| (ch.clone(), pid.clone()))
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        tracing::warn!(
            node,
            participants = gone.len(),
            "rooms: a node went silent; its participants are removed"
        );
        for (channel, pid) in gone {
            st.note_left(&pid);
            self.remove_participant(&mut st, &channel, &pid, true);
        }
        drop(st);
        if self.config.presence_interval_ms == 0 {
            self.flush();
        }
    }

    fn resync(&self) {
        let mut st = self.state.lock();
        st.synced.clear();
        let rooms: Vec<(String, String)> = st
            .rooms
            .iter()
            .filter(|(_, r)| r.participants.values().any(|e| e.conn.is_some()))
            .map(|(ch, r)| (r.app.clone(), ch.clone()))
            .collect();
        drop(st);
        if !rooms.is_empty() {
            let _ = self.tasks.send(Task::Resync(rooms));
        }
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
                    Task::Resync(list) => {
                        // Not inline: the flush timer keeps running meanwhile.
                        tokio::spawn(async move {
                            for (app, channel) in list {
                                rooms.ensure_synced(&app, &channel).await;
                            }
                        });
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
                rooms.ensure_synced(&who.app, &id).await;
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
                    node: None,
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
                rooms.ensure_synced(&who.app, &id).await;
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
                    node: None,
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
                    node: None,
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
                    node: None,
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
                            node: None,
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
                    node: None,
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
                    node: None,
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
                    node: None,
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
                    node: None,
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
                    node: None,
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
                node: None,
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
            node: None,
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
                channel: channel.to_owned(),
                participants: Some(Vec::new()),
                count: None,
            });
        };
        if room.participants.len() > rooms.config.presence_list_max {
            RoomOk::Enter(EnterOk {
                participant_id: pid,
                channel: channel.to_owned(),
                participants: None,
                count: Some(room.participants.len() as u64),
            })
        } else {
            let list = room.participants.values().map(|e| e.p.clone()).collect();
            RoomOk::Enter(EnterOk {
                participant_id: pid,
                channel: channel.to_owned(),
                participants: Some(list),
                count: None,
            })
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
            node: None,
            change: Some(c),
        })
    }

    /// A registry whose timer never fires during a test (flushes are called by hand), with
    /// one local participant `l` whose frames the test reads.
    fn setup(list_max: usize) -> (Arc<Rooms>, crate::OutboundRx) {
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

    fn drain(rx: &mut crate::OutboundRx) -> Vec<RoomEvent> {
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

    /// A broker standing for other nodes: deliveries as the in-process one, and a canned
    /// answer to room snapshots.
    struct Others {
        local: Arc<LocalBroker>,
        answer: Mutex<Vec<crate::broker::RoomSnapshot>>,
    }

    impl Broker for Others {
        fn publish(&self, envelopes: &[Envelope]) {
            self.local.publish(envelopes);
        }
        fn subscribe(&self, subscriber: Arc<dyn BrokerSubscriber>) {
            self.local.subscribe(subscriber);
        }
        fn room_snapshot(&self, _app: &str, _channel: &str) -> crate::broker::SnapshotFuture {
            Box::pin(std::future::ready(Ok(self.answer.lock().clone())))
        }
    }

    fn remote(c: RoomChange, node: &str) -> Envelope {
        Envelope::Room(RoomEnvelope {
            app: "app".into(),
            channel: "ch".into(),
            to: None,
            skip: None,
            frame: Bytes::new(),
            change: Some(c),
            node: Some(node.into()),
        })
    }

    fn with_others() -> (Arc<Rooms>, Arc<Others>, crate::OutboundRx) {
        let config = RoomsConfig { presence_interval_ms: 3_600_000, ..RoomsConfig::default() };
        let others = Arc::new(Others { local: LocalBroker::new(), answer: Mutex::new(Vec::new()) });
        let rooms = Rooms::start(others.clone(), Arc::new(Ids(AtomicU64::new(0))), config);
        let hub = Hub::new(QueueLimits { frames: 1024, bytes: 1 << 20 });
        let (conn, rx) = hub.new_conn("c1".into(), "app", "u-l");
        let me = participant("l", json_obj());
        rooms.note_local("app", "ch", &me, &conn);
        rooms.receive(&change(RoomChange::Entered { participant: me }));
        rooms.flush();
        (rooms, others, rx)
    }

    fn pids(rooms: &Rooms) -> Vec<String> {
        let st = rooms.state.lock();
        st.rooms.get("ch").map(|r| r.participants.keys().cloned().collect()).unwrap_or_default()
    }

    /// A synchronisation adds what another node holds and this one never saw, and drops what
    /// that node no longer lists (known from before the question); other nodes' participants
    /// and this node's stay.
    #[tokio::test]
    async fn a_snapshot_adds_the_unseen_and_drops_what_a_node_no_longer_lists() {
        let (rooms, others, mut rx) = with_others();
        rooms.receive(&remote(RoomChange::Entered { participant: participant("x", json_obj()) }, "n2"));
        rooms.receive(&remote(RoomChange::Entered { participant: participant("z", json_obj()) }, "n3"));
        rooms.flush();
        drain(&mut rx);
        *others.answer.lock() = vec![crate::broker::RoomSnapshot {
            node: "n2".into(),
            participants: vec![participant("y", json_obj())],
        }];
        rooms.ensure_synced("app", "ch").await;
        assert_eq!(pids(&rooms), vec!["l", "y", "z"]);
        rooms.flush();
        let got = drain(&mut rx);
        assert!(got.iter().any(|e| matches!(e, RoomEvent::ParticipantAdded { participant, .. } if participant.participant_id == "y")), "{got:?}");
        assert!(got.iter().any(|e| matches!(e, RoomEvent::ParticipantRemoved { participant, .. } if participant.participant_id == "x")), "{got:?}");
        // Synchronised: not asked again until a resync.
        *others.answer.lock() = Vec::new();
        rooms.ensure_synced("app", "ch").await;
        assert_eq!(pids(&rooms), vec!["l", "y", "z"]);
        // A participant that left is not brought back by an answer made before it left.
        rooms.receive(&remote(RoomChange::Left { participant_id: "y".into() }, "n2"));
        *others.answer.lock() = vec![crate::broker::RoomSnapshot {
            node: "n2".into(),
            participants: vec![participant("y", json_obj())],
        }];
        crate::broker::RoomDirectory::resync(&*rooms);
        rooms.state.lock().synced.clear();
        rooms.ensure_synced("app", "ch").await;
        assert_eq!(pids(&rooms), vec!["l", "z"]);
    }

    /// A node gone: its participants leave every other node's replica, with presence to the
    /// local participants; the others stay. This node answers snapshots with its own only.
    #[tokio::test]
    async fn a_gone_nodes_participants_are_removed() {
        let (rooms, _others, mut rx) = with_others();
        rooms.receive(&remote(RoomChange::Entered { participant: participant("x", json_obj()) }, "n2"));
        rooms.receive(&remote(RoomChange::Entered { participant: participant("w", json_obj()) }, "n2"));
        rooms.receive(&remote(RoomChange::Entered { participant: participant("z", json_obj()) }, "n3"));
        rooms.flush();
        drain(&mut rx);
        let dir: &dyn crate::broker::RoomDirectory = &*rooms;
        let mine = dir.local_participants("app", "ch");
        assert_eq!(mine.iter().map(|p| p.participant_id.as_str()).collect::<Vec<_>>(), vec!["l"]);
        assert!(dir.local_participants("other-app", "ch").is_empty());
        dir.node_gone("n2");
        assert_eq!(pids(&rooms), vec!["l", "z"]);
        rooms.flush();
        let removed: Vec<String> = drain(&mut rx)
            .into_iter()
            .filter_map(|e| match e {
                RoomEvent::ParticipantRemoved { participant, .. } => Some(participant.participant_id),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec!["w", "x"]);
        dir.node_gone("n9");
        assert_eq!(pids(&rooms), vec!["l", "z"], "an unknown node changes nothing");
    }

    /// With a recorder, this node's participants' changes reach the store's presence outbox
    /// with stable ids, in order; other nodes' participants are not written (their node does).
    #[tokio::test]
    async fn presence_of_local_participants_goes_to_the_outbox() {
        let (rooms, mut rx) = setup(1000);
        let store: herald_store::DynStore =
            Arc::new(herald_store::memory::MemoryStore::new(Arc::new(herald_store::NullSink)));
        let events: HashSet<String> = ["participant_added", "participant_updated", "participant_removed"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let recorder = PresenceRecorder::start(
            store.clone(),
            Arc::new(crate::SystemClock),
            "n1".to_owned(),
            events,
            100,
            Box::new(|_| {}),
        );
        rooms.record_presence(recorder.clone());
        let hub = Hub::new(QueueLimits { frames: 64, bytes: 1 << 20 });
        let (conn, _rx2) = hub.new_conn("c2".into(), "app", "u-m");
        let m = participant("m", json_obj());
        rooms.note_local("app", "ch", &m, &conn);
        rooms.receive(&change(RoomChange::Entered { participant: m }));
        rooms.receive(&change(RoomChange::Updated {
            participant: participant("m", serde_json::json!({"v": 1})),
        }));
        rooms.receive(&remote(RoomChange::Entered { participant: participant("x", json_obj()) }, "n2"));
        rooms.receive(&change(RoomChange::Left { participant_id: "m".into() }));
        assert!(recorder.flush(Duration::from_secs(10)).await, "written");
        let rows = store.hooks().unwrap().hook_presence("http://h", "ch", 100).await.unwrap();
        let keys: Vec<&str> = rows.iter().map(|r| r.event.key.as_str()).collect();
        assert_eq!(keys, vec!["ch:m:added", "ch:m:updated:1", "ch:m:removed"]);
        let data: Value = serde_json::from_str(&rows[1].event.data).unwrap();
        assert_eq!(data["event"], "participant_updated");
        assert_eq!(data["participant"]["attributes"]["v"], 1);
        drain(&mut rx);
    }
}
