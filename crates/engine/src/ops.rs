//! The [`Engine`]: every request of PROTOCOL.md §4 with its validation, authorisation and
//! limits, appends through the store, and resume.

use crate::broker::{Broker, ChannelEvent, Envelope};
use crate::conn::{ConnShared, OutboundRx, QueueLimits};
use crate::error::EngineError;
use crate::events::{event_of, to_bytes};
use crate::hub::Hub;
use crate::rules;
use crate::throttle::{Throttle, Verdict};
use crate::{Clock, IdGen, Principal};
use bytes::Bytes;
use herald_proto::frames::{
    ChannelListOk, ChannelOk, ConnectOk, CreateChannel, DirectoryOk, Event, HistoryPage, HistoryQuery,
    LogPage, MessageOk, ReactionOk, Request, SendMessage,
};
use herald_proto::model::{Channel, LogEntry, Member, Policy, UserInfo};
use herald_proto::names::looks_like_uuid;
use herald_proto::{ChannelName, ClientId, Subject, UserId};
use herald_store::{Actor, DynBlobStore, DynStore, HistoryRange, Mutation, Outcome, StoredEntry};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a `subscribe` waits for the broker to confirm its subscription before it fails
/// with `internal` (a networked broker that is down must not hang the request).
const WATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Limits and sizes of the engine; every one is configurable from the server's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest `content` (and `data` of publish/ephemeral, serialized) in bytes.
    pub max_content_bytes: usize,
    /// Largest history page (`limit`), and of a raw log page.
    pub history_page_max: u32,
    /// Entries replayed per channel on resume before `resume_truncated`.
    pub replay_cap: u64,
    /// Subjects one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Largest blob in bytes.
    pub max_blob_bytes: usize,
    /// Members a `channel.create` may list.
    pub max_initial_members: usize,
    /// Frames queued per connection; a consumer further behind is kicked (4008).
    pub queue_frames: usize,
    /// Bytes queued per connection, the same way.
    pub queue_bytes: usize,
    /// `typing` of one user in one channel fans out at most once per this many ms (a change
    /// of `is_typing` always does).
    pub typing_interval_ms: u64,
    /// `read` of one user in one channel is accepted at most once per this many ms.
    pub read_interval_ms: u64,
    /// The app secrets that sign private-channel joins (§9); an app without one has no
    /// private channels.
    pub app_secrets: crate::AppSecrets,
    /// DMs older than this are erased from their inbox (§7, `--dm-ttl`).
    pub dm_ttl_ms: u64,
    /// Entries one device inbox holds at most; `dm.send` past it is `rate_limited`.
    pub dm_inbox_max: u64,
    /// Rooms and streams (§8).
    pub rooms: crate::rooms::RoomsConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_content_bytes: 64 * 1024,
            history_page_max: 500,
            replay_cap: 1000,
            max_subscriptions: 1024,
            max_blob_bytes: 16 * 1024 * 1024,
            max_initial_members: 1000,
            queue_frames: 1024,
            queue_bytes: 8 << 20,
            typing_interval_ms: 1000,
            read_interval_ms: 250,
            app_secrets: crate::AppSecrets::default(),
            dm_ttl_ms: 30 * 24 * 3600 * 1000,
            dm_inbox_max: 10_000,
            rooms: crate::rooms::RoomsConfig::default(),
        }
    }
}

/// What an engine runs on: the store (opened with a [`crate::BrokerSink`] over `broker`), the
/// blob store, the broker, and the injected clock and ids.
pub struct Backends {
    pub store: DynStore,
    pub blobs: DynBlobStore,
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGen>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// The empty `ok`: `{}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Empty {}

/// The `ok` payload of a request.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OkReply {
    Empty(Empty),
    Connect(ConnectOk),
    Channel(ChannelOk),
    Message(MessageOk),
    Reaction(ReactionOk),
    ChannelList(ChannelListOk),
    Directory(DirectoryOk),
    History(HistoryPage),
    DmSend(herald_proto::frames::DmSendOk),
}

/// Counters the server exports.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub messages_in: AtomicU64,
}

/// How [`Engine::resume`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeEnd {
    /// Every channel replayed; live from now on.
    Done,
    /// The connection went away.
    Gone,
    /// The store failed mid-replay: close the connection (1011) so the client resumes again.
    Failed,
}

/// A registered connection. Dropping it unregisters the connection from the hub.
pub struct ConnHandle {
    shared: Arc<ConnShared>,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    /// Channels to replay and the `seq` to replay after, set by `connect`, taken by `resume`.
    resume: Mutex<Vec<(String, u64)>>,
}

impl ConnHandle {
    pub fn shared(&self) -> &Arc<ConnShared> {
        &self.shared
    }
}

impl Engine {
    pub(crate) fn actor_of(who: &Principal) -> Actor {
        Self::actor(who)
    }

    pub(crate) async fn lookup_channel(
        &self,
        who: &Principal,
        channel: &str,
    ) -> Result<Channel, EngineError> {
        self.lookup(who, channel).await
    }

