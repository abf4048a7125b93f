//! The roomkit client SDK: NERoom's room and chatroom API in idiomatic Rust.
//!
//! [`RoomKit`] connects — to a server URL, to one of several ([`FailoverConnector`]), or
//! through any transport connector — and logs in;
//! [`RoomKit::room_service`] creates and joins rooms; a joined room is a [`RoomContext`],
//! whose [`ChatController`] enters, leaves and talks in the room's chatroom. Every call
//! returns `Result<_, Error>`, and [`Error`] carries NERoom's `code` and `msg`.
//!
//! Entering a chatroom, as NERoom's guide does it (`getRoomContext` → `joinChatroom`):
//!
//! ```
//! # use std::sync::Arc;
//! # use roomkit_client::{CreateRoomOptions, CreateRoomParams, JoinRoomOptions, JoinRoomParams, RoomKit};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), roomkit_client::Error> {
//! # let (listener, connector) = roomkit_transport_memory::transport();
//! # let server = roomkit_server::Server::new(Default::default(), Arc::new(roomkit_server::DevAuthenticator))
//! #     .spawn(listener);
//! # let kit = RoomKit::connect(connector).await?;
//! # kit.login("alice", "dev-token").await?;
//! # let params = CreateRoomParams { room_uuid: "class-1".into(), room_name: "Class 1".into(), ..Default::default() };
//! # kit.room_service().create_room(params, CreateRoomOptions { enable_chatroom: true }).await?;
//! # let join = JoinRoomParams { room_uuid: "class-1".into(), user_name: "Alice".into(), ..Default::default() };
//! # kit.room_service().join_room(join, JoinRoomOptions::default()).await?;
//! let room_uuid = "class-1";
//! let room_service = kit.room_service();
//! if let Some(room_context) = room_service.get_room_context(room_uuid) {
//!     match room_context.chat_controller().join_chatroom().await {
//!         Ok(()) => println!("joinChatroom success"),
//!         Err(e) => println!("joinChatroom error code:{}, msg:{}", e.code().0, e.msg()),
//!     }
//! }
//! # assert!(room_service.get_room_context(room_uuid).unwrap().chat_controller().is_in_chatroom());
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod chat;
mod connector;
mod context;
mod error;
mod events;
mod keepalive;
mod mirror;
mod reconnect;
mod room;
mod rpc;
mod session;

use std::{sync::Arc, time::Duration};

pub use chat::{ChatController, CustomMessageOptions, FetchHistoryOptions, MessageContent, SentMessage};
pub use connector::{FailoverConnector, IntoConnector};
pub use context::RoomContext;
pub use error::Error;
pub use events::{RoomEvent, RoomEventCallback, RoomEvents};
use roomkit_protocol::{
    ops::{CreateRoom, JoinRoom, Login},
    Code, Properties, Role, RoomInfo, RoomUuid, UserUuid,
};
pub use roomkit_protocol::{
    ops::{FetchChatroomHistoryOutput, GetRoomInfoOutput, MembersPage},
    ChatMessage, Code as ErrorCode, EndReason, HistoryOrder, MemberCounts, RoomMember,
};

use crate::{rpc::CallOptions, session::Session};

/// Client settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long a call waits for its response before failing with `TIMEOUT`.
    pub request_timeout: Duration,
    /// What to do when the connection drops.
    pub reconnect: ReconnectPolicy,
    /// `join_room` reads the whole member list, page by page, when the room has at most this
    /// many members (default 500, the server's default `presence_per_member_max`): such a
    /// room sends per-member events, so the list then stays complete, as in NERoom. A larger
    /// room's context holds the first page and the members seen since; 0 never pages.
    pub complete_member_list_max: u64,
    /// Noticing a connection that died without closing.
    pub keep_alive: KeepAlivePolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            complete_member_list_max: 500,
            keep_alive: KeepAlivePolicy::default(),
        }
    }
}

/// Keep-alive: once logged in, the client sends `ping` every `interval`; when neither its
/// answer nor any other frame from the server comes within `timeout`, the connection is
/// taken for dead, exactly as if it had dropped: the
/// client reconnects and resumes (with [`ReconnectPolicy::enabled`]), or the session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlivePolicy {
    /// Time between pings (default 30 s); zero sends none.
    pub interval: Duration,
    /// How long a ping may wait for its answer, or any other frame from the server (default
    /// 10 s).
    pub timeout: Duration,
}

impl Default for KeepAlivePolicy {
    fn default() -> Self {
        Self { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) }
    }
}

