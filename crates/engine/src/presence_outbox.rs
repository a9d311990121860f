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
//! # Participants present when their node dies
//!
//! With `participant_removed` wanted, the recorder also keeps in the store which of its
//! participants are present ([`PresenceWrite::Present`], with the removal to write, then
//! [`PresenceWrite::Absent`]), in the same queue and transactions as the events. A node killed
//! with participants present leaves them there; their removals are written by
//! [`PresenceRecorder::close_node`]: for the node's own previous run when it starts again
//! (same node id; the writer does it before its first batch), for another node by every node that finds it dead (its heartbeats stopped),
//! and at start for every node with participants present that is not alive
//! ([`PresenceRecorder::close_dead_nodes`]).
//!
//! # Ids
//!
//! `<channel>:<participant>:added`, `<channel>:<participant>:updated:<k>` (k counts the
//! participant's updates on its node), `<channel>:<participant>:removed`: the same on every
//! retry, across restarts and nodes. Several nodes writing the removal of a dead node's
//! participant write one row (the key is unique in the outbox).

use crate::Clock;
use herald_store::DynStore;
use herald_store::hooks::{PresenceEvent, PresenceWrite};
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
    items: VecDeque<PresenceWrite>,
    /// The absolute index of `items[0]`.
    base: u64,
    /// `channel:participant` → absolute index of its queued update.
    updates: HashMap<String, u64>,
    /// `channel:participant` → absolute index of its queued [`PresenceWrite::Present`] (none
    /// queued after it for the participant).
    presents: HashMap<String, u64>,
    /// A batch taken from the queue is being written.
    in_flight: bool,
}

/// Which index of queued writes [`Queue::queued_mut`] looks in.
#[derive(Clone, Copy)]
enum Which {
    Update,
    Present,
}

impl Queue {
    /// The absolute index the next pushed write gets.
    fn next(&self) -> u64 {
        self.base + self.items.len() as u64
    }

    /// The queued update or present write of `slot`, if still in the queue.
    fn queued_mut(&mut self, which: Which, slot: &str) -> Option<&mut PresenceWrite> {
        let index = match which {
            Which::Update => &self.updates,
            Which::Present => &self.presents,
        };
        let abs = *index.get(slot)?;
        let i = usize::try_from(abs.checked_sub(self.base)?).ok()?;
        self.items.get_mut(i)
    }
}

