//! Client requests and their responses.
//!
//! Each operation is a struct of parameters implementing [`Operation`], which names its
//! wire `op` and its response type. On the wire a request is the struct's fields plus
//! `id` and `op`:
//!
//! ```
//! use roomkit_protocol::{codec, ops::JoinChatroom, RoomUuid};
//! let frame = codec::encode_request(7, &JoinChatroom { room_uuid: RoomUuid::new("r1").unwrap(), history_count: None });
//! assert_eq!(&frame[..], br#"{"id":7,"op":"join_chatroom","room_uuid":"r1"}"#);
//! ```

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    model::{HistoryOrder, MemberCounts, Properties, Role, RoomInfo, RoomMember, SharedMessage},
    MessageUuid, RoomUuid, UserUuid,
};

/// A request type: its parameters are `Self`, its successful response is `Output`.
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// The wire name, the `op` field of the request frame.
    const OP: &'static str;
    /// What a successful response carries in `data`.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// Reads an optional request field whose absence means its default: `null` means the same,
/// as it does for the `Option` fields (the protocol promises `null` = absent everywhere).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// The response of operations that return nothing but success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Logs the connection in. Must be the first request; identity comes from here only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The account id; becomes the user uuid of everything this connection does.
    pub account_id: UserUuid,
    /// The access token.
    pub token: String,
}

/// The identity the server established for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginOutput {
    /// The user uuid.
    pub user_uuid: UserUuid,
    /// The display name the credentials carry.
    pub name: String,
}

/// Creates a room (NERoom `createRoom`). Does not join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoom {
    /// The new room's uuid.
    pub room_uuid: RoomUuid,
    /// Display name.
    pub room_name: String,
    /// Application-defined template id; stored, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Member limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<u32>,
    /// Password needed to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Initial room properties.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Properties::is_empty")]
    pub initial_room_properties: Properties,
    /// Whether the room has a chatroom (NERoom `NECreateRoomOptions.enableChatroom`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_chatroom: bool,
}

/// The created room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoomOutput {
    /// The room as created.
    pub room: RoomInfo,
}

/// Joins a room (NERoom `joinRoom`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRoom {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Display name in the room.
    pub user_name: String,
    /// Role asked for; `host` is granted to the room's creator only.
    #[serde(default, deserialize_with = "null_as_default")]
    pub role: Role,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// The room's password, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The joiner's initial member properties.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Properties::is_empty")]
    pub initial_my_properties: Properties,
    /// Set by a client coming back after a dropped connection: if the server still holds its
    /// membership (on the old connection, or detached in the grace period), it moves to this
    /// connection silently — nobody sees it leave or join. Otherwise an ordinary join.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

/// The joined room's state: everything about a small room, one page of members of a large one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRoomOutput {
    /// The room.
    pub room: RoomInfo,
    /// The joiner, as it is now in the room. (Boxed, as is `host`, to keep responses small.)
    pub member: Box<RoomMember>,
    /// The room's host, when one is in the room (the joiner itself, if it is the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Box<RoomMember>>,
    /// Exact online counts, the joiner included.
    pub counts: MemberCounts,
    /// The first page of members (at most the server's join page size, 50 by default), in the
    /// order of [`FetchRoomMembers`]. Every member when `next_cursor` is absent.
    pub members: Vec<RoomMember>,
    /// Where [`FetchRoomMembers`] continues; absent when `members` is the whole room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

macro_rules! room_op {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// The room.
            pub room_uuid: RoomUuid,
        }
    };
}

room_op!(
    /// Leaves a room (NERoom `leaveRoom`); also leaves its chatroom.
    LeaveRoom
);
room_op!(
    /// Locks the room against new joins (host only).
    LockRoom
);
room_op!(
    /// Unlocks the room (host only).
    UnlockRoom
);
/// Enters the room's chatroom (NERoom `joinChatroom`). The response carries the chatroom's
/// newest sequence number and, when asked, its last `history_count` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinChatroom {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Also return the chatroom's last this-many messages the caller may see (1–100),
    /// newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_count: Option<u32>,
}
room_op!(
    /// Leaves the room's chatroom (NERoom `leaveChatroom`).
    LeaveChatroom
);

/// Ends a room for everyone (NERoom `endRoom`; host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRoom {
    /// The room.
    pub room_uuid: RoomUuid,
    /// NERoom's `isForce`; accepted for compatibility, the room ends either way.
    #[serde(default, deserialize_with = "null_as_default")]
    pub force: bool,
}

/// Sets one room property (host only); members get `room_properties_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRoomProperty {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Property key.
    pub key: String,
    /// New value.
    pub value: String,
}

/// Deletes one room property (host only); members get `room_properties_deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRoomProperty {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Property key.
    pub key: String,
}

/// Sends a text message to the chatroom, or to some of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTextMessage {
    /// The room whose chatroom receives the message.
    pub room_uuid: RoomUuid,
    /// Client-chosen id; the server picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_uuid: Option<MessageUuid>,
    /// Recipients; absent means the whole chatroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user_uuid_list: Option<Vec<UserUuid>>,
    /// The text; non-empty.
    pub text: String,
}

