//! §2: tokens on `connect`, on the upgrade header, and on REST.

use crate::common::*;
use herald_server::auth::{Claims, mint_hs256, now_secs};
use herald_testing::TestServer;
use serde_json::json;

fn claims(sub: &str, app: Option<&str>) -> Claims {
    Claims {
        sub: sub.into(),
        name: None,
        kind: None,
        exp: now_secs() + 3600,
        iat: None,
        app: app.map(str::to_owned),
        grants: None,
    }
}

/// A first frame that must be refused: an `unauthorized` reply (echoing `id` when it has
/// one), then close code 4401.
async fn check_refused(server: &TestServer, first: &str, id: serde_json::Value) {
    let mut ws = Ws::open(server).await;
    ws.send_text(first).await;
    let code = ws.closed_with().await;
    let replies = ws.take_replies();
    assert_eq!(replies.len(), 1, "{first}: replies {replies:?}");
    assert_eq!(replies[0]["error"]["code"], "unauthorized", "{first}: {:?}", replies[0]);
    assert_eq!(replies[0]["id"], id, "{first}");
    assert_eq!(code, Some(4401), "{first}");
}

#[tokio::test]
async fn connect_with_a_valid_token_returns_conn_id_and_user() {
    let server = TestServer::start().await;
    let ws = Ws::connect(&server, &server.token("ada")).await;
    assert!(!ws.conn_id().is_empty(), "{}", ws.hello);
    assert_eq!(ws.hello["user"]["id"], "ada");
    assert_eq!(ws.hello["user"]["name"], "ada (test)");
    assert_eq!(ws.hello["user"]["kind"], "human");
}

#[tokio::test]
async fn bad_tokens_and_bad_first_frames_get_unauthorized_then_4401() {
    let server = TestServer::start().await;
    let expired = server.token_with("ada", None, -3600);
    let forged = mint_hs256(b"not the server secret, not at all", &claims("ada", None)).unwrap();
    let cases = [
        (json!({"id": 1, "op": "connect", "token": expired}).to_string(), json!(1)),
        (json!({"id": 2, "op": "connect", "token": forged}).to_string(), json!(2)),
        (json!({"id": 3, "op": "connect", "token": ""}).to_string(), json!(3)),
        (json!({"id": 4, "op": "connect"}).to_string(), json!(4)),
        (json!({"id": 5, "op": "connect", "token": "a.b.c"}).to_string(), json!(5)),
        (json!({"id": 6, "op": "ping"}).to_string(), json!(6)),
        (json!({"id": 7, "op": "message.send", "channel": "x", "content": "hi"}).to_string(), json!(7)),
        ("not json at all".to_owned(), json!(null)),
    ];
    for (first, id) in cases {
        check_refused(&server, &first, id).await;
    }
}

#[tokio::test]
async fn binary_first_frame_is_refused_with_4401() {
    let server = TestServer::start().await;
    let mut ws = Ws::open(&server).await;
    ws.send_binary(vec![0, 0, 0, 2, b'{', b'}']).await;
    assert_eq!(ws.closed_with().await, Some(4401));
    assert_eq!(ws.take_replies()[0]["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn token_in_the_upgrade_header_with_empty_connect_token_works() {
    let server = TestServer::start().await;
    let mut ws = Ws::open_with_header(&server, Some(&server.token("ada"))).await;
    let ok = ws.ok(json!({"op": "connect", "token": ""})).await;
    assert_eq!(ok["user"]["id"], "ada");
    ws.ok(json!({"op": "ping"})).await;
    // A bad header token is still refused.
    let mut ws = Ws::open_with_header(&server, Some("garbage")).await;
    ws.send_text(json!({"id": 1, "op": "connect", "token": ""}).to_string()).await;
    assert_eq!(ws.closed_with().await, Some(4401));
}

#[tokio::test]
async fn rest_without_or_with_a_bad_token_is_401() {
    let server = TestServer::start().await;
    let expired = server.token_with("ada", None, -3600);
    let forged = mint_hs256(b"not the server secret, not at all", &claims("ada", None)).unwrap();
    for token in [None, Some("garbage".to_owned()), Some(expired), Some(forged)] {
        let rest = Rest::new(&server, token.clone());
        for a in [
            rest.get("/v1/channels").await,
            rest.post("/v1/channels", json!({"name": "x1"})).await,
            rest.post("/v1/publish", json!({"subject": "s", "data": 1})).await,
        ] {
            a.assert_error(401, "unauthorized");
        }
    }
    assert_eq!(Rest::user(&server, "ada").get("/v1/channels").await.status, 200);
}
