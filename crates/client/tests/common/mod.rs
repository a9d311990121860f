//! Test support: a well-formed hash chain to feed the client, as live events and as log
//! entries, built with `herald_proto::chain` exactly as the server would.
#![allow(dead_code, clippy::unwrap_used)]

use herald_proto::chain::{EntryFields, EntryKind, Hash32, ZERO_HASH, content_hash, entry_hash, to_hex};
use herald_proto::frames::{EntryMeta, Event};
use herald_proto::{LogEntry, Message};

/// Appends entries to one channel's chain.
pub struct Chain {
    pub channel: String,
    pub seq: u64,
    pub prev: Hash32,
}

/// One entry, in both shapes.
pub struct Entry {
    pub event: Event,
    pub log: LogEntry,
}

impl Chain {
    pub fn new(channel: &str) -> Chain {
        Chain { channel: channel.to_owned(), seq: 0, prev: ZERO_HASH }
    }

    /// The next `message` entry by `author` with `content`.
    pub fn message(&mut self, author: &str, content: &str) -> Entry {
        let seq = self.seq + 1;
        let ts_ms = 1_732_000_000_000 + seq as i64;
        let ts = herald_proto::time::format_ms(ts_ms);
        let salt = [seq as u8; 16];
        let ch = content_hash(&salt, content);
        let hash = entry_hash(
            &self.prev,
            &EntryFields {
                seq,
                kind: EntryKind::Message,
                channel_id: &self.channel,
                author,
                reference: "",
                ts_ms,
                content_hash: &ch,
            },
        );
        let meta = EntryMeta {
            seq,
            hash: to_hex(&hash),
            prev_hash: to_hex(&self.prev),
            ts: ts.clone(),
            author: author.to_owned(),
            salt: Some(to_hex(&salt)),
            content_hash: to_hex(&ch),
        };
        let message = Message {
            id: format!("m{seq}"),
            seq,
            author: author.to_owned(),
            kind: "chat.text".to_owned(),
            content: content.to_owned(),
            reply_to: None,
            client_id: None,
            ts: ts.clone(),
            edited_at: None,
            epoch: None,
            reactions: None,
        };
        let log = LogEntry {
            seq,
            kind: EntryKind::Message,
            author: author.to_owned(),
            reference: String::new(),
            ts,
            content: Some(content.to_owned()),
            salt: meta.salt.clone(),
            content_hash: meta.content_hash.clone(),
            prev_hash: meta.prev_hash.clone(),
            hash: meta.hash.clone(),
        };
        self.seq = seq;
        self.prev = hash;
        Entry { event: Event::Message { channel: self.channel.clone(), meta, message }, log }
    }

    /// `n` messages `"m1"…` by `author`.
    pub fn messages(&mut self, author: &str, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|_| {
                let content = format!("hello {}", self.seq + 1);
                self.message(author, &content)
            })
            .collect()
    }
}

/// The `seq` of a message event.
pub fn message_seq(event: &Event) -> Option<u64> {
    match event {
        Event::Message { message, .. } => Some(message.seq),
        _ => None,
    }
}
