//! Several `herald serve` processes sharing PostgreSQL (the store) and NATS (the broker), the
//! deployment of PROTOCOL.md §10, each client on its own node: one `seq` order everywhere,
//! resume against another node, `kill -9` of a node under load, NATS and PostgreSQL restarts
//! during traffic, and signals crossing nodes.
//!
//! The machine's PostgreSQL (127.0.0.1:5432, or `HERALD_TEST_PG`) and NATS (127.0.0.1:4222, or
//! `HERALD_TEST_NATS`) serve the ordinary cases; each test makes its own database and its own
//! subject prefix (a random node id). The restart cases run a private `nats-server` or a
//! private PostgreSQL cluster, so nothing else on the machine is disturbed. Without the
//! services a test prints why and passes, unless `HERALD_REQUIRE_SERVICES=1` (CI).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Deployment, Server, nats_addr, services};
use futures::StreamExt;
use herald_broker_nats::testing::PrivateNats;
use herald_client::{Channel, Client, ClientConfig, ClientEvent, CreateChannel, Event, SendMessage};
use herald_store_postgres::scratch::{self, PrivateCluster, ScratchDb};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn token(sub: &str) -> String {
    common::deployment_token(sub)
}

/// Nodes over one database and one NATS.
struct Cluster {
    /// Holds the nodes' data directories.
    _deployment: Deployment,
    nodes: Vec<Option<Server>>,
}

impl Cluster {
    fn start(n: usize, store: &str, broker: &str) -> Cluster {
        Cluster::start_with(n, store, broker, &[])
    }

    fn start_with(n: usize, store: &str, broker: &str, extra: &[&str]) -> Cluster {
        let deployment = Deployment::new(store, broker, extra);
        let nodes = (0..n).map(|i| Some(deployment.spawn(i, "127.0.0.1:0"))).collect();
        Cluster { _deployment: deployment, nodes }
    }

    fn url(&self, i: usize) -> String {
        self.nodes[i].as_ref().unwrap().url()
    }

    /// `kill -9`.
    fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().unwrap();
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
}

async fn connect(url: &str, user: &str, fallbacks: &[String]) -> Client {
    let config = ClientConfig {
        fallback_urls: fallbacks.to_vec(),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        request_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    Client::connect_with(url, &token(user), config).await.unwrap()
}

/// Every message event of `channel` a client receives, in order, as (seq, content), until
/// `done` says it has what it waits for; and every log event's seq, to check for gaps.
async fn collect(
    mut events: herald_client::EventStream,
    channel: String,
    done: impl Fn(&[(u64, String)]) -> bool,
) -> (Vec<(u64, String)>, Vec<u64>) {
    let mut messages = Vec::new();
    let mut seqs = Vec::new();
    let run = async {
        while let Some(ev) = events.next().await {
            match ev {
                ClientEvent::Event(e) if e.channel() == Some(channel.as_str()) => {
                    if let Some(meta) = e.meta() {
                        seqs.push(meta.seq);
                    }
                    if let Event::Message { meta, message, .. } = *e {
                        messages.push((meta.seq, message.content));
                        if done(&messages) {
                            return;
                        }
                    }
                }
                ClientEvent::ChainError(e) => panic!("chain error: {e}"),
                ClientEvent::Lagged { .. } => panic!("event stream lagged"),
                _ => {}
            }
        }
    };
    if tokio::time::timeout(WAIT, run).await.is_err() {
        panic!("timed out with {} messages: {:?}", messages.len(), messages.last());
    }
    (messages, seqs)
}

fn assert_gapless(seqs: &[u64]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap or a duplicate in {seqs:?}");
    }
}

/// Every message of a channel, read through the log (verified link by link by the SDK).
async fn log_contents(channel: &Channel) -> Vec<String> {
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        let page = channel.log(after, 500).await.unwrap();
        for e in &page.entries {
            after = e.seq;
            if e.kind == herald_client::herald_proto::EntryKind::Message {
                out.push(e.content.clone().unwrap_or_default());
            }
        }
        if !page.has_more {
            return out;
        }
    }
}

async fn create(client: &Client, name: &str, members: &[&str]) -> Channel {
    client
        .channels()
        .create_with(CreateChannel {
            name: Some(name.into()),
            members: members.iter().map(|m| m.to_string()).collect(),
            ..CreateChannel::default()
        })
        .await
        .unwrap()
}

