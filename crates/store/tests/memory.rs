//! The shared store suite against MemoryStore, and MemoryBlobStore's contract, which is
//! FsBlobStore's.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use herald_store::testkit::{self, RecordingSink, new_id, now_ms, user};
use herald_store::{BlobStore, Mutation, Store, StoreError};
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
    let blobs = MemoryBlobStore::new();
    let ch = new_id();
    let bytes = b"some file bytes".to_vec();
    let id = blobs.put(&ch, bytes.clone()).await.unwrap();
    assert_eq!(id, blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(id.len(), 64);
    assert_eq!(blobs.put(&ch, bytes.clone()).await.unwrap(), id, "same bytes, same id");
    assert_eq!(blobs.get(&ch, &id).await.unwrap(), Some(bytes.clone()));
    assert_eq!(blobs.get(&new_id(), &id).await.unwrap(), None, "blobs are scoped by channel");
    let unknown = blake3::hash(b"never stored").to_hex().to_string();
    assert_eq!(blobs.get(&ch, &unknown).await.unwrap(), None);
    for bad in ["", "../etc/passwd", &id.to_uppercase(), &id[..63], &format!("{id}0")] {
        assert!(matches!(blobs.get(&ch, bad).await, Err(StoreError::Invalid(_))), "{bad:?}");
    }
    assert!(matches!(blobs.put("../x", vec![1]).await, Err(StoreError::Invalid(_))));
    let other = new_id();
    blobs.put(&other, bytes.clone()).await.unwrap();
    blobs.delete_channel(&ch).await.unwrap();
    assert_eq!(blobs.get(&ch, &id).await.unwrap(), None);
    assert_eq!(blobs.get(&other, &id).await.unwrap(), Some(bytes), "other channels keep theirs");
    blobs.delete_channel(&ch).await.unwrap();
}
