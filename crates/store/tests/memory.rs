//! The shared store suite against MemoryStore, and MemoryBlobStore's contract, which is
//! FsBlobStore's.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use herald_store::testkit::{self, RecordingSink, new_id, now_ms, user};
use herald_store::{Mutation, Store, StoreError};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_testkit() {
    testkit::run_all(|sink| async move { Arc::new(MemoryStore::new(sink)) as Arc<dyn Store> }).await;
}

#[tokio::test]
async fn refused_mutation_changes_nothing_and_reaches_no_sink() {
    let sink = RecordingSink::new();
    let s = MemoryStore::new(sink.clone());
    let ada = user("ada");
    let ch = testkit::create(&s, &ada, None, Policy::Open, &[]).await;
    let m = testkit::send(&s, &ada, &ch, "hi").await;
    let seen = sink.applied().len();
    let head = s.head_seq(&ch).await.unwrap();
    // A reaction id reused: refused after the membership and message checks passed.
    let rid = new_id();
    let react = |id: String| Mutation::React {
        actor: ada.clone(),
        channel: ch.clone(),
        id,
        message_id: m.id.clone(),
        emoji: "x".into(),
        guard: herald_store::Guard::member("ada"),
        ts_ms: now_ms(),
    };
    s.apply(react(rid.clone())).await.unwrap();
    let head = head + 1;
    assert!(matches!(s.apply(react(rid)).await, Err(StoreError::Backend(_))));
    assert_eq!(s.head_seq(&ch).await.unwrap(), head);
    assert_eq!(sink.applied().len(), seen + 1);
    let (msgs, _) =
        s.history(&ch, &herald_store::HistoryRange { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(msgs[0].reactions.as_ref().map(Vec::len), Some(1));
    testkit::verify_log(&s, &ch).await;
}

#[tokio::test]
async fn closed_store_refuses_writes_and_still_reads() {
    let s = MemoryStore::default();
    let ada = user("ada");
    let ch = testkit::create(&s, &ada, None, Policy::Open, &[]).await;
    s.close().await.unwrap();
    assert!(matches!(testkit::try_send(&s, &ada, &ch, "late", None, None).await, Err(StoreError::Closed)));
    assert_eq!(testkit::verify_log(&s, &ch).await.len(), 2);
}

#[tokio::test]
async fn blobs_round_trip_by_blake3_id() {
    testkit::blob_store_contract(&MemoryBlobStore::new()).await;
}
