//! Herald's storage boundary: the [`Store`] and [`BlobStore`] traits, the data they move, and
//! the guarantees every backend must give.
//!
//! The engine talks to storage only through these traits (`Arc<dyn Store>`), so the embedded
//! SQLite backend and later PostgreSQL are interchangeable. Storage never calls up into the
//! engine: the only way out of a commit is the [`CommitSink`] handed to a backend when it is
//! opened.
//!
//! # Guarantees (every backend)
//!
//! - **Atomicity.** One [`Mutation`] is applied entirely or not at all: its checks (existence,
//!   and the conditions of its [`Guard`]: membership, authorship, creator, policy), its row
//!   changes and its log entries.
//! - **No rules.** A backend decides nothing about who may do what: the engine expresses that
//!   as the mutation's [`Guard`], and the backend evaluates it against the data it holds.
//! - **Durability.** [`Store::apply`] resolves only after the mutation is durable under the
//!   backend's configured durability mode (`fsync` by default).
//! - **Order.** Log entries of a channel get gapless `seq` numbers starting at 1, and their
//!   `hash` links to the previous entry (PROTOCOL.md §5). The [`CommitSink`] sees every
//!   committed [`Applied`] exactly once, in commit order, before `apply` resolves; for one
//!   channel that is `seq` order.
//! - **Idempotency.** A `Send` whose `client_id` the same author already used in that channel
//!   appends nothing and returns the original message; if that message has since been deleted,
//!   [`StoreError::NotFound`] (the key stays used, so a retry cannot resurrect deleted text).
//! - **Hard delete.** A deleted message's content and salt, and those of its edits, are erased
//!   from storage (not merely hidden); the entries keep `content_hash`.
//!
//! # Layout
//!
//! - [`Mutation`], [`Applied`], [`StoredEntry`]: what goes in and comes out of a write.
//! - [`ChannelRow`]: a channel's stored fields, the one definition every backend uses.
//! - [`Store`], [`BlobStore`], [`CommitSink`]: the traits.
//! - [`StoreError`]: typed refusals (`NotMember`, `NotAuthor`, …) and backend failures.
//! - [`hooks`]: the webhooks' delivery state ([`hooks::HookStore`]): cursors, deleted
//!   channels, leases.
//! - [`build`]: the one place backends build what a fresh `Send` produces.
//! - [`memory`]: [`memory::MemoryStore`] and [`memory::MemoryBlobStore`], in memory with the
//!   SQLite backend's exact semantics, for tests and tools (never for `herald serve`).

use async_trait::async_trait;
use herald_proto::chain::{Hash32, SALT_LEN};
use herald_proto::model::{Channel, ChannelSummary, DirectoryEntry, Member, Message, Policy, UserInfo};
use herald_proto::{ChannelName, EntryKind};
use std::sync::Arc;

/// A user as the store records it: the id within an app, display name and kind. It carries
/// no grant: who may do what is the engine's to decide, expressed as a [`Guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub app: String,
    pub user: UserInfo,
}

/// Conditions on stored data that a backend checks atomically with the write they guard.
/// The engine decides which apply (the rules: membership, authorship, grants); a backend only
/// evaluates them, so every backend enforces the same rules without knowing them. A field left
/// empty checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// This user must be a member of the channel when the write commits, else
    /// [`StoreError::NotMember`].
    pub member: Option<String>,
    /// The message (`Edit`, `Delete`) or reaction (`Unreact`) must be by this user, else
    /// [`StoreError::NotAuthor`].
    pub author: Option<String>,
    /// The channel must have been created by this user, else [`StoreError::Forbidden`].
    pub creator: Option<String>,
    /// `Join` of a user who is not a member yet: the channel must be `open`, else
    /// [`StoreError::Forbidden`].
    pub open: bool,
    /// This user must not be banned from the channel at this time (ms since the epoch), else
    /// [`StoreError::Forbidden`] (see [`Mutation::Ban`]).
    pub not_banned: Option<(String, i64)>,
    /// `Send` / `Edit` (§7): the key epoch the content is sealed under. In an encrypted
    /// channel it must be given and be the head epoch (the newest commit's) when the write
    /// commits, else [`StoreError::StaleEpoch`] (also before the first commit); missing there,
    /// or given in a plain channel, is [`StoreError::Invalid`].
    pub epoch: Option<u64>,
}

impl Guard {
    /// Nothing to check (the engine found the write allowed whatever the data says).
    pub fn none() -> Guard {
        Guard::default()
    }

