//! Several `PgStore`s on one database, as several `herald serve` nodes: the database orders
//! each channel's log, so concurrent appends from every node stay gapless and chained.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::testkit::{self, RecordingSink, user};
use herald_store::{Outcome, Store};
use herald_store_postgres::scratch::ScratchDb;
use herald_store_postgres::{PgConfig, PgStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn nodes(db: &ScratchDb, n: usize) -> Vec<(Arc<PgStore>, Arc<RecordingSink>)> {
    let mut out = Vec::new();
    // Opened concurrently: the first starts on an empty database migrate under the lock.
    let opens = (0..n).map(|_| {
        let sink = RecordingSink::new();
        let url = db.url();
        async move { (Arc::new(PgStore::open(PgConfig::new(url), sink.clone()).await.unwrap()), sink) }
    });
    out.extend(futures::future::join_all(opens).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_append_to_one_channel_gapless_and_chained() {
    let Some(db) = ScratchDb::or_skip("three_nodes_append_to_one_channel_gapless_and_chained") else {
        return;
    };
    let nodes = nodes(&db, 3).await;
    let ada = user("ada");
    let ch = testkit::create(&*nodes[0].0, &ada, Some("general"), Policy::Open, &[]).await;
    let base = nodes[0].0.head_seq(&ch).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (store, sink)) in nodes.iter().enumerate() {
        for t in 0..10 {
            let (store, sink, ch, ada) = (store.clone(), sink.clone(), ch.clone(), ada.clone());
            tasks.spawn(async move {
                let mut out = Vec::new();
                for i in 0..10 {
                    let text = format!("node{n} task{t} msg{i}");
                    let a = testkit::try_send(&*store, &ada, &ch, &text, None, None).await.unwrap();
                    let e = a.entries.into_iter().next().unwrap();
                    assert_eq!(
                        sink.count_entry(&ch, &e.hash),
                        1,
                        "the node's sink saw it before apply resolved"
                    );
                    out.push((text, e));
                }
                out
            });
        }
    }
    let mut sent = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sent.extend(r.unwrap());
    }
    assert_eq!(sent.len(), 300);
    let log = testkit::verify_log(&*nodes[1].0, &ch).await;
    assert_eq!(log.len() as u64, base + 300, "gapless 1..N across three nodes");
    let by_seq: HashMap<u64, _> = log.iter().map(|e| (e.seq, e)).collect();
    let mut seen = std::collections::HashSet::new();
    for (text, e) in &sent {
        let stored = by_seq.get(&e.seq).unwrap();
        assert_eq!(stored.hash, e.hash, "the answer of each send is the entry in the log");
        assert_eq!(stored.content.as_deref(), Some(text.as_str()));
        assert!(seen.insert(e.seq), "each send has its own seq");
    }
    for (s, _) in &nodes {
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_appending_to_several_channels_do_not_deadlock() {
    let Some(db) = ScratchDb::or_skip("nodes_appending_to_several_channels_do_not_deadlock") else { return };
    let nodes = nodes(&db, 3).await;
    let ada = user("ada");
    let mut chans = Vec::new();
    for _ in 0..5 {
        chans.push(testkit::create(&*nodes[0].0, &ada, None, Policy::Open, &[]).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (store, _)) in nodes.iter().enumerate() {
        for t in 0..8 {
            let (store, chans, ada) = (store.clone(), chans.clone(), ada.clone());
            tasks.spawn(async move {
                for i in 0..15 {
                    // Each task walks the channels in its own order, so batches of different
                    // nodes name the same channels in different orders.
                    let ch = &chans[(n * 7 + t * 3 + i) % chans.len()];
                    testkit::try_send(&*store, &ada, ch, &format!("{n} {t} {i}"), None, None).await.unwrap();
                }
            });
        }
    }
    let all = async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("no deadlock");
    let mut total = 0;
    for ch in &chans {
        total += testkit::verify_log(&*nodes[2].0, ch).await.len();
    }
    // Each channel: channel_created and member_joined, then its messages.
    assert_eq!(total, 5 * 2 + 3 * 8 * 15);
    for (s, _) in &nodes {
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_delete_removes_the_content_rows() {
    let Some(db) = ScratchDb::or_skip("hard_delete_removes_the_content_rows") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(herald_store::NullSink)).await.unwrap();
    let ada = user("ada");
    let ch = testkit::create(&store, &ada, None, Policy::Open, &[]).await;
    let secret = "the secret text 7f3a";
    let m = testkit::send(&store, &ada, &ch, secret).await;
    let edited = "the edited secret 9c1d";
    let edit = herald_store::Mutation::Edit {
        actor: ada.clone(),
        channel: ch.clone(),
        message_id: m.id.clone(),
        content: edited.into(),
        guard: testkit::own(&ada),
        ts_ms: testkit::now_ms(),
    };
    store.apply(edit).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let count = |pattern: &'static str| {
        let client = &client;
        async move {
            let q = "SELECT (SELECT count(*) FROM entry_contents WHERE content LIKE $1) \
                     + (SELECT count(*) FROM messages WHERE content LIKE $1)";
            client.query_one(q, &[&pattern]).await.unwrap().get::<_, i64>(0)
        }
    };
    assert_eq!(count("%secret%").await, 3, "message entry, edit entry, message row");
    let delete = herald_store::Mutation::Delete {
        actor: ada.clone(),
        channel: ch.clone(),
        message_id: m.id.clone(),
        guard: testkit::own(&ada),
        ts_ms: testkit::now_ms(),
    };
    assert!(matches!(store.apply(delete).await.unwrap().outcome, Outcome::Done));
    assert_eq!(count("%secret%").await, 0, "no row holds the text");
    let log = testkit::verify_log(&store, &ch).await;
    assert!(log.iter().all(|e| e.content.as_deref().is_none_or(|c| !c.contains("secret"))));
    // The background vacuum after the delete removes the dead tuples: counted exactly by
    // pgstattuple (the statistics views lag behind).
    client.batch_execute("CREATE EXTENSION IF NOT EXISTS pgstattuple").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = "SELECT dead_tuple_count FROM pgstattuple('entry_contents')";
        let dead: i64 = client.query_one(q, &[]).await.unwrap().get(0);
        if dead == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{dead} dead tuples left in entry_contents");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_in_a_batch_fails_alone() {
    let Some(db) = ScratchDb::or_skip("a_write_failing_in_a_batch_fails_alone") else { return };
    let store =
        Arc::new(PgStore::open(PgConfig::new(db.url()), Arc::new(herald_store::NullSink)).await.unwrap());
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    let taken = testkit::send(&*store, &ada, &ch, "first").await.id;
    // Sends queued together, every third reusing a message id: those fail in the database
    // (the unique index), after their checks passed, and must fail alone.
    let sends = (0..30).map(|i| {
        let (store, ada, ch) = (store.clone(), ada.clone(), ch.clone());
        let id = if i % 3 == 0 { taken.clone() } else { testkit::new_id() };
        async move {
            let m = herald_store::Mutation::Send {
                actor: ada.clone(),
                channel: ch,
                id,
                kind: "chat.text".into(),
                content: format!("n{i}"),
                reply_to: None,
                client_id: None,
                guard: herald_store::Guard::member("ada"),
                ts_ms: testkit::now_ms(),
            };
            store.apply(m).await
        }
    });
    let results = futures::future::join_all(sends).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i % 3 != 0, "send {i}: {:?}", r.as_ref().err());
    }
    let log = testkit::verify_log(&*store, &ch).await;
    assert_eq!(log.len(), 2 + 1 + 20);
    assert!(store.stats().commits < 25, "the sends were batched: {:?}", store.stats());
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_creating_one_name_get_one_channel() {
    let Some(db) = ScratchDb::or_skip("two_nodes_creating_one_name_get_one_channel") else { return };
    let nodes = nodes(&db, 2).await;
    let ada = user("ada");
    for round in 0..10 {
        let name = format!("room{round}");
        let creates = nodes.iter().map(|(s, _)| {
            let m = herald_store::Mutation::CreateChannel {
                actor: ada.clone(),
                id: testkit::new_id(),
                name: Some(herald_proto::ChannelName::parse(&name).unwrap()),
                title: None,
                encrypted: false,
                policy: Policy::Open,
                members: vec![],
                ts_ms: testkit::now_ms(),
            };
            s.apply(m)
        });
        let rs = futures::future::join_all(creates).await;
        let ids: Vec<String> =
            rs.iter().map(|r| r.as_ref().unwrap().channel.as_ref().unwrap().id.clone()).collect();
        assert_eq!(ids[0], ids[1], "one channel for the name");
        let created = rs
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap().outcome, Outcome::Channel { created: true }))
            .count();
        assert_eq!(created, 1);
        testkit::verify_log(&*nodes[0].0, &ids[0]).await;
    }
    for (s, _) in &nodes {
        s.close().await.unwrap();
    }
}

/// Sends queued together are planned and pipelined as one run; a refusal (not a member) or an
/// idempotent repeat (a `client_id` used earlier in the same run) inside the run must come out
/// exactly as one at a time would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_sends_answer_refusals_and_repeats_as_one_at_a_time() {
    let Some(db) = ScratchDb::or_skip("planned_sends_answer_refusals_and_repeats_as_one_at_a_time") else {
        return;
    };
    let store =
        Arc::new(PgStore::open(PgConfig::new(db.url()), Arc::new(herald_store::NullSink)).await.unwrap());
    let (ada, eve) = (user("ada"), user("eve"));
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    for round in 0..5 {
        let sends = (0..40).map(|i| {
            let (store, ch) = (store.clone(), ch.clone());
            // Every 7th by a non-member; every 5th reuses the key of the one before it.
            let actor = if i % 7 == 3 { eve.clone() } else { ada.clone() };
            let key = format!("r{round}k{}", if i % 5 == 4 { i - 1 } else { i });
            async move {
                let m = herald_store::Mutation::Send {
                    guard: herald_store::Guard::member(&actor.user.id),
                    actor,
                    channel: ch,
                    id: testkit::new_id(),
                    kind: "chat.text".into(),
                    content: format!("r{round} n{i}"),
                    reply_to: None,
                    client_id: Some(key),
                    ts_ms: testkit::now_ms(),
                };
                store.apply(m).await
            }
        });
        let results = futures::future::join_all(sends).await;
        let mut by_key: HashMap<String, String> = HashMap::new();
        for (i, r) in results.into_iter().enumerate() {
            if i % 7 == 3 {
                assert!(matches!(r, Err(herald_store::StoreError::NotMember)), "send {i}: {r:?}");
                continue;
            }
            let a = r.unwrap();
            let Outcome::Message { message, duplicate } = a.outcome else {
                panic!("send {i}: not a message")
            };
            let key = message.client_id.clone().unwrap();
            match by_key.get(&key) {
                Some(first) => {
                    assert!(duplicate, "send {i} repeats a key");
                    assert_eq!(&message.id, first, "a repeat answers the original");
                    assert!(a.entries.is_empty());
                }
                None => {
                    // The original of a repeated key may be by eve (refused): then this one is new.
                    by_key.insert(key, message.id.clone());
                    assert!(!duplicate, "send {i}");
                    assert_eq!(a.entries.len(), 1);
                }
            }
        }
    }
    testkit::verify_log(&*store, &ch).await;
    store.close().await.unwrap();
}

