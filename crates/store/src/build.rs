//! The one place backends build the values every backend produces alike: what a fresh `Send`
//! produces (the `message` entry's [`EntryExtra`] and the [`Message`] the caller is answered
//! with, see [`FreshSend`]), the snapshot of a replied-to message ([`reply_snapshot`]) and the
//! answer to a `DeleteChannel` ([`channel_deleted`]). Every backend calls these instead of
//! spelling the structs out, so the backends' answers cannot drift apart.

use crate::{Applied, EntryExtra, Outcome};
use herald_proto::model::{Channel, Message, ReplySnapshot};

/// The parts of a `Send` that are not refused and not a repeat: what its entry and its
/// answer are built from.
#[derive(Debug, Clone, Copy)]
pub struct FreshSend<'a> {
    pub id: &'a str,
    pub author: &'a str,
    pub kind: &'a str,
    pub content: &'a str,
    pub client_id: Option<&'a str>,
    pub ts_ms: i64,
    /// Encrypted channels: the key epoch of the content.
    pub epoch: Option<u64>,
}

impl<'a> FreshSend<'a> {
    /// The send of message `id` by `author`, with its type, content and idempotency key.
    pub fn new(
        id: &'a str,
        author: &'a str,
        kind: &'a str,
        content: &'a str,
        client_id: Option<&'a str>,
        ts_ms: i64,
    ) -> Self {
        FreshSend { id, author, kind, content, client_id, ts_ms, epoch: None }
    }

    /// The same send, sealed under key epoch `epoch` (encrypted channels).
    pub fn with_epoch(self, epoch: Option<u64>) -> Self {
        FreshSend { epoch, ..self }
    }

    /// The facts of the `message` entry; `reply` is the snapshot of the replied-to message.
    pub fn extra(self, reply: Option<ReplySnapshot>) -> EntryExtra {
        EntryExtra {
            reply,
            id: Some(self.id.to_owned()),
            msg_type: Some(self.kind.to_owned()),
            client_id: self.client_id.map(str::to_owned),
            epoch: self.epoch,
            ..Default::default()
        }
    }

    /// The message as history reads it back once appended at `seq`: not edited, no
    /// reactions yet.
    pub fn message(self, seq: u64, reply: Option<ReplySnapshot>) -> Message {
        Message {
            id: self.id.to_owned(),
            seq,
            author: self.author.to_owned(),
            kind: self.kind.to_owned(),
            content: self.content.to_owned(),
            reply_to: reply,
            client_id: self.client_id.map(str::to_owned),
            ts: herald_proto::time::format_ms(self.ts_ms),
            edited_at: None,
            epoch: self.epoch,
            reactions: None,
        }
    }
}

/// The checks of a `Send` / `Edit` guard's epoch (§7) against a channel: `head` is the
/// channel's head epoch (`None` before its first commit). The one place every backend decides
/// between `bad_request` and `stale_epoch`.
pub fn check_epoch(encrypted: bool, want: Option<u64>, head: Option<u64>) -> crate::Result<()> {
    match (encrypted, want) {
        (false, None) => Ok(()),
        (false, Some(_)) => Err(crate::StoreError::Invalid("epoch is only for encrypted channels".into())),
        (true, None) => Err(crate::StoreError::Invalid(
            "a message of an encrypted channel must carry the head epoch".into(),
        )),
        (true, Some(e)) if head == Some(e) => Ok(()),
        (true, Some(_)) => Err(crate::StoreError::StaleEpoch),
    }
}

/// The compare-and-swap of a commit (§7) against the channel's head commit `(epoch,
/// commit_hash)`, if any.
pub fn check_commit(commit: &crate::keys::Commit, head: Option<(u64, &str)>) -> crate::Result<()> {
    let ok = match head {
        None => commit.epoch == 0 && commit.prev_commit_hash == crate::keys::ZERO_COMMIT_HASH,
        Some((epoch, hash)) => Some(commit.epoch) == epoch.checked_add(1) && commit.prev_commit_hash == hash,
    };
    if ok { Ok(()) } else { Err(crate::StoreError::StaleEpoch) }
}

/// What a reply shows of the message it replies to, as that message is now.
pub fn reply_snapshot(target: Message) -> ReplySnapshot {
    ReplySnapshot {
        id: target.id,
        author: target.author,
        content: Some(target.content),
        edited: target.edited_at.is_some(),
    }
}

/// The answer to a `DeleteChannel`: the channel as it was (`before`) and who was a member.
pub fn channel_deleted(app: String, before: Channel, members: Vec<String>) -> Applied {
    Applied { app, channel: Some(before), entries: Vec::new(), outcome: Outcome::ChannelDeleted { members } }
}
