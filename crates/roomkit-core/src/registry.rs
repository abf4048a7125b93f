//! The room registry: the sans-IO state machine a driver runs.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use roomkit_protocol::{
    ops::{
        CreateRoom, CreateRoomOutput, Empty, FetchChatroomHistory, FetchChatroomHistoryOutput, JoinChatroom,
        JoinRoom, JoinRoomOutput, RecallOutput, Request, Response, SendMessageOutput,
    },
    ChatMessage, ChatroomType, EndReason, Event, HistoryOrder, MessageBody, MessageUuid, NotificationType,
    Properties, Role, RoomInfo, RoomMember, RoomUuid, SharedMessage, UserUuid,
};

use crate::{
    config::MAX_HISTORY_LIMIT,
    room::Room,
    store::{HistoryQuery, HistoryRange, RoomRecord, StoreOp},
    Audience, ConnId, CoreConfig, Error, Identity,
};

/// What the driver must do next. Drain with [`RoomRegistry::poll_output`] after every input.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Answer request `request_id` of connection `conn`.
    Reply {
        /// The connection that sent the request.
        conn: ConnId,
        /// The request's id.
        request_id: u64,
        /// The response data, or why the request failed.
        result: Result<Response, Error>,
    },
    /// Send `event` to every connection of `audience`. Encode it once and share the bytes.
    Deliver {
        /// The recipients.
        audience: Audience,
        /// The event.
        event: Event,
    },
    /// Make this durable before sending any later reply or delivery (only with
    /// [`CoreConfig::store_outputs`]). Apply every `Store` output of one wake-up in one
    /// commit.
    Store(StoreOp),
    /// Answer request `request_id` of `conn` with this page of the room's history, read from
    /// the store and sent as a `fetch_chatroom_history` response (only with
    /// [`CoreConfig::store_outputs`]).
    History {
        /// The connection that asked.
        conn: ConnId,
        /// The request's id.
        request_id: u64,
        /// The room.
        room_uuid: RoomUuid,
        /// What to read; visibility is already set to the asking member.
        query: HistoryQuery,
    },
    /// A room ended; informational (logs, metrics). Its members were sent `room_end`.
    RoomEnded {
        /// The room.
        room_uuid: RoomUuid,
        /// Why.
        reason: EndReason,
    },
}

/// Every room of one shard, and the rules of rooms and chatrooms.
///
/// A sans-IO state machine in the manner of `quinn-proto`: it never blocks, spawns or reads
/// a clock. Methods group as:
/// - inputs: [`handle_request`](Self::handle_request),
///   [`handle_disconnect`](Self::handle_disconnect), [`handle_timeout`](Self::handle_timeout);
/// - commands: [`close_room`](Self::close_room), [`close_all`](Self::close_all);
/// - outputs: [`poll_output`](Self::poll_output) (drain it after every input or command)
///   and [`poll_timeout`](Self::poll_timeout) (call `handle_timeout` when it is reached);
/// - getters: [`room_info`](Self::room_info), [`members`](Self::members), ...
///
/// Time is an input: `now` is milliseconds since the Unix epoch; it stamps messages and
/// drives idle expiry.
///
/// ```
/// use roomkit_core::{ConnId, CoreConfig, Identity, Output, RoomRegistry};
/// use roomkit_protocol::ops::{CreateRoom, Request};
///
/// let mut rooms = RoomRegistry::new(CoreConfig::default());
/// let alice = Identity::unrestricted("alice".parse().unwrap());
/// let create = CreateRoom {
///     room_uuid: "r1".parse().unwrap(),
///     room_name: "Maths".into(),
///     template_id: None,
///     max_members: None,
///     password: None,
///     initial_room_properties: Default::default(),
///     enable_chatroom: true,
/// };
/// rooms.handle_request(1_000, ConnId(1), &alice, 7, Request::CreateRoom(create));
/// while let Some(output) = rooms.poll_output() {
///     match output {
///         Output::Reply { conn, request_id, result } => {
///             assert_eq!((conn, request_id), (ConnId(1), 7));
///             assert!(result.is_ok());
///         }
///         Output::Deliver { .. } | Output::RoomEnded { .. } => {}
///         Output::Store(_) | Output::History { .. } => {} // only with `store_outputs`
///     }
/// }
/// assert_eq!(rooms.room_count(), 1);
/// ```
#[derive(Debug)]
pub struct RoomRegistry {
    config: CoreConfig,
    rooms: HashMap<RoomUuid, Room>,
    /// The user of each connection that is in rooms, and those rooms, for disconnects.
    conn_rooms: HashMap<ConnId, (UserUuid, Vec<RoomUuid>)>,
    ended: EndedRooms,
    /// Idle-expiry deadlines; an entry is stale if its room has since had members.
    timers: BinaryHeap<Reverse<(u64, Timer)>>,
    outputs: VecDeque<Output>,
}

