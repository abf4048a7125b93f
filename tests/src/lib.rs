//! Test support for roomkit's end-to-end suite: a way to start a server and connect
//! clients that the behaviour tests are generic over.
//!
//! - [`Harness`] starts a server on some transport and opens connections to it: SDK clients
//!   ([`Harness::client`]) and raw frame-level connections ([`Harness::raw_client`]).
//!   [`MemoryHarness`] implements it over the in-memory transport; [`WsHarness`] over real
//!   loopback sockets, behind the same HTTP/WebSocket front as the `roomkit-server` binary.
//! - [`ws`] is a raw WebSocket client (any bytes, any frame type, close frames as they come)
//!   and [`http`] a minimal HTTP/1.1 client, for the wire and admin API tests.
//! - [`GatedStore`] is a store stand-in whose reads and writes wait at a [`Gate`] until a test
//!   lets them through, and whose next write fails on demand; [`raw_chatroom_member`] is a raw
//!   client in a room's chatroom over the in-memory transport.
//! - [`behaviour`] holds the behaviour cases, each an `async fn case<H: Harness>()`.
//! - [`behaviour_suite!`] instantiates every case as a `#[tokio::test]` for one harness:
//!
//! ```ignore
//! roomkit_tests::behaviour_suite!(memory, roomkit_tests::MemoryHarness);
//! ```
//!
//! Waiting is bounded by [`EVENT_TIMEOUT`] only to turn a hang into a failure; nothing here
//! measures speed. Absence of an event is checked after a *barrier* ([`Member::settle`]):
//! a round trip through the room's shard whose response proves that every event caused
//! earlier has already reached the client.

pub mod behaviour;
pub mod http;
mod store;
pub mod ws;

pub use store::{Gate, GatedStore};

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use roomkit_client::{
    ChatController, ChatMessage, CreateRoomOptions, CreateRoomParams, Error, FetchHistoryOptions,
    JoinRoomOptions, JoinRoomParams, RoomContext, RoomEvent, RoomEvents, RoomKit, RoomMember,
};
use roomkit_core::transport::{Connection, Connector, Frame, FrameSink, FrameStream, TransportError};
use roomkit_protocol::{
    codec::{self, ResponseFrame, ServerFrame},
    Code, EndReason, Event, Role, RoomInfo,
};
use roomkit_server::{Authenticator, DevAuthenticator, Server, ServerConfig, ServerHandle};
use roomkit_transport_memory::{MemoryConfig, MemoryConnector};
use roomkit_transport_ws::{QueueListener, WsConfig, WsConnector};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// Longest wait for anything expected (an event, a response, a frame). Bounds hangs only.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a whole behaviour case may run before it is reported as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// The token [`Harness::client`] logs in with; [`DevAuthenticator`] accepts any non-empty one.
pub const DEV_TOKEN: &str = "dev";

/// Awaits `fut`, panicking with `what` if it takes longer than [`EVENT_TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(EVENT_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {EVENT_TIMEOUT:?} waiting for {what}"),
    }
}

// ---- the harness ------------------------------------------------------------------------

/// Transport-level wishes of a test. A transport applies those it can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportOptions {
    /// Buffer as few frames as possible between the server and a client, so that a client
    /// which stops reading backs up into the server's send queue quickly.
    pub small_buffers: bool,
}

/// A [`Connector`] behind an `Arc`, so that any transport's connector can be handed to
/// [`RoomKit::connect`] (which takes its connector by value). Cheap to clone.
#[derive(Clone)]
pub struct SharedConnector(pub Arc<dyn Connector>);

impl std::fmt::Debug for SharedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnector").finish_non_exhaustive()
    }
}

#[async_trait]
impl Connector for SharedConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.0.connect().await
    }
}

impl roomkit_client::IntoConnector for SharedConnector {
    fn into_connector(self) -> Arc<dyn Connector> {
        self.0
    }
}