/// Reconnecting after a dropped connection: exponential backoff with jitter, up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Reconnect at all. Without it a dropped connection ends the session.
    pub enabled: bool,
    /// Wait before the first attempt (half of it may be taken off at random).
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before giving up; then the state is [`ConnectionState::Disconnected`]. With
    /// several servers ([`FailoverConnector`]) an attempt is a round: each server once.
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_attempts: 20,
        }
    }
}

/// The state of the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected (and, after a reconnect, every room rejoined and caught up).
    Connected,
    /// The connection dropped; trying again.
    Reconnecting {
        /// The attempt under way, from 1.
        attempt: u32,
    },
    /// Over for good: closed by the app, refused by the server, or given up.
    Disconnected {
        /// Why, as a code.
        code: Code,
        /// Why, in words.
        msg: String,
    },
}

/// Connection state changes, as a stream.
#[derive(Debug)]
pub struct ConnectionEvents {
    rx: tokio::sync::mpsc::UnboundedReceiver<ConnectionState>,
}

impl ConnectionEvents {
    /// The next state change.
    pub async fn recv(&mut self) -> Option<ConnectionState> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for ConnectionEvents {
    type Item = ConnectionState;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ConnectionState>> {
        self.rx.poll_recv(cx)
    }
}

/// The entry point: one connection to a roomkit server (NERoom `NERoomKit`). Cheap to
/// clone.
#[derive(Clone)]
pub struct RoomKit {
    session: Arc<Session>,
}

impl std::fmt::Debug for RoomKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKit").field("user", &self.user_uuid()).finish_non_exhaustive()
    }
}

impl RoomKit {
    /// Connects with the default [`ClientConfig`] — to a URL such as
    /// `"ws://127.0.0.1:7700/v1"`, to one of several (the nodes of a cluster, as a slice, array
    /// or `Vec` of URLs: see [`FailoverConnector`]), or through any connector (the in-memory
    /// transport's, for tests).
    ///
    /// ```no_run
    /// # use roomkit_client::RoomKit;
    /// # async fn run() -> Result<(), roomkit_client::Error> {
    /// let kit = RoomKit::connect(["ws://10.0.0.1:7700/v1", "ws://10.0.0.2:7700/v1"]).await?;
    /// println!("connected to {}", kit.server_url());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(to: impl IntoConnector) -> Result<RoomKit, Error> {
        Self::connect_with(to, ClientConfig::default()).await
    }

    /// Connects with an explicit configuration. The connector is kept to reconnect.
    ///
    /// With several servers, each is tried in turn until one accepts; the error of a connect
    /// that none accepted names the last failure. An empty list fails with `BAD_REQUEST`.
    pub async fn connect_with(to: impl IntoConnector, config: ClientConfig) -> Result<RoomKit, Error> {
        let servers = to.into_failover();
        if servers.is_empty() {
            return Err(Error::new(
                Code::BAD_REQUEST,
                "no server to connect to: the list of servers is empty",
            ));
        }
        let (index, connection) = servers.connect_first().await.map_err(Error::transport)?;
        Ok(RoomKit { session: Session::start(index, connection, servers, config).await })
    }

    /// Logs in (NERoom `authService.login`). Everything this connection does afterwards is
    /// done as `account_id`.
    pub async fn login(&self, account_id: &str, token: &str) -> Result<(), Error> {
        let account_id = UserUuid::new(account_id).map_err(|e| Error::bad_id("account_id", e))?;
        let login = Login { account_id, token: token.into() };
        let out = self.session.call(&login).await?;
        self.session.remember_login(login, out);
        Ok(())
    }

    /// The logged-in user, if any.
    pub fn user_uuid(&self) -> Option<UserUuid> {
        self.session.user_uuid()
    }

    /// Rooms: create, join, look up.
    pub fn room_service(&self) -> RoomService {
        RoomService { session: Arc::clone(&self.session) }
    }

    /// The server this client is connected to (while reconnecting: the one it was connected
    /// to last): its URL as given to [`connect`](Self::connect), the name given to
    /// [`FailoverConnector::with`], or else the transport's description of the peer.
    pub fn server_url(&self) -> String {
        self.session.server().1
    }

    /// The position of [`server_url`](Self::server_url) in the list given to
    /// [`connect`](Self::connect), from 0 (always 0 with one server).
    pub fn server_index(&self) -> usize {
        self.session.server().0
    }

    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.session.state()
    }

    /// Connection state changes from now on (connected, reconnecting, disconnected).
    pub fn connection_events(&self) -> ConnectionEvents {
        ConnectionEvents { rx: self.session.state_events() }
    }

    /// Why the session is over, if it is.
    pub fn close_reason(&self) -> Option<Error> {
        self.session.closed_error()
    }

    /// Closes the connection. The server removes this client from its rooms.
    pub async fn close(&self) {
        self.session.close().await;
    }
}