    /// `user` must be a member.
    pub fn member(user: &str) -> Guard {
        Guard { member: Some(user.to_owned()), ..Guard::default() }
    }
}

/// One write. Every variant is applied atomically with its checks: those a backend always
/// makes (the channel exists in the actor's app, the message exists …) and its [`Guard`].
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Creates a channel: `channel_created`, then `member_joined` for the creator and every
    /// listed member. If `name` is already registered in the app by the same creator, the
    /// existing channel is returned and nothing is appended (the creator is joined to it if
    /// they had left); by anyone else, [`StoreError::NameTaken`].
    CreateChannel {
        actor: Actor,
        id: String,
        name: Option<ChannelName>,
        title: Option<String>,
        encrypted: bool,
        policy: Policy,
        members: Vec<String>,
        ts_ms: i64,
    },
    /// `actor` joins `channel` (an id). Already a member: nothing appended.
    Join { actor: Actor, channel: String, guard: Guard, ts_ms: i64 },
    /// `actor` adds `user`. Already a member: nothing appended.
    AddMember { actor: Actor, channel: String, user: String, guard: Guard, ts_ms: i64 },
    /// `actor` removes `user`. Not a member: [`StoreError::NotFound`].
    RemoveMember { actor: Actor, channel: String, user: String, guard: Guard, ts_ms: i64 },
    /// Deletes a channel and everything in it, and records it (at `ts_ms`) in the webhooks'
    /// outbox of deleted channels ([`hooks`]).
    DeleteChannel { actor: Actor, channel: String, guard: Guard, ts_ms: i64 },
    /// Appends a message by `actor`. `reply_to` must be a message of the same channel
    /// ([`StoreError::NotFound`] otherwise).
    Send {
        actor: Actor,
        channel: String,
        id: String,
        kind: String,
        content: String,
        reply_to: Option<String>,
        client_id: Option<String>,
        guard: Guard,
        ts_ms: i64,
    },
    /// Replaces a message's content.
    Edit { actor: Actor, channel: String, message_id: String, content: String, guard: Guard, ts_ms: i64 },
    /// Hard-deletes a message.
    Delete { actor: Actor, channel: String, message_id: String, guard: Guard, ts_ms: i64 },
    /// Adds a reaction by `actor` to a message of the channel.
    React {
        actor: Actor,
        channel: String,
        id: String,
        message_id: String,
        emoji: String,
        guard: Guard,
        ts_ms: i64,
    },
    /// Removes a reaction.
    Unreact { actor: Actor, channel: String, reaction_id: String, guard: Guard, ts_ms: i64 },
    /// Bans `user` from the channel until `until_ms` (`None`: for good), replacing an earlier
    /// ban; if a member, removes them (`member_left` by `actor`). A ban is checked by the
    /// [`Guard::not_banned`] of later joins and adds.
    Ban { actor: Actor, channel: String, user: String, until_ms: Option<i64>, guard: Guard, ts_ms: i64 },
    /// Lifts a ban (none: nothing happens). Appends nothing.
    Unban { actor: Actor, channel: String, user: String, guard: Guard },
    /// Records that `actor` read up to `message_id`. Appends nothing.
    Read { actor: Actor, channel: String, message_id: String, guard: Guard },
    /// Records a user's display name and kind (from their token). Appends nothing.
    UpsertUser { actor: Actor },
    /// Posts a roster commit of an encrypted channel (§7) with its envelopes, appending a
    /// `key_rotated` entry (`ref` = the epoch in decimal, content = `commit_hash`), as a
    /// compare-and-swap: `commit.epoch` must be the head epoch + 1 (0 for the first, with
    /// `prev_commit_hash` = [`keys::ZERO_COMMIT_HASH`]) and `prev_commit_hash` the head's
    /// `commit_hash`, else [`StoreError::StaleEpoch`]. A plain channel is
    /// [`StoreError::Invalid`].
    Rotate {
        actor: Actor,
        channel: String,
        commit: keys::Commit,
        envelopes: Vec<keys::EnvelopeRow>,
        guard: Guard,
        ts_ms: i64,
    },
}

impl Mutation {
    /// Who asks for this mutation.
    pub fn actor(&self) -> &Actor {
        match self {
            Mutation::CreateChannel { actor, .. }
            | Mutation::Join { actor, .. }
            | Mutation::AddMember { actor, .. }
            | Mutation::RemoveMember { actor, .. }
            | Mutation::DeleteChannel { actor, .. }
            | Mutation::Send { actor, .. }
            | Mutation::Edit { actor, .. }
            | Mutation::Delete { actor, .. }
            | Mutation::React { actor, .. }
            | Mutation::Unreact { actor, .. }
            | Mutation::Read { actor, .. }
            | Mutation::Ban { actor, .. }
            | Mutation::Unban { actor, .. }
            | Mutation::Rotate { actor, .. }
            | Mutation::UpsertUser { actor } => actor,
        }
    }

