use herald_crypto::channel::SEALED_PREFIX;
use herald_crypto::{CryptoError, Device, EpochKey, EpochKeyring, SealedMessage, open_message, seal_message};

use crate::common::{b64d, b64e, device, flips, pins, rng};

#[test]
fn seal_open_round_trip() {
    let mut r = rng(20);
    let (alice, ab) = device(&mut r, "alice");
    let (_bob, bb) = device(&mut r, "bob");
    let p = pins(&[&ab, &bb]);
    let mut ring = EpochKeyring::new("general").unwrap();
    let k0 = EpochKey::generate(&mut r);
    let k1 = EpochKey::generate(&mut r);
    assert_ne!(k0, k1);
    ring.insert(0, k0.clone()).unwrap();
    ring.insert(1, k1.clone()).unwrap();
    assert!(ring.insert(1, k0.clone()).is_err());
    for (epoch, key) in [(0u64, &k0), (1, &k1)] {
        let s = seal_message(&mut r, &alice, "general", epoch, key, b"hi all").unwrap();
        assert!(s.starts_with(SEALED_PREFIX));
        let m = open_message(&s, &ring, &p).unwrap();
        assert_eq!((m.epoch, m.sender.as_str(), &m.plaintext[..]), (epoch, "alice", &b"hi all"[..]));
    }
    let empty = seal_message(&mut r, &alice, "general", 1, &k1, b"").unwrap();
    assert_eq!(open_message(&empty, &ring, &p).unwrap().plaintext, b"");
    // Epoch not held.
    let s = seal_message(&mut r, &alice, "general", 9, &k1, b"x").unwrap();
    assert!(matches!(open_message(&s, &ring, &p), Err(CryptoError::UnknownEpoch { epoch: 9, .. })));
}

#[test]
fn every_flipped_byte_is_rejected() {
    let mut r = rng(21);
    let (alice, ab) = device(&mut r, "alice");
    let p = pins(&[&ab]);
    let mut ring = EpochKeyring::new("c").unwrap();
    let key = EpochKey::generate(&mut r);
    ring.insert(0x0102, key.clone()).unwrap();
    let s = seal_message(&mut r, &alice, "c", 0x0102, &key, b"payload").unwrap();
    let raw = b64d(s.strip_prefix(SEALED_PREFIX).unwrap());
    // epoch(8) | len(1) | sender | nonce(24) | ct | sig(64): every byte of every field.
    for v in flips(&raw) {
        let t = format!("{SEALED_PREFIX}{}", b64e(&v));
        assert!(open_message(&t, &ring, &p).is_err());
    }
    // Truncations and extensions.
    for n in 0..raw.len() {
        let t = format!("{SEALED_PREFIX}{}", b64e(&raw[..n]));
        assert!(open_message(&t, &ring, &p).is_err());
    }
    let mut longer = raw.clone();
    longer.push(0);
    assert!(open_message(&format!("{SEALED_PREFIX}{}", b64e(&longer)), &ring, &p).is_err());
    // Prefix and base64 damage.
    assert!(matches!(
        open_message(&s.replacen("hm1.", "hm2.", 1), &ring, &p),
        Err(CryptoError::Malformed { .. })
    ));
    assert!(open_message(&format!("{s}!"), &ring, &p).is_err());
    assert!(open_message("", &ring, &p).is_err());
}

#[test]
fn bound_to_channel_epoch_and_key() {
    let mut r = rng(22);
    let (alice, ab) = device(&mut r, "alice");
    let key = EpochKey::generate(&mut r);
    let s = seal_message(&mut r, &alice, "one", 3, &key, b"m").unwrap();
    let m = SealedMessage::parse(&s).unwrap();
    assert_eq!((m.epoch(), m.sender()), (3, "alice"));
    assert_eq!(m.open("one", &key, &ab.identity).unwrap(), b"m");
    // Replayed into another channel: the signature covers the channel id.
    assert!(matches!(m.open("two", &key, &ab.identity), Err(CryptoError::BadSignature { .. })));
    // Wrong epoch key: the signature holds, the AEAD does not.
    let other = EpochKey::generate(&mut r);
    assert!(matches!(m.open("one", &other, &ab.identity), Err(CryptoError::Decrypt { .. })));
}

#[test]
fn a_member_cannot_forge_another_members_message() {
    let mut r = rng(23);
    let (_alice, ab) = device(&mut r, "alice");
    let (_bob, bb) = device(&mut r, "bob");
    let p = pins(&[&ab, &bb]);
    let mut ring = EpochKeyring::new("c").unwrap();
    let key = EpochKey::generate(&mut r);
    ring.insert(0, key.clone()).unwrap();
    // Bob knows the epoch key and builds a device that calls itself "alice".
    let fake_alice = Device::new(&mut r, "alice").unwrap();
    let s = seal_message(&mut r, &fake_alice, "c", 0, &key, b"I owe bob 100").unwrap();
    assert!(matches!(open_message(&s, &ring, &p), Err(CryptoError::BadSignature { .. })));
}
