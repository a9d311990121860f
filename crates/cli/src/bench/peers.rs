//! The fan-out shape driven against any pub/sub server: N subscriber connections on one
//! subject (room, topic, channel), K publisher connections sharing a fixed rate, every payload
//! stamped with its publish time and timed when it arrives. The same generator, the same
//! payloads and the same figures for Herald's `publish` path and for each peer (NATS,
//! Socket.IO, MQTT, Redis); Herald's durable channel path is [`super::fanout`].
//!
//! A peer is a [`Peer`]: how to open one subscribed connection (its reader task reports every
//! frame to [`Rx`]) and one publisher. [`drive`] does the rest, identically for all.
//!
//! # Layout
//!
//! - [`nats`], [`mqtt`], [`redis`], [`socketio`], [`herald`] (the `publish` path): one
//!   [`Peer`] each.
//! - [`Outcome`]: the figures one run contributes to `compare` (deliveries/s, latency, server
//!   CPU and memory, bytes on the wire).

pub mod herald;
pub mod mqtt;
pub mod nats;
pub mod redis;
pub mod socketio;

use super::report::{CpuMeter, CpuUse, Latencies, Report, nanos_since, rss_kib};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What `--target` names: Herald's two paths and the four peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Herald's durable, hash-chained channel path (`message.send` to a channel).
    Herald,
    /// Herald's `publish` path (subjects: plain fan-out, never stored).
    HeraldPublish,
    /// NATS core pub/sub.
    Nats,
    /// A Socket.IO 4 server (node), rooms, websocket transport.
    Socketio,
    /// MQTT 3.1.1 (Mosquitto), QoS 0.
    Mqtt,
    /// Redis pub/sub.
    Redis,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::HeraldPublish => "herald-publish",
            Target::Nats => "nats",
            Target::Socketio => "socketio",
            Target::Mqtt => "mqtt",
            Target::Redis => "redis",
        }
    }
}

/// Where the peers are (the defaults are the usual local services).
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// NATS server (core pub/sub).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// MQTT broker (host:port), e.g. Mosquitto.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_addr: String,
    /// Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// A running Socket.IO peer (`http://host:port`); without it the bench starts
    /// `node server.js` in --socketio-dir and stops it afterwards.
    #[arg(long)]
    pub socketio_url: Option<String>,
    /// The folder of the Socket.IO peer (server.js, after `npm ci`); default: the repository's
    /// bench/peers/socketio.
    #[arg(long, env = "HERALD_BENCH_SOCKETIO_DIR")]
    pub socketio_dir: Option<std::path::PathBuf>,
}

/// One run's shape, the same for every target.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Subscriber connections (Herald's channel path: members).
    pub members: usize,
    /// Publisher connections, sharing `rate`.
    pub senders: usize,
    /// Messages per second, all publishers together.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration: f64,
    /// Longest wait for deliveries in flight after the last publish (seconds).
    pub drain: f64,
    /// Bytes of each payload.
    pub size: usize,
    /// Connections opened at once while setting up.
    pub concurrency: usize,
}

impl Shape {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.members == 0 {
            bail!("--members must be at least 1");
        }
        if self.senders == 0 || self.senders > self.members {
            bail!("--senders must be between 1 and --members ({})", self.members);
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second");
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be between 0 and 3600 seconds");
        }
        if self.size > 60_000 {
            bail!("--size must be at most 60000 bytes");
        }
        Ok(())
    }
}

/// The largest stamp part: `{"t":<20 digits>,"p":""}`; a payload is at least this long.
pub const MIN_PAYLOAD: usize = 33;

