//! The SDK against the real server (`herald_testing::TestServer`) over real sockets.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use herald_client::{
    Client, ClientConfig, ClientError, ClientEvent, ErrorCode, Event, EventStream, HistoryQuery,
    HistoryQueryExt, Message,
};
use herald_testing::TestServer;
use serde_json::json;
use std::future::Future;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn fast() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: WAIT,
        ..ClientConfig::default()
    }
}

async fn client(server: &TestServer, user: &str) -> Client {
    within(Client::connect_with(&server.url(), &server.token(user), fast())).await.unwrap()
}

/// The next `message` event of `channel`; fails on a chain error.
async fn next_message(events: &mut EventStream, channel: &str) -> Message {
    loop {
        match within(events.next()).await.expect("stream ended") {
            ClientEvent::Event(e) => {
                if let Event::Message { channel: c, message, .. } = *e
                    && c == channel
                {
                    return message;
                }
            }
            ClientEvent::ChainError(e) => panic!("chain error: {e}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn create_join_send_history_and_both_see_each_other() {
    let server = TestServer::start().await;
    let ada = client(&server, "ada").await;
    let mut ada_events = ada.events();
    assert_eq!(ada.user().id, "ada");

    let channel = within(ada.channels().create("project-x")).await.unwrap();
    assert_eq!(channel.name(), Some("project-x"));
    let again = within(ada.channels().create("project-x")).await.unwrap();
    assert_eq!(again.id(), channel.id(), "a second create of one's own name is a join");

    let hi = within(channel.send("hi")).await.unwrap();
    assert_eq!(hi.content, "hi");
    assert!(hi.client_id.is_some(), "the SDK keys every send");
    let own = next_message(&mut ada_events, channel.id()).await;
    assert_eq!(own.id, hi.id, "the sender receives its own message");

    let bob = client(&server, "bob").await;
    let mut bob_events = bob.events();
    let directory = within(bob.channels().directory()).await.unwrap();
    assert!(directory.iter().any(|d| d.name == "project-x"));
    let bobs = within(bob.channels().join("project-x")).await.unwrap();
    assert_eq!(bobs.id(), channel.id());
    let hello = within(bobs.send("hello ada")).await.unwrap();
    assert_eq!(next_message(&mut ada_events, channel.id()).await.id, hello.id);
    assert_eq!(next_message(&mut bob_events, channel.id()).await.id, hello.id);
    let reply = within(channel.send("hello bob")).await.unwrap();
    assert_eq!(next_message(&mut bob_events, channel.id()).await.id, reply.id);

    let page = within(channel.history(HistoryQuery::latest(100))).await.unwrap();
    let contents: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, vec!["hello bob", "hello ada", "hi"], "newest first");
    let older = within(channel.history(HistoryQuery::before(reply.seq, 1))).await.unwrap();
    assert_eq!(older.messages[0].id, hello.id);
    let newer = within(channel.history(HistoryQuery::after(hi.seq, 10))).await.unwrap();
    assert_eq!(newer.messages[0].id, hello.id, "oldest first");

    // Edits, reactions, reads, typing, deletes.
    let edited = within(channel.edit(&hi.id, "hi!")).await.unwrap();
    assert_eq!(edited.content, "hi!");
    let err = within(bobs.edit(&hi.id, "mine now")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAuthor));
    let reaction = within(bobs.react(&hi.id, "👍")).await.unwrap();
    assert!(!reaction.is_empty());
    within(bobs.read(&reply.id)).await.unwrap();
    within(bobs.typing(true)).await.unwrap();
    within(channel.delete_message(&reply.id)).await.unwrap();
    let page = within(channel.history(HistoryQuery::latest(100))).await.unwrap();
    assert!(page.messages.iter().all(|m| m.id != reply.id));

    // The raw log verifies, tombstone included.
    let log = within(bobs.log(0, 500)).await.unwrap();
    assert!(log.entries.len() >= 6);
    let list = within(bob.channels().list()).await.unwrap();
    assert!(list.iter().any(|c| c.id == channel.id()));

    // Blobs.
    let blob = within(bobs.put_blob(b"some bytes".to_vec())).await.unwrap();
    assert_eq!(blob.size, 10);
    assert_eq!(within(channel.get_blob(&blob.blob_id)).await.unwrap(), b"some bytes");

    // Errors carry the protocol code.
    let err = within(bob.channels().join("no-such-channel")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChannelNotFound), "{err:?}");
}

