//! Reproduces every entry of `shared/vectors/chain-v1.json` (a copy lives beside this file).
#![allow(clippy::unwrap_used)]

use herald_proto::chain::{self, ChainVerifier, EntryFields, EntryKind, EntryRef, Verdict};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/chain-v1.json")).unwrap()
}

#[test]
fn every_vector_entry_is_reproduced() {
    let v = vectors();
    let channel = v["channel"].as_str().unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 7);
    let mut prev = chain::ZERO_HASH;
    for e in entries {
        let salt = chain::salt_from_hex(e["salt"].as_str().unwrap()).unwrap();
        let ch = chain::content_hash(&salt, e["content"].as_str().unwrap());
        assert_eq!(chain::to_hex(&ch), e["content_hash"].as_str().unwrap(), "content_hash of {e}");
        assert_eq!(chain::to_hex(&prev), e["prev_hash"].as_str().unwrap());
        let kind = EntryKind::parse(e["kind"].as_str().unwrap()).unwrap();
        let h = chain::entry_hash(
            &prev,
            &EntryFields {
                seq: e["seq"].as_u64().unwrap(),
                kind,
                channel_id: channel,
                author: e["author"].as_str().unwrap(),
                reference: e["ref"].as_str().unwrap(),
                ts_ms: e["ts_ms"].as_i64().unwrap(),
                content_hash: &ch,
            },
        );
        assert_eq!(chain::to_hex(&h), e["hash"].as_str().unwrap(), "hash of entry {}", e["seq"]);
        prev = h;
    }
}

fn entry_ref<'a>(channel: &'a str, e: &'a Value, with_content: bool) -> EntryRef<'a> {
    EntryRef {
        channel_id: channel,
        seq: e["seq"].as_u64().unwrap(),
        kind: EntryKind::parse(e["kind"].as_str().unwrap()).unwrap(),
        author: e["author"].as_str().unwrap(),
        reference: e["ref"].as_str().unwrap(),
        ts_ms: e["ts_ms"].as_i64().unwrap(),
        content: with_content.then(|| e["content"].as_str().unwrap()),
        salt: with_content.then(|| e["salt"].as_str().unwrap()),
        content_hash: e["content_hash"].as_str().unwrap(),
        prev_hash: e["prev_hash"].as_str().unwrap(),
        hash: e["hash"].as_str().unwrap(),
    }
}

#[test]
fn verifier_accepts_the_chain_and_tombstones() {
    let v = vectors();
    let channel = v["channel"].as_str().unwrap();
    let mut verifier = ChainVerifier::new();
    for (i, e) in v["entries"].as_array().unwrap().iter().enumerate() {
        // Every other entry arrives as a tombstone: no content, no salt.
        assert_eq!(verifier.check(&entry_ref(channel, e, i % 2 == 0)).unwrap(), Verdict::Next);
    }
    let first = &v["entries"][0];
    assert_eq!(verifier.check(&entry_ref(channel, first, true)).unwrap(), Verdict::Duplicate);
}

#[test]
fn verifier_rejects_tampering() {
    let v = vectors();
    let channel = v["channel"].as_str().unwrap();
    let entries = v["entries"].as_array().unwrap();

    // Changed content.
    let mut e = entries[2].clone();
    e["content"] = Value::from("Hello everyone");
    assert!(matches!(
        ChainVerifier::new().check(&entry_ref(channel, &e, true)),
        Err(chain::ChainError::ContentMismatch { .. })
    ));

    // Changed author.
    let mut e = entries[2].clone();
    e["author"] = Value::from("mallory");
    assert!(matches!(
        ChainVerifier::new().check(&entry_ref(channel, &e, true)),
        Err(chain::ChainError::HashMismatch { .. })
    ));

    // A skipped entry is a gap; a forged link is a broken link.
    let mut verifier = ChainVerifier::new();
    verifier.check(&entry_ref(channel, &entries[0], true)).unwrap();
    assert!(matches!(
        verifier.check(&entry_ref(channel, &entries[2], true)),
        Err(chain::ChainError::Gap { .. })
    ));
    let mut verifier = ChainVerifier::new();
    verifier.check(&entry_ref(channel, &entries[1], true)).unwrap();
    let mut forged = entries[2].clone();
    forged["seq"] = Value::from(3);
    forged["prev_hash"] = Value::from("ab".repeat(32));
    assert!(verifier.check(&entry_ref(channel, &forged, true)).is_err());
}
