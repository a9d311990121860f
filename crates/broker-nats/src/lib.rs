//! The networked [`Broker`] of a Herald cluster: several equal `herald serve` nodes share one
//! store (PostgreSQL) and carry their envelopes to each other over NATS. It never decides
//! anything about channels or users; it moves envelopes and keeps each channel's log events
//! in `seq` order, gapless, exactly once, on every node.
//!
//! # How an envelope travels
//!
//! [`NatsBroker::publish`] (on the store's commit path, so it never blocks) delivers to this
//! node's hub at once, synchronously, through the [`sequencer`], and queues the
//! envelope (bounded; what overflows is counted and, for log events, recovered by the other
//! nodes' gap fill) for a task that publishes it to NATS in order. Other nodes receive it,
//! drop it if it is their own (every message names its node), and deliver it through their
//! sequencer. The subjects and the message format are in [`wire`].
//!
//! # Interest: every channel, some subjects
//!
//! A node subscribes to `{prefix}.ch.>`: every event of every channel reaches every node,
//! whether or not a member is online there. The cost is bandwidth and decoding: each node
//! receives the whole cluster's channel traffic (O(nodes × events) on the NATS server), and
//! keeps a sequencer entry (a channel id, a `seq`, a little more) for each channel it has seen.
//! Per-channel interest would cut that to the channels with an online member, but the hub
//! learns memberships from this very stream (a `member_joined` committed on another node must
//! reach a node before it knows the joiner is a member), and a gap can only be noticed on a
//! channel whose `seq` one follows; subscribing per channel as members connect would race with
//! both. Subjects are per interest: [`Broker::watch_subject`] subscribes to
//! `{prefix}.pub.{app}.{subject}` and resolves once the server confirmed it (a round trip on
//! this node's `{prefix}.sync.{node}` subject after the `SUB`), and `unwatch_subject` drops it.
//!
//! # Gaps
//!
//! The sequencer holds what comes after a gap and reads the missing entries from the store
//! (`Store::log`, page by page, in a task per channel: a fill never blocks other channels or
//! the commit path). A lost message that no later one follows is found by comparing every
//! known channel's last delivered `seq` with the store's `head_seq`: after every reconnect and
//! slow-consumer report of the NATS client (once this node's subscriptions are confirmed in
//! force again), and periodically for the channels active recently
//! ([`NatsConfig::sweep_interval`]).
//!
//! # Memory
//!
//! The sequencer keeps, per channel seen, its id, last `seq` and activity time (about 150
//! bytes), plus what is held behind a gap (bounded per channel). A channel idle for
//! [`NatsConfig::forget_after`] is forgotten; seen again, it is probed like a new one.
//!
//! # Layout
//!
//! - [`wire`]: subjects, the token encoding, the message format. Pure.
//! - [`sequencer`]: per-channel order, duplicates, held envelopes, what a fill delivers. Pure.
//! - [`testing`]: a `nats-server` of a test's own, for tests here and in other crates.
//! - this file: the NATS connection, the tasks, [`NatsConfig`], [`NatsStats`].
//!
//! Every task this broker spawns stops when it is dropped or [`NatsBroker::close`]d.

pub mod sequencer;
pub mod testing;
pub mod wire;

use async_nats::connection::State;
use bytes::Bytes;
use futures::StreamExt;
use herald_engine::broker::{
    Broker, BrokerSubscriber, Envelope, RoomDirectory, RoomSnapshot, SnapshotFuture, WatchFuture,
};
use herald_store::{DynStore, Store};
use parking_lot::{Mutex, RwLock};
use sequencer::{FillStep, Sequencer, Verdict};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Sequencer shards: channels are spread over this many locks.
const SHARDS: usize = 16;
/// Times a fill retries a store that shows nothing after the last delivered `seq` before it
/// gives up on the gap (see [`Sequencer::skip_gap`]).
const MAX_STALLS: u32 = 6;
/// Longest wait between two attempts of a fill whose store reads fail.
const MAX_FILL_BACKOFF: Duration = Duration::from_secs(5);

