//! The Herald node: who is connected to what, appending through the [`Store`], fan-out of
//! every committed entry into bounded per-connection queues, pub/sub subjects, and resume.
//!
//! The engine owns no socket and reads no clock of its own: the gateway (in `herald-server`)
//! hands it authenticated [`Principal`]s and typed requests, and drains each connection's
//! queue onto its socket; time and ids come from the injected [`Clock`] and [`IdGen`].
//!
//! # Layout
//!
//! - [`broker`]: the [`Broker`] trait (events between nodes, with its guarantees), the
//!   in-process [`LocalBroker`], and [`BrokerSink`], the store's `CommitSink` that turns
//!   committed entries into events, serialized once, and publishes them.
//! - [`hub`]: this node's fan-out index of online connections (channel → connections of its
//!   online members, user → connections, subject →
//!   subscribers), subscribed to the broker, delivering shared bytes to every recipient.
//! - [`conn`]: one connection's shared state: its bounded queue, the overflow kick, resume.
//! - [`events`]: a stored entry → its wire event.
//! - [`ops`]: every request of PROTOCOL.md §4, with its authorisation and limits.
//! - [`private`]: private channels (§9): the signed join and the app secrets.
//! - [`rules`]: who may write what, as the [`herald_store::Guard`] each write carries to the
//!   store (which evaluates it atomically and decides nothing).
//! - [`rooms`]: rooms of participants and streams (§8): a replica of every room on every
//!   node, built from broker envelopes; coalesced presence; credit-based streams.
//! - [`presence_outbox`]: room presence written to the store's outbox for the webhooks.
//! - [`throttle`]: per (user, channel) throttles of `typing` and `read`.
//! - [`error`]: [`EngineError`] and its one mapping to protocol error codes.
//!
//! # Invariants
//!
//! - Every event that leaves the engine goes engine → broker → hub (log events, receipts,
//!   deletions, typing, ephemeral, publications); no op delivers to a hub directly.
//! - A connection receives the log events of a channel in strictly increasing `seq` order,
//!   without gaps from its resume point and without duplicates: the broker delivers a
//!   channel's entries in `seq` order, and resume buffers live events until the replay has
//!   caught up.
//! - Fan-out never blocks: a full queue kicks its connection (close code 4008), it never
//!   slows the writer or other connections.

pub mod broker;
pub mod conn;
pub mod e2ee;
pub mod error;
pub mod events;
pub mod hub;
pub mod ops;
pub mod presence_outbox;
pub mod private;
pub mod rooms;
pub mod rules;
pub mod throttle;

pub use broker::{Broker, BrokerSink, Envelope, LocalBroker, WatchFuture};
pub use conn::{ConnShared, Outbound, OutboundRx, QueueLimits, TryRecvError};
pub use error::EngineError;
pub use hub::Hub;
pub use ops::{Backends, ConnHandle, Engine, EngineConfig, OkReply, ResumeEnd};
pub use private::AppSecrets;
pub use rooms::{RoomGuard, RoomOk, Rooms, RoomsConfig};

use herald_proto::model::UserInfo;
pub use herald_store::{CommitSink, Store};

/// The time source, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// The source of server-assigned ids (channels, messages, reactions, connections).
pub trait IdGen: Send + Sync + 'static {
    fn new_id(&self) -> String;
}

/// UUIDv7 ids: time-ordered, so ids sort roughly by creation.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7;

impl IdGen for UuidV7 {
    fn new_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub app: String,
    pub user: UserInfo,
    pub grants: Grants,
}

/// The grants of PROTOCOL.md §2 that the engine acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    pub channels_create: bool,
    pub channels_admin: bool,
    pub keeper: bool,
    pub server: bool,
    pub admin: bool,
}

impl Grants {
    /// Parses a token's `grants` claim; absent means the ordinary user set.
    pub fn from_claim(grants: Option<&[String]>) -> Grants {
        let Some(list) = grants else {
            return Grants { channels_create: true, ..Grants::default() };
        };
        let mut g = Grants::default();
        for s in list {
            match s.as_str() {
                "channels:create" => g.channels_create = true,
                "channels:admin" => g.channels_admin = true,
                "keeper" => g.keeper = true,
                "server" => g.server = true,
                "admin" => g.admin = true,
                _ => {}
            }
        }
        // `admin` implies every other grant.
        if g.admin {
            g.channels_create = true;
            g.channels_admin = true;
            g.server = true;
        }
        g
    }
}
