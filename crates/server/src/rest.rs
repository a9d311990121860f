//! The REST routes of PROTOCOL.md §6, and the operational ones (`/healthz`, `/metrics`,
//! `/v1/ws`, `/v1/openapi.json`). Each handler authenticates, parses, and hands the request to
//! the engine: REST and WebSocket share one code path (`Engine::execute`).
//!
//! Every handler carries its `#[utoipa::path]`: the OpenAPI document (`crate::openapi`) is
//! generated from these annotations and from the types the handlers take and return, and the
//! router is built from the same list (`crate::api_routes`), so the two cannot drift apart.
//! The error statuses every authenticated route shares (401, 429, 500) are added to each
//! operation in `crate::openapi::finish`; the ones listed here are the route's own.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_engine::{OkReply, Principal};
use herald_proto::frames::{
    BlobStored, ChannelInfo, ChannelListOk, ChannelOk, CreateChannel, DirectoryOk, EmptyOk, HistoryPage,
    HistoryQuery, LogPage, MessageOk, Request, SendMessage,
};
use herald_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};

/// The caller, from `Authorization: Bearer <jwt>`, verified on every request, then counted
/// against the caller's REST rate limit (`--rest-rate-per-sec`).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token =
            header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
        let principal = state.verifier().verify(token)?;
        // Before anything that may touch the store, so a caller over its limit costs nothing.
        if let Err(retry_after_ms) = state.rest_limiter().check(&principal.app, &principal.user.id) {
            state.metrics().gateway.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::rate_limited(retry_after_ms));
        }
        state.engine().note_user(&principal).await?;
        Ok(Auth(principal))
    }
}

/// A path extractor whose rejection (a segment that is not UTF-8 once percent-decoded, say)
/// is a `bad_request` in the protocol's error shape, not axum's plain-text answer.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}

/// `{channel}`: a channel id or name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// A channel id (UUID) or name (2-64 characters of a-z 0-9 _ -).
    #[param(
        pattern = r"^([a-z0-9_-]{2,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    pub channel: String,
}

/// `{channel}/members/{user}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// A channel id (UUID) or name (2-64 characters of a-z 0-9 _ -).
    #[param(
        pattern = r"^([a-z0-9_-]{2,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    pub channel: String,
    /// A user id: 1-128 characters of A-Z a-z 0-9 _ . @ : -
    #[param(pattern = r"^[A-Za-z0-9_.@:-]{1,128}$")]
    pub user: String,
}

/// `{channel}/messages/{message_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessagePath {
    /// A channel id (UUID) or name (2-64 characters of a-z 0-9 _ -).
    #[param(
        pattern = r"^([a-z0-9_-]{2,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    pub channel: String,
    /// A message id (UUID).
    #[param(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub message_id: String,
}

/// `{channel}/blobs/{blob_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BlobPath {
    /// A channel id (UUID) or name (2-64 characters of a-z 0-9 _ -).
    #[param(
        pattern = r"^([a-z0-9_-]{2,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    pub channel: String,
    /// A blob id: lowercase hex BLAKE3 of the bytes.
    #[param(pattern = r"^[0-9a-f]{64}$")]
    pub blob_id: String,
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
    // serde reads a struct from a JSON array too (`[null, null]` as the fields in order); a
    // body that is not an object is a client bug to report, not a request to guess at.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::new(ErrorCode::BadRequest, "the request body must be a JSON object"));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body is over the configured limit")
    } else {
        ApiError::new(ErrorCode::BadRequest, e.body_text())
    }
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))
}

pub(crate) async fn run(state: &AppState, who: &Principal, req: Request) -> Result<OkReply, ApiError> {
    Ok(state.engine().execute(who, None, req).await?)
}

/// The engine answers every op with an `OkReply`; each route knows which variant its op gives,
/// and says so in its return type. Another variant is a bug in the engine, so `internal`.
macro_rules! expect_reply {
    ($reply:expr, $variant:path) => {
        match $reply {
            $variant(inner) => Ok(inner),
            other => {
                tracing::error!(?other, "engine answered with an unexpected reply");
                Err(ApiError::new(ErrorCode::Internal, "internal error"))
            }
        }
    };
}

