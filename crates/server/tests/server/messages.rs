//! §4 message ops and events, §5 the log and its hash chain, §6 history over REST.

use crate::common::*;
use herald_proto::chain::{ChainVerifier, Verdict, ZERO_HASH, content_hash, entry_hash, to_hex};
use herald_proto::chain::{EntryFields, hash_from_hex, salt_from_hex};
use herald_testing::TestServer;
use serde_json::{Value, json};

fn contents(page: &Value) -> Vec<String> {
    page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_connection_of_every_member_gets_messages_in_seq_order() {
    let server = TestServer::start().await;
    let mut ada1 = Ws::connect(&server, &server.token("ada")).await;
    let mut ada2 = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let mut eve = Ws::connect(&server, &server.token("eve")).await;
    let id = create_channel(&mut ada1, json!({"name": "fanout", "members": ["bob"]})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let ws = if i % 2 == 0 { &mut ada1 } else { &mut bob };
        sent.push(send(ws, &id, &format!("m{i}")).await);
    }
    for ws in [&mut ada1, &mut ada2, &mut bob] {
        let mut verifier = ChainVerifier::new();
        let events = ws.sync().await;
        let msgs: Vec<&Value> = events.iter().filter(|e| e["event"] == "message").collect();
        assert_eq!(msgs.len(), 5, "{events:?}");
        for (m, s) in msgs.iter().zip(&sent) {
            assert_eq!(m["channel"], id.as_str());
            assert_eq!(&m["message"]["id"], &s["id"]);
            assert_eq!(m["seq"], s["seq"]);
            assert_eq!(m["message"]["type"], "chat.text");
            assert_eq!(m["author"], s["author"]);
            assert_eq!(m["ts"], s["ts"]);
        }
        // Every log event of the channel verifies and links, in strictly increasing seq.
        for e in events.iter().filter(|e| e["channel"] == id.as_str()) {
            if let Some(v) = verify_event(&mut verifier, e) {
                assert_eq!(v, Verdict::Next);
            }
        }
    }
    let others = eve.sync().await;
    assert!(others.iter().all(|e| e["channel"] != id.as_str()), "a non-member got {others:?}");
}

#[tokio::test]
async fn client_id_makes_send_idempotent() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "idem", "members": ["bob"]})).await;
    let rest = Rest::user(&server, "ada");
    let op = json!({"op": "message.send", "channel": id, "content": "once", "client_id": "k-1"});
    let first = ada.ok(op.clone()).await["message"].clone();
    assert_eq!(first["client_id"], "k-1");
    let len = verified_log(&rest, &id).await.len();
    let second = ada.ok(op.clone()).await["message"].clone();
    assert_eq!(second, first, "the retry returns the original message");
    let r = rest
        .post(&format!("/v1/channels/{id}/messages"), json!({"content": "once", "client_id": "k-1"}))
        .await;
    assert_eq!(r.body["message"]["id"], first["id"]);
    assert_eq!(verified_log(&rest, &id).await.len(), len, "a retry appended to the log");
    // The key is per author: bob may use the same key.
    let bobs = bob.ok(op).await["message"].clone();
    assert_ne!(bobs["id"], first["id"]);
    let msgs = ada.events_so_far("message").await;
    assert_eq!(msgs.len(), 2, "one event per distinct message: {msgs:?}");
    ada.err(json!({"op": "message.send", "channel": id, "content": "x", "client_id": ""}), "invalid_name")
        .await;
}

