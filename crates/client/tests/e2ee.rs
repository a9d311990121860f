//! The SDK's end-to-end encryption against the real server (`herald_testing::TestServer`)
//! over real sockets, with SQLite on disk: DMs through the offline inbox, encrypted
//! channels with a keeper, removal and rotation, tampering by whoever holds the database,
//! several devices per user, files, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_client::e2ee::{
    E2ee, E2eeConfig, E2eeError, Keeper, KeeperAction, KeeperConfig, StateKey, UnopenableReason,
};
use herald_client::{ClientConfig, HistoryQueryExt};
use herald_testing::TestServer;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn fast() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: WAIT,
        ..ClientConfig::default()
    }
}

/// A device of `user` whose state lives in `dir/<device>.state` (key file, so tests do not
/// spend Argon2id time on every open; the passphrase path has its own unit test).
async fn device(server: &TestServer, dir: &Path, user: &str, device: &str) -> E2ee {
    device_with(server, dir, user, device, None).await
}

async fn device_with(
    server: &TestServer,
    dir: &Path,
    user: &str,
    device: &str,
    grants: Option<Vec<String>>,
) -> E2ee {
    let token = server.token_with(user, grants, 3600);
    let cfg = E2eeConfig::new(state_path(dir, device), StateKey::Key([7u8; 32].into())).device_id(device);
    within(E2ee::connect(&server.url(), &token, fast(), cfg)).await.unwrap()
}

fn state_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.state"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn grep(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())))
        .collect()
}

#[tokio::test]
async fn offline_dms_arrive_in_order_once_and_the_server_keeps_no_plaintext() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Grace registers her device, then goes offline.
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    grace.close().await;
    drop(grace);

    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let texts = ["first secret: plum", "second secret: quince", "third secret: rhubarb"];
    for t in texts {
        let ids = within(ada.send_dm("grace", t)).await.unwrap();
        assert_eq!(ids.len(), 1, "one copy: grace has one device, ada no other");
    }

    // Grace comes back (a restarted client: sessions come from her state file) and reads all
    // three, in order.
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let mut dms = grace.dms();
    for t in texts {
        let dm = within(dms.next()).await.unwrap().unwrap();
        assert_eq!(dm.text(), t);
        assert_eq!(dm.from, "ada");
        assert_eq!(dm.from_device, "ada-laptop");
    }
    // Acknowledged: the inbox is empty.
    let token = server.token("grace");
    let inbox: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/dm/inbox?device=grace-phone", server.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["dms"].as_array().map(Vec::len), Some(0), "{inbox}");

    // A reply uses the session Grace made from Ada's pre-key message.
    within(grace.send_dm("ada", "got them")).await.unwrap();
    let mut ada_dms = ada.dms();
    assert_eq!(within(ada_dms.next()).await.unwrap().unwrap().text(), "got them");

    // Nothing of it in clear on the server's disk, nor in the state files.
    for t in texts.iter().chain(&["got them"]) {
        assert_eq!(grep(server.data_dir(), t), Vec::<PathBuf>::new(), "{t:?} on the server's disk");
        assert_eq!(grep(dir.path(), t), Vec::<PathBuf>::new(), "{t:?} in a state file");
    }
}