/// A payload of `size` bytes (at least [`MIN_PAYLOAD`]): JSON whose `t` is the publish time in
/// nanoseconds since the run's base, padded in `p` so every payload of a run has one size.
pub fn payload(nanos: u64, size: usize) -> String {
    let mut s = String::with_capacity(size.max(MIN_PAYLOAD));
    s.push_str(&format!(r#"{{"t":{nanos},"p":""#));
    let pad = size.max(MIN_PAYLOAD).saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The stamp of a payload that starts at `b` (`{"t":N…`).
pub fn stamp(b: &[u8]) -> Option<u64> {
    let rest = b.strip_prefix(br#"{"t":"#)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Bytes of a WebSocket frame header from server to client (unmasked) for `len` bytes.
pub fn ws_header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// What every subscriber's reader task reports to.
#[derive(Debug)]
pub struct Rx {
    pub base: Instant,
    received: AtomicU64,
    /// Nanoseconds (since `base`) of the latest stamped receipt.
    last_rx: AtomicU64,
    /// Every byte of every frame received by subscriber connections.
    wire_bytes: AtomicU64,
    unstamped: AtomicU64,
    closed: AtomicU64,
    latency: Latencies,
}

impl Rx {
    pub fn new() -> Rx {
        Rx {
            base: Instant::now(),
            received: AtomicU64::new(0),
            last_rx: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            unstamped: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            latency: Latencies::new(),
        }
    }

    /// A frame of `wire` bytes reached subscriber `conn`; `stamp` is its payload's publish time
    /// if it is one of ours.
    pub fn frame(&self, conn: usize, stamp: Option<u64>, wire: usize) {
        self.wire_bytes.fetch_add(wire as u64, Ordering::Relaxed);
        if let Some(sent) = stamp {
            let now = nanos_since(self.base);
            self.latency.record(conn, now.saturating_sub(sent) / 1000);
            self.received.fetch_add(1, Ordering::AcqRel);
            self.last_rx.fetch_max(now, Ordering::AcqRel);
        }
    }

    /// A message that carried no stamp of ours (counted, not timed).
    pub fn unstamped(&self, wire: usize) {
        self.wire_bytes.fetch_add(wire as u64, Ordering::Relaxed);
        self.unstamped.fetch_add(1, Ordering::Relaxed);
    }

    /// The server closed a subscriber's connection before the end.
    pub fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One pub/sub server as the bench drives it.
pub trait Peer: Send + Sync + 'static {
    type Pub: Publisher;

    /// Opens subscriber `i`: when this returns, the subscription is in force at the server
    /// and a task reads the connection, reporting to `rx`, until `stop` or a close.
    fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = anyhow::Result<JoinHandle<()>>> + Send;

    /// Opens publisher `i`.
    fn publisher(&self, i: usize) -> impl Future<Output = anyhow::Result<Self::Pub>> + Send;
}

/// One publishing connection.
pub trait Publisher: Send + 'static {
    /// Hands one payload to the connection (without waiting for the server's answer, as
    /// Herald's senders do not).
    fn publish(&mut self, payload: String) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Waits until everything published has left, and returns how many the server refused.
    fn finish(self) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// The server process whose CPU and memory are read from `/proc`.
#[derive(Debug, Clone)]
pub struct ServerProc {
    pub pid: u32,
    pub name: String,
}

/// The figures `compare` takes from one run of one target.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub target: &'static str,
    pub rate: f64,
    pub members: usize,
    pub size: usize,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub deliveries_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_kib_per_conn: Option<f64>,
    pub bytes_per_delivery: Option<f64>,
    pub generator_cores: Option<f64>,
    pub other_cores: Option<f64>,
}

impl Outcome {
    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

/// What every fan-out run ends with, whatever the target: the figures `finish` reports and
/// turns into the run's [`Outcome`].
pub struct Tail<'a> {
    pub target: &'static str,
    pub rate: f64,
    pub members: usize,
    pub size: usize,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub deliveries_per_sec: f64,
    pub hist: &'a hdrhistogram::Histogram<u64>,
    /// Bytes received by the generator.
    pub wire: u64,
    /// Server RSS (KiB) before and after the connections were made.
    pub rss: (Option<u64>, Option<u64>),
    /// Server RSS per connection (KiB), as the caller derives it from `rss`.
    pub rss_per: Option<f64>,
    pub cpu: &'a CpuUse,
}

/// Reports the figures every target shares (bytes and RSS per delivery and connection, CPU)
/// and returns the run's [`Outcome`].
pub fn finish(r: &mut Report, t: Tail<'_>) -> Outcome {
    let bytes_per = (t.received > 0).then(|| t.wire as f64 / t.received as f64);
    if let Some(b) = bytes_per {
        r.num("bytes_per_delivery", "bytes received per delivery", b, 1);
    }
    if let ((Some(before), Some(after)), Some(per)) = (t.rss, t.rss_per) {
        r.num("server_rss_before_mib", "server RSS before connects (MiB)", before as f64 / 1024.0, 1);
        r.num("server_rss_after_mib", "server RSS after connects (MiB)", after as f64 / 1024.0, 1);
        r.num("server_kib_per_conn", "server RSS per connection (KiB)", per, 2);
    }
    t.cpu.add_to(r);
    let cpu_per = t.cpu.server_secs.filter(|_| t.received > 0).map(|s| s * 1e6 / t.received as f64);
    if let Some(c) = cpu_per {
        r.num("server_cpu_us_per_delivery", "server CPU per delivery (µs)", c, 2);
    }
    let quantile = |q: f64| (!t.hist.is_empty()).then(|| t.hist.value_at_quantile(q) as f64 / 1000.0);
    Outcome {
        target: t.target,
        rate: t.rate,
        members: t.members,
        size: t.size,
        sent: t.sent,
        expected: t.expected,
        received: t.received,
        deliveries_per_sec: t.deliveries_per_sec,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        cpu_us_per_delivery: cpu_per,
        rss_kib_per_conn: t.rss_per,
        bytes_per_delivery: bytes_per,
        generator_cores: t.cpu.generator_secs.map(|g| g / t.cpu.wall),
        other_cores: t.cpu.others_cores(),
    }
}

/// Resident memory once it has stopped moving (3 samples 50 ms apart within 0.5 %), at most
/// 2 s: connections may still be settling into the server's buffers.
pub async fn settled_rss(pid: u32) -> Option<u64> {
    let t0 = Instant::now();
    let mut window: Vec<u64> = Vec::new();
    loop {
        let r = rss_kib(pid)?;
        window.push(r);
        if window.len() > 3 {
            window.remove(0);
        }
        let (lo, hi) = window.iter().fold((u64::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if (window.len() == 3 && hi - lo <= (hi / 200).max(64)) || t0.elapsed() > Duration::from_secs(2) {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `received` reaches `expected`, nothing has arrived for 2 s, or `drain` seconds.
pub async fn drain(received: impl Fn() -> u64, expected: u64, drain: f64) {
    let until = Instant::now() + Duration::from_secs_f64(drain.max(0.0));
    let mut last = (received(), Instant::now());
    loop {
        let now = received();
        if now >= expected {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        if Instant::now() >= until || last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the shape against `peer`; `server` is the process to read CPU and memory of.
pub async fn drive<P: Peer>(
    target: Target,
    peer: Arc<P>,
    shape: &Shape,
    server: Option<&ServerProc>,
) -> anyhow::Result<(Report, Outcome)> {
    shape.check()?;
    let n = shape.members;
    let rx = Arc::new(Rx::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss0 = match server {
        Some(s) => settled_rss(s.pid).await,
        None => None,
    };

    let t_setup = Instant::now();
    let readers: Vec<JoinHandle<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (peer, rx, stop) = (peer.clone(), rx.clone(), stop_rx.clone());
            async move {
                tokio::time::timeout(Duration::from_secs(30), peer.subscriber(i, rx, stop))
                    .await
                    .context("subscribing took over 30 s")?
                    .with_context(|| format!("subscriber {} of {n}", i + 1))
            }
        })
        .buffer_unordered(shape.concurrency.max(1))
        .try_collect()
        .await?;
    let mut pubs = Vec::with_capacity(shape.senders);
    for k in 0..shape.senders {
        let p = tokio::time::timeout(Duration::from_secs(30), peer.publisher(k))
            .await
            .context("opening a publisher took over 30 s")?
            .with_context(|| format!("publisher {} of {}", k + 1, shape.senders))?;
        pubs.push(p);
    }
    let setup = t_setup.elapsed();
    let conns = (n + shape.senders) as u64;
    let rss1 = match server {
        Some(s) => settled_rss(s.pid).await,
        None => None,
    };

    // Every reader is polling well before the first publish.
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(shape.duration);
    let period = Duration::from_secs_f64(shape.senders as f64 / shape.rate);
    let stagger = Duration::from_secs_f64(1.0 / shape.rate);
    let (base, size) = (rx.base, shape.size);
    let tasks: Vec<JoinHandle<anyhow::Result<(u64, u64)>>> = pubs
        .into_iter()
        .enumerate()
        .map(|(k, mut p)| {
            let first = start + stagger.mul_f64(k as f64);
            tokio::spawn(async move {
                let mut sent = 0u64;
                loop {
                    let due = first + period.mul_f64(sent as f64);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    p.publish(payload(nanos_since(base), size)).await?;
                    sent += 1;
                }
                let refused = p.finish().await?;
                Ok((sent, refused))
            })
        })
        .collect();

    tokio::time::sleep_until(start.into()).await;
    let cpu = CpuMeter::start(server.map(|s| s.pid));
    let (mut sent, mut refused) = (0u64, 0u64);
    let mut first_error = None;
    for t in tasks {
        match t.await.context("a publisher task failed")? {
            Ok((s, r)) => {
                sent += s;
                refused += r;
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    if let Some(e) = &first_error
        && sent == 0
    {
        bail!("publishing failed: {e}");
    }
    let expected = sent.saturating_sub(refused) * n as u64;
    drain(|| rx.received.load(Ordering::Acquire), expected, shape.drain).await;
    let cpu = cpu.finish();
    let _ = stop_tx.send(true);
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), r).await.is_err() {
            abort.abort();
        }
    }

    let received = rx.received.load(Ordering::Acquire);
    let start_nanos = u64::try_from(start.duration_since(rx.base).as_nanos()).unwrap_or(0);
    let rx_secs = (rx.last_rx.load(Ordering::Acquire).saturating_sub(start_nanos) as f64 / 1e9).max(1e-9);
    let hist = rx.latency.merged();
    let wire = rx.wire_bytes.load(Ordering::Acquire);

    let mut r = Report::new("fanout");
    r.text("target", "target", target.name());
    if let Some(s) = server {
        r.text("server_process", "server process", &format!("{} (pid {})", s.name, s.pid));
    }
    r.int("members", "subscribers (connections)", n as u64);
    r.int("senders", "publishers (connections)", shape.senders as u64);
    r.num("rate_offered", "offered rate (msgs/s)", shape.rate, 1);
    r.int("size", "payload (bytes)", payload(0, shape.size).len() as u64);
    r.num("setup_secs", "setup: connects + subscribes (s)", setup.as_secs_f64(), 2);
    r.int("sent", "messages sent", sent);
    r.int("send_errors", "refused by the server", refused);
    r.num("sent_per_sec", "sent msgs/s", sent as f64 / send_secs.max(1e-9), 1);
    r.int("deliveries_expected", "deliveries expected", expected);
    r.int("deliveries", "deliveries received", received);
    r.int("missing", "deliveries missing", expected.saturating_sub(received));
    let dps = received as f64 / rx_secs;
    r.num("deliveries_per_sec", "deliveries/s", dps, 1);
    r.latency("latency", "end-to-end latency", &hist);
    r.int("closed_by_server", "connections closed by server", rx.closed.load(Ordering::Acquire));
    let unstamped = rx.unstamped.load(Ordering::Acquire);
    if unstamped > 0 {
        r.note(format!("{unstamped} messages without a bench stamp were ignored"));
    }
    if let Some(e) = first_error {
        r.note(format!("a publisher failed: {e}"));
    }
    // A long-running service may shrink meanwhile (memory of earlier runs returned): no figure.
    let rss_per = match (rss0, rss1) {
        (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / conns as f64),
        _ => None,
    };
    let outcome = finish(
        &mut r,
        Tail {
            target: target.name(),
            rate: shape.rate,
            members: n,
            size: payload(0, shape.size).len(),
            sent,
            expected,
            received,
            deliveries_per_sec: dps,
            hist: &hist,
            wire,
            rss: (rss0, rss1),
            rss_per,
            cpu: &cpu,
        },
    );
    Ok((r, outcome))
}

/// What a WebSocket publisher makes of a frame the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to do.
    Nothing,
    /// Send this text back (an Engine.IO pong).
    Reply(&'static str),
    /// The server refused one publish.
    Refused,
}

/// A publisher over a WebSocket: a task owns the socket, writes what [`Publisher::publish`]
/// queues and reads what the server sends (replies, pings), classified by `answer`.
#[derive(Debug)]
pub struct WsPub {
    queue: Option<tokio::sync::mpsc::Sender<String>>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Publishes the server refused, as counted so far.
    refused: Arc<AtomicU64>,
    /// Builds the frame around a payload.
    frame: fn(&str, u64) -> String,
    sent: u64,
}

impl WsPub {
    pub fn spawn(
        mut ws: super::net::Ws,
        frame: fn(&str, u64) -> String,
        answer: fn(&str) -> Answer,
    ) -> WsPub {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let (tx, mut queue) = tokio::sync::mpsc::channel::<String>(1024);
        let refused = Arc::new(AtomicU64::new(0));
        let counted = refused.clone();
        let task = tokio::spawn(async move {
            let mut open = true;
            loop {
                tokio::select! {
                    f = queue.recv(), if open => match f {
                        Some(f) => ws.send(Message::text(f)).await.context("publish")?,
                        // Everything queued is written: close, then read to the server's close so
                        // every reply is counted.
                        None => {
                            open = false;
                            let _ = ws.close(None).await;
                        }
                    },
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => match answer(t.as_str()) {
                            Answer::Nothing => {}
                            Answer::Reply(r) => ws.send(Message::text(r)).await.context("pong")?,
                            Answer::Refused => {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            if open {
                                bail!("the server closed a publisher's connection");
                            }
                            return Ok(());
                        }
                    },
                }
            }
        });
        WsPub { queue: Some(tx), task, refused, frame, sent: 0 }
    }
}

impl Publisher for WsPub {
    async fn publish(&mut self, payload: String) -> anyhow::Result<()> {
        self.sent += 1;
        let frame = (self.frame)(&payload, self.sent);
        match &self.queue {
            Some(q) => q.send(frame).await.map_err(|_| anyhow::anyhow!("the publisher's connection is gone")),
            None => bail!("publisher already finished"),
        }
    }

    async fn finish(mut self) -> anyhow::Result<u64> {
        self.queue = None;
        let abort = self.task.abort_handle();
        // Everything was written once the close went out; the wait for the server's close is
        // only for its last replies. An overloaded server (node, far behind) may not answer
        // in time: then the count is what arrived so far.
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(r) => r.context("publisher task")??,
            Err(_) => abort.abort(),
        }
        Ok(self.refused.load(Ordering::Relaxed))
    }
}

/// `host:port` of a URL such as `nats://127.0.0.1:4222` or `redis://127.0.0.1:6379/0`.
pub fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, r)| r)
}

/// Resolves `host:port`; `Err` says, in a sentence, why the peer cannot be reached.
pub async fn probe(authority: &str) -> anyhow::Result<SocketAddr> {
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("cannot resolve {authority:?}"))?
        .next()
        .with_context(|| format!("{authority:?} resolves to no address"))?;
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(addr),
        Ok(Err(e)) => bail!("nothing accepts connections on {addr} ({e})"),
        Err(_) => bail!("{addr} did not accept a connection within 2 s"),
    }
}

/// The process listening on TCP `port` (any local address), found through `/proc`: the
/// socket's inode in `/proc/net/tcp{,6}`, then the process holding that inode open.
pub fn listener_process(port: u16) -> Option<ServerProc> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, inode is field 10.
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let p = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *st == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(ServerProc { pid, name: name.trim().to_owned() });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_its_stamp_reads_back() {
        for (nanos, size) in [(0, 0), (123_456_789, MIN_PAYLOAD), (u64::MAX, MIN_PAYLOAD), (7, 64), (7, 1000)]
        {
            let p = payload(nanos, size);
            assert_eq!(p.len(), size.max(MIN_PAYLOAD), "{p}");
            assert_eq!(stamp(p.as_bytes()), Some(nanos));
            assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok(), "{p}");
        }
        assert_eq!(stamp(b"hello"), None);
    }

    #[test]
    fn url_authority_drops_scheme_path_and_credentials() {
        assert_eq!(url_authority("nats://127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(url_authority("redis://u:p@127.0.0.1:6379/0"), "127.0.0.1:6379");
        assert_eq!(url_authority("127.0.0.1:1883"), "127.0.0.1:1883");
    }

    #[test]
    fn ws_header_grows_with_the_extended_length() {
        assert_eq!(ws_header(125), 2);
        assert_eq!(ws_header(126), 4);
        assert_eq!(ws_header(70_000), 10);
    }
}