/// `POST /v1/channels`: `channel.create`.
#[utoipa::path(
    post, path = "/v1/channels", tag = "channels",
    request_body = CreateChannel,
    responses(
        (status = 201, description = "The new channel, or the caller's own channel of that name (a second create is a join)", body = ChannelOk),
        (status = 400, description = "`bad_request` (malformed body) or `invalid_name` (name, member id)", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token lacks `channels:create`", body = ErrorBody),
        (status = 409, description = "`name_taken`: another user registered that name", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn create_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChannelOk>), ApiError> {
    let c: CreateChannel = parse_json(body)?;
    let ok = expect_reply!(run(&st, &who, Request::ChannelCreate(c)).await?, OkReply::Channel)?;
    Ok((StatusCode::CREATED, Json(ok)))
}

/// `GET /v1/channels`: `channel.list`, the caller's channels.
#[utoipa::path(
    get, path = "/v1/channels", tag = "channels",
    responses((status = 200, description = "The channels the caller is a member of", body = ChannelListOk)),
)]
pub async fn list_channels(
    State(st): State<AppState>,
    Auth(who): Auth,
) -> Result<Json<ChannelListOk>, ApiError> {
    Ok(Json(expect_reply!(run(&st, &who, Request::ChannelList {}).await?, OkReply::ChannelList)?))
}

/// `GET /v1/channels/directory`: `channel.directory`.
#[utoipa::path(
    get, path = "/v1/channels/directory", tag = "channels",
    responses((status = 200, description = "Every named channel of the app the caller may join", body = DirectoryOk)),
)]
pub async fn directory(State(st): State<AppState>, Auth(who): Auth) -> Result<Json<DirectoryOk>, ApiError> {
    Ok(Json(expect_reply!(run(&st, &who, Request::ChannelDirectory {}).await?, OkReply::Directory)?))
}

/// `GET /v1/channels/{channel}`: the channel and its members.
#[utoipa::path(
    get, path = "/v1/channels/{channel}", tag = "channels",
    params(ChannelPath),
    responses(
        (status = 200, description = "The channel and its members", body = ChannelInfo),
        (status = 400, description = "`invalid_name`: not a channel id or name", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a member (nor `channels:admin` / `server`)", body = ErrorBody),
        (status = 404, description = "`channel_not_found` (also for a channel of another app)", body = ErrorBody),
    ),
)]
pub async fn get_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
) -> Result<Json<ChannelInfo>, ApiError> {
    let (channel, members) = st.engine().channel_info(&who, &p.channel).await?;
    Ok(Json(ChannelInfo { channel, members }))
}

/// Body of `POST /v1/channels/{channel}/join`, needed only for a `private-` channel (§9).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The app backend's signature: lowercase hex HMAC-SHA256(app secret, `conn_id:channel`).
    #[serde(default)]
    auth: Option<String>,
    /// The WebSocket connection the signature was made for: one of the caller's own open
    /// connections on this node.
    #[serde(default)]
    conn_id: Option<String>,
}

