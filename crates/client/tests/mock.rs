//! The client against a scripted WebSocket server on a real socket: reconnect, resume with
//! the last seq, no duplicate after the replay, the keyed send resent once, in-flight
//! requests failed, and no reconnect after close code 4401.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Chain, message_seq};
use futures::{SinkExt, StreamExt};
use herald_client::{Client, ClientConfig, ClientError, ClientEvent, EventStream};
use herald_proto::frames::Event;
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn fast() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        request_timeout: WAIT,
        ..ClientConfig::default()
    }
}

async fn accept(listener: &TcpListener) -> Ws {
    let (tcp, _) = listener.accept().await.unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

async fn read(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            WsMessage::Close(_) => panic!("client closed"),
            _ => {}
        }
    }
}

async fn write(ws: &mut Ws, v: impl serde::Serialize) {
    ws.send(WsMessage::text(serde_json::to_string(&v).unwrap())).await.unwrap();
}

async fn close(ws: &mut Ws, code: u16) {
    let _ = ws
        .send(WsMessage::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() })))
        .await;
}

/// Answers `connect` with ok, then the `channel.list` the client sends first with no
/// channels; returns the connect frame.
async fn handshake(ws: &mut Ws, conn_id: &str) -> Value {
    handshake_with(ws, conn_id, json!([])).await
}

/// As [`handshake`], answering `channel.list` with `channels`.
async fn handshake_with(ws: &mut Ws, conn_id: &str, channels: Value) -> Value {
    let connect = read(ws).await;
    assert_eq!(connect["op"], "connect");
    write(
        ws,
        json!({"id": connect["id"], "ok": {"conn_id": conn_id, "user": {"id": "ada", "kind": "human"}}}),
    )
    .await;
    let list = read(ws).await;
    assert_eq!(list["op"], "channel.list", "the client seeds its resume points first");
    write(ws, json!({"id": list["id"], "ok": {"channels": channels}})).await;
    connect
}

