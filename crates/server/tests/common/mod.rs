//! Shared helpers of the server's socket tests: a WebSocket client that matches replies by id
//! while buffering events, REST calls with a bearer token, and chain verification of events
//! and log pages. Nothing here sleeps to wait for an event: every wait is a timeout on the
//! thing awaited.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use herald_proto::chain::{ChainVerifier, Verdict};
use herald_proto::frames::Event;
use herald_proto::model::LogEntry;
use herald_testing::TestServer;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(t) => t,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// One frame as the test client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    /// A text frame that is not JSON (the server never should send one).
    Text(String),
    Close(Option<u16>),
    /// A §1 binary frame: its JSON header and the bytes after it.
    Binary(Value, Vec<u8>),
    /// The stream ended (or errored) without a close frame.
    End,
}

/// A WebSocket test client.
pub struct Ws {
    socket: Socket,
    next_id: u64,
    events: VecDeque<Value>,
    /// Replies that arrived while waiting for another id (e.g. `id: null` error replies).
    replies: VecDeque<Value>,
    /// The `ok` of `connect`.
    pub hello: Value,
    sync_subject: Option<String>,
    closed: Option<Frame>,
    /// Every event received, in arrival order, whether consumed or not.
    seen: Vec<Value>,
    /// The bytes of binary frames received, indexed by their header's `_attachment`.
    attachments: Vec<Vec<u8>>,
}

impl Ws {
    /// Opens the socket without sending anything.
    pub async fn open(server: &TestServer) -> Ws {
        Self::open_with_header(server, None).await
    }

    /// Opens the socket, optionally with `Authorization: Bearer <token>` on the upgrade.
    pub async fn open_with_header(server: &TestServer, bearer: Option<&str>) -> Ws {
        let mut req = server.ws_url().into_client_request().unwrap();
        if let Some(t) = bearer {
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (socket, _) = within("ws upgrade", tokio_tungstenite::connect_async(req))
            .await
            .unwrap_or_else(|e| panic!("ws connect: {e}"));
        Ws::over(socket)
    }

    /// A test client over an open WebSocket.
    fn over(socket: Socket) -> Ws {
        Ws {
            socket,
            next_id: 1,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            hello: Value::Null,
            sync_subject: None,
            closed: None,
            seen: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// Connects over a socket whose receive buffer is only `rcvbuf` bytes, for tests of slow
    /// readers whose pings must not wait behind megabytes of buffered frames; then sends
    /// `connect` with `resume`.
    pub async fn connect_small_rcvbuf(server: &TestServer, token: &str, resume: Value, rcvbuf: u32) -> Ws {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        let tcp = within("tcp connect", socket.connect(server.addr())).await.unwrap();
        let req = server.ws_url().into_client_request().unwrap();
        let (socket, _) =
            within("ws upgrade", tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)))
                .await
                .unwrap_or_else(|e| panic!("ws connect: {e}"));
        let mut ws = Ws::over(socket);
        match ws.request(json!({"op": "connect", "token": token, "resume": resume})).await {
            Ok(ok) => ws.hello = ok,
            Err(e) => panic!("connect refused: {e}"),
        }
        ws
    }

    /// Connects and authenticates; panics unless `connect` is answered with `ok`.
    pub async fn connect(server: &TestServer, token: &str) -> Ws {
        Self::connect_resume(server, token, json!({})).await
    }

    /// Connects with a `resume` map.
    pub async fn connect_resume(server: &TestServer, token: &str, resume: Value) -> Ws {
        let mut ws = Ws::open(server).await;
        match ws.request(json!({"op": "connect", "token": token, "resume": resume})).await {
            Ok(ok) => ws.hello = ok,
            Err(e) => panic!("connect refused: {e}"),
        }
        ws
    }

    /// The bytes of a binary event (one whose header has `_attachment`); panics otherwise.
    pub fn attachment(&self, event: &Value) -> &[u8] {
        let i = event["_attachment"].as_u64().unwrap_or_else(|| panic!("not a binary frame: {event}"));
        &self.attachments[i as usize]
    }

    /// Sends a request as a §1 binary frame with `bytes` after it; its `ok` or `error`.
    pub async fn request_binary(&mut self, mut op: Value, bytes: &[u8]) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        let header = op.to_string();
        self.send_binary(herald_proto::frames::encode_binary(header.as_bytes(), bytes)).await;
        self.reply(json!(id)).await
    }

    /// Sends a request without waiting for its reply; returns its id for [`Ws::reply`].
    pub async fn send_request(&mut self, mut op: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        self.send_text(op.to_string()).await;
        json!(id)
    }

