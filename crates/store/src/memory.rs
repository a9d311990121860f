//! An in-memory [`Store`] ([`MemoryStore`]) and [`BlobStore`] ([`MemoryBlobStore`]), with
//! exactly the semantics of the SQLite backend (`herald-store-sqlite`), for tests and tools.
//!
//! **Never for `herald serve`.** "Durable" here means "in this process's memory": everything is
//! gone when the store is dropped. The engine's and server's tests use it so they run without a
//! data directory, and it is the second implementation that keeps the trait docs honest: both
//! backends pass the same [`crate::testkit`].
//!
//! # Design
//!
//! All state sits behind one mutex. [`Store::apply`] takes it, checks everything the mutation
//! needs (channel, membership, authorship, existence, uniqueness of ids) before it changes
//! anything, so a refusal changes nothing; then it makes the changes, which cannot fail; then,
//! still holding the lock, it hands the [`Applied`] to the [`CommitSink`]. Holding the lock
//! across the sink call is what makes sink order commit order: two concurrent applies cannot
//! reach the sink in the other order than the one they committed in. The lock is a
//! `parking_lot` mutex, right here because no `.await` ever happens while it is held (the whole
//! apply is synchronous) and the sink must not block.
//!
//! Reads take the same lock for the duration of one query, so each read sees one consistent
//! snapshot, like a SQLite read transaction.
//!
//! Where SQLite refuses a write by a constraint (a message id reused in a channel, a reaction
//! id reused anywhere), this store refuses it with the same [`StoreError::Backend`] variant.

use crate::build::FreshSend;
use crate::bytes_like::Bytes;
use crate::{
    Actor, Applied, BlobStore, ChannelRow, CommitSink, EntryExtra, Guard, HistoryRange, Mutation, NewEntry,
    NullSink, Outcome, Result, Store, StoreError, StoredEntry,
};
use async_trait::async_trait;
use herald_proto::EntryKind;
use herald_proto::chain::{Hash32, ZERO_HASH};
use herald_proto::model::{
    Channel, ChannelSummary, DirectoryEntry, Member, Message, Policy, ReactionView, ReplySnapshot, UserKind,
};
use herald_proto::names::looks_like_uuid;
use herald_proto::time::format_ms;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

/// A message as it is now (the `messages` row), plus the indexes a hard delete needs.
#[derive(Debug, Clone)]
struct MessageRow {
    id: String,
    seq: u64,
    author: String,
    kind: String,
    content: String,
    reply_to: Option<String>,
    /// The author of the replied-to message as of sending (kept after that one is deleted).
    reply_author: Option<String>,
    client_id: Option<String>,
    ts_ms: i64,
    edited_ms: Option<i64>,
    /// Encrypted channels: the key epoch of the current content.
    epoch: Option<u64>,
    /// The `seq` of every `message_edited` entry of this message, whose text a delete erases.
    edits: Vec<u64>,
    /// The reactions on this message by `seq` (their order in history).
    reactions: BTreeMap<u64, String>,
}

#[derive(Debug, Clone)]
struct ReactionRow {
    message_id: String,
    user: String,
    emoji: String,
    seq: u64,
}

/// A log entry as stored: `extra.reply` is rebuilt at read time from `reply_author` and the
/// replied-to message's current state, as SQLite's join does.
#[derive(Debug, Clone)]
struct LoggedEntry {
    entry: StoredEntry,
    reply_author: Option<String>,
}

#[derive(Debug, Clone)]
struct UserRow {
    name: Option<String>,
    kind: UserKind,
}

/// Everything of one channel; removing it deletes the channel and all it holds.
#[derive(Debug)]
struct ChannelData {
    row: ChannelRow,
    /// Member → `last_read` seq; ordered by user id like SQLite's `ORDER BY user_id`.
    members: BTreeMap<String, u64>,
    /// The log; `log[i].entry.seq == i + 1`.
    log: Vec<LoggedEntry>,
    /// Messages by `seq`.
    messages: BTreeMap<u64, MessageRow>,
    /// Message id → `seq`.
    message_ids: HashMap<String, u64>,
    /// Reactions by id.
    reactions: HashMap<String, ReactionRow>,
    /// `(author, client_id)` → message id; kept after a delete so a retry cannot bring the
    /// text back.
    client_ids: HashMap<(String, String), String>,
    /// Roster commits (§7), in epoch order.
    commits: Vec<crate::keys::Commit>,
    /// Key envelopes by (epoch, device).
    envelopes: BTreeMap<(u64, String), serde_json::Value>,
}

impl ChannelData {
    fn new(row: ChannelRow) -> Self {
        ChannelData {
            row,
            members: BTreeMap::new(),
            log: Vec::new(),
            messages: BTreeMap::new(),
            message_ids: HashMap::new(),
            reactions: HashMap::new(),
            client_ids: HashMap::new(),
            commits: Vec::new(),
            envelopes: BTreeMap::new(),
        }
    }

