//! Several nodes in one process over a real NATS: engines with their own hub and their own
//! `NatsBroker`, sharing one in-memory store, the shape of a deployment of several
//! `herald serve` over one PostgreSQL and one NATS (as `herald-engine`'s `tests/nodes.rs`
//! does with the in-process broker).
//!
//! The shared NATS is 127.0.0.1:4222; each test uses its own subject prefix. Without it a test
//! prints why and passes, unless `HERALD_REQUIRE_SERVICES=1` (CI), where it fails. The restart
//! test runs its own `nats-server` on a free port (`herald_broker_nats::testing::PrivateNats`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_broker_nats::testing::PrivateNats;
use herald_broker_nats::{NatsBroker, NatsConfig};
use herald_engine::{
    Backends, Broker, BrokerSink, ConnHandle, Engine, EngineConfig, Grants, Principal, Store, SystemClock,
    UuidV7,
};
use herald_proto::frames::{CreateChannel, Request, SendMessage};
use herald_proto::model::UserInfo;
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use herald_store::{Applied, CommitSink};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SHARED_NATS: &str = "127.0.0.1:4222";
const WAIT: Duration = Duration::from_secs(10);

/// The shared NATS, or `None` (and why) when it is not there and the run does not require it.
async fn shared_nats() -> Option<String> {
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(SHARED_NATS)).await,
        Ok(Ok(_))
    );
    if up {
        return Some(format!("nats://{SHARED_NATS}"));
    }
    if std::env::var("HERALD_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("NATS is not reachable at {SHARED_NATS} and HERALD_REQUIRE_SERVICES=1");
    }
    eprintln!("skipped: NATS is not reachable at {SHARED_NATS}");
    None
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn prefix() -> String {
    format!("test.{}", uuid::Uuid::now_v7().simple())
}

fn principal(user: &str) -> Principal {
    Principal {
        app: "default".into(),
        user: UserInfo { id: user.into(), name: None, kind: Default::default() },
        grants: Grants::from_claim(None),
    }
}

tokio::task_local! {
    /// The node whose op is running: its commits leave through that node's broker.
    static NODE: usize;
}

/// The store's sink in these tests: a commit made inside `NODE.scope(i, …)` leaves through
/// node `i`'s broker (as in a deployment, where each node's store sink is its own broker);
/// outside any scope, through node 0's.
#[derive(Default)]
struct NodeSink {
    sinks: OnceLock<Vec<Arc<BrokerSink>>>,
}

impl CommitSink for NodeSink {
    fn committed(&self, applied: &Applied) {
        let Some(sinks) = self.sinks.get() else { return };
        let node = NODE.try_with(|n| *n).unwrap_or(0);
        sinks[node.min(sinks.len() - 1)].committed(applied);
    }
}

struct Cluster {
    store: Arc<MemoryStore>,
    brokers: Vec<Arc<NatsBroker>>,
    engines: Vec<Arc<Engine>>,
}

fn config(url: &str, prefix: &str) -> NatsConfig {
    let mut c = NatsConfig::new(url);
    c.prefix = prefix.to_owned();
    c.reconnect_max_delay = Duration::from_millis(200);
    // Only what the tests do fills gaps (no periodic sweep hiding a missing reconnect check).
    c.sweep_interval = None;
    c
}

impl Cluster {
    async fn start(url: &str, n: usize) -> Cluster {
        Cluster::start_with(url, n, |_, _| {}).await
    }

    /// With node `i`'s configuration changed by `tweak(i, …)`.
    async fn start_with(url: &str, n: usize, tweak: impl Fn(usize, &mut NatsConfig)) -> Cluster {
        init_logs();
        let prefix = prefix();
        let sink = Arc::new(NodeSink::default());
        let store = Arc::new(MemoryStore::new(sink.clone()));
        let blobs = Arc::new(MemoryBlobStore::new());
        let mut brokers = Vec::new();
        let mut engines = Vec::new();
        for i in 0..n {
            let mut config = config(url, &prefix);
            tweak(i, &mut config);
            let broker = NatsBroker::connect(config).await.unwrap();
            broker.set_store(store.clone());
            let backends = Backends {
                store: store.clone(),
                blobs: blobs.clone(),
                broker: broker.clone(),
                clock: Arc::new(SystemClock),
                ids: Arc::new(UuidV7),
            };
            engines.push(Engine::start(backends, EngineConfig::default()).await.unwrap());
            brokers.push(broker);
        }
        let sinks = brokers.iter().map(|b| BrokerSink::new(b.clone() as Arc<dyn Broker>)).collect();
        let _ = sink.sinks.set(sinks);
        Cluster { store, brokers, engines }
    }

