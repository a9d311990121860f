//! §7 end-to-end encryption, server side, over real sockets: the key directory and its
//! claims, DMs with an offline inbox per device, erasure on ack (grepped on disk), commits
//! with compare-and-swap and the epoch rules of messages, envelopes, the keeper's
//! `keys_needed`, and shards spread over several blob directories.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::{Value, json};
use std::collections::HashSet;

/// A bundle in `crates/crypto/README.md`'s shape with one-time keys `keys` (by key id).
fn bundle(device: &str, keys: &[String]) -> Value {
    json!({
        "identity": {"device_id": device, "ed25519": "ZWQ=", "curve25519": "Y3U=", "envelope": "ZW4="},
        "identity_signature": "c2ln",
        "one_time_keys": keys.iter().map(|k| json!({"key_id": k, "key": "a2V5", "fallback": false, "signature": "c2ln"})).collect::<Vec<_>>(),
        "fallback_key": {"key_id": format!("{device}-fb"), "key": "ZmI=", "fallback": true, "signature": "c2ln"},
    })
}

async fn register(rest: &Rest, device: &str, keys: usize) -> Answer {
    let keys: Vec<String> = (0..keys).map(|i| format!("{device}-k{i}")).collect();
    rest.put(&format!("/v1/keys/devices/{device}"), json!({"bundle": bundle(device, &keys)})).await
}

/// Connects declaring `device`: the `connect` answer, and the socket.
async fn connect_device(server: &TestServer, token: &str, device: &str) -> (Result<Value, Value>, Ws) {
    let mut ws = Ws::open(server).await;
    let r = ws.request(json!({"op": "connect", "token": token, "device": device})).await;
    if let Ok(ok) = &r {
        ws.hello = ok.clone();
    }
    (r, ws)
}

async fn device_ws(server: &TestServer, user: &str, device: &str) -> Ws {
    let (r, ws) = connect_device(server, &server.token(user), device).await;
    r.unwrap_or_else(|e| panic!("connect with {device}: {e}"));
    ws
}

#[tokio::test]
async fn key_directory_registers_claims_once_each_even_when_raced_and_revokes_for_good() {
    let server = TestServer::start().await;
    let ada = Rest::user(&server, "ada");
    let bob = Rest::user(&server, "bob");
    let cy = Rest::user(&server, "cy");
    let a = register(&ada, "ada-phone", 12).await;
    assert_eq!((a.status, a.body["one_time_keys"].as_u64()), (201, Some(12)), "{}", a.body);
    let again = register(&ada, "ada-phone", 14).await;
    assert_eq!(
        (again.status, again.body["one_time_keys"].as_u64()),
        (200, Some(14)),
        "known key ids ignored"
    );
    register(&bob, "ada-phone", 1).await.assert_error(403, "forbidden");
    let mut other = bundle("ada-phone", &[]);
    other["identity"]["ed25519"] = json!("b3RoZXI=");
    ada.put("/v1/keys/devices/ada-phone", json!({"bundle": other})).await.assert_error(403, "forbidden");
    ada.put("/v1/keys/devices/bad%20id", json!({"bundle": bundle("bad id", &[])}))
        .await
        .assert_error(400, "invalid_name");
    ada.put("/v1/keys/devices/ada-x", json!({"bundle": {"one_time_keys": []}}))
        .await
        .assert_error(400, "bad_request");
    ada.put("/v1/keys/devices/ada-x", json!({"bundle": bundle("ada-y", &[])}))
        .await
        .assert_error(400, "bad_request");
    let listed = bob.get("/v1/keys/users/ada").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["devices"][0]["device_id"], "ada-phone");
    assert_eq!(listed.body["devices"][0]["one_time_keys"], 14);
    assert_eq!(bob.get("/v1/keys/users/nobody").await.body, json!({"devices": []}));

    // Two claimers, each with 10 claims in flight at once, over 14 keys.
    let claim = |rest: Rest| async move {
        rest.post("/v1/keys/claim", json!({"devices": [{"user": "ada", "device_id": "ada-phone"}, {"user": "ada", "device_id": "nope"}, {"user": "bob", "device_id": "ada-phone"}]}))
            .await
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let who = if i % 2 == 0 { Rest::user(&server, "bob") } else { Rest::user(&server, "cy") };
        tasks.push(tokio::spawn(claim(who)));
    }
    let (mut keys, mut fallbacks) = (Vec::new(), 0);
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let claimed = a.body["claimed"].as_array().unwrap().clone();
        assert_eq!(claimed.len(), 1, "unknown and mismatched devices are left out: {}", a.body);
        let c = &claimed[0];
        assert_eq!(c["identity"]["device_id"], "ada-phone");
        if c["fallback"] == true {
            assert_eq!(c["key"]["key_id"], "ada-phone-fb");
            fallbacks += 1;
        } else {
            keys.push(c["key"]["key_id"].as_str().unwrap().to_owned());
        }
    }
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), distinct.len(), fallbacks), (14, 14, 6), "each key once: {keys:?}");
    assert_eq!(cy.get("/v1/keys/users/ada").await.body["devices"][0]["one_time_keys"], 0);

    // Revocation: owner only, erases, and the id is dead.
    bob.delete("/v1/keys/devices/ada-phone").await.assert_error(403, "forbidden");
    assert_eq!(ada.delete("/v1/keys/devices/ada-phone").await.status, 204);
    ada.delete("/v1/keys/devices/ada-phone").await.assert_error(404, "not_found");
    assert_eq!(bob.get("/v1/keys/users/ada").await.body, json!({"devices": []}));
    register(&ada, "ada-phone", 1).await.assert_error(403, "forbidden");
    let c = bob.post("/v1/keys/claim", json!({"devices": [{"user": "ada", "device_id": "ada-phone"}]})).await;
    assert_eq!(c.body, json!({"claimed": []}));
    let (r, mut ws) = connect_device(&server, &server.token("ada"), "ada-phone").await;
    assert_eq!(r.unwrap_err()["code"], "not_found");
    assert_eq!(ws.closed_with().await, Some(4401));
}

