//! The generator's side of the wire: the server's address, client sockets (optionally bound to
//! one of several loopback sources), the `connect` handshake, request/reply for setup, tokens
//! minted with the server's secret, and a `/metrics` scrape.

use super::scan::{self, Frame};
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use herald_server::auth::{Claims, load_or_create_secret, mint_hs256, now_secs, secret_path};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Resolves once `stop` turns true (or its sender is gone). Made once per connection and
/// polled by reference in the read loop's `select!`: a new `wait_for` per frame would register
/// a waiter with the watch and drop it again, a cost per received frame on the CPU the server
/// shares.
pub fn stopped(stop: &mut watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
}

/// How long one handshake or one setup request may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The server: its socket address, and the URLs built from it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub authority: String,
    pub ws_url: String,
}

impl Target {
    /// Parses `http://host:port[/…]` (or `ws://`) and resolves the host.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let rest = if let Some(r) = url.strip_prefix("http://").or_else(|| url.strip_prefix("ws://")) {
            r
        } else if url.starts_with("https://") || url.starts_with("wss://") {
            bail!("--url {url:?}: herald bench speaks plain HTTP only; point it at the server's own address");
        } else {
            bail!("--url {url:?} must start with http://");
        };
        let authority = rest.split('/').next().unwrap_or_default().to_owned();
        if authority.is_empty() {
            bail!("--url {url:?} has no host");
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve {with_port:?}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .with_context(|| format!("{with_port:?} resolves to no address"))?;
        Ok(Target { addr, ws_url: format!("ws://{authority}/v1/ws"), authority })
    }
}

/// The source addresses for `--sources n`: none for 1 (the kernel chooses), else
/// 127.0.0.2 ..= 127.0.0.(n+1). Only a loopback server is reachable from those.
pub fn source_addresses(n: u8, target: &Target) -> anyhow::Result<Vec<IpAddr>> {
    if n <= 1 {
        return Ok(Vec::new());
    }
    if !target.addr.ip().is_loopback() || !target.addr.is_ipv4() {
        bail!(
            "--sources {n} binds to 127.0.0.x, so the server must listen on IPv4 loopback, not {}",
            target.addr
        );
    }
    if n > 250 {
        bail!("--sources must be at most 250");
    }
    Ok((0..n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))).collect())
}

/// How many ephemeral ports one source address has (`ip_local_port_range`).
pub fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Opens a WebSocket to the server (no `connect` frame yet). `read_buffer` is tungstenite's
/// read buffer per connection: small for idle connections, larger for busy ones.
pub async fn open(target: &Target, source: Option<IpAddr>, read_buffer: usize) -> anyhow::Result<Ws> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind a client socket to {ip}"))?;
    }
    let stream =
        socket.connect(target.addr).await.with_context(|| format!("cannot connect to {}", target.addr))?;
    // Latency is what is measured: do not let Nagle hold small frames back.
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(target.ws_url.as_str(), stream, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {} failed", target.ws_url))?;
    Ok(ws)
}