    /// Runs `op` as node `i` (its commits leave through node `i`'s broker).
    async fn on<T>(&self, i: usize, op: impl Future<Output = T>) -> T {
        NODE.scope(i, op).await
    }

    async fn head(&self, channel: &str) -> u64 {
        self.store.head_seq(channel).await.unwrap()
    }
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
        tokio::time::timeout(WAIT, wait).await.expect("timed out waiting for an event")
    }

    /// The `seq`s received per channel until each channel of `heads` reached its head.
    async fn logs_until(&mut self, heads: &BTreeMap<String, u64>) -> BTreeMap<String, Vec<u64>> {
        let mut got: BTreeMap<String, Vec<u64>> = heads.keys().map(|c| (c.clone(), Vec::new())).collect();
        let done = |got: &BTreeMap<String, Vec<u64>>| heads.iter().all(|(c, h)| got[c].last() == Some(h));
        let wait = async {
            while !done(&got) {
                let frame = self.rx.recv().await.expect("connection closed");
                let e: Value = serde_json::from_slice(&frame).unwrap();
                if let (Some(c), Some(seq)) = (e["channel"].as_str(), e["seq"].as_u64())
                    && let Some(list) = got.get_mut(c)
                {
                    list.push(seq);
                }
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            panic!("{} timed out waiting for {heads:?}; received {got:?}", self.who.user.id);
        }
        got
    }

    /// The `seq`s of the log events of `channel` received until `last` is among them, in the
    /// order received; fails on a timeout.
    async fn log_until(&mut self, channel: &str, last: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        let wait = async {
            while seqs.last() != Some(&last) {
                let frame = self.rx.recv().await.expect("connection closed");
                let e: Value = serde_json::from_slice(&frame).unwrap();
                if e["channel"] == channel && e["seq"].is_u64() {
                    seqs.push(e["seq"].as_u64().unwrap());
                }
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            panic!("{} timed out waiting for seq {last}; received {seqs:?}", self.who.user.id);
        }
        seqs
    }
}

fn send(channel: &str, text: &str) -> Request {
    Request::MessageSend {
        channel: channel.to_owned(),
        message: SendMessage { content: text.into(), ..Default::default() },
    }
}

/// Every `seq` from `from` to `to`, once each, in order.
fn assert_gapless(seqs: &[u64], from: u64, to: u64, who: &str) {
    let want: Vec<u64> = (from..=to).collect();
    assert_eq!(seqs, want.as_slice(), "{who} did not receive {from}..={to} once each, in order");
}

/// Sends a last message from node 0 and checks that it is the very next log event each client
/// receives: nothing was delivered twice after the checked range.
async fn sentinel(cluster: &Cluster, clients: &mut [&mut Client], channel: &str) {
    let sender = clients[0].who.clone();
    cluster.engines[0].execute(&sender, Some(&clients[0].conn), send(channel, "sentinel")).await.unwrap();
    let head = cluster.head(channel).await;
    for c in clients.iter_mut() {
        let e = c.next(|e| e["channel"] == channel && e["seq"].is_u64()).await;
        assert_eq!(e["seq"].as_u64(), Some(head), "{} received an older event again", c.who.user.id);
    }
}

async fn create(cluster: &Cluster, node: usize, owner: &Client, members: &[&str]) -> String {
    let create =
        CreateChannel { members: members.iter().map(|m| (*m).to_owned()).collect(), ..Default::default() };
    let engine = &cluster.engines[node];
    // Stamped now, as the server does: a node that first sees the channel past its start
    // looks for the entries committed since it started by their time.
    let now = herald_engine::Clock::now_ms(&SystemClock);
    cluster.on(node, engine.create_channel(&owner.who, create, now)).await.unwrap().channel.id
}

/// Ada on node 0 and Bob on node 1, in a channel Ada created with Bob as a member: the
/// setup of most two-node tests.
async fn ada_and_bob(cluster: &Cluster) -> (Client, Client, String) {
    let ada = Client::connect(&cluster.engines[0], "ada").await;
    let bob = Client::connect(&cluster.engines[1], "bob").await;
    let id = create(cluster, 0, &ada, &["bob"]).await;
    (ada, bob, id)
}

#[tokio::test]
async fn connect_fails_clearly_when_nats_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = NatsConfig::new(format!("nats://127.0.0.1:{port}"));
    c.connect_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = NatsBroker::connect(c).await.unwrap_err().to_string();
    assert!(err.starts_with("nats: cannot connect to nats://127.0.0.1:"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_in_one_gapless_order_each_once() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start(&url, 3).await;
    let (a, b, c) = (&cluster.engines[0], &cluster.engines[1], &cluster.engines[2]);
    let mut ada = Client::connect(a, "ada").await;
    let mut bob = Client::connect(b, "bob").await;
    let mut cat = Client::connect(c, "cat").await;

    let id = create(&cluster, 0, &ada, &["bob", "cat"]).await;
    // Membership made on node 0 reaches the other nodes' indexes with the log itself.
    for client in [&mut bob, &mut cat] {
        let created = client.next(|e| e["event"] == "channel_created").await;
        assert_eq!(created["channel"], id.as_str());
    }

    // Every node writes, interleaved, each commit leaving through its own node's broker: each
    // node's sequencer sees its own commits at once and the others' through NATS.
    let mut writes = Vec::new();
    for i in 0..30 {
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        let (wa, wb, wc) = (ada.who.clone(), bob.who.clone(), cat.who.clone());
        let id = id.clone();
        writes.push(tokio::spawn(async move {
            let sa = NODE.scope(0, a.execute(&wa, None, send(&id, &format!("a{i}"))));
            let sb = NODE.scope(1, b.execute(&wb, None, send(&id, &format!("b{i}"))));
            let sc = NODE.scope(2, c.execute(&wc, None, send(&id, &format!("c{i}"))));
            let (ra, rb, rc) = tokio::join!(sa, sb, sc);
            ra.unwrap();
            rb.unwrap();
            rc.unwrap();
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    let head = cluster.head(&id).await;
    assert_eq!(head, 4 + 90, "channel_created, 3 member_joined, 90 messages");
    for (name, client) in [("ada", &mut ada), ("bob", &mut bob), ("cat", &mut cat)] {
        let seqs = client.log_until(&id, head).await;
        // The creation commit's seqs came before: the check starts after channel_created.
        let first = seqs[0];
        assert!(first <= 4, "{name} started at {first}");
        assert_gapless(&seqs, first, head, name);
    }
    sentinel(&cluster, &mut [&mut ada, &mut bob, &mut cat], &id).await;

    // Signals cross and skip only the sender.
    let typing = Request::Typing { channel: id.clone(), is_typing: true };
    cluster.on(1, b.execute(&bob.who, Some(&bob.conn), typing)).await.unwrap();
    assert_eq!(ada.next(|e| e["event"] == "typing").await["user"], "bob");
    assert_eq!(cat.next(|e| e["event"] == "typing").await["user"], "bob");
    let eph = Request::Ephemeral { channel: id.clone(), subject: "cursor".into(), data: json!({"x": 1}) };
    cluster.on(0, a.execute(&ada.who, Some(&ada.conn), eph)).await.unwrap();
    assert_eq!(bob.next(|e| e["event"] == "ephemeral").await["data"], json!({"x": 1}));
    assert_eq!(cat.next(|e| e["event"] == "ephemeral").await["from"], "ada");

    // A subscribe reply on one node means a publication made right after on another arrives,
    // for subjects with characters that mean something to NATS too.
    for subject in ["presence:lobby", "a.b.*", "room>1", "x_2Ey"] {
        let sub = Request::Subscribe { subject: subject.into() };
        cluster.on(1, b.execute(&bob.who, Some(&bob.conn), sub)).await.unwrap();
        a.publish(&ada.who, subject, json!({"on": subject})).unwrap();
        let p = bob.next(|e| e["event"] == "publication").await;
        assert_eq!(p["subject"], subject);
        assert_eq!(p["data"], json!({"on": subject}), "a publication to another subject crossed");
    }
    // Unsubscribed, node 1 no longer takes the subject from NATS.
    let unsub = Request::Unsubscribe { subject: "presence:lobby".into() };
    cluster.on(1, b.execute(&bob.who, Some(&bob.conn), unsub)).await.unwrap();
    let received = cluster.brokers[1].stats().received;
    a.publish(&ada.who, "presence:lobby", json!("gone")).unwrap();
    a.publish(&ada.who, "a.b.*", json!("still")).unwrap();
    assert_eq!(bob.next(|e| e["event"] == "publication").await["data"], json!("still"));
    assert_eq!(cluster.brokers[1].stats().received, received + 1, "an unwatched subject still arrives");

    // Publications from the node itself reach its own subscribers once.
    let sub = Request::Subscribe { subject: "local".into() };
    cluster.on(0, a.execute(&ada.who, Some(&ada.conn), sub)).await.unwrap();
    a.publish(&ada.who, "local", json!(1)).unwrap();
    a.publish(&ada.who, "local", json!(2)).unwrap();
    assert_eq!(ada.next(|e| e["event"] == "publication").await["data"], json!(1));
    assert_eq!(ada.next(|e| e["event"] == "publication").await["data"], json!(2));

    // A removal on node 0 ends delivery on node 1 after bob's own member_left.
    let remove = Request::ChannelRemoveMember { channel: id.clone(), user: "bob".into() };
    cluster.on(0, a.execute(&ada.who, Some(&ada.conn), remove)).await.unwrap();
    bob.next(|e| e["event"] == "member_left" && e["user"] == "bob").await;
    cluster.on(2, c.execute(&cat.who, None, send(&id, "after bob left"))).await.unwrap();
    ada.next(|e| e["event"] == "message" && e["message"]["content"] == "after bob left").await;
    assert_eq!(b.hub().is_member("default", &id, "bob"), Some(false));

    for broker in &cluster.brokers {
        let s = broker.stats();
        assert_eq!(s.decode_errors, 0, "{s:?}");
        assert_eq!(s.gaps_skipped, 0, "{s:?}");
    }
    assert!(cluster.brokers[1].stats().received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_messages_are_filled_from_the_store_in_order() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start(&url, 2).await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let (a, b) = (&cluster.engines[0], &cluster.engines[1]);
    let head = cluster.head(&id).await;
    bob.log_until(&id, head).await;
    ada.log_until(&id, head).await;

    // Node 0 loses what it sends for a while, then a later message shows node 1 the gap.
    cluster.brokers[0].set_lose_outgoing(true);
    for i in 0..40 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("lost {i}")))).await.unwrap();
    }
    cluster.brokers[0].set_lose_outgoing(false);
    cluster.on(0, a.execute(&ada.who, None, send(&id, "after"))).await.unwrap();
    let now = cluster.head(&id).await;
    assert_gapless(&bob.log_until(&id, now).await, head + 1, now, "bob");
    assert_gapless(&ada.log_until(&id, now).await, head + 1, now, "ada");
    let s = cluster.brokers[1].stats();
    assert!(s.gaps >= 1 && s.entries_filled >= 40, "{s:?}");
    assert_eq!(cluster.brokers[0].stats().outgoing_dropped, 40);

    // Lost with no later message: a check against the store (what a reconnect or the sweep
    // does) finds and fills it.
    cluster.brokers[0].set_lose_outgoing(true);
    for i in 0..5 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("silent {i}")))).await.unwrap();
    }
    cluster.brokers[0].set_lose_outgoing(false);
    let silent = cluster.head(&id).await;
    cluster.brokers[1].check_now();
    assert_gapless(&bob.log_until(&id, silent).await, now + 1, silent, "bob");

    // Node 1's own commits and node 0's, for the same channel, interleave through one
    // sequencer on each node while node 0 keeps losing some.
    for i in 0..20 {
        cluster.brokers[0].set_lose_outgoing(i % 3 == 0);
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("a{i}")))).await.unwrap();
        cluster.on(1, b.execute(&bob.who, None, send(&id, &format!("b{i}")))).await.unwrap();
    }
    cluster.brokers[0].set_lose_outgoing(false);
    let end = cluster.head(&id).await;
    assert_gapless(&bob.log_until(&id, end).await, silent + 1, end, "bob");
    assert_gapless(&ada.log_until(&id, end).await, now + 1, end, "ada");
    sentinel(&cluster, &mut [&mut ada, &mut bob], &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_loses_nothing() {
    let Some(url) = shared_nats().await else { return };
    // Node 1's client buffers 4 messages per subscription: a burst overflows it, and the NATS
    // client drops messages and reports a slow consumer.
    let cluster = Cluster::start_with(&url, 2, |i, c| {
        if i == 1 {
            c.subscription_capacity = 4;
        }
    })
    .await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let a = &cluster.engines[0];
    let head = cluster.head(&id).await;
    assert_gapless(&bob.log_until(&id, head).await, 1, head, "bob");
    for i in 0..300 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("burst {i}")))).await.unwrap();
    }
    let end = cluster.head(&id).await;
    assert_gapless(&bob.log_until(&id, end).await, head + 1, end, "bob");
    assert_gapless(&ada.log_until(&id, end).await, 1, end, "ada");
    let s = cluster.brokers[1].stats();
    assert!(s.received < 300 && s.slow_consumers >= 1 && s.entries_filled >= 1, "{s:?}");
    sentinel(&cluster, &mut [&mut ada, &mut bob], &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_what_was_lost_with_no_later_message() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start_with(&url, 2, |i, c| {
        if i == 1 {
            c.sweep_interval = Some(Duration::from_millis(100));
        }
    })
    .await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let a = &cluster.engines[0];
    let head = cluster.head(&id).await;
    bob.log_until(&id, head).await;
    cluster.brokers[0].set_lose_outgoing(true);
    for i in 0..3 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("lost {i}")))).await.unwrap();
    }
    cluster.brokers[0].set_lose_outgoing(false);
    let end = cluster.head(&id).await;
    assert_gapless(&bob.log_until(&id, end).await, head + 1, end, "bob");
    assert!(cluster.brokers[1].stats().head_checks >= 1);
    ada.log_until(&id, end).await;
    sentinel(&cluster, &mut [&mut ada, &mut bob], &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_deleted_on_one_node_is_gone_on_every_node() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start(&url, 2).await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let (a, b) = (&cluster.engines[0], &cluster.engines[1]);
    cluster.on(1, b.execute(&bob.who, None, send(&id, "hello"))).await.unwrap();
    let head = cluster.head(&id).await;
    ada.log_until(&id, head).await;
    bob.log_until(&id, head).await;
    let delete = Request::ChannelDelete { channel: id.clone() };
    cluster.on(0, a.execute(&ada.who, Some(&ada.conn), delete)).await.unwrap();
    for c in [&mut ada, &mut bob] {
        let e = c.next(|e| e["event"] == "channel_deleted").await;
        assert_eq!(e["channel"], id.as_str());
    }
    eventually("node 1 forgets the channel", || b.hub().active_channels() == 0).await;
    eventually("both sequencers drop it", || cluster.brokers.iter().all(|b| b.stats().channels == 0)).await;
}

