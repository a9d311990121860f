//! The sequencer: per channel, the last `seq` delivered to this node's hub, what is held back
//! behind a gap, and whether a fill from the store is under way. Pure: no I/O, no clock of
//! its own (`now` comes in), no lock; the broker keeps one per shard behind a mutex and
//! delivers under it, so that a channel's deliveries are made in the order decided here.
//!
//! Rules, for an envelope of channel `c` whose last delivered `seq` is `last`:
//! - `seq == last + 1`, no fill under way: delivered, `last` moves on.
//! - `seq <= last` (or already held): a duplicate, dropped.
//! - otherwise a gap (or a fill is under way): held in `c`'s buffer (bounded; what overflows
//!   is in the store and is read back by the fill), and a fill starts if none runs. The fill
//!   reads `Store::log(c, last, …)` page by page, hands each page to [`Sequencer::fill_page`],
//!   which delivers the entries in order (the held envelope for a `seq` when there is one, as
//!   it carries the commit's own membership changes and message view, else the entry rebuilt
//!   by [`rebuilt`]) and then what is held, and says when the channel is caught up.
//! - A channel not seen before, first seen at `seq` 1, starts there. First seen at a later
//!   `seq` (with probing on), it may be a channel that was busy before this node started, or
//!   one whose earlier entries are still in flight (another node's commits can reach this
//!   node after its own later one, through NATS): the envelope is held and the fill first
//!   *probes* the entries just before it ([`Sequencer::probed`]): those committed since this
//!   node started are delivered first, so no membership change or message made meanwhile is
//!   dropped as a "duplicate"; older ones are not (clients read them from the store). A
//!   channel forgotten for being idle ([`Sequencer::forget_idle`]) is seen again the same way.
//! - Envelopes without `seq` are delivered at once, except a deletion while a fill runs: it
//!   waits for the fill, so the hub drops the channel after the last entry. A deletion drops
//!   the channel's state.

use herald_engine::broker::{ChannelEvent, Envelope};
use herald_engine::events::{event_of, to_bytes};
use herald_proto::EntryKind;
use herald_store::StoredEntry;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What to do with an envelope offered to the sequencer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it now (the caller does, still holding the sequencer).
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Held back behind a gap; `start_fill`: no fill runs for the channel yet, start one.
    Held { start_fill: bool },
}

/// Where a fill stands after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillStep {
    /// Caught up: the fill is over (and the channel may be gone, after a held deletion).
    Done,
    /// More to read: read the next page after [`Sequencer::fill_after`].
    More,
    /// The store has nothing after the last delivered `seq`, yet the channel is not caught
    /// up (a deleted channel, or a store that does not show a commit yet): retry a little
    /// later, then [`Sequencer::skip_gap`].
    Stalled,
}

/// What a fill needs to read the next page: the app (for rebuilt envelopes) and the `seq`
/// to read after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillFrom {
    /// The channel's app, to rebuild entries with ([`rebuilt_page`], outside the lock).
    pub app: String,
    pub after: u64,
    /// A deletion is held behind the fill: the channel is gone, a stall will not resolve.
    pub deleted: bool,
    /// The channel was first seen at this `seq`: read the entries just before it and hand them
    /// to [`Sequencer::probed`] first.
    pub probe: Option<u64>,
}

#[derive(Debug)]
struct ChannelState {
    app: String,
    last: u64,
    filling: bool,
    held: BTreeMap<u64, ChannelEvent>,
    /// Entries up to this `seq` exist (seen and not held for want of room, or the store's
    /// head): the fill goes at least this far.
    target: u64,
    deletion: Option<ChannelEvent>,
    active_at: Instant,
    /// First seen at `held`'s first `seq` > 1: where to start is not known yet.
    probe: bool,
}

/// Counts the sequencer keeps (the broker adds them to its stats).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Envelopes with a `seq` delivered.
    pub delivered: u64,
    /// Of those, rebuilt from store entries.
    pub filled: u64,
    pub duplicates: u64,
    /// Envelopes that found no room in a channel's buffer (read back from the store).
    pub overflowed: u64,
    /// Gaps given up on (see [`Sequencer::skip_gap`]).
    pub skipped: u64,
}

