//! Moderation over real sockets (docs/protocol.md §K): kick (may rejoin), a moderator's
//! delete of someone else's message (`by`), and disconnecting a user (close code 4403).

use crate::common::*;
use herald_testing::TestServer;
use serde_json::json;

#[tokio::test]
async fn kick_removes_with_by_and_the_user_may_rejoin() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut cat = Ws::connect(&server, &server.token("cat")).await;
    let ch = create_channel(&mut ada, json!({"name": "room"})).await;
    bob.ok(json!({"op": "channel.join", "channel": ch})).await;
    cat.ok(json!({"op": "channel.join", "channel": ch})).await;
    // A member who is neither the creator nor a moderator: forbidden.
    cat.err(json!({"op": "channel.kick", "channel": ch, "user": "bob"}), "forbidden").await;
    ada.ok(json!({"op": "channel.kick", "channel": ch, "user": "bob"})).await;
    let left = bob.next_event_where(|e| e["event"] == "member_left" && e["user"] == "bob").await;
    assert_eq!(left["by"], "ada");
    bob.err(json!({"op": "message.send", "channel": ch, "content": "still here?"}), "forbidden").await;
    bob.ok(json!({"op": "channel.join", "channel": ch})).await;
    // A server token kicks too, over REST.
    let backend = Rest::new(&server, Some(server.token_with("backend", Some(vec!["server".into()]), 3600)));
    let r = backend.post(&format!("/v1/channels/{ch}/kick"), json!({"user": "cat"})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    cat.next_event_where(|e| e["event"] == "member_left" && e["user"] == "cat" && e["by"] == "backend").await;
    Rest::user(&server, "bob")
        .post(&format!("/v1/channels/{ch}/kick"), json!({"user": "ada"}))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn a_moderator_deletes_anyones_message_and_the_tombstone_says_by_whom() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let ch = create_channel(&mut ada, json!({"name": "modded"})).await;
    bob.ok(json!({"op": "channel.join", "channel": ch})).await;
    let m = send(&mut bob, &ch, "rude words").await;
    let mid = m["id"].as_str().unwrap().to_owned();
    // The channel's creator is no moderator of messages: not_author.
    ada.err(json!({"op": "message.delete", "channel": ch, "message_id": mid}), "not_author").await;
    let modtoken = server.token_with("mod", Some(vec!["channels:admin".into()]), 3600);
    let mut moderator = Ws::connect(&server, &modtoken).await;
    moderator.ok(json!({"op": "message.delete", "channel": ch, "message_id": mid})).await;
    let gone = bob.next_event("message_deleted").await;
    assert_eq!((gone["message_id"].as_str(), gone["by"].as_str()), (Some(mid.as_str()), Some("mod")));
    assert_eq!(gone["author"], "bob", "the tombstone keeps the message's author");
    let page = Rest::user(&server, "bob").get(&format!("/v1/channels/{ch}/messages")).await;
    assert!(page.body["messages"].as_array().unwrap().iter().all(|x| x["id"] != mid.as_str()));
    let log = verified_log(&Rest::user(&server, "bob"), &ch).await;
    let original = log.iter().find(|e| e.seq == m["seq"].as_u64().unwrap()).unwrap();
    assert!(original.content.is_none(), "the content is erased");
    // The author deleting their own still says by = the author.
    let m2 = send(&mut bob, &ch, "mine").await;
    bob.ok(json!({"op": "message.delete", "channel": ch, "message_id": m2["id"]})).await;
    let own = bob.next_event_where(|e| e["event"] == "message_deleted" && e["message_id"] == m2["id"]).await;
    assert_eq!(own["by"], "bob");
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_4403() {
    let server = TestServer::start().await;
    let mut bob1 = Ws::connect(&server, &server.token("bob")).await;
    let mut bob2 = Ws::connect(&server, &server.token("bob")).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    Rest::user(&server, "ada")
        .post("/v1/users/bob/disconnect", json!(null))
        .await
        .assert_error(403, "forbidden");
    let admin = Rest::new(&server, Some(server.token_with("ops", Some(vec!["admin".into()]), 3600)));
    admin.post("/v1/users/bad%20id/disconnect", json!(null)).await.assert_error(400, "invalid_name");
    let r = admin.post("/v1/users/bob/disconnect", json!(null)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(within("bob1 closed", bob1.closed_with()).await, Some(4403));
    assert_eq!(within("bob2 closed", bob2.closed_with()).await, Some(4403));
    // Others stay connected.
    ada.ok(json!({"op": "ping"})).await;
    // Bob may connect again (a disconnect is no ban of the token).
    let mut again = Ws::connect(&server, &server.token("bob")).await;
    again.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn a_ban_keeps_a_user_out_until_it_ends_or_is_lifted() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut cat = Ws::connect(&server, &server.token("cat")).await;
    let ch = create_channel(&mut ada, json!({"name": "banning"})).await;
    bob.ok(json!({"op": "channel.join", "channel": ch})).await;
    cat.ok(json!({"op": "channel.join", "channel": ch})).await;
    cat.err(json!({"op": "channel.ban", "channel": ch, "user": "bob"}), "forbidden").await;
    ada.err(json!({"op": "channel.ban", "channel": ch, "user": "bob", "until": "tomorrow"}), "bad_request")
        .await;
    ada.ok(json!({"op": "channel.ban", "channel": ch, "user": "bob"})).await;
    let left = bob.next_event_where(|e| e["event"] == "member_left" && e["user"] == "bob").await;
    assert_eq!(left["by"], "ada");
    bob.err(json!({"op": "channel.join", "channel": ch}), "forbidden").await;
    cat.err(json!({"op": "channel.add_member", "channel": ch, "user": "bob"}), "forbidden").await;
    // Lifted over REST: bob joins again.
    let r = Rest::user(&server, "ada").delete(&format!("/v1/channels/{ch}/bans/bob")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    bob.ok(json!({"op": "channel.join", "channel": ch})).await;
    // A ban that already ended keeps nobody out; one in the future does (REST).
    let rest = Rest::user(&server, "ada");
    let past = rest
        .post(&format!("/v1/channels/{ch}/bans"), json!({"user": "cat", "until": "2000-01-01T00:00:00Z"}))
        .await;
    assert_eq!(past.status, 204, "{}", past.body);
    cat.next_event_where(|e| e["event"] == "member_left" && e["user"] == "cat").await;
    cat.ok(json!({"op": "channel.join", "channel": ch})).await;
    let future = rest
        .post(&format!("/v1/channels/{ch}/bans"), json!({"user": "cat", "until": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(future.status, 204);
    cat.err(json!({"op": "channel.join", "channel": ch}), "forbidden").await;
}
