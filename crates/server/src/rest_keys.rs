//! The REST routes of end-to-end encryption (PROTOCOL.md §7): the key directory
//! (`/v1/keys/...`), the DM inbox (`/v1/dm/...`), and the commits and envelopes of encrypted
//! channels. Each handler authenticates, parses and hands over to the engine (`herald_engine::
//! e2ee`); bodies are opaque JSON the server stores and relays, never logs.

use crate::AppState;
use crate::error::ApiError;
use crate::rest::{Auth, ChannelPath, Params, parse_json, query};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use herald_proto::ErrorBody;
use herald_proto::e2ee::{
    ClaimOk, ClaimRequest, CommitList, CommitPosted, DeviceList, DeviceUploaded, DmAckBody, DmInbox,
    EnvelopeList, PostCommit, PostEnvelopes, UploadDevice,
};
use herald_proto::frames::EmptyOk;
use serde::Deserialize;
use utoipa::IntoParams;

/// `{device_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// A device id: 1-128 characters of A-Z a-z 0-9 _ . : -
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub device_id: String,
}

/// `{user}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// A user id: 1-128 characters of A-Z a-z 0-9 _ . @ : -
    #[param(pattern = r"^[A-Za-z0-9_.@:-]{1,128}$")]
    pub user: String,
}

/// `?device=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// One of the caller's devices: 1-128 characters of A-Z a-z 0-9 _ . : -
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub device: String,
}

/// `?after=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AfterQuery {
    /// Only commits with an epoch above this one (all when absent).
    pub after: Option<u64>,
}

/// `PUT /v1/keys/devices/{device_id}`: registers a device or adds keys to it.
#[utoipa::path(
    put, path = "/v1/keys/devices/{device_id}", tag = "keys",
    params(DevicePath),
    request_body = UploadDevice,
    responses(
        (status = 200, description = "Updated: new one-time keys added, the fallback key replaced", body = DeviceUploaded),
        (status = 201, description = "Registered", body = DeviceUploaded),
        (status = 400, description = "`bad_request` (a bundle without identity, a key without key_id) or `invalid_name` (device id)", body = ErrorBody),
        (status = 403, description = "`forbidden`: another user's or a revoked id, or another identity", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn put_device(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<DevicePath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<DeviceUploaded>), ApiError> {
    let b: UploadDevice = parse_json(body)?;
    let (created, ok) = st.engine().register_device(&who, &p.device_id, &b.bundle).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(ok)))
}

