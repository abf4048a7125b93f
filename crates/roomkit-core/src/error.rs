//! Why a request failed.

use roomkit_protocol::{Code, MessageUuid, RoomUuid, UserUuid};

/// A request that core refused. Every variant maps to one stable [`Code`]; `Display` is the
/// human message sent with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field is invalid; the message names it.
    #[error("bad request: field `{field}`: {reason}")]
    BadRequest {
        /// The field's wire name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No such room.
    #[error("room `{0}` does not exist")]
    RoomNotExist(RoomUuid),
    /// The room uuid is taken.
    #[error("room `{0}` already exists")]
    RoomAlreadyExists(RoomUuid),
    /// The room has ended.
    #[error("room `{0}` has ended")]
    RoomEnded(RoomUuid),
    /// The room is locked.
    #[error("room `{0}` is locked")]
    RoomLocked(RoomUuid),
    /// Wrong or missing password.
    #[error("bad password for room `{0}`")]
    BadPassword(RoomUuid),
    /// The room is full.
    #[error("room `{room}` is full ({max} members)")]
    RoomFull {
        /// The room.
        room: RoomUuid,
        /// Its member limit.
        max: u32,
    },
    /// The caller is not a member of the room (on this connection).
    #[error("not in room `{0}`: join the room first")]
    NotInRoom(RoomUuid),
    /// A named member is not where the request needs it.
    #[error("member `{0}` not found in the chatroom")]
    MemberNotFound(UserUuid),
    /// The role is taken.
    #[error("role `host` is already taken in room `{0}`")]
    OverRoleLimit(RoomUuid),
    /// The room has no chatroom.
    #[error("room `{0}` was not created with enable_chatroom")]
    ChatroomNotEnabled(RoomUuid),
    /// The caller is not in the chatroom.
    #[error("not in the chatroom of room `{0}`: join the chatroom first")]
    NotInChatroom(RoomUuid),
    /// The message is too long.
    #[error("message too long: {len} bytes, limit {max}")]
    MessageTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No such message.
    #[error("message `{0}` not found")]
    MessageNotFound(MessageUuid),
    /// A recall of a message whose send is not stored yet (its commit is not reported): it
    /// may still fail, and a recall must not outlive the message it recalls.
    #[error("message `{0}` is not stored yet: recall it once its send is answered")]
    NotStoredYet(MessageUuid),
    /// The member sends chatroom messages faster than `member_message_rate` allows.
    #[error("sending messages too fast: at most {per_second} per second (bursts of {burst})")]
    MessageRateLimited {
        /// The rate.
        per_second: u32,
        /// The burst.
        burst: u32,
    },
    /// The chatroom is at its `chatroom_message_rate` cap for a message of this priority.
    #[error("the chatroom of room `{0}` is at its message rate cap: retry later")]
    ChatroomRateLimited(RoomUuid),
    /// The creator already has `max_rooms_per_account` live rooms.
    #[error("too many rooms: this account already has {max} live rooms; end one first")]
    TooManyRooms {
        /// The cap.
        max: usize,
    },
    /// The server holds as many rooms as it may (`max_rooms`).
    #[error("server busy: it already holds its limit of {max} rooms; retry later")]
    TooManyRoomsInTotal {
        /// The cap.
        max: usize,
    },
    /// The store could not make the message durable: it was neither kept nor delivered, and
    /// a retry with the same message id stores it as new.
    #[error("the message could not be stored")]
    NotStored,
    /// The store could not be read to answer a history request (the driver logs why).
    #[error("history could not be read")]
    HistoryNotRead(#[source] crate::store::StoreError),
}

impl Error {
    /// The stable wire code.
    pub fn code(&self) -> Code {
        match self {
            Error::BadRequest { .. } => Code::BAD_REQUEST,
            Error::Forbidden(_) => Code::FORBIDDEN,
            Error::RoomNotExist(_) => Code::ROOM_NOT_EXIST,
            Error::RoomAlreadyExists(_) => Code::ROOM_ALREADY_EXISTS,
            Error::RoomEnded(_) => Code::ROOM_ENDED,
            Error::RoomLocked(_) => Code::ROOM_LOCKED,
            Error::BadPassword(_) => Code::BAD_PASSWORD,
            Error::RoomFull { .. } => Code::ROOM_FULL,
            Error::NotInRoom(_) => Code::NOT_IN_ROOM,
            Error::MemberNotFound(_) => Code::MEMBER_NOT_FOUND,
            Error::OverRoleLimit(_) => Code::OVER_ROLE_LIMIT_COUNT,
            Error::ChatroomNotEnabled(_) => Code::CHATROOM_NOT_ENABLED,
            Error::NotInChatroom(_) => Code::NOT_IN_CHATROOM,
            Error::MessageTooLong { .. } => Code::MESSAGE_TOO_LONG,
            Error::MessageNotFound(_) | Error::NotStoredYet(_) => Code::MESSAGE_NOT_FOUND,
            Error::MessageRateLimited { .. } => Code::MESSAGE_RATE_LIMITED,
            Error::ChatroomRateLimited(_) => Code::CHATROOM_RATE_LIMITED,
            Error::TooManyRooms { .. } => Code::TOO_MANY_ROOMS,
            Error::TooManyRoomsInTotal { .. } => Code::SERVER_BUSY,
            Error::NotStored | Error::HistoryNotRead(_) => Code::INTERNAL,
        }
    }

    pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> Self {
        Error::BadRequest { field, reason: reason.into() }
    }
}