    /// The channel id this mutation appends to, if it names one.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Mutation::CreateChannel { id, .. } => Some(id),
            Mutation::Join { channel, .. }
            | Mutation::AddMember { channel, .. }
            | Mutation::RemoveMember { channel, .. }
            | Mutation::DeleteChannel { channel, .. }
            | Mutation::Send { channel, .. }
            | Mutation::Edit { channel, .. }
            | Mutation::Delete { channel, .. }
            | Mutation::React { channel, .. }
            | Mutation::Unreact { channel, .. }
            | Mutation::Read { channel, .. }
            | Mutation::Ban { channel, .. }
            | Mutation::Unban { channel, .. }
            | Mutation::Rotate { channel, .. } => Some(channel),
            Mutation::UpsertUser { .. } => None,
        }
    }
}

/// A channel's own fields as every backend stores them (its `channels` row, without its
/// head): the one definition the backends share, so a channel reads back the same from each.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: String,
    pub app: String,
    pub name: Option<String>,
    pub title: Option<String>,
    pub encrypted: bool,
    pub policy: Policy,
    pub created_by: String,
    pub created_ms: i64,
}

impl ChannelRow {
    /// The row a `CreateChannel` by `actor` inserts.
    pub fn created(
        actor: &Actor,
        id: String,
        name: Option<ChannelName>,
        title: Option<String>,
        encrypted: bool,
        policy: Policy,
        ts_ms: i64,
    ) -> ChannelRow {
        ChannelRow {
            id,
            app: actor.app.clone(),
            name: name.map(|n| n.into_string()),
            title,
            encrypted,
            policy,
            created_by: actor.user.id.clone(),
            created_ms: ts_ms,
        }
    }

    /// The channel as the API shows it, with the head `last_seq`.
    pub fn to_channel(&self, last_seq: u64) -> Channel {
        Channel {
            id: self.id.clone(),
            name: self.name.clone(),
            title: self.title.clone(),
            encrypted: self.encrypted,
            policy: self.policy,
            created_by: self.created_by.clone(),
            created_at: herald_proto::time::format_ms(self.created_ms),
            last_seq,
        }
    }
}

/// A `seq` (or count) as a database column holds it, a signed 64-bit integer: saturating,
/// since no real `seq` comes near `i64::MAX`.
pub fn seq_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `seq` (or count) read back from a signed database column; a negative value, which no
/// backend writes, reads as 0.
pub fn seq_from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Facts about an entry beyond its hashed fields, enough to rebuild its event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryExtra {
    /// `message`: the message type (`chat.text` …).
    pub msg_type: Option<String>,
    /// `message`: the idempotency key it was sent with.
    pub client_id: Option<String>,
    /// `member_joined` / `member_left`: the member's display name; `channel_created`: the name;
    /// `message_deleted`: the id of who deleted it (the author, or a moderator).
    pub name: Option<String>,
    /// `channel_created`: the title.
    pub title: Option<String>,
    /// `reaction_deleted`: the message the reaction was on.
    pub message_id: Option<String>,
    /// `message`: the id of the message; `reaction`: the id of the reaction.
    pub id: Option<String>,
    /// `message` with a `reply_to`, as read by [`Store::log`]: the snapshot of the replied-to
    /// message at read time (content `None` once it was deleted). Appends may leave it `None`.
    pub reply: Option<herald_proto::model::ReplySnapshot>,
    /// `message` / `message_edited` of an encrypted channel: the key epoch of the content.
    pub epoch: Option<u64>,
}

/// A log entry as stored, with what is needed to rebuild its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub channel_id: String,
    pub seq: u64,
    pub kind: EntryKind,
    pub author: String,
    pub reference: String,
    pub ts_ms: i64,
    /// `None` once erased by a hard delete.
    pub content: Option<String>,
    pub salt: Option<[u8; SALT_LEN]>,
    pub content_hash: Hash32,
    pub prev_hash: Hash32,
    pub hash: Hash32,
    pub extra: EntryExtra,
}