/// Three nodes write to four channels at once, each commit leaving through its own node's
/// broker, while every broker loses a fifth of what it sends: every client still receives every
/// channel's log once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_lossy_brokers_still_give_every_client_every_entry_once() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Arc::new(Cluster::start(&url, 3).await);
    let names = ["ada", "bob", "cat"];
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        clients.push(Client::connect(&cluster.engines[i], name).await);
    }
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(create(&cluster, 0, &clients[0], &["bob", "cat"]).await);
    }
    let mut writers = Vec::new();
    for (node, client) in clients.iter().enumerate() {
        let cluster = cluster.clone();
        let channels = channels.clone();
        let who = client.who.clone();
        writers.push(tokio::spawn(async move {
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ node as u64;
            for i in 0..60 {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                cluster.brokers[node].set_lose_outgoing((rng >> 33).is_multiple_of(5));
                let channel = &channels[((rng >> 40) % 4) as usize];
                let op = cluster.engines[node].execute(&who, None, send(channel, &format!("{node}:{i}")));
                cluster.on(node, op).await.unwrap();
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            cluster.brokers[node].set_lose_outgoing(false);
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // The tails lost with no later message: what a reconnect or the sweep would find.
    for broker in &cluster.brokers {
        broker.check_now();
    }
    let mut heads = BTreeMap::new();
    for c in &channels {
        heads.insert(c.clone(), cluster.head(c).await);
    }
    assert_eq!(heads.values().sum::<u64>(), 4 * 4 + 180);
    for client in &mut clients {
        let name = client.who.user.id.clone();
        for (channel, seqs) in client.logs_until(&heads).await {
            let first = seqs[0];
            assert!(first <= 4, "{name} started {channel} at {first}");
            assert_gapless(&seqs, first, heads[&channel], &name);
        }
    }
    let filled: u64 = cluster.brokers.iter().map(|b| b.stats().entries_filled).sum();
    assert!(filled > 0, "nothing was lost: the test tests nothing");
    for broker in &cluster.brokers {
        assert_eq!(broker.stats().gaps_skipped, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_idle_channel_goes_on_without_gap_or_duplicate() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start_with(&url, 2, |_, c| {
        c.forget_after = Some(Duration::from_millis(300));
        c.clock_skew = Duration::from_millis(50);
    })
    .await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let (a, b) = (&cluster.engines[0], &cluster.engines[1]);
    cluster.on(1, b.execute(&bob.who, None, send(&id, "before"))).await.unwrap();
    let head = cluster.head(&id).await;
    assert_gapless(&ada.log_until(&id, head).await, 1, head, "ada");
    assert_gapless(&bob.log_until(&id, head).await, 1, head, "bob");
    eventually("both nodes forget the idle channel", || {
        cluster.brokers.iter().all(|b| b.stats().channels == 0 && b.stats().channels_forgotten >= 1)
    })
    .await;
    // Seen again, from either node, through either path: it goes on where it was.
    cluster.on(1, b.execute(&bob.who, None, send(&id, "after b"))).await.unwrap();
    cluster.on(0, a.execute(&ada.who, None, send(&id, "after a"))).await.unwrap();
    let end = cluster.head(&id).await;
    assert_gapless(&ada.log_until(&id, end).await, head + 1, end, "ada");
    assert_gapless(&bob.log_until(&id, end).await, head + 1, end, "bob");
    sentinel(&cluster, &mut [&mut ada, &mut bob], &id).await;
}

/// Waits until `cond` holds, checking every 20 ms; fails after a deadline.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_nats_restart_loses_nothing_for_any_client() {
    let Some(mut nats) = PrivateNats::start() else {
        if std::env::var("HERALD_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("nats-server is not installed and HERALD_REQUIRE_SERVICES=1");
        }
        eprintln!("skipped: no nats-server binary");
        return;
    };
    let url = nats.url();
    let cluster = Cluster::start(&url, 2).await;
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    let (a, b) = (&cluster.engines[0], &cluster.engines[1]);
    for i in 0..10 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("before {i}")))).await.unwrap();
        cluster.on(1, b.execute(&bob.who, None, send(&id, &format!("before b{i}")))).await.unwrap();
    }
    let before = cluster.head(&id).await;
    assert_gapless(&ada.log_until(&id, before).await, 1, before, "ada");
    assert_gapless(&bob.log_until(&id, before).await, 1, before, "bob");

    nats.down();
    eventually("both brokers report NATS down", || cluster.brokers.iter().all(|b| b.health().is_err())).await;
    let why = cluster.brokers[1].health().unwrap_err();
    assert!(why.starts_with("nats: "), "{why}");
    let health = cluster.engines[1].health().await;
    assert!(health.is_err(), "/healthz must say NATS is down: {health:?}");
    // A subscribe cannot keep its promise meanwhile: it fails instead of hanging.
    let sub = Request::Subscribe { subject: "during".into() };
    let refused = cluster.on(1, b.execute(&bob.who, Some(&bob.conn), sub)).await;
    assert!(refused.is_err(), "a subscribe succeeded with NATS down");

    // Writes go on (the store is up). Some are queued in the NATS clients; others are lost for
    // good, as if the dying server had them in flight.
    for i in 0..5 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("queued a{i}")))).await.unwrap();
        cluster.on(1, b.execute(&bob.who, None, send(&id, &format!("queued b{i}")))).await.unwrap();
    }
    for broker in &cluster.brokers {
        broker.set_lose_outgoing(true);
    }
    for i in 0..5 {
        cluster.on(0, a.execute(&ada.who, None, send(&id, &format!("lost a{i}")))).await.unwrap();
        cluster.on(1, b.execute(&bob.who, None, send(&id, &format!("lost b{i}")))).await.unwrap();
    }
    for broker in &cluster.brokers {
        broker.set_lose_outgoing(false);
    }
    let during = cluster.head(&id).await;

    nats.up();
    eventually("both brokers reconnect", || cluster.brokers.iter().all(|b| b.health().is_ok())).await;
    // No later message: the check after the reconnect finds what was missed.
    assert_gapless(&ada.log_until(&id, during).await, before + 1, during, "ada");
    assert_gapless(&bob.log_until(&id, during).await, before + 1, during, "bob");
    for broker in &cluster.brokers {
        let s = broker.stats();
        assert!(s.reconnects >= 1, "{s:?}");
    }
    // The check after the reconnect runs whatever else filled the gap first (the queued
    // messages flushing on reconnect can reveal it sooner): it may complete after the logs.
    eventually("each broker checks the heads after its reconnect", || {
        cluster.brokers.iter().all(|b| b.stats().head_checks >= 1)
    })
    .await;
    assert!(cluster.engines[1].health().await.is_ok());

    // And everything works as before.
    sentinel(&cluster, &mut [&mut ada, &mut bob], &id).await;
    let sub = Request::Subscribe { subject: "after".into() };
    cluster.on(1, b.execute(&bob.who, Some(&bob.conn), sub)).await.unwrap();
    a.publish(&ada.who, "after", json!("back")).unwrap();
    assert_eq!(bob.next(|e| e["event"] == "publication").await["data"], json!("back"));
}

