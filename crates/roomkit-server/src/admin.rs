//! The admin HTTP API, for an application's backend. Every `/v1` route needs
//! `Authorization: Bearer <admin key>`; `/healthz` and `/metrics` do not.
//!
//! | method and path | what it does |
//! |---|---|
//! | `POST /v1/rooms` | create a room (same parameters and checks as `create_room`) |
//! | `GET /v1/rooms` | list live rooms |
//! | `GET /v1/rooms/{uuid}` | one room |
//! | `GET /v1/rooms/{uuid}/members?cursor=&limit=` | one page of its members, as `fetch_room_members` |
//! | `GET /v1/rooms/{uuid}/chatroom/members?cursor=&limit=` | one page of its chatroom's members, as `fetch_chatroom_members` |
//! | `POST /v1/rooms/{uuid}/chatroom/messages` | send a text message from the backend to the chatroom |
//! | `DELETE /v1/rooms/{uuid}` | end the room (`room_end` with `close_by_backend`) |
//! | `POST /v1/tokens` | mint an access token |
//! | `GET /healthz` | liveness |
//! | `GET /metrics` | Prometheus metrics |
//!
//! Responses use the protocol's shape: `{"code": 0, "msg": "success", "data": ...}`, and errors
//! the same code table with the matching HTTP status.
//!
//! A `/v1` request is checked in this order, so that a client without the key costs nothing:
//! the key, from the request head alone (401, body unread, connection closed); the declared
//! body size ([`AdminLimits::max_body_bytes`], 413); then the body is read within
//! [`AdminLimits::body_timeout`] (408) and its size checked as it comes.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use roomkit_core::{
    config::{DEFAULT_MEMBERS_LIMIT, MAX_MEMBERS_LIMIT},
    Error as CoreError, Identity, RoomRegistry,
};
use roomkit_protocol::{
    ops::{self, CreateRoom, SendMessageOutput},
    Code, EndReason, RoomInfo, RoomUuid, UserUuid,
};
use roomkit_token::{JwtAuthenticator, TokenField, TokenRequest};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::Rooms;

/// What the admin API needs.
#[derive(Clone)]
pub struct AdminState {
    /// The rooms of the running server.
    pub rooms: Rooms,
    /// The bearer key every `/v1` request must present.
    pub admin_key: Arc<str>,
    /// Mints tokens for `POST /v1/tokens`; `None` when the server has no token secret.
    pub tokens: Option<JwtAuthenticator>,
    /// The user uuid rooms created and messages sent through this API are attributed to:
    /// [`UserUuid::backend`], or another reserved id, so that no login can act as it.
    pub backend_user: UserUuid,
    /// How much of a request the API reads, and how long it waits for it.
    pub limits: AdminLimits,
}

/// What the admin API reads of a request, and how long it waits for it. (How long it waits
/// for a request's head is the HTTP front's `header_timeout`, see [`crate::net::serve`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminLimits {
    /// Largest request body, in bytes (default 256 KiB, room for a room's largest set of
    /// initial properties). A larger one is answered 413 with `FRAME_TOO_LARGE`: before it is
    /// read when its `Content-Length` says so, otherwise as soon as it passes the limit.
    pub max_body_bytes: usize,
    /// Longest time a request's body may take to arrive once its head is in (default 10 s).
    /// A slower one is answered 408 with `TIMEOUT`, and the connection is closed.
    pub body_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self { max_body_bytes: 256 * 1024, body_timeout: Duration::from_secs(10) }
    }
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    let limits = state.limits;
    let v1 = Router::new()
        .route("/v1/rooms", post(create_room).get(list_rooms))
        .route("/v1/rooms/{uuid}", get(get_room).delete(end_room))
        .route("/v1/rooms/{uuid}/members", get(room_members))
        .route("/v1/rooms/{uuid}/chatroom/members", get(chatroom_members))
        .route("/v1/rooms/{uuid}/chatroom/messages", post(send_message))
        .route("/v1/tokens", post(mint_token))
        // The last layer added runs first: the key, then the body.
        .route_layer(middleware::from_fn_with_state(limits, read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(v1)
        .with_state(state)
}

/// Refuses a request without the admin key from its head alone: its body is never read, and
/// the connection is closed rather than kept to drain it.
async fn require_key(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => closing(e.into_response()),
    }
}

