//! Webhook delivery state (PROTOCOL.md §9): what a node needs to deliver every channel event
//! to every webhook at least once, in `seq` order per channel, across restarts.
//!
//! The channel log is the outbox of its own events: a backend keeps, per (webhook, channel),
//! the highest `seq` delivered (a cursor), so whatever a crash interrupted is read again from
//! the log. A deleted channel leaves no log, so [`Mutation::DeleteChannel`] records it, in its
//! own transaction, in an outbox of deleted channels ([`DeletedChannel`]), which each webhook
//! acknowledges once it has delivered `channel_deleted`. A channel's not yet delivered log
//! events are erased with the channel (a hard delete erases content; only `channel_deleted`
//! is still sent). On several nodes a delivery lease per (webhook, channel) lets one node at
//! a time deliver a channel ([`HookStore::claim_hook`]).
//!
//! Webhooks are named by their URL: a new URL starts with no cursor, so it receives every
//! event still stored.
//!
//! Room presence keeps no log either: the node hosting a participant's connection writes its
//! changes to the presence outbox ([`PresenceOutbox`]), whose rows each webhook acknowledges
//! one by one and which is pruned once every configured webhook has acknowledged a row.
//!
//! [`Mutation::DeleteChannel`]: crate::Mutation::DeleteChannel

use crate::Result;
use async_trait::async_trait;

/// A channel with events past a webhook's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookBacklog {
    pub app: String,
    pub channel: String,
    /// The highest `seq` delivered to this webhook (0: none).
    pub delivered: u64,
    /// The channel's newest `seq`.
    pub head: u64,
}

/// A deleted channel, kept for the webhooks' `channel_deleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedChannel {
    pub app: String,
    pub channel: String,
    pub name: Option<String>,
    pub title: Option<String>,
    /// When it was deleted (ms since the epoch).
    pub ts_ms: i64,
}

/// The webhook state of a store. Every write resolves only once durable (as
/// [`crate::Store::apply`] does).
#[async_trait]
pub trait HookStore: PresenceOutbox + Send + Sync {
    /// The highest `seq` of `channel_id` delivered to `hook` (0 when none).
    async fn hook_cursor(&self, hook: &str, channel_id: &str) -> Result<u64>;

    /// Records that `hook` has every event of `channel_id` up to `seq`; a cursor never moves
    /// back (a lower `seq` changes nothing).
    async fn set_hook_cursor(&self, hook: &str, channel_id: &str, seq: u64) -> Result<()>;

    /// Channels whose head is past `hook`'s cursor, at most `limit`, in channel id order.
    async fn hook_backlog(&self, hook: &str, limit: u32) -> Result<Vec<HookBacklog>>;

    /// Deleted channels whose `channel_deleted` `hook` has not acknowledged, at most `limit`,
    /// oldest first.
    async fn hook_deleted(&self, hook: &str, limit: u32) -> Result<Vec<DeletedChannel>>;

    /// `hook` delivered the `channel_deleted` of `channel_id`.
    async fn ack_hook_deleted(&self, hook: &str, channel_id: &str) -> Result<()>;

    /// Takes or renews the lease of (`hook`, `channel_id`) for `node` until `until_ms`: true if
    /// `node` holds it now (it was free, expired at `now_ms`, or already this node's).
    async fn claim_hook(
        &self,
        hook: &str,
        channel_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;
}

/// A room presence event (`participant_added` / `participant_updated` /
/// `participant_removed`) waiting in the presence outbox for the webhooks. Rooms keep no log,
/// so the node hosting the participant's connection writes each change here; every webhook
/// acknowledges each row once it delivered it ([`HookStore::ack_hook_presence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The webhook `id` of the event, unique in the outbox: a second write of the same key is
    /// ignored (several nodes removing a dead node's participant write one row).
    pub key: String,
    pub app: String,
    /// The channel id of the room.
    pub channel: String,
    /// `participant_added`, `participant_updated` or `participant_removed`.
    pub event: String,
    /// The event as the WebSocket carries it (JSON text).
    pub data: String,
    /// When it happened (ms since the epoch).
    pub ts_ms: i64,
}

/// A row of the presence outbox: its place in the outbox (increasing in write order on one
/// node) and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub n: u64,
    pub event: PresenceEvent,
}

/// One write to the presence outbox, applied in order within [`PresenceOutbox::write_presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceWrite {
    /// An event for the webhooks (skipped when its `key` is already in the outbox).
    Event(PresenceEvent),
    /// `participant` of `channel` is present on `node`. The store keeps it, with `removal` (its
    /// `participant_removed`), until an [`PresenceWrite::Absent`] or until
    /// [`PresenceOutbox::close_presence`] of its node turns `removal` into an outbox event: a
    /// node killed with participants present leaves their removals to whoever starts next.
    Present { channel: String, participant: String, node: String, removal: PresenceEvent },
    /// `participant` of `channel` is no longer present (its removal was written, or it never
    /// will be).
    Absent { channel: String, participant: String },
}

/// The presence outbox of a store (schema version 4 on SQLite and PostgreSQL; the present
/// participants of [`PresenceWrite::Present`] since version 5). Every write resolves only once
/// durable.
#[async_trait]
pub trait PresenceOutbox: Send + Sync {
    /// Applies `writes`, in order, in one transaction.
    async fn write_presence(&self, writes: &[PresenceWrite]) -> Result<()>;

    /// Appends `events`, in order, in one transaction; an event whose `key` is already in the
    /// outbox is skipped.
    async fn add_presence(&self, events: &[PresenceEvent]) -> Result<()> {
        let writes: Vec<PresenceWrite> = events.iter().cloned().map(PresenceWrite::Event).collect();
        self.write_presence(&writes).await
    }

    /// Turns every participant still present on `node` into its removal in the outbox (with
    /// `ts_ms` = `now_ms`; a removal whose key is already there is skipped) and forgets them,
    /// in one transaction. Answers the rooms (app, channel id) it wrote to, each once.
    async fn close_presence(&self, node: &str, now_ms: i64) -> Result<Vec<(String, String)>>;

    /// The nodes with participants present, each once.
    async fn present_nodes(&self) -> Result<Vec<String>>;

    /// Rooms (app, channel id) with events `hook` has not acknowledged, at most `limit`.
    async fn presence_backlog(&self, hook: &str, limit: u32) -> Result<Vec<(String, String)>>;

    /// The events of `channel_id` that `hook` has not acknowledged, oldest first, at most
    /// `limit`.
    async fn hook_presence(&self, hook: &str, channel_id: &str, limit: u32) -> Result<Vec<PresenceRow>>;

    /// `hook` delivered the row `n`.
    async fn ack_hook_presence(&self, hook: &str, n: u64) -> Result<()>;

    /// Deletes the rows every one of `hooks` acknowledged (and their acknowledgements);
    /// answers how many rows went.
    async fn prune_presence(&self, hooks: &[String]) -> Result<u64>;
}
