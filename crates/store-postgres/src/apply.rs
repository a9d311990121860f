//! One [`Mutation`] applied inside the writer's open transaction: its checks, its row changes
//! and its log entries. Runs on the writer task only, inside a savepoint the caller owns.
//!
//! Writes whose row count nobody needs are queued and sent together with the next read (or at
//! the end of the job): tokio-postgres pipelines the statements of futures polled together on
//! one connection, and the server runs them in the order they were sent, so a read still sees
//! every write queued before it while the job pays one round trip instead of one per statement.

use crate::rows::{self, ChannelRow, to_i64};
use crate::stmts::Stmts;
use herald_proto::EntryKind;
use herald_proto::chain::{Hash32, ZERO_HASH};
use herald_proto::model::{Message, Policy, ReactionView};
use herald_store::build::{self, FreshSend};
use herald_store::{
    Actor, Applied, EntryExtra, Guard, Mutation, NewEntry, Outcome, Result, StoreError, StoredEntry,
};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// Why a job stopped: a refusal (or a bad row) of its own, or an error of the database.
#[derive(Debug)]
pub enum Fail {
    Store(StoreError),
    Db(tokio_postgres::Error),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

type JResult<T> = std::result::Result<T, Fail>;

/// A parameter owned by a queued write.
type Param = Box<dyn ToSql + Sync + Send>;

fn p<T: ToSql + Sync + Send + 'static>(v: T) -> Param {
    Box::new(v)
}

/// The rows the batch holds locked and what its released jobs changed in them. Every channel
/// a batch appends to is locked (`FOR UPDATE`) before anything reads its head, so no other
/// node's transaction can append to it until this one commits: the heads here are exact.
#[derive(Default)]
pub struct Batch {
    /// Channel rows by id: `None` for an id locked but absent (or deleted by this batch).
    pub channels: HashMap<String, Option<ChannelRow>>,
    /// Heads `(seq, hash)` of the locked channels, as changed by the batch's released jobs.
    pub heads: HashMap<String, (u64, Hash32)>,
    /// Channels whose head the batch changed: their row is updated before `COMMIT`.
    pub dirty: Vec<String>,
}

/// The checks a planned `Send` still needs: the database must answer them as planned.
pub struct SendPlan {
    pub channel: String,
    /// This user must be a member.
    pub member: Option<String>,
    /// `(author, client_id)` must not be used yet.
    pub client_id: Option<(String, String)>,
}

/// What merging a job into the batch replaced, to put back if its queued writes fail.
#[derive(Default)]
pub struct Undo {
    heads: Vec<(String, Option<(u64, Hash32)>)>,
    channels: Vec<(String, Option<Option<ChannelRow>>)>,
    dirty_len: usize,
}

impl Batch {
    /// Puts back what a job's merge replaced (its writes failed after it was merged).
    pub fn undo(&mut self, u: Undo) {
        for (k, prev) in u.heads.into_iter().rev() {
            match prev {
                Some(v) => self.heads.insert(k, v),
                None => self.heads.remove(&k),
            };
        }
        for (k, prev) in u.channels.into_iter().rev() {
            match prev {
                Some(v) => self.channels.insert(k, v),
                None => self.channels.remove(&k),
            };
        }
        self.dirty.truncate(u.dirty_len);
    }
}

/// A channel locked by a job: id, row (if it exists) and head.
type Locked = (String, Option<ChannelRow>, Option<(u64, Hash32)>);

/// A write queued by a job, sent later in a pipeline.
pub type Write<'a> = (&'a Statement, Vec<Param>);

/// The state of one job while it is applied.
pub struct Job<'a, 'b> {
    client: &'a Client,
    st: &'a Stmts,
    batch: &'b mut Batch,
    own_heads: HashMap<String, (u64, Hash32)>,
    own_channels: HashMap<String, Option<ChannelRow>>,
    /// Rows this job locked (a channel found by name). A rollback to the job's savepoint
    /// releases those locks, so they reach the batch only with the job.
    own_locked: Vec<Locked>,
    pending: Vec<Write<'a>>,
    entries: Vec<StoredEntry>,
    app: String,
    /// The job erased content: the vacuum of the content tables is due after the commit.
    pub erased: bool,
}

