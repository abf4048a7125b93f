//! The roomkit wire protocol.
//!
//! Everything a client and a server say to each other: validated [ids], the
//! [model] (members, messages, rooms), [requests and responses](ops), [events](Event),
//! the table of stable [error codes](Code), and the JSON [codec]. No IO and no runtime: this
//! crate is usable from any client, in any executor.
//!
//! The full wire description, with an example of every frame, is `docs/protocol.md`.

pub mod code;
pub mod codec;
mod event;
pub mod ids;
pub mod model;
pub mod ops;

pub use code::{Code, CodeInfo, ALL_CODES};
pub use event::{Event, MembersChanged, Shedding};
pub use ids::{
    is_reserved_user_uuid, IdError, MessageUuid, RoomUuid, UserUuid, MAX_ID_LEN, RESERVED_USER_UUIDS,
};
pub use model::{
    ChatMessage, ChatroomType, EndReason, HistoryOrder, MemberCounts, MessageBody, NotificationType,
    Priority, Properties, Role, RoomInfo, RoomMember, SharedMessage,
};

/// The protocol version this crate speaks. Clients select it in the connection URL
/// (`/v1`); a server answers frames of the versions it supports.
pub const PROTOCOL_VERSION: u32 = 1;
