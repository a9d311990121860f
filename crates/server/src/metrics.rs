//! `/metrics`: Prometheus text. Counters that live in the engine are read at scrape time by a
//! collector; the commit latency histogram is fed by the store's commit observer.

use herald_engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters kept by the server itself.
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Frames written to WebSockets (replies and events).
    pub frames_out: AtomicU64,
    /// Frames read from WebSockets.
    pub frames_in: AtomicU64,
    /// Requests refused with `rate_limited`.
    pub rate_limited: AtomicU64,
}

/// The registry and the metrics fed from outside the engine.
pub struct Metrics {
    registry: Registry,
    commit_latency: Histogram,
    commit_batch: Histogram,
    pub gateway: Arc<GatewayCounters>,
    backends: Arc<parking_lot::RwLock<Vec<BackendFigures>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// One figure of a backend (the NATS broker's gap fills, the PostgreSQL writer's retries …),
/// exported as `herald_<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendFigure {
    /// Without the `herald_` prefix, e.g. `broker_gaps_filled`.
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
    /// A gauge (goes up and down) rather than a counter.
    pub gauge: bool,
}

impl BackendFigure {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> BackendFigure {
        BackendFigure { name, help, value, gauge: false }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> BackendFigure {
        BackendFigure { name, help, value, gauge: true }
    }
}

/// Read at every scrape: the figures of one backend. The server names no backend, so the
/// binary that picks them hands these over ([`Metrics::add_backend`]).
pub type BackendFigures = Arc<dyn Fn() -> Vec<BackendFigure> + Send + Sync>;

struct EngineCollector {
    engine: Arc<Engine>,
    gateway: Arc<GatewayCounters>,
    backends: Arc<parking_lot::RwLock<Vec<BackendFigures>>>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hub = &self.engine.hub().stats;
        let gauge =
            |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| -> Result<(), std::fmt::Error> {
                let g = ConstGauge::new(v as i64);
                let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)
            };
        let counter =
            |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| -> Result<(), std::fmt::Error> {
                let c = ConstCounter::new(v);
                let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
                c.encode(m)
            };
        gauge(
            &mut encoder,
            "herald_connections",
            "Open authenticated WebSocket connections",
            hub.connections.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_messages_in",
            "Messages accepted (message.send)",
            self.engine.stats.messages_in.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_entries_committed",
            "Log entries committed",
            hub.entries_committed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_fanout_deliveries",
            "Events queued to connections by fan-out",
            hub.deliveries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_publications",
            "Subject publications",
            hub.publications.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_queue_full_disconnects",
            "Connections closed (4008) because their queue was full",
            hub.queue_full_kicks.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_frames_out",
            "Frames written to WebSockets",
            self.gateway.frames_out.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_frames_in",
            "Frames read from WebSockets",
            self.gateway.frames_in.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_rate_limited",
            "Requests refused with rate_limited",
            self.gateway.rate_limited.load(Ordering::Relaxed),
        )?;
        let rooms = &self.engine.rooms().stats;
        gauge(
            &mut encoder,
            "herald_room_participants",
            "Room participants (every node's, as this node's replica has them)",
            rooms.participants.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_room_frames",
            "Room frames (presence, room messages, stream traffic) queued to this node's connections",
            rooms.frames.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "herald_room_presence_coalesced",
            "Presence changes folded into a later one by coalescing",
            rooms.coalesced.load(Ordering::Relaxed),
        )?;
        for source in self.backends.read().iter() {
            for f in source() {
                let name = format!("herald_{}", f.name);
                if f.gauge {
                    gauge(&mut encoder, &name, f.help, f.value)?;
                } else {
                    counter(&mut encoder, &name, f.help, f.value)?;
                }
            }
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(engine: Arc<Engine>) -> Metrics {
        let mut registry = Registry::default();
        let gateway = Arc::new(GatewayCounters::default());
        // 50 µs .. ~1.6 s
        let commit_latency = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "herald_commit_latency_seconds",
            "Store commit latency (one transaction)",
            commit_latency.clone(),
        );
        registry.register(
            "herald_commit_batch_size",
            "Mutations per committed transaction",
            commit_batch.clone(),
        );
        // 10 µs .. ~0.3 s
        let fanout_latency = Histogram::new(exponential_buckets(0.00001, 2.0, 16));
        registry.register(
            "herald_fanout_latency_seconds",
            "From an entry's commit until it is queued to every local recipient",
            fanout_latency.clone(),
        );
        engine.hub().set_fanout_observer(Box::new(move |d| fanout_latency.observe(d.as_secs_f64())));
        let backends = Arc::new(parking_lot::RwLock::new(Vec::new()));
        registry.register_collector(Box::new(EngineCollector {
            engine,
            gateway: gateway.clone(),
            backends: backends.clone(),
        }));
        Metrics { registry, commit_latency, commit_batch, gateway, backends }
    }

    /// Adds a backend's figures to every scrape from now on.
    pub fn add_backend(&self, figures: BackendFigures) {
        self.backends.write().push(figures);
    }

    /// A callback for the store's commit observer: records one commit's latency and size.
    pub fn commit_observer(&self) -> Arc<dyn Fn(Duration, usize) + Send + Sync> {
        let (latency, batch) = (self.commit_latency.clone(), self.commit_batch.clone());
        Arc::new(move |d: Duration, n: usize| {
            latency.observe(d.as_secs_f64());
            batch.observe(n as f64);
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