#[tokio::test]
async fn on_message_callback_sees_messages() {
    let server = TestServer::start().await;
    let ada = client(&server, "ada").await;
    let channel = within(ada.channels().create("callbacks")).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = channel.on_message(move |m| {
        let _ = tx.send(m.content);
    });
    within(channel.send("one")).await.unwrap();
    within(channel.send("two")).await.unwrap();
    assert_eq!(within(rx.recv()).await.unwrap(), "one");
    assert_eq!(within(rx.recv()).await.unwrap(), "two");
    listener.cancel();
}

#[tokio::test]
async fn subscribe_and_publish() {
    let server = TestServer::start().await;
    let ada = client(&server, "ada").await;
    let bob = client(&server, "bob").await;
    let mut lobby = within(ada.subscribe("presence:lobby")).await.unwrap();
    within(bob.publish("presence:lobby", json!({"status": "here"}))).await.unwrap();
    let p = within(lobby.next()).await.unwrap();
    assert_eq!(p.subject, "presence:lobby");
    assert_eq!(p.from, "bob");
    assert_eq!(p.data, json!({"status": "here"}));
    let err = within(bob.subscribe("user:ada")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");
}

#[tokio::test]
async fn expired_token_is_unauthorized() {
    let server = TestServer::start().await;
    let token = server.token_with("ada", None, -3600);
    let err = within(Client::connect_with(&server.url(), &token, fast())).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
}

#[tokio::test]
async fn restart_loses_nothing_and_duplicates_nothing() {
    let mut server = TestServer::start().await;
    let ada = client(&server, "ada").await;
    let mut events = ada.events();
    let channel = within(ada.channels().create("durable")).await.unwrap();
    let bob = client(&server, "bob").await;
    let bobs = within(bob.channels().join("durable")).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(within(channel.send(&format!("before {i}"))).await.unwrap().id);
    }
    // A subscription must survive the restart too.
    let mut lobby = within(ada.subscribe("lobby")).await.unwrap();

    within(server.restart()).await;

    for i in 0..3 {
        sent.push(within(bobs.send(&format!("after {i}"))).await.unwrap().id);
    }
    let late = client(&server, "bob").await;
    let lates = within(late.channels().join("durable")).await.unwrap();
    sent.push(within(lates.send("from a new client")).await.unwrap().id);

    let mut got: Vec<Message> = Vec::new();
    let mut reconnected = false;
    while got.len() < sent.len() {
        match within(events.next()).await.expect("stream ended") {
            ClientEvent::Event(e) => {
                if let Event::Message { message, .. } = *e {
                    got.push(message);
                }
            }
            ClientEvent::Connected(_) => reconnected = true,
            ClientEvent::ChainError(e) => panic!("chain error: {e}"),
            _ => {}
        }
    }
    assert!(reconnected, "the restart dropped the connection and the client came back");
    let ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>(), "every message once, in order");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));

    // The subscription was renewed after the reconnect.
    within(late.publish("lobby", json!(1))).await.unwrap();
    assert_eq!(within(lobby.next()).await.unwrap().data, json!(1));

    // Nothing more (no duplicate) is pending on the stream: a fresh message comes next.
    let last = within(channel.send("last")).await.unwrap();
    assert_eq!(next_message(&mut events, channel.id()).await.id, last.id);
}