/// Opens a WebSocket and authenticates it (`connect`, request id 1), within [`SETUP_TIMEOUT`].
pub async fn open_authed(
    target: &Target,
    source: Option<IpAddr>,
    read_buffer: usize,
    token: &str,
) -> anyhow::Result<Ws> {
    tokio::time::timeout(SETUP_TIMEOUT, async {
        let mut ws = open(target, source, read_buffer).await?;
        let frame = serde_json::json!({"id": 1, "op": "connect", "token": token});
        call(&mut ws, 1, frame).await.context("connect")?;
        Ok(ws)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no connect reply within {SETUP_TIMEOUT:?}"))?
}

/// Sends one request and waits for its reply, skipping events in between. Returns the `ok`
/// value; an `error` reply or a close becomes an error. For setup, not for measured paths.
pub async fn call(ws: &mut Ws, id: u64, frame: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    ws.send(Message::text(frame.to_string())).await?;
    wait_reply(ws, id).await
}

/// Reads until the reply to request `id` arrives (see [`call`]).
pub async fn wait_reply(ws: &mut Ws, id: u64) -> anyhow::Result<serde_json::Value> {
    loop {
        let msg = match ws.next().await {
            Some(m) => m?,
            None => bail!("the server closed the connection"),
        };
        match msg {
            Message::Text(t) => {
                if let Frame::Reply { id: Some(got), .. } = scan::classify(t.as_str())
                    && got == id
                {
                    let mut v: serde_json::Value = serde_json::from_str(t.as_str())?;
                    if let Some(ok) = v.get_mut("ok") {
                        return Ok(ok.take());
                    }
                    let e = &v["error"];
                    bail!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("error"),
                        e["message"].as_str().unwrap_or("")
                    );
                }
            }
            Message::Close(c) => match c {
                Some(c) => bail!("the server closed the connection: {} {}", u16::from(c.code), c.reason),
                None => bail!("the server closed the connection"),
            },
            _ => {}
        }
    }
}

/// Mints HS256 tokens for bench users with the server's secret.
pub struct Minter {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(secret: Vec<u8>) -> Minter {
        Minter { secret }
    }

    /// A token for `sub`, valid for two hours; `grants` as in the token claim (`None`: the
    /// ordinary set).
    pub fn token(&self, sub: &str, grants: Option<&[&str]>) -> anyhow::Result<String> {
        let claims = Claims {
            sub: sub.to_owned(),
            name: None,
            kind: None,
            exp: now_secs() + 2 * 3600,
            iat: Some(now_secs()),
            app: None,
            grants: grants.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
        };
        Ok(mint_hs256(&self.secret, &claims)?)
    }
}

/// The secret of a server's data directory. Unlike `herald token`, a missing secret is an
/// error: a fresh one would sign tokens the server refuses.
pub fn read_data_secret(data: &Path) -> anyhow::Result<Vec<u8>> {
    if !secret_path(data).exists() {
        bail!(
            "no token secret in {} (expected {}); pass the server's --data or --token-secret-file",
            data.display(),
            secret_path(data).display()
        );
    }
    load_or_create_secret(data).with_context(|| format!("cannot read the secret in {}", data.display()))
}

/// A secret file in the format of the data directory's (`--token-secret-file`).
pub fn read_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(herald_server::auth::read_secret_file(path)?)
}

/// Fetches `/metrics`. HTTP/1.0 keeps this to a few lines: the server answers with a plain
/// body and closes, so there is no chunking or keep-alive to handle.
pub async fn scrape_metrics(target: &Target) -> anyhow::Result<Metrics> {
    let fetch = async {
        let mut s = TcpStream::connect(target.addr).await?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", target.authority).as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(SETUP_TIMEOUT, fetch).await.context("GET /metrics timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("GET /metrics: malformed HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET /metrics answered {status:?}");
    }
    Ok(Metrics::parse(body))
}

/// The unlabelled series of a Prometheus text exposition (histogram `_sum`/`_count`,
/// counters, gauges); bucket lines, which carry labels, are skipped.
#[derive(Debug, Clone, Default)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut map = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.contains('{') {
                continue;
            }
            let mut it = line.split_whitespace();
            if let (Some(name), Some(value)) = (it.next(), it.next())
                && let Ok(v) = value.parse::<f64>()
            {
                map.insert(name.to_owned(), v);
            }
        }
        Metrics(map)
    }

    /// A series by name; counters may carry the `_total` suffix of OpenMetrics.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).or_else(|| self.0.get(&format!("{name}_total"))).copied()
    }

    /// `after - before` of one series, if both have it.
    pub fn delta(before: &Metrics, after: &Metrics, name: &str) -> Option<f64> {
        Some(after.get(name)? - before.get(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_skips_labelled_lines_and_reads_total_suffix() {
        let m = Metrics::parse(
            "# HELP x y\nherald_commit_batch_size_sum 120.0\nherald_commit_batch_size_count 10\n\
             herald_commit_batch_size_bucket{le=\"1.0\"} 3\nherald_messages_in_total 7\n# EOF\n",
        );
        assert_eq!(m.get("herald_commit_batch_size_sum"), Some(120.0));
        assert_eq!(m.get("herald_commit_batch_size_count"), Some(10.0));
        assert_eq!(m.get("herald_messages_in"), Some(7.0));
        assert_eq!(m.get("herald_commit_batch_size_bucket"), None);
    }
}
