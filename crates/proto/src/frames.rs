//! WebSocket frames (PROTOCOL.md §4): requests with their `op`, replies, and pushed events;
//! plus the binary frame layout of §1.
//!
//! Parsing is pure: [`parse_request`] turns the text of a frame into a typed request or into
//! the error to answer with, echoing the request `id` whenever it can be recovered.

use crate::chain::{EntryKind, EntryRef};
use crate::error::{ErrorCode, ErrorDetail};
use crate::model::{Channel, ChannelSummary, DirectoryEntry, LogEntry, Member, Message, UserInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Query of `history` / `GET /v1/channels/{id}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct HistoryQuery {
    /// Page size, 1 to the server's `--history-page-max` (default 500); 50 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<u32>,
    /// Messages with a `seq` below this one, newest first. Not together with `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Messages with a `seq` above this one, oldest first. Not together with `before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Only messages at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub from: Option<String>,
    /// Only messages at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub to: Option<String>,
}

/// Body of `channel.create` / `POST /v1/channels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateChannel {
    /// A unique name within the app; a channel may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::names::ChannelName>))]
    pub name: Option<String>,
    /// Free text, at most 256 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{0,256}$", max_length = 256)
    )]
    pub title: Option<String>,
    /// Users to add besides the creator, at most 1,000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::names::UserId>, max_items = 1000))]
    pub members: Vec<String>,
    /// End-to-end encrypted (§7): messages then carry an `epoch`.
    #[serde(default)]
    pub encrypted: bool,
    /// Who may join by themselves; `open` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::model::Policy>,
}

/// Body of `message.send` / `POST /v1/channels/{id}/messages` (without `channel`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendMessage {
    /// Opaque text, at most `--max-content-bytes` (64 KiB) of UTF-8.
    pub content: String,
    /// 1-64 printable ASCII characters without spaces; `chat.text` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[!-~]{1,64}$", min_length = 1, max_length = 64))]
    pub kind: Option<String>,
    /// The id of the message this one replies to, in the same channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    )]
    pub reply_to: Option<String>,
    /// An idempotency key: a second send with it returns the first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::names::ClientId>))]
    pub client_id: Option<String>,
    /// The author to post as: only for tokens with the `server` grant (a trusted backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::names::UserId>))]
    pub author: Option<String>,
    /// Encrypted channels (§7): the head key epoch the content is sealed under (required
    /// there, refused in a plain channel).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::e2ee::lenient_opt_u64"
    )]
    pub epoch: Option<u64>,
}

/// One copy of a `dm.send`: the ciphertext for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmTo {
    pub user: String,
    pub device_id: String,
    pub body: String,
}

