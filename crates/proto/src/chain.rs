//! The channel log's hash chain (PROTOCOL.md §5).
//!
//! ```text
//! content_hash = BLAKE3(salt ‖ content)
//! hash         = BLAKE3("herald.v1.entry" ‖ prev_hash ‖ u64be(seq) ‖ lp(kind) ‖ lp(channel_id)
//!                       ‖ lp(author) ‖ lp(ref) ‖ u64be(ts_ms) ‖ content_hash)
//! lp(s)        = u32be(byte length of s) ‖ UTF-8 bytes of s
//! ```
//!
//! The server computes these when it appends; clients recompute them with [`ChainVerifier`]
//! for everything they receive. A hard delete keeps `content_hash` and erases content and salt,
//! so a tombstoned entry still verifies its link without revealing the text.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A 32-byte BLAKE3 digest.
pub type Hash32 = [u8; 32];

/// The hash before the first entry.
pub const ZERO_HASH: Hash32 = [0; 32];

/// Length of the per-entry salt.
pub const SALT_LEN: usize = 16;

/// The kind of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EntryKind {
    ChannelCreated,
    MemberJoined,
    MemberLeft,
    Message,
    MessageEdited,
    MessageDeleted,
    Reaction,
    ReactionDeleted,
    KeyRotated,
}

impl EntryKind {
    pub const ALL: [EntryKind; 9] = [
        EntryKind::ChannelCreated,
        EntryKind::MemberJoined,
        EntryKind::MemberLeft,
        EntryKind::Message,
        EntryKind::MessageEdited,
        EntryKind::MessageDeleted,
        EntryKind::Reaction,
        EntryKind::ReactionDeleted,
        EntryKind::KeyRotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::ChannelCreated => "channel_created",
            EntryKind::MemberJoined => "member_joined",
            EntryKind::MemberLeft => "member_left",
            EntryKind::Message => "message",
            EntryKind::MessageEdited => "message_edited",
            EntryKind::MessageDeleted => "message_deleted",
            EntryKind::Reaction => "reaction",
            EntryKind::ReactionDeleted => "reaction_deleted",
            EntryKind::KeyRotated => "key_rotated",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `BLAKE3(salt ‖ content)`.
pub fn content_hash(salt: &[u8], content: &str) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(salt);
    h.update(content.as_bytes());
    *h.finalize().as_bytes()
}

/// The fields of an entry that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    pub seq: u64,
    pub kind: EntryKind,
    pub channel_id: &'a str,
    pub author: &'a str,
    pub reference: &'a str,
    pub ts_ms: i64,
    pub content_hash: &'a Hash32,
}

