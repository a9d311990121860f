//! §6 blobs: content-addressed, members only, size-limited.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::json;

#[tokio::test]
async fn blobs_round_trip_for_members_only() {
    let server = TestServer::start_with(|c| {
        c.max_blob_bytes = 64 * 1024;
        c.max_frame_bytes = 4096;
    })
    .await;
    let ada = Rest::user(&server, "ada");
    let eve = Rest::user(&server, "eve");
    let id = ada.post("/v1/channels", json!({"name": "files"})).await.body["channel"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bigger than a frame, smaller than a blob: the blob limit applies.
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let a = ada.put_bytes(&format!("/v1/channels/{id}/blobs"), bytes.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let blob_id = blake3::hash(&bytes).to_hex().to_string();
    assert_eq!(a.body["blob_id"], blob_id.as_str());
    assert_eq!(a.body["size"], 10_000);
    let g = ada.get(&format!("/v1/channels/{id}/blobs/{blob_id}")).await;
    assert_eq!((g.status, g.bytes == bytes), (200, true));
    let g = ada.get(&format!("/v1/channels/files/blobs/{blob_id}")).await;
    assert_eq!(g.status, 200, "by name too");

    eve.get(&format!("/v1/channels/{id}/blobs/{blob_id}")).await.assert_error(403, "forbidden");
    eve.put_bytes(&format!("/v1/channels/{id}/blobs"), vec![1, 2, 3]).await.assert_error(403, "forbidden");
    ada.put_bytes(&format!("/v1/channels/{id}/blobs"), vec![0; 64 * 1024 + 1])
        .await
        .assert_error(413, "payload_too_large");
    ada.get(&format!("/v1/channels/{id}/blobs/not-a-blob-id")).await.assert_error(400, "invalid_name");
    ada.get(&format!("/v1/channels/{id}/blobs/{}", "A".repeat(64))).await.assert_error(400, "invalid_name");
    let missing = blake3::hash(b"never stored").to_hex().to_string();
    ada.get(&format!("/v1/channels/{id}/blobs/{missing}")).await.assert_error(404, "not_found");
    Rest::new(&server, None)
        .get(&format!("/v1/channels/{id}/blobs/{blob_id}"))
        .await
        .assert_error(401, "unauthorized");
    let empty = ada.put_bytes(&format!("/v1/channels/{id}/blobs"), Vec::new()).await;
    assert_eq!((empty.status, empty.body["size"].as_u64()), (201, Some(0)));
}

/// Regression: a `server` token skipped every check of `put_blob`, so it could write blobs
/// under a channel id that did not exist, or that belonged to another app (tenant).
#[tokio::test]
async fn server_grant_put_blob_needs_a_channel_of_its_own_app() {
    let server = TestServer::start().await;
    let ada = Rest::user(&server, "ada");
    let id = ada.post("/v1/channels", json!({"name": "tenant-files"})).await.body["channel"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = |app: Option<&str>| herald_server::auth::Claims {
        sub: "backend".into(),
        name: None,
        kind: None,
        exp: herald_server::auth::now_secs() + 3600,
        iat: None,
        app: app.map(str::to_owned),
        grants: Some(vec!["server".into()]),
    };
    let same_app = Rest::new(&server, Some(server.token_for(&claims(None))));
    let other_app = Rest::new(&server, Some(server.token_for(&claims(Some("other-tenant")))));

    other_app
        .put_bytes(&format!("/v1/channels/{id}/blobs"), vec![1, 2, 3])
        .await
        .assert_error(404, "channel_not_found");
    let nowhere = "01900000-0000-7000-8000-000000000000";
    same_app
        .put_bytes(&format!("/v1/channels/{nowhere}/blobs"), vec![1, 2, 3])
        .await
        .assert_error(404, "channel_not_found");
    // Within its own app, a server token may write without being a member.
    let a = same_app.put_bytes(&format!("/v1/channels/{id}/blobs"), vec![1, 2, 3]).await;
    assert_eq!(a.status, 201, "{}", a.body);
}