/// `ok` of `dm.send`: one id per `to` entry, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmSendOk {
    pub ids: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A request: the `op` and its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Request {
    #[serde(rename = "connect")]
    Connect {
        token: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        resume: BTreeMap<String, u64>,
    },
    /// Replaces the connection's token before it expires (Herald addition, docs/protocol.md
    /// §A): the new token must name the same `app` and `sub`.
    #[serde(rename = "auth.refresh")]
    AuthRefresh { token: String },
    #[serde(rename = "ping")]
    Ping {},
    #[serde(rename = "subscribe")]
    Subscribe { subject: String },
    #[serde(rename = "unsubscribe")]
    Unsubscribe { subject: String },
    #[serde(rename = "publish")]
    Publish { subject: String, data: Value },
    #[serde(rename = "channel.create")]
    ChannelCreate(CreateChannel),
    /// `auth`: for a `private-` channel (§9), the app backend's signature of
    /// `conn_id ":" channel_name`; ignored by no other channel (a non-private channel with
    /// `auth` is joined by its own rules).
    #[serde(rename = "channel.join")]
    ChannelJoin {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
    },
    #[serde(rename = "channel.leave")]
    ChannelLeave { channel: String },
    #[serde(rename = "channel.add_member")]
    ChannelAddMember { channel: String, user: String },
    #[serde(rename = "channel.remove_member")]
    ChannelRemoveMember { channel: String, user: String },
    /// A moderator removes `user` (docs/protocol.md §K): `member_left` with `by`; the user may
    /// join again (unlike a ban).
    #[serde(rename = "channel.kick")]
    ChannelKick { channel: String, user: String },
    /// A moderator bans `user` until `until` (RFC 3339; absent: for good): removed if a member,
    /// and refused by every join or add until then (docs/protocol.md §K).
    #[serde(rename = "channel.ban")]
    ChannelBan {
        channel: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Lifts a ban.
    #[serde(rename = "channel.unban")]
    ChannelUnban { channel: String, user: String },
    #[serde(rename = "channel.list")]
    ChannelList {},
    #[serde(rename = "channel.directory")]
    ChannelDirectory {},
    #[serde(rename = "channel.delete")]
    ChannelDelete { channel: String },
    #[serde(rename = "message.send")]
    MessageSend {
        channel: String,
        #[serde(flatten)]
        message: SendMessage,
    },
    #[serde(rename = "message.edit")]
    MessageEdit {
        channel: String,
        message_id: String,
        content: String,
        /// Encrypted channels (§7): the head epoch the new content is sealed under.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    #[serde(rename = "message.delete")]
    MessageDelete { channel: String, message_id: String },
    #[serde(rename = "reaction.add")]
    ReactionAdd { channel: String, message_id: String, emoji: String },
    #[serde(rename = "reaction.remove")]
    ReactionRemove { channel: String, reaction_id: String },
    #[serde(rename = "read")]
    Read { channel: String, message_id: String },
    #[serde(rename = "typing")]
    Typing {
        channel: String,
        #[serde(default = "yes")]
        is_typing: bool,
    },
    #[serde(rename = "ephemeral")]
    Ephemeral { channel: String, subject: String, data: Value },
    #[serde(rename = "history")]
    History {
        channel: String,
        #[serde(flatten)]
        query: HistoryQuery,
    },
    /// A direct message to devices (§7): one ciphertext per device.
    #[serde(rename = "dm.send")]
    DmSend {
        to: Vec<DmTo>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Erases entries of the connection's device inbox (§7).
    #[serde(rename = "dm.ack")]
    DmAck { ids: Vec<String> },
}

impl Request {
    /// The op name as it appears on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Connect { .. } => "connect",
            Request::AuthRefresh { .. } => "auth.refresh",
            Request::Ping {} => "ping",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish { .. } => "publish",
            Request::ChannelCreate(_) => "channel.create",
            Request::ChannelJoin { .. } => "channel.join",
            Request::ChannelLeave { .. } => "channel.leave",
            Request::ChannelAddMember { .. } => "channel.add_member",
            Request::ChannelRemoveMember { .. } => "channel.remove_member",
            Request::ChannelKick { .. } => "channel.kick",
            Request::ChannelBan { .. } => "channel.ban",
            Request::ChannelUnban { .. } => "channel.unban",
            Request::ChannelList {} => "channel.list",
            Request::ChannelDirectory {} => "channel.directory",
            Request::ChannelDelete { .. } => "channel.delete",
            Request::MessageSend { .. } => "message.send",
            Request::MessageEdit { .. } => "message.edit",
            Request::MessageDelete { .. } => "message.delete",
            Request::ReactionAdd { .. } => "reaction.add",
            Request::ReactionRemove { .. } => "reaction.remove",
            Request::Read { .. } => "read",
            Request::Typing { .. } => "typing",
            Request::Ephemeral { .. } => "ephemeral",
            Request::History { .. } => "history",
            Request::DmSend { .. } => "dm.send",
            Request::DmAck { .. } => "dm.ack",
        }
    }
}

/// A request frame: `{"id": …, "op": …, …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    #[serde(default)]
    pub id: Value,
    #[serde(flatten)]
    pub request: Request,
}

/// A frame that could not be turned into a request, with the `id` to answer to.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    pub id: Value,
    pub error: ErrorDetail,
}

/// Parses one text frame. On failure the returned `id` is the frame's own when the frame was a
/// JSON object with an `id`, else `null`.
pub fn parse_request(text: &str) -> Result<RequestFrame, BadFrame> {
    match serde_json::from_str::<RequestFrame>(text) {
        Ok(f) => Ok(f),
        Err(e) => {
            #[derive(Deserialize)]
            struct IdOnly {
                #[serde(default)]
                id: Value,
                #[serde(default)]
                op: Option<Value>,
            }
            let (id, message) = match serde_json::from_str::<IdOnly>(text) {
                Ok(IdOnly { id, op: None }) => (id, "missing field `op`".to_owned()),
                Ok(IdOnly { id, op: Some(_) }) => (id, clean_serde_message(&e.to_string())),
                Err(_) => (
                    Value::Null,
                    format!("frame is not a JSON object: {}", clean_serde_message(&e.to_string())),
                ),
            };
            Err(BadFrame {
                id,
                error: ErrorDetail { code: ErrorCode::BadRequest, message, retry_after_ms: None },
            })
        }
    }
}