/// How to reach NATS and how this node behaves on it.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    /// This node's id, in every message it sends (a node ignores its own). Unique per
    /// process: default a fresh UUIDv7.
    pub node_id: String,
    /// The first subject tokens of every subject (default `herald`), so that several
    /// deployments (or tests) can share one NATS. Tokens of `[A-Za-z0-9_-]` joined by `.`.
    pub prefix: String,
    /// How long [`NatsBroker::connect`] waits for the first connection (default 5 s). After
    /// it, the client reconnects forever.
    pub connect_timeout: Duration,
    /// Longest wait between two reconnect attempts (default 2 s; the delay doubles from 50 ms).
    pub reconnect_max_delay: Duration,
    /// How long a server round trip may take (`watch_subject`, the check after a reconnect);
    /// default 5 s.
    pub confirm_timeout: Duration,
    /// Envelopes held per channel behind a gap (default 1024); what does not fit is read from
    /// the store.
    pub max_held_per_channel: usize,
    /// Entries per `Store::log` read of a fill (default 256).
    pub fill_page: u32,
    /// Store reads at once, fills and `head_seq` checks together (default 16).
    pub check_concurrency: usize,
    /// Envelopes queued toward NATS (default 65 536); past that they are dropped (counted).
    pub outgoing_capacity: usize,
    /// Messages the NATS client buffers per subscription before it reports a slow consumer
    /// and drops (default 65 536).
    pub subscription_capacity: usize,
    /// How often the channels active in the last [`NatsConfig::sweep_window`] are compared
    /// with the store's head (default every 30 s; `None`: never, only after reconnects).
    pub sweep_interval: Option<Duration>,
    /// Which channels a sweep checks: those with a log event in this window (default 120 s).
    pub sweep_window: Duration,
    /// A channel first seen past `seq` 1: how many entries before it are read to find those
    /// committed since this node started (default 64; 0: none, it starts where first seen).
    /// See [`sequencer`].
    pub probe_window: u32,
    /// How far the clocks of the nodes may disagree, for that probe (default 2 s): entries
    /// stamped up to this long before this node started count as committed since.
    pub clock_skew: Duration,
    /// A channel with no log event for this long is forgotten by the sequencer, so its memory
    /// follows the channels active recently rather than every channel ever seen (default 1 h;
    /// `None`: never). One seen again is probed like a new one, its entries stamped before
    /// this window (less `clock_skew`) taken as delivered. Must exceed `clock_skew`.
    pub forget_after: Option<Duration>,
    /// Largest message put back together from parts (default 80 MiB): a payload over the
    /// server's `max_payload` (an attachment, a stream chunk) crosses as parts of it.
    pub max_message_bytes: usize,
    /// How often this node says it is alive (default 2 s).
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is gone (default 10 s): every other node removes
    /// its room participants. Not applied while this node itself hears nothing (its own
    /// heartbeats do not come back: it is the one cut off).
    pub node_timeout: Duration,
    /// How long a room snapshot waits for the other nodes' answers (default 1 s); it ends as
    /// soon as every node known alive has answered.
    pub room_sync_timeout: Duration,
}

impl NatsConfig {
    /// The defaults, for the NATS at `url`.
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            node_id: uuid::Uuid::now_v7().to_string(),
            prefix: "herald".to_owned(),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            confirm_timeout: Duration::from_secs(5),
            max_held_per_channel: 1024,
            fill_page: 256,
            check_concurrency: 16,
            outgoing_capacity: 65_536,
            subscription_capacity: 65_536,
            sweep_interval: Some(Duration::from_secs(30)),
            sweep_window: Duration::from_secs(120),
            probe_window: 64,
            clock_skew: Duration::from_secs(2),
            forget_after: Some(Duration::from_secs(3600)),
            max_message_bytes: 80 << 20,
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
            room_sync_timeout: Duration::from_secs(1),
        }
    }
}

/// Why [`NatsBroker::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("nats: invalid configuration: {0}")]
    Config(String),
    #[error("nats: cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("nats: {0}")]
    Setup(String),
}

/// What the broker counted since it started (a snapshot: [`NatsBroker::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Log events (with a `seq`) delivered to this node's hub, from anywhere.
    pub delivered: u64,
    /// Envelopes without `seq` (signals, receipts, deletions, publications) delivered.
    pub signals_delivered: u64,
    /// Log events dropped because their `seq` was already delivered.
    pub duplicates_dropped: u64,
    /// Fills started: a gap seen, or the store's head ahead of what was delivered.
    pub gaps: u64,
    /// Fills finished.
    pub gaps_filled: u64,
    /// Entries read from the store and delivered by fills.
    pub entries_filled: u64,
    /// Gaps given up on (the store had no such entries: a deleted channel).
    pub gaps_skipped: u64,
    /// Envelopes that found no room behind a gap (read from the store instead).
    pub held_overflow: u64,
    /// Messages handed to NATS.
    pub published: u64,
    /// Messages NATS refused (a closed client, a payload over the server's maximum).
    pub publish_failed: u64,
    /// Envelopes not sent to NATS: the outgoing queue was full (or a test asked).
    pub outgoing_dropped: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages that could not be read.
    pub decode_errors: u64,
    /// `head_seq` reads (after reconnects, slow consumers and sweeps).
    pub head_checks: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Slow-consumer reports of the NATS client (one per message it dropped before this node
    /// read it).
    pub slow_consumers: u64,
    /// Channels the sequencer knows.
    pub channels: u64,
    /// Channels forgotten for being idle ([`NatsConfig::forget_after`]).
    pub channels_forgotten: u64,
    /// Messages over the server's `max_payload` sent as parts.
    pub split_messages: u64,
    /// Messages whose parts could not be put back together (a part lost, or over
    /// [`NatsConfig::max_message_bytes`]).
    pub parts_lost: u64,
    /// Other nodes heard from within [`NatsConfig::node_timeout`].
    pub nodes: u64,
    /// Nodes declared gone (silent past the timeout).
    pub nodes_gone: u64,
    /// Room snapshots asked of the other nodes.
    pub room_snapshots: u64,
}

