//! Room events: as callbacks (NERoom `NERoomEventCallback`) and as a stream.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use roomkit_protocol::{ChatMessage, EndReason, MemberCounts, Properties, RoomMember};
use tokio::sync::mpsc;

/// Something that happened in a room, as seen by the local member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// Members joined the room. In a large room (past the server's per-member presence
    /// threshold, 500 by default) joins come in digests and only the members a digest names
    /// are told; [`MemberCountChanged`](Self::MemberCountChanged) tells how many there are.
    MemberJoinRoom(Vec<RoomMember>),
    /// Members left the room (in a large room, those a digest names).
    MemberLeaveRoom(Vec<RoomMember>),
    /// Members entered the chatroom (the local member included; in a large room, those a
    /// digest names).
    MemberJoinChatroom(Vec<RoomMember>),
    /// Other members left the chatroom (in a large room, those a digest names).
    MemberLeaveChatroom(Vec<RoomMember>),
    /// The room's online counts changed: told after the member events that changed them, and
    /// whenever an answer or a digest brings different counts. Exact as of the moment the
    /// server sent them.
    MemberCountChanged(MemberCounts),
    /// Chatroom messages arrived, in sequence order.
    ChatroomMessagesReceived(Vec<ChatMessage>),
    /// The room ended for the local member; the context is gone.
    RoomEnd(EndReason),
    /// Room properties were set.
    RoomPropertiesChanged(Properties),
    /// Room properties were deleted.
    RoomPropertiesDeleted(Vec<String>),
    /// The room was locked (`true`) or unlocked.
    RoomLockStateChanged(bool),
    /// After a reconnect, the room was rejoined and the chatroom messages missed meanwhile
    /// were told (in order, before newer ones). `recovered` is false when some of them were
    /// already beyond the server's retention: reload what you show.
    Resumed {
        /// Whether every missed message could be told.
        recovered: bool,
    },
}

/// Callbacks for room events; implement the ones you need. Called on the SDK's receive
/// task (or its reconnect task while resuming), one at a time per room, in the order events
/// happened: return quickly.
///
/// ```
/// use roomkit_client::RoomEventCallback;
/// use roomkit_protocol::RoomMember;
///
/// struct Roster;
/// impl RoomEventCallback for Roster {
///     fn member_join_chatroom(&self, members: &[RoomMember]) {
///         for m in members {
///             println!("{} entered the chatroom", m.name);
///         }
///     }
/// }
/// ```
#[allow(unused_variables)]
pub trait RoomEventCallback: Send + Sync {
    /// NERoom `memberJoinRoom`.
    fn member_join_room(&self, members: &[RoomMember]) {}
    /// NERoom `memberLeaveRoom`.
    fn member_leave_room(&self, members: &[RoomMember]) {}
    /// NERoom `memberJoinChatroom`.
    fn member_join_chatroom(&self, members: &[RoomMember]) {}
    /// NERoom `memberLeaveChatroom`.
    fn member_leave_chatroom(&self, members: &[RoomMember]) {}
    /// The online counts changed; see [`RoomEvent::MemberCountChanged`]. (NERoom has no such
    /// callback: its member counts are read from the room.)
    fn member_count_changed(&self, counts: MemberCounts) {}
    /// NERoom `chatroomMessagesReceived`.
    fn chatroom_messages_received(&self, messages: &[ChatMessage]) {}
    /// NERoom `roomEnd`.
    fn room_end(&self, reason: EndReason) {}
    /// NERoom `roomPropertiesChanged`.
    fn room_properties_changed(&self, properties: &Properties) {}
    /// NERoom `roomPropertiesDeleted`.
    fn room_properties_deleted(&self, keys: &[String]) {}
    /// NERoom `roomLockStateChanged`.
    fn room_lock_state_changed(&self, locked: bool) {}
    /// The room was rejoined after a reconnect; see [`RoomEvent::Resumed`].
    fn room_resumed(&self, recovered: bool) {}
}

pub(crate) fn call(callback: &dyn RoomEventCallback, event: &RoomEvent) {
    match event {
        RoomEvent::MemberJoinRoom(m) => callback.member_join_room(m),
        RoomEvent::MemberLeaveRoom(m) => callback.member_leave_room(m),
        RoomEvent::MemberJoinChatroom(m) => callback.member_join_chatroom(m),
        RoomEvent::MemberLeaveChatroom(m) => callback.member_leave_chatroom(m),
        RoomEvent::MemberCountChanged(c) => callback.member_count_changed(*c),
        RoomEvent::ChatroomMessagesReceived(m) => callback.chatroom_messages_received(m),
        RoomEvent::RoomEnd(r) => callback.room_end(*r),
        RoomEvent::RoomPropertiesChanged(p) => callback.room_properties_changed(p),
        RoomEvent::RoomPropertiesDeleted(k) => callback.room_properties_deleted(k),
        RoomEvent::RoomLockStateChanged(l) => callback.room_lock_state_changed(*l),
        RoomEvent::Resumed { recovered } => callback.room_resumed(*recovered),
    }
}

/// The events of one room as a [`Stream`](futures_core::Stream), from the moment it was
/// created. Ends after [`RoomEvent::RoomEnd`].
#[derive(Debug)]
pub struct RoomEvents {
    pub(crate) rx: mpsc::UnboundedReceiver<RoomEvent>,
}

impl RoomEvents {
    /// The next event; `None` once the room has ended and every event was read.
    pub async fn recv(&mut self) -> Option<RoomEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<RoomEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for RoomEvents {
    type Item = RoomEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomEvent>> {
        self.rx.poll_recv(cx)
    }
}