/// Serde's messages end with " at line 1 column 42"; keep them, they help, but cap the length
/// so an attacker's frame is not echoed back at length.
fn clean_serde_message(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A reply to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `ok` of `connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectOk {
    pub conn_id: String,
    pub user: UserInfo,
}

/// `ok` of `auth.refresh`: when the connection's new token expires (RFC 3339, ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshOk {
    pub expires_at: String,
}

/// `ok` of `channel.create` / `channel.join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelOk {
    pub channel: Channel,
}

/// `ok` of `message.send` / `message.edit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageOk {
    pub message: Message,
}

/// `ok` of `reaction.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionOk {
    pub reaction_id: String,
}

/// `ok` of `channel.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelListOk {
    pub channels: Vec<ChannelSummary>,
}

/// `ok` of `channel.directory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryOk {
    pub channels: Vec<DirectoryEntry>,
}

/// `ok` of `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// Answer of `GET /v1/channels/{id_or_name}`: the channel and its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelInfo {
    pub channel: Channel,
    pub members: Vec<Member>,
}

/// Answer of `PUT /v1/channels/{id}/blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobStored {
    /// Lowercase hex BLAKE3 of the bytes.
    pub blob_id: String,
    /// Length of the blob in bytes.
    pub size: u64,
}

/// An `ok` with nothing in it: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmptyOk {}

/// Answer of `GET /v1/channels/{id}/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub has_more: bool,
}

/// The chain fields of an event that is a log entry.
///
/// On the wire (docs/protocol.md §B) an event carries `seq`, `hash`, `prev_hash`, `ts`,
/// `author` and `salt`, and `content_hash` only without a salt (a tombstone, whose salt and
/// content are erased): with a salt it is `BLAKE3(salt ‖ content)`, which a receiver computes
/// ([`Event::complete`], which [`parse_server_frame`] calls) and then checks through `hash`.
/// Deserializing accepts the full form too (`content_hash` present, checked as before) and an
/// event without `hash` (computed then; the link to the next entry still checks it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EntryMeta {
    pub seq: u64,
    /// Sent; computed by [`Event::complete`] if a sender left it out.
    #[serde(default)]
    pub hash: String,
    pub prev_hash: String,
    pub ts: String,
    pub author: String,
    #[serde(default)]
    pub salt: Option<String>,
    /// Serialized only without `salt`; empty until computed otherwise.
    #[serde(default)]
    pub content_hash: String,
}

impl Serialize for EntryMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("EntryMeta", 6)?;
        m.serialize_field("seq", &self.seq)?;
        m.serialize_field("hash", &self.hash)?;
        m.serialize_field("prev_hash", &self.prev_hash)?;
        m.serialize_field("ts", &self.ts)?;
        m.serialize_field("author", &self.author)?;
        match &self.salt {
            Some(salt) => m.serialize_field("salt", salt)?,
            None => m.serialize_field("content_hash", &self.content_hash)?,
        }
        m.end()
    }
}

/// The `message` of a `message` event on the wire: the message view without the `seq`,
/// `author` and `ts` that the event carries as its entry's (docs/protocol.md §B).
mod event_message {
    use crate::model::{Message, ReplySnapshot};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Out<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to: Option<&'a ReplySnapshot>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    }

    pub fn serialize<S: Serializer>(m: &Message, s: S) -> Result<S::Ok, S::Error> {
        Out {
            id: &m.id,
            kind: &m.kind,
            content: &m.content,
            reply_to: m.reply_to.as_ref(),
            client_id: m.client_id.as_deref(),
            epoch: m.epoch,
        }
        .serialize(s)
    }

