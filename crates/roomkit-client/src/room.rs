//! Joined rooms: their mirrored state, [`RoomContext`] and [`ChatController`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use roomkit_protocol::{
    ops::{
        DeleteRoomProperty, EndRoom, FetchChatroomHistory, JoinChatroom, JoinRoom, LeaveChatroom, LeaveRoom,
        LockRoom, RecallChatroomMessage, SendCustomMessage, SendTextMessage, UnlockRoom, UpdateRoomProperty,
    },
    ChatMessage, EndReason, Event, HistoryOrder, MessageUuid, Properties, RoomInfo, RoomMember, RoomUuid,
    SharedMessage, UserUuid,
};
use tokio::sync::mpsc;

use crate::{
    events::{self, RoomEvent, RoomEventCallback, RoomEvents},
    session::Session,
    Error,
};

/// The local mirror of a joined room, kept current by the receive task.
pub(crate) struct RoomState {
    pub(crate) uuid: RoomUuid,
    local: UserUuid,
    data: Mutex<RoomData>,
    listeners: Mutex<Listeners>,
    /// Highest chatroom sequence number received or sent.
    last_seq: AtomicU64,
    /// How the room was joined, to join it again after a reconnect.
    join: JoinRoom,
    /// While catching up after a reconnect, live messages wait here so that everything is
    /// told in sequence order.
    held: Mutex<Option<Vec<ChatMessage>>>,
}

struct RoomData {
    info: RoomInfo,
    members: HashMap<UserUuid, RoomMember>,
}

#[derive(Default)]
struct Listeners {
    callbacks: Vec<Arc<dyn RoomEventCallback>>,
    streams: Vec<mpsc::UnboundedSender<RoomEvent>>,
}

