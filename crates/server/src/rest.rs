//! The REST routes of PROTOCOL.md §6. Each handler authenticates, parses, and hands the
//! request to the engine: REST and WebSocket share one code path (`Engine::execute`).

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_engine::{OkReply, Principal};
use herald_proto::ErrorCode;
use herald_proto::frames::{CreateChannel, HistoryQuery, Request, SendMessage};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The caller, from `Authorization: Bearer <jwt>`, verified on every request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token =
            header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("").trim();
        let principal = state.verifier().verify(token)?;
        state.engine().note_user(&principal).await?;
        Ok(Auth(principal))
    }
}

fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
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

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))
}

async fn run(state: &AppState, who: &Principal, req: Request) -> Result<OkReply, ApiError> {
    Ok(state.engine().execute(who, None, req).await?)
}

fn created(ok: OkReply) -> Response {
    (StatusCode::CREATED, Json(ok)).into_response()
}

pub async fn create_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c: CreateChannel = parse_json(body)?;
    Ok(created(run(&st, &who, Request::ChannelCreate(c)).await?))
}

pub async fn list_channels(State(st): State<AppState>, Auth(who): Auth) -> Result<Json<OkReply>, ApiError> {
    Ok(Json(run(&st, &who, Request::ChannelList {}).await?))
}

pub async fn directory(State(st): State<AppState>, Auth(who): Auth) -> Result<Json<OkReply>, ApiError> {
    Ok(Json(run(&st, &who, Request::ChannelDirectory {}).await?))
}

pub async fn get_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (channel, members) = st.engine().channel_info(&who, &channel).await?;
    Ok(Json(serde_json::json!({ "channel": channel, "members": members })))
}

pub async fn join(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
) -> Result<Json<OkReply>, ApiError> {
    Ok(Json(run(&st, &who, Request::ChannelJoin { channel }).await?))
}

pub async fn delete_channel(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::ChannelDelete { channel }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct MemberBody {
    user: String,
}

pub async fn add_member(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let b: MemberBody = parse_json(body)?;
    run(&st, &who, Request::ChannelAddMember { channel, user: b.user }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_member(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((channel, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::ChannelRemoveMember { channel, user }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn send_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let message: SendMessage = parse_json(body)?;
    Ok(created(run(&st, &who, Request::MessageSend { channel, message }).await?))
}

pub async fn history(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<OkReply>, ApiError> {
    let query = query(q)?;
    Ok(Json(run(&st, &who, Request::History { channel, query }).await?))
}

#[derive(Debug, Deserialize)]
pub struct EditBody {
    content: String,
}

pub async fn edit_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((channel, message_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OkReply>, ApiError> {
    let b: EditBody = parse_json(body)?;
    Ok(Json(run(&st, &who, Request::MessageEdit { channel, message_id, content: b.content }).await?))
}

pub async fn delete_message(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((channel, message_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    run(&st, &who, Request::MessageDelete { channel, message_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

pub async fn log(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<herald_proto::frames::LogPage>, ApiError> {
    let q = query(q)?;
    Ok(Json(st.engine().log(&who, &channel, q.after, q.limit).await?))
}

#[derive(Debug, Deserialize)]
pub struct PublishBody {
    subject: String,
    data: serde_json::Value,
}

pub async fn publish(
    State(st): State<AppState>,
    Auth(who): Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: PublishBody = parse_json(body)?;
    st.engine().publish(&who, &b.subject, b.data)?;
    Ok(Json(serde_json::json!({})))
}

pub async fn put_blob(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let (blob_id, size) = st.engine().put_blob(&who, &channel, body.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "blob_id": blob_id, "size": size }))).into_response())
}

pub async fn get_blob(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((channel, blob_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let bytes = st.engine().get_blob(&who, &channel, &blob_id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}