/// A running server on some transport, and the means to connect to it. The behaviour cases
/// are generic over this trait, so every transport runs the same suite.
#[async_trait]
pub trait Harness: Send + Sync + Sized + 'static {
    /// Starts a server with `config` (and [`DevAuthenticator`]) on this transport.
    async fn start_with(config: ServerConfig, options: TransportOptions) -> Self;

    /// A connector to the server.
    fn connector(&self) -> SharedConnector;

    /// The running server, for inspection (`with_room`, `connection_count`).
    fn server(&self) -> &ServerHandle;

    /// Shuts the server down.
    async fn stop(self);

    /// Starts a server with `config` and the transport's defaults.
    async fn start(config: ServerConfig) -> Self {
        Self::start_with(config, TransportOptions::default()).await
    }

    /// Opens a raw connection: whole frames, no SDK.
    async fn raw(&self) -> Connection {
        within("a raw connection", self.connector().connect()).await.expect("connect")
    }

    /// Opens a raw connection wrapped in a [`RawClient`].
    async fn raw_client(&self) -> RawClient {
        RawClient::new(self.raw().await)
    }

    /// Connects an SDK client without logging in.
    async fn connect(&self) -> RoomKit {
        within("RoomKit::connect", RoomKit::connect(self.connector())).await.expect("RoomKit::connect")
    }

    /// Connects an SDK client and logs it in as `account` with [`DEV_TOKEN`].
    async fn client(&self, account: &str) -> RoomKit {
        let kit = self.connect().await;
        kit.login(account, DEV_TOKEN).await.unwrap_or_else(|e| panic!("login as {account}: {e}"));
        kit
    }
}

/// [`Harness`] over the in-memory transport.
pub struct MemoryHarness {
    server: ServerHandle,
    connector: MemoryConnector,
}

impl std::fmt::Debug for MemoryHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHarness").finish_non_exhaustive()
    }
}

impl MemoryHarness {
    /// Starts a server with `config` on an in-memory transport configured by `memory`.
    pub fn with_memory_config(config: ServerConfig, memory: MemoryConfig) -> Self {
        let (listener, connector) = roomkit_transport_memory::transport_with(memory);
        let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
        Self { server, connector }
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn start_with(config: ServerConfig, options: TransportOptions) -> Self {
        let mut memory = MemoryConfig::default();
        if options.small_buffers {
            memory.channel_capacity = 4;
        }
        Self::with_memory_config(config, memory)
    }

    fn connector(&self) -> SharedConnector {
        SharedConnector(Arc::new(self.connector.clone()))
    }

    fn server(&self) -> &ServerHandle {
        &self.server
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// How a [`WsHarness`] serves clients: the WebSocket front's settings and the authenticator.
#[derive(Clone)]
pub struct WsFront {
    /// The WebSocket transport's limits (frame size, buffers, accept backlog).
    pub ws: WsConfig,
    /// How long a TCP connection may take to send its HTTP request head.
    pub header_timeout: Duration,
    /// Logs connections in.
    pub authenticator: Arc<dyn Authenticator>,
    /// The server's socket send buffer, in bytes, when set (`SO_SNDBUF` on the listening
    /// socket, which accepted sockets inherit); the kernel's default (auto-tuned) otherwise.
    pub send_buffer_bytes: Option<u32>,
}

impl Default for WsFront {
    fn default() -> Self {
        Self {
            ws: WsConfig::default(),
            header_timeout: Duration::from_secs(10),
            authenticator: Arc::new(DevAuthenticator),
            send_buffer_bytes: None,
        }
    }
}

impl std::fmt::Debug for WsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsFront")
            .field("ws", &self.ws)
            .field("header_timeout", &self.header_timeout)
            .field("send_buffer_bytes", &self.send_buffer_bytes)
            .finish_non_exhaustive()
    }
}

/// The server socket's send buffer under [`TransportOptions::small_buffers`]: small, so that a
/// client which stops reading backs up into the server's send queue after a few frames
/// rather than after megabytes of kernel buffering.
pub const SMALL_SEND_BUFFER_BYTES: u32 = 4096;

/// [`Harness`] over WebSocket on loopback TCP, served exactly as the `roomkit-server` binary
/// serves its client port: a [`QueueListener`] feeding the [`Server`], and
/// [`roomkit_server::net::serve`] running [`roomkit_server::net::client_router`] (`/v1`
/// upgrades, `/healthz`) on a [`TcpListener`] bound to `127.0.0.1:0`.
pub struct WsHarness {
    server: ServerHandle,
    addr: SocketAddr,
    url: String,
    stop_http: watch::Sender<bool>,
    http: JoinHandle<()>,
}

impl std::fmt::Debug for WsHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsHarness").field("url", &self.url).finish_non_exhaustive()
    }
}

