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
        FreshSend { id, author, kind, content, client_id, ts_ms }
    }

    /// The facts of the `message` entry; `reply` is the snapshot of the replied-to message.
    pub fn extra(self, reply: Option<ReplySnapshot>) -> EntryExtra {
        EntryExtra {
            reply,
            id: Some(self.id.to_owned()),
            msg_type: Some(self.kind.to_owned()),
            client_id: self.client_id.map(str::to_owned),
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
            reactions: None,
        }
    }
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
