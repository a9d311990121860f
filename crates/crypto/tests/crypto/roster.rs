use herald_crypto::{
    CommitReason, CryptoError, EpochCommit, EpochKey, EpochKeyring, Member, RosterChain, SignedCommit,
    open_message, seal_for_members, seal_message,
};

use crate::common::{device, flip_str, flips, pins, rng};

fn member(user: &str, devices: &[&str]) -> Member {
    Member { user: user.into(), devices: devices.iter().map(|d| d.to_string()).collect() }
}

#[test]
fn chain_add_remove_rotate() {
    let mut r = rng(40);
    let (admin, ab) = device(&mut r, "admin-dev");
    let genesis =
        EpochCommit::genesis("c", vec![member("admin", &["admin-dev"]), member("bob", &["bob-dev"])])
            .sign(&admin);
    let mut chain = RosterChain::new(std::slice::from_ref(&ab.identity), genesis.clone()).unwrap();
    assert_eq!(chain.epoch(), 0);
    let add = chain
        .next_commit(
            vec![
                member("admin", &["admin-dev"]),
                member("bob", &["bob-dev"]),
                member("carol", &["carol-dev"]),
            ],
            CommitReason::Add { users: vec!["carol".into()] },
        )
        .sign(&admin);
    chain.apply(&add).unwrap();
    let remove = chain
        .next_commit(
            vec![member("admin", &["admin-dev"]), member("carol", &["carol-dev"])],
            CommitReason::Remove { users: vec!["bob".into()] },
        )
        .sign(&admin);
    chain.apply(&remove).unwrap();
    let rotate = chain.next_commit(chain.members().to_vec(), CommitReason::Rotate).sign(&admin);
    chain.apply(&rotate).unwrap();
    assert_eq!(chain.epoch(), 3);
    assert_eq!(chain.head_hash(), rotate.hash());
    assert!(chain.is_member_device(1, "bob-dev"));
    assert!(!chain.is_member_device(2, "bob-dev"));
    assert!(chain.is_member_device(3, "carol-dev"));
    assert!(!chain.is_member_device(9, "carol-dev"));
    // Replaying an old commit does not apply.
    assert!(chain.apply(&add).is_err());
    // JSON round trip keeps the hash.
    let json = serde_json::to_string(&remove).unwrap();
    let back: SignedCommit = serde_json::from_str(&json).unwrap();
    assert_eq!(back.hash(), remove.hash());
}

#[test]
fn server_cannot_add_members_or_fork() {
    let mut r = rng(41);
    let (admin, ab) = device(&mut r, "admin-dev");
    let (bob, _bb) = device(&mut r, "bob-dev");
    let genesis = EpochCommit::genesis("c", vec![member("admin", &["admin-dev"])]).sign(&admin);
    let mut chain = RosterChain::new(std::slice::from_ref(&ab.identity), genesis.clone()).unwrap();
    let good = chain
        .next_commit(
            vec![member("admin", &["admin-dev"]), member("bob", &["bob-dev"])],
            CommitReason::Add { users: vec!["bob".into()] },
        )
        .sign(&admin);

    let mut cases: Vec<(SignedCommit, &str)> = Vec::new();
    let mut t = good.clone();
    t.commit.members.push(member("mallory", &["mallory-dev"]));
    cases.push((t, "server adds a member"));
    let mut t = good.clone();
    t.commit.channel = flip_str(&t.commit.channel);
    cases.push((t, "channel"));
    let mut t = good.clone();
    t.commit.epoch = 2;
    cases.push((t, "epoch"));
    for v in flips(&good.commit.prev_commit_hash).step_by(3) {
        let mut t = good.clone();
        t.commit.prev_commit_hash = v.try_into().unwrap();
        cases.push((t, "prev hash"));
    }
    let mut t = good.clone();
    t.commit.members[1].user = flip_str(&t.commit.members[1].user);
    cases.push((t, "member user"));
    let mut t = good.clone();
    t.commit.members[1].devices[0] = flip_str(&t.commit.members[1].devices[0]);
    cases.push((t, "member device"));
    let mut t = good.clone();
    t.commit.reason = CommitReason::Rotate;
    cases.push((t, "reason"));
    let mut t = good.clone();
    t.signer = flip_str(&t.signer);
    cases.push((t, "signer"));
    for v in flips(&good.signature) {
        let mut t = good.clone();
        t.signature = v.try_into().unwrap();
        cases.push((t, "signature"));
    }
    // Signed by a member who is not a pinned admin.
    cases.push((good.commit.clone().sign(&bob), "non-admin signer"));
    // Inconsistent reasons, even when properly signed.
    let mut c = good.commit.clone();
    c.reason = CommitReason::Remove { users: vec!["bob".into()] };
    cases.push((c.sign(&admin), "removed user still listed"));
    let mut c = good.commit.clone();
    c.members.push(member("bob", &["bob-2"]));
    cases.push((c.sign(&admin), "user listed twice"));
    let mut c = good.commit.clone();
    c.members[1].devices.push("admin-dev".into());
    cases.push((c.sign(&admin), "device listed twice"));

    for (t, what) in &cases {
        let before = chain.head_hash();
        assert!(chain.apply(t).is_err(), "accepted tampered commit: {what}");
        assert_eq!(chain.head_hash(), before);
    }
    assert!(matches!(
        chain.apply(&good.commit.clone().sign(&bob)),
        Err(CryptoError::UnauthorizedSigner { .. })
    ));
    chain.apply(&good).unwrap();
    assert_eq!(chain.epoch(), 1);
}