impl WsHarness {
    /// Starts a server with `config` behind an HTTP/WebSocket front configured by `front`.
    pub async fn start_front(config: ServerConfig, front: WsFront) -> Self {
        let authenticator = Arc::clone(&front.authenticator);
        Self::start_server(Server::new(config, authenticator), front).await
    }

    /// Starts `server` (built with its store, cluster, ...) behind a front configured by
    /// `front` (whose authenticator `server` already has).
    pub async fn start_server(server: Server, front: WsFront) -> Self {
        let tcp = bind_loopback(front.send_buffer_bytes);
        let addr = tcp.local_addr().expect("bound address");
        let url = format!("ws://{addr}{}", roomkit_transport_ws::PATH_V1);
        let (listener, sender) = QueueListener::new(url.clone(), front.ws.accept_backlog);
        let server = server.spawn(listener);
        let (stop_http, stop_rx) = watch::channel(false);
        let router = roomkit_server::net::client_router(front.ws, sender);
        let http = tokio::spawn(roomkit_server::net::serve(tcp, router, front.header_timeout, stop_rx));
        Self { server, addr, url, stop_http, http }
    }

    /// The client port's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to: `ws://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Binds a listening socket on `127.0.0.1:0`, with `send_buffer_bytes` as its `SO_SNDBUF`
/// when given.
fn bind_loopback(send_buffer_bytes: Option<u32>) -> TcpListener {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    if let Some(bytes) = send_buffer_bytes {
        socket.set_send_buffer_size(bytes).expect("SO_SNDBUF");
    }
    socket.bind(addr).expect("bind 127.0.0.1:0");
    socket.listen(1024).expect("listen")
}

#[async_trait]
impl Harness for WsHarness {
    async fn start_with(config: ServerConfig, options: TransportOptions) -> Self {
        let mut front = WsFront::default();
        if options.small_buffers {
            front.send_buffer_bytes = Some(SMALL_SEND_BUFFER_BYTES);
        }
        Self::start_front(config, front).await
    }

    fn connector(&self) -> SharedConnector {
        SharedConnector(Arc::new(WsConnector::new(self.url.clone())))
    }

    fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Stops the HTTP accept loop (the port is closed when it returns), then shuts the
    /// server down.
    async fn stop(self) {
        let _ = self.stop_http.send(true);
        within("the HTTP accept loop to stop", self.http).await.expect("the HTTP accept loop panicked");
        self.server.shutdown().await;
    }
}

// ---- room helpers ---------------------------------------------------------------------------

/// A display name for `account`: `"alice"` → `"Alice"`.
pub fn nick(account: &str) -> String {
    let mut chars = account.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Parameters creating room `uuid` named `"Room <uuid>"`.
pub fn create_params(uuid: &str) -> CreateRoomParams {
    CreateRoomParams { room_uuid: uuid.into(), room_name: format!("Room {uuid}"), ..Default::default() }
}

/// Parameters joining room `uuid` as `account` (display name [`nick`]), as an ordinary member.
pub fn join_params(uuid: &str, account: &str) -> JoinRoomParams {
    JoinRoomParams { room_uuid: uuid.into(), user_name: nick(account), ..Default::default() }
}

/// Creates room `uuid`; panics on failure.
pub async fn create_room(kit: &RoomKit, uuid: &str, enable_chatroom: bool) -> RoomInfo {
    kit.room_service()
        .create_room(create_params(uuid), CreateRoomOptions { enable_chatroom })
        .await
        .unwrap_or_else(|e| panic!("create_room {uuid}: {e}"))
}

/// Joins room `uuid` with `params`; panics on failure.
pub async fn join_with(kit: &RoomKit, params: JoinRoomParams) -> Member {
    let uuid = params.room_uuid.clone();
    let ctx = kit
        .room_service()
        .join_room(params, JoinRoomOptions::default())
        .await
        .unwrap_or_else(|e| panic!("join_room {uuid}: {e}"));
    Member::new(kit.clone(), ctx)
}

/// Joins room `uuid` as an ordinary member; panics on failure.
pub async fn join(kit: &RoomKit, uuid: &str) -> Member {
    let account = kit.user_uuid().expect("logged in");
    join_with(kit, join_params(uuid, account.as_str())).await
}

/// Joins room `uuid` as its host (the caller must be its creator); panics on failure.
pub async fn join_as_host(kit: &RoomKit, uuid: &str) -> Member {
    let account = kit.user_uuid().expect("logged in");
    join_with(kit, JoinRoomParams { role: Role::Host, ..join_params(uuid, account.as_str()) }).await
}

/// Starts a room for `accounts`: the first creates room `uuid` (with a chatroom if
/// `enable_chatroom`) and joins as host, the others join as members, in order. Those in
/// `in_chatroom` then enter the chatroom, in order. Every member's event stream is empty
/// on return: the events of the set-up are read and dropped.
pub async fn start_room<H: Harness>(
    h: &H,
    uuid: &str,
    accounts: &[&str],
    enable_chatroom: bool,
    in_chatroom: &[&str],
) -> Vec<Member> {
    let mut members = Vec::with_capacity(accounts.len());
    for (i, account) in accounts.iter().enumerate() {
        let kit = h.client(account).await;
        let member = if i == 0 {
            create_room(&kit, uuid, enable_chatroom).await;
            join_as_host(&kit, uuid).await
        } else {
            join(&kit, uuid).await
        };
        members.push(member);
    }
    for account in in_chatroom {
        let m = members.iter().find(|m| m.uuid() == *account).expect("in_chatroom names a member");
        m.chat().join_chatroom().await.unwrap_or_else(|e| panic!("{account} join_chatroom: {e}"));
    }
    for m in &mut members {
        m.drain().await;
    }
    members
}

/// Starts a chatroom-enabled room where every one of `accounts` is in the chatroom. See
/// [`start_room`].
pub async fn start_chatroom<H: Harness>(h: &H, uuid: &str, accounts: &[&str]) -> Vec<Member> {
    start_room(h, uuid, accounts, true, accounts).await
}

/// Asserts that `result` failed with `code`; returns the error for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Error>, code: Code) -> Error {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "wrong code; message: {}", e.msg());
            e
        }
    }
}

