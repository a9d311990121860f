//! The hub: who is connected to this node, which channels each online connection receives,
//! who subscribes to which subject; as the node's [`BrokerSubscriber`] it delivers every
//! envelope the broker carries to the connections it concerns.
//!
//! The index holds **online** connections only: channel → the connections of its online
//! members, user → connections, subject → subscribers. A user's memberships are read from the
//! store when a connection of theirs registers, and kept current by the broker's membership
//! changes from then on; a channel with no online member has no entry. Memory is O(online
//! connections × their channels + active channels), not O(every membership ever made).
//!
//! A registration reads the store first and then takes the index lock once (and no other
//! time: making the connection and noting the mark take none). Membership
//! changes that the broker delivered between that read and the lock are not lost: the hub
//! keeps the most recent changes in a bounded log ([`RECENT_CHANGES`]) with a counter, and
//! registration applies those newer than the counter it noted before its read (or asks for a
//! new read if they have already left the log).
//!
//! The index sits behind one `parking_lot::RwLock`. That is the right lock here: it is never
//! held across an `.await`, fan-out only reads it, and writes (connect, disconnect, a
//! membership change) are short and O(1) per connection and channel touched.

use crate::broker::{BrokerSubscriber, Envelope};
use crate::conn::{ConnShared, OutboundRx, Pushed, QueueLimits};
use bytes::Bytes;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Membership changes remembered for registrations in flight.
pub const RECENT_CHANGES: usize = 4096;

struct ChannelIndex {
    /// Interned (see [`Hub::intern`]): compared by pointer on the hot path.
    app: Arc<str>,
    /// Online connections of members, by connection key: O(1) to add and remove.
    online: FxHashMap<u64, Arc<ConnShared>>,
}

/// One membership change, as the broker delivered it.
struct Change {
    app: Arc<str>,
    channel: String,
    user: String,
    joined: bool,
}

/// A subject's subscribers on this node, by connection key.
type Subscribers = FxHashMap<u64, Arc<ConnShared>>;

// Channel ids are server-made UUIDs and user ids come from tokens we verified, so the fast
// non-keyed hasher is safe for those maps; subjects are client-chosen and keep SipHash.
#[derive(Default)]
struct Index {
    channels: FxHashMap<String, ChannelIndex>,
    /// User id → online connections (of every app; filtered by app where it matters).
    users: FxHashMap<Arc<str>, Vec<Arc<ConnShared>>>,
    /// App → subject → subscribed connections by key (nested so a publish looks up by `&str`
    /// without building a key).
    subjects: HashMap<Arc<str>, HashMap<String, Subscribers>>,
    /// (App, device id) → the connections that declared the device (§7).
    devices: FxHashMap<(Arc<str>, String), FxHashMap<u64, Arc<ConnShared>>>,
    /// App → connections with the `keeper` grant (§7).
    keepers: FxHashMap<Arc<str>, FxHashMap<u64, Arc<ConnShared>>>,
    /// The latest membership changes, the newest last; `changes_seen` counts all ever made.
    recent: VecDeque<Change>,
    changes_seen: u64,
}

impl Index {
    /// Removes one connection from a subject's subscribers, and empty entries with it; true if
    /// the subject has no subscriber left.
    fn drop_subscriber(&mut self, app: &str, subject: &str, key: u64) -> bool {
        let Some(by_subject) = self.subjects.get_mut(app) else { return false };
        let mut emptied = false;
        if let Some(subs) = by_subject.get_mut(subject) {
            subs.remove(&key);
            if subs.is_empty() {
                by_subject.remove(subject);
                emptied = true;
            }
        }
        if by_subject.is_empty() {
            self.subjects.remove(app);
        }
        emptied
    }

