//! Resume at the engine boundary, over the in-memory store: what a failed replay does.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use herald_engine::{
    Backends, BrokerSink, Engine, EngineConfig, Grants, LocalBroker, Principal, ResumeEnd, SystemClock,
    UuidV7,
};
use herald_proto::frames::{CreateChannel, Request, SendMessage};
use herald_proto::model::UserInfo;
use herald_store::memory::{FailingLog, MemoryBlobStore};
use std::collections::BTreeMap;
use std::sync::Arc;

fn principal(user: &str) -> Principal {
    Principal {
        app: "default".into(),
        user: UserInfo { id: user.into(), name: None, kind: Default::default() },
        grants: Grants::from_claim(None),
    }
}

/// Regression: a store error in the middle of a replay was logged, and the live events held
/// back for that channel were then let through past the entries never replayed: a silent
/// hole. The resume must end as failed (the gateway closes with 1011 so the client resumes),
/// and nothing held may be queued.
#[tokio::test]
async fn replay_error_fails_the_resume_and_lets_no_held_event_through() {
    let broker = LocalBroker::new();
    let store = Arc::new(FailingLog::new(BrokerSink::new(broker.clone())));
    let backends = Backends {
        store: store.clone(),
        blobs: Arc::new(MemoryBlobStore::new()),
        broker,
        clock: Arc::new(SystemClock),
        ids: Arc::new(UuidV7),
    };
    let engine = Engine::start(backends, EngineConfig::default()).await.unwrap();
    let ada = principal("ada");
    let create = CreateChannel { name: Some("flaky".into()), ..Default::default() };
    let channel = engine.create_channel(&ada, create, 1).await.unwrap().channel.id;
    let send = |text: &str| Request::MessageSend {
        channel: channel.clone(),
        message: SendMessage { content: text.into(), ..Default::default() },
    };
    for i in 0..3 {
        engine.execute(&ada, None, send(&format!("missed {i}"))).await.unwrap();
    }

    store.fail_log(true);
    let resume = BTreeMap::from([(channel.clone(), 1u64)]);
    let (conn, mut rx) = engine.connect(&ada, &resume, |_| Bytes::from_static(b"hello")).await.unwrap();
    // Committed while the replay is pending: held back for after the replay.
    engine.execute(&ada, None, send("live")).await.unwrap();
    assert_eq!(engine.resume(&conn).await, ResumeEnd::Failed);

    assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"hello"));
    assert!(rx.try_recv().is_err(), "a held live event was queued past the unreplayed entries");
}