#[tokio::test]
async fn a_keeper_admits_a_late_member_alone_and_a_removal_locks_them_out() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keeper_dev =
        device_with(&server, dir.path(), "herald-keeper", "keeper-1", Some(vec!["keeper".into()])).await;
    let (tx, mut actions) = mpsc::unbounded_channel();
    let keeper = Keeper::new(keeper_dev, KeeperConfig::default());
    let keeper_task = tokio::spawn(async move { keeper.run(|a| drop(tx.send(a))).await });

    // Grace and Bob have devices before Ada's channel exists.
    device(&server, dir.path(), "grace", "grace-phone").await.close().await;
    let bob = device(&server, dir.path(), "bob", "bob-phone").await;

    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let channel = within(ada.channels().create_encrypted("plans")).await.unwrap();
    assert_eq!(channel.epoch(), Some(0));
    assert!(
        channel.members().iter().any(|m| m.user == "keeper/herald-keeper"),
        "keeper sealed in: {:?}",
        channel.members()
    );
    within(channel.send("meet at noon")).await.unwrap();
    within(channel.send("bring the maps")).await.unwrap();
    let channel_id = channel.id().to_owned();
    ada.close().await;
    drop(channel);
    drop(ada);

    // Grace joins while Ada is offline: only the keeper can give her the keys.
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let g_channel = within(grace.channels().join("plans")).await.unwrap();
    within(g_channel.wait_for_keys(Some(0), WAIT)).await.unwrap();
    within(g_channel.wait_for_keys(None, WAIT)).await.unwrap();
    let history = within(g_channel.history()).await.unwrap();
    let texts: Vec<String> = history.iter().map(|o| o.as_ref().unwrap().text()).collect();
    assert_eq!(texts, ["meet at noon", "bring the maps"]);
    let epoch_with_grace = g_channel.epoch().unwrap();
    assert!(epoch_with_grace >= 1, "the keeper's add commit");
    loop {
        match within(actions.recv()).await.unwrap() {
            KeeperAction::Admitted { user, .. } if user == "grace" => break,
            KeeperAction::Failed { error, .. } => panic!("keeper failed: {error}"),
            _ => {}
        }
    }
    // Bob joins too.
    let b_channel = within(bob.channels().join("plans")).await.unwrap();
    within(b_channel.wait_for_keys(None, WAIT)).await.unwrap();

    // Ada comes back and removes Grace: a new epoch whose key Grace never gets.
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let a_channel = within(ada.channels().get(&channel_id)).await.unwrap();
    within(a_channel.sync()).await.unwrap();
    within(a_channel.remove_member("grace")).await.unwrap();
    within(a_channel.sync()).await.unwrap();
    let rotated = a_channel.epoch().unwrap();
    assert!(rotated > epoch_with_grace, "epoch rotated: {rotated} after {epoch_with_grace}");
    assert!(!a_channel.members().iter().any(|m| m.user == "grace"));
    let after = within(a_channel.send("new plan, grace is out")).await.unwrap();

    // Bob still holds the old head: his send is refused `stale_epoch`, he fetches the new
    // commit and its key, and seals again.
    assert!(b_channel.epoch().unwrap() < rotated, "bob has not synced the rotation yet");
    let from_bob = within(b_channel.send("bob, after the rotation")).await.unwrap();
    assert_eq!(b_channel.epoch(), Some(rotated));
    let opened_by_ada = within(a_channel.open(&from_bob)).await.unwrap();
    assert_eq!((opened_by_ada.epoch, opened_by_ada.text().as_str()), (rotated, "bob, after the rotation"));
    within(b_channel.wait_for_keys(Some(rotated), WAIT)).await.unwrap();
    let opened = within(b_channel.open(&after)).await.unwrap();
    assert_eq!(opened.text(), "new plan, grace is out");
    let refused = within(g_channel.open(&after)).await.unwrap_err();
    assert!(matches!(refused.reason, UnopenableReason::NoKey(e) if e == rotated), "{refused:?}");
    assert!(!g_channel.key_epochs().contains(&rotated));
    // Her old keys still open the old messages (as the threat model says).
    assert_eq!(g_channel.key_epochs().first(), Some(&0));
    keeper_task.abort();
}

