//! §4 resume: replay after the client's seq, then live, no gap and no duplicate; the replay
//! cap and `resume_truncated`.

use crate::common::*;
use herald_proto::chain::ChainVerifier;
use herald_testing::TestServer;
use serde_json::{Value, json};
use std::time::Duration;

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

/// Appends `n` messages of `content` to `channel`, pipelined over the socket of a `server`
/// token that is not a member (so its own queue receives none of the events); members should
/// be offline meanwhile, since a queue of 32 frames cannot hold them live.
async fn fill(server: &TestServer, channel: &str, n: usize, content: &str) {
    let token = server.token_with("filler", Some(vec!["server".into()]), 3600);
    let mut ws = Ws::connect(server, &token).await;
    // At most 16 in flight: a sender that never reads its replies would fill its own queue.
    const WINDOW: u64 = 16;
    let first = 1_000_000u64;
    let n = n as u64;
    for i in 0..n + WINDOW {
        if i >= WINDOW {
            let done = i - WINDOW;
            ws.reply(json!(first + done)).await.unwrap_or_else(|e| panic!("send {done}: {e}"));
        }
        if i < n {
            let op = json!({"id": first + i, "op": "message.send", "channel": channel, "content": content});
            ws.send_text(op.to_string()).await;
        }
    }
    ws.close().await;
}

async fn head_of(server: &TestServer, user: &str, channel: &str) -> u64 {
    let mut ws = Ws::connect(server, &server.token(user)).await;
    let list = ws.ok(json!({"op": "channel.list"})).await;
    ws.close().await;
    list["channels"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == channel))
        .and_then(|c| c["last_seq"].as_u64())
        .unwrap_or_else(|| panic!("{channel} not in {user}'s list: {list}"))
}

fn relaxed_small_queue(c: &mut herald_server::config::ServeConfig) {
    c.durability = herald_server::config::DurabilityMode::Relaxed;
    c.queue_frames = 32;
    c.replay_cap = 5000;
}

/// Regression: the replay ran before the connection's reader, so a request sent right after
/// `connect` was not even read until every missed entry had been queued.
#[tokio::test]
async fn replay_answers_requests_read_meanwhile() {
    let server = TestServer::start_with(relaxed_small_queue).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "long-replay"})).await;
    ada.close().await;
    fill(&server, &id, 1500, "replayed").await;
    let head = head_of(&server, "ada", &id).await;

    let mut ada = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): 0 })).await;
    ada.send_text(json!({"id": 77, "op": "ping"}).to_string()).await;
    let mut seen = 0u64;
    loop {
        match ada.next_frame().await {
            Frame::Json(v) if v["id"] == 77 => break,
            Frame::Json(v) if v.get("event").is_some() => seen = v["seq"].as_u64().unwrap_or(seen),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen < head, "the ping was answered only after the whole replay (seq {seen} of {head})");
    // The replay still completes, in order, without a gap.
    let mut want = seen + 1;
    while want <= head {
        match ada.next_frame().await {
            Frame::Json(v) if v.get("event").is_some() => {
                assert_eq!(v["seq"], want, "gap or duplicate in the replay");
                want += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Regression: while a replay ran nothing read the socket, so the pongs of a client reading a
/// long replay slowly were never seen and the server closed it with 4000 ("no answer to
/// ping"); and the replay filled the whole outbound queue, so a live event of another channel
/// found it full and kicked the connection with 4008.
#[tokio::test]
async fn slow_reader_of_a_long_replay_is_neither_pinged_out_nor_kicked() {
    let server = TestServer::start_with(|c| {
        relaxed_small_queue(c);
        c.ping_interval_secs = 1;
    })
    .await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let long = create_channel(&mut ada, json!({"name": "long"})).await;
    let other = create_channel(&mut bob, json!({"name": "other", "members": ["ada"]})).await;
    ada.close().await;
    // Large entries: far more than socket buffers hold, so the replay itself is slow.
    fill(&server, &long, 1500, &"s".repeat(2 * 1024)).await;
    let head = head_of(&server, "ada", &long).await;

    // A small receive buffer: the reader is slow, yet its pongs do not queue behind megabytes
    // of frames buffered in the kernel.
    let mut ada =
        Ws::connect_small_rcvbuf(&server, &server.token("ada"), json!({ long.clone(): 0 }), 16 * 1024).await;
    let started = std::time::Instant::now();
    let mut replayed = 0u64;
    let mut live = Vec::new();
    let mut sent_live = false;
    // Read the replay slowly, answering pings (tungstenite does when reading), for more than
    // two ping intervals; meanwhile bob posts to the other channel.
    while replayed < head || live.len() < 5 {
        match ada.next_frame().await {
            Frame::Json(v) if v["channel"] == long.as_str() => replayed = v["seq"].as_u64().unwrap_or(0),
            Frame::Json(v) if v["channel"] == other.as_str() && v["event"] == "message" => {
                live.push(v["message"]["content"].as_str().unwrap_or_default().to_owned())
            }
            Frame::Json(_) => {}
            Frame::Close(code) => panic!("closed with {code:?} after {replayed} replayed entries"),
            other => panic!("{other:?} after {replayed} of {head} replayed entries, {:?}", started.elapsed()),
        }
        if !sent_live && replayed > 100 {
            sent_live = true;
            for i in 0..5 {
                send(&mut bob, &other, &format!("live {i}")).await;
            }
        }
        if replayed < head {
            // A slow consumer, not a wait for an event.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert!(started.elapsed() > Duration::from_secs(2), "the replay was not slower than two ping intervals");
    assert_eq!(live, (0..5).map(|i| format!("live {i}")).collect::<Vec<_>>());
}

/// Regression: membership was checked once at connect, so a member removed while its replay
/// was still running went on reading the channel's log past its removal.
#[tokio::test]
async fn member_removed_during_its_replay_stops_at_its_member_left() {
    let server = TestServer::start_with(relaxed_small_queue).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "removal", "members": ["bob"]})).await;
    ada.close().await;
    // Far more than socket buffers hold, so bob's replay is still running when he is removed.
    fill(&server, &id, 1000, &"r".repeat(16 * 1024)).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;

    let mut bob = Ws::connect_resume(&server, &server.token("bob"), json!({ id.clone(): 0 })).await;
    ada.ok(json!({"op": "channel.remove_member", "channel": id, "user": "bob"})).await;
    send(&mut ada, &id, "after the removal").await;

    let mut want = 1u64;
    loop {
        let e = bob.next_event_where(|e| e["channel"] == id.as_str()).await;
        assert_eq!(e["seq"], want, "gap or duplicate");
        want += 1;
        assert_ne!(e["message"]["content"], "after the removal", "read past its removal");
        if e["event"] == "member_left" && e["user"] == "bob" {
            break;
        }
    }
    let rest: Vec<Value> = bob.sync().await.into_iter().filter(|e| e["channel"] == id.as_str()).collect();
    assert!(rest.is_empty(), "events after the removal: {rest:?}");
}
