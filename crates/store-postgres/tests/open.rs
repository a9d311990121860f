//! Opening against a server that is not there, or that never answers, fails with a clear
//! error within `connect_timeout`; an open store reports commits to its observer.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::testkit::{self, user};
use herald_store::{NullSink, StoreError};
use herald_store_postgres::scratch::ScratchDb;
use herald_store_postgres::{PgConfig, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn open_err(url: String) -> (String, Duration) {
    let mut config = PgConfig::new(url);
    config.connect_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), PgStore::open(config, Arc::new(NullSink)))
        .await
        .unwrap();
    match r {
        Err(StoreError::Backend(e)) => (e, start.elapsed()),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn open_fails_within_connect_timeout_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (e, took) = open_err(format!("postgres://postgres@127.0.0.1:{port}/x")).await;
    assert!(e.contains("postgres"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn open_fails_within_connect_timeout_when_the_server_never_answers() {
    // Accepts connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (e, took) = open_err(format!("postgres://postgres@127.0.0.1:{port}/x")).await;
    assert!(e.contains("postgres"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_observer_sees_each_commit() {
    let Some(db) = ScratchDb::or_skip("the_commit_observer_sees_each_commit") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    store.set_commit_observer(Arc::new(move |_latency, jobs| {
        s.fetch_add(jobs, Ordering::Relaxed);
    }));
    let ada = user("ada");
    let ch = testkit::create(&store, &ada, None, Policy::Open, &[]).await;
    for i in 0..5 {
        testkit::send(&store, &ada, &ch, &format!("m{i}")).await;
    }
    assert_eq!(seen.load(Ordering::Relaxed), 6, "one create and five sends");
    herald_store::Store::close(&store).await.unwrap();
}

/// A database at schema version 2 (main's E2EE schema, before the webhook and ban tables)
/// upgrades in place to the current version on open, keeping its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_upgrades_in_place() {
    let Some(db) = ScratchDb::or_skip("a_version_2_database_upgrades_in_place") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    drop(store);
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE hook_cursors, hook_deleted, hook_acks, hook_leases, channel_bans, hook_presence, hook_presence_acks, hook_presence_open;
             INSERT INTO users (app, id, name, kind) VALUES ('a', 'u', NULL, 'user');
             UPDATE schema_version SET version = 2;",
        )
        .await
        .unwrap();
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    let v: i32 = client.query_one("SELECT max(version) FROM schema_version", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
    for t in [
        "hook_cursors",
        "hook_deleted",
        "hook_acks",
        "hook_leases",
        "channel_bans",
        "hook_presence",
        "hook_presence_acks",
        "hook_presence_open",
    ] {
        let r: Option<String> = client.query_one("SELECT to_regclass($1)::text", &[&t]).await.unwrap().get(0);
        assert!(r.is_some(), "{t} missing after the upgrade");
    }
    let n: i64 = client.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    drop(store);
    drop(client);
    task.abort();
}

/// A database at schema version 3 (webhooks without the presence outbox) upgrades in place to
/// version 5 on open, keeping its webhook cursors, and the outbox works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_database_upgrades_in_place() {
    let Some(db) = ScratchDb::or_skip("a_version_3_database_upgrades_in_place") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    drop(store);
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE hook_presence, hook_presence_acks, hook_presence_open;
             INSERT INTO hook_cursors (hook, channel_id, seq) VALUES ('h', 'c', 7);
             DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (3);",
        )
        .await
        .unwrap();
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    let v: i32 = client.query_one("SELECT max(version) FROM schema_version", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
    let hooks = herald_store::Store::hooks(&store).unwrap();
    assert_eq!(hooks.hook_cursor("h", "c").await.unwrap(), 7, "version 3's cursors survive");
    let e = herald_store::hooks::PresenceEvent {
        key: "c:p:added".into(),
        app: "a".into(),
        channel: "c".into(),
        event: "participant_added".into(),
        data: "{}".into(),
        ts_ms: 1,
    };
    hooks.add_presence(std::slice::from_ref(&e)).await.unwrap();
    let rows = hooks.hook_presence("h", "c", 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| &r.event).collect::<Vec<_>>(), vec![&e]);
    drop(store);
    drop(client);
    task.abort();
}

/// A database at schema version 4 (the presence outbox without the participants present)
/// upgrades in place to version 5, keeping its outbox rows, and the participants present are
/// kept and written off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_database_upgrades_in_place() {
    use herald_store::hooks::{PresenceEvent, PresenceWrite};
    let Some(db) = ScratchDb::or_skip("a_version_4_database_upgrades_in_place") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    drop(store);
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE hook_presence_open;
             INSERT INTO hook_presence (key, app, channel_id, event, data, ts_ms)
                 VALUES ('c:p0:added', 'a', 'c', 'participant_added', '{}', 1);
             DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (4);",
        )
        .await
        .unwrap();
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    let v: i32 = client.query_one("SELECT max(version) FROM schema_version", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
    let hooks = herald_store::Store::hooks(&store).unwrap();
    let removal = PresenceEvent {
        key: "c:p1:removed".into(),
        app: "a".into(),
        channel: "c".into(),
        event: "participant_removed".into(),
        data: "{}".into(),
        ts_ms: 1,
    };
    hooks
        .write_presence(&[PresenceWrite::Present {
            channel: "c".into(),
            participant: "p1".into(),
            node: "n".into(),
            removal,
        }])
        .await
        .unwrap();
    assert_eq!(hooks.close_presence("n", 9).await.unwrap(), vec![("a".to_owned(), "c".to_owned())]);
    let keys: Vec<String> =
        hooks.hook_presence("h", "c", 10).await.unwrap().into_iter().map(|r| r.event.key).collect();
    assert_eq!(keys, vec!["c:p0:added".to_owned(), "c:p1:removed".to_owned()], "version 4's rows survive");
    drop(store);
    drop(client);
    task.abort();
}
