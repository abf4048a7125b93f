//! Events the server pushes to members. Events carry no `id`; `event` names the kind.

use serde::{Deserialize, Serialize};

use crate::{
    model::{EndReason, Properties, RoomMember, SharedMessage},
    RoomUuid,
};

/// A server event (NERoom `NERoomEventCallback`). On the wire: `{"event": "<kind>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Members joined the room.
    MemberJoinRoom {
        /// The room.
        room_uuid: RoomUuid,
        /// Who joined.
        members: Vec<RoomMember>,
    },
    /// Members left the room.
    MemberLeaveRoom {
        /// The room.
        room_uuid: RoomUuid,
        /// Who left, as they were when they left.
        members: Vec<RoomMember>,
    },
    /// Members entered the room's chatroom. Sent to every room member, the joiner included.
    MemberJoinChatroom {
        /// The room.
        room_uuid: RoomUuid,
        /// Who entered.
        members: Vec<RoomMember>,
    },
    /// Members left the room's chatroom. Sent to every other room member.
    MemberLeaveChatroom {
        /// The room.
        room_uuid: RoomUuid,
        /// Who left.
        members: Vec<RoomMember>,
    },
    /// Chatroom messages for the receiving member.
    ChatroomMessagesReceived {
        /// The room.
        room_uuid: RoomUuid,
        /// The messages, in sequence order.
        messages: Vec<SharedMessage>,
    },
    /// The room ended for the receiving member.
    RoomEnd {
        /// The room.
        room_uuid: RoomUuid,
        /// Why.
        reason: EndReason,
    },
    /// Room properties were set.
    RoomPropertiesChanged {
        /// The room.
        room_uuid: RoomUuid,
        /// The changed keys with their new values.
        properties: Properties,
    },
    /// Room properties were deleted.
    RoomPropertiesDeleted {
        /// The room.
        room_uuid: RoomUuid,
        /// The deleted keys.
        keys: Vec<String>,
    },
    /// The room was locked or unlocked.
    RoomLockStateChanged {
        /// The room.
        room_uuid: RoomUuid,
        /// The new state.
        locked: bool,
    },
}

impl Event {
    /// The room the event is about.
    pub fn room_uuid(&self) -> &RoomUuid {
        match self {
            Event::MemberJoinRoom { room_uuid, .. }
            | Event::MemberLeaveRoom { room_uuid, .. }
            | Event::MemberJoinChatroom { room_uuid, .. }
            | Event::MemberLeaveChatroom { room_uuid, .. }
            | Event::ChatroomMessagesReceived { room_uuid, .. }
            | Event::RoomEnd { room_uuid, .. }
            | Event::RoomPropertiesChanged { room_uuid, .. }
            | Event::RoomPropertiesDeleted { room_uuid, .. }
            | Event::RoomLockStateChanged { room_uuid, .. } => room_uuid,
        }
    }
}
