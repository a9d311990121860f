//! The WebSocket gateway (`GET /v1/ws`): authenticate with the first frame, then run one
//! connection as two halves in one task: a reader that parses frames and calls the engine,
//! and a writer that drains the connection's bounded queue onto the socket in batches (many
//! frames, one flush).
//!
//! Close codes: 4401 bad or missing `connect`, or the token's `exp` passed without an
//! `auth.refresh`; 4008 the client fell too far behind (resume
//! from your last seq); 4400 too many malformed frames in a row; 1012 server restarting
//! (reconnect and resume); 1009 frame over the hard size limit; 1011 the server failed (e.g. the
//! store, mid-replay): reconnect and resume; 4403 disconnected by the app's backend
//! (`POST /v1/users/{id}/disconnect`): do not reconnect on your own.

use crate::AppState;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use herald_engine::events::to_bytes;
use herald_engine::{ConnHandle, ConnShared, EngineError, Principal, ResumeEnd};
use herald_proto::frames::{
    BadFrame, ConnectOk, RefreshOk, Request, RequestFrame, decode_binary, parse_binary_frame, parse_request,
};
use herald_proto::names::looks_like_uuid;
use herald_proto::rooms::{RoomRequest, RoomRequestFrame, parse_room_request, room_request_of_header};
use herald_proto::{ErrorCode, ErrorDetail};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Close codes of the gateway.
pub mod close {
    pub const UNAUTHORIZED: u16 = 4401;
    pub const TOO_SLOW: u16 = 4008;
    pub const BAD_FRAMES: u16 = 4400;
    pub const RESTART: u16 = 1012;
    pub const TOO_BIG: u16 = 1009;
    pub const PING_TIMEOUT: u16 = 4000;
    pub const INTERNAL: u16 = 1011;
    pub const TOO_MANY_CONNECTIONS: u16 = 4429;
    /// Closed by the app's backend (`POST /v1/users/{id}/disconnect`): do not reconnect.
    pub const DISCONNECTED: u16 = 4403;
}

/// The peer's address, when the server was started with `ConnectInfo` (tests that drive
/// `app()` directly have none).
pub struct PeerAddr(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(PeerAddr(info.map(|c| c.0)))
    }
}

/// When the peer was last heard from, shared by the two halves of a connection.
struct Liveness {
    base: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness { base: Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        self.base.elapsed().saturating_sub(self.last_heard())
    }

    /// When the peer was last heard from, since `base`.
    fn last_heard(&self) -> Duration {
        Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Now, since `base`, in the same milliseconds as [`Liveness::last_heard`].
    fn now(&self) -> Duration {
        Duration::from_millis(self.base.elapsed().as_millis() as u64)
    }
}

/// Malformed frames in a row before the connection is closed with 4400.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 16;

/// How long the last frames and the close frame may take to go out before the socket is
/// dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Frames written per flush.
const WRITE_BATCH: usize = 32;

pub async fn upgrade(
    State(st): State<AppState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    use axum::response::IntoResponse;
    let addr_slot = match peer.map(|p| st.caps().per_addr.take(p.ip())) {
        Some(None) => {
            let max = st.caps().per_addr.max();
            let e = crate::error::ApiError::new(
                ErrorCode::RateLimited,
                format!("this address has {max} WebSocket connections open, the most allowed"),
            );
            return e.into_response();
        }
        Some(Some(slot)) => Some(slot),
        None => None,
    };
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let max = st.config().max_frame_bytes;
    // Binary frames carry room attachments up to --max-attachment-bytes besides their JSON
    // header: such a frame just over the limit is answered `payload_too_large`, not dropped.
    let hard =
        max.saturating_mul(4).max(st.config().max_attachment_bytes.saturating_add(max).saturating_add(4096));
    // A small read buffer: tungstenite's default (128 KiB) kept per connection would cost
    // more than everything else an idle connection holds. 1 KiB rather than 4: an idle
    // connection keeps it allocated for its whole life (`bench idle`: 13.6 → 10.6 KiB of server
    // RSS per connection, debug build), while requests are small and a large frame is still
    // read whole (tungstenite reserves its length, then reads 1 KiB at a time into it). Frames above the soft limit get
    // `payload_too_large`; far above it (4x) the socket is closed with 1009.
    //
    // The write buffer has no cap of its own: it holds at most the frame being written, which
    // is already in memory (the queue is bounded), and a cap below the largest legal reply (a
    // history page of the largest contents) dropped the socket mid-reply.
    ws.read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| {
            // Split before the task's future is made: a `WebSocket` held by value there would
            // keep its bytes in every connection's task for the connection's whole life.
            let (sink, stream) = socket.split();
            // The gateway's own future, not one wrapping it: a wrapper would hold a second
            // copy of everything it hands on, for the connection's whole life.
            gateway(sink, stream, st, header_token, addr_slot)
        })
}