// ---- members and their events ---------------------------------------------------------------

/// An event reduced to what the behaviour cases compare: who, and which message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// `MemberJoinRoom` of this user.
    JoinRoom(String),
    /// `MemberLeaveRoom` of this user.
    LeaveRoom(String),
    /// `MemberJoinChatroom` of this user.
    JoinChatroom(String),
    /// `MemberLeaveChatroom` of this user.
    LeaveChatroom(String),
    /// A chatroom message: its sequence number, sender and text.
    Message {
        /// Sequence number.
        seq: u64,
        /// Sender's user uuid.
        from: String,
        /// Text (empty for non-text messages).
        text: String,
    },
    /// `RoomEnd` with this reason.
    End(EndReason),
    /// Any other event, debug-formatted.
    Other(String),
}

impl Seen {
    /// A text message as [`Seen`].
    pub fn message(m: &ChatMessage) -> Seen {
        Seen::Message {
            seq: m.seq,
            from: m.from_user_uuid.to_string(),
            text: m.text().unwrap_or_default().to_string(),
        }
    }
}

/// Reduces an event to [`Seen`] items: one per member or message it carries.
pub fn seen(event: &RoomEvent) -> Vec<Seen> {
    let who = |members: &[RoomMember], f: fn(String) -> Seen| {
        members.iter().map(|m| f(m.uuid.to_string())).collect::<Vec<_>>()
    };
    match event {
        RoomEvent::MemberJoinRoom(m) => who(m, Seen::JoinRoom),
        RoomEvent::MemberLeaveRoom(m) => who(m, Seen::LeaveRoom),
        RoomEvent::MemberJoinChatroom(m) => who(m, Seen::JoinChatroom),
        RoomEvent::MemberLeaveChatroom(m) => who(m, Seen::LeaveChatroom),
        RoomEvent::ChatroomMessagesReceived(msgs) => msgs.iter().map(Seen::message).collect(),
        RoomEvent::RoomEnd(reason) => vec![Seen::End(*reason)],
        other => vec![Seen::Other(format!("{other:?}"))],
    }
}

/// The next event of `events`; panics if none arrives within [`EVENT_TIMEOUT`] or the stream
/// ended. Count changes are skipped (see [`counted`]).
pub async fn next_event(events: &mut RoomEvents) -> RoomEvent {
    within("a room event", next_uncounted(events)).await.expect("the event stream ended")
}

