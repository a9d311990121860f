//! [`HookStore`] of the [`MemoryStore`]: the same semantics as SQLite's tables, in maps.

use super::MemoryStore;
use crate::Result;
use crate::StoreError;
use crate::hooks::{DeletedChannel, HookBacklog, HookStore};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};

/// The webhooks' part of the memory store's state.
#[derive(Debug, Default)]
pub(super) struct HookState {
    /// (webhook, channel) → highest `seq` delivered.
    cursors: HashMap<(String, String), u64>,
    /// Deleted channels, oldest first.
    pub(super) deleted: Vec<DeletedChannel>,
    /// (webhook, channel) whose `channel_deleted` was delivered.
    acked: HashSet<(String, String)>,
    /// (webhook, channel) → (node, until ms).
    leases: HashMap<(String, String), (String, i64)>,
}

fn key(hook: &str, channel: &str) -> (String, String) {
    (hook.to_owned(), channel.to_owned())
}

#[async_trait]
impl HookStore for MemoryStore {
    async fn hook_cursor(&self, hook: &str, channel_id: &str) -> Result<u64> {
        Ok(self.state.lock().hooks.cursors.get(&key(hook, channel_id)).copied().unwrap_or(0))
    }

    async fn set_hook_cursor(&self, hook: &str, channel_id: &str, seq: u64) -> Result<()> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        let c = state.hooks.cursors.entry(key(hook, channel_id)).or_insert(0);
        *c = (*c).max(seq);
        Ok(())
    }

    async fn hook_backlog(&self, hook: &str, limit: u32) -> Result<Vec<HookBacklog>> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for (id, ch) in &state.channels {
            let head = ch.head().0;
            let delivered = state.hooks.cursors.get(&key(hook, id)).copied().unwrap_or(0);
            if head > delivered {
                out.push(HookBacklog { app: ch.row.app.clone(), channel: id.clone(), delivered, head });
                if out.len() >= limit as usize {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn hook_deleted(&self, hook: &str, limit: u32) -> Result<Vec<DeletedChannel>> {
        let state = self.state.lock();
        Ok(state
            .hooks
            .deleted
            .iter()
            .filter(|d| !state.hooks.acked.contains(&key(hook, &d.channel)))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn ack_hook_deleted(&self, hook: &str, channel_id: &str) -> Result<()> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        state.hooks.acked.insert(key(hook, channel_id));
        Ok(())
    }

    async fn claim_hook(
        &self,
        hook: &str,
        channel_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        let lease =
            state.hooks.leases.entry(key(hook, channel_id)).or_insert_with(|| (node.to_owned(), i64::MIN));
        if lease.0 == node || lease.1 < now_ms {
            *lease = (node.to_owned(), until_ms);
            return Ok(true);
        }
        Ok(false)
    }
}