    pub fn conn_id(&self) -> String {
        self.hello["conn_id"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within("send", self.socket.send(WsMessage::text(text))).await.unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Sends a text frame; false if the socket is already gone.
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> bool {
        let text: String = text.into();
        matches!(tokio::time::timeout(WAIT, self.socket.send(WsMessage::text(text))).await, Ok(Ok(())))
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        within("send", self.socket.send(WsMessage::binary(bytes)))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// The next frame off the socket (not buffered ones), control frames skipped.
    pub async fn next_frame(&mut self) -> Frame {
        if let Some(c) = &self.closed {
            return c.clone();
        }
        let f = within("a frame", async {
            loop {
                match self.socket.next().await {
                    None | Some(Err(_)) => return Frame::End,
                    Some(Ok(WsMessage::Text(t))) => {
                        return match serde_json::from_str::<Value>(t.as_str()) {
                            Ok(v) => Frame::Json(v),
                            Err(_) => Frame::Text(t.as_str().to_owned()),
                        };
                    }
                    Some(Ok(WsMessage::Close(c))) => return Frame::Close(c.map(|c| u16::from(c.code))),
                    Some(Ok(WsMessage::Binary(b))) => {
                        return match herald_proto::frames::parse_binary_frame(&b) {
                            Ok((header, bytes)) => Frame::Binary(Value::Object(header), bytes.to_vec()),
                            Err(e) => Frame::Text(format!("unreadable binary frame: {e}")),
                        };
                    }
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        if matches!(f, Frame::Close(_) | Frame::End) {
            self.closed = Some(f.clone());
        }
        f
    }

    /// Reads one frame into the buffers; panics on close or a non-JSON frame.
    async fn pump(&mut self) {
        match self.next_frame().await {
            Frame::Json(v) if v.get("event").is_some() => {
                self.seen.push(v.clone());
                self.events.push_back(v);
            }
            Frame::Json(v) => self.replies.push_back(v),
            Frame::Binary(mut v, bytes) => {
                // The bytes stay aside; the header names them (see `Ws::attachment`).
                v["_attachment"] = json!(self.attachments.len());
                self.attachments.push(bytes);
                if v.get("event").is_some() {
                    self.seen.push(v.clone());
                    self.events.push_back(v);
                } else {
                    self.replies.push_back(v);
                }
            }
            other => panic!("connection ended while waiting: {other:?}"),
        }
    }

    /// Sends a request (assigning its `id`) and returns its `ok` or its `error` object.
    pub async fn request(&mut self, mut op: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        self.send_text(op.to_string()).await;
        self.reply(json!(id)).await
    }

    /// Like [`Ws::request`], panicking on an error.
    pub async fn ok(&mut self, op: Value) -> Value {
        let what = op.to_string();
        self.request(op).await.unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// Like [`Ws::request`], expecting an error with `code`; returns the error object.
    pub async fn err(&mut self, op: Value, code: &str) -> Value {
        let what = op.to_string();
        match self.request(op).await {
            Ok(ok) => panic!("{what} succeeded ({ok}); expected {code}"),
            Err(e) => {
                assert_eq!(e["code"], code, "{what}: {e}");
                assert!(
                    e["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{what}: error without message"
                );
                e
            }
        }
    }

    /// Waits for the reply carrying `id` (any JSON value, `null` included).
    pub async fn reply(&mut self, id: Value) -> Result<Value, Value> {
        loop {
            if let Some(i) = self.replies.iter().position(|r| r["id"] == id) {
                let r = self.replies.remove(i).unwrap_or_default();
                if let Some(ok) = r.get("ok") {
                    return Ok(ok.clone());
                }
                return Err(r
                    .get("error")
                    .cloned()
                    .unwrap_or_else(|| panic!("reply without ok or error: {r}")));
            }
            self.pump().await;
        }
    }

    /// The next event of `kind` (buffered or not); other events stay buffered.
    pub async fn next_event(&mut self, kind: &str) -> Value {
        self.next_event_where(|e| e["event"] == kind).await
    }

    /// The next event matching `pred`.
    pub async fn next_event_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i).unwrap_or_default();
            }
            self.pump().await;
        }
    }

    /// The next `message` event whose content is `content`.
    pub async fn next_message(&mut self, content: &str) -> Value {
        self.next_event_where(|e| e["event"] == "message" && e["message"]["content"] == content).await
    }

    /// Returns every event this connection has been sent so far, in order: a publication to a
    /// private subject is a barrier, since it is queued after everything queued before it.
    pub async fn sync(&mut self) -> Vec<Value> {
        let subject = match &self.sync_subject {
            Some(s) => s.clone(),
            None => {
                let s = format!("sync.{}", self.conn_id());
                self.ok(json!({"op": "subscribe", "subject": s})).await;
                self.sync_subject = Some(s.clone());
                s
            }
        };
        let token = format!("{}", self.next_id);
        self.ok(json!({"op": "publish", "subject": subject, "data": token})).await;
        let mut out = Vec::new();
        loop {
            while let Some(e) = self.events.pop_front() {
                if e["event"] == "publication" && e["subject"] == subject.as_str() {
                    if e["data"] == token.as_str() {
                        return out;
                    }
                    continue;
                }
                out.push(e);
            }
            self.pump().await;
        }
    }

    /// Events of `kind` among everything sent so far (see [`Ws::sync`]).
    pub async fn events_so_far(&mut self, kind: &str) -> Vec<Value> {
        self.sync().await.into_iter().filter(|e| e["event"] == kind).collect()
    }

    /// Reads until the server closes; returns the close code (None: no close frame).
    pub async fn closed_with(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await {
                Frame::Json(v) if v.get("event").is_some() => self.events.push_back(v),
                Frame::Json(v) => self.replies.push_back(v),
                Frame::Text(t) => panic!("non-JSON frame {t:?}"),
                Frame::Binary(..) => {}
                Frame::Close(code) => return code,
                Frame::End => return None,
            }
        }
    }

    /// Sends a close frame and waits for the server to finish the closing handshake.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        let _ =
            tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.socket.next().await {} }).await;
    }

    /// Every event received so far, consumed or not, in arrival order.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    /// Every buffered reply (e.g. replies with `id: null`).
    pub fn take_replies(&mut self) -> Vec<Value> {
        self.replies.drain(..).collect()
    }

    /// The underlying socket, for tests that stop reading it.
    pub fn into_socket(self) -> Socket {
        self.socket
    }
}

/// Creates a channel with `ws` and returns its id.
pub async fn create_channel(ws: &mut Ws, body: Value) -> String {
    let mut op = body;
    op["op"] = json!("channel.create");
    let ok = ws.ok(op).await;
    ok["channel"]["id"].as_str().unwrap_or_else(|| panic!("no channel id in {ok}")).to_owned()
}

/// Sends a message and returns its `message` object.
pub async fn send(ws: &mut Ws, channel: &str, content: &str) -> Value {
    ws.ok(json!({"op": "message.send", "channel": channel, "content": content})).await["message"].clone()
}

/// The REST client of one user.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A REST answer: status and body (JSON, or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// Asserts an error answer with `status` and `code` in the protocol's error shape.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(self.body["error"]["message"].is_string(), "body: {}", self.body);
    }
}