#[derive(Default)]
struct Counters {
    signals_delivered: AtomicU64,
    gaps: AtomicU64,
    gaps_filled: AtomicU64,
    published: AtomicU64,
    publish_failed: AtomicU64,
    outgoing_dropped: AtomicU64,
    received: AtomicU64,
    decode_errors: AtomicU64,
    head_checks: AtomicU64,
    connects: AtomicU64,
    slow_consumers: AtomicU64,
    forgotten: AtomicU64,
    split_messages: AtomicU64,
    parts_lost: AtomicU64,
    nodes_gone: AtomicU64,
    room_snapshots: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the NATS client's event callback shares with the broker (it exists before the broker).
#[derive(Default)]
struct Events {
    counters: Counters,
    /// Compare every known channel with the store (after a reconnect or a slow consumer).
    check: Notify,
}

/// One watched subject: its subscription task, and whether its `SUB` is out.
struct Watch {
    generation: u64,
    /// `None` while subscribing; then whether it worked.
    ready: watch::Receiver<Option<Result<(), String>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    shards: Vec<Mutex<Sequencer>>,
    subscribers: RwLock<Vec<Arc<dyn BrokerSubscriber>>>,
    /// Weak: the store's commit sink holds this broker.
    store: RwLock<Option<Weak<dyn Store>>>,
    outgoing: mpsc::Sender<Envelope>,
    lose_outgoing: AtomicBool,
    watches: Mutex<HashMap<(String, String), Watch>>,
    watch_generation: AtomicU64,
    sync_subject: String,
    syncs: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_sync: AtomicU64,
    events: Arc<Events>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    /// When this node started (ms since the epoch), less the clock skew: the probe's bound.
    since_ms: i64,
    /// Store reads at once (fills and head checks): a reconnect that finds thousands of
    /// channels behind must not open thousands of queries together.
    reads: tokio::sync::Semaphore,
    /// This node's rooms, which answer snapshots and hear of nodes gone.
    rooms: RwLock<Option<Weak<dyn RoomDirectory>>>,
    /// Other nodes → when last heard from.
    nodes: Mutex<HashMap<String, Instant>>,
    /// Nodes declared gone (one heard from again is back: the rooms resynchronise).
    gone: Mutex<std::collections::HashSet<String>>,
    /// When this node's own heartbeat last came back.
    own_seen: Mutex<Instant>,
    /// When this node started listening to heartbeats.
    started: Instant,
    /// Ids of split messages.
    next_split: AtomicU64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The NATS broker of one node. See the crate doc.
pub struct NatsBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("node_id", &self.inner.config.node_id)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

impl NatsBroker {
    /// Connects to NATS (failing with why if it cannot within `connect_timeout`), subscribes
    /// to every channel's events and starts its tasks. Call [`NatsBroker::set_store`] once the
    /// store (whose sink is this broker) is open: gap fill reads it.
    pub async fn connect(config: NatsConfig) -> Result<Arc<NatsBroker>, NatsError> {
        if !wire::valid_prefix(&config.prefix) {
            return Err(NatsError::Config(format!(
                "prefix {:?} must be tokens of [A-Za-z0-9_-] joined by '.'",
                config.prefix
            )));
        }
        if config.node_id.is_empty() {
            return Err(NatsError::Config("node_id is empty".into()));
        }
        if config.forget_after.is_some_and(|f| f <= config.clock_skew) {
            return Err(NatsError::Config("forget_after must be longer than clock_skew".into()));
        }
        let events = Arc::new(Events::default());
        let max_delay = config.reconnect_max_delay;
        let on_event = events.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("herald {}", config.node_id))
            .connection_timeout(config.connect_timeout)
            .subscription_capacity(config.subscription_capacity.max(1))
            .reconnect_delay_callback(move |attempts| {
                let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
                Duration::from_millis(50).saturating_mul(1 << exp.min(10)).min(max_delay)
            })
            .event_callback(move |event| {
                let events = on_event.clone();
                async move { on_nats_event(&events, event) }
            });
        let url = shown_url(&config.url);
        let servers = config
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NatsError::Config(format!("url {:?}: {e}", shown_url(&config.url))))?;
        let connect_error = |reason: String| NatsError::Connect { url: url.clone(), reason };
        // The client's own timeout covers one attempt's handshake; this one the whole call.
        let client = match tokio::time::timeout(config.connect_timeout, options.connect(servers)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => {
                return Err(connect_error(format!("no connection within {:?}", config.connect_timeout)));
            }
        };
        let setup = |e: &dyn std::fmt::Display| NatsError::Setup(e.to_string());
        let channels = client.subscribe(wire::all_channels(&config.prefix)).await.map_err(|e| setup(&e))?;
        let e2ee = client.subscribe(wire::all_e2ee(&config.prefix)).await.map_err(|e| setup(&e))?;
        let sync_subject = wire::sync_subject(&config.prefix, &config.node_id);
        let sync = client.subscribe(sync_subject.clone()).await.map_err(|e| setup(&e))?;
        let heartbeats =
            client.subscribe(wire::heartbeat_subject(&config.prefix)).await.map_err(|e| setup(&e))?;
        let room_questions =
            client.subscribe(wire::rooms_subject(&config.prefix)).await.map_err(|e| setup(&e))?;
        let (outgoing, outgoing_rx) = mpsc::channel(config.outgoing_capacity.max(1));
        let probe = config.probe_window > 0;
        let skew = i64::try_from(config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let inner = Arc::new(Inner {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Sequencer::new(config.max_held_per_channel, probe)))
                .collect(),
            since_ms: now_ms().saturating_sub(skew),
            reads: tokio::sync::Semaphore::new(config.check_concurrency.max(1)),
            config,
            client,
            subscribers: RwLock::new(Vec::new()),
            store: RwLock::new(None),
            outgoing,
            lose_outgoing: AtomicBool::new(false),
            watches: Mutex::new(HashMap::new()),
            watch_generation: AtomicU64::new(0),
            sync_subject,
            syncs: Mutex::new(HashMap::new()),
            next_sync: AtomicU64::new(0),
            events,
            runtime: tokio::runtime::Handle::current(),
            shutdown: CancellationToken::new(),
            rooms: RwLock::new(None),
            nodes: Mutex::new(HashMap::new()),
            gone: Mutex::new(std::collections::HashSet::new()),
            own_seen: Mutex::new(Instant::now()),
            started: Instant::now(),
            next_split: AtomicU64::new(0),
        });
        inner.spawn(inner.clone().read_channels(channels));
        inner.spawn(inner.clone().read_e2ee(e2ee));
        inner.spawn(inner.clone().read_syncs(sync));
        inner.spawn(inner.clone().send_outgoing(outgoing_rx));
        inner.spawn(inner.clone().check_after_events());
        inner.spawn(inner.clone().read_heartbeats(heartbeats));
        inner.spawn(inner.clone().heartbeat());
        inner.spawn(inner.clone().answer_snapshots(room_questions));
        if let Some(every) = inner.config.sweep_interval {
            inner.spawn(inner.clone().sweep(every));
        }
        if let Some(after) = inner.config.forget_after {
            inner.spawn(inner.clone().forget_idle(after));
        }
        let broker = Arc::new(NatsBroker { inner });
        // The channel subscription is in force before anything is published through us.
        broker.inner.confirm().await.map_err(NatsError::Setup)?;
        Ok(broker)
    }

    /// The store that gap fills read (the one whose commit sink wraps this broker). Held
    /// weakly: the sink holds the broker.
    pub fn set_store(&self, store: DynStore) {
        *self.inner.store.write() = Some(Arc::downgrade(&store));
    }

    /// This node's id, as it appears in its messages.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// What the broker counted so far.
    pub fn stats(&self) -> NatsStats {
        let c = &self.inner.events.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = NatsStats {
            signals_delivered: get(&c.signals_delivered),
            gaps: get(&c.gaps),
            gaps_filled: get(&c.gaps_filled),
            published: get(&c.published),
            publish_failed: get(&c.publish_failed),
            outgoing_dropped: get(&c.outgoing_dropped),
            received: get(&c.received),
            decode_errors: get(&c.decode_errors),
            head_checks: get(&c.head_checks),
            reconnects: get(&c.connects).saturating_sub(1),
            slow_consumers: get(&c.slow_consumers),
            channels_forgotten: get(&c.forgotten),
            split_messages: get(&c.split_messages),
            parts_lost: get(&c.parts_lost),
            nodes: self.inner.nodes.lock().len() as u64,
            nodes_gone: get(&c.nodes_gone),
            room_snapshots: get(&c.room_snapshots),
            ..NatsStats::default()
        };
        for shard in &self.inner.shards {
            let shard = shard.lock();
            s.delivered += shard.counts.delivered;
            s.entries_filled += shard.counts.filled;
            s.duplicates_dropped += shard.counts.duplicates;
            s.held_overflow += shard.counts.overflowed;
            s.gaps_skipped += shard.counts.skipped;
            s.channels += shard.len() as u64;
        }
        s
    }

    /// Compares every known channel with the store now and fills what is missing (what a
    /// reconnect does).
    pub fn check_now(&self) {
        self.inner.events.check.notify_one();
    }

    /// **For tests** (fault injection): while on, envelopes published here are delivered to
    /// this node's hub as usual but not sent to NATS, as if NATS had lost them. Counted in
    /// [`NatsStats::outgoing_dropped`].
    pub fn set_lose_outgoing(&self, lose: bool) {
        self.inner.lose_outgoing.store(lose, Ordering::SeqCst);
    }

    /// Stops every task of this broker (also done when it is dropped). Envelopes still queued
    /// toward NATS are not sent.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }
}

