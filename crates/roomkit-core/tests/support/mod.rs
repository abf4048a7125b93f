//! A tiny harness around `RoomRegistry` for behaviour tests: it keeps a clock and a
//! `MemoryStore`, sends one input at a time, commits what the registry asks to store, answers
//! its history queries from the store, and drains every output, expanding each `Deliver` into
//! one `(recipient, event)` pair per connection of its audience, in emission order.

// Each test binary uses a different part of it.
#![allow(dead_code)]

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use futures::executor::block_on;
use roomkit_core::{
    store::{MemoryStore, MessageStore, Retention},
    ConnId, CoreConfig, Error, Identity, Output, RoomRegistry, RosterKind,
};
use roomkit_protocol::{
    ops::{
        CreateRoom, FetchChatroomHistory, JoinRoom, Request, Response, SendCustomMessage, SendTextMessage,
    },
    Code, EndReason, Event, HistoryOrder, Role, RoomUuid, SharedMessage, UserUuid,
};

/// A user on one connection.
#[derive(Debug, Clone)]
pub struct User {
    /// Who the connection is logged in as.
    pub id: Identity,
    /// The connection.
    pub conn: ConnId,
}

impl User {
    /// `name` (also its user uuid) with every default grant, on connection `conn`.
    pub fn new(name: &str, conn: u64) -> Self {
        Self { id: Identity::unrestricted(uid(name)), conn: ConnId(conn) }
    }

    /// The same account on another connection (another device).
    pub fn on(&self, conn: u64) -> Self {
        Self { id: self.id.clone(), conn: ConnId(conn) }
    }

    /// The user uuid.
    pub fn uuid(&self) -> UserUuid {
        self.id.user.clone()
    }

    /// The user uuid as a string.
    pub fn name(&self) -> &str {
        self.id.user.as_str()
    }
}

/// Everything the registry produced after one input.
#[derive(Debug, Default)]
pub struct Drained {
    /// `(conn, request_id, result)` of every reply.
    pub replies: Vec<(ConnId, u64, Result<Response, Error>)>,
    /// Every delivery, one entry per recipient, in the order the registry emitted them.
    pub deliveries: Vec<(ConnId, Event)>,
    /// Every `RoomEnded`.
    pub ended: Vec<(RoomUuid, EndReason)>,
}

impl Drained {
    /// The events `conn` received, in order.
    pub fn events_for(&self, conn: ConnId) -> Vec<Event> {
        self.deliveries.iter().filter(|(c, _)| *c == conn).map(|(_, e)| e.clone()).collect()
    }

    /// Every connection that received something.
    pub fn recipients(&self) -> BTreeSet<ConnId> {
        self.deliveries.iter().map(|(c, _)| *c).collect()
    }

    /// Whether nothing at all was output.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.deliveries.is_empty() && self.ended.is_empty()
    }
}

/// The outputs of one request: its reply, and what it caused.
#[derive(Debug)]
pub struct Outcome {
    /// The reply.
    pub result: Result<Response, Error>,
    /// The events it caused (and anything else emitted with it).
    pub out: Drained,
}

impl Outcome {
    /// `Code::SUCCESS`, or the error's code.
    pub fn code(&self) -> Code {
        match &self.result {
            Ok(_) => Code::SUCCESS,
            Err(e) => e.code(),
        }
    }