#[derive(Serialize)]
struct OkFrame<'a, T: Serialize> {
    id: &'a Value,
    ok: &'a T,
}

#[derive(Serialize)]
struct ErrFrame<'a> {
    id: &'a Value,
    error: &'a ErrorDetail,
}

fn error_frame(id: &Value, e: &ErrorDetail) -> Bytes {
    to_bytes(&ErrFrame { id, error: e })
}

fn detail(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail { code, message: message.into(), retry_after_ms: None }
}

/// A queued frame as a WebSocket message: JSON text, or a §1 binary frame (room attachments
/// and stream chunks).
fn text(b: Bytes) -> Option<Message> {
    if herald_engine::rooms::is_binary_frame(&b) {
        return Some(Message::Binary(b));
    }
    Utf8Bytes::try_from(b).ok().map(Message::Text)
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

async fn reject(mut sink: Sink, id: &Value, message: String) {
    let frame = error_frame(id, &detail(ErrorCode::Unauthorized, message));
    if let Some(m) = text(frame) {
        let _ = sink.send(m).await;
    }
    let _ = sink.send(close_msg(close::UNAUTHORIZED, "unauthorized")).await;
}

/// The optional `device` of a `connect` frame (§7), read beside the typed request so the
/// shared `Request::Connect` keeps its shape. `Err` when it is there but not a string.
fn connect_device(text: &str) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Device {
        #[serde(default)]
        device: Option<Value>,
    }
    match serde_json::from_str::<Device>(text).map(|d| d.device) {
        Ok(None | Some(Value::Null)) | Err(_) => Ok(None),
        Ok(Some(Value::String(s))) => Ok(Some(s)),
        Ok(Some(_)) => Err("device must be a string".into()),
    }
}

/// A connection past its `connect`: what the rest of its life needs.
struct Established {
    sink: Sink,
    stream: Stream,
    who: Principal,
    exp: u64,
    conn: ConnHandle,
    rx: herald_engine::OutboundRx,
    _user_slot: crate::caps::Slot<(String, String)>,
}

async fn gateway(
    sink: Sink,
    stream: Stream,
    st: AppState,
    header_token: Option<String>,
    _addr_slot: Option<crate::caps::Slot<std::net::IpAddr>>,
) {
    let _guard = st.track_connection();
    // Boxed, and gone once connected: what `connect` needed stays out of the task that holds
    // the connection for its whole life (`bench idle`).
    let Some(est) = Box::pin(handshake(sink, stream, &st, header_token)).await else { return };
    run(est, &st).await;
}

