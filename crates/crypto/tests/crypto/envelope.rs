use herald_crypto::{
    CryptoError, EpochKey, EpochKeyring, KeyEnvelope, Member, seal_epoch_key, seal_for_members, seal_keyring,
};

use crate::common::{device, flip_str, flips, pins, rng};

#[test]
fn envelope_round_trip_and_json() {
    let mut r = rng(30);
    let (keeper, kb) = device(&mut r, "keeper");
    let (bob, bb) = device(&mut r, "bob");
    let key = EpochKey::generate(&mut r);
    let env = seal_epoch_key(&mut r, &keeper, "general", 4, &key, &bb.identity).unwrap();
    assert_eq!(env.ciphertext.len(), 48);
    let json = serde_json::to_string(&env).unwrap();
    let back: KeyEnvelope = serde_json::from_str(&json).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.open(&bob, &kb.identity).unwrap(), key);
    let mut ring = EpochKeyring::new("general").unwrap();
    back.open_into(&bob, &kb.identity, &mut ring).unwrap();
    assert_eq!(ring.get(4).unwrap(), &key);
    let mut other = EpochKeyring::new("random").unwrap();
    assert!(back.open_into(&bob, &kb.identity, &mut other).is_err());
    // Not addressed to the keeper.
    assert!(matches!(env.open(&keeper, &kb.identity), Err(CryptoError::Mismatch { .. })));
    // Another device with the same id (no envelope secret) cannot open it.
    let (bob_clone, _) = device(&mut r, "bob");
    assert!(env.open(&bob_clone, &kb.identity).is_err());
}

#[test]
fn every_field_is_authenticated() {
    let mut r = rng(31);
    let (keeper, kb) = device(&mut r, "keeper");
    let (bob, bb) = device(&mut r, "bob");
    let key = EpochKey::generate(&mut r);
    let env = seal_epoch_key(&mut r, &keeper, "general", 4, &key, &bb.identity).unwrap();
    let mut cases = Vec::new();
    let mut t = env.clone();
    t.v = 2;
    cases.push(t);
    let mut t = env.clone();
    t.channel = flip_str(&t.channel);
    cases.push(t);
    let mut t = env.clone();
    t.epoch ^= 1;
    cases.push(t);
    let mut t = env.clone();
    t.sender = flip_str(&t.sender);
    cases.push(t);
    let mut t = env.clone();
    t.recipient = flip_str(&t.recipient);
    cases.push(t);
    for v in flips(&env.enc) {
        let mut t = env.clone();
        t.enc = v.try_into().unwrap();
        cases.push(t);
    }
    for v in flips(&env.ciphertext) {
        let mut t = env.clone();
        t.ciphertext = v;
        cases.push(t);
    }
    let mut t = env.clone();
    t.ciphertext.pop();
    cases.push(t);
    for v in flips(&env.signature) {
        let mut t = env.clone();
        t.signature = v.try_into().unwrap();
        cases.push(t);
    }
    for (i, c) in cases.iter().enumerate() {
        assert!(c.open(&bob, &kb.identity).is_err(), "tampered envelope {i} opened");
    }
    // Bad JSON is a typed error, not a panic.
    assert!(serde_json::from_str::<KeyEnvelope>(r#"{"v":1}"#).is_err());
}

#[test]
fn server_cannot_inject_its_own_key() {
    let mut r = rng(32);
    let (_keeper, kb) = device(&mut r, "keeper");
    let (bob, bb) = device(&mut r, "bob");
    // The server makes its own device, calls it "keeper", seals a key it knows.
    let (fake_keeper, _) = device(&mut r, "keeper");
    let key = EpochKey::generate(&mut r);
    let env = seal_epoch_key(&mut r, &fake_keeper, "general", 5, &key, &bb.identity).unwrap();
    assert!(matches!(env.open(&bob, &kb.identity), Err(CryptoError::BadSignature { .. })));
}

#[test]
fn keyring_history_and_member_sealing() {
    let mut r = rng(33);
    let (keeper, kb) = device(&mut r, "keeper");
    let (new1, n1) = device(&mut r, "new-phone");
    let (_new2, n2) = device(&mut r, "new-laptop");
    let (_old, ob) = device(&mut r, "old");
    let p = pins(&[&kb, &n1, &n2, &ob]);
    let mut ring = EpochKeyring::new("c").unwrap();
    for e in 0..3 {
        ring.insert(e, EpochKey::generate(&mut r)).unwrap();
    }
    let recipients = [n1.identity.clone(), n2.identity.clone()];
    let current = seal_keyring(&mut r, &keeper, &ring, &recipients, false).unwrap();
    assert_eq!(current.len(), 2);
    assert!(current.iter().all(|e| e.epoch == 2));
    let all = seal_keyring(&mut r, &keeper, &ring, &recipients, true).unwrap();
    assert_eq!(all.len(), 6);
    let mut mine = EpochKeyring::new("c").unwrap();
    for e in all.iter().filter(|e| e.recipient == "new-phone") {
        e.open_into(&new1, &kb.identity, &mut mine).unwrap();
    }
    for (e, k) in ring.iter() {
        assert_eq!(mine.get(e).unwrap(), k);
    }
    // Members of the new epoch only; the sender skips itself.
    let members = vec![
        Member { user: "keeper".into(), devices: vec!["keeper".into()] },
        Member { user: "newbie".into(), devices: vec!["new-phone".into(), "new-laptop".into()] },
    ];
    let key = EpochKey::generate(&mut r);
    let envs = seal_for_members(&mut r, &keeper, "c", 3, &key, &members, &p).unwrap();
    let to: Vec<&str> = envs.iter().map(|e| e.recipient.as_str()).collect();
    assert_eq!(to, ["new-phone", "new-laptop"]);
    assert!(!to.contains(&"old"));
    // An unpinned device in the member list is an error, not a silent skip.
    let mut bad = members.clone();
    bad[1].devices.push("ghost".into());
    assert!(matches!(
        seal_for_members(&mut r, &keeper, "c", 3, &key, &bad, &p),
        Err(CryptoError::UnknownDevice { .. })
    ));
}
