//! The shared suite every [`Store`] backend must pass, and [`RecordingSink`].
//!
//! A backend's test calls [`run_all`] with a function that opens a fresh, empty store around
//! the sink it is given:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn testkit() {
//!     herald_store::testkit::run_all(|sink| async move { open_my_store(sink) }).await;
//! }
//! ```
//!
//! Every case goes through the trait only, verifies hash chains with `herald_proto::chain`, and
//! panics with the case's name on the first broken guarantee.

use crate::Guard;
use crate::{Actor, Applied, CommitSink, HistoryRange, Mutation, Outcome, Store, StoreError, StoredEntry};
use herald_proto::chain::{self, EntryFields, ZERO_HASH};
use herald_proto::model::{Message, Policy, UserInfo, UserKind};
use herald_proto::{ChannelName, EntryKind};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A [`CommitSink`] that records every [`Applied`] it sees, in order.
#[derive(Debug, Default)]
pub struct RecordingSink {
    applied: Mutex<Vec<Applied>>,
}

impl RecordingSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything committed so far, in commit order.
    pub fn applied(&self) -> Vec<Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every entry committed so far, in commit order.
    pub fn entries(&self) -> Vec<StoredEntry> {
        self.applied().into_iter().flat_map(|a| a.entries).collect()
    }

    /// How many times an entry with this channel and hash was seen.
    pub fn count_entry(&self, channel_id: &str, hash: &chain::Hash32) -> usize {
        let guard = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .iter()
            .flat_map(|a| &a.entries)
            .filter(|e| e.channel_id == channel_id && &e.hash == hash)
            .count()
    }
}

impl CommitSink for RecordingSink {
    fn committed(&self, applied: &Applied) {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).push(applied.clone());
    }
}

/// The app every case uses; [`OTHER_APP`] is the tenant that must never see it.
pub const APP: &str = "testkit";
pub const OTHER_APP: &str = "testkit-other";

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh UUID-shaped id (the store treats ids as opaque strings of that shape).
pub fn new_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("0190a000-0000-7000-8000-{n:012x}")
}

/// A timestamp that increases by one second per call.
pub fn now_ms() -> i64 {
    1_732_000_000_000 + 1000 * COUNTER.fetch_add(1, Ordering::Relaxed) as i64
}

/// An ordinary user of [`APP`] named after their id.
pub fn user(id: &str) -> Actor {
    Actor {
        app: APP.to_owned(),
        user: UserInfo { id: id.to_owned(), name: Some(format!("{id} name")), kind: UserKind::Human },
    }
}

/// The guard of a write that changes `actor`'s own message or reaction: member and author.
pub fn own(actor: &Actor) -> Guard {
    Guard { member: Some(actor.user.id.clone()), author: Some(actor.user.id.clone()), ..Guard::none() }
}

/// The guard of a channel-wide change by `actor`, which only the creator may make.
pub fn creator(actor: &Actor) -> Guard {
    Guard { creator: Some(actor.user.id.clone()), ..Guard::none() }
}

/// The guard of `actor` removing `user`: anyone may remove themselves, the creator anyone.
pub fn remove_guard(actor: &Actor, user: &str) -> Guard {
    if actor.user.id == user { Guard::none() } else { creator(actor) }
}

fn expect<T>(r: crate::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

macro_rules! assert_err {
    ($r:expr, $pat:pat, $what:expr) => {
        match $r {
            Err($pat) => {}
            Err(e) => panic!("{}: wrong error: {e:?}", $what),
            Ok(_) => panic!("{}: succeeded but should have failed", $what),
        }
    };
}

/// Creates a channel and returns its id.
pub async fn create(
    s: &dyn Store,
    actor: &Actor,
    name: Option<&str>,
    policy: Policy,
    members: &[&str],
) -> String {
    let id = new_id();
    let a = expect(
        s.apply(Mutation::CreateChannel {
            actor: actor.clone(),
            id: id.clone(),
            name: name.map(|n| ChannelName::parse(n).unwrap_or_else(|e| panic!("{e}"))),
            title: Some("A title".into()),
            encrypted: false,
            policy,
            members: members.iter().map(|m| m.to_string()).collect(),
            ts_ms: now_ms(),
        })
        .await,
        "create channel",
    );
    a.channel.map(|c| c.id).unwrap_or(id)
}

pub async fn join(s: &dyn Store, actor: &Actor, ch: &str) -> crate::Result<Applied> {
    s.apply(Mutation::Join {
        actor: actor.clone(),
        guard: Guard { open: true, ..Guard::none() },
        channel: ch.to_owned(),
        ts_ms: now_ms(),
    })
    .await
}

/// Sends a message and returns it.
pub async fn send(s: &dyn Store, actor: &Actor, ch: &str, content: &str) -> Message {
    let a = expect(try_send(s, actor, ch, content, None, None).await, "send");
    message_of(&a)
}

pub async fn try_send(
    s: &dyn Store,
    actor: &Actor,
    ch: &str,
    content: &str,
    reply_to: Option<&str>,
    client_id: Option<&str>,
) -> crate::Result<Applied> {
    s.apply(Mutation::Send {
        actor: actor.clone(),
        guard: Guard::member(&actor.user.id),
        channel: ch.to_owned(),
        id: new_id(),
        kind: "chat.text".into(),
        content: content.to_owned(),
        reply_to: reply_to.map(str::to_owned),
        client_id: client_id.map(str::to_owned),
        ts_ms: now_ms(),
    })
    .await
}

fn message_of(a: &Applied) -> Message {
    match &a.outcome {
        Outcome::Message { message, .. } => (**message).clone(),
        o => panic!("expected a message outcome, got {o:?}"),
    }
}

/// Reads a channel's whole log in small pages and checks it: gapless from 1, every link, every
/// hash recomputed, every present content against its `content_hash`.
pub async fn verify_log(s: &dyn Store, ch: &str) -> Vec<StoredEntry> {
    let mut all: Vec<StoredEntry> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let (page, more) = expect(s.log(ch, after, 5).await, "log");
        assert!(page.len() <= 5, "log page over its limit");
        all.extend(page);
        if !more {
            break;
        }
    }
    let mut prev = ZERO_HASH;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "log of {ch} is not gapless from 1");
        assert_eq!(e.channel_id, ch);
        assert_eq!(e.prev_hash, prev, "entry {} does not link to its predecessor", e.seq);
        if let (Some(content), Some(salt)) = (&e.content, &e.salt) {
            assert_eq!(chain::content_hash(salt, content), e.content_hash, "content_hash of entry {}", e.seq);
        } else {
            assert!(e.content.is_none() && e.salt.is_none(), "entry {}: content and salt go together", e.seq);
        }
        let fields = EntryFields {
            seq: e.seq,
            kind: e.kind,
            channel_id: ch,
            author: &e.author,
            reference: &e.reference,
            ts_ms: e.ts_ms,
            content_hash: &e.content_hash,
        };
        assert_eq!(chain::entry_hash(&e.prev_hash, &fields), e.hash, "hash of entry {}", e.seq);
        prev = e.hash;
    }
    assert_eq!(expect(s.head_seq(ch).await, "head_seq"), all.len() as u64, "head_seq of {ch}");
    all
}

async fn history(s: &dyn Store, ch: &str, range: HistoryRange) -> (Vec<Message>, bool) {
    expect(s.history(ch, &range).await, "history")
}

fn range(limit: u32) -> HistoryRange {
    HistoryRange { limit, ..Default::default() }
}