/// Runs queued writes as one pipeline: every statement is sent, in order, on the first poll
/// (so that statements polled after this future go after all of them), then the answers are
/// awaited. The first failure is returned.
pub async fn run_writes(client: &Client, writes: Vec<Write<'_>>) -> JResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let futs = writes.iter().map(|(s, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
        async move { client.execute(*s, &refs).await }
    });
    for r in in_order(futs.collect()).await {
        r?;
    }
    Ok(())
}

/// Polls every future in order on each wake-up, so that each sends its statement in the
/// order given (tokio-postgres sends on first poll): a pipeline in a known order. Every
/// pending future is polled on every wake-up, so no answer waits behind an unread one.
pub async fn in_order<T, F: Future<Output = T>>(futs: Vec<F>) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(|f| Box::pin(futures::future::maybe_done(f))).collect();
    futures::future::poll_fn(|cx| {
        let mut ready = true;
        for f in futs.iter_mut() {
            if f.as_mut().poll(cx).is_pending() {
                ready = false;
            }
        }
        if ready { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    futs.iter_mut().filter_map(|f| f.as_mut().take_output()).collect()
}

impl<'a, 'b> Job<'a, 'b> {
    pub fn new(client: &'a Client, st: &'a Stmts, batch: &'b mut Batch) -> Self {
        Job {
            client,
            st,
            batch,
            own_heads: HashMap::new(),
            own_channels: HashMap::new(),
            own_locked: Vec::new(),
            pending: Vec::new(),
            entries: Vec::new(),
            app: String::new(),
            erased: false,
        }
    }

    /// Merges this job's heads, channel rows and locks into the batch, and hands over its
    /// writes not yet sent (the caller pipelines them with the next job) with what to undo if
    /// they fail.
    pub fn release(self) -> (Vec<Write<'a>>, Undo) {
        let b = self.batch;
        let mut undo = Undo { dirty_len: b.dirty.len(), ..Undo::default() };
        for (id, row, head) in self.own_locked {
            undo.channels.push((id.clone(), b.channels.insert(id.clone(), row)));
            if let Some(h) = head {
                undo.heads.push((id.clone(), b.heads.insert(id, h)));
            }
        }
        for (ch, head) in self.own_heads {
            if !b.dirty.contains(&ch) {
                b.dirty.push(ch.clone());
            }
            undo.heads.push((ch.clone(), b.heads.insert(ch, head)));
        }
        for (id, row) in self.own_channels {
            undo.channels.push((id.clone(), b.channels.insert(id, row)));
        }
        (self.pending, undo)
    }

    /// Turns the entry just queued (a `message`) into the statement that also inserts its
    /// message row, which reads the same values.
    fn fold_message(&mut self, reply_to: Option<String>) {
        let st = self.st;
        if let Some(last) = self.pending.last_mut() {
            last.0 = &st.insert_send;
            last.1.push(p(reply_to));
        }
    }

    fn write(&mut self, s: &'a Statement, params: Vec<Param>) {
        self.pending.push((s, params));
    }

    /// Sends every queued write; waits for their answers.
    pub async fn flush(&mut self) -> JResult<()> {
        let writes = std::mem::take(&mut self.pending);
        run_writes(self.client, writes).await
    }

    /// A read, pipelined behind the queued writes.
    async fn query(&mut self, s: &Statement, params: &[&(dyn ToSql + Sync)]) -> JResult<Vec<Row>> {
        let writes = std::mem::take(&mut self.pending);
        let (w, r) =
            futures::future::join(run_writes(self.client, writes), self.client.query(s, params)).await;
        w?;
        Ok(r?)
    }

    async fn query_opt(&mut self, s: &Statement, params: &[&(dyn ToSql + Sync)]) -> JResult<Option<Row>> {
        Ok(self.query(s, params).await?.into_iter().next())
    }

    /// A write whose row count matters, behind the queued writes.
    async fn execute(&mut self, s: &Statement, params: &[&(dyn ToSql + Sync)]) -> JResult<u64> {
        let writes = std::mem::take(&mut self.pending);
        let (w, r) =
            futures::future::join(run_writes(self.client, writes), self.client.execute(s, params)).await;
        w?;
        Ok(r?)
    }

    /// Locks (if the batch has not yet) and reads a channel row with its head.
    async fn lock(&mut self, id: &str) -> JResult<()> {
        if self.own_channels.contains_key(id)
            || self.batch.channels.contains_key(id)
            || self.own_locked.iter().any(|(l, _, _)| l == id)
        {
            return Ok(());
        }
        // Not among the ids locked at the batch's start (a channel found by name): locked now.
        // Out of the sorted order, so a deadlock with another node is possible; the database
        // detects it and the writer retries the batch.
        let ids = vec![id.to_owned()];
        let rows = self.query(&self.st.lock_channels, &[&ids]).await?;
        let mut found = (None, None);
        for r in &rows {
            let (row, head) = rows::channel_row(r)?;
            found = (Some(row), Some(head));
        }
        self.own_locked.push((id.to_owned(), found.0, found.1));
        Ok(())
    }

    fn head(&self, ch: &str) -> (u64, Hash32) {
        self.own_heads
            .get(ch)
            .or_else(|| self.batch.heads.get(ch))
            .or_else(|| self.own_locked.iter().find(|(l, _, _)| l == ch).and_then(|(_, _, h)| h.as_ref()))
            .copied()
            .unwrap_or((0, ZERO_HASH))
    }

    /// A channel row as this job sees it: `None` if unknown (not locked yet), `Some(None)`
    /// if absent.
    fn row(&self, id: &str) -> Option<Option<ChannelRow>> {
        self.own_channels
            .get(id)
            .or_else(|| self.batch.channels.get(id))
            .cloned()
            .or_else(|| self.own_locked.iter().find(|(l, _, _)| l == id).map(|(_, r, _)| r.clone()))
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
    ) -> u64 {
        let (prev_seq, prev_hash) = self.head(ch);
        let new = NewEntry { channel_id: ch, kind, author, reference, ts_ms, content };
        let e = new.link(prev_seq, prev_hash, rand::random(), extra);
        let salt = e.salt.unwrap_or_default();
        let seq = to_i64(e.seq);
        self.write(
            &self.st.insert_entry,
            vec![
                p(ch.to_owned()),
                p(seq),
                p(kind.as_str()),
                p(author.to_owned()),
                p(reference.to_owned()),
                p(ts_ms),
                p(e.content_hash.to_vec()),
                p(e.prev_hash.to_vec()),
                p(e.hash.to_vec()),
                p(e.extra.id.clone()),
                p(e.extra.msg_type.clone()),
                p(e.extra.client_id.clone()),
                p(e.extra.name.clone()),
                p(e.extra.title.clone()),
                p(e.extra.message_id.clone()),
                p(e.extra.reply.as_ref().map(|r| r.author.clone())),
                p(content.to_owned()),
                p(salt.to_vec()),
                p(e.extra.epoch.map(to_i64)),
            ],
        );
        let seq = e.seq;
        self.own_heads.insert(ch.to_owned(), (seq, e.hash));
        self.entries.push(e);
        seq
    }

    async fn channel(&mut self, app: &str, id: &str) -> JResult<ChannelRow> {
        self.lock(id).await?;
        let row = self.row(id).flatten();
        // Ids are unique across apps: a row of another app is not this app's channel.
        row.filter(|r| r.app == app).ok_or(Fail::Store(StoreError::ChannelNotFound))
    }

    /// The job's answer. Its last writes stay queued: the writer sends them with the next job.
    async fn done(mut self, ch: Option<&ChannelRow>, outcome: Outcome) -> JResult<(Applied, Job<'a, 'b>)> {
        let channel = ch.map(|c| c.to_channel(self.head(&c.id).0));
        let entries = std::mem::take(&mut self.entries);
        let app = std::mem::take(&mut self.app);
        Ok((Applied { app, channel, entries, outcome }, self))
    }

    /// A `Send` planned without asking the database, as it will be if its checks pass: the
    /// writer pipelines the checks and writes of a run of such sends in one round trip and
    /// verifies the checks' answers afterwards (see `writer.rs`). `None` when the send needs
    /// an answer first (a reply's target) or would be refused on what the batch knows.
    pub fn plan_send(mut self, m: &Mutation) -> Option<(SendPlan, Applied, Job<'a, 'b>)> {
        let Mutation::Send { actor, channel, id, kind, content, reply_to: None, client_id, guard, ts_ms } = m
        else {
            return None;
        };
        let ch = self.row(channel).flatten().filter(|r| r.app == actor.app)?;
        check_creator(&ch, guard).ok()?;
        // An encrypted channel's send checks its epoch against the head commit: not planned.
        if ch.encrypted || guard.epoch.is_some() {
            return None;
        }
        self.app = actor.app.clone();
        let me = actor.user.id.as_str();
        let fresh = FreshSend::new(id, me, kind, content, client_id.as_deref(), *ts_ms);
        let seq = self.append(&ch.id, EntryKind::Message, me, "", *ts_ms, content, fresh.extra(None));
        self.fold_message(None);
        if let Some(cid) = client_id {
            self.write(
                &self.st.insert_client_id,
                vec![p(ch.id.clone()), p(me.to_owned()), p(cid.clone()), p(id.clone())],
            );
        }
        let plan = SendPlan {
            channel: ch.id.clone(),
            member: guard.member.clone(),
            client_id: client_id.as_ref().map(|c| (me.to_owned(), c.clone())),
        };
        let outcome = Outcome::Message { message: Box::new(fresh.message(seq, None)), duplicate: false };
        let channel = Some(ch.to_channel(self.head(&ch.id).0));
        let entries = std::mem::take(&mut self.entries);
        let app = std::mem::take(&mut self.app);
        Some((plan, Applied { app, channel, entries, outcome }, self))
    }

    async fn user_name(&mut self, app: &str, user: &str) -> JResult<Option<String>> {
        let row = self.query_opt(&self.st.user_name, &[&app, &user]).await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(r.try_get::<_, Option<String>>(0)?),
        }
    }

    /// Records the actor's name and kind. Inserts if new and updates only if changed, so a
    /// user seen unchanged takes no row lock (two nodes' batches then never wait on it).
    fn upsert_user(&mut self, actor: &Actor) {
        let kind = actor.user.kind.as_str();
        let params =
            || vec![p(actor.app.clone()), p(actor.user.id.clone()), p(actor.user.name.clone()), p(kind)];
        self.write(&self.st.user_insert, params());
        self.write(&self.st.user_update, params());
    }

    /// Inserts the membership and appends `member_joined` (by `by`, about `user`).
    fn join(&mut self, ch: &ChannelRow, by: &str, user: &str, name: Option<String>, ts_ms: i64) {
        self.write(&self.st.insert_member, vec![p(ch.id.clone()), p(user.to_owned())]);
        let extra = EntryExtra { name, ..Default::default() };
        self.append(&ch.id, EntryKind::MemberJoined, by, user, ts_ms, "", extra);
    }

    async fn is_member(&mut self, ch: &str, user: &str) -> JResult<bool> {
        Ok(self.query_opt(&self.st.is_member, &[&ch, &user]).await?.is_some())
    }

    /// The channel-level conditions of a guard: membership and creator.
    async fn check(&mut self, ch: &ChannelRow, guard: &Guard) -> JResult<()> {
        if let Some(user) = &guard.member
            && !self.is_member(&ch.id, user).await?
        {
            return Err(StoreError::NotMember.into());
        }
        check_creator(ch, guard)?;
        Ok(())
    }

    /// The head commit `(epoch, commit_hash)` of a channel (its row is locked by the batch, so
    /// this is exact until the commit).
    async fn head_commit(&mut self, ch: &str) -> JResult<Option<(u64, String)>> {
        match self.query_opt(&self.st.head_commit, &[&ch]).await? {
            None => Ok(None),
            Some(r) => Ok(Some((rows::to_u64(r.try_get(0)?), r.try_get(1)?))),
        }
    }

    /// The epoch condition of a `Send` / `Edit` guard (§7).
    async fn check_epoch(&mut self, ch: &ChannelRow, guard: &Guard) -> JResult<()> {
        if !ch.encrypted && guard.epoch.is_none() {
            return Ok(());
        }
        let head = self.head_commit(&ch.id).await?.map(|(e, _)| e);
        Ok(build::check_epoch(ch.encrypted, guard.epoch, head)?)
    }

    async fn message(&mut self, ch: &str, id: &str) -> JResult<Option<Message>> {
        match self.query_opt(&self.st.message, &[&ch, &id]).await? {
            None => Ok(None),
            Some(r) => Ok(Some(rows::message_row(&r)?)),
        }
    }

    /// `(author, seq)` of a message of the channel.
    async fn message_author(&mut self, ch: &str, id: &str) -> JResult<(String, i64)> {
        let row = self.query_opt(&self.st.message_author, &[&ch, &id]).await?;
        let r = row.ok_or(Fail::Store(StoreError::NotFound("message")))?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    async fn message_outcome(
        &mut self,
        ch: &str,
        id: &str,
        duplicate: bool,
        reactions: bool,
    ) -> JResult<Outcome> {
        let mut message = self.message(ch, id).await?.ok_or(Fail::Store(StoreError::NotFound("message")))?;
        if reactions {
            let rows = self.query(&self.st.reactions, &[&ch, &id]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(ReactionView {
                    reaction_id: r.try_get(0)?,
                    emoji: r.try_get(1)?,
                    user: r.try_get(2)?,
                });
            }
            message.reactions = Some(out);
        }
        Ok(Outcome::Message { message: Box::new(message), duplicate })
    }

    /// Applies `m`, returning what it produced and the job (to release or drop).
    pub async fn apply(mut self, m: Mutation) -> JResult<(Applied, Job<'a, 'b>)> {
        self.app = m.actor().app.clone();
        match m {
            Mutation::UpsertUser { actor } => {
                self.upsert_user(&actor);
                self.done(None, Outcome::Done).await
            }
            Mutation::CreateChannel { actor, id, name, title, encrypted, policy, members, ts_ms } => {
                let me = actor.user.id.as_str();
                if let Some(name) = &name {
                    let found =
                        self.query_opt(&self.st.channel_by_name, &[&actor.app, &name.as_str()]).await?;
                    if let Some(r) = found {
                        let (existing, _) = rows::channel_row(&r)?;
                        if existing.created_by != me {
                            return Err(StoreError::NameTaken.into());
                        }
                        // The creator may be joined: lock the channel before reading its head.
                        let ch = self.channel(&actor.app, &existing.id).await?;
                        if !self.is_member(&ch.id, me).await? {
                            self.upsert_user(&actor);
                            self.join(&ch, me, me, actor.user.name.clone(), ts_ms);
                        }
                        return self.done(Some(&ch), Outcome::Channel { created: false }).await;
                    }
                }
                self.lock(&id).await?;
                let exists = self.row(&id).is_some_and(|r| r.is_some());
                if exists || self.head(&id).0 > 0 {
                    return Err(StoreError::Invalid(format!("channel id {id:?} already exists")).into());
                }
                let ch = ChannelRow::created(&actor, id, name, title, encrypted, policy, ts_ms);
                self.write(
                    &self.st.insert_channel,
                    vec![
                        p(ch.id.clone()),
                        p(ch.app.clone()),
                        p(ch.name.clone()),
                        p(ch.title.clone()),
                        p(ch.encrypted),
                        p(ch.policy.as_str()),
                        p(ch.created_by.clone()),
                        p(ch.created_ms),
                        p(ZERO_HASH.to_vec()),
                    ],
                );
                self.own_channels.insert(ch.id.clone(), Some(ch.clone()));
                self.upsert_user(&actor);
                let extra =
                    EntryExtra { name: ch.name.clone(), title: ch.title.clone(), ..Default::default() };
                let content = ch.name.clone().unwrap_or_default();
                self.append(&ch.id, EntryKind::ChannelCreated, me, "", ts_ms, &content, extra);
                self.join(&ch, me, me, actor.user.name.clone(), ts_ms);
                let mut seen = vec![me.to_owned()];
                for user in members {
                    if seen.contains(&user) {
                        continue;
                    }
                    let name = self.user_name(&actor.app, &user).await?;
                    self.join(&ch, me, &user, name, ts_ms);
                    seen.push(user);
                }
                self.done(Some(&ch), Outcome::Channel { created: true }).await
            }
            Mutation::Join { actor, channel, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                let me = actor.user.id.as_str();
                if !self.is_member(&ch.id, me).await? {
                    if ch.policy == Policy::Invite && guard.open {
                        return Err(StoreError::Forbidden("this channel is invite-only").into());
                    }
                    self.upsert_user(&actor);
                    self.join(&ch, me, me, actor.user.name.clone(), ts_ms);
                }
                self.done(Some(&ch), Outcome::Channel { created: false }).await
            }
            Mutation::AddMember { actor, channel, user, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                if !self.is_member(&ch.id, &user).await? {
                    let name = self.user_name(&actor.app, &user).await?;
                    self.join(&ch, &actor.user.id, &user, name, ts_ms);
                }
                self.done(Some(&ch), Outcome::Done).await
            }
            Mutation::RemoveMember { actor, channel, user, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                let me = actor.user.id.as_str();
                self.check(&ch, &guard).await?;
                let removed = self.execute(&self.st.delete_member, &[&ch.id, &user]).await?;
                if removed == 0 {
                    return Err(StoreError::NotFound("member").into());
                }
                let name = if user == me {
                    actor.user.name.clone()
                } else {
                    self.user_name(&actor.app, &user).await?
                };
                let extra = EntryExtra { name, ..Default::default() };
                self.append(&ch.id, EntryKind::MemberLeft, me, &user, ts_ms, "", extra);
                self.done(Some(&ch), Outcome::Done).await
            }
            Mutation::DeleteChannel { actor, channel, guard } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                let rows = self.query(&self.st.member_ids, &[&ch.id]).await?;
                let members =
                    rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<Vec<_>, _>>()?;
                let before = ch.to_channel(self.head(&ch.id).0);
                let st = self.st;
                for s in [
                    &st.del_entries,
                    &st.del_contents,
                    &st.del_messages,
                    &st.del_reactions,
                    &st.del_members,
                    &st.del_client_ids,
                    &st.del_commits,
                    &st.del_envelopes,
                    &st.del_channel,
                ] {
                    self.write(s, vec![p(ch.id.clone())]);
                }
                self.flush().await?;
                self.own_heads.insert(ch.id.clone(), (0, ZERO_HASH));
                self.own_channels.insert(ch.id.clone(), None);
                self.erased = true;
                Ok((build::channel_deleted(std::mem::take(&mut self.app), before, members), self))
            }
            Mutation::Send { actor, channel, id, kind, content, reply_to, client_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                let me = actor.user.id.as_str();
                // The guard's membership, the idempotency key and the replied-to message, asked
                // in one round trip.
                let (member, original, reply) = {
                    let (client, st, chid) = (self.client, self.st, &ch.id);
                    let member = guard
                        .member
                        .as_ref()
                        .map(|u| async move { client.query_opt(&st.is_member, &[chid, u]).await });
                    let original = client_id
                        .as_ref()
                        .map(|c| async move { client.query_opt(&st.client_id, &[chid, &me, c]).await });
                    let reply = reply_to
                        .as_ref()
                        .map(|r| async move { client.query_opt(&st.message, &[chid, r]).await });
                    futures::future::try_join3(opt(member), opt(original), opt(reply)).await?
                };
                if guard.member.is_some() && member.flatten().is_none() {
                    return Err(StoreError::NotMember.into());
                }
                check_creator(&ch, &guard)?;
                self.check_epoch(&ch, &guard).await?;
                if let Some(Some(original)) = original {
                    let original: String = original.try_get(0)?;
                    // The original may since have been deleted: then it is gone for good, and a
                    // retry must not bring the text back.
                    let outcome = self.message_outcome(&ch.id, &original, true, false).await?;
                    return self.done(Some(&ch), outcome).await;
                }
                let reply = match reply.flatten() {
                    Some(r) => Some(build::reply_snapshot(rows::message_row(&r)?)),
                    None => None,
                };
                if reply_to.is_some() && reply.is_none() {
                    return Err(StoreError::NotFound("message").into());
                }
                let fresh = FreshSend::new(&id, me, &kind, &content, client_id.as_deref(), ts_ms)
                    .with_epoch(guard.epoch);
                let extra = fresh.extra(reply.clone());
                let reference = reply_to.clone().unwrap_or_default();
                let seq = self.append(&ch.id, EntryKind::Message, me, &reference, ts_ms, &content, extra);
                // The message as `rows::message_row` would read it back: built, not re-read.
                let message = fresh.message(seq, reply);
                self.fold_message(reply_to);
                if let Some(cid) = client_id {
                    self.write(
                        &self.st.insert_client_id,
                        vec![p(ch.id.clone()), p(me.to_owned()), p(cid), p(id)],
                    );
                }
                let outcome = Outcome::Message { message: Box::new(message), duplicate: false };
                self.done(Some(&ch), outcome).await
            }
            Mutation::Edit { actor, channel, message_id, content, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                let (author, _) = self.message_author(&ch.id, &message_id).await?;
                check_author(&guard, &author)?;
                self.check_epoch(&ch, &guard).await?;
                let extra = EntryExtra { epoch: guard.epoch, ..Default::default() };
                self.append(&ch.id, EntryKind::MessageEdited, &author, &message_id, ts_ms, &content, extra);
                self.write(
                    &self.st.edit_message,
                    vec![
                        p(ch.id.clone()),
                        p(message_id.clone()),
                        p(content),
                        p(ts_ms),
                        p(guard.epoch.map(to_i64)),
                    ],
                );
                let outcome = self.message_outcome(&ch.id, &message_id, false, true).await?;
                self.done(Some(&ch), outcome).await
            }
            Mutation::Delete { actor, channel, message_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                let (author, seq) = self.message_author(&ch.id, &message_id).await?;
                check_author(&guard, &author)?;
                // Erase the text where it lives: the content rows of the message entry and of
                // every edit entry, and the message row. `content_hash` stays in `entries`, so
                // the chain still verifies.
                let st = self.st;
                self.write(&st.erase_message, vec![p(ch.id.clone()), p(seq)]);
                self.write(&st.erase_edits, vec![p(ch.id.clone()), p(message_id.clone())]);
                self.write(&st.del_reactions_of, vec![p(ch.id.clone()), p(message_id.clone())]);
                self.write(&st.del_message, vec![p(ch.id.clone()), p(message_id.clone())]);
                self.erased = true;
                let extra = EntryExtra::default();
                self.append(&ch.id, EntryKind::MessageDeleted, &author, &message_id, ts_ms, "", extra);
                self.done(Some(&ch), Outcome::Done).await
            }
            Mutation::React { actor, channel, id, message_id, emoji, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                self.message_author(&ch.id, &message_id).await?;
                let me = actor.user.id.as_str();
                let extra = EntryExtra { id: Some(id.clone()), ..Default::default() };
                let seq = self.append(&ch.id, EntryKind::Reaction, me, &message_id, ts_ms, &emoji, extra);
                self.write(
                    &self.st.insert_reaction,
                    vec![
                        p(id.clone()),
                        p(ch.id.clone()),
                        p(message_id),
                        p(me.to_owned()),
                        p(emoji),
                        p(to_i64(seq)),
                    ],
                );
                self.done(Some(&ch), Outcome::Reaction { reaction_id: id }).await
            }
            Mutation::Unreact { actor, channel, reaction_id, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                let row = self.query_opt(&self.st.reaction_of, &[&ch.id, &reaction_id]).await?;
                let r = row.ok_or(Fail::Store(StoreError::NotFound("reaction")))?;
                let (user, message_id): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                check_author(&guard, &user)?;
                self.write(&self.st.del_reaction, vec![p(ch.id.clone()), p(reaction_id.clone())]);
                let extra = EntryExtra { message_id: Some(message_id), ..Default::default() };
                self.append(&ch.id, EntryKind::ReactionDeleted, &user, &reaction_id, ts_ms, "", extra);
                self.done(Some(&ch), Outcome::Done).await
            }
            Mutation::Rotate { actor, channel, commit, envelopes, guard, ts_ms } => {
                let ch = self.channel(&actor.app, &channel).await?;
                self.check(&ch, &guard).await?;
                if !ch.encrypted {
                    return Err(StoreError::Invalid("the channel is not encrypted".into()).into());
                }
                let head = self.head_commit(&ch.id).await?;
                build::check_commit(&commit, head.as_ref().map(|(e, h)| (*e, h.as_str())))?;
                let epoch = to_i64(commit.epoch);
                self.write(
                    &self.st.insert_commit,
                    vec![
                        p(ch.id.clone()),
                        p(epoch),
                        p(commit.prev_commit_hash.clone()),
                        p(commit.commit_hash.clone()),
                        p(commit.commit.to_string()),
                    ],
                );
                for env in envelopes {
                    self.write(
                        &self.st.upsert_envelope,
                        vec![p(ch.id.clone()), p(env.device_id), p(epoch), p(env.envelope.to_string())],
                    );
                }
                let reference = commit.epoch.to_string();
                let me = actor.user.id.clone();
                let extra = EntryExtra::default();
                self.append(
                    &ch.id,
                    EntryKind::KeyRotated,
                    &me,
                    &reference,
                    ts_ms,
                    &commit.commit_hash,
                    extra,
                );
                self.done(Some(&ch), Outcome::Done).await
            }
            Mutation::Read { actor, channel, message_id, guard } => {
                let ch = self.channel(&actor.app, &channel).await?;
                let me = actor.user.id.as_str();
                self.check(&ch, &guard).await?;
                let (_, seq) = self.message_author(&ch.id, &message_id).await?;
                self.write(&self.st.read_mark, vec![p(ch.id.clone()), p(me.to_owned()), p(seq)]);
                let seq = rows::to_u64(seq);
                self.done(Some(&ch), Outcome::Read { user: me.to_owned(), message_id, seq }).await
            }
        }
    }
}

/// An optional query, so that absent ones can sit in a join.
async fn opt<T, F>(f: Option<F>) -> std::result::Result<Option<T>, tokio_postgres::Error>
where
    F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    match f {
        Some(f) => f.await.map(Some),
        None => Ok(None),
    }
}

fn check_creator(ch: &ChannelRow, guard: &Guard) -> Result<()> {
    if let Some(creator) = &guard.creator
        && ch.created_by != *creator
    {
        return Err(StoreError::Forbidden("only the channel's creator or an admin may do this"));
    }
    Ok(())
}

/// The authorship condition of a guard, against the stored author of a message or reaction.
fn check_author(guard: &Guard, author: &str) -> Result<()> {
    match &guard.author {
        Some(a) if a != author => Err(StoreError::NotAuthor),
        _ => Ok(()),
    }
}
