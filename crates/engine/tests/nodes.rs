//! Two nodes in one process: two engines, each with its own hub, sharing one in-memory store
//! and one in-memory broker, the shape of a deployment of several `herald serve` over one
//! database and one NATS. Every event must cross: log entries, signals, publications and
//! membership changes.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use herald_engine::{
    Backends, BrokerSink, ConnHandle, Engine, EngineConfig, Grants, LocalBroker, Principal, SystemClock,
    UuidV7,
};
use herald_proto::frames::{CreateChannel, Request, SendMessage};
use herald_proto::model::UserInfo;
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn principal(user: &str) -> Principal {
    Principal {
        app: "default".into(),
        user: UserInfo { id: user.into(), name: None, kind: Default::default() },
        grants: Grants::from_claim(None),
    }
}

async fn nodes(n: usize) -> Vec<Arc<Engine>> {
    let broker = LocalBroker::new();
    let store = Arc::new(MemoryStore::new(BrokerSink::new(broker.clone())));
    let blobs = Arc::new(MemoryBlobStore::new());
    let mut out = Vec::new();
    for _ in 0..n {
        let backends = Backends {
            store: store.clone(),
            blobs: blobs.clone(),
            broker: broker.clone(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7),
        };
        out.push(Engine::start(backends, EngineConfig::default()).await.unwrap());
    }
    out
}

struct Client {
    who: Principal,
    conn: ConnHandle,
    rx: herald_engine::OutboundRx,
}

impl Client {
    async fn connect(engine: &Engine, user: &str) -> Client {
        let who = principal(user);
        let (conn, mut rx) =
            engine.connect(&who, &BTreeMap::new(), |_| Bytes::from_static(b"{}")).await.unwrap();
        rx.recv().await.unwrap();
        Client { who, conn, rx }
    }

    /// The next event matching `pred`, skipping others; fails after a timeout.
    async fn next(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            loop {
                let frame = self.rx.recv().await.expect("connection closed");
                let v: Value = serde_json::from_slice(&frame).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("timed out waiting for an event")
    }

    /// Everything queued so far.
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            out.push(serde_json::from_slice(&f).unwrap());
        }
        out
    }
}

fn send(channel: &str, text: &str) -> Request {
    Request::MessageSend {
        channel: channel.to_owned(),
        message: SendMessage { content: text.into(), ..Default::default() },
    }
}

#[tokio::test]
async fn events_cross_nodes_through_the_broker() {
    let nodes = nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut ada = Client::connect(a, "ada").await;
    let mut bob = Client::connect(b, "bob").await;

    let create =
        CreateChannel { name: Some("across".into()), members: vec!["bob".into()], ..Default::default() };
    let id = a.create_channel(&ada.who, create, 1).await.unwrap().channel.id;
    // Membership made on node a reaches node b's index: bob, connected to b, gets the log.
    let created = bob.next(|e| e["event"] == "channel_created").await;
    assert_eq!(created["channel"], id.as_str());

    a.execute(&ada.who, Some(&ada.conn), send(&id, "from a")).await.unwrap();
    let m = bob.next(|e| e["event"] == "message").await;
    assert_eq!(m["message"]["content"], "from a");
    b.execute(&bob.who, Some(&bob.conn), send(&id, "from b")).await.unwrap();
    let m = ada.next(|e| e["event"] == "message" && e["author"] == "bob").await;
    assert_eq!(m["message"]["content"], "from b");

    // Signals cross, and skip only the sender.
    b.execute(&bob.who, Some(&bob.conn), Request::Typing { channel: id.clone(), is_typing: true })
        .await
        .unwrap();
    let t = ada.next(|e| e["event"] == "typing").await;
    assert_eq!(t["user"], "bob");
    assert!(bob.drain().iter().all(|e| e["event"] != "typing"), "the typist got its own typing");

    // Publications cross to subscribers on the other node.
    b.execute(&bob.who, Some(&bob.conn), Request::Subscribe { subject: "presence:lobby".into() })
        .await
        .unwrap();
    a.publish(&ada.who, "presence:lobby", json!({"online": true})).unwrap();
    let p = bob.next(|e| e["event"] == "publication").await;
    assert_eq!(p["data"], json!({"online": true}));

    // A removal on node a ends delivery on node b after bob's own member_left.
    let remove = Request::ChannelRemoveMember { channel: id.clone(), user: "bob".into() };
    a.execute(&ada.who, Some(&ada.conn), remove).await.unwrap();
    bob.next(|e| e["event"] == "member_left" && e["user"] == "bob").await;
    a.execute(&ada.who, Some(&ada.conn), send(&id, "after bob left")).await.unwrap();
    ada.next(|e| e["event"] == "message" && e["message"]["content"] == "after bob left").await;
    assert!(
        bob.drain().iter().all(|e| e["channel"] != id.as_str()),
        "bob, removed on another node, still receives the channel"
    );
    assert_eq!(b.hub().is_member("default", &id, "bob"), Some(false));
    assert_eq!(b.hub().active_channels(), 0, "no online member of the channel on node b");
}
