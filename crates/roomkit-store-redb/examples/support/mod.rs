//! What the examples share.

use std::sync::Arc;

use roomkit_core::{conformance::store, store::StoreOp};
use roomkit_protocol::{ChatMessage, MessageBody};

/// Message number `n` (its id `m-<n>`, its time `n` ms after a fixed instant), text `text`,
/// appended to `room`'s chatroom as sequence number `seq`: the store suite's message, with
/// that id, time and text.
pub fn text(room: &str, n: u64, seq: u64, text: &str) -> StoreOp {
    let mut message = ChatMessage::clone(&store::message(seq, 1_700_000_000_000 + n, "sender", None));
    message.message_uuid = format!("m-{n}").parse().expect("valid id");
    message.body = MessageBody::Text { text: text.into() };
    StoreOp::Append { room: room.parse().expect("valid id"), message: Arc::new(message) }
}