#[tokio::test]
async fn reply_edit_delete_reactions_reads_typing_and_ephemeral() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut bob = Ws::connect(&server, &server.token("bob")).await;
    let id = create_channel(&mut ada, json!({"name": "life", "members": ["bob"]})).await;
    let first = send(&mut ada, &id, "first").await;
    let mid = first["id"].as_str().unwrap().to_owned();

    // reply_to carries a snapshot of the replied-to message.
    let reply = bob
        .ok(json!({"op": "message.send", "channel": id, "content": "re", "reply_to": mid, "type": "chat.reply"}))
        .await["message"]
        .clone();
    assert_eq!(reply["type"], "chat.reply");
    assert_eq!(reply["reply_to"]["id"], mid.as_str());
    assert_eq!(reply["reply_to"]["author"], "ada");
    assert_eq!(reply["reply_to"]["content"], "first");
    let ev = ada.next_message("re").await;
    assert_eq!(ev["message"]["reply_to"]["content"], "first");
    bob.err(json!({"op": "message.send", "channel": id, "content": "x", "reply_to": "nope"}), "invalid_name")
        .await;

    // Edit: author only.
    bob.err(
        json!({"op": "message.edit", "channel": id, "message_id": mid, "content": "hacked"}),
        "not_author",
    )
    .await;
    let edited =
        ada.ok(json!({"op": "message.edit", "channel": id, "message_id": mid, "content": "first!"})).await;
    assert_eq!(edited["message"]["content"], "first!");
    let e = bob.next_event("message_edited").await;
    assert_eq!((e["message_id"].as_str(), e["content"].as_str()), (Some(mid.as_str()), Some("first!")));
    assert!(e["edited_at"].is_string());

    // Reactions, as events and in history.
    let rid = bob.ok(json!({"op": "reaction.add", "channel": id, "message_id": mid, "emoji": "👍"})).await
        ["reaction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = ada.next_event("reaction").await;
    assert_eq!(
        (r["reaction_id"].as_str(), r["message_id"].as_str()),
        (Some(rid.as_str()), Some(mid.as_str()))
    );
    assert_eq!(r["emoji"], "👍");
    let h = ada.ok(json!({"op": "history", "channel": id})).await;
    let m = h["messages"].as_array().unwrap().iter().find(|m| m["id"] == mid.as_str()).unwrap().clone();
    assert_eq!(m["content"], "first!");
    assert!(m["edited_at"].is_string());
    assert_eq!(m["reactions"], json!([{"reaction_id": rid, "emoji": "👍", "user": "bob"}]));
    // Somebody else's reaction: refused (the reacting user is its author).
    ada.err(json!({"op": "reaction.remove", "channel": id, "reaction_id": rid}), "not_author").await;
    bob.ok(json!({"op": "reaction.remove", "channel": id, "reaction_id": rid})).await;
    let rd = ada.next_event("reaction_deleted").await;
    assert_eq!(
        (rd["reaction_id"].as_str(), rd["message_id"].as_str()),
        (Some(rid.as_str()), Some(mid.as_str()))
    );
    let h = ada.ok(json!({"op": "history", "channel": id})).await;
    assert_eq!(
        h["messages"].as_array().unwrap().iter().find(|m| m["id"] == mid.as_str()).unwrap()["reactions"],
        json!([])
    );
    bob.err(json!({"op": "reaction.add", "channel": id, "message_id": mid, "emoji": ""}), "bad_request")
        .await;

    // Read receipts.
    bob.ok(json!({"op": "read", "channel": id, "message_id": mid})).await;
    let rr = ada.next_event("message_read").await;
    assert_eq!((rr["user"].as_str(), rr["message_id"].as_str()), (Some("bob"), Some(mid.as_str())));
    assert!(rr.get("seq").is_none(), "a receipt is not a log entry");

    // Typing and ephemeral reach the others, not the sender.
    ada.ok(json!({"op": "typing", "channel": id})).await;
    ada.ok(json!({"op": "ephemeral", "channel": id, "subject": "cursor", "data": {"x": 1}})).await;
    let t = bob.next_event("typing").await;
    assert_eq!((t["user"].as_str(), t["is_typing"].as_bool()), (Some("ada"), Some(true)));
    let ep = bob.next_event("ephemeral").await;
    assert_eq!((ep["from"].as_str(), ep["subject"].as_str()), (Some("ada"), Some("cursor")));
    assert_eq!(ep["data"], json!({"x": 1}));
    bob.ok(json!({"op": "typing", "channel": id, "is_typing": false})).await;
    let own = ada.sync().await;
    let typing: Vec<&Value> = own.iter().filter(|e| e["event"] == "typing").collect();
    assert_eq!(typing.len(), 1, "the sender got its own typing: {own:?}");
    assert_eq!((typing[0]["user"].as_str(), typing[0]["is_typing"].as_bool()), (Some("bob"), Some(false)));
    assert!(!own.iter().any(|e| e["event"] == "ephemeral"), "the sender got its own ephemeral");

    // Delete: author only, hard, a tombstone in the log.
    bob.err(json!({"op": "message.delete", "channel": id, "message_id": mid}), "not_author").await;
    ada.ok(json!({"op": "message.delete", "channel": id, "message_id": mid})).await;
    assert_eq!(bob.next_event("message_deleted").await["message_id"], mid.as_str());
    let h = bob.ok(json!({"op": "history", "channel": id})).await;
    assert_eq!(contents(&h), vec!["re"], "{h}");
    assert_eq!(h["messages"][0]["reply_to"]["content"], Value::Null, "the snapshot of a deleted message");
    ada.err(json!({"op": "message.edit", "channel": id, "message_id": mid, "content": "back"}), "not_found")
        .await;
    ada.err(json!({"op": "message.delete", "channel": id, "message_id": mid}), "not_found").await;

    let rest = Rest::user(&server, "bob");
    let log = verified_log(&rest, &id).await;
    for e in log.iter().filter(|e| e.reference == mid && e.kind != herald_proto::EntryKind::Reaction) {
        if matches!(e.kind, herald_proto::EntryKind::MessageEdited) {
            assert!(e.content.is_none() && e.salt.is_none(), "an edit of a deleted message kept its text");
        }
    }
    let msg_entry =
        log.iter().find(|e| e.kind == herald_proto::EntryKind::Message && e.seq == first["seq"]).unwrap();
    assert!(msg_entry.content.is_none() && msg_entry.salt.is_none(), "tombstone kept content");
    // Live events of the whole story verify against the same chain.
    bob.sync().await;
    let mut verifier = ChainVerifier::new();
    let mut verified = 0;
    for e in bob.seen().iter().filter(|e| e["channel"] == id.as_str()) {
        if verify_event(&mut verifier, e) == Some(Verdict::Next) {
            verified += 1;
        }
    }
    assert_eq!(verified, log.len(), "bob saw and verified every entry live");
}