    /// The full view is accepted too; what is left out stays empty (`seq` 0) until
    /// [`super::Event::complete`] copies it from the entry.
    #[derive(Deserialize)]
    struct In {
        id: String,
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        author: String,
        #[serde(rename = "type")]
        kind: String,
        content: String,
        #[serde(default)]
        reply_to: Option<ReplySnapshot>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        ts: String,
        #[serde(default)]
        edited_at: Option<String>,
        #[serde(default)]
        epoch: Option<u64>,
        #[serde(default)]
        reactions: Option<Vec<crate::model::ReactionView>>,
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Message, D::Error> {
        let m = In::deserialize(d)?;
        Ok(Message {
            id: m.id,
            seq: m.seq,
            author: m.author,
            kind: m.kind,
            content: m.content,
            reply_to: m.reply_to,
            client_id: m.client_id,
            ts: m.ts,
            edited_at: m.edited_at,
            epoch: m.epoch,
            reactions: m.reactions,
        })
    }
}

/// A server push.
// `Message` is the common case and the largest; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Message {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        #[serde(with = "event_message")]
        message: Message,
    },
    MessageEdited {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        message_id: String,
        content: String,
        edited_at: String,
        /// Encrypted channels (§7): the epoch the new content is sealed under.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    MessageDeleted {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        message_id: String,
        /// Who deleted it: the author, or a `channels:admin` moderator (docs/protocol.md §K).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Reaction {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        reaction_id: String,
        message_id: String,
        emoji: String,
    },
    ReactionDeleted {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        reaction_id: String,
        message_id: String,
    },
    MemberJoined {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        by: String,
    },
    MemberLeft {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        by: String,
    },
    ChannelCreated {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        title: Option<String>,
    },
    KeyRotated {
        channel: String,
        #[serde(flatten)]
        meta: EntryMeta,
        /// The entry's content: the commit hash (hex).
        #[serde(default)]
        content: String,
        /// The new epoch (§7); the entry's `ref` is it in decimal.
        #[serde(default)]
        epoch: u64,
        /// The commit's hash, as in `content`.
        #[serde(default)]
        commit_hash: String,
        /// The entry's `ref`: the epoch as a decimal string.
        #[serde(rename = "ref", default)]
        reference: String,
    },
    /// A direct message to one device (§7), from its inbox or live.
    Dm {
        id: String,
        from: String,
        from_device: String,
        body: String,
        ts: String,
    },
    /// To keeper connections (§7): a member of an encrypted channel needs epoch keys for
    /// these devices.
    KeysNeeded {
        channel: String,
        user: String,
        devices: Vec<String>,
    },
    ChannelDeleted {
        channel: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        title: Option<String>,
    },
    MessageRead {
        channel: String,
        user: String,
        message_id: String,
    },
    Typing {
        channel: String,
        user: String,
        is_typing: bool,
    },
    Ephemeral {
        channel: String,
        from: String,
        subject: String,
        data: Value,
    },
    Publication {
        subject: String,
        from: String,
        data: Value,
    },
    ResumeTruncated {
        channel: String,
        from_seq: u64,
    },
}

/// `Some(meta)` of an event that is a log entry (by reference or mutably, as `$event` is),
/// `None` otherwise: the one list of the log-entry variants.
macro_rules! log_entry_meta {
    ($event:expr) => {
        match $event {
            Event::Message { meta, .. }
            | Event::MessageEdited { meta, .. }
            | Event::MessageDeleted { meta, .. }
            | Event::Reaction { meta, .. }
            | Event::ReactionDeleted { meta, .. }
            | Event::MemberJoined { meta, .. }
            | Event::MemberLeft { meta, .. }
            | Event::ChannelCreated { meta, .. }
            | Event::KeyRotated { meta, .. } => Some(meta),
            _ => None,
        }
    };
}

