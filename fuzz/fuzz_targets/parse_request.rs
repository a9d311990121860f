//! `herald_proto::frames::parse_request` on arbitrary text: it must never panic, and what it
//! accepts must survive a round trip (serialize the frame, parse it again, get the same frame).
#![no_main]

use herald_proto::frames::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by the time the gateway sees it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_request(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("a parsed frame serializes");
            let reparsed = parse_request(&again).expect("a serialized frame parses");
            assert_eq!(reparsed, frame, "round trip changed the frame");
        }
        Err(bad) => {
            // The error echoes an id only when one was read, and never echoes at length.
            assert!(bad.error.message.chars().count() <= 260, "error message too long");
        }
    }
});