/// docs/protocol.md §B: a log event leaves out what its own fields give (a `content_hash`
/// beside a `salt`, the message view's `seq`, `author`, `ts`). Completed as a client completes
/// it, it is exactly the log's entry; a tombstone (replayed after a delete, no salt) still
/// carries its `content_hash`, and the chain verifies across it.
#[tokio::test]
async fn log_events_are_compact_and_complete_to_the_log_entry() {
    use herald_proto::frames::{Event, ServerFrame, parse_server_frame};
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "lean"})).await;
    let m = send(&mut ada, &id, "short and still verifiable").await;
    send(&mut ada, &id, "after it").await;
    let events = ada.sync().await;
    let live = events.iter().find(|e| e["event"] == "message" && e["message"]["id"] == m["id"]).unwrap();
    assert!(live.get("content_hash").is_none(), "content_hash is sent: {live}");
    for absent in ["seq", "author", "ts"] {
        assert!(live["message"].get(absent).is_none(), "message.{absent} is sent: {live}");
    }
    assert!(live["salt"].is_string() && live["prev_hash"].is_string() && live["hash"].is_string(), "{live}");

    let log = verified_log(&Rest::user(&server, "ada"), &id).await;
    let entry = log.iter().find(|e| Some(e.seq) == m["seq"].as_u64()).unwrap();
    let ServerFrame::Event(ev) = parse_server_frame(&live.to_string()).unwrap() else {
        panic!("not an event")
    };
    let meta = ev.meta().unwrap();
    assert_eq!((&meta.hash, &meta.content_hash), (&entry.hash, &entry.content_hash));
    let Event::Message { message, .. } = *ev else { panic!("not a message event") };
    assert_eq!((message.seq, message.author.as_str(), &message.ts), (entry.seq, "ada", &entry.ts));

    // Deleted, then replayed from before it: the tombstone has no salt, so its content_hash
    // travels, and every replayed event links.
    ada.ok(json!({"op": "message.delete", "channel": id, "message_id": m["id"]})).await;
    let from = entry.seq - 1;
    let mut again = Ws::connect_resume(&server, &server.token("ada"), json!({ id.clone(): from })).await;
    // The replay runs beside the reader: wait for each replayed entry, in order.
    let tomb = again.next_event_where(|e| e["event"] == "message" && e["message"]["id"] == m["id"]).await;
    assert!(tomb.get("salt").is_none() && tomb["content_hash"] == entry.content_hash.as_str(), "{tomb}");
    let after = again.next_event_where(|e| e["event"] == "message" && e["seq"] == entry.seq + 1).await;
    let deleted = again.next_event("message_deleted").await;
    let mut verifier = ChainVerifier::new();
    for e in [&tomb, &after, &deleted] {
        assert_eq!(verify_event(&mut verifier, e), Some(Verdict::Next), "{e}");
    }
}

