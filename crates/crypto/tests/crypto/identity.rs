use herald_crypto::{CryptoError, Device, KeyBundle, PinnedDevices};

use crate::common::{device, flip_str, flips, rng};

/// A point of order 8 on Curve25519 (and the all-zero point of order 4/1).
const LOW_ORDER_X25519: [[u8; 32]; 3] = [
    [0u8; 32],
    {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda,
        0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
];

fn resign(d: &Device, b: &mut KeyBundle) {
    b.identity_signature = d.sign(&b.identity.signing_bytes());
}

#[test]
fn bundle_verifies_and_pins() {
    let mut r = rng(1);
    let (_d, b) = device(&mut r, "alice-phone");
    b.verify().unwrap();
    assert_eq!(b.one_time_keys.len(), 5);
    assert!(b.fallback_key.as_ref().unwrap().fallback);
    let mut p = PinnedDevices::new();
    p.pin(&b).unwrap();
    p.pin(&b).unwrap(); // idempotent
    assert_eq!(p.len(), 1);
    assert_eq!(p.get("alice-phone").unwrap(), &b.identity);
    assert!(matches!(p.get("nobody"), Err(CryptoError::UnknownDevice { .. })));
    // JSON round trip.
    let json = serde_json::to_string(&b).unwrap();
    let back: KeyBundle = serde_json::from_str(&json).unwrap();
    assert_eq!(back, b);
}

#[test]
fn tampered_bundle_fields_are_rejected() {
    let mut r = rng(2);
    let (_d, b) = device(&mut r, "dev");
    let mut cases: Vec<KeyBundle> = Vec::new();
    for v in flips(&b.identity.ed25519) {
        let mut t = b.clone();
        t.identity.ed25519 = v.try_into().unwrap();
        cases.push(t);
    }
    for v in flips(&b.identity.curve25519) {
        let mut t = b.clone();
        t.identity.curve25519 = v.try_into().unwrap();
        cases.push(t);
    }
    for v in flips(&b.identity.envelope) {
        let mut t = b.clone();
        t.identity.envelope = v.try_into().unwrap();
        cases.push(t);
    }
    for v in flips(&b.identity_signature) {
        let mut t = b.clone();
        t.identity_signature = v.try_into().unwrap();
        cases.push(t);
    }
    let mut t = b.clone();
    t.identity.device_id = flip_str(&t.identity.device_id);
    cases.push(t);
    for i in 0..b.one_time_keys.len() {
        for v in flips(&b.one_time_keys[i].key) {
            let mut t = b.clone();
            t.one_time_keys[i].key = v.try_into().unwrap();
            cases.push(t);
        }
        for v in flips(&b.one_time_keys[i].signature) {
            let mut t = b.clone();
            t.one_time_keys[i].signature = v.try_into().unwrap();
            cases.push(t);
        }
        let mut t = b.clone();
        t.one_time_keys[i].key_id = flip_str(&t.one_time_keys[i].key_id);
        cases.push(t);
        let mut t = b.clone();
        t.one_time_keys[i].fallback = true;
        cases.push(t);
    }
    let fb = b.fallback_key.clone().unwrap();
    for v in flips(&fb.key) {
        let mut t = b.clone();
        t.fallback_key.as_mut().unwrap().key = v.try_into().unwrap();
        cases.push(t);
    }
    for v in flips(&fb.signature) {
        let mut t = b.clone();
        t.fallback_key.as_mut().unwrap().signature = v.try_into().unwrap();
        cases.push(t);
    }
    let mut t = b.clone();
    t.fallback_key.as_mut().unwrap().fallback = false;
    cases.push(t);
    for (i, c) in cases.iter().enumerate() {
        assert!(c.verify().is_err(), "tampered bundle {i} accepted");
    }
}

#[test]
fn low_order_keys_are_rejected() {
    let mut r = rng(3);
    let (d, b) = device(&mut r, "dev");
    for p in LOW_ORDER_X25519 {
        // Even correctly self-signed, a low-order key is refused.
        let mut t = b.clone();
        t.identity.curve25519 = p;
        resign(&d, &mut t);
        assert!(matches!(t.verify(), Err(CryptoError::WeakKey { .. })));
        let mut t = b.clone();
        t.identity.envelope = p;
        resign(&d, &mut t);
        assert!(matches!(t.verify(), Err(CryptoError::WeakKey { .. })));
        let mut t = b.clone();
        let k = &mut t.one_time_keys[0];
        k.key = p;
        k.signature = d.sign(&herald_crypto::SignedKey::signing_bytes(&b.identity, &k.key_id, &k.key, false));
        assert!(matches!(t.verify(), Err(CryptoError::WeakKey { .. })));
    }
    // Ed25519 identity point (small order).
    let mut ed = [0u8; 32];
    ed[0] = 1;
    let mut t = b.clone();
    t.identity.ed25519 = ed;
    assert!(matches!(t.verify(), Err(CryptoError::WeakKey { .. })));
}

#[test]
fn key_reused_across_devices_is_rejected() {
    let mut r = rng(4);
    let (_a, ab) = device(&mut r, "a");
    let (bdev, bb) = device(&mut r, "b");
    let mut p = PinnedDevices::new();
    p.pin(&ab).unwrap();
    // Device b (validly self-signed) claims a's Curve25519 identity key.
    let mut t = bb.clone();
    t.identity.curve25519 = ab.identity.curve25519;
    resign(&bdev, &mut t);
    t.verify().unwrap();
    assert!(matches!(p.pin(&t), Err(CryptoError::KeyReuse { .. })));
    // ... or one of a's one-time keys.
    let mut t = bb.clone();
    let k = &mut t.one_time_keys[0];
    k.key = ab.one_time_keys[0].key;
    k.signature = bdev.sign(&herald_crypto::SignedKey::signing_bytes(&bb.identity, &k.key_id, &k.key, false));
    t.verify().unwrap();
    assert!(matches!(p.pin(&t), Err(CryptoError::KeyReuse { .. })));
    // ... or a's signing key (then its self-signature cannot verify).
    let mut t = bb.clone();
    t.identity.ed25519 = ab.identity.ed25519;
    assert!(p.pin(&t).is_err());
    // The untouched bundle pins fine.
    p.pin(&bb).unwrap();
    assert_eq!(p.len(), 2);
}

#[test]
fn device_id_cannot_be_repinned_to_other_keys() {
    let mut r = rng(5);
    let (_a, ab) = device(&mut r, "a");
    let (_evil, eb) = device(&mut r, "a");
    let mut p = PinnedDevices::new();
    p.pin(&ab).unwrap();
    assert!(matches!(p.pin(&eb), Err(CryptoError::PinMismatch { .. })));
}

#[test]
fn bad_device_ids_are_rejected() {
    let mut r = rng(6);
    assert!(Device::new(&mut r, "").is_err());
    assert!(Device::new(&mut r, "x".repeat(256)).is_err());
    assert!(Device::new(&mut r, "a\nb").is_err());
    assert!(Device::new(&mut r, "x".repeat(255)).is_ok());
}