/// Reads and answers `connect` (or refuses the connection, answering why).
async fn handshake(
    mut sink: Sink,
    mut stream: Stream,
    st: &AppState,
    header_token: Option<String>,
) -> Option<Established> {
    let timeout = Duration::from_secs(st.config().auth_timeout_secs);
    let first = tokio::time::timeout(timeout, stream.next()).await;
    let (id, token, resume, device) = match first {
        Ok(Some(Ok(Message::Text(t)))) => match parse_request(t.as_str()) {
            Ok(RequestFrame { id, request: Request::Connect { token, resume, .. } }) => {
                (id, token, resume, connect_device(t.as_str()))
            }
            Ok(f) => {
                reject(sink, &f.id, "the first frame must be connect".into()).await;
                return None;
            }
            Err(bad) => {
                reject(sink, &bad.id, "the first frame must be connect".into()).await;
                return None;
            }
        },
        Ok(Some(Ok(_))) => {
            reject(sink, &Value::Null, "the first frame must be connect".into()).await;
            return None;
        }
        Err(_) => {
            reject(sink, &Value::Null, "no connect frame in time".into()).await;
            return None;
        }
        Ok(None | Some(Err(_))) => return None,
    };
    let token = if token.is_empty() { header_token.unwrap_or_default() } else { token };
    let (who, exp) = match st.verifier().verify_with_exp(&token) {
        Ok(p) => p,
        Err(e) => {
            reject(sink, &id, e.to_string()).await;
            return None;
        }
    };
    let Some(_user_slot) = st.caps().per_user.take((who.app.clone(), who.user.id.clone())) else {
        let max = st.caps().per_user.max();
        let e = detail(
            ErrorCode::RateLimited,
            format!("user {:?} has {max} connections open, the most allowed", who.user.id),
        );
        if let Some(m) = text(error_frame(&id, &e)) {
            let _ = sink.send(m).await;
        }
        let _ = sink.send(close_msg(close::TOO_MANY_CONNECTIONS, "too many connections")).await;
        return None;
    };
    // §7: a declared device must be the caller's own, live one; otherwise the same close as a
    // bad token, after the error that says why.
    let device = match device {
        Ok(d) => d,
        Err(message) => {
            let frame = error_frame(&id, &detail(ErrorCode::BadRequest, message));
            if let Some(m) = text(frame) {
                let _ = sink.send(m).await;
            }
            let _ = sink.send(close_msg(close::UNAUTHORIZED, "bad device")).await;
            return None;
        }
    };
    if let Some(d) = &device
        && let Err(e) = st.engine().check_device(&who, d).await
    {
        if let Some(m) = text(error_frame(&id, &e.detail())) {
            let _ = sink.send(m).await;
        }
        let _ = sink.send(close_msg(close::UNAUTHORIZED, "unknown device")).await;
        return None;
    }
    let user = who.user.clone();
    let first =
        |conn_id: &str| to_bytes(&OkFrame { id: &id, ok: &ConnectOk { conn_id: conn_id.to_owned(), user } });
    let (conn, rx) = match st.engine().connect(&who, &resume, first).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(m) = text(error_frame(&id, &e.detail())) {
                let _ = sink.send(m).await;
            }
            let _ = sink.send(close_msg(1011, "internal error")).await;
            return None;
        }
    };
    st.engine().attach_e2ee(&conn, &who, device);
    tracing::debug!(user = %who.user.id, conn = %conn.conn_id, "connected");
    Some(Established { sink, stream, who, exp, conn, rx, _user_slot })
}