    /// Indexes `conn` under `channel` (it is a member).
    fn attach(&mut self, conn: &Arc<ConnShared>, channel: &str) {
        if !conn.channels.lock().insert(channel.to_owned()) {
            return;
        }
        self.channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelIndex { app: conn.app.clone(), online: FxHashMap::default() })
            .online
            .insert(conn.key, conn.clone());
    }

    /// Stops indexing `conn` under `channel`.
    fn detach(&mut self, conn: &ConnShared, channel: &str) {
        if !conn.channels.lock().remove(channel) {
            return;
        }
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.online.remove(&conn.key);
            if ch.online.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// The online connections of `user` in `app`.
    fn conns_of(&self, app: &str, user: &str) -> Vec<Arc<ConnShared>> {
        self.users
            .get(user)
            .map(|l| l.iter().filter(|c| &*c.app == app).cloned().collect())
            .unwrap_or_default()
    }

    fn apply_change(&mut self, change: &Change) {
        for c in self.conns_of(&change.app, &change.user) {
            if change.joined {
                self.attach(&c, &change.channel);
            } else {
                self.detach(&c, &change.channel);
            }
        }
    }

    fn remember(&mut self, change: Change) {
        self.apply_change(&change);
        self.recent.push_back(change);
        if self.recent.len() > RECENT_CHANGES {
            self.recent.pop_front();
        }
        self.changes_seen += 1;
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

/// Told how long an entry took from its commit until it was queued to every local recipient.
pub type FanoutObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Where a registration's membership read stands against the changes since (see the module
/// doc): taken before the read with [`Hub::membership_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipMark(u64);

/// [`Hub::register`] could not use the read: too many changes since; read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRead;

/// The fan-out index and broker subscriber. See the module doc.
pub struct Hub {
    index: RwLock<Index>,
    /// One `Arc` per app id, so app equality on delivery is a pointer comparison; apart from
    /// the index so that making a connection does not take the index lock.
    apps: RwLock<HashMap<String, Arc<str>>>,
    /// `Index::changes_seen`, readable without the index lock.
    changes_seen: AtomicU64,
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
            apps: RwLock::new(HashMap::new()),
            changes_seen: AtomicU64::new(0),
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

    /// Creates a connection that receives nothing yet; [`Hub::register`] makes it live.
    pub(crate) fn new_conn(&self, conn_id: String, app: &str, user: &str) -> (Arc<ConnShared>, OutboundRx) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let app = self.intern(app);
        ConnShared::new(key, conn_id, app, Arc::from(user), self.limits)
    }

    /// Notes where the membership changes stand, before reading a user's memberships.
    pub(crate) fn membership_mark(&self) -> MembershipMark {
        MembershipMark(self.changes_seen.load(Ordering::Acquire))
    }

    /// Makes a connection live with the channels its user was a member of when read (after
    /// `mark`), brought up to date with the changes since: from now on fan-out reaches it.
    pub(crate) fn register(
        &self,
        conn: &Arc<ConnShared>,
        channels: Vec<String>,
        mark: MembershipMark,
    ) -> Result<(), StaleRead> {
        let mut index = self.index.write();
        let since = index.changes_seen - mark.0;
        if since > index.recent.len() as u64 {
            return Err(StaleRead);
        }
        for ch in &channels {
            index.attach(conn, ch);
        }
        let skip = index.recent.len() - since as usize;
        let mine: Vec<(String, bool)> = index
            .recent
            .iter()
            .skip(skip)
            .filter(|c| Arc::ptr_eq(&c.app, &conn.app) && *c.user == *conn.user)
            .map(|c| (c.channel.clone(), c.joined))
            .collect();
        for (ch, joined) in mine {
            if joined {
                index.attach(conn, &ch);
            } else {
                index.detach(conn, &ch);
            }
        }
        index.users.entry(conn.user.clone()).or_default().push(conn.clone());
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a connection, its channels and its subscriptions; returns the subjects that
    /// have no subscriber left on this node.
    pub(crate) fn unregister(&self, conn: &ConnShared) -> Vec<String> {
        let mut subjects = std::mem::take(&mut *conn.subjects.lock());
        let channels: Vec<String> = conn.channels.lock().iter().cloned().collect();
        let mut index = self.index.write();
        if let Some(list) = index.users.get_mut(&conn.user) {
            list.retain(|c| c.key != conn.key);
            if list.is_empty() {
                index.users.remove(&conn.user);
            }
        }
        for ch in &channels {
            index.detach(conn, ch);
        }
        let (device, keeper) = conn.e2ee.lock().clone();
        if let Some(device) = device {
            let key = (conn.app.clone(), device);
            if let Some(conns) = index.devices.get_mut(&key) {
                conns.remove(&conn.key);
                if conns.is_empty() {
                    index.devices.remove(&key);
                }
            }
        }
        if keeper && let Some(conns) = index.keepers.get_mut(&conn.app) {
            conns.remove(&conn.key);
            if conns.is_empty() {
                index.keepers.remove(&conn.app);
            }
        }
        subjects.retain(|s| index.drop_subscriber(&conn.app, s, conn.key));
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        subjects
    }

    /// Indexes a registered connection by the device it declared and its `keeper` grant (§7).
    /// With a device, live DMs to it are held until [`ConnShared::release_dms`].
    pub(crate) fn attach_e2ee(&self, conn: &Arc<ConnShared>, device: Option<String>, keeper: bool) {
        if device.is_some() {
            conn.hold_dms();
        }
        *conn.e2ee.lock() = (device.clone(), keeper);
        let mut index = self.index.write();
        if let Some(device) = device {
            index.devices.entry((conn.app.clone(), device)).or_default().insert(conn.key, conn.clone());
        }
        if keeper {
            index.keepers.entry(conn.app.clone()).or_default().insert(conn.key, conn.clone());
        }
    }

    /// Delivers a DM frame to every connection of the device; returns how many.
    fn deliver_device(&self, app: &str, device: &str, id: &str, frame: &Bytes) -> usize {
        let index = self.index.read();
        let Some(app) = self.apps.read().get(app).cloned() else { return 0 };
        let Some(conns) = index.devices.get(&(app, device.to_owned())) else { return 0 };
        conns.values().filter(|c| self.count(c.push_dm(id, frame))).count()
    }

    /// Delivers a frame to every keeper connection of the app (but members of `skip`).
    fn deliver_keepers(&self, app: &str, skip: Option<&str>, frame: &Bytes) -> usize {
        let index = self.index.read();
        let Some(app) = self.apps.read().get(app).cloned() else { return 0 };
        let Some(conns) = index.keepers.get(&app) else { return 0 };
        conns
            .values()
            .filter(|c| skip.is_none_or(|ch| !c.channels.lock().contains(ch)))
            .filter(|c| self.count(c.try_push(frame)))
            .count()
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
        let subs = index.subjects.entry(conn.app.clone()).or_default().entry(subject.to_owned()).or_default();
        subs.insert(conn.key, conn.clone());
        subs.len() == 1
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
        if let Some(subs) = index.subjects.get(app).and_then(|by_subject| by_subject.get(subject)) {
            for c in subs.values() {
                if self.count(c.try_push(frame)) {
                    n += 1;
                }
            }
        }
        self.stats.publications.fetch_add(1, Ordering::Relaxed);
        n
    }

    /// Whether `user` of `app` is a member of `channel`, if this hub knows: `Some` when the
    /// user has a connection here (the index is exact for online users), `None` otherwise
    /// (ask the store).
    pub fn is_member(&self, app: &str, channel: &str, user: &str) -> Option<bool> {
        let index = self.index.read();
        let conns = index.users.get(user)?;
        let c = conns.iter().find(|c| &*c.app == app)?;
        let member = c.channels.lock().contains(channel);
        Some(member)
    }

    /// The online connections of `user` of `app` on this node (private-channel joins over
    /// REST check a `conn_id` against them; a disconnect closes them).
    pub fn user_conns(&self, app: &str, user: &str) -> Vec<Arc<ConnShared>> {
        self.index.read().conns_of(app, user)
    }

    /// Channels with at least one online member connection on this node.
    pub fn active_channels(&self) -> usize {
        self.index.read().channels.len()
    }

    /// Sends a frame to every online connection of every member of a channel (optionally
    /// skipping one user), honouring resume. Returns the number of queued deliveries.
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
        for c in ch.online.values() {
            if skip_user.is_some_and(|s| s == &*c.user) || !Arc::ptr_eq(&c.app, &ch.app) {
                continue;
            }
            if self.count(c.push_event(channel, seq, frame)) {
                n += 1;
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

    fn change(&self, app: &str, channel: &str, user: &str, joined: bool) {
        let app = self.intern(app);
        let mut index = self.index.write();
        index.remember(Change { app, channel: channel.to_owned(), user: user.to_owned(), joined });
        // Under the index lock, so a mark read after this sees the change in `recent`.
        self.changes_seen.store(index.changes_seen, Ordering::Release);
    }

    fn intern(&self, app: &str) -> Arc<str> {
        if let Some(a) = self.apps.read().get(app) {
            return a.clone();
        }
        self.apps.write().entry(app.to_owned()).or_insert_with(|| Arc::from(app)).clone()
    }

    fn remove_channel(&self, channel: &str) {
        let mut index = self.index.write();
        if let Some(ch) = index.channels.remove(channel) {
            for c in ch.online.values() {
                c.channels.lock().remove(channel);
            }
        }
    }
}

impl BrokerSubscriber for Hub {
    fn receive(&self, envelope: &Envelope) {
        match envelope {
            Envelope::Channel(ev) => {
                for user in &ev.joined {
                    self.change(&ev.app, &ev.channel, user, true);
                }
                self.deliver(&ev.channel, ev.seq, &ev.frame, ev.skip_user.as_deref());
                if ev.seq.is_some() {
                    self.stats.entries_committed.fetch_add(1, Ordering::Relaxed);
                }
                if let (Some(at), Some(observe)) = (ev.committed_at, self.fanout_observer.get()) {
                    observe(at.elapsed());
                }
                for user in &ev.left {
                    self.change(&ev.app, &ev.channel, user, false);
                }
                if ev.deleted {
                    self.remove_channel(&ev.channel);
                }
            }
            Envelope::Publication { app, subject, frame } => {
                self.publish(app, subject, frame);
            }
            Envelope::Disconnect { app, user } => {
                for c in self.user_conns(app, user) {
                    c.disconnect();
                }
            }
            Envelope::Device { app, device, id, frame } => {
                self.deliver_device(app, device, id, frame);
            }
            Envelope::Keeper { app, skip_members_of, frame } => {
                self.deliver_keepers(app, skip_members_of.as_deref(), frame);
            }
            // Delivered by the node's `Rooms`, a subscriber of its own.
            Envelope::Room(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::broker::ChannelEvent;

    fn hub() -> Arc<Hub> {
        Hub::new(QueueLimits { frames: 16, bytes: 1 << 20 })
    }

    fn membership(channel: &str, user: &str, joined: bool) -> Envelope {
        let mut ev = ChannelEvent::signal("app", channel, Bytes::from_static(b"m"), None);
        ev.seq = Some(1);
        if joined {
            ev.joined.push(user.into());
        } else {
            ev.left.push(user.into());
        }
        Envelope::Channel(ev)
    }

    /// A membership change delivered between a registration's store read and its lock is
    /// applied to it: neither a join nor a leave made meanwhile is lost.
    #[test]
    fn changes_between_the_read_and_the_registration_are_applied() {
        let hub = hub();
        let (ada, mut rx) = hub.new_conn("c1".into(), "app", "ada");
        let mark = hub.membership_mark();
        // The store read said: a member of "left-meanwhile" only. Then the broker delivers...
        hub.receive(&membership("joined-meanwhile", "ada", true));
        hub.receive(&membership("left-meanwhile", "ada", false));
        hub.register(&ada, vec!["left-meanwhile".into()], mark).unwrap();

        assert_eq!(hub.is_member("app", "joined-meanwhile", "ada"), Some(true));
        assert_eq!(hub.is_member("app", "left-meanwhile", "ada"), Some(false));
        assert_eq!(hub.deliver("joined-meanwhile", None, &Bytes::from_static(b"x"), None), 1);
        assert_eq!(hub.deliver("left-meanwhile", None, &Bytes::from_static(b"x"), None), 0);
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"x"));
        assert_eq!(hub.active_channels(), 1);
        hub.unregister(&ada);
        assert_eq!(hub.active_channels(), 0, "a channel with no online member leaves the index");
        assert_eq!(hub.is_member("app", "joined-meanwhile", "ada"), None, "offline: ask the store");
    }

    #[test]
    fn a_read_older_than_the_change_log_must_be_redone() {
        let hub = hub();
        let (ada, _rx) = hub.new_conn("c1".into(), "app", "ada");
        let mark = hub.membership_mark();
        for i in 0..=RECENT_CHANGES {
            hub.receive(&membership(&format!("ch{i}"), "bob", true));
        }
        assert_eq!(hub.register(&ada, Vec::new(), mark), Err(StaleRead));
        hub.register(&ada, Vec::new(), hub.membership_mark()).unwrap();
    }
}
