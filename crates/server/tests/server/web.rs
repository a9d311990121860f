//! The embedded chat app at `/` and `--dev`'s token minting, over real sockets.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::json;

async fn get(url: String) -> reqwest::Response {
    within("GET", reqwest::get(url)).await.unwrap()
}

#[tokio::test]
async fn the_app_is_served_at_root_with_its_assets_and_api_routes_are_untouched() {
    let server = TestServer::start().await;
    let index = get(format!("{}/", server.url())).await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    let html = index.text().await.unwrap();
    assert!(html.contains("<div id=\"app\">") && html.contains("/assets/app.js"), "{html}");
    let js = get(format!("{}/assets/app.js", server.url())).await;
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("/v1/ws"), "the bundle carries the SDK");
    let css = get(format!("{}/assets/app.css", server.url())).await;
    assert_eq!(css.status(), 200);
    // The E2EE code and herald-crypto's WebAssembly, fetched by the app only when encryption is
    // first used: served with the type streaming compilation needs, and revalidated by ETag.
    let e2ee = get(format!("{}/assets/e2ee.js", server.url())).await;
    assert_eq!(e2ee.status(), 200);
    assert!(
        e2ee.text().await.unwrap().contains("herald_crypto.wasm"),
        "e2ee.js loads the wasm by its served name"
    );
    let wasm = get(format!("{}/assets/herald_crypto.wasm", server.url())).await;
    assert_eq!(wasm.status(), 200);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    assert_eq!(wasm.headers()["cache-control"], "no-cache");
    let etag = wasm.headers()["etag"].clone();
    assert_eq!(&wasm.bytes().await.unwrap()[..4], b"\0asm", "a WebAssembly module");
    let http = reqwest::Client::new();
    let again = within(
        "revalidate",
        http.get(format!("{}/assets/herald_crypto.wasm", server.url()))
            .header("if-none-match", etag.clone())
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let changed = within(
        "stale",
        http.get(format!("{}/assets/herald_crypto.wasm", server.url()))
            .header("if-none-match", "\"other\"")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(changed.status(), 200);
    // Unknown paths still answer the protocol's 404, /healthz still plain `ok`.
    Rest::user(&server, "ada").get("/assets/nope.js").await.assert_error(404, "not_found");
    assert_eq!(get(format!("{}/healthz", server.url())).await.text().await.unwrap(), "ok");
    // Without --dev there is no token minting.
    let http = reqwest::Client::new();
    let r = within("dev", http.post(format!("{}/dev/token?sub=ada", server.url())).send()).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(get(format!("{}/dev/status", server.url())).await.status(), 404);
}

#[tokio::test]
async fn no_web_leaves_the_app_out() {
    let server = TestServer::start_with(|c| c.no_web = true).await;
    Rest::user(&server, "ada").get("/").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn dev_mints_tokens_that_connect_and_refuses_bad_ids() {
    let server = TestServer::start_with(|c| c.dev = true).await;
    let http = reqwest::Client::new();
    assert_eq!(get(format!("{}/dev/status", server.url())).await.status(), 200);
    let r = within("dev token", http.post(format!("{}/dev/token?sub=ada&name=Ada", server.url())).send())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let mut ws = Ws::connect(&server, &token).await;
    let ok = ws.ok(json!({"op": "channel.create", "name": "dev-made"})).await;
    assert_eq!(ok["channel"]["created_by"], "ada");

    let bad =
        within("bad", http.post(format!("{}/dev/token?sub=bad%20id", server.url())).send()).await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_name");
    let missing = within("missing", http.post(format!("{}/dev/token", server.url())).send()).await.unwrap();
    assert_eq!(missing.status(), 400);
    // GET is not how a token is minted.
    let get_token = get(format!("{}/dev/token?sub=ada", server.url())).await;
    assert_eq!(get_token.status(), 405);
}