/// Sends an application-defined message (NERoom `sendBroadcastCustomMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCustomMessage {
    /// The room whose chatroom receives the message.
    pub room_uuid: RoomUuid,
    /// Client-chosen id; the server picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_uuid: Option<MessageUuid>,
    /// Recipients; absent means the whole chatroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user_uuid_list: Option<Vec<UserUuid>>,
    /// The payload.
    pub attach_str: String,
    /// `false` for an ephemeral message (likes, reactions, bullet comments): delivered now,
    /// at low priority, but not stored, not numbered (`seq` 0), not in history, not
    /// recallable. Default `true`.
    #[serde(default = "yes", deserialize_with = "null_as_true", skip_serializing_if = "is_true")]
    pub persist: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn null_as_true<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Option::<bool>::deserialize(deserializer).map(|b| b.unwrap_or(true))
}

/// The stored message, as every recipient receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageOutput {
    /// The message with its sequence number and time.
    pub message: SharedMessage,
    /// Whether the message was on disk when this answer was sent: true only when the server's
    /// store flushes every commit before acknowledging it (`roomkit-server --durability
    /// immediate`, the default). False with eventual durability or an in-memory store, where
    /// a crash can lose a message already acknowledged, and for an ephemeral message, which
    /// is never stored. Absent (from an older server) reads as false.
    #[serde(default)]
    pub durable: bool,
}

/// Reads chatroom history (NERoom `fetchChatroomHistoryMessages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchChatroomHistory {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Milliseconds since the Unix epoch; default: now for `desc`, 0 for `asc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// At most this many messages, 1–100; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Newest first (default) or oldest first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub order: HistoryOrder,
    /// Reads by sequence number instead of time: the messages after this one, oldest first
    /// (`start_time` and `order` are then ignored). Used to catch up after a reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Continues a page the server cut short: the previous answer's `next_cursor`, with the
    /// same other parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchChatroomHistoryOutput {
    /// The messages, in the order asked for.
    #[serde(default)]
    pub messages: Vec<SharedMessage>,
    /// The oldest sequence number still kept (0 when the chatroom has no messages): a client
    /// that last saw an older one has missed messages that are gone.
    #[serde(default)]
    pub first_seq: u64,
    /// The newest sequence number of the chatroom (0 when it has none) when the request was
    /// handled.
    #[serde(default)]
    pub last_seq: u64,
    /// Present when the server stopped reading before the page was full, having examined as
    /// many stored messages as one request may (most of them not the caller's to see): more
    /// may follow. Ask again with the same parameters and this as `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Recalls a chatroom message (NERoom `recallChatroomMessage`): its sender within the recall
/// window (default 2 minutes), or the host at any time. Every chatroom member receives a
/// notification message carrying the recalled id; history shows the message as recalled,
/// its content removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallChatroomMessage {
    /// The room.
    pub room_uuid: RoomUuid,
    /// The message to recall.
    pub message_uuid: MessageUuid,
}

/// The notification that announced the recall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallOutput {
    /// The notification message (`message_type: notification`, `event_type: message_recall`).
    pub message: SharedMessage,
}

/// Reads one page of a room's members (NERoom: the member list), in a stable order: members
/// present for the whole paging are returned exactly once. Room members only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRoomMembers {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Where to continue: a previous answer's `next_cursor`; absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// At most this many members, 1–100; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reads one page of the members inside a room's chatroom (NERoom `fetchChatroomMembers`),
/// with the same paging as [`FetchRoomMembers`]. Room members only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchChatroomMembers {
    /// The room.
    pub room_uuid: RoomUuid,
    /// Where to continue: a previous answer's `next_cursor`; absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// At most this many members, 1–100; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One page of members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    /// The members, in the paging order.
    pub members: Vec<RoomMember>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Exact online counts now.
    pub counts: MemberCounts,
}

room_op!(
    /// Reads a room's state and exact online counts. Room members only.
    GetRoomInfo
);

/// A room's state and exact online counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRoomInfoOutput {
    /// The room.
    pub room: RoomInfo,
    /// Exact online counts now.
    pub counts: MemberCounts,
}

/// Does nothing; answers success. For keep-alive and round-trip measurement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {}

