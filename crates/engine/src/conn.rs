//! One connection's shared state: its bounded outbound queue, the kick that closes a consumer
//! too far behind, and the resume buffer that keeps replayed and live events in order.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// One serialized frame (JSON text) ready for the socket; shared by every recipient.
pub type Outbound = Bytes;

/// The bounds of one connection's outbound queue: frames and bytes, whichever is reached
/// first. Fan-out past either kicks the connection (4008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

/// A connection's outbound queue: frames in order, bounded in frames by the hub's limits.
///
/// Not a `tokio::sync::mpsc` channel: that allocates its first block of 32 slots (over 1 KiB)
/// when made and keeps it for the connection's life, while most connections are idle; this
/// queue holds no memory while empty (`bench idle`). One consumer (the socket writer), woken
/// through `ready`, whose stored permit covers a push between its check and its wait.
struct Queue {
    frames: VecDeque<Bytes>,
    /// The receiver closed or dropped: pushes fail, what is queued can still be taken.
    closed: bool,
}

/// Frames a queue keeps room for once drained; above it the buffer is released.
const QUEUE_KEEP: usize = 64;

/// Why [`OutboundRx::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    /// Closed and drained.
    Closed,
}

/// The receiving end of a connection's outbound queue: the socket writer drains it.
pub struct OutboundRx {
    conn: Arc<ConnShared>,
}

impl std::fmt::Debug for OutboundRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRx").field("conn", &self.conn.conn_id).finish()
    }
}