/// `DELETE /v1/keys/devices/{device_id}`: the owner revokes a device for good.
#[utoipa::path(
    delete, path = "/v1/keys/devices/{device_id}", tag = "keys",
    params(DevicePath),
    responses(
        (status = 204, description = "Revoked: its keys, inbox and envelopes are erased; the id cannot be registered again"),
        (status = 400, description = "`invalid_name`: device id", body = ErrorBody),
        (status = 403, description = "`forbidden`: another user's device", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown or already revoked", body = ErrorBody),
    ),
)]
pub async fn delete_device(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<DevicePath>,
) -> Result<StatusCode, ApiError> {
    st.engine().revoke_device(&who, &p.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/keys/users/{user}`: a user's devices.
#[utoipa::path(
    get, path = "/v1/keys/users/{user}", tag = "keys",
    params(UserPath),
    responses(
        (status = 200, description = "The user's devices, revoked ones omitted (none for an unknown user)", body = DeviceList),
        (status = 400, description = "`invalid_name`: user id", body = ErrorBody),
    ),
)]
pub async fn user_devices(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<UserPath>,
) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(st.engine().devices_of(&who, &p.user).await?))
}

/// `GET /v1/keys/keepers`: the devices registered with a keeper token.
#[utoipa::path(
    get, path = "/v1/keys/keepers", tag = "keys",
    responses((status = 200, description = "Keeper devices of the app", body = DeviceList)),
)]
pub async fn keepers(State(st): State<AppState>, Auth(who): Auth) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(st.engine().keepers(&who).await?))
}

/// `POST /v1/keys/claim`: one one-time key per device, each handed out once.
#[utoipa::path(
    post, path = "/v1/keys/claim", tag = "keys",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "A key per known device (the fallback key once the one-time keys ran out); unknown, revoked or mismatched devices are left out", body = ClaimOk),
        (status = 400, description = "`bad_request` (malformed body, over 1,000 devices) or `invalid_name`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn claim(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ClaimOk>, ApiError> {
    let b: ClaimRequest = parse_json(body)?;
    Ok(Json(st.engine().claim(&who, b.devices).await?))
}

/// `GET /v1/dm/inbox?device=`: the device's inbox, oldest first.
#[utoipa::path(
    get, path = "/v1/dm/inbox", tag = "keys",
    params(DeviceQuery),
    responses(
        (status = 200, description = "Every DM not yet acknowledged, oldest first", body = DmInbox),
        (status = 400, description = "`bad_request` (no device) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another user's device", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown or revoked device", body = ErrorBody),
    ),
)]
pub async fn dm_inbox(
    State(st): State<AppState>,
    Auth(who): Auth,
    q: Result<Query<DeviceQuery>, QueryRejection>,
) -> Result<Json<DmInbox>, ApiError> {
    let q = query(q)?;
    Ok(Json(st.engine().dm_inbox(&who, &q.device).await?))
}

/// `POST /v1/dm/ack`: erases entries of the device's inbox.
#[utoipa::path(
    post, path = "/v1/dm/ack", tag = "keys",
    request_body = DmAckBody,
    responses(
        (status = 200, description = "Erased (ids not in the inbox are ignored)", body = EmptyOk),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another user's device", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown or revoked device", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn dm_ack(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmptyOk>, ApiError> {
    let b: DmAckBody = parse_json(body)?;
    st.engine().dm_ack_rest(&who, &b.device, b.ids).await?;
    Ok(Json(EmptyOk {}))
}

/// `POST /v1/channels/{channel}/commits`: the next roster commit, compare-and-swap.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/commits", tag = "keys",
    params(ChannelPath),
    request_body = PostCommit,
    responses(
        (status = 201, description = "The new head epoch; a `key_rotated` entry was appended", body = CommitPosted),
        (status = 400, description = "`bad_request` (malformed body or hashes, a plain channel) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the creator, `channels:admin` or `keeper`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
        (status = 409, description = "`stale_epoch`: not the head epoch + 1 with the head's hash", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn post_commit(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommitPosted>), ApiError> {
    let b: PostCommit = parse_json(body)?;
    Ok((StatusCode::CREATED, Json(st.engine().post_commit(&who, &p.channel, b).await?)))
}

/// `GET /v1/channels/{channel}/commits[?after=]`: the roster commits in epoch order.
#[utoipa::path(
    get, path = "/v1/channels/{channel}/commits", tag = "keys",
    params(ChannelPath, AfterQuery),
    responses(
        (status = 200, description = "Commits after `after` (all without it), in epoch order", body = CommitList),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, keeper or admin", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn commits(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    q: Result<Query<AfterQuery>, QueryRejection>,
) -> Result<Json<CommitList>, ApiError> {
    let q = query(q)?;
    Ok(Json(st.engine().commits(&who, &p.channel, q.after).await?))
}

/// `POST /v1/channels/{channel}/envelopes`: envelopes for existing epochs.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/envelopes", tag = "keys",
    params(ChannelPath),
    request_body = PostEnvelopes,
    responses(
        (status = 201, description = "Stored (replacing one for the same epoch and device)", body = EmptyOk),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member or keeper", body = ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found` (an epoch without a commit)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over `--max-frame-bytes`", body = ErrorBody),
    ),
)]
pub async fn post_envelopes(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EmptyOk>), ApiError> {
    let b: PostEnvelopes = parse_json(body)?;
    st.engine().put_envelopes(&who, &p.channel, b.envelopes).await?;
    Ok((StatusCode::CREATED, Json(EmptyOk {})))
}

/// `GET /v1/channels/{channel}/envelopes?device=`: a device's envelopes in epoch order.
#[utoipa::path(
    get, path = "/v1/channels/{channel}/envelopes", tag = "keys",
    params(ChannelPath, DeviceQuery),
    responses(
        (status = 200, description = "The device's envelopes, in epoch order", body = EnvelopeList),
        (status = 400, description = "`bad_request` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the caller's device, or the caller neither a member nor a keeper", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn envelopes(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    q: Result<Query<DeviceQuery>, QueryRejection>,
) -> Result<Json<EnvelopeList>, ApiError> {
    let q = query(q)?;
    Ok(Json(st.engine().envelopes_for(&who, &p.channel, &q.device).await?))
}
