//! `herald bench append`: C connections, each sending `message.send` and awaiting its reply
//! before the next (or keeping `--window` requests in flight, as a client that pipelines its
//! sends does), so every figure is of *durable* appends (an `ok` means committed with the
//! server's durability). The server's group commit shows in `/metrics`: mutations per commit
//! and commit latency, read before and after the run.
//!
//! By default the senders hold the `server` grant and are not members of the channels (owned
//! by `bench-owner`, who is not connected), so an append is delivered to no one: the figure is
//! the append path alone. `--member-senders` makes them ordinary members instead; each then
//! also receives its channel's `message` events.

use super::Ctx;
use super::net::{self, Ws};
use super::report::{CpuMeter, Latencies, Report};
use super::scan::{self, Frame};
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// Connections, each with `--window` requests in flight.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Requests each connection keeps in flight: 1 waits for each reply before the next
    /// send; more pipelines them, as a client sending without awaiting each reply does (the
    /// server answers them in order, at most `--max-inflight` at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    window: u32,
    /// Messages in total, spread evenly over the connections.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Channels; connection i sends to channel i mod channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Senders are ordinary members of their channel (and receive its events) instead of
    /// non-member holders of the `server` grant.
    #[arg(long)]
    member_senders: bool,
    /// Bytes of content per message.
    #[arg(long, default_value_t = 64)]
    content_bytes: usize,
}

const READ_BUFFER: usize = 16 * 1024;

/// How long one reply may take before the run is abandoned.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Shared {
    acks: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    latency: Latencies,
}

pub async fn run(ctx: &Ctx, a: AppendArgs) -> anyhow::Result<Report> {
    if a.conns == 0 || a.channels == 0 || a.channels > a.conns {
        bail!("--conns must be at least 1 and --channels between 1 and --conns");
    }
    if a.messages < a.conns as u64 {
        bail!("--messages must be at least --conns ({})", a.conns);
    }
    ctx.check_capacity(a.conns + 1)?;
    let users: Vec<String> = (0..a.conns).map(|i| format!("bench-append-{i}")).collect();
    let grants: Option<&[&str]> = if a.member_senders { None } else { Some(&["server"]) };
    let tokens = users.iter().map(|u| ctx.minter.token(u, grants)).collect::<anyhow::Result<Vec<_>>>()?;

    // The owner creates the channels (naming the senders as members with --member-senders).
    let owner_token = ctx.minter.token("bench-owner", None)?;
    let mut owner = net::open_authed(&ctx.target, ctx.source(0), READ_BUFFER, &owner_token).await?;
    let mut channels: Vec<Arc<str>> = Vec::with_capacity(a.channels);
    for c in 0..a.channels {
        let members: Vec<&String> = if a.member_senders {
            users.iter().enumerate().filter(|(i, _)| i % a.channels == c).map(|(_, u)| u).collect()
        } else {
            Vec::new()
        };
        let id = 2 + c as u64;
        let frame = serde_json::json!({
            "id": id, "op": "channel.create", "title": "herald bench append", "members": members,
        });
        let ok = tokio::time::timeout(net::SETUP_TIMEOUT, net::call(&mut owner, id, frame))
            .await
            .context("channel.create timed out")?
            .context("channel.create")?;
        let ch = ok["channel"]["id"].as_str().context("channel.create answered without a channel id")?;
        channels.push(ch.into());
    }
    drop(owner);
    let conns = ctx.connect_all(&tokens, 1, READ_BUFFER).await?;

    let shared = Arc::new(Shared {
        acks: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
        latency: Latencies::new(),
    });
    let content: Arc<str> = "x".repeat(a.content_bytes).into();
    let metrics_before = net::scrape_metrics(&ctx.target).await.ok();
    let cpu = CpuMeter::start(ctx.pid);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.conns);
    let window = a.window as usize;
    for (i, ws) in conns.into_iter().enumerate() {
        let count = a.messages / a.conns as u64 + u64::from((i as u64) < a.messages % a.conns as u64);
        let channel = channels[i % channels.len()].clone();
        tasks.push(tokio::spawn(sender(ws, i, channel, count, window, content.clone(), shared.clone())));
    }
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(anyhow::anyhow!("a sender task failed: {e}"))),
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu.finish();
    if let Some(e) = failure {
        return Err(e.context("append run aborted"));
    }
    let metrics_after = net::scrape_metrics(&ctx.target).await.ok();

    let acks = shared.acks.load(Ordering::Acquire);
    let errors = shared.errors.load(Ordering::Acquire);
    let mut r = Report::new("append");
    r.int("conns", "connections", a.conns as u64);
    r.int("window", "requests in flight per connection", u64::from(a.window));
    r.int("channels", "channels", a.channels as u64);
    r.text("senders", "senders", if a.member_senders { "members" } else { "server grant, not members" });
    r.int("content_bytes", "content bytes", a.content_bytes as u64);
    r.int("messages", "messages sent", a.messages);
    r.int("acked", "messages acked (durable)", acks);
    r.int("errors", "error replies", errors);
    r.num("elapsed_secs", "elapsed (s)", elapsed, 2);
    r.num("appends_per_sec", "durable appends/s", acks as f64 / elapsed, 1);
    r.latency("ack", "ack latency", &shared.latency.merged());
    if let Some(e) = shared.first_error.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
        r.note(format!("first error reply: {e}"));
    }
    if let (Some(b), Some(af)) = (&metrics_before, &metrics_after) {
        let d = |name: &str| net::Metrics::delta(b, af, name);
        if let Some(n) = d("herald_messages_in") {
            r.int("server_messages_in", "server: messages accepted", n as u64);
        }
        if let (Some(sum), Some(count)) =
            (d("herald_commit_batch_size_sum"), d("herald_commit_batch_size_count"))
        {
            r.int("server_commits", "server: commits", count as u64);
            r.num("server_commits_per_sec", "server: commits/s", count / elapsed, 1);
            if count > 0.0 {
                r.num("server_mean_batch", "server: mutations per commit (mean)", sum / count, 2);
            }
        }
        if let (Some(sum), Some(count)) =
            (d("herald_commit_latency_seconds_sum"), d("herald_commit_latency_seconds_count"))
            && count > 0.0
        {
            r.num("server_commit_ms_mean", "server: commit latency mean (ms)", sum / count * 1000.0, 3);
        }
        for (m, key, label) in [
            (b, "server_mean_batch_before", "server: mean batch, all time, before"),
            (af, "server_mean_batch_after", "server: mean batch, all time, after"),
        ] {
            if let (Some(sum), Some(count)) =
                (m.get("herald_commit_batch_size_sum"), m.get("herald_commit_batch_size_count"))
                && count > 0.0
            {
                r.num(key, label, sum / count, 2);
            }
        }
    } else {
        r.note("could not read /metrics: no server commit figures");
    }
    cpu.add_to(&mut r);
    if let Some(secs) = cpu.server_secs
        && acks > 0
    {
        r.num("server_cpu_us_per_append", "server CPU per append (µs)", secs * 1e6 / acks as f64, 1);
    }
    Ok(r)
}

