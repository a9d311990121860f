//! Rooms (PROTOCOL.md §8): participants of a channel exchanging typed JSON messages with
//! optional binary attachments, and streams of chunks with credit-based flow control.
//!
//! The requests are a separate enum from [`crate::frames::Request`]: a gateway tries
//! [`crate::frames::parse_request`] first and, for an op named `room.*` or `stream.*`,
//! [`parse_room_request`]. Binary frames (§1) carry a room request as their header
//! ([`room_request_of_header`]) and the attachment or chunk bytes after it.
//!
//! Pure: no I/O, no clock.

use crate::error::{ErrorCode, ErrorDetail};
use crate::frames::BadFrame;
use crate::model::UserKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest `attributes` of a participant, serialized (§8).
pub const MAX_ATTRIBUTES_BYTES: usize = 4096;

/// Default credit of `stream.accept` when it names none: 1 MiB.
pub const DEFAULT_STREAM_CREDIT: u64 = 1 << 20;

/// One participant of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub participant_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: UserKind,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// A room request: the `op` and its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum RoomRequest {
    #[serde(rename = "room.enter")]
    Enter {
        channel: String,
        #[serde(default)]
        attributes: Option<Map<String, Value>>,
    },
    #[serde(rename = "room.update")]
    Update { channel: String, attributes: Map<String, Value> },
    #[serde(rename = "room.leave")]
    Leave { channel: String },
    #[serde(rename = "room.participants")]
    Participants {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "room.send")]
    Send {
        channel: String,
        to: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        message: Value,
    },
    #[serde(rename = "room.broadcast")]
    Broadcast {
        channel: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        message: Value,
    },
    #[serde(rename = "stream.open")]
    StreamOpen {
        channel: String,
        to: String,
        #[serde(default)]
        header: Value,
    },
    #[serde(rename = "stream.accept")]
    StreamAccept {
        stream_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<u64>,
    },
    #[serde(rename = "stream.reject")]
    StreamReject {
        stream_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<u64>,
    },
    #[serde(rename = "stream.credit")]
    StreamCredit { stream_id: String, bytes: u64 },
    #[serde(rename = "stream.chunk")]
    StreamChunk {
        stream_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Value>,
    },
    #[serde(rename = "stream.close")]
    StreamClose { stream_id: String },
}

impl RoomRequest {
    /// The op name as it appears on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            RoomRequest::Enter { .. } => "room.enter",
            RoomRequest::Update { .. } => "room.update",
            RoomRequest::Leave { .. } => "room.leave",
            RoomRequest::Participants { .. } => "room.participants",
            RoomRequest::Send { .. } => "room.send",
            RoomRequest::Broadcast { .. } => "room.broadcast",
            RoomRequest::StreamOpen { .. } => "stream.open",
            RoomRequest::StreamAccept { .. } => "stream.accept",
            RoomRequest::StreamReject { .. } => "stream.reject",
            RoomRequest::StreamCredit { .. } => "stream.credit",
            RoomRequest::StreamChunk { .. } => "stream.chunk",
            RoomRequest::StreamClose { .. } => "stream.close",
        }
    }

    /// Whether this op may come as a binary frame (with bytes after its header).
    pub fn takes_bytes(&self) -> bool {
        matches!(
            self,
            RoomRequest::Send { .. } | RoomRequest::Broadcast { .. } | RoomRequest::StreamChunk { .. }
        )
    }
}

/// Whether `op` names a room or stream op (so a gateway parses it with [`parse_room_request`]).
pub fn is_room_op(op: &str) -> bool {
    op.starts_with("room.") || op.starts_with("stream.")
}

/// A room request frame: `{"id": …, "op": "room.…", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRequestFrame {
    #[serde(default)]
    pub id: Value,
    #[serde(flatten)]
    pub request: RoomRequest,
}

fn bad(id: Value, message: String) -> BadFrame {
    BadFrame { id, error: ErrorDetail { code: ErrorCode::BadRequest, message, retry_after_ms: None } }
}

/// Parses a text frame as a room request; `None` if its `op` is not a room or stream op (or
/// it is not a JSON object with a string `op`), so the caller answers as it does for any
/// other frame.
pub fn parse_room_request(text: &str) -> Option<Result<RoomRequestFrame, BadFrame>> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(default)]
        id: Value,
        #[serde(borrow, default)]
        op: Option<std::borrow::Cow<'a, str>>,
    }
    let peek: Peek<'_> = serde_json::from_str(text).ok()?;
    if !peek.op.as_deref().is_some_and(is_room_op) {
        return None;
    }
    Some(serde_json::from_str::<RoomRequestFrame>(text).map_err(|e| bad(peek.id, cap(&e.to_string()))))
}