impl RoomRegistry {
    /// An empty registry.
    pub fn new(config: CoreConfig) -> Self {
        let ended = EndedRooms::new(config.ended_rooms_remembered);
        Self {
            config,
            rooms: HashMap::new(),
            conn_rooms: HashMap::new(),
            ended,
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Handles one request of connection `conn`, authenticated as `identity`. Produces a
    /// [`Output::Reply`], preceded by the events the request caused, in the order members
    /// must see them.
    pub fn handle_request(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        request_id: u64,
        request: Request,
    ) {
        let empty = |()| Empty {};
        let result = match request {
            Request::CreateRoom(p) => self.create_room(now, identity, p).map(Response::CreateRoom),
            Request::JoinRoom(p) => self.join_room(now, conn, identity, p).map(Response::JoinRoom),
            Request::LeaveRoom(p) => {
                self.leave_room(now, conn, identity, &p.room_uuid).map(empty).map(Response::LeaveRoom)
            }
            Request::EndRoom(p) => {
                self.end_room(conn, identity, &p.room_uuid).map(empty).map(Response::EndRoom)
            }
            Request::LockRoom(p) => {
                self.set_locked(conn, identity, &p.room_uuid, true).map(empty).map(Response::LockRoom)
            }
            Request::UnlockRoom(p) => {
                self.set_locked(conn, identity, &p.room_uuid, false).map(empty).map(Response::UnlockRoom)
            }
            Request::UpdateRoomProperty(p) => self
                .update_property(conn, identity, &p.room_uuid, p.key, Some(p.value))
                .map(empty)
                .map(Response::UpdateRoomProperty),
            Request::DeleteRoomProperty(p) => self
                .update_property(conn, identity, &p.room_uuid, p.key, None)
                .map(empty)
                .map(Response::DeleteRoomProperty),
            Request::JoinChatroom(p) => match self.join_chatroom(conn, identity, request_id, p) {
                Ok(Some(out)) => Ok(Response::JoinChatroom(out)),
                Ok(None) => return, // its history is asked of the store: the driver answers
                Err(e) => Err(e),
            },
            Request::LeaveChatroom(p) => {
                self.leave_chatroom(conn, identity, &p.room_uuid).map(empty).map(Response::LeaveChatroom)
            }
            Request::SendTextMessage(p) => self
                .send_message(
                    now,
                    conn,
                    identity,
                    &p.room_uuid,
                    p.message_uuid,
                    p.to_user_uuid_list,
                    MessageBody::Text { text: p.text },
                )
                .map(Response::SendTextMessage),
            Request::SendCustomMessage(p) => self
                .send_message(
                    now,
                    conn,
                    identity,
                    &p.room_uuid,
                    p.message_uuid,
                    p.to_user_uuid_list,
                    MessageBody::Custom { attach_str: p.attach_str },
                )
                .map(Response::SendCustomMessage),
            Request::FetchChatroomHistory(p) => match self.fetch_history(conn, identity, request_id, p) {
                Ok(Some(page)) => Ok(Response::FetchChatroomHistory(page)),
                Ok(None) => return, // asked of the store: the driver answers `Output::History`
                Err(e) => Err(e),
            },
            Request::RecallChatroomMessage(p) => self
                .recall(now, conn, identity, &p.room_uuid, &p.message_uuid)
                .map(Response::RecallChatroomMessage),
            Request::Ping(_) => Ok(Response::Ping(Empty {})),
            Request::Login(_) => Err(Error::Forbidden("login is answered by the connection, not by rooms")),
            _ => Err(Error::Forbidden("operation not handled by rooms")),
        };
        self.outputs.push_back(Output::Reply { conn, request_id, result });
    }

    /// The connection is gone. Its members stay for `reconnect_grace_ms`, silently: if they
    /// join again in time nobody notices; if not, they leave with the usual events. With no
    /// grace period they leave at once.
    pub fn handle_disconnect(&mut self, now: u64, conn: ConnId) {
        let Some((user, rooms)) = self.conn_rooms.remove(&conn) else { return };
        let grace = self.config.reconnect_grace_ms;
        for room_uuid in rooms {
            if grace == 0 {
                self.remove_member(now, &room_uuid, &user, None);
            } else if let Some(room) = self.rooms.get_mut(&room_uuid) {
                room.detach(&user, now);
                self.timers.push(Reverse((now.saturating_add(grace), Timer::Grace(room_uuid, user.clone()))));
            }
        }
    }

    /// The driver could not store `ops` (an [`Output::Store`] batch): their messages were
    /// neither acknowledged nor delivered, so they are forgotten here too — a retry with the
    /// same message id is stored as new.
    pub fn handle_store_failed(&mut self, ops: &[StoreOp]) {
        for op in ops {
            if let StoreOp::Append { room, message } = op {
                if let Some(chat) = self.rooms.get_mut(room).and_then(|r| r.chatroom.as_mut()) {
                    chat.forget(message);
                }
            }
        }
    }

    /// Ends rooms empty for the idle timeout; removes members gone for the grace period.
    pub fn handle_timeout(&mut self, now: u64) {
        let (idle, grace) = (self.config.room_idle_timeout_ms, self.config.reconnect_grace_ms);
        while let Some(Reverse((deadline, _))) = self.timers.peek() {
            if *deadline > now {
                break;
            }
            let Reverse((_, timer)) = self.timers.pop().expect("peeked");
            match timer {
                Timer::RoomIdle(room_uuid) => {
                    let expired = self
                        .rooms
                        .get(&room_uuid)
                        .and_then(|r| r.empty_since)
                        .is_some_and(|since| since.saturating_add(idle) <= now);
                    if expired {
                        self.close_room_now(&room_uuid, EndReason::EndOfLife, true);
                    }
                }
                Timer::Grace(room_uuid, user) => {
                    let gone = self
                        .rooms
                        .get(&room_uuid)
                        .and_then(|r| r.member(&user))
                        .and_then(|m| m.detached_since)
                        .is_some_and(|since| since.saturating_add(grace) <= now);
                    if gone {
                        self.remove_member(now, &room_uuid, &user, None);
                    }
                }
            }
        }
    }

    // ---- commands -----------------------------------------------------------------------

    /// Ends a room on behalf of the backend or operator; members get `room_end(reason)`.
    pub fn close_room(&mut self, room_uuid: &RoomUuid, reason: EndReason) -> Result<(), Error> {
        self.room(room_uuid)?;
        self.close_room_now(room_uuid, reason, true);
        Ok(())
    }

    /// Ends every room (shutdown); members get `room_end(reason)`. Rooms stay in the store:
    /// after a restart they are back, with their history.
    pub fn close_all(&mut self, reason: EndReason) {
        let all: Vec<RoomUuid> = self.rooms.keys().cloned().collect();
        for room_uuid in all {
            self.close_room_now(&room_uuid, reason, false);
        }
    }

    /// Brings back a room from the store after a restart: no members (they join again), its
    /// chatroom numbering after `last_seq`, and `recent` messages (oldest first) in the
    /// history ring and the retry window. The idle timer starts at `now`.
    pub fn restore_room(&mut self, now: u64, record: RoomRecord, last_seq: u64, recent: Vec<SharedMessage>) {
        let uuid = record.info.room_uuid.clone();
        let mut room =
            Room::new(record.info, record.password, self.config.history_ring_size, self.config.dedupe_window);
        room.empty_since = Some(now);
        if let Some(chat) = room.chatroom.as_mut() {
            chat.resume_after(last_seq);
            for message in recent {
                chat.remember(message);
            }
        }
        self.ended.forget(&uuid);
        self.rooms.insert(uuid.clone(), room);
        self.arm_idle_timer(now, uuid);
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ---- getters ------------------------------------------------------------------------

    /// Number of live rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Every live room.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomInfo> {
        self.rooms.values().map(|r| &r.info)
    }

    /// A live room's state.
    pub fn room_info(&self, room_uuid: &RoomUuid) -> Option<&RoomInfo> {
        self.rooms.get(room_uuid).map(|r| &r.info)
    }

    /// A live room's members, in join order (as far as removals allow).
    pub fn members(&self, room_uuid: &RoomUuid) -> Option<Vec<RoomMember>> {
        self.rooms.get(room_uuid).map(Room::members)
    }

    /// A live room's chatroom members.
    pub fn chatroom_members(&self, room_uuid: &RoomUuid) -> Option<Vec<RoomMember>> {
        self.rooms.get(room_uuid).map(Room::chatroom_members)
    }

    /// Total members of all rooms, and of all chatrooms.
    pub fn member_counts(&self) -> (usize, usize) {
        self.rooms.values().fold((0, 0), |(m, c), r| {
            (m + r.member_count(), c + r.chatroom.as_ref().map_or(0, |ch| ch.roster.len()))
        })
    }

    // ---- request handlers ---------------------------------------------------------------

    /// Creates a room as `identity` — the `create_room` request, for callers without a
    /// connection (the admin API). Same checks, same result.
    pub fn create_room(
        &mut self,
        now: u64,
        identity: &Identity,
        p: CreateRoom,
    ) -> Result<CreateRoomOutput, Error> {
        if !identity.grants.create_rooms {
            return Err(Error::Forbidden("the credentials do not grant creating rooms"));
        }
        let c = &self.config;
        check_chars("room_name", &p.room_name, 1, c.max_room_name_chars)?;
        let password = p.password.filter(|p| !p.is_empty());
        if let Some(pw) = &password {
            check_chars("password", pw, 1, c.max_password_chars)?;
        }
        if let Some(t) = &p.template_id {
            check_bytes("template_id", t, c.max_avatar_bytes)?;
        }
        if p.max_members == Some(0) {
            return Err(Error::bad("max_members", "must be at least 1"));
        }
        check_properties("initial_room_properties", &p.initial_room_properties, c)?;
        if self.rooms.contains_key(&p.room_uuid) {
            return Err(Error::RoomAlreadyExists(p.room_uuid));
        }
        let info = RoomInfo {
            room_uuid: p.room_uuid.clone(),
            room_name: p.room_name,
            creator: identity.user.clone(),
            properties: p.initial_room_properties,
            locked: false,
            max_members: p.max_members,
            chatroom_enabled: p.enable_chatroom,
            has_password: password.is_some(),
            created_at: now,
        };
        self.ended.forget(&p.room_uuid);
        self.rooms.insert(
            p.room_uuid.clone(),
            Room::new(info.clone(), password, self.config.history_ring_size, self.config.dedupe_window),
        );
        self.store_room(&p.room_uuid);
        self.arm_idle_timer(now, p.room_uuid);
        Ok(CreateRoomOutput { room: info })
    }

    fn join_room(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        p: JoinRoom,
    ) -> Result<JoinRoomOutput, Error> {
        if !identity.grants.join.allows(&p.room_uuid) {
            return Err(Error::Forbidden("the credentials do not grant joining this room"));
        }
        let c = &self.config;
        check_chars("user_name", &p.user_name, 1, c.max_user_name_chars)?;
        if let Some(a) = &p.avatar {
            check_bytes("avatar", a, c.max_avatar_bytes)?;
        }
        check_properties("initial_my_properties", &p.initial_my_properties, c)?;
        let user = &identity.user;
        let room = self.room(&p.room_uuid)?;
        let previous_conn = room.member(user).map(|m| m.conn);
        if previous_conn == Some(conn) {
            // Joining again on the same connection changes nothing.
            return Ok(JoinRoomOutput { room: room.info.clone(), members: room.members() });
        }
        let detached = room.member(user).is_some_and(|m| m.detached_since.is_some());
        if detached || (p.resume && previous_conn.is_some()) {
            // Back within the grace period (or before the server noticed the drop): the
            // member takes up its place again on this connection, silently. (The password
            // was checked when it first joined.)
            let room = self.rooms.get_mut(&p.room_uuid).expect("checked above");
            room.reattach(user, conn);
            if let Some(old) = previous_conn.filter(|_| !detached) {
                // The old connection, if it is still there at all, is told it lost the room.
                self.untrack(old, &p.room_uuid);
                let end =
                    Event::RoomEnd { room_uuid: p.room_uuid.clone(), reason: EndReason::KickedByOtherDevice };
                self.deliver(Audience::only(vec![old]), end);
            }
            let room = self.rooms.get_mut(&p.room_uuid).expect("checked above");
            let output = JoinRoomOutput { room: room.info.clone(), members: room.members() };
            self.conn_rooms.entry(conn).or_insert_with(|| (user.clone(), Vec::new())).1.push(p.room_uuid);
            return Ok(output);
        }
        if previous_conn.is_none() && room.info.locked {
            return Err(Error::RoomLocked(p.room_uuid));
        }
        if room.password.is_some() && room.password != p.password {
            return Err(Error::BadPassword(p.room_uuid));
        }
        if previous_conn.is_none() {
            if let Some(max) = room.info.max_members {
                if room.member_count() >= max as usize {
                    return Err(Error::RoomFull { room: p.room_uuid, max });
                }
            }
        }
        if p.role == Role::Host {
            if room.info.creator != *user && !identity.grants.room_admin {
                return Err(Error::Forbidden("only the room's creator may join as host"));
            }
            let host_elsewhere =
                room.has_host() && !room.member(user).is_some_and(|m| m.info.role == Role::Host);
            if host_elsewhere {
                return Err(Error::OverRoleLimit(p.room_uuid));
            }
        }

        // The same account on another connection: that connection is replaced.
        if previous_conn.is_some() {
            self.remove_member(now, &p.room_uuid, user, Some(EndReason::KickedByOtherDevice));
        }
        let info = RoomMember {
            uuid: user.clone(),
            name: p.user_name,
            avatar: p.avatar,
            role: p.role,
            properties: p.initial_my_properties,
            is_in_chatroom: false,
        };
        let room = self.rooms.get_mut(&p.room_uuid).expect("checked above");
        room.add(info.clone(), conn);
        let audience = room.audience(Some(conn));
        let output = JoinRoomOutput { room: room.info.clone(), members: room.members() };
        self.conn_rooms.entry(conn).or_insert_with(|| (user.clone(), Vec::new())).1.push(p.room_uuid.clone());
        self.deliver(audience, Event::MemberJoinRoom { room_uuid: p.room_uuid, members: vec![info] });
        Ok(output)
    }

    fn leave_room(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
    ) -> Result<(), Error> {
        self.room(room_uuid)?.member_on(conn, &identity.user)?;
        self.remove_member(now, room_uuid, &identity.user, None);
        Ok(())
    }

    fn end_room(&mut self, conn: ConnId, identity: &Identity, room_uuid: &RoomUuid) -> Result<(), Error> {
        self.room(room_uuid)?.require_host(conn, identity)?;
        self.close_room_now(room_uuid, EndReason::CloseByMember, true);
        Ok(())
    }

    fn set_locked(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
        locked: bool,
    ) -> Result<(), Error> {
        let room = self.room_mut(room_uuid)?;
        room.require_host(conn, identity)?;
        if room.info.locked == locked {
            return Ok(());
        }
        room.info.locked = locked;
        let audience = room.audience(None);
        self.store_room(room_uuid);
        self.deliver(audience, Event::RoomLockStateChanged { room_uuid: room_uuid.clone(), locked });
        Ok(())
    }

    fn update_property(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
        key: String,
        value: Option<String>,
    ) -> Result<(), Error> {
        let limits = self.config.clone();
        let room = self.room_mut(room_uuid)?;
        room.require_host(conn, identity)?;
        if key.is_empty() {
            return Err(Error::bad("key", "must not be empty"));
        }
        check_bytes("key", &key, limits.max_property_key_bytes)?;
        let event = match value {
            Some(value) => {
                check_bytes("value", &value, limits.max_property_value_bytes)?;
                let props = &mut room.info.properties;
                if !props.contains_key(&key) && props.len() >= limits.max_properties {
                    return Err(Error::bad(
                        "key",
                        format!("a room has at most {} properties", limits.max_properties),
                    ));
                }
                if props.get(&key) == Some(&value) {
                    return Ok(()); // unchanged: no event, as for lock and delete
                }
                props.insert(key.clone(), value.clone());
                Event::RoomPropertiesChanged {
                    room_uuid: room_uuid.clone(),
                    properties: [(key, value)].into(),
                }
            }
            None => {
                if room.info.properties.remove(&key).is_none() {
                    return Ok(());
                }
                Event::RoomPropertiesDeleted { room_uuid: room_uuid.clone(), keys: vec![key] }
            }
        };
        let audience = room.audience(None);
        self.store_room(room_uuid);
        self.deliver(audience, event);
        Ok(())
    }

    /// Enters the chatroom; answers with its newest sequence number and, if asked, its last
    /// messages — from the ring (`Some`), or through an [`Output::History`] for the store.
    fn join_chatroom(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        request_id: u64,
        p: JoinChatroom,
    ) -> Result<Option<FetchChatroomHistoryOutput>, Error> {
        let room_uuid = &p.room_uuid;
        if p.history_count.is_some_and(|n| n == 0 || n > MAX_HISTORY_LIMIT) {
            return Err(Error::bad("history_count", format!("must be 1 to {MAX_HISTORY_LIMIT}")));
        }
        let room = self.room_mut(room_uuid)?;
        room.member_on(conn, &identity.user)?;
        if room.chatroom.is_none() {
            return Err(Error::ChatroomNotEnabled(room_uuid.clone()));
        }
        if room.enter_chatroom(&identity.user) {
            let member = room.member(&identity.user).expect("member").info.clone();
            let audience = room.audience(None);
            self.deliver(
                audience,
                Event::MemberJoinChatroom { room_uuid: room_uuid.clone(), members: vec![member] },
            );
        } // else already inside: success, no second event
        let chat = self.rooms[room_uuid].chatroom.as_ref().expect("checked above");
        let Some(count) = p.history_count else {
            let page =
                chat.page(&HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(u64::MAX), limit: 1 });
            return Ok(Some(FetchChatroomHistoryOutput {
                messages: Vec::new(),
                first_seq: page.first_seq,
                last_seq: page.last_seq,
            }));
        };
        let query = HistoryQuery {
            viewer: Some(identity.user.clone()),
            range: HistoryRange::Time { start_time: None, order: HistoryOrder::Desc },
            limit: count as usize,
        };
        if self.config.store_outputs {
            self.outputs.push_back(Output::History { conn, request_id, room_uuid: room_uuid.clone(), query });
            return Ok(None);
        }
        let page = chat.page(&query);
        Ok(Some(FetchChatroomHistoryOutput {
            messages: page.messages,
            first_seq: page.first_seq,
            last_seq: page.last_seq,
        }))
    }

    fn leave_chatroom(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
    ) -> Result<(), Error> {
        let room = self.room_mut(room_uuid)?;
        room.member_on(conn, &identity.user)?;
        if room.chatroom.is_none() {
            return Err(Error::ChatroomNotEnabled(room_uuid.clone()));
        }
        if !room.leave_chatroom(&identity.user) {
            return Err(Error::NotInChatroom(room_uuid.clone()));
        }
        let member = room.member(&identity.user).expect("member").info.clone();
        let audience = room.audience(Some(conn));
        self.deliver(
            audience,
            Event::MemberLeaveChatroom { room_uuid: room_uuid.clone(), members: vec![member] },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_message(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
        message_uuid: Option<MessageUuid>,
        to: Option<Vec<UserUuid>>,
        body: MessageBody,
    ) -> Result<SendMessageOutput, Error> {
        let limits = (self.config.max_message_bytes, self.config.max_recipients);
        let room = self.room_mut(room_uuid)?;
        let sender = room.member_on(conn, &identity.user)?;
        let (from_nick, from_avatar) = (sender.info.name.clone(), sender.info.avatar.clone());
        if room.chatroom.is_none() {
            return Err(Error::ChatroomNotEnabled(room_uuid.clone()));
        }
        if !room.is_in_chatroom(&identity.user) {
            return Err(Error::NotInChatroom(room_uuid.clone()));
        }
        check_body(&body, limits.0)?;
        // Directed messages: every recipient must be in the chatroom.
        let to = match to {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::bad(
                        "to_user_uuid_list",
                        "must not be empty; omit it to send to the whole chatroom",
                    ));
                }
                let mut seen = HashSet::with_capacity(list.len());
                let list: Vec<UserUuid> = list.into_iter().filter(|u| seen.insert(u.clone())).collect();
                if list.len() > limits.1 {
                    return Err(Error::bad("to_user_uuid_list", format!("at most {} recipients", limits.1)));
                }
                if let Some(missing) = list.iter().find(|u| !room.is_in_chatroom(u)) {
                    return Err(Error::MemberNotFound(missing.clone()));
                }
                Some(list)
            }
        };
        let audience = to.as_ref().map(|list| {
            Audience::only(
                list.iter().filter_map(|u| room.member(u)).map(|m| m.conn).filter(|c| *c != conn).collect(),
            )
        });
        let chat = room.chatroom.as_mut().expect("checked above");
        if let Some(id) = &message_uuid {
            if let Some(earlier) = chat.find_recent(id) {
                // A retry: the message is stored already; answer as the first time, deliver
                // nothing again.
                if earlier.from_user_uuid == identity.user {
                    return Ok(SendMessageOutput { message: Arc::clone(earlier) });
                }
                return Err(Error::bad("message_uuid", "already used by another sender"));
            }
        }
        let seq = chat.take_seq();
        let message_uuid = match message_uuid {
            Some(id) => id,
            None => MessageUuid::new(format!("s{now}-{seq}")).expect("digits and dashes are a valid id"),
        };
        let message = Arc::new(ChatMessage {
            message_uuid,
            seq,
            chatroom_type: ChatroomType::Common,
            from_user_uuid: identity.user.clone(),
            from_nick,
            from_avatar,
            from_backend: false,
            to_user_uuid_list: to,
            time: now,
            recalled: false,
            body,
        });
        chat.remember(Arc::clone(&message));
        let audience = audience.unwrap_or_else(|| chat.roster.audience(Some(conn)));
        self.store(StoreOp::Append { room: room_uuid.clone(), message: Arc::clone(&message) });
        self.deliver(
            audience,
            Event::ChatroomMessagesReceived {
                room_uuid: room_uuid.clone(),
                messages: vec![Arc::clone(&message)],
            },
        );
        Ok(SendMessageOutput { message })
    }

