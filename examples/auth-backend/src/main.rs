//! An app backend's auth endpoint for Herald's private channels (PROTOCOL.md §9), in the shape
//! of Pusher's `/realtime/auth`: the browser, connected to Herald, posts its `conn_id` (as
//! `socket_id`) and the channel it wants; the backend applies its own rule and answers the
//! signature the client passes to `channel.join`.
//!
//! Run: `HERALD_APP_SECRET=$(herald secret show) cargo run -p herald-example-auth-backend`
//! (listens on 127.0.0.1:3000; `AUTH_LISTEN` changes it).

use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router, extract::State, routing::post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
struct AuthRequest {
    socket_id: String,
    channel_name: String,
}

#[derive(Serialize)]
struct AuthReply {
    auth: String,
}

/// The app's own rule. Here: the user your session layer put in `X-User` may join
/// `private-<user>-…` channels only. Replace with a lookup in your database.
fn may_join(user: &str, channel: &str) -> bool {
    channel
        .strip_prefix("private-")
        .and_then(|rest| rest.strip_prefix(user))
        .is_some_and(|r| r.starts_with('-'))
}

async fn auth(
    State(secret): State<Arc<String>>,
    headers: HeaderMap,
    Json(req): Json<AuthRequest>,
) -> Result<Json<AuthReply>, StatusCode> {
    let user = headers.get("x-user").and_then(|v| v.to_str().ok()).ok_or(StatusCode::UNAUTHORIZED)?;
    if !may_join(user, &req.channel_name) {
        return Err(StatusCode::FORBIDDEN);
    }
    let auth = herald_client::auth::sign_channel(&secret, &req.socket_id, &req.channel_name);
    Ok(Json(AuthReply { auth }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("HERALD_APP_SECRET")
        .map_err(|_| anyhow::anyhow!("set HERALD_APP_SECRET to the output of `herald secret show`"))?;
    let app =
        Router::new().route("/realtime/auth", post(auth)).with_state(Arc::new(secret.trim().to_owned()));
    let listen = std::env::var("AUTH_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("auth endpoint on http://{listen}/realtime/auth");
    axum::serve(listener, app).await?;
    Ok(())
}
