//! The [`Broker`]: how every event that leaves a node reaches the hubs of every node (this one
//! included), and [`LocalBroker`], the in-process default of a single node.
//!
//! Flow: the store commits and hands the [`Applied`] to the engine's [`BrokerSink`] (its
//! `CommitSink`), which turns it into [`Envelope`]s, each event serialized once, and publishes
//! them; typing, ephemeral signals and subject publications are published by the ops directly.
//! Each node's [`Hub`](crate::Hub) subscribes and delivers what it receives to its own online
//! connections. The store never calls a hub, and a hub never reads the store on this path.
//!
//! # Guarantees a broker gives its subscribers
//!
//! - **Per-channel order.** Channel envelopes that carry a `seq` (log entries) of one channel
//!   reach a subscriber in increasing `seq` order. [`LocalBroker`] delivers every envelope
//!   synchronously, in publish order, which is commit order: it has no gaps.
//! - **Log events are recoverable, signals are not.** A broker over a network (NATS) may lose
//!   envelopes (a restart, a slow consumer). Log events are in the store, so such a broker must
//!   notice a gap by `seq` (the next `seq` of a channel is not the last one + 1) and fill it from
//!   the store (`Store::log`, rebuilt with [`crate::events::event_of`]) before delivering what
//!   follows; a subscriber is never handed a gap. Envelopes without a `seq` (typing,
//!   ephemeral, receipts, publications, deletions) are at most once: lost is lost.
//! - **Membership travels with the log.** `joined` is applied to a hub's index before the
//!   envelope is delivered (a joiner receives its own `member_joined`), `left` and `deleted`
//!   after (a leaver receives its own `member_left`), so every hub's index follows the store's
//!   commit order. A broker that fills a gap from the store rebuilds them from the entries
//!   (`member_joined` / `member_left` name the user in `reference`).
//! - `publish` never blocks the caller: it runs on the store's commit path.
//!
//! # Interest
//!
//! [`Broker::watch_subject`] / [`Broker::unwatch_subject`] tell a broker which subjects this
//! node's connections subscribe to, so a networked broker subscribes only to those; the
//! in-process one ignores them. `watch_subject` is called for every `subscribe` and its future
//! resolves once publications from every node reach this node (a networked broker: its
//! subscription is confirmed by the server), so a `subscribe` reply keeps its promise (§10).
//!
//! [`Broker::health`] says whether the broker can carry traffic now (for `/healthz`).

use crate::events::{event_of, to_bytes};
use bytes::Bytes;
use herald_proto::EntryKind;
use herald_proto::frames::Event;
use herald_store::{Applied, CommitSink, Outcome};
use parking_lot::RwLock;
use std::sync::Arc;

/// An event of one channel, for the online connections of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub app: String,
    pub channel: String,
    /// The entry's `seq` for log events (order, resume, gap detection); `None` for signals.
    pub seq: Option<u64>,
    /// The event, serialized once; every recipient gets these bytes.
    pub frame: Bytes,
    /// A user whose connections do not receive it (the sender of typing and ephemeral).
    pub skip_user: Option<String>,
    /// Users who became members: added to the index before delivery. The first envelope of a
    /// commit carries every join of that commit, so the creator of a channel and those it
    /// lists receive the `channel_created` and every `member_joined` of it.
    pub joined: Vec<String>,
    /// Users who stopped being members: removed after delivery (the last envelope of a commit
    /// carries them, so a leaver receives its own `member_left`).
    pub left: Vec<String>,
    /// The channel is gone: removed from the index after delivery.
    pub deleted: bool,
    /// When the store committed it, if this process saw the commit: the hub reports commit →
    /// queued latency from it (a metric only; a networked broker leaves it `None`).
    pub committed_at: Option<std::time::Instant>,
}

impl ChannelEvent {
    /// A signal (no `seq`, no membership change).
    pub fn signal(app: &str, channel: &str, frame: Bytes, skip_user: Option<&str>) -> ChannelEvent {
        ChannelEvent {
            app: app.to_owned(),
            channel: channel.to_owned(),
            seq: None,
            frame,
            skip_user: skip_user.map(str::to_owned),
            joined: Vec::new(),
            left: Vec::new(),
            deleted: false,
            committed_at: None,
        }
    }
}