    /// Sends a text message from the application's backend to the whole chatroom: every
    /// chatroom member receives it, with `from_backend` set. Same text limits as members'.
    pub fn send_backend_message(
        &mut self,
        now: u64,
        room_uuid: &RoomUuid,
        from: UserUuid,
        from_nick: String,
        text: String,
    ) -> Result<SharedMessage, Error> {
        let max = self.config.max_message_bytes;
        let room = self.room_mut(room_uuid)?;
        let chat = room.chatroom.as_mut().ok_or_else(|| Error::ChatroomNotEnabled(room_uuid.clone()))?;
        let body = MessageBody::Text { text };
        check_body(&body, max)?;
        let seq = chat.take_seq();
        let message = Arc::new(ChatMessage {
            message_uuid: MessageUuid::new(format!("b{now}-{seq}"))
                .expect("digits and dashes are a valid id"),
            seq,
            chatroom_type: ChatroomType::Common,
            from_user_uuid: from,
            from_nick,
            from_avatar: None,
            from_backend: true,
            to_user_uuid_list: None,
            time: now,
            recalled: false,
            body,
        });
        chat.remember(Arc::clone(&message));
        let audience = chat.roster.audience(None);
        self.store(StoreOp::Append { room: room_uuid.clone(), message: Arc::clone(&message) });
        self.deliver(
            audience,
            Event::ChatroomMessagesReceived {
                room_uuid: room_uuid.clone(),
                messages: vec![Arc::clone(&message)],
            },
        );
        Ok(message)
    }