#[tokio::test]
async fn log_entries_recompute_by_hand() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "chain"})).await;
    let m = send(&mut ada, &id, "hash me").await;
    send(&mut ada, &id, "and me").await;
    ada.ok(json!({"op": "message.delete", "channel": id, "message_id": m["id"]})).await;
    let rest = Rest::user(&server, "ada");
    let a = rest.get(&format!("/v1/channels/{id}/log?after=0&limit=100")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["has_more"], false);
    let entries = a.body["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["channel_created", "member_joined", "message", "message", "message_deleted"]);
    let mut prev = ZERO_HASH;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        let ch = hash_from_hex(e["content_hash"].as_str().unwrap()).unwrap();
        if let (Some(c), Some(s)) = (e["content"].as_str(), e["salt"].as_str()) {
            assert_eq!(content_hash(&salt_from_hex(s).unwrap(), c), ch, "content_hash of {e}");
        } else {
            assert_eq!(e["kind"], "message", "only the deleted message lacks content: {e}");
        }
        assert_eq!(e["prev_hash"], to_hex(&prev));
        let fields = EntryFields {
            seq: i as u64 + 1,
            kind: herald_proto::EntryKind::parse(e["kind"].as_str().unwrap()).unwrap(),
            channel_id: &id,
            author: e["author"].as_str().unwrap(),
            reference: e["ref"].as_str().unwrap(),
            ts_ms: herald_proto::time::parse_ms(e["ts"].as_str().unwrap()).unwrap(),
            content_hash: &ch,
        };
        let h = entry_hash(&prev, &fields);
        assert_eq!(e["hash"], to_hex(&h), "hash of {e}");
        prev = h;
    }
    assert_eq!(entries[0]["content"], "chain", "channel_created hashes the name");
    assert_eq!(entries[1]["ref"], "ada");
    assert_eq!(entries[4]["ref"], m["id"]);
    let page = rest.get(&format!("/v1/channels/{id}/log?after=2&limit=2")).await;
    let seqs: Vec<u64> =
        page.body["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, page.body["has_more"].as_bool()), (vec![3, 4], Some(true)));
    rest.get(&format!("/v1/channels/{id}/log?limit=0")).await.assert_error(400, "bad_request");
    Rest::user(&server, "eve").get(&format!("/v1/channels/{id}/log")).await.assert_error(403, "forbidden");
}

