//! Row mappers shared by the writer and the readers. Columns are read with `try_get`, so a
//! malformed row becomes a `Backend` error rather than a panic.

use crate::db;
use herald_proto::EntryKind;
use herald_proto::chain::{Hash32, SALT_LEN};
use herald_proto::model::{Message, Policy, ReplySnapshot};
use herald_proto::time::format_ms;
/// The channel row and the `seq` conversions are the store's shared ones.
pub use herald_store::{ChannelRow, seq_from_db as to_u64, seq_to_db as to_i64};
use herald_store::{EntryExtra, Result, StoreError, StoredEntry};
use tokio_postgres::Row;

/// The columns [`channel_row`] reads, then the head.
pub const CHANNEL_COLS: &str =
    "id, app, name, title, encrypted, policy, created_by, created_ms, head_seq, head_hash";

/// A channel row and its head `(seq, hash)`.
pub fn channel_row(r: &Row) -> Result<(ChannelRow, (u64, Hash32))> {
    let policy: String = r.try_get(5).map_err(db)?;
    let row = ChannelRow {
        id: r.try_get(0).map_err(db)?,
        app: r.try_get(1).map_err(db)?,
        name: r.try_get(2).map_err(db)?,
        title: r.try_get(3).map_err(db)?,
        encrypted: r.try_get(4).map_err(db)?,
        // An unknown policy can only come from a newer schema; treat it as the stricter one.
        policy: Policy::parse(&policy).unwrap_or(Policy::Invite),
        created_by: r.try_get(6).map_err(db)?,
        created_ms: r.try_get(7).map_err(db)?,
    };
    let seq: i64 = r.try_get(8).map_err(db)?;
    let hash: Vec<u8> = r.try_get(9).map_err(db)?;
    Ok((row, (to_u64(seq), hash32(hash)?)))
}

pub fn hash32(v: Vec<u8>) -> Result<Hash32> {
    v.try_into().map_err(|_| StoreError::Backend("postgres: stored hash is not 32 bytes".into()))
}

/// The columns of a message with its reply target, for [`message_row`].
pub const MESSAGE_SELECT: &str = "SELECT m.id, m.seq, m.author, m.type, m.content, m.reply_to, \
     m.reply_author, m.client_id, m.ts_ms, m.edited_ms, r.content, r.edited_ms, m.epoch \
     FROM messages m LEFT JOIN messages r ON r.channel_id = m.channel_id AND r.id = m.reply_to";

pub fn message_row(r: &Row) -> Result<Message> {
    let reply_to: Option<String> = r.try_get(5).map_err(db)?;
    let reply_author: Option<String> = r.try_get(6).map_err(db)?;
    let edited_ms: Option<i64> = r.try_get(9).map_err(db)?;
    let target_content: Option<String> = r.try_get(10).map_err(db)?;
    let target_edited: Option<i64> = r.try_get(11).map_err(db)?;
    Ok(Message {
        id: r.try_get(0).map_err(db)?,
        seq: to_u64(r.try_get(1).map_err(db)?),
        author: r.try_get(2).map_err(db)?,
        kind: r.try_get(3).map_err(db)?,
        content: r.try_get(4).map_err(db)?,
        reply_to: reply_to.map(|id| ReplySnapshot {
            id,
            author: reply_author.unwrap_or_default(),
            content: target_content,
            edited: target_edited.is_some(),
        }),
        client_id: r.try_get(7).map_err(db)?,
        ts: format_ms(r.try_get(8).map_err(db)?),
        edited_at: edited_ms.map(format_ms),
        epoch: r.try_get::<_, Option<i64>>(12).map_err(db)?.map(to_u64),
        reactions: None,
    })
}

/// The stored columns of an entry, in insert order.
pub const ENTRY_COLS: &str = "channel_id, seq, kind, author, ref, ts_ms, content_hash, prev_hash, hash, \
     x_id, x_msg_type, x_client_id, x_name, x_title, x_message_id, x_reply_author, x_epoch";

/// Entries with their content (absent once erased) and the current state of the message a
/// `message` entry replies to, for [`entry_row`].
pub const ENTRY_SELECT: &str = "SELECT e.channel_id, e.seq, e.kind, e.author, e.ref, e.ts_ms, \
     c.content, c.salt, e.content_hash, e.prev_hash, e.hash, e.x_id, e.x_msg_type, e.x_client_id, \
     e.x_name, e.x_title, e.x_message_id, e.x_reply_author, r.content, r.edited_ms, e.x_epoch \
     FROM entries e LEFT JOIN entry_contents c ON c.channel_id = e.channel_id AND c.seq = e.seq \
     LEFT JOIN messages r ON e.kind = 'message' AND e.ref <> '' \
     AND r.channel_id = e.channel_id AND r.id = e.ref";

pub fn entry_row(r: &Row) -> Result<StoredEntry> {
    let kind: String = r.try_get(2).map_err(db)?;
    let reference: String = r.try_get(4).map_err(db)?;
    let reply = if kind == "message" && !reference.is_empty() {
        let author: Option<String> = r.try_get(17).map_err(db)?;
        let edited: Option<i64> = r.try_get(19).map_err(db)?;
        Some(ReplySnapshot {
            id: reference.clone(),
            author: author.unwrap_or_default(),
            content: r.try_get(18).map_err(db)?,
            edited: edited.is_some(),
        })
    } else {
        None
    };
    let kind = EntryKind::parse(&kind)
        .ok_or_else(|| StoreError::Backend(format!("postgres: unknown entry kind {kind:?}")))?;
    let salt: Option<Vec<u8>> = r.try_get(7).map_err(db)?;
    let salt = match salt {
        None => None,
        Some(s) => Some(
            <[u8; SALT_LEN]>::try_from(s)
                .map_err(|_| StoreError::Backend("postgres: stored salt is not 16 bytes".into()))?,
        ),
    };
    Ok(StoredEntry {
        channel_id: r.try_get(0).map_err(db)?,
        seq: to_u64(r.try_get(1).map_err(db)?),
        kind,
        author: r.try_get(3).map_err(db)?,
        reference,
        ts_ms: r.try_get(5).map_err(db)?,
        content: r.try_get(6).map_err(db)?,
        salt,
        content_hash: hash32(r.try_get(8).map_err(db)?)?,
        prev_hash: hash32(r.try_get(9).map_err(db)?)?,
        hash: hash32(r.try_get(10).map_err(db)?)?,
        extra: EntryExtra {
            id: r.try_get(11).map_err(db)?,
            msg_type: r.try_get(12).map_err(db)?,
            client_id: r.try_get(13).map_err(db)?,
            name: r.try_get(14).map_err(db)?,
            title: r.try_get(15).map_err(db)?,
            message_id: r.try_get(16).map_err(db)?,
            reply,
            epoch: r.try_get::<_, Option<i64>>(20).map_err(db)?.map(to_u64),
        },
    })
}
