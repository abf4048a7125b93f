//! What the examples share.

use std::sync::Arc;

use roomkit_core::store::StoreOp;
use roomkit_protocol::{ChatMessage, ChatroomType, MessageBody, Priority};

/// Message number `n` (its id `m-<n>`, its time `n` ms after a fixed instant), text `text`,
/// appended to `room`'s chatroom as sequence number `seq`.
pub fn text(room: &str, n: u64, seq: u64, text: &str) -> StoreOp {
    StoreOp::Append {
        room: room.parse().expect("valid id"),
        message: Arc::new(ChatMessage {
            message_uuid: format!("m-{n}").parse().expect("valid id"),
            seq,
            chatroom_type: ChatroomType::Common,
            from_user_uuid: "sender".parse().expect("valid id"),
            from_nick: "Sender".into(),
            from_avatar: None,
            from_backend: false,
            to_user_uuid_list: None,
            time: 1_700_000_000_000 + n,
            recalled: false,
            priority: Priority::Normal,
            persist: true,
            body: MessageBody::Text { text: text.into() },
        }),
    }
}
