//! Resume at the engine boundary, over the in-memory store: what a failed replay does.
#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use bytes::Bytes;
use herald_engine::{
    Backends, BrokerSink, Engine, EngineConfig, Grants, LocalBroker, Principal, ResumeEnd, SystemClock,
    UuidV7,
};
use herald_proto::frames::{CreateChannel, Request, SendMessage};
use herald_proto::model::{Channel, ChannelSummary, DirectoryEntry, Member, Message, UserInfo};
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use herald_store::{Applied, HistoryRange, Membership, Mutation, Store, StoreError, StoredEntry};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The memory store, whose raw log reads fail once `fail_log` is set.
struct FlakyLog {
    inner: MemoryStore,
    fail_log: AtomicBool,
}

#[async_trait]
impl Store for FlakyLog {
    async fn apply(&self, m: Mutation) -> herald_store::Result<Applied> {
        self.inner.apply(m).await
    }
    async fn channel(&self, app: &str, id_or_name: &str) -> herald_store::Result<Option<Channel>> {
        self.inner.channel(app, id_or_name).await
    }
    async fn members(&self, channel_id: &str) -> herald_store::Result<Vec<Member>> {
        self.inner.members(channel_id).await
    }
    async fn channels_of(&self, app: &str, user: &str) -> herald_store::Result<Vec<ChannelSummary>> {
        self.inner.channels_of(app, user).await
    }
    async fn directory(
        &self,
        app: &str,
        user: &str,
        admin: bool,
    ) -> herald_store::Result<Vec<DirectoryEntry>> {
        self.inner.directory(app, user, admin).await
    }
    async fn history(
        &self,
        channel_id: &str,
        range: &HistoryRange,
    ) -> herald_store::Result<(Vec<Message>, bool)> {
        self.inner.history(channel_id, range).await
    }
    async fn log(
        &self,
        channel_id: &str,
        after: u64,
        limit: u32,
    ) -> herald_store::Result<(Vec<StoredEntry>, bool)> {
        if self.fail_log.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk on fire".into()));
        }
        self.inner.log(channel_id, after, limit).await
    }
    async fn head_seq(&self, channel_id: &str) -> herald_store::Result<u64> {
        self.inner.head_seq(channel_id).await
    }
    async fn all_memberships(&self) -> herald_store::Result<Vec<Membership>> {
        self.inner.all_memberships().await
    }
    async fn close(&self) -> herald_store::Result<()> {
        self.inner.close().await
    }
    async fn health(&self) -> herald_store::Result<()> {
        self.inner.health().await
    }
}

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
    let store = Arc::new(FlakyLog {
        inner: MemoryStore::new(BrokerSink::new(broker.clone())),
        fail_log: AtomicBool::new(false),
    });
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

    store.fail_log.store(true, Ordering::SeqCst);
    let resume = BTreeMap::from([(channel.clone(), 1u64)]);
    let (conn, mut rx) = engine.connect(&ada, &resume, |_| Bytes::from_static(b"hello")).await.unwrap();
    // Committed while the replay is pending: held back for after the replay.
    engine.execute(&ada, None, send("live")).await.unwrap();
    assert_eq!(engine.resume(&conn).await, ResumeEnd::Failed);

    assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"hello"));
    assert!(rx.try_recv().is_err(), "a held live event was queued past the unreplayed entries");
}