    fn recall(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        room_uuid: &RoomUuid,
        message_uuid: &MessageUuid,
    ) -> Result<RecallOutput, Error> {
        let window = self.config.recall_window_ms;
        let room = self.room_mut(room_uuid)?;
        let caller = room.member_on(conn, &identity.user)?;
        let is_host = caller.info.role == Role::Host || identity.grants.room_admin;
        let nick = caller.info.name.clone();
        let chat = room.chatroom.as_ref().ok_or_else(|| Error::ChatroomNotEnabled(room_uuid.clone()))?;
        let original = chat
            .find_recent(message_uuid)
            .filter(|m| !matches!(m.body, MessageBody::Notification { .. }))
            .cloned()
            .ok_or_else(|| Error::MessageNotFound(message_uuid.clone()))?;
        if original.recalled {
            return Err(Error::bad("message_uuid", "the message is already recalled"));
        }
        let own = original.from_user_uuid == identity.user;
        let may = is_host || (own && now.saturating_sub(original.time) <= window);
        if !may {
            return Err(Error::Forbidden(if own {
                "the recall window for this message has passed"
            } else {
                "only the sender or the host may recall a message"
            }));
        }
        // A directed message's recall is news only to those who could see it.
        let to = original.to_user_uuid_list.as_ref().map(|to| {
            let mut to = to.clone();
            if !to.contains(&original.from_user_uuid) {
                to.push(original.from_user_uuid.clone());
            }
            to
        });
        let directed = to.as_ref().map(|to| {
            Audience::only(
                to.iter()
                    .filter(|u| room.is_in_chatroom(u))
                    .filter_map(|u| room.member(u))
                    .map(|m| m.conn)
                    .collect(),
            )
        });
        let chat = room.chatroom.as_mut().expect("checked above");
        let seq = chat.take_seq();
        let notification = Arc::new(ChatMessage {
            message_uuid: MessageUuid::new(format!("r{now}-{seq}"))
                .expect("digits and dashes are a valid id"),
            seq,
            chatroom_type: ChatroomType::Common,
            from_user_uuid: identity.user.clone(),
            from_nick: nick,
            from_avatar: None,
            from_backend: false,
            to_user_uuid_list: to,
            time: now,
            recalled: false,
            body: MessageBody::Notification {
                event_type: NotificationType::MessageRecall,
                operate_by: Some(identity.user.clone()),
                recalled_message_id: Some(message_uuid.clone()),
            },
        });
        let mut recalled = (*original).clone();
        recalled.recalled = true;
        recalled.body = match recalled.body {
            MessageBody::Text { .. } => MessageBody::Text { text: String::new() },
            MessageBody::Custom { .. } => MessageBody::Custom { attach_str: String::new() },
            other => other,
        };
        let recalled = Arc::new(recalled);
        chat.replace(Arc::clone(&recalled));
        chat.remember(Arc::clone(&notification));
        let audience = directed.unwrap_or_else(|| chat.roster.audience(None));
        self.store(StoreOp::Append { room: room_uuid.clone(), message: recalled });
        self.store(StoreOp::Append { room: room_uuid.clone(), message: Arc::clone(&notification) });
        self.deliver(
            audience,
            Event::ChatroomMessagesReceived {
                room_uuid: room_uuid.clone(),
                messages: vec![Arc::clone(&notification)],
            },
        );
        Ok(RecallOutput { message: notification })
    }

