//! What goes over NATS: subjects (with an injective encoding of ids into subject tokens) and
//! the message format of an [`Envelope`]. Pure: no I/O.
//!
//! # Subjects
//!
//! - `{prefix}.ch.{channel}`: every event of one channel (log entries, typing, ephemeral,
//!   receipts, deletions).
//! - `{prefix}.pub.{app}.{subject}`: publications to one subject of one app.
//! - `{prefix}.sync.{node}`: a node's own round trips (see `NatsBroker::confirm`).
//! - `{prefix}.node.hb`: every node's [`Heartbeat`], so each knows which nodes are alive.
//! - `{prefix}.node.rooms`: [`SnapshotQuery`]s of a node that wants the others' participants
//!   of a room, answered on its inbox with [`SnapshotPage`]s.
//! - `{prefix}.e2e.{app}`: end-to-end encryption events (§7): a `dm` for the connections of
//!   one device (`dv`, with the DM id `i`), or an event for the app's keepers (`k`, with the
//!   channel whose members are skipped in `kc`). Every node subscribes to `{prefix}.e2e.>`.
//!
//! Each `{…}` is [`token`]-encoded: `[A-Za-z0-9-]` stand for themselves and every other byte
//! is `_XX` (two uppercase hex digits), `_` included, so a UUID is itself and `a.b`, `*`, `>`,
//! `user:ada` can never spell a wildcard or a second token, and two different strings never
//! share a token. The empty string is `_`, which no other string encodes to.
//!
//! # Message
//!
//! The payload is one line of compact JSON metadata, `\n`, then the frame bytes as they go to
//! clients (the metadata's JSON never holds a raw newline). The metadata:
//!
//! ```text
//! {"v":1,"n":"<node id>","a":"<app>","c":"<channel>","s":12,"u":"<skip user>","j":["<joined>"],"l":["<left>"],"d":true}
//! {"v":1,"n":"<node id>","a":"<app>","p":"<subject>"}
//! ```
//!
//! `c` (channel events) or `p` (publications) says which kind it is; `s`, `u`, `j`, `l` and
//! `d` are left out when empty. `committed_at` does not travel: it is `None` on arrival.
//!
//! A payload larger than the NATS server's `max_payload` (an attachment, a stream chunk) is
//! sent as parts ([`split`]): each a metadata line with `pt: [id, index, count]` and a slice,
//! put back together by the receiver ([`Reassembler`]) before it is decoded.

use bytes::{BufMut, Bytes, BytesMut};
use herald_engine::broker::{ChannelEvent, Envelope};
use herald_engine::rooms::{RoomChange, RoomEnvelope};
use serde::{Deserialize, Serialize};

/// The version of the message format this crate writes and reads.
pub const VERSION: u8 = 1;

/// Appends the token encoding of `s` (see the module doc) to `out`.
pub fn push_token(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('_');
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

/// The token encoding of `s`.
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_token(&mut out, s);
    out
}

/// Decodes a [`token`]; `None` if `t` is not the encoding of any string.
pub fn untoken(t: &str) -> Option<String> {
    if t == "_" {
        return Some(String::new());
    }
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphanumeric() || c == b'-' => {
                out.push(c);
                i += 1;
            }
            b'_' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                    return None;
                }
                let v = u8::from_str_radix(hex, 16).ok()?;
                if v.is_ascii_alphanumeric() || v == b'-' {
                    return None;
                }
                out.push(v);
                i += 3;
            }
            _ => return None,
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Whether `prefix` is usable as the first tokens of every subject: non-empty tokens of
/// `[A-Za-z0-9_-]` separated by `.`.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The subject of a channel's events.
pub fn channel_subject(prefix: &str, channel: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 4 + channel.len());
    s.push_str(prefix);
    s.push_str(".ch.");
    push_token(&mut s, channel);
    s
}

/// The wildcard subject of every channel's events.
pub fn all_channels(prefix: &str) -> String {
    format!("{prefix}.ch.>")
}

/// The subject of the publications to `(app, subject)`.
pub fn publication_subject(prefix: &str, app: &str, subject: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 6 + app.len() + subject.len());
    s.push_str(prefix);
    s.push_str(".pub.");
    push_token(&mut s, app);
    s.push('.');
    push_token(&mut s, subject);
    s
}

