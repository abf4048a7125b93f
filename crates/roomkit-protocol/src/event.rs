//! Events the server pushes to members. Events carry no `id`; `event` names the kind.

use serde::{Deserialize, Serialize};

use crate::{
    model::{EndReason, MemberCounts, Priority, Properties, RoomMember, SharedMessage},
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
    /// Presence of a large room, coalesced: what changed in the room and its chatroom over the
    /// last digest interval, instead of one `member_*` event per member (see the presence
    /// policy in the protocol documentation). Sent to every room member.
    MembersChanged(Box<MembersChanged>),
}

/// The body of [`Event::MembersChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersChanged {
    /// The room.
    pub room_uuid: RoomUuid,
    /// The exact online counts at the end of the interval.
    pub counts: MemberCounts,
    /// How many joined the room in the interval.
    pub joined_count: u64,
    /// How many left the room in the interval.
    pub left_count: u64,
    /// How many entered the chatroom in the interval.
    pub chatroom_joined_count: u64,
    /// How many left the chatroom in the interval.
    pub chatroom_left_count: u64,
    /// Some of those who joined the room, as they are now (the host always, others up to the
    /// digest's name limit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<RoomMember>,
    /// Some of those who left the room, as they were when they left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<RoomMember>,
    /// Some of those who entered the chatroom.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chatroom_joined: Vec<RoomMember>,
    /// Some of those who left the chatroom.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chatroom_left: Vec<RoomMember>,
}

/// How a queued event may be shed by a connection whose queue is backing up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shedding {
    /// Must be delivered; if it cannot be, the connection is closed (`SLOW_CONSUMER`).
    Keep,
    /// May be dropped first (low-priority chat messages).
    Droppable,
    /// Only the newest queued one per room matters (presence digests).
    Conflate,
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
            Event::MembersChanged(digest) => &digest.room_uuid,
        }
    }

    /// Whether this event carries chat messages (`chatroom_messages_received`).
    pub fn is_chat_message(&self) -> bool {
        matches!(self, Event::ChatroomMessagesReceived { .. })
    }

    /// How a slow reader's queue may shed this event.
    pub fn shedding(&self) -> Shedding {
        match self {
            Event::MembersChanged(_) => Shedding::Conflate,
            Event::ChatroomMessagesReceived { messages, .. }
                if messages.iter().all(|m| m.priority == Priority::Low) =>
            {
                Shedding::Droppable
            }
            _ => Shedding::Keep,
        }
    }
}
