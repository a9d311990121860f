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
