//! The pure state machine: reply matching, chain verification, dedupe on resume, and what is
//! failed or resent when a connection drops. No sockets.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Chain, message_seq};
use herald_client::session::{Output, Session};
use herald_client::{ChainError, ClientError, ClientEvent, ErrorCode, verify_log_page};
use herald_proto::frames::{Event, LogPage, Request, SendMessage};
use serde_json::{Value, json};

const CONNECT_OK: &str = r#"{"conn_id":"c1","user":{"id":"ada","kind":"human"}}"#;

/// Connects `s`, answering `connect` with ok; returns the connect frame and the outputs.
fn connect(s: &mut Session<&'static str>) -> (Value, Vec<Output<&'static str>>) {
    let frame: Value = serde_json::from_str(&s.connect("tok")).unwrap();
    let id = frame["id"].as_u64().unwrap();
    let outs = s.handle_text(&format!(r#"{{"id":{id},"ok":{CONNECT_OK}}}"#));
    (frame, outs)
}

fn sent(outs: &[Output<&'static str>]) -> Vec<Value> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(f) => Some(serde_json::from_str(f).unwrap()),
            _ => None,
        })
        .collect()
}

fn events(outs: Vec<Output<&'static str>>) -> Vec<ClientEvent> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn feed(s: &mut Session<&'static str>, event: &Event) -> Vec<ClientEvent> {
    events(s.handle_text(&serde_json::to_string(event).unwrap()))
}

fn delivered_seqs(events: &[ClientEvent]) -> Vec<u64> {
    events.iter().filter_map(|e| e.as_event().and_then(message_seq)).collect()
}

fn send_request(content: &str, client_id: Option<&str>) -> Request {
    Request::MessageSend {
        channel: "ch".into(),
        message: SendMessage {
            content: content.into(),
            client_id: client_id.map(str::to_owned),
            ..SendMessage::default()
        },
    }
}

#[test]
fn requests_made_before_connect_are_sent_after_it_and_replies_match_by_id() {
    let mut s = Session::new();
    assert!(s.request(Request::Ping {}, "ping").is_empty());
    assert!(
        s.request(Request::ChannelList {}, "list").is_empty(),
        "nothing is sent before connect is answered"
    );
    let (frame, outs) = connect(&mut s);
    assert_eq!(frame["op"], "connect");
    assert_eq!(frame["token"], "tok");
    assert!(frame.get("resume").is_none(), "nothing to resume yet");
    assert!(matches!(&outs[0], Output::Event(ClientEvent::Connected(ok)) if ok.user.id == "ada"));
    let frames = sent(&outs);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["op"], "ping");
    assert_eq!(frames[1]["op"], "channel.list");
    let (ping_id, list_id) = (frames[0]["id"].clone(), frames[1]["id"].clone());
    assert_ne!(ping_id, list_id);

    // Replies out of order reach the right waiter.
    let outs = s.handle_text(&json!({"id": list_id, "ok": {"channels": []}}).to_string());
    assert!(
        matches!(&outs[..], [Output::Reply { waiter: "list", result: Ok(v) }] if v["channels"] == json!([]))
    );
    let outs = s.handle_text(
        &json!({"id": ping_id, "error": {"code": "rate_limited", "message": "slow down"}}).to_string(),
    );
    match &outs[..] {
        [Output::Reply { waiter: "ping", result: Err(ClientError::Server(d)) }] => {
            assert_eq!(d.code, ErrorCode::RateLimited)
        }
        other => panic!("unexpected {other:?}"),
    }
    // A second reply with the same id, or an unknown id, is ignored.
    assert!(s.handle_text(&json!({"id": ping_id, "ok": {}}).to_string()).is_empty());
    assert!(s.handle_text(r#"{"id":999,"ok":{}}"#).is_empty());
    assert_eq!(s.pending(), 0);
    // An error with a null id answers nobody and is surfaced as an event.
    let outs = s.handle_text(r#"{"id":null,"error":{"code":"bad_request","message":"not json"}}"#);
    assert!(
        matches!(&outs[..], [Output::Event(ClientEvent::ServerError(d))] if d.code == ErrorCode::BadRequest)
    );
    // Garbage from the server is ignored, not a crash.
    assert!(s.handle_text("not json").is_empty());
}

#[test]
fn unauthorized_connect_is_rejected() {
    let mut s: Session<&str> = Session::new();
    let frame: Value = serde_json::from_str(&s.connect("bad")).unwrap();
    let outs = s.handle_text(
        &json!({"id": frame["id"], "error": {"code": "unauthorized", "message": "expired"}}).to_string(),
    );
    assert!(matches!(&outs[..], [Output::Rejected(d)] if d.code == ErrorCode::Unauthorized));
    assert!(!s.is_ready());
}

#[test]
fn live_entries_are_verified_and_delivered_once_in_order() {
    let mut s = Session::new();
    connect(&mut s);
    let mut chain = Chain::new("ch");
    let entries = chain.messages("ada", 3);
    let mut got = Vec::new();
    for e in &entries {
        got.extend(feed(&mut s, &e.event));
    }
    // Replayed duplicates are dropped.
    got.extend(feed(&mut s, &entries[1].event));
    got.extend(feed(&mut s, &entries[2].event));
    assert_eq!(delivered_seqs(&got), vec![1, 2, 3]);
    assert_eq!(s.resume_points().get("ch"), Some(&3));
    // Events that are not log entries pass through unverified.
    let typing = Event::Typing { channel: "ch".into(), user: "bob".into(), is_typing: true };
    assert_eq!(feed(&mut s, &typing), vec![ClientEvent::Event(Box::new(typing))]);
}

#[test]
fn tampered_entry_becomes_a_chain_error_and_is_not_delivered() {
    let mut s = Session::new();
    connect(&mut s);
    let mut chain = Chain::new("ch");
    for e in chain.messages("ada", 2) {
        feed(&mut s, &e.event);
    }
    let genuine = chain.message("ada", "pay 10 to bob");
    let mut tampered = genuine.event.clone();
    if let Event::Message { message, .. } = &mut tampered {
        message.content = "pay 1000 to mallory".into();
    }
    // On the wire the content is checked through the entry hash (docs/protocol.md §B: its
    // content_hash is computed from salt and content, not sent)...
    let got = feed(&mut s, &tampered);
    assert!(
        matches!(&got[..], [ClientEvent::ChainError(ChainError::HashMismatch { seq: 3, .. })]),
        "{got:?}"
    );
    // ...and in the full form (an older server's), against the content_hash it carries.
    let full = tampered.to_full_json().to_string();
    let got = events(s.handle_text(&full));
    assert!(
        matches!(&got[..], [ClientEvent::ChainError(ChainError::ContentMismatch { seq: 3, .. })]),
        "{got:?}"
    );
    assert_eq!(s.resume_points().get("ch"), Some(&2), "the head did not move");
    // A forged author (hash recomputed by nobody) breaks the entry hash.
    let mut forged = genuine.event.clone();
    if let Event::Message { meta, .. } = &mut forged {
        meta.author = "mallory".into();
    }
    assert!(matches!(
        &feed(&mut s, &forged)[..],
        [ClientEvent::ChainError(ChainError::HashMismatch { seq: 3, .. })]
    ));
    // An entry of another history (a valid chain, forked) does not link.
    let mut other = Chain::new("ch");
    let _ = other.messages("eve", 2);
    let forked = other.message("eve", "rewritten");
    assert!(matches!(
        &feed(&mut s, &forked.event)[..],
        [ClientEvent::ChainError(ChainError::BrokenLink { seq: 3, .. })]
    ));
    // A gap is reported, not papered over.
    let _ = chain.message("ada", "skipped");
    let after_gap = chain.message("ada", "after the gap");
    assert!(matches!(
        &feed(&mut s, &after_gap.event)[..],
        [ClientEvent::ChainError(ChainError::Gap { expected: 3, got: 5, .. })]
    ));
    // The genuine entry still goes through.
    assert_eq!(delivered_seqs(&feed(&mut s, &genuine.event)), vec![3]);
    // A timestamp that cannot be read cannot be hashed: a chain error too.
    let mut bad_ts = chain.message("ada", "x").event;
    if let Event::Message { meta, .. } = &mut bad_ts {
        meta.ts = "yesterday".into();
    }
    assert!(matches!(
        &feed(&mut s, &bad_ts)[..],
        [ClientEvent::ChainError(ChainError::Malformed { field: "ts", .. })]
    ));
}

#[test]
fn drop_fails_in_flight_requests_but_resends_idempotent_sends_and_resumes() {
    let mut s = Session::new();
    connect(&mut s);
    let mut chain = Chain::new("ch");
    let entries = chain.messages("ada", 3);
    for e in &entries {
        feed(&mut s, &e.event);
    }
    let ping = sent(&s.request(Request::Ping {}, "ping"));
    let send = sent(&s.request(send_request("hi", Some("k1")), "send"));
    let unkeyed = sent(&s.request(send_request("raw", None), "unkeyed"));
    assert_eq!(send[0]["client_id"], "k1");

    let outs = s.disconnected("server restart");
    let mut failed: Vec<&str> = Vec::new();
    let mut saw_disconnected = false;
    for o in &outs {
        match o {
            Output::Reply { waiter, result: Err(ClientError::Disconnected) } => failed.push(waiter),
            Output::Event(ClientEvent::Disconnected { reason }) => {
                saw_disconnected = true;
                assert_eq!(reason, "server restart");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    failed.sort();
    assert_eq!(failed, vec!["ping", "unkeyed"], "non-idempotent ops fail, never resent");
    assert!(saw_disconnected);
    assert_eq!(s.pending(), 1, "the keyed send waits for the next connection");

    // The next connect resumes from the last delivered seq, then resends the keyed send
    // under its original id and client_id.
    let (frame, outs) = connect(&mut s);
    assert_eq!(frame["resume"], json!({"ch": 3}));
    let resent = sent(&outs);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0], send[0]);
    assert_ne!(ping[0]["id"], unkeyed[0]["id"]);

    // The replay overlaps what was delivered: only the new entry comes out.
    let next = chain.message("ada", "hi");
    let mut got = Vec::new();
    for e in entries.iter().skip(1) {
        got.extend(feed(&mut s, &e.event));
    }
    got.extend(feed(&mut s, &next.event));
    assert_eq!(delivered_seqs(&got), vec![4]);
    let outs = s.handle_text(
        &json!({"id": send[0]["id"], "ok": {"message": {"id": "m4", "seq": 4, "author": "ada",
            "type": "chat.text", "content": "hi", "client_id": "k1", "ts": "2024-11-19T07:06:40.004Z"}}})
        .to_string(),
    );
    assert!(matches!(&outs[..], [Output::Reply { waiter: "send", result: Ok(_) }]));
}

#[test]
fn subscriptions_are_renewed_after_reconnect_and_dropped_ones_are_not() {
    let mut s = Session::new();
    // Subscribed while offline: sent once, after connect, with its waiter.
    assert!(s.subscribe("presence:lobby", "sub1").is_empty());
    let (_, outs) = connect(&mut s);
    let frames = sent(&outs);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["op"], "subscribe");
    s.handle_text(&json!({"id": frames[0]["id"], "ok": {}}).to_string());
    let frames = sent(&s.subscribe("cursors", "sub2"));
    s.handle_text(&json!({"id": frames[0]["id"], "ok": {}}).to_string());
    // Two local subscriptions of one subject: only the last unsubscribe reaches the server.
    let frames = sent(&s.subscribe("cursors", "sub3"));
    s.handle_text(&json!({"id": frames[0]["id"], "ok": {}}).to_string());
    assert!(s.unsubscribe("cursors").is_empty());
    s.disconnected("lost");
    let (_, outs) = connect(&mut s);
    let mut subjects: Vec<String> = sent(&outs)
        .iter()
        .map(|f| {
            assert_eq!(f["op"], "subscribe");
            f["subject"].as_str().unwrap().to_owned()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, vec!["cursors", "presence:lobby"]);
    assert!(!outs.iter().any(|o| matches!(o, Output::Reply { .. })), "renewals answer nobody");
    let frames = sent(&s.unsubscribe("cursors"));
    assert_eq!(frames[0]["op"], "unsubscribe");
    s.disconnected("lost");
    let (_, outs) = connect(&mut s);
    let frames = sent(&outs);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["subject"], "presence:lobby");
}

#[test]
fn resume_truncated_reanchors_the_chain() {
    let mut s = Session::new();
    connect(&mut s);
    let mut chain = Chain::new("ch");
    for e in chain.messages("ada", 2) {
        feed(&mut s, &e.event);
    }
    let head2 = chain.prev;
    let missed = chain.messages("ada", 5);
    let got = feed(&mut s, &Event::ResumeTruncated { channel: "ch".into(), from_seq: 6 });
    assert_eq!(got, vec![ClientEvent::ResumeTruncated { channel: "ch".into(), from_seq: 6 }]);
    let mut got = Vec::new();
    for e in &missed[3..] {
        got.extend(feed(&mut s, &e.event));
    }
    assert_eq!(delivered_seqs(&got), vec![6, 7]);
    // The hole is paged over the log, anchored on the head from before the truncation.
    assert_eq!(s.anchor("ch", 2), Some((2, head2)));
    let hole = LogPage { entries: missed[..3].iter().map(|e| e.log.clone()).collect(), has_more: false };
    assert_eq!(verify_log_page("ch", 2, &hole, s.anchor("ch", 2)), Ok(()));
}

#[test]
fn shutdown_fails_everything_waiting() {
    let mut s = Session::new();
    s.request(Request::Ping {}, "queued");
    connect(&mut s);
    s.request(Request::Ping {}, "in flight");
    s.disconnected("x");
    s.request(send_request("x", Some("k")), "offline");
    let outs = s.shutdown(|| ClientError::Unauthorized);
    assert!(outs.iter().all(|o| matches!(o, Output::Reply { result: Err(ClientError::Unauthorized), .. })));
    assert_eq!(s.pending(), 0);
}

#[test]
fn log_pages_are_verified() {
    let mut chain = Chain::new("ch");
    let entries = chain.messages("ada", 5);
    let page = |from: usize, to: usize| LogPage {
        entries: entries[from..to].iter().map(|e| e.log.clone()).collect(),
        has_more: false,
    };
    assert_eq!(verify_log_page("ch", 0, &page(0, 5), None), Ok(()));
    assert_eq!(verify_log_page("ch", 2, &page(2, 5), None), Ok(()));
    // Anchored on the client's verified head.
    let head2 = herald_proto::chain::hash_from_hex(&entries[1].log.hash).unwrap();
    assert_eq!(verify_log_page("ch", 2, &page(2, 5), Some((2, head2))), Ok(()));
    let mut wrong = head2;
    wrong[0] ^= 1;
    assert!(matches!(
        verify_log_page("ch", 2, &page(2, 5), Some((2, wrong))),
        Err(ChainError::BrokenLink { seq: 3, .. })
    ));
    assert!(matches!(
        verify_log_page("ch", 0, &page(0, 5), Some((2, wrong))),
        Err(ChainError::HashMismatch { seq: 2, .. })
    ));
    // A tampered entry, a missing entry, a page that starts elsewhere.
    let mut tampered = page(0, 5);
    tampered.entries[3].content = Some("rewritten".into());
    assert!(matches!(
        verify_log_page("ch", 0, &tampered, None),
        Err(ChainError::ContentMismatch { seq: 4, .. })
    ));
    let mut holed = page(0, 5);
    holed.entries.remove(2);
    assert!(matches!(
        verify_log_page("ch", 0, &holed, None),
        Err(ChainError::Gap { expected: 3, got: 4, .. })
    ));
    assert!(matches!(verify_log_page("ch", 1, &page(0, 5), None), Err(ChainError::Gap { .. })));
    // A tombstone (content and salt erased) still verifies.
    let mut tomb = page(0, 5);
    tomb.entries[1].content = None;
    tomb.entries[1].salt = None;
    assert_eq!(verify_log_page("ch", 0, &tomb, None), Ok(()));
}

#[test]
fn a_request_abandoned_while_queued_is_never_sent() {
    let mut s: Session<tokio::sync::oneshot::Sender<Result<Value, ClientError>>> = Session::new();
    let (gone, rx) = tokio::sync::oneshot::channel();
    drop(rx); // the caller timed out
    let (kept, _rx) = tokio::sync::oneshot::channel();
    s.request(send_request("late", None), gone);
    s.request(Request::Ping {}, kept);
    let frame: Value = serde_json::from_str(&s.connect("tok")).unwrap();
    let outs =
        s.handle_text(&json!({"id": frame["id"], "ok": {"conn_id": "c", "user": {"id": "ada"}}}).to_string());
    let ops: Vec<String> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send(f) => {
                Some(serde_json::from_str::<Value>(f).unwrap()["op"].as_str().unwrap().to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ops, vec!["ping"]);
}

#[test]
fn seeded_resume_points_never_move_a_cursor_the_session_already_has() {
    let mut s: Session<&str> = Session::seeding();
    let frame: Value = serde_json::from_str(&s.connect("tok")).unwrap();
    let outs = s.handle_text(
        &json!({"id": frame["id"], "ok": serde_json::from_str::<Value>(CONNECT_OK).unwrap()}).to_string(),
    );
    let frames = sent(&outs);
    assert_eq!(frames[0]["op"], "channel.list", "seeding comes first");
    assert!(s.is_seeding());
    // `ch` delivers entries 1-3 before the list answer arrives.
    let mut chain = Chain::new("ch");
    for e in chain.messages("bob", 3) {
        feed(&mut s, &e.event);
    }
    let list = json!({"id": frames[0]["id"], "ok": {"channels": [
        {"id": "ch", "name": null, "title": null, "unread": 0, "last_seq": 5},
        {"id": "quiet", "name": "quiet", "title": null, "unread": 0, "last_seq": 9},
    ]}});
    assert!(s.handle_text(&list.to_string()).is_empty(), "a background answer reaches nobody");
    assert!(!s.is_seeding());
    // A later seed neither moves a seeded cursor forwards nor backwards.
    s.seed("quiet", 12);
    s.seed("quiet", 2);
    let points = s.resume_points();
    assert_eq!(points.get("ch"), Some(&3), "the verified head wins: 4 and 5 are still on their way");
    assert_eq!(points.get("quiet"), Some(&9), "the quiet channel is resumed from its last_seq");
    s.disconnected("restart");
    let (frame, _) = connect(&mut s);
    assert_eq!(frame["resume"], json!({"ch": 3, "quiet": 9}));
}

#[test]
fn connect_declares_the_device_and_unknown_events_arrive_raw() {
    let mut s: Session<&str> = Session::new();
    s.set_device(Some("ada-laptop".into()));
    let (frame, _) = connect(&mut s);
    assert_eq!(frame["op"], "connect");
    assert_eq!(frame["device"], "ada-laptop");
    assert_eq!(frame["token"], "tok");
    // A push the protocol types cannot read is handed on as JSON, not dropped.
    let got = events(s.handle_text(r#"{"event":"future_thing","x":1}"#));
    assert_eq!(got, vec![ClientEvent::Raw(std::sync::Arc::new(json!({"event":"future_thing","x":1})))]);
}

#[test]
fn a_keeper_session_passes_sparse_entries_of_foreign_channels_but_verifies_its_own() {
    let mut chain = Chain::new("foreign");
    let entries = chain.messages("ada", 5);
    // An ordinary session takes a gap for a broken chain.
    let mut s: Session<&str> = Session::new();
    connect(&mut s);
    feed(&mut s, &entries[0].event);
    assert!(matches!(feed(&mut s, &entries[3].event)[..], [ClientEvent::ChainError(ChainError::Gap { .. })]));
    // A keeper session delivers them (it is told of a few entries of channels it is not in).
    let mut k: Session<&str> = Session::new();
    k.set_pass_foreign(true);
    connect(&mut k);
    assert_eq!(delivered_seqs(&feed(&mut k, &entries[0].event)), vec![1]);
    assert_eq!(delivered_seqs(&feed(&mut k, &entries[3].event)), vec![4]);
    assert!(k.resume_points().is_empty(), "foreign channels are not resumed");
    // A channel it is a member of (seeded) is verified as always.
    k.seed("mine", 0);
    let mut mine = Chain::new("mine");
    let m = mine.messages("ada", 3);
    feed(&mut k, &m[0].event);
    assert!(matches!(feed(&mut k, &m[2].event)[..], [ClientEvent::ChainError(ChainError::Gap { .. })]));
}