/// A connection's life after `connect`: the reader, the resume replay and the writer.
async fn run(est: Established, st: &AppState) {
    let Established { mut sink, mut stream, who, exp, conn, mut rx, _user_slot } = est;
    // Removes this connection's room participants however the gateway ends.
    let _rooms = st.engine().rooms().guard(conn.shared());

    let mut shutdown = st.shutdown_signal();
    let counters = st.metrics().gateway.clone();
    let live = Liveness::new();
    let ping = Some(Duration::from_secs(st.config().ping_interval_secs)).filter(|d| !d.is_zero());
    // The replay runs beside the reader, not before it: a long replay must not leave pongs
    // and requests unread (the peer would look dead), and it is paced so that it never fills
    // the queue that live events and replies need.
    let reader = async {
        let resume = Box::pin(st.engine().resume(&conn));
        let read = read_loop(&mut stream, st, &who, &conn, &mut shutdown, &live, exp);
        tokio::pin!(read);
        tokio::select! {
            biased;
            end = resume => match end {
                ResumeEnd::Done => {}
                ResumeEnd::Gone => return None,
                ResumeEnd::Failed => return Some((close::INTERNAL, "replay failed; reconnect and resume")),
            },
            close = &mut read => return close,
        }
        read.await
    };
    let end = tokio::select! {
        end = write_loop(&mut sink, &mut rx, &conn, &counters, ping, &live) => end,
        close = reader => match close {
            Some(c) => WriterEnd::Close(c.0, c.1),
            None => WriterEnd::Gone,
        },
    };
    match end {
        WriterEnd::Close(code, reason) => {
            // Flush what is already queued (replies to the last requests) before closing.
            rx.close();
            let flush = async {
                while let Some(b) = rx.recv().await {
                    if let Some(m) = text(b)
                        && sink.feed(m).await.is_err()
                    {
                        return;
                    }
                }
                let _ = sink.send(close_msg(code, reason)).await;
            };
            // Bounded: a client that stopped reading must not keep the connection alive.
            let _ = tokio::time::timeout(CLOSE_GRACE, flush).await;
        }
        WriterEnd::Kicked => {
            // A kicked client is often one that stopped reading: its socket buffers are full,
            // so the close frame may never get out. Bounded, so the connection is released.
            let close = if conn.is_disconnected() {
                sink.send(close_msg(close::DISCONNECTED, "disconnected by the app"))
            } else {
                sink.send(close_msg(close::TOO_SLOW, "too far behind; reconnect and resume"))
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
        }
        WriterEnd::Gone => {}
    }
    tracing::debug!(user = %who.user.id, conn = %conn.conn_id, "disconnected");
}

enum WriterEnd {
    Kicked,
    Gone,
    Close(u16, &'static str),
}

async fn write_batch(sink: &mut Sink, batch: &mut Vec<Bytes>) -> bool {
    for b in batch.drain(..) {
        let Some(m) = text(b) else { continue };
        if sink.feed(m).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

/// Writes a batch; a write that had to wait for room and then completed counts as hearing
/// from the peer. Room in a full socket comes only from the peer acknowledging and reading
/// what was sent, so a client busy reading a long backlog is alive even while its pong still
/// queues behind megabytes of frames in kernel buffers; a dead peer acknowledges nothing, so
/// its writes never complete and the ping timeout still catches it.
async fn write_batch_alive(sink: &mut Sink, batch: &mut Vec<Bytes>, live: &Liveness) -> bool {
    let write = write_batch(sink, batch);
    tokio::pin!(write);
    match futures::poll!(write.as_mut()) {
        std::task::Poll::Ready(ok) => ok,
        std::task::Poll::Pending => {
            let ok = write.await;
            if ok {
                live.touch();
            }
            ok
        }
    }
}

/// Resolves once the peer has been silent for two ping intervals (never, without pings).
async fn ping_deadline(ping: Option<Duration>, live: &Liveness) {
    let Some(every) = ping else { return std::future::pending().await };
    loop {
        let silent = live.silent_for();
        if silent >= every * 2 {
            return;
        }
        tokio::time::sleep(every * 2 - silent).await;
    }
}

async fn write_loop(
    sink: &mut Sink,
    rx: &mut herald_engine::OutboundRx,
    conn: &ConnShared,
    counters: &crate::metrics::GatewayCounters,
    ping: Option<Duration>,
    live: &Liveness,
) -> WriterEnd {
    let mut batch = Vec::new();
    // One kick future for the connection's life, not a new `Notified` per batch.
    let kicked = conn.kicked();
    tokio::pin!(kicked);
    // A peer silent for one interval is pinged; if it has not answered by the next tick (an
    // interval later), it is gone (a dead TCP peer sends no FIN, and would otherwise hold its
    // connection forever): closed after two to three intervals of silence.
    let mut ticker = ping.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
    // When the last ping went out (since `live`'s base). A peer is closed only after a ping it
    // has had a whole interval to answer: "silent for two intervals" alone closed a peer whose
    // last frame came just after a tick without ever pinging it (the tick before saw it silent
    // for a hair under one interval).
    let mut pinged_at: Option<Duration> = None;
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let n = tokio::select! {
            biased;
            _ = &mut kicked => return WriterEnd::Kicked,
            n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
            _ = tick => {
                let (Some(every), silent) = (ping, live.silent_for()) else { continue };
                let unanswered = pinged_at.filter(|at| live.last_heard() < *at);
                // The next tick after the ping (ticks are an interval apart, give or take).
                if let Some(at) = unanswered
                    && live.now().saturating_sub(at) >= every - every / 4
                {
                    return WriterEnd::Close(close::PING_TIMEOUT, "no answer to ping");
                }
                if silent >= every && unanswered.is_none() {
                    pinged_at = Some(live.now());
                    // A peer that stopped reading may leave no room for the ping: the deadline
                    // still ends it.
                    // Boxed, as a batch's write is below.
                    let pinged = Box::pin(async {
                        tokio::select! {
                            r = sink.send(Message::Ping(Bytes::new())) => r.map_err(|_| WriterEnd::Gone),
                            () = ping_deadline(ping, live) => {
                                Err(WriterEnd::Close(close::PING_TIMEOUT, "no answer to ping"))
                            }
                        }
                    })
                    .await;
                    if let Err(end) = pinged {
                        return end;
                    }
                }
                continue;
            }
        };
        if n == 0 {
            return WriterEnd::Gone;
        }
        counters.frames_out.fetch_add(n as u64, Ordering::Relaxed);
        // Boxed: the write and its timer live only while a batch goes out, so an idle
        // connection's task does not keep their space (`bench idle`).
        let wrote = Box::pin(async {
            tokio::select! {
                biased;
                _ = &mut kicked => Err(WriterEnd::Kicked),
                ok = write_batch_alive(sink, &mut batch, live) => if ok { Ok(()) } else { Err(WriterEnd::Gone) },
                // A write stuck on a peer that stopped reading (a vanished client, a stopped
                // process) must not hold the connection past the ping timeout.
                () = ping_deadline(ping, live) => Err(WriterEnd::Close(close::PING_TIMEOUT, "no answer to ping")),
            }
        })
        .await;
        if let Err(end) = wrote {
            return end;
        }
        // Keep no batch buffer on a connection with nothing more to send: most are idle.
        if batch.capacity() > WRITE_BATCH || rx.is_empty() {
            batch = Vec::new();
        }
    }
}

/// The `id` of a frame that is refused whole (over the size limit): a linear scan that keeps
/// nothing but the id, `null` if the frame is not a JSON object.
fn frame_id(text: &str) -> Value {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Value,
    }
    serde_json::from_str::<IdOnly>(text).map(|f| f.id).unwrap_or(Value::Null)
}

/// A text frame parsed as a channel op or as a room op (§8).
enum Parsed {
    Channel(RequestFrame),
    Room(RoomRequestFrame),
}

/// A binary frame (§1) as a room request and the bytes after its header. The header is held
/// to --max-frame-bytes, the bytes to --max-attachment-bytes (by the engine, which answers
/// `payload_too_large`).
fn binary_request(
    b: &Bytes,
    cfg: &crate::config::ServeConfig,
) -> Result<(RoomRequestFrame, Bytes), BadFrame> {
    let bad = |id: Value, code: ErrorCode, message: String| BadFrame { id, error: detail(code, message) };
    let (header, body) =
        decode_binary(b).map_err(|e| bad(Value::Null, ErrorCode::BadRequest, e.to_string()))?;
    if header.len() > cfg.max_frame_bytes {
        return Err(bad(
            Value::Null,
            ErrorCode::PayloadTooLarge,
            format!("binary frame header is {} bytes; the limit is {}", header.len(), cfg.max_frame_bytes),
        ));
    }
    let start = b.len() - body.len();
    let (map, _) =
        parse_binary_frame(b).map_err(|e| bad(Value::Null, ErrorCode::BadRequest, e.to_string()))?;
    let frame = room_request_of_header(map)?;
    Ok((frame, b.slice(start..)))
}

/// A token bucket: `rate` requests per second sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket { tokens: burst as f64, last: Instant::now(), rate: rate as f64, burst: burst.max(1) as f64 }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

/// A reply in the making; replies leave in the order their requests arrived.
type Pending<'a> = Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>;

/// Requests that may run while earlier ones of the same connection are still in flight.
///
/// Appends addressed by channel id reach the store on their first poll, and the pipeline polls
/// each new request once before reading the next frame, so they are enqueued (and appended) in
/// arrival order. A channel given by name needs a lookup first, and any other op may read what
/// an earlier request writes: those wait until everything before them has completed.
fn pipelined(r: &Request) -> bool {
    match r {
        Request::Ping {} | Request::Publish { .. } => true,
        Request::MessageSend { channel, .. }
        | Request::MessageEdit { channel, .. }
        | Request::MessageDelete { channel, .. }
        | Request::ReactionAdd { channel, .. }
        | Request::ReactionRemove { channel, .. }
        | Request::Read { channel, .. }
        | Request::Typing { channel, .. }
        | Request::Ephemeral { channel, .. } => looks_like_uuid(channel),
        _ => false,
    }
}

fn ready(b: Bytes) -> Pending<'static> {
    Box::pin(std::future::ready(b))
}

/// When a token whose `exp` is `exp` (Unix seconds) runs out, as a timer deadline. Capped at
/// ten years from now, so an absurd `exp` cannot overflow the clock.
fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    const CAP_MS: u64 = 10 * 366 * 24 * 3600 * 1000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = exp.saturating_mul(1000).saturating_sub(now_ms).min(CAP_MS);
    tokio::time::Instant::now() + Duration::from_millis(left)
}

