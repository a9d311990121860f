//! Rooms across several `herald serve` nodes on PostgreSQL + NATS (PROTOCOL.md §8, §10): a
//! node started after participants entered on another learns them; a node killed with
//! SIGKILL has its participants removed by the others after the node timeout; the participant
//! lists and `presence_count` agree on every node; attachments larger than NATS's
//! `max_payload` (1 MiB by default) cross nodes byte for byte; a node started after the last
//! one died writes the removals it left.
//!
//! Uses the machine's PostgreSQL (127.0.0.1:5432, or `HERALD_TEST_PG`) and NATS
//! (127.0.0.1:4222, or `HERALD_TEST_NATS`); without them a test prints why and passes, unless
//! `HERALD_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Deployment, Server, nats_addr, services};
use herald_client::room::{RoomEvents, RoomIncoming};
use herald_client::{Client, ClientConfig, CreateChannel};
use herald_proto::rooms::RoomEvent;
use herald_store_postgres::scratch::{self, ScratchDb};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn token(sub: &str) -> String {
    common::deployment_token(sub)
}

/// Nodes over one database and one NATS, started one at a time.
struct Nodes {
    deployment: Deployment,
    nodes: Vec<Option<Server>>,
}

impl Nodes {
    fn new(store: &str, extra: &[&str]) -> Nodes {
        let broker = format!("nats://{}", nats_addr());
        Nodes { deployment: Deployment::new(store, &broker, extra), nodes: Vec::new() }
    }

    /// Starts the next node; its index.
    fn start(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Some(self.deployment.spawn(i, "127.0.0.1:0")));
        i
    }

    fn ws(&self, i: usize) -> String {
        format!("ws://{}", self.nodes[i].as_ref().unwrap().addr)
    }

    fn url(&self, i: usize) -> String {
        self.nodes[i].as_ref().unwrap().url()
    }

    fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().unwrap();
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
}

async fn connect(url: &str, user: &str) -> Client {
    let config = ClientConfig { request_timeout: Duration::from_secs(20), ..ClientConfig::default() };
    Client::connect_with(url, &token(user), config).await.unwrap()
}

fn ids(list: &[herald_proto::rooms::Participant]) -> BTreeSet<String> {
    list.iter().map(|p| p.user.clone()).collect()
}

/// The next event matching `pred` within [`WAIT`].
async fn next_where(
    events: &mut RoomEvents,
    pred: impl Fn(&RoomEvent, Option<&Bytes>) -> bool,
) -> (RoomEvent, Option<Bytes>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(RoomIncoming::Event { event, bytes })) if pred(&event, bytes.as_ref()) => {
                return (event, bytes);
            }
            Ok(Some(RoomIncoming::Event { .. })) => {}
            Ok(Some(other)) => panic!("room events: {other:?}"),
            Ok(None) => panic!("room events ended"),
            Err(_) => panic!("no matching room event within {WAIT:?}"),
        }
    }
}

/// Follows a room's size from `from` through `presence_count` and per-participant events
/// until it is `want`.
async fn count_reaches(events: &mut RoomEvents, from: u64, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = from;
    while n != want {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(RoomIncoming::Event { event, .. })) => match event {
                RoomEvent::PresenceCount { count, .. } => n = count,
                RoomEvent::ParticipantRemoved { .. } => n = n.saturating_sub(1),
                RoomEvent::ParticipantAdded { .. } => n += 1,
                _ => {}
            },
            Ok(Some(other)) => panic!("room events: {other:?}"),
            Ok(None) => panic!("room events ended"),
            Err(_) => panic!("the room stayed at {n}, not {want}, for {WAIT:?}"),
        }
    }
}