/// A room request from the header of a binary frame.
pub fn room_request_of_header(header: Map<String, Value>) -> Result<RoomRequestFrame, BadFrame> {
    let id = header.get("id").cloned().unwrap_or(Value::Null);
    let op = header.get("op").and_then(Value::as_str).map(str::to_owned);
    match op {
        Some(op) if is_room_op(&op) => {}
        Some(op) => {
            return Err(bad(
                id,
                format!(
                    "op {:?} takes no binary frame; only room.send, room.broadcast and stream.chunk do",
                    cap(&op)
                ),
            ));
        }
        None => return Err(bad(id, "missing field `op`".into())),
    }
    let frame: RoomRequestFrame =
        serde_json::from_value(Value::Object(header)).map_err(|e| bad(id.clone(), cap(&e.to_string())))?;
    if !frame.request.takes_bytes() {
        return Err(bad(
            id,
            format!(
                "op {:?} takes no binary frame; only room.send, room.broadcast and stream.chunk do",
                frame.request.op()
            ),
        ));
    }
    Ok(frame)
}

fn cap(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `ok` of `room.enter`: the list when the room is small, else only the count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnterOk {
    pub participant_id: String,
    /// The channel id of the room (the request may have named it by its name). Empty from a
    /// server that predates it.
    #[serde(default)]
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<Participant>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// `ok` of `room.participants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantsOk {
    pub participants: Vec<Participant>,
    pub has_more: bool,
}

/// `ok` of `stream.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpenOk {
    pub stream_id: String,
}

/// A room push (server → client). `RoomMessage` and `StreamChunk` may arrive as the header
/// of a binary frame, the bytes after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomEvent {
    ParticipantAdded {
        channel: String,
        participant: Participant,
    },
    ParticipantUpdated {
        channel: String,
        participant: Participant,
    },
    ParticipantRemoved {
        channel: String,
        participant: Participant,
    },
    PresenceCount {
        channel: String,
        count: u64,
    },
    RoomMessage {
        channel: String,
        from: Participant,
        #[serde(rename = "type")]
        kind: String,
        message: Value,
    },
    StreamRequest {
        stream_id: String,
        channel: String,
        from: Participant,
        header: Value,
    },
    StreamChunk {
        stream_id: String,
        #[serde(default)]
        header: Option<Value>,
    },
    StreamCredit {
        stream_id: String,
        bytes: u64,
    },
    StreamClosed {
        stream_id: String,
    },
    StreamAborted {
        stream_id: String,
        reason: String,
    },
}

/// The event names of [`RoomEvent`], for a client sorting frames without parsing them twice.
pub const ROOM_EVENTS: &[&str] = &[
    "participant_added",
    "participant_updated",
    "participant_removed",
    "presence_count",
    "room_message",
    "stream_request",
    "stream_chunk",
    "stream_credit",
    "stream_closed",
    "stream_aborted",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::frames::encode_binary;

    #[test]
    fn room_ops_parse_and_others_are_left_alone() {
        let f = parse_room_request(
            r#"{"id":3,"op":"room.send","channel":"c","to":"p","type":"chat","message":{"a":1}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.id, Value::from(3));
        assert!(
            matches!(f.request, RoomRequest::Send { ref to, ref kind, .. } if to == "p" && kind == "chat")
        );
        assert!(parse_room_request(r#"{"id":1,"op":"message.send"}"#).is_none());
        assert!(parse_room_request("not json").is_none());
        let e = parse_room_request(r#"{"id":9,"op":"room.send","channel":"c"}"#).unwrap().unwrap_err();
        assert_eq!(e.id, Value::from(9));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn binary_headers_only_for_ops_that_take_bytes() {
        let frame = encode_binary(br#"{"id":2,"op":"stream.chunk","stream_id":"s"}"#, b"xyz");
        let (header, bytes) = crate::frames::parse_binary_frame(&frame).unwrap();
        let f = room_request_of_header(header).unwrap();
        assert_eq!(bytes, b"xyz");
        assert!(matches!(f.request, RoomRequest::StreamChunk { .. }));
        let frame = encode_binary(br#"{"id":2,"op":"room.leave","channel":"c"}"#, b"");
        let (header, _) = crate::frames::parse_binary_frame(&frame).unwrap();
        assert_eq!(room_request_of_header(header).unwrap_err().id, Value::from(2));
        let frame = encode_binary(br#"{"id":5,"op":"message.send"}"#, b"");
        let (header, _) = crate::frames::parse_binary_frame(&frame).unwrap();
        assert_eq!(room_request_of_header(header).unwrap_err().id, Value::from(5));
    }

    #[test]
    fn events_round_trip_with_their_names() {
        let p = Participant {
            participant_id: "p1".into(),
            user: "ada".into(),
            name: None,
            kind: UserKind::Agent,
            attributes: Map::new(),
        };
        let ev = RoomEvent::ParticipantAdded { channel: "c".into(), participant: p };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.starts_with(r#"{"event":"participant_added""#), "{text}");
        assert!(text.contains(r#""kind":"agent""#));
        assert_eq!(serde_json::from_str::<RoomEvent>(&text).unwrap(), ev);
        for name in ROOM_EVENTS {
            assert!(!name.is_empty());
        }
    }
}