#[tokio::test]
async fn tampering_with_the_database_is_detected_by_the_sdk() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    device(&server, dir.path(), "grace", "grace-phone").await.close().await;
    device(&server, dir.path(), "carol", "carol-1").await.close().await;
    let bob = device(&server, dir.path(), "bob", "bob-phone").await;
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    // Ada pins Grace's device (trust on first use) by writing to her.
    within(ada.send_dm("grace", "hi grace")).await.unwrap();
    let channel = within(ada.channels().create_encrypted_with(Some("vault"), &["bob"])).await.unwrap();
    let sent = within(channel.send("the code is 4711")).await.unwrap();
    let channel_id = channel.id().to_owned();
    // Bob verifies the roster now, before anyone tampers with it.
    let b_channel = within(bob.channels().get(&channel_id)).await.unwrap();
    within(b_channel.sync()).await.unwrap();
    drop(b_channel);
    ada.close().await;
    bob.close().await;
    // Each state file is locked by its live client: release them before reopening.
    drop((ada, bob, channel));
    server.stop().await;

    let db = rusqlite::Connection::open(server.data_dir().join("herald.db")).unwrap();
    // 1. Swap Carol's one-time keys: each now carries another key's bytes under its own
    //    signature.
    let keys: Vec<(i64, String)> = db
        .prepare(
            "SELECT n, key FROM one_time_keys WHERE device_id = 'carol-1' AND key IS NOT NULL ORDER BY n",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(keys.len() > 1);
    for (i, (n, json)) in keys.iter().enumerate() {
        let other: serde_json::Value = serde_json::from_str(&keys[(i + 1) % keys.len()].1).unwrap();
        let mut mine: serde_json::Value = serde_json::from_str(json).unwrap();
        mine["key"] = other["key"].clone();
        db.execute("UPDATE one_time_keys SET key = ?1 WHERE n = ?2", rusqlite::params![mine.to_string(), n])
            .unwrap();
    }
    // 2. Replace the identity of Grace's device (pinned by Ada) with the server's own keys
    //    for that device id, validly self-signed: a man in the middle.
    let mut fake = herald_crypto::Device::new(&mut rand::rngs::OsRng, "grace-phone").unwrap();
    let bundle = serde_json::to_value(fake.publish_bundle(1)).unwrap();
    let stored_sig: String = db
        .query_row("SELECT identity_signature FROM devices WHERE device_id = 'grace-phone'", [], |r| r.get(0))
        .unwrap();
    let sig = if stored_sig.starts_with('"') {
        bundle["identity_signature"].to_string()
    } else {
        bundle["identity_signature"].as_str().unwrap().to_owned()
    };
    db.execute(
        "UPDATE devices SET identity = ?1, identity_signature = ?2 WHERE device_id = 'grace-phone'",
        rusqlite::params![bundle["identity"].to_string(), sig],
    )
    .unwrap();
    // 3. Add Mallory to the genesis commit without a signature of an admin.
    let body: String = db
        .query_row("SELECT body FROM commits WHERE channel_id = ?1 AND epoch = 0", [&channel_id], |r| {
            r.get(0)
        })
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pointer = ["/commit/commit/members", "/commit/members", "/members"]
        .into_iter()
        .find(|p| v.pointer(p).is_some())
        .expect("members in the stored commit");
    let members = v.pointer_mut(pointer).unwrap();
    members.as_array_mut().unwrap().push(serde_json::json!({"user": "mallory", "devices": ["mallory-1"]}));
    db.execute(
        "UPDATE commits SET body = ?1 WHERE channel_id = ?2 AND epoch = 0",
        rusqlite::params![v.to_string(), channel_id],
    )
    .unwrap();
    // 4. Alter the stored ciphertext of Ada's message (in its log entry, the one copy of an
    //    unedited message's content).
    let altered = {
        let mut c = sent.content.clone().into_bytes();
        let i = c.len() - 10;
        c[i] = if c[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(c).unwrap()
    };
    let altered_rows = db
        .execute(
            "UPDATE entries SET content = ?1 WHERE content = ?2",
            rusqlite::params![altered, sent.content],
        )
        .unwrap();
    assert_eq!(altered_rows, 1, "the message's stored ciphertext");
    drop(db);
    server.restart().await;

    // A DM to Carol needs a claimed key: its signature no longer verifies.
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let err = within(ada.send_dm("carol", "hi")).await.unwrap_err();
    assert!(matches!(err, E2eeError::Crypto(_)), "swapped one-time key: {err}");
    // Grace's pinned device shows other keys now: refused loudly.
    let err = within(ada.send_dm("grace", "hi again")).await.unwrap_err();
    assert!(matches!(err, E2eeError::IdentityChanged { ref device, .. } if device == "grace-phone"), "{err}");
    // A fresh device of Bob's reads the roster from scratch: the forged member is refused.
    let bob2 = device(&server, dir.path(), "bob", "bob-tablet").await;
    let b_channel = within(bob2.channels().get(&channel_id)).await.unwrap();
    let err = within(b_channel.sync()).await.unwrap_err();
    assert!(matches!(err, E2eeError::Crypto(_)), "unsigned member: {err}");
    // Bob's first device has the verified chain: the altered message fails.
    let bob = device(&server, dir.path(), "bob", "bob-phone").await;
    let b_channel = within(bob.channels().get(&channel_id)).await.unwrap();
    let history = within(b_channel.history()).await;
    match history {
        Err(e) => assert!(e.to_string().contains("differs") || e.to_string().contains("chain"), "{e}"),
        Ok(opened) => {
            let u = opened.into_iter().next().unwrap().unwrap_err();
            assert!(matches!(u.reason, UnopenableReason::BadSignature(_)), "{u:?}");
        }
    }
}

#[tokio::test]
async fn two_users_with_two_devices_each_exchange_200_dms_with_devices_going_offline() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let names = [("ada", "ada-1"), ("ada", "ada-2"), ("grace", "grace-1"), ("grace", "grace-2")];
    // Register all four first, so every send reaches every device.
    for (u, d) in names {
        device(&server, dir.path(), u, d).await.close().await;
    }
    let mut online: Vec<Option<E2ee>> = Vec::new();
    for (u, d) in names {
        online.push(Some(device(&server, dir.path(), u, d).await));
    }
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 4];
    for i in 0..200usize {
        // Every 25 messages one device goes offline and the previous one comes back.
        if i % 25 == 0 {
            let off = (i / 25) % 4;
            let back = (off + 3) % 4;
            if let Some(d) = online[off].take() {
                d.close().await;
            }
            if online[back].is_none() {
                online[back] = Some(device(&server, dir.path(), names[back].0, names[back].1).await);
            }
        }
        let sender = (0..4).map(|k| (i + k) % 4).find(|&k| online[k].is_some()).unwrap();
        let to = if names[sender].0 == "ada" { "grace" } else { "ada" };
        let text = format!("dm {i} from {}", names[sender].1);
        within(online[sender].as_ref().unwrap().send_dm(to, &text)).await.unwrap();
        for (k, (u, d)) in names.iter().enumerate() {
            if k != sender && (*u == to || *u == names[sender].0) {
                let _ = d;
                expected[k].push(text.clone());
            }
        }
    }
    // Everyone online; each device reads everything addressed to it, in order, none lost.
    for (k, (u, d)) in names.iter().enumerate() {
        if online[k].is_none() {
            online[k] = Some(device(&server, dir.path(), u, d).await);
        }
        let mut dms = online[k].as_ref().unwrap().dms();
        let mut got = Vec::new();
        while got.len() < expected[k].len() {
            match within(dms.next()).await.unwrap() {
                Ok(dm) => got.push(dm.text()),
                Err(f) => panic!("{d}: undecryptable: {f}"),
            }
        }
        assert_eq!(got, expected[k], "{d}");
    }
}

