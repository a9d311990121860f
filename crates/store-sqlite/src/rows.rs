//! Row mappers and small queries shared by the writer and the readers.

use crate::backend;
use herald_proto::EntryKind;
use herald_proto::chain::{Hash32, SALT_LEN};
use herald_proto::model::{Message, Policy, ReactionView, ReplySnapshot};
use herald_proto::time::format_ms;
/// The channel row and the `seq` conversions are the store's shared ones.
pub use herald_store::{ChannelRow, seq_from_db as to_u64, seq_to_db as to_i64};
use herald_store::{EntryExtra, Result, StoreError, StoredEntry};
use rusqlite::{Connection, OptionalExtension, Row, params};

pub const CHANNEL_COLS: &str = "id, app, name, title, encrypted, policy, created_by, created_ms";

pub fn channel_row(r: &Row<'_>) -> rusqlite::Result<ChannelRow> {
    let policy: String = r.get(5)?;
    Ok(ChannelRow {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        title: r.get(3)?,
        encrypted: r.get(4)?,
        // An unknown policy can only come from a newer schema; treat it as the stricter one.
        policy: Policy::parse(&policy).unwrap_or(Policy::Invite),
        created_by: r.get(6)?,
        created_ms: r.get(7)?,
    })
}

/// A channel of `app` by id.
pub fn channel_by_id(conn: &Connection, app: &str, id: &str) -> Result<Option<ChannelRow>> {
    conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = ?1 AND app = ?2"))
        .and_then(|mut s| s.query_row(params![id, app], channel_row).optional())
        .map_err(backend)
}

/// A channel of `app` by name.
pub fn channel_by_name(conn: &Connection, app: &str, name: &str) -> Result<Option<ChannelRow>> {
    conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM channels WHERE app = ?1 AND name = ?2"))
        .and_then(|mut s| s.query_row(params![app, name], channel_row).optional())
        .map_err(backend)
}