/// `auth.refresh`: the new token's `exp`, if it verifies, has not expired and names the
/// connection's own `app` and `sub`. Grants, name and kind stay those of `connect`.
fn refresh(st: &AppState, who: &Principal, token: &str) -> Result<u64, ErrorDetail> {
    let (new, exp) =
        st.verifier().verify_with_exp(token).map_err(|e| detail(ErrorCode::Unauthorized, e.to_string()))?;
    if new.app != who.app || new.user.id != who.user.id {
        return Err(detail(ErrorCode::Unauthorized, "the new token names another user or app"));
    }
    if expiry_deadline(exp) <= tokio::time::Instant::now() {
        return Err(detail(ErrorCode::Unauthorized, "token expired"));
    }
    Ok(exp)
}

/// What the read loop does after a frame.
enum Flow {
    Next,
    /// End the connection: closed with this code, or gone.
    End(Option<(u16, &'static str)>),
}

/// The read half's state between frames. A frame is read without waiting ([`on_frame`]); what
/// must wait runs in a future of its own, boxed ([`finish`]), so an idle connection's task holds
/// only this and the wait for the next frame (`bench idle`: the request handling had made every
/// connection's task kilobytes larger), and a pipelined request allocates no such future. The request queues are made on first use: an empty `FuturesOrdered` allocates.
struct ReadState<'a> {
    st: &'a AppState,
    who: &'a Principal,
    conn: &'a ConnHandle,
    bucket: Bucket,
    bad_in_a_row: u32,
    /// Pipelined requests, answered in order.
    inflight: Option<FuturesOrdered<Pending<'a>>>,
    /// Requests answered whenever they complete, out of order: `stream.open` waits up to 30 s
    /// for the other participant and must not hold back the connection's other requests.
    detached: Option<futures::stream::FuturesUnordered<Pending<'a>>>,
}

impl<'a> ReadState<'a> {
    fn inflight(&mut self) -> &mut FuturesOrdered<Pending<'a>> {
        self.inflight.get_or_insert_with(FuturesOrdered::new)
    }

