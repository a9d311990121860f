//! §9 webhooks over real sockets: a receiver on port 0 that refuses at first gets every event
//! once per id after retries, in `seq` order per channel, signed with the app secret; a channel
//! whose receiver keeps failing holds back only its own events.

use crate::common::*;
use herald_testing::{TestServer, WebhookReceiver};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn hooked(url: String) -> impl FnOnce(&mut herald_server::config::ServeConfig) {
    move |c| {
        c.webhooks = vec![url];
        c.webhook_retry_ms = 20;
        c.webhook_max_backoff_ms = 100;
    }
}

/// The ids accepted (2xx), in arrival order, for one channel.
fn accepted_seqs(all: &[herald_testing::webhook::Received], channel: &str) -> Vec<u64> {
    all.iter()
        .filter(|r| r.accepted() && r.json["channel"] == channel && r.json["seq"].is_u64())
        .map(|r| r.json["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn failing_twice_then_ok_delivers_every_event_once_in_order_and_signed() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    // The first two POSTs fail (a 500, then a 503); every later one succeeds.
    let receiver = WebhookReceiver::start(move |_| match a.fetch_add(1, Ordering::SeqCst) {
        0 => 500,
        1 => 503,
        _ => 200,
    })
    .await;
    let server = TestServer::start_with(hooked(receiver.url())).await;
    let secret = herald_server::app_secret::load_or_create(server.data_dir(), "default").unwrap();
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let ch = create_channel(&mut ada, json!({"name": "hooked"})).await;
    let m1 = send(&mut ada, &ch, "one").await;
    send(&mut ada, &ch, "two").await;
    let m1_id = m1["id"].as_str().unwrap().to_owned();
    ada.ok(json!({"op": "message.edit", "channel": ch, "message_id": m1_id, "content": "one!"})).await;
    ada.ok(json!({"op": "message.delete", "channel": ch, "message_id": m1_id})).await;
    // channel_created, member_joined, 2 messages, an edit, a delete: seqs 1..=6.
    let all = receiver.wait_until(WAIT, |all| accepted_seqs(all, &ch).len() >= 6).await;
    assert_eq!(all[0].status, 500);
    assert_eq!(all[1].status, 503);
    assert_eq!(all[0].id(), all[1].id(), "a retry carries the same id");
    assert_eq!(all[1].id(), all[2].id());
    assert_eq!(accepted_seqs(&all, &ch), vec![1, 2, 3, 4, 5, 6], "each once, in seq order");
    let mut ids = HashSet::new();
    for r in all.iter().filter(|r| r.accepted()) {
        assert!(ids.insert(r.id().to_owned()), "accepted twice: {}", r.id());
        let sig = r.signature.as_deref().unwrap_or_else(|| panic!("unsigned: {}", r.json));
        assert!(herald_proto::private::verify_webhook(&secret, &r.body, sig), "bad signature on {}", r.json);
        assert!(!herald_proto::private::verify_webhook(b"another secret entirely, not it", &r.body, sig));
        assert_eq!(r.json["app"], "default");
        assert_eq!(r.json["id"], format!("{ch}:{}", r.json["seq"]));
        assert!(r.json["ts"].as_str().unwrap().ends_with('Z'));
    }
    let events: Vec<&str> =
        all.iter().filter(|r| r.accepted()).map(|r| r.json["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["channel_created", "member_joined", "message", "message", "message_edited", "message_deleted"]
    );
    let by_seq: HashMap<u64, &Value> =
        all.iter().filter(|r| r.accepted()).map(|r| (r.json["seq"].as_u64().unwrap(), &r.json)).collect();
    assert_eq!(by_seq[&4]["data"]["message"]["content"], "two", "data is the WebSocket event");
    assert_eq!(by_seq[&4]["data"]["event"], "message");
    assert_eq!(by_seq[&6]["data"]["message_id"], m1_id.as_str());

    // Deleting the channel: channel_deleted, with no seq.
    ada.ok(json!({"op": "channel.delete", "channel": ch})).await;
    let all = receiver
        .wait_until(WAIT, |all| all.iter().any(|r| r.accepted() && r.json["event"] == "channel_deleted"))
        .await;
    let gone = all.iter().find(|r| r.json["event"] == "channel_deleted").unwrap();
    assert_eq!(gone.id(), format!("{ch}:deleted"));
    assert_eq!(gone.json["data"]["name"], "hooked");
    assert!(gone.json.get("seq").is_none());

    let metrics = Rest::new(&server, None).get("/metrics").await;
    let text = metrics.body.as_str().unwrap().to_owned();
    assert!(text.contains("herald_webhook_delivered_total 7"), "{text}");
    assert!(text.contains("herald_webhook_failed_total 2"), "{text}");
    assert!(text.contains("herald_webhook_pending"), "{text}");
}

#[tokio::test]
async fn a_failing_channel_holds_back_only_its_own_events() {
    let blocked = Arc::new(parking_lot::Mutex::new(String::new()));
    let b = blocked.clone();
    let receiver = WebhookReceiver::start(move |body| {
        let blocked = b.lock();
        if !blocked.is_empty() && body["channel"] == blocked.as_str() { 500 } else { 200 }
    })
    .await;
    let server = TestServer::start_with(|c| {
        hooked(receiver.url())(c);
        c.webhook_events = vec!["message".into()];
    })
    .await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let stuck = create_channel(&mut ada, json!({"name": "stuck"})).await;
    let free = create_channel(&mut ada, json!({"name": "free"})).await;
    *blocked.lock() = stuck.clone();
    for i in 0..3 {
        send(&mut ada, &stuck, &format!("s{i}")).await;
        send(&mut ada, &free, &format!("f{i}")).await;
    }
    // The free channel's three messages arrive while the stuck one keeps failing.
    let all = receiver.wait_until(WAIT, |all| accepted_seqs(all, &free).len() == 3).await;
    assert!(accepted_seqs(&all, &stuck).is_empty());
    assert!(all.iter().any(|r| r.json["channel"] == stuck.as_str() && r.status == 500), "stuck was tried");
    let first_stuck: HashSet<&str> =
        all.iter().filter(|r| r.json["channel"] == stuck.as_str()).map(|r| r.id()).collect();
    assert_eq!(first_stuck.len(), 1, "only the first stuck event is tried while it fails: {first_stuck:?}");
    // Only `message` events were asked for.
    assert!(all.iter().all(|r| r.json["event"] == "message"));
    blocked.lock().clear();
    let all = receiver.wait_until(WAIT, |all| accepted_seqs(all, &stuck).len() == 3).await;
    let seqs = accepted_seqs(&all, &stuck);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
}
