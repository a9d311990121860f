use herald_crypto::{CryptoError, Device, OlmMessage, OlmSession, PickleKey};

use crate::common::{b64d, b64e, device, flips, rng};

struct Pair {
    alice: Device,
    bob: Device,
    a: OlmSession,
    b: OlmSession,
}

/// Alice opens a session from Bob's first one-time key; Bob answers.
fn established() -> Pair {
    let mut r = rng(10);
    let (alice, ab) = device(&mut r, "alice");
    let (mut bob, bb) = device(&mut r, "bob");
    let mut a = alice.create_outbound_session(&bb.identity, &bb.one_time_keys[0]).unwrap();
    let m0 = a.encrypt(b"hello bob");
    assert!(m0.pre_key);
    let (mut b, pt) = bob.create_inbound_session(&ab.identity, &m0).unwrap();
    assert_eq!(pt, b"hello bob");
    assert_eq!(a.session_id(), b.session_id());
    let reply = b.encrypt(b"hi alice");
    assert!(!reply.pre_key);
    assert_eq!(a.decrypt(&reply).unwrap(), b"hi alice");
    Pair { alice, bob, a, b }
}

#[test]
fn pre_key_messages_until_answered() {
    let mut r = rng(11);
    let (alice, ab) = device(&mut r, "alice");
    let (mut bob, bb) = device(&mut r, "bob");
    let mut a = alice.create_outbound_session(&bb.identity, &bb.one_time_keys[1]).unwrap();
    let msgs: Vec<OlmMessage> = (0..3).map(|i| a.encrypt(&[i])).collect();
    assert!(msgs.iter().all(|m| m.pre_key));
    let (mut b, pt) = bob.create_inbound_session(&ab.identity, &msgs[0]).unwrap();
    assert_eq!(pt, [0]);
    assert!(b.matches(&msgs[1]));
    assert_eq!(b.decrypt(&msgs[2]).unwrap(), [2]);
    assert_eq!(b.decrypt(&msgs[1]).unwrap(), [1]);
    let reply = b.encrypt(b"ok");
    a.decrypt(&reply).unwrap();
    assert!(a.has_received_message());
    assert!(!a.encrypt(b"now normal").pre_key);
    assert_eq!(b.peer_device(), "alice");
}

#[test]
fn out_of_order_and_skipped_messages_decrypt() {
    let mut p = established();
    let msgs: Vec<OlmMessage> = (0u8..8).map(|i| p.a.encrypt(&[i])).collect();
    for i in [7usize, 2, 5, 0, 3] {
        assert_eq!(p.b.decrypt(&msgs[i]).unwrap(), [i as u8]);
    }
    // Several ratchet turns, then the stragglers.
    for round in 0u8..3 {
        let m = p.b.encrypt(&[round]);
        assert_eq!(p.a.decrypt(&m).unwrap(), [round]);
        let m = p.a.encrypt(&[100 + round]);
        assert_eq!(p.b.decrypt(&m).unwrap(), [100 + round]);
    }
    for i in [1usize, 4, 6] {
        assert_eq!(p.b.decrypt(&msgs[i]).unwrap(), [i as u8]);
    }
}

#[test]
fn replayed_messages_are_rejected() {
    let mut p = established();
    let m = p.a.encrypt(b"once");
    assert_eq!(p.b.decrypt(&m).unwrap(), b"once");
    assert!(matches!(p.b.decrypt(&m), Err(CryptoError::OlmDecrypt(_))));
    // A skipped key is also single-use.
    let m1 = p.a.encrypt(b"1");
    let m2 = p.a.encrypt(b"2");
    p.b.decrypt(&m2).unwrap();
    p.b.decrypt(&m1).unwrap();
    assert!(p.b.decrypt(&m1).is_err());
    assert!(p.b.decrypt(&m2).is_err());
}

#[test]
fn replayed_pre_key_message_cannot_create_a_second_session() {
    let mut r = rng(12);
    let (alice, ab) = device(&mut r, "alice");
    let (mut bob, bb) = device(&mut r, "bob");
    // One-time key: consumed.
    let mut a = alice.create_outbound_session(&bb.identity, &bb.one_time_keys[2]).unwrap();
    let m = a.encrypt(b"x");
    bob.create_inbound_session(&ab.identity, &m).unwrap();
    assert!(bob.create_inbound_session(&ab.identity, &m).is_err());
    // Fallback key: not consumed by vodozemac, so the device remembers.
    let fb = bb.fallback_key.clone().unwrap();
    let mut a2 = alice.create_outbound_session(&bb.identity, &fb).unwrap();
    let m = a2.encrypt(b"y");
    let (_s, pt) = bob.create_inbound_session(&ab.identity, &m).unwrap();
    assert_eq!(pt, b"y");
    assert!(matches!(bob.create_inbound_session(&ab.identity, &m), Err(CryptoError::Replay { .. })));
}