    /// Answers from the ring (`Some`), or queues an [`Output::History`] for the store.
    fn fetch_history(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        request_id: u64,
        p: FetchChatroomHistory,
    ) -> Result<Option<FetchChatroomHistoryOutput>, Error> {
        let room = self.room(&p.room_uuid)?;
        room.member_on(conn, &identity.user)?;
        let chat = room.chatroom.as_ref().ok_or_else(|| Error::ChatroomNotEnabled(p.room_uuid.clone()))?;
        let limit = p.limit.unwrap_or(MAX_HISTORY_LIMIT);
        if limit == 0 || limit > MAX_HISTORY_LIMIT {
            return Err(Error::bad("limit", format!("must be 1 to {MAX_HISTORY_LIMIT}")));
        }
        let range = match p.after_seq {
            Some(after) => HistoryRange::AfterSeq(after),
            None => HistoryRange::Time { start_time: p.start_time, order: p.order },
        };
        let query = HistoryQuery { viewer: Some(identity.user.clone()), range, limit: limit as usize };
        if self.config.store_outputs {
            self.outputs.push_back(Output::History { conn, request_id, room_uuid: p.room_uuid, query });
            return Ok(None);
        }
        let page = chat.page(&query);
        Ok(Some(FetchChatroomHistoryOutput {
            messages: page.messages,
            first_seq: page.first_seq,
            last_seq: page.last_seq,
        }))
    }

