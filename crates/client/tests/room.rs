//! The SDK's rooms (§8) against the real server over real sockets: participants, direct
//! messages with attachments, broadcast, and a stream paced by a slow reader's credit.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::StreamExt;
use herald_client::room::{RoomEvents, RoomIncoming};
use herald_client::{Client, ClientConfig};
use herald_proto::rooms::RoomEvent;
use herald_server::auth::{Claims, now_secs};
use herald_testing::TestServer;
use serde_json::{Map, json};
use std::future::Future;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

async fn client(server: &TestServer, user: &str, kind: &str) -> Client {
    let token = server.token_for(&Claims {
        sub: user.into(),
        name: None,
        kind: Some(kind.into()),
        exp: now_secs() + 3600,
        iat: None,
        app: None,
        grants: None,
    });
    let config = ClientConfig { request_timeout: WAIT, ..ClientConfig::default() };
    within(Client::connect_with(&server.url(), &token, config)).await.unwrap()
}

async fn next_where(
    events: &mut RoomEvents,
    pred: impl Fn(&RoomEvent) -> bool,
) -> (RoomEvent, Option<Bytes>) {
    loop {
        match within(events.next()).await.expect("room events ended") {
            RoomIncoming::Event { event, bytes } if pred(&event) => return (event, bytes),
            RoomIncoming::Event { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn participants_messages_and_attachments_through_the_sdk() {
    let server = TestServer::start().await;
    let ada = client(&server, "ada", "human").await;
    let bot = client(&server, "bot", "agent").await;
    let cat = client(&server, "cat", "service").await;
    let mut create =
        herald_proto::frames::CreateChannel { name: Some("room-a".into()), ..Default::default() };
    create.members = vec!["bot".into(), "cat".into()];
    let channel = ada.channels().create_with(create).await.unwrap();
    let (ra, rb, rc) = (ada.room(channel.id()), bot.room(channel.id()), cat.room("room-a"));
    let (mut ea, mut eb, mut ec) = (ra.events(), rb.events(), rc.events());
    let me = ra.enter(Map::new()).await.unwrap();
    let b = rb.enter(json!({"role": "helper"}).as_object().cloned().unwrap()).await.unwrap();
    let c = rc.enter(Map::new()).await.unwrap();
    let (added, _) = next_where(&mut ea, |e| matches!(e, RoomEvent::ParticipantAdded { participant, .. } if participant.participant_id == b.participant_id)).await;
    let RoomEvent::ParticipantAdded { participant, .. } = added else { unreachable!() };
    assert_eq!(participant.kind, herald_proto::UserKind::Agent);
    assert_eq!(participant.attributes.get("role"), Some(&json!("helper")));
    let all = rc.participants().await.unwrap();
    assert_eq!(all.len(), 3);

    let attachment = Bytes::from((0..(1u32 << 20)).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    ra.send(&b.participant_id, "file", json!({"name": "x"}), Some(attachment.clone())).await.unwrap();
    let (m, bytes) = next_where(&mut eb, |e| matches!(e, RoomEvent::RoomMessage { .. })).await;
    assert!(
        matches!(&m, RoomEvent::RoomMessage { from, kind, .. } if from.participant_id == me.participant_id && kind == "file")
    );
    assert_eq!(bytes.unwrap(), attachment, "byte for byte");

    rc.broadcast("chat", json!({"text": "hello"}), None).await.unwrap();
    for events in [&mut ea, &mut eb] {
        let (m, bytes) = next_where(events, |e| matches!(e, RoomEvent::RoomMessage { .. })).await;
        assert!(
            matches!(&m, RoomEvent::RoomMessage { from, message, .. } if from.participant_id == c.participant_id && message["text"] == "hello")
        );
        assert!(bytes.is_none());
    }
    // The direct message never reached cat, and a sender gets none of its own broadcasts:
    // cat's first room message is ada's broadcast.
    ra.broadcast("chat", json!({"text": "second"}), None).await.unwrap();
    let (m, _) = next_where(&mut ec, |e| matches!(e, RoomEvent::RoomMessage { .. })).await;
    assert!(matches!(&m, RoomEvent::RoomMessage { message, .. } if message["text"] == "second"), "{m:?}");

    rb.leave().await.unwrap();
    next_where(&mut ea, |e| matches!(e, RoomEvent::ParticipantRemoved { participant, .. } if participant.participant_id == b.participant_id)).await;
}

/// A 6 MiB stream to a reader that takes its time: the bytes arrive identical and in order,
/// and the writer never has more than the reader's window outstanding.
#[tokio::test]
async fn a_stream_is_paced_by_its_slow_reader() {
    let server = TestServer::start().await;
    let ada = client(&server, "ada", "human").await;
    let bob = client(&server, "bob", "agent").await;
    let mut create = herald_proto::frames::CreateChannel { name: Some("pipe".into()), ..Default::default() };
    create.members = vec!["bob".into()];
    ada.channels().create_with(create).await.unwrap();
    let (ra, rb) = (ada.room("pipe"), bob.room("pipe"));
    let mut eb = rb.events();
    ra.enter(Map::new()).await.unwrap();
    let b = rb.enter(Map::new()).await.unwrap();
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect();
    const WINDOW: u64 = 256 * 1024;
    let reader = tokio::spawn(async move {
        let (req, _) = next_where(&mut eb, |e| matches!(e, RoomEvent::StreamRequest { .. })).await;
        let RoomEvent::StreamRequest { stream_id, header, .. } = req else { unreachable!() };
        assert_eq!(header["name"], "data.bin");
        let mut stream = rb.accept(&stream_id, Some(WINDOW)).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = within(stream.next()).await {
            got.extend_from_slice(&chunk.unwrap());
            // A slow consumer: yield to let the writer run into the credit wall.
            tokio::task::yield_now().await;
        }
        got
    });
    let mut writer = ra.create_stream(&b.participant_id, json!({"name": "data.bin"})).await.unwrap();
    for piece in data.chunks(100_000) {
        assert!(writer.credit() <= WINDOW, "the writer never holds more credit than the window");
        within(writer.write(piece)).await.unwrap();
    }
    writer.close().await.unwrap();
    let got = within(reader).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stream arrives byte for byte");
}
