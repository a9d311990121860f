//! The shared suite of the end-to-end encryption state (PROTOCOL.md §7): [`crate::keys::KeyStore`]
//! and [`Mutation::Rotate`] / [`Guard::epoch`]. Run by [`crate::testkit::run_all`], so every
//! backend passes the same cases: registration rules, atomic claims under concurrency,
//! revocation, DM inboxes (all-or-nothing sends, the cap, idempotency, ack, expiry), commit
//! compare-and-swap (also concurrent), epoch checks of messages, envelopes.

use crate::keys::{Commit, DeviceUpload, Dm, DmSend, EnvelopeRow, OneTimeKey, ZERO_COMMIT_HASH};
use crate::testkit::{APP, new_id, now_ms, user, verify_log};
use crate::{Actor, Guard, HistoryRange, Mutation, Outcome, Store, StoreError};
use herald_proto::EntryKind;
use herald_proto::model::Policy;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

fn ok<T>(r: crate::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e:?}"),
    }
}

macro_rules! refused {
    ($r:expr, $pat:pat, $what:expr) => {
        match $r {
            Err($pat) => {}
            Err(e) => panic!("{}: wrong error: {e:?}", $what),
            Ok(_) => panic!("{}: succeeded but should have failed", $what),
        }
    };
}

fn identity(device: &str, n: u8) -> Value {
    json!({"device_id": device, "ed25519": format!("ed{n}"), "curve25519": format!("cu{n}"), "envelope": format!("en{n}")})
}

/// An upload of `device` by `user` with one-time keys `keys` (by key id) and a fallback key.
pub fn upload(user: &str, device: &str, keys: &[&str], keeper: bool) -> DeviceUpload {
    DeviceUpload {
        app: APP.to_owned(),
        user: user.to_owned(),
        device_id: device.to_owned(),
        keeper,
        identity: identity(device, 1),
        identity_signature: json!("sig"),
        one_time_keys: keys
            .iter()
            .map(|k| OneTimeKey {
                key_id: (*k).to_owned(),
                key: json!({"key_id": k, "key": "k", "signature": "s"}),
            })
            .collect(),
        fallback_key: Some(json!({"key_id": "fb", "key": "f", "fallback": true, "signature": "s"})),
    }
}

fn dm(to_user: &str, to_device: &str, body: &str) -> Dm {
    Dm {
        id: new_id(),
        to_user: to_user.to_owned(),
        to_device: to_device.to_owned(),
        from: "ada".into(),
        from_device: "ada-phone".into(),
        body: body.to_owned(),
        ts_ms: now_ms(),
    }
}

fn send(copies: Vec<Dm>, client_id: Option<&str>, inbox_max: u64) -> DmSend {
    DmSend {
        app: APP.to_owned(),
        from: "ada".into(),
        from_device: "ada-phone".into(),
        client_id: client_id.map(str::to_owned),
        copies,
        inbox_max,
    }
}

/// Runs every E2EE case, each against a fresh store from `open`.
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    macro_rules! case {
        ($f:ident) => {{
            eprintln!("testkit: {}", stringify!($f));
            let store = open().await;
            $f(store.clone()).await;
            ok(store.close().await, "close");
        }};
    }
    case!(devices_register_list_and_revoke);
    case!(claims_hand_out_each_key_once_under_concurrency);
    case!(dm_inbox_is_all_or_nothing_capped_and_erased);
    case!(commits_are_compare_and_swap_and_gate_message_epochs);
}