fn on_nats_event(events: &Events, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            let n = events.counters.connects.fetch_add(1, Ordering::Relaxed);
            if n > 0 {
                tracing::info!("nats: reconnected; checking every channel against the store");
            }
            events.check.notify_one();
        }
        async_nats::Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
        async_nats::Event::SlowConsumer(sid) => {
            // One report per dropped message: log the first and then one in a thousand.
            let n = events.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    sid,
                    reports = n + 1,
                    "nats: slow consumer, messages dropped; checking every channel against the store"
                );
            }
            events.check.notify_one();
        }
        other => tracing::info!(event = %other, "nats event"),
    }
}

impl Broker for NatsBroker {
    fn publish(&self, envelopes: &[Envelope]) {
        let inner = &self.inner;
        for e in envelopes {
            inner.accept(e);
            if inner.lose_outgoing.load(Ordering::SeqCst) || inner.outgoing.try_send(e.clone()).is_err() {
                bump(&inner.events.counters.outgoing_dropped);
            }
        }
    }

    fn subscribe(&self, subscriber: Arc<dyn BrokerSubscriber>) {
        self.inner.subscribers.write().push(subscriber);
    }

    fn watch_subject(&self, app: &str, subject: &str) -> WatchFuture {
        let inner = self.inner.clone();
        let key = (app.to_owned(), subject.to_owned());
        let mut ready = {
            let mut watches = inner.watches.lock();
            match watches.get(&key) {
                Some(w) => w.ready.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let generation = inner.watch_generation.fetch_add(1, Ordering::Relaxed);
                    let task = inner.runtime.spawn(inner.clone().read_subject(key.clone(), generation, tx));
                    watches.insert(key, Watch { generation, ready: rx.clone(), task });
                    rx
                }
            }
        };
        Box::pin(async move {
            // Down, the SUB would only be queued (and might not even be): say so at once.
            if inner.client.connection_state() != State::Connected {
                return Err(format!("nats: not connected to {}", shown_url(&inner.config.url)));
            }
            let outcome = ready
                .wait_for(Option::is_some)
                .await
                .map_err(|_| "nats: the subscription ended".to_owned())?
                .clone();
            match outcome {
                Some(Err(why)) => Err(why),
                // The SUB is queued before this round trip: once it returns, the server has it.
                _ => inner.confirm().await,
            }
        })
    }

    fn unwatch_subject(&self, app: &str, subject: &str) {
        let removed = self.inner.watches.lock().remove(&(app.to_owned(), subject.to_owned()));
        if let Some(w) = removed {
            // Dropping the subscription (with the task) unsubscribes.
            w.task.abort();
        }
    }

    fn health(&self) -> Result<(), String> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(format!("nats: {state} ({})", shown_url(&self.inner.config.url))),
        }
    }

    fn room_snapshot(&self, app: &str, channel: &str) -> SnapshotFuture {
        let inner = self.inner.clone();
        let (app, channel) = (app.to_owned(), channel.to_owned());
        Box::pin(async move { inner.snapshot(&app, &channel).await })
    }

    fn serve_rooms(&self, rooms: Weak<dyn RoomDirectory>) {
        *self.inner.rooms.write() = Some(rooms);
    }

    fn node_id(&self) -> Option<String> {
        Some(self.inner.config.node_id.clone())
    }

    /// Known once this node has listened for a whole node timeout (every live node said it is
    /// alive meanwhile) and while its own heartbeats come back (a node cut off from NATS
    /// cannot tell who is alive).
    fn live_nodes(&self) -> Option<Vec<String>> {
        let now = Instant::now();
        if now.duration_since(self.inner.started) < self.inner.config.node_timeout || self.inner.cut_off(now)
        {
            return None;
        }
        Some(self.inner.nodes.lock().keys().cloned().collect())
    }
}

