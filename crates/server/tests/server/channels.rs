//! §4 channel ops and their REST twins (§6).

use crate::common::*;
use herald_testing::TestServer;
use serde_json::{Value, json};

const UNKNOWN_ID: &str = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11";

fn list_entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test]
async fn create_named_and_unnamed_and_recreate_is_idempotent_for_the_owner() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let ok = ada.ok(json!({"op": "channel.create", "name": "project-x", "title": "Project X"})).await;
    let ch = &ok["channel"];
    let id = ch["id"].as_str().unwrap().to_owned();
    assert!(herald_proto::names::looks_like_uuid(&id), "{ch}");
    assert_eq!((ch["name"].as_str(), ch["title"].as_str()), (Some("project-x"), Some("Project X")));
    assert_eq!(ch["created_by"], "ada");
    assert_eq!(ch["policy"], "open");
    let created = ada.next_event("channel_created").await;
    assert_eq!(
        (created["channel"].as_str(), created["name"].as_str()),
        (Some(id.as_str()), Some("project-x"))
    );
    assert_eq!(ada.next_event("member_joined").await["user"], "ada");

    let again = ada.ok(json!({"op": "channel.create", "name": "project-x"})).await;
    assert_eq!(again["channel"]["id"], id.as_str(), "a second create by the owner returns the channel");
    bob.err(json!({"op": "channel.create", "name": "project-x"}), "name_taken").await;

    let a = create_channel(&mut ada, json!({})).await;
    let b = create_channel(&mut ada, json!({"title": "no name"})).await;
    assert_ne!(a, b, "unnamed channels are distinct");
    let list = ada.ok(json!({"op": "channel.list"})).await;
    assert_eq!(list["channels"].as_array().unwrap().len(), 3);
    assert_eq!(list_entry(&list, &a)["name"], Value::Null);
}

#[tokio::test]
async fn names_ids_and_not_found() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut cat = Ws::connect(&server, &server.token("cat")).await;
    let id = create_channel(&mut ada, json!({"name": "general"})).await;
    let by_name = bob.ok(json!({"op": "channel.join", "channel": "general"})).await;
    assert_eq!(by_name["channel"]["id"], id.as_str());
    let by_id = cat.ok(json!({"op": "channel.join", "channel": id})).await;
    assert_eq!(by_id["channel"]["name"], "general");
    let j = ada.next_event_where(|e| e["event"] == "member_joined" && e["user"] == "bob").await;
    assert_eq!(j["by"], "bob");
    ada.next_event_where(|e| e["event"] == "member_joined" && e["user"] == "cat").await;

    for bad in ["no-such-channel", UNKNOWN_ID] {
        bob.err(json!({"op": "channel.join", "channel": bad}), "channel_not_found").await;
        bob.err(json!({"op": "message.send", "channel": bad, "content": "x"}), "channel_not_found").await;
    }
    for bad in ["Bad Name", "x", "UPPER", "dot.name", &"z".repeat(65)] {
        bob.err(json!({"op": "channel.create", "name": bad}), "invalid_name").await;
        bob.err(json!({"op": "channel.join", "channel": bad}), "invalid_name").await;
    }
    bob.err(json!({"op": "channel.add_member", "channel": id, "user": "bad user"}), "invalid_name").await;
    bob.err(json!({"op": "channel.create", "members": ["ok", "not ok"]}), "invalid_name").await;
}

