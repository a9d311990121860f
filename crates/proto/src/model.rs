//! Data as it travels on the wire: channels, messages, reactions, members and raw log entries.

use serde::{Deserialize, Serialize};

/// Who may join a channel by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Policy {
    /// Anybody of the app may join.
    #[default]
    Open,
    /// Only users added by a member (or holders of `channels:admin`) may join.
    Invite,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::Invite => "invite",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "open" => Some(Policy::Open),
            "invite" => Some(Policy::Invite),
            _ => None,
        }
    }
}

/// What kind of participant a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UserKind {
    #[default]
    Human,
    Agent,
    Service,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Human => "human",
            UserKind::Agent => "agent",
            UserKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<UserKind> {
        match s {
            "human" => Some(UserKind::Human),
            "agent" => Some(UserKind::Agent),
            "service" => Some(UserKind::Service),
            _ => None,
        }
    }
}

/// The authenticated user of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: UserKind,
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub policy: Policy,
    pub created_by: String,
    pub created_at: String,
    /// The `seq` of the newest log entry.
    #[serde(default)]
    pub last_seq: u64,
}

/// The snapshot of the message a reply points at, taken when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplySnapshot {
    pub id: String,
    pub author: String,
    /// The replied-to message's current content; `null` once it has been deleted.
    pub content: Option<String>,
    #[serde(default)]
    pub edited: bool,
}

/// A reaction as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionView {
    pub reaction_id: String,
    pub emoji: String,
    pub user: String,
}

/// A message as history and the `message` event show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: String,
    pub seq: u64,
    pub author: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplySnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Encrypted channels (§7): the key epoch the current content is sealed under; absent in
    /// plain channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Present in history (possibly empty); absent from the live `message` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions: Option<Vec<ReactionView>>,
}

/// One raw log entry (§5) as `GET /v1/channels/{id}/log` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    pub seq: u64,
    pub kind: crate::EntryKind,
    pub author: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub ts: String,
    /// Absent on a tombstone (the message was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    pub content_hash: String,
    pub prev_hash: String,
    pub hash: String,
}

impl LogEntry {
    /// The entry as the chain verifier reads it.
    pub fn as_entry_ref<'a>(&'a self, channel_id: &'a str) -> Option<crate::chain::EntryRef<'a>> {
        Some(crate::chain::EntryRef {
            channel_id,
            seq: self.seq,
            kind: self.kind,
            author: &self.author,
            reference: &self.reference,
            ts_ms: crate::time::parse_ms(&self.ts)?,
            content: self.content.as_deref(),
            salt: self.salt.as_deref(),
            content_hash: &self.content_hash,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        })
    }
}

/// A line of `channel.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelSummary {
    pub id: String,
    pub name: Option<String>,
    pub title: Option<String>,
    /// Messages by others after the caller's last read one.
    pub unread: u64,
    pub last_seq: u64,
}

/// A line of `channel.directory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryEntry {
    pub name: String,
    pub id: String,
}

/// A member as `GET /v1/channels/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user: String,
    pub name: Option<String>,
    pub kind: UserKind,
    /// The `seq` of the last message this member marked read (0: none).
    pub last_read: u64,
}