impl RoomState {
    pub(crate) fn new(local: UserUuid, join: JoinRoom, info: RoomInfo, members: Vec<RoomMember>) -> Self {
        Self {
            join,
            held: Mutex::new(None),
            uuid: info.room_uuid.clone(),
            local,
            data: Mutex::new(RoomData {
                info,
                members: members.into_iter().map(|m| (m.uuid.clone(), m)).collect(),
            }),
            listeners: Mutex::new(Listeners::default()),
            last_seq: AtomicU64::new(0),
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, RoomData> {
        self.data.lock().expect("not poisoned")
    }

    /// Applies a server event and tells listeners.
    pub(crate) fn apply_event(&self, event: Event) {
        let event = {
            let mut data = self.data();
            match event {
                Event::MemberJoinRoom { members, .. } => {
                    for m in &members {
                        data.members.insert(m.uuid.clone(), m.clone());
                    }
                    RoomEvent::MemberJoinRoom(members)
                }
                Event::MemberLeaveRoom { members, .. } => {
                    for m in &members {
                        data.members.remove(&m.uuid);
                    }
                    RoomEvent::MemberLeaveRoom(members)
                }
                Event::MemberJoinChatroom { members, .. } => {
                    set_in_chatroom(&mut data, &members, true);
                    RoomEvent::MemberJoinChatroom(members)
                }
                Event::MemberLeaveChatroom { members, .. } => {
                    set_in_chatroom(&mut data, &members, false);
                    RoomEvent::MemberLeaveChatroom(members)
                }
                Event::ChatroomMessagesReceived { messages, .. } => {
                    drop(data);
                    let messages: Vec<ChatMessage> = messages.into_iter().map(Arc::unwrap_or_clone).collect();
                    let mut held = self.held.lock().expect("not poisoned");
                    if let Some(held) = held.as_mut() {
                        // Catching up after a reconnect: told in order once caught up.
                        held.extend(messages);
                        return;
                    }
                    let fresh = self.take_fresh(messages);
                    if !fresh.is_empty() {
                        self.notify(RoomEvent::ChatroomMessagesReceived(fresh));
                    }
                    return;
                }
                Event::RoomEnd { reason, .. } => RoomEvent::RoomEnd(reason),
                Event::RoomPropertiesChanged { properties, .. } => {
                    data.info.properties.extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
                    RoomEvent::RoomPropertiesChanged(properties)
                }
                Event::RoomPropertiesDeleted { keys, .. } => {
                    for k in &keys {
                        data.info.properties.remove(k);
                    }
                    RoomEvent::RoomPropertiesDeleted(keys)
                }
                Event::RoomLockStateChanged { locked, .. } => {
                    data.info.locked = locked;
                    RoomEvent::RoomLockStateChanged(locked)
                }
                _ => return,
            }
        };
        self.notify(event);
    }

    /// Replaces the mirrored room and members with a fresh snapshot (joining again on the
    /// same connection), keeping listeners.
    pub(crate) fn refresh(&self, info: RoomInfo, members: Vec<RoomMember>) {
        let mut data = self.data();
        data.info = info;
        data.members = members.into_iter().map(|m| (m.uuid.clone(), m)).collect();
    }

    /// Tells callbacks and streams; after `RoomEnd`, drops them.
    pub(crate) fn notify(&self, event: RoomEvent) {
        let ended = matches!(event, RoomEvent::RoomEnd(_));
        let callbacks = {
            let mut listeners = self.listeners.lock().expect("not poisoned");
            listeners.streams.retain(|s| s.send(event.clone()).is_ok());
            if ended {
                listeners.streams.clear();
            }
            listeners.callbacks.clone()
        };
        for callback in &callbacks {
            events::call(callback.as_ref(), &event);
        }
        if ended {
            self.listeners.lock().expect("not poisoned").callbacks.clear();
        }
    }

    pub(crate) fn set_local_in_chatroom(&self, inside: bool) {
        if let Some(m) = self.data().members.get_mut(&self.local) {
            m.is_in_chatroom = inside;
        }
    }

    fn note_seq(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// The messages newer than any seen, in order; advances the last sequence number. This
    /// is what makes replays and retries invisible: nothing is told twice.
    fn take_fresh(&self, mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
        messages.sort_by_key(|m| m.seq);
        let mut last = self.last_seq();
        messages.retain(|m| {
            let fresh = m.seq > last;
            last = last.max(m.seq);
            fresh
        });
        self.last_seq.fetch_max(last, Ordering::Relaxed);
        messages
    }

    pub(crate) fn join_params(&self) -> JoinRoom {
        self.join.clone()
    }

    pub(crate) fn local_in_chatroom(&self) -> bool {
        self.data().members.get(&self.local).is_some_and(|m| m.is_in_chatroom)
    }

    /// Starts holding live messages back (catching up after a reconnect).
    pub(crate) fn begin_resume(&self) {
        *self.held.lock().expect("not poisoned") = Some(Vec::new());
    }

    /// Tells missed messages (the local member's own are skipped: it sent them).
    pub(crate) fn deliver_replayed(&self, messages: Vec<SharedMessage>) {
        let messages: Vec<ChatMessage> = messages.into_iter().map(Arc::unwrap_or_clone).collect();
        let mut fresh = self.take_fresh(messages);
        fresh.retain(|m| m.from_user_uuid != self.local || m.from_backend);
        if !fresh.is_empty() {
            self.notify(RoomEvent::ChatroomMessagesReceived(fresh));
        }
    }

    /// Stops holding back: tells what arrived meanwhile and was not replayed. Under the
    /// hold lock, so that no live message slips in between.
    pub(crate) fn end_resume(&self) {
        let mut held = self.held.lock().expect("not poisoned");
        let fresh = self.take_fresh(held.take().unwrap_or_default());
        if !fresh.is_empty() {
            self.notify(RoomEvent::ChatroomMessagesReceived(fresh));
        }
    }
}

fn set_in_chatroom(data: &mut RoomData, members: &[RoomMember], inside: bool) {
    for m in members {
        if let Some(known) = data.members.get_mut(&m.uuid) {
            known.is_in_chatroom = inside;
        }
    }
}

/// A joined room (NERoom `NERoomContext`). Cheap to clone; every clone is the same room.
///
/// Getters read the local mirror, which the SDK keeps current from the server's events:
/// when a call returns, the mirror already reflects what the call did.
#[derive(Clone)]
pub struct RoomContext {
    pub(crate) session: Arc<Session>,
    pub(crate) state: Arc<RoomState>,
}

impl std::fmt::Debug for RoomContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomContext").field("room_uuid", &self.state.uuid).finish_non_exhaustive()
    }
}

impl RoomContext {
    /// The room's uuid.
    pub fn room_uuid(&self) -> RoomUuid {
        self.state.uuid.clone()
    }