/// An entry about to be appended: everything but its place in the chain.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub channel_id: &'a str,
    pub kind: EntryKind,
    pub author: &'a str,
    pub reference: &'a str,
    pub ts_ms: i64,
    pub content: &'a str,
}

impl NewEntry<'_> {
    /// The entry as the successor of `(prev_seq, prev_hash)`, salted with `salt`: the one
    /// place a backend computes `content_hash` and `hash` (PROTOCOL.md §5).
    pub fn link(
        self,
        prev_seq: u64,
        prev_hash: Hash32,
        salt: [u8; SALT_LEN],
        extra: EntryExtra,
    ) -> StoredEntry {
        let seq = prev_seq + 1;
        let content_hash = herald_proto::chain::content_hash(&salt, self.content);
        let hash = herald_proto::chain::entry_hash(
            &prev_hash,
            &herald_proto::chain::EntryFields {
                seq,
                kind: self.kind,
                channel_id: self.channel_id,
                author: self.author,
                reference: self.reference,
                ts_ms: self.ts_ms,
                content_hash: &content_hash,
            },
        );
        StoredEntry {
            channel_id: self.channel_id.to_owned(),
            seq,
            kind: self.kind,
            author: self.author.to_owned(),
            reference: self.reference.to_owned(),
            ts_ms: self.ts_ms,
            content: Some(self.content.to_owned()),
            salt: Some(salt),
            content_hash,
            prev_hash,
            hash,
            extra,
        }
    }
}

/// What a committed mutation produced.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The app (tenant) the channel belongs to.
    pub app: String,
    /// The channel as it is after the mutation (before, for a deleted channel).
    pub channel: Option<Channel>,
    /// New log entries in `seq` order (empty for idempotent repeats and non-appending writes).
    pub entries: Vec<StoredEntry>,
    /// What the caller asked for.
    pub outcome: Outcome,
}

/// The answer of a mutation beyond its entries.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `CreateChannel` / `Join`: the channel (`created` false when it already existed).
    Channel { created: bool },
    /// `Send` / `Edit`: the message as history shows it now (`duplicate`: an idempotent repeat).
    Message { message: Box<Message>, duplicate: bool },
    /// `React`.
    Reaction { reaction_id: String },
    /// `DeleteChannel`: who was a member, to tell them.
    ChannelDeleted { members: Vec<String> },
    /// `Read`: who read up to which message (and its `seq`), for the receipt.
    Read { user: String, message_id: String, seq: u64 },
    /// Anything else.
    Done,
}

/// Why a store refused a mutation or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("channel not found")]
    ChannelNotFound,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not a member of this channel")]
    NotMember,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("only the author may change this message")]
    NotAuthor,
    #[error("channel name is registered by another user")]
    NameTaken,
    #[error("that epoch is not the channel's head epoch")]
    StaleEpoch,
    #[error("a device inbox is full")]
    InboxFull,
    #[error("{0}")]
    Invalid(String),
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("store is shut down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Messages of a channel, by `seq` range and time range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRange {
    /// 1 ..= the configured page maximum.
    pub limit: u32,
    /// Only messages with `seq < before`, newest first.
    pub before: Option<u64>,
    /// Only messages with `seq > after`, oldest first.
    pub after: Option<u64>,
    /// Only messages at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Only messages at or before this time.
    pub to_ms: Option<i64>,
}

/// Receives every committed [`Applied`], in commit order, on the committing thread, before the
/// caller of `apply` is answered. It must not block: it hands events to queues and returns.
/// A backend with several writers (PostgreSQL's `writers`) calls it from each of them at once;
/// a channel's commits always come from one writer, so the order holds per channel.
pub trait CommitSink: Send + Sync + 'static {
    fn committed(&self, applied: &Applied);
}

/// Called by a backend's writer after every commit with the commit's latency (from the start
/// of the batch's first attempt to its durable `COMMIT`) and the number of mutations in the
/// batch, e.g. to feed a histogram. Every backend takes the same shape (`set_commit_observer`).
/// It runs on the writer: it must be quick.
pub type CommitObserver = Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

/// A sink that drops everything (for tools and tests that do not fan out).
#[derive(Debug, Default)]
pub struct NullSink;

impl CommitSink for NullSink {
    fn committed(&self, _: &Applied) {}
}