impl OutboundRx {
    /// Takes up to `limit` frames into `buf`, waiting for at least one; 0 once the queue is
    /// closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        loop {
            match self.take(buf, limit.max(1)) {
                Ok(n) => return n,
                Err(TryRecvError::Closed) => return 0,
                Err(TryRecvError::Empty) => self.conn.ready.notified().await,
            }
        }
    }

    /// The next frame, waiting for one; `None` once the queue is closed and empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.try_recv() {
                Ok(frame) => return Some(frame),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => self.conn.ready.notified().await,
            }
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Bytes, TryRecvError> {
        let mut q = self.conn.queue.lock();
        let Some(frame) = q.frames.pop_front() else {
            return Err(if q.closed { TryRecvError::Closed } else { TryRecvError::Empty });
        };
        self.taken(q, frame.len());
        Ok(frame)
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.conn.queue.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further frames; those already queued can still be taken.
    pub fn close(&mut self) {
        self.conn.queue.lock().closed = true;
        // A sender waiting for room learns it is closed.
        self.conn.drained.notify_waiters();
    }

    fn take(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> Result<usize, TryRecvError> {
        let mut q = self.conn.queue.lock();
        if q.frames.is_empty() {
            return Err(if q.closed { TryRecvError::Closed } else { TryRecvError::Empty });
        }
        let n = limit.min(q.frames.len());
        let from = buf.len();
        buf.extend(q.frames.drain(..n));
        self.taken(q, buf[from..].iter().map(Bytes::len).sum());
        Ok(n)
    }

    /// After frames of `bytes` in all were taken off `q`: releases a large emptied buffer,
    /// uncounts the bytes (under the lock, as pushes count them, so the count never runs
    /// behind the queue) and wakes the senders waiting for room (`send`, `send_paced`).
    fn taken(&self, mut q: parking_lot::MutexGuard<'_, Queue>, bytes: usize) {
        if q.frames.is_empty() && q.frames.capacity() > QUEUE_KEEP {
            q.frames = VecDeque::new();
        }
        self.conn.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        drop(q);
        self.conn.drained.notify_waiters();
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        self.close();
        self.conn.queue.lock().frames.clear();
    }
}

/// Live events held back during a replay, with their total size kept as they arrive (not
/// summed again on every push).
#[derive(Default)]
struct Held {
    frames: Vec<(u64, Bytes)>,
    bytes: usize,
}

/// Where a resumed channel stands for this connection.
enum ResumeState {
    /// The replay is running: live events wait here, in commit order.
    Buffering(Held),
    /// The replay is done up to `floor`: live events at or below it are duplicates.
    Live { floor: u64 },
}

/// The part of a connection the hub holds.
pub struct ConnShared {
    pub(crate) key: u64,
    pub conn_id: String,
    pub app: Arc<str>,
    pub user: Arc<str>,
    queue: Mutex<Queue>,
    /// Signalled on every push: the socket writer waits on it.
    ready: Notify,
    capacity: usize,
    max_bytes: usize,
    /// Bytes queued and not yet taken by the writer.
    queued_bytes: AtomicUsize,
    kicked: AtomicBool,
    kick: Notify,
    /// Closed by the app's backend (`Envelope::Disconnect`), not for being slow.
    disconnected: AtomicBool,
    /// Signalled each time frames are taken off the queue (and when it closes): senders
    /// waiting for room (the resume replay, replies) wait on it.
    drained: Notify,
    resuming: AtomicBool,
    resume: Mutex<HashMap<String, ResumeState>>,
    pub(crate) subjects: Mutex<Vec<String>>,
    /// The channels the hub indexes this connection under (its user's memberships).
    pub(crate) channels: Mutex<rustc_hash::FxHashSet<String>>,
    /// The device this connection declared at `connect` (§7), and whether it holds the
    /// `keeper` grant: set once, before the hub indexes it by them.
    pub(crate) e2ee: Mutex<(Option<String>, bool)>,
    /// While the device's inbox is being sent (§7): live DMs wait here (id, frame), in order.
    dm_hold: Mutex<Option<Vec<(String, Bytes)>>>,
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared").field("conn_id", &self.conn_id).field("user", &self.user).finish()
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Held back (resume in progress) or dropped as a duplicate.
    Held,
    /// The queue was full: the connection is kicked.
    Overflow,
    Closed,
}

impl ConnShared {
    pub(crate) fn new(
        key: u64,
        conn_id: String,
        app: Arc<str>,
        user: Arc<str>,
        limits: QueueLimits,
    ) -> (Arc<ConnShared>, OutboundRx) {
        let capacity = limits.frames.max(1);
        let shared = Arc::new(ConnShared {
            key,
            conn_id,
            app,
            user,
            queue: Mutex::new(Queue { frames: VecDeque::new(), closed: false }),
            ready: Notify::new(),
            capacity,
            max_bytes: limits.bytes.max(1),
            queued_bytes: AtomicUsize::new(0),
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
            disconnected: AtomicBool::new(false),
            drained: Notify::new(),
            resuming: AtomicBool::new(false),
            resume: Mutex::new(HashMap::new()),
            subjects: Mutex::new(Vec::new()),
            channels: Mutex::new(rustc_hash::FxHashSet::default()),
            e2ee: Mutex::new((None, false)),
            dm_hold: Mutex::new(None),
        });
        let rx = OutboundRx { conn: shared.clone() };
        (shared, rx)
    }

    /// Appends a frame if the queue has room (frames; bytes are checked by the callers).
    fn enqueue(&self, frame: &Bytes) -> Result<(), Pushed> {
        let mut q = self.queue.lock();
        if q.closed {
            return Err(Pushed::Closed);
        }
        if q.frames.len() >= self.capacity {
            return Err(Pushed::Overflow);
        }
        q.frames.push_back(frame.clone());
        // Counted under the lock, so the writer never takes a frame before its bytes are in.
        self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Free frame slots in the queue.
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queue.lock().frames.len())
    }

    fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Queues a frame without waiting. A full queue kicks the connection: a consumer that far
    /// behind is closed (code 4008) and resumes from its last `seq`, rather than slowing the
    /// writer or growing memory.
    pub(crate) fn try_push(&self, frame: &Bytes) -> Pushed {
        if self.is_kicked() {
            // Going away: queue nothing more, and count the kick once.
            return Pushed::Closed;
        }
        if self.queued_bytes.load(Ordering::Relaxed) + frame.len() > self.max_bytes {
            return if self.kick() { Pushed::Overflow } else { Pushed::Closed };
        }
        match self.enqueue(frame) {
            Ok(()) => Pushed::Queued,
            Err(Pushed::Overflow) => {
                if self.kick() {
                    Pushed::Overflow
                } else {
                    Pushed::Closed
                }
            }
            Err(other) => other,
        }
    }

    /// The device this connection declared, if any.
    pub fn device(&self) -> Option<String> {
        self.e2ee.lock().0.clone()
    }

    /// Starts holding live DMs back (the inbox is about to be sent).
    pub(crate) fn hold_dms(&self) {
        *self.dm_hold.lock() = Some(Vec::new());
    }

    /// Queues a live DM, or holds it while the inbox is being sent (bounded like the queue).
    pub(crate) fn push_dm(&self, id: &str, frame: &Bytes) -> Pushed {
        let mut hold = self.dm_hold.lock();
        if let Some(held) = hold.as_mut() {
            if held.len() >= self.capacity {
                drop(hold);
                return if self.kick() { Pushed::Overflow } else { Pushed::Closed };
            }
            held.push((id.to_owned(), frame.clone()));
            return Pushed::Held;
        }
        self.try_push(frame)
    }

    /// The inbox has been sent (its ids in `sent`): queues the DMs held meanwhile that it did
    /// not contain, in arrival order, then lets live DMs through.
    pub(crate) fn release_dms(&self, sent: &std::collections::HashSet<String>) {
        let mut hold = self.dm_hold.lock();
        for (id, frame) in hold.take().unwrap_or_default() {
            if !sent.contains(&id) {
                self.try_push(&frame);
            }
        }
    }

    /// Queues a channel event, honouring a resume in progress for that channel.
    pub(crate) fn push_event(&self, channel: &str, seq: Option<u64>, frame: &Bytes) -> Pushed {
        if let Some(seq) = seq
            && self.resuming.load(Ordering::Acquire)
        {
            let mut resume = self.resume.lock();
            match resume.get_mut(channel) {
                Some(ResumeState::Buffering(held)) => {
                    if held.frames.len() >= self.capacity || held.bytes + frame.len() > self.max_bytes {
                        drop(resume);
                        return if self.kick() { Pushed::Overflow } else { Pushed::Closed };
                    }
                    held.bytes += frame.len();
                    held.frames.push((seq, frame.clone()));
                    return Pushed::Held;
                }
                Some(ResumeState::Live { floor }) if seq <= *floor => return Pushed::Held,
                _ => {}
            }
        }
        self.try_push(frame)
    }

    /// Queues a frame, waiting for room (replies and replays: the connection's own work).
    /// False if the connection went away.
    pub async fn send(&self, frame: Bytes) -> bool {
        loop {
            // Made before the attempt: a `notify_waiters` (a drain) after this point wakes it
            // even before it is first polled, so a drain between a full queue and the wait is
            // not missed. Making one is an atomic load; nothing is registered until it waits.
            let drained = self.drained.notified();
            match self.enqueue(&frame) {
                Ok(()) => return true,
                Err(Pushed::Overflow) => drained.await,
                Err(_) => return false,
            }
        }
    }

    /// Bytes in the queue now.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Queues a frame of a bulk transfer (the resume replay) only while the queue is at most
    /// half full, waiting for the writer to drain it otherwise. The other half stays free for
    /// replies and live events, so a long replay neither kicks its own connection (4008) nor
    /// delays the answers to requests read meanwhile. False if the connection went away.
    pub async fn send_paced(&self, frame: Bytes) -> bool {
        let reserve = self.capacity / 2;
        loop {
            if self.is_kicked() || self.is_closed() {
                return false;
            }
            let room = |c: &ConnShared| {
                c.room() > reserve && c.queued_bytes.load(Ordering::Relaxed) <= c.max_bytes / 2
            };
            if room(self) {
                return self.send(frame).await;
            }
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the re-check, so a drain between the check and the await
            // still wakes us.
            drained.as_mut().enable();
            if room(self) || self.is_closed() {
                continue;
            }
            tokio::select! {
                _ = drained => {}
                _ = self.kicked() => return false,
            }
        }
    }

    /// Marks the connection as too slow; its writer closes it. True if this call kicked it
    /// (false: it already was).
    pub fn kick(&self) -> bool {
        if self.kicked.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.kick.notify_one();
        true
    }

    /// Closes the connection because the app's backend asked (close code 4403, not 4008).
    pub fn disconnect(&self) {
        self.disconnected.store(true, Ordering::Release);
        self.kick();
    }

    /// Whether [`ConnShared::disconnect`] closed it.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Acquire)
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Resolves once the connection has been kicked.
    pub async fn kicked(&self) {
        loop {
            let notified = self.kick.notified();
            if self.is_kicked() {
                return;
            }
            notified.await;
        }
    }

    /// Starts holding live events of `channels` until [`ConnShared::finish_resume`].
    pub(crate) fn begin_resume(&self, channels: impl IntoIterator<Item = String>) {
        let mut resume = self.resume.lock();
        for c in channels {
            resume.insert(c, ResumeState::Buffering(Held::default()));
        }
        self.resuming.store(!resume.is_empty(), Ordering::Release);
    }

    /// Ends the replay of `channel` at `replayed_to`: queues the held live events after it, in
    /// order, and from now on drops live events at or below the last one queued.
    ///
    /// The channel stays in `Buffering` while held events are being queued (queueing may wait
    /// for room): a live event arriving meanwhile is held behind them rather than overtaking
    /// them. Only an empty buffer switches the channel to `Live`, under the lock.
    pub(crate) async fn finish_resume(&self, channel: &str, replayed_to: u64) -> bool {
        let mut floor = replayed_to;
        loop {
            let held = {
                let mut resume = self.resume.lock();
                match resume.get_mut(channel) {
                    Some(ResumeState::Buffering(held)) if !held.frames.is_empty() => {
                        std::mem::take(held).frames
                    }
                    _ => {
                        resume.insert(channel.to_owned(), ResumeState::Live { floor });
                        return true;
                    }
                }
            };
            for (seq, frame) in held {
                if seq > floor {
                    if !self.send(frame).await {
                        return false;
                    }
                    floor = seq;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(seq: u64) -> Bytes {
        Bytes::from(seq.to_string())
    }

    /// Regression: `finish_resume` used to switch the channel to live before queueing the held
    /// events, so a live event committed while it waited for queue room overtook them.
    #[tokio::test]
    async fn live_event_during_finish_resume_does_not_overtake_held_events() {
        let limits = QueueLimits { frames: 3, bytes: 1 << 20 };
        let (conn, mut rx) = ConnShared::new(1, "c".into(), Arc::from("app"), Arc::from("u"), limits);
        // The connect reply is already queued.
        assert_eq!(conn.try_push(&frame(0)), Pushed::Queued);
        conn.begin_resume(["ch".to_owned()]);
        for seq in [5, 6, 7] {
            assert_eq!(conn.push_event("ch", Some(seq), &frame(seq)), Pushed::Held);
        }
        let finisher = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.finish_resume("ch", 4).await })
        };
        // Let the finisher fill the queue (0, 5, 6) and block on 7.
        while rx.len() < 3 {
            tokio::task::yield_now().await;
        }
        let live = conn.push_event("ch", Some(8), &frame(8));
        assert_ne!(live, Pushed::Overflow, "the live event found the queue full and kicked");
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(rx.recv().await.unwrap());
        }
        assert!(finisher.await.unwrap());
        assert_eq!(got, vec![frame(0), frame(5), frame(6), frame(7), frame(8)]);
        assert!(!conn.is_kicked());
        // Now live: duplicates are dropped, newer events pass.
        assert_eq!(conn.push_event("ch", Some(8), &frame(8)), Pushed::Held);
        assert_eq!(conn.push_event("ch", Some(9), &frame(9)), Pushed::Queued);
    }
}