/// The subject of every node's heartbeats ([`Heartbeat`]).
pub fn heartbeat_subject(prefix: &str) -> String {
    format!("{prefix}.node.hb")
}

/// The subject of room snapshot questions ([`SnapshotQuery`]), answered on the asker's inbox
/// with [`SnapshotPage`]s.
pub fn rooms_subject(prefix: &str) -> String {
    format!("{prefix}.node.rooms")
}

/// A node's heartbeat: `{"n": node, "h": true}` for its first (a hello, which every node
/// that hears it answers at once with its own, so a new node knows the others at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub n: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub h: bool,
}

/// Which participants of room `c` of app `a` the other nodes hold, asked by node `n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotQuery {
    pub n: String,
    pub a: String,
    pub c: String,
}

/// One page of a node's answer: its participants `p` of the room; `m` when more pages follow
/// (each page fits the server's `max_payload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    pub n: String,
    pub p: Vec<herald_proto::rooms::Participant>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub m: bool,
}

/// Cuts `participants` into pages whose JSON stays under `max` bytes (a page holds one at
/// least, and there is always one page, maybe empty).
pub fn snapshot_pages(
    node: &str,
    participants: Vec<herald_proto::rooms::Participant>,
    max: usize,
) -> Vec<Bytes> {
    let mut pages: Vec<Vec<herald_proto::rooms::Participant>> = vec![Vec::new()];
    let mut size = 0;
    for p in participants {
        let len = serde_json::to_vec(&p).map(|b| b.len()).unwrap_or(0) + 1;
        if size + len > max && pages.last().is_some_and(|l| !l.is_empty()) {
            pages.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = pages.last_mut() {
            last.push(p);
        }
    }
    let n = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let page = SnapshotPage { n: node.to_owned(), p, m: i + 1 < n };
            Bytes::from(serde_json::to_vec(&page).unwrap_or_default())
        })
        .collect()
}

/// The subject of a node's own round trips.
pub fn sync_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.sync.{}", token(node))
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
struct Meta {
    v: u8,
    n: String,
    a: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    j: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    l: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    d: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    k: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kc: Option<String>,
    /// Room traffic (§8): present only on room envelopes, which travel on their channel's
    /// subject so every node receives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<RoomMeta>,
    /// `Envelope::Disconnect`: the user whose connections close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    /// A part of a message larger than the server's `max_payload`: `[message id, index,
    /// count]` (see [`split`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pt: Option<[u64; 3]>,
}

/// The subject of an app's end-to-end encryption events.
pub fn e2ee_subject(prefix: &str, app: &str) -> String {
    let mut s = format!("{prefix}.e2e.");
    push_token(&mut s, app);
    s
}

/// The wildcard subject of every app's end-to-end encryption events.
pub fn all_e2ee(prefix: &str) -> String {
    format!("{prefix}.e2e.>")
}

/// The routing and replica change of a room envelope.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RoomMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<RoomChange>,
}

/// The subject of control envelopes (disconnects): under the channels' wildcard, so every node
/// receives them, and `_ctl` is the token of no channel id (a `_` escape is upper-case hex).
pub fn control_subject(prefix: &str) -> String {
    format!("{prefix}.ch._ctl")
}

static EMPTY: Bytes = Bytes::from_static(b"");