/// One unit of traffic between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    Channel(ChannelEvent),
    /// Room traffic (§8): presence changes, room messages, stream control and chunks.
    Room(crate::rooms::RoomEnvelope),
    /// A publication for the subscribers of `(app, subject)`.
    Publication {
        app: String,
        subject: String,
        frame: Bytes,
    },
    /// Close every connection of `user` of `app`, on every node, with close code 4403
    /// (`POST /v1/users/{id}/disconnect`). At most once, like a signal.
    Disconnect {
        app: String,
        user: String,
    },
    /// An event for the connections that declared device `device` of `app` (§7: a `dm`).
    /// At most once like a signal: the DM itself waits in the device's inbox until acked.
    Device {
        app: String,
        device: String,
        /// The DM's id: a connection still sending its inbox drops a live copy of an entry it
        /// sends from the inbox.
        id: String,
        frame: Bytes,
    },
    /// An event for the connections of `app` with the `keeper` grant (§7: `keys_needed`,
    /// `member_left`). With `skip_members_of`, a keeper connection indexed under that channel
    /// (a member, which gets the channel's own copy) is skipped.
    Keeper {
        app: String,
        skip_members_of: Option<String>,
        frame: Bytes,
    },
}

/// Receives every envelope a broker carries (a node's hub).
pub trait BrokerSubscriber: Send + Sync + 'static {
    fn receive(&self, envelope: &Envelope);
}

/// Carries envelopes to the hubs of every node. See the module doc for the guarantees.
pub trait Broker: Send + Sync + 'static {
    /// Hands envelopes, in order, toward every subscriber. Never blocks.
    fn publish(&self, envelopes: &[Envelope]);

    /// Adds a subscriber (this node's hub), which from then on receives every envelope.
    fn subscribe(&self, subscriber: Arc<dyn BrokerSubscriber>);

    /// A connection of this node subscribes to `(app, subject)`. Idempotent (called for every
    /// `subscribe`, not only the first); resolves when publications to it from any node will
    /// reach this node, or with why they cannot (the broker is unreachable).
    fn watch_subject(&self, _app: &str, _subject: &str) -> WatchFuture {
        Box::pin(std::future::ready(Ok(())))
    }

    /// This node's last connection subscribed to `(app, subject)` is gone.
    fn unwatch_subject(&self, _app: &str, _subject: &str) {}

    /// Whether the broker can carry envelopes now; `Err` says why not. Must answer at once.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// The participants the other nodes hold of a room, for a node that becomes interested
    /// in it (it may have started after they entered): each node answers with its own. The
    /// in-process broker has no other nodes.
    fn room_snapshot(&self, _app: &str, _channel: &str) -> SnapshotFuture {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// The rooms of this node, which answer other nodes' [`Broker::room_snapshot`]s and hear
    /// of nodes that went away. Held weakly.
    fn serve_rooms(&self, _rooms: std::sync::Weak<dyn RoomDirectory>) {}

    /// This node's id in a deployment of several nodes (as [`RoomDirectory::node_gone`] names
    /// nodes); `None` for the in-process broker.
    fn node_id(&self) -> Option<String> {
        None
    }

    /// The other nodes alive, as far as this node can tell: for writing off what dead nodes
    /// left in the store (their participants' removals). `None` while the broker cannot tell
    /// yet (a networked broker that has not listened for a whole node timeout). The
    /// in-process broker is the only node: no other is alive.
    fn live_nodes(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

/// One node's participants of one room, as [`Broker::room_snapshot`] collects them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomSnapshot {
    pub node: String,
    pub participants: Vec<herald_proto::rooms::Participant>,
}

/// What [`Broker::room_snapshot`] returns.
pub type SnapshotFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<RoomSnapshot>, String>> + Send>>;

/// This node's rooms, as a networked broker asks about them (a node's [`crate::Rooms`]).
pub trait RoomDirectory: Send + Sync + 'static {
    /// This node's own participants of a room (those whose connection is here).
    fn local_participants(&self, app: &str, channel: &str) -> Vec<herald_proto::rooms::Participant>;
    /// `node` was not heard from for the broker's node timeout: its participants are gone.
    fn node_gone(&self, node: &str);
    /// Envelopes may have been lost (a reconnect), or a node thought gone is back: every room
    /// with a participant here is to be synchronised again.
    fn resync(&self);
}