    /// The head epoch (the newest commit's), if any.
    fn head_epoch(&self) -> Option<u64> {
        self.commits.last().map(|c| c.epoch)
    }

    fn head(&self) -> (u64, Hash32) {
        self.log.last().map_or((0, ZERO_HASH), |e| (e.entry.seq, e.entry.hash))
    }

    fn to_channel(&self) -> Channel {
        self.row.to_channel(self.head().0)
    }

    fn is_member(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }

    /// The channel-level conditions of a guard: membership and creator.
    fn check(&self, guard: &Guard) -> Result<()> {
        if let Some(user) = &guard.member
            && !self.is_member(user)
        {
            return Err(StoreError::NotMember);
        }
        if let Some(creator) = &guard.creator
            && self.row.created_by != *creator
        {
            return Err(StoreError::Forbidden("only the channel's creator or an admin may do this"));
        }
        Ok(())
    }

    fn message(&self, id: &str) -> Option<&MessageRow> {
        self.message_ids.get(id).and_then(|seq| self.messages.get(seq))
    }

    fn message_mut(&mut self, id: &str) -> Option<&mut MessageRow> {
        let seq = *self.message_ids.get(id)?;
        self.messages.get_mut(&seq)
    }

    /// A message of this channel, or `NotFound("message")`.
    fn existing_message(&self, id: &str) -> Result<&MessageRow> {
        self.message(id).ok_or(StoreError::NotFound("message"))
    }

    /// A message as history shows it, without reactions.
    fn view(&self, m: &MessageRow) -> Message {
        Message {
            id: m.id.clone(),
            seq: m.seq,
            author: m.author.clone(),
            kind: m.kind.clone(),
            content: m.content.clone(),
            reply_to: m.reply_to.as_ref().map(|id| {
                let target = self.message(id);
                ReplySnapshot {
                    id: id.clone(),
                    author: m.reply_author.clone().unwrap_or_default(),
                    content: target.map(|t| t.content.clone()),
                    edited: target.is_some_and(|t| t.edited_ms.is_some()),
                }
            }),
            client_id: m.client_id.clone(),
            ts: format_ms(m.ts_ms),
            edited_at: m.edited_ms.map(format_ms),
            epoch: m.epoch,
            reactions: None,
        }
    }

    fn reactions_of(&self, m: &MessageRow) -> Vec<ReactionView> {
        m.reactions
            .values()
            .filter_map(|id| {
                self.reactions.get(id).map(|r| ReactionView {
                    reaction_id: id.clone(),
                    emoji: r.emoji.clone(),
                    user: r.user.clone(),
                })
            })
            .collect()
    }

    /// The outcome of `Send` / `Edit`: the message as history shows it now.
    fn message_outcome(&self, id: &str, duplicate: bool, with_reactions: bool) -> Result<Outcome> {
        let m = self.existing_message(id)?;
        let mut message = self.view(m);
        if with_reactions {
            message.reactions = Some(self.reactions_of(m));
        }
        Ok(Outcome::Message { message: Box::new(message), duplicate })
    }

    /// Appends an entry: the next `seq`, a fresh salt, the chain link. Returns the entry as
    /// `Applied` carries it (with `extra` as given).
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        kind: EntryKind,
        author: &str,
        reference: &str,
        ts_ms: i64,
        content: &str,
        extra: EntryExtra,
        reply_author: Option<String>,
    ) -> StoredEntry {
        let (prev_seq, prev_hash) = self.head();
        let new = NewEntry { channel_id: &self.row.id, kind, author, reference, ts_ms, content };
        let entry = new.link(prev_seq, prev_hash, rand::random(), extra);
        let mut stored = entry.clone();
        // The snapshot is not stored; the log rebuilds it from the replied-to message.
        stored.extra.reply = None;
        self.log.push(LoggedEntry { entry: stored, reply_author });
        entry
    }

    /// Adds the membership and appends `member_joined` (by `by`, about `user`).
    fn join(&mut self, by: &str, user: &str, name: Option<String>, ts_ms: i64) -> StoredEntry {
        self.members.insert(user.to_owned(), 0);
        let extra = EntryExtra { name, ..Default::default() };
        self.append(EntryKind::MemberJoined, by, user, ts_ms, "", extra, None)
    }

    /// An entry as [`Store::log`] returns it: the reply snapshot as of now.
    fn read_entry(&self, e: &LoggedEntry) -> StoredEntry {
        let mut entry = e.entry.clone();
        if entry.kind == EntryKind::Message && !entry.reference.is_empty() {
            let target = self.message(&entry.reference);
            entry.extra.reply = Some(ReplySnapshot {
                id: entry.reference.clone(),
                author: e.reply_author.clone().unwrap_or_default(),
                content: target.map(|t| t.content.clone()),
                edited: target.is_some_and(|t| t.edited_ms.is_some()),
            });
        }
        entry
    }
}