macro_rules! operations {
    ($( $name:ident = $op:literal => $out:ty; )*) => {
        $(
            impl Operation for $name {
                const OP: &'static str = $op;
                type Output = $out;
            }
            impl From<$name> for Request {
                fn from(r: $name) -> Request {
                    Request::$name(r)
                }
            }
        )*

        /// Any request, as the server receives it.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Request {
            $(
                #[doc = concat!("`", $op, "`")]
                $name($name),
            )*
        }

        impl Request {
            /// The wire name of the operation.
            pub fn op(&self) -> &'static str {
                match self {
                    $( Request::$name(_) => $op, )*
                }
            }

            /// The operation's place in [`ALL_OPS`]: `ALL_OPS[request.op_index()]` is
            /// [`op`](Self::op) (a per-operation table is indexed without comparing names).
            pub fn op_index(&self) -> usize {
                match self {
                    $( Request::$name(_) => const { op_position($op) }, )*
                }
            }
        }

        /// Every operation's wire name.
        pub const ALL_OPS: &[&str] = &[$($op),*];

        /// The place of `op` in [`ALL_OPS`], worked out at compile time.
        const fn op_position(op: &str) -> usize {
            let mut i = 0;
            while i < ALL_OPS.len() {
                let known = ALL_OPS[i].as_bytes();
                if known.len() == op.len() {
                    let mut j = 0;
                    while j < known.len() && known[j] == op.as_bytes()[j] {
                        j += 1;
                    }
                    if j == known.len() {
                        return i;
                    }
                }
                i += 1;
            }
            panic!("an operation missing from ALL_OPS")
        }

        /// Any successful response's `data`, as the server sends it.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(untagged)]
        #[non_exhaustive]
        pub enum Response {
            $(
                #[doc = concat!("Response to `", $op, "`")]
                $name($out),
            )*
        }

        pub(crate) fn decode_params(
            op: &str,
            bytes: &[u8],
        ) -> Option<Result<Request, serde_path_to_error::Error<serde_json::Error>>> {
            Some(match op {
                // Read without tracking the path first: a request that decodes (nearly every
                // one) costs no more than the read; one that does not is read again for the
                // path of its error.
                $( $op => match serde_json::from_slice::<$name>(bytes) {
                    Ok(params) => Ok(Request::$name(params)),
                    Err(_) => {
                        let de = &mut serde_json::Deserializer::from_slice(bytes);
                        serde_path_to_error::deserialize::<_, $name>(de).map(Request::$name)
                    }
                } )*
                _ => return None,
            })
        }
    };
}

operations! {
    Login = "login" => LoginOutput;
    Ping = "ping" => Empty;
    CreateRoom = "create_room" => CreateRoomOutput;
    JoinRoom = "join_room" => JoinRoomOutput;
    LeaveRoom = "leave_room" => Empty;
    EndRoom = "end_room" => Empty;
    LockRoom = "lock_room" => Empty;
    UnlockRoom = "unlock_room" => Empty;
    UpdateRoomProperty = "update_room_property" => Empty;
    DeleteRoomProperty = "delete_room_property" => Empty;
    JoinChatroom = "join_chatroom" => FetchChatroomHistoryOutput;
    LeaveChatroom = "leave_chatroom" => Empty;
    SendTextMessage = "send_text_message" => SendMessageOutput;
    SendCustomMessage = "send_custom_message" => SendMessageOutput;
    FetchChatroomHistory = "fetch_chatroom_history" => FetchChatroomHistoryOutput;
    RecallChatroomMessage = "recall_chatroom_message" => RecallOutput;
    FetchRoomMembers = "fetch_room_members" => MembersPage;
    FetchChatroomMembers = "fetch_chatroom_members" => MembersPage;
    GetRoomInfo = "get_room_info" => GetRoomInfoOutput;
}

impl Request {
    /// The room the request is about; `None` for connection-level requests.
    pub fn room_uuid(&self) -> Option<&RoomUuid> {
        match self {
            Request::Login(_) | Request::Ping(_) => None,
            Request::CreateRoom(r) => Some(&r.room_uuid),
            Request::JoinRoom(r) => Some(&r.room_uuid),
            Request::LeaveRoom(r) => Some(&r.room_uuid),
            Request::EndRoom(r) => Some(&r.room_uuid),
            Request::LockRoom(r) => Some(&r.room_uuid),
            Request::UnlockRoom(r) => Some(&r.room_uuid),
            Request::UpdateRoomProperty(r) => Some(&r.room_uuid),
            Request::DeleteRoomProperty(r) => Some(&r.room_uuid),
            Request::JoinChatroom(r) => Some(&r.room_uuid),
            Request::LeaveChatroom(r) => Some(&r.room_uuid),
            Request::SendTextMessage(r) => Some(&r.room_uuid),
            Request::SendCustomMessage(r) => Some(&r.room_uuid),
            Request::FetchChatroomHistory(r) => Some(&r.room_uuid),
            Request::RecallChatroomMessage(r) => Some(&r.room_uuid),
            Request::FetchRoomMembers(r) => Some(&r.room_uuid),
            Request::FetchChatroomMembers(r) => Some(&r.room_uuid),
            Request::GetRoomInfo(r) => Some(&r.room_uuid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{op_position, ALL_OPS};

    /// Every operation has its own place in [`ALL_OPS`]: no name is listed twice (which would
    /// give two operations one place, and one series of their metrics).
    #[test]
    fn every_operation_has_its_own_place() {
        for (i, op) in ALL_OPS.iter().enumerate() {
            assert_eq!(op_position(op), i, "`{op}`");
        }
    }
}
