//! Limits: content, frame, rate, page size, and the slow consumer (close 4008).

use crate::common::*;
use herald_testing::TestServer;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn content_over_the_limit_is_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|c| c.max_content_bytes = 1000).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "big"})).await;
    let rest = Rest::user(&server, "ada");
    let before = verified_log(&rest, &id).await.len();
    send(&mut ada, &id, &"x".repeat(1000)).await;
    let big = "y".repeat(1001);
    ada.err(json!({"op": "message.send", "channel": id, "content": big}), "payload_too_large").await;
    let m = send(&mut ada, &id, "small").await;
    ada.err(
        json!({"op": "message.edit", "channel": id, "message_id": m["id"], "content": big}),
        "payload_too_large",
    )
    .await;
    ada.err(json!({"op": "publish", "subject": "s", "data": big}), "payload_too_large").await;
    ada.err(json!({"op": "ephemeral", "channel": id, "subject": "s", "data": big}), "payload_too_large")
        .await;
    rest.post(&format!("/v1/channels/{id}/messages"), json!({"content": big}))
        .await
        .assert_error(413, "payload_too_large");
    let log = verified_log(&rest, &id).await;
    assert_eq!(log.len(), before + 2, "a refused message reached the log");
    assert!(log.iter().all(|e| e.content.as_deref() != Some(big.as_str())));
}

#[tokio::test]
async fn oversized_frame_reply_echoes_the_request_id_and_keeps_the_connection() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 4096).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "frames"})).await;
    let frame =
        json!({"id": 77, "op": "message.send", "channel": id, "content": "z".repeat(5000)}).to_string();
    ada.send_text(frame).await;
    let reply = ada.reply(json!(77)).await;
    let e = match reply {
        Err(e) => e,
        Ok(ok) => panic!("an oversized frame was accepted: {ok}"),
    };
    assert_eq!(e["code"], "payload_too_large", "{e}");
    ada.ok(json!({"op": "ping"})).await;
    let rest = Rest::user(&server, "ada");
    let a = rest.post(&format!("/v1/channels/{id}/messages"), json!({"content": "z".repeat(5000)})).await;
    a.assert_error(413, "payload_too_large");
    assert!(!verified_log(&rest, &id).await.iter().any(|e| e.kind == herald_proto::EntryKind::Message));
}

#[tokio::test]
async fn rate_limit_answers_rate_limited_with_retry_after_and_keeps_the_connection() {
    let server = TestServer::start_with(|c| {
        c.rate_per_sec = 5;
        c.rate_burst = 5;
    })
    .await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    // Fire a burst without waiting for replies, then read them all.
    for i in 0..12 {
        ada.send_text(json!({"id": 100 + i, "op": "ping"}).to_string()).await;
    }
    let mut limited = Vec::new();
    for i in 0..12 {
        if let Err(e) = ada.reply(json!(100 + i)).await {
            assert_eq!(e["code"], "rate_limited", "{e}");
            limited.push(e["retry_after_ms"].as_u64().expect("retry_after_ms"));
        }
    }
    assert!(limited.len() >= 6, "only {} of 12 limited", limited.len());
    let wait = *limited.iter().max().unwrap();
    assert!((1..=1000).contains(&wait), "retry_after_ms {wait}");
    // Waiting as told is enough: the bucket refills (a wait on time, not on an event).
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    ada.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn history_limit_out_of_range_is_bad_request() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "lim"})).await;
    for limit in [0, 501, 100_000] {
        ada.err(json!({"op": "history", "channel": id, "limit": limit}), "bad_request").await;
    }
    ada.err(json!({"op": "history", "channel": id, "limit": -1}), "bad_request").await;
    ada.ok(json!({"op": "history", "channel": id, "limit": 500})).await;
    let rest = Rest::user(&server, "ada");
    for q in ["limit=0", "limit=501", "limit=-3"] {
        rest.get(&format!("/v1/channels/{id}/messages?{q}")).await.assert_error(400, "bad_request");
    }
}

