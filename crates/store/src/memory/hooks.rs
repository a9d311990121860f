//! [`HookStore`] of the [`MemoryStore`]: the same semantics as SQLite's tables, in maps.

use super::MemoryStore;
use crate::Result;
use crate::StoreError;
use crate::hooks::{
    DeletedChannel, HookBacklog, HookStore, PresenceEvent, PresenceOutbox, PresenceRow, PresenceWrite,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// The presence outbox: n → event, and the keys in it.
    presence: BTreeMap<u64, PresenceEvent>,
    presence_keys: HashSet<String>,
    next_presence: u64,
    /// (webhook, n) delivered.
    presence_acks: HashSet<(String, u64)>,
    /// (channel, participant) → (node, its removal): the participants present.
    present: BTreeMap<(String, String), (String, PresenceEvent)>,
}

impl HookState {
    fn add_event(&mut self, e: &PresenceEvent) {
        if self.presence_keys.insert(e.key.clone()) {
            self.next_presence += 1;
            self.presence.insert(self.next_presence, e.clone());
        }
    }
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

#[async_trait]
impl PresenceOutbox for MemoryStore {
    async fn write_presence(&self, writes: &[PresenceWrite]) -> Result<()> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        let h = &mut state.hooks;
        for w in writes {
            match w {
                PresenceWrite::Event(e) => h.add_event(e),
                PresenceWrite::Present { channel, participant, node, removal } => {
                    h.present.insert((channel.clone(), participant.clone()), (node.clone(), removal.clone()));
                }
                PresenceWrite::Absent { channel, participant } => {
                    h.present.remove(&(channel.clone(), participant.clone()));
                }
            }
        }
        Ok(())
    }

    async fn close_presence(&self, node: &str, now_ms: i64) -> Result<Vec<(String, String)>> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        let h = &mut state.hooks;
        let gone: Vec<(String, String)> =
            h.present.iter().filter(|(_, (n, _))| n == node).map(|(k, _)| k.clone()).collect();
        let mut rooms = Vec::new();
        for k in gone {
            if let Some((_, mut removal)) = h.present.remove(&k) {
                removal.ts_ms = now_ms;
                let room = (removal.app.clone(), removal.channel.clone());
                if !rooms.contains(&room) {
                    rooms.push(room);
                }
                h.add_event(&removal);
            }
        }
        Ok(rooms)
    }

    async fn present_nodes(&self) -> Result<Vec<String>> {
        let state = self.state.lock();
        let nodes: std::collections::BTreeSet<String> =
            state.hooks.present.values().map(|(n, _)| n.clone()).collect();
        Ok(nodes.into_iter().collect())
    }

    async fn presence_backlog(&self, hook: &str, limit: u32) -> Result<Vec<(String, String)>> {
        let state = self.state.lock();
        let h = &state.hooks;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        for (n, e) in &h.presence {
            if out.len() >= limit as usize {
                break;
            }
            if !h.presence_acks.contains(&(hook.to_owned(), *n)) && seen.insert(e.channel.clone()) {
                out.push((e.app.clone(), e.channel.clone()));
            }
        }
        Ok(out)
    }

    async fn hook_presence(&self, hook: &str, channel_id: &str, limit: u32) -> Result<Vec<PresenceRow>> {
        let state = self.state.lock();
        let h = &state.hooks;
        Ok(h.presence
            .iter()
            .filter(|(n, e)| e.channel == channel_id && !h.presence_acks.contains(&(hook.to_owned(), **n)))
            .take(limit as usize)
            .map(|(n, e)| PresenceRow { n: *n, event: e.clone() })
            .collect())
    }

    async fn ack_hook_presence(&self, hook: &str, n: u64) -> Result<()> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        if state.hooks.presence.contains_key(&n) {
            state.hooks.presence_acks.insert((hook.to_owned(), n));
        }
        Ok(())
    }

    async fn prune_presence(&self, hooks: &[String]) -> Result<u64> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        if hooks.is_empty() {
            return Ok(0);
        }
        let h = &mut state.hooks;
        let done: Vec<u64> = h
            .presence
            .keys()
            .copied()
            .filter(|n| hooks.iter().all(|hook| h.presence_acks.contains(&(hook.clone(), *n))))
            .collect();
        for n in &done {
            if let Some(e) = h.presence.remove(n) {
                h.presence_keys.remove(&e.key);
            }
        }
        let gone: HashSet<u64> = done.iter().copied().collect();
        h.presence_acks.retain(|(_, n)| !gone.contains(n));
        Ok(done.len() as u64)
    }
}