/// Sends `count` messages, keeping up to `window` in flight, timing each from its send to
/// its reply.
async fn sender(
    mut ws: Ws,
    conn: usize,
    channel: Arc<str>,
    count: u64,
    window: usize,
    content: Arc<str>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut sent = 0;
    while sent < count || !pending.is_empty() {
        let before = sent;
        while sent < count && pending.len() < window {
            // Request id 1 was `connect`.
            let id = sent + 2;
            let frame =
                format!(r#"{{"id":{id},"op":"message.send","channel":"{channel}","content":"{content}"}}"#);
            ws.feed(Message::text(frame)).await.context("message.send")?;
            pending.push_back((id, Instant::now()));
            sent += 1;
        }
        if sent > before {
            ws.flush().await.context("message.send")?;
        }
        let (id, ok) = tokio::time::timeout(REPLY_TIMEOUT, reply(&mut ws))
            .await
            .with_context(|| format!("no reply to message.send within {REPLY_TIMEOUT:?}"))??;
        // Replies come in request order; anything else is not one of ours.
        let Some(at) = pending.iter().position(|(p, _)| *p == id) else { continue };
        let Some((_, t0)) = pending.remove(at) else { continue };
        shared.latency.record(conn, u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
        match ok {
            Ok(()) => shared.acks.fetch_add(1, Ordering::Relaxed),
            Err(text) => {
                shared.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(text);
                shared.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
    // Say goodbye so the server does not count a dropped connection.
    let _ = ws.close(None).await;
    Ok(())
}

/// Reads until the next reply: its id, and `Ok` for `ok` or `Err(frame)` for an error reply.
async fn reply(ws: &mut Ws) -> anyhow::Result<(u64, Result<(), String>)> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if let Frame::Reply { id: Some(id), ok } = scan::classify(t.as_str()) {
                    return Ok((id, if ok { Ok(()) } else { Err(t.as_str().to_owned()) }));
                }
            }
            Some(Ok(Message::Close(c))) => {
                bail!(
                    "the server closed the connection: {}",
                    c.map(|c| format!("{} {}", c.code, c.reason)).unwrap_or_default()
                )
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the server closed the connection"),
        }
    }
}
