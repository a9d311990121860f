//! Cheap classification of server frames by their first bytes, so the load generator does not
//! spend the CPU it shares with the server on JSON parsing.
//!
//! It relies on the server's serialization order, which serde fixes: a reply is
//! `{"id":…,"ok":…}` or `{"id":…,"error":…}`, an event starts with `{"event":"<name>"`, and
//! a `message` event's first `"content"` is the message's own (a `reply_to` snapshot comes
//! after it). The bench's message content is `{"t":<nanos>,"p":"x…"}`, which arrives
//! JSON-escaped.

use memchr::memmem;
use std::sync::LazyLock;

/// What a server frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A reply; `id` is `None` when the server could not read the request's id.
    Reply { id: Option<u64>, ok: bool },
    /// A `message` event; `sent_nanos` is the bench timestamp in its content, if any.
    Message { sent_nanos: Option<u64> },
    /// Any other event.
    Event,
    /// Not a frame the bench knows.
    Unknown,
}

pub fn classify(text: &str) -> Frame {
    if let Some(rest) = text.strip_prefix(r#"{"id":"#) {
        let (id, after) = leading_number(rest);
        return Frame::Reply { id, ok: after.starts_with(r#","ok""#) };
    }
    if text.starts_with(r#"{"event":"message","#) {
        return Frame::Message { sent_nanos: sent_nanos(text) };
    }
    if text.starts_with(r#"{"event":"#) {
        return Frame::Event;
    }
    Frame::Unknown
}

/// The `t` of the bench content `{"t":N,…}` ([`super::peers::payload`]) inside a `message`
/// event.
fn sent_nanos(text: &str) -> Option<u64> {
    const CONTENT: &str = r#""content":""#;
    // memchr's SIMD search, built once: `str::find` (two-way, byte by byte) over a few hundred
    // bytes per frame was the generator's largest cost at a million deliveries per second.
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(CONTENT));
    let start = FINDER.find(text.as_bytes())? + CONTENT.len();
    let content = text.get(start..)?;
    // Inside a JSON string the key reads {\"t\":N.
    const KEY: &str = r#"{\"t\":"#;
    let rest = content.strip_prefix(KEY)?;
    leading_number(rest).0
}

fn leading_number(s: &str) -> (Option<u64>, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    (s[..digits].parse().ok(), &s[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_told_apart_by_ok_or_error() {
        assert_eq!(classify(r#"{"id":12,"ok":{}}"#), Frame::Reply { id: Some(12), ok: true });
        assert_eq!(
            classify(r#"{"id":3,"error":{"code":"forbidden","message":"x"}}"#),
            Frame::Reply { id: Some(3), ok: false }
        );
        assert_eq!(classify(r#"{"id":null,"error":{}}"#), Frame::Reply { id: None, ok: false });
    }

    #[test]
    fn message_event_timestamp_is_read_from_the_escaped_content() {
        // The content as serde_json writes it into the event.
        let content = serde_json::to_string(&super::super::peers::payload(123456789, 64)).unwrap_or_default();
        let frame = format!(
            r#"{{"event":"message","channel":"c","seq":4,"hash":"h","prev_hash":"p","ts":"t","author":"a","content_hash":"x","message":{{"id":"m","seq":4,"author":"a","type":"chat.text","content":{content},"ts":"t"}}}}"#
        );
        assert_eq!(classify(&frame), Frame::Message { sent_nanos: Some(123456789) });
    }

    #[test]
    fn foreign_content_has_no_timestamp_and_other_events_are_events() {
        let frame = r#"{"event":"message","channel":"c","message":{"content":"hello","ts":"t"}}"#;
        assert_eq!(classify(frame), Frame::Message { sent_nanos: None });
        assert_eq!(classify(r#"{"event":"member_joined","channel":"c"}"#), Frame::Event);
        assert_eq!(classify("not json"), Frame::Unknown);
    }
}