    pub(crate) async fn member(&self, who: &Principal, id: &str) -> Result<bool, EngineError> {
        self.is_member(who, id).await
    }

    pub(crate) async fn apply_mutation(
        &self,
        m: Mutation,
        channel: &str,
    ) -> Result<herald_store::Applied, EngineError> {
        self.apply(m, channel).await
    }
}

impl std::ops::Deref for ConnHandle {
    type Target = ConnShared;
    fn deref(&self) -> &ConnShared {
        &self.shared
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        for subject in self.hub.unregister(&self.shared) {
            self.broker.unwatch_subject(&self.shared.app, &subject);
        }
    }
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

/// (app, user id, display name, kind) of a user whose details the store already has.
type KnownUser = (String, String, Option<String>, &'static str);

/// The node. Cheap to share: `Arc<Engine>`.
pub struct Engine {
    pub(crate) store: DynStore,
    pub(crate) blobs: DynBlobStore,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGen>,
    pub(crate) config: EngineConfig,
    known_users: Mutex<HashSet<KnownUser>>,
    typing_throttle: Throttle,
    read_throttle: Throttle,
    rooms: Arc<crate::rooms::Rooms>,
    pub stats: EngineStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}

impl Engine {
    /// Builds the engine: its hub, subscribed to the broker (memberships are loaded per user as
    /// they connect). The store must have been opened with a [`crate::BrokerSink`] over the
    /// same broker, so that what it commits reaches every node's hub.
    pub async fn start(backends: Backends, config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let Backends { store, blobs, broker, clock, ids } = backends;
        let hub = Hub::new(QueueLimits { frames: config.queue_frames, bytes: config.queue_bytes });
        let typing_throttle = Throttle::new(config.typing_interval_ms);
        let read_throttle = Throttle::new(config.read_interval_ms);
        broker.subscribe(hub.clone());
        let rooms = crate::rooms::Rooms::start(broker.clone(), ids.clone(), config.rooms.clone());
        Ok(Arc::new(Engine {
            store,
            blobs,
            broker,
            hub,
            clock,
            ids,
            config,
            known_users: Mutex::new(HashSet::new()),
            typing_throttle,
            read_throttle,
            rooms,
            stats: EngineStats::default(),
        }))
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The room registry (§8).
    pub fn rooms(&self) -> &Arc<crate::rooms::Rooms> {
        &self.rooms
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub(crate) fn ids(&self) -> &Arc<dyn IdGen> {
        &self.ids
    }

    /// The broker every event leaves through (the server's webhook dispatcher subscribes to it).
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// `POST /v1/users/{id}/disconnect`: closes every connection of `user` (in the caller's
    /// app) on every node, through the broker. For `admin` and `server` tokens only.
    pub fn disconnect_user(&self, who: &Principal, user: &str) -> Result<(), EngineError> {
        let user = UserId::parse(user)?.into_string();
        if !(who.grants.admin || who.grants.server) {
            return Err(EngineError::Forbidden("only an admin or server token disconnects users".into()));
        }
        self.broker.publish(&[Envelope::Disconnect { app: who.app.clone(), user }]);
        Ok(())
    }

    /// The engine's clock (ms since the epoch), for calls made outside `execute`.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn actor(who: &Principal) -> Actor {
        Actor { app: who.app.clone(), user: who.user.clone() }
    }

    /// Records the user's display name and kind the first time this node sees them.
    pub async fn note_user(&self, who: &Principal) -> Result<(), EngineError> {
        let key = (who.app.clone(), who.user.id.clone(), who.user.name.clone(), who.user.kind.as_str());
        if self.known_users.lock().contains(&key) {
            return Ok(());
        }
        self.store
            .apply(Mutation::UpsertUser { actor: Self::actor(who) })
            .await
            .map_err(|e| EngineError::from_store(e, ""))?;
        self.known_users.lock().insert(key);
        Ok(())
    }

    /// Registers an authenticated connection. `first` builds the frame that must precede
    /// everything else on it (the `connect` reply) from the connection id. Live events of the
    /// channels in `resume` are held from the moment the connection is registered until
    /// [`Engine::resume`] has replayed what the client missed. The caller drains the receiver
    /// onto the socket.
    pub async fn connect(
        &self,
        who: &Principal,
        resume: &BTreeMap<String, u64>,
        first: impl FnOnce(&str) -> Bytes,
    ) -> Result<(ConnHandle, OutboundRx), EngineError> {
        self.note_user(who).await?;
        let (shared, rx) = self.hub.new_conn(self.ids.new_id(), &who.app, &who.user.id);
        // The queue is empty and nobody else can reach it yet: this cannot fail for want of room.
        shared.try_push(&first(&shared.conn_id));
        // The user's memberships, read after noting where the hub's membership changes stand,
        // so none made meanwhile is lost (see the hub's module doc).
        let mut attempts = 0;
        let channels = loop {
            let mark = self.hub.membership_mark();
            let member_of = self
                .store
                .member_channels(&who.app, &who.user.id)
                .await
                .map_err(|e| EngineError::from_store(e, ""))?;
            let set: HashSet<&str> = member_of.iter().map(String::as_str).collect();
            let channels: Vec<(String, u64)> = resume
                .iter()
                .filter(|(c, _)| set.contains(c.as_str()))
                .map(|(c, s)| (c.clone(), *s))
                .collect();
            shared.begin_resume(channels.iter().map(|(c, _)| c.clone()));
            match self.hub.register(&shared, member_of, mark) {
                Ok(()) => break channels,
                Err(_) if attempts < 8 => attempts += 1,
                // Over 4,096 membership changes during each of 8 reads: tell the client to retry.
                Err(_) => return Err(EngineError::RateLimited { retry_after_ms: 100 }),
            }
        };
        let handle = ConnHandle {
            shared,
            hub: self.hub.clone(),
            broker: self.broker.clone(),
            resume: Mutex::new(channels),
        };
        Ok((handle, rx))
    }

    /// Replays, per channel given to [`Engine::connect`], every entry after the client's
    /// `seq`, then lets live events through: no gap, no duplicate (see [`ConnShared`]'s resume
    /// buffer). Channels the user was not a member of are skipped.
    ///
    /// The replay is paced ([`ConnShared::send_paced`]): it fills at most half the outbound
    /// queue and waits for the socket to drain, so the caller must keep reading the connection
    /// meanwhile (pongs, requests). A member removed while its replay runs receives the log up
    /// to its own `member_left` and nothing after. A store error ends the resume with
    /// [`ResumeEnd::Failed`]: the caller must close the connection, since letting the held live
    /// events through would leave a silent hole.
    pub async fn resume(&self, conn: &ConnHandle) -> ResumeEnd {
        // A declared device's inbox comes first (§7), then the channels' replays.
        match self.send_inbox(conn).await {
            Ok(true) => {}
            Ok(false) => return ResumeEnd::Gone,
            Err(e) => {
                tracing::warn!(error = %e, "inbox delivery failed; closing the connection");
                return ResumeEnd::Failed;
            }
        }
        let channels = std::mem::take(&mut *conn.resume.lock());
        for (channel, seq) in channels {
            let mut after = seq;
            match self.replay(conn, &channel, &mut after).await {
                Ok(true) => {}
                Ok(false) => return ResumeEnd::Gone,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "resume replay failed; closing the connection");
                    return ResumeEnd::Failed;
                }
            }
            if !conn.finish_resume(&channel, after).await {
                return ResumeEnd::Gone;
            }
        }
        ResumeEnd::Done
    }

    async fn replay(&self, conn: &ConnHandle, channel: &str, after: &mut u64) -> Result<bool, EngineError> {
        let head = self.store.head_seq(channel).await.map_err(|e| EngineError::from_store(e, channel))?;
        *after = (*after).min(head);
        if head - *after > self.config.replay_cap {
            let from_seq = head - self.config.replay_cap + 1;
            let ev = Event::ResumeTruncated { channel: channel.to_owned(), from_seq };
            if !conn.send_paced(to_bytes(&ev)).await {
                return Ok(false);
            }
            *after = from_seq - 1;
        }
        loop {
            let (entries, more) = self
                .store
                .log(channel, *after, self.config.history_page_max)
                .await
                .map_err(|e| EngineError::from_store(e, channel))?;
            for e in &entries {
                if !conn.send_paced(to_bytes(&event_of(e, None))).await {
                    return Ok(false);
                }
                *after = e.seq;
                // Removed while replaying (and not added back since): the log stops for this
                // reader at its own removal, as the live path stops at it.
                if e.kind == herald_proto::EntryKind::MemberLeft
                    && e.reference == *conn.user
                    && self.hub.is_member(&conn.app, channel, &conn.user) == Some(false)
                {
                    return Ok(true);
                }
            }
            if !more || entries.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Checks a channel reference's shape: a UUID-shaped id, or else a valid channel name.
    pub(crate) fn check_ref(channel: &str) -> Result<(), EngineError> {
        if !looks_like_uuid(channel) {
            ChannelName::parse(channel)?;
        }
        Ok(())
    }

    /// Resolves a channel reference (id or name) within the caller's app to an id. An id is
    /// taken as it is (the store checks it when it is used); a name costs one lookup.
    pub(crate) async fn resolve(&self, who: &Principal, channel: &str) -> Result<String, EngineError> {
        Self::check_ref(channel)?;
        if looks_like_uuid(channel) {
            return Ok(channel.to_owned());
        }
        Ok(self.lookup(who, channel).await?.id)
    }

    /// The channel a reference (id or name) names in the caller's app: one store read.
    async fn lookup(&self, who: &Principal, channel: &str) -> Result<Channel, EngineError> {
        Self::check_ref(channel)?;
        self.store
            .channel(&who.app, channel)
            .await
            .map_err(|e| EngineError::from_store(e, channel))?
            .ok_or_else(|| EngineError::ChannelNotFound(channel.to_owned()))
    }

    /// Whether the caller is a member of channel `id`: from the hub when the caller has a
    /// connection on this node (exact), else one store read.
    async fn is_member(&self, who: &Principal, id: &str) -> Result<bool, EngineError> {
        if let Some(known) = self.hub.is_member(&who.app, id, &who.user.id) {
            return Ok(known);
        }
        self.store.is_member(&who.app, id, &who.user.id).await.map_err(|e| EngineError::from_store(e, id))
    }

    /// Loads a channel the caller may read: a member, or a holder of `server` /
    /// `channels:admin`.
    async fn readable(&self, who: &Principal, channel: &str) -> Result<Channel, EngineError> {
        let ch = self.lookup(who, channel).await?;
        if who.grants.server || who.grants.channels_admin || self.is_member(who, &ch.id).await? {
            Ok(ch)
        } else {
            Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")))
        }
    }

    /// Checks membership from the in-memory index (typing, ephemeral: not worth a store read).
    async fn require_member_fast(&self, who: &Principal, channel: &str) -> Result<String, EngineError> {
        let id = self.resolve(who, channel).await?;
        if self.is_member(who, &id).await? {
            return Ok(id);
        }
        self.readable(who, &id).await?;
        // Admins may read, but typing and ephemeral signals are for members.
        Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")))
    }

    pub(crate) async fn apply(
        &self,
        m: Mutation,
        channel: &str,
    ) -> Result<herald_store::Applied, EngineError> {
        self.store.apply(m).await.map_err(|e| EngineError::from_store(e, channel))
    }

    fn check_content(&self, content: &str) -> Result<(), EngineError> {
        if content.len() > self.config.max_content_bytes {
            return Err(EngineError::PayloadTooLarge(format!(
                "content is {} bytes; the limit is {}",
                content.len(),
                self.config.max_content_bytes
            )));
        }
        Ok(())
    }

    fn check_data(&self, data: &serde_json::Value) -> Result<(), EngineError> {
        /// Counts bytes instead of keeping them: the size is all the limit needs.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut n = Counter(0);
        let len = serde_json::to_writer(&mut n, data).map(|()| n.0).unwrap_or(usize::MAX);
        if len > self.config.max_content_bytes {
            return Err(EngineError::PayloadTooLarge(format!(
                "data is {len} bytes; the limit is {}",
                self.config.max_content_bytes
            )));
        }
        Ok(())
    }

    fn check_message_id(id: &str, what: &str) -> Result<(), EngineError> {
        if looks_like_uuid(id) {
            Ok(())
        } else {
            Err(EngineError::InvalidName(herald_proto::NameError {
                what: "id",
                value: id.chars().take(80).collect(),
                rule: if what == "reaction" { "a reaction id (UUID)" } else { "a message id (UUID)" },
            }))
        }
    }

    /// Runs one request for `who`. `conn` is the WebSocket connection, if the request came on
    /// one (subscriptions need it).
    pub async fn execute(
        &self,
        who: &Principal,
        conn: Option<&ConnHandle>,
        req: Request,
    ) -> Result<OkReply, EngineError> {
        let now = self.clock.now_ms();
        match req {
            Request::Connect { .. } => Err(bad("already connected")),
            // The gateway owns the connection's token and answers this itself.
            Request::AuthRefresh { .. } => Err(bad("auth.refresh is a WebSocket op")),
            Request::Ping {} => Ok(OkReply::Empty(Empty {})),
            Request::Subscribe { subject } => {
                let conn = conn.ok_or_else(|| bad("subscribe needs a WebSocket connection"))?;
                let subject = Subject::parse(subject)?;
                if let Some(owner) = subject.inbox_owner()
                    && owner != who.user.id
                {
                    return Err(EngineError::Forbidden(format!(
                        "{subject:?} is the inbox of another user; only {owner:?} may subscribe"
                    )));
                }
                if Hub::subscription_count(conn) >= self.config.max_subscriptions {
                    return Err(bad(format!(
                        "a connection may subscribe to at most {} subjects",
                        self.config.max_subscriptions
                    )));
                }
                self.hub.subscribe(conn.shared(), subject.as_str());
                // Every subscribe waits for the broker (idempotent), not only the first one on
                // this node: a second subscriber must not be answered before the first's
                // subscription is in force either.
                match tokio::time::timeout(
                    WATCH_TIMEOUT,
                    self.broker.watch_subject(&who.app, subject.as_str()),
                )
                .await
                {
                    Ok(Ok(())) => Ok(OkReply::Empty(Empty {})),
                    failed => {
                        let why = match failed {
                            Ok(Err(why)) => why,
                            _ => format!("no answer within {} s", WATCH_TIMEOUT.as_secs()),
                        };
                        tracing::warn!(subject = subject.as_str(), error = %why, "broker subscription failed");
                        if self.hub.unsubscribe(conn, subject.as_str()) {
                            self.broker.unwatch_subject(&who.app, subject.as_str());
                        }
                        Err(EngineError::Internal)
                    }
                }
            }
            Request::Unsubscribe { subject } => {
                let conn = conn.ok_or_else(|| bad("unsubscribe needs a WebSocket connection"))?;
                let subject = Subject::parse(subject)?;
                if self.hub.unsubscribe(conn, subject.as_str()) {
                    self.broker.unwatch_subject(&who.app, subject.as_str());
                }
                Ok(OkReply::Empty(Empty {}))
            }
            Request::Publish { subject, data } => {
                self.publish(who, &subject, data)?;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::ChannelCreate(c) => self.create_channel(who, c, now).await.map(OkReply::Channel),
            Request::ChannelJoin { channel, auth } => {
                let conn_id = conn.map(|c| c.conn_id.as_str());
                let channel = self.join(who, conn_id, &channel, auth.as_deref(), now).await?;
                Ok(OkReply::Channel(ChannelOk { channel }))
            }
            Request::ChannelLeave { channel } => {
                self.remove_member(who, &channel, who.user.id.clone(), now).await
            }
            Request::ChannelAddMember { channel, user } => {
                let user = UserId::parse(user)?;
                let id = self.resolve(who, &channel).await?;
                self.check_private_add(who, &id).await?;
                let guard = rules::unbanned(rules::add_member(who), user.as_str(), now);
                let m = Mutation::AddMember {
                    actor: Self::actor(who),
                    channel: id,
                    user: user.into_string(),
                    guard,
                    ts_ms: now,
                };
                let a = self.apply(m, &channel).await?;
                self.tell_keepers(&who.app, &a).await;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::ChannelRemoveMember { channel, user } | Request::ChannelKick { channel, user } => {
                let user = UserId::parse(user)?.into_string();
                self.remove_member(who, &channel, user, now).await
            }
            Request::ChannelBan { channel, user, until } => {
                let user = UserId::parse(user)?.into_string();
                let until_ms = until
                    .as_deref()
                    .map(|t| {
                        herald_proto::time::parse_ms(t).ok_or_else(|| bad("until must be an RFC 3339 time"))
                    })
                    .transpose()?;
                let id = self.resolve(who, &channel).await?;
                self.check_private_moderation(who, &id).await?;
                let m = Mutation::Ban {
                    actor: Self::actor(who),
                    channel: id,
                    user,
                    until_ms,
                    guard: rules::ban(who),
                    ts_ms: now,
                };
                // A banned member leaves: keepers of an encrypted channel hear of it (§7).
                let a = self.apply(m, &channel).await?;
                self.tell_keepers(&who.app, &a).await;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::ChannelUnban { channel, user } => {
                let user = UserId::parse(user)?.into_string();
                let id = self.resolve(who, &channel).await?;
                self.check_private_moderation(who, &id).await?;
                let m =
                    Mutation::Unban { actor: Self::actor(who), channel: id, user, guard: rules::ban(who) };
                self.apply(m, &channel).await?;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::ChannelList {} => {
                let channels = self
                    .store
                    .channels_of(&who.app, &who.user.id)
                    .await
                    .map_err(|e| EngineError::from_store(e, ""))?;
                Ok(OkReply::ChannelList(ChannelListOk { channels }))
            }
            Request::ChannelDirectory {} => {
                let channels = self
                    .store
                    .directory(&who.app, &who.user.id, who.grants.channels_admin)
                    .await
                    .map_err(|e| EngineError::from_store(e, ""))?;
                Ok(OkReply::Directory(DirectoryOk { channels }))
            }
            Request::ChannelDelete { channel } => {
                let id = self.resolve(who, &channel).await?;
                self.apply(
                    Mutation::DeleteChannel {
                        actor: Self::actor(who),
                        channel: id.clone(),
                        guard: rules::delete_channel(who),
                        ts_ms: now,
                    },
                    &channel,
                )
                .await?;
                if let Err(e) = self.blobs.delete_channel(&id).await {
                    tracing::warn!(channel = id, error = %e, "could not remove the blobs of a deleted channel");
                }
                Ok(OkReply::Empty(Empty {}))
            }
            Request::MessageSend { channel, message } => self
                .send(who, &channel, message, now)
                .await
                .map(|message| OkReply::Message(MessageOk { message })),
            Request::MessageEdit { channel, message_id, content, epoch } => {
                Self::check_message_id(&message_id, "message")?;
                self.check_content(&content)?;
                let id = self.resolve(who, &channel).await?;
                let m = Mutation::Edit {
                    actor: Self::actor(who),
                    channel: id,
                    message_id,
                    content,
                    guard: herald_store::Guard { epoch, ..rules::own(who) },
                    ts_ms: now,
                };
                match self.apply(m, &channel).await?.outcome {
                    Outcome::Message { message, .. } => Ok(OkReply::Message(MessageOk { message: *message })),
                    _ => Err(EngineError::Internal),
                }
            }
            Request::MessageDelete { channel, message_id } => {
                Self::check_message_id(&message_id, "message")?;
                let id = self.resolve(who, &channel).await?;
                self.apply(
                    Mutation::Delete {
                        actor: Self::actor(who),
                        channel: id,
                        message_id,
                        guard: rules::delete_message(who),
                        ts_ms: now,
                    },
                    &channel,
                )
                .await?;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::ReactionAdd { channel, message_id, emoji } => {
                Self::check_message_id(&message_id, "message")?;
                if emoji.is_empty() || emoji.chars().count() > 64 || emoji.chars().any(char::is_control) {
                    return Err(bad("emoji must be 1-64 characters without control characters"));
                }
                let id = self.resolve(who, &channel).await?;
                let m = Mutation::React {
                    actor: Self::actor(who),
                    channel: id,
                    id: self.ids.new_id(),
                    message_id,
                    emoji,
                    guard: rules::write(who),
                    ts_ms: now,
                };
                match self.apply(m, &channel).await?.outcome {
                    Outcome::Reaction { reaction_id } => Ok(OkReply::Reaction(ReactionOk { reaction_id })),
                    _ => Err(EngineError::Internal),
                }
            }
            Request::ReactionRemove { channel, reaction_id } => {
                Self::check_message_id(&reaction_id, "reaction")?;
                let id = self.resolve(who, &channel).await?;
                self.apply(
                    Mutation::Unreact {
                        actor: Self::actor(who),
                        channel: id,
                        reaction_id,
                        guard: rules::own(who),
                        ts_ms: now,
                    },
                    &channel,
                )
                .await?;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::Read { channel, message_id } => {
                Self::check_message_id(&message_id, "message")?;
                let id = self.resolve(who, &channel).await?;
                // A read marker is a durable write: one per interval per user and channel.
                if let Verdict::Wait(retry_after_ms) =
                    self.read_throttle.check(&who.app, &who.user.id, &id, 0, now)
                {
                    return Err(EngineError::RateLimited { retry_after_ms });
                }
                let guard = rules::read(who);
                self.apply(
                    Mutation::Read { actor: Self::actor(who), channel: id, message_id, guard },
                    &channel,
                )
                .await?;
                Ok(OkReply::Empty(Empty {}))
            }
            Request::Typing { channel, is_typing } => {
                let id = self.require_member_fast(who, &channel).await?;
                // Repeats within the interval are answered but not fanned out: members already
                // know; a change (started / stopped) always goes out.
                let state = u64::from(is_typing);
                if self.typing_throttle.check(&who.app, &who.user.id, &id, state, now) == Verdict::Pass {
                    let ev = Event::Typing { channel: id.clone(), user: who.user.id.clone(), is_typing };
                    self.signal(who, &id, &ev);
                }
                Ok(OkReply::Empty(Empty {}))
            }
            Request::Ephemeral { channel, subject, data } => {
                let subject = Subject::parse(subject)?;
                self.check_data(&data)?;
                let id = self.require_member_fast(who, &channel).await?;
                let ev = Event::Ephemeral {
                    channel: id.clone(),
                    from: who.user.id.clone(),
                    subject: subject.into_string(),
                    data,
                };
                self.signal(who, &id, &ev);
                Ok(OkReply::Empty(Empty {}))
            }
            Request::History { channel, query } => {
                self.history(who, &channel, &query).await.map(OkReply::History)
            }
            Request::DmSend { to, client_id } => {
                let device = conn
                    .and_then(|c| c.device())
                    .ok_or_else(|| bad("dm.send needs a connection that declared its device at connect"))?;
                self.dm_send(who, &device, to, client_id).await.map(OkReply::DmSend)
            }
            Request::DmAck { ids } => {
                let device = conn
                    .and_then(|c| c.device())
                    .ok_or_else(|| bad("dm.ack needs a connection that declared its device at connect"))?;
                self.dm_ack(who, &device, ids).await.map(|()| OkReply::Empty(Empty {}))
            }
        }
    }

    /// A channel event that is not a log entry (typing, ephemeral), to every member's
    /// connections but the sender's, on every node.
    fn signal(&self, who: &Principal, channel: &str, event: &Event) {
        let ev = ChannelEvent::signal(&who.app, channel, to_bytes(event), Some(&who.user.id));
        self.broker.publish(&[Envelope::Channel(ev)]);
    }

    /// `channel.leave` (the caller removes itself) and `channel.remove_member`.
    async fn remove_member(
        &self,
        who: &Principal,
        channel: &str,
        user: String,
        now: i64,
    ) -> Result<OkReply, EngineError> {
        let id = self.resolve(who, channel).await?;
        if user != who.user.id
            && !(who.grants.channels_admin || who.grants.server)
            && self.is_private_channel(who, &id).await?
        {
            return Err(EngineError::Forbidden(
                "only the app's backend (a channels:admin or server token) removes others from a private channel"
                    .into(),
            ));
        }
        let a = self
            .apply(
                Mutation::RemoveMember {
                    actor: Self::actor(who),
                    channel: id,
                    guard: rules::remove_member(who, &user),
                    user,
                    ts_ms: now,
                },
                channel,
            )
            .await?;
        self.tell_keepers(&who.app, &a).await;
        Ok(OkReply::Empty(Empty {}))
    }

    /// `publish`: plaintext fan-out to the subject's subscribers, never stored. Inboxes
    /// (`user:<id>`) take publications only from their owner or a `server` token.
    pub fn publish(
        &self,
        who: &Principal,
        subject: &str,
        data: serde_json::Value,
    ) -> Result<(), EngineError> {
        let subject = Subject::parse(subject)?;
        if let Some(owner) = subject.inbox_owner()
            && owner != who.user.id
            && !who.grants.server
        {
            return Err(EngineError::Forbidden(format!(
                "only {owner:?} or a server token may publish to {subject:?}"
            )));
        }
        self.check_data(&data)?;
        let ev = Event::Publication { subject: subject.as_str().to_owned(), from: who.user.id.clone(), data };
        self.broker.publish(&[Envelope::Publication {
            app: who.app.clone(),
            subject: subject.into_string(),
            frame: to_bytes(&ev),
        }]);
        Ok(())
    }

    /// `channel.create`.
    pub async fn create_channel(
        &self,
        who: &Principal,
        c: CreateChannel,
        now: i64,
    ) -> Result<ChannelOk, EngineError> {
        if !who.grants.channels_create {
            return Err(EngineError::Forbidden("this token has no channels:create grant".into()));
        }
        let name = c.name.map(ChannelName::parse).transpose()?;
        if let Some(n) = &name {
            crate::private::refuse_private_create(n.as_str())?;
        }
        if let Some(t) = &c.title
            && (t.chars().count() > 256 || t.chars().any(char::is_control))
        {
            return Err(bad("title must be at most 256 characters without control characters"));
        }
        if c.members.len() > self.config.max_initial_members {
            return Err(bad(format!("at most {} initial members", self.config.max_initial_members)));
        }
        let mut members = Vec::with_capacity(c.members.len());
        for m in c.members {
            let m = UserId::parse(m)?.into_string();
            if m != who.user.id && !members.contains(&m) {
                members.push(m);
            }
        }
        let label = name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        let m = Mutation::CreateChannel {
            actor: Self::actor(who),
            id: self.ids.new_id(),
            name,
            title: c.title,
            encrypted: c.encrypted,
            policy: c.policy.unwrap_or(Policy::Open),
            members,
            ts_ms: now,
        };
        let a = self.apply(m, &label).await?;
        self.tell_keepers(&who.app, &a).await;
        Ok(ChannelOk { channel: a.channel.ok_or(EngineError::Internal)? })
    }

    /// `message.send`.
    pub async fn send(
        &self,
        who: &Principal,
        channel: &str,
        m: SendMessage,
        now: i64,
    ) -> Result<herald_proto::model::Message, EngineError> {
        self.check_content(&m.content)?;
        let kind = m.kind.unwrap_or_else(|| "chat.text".to_owned());
        if kind.is_empty() || kind.len() > 64 || !kind.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("type must be 1-64 printable ASCII characters without spaces"));
        }
        let client_id = m.client_id.map(ClientId::parse).transpose()?.map(ClientId::into_string);
        if let Some(r) = &m.reply_to {
            Self::check_message_id(r, "message")?;
        }
        let mut actor = Self::actor(who);
        if let Some(author) = m.author {
            if !who.grants.server {
                return Err(EngineError::Forbidden("only a server token may name another author".into()));
            }
            let author = UserId::parse(author)?.into_string();
            if author != who.user.id {
                actor.user =
                    UserInfo { id: author, name: None, kind: herald_proto::model::UserKind::Service };
            }
        }
        let id = self.resolve(who, channel).await?;
        let guard = herald_store::Guard { epoch: m.epoch, ..rules::write(who) };
        let mutation = Mutation::Send {
            actor,
            channel: id,
            id: self.ids.new_id(),
            kind,
            content: m.content,
            reply_to: m.reply_to,
            client_id,
            guard,
            ts_ms: now,
        };
        match self.apply(mutation, channel).await?.outcome {
            Outcome::Message { message, .. } => {
                self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                Ok(*message)
            }
            _ => Err(EngineError::Internal),
        }
    }

    /// `history` / `GET …/messages`.
    pub async fn history(
        &self,
        who: &Principal,
        channel: &str,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let limit = q.limit.unwrap_or(50);
        if limit == 0 || limit > self.config.history_page_max {
            return Err(bad(format!("limit must be 1-{}", self.config.history_page_max)));
        }
        if q.before.is_some() && q.after.is_some() {
            return Err(bad("give either before or after, not both"));
        }
        let parse_time = |s: &Option<String>, field: &str| -> Result<Option<i64>, EngineError> {
            s.as_deref()
                .map(|t| {
                    herald_proto::time::parse_ms(t)
                        .ok_or_else(|| bad(format!("{field} must be an RFC 3339 time")))
                })
                .transpose()
        };
        let range = HistoryRange {
            limit,
            before: q.before,
            after: q.after,
            from_ms: parse_time(&q.from, "from")?,
            to_ms: parse_time(&q.to, "to")?,
        };
        let ch = self.readable(who, channel).await?;
        let (messages, has_more) =
            self.store.history(&ch.id, &range).await.map_err(|e| EngineError::from_store(e, channel))?;
        Ok(HistoryPage { messages, has_more })
    }

    /// `GET /v1/channels/{id}`: the channel and its members.
    pub async fn channel_info(
        &self,
        who: &Principal,
        channel: &str,
    ) -> Result<(Channel, Vec<Member>), EngineError> {
        let ch = self.readable(who, channel).await?;
        let members = self.store.members(&ch.id).await.map_err(|e| EngineError::from_store(e, channel))?;
        Ok((ch, members))
    }

    /// `GET /v1/channels/{id}/log`.
    pub async fn log(
        &self,
        who: &Principal,
        channel: &str,
        after: u64,
        limit: Option<u32>,
    ) -> Result<LogPage, EngineError> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > self.config.history_page_max {
            return Err(bad(format!("limit must be 1-{}", self.config.history_page_max)));
        }
        let ch = self.readable(who, channel).await?;
        let (entries, has_more) =
            self.store.log(&ch.id, after, limit).await.map_err(|e| EngineError::from_store(e, channel))?;
        Ok(LogPage { entries: entries.iter().map(log_entry).collect(), has_more })
    }

    /// `PUT /v1/channels/{id}/blobs`.
    pub async fn put_blob(
        &self,
        who: &Principal,
        channel: &str,
        bytes: Vec<u8>,
    ) -> Result<(String, usize), EngineError> {
        self.put_blob_shard(who, channel, bytes, None).await
    }

    /// `PUT /v1/channels/{id}/blobs?shard=<i>`: shard `i` of an erasure-coded file, which a
    /// blob store with several directories places by index ([`herald_store::BlobStore::put_shard`]).
    pub async fn put_blob_shard(
        &self,
        who: &Principal,
        channel: &str,
        bytes: Vec<u8>,
        shard: Option<u16>,
    ) -> Result<(String, usize), EngineError> {
        if bytes.len() > self.config.max_blob_bytes {
            return Err(EngineError::PayloadTooLarge(format!(
                "blob is {} bytes; the limit is {}",
                bytes.len(),
                self.config.max_blob_bytes
            )));
        }
        let id = self.resolve(who, channel).await?;
        if !self.is_member(who, &id).await? {
            // Not a member: the channel must still exist in the caller's app, whatever the
            // grant (a `server` token of one app must not write into another's channel).
            self.lookup(who, &id).await?;
            if !who.grants.server {
                self.readable(who, &id).await?;
                return Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")));
            }
        }
        let size = bytes.len();
        let put = match shard {
            Some(i) => self.blobs.put_shard(&id, bytes, u32::from(i)).await,
            None => self.blobs.put(&id, bytes).await,
        };
        let blob_id = put.map_err(|e| EngineError::from_store(e, channel))?;
        Ok((blob_id, size))
    }

    /// `GET /v1/channels/{id}/blobs/{blob_id}`: members only.
    pub async fn get_blob(
        &self,
        who: &Principal,
        channel: &str,
        blob_id: &str,
    ) -> Result<Bytes, EngineError> {
        let ch = self.readable(who, channel).await?;
        match self.blobs.get(&ch.id, blob_id).await {
            Ok(Some(b)) => Ok(Bytes::from(b)),
            Ok(None) => Err(EngineError::NotFound(format!("blob {blob_id:?} not found"))),
            Err(herald_store::StoreError::Invalid(_)) => {
                Err(EngineError::InvalidName(herald_proto::NameError {
                    what: "blob id",
                    value: blob_id.chars().take(80).collect(),
                    rule: "64 lowercase hex digits",
                }))
            }
            Err(e) => Err(EngineError::from_store(e, channel)),
        }
    }

    /// Whether this node can serve: `Err` names the failing dependency (for `/healthz`).
    pub async fn health(&self) -> Result<(), String> {
        let store = match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err("store: no answer within 2 s".into()),
        };
        let broker = self.broker.health().map_err(|e| format!("broker: {e}"));
        match (store, broker) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(s), Ok(())) => Err(s),
            (Ok(()), Err(b)) => Err(b),
            (Err(s), Err(b)) => Err(format!("{s}; {b}")),
        }
    }

    /// Stops the store: finishes commits in flight.
    pub async fn shutdown(&self) {
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "store close failed");
        }
    }
}

/// A stored entry as the raw log shows it.
pub fn log_entry(e: &StoredEntry) -> LogEntry {
    use herald_proto::chain::to_hex;
    LogEntry {
        seq: e.seq,
        kind: e.kind,
        author: e.author.clone(),
        reference: e.reference.clone(),
        ts: herald_proto::time::format_ms(e.ts_ms),
        content: e.content.clone(),
        salt: e.salt.as_ref().map(|s| to_hex(s)),
        content_hash: to_hex(&e.content_hash),
        prev_hash: to_hex(&e.prev_hash),
        hash: to_hex(&e.hash),
    }
}
