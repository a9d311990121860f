//! §8 rooms over real sockets: participants of every kind, direct and broadcast messages with
//! binary attachments, leaving and disconnecting, streams with credit, presence at scale.

use crate::common::*;
use herald_server::auth::{Claims, now_secs};
use herald_testing::TestServer;
use serde_json::{Value, json};

fn token_kind(server: &TestServer, sub: &str, kind: &str) -> String {
    server.token_for(&Claims {
        sub: sub.into(),
        name: Some(format!("{sub} name")),
        kind: Some(kind.into()),
        exp: now_secs() + 3600,
        iat: None,
        app: None,
        grants: None,
    })
}

/// `ada` creates channel `lobby` with the others as members; every one of them connects.
async fn lobby(server: &TestServer, users: &[(&str, &str)]) -> (String, Vec<Ws>) {
    let mut conns = Vec::new();
    for (u, kind) in users {
        conns.push(Ws::connect(server, &token_kind(server, u, kind)).await);
    }
    let members: Vec<&str> = users.iter().skip(1).map(|(u, _)| *u).collect();
    let id = create_channel(&mut conns[0], json!({"name": "lobby", "members": members})).await;
    (id, conns)
}

async fn enter(ws: &mut Ws, channel: &str) -> (String, Value) {
    let ok = ws.ok(json!({"op": "room.enter", "channel": channel, "attributes": {"x": 1}})).await;
    (ok["participant_id"].as_str().unwrap().to_owned(), ok)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|p| p["participant_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn human_agent_and_service_participants_see_each_other() {
    let server = TestServer::start().await;
    let (ch, mut c) = lobby(&server, &[("ada", "human"), ("bot", "agent"), ("svc", "service")]).await;
    let (pa, ok) = enter(&mut c[0], "lobby").await;
    assert_eq!(ids(&ok["participants"]), vec![pa.clone()], "the caller is in its own list");
    assert_eq!(ok["participants"][0]["kind"], "human");
    let (pb, ok) = enter(&mut c[1], &ch).await;
    assert_eq!(ok["participants"].as_array().unwrap().len(), 2);
    let (ps, ok) = enter(&mut c[2], "lobby").await;
    let kinds: Vec<&str> =
        ok["participants"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 3);
    assert!(kinds.contains(&"agent") && kinds.contains(&"service") && kinds.contains(&"human"), "{kinds:?}");

    // Ada hears of both, with their kind from the token, their name and attributes.
    let bot = c[0]
        .next_event_where(|e| {
            e["event"] == "participant_added" && e["participant"]["participant_id"] == pb.as_str()
        })
        .await;
    assert_eq!(
        (bot["participant"]["kind"].as_str(), bot["participant"]["user"].as_str()),
        (Some("agent"), Some("bot"))
    );
    assert_eq!(bot["participant"]["name"], "bot name");
    assert_eq!(bot["participant"]["attributes"], json!({"x": 1}));
    assert_eq!(bot["channel"], ch.as_str());
    let svc = c[0]
        .next_event_where(|e| {
            e["event"] == "participant_added" && e["participant"]["participant_id"] == ps.as_str()
        })
        .await;
    assert_eq!(svc["participant"]["kind"], "service");
    // The bot hears of the service (it entered after the bot), not of itself.
    c[1].next_event_where(|e| {
        e["event"] == "participant_added" && e["participant"]["participant_id"] == ps.as_str()
    })
    .await;
    c[1].sync().await;
    assert!(
        !c[1]
            .seen()
            .iter()
            .any(|e| e["event"] == "participant_added" && e["participant"]["participant_id"] == pb.as_str()),
        "a participant's own events do not reach it"
    );

    // An update reaches the others.
    c[1].ok(json!({"op": "room.update", "channel": "lobby", "attributes": {"status": "busy"}})).await;
    let up = c[0].next_event("participant_updated").await;
    assert_eq!(up["participant"]["attributes"], json!({"status": "busy"}));
    let list = c[2].ok(json!({"op": "room.participants", "channel": "lobby"})).await;
    assert_eq!(list["has_more"], false);
    let mut got = ids(&list["participants"]);
    got.sort();
    let mut want = vec![pa, pb, ps];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn who_may_enter_and_bad_input() {
    let server = TestServer::start().await;
    let (ch, mut c) = lobby(&server, &[("ada", "human"), ("bob", "human")]).await;
    let mut eve = Ws::connect(&server, &server.token("eve")).await;
    eve.err(json!({"op": "room.enter", "channel": "lobby"}), "forbidden").await;
    eve.err(json!({"op": "room.enter", "channel": ch}), "forbidden").await;
    eve.err(json!({"op": "room.enter", "channel": "no-such-room"}), "channel_not_found").await;
    eve.err(json!({"op": "room.enter", "channel": "Bad Name"}), "invalid_name").await;
    let big = "x".repeat(4097);
    c[0].err(json!({"op": "room.enter", "channel": "lobby", "attributes": {"a": big}}), "payload_too_large")
        .await;
    c[0].err(
        json!({"op": "room.send", "channel": "lobby", "to": "p", "type": "t", "message": {}}),
        "forbidden",
    )
    .await;
    c[0].err(json!({"op": "room.enter", "channel": "lobby", "attributes": [1]}), "bad_request").await;
    let (_, _) = enter(&mut c[0], "lobby").await;
    c[0].err(
        json!({"op": "room.send", "channel": "lobby", "to": "nobody", "type": "t", "message": {}}),
        "not_found",
    )
    .await;
    c[0].err(json!({"op": "room.send", "channel": "lobby", "type": "t"}), "bad_request").await;
    c[0].err(json!({"op": "stream.credit", "stream_id": "nope", "bytes": 1}), "not_found").await;
    // A binary frame for an op that takes no bytes.
    let e = c[0].request_binary(json!({"op": "room.leave", "channel": "lobby"}), b"x").await.unwrap_err();
    assert_eq!(e["code"], "bad_request");
    let e = c[0]
        .request_binary(json!({"op": "message.send", "channel": "lobby", "content": "x"}), b"x")
        .await
        .unwrap_err();
    assert_eq!(e["code"], "bad_request");
    // Entering again on the same connection keeps the participant.
    let first = c[0].ok(json!({"op": "room.participants", "channel": "lobby"})).await;
    let (again, _) = enter(&mut c[0], "lobby").await;
    assert_eq!(ids(&first["participants"]), vec![again]);
    c[0].ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn a_direct_message_with_a_1_mib_attachment_reaches_the_addressee_only() {
    let server = TestServer::start().await;
    let (_, mut c) = lobby(&server, &[("ada", "human"), ("bob", "human"), ("cat", "agent")]).await;
    let (pa, _) = enter(&mut c[0], "lobby").await;
    let (pb, _) = enter(&mut c[1], "lobby").await;
    let (_pc, _) = enter(&mut c[2], "lobby").await;
    let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    c[0]
        .request_binary(
            json!({"op": "room.send", "channel": "lobby", "to": pb, "type": "file", "message": {"name": "a.bin"}}),
            &bytes,
        )
        .await
        .unwrap();
    let m = c[1].next_event("room_message").await;
    assert_eq!(m["from"]["participant_id"], pa.as_str());
    assert_eq!((m["type"].as_str(), m["message"]["name"].as_str()), (Some("file"), Some("a.bin")));
    assert!(c[1].attachment(&m) == bytes.as_slice(), "the attachment arrives byte for byte");

    // A broadcast after it: cat's first room message is the broadcast (the direct one never
    // reached it), and ada, the sender, gets none.
    c[0].ok(
        json!({"op": "room.broadcast", "channel": "lobby", "type": "chat", "message": {"text": "hi all"}}),
    )
    .await;
    let first = c[2].next_event("room_message").await;
    assert_eq!(first["message"]["text"], "hi all");
    assert!(first.get("_attachment").is_none(), "a text broadcast stays a text frame");
    let b = c[1].next_event("room_message").await;
    assert_eq!(b["message"]["text"], "hi all");
    c[1].ok(
        json!({"op": "room.broadcast", "channel": "lobby", "type": "chat", "message": {"text": "from bob"}}),
    )
    .await;
    let at_ada = c[0].next_event("room_message").await;
    assert_eq!(at_ada["message"]["text"], "from bob", "the sender does not get its own broadcast");
    // A broadcast with an attachment arrives as a binary frame at every other participant.
    c[1].request_binary(
        json!({"op": "room.broadcast", "channel": "lobby", "type": "img", "message": {}}),
        b"\x00\x01png",
    )
    .await
    .unwrap();
    for i in [0, 2] {
        let m = c[i].next_event_where(|e| e["event"] == "room_message" && e["type"] == "img").await;
        assert_eq!(c[i].attachment(&m), b"\x00\x01png");
    }
}

#[tokio::test]
async fn attachments_are_held_to_their_own_limit_not_the_frame_limit() {
    let server = TestServer::start_with(|c| {
        c.max_attachment_bytes = 300_000;
        c.max_frame_bytes = 4096;
    })
    .await;
    let (_, mut c) = lobby(&server, &[("ada", "human"), ("bob", "human")]).await;
    enter(&mut c[0], "lobby").await;
    let (pb, _) = enter(&mut c[1], "lobby").await;
    let op = json!({"op": "room.send", "channel": "lobby", "to": pb, "type": "f", "message": {}});
    c[0].request_binary(op.clone(), &vec![7u8; 300_000]).await.unwrap();
    let m = c[1].next_event("room_message").await;
    assert_eq!(c[1].attachment(&m).len(), 300_000, "the limit itself is allowed, far above the frame limit");
    let e = c[0].request_binary(op, &vec![7u8; 300_001]).await.unwrap_err();
    assert_eq!(e["code"], "payload_too_large");
    c[0].ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn leave_disconnect_and_leaving_the_channel_remove_the_participant() {
    let server = TestServer::start_with(|c| c.presence_interval_ms = 0).await;
    let (_, mut c) =
        lobby(&server, &[("ada", "human"), ("bob", "human"), ("cat", "human"), ("dan", "human")]).await;
    enter(&mut c[0], "lobby").await;
    let (pb, _) = enter(&mut c[1], "lobby").await;
    let (pc, _) = enter(&mut c[2], "lobby").await;
    let (pd, _) = enter(&mut c[3], "lobby").await;
    let removed = |pid: String| {
        move |e: &Value| {
            e["event"] == "participant_removed" && e["participant"]["participant_id"] == pid.as_str()
        }
    };

    c[1].ok(json!({"op": "room.leave", "channel": "lobby"})).await;
    let r = c[0].next_event_where(removed(pb.clone())).await;
    assert_eq!(r["participant"]["user"], "bob");
    c[1].err(json!({"op": "room.broadcast", "channel": "lobby", "type": "t", "message": {}}), "forbidden")
        .await;

    let cat = c.remove(2);
    cat.close().await;
    c[0].next_event_where(removed(pc.clone())).await;

    c[2].ok(json!({"op": "channel.leave", "channel": "lobby"})).await;
    c[0].next_event_where(removed(pd.clone())).await;
    let list = c[0].ok(json!({"op": "room.participants", "channel": "lobby"})).await;
    assert_eq!(list["participants"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_stream_flows_within_the_credit_its_reader_grants() {
    let server = TestServer::start().await;
    let (_, mut c) = lobby(&server, &[("ada", "human"), ("bob", "agent")]).await;
    let (pa, _) = enter(&mut c[0], "lobby").await;
    let (pb, _) = enter(&mut c[1], "lobby").await;
    let open = c[0]
        .send_request(json!({"op": "stream.open", "channel": "lobby", "to": pb, "header": {"name": "f"}}))
        .await;
    // The writer's connection stays usable while the open waits for the reader.
    c[0].ok(json!({"op": "ping"})).await;
    let req = c[1].next_event("stream_request").await;
    assert_eq!(
        (req["from"]["participant_id"].as_str(), req["header"]["name"].as_str()),
        (Some(pa.as_str()), Some("f"))
    );
    let sid = req["stream_id"].as_str().unwrap().to_owned();
    c[1].ok(json!({"op": "stream.accept", "stream_id": sid, "credit": 10})).await;
    let ok = c[0].reply(open).await.unwrap();
    assert_eq!(ok["stream_id"], sid.as_str());
    let credit = c[0].next_event("stream_credit").await;
    assert_eq!(credit["bytes"], 10);
    let chunk = |n: usize| {
        (vec![b'a' + n as u8; n], json!({"op": "stream.chunk", "stream_id": sid, "header": {"n": n}}))
    };
    let (b6, op6) = chunk(6);
    c[0].request_binary(op6, &b6).await.unwrap();
    let (b5, op5) = chunk(5);
    let e = c[0].request_binary(op5.clone(), &b5).await.unwrap_err();
    assert_eq!(e["code"], "rate_limited", "6 + 5 is beyond a credit of 10");
    c[1].err(json!({"op": "stream.chunk", "stream_id": sid}), "forbidden").await;
    let got = c[1].next_event("stream_chunk").await;
    assert_eq!((got["stream_id"].as_str(), got["header"]["n"].as_u64()), (Some(sid.as_str()), Some(6)));
    assert_eq!(c[1].attachment(&got), b6.as_slice());
    c[1].ok(json!({"op": "stream.credit", "stream_id": sid, "bytes": 1})).await;
    assert_eq!(c[0].next_event("stream_credit").await["bytes"], 1);
    c[0].request_binary(op5, &b5).await.unwrap();
    let got = c[1].next_event("stream_chunk").await;
    assert_eq!(c[1].attachment(&got), b5.as_slice());
    c[0].ok(json!({"op": "stream.close", "stream_id": sid})).await;
    assert_eq!(c[1].next_event("stream_closed").await["stream_id"], sid.as_str());
    c[0].err(json!({"op": "stream.close", "stream_id": sid}), "not_found").await;
}

#[tokio::test]
async fn a_rejected_stream_is_forbidden_and_a_vanished_side_aborts_it() {
    let server = TestServer::start().await;
    let (_, mut c) = lobby(&server, &[("ada", "human"), ("bob", "human"), ("cat", "human")]).await;
    enter(&mut c[0], "lobby").await;
    let (pb, _) = enter(&mut c[1], "lobby").await;
    let (pc, _) = enter(&mut c[2], "lobby").await;
    let open =
        c[0].send_request(json!({"op": "stream.open", "channel": "lobby", "to": pb, "header": {}})).await;
    let sid = c[1].next_event("stream_request").await["stream_id"].as_str().unwrap().to_owned();
    c[1].ok(json!({"op": "stream.reject", "stream_id": sid})).await;
    assert_eq!(c[0].reply(open).await.unwrap_err()["code"], "forbidden");

    // The target leaves while the open waits: not_found.
    let open =
        c[0].send_request(json!({"op": "stream.open", "channel": "lobby", "to": pc, "header": {}})).await;
    c[2].next_event("stream_request").await;
    c[2].ok(json!({"op": "room.leave", "channel": "lobby"})).await;
    assert_eq!(c[0].reply(open).await.unwrap_err()["code"], "not_found");

    // An open stream whose writer disconnects: the reader gets stream_aborted.
    let open =
        c[0].send_request(json!({"op": "stream.open", "channel": "lobby", "to": pb, "header": {}})).await;
    let sid = c[1].next_event("stream_request").await["stream_id"].as_str().unwrap().to_owned();
    c[1].ok(json!({"op": "stream.accept", "stream_id": sid})).await;
    c[0].reply(open).await.unwrap();
    let ada = c.remove(0);
    ada.close().await;
    let aborted = c[0].next_event("stream_aborted").await;
    assert_eq!(aborted["stream_id"], sid.as_str());
    assert!(aborted["reason"].as_str().is_some_and(|r| !r.is_empty()));
}

#[tokio::test]
async fn past_the_list_max_rooms_count_and_page() {
    let server = TestServer::start_with(|c| c.presence_list_max = 2).await;
    let users = [("ada", "human"), ("bob", "human"), ("cat", "human"), ("dan", "human")];
    let (ch, mut c) = lobby(&server, &users).await;
    let mut pids = Vec::new();
    for ws in c.iter_mut().take(3) {
        pids.push(enter(ws, "lobby").await.0);
    }
    let (pd, ok) = enter(&mut c[3], "lobby").await;
    pids.push(pd);
    assert_eq!(ok["count"], 4, "{ok}");
    assert!(ok.get("participants").is_none(), "{ok}");
    let count = c[0].next_event_where(|e| e["event"] == "presence_count" && e["count"] == 4).await;
    assert_eq!(count["channel"], ch.as_str());
    pids.sort();
    let page = c[3].ok(json!({"op": "room.participants", "channel": "lobby", "limit": 3})).await;
    assert_eq!(page["has_more"], true);
    let mut got = ids(&page["participants"]);
    let after = got.last().cloned().unwrap();
    let rest =
        c[3].ok(json!({"op": "room.participants", "channel": "lobby", "limit": 3, "after": after})).await;
    assert_eq!(rest["has_more"], false);
    got.extend(ids(&rest["participants"]));
    assert_eq!(got, pids, "two pages give every participant once, in order");
}