fn users_of(all: &[herald_proto::rooms::Participant]) -> Vec<String> {
    ids(all).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_nodes_learn_the_room_and_a_dead_nodes_participants_leave() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let receiver = herald_testing::WebhookReceiver::start(|_| 200).await;
    let hook = receiver.url();
    let mut nodes = Nodes::new(
        &db.url(),
        &[
            "--node-timeout-ms",
            "1500",
            "--presence-interval-ms",
            "10",
            "--presence-list-max",
            "3",
            "--webhook",
            &hook,
            "--webhook-events",
            "participant_added,participant_removed",
            "--webhook-retry-ms",
            "20",
        ],
    );
    let n0 = nodes.start();
    let ada = connect(&nodes.ws(n0), "ada").await;
    let bob = connect(&nodes.ws(n0), "bob").await;
    ada.channels()
        .create_with(CreateChannel {
            name: Some("lobby".into()),
            members: ["bob", "cy", "dan"].iter().map(|m| m.to_string()).collect(),
            ..CreateChannel::default()
        })
        .await
        .unwrap();
    let mut ada_events = ada.room("lobby").events();
    let pa = ada.room("lobby").enter(serde_json::Map::new()).await.unwrap().participant_id;
    let pb = bob.room("lobby").enter(serde_json::Map::new()).await.unwrap().participant_id;

    // Node 1 starts after ada and bob entered on node 0: cy's enter lists them.
    let n1 = nodes.start();
    let cy = connect(&nodes.ws(n1), "cy").await;
    let mut cy_events = cy.room("lobby").events();
    let entered = cy.room("lobby").enter(serde_json::Map::new()).await.unwrap();
    assert_eq!(users_of(entered.participants.as_deref().unwrap()), ["ada", "bob", "cy"]);
    // Node 2 too, asked for the list before anyone there entered, then past the list size.
    let n2 = nodes.start();
    let dan = connect(&nodes.ws(n2), "dan").await;
    let mut dan_events = dan.room("lobby").events();
    assert_eq!(users_of(&dan.room("lobby").participants().await.unwrap()), ["ada", "bob", "cy"]);
    let entered = dan.room("lobby").enter(serde_json::Map::new()).await.unwrap();
    assert_eq!(entered.count, Some(4), "past --presence-list-max the reply is the count");
    // Every node's list and count agree.
    next_where(&mut cy_events, |e, _| matches!(e, RoomEvent::PresenceCount { count: 4, .. })).await;
    next_where(&mut ada_events, |e, _| matches!(e, RoomEvent::PresenceCount { count: 4, .. })).await;
    for c in [&ada, &cy, &dan] {
        assert_eq!(users_of(&c.room("lobby").participants().await.unwrap()), ["ada", "bob", "cy", "dan"]);
    }
    let before_count = ids(&cy.room("lobby").participants().await.unwrap()).len();
    assert_eq!(before_count, 4);

    // Node 0 dies without a word: the others remove its participants after the node timeout.
    nodes.kill(n0);
    drop((ada, bob));
    count_reaches(&mut cy_events, 4, 2).await;
    count_reaches(&mut dan_events, 4, 2).await;
    for c in [&cy, &dan] {
        assert_eq!(users_of(&c.room("lobby").participants().await.unwrap()), ["cy", "dan"]);
    }
    let metrics = reqwest::get(format!("{}/metrics", nodes.url(n1))).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("herald_broker_nodes_gone_total ") && !l.ends_with(" 0")),
        "node 1 counted node 0 gone"
    );
    // The survivors wrote the dead node's removals: each delivered once, after its addition.
    let removal = |pid: &str| format!(":{pid}:removed");
    let all = receiver
        .wait_until(WAIT, |all| {
            [&pa, &pb].iter().all(|p| all.iter().any(|r| r.accepted() && r.id().ends_with(&removal(p))))
        })
        .await;
    for p in [&pa, &pb] {
        let accepted: Vec<&str> = all
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.id())
            .filter(|id| id.contains(p.as_str()))
            .collect();
        assert_eq!(accepted.len(), 2, "{p}: one added, one removed: {accepted:?}");
        assert!(accepted[0].ends_with(":added") && accepted[1].ends_with(":removed"), "{accepted:?}");
    }
    cy.close().await;
    dan.close().await;
}