    /// The room's name.
    pub fn room_name(&self) -> String {
        self.state.data().info.room_name.clone()
    }

    /// The room's state as last seen: properties, lock, limits, creator.
    pub fn room_info(&self) -> RoomInfo {
        self.state.data().info.clone()
    }

    /// The local member.
    pub fn local_member(&self) -> RoomMember {
        let data = self.state.data();
        data.members.get(&self.state.local).cloned().expect("the local member is in its own room")
    }

    /// Every member but the local one (NERoom `remoteMembers`). Order is unspecified.
    pub fn remote_members(&self) -> Vec<RoomMember> {
        let data = self.state.data();
        data.members.values().filter(|m| m.uuid != self.state.local).cloned().collect()
    }

    /// A member by uuid, local or remote.
    pub fn get_member(&self, user_uuid: &str) -> Option<RoomMember> {
        self.state.data().members.get(user_uuid).cloned()
    }

    /// The room's properties.
    pub fn room_properties(&self) -> Properties {
        self.state.data().info.properties.clone()
    }

    /// Whether the room is locked against new joins.
    pub fn is_room_locked(&self) -> bool {
        self.state.data().info.locked
    }

    /// The room's member limit, if any.
    pub fn max_members(&self) -> Option<u32> {
        self.state.data().info.max_members
    }

    /// Leaves the room (and its chatroom). The context is gone afterwards, and listeners
    /// get [`RoomEvent::RoomEnd`] with [`EndReason::LeaveBySelf`].
    pub async fn leave_room(&self) -> Result<(), Error> {
        let room = self.state.uuid.clone();
        let apply: crate::session::Apply = Box::new(move |session, response| {
            if response.code.is_success() {
                let removed = session.rooms.lock().expect("not poisoned").remove(&room);
                if let Some(state) = removed {
                    state.notify(RoomEvent::RoomEnd(EndReason::LeaveBySelf));
                }
            }
        });
        self.session.call_then(&LeaveRoom { room_uuid: self.state.uuid.clone() }, Some(apply)).await?;
        Ok(())
    }

    /// Ends the room for everyone (host only). Every member, the caller included, gets
    /// `room_end` with [`EndReason::CloseByMember`]. `force` is NERoom's `isForce`,
    /// accepted for compatibility.
    pub async fn end_room(&self, force: bool) -> Result<(), Error> {
        self.session.call(&EndRoom { room_uuid: self.state.uuid.clone(), force }).await?;
        Ok(())
    }

    /// Locks the room against new joins (host only).
    pub async fn lock_room(&self) -> Result<(), Error> {
        self.session.call(&LockRoom { room_uuid: self.state.uuid.clone() }).await?;
        Ok(())
    }

    /// Unlocks the room (host only).
    pub async fn unlock_room(&self) -> Result<(), Error> {
        self.session.call(&UnlockRoom { room_uuid: self.state.uuid.clone() }).await?;
        Ok(())
    }

    /// Sets a room property (host only); every member gets `room_properties_changed`.
    pub async fn update_room_property(&self, key: &str, value: &str) -> Result<(), Error> {
        let params =
            UpdateRoomProperty { room_uuid: self.state.uuid.clone(), key: key.into(), value: value.into() };
        self.session.call(&params).await?;
        Ok(())
    }