/// `POST /v1/users/{id}/disconnect` on one node closes the user's connections on every node:
/// the `Disconnect` envelope crosses NATS (on the control subject) like a channel event.
#[tokio::test]
async fn disconnect_on_one_node_closes_the_users_connections_on_every_node() {
    let Some(url) = shared_nats().await else { return };
    let c = Cluster::start(&url, 2).await;
    let bob0 = Client::connect(&c.engines[0], "bob").await;
    let bob1 = Client::connect(&c.engines[1], "bob").await;
    let ada1 = Client::connect(&c.engines[1], "ada").await;
    let ops = Principal { grants: Grants::from_claim(Some(&["admin".to_owned()])), ..principal("ops") };
    assert!(c.engines[0].disconnect_user(&principal("ada"), "bob").is_err(), "ordinary users may not");
    c.engines[0].disconnect_user(&ops, "bob").unwrap();
    for (node, bob) in [(0, &bob0), (1, &bob1)] {
        tokio::time::timeout(WAIT, bob.conn.kicked())
            .await
            .unwrap_or_else(|_| panic!("bob's connection on node {node} was not closed"));
        assert!(bob.conn.is_disconnected(), "closed as disconnected (4403), not as slow");
    }
    // Someone else's connection stays open.
    assert!(!ada1.conn.is_kicked());
}