#[tokio::test]
async fn truncated_resume_is_reported_and_the_hole_pages_over_the_verified_log() {
    let mut server = TestServer::start_with(|c| c.replay_cap = 2).await;
    // Ada comes back slowly, so that Bob's messages land while she is away.
    let slow = ClientConfig {
        backoff_initial: Duration::from_secs(3),
        backoff_max: Duration::from_secs(3),
        backoff_jitter: 0.0,
        ..fast()
    };
    let ada = within(Client::connect_with(&server.url(), &server.token("ada"), slow)).await.unwrap();
    let mut events = ada.events();
    let channel = within(ada.channels().create("busy")).await.unwrap();
    let first = within(channel.send("before")).await.unwrap();
    assert_eq!(next_message(&mut events, channel.id()).await.id, first.id);

    within(server.restart()).await;
    let bob = client(&server, "bob").await;
    let bobs = within(bob.channels().join("busy")).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(within(bobs.send(&format!("while away {i}"))).await.unwrap());
    }

    let from_seq = loop {
        match within(events.next()).await.unwrap() {
            ClientEvent::ResumeTruncated { channel: c, from_seq } if c == channel.id() => {
                break from_seq;
            }
            ClientEvent::Event(e) if matches!(*e, Event::Message { .. }) => {
                panic!("message before resume_truncated: {e:?}")
            }

            ClientEvent::ChainError(e) => panic!("chain error: {e}"),
            _ => {}
        }
    };
    let last = sent.last().unwrap();
    assert_eq!(from_seq, last.seq - 1, "the newest two entries are replayed");
    assert_eq!(next_message(&mut events, channel.id()).await.id, sent[3].id);
    assert_eq!(next_message(&mut events, channel.id()).await.id, last.id);

    // The hole, from the last seq Ada had, verifies against her chain.
    let hole = within(channel.log(first.seq, (from_seq - first.seq - 1) as u32)).await.unwrap();
    assert_eq!(hole.entries.first().unwrap().seq, first.seq + 1);
    assert_eq!(hole.entries.last().unwrap().seq, from_seq - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_stream_ends_with_lagged_and_on_message_pages_the_gap() {
    let server = TestServer::start().await;
    let small = ClientConfig { event_buffer: 3, ..fast() };
    let ada = within(Client::connect_with(&server.url(), &server.token("ada"), small)).await.unwrap();
    let bob = client(&server, "bob").await;
    let channel = within(ada.channels().create("laggy")).await.unwrap();
    let bobs = within(bob.channels().join("laggy")).await.unwrap();

    // A stream nobody reads, and a callback that blocks on its first message until released.
    let mut unread = ada.events();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<u64>();
    let mut first = true;
    let _listener = channel.on_message(move |m| {
        if first {
            first = false;
            // block_in_place: a plain blocking wait could strand a task in this worker's
            // LIFO slot and stall the runtime the server shares with the test.
            tokio::task::block_in_place(|| {
                let _ = release_rx.recv();
            });
        }
        let _ = got_tx.send(m.seq);
    });
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(within(bobs.send(&format!("m{i}"))).await.unwrap().seq);
    }
    // Everything has reached ada's connection once her own ping is answered after it.
    within(ada.ping()).await.unwrap();
    release_tx.send(()).unwrap();

    // The unread stream: at most its capacity of events, then Lagged, then the end.
    let mut n = 0;
    loop {
        match within(unread.recv()).await {
            Some(ClientEvent::Lagged { capacity }) => {
                assert_eq!(capacity, 3);
                break;
            }
            Some(_) => n += 1,
            None => panic!("ended without Lagged"),
        }
    }
    assert!(n <= 3, "{n} events queued beyond the capacity of 3");
    assert_eq!(within(unread.recv()).await, None);

    // The callback lagged too, yet saw every message exactly once, in order.
    let got: Vec<u64> = (0..sent.len()).map(|_| got_rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, sent);
    // A duplicate would arrive before the next new message.
    let next = within(bobs.send("after")).await.unwrap().seq;
    assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), next, "no message twice");
}

#[tokio::test]
async fn a_full_subscription_drops_and_counts_new_publications() {
    let server = TestServer::start().await;
    let small = ClientConfig { event_buffer: 2, ..fast() };
    let ada = within(Client::connect_with(&server.url(), &server.token("ada"), small)).await.unwrap();
    let bob = client(&server, "bob").await;
    let mut sub = within(ada.subscribe("cursors:doc")).await.unwrap();
    for i in 0..5 {
        within(bob.publish("cursors:doc", json!({"i": i}))).await.unwrap();
    }
    // Bob's publishes were answered after delivery to ada's connection, and ada's ping is
    // answered after what came before it on that connection: all five have been offered.
    within(ada.ping()).await.unwrap();
    assert_eq!(sub.dropped(), 3);
    assert_eq!(within(sub.recv()).await.unwrap().data, json!({"i": 0}));
    assert_eq!(within(sub.recv()).await.unwrap().data, json!({"i": 1}));
    within(bob.publish("cursors:doc", json!({"i": 5}))).await.unwrap();
    assert_eq!(within(sub.recv()).await.unwrap().data, json!({"i": 5}), "room again once read");
}