/// All the store holds.
#[derive(Debug, Default)]
struct State {
    /// Set by [`Store::close`]: writes are refused from then on; reads still answer.
    closed: bool,
    /// Channels by id (ids are unique across apps), ordered like SQLite's `ORDER BY channel_id`.
    channels: BTreeMap<String, ChannelData>,
    /// `(app, name)` → channel id.
    names: HashMap<(String, String), String>,
    /// `(app, user id)` → display name and kind.
    users: HashMap<(String, String), UserRow>,
    /// Every reaction id in use, in any channel (SQLite's `reactions.id` primary key).
    reaction_ids: HashSet<String>,
    /// Devices, inboxes (§7).
    keys: crate::keys_memory::KeysState,
}

fn upsert_user(users: &mut HashMap<(String, String), UserRow>, actor: &Actor) {
    users.insert(
        (actor.app.clone(), actor.user.id.clone()),
        UserRow { name: actor.user.name.clone(), kind: actor.user.kind },
    );
}

fn user_name(users: &HashMap<(String, String), UserRow>, app: &str, user: &str) -> Option<String> {
    users.get(&(app.to_owned(), user.to_owned())).and_then(|u| u.name.clone())
}

impl State {
    /// A channel of `app` by id, for a write.
    fn channel_mut(&mut self, app: &str, id: &str) -> Result<&mut ChannelData> {
        match self.channels.get_mut(id) {
            Some(ch) if ch.row.app == app => Ok(ch),
            _ => Err(StoreError::ChannelNotFound),
        }
    }