/// Registration rules, listing, keepers and revocation.
pub async fn devices_register_list_and_revoke(s: Arc<dyn Store>) {
    let k = s.keys();
    let r = ok(k.register_device(upload("ada", "ada-phone", &["a1", "a2", "a3"], false)).await, "register");
    assert!(r.created && r.one_time_keys == 3, "{r:?}");
    // The same identity again: a known key id is ignored, a new one added.
    let r = ok(k.register_device(upload("ada", "ada-phone", &["a3", "a4"], false)).await, "re-upload");
    assert!(!r.created && r.one_time_keys == 4, "{r:?}");
    let mut other = upload("ada", "ada-phone", &[], false);
    other.identity = identity("ada-phone", 2);
    refused!(k.register_device(other).await, StoreError::Forbidden(_), "another identity for an id");
    refused!(
        k.register_device(upload("bob", "ada-phone", &[], false)).await,
        StoreError::Forbidden(_),
        "an id owned by another user"
    );
    ok(k.register_device(upload("kim", "kim-keeper", &["k1"], true)).await, "keeper device");
    let ada = ok(k.devices_of(APP, "ada").await, "devices_of");
    assert_eq!(ada.len(), 1);
    assert_eq!(ada[0].device_id, "ada-phone");
    assert_eq!(ada[0].one_time_keys, 4);
    assert_eq!(ada[0].identity, identity("ada-phone", 1));
    assert!(ada[0].fallback_key.is_some());
    assert!(ok(k.devices_of(APP, "nobody").await, "unknown user").is_empty());
    assert!(ok(k.devices_of("other-app", "ada").await, "other app").is_empty());
    let keepers = ok(k.keepers(APP).await, "keepers");
    assert_eq!(keepers.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(), ["kim-keeper"]);

    refused!(k.revoke_device(APP, "bob", "ada-phone").await, StoreError::Forbidden(_), "revoke by another");
    refused!(k.revoke_device(APP, "ada", "nope").await, StoreError::NotFound(_), "revoke unknown");
    ok(k.dm_send(send(vec![dm("ada", "ada-phone", "secret-before-revoke")], None, 10)).await, "dm");
    ok(k.revoke_device(APP, "ada", "ada-phone").await, "revoke");
    refused!(k.revoke_device(APP, "ada", "ada-phone").await, StoreError::NotFound(_), "revoke twice");
    refused!(
        k.register_device(upload("ada", "ada-phone", &["a9"], false)).await,
        StoreError::Forbidden(_),
        "a revoked id is dead"
    );
    assert!(ok(k.devices_of(APP, "ada").await, "devices after revoke").is_empty());
    assert!(ok(k.claim(APP, "ada", "ada-phone").await, "claim revoked").is_none());
    assert!(
        ok(k.dm_inbox(APP, "ada-phone").await, "inbox of revoked").is_empty(),
        "revocation erases the inbox"
    );
    let owner = ok(k.device_owner(APP, "ada-phone").await, "owner").expect("the revoked id is remembered");
    assert!(owner.revoked && owner.user == "ada");
    assert!(ok(k.device_owner(APP, "nope").await, "owner of unknown").is_none());
}