/// Parameters of [`RoomService::create_room`] (NERoom `NECreateRoomParams`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRoomParams {
    /// Unique room id: 1–64 characters of `A-Za-z0-9-_.~`.
    pub room_uuid: String,
    /// Display name, 1–64 characters.
    pub room_name: String,
    /// Application template id; stored, not interpreted.
    pub template_id: Option<String>,
    /// Member limit.
    pub max_members: Option<u32>,
    /// Password needed to join, at most 64 characters.
    pub password: Option<String>,
    /// Initial room properties.
    pub initial_room_properties: Properties,
}

/// Options of [`RoomService::create_room`] (NERoom `NECreateRoomOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRoomOptions {
    /// Create the room's chatroom.
    pub enable_chatroom: bool,
}

/// Parameters of [`RoomService::join_room`] (NERoom `NEJoinRoomParams`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRoomParams {
    /// The room.
    pub room_uuid: String,
    /// Display name in the room.
    pub user_name: String,
    /// Role: [`Role::Host`] is for the room's creator.
    pub role: Role,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// The room's password, if it has one.
    pub password: Option<String>,
    /// Initial member properties.
    pub initial_my_properties: Properties,
}

/// Options of [`RoomService::join_room`] (NERoom `NEJoinRoomOptions`; none apply yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinRoomOptions {}

/// Creating, joining and finding rooms (NERoom `NERoomService`).
#[derive(Clone)]
pub struct RoomService {
    session: Arc<Session>,
}

impl std::fmt::Debug for RoomService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomService").finish_non_exhaustive()
    }
}

impl RoomService {
    /// Creates a room. Does not join it.
    pub async fn create_room(
        &self,
        params: CreateRoomParams,
        options: CreateRoomOptions,
    ) -> Result<RoomInfo, Error> {
        let request = CreateRoom {
            room_uuid: parse_room(&params.room_uuid)?,
            room_name: params.room_name,
            template_id: params.template_id,
            max_members: params.max_members,
            password: params.password,
            initial_room_properties: params.initial_room_properties,
            enable_chatroom: options.enable_chatroom,
        };
        Ok(self.session.call(&request).await?.room)
    }

    /// Joins a room and returns its context. Joining from a second connection with the
    /// same account replaces the first, which gets `room_end(kicked_by_other_device)`.
    pub async fn join_room(
        &self,
        params: JoinRoomParams,
        _options: JoinRoomOptions,
    ) -> Result<RoomContext, Error> {
        let local =
            self.session.user_uuid().ok_or_else(|| Error::new(Code::UNAUTHENTICATED, "log in first"))?;
        let request = JoinRoom {
            room_uuid: parse_room(&params.room_uuid)?,
            user_name: params.user_name,
            role: params.role,
            avatar: params.avatar,
            password: params.password,
            initial_my_properties: params.initial_my_properties,
            resume: false,
        };
        // The room's mirror is created on the receive task, so no event behind the
        // response is missed.
        let apply = self.session.rooms.on_joined(local, request.clone());
        let out = self
            .session
            .call_with(&request, CallOptions { apply: Some(apply), resend: false, ..Default::default() })
            .await?;
        let room = self
            .session
            .room(&out.room.room_uuid)
            .ok_or_else(|| Error::new(Code::ROOM_ENDED, "the room ended while joining"))?;
        let context = RoomContext { session: Arc::clone(&self.session), room };
        if out.counts.room <= self.session.config.complete_member_list_max {
            // The per-member events that follow keep a complete list complete.
            let mut cursor = out.next_cursor;
            while let Some(after) = cursor {
                cursor = context.fetch_room_members(Some(&after), MAX_PAGE).await?.next_cursor;
            }
        }
        Ok(context)
    }

    /// The context of a joined room, or `None` if this client is not in it.
    pub fn get_room_context(&self, room_uuid: &str) -> Option<RoomContext> {
        let uuid = RoomUuid::new(room_uuid).ok()?;
        let room = self.session.room(&uuid)?;
        Some(RoomContext { session: Arc::clone(&self.session), room })
    }
}

/// Members per page when `join_room` reads a small room's whole list.
const MAX_PAGE: u32 = 100;

fn parse_room(s: &str) -> Result<RoomUuid, Error> {
    RoomUuid::new(s).map_err(|e| Error::bad_id("room_uuid", e))
}

/// The README's examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