/// The NATS subject and payload of an envelope sent by node `node`.
pub fn encode(prefix: &str, node: &str, envelope: &Envelope) -> (String, Bytes) {
    let (subject, meta, frame) = match envelope {
        Envelope::Channel(ev) => (
            channel_subject(prefix, &ev.channel),
            Meta {
                v: VERSION,
                n: node.to_owned(),
                a: ev.app.clone(),
                c: Some(ev.channel.clone()),
                s: ev.seq,
                u: ev.skip_user.clone(),
                j: ev.joined.clone(),
                l: ev.left.clone(),
                d: ev.deleted,
                ..Meta::default()
            },
            &ev.frame,
        ),
        Envelope::Room(r) => (
            channel_subject(prefix, &r.channel),
            Meta {
                v: VERSION,
                n: node.to_owned(),
                a: r.app.clone(),
                c: Some(r.channel.clone()),
                r: Some(RoomMeta { to: r.to.clone(), skip: r.skip.clone(), change: r.change.clone() }),
                ..Meta::default()
            },
            &r.frame,
        ),
        Envelope::Publication { app, subject, frame } => (
            publication_subject(prefix, app, subject),
            Meta {
                v: VERSION,
                n: node.to_owned(),
                a: app.clone(),
                p: Some(subject.clone()),
                ..Meta::default()
            },
            frame,
        ),
        Envelope::Disconnect { app, user } => (
            control_subject(prefix),
            Meta { v: VERSION, n: node.to_owned(), a: app.clone(), x: Some(user.clone()), ..Meta::default() },
            &EMPTY,
        ),
        Envelope::Device { app, device, id, frame } => (
            e2ee_subject(prefix, app),
            Meta {
                v: VERSION,
                n: node.to_owned(),
                a: app.clone(),
                dv: Some(device.clone()),
                i: Some(id.clone()),
                ..Meta::default()
            },
            frame,
        ),
        Envelope::Keeper { app, skip_members_of, frame } => (
            e2ee_subject(prefix, app),
            Meta {
                v: VERSION,
                n: node.to_owned(),
                a: app.clone(),
                k: true,
                kc: skip_members_of.clone(),
                ..Meta::default()
            },
            frame,
        ),
    };
    // Serializing a struct of strings, numbers and vectors of strings cannot fail.
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let mut out = BytesMut::with_capacity(meta.len() + 1 + frame.len());
    out.put_slice(&meta);
    out.put_u8(b'\n');
    out.put_slice(frame);
    (subject, out.freeze())
}

/// A message as received: who sent it and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub node: String,
    pub envelope: Envelope,
}

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no metadata line")]
    NoMetadata,
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("neither a channel nor a subject")]
    NoTarget,
    #[error("a part of a larger message (see `split`)")]
    Part,
}

/// A message as it arrives: whole, or one part of one too large for a NATS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Whole(Box<Received>),
    Part { node: String, id: u64, index: u64, count: u64, bytes: Bytes },
}

/// Cuts a payload made by [`encode`] that is larger than `max_payload` (the NATS server's
/// limit) into parts that each fit: every part is a metadata line `{"v":1,"n":…,"a":"",
/// "pt":[id,index,count]}`, `\n`, then its slice of the payload. `id` must be unique per
/// sending node for a while (a counter). A payload that fits is returned as it is; with a
/// `max_payload` too small for even a part's metadata, too.
pub fn split(node: &str, id: u64, payload: Bytes, max_payload: usize) -> Vec<Bytes> {
    if payload.len() <= max_payload {
        return vec![payload];
    }
    let meta_of = |index: u64, count: u64| {
        let m = Meta { v: VERSION, n: node.to_owned(), pt: Some([id, index, count]), ..Meta::default() };
        serde_json::to_vec(&m).unwrap_or_default()
    };
    // The longest metadata line any part can have (index and count at their widest).
    let overhead = meta_of(u64::MAX, u64::MAX).len() + 1;
    let Some(room) = max_payload.checked_sub(overhead).filter(|r| *r >= 64) else {
        return vec![payload];
    };
    let count = payload.len().div_ceil(room) as u64;
    (0..count)
        .map(|i| {
            let start = i as usize * room;
            let end = (start + room).min(payload.len());
            let meta = meta_of(i, count);
            let mut out = BytesMut::with_capacity(meta.len() + 1 + end - start);
            out.put_slice(&meta);
            out.put_u8(b'\n');
            out.put_slice(&payload[start..end]);
            out.freeze()
        })
        .collect()
}

/// Puts the parts of [`split`] messages back together. A node publishes from one task, in
/// order, and NATS keeps one publisher's order toward one subscription, so a node's parts
/// arrive one message after another: one partial message per sending node, at most
/// `max_bytes` each. A part out of sequence (one was lost: a slow consumer, a reconnect)
/// drops the partial message, counted in `lost`, as NATS would have lost a whole one.
#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    partial: std::collections::HashMap<String, Partial>,
    /// Messages given up: a part missing, or larger than `max_bytes`.
    pub lost: u64,
}

#[derive(Debug)]
struct Partial {
    id: u64,
    count: u64,
    next: u64,
    buf: BytesMut,
}

impl Reassembler {
    pub fn new(max_bytes: usize) -> Reassembler {
        Reassembler { max_bytes, partial: std::collections::HashMap::new(), lost: 0 }
    }

