//! `herald bench presence`: N participants (one WebSocket each) enter one room at once; the
//! time until every one of them knows the full count (from its `room.enter` reply, its
//! `participant_added` / `_removed` events, or a `presence_count`), and the frames the server
//! sent meanwhile (the deltas of `herald_frames_out_total` and `herald_room_frames_total` on
//! /metrics). Coalescing (`--presence-interval-ms`) and counting past `--presence-list-max`
//! are what keep this from costing O(n²) frames.

use super::Ctx;
use super::net::{self, Ws};
use super::report::{Report, histogram};
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct PresenceArgs {
    /// Participants (users bench-presence-0 .. bench-presence-<N-1>), one connection each.
    #[arg(long, default_value_t = 5_000)]
    participants: usize,
    /// Seconds each participant may take to see the full count before it counts as failed.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

const READ_BUFFER: usize = 16 * 1024;

pub async fn run(ctx: &Ctx, a: PresenceArgs) -> anyhow::Result<Report> {
    let n = a.participants;
    if n < 2 {
        bail!("--participants must be at least 2");
    }
    ctx.check_capacity(n)?;
    let tokens = (0..n)
        .map(|i| ctx.minter.token(&format!("bench-presence-{i}"), None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Membership first, over REST, while nobody is online: joining over WebSockets would send
    // every member_joined to every member already connected (O(n²) channel events, and
    // queues overflowing), which is the channel's cost, not the room's.
    // A fresh name per run, so runs against one server do not share a room.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!("bench-presence-{stamp}");
    let created = post(&ctx.target, "/v1/channels", &tokens[0], &json!({"name": name})).await?;
    let channel = created["channel"]["id"].as_str().context("POST /v1/channels gave no id")?.to_owned();
    let joins = futures::stream::iter(tokens.iter().skip(1))
        .map(|token| {
            let path = format!("/v1/channels/{channel}/join");
            async move { post(&ctx.target, &path, token, &json!({})).await }
        })
        .buffer_unordered(ctx.concurrency)
        .collect::<Vec<_>>()
        .await;
    for j in joins {
        j.context("POST /v1/channels/{id}/join")?;
    }
    let conns = ctx.connect_all(&tokens, 0, READ_BUFFER).await?;
    let before = net::scrape_metrics(&ctx.target).await.ok();
    let deadline = Duration::from_secs(a.timeout_secs.max(1));
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| {
            let channel = channel.clone();
            tokio::spawn(
                async move { tokio::time::timeout(deadline, enter_and_watch(ws, channel, n, t0)).await },
            )
        })
        .collect();
    let mut seen = histogram();
    let mut failed = 0u64;
    let mut frames_read = 0u64;
    let mut first_error = None;
    let mut slowest = Duration::ZERO;
    // Held until /metrics is read: closing them would add the removals to the figures.
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(Ok(Ok((took, frames, ws)))) => {
                held.push(ws);
                seen.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                slowest = slowest.max(took);
                frames_read += frames;
            }
            Ok(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Ok(Err(_)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("no full count within {deadline:?}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    let after = net::scrape_metrics(&ctx.target).await.ok();
    drop(held);
    let mut r = Report::new("presence");
    r.int("participants", "participants", n as u64);
    r.int("failed", "participants that never saw the full count", failed);
    r.num("all_seen_secs", "time until every participant saw the full count (s)", slowest.as_secs_f64(), 3);
    r.latency("seen", "per participant: enter → full count", &seen);
    r.int("frames_read", "frames read by the participants (until the full count)", frames_read);
    if let (Some(b), Some(a2)) = (&before, &after) {
        for (key, metric, label) in [
            ("server_frames_out", "herald_frames_out_total", "server: frames written (all)"),
            ("server_room_frames", "herald_room_frames_total", "server: room frames queued"),
        ] {
            if let Some(d) = net::Metrics::delta(b, a2, metric) {
                r.int(key, label, d as u64);
                r.num(
                    &format!("{key}_per_participant"),
                    &format!("{label} per participant"),
                    d / n as f64,
                    1,
                );
            }
        }
    } else {
        r.note("/metrics unreadable: server frame counts not measured");
    }
    if let Some(e) = first_error {
        r.note(format!("first failure: {e}"));
    }
    Ok(r)
}

/// One REST `POST` (HTTP/1.0, so the body ends with the connection); its JSON answer, or an
/// error naming the status.
async fn post(target: &net::Target, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(target.addr).await?;
        let head = format!(
            "POST {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            target.authority,
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), fetch)
        .await
        .with_context(|| format!("POST {path} timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, answer) =
        text.split_once("\r\n\r\n").with_context(|| format!("POST {path}: malformed HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1).is_none_or(|c| !c.starts_with('2')) {
        bail!("POST {path} answered {status:?}: {answer}");
    }
    serde_json::from_str(answer).with_context(|| format!("POST {path}: not JSON"))
}

/// Enters the room and reads until this participant knows all `n`; how long that took from
/// `t0`, how many frames it read, and the connection (still a participant).
async fn enter_and_watch(
    mut ws: Ws,
    channel: String,
    n: usize,
    t0: Instant,
) -> anyhow::Result<(Duration, u64, Ws)> {
    ws.send(Message::text(json!({"id": 3, "op": "room.enter", "channel": channel}).to_string())).await?;
    let mut known: HashSet<String> = HashSet::new();
    let mut count: Option<u64> = None;
    let mut frames = 0u64;
    loop {
        let msg = match ws.next().await {
            Some(m) => m?,
            None => bail!("the server closed the connection"),
        };
        let Message::Text(t) = msg else { continue };
        frames += 1;
        let v: Value = serde_json::from_str(t.as_str())?;
        if v["id"] == 3 {
            if let Some(e) = v.get("error") {
                bail!("room.enter: {e}");
            }
            let ok = &v["ok"];
            if let Some(c) = ok["count"].as_u64() {
                count = Some(c);
            }
            for p in ok["participants"].as_array().into_iter().flatten() {
                if let Some(id) = p["participant_id"].as_str() {
                    known.insert(id.to_owned());
                }
            }
        } else {
            match v["event"].as_str() {
                Some("participant_added") | Some("participant_updated") => {
                    if let Some(id) = v["participant"]["participant_id"].as_str() {
                        known.insert(id.to_owned());
                    }
                }
                Some("participant_removed") => {
                    if let Some(id) = v["participant"]["participant_id"].as_str() {
                        known.remove(id);
                    }
                }
                Some("presence_count") => count = v["count"].as_u64(),
                _ => {}
            }
        }
        if count.is_some_and(|c| c as usize >= n) || known.len() >= n {
            return Ok((t0.elapsed(), frames, ws));
        }
    }
}
