//! Moderation routes (docs/protocol.md §K): disconnecting a user, and `channel.kick`,
//! `channel.ban`, `channel.unban` over REST.

use crate::AppState;
use crate::error::ApiError;
use crate::rest::{Auth, ChannelPath, MemberBody, Params};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use herald_proto::ErrorBody;
use herald_proto::frames::Request;
use serde::Deserialize;
use utoipa::IntoParams;

/// `{user}`: a user id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// A user id (1-128 characters of A-Z a-z 0-9 _ . @ : -).
    pub user: String,
}

/// `POST /v1/users/{user}/disconnect`: closes every WebSocket of the user in the caller's app,
/// on every node, with close code 4403.
#[utoipa::path(
    post, path = "/v1/users/{user}/disconnect", tag = "moderation",
    params(UserPath),
    responses(
        (status = 204, description = "Every connection of the user is being closed (4403); none is fine too"),
        (status = 400, description = "`invalid_name`: not a user id", body = ErrorBody),
        (status = 403, description = "`forbidden`: neither an `admin` nor a `server` token", body = ErrorBody),
    ),
)]
pub async fn disconnect_user(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<UserPath>,
) -> Result<StatusCode, ApiError> {
    st.engine().disconnect_user(&who, &p.user)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/channels/{channel}/kick`: `channel.kick`.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/kick", tag = "moderation",
    params(ChannelPath),
    request_body = MemberBody,
    responses(
        (status = 204, description = "Removed (`member_left` with `by`); the user may join again"),
        (status = 400, description = "`bad_request` (malformed body) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the creator, `channels:admin` or `server`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`, or `not_found`: the user is not a member", body = ErrorBody),
    ),
)]
pub async fn kick(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let b: MemberBody = crate::rest::parse_json(body)?;
    crate::rest::run(&st, &who, Request::ChannelKick { channel: p.channel, user: b.user }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/channels/{channel}/bans`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// The user id to ban.
    #[schema(value_type = herald_proto::UserId)]
    user: String,
    /// RFC 3339 time the ban ends; absent: for good.
    #[serde(default)]
    until: Option<String>,
}

/// `POST /v1/channels/{channel}/bans`: `channel.ban`.
#[utoipa::path(
    post, path = "/v1/channels/{channel}/bans", tag = "moderation",
    params(ChannelPath),
    request_body = BanBody,
    responses(
        (status = 204, description = "Banned (and removed if a member: `member_left` with `by`)"),
        (status = 400, description = "`bad_request` (malformed body, `until` not RFC 3339) or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the creator, `channels:admin` or `server`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn ban(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<ChannelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let b: BanBody = crate::rest::parse_json(body)?;
    let req = Request::ChannelBan { channel: p.channel, user: b.user, until: b.until };
    crate::rest::run(&st, &who, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/channels/{channel}/bans/{user}`: `channel.unban`.
#[utoipa::path(
    delete, path = "/v1/channels/{channel}/bans/{user}", tag = "moderation",
    params(crate::rest::MemberPath),
    responses(
        (status = 204, description = "No ban any more (also when there was none)"),
        (status = 400, description = "`invalid_name`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the creator, `channels:admin` or `server`", body = ErrorBody),
        (status = 404, description = "`channel_not_found`", body = ErrorBody),
    ),
)]
pub async fn unban(
    State(st): State<AppState>,
    Auth(who): Auth,
    Params(p): Params<crate::rest::MemberPath>,
) -> Result<StatusCode, ApiError> {
    crate::rest::run(&st, &who, Request::ChannelUnban { channel: p.channel, user: p.user }).await?;
    Ok(StatusCode::NO_CONTENT)
}