/// Waits for the next message event, skipping everything else but chain errors.
async fn next_message(events: &mut EventStream) -> u64 {
    loop {
        match within(events.recv()).await.expect("stream ended") {
            ClientEvent::Event(e) => {
                if let Some(seq) = message_seq(&e) {
                    return seq;
                }
            }
            ClientEvent::ChainError(e) => panic!("chain error {e}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn reconnects_resumes_and_never_redelivers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut chain = Chain::new("ch");
    let first = chain.messages("bob", 3);
    let fourth = chain.message("ada", "hi");
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Value>();

    let server = tokio::spawn(async move {
        // Connection 1: three entries, then a request that is never answered, then a
        // restart (1012) with a keyed send and a ping in flight.
        let mut ws = accept(&listener).await;
        let connect = handshake(&mut ws, "c1").await;
        seen_tx.send(connect).unwrap();
        for e in &first {
            write(&mut ws, &e.event).await;
        }
        let a = read(&mut ws).await;
        seen_tx.send(a).unwrap();
        let b = read(&mut ws).await;
        seen_tx.send(b).unwrap();
        close(&mut ws, 1012).await;
        drop(ws);

        // Connection 2: the resume replays 2 and 3 (already delivered) then 4, the entry of
        // the resent send, which is answered.
        let mut ws = accept(&listener).await;
        let connect = handshake(&mut ws, "c2").await;
        seen_tx.send(connect).unwrap();
        for e in &first[1..] {
            write(&mut ws, &e.event).await;
        }
        let resent = read(&mut ws).await;
        seen_tx.send(resent.clone()).unwrap();
        write(&mut ws, &fourth.event).await;
        let message = match &fourth.event {
            Event::Message { message, .. } => message.clone(),
            _ => unreachable!(),
        };
        write(&mut ws, json!({"id": resent["id"], "ok": {"message": message}})).await;
        // Stay open until the client closes.
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    });

    let client = within(Client::connect_with(&url, "tok", fast())).await.unwrap();
    assert_eq!(client.user().id, "ada");
    let mut events = client.events();
    let connect = within(seen.recv()).await.unwrap();
    assert!(connect.get("resume").is_none());
    for seq in 1..=3 {
        assert_eq!(next_message(&mut events).await, seq);
    }

    // Both requests go out on connection 1; the server drops it without answering.
    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let a = within(seen.recv()).await.unwrap();
    assert_eq!(a["op"], "ping");
    let send = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request(herald_proto::frames::Request::MessageSend {
                    channel: "ch".into(),
                    message: herald_proto::frames::SendMessage {
                        content: "hi".into(),
                        client_id: Some("key-1".into()),
                        ..Default::default()
                    },
                })
                .await
        }
    });
    let b = within(seen.recv()).await.unwrap();
    assert_eq!(b["op"], "message.send");

    assert!(matches!(within(ping).await.unwrap(), Err(ClientError::Disconnected)));
    let connect = within(seen.recv()).await.unwrap();
    assert_eq!(connect["resume"], json!({"ch": 3}), "resumes from the last seq seen");
    let resent = within(seen.recv()).await.unwrap();
    assert_eq!(resent, b, "the keyed send is resent as it was");
    let ok = within(send).await.unwrap().unwrap();
    assert_eq!(ok["message"]["seq"], 4);

    // Disconnected, Connected, then 4: the replayed 2 and 3 are not delivered again.
    let mut order = Vec::new();
    loop {
        match within(events.recv()).await.unwrap() {
            ClientEvent::Disconnected { .. } => order.push("disconnected".to_owned()),
            ClientEvent::Connected(ok) => order.push(format!("connected {}", ok.conn_id)),
            ClientEvent::Event(e) => {
                order.push(format!("message {}", message_seq(&e).unwrap()));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(order, vec!["disconnected", "connected c2", "message 4"]);

    within(client.close()).await;
    within(server).await.unwrap();
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    assert!(within(events.recv()).await.is_some_and(|e| matches!(e, ClientEvent::Disconnected { .. })));
    assert!(within(events.recv()).await.is_none(), "the stream ends with the client");
}

/// Regression (issue 6): a channel that delivered nothing in this session was missing from
/// `resume`, so what was posted to it during a reconnect never arrived.
#[tokio::test]
async fn quiet_channel_is_resumed_from_channel_list_last_seq() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut chain = Chain::new("quiet");
    chain.messages("bob", 7);
    let eighth = chain.message("bob", "after the restart");
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Value>();
    let server = tokio::spawn(async move {
        let quiet = json!([{"id": "quiet", "name": "quiet", "title": null, "unread": 0, "last_seq": 7}]);
        let mut ws = accept(&listener).await;
        handshake_with(&mut ws, "c1", quiet.clone()).await;
        close(&mut ws, 1012).await;
        drop(ws);
        let mut ws = accept(&listener).await;
        let connect = handshake_with(&mut ws, "c2", quiet).await;
        seen_tx.send(connect).unwrap();
        write(&mut ws, &eighth.event).await;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    });
    let client = within(Client::connect_with(&url, "tok", fast())).await.unwrap();
    let mut events = client.events();
    let connect = within(seen.recv()).await.unwrap();
    assert_eq!(connect["resume"], json!({"quiet": 7}), "the quiet channel is resumed");
    assert_eq!(next_message(&mut events).await, 8);
    within(client.close()).await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn refused_token_fails_connect_without_retrying() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        let connect = read(&mut ws).await;
        write(&mut ws, json!({"id": connect["id"], "error": {"code": "unauthorized", "message": "expired"}}))
            .await;
        close(&mut ws, 4401).await;
        listener
    });
    let err = within(Client::connect_with(&url, "expired", fast())).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
    let listener = within(server).await.unwrap();
    // No second attempt comes.
    assert!(tokio::time::timeout(Duration::from_millis(200), listener.accept()).await.is_err());
}

