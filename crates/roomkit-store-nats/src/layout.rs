//! Where the store keeps things in JetStream: the stream, bucket and subject names, a room's
//! token in subjects and keys, the headers every stored message carries, and its dedupe id.

use async_nats::{header::HeaderName, HeaderMap};
use roomkit_protocol::{ChatMessage, RoomUuid};
use roomkit_store_redb::record::crc32c;

/// A chat message's sequence number in its chatroom.
pub const SEQ_HEADER: &str = "Roomkit-Seq";
/// A chat message's time, in milliseconds since the Unix epoch.
pub const TIME_HEADER: &str = "Roomkit-Time";
/// The room's newest sequence number when the message was stored: on the subject's newest
/// message, which retention never removes, it is the room's `last_seq`.
pub const LAST_SEQ_HEADER: &str = "Roomkit-Last-Seq";
/// Marks a fence: a message without a chat message, published after an uncertain failure
/// so that a publish still under way from before is refused (see `apply`).
pub const FENCE_HEADER: &str = "Roomkit-Fence";
/// The header JetStream reads the dedupe id from.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The names one store uses, derived from its `name_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The stream holding every chat message: `<PREFIX>_CHAT`.
    pub stream: String,
    /// The key-value bucket holding room records: `<PREFIX>_ROOMS`.
    pub bucket: String,
    /// Subjects of chat messages start with this: `<prefix>.chat`.
    pub subject_prefix: String,
}

impl Names {
    /// The names for `prefix`, which must be letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> Result<Self, String> {
        let valid =
            !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "name_prefix {prefix:?} must be non-empty and only letters, digits, `-` and `_`"
            ));
        }
        let upper = prefix.to_ascii_uppercase().replace('-', "_");
        Ok(Self {
            stream: format!("{upper}_CHAT"),
            bucket: format!("{upper}_ROOMS"),
            subject_prefix: format!("{prefix}.chat"),
        })
    }

    /// The subjects the stream takes: one token per room.
    pub fn stream_subjects(&self) -> String {
        format!("{}.*", self.subject_prefix)
    }

    /// The subject of `room`'s chat messages.
    pub fn subject(&self, room: &RoomUuid) -> String {
        format!("{}.{}", self.subject_prefix, room_token(room))
    }

    /// The stream behind the bucket (JetStream names it so).
    pub fn bucket_stream(&self) -> String {
        format!("KV_{}", self.bucket)
    }
}

/// `room` as one subject token and one bucket key: room ids may hold `.` and `~`, which
/// subjects and keys do not take, so those (and `=`, the escape) are written `=XX` (hex).
pub fn room_token(room: &RoomUuid) -> String {
    let mut token = String::with_capacity(room.as_str().len());
    for c in room.as_str().chars() {
        match c {
            '.' | '~' | '=' => token.push_str(&format!("={:02X}", c as u32)),
            c => token.push(c),
        }
    }
    token
}

/// The dedupe id of a stored chat message: its room, its sequence number, whether it is the
/// recalled form, and a checksum of its record (so that a room ended and created again within
/// the dedupe window, whose messages are numbered from 1 again, is not taken for a retry).
/// A publish sent again after its acknowledgement was lost carries the same id, and
/// JetStream stores it once.
pub fn message_id(room: &RoomUuid, message: &ChatMessage, record: &[u8]) -> String {
    let form = if message.recalled { "recalled" } else { "sent" };
    format!("{}:{}:{form}:{:08x}", room_token(room), message.seq, crc32c(record))
}

/// The headers of a stored chat message.
pub fn message_headers(message: &ChatMessage, last_seq: u64, id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SEQ_HEADER, message.seq.to_string());
    headers.insert(TIME_HEADER, message.time.to_string());
    headers.insert(LAST_SEQ_HEADER, last_seq.to_string());
    headers.insert(MSG_ID_HEADER, id);
    headers
}

/// The headers of a fence.
pub fn fence_headers(last_seq: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(FENCE_HEADER, "1");
    headers.insert(LAST_SEQ_HEADER, last_seq.to_string());
    headers
}

/// A number header, if present and well formed.
pub fn number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    text(headers, name)?.parse().ok()
}

/// A text header, if present. (The name is parsed: headers NATS knows, such as
/// `Nats-Msg-Id`, are told apart from others only so.)
pub fn text<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let name: HeaderName = name.parse().ok()?;
    Some(headers?.get(name)?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let names = Names::new("roomkit").unwrap();
        assert_eq!(names.stream, "ROOMKIT_CHAT");
        assert_eq!(names.bucket, "ROOMKIT_ROOMS");
        assert_eq!(names.subject(&"r-1_x".parse().unwrap()), "roomkit.chat.r-1_x");
        assert_eq!(Names::new("my-app").unwrap().stream, "MY_APP_CHAT");
        assert!(Names::new("a.b").is_err());
        assert!(Names::new("").is_err());
    }

    #[test]
    fn headers_are_read_back_by_name() {
        let message = roomkit_core::conformance::store::message(7, 70, "a", None);
        let headers = message_headers(&message, 9, "the-id");
        assert_eq!(number(Some(&headers), SEQ_HEADER), Some(7));
        assert_eq!(number(Some(&headers), LAST_SEQ_HEADER), Some(9));
        // What a server sends back is parsed, so NATS's own headers come back as such.
        let parsed: HeaderMap =
            [(MSG_ID_HEADER.parse::<HeaderName>().unwrap(), "the-id".into())].into_iter().collect();
        assert_eq!(text(Some(&parsed), MSG_ID_HEADER), Some("the-id"));
        assert_eq!(text(None, MSG_ID_HEADER), None);
    }

    #[test]
    fn room_ids_become_one_token() {
        let room: RoomUuid = "a.b~c".parse().unwrap();
        assert_eq!(room_token(&room), "a=2Eb=7Ec");
        assert!("a=2Eb".parse::<RoomUuid>().is_err(), "ids never hold the escape itself");
    }
}