#[tokio::test]
async fn connect_device_must_be_the_callers_own() {
    let server = TestServer::start().await;
    assert_eq!(register(&Rest::user(&server, "bob"), "bob-phone", 0).await.status, 201);
    let (r, mut ws) = connect_device(&server, &server.token("ada"), "bob-phone").await;
    assert_eq!(r.unwrap_err()["code"], "forbidden");
    assert_eq!(ws.closed_with().await, Some(4401));
    let (r, mut ws) = connect_device(&server, &server.token("ada"), "never-registered").await;
    assert_eq!(r.unwrap_err()["code"], "not_found");
    assert_eq!(ws.closed_with().await, Some(4401));
    let mut ws = Ws::open(&server).await;
    let r = ws.request(json!({"op": "connect", "token": server.token("ada"), "device": 7})).await;
    assert_eq!(r.unwrap_err()["code"], "bad_request");
    assert_eq!(ws.closed_with().await, Some(4401));
    // Without a device, dm ops are refused but the connection stays.
    let mut plain = Ws::connect(&server, &server.token("ada")).await;
    plain
        .err(
            json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-phone", "body": "x"}]}),
            "bad_request",
        )
        .await;
    plain.err(json!({"op": "dm.ack", "ids": []}), "bad_request").await;
    plain.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn offline_inbox_arrives_on_connect_in_order_then_live_only_to_its_device_and_is_gone_after_ack() {
    let server = TestServer::start_with(|c| c.dm_inbox_max = 5).await;
    let ada = Rest::user(&server, "ada");
    let bob = Rest::user(&server, "bob");
    for (rest, device) in [(&ada, "ada-phone"), (&bob, "bob-phone"), (&bob, "bob-laptop")] {
        assert_eq!(register(rest, device, 0).await.status, 201);
    }
    let mut a = device_ws(&server, "ada", "ada-phone").await;
    let mut ids = Vec::new();
    for body in ["one", "two", "three"] {
        let ok = a
            .ok(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-phone", "body": format!("{body}-phone")}, {"user": "bob", "device_id": "bob-laptop", "body": format!("{body}-laptop")}]}))
            .await;
        let got: Vec<String> =
            ok["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        assert_eq!(got.len(), 2);
        ids.push(got);
    }
    // A client_id repeated by the same device: the first ids, nothing stored.
    let first = a.ok(json!({"op": "dm.send", "client_id": "c-1", "to": [{"user": "bob", "device_id": "bob-phone", "body": "four-phone"}]})).await;
    let repeat = a.ok(json!({"op": "dm.send", "client_id": "c-1", "to": [{"user": "bob", "device_id": "bob-phone", "body": "again"}]})).await;
    assert_eq!(first["ids"], repeat["ids"]);
    // All or nothing: an unknown device, a full inbox.
    a.err(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-laptop", "body": "lost?"}, {"user": "bob", "device_id": "nope", "body": "x"}]}), "not_found").await;
    a.err(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-laptop", "body": "lost?"}, {"user": "bob", "device_id": "bob-phone", "body": "five"}, {"user": "bob", "device_id": "bob-phone", "body": "six"}]}), "rate_limited").await;
    a.err(
        json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "Bad Id", "body": "x"}]}),
        "invalid_name",
    )
    .await;

    let mut phone = device_ws(&server, "bob", "bob-phone").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let e = within("inbox dm", phone.next_event("dm")).await;
        assert_eq!((e["from"].as_str(), e["from_device"].as_str()), (Some("ada"), Some("ada-phone")));
        got.push(e["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        got,
        ["one-phone", "two-phone", "three-phone", "four-phone"],
        "oldest first, only this device's"
    );
    let laptop_inbox = bob.get("/v1/dm/inbox?device=bob-laptop").await;
    let bodies: Vec<&str> =
        laptop_inbox.body["dms"].as_array().unwrap().iter().map(|d| d["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["one-laptop", "two-laptop", "three-laptop"], "nothing of the refused sends");
    ada.get("/v1/dm/inbox?device=bob-laptop").await.assert_error(403, "forbidden");

    // Live: to the phone's connections only.
    let mut laptop = device_ws(&server, "bob", "bob-laptop").await;
    for _ in 0..3 {
        within("laptop inbox", laptop.next_event("dm")).await;
    }
    let mut plain_bob = Ws::connect(&server, &server.token("bob")).await;
    let live = a
        .ok(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-phone", "body": "live"}]}))
        .await;
    let e = within("live dm", phone.next_event("dm")).await;
    assert_eq!((e["body"].as_str(), &e["id"]), (Some("live"), &live["ids"][0]));
    assert!(laptop.events_so_far("dm").await.is_empty(), "the laptop never sees the phone's DMs");
    assert!(plain_bob.events_so_far("dm").await.is_empty(), "nor a connection without a device");

    // Ack erases: the REST inbox is empty and a reconnect replays nothing.
    let inbox = bob.get("/v1/dm/inbox?device=bob-phone").await;
    let all: Vec<Value> = inbox.body["dms"].as_array().unwrap().clone();
    assert_eq!(all.len(), 5);
    let half: Vec<Value> = all.iter().take(2).map(|d| d["id"].clone()).collect();
    phone.ok(json!({"op": "dm.ack", "ids": half})).await;
    let rest: Vec<Value> = all.iter().skip(2).map(|d| d["id"].clone()).collect();
    let acked = bob.post("/v1/dm/ack", json!({"device": "bob-phone", "ids": rest})).await;
    assert_eq!(acked.status, 200, "{}", acked.body);
    assert_eq!(bob.get("/v1/dm/inbox?device=bob-phone").await.body, json!({"dms": []}));
    phone.close().await;
    let mut again = device_ws(&server, "bob", "bob-phone").await;
    assert!(again.events_so_far("dm").await.is_empty(), "acknowledged DMs are never delivered again");
    ada.post("/v1/dm/ack", json!({"device": "bob-phone", "ids": []})).await.assert_error(403, "forbidden");
}

fn grep(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test]
async fn an_acknowledged_dm_leaves_no_ciphertext_in_the_sqlite_files() {
    let server = TestServer::start().await;
    let bob = Rest::user(&server, "bob");
    assert_eq!(register(&Rest::user(&server, "ada"), "ada-phone", 0).await.status, 201);
    assert_eq!(register(&bob, "bob-phone", 0).await.status, 201);
    let mut a = device_ws(&server, "ada", "ada-phone").await;
    let secret = "Q0lQSEVSVEVYVC1lMmVlLTdmM2E5YjFjNGQ2ZTgyMDU-unique-dm-body";
    let body = secret.repeat(20);
    a.ok(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-phone", "body": body}]})).await;
    assert!(!grep(server.data_dir(), secret.as_bytes()).is_empty(), "the grep finds a stored DM");
    let inbox = bob.get("/v1/dm/inbox?device=bob-phone").await;
    let id = inbox.body["dms"][0]["id"].clone();
    assert_eq!(bob.post("/v1/dm/ack", json!({"device": "bob-phone", "ids": [id]})).await.status, 200);
    assert_eq!(grep(server.data_dir(), secret.as_bytes()), Vec::<String>::new(), "erased from db and WAL");
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn h(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

#[tokio::test]
async fn commits_are_compare_and_swap_and_messages_must_carry_the_head_epoch() {
    let server = TestServer::start().await;
    let ada = Rest::user(&server, "ada");
    let bob = Rest::user(&server, "bob");
    let eve = Rest::user(&server, "eve");
    assert_eq!(register(&bob, "bob-phone", 0).await.status, 201);
    let mut a = Ws::connect(&server, &server.token("ada")).await;
    let mut b = Ws::connect(&server, &server.token("bob")).await;
    let ch = create_channel(&mut a, json!({"name": "secret", "encrypted": true, "members": ["bob"]})).await;
    let plain = create_channel(&mut a, json!({"name": "plain"})).await;
    let commits = format!("/v1/channels/{ch}/commits");

    a.err(json!({"op": "message.send", "channel": ch, "content": "x"}), "bad_request").await;
    a.err(json!({"op": "message.send", "channel": ch, "content": "x", "epoch": 0}), "stale_epoch").await;
    a.err(json!({"op": "message.send", "channel": plain, "content": "x", "epoch": 0}), "bad_request").await;
    ada.post(
        &format!("/v1/channels/{plain}/commits"),
        json!({"epoch": 0, "prev_commit_hash": ZERO, "commit_hash": h('a'), "commit": {}}),
    )
    .await
    .assert_error(400, "bad_request");

    let c0 = json!({"epoch": 0, "prev_commit_hash": ZERO, "commit_hash": h('a'), "commit": {"members": ["ada", "bob"]}, "envelopes": [{"device_id": "bob-phone", "envelope": {"e": 0}}]});
    bob.post(&commits, c0.clone()).await.assert_error(403, "forbidden");
    ada.post(&commits, json!({"epoch": 1, "prev_commit_hash": ZERO, "commit_hash": h('a'), "commit": {}}))
        .await
        .assert_error(409, "stale_epoch");
    ada.post(&commits, json!({"epoch": 0, "prev_commit_hash": "xyz", "commit_hash": h('a'), "commit": {}}))
        .await
        .assert_error(400, "bad_request");
    let posted = ada.post(&commits, c0.clone()).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(
        (posted.body["epoch"].as_u64(), posted.body["commit_hash"].as_str()),
        (Some(0), Some(h('a').as_str()))
    );
    ada.post(&commits, c0).await.assert_error(409, "stale_epoch");
    let rotated = within("key_rotated", b.next_event("key_rotated")).await;
    assert_eq!(
        (rotated["epoch"].as_u64(), rotated["commit_hash"].as_str()),
        (Some(0), Some(h('a').as_str()))
    );
    assert_eq!((rotated["ref"].as_str(), rotated["author"].as_str()), (Some("0"), Some("ada")));

    let sent = a.ok(json!({"op": "message.send", "channel": ch, "content": "sealed-0", "epoch": 0})).await;
    assert_eq!(sent["message"]["epoch"], 0);
    let ev = within("message", b.next_message("sealed-0")).await;
    assert_eq!(ev["message"]["epoch"], 0);
    let mid = sent["message"]["id"].clone();

    // Two racing rotations from the same head: one wins, the other is told to refetch.
    let race = |c: char| {
        let rest = Rest::user(&server, "ada");
        let path = commits.clone();
        tokio::spawn(async move {
            rest.post(
                &path,
                json!({"epoch": 1, "prev_commit_hash": h('a'), "commit_hash": h(c), "commit": {}}),
            )
            .await
            .status
        })
    };
    let (x, y) = (race('b'), race('c'));
    let mut statuses = vec![x.await.unwrap(), y.await.unwrap()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);

    a.err(
        json!({"op": "message.edit", "channel": ch, "message_id": mid, "content": "old", "epoch": 0}),
        "stale_epoch",
    )
    .await;
    a.err(json!({"op": "message.edit", "channel": ch, "message_id": mid, "content": "none"}), "bad_request")
        .await;
    a.ok(json!({"op": "message.edit", "channel": ch, "message_id": mid, "content": "sealed-1", "epoch": 1}))
        .await;
    let edited = within("message_edited", b.next_event("message_edited")).await;
    assert_eq!(edited["epoch"], 1);
    let patched = ada
        .patch(
            &format!("/v1/channels/{ch}/messages/{}", mid.as_str().unwrap()),
            json!({"content": "sealed-1b", "epoch": 1}),
        )
        .await;
    assert_eq!((patched.status, patched.body["message"]["epoch"].as_u64()), (200, Some(1)));
    let history = bob.get(&format!("/v1/channels/{ch}/messages")).await;
    assert_eq!(history.body["messages"][0]["epoch"], 1, "{}", history.body);
    let log = verified_log(&bob, &ch).await;
    assert_eq!(log.iter().filter(|e| e.kind == herald_proto::EntryKind::KeyRotated).count(), 2);

    let all = bob.get(&commits).await;
    assert_eq!(all.body["commits"].as_array().unwrap().len(), 2);
    assert_eq!(all.body["commits"][0]["commit"], json!({"members": ["ada", "bob"]}));
    assert_eq!(bob.get(&format!("{commits}?after=0")).await.body["commits"].as_array().unwrap().len(), 1);
    eve.get(&commits).await.assert_error(403, "forbidden");

    // Envelopes: members and keepers add them for existing epochs; a device reads its own.
    let envelopes = format!("/v1/channels/{ch}/envelopes");
    bob.post(&envelopes, json!({"envelopes": [{"device_id": "bob-phone", "epoch": 9, "envelope": {}}]}))
        .await
        .assert_error(404, "not_found");
    eve.post(&envelopes, json!({"envelopes": [{"device_id": "bob-phone", "epoch": 1, "envelope": {}}]}))
        .await
        .assert_error(403, "forbidden");
    let added = bob
        .post(
            &envelopes,
            json!({"envelopes": [{"device_id": "bob-phone", "epoch": 1, "envelope": {"e": 1}}]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let mine = bob.get(&format!("{envelopes}?device=bob-phone")).await;
    assert_eq!(
        mine.body,
        json!({"envelopes": [{"epoch": 0, "envelope": {"e": 0}}, {"epoch": 1, "envelope": {"e": 1}}]})
    );
    ada.get(&format!("{envelopes}?device=bob-phone")).await.assert_error(403, "forbidden");
}

#[tokio::test]
async fn keepers_hear_keys_needed_on_create_join_add_and_new_device_and_member_left() {
    let server = TestServer::start().await;
    let keeper_token = server.token_with("keeper", Some(vec!["keeper".into()]), 3600);
    let keeper_rest = Rest::new(&server, Some(keeper_token.clone()));
    let k = keeper_rest.put("/v1/keys/devices/keeper-1", json!({"bundle": bundle("keeper-1", &[])})).await;
    assert_eq!(k.status, 201);
    let listed = Rest::user(&server, "ada").get("/v1/keys/keepers").await;
    assert_eq!(listed.body["devices"][0]["device_id"], "keeper-1");
    assert_eq!(listed.body["devices"][0]["user"], "keeper");
    let mut keeper = Ws::connect(&server, &keeper_token).await;
    assert_eq!(register(&Rest::user(&server, "ada"), "ada-phone", 0).await.status, 201);

    let mut a = Ws::connect(&server, &server.token("ada")).await;
    let ch = create_channel(&mut a, json!({"name": "vault", "encrypted": true, "members": ["bob"]})).await;
    let needed = |user: &'static str, ch: String| {
        move |e: &Value| e["event"] == "keys_needed" && e["user"] == user && e["channel"] == ch.as_str()
    };
    let e = within("keys_needed ada", keeper.next_event_where(needed("ada", ch.clone()))).await;
    assert_eq!(e["devices"], json!(["ada-phone"]));
    let e = within("keys_needed bob", keeper.next_event_where(needed("bob", ch.clone()))).await;
    assert_eq!(e["devices"], json!([]));

    let mut c = Ws::connect(&server, &server.token("cy")).await;
    c.ok(json!({"op": "channel.join", "channel": "vault"})).await;
    within("keys_needed cy", keeper.next_event_where(needed("cy", ch.clone()))).await;
    a.ok(json!({"op": "channel.add_member", "channel": ch, "user": "dan"})).await;
    within("keys_needed dan", keeper.next_event_where(needed("dan", ch.clone()))).await;
    assert_eq!(register(&Rest::user(&server, "bob"), "bob-phone", 0).await.status, 201);
    let e = within("keys_needed bob's new device", keeper.next_event_where(needed("bob", ch.clone()))).await;
    assert_eq!(e["devices"], json!(["bob-phone"]));
    c.ok(json!({"op": "channel.leave", "channel": ch})).await;
    let left = within("member_left", keeper.next_event("member_left")).await;
    assert_eq!((left["user"].as_str(), left["channel"].as_str()), (Some("cy"), Some(ch.as_str())));

    // A plain channel asks the keeper for nothing.
    let plain = create_channel(&mut a, json!({"name": "open-talk", "members": ["bob"]})).await;
    let seen = keeper.sync().await;
    assert!(
        !seen.iter().any(|e| e["channel"] == plain.as_str()),
        "nothing about a plain channel reaches a keeper that is not a member: {seen:?}"
    );
    // The keeper may post the next commit of a channel it did not create.
    let posted = keeper_rest
        .post(
            &format!("/v1/channels/{ch}/commits"),
            json!({"epoch": 0, "prev_commit_hash": ZERO, "commit_hash": h('f'), "commit": {}}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
}

#[tokio::test]
async fn shards_of_a_file_land_in_distinct_blob_dirs_and_a_missing_dir_only_loses_its_own() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().join("blobs")).collect();
    let server = TestServer::start_with({
        let paths = paths.clone();
        move |c| c.blob_dir = paths
    })
    .await;
    let ada = Rest::user(&server, "ada");
    let ch =
        ada.post("/v1/channels", json!({"name": "files", "encrypted": true})).await.body["channel"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let mut ids = Vec::new();
    for i in 0..6u32 {
        let bytes = format!("shard {i} of one file").into_bytes();
        let put = ada.put_bytes(&format!("/v1/channels/{ch}/blobs?shard={i}"), bytes).await;
        assert_eq!(put.status, 201, "{}", put.body);
        let id = put.body["blob_id"].as_str().unwrap().to_owned();
        let home = &paths[i as usize % 3];
        assert!(home.join(&ch).join(&id).is_file(), "shard {i} lives in directory {}", i % 3);
        for (j, other) in paths.iter().enumerate() {
            if j != i as usize % 3 {
                assert!(!other.join(&ch).join(&id).exists(), "shard {i} only in its own directory");
            }
        }
        ids.push(id);
    }
    let unsharded = ada.put_bytes(&format!("/v1/channels/{ch}/blobs"), b"no shard".to_vec()).await;
    assert!(paths[0].join(&ch).join(unsharded.body["blob_id"].as_str().unwrap()).is_file());
    ada.put_bytes(&format!("/v1/channels/{ch}/blobs?shard=x"), vec![1])
        .await
        .assert_error(400, "bad_request");
    for id in &ids {
        assert_eq!(ada.get(&format!("/v1/channels/{ch}/blobs/{id}")).await.status, 200);
    }
    // Directory 1 disappears (a disk gone): its shards are not found, the rest still served.
    std::fs::remove_dir_all(&paths[1]).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let g = ada.get(&format!("/v1/channels/{ch}/blobs/{id}")).await;
        if i % 3 == 1 {
            g.assert_error(404, "not_found");
        } else {
            assert_eq!(g.status, 200);
        }
    }
    assert_eq!(Rest::new(&server, None).get("/healthz").await.status, 200);
}

#[tokio::test]
async fn undelivered_dms_expire_after_the_dm_ttl() {
    let server = TestServer::start_with(|c| c.dm_ttl = "1s".parse().unwrap()).await;
    let bob = Rest::user(&server, "bob");
    assert_eq!(register(&Rest::user(&server, "ada"), "ada-phone", 0).await.status, 201);
    assert_eq!(register(&bob, "bob-phone", 0).await.status, 201);
    let mut a = device_ws(&server, "ada", "ada-phone").await;
    a.ok(json!({"op": "dm.send", "to": [{"user": "bob", "device_id": "bob-phone", "body": "short-lived"}]}))
        .await;
    assert_eq!(bob.get("/v1/dm/inbox?device=bob-phone").await.body["dms"].as_array().unwrap().len(), 1);
    // The sweeper runs every second: the entry is gone within a few, without an ack.
    within("expiry", async {
        loop {
            if bob.get("/v1/dm/inbox?device=bob-phone").await.body == json!({"dms": []}) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let mut phone = device_ws(&server, "bob", "bob-phone").await;
    assert!(phone.events_so_far("dm").await.is_empty(), "an expired DM is never delivered");
}