    /// The error; panics on success.
    pub fn err(&self) -> &Error {
        match &self.result {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    /// The response; panics on failure.
    #[track_caller]
    pub fn ok(&self) -> &Response {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("expected success, got {:?}: {e}", e.code()),
        }
    }

    /// The message of a successful send.
    #[track_caller]
    pub fn message(&self) -> SharedMessage {
        match self.ok() {
            Response::SendTextMessage(o) | Response::SendCustomMessage(o) => o.message.clone(),
            other => panic!("not a send response: {other:?}"),
        }
    }

    /// The messages of a successful history fetch.
    #[track_caller]
    pub fn history(&self) -> Vec<SharedMessage> {
        match self.ok() {
            Response::FetchChatroomHistory(o) => o.messages.clone(),
            other => panic!("not a history response: {other:?}"),
        }
    }

    /// The events `conn` received, in order.
    pub fn events_for(&self, conn: ConnId) -> Vec<Event> {
        self.out.events_for(conn)
    }

    /// Every connection that received something.
    pub fn recipients(&self) -> BTreeSet<ConnId> {
        self.out.recipients()
    }
}

/// The store a driver without one of its own would use: a `MemoryStore` keeping
/// `history_ring_size` messages per chatroom, as `roomkit-server` does.
pub fn memory_store(config: &CoreConfig) -> Arc<dyn MessageStore> {
    MemoryStore::shared(Retention { max_messages: Some(config.history_ring_size as u64), max_age_ms: None })
}

/// What a driver does after each input: commits what `reg` asks to store into `store`,
/// reports the result, then drains the outputs, turning each `Output::History` into the
/// `Output::Reply` it stands for, answered from the store.
pub fn settle(reg: &mut RoomRegistry, store: &dyn MessageStore, now: u64) -> Vec<Output> {
    let ops = reg.take_commit();
    if !ops.is_empty() {
        reg.handle_commit(block_on(store.apply(now, &ops)));
    }
    assert!(reg.take_commit().is_empty(), "one commit per input");
    std::iter::from_fn(|| reg.poll_output())
        .map(|o| match o {
            Output::History { conn, request_id, room_uuid, read } => {
                let result = block_on(read.run(store, &room_uuid, now));
                assert!(result.is_ok(), "the memory store reads: {result:?}");
                Output::Reply { conn, request_id, result }
            }
            other => other,
        })
        .collect()
}

/// A registry, its store, a clock and a request counter.
pub struct Harness {
    /// The state machine under test.
    pub reg: RoomRegistry,
    /// Where its commits go and its history comes from.
    pub store: Arc<dyn MessageStore>,
    /// The current time, in ms; inputs are stamped with it.
    pub now: u64,
    next_request: u64,
    /// Each room's member lists as a driver delivering away from the registry rebuilds
    /// them from `Output::Roster` alone; every delivery to a whole list is checked against it.
    rosters: HashMap<(RoomUuid, RosterKind), BTreeSet<ConnId>>,
}

impl Default for Harness {
    /// Default limits, with no reconnect grace: a disconnect leaves at once (the grace
    /// period has tests of its own).
    fn default() -> Self {
        let mut config = CoreConfig::default();
        config.reconnect_grace_ms = 0;
        Self::new(config)
    }
}

impl Harness {
    /// A fresh registry with `config` and its [`memory_store`], at time 1 000 000.
    pub fn new(config: CoreConfig) -> Self {
        let store = memory_store(&config);
        Self::with_store(config, store)
    }

    /// A fresh registry with `config` and `store`, at time 1 000 000.
    pub fn with_store(config: CoreConfig, store: Arc<dyn MessageStore>) -> Self {
        Self::with_registry(RoomRegistry::new(config), store)
    }