#[tokio::test]
async fn a_file_survives_two_lost_blob_dirs_of_six_and_not_three() {
    let root = tempfile::tempdir().unwrap();
    let blob_dirs: Vec<PathBuf> = (0..6).map(|i| root.path().join(format!("blobs{i}"))).collect();
    for d in &blob_dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let dirs = blob_dirs.clone();
    let server = TestServer::start_with(move |c| {
        c.blob_dir = dirs;
        c.max_blob_bytes = 64 * 1024 * 1024;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let channel = within(ada.channels().create_encrypted("files")).await.unwrap();
    let data: Vec<u8> =
        (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (message, manifest) =
        within(channel.put_file(&data, "big.bin", "application/octet-stream")).await.unwrap();
    assert_eq!((manifest.k, manifest.m), (4, 2));
    for (i, d) in blob_dirs.iter().enumerate() {
        assert!(!files(d).is_empty(), "shard {i} in blob dir {i}");
    }
    // The manifest comes back from the channel, sealed.
    let opened = within(channel.get_message(&message.id)).await.unwrap();
    let carried = opened.file().unwrap().manifest;
    assert_eq!(carried, manifest);
    std::fs::remove_dir_all(&blob_dirs[1]).unwrap();
    std::fs::remove_dir_all(&blob_dirs[4]).unwrap();
    let back = within(channel.get_file(&carried)).await.unwrap();
    assert!(back == data, "rebuilt file identical");
    std::fs::remove_dir_all(&blob_dirs[0]).unwrap();
    let err = within(channel.get_file(&carried)).await.unwrap_err();
    assert!(err.to_string().contains("3 of 6 shards survive, 4 needed"), "{err}");
}

#[tokio::test]
async fn device_state_survives_a_restart_and_verification_pins_a_device() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let channel = within(ada.channels().create_encrypted_with(Some("diary"), &["grace"])).await.unwrap();
    within(channel.send("day one")).await.unwrap();
    within(ada.send_dm("grace", "hello")).await.unwrap();
    let fp = grace.fingerprint();
    within(ada.verify_device("grace", "grace-phone", &fp)).await.unwrap();
    assert_eq!(ada.pin_status("grace-phone"), Some(true));
    let wrong = "00".repeat(32);
    assert!(matches!(
        within(ada.verify_device("grace", "grace-phone", &wrong)).await,
        Err(E2eeError::FingerprintMismatch { .. })
    ));
    ada.close().await;
    drop((channel, ada));

    // Ada restarts: same device, her sessions, pins, roster and keys come from the file.
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    assert_eq!(ada.pin_status("grace-phone"), Some(true));
    let channel = within(ada.channels().get("diary")).await.unwrap();
    let history = within(channel.history()).await.unwrap();
    assert_eq!(history[0].as_ref().unwrap().text(), "day one");
    within(ada.send_dm("grace", "again")).await.unwrap();
    let mut dms = grace.dms();
    assert_eq!(within(dms.next()).await.unwrap().unwrap().text(), "hello");
    assert_eq!(within(dms.next()).await.unwrap().unwrap().text(), "again");
    // While Grace's client runs, her state file is locked against a second process.
    let cfg = E2eeConfig::new(state_path(dir.path(), "grace-phone"), StateKey::Key([7u8; 32].into()));
    let err = within(E2ee::connect(&server.url(), &server.token("grace"), fast(), cfg)).await.unwrap_err();
    assert!(err.to_string().contains("in use by another process"), "{err}");
    drop(dms);
    grace.close().await;
    drop(grace);
    // Grace's state file of a wrong key is refused, not silently replaced.
    let cfg = E2eeConfig::new(state_path(dir.path(), "grace-phone"), StateKey::Key([8u8; 32].into()));
    let err = within(E2ee::connect(&server.url(), &server.token("grace"), fast(), cfg)).await.unwrap_err();
    assert!(err.to_string().contains("wrong passphrase or key"), "{err}");
}

#[tokio::test]
async fn an_undecryptable_dm_is_surfaced_with_its_reason_and_the_next_one_still_reads() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let mallory = device(&server, dir.path(), "mallory", "mallory-1").await;
    // A body that is no Olm message at all, then one that is a well-formed pre-key message
    // shape with garbage inside.
    for body in ["not an olm message", r#"{"pre_key":true,"body":"AAAA"}"#] {
        let to = vec![herald_client::herald_proto::frames::DmTo {
            user: "grace".into(),
            device_id: "grace-phone".into(),
            body: body.into(),
        }];
        let request = herald_client::herald_proto::frames::Request::DmSend { to, client_id: None };
        within(mallory.client().request(request)).await.unwrap();
    }
    within(mallory.send_dm("grace", "a real one")).await.unwrap();
    let mut dms = grace.dms();
    for _ in 0..2 {
        let failure = within(dms.next()).await.unwrap().unwrap_err();
        assert_eq!((failure.from.as_str(), failure.from_device.as_str()), ("mallory", "mallory-1"));
        assert!(!failure.reason.to_string().is_empty());
    }
    assert_eq!(within(dms.next()).await.unwrap().unwrap().text(), "a real one");
    // All three were acknowledged: a reconnect brings none back.
    drop(dms);
    grace.close().await;
    drop(grace);
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let inbox: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/dm/inbox?device=grace-phone", server.url()))
        .bearer_auth(server.token("grace"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["dms"].as_array().map(Vec::len), Some(0), "{inbox}");
    drop(grace);
}

#[tokio::test]
async fn a_keeper_back_from_downtime_seals_keys_to_a_device_registered_meanwhile() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keeper_grant = Some(vec!["keeper".to_owned()]);
    // The keeper registers (so creators seal to it), then goes down.
    device_with(&server, dir.path(), "herald-keeper", "keeper-1", keeper_grant.clone()).await.close().await;
    let grace = device(&server, dir.path(), "grace", "grace-phone").await;
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let channel = within(ada.channels().create_encrypted_with(Some("later"), &["grace"])).await.unwrap();
    within(channel.send("written before the tablet")).await.unwrap();
    // While the keeper is away Grace adds a tablet: nobody answers its keys_needed.
    drop(grace);
    let tablet = device(&server, dir.path(), "grace", "grace-tablet").await;

    // Back up: it catches up by itself, with no keys_needed to answer.
    let keeper = device_with(&server, dir.path(), "herald-keeper", "keeper-1", keeper_grant).await;
    let allow = KeeperConfig { allow: Some([channel.id().to_owned()].into_iter().collect()) };
    let k = Keeper::new(keeper, allow);
    let task = tokio::spawn(async move { k.run(|_| {}).await });
    let t_channel = within(tablet.channels().get(channel.id())).await.unwrap();
    within(t_channel.wait_for_keys(Some(0), WAIT)).await.unwrap();
    let history = within(t_channel.history()).await.unwrap();
    assert_eq!(history[0].as_ref().unwrap().text(), "written before the tablet");
    assert!(t_channel.members().iter().any(|m| m.user == "grace" && m.devices.len() == 2));
    task.abort();
}

/// Ada edits her message in an encrypted channel: Bob sees the edit live and in history,
/// opened, with the new plaintext; the server holds only the sealed edit; Bob cannot edit
/// Ada's message; an edit sealed by another member's device does not open as hers.
#[tokio::test]
async fn edits_in_an_encrypted_channel_are_sealed_and_opened_with_the_authors_checks() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob = device(&server, dir.path(), "bob", "bob-phone").await;
    let ada = device(&server, dir.path(), "ada", "ada-laptop").await;
    let channel = within(ada.channels().create_encrypted_with(Some("drafts"), &["bob"])).await.unwrap();
    let b_channel = within(bob.channels().get(channel.id())).await.unwrap();
    within(b_channel.sync()).await.unwrap();
    let mut edits = b_channel.edits();
    let sent = within(channel.send("first draft")).await.unwrap();
    let edited = within(channel.edit(&sent.id, "the final text")).await.unwrap();
    assert!(edited.edited_at.is_some());
    assert!(edited.content.starts_with("hm1.") && !edited.content.contains("final"), "{}", edited.content);

    let live = within(edits.next()).await.unwrap().unwrap();
    assert_eq!((live.id.as_str(), live.text().as_str()), (sent.id.as_str(), "the final text"));
    assert_eq!(live.author, "ada");
    assert!(live.edited_at.is_some());
    let history = within(b_channel.history()).await.unwrap();
    let opened: Vec<(String, bool)> =
        history.iter().map(|o| o.as_ref().map(|m| (m.text(), m.edited_at.is_some())).unwrap()).collect();
    assert_eq!(opened, [("the final text".to_owned(), true)]);

    // What the server keeps and serves: the sealed edit only.
    let raw = within(channel.inner().history(herald_client::HistoryQuery::latest(10))).await.unwrap();
    assert_eq!(raw.messages.len(), 1);
    assert!(raw.messages[0].content.starts_with("hm1."));
    assert!(!raw.messages[0].content.contains("final") && !raw.messages[0].content.contains("draft"));
    assert!(grep(server.data_dir(), "the final text").is_empty(), "no plaintext on the server's disk");

    // Only the author edits (`not_author`).
    let refused = within(b_channel.edit(&sent.id, "bob was here")).await.unwrap_err();
    assert!(
        matches!(&refused, E2eeError::Client(e) if e.code() == Some(herald_proto::ErrorCode::NotAuthor)),
        "{refused:?}"
    );
    let unchanged = within(b_channel.history()).await.unwrap();
    assert_eq!(unchanged[0].as_ref().unwrap().text(), "the final text", "a refused edit changes nothing");
    // Content sealed by Bob's device, presented as an edit of Ada's message, is refused.
    let bobs = within(b_channel.send("bob's words")).await.unwrap();
    let mut forged = raw.messages[0].clone();
    forged.content = bobs.content.clone();
    let err = within(b_channel.open(&forged)).await.unwrap_err();
    assert!(matches!(err.reason, UnopenableReason::AuthorMismatch { .. }), "{err:?}");
}
