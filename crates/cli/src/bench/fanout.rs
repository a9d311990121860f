//! `herald bench fanout`: N members of one fresh channel, each one connection; the first K of
//! them send `message.send` at M messages/s in total, each content carrying its send time;
//! every member (senders included: a sender's own event is its delivery receipt) records the
//! latency of every `message` event it receives.
//!
//! Setup is O(N): the first member creates the channel naming every other member *before*
//! they connect, so the setup's `member_joined` events go to it alone; the others connect
//! afterwards without `resume` and so start with the first message sent.
//!
//! `--target` other than `herald` runs the same shape against Herald's `publish` path or a
//! peer server instead ([`super::peers`]).

use super::Ctx;
use super::net::{self, Ws};
use super::peers::{self, Outcome, PeerArgs, Shape, Target};
use super::report::{CpuMeter, Latencies, Report, nanos_since};
use super::scan::{self, Frame};
use anyhow::Context;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// What to drive: Herald's durable channel path, its `publish` path, or a peer server.
    #[arg(long, value_enum, default_value = "herald")]
    pub target: Target,
    /// Members of the channel, one connection each (users bench-0 .. bench-<N-1>); for the
    /// other targets, subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// How many members send (the first K), sharing the rate; for the other targets, extra
    /// publisher connections.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Longest wait, after the last send, for deliveries still in flight (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Bytes of each message's payload (JSON carrying the send time, padded), at least 33.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[command(flatten)]
    pub peers: PeerArgs,
}

impl FanoutArgs {
    pub fn shape(&self, concurrency: usize) -> Shape {
        Shape {
            members: self.members,
            senders: self.senders,
            rate: self.rate,
            duration: self.duration,
            drain: self.drain,
            size: self.size,
            concurrency,
        }
    }
}

/// Per-connection read buffer: events arrive in bursts of up to 32 frames of ~500 bytes, most
/// often one at a time. tungstenite zero-fills the free part of this buffer before every read
/// (at 16 KiB that memset was 7 % of the generator's CPU), so a burst takes a few reads instead.
pub(crate) const READ_BUFFER: usize = 4 * 1024;

/// Members named in `channel.create` (the engine's default cap on initial members); the rest
/// are added with `channel.add_member`.
const INITIAL_MEMBERS: usize = 1000;

/// `add_member` requests in flight at once while setting up; their replies and events stay
/// well under the server's per-connection queue.
const ADD_WINDOW: usize = 256;

/// What every connection task updates.
#[derive(Debug)]
struct Shared {
    base: Instant,
    /// `message` events carrying a bench timestamp, over all connections.
    received: AtomicU64,
    /// Nanoseconds (since `base`) of the latest such receipt.
    last_rx: AtomicU64,
    /// `message` events without a bench timestamp (not ours).
    foreign: AtomicU64,
    acks: AtomicU64,
    /// Nanoseconds (since `base`) of the latest `ok` reply.
    last_ack: AtomicU64,
    errors: AtomicU64,
    /// Connections the server closed; `kicked` those closed with 4008 (too far behind).
    closed: AtomicU64,
    kicked: AtomicU64,
    /// Bytes of every frame received (payload and WebSocket header).
    wire_bytes: AtomicU64,
    latency: Latencies,
    /// With several nodes (`--also-url`): the latency seen by the connections of each node
    /// (connection i is on node i mod n), so with one sender (on node 0) the others show
    /// what a delivery that crosses the broker costs.
    by_node: Vec<Latencies>,
}

