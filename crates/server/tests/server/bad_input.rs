//! §1 bad input: never `internal`, never a dead connection for one bad frame, the id echoed
//! whenever it can be recovered; and a seeded fuzz loop over one connection.

use crate::common::*;
use herald_testing::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Sends `frame` raw and expects one error reply with `id` and `code`.
async fn check(ws: &mut Ws, frame: &str, id: Value, code: &str) {
    ws.send_text(frame).await;
    match ws.reply(id.clone()).await {
        Ok(ok) => panic!("{frame}: ok {ok}"),
        Err(e) => {
            assert_eq!(e["code"], code, "{frame}: {e}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    ws.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut ws = Ws::connect(&server, &server.token("ada")).await;
    let id = create_channel(&mut ws, json!({"name": "bad"})).await;
    let cases: Vec<(String, Value, &str)> = vec![
        ("not json".into(), json!(null), "bad_request"),
        ("".into(), json!(null), "bad_request"),
        ("[1,2,3]".into(), json!(null), "bad_request"),
        ("42".into(), json!(null), "bad_request"),
        (r#"{"id":5,"op":"nope"}"#.into(), json!(5), "bad_request"),
        (r#"{"id":"s1","op":"ping","extra":1}"#.into(), json!("s1"), "ok"),
        (r#"{"id":6,"op":"message.send","channel":3,"content":"x"}"#.into(), json!(6), "bad_request"),
        (r#"{"id":7,"op":"subscribe"}"#.into(), json!(7), "bad_request"),
        (r#"{"id":8}"#.into(), json!(8), "bad_request"),
        (r#"{"id":9,"op":7}"#.into(), json!(9), "bad_request"),
        (format!(r#"{{"id":10,"op":"message.send","channel":"{id}"}}"#), json!(10), "bad_request"),
        (r#"{"id":11,"op":"history","channel":"bad","limit":"ten"}"#.into(), json!(11), "bad_request"),
        (r#"{"id":12,"op":"typing","channel":"bad","is_typing":"yes"}"#.into(), json!(12), "bad_request"),
        (r#"{"id":13,"op":"connect","token":"x"}"#.into(), json!(13), "bad_request"),
        (r#"{"id":14,"op":"subscribe","subject":"has space"}"#.into(), json!(14), "invalid_name"),
        (r#"{"id":15,"op":"subscribe","subject":""}"#.into(), json!(15), "invalid_name"),
        (r#"{"id":16,"op":"channel.create","name":"Nope"}"#.into(), json!(16), "invalid_name"),
        (r#"{"id":17,"op":"channel.join","channel":"é-name"}"#.into(), json!(17), "invalid_name"),
        (
            format!(r#"{{"id":18,"op":"channel.add_member","channel":"{id}","user":"a b"}}"#),
            json!(18),
            "invalid_name",
        ),
        (
            format!(r#"{{"id":19,"op":"message.delete","channel":"{id}","message_id":"zzz"}}"#),
            json!(19),
            "invalid_name",
        ),
        (format!(r#"{{"id":20,"op":"read","channel":"{id}","message_id":""}}"#), json!(20), "invalid_name"),
        (
            format!(r#"{{"id":21,"op":"publish","subject":"{}","data":1}}"#, "s".repeat(257)),
            json!(21),
            "invalid_name",
        ),
        (r#"{"id":{"nested":[1]},"op":"nope"}"#.into(), json!({"nested": [1]}), "bad_request"),
    ];
    for (frame, id, code) in cases {
        if code == "ok" {
            ws.send_text(frame.clone()).await;
            assert!(ws.reply(id).await.is_ok(), "{frame}");
            continue;
        }
        check(&mut ws, &frame, id, code).await;
    }
    // A binary frame (no v1 op takes one): bad_request, id null.
    ws.send_binary(vec![0, 0, 0, 1, b'{']).await;
    assert_eq!(ws.reply(json!(null)).await.unwrap_err()["code"], "bad_request");
    ws.ok(json!({"op": "ping"})).await;
}

#[tokio::test]
async fn many_bad_frames_in_a_row_may_close_with_4400() {
    let server = TestServer::start().await;
    let mut ws = Ws::connect(&server, &server.token("ada")).await;
    for _ in 0..40 {
        if !ws.try_send_text("garbage").await {
            break;
        }
    }
    assert_eq!(ws.closed_with().await, Some(4400));
    let replies = ws.take_replies();
    assert!(replies.iter().all(|r| r["error"]["code"] == "bad_request" && r["id"].is_null()), "{replies:?}");
    // The server itself is fine.
    Ws::connect(&server, &server.token("ada")).await.ok(json!({"op": "ping"})).await;
}

fn random_string(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..40);
    (0..n)
        .map(|_| match rng.gen_range(0..6) {
            0 => char::from(rng.gen_range(0u8..32)),
            1 => rng.gen_range('\u{80}'..'\u{2FFF}'),
            _ => char::from(rng.gen_range(32u8..127)),
        })
        .collect()
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.r#gen::<bool>()),
        2 => json!(rng.r#gen::<i64>()),
        3 => json!(rng.r#gen::<f64>() * 1e12),
        4 => json!(random_string(rng)),
        5 => Value::Array((0..rng.gen_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..4) {
                m.insert(random_string(rng), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

const OPS: &[&str] = &[
    "ping",
    "subscribe",
    "unsubscribe",
    "publish",
    "channel.create",
    "channel.join",
    "channel.leave",
    "channel.add_member",
    "channel.remove_member",
    "channel.list",
    "channel.directory",
    "channel.delete",
    "message.send",
    "message.edit",
    "message.delete",
    "reaction.add",
    "reaction.remove",
    "read",
    "typing",
    "ephemeral",
    "history",
    "connect",
    "nope",
];
const FIELDS: &[&str] = &[
    "subject",
    "data",
    "name",
    "title",
    "members",
    "encrypted",
    "policy",
    "channel",
    "user",
    "content",
    "type",
    "reply_to",
    "client_id",
    "message_id",
    "emoji",
    "reaction_id",
    "is_typing",
    "limit",
    "before",
    "after",
    "from",
    "to",
    "token",
    "resume",
    "author",
];

/// A random frame: random bytes, a truncated valid frame, or a random op with random fields.
fn random_frame(rng: &mut StdRng, channel: &str, message: &str) -> (Vec<u8>, bool) {
    match rng.gen_range(0..4) {
        0 => {
            let n = rng.gen_range(0..200);
            let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
            (bytes, rng.gen_bool(0.5))
        }
        1 => {
            let valid = json!({"id": 1, "op": "message.send", "channel": channel, "content": "fuzz", "reply_to": message})
                .to_string();
            let cut = rng.gen_range(0..valid.len());
            (valid.as_bytes()[..cut].to_vec(), false)
        }
        _ => {
            let mut m = serde_json::Map::new();
            if rng.gen_bool(0.9) {
                m.insert(
                    "id".into(),
                    if rng.gen_bool(0.8) { json!(rng.gen_range(0..1000)) } else { random_value(rng, 2) },
                );
            }
            m.insert(
                "op".into(),
                if rng.gen_bool(0.9) {
                    json!(OPS[rng.gen_range(0..OPS.len())])
                } else {
                    random_value(rng, 2)
                },
            );
            for _ in 0..rng.gen_range(0..5) {
                let f = FIELDS[rng.gen_range(0..FIELDS.len())];
                let v = match rng.gen_range(0..4) {
                    0 => json!(channel),
                    1 => json!(message),
                    _ => random_value(rng, 1),
                };
                m.insert(f.into(), v);
            }
            (Value::Object(m).to_string().into_bytes(), false)
        }
    }
}

#[tokio::test]
async fn fuzzed_frames_never_get_internal_and_the_server_keeps_answering() {
    let server = TestServer::start().await;
    let token = server.token("fuzzer");
    let mut ws = Ws::connect(&server, &token).await;
    let channel = create_channel(&mut ws, json!({"name": "fuzz"})).await;
    let message = send(&mut ws, &channel, "target").await["id"].as_str().unwrap().to_owned();
    let mut rng = StdRng::seed_from_u64(0x4e7a1d);
    let mut reconnects = 0;
    for case in 0..300u64 {
        let (bytes, binary) = random_frame(&mut rng, &channel, &message);
        let sent = if binary {
            ws.send_binary(bytes.clone()).await;
            true
        } else {
            ws.try_send_text(String::from_utf8_lossy(&bytes).into_owned()).await
        };
        let ping_id = json!(format!("ping-{case}"));
        let alive = sent && ws.try_send_text(json!({"id": ping_id, "op": "ping"}).to_string()).await;
        let answered = if alive {
            loop {
                match ws.next_frame().await {
                    Frame::Json(v) => {
                        assert_ne!(
                            v["error"]["code"],
                            "internal",
                            "case {case}: {:?} got internal",
                            String::from_utf8_lossy(&bytes)
                        );
                        if v["id"] == ping_id {
                            break v.get("ok").is_some() || v["error"]["code"] == "rate_limited";
                        }
                    }
                    Frame::Text(t) => panic!("case {case}: non-JSON frame {t:?}"),
                    Frame::Close(code) => {
                        assert_eq!(code, Some(4400), "case {case}: closed with {code:?}");
                        break false;
                    }
                    Frame::End => panic!("case {case}: connection dropped without a close frame"),
                    Frame::Binary(h, _) => panic!("case {case}: unexpected binary frame {h}"),
                }
            }
        } else {
            false
        };
        if !answered {
            reconnects += 1;
            ws = Ws::connect(&server, &token).await;
        }
    }
    assert!(reconnects < 10, "{reconnects} reconnects: one bad frame closed the connection");
    // Stored data is intact: the channel still verifies.
    let log = verified_log(&Rest::new(&server, Some(token)), &channel).await;
    assert!(log.len() >= 3);
}
