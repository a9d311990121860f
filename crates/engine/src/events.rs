//! A stored log entry → its wire [`Event`], serialized once.

use bytes::Bytes;
use herald_proto::EntryKind;
use herald_proto::chain::to_hex;
use herald_proto::frames::{EntryMeta, Event};
use herald_proto::model::Message;
use herald_proto::time::format_ms;
use herald_store::StoredEntry;

fn meta(e: &StoredEntry) -> EntryMeta {
    EntryMeta {
        seq: e.seq,
        hash: to_hex(&e.hash),
        prev_hash: to_hex(&e.prev_hash),
        ts: format_ms(e.ts_ms),
        author: e.author.clone(),
        // A tombstone has no salt; its content is then not sent either.
        salt: e.salt.as_ref().map(|s| to_hex(s)),
        content_hash: to_hex(&e.content_hash),
    }
}

/// The event of a log entry. `message` is the message view to send for a `message` entry when
/// the caller has it (a fresh append); otherwise it is rebuilt from the entry.
pub fn event_of(e: &StoredEntry, message: Option<&Message>) -> Event {
    let channel = e.channel_id.clone();
    let content = || e.content.clone().unwrap_or_default();
    match e.kind {
        EntryKind::Message => {
            let message = match message {
                Some(m) => Message { reactions: None, edited_at: None, ..m.clone() },
                None => Message {
                    id: e.extra.id.clone().unwrap_or_default(),
                    seq: e.seq,
                    author: e.author.clone(),
                    kind: e.extra.msg_type.clone().unwrap_or_else(|| "chat.text".to_owned()),
                    content: content(),
                    reply_to: e.extra.reply.clone().or_else(|| {
                        (!e.reference.is_empty()).then(|| herald_proto::model::ReplySnapshot {
                            id: e.reference.clone(),
                            author: String::new(),
                            content: None,
                            edited: false,
                        })
                    }),
                    client_id: e.extra.client_id.clone(),
                    ts: format_ms(e.ts_ms),
                    edited_at: None,
                    epoch: e.extra.epoch,
                    reactions: None,
                },
            };
            Event::Message { channel, meta: meta(e), message }
        }
        EntryKind::MessageEdited => Event::MessageEdited {
            channel,
            meta: meta(e),
            message_id: e.reference.clone(),
            content: content(),
            edited_at: format_ms(e.ts_ms),
            epoch: e.extra.epoch,
        },
        EntryKind::MessageDeleted => {
            Event::MessageDeleted { channel, meta: meta(e), message_id: e.reference.clone() }
        }
        EntryKind::Reaction => Event::Reaction {
            channel,
            meta: meta(e),
            reaction_id: e.extra.id.clone().unwrap_or_default(),
            message_id: e.reference.clone(),
            emoji: content(),
        },
        EntryKind::ReactionDeleted => Event::ReactionDeleted {
            channel,
            meta: meta(e),
            reaction_id: e.reference.clone(),
            message_id: e.extra.message_id.clone().unwrap_or_default(),
        },
        EntryKind::MemberJoined => Event::MemberJoined {
            channel,
            meta: meta(e),
            user: e.reference.clone(),
            name: e.extra.name.clone(),
            by: e.author.clone(),
        },
        EntryKind::MemberLeft => Event::MemberLeft {
            channel,
            meta: meta(e),
            user: e.reference.clone(),
            name: e.extra.name.clone(),
            by: e.author.clone(),
        },
        EntryKind::ChannelCreated => Event::ChannelCreated {
            channel,
            meta: meta(e),
            name: e.content.clone().filter(|n| !n.is_empty()).or_else(|| e.extra.name.clone()),
            title: e.extra.title.clone(),
        },
        EntryKind::KeyRotated => Event::KeyRotated {
            channel,
            meta: meta(e),
            content: content(),
            epoch: e.reference.parse().unwrap_or_default(),
            commit_hash: content(),
            reference: e.reference.clone(),
        },
    }
}

/// Serializes a frame once; the bytes are then shared by every recipient.
pub fn to_bytes<T: serde::Serialize>(frame: &T) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(v) => Bytes::from(v),
        // Serializing our own types cannot fail (no maps with non-string keys, no custom
        // serializers that error); if it ever does, send an internal error rather than panic.
        Err(e) => {
            tracing::error!(error = %e, "failed to serialize a frame");
            Bytes::from_static(br#"{"error":{"code":"internal","message":"internal error"}}"#)
        }
    }
}
