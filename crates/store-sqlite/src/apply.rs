//! One [`Mutation`] applied inside the writer's open transaction: its checks, its row changes
//! and its log entries. Runs on the writer thread only, inside a savepoint the caller owns.

use crate::backend;
use crate::rows::{self, ChannelRow, to_i64};
use herald_proto::EntryKind;
use herald_proto::chain::{Hash32, ZERO_HASH};
use herald_proto::model::Policy;
use herald_store::build::{self, FreshSend};
use herald_store::{
    Actor, Applied, EntryExtra, Guard, Mutation, NewEntry, Outcome, Result, StoreError, StoredEntry,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::cell::Cell;
use std::collections::HashMap;

/// Channel heads: committed ones, and those changed by the batch in progress.
#[derive(Default)]
pub struct Heads {
    /// Heads as of the last successful commit (loaded from the database on first use).
    pub committed: HashMap<String, (u64, Hash32)>,
    /// Heads changed by jobs of the current batch whose savepoints were released.
    pub batch: HashMap<String, (u64, Hash32)>,
}

impl Heads {
    /// Makes the batch's heads the committed ones (after `COMMIT` succeeded).
    pub fn commit(&mut self) {
        for (ch, head) in self.batch.drain() {
            if head.0 == 0 {
                // A deleted channel: nothing to remember.
                self.committed.remove(&ch);
            } else {
                self.committed.insert(ch, head);
            }
        }
    }

    /// Forgets the batch's heads (its transaction was rolled back).
    pub fn rollback(&mut self) {
        self.batch.clear();
    }
}

/// Channel rows by id: committed ones, and those created (`Some`) or deleted (`None`) by the
/// batch in progress. Only the writer changes channel rows, so this is exact.
#[derive(Default)]
pub struct Channels {
    /// Rows as of the last successful commit (read from the database on first use).
    pub committed: HashMap<String, ChannelRow>,
    /// Rows changed by jobs of the current batch whose savepoints were released.
    pub batch: HashMap<String, Option<ChannelRow>>,
}

impl Channels {
    /// Makes the batch's rows the committed ones (after `COMMIT` succeeded).
    pub fn commit(&mut self) {
        for (id, row) in self.batch.drain() {
            match row {
                Some(row) => self.committed.insert(id, row),
                None => self.committed.remove(&id),
            };
        }
    }

    /// Forgets the batch's rows (its transaction was rolled back).
    pub fn rollback(&mut self) {
        self.batch.clear();
    }
}

/// Whether a mutation runs inside a savepoint of its own.
///
/// A `Send` makes every check before its first write, and nothing after its first write can
/// refuse it: an error there is the database's own (I/O, a full disk), which fails the whole
/// batch anyway. So it needs no savepoint, and skips the cost of one per message: two more
/// statements, and a copy of every page it touches into the sub-journal. Every other mutation
/// may still refuse after writing (a member to remove who is not one, say), and is rolled
/// back alone.
pub fn needs_savepoint(m: &Mutation) -> bool {
    !matches!(m, Mutation::Send { .. })
}

/// The state of one job while it is applied.
pub struct Job<'a> {
    conn: &'a Connection,
    /// Set before the job's first write: an error after it, in a job without a savepoint,
    /// leaves the batch's transaction with half a job in it.
    wrote: &'a Cell<bool>,
    heads: &'a mut Heads,
    channels: &'a mut Channels,
    /// Heads changed by this job; merged into the batch only if its savepoint is released.
    own: HashMap<String, (u64, Hash32)>,
    /// Channel rows created or deleted by this job; merged like `own`.
    own_channels: HashMap<String, Option<ChannelRow>>,
    entries: Vec<StoredEntry>,
    /// The app of the mutation's actor.
    app: String,
    /// The job erased content: the batch must checkpoint the WAL after it commits.
    pub erased: bool,
}

impl<'a> Job<'a> {
    pub fn new(
        conn: &'a Connection,
        wrote: &'a Cell<bool>,
        heads: &'a mut Heads,
        channels: &'a mut Channels,
    ) -> Self {
        Job {
            conn,
            wrote,
            heads,
            channels,
            own: HashMap::new(),
            own_channels: HashMap::new(),
            entries: Vec::new(),
            app: String::new(),
            erased: false,
        }
    }