/// The per-channel sequencing state of a set of channels. See the module doc.
#[derive(Debug)]
pub struct Sequencer {
    channels: HashMap<String, ChannelState>,
    max_held: usize,
    probe: bool,
    pub counts: Counts,
}

/// The envelope of a log entry read from the store, as [`herald_engine::broker::envelopes_of`]
/// makes it for a commit: the event rebuilt with `event_of(entry, None)`; a `member_joined`
/// carries its user in `joined`, a `member_left` in `left`.
pub fn rebuilt(app: &str, e: &StoredEntry) -> ChannelEvent {
    let user = || vec![e.reference.clone()];
    ChannelEvent {
        app: app.to_owned(),
        channel: e.channel_id.clone(),
        seq: Some(e.seq),
        frame: to_bytes(&event_of(e, None)),
        skip_user: None,
        joined: if e.kind == EntryKind::MemberJoined { user() } else { Vec::new() },
        left: if e.kind == EntryKind::MemberLeft { user() } else { Vec::new() },
        deleted: false,
        committed_at: None,
    }
}

/// Rebuilds a page of entries. A `channel_created` and the `member_joined` entries right
/// after it with the same author and time are one creation commit: as `envelopes_of` does,
/// its joins go on the first envelope, so the creator and those it listed receive the
/// `channel_created` too.
pub fn rebuilt_page(app: &str, entries: &[StoredEntry]) -> Vec<ChannelEvent> {
    let mut out: Vec<ChannelEvent> = entries.iter().map(|e| rebuilt(app, e)).collect();
    let mut i = 0;
    while i < entries.len() {
        if entries[i].kind == EntryKind::ChannelCreated {
            let (author, ts) = (&entries[i].author, entries[i].ts_ms);
            let mut j = i + 1;
            while j < entries.len()
                && entries[j].kind == EntryKind::MemberJoined
                && entries[j].author == *author
                && entries[j].ts_ms == ts
            {
                let joined = std::mem::take(&mut out[j].joined);
                out[i].joined.extend(joined);
                j += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

impl Sequencer {
    /// A sequencer holding at most `max_held` envelopes per channel behind a gap; `probe`:
    /// whether a channel first seen past `seq` 1 is probed (see the module doc) or simply
    /// starts there.
    pub fn new(max_held: usize, probe: bool) -> Sequencer {
        Sequencer { channels: HashMap::new(), max_held: max_held.max(1), probe, counts: Counts::default() }
    }

    /// Decides about a channel envelope; see the module doc. A held envelope is cloned in.
    pub fn offer(&mut self, ev: &ChannelEvent, now: Instant) -> Verdict {
        let Some(seq) = ev.seq else {
            if ev.deleted {
                if let Some(st) = self.channels.get_mut(&ev.channel)
                    && st.filling
                {
                    st.deletion = Some(ev.clone());
                    return Verdict::Held { start_fill: false };
                }
                self.channels.remove(&ev.channel);
            }
            return Verdict::Deliver;
        };
        if seq == 0 {
            // Not a seq any store makes (they start at 1): never let it move anything.
            self.counts.duplicates += 1;
            return Verdict::Duplicate;
        }
        let Some(st) = self.channels.get_mut(&ev.channel) else {
            let probe = self.probe && seq > 1;
            let mut held = BTreeMap::new();
            if probe {
                held.insert(seq, ev.clone());
            }
            self.channels.insert(
                ev.channel.clone(),
                ChannelState {
                    app: ev.app.clone(),
                    last: if probe { seq - 1 } else { seq },
                    filling: probe,
                    held,
                    target: seq,
                    deletion: None,
                    active_at: now,
                    probe,
                },
            );
            if probe {
                return Verdict::Held { start_fill: true };
            }
            self.counts.delivered += 1;
            return Verdict::Deliver;
        };
        st.active_at = now;
        // While probing, `last` is a guess: what comes from before it may be wanted.
        if (seq <= st.last && !st.probe) || st.held.contains_key(&seq) {
            self.counts.duplicates += 1;
            return Verdict::Duplicate;
        }
        if seq == st.last + 1 && !st.filling {
            st.last = seq;
            st.target = st.target.max(seq);
            self.counts.delivered += 1;
            return Verdict::Deliver;
        }
        if st.held.len() < self.max_held {
            st.held.insert(seq, ev.clone());
        } else {
            self.counts.overflowed += 1;
        }
        st.target = st.target.max(seq);
        let start_fill = !std::mem::replace(&mut st.filling, true);
        Verdict::Held { start_fill }
    }

    /// The store says `channel` goes up to `head`: true if a fill must start to get there.
    pub fn reach(&mut self, channel: &str, head: u64) -> bool {
        let Some(st) = self.channels.get_mut(channel) else { return false };
        if head <= st.last {
            return false;
        }
        st.target = st.target.max(head);
        !std::mem::replace(&mut st.filling, true)
    }

    /// Where the running fill of `channel` reads next; `None` if the channel is gone or no
    /// fill runs (the fill is then over).
    pub fn fill_after(&self, channel: &str) -> Option<FillFrom> {
        let st = self.channels.get(channel).filter(|st| st.filling)?;
        let probe = st.probe.then(|| st.held.keys().next().copied()).flatten();
        Some(FillFrom { app: st.app.clone(), after: st.last, deleted: st.deletion.is_some(), probe })
    }

    /// The probe of a channel first seen past `seq` 1: `entries` are those just before the
    /// first held `seq`, and that one. Delivery starts at the first of them committed at or
    /// after `since_ms` (this node's start, or the oldest a forgotten channel's new entries
    /// can be, less clock skew); if even the held one is older, it is a stale copy and
    /// dropped; then the fill goes on as usual.
    /// `page` is `entries` rebuilt ([`rebuilt_page`]).
    pub fn probed(
        &mut self,
        channel: &str,
        entries: &[StoredEntry],
        page: Vec<ChannelEvent>,
        since_ms: i64,
        deliver: &mut dyn FnMut(&Envelope),
    ) -> FillStep {
        let Some(st) = self.channels.get_mut(channel).filter(|st| st.probe) else {
            return self.fill_rebuilt(channel, page, deliver);
        };
        st.probe = false;
        let first_held = st.held.keys().next().copied().unwrap_or(st.last + 1);
        let start = match entries.iter().filter(|e| e.seq <= first_held).find(|e| e.ts_ms >= since_ms) {
            Some(e) => e.seq,
            // Even the envelope that made the channel known was committed before: a stale
            // copy (of what was delivered before the channel was forgotten, or from before
            // this node's time), not delivered.
            None if entries.iter().any(|e| e.seq == first_held) => first_held + 1,
            None => first_held,
        };
        st.last = start.saturating_sub(1);
        let last = st.last;
        let before = st.held.len();
        st.held.retain(|&s, _| s > last);
        self.counts.duplicates += (before - st.held.len()) as u64;
        self.fill_rebuilt(channel, page, deliver)
    }

    /// The app of a known channel.
    pub fn app_of(&self, channel: &str) -> Option<&str> {
        self.channels.get(channel).map(|st| st.app.as_str())
    }

    /// Applies a page read by the fill of `channel`: delivers, in order, every entry that
    /// follows the last delivered one and then whatever held envelopes follow.
    pub fn fill_page(
        &mut self,
        channel: &str,
        entries: &[StoredEntry],
        deliver: &mut dyn FnMut(&Envelope),
    ) -> FillStep {
        let Some(app) = self.app_of(channel) else { return FillStep::Done };
        let page = rebuilt_page(app, entries);
        self.fill_rebuilt(channel, page, deliver)
    }

    /// [`Sequencer::fill_page`] with the page already rebuilt (the broker rebuilds it before
    /// taking the lock: serializing a page of events is the costly part).
    pub fn fill_rebuilt(
        &mut self,
        channel: &str,
        page: Vec<ChannelEvent>,
        deliver: &mut dyn FnMut(&Envelope),
    ) -> FillStep {
        let Some(st) = self.channels.get_mut(channel).filter(|st| st.filling && !st.probe) else {
            return FillStep::Done;
        };
        let before = st.last;
        for ev in page {
            let Some(seq) = ev.seq else { continue };
            if seq <= st.last {
                continue;
            }
            if seq != st.last + 1 {
                // The store skipped a seq: never deliver past a hole; stall on it.
                break;
            }
            match st.held.remove(&seq) {
                Some(held) => deliver(&Envelope::Channel(held)),
                None => {
                    deliver(&Envelope::Channel(ev));
                    self.counts.filled += 1;
                }
            }
            self.counts.delivered += 1;
            st.last = seq;
        }
        Self::release_held(st, &mut self.counts, deliver);
        let progressed = st.last > before;
        self.finish_if_caught_up(channel, deliver).unwrap_or(if progressed {
            FillStep::More
        } else {
            FillStep::Stalled
        })
    }

    /// Gives up on the entries the store does not have: delivers what is held (from the
    /// first held `seq` on) and ends the fill. The channel may be gone (deleted), or the store
    /// lost them; either way nothing better can be done and the later entries must not wait
    /// forever.
    pub fn skip_gap(&mut self, channel: &str, deliver: &mut dyn FnMut(&Envelope)) -> FillStep {
        let Some(st) = self.channels.get_mut(channel).filter(|st| st.filling) else { return FillStep::Done };
        self.counts.skipped += 1;
        match st.held.keys().next() {
            Some(&first) => st.last = first.saturating_sub(1),
            None => st.last = st.last.max(st.target),
        }
        Self::release_held(st, &mut self.counts, deliver);
        if st.held.is_empty() {
            // What overflowed past the gap is not in the store either: stop looking for it.
            st.target = st.target.min(st.last);
        }
        self.finish_if_caught_up(channel, deliver).unwrap_or(FillStep::More)
    }

    fn release_held(st: &mut ChannelState, counts: &mut Counts, deliver: &mut dyn FnMut(&Envelope)) {
        while let Some(ev) = st.held.remove(&(st.last + 1)) {
            st.last += 1;
            counts.delivered += 1;
            deliver(&Envelope::Channel(ev));
        }
        // Held envelopes at or below `last` cannot remain (they would have been released),
        // but keep the invariant explicit: everything held is beyond `last + 1`.
        let last = st.last;
        st.held.retain(|&s, _| s > last);
    }

    fn finish_if_caught_up(&mut self, channel: &str, deliver: &mut dyn FnMut(&Envelope)) -> Option<FillStep> {
        let st = self.channels.get_mut(channel)?;
        if !st.held.is_empty() || st.last < st.target {
            return None;
        }
        st.filling = false;
        if let Some(deletion) = st.deletion.take() {
            self.channels.remove(channel);
            deliver(&Envelope::Channel(deletion));
        }
        Some(FillStep::Done)
    }

    /// Forgets the channels with no log event since `before` and nothing under way (no fill,
    /// nothing held): memory stays proportional to the channels active recently. One seen
    /// again is probed (see [`Sequencer::probed`]). Returns how many were forgotten.
    pub fn forget_idle(&mut self, before: Instant) -> usize {
        let n = self.channels.len();
        self.channels.retain(|_, st| {
            st.filling || !st.held.is_empty() || st.deletion.is_some() || st.active_at >= before
        });
        n - self.channels.len()
    }

    /// Every known channel (active at or after `since`, if given) with its last delivered
    /// `seq`: the channels to compare with the store's head.
    pub fn channels(&self, since: Option<Instant>) -> Vec<(String, u64)> {
        self.channels
            .iter()
            .filter(|(_, st)| since.is_none_or(|t| st.active_at >= t))
            .map(|(c, st)| (c.clone(), st.last))
            .collect()
    }

    /// The last `seq` delivered for `channel`, if known.
    pub fn last(&self, channel: &str) -> Option<u64> {
        self.channels.get(channel).map(|st| st.last)
    }

    /// Number of channels known.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use herald_store::EntryExtra;

    fn ev(channel: &str, seq: u64) -> ChannelEvent {
        let mut e = ChannelEvent::signal("app", channel, Bytes::from(format!("live {seq}")), None);
        e.seq = Some(seq);
        e
    }

    fn entry(channel: &str, seq: u64, kind: EntryKind, reference: &str) -> StoredEntry {
        StoredEntry {
            channel_id: channel.into(),
            seq,
            kind,
            author: "ada".into(),
            reference: reference.into(),
            ts_ms: 1000,
            content: Some(format!("stored {seq}")),
            salt: None,
            content_hash: [0; 32],
            prev_hash: [0; 32],
            hash: [0; 32],
            extra: EntryExtra::default(),
        }
    }

    fn msgs(channel: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEntry> {
        seqs.map(|s| entry(channel, s, EntryKind::Message, "")).collect()
    }

    fn seq_of(e: &Envelope) -> Option<u64> {
        match e {
            Envelope::Channel(ev) => ev.seq,
            _ => None,
        }
    }

    fn live(e: &Envelope) -> bool {
        matches!(e, Envelope::Channel(ev) if ev.frame.starts_with(b"live"))
    }

    #[test]
    fn in_order_is_delivered_and_duplicates_dropped() {
        let mut s = Sequencer::new(8, false);
        let now = Instant::now();
        assert_eq!(s.offer(&ev("c", 5), now), Verdict::Deliver, "a new channel starts anywhere");
        assert_eq!(s.offer(&ev("c", 6), now), Verdict::Deliver);
        assert_eq!(s.offer(&ev("c", 6), now), Verdict::Duplicate);
        assert_eq!(s.offer(&ev("c", 2), now), Verdict::Duplicate);
        assert_eq!(s.last("c"), Some(6));
        assert_eq!(s.counts.duplicates, 2);
    }

    #[test]
    fn a_gap_is_held_and_filled_in_order_preferring_held_envelopes() {
        let mut s = Sequencer::new(8, false);
        let now = Instant::now();
        s.offer(&ev("c", 1), now);
        assert_eq!(s.offer(&ev("c", 4), now), Verdict::Held { start_fill: true });
        assert_eq!(s.offer(&ev("c", 2), now), Verdict::Held { start_fill: false }, "held while filling");
        assert_eq!(s.offer(&ev("c", 4), now), Verdict::Duplicate);
        assert_eq!(s.offer(&ev("c", 6), now), Verdict::Held { start_fill: false });
        assert_eq!(
            s.fill_after("c"),
            Some(FillFrom { app: "app".into(), after: 1, deleted: false, probe: None })
        );
        let mut got = Vec::new();
        let step = s.fill_page("c", &msgs("c", 2..=3), &mut |e| got.push((seq_of(e), live(e))));
        assert_eq!(step, FillStep::More, "6 is held, 5 not read yet");
        assert_eq!(got, vec![(Some(2), true), (Some(3), false), (Some(4), true)]);
        got.clear();
        let step = s.fill_page("c", &msgs("c", 5..=6), &mut |e| got.push((seq_of(e), live(e))));
        assert_eq!(step, FillStep::Done);
        assert_eq!(got, vec![(Some(5), false), (Some(6), true)]);
        assert_eq!(s.fill_after("c"), None);
        assert_eq!(s.offer(&ev("c", 7), now), Verdict::Deliver);
        assert_eq!(s.counts.filled, 2);
    }

    #[test]
    fn overflow_is_read_back_from_the_store() {
        let mut s = Sequencer::new(2, false);
        let now = Instant::now();
        s.offer(&ev("c", 1), now);
        for seq in 3..=10 {
            assert!(matches!(s.offer(&ev("c", seq), now), Verdict::Held { .. }));
        }
        assert_eq!(s.counts.overflowed, 6);
        let mut got = Vec::new();
        assert_eq!(
            s.fill_page("c", &msgs("c", 2..=5), &mut |e| got.push(seq_of(e).unwrap())),
            FillStep::More
        );
        assert_eq!(
            s.fill_page("c", &msgs("c", 6..=10), &mut |e| got.push(seq_of(e).unwrap())),
            FillStep::Done
        );
        assert_eq!(got, (2..=10).collect::<Vec<_>>());
    }

    #[test]
    fn the_head_of_the_store_starts_a_fill_without_a_later_envelope() {
        let mut s = Sequencer::new(8, false);
        let now = Instant::now();
        assert!(!s.reach("c", 3), "unknown channel");
        s.offer(&ev("c", 1), now);
        assert!(!s.reach("c", 1));
        assert!(s.reach("c", 3));
        assert!(!s.reach("c", 4), "one fill at a time; it goes to 4 now");
        let mut got = Vec::new();
        assert_eq!(
            s.fill_page("c", &msgs("c", 2..=3), &mut |e| got.push(seq_of(e).unwrap())),
            FillStep::More
        );
        assert_eq!(s.fill_page("c", &[], &mut |e| got.push(seq_of(e).unwrap())), FillStep::Stalled);
        assert_eq!(
            s.fill_page("c", &msgs("c", 4..=4), &mut |e| got.push(seq_of(e).unwrap())),
            FillStep::Done
        );
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn a_deletion_waits_for_the_fill_then_drops_the_channel() {
        let mut s = Sequencer::new(8, false);
        let now = Instant::now();
        s.offer(&ev("c", 1), now);
        s.offer(&ev("c", 3), now);
        let mut del = ChannelEvent::signal("app", "c", Bytes::from_static(b"deleted"), None);
        del.deleted = true;
        assert_eq!(s.offer(&del, now), Verdict::Held { start_fill: false });
        let typing = ChannelEvent::signal("app", "c", Bytes::from_static(b"typing"), None);
        assert_eq!(s.offer(&typing, now), Verdict::Deliver, "signals do not wait");
        assert_eq!(
            s.fill_after("c"),
            Some(FillFrom { app: "app".into(), after: 1, deleted: true, probe: None })
        );
        // The store lost the channel: the fill stalls, then gives up on the gap.
        let mut got = Vec::new();
        assert_eq!(s.fill_page("c", &[], &mut |e| got.push(e.clone())), FillStep::Stalled);
        assert_eq!(s.skip_gap("c", &mut |e| got.push(e.clone())), FillStep::Done);
        assert_eq!(got.len(), 2);
        assert_eq!(seq_of(&got[0]), Some(3));
        assert!(matches!(&got[1], Envelope::Channel(e) if e.deleted));
        assert_eq!(s.last("c"), None, "the state is gone");
        assert_eq!(s.offer(&ev("c", 9), now), Verdict::Deliver, "a channel seen anew starts anywhere");
        let mut del2 = del.clone();
        del2.channel = "c".into();
        assert_eq!(s.offer(&del2, now), Verdict::Deliver);
        assert!(s.is_empty());
    }

    #[test]
    fn a_store_that_skips_a_seq_stalls_rather_than_deliver_past_it() {
        let mut s = Sequencer::new(8, false);
        let now = Instant::now();
        s.offer(&ev("c", 1), now);
        s.offer(&ev("c", 5), now);
        let mut page = msgs("c", 2..=4);
        page.remove(1);
        let mut got = Vec::new();
        assert_eq!(s.fill_page("c", &page, &mut |e| got.push(seq_of(e).unwrap())), FillStep::More);
        assert_eq!(got, vec![2]);
    }

    fn at(mut e: StoredEntry, ts_ms: i64) -> StoredEntry {
        e.ts_ms = ts_ms;
        e
    }

    /// Regression: a node's own commit (seq 4) reached its sequencer before the other node's
    /// creation commit (1-3) came through NATS; starting the channel at 4 dropped 1-3 as
    /// duplicates, and with them the joins: the member on this node never got the channel.
    #[test]
    fn a_channel_first_seen_late_gets_what_was_committed_since_the_start() {
        let mut s = Sequencer::new(8, true);
        let now = Instant::now();
        assert_eq!(s.offer(&ev("c", 4), now), Verdict::Held { start_fill: true });
        assert_eq!(s.offer(&ev("c", 2), now), Verdict::Held { start_fill: false }, "in flight: wanted");
        assert_eq!(
            s.fill_after("c"),
            Some(FillFrom { app: "app".into(), after: 3, deleted: false, probe: Some(2) })
        );
        let before = vec![
            at(entry("c", 1, EntryKind::ChannelCreated, ""), 2000),
            at(entry("c", 2, EntryKind::MemberJoined, "bob"), 2000),
            at(entry("c", 3, EntryKind::Message, ""), 2000),
        ];
        let mut got = Vec::new();
        let step = s.probed("c", &before, rebuilt_page("app", &before), 1500, &mut |e| {
            got.push((seq_of(e).unwrap(), live(e)))
        });
        assert_eq!(step, FillStep::Done);
        assert_eq!(got, vec![(1, false), (2, true), (3, false), (4, true)]);

        // A channel busy before the start: only what came after it.
        let mut s = Sequencer::new(8, true);
        s.offer(&ev("old", 10), now);
        let before: Vec<StoredEntry> = (7..=9)
            .map(|q| at(entry("old", q, EntryKind::Message, ""), if q < 9 { 1000 } else { 2000 }))
            .collect();
        assert_eq!(s.fill_after("old").unwrap().probe, Some(10));
        let mut got = Vec::new();
        assert_eq!(
            s.probed("old", &before, rebuilt_page("app", &before), 1500, &mut |e| got
                .push(seq_of(e).unwrap())),
            FillStep::Done
        );
        assert_eq!(got, vec![9, 10]);
        // Nothing after the start: it starts at the first seq seen.
        let mut s = Sequencer::new(8, true);
        s.offer(&ev("old", 10), now);
        let mut got = Vec::new();
        assert_eq!(
            s.probed("old", &before, rebuilt_page("app", &before), 5000, &mut |e| got
                .push(seq_of(e).unwrap())),
            FillStep::Done
        );
        assert_eq!(got, vec![10]);
        assert_eq!(s.offer(&ev("old", 9), now), Verdict::Duplicate);
        assert_eq!(s.offer(&ev("old", 11), now), Verdict::Deliver);
        // seq 1 needs no probe.
        assert_eq!(s.offer(&ev("new", 1), now), Verdict::Deliver);
    }

    #[test]
    fn idle_channels_are_forgotten_and_a_stale_copy_after_is_dropped() {
        let mut s = Sequencer::new(8, true);
        let t0 = Instant::now();
        s.offer(&ev("idle", 1), t0);
        s.offer(&ev("idle", 2), t0);
        s.offer(&ev("busy", 1), t0);
        s.offer(&ev("busy", 3), t0);
        let later = t0 + std::time::Duration::from_secs(10);
        s.offer(&ev("recent", 1), later);
        assert_eq!(s.forget_idle(t0 + std::time::Duration::from_secs(5)), 1, "not the one filling");
        assert_eq!(s.last("idle"), None);
        assert!(s.last("busy").is_some() && s.last("recent").is_some());

        // A stale copy of seq 2 arrives after: the probe finds it older than the bound.
        assert_eq!(s.offer(&ev("idle", 2), later), Verdict::Held { start_fill: true });
        let old = vec![
            at(entry("idle", 1, EntryKind::Message, ""), 100),
            at(entry("idle", 2, EntryKind::Message, ""), 100),
        ];
        let mut got = Vec::new();
        let step = s.probed("idle", &old, rebuilt_page("app", &old), 5000, &mut |e| got.push(seq_of(e)));
        assert_eq!(step, FillStep::Done);
        assert!(got.is_empty(), "a stale copy was delivered: {got:?}");
        assert_eq!(s.offer(&ev("idle", 3), later), Verdict::Deliver);
    }

    #[test]
    fn rebuilt_entries_carry_membership_like_envelopes_of() {
        let page = vec![
            entry("c", 1, EntryKind::ChannelCreated, ""),
            entry("c", 2, EntryKind::MemberJoined, "ada"),
            entry("c", 3, EntryKind::MemberJoined, "bob"),
            entry("c", 4, EntryKind::Message, ""),
            entry("c", 5, EntryKind::MemberJoined, "carol"),
            entry("c", 6, EntryKind::MemberLeft, "bob"),
        ];
        let evs = rebuilt_page("app", &page);
        let joined: Vec<Vec<String>> = evs.iter().map(|e| e.joined.clone()).collect();
        assert_eq!(joined[0], vec!["ada".to_owned(), "bob".to_owned()]);
        assert!(joined[1].is_empty() && joined[2].is_empty() && joined[3].is_empty());
        assert_eq!(joined[4], vec!["carol".to_owned()]);
        assert_eq!(evs[5].left, vec!["bob".to_owned()]);
        assert!(evs.iter().all(|e| e.committed_at.is_none() && e.app == "app"));
        let v: serde_json::Value = serde_json::from_slice(&evs[3].frame).unwrap();
        assert_eq!(v["event"], "message");
        assert_eq!(v["seq"], 4);
    }
}