/// Joins, sends and read markers from many tasks at once land in shared batches, where planned
/// runs of sends and ordinary jobs alternate: every answer matches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_writes_in_shared_batches_match_the_log() {
    let Some(db) = ScratchDb::or_skip("mixed_writes_in_shared_batches_match_the_log") else { return };
    let store =
        Arc::new(PgStore::open(PgConfig::new(db.url()), Arc::new(herald_store::NullSink)).await.unwrap());
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..12 {
        let (store, ch) = (store.clone(), ch.clone());
        tasks.spawn(async move {
            let me = user(&format!("user{t}"));
            testkit::join(&*store, &me, &ch).await.unwrap();
            let mut last = None;
            for i in 0..6 {
                let m = testkit::send(&*store, &me, &ch, &format!("{t}/{i}")).await;
                if i % 2 == 1 {
                    let read = herald_store::Mutation::Read {
                        actor: me.clone(),
                        channel: ch.clone(),
                        message_id: m.id.clone(),
                        guard: herald_store::Guard::member(&me.user.id),
                    };
                    store.apply(read).await.unwrap();
                }
                last = Some(m);
            }
            (me.user.id.clone(), last.unwrap())
        });
    }
    let mut lasts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lasts.push(r.unwrap());
    }
    let log = testkit::verify_log(&*store, &ch).await;
    assert_eq!(log.len(), 2 + 12 * (1 + 6));
    let members = store.members(&ch).await.unwrap();
    for (user, last) in &lasts {
        let m = members.iter().find(|m| &m.user == user).unwrap();
        assert_eq!(m.last_read, last.seq, "{user} read up to its last message");
        let e = log.iter().find(|e| e.seq == last.seq).unwrap();
        assert_eq!(e.extra.id.as_deref(), Some(last.id.as_str()));
    }
    store.close().await.unwrap();
}

