//! Properties of parsing: no input makes the parsers panic, and what parses round-trips.
#![allow(clippy::unwrap_used)]

use herald_proto::frames::{Request, RequestFrame, decode_binary, parse_request};
use herald_proto::{ChannelName, ErrorCode, Subject, UserId};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn to_hex_is_lowercase_hex_and_parses_back(bytes in proptest::collection::vec(any::<u8>(), 0..70)) {
        let text = herald_proto::chain::to_hex(&bytes);
        prop_assert_eq!(&text, &hex::encode(&bytes));
        if let Ok(h) = <[u8; 32]>::try_from(bytes.as_slice()) {
            prop_assert_eq!(herald_proto::chain::hash_from_hex(&text), Some(h));
        }
    }

    #[test]
    fn parse_request_never_panics_and_errors_are_bad_request(s in ".{0,300}") {
        if let Err(bad) = parse_request(&s) {
            prop_assert_eq!(bad.error.code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn truncated_frames_are_refused_cleanly(cut in 0usize..80) {
        let frame = r#"{"id":42,"op":"message.send","channel":"project-x","content":"hello","client_id":"k1"}"#;
        let cut = cut.min(frame.len());
        match parse_request(&frame[..cut]) {
            Ok(f) => prop_assert_eq!(cut, frame.len(), "only the whole frame parses: {:?}", f),
            Err(bad) => prop_assert_eq!(bad.error.code, ErrorCode::BadRequest),
        }
    }

    #[test]
    fn requests_round_trip(channel in "[a-z0-9_-]{2,64}", content in ".{0,100}", id in any::<u32>()) {
        let f = RequestFrame {
            id: serde_json::Value::from(id),
            request: Request::ChannelJoin { channel: channel.clone(), auth: None },
        };
        let text = serde_json::to_string(&f).unwrap();
        prop_assert_eq!(parse_request(&text).unwrap(), f);
        let send = format!(
            r#"{{"id":{id},"op":"message.send","channel":{},"content":{}}}"#,
            serde_json::to_string(&channel).unwrap(),
            serde_json::to_string(&content).unwrap()
        );
        match parse_request(&send).unwrap().request {
            Request::MessageSend { channel: c, message } => {
                prop_assert_eq!(c, channel);
                prop_assert_eq!(message.content, content);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn names_accept_exactly_their_alphabet(s in ".{0,140}") {
        let user_ok = (1..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b));
        prop_assert_eq!(UserId::parse(s.clone()).is_ok(), user_ok);
        let chan_ok = (2..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        prop_assert_eq!(ChannelName::parse(s.clone()).is_ok(), chan_ok);
        let subj_ok = (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        prop_assert_eq!(Subject::parse(s).is_ok(), subj_ok);
    }

    #[test]
    fn binary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok((header, body)) = decode_binary(&bytes) {
            prop_assert_eq!(4 + header.len() + body.len(), bytes.len());
        }
    }
}