/// Runs every case, each against a fresh store from `open`.
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn(Arc<dyn CommitSink>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    macro_rules! case {
        ($f:ident) => {{
            eprintln!("testkit: {}", stringify!($f));
            let sink = RecordingSink::new();
            let store = open(sink.clone()).await;
            $f(&*store, &sink).await;
            expect(store.close().await, "close");
        }};
    }
    case!(chain_is_gapless_and_verifies);
    case!(client_id_is_idempotent);
    case!(names_taken_and_recreated);
    case!(membership_is_checked);
    case!(edit_and_delete_are_author_only);
    case!(hard_delete_erases_content);
    case!(reactions_show_in_history);
    case!(reply_snapshots);
    case!(history_cursors);
    case!(unread_counts_and_read_markers);
    case!(directory_follows_policy);
    case!(delete_channel_removes_everything);
    case!(members_and_memberships);
    case!(webhook_state);
    case!(presence_outbox);
    case!(present_participants);
    case!(moderator_delete_records_who);
    case!(bans_keep_a_user_out_until_they_expire);
    {
        eprintln!("testkit: sink_order_is_commit_order");
        let sink = RecordingSink::new();
        let store = open(sink.clone()).await;
        sink_order_is_commit_order(store.clone(), sink).await;
        expect(store.close().await, "close");
    }
    crate::testkit_e2ee::run_all(|| open(RecordingSink::new())).await;
}

/// Entries of every kind get gapless seqs and a valid chain; the sink sees what `apply` returns.
pub async fn chain_is_gapless_and_verifies(s: &dyn Store, sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, Some("general"), Policy::Open, &[]).await;
    expect(join(s, &bob, &ch).await, "join");
    let m1 = send(s, &ada, &ch, "hello").await;
    let m2 = send(s, &bob, &ch, "").await;
    expect(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: m1.id.clone(),
            content: "hello!".into(),
            ts_ms: now_ms(),
        })
        .await,
        "edit",
    );
    let r = expect(
        s.apply(Mutation::React {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: m1.id.clone(),
            emoji: "👍".into(),
            ts_ms: now_ms(),
        })
        .await,
        "react",
    );
    let Outcome::Reaction { reaction_id } = r.outcome else { panic!("react outcome") };
    expect(
        s.apply(Mutation::Unreact {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            reaction_id: reaction_id.clone(),
            ts_ms: now_ms(),
        })
        .await,
        "unreact",
    );
    expect(
        s.apply(Mutation::RemoveMember {
            actor: bob.clone(),
            guard: remove_guard(&bob, "bob"),
            channel: ch.clone(),
            user: "bob".into(),
            ts_ms: now_ms(),
        })
        .await,
        "leave",
    );
    let log = verify_log(s, &ch).await;
    let kinds: Vec<EntryKind> = log.iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [
            ChannelCreated,
            MemberJoined,
            MemberJoined,
            Message,
            Message,
            MessageEdited,
            Reaction,
            ReactionDeleted,
            MemberLeft
        ]
    );
    // What each entry carries beyond its hashed fields.
    assert_eq!(log[0].content.as_deref(), Some("general"));
    assert_eq!(log[0].extra.name.as_deref(), Some("general"));
    assert_eq!(log[0].extra.title.as_deref(), Some("A title"));
    assert_eq!((log[2].author.as_str(), log[2].reference.as_str()), ("bob", "bob"));
    assert_eq!(log[2].extra.name.as_deref(), Some("bob name"));
    assert_eq!(log[3].extra.id.as_deref(), Some(m1.id.as_str()));
    assert_eq!(log[3].extra.msg_type.as_deref(), Some("chat.text"));
    assert_eq!(log[3].reference, "");
    assert_eq!(log[4].extra.id.as_deref(), Some(m2.id.as_str()));
    assert_eq!((log[5].reference.as_str(), log[5].content.as_deref()), (m1.id.as_str(), Some("hello!")));
    assert_eq!(log[6].extra.id.as_deref(), Some(reaction_id.as_str()));
    assert_eq!((log[6].reference.as_str(), log[6].content.as_deref()), (m1.id.as_str(), Some("👍")));
    assert_eq!(log[7].reference, reaction_id);
    assert_eq!(log[7].extra.message_id.as_deref(), Some(m1.id.as_str()));
    assert_eq!(log[8].reference, "bob");
    // The sink saw exactly these entries, in order.
    let seen: Vec<_> =
        sink.entries().into_iter().filter(|e| e.channel_id == ch).map(|e| (e.seq, e.hash)).collect();
    let stored: Vec<_> = log.iter().map(|e| (e.seq, e.hash)).collect();
    assert_eq!(seen, stored, "sink entries differ from the log");
    assert!(sink.applied().iter().all(|a| a.app == APP), "Applied.app");
    let c = expect(s.channel(APP, &ch).await, "channel").expect("channel by id");
    assert_eq!(c.last_seq, 9);
    assert_eq!(c.name.as_deref(), Some("general"));
    assert_eq!(expect(s.log(&ch, 9, 10).await, "log").0.len(), 0);
    assert_eq!(expect(s.head_seq(&new_id()).await, "head of unknown"), 0);
}