/// Sends `contents` in order, each with its own `client_id` (so a resend after a reconnect
/// appends it once), retrying a failed send until `WAIT` runs out: returns the acknowledged.
async fn send_all(channel: Channel, contents: Vec<String>) -> Vec<String> {
    let mut acked = Vec::new();
    for content in contents {
        let message = SendMessage {
            content: content.clone(),
            client_id: Some(format!("cid-{content}")),
            ..SendMessage::default()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match channel.send_with(message.clone()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => panic!("send of {content} kept failing: {e}"),
            }
        }
        acked.push(content);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_one_gapless_order_to_every_client() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let cluster = Cluster::start(3, &db.url(), &format!("nats://{}", nats_addr()));
    let users = ["ada", "bob", "cy"];
    let mut clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        clients.push(connect(&cluster.url(i), user, &[]).await);
    }
    let streams: Vec<_> = clients.iter().map(|c| c.events()).collect();
    let ada_ch = create(&clients[0], "one-order", &["bob", "cy"]).await;
    let channels = [
        ada_ch.clone(),
        clients[1].channels().get(ada_ch.id()).await.unwrap(),
        clients[2].channels().get(ada_ch.id()).await.unwrap(),
    ];

    const PER_NODE: usize = 100;
    let total = PER_NODE * 3;
    let collectors: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(collect(s, ada_ch.id().to_owned(), move |m| m.len() >= total)))
        .collect();
    // 300 concurrent sends, 100 through each node.
    let mut sends = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        for k in 0..PER_NODE {
            let ch = ch.clone();
            sends.push(tokio::spawn(async move { ch.send(&format!("n{i}-{k}")).await.unwrap() }));
        }
    }
    for s in sends {
        s.await.unwrap();
    }
    let mut seen = Vec::new();
    for c in collectors {
        seen.push(c.await.unwrap());
    }
    for (messages, seqs) in &seen {
        assert_eq!(messages.len(), total);
        assert_gapless(seqs);
        assert_eq!(messages, &seen[0].0, "every client sees the one order");
    }
    let distinct: HashSet<&String> = seen[0].0.iter().map(|(_, c)| c).collect();
    assert_eq!(distinct.len(), total);
    assert_eq!(log_contents(&channels[1]).await.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_nothing_and_its_clients_resume_on_another() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let mut cluster = Cluster::start(3, &db.url(), &format!("nats://{}", nats_addr()));
    let (u0, u1, u2) = (cluster.url(0), cluster.url(1), cluster.url(2));
    // ada writes and cy reads through node 0, the one that dies; both know the others.
    let ada = connect(&u0, "ada", &[u1.clone(), u2.clone()]).await;
    let cy = connect(&u0, "cy", &[u1.clone(), u2.clone()]).await;
    let bob = connect(&u1, "bob", &[]).await;
    let cy_events = cy.events();
    let ch = create(&ada, "kill-nine", &["bob", "cy"]).await;
    let bob_ch = bob.channels().get(ch.id()).await.unwrap();

    const N: usize = 150;
    let ada_contents: Vec<String> = (0..N).map(|k| format!("ada-{k}")).collect();
    let bob_contents: Vec<String> = (0..N).map(|k| format!("bob-{k}")).collect();
    let all: HashSet<String> = ada_contents.iter().chain(&bob_contents).cloned().collect();
    let expect = all.clone();
    let reader = tokio::spawn(collect(cy_events, ch.id().to_owned(), move |m| {
        m.iter().map(|(_, c)| c).collect::<HashSet<_>>().len() >= expect.len()
    }));
    let mut ada_progress = ada.events();
    let writers = [
        tokio::spawn(send_all(ch.clone(), ada_contents)),
        tokio::spawn(send_all(bob_ch.clone(), bob_contents)),
    ];

    // Kill node 0 once a few of ada's messages are through.
    let mut through = 0;
    while through < 20 {
        let ev = tokio::time::timeout(WAIT, ada_progress.next()).await.unwrap().unwrap();
        if matches!(ev.as_event(), Some(Event::Message { .. })) {
            through += 1;
        }
    }
    cluster.kill(0);

    for w in writers {
        assert_eq!(w.await.unwrap().len(), N);
    }
    let (messages, seqs) = reader.await.unwrap();
    assert_gapless(&seqs);
    let contents: Vec<&String> = messages.iter().map(|(_, c)| c).collect();
    assert_eq!(contents.len(), all.len(), "cy saw a message twice");
    // History: every acknowledged message exactly once, and the chain verifies (`log`), read
    // over REST by ada, whose first node is gone: REST followed her WebSocket to another.
    let logged = log_contents(&ch).await;
    assert_eq!(logged, log_contents(&bob_ch).await);
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for c in &logged {
        *counts.entry(c).or_default() += 1;
    }
    assert_eq!(counts.len(), all.len());
    assert!(counts.values().all(|&n| n == 1), "a message is in history twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_nats_restart_every_client_has_every_message() {
    if !services() {
        return;
    }
    let Some(mut nats) = PrivateNats::start() else {
        eprintln!("skipped: no nats-server binary");
        return;
    };
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let cluster = Cluster::start(2, &db.url(), &nats.url());
    let ada = connect(&cluster.url(0), "ada", &[]).await;
    let bob = connect(&cluster.url(1), "bob", &[]).await;
    let bob_events = bob.events();
    let ch = create(&ada, "nats-restart", &["bob"]).await;

    const N: usize = 120;
    let reader = tokio::spawn(collect(bob_events, ch.id().to_owned(), |m| m.len() >= N));
    let first: Vec<String> = (0..N / 3).map(|k| format!("m-{k}")).collect();
    let middle: Vec<String> = (N / 3..2 * N / 3).map(|k| format!("m-{k}")).collect();
    let last: Vec<String> = (2 * N / 3..N).map(|k| format!("m-{k}")).collect();
    send_all(ch.clone(), first).await;
    nats.down();
    // /healthz names the broker while it is gone.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = healthz(&cluster.url(1)).await;
        if status == 503 {
            assert!(body.contains("broker: nats"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/healthz kept answering {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sent while NATS is down: committed to PostgreSQL; they reach bob's node when NATS is
    // back, from the NATS client's buffer or, for what was lost, filled from PostgreSQL.
    send_all(ch.clone(), middle).await;
    nats.up();
    let deadline = std::time::Instant::now() + WAIT;
    while healthz(&cluster.url(1)).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "node 1 did not see NATS come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_all(ch.clone(), last).await;
    let (messages, seqs) = reader.await.unwrap();
    assert_gapless(&seqs);
    let want: Vec<String> = (0..N).map(|k| format!("m-{k}")).collect();
    let got: Vec<String> = messages.into_iter().map(|(_, c)| c).collect();
    assert_eq!(got, want);
    // The broker's figures are exported: every message reached bob's node, from NATS (what the
    // NATS client buffered while disconnected) or from PostgreSQL (what was lost in flight).
    let metrics = reqwest::get(format!("{}/metrics", cluster.url(1))).await.unwrap().text().await.unwrap();
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert!(figure("herald_broker_delivered_total") >= N as u64);
    assert!(figure("herald_broker_reconnects_total") >= 1, "the node saw NATS go and come back");
}

async fn healthz(url: &str) -> (u16, String) {
    match reqwest::get(format!("{url}/healthz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_keeps_acknowledged_messages_and_fails_sends_meanwhile() {
    if !services() {
        return;
    }
    let pg = match PrivateCluster::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("skipped: cannot run a private PostgreSQL: {e}");
            return;
        }
    };
    let db = ScratchDb::create(&pg.admin_url()).unwrap();
    let cluster = Cluster::start(2, &db.url(), &format!("nats://{}", nats_addr()));
    let ada = connect(&cluster.url(0), "ada", &[]).await;
    let bob = connect(&cluster.url(1), "bob", &[]).await;
    let ch = create(&ada, "pg-restart", &["bob"]).await;
    let before: Vec<String> = (0..30).map(|k| format!("before-{k}")).collect();
    send_all(ch.clone(), before.clone()).await;

    pg.stop_immediate().unwrap();
    // Meanwhile a send is answered with an error, not left hanging.
    let started = std::time::Instant::now();
    let refused = ch.send("while-down").await;
    assert!(refused.is_err(), "a send with PostgreSQL down succeeded");
    assert!(started.elapsed() < Duration::from_secs(20), "a send hung for {:?}", started.elapsed());
    let (status, body) = healthz(&cluster.url(1)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");

    pg.start_again().unwrap();
    // The nodes recover by themselves.
    let deadline = std::time::Instant::now() + WAIT;
    while healthz(&cluster.url(0)).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "node 0 did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<String> = (0..30).map(|k| format!("after-{k}")).collect();
    send_all(ch.clone(), after.clone()).await;
    let bob_ch = bob.channels().get(ch.id()).await.unwrap();
    let logged = log_contents(&bob_ch).await;
    let acked: Vec<String> = before.into_iter().chain(after).collect();
    let logged_acked: Vec<String> = logged.iter().filter(|c| *c != "while-down").cloned().collect();
    assert_eq!(logged_acked, acked, "every acknowledged message exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publications_typing_and_ephemeral_signals_cross_nodes() {
    if !services() {
        return;
    }
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let cluster = Cluster::start(2, &db.url(), &format!("nats://{}", nats_addr()));
    let ada = connect(&cluster.url(0), "ada", &[]).await;
    let bob = connect(&cluster.url(1), "bob", &[]).await;
    let ch = create(&ada, "signals", &["bob"]).await;

    // A subscribe answered on node 1 covers a publish on node 0 made right after it.
    let mut sub = bob.subscribe("cursor.doc-1").await.unwrap();
    ada.publish("cursor.doc-1", serde_json::json!({"x": 3})).await.unwrap();
    let publication = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
    assert_eq!(publication.data, serde_json::json!({"x": 3}));

    let mut events = bob.events();
    ch.typing(true).await.unwrap();
    ch.ephemeral("reaction.burst", serde_json::json!({"n": 1})).await.unwrap();
    let mut got: BTreeMap<&str, bool> = BTreeMap::new();
    let wait = async {
        while got.len() < 2 {
            match events.next().await.unwrap().as_event() {
                Some(Event::Typing { user, .. }) if user == "ada" => {
                    got.insert("typing", true);
                }
                Some(Event::Ephemeral { subject, .. }) if subject == "reaction.burst" => {
                    got.insert("ephemeral", true);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("typing and ephemeral reach the other node");
}

/// Two nodes with the same webhook: every event goes out once per deployment, not once per
/// node (the lease row in PostgreSQL), in `seq` order, though sends alternate between nodes;
/// signed with the app secret the nodes share.
#[tokio::test]
async fn two_nodes_deliver_each_webhook_event_once_in_order() {
    if !services() {
        return;
    }
    let receiver = herald_testing::WebhookReceiver::start(|_| 200).await;
    let url = receiver.url();
    let db = ScratchDb::create(&scratch::admin_url()).unwrap();
    let cluster = Cluster::start_with(
        2,
        &db.url(),
        &format!("nats://{}", nats_addr()),
        &["--webhook", &url, "--webhook-retry-ms", "20"],
    );
    let t = token("ada");
    let http = reqwest::Client::new();
    let urls = [cluster.url(0), cluster.url(1)];
    let id = common::channel_with_messages(&http, &urls, &t, "hooked-cluster", 10).await;
    // channel_created, member_joined, 10 messages.
    let ours = |all: &[herald_testing::webhook::Received]| -> Vec<u64> {
        all.iter()
            .filter(|r| r.json["channel"] == id.as_str())
            .filter_map(|r| r.json["seq"].as_u64())
            .collect()
    };
    let all = receiver.wait_until(WAIT, |all| ours(all).len() >= 12).await;
    // Both nodes had every event in hand; give a duplicate the time of a few retries to show.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        receiver.wait_until(WAIT, |all| ours(all).len() > 12),
    )
    .await;
    let all = if receiver.all().len() > all.len() { receiver.all() } else { all };
    assert_eq!(ours(&all), (1..=12).collect::<Vec<u64>>(), "each event once, in seq order");
    for r in &all {
        assert!(herald_proto::private::verify_webhook(
            common::DEPLOYMENT_APP_SECRET.as_bytes(),
            &r.body,
            r.signature.as_deref().unwrap()
        ));
    }
}