impl Event {
    /// The channel this event is about, if any.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Event::Message { channel, .. }
            | Event::MessageEdited { channel, .. }
            | Event::MessageDeleted { channel, .. }
            | Event::Reaction { channel, .. }
            | Event::ReactionDeleted { channel, .. }
            | Event::MemberJoined { channel, .. }
            | Event::MemberLeft { channel, .. }
            | Event::ChannelCreated { channel, .. }
            | Event::KeyRotated { channel, .. }
            | Event::ChannelDeleted { channel, .. }
            | Event::MessageRead { channel, .. }
            | Event::Typing { channel, .. }
            | Event::Ephemeral { channel, .. }
            | Event::ResumeTruncated { channel, .. }
            | Event::KeysNeeded { channel, .. } => Some(channel),
            Event::Publication { .. } | Event::Dm { .. } => None,
        }
    }

    /// The chain fields, for events that are log entries.
    pub fn meta(&self) -> Option<&EntryMeta> {
        log_entry_meta!(self)
    }

    fn meta_mut(&mut self) -> Option<&mut EntryMeta> {
        log_entry_meta!(self)
    }

    /// Fills in what the wire leaves out of a log event (docs/protocol.md §B): the message
    /// view's `seq`, `author` and `ts` (the entry's), `content_hash` from `salt` and the
    /// content, and `hash` from the event's fields. Fields already there are kept, so a full
    /// event is checked against them by the verifier as before; an event that cannot be
    /// completed (no salt and no `content_hash`, malformed hex or time) keeps them empty, which
    /// the verifier reports as malformed.
    pub fn complete(&mut self) {
        if let Event::Message { meta, message, .. } = self {
            if message.seq == 0 {
                message.seq = meta.seq;
            }
            if message.author.is_empty() {
                message.author.clone_from(&meta.author);
            }
            if message.ts.is_empty() {
                message.ts.clone_from(&meta.ts);
            }
        }
        let Some(meta) = self.meta() else { return };
        if !meta.hash.is_empty() && !meta.content_hash.is_empty() {
            return;
        }
        let Some((content_hash, hash)) = self.entry_ref().and_then(|e| crate::chain::complete_entry(&e))
        else {
            return;
        };
        if let Some(meta) = self.meta_mut() {
            if meta.content_hash.is_empty() {
                meta.content_hash = crate::chain::to_hex(&content_hash);
            }
            if meta.hash.is_empty() {
                meta.hash = crate::chain::to_hex(&hash);
            }
        }
    }

    /// The event as JSON with every field, those the WebSocket leaves out included
    /// (`content_hash`, the message view's `seq`, `author`, `ts`): the `data` of a webhook
    /// body, whose receiver does not follow the chain.
    pub fn to_full_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let (Some(meta), Some(obj)) = (self.meta(), v.as_object_mut()) {
            obj.insert("content_hash".into(), meta.content_hash.clone().into());
            if let Event::Message { message, .. } = self {
                obj.insert("message".into(), serde_json::to_value(message).unwrap_or(Value::Null));
            }
        }
        v
    }

    /// The event as a log entry for the chain verifier, or `None` if it is not a log entry (or
    /// its timestamp is unreadable, which the verifier's caller treats as a broken entry).
    pub fn entry_ref(&self) -> Option<EntryRef<'_>> {
        let meta = self.meta()?;
        let (channel, kind, reference, content): (&str, EntryKind, &str, &str) = match self {
            Event::Message { channel, message, .. } => (
                channel,
                EntryKind::Message,
                message.reply_to.as_ref().map_or("", |r| r.id.as_str()),
                &message.content,
            ),
            Event::MessageEdited { channel, message_id, content, .. } => {
                (channel, EntryKind::MessageEdited, message_id, content)
            }
            Event::MessageDeleted { channel, message_id, .. } => {
                (channel, EntryKind::MessageDeleted, message_id, "")
            }
            Event::Reaction { channel, message_id, emoji, .. } => {
                (channel, EntryKind::Reaction, message_id, emoji)
            }
            Event::ReactionDeleted { channel, reaction_id, .. } => {
                (channel, EntryKind::ReactionDeleted, reaction_id, "")
            }
            Event::MemberJoined { channel, user, .. } => (channel, EntryKind::MemberJoined, user, ""),
            Event::MemberLeft { channel, user, .. } => (channel, EntryKind::MemberLeft, user, ""),
            Event::ChannelCreated { channel, name, .. } => {
                (channel, EntryKind::ChannelCreated, "", name.as_deref().unwrap_or(""))
            }
            Event::KeyRotated { channel, content, reference, .. } => {
                (channel, EntryKind::KeyRotated, reference.as_str(), content)
            }
            _ => return None,
        };
        Some(EntryRef {
            channel_id: channel,
            seq: meta.seq,
            kind,
            author: &meta.author,
            reference,
            ts_ms: crate::time::parse_ms(&meta.ts)?,
            content: meta.salt.as_ref().map(|_| content),
            salt: meta.salt.as_deref(),
            content_hash: &meta.content_hash,
            prev_hash: &meta.prev_hash,
            hash: &meta.hash,
        })
    }
}

/// A frame received by a client: a reply or an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Reply(Reply),
    Event(Box<Event>),
}

/// Parses a frame a client received.
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    let v: Value = serde_json::from_str(text)?;
    if v.get("event").is_some() {
        let mut event: Event = serde_json::from_value(v)?;
        event.complete();
        Ok(ServerFrame::Event(Box::new(event)))
    } else {
        Ok(ServerFrame::Reply(serde_json::from_value(v)?))
    }
}