pub async fn client_id_is_idempotent(s: &dyn Store, sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let first = expect(try_send(s, &ada, &ch, "once", None, Some("k1")).await, "send");
    assert_eq!(first.entries.len(), 1);
    let head = expect(s.head_seq(&ch).await, "head");
    let before = sink.applied().len();
    let again = expect(try_send(s, &ada, &ch, "once", None, Some("k1")).await, "resend");
    assert!(again.entries.is_empty(), "a repeat appends nothing");
    match &again.outcome {
        Outcome::Message { message, duplicate } => {
            assert!(*duplicate);
            assert_eq!(message.id, message_of(&first).id);
            assert_eq!(message.client_id.as_deref(), Some("k1"));
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(expect(s.head_seq(&ch).await, "head"), head);
    assert!(sink.applied().len() <= before + 1);
    // Same key, other author: a different message.
    let other = expect(try_send(s, &bob, &ch, "mine", None, Some("k1")).await, "bob send");
    assert_eq!(other.entries.len(), 1);
    assert_ne!(message_of(&other).id, message_of(&first).id);
    let (msgs, _) = history(s, &ch, range(50)).await;
    assert_eq!(msgs.len(), 2);
    verify_log(s, &ch).await;
}

pub async fn names_taken_and_recreated(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, Some("general"), Policy::Open, &[]).await;
    let head = expect(s.head_seq(&ch).await, "head");
    // Same creator: the existing channel, nothing appended.
    let again = expect(
        s.apply(Mutation::CreateChannel {
            actor: ada.clone(),
            id: new_id(),
            name: Some(ChannelName::parse("general").expect("name")),
            title: None,
            encrypted: false,
            policy: Policy::Open,
            members: vec![],
            ts_ms: now_ms(),
        })
        .await,
        "re-create",
    );
    assert!(matches!(again.outcome, Outcome::Channel { created: false }));
    assert_eq!(again.channel.as_ref().map(|c| c.id.as_str()), Some(ch.as_str()));
    assert!(again.entries.is_empty());
    assert_eq!(expect(s.head_seq(&ch).await, "head"), head);
    // Someone else: name_taken.
    let r = s
        .apply(Mutation::CreateChannel {
            actor: bob.clone(),
            id: new_id(),
            name: Some(ChannelName::parse("general").expect("name")),
            title: None,
            encrypted: false,
            policy: Policy::Open,
            members: vec![],
            ts_ms: now_ms(),
        })
        .await;
    assert_err!(r, StoreError::NameTaken, "create by another user");
    // The creator left: re-creating joins them again.
    expect(
        s.apply(Mutation::RemoveMember {
            actor: ada.clone(),
            guard: remove_guard(&ada, "ada"),
            channel: ch.clone(),
            user: "ada".into(),
            ts_ms: now_ms(),
        })
        .await,
        "leave",
    );
    let back = expect(
        s.apply(Mutation::CreateChannel {
            actor: ada.clone(),
            id: new_id(),
            name: Some(ChannelName::parse("general").expect("name")),
            title: None,
            encrypted: false,
            policy: Policy::Open,
            members: vec![],
            ts_ms: now_ms(),
        })
        .await,
        "re-create after leaving",
    );
    assert!(matches!(back.outcome, Outcome::Channel { created: false }));
    assert_eq!(back.entries.len(), 1);
    assert_eq!(back.entries[0].kind, EntryKind::MemberJoined);
    assert!(expect(s.members(&ch).await, "members").iter().any(|m| m.user == "ada"));
    // Names are per app; lookups by name and id stay within the app.
    let other = Actor { app: OTHER_APP.into(), ..bob.clone() };
    let och = create(s, &other, Some("general"), Policy::Open, &[]).await;
    assert_ne!(och, ch);
    assert_eq!(expect(s.channel(APP, "general").await, "by name").map(|c| c.id), Some(ch.clone()));
    assert_eq!(expect(s.channel(OTHER_APP, "general").await, "by name").map(|c| c.id), Some(och.clone()));
    assert!(expect(s.channel(OTHER_APP, &ch).await, "by id, other app").is_none());
    assert!(expect(s.channel(APP, "nope").await, "unknown name").is_none());
    verify_log(s, &ch).await;
}

pub async fn membership_is_checked(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob, carol) = (user("ada"), user("bob"), user("carol"));
    let ch = create(s, &ada, Some("secret"), Policy::Invite, &[]).await;
    let m = send(s, &ada, &ch, "inside").await;
    assert_err!(try_send(s, &bob, &ch, "x", None, None).await, StoreError::NotMember, "send by non-member");
    assert_err!(
        s.apply(Mutation::Edit {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            message_id: m.id.clone(),
            content: "x".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotMember | StoreError::NotAuthor,
        "edit by non-member"
    );
    assert_err!(
        s.apply(Mutation::React {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: m.id.clone(),
            emoji: "x".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotMember,
        "react by non-member"
    );
    assert_err!(
        s.apply(Mutation::Read {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            message_id: m.id.clone()
        })
        .await,
        StoreError::NotMember,
        "read by non-member"
    );
    assert_err!(join(s, &bob, &ch).await, StoreError::Forbidden(_), "join of an invite channel");
    assert_err!(
        s.apply(Mutation::AddMember {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            user: "carol".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotMember | StoreError::Forbidden(_),
        "add by non-member"
    );
    assert_err!(
        s.apply(Mutation::RemoveMember {
            actor: carol.clone(),
            guard: remove_guard(&carol, "ada"),
            channel: ch.clone(),
            user: "ada".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::Forbidden(_),
        "remove someone else"
    );
    assert_err!(
        s.apply(Mutation::RemoveMember {
            actor: ada.clone(),
            guard: remove_guard(&ada, "carol"),
            channel: ch.clone(),
            user: "carol".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "remove a non-member"
    );
    // Unknown channel, and a channel of another app.
    assert_err!(
        try_send(s, &ada, &new_id(), "x", None, None).await,
        StoreError::ChannelNotFound,
        "unknown channel"
    );
    let stranger = Actor { app: OTHER_APP.into(), ..ada.clone() };
    assert_err!(try_send(s, &stranger, &ch, "x", None, None).await, StoreError::ChannelNotFound, "other app");
    assert_err!(join(s, &stranger, &ch).await, StoreError::ChannelNotFound, "join from other app");
    // Admins join invite channels; members add others.
    let added = expect(
        s.apply(Mutation::AddMember {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: ch.clone(),
            user: "bob".into(),
            ts_ms: now_ms(),
        })
        .await,
        "add",
    );
    assert_eq!(added.entries.len(), 1);
    assert_eq!((added.entries[0].author.as_str(), added.entries[0].reference.as_str()), ("ada", "bob"));
    let again = expect(
        s.apply(Mutation::AddMember {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: ch.clone(),
            user: "bob".into(),
            ts_ms: now_ms(),
        })
        .await,
        "add again",
    );
    assert!(again.entries.is_empty(), "adding a member twice appends nothing");
    // An unguarded join (the engine's for `channels:admin`) enters an invite channel.
    let root =
        Mutation::Join { actor: user("root"), channel: ch.clone(), guard: Guard::none(), ts_ms: now_ms() };
    expect(s.apply(root).await, "unguarded join");
    let j = expect(join(s, &bob, &ch).await, "join when already a member");
    assert!(j.entries.is_empty());
    send(s, &bob, &ch, "now inside").await;
    // An unguarded send (the engine's for a `server` token) posts as its author, member or not.
    let svc = Mutation::Send {
        actor: user("bot"),
        channel: ch.clone(),
        id: new_id(),
        kind: "chat.text".into(),
        content: "from the backend".into(),
        reply_to: None,
        client_id: None,
        guard: Guard::none(),
        ts_ms: now_ms(),
    };
    expect(s.apply(svc).await, "unguarded send");
    // The creator may remove anyone.
    let rm = expect(
        s.apply(Mutation::RemoveMember {
            actor: ada.clone(),
            guard: remove_guard(&ada, "bob"),
            channel: ch.clone(),
            user: "bob".into(),
            ts_ms: now_ms(),
        })
        .await,
        "remove",
    );
    assert_eq!(
        (rm.entries[0].kind, rm.entries[0].author.as_str(), rm.entries[0].reference.as_str()),
        (EntryKind::MemberLeft, "ada", "bob")
    );
    assert_err!(try_send(s, &bob, &ch, "x", None, None).await, StoreError::NotMember, "send after removal");
    verify_log(s, &ch).await;
}

pub async fn edit_and_delete_are_author_only(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let m = send(s, &ada, &ch, "mine").await;
    assert_err!(
        s.apply(Mutation::Edit {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            message_id: m.id.clone(),
            content: "x".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotAuthor,
        "edit by another member"
    );
    assert_err!(
        s.apply(Mutation::Delete {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            message_id: m.id.clone(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotAuthor,
        "delete by another member"
    );
    assert_err!(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: new_id(),
            content: "x".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "edit of an unknown message"
    );
    // A message of another channel is not found here.
    let other = create(s, &ada, None, Policy::Open, &[]).await;
    let elsewhere = send(s, &ada, &other, "elsewhere").await;
    assert_err!(
        s.apply(Mutation::Delete {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: elsewhere.id.clone(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "delete of another channel's message"
    );
    let r = expect(
        s.apply(Mutation::React {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: m.id.clone(),
            emoji: "🎉".into(),
            ts_ms: now_ms(),
        })
        .await,
        "react",
    );
    let Outcome::Reaction { reaction_id } = r.outcome else { panic!("react outcome") };
    assert_err!(
        s.apply(Mutation::Unreact {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            reaction_id: reaction_id.clone(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotAuthor | StoreError::Forbidden(_),
        "unreact by someone else"
    );
    assert_err!(
        s.apply(Mutation::Unreact {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            reaction_id: new_id(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "unreact of an unknown reaction"
    );
    let edited = expect(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            content: "mine, edited".into(),
            ts_ms: now_ms(),
        })
        .await,
        "edit by the author",
    );
    let em = message_of(&edited);
    assert_eq!(em.content, "mine, edited");
    assert!(em.edited_at.is_some());
    let (msgs, _) = history(s, &ch, range(10)).await;
    assert_eq!(msgs[0].content, "mine, edited");
    assert_eq!(msgs[0].edited_at, em.edited_at);
    verify_log(s, &ch).await;
}

pub async fn hard_delete_erases_content(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let m = send(s, &ada, &ch, "secret one").await;
    for text in ["secret two", "secret three"] {
        expect(
            s.apply(Mutation::Edit {
                actor: ada.clone(),
                guard: own(&ada),
                channel: ch.clone(),
                message_id: m.id.clone(),
                content: text.into(),
                ts_ms: now_ms(),
            })
            .await,
            "edit",
        );
    }
    expect(
        s.apply(Mutation::React {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: m.id.clone(),
            emoji: "👀".into(),
            ts_ms: now_ms(),
        })
        .await,
        "react",
    );
    let reply = message_of(&expect(try_send(s, &bob, &ch, "what secret?", Some(&m.id), None).await, "reply"));
    let keep = send(s, &ada, &ch, "not secret").await;
    let del = expect(
        s.apply(Mutation::Delete {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            ts_ms: now_ms(),
        })
        .await,
        "delete",
    );
    assert_eq!(del.entries.len(), 1);
    assert_eq!(
        (del.entries[0].kind, del.entries[0].reference.as_str()),
        (EntryKind::MessageDeleted, m.id.as_str())
    );
    let log = verify_log(s, &ch).await;
    for e in &log {
        let of_deleted = (e.kind == EntryKind::Message && e.extra.id.as_deref() == Some(m.id.as_str()))
            || (e.kind == EntryKind::MessageEdited && e.reference == m.id);
        if of_deleted {
            assert!(e.content.is_none() && e.salt.is_none(), "entry {} keeps deleted text", e.seq);
        }
        assert!(
            !e.content.as_deref().unwrap_or("").contains("secret "),
            "entry {} keeps deleted text",
            e.seq
        );
    }
    let (msgs, _) = history(s, &ch, range(50)).await;
    assert!(msgs.iter().all(|x| x.id != m.id), "a deleted message is absent from history");
    assert!(msgs.iter().any(|x| x.id == keep.id));
    let r = msgs.iter().find(|x| x.id == reply.id).expect("the reply stays");
    let snap = r.reply_to.as_ref().expect("reply snapshot");
    assert_eq!(
        (snap.id.as_str(), snap.author.as_str(), snap.content.as_deref()),
        (m.id.as_str(), "ada", None)
    );
    assert_err!(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            content: "back".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "edit of a deleted message"
    );
    assert_err!(
        s.apply(Mutation::Delete {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: m.id.clone(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "second delete"
    );
}

pub async fn reactions_show_in_history(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let m = send(s, &ada, &ch, "react to me").await;
    let plain = send(s, &ada, &ch, "nobody cares").await;
    let mut ids = Vec::new();
    for (who, emoji) in [(&ada, "👍"), (&bob, "🎉"), (&bob, "👍")] {
        let a = expect(
            s.apply(Mutation::React {
                actor: who.clone(),
                guard: Guard::member(&who.user.id),
                channel: ch.clone(),
                id: new_id(),
                message_id: m.id.clone(),
                emoji: emoji.into(),
                ts_ms: now_ms(),
            })
            .await,
            "react",
        );
        let Outcome::Reaction { reaction_id } = a.outcome else { panic!("react outcome") };
        ids.push(reaction_id);
    }
    assert_err!(
        s.apply(Mutation::React {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: new_id(),
            emoji: "x".into(),
            ts_ms: now_ms()
        })
        .await,
        StoreError::NotFound(_),
        "react to an unknown message"
    );
    expect(
        s.apply(Mutation::Unreact {
            actor: bob.clone(),
            guard: own(&bob),
            channel: ch.clone(),
            reaction_id: ids[1].clone(),
            ts_ms: now_ms(),
        })
        .await,
        "unreact",
    );
    let (msgs, _) = history(s, &ch, range(50)).await;
    let hm = msgs.iter().find(|x| x.id == m.id).expect("message");
    let reactions = hm.reactions.as_ref().expect("history carries reactions");
    let got: Vec<_> =
        reactions.iter().map(|r| (r.reaction_id.as_str(), r.emoji.as_str(), r.user.as_str())).collect();
    assert_eq!(got, [(ids[0].as_str(), "👍", "ada"), (ids[2].as_str(), "👍", "bob")]);
    let hp = msgs.iter().find(|x| x.id == plain.id).expect("message");
    assert_eq!(hp.reactions.as_deref(), Some(&[][..]));
    verify_log(s, &ch).await;
}

pub async fn reply_snapshots(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let target = send(s, &ada, &ch, "question").await;
    let reply = message_of(&expect(try_send(s, &bob, &ch, "answer", Some(&target.id), None).await, "reply"));
    let snap = reply.reply_to.as_ref().expect("snapshot in the send outcome");
    assert_eq!(
        (snap.id.as_str(), snap.author.as_str(), snap.content.as_deref(), snap.edited),
        (target.id.as_str(), "ada", Some("question"), false)
    );
    assert!(target.reply_to.is_none());
    assert_err!(
        try_send(s, &bob, &ch, "x", Some(&new_id()), None).await,
        StoreError::NotFound(_),
        "reply to unknown"
    );
    let other = create(s, &ada, None, Policy::Open, &[]).await;
    let elsewhere = send(s, &ada, &other, "elsewhere").await;
    assert_err!(
        try_send(s, &ada, &ch, "x", Some(&elsewhere.id), None).await,
        StoreError::NotFound(_),
        "reply across channels"
    );
    expect(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: target.id.clone(),
            content: "better question".into(),
            ts_ms: now_ms(),
        })
        .await,
        "edit",
    );
    let (msgs, _) = history(s, &ch, range(50)).await;
    let r = msgs.iter().find(|x| x.id == reply.id).expect("reply");
    let snap = r.reply_to.as_ref().expect("snapshot");
    assert_eq!((snap.content.as_deref(), snap.edited), (Some("better question"), true));
    assert!(msgs.iter().find(|x| x.id == target.id).expect("target").reply_to.is_none());
    let log = verify_log(s, &ch).await;
    let e = log.iter().find(|e| e.extra.id.as_deref() == Some(reply.id.as_str())).expect("reply entry");
    assert_eq!(e.reference, target.id);
    let snap = e.extra.reply.as_ref().expect("log carries the reply snapshot");
    assert_eq!((snap.author.as_str(), snap.content.as_deref()), ("ada", Some("better question")));
}

pub async fn history_cursors(s: &dyn Store, _sink: &RecordingSink) {
    let ada = user("ada");
    let ch = create(s, &ada, None, Policy::Open, &[]).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(send(s, &ada, &ch, &format!("m{i}")).await);
    }
    let contents = |v: &[Message]| v.iter().map(|m| m.content.clone()).collect::<Vec<_>>();
    let (page, more) = history(s, &ch, range(3)).await;
    assert_eq!(contents(&page), ["m9", "m8", "m7"], "no cursor: newest first");
    assert!(more);
    let (page, more) = history(s, &ch, HistoryRange { before: Some(page[2].seq), ..range(3) }).await;
    assert_eq!(contents(&page), ["m6", "m5", "m4"]);
    assert!(more);
    let (page, more) = history(s, &ch, HistoryRange { before: Some(sent[2].seq), ..range(3) }).await;
    assert_eq!(contents(&page), ["m1", "m0"]);
    assert!(!more);
    let (page, more) = history(s, &ch, HistoryRange { after: Some(0), ..range(4) }).await;
    assert_eq!(contents(&page), ["m0", "m1", "m2", "m3"], "after: oldest first");
    assert!(more);
    let (page, more) = history(s, &ch, HistoryRange { after: Some(sent[6].seq), ..range(4) }).await;
    assert_eq!(contents(&page), ["m7", "m8", "m9"]);
    assert!(!more);
    let (page, more) = history(s, &ch, range(10)).await;
    assert_eq!(page.len(), 10);
    assert!(!more, "exactly a full page has no more");
    // Time range, both ends inclusive.
    let ts = |m: &Message| herald_proto::time::parse_ms(&m.ts).expect("ts");
    let (page, more) =
        history(s, &ch, HistoryRange { from_ms: Some(ts(&sent[3])), to_ms: Some(ts(&sent[5])), ..range(10) })
            .await;
    assert_eq!(contents(&page), ["m5", "m4", "m3"]);
    assert!(!more);
    let (page, more) =
        history(s, &ch, HistoryRange { from_ms: Some(ts(&sent[3])), after: Some(0), ..range(2) }).await;
    assert_eq!(contents(&page), ["m3", "m4"]);
    assert!(more);
    // Timestamps are RFC 3339 with milliseconds.
    assert!(page[0].ts.ends_with('Z') && page[0].ts.contains('.'));
    assert_eq!(history(s, &new_id(), range(5)).await.0.len(), 0);
}

pub async fn unread_counts_and_read_markers(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, Some("room"), Policy::Open, &["bob"]).await;
    let mut mine = Vec::new();
    for i in 0..3 {
        mine.push(send(s, &ada, &ch, &format!("a{i}")).await);
    }
    send(s, &bob, &ch, "b0").await;
    let unread = |v: Vec<herald_proto::model::ChannelSummary>| {
        v.into_iter().find(|c| c.id == ch).map(|c| (c.unread, c.last_seq))
    };
    let head = expect(s.head_seq(&ch).await, "head");
    assert_eq!(unread(expect(s.channels_of(APP, "bob").await, "channels_of")), Some((3, head)));
    assert_eq!(unread(expect(s.channels_of(APP, "ada").await, "channels_of")), Some((1, head)));
    assert!(expect(s.channels_of(APP, "carol").await, "channels_of").is_empty());
    assert!(expect(s.channels_of(OTHER_APP, "bob").await, "channels_of").is_empty());
    let r = expect(
        s.apply(Mutation::Read {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            message_id: mine[1].id.clone(),
        })
        .await,
        "read",
    );
    assert!(r.entries.is_empty());
    match r.outcome {
        Outcome::Read { user, message_id, seq } => {
            assert_eq!((user.as_str(), message_id.as_str(), seq), ("bob", mine[1].id.as_str(), mine[1].seq));
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(unread(expect(s.channels_of(APP, "bob").await, "channels_of")), Some((1, head)));
    // Reading an older message does not move the marker back.
    expect(
        s.apply(Mutation::Read {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            message_id: mine[0].id.clone(),
        })
        .await,
        "read older",
    );
    let members = expect(s.members(&ch).await, "members");
    let b = members.iter().find(|m| m.user == "bob").expect("bob");
    assert_eq!(b.last_read, mine[1].seq);
    assert_eq!(members.iter().find(|m| m.user == "ada").expect("ada").last_read, 0);
    assert_err!(
        s.apply(Mutation::Read {
            actor: bob.clone(),
            guard: Guard::member(&bob.user.id),
            channel: ch.clone(),
            message_id: new_id()
        })
        .await,
        StoreError::NotFound(_),
        "read of an unknown message"
    );
    assert_eq!(expect(s.head_seq(&ch).await, "head"), head, "reads append nothing");
    // Edits, reactions and deleted messages are not unread messages.
    let later = send(s, &ada, &ch, "a3").await;
    let gone = send(s, &ada, &ch, "a4").await;
    for m in [
        Mutation::Edit {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: later.id.clone(),
            content: "a3 edited".into(),
            ts_ms: now_ms(),
        },
        Mutation::React {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: later.id.clone(),
            emoji: "👍".into(),
            ts_ms: now_ms(),
        },
        Mutation::Delete {
            actor: ada.clone(),
            guard: own(&ada),
            channel: ch.clone(),
            message_id: gone.id.clone(),
            ts_ms: now_ms(),
        },
    ] {
        expect(s.apply(m).await, "edit, react, delete");
    }
    let head = expect(s.head_seq(&ch).await, "head");
    assert_eq!(unread(expect(s.channels_of(APP, "bob").await, "channels_of")), Some((2, head)));
}

pub async fn directory_follows_policy(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, carol) = (user("ada"), user("carol"));
    let beta = create(s, &ada, Some("beta"), Policy::Invite, &[]).await;
    let alpha = create(s, &ada, Some("alpha"), Policy::Open, &[]).await;
    create(s, &ada, None, Policy::Open, &[]).await;
    create(s, &Actor { app: OTHER_APP.into(), ..ada.clone() }, Some("aaa"), Policy::Open, &[]).await;
    let names = |v: Vec<herald_proto::model::DirectoryEntry>| {
        v.into_iter().map(|d| (d.name, d.id)).collect::<Vec<_>>()
    };
    assert_eq!(
        names(expect(s.directory(APP, "carol", false).await, "dir")),
        [("alpha".to_owned(), alpha.clone())]
    );
    assert_eq!(
        names(expect(s.directory(APP, "ada", false).await, "dir")),
        [("alpha".to_owned(), alpha.clone()), ("beta".to_owned(), beta.clone())]
    );
    assert_eq!(expect(s.directory(APP, "root", true).await, "dir").len(), 2);
    assert_err!(join(s, &carol, &beta).await, StoreError::Forbidden(_), "join invite");
    expect(
        s.apply(Mutation::AddMember {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: beta.clone(),
            user: "carol".into(),
            ts_ms: now_ms(),
        })
        .await,
        "add",
    );
    assert_eq!(expect(s.directory(APP, "carol", false).await, "dir").len(), 2);
    let joined = expect(join(s, &carol, &alpha).await, "join open");
    assert_eq!(joined.entries.len(), 1);
    assert!(matches!(joined.outcome, Outcome::Channel { created: false }));
}

pub async fn delete_channel_removes_everything(s: &dyn Store, sink: &RecordingSink) {
    let (ada, bob) = (user("ada"), user("bob"));
    let ch = create(s, &ada, Some("doomed"), Policy::Open, &["bob"]).await;
    let m = send(s, &bob, &ch, "bye").await;
    expect(try_send(s, &bob, &ch, "again", None, Some("k")).await, "send");
    expect(
        s.apply(Mutation::React {
            actor: ada.clone(),
            guard: Guard::member(&ada.user.id),
            channel: ch.clone(),
            id: new_id(),
            message_id: m.id.clone(),
            emoji: "👋".into(),
            ts_ms: now_ms(),
        })
        .await,
        "react",
    );
    let head = expect(s.head_seq(&ch).await, "head");
    assert_err!(
        s.apply(Mutation::DeleteChannel {
            actor: bob.clone(),
            guard: creator(&bob),
            channel: ch.clone(),
            ts_ms: now_ms(),
        })
        .await,
        StoreError::Forbidden(_),
        "delete by a member"
    );
    let d = expect(
        s.apply(Mutation::DeleteChannel {
            actor: ada.clone(),
            guard: creator(&ada),
            channel: ch.clone(),
            ts_ms: now_ms(),
        })
        .await,
        "delete",
    );
    match &d.outcome {
        Outcome::ChannelDeleted { members } => {
            let mut m = members.clone();
            m.sort();
            assert_eq!(m, ["ada", "bob"]);
        }
        o => panic!("{o:?}"),
    }
    let before = d.channel.as_ref().expect("the channel before deletion");
    assert_eq!((before.id.as_str(), before.last_seq), (ch.as_str(), head));
    assert!(sink.applied().iter().any(|a| matches!(a.outcome, Outcome::ChannelDeleted { .. })));
    assert!(expect(s.channel(APP, &ch).await, "channel").is_none());
    assert!(expect(s.channel(APP, "doomed").await, "channel").is_none());
    assert_eq!(expect(s.log(&ch, 0, 100).await, "log").0.len(), 0);
    assert_eq!(expect(s.head_seq(&ch).await, "head"), 0);
    assert_eq!(history(s, &ch, range(50)).await.0.len(), 0);
    assert!(expect(s.members(&ch).await, "members").is_empty());
    assert!(expect(s.channels_of(APP, "bob").await, "channels_of").is_empty());
    assert!(!expect(s.member_channels(APP, "bob").await, "member_channels").contains(&ch));
    assert!(!expect(s.is_member(APP, &ch, "ada").await, "is_member"), "the creator of a deleted channel");
    assert_err!(
        try_send(s, &bob, &ch, "x", None, None).await,
        StoreError::ChannelNotFound,
        "send to deleted"
    );
    // The name is free again, for anyone.
    let again = create(s, &bob, Some("doomed"), Policy::Open, &[]).await;
    assert_ne!(again, ch);
    assert_eq!(verify_log(s, &again).await.len(), 2);
}

pub async fn members_and_memberships(s: &dyn Store, _sink: &RecordingSink) {
    let ada = user("ada");
    let eve = Actor {
        user: UserInfo { id: "eve".into(), name: Some("Eve".into()), kind: UserKind::Agent },
        ..user("eve")
    };
    expect(s.apply(Mutation::UpsertUser { actor: eve.clone() }).await, "upsert");
    let ch = create(s, &ada, None, Policy::Open, &["eve", "ghost"]).await;
    let members = expect(s.members(&ch).await, "members");
    let get = |id: &str| members.iter().find(|m| m.user == id).cloned().expect("member");
    assert_eq!((get("ada").name, get("ada").kind), (Some("ada name".into()), UserKind::Human));
    assert_eq!((get("eve").name, get("eve").kind), (Some("Eve".into()), UserKind::Agent));
    assert_eq!((get("ghost").name, get("ghost").kind), (None, UserKind::Human));
    let log = verify_log(s, &ch).await;
    let joined: Vec<_> = log
        .iter()
        .filter(|e| e.kind == EntryKind::MemberJoined)
        .map(|e| (e.author.as_str(), e.reference.as_str(), e.extra.name.as_deref()))
        .collect();
    assert_eq!(
        joined,
        [("ada", "ada", Some("ada name")), ("ada", "eve", Some("Eve")), ("ada", "ghost", None)]
    );
    // Users are per app.
    let other = Actor {
        app: OTHER_APP.into(),
        user: UserInfo { id: "eve".into(), name: Some("Other Eve".into()), kind: UserKind::Human },
    };
    expect(s.apply(Mutation::UpsertUser { actor: other }).await, "upsert other app");
    let members = expect(s.members(&ch).await, "members");
    assert_eq!(members.iter().find(|m| m.user == "eve").and_then(|m| m.name.clone()), Some("Eve".into()));
    for u in ["ada", "eve", "ghost"] {
        assert!(expect(s.is_member(APP, &ch, u).await, "is_member"), "membership of {u}");
        assert_eq!(
            expect(s.member_channels(APP, u).await, "member_channels"),
            vec![ch.clone()],
            "channels of {u}"
        );
    }
    assert!(!expect(s.is_member(APP, &ch, "stranger").await, "is_member"));
    assert!(!expect(s.is_member(OTHER_APP, &ch, "ada").await, "is_member"), "another app's channel");
    assert!(expect(s.member_channels(OTHER_APP, "ada").await, "member_channels").is_empty());
}

/// 200 sends from 8 tokio tasks into 3 channels: the sink sees each committed entry exactly
/// once, in seq order per channel, and before its `apply` resolves.
pub async fn sink_order_is_commit_order(s: Arc<dyn Store>, sink: Arc<RecordingSink>) {
    let ada = user("ada");
    let mut chans = Vec::new();
    for _ in 0..3 {
        chans.push(create(&*s, &ada, None, Policy::Open, &[]).await);
    }
    let start = sink.entries().len();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (s, sink, chans, ada) = (s.clone(), sink.clone(), chans.clone(), ada.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                let ch = &chans[(t + i) % 3];
                let a = expect(
                    try_send(&*s, &ada, ch, &format!("t{t} n{i}"), None, None).await,
                    "concurrent send",
                );
                let e = a.entries.into_iter().next().expect("one entry");
                assert_eq!(sink.count_entry(ch, &e.hash), 1, "the sink saw the entry before apply resolved");
                out.push((ch.clone(), e));
            }
            out
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.extend(r.unwrap_or_else(|e| panic!("send task failed: {e}")));
    }
    assert_eq!(results.len(), 200);
    let entries: Vec<StoredEntry> = sink.entries().split_off(start);
    assert_eq!(entries.len(), 200, "the sink saw each send exactly once");
    for ch in &chans {
        let seqs: Vec<u64> = entries.iter().filter(|e| &e.channel_id == ch).map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sink order is seq order in {ch}");
        verify_log(&*s, ch).await;
    }
    for (ch, e) in &results {
        assert_eq!(sink.count_entry(ch, &e.hash), 1);
    }
}

/// The [`crate::BlobStore`] contract, for every blob backend: ids are the BLAKE3 hex of the
/// bytes, blobs are scoped by channel, malformed ids are `Invalid`, deleting a channel's blobs
/// leaves other channels' alone and may be repeated.
pub async fn blob_store_contract(blobs: &dyn crate::BlobStore) {
    let ch = new_id();
    let bytes = b"some file bytes".to_vec();
    let id = blobs.put(&ch, bytes.clone()).await.expect("put");
    assert_eq!(id, blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(id.len(), 64);
    assert_eq!(blobs.put(&ch, bytes.clone()).await.expect("put again"), id, "same bytes, same id");
    assert_eq!(blobs.get(&ch, &id).await.expect("get"), Some(bytes.clone()));
    assert_eq!(blobs.get(&new_id(), &id).await.expect("get"), None, "blobs are scoped by channel");
    let unknown = blake3::hash(b"never stored").to_hex().to_string();
    assert_eq!(blobs.get(&ch, &unknown).await.expect("get"), None);
    for bad in ["", "../etc/passwd", &id.to_uppercase(), &id[..63], &format!("{id}0")] {
        assert!(matches!(blobs.get(&ch, bad).await, Err(StoreError::Invalid(_))), "{bad:?}");
    }
    assert!(matches!(blobs.put("../x", vec![1]).await, Err(StoreError::Invalid(_))));
    let other = new_id();
    blobs.put(&other, bytes.clone()).await.expect("put");
    blobs.delete_channel(&ch).await.expect("delete");
    assert_eq!(blobs.get(&ch, &id).await.expect("get"), None);
    assert_eq!(blobs.get(&other, &id).await.expect("get"), Some(bytes), "other channels keep theirs");
    blobs.delete_channel(&ch).await.expect("delete again");
}

/// The webhooks' delivery state ([`crate::hooks`]): cursors only move forward and bound the
/// backlog; a deleted channel waits in the outbox until each webhook acknowledges it; a lease
/// is one node's until it expires.
pub async fn webhook_state(s: &dyn Store, _sink: &RecordingSink) {
    let h = s.hooks().unwrap_or_else(|| panic!("every backend has webhook state"));
    let ada = user("ada");
    let (a, b) = ("http://a.example/hook", "http://b.example/hook");
    let ch1 = create(s, &ada, Some("hook-one"), Policy::Open, &[]).await;
    let ch2 = create(s, &ada, None, Policy::Open, &["bob"]).await;
    send(s, &ada, &ch1, "one").await;
    let head1 = expect(s.head_seq(&ch1).await, "head");
    let head2 = expect(s.head_seq(&ch2).await, "head");
    assert_eq!(expect(h.hook_cursor(a, &ch1).await, "cursor"), 0, "no cursor yet");
    let mut backlog = expect(h.hook_backlog(a, 100).await, "backlog");
    backlog.sort_by(|x, y| x.channel.cmp(&y.channel));
    let mut want = vec![
        crate::hooks::HookBacklog { app: ada.app.clone(), channel: ch1.clone(), delivered: 0, head: head1 },
        crate::hooks::HookBacklog { app: ada.app.clone(), channel: ch2.clone(), delivered: 0, head: head2 },
    ];
    want.sort_by(|x, y| x.channel.cmp(&y.channel));
    assert_eq!(backlog, want);
    assert_eq!(expect(h.hook_backlog(a, 1).await, "backlog").len(), 1, "limit");
    expect(h.set_hook_cursor(a, &ch1, 2).await, "set");
    expect(h.set_hook_cursor(a, &ch1, 1).await, "set lower");
    assert_eq!(expect(h.hook_cursor(a, &ch1).await, "cursor"), 2, "a cursor never moves back");
    expect(h.set_hook_cursor(a, &ch1, head1).await, "set");
    let backlog = expect(h.hook_backlog(a, 100).await, "backlog");
    assert_eq!(backlog.iter().map(|x| x.channel.as_str()).collect::<Vec<_>>(), vec![ch2.as_str()]);
    assert_eq!(expect(h.hook_backlog(b, 100).await, "backlog").len(), 2, "cursors are per webhook");
    send(s, &ada, &ch1, "two").await;
    let backlog = expect(h.hook_backlog(a, 100).await, "backlog");
    let one = backlog.iter().find(|x| x.channel == ch1).unwrap_or_else(|| panic!("ch1 is behind again"));
    assert_eq!((one.delivered, one.head), (head1, head1 + 1));

    assert!(expect(h.hook_deleted(a, 100).await, "deleted").is_empty());
    let ts = now_ms();
    expect(
        s.apply(Mutation::DeleteChannel {
            actor: ada.clone(),
            guard: creator(&ada),
            channel: ch1.clone(),
            ts_ms: ts,
        })
        .await,
        "delete",
    );
    let gone = crate::hooks::DeletedChannel {
        app: ada.app.clone(),
        channel: ch1.clone(),
        name: Some("hook-one".into()),
        title: Some("A title".into()),
        ts_ms: ts,
    };
    assert_eq!(expect(h.hook_deleted(a, 100).await, "deleted"), vec![gone.clone()]);
    assert!(
        !expect(h.hook_backlog(a, 100).await, "backlog").iter().any(|x| x.channel == ch1),
        "a deleted channel has no backlog"
    );
    expect(h.ack_hook_deleted(a, &ch1).await, "ack");
    assert!(expect(h.hook_deleted(a, 100).await, "deleted").is_empty());
    assert_eq!(expect(h.hook_deleted(b, 100).await, "deleted"), vec![gone], "acks are per webhook");

    assert!(expect(h.claim_hook(a, &ch2, "n1", 1_000, 2_000).await, "claim"));
    assert!(!expect(h.claim_hook(a, &ch2, "n2", 1_500, 2_500).await, "claim held"), "held by n1");
    assert!(expect(h.claim_hook(a, &ch2, "n1", 1_600, 3_000).await, "renew"), "renewed by its holder");
    assert!(expect(h.claim_hook(b, &ch2, "n2", 1_600, 3_000).await, "claim"), "leases are per webhook");
    assert!(!expect(h.claim_hook(a, &ch2, "n2", 2_999, 4_000).await, "still held"));
    assert!(expect(h.claim_hook(a, &ch2, "n2", 3_001, 4_000).await, "expired"), "taken once expired");
}

/// The room presence outbox ([`crate::hooks::PresenceOutbox`]): rows come back per room in
/// write order until each webhook acknowledges them, a key written twice is one row, and a
/// row goes only once every listed webhook acknowledged it.
pub async fn presence_outbox(s: &dyn Store, _sink: &RecordingSink) {
    use crate::hooks::PresenceEvent;
    let h = s.hooks().unwrap_or_else(|| panic!("every backend has webhook state"));
    let (a, b) = ("http://a.example/hook", "http://b.example/hook");
    let ev = |key: &str, channel: &str, event: &str| PresenceEvent {
        key: key.to_owned(),
        app: "app".to_owned(),
        channel: channel.to_owned(),
        event: event.to_owned(),
        data: format!(r#"{{"event":"{event}","key":"{key}"}}"#),
        ts_ms: 1_700_000_000_000,
    };
    assert!(expect(h.presence_backlog(a, 100).await, "backlog").is_empty());
    let first = vec![
        ev("r1:p1:added", "r1", "participant_added"),
        ev("r2:p2:added", "r2", "participant_added"),
        ev("r1:p1:updated:1", "r1", "participant_updated"),
    ];
    expect(h.add_presence(&first).await, "add");
    // The same removal written by two nodes is one row.
    expect(h.add_presence(&[ev("r1:p1:removed", "r1", "participant_removed")]).await, "add");
    expect(
        h.add_presence(&[ev("r1:p1:removed", "r1", "participant_removed"), ev("r1:p1:added", "r1", "x")])
            .await,
        "add again",
    );
    expect(h.add_presence(&[]).await, "add nothing");
    let keys =
        |rows: &[crate::hooks::PresenceRow]| rows.iter().map(|r| r.event.key.clone()).collect::<Vec<_>>();
    let r1 = expect(h.hook_presence(a, "r1", 100).await, "rows");
    assert_eq!(keys(&r1), vec!["r1:p1:added", "r1:p1:updated:1", "r1:p1:removed"], "write order per room");
    assert_eq!(r1[0].event, first[0], "read back as written");
    assert!(r1.windows(2).all(|w| w[0].n < w[1].n), "n increases");
    assert_eq!(keys(&expect(h.hook_presence(a, "r1", 2).await, "rows")).len(), 2, "limit");
    let mut rooms = expect(h.presence_backlog(a, 100).await, "backlog");
    rooms.sort();
    assert_eq!(rooms, vec![("app".to_owned(), "r1".to_owned()), ("app".to_owned(), "r2".to_owned())]);
    assert_eq!(expect(h.presence_backlog(a, 1).await, "backlog").len(), 1, "limit");
    for r in &r1 {
        expect(h.ack_hook_presence(a, r.n).await, "ack");
    }
    expect(h.ack_hook_presence(a, r1[0].n).await, "ack twice");
    assert!(expect(h.hook_presence(a, "r1", 100).await, "rows").is_empty(), "acknowledged");
    assert_eq!(
        expect(h.presence_backlog(a, 100).await, "backlog"),
        vec![("app".to_owned(), "r2".to_owned())]
    );
    assert_eq!(expect(h.hook_presence(b, "r1", 100).await, "rows").len(), 3, "acks are per webhook");
    // Pruning: only rows every listed webhook acknowledged.
    let both = vec![a.to_owned(), b.to_owned()];
    assert_eq!(expect(h.prune_presence(&both).await, "prune"), 0, "b has acknowledged nothing");
    assert_eq!(expect(h.prune_presence(&[a.to_owned()]).await, "prune"), 3, "a has every row of r1");
    assert!(expect(h.hook_presence(b, "r1", 100).await, "rows").is_empty(), "pruned rows are gone");
    assert_eq!(keys(&expect(h.hook_presence(b, "r2", 100).await, "rows")), vec!["r2:p2:added"]);
    assert_eq!(expect(h.prune_presence(&[]).await, "prune"), 0, "no webhook prunes nothing");
    let r2 = expect(h.hook_presence(b, "r2", 100).await, "rows");
    expect(h.ack_hook_presence(a, r2[0].n).await, "ack");
    expect(h.ack_hook_presence(b, r2[0].n).await, "ack");
    assert_eq!(expect(h.prune_presence(&both).await, "prune"), 1);
    assert!(expect(h.presence_backlog(b, 100).await, "backlog").is_empty());
}

/// The participants present ([`crate::hooks::PresenceWrite::Present`]): kept per node until
/// absent; closing a node writes the removals of those still present, once, and forgets them;
/// the last write of a participant in a batch wins.
pub async fn present_participants(s: &dyn Store, _sink: &RecordingSink) {
    use crate::hooks::{PresenceEvent, PresenceWrite};
    let h = s.hooks().unwrap_or_else(|| panic!("every backend has webhook state"));
    let hook = "http://a.example/hook";
    let ev = |channel: &str, p: &str, event: &str, suffix: &str| PresenceEvent {
        key: format!("{channel}:{p}:{suffix}"),
        app: "app".to_owned(),
        channel: channel.to_owned(),
        event: event.to_owned(),
        data: format!(r#"{{"event":"{event}","p":"{p}"}}"#),
        ts_ms: 1_000,
    };
    let present = |channel: &str, p: &str, node: &str| PresenceWrite::Present {
        channel: channel.to_owned(),
        participant: p.to_owned(),
        node: node.to_owned(),
        removal: ev(channel, p, "participant_removed", "removed"),
    };
    let absent = |channel: &str, p: &str| PresenceWrite::Absent {
        channel: channel.to_owned(),
        participant: p.to_owned(),
    };
    assert!(expect(h.present_nodes().await, "nodes").is_empty());
    expect(
        h.write_presence(&[
            PresenceWrite::Event(ev("r1", "p1", "participant_added", "added")),
            present("r1", "p1", "n1"),
            present("r1", "p2", "n1"),
            present("r2", "p3", "n1"),
            present("r1", "p4", "n2"),
            // Entered and left within one batch: not present.
            present("r2", "p5", "n1"),
            absent("r2", "p5"),
            // Left, then entered again: present.
            absent("r2", "p6"),
            present("r2", "p6", "n2"),
        ])
        .await,
        "write",
    );
    assert_eq!(expect(h.present_nodes().await, "nodes"), vec!["n1".to_owned(), "n2".to_owned()]);
    // p2 left normally: its removal is an ordinary event, and it is no longer present.
    expect(
        h.write_presence(&[
            PresenceWrite::Event(ev("r1", "p2", "participant_removed", "removed")),
            absent("r1", "p2"),
        ])
        .await,
        "leave",
    );
    let mut rooms = expect(h.close_presence("n1", 5_000).await, "close n1");
    rooms.sort();
    assert_eq!(rooms, vec![("app".to_owned(), "r1".to_owned()), ("app".to_owned(), "r2".to_owned())]);
    let keys = |rows: Vec<crate::hooks::PresenceRow>| {
        rows.into_iter().map(|r| (r.event.key, r.event.event, r.event.ts_ms)).collect::<Vec<_>>()
    };
    let removed =
        |c: &str, p: &str, ts: i64| (format!("{c}:{p}:removed"), "participant_removed".to_owned(), ts);
    assert_eq!(
        keys(expect(h.hook_presence(hook, "r1", 100).await, "rows")),
        vec![
            ("r1:p1:added".to_owned(), "participant_added".to_owned(), 1_000),
            removed("r1", "p2", 1_000),
            removed("r1", "p1", 5_000),
        ],
        "the closed node's present participant removed, stamped with the closing time"
    );
    assert_eq!(
        keys(expect(h.hook_presence(hook, "r2", 100).await, "rows")),
        vec![removed("r2", "p3", 5_000)]
    );
    assert_eq!(expect(h.present_nodes().await, "nodes"), vec!["n2".to_owned()], "n1 forgotten");
    assert!(expect(h.close_presence("n1", 6_000).await, "close again").is_empty(), "nothing left of n1");
    // A removal already written (another node closing n2 first) is not written twice.
    expect(h.add_presence(&[ev("r1", "p4", "participant_removed", "removed")]).await, "removal");
    assert_eq!(expect(h.close_presence("n2", 7_000).await, "close n2").len(), 2);
    let r1 = keys(expect(h.hook_presence(hook, "r1", 100).await, "rows"));
    assert_eq!(r1.iter().filter(|k| k.0 == "r1:p4:removed").count(), 1, "one row per key");
    assert_eq!(keys(expect(h.hook_presence(hook, "r2", 100).await, "rows")).len(), 2, "p3 and p6");
    assert!(expect(h.present_nodes().await, "nodes").is_empty());
}

/// A delete whose guard does not ask for the author (a moderator's) erases the message like
/// the author's own, and the tombstone records who deleted it (`extra.name`), read back by
/// `log` as the live event had it.
pub async fn moderator_delete_records_who(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob, moderator) = (user("ada"), user("bob"), user("mod"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let m = send(s, &bob, &ch, "rude").await;
    let d = expect(
        s.apply(Mutation::Delete {
            actor: moderator.clone(),
            channel: ch.clone(),
            message_id: m.id.clone(),
            guard: Guard::none(),
            ts_ms: now_ms(),
        })
        .await,
        "moderator delete",
    );
    let tomb = &d.entries[0];
    assert_eq!(tomb.kind, EntryKind::MessageDeleted);
    assert_eq!(tomb.author, "bob", "the tombstone keeps the message's author");
    assert_eq!(tomb.extra.name.as_deref(), Some("mod"));
    let log = verify_log(s, &ch).await;
    let read = log.iter().find(|e| e.seq == tomb.seq).unwrap_or_else(|| panic!("tombstone in the log"));
    assert_eq!(read.extra.name.as_deref(), Some("mod"), "log reads back who deleted it");
    assert!(log.iter().find(|e| e.seq == m.seq).and_then(|e| e.content.clone()).is_none(), "erased");
}

/// A ban removes a member (`member_left` by the moderator), and a join or add that carries
/// [`Guard::not_banned`] is refused until the ban expires or is lifted.
pub async fn bans_keep_a_user_out_until_they_expire(s: &dyn Store, _sink: &RecordingSink) {
    let (ada, bob, cat) = (user("ada"), user("bob"), user("cat"));
    let ch = create(s, &ada, None, Policy::Open, &["bob"]).await;
    let now = now_ms();
    let until = now + 3_600_000;
    let ban = |who: &Actor, target: &str, until_ms: Option<i64>| Mutation::Ban {
        actor: who.clone(),
        channel: ch.clone(),
        user: target.to_owned(),
        until_ms,
        guard: creator(who),
        ts_ms: now_ms(),
    };
    assert_err!(s.apply(ban(&bob, "ada", None)).await, StoreError::Forbidden(_), "ban by a non-creator");
    let a = expect(s.apply(ban(&ada, "bob", Some(until))).await, "ban");
    assert_eq!(a.entries.len(), 1);
    assert_eq!(
        (a.entries[0].kind, a.entries[0].reference.as_str(), a.entries[0].author.as_str()),
        (EntryKind::MemberLeft, "bob", "ada")
    );
    assert!(!expect(s.is_member(&ada.app, &ch, "bob").await, "is_member"));
    let join_at = |who: &Actor, at: i64| Mutation::Join {
        actor: who.clone(),
        channel: ch.clone(),
        guard: Guard { open: true, not_banned: Some((who.user.id.clone(), at)), ..Guard::none() },
        ts_ms: now_ms(),
    };
    assert_err!(s.apply(join_at(&bob, now)).await, StoreError::Forbidden(_), "banned join");
    let add = Mutation::AddMember {
        actor: ada.clone(),
        channel: ch.clone(),
        user: "bob".into(),
        guard: Guard { not_banned: Some(("bob".into(), now)), ..Guard::member("ada") },
        ts_ms: now_ms(),
    };
    assert_err!(s.apply(add).await, StoreError::Forbidden(_), "banned add");
    assert!(!expect(s.is_member(&ada.app, &ch, "bob").await, "is_member"));
    // Others join; a ban of a non-member records it and appends nothing.
    expect(s.apply(join_at(&cat, now)).await, "cat joins");
    expect(s.apply(ban(&ada, "dan", None)).await, "ban a non-member");
    let dan = user("dan");
    assert_err!(s.apply(join_at(&dan, now + 10 * 3_600_000)).await, StoreError::Forbidden(_), "for good");
    // Expired: in. Lifted: in.
    expect(s.apply(join_at(&bob, until + 1)).await, "join after the ban expired");
    expect(
        s.apply(Mutation::Unban {
            actor: ada.clone(),
            channel: ch.clone(),
            user: "dan".into(),
            guard: creator(&ada),
        })
        .await,
        "unban",
    );
    expect(s.apply(join_at(&dan, now)).await, "join after unban");
    assert!(expect(s.is_member(&ada.app, &ch, "dan").await, "is_member"));
}