    fn inflight_len(&self) -> usize {
        self.inflight.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn answer_now(&mut self, reply: Bytes) {
        self.inflight().push_back(ready(reply));
    }

    /// Sends every pending reply, in order. False if the connection went away.
    async fn flush(&mut self) -> bool {
        while let Some(reply) = next_of(&mut self.inflight).await {
            if !self.conn.send(reply).await {
                return false;
            }
        }
        true
    }

    fn room(&self, frame: RoomRequestFrame, bytes: Option<Bytes>) -> Pending<'a> {
        let (st, who, conn) = (self.st, self.who, self.conn);
        Box::pin(async move {
            match st.engine().execute_room(who, conn, frame.request, bytes).await {
                Ok(ok) => to_bytes(&OkFrame { id: &frame.id, ok: &ok }),
                Err(e) => error_frame(&frame.id, &e.detail()),
            }
        })
    }

    fn execute(&self, frame: RequestFrame) -> Pending<'a> {
        let (st, who, conn) = (self.st, self.who, self.conn);
        Box::pin(async move {
            match st.engine().execute(who, Some(conn), frame.request).await {
                Ok(ok) => to_bytes(&OkFrame { id: &frame.id, ok: &ok }),
                Err(e) => error_frame(&frame.id, &e.detail()),
            }
        })
    }

    /// Takes a rate-limit token, or queues the `rate_limited` answer to `id`.
    fn rate_ok(&mut self, id: &Value) -> bool {
        match self.bucket.take() {
            Ok(()) => true,
            Err(retry_after_ms) => {
                self.st.metrics().gateway.rate_limited.fetch_add(1, Ordering::Relaxed);
                let e = EngineError::RateLimited { retry_after_ms }.detail();
                self.answer_now(error_frame(id, &e));
                false
            }
        }
    }

    /// Answers a malformed frame; too many in a row end the connection.
    fn bad_frame<'s>(&mut self, bad: BadFrame) -> Step<'s> {
        self.bad_in_a_row += 1;
        self.answer_now(error_frame(&bad.id, &bad.error));
        if self.bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
            Step::Wait(Wait::TooManyBad)
        } else {
            Step::Done(Flow::Next)
        }
    }

    fn detached_len(&self) -> usize {
        self.detached.as_ref().map_or(0, |d| d.len())
    }
}