    /// Applies `m`: every check first, then the changes (which cannot fail).
    fn apply(&mut self, m: Mutation) -> Result<Applied> {
        let app = m.actor().app.clone();
        let done = |ch: &ChannelData, entries: Vec<StoredEntry>, outcome: Outcome| Applied {
            app: app.clone(),
            channel: Some(ch.to_channel()),
            entries,
            outcome,
        };
        match m {
            Mutation::UpsertUser { actor } => {
                upsert_user(&mut self.users, &actor);
                Ok(Applied { app, channel: None, entries: Vec::new(), outcome: Outcome::Done })
            }
            Mutation::CreateChannel { actor, id, name, title, encrypted, policy, members, ts_ms } => {
                let me = actor.user.id.as_str();
                if let Some(name) = &name
                    && let Some(existing) = self.names.get(&(actor.app.clone(), name.as_str().to_owned()))
                {
                    let existing = existing.clone();
                    let ch = self.channels.get_mut(&existing).ok_or_else(|| {
                        StoreError::Backend(format!("name index points at a missing channel {existing:?}"))
                    })?;
                    if ch.row.created_by != me {
                        return Err(StoreError::NameTaken);
                    }
                    let mut entries = Vec::new();
                    if !ch.is_member(me) {
                        upsert_user(&mut self.users, &actor);
                        entries.push(ch.join(me, me, actor.user.name.clone(), ts_ms));
                    }
                    return Ok(done(ch, entries, Outcome::Channel { created: false }));
                }
                if self.channels.contains_key(&id) {
                    return Err(StoreError::Invalid(format!("channel id {id:?} already exists")));
                }
                let row =
                    ChannelRow::created(&actor, id.clone(), name, title.clone(), encrypted, policy, ts_ms);
                let name = row.name.clone();
                let mut ch = ChannelData::new(row);
                upsert_user(&mut self.users, &actor);
                let mut entries = Vec::new();
                let extra = EntryExtra { name: name.clone(), title, ..Default::default() };
                let content = name.clone().unwrap_or_default();
                entries.push(ch.append(EntryKind::ChannelCreated, me, "", ts_ms, &content, extra, None));
                entries.push(ch.join(me, me, actor.user.name.clone(), ts_ms));
                let mut seen = vec![me.to_owned()];
                for user in members {
                    if seen.contains(&user) {
                        continue;
                    }
                    let uname = user_name(&self.users, &actor.app, &user);
                    entries.push(ch.join(me, &user, uname, ts_ms));
                    seen.push(user);
                }
                let applied = done(&ch, entries, Outcome::Channel { created: true });
                if let Some(name) = name {
                    self.names.insert((actor.app.clone(), name), id.clone());
                }
                self.channels.insert(id, ch);
                Ok(applied)
            }
            Mutation::Join { actor, channel, guard, ts_ms } => {
                let ch = match self.channels.get_mut(&channel) {
                    Some(ch) if ch.row.app == actor.app => ch,
                    _ => return Err(StoreError::ChannelNotFound),
                };
                let me = actor.user.id.as_str();
                let mut entries = Vec::new();
                ch.check(&guard)?;
                if !ch.is_member(me) {
                    if ch.row.policy == Policy::Invite && guard.open {
                        return Err(StoreError::Forbidden("this channel is invite-only"));
                    }
                    upsert_user(&mut self.users, &actor);
                    entries.push(ch.join(me, me, actor.user.name.clone(), ts_ms));
                }
                Ok(done(ch, entries, Outcome::Channel { created: false }))
            }
            Mutation::AddMember { actor, channel, user, guard, ts_ms } => {
                let ch = match self.channels.get_mut(&channel) {
                    Some(ch) if ch.row.app == actor.app => ch,
                    _ => return Err(StoreError::ChannelNotFound),
                };
                ch.check(&guard)?;
                let mut entries = Vec::new();
                if !ch.is_member(&user) {
                    let name = user_name(&self.users, &actor.app, &user);
                    entries.push(ch.join(&actor.user.id, &user, name, ts_ms));
                }
                Ok(done(ch, entries, Outcome::Done))
            }
            Mutation::RemoveMember { actor, channel, user, guard, ts_ms } => {
                let ch = match self.channels.get_mut(&channel) {
                    Some(ch) if ch.row.app == actor.app => ch,
                    _ => return Err(StoreError::ChannelNotFound),
                };
                let me = actor.user.id.as_str();
                ch.check(&guard)?;
                if ch.members.remove(&user).is_none() {
                    return Err(StoreError::NotFound("member"));
                }
                let name = if user == me {
                    actor.user.name.clone()
                } else {
                    user_name(&self.users, &actor.app, &user)
                };
                let extra = EntryExtra { name, ..Default::default() };
                let e = ch.append(EntryKind::MemberLeft, me, &user, ts_ms, "", extra, None);
                Ok(done(ch, vec![e], Outcome::Done))
            }
            Mutation::DeleteChannel { actor, channel, guard } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                ch.check(&guard)?;
                let members: Vec<String> = ch.members.keys().cloned().collect();
                let applied = done(ch, Vec::new(), Outcome::ChannelDeleted { members });
                if let Some(ch) = self.channels.remove(&channel) {
                    if let Some(name) = &ch.row.name {
                        self.names.remove(&(ch.row.app.clone(), name.clone()));
                    }
                    for id in ch.reactions.keys() {
                        self.reaction_ids.remove(id);
                    }
                }
                Ok(applied)
            }
            Mutation::Send { actor, channel, id, kind, content, reply_to, client_id, guard, ts_ms } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                ch.check(&guard)?;
                crate::build::check_epoch(ch.row.encrypted, guard.epoch, ch.head_epoch())?;
                let me = actor.user.id.as_str();
                if let Some(cid) = &client_id
                    && let Some(original) = ch.client_ids.get(&(me.to_owned(), cid.clone()))
                {
                    // The original may since have been deleted: then it is gone for good (the
                    // repeat is `NotFound`, as with SQLite), and a retry must not bring the
                    // text back.
                    let outcome = ch.message_outcome(original, true, false)?;
                    return Ok(done(ch, Vec::new(), outcome));
                }
                let reply = match &reply_to {
                    Some(r) => {
                        let t = ch.existing_message(r)?;
                        Some(ReplySnapshot {
                            id: t.id.clone(),
                            author: t.author.clone(),
                            content: Some(t.content.clone()),
                            edited: t.edited_ms.is_some(),
                        })
                    }
                    None => None,
                };
                if ch.message_ids.contains_key(&id) {
                    return Err(StoreError::Backend(format!(
                        "message id {id:?} already exists in this channel"
                    )));
                }
                let reply_author = reply.as_ref().map(|r| r.author.clone());
                let fresh = FreshSend::new(&id, me, &kind, &content, client_id.as_deref(), ts_ms)
                    .with_epoch(guard.epoch);
                let extra = fresh.extra(reply);
                let reference = reply_to.clone().unwrap_or_default();
                let e = ch.append(
                    EntryKind::Message,
                    me,
                    &reference,
                    ts_ms,
                    &content,
                    extra,
                    reply_author.clone(),
                );
                let seq = e.seq;
                ch.messages.insert(
                    seq,
                    MessageRow {
                        id: id.clone(),
                        seq,
                        author: me.to_owned(),
                        kind,
                        content,
                        reply_to,
                        reply_author,
                        client_id: client_id.clone(),
                        ts_ms,
                        edited_ms: None,
                        epoch: guard.epoch,
                        edits: Vec::new(),
                        reactions: BTreeMap::new(),
                    },
                );
                ch.message_ids.insert(id.clone(), seq);
                if let Some(cid) = client_id {
                    ch.client_ids.insert((me.to_owned(), cid), id.clone());
                }
                let outcome = ch.message_outcome(&id, false, false)?;
                Ok(done(ch, vec![e], outcome))
            }
            Mutation::Edit { actor, channel, message_id, content, guard, ts_ms } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                ch.check(&guard)?;
                let author = ch.existing_message(&message_id)?.author.clone();
                check_author(&guard, &author)?;
                crate::build::check_epoch(ch.row.encrypted, guard.epoch, ch.head_epoch())?;
                let e = ch.append(
                    EntryKind::MessageEdited,
                    &author,
                    &message_id,
                    ts_ms,
                    &content,
                    EntryExtra { epoch: guard.epoch, ..Default::default() },
                    None,
                );
                let seq = e.seq;
                if let Some(m) = ch.message_mut(&message_id) {
                    m.content = content;
                    m.edited_ms = Some(ts_ms);
                    m.epoch = guard.epoch;
                    m.edits.push(seq);
                }
                let outcome = ch.message_outcome(&message_id, false, true)?;
                Ok(done(ch, vec![e], outcome))
            }
            Mutation::Delete { actor, channel, message_id, guard, ts_ms } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                ch.check(&guard)?;
                let m = ch.existing_message(&message_id)?;
                check_author(&guard, &m.author)?;
                let seq = m.seq;
                let Some(m) = ch.messages.remove(&seq) else {
                    return Err(StoreError::NotFound("message"));
                };
                ch.message_ids.remove(&message_id);
                // Erase the text where it lives: the message entry and every edit entry.
                // `content_hash` stays, so the chain still verifies.
                for s in std::iter::once(seq).chain(m.edits.iter().copied()) {
                    if let Some(e) = usize::try_from(s - 1).ok().and_then(|i| ch.log.get_mut(i)) {
                        e.entry.content = None;
                        e.entry.salt = None;
                    }
                }
                for id in m.reactions.values() {
                    ch.reactions.remove(id);
                }
                let e = ch.append(
                    EntryKind::MessageDeleted,
                    &m.author,
                    &message_id,
                    ts_ms,
                    "",
                    EntryExtra::default(),
                    None,
                );
                let applied = done(ch, vec![e], Outcome::Done);
                for id in m.reactions.values() {
                    self.reaction_ids.remove(id);
                }
                Ok(applied)
            }
            Mutation::React { actor, channel, id, message_id, emoji, guard, ts_ms } => {
                let ch = match self.channels.get_mut(&channel) {
                    Some(ch) if ch.row.app == actor.app => ch,
                    _ => return Err(StoreError::ChannelNotFound),
                };
                ch.check(&guard)?;
                ch.existing_message(&message_id)?;
                if self.reaction_ids.contains(&id) {
                    return Err(StoreError::Backend(format!("reaction id {id:?} already exists")));
                }
                let me = actor.user.id.as_str();
                let extra = EntryExtra { id: Some(id.clone()), ..Default::default() };
                let e = ch.append(EntryKind::Reaction, me, &message_id, ts_ms, &emoji, extra, None);
                let seq = e.seq;
                if let Some(m) = ch.message_mut(&message_id) {
                    m.reactions.insert(seq, id.clone());
                }
                ch.reactions.insert(id.clone(), ReactionRow { message_id, user: me.to_owned(), emoji, seq });
                self.reaction_ids.insert(id.clone());
                Ok(done(ch, vec![e], Outcome::Reaction { reaction_id: id }))
            }
            Mutation::Unreact { actor, channel, reaction_id, guard, ts_ms } => {
                let ch = match self.channels.get_mut(&channel) {
                    Some(ch) if ch.row.app == actor.app => ch,
                    _ => return Err(StoreError::ChannelNotFound),
                };
                ch.check(&guard)?;
                let r = ch.reactions.get(&reaction_id).ok_or(StoreError::NotFound("reaction"))?;
                check_author(&guard, &r.user)?;
                let Some(r) = ch.reactions.remove(&reaction_id) else {
                    return Err(StoreError::NotFound("reaction"));
                };
                if let Some(m) = ch.message_mut(&r.message_id) {
                    m.reactions.remove(&r.seq);
                }
                let extra = EntryExtra { message_id: Some(r.message_id), ..Default::default() };
                let e = ch.append(EntryKind::ReactionDeleted, &r.user, &reaction_id, ts_ms, "", extra, None);
                self.reaction_ids.remove(&reaction_id);
                Ok(done(ch, vec![e], Outcome::Done))
            }
            Mutation::Rotate { actor, channel, commit, envelopes, guard, ts_ms } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                ch.check(&guard)?;
                if !ch.row.encrypted {
                    return Err(StoreError::Invalid("the channel is not encrypted".into()));
                }
                let head = ch.commits.last().map(|c| (c.epoch, c.commit_hash.as_str()));
                crate::build::check_commit(&commit, head)?;
                let epoch = commit.epoch;
                let e = ch.append(
                    EntryKind::KeyRotated,
                    &actor.user.id,
                    &epoch.to_string(),
                    ts_ms,
                    &commit.commit_hash,
                    EntryExtra::default(),
                    None,
                );
                ch.commits.push(commit);
                for env in envelopes {
                    ch.envelopes.insert((epoch, env.device_id), env.envelope);
                }
                Ok(done(ch, vec![e], Outcome::Done))
            }
            Mutation::Read { actor, channel, message_id, guard } => {
                let ch = self.channel_mut(&actor.app, &channel)?;
                let me = actor.user.id.as_str();
                ch.check(&guard)?;
                let seq = ch.existing_message(&message_id)?.seq;
                if let Some(last_read) = ch.members.get_mut(me) {
                    *last_read = (*last_read).max(seq);
                }
                let outcome = Outcome::Read { user: me.to_owned(), message_id, seq };
                Ok(done(ch, Vec::new(), outcome))
            }
        }
    }
}