fn lp(h: &mut blake3::Hasher, s: &str) {
    // Lengths beyond u32 cannot occur: every field is bounded far below 4 GiB.
    h.update(&(s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The entry hash of §5.
pub fn entry_hash(prev_hash: &Hash32, f: &EntryFields<'_>) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"herald.v1.entry");
    h.update(prev_hash);
    h.update(&f.seq.to_be_bytes());
    lp(&mut h, f.kind.as_str());
    lp(&mut h, f.channel_id);
    lp(&mut h, f.author);
    lp(&mut h, f.reference);
    // ts_ms is never negative for a real entry; the cast keeps the bit pattern regardless.
    h.update(&(f.ts_ms as u64).to_be_bytes());
    h.update(f.content_hash);
    *h.finalize().as_bytes()
}

/// Lowercase hex of a hash (or a salt): on every event's hot path, so written into one buffer
/// (`hex::encode` collects it char by char).
pub fn to_hex(h: &[u8]) -> String {
    let mut out = vec![0u8; h.len() * 2];
    // The buffer is exactly twice the input: encoding cannot fail, and it writes ASCII only.
    if hex::encode_to_slice(h, &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Parses 64 hex digits into a hash.
pub fn hash_from_hex(s: &str) -> Option<Hash32> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses 32 hex digits into a salt.
pub fn salt_from_hex(s: &str) -> Option<[u8; SALT_LEN]> {
    let mut out = [0u8; SALT_LEN];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Why an entry failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("channel {channel}: entry {seq} has a malformed hash field {field}")]
    Malformed { channel: String, seq: u64, field: &'static str },
    #[error("channel {channel}: entry {seq} content does not match its content_hash")]
    ContentMismatch { channel: String, seq: u64 },
    #[error("channel {channel}: entry {seq} hash does not match its fields")]
    HashMismatch { channel: String, seq: u64 },
    #[error("channel {channel}: entry {seq} does not link to entry {expected_seq} (prev_hash differs)")]
    BrokenLink { channel: String, seq: u64, expected_seq: u64 },
    #[error("channel {channel}: expected entry {expected} next, got {got}")]
    Gap { channel: String, expected: u64, got: u64 },
    #[error("channel {channel}: entry 1 must have a zero prev_hash")]
    BadGenesis { channel: String },
}

/// One entry as a verifier sees it. `content` and `salt` are absent on tombstones and when the
/// carrier does not include them; the link is still checked through `content_hash`.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub channel_id: &'a str,
    pub seq: u64,
    pub kind: EntryKind,
    pub author: &'a str,
    pub reference: &'a str,
    pub ts_ms: i64,
    pub content: Option<&'a str>,
    pub salt: Option<&'a str>,
    pub content_hash: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

impl<'a> EntryRef<'a> {
    /// The fields the entry's hash covers, with `content_hash` as given.
    fn fields(&self, content_hash: &'a Hash32) -> EntryFields<'a> {
        EntryFields {
            seq: self.seq,
            kind: self.kind,
            channel_id: self.channel_id,
            author: self.author,
            reference: self.reference,
            ts_ms: self.ts_ms,
            content_hash,
        }
    }
}

/// The `(content_hash, hash)` an entry's fields give: `content_hash` computed from the salt and
/// content when it has a salt (taken as given otherwise), `hash` from `prev_hash` and the fields.
/// `None` if a field it needs is missing or malformed. This fills in what a compact event leaves
/// out (docs/protocol.md §B); it checks nothing: [`verify_entry`] does.
pub fn complete_entry(e: &EntryRef<'_>) -> Option<(Hash32, Hash32)> {
    let ch = match (e.content, e.salt) {
        (Some(content), Some(salt)) => content_hash(&salt_from_hex(salt)?, content),
        _ => hash_from_hex(e.content_hash)?,
    };
    let prev = hash_from_hex(e.prev_hash)?;
    let hash = entry_hash(&prev, &e.fields(&ch));
    Some((ch, hash))
}

/// Checks one entry on its own: content against `content_hash`, fields against `hash`.
/// Returns the parsed `(prev_hash, hash)`.
pub fn verify_entry(e: &EntryRef<'_>) -> Result<(Hash32, Hash32), ChainError> {
    let malformed = |field| ChainError::Malformed { channel: e.channel_id.to_owned(), seq: e.seq, field };
    let ch = hash_from_hex(e.content_hash).ok_or_else(|| malformed("content_hash"))?;
    let prev = hash_from_hex(e.prev_hash).ok_or_else(|| malformed("prev_hash"))?;
    let hash = hash_from_hex(e.hash).ok_or_else(|| malformed("hash"))?;
    if let (Some(content), Some(salt)) = (e.content, e.salt) {
        let salt = salt_from_hex(salt).ok_or_else(|| malformed("salt"))?;
        if content_hash(&salt, content) != ch {
            return Err(ChainError::ContentMismatch { channel: e.channel_id.to_owned(), seq: e.seq });
        }
    }
    if entry_hash(&prev, &e.fields(&ch)) != hash {
        return Err(ChainError::HashMismatch { channel: e.channel_id.to_owned(), seq: e.seq });
    }
    if e.seq == 1 && prev != ZERO_HASH {
        return Err(ChainError::BadGenesis { channel: e.channel_id.to_owned() });
    }
    Ok((prev, hash))
}

/// Follows the chain of every channel a client sees, entry by entry.
///
/// The first entry seen of a channel is its anchor (trusted on first use unless it is entry 1,
/// whose `prev_hash` must be zero); every later entry must be the next `seq` and link to the
/// previous hash. Entries at or below the last verified `seq` are duplicates: they must match
/// the hash recorded for that `seq` if it is the last one, and are otherwise reported as
/// [`Verdict::Duplicate`] for the caller to drop.
#[derive(Debug, Default, Clone)]
pub struct ChainVerifier {
    heads: HashMap<String, (u64, Hash32)>,
}

/// What [`ChainVerifier::check`] concluded about an entry that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next entry: accepted and now the head.
    Next,
    /// Already seen (its `seq` is at or below the head): drop it.
    Duplicate,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last verified `(seq, hash)` of a channel.
    pub fn head(&self, channel_id: &str) -> Option<(u64, Hash32)> {
        self.heads.get(channel_id).copied()
    }

    /// Sets a channel's head, e.g. from a persisted resume point.
    pub fn set_head(&mut self, channel_id: &str, seq: u64, hash: Hash32) {
        self.heads.insert(channel_id.to_owned(), (seq, hash));
    }

    /// Forgets a channel (deleted, or left).
    pub fn forget(&mut self, channel_id: &str) {
        self.heads.remove(channel_id);
    }

    /// Verifies `e` against itself and against the channel's head; advances the head.
    pub fn check(&mut self, e: &EntryRef<'_>) -> Result<Verdict, ChainError> {
        let (prev, hash) = verify_entry(e)?;
        match self.heads.get(e.channel_id).copied() {
            None => {}
            Some((seq, head)) if e.seq <= seq => {
                if e.seq == seq && hash != head {
                    return Err(ChainError::HashMismatch { channel: e.channel_id.to_owned(), seq: e.seq });
                }
                return Ok(Verdict::Duplicate);
            }
            Some((seq, head)) => {
                if e.seq != seq + 1 {
                    return Err(ChainError::Gap {
                        channel: e.channel_id.to_owned(),
                        expected: seq + 1,
                        got: e.seq,
                    });
                }
                if prev != head {
                    return Err(ChainError::BrokenLink {
                        channel: e.channel_id.to_owned(),
                        seq: e.seq,
                        expected_seq: seq,
                    });
                }
            }
        }
        self.heads.insert(e.channel_id.to_owned(), (e.seq, hash));
        Ok(Verdict::Next)
    }
}