/// The only node is killed with participants present, and a new node (another id, another
/// data directory) starts: once it has listened for a node timeout without hearing of the
/// dead one, it writes the removals the dead node left in the store, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_after_the_last_one_died_writes_its_removals() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let receiver = herald_testing::WebhookReceiver::start(|_| 200).await;
    let hook = receiver.url();
    let mut nodes = Nodes::new(
        &db.url(),
        &[
            "--node-timeout-ms",
            "1500",
            "--webhook",
            &hook,
            "--webhook-events",
            "participant_added,participant_removed",
            "--webhook-retry-ms",
            "20",
        ],
    );
    let n0 = nodes.start();
    let ada = connect(&nodes.ws(n0), "ada").await;
    let bob = connect(&nodes.ws(n0), "bob").await;
    ada.channels()
        .create_with(CreateChannel {
            name: Some("lobby".into()),
            members: vec!["bob".to_owned()],
            ..CreateChannel::default()
        })
        .await
        .unwrap();
    let pa = ada.room("lobby").enter(serde_json::Map::new()).await.unwrap().participant_id;
    let pb = bob.room("lobby").enter(serde_json::Map::new()).await.unwrap().participant_id;
    let added = |pid: &str| format!(":{pid}:added");
    let removal = |pid: &str| format!(":{pid}:removed");
    receiver
        .wait_until(WAIT, |all| {
            [&pa, &pb].iter().all(|p| all.iter().any(|r| r.accepted() && r.id().ends_with(&added(p))))
        })
        .await;
    nodes.kill(n0);
    drop((ada, bob));
    let _n1 = nodes.start();
    // The dead node still holds the room's delivery lease (30 s from its last renewal, docs
    // §K.3): the removals go out once it expired.
    let all = receiver
        .wait_until(Duration::from_secs(90), |all| {
            [&pa, &pb].iter().all(|p| all.iter().any(|r| r.accepted() && r.id().ends_with(&removal(p))))
        })
        .await;
    for p in [&pa, &pb] {
        let mut accepted: Vec<&str> = all
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.id())
            .filter(|id| id.contains(p.as_str()))
            .collect();
        accepted.dedup();
        assert_eq!(accepted.len(), 2, "{p}: one added, one removed: {accepted:?}");
        assert!(accepted[1].ends_with(":removed"), "{accepted:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attachments_larger_than_max_payload_cross_nodes() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let mut nodes = Nodes::new(&db.url(), &["--presence-interval-ms", "10"]);
    let (n0, n1) = (nodes.start(), nodes.start());
    let ada = connect(&nodes.ws(n0), "ada").await;
    let bob = connect(&nodes.ws(n1), "bob").await;
    ada.channels()
        .create_with(CreateChannel {
            name: Some("big".into()),
            members: vec!["bob".into()],
            ..CreateChannel::default()
        })
        .await
        .unwrap();
    let mut bob_events = bob.room("big").events();
    let mut ada_events = ada.room("big").events();
    ada.room("big").enter(serde_json::Map::new()).await.unwrap();
    let b = bob.room("big").enter(serde_json::Map::new()).await.unwrap();
    assert_eq!(users_of(b.participants.as_deref().unwrap()), ["ada", "bob"]);
    // Ada's node knows bob once his enter crossed.
    next_where(
        &mut ada_events,
        |e, _| matches!(e, RoomEvent::ParticipantAdded { participant, .. } if participant.user == "bob"),
    )
    .await;
    let three_mib: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let three_mib = Bytes::from(three_mib);
    ada.room("big")
        .send(&b.participant_id, "file", serde_json::json!({"name": "a.bin"}), Some(three_mib.clone()))
        .await
        .unwrap();
    let (ev, bytes) = next_where(&mut bob_events, |e, _| matches!(e, RoomEvent::RoomMessage { .. })).await;
    assert!(matches!(ev, RoomEvent::RoomMessage { ref kind, .. } if kind == "file"));
    assert_eq!(bytes.as_ref().map(|b| b.len()), Some(three_mib.len()));
    assert!(bytes.unwrap() == three_mib, "byte-identical across nodes");
    let two_mib = Bytes::from(vec![7u8; 2 * 1024 * 1024 + 3]);
    ada.room("big").broadcast("blob", serde_json::json!({}), Some(two_mib.clone())).await.unwrap();
    let (_, bytes) = next_where(
        &mut bob_events,
        |e, _| matches!(e, RoomEvent::RoomMessage { kind, .. } if kind == "blob"),
    )
    .await;
    assert!(bytes.unwrap() == two_mib);
    let metrics = reqwest::get(format!("{}/metrics", nodes.url(n0))).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("herald_broker_split_messages_total ") && !l.ends_with(" 0")),
        "sent in parts"
    );
    ada.close().await;
    bob.close().await;
}
