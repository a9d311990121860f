//! The hub: who is connected to this node, who is a member of what, who subscribes to which
//! subject; as the node's [`BrokerSubscriber`] it delivers every envelope the broker carries to
//! the connections it concerns.
//!
//! The index sits behind one `parking_lot::RwLock`. That is the right lock here: it is never
//! held across an `.await`, fan-out only reads it, and writes (connect, disconnect, a
//! membership change) are short. Membership changes reach the index only through the broker,
//! in commit order, so the index is exactly the store's membership as of the last commit.

use crate::broker::{BrokerSubscriber, Envelope};
use crate::conn::{ConnShared, Outbound, Pushed, QueueLimits};
use bytes::Bytes;
use herald_store::Membership;
use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

struct ChannelIndex {
    /// Interned (see [`Index::intern`]): compared by pointer on the hot path.
    app: Arc<str>,
    members: FxHashSet<Arc<str>>,
}

// Channel ids are server-made UUIDs and user ids come from tokens we verified, so the fast
// non-keyed hasher is safe for those maps; subjects are client-chosen and keep SipHash.
#[derive(Default)]
struct Index {
    channels: FxHashMap<String, ChannelIndex>,
    /// User id → connections (of every app; filtered by app on delivery).
    users: FxHashMap<Arc<str>, Vec<Arc<ConnShared>>>,
    /// (app, subject) → subscribed connections.
    /// App → subject → subscribed connections (nested so a publish looks up by `&str`
    /// without building a key).
    subjects: HashMap<Arc<str>, HashMap<String, Vec<Arc<ConnShared>>>>,
    /// One `Arc` per app id, so app equality on delivery is a pointer comparison.
    apps: HashMap<String, Arc<str>>,
}

impl Index {
    /// Removes one connection from a subject's subscribers, and empty entries with it; true if
    /// the subject has no subscriber left.
    fn drop_subscriber(&mut self, app: &str, subject: &str, key: u64) -> bool {
        let Some(by_subject) = self.subjects.get_mut(app) else { return false };
        let mut emptied = false;
        if let Some(list) = by_subject.get_mut(subject) {
            list.retain(|c| c.key != key);
            if list.is_empty() {
                by_subject.remove(subject);
                emptied = true;
            }
        }
        if by_subject.is_empty() {
            self.subjects.remove(app);
        }
        emptied
    }

    fn intern(&mut self, app: &str) -> Arc<str> {
        if let Some(a) = self.apps.get(app) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(app);
        self.apps.insert(app.to_owned(), a.clone());
        a
    }
}

/// Counters the server exports as metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub deliveries: AtomicU64,
    pub entries_committed: AtomicU64,
    pub queue_full_kicks: AtomicU64,
    pub publications: AtomicU64,
}

/// The fan-out index and commit sink. See the module doc.
/// Told how long an entry took from its commit until it was queued to every local recipient.
pub type FanoutObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

pub struct Hub {
    index: RwLock<Index>,
    fanout_observer: std::sync::OnceLock<FanoutObserver>,
    next_key: AtomicU64,
    limits: QueueLimits,
    pub stats: HubStats,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose connections each get an outbound queue bounded by `limits`.
    pub fn new(limits: QueueLimits) -> Arc<Hub> {
        Arc::new(Hub {
            index: RwLock::new(Index::default()),
            fanout_observer: std::sync::OnceLock::new(),
            next_key: AtomicU64::new(1),
            limits,
            stats: HubStats::default(),
        })
    }

    /// Sets the fan-out latency observer (once; later calls are ignored).
    pub fn set_fanout_observer(&self, observe: FanoutObserver) {
        let _ = self.fanout_observer.set(observe);
    }

    /// Seeds the membership index from the store (at start, before serving).
    pub fn load_memberships(&self, memberships: Vec<Membership>) {
        let mut index = self.index.write();
        for m in memberships {
            let app = index.intern(&m.app);
            let ch = index
                .channels
                .entry(m.channel_id)
                .or_insert_with(|| ChannelIndex { app, members: FxHashSet::default() });
            ch.members.insert(Arc::from(m.user.as_str()));
        }
    }

    /// Creates a connection that receives nothing yet; [`Hub::register`] makes it live.
    pub(crate) fn new_conn(
        &self,
        conn_id: String,
        app: &str,
        user: &str,
    ) -> (Arc<ConnShared>, mpsc::Receiver<Outbound>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let app = self.index.write().intern(app);
        ConnShared::new(key, conn_id, app, Arc::from(user), self.limits)
    }