/// `POST /v1/channels/{channel}/join`: `channel.join`; for a `private-` channel with
/// `{auth, conn_id}`.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/join", tag = "channels",
    params(ChannelPath),
    request_body(content = Option<JoinBody>, description = "Only for a private channel"),
    responses(
        (status = 200, description = "The channel joined (or already a member of); a private channel is created by its first signed join", body = ChannelOk),
        (status = 400, description = "`invalid_name`: not a channel id or name; `bad_request`: malformed body", body = ErrorBody),
        (status = 403, description = "`forbidden`: an invite-only channel the caller was not added to; a private channel with a missing or wrong signature, or a `conn_id` that is not the caller's", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn join(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChannelOk>, ApiError> {
    let empty = body.as_ref().map(|b| b.iter().all(u8::is_ascii_whitespace)).unwrap_or(false);
    let b: JoinBody = if empty { JoinBody::default() } else { parse_json(body)? };
    let conn_id = match &b.conn_id {
        Some(id) => {
            let own = st.engine().hub().user_conns(&who.app, &who.user.id).iter().any(|c| c.conn_id == *id);
            if !own {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "conn_id is not one of your open connections on this node",
                ));
            }
            Some(id.as_str())
        }
        None => None,
    };
    let now = st.engine().now_ms();
    let channel = st.engine().join(&who, conn_id, &p.channel, b.auth.as_deref(), now).await?;
    Ok(Json(ChannelOk { channel }))
}

/// `DELETE /v1/channels/{channel}`: `channel.delete`.
#[utoipa::path(
    delete, path = "/v1/channels/{channel}", tag = "channels",
    params(ChannelPath),
    responses(
        (status = 204, description = "Deleted, with its log and blobs"),
        (status = 400, description = "`invalid_name`: not a channel id or name", body = ErrorBody),
        (status = 403, description = "`forbidden`: neither the creator nor `channels:admin`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn delete_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::ChannelDelete { channel: p.channel }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/channels/{channel}/members`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MemberBody {
    /// The user id to add.
    #[schema(value_type = herald_proto::UserId)]
    pub(crate) user: String,
}

/// `POST /v1/channels/{channel}/members`: `channel.add_member`.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/members", tag = "channels",
    params(ChannelPath),
    request_body = MemberBody,
    responses(
        (status = 204, description = "Added (or already a member)"),
        (status = 400, description = "`bad_request` (malformed body) or `invalid_name` (channel, user id)", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller is not a member (nor `channels:admin`)", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn add_member(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let b: MemberBody = parse_json(body)?;
    run(&st, &who, Request::ChannelAddMember { channel: p.channel, user: b.user }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/channels/{channel}/members/{user}`: `channel.remove_member`.
#[utoipa::path(
    delete, path = "/v1/channels/{channel}/members/{user}", tag = "channels",
    params(MemberPath),
    responses(
        (status = 204, description = "Removed (or was no member)"),
        (status = 400, description = "`invalid_name`: channel or user id", body = ErrorBody),
        (status = 403, description = "`forbidden`: not oneself, the creator nor `channels:admin`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn remove_member(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<MemberPath>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::ChannelRemoveMember { channel: p.channel, user: p.user }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/channels/{channel}/messages`: `message.send`.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/messages", tag = "messages",
    params(ChannelPath),
    request_body = SendMessage,
    responses(
        (status = 201, description = "The message, once durable (or the earlier one with the same `client_id`)", body = MessageOk),
        (status = 400, description = "`bad_request` (malformed body, `type`) or `invalid_name` (channel, `reply_to`, `client_id`)", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or `author` without the `server` grant", body = ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` (`reply_to`, a deleted `client_id`)", body = ErrorBody),
        (status = 409, description = "`stale_epoch`: an encrypted channel's `epoch` is not the head epoch (§7)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: content over `--max-content-bytes` or body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn send_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<MessageOk>), ApiError> {
    let message: SendMessage = parse_json(body)?;
    let ok = run(&st, &who, Request::MessageSend { channel: p.channel, message }).await?;
    Ok((StatusCode::CREATED, Json(expect_reply!(ok, OkReply::Message)?)))
}

/// `GET /v1/channels/{channel}/messages`: `history`.
#[utoipa::path(
    get, path = "/v1/channels/{channel}/messages", tag = "messages",
    params(ChannelPath, HistoryQuery),
    responses(
        (status = 200, description = "A page of messages: newest first without `after`, oldest first with it", body = HistoryPage),
        (status = 400, description = "`bad_request` (`limit` out of range, `before` with `after`, a bad time) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn history(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let query = query(q)?;
    let ok = run(&st, &who, Request::History { channel: p.channel, query }).await?;
    Ok(Json(expect_reply!(ok, OkReply::History)?))
}

/// Body of `PATCH /v1/channels/{channel}/messages/{message_id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditBody {
    /// The new content.
    content: String,
    /// Encrypted channels (§7): the head epoch the new content is sealed under.
    #[serde(default, deserialize_with = "herald_proto::e2ee::lenient_opt_u64")]
    epoch: Option<u64>,
}

/// `PATCH /v1/channels/{channel}/messages/{message_id}`: `message.edit`.
#[utoipa::path(
    patch, path = "/v1/channels/{channel}/messages/{message_id}", tag = "messages",
    params(MessagePath),
    request_body = EditBody,
    responses(
        (status = 200, description = "The message with its new content", body = MessageOk),
        (status = 400, description = "`bad_request` (malformed body) or `invalid_name` (channel, message id)", body = ErrorBody),
        (status = 403, description = "`not_author`, or `forbidden` (not a member)", body = ErrorBody),
        (status = 404, description = "`channel_not_found` or `not_found` (message)", body = ErrorBody),
        (status = 409, description = "`stale_epoch`: an encrypted channel's `epoch` is not the head epoch (§7)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: content over `--max-content-bytes` or body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn edit_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<MessagePath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageOk>, ApiError> {
    let b: EditBody = parse_json(body)?;
    let req = Request::MessageEdit {
        channel: p.channel,
        message_id: p.message_id,
        content: b.content,
        epoch: b.epoch,
    };
    Ok(Json(expect_reply!(run(&st, &who, req).await?, OkReply::Message)?))
}

/// `DELETE /v1/channels/{channel}/messages/{message_id}`: `message.delete`, a hard delete.
#[utoipa::path(
    delete, path = "/v1/channels/{channel}/messages/{message_id}", tag = "messages",
    params(MessagePath),
    responses(
        (status = 204, description = "Erased; the log keeps a tombstone"),
        (status = 400, description = "`invalid_name`: channel or message id", body = ErrorBody),
        (status = 403, description = "`not_author`, or `forbidden` (not a member)", body = ErrorBody),
        (status = 404, description = "`channel_not_found` or `not_found` (message)", body = ErrorBody),
    ),
)]
pub async fn delete_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<MessagePath>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::MessageDelete { channel: p.channel, message_id: p.message_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/channels/{channel}/log`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Entries with a `seq` above this one (0: from the first).
    #[serde(default)]
    after: u64,
    /// Page size, 1 to the server's `--history-page-max` (default 500); 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// `GET /v1/channels/{channel}/log`: raw log entries (§5), in `seq` order.
#[utoipa::path(
    get, path = "/v1/channels/{channel}/log", tag = "messages",
    params(ChannelPath, LogQuery),
    responses(
        (status = 200, description = "Raw entries after `after`, oldest first", body = LogPage),
        (status = 400, description = "`bad_request` (`limit` out of range) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn log(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let q = query(q)?;
    Ok(Json(st.engine().log(&who, &p.channel, q.after, q.limit).await?))
}

/// Body of `POST /v1/publish`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishBody {
    /// The subject to publish to.
    #[schema(value_type = herald_proto::Subject)]
    subject: String,
    /// Any JSON value; serialized, at most `--max-content-bytes`.
    data: serde_json::Value,
}

/// `POST /v1/publish`: `publish` to a subject's subscribers.
#[utoipa::path(
    post, path = "/v1/publish", tag = "subjects",
    request_body = PublishBody,
    responses(
        (status = 200, description = "Handed to every current subscriber", body = EmptyOk),
        (status = 400, description = "`bad_request` (malformed body) or `invalid_name` (subject)", body = ErrorBody),
        (status = 403, description = "`forbidden`: another user's `user:` inbox", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: `data` over `--max-content-bytes` or body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn publish(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmptyOk>, ApiError> {
    let b: PublishBody = parse_json(body)?;
    st.engine().publish(&who, &b.subject, b.data)?;
    Ok(Json(EmptyOk {}))
}

/// Query of `PUT /v1/channels/{channel}/blobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShardQuery {
    /// The index of an erasure-coded shard (§7): with several `--blob-dir`, shard i is written
    /// into directory i mod n, so the shards of one file land on distinct disks.
    #[param(minimum = 0, maximum = 65535)]
    shard: Option<u16>,
}

/// `PUT /v1/channels/{channel}/blobs`: stores raw bytes.
#[utoipa::path(
    put, path = "/v1/channels/{channel}/blobs", tag = "blobs",
    params(ChannelPath, ShardQuery),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "The raw bytes, at most `--max-blob-bytes` (none: an empty blob)"),
    responses(
        (status = 201, description = "Stored (storing the same bytes again is harmless)", body = BlobStored),
        (status = 400, description = "`invalid_name`: not a channel id or name; `bad_request`: a bad `shard`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `--max-blob-bytes`", body = ErrorBody),
    ),
)]
pub async fn put_blob(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    q: Result<Query<ShardQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BlobStored>), ApiError> {
    let q = query(q)?;
    let body = body.map_err(body_error)?;
    let (blob_id, size) = st.engine().put_blob_shard(&who, &p.channel, body.to_vec(), q.shard).await?;
    Ok((StatusCode::CREATED, Json(BlobStored { blob_id, size: size as u64 })))
}

/// `GET /v1/channels/{channel}/blobs/{blob_id}`: the raw bytes.
#[utoipa::path(
    get, path = "/v1/channels/{channel}/blobs/{blob_id}", tag = "blobs",
    params(BlobPath),
    responses(
        (status = 200, description = "The bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "`invalid_name`: channel or blob id", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`channel_not_found` or `not_found` (blob)", body = ErrorBody),
    ),
)]
pub async fn get_blob(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<BlobPath>,
) -> Result<Response, ApiError> {
    let bytes = st.engine().get_blob(&who, &p.channel, &p.blob_id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /healthz`: `200 ok` while the node can serve; `503` with the failing dependency
/// (`store: …`) otherwise, so a load balancer stops sending it traffic.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses(
        (status = 200, description = "The node can serve", body = String, content_type = "text/plain", example = "ok"),
        (status = 503, description = "The node cannot serve: `unavailable: <dependency>: <why>`", body = String, content_type = "text/plain"),
    ),
)]
pub async fn healthz(State(st): State<AppState>) -> Response {
    match st.engine().health().await {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {why}")).into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format (version 0.0.4)", body = String, content_type = "text/plain")),
)]
pub async fn metrics_text(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics().render())
}

/// `GET /v1/ws`: the WebSocket of PROTOCOL.md §4. Its frames are not HTTP, so this document
/// describes only the upgrade; the token travels in the first (`connect`) frame.
#[utoipa::path(
    get, path = "/v1/ws", tag = "operations", security(()),
    params(
        ("Upgrade" = String, Header, description = "`websocket`", pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$"),
        ("Connection" = String, Header, description = "Must include `upgrade`", pattern = "[Uu][Pp][Gg][Rr][Aa][Dd][Ee]"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`", pattern = "^13$"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes, base64"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; the first frame must be `connect`"),
        (status = 400, description = "`bad_request`: not a WebSocket upgrade request", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the caller's address has `--max-conns-per-addr` WebSockets open", body = ErrorBody),
    ),
)]
pub async fn ws_upgrade(
    state: State<AppState>,
    peer: crate::ws::PeerAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => crate::ws::upgrade(state, peer, headers, upgrade).await,
        Err(e) => ApiError::new(ErrorCode::BadRequest, e.body_text()).into_response(),
    }
}

/// `GET /v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of every HTTP route", body = Object, content_type = "application/json")),
)]
pub async fn openapi_json(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], st.openapi_json().clone())
}

/// Any path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// A known path with a method it does not serve (axum adds the `Allow` header).
pub async fn method_not_allowed() -> Response {
    let body = ErrorBody::new(ErrorCode::BadRequest, "method not allowed on this path");
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