    /// `reg` with `store`, at time 1 000 000.
    pub fn with_registry(reg: RoomRegistry, store: Arc<dyn MessageStore>) -> Self {
        Self {
            reg: reg.with_roster_outputs(),
            store,
            now: 1_000_000,
            next_request: 1,
            rosters: HashMap::new(),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Drains every pending output.
    pub fn drain(&mut self) -> Drained {
        let mut d = Drained::default();
        for o in settle(&mut self.reg, self.store.as_ref(), self.now) {
            match o {
                Output::Reply { conn, request_id, result } => d.replies.push((conn, request_id, result)),
                Output::Deliver { audience, event } => {
                    assert!(!audience.is_empty(), "empty audience for {event:?}");
                    assert_eq!(audience.iter().count(), audience.len(), "Audience::len disagrees with iter");
                    if let Some(kind) = audience.roster() {
                        let key = (event.room_uuid().clone(), kind);
                        let mut rebuilt = self.rosters.get(&key).cloned().unwrap_or_default();
                        if let Some(except) = audience.except() {
                            rebuilt.remove(&except);
                        }
                        let listed: BTreeSet<ConnId> = audience.iter().collect();
                        assert_eq!(
                            rebuilt, listed,
                            "the {kind:?} list rebuilt from roster outputs, for {event:?}"
                        );
                    }
                    for conn in audience.iter() {
                        d.deliveries.push((conn, event.clone()));
                    }
                }
                Output::Roster { room_uuid, roster, conn, present } => {
                    let list = self.rosters.entry((room_uuid, roster)).or_default();
                    let changed = if present { list.insert(conn) } else { list.remove(&conn) };
                    assert!(changed, "a roster output that changes nothing: {conn:?} present={present}");
                }
                Output::RoomEnded { room_uuid, reason } => {
                    self.rosters.remove(&(room_uuid.clone(), RosterKind::Room));
                    self.rosters.remove(&(room_uuid.clone(), RosterKind::Chatroom));
                    d.ended.push((room_uuid, reason));
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        d
    }

    /// Sends one request from `who` and collects its reply and the events it caused.
    /// Checks that there is exactly one reply, addressed to the sender, and that it comes last.
    #[track_caller]
    pub fn req(&mut self, who: &User, request: impl Into<Request>) -> Outcome {
        let request_id = self.next_request;
        self.next_request += 1;
        self.reg.handle_request(self.now, who.conn, &who.id, request_id, request.into());
        let mut out = self.drain();
        assert_eq!(out.replies.len(), 1, "exactly one reply per request: {:?}", out.replies);
        let (conn, id, result) = out.replies.pop().expect("one reply");
        assert_eq!((conn, id), (who.conn, request_id), "the reply goes to the requester");
        Outcome { result, out }
    }

    /// Like [`req`](Self::req), and asserts success.
    #[track_caller]
    pub fn ok(&mut self, who: &User, request: impl Into<Request>) -> Outcome {
        let o = self.req(who, request);
        o.ok();
        o
    }

    /// Like [`req`](Self::req), and asserts failure with `code`, without any event.
    #[track_caller]
    pub fn fails(&mut self, who: &User, request: impl Into<Request>, code: Code) -> Error {
        let o = self.req(who, request);
        assert_eq!(o.code(), code, "{:?}", o.result);
        assert!(o.out.deliveries.is_empty(), "a failed request emitted events: {:?}", o.out.deliveries);
        assert!(o.out.ended.is_empty());
        o.err().clone()
    }

    /// The connection is gone.
    pub fn disconnect(&mut self, conn: ConnId) -> Drained {
        self.reg.handle_disconnect(self.now, conn);
        self.drain()
    }

    /// Sets the clock to `now` and runs the timers.
    pub fn timeout_at(&mut self, now: u64) -> Drained {
        self.now = now;
        self.reg.handle_timeout(now);
        self.drain()
    }

    /// `(uuid, is_in_chatroom)` of the room's members, sorted.
    #[track_caller]
    pub fn members(&self, r: &str) -> Vec<(String, bool)> {
        let mut m: Vec<_> = self
            .reg
            .members(&room(r))
            .expect("live room")
            .into_iter()
            .map(|m| (m.uuid.to_string(), m.is_in_chatroom))
            .collect();
        m.sort();
        m
    }

    /// The uuids of the room's chatroom members, sorted.
    #[track_caller]
    pub fn chatroom_members(&self, r: &str) -> Vec<String> {
        let mut m: Vec<_> = self
            .reg
            .chatroom_members(&room(r))
            .expect("live room")
            .into_iter()
            .map(|m| m.uuid.to_string())
            .collect();
        m.sort();
        m
    }

    /// Creates room `r` as `creator`; then every user of `members` joins it (as a plain
    /// member), and every user of `chat` also joins its chatroom. Drops the events.
    #[track_caller]
    pub fn setup(&mut self, creator: &User, r: &str, members: &[&User], chat: &[&User]) {
        self.ok(creator, create(r, true));
        for m in members {
            self.ok(m, join(r, m.name()));
        }
        for m in chat {
            self.ok(m, join_chat(r));
        }
    }
}

/// A room uuid.
pub fn room(s: &str) -> RoomUuid {
    s.parse().expect("valid room uuid")
}

/// A user uuid.
pub fn uid(s: &str) -> UserUuid {
    s.parse().expect("valid user uuid")
}

/// `create_room` with default options.
pub fn create(r: &str, enable_chatroom: bool) -> CreateRoom {
    CreateRoom {
        room_uuid: room(r),
        room_name: format!("room {r}"),
        template_id: None,
        max_members: None,
        password: None,
        initial_room_properties: Default::default(),
        enable_chatroom,
    }
}

/// `join_room` as a plain member.
pub fn join(r: &str, name: &str) -> JoinRoom {
    JoinRoom {
        room_uuid: room(r),
        user_name: name.into(),
        role: Role::Member,
        avatar: None,
        password: None,
        initial_my_properties: Default::default(),
        resume: false,
    }
}

/// `join_room` as host.
pub fn join_host(r: &str, name: &str) -> JoinRoom {
    JoinRoom { role: Role::Host, ..join(r, name) }
}

/// `join_room` with a password.
pub fn join_pw(r: &str, name: &str, password: Option<&str>) -> JoinRoom {
    JoinRoom { password: password.map(Into::into), ..join(r, name) }
}

macro_rules! room_request {
    ($($fn_name:ident => $op:ident;)*) => {
        $(
            #[doc = concat!("`", stringify!($op), "` of room `r`.")]
            pub fn $fn_name(r: &str) -> roomkit_protocol::ops::$op {
                roomkit_protocol::ops::$op { room_uuid: room(r) }
            }
        )*
    };
}

room_request! {
    leave => LeaveRoom;
    lock => LockRoom;
    unlock => UnlockRoom;
    leave_chat => LeaveChatroom;
}

/// `join_chatroom` of room `r`.
pub fn join_chat(r: &str) -> roomkit_protocol::ops::JoinChatroom {
    roomkit_protocol::ops::JoinChatroom { room_uuid: room(r), history_count: None }
}

/// `end_room`.
pub fn end(r: &str) -> roomkit_protocol::ops::EndRoom {
    roomkit_protocol::ops::EndRoom { room_uuid: room(r), force: false }
}

/// `update_room_property`.
pub fn set_prop(r: &str, key: &str, value: &str) -> roomkit_protocol::ops::UpdateRoomProperty {
    roomkit_protocol::ops::UpdateRoomProperty { room_uuid: room(r), key: key.into(), value: value.into() }
}

/// `delete_room_property`.
pub fn del_prop(r: &str, key: &str) -> roomkit_protocol::ops::DeleteRoomProperty {
    roomkit_protocol::ops::DeleteRoomProperty { room_uuid: room(r), key: key.into() }
}

/// A text message to the whole chatroom.
pub fn text(r: &str, t: &str) -> SendTextMessage {
    SendTextMessage { room_uuid: room(r), message_uuid: None, to_user_uuid_list: None, text: t.into() }
}

/// A text message to some members.
pub fn direct(r: &str, to: &[&str], t: &str) -> SendTextMessage {
    SendTextMessage { to_user_uuid_list: Some(to.iter().map(|u| uid(u)).collect()), ..text(r, t) }
}

/// A custom message to the whole chatroom.
pub fn custom(r: &str, attach: &str) -> SendCustomMessage {
    SendCustomMessage {
        room_uuid: room(r),
        message_uuid: None,
        to_user_uuid_list: None,
        attach_str: attach.into(),
        persist: true,
    }
}

/// A history query.
pub fn fetch(
    r: &str,
    start_time: Option<u64>,
    limit: Option<u32>,
    order: HistoryOrder,
) -> FetchChatroomHistory {
    FetchChatroomHistory { room_uuid: room(r), start_time, limit, order, after_seq: None, cursor: None }
}

/// The texts of `messages`, in order.
pub fn texts(messages: &[SharedMessage]) -> Vec<String> {
    messages.iter().map(|m| m.text().unwrap_or("<not text>").to_owned()).collect()
}

/// The single member an event is about, with its `is_in_chatroom` flag, for member events.
pub fn subject(e: &Event) -> Option<(String, bool)> {
    let members = match e {
        Event::MemberJoinRoom { members, .. }
        | Event::MemberLeaveRoom { members, .. }
        | Event::MemberJoinChatroom { members, .. }
        | Event::MemberLeaveChatroom { members, .. } => members,
        _ => return None,
    };
    assert_eq!(members.len(), 1, "one member per event: {e:?}");
    Some((members[0].uuid.to_string(), members[0].is_in_chatroom))
}

/// A short description of an event, for compact assertions: `"join_room alice"`,
/// `"leave_chatroom bob"`, `"message 3"`, `"room_end CloseByMember"`, ...
pub fn describe(e: &Event) -> String {
    let who = || subject(e).map(|(u, _)| u).unwrap_or_default();
    match e {
        Event::MemberJoinRoom { .. } => format!("join_room {}", who()),
        Event::MemberLeaveRoom { .. } => format!("leave_room {}", who()),
        Event::MemberJoinChatroom { .. } => format!("join_chatroom {}", who()),
        Event::MemberLeaveChatroom { .. } => format!("leave_chatroom {}", who()),
        Event::ChatroomMessagesReceived { messages, .. } => {
            let seqs: Vec<String> = messages.iter().map(|m| m.seq.to_string()).collect();
            format!("message {}", seqs.join(","))
        }
        Event::RoomEnd { reason, .. } => format!("room_end {reason:?}"),
        Event::RoomPropertiesChanged { properties, .. } => {
            let kv: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("properties_changed {}", kv.join(","))
        }
        Event::RoomPropertiesDeleted { keys, .. } => format!("properties_deleted {}", keys.join(",")),
        Event::RoomLockStateChanged { locked, .. } => format!("locked {locked}"),
        Event::MembersChanged(d) => format!(
            "members_changed {}/{} +{} -{} chat +{} -{}",
            d.counts.room,
            d.counts.chatroom,
            d.joined_count,
            d.left_count,
            d.chatroom_joined_count,
            d.chatroom_left_count
        ),
        other => format!("{other:?}"),
    }
}

/// [`describe`] of every event `conn` received in `deliveries`.
pub fn described(deliveries: &[(ConnId, Event)], conn: ConnId) -> Vec<String> {
    deliveries.iter().filter(|(c, _)| *c == conn).map(|(_, e)| describe(e)).collect()
}