/// Reads the body before the handler runs, within [`AdminLimits`]: refused unread when its
/// declared length is over the limit, cut off when it grows past it or takes too long.
async fn read_body(State(limits): State<AdminLimits>, request: Request, next: Next) -> Response {
    let too_large = || {
        let msg = format!("request body over the limit of {} bytes", limits.max_body_bytes);
        closing(ApiError::new(Code::FRAME_TOO_LARGE, msg).into_response())
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            let msg = format!("bad request: the request body could not be read: {e}");
            closing(ApiError::new(Code::BAD_REQUEST, msg).into_response())
        }
        Err(_) => {
            let msg = format!("the request body did not arrive within {:?}", limits.body_timeout);
            let mut response = ApiError::new(Code::TIMEOUT, msg).into_response();
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            closing(response)
        }
    }
}

/// `response`, telling the client the connection closes after it (hyper then closes it).
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An admin API failure: a protocol code and a message, answered with the code's HTTP status.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    msg: String,
}

impl ApiError {
    fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into() }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "code": self.code, "msg": self.msg });
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    let body = serde_json::json!({ "code": Code::SUCCESS, "msg": "success", "data": data });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(Code::UNAUTHENTICATED, "missing `Authorization: Bearer <admin key>`"))?;
    if constant_time_eq(presented.as_bytes(), state.admin_key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(Code::UNAUTHENTICATED, "wrong admin key"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_string();
        let path = e.path().to_string();
        let msg = if path == "." {
            format!("bad request: {inner}")
        } else {
            format!("bad request: field `{path}`: {inner}")
        };
        ApiError::new(Code::BAD_REQUEST, msg)
    })
}

fn parse_room(uuid: &str) -> Result<RoomUuid, ApiError> {
    RoomUuid::new(uuid)
        .map_err(|e| ApiError::new(Code::BAD_REQUEST, format!("bad request: field `room_uuid`: {e}")))
}

async fn on_room<R: Send + 'static>(
    state: &AdminState,
    room: &RoomUuid,
    f: impl FnOnce(&mut RoomRegistry, u64) -> R + Send + 'static,
) -> Result<R, ApiError> {
    state
        .rooms
        .with_room(room, f)
        .await
        .ok_or_else(|| ApiError::new(Code::SERVER_SHUTTING_DOWN, "shutting down"))
}

/// A room as the admin API lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room.
    #[serde(flatten)]
    pub room: RoomInfo,
    /// Members in the room.
    pub member_count: usize,
    /// Members in its chatroom.
    pub chatroom_member_count: usize,
}

/// The room's summary, from its counts (O(1): no member is visited).
fn summary(registry: &RoomRegistry, room: &RoomUuid) -> Option<RoomSummary> {
    let info = registry.room_info(room)?.clone();
    let counts = registry.room_counts(room).unwrap_or_default();
    Some(RoomSummary {
        room: info,
        member_count: counts.room as usize,
        chatroom_member_count: counts.chatroom as usize,
    })
}

/// `?cursor=&limit=` of a member listing: the paging of `fetch_room_members`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// A previous answer's `next_cursor`; absent (or empty) for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// At most this many members, 1–100; default 50.
    #[serde(default)]
    limit: Option<String>,
}

impl PageQuery {
    /// The cursor and the checked limit.
    fn parse(self) -> Result<(Option<String>, usize), ApiError> {
        let bad = || {
            ApiError::new(
                Code::BAD_REQUEST,
                format!("bad request: field `limit`: must be 1 to {MAX_MEMBERS_LIMIT}"),
            )
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_MEMBERS_LIMIT,
            Some(text) => text.parse::<u32>().map_err(|_| bad())?,
        };
        if limit == 0 || limit > MAX_MEMBERS_LIMIT {
            return Err(bad());
        }
        Ok((self.cursor.filter(|c| !c.is_empty()), limit as usize))
    }
}

async fn create_room(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    let params: CreateRoom = parse_body(&body)?;
    let identity = Identity::unrestricted(state.backend_user.clone());
    let room = params.room_uuid.clone();
    let created = on_room(&state, &room, move |reg, now| reg.create_room(now, &identity, params)).await??;
    Ok(ok(StatusCode::CREATED, created))
}

async fn list_rooms(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let per_shard = state
        .rooms
        .with_every_shard(|reg, _| {
            let uuids: Vec<RoomUuid> = reg.rooms().map(|r| r.room_uuid.clone()).collect();
            uuids.iter().filter_map(|u| summary(reg, u)).collect::<Vec<_>>()
        })
        .await;
    let mut rooms: Vec<RoomSummary> = per_shard.into_iter().flatten().collect();
    rooms.sort_by(|a, b| a.room.room_uuid.cmp(&b.room.room_uuid));
    Ok(ok(StatusCode::OK, serde_json::json!({ "rooms": rooms })))
}

