//! The chat app, embedded: `web/dist` (built by Vite with stable file names and committed, so
//! building the server needs no Node) served at `/`, and with `--dev` the token minting the
//! app's "sign in as" uses. None of these routes is under `/v1`: the API, its OpenAPI document,
//! `/healthz` and `/metrics` are untouched. `--no-web` leaves the app out.

use crate::AppState;
use crate::auth::{Claims, mint_hs256, now_secs, principal};
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_proto::ErrorCode;
use serde::Deserialize;

const INDEX_HTML: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/index.html"));
const APP_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/app.js"));
const APP_CSS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/app.css"));

/// Lifetime of a token minted by `/dev/token`.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // File names are stable (no content hash), so the browser must revalidate.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        bytes,
    )
        .into_response()
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `GET /`, `/assets/app.js`, `/assets/app.css`.
pub fn app_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
}

#[derive(Debug, Deserialize)]
struct DevTokenQuery {
    sub: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /dev/token?sub=<user>[&name=<display name>]` → `{"token": "<jwt>"}` (only with `--dev`).
async fn dev_token(
    State(state): State<AppState>,
    query: Result<Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::new(ErrorCode::BadRequest, "give ?sub=<user id>"))?;
    let secret = state.dev_secret().ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such route"))?;
    let name = q.name.filter(|n| !n.trim().is_empty() && n.chars().count() <= 128);
    let claims = Claims {
        sub: q.sub,
        name,
        kind: None,
        exp: now_secs() + DEV_TOKEN_TTL_SECS,
        iat: Some(now_secs()),
        app: None,
        grants: None,
    };
    // Checked as the server checks every token, so a bad id fails here with its reason.
    principal(claims.clone()).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))?;
    let token =
        mint_hs256(secret, &claims).map_err(|_| ApiError::new(ErrorCode::Internal, "cannot mint a token"))?;
    Ok(axum::Json(serde_json::json!({ "token": token })).into_response())
}

async fn dev_status() -> Response {
    axum::Json(serde_json::json!({ "dev": true })).into_response()
}

/// `GET /dev/status` and `POST /dev/token`: only mounted with `--dev`.
pub fn dev_routes() -> Router<AppState> {
    Router::new().route("/dev/status", get(dev_status)).route("/dev/token", post(dev_token))
}