    /// Merges this job's heads and channel rows into the batch (its savepoint was released).
    pub fn release(self) {
        self.heads.batch.extend(self.own);
        self.channels.batch.extend(self.own_channels);
    }

    fn head(&mut self, ch: &str) -> Result<(u64, Hash32)> {
        if let Some(h) = self.own.get(ch).or_else(|| self.heads.batch.get(ch)) {
            return Ok(*h);
        }
        if let Some(h) = self.heads.committed.get(ch) {
            return Ok(*h);
        }
        // Read inside the batch's transaction: any change this batch made to the channel would
        // be in an overlay above, so this is the committed head and safe to cache.
        let h = rows::stored_head(self.conn, ch)?;
        if h.0 > 0 {
            self.heads.committed.insert(ch.to_owned(), h);
        }
        Ok(h)
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        ch: &str,
        kind: EntryKind,
        author: &str,
        reference: &str,
        ts_ms: i64,
        content: &str,
        extra: EntryExtra,
    ) -> Result<u64> {
        let (prev_seq, prev_hash) = self.head(ch)?;
        let new = NewEntry { channel_id: ch, kind, author, reference, ts_ms, content };
        let e = new.link(prev_seq, prev_hash, rand::random(), extra);
        let salt = e.salt.unwrap_or_default();
        self.wrote.set(true);
        self.conn
            .prepare_cached(concat!(
                "INSERT INTO entries (",
                rows::entry_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    ch,
                    to_i64(e.seq),
                    kind.as_str(),
                    author,
                    reference,
                    ts_ms,
                    content,
                    &salt[..],
                    &e.content_hash[..],
                    &e.prev_hash[..],
                    &e.hash[..],
                    e.extra.id,
                    e.extra.msg_type,
                    e.extra.client_id,
                    e.extra.name,
                    e.extra.title,
                    e.extra.message_id,
                    e.extra.reply.as_ref().map(|r| r.author.as_str()),
                    e.extra.epoch.map(to_i64),
                ])
            })
            .map_err(backend)?;
        let seq = e.seq;
        self.own.insert(ch.to_owned(), (seq, e.hash));
        self.entries.push(e);
        Ok(seq)
    }

    fn channel(&mut self, app: &str, id: &str) -> Result<ChannelRow> {
        let row = if let Some(r) = self.own_channels.get(id).or_else(|| self.channels.batch.get(id)) {
            r.clone()
        } else if let Some(r) = self.channels.committed.get(id) {
            Some(r.clone())
        } else {
            // Read inside the batch's transaction: any change this batch made to the row would
            // be in an overlay above, so this is the committed row and safe to cache.
            let r = rows::channel_by_id(self.conn, app, id)?;
            if let Some(r) = &r {
                self.channels.committed.insert(id.to_owned(), r.clone());
            }
            r
        };
        // Ids are unique across apps: a row of another app is not this app's channel.
        row.filter(|r| r.app == app).ok_or(StoreError::ChannelNotFound)
    }

    fn done(mut self, ch: Option<&ChannelRow>, outcome: Outcome) -> Result<(Applied, Job<'a>)> {
        let channel = match ch {
            Some(c) => Some(c.to_channel(self.head(&c.id)?.0)),
            None => None,
        };
        let entries = std::mem::take(&mut self.entries);
        let app = std::mem::take(&mut self.app);
        Ok((Applied { app, channel, entries, outcome }, self))
    }

    fn execute(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
        self.wrote.set(true);
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute(p)).map_err(backend)
    }

    fn user_name(&self, app: &str, user: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT name FROM users WHERE app = ?1 AND id = ?2")
            .and_then(|mut s| s.query_row(params![app, user], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(backend)
    }

    fn upsert_user(&self, actor: &Actor) -> Result<()> {
        self.execute(
            "INSERT INTO users (app, id, name, kind) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (app, id) DO UPDATE SET name = excluded.name, kind = excluded.kind",
            params![actor.app, actor.user.id, actor.user.name, actor.user.kind.as_str()],
        )?;
        Ok(())
    }

    /// Inserts the membership and appends `member_joined` (by `by`, about `user`).
    fn join(
        &mut self,
        ch: &ChannelRow,
        by: &str,
        user: &str,
        name: Option<String>,
        ts_ms: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO members (channel_id, user_id, last_read) VALUES (?1, ?2, 0)",
            params![ch.id, user],
        )?;
        let extra = EntryExtra { name, ..Default::default() };
        self.append(&ch.id, EntryKind::MemberJoined, by, user, ts_ms, "", extra)?;
        Ok(())
    }

    /// The channel-level conditions of a guard: membership and creator.
    fn check(&self, ch: &ChannelRow, guard: &Guard) -> Result<()> {
        if let Some(user) = &guard.member
            && !rows::is_member(self.conn, &ch.id, user)?
        {
            return Err(StoreError::NotMember);
        }
        if let Some(creator) = &guard.creator
            && ch.created_by != *creator
        {
            return Err(StoreError::Forbidden("only the channel's creator or an admin may do this"));
        }
        if let Some((user, at)) = &guard.not_banned {
            let banned: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT 1 FROM channel_bans WHERE channel_id = ?1 AND user_id = ?2 \
                     AND (until_ms IS NULL OR until_ms > ?3)",
                )
                .and_then(|mut s| s.query_row(params![ch.id, user, at], |r| r.get(0)).optional())
                .map_err(backend)?;
            if banned.is_some() {
                return Err(StoreError::Forbidden("banned from this channel"));
            }
        }
        Ok(())
    }

    /// The epoch condition of a `Send` / `Edit` guard (§7), against the head commit.
    fn check_epoch(&self, ch: &ChannelRow, guard: &Guard) -> Result<()> {
        if !ch.encrypted && guard.epoch.is_none() {
            return Ok(());
        }
        let head = rows::head_commit(self.conn, &ch.id)?.map(|(e, _)| e);
        build::check_epoch(ch.encrypted, guard.epoch, head)
    }

    fn conn_message(&self, ch: &str, id: &str) -> Result<Option<herald_proto::model::Message>> {
        rows::message(self.conn, ch, id)
    }

    /// `(author, seq)` of a message of the channel.
    fn message_author(&self, ch: &str, id: &str) -> Result<(String, i64)> {
        self.conn
            .prepare_cached(
                "SELECT e.author, m.seq FROM messages m JOIN entries e \
                 ON e.channel_id = m.channel_id AND e.seq = m.seq WHERE m.channel_id = ?1 AND m.id = ?2",
            )
            .and_then(|mut s| s.query_row(params![ch, id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(backend)?
            .ok_or(StoreError::NotFound("message"))
    }

    fn message_outcome(&self, ch: &str, id: &str, duplicate: bool, reactions: bool) -> Result<Outcome> {
        let mut message = rows::message(self.conn, ch, id)?.ok_or(StoreError::NotFound("message"))?;
        if reactions {
            message.reactions = Some(rows::reactions(self.conn, ch, id)?);
        }
        Ok(Outcome::Message { message: Box::new(message), duplicate })
    }

    /// Applies `m`, returning what it produced and the job (to release or drop).
    pub fn apply(mut self, m: Mutation) -> Result<(Applied, Job<'a>)> {
        self.app = m.actor().app.clone();
        match m {
            Mutation::UpsertUser { actor } => {
                self.upsert_user(&actor)?;
                self.done(None, Outcome::Done)
            }
            Mutation::CreateChannel { actor, id, name, title, encrypted, policy, members, ts_ms } => {
                let me = actor.user.id.as_str();
                if let Some(name) = &name
                    && let Some(ch) = rows::channel_by_name(self.conn, &actor.app, name.as_str())?
                {
                    if ch.created_by != me {
                        return Err(StoreError::NameTaken);
                    }
                    if !rows::is_member(self.conn, &ch.id, me)? {
                        self.upsert_user(&actor)?;
                        self.join(&ch, me, me, actor.user.name.clone(), ts_ms)?;
                    }
                    return self.done(Some(&ch), Outcome::Channel { created: false });
                }
                if rows::channel_by_id(self.conn, &actor.app, &id)?.is_some() || self.head(&id)?.0 > 0 {
                    return Err(StoreError::Invalid(format!("channel id {id:?} already exists")));
                }
                let ch = ChannelRow::created(&actor, id, name, title, encrypted, policy, ts_ms);
                self.execute(
                    "INSERT INTO channels (id, app, name, title, encrypted, policy, created_by, \
                     created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        ch.id,
                        ch.app,
                        ch.name,
                        ch.title,
                        ch.encrypted,
                        ch.policy.as_str(),
                        ch.created_by,
                        ch.created_ms
                    ],
                )?;
                self.own_channels.insert(ch.id.clone(), Some(ch.clone()));
                self.upsert_user(&actor)?;
                let extra =
                    EntryExtra { name: ch.name.clone(), title: ch.title.clone(), ..Default::default() };
                let content = ch.name.clone().unwrap_or_default();
                self.append(&ch.id, EntryKind::ChannelCreated, me, "", ts_ms, &content, extra)?;
                self.join(&ch, me, me, actor.user.name.clone(), ts_ms)?;
                let mut seen = vec![me.to_owned()];
                for user in members {
                    if seen.contains(&user) {
                        continue;
                    }
                    let name = self.user_name(&actor.app, &user)?;
                    self.join(&ch, me, &user, name, ts_ms)?;
                    seen.push(user);
                }
                self.done(Some(&ch), Outcome::Channel { created: true })
            }
            Mutation::Join { actor, channel, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                let me = actor.user.id.as_str();
                if !rows::is_member(self.conn, &ch.id, me)? {
                    if ch.policy == Policy::Invite && guard.open {
                        return Err(StoreError::Forbidden("this channel is invite-only"));
                    }
                    self.upsert_user(&actor)?;
                    self.join(&ch, me, me, actor.user.name.clone(), ts_ms)?;
                }
                self.done(Some(&ch), Outcome::Channel { created: false })
            }
            Mutation::AddMember { actor, channel, user, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                if !rows::is_member(self.conn, &ch.id, &user)? {
                    let name = self.user_name(&actor.app, &user)?;
                    self.join(&ch, &actor.user.id, &user, name, ts_ms)?;
                }
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::RemoveMember { actor, channel, user, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                let me = actor.user.id.as_str();
                self.check(&ch, &guard)?;
                let removed = self.execute(
                    "DELETE FROM members WHERE channel_id = ?1 AND user_id = ?2",
                    params![ch.id, user],
                )?;
                if removed == 0 {
                    return Err(StoreError::NotFound("member"));
                }
                let name =
                    if user == me { actor.user.name.clone() } else { self.user_name(&actor.app, &user)? };
                let extra = EntryExtra { name, ..Default::default() };
                self.append(&ch.id, EntryKind::MemberLeft, me, &user, ts_ms, "", extra)?;
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::Ban { actor, channel, user, until_ms, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                let me = actor.user.id.as_str();
                self.check(&ch, &guard)?;
                self.execute(
                    "INSERT OR REPLACE INTO channel_bans (channel_id, user_id, until_ms) VALUES (?1, ?2, ?3)",
                    params![ch.id, user, until_ms],
                )?;
                let removed = self.execute(
                    "DELETE FROM members WHERE channel_id = ?1 AND user_id = ?2",
                    params![ch.id, user],
                )?;
                if removed > 0 {
                    let name =
                        if user == me { actor.user.name.clone() } else { self.user_name(&actor.app, &user)? };
                    let extra = EntryExtra { name, ..Default::default() };
                    self.append(&ch.id, EntryKind::MemberLeft, me, &user, ts_ms, "", extra)?;
                }
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::Unban { actor, channel, user, guard } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                self.execute(
                    "DELETE FROM channel_bans WHERE channel_id = ?1 AND user_id = ?2",
                    params![ch.id, user],
                )?;
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::DeleteChannel { actor, channel, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                crate::hooks::record_deleted(self.conn, &ch, ts_ms)?;
                let members = rows::member_ids(self.conn, &ch.id)?;
                let before = ch.to_channel(self.head(&ch.id)?.0);
                for table in [
                    "entries",
                    "messages",
                    "reactions",
                    "members",
                    "client_ids",
                    "commits",
                    "envelopes",
                    "channel_bans",
                ] {
                    self.execute(&format!("DELETE FROM {table} WHERE channel_id = ?1"), params![ch.id])?;
                }
                self.execute("DELETE FROM channels WHERE id = ?1", params![ch.id])?;
                self.own.insert(ch.id.clone(), (0, ZERO_HASH));
                self.own_channels.insert(ch.id.clone(), None);
                self.erased = true;
                Ok((build::channel_deleted(std::mem::take(&mut self.app), before, members), self))
            }
            Mutation::Send { actor, channel, id, kind, content, reply_to, client_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                self.check_epoch(&ch, &guard)?;
                let me = actor.user.id.as_str();
                if let Some(cid) = &client_id {
                    let original: Option<String> = self
                        .conn
                        .prepare_cached(
                            "SELECT message_id FROM client_ids \
                             WHERE channel_id = ?1 AND author = ?2 AND client_id = ?3",
                        )
                        .and_then(|mut s| s.query_row(params![ch.id, me, cid], |r| r.get(0)).optional())
                        .map_err(backend)?;
                    if let Some(original) = original {
                        // The original may since have been deleted: then it is gone for good,
                        // and a retry must not bring the text back.
                        let outcome = self.message_outcome(&ch.id, &original, true, false)?;
                        return self.done(Some(&ch), outcome);
                    }
                }
                let reply = match &reply_to {
                    Some(r) => self.conn_message(&ch.id, r)?.map(build::reply_snapshot),
                    None => None,
                };
                if reply_to.is_some() && reply.is_none() {
                    return Err(StoreError::NotFound("message"));
                }
                let fresh = FreshSend::new(&id, me, &kind, &content, client_id.as_deref(), ts_ms)
                    .with_epoch(guard.epoch);
                let extra = fresh.extra(reply.clone());
                let reference = reply_to.clone().unwrap_or_default();
                let seq = self.append(&ch.id, EntryKind::Message, me, &reference, ts_ms, &content, extra)?;
                // The message as `rows::message` would read it back: built, not re-read.
                let message = fresh.message(seq, reply);
                // Everything else of the message is in its entry (`rows::MESSAGE_SELECT`).
                self.execute(
                    "INSERT INTO messages (channel_id, seq, id) VALUES (?1, ?2, ?3)",
                    params![ch.id, to_i64(seq), id],
                )?;
                if let Some(cid) = &client_id {
                    self.execute(
                        "INSERT INTO client_ids (channel_id, author, client_id, message_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![ch.id, me, cid, id],
                    )?;
                }
                let outcome = Outcome::Message { message: Box::new(message), duplicate: false };
                self.done(Some(&ch), outcome)
            }
            Mutation::Edit { actor, channel, message_id, content, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                let (author, _) = self.message_author(&ch.id, &message_id)?;
                check_author(&guard, &author)?;
                self.check_epoch(&ch, &guard)?;
                let extra = EntryExtra { epoch: guard.epoch, ..Default::default() };
                self.append(&ch.id, EntryKind::MessageEdited, &author, &message_id, ts_ms, &content, extra)?;
                self.execute(
                    "UPDATE messages SET content = ?3, edited_ms = ?4, epoch = ?5 \
                     WHERE channel_id = ?1 AND id = ?2",
                    params![ch.id, message_id, content, ts_ms, guard.epoch.map(to_i64)],
                )?;
                let outcome = self.message_outcome(&ch.id, &message_id, false, true)?;
                self.done(Some(&ch), outcome)
            }
            Mutation::Delete { actor, channel, message_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                let (author, seq) = self.message_author(&ch.id, &message_id)?;
                check_author(&guard, &author)?;
                // Erase the text where it lives: the message row, the message entry and every
                // edit entry. `content_hash` stays, so the chain still verifies.
                self.execute(
                    "UPDATE entries SET content = NULL, salt = NULL WHERE channel_id = ?1 AND seq = ?2",
                    params![ch.id, seq],
                )?;
                // `INDEXED BY`: without statistics the planner would rather scan the channel.
                self.execute(
                    "UPDATE entries INDEXED BY entries_edits SET content = NULL, salt = NULL \
                     WHERE channel_id = ?1 AND kind = 'message_edited' AND ref = ?2",
                    params![ch.id, message_id],
                )?;
                self.execute(
                    "DELETE FROM reactions WHERE channel_id = ?1 AND message_id = ?2",
                    params![ch.id, message_id],
                )?;
                self.execute(
                    "DELETE FROM messages WHERE channel_id = ?1 AND id = ?2",
                    params![ch.id, message_id],
                )?;
                self.erased = true;
                // Who deleted it (the author, or a moderator): the event's `by`.
                let extra = EntryExtra { name: Some(actor.user.id.clone()), ..Default::default() };
                self.append(&ch.id, EntryKind::MessageDeleted, &author, &message_id, ts_ms, "", extra)?;
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::React { actor, channel, id, message_id, emoji, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                self.message_author(&ch.id, &message_id)?;
                let me = actor.user.id.as_str();
                let extra = EntryExtra { id: Some(id.clone()), ..Default::default() };
                let seq = self.append(&ch.id, EntryKind::Reaction, me, &message_id, ts_ms, &emoji, extra)?;
                self.execute(
                    "INSERT INTO reactions (id, channel_id, message_id, user_id, emoji, seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, ch.id, message_id, me, emoji, to_i64(seq)],
                )?;
                self.done(Some(&ch), Outcome::Reaction { reaction_id: id })
            }
            Mutation::Unreact { actor, channel, reaction_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                let (user, message_id): (String, String) = self
                    .conn
                    .prepare_cached(
                        "SELECT user_id, message_id FROM reactions WHERE channel_id = ?1 AND id = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![ch.id, reaction_id], |r| Ok((r.get(0)?, r.get(1)?))).optional()
                    })
                    .map_err(backend)?
                    .ok_or(StoreError::NotFound("reaction"))?;
                check_author(&guard, &user)?;
                self.execute(
                    "DELETE FROM reactions WHERE channel_id = ?1 AND id = ?2",
                    params![ch.id, reaction_id],
                )?;
                let extra = EntryExtra { message_id: Some(message_id), ..Default::default() };
                self.append(&ch.id, EntryKind::ReactionDeleted, &user, &reaction_id, ts_ms, "", extra)?;
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::Rotate { actor, channel, commit, envelopes, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel)?;
                self.check(&ch, &guard)?;
                if !ch.encrypted {
                    return Err(StoreError::Invalid("the channel is not encrypted".into()));
                }
                let head = rows::head_commit(self.conn, &ch.id)?;
                build::check_commit(&commit, head.as_ref().map(|(e, h)| (*e, h.as_str())))?;
                let epoch = to_i64(commit.epoch);
                self.execute(
                    "INSERT INTO commits (channel_id, epoch, prev_commit_hash, commit_hash, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        ch.id,
                        epoch,
                        commit.prev_commit_hash,
                        commit.commit_hash,
                        commit.commit.to_string()
                    ],
                )?;
                for env in &envelopes {
                    self.execute(
                        "INSERT OR REPLACE INTO envelopes (channel_id, device_id, epoch, body) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![ch.id, env.device_id, epoch, env.envelope.to_string()],
                    )?;
                }
                let reference = commit.epoch.to_string();
                let me = actor.user.id.as_str();
                let extra = EntryExtra::default();
                self.append(
                    &ch.id,
                    EntryKind::KeyRotated,
                    me,
                    &reference,
                    ts_ms,
                    &commit.commit_hash,
                    extra,
                )?;
                self.done(Some(&ch), Outcome::Done)
            }
            Mutation::Read { actor, channel, message_id, guard } => {
                let ch = self.channel(&actor.app, &channel)?;
                let me = actor.user.id.as_str();
                self.check(&ch, &guard)?;
                let (_, seq) = self.message_author(&ch.id, &message_id)?;
                self.execute(
                    "UPDATE members SET last_read = MAX(last_read, ?3) WHERE channel_id = ?1 AND user_id = ?2",
                    params![ch.id, me, seq],
                )?;
                let seq = rows::to_u64(seq);
                self.done(Some(&ch), Outcome::Read { user: me.to_owned(), message_id, seq })
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