/// §7 across nodes: a DM sent on node 0 reaches the connection of the addressed device on
/// node 1, and a keeper on node 1 hears `keys_needed` for an encrypted channel created on
/// node 0 (device and keeper envelopes travel over NATS).
#[tokio::test]
async fn dms_and_keeper_events_cross_nodes() {
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start(&url, 2).await;
    let bundle =
        |d: &str| json!({"identity": {"device_id": d}, "identity_signature": "s", "one_time_keys": []});
    let (e0, e1) = (&cluster.engines[0], &cluster.engines[1]);
    e0.register_device(&principal("ada"), "ada-phone", &bundle("ada-phone")).await.unwrap();
    e1.register_device(&principal("bob"), "bob-phone", &bundle("bob-phone")).await.unwrap();
    let ada = Client::connect(e0, "ada").await;
    e0.attach_e2ee(&ada.conn, &ada.who, Some("ada-phone".into()));
    let mut bob = Client::connect(e1, "bob").await;
    e1.attach_e2ee(&bob.conn, &bob.who, Some("bob-phone".into()));
    assert_eq!(e1.resume(&bob.conn).await, herald_engine::ResumeEnd::Done);
    let mut keeper_who = principal("keeper");
    keeper_who.grants = Grants::from_claim(Some(&["keeper".to_owned()]));
    let (conn, mut rx) =
        e1.connect(&keeper_who, &BTreeMap::new(), |_| Bytes::from_static(b"{}")).await.unwrap();
    rx.recv().await.unwrap();
    e1.attach_e2ee(&conn, &keeper_who, None);
    let mut keeper = Client { who: keeper_who, conn, rx };

    let to = vec![herald_proto::frames::DmTo {
        user: "bob".into(),
        device_id: "bob-phone".into(),
        body: "olm-ct".into(),
    }];
    cluster
        .on(0, e0.execute(&ada.who, Some(&ada.conn), Request::DmSend { to, client_id: None }))
        .await
        .unwrap();
    let dm = bob.next(|e| e["event"] == "dm").await;
    assert_eq!((dm["body"].as_str(), dm["from_device"].as_str()), (Some("olm-ct"), Some("ada-phone")));

    let create = CreateChannel { encrypted: true, members: vec!["bob".into()], ..Default::default() };
    let now = herald_engine::Clock::now_ms(&SystemClock);
    let ch = cluster.on(0, e0.create_channel(&ada.who, create, now)).await.unwrap().channel.id;
    let needed = keeper.next(|e| e["event"] == "keys_needed" && e["user"] == "bob").await;
    assert_eq!((needed["channel"].as_str(), &needed["devices"]), (Some(ch.as_str()), &json!(["bob-phone"])));
}

