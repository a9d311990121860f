//! `herald bench idle`: K authenticated connections that then do nothing; the server's
//! resident memory (`VmRSS` of `--pid`) before they open and once it has settled after,
//! divided by K.
//!
//! Each connection is held by a task that only reads (so a server ping would be answered and
//! a close noticed). Memory is polled until it stops moving rather than slept on; the
//! allocator may keep memory freed by earlier runs, so measure on a fresh server.

use super::Ctx;
use super::net::{self, Ws};
use super::report::{Report, histogram, rss_kib};
use anyhow::bail;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Connections to open and keep idle (users bench-idle-0 .. bench-idle-<K-1>).
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Seconds to keep the connections open after the server's memory has settled.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
}

/// Idle connections read nothing but a rare control frame: a small read buffer keeps the
/// generator's own memory down.
const READ_BUFFER: usize = 4 * 1024;

/// Memory has settled when this many samples, 100 ms apart, lie within the tolerance.
const SETTLE_SAMPLES: usize = 5;
const SETTLE_MAX: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Ctx, a: IdleArgs) -> anyhow::Result<Report> {
    if a.conns == 0 {
        bail!("--conns must be at least 1");
    }
    ctx.check_capacity(a.conns)?;
    if ctx.pid.is_some_and(|p| rss_kib(p).is_none()) {
        bail!(
            "cannot read /proc/{}/status: is --pid the server's process id, on this machine?",
            ctx.pid.unwrap_or(0)
        );
    }
    let tokens = (0..a.conns)
        .map(|i| ctx.minter.token(&format!("bench-idle-{i}"), None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metrics_before = net::scrape_metrics(&ctx.target).await.ok();
    let rss_before = ctx.pid.and_then(rss_kib);
    let self_before = rss_kib(std::process::id());

    let t0 = Instant::now();
    let opened = ctx.connect_many(&tokens, 0, READ_BUFFER).await;
    let connect_secs = t0.elapsed().as_secs_f64().max(1e-9);
    let mut conns = Vec::with_capacity(opened.len());
    let mut connect_latency = histogram();
    let mut failed = 0u64;
    let mut first_error = None;
    for r in opened {
        match r {
            Ok((ws, took)) => {
                connect_latency.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                conns.push(ws);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connected = conns.len() as u64;
    let closed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let holders: Vec<_> =
        conns.into_iter().map(|ws| tokio::spawn(hold(ws, closed.clone(), stop_rx.clone()))).collect();

    let settled = match ctx.pid {
        Some(pid) => Some(settle(pid).await),
        None => None,
    };
    let self_after = rss_kib(std::process::id());
    let metrics_after = net::scrape_metrics(&ctx.target).await.ok();
    if a.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.hold.min(3600.0))).await;
    }
    let still_closed = closed.load(Ordering::Acquire);
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }

    let mut r = Report::new("idle");
    r.int("conns", "connections requested", a.conns as u64);
    r.int("connected", "connections opened", connected);
    r.int("failed", "connections failed", failed);
    r.int("closed_by_server", "closed by server while idle", still_closed);
    r.num("connect_secs", "time to open all (s)", connect_secs, 2);
    r.num("connects_per_sec", "connects/s", connected as f64 / connect_secs, 1);
    r.latency("connect", "connect + auth", &connect_latency);
    if let Some(m) = &metrics_after
        && let Some(c) = m.get("herald_connections")
    {
        let before = metrics_before.as_ref().and_then(|m| m.get("herald_connections")).unwrap_or(0.0);
        r.int("server_connections", "server: connections gauge", c as u64);
        r.int("server_connections_before", "server: connections gauge before", before as u64);
    }
    match (rss_before, settled) {
        (Some(before), Some((after, took))) => {
            r.num("server_rss_before_mib", "server RSS before (MiB)", before as f64 / 1024.0, 1);
            r.num("server_rss_after_mib", "server RSS after (MiB)", after as f64 / 1024.0, 1);
            r.num("settle_secs", "RSS settled after (s)", took.as_secs_f64(), 1);
            if connected > 0 {
                let per = (after as f64 - before as f64) / connected as f64;
                r.num("server_kib_per_conn", "server RSS per connection (KiB)", per, 2);
            }
        }
        _ => r.note("no --pid: server memory not measured"),
    }
    if let (Some(b), Some(a2)) = (self_before, self_after)
        && connected > 0
    {
        r.num(
            "generator_kib_per_conn",
            "generator RSS per connection (KiB)",
            (a2 as f64 - b as f64) / connected as f64,
            2,
        );
    }
    if let Some(e) = first_error {
        r.note(format!("first connection failure: {e}"));
    }
    Ok(r)
}

/// Polls the server's RSS until [`SETTLE_SAMPLES`] samples lie within 0.2 % (at least
/// 256 KiB) of each other, or [`SETTLE_MAX`] passes. Returns the last sample and the wait.
async fn settle(pid: u32) -> (u64, Duration) {
    let t0 = Instant::now();
    let mut window: VecDeque<u64> = VecDeque::with_capacity(SETTLE_SAMPLES);
    let mut last = 0;
    loop {
        if let Some(r) = rss_kib(pid) {
            last = r;
            if window.len() == SETTLE_SAMPLES {
                window.pop_front();
            }
            window.push_back(r);
            let (lo, hi) = window.iter().fold((u64::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if window.len() == SETTLE_SAMPLES && hi - lo <= (hi / 500).max(256) {
                return (last, t0.elapsed());
            }
        }
        if t0.elapsed() >= SETTLE_MAX {
            return (last, t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps one connection open, reading, until told to stop; counts a close by the server.
async fn hold(mut ws: Ws, closed: Arc<AtomicU64>, mut stop: watch::Receiver<bool>) {
    let mut stopped = net::stopped(&mut stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            m = ws.next() => match m {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_)) | None => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