/// Runs the shape over Herald's durable channel path.
pub async fn measure(ctx: &Ctx, a: &Shape) -> anyhow::Result<(Report, Outcome)> {
    a.check()?;
    ctx.check_capacity(a.members)?;
    let rss_before = match ctx.pid {
        Some(pid) => peers::settled_rss(pid).await,
        None => None,
    };
    let n = a.members;
    let users: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let tokens = users.iter().map(|u| ctx.minter.token(u, None)).collect::<anyhow::Result<Vec<_>>>()?;

    let t_setup = Instant::now();
    let mut first = net::open_authed(&ctx.target, ctx.source(0), READ_BUFFER, &tokens[0]).await?;
    let channel: Arc<str> = create_channel(&mut first, &users[1..]).await?.into();
    let mut conns = vec![first];
    conns.extend(ctx.connect_all(&tokens[1..], 1, READ_BUFFER).await?);
    let setup = t_setup.elapsed();
    let rss_after = match ctx.pid {
        Some(pid) => peers::settled_rss(pid).await,
        None => None,
    };
    let metrics_before = net::scrape_metrics(&ctx.target).await.ok();

    let shared = Arc::new(Shared {
        base: Instant::now(),
        received: AtomicU64::new(0),
        last_rx: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        last_ack: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        kicked: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        latency: Latencies::new(),
        by_node: if ctx.nodes.len() > 1 {
            (0..ctx.nodes.len()).map(|_| Latencies::new()).collect()
        } else {
            Vec::new()
        },
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every receiver is polling well before the first send.
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(a.duration);
    let sender_period = Duration::from_secs_f64(a.senders as f64 / a.rate);
    let stagger = Duration::from_secs_f64(1.0 / a.rate);

    let mut receivers = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(a.senders);
    let mut idle_sinks = Vec::with_capacity(n);
    for (i, ws) in conns.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        receivers.push(tokio::spawn(receive(stream, i, shared.clone(), stop_rx.clone())));
        if i < a.senders {
            let plan = Plan {
                channel: channel.clone(),
                start: start + stagger.mul_f64(i as f64),
                period: sender_period,
                end,
                base: shared.base,
                size: a.size,
            };
            senders.push(tokio::spawn(send(sink, plan)));
        } else {
            idle_sinks.push(sink);
        }
    }

    tokio::time::sleep_until(start.into()).await;
    let cpu = CpuMeter::start(ctx.pid);
    let mut sent = 0u64;
    let mut sinks = Vec::new();
    for s in senders {
        let (count, sink) = s.await.context("a sender task failed")??;
        sent += count;
        sinks.push(sink);
    }
    let send_secs = start.elapsed().as_secs_f64();

    // Wait for the deliveries still in flight: until every reply is in and every accepted
    // message has reached every member, or nothing arrived for 3 s, or --drain has passed.
    let drain_until = Instant::now() + Duration::from_secs_f64(a.drain.max(0.0));
    let mut last_progress = (shared.received.load(Ordering::Acquire), Instant::now());
    loop {
        let received = shared.received.load(Ordering::Acquire);
        let replies = shared.acks.load(Ordering::Acquire) + shared.errors.load(Ordering::Acquire);
        let accepted = sent - shared.errors.load(Ordering::Acquire).min(sent);
        if replies >= sent && received >= accepted * n as u64 {
            break;
        }
        if received != last_progress.0 {
            last_progress = (received, Instant::now());
        }
        if Instant::now() >= drain_until || last_progress.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.finish();
    let _ = stop_tx.send(true);
    for r in receivers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    drop((sinks, idle_sinks));
    let metrics_after = net::scrape_metrics(&ctx.target).await.ok();

    let received = shared.received.load(Ordering::Acquire);
    let errors = shared.errors.load(Ordering::Acquire);
    let acks = shared.acks.load(Ordering::Acquire);
    let expected = (sent - errors.min(sent)) * n as u64;
    let last_rx = shared.last_rx.load(Ordering::Acquire);
    let start_nanos = u64::try_from(start.duration_since(shared.base).as_nanos()).unwrap_or(0);
    let rx_secs = (last_rx.saturating_sub(start_nanos) as f64 / 1e9).max(1e-9);
    let ack_secs =
        (shared.last_ack.load(Ordering::Acquire).saturating_sub(start_nanos) as f64 / 1e9).max(1e-9);

    let hist = shared.latency.merged();
    let wire = shared.wire_bytes.load(Ordering::Acquire);
    let dps = received as f64 / rx_secs;

    let mut r = Report::new("fanout");
    r.text("target", "target", Target::Herald.name());
    r.int("members", "members (connections)", n as u64);
    r.int("senders", "senders", a.senders as u64);
    r.num("rate_offered", "offered rate (msgs/s)", a.rate, 1);
    r.int("size", "content (bytes)", peers::payload(0, a.size).len() as u64);
    r.num("setup_secs", "setup: channel + connects (s)", setup.as_secs_f64(), 2);
    r.int("sent", "messages sent", sent);
    r.int("acked", "messages acked", acks);
    r.int("send_errors", "send errors", errors);
    r.num("sent_per_sec", "sent msgs/s", sent as f64 / send_secs.max(1e-9), 1);
    // Below the sent rate when the server cannot keep up with the senders' connections.
    r.num("acked_per_sec", "acked msgs/s (to the last ack)", acks as f64 / ack_secs, 1);
    r.int("deliveries_expected", "deliveries expected", expected);
    r.int("deliveries", "deliveries received", received);
    r.int("missing", "deliveries missing", expected.saturating_sub(received));
    r.num("deliveries_per_sec", "deliveries/s", dps, 1);
    r.latency("latency", "end-to-end latency", &hist);
    for (k, node) in shared.by_node.iter().enumerate() {
        r.latency(&format!("latency_node{k}"), &format!("  of members on node {k}"), &node.merged());
    }
    r.int("closed_by_server", "connections closed by server", shared.closed.load(Ordering::Acquire));
    r.int("kicked_4008", "  of which too slow (4008)", shared.kicked.load(Ordering::Acquire));
    let foreign = shared.foreign.load(Ordering::Acquire);
    if foreign > 0 {
        r.note(format!("{foreign} message events without a bench timestamp were ignored"));
    }
    if let (Some(b), Some(a)) = (&metrics_before, &metrics_after) {
        if let Some(d) = net::Metrics::delta(b, a, "herald_fanout_deliveries") {
            r.int("server_fanout_deliveries", "server: fan-out deliveries queued", d as u64);
        }
        if let Some(d) = net::Metrics::delta(b, a, "herald_queue_full_disconnects") {
            r.int("server_queue_full_disconnects", "server: queue-full disconnects", d as u64);
        }
    }
    let rss_per = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    let outcome = peers::finish(
        &mut r,
        peers::Tail {
            target: Target::Herald.name(),
            rate: a.rate,
            members: n,
            size: peers::payload(0, a.size).len(),
            sent,
            expected,
            received,
            deliveries_per_sec: dps,
            hist: &hist,
            wire,
            rss: (rss_before, rss_after),
            rss_per,
            cpu: &cpu,
        },
    );
    Ok((r, outcome))
}

/// Creates the bench channel as the first member, naming the others; returns its id.
async fn create_channel(ws: &mut Ws, others: &[String]) -> anyhow::Result<String> {
    let (initial, later) = others.split_at(others.len().min(INITIAL_MEMBERS));
    let frame = serde_json::json!({
        "id": 2, "op": "channel.create", "title": "herald bench fanout", "members": initial,
    });
    let ok = tokio::time::timeout(net::SETUP_TIMEOUT, net::call(ws, 2, frame))
        .await
        .context("channel.create timed out")?
        .context("channel.create")?;
    let id = ok["channel"]["id"].as_str().context("channel.create answered without a channel id")?.to_owned();
    let mut next = 3u64;
    for window in later.chunks(ADD_WINDOW) {
        let first = next;
        for user in window {
            let frame =
                serde_json::json!({"id": next, "op": "channel.add_member", "channel": id, "user": user});
            ws.feed(Message::text(frame.to_string())).await?;
            next += 1;
        }
        ws.flush().await?;
        // One connection's requests are answered in order.
        for want in first..next {
            tokio::time::timeout(net::SETUP_TIMEOUT, net::wait_reply(ws, want))
                .await
                .context("channel.add_member timed out")?
                .context("channel.add_member")?;
        }
    }
    Ok(id)
}

/// When one sender sends.
struct Plan {
    channel: Arc<str>,
    start: Instant,
    period: Duration,
    end: Instant,
    base: Instant,
    /// Bytes of each content.
    size: usize,
}

/// Sends on schedule (the n-th message at `start + n·period`, late ones at once) until `end`;
/// returns how many it sent, and the sink so the connection stays open.
async fn send(mut sink: SplitSink<Ws, Message>, plan: Plan) -> anyhow::Result<(u64, SplitSink<Ws, Message>)> {
    let mut sent = 0u64;
    loop {
        let due = plan.start + plan.period.mul_f64(sent as f64);
        if due >= plan.end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let content = serde_json::to_string(&peers::payload(nanos_since(plan.base), plan.size))?;
        let frame = format!(
            r#"{{"id":{},"op":"message.send","channel":"{}","content":{content}}}"#,
            sent + 2,
            plan.channel
        );
        sink.send(Message::text(frame)).await.context("message.send")?;
        sent += 1;
    }
    Ok((sent, sink))
}

/// Reads one connection until told to stop or closed, timing every bench `message` event.
async fn receive(
    mut stream: SplitStream<Ws>,
    conn: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stopped = net::stopped(&mut stop);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stopped => return,
            m = stream.next() => m,
        };
        if let Some(Ok(Message::Text(t))) = &msg {
            shared.wire_bytes.fetch_add((t.len() + peers::ws_header(t.len())) as u64, Ordering::Relaxed);
        }
        match msg {
            Some(Ok(Message::Text(t))) => match scan::classify(t.as_str()) {
                Frame::Message { sent_nanos: Some(sent) } => {
                    let now = nanos_since(shared.base);
                    shared.latency.record(conn, now.saturating_sub(sent) / 1000);
                    if !shared.by_node.is_empty() {
                        shared.by_node[conn % shared.by_node.len()]
                            .record(conn, now.saturating_sub(sent) / 1000);
                    }
                    shared.received.fetch_add(1, Ordering::AcqRel);
                    shared.last_rx.fetch_max(now, Ordering::AcqRel);
                }
                Frame::Message { sent_nanos: None } => {
                    shared.foreign.fetch_add(1, Ordering::Relaxed);
                }
                Frame::Reply { ok: true, .. } => {
                    shared.acks.fetch_add(1, Ordering::AcqRel);
                    shared.last_ack.fetch_max(nanos_since(shared.base), Ordering::AcqRel);
                }
                Frame::Reply { ok: false, .. } => {
                    shared.errors.fetch_add(1, Ordering::AcqRel);
                }
                Frame::Event | Frame::Unknown => {}
            },
            Some(Ok(Message::Close(c))) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                if c.is_some_and(|c| u16::from(c.code) == 4008) {
                    shared.kicked.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
