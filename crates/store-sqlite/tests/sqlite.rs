//! SQLite-specific guarantees: persistence across reopen, erasure from every file, batching.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::testkit::{self, RecordingSink, new_id, now_ms, user};
use herald_store::{Mutation, NullSink, Store};
use herald_store_sqlite::{FsBlobStore, SqliteConfig, SqliteStore};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn open(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(SqliteConfig::new(dir), Arc::new(NullSink)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ada = user("ada");
    let store = open(dir.path());
    let ch = testkit::create(&*store, &ada, Some("kept"), Policy::Open, &["bob"]).await;
    testkit::send(&*store, &ada, &ch, "before restart").await;
    let head = store.head_seq(&ch).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        testkit::try_send(&*store, &ada, &ch, "after close", None, None).await,
        Err(herald_store::StoreError::Closed)
    ));
    drop(store);

    let sink = RecordingSink::new();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path()), sink.clone()).unwrap());
    let c = store.channel(testkit::APP, "kept").await.unwrap().unwrap();
    assert_eq!((c.id.as_str(), c.last_seq), (ch.as_str(), head));
    let m = testkit::send(&*store, &ada, &ch, "after restart").await;
    assert_eq!(m.seq, head + 1);
    let log = testkit::verify_log(&*store, &ch).await;
    assert_eq!(log.len() as u64, head + 1);
    let (msgs, _) =
        store.history(&ch, &herald_store::HistoryRange { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["after restart", "before restart"]
    );
    assert_eq!(store.members(&ch).await.unwrap().len(), 2);
    store.close().await.unwrap();
}

/// Every file of the data directory, searched for `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_delete_leaves_no_trace_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    // Enough other traffic that the message shares pages with rows that stay.
    for i in 0..20 {
        testkit::send(&*store, &ada, &ch, &format!("ordinary message {i}")).await;
    }
    let marker = format!("MARKER-{}-ERASE-ME", new_id());
    let edited = format!("EDITED-{}-ERASE-ME", new_id());
    let m = testkit::send(&*store, &ada, &ch, &marker).await;
    store
        .apply(Mutation::Edit {
            actor: ada.clone(),
            guard: testkit::own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            content: edited.clone(),
            ts_ms: now_ms(),
        })
        .await
        .unwrap();
    for i in 0..5 {
        testkit::send(&*store, &ada, &ch, &format!("later message {i}")).await;
    }
    assert!(
        !files_containing(dir.path(), marker.as_bytes()).is_empty(),
        "the scan finds the marker before the delete"
    );
    assert!(!files_containing(dir.path(), edited.as_bytes()).is_empty());

    store
        .apply(Mutation::Delete {
            actor: ada.clone(),
            guard: testkit::own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            ts_ms: now_ms(),
        })
        .await
        .unwrap();
    assert_eq!(
        files_containing(dir.path(), marker.as_bytes()),
        Vec::<String>::new(),
        "deleted text survives on disk"
    );
    assert_eq!(
        files_containing(dir.path(), edited.as_bytes()),
        Vec::<String>::new(),
        "edited text survives on disk"
    );
    assert!(!files_containing(dir.path(), b"ordinary message 7").is_empty());
    testkit::verify_log(&*store, &ch).await;
    store.close().await.unwrap();
    assert_eq!(files_containing(dir.path(), marker.as_bytes()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let observed = Arc::new(AtomicU64::new(0));
    let o = observed.clone();
    store.set_commit_observer(Arc::new(move |_latency, n| {
        o.fetch_add(n as u64, Ordering::Relaxed);
    }));
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    let base = store.stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let (store, ada, ch) = (store.clone(), ada.clone(), ch.clone());
        tasks.spawn(async move {
            testkit::try_send(&*store, &ada, &ch, &format!("n{i}"), None, None).await.map(|_| ())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let stats = store.stats();
    let (jobs, commits) = (stats.jobs - base.jobs, stats.commits - base.commits);
    assert_eq!(jobs, 2000);
    assert!(commits < jobs / 2, "{commits} commits for {jobs} jobs: not batching");
    assert_eq!(observed.load(Ordering::Relaxed), stats.jobs, "the observer sees every job's batch");
    assert_eq!(store.head_seq(&ch).await.unwrap(), 2 + 2000);
    testkit::verify_log(&*store, &ch).await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_does_not_spoil_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = testkit::create(&*store, &ada, None, Policy::Invite, &[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (store, who, ch) =
            (store.clone(), if i % 2 == 0 { ada.clone() } else { bob.clone() }, ch.clone());
        tasks.spawn(async move {
            (i % 2 == 0, testkit::try_send(&*store, &who, &ch, "x", None, None).await.is_ok())
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (member, ok) = r.unwrap();
        assert_eq!(member, ok);
    }
    assert_eq!(testkit::verify_log(&*store, &ch).await.len(), 2 + 100);
    store.close().await.unwrap();
}

/// A send runs without a savepoint of its own (its checks all come before its first write).
/// If one of its writes fails all the same, here a message id that is already taken, which
/// the message row's key refuses after the entry is in, the batch fails whole: no
/// entry without its message, no gap in the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_in_its_writes_leaves_no_half_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    let first = testkit::send(&*store, &ada, &ch, "first").await;
    let head = store.head_seq(&ch).await.unwrap();
    let again = store
        .apply(Mutation::Send {
            actor: ada.clone(),
            guard: testkit::own(&ada),
            channel: ch.clone(),
            id: first.id.clone(),
            kind: "chat.text".into(),
            content: "same id".into(),
            reply_to: None,
            client_id: None,
            ts_ms: now_ms(),
        })
        .await;
    assert!(matches!(again, Err(herald_store::StoreError::Backend(_))), "{again:?}");
    assert_eq!(store.head_seq(&ch).await.unwrap(), head);
    let next = testkit::send(&*store, &ada, &ch, "next").await;
    assert_eq!(next.seq, head + 1);
    assert_eq!(testkit::verify_log(&*store, &ch).await.len() as u64, head + 1);
    let (msgs, _) =
        store.history(&ch, &herald_store::HistoryRange { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["next", "first"]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn blobs_round_trip_by_blake3_id() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::open(dir.path().to_path_buf()).unwrap();
    testkit::blob_store_contract(&blobs).await;
    assert!(dir.path().join("blobs").is_dir());
}

/// `/healthz` relies on this: once the writer has stopped, the store says so.
#[tokio::test]
async fn health_fails_once_the_writer_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.health().await.unwrap();
    store.close().await.unwrap();
    let e = store.health().await.unwrap_err();
    assert!(e.to_string().contains("writer is not running"), "{e}");
}