/// Concurrent claimers never get the same one-time key; then the fallback, not consumed.
pub async fn claims_hand_out_each_key_once_under_concurrency(s: Arc<dyn Store>) {
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    ok(s.keys().register_device(upload("bob", "bob-phone", &refs, false)).await, "register");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.keys().claim(APP, "bob", "bob-phone").await }));
    }
    let mut one_time = Vec::new();
    let mut fallbacks = 0;
    for t in tasks {
        let c = ok(t.await.map_err(|e| StoreError::Backend(e.to_string())), "join");
        let c = ok(c, "claim").expect("a key or the fallback");
        if c.fallback {
            assert_eq!(c.key["key_id"], "fb");
            fallbacks += 1;
        } else {
            one_time.push(c.key["key_id"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(c.identity, identity("bob-phone", 1));
    }
    let distinct: HashSet<&String> = one_time.iter().collect();
    assert_eq!(one_time.len(), 20, "every one-time key handed out: {one_time:?}");
    assert_eq!(distinct.len(), 20, "no key handed out twice: {one_time:?}");
    assert_eq!(fallbacks, 20);
    assert_eq!(ok(s.keys().devices_of(APP, "bob").await, "list")[0].one_time_keys, 0);
    assert!(ok(s.keys().claim(APP, "ada", "bob-phone").await, "mismatched user").is_none());
    assert!(ok(s.keys().claim(APP, "bob", "nope").await, "unknown").is_none());
    // A claimed key id uploaded again stays used.
    let r =
        ok(s.keys().register_device(upload("bob", "bob-phone", &["key-3", "key-20"], false)).await, "again");
    assert_eq!(r.one_time_keys, 1);
}

/// DM sends store every copy or none; the cap, idempotency, ack, expiry.
pub async fn dm_inbox_is_all_or_nothing_capped_and_erased(s: Arc<dyn Store>) {
    let k = s.keys();
    ok(k.register_device(upload("bob", "bob-phone", &[], false)).await, "phone");
    ok(k.register_device(upload("bob", "bob-laptop", &[], false)).await, "laptop");
    ok(k.register_device(upload("cy", "cy-phone", &[], false)).await, "cy");
    let first = vec![dm("bob", "bob-phone", "one"), dm("bob", "bob-laptop", "one-l")];
    let ids: Vec<String> = first.iter().map(|d| d.id.clone()).collect();
    let sent = ok(k.dm_send(send(first, Some("c1"), 3)).await, "send");
    assert_eq!(sent.ids, ids);
    assert!(!sent.duplicate);
    let again = ok(k.dm_send(send(vec![dm("bob", "bob-phone", "dup")], Some("c1"), 3)).await, "repeat");
    assert!(again.duplicate && again.ids == ids, "a repeated client_id answers the first ids: {again:?}");
    ok(k.dm_send(send(vec![dm("bob", "bob-phone", "two")], None, 3)).await, "second");
    for (bad, why) in
        [(dm("bob", "nope", "x"), "unknown device"), (dm("cy", "bob-phone", "x"), "another user's device")]
    {
        refused!(
            k.dm_send(send(vec![dm("bob", "bob-laptop", "stored?"), bad], None, 3)).await,
            StoreError::NotFound(_),
            why
        );
    }
    ok(k.dm_send(send(vec![dm("bob", "bob-phone", "three")], None, 3)).await, "third fills the inbox");
    refused!(
        k.dm_send(send(vec![dm("bob", "bob-laptop", "l2"), dm("bob", "bob-phone", "four")], None, 3)).await,
        StoreError::InboxFull,
        "past the cap"
    );
    let phone = ok(k.dm_inbox(APP, "bob-phone").await, "inbox");
    let bodies: Vec<&str> = phone.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two", "three"], "oldest first, nothing of the refused sends");
    assert_eq!(phone[0].from_device, "ada-phone");
    let laptop = ok(k.dm_inbox(APP, "bob-laptop").await, "laptop inbox");
    assert_eq!(laptop.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["one-l"]);
    assert!(ok(k.dm_inbox(APP, "cy-phone").await, "cy").is_empty(), "only the addressed device");

    let n = ok(
        k.dm_ack(APP, "bob-phone", &[phone[0].id.clone(), laptop[0].id.clone(), "nope".into()]).await,
        "ack",
    );
    assert_eq!(n, 1, "only the device's own entries are erased");
    let phone = ok(k.dm_inbox(APP, "bob-phone").await, "after ack");
    assert_eq!(phone.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["two", "three"]);
    assert_eq!(ok(k.dm_inbox(APP, "bob-laptop").await, "laptop kept").len(), 1);
    // Expiry: everything older than the newest's time goes.
    let newest = phone[1].ts_ms;
    let gone = ok(k.dm_expire(newest).await, "expire");
    assert_eq!(gone, 2, "the phone's 'two' and the laptop's 'one-l'");
    let phone = ok(k.dm_inbox(APP, "bob-phone").await, "after expire");
    assert_eq!(phone.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["three"]);
}

fn commit(epoch: u64, prev: &str, hash: &str) -> Commit {
    Commit {
        epoch,
        prev_commit_hash: prev.to_owned(),
        commit_hash: hash.to_owned(),
        commit: json!({"epoch": epoch, "members": []}),
    }
}

fn hash(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

async fn create_encrypted(s: &dyn Store, actor: &Actor, encrypted: bool) -> String {
    let id = new_id();
    ok(
        s.apply(Mutation::CreateChannel {
            actor: actor.clone(),
            id: id.clone(),
            name: None,
            title: None,
            encrypted,
            policy: Policy::Open,
            members: vec!["bob".into()],
            ts_ms: now_ms(),
        })
        .await,
        "create",
    );
    id
}

fn rotate(actor: &Actor, ch: &str, c: Commit, envelopes: Vec<EnvelopeRow>, guard: Guard) -> Mutation {
    Mutation::Rotate {
        actor: actor.clone(),
        channel: ch.to_owned(),
        commit: c,
        envelopes,
        guard,
        ts_ms: now_ms(),
    }
}

fn post(actor: &Actor, ch: &str, content: &str, epoch: Option<u64>) -> Mutation {
    Mutation::Send {
        actor: actor.clone(),
        channel: ch.to_owned(),
        id: new_id(),
        kind: "chat.text".into(),
        content: content.into(),
        reply_to: None,
        client_id: None,
        guard: Guard { epoch, ..Guard::member(&actor.user.id) },
        ts_ms: now_ms(),
    }
}

fn env(device: &str, epoch: u64, v: &str) -> EnvelopeRow {
    EnvelopeRow { device_id: device.to_owned(), epoch, envelope: json!({"sealed": v}) }
}

/// Commits are a compare-and-swap chain appended to the log; messages must name the head.
pub async fn commits_are_compare_and_swap_and_gate_message_epochs(s: Arc<dyn Store>) {
    let ada = user("ada");
    let bob = user("bob");
    let ch = create_encrypted(&*s, &ada, true).await;
    refused!(
        s.apply(post(&ada, &ch, "x", None)).await,
        StoreError::Invalid(_),
        "no epoch in an encrypted channel"
    );
    refused!(s.apply(post(&ada, &ch, "x", Some(0))).await, StoreError::StaleEpoch, "before the first commit");
    let none = Guard::none();
    for (c, why) in [
        (commit(1, ZERO_COMMIT_HASH, &hash('a')), "the first must be epoch 0"),
        (commit(0, &hash('b'), &hash('a')), "epoch 0 follows 64 zeros"),
    ] {
        refused!(s.apply(rotate(&ada, &ch, c, vec![], none.clone())).await, StoreError::StaleEpoch, why);
    }
    let creator_only = Guard { creator: Some("bob".into()), ..Guard::none() };
    refused!(
        s.apply(rotate(&bob, &ch, commit(0, ZERO_COMMIT_HASH, &hash('a')), vec![], creator_only)).await,
        StoreError::Forbidden(_),
        "the guard's creator"
    );
    let a = ok(
        s.apply(rotate(
            &ada,
            &ch,
            commit(0, ZERO_COMMIT_HASH, &hash('a')),
            vec![env("bob-phone", 0, "e0")],
            none.clone(),
        ))
        .await,
        "epoch 0",
    );
    assert_eq!(a.entries.len(), 1);
    let e = &a.entries[0];
    assert_eq!(
        (e.kind, e.reference.as_str(), e.content.as_deref()),
        (EntryKind::KeyRotated, "0", Some(hash('a').as_str()))
    );
    assert_eq!(e.author, "ada");
    refused!(
        s.apply(rotate(&ada, &ch, commit(0, ZERO_COMMIT_HASH, &hash('c')), vec![], none.clone())).await,
        StoreError::StaleEpoch,
        "epoch 0 twice"
    );
    let m0 = match ok(s.apply(post(&ada, &ch, "sealed-0", Some(0))).await, "send at the head").outcome {
        Outcome::Message { message, .. } => *message,
        other => panic!("send answered {other:?}"),
    };
    assert_eq!(m0.epoch, Some(0));
    // Two rotations racing from the same head: exactly one wins.
    let racers: Vec<_> = ['b', 'c']
        .into_iter()
        .map(|h| {
            let (s, ada, ch) = (s.clone(), ada.clone(), ch.clone());
            tokio::spawn(async move {
                s.apply(rotate(
                    &ada,
                    &ch,
                    commit(1, &hash('a'), &hash(h)),
                    vec![env("bob-phone", 1, "e1")],
                    Guard::none(),
                ))
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for (r, h) in racers.into_iter().zip(['b', 'c']) {
        match r.await.map_err(|e| StoreError::Backend(e.to_string())) {
            Ok(Ok(_)) => won.push(h),
            Ok(Err(StoreError::StaleEpoch)) => {}
            other => panic!("a racing rotation answered {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "one of two concurrent rotations wins");
    refused!(
        s.apply(rotate(&ada, &ch, commit(2, &hash('z'), &hash('d')), vec![], none.clone())).await,
        StoreError::StaleEpoch,
        "a wrong prev_commit_hash"
    );
    refused!(s.apply(post(&ada, &ch, "old", Some(0))).await, StoreError::StaleEpoch, "an old epoch");
    // An edit at the new head carries its epoch into history.
    let edited = ok(
        s.apply(Mutation::Edit {
            actor: ada.clone(),
            channel: ch.clone(),
            message_id: m0.id.clone(),
            content: "sealed-1".into(),
            guard: Guard { epoch: Some(1), ..crate::testkit::own(&ada) },
            ts_ms: now_ms(),
        })
        .await,
        "edit",
    );
    assert_eq!(edited.entries[0].extra.epoch, Some(1));
    let (history, _) = ok(s.history(&ch, &HistoryRange { limit: 10, ..Default::default() }).await, "history");
    assert_eq!(history[0].epoch, Some(1), "history shows the epoch of the current content");
    let log = verify_log(&*s, &ch).await;
    let msg = log.iter().find(|e| e.kind == EntryKind::Message).expect("the message entry");
    assert_eq!(msg.extra.epoch, Some(0), "the log keeps each entry's epoch");
    assert_eq!(log.iter().filter(|e| e.kind == EntryKind::KeyRotated).count(), 2);

    let commits = ok(s.keys().commits(&ch, None).await, "commits");
    assert_eq!(commits.iter().map(|c| c.epoch).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(commits[0].commit, json!({"epoch": 0, "members": []}));
    assert_eq!(ok(s.keys().commits(&ch, Some(0)).await, "after 0").len(), 1);
    refused!(
        s.keys().put_envelopes(&ch, vec![env("bob-laptop", 0, "x"), env("bob-laptop", 7, "x")]).await,
        StoreError::NotFound(_),
        "an unknown epoch"
    );
    assert!(ok(s.keys().envelopes_for(&ch, "bob-laptop").await, "nothing stored").is_empty());
    ok(
        s.keys().put_envelopes(&ch, vec![env("bob-phone", 0, "replaced"), env("bob-laptop", 1, "l1")]).await,
        "envelopes",
    );
    let phone = ok(s.keys().envelopes_for(&ch, "bob-phone").await, "phone envelopes");
    assert_eq!(phone.iter().map(|e| e.epoch).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(phone[0].envelope, json!({"sealed": "replaced"}));

    let plain = create_encrypted(&*s, &ada, false).await;
    refused!(
        s.apply(post(&ada, &plain, "x", Some(0))).await,
        StoreError::Invalid(_),
        "epoch in a plain channel"
    );
    refused!(
        s.apply(rotate(&ada, &plain, commit(0, ZERO_COMMIT_HASH, &hash('a')), vec![], none.clone())).await,
        StoreError::Invalid(_),
        "a commit in a plain channel"
    );
    ok(s.apply(post(&ada, &plain, "plain", None)).await, "a plain send");

    ok(
        s.apply(Mutation::DeleteChannel { actor: ada.clone(), channel: ch.clone(), guard: Guard::none() })
            .await,
        "delete",
    );
    assert!(ok(s.keys().commits(&ch, None).await, "commits of a deleted channel").is_empty());
    assert!(ok(s.keys().envelopes_for(&ch, "bob-phone").await, "envelopes of a deleted channel").is_empty());
}