/// The authorship condition of a guard, against the stored author of a message or reaction.
fn check_author(guard: &Guard, author: &str) -> Result<()> {
    match &guard.author {
        Some(a) if a != author => Err(StoreError::NotAuthor),
        _ => Ok(()),
    }
}

/// The in-memory store: see the module doc. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    state: Mutex<State>,
    sink: Arc<dyn CommitSink>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    /// An empty store whose commits go nowhere ([`NullSink`]).
    fn default() -> Self {
        MemoryStore::new(Arc::new(NullSink))
    }
}

impl MemoryStore {
    /// An empty store that hands every commit to `sink`.
    pub fn new(sink: Arc<dyn CommitSink>) -> Self {
        MemoryStore { state: Mutex::new(State::default()), sink }
    }
}

#[async_trait]
impl crate::keys::KeyStore for MemoryStore {
    async fn register_device(&self, d: crate::keys::DeviceUpload) -> Result<crate::keys::Registered> {
        self.state.lock().keys.register(d)
    }
    async fn device_owner(&self, app: &str, device_id: &str) -> Result<Option<crate::keys::DeviceOwner>> {
        Ok(self.state.lock().keys.owner(app, device_id))
    }
    async fn devices_of(&self, app: &str, user: &str) -> Result<Vec<crate::keys::DeviceRecord>> {
        Ok(self.state.lock().keys.list(app, |d| d.user == user))
    }
    async fn keepers(&self, app: &str) -> Result<Vec<crate::keys::DeviceRecord>> {
        Ok(self.state.lock().keys.list(app, |d| d.keeper))
    }
    async fn claim(&self, app: &str, user: &str, device_id: &str) -> Result<Option<crate::keys::Claimed>> {
        Ok(self.state.lock().keys.claim(app, user, device_id))
    }
    async fn revoke_device(&self, app: &str, user: &str, device_id: &str) -> Result<()> {
        let mut state = self.state.lock();
        state.keys.revoke(app, user, device_id)?;
        for ch in state.channels.values_mut().filter(|c| c.row.app == app) {
            ch.envelopes.retain(|(_, d), _| d != device_id);
        }
        Ok(())
    }
    async fn dm_send(&self, s: crate::keys::DmSend) -> Result<crate::keys::DmSent> {
        self.state.lock().keys.dm_send(s)
    }
    async fn dm_inbox(&self, app: &str, device_id: &str) -> Result<Vec<crate::keys::Dm>> {
        Ok(self.state.lock().keys.inbox(app, device_id))
    }
    async fn dm_ack(&self, app: &str, device_id: &str, ids: &[String]) -> Result<u64> {
        Ok(self.state.lock().keys.ack(app, device_id, ids))
    }
    async fn dm_expire(&self, before_ms: i64) -> Result<u64> {
        Ok(self.state.lock().keys.expire(before_ms))
    }
    async fn commits(&self, channel_id: &str, after: Option<u64>) -> Result<Vec<crate::keys::Commit>> {
        let state = self.state.lock();
        let Some(ch) = state.channels.get(channel_id) else { return Ok(Vec::new()) };
        Ok(ch.commits.iter().filter(|c| after.is_none_or(|a| c.epoch > a)).cloned().collect())
    }
    async fn put_envelopes(&self, channel_id: &str, envelopes: Vec<crate::keys::EnvelopeRow>) -> Result<()> {
        let mut state = self.state.lock();
        let Some(ch) = state.channels.get_mut(channel_id) else { return Err(StoreError::ChannelNotFound) };
        if envelopes.iter().any(|e| !ch.commits.iter().any(|c| c.epoch == e.epoch)) {
            return Err(StoreError::NotFound("epoch"));
        }
        for e in envelopes {
            ch.envelopes.insert((e.epoch, e.device_id), e.envelope);
        }
        Ok(())
    }
    async fn envelopes_for(
        &self,
        channel_id: &str,
        device_id: &str,
    ) -> Result<Vec<crate::keys::EnvelopeRow>> {
        let state = self.state.lock();
        let Some(ch) = state.channels.get(channel_id) else { return Ok(Vec::new()) };
        Ok(ch
            .envelopes
            .iter()
            .filter(|((_, d), _)| d == device_id)
            .map(|((epoch, d), env)| crate::keys::EnvelopeRow {
                device_id: d.clone(),
                epoch: *epoch,
                envelope: env.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn health(&self) -> Result<()> {
        if self.state.lock().closed { Err(StoreError::Closed) } else { Ok(()) }
    }

    fn keys(&self) -> &dyn crate::keys::KeyStore {
        self
    }

    async fn apply(&self, m: Mutation) -> Result<Applied> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        let applied = state.apply(m)?;
        // Still under the lock: the sink sees commits in the order they were made.
        self.sink.committed(&applied);
        Ok(applied)
    }

    async fn channel(&self, app: &str, id_or_name: &str) -> Result<Option<Channel>> {
        let state = self.state.lock();
        // A 36-character name can have the shape of a UUID: try the id, then the name.
        let mut found = None;
        if looks_like_uuid(id_or_name) {
            found = state.channels.get(id_or_name).filter(|c| c.row.app == app);
        }
        if found.is_none() {
            found = state
                .names
                .get(&(app.to_owned(), id_or_name.to_owned()))
                .and_then(|id| state.channels.get(id));
        }
        Ok(found.map(ChannelData::to_channel))
    }

    async fn members(&self, channel_id: &str) -> Result<Vec<Member>> {
        let state = self.state.lock();
        let Some(ch) = state.channels.get(channel_id) else { return Ok(Vec::new()) };
        Ok(ch
            .members
            .iter()
            .map(|(user, last_read)| {
                let u = state.users.get(&(ch.row.app.clone(), user.clone()));
                Member {
                    user: user.clone(),
                    name: u.and_then(|u| u.name.clone()),
                    kind: u.map(|u| u.kind).unwrap_or_default(),
                    last_read: *last_read,
                }
            })
            .collect())
    }

    async fn channels_of(&self, app: &str, user: &str) -> Result<Vec<ChannelSummary>> {
        let state = self.state.lock();
        let mut mine: Vec<(&ChannelData, u64)> = state
            .channels
            .values()
            .filter(|c| c.row.app == app)
            .filter_map(|c| c.members.get(user).map(|last_read| (c, *last_read)))
            .collect();
        mine.sort_by(|(a, _), (b, _)| (a.row.created_ms, &a.row.id).cmp(&(b.row.created_ms, &b.row.id)));
        Ok(mine
            .into_iter()
            .map(|(c, last_read)| ChannelSummary {
                id: c.row.id.clone(),
                name: c.row.name.clone(),
                title: c.row.title.clone(),
                unread: c
                    .messages
                    .range((Bound::Excluded(last_read), Bound::Unbounded))
                    .filter(|(_, m)| m.author != user)
                    .count() as u64,
                last_seq: c.head().0,
            })
            .collect())
    }

    async fn directory(&self, app: &str, user: &str, admin: bool) -> Result<Vec<DirectoryEntry>> {
        let state = self.state.lock();
        let mut out: Vec<DirectoryEntry> = state
            .channels
            .values()
            .filter(|c| c.row.app == app)
            .filter(|c| admin || c.row.policy == Policy::Open || c.is_member(user))
            .filter_map(|c| {
                c.row.name.as_ref().map(|name| DirectoryEntry { name: name.clone(), id: c.row.id.clone() })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn history(&self, channel_id: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)> {
        let state = self.state.lock();
        let Some(ch) = state.channels.get(channel_id) else { return Ok((Vec::new(), false)) };
        let limit = range.limit.max(1) as usize;
        if let (Some(after), Some(before)) = (range.after, range.before)
            && after >= before
        {
            return Ok((Vec::new(), false));
        }
        let lo = range.after.map_or(Bound::Unbounded, Bound::Excluded);
        let hi = range.before.map_or(Bound::Unbounded, Bound::Excluded);
        let in_time = |m: &&MessageRow| {
            range.from_ms.is_none_or(|from| m.ts_ms >= from) && range.to_ms.is_none_or(|to| m.ts_ms <= to)
        };
        let window = ch.messages.range((lo, hi)).map(|(_, m)| m);
        // Oldest first with `after`, newest first otherwise.
        let mut page: Vec<&MessageRow> = if range.after.is_some() {
            window.filter(in_time).take(limit + 1).collect()
        } else {
            window.rev().filter(in_time).take(limit + 1).collect()
        };
        let has_more = page.len() > limit;
        page.truncate(limit);
        let messages = page
            .into_iter()
            .map(|m| {
                let mut v = ch.view(m);
                v.reactions = Some(ch.reactions_of(m));
                v
            })
            .collect();
        Ok((messages, has_more))
    }

    async fn log(&self, channel_id: &str, after: u64, limit: u32) -> Result<(Vec<StoredEntry>, bool)> {
        let state = self.state.lock();
        let Some(ch) = state.channels.get(channel_id) else { return Ok((Vec::new(), false)) };
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(ch.log.len());
        let limit = limit as usize;
        let rest = &ch.log[start..];
        let entries = rest.iter().take(limit).map(|e| ch.read_entry(e)).collect();
        Ok((entries, rest.len() > limit))
    }

    async fn head_seq(&self, channel_id: &str) -> Result<u64> {
        Ok(self.state.lock().channels.get(channel_id).map_or(0, |c| c.head().0))
    }

    async fn member_channels(&self, app: &str, user: &str) -> Result<Vec<String>> {
        let state = self.state.lock();
        Ok(state
            .channels
            .values()
            .filter(|c| c.row.app == app && c.members.contains_key(user))
            .map(|c| c.row.id.clone())
            .collect())
    }

    async fn is_member(&self, app: &str, channel_id: &str, user: &str) -> Result<bool> {
        let state = self.state.lock();
        Ok(state.channels.get(channel_id).is_some_and(|c| c.row.app == app && c.members.contains_key(user)))
    }

    async fn close(&self) -> Result<()> {
        // Nothing to flush: every write completed under the lock before `apply` returned.
        self.state.lock().closed = true;
        Ok(())
    }
}

/// The memory store, whose raw log reads ([`Store::log`]) fail while [`FailingLog::fail_log`]
/// is on: a fault injector for tests of what the engine and the gateway do when the store
/// fails in the middle of a replay.
pub struct FailingLog {
    inner: MemoryStore,
    fail_log: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for FailingLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailingLog").finish_non_exhaustive()
    }
}

impl FailingLog {
    /// An empty store that hands every commit to `sink`; its log reads succeed until told.
    pub fn new(sink: Arc<dyn CommitSink>) -> FailingLog {
        FailingLog { inner: MemoryStore::new(sink), fail_log: std::sync::atomic::AtomicBool::new(false) }
    }

    /// From now on, log reads fail (`true`) or succeed (`false`).
    pub fn fail_log(&self, on: bool) {
        self.fail_log.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for FailingLog {
    async fn apply(&self, m: Mutation) -> Result<Applied> {
        self.inner.apply(m).await
    }
    async fn channel(&self, app: &str, id_or_name: &str) -> Result<Option<Channel>> {
        self.inner.channel(app, id_or_name).await
    }
    async fn members(&self, channel_id: &str) -> Result<Vec<Member>> {
        self.inner.members(channel_id).await
    }
    async fn channels_of(&self, app: &str, user: &str) -> Result<Vec<ChannelSummary>> {
        self.inner.channels_of(app, user).await
    }
    async fn directory(&self, app: &str, user: &str, admin: bool) -> Result<Vec<DirectoryEntry>> {
        self.inner.directory(app, user, admin).await
    }
    async fn history(&self, channel_id: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)> {
        self.inner.history(channel_id, range).await
    }
    async fn log(&self, channel_id: &str, after: u64, limit: u32) -> Result<(Vec<StoredEntry>, bool)> {
        if self.fail_log.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend("disk on fire".into()));
        }
        self.inner.log(channel_id, after, limit).await
    }
    async fn head_seq(&self, channel_id: &str) -> Result<u64> {
        self.inner.head_seq(channel_id).await
    }
    async fn member_channels(&self, app: &str, user: &str) -> Result<Vec<String>> {
        self.inner.member_channels(app, user).await
    }
    async fn is_member(&self, app: &str, channel_id: &str, user: &str) -> Result<bool> {
        self.inner.is_member(app, channel_id, user).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    fn keys(&self) -> &dyn crate::keys::KeyStore {
        &self.inner
    }
}

/// Content-addressed blobs in memory, scoped by channel, with the filesystem store's id checks.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    /// Channel id → blob id → bytes.
    blobs: Mutex<HashMap<String, HashMap<String, Bytes>>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn put(&self, channel_id: &str, bytes: Bytes) -> Result<String> {
        crate::check_blob_channel(channel_id)?;
        let id = blake3::hash(&bytes).to_hex().to_string();
        // Content-addressed: the same id is the same bytes, so a second put changes nothing.
        self.blobs.lock().entry(channel_id.to_owned()).or_default().entry(id.clone()).or_insert(bytes);
        Ok(id)
    }

    async fn get(&self, channel_id: &str, blob_id: &str) -> Result<Option<Bytes>> {
        crate::check_blob_id(blob_id)?;
        crate::check_blob_channel(channel_id)?;
        Ok(self.blobs.lock().get(channel_id).and_then(|c| c.get(blob_id)).cloned())
    }

    async fn delete_channel(&self, channel_id: &str) -> Result<()> {
        crate::check_blob_channel(channel_id)?;
        self.blobs.lock().remove(channel_id);
        Ok(())
    }
}