/// The channel store. See the crate doc for the guarantees.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies one mutation atomically and durably; see [`Mutation`] for each variant's rules.
    async fn apply(&self, m: Mutation) -> Result<Applied>;

    /// A channel of `app` by id or by name.
    async fn channel(&self, app: &str, id_or_name: &str) -> Result<Option<Channel>>;

    /// The members of a channel with their read markers.
    async fn members(&self, channel_id: &str) -> Result<Vec<Member>>;

    /// The channels `user` of `app` is a member of, with unread counts.
    async fn channels_of(&self, app: &str, user: &str) -> Result<Vec<ChannelSummary>>;

    /// Every named channel of `app` that `user` may join (open ones, and invite ones they are
    /// in; all of them with `admin`).
    async fn directory(&self, app: &str, user: &str, admin: bool) -> Result<Vec<DirectoryEntry>>;

    /// Messages (edits applied, deleted ones absent, with reactions); `has_more` tells whether
    /// more exist beyond the page in the direction of the query.
    async fn history(&self, channel_id: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)>;

    /// Raw log entries with `seq > after`, oldest first, at most `limit`; and `has_more`.
    async fn log(&self, channel_id: &str, after: u64, limit: u32) -> Result<(Vec<StoredEntry>, bool)>;

    /// The newest `seq` of a channel (0 when empty or unknown).
    async fn head_seq(&self, channel_id: &str) -> Result<u64>;

    /// The ids of the channels of `app` that `user` is a member of (the engine loads them when
    /// the user connects: its index holds online users only).
    async fn member_channels(&self, app: &str, user: &str) -> Result<Vec<String>>;

    /// Whether `user` is a member of channel `channel_id` of `app` (false for a channel of
    /// another app, or none).
    async fn is_member(&self, app: &str, channel_id: &str, user: &str) -> Result<bool>;

    /// Stops accepting writes, finishes those in flight, and flushes.
    async fn close(&self) -> Result<()>;

    /// Whether the store can serve: its writer is running and a read reaches the data. `Err`
    /// says what is wrong (for `/healthz`); it must answer quickly and never hang.
    async fn health(&self) -> Result<()>;

    /// The webhook delivery state ([`hooks`]). Every backend `herald serve` runs on (memory,
    /// SQLite, PostgreSQL) has it; a test double may not, and then webhooks cannot run on it.
    fn hooks(&self) -> Option<&dyn hooks::HookStore> {
        None
    }

    /// The end-to-end encryption state of the same backend (§7): devices, inboxes, commits
    /// and envelopes. Commits themselves are posted with [`Mutation::Rotate`].
    fn keys(&self) -> &dyn keys::KeyStore;
}

/// Content-addressed blob storage, scoped by channel.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` durably; returns the lowercase hex BLAKE3 of the bytes.
    async fn put(&self, channel_id: &str, bytes: bytes_like::Bytes) -> Result<String>;
    /// Stores shard `shard` of an erasure-coded file: a backend with several places (disks)
    /// puts it in place `shard mod n`, so the shards of one file land in distinct places when
    /// there are enough of them. The default is [`BlobStore::put`].
    async fn put_shard(&self, channel_id: &str, bytes: bytes_like::Bytes, shard: u32) -> Result<String> {
        let _ = shard;
        self.put(channel_id, bytes).await
    }
    /// The bytes of a blob, if the channel has it.
    async fn get(&self, channel_id: &str, blob_id: &str) -> Result<Option<bytes_like::Bytes>>;
    /// Removes every blob of a channel.
    async fn delete_channel(&self, channel_id: &str) -> Result<()>;
}

pub mod build;
pub mod hooks;
pub mod keys;
mod keys_memory;
pub mod memory;
pub mod testkit;
pub mod testkit_e2ee;

/// Checks a blob store's channel id: only the characters of a UUID, so that a backend may use
/// it as a directory name without it ever climbing out of the blob root. Every blob store
/// accepts and refuses the same ids.
pub fn check_blob_channel(channel_id: &str) -> Result<()> {
    let ok = !channel_id.is_empty()
        && channel_id.len() <= 64
        && channel_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(StoreError::Invalid(format!("invalid channel id {channel_id:?}"))) }
}

/// Checks a blob id: 64 lowercase hex digits (a BLAKE3 hash).
pub fn check_blob_id(blob_id: &str) -> Result<()> {
    let ok = blob_id.len() == 64 && blob_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        let shown: String = blob_id.chars().take(80).collect();
        Err(StoreError::Invalid(format!("blob id {shown:?} is not 64 lowercase hex digits")))
    }
}

/// Blobs are plain byte vectors at this boundary.
pub mod bytes_like {
    pub type Bytes = Vec<u8>;
}

/// Shared handle types.
pub type DynStore = Arc<dyn Store>;
pub type DynBlobStore = Arc<dyn BlobStore>;