async fn get_room(State(state): State<AdminState>, Path(uuid): Path<String>) -> Result<Response, ApiError> {
    let room = parse_room(&uuid)?;
    let r = room.clone();
    let found = on_room(&state, &room, move |reg, _| summary(reg, &r)).await?;
    let found = found.ok_or(CoreError::RoomNotExist(room))?;
    Ok(ok(StatusCode::OK, found))
}

async fn room_members(
    State(state): State<AdminState>,
    Path(uuid): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let room = parse_room(&uuid)?;
    let (cursor, limit) = page.parse()?;
    let r = room.clone();
    let page =
        on_room(&state, &room, move |reg, _| reg.room_members_page(&r, cursor.as_deref(), limit)).await??;
    Ok(ok(StatusCode::OK, page))
}

async fn chatroom_members(
    State(state): State<AdminState>,
    Path(uuid): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let room = parse_room(&uuid)?;
    let (cursor, limit) = page.parse()?;
    let r = room.clone();
    let page = on_room(&state, &room, move |reg, _| reg.chatroom_members_page(&r, cursor.as_deref(), limit))
        .await??;
    Ok(ok(StatusCode::OK, page))
}

/// Body of `POST /v1/rooms/{uuid}/chatroom/messages`.
#[derive(Debug, Deserialize)]
struct BackendMessage {
    text: String,
    #[serde(default)]
    from_nick: Option<String>,
}

async fn send_message(
    State(state): State<AdminState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let room = parse_room(&uuid)?;
    let message: BackendMessage = parse_body(&body)?;
    let from = state.backend_user.clone();
    let nick = message.from_nick.unwrap_or_else(|| "System".into());
    let r = room.clone();
    // Answered once the message is stored (or refused if it cannot be), like a member's send.
    let sent = state
        .rooms
        .acknowledged(&room, move |reg, now| {
            let message = reg.send_backend_message(now, &r, from, nick, message.text)?;
            Ok(ops::Response::SendTextMessage(SendMessageOutput {
                message,
                durable: reg.config().durable_acks,
            }))
        })
        .await
        .ok_or_else(|| ApiError::new(Code::SERVER_SHUTTING_DOWN, "shutting down"))??;
    let ops::Response::SendTextMessage(SendMessageOutput { message, .. }) = sent else {
        return Err(ApiError::new(Code::INTERNAL, "the message was sent, but its answer was lost"));
    };
    Ok(ok(StatusCode::CREATED, serde_json::json!({ "message": message })))
}

async fn end_room(State(state): State<AdminState>, Path(uuid): Path<String>) -> Result<Response, ApiError> {
    let room = parse_room(&uuid)?;
    let r = room.clone();
    on_room(&state, &room, move |reg, _| reg.close_room(&r, EndReason::CloseByBackend)).await??;
    Ok(ok(StatusCode::OK, serde_json::json!({})))
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
struct TokenBody {
    account: String,
    #[serde(default)]
    name: Option<String>,
    /// Lifetime in seconds; default one hour.
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    create_rooms: Option<bool>,
}

async fn mint_token(State(state): State<AdminState>, body: Bytes) -> Result<Response, ApiError> {
    let tokens = state
        .tokens
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::FAILURE, "the server has no token secret configured"))?;
    let request: TokenBody = parse_body(&body)?;
    let ttl_secs = request.ttl_secs.unwrap_or(3600);
    let issued = tokens
        .issue(TokenRequest {
            account: request.account,
            name: request.name,
            ttl: std::time::Duration::from_secs(ttl_secs.min(u64::MAX / 2)),
            rooms: request.rooms.unwrap_or_default(),
            admin: request.admin,
            create_rooms: request.create_rooms.unwrap_or(true),
        })
        .map_err(|e| {
            let field = match e.field {
                TokenField::Ttl => "ttl_secs",
                other => other.name(),
            };
            ApiError::new(Code::BAD_REQUEST, format!("bad request: field `{field}`: {}", e.reason))
        })?;
    Ok(ok(StatusCode::CREATED, serde_json::json!({ "token": issued.token, "expires_at": issued.claims.exp })))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let counts = state
        .rooms
        .with_every_shard(|reg, _| {
            let (members, chat) = reg.member_counts();
            (reg.room_count(), members, chat)
        })
        .await;
    let (rooms, members, chat) =
        counts.into_iter().fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
    metrics::gauge!("roomkit_rooms").set(rooms as f64);
    metrics::gauge!("roomkit_room_members").set(members as f64);
    metrics::gauge!("roomkit_chatroom_members").set(chat as f64);
    let text = crate::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
