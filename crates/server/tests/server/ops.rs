//! Operations: `/healthz`, `/metrics`, graceful stop with 1012 and restart, hard delete on disk.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::json;

#[tokio::test]
async fn healthz_and_metrics() {
    let server = TestServer::start().await;
    let anon = Rest::new(&server, None);
    let h = anon.get("/healthz").await;
    assert_eq!((h.status, h.bytes.as_slice()), (200, &b"ok"[..]));
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "metrics"})).await;
    send(&mut ada, &id, "counted").await;
    let m = anon.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.body.as_str().unwrap().to_owned();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    assert_eq!(value("herald_connections"), 1.0);
    assert_eq!(value("herald_messages_in_total"), 1.0);
    assert!(value("herald_fanout_deliveries_total") >= 1.0);
    assert!(value("herald_commit_latency_seconds_count") >= 1.0);
    // channel_created, member_joined, message: each one timed from commit to queued.
    assert!(value("herald_fanout_latency_seconds_count") >= 3.0);
    assert_eq!(value("herald_queue_full_disconnects_total"), 0.0);
}

#[tokio::test]
async fn stop_closes_websockets_with_1012_and_restart_keeps_history() {
    let mut server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "durable", "members": ["bob"]})).await;
    for i in 0..5 {
        send(&mut bob, &id, &format!("keep {i}")).await;
    }
    within("stop", server.stop()).await;
    assert_eq!(ada.closed_with().await, Some(1012));
    assert_eq!(bob.closed_with().await, Some(1012));

    server.restart().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let h = ada.ok(json!({"op": "history", "channel": id, "after": 0})).await;
    let texts: Vec<&str> =
        h["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, (0..5).map(|i| format!("keep {i}")).collect::<Vec<_>>());
    // The fan-out index came back from the store: bob still receives.
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    send(&mut ada, &id, "after restart").await;
    bob.next_message("after restart").await;
    verified_log(&Rest::user(&server, "ada"), &id).await;
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn hard_delete_erases_the_text_from_every_file() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "erase", "members": ["bob"]})).await;
    let marker = "zq-marker-7f3a9c1e-original-text";
    let edited = "zq-marker-7f3a9c1e-edited-text";
    let keep = "zq-marker-7f3a9c1e-kept-text";
    let m = send(&mut ada, &id, marker).await;
    send(&mut ada, &id, keep).await;
    let mid = m["id"].as_str().unwrap();
    // A reply snapshots the text it replies to: that copy must go as well.
    bob.ok(json!({"op": "message.send", "channel": id, "content": "reply", "reply_to": mid})).await;
    ada.ok(json!({"op": "message.edit", "channel": id, "message_id": mid, "content": edited})).await;
    let before = files_containing(server.data_dir(), marker.as_bytes());
    assert!(!before.is_empty(), "the marker should be on disk before the delete");
    assert!(!files_containing(server.data_dir(), edited.as_bytes()).is_empty());

    ada.ok(json!({"op": "message.delete", "channel": id, "message_id": mid})).await;
    bob.next_event("message_deleted").await;
    for text in [marker, edited] {
        let found = files_containing(server.data_dir(), text.as_bytes());
        assert!(found.is_empty(), "{text:?} still on disk in {found:?}");
    }
    assert!(!files_containing(server.data_dir(), keep.as_bytes()).is_empty(), "the other message is kept");
    let h = bob.ok(json!({"op": "history", "channel": id})).await;
    assert!(!h.to_string().contains("zq-marker-7f3a9c1e-original"), "{h}");
    verified_log(&Rest::user(&server, "bob"), &id).await;
}

#[tokio::test]
async fn silent_peers_are_pinged_then_closed_while_answering_ones_stay() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = TestServer::start_with(|c| c.ping_interval_secs = 1).await;
    // A peer that never reads again: like a dead TCP peer, it answers no ping.
    let mut silent = Ws::connect(&server, &server.token("ada")).await.into_socket();
    let mut alive = Ws::connect(&server, &server.token("bob")).await;
    let metrics = format!("{}/metrics", server.url());
    let dropped = async {
        loop {
            let m = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            if m.lines().any(|l| l == "herald_connections 1") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    // The alive client keeps reading (which answers the server's pings) meanwhile.
    tokio::select! {
        _ = within("the silent peer to be dropped", dropped) => {}
        f = alive.next_frame() => panic!("the alive client got {f:?}"),
    }
    alive.ok(json!({"op": "ping"})).await;
    let code = within("the silent peer's close frame", async {
        loop {
            match silent.next().await {
                Some(Ok(WsMessage::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(code, Some(4000));
}
