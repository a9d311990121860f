//! REST calls (PROTOCOL.md §6) with `Authorization: Bearer`: log pages and blobs, which do
//! not travel over the WebSocket.

use crate::error::ClientError;
use crate::token::CurrentToken;
use herald_proto::frames::LogPage;
use herald_proto::{ChainError, ChainVerifier, ErrorBody, ErrorCode, ErrorDetail, Hash32};
use serde::{Deserialize, Serialize};

/// Answer of `PUT /v1/channels/{id}/blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lowercase hex BLAKE3 of the bytes.
    pub blob_id: String,
    pub size: u64,
}

/// The base URL REST calls go to: the node the WebSocket is connected to (or will try next),
/// so that after a move to another node ([`crate::ClientConfig::fallback_urls`]) REST follows.
#[derive(Debug, Clone)]
pub(crate) struct CurrentBase(std::sync::Arc<std::sync::RwLock<String>>);

impl CurrentBase {
    pub(crate) fn new(base: String) -> CurrentBase {
        CurrentBase(std::sync::Arc::new(std::sync::RwLock::new(base)))
    }

    pub(crate) fn get(&self) -> String {
        match self.0.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, base: String) {
        match self.0.write() {
            Ok(mut b) => *b = base,
            Err(poisoned) => *poisoned.into_inner() = base,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
    base: CurrentBase,
    /// The newest token: the socket task replaces it when it refreshes.
    token: CurrentToken,
}

fn io(e: reqwest::Error) -> ClientError {
    match crate::tls::tls_failure(&e) {
        Some(tls) => ClientError::Tls(tls),
        None => ClientError::Io(e.to_string()),
    }
}

/// Path segments are ids or names (`[a-z0-9_-]`, UUIDs, hex); anything else is escaped so a
/// strange value cannot change the path.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Rest {
    pub(crate) fn new(http: reqwest::Client, base: CurrentBase, token: CurrentToken) -> Rest {
        Rest { http, base, token }
    }

    /// REST calls to `url` without a WebSocket (registering a device before the `connect`
    /// that declares it), with the TLS roots of `config`.
    pub(crate) fn standalone(
        url: &str,
        token: &str,
        config: &crate::ClientConfig,
    ) -> Result<Rest, ClientError> {
        let endpoint = crate::connection::Endpoint::parse(url)?;
        let tls = crate::tls::client_config(&config.root_certificates)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| ClientError::Tls(format!("cannot build the HTTP client: {e}")))?;
        Ok(Rest::new(http, CurrentBase::new(endpoint.http), CurrentToken::new(token.to_owned())))
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.map_err(io)?;
        let detail = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => b.error,
            Err(_) => ErrorDetail {
                code: match status.as_u16() {
                    400 => ErrorCode::BadRequest,
                    401 => ErrorCode::Unauthorized,
                    403 => ErrorCode::Forbidden,
                    404 => ErrorCode::NotFound,
                    413 => ErrorCode::PayloadTooLarge,
                    429 => ErrorCode::RateLimited,
                    _ => ErrorCode::Internal,
                },
                message: format!("http status {status}"),
                retry_after_ms: None,
            },
        };
        Err(ClientError::Server(detail))
    }

    pub(crate) async fn log(&self, channel: &str, after: u64, limit: u32) -> Result<LogPage, ClientError> {
        let url =
            format!("{}/v1/channels/{}/log?after={after}&limit={limit}", self.base.get(), segment(channel));
        let resp = self.http.get(url).bearer_auth(self.token.get()).send().await.map_err(io)?;
        let body = Self::check(resp).await?.bytes().await.map_err(io)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("unreadable log page: {e}")))
    }

    /// `GET /v1/channels/{id_or_name}`: the channel (members only), without joining it.
    pub(crate) async fn channel(&self, channel: &str) -> Result<herald_proto::model::Channel, ClientError> {
        #[derive(serde::Deserialize)]
        struct Info {
            channel: herald_proto::model::Channel,
        }
        let url = format!("{}/v1/channels/{}", self.base.get(), segment(channel));
        let resp = self.http.get(url).bearer_auth(self.token.get()).send().await.map_err(io)?;
        let body = Self::check(resp).await?.bytes().await.map_err(io)?;
        let info: Info = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("unreadable channel answer: {e}")))?;
        Ok(info.channel)
    }

    pub(crate) async fn put_blob(&self, channel: &str, bytes: Vec<u8>) -> Result<BlobRef, ClientError> {
        self.upload_blob(channel, None, bytes).await
    }

    /// `PUT /v1/channels/{id}/blobs[?shard=<i>]`, the one upload of [`Rest::put_blob`] and
    /// [`Rest::put_shard`].
    async fn upload_blob(
        &self,
        channel: &str,
        shard: Option<usize>,
        bytes: Vec<u8>,
    ) -> Result<BlobRef, ClientError> {
        let mut url = format!("{}/v1/channels/{}/blobs", self.base.get(), segment(channel));
        if let Some(shard) = shard {
            url.push_str(&format!("?shard={shard}"));
        }
        let resp = self
            .http
            .put(url)
            .bearer_auth(self.token.get())
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(io)?;
        let body = Self::check(resp).await?.bytes().await.map_err(io)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("unreadable blob answer: {e}")))
    }

    /// A JSON call to `path` (under the base URL, `/v1/...`, segments already escaped with
    /// [`segment`]) for the E2EE routes of PROTOCOL.md §7. An empty answer (`204`) is `null`.
    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base.get());
        let mut req = self.http.request(method, url).bearer_auth(self.token.get());
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(io)?;
        let body = Self::check(resp).await?.bytes().await.map_err(io)?;
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("unreadable answer of {path}: {e}")))
    }

    /// `PUT /v1/channels/{id}/blobs?shard=<i>`: one shard of an erasure-coded file; the
    /// server may place shard `i` in its blob directory `i mod n` (PROTOCOL.md §7).
    pub(crate) async fn put_shard(
        &self,
        channel: &str,
        shard: usize,
        bytes: Vec<u8>,
    ) -> Result<BlobRef, ClientError> {
        self.upload_blob(channel, Some(shard), bytes).await
    }

    /// `POST /v1/users/{user}/disconnect`.
    pub(crate) async fn disconnect_user(&self, user: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/users/{}/disconnect", self.base.get(), segment(user));
        let resp = self.http.post(url).bearer_auth(self.token.get()).send().await.map_err(io)?;
        Self::check(resp).await.map(drop)
    }

    pub(crate) async fn get_blob(&self, channel: &str, blob_id: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/v1/channels/{}/blobs/{}", self.base.get(), segment(channel), segment(blob_id));
        let resp = self.http.get(url).bearer_auth(self.token.get()).send().await.map_err(io)?;
        let body = Self::check(resp).await?.bytes().await.map_err(io)?;
        Ok(body.to_vec())
    }
}