#[tokio::test]
async fn history_cursors_over_websocket_and_rest() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "pages"})).await;
    let mut msgs = Vec::new();
    for i in 0..10 {
        msgs.push(send(&mut ada, &id, &format!("h{i}")).await);
    }
    let seq = |i: usize| msgs[i]["seq"].as_u64().unwrap();
    let h = |q: Value| {
        let mut op = q;
        op["op"] = json!("history");
        op["channel"] = json!(id);
        op
    };
    let cases: Vec<(Value, Vec<&str>, bool)> = vec![
        (json!({"limit": 3}), vec!["h9", "h8", "h7"], true),
        (json!({"limit": 3, "before": seq(7)}), vec!["h6", "h5", "h4"], true),
        (json!({"limit": 5, "before": seq(3)}), vec!["h2", "h1", "h0"], false),
        (json!({"limit": 3, "after": seq(0)}), vec!["h1", "h2", "h3"], true),
        (json!({"limit": 3, "after": seq(7)}), vec!["h8", "h9"], false),
        (json!({"limit": 50}), vec!["h9", "h8", "h7", "h6", "h5", "h4", "h3", "h2", "h1", "h0"], false),
        (json!({"after": seq(9)}), vec![], false),
        (json!({"from": msgs[4]["ts"], "to": msgs[4]["ts"], "after": 0}), vec![], false),
    ];
    for (q, want, more) in cases {
        let page = ada.ok(h(q.clone())).await;
        // from/to at millisecond precision: several messages may share a millisecond.
        if q.get("from").is_some() {
            assert!(contents(&page).contains(&"h4".to_owned()), "{q}: {page}");
            continue;
        }
        assert_eq!(contents(&page), want, "{q}");
        assert_eq!(page["has_more"], more, "{q}");
        assert!(page["messages"].as_array().unwrap().iter().all(|m| m["reactions"].is_array()));
    }
    let future = "2999-01-01T00:00:00.000Z";
    assert!(ada.ok(h(json!({"from": future}))).await["messages"].as_array().unwrap().is_empty());
    ada.err(h(json!({"from": "yesterday"})), "bad_request").await;
    ada.err(h(json!({"before": 3, "after": 1})), "bad_request").await;

    let rest = Rest::user(&server, "ada");
    let a = rest.get(&format!("/v1/channels/{id}/messages?limit=2&before={}", seq(5))).await;
    assert_eq!((a.status, contents(&a.body)), (200, vec!["h4".to_owned(), "h3".to_owned()]));
    assert_eq!(a.body["has_more"], true);
    let a = rest.get(&format!("/v1/channels/{id}/messages?after={}", seq(8))).await;
    assert_eq!((contents(&a.body), a.body["has_more"].as_bool()), (vec!["h9".to_owned()], Some(false)));
    let a = rest.get("/v1/channels/pages/messages?limit=1").await;
    assert_eq!(contents(&a.body), vec!["h9"], "by name too");
    rest.get(&format!("/v1/channels/{id}/messages?limit=abc")).await.assert_error(400, "bad_request");

    // REST send/edit/delete twins.
    let s = rest.post(&format!("/v1/channels/{id}/messages"), json!({"content": "via rest"})).await;
    assert_eq!(s.status, 201, "{}", s.body);
    let mid = s.body["message"]["id"].as_str().unwrap().to_owned();
    ada.next_message("via rest").await;
    let e =
        rest.patch(&format!("/v1/channels/{id}/messages/{mid}"), json!({"content": "edited via rest"})).await;
    assert_eq!((e.status, e.body["message"]["content"].as_str()), (200, Some("edited via rest")));
    let eve = Rest::user(&server, "eve");
    assert_eq!(eve.post("/v1/channels/pages/join", json!({})).await.status, 200);
    eve.patch(&format!("/v1/channels/{id}/messages/{mid}"), json!({"content": "x"}))
        .await
        .assert_error(403, "not_author");
    assert_eq!(rest.delete(&format!("/v1/channels/{id}/messages/{mid}")).await.status, 204);
    rest.delete(&format!("/v1/channels/{id}/messages/{mid}")).await.assert_error(404, "not_found");
    rest.delete(&format!("/v1/channels/{id}/messages/not-an-id")).await.assert_error(400, "invalid_name");
}