/// The next item of a stream made on first use (none before).
async fn next_of<S: futures::Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => None,
    }
}

async fn read_loop(
    stream: &mut Stream,
    st: &AppState,
    who: &Principal,
    conn: &ConnHandle,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    live: &Liveness,
    exp: u64,
) -> Option<(u16, &'static str)> {
    let max_inflight = st.config().max_inflight.max(1);
    let mut s = ReadState {
        st,
        who,
        conn,
        bucket: Bucket::new(st.config().rate_per_sec, st.config().rate_burst),
        bad_in_a_row: 0,
        inflight: None,
        detached: None,
    };
    // One timer per connection, moved by every `auth.refresh`: at the token's `exp` the
    // connection is closed with 4401.
    let expiry = tokio::time::sleep_until(expiry_deadline(exp));
    tokio::pin!(expiry);
    loop {
        enum Next<M> {
            Stop,
            Expired,
            Reply(Bytes),
            Frame(M),
        }
        let busy = s.inflight_len() >= max_inflight;
        // A stop comes before anything else. Checked here, an atomic load, and waited for
        // last in the `select!`: a wait polled first in every turn registered a waiter with
        // the watch every connection shares and dropped it again, twice per request. Polled
        // last, it registers only when nothing else is ready, that is when the task sleeps.
        // (Made once outside the loop instead, it would stay in every idle connection's
        // task: `bench idle`.)
        let next = if shutdown.has_changed().unwrap_or(true) {
            Next::Stop
        } else {
            tokio::select! {
                biased;
                () = &mut expiry => Next::Expired,
                Some(reply) = next_of(&mut s.inflight), if s.inflight_len() > 0 => Next::Reply(reply),
                Some(reply) = next_of(&mut s.detached), if s.detached_len() > 0 => Next::Reply(reply),
                m = stream.next(), if !busy => Next::Frame(m),
                // The watch guard dies with this arm, before anything is awaited.
                _ = shutdown.wait_for(|s| *s) => Next::Stop,
            }
        };
        let flow = match next {
            Next::Stop => {
                // Answer what is already running; read nothing more.
                Box::pin(s.flush()).await;
                return Some((close::RESTART, "server restarting; reconnect and resume"));
            }
            Next::Expired => {
                Box::pin(s.flush()).await;
                return Some((close::UNAUTHORIZED, "token expired"));
            }
            Next::Reply(reply) => {
                if !conn.send(reply).await {
                    return None;
                }
                continue;
            }
            Next::Frame(m) => {
                live.touch();
                match on_frame(&mut s, m) {
                    Step::Done(flow) => flow,
                    // Only what must wait runs in a future, boxed: see `ReadState`.
                    Step::Wait(wait) => Box::pin(finish(&mut s, wait, expiry.as_mut())).await,
                }
            }
        };
        if let Flow::End(end) = flow {
            return end;
        }
    }
}

/// What a frame asks of the read loop once read. Most frames are answered or queued at once
/// (a pipelined request, an error, a ping); the rest [`Wait`].
enum Step<'a> {
    Done(Flow),
    Wait(Wait<'a>),
}