/// Verifies a log page fetched with `after`: entries must start at `after + 1`, be gapless
/// and each link to the previous one. `known` is the client's verified head of that channel,
/// if any: the page must link to it when it starts right after it, and agree with it when
/// the page contains it. Entry 1 must carry the zero `prev_hash`.
pub fn verify_log_page(
    channel: &str,
    after: u64,
    page: &LogPage,
    known: Option<(u64, Hash32)>,
) -> Result<(), ChainError> {
    let mut verifier = ChainVerifier::new();
    if let Some((seq, hash)) = known
        && seq == after
    {
        verifier.set_head(channel, seq, hash);
    }
    for (i, entry) in page.entries.iter().enumerate() {
        let expected = after + 1 + i as u64;
        if entry.seq != expected {
            return Err(ChainError::Gap { channel: channel.to_owned(), expected, got: entry.seq });
        }
        let entry_ref = entry.as_entry_ref(channel).ok_or_else(|| ChainError::Malformed {
            channel: channel.to_owned(),
            seq: entry.seq,
            field: "ts",
        })?;
        verifier.check(&entry_ref)?;
        if let Some((seq, hash)) = known
            && seq == entry.seq
            && verifier.head(channel).map(|(_, h)| h) != Some(hash)
        {
            return Err(ChainError::HashMismatch { channel: channel.to_owned(), seq });
        }
    }
    Ok(())
}