async fn metric(rest: &Rest, name: &str) -> u64 {
    let text = rest.get("/metrics").await.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008_others_keep_receiving_and_it_resumes() {
    let server = TestServer::start_with(|c| c.queue_frames = 8).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "firehose", "members": ["bob", "slow"]})).await;
    let mut slow = Ws::connect(&server, &server.token("slow")).await;
    let list = slow.ok(json!({"op": "channel.list"})).await;
    let slow_seq = list["channels"][0]["last_seq"].as_u64().unwrap();
    // From here on nobody reads `slow`'s socket.
    let slow_socket = slow.into_socket();

    // Bob reads everything, concurrently, until the ephemeral marked last.
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let bob_task = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let e = bob.next_event("ephemeral").await;
            assert_eq!(e["data"]["n"], n, "bob got ephemerals out of order");
            n += 1;
            if e["data"]["last"] == true {
                return (bob, n);
            }
        }
    });

    let metrics = Rest::user(&server, "ada");
    let (sent, texts) = fill_until_kicked(&mut ada, &id, &metrics).await;
    ada.ok(json!({"op": "ephemeral", "channel": id, "subject": "fill", "data": {"n": sent, "last": true}}))
        .await;
    let (mut bob, n) = within("bob's reader", bob_task).await.unwrap();
    assert_eq!(n, sent + 1, "bob missed ephemerals");
    for t in &texts {
        bob.next_message(t).await;
    }

    // The slow socket, read at last, ends with 4008 after what had been buffered.
    let mut slow_socket = slow_socket;
    let code = within("the 4008 close", async {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(m) = slow_socket.next().await {
            match m {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await;
    assert_eq!(code, Some(4008));

    // Reconnecting with resume brings every logged message.
    let mut slow = Ws::connect_resume(&server, &server.token("slow"), json!({ id.clone(): slow_seq })).await;
    for t in &texts {
        slow.next_message(t).await;
    }
    let ok: Vec<Value> = slow.events_so_far("message").await;
    assert!(ok.is_empty(), "duplicates after resume: {ok:?}");
}

/// Ada sends 32 KiB ephemerals (numbered `n`), and a logged message after every 25, until the
/// server reports a kick. Returns how many ephemerals and the logged texts.
async fn fill_until_kicked(ada: &mut Ws, id: &str, metrics: &Rest) -> (u64, Vec<String>) {
    let pad = "b".repeat(32 * 1024);
    let mut sent = 0u64;
    let mut texts = Vec::new();
    loop {
        for _ in 0..25 {
            ada.ok(
                json!({"op": "ephemeral", "channel": id, "subject": "fill", "data": {"n": sent, "pad": pad}}),
            )
            .await;
            sent += 1;
        }
        let text = format!("logged {sent}");
        send(ada, id, &text).await;
        texts.push(text);
        if metric(metrics, "herald_queue_full_disconnects_total").await >= 1 {
            return (sent, texts);
        }
        assert!(sent < 4000, "no kick after {sent} frames of 32 KiB");
    }
}

/// Regression: a kicked connection whose client never reads stayed registered forever (the
/// close frame could not be written), and every later delivery counted another kick.
#[tokio::test]
async fn kicked_connection_that_never_reads_is_released_and_counted_once() {
    let server = TestServer::start_with(|c| c.queue_frames = 8).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "stuck", "members": ["slow"]})).await;
    let slow = Ws::connect(&server, &server.token("slow")).await;
    let _never_read = slow.into_socket();
    let metrics = Rest::user(&server, "ada");
    fill_until_kicked(&mut ada, &id, &metrics).await;
    for i in 0..50 {
        send(&mut ada, &id, &format!("after the kick {i}")).await;
    }
    assert_eq!(metric(&metrics, "herald_queue_full_disconnects_total").await, 1);
    // Polling a gauge (not an event): the server lets go of the socket after its close grace.
    within("the kicked connection to be released", async {
        while metric(&metrics, "herald_connections").await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A frame far over the limit is refused by the WebSocket layer itself: close code 1009.
#[tokio::test]
async fn frame_far_over_the_limit_closes_with_1009() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 1024).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let _ = ada.try_send_text(json!({"id": 1, "op": "ping", "pad": "p".repeat(64 * 1024)}).to_string()).await;
    assert_eq!(ada.closed_with().await, Some(1009));
    Ws::connect(&server, &server.token("ada")).await.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn no_connect_frame_in_time_is_refused_with_4401() {
    let server = TestServer::start_with(|c| c.auth_timeout_secs = 1).await;
    let mut ws = Ws::open(&server).await;
    assert_eq!(ws.closed_with().await, Some(4401));
    assert_eq!(ws.take_replies()[0]["error"]["code"], "unauthorized");
}

/// Sends `n` messages of `content` over `ws`, pipelined (all frames first, then the replies).
async fn send_pipelined(ws: &mut Ws, channel: &str, n: usize, content: &str) {
    let first = 1_000_000u64;
    for i in 0..n as u64 {
        let op = json!({"id": first + i, "op": "message.send", "channel": channel, "content": content});
        ws.send_text(op.to_string()).await;
    }
    for i in 0..n as u64 {
        ws.reply(json!(first + i)).await.unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
}

/// Regression: the socket's write buffer was capped at 1 MiB, so a legal reply larger than
/// that (a history page of 500 messages of 2 KiB) dropped the connection without a close frame,
/// while REST returned the same page.
#[tokio::test]
async fn history_reply_over_1_mib_is_delivered_over_the_socket() {
    let server =
        TestServer::start_with(|c| c.durability = herald_server::config::DurabilityMode::Relaxed).await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "big-replies"})).await;
    let content = "x".repeat(2048);
    send_pipelined(&mut ada, &id, 500, &content).await;
    let page = ada.ok(json!({"op": "history", "channel": id, "limit": 500})).await;
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 500);
    assert!(messages.iter().all(|m| m["content"] == content.as_str()));
    assert!(page.to_string().len() > 1 << 20, "the reply should be over 1 MiB");
    // The connection is still usable afterwards.
    ada.ok(json!({"op": "ping"})).await;
}