impl Rest {
    pub fn new(server: &TestServer, token: Option<String>) -> Rest {
        Rest { http: reqwest::Client::new(), base: server.url(), token }
    }

    /// A client with a fresh token for `user`.
    pub fn user(server: &TestServer, user: &str) -> Rest {
        Rest::new(server, Some(server.token(user)))
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn run(&self, r: reqwest::RequestBuilder) -> Answer {
        let resp = within("http", r.send()).await.unwrap_or_else(|e| panic!("http: {e}"));
        let status = resp.status().as_u16();
        let bytes =
            within("http body", resp.bytes()).await.unwrap_or_else(|e| panic!("http body: {e}")).to_vec();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, body, bytes }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.run(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.run(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.run(self.req(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.run(self.req(reqwest::Method::DELETE, path)).await
    }

    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Answer {
        self.run(self.req(reqwest::Method::PUT, path).body(bytes)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.run(self.req(reqwest::Method::PUT, path).json(&body)).await
    }

    /// `POST` with a raw body (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> Answer {
        self.run(self.req(reqwest::Method::POST, path).header("content-type", "application/json").body(body))
            .await
    }
}

/// Verifies a pushed event against the chain if it is a log entry; returns its verdict
/// (`None` for events that are not log entries).
pub fn verify_event(v: &mut ChainVerifier, event: &Value) -> Option<Verdict> {
    let mut ev: Event =
        serde_json::from_value(event.clone()).unwrap_or_else(|e| panic!("event {event} does not parse: {e}"));
    // The wire leaves out what the event's fields give (docs/protocol.md §B), as a client does.
    ev.complete();
    ev.meta()?;
    let r = ev.entry_ref().unwrap_or_else(|| panic!("log event without a readable entry: {event}"));
    Some(v.check(&r).unwrap_or_else(|e| panic!("chain error on {event}: {e}")))
}

/// Fetches the whole raw log of a channel over REST, verifying every entry and link.
pub async fn verified_log(rest: &Rest, channel: &str) -> Vec<LogEntry> {
    let mut all = Vec::new();
    let mut after = 0;
    let mut verifier = ChainVerifier::new();
    loop {
        let a = rest.get(&format!("/v1/channels/{channel}/log?after={after}&limit=7")).await;
        assert_eq!(a.status, 200, "log: {}", a.body);
        let entries: Vec<LogEntry> = serde_json::from_value(a.body["entries"].clone()).unwrap();
        for e in &entries {
            assert_eq!(e.seq, after + 1, "log has a gap");
            let r = e.as_entry_ref(channel).unwrap();
            assert_eq!(verifier.check(&r).unwrap_or_else(|err| panic!("log chain: {err}")), Verdict::Next);
            after = e.seq;
        }
        all.extend(entries);
        if !a.body["has_more"].as_bool().unwrap() {
            return all;
        }
    }
}
