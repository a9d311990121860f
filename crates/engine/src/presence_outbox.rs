//! Room presence for the webhooks (PROTOCOL.md §9, docs §K.3): the node hosting a
//! participant's connection writes each `participant_added` / `_updated` / `_removed` of it to
//! the store's presence outbox ([`herald_store::hooks::PresenceOutbox`]), from which every
//! node's webhook dispatcher delivers.
//!
//! # Bounded, batched, coalesced
//!
//! Changes wait in a queue of at most `max` events (`--webhook-presence-queue`) and a writer
//! task appends them in batches of up to [`BATCH`] rows, one transaction each: a room of 5,000
//! entering at once is 5,000 rows in ten transactions, O(n) (webhook events are per
//! participant, not per recipient). An update of a participant whose previous update is still
//! queued replaces it (the latest attributes, the first one's id); adds and removals are never
//! folded, so a receiver sees every participant that entered. While the store fails the batch
//! is retried with backoff and the queue fills; what does not fit is dropped, counted
//! (`herald_webhook_presence_dropped_total`) and logged.
//!
//! # Ids
//!
//! `<channel>:<participant>:added`, `<channel>:<participant>:updated:<k>` (k counts the
//! participant's updates on its node), `<channel>:<participant>:removed`: the same on every
//! retry, across restarts and nodes. Several nodes writing the removal of a dead node's
//! participant write one row (the key is unique in the outbox).

use crate::Clock;
use herald_store::DynStore;
use herald_store::hooks::PresenceEvent;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Rows per outbox transaction.
pub const BATCH: usize = 500;

/// Called after each written batch with the rooms (app, channel id) it touched.
pub type OnWritten = Box<dyn Fn(&[(String, String)]) + Send + Sync>;

/// What the recorder counted.
#[derive(Debug, Default)]
pub struct PresenceStats {
    /// Events written to the outbox.
    pub written: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Updates folded into a queued one.
    pub coalesced: AtomicU64,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<PresenceEvent>,
    /// The absolute index of `items[0]`.
    base: u64,
    /// `channel:participant` → absolute index of its queued update.
    updates: HashMap<String, u64>,
    /// A batch taken from the queue is being written.
    in_flight: bool,
}

/// The writer of a node's presence outbox. See the module doc.
pub struct PresenceRecorder {
    store: DynStore,
    clock: Arc<dyn Clock>,
    events: HashSet<String>,
    max: usize,
    queue: Mutex<Queue>,
    wake: Arc<Notify>,
    idle: Notify,
    on_written: OnWritten,
    warned: AtomicBool,
    pub stats: PresenceStats,
}

impl std::fmt::Debug for PresenceRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceRecorder").field("max", &self.max).finish_non_exhaustive()
    }
}

/// The kinds of change the recorder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Added,
    /// The participant's k-th update on its node.
    Updated(u64),
    Removed,
}

impl PresenceKind {
    pub fn event(self) -> &'static str {
        match self {
            PresenceKind::Added => "participant_added",
            PresenceKind::Updated(_) => "participant_updated",
            PresenceKind::Removed => "participant_removed",
        }
    }
}

impl PresenceRecorder {
    /// A recorder writing the events named in `events` (others are not recorded) to `store`,
    /// with its writer task (which ends once the recorder is dropped).
    pub fn start(
        store: DynStore,
        clock: Arc<dyn Clock>,
        events: HashSet<String>,
        max: usize,
        on_written: OnWritten,
    ) -> Arc<PresenceRecorder> {
        let r = Arc::new(PresenceRecorder {
            store,
            clock,
            events,
            max: max.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Arc::new(Notify::new()),
            idle: Notify::new(),
            on_written,
            warned: AtomicBool::new(false),
            stats: PresenceStats::default(),
        });
        tokio::spawn(writer(Arc::downgrade(&r)));
        r
    }