/// Error of [`decode_binary`] and [`parse_binary_frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryFrameError {
    #[error("binary frame shorter than its 4-byte header length")]
    Short,
    #[error("binary frame header length {0} exceeds the frame")]
    HeaderOverrun(u32),
    /// The header bytes are not JSON (or not UTF-8); the text is serde's, capped.
    #[error("binary frame header is not JSON: {0}")]
    HeaderNotJson(String),
    #[error("binary frame header is not a JSON object")]
    HeaderNotObject,
}

/// The JSON header of a binary frame: for a request, the request object itself
/// (`{"id", "op", …}`), whose bytes follow it.
pub type BinaryHeader = serde_json::Map<String, Value>;

/// Builds a binary frame: `u32be(header length) ‖ header JSON ‖ bytes`.
pub fn encode_binary(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Splits a binary frame into its JSON header and its bytes.
pub fn decode_binary(frame: &[u8]) -> Result<(&[u8], &[u8]), BinaryFrameError> {
    let len_bytes: [u8; 4] = frame.get(..4).and_then(|b| b.try_into().ok()).ok_or(BinaryFrameError::Short)?;
    let len = u32::from_be_bytes(len_bytes);
    let end = 4usize.checked_add(len as usize).ok_or(BinaryFrameError::HeaderOverrun(len))?;
    if end > frame.len() {
        return Err(BinaryFrameError::HeaderOverrun(len));
    }
    Ok((&frame[4..end], &frame[end..]))
}

/// Parses a binary frame (§1): `u32be(header length) ‖ header JSON ‖ bytes`, where the header
/// must be a JSON object. Returns the header and the bytes after it (borrowed, not copied).
///
/// Pure and total: any input gives `Ok` or an error, never a panic, and the length prefix is
/// checked against the frame before anything is read, so a forged length allocates nothing.
pub fn parse_binary_frame(frame: &[u8]) -> Result<(BinaryHeader, &[u8]), BinaryFrameError> {
    let (header, bytes) = decode_binary(frame)?;
    match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(map)) => Ok((map, bytes)),
        Ok(_) => Err(BinaryFrameError::HeaderNotObject),
        Err(e) => Err(BinaryFrameError::HeaderNotJson(clean_serde_message(&e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_requests_and_echoes_ids_on_errors() {
        let f = parse_request(r#"{"id":1,"op":"message.send","channel":"c","content":"hi","client_id":"k"}"#)
            .unwrap();
        assert_eq!(f.id, Value::from(1));
        match f.request {
            Request::MessageSend { channel, message } => {
                assert_eq!(channel, "c");
                assert_eq!(message.content, "hi");
                assert_eq!(message.client_id.as_deref(), Some("k"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = parse_request(r#"{"id":7,"op":"nope"}"#).unwrap_err();
        assert_eq!(e.id, Value::from(7));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = parse_request(r#"{"id":8,"op":"message.send","channel":3,"content":"x"}"#).unwrap_err();
        assert_eq!(e.id, Value::from(8));
        let e = parse_request("not json").unwrap_err();
        assert_eq!(e.id, Value::Null);
        let e = parse_request(r#"{"id":9}"#).unwrap_err();
        assert!(e.error.message.contains("op"));
        let f = parse_request(r#"{"id":2,"op":"typing","channel":"c"}"#).unwrap();
        assert_eq!(f.request, Request::Typing { channel: "c".into(), is_typing: true });
        let f = parse_request(r#"{"id":3,"op":"ping"}"#).unwrap();
        assert_eq!(f.request, Request::Ping {});
    }

    /// A `message` event as the server builds it: every field filled, hashes computed.
    fn full_message_event(content: &str, salt: Option<[u8; 16]>) -> Event {
        use crate::chain::{EntryFields, content_hash, entry_hash, to_hex};
        let (channel, ts) = ("0193b2c4-7f1e-7000-8000-000000000001", "2026-12-07T01:14:06.123Z");
        let ch = match salt {
            Some(s) => content_hash(&s, content),
            None => [7u8; 32],
        };
        let prev = [9u8; 32];
        let fields = EntryFields {
            seq: 12,
            kind: EntryKind::Message,
            channel_id: channel,
            author: "ada",
            reference: "",
            ts_ms: crate::time::parse_ms(ts).unwrap(),
            content_hash: &ch,
        };
        let meta = EntryMeta {
            seq: 12,
            hash: to_hex(&entry_hash(&prev, &fields)),
            prev_hash: to_hex(&prev),
            ts: ts.into(),
            author: "ada".into(),
            salt: salt.map(|s| to_hex(&s)),
            content_hash: to_hex(&ch),
        };
        let message = Message {
            id: "0193b2c4-7f1e-7000-8000-0000000000aa".into(),
            seq: 12,
            author: "ada".into(),
            kind: "chat.text".into(),
            content: if salt.is_some() { content.into() } else { String::new() },
            reply_to: None,
            client_id: Some("c-1".into()),
            ts: ts.into(),
            edited_at: None,
            epoch: None,
            reactions: None,
        };
        Event::Message { channel: channel.into(), meta, message }
    }

    /// docs/protocol.md §B: the wire leaves out the `content_hash` of an entry with a salt and
    /// the message view's `seq`, `author`, `ts`; a client's parse puts them back, equal to the
    /// server's.
    #[test]
    fn message_event_is_compact_on_the_wire_and_completes_on_parse() {
        let full = full_message_event(r#"{"t":1,"p":"xxxxxxxx"}"#, Some([3; 16]));
        let wire = serde_json::to_string(&full).unwrap();
        let v: Value = serde_json::from_str(&wire).unwrap();
        assert!(v.get("content_hash").is_none() && v["hash"] == full.meta().unwrap().hash, "{wire}");
        for absent in ["seq", "author", "ts"] {
            assert!(v["message"].get(absent).is_none(), "{wire}");
        }
        assert_eq!(v["message"]["client_id"], "c-1");
        match parse_server_frame(&wire).unwrap() {
            ServerFrame::Event(e) => assert_eq!(*e, full),
            other => panic!("unexpected {other:?}"),
        }
        // The full form (an older server's, or a webhook's `data`) parses to the same event.
        let complete = full.to_full_json();
        assert!(complete["hash"].is_string() && complete["message"]["seq"] == 12);
        match parse_server_frame(&complete.to_string()).unwrap() {
            ServerFrame::Event(e) => assert_eq!(*e, full),
            other => panic!("unexpected {other:?}"),
        }
        let saved = serde_json::to_string(&full.to_full_json()).unwrap().len() - wire.len();
        assert!(saved > 130, "only {saved} bytes saved");
    }

    /// A tombstone has no salt: its `content_hash` is on the wire, and the hash completes
    /// through it.
    #[test]
    fn tombstone_event_carries_its_content_hash() {
        let full = full_message_event("", None);
        let wire = serde_json::to_string(&full).unwrap();
        let v: Value = serde_json::from_str(&wire).unwrap();
        assert!(v.get("salt").is_none() && v["content_hash"].is_string(), "{wire}");
        match parse_server_frame(&wire).unwrap() {
            ServerFrame::Event(e) => assert_eq!(*e, full),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A changed content changes the computed `content_hash`, so the entry no longer matches
    /// its `hash` (refused at once, as before); without `hash` the computed one differs, so the
    /// next entry's `prev_hash` would not link; neither salt nor `content_hash` leaves the
    /// hashes empty (malformed).
    #[test]
    fn completed_hashes_follow_the_fields() {
        use crate::chain::{ChainError, verify_entry};
        let full = full_message_event("original", Some([5; 16]));
        let wire = serde_json::to_string(&full).unwrap();
        let tampered = wire.replace("original", "tampered");
        let ServerFrame::Event(c) = parse_server_frame(&tampered).unwrap() else { panic!("not an event") };
        let e = c.entry_ref().unwrap();
        assert!(matches!(verify_entry(&e), Err(ChainError::HashMismatch { .. })), "{:?}", verify_entry(&e));

        let mut v: Value = serde_json::from_str(&tampered).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        let ServerFrame::Event(d) = parse_server_frame(&v.to_string()).unwrap() else {
            panic!("not an event")
        };
        assert_ne!(d.meta().unwrap().hash, full.meta().unwrap().hash);
        assert!(verify_entry(&d.entry_ref().unwrap()).is_ok());

        let mut v: Value = serde_json::from_str(&wire).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        v.as_object_mut().unwrap().remove("salt");
        let ServerFrame::Event(d) = parse_server_frame(&v.to_string()).unwrap() else {
            panic!("not an event")
        };
        assert!(d.meta().unwrap().hash.is_empty());
        assert!(matches!(verify_entry(&d.entry_ref().unwrap()), Err(ChainError::Malformed { .. })));
    }

    #[test]
    fn events_round_trip() {
        let ev = Event::Typing { channel: "c".into(), user: "ada".into(), is_typing: true };
        let s = serde_json::to_string(&ev).unwrap();
        assert_eq!(s, r#"{"event":"typing","channel":"c","user":"ada","is_typing":true}"#);
        match parse_server_frame(&s).unwrap() {
            ServerFrame::Event(e) => assert_eq!(*e, ev),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn binary_frames() {
        let f = encode_binary(br#"{"a":1}"#, b"xyz");
        assert_eq!(decode_binary(&f).unwrap(), (&br#"{"a":1}"#[..], &b"xyz"[..]));
        assert_eq!(decode_binary(&[0, 0]), Err(BinaryFrameError::Short));
        assert_eq!(decode_binary(&[0, 0, 0, 9, 1]), Err(BinaryFrameError::HeaderOverrun(9)));
    }

    #[test]
    fn parse_binary_frame_splits_header_object_and_bytes() {
        let f = encode_binary(br#"{"id":4,"op":"room.send","to":"p1"}"#, b"\x00\xffbytes");
        let (header, bytes) = parse_binary_frame(&f).unwrap();
        assert_eq!(header.get("op"), Some(&Value::from("room.send")));
        assert_eq!(header.get("id"), Some(&Value::from(4)));
        assert_eq!(bytes, b"\x00\xffbytes");
        // No bytes after the header is a valid (empty) attachment.
        let empty = encode_binary(b"{}", b"");
        let (header, bytes) = parse_binary_frame(&empty).unwrap();
        assert!(header.is_empty() && bytes.is_empty());
    }

    /// Found by `fuzz/` (parse_binary_frame): serde_json's default float parser is not
    /// correctly rounded, so an integer beyond u64 (read as a float) came back from a
    /// serialize-parse cycle as a neighbouring float. The server relays such numbers (echoed
    /// ids, publication `data`), so they must survive the trip exactly.
    #[test]
    fn regression_header_numbers_beyond_u64_round_trip_exactly() {
        let header = br#"{"id":1111111111151111111111111111111055555}"#;
        let frame = encode_binary(header, b"");
        let (parsed, _) = parse_binary_frame(&frame).unwrap();
        let again = encode_binary(&serde_json::to_vec(&parsed).unwrap(), b"");
        assert_eq!(parse_binary_frame(&again).unwrap().0, parsed);

        let text = r#"{"id":1,"op":"publish","subject":"s","data":[1111111111151111111111111111111055555,0.1e-320]}"#;
        let f = parse_request(text).unwrap();
        let g = parse_request(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(g, f);
    }

    #[test]
    fn parse_binary_frame_refuses_what_is_not_a_frame() {
        assert_eq!(parse_binary_frame(b""), Err(BinaryFrameError::Short));
        assert_eq!(parse_binary_frame(&[0, 0, 1]), Err(BinaryFrameError::Short));
        // A length far beyond the frame (the largest u32) is refused before reading.
        assert_eq!(
            parse_binary_frame(&[0xff, 0xff, 0xff, 0xff, b'{']),
            Err(BinaryFrameError::HeaderOverrun(u32::MAX))
        );
        assert!(matches!(
            parse_binary_frame(&encode_binary(b"{\"id\":", b"x")),
            Err(BinaryFrameError::HeaderNotJson(_))
        ));
        // The header length cuts the JSON short: the rest counts as bytes, so it is not JSON.
        let mut f = encode_binary(br#"{"a":1}"#, b"");
        f[3] = 3;
        assert!(matches!(parse_binary_frame(&f), Err(BinaryFrameError::HeaderNotJson(_))));
        assert_eq!(parse_binary_frame(&encode_binary(b"[1,2]", b"")), Err(BinaryFrameError::HeaderNotObject));
        assert_eq!(parse_binary_frame(&encode_binary(b"7", b"")), Err(BinaryFrameError::HeaderNotObject));
        assert!(matches!(
            parse_binary_frame(&encode_binary(&[0xc3, 0x28], b"")),
            Err(BinaryFrameError::HeaderNotJson(_))
        ));
        // An empty header is not a JSON object either.
        assert!(matches!(parse_binary_frame(&[0, 0, 0, 0]), Err(BinaryFrameError::HeaderNotJson(_))));
    }
}
