//! Helpers of the resume tests: an in-process server over the in-memory transport,
//! connectors that fault on demand (held back, deaf, severed, half-open), a recorder of room
//! events, and the checks every test ends with.
//!
//! Nothing here waits on a clock to decide an outcome: every wait is for a condition, and
//! its time limit only keeps a broken build from hanging.

// Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use roomkit_client::{
    ChatController, ChatMessage, ClientConfig, ConnectionEvents, ConnectionState, CreateRoomOptions,
    CreateRoomParams, EndReason, FetchHistoryOptions, IntoConnector, JoinRoomOptions, JoinRoomParams,
    MemberCounts, ReconnectPolicy, RoomContext, RoomEvent, RoomEventCallback, RoomKit, RoomMember,
};
use roomkit_core::config::MessageRate;
use roomkit_core::transport::{
    CloseReason, Connection, Connector, Frame, FrameSink, FrameStream, TransportError,
};
use roomkit_server::{RateLimit, ServerConfig};
use roomkit_transport_memory::MemoryConnector;
use tokio::sync::Notify;

/// The token the development authenticator accepts (any non-empty one).
pub const TOKEN: &str = "dev-token";

/// Bound on any single wait: generous, since two shared cores may be slow; never reached when
/// things work.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    let started = std::time::Instant::now();
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => {
            if started.elapsed() > Duration::from_secs(15) {
                // Not a failure, but worth seeing in the output of a slow run.
                println!("slow: {what} took {:?}", started.elapsed());
            }
            out
        }
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds, failing the test after [`LIMIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A server configuration with the given reconnect grace period and no practical rate limit,
/// of requests or of chatroom messages (the tests send as fast as acknowledgements come
/// back, past NERoom's 20 messages per second per member).
pub fn server_config(grace_ms: u64) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.core.reconnect_grace_ms = grace_ms;
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    config.rate_limit = RateLimit { per_second: 1_000_000, burst: 1_000_000, close_after: 1_000_000 };
    config
}

/// A client configuration: reconnect from `initial_backoff` (capped at four times that),
/// practically never giving up, and calls that may wait a long time for a reconnect.
pub fn client_config(initial_backoff: Duration) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.request_timeout = LIMIT;
    config.reconnect = ReconnectPolicy {
        enabled: true,
        initial_backoff,
        max_backoff: initial_backoff * 4,
        max_attempts: 10_000,
    };
    config
}

/// Connects through `to` and logs in as `user`.
pub async fn login(to: impl IntoConnector, config: ClientConfig, user: &str) -> RoomKit {
    let kit = within("connecting", RoomKit::connect_with(to, config)).await.expect("connect");
    within("logging in", kit.login(user, TOKEN)).await.expect("log in");
    kit
}

/// Creates `room` (with a chatroom) as the client `kit`.
pub async fn create_room(kit: &RoomKit, room: &str) {
    let params = CreateRoomParams { room_uuid: room.into(), room_name: room.into(), ..Default::default() };
    kit.room_service()
        .create_room(params, CreateRoomOptions { enable_chatroom: true })
        .await
        .expect("create the room");
}

/// A client in a room and its chatroom, with every room event recorded.
#[derive(Clone)]
pub struct Member {
    /// The account.
    pub user: String,
    /// The connection.
    pub kit: RoomKit,
    /// The room.
    pub ctx: RoomContext,
    /// The room's chatroom.
    pub chat: ChatController,
    /// Every event of the room since joining.
    pub recorder: Arc<Recorder>,
}

impl Member {
    /// Joins `room` and its chatroom through the logged-in `kit`.
    pub async fn join(kit: RoomKit, room: &str) -> Member {
        let user = kit.user_uuid().expect("logged in").to_string();
        let params = JoinRoomParams { room_uuid: room.into(), user_name: user.clone(), ..Default::default() };
        let rooms = kit.room_service();
        let ctx = within("joining the room", rooms.join_room(params, JoinRoomOptions::default()))
            .await
            .expect("join the room");
        let recorder = Arc::new(Recorder::default());
        ctx.add_event_callback(recorder.clone());
        let chat = ctx.chat_controller();
        within("joining the chatroom", chat.join_chatroom()).await.expect("join the chatroom");
        Member { user, kit, ctx, chat, recorder }
    }

    /// Sends a broadcast text, which must eventually succeed.
    pub async fn send(&self, text: &str) -> ChatMessage {
        within("a send", self.chat.send_broadcast_text_message(text))
            .await
            .unwrap_or_else(|e| panic!("{} could not send {text:?}: {e}", self.user))
    }
}

/// Records a room's events, in the order the SDK told them.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<RoomEvent>>,
}

impl Recorder {
    fn push(&self, event: RoomEvent) {
        self.events.lock().expect("not poisoned").push(event);
    }

    /// How many events so far (a mark to look at what comes later).
    pub fn len(&self) -> usize {
        self.events.lock().expect("not poisoned").len()
    }

    /// The events after `mark`.
    pub fn since(&self, mark: usize) -> Vec<RoomEvent> {
        self.events.lock().expect("not poisoned")[mark..].to_vec()
    }

    /// Every chatroom message told, in the order told.
    pub fn messages(&self) -> Vec<ChatMessage> {
        messages_of(&self.events.lock().expect("not poisoned"))
    }

    /// The sequence numbers of [`messages`](Self::messages).
    pub fn seqs(&self) -> Vec<u64> {
        self.events
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|e| match e {
                RoomEvent::ChatroomMessagesReceived(m) => Some(m.iter().map(|m| m.seq)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The highest sequence number told, 0 if none.
    pub fn last_seq(&self) -> u64 {
        self.seqs().last().copied().unwrap_or(0)
    }

    /// Whether a message with this text was told.
    pub fn has_text(&self, text: &str) -> bool {
        self.messages().iter().any(|m| m.text() == Some(text))
    }

    /// The `recovered` flag of every `Resumed` event, in order.
    pub fn resumed(&self) -> Vec<bool> {
        self.events
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|e| match e {
                RoomEvent::Resumed { recovered } => Some(*recovered),
                _ => None,
            })
            .collect()
    }

    /// The counts told by `member_count_changed`, in order.
    pub fn counts(&self) -> Vec<MemberCounts> {
        self.events
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|e| match e {
                RoomEvent::MemberCountChanged(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Every event told so far.
    pub fn all(&self) -> Vec<RoomEvent> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// Waits until a message with `text` is told.
    pub async fn wait_for_text(&self, text: &str) {
        eventually(&format!("the message {text:?}"), || self.has_text(text)).await;
    }
}

/// The chatroom messages among `events`, in order.
pub fn messages_of(events: &[RoomEvent]) -> Vec<ChatMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::ChatroomMessagesReceived(m) => Some(m.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The member events among `events` concerning `user`, as short names in order
/// (`join_room`, `leave_chatroom`, ...).
pub fn member_events_of(events: &[RoomEvent], user: &str) -> Vec<&'static str> {
    let about = |members: &[RoomMember]| members.iter().any(|m| m.uuid.as_str() == user);
    events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::MemberJoinRoom(m) if about(m) => Some("join_room"),
            RoomEvent::MemberLeaveRoom(m) if about(m) => Some("leave_room"),
            RoomEvent::MemberJoinChatroom(m) if about(m) => Some("join_chatroom"),
            RoomEvent::MemberLeaveChatroom(m) if about(m) => Some("leave_chatroom"),
            _ => None,
        })
        .collect()
}

impl RoomEventCallback for Recorder {
    fn member_join_room(&self, members: &[RoomMember]) {
        self.push(RoomEvent::MemberJoinRoom(members.to_vec()));
    }
    fn member_leave_room(&self, members: &[RoomMember]) {
        self.push(RoomEvent::MemberLeaveRoom(members.to_vec()));
    }
    fn member_join_chatroom(&self, members: &[RoomMember]) {
        self.push(RoomEvent::MemberJoinChatroom(members.to_vec()));
    }
    fn member_leave_chatroom(&self, members: &[RoomMember]) {
        self.push(RoomEvent::MemberLeaveChatroom(members.to_vec()));
    }
    fn chatroom_messages_received(&self, messages: &[ChatMessage]) {
        self.push(RoomEvent::ChatroomMessagesReceived(messages.to_vec()));
    }
    fn room_end(&self, reason: EndReason) {
        self.push(RoomEvent::RoomEnd(reason));
    }
    fn room_resumed(&self, recovered: bool) {
        self.push(RoomEvent::Resumed { recovered });
    }
    fn member_count_changed(&self, counts: MemberCounts) {
        self.push(RoomEvent::MemberCountChanged(counts));
    }
}

/// Waits for the next connection state, failing after [`LIMIT`].
pub async fn next_state(states: &mut ConnectionEvents) -> ConnectionState {
    within("a connection state change", states.recv()).await.expect("the session is alive")
}

/// Waits for `Connected`, allowing any number of `Reconnecting` before it.
pub async fn until_connected(states: &mut ConnectionEvents) {
    loop {
        match next_state(states).await {
            ConnectionState::Connected => return,
            ConnectionState::Reconnecting { .. } => {}
            other => panic!("expected to reconnect, got {other:?}"),
        }
    }
}

/// The whole history the member may see, read by sequence number, 100 at a time.
pub async fn full_history(chat: &ChatController) -> Vec<ChatMessage> {
    let mut all: Vec<ChatMessage> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq);
        let options = FetchHistoryOptions { after_seq: Some(after), limit: 100, ..Default::default() };
        let page = within("a history page", chat.fetch_chatroom_history_messages(options))
            .await
            .expect("fetch history");
        if page.is_empty() {
            return all;
        }
        assert!(page.iter().all(|m| m.seq > after), "a page after {after} holds older messages");
        all.extend(page);
    }
}

/// Asserts that `seqs` is strictly increasing: no duplicate, nothing out of order.
pub fn assert_strictly_increasing(who: &str, seqs: &[u64]) {
    if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
        panic!("{who} was told seq {} after seq {} (duplicate or out of order)", w[1], w[0]);
    }
}

/// A memory connector whose connections fault on demand: held back at a gate (all of them, or
/// all but a given number), made deaf (frames from the server are swallowed, as if lost on the
/// way, while the connection stays up), severed (both sides see the end at once, through the
/// wrapped [`separate`](MemoryConnector::separate) connector), or dropped on the client's side
/// only (the server's side stays open, as with a half-open TCP connection whose end the server
/// has not noticed yet).
#[derive(Clone)]
pub struct FaultyConnector {
    inner: MemoryConnector,
    gate: Arc<Gate>,
    /// Every connection's faults, in connecting order; keeps half-dropped connections open.
    connections: Arc<Mutex<Vec<Arc<Faults>>>>,
    /// How many frames the next connection swallows from its start (`usize::MAX`: deaf).
    swallow_next: Arc<AtomicUsize>,
}

/// `None`: open; `Some(n)`: closed, but `n` more connections may pass.
#[derive(Default)]
struct Gate {
    passes: Mutex<Option<usize>>,
    changed: Notify,
    /// Connection attempts waiting at the gate.
    waiting: AtomicUsize,
}

/// The faults of one connection.
#[derive(Default)]
struct Faults {
    deaf: AtomicBool,
    /// Frames from the server still to swallow.
    swallow: AtomicUsize,
    /// Frames the client has sent.
    sent: AtomicUsize,
    /// Dropped on the client's side.
    dead: AtomicBool,
    died: Notify,
    /// The server-side-facing halves of a connection dropped on the client's side, kept so
    /// that the server does not see it end.
    kept: Mutex<Vec<Box<dyn Send>>>,
}

impl FaultyConnector {
    /// Wraps a connector of its own (use [`MemoryConnector::separate`]).
    pub fn new(inner: MemoryConnector) -> Self {
        Self { inner, gate: Arc::default(), connections: Arc::default(), swallow_next: Arc::default() }
    }

    /// For `RoomKit::connect_with`.
    pub fn boxed(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }

    /// New connections wait until [`open`](Self::open) or [`allow`](Self::allow).
    pub fn close_gate(&self) {
        *self.gate.passes.lock().expect("not poisoned") = Some(0);
    }

    /// Lets connections through again.
    pub fn open(&self) {
        *self.gate.passes.lock().expect("not poisoned") = None;
        self.gate.changed.notify_waiters();
    }

    /// Lets `n` more connections through the closed gate.
    pub fn allow(&self, n: usize) {
        if let Some(passes) = self.gate.passes.lock().expect("not poisoned").as_mut() {
            *passes += n;
        }
        self.gate.changed.notify_waiters();
    }

    /// Connection attempts waiting at the gate.
    pub fn waiting(&self) -> usize {
        self.gate.waiting.load(Ordering::SeqCst)
    }

    /// Drops the current connection abruptly, on both sides. Returns how many connections
    /// were dropped.
    pub fn sever(&self) -> usize {
        self.inner.sever_all()
    }

    fn newest(&self) -> Arc<Faults> {
        Arc::clone(self.connections.lock().expect("not poisoned").last().expect("connected once"))
    }

    /// From now on, frames from the server on the current connection are lost.
    pub fn deafen(&self) {
        self.newest().deaf.store(true, Ordering::SeqCst);
    }

    /// The next connection will be deaf from its start (say, the server's answer to the login
    /// of a reconnect is lost).
    pub fn deafen_next(&self) {
        self.swallow_next.store(usize::MAX, Ordering::SeqCst);
    }

    /// The next connection will lose the first `n` frames from the server.
    pub fn swallow_next(&self, n: usize) {
        self.swallow_next.store(n, Ordering::SeqCst);
    }

    /// The client sees its current connection end; the server does not (yet).
    pub fn drop_client_side(&self) {
        let faults = self.newest();
        faults.dead.store(true, Ordering::SeqCst);
        faults.died.notify_waiters();
    }

    /// How many connections were opened (the first one included).
    pub fn connects(&self) -> usize {
        self.connections.lock().expect("not poisoned").len()
    }

    /// How many frames the client sent on its `index`th connection (from 0), if it exists.
    pub fn frames_sent(&self, index: usize) -> Option<usize> {
        self.connections.lock().expect("not poisoned").get(index).map(|f| f.sent.load(Ordering::SeqCst))
    }
}

impl Gate {
    async fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut passes = self.passes.lock().expect("not poisoned");
                match passes.as_mut() {
                    None => break,
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        break;
                    }
                    Some(_) => {}
                }
            }
            changed.await;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Connector for FaultyConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.gate.pass().await;
        let Connection { sink, stream, peer } = self.inner.connect().await?;
        let faults = Arc::new(Faults::default());
        let swallow = self.swallow_next.swap(0, Ordering::SeqCst);
        faults.deaf.store(swallow == usize::MAX, Ordering::SeqCst);
        faults.swallow.store(swallow, Ordering::SeqCst);
        self.connections.lock().expect("not poisoned").push(Arc::clone(&faults));
        Ok(Connection {
            sink: Box::new(FaultySink { inner: Some(sink), faults: Arc::clone(&faults) }),
            stream: Box::new(FaultyStream { inner: Some(stream), faults }),
            peer,
        })
    }
}

struct FaultySink {
    inner: Option<Box<dyn FrameSink>>,
    faults: Arc<Faults>,
}

#[async_trait]
impl FrameSink for FaultySink {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        match self.inner.as_mut() {
            Some(inner) if !self.faults.dead.load(Ordering::SeqCst) => {
                inner.send(frames).await?;
                self.faults.sent.fetch_add(frames.len(), Ordering::SeqCst);
                Ok(())
            }
            _ => Err(TransportError::Closed(None)),
        }
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        match self.inner.as_mut() {
            Some(inner) if !self.faults.dead.load(Ordering::SeqCst) => inner.close(reason).await,
            _ => Ok(()),
        }
    }
}

impl Drop for FaultySink {
    fn drop(&mut self) {
        if let (Some(inner), true) = (self.inner.take(), self.faults.dead.load(Ordering::SeqCst)) {
            self.faults.kept.lock().expect("not poisoned").push(Box::new(inner));
        }
    }
}

/// Swallows frames while deaf (or while some remain to swallow); ends once dropped on the
/// client's side.
struct FaultyStream {
    inner: Option<Box<dyn FrameStream>>,
    faults: Arc<Faults>,
}

impl Faults {
    /// Whether to lose this frame.
    fn swallows(&self) -> bool {
        let counted = self.swallow.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.deaf.load(Ordering::SeqCst) || counted.is_ok()
    }
}

#[async_trait]
impl FrameStream for FaultyStream {
    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        let faults = Arc::clone(&self.faults);
        let inner = self.inner.as_mut().ok_or(TransportError::Closed(None))?;
        loop {
            let died = faults.died.notified();
            tokio::pin!(died);
            died.as_mut().enable();
            if faults.dead.load(Ordering::SeqCst) {
                return Err(TransportError::Closed(None));
            }
            tokio::select! {
                frame = inner.recv() => {
                    let frame = frame?;
                    if !faults.swallows() {
                        return Ok(frame);
                    }
                }
                () = &mut died => return Err(TransportError::Closed(None)),
            }
        }
    }
}

impl Drop for FaultyStream {
    fn drop(&mut self) {
        if let (Some(inner), true) = (self.inner.take(), self.faults.dead.load(Ordering::SeqCst)) {
            self.faults.kept.lock().expect("not poisoned").push(Box::new(inner));
        }
    }
}

/// A small xorshift generator, seeded from the clock; the seed is printed so that a failing
/// run can be replayed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock.
    pub fn from_clock(name: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        println!("{name}: random seed {seed}");
        Rng(seed)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