/// The newest `(seq, hash)` of a channel as stored; `(0, zero)` when it has none.
pub fn stored_head(conn: &Connection, channel_id: &str) -> Result<(u64, Hash32)> {
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, hash FROM entries WHERE channel_id = ?1 ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row(params![channel_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)?;
    match row {
        None => Ok((0, herald_proto::chain::ZERO_HASH)),
        Some((seq, hash)) => Ok((to_u64(seq), hash32(hash)?)),
    }
}

pub fn is_member(conn: &Connection, channel_id: &str, user: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM members WHERE channel_id = ?1 AND user_id = ?2")
        .and_then(|mut s| s.exists(params![channel_id, user]))
        .map_err(backend)
}

pub fn member_ids(conn: &Connection, channel_id: &str) -> Result<Vec<String>> {
    let mut s = conn
        .prepare_cached("SELECT user_id FROM members WHERE channel_id = ?1 ORDER BY user_id")
        .map_err(backend)?;
    let rows = s.query_map(params![channel_id], |r| r.get::<_, String>(0)).map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

pub fn hash32(v: Vec<u8>) -> Result<Hash32> {
    v.try_into().map_err(|_| StoreError::Backend("stored hash is not 32 bytes".into()))
}

/// The columns of a message with its reply target, for [`message_row`]. A message is its
/// `message` entry (`e`) with what edits changed (`m`); the replied message likewise (`re`,
/// `r`). `m` and `e` are joined on both `seq` and the id so that either can lead on its own
/// key: a lookup by id starts from `m`, a history page walks `e`.
pub const MESSAGE_SELECT: &str = "SELECT m.id, m.seq, e.author, e.x_msg_type, \
     COALESCE(m.content, e.content), NULLIF(e.ref, ''), e.x_reply_author, e.x_client_id, e.ts_ms, \
     m.edited_ms, COALESCE(r.content, re.content), r.edited_ms, COALESCE(m.epoch, e.x_epoch) \
     FROM messages m JOIN entries e ON e.channel_id = m.channel_id AND e.seq = m.seq \
       AND e.x_id = m.id \
     LEFT JOIN messages r ON r.channel_id = m.channel_id AND r.id = NULLIF(e.ref, '') \
     LEFT JOIN entries re ON re.channel_id = r.channel_id AND re.seq = r.seq";

pub fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let reply_to: Option<String> = r.get(5)?;
    let reply_author: Option<String> = r.get(6)?;
    let edited_ms: Option<i64> = r.get(9)?;
    let target_content: Option<String> = r.get(10)?;
    let target_edited: Option<i64> = r.get(11)?;
    Ok(Message {
        id: r.get(0)?,
        seq: to_u64(r.get(1)?),
        author: r.get(2)?,
        kind: r.get(3)?,
        content: r.get(4)?,
        reply_to: reply_to.map(|id| ReplySnapshot {
            id,
            author: reply_author.unwrap_or_default(),
            content: target_content,
            edited: target_edited.is_some(),
        }),
        client_id: r.get(7)?,
        ts: format_ms(r.get(8)?),
        edited_at: edited_ms.map(format_ms),
        epoch: r.get::<_, Option<i64>>(12)?.map(to_u64),
        reactions: None,
    })
}

/// One message of a channel as history shows it, without reactions.
pub fn message(conn: &Connection, channel_id: &str, id: &str) -> Result<Option<Message>> {
    conn.prepare_cached(&format!("{MESSAGE_SELECT} WHERE m.channel_id = ?1 AND m.id = ?2"))
        .and_then(|mut s| s.query_row(params![channel_id, id], message_row).optional())
        .map_err(backend)
}

pub fn reactions(conn: &Connection, channel_id: &str, message_id: &str) -> Result<Vec<ReactionView>> {
    let mut s = conn
        .prepare_cached(
            "SELECT id, emoji, user_id FROM reactions WHERE channel_id = ?1 AND message_id = ?2 \
             ORDER BY seq",
        )
        .map_err(backend)?;
    let rows = s
        .query_map(params![channel_id, message_id], |r| {
            Ok(ReactionView { reaction_id: r.get(0)?, emoji: r.get(1)?, user: r.get(2)? })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

/// The head commit `(epoch, commit_hash)` of a channel, if it has one.
pub fn head_commit(conn: &Connection, channel_id: &str) -> Result<Option<(u64, String)>> {
    conn.prepare_cached(
        "SELECT epoch, commit_hash FROM commits WHERE channel_id = ?1 ORDER BY epoch DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![channel_id], |r| Ok((to_u64(r.get(0)?), r.get::<_, String>(1)?))).optional()
    })
    .map_err(backend)
}

/// The stored columns of an entry, in insert order: a macro so that statements are
/// `concat!`ed at compile time.
macro_rules! entry_cols {
    () => {
        "channel_id, seq, kind, author, ref, ts_ms, content, salt, \
         content_hash, prev_hash, hash, x_id, x_msg_type, x_client_id, x_name, x_title, x_message_id, \
         x_reply_author, x_epoch"
    };
}
pub(crate) use entry_cols;

/// Entries with the current state of the message a `message` entry replies to, for
/// [`entry_row`].
pub const ENTRY_SELECT: &str = "SELECT e.channel_id, e.seq, e.kind, e.author, e.ref, e.ts_ms, \
     e.content, e.salt, e.content_hash, e.prev_hash, e.hash, e.x_id, e.x_msg_type, e.x_client_id, \
     e.x_name, e.x_title, e.x_message_id, e.x_reply_author, COALESCE(r.content, re.content), \
     r.edited_ms, e.x_epoch \
     FROM entries e LEFT JOIN messages r ON e.kind = 'message' AND e.ref <> '' \
     AND r.channel_id = e.channel_id AND r.id = e.ref \
     LEFT JOIN entries re ON re.channel_id = r.channel_id AND re.seq = r.seq";

/// Raw columns of an entry; converted by [`RawEntry::into_entry`] so that malformed bytes
/// become a `Backend` error rather than a panic.
pub struct RawEntry {
    channel_id: String,
    seq: i64,
    kind: String,
    author: String,
    reference: String,
    ts_ms: i64,
    content: Option<String>,
    salt: Option<Vec<u8>>,
    content_hash: Vec<u8>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    extra: EntryExtra,
}

pub fn entry_row(r: &Row<'_>) -> rusqlite::Result<RawEntry> {
    let kind: String = r.get(2)?;
    let reference: String = r.get(4)?;
    let reply = if kind == "message" && !reference.is_empty() {
        let author: Option<String> = r.get(17)?;
        let edited: Option<i64> = r.get(19)?;
        Some(ReplySnapshot {
            id: reference.clone(),
            author: author.unwrap_or_default(),
            content: r.get(18)?,
            edited: edited.is_some(),
        })
    } else {
        None
    };
    Ok(RawEntry {
        channel_id: r.get(0)?,
        seq: r.get(1)?,
        kind,
        author: r.get(3)?,
        reference,
        ts_ms: r.get(5)?,
        content: r.get(6)?,
        salt: r.get(7)?,
        content_hash: r.get(8)?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
        extra: EntryExtra {
            id: r.get(11)?,
            msg_type: r.get(12)?,
            client_id: r.get(13)?,
            name: r.get(14)?,
            title: r.get(15)?,
            message_id: r.get(16)?,
            reply,
            epoch: r.get::<_, Option<i64>>(20)?.map(to_u64),
        },
    })
}

impl RawEntry {
    pub fn into_entry(self) -> Result<StoredEntry> {
        let kind = EntryKind::parse(&self.kind)
            .ok_or_else(|| StoreError::Backend(format!("unknown entry kind {:?}", self.kind)))?;
        let salt = match self.salt {
            None => None,
            Some(s) => Some(
                <[u8; SALT_LEN]>::try_from(s)
                    .map_err(|_| StoreError::Backend("stored salt is not 16 bytes".into()))?,
            ),
        };
        Ok(StoredEntry {
            channel_id: self.channel_id,
            seq: to_u64(self.seq),
            kind,
            author: self.author,
            reference: self.reference,
            ts_ms: self.ts_ms,
            content: self.content,
            salt,
            content_hash: hash32(self.content_hash)?,
            prev_hash: hash32(self.prev_hash)?,
            hash: hash32(self.hash)?,
            extra: self.extra,
        })
    }
}