#[tokio::test]
async fn close_4401_after_connect_stops_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        handshake(&mut ws, "c1").await;
        let ping = read(&mut ws).await;
        assert_eq!(ping["op"], "ping");
        close(&mut ws, 4401).await;
        listener
    });
    let client = within(Client::connect_with(&url, "tok", fast())).await.unwrap();
    let mut events = client.events();
    let err = within(client.ping()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized | ClientError::Disconnected), "{err:?}");
    let listener = within(server).await.unwrap();
    loop {
        match within(events.recv()).await {
            Some(ClientEvent::Disconnected { .. } | ClientEvent::Connected(_)) => {}
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(within(client.ping()).await, Err(ClientError::Closed)));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.accept()).await.is_err(),
        "no reconnect after 4401"
    );
}

#[tokio::test]
async fn first_connect_to_nothing_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = within(Client::connect_with(&url, "tok", fast())).await.unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn a_silent_server_is_pinged_then_abandoned_and_the_client_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let config = ClientConfig { keepalive: Some(Duration::from_millis(100)), ..fast() };
    let server = async {
        let mut first = accept(&listener).await;
        handshake(&mut first, "c1").await;
        // From here on the first connection is never read: no pong goes back, as when the
        // network has vanished. The client must give up on it and come back.
        let mut second = accept(&listener).await;
        handshake(&mut second, "c2").await;
        (first, second)
    };
    let client_side = async {
        let client = Client::connect_with(&url, "t", config).await.unwrap();
        let mut events = client.events();
        let mut saw_disconnect = false;
        loop {
            match within(events.recv()).await.expect("stream ended") {
                ClientEvent::Disconnected { reason } => {
                    assert!(reason.contains("silent"), "{reason}");
                    saw_disconnect = true;
                }
                ClientEvent::Connected(ok) if ok.conn_id == "c2" => break,
                _ => {}
            }
        }
        assert!(saw_disconnect);
        client
    };
    let (_conns, _client) = within(async { tokio::join!(server, client_side) }).await;
}

/// A JWT-shaped token (unsigned: the mock checks nothing) named `n` expiring in `secs`.
fn mock_token(n: usize, secs: u64) -> String {
    use base64::Engine as _;
    let enc = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!(
        "{}.{}.t{n}",
        enc(r#"{"alg":"none"}"#.into()),
        enc(format!(r#"{{"sub":"ada","exp":{}}}"#, now + secs))
    )
}

/// Issue 6: with a token provider the client refreshes before `exp`, tries again after a
/// refused `auth.refresh`, and after a 4401 close (its token ran out) reconnects with a fresh
/// token instead of giving up.
#[tokio::test]
async fn token_provider_refreshes_retries_and_reconnects_after_expiry() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let config = fast().with_token_provider({
        let calls = calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(mock_token(n, 2)) }
        }
    });
    let suffix = |v: &Value, key: &str| v[key].as_str().unwrap().rsplit('.').next().unwrap().to_owned();
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        let connect = handshake(&mut ws, "c1").await;
        assert_eq!(suffix(&connect, "token"), "t1", "connect asks the provider");
        let refresh = read(&mut ws).await;
        assert_eq!(refresh["op"], "auth.refresh");
        assert_eq!(suffix(&refresh, "token"), "t2");
        write(&mut ws, json!({"id": refresh["id"], "error": {"code": "unauthorized", "message": "no"}}))
            .await;
        let again = read(&mut ws).await;
        assert_eq!(again["op"], "auth.refresh", "a refused refresh is tried again");
        assert_eq!(suffix(&again, "token"), "t3");
        write(&mut ws, json!({"id": again["id"], "ok": {"expires_at": "2030-01-01T00:00:00.000Z"}})).await;
        close(&mut ws, 4401).await;
        drop(ws);
        let mut ws = accept(&listener).await;
        let connect = handshake(&mut ws, "c2").await;
        assert_eq!(suffix(&connect, "token"), "t4", "a reconnect asks the provider again");
        ws
    });
    let client = within(Client::connect_with(&url, "", config)).await.unwrap();
    let mut events = client.events();
    loop {
        match within(events.recv()).await.expect("stream ended") {
            ClientEvent::Connected(ok) if ok.conn_id == "c2" => break,
            ClientEvent::Connected(_) | ClientEvent::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ws = within(server).await.unwrap();
    assert!(calls.load(Ordering::SeqCst) >= 4);
}