/// Whether an event only tells the online counts. The SDK tells one after every member event
/// that changes them; the behaviour cases look at who was told what, so they read past these
/// (the counts have their own tests in roomkit-client).
pub fn counted(event: &RoomEvent) -> bool {
    matches!(event, RoomEvent::MemberCountChanged(_))
}

/// The next event that is not a count change; `None` once the stream ended.
pub async fn next_uncounted(events: &mut RoomEvents) -> Option<RoomEvent> {
    loop {
        match events.recv().await {
            Some(event) if counted(&event) => continue,
            other => return other,
        }
    }
}

/// One joined member: its client, its room context and its event stream (subscribed right
/// after joining).
pub struct Member {
    /// The client.
    pub kit: RoomKit,
    /// The joined room.
    pub ctx: RoomContext,
    /// The room's events, from just after the join.
    pub events: RoomEvents,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("user", &self.uuid()).finish_non_exhaustive()
    }
}

impl Member {
    /// Wraps a freshly joined context and subscribes to its events.
    pub fn new(kit: RoomKit, ctx: RoomContext) -> Self {
        let events = ctx.events();
        Self { kit, ctx, events }
    }

    /// The member's user uuid.
    pub fn uuid(&self) -> String {
        self.kit.user_uuid().expect("logged in").to_string()
    }

    /// The room's uuid.
    pub fn room(&self) -> String {
        self.ctx.room_uuid().to_string()
    }

    /// The room's chat controller.
    pub fn chat(&self) -> ChatController {
        self.ctx.chat_controller()
    }

    /// The next event; panics if none arrives in time.
    pub async fn next_event(&mut self) -> RoomEvent {
        let who = self.uuid();
        within(&format!("an event for {who}"), next_uncounted(&mut self.events))
            .await
            .unwrap_or_else(|| panic!("the event stream of {who} ended"))
    }

    /// The next event as a single [`Seen`].
    pub async fn next_seen(&mut self) -> Seen {
        let event = self.next_event().await;
        let mut items = seen(&event);
        assert_eq!(
            items.len(),
            1,
            "{} expected an event about one member or message: {event:?}",
            self.uuid()
        );
        items.pop().expect("one")
    }

    /// Asserts that the next event is `expected`.
    pub async fn expect(&mut self, expected: Seen) {
        let got = self.next_seen().await;
        assert_eq!(got, expected, "wrong event for {}", self.uuid());
    }

    /// Reads events until one matches `pred`, returning it and the ones skipped.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&RoomEvent) -> bool,
    ) -> (RoomEvent, Vec<RoomEvent>) {
        let mut skipped = Vec::new();
        loop {
            let event = self.next_event().await;
            if pred(&event) {
                return (event, skipped);
            }
            skipped.push(event);
        }
    }

    /// A barrier: a round trip through the room's shard. When it returns, every event the
    /// server produced for this member before the barrier reached the server has been
    /// applied by the SDK and queued on [`events`](Self::events). Works whether or not the
    /// member is still in the room (the server answers with an error then).
    pub async fn settle(&self) {
        let options = FetchHistoryOptions { limit: 1, ..Default::default() };
        let _ = within("a barrier round trip", self.chat().fetch_chatroom_history_messages(options)).await;
    }

    /// [`settle`](Self::settle)s, then returns every event already received.
    pub async fn drain(&mut self) -> Vec<RoomEvent> {
        self.settle().await;
        std::iter::from_fn(|| self.events.try_recv()).filter(|e| !counted(e)).collect()
    }

    /// [`settle`](Self::settle)s, then asserts that no event is waiting.
    pub async fn assert_quiet(&mut self) {
        let extra = self.drain().await;
        assert!(extra.is_empty(), "{} received unexpected events: {extra:?}", self.uuid());
    }

    /// Reads exactly `n` chatroom messages (failing on any other event).
    pub async fn messages(&mut self, n: usize) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_event().await {
                RoomEvent::ChatroomMessagesReceived(msgs) => out.extend(msgs),
                other => panic!("{} expected a chatroom message, got {other:?}", self.uuid()),
            }
        }
        assert_eq!(out.len(), n, "{} received more messages than expected", self.uuid());
        out
    }
}