#[tokio::test]
async fn ids_from_another_channel_are_not_found_and_non_members_are_forbidden() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let mut eve = Ws::connect(&server, &server.token("eve")).await;
    let a = create_channel(&mut ada, json!({"name": "chan-a"})).await;
    let b = create_channel(&mut ada, json!({"name": "chan-b"})).await;
    let in_b = send(&mut ada, &b, "lives in b").await["id"].clone();
    let rid = ada.ok(json!({"op": "reaction.add", "channel": b, "message_id": in_b, "emoji": "x"})).await["reaction_id"]
        .clone();
    for op in [
        json!({"op": "message.send", "channel": a, "content": "x", "reply_to": in_b}),
        json!({"op": "message.edit", "channel": a, "message_id": in_b, "content": "x"}),
        json!({"op": "message.delete", "channel": a, "message_id": in_b}),
        json!({"op": "reaction.add", "channel": a, "message_id": in_b, "emoji": "x"}),
        json!({"op": "reaction.remove", "channel": a, "reaction_id": rid}),
        json!({"op": "read", "channel": a, "message_id": in_b}),
    ] {
        ada.err(op, "not_found").await;
    }
    for op in [
        json!({"op": "message.send", "channel": a, "content": "x"}),
        json!({"op": "typing", "channel": a}),
        json!({"op": "ephemeral", "channel": a, "subject": "s", "data": 1}),
        json!({"op": "history", "channel": a}),
        json!({"op": "read", "channel": b, "message_id": in_b}),
        json!({"op": "reaction.add", "channel": b, "message_id": in_b, "emoji": "x"}),
    ] {
        eve.err(op, "forbidden").await;
    }
    // Without the channels:create grant a token cannot create channels.
    let mut reader = Ws::connect(&server, &server.token_with("reader", Some(vec![]), 60)).await;
    reader.err(json!({"op": "channel.create", "name": "nope"}), "forbidden").await;
    assert!(ada.ok(json!({"op": "history", "channel": b})).await["messages"][0]["id"] == in_b);
}

#[tokio::test]
async fn pipelined_sends_are_appended_and_answered_in_arrival_order() {
    let server = TestServer::start().await;
    let mut ada = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ada, json!({"name": "pipeline"})).await;
    // 200 sends written back to back, none awaited: the server runs them concurrently
    // (group commit) but must append them in the order they arrived.
    let n = 200u64;
    for i in 0..n {
        let frame =
            json!({"id": 10_000 + i, "op": "message.send", "channel": id, "content": format!("p{i}")});
        ada.send_text(frame.to_string()).await;
    }
    // A history read right behind them must see every one (it waits for them).
    ada.send_text(json!({"id": 99_999, "op": "history", "channel": id, "limit": 500}).to_string()).await;
    // Read replies off the socket in the order they arrive (events are skipped).
    let mut replies = Vec::new();
    while replies.len() < n as usize + 1 {
        match ada.next_frame().await {
            Frame::Json(v) if v.get("event").is_none() => replies.push(v),
            Frame::Json(_) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let expect_ids: Vec<u64> = (0..n).map(|i| 10_000 + i).chain([99_999]).collect();
    assert_eq!(ids, expect_ids, "replies leave in arrival order");
    let mut seqs = Vec::new();
    for (i, r) in replies[..n as usize].iter().enumerate() {
        assert_eq!(r["ok"]["message"]["content"], format!("p{i}"), "{r}");
        seqs.push(r["ok"]["message"]["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "appended in arrival order: {seqs:?}");
    let got = contents(&replies[n as usize]["ok"]);
    assert_eq!(got.len(), n as usize, "history saw every earlier send");
    let expect: Vec<String> = (0..n).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(got, expect, "newest first, in send order");
}
