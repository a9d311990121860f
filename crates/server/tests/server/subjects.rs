//! §4 `subscribe` / `unsubscribe` / `publish` and `POST /v1/publish`: exact-match fan-out,
//! private inboxes, and tenants kept apart.

use crate::common::*;
use herald_server::auth::{Claims, mint_hs256, now_secs};
use herald_testing::TestServer;
use serde_json::json;

fn token_in_app(server: &TestServer, sub: &str, app: &str) -> String {
    let secret = std::fs::read_to_string(server.data_dir().join("secret")).unwrap();
    let claims = Claims {
        sub: sub.into(),
        name: None,
        kind: None,
        exp: now_secs() + 3600,
        iat: None,
        app: Some(app.into()),
        grants: None,
    };
    mint_hs256(secret.trim().as_bytes(), &claims).unwrap()
}

fn publications(events: &[serde_json::Value], subject: &str) -> Vec<serde_json::Value> {
    events.iter().filter(|e| e["event"] == "publication" && e["subject"] == subject).cloned().collect()
}

#[tokio::test]
async fn publish_fans_out_to_subscribers_and_to_the_sender_only_if_subscribed() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut eve = Ws::connect(&server, &server.token("eve")).await;
    ada.ok(json!({"op": "subscribe", "subject": "news"})).await;
    bob.ok(json!({"op": "subscribe", "subject": "news"})).await;
    eve.ok(json!({"op": "subscribe", "subject": "news2"})).await;

    // Eve publishes without being subscribed: ada and bob get it, eve does not.
    eve.ok(json!({"op": "publish", "subject": "news", "data": {"n": 1}})).await;
    for ws in [&mut ada, &mut bob] {
        let p = ws.next_event("publication").await;
        assert_eq!(p["subject"], "news");
        assert_eq!(p["from"], "eve");
        assert_eq!(p["data"], json!({"n": 1}));
    }
    assert!(publications(&eve.sync().await, "news").is_empty());

    // Ada publishes while subscribed: she gets her own publication too.
    ada.ok(json!({"op": "publish", "subject": "news", "data": "two"})).await;
    assert_eq!(ada.next_event("publication").await["data"], "two");
    assert_eq!(bob.next_event("publication").await["data"], "two");
    assert!(publications(&eve.sync().await, "news").is_empty(), "no wildcard or prefix match");

    // Unsubscribing stops delivery.
    bob.ok(json!({"op": "unsubscribe", "subject": "news"})).await;
    ada.ok(json!({"op": "publish", "subject": "news", "data": "three"})).await;
    assert_eq!(ada.next_event("publication").await["data"], "three");
    assert!(publications(&bob.sync().await, "news").is_empty(), "unsubscribed bob still receives");
}

#[tokio::test]
async fn user_inbox_subscribe_only_by_its_owner() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    ada.err(json!({"op": "subscribe", "subject": "user:bob"}), "forbidden").await;
    bob.ok(json!({"op": "subscribe", "subject": "user:bob"})).await;
    ada.ok(json!({"op": "subscribe", "subject": "user:ada"})).await;
    // Only the owner (or a server token) may publish to an inbox.
    ada.err(json!({"op": "publish", "subject": "user:bob", "data": 1}), "forbidden").await;
    let svc = Rest::new(&server, Some(server.token_with("svc", Some(vec!["server".into()]), 60)));
    let a = svc.post("/v1/publish", json!({"subject": "user:bob", "data": "for bob"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let p = bob.next_event("publication").await;
    assert_eq!((p["subject"].as_str(), p["data"].as_str()), (Some("user:bob"), Some("for bob")));
    assert!(publications(&ada.sync().await, "user:bob").is_empty());
}

#[tokio::test]
async fn rest_publish_reaches_websocket_subscribers() {
    let server = TestServer::start().await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    bob.ok(json!({"op": "subscribe", "subject": "alerts.eu"})).await;
    let rest = Rest::user(&server, "ada");
    let a = rest.post("/v1/publish", json!({"subject": "alerts.eu", "data": [1, 2, 3]})).await;
    assert_eq!((a.status, a.body.clone()), (200, json!({})));
    let p = bob.next_event("publication").await;
    assert_eq!((p["from"].clone(), p["data"].clone()), (json!("ada"), json!([1, 2, 3])));
    rest.post("/v1/publish", json!({"subject": "has space", "data": 1}))
        .await
        .assert_error(400, "invalid_name");
    rest.post("/v1/publish", json!({"subject": "x"})).await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn subjects_and_channels_are_per_app() {
    let server = TestServer::start().await;
    let mut here = Ws::connect(&server, &server.token("ada")).await;
    let mut there = Ws::connect(&server, &token_in_app(&server, "ada", "other")).await;
    here.ok(json!({"op": "subscribe", "subject": "room"})).await;
    there.ok(json!({"op": "subscribe", "subject": "room"})).await;
    there.ok(json!({"op": "publish", "subject": "room", "data": "other app"})).await;
    assert_eq!(there.next_event("publication").await["data"], "other app");
    assert!(publications(&here.sync().await, "room").is_empty(), "a publication crossed apps");

    // The same user id in another app is another user: no channel of this app is visible.
    let id = create_channel(&mut here, json!({"name": "shared-name"})).await;
    there.err(json!({"op": "channel.join", "channel": id}), "channel_not_found").await;
    there.err(json!({"op": "history", "channel": id}), "channel_not_found").await;
    let theirs = create_channel(&mut there, json!({"name": "shared-name"})).await;
    assert_ne!(theirs, id, "names are unique per app, not globally");
    send(&mut here, &id, "only here").await;
    let events = there.sync().await;
    assert!(!events.iter().any(|e| e["event"] == "message"), "a message crossed apps: {events:?}");
}