    /// Queues one change of a participant of this node; `data` is the event JSON.
    pub fn record(&self, app: &str, channel: &str, pid: &str, kind: PresenceKind, data: String) {
        let event = kind.event();
        if !self.events.contains(event) {
            return;
        }
        let ts_ms = self.clock.now_ms();
        let slot = format!("{channel}:{pid}");
        let mut q = self.queue.lock();
        match kind {
            PresenceKind::Updated(k) => {
                if let Some(&abs) = q.updates.get(&slot)
                    && abs >= q.base
                {
                    let i = usize::try_from(abs - q.base).unwrap_or(usize::MAX);
                    if let Some(item) = q.items.get_mut(i) {
                        item.data = data;
                        item.ts_ms = ts_ms;
                        self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if self.full(&q) {
                    return;
                }
                let abs = q.base + q.items.len() as u64;
                q.updates.insert(slot.clone(), abs);
                q.items.push_back(PresenceEvent {
                    key: format!("{slot}:updated:{k}"),
                    app: app.to_owned(),
                    channel: channel.to_owned(),
                    event: event.to_owned(),
                    data,
                    ts_ms,
                });
            }
            PresenceKind::Added | PresenceKind::Removed => {
                if self.full(&q) {
                    return;
                }
                q.updates.remove(&slot);
                let suffix = if kind == PresenceKind::Added { "added" } else { "removed" };
                q.items.push_back(PresenceEvent {
                    key: format!("{slot}:{suffix}"),
                    app: app.to_owned(),
                    channel: channel.to_owned(),
                    event: event.to_owned(),
                    data,
                    ts_ms,
                });
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    fn full(&self, q: &Queue) -> bool {
        if q.items.len() < self.max {
            return false;
        }
        let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) || n.is_multiple_of(1000) {
            tracing::warn!(
                max = self.max,
                dropped = n + 1,
                "webhook presence queue full (the store is slow or down): presence events dropped"
            );
        }
        true
    }

    /// Events queued or being written.
    pub fn pending(&self) -> usize {
        let q = self.queue.lock();
        q.items.len() + usize::from(q.in_flight)
    }

    /// Waits until everything queued so far is written (or `timeout` passes): a node stopping
    /// calls it after its connections closed, so their removals are in the outbox.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let done = async {
            loop {
                let idle = self.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                self.wake.notify_one();
                idle.await;
            }
        };
        tokio::time::timeout(timeout, done).await.is_ok()
    }

    fn take_batch(&self) -> Vec<PresenceEvent> {
        let mut q = self.queue.lock();
        let n = q.items.len().min(BATCH);
        let batch: Vec<PresenceEvent> = q.items.drain(..n).collect();
        q.base += n as u64;
        let base = q.base;
        q.updates.retain(|_, abs| *abs >= base);
        q.in_flight = !batch.is_empty();
        batch
    }
}

async fn writer(recorder: Weak<PresenceRecorder>) {
    loop {
        let Some(r) = recorder.upgrade() else { return };
        let batch = r.take_batch();
        if batch.is_empty() {
            r.idle.notify_waiters();
            let wake = r.wake.clone();
            drop(r);
            // Re-check now and then that the recorder still exists. A `notify_one` meanwhile
            // left a permit: this returns at once.
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            continue;
        }
        let mut backoff = Duration::from_millis(50);
        let written = loop {
            let Some(h) = r.store.hooks() else {
                tracing::warn!("this store keeps no webhook state: presence events dropped");
                break false;
            };
            match h.add_presence(&batch).await {
                Ok(()) => break true,
                Err(herald_store::StoreError::Closed) => break false,
                Err(e) => {
                    tracing::warn!(error = %e, rows = batch.len(), "cannot write the webhook presence outbox; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        let counter = if written { &r.stats.written } else { &r.stats.dropped };
        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        r.queue.lock().in_flight = false;
        let mut rooms: Vec<(String, String)> =
            batch.iter().map(|e| (e.app.clone(), e.channel.clone())).collect();
        rooms.sort();
        rooms.dedup();
        (r.on_written)(&rooms);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use herald_store::memory::MemoryStore;

    fn all_events() -> HashSet<String> {
        ["participant_added", "participant_updated", "participant_removed"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn recorder(max: usize, batches: Arc<AtomicU64>) -> (Arc<PresenceRecorder>, DynStore) {
        let store: DynStore = Arc::new(MemoryStore::new(Arc::new(herald_store::NullSink)));
        let on_written: OnWritten = Box::new(move |_| {
            batches.fetch_add(1, Ordering::Relaxed);
        });
        (
            PresenceRecorder::start(
                store.clone(),
                Arc::new(crate::SystemClock),
                all_events(),
                max,
                on_written,
            ),
            store,
        )
    }

    /// A room of 5,000 entering, each updating twice before anything is written: 5,000 adds
    /// and 5,000 updates (the second of each folded into the first) in 20 transactions of
    /// 500, not one per event, and never O(n²).
    #[tokio::test]
    async fn five_thousand_entering_are_batched_and_updates_coalesced() {
        let batches = Arc::new(AtomicU64::new(0));
        let (r, store) = recorder(100_000, batches.clone());
        // The writer task cannot run until the test awaits (a current-thread runtime).
        for i in 0..5000 {
            r.record("app", "room", &format!("p{i:04}"), PresenceKind::Added, format!(r#"{{"i":{i}}}"#));
        }
        for k in 1..=2 {
            for i in 0..5000 {
                r.record(
                    "app",
                    "room",
                    &format!("p{i:04}"),
                    PresenceKind::Updated(k),
                    format!(r#"{{"k":{k}}}"#),
                );
            }
        }
        assert_eq!(r.pending(), 10_000);
        assert_eq!(r.stats.coalesced.load(Ordering::Relaxed), 5000);
        assert!(r.flush(Duration::from_secs(30)).await);
        assert_eq!(r.stats.written.load(Ordering::Relaxed), 10_000);
        assert_eq!(batches.load(Ordering::Relaxed), 20, "batches of {BATCH}");
        let h = store.hooks().unwrap();
        let rows = h.hook_presence("hook", "room", 10_000).await.unwrap();
        assert_eq!(rows.len(), 10_000);
        let p7: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.event.key.starts_with("room:p0007:"))
            .map(|r| (r.event.key.as_str(), r.event.data.as_str()))
            .collect();
        assert_eq!(
            p7,
            vec![("room:p0007:added", r#"{"i":7}"#), ("room:p0007:updated:1", r#"{"k":2}"#)],
            "latest data, first id"
        );
    }

    /// The queue is bounded: past `max`, events are dropped and counted, never queued.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (r, _store) = recorder(10, Arc::new(AtomicU64::new(0)));
        for i in 0..15 {
            r.record("app", "room", &format!("p{i}"), PresenceKind::Added, "{}".into());
        }
        assert_eq!(r.pending(), 10);
        assert_eq!(r.stats.dropped.load(Ordering::Relaxed), 5);
        // Events not asked for are not recorded at all.
        let store: DynStore = Arc::new(MemoryStore::new(Arc::new(herald_store::NullSink)));
        let only_removed: HashSet<String> = ["participant_removed".to_owned()].into();
        let r2 =
            PresenceRecorder::start(store, Arc::new(crate::SystemClock), only_removed, 10, Box::new(|_| {}));
        r2.record("app", "room", "p", PresenceKind::Added, "{}".into());
        r2.record("app", "room", "p", PresenceKind::Updated(1), "{}".into());
        assert_eq!(r2.pending(), 0);
        r2.record("app", "room", "p", PresenceKind::Removed, "{}".into());
        assert_eq!(r2.pending(), 1);
    }
}