    // ---- shared mechanics ---------------------------------------------------------------

    fn room(&self, room_uuid: &RoomUuid) -> Result<&Room, Error> {
        self.rooms.get(room_uuid).ok_or_else(|| self.missing(room_uuid))
    }

    fn room_mut(&mut self, room_uuid: &RoomUuid) -> Result<&mut Room, Error> {
        if !self.rooms.contains_key(room_uuid) {
            return Err(self.missing(room_uuid));
        }
        Ok(self.rooms.get_mut(room_uuid).expect("checked"))
    }

    fn missing(&self, room_uuid: &RoomUuid) -> Error {
        if self.ended.contains(room_uuid) {
            Error::RoomEnded(room_uuid.clone())
        } else {
            Error::RoomNotExist(room_uuid.clone())
        }
    }

    fn deliver(&mut self, audience: Audience, event: Event) {
        if !audience.is_empty() {
            self.outputs.push_back(Output::Deliver { audience, event });
        }
    }

    /// Removes `user` from the room, telling the others (`member_leave_chatroom` if it was in
    /// the chatroom, then `member_leave_room`). With `ended`, the member's own connection is
    /// sent `room_end(ended)`.
    fn remove_member(&mut self, now: u64, room_uuid: &RoomUuid, user: &UserUuid, ended: Option<EndReason>) {
        let Some(room) = self.rooms.get_mut(room_uuid) else { return };
        let was_in_chatroom = room.is_in_chatroom(user);
        let Some(member) = room.remove(user, now) else { return };
        let others = room.audience(None);
        let empty = room.member_count() == 0;
        let mut info = member.info;
        info.is_in_chatroom = false;
        if was_in_chatroom {
            self.deliver(
                others.clone(),
                Event::MemberLeaveChatroom { room_uuid: room_uuid.clone(), members: vec![info.clone()] },
            );
        }
        self.deliver(others, Event::MemberLeaveRoom { room_uuid: room_uuid.clone(), members: vec![info] });
        if let Some(reason) = ended {
            self.deliver(
                Audience::only(vec![member.conn]),
                Event::RoomEnd { room_uuid: room_uuid.clone(), reason },
            );
        }
        self.untrack(member.conn, room_uuid);
        if empty {
            self.arm_idle_timer(now, room_uuid.clone());
        }
    }

