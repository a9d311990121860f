//! The REST rate limit: a token bucket per token user (`--rest-rate-per-sec`,
//! `--rest-rate-burst`), answered with 429 `rate_limited`, `retry_after_ms` and `Retry-After`.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::json;

/// Calls `GET /v1/channels` as `token` until refused (at most `max` calls); returns how many
/// succeeded and the refusal.
async fn until_limited(server: &TestServer, token: &str, max: usize) -> (usize, reqwest::Response) {
    let http = reqwest::Client::new();
    for ok in 0..max {
        let resp =
            within("rest call", http.get(format!("{}/v1/channels", server.url())).bearer_auth(token).send())
                .await
                .unwrap();
        if resp.status() == 429 {
            return (ok, resp);
        }
        assert_eq!(resp.status(), 200);
    }
    panic!("{max} calls and never rate limited");
}

#[tokio::test]
async fn rest_calls_over_the_users_rate_get_429_with_retry_after() {
    // One call per second sustained, three at once: the fourth call within a second is over.
    let server = TestServer::start_with(|c| {
        c.rest_rate_per_sec = 1;
        c.rest_rate_burst = 3;
    })
    .await;
    let (ok, resp) = until_limited(&server, &server.token("ada"), 50).await;
    assert!(ok >= 3, "only {ok} calls before the limit; the burst is 3");
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert_eq!(retry_after, 1, "Retry-After is retry_after_ms in seconds, rounded up");
    let body: serde_json::Value = within("429 body", resp.json()).await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].is_string());
    let ms = body["error"]["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&ms), "retry_after_ms {ms}");

    // The bucket is the user's, whatever the token: a second token of ada is refused too...
    let again = Rest::new(&server, Some(server.token_with("ada", None, 600)));
    again.get("/v1/channels").await.assert_error(429, "rate_limited");
    // ...while another user has a bucket of their own.
    assert_eq!(Rest::user(&server, "bob").get("/v1/channels").await.status, 200);
    // Refused calls never reach the engine: the WebSocket of the same user is not limited by
    // REST (its bucket is per connection).
    let mut ws = Ws::connect(&server, &server.token("ada")).await;
    ws.ok(json!({"op": "channel.list"})).await;
    // A call without a valid token is refused as unauthorized, never as rate limited.
    Rest::new(&server, None).get("/v1/channels").await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn rest_rate_of_zero_disables_the_limit() {
    let server = TestServer::start_with(|c| {
        c.rest_rate_per_sec = 0;
        c.rest_rate_burst = 1;
    })
    .await;
    let rest = Rest::user(&server, "ada");
    for _ in 0..20 {
        assert_eq!(rest.get("/v1/channels").await.status, 200);
    }
}
