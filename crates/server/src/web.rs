//! The chat app, embedded: `web/dist` (built by Vite with stable file names and committed, so
//! building the server needs no Node) served at `/`, and with `--dev` the token minting the
//! app's "sign in as" uses. None of these routes is under `/v1`: the API, its OpenAPI document,
//! `/healthz` and `/metrics` are untouched. `--no-web` leaves the app out.
//!
//! Besides the page, its script and styles, the app has two files it fetches only when
//! end-to-end encryption is first used: `assets/e2ee.js` (the SDK's E2EE code) and
//! `assets/herald_crypto.wasm` (herald-crypto compiled to WebAssembly, 1.2 MB). Every asset
//! carries an `ETag` (a hash of its bytes), so a browser keeps its copy and revalidates it with
//! `If-None-Match` for a `304` without the body. The server holds no key and decrypts nothing:
//! the WebAssembly runs in the browser.

use crate::AppState;
use crate::auth::{Claims, mint_hs256, now_secs, principal};
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_proto::ErrorCode;
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

const INDEX_HTML: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/index.html"));
const APP_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/app.js"));
const APP_CSS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/app.css"));
const E2EE_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/e2ee.js"));
const CRYPTO_WASM: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dist/assets/herald_crypto.wasm"));

/// Lifetime of a token minted by `/dev/token`.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// One embedded file, with its strong validator.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(bytes: &'static [u8], content_type: &'static str) -> Self {
        Self { bytes, content_type, etag: OnceLock::new() }
    }

    /// `"<16 hex>"`: a hash of the bytes, computed on first use. The bytes are fixed in the
    /// binary, so it changes exactly when a rebuild changes the file.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.bytes.hash(&mut h);
            HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
    }

    fn respond(&'static self, headers: &HeaderMap) -> Response {
        let etag = self.etag().clone();
        let common = [
            // File names are stable (no content hash), so the browser must revalidate; the
            // ETag makes that a 304 without the body.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, etag.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == etag.to_str().unwrap_or("")
            });
        if fresh {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        (common, [(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type))], self.bytes)
            .into_response()
    }
}

static INDEX: Asset = Asset::new(INDEX_HTML, "text/html; charset=utf-8");
static APP_SCRIPT: Asset = Asset::new(APP_JS, "text/javascript; charset=utf-8");
static APP_STYLES: Asset = Asset::new(APP_CSS, "text/css; charset=utf-8");
static E2EE_SCRIPT: Asset = Asset::new(E2EE_JS, "text/javascript; charset=utf-8");
// `application/wasm` is what `WebAssembly.instantiateStreaming` requires.
static WASM: Asset = Asset::new(CRYPTO_WASM, "application/wasm");

async fn index(headers: HeaderMap) -> Response {
    INDEX.respond(&headers)
}

async fn app_js(headers: HeaderMap) -> Response {
    APP_SCRIPT.respond(&headers)
}

async fn app_css(headers: HeaderMap) -> Response {
    APP_STYLES.respond(&headers)
}

async fn e2ee_js(headers: HeaderMap) -> Response {
    E2EE_SCRIPT.respond(&headers)
}

async fn crypto_wasm(headers: HeaderMap) -> Response {
    WASM.respond(&headers)
}

/// `GET /`, `/assets/app.js`, `/assets/app.css`, `/assets/e2ee.js`, `/assets/herald_crypto.wasm`.
pub fn app_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/e2ee.js", get(e2ee_js))
        .route("/assets/herald_crypto.wasm", get(crypto_wasm))
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