    /// Ends a room; `forget` also deletes it from the store.
    fn close_room_now(&mut self, room_uuid: &RoomUuid, reason: EndReason, forget: bool) {
        let Some(room) = self.rooms.remove(room_uuid) else { return };
        self.deliver(room.audience(None), Event::RoomEnd { room_uuid: room_uuid.clone(), reason });
        for conn in room.audience(None).iter() {
            self.untrack(conn, room_uuid);
        }
        self.ended.remember(room_uuid.clone());
        if forget {
            self.store(StoreOp::DeleteRoom(room_uuid.clone()));
        }
        self.outputs.push_back(Output::RoomEnded { room_uuid: room_uuid.clone(), reason });
    }

    fn store(&mut self, op: StoreOp) {
        if self.config.store_outputs {
            self.outputs.push_back(Output::Store(op));
        }
    }

    fn store_room(&mut self, room_uuid: &RoomUuid) {
        if let Some(record) = self.rooms.get(room_uuid).map(Room::record) {
            self.store(StoreOp::PutRoom(record));
        }
    }

    fn untrack(&mut self, conn: ConnId, room_uuid: &RoomUuid) {
        if let Some((_, rooms)) = self.conn_rooms.get_mut(&conn) {
            rooms.retain(|r| r != room_uuid);
            if rooms.is_empty() {
                self.conn_rooms.remove(&conn);
            }
        }
    }