#[test]
fn genesis_must_be_signed_by_pinned_admin() {
    let mut r = rng(42);
    let (admin, ab) = device(&mut r, "admin-dev");
    let (other, _) = device(&mut r, "other");
    let g = EpochCommit::genesis("c", vec![member("admin", &["admin-dev"])]);
    assert!(RosterChain::new(std::slice::from_ref(&ab.identity), g.clone().sign(&other)).is_err());
    assert!(RosterChain::new(&[], g.clone().sign(&admin)).is_err());
    let mut bad = g.clone();
    bad.epoch = 1;
    assert!(RosterChain::new(std::slice::from_ref(&ab.identity), bad.sign(&admin)).is_err());
    let mut bad = g.clone();
    bad.reason = CommitReason::Rotate;
    assert!(RosterChain::new(std::slice::from_ref(&ab.identity), bad.sign(&admin)).is_err());
}

#[test]
fn removed_member_gets_no_envelope_and_cannot_read_the_new_epoch() {
    let mut r = rng(43);
    let (keeper, kb) = device(&mut r, "keeper-dev");
    let (alice, ab) = device(&mut r, "alice-dev");
    let (bob, bb) = device(&mut r, "bob-dev");
    let p = pins(&[&kb, &ab, &bb]);
    let all =
        vec![member("keeper", &["keeper-dev"]), member("alice", &["alice-dev"]), member("bob", &["bob-dev"])];
    let mut chain = RosterChain::new(
        std::slice::from_ref(&kb.identity),
        EpochCommit::genesis("c", all.clone()).sign(&keeper),
    )
    .unwrap();
    let k0 = EpochKey::generate(&mut r);
    let envs0 = seal_for_members(&mut r, &keeper, "c", 0, &k0, chain.members(), &p).unwrap();
    assert_eq!(envs0.len(), 2);

    let commit = chain
        .next_commit(vec![all[0].clone(), all[1].clone()], CommitReason::Remove { users: vec!["bob".into()] })
        .sign(&keeper);
    chain.apply(&commit).unwrap();
    let k1 = EpochKey::generate(&mut r);
    assert_ne!(k0, k1);
    let envs1 = seal_for_members(&mut r, &keeper, "c", 1, &k1, chain.members(), &p).unwrap();
    assert!(envs1.iter().all(|e| e.recipient != "bob-dev"));
    assert_eq!(envs1.len(), 1);

    let mut alice_ring = EpochKeyring::new("c").unwrap();
    let mut bob_ring = EpochKeyring::new("c").unwrap();
    for e in envs0.iter().chain(&envs1) {
        match e.recipient.as_str() {
            "alice-dev" => e.open_into(&alice, &kb.identity, &mut alice_ring).unwrap(),
            "bob-dev" => e.open_into(&bob, &kb.identity, &mut bob_ring).unwrap(),
            other => panic!("unexpected recipient {other}"),
        }
    }
    let s = seal_message(&mut r, &alice, "c", 1, &k1, b"after bob left").unwrap();
    assert_eq!(open_message(&s, &alice_ring, &p).unwrap().plaintext, b"after bob left");
    assert!(matches!(open_message(&s, &bob_ring, &p), Err(CryptoError::UnknownEpoch { epoch: 1, .. })));
    // Bob keeps epoch 0 (what he could already read).
    let old = seal_message(&mut r, &alice, "c", 0, &k0, b"before").unwrap();
    assert_eq!(open_message(&old, &bob_ring, &p).unwrap().plaintext, b"before");
}
