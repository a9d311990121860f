//! `herald_proto::frames::parse_binary_frame` on arbitrary bytes: it must never panic, the
//! bytes it returns must be the tail of the frame, and re-encoding what it returns must parse
//! to the same header and bytes.
#![no_main]

use herald_proto::frames::{encode_binary, parse_binary_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, bytes)) = parse_binary_frame(data) {
        assert!(data.ends_with(bytes), "the bytes are not the frame's tail");
        let json = serde_json::to_vec(&header).expect("a header object serializes");
        let again = encode_binary(&json, bytes);
        let (h2, b2) = parse_binary_frame(&again).expect("a re-encoded frame parses");
        assert_eq!(h2, header);
        assert_eq!(b2, bytes);
    }
});