/// A frame's work that waits for every earlier reply to be out, then for itself ([`finish`]).
enum Wait<'a> {
    /// Too many malformed frames in a row: the connection closes.
    TooManyBad,
    /// A request run alone.
    Alone(Pending<'a>),
    /// `stream.open`: answered whenever it completes.
    Detach(Pending<'a>),
    /// `auth.refresh`.
    Refresh { id: Value, token: String },
}

/// Reads one frame from the socket: answers or queues what it can without waiting.
fn on_frame<'a>(s: &mut ReadState<'a>, msg: Option<Result<Message, axum::Error>>) -> Step<'a> {
    let cfg = s.st.config();
    let msg = match msg {
        None => return Step::Done(Flow::End(None)),
        Some(Err(e)) => {
            // tungstenite refuses a frame over the hard limit before we see it.
            let e = e.to_string();
            if e.contains("size") || e.contains("Space limit") {
                return Step::Done(Flow::End(Some((close::TOO_BIG, "frame too large"))));
            }
            return Step::Done(Flow::End(None));
        }
        Some(Ok(m)) => m,
    };
    s.st.metrics().gateway.frames_in.fetch_add(1, Ordering::Relaxed);
    let text = match msg {
        Message::Text(t) => t,
        Message::Binary(b) => {
            let frame = match binary_request(&b, cfg) {
                Ok(f) => {
                    s.bad_in_a_row = 0;
                    f
                }
                Err(bad) => return s.bad_frame(bad),
            };
            if !s.rate_ok(&frame.0.id) {
                return Step::Done(Flow::Next);
            }
            return Step::Wait(Wait::Alone(s.room(frame.0, Some(frame.1))));
        }
        Message::Close(_) => return Step::Done(Flow::End(None)),
        Message::Ping(_) | Message::Pong(_) => return Step::Done(Flow::Next),
    };
    // The socket's own limit is raised for binary attachments; a text frame far over the
    // text limit is still closed with 1009, as it was before attachments existed.
    if text.len() > cfg.max_frame_bytes.saturating_mul(4) {
        return Step::Done(Flow::End(Some((close::TOO_BIG, "frame too large"))));
    }
    if text.len() > cfg.max_frame_bytes {
        let e = detail(
            ErrorCode::PayloadTooLarge,
            format!("frame is {} bytes; the limit is {}", text.len(), cfg.max_frame_bytes),
        );
        // Echo the request id so the client's pending request fails instead of timing out.
        s.answer_now(error_frame(&frame_id(text.as_str()), &e));
        return Step::Done(Flow::Next);
    }
    let parsed = match parse_request(text.as_str()) {
        Ok(f) => Ok(Parsed::Channel(f)),
        Err(bad) => match parse_room_request(text.as_str()) {
            Some(Ok(f)) => Ok(Parsed::Room(f)),
            Some(Err(bad)) => Err(bad),
            None => Err(bad),
        },
    };
    let frame = match parsed {
        Ok(Parsed::Room(f)) => {
            s.bad_in_a_row = 0;
            if !s.rate_ok(&f.id) {
                return Step::Done(Flow::Next);
            }
            let open = matches!(f.request, RoomRequest::StreamOpen { .. });
            let request = s.room(f, None);
            return Step::Wait(if open { Wait::Detach(request) } else { Wait::Alone(request) });
        }
        Ok(Parsed::Channel(f)) => {
            s.bad_in_a_row = 0;
            f
        }
        Err(bad) => return s.bad_frame(bad),
    };
    if !s.rate_ok(&frame.id) {
        return Step::Done(Flow::Next);
    }
    let frame = match frame {
        RequestFrame { id, request: Request::AuthRefresh { token } } => {
            return Step::Wait(Wait::Refresh { id, token });
        }
        frame => frame,
    };
    let pipelined = pipelined(&frame.request);
    let request = s.execute(frame);
    if !pipelined {
        return Step::Wait(Wait::Alone(request));
    }
    // Polled once by the next turn of the loop, before another frame is read.
    s.inflight().push_back(request);
    Step::Done(Flow::Next)
}

/// Does what a frame waits for: every earlier reply out first, then the frame's own work.
async fn finish<'a>(s: &mut ReadState<'a>, wait: Wait<'a>, expiry: Pin<&mut tokio::time::Sleep>) -> Flow {
    let answered = s.flush().await;
    match wait {
        Wait::TooManyBad => Flow::End(Some((close::BAD_FRAMES, "too many malformed frames"))),
        _ if !answered => Flow::End(None),
        Wait::Detach(request) => {
            s.detached.get_or_insert_with(futures::stream::FuturesUnordered::new).push(request);
            Flow::Next
        }
        Wait::Alone(request) => {
            let reply = request.await;
            if s.conn.send(reply).await { Flow::Next } else { Flow::End(None) }
        }
        Wait::Refresh { id, token } => {
            let reply = match refresh(s.st, s.who, &token) {
                Ok(exp) => {
                    expiry.reset(expiry_deadline(exp));
                    let ms = i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX);
                    let expires_at = herald_proto::time::format_ms(ms);
                    to_bytes(&OkFrame { id: &id, ok: &RefreshOk { expires_at } })
                }
                Err(e) => error_frame(&id, &e),
            };
            if s.conn.send(reply).await { Flow::Next } else { Flow::End(None) }
        }
    }
}