/// The outbound queue is bounded in bytes too: with room for 100,000 frames, a reader that
/// never reads is still closed once 256 KiB of large events wait for it, instead of holding
/// gigabytes.
#[tokio::test]
async fn queue_bounded_in_bytes_kicks_a_stuck_reader_of_large_events() {
    let server = TestServer::start_with(|c| {
        c.queue_frames = 100_000;
        c.queue_bytes = 256 * 1024;
    })
    .await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "heavy", "members": ["slow"]})).await;
    let slow = Ws::connect(&server, &server.token("slow")).await;
    let _never_read = slow.into_socket();
    let metrics = Rest::user(&server, "ada");
    // Fails (no kick after 4,000 frames of 32 KiB) if only the frame bound applied.
    fill_until_kicked(&mut ada, &id, &metrics).await;
    assert_eq!(metric(&metrics, "herald_queue_full_disconnects_total").await, 1);
}

/// `typing` repeats within the interval are answered but not fanned out (a change always is);
/// a second `read` within the interval (each is a durable write) gets `rate_limited`.
#[tokio::test]
async fn typing_and_read_are_throttled_per_user_and_channel() {
    let server = TestServer::start_with(|c| {
        c.typing_interval_ms = 60_000;
        c.read_interval_ms = 60_000;
    })
    .await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "chatty", "members": ["bob"]})).await;
    let other = create_channel(&mut ada, json!({"name": "chatty-too", "members": ["bob"]})).await;
    for _ in 0..5 {
        ada.ok(json!({"op": "typing", "channel": id})).await;
    }
    ada.ok(json!({"op": "typing", "channel": id, "is_typing": false})).await;
    ada.ok(json!({"op": "typing", "channel": other})).await;
    let typing: Vec<(Value, Value)> = bob
        .events_so_far("typing")
        .await
        .into_iter()
        .map(|e| (e["channel"].clone(), e["is_typing"].clone()))
        .collect();
    assert_eq!(
        typing,
        vec![(json!(id), json!(true)), (json!(id), json!(false)), (json!(other), json!(true))],
        "one typing per change, per channel"
    );

    let m = send(&mut ada, &id, "read me").await;
    bob.ok(json!({"op": "read", "channel": id, "message_id": m["id"]})).await;
    let e = bob.err(json!({"op": "read", "channel": id, "message_id": m["id"]}), "rate_limited").await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{e}");
    // Another user's read of the same channel is not held back.
    ada.ok(json!({"op": "read", "channel": id, "message_id": m["id"]})).await;
}

/// One user cannot take every connection: past `--max-conns-per-user` a `connect` gets
/// `rate_limited` and close 4429; a closed connection gives its slot back.
#[tokio::test]
async fn connections_are_capped_per_user() {
    let server = TestServer::start_with(|c| c.max_conns_per_user = 2).await;
    let token = server.token("ada");
    let first = Ws::connect(&server, &token).await;
    let _second = Ws::connect(&server, &token).await;
    let _other_user = Ws::connect(&server, &server.token("bob")).await;
    let mut third = Ws::open(&server).await;
    let e = third.request(json!({"op": "connect", "token": token})).await.unwrap_err();
    assert_eq!(e["code"], "rate_limited", "{e}");
    assert_eq!(third.closed_with().await, Some(4429));
    first.close().await;
    within("a slot to free up", async {
        loop {
            let mut ws = Ws::open(&server).await;
            if ws.request(json!({"op": "connect", "token": token})).await.is_ok() {
                return;
            }
            // The server releases the slot when it has finished with the closed socket.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Past `--max-conns-per-addr` open connections from one address, the upgrade itself is
/// refused with HTTP 429.
#[tokio::test]
async fn connections_are_capped_per_source_address() {
    let server = TestServer::start_with(|c| c.max_conns_per_addr = 2).await;
    let _a = Ws::connect(&server, &server.token("ada")).await;
    let _b = Ws::connect(&server, &server.token("bob")).await;
    let refused = tokio_tungstenite::connect_async(server.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected HTTP 429, got {other:?}"),
    }
}