/// The writer of a node's presence outbox. See the module doc.
pub struct PresenceRecorder {
    store: DynStore,
    clock: Arc<dyn Clock>,
    /// This node's id in the present participants' rows.
    node: String,
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
    /// A recorder of node `node` writing the events named in `events` (others are not
    /// recorded) to `store`, with its writer task (which ends once the recorder is dropped).
    pub fn start(
        store: DynStore,
        clock: Arc<dyn Clock>,
        node: String,
        events: HashSet<String>,
        max: usize,
        on_written: OnWritten,
    ) -> Arc<PresenceRecorder> {
        let r = Arc::new(PresenceRecorder {
            store,
            clock,
            node,
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

    /// Queues one change of a participant of this node; `data` is the event JSON, `removal`
    /// (for an add or an update) the JSON of the participant's `participant_removed` as it
    /// would be now.
    pub fn record(
        &self,
        app: &str,
        channel: &str,
        pid: &str,
        kind: PresenceKind,
        data: String,
        removal: Option<String>,
    ) {
        let event = kind.event();
        let wanted = self.events.contains(event);
        // Removals wanted: whether the participant is present is kept too (module doc).
        let track = self.events.contains(PresenceKind::Removed.event());
        if !wanted && !track {
            return;
        }
        let ts_ms = self.clock.now_ms();
        let slot = format!("{channel}:{pid}");
        let ev = |key: String, event: &str, data: String| PresenceEvent {
            key,
            app: app.to_owned(),
            channel: channel.to_owned(),
            event: event.to_owned(),
            data,
            ts_ms,
        };
        let mut q = self.queue.lock();
        if wanted {
            match kind {
                PresenceKind::Updated(k) => {
                    if let Some(PresenceWrite::Event(item)) = q.queued_mut(Which::Update, &slot) {
                        item.data = data;
                        item.ts_ms = ts_ms;
                        self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    } else if !self.full(&q) {
                        let abs = q.next();
                        q.updates.insert(slot.clone(), abs);
                        q.items.push_back(PresenceWrite::Event(ev(
                            format!("{slot}:updated:{k}"),
                            event,
                            data,
                        )));
                    }
                }
                PresenceKind::Added | PresenceKind::Removed => {
                    if !self.full(&q) {
                        q.updates.remove(&slot);
                        let suffix = if kind == PresenceKind::Added { "added" } else { "removed" };
                        q.items.push_back(PresenceWrite::Event(ev(format!("{slot}:{suffix}"), event, data)));
                    }
                }
            }
        }
        if track {
            match (kind, removal) {
                (PresenceKind::Removed, _) => {
                    if !self.full(&q) {
                        q.presents.remove(&slot);
                        q.items.push_back(PresenceWrite::Absent {
                            channel: channel.to_owned(),
                            participant: pid.to_owned(),
                        });
                    }
                }
                (_, Some(removal)) => {
                    let removal = ev(format!("{slot}:removed"), PresenceKind::Removed.event(), removal);
                    if let Some(PresenceWrite::Present { removal: queued, .. }) =
                        q.queued_mut(Which::Present, &slot)
                    {
                        *queued = removal;
                    } else if !self.full(&q) {
                        let abs = q.next();
                        q.presents.insert(slot.clone(), abs);
                        q.items.push_back(PresenceWrite::Present {
                            channel: channel.to_owned(),
                            participant: pid.to_owned(),
                            node: self.node.clone(),
                            removal,
                        });
                    }
                }
                (_, None) => {}
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Writes the removals of the participants `node` left present (it died, or it is this
    /// node's previous run) and forgets them; retried with backoff until the store answers
    /// (false once it is closed).
    pub async fn close_node(&self, node: &str) -> bool {
        let Some(h) = self.store.hooks() else { return false };
        let what = format!("cannot write the removals node {node} left");
        let Some(rooms) = until_answered(&what, || h.close_presence(node, self.clock.now_ms())).await else {
            return false;
        };
        if !rooms.is_empty() {
            tracing::info!(
                node,
                rooms = rooms.len(),
                "webhooks: removals written for the participants a stopped node left"
            );
            (self.on_written)(&rooms);
        }
        true
    }

    /// At start, once `broker` can tell which nodes are alive: writes off every other node
    /// with participants present that is not. (This node's previous run, same id, the writer
    /// writes off before its first batch.)
    pub async fn close_dead_nodes(&self, broker: &dyn crate::broker::Broker) {
        while broker.live_nodes().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(h) = self.store.hooks() else { return };
        // The nodes present first, then the live ones: a node that wrote rows had said it is
        // alive before, so it is in the answer read after.
        let what = "cannot read the nodes with participants present";
        let Some(present) = until_answered(what, || h.present_nodes()).await else { return };
        let Some(live) = broker.live_nodes() else { return };
        for node in present {
            if node != self.node && !live.contains(&node) && !self.close_node(&node).await {
                return;
            }
        }
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

    /// Writes queued or being written (events, and which participants are present).
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

    fn take_batch(&self) -> Vec<PresenceWrite> {
        let mut q = self.queue.lock();
        let n = q.items.len().min(BATCH);
        let batch: Vec<PresenceWrite> = q.items.drain(..n).collect();
        q.base += n as u64;
        let base = q.base;
        q.updates.retain(|_, abs| *abs >= base);
        q.presents.retain(|_, abs| *abs >= base);
        q.in_flight = !batch.is_empty();
        batch
    }
}

/// Runs `op` until the store answers it, backing off from 50 ms to 5 s after each failure
/// (logged: `what`); `None` once the store is closed.
async fn until_answered<T, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> Option<T>
where
    Fut: std::future::Future<Output = herald_store::Result<T>>,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(herald_store::StoreError::Closed) => return None,
            Err(e) => tracing::warn!(error = %e, "{what}; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn writer(recorder: Weak<PresenceRecorder>) {
    // What this node's previous run (same id) left present goes before anything of this run.
    if let Some(r) = recorder.upgrade() {
        let node = r.node.clone();
        r.close_node(&node).await;
    }
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
        let written = match r.store.hooks() {
            Some(h) => {
                let what = format!("cannot write {} rows to the webhook presence outbox", batch.len());
                until_answered(&what, || h.write_presence(&batch)).await.is_some()
            }
            None => {
                tracing::warn!("this store keeps no webhook state: presence events dropped");
                false
            }
        };
        let counter = if written { &r.stats.written } else { &r.stats.dropped };
        let events = batch.iter().filter(|w| matches!(w, PresenceWrite::Event(_))).count();
        counter.fetch_add(events as u64, Ordering::Relaxed);
        r.queue.lock().in_flight = false;
        let mut rooms: Vec<(String, String)> = batch
            .iter()
            .filter_map(|w| match w {
                PresenceWrite::Event(e) => Some((e.app.clone(), e.channel.clone())),
                _ => None,
            })
            .collect();
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
                "n1".to_owned(),
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
            r.record(
                "app",
                "room",
                &format!("p{i:04}"),
                PresenceKind::Added,
                format!(r#"{{"i":{i}}}"#),
                None,
            );
        }
        for k in 1..=2 {
            for i in 0..5000 {
                r.record(
                    "app",
                    "room",
                    &format!("p{i:04}"),
                    PresenceKind::Updated(k),
                    format!(r#"{{"k":{k}}}"#),
                    None,
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
            r.record("app", "room", &format!("p{i}"), PresenceKind::Added, "{}".into(), None);
        }
        assert_eq!(r.pending(), 10);
        assert_eq!(r.stats.dropped.load(Ordering::Relaxed), 5);
        // Events not asked for are not recorded at all.
        let store: DynStore = Arc::new(MemoryStore::new(Arc::new(herald_store::NullSink)));
        let only_removed: HashSet<String> = ["participant_removed".to_owned()].into();
        let r2 = PresenceRecorder::start(
            store,
            Arc::new(crate::SystemClock),
            "n1".to_owned(),
            only_removed,
            10,
            Box::new(|_| {}),
        );
        r2.record("app", "room", "p", PresenceKind::Added, "{}".into(), None);
        r2.record("app", "room", "p", PresenceKind::Updated(1), "{}".into(), None);
        assert_eq!(r2.pending(), 0);
        // The removal, and that the participant is no longer present.
        r2.record("app", "room", "p", PresenceKind::Removed, "{}".into(), None);
        assert_eq!(r2.pending(), 2);
    }

    /// With removals wanted, the participants present are kept in the store (the latest
    /// attributes in their removal, folded while queued); one that left is not; closing the
    /// node writes the removals of those still there, and a second close writes nothing.
    #[tokio::test]
    async fn present_participants_are_written_off_when_their_node_is_closed() {
        let batches = Arc::new(AtomicU64::new(0));
        let (r, store) = recorder(1000, batches.clone());
        let removal =
            |p: &str, v: u32| Some(format!(r#"{{"event":"participant_removed","p":"{p}","v":{v}}}"#));
        for p in ["a", "b", "c"] {
            r.record("app", "room", p, PresenceKind::Added, "{}".into(), removal(p, 0));
        }
        r.record("app", "room", "a", PresenceKind::Updated(1), "{}".into(), removal("a", 1));
        r.record("app", "room", "a", PresenceKind::Updated(2), "{}".into(), removal("a", 2));
        r.record("app", "room", "b", PresenceKind::Removed, r#"{"left":"b"}"#.into(), None);
        // 3 adds, 1 update (folded), 1 removal; 3 presents (a's folded), b's absence.
        assert_eq!(r.pending(), 9);
        assert!(r.flush(Duration::from_secs(10)).await);
        assert_eq!(r.stats.written.load(Ordering::Relaxed), 5, "events only");
        let h = store.hooks().unwrap();
        assert_eq!(h.present_nodes().await.unwrap(), vec!["n1".to_owned()]);
        assert!(r.close_node("n1").await);
        assert!(h.present_nodes().await.unwrap().is_empty());
        let rows = h.hook_presence("hook", "room", 100).await.unwrap();
        let removed: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.event.event == "participant_removed")
            .map(|r| (r.event.key.as_str(), r.event.data.as_str()))
            .collect();
        assert_eq!(
            removed,
            vec![
                ("room:b:removed", r#"{"left":"b"}"#),
                ("room:a:removed", r#"{"event":"participant_removed","p":"a","v":2}"#),
                ("room:c:removed", r#"{"event":"participant_removed","p":"c","v":0}"#),
            ]
        );
        assert!(r.close_node("n1").await);
        assert_eq!(h.hook_presence("hook", "room", 100).await.unwrap().len(), rows.len(), "nothing twice");
    }
}