/// A job with many writes (a channel created with 30 members) followed in the same batch by a
/// refused one: the refusal's rollback must not reach any of the first job's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_a_job_with_many_writes_keeps_them_all() {
    let Some(db) = ScratchDb::or_skip("a_refusal_after_a_job_with_many_writes_keeps_them_all") else {
        return;
    };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(herald_store::NullSink)).await.unwrap();
    let ada = user("ada");
    for round in 0..5 {
        let id = testkit::new_id();
        let members: Vec<String> = (0..30).map(|i| format!("u{round}_{i}")).collect();
        let create = herald_store::Mutation::CreateChannel {
            actor: ada.clone(),
            id: id.clone(),
            name: None,
            title: None,
            encrypted: false,
            policy: Policy::Open,
            members: members.clone(),
            ts_ms: testkit::now_ms(),
        };
        let refused = herald_store::Mutation::Join {
            actor: user("bob"),
            channel: testkit::new_id(),
            guard: herald_store::Guard::none(),
            ts_ms: testkit::now_ms(),
        };
        let (a, b) = futures::future::join(store.apply(create), store.apply(refused)).await;
        a.unwrap();
        assert!(matches!(b, Err(herald_store::StoreError::ChannelNotFound)), "{b:?}");
        assert_eq!(store.members(&id).await.unwrap().len(), 31);
        assert_eq!(testkit::verify_log(&store, &id).await.len(), 1 + 31);
    }
    store.close().await.unwrap();
}