#[test]
fn failed_decryption_does_not_change_the_session() {
    let mut p = established();
    let m1 = p.a.encrypt(b"first");
    let m2 = p.a.encrypt(b"second");
    // Every one-byte corruption of m2 fails and leaves the session intact.
    for body in flips(&m2.body) {
        let t = OlmMessage { pre_key: false, body };
        assert!(p.b.decrypt(&t).is_err());
    }
    let wrong_kind = OlmMessage { pre_key: true, body: m2.body.clone() };
    assert!(p.b.decrypt(&wrong_kind).is_err());
    assert_eq!(p.b.decrypt(&m1).unwrap(), b"first");
    assert_eq!(p.b.decrypt(&m2).unwrap(), b"second");
    let back = p.b.encrypt(b"still in sync");
    assert_eq!(p.a.decrypt(&back).unwrap(), b"still in sync");
}

#[test]
fn tampered_pre_key_messages_are_rejected() {
    let mut r = rng(13);
    let (alice, ab) = device(&mut r, "alice");
    let (mut bob, bb) = device(&mut r, "bob");
    let mut a = alice.create_outbound_session(&bb.identity, &bb.one_time_keys[0]).unwrap();
    let m = a.encrypt(b"hello");
    for body in flips(&m.body) {
        let t = OlmMessage { pre_key: true, body };
        assert!(bob.create_inbound_session(&ab.identity, &t).is_err());
    }
    // Untouched message still works: failures consumed nothing.
    let (_s, pt) = bob.create_inbound_session(&ab.identity, &m).unwrap();
    assert_eq!(pt, b"hello");
}

#[test]
fn substituted_one_time_key_is_refused() {
    let mut r = rng(14);
    let (alice, _ab) = device(&mut r, "alice");
    let (_bob, bb) = device(&mut r, "bob");
    let (_server, sb) = device(&mut r, "server");
    // The server hands out its own key, or Bob's key with a broken signature.
    let mut k = sb.one_time_keys[0].clone();
    k.key_id = bb.one_time_keys[0].key_id.clone();
    assert!(matches!(alice.create_outbound_session(&bb.identity, &k), Err(CryptoError::BadSignature { .. })));
    let mut k = bb.one_time_keys[0].clone();
    k.signature[0] ^= 1;
    assert!(alice.create_outbound_session(&bb.identity, &k).is_err());
}

#[test]
fn sessions_and_devices_pickle_round_trip() {
    let mut r = rng(15);
    let key = PickleKey::generate(&mut r);
    let p = established();
    let pa = p.a.pickle(&mut r, &key);
    let pb = p.b.pickle(&mut r, &key);
    let dev = p.bob.pickle(&mut r, &key);
    assert!(pa.starts_with("hses1.") && dev.starts_with("hdev1."));
    let mut a2 = OlmSession::from_pickle(&pa, &key).unwrap();
    let mut b2 = OlmSession::from_pickle(&pb, &key).unwrap();
    let bob2 = Device::from_pickle(&dev, &key).unwrap();
    assert_eq!(bob2.identity_keys(), p.bob.identity_keys());
    assert_eq!(a2.session_id(), p.a.session_id());
    let m = a2.encrypt(b"after restore");
    assert_eq!(b2.decrypt(&m).unwrap(), b"after restore");
    // Wrong key, and every one-byte corruption, fail with a typed error.
    let wrong = PickleKey::from_bytes([7u8; 32]);
    assert!(OlmSession::from_pickle(&pa, &wrong).is_err());
    assert!(Device::from_pickle(&dev, &wrong).is_err());
    let raw = b64d(pa.strip_prefix("hses1.").unwrap());
    for v in flips(&raw) {
        assert!(OlmSession::from_pickle(&format!("hses1.{}", b64e(&v)), &key).is_err());
    }
    let raw = b64d(dev.strip_prefix("hdev1.").unwrap());
    for v in flips(&raw).step_by(7) {
        assert!(Device::from_pickle(&format!("hdev1.{}", b64e(&v)), &key).is_err());
    }
    assert!(Device::from_pickle(&pa, &key).is_err()); // session pickle is not a device
    let _ = p.alice.identity_keys();
}
