//! §9 private channels over real sockets: only a signature of the app's backend for this very
//! connection and channel joins; everything else is `forbidden`, and no other op makes or
//! enters a `private-` channel.

use crate::common::*;
use herald_proto::private::sign_channel;
use herald_testing::TestServer;
use serde_json::json;

fn app_secret(server: &TestServer) -> Vec<u8> {
    herald_server::app_secret::load_or_create(server.data_dir(), "default").unwrap()
}

#[tokio::test]
async fn only_the_right_signature_joins_and_the_first_join_creates_an_invite_channel() {
    let server = TestServer::start().await;
    let secret = app_secret(&server);
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let (ada_conn, bob_conn) = (ada.conn_id(), bob.conn_id());
    assert_ne!(ada_conn, bob_conn);

    // Missing, garbage, another connection's, another channel's, another secret's: forbidden.
    ada.err(json!({"op": "channel.join", "channel": "private-team"}), "forbidden").await;
    ada.err(json!({"op": "channel.join", "channel": "private-team", "auth": "nope"}), "forbidden").await;
    let for_bob = sign_channel(&secret, &bob_conn, "private-team");
    ada.err(json!({"op": "channel.join", "channel": "private-team", "auth": for_bob}), "forbidden").await;
    let other_channel = sign_channel(&secret, &ada_conn, "private-other");
    ada.err(json!({"op": "channel.join", "channel": "private-team", "auth": other_channel}), "forbidden")
        .await;
    let wrong_key = sign_channel(b"not the app secret at all, no no", &ada_conn, "private-team");
    ada.err(json!({"op": "channel.join", "channel": "private-team", "auth": wrong_key}), "forbidden").await;
    // None of those created it.
    Rest::user(&server, "ada").get("/v1/channels/private-team").await.assert_error(404, "channel_not_found");

    let auth = sign_channel(&secret, &ada_conn, "private-team");
    let ok = ada.ok(json!({"op": "channel.join", "channel": "private-team", "auth": auth})).await;
    let ch = &ok["channel"];
    assert_eq!((ch["name"].as_str(), ch["policy"].as_str()), (Some("private-team"), Some("invite")));
    let id = ch["id"].as_str().unwrap().to_owned();
    assert_eq!(ada.next_event("channel_created").await["channel"], id.as_str());
    // A second signed join is a harmless repeat; bob joins with his own, by id too.
    ada.ok(json!({"op": "channel.join", "channel": "private-team", "auth": auth})).await;
    bob.err(json!({"op": "channel.join", "channel": id}), "forbidden").await;
    let bob_auth = sign_channel(&secret, &bob_conn, "private-team");
    let ok = bob.ok(json!({"op": "channel.join", "channel": id, "auth": bob_auth})).await;
    assert_eq!(ok["channel"]["id"], id.as_str());
    let joined = ada.next_event_where(|e| e["event"] == "member_joined" && e["user"] == "bob").await;
    assert_eq!(joined["channel"], id.as_str());
    send(&mut bob, &id, "hello private").await;
    ada.next_message("hello private").await;
}

#[tokio::test]
async fn no_other_way_into_a_private_channel() {
    let server = TestServer::start().await;
    let secret = app_secret(&server);
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut cat = Ws::connect(&server, &server.token("cat")).await;
    // channel.create of a private- name: forbidden, over WebSocket and REST.
    ada.err(json!({"op": "channel.create", "name": "private-x"}), "forbidden").await;
    Rest::user(&server, "ada")
        .post("/v1/channels", json!({"name": "private-x"}))
        .await
        .assert_error(403, "forbidden");
    let auth = sign_channel(&secret, &ada.conn_id(), "private-x");
    let id =
        ada.ok(json!({"op": "channel.join", "channel": "private-x", "auth": auth})).await["channel"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    // A member cannot add others; only the app's backend (channels:admin or server) can.
    ada.err(json!({"op": "channel.add_member", "channel": id, "user": "cat"}), "forbidden").await;
    // Nor can its first joiner remove anyone: it is not an owner.
    let admin = server.token_with("backend", Some(vec!["channels:admin".into()]), 3600);
    let mut backend = Ws::connect(&server, &admin).await;
    backend.ok(json!({"op": "channel.add_member", "channel": id, "user": "cat"})).await;
    cat.next_event_where(|e| e["event"] == "member_joined" && e["user"] == "cat").await;
    ada.err(json!({"op": "channel.remove_member", "channel": id, "user": "cat"}), "forbidden").await;
    // A channels:admin token without a signature still cannot join it itself.
    backend.err(json!({"op": "channel.join", "channel": "private-x"}), "forbidden").await;
    // Leaving is always allowed.
    cat.ok(json!({"op": "channel.leave", "channel": id})).await;
}

#[tokio::test]
async fn rest_join_takes_auth_and_one_of_the_callers_own_conn_ids() {
    let server = TestServer::start().await;
    let secret = app_secret(&server);
    let ada_ws = Ws::connect(&server, &server.token("ada")).await;
    let bob_ws = Ws::connect(&server, &server.token("bob")).await;
    let ada = Rest::user(&server, "ada");
    let bob_conn = bob_ws.conn_id();
    // bob's connection, with a signature valid for it: not ada's to use.
    let auth = sign_channel(&secret, &bob_conn, "private-r");
    ada.post("/v1/channels/private-r/join", json!({"auth": auth, "conn_id": bob_conn}))
        .await
        .assert_error(403, "forbidden");
    ada.post("/v1/channels/private-r/join", json!({})).await.assert_error(403, "forbidden");
    ada.post("/v1/channels/private-r/join", json!({"auth": "00", "conn_id": ada_ws.conn_id()}))
        .await
        .assert_error(403, "forbidden");
    ada.post("/v1/channels/private-r/join", json!({"bogus": 1})).await.assert_error(400, "bad_request");
    let auth = sign_channel(&secret, &ada_ws.conn_id(), "private-r");
    let ok =
        ada.post("/v1/channels/private-r/join", json!({"auth": auth, "conn_id": ada_ws.conn_id()})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["channel"]["policy"], "invite");
    // An ordinary channel still joins with no body at all.
    let mut ada_ws = ada_ws;
    create_channel(&mut ada_ws, json!({"name": "open-one"})).await;
    let bob = Rest::user(&server, "bob");
    assert_eq!(bob.post_raw("/v1/channels/open-one/join", "").await.status, 200, "no body at all");
    drop(bob_ws);
}

#[tokio::test]
async fn app_secret_from_the_environment_is_used_for_every_app() {
    let shared = "0123456789abcdef0123456789abcdef-shared";
    let server =
        TestServer::start_with(|c| c.app_secret = Some(herald_server::config::Secret(shared.into()))).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let data_dir_secret = app_secret(&server);
    let wrong = sign_channel(&data_dir_secret, &ada.conn_id(), "private-e");
    ada.err(json!({"op": "channel.join", "channel": "private-e", "auth": wrong}), "forbidden").await;
    let right = sign_channel(shared.as_bytes(), &ada.conn_id(), "private-e");
    ada.ok(json!({"op": "channel.join", "channel": "private-e", "auth": right})).await;
}