    fn arm_idle_timer(&mut self, now: u64, room_uuid: RoomUuid) {
        let deadline = now.saturating_add(self.config.room_idle_timeout_ms);
        self.timers.push(Reverse((deadline, Timer::RoomIdle(room_uuid))));
    }
}

/// What a deadline is for. Entries go stale (the room got members again, the member came
/// back); each is checked when it comes due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The room may have been empty for the idle timeout.
    RoomIdle(RoomUuid),
    /// The member's connection may have been gone for the reconnect grace period.
    Grace(RoomUuid, UserUuid),
}

/// A bounded memory of ended rooms, oldest forgotten first.
#[derive(Debug)]
struct EndedRooms {
    order: VecDeque<RoomUuid>,
    set: HashSet<RoomUuid>,
    capacity: usize,
}

impl EndedRooms {
    fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    fn remember(&mut self, room: RoomUuid) {
        if self.capacity == 0 || !self.set.insert(room.clone()) {
            return;
        }
        self.order.push_back(room);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn forget(&mut self, room: &RoomUuid) {
        if self.set.remove(room) {
            self.order.retain(|r| r != room);
        }
    }

    fn contains(&self, room: &RoomUuid) -> bool {
        self.set.contains(room)
    }
}

fn check_chars(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), Error> {
    let n = s.chars().count();
    if n < min {
        return Err(Error::bad(field, "must not be empty"));
    }
    if n > max {
        return Err(Error::bad(field, format!("at most {max} characters, got {n}")));
    }
    Ok(())
}

fn check_bytes(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    if s.len() > max {
        return Err(Error::bad(field, format!("at most {max} bytes, got {}", s.len())));
    }
    Ok(())
}

fn check_properties(field: &'static str, props: &Properties, c: &CoreConfig) -> Result<(), Error> {
    if props.len() > c.max_properties {
        return Err(Error::bad(field, format!("at most {} properties", c.max_properties)));
    }
    for (k, v) in props {
        if k.is_empty() || k.len() > c.max_property_key_bytes {
            return Err(Error::bad(field, format!("keys must be 1 to {} bytes", c.max_property_key_bytes)));
        }
        if v.len() > c.max_property_value_bytes {
            return Err(Error::bad(
                field,
                format!("values must be at most {} bytes", c.max_property_value_bytes),
            ));
        }
    }
    Ok(())
}

fn check_body(body: &MessageBody, max: usize) -> Result<(), Error> {
    let (field, content) = match body {
        MessageBody::Text { text } => ("text", text),
        MessageBody::Custom { attach_str } => ("attach_str", attach_str),
        MessageBody::Notification { .. } => {
            return Err(Error::bad("message_type", "clients cannot send notifications"))
        }
    };
    if content.is_empty() {
        return Err(Error::bad(field, "must not be empty"));
    }
    if content.len() > max {
        return Err(Error::MessageTooLong { len: content.len(), max });
    }
    Ok(())
}
