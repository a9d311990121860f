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
pub trait HookStore: Send + Sync {
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