    /// Takes one part; the whole payload once its last part arrived.
    pub fn push(&mut self, node: &str, id: u64, index: u64, count: u64, bytes: &[u8]) -> Option<Bytes> {
        if index == 0 {
            if self.partial.remove(node).is_some() {
                self.lost += 1;
            }
            if count == 0 {
                return None;
            }
            self.partial.insert(node.to_owned(), Partial { id, count, next: 0, buf: BytesMut::new() });
        }
        let Some(p) = self.partial.get_mut(node) else {
            // The first part was lost: nothing to add this to.
            return None;
        };
        if p.id != id || p.next != index || p.count != count || p.buf.len() + bytes.len() > self.max_bytes {
            self.partial.remove(node);
            self.lost += 1;
            return None;
        }
        p.buf.put_slice(bytes);
        p.next += 1;
        if p.next < p.count {
            return None;
        }
        self.partial.remove(node).map(|p| p.buf.freeze())
    }

    /// Forgets a node's partial message (the node is gone).
    pub fn forget(&mut self, node: &str) {
        self.partial.remove(node);
    }
}

/// Reads a payload made by [`encode`] or [`split`].
pub fn decode_incoming(payload: &Bytes) -> Result<Incoming, DecodeError> {
    match decode(payload) {
        Err(DecodeError::Part) => {}
        other => return other.map(|r| Incoming::Whole(Box::new(r))),
    }
    let nl = payload.iter().position(|&b| b == b'\n').ok_or(DecodeError::NoMetadata)?;
    let meta: Meta =
        serde_json::from_slice(&payload[..nl]).map_err(|e| DecodeError::BadMetadata(e.to_string()))?;
    let [id, index, count] = meta.pt.ok_or(DecodeError::NoTarget)?;
    Ok(Incoming::Part { node: meta.n, id, index, count, bytes: payload.slice(nl + 1..) })
}

