//! §4 resume: replay after the client's seq, then live, no gap and no duplicate; the replay
//! cap and `resume_truncated`.

use crate::common::*;
use herald_proto::chain::ChainVerifier;
use herald_server::testing::TestServer;
use serde_json::{Value, json};

/// Collects the log events of `channel` until the message with `last` content, checking that
/// their seqs run without gap or duplicate from `from`.
async fn collect_until(ws: &mut Ws, channel: &str, from: u64, last: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut verifier = ChainVerifier::new();
    loop {
        let e = ws.next_event_where(|e| e["channel"] == channel && e.get("seq").is_some()).await;
        let want = from + out.len() as u64;
        assert_eq!(e["seq"], want, "gap or duplicate after {:?}", out.last().map(|e| &e["seq"]));
        verify_event(&mut verifier, &e);
        let done = e["event"] == "message" && e["message"]["content"] == last;
        out.push(e);
        if done {
            return out;
        }
    }
}

#[tokio::test]
async fn resume_replays_everything_missed_exactly_once_then_goes_live() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "resume", "members": ["bob"]})).await;
    let last_seen = send(&mut ada, &id, "before").await["seq"].as_u64().unwrap();
    ada.next_message("before").await;
    ada.close().await;

    for i in 0..5 {
        send(&mut bob, &id, &format!("offline {i}")).await;
    }
    // More arrive while ada reconnects.
    let mut bob2 = Ws::connect(&server, &server.token("bob")).await;
    let id2 = id.clone();
    let racer = tokio::spawn(async move {
        for i in 0..30 {
            send(&mut bob2, &id2, &format!("racing {i}")).await;
        }
        bob2
    });
    let mut ada = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): last_seen })).await;
    let _bob2 = within("racer", racer).await.unwrap();
    send(&mut bob, &id, "live").await;

    let events = collect_until(&mut ada, &id, last_seen + 1, "live").await;
    let texts: Vec<&str> = events.iter().filter_map(|e| e["message"]["content"].as_str()).collect();
    let mut want: Vec<String> = (0..5).map(|i| format!("offline {i}")).collect();
    want.extend((0..30).map(|i| format!("racing {i}")));
    want.push("live".into());
    assert_eq!(texts, want);
    // Nothing more of that channel afterwards (no late duplicates).
    let rest: Vec<Value> = ada.sync().await.into_iter().filter(|e| e["channel"] == id.as_str()).collect();
    assert!(rest.is_empty(), "extra events after the replay: {rest:?}");
}

#[tokio::test]
async fn resume_from_zero_and_of_unknown_channels() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "zero"})).await;
    send(&mut ada, &id, "one").await;
    // A tombstone in the replay still verifies (content_hash kept, content and salt gone).
    let doomed = send(&mut ada, &id, "doomed").await;
    ada.ok(json!({"op": "message.delete", "channel": id, "message_id": doomed["id"]})).await;
    let other = create_channel(&mut ada, json!({"name": "not-bobs"})).await;
    send(&mut ada, &other, "private").await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    bob.ok(json!({"op": "channel.join", "channel": id})).await;
    bob.close().await;
    let mut bob = Ws::connect_resume(
        &server,
        &server.token("bob"),
        json!({ id.clone(): 0, other.clone(): 0, "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11": 3 }),
    )
    .await;
    send(&mut ada, &id, "end").await;
    let events = collect_until(&mut bob, &id, 1, "end").await;
    assert_eq!(events[0]["event"], "channel_created");
    let tomb = events.iter().find(|e| e["event"] == "message" && e["message"]["id"] == doomed["id"]).unwrap();
    assert!(tomb.get("salt").is_none() && tomb["message"]["content"] != "doomed", "{tomb}");
    assert!(events.iter().any(|e| e["event"] == "message_deleted"));
    let leaked: Vec<Value> =
        bob.sync().await.into_iter().filter(|e| e["channel"] == other.as_str()).collect();
    assert!(leaked.is_empty(), "resume replayed a channel bob is not in: {leaked:?}");
}

#[tokio::test]
async fn resume_beyond_the_cap_is_truncated_to_the_newest_entries() {
    let server = TestServer::start_with(|c| c.replay_cap = 5).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "capped", "members": ["bob"]})).await;
    let last_seen = send(&mut ada, &id, "seen").await["seq"].as_u64().unwrap();
    ada.close().await;
    let mut head = 0;
    for i in 0..12 {
        head = send(&mut bob, &id, &format!("missed {i}")).await["seq"].as_u64().unwrap();
    }
    let mut ada = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): last_seen })).await;
    let t = ada.next_event("resume_truncated").await;
    assert_eq!(t["channel"], id.as_str());
    assert_eq!(t["from_seq"], head - 5 + 1);
    send(&mut bob, &id, "after").await;
    let events = collect_until(&mut ada, &id, head - 4, "after").await;
    let texts: Vec<&str> = events.iter().filter_map(|e| e["message"]["content"].as_str()).collect();
    assert_eq!(texts, vec!["missed 7", "missed 8", "missed 9", "missed 10", "missed 11", "after"]);
    // The rest is there to page over history.
    let page = ada.ok(json!({"op": "history", "channel": id, "before": head - 4, "limit": 100})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 8, "{page}");

    // Within the cap: no truncation event.
    ada.close().await;
    let mut ada = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): head })).await;
    send(&mut bob, &id, "within").await;
    collect_until(&mut ada, &id, head + 1, "within").await;
    assert!(ada.events_so_far("resume_truncated").await.is_empty());
}

#[tokio::test]
async fn repeated_resumes_under_concurrent_sends_never_gap_or_duplicate() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "churn", "members": ["bob", "cat"]})).await;
    let mut last = ada.ok(json!({"op": "channel.list"})).await["channels"][0]["last_seq"].as_u64().unwrap();
    let mut racers = Vec::new();
    for user in ["bob", "cat"] {
        let mut ws = Ws::connect(&server, &server.token(user)).await;
        let id = id.clone();
        racers.push(tokio::spawn(async move {
            for i in 0..40 {
                send(&mut ws, &id, &format!("{user} {i}")).await;
            }
        }));
    }
    let mut verifier = ChainVerifier::new();
    let mut take = |e: &Value, last: &mut u64| {
        assert_eq!(e["seq"], *last + 1, "gap or duplicate: {e}");
        verify_event(&mut verifier, e);
        *last += 1;
    };
    for round in 0..6 {
        ada.close().await;
        ada = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): last })).await;
        for _ in 0..(3 + round) {
            let e = ada.next_event_where(|e| e["channel"] == id.as_str() && e.get("seq").is_some()).await;
            take(&e, &mut last);
        }
    }
    for r in racers {
        within("racer", r).await.unwrap();
    }
    send(&mut ada, &id, "end").await;
    loop {
        let e = ada.next_event_where(|e| e["channel"] == id.as_str() && e.get("seq").is_some()).await;
        take(&e, &mut last);
        if e["message"]["content"] == "end" {
            break;
        }
    }
}