    /// Makes a connection live: from now on fan-out reaches it.
    pub(crate) fn register(&self, conn: &Arc<ConnShared>) {
        let mut index = self.index.write();
        index.users.entry(conn.user.clone()).or_default().push(conn.clone());
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a connection and its subscriptions; returns the subjects that have no
    /// subscriber left on this node.
    pub(crate) fn unregister(&self, conn: &ConnShared) -> Vec<String> {
        let mut subjects = std::mem::take(&mut *conn.subjects.lock());
        let mut index = self.index.write();
        if let Some(list) = index.users.get_mut(&conn.user) {
            list.retain(|c| c.key != conn.key);
            if list.is_empty() {
                index.users.remove(&conn.user);
            }
        }
        subjects.retain(|s| index.drop_subscriber(&conn.app, s, conn.key));
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        subjects
    }

    /// Subscribes a connection to a subject; true if it is the subject's first subscriber on
    /// this node (the broker should start carrying it here).
    pub(crate) fn subscribe(&self, conn: &Arc<ConnShared>, subject: &str) -> bool {
        {
            let mut subs = conn.subjects.lock();
            if subs.iter().any(|s| s == subject) {
                return false;
            }
            subs.push(subject.to_owned());
        }
        let mut index = self.index.write();
        let list = index.subjects.entry(conn.app.clone()).or_default().entry(subject.to_owned()).or_default();
        list.push(conn.clone());
        list.len() == 1
    }

    /// Unsubscribes; true if that was the subject's last subscriber on this node.
    pub(crate) fn unsubscribe(&self, conn: &ConnShared, subject: &str) -> bool {
        {
            let mut subs = conn.subjects.lock();
            let before = subs.len();
            subs.retain(|s| s != subject);
            if subs.len() == before {
                return false;
            }
        }
        self.index.write().drop_subscriber(&conn.app, subject, conn.key)
    }

    /// Number of subjects a connection subscribes to.
    pub(crate) fn subscription_count(conn: &ConnShared) -> usize {
        conn.subjects.lock().len()
    }

    /// Delivers a publication to every subscriber of `(app, subject)`; returns how many.
    pub(crate) fn publish(&self, app: &str, subject: &str, frame: &Bytes) -> usize {
        let index = self.index.read();
        let mut n = 0;
        if let Some(list) = index.subjects.get(app).and_then(|by_subject| by_subject.get(subject)) {
            for c in list {
                if self.count(c.try_push(frame)) {
                    n += 1;
                }
            }
        }
        self.stats.publications.fetch_add(1, Ordering::Relaxed);
        n
    }

    /// The app of a channel if `user` is a member of it.
    pub fn is_member(&self, app: &str, channel: &str, user: &str) -> bool {
        let index = self.index.read();
        index.channels.get(channel).is_some_and(|c| &*c.app == app && c.members.contains(user))
    }

    /// The channels `user` of `app` is a member of.
    pub fn channels_of(&self, app: &str, user: &str) -> Vec<String> {
        let index = self.index.read();
        index
            .channels
            .iter()
            .filter(|(_, c)| &*c.app == app && c.members.contains(user))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sends a frame to every connection of every member of a channel (optionally skipping
    /// one user), honouring resume. Returns the number of queued deliveries.
    pub(crate) fn deliver(
        &self,
        channel: &str,
        seq: Option<u64>,
        frame: &Bytes,
        skip_user: Option<&str>,
    ) -> usize {
        let index = self.index.read();
        let Some(ch) = index.channels.get(channel) else { return 0 };
        let mut n = 0;
        for member in &ch.members {
            if skip_user.is_some_and(|s| s == &**member) {
                continue;
            }
            if let Some(conns) = index.users.get(member) {
                for c in conns.iter().filter(|c| Arc::ptr_eq(&c.app, &ch.app)) {
                    if self.count(c.push_event(channel, seq, frame)) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    fn count(&self, p: Pushed) -> bool {
        match p {
            Pushed::Queued => {
                self.stats.deliveries.fetch_add(1, Ordering::Relaxed);
                true
            }
            Pushed::Overflow => {
                self.stats.queue_full_kicks.fetch_add(1, Ordering::Relaxed);
                false
            }
            Pushed::Held | Pushed::Closed => false,
        }
    }

    fn add_member(&self, app: &str, channel: &str, user: &str) {
        let mut index = self.index.write();
        let app = index.intern(app);
        index
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelIndex { app, members: FxHashSet::default() })
            .members
            .insert(Arc::from(user));
    }

    fn remove_member(&self, channel: &str, user: &str) {
        let mut index = self.index.write();
        if let Some(c) = index.channels.get_mut(channel) {
            c.members.remove(user);
        }
    }

    fn remove_channel(&self, channel: &str) {
        self.index.write().channels.remove(channel);
    }
}

impl BrokerSubscriber for Hub {
    fn receive(&self, envelope: &Envelope) {
        match envelope {
            Envelope::Channel(ev) => {
                for user in &ev.joined {
                    self.add_member(&ev.app, &ev.channel, user);
                }
                self.deliver(&ev.channel, ev.seq, &ev.frame, ev.skip_user.as_deref());
                if ev.seq.is_some() {
                    self.stats.entries_committed.fetch_add(1, Ordering::Relaxed);
                }
                if let (Some(at), Some(observe)) = (ev.committed_at, self.fanout_observer.get()) {
                    observe(at.elapsed());
                }
                for user in &ev.left {
                    self.remove_member(&ev.channel, user);
                }
                if ev.deleted {
                    self.remove_channel(&ev.channel);
                }
            }
            Envelope::Publication { app, subject, frame } => {
                self.publish(app, subject, frame);
            }
        }
    }
}