// ---- raw connections -----------------------------------------------------------------------

/// A frame-level client: sends whatever bytes it is given and decodes what comes back.
/// Events received while waiting for a response are kept for [`take_events`](Self::take_events).
pub struct RawClient {
    sink: Box<dyn FrameSink>,
    stream: Box<dyn FrameStream>,
    next_id: u64,
    events: Vec<Event>,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl RawClient {
    /// Wraps an open connection.
    pub fn new(connection: Connection) -> Self {
        Self { sink: connection.sink, stream: connection.stream, next_id: 1, events: Vec::new() }
    }

    /// Sends one frame of arbitrary bytes.
    pub async fn send_bytes(&mut self, frame: impl Into<Bytes>) {
        let frame: Bytes = frame.into();
        within("a raw send", self.sink.send(&[Frame::text(&frame)])).await.expect("raw send");
    }

    /// Sends one JSON frame as is.
    pub async fn send_json(&mut self, frame: serde_json::Value) {
        self.send_bytes(serde_json::to_vec(&frame).expect("JSON")).await;
    }

    /// Sends one JSON frame as is; false if the connection is gone (the server closed it).
    pub async fn try_send_json(&mut self, frame: serde_json::Value) -> bool {
        let bytes = serde_json::to_vec(&frame).expect("JSON");
        within("a raw send", self.sink.send(&[Frame::text(&bytes)])).await.is_ok()
    }

    /// The next frame, or the transport's error (a closed connection).
    pub async fn recv_bytes(&mut self) -> Result<Bytes, TransportError> {
        within("a raw frame", self.stream.recv()).await
    }

    /// Reads every remaining frame until the connection ends; returns them, decoded, and how
    /// the connection ended (for a server's close: `Closed(Some(reason))`).
    pub async fn read_to_end(&mut self) -> (Vec<ServerFrame>, TransportError) {
        let mut frames = Vec::new();
        loop {
            match self.recv_bytes().await {
                Ok(bytes) => frames.push(codec::decode_server_frame(&bytes).unwrap_or_else(|e| {
                    panic!("undecodable frame {:?}: {e}", String::from_utf8_lossy(&bytes))
                })),
                Err(e) => return (frames, e),
            }
        }
    }

    /// The next frame, decoded; panics if the connection closed or the frame is undecodable.
    pub async fn recv_frame(&mut self) -> ServerFrame {
        let bytes = self.recv_bytes().await.expect("raw connection closed");
        codec::decode_server_frame(&bytes)
            .unwrap_or_else(|e| panic!("undecodable frame {:?}: {e}", String::from_utf8_lossy(&bytes)))
    }

    /// The next response, keeping events received before it.
    pub async fn response(&mut self) -> ResponseFrame {
        loop {
            match self.recv_frame().await {
                ServerFrame::Response(r) => return r,
                ServerFrame::Event(e) => self.events.push(e),
            }
        }
    }

    /// Sends `frame` (a JSON object with `op` and parameters) with the next request id and
    /// returns its response, checking the id is echoed.
    pub async fn request(&mut self, mut frame: serde_json::Value) -> ResponseFrame {
        let id = self.next_id;
        self.next_id += 1;
        frame.as_object_mut().expect("a JSON object").insert("id".into(), id.into());
        self.send_json(frame).await;
        let response = self.response().await;
        assert_eq!(response.id, Some(id), "response to the wrong request: {response:?}");
        response
    }

    /// Sends `frame` like [`request`](Self::request) and asserts it succeeded.
    pub async fn request_ok(&mut self, frame: serde_json::Value) -> ResponseFrame {
        let what = frame.to_string();
        let response = self.request(frame).await;
        assert_eq!(response.code, Code::SUCCESS, "{what} failed: {}", response.msg);
        response
    }

    /// Logs in as `account` with [`DEV_TOKEN`].
    pub async fn login(&mut self, account: &str) {
        self.request_ok(serde_json::json!({"op": "login", "account_id": account, "token": DEV_TOKEN})).await;
    }

    /// Events received so far while waiting for responses.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Closes the connection from this side.
    pub async fn close(mut self) {
        let reason = roomkit_core::transport::CloseReason::new(Code::SUCCESS, "raw client done");
        let _ = within("a raw close", self.sink.close(reason)).await;
    }
}

/// A raw client over `connector`, logged in as `account`, in `room` (created if it does not
/// exist yet, with a chatroom) and its chatroom, with the events so far taken.
pub async fn raw_chatroom_member(connector: &MemoryConnector, account: &str, room: &str) -> RawClient {
    let mut raw = RawClient::new(within("a connection", connector.connect()).await.expect("connect"));
    raw.login(account).await;
    let create = raw
        .request(serde_json::json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true}));
    let code = create.await.code;
    assert!(code == Code::SUCCESS || code == Code::ROOM_ALREADY_EXISTS, "{code:?}");
    raw.request_ok(serde_json::json!({"op": "join_room", "room_uuid": room, "user_name": account})).await;
    raw.request_ok(serde_json::json!({"op": "join_chatroom", "room_uuid": room})).await;
    raw.take_events();
    raw
}