#[tokio::test]
async fn leave_add_and_remove_members() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut dan = Ws::connect(&server, &server.token("dan")).await;
    let id = create_channel(&mut ada, json!({"name": "team", "members": ["bob"]})).await;
    assert_eq!(bob.next_event("channel_created").await["channel"], id.as_str());

    bob.ok(json!({"op": "channel.leave", "channel": id})).await;
    let left = ada.next_event("member_left").await;
    assert_eq!((left["user"].as_str(), left["by"].as_str()), (Some("bob"), Some("bob")));
    assert_eq!(bob.next_event("member_left").await["user"], "bob", "the leaver hears its own leave");
    bob.err(json!({"op": "message.send", "channel": id, "content": "x"}), "forbidden").await;
    send(&mut ada, &id, "after bob left").await;
    assert!(
        !bob.sync().await.iter().any(|e| e["event"] == "message"),
        "a member that left still receives messages"
    );

    ada.ok(json!({"op": "channel.add_member", "channel": id, "user": "dan"})).await;
    let joined = dan.next_event("member_joined").await;
    assert_eq!((joined["user"].as_str(), joined["by"].as_str()), (Some("dan"), Some("ada")));
    send(&mut ada, &id, "welcome dan").await;
    dan.next_message("welcome dan").await;
    ada.ok(json!({"op": "channel.remove_member", "channel": id, "user": "dan"})).await;
    let left = dan.next_event("member_left").await;
    assert_eq!((left["user"].as_str(), left["by"].as_str()), (Some("dan"), Some("ada")));
    dan.err(json!({"op": "history", "channel": id}), "forbidden").await;
    // Outsiders may not add people.
    dan.err(json!({"op": "channel.add_member", "channel": id, "user": "dan"}), "forbidden").await;
}

#[tokio::test]
async fn list_counts_unread_until_read() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "news", "members": ["bob"]})).await;
    send(&mut ada, &id, "mine").await;
    let mut msgs = Vec::new();
    for i in 0..3 {
        msgs.push(send(&mut bob, &id, &format!("b{i}")).await);
    }
    let list = ada.ok(json!({"op": "channel.list"})).await;
    let e = list_entry(&list, &id);
    assert_eq!(e["unread"], 3, "own messages do not count: {e}");
    assert_eq!(e["last_seq"], msgs[2]["seq"]);
    assert_eq!(e["name"], "news");
    ada.ok(json!({"op": "read", "channel": id, "message_id": msgs[1]["id"]})).await;
    let list = ada.ok(json!({"op": "channel.list"})).await;
    assert_eq!(list_entry(&list, &id)["unread"], 1);
    let rest = Rest::user(&server, "ada");
    let a = rest.get("/v1/channels").await;
    assert_eq!(a.status, 200);
    assert_eq!(list_entry(&a.body, &id)["unread"], 1);
}