    /// Deletes a room property (host only); every member gets `room_properties_deleted`.
    pub async fn delete_room_property(&self, key: &str) -> Result<(), Error> {
        self.session
            .call(&DeleteRoomProperty { room_uuid: self.state.uuid.clone(), key: key.into() })
            .await?;
        Ok(())
    }

    /// Registers a callback for this room's events.
    pub fn add_event_callback(&self, callback: Arc<dyn RoomEventCallback>) {
        self.state.listeners.lock().expect("not poisoned").callbacks.push(callback);
    }

    /// Unregisters a callback added with [`add_event_callback`](Self::add_event_callback).
    pub fn remove_event_callback(&self, callback: &Arc<dyn RoomEventCallback>) {
        self.state.listeners.lock().expect("not poisoned").callbacks.retain(|c| !Arc::ptr_eq(c, callback));
    }

    /// This room's events from now on, as a stream.
    pub fn events(&self) -> RoomEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state.listeners.lock().expect("not poisoned").streams.push(tx);
        RoomEvents { rx }
    }

    /// The room's chatroom.
    pub fn chat_controller(&self) -> ChatController {
        ChatController { room: self.clone() }
    }
}

/// Options of [`ChatController::fetch_chatroom_history_messages`] (NERoom
/// `NEChatroomHistoryMessageSearchOption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchHistoryOptions {
    /// Milliseconds since the Unix epoch; default: now for `Desc`, the beginning for `Asc`.
    pub start_time: Option<u64>,
    /// At most this many messages, 1–100.
    pub limit: u32,
    /// Newest first (default) or oldest first.
    pub order: HistoryOrder,
    /// By sequence number instead: the messages after this one, oldest first.
    pub after_seq: Option<u64>,
}

impl Default for FetchHistoryOptions {
    fn default() -> Self {
        Self { start_time: None, limit: 100, order: HistoryOrder::Desc, after_seq: None }
    }
}

/// The room's chatroom (NERoom `NERoomChatController`).
#[derive(Clone, Debug)]
pub struct ChatController {
    room: RoomContext,
}

impl ChatController {
    /// Whether the room has a chatroom (it was created with `enable_chatroom`).
    pub fn is_supported(&self) -> bool {
        self.room.state.data().info.chatroom_enabled
    }

    /// Whether the local member is in the chatroom.
    pub fn is_in_chatroom(&self) -> bool {
        self.room.local_member().is_in_chatroom
    }

    /// Highest chatroom sequence number this client has seen (received or sent).
    pub fn last_seq(&self) -> u64 {
        self.room.state.last_seq.load(Ordering::Relaxed)
    }

    /// Enters the chatroom. Every room member, the caller included, gets
    /// `member_join_chatroom`. Entering again succeeds and changes nothing.
    pub async fn join_chatroom(&self) -> Result<(), Error> {
        self.enter(None).await.map(|_| ())
    }

    /// Enters the chatroom and returns its last `count` messages (1–100) the caller may see,
    /// oldest first, in the same call — to show a late joiner what was said.
    pub async fn join_chatroom_with_history(&self, count: u32) -> Result<Vec<ChatMessage>, Error> {
        let mut messages = self.enter(Some(count)).await?;
        messages.reverse();
        Ok(messages)
    }