/// The next room frame of `rx` matching `pred`: its JSON (the header of a binary frame) and
/// the bytes after a binary frame's header.
async fn next_room(rx: &mut herald_engine::OutboundRx, pred: impl Fn(&Value) -> bool) -> (Value, Vec<u8>) {
    let wait = async {
        loop {
            let frame = rx.recv().await.expect("connection closed");
            let (v, bytes) = if herald_engine::rooms::is_binary_frame(&frame) {
                let (h, b) = herald_proto::frames::parse_binary_frame(&frame).unwrap();
                (Value::Object(h), b.to_vec())
            } else {
                (serde_json::from_slice::<Value>(&frame).unwrap(), Vec::new())
            };
            if pred(&v) {
                return (v, bytes);
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("timed out waiting for a room frame")
}

/// Rooms span nodes (§8 over §10): presence, a direct message with an attachment and a
/// credit-paced stream between participants on two nodes, all through NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_participants_messages_and_streams_cross_nodes() {
    use herald_proto::rooms::RoomRequest;
    let Some(url) = shared_nats().await else { return };
    let cluster = Cluster::start(&url, 2).await;
    let (e0, e1) = (cluster.engines[0].clone(), cluster.engines[1].clone());
    let (mut ada, mut bob, id) = ada_and_bob(&cluster).await;
    bob.next(|e| e["event"] == "channel_created").await;
    let enter = |channel: &str| RoomRequest::Enter { channel: channel.to_owned(), attributes: None };
    let ok = e0.execute_room(&ada.who, &ada.conn, enter(&id), None).await.unwrap();
    let pa = serde_json::to_value(&ok).unwrap()["participant_id"].as_str().unwrap().to_owned();
    let ok =
        serde_json::to_value(e1.execute_room(&bob.who, &bob.conn, enter(&id), None).await.unwrap()).unwrap();
    let pb = ok["participant_id"].as_str().unwrap().to_owned();
    // Ada's enter reaches node 1 before or after Bob's: in his list, or as an event.
    if ok["participants"].as_array().unwrap().len() < 2 {
        let (added, _) = next_room(&mut bob.rx, |e| e["event"] == "participant_added").await;
        assert_eq!(added["participant"]["participant_id"], pa.as_str());
    }
    let (added, _) = next_room(&mut ada.rx, |e| e["event"] == "participant_added").await;
    assert_eq!(added["participant"]["participant_id"], pb.as_str());

    let send = RoomRequest::Send {
        channel: id.clone(),
        to: pb.clone(),
        kind: "file".into(),
        message: json!({"n": 1}),
    };
    e0.execute_room(&ada.who, &ada.conn, send, Some(Bytes::from_static(b"\x00\nbytes\n"))).await.unwrap();
    let (m, bytes) = next_room(&mut bob.rx, |e| e["event"] == "room_message").await;
    assert_eq!(m["from"]["participant_id"], pa.as_str());
    assert_eq!(bytes, b"\x00\nbytes\n");

    // A stream from node 0 to node 1: the accept's credit crosses back to the writer's node.
    let open = {
        let (e0, who, id, pb) = (e0.clone(), ada.who.clone(), id.clone(), pb.clone());
        let conn = std::sync::Arc::new(ada.conn);
        let c2 = conn.clone();
        (
            tokio::spawn(async move {
                let req = RoomRequest::StreamOpen { channel: id, to: pb, header: json!({}) };
                e0.execute_room(&who, &c2, req, None).await.map(|ok| serde_json::to_value(ok).unwrap())
            }),
            conn,
        )
    };
    let (req, _) = next_room(&mut bob.rx, |e| e["event"] == "stream_request").await;
    let sid = req["stream_id"].as_str().unwrap().to_owned();
    e1.execute_room(
        &bob.who,
        &bob.conn,
        RoomRequest::StreamAccept { stream_id: sid.clone(), credit: Some(4) },
        None,
    )
    .await
    .unwrap();
    let ok = open.0.await.unwrap().unwrap();
    assert_eq!(ok["stream_id"], sid.as_str());
    let ada_conn = open.1;
    let chunk = || RoomRequest::StreamChunk { stream_id: sid.clone(), header: None };
    e0.execute_room(&ada.who, &ada_conn, chunk(), Some(Bytes::from_static(b"abcd"))).await.unwrap();
    let e = e0.execute_room(&ada.who, &ada_conn, chunk(), Some(Bytes::from_static(b"e"))).await.unwrap_err();
    assert_eq!(e.code(), herald_proto::ErrorCode::RateLimited);
    let (c, bytes) = next_room(&mut bob.rx, |e| e["event"] == "stream_chunk").await;
    assert_eq!((c["stream_id"].as_str(), bytes.as_slice()), (Some(sid.as_str()), &b"abcd"[..]));

    // Bob leaves on node 1: node 0 removes him and aborts the stream for Ada.
    e1.execute_room(&bob.who, &bob.conn, RoomRequest::Leave { channel: id.clone() }, None).await.unwrap();
    let (aborted, _) = next_room(&mut ada.rx, |e| e["event"] == "stream_aborted").await;
    assert_eq!(aborted["stream_id"], sid.as_str());
    let (removed, _) = next_room(&mut ada.rx, |e| e["event"] == "participant_removed").await;
    assert_eq!(removed["participant"]["participant_id"], pb.as_str());
}