impl Inner {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task => {}
            }
        });
    }

    fn shard(&self, channel: &str) -> &Mutex<Sequencer> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    fn store(&self) -> Option<DynStore> {
        self.store.read().as_ref().and_then(Weak::upgrade)
    }

    /// To every subscriber (this node's hub).
    fn deliver(&self, envelope: &Envelope) {
        for s in self.subscribers.read().iter() {
            s.receive(envelope);
        }
    }

    /// An envelope from this node or another, through the sequencer to the hub.
    fn accept(self: &Arc<Self>, envelope: &Envelope) {
        let ev = match envelope {
            Envelope::Channel(ev) if ev.seq.is_some() || ev.deleted => ev,
            _ => {
                bump(&self.events.counters.signals_delivered);
                self.deliver(envelope);
                return;
            }
        };
        let mut shard = self.shard(&ev.channel).lock();
        match shard.offer(ev, Instant::now()) {
            // Delivered under the shard lock: the order of deliveries is the order decided.
            Verdict::Deliver => {
                if ev.seq.is_none() {
                    bump(&self.events.counters.signals_delivered);
                }
                self.deliver(envelope);
            }
            Verdict::Duplicate | Verdict::Held { start_fill: false } => {}
            Verdict::Held { start_fill: true } => {
                drop(shard);
                self.start_fill(ev.channel.clone());
            }
        }
    }

    fn start_fill(self: &Arc<Self>, channel: String) {
        bump(&self.events.counters.gaps);
        self.spawn(self.clone().fill(channel));
    }

    /// Reads what `channel` misses from the store until its sequencer is caught up.
    async fn fill(self: Arc<Self>, channel: String) {
        let base = Duration::from_millis(20);
        let (mut backoff, mut stalls) = (base, 0u32);
        loop {
            let Some(from) = self.shard(&channel).lock().fill_after(&channel) else { return };
            let Some(store) = self.store() else {
                tracing::warn!(channel, "nats: a gap to fill but no store set (NatsBroker::set_store)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                continue;
            };
            let Ok(permit) = self.reads.acquire().await else { return };
            let page = match from.probe {
                Some(first) => {
                    let window = self.config.probe_window.max(1);
                    // The window before the first held seq, and that one.
                    let after = first.saturating_sub(1).saturating_sub(u64::from(window));
                    store.log(&channel, after, window + 1).await
                }
                None => store.log(&channel, from.after, self.config.fill_page.max(1)).await,
            };
            drop((store, permit));
            let entries = match page {
                Ok((entries, _)) => entries,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "nats: gap fill could not read the store; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                    continue;
                }
            };
            // Serialized before taking the lock, which the commit path may be waiting for.
            let page = sequencer::rebuilt_page(&from.app, &entries);
            let step = {
                let mut shard = self.shard(&channel).lock();
                let deliver = &mut |e: &Envelope| self.deliver(e);
                match from.probe {
                    Some(_) => shard.probed(&channel, &entries, page, self.probe_floor_ms(), deliver),
                    None => shard.fill_rebuilt(&channel, page, deliver),
                }
            };
            let step = match step {
                FillStep::Stalled if from.deleted || stalls >= MAX_STALLS => {
                    if !from.deleted {
                        tracing::warn!(
                            channel,
                            after = from.after,
                            "nats: the store lacks entries of a gap; skipping it"
                        );
                    }
                    self.shard(&channel).lock().skip_gap(&channel, &mut |e| self.deliver(e))
                }
                FillStep::Stalled => {
                    stalls += 1;
                    tokio::time::sleep(base * (1 << stalls.min(8))).await;
                    continue;
                }
                step => step,
            };
            match step {
                FillStep::Done => {
                    bump(&self.events.counters.gaps_filled);
                    return;
                }
                _ => {
                    backoff = base;
                    stalls = 0;
                }
            }
        }
    }

    /// The oldest stamp an entry of a channel first seen now can have and still be new to
    /// this node: its start, or for a forgotten channel the start of the forget window (its
    /// delivered entries are older), less the clock skew.
    fn probe_floor_ms(&self) -> i64 {
        let skew = i64::try_from(self.config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        match self.config.forget_after {
            Some(after) => {
                let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                self.since_ms.max(now_ms().saturating_sub(after).saturating_add(skew))
            }
            None => self.since_ms,
        }
    }

    async fn forget_idle(self: Arc<Self>, after: Duration) {
        let mut tick = tokio::time::interval((after / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(before) = Instant::now().checked_sub(after) else { continue };
            let forgotten: usize = self.shards.iter().map(|s| s.lock().forget_idle(before)).sum();
            self.events.counters.forgotten.fetch_add(forgotten as u64, Ordering::Relaxed);
        }
    }

    /// Compares the channels (active since `since`, or all) with the store's head and fills
    /// those behind.
    async fn check_heads(self: &Arc<Self>, since: Option<Instant>) {
        let Some(store) = self.store() else { return };
        let channels: Vec<(String, u64)> =
            self.shards.iter().flat_map(|s| s.lock().channels(since)).collect();
        let heads = futures::stream::iter(channels)
            .map(|(channel, last)| {
                let store = store.clone();
                let reads = &self.reads;
                async move {
                    let head = match reads.acquire().await {
                        Ok(_permit) => store.head_seq(&channel).await,
                        Err(_) => Err(herald_store::StoreError::Closed),
                    };
                    (channel, last, head)
                }
            })
            .buffer_unordered(self.config.check_concurrency.max(1));
        futures::pin_mut!(heads);
        while let Some((channel, last, head)) = heads.next().await {
            bump(&self.events.counters.head_checks);
            match head {
                Ok(head) if head > last => {
                    if self.shard(&channel).lock().reach(&channel, head) {
                        self.start_fill(channel);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(channel, error = %e, "nats: could not read a channel's head"),
            }
        }
    }

    /// After every (re)connect and slow consumer: once this node's subscriptions are in force
    /// again (a round trip behind the re-sent `SUB`s), every known channel against the store.
    async fn check_after_events(self: Arc<Self>) {
        loop {
            self.events.check.notified().await;
            while let Err(why) = self.confirm().await {
                tracing::debug!(error = %why, "nats: waiting for the connection before checking channels");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Whatever the other nodes said while this one heard nothing is unknown: they get
            // a fresh timeout, and the rooms ask again.
            let now = Instant::now();
            for seen in self.nodes.lock().values_mut() {
                *seen = now;
            }
            *self.own_seen.lock() = now;
            if let Some(rooms) = self.room_directory() {
                rooms.resync();
            }
            self.check_heads(None).await;
        }
    }

    /// This node's own heartbeats stopped coming back for the node timeout: it is the one cut
    /// off, and cannot tell who else is alive.
    fn cut_off(&self, now: Instant) -> bool {
        now.duration_since(*self.own_seen.lock()) >= self.config.node_timeout
    }

    fn room_directory(&self) -> Option<Arc<dyn RoomDirectory>> {
        self.rooms.read().as_ref().and_then(Weak::upgrade)
    }

    async fn publish_heartbeat(&self, hello: bool) {
        let hb = wire::Heartbeat { n: self.config.node_id.clone(), h: hello };
        let body = serde_json::to_vec(&hb).unwrap_or_default();
        if let Err(e) = self.client.publish(wire::heartbeat_subject(&self.config.prefix), body.into()).await {
            tracing::debug!(error = %e, "nats: heartbeat not sent");
        }
    }

    /// Says this node is alive every interval, and declares gone the nodes silent for the
    /// node timeout (unless this node's own heartbeats stopped coming back: then it is the
    /// one cut off, and it declares nobody).
    async fn heartbeat(self: Arc<Self>) {
        self.publish_heartbeat(true).await;
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.publish_heartbeat(false).await;
            let now = Instant::now();
            let timeout = self.config.node_timeout;
            if self.cut_off(now) {
                continue;
            }
            let dead: Vec<String> = {
                let mut nodes = self.nodes.lock();
                let dead: Vec<String> = nodes
                    .iter()
                    .filter(|(_, seen)| now.duration_since(**seen) >= timeout)
                    .map(|(n, _)| n.clone())
                    .collect();
                for d in &dead {
                    nodes.remove(d);
                }
                dead
            };
            for d in dead {
                tracing::warn!(node = d, "nats: a node went silent; it is gone");
                bump(&self.events.counters.nodes_gone);
                {
                    let mut gone = self.gone.lock();
                    if gone.len() >= 10_000 {
                        gone.clear();
                    }
                    gone.insert(d.clone());
                }
                if let Some(rooms) = self.room_directory() {
                    rooms.node_gone(&d);
                }
            }
        }
    }

    async fn read_heartbeats(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(hb) = serde_json::from_slice::<wire::Heartbeat>(&msg.payload) else {
                bump(&self.events.counters.decode_errors);
                continue;
            };
            let now = Instant::now();
            if hb.n == self.config.node_id {
                *self.own_seen.lock() = now;
                continue;
            }
            let new = self.nodes.lock().insert(hb.n.clone(), now).is_none();
            if new {
                tracing::info!(node = hb.n, "nats: a node is alive");
                if self.gone.lock().remove(&hb.n)
                    && let Some(rooms) = self.room_directory()
                {
                    // Its participants were removed here; it still has them.
                    rooms.resync();
                }
                if hb.h {
                    // A new node: let it know this one at once.
                    self.publish_heartbeat(false).await;
                }
            }
        }
    }

    /// Answers other nodes' room snapshot questions with this node's participants.
    async fn answer_snapshots(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let Ok(q) = serde_json::from_slice::<wire::SnapshotQuery>(&msg.payload) else {
                bump(&self.events.counters.decode_errors);
                continue;
            };
            if q.n == self.config.node_id {
                continue;
            }
            let participants =
                self.room_directory().map(|r| r.local_participants(&q.a, &q.c)).unwrap_or_default();
            let max = self.client.server_info().max_payload.saturating_sub(512).max(4096);
            for page in wire::snapshot_pages(&self.config.node_id, participants, max) {
                if let Err(e) = self.client.publish(reply.clone(), page).await {
                    tracing::debug!(error = %e, "nats: a room snapshot answer was not sent");
                }
            }
        }
    }

    /// Asks every other node for its participants of a room; answers when every node known
    /// alive has answered, or at the snapshot timeout with the complete answers so far.
    async fn snapshot(&self, app: &str, channel: &str) -> Result<Vec<RoomSnapshot>, String> {
        if self.client.connection_state() != State::Connected {
            return Err(format!("nats: not connected to {}", shown_url(&self.config.url)));
        }
        let expected: std::collections::HashSet<String> = self.nodes.lock().keys().cloned().collect();
        if expected.is_empty() {
            return Ok(Vec::new());
        }
        bump(&self.events.counters.room_snapshots);
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.map_err(|e| format!("nats: {e}"))?;
        let q =
            wire::SnapshotQuery { n: self.config.node_id.clone(), a: app.to_owned(), c: channel.to_owned() };
        let body = serde_json::to_vec(&q).unwrap_or_default();
        self.client
            .publish_with_reply(wire::rooms_subject(&self.config.prefix), inbox, body.into())
            .await
            .map_err(|e| format!("nats: {e}"))?;
        let deadline = tokio::time::Instant::now() + self.config.room_sync_timeout;
        let mut done = std::collections::HashSet::new();
        let mut got: HashMap<String, Vec<herald_proto::rooms::Participant>> = HashMap::new();
        while !expected.iter().all(|n| done.contains(n)) {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => {
                    let Ok(page) = serde_json::from_slice::<wire::SnapshotPage>(&msg.payload) else {
                        continue;
                    };
                    got.entry(page.n.clone()).or_default().extend(page.p);
                    if !page.m {
                        done.insert(page.n);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Only complete answers: half a list would look like removals.
        Ok(got
            .into_iter()
            .filter(|(n, _)| done.contains(n))
            .map(|(node, participants)| RoomSnapshot { node, participants })
            .collect())
    }

    async fn sweep(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let since = Instant::now().checked_sub(self.config.sweep_window);
            self.check_heads(since).await;
        }
    }

    /// A round trip through the server on this node's sync subject: when it returns, the
    /// server has processed every command this client sent before (a `SUB` above all).
    async fn confirm(&self) -> Result<(), String> {
        if self.client.connection_state() != State::Connected {
            return Err(format!("nats: not connected to {}", shown_url(&self.config.url)));
        }
        let id = self.next_sync.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.syncs.lock().insert(id, tx);
        let round_trip = async {
            self.client
                .publish(self.sync_subject.clone(), Bytes::from(id.to_string()))
                .await
                .map_err(|e| format!("nats: {e}"))?;
            rx.await.map_err(|_| "nats: round trip abandoned".to_owned())
        };
        let outcome = tokio::time::timeout(self.config.confirm_timeout, round_trip).await;
        self.syncs.lock().remove(&id);
        match outcome {
            Ok(r) => r,
            Err(_) => {
                Err(format!("nats: no answer from the server within {:?}", self.config.confirm_timeout))
            }
        }
    }

    async fn read_syncs(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let id = std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse::<u64>().ok());
            if let Some(tx) = id.and_then(|id| self.syncs.lock().remove(&id)) {
                let _ = tx.send(());
            }
        }
    }

    async fn read_channels(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        let mut parts = wire::Reassembler::new(self.config.max_message_bytes);
        while let Some(msg) = sub.next().await {
            let decoded = match wire::decode_incoming(&msg.payload) {
                Ok(wire::Incoming::Whole(r)) => Ok(*r),
                Ok(wire::Incoming::Part { node, id, index, count, bytes }) => {
                    if node == self.config.node_id {
                        continue;
                    }
                    let lost = parts.lost;
                    let whole = parts.push(&node, id, index, count, &bytes);
                    if parts.lost > lost {
                        self.events.counters.parts_lost.fetch_add(parts.lost - lost, Ordering::Relaxed);
                        tracing::warn!(node, "nats: a message sent in parts lost one; dropped");
                    }
                    match whole {
                        Some(payload) => wire::decode(&payload),
                        None => continue,
                    }
                }
                Err(e) => Err(e),
            };
            match decoded {
                Ok(r) if r.node == self.config.node_id => {}
                Ok(r)
                    if matches!(
                        r.envelope,
                        Envelope::Channel(_) | Envelope::Room(_) | Envelope::Disconnect { .. }
                    ) =>
                {
                    bump(&self.events.counters.received);
                    self.accept(&r.envelope);
                }
                Ok(_) => bump(&self.events.counters.decode_errors),
                Err(e) => {
                    bump(&self.events.counters.decode_errors);
                    tracing::warn!(subject = %msg.subject, error = %e, "nats: unreadable message");
                }
            }
        }
    }

    /// End-to-end encryption events (§7) of every app: straight to the hub (at most once,
    /// like signals; a DM waits in its inbox until acknowledged anyway).
    async fn read_e2ee(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            match wire::decode(&msg.payload) {
                Ok(r) if r.node == self.config.node_id => {}
                Ok(r) if matches!(r.envelope, Envelope::Device { .. } | Envelope::Keeper { .. }) => {
                    bump(&self.events.counters.received);
                    self.accept(&r.envelope);
                }
                Ok(_) => bump(&self.events.counters.decode_errors),
                Err(e) => {
                    bump(&self.events.counters.decode_errors);
                    tracing::warn!(subject = %msg.subject, error = %e, "nats: unreadable message");
                }
            }
        }
    }

    /// One watched subject: subscribes, says so through `ready`, then delivers what arrives.
    async fn read_subject(
        self: Arc<Self>,
        key: (String, String),
        generation: u64,
        ready: watch::Sender<Option<Result<(), String>>>,
    ) {
        let subject = wire::publication_subject(&self.config.prefix, &key.0, &key.1);
        let mut sub = match self.client.subscribe(subject).await {
            Ok(sub) => sub,
            Err(e) => {
                let _ = ready.send(Some(Err(format!("nats: cannot subscribe: {e}"))));
                let mut watches = self.watches.lock();
                if watches.get(&key).is_some_and(|w| w.generation == generation) {
                    watches.remove(&key);
                }
                return;
            }
        };
        let _ = ready.send(Some(Ok(())));
        let shutdown = self.shutdown.clone();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = sub.next() => msg,
            };
            let Some(msg) = msg else { return };
            match wire::decode(&msg.payload) {
                Ok(r) if r.node == self.config.node_id => {}
                Ok(wire::Received { envelope: e @ Envelope::Publication { .. }, .. }) => {
                    bump(&self.events.counters.received);
                    self.accept(&e);
                }
                Ok(_) => bump(&self.events.counters.decode_errors),
                Err(e) => {
                    bump(&self.events.counters.decode_errors);
                    tracing::warn!(subject = %msg.subject, error = %e, "nats: unreadable message");
                }
            }
        }
    }

    /// Publishes the queued envelopes to NATS, in order.
    async fn send_outgoing(self: Arc<Self>, mut rx: mpsc::Receiver<Envelope>) {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            // The server's limit, as it said when this connection was made.
            let max_payload = self.client.server_info().max_payload;
            for e in batch.drain(..) {
                let (subject, payload) = wire::encode(&self.config.prefix, &self.config.node_id, &e);
                let parts = if max_payload > 0 && payload.len() > max_payload {
                    bump(&self.events.counters.split_messages);
                    let id = self.next_split.fetch_add(1, Ordering::Relaxed);
                    wire::split(&self.config.node_id, id, payload, max_payload)
                } else {
                    vec![payload]
                };
                for part in parts {
                    match self.client.publish(subject.clone(), part).await {
                        Ok(()) => bump(&self.events.counters.published),
                        Err(err) => {
                            bump(&self.events.counters.publish_failed);
                            tracing::warn!(error = %err, "nats: publish failed");
                        }
                    }
                }
            }
        }
    }
}

/// `url` (a comma-separated list) without user names, passwords or tokens, for logs, errors
/// and `/healthz` (which anyone may read): `nats://user:pw@host:4222` → `nats://host:4222`.
pub fn shown_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            match u.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => u.to_owned(),
                },
                None => match u.rsplit_once('@') {
                    Some((_, host)) => host.to_owned(),
                    None => u.to_owned(),
                },
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod url_tests {
    use super::shown_url;

    #[test]
    fn credentials_never_show() {
        assert_eq!(shown_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(shown_url("nats://ada:s3cret@h:4222"), "nats://h:4222");
        assert_eq!(shown_url("nats://tok@a:1, nats://b:2"), "nats://a:1,nats://b:2");
        assert_eq!(shown_url("user:pw@h"), "h");
    }
}