#[tokio::test]
async fn directory_shows_open_channels_and_invite_needs_an_add() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut cat = Ws::connect(&server, &server.token("cat")).await;
    let open = create_channel(&mut ada, json!({"name": "lobby"})).await;
    let secret = create_channel(&mut ada, json!({"name": "secret", "policy": "invite"})).await;
    create_channel(&mut ada, json!({})).await;
    let names = |d: &Value| -> Vec<String> {
        d["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    let d = cat.ok(json!({"op": "channel.directory"})).await;
    assert_eq!(names(&d), vec!["lobby"], "{d}");
    assert_eq!(d["channels"][0]["id"], open.as_str());
    assert_eq!(names(&ada.ok(json!({"op": "channel.directory"})).await), vec!["lobby", "secret"]);
    let admin =
        Ws::connect(&server, &server.token_with("root", Some(vec!["channels:admin".into()]), 60)).await;
    let mut admin = admin;
    assert_eq!(names(&admin.ok(json!({"op": "channel.directory"})).await), vec!["lobby", "secret"]);

    cat.err(json!({"op": "channel.join", "channel": "secret"}), "forbidden").await;
    cat.err(json!({"op": "history", "channel": secret}), "forbidden").await;
    ada.ok(json!({"op": "channel.add_member", "channel": "secret", "user": "cat"})).await;
    let j = cat.ok(json!({"op": "channel.join", "channel": "secret"})).await;
    assert_eq!(j["channel"]["id"], secret.as_str());
    assert_eq!(names(&cat.ok(json!({"op": "channel.directory"})).await), vec!["lobby", "secret"]);
    // channels:admin may join an invite channel by itself.
    admin.ok(json!({"op": "channel.join", "channel": "secret"})).await;
    let rest = Rest::user(&server, "zed");
    let a = rest.get("/v1/channels/directory").await;
    assert_eq!((a.status, names(&a.body)), (200, vec!["lobby".to_owned()]));
}

#[tokio::test]
async fn delete_tells_members_and_the_channel_is_gone() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "doomed", "members": ["bob"]})).await;
    let m = send(&mut ada, &id, "soon gone").await;
    bob.err(json!({"op": "channel.delete", "channel": id}), "forbidden").await;
    ada.ok(json!({"op": "channel.delete", "channel": "doomed"})).await;
    for ws in [&mut ada, &mut bob] {
        let d = ws.next_event("channel_deleted").await;
        assert_eq!((d["channel"].as_str(), d["name"].as_str()), (Some(id.as_str()), Some("doomed")));
    }
    for op in [
        json!({"op": "message.send", "channel": id, "content": "x"}),
        json!({"op": "history", "channel": id}),
        json!({"op": "channel.join", "channel": id}),
        json!({"op": "channel.join", "channel": "doomed"}),
        json!({"op": "reaction.add", "channel": id, "message_id": m["id"], "emoji": "x"}),
        json!({"op": "typing", "channel": id}),
        json!({"op": "channel.delete", "channel": id}),
    ] {
        bob.err(op, "channel_not_found").await;
    }
    assert!(ada.ok(json!({"op": "channel.list"})).await["channels"].as_array().unwrap().is_empty());
    // The name is free again.
    let again = create_channel(&mut bob, json!({"name": "doomed"})).await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn rest_channel_routes() {
    let server = TestServer::start().await;
    let ada = Rest::user(&server, "ada");
    let bob = Rest::user(&server, "bob");
    let a = ada.post("/v1/channels", json!({"name": "rest-ch", "title": "T"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["channel"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ada.post("/v1/channels", json!({"name": "rest-ch"})).await.body["channel"]["id"], id.as_str());
    bob.post("/v1/channels", json!({"name": "rest-ch"})).await.assert_error(409, "name_taken");
    bob.post("/v1/channels", json!({"name": "Bad"})).await.assert_error(400, "invalid_name");
    bob.post_raw("/v1/channels", "{not json").await.assert_error(400, "bad_request");

    let l = ada.get("/v1/channels").await;
    assert_eq!((l.status, l.body["channels"][0]["id"].as_str()), (200, Some(id.as_str())));
    let d = bob.get("/v1/channels/directory").await;
    assert_eq!(d.body["channels"][0]["name"], "rest-ch");

    bob.get("/v1/channels/rest-ch").await.assert_error(403, "forbidden");
    let j = bob.post("/v1/channels/rest-ch/join", json!({})).await;
    assert_eq!((j.status, j.body["channel"]["id"].as_str()), (200, Some(id.as_str())));
    for key in [id.as_str(), "rest-ch"] {
        let g = bob.get(&format!("/v1/channels/{key}")).await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.body["channel"]["id"], id.as_str());
        let members = g.body["members"].as_array().unwrap();
        let users: Vec<&str> = members.iter().map(|m| m["user"].as_str().unwrap()).collect();
        assert_eq!(users, vec!["ada", "bob"]);
        assert_eq!(members[0]["name"], "ada (test)");
        assert_eq!(members[0]["kind"], "human");
        assert_eq!(members[0]["last_read"], 0);
    }
    bob.get("/v1/channels/nope-nope").await.assert_error(404, "channel_not_found");
    bob.get(&format!("/v1/channels/{UNKNOWN_ID}")).await.assert_error(404, "channel_not_found");
    bob.post(&format!("/v1/channels/{UNKNOWN_ID}/join"), json!({}))
        .await
        .assert_error(404, "channel_not_found");

    bob.delete(&format!("/v1/channels/{id}")).await.assert_error(403, "forbidden");
    let del = ada.delete(&format!("/v1/channels/{id}")).await;
    assert_eq!(del.status, 204, "{}", del.body);
    ada.get(&format!("/v1/channels/{id}")).await.assert_error(404, "channel_not_found");
    ada.delete(&format!("/v1/channels/{id}")).await.assert_error(404, "channel_not_found");
}