/// Reads a payload made by [`encode`]. The frame shares `payload`'s memory.
pub fn decode(payload: &Bytes) -> Result<Received, DecodeError> {
    let nl = payload.iter().position(|&b| b == b'\n').ok_or(DecodeError::NoMetadata)?;
    let meta: Meta =
        serde_json::from_slice(&payload[..nl]).map_err(|e| DecodeError::BadMetadata(e.to_string()))?;
    if meta.v != VERSION {
        return Err(DecodeError::Version(meta.v));
    }
    if meta.pt.is_some() {
        return Err(DecodeError::Part);
    }
    let frame = payload.slice(nl + 1..);
    if let Some(user) = meta.x {
        return Ok(Received { node: meta.n, envelope: Envelope::Disconnect { app: meta.a, user } });
    }
    if let Some(device) = meta.dv {
        let id = meta.i.unwrap_or_default();
        return Ok(Received { node: meta.n, envelope: Envelope::Device { app: meta.a, device, id, frame } });
    }
    if meta.k {
        let envelope = Envelope::Keeper { app: meta.a, skip_members_of: meta.kc, frame };
        return Ok(Received { node: meta.n, envelope });
    }
    let envelope = match (meta.c, meta.p) {
        (Some(channel), _) if let Some(r) = meta.r => Envelope::Room(RoomEnvelope {
            app: meta.a,
            channel,
            to: r.to,
            skip: r.skip,
            frame,
            change: r.change,
            node: Some(meta.n.clone()),
        }),
        (Some(channel), _) => Envelope::Channel(ChannelEvent {
            app: meta.a,
            channel,
            seq: meta.s,
            frame,
            skip_user: meta.u,
            joined: meta.j,
            left: meta.l,
            deleted: meta.d,
            committed_at: None,
        }),
        (None, Some(subject)) => Envelope::Publication { app: meta.a, subject, frame },
        (None, None) => return Err(DecodeError::NoTarget),
    };
    Ok(Received { node: meta.n, envelope })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_injective_and_safe() {
        let cases = [
            "",
            "_",
            "a",
            "0194f0c2-7d1e-7b8a-9c3d-2e4f5a6b7c8d",
            "presence:lobby",
            "a.b",
            "a_2Eb",
            "*",
            ">",
            "a b\t\r\n",
            "日本",
            "user:ada",
            "_5F",
        ];
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            let t = token(c);
            assert!(!t.is_empty());
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t:?}");
            assert!(seen.insert(t.clone()), "{c:?} collides as {t:?}");
            assert_eq!(untoken(&t).as_deref(), Some(c), "{t:?}");
        }
        assert_eq!(token("0194f0c2-7d1e-7b8a-9c3d-2e4f5a6b7c8d"), "0194f0c2-7d1e-7b8a-9c3d-2e4f5a6b7c8d");
        assert_eq!(token("a.b"), "a_2Eb");
        assert_eq!(token("a_2Eb"), "a_5F2Eb");
        // Not the encoding of anything: lowercase hex, an escaped safe byte, a stray `_`.
        for bad in ["a_2eb", "_41", "a_", "a_4", "__", "a.b"] {
            assert_eq!(untoken(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(channel_subject("herald", "c1"), "herald.ch.c1");
        assert_eq!(
            publication_subject("herald", "default", "presence:lobby"),
            "herald.pub.default.presence_3Alobby"
        );
        assert_eq!(publication_subject("h.t1", "a.b", "*"), "h.t1.pub.a_2Eb._2A");
        assert!(valid_prefix("herald") && valid_prefix("t.x-1_2"));
        assert!(!valid_prefix("") && !valid_prefix("a..b") && !valid_prefix("a.*") && !valid_prefix("a b"));
    }

    #[test]
    fn envelopes_round_trip() {
        let ev = ChannelEvent {
            app: "default".into(),
            channel: "c1".into(),
            seq: Some(7),
            frame: Bytes::from_static(b"{\"event\":\"message\",\"x\":\"a\\nb\"}\n"),
            skip_user: Some("ada".into()),
            joined: vec!["bob".into(), "new\nline".into()],
            left: vec!["carol".into()],
            deleted: true,
            committed_at: Some(std::time::Instant::now()),
        };
        let (subject, payload) = encode("herald", "node-1", &Envelope::Channel(ev.clone()));
        assert_eq!(subject, "herald.ch.c1");
        let got = decode(&payload).unwrap();
        assert_eq!(got.node, "node-1");
        assert_eq!(got.envelope, Envelope::Channel(ChannelEvent { committed_at: None, ..ev }));

        let signal = ChannelEvent::signal("default", "c1", Bytes::from_static(b"{}"), None);
        let kick = Envelope::Disconnect { app: "default".into(), user: "ada".into() };
        let (subject, payload) = encode("herald", "n", &kick);
        assert_eq!(subject, control_subject("herald"));
        assert!(subject.starts_with("herald.ch.") && untoken("_ctl").is_none(), "no channel's subject");
        assert_eq!(decode(&payload).unwrap().envelope, kick);
        let (_, payload) = encode("herald", "n", &Envelope::Channel(signal.clone()));
        assert_eq!(
            &payload[..],
            br#"{"v":1,"n":"n","a":"default","c":"c1"}
{}"#
        );
        assert_eq!(decode(&payload).unwrap().envelope, Envelope::Channel(signal));

        let dm = Envelope::Device {
            app: "a.b".into(),
            device: "ada-phone".into(),
            id: "d1".into(),
            frame: Bytes::from_static(b"{\"event\":\"dm\"}"),
        };
        let (subject, payload) = encode("herald", "n", &dm);
        assert_eq!(subject, "herald.e2e.a_2Eb");
        assert_eq!(decode(&payload).unwrap().envelope, dm);
        let keeper = Envelope::Keeper {
            app: "app".into(),
            skip_members_of: Some("c1".into()),
            frame: Bytes::from_static(b"{}"),
        };
        assert_eq!(decode(&encode("herald", "n", &keeper).1).unwrap().envelope, keeper);
        let p = Envelope::Publication {
            app: "a".into(),
            subject: "s.x".into(),
            frame: Bytes::from_static(b"[]"),
        };
        let (subject, payload) = encode("herald", "n", &p);
        assert_eq!(subject, "herald.pub.a.s_2Ex");
        assert_eq!(decode(&payload).unwrap().envelope, p);
    }

    /// Room envelopes (§8) travel on their channel's subject with their routing and change,
    /// and a binary frame (newlines and all) comes back byte for byte.
    #[test]
    fn room_envelopes_round_trip() {
        let frame =
            Bytes::from(herald_proto::frames::encode_binary(br#"{"event":"room_message"}"#, b"\n\x00\xff\n"));
        let r = Envelope::Room(RoomEnvelope {
            app: "default".into(),
            channel: "c1".into(),
            to: Some("p2".into()),
            skip: None,
            frame,
            change: Some(RoomChange::StreamCredit { stream_id: "s".into(), bytes: 7 }),
            node: Some("n".into()),
        });
        let (subject, payload) = encode("herald", "n", &r);
        assert_eq!(subject, "herald.ch.c1");
        assert_eq!(decode(&payload).unwrap().envelope, r);
        let left = Envelope::Room(RoomEnvelope {
            app: "default".into(),
            channel: "c1".into(),
            to: None,
            skip: Some("p1".into()),
            frame: Bytes::new(),
            change: Some(RoomChange::Left { participant_id: "p1".into() }),
            node: Some("n".into()),
        });
        assert_eq!(decode(&encode("herald", "n", &left).1).unwrap().envelope, left);
    }

    /// A payload over `max_payload` goes as parts that each fit, and comes back whole, byte
    /// for byte; a lost part loses that message only; one over the reassembly limit is lost.
    #[test]
    fn large_payloads_split_and_reassemble() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let frame = Bytes::from(herald_proto::frames::encode_binary(br#"{"event":"room_message"}"#, &bytes));
        let r = Envelope::Room(RoomEnvelope {
            app: "default".into(),
            channel: "c1".into(),
            to: Some("p2".into()),
            skip: None,
            frame,
            change: None,
            node: Some("node-a".into()),
        });
        let (_, payload) = encode("herald", "node-a", &r);
        assert_eq!(split("node-a", 1, payload.clone(), payload.len()), vec![payload.clone()], "fits: as is");
        let parts = split("node-a", 7, payload.clone(), 16 * 1024);
        assert!(parts.len() > 10 && parts.iter().all(|p| p.len() <= 16 * 1024), "{}", parts.len());
        let mut re = Reassembler::new(1 << 20);
        let mut whole = None;
        for (i, p) in parts.iter().enumerate() {
            let Incoming::Part { node, id, index, count, bytes } = decode_incoming(p).unwrap() else {
                panic!("a part")
            };
            assert_eq!((node.as_str(), id, index, count), ("node-a", 7, i as u64, parts.len() as u64));
            assert!(matches!(decode(p), Err(DecodeError::Part)));
            let out = re.push(&node, id, index, count, &bytes);
            assert_eq!(out.is_some(), i + 1 == parts.len());
            whole = out.or(whole);
        }
        let whole = whole.unwrap();
        assert_eq!(whole, payload);
        assert_eq!(decode(&whole).unwrap().envelope, r);
        // A part lost: that message is dropped, the next one comes through.
        let push_all = |re: &mut Reassembler, parts: &[Bytes], skip: Option<usize>| {
            let mut out = None;
            for (i, p) in parts.iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                let Ok(Incoming::Part { node, id, index, count, bytes }) = decode_incoming(p) else {
                    panic!()
                };
                out = re.push(&node, id, index, count, &bytes).or(out);
            }
            out
        };
        assert_eq!(push_all(&mut re, &split("node-a", 8, payload.clone(), 16 * 1024), Some(3)), None);
        assert_eq!(re.lost, 1);
        assert_eq!(
            push_all(&mut re, &split("node-a", 9, payload.clone(), 16 * 1024), None),
            Some(payload.clone())
        );
        let mut small = Reassembler::new(100_000);
        assert_eq!(
            push_all(&mut small, &split("node-a", 10, payload.clone(), 16 * 1024), None),
            None,
            "too large"
        );
        assert_eq!(small.lost, 1);
        // Whole messages read through decode_incoming as before.
        assert!(matches!(decode_incoming(&payload), Ok(Incoming::Whole(_))));
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(decode(&Bytes::from_static(b"{}")), Err(DecodeError::NoMetadata));
        assert!(matches!(decode(&Bytes::from_static(b"nope\n{}")), Err(DecodeError::BadMetadata(_))));
        assert_eq!(
            decode(&Bytes::from_static(b"{\"v\":9,\"n\":\"x\",\"a\":\"y\"}\n")),
            Err(DecodeError::Version(9))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"{\"v\":1,\"n\":\"x\",\"a\":\"y\"}\n")),
            Err(DecodeError::NoTarget)
        );
    }
}