// ---- the suite macro -----------------------------------------------------------------------

/// Instantiates every behaviour case of [`behaviour`] for one harness, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` functions in module
/// `$name`: `behaviour_suite!(memory, roomkit_tests::MemoryHarness);` gives tests named
/// `memory::room::create_room_does_not_join` and so on. The crate using it needs `tokio`.
#[macro_export]
macro_rules! behaviour_suite {
    ($name:ident, $harness:ty) => {
        $crate::__behaviour_cases! { $name, $harness;
            room {
                chatroom_support_follows_enable_chatroom,
                create_room_does_not_join,
                create_room_validates_its_parameters,
                join_room_returns_a_context_with_the_local_member,
                join_room_checks_password_lock_and_capacity,
                same_account_joining_elsewhere_replaces_the_first_connection,
                get_room_context_follows_membership,
                room_properties_are_the_hosts_and_reach_everyone,
                room_end_listeners_see_the_context_already_gone,
                room_end_callback_may_call_back_into_the_sdk,
                joining_again_on_the_same_connection_keeps_contexts_live,
            }
            chatroom {
                join_chatroom_needs_room_membership,
                join_chatroom_over_a_raw_connection,
                join_chatroom_tells_every_member,
                join_chatroom_twice_is_a_no_op,
                leave_chatroom_tells_the_others_and_stops_delivery,
            }
            messages {
                broadcast_reaches_the_chatroom_but_not_the_sender,
                broadcast_checks_membership_and_text,
                message_size_limit_is_configurable,
                direct_and_group_messages_reach_exactly_their_recipients,
                history_returns_visible_messages_with_time_limit_and_order,
                concurrent_senders_are_seen_in_one_order_by_everyone,
            }
            lifecycle {
                leave_room_leaves_the_chatroom_first,
                closing_a_client_leaves_its_rooms,
                dropping_a_client_leaves_its_rooms,
                a_dropped_member_returns_silently_within_the_grace_period,
                a_dropped_member_leaves_when_the_grace_period_ends,
                idle_rooms_end,
                end_room_ends_it_for_everyone,
                shutdown_closes_clients_and_keeps_rooms,
            }
            server {
                requests_before_login_are_refused,
                connections_that_never_log_in_are_closed,
                malformed_frames_are_answered_and_the_connection_survives,
                unknown_operations_are_refused,
                logging_in_twice_is_refused,
                identity_comes_from_login_not_from_the_payload,
                slow_consumer_is_closed_without_holding_up_the_room,
                stalled_slow_consumer_does_not_hold_up_shutdown,
                a_client_that_does_not_read_its_history_is_cut_off_by_the_byte_bound,
            }
        }
    };
}

/// Implementation of [`behaviour_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __behaviour_cases {
    ($name:ident, $harness:ty; $( $module:ident { $( $(#[$attr:meta])* $case:ident ),* $(,)? } )*) => {
        mod $name {
            $(
                mod $module {
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        $(#[$attr])*
                        async fn $case() {
                            $crate::run_case($crate::behaviour::$module::$case::<$harness>()).await;
                        }
                    )*
                }
            )*
        }
    };
}

/// Runs one behaviour case, failing it if it hangs for [`CASE_TIMEOUT`].
pub async fn run_case(case: impl Future<Output = ()>) {
    if tokio::time::timeout(CASE_TIMEOUT, case).await.is_err() {
        panic!("the case hung for {CASE_TIMEOUT:?}");
    }
}
