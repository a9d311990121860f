//! A store failure in the middle of a `resume` replay, over a real socket: the gateway closes
//! the connection with 1011 (reconnect and resume) instead of going live past the entries it
//! could not replay. The server runs on port 0 over a memory store whose log reads fail on
//! demand (`herald_testing` only speaks SQLite, which cannot be made to fail mid-read).
#![allow(clippy::unwrap_used)]

use futures::{SinkExt, StreamExt};
use herald_engine::{BrokerSink, LocalBroker};
use herald_server::auth::{Claims, load_or_create_secret, mint_hs256, now_secs};
use herald_server::config::ServeConfig;
use herald_server::{Node, NodeBackends};
use herald_store::memory::{FailingLog, MemoryBlobStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends a request and returns its reply, skipping events.
async fn request(ws: &mut Socket, id: u64, mut op: Value) -> Value {
    op["id"] = json!(id);
    ws.send(Message::text(op.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn store_failure_mid_replay_closes_with_1011() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::new();
    let store = Arc::new(FailingLog::new(BrokerSink::new(broker.clone())));
    let backends = NodeBackends { store: store.clone(), blobs: Arc::new(MemoryBlobStore::new()), broker };
    let config = ServeConfig { data: dir.path().to_path_buf(), ..ServeConfig::default() };
    let node = Node::open(config, backends).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(node.run(listener, async move {
        let _ = stopped.await;
    }));

    let secret = load_or_create_secret(dir.path()).unwrap();
    let claims = Claims {
        sub: "ada".into(),
        name: None,
        kind: None,
        exp: now_secs() + 3600,
        iat: None,
        app: None,
        grants: None,
    };
    let token = mint_hs256(&secret, &claims).unwrap();

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(request(&mut ws, 1, json!({"op": "connect", "token": token})).await.get("ok").is_some());
    let created = request(&mut ws, 2, json!({"op": "channel.create", "name": "fragile"})).await;
    let id = created["ok"]["channel"]["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let sent =
            request(&mut ws, 10 + i, json!({"op": "message.send", "channel": id, "content": "missed"})).await;
        assert!(sent.get("ok").is_some(), "{sent}");
    }
    ws.close(None).await.unwrap();

    store.fail_log(true);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello =
        request(&mut ws, 1, json!({"op": "connect", "token": token, "resume": {id.as_str(): 1}})).await;
    assert!(hello.get("ok").is_some(), "{hello}");
    let code = tokio::time::timeout(WAIT, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_ne!(
                        v["channel"],
                        id.as_str(),
                        "an event of the unreplayed channel got through: {v}"
                    );
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1011));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