    async fn enter(&self, history_count: Option<u32>) -> Result<Vec<ChatMessage>, Error> {
        let params = JoinChatroom { room_uuid: self.room.state.uuid.clone(), history_count };
        let out = self.room.session.call(&params).await?;
        // What was said before entering is history, not something missed: a later resume
        // catches up from here.
        self.room.state.note_seq(out.last_seq);
        Ok(out.messages.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// Leaves the chatroom: no further chatroom messages arrive. Every other room member
    /// gets `member_leave_chatroom`.
    pub async fn leave_chatroom(&self) -> Result<(), Error> {
        let state = Arc::clone(&self.room.state);
        let apply: crate::session::Apply = Box::new(move |_, response| {
            if response.code.is_success() {
                state.set_local_in_chatroom(false);
            }
        });
        self.room
            .session
            .call_then(&LeaveChatroom { room_uuid: self.room.state.uuid.clone() }, Some(apply))
            .await?;
        Ok(())
    }

    /// Sends text to every chatroom member but the caller; returns the stored message, with
    /// its sequence number.
    pub async fn send_broadcast_text_message(&self, text: &str) -> Result<ChatMessage, Error> {
        self.send_text(None, text).await
    }

    /// Sends text to one chatroom member.
    pub async fn send_direct_text_message(&self, user_uuid: &str, text: &str) -> Result<ChatMessage, Error> {
        self.send_text(Some(vec![parse_user(user_uuid)?]), text).await
    }

    /// Sends text to exactly the listed chatroom members.
    pub async fn send_group_text_message(
        &self,
        user_uuids: &[&str],
        text: &str,
    ) -> Result<ChatMessage, Error> {
        let to = user_uuids.iter().map(|u| parse_user(u)).collect::<Result<Vec<_>, _>>()?;
        self.send_text(Some(to), text).await
    }

    /// Sends an application-defined payload to every chatroom member but the caller.
    pub async fn send_broadcast_custom_message(&self, attach_str: &str) -> Result<ChatMessage, Error> {
        let params = SendCustomMessage {
            room_uuid: self.room.state.uuid.clone(),
            message_uuid: Some(new_message_uuid()),
            to_user_uuid_list: None,
            attach_str: attach_str.into(),
        };
        let out = self.room.session.call_retrying(&params).await?;
        self.room.state.note_seq(out.message.seq);
        Ok(Arc::unwrap_or_clone(out.message))
    }

    /// Recent chatroom history the caller may see: broadcasts, and directed messages to or
    /// from the caller.
    pub async fn fetch_chatroom_history_messages(
        &self,
        options: FetchHistoryOptions,
    ) -> Result<Vec<ChatMessage>, Error> {
        let params = FetchChatroomHistory {
            room_uuid: self.room.state.uuid.clone(),
            start_time: options.start_time,
            limit: Some(options.limit),
            order: options.order,
            after_seq: options.after_seq,
        };
        let out = self.room.session.call(&params).await?;
        Ok(out.messages.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// Recalls a message (NERoom `recallChatroomMessage`): its sender within the server's
    /// recall window (2 minutes by default), or the host at any time. Every chatroom member
    /// receives a notification message carrying the recalled id; returns that notification.
    pub async fn recall_chatroom_message(&self, message_uuid: &str) -> Result<ChatMessage, Error> {
        let message_uuid = MessageUuid::new(message_uuid).map_err(|e| Error::bad_id("message_uuid", e))?;
        let params = RecallChatroomMessage { room_uuid: self.room.state.uuid.clone(), message_uuid };
        let out = self.room.session.call(&params).await?;
        Ok(Arc::unwrap_or_clone(out.message))
    }

    async fn send_text(&self, to: Option<Vec<UserUuid>>, text: &str) -> Result<ChatMessage, Error> {
        let params = SendTextMessage {
            room_uuid: self.room.state.uuid.clone(),
            message_uuid: Some(new_message_uuid()),
            to_user_uuid_list: to,
            text: text.into(),
        };
        let out = self.room.session.call_retrying(&params).await?;
        self.room.state.note_seq(out.message.seq);
        Ok(Arc::unwrap_or_clone(out.message))
    }
}

fn parse_user(s: &str) -> Result<UserUuid, Error> {
    UserUuid::new(s).map_err(|e| Error::bad_id("to_user_uuid_list", e))
}

fn new_message_uuid() -> MessageUuid {
    MessageUuid::new(uuid::Uuid::new_v4().simple().to_string()).expect("hex is a valid id")
}
