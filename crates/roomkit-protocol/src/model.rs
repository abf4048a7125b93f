//! The data model shared by requests, responses and events.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{MessageUuid, RoomUuid, UserUuid};

/// String-to-string properties of a room or a member (NERoom `properties`).
pub type Properties = BTreeMap<String, String>;

/// A member's role in a room. On the wire: `"host"` or `"member"`, as in NERoom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The room's host: may lock, unlock and end the room and change its properties.
    /// Only the room's creator may join as host, so a room has at most one.
    Host,
    /// An ordinary member.
    #[default]
    Member,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Host => "host",
            Role::Member => "member",
        })
    }
}

/// A member of a room (NERoom `NERoomMember`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    /// The member's user uuid (its account id).
    pub uuid: UserUuid,
    /// Display name in this room.
    pub name: String,
    /// Avatar URL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// The member's role.
    pub role: Role,
    /// The member's properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: Properties,
    /// Whether the member is currently in the room's chatroom.
    pub is_in_chatroom: bool,
}

/// A snapshot of a room's own state, as seen by a member on joining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's uuid.
    pub room_uuid: RoomUuid,
    /// The room's display name.
    pub room_name: String,
    /// The user who created the room.
    pub creator: UserUuid,
    /// Room properties.
    #[serde(default)]
    pub properties: Properties,
    /// Whether the room is locked against new joins.
    pub locked: bool,
    /// Member limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<u32>,
    /// Whether the room has a chatroom (it was created with `enable_chatroom`).
    pub chatroom_enabled: bool,
    /// Whether joining needs a password.
    pub has_password: bool,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// Why a room ended for a member (NERoom `NERoomEndReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The member left by itself.
    LeaveBySelf,
    /// The member was kicked out.
    KickOut,
    /// A member (the host) ended the room.
    CloseByMember,
    /// The room stayed empty past its idle time.
    EndOfLife,
    /// Every member left.
    AllMembersOut,
    /// The backend (admin API) ended the room.
    CloseByBackend,
    /// The member's login became invalid.
    LoginStateError,
    /// The same account joined the room from another connection, replacing this one.
    KickedByOtherDevice,
    /// The server is shutting down.
    ServerShutdown,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

/// The kind of chatroom a message belongs to. Only the common chatroom exists today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatroomType {
    /// The room's one chatroom.
    #[default]
    Common,
}

/// What happened, for a notification message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    /// A message was recalled; `recalled_message_id` names it.
    MessageRecall,
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// The content of a chat message; `message_type` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum MessageBody {
    /// A text message.
    Text {
        /// The text.
        text: String,
    },
    /// An application-defined message; the server does not look inside `attach_str`.
    Custom {
        /// The application's payload.
        attach_str: String,
    },
    /// A notification from the server.
    Notification {
        /// What happened.
        event_type: NotificationType,
        /// Who caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operate_by: Option<UserUuid>,
        /// For a recall: the recalled message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recalled_message_id: Option<MessageUuid>,
    },
}

/// A chatroom message (NERoom `NERoomChatMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The message's uuid.
    pub message_uuid: MessageUuid,
    /// Sequence number in its chatroom: 1 for the first message, +1 for each next one.
    pub seq: u64,
    /// Which chatroom of the room.
    #[serde(default)]
    pub chatroom_type: ChatroomType,
    /// The sender.
    pub from_user_uuid: UserUuid,
    /// The sender's display name at the time of sending.
    pub from_nick: String,
    /// The sender's avatar at the time of sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_avatar: Option<String>,
    /// True for a message the application's backend sent through the admin API; then
    /// `from_user_uuid` names the backend, not a member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_backend: bool,
    /// The recipients; absent for a message to the whole chatroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user_uuid_list: Option<Vec<UserUuid>>,
    /// Server time of acceptance, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The message was recalled: its text or payload is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recalled: bool,
    /// How urgent the message is (see [`Priority`]): the server's scheduling class, set when
    /// the message is accepted. Not on the wire; an ephemeral message is low priority.
    #[serde(skip)]
    pub priority: Priority,
    /// False for an ephemeral message (`persist: false`): not stored, not in history, and not
    /// numbered (`seq` is 0). Omitted when true.
    #[serde(default = "persisted", skip_serializing_if = "is_persisted")]
    pub persist: bool,
    /// The content.
    #[serde(flatten)]
    pub body: MessageBody,
}

fn persisted() -> bool {
    true
}

fn is_persisted(persist: &bool) -> bool {
    *persist
}

impl ChatMessage {
    /// The text, for a text message.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            MessageBody::Text { text } => Some(text),
            _ => None,
        }
    }

    /// Whether `user` may see this message: broadcasts are for everyone, a directed
    /// message for its sender and its recipients.
    pub fn is_visible_to(&self, user: &UserUuid) -> bool {
        match &self.to_user_uuid_list {
            None => true,
            Some(to) => &self.from_user_uuid == user || to.contains(user),
        }
    }
}

/// How urgent a chat message is. Under a chatroom's message rate cap low-priority messages
/// are refused first and high-priority ones never; a slow reader's queue sheds low-priority
/// messages before anything else. Decided by the server; not sent on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Ephemeral messages (`persist: false`: likes, reactions, bullet comments).
    Low,
    /// Members' text and custom messages.
    #[default]
    Normal,
    /// The host's messages, the backend's, and server notifications (recall).
    High,
}

/// Exact online counts of a room: memberships of the room, and of them those inside its
/// chatroom. A membership in the reconnect grace period still counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Members of the room.
    pub room: u64,
    /// Members of the room inside its chatroom.
    pub chatroom: u64,
}

/// Order of a history query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOrder {
    /// Newest first, at or before `start_time` (the default, as in NERoom).
    #[default]
    Desc,
    /// Oldest first, at or after `start_time`.
    Asc,
}

/// Shared ownership of a message: stored once, referenced by history and by events.
pub type SharedMessage = Arc<ChatMessage>;