/// What [`Broker::watch_subject`] returns.
pub type WatchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The in-process broker: every envelope goes synchronously, in publish order, to every
/// subscriber. With one subscriber it is one node; with several it stands for several nodes
/// sharing a store in tests.
#[derive(Default)]
pub struct LocalBroker {
    subscribers: RwLock<Vec<Arc<dyn BrokerSubscriber>>>,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").field("subscribers", &self.subscribers.read().len()).finish()
    }
}

impl LocalBroker {
    pub fn new() -> Arc<LocalBroker> {
        Arc::new(LocalBroker::default())
    }
}

impl Broker for LocalBroker {
    fn publish(&self, envelopes: &[Envelope]) {
        let subscribers = self.subscribers.read();
        for e in envelopes {
            for s in subscribers.iter() {
                s.receive(e);
            }
        }
    }

    fn subscribe(&self, subscriber: Arc<dyn BrokerSubscriber>) {
        self.subscribers.write().push(subscriber);
    }
}

/// The store's [`CommitSink`]: turns every committed [`Applied`] into envelopes, each event
/// serialized once, and publishes them, in commit order.
pub struct BrokerSink {
    broker: Arc<dyn Broker>,
}

impl std::fmt::Debug for BrokerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSink").finish_non_exhaustive()
    }
}

impl BrokerSink {
    pub fn new(broker: Arc<dyn Broker>) -> Arc<BrokerSink> {
        Arc::new(BrokerSink { broker })
    }
}

impl CommitSink for BrokerSink {
    fn committed(&self, applied: &Applied) {
        let envelopes = envelopes_of(applied);
        if !envelopes.is_empty() {
            self.broker.publish(&envelopes);
        }
    }
}

/// The envelopes of one commit: its log entries in `seq` order, then any receipt or deletion.
pub fn envelopes_of(applied: &Applied) -> Vec<Envelope> {
    let message = match &applied.outcome {
        Outcome::Message { message, .. } => Some(&**message),
        _ => None,
    };
    let committed_at = std::time::Instant::now();
    let mut out = Vec::with_capacity(applied.entries.len() + 1);
    let users_of = |kind: EntryKind| -> Vec<String> {
        applied.entries.iter().filter(|e| e.kind == kind).map(|e| e.reference.clone()).collect()
    };
    let (mut joined, mut left) = (users_of(EntryKind::MemberJoined), users_of(EntryKind::MemberLeft));
    let last = applied.entries.len().saturating_sub(1);
    for (i, e) in applied.entries.iter().enumerate() {
        let event = event_of(e, message.filter(|m| m.seq == e.seq));
        out.push(Envelope::Channel(ChannelEvent {
            app: applied.app.clone(),
            channel: e.channel_id.clone(),
            seq: Some(e.seq),
            frame: to_bytes(&event),
            skip_user: None,
            joined: std::mem::take(&mut joined),
            left: if i == last { std::mem::take(&mut left) } else { Vec::new() },
            deleted: false,
            committed_at: Some(committed_at),
        }));
    }
    match (&applied.outcome, &applied.channel) {
        (Outcome::ChannelDeleted { .. }, Some(ch)) => {
            let event = Event::ChannelDeleted {
                channel: ch.id.clone(),
                name: ch.name.clone(),
                title: ch.title.clone(),
            };
            let mut ev = ChannelEvent::signal(&applied.app, &ch.id, to_bytes(&event), None);
            ev.deleted = true;
            out.push(Envelope::Channel(ev));
        }
        (Outcome::Read { user, message_id, .. }, Some(ch)) => {
            let event = Event::MessageRead {
                channel: ch.id.clone(),
                user: user.to_owned(),
                message_id: message_id.clone(),
            };
            out.push(Envelope::Channel(ChannelEvent::signal(&applied.app, &ch.id, to_bytes(&event), None)));
        }
        _ => {}
    }
    out
}
