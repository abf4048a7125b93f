//! The records the store writes: a chat message in a compact binary form, a room as JSON, each
//! starting with a version byte and ending with a CRC-32C of every byte before it.
//!
//! Message record, version 1 (integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version: 1 |
//! | 8 | `time` (first, so that age retention reads it without decoding the rest) |
//! | 8 | `seq` |
//! | 1 | flags: 1 `from_backend`, 2 `recalled`, 4 `persist`, 8 has `from_avatar`, 16 has `to_user_uuid_list` |
//! | 1 | `priority`: 0 low, 1 normal, 2 high |
//! | 1 | `chatroom_type`: 0 common |
//! | 1 | body: 0 text, 1 custom, 2 notification |
//! | 1 + n | `message_uuid` (an id: a length byte, then its bytes) |
//! | 1 + n | `from_user_uuid` |
//! | 4 + n | `from_nick` (a string: a 4-byte length, then its UTF-8 bytes) |
//! | 4 + n | `from_avatar`, if flagged |
//! | 4 + ids | `to_user_uuid_list`, if flagged: a 4-byte count, then the ids |
//! | … | text: `text`; custom: `attach_str` (strings); notification: `event_type` (1 byte: 0 message recall, 255 unknown), a presence byte (1 `operate_by`, 2 `recalled_message_id`), then the ids present |
//! | 4 | CRC-32C (Castagnoli) of every byte before |
//!
//! Room record, version 1: the version byte, the [`RoomRecord`] as JSON, the CRC-32C.
//!
//! Decoding checks the checksum first (a flipped bit anywhere, the version byte included, is
//! reported as a checksum mismatch), then the version, then every field: nothing is trusted,
//! and no input makes the decoder panic.

use roomkit_core::store::RoomRecord;
use roomkit_protocol::{
    ChatMessage, ChatroomType, MessageBody, MessageUuid, NotificationType, Priority, UserUuid,
};

/// The version of the message records this build writes.
pub const MESSAGE_RECORD_VERSION: u8 = 1;
/// The version of the room records this build writes.
pub const ROOM_RECORD_VERSION: u8 = 1;

/// Where a message record keeps its `time`.
const TIME: std::ops::Range<usize> = 1..9;
const CRC_LEN: usize = 4;

const FROM_BACKEND: u8 = 1;
const RECALLED: u8 = 2;
const PERSIST: u8 = 4;
const HAS_AVATAR: u8 = 8;
const HAS_RECIPIENTS: u8 = 16;
const OPERATE_BY: u8 = 1;
const RECALLED_ID: u8 = 2;

/// Why stored bytes are not a genuine record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Too short to hold a version byte and a checksum.
    #[error("record too short ({0} bytes)")]
    TooShort(usize),
    /// The bytes do not match their checksum: changed after they were written.
    #[error("checksum mismatch: the record changed after it was written")]
    Checksum,
    /// A version this build does not know (written by a newer roomkit).
    #[error("unknown record version {0}")]
    Version(u8),
    /// The checksum matches but a field does not decode.
    #[error("malformed record: {0}")]
    Malformed(String),
}

fn malformed(what: impl std::fmt::Display) -> RecordError {
    RecordError::Malformed(what.to_string())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI and ext4 use it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8))
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The record's bytes between its version byte and its checksum, once the checksum and the
/// version are verified.
fn open(bytes: &[u8], version: u8) -> Result<&[u8], RecordError> {
    if bytes.len() < 1 + CRC_LEN {
        return Err(RecordError::TooShort(bytes.len()));
    }
    let (data, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    if crc32c(data).to_be_bytes() != crc {
        return Err(RecordError::Checksum);
    }
    if data[0] != version {
        return Err(RecordError::Version(data[0]));
    }
    Ok(&data[1..])
}

/// The time of a message record, read without decoding or verifying the rest (0 if the
/// record is too short to hold one).
pub fn time_of(record: &[u8]) -> u64 {
    record.get(TIME).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// A message's record.
pub fn encode_message_record(m: &ChatMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + m.from_nick.len() + body_len(&m.body));
    out.push(MESSAGE_RECORD_VERSION);
    out.extend_from_slice(&m.time.to_be_bytes());
    out.extend_from_slice(&m.seq.to_be_bytes());
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    out.push(
        flag(m.from_backend, FROM_BACKEND)
            | flag(m.recalled, RECALLED)
            | flag(m.persist, PERSIST)
            | flag(m.from_avatar.is_some(), HAS_AVATAR)
            | flag(m.to_user_uuid_list.is_some(), HAS_RECIPIENTS),
    );
    out.push(match m.priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    });
    out.push(match m.chatroom_type {
        ChatroomType::Common => 0,
    });
    out.push(match m.body {
        MessageBody::Text { .. } => 0,
        MessageBody::Custom { .. } => 1,
        MessageBody::Notification { .. } => 2,
    });
    put_id(&mut out, m.message_uuid.as_str());
    put_id(&mut out, m.from_user_uuid.as_str());
    put_str(&mut out, &m.from_nick);
    if let Some(avatar) = &m.from_avatar {
        put_str(&mut out, avatar);
    }
    if let Some(to) = &m.to_user_uuid_list {
        out.extend_from_slice(&(to.len() as u32).to_be_bytes());
        for user in to {
            put_id(&mut out, user.as_str());
        }
    }
    match &m.body {
        MessageBody::Text { text } => put_str(&mut out, text),
        MessageBody::Custom { attach_str } => put_str(&mut out, attach_str),
        MessageBody::Notification { event_type, operate_by, recalled_message_id } => {
            out.push(match event_type {
                NotificationType::MessageRecall => 0,
                NotificationType::Unknown => 255,
            });
            out.push(
                flag(operate_by.is_some(), OPERATE_BY) | flag(recalled_message_id.is_some(), RECALLED_ID),
            );
            if let Some(user) = operate_by {
                put_id(&mut out, user.as_str());
            }
            if let Some(id) = recalled_message_id {
                put_id(&mut out, id.as_str());
            }
        }
    }
    seal(out)
}

fn body_len(body: &MessageBody) -> usize {
    match body {
        MessageBody::Text { text } => text.len(),
        MessageBody::Custom { attach_str } => attach_str.len(),
        MessageBody::Notification { .. } => 160,
    }
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    // Ids are at most 64 bytes (roomkit_protocol::MAX_ID_LEN).
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Decodes a message record, verifying its checksum first. Never panics, whatever `bytes` is.
pub fn decode_message_record(bytes: &[u8]) -> Result<ChatMessage, RecordError> {
    let mut r = Reader(open(bytes, MESSAGE_RECORD_VERSION)?);
    let time = r.u64()?;
    let seq = r.u64()?;
    let flags = r.u8()?;
    if flags & !(FROM_BACKEND | RECALLED | PERSIST | HAS_AVATAR | HAS_RECIPIENTS) != 0 {
        return Err(malformed(format_args!("unknown flags {flags:#04x}")));
    }
    let priority = match r.u8()? {
        0 => Priority::Low,
        1 => Priority::Normal,
        2 => Priority::High,
        other => return Err(malformed(format_args!("unknown priority {other}"))),
    };
    let chatroom_type = match r.u8()? {
        0 => ChatroomType::Common,
        other => return Err(malformed(format_args!("unknown chatroom type {other}"))),
    };
    let kind = r.u8()?;
    let message_uuid = MessageUuid::new(r.id()?).map_err(|e| malformed(format_args!("message_uuid: {e}")))?;
    let from_user_uuid = r.user("from_user_uuid")?;
    let from_nick = r.string()?;
    let from_avatar = if flags & HAS_AVATAR != 0 { Some(r.string()?) } else { None };
    let to_user_uuid_list = if flags & HAS_RECIPIENTS != 0 {
        let count = r.u32()? as usize;
        // Each id takes at least two bytes: a count larger than that is a lie, and must not
        // size an allocation.
        if count > r.0.len() / 2 {
            return Err(malformed(format_args!("{count} recipients in {} bytes", r.0.len())));
        }
        let mut to = Vec::with_capacity(count);
        for _ in 0..count {
            to.push(r.user("to_user_uuid_list")?);
        }
        Some(to)
    } else {
        None
    };
    let body = match kind {
        0 => MessageBody::Text { text: r.string()? },
        1 => MessageBody::Custom { attach_str: r.string()? },
        2 => {
            let event_type = match r.u8()? {
                0 => NotificationType::MessageRecall,
                255 => NotificationType::Unknown,
                other => return Err(malformed(format_args!("unknown notification type {other}"))),
            };
            let present = r.u8()?;
            if present & !(OPERATE_BY | RECALLED_ID) != 0 {
                return Err(malformed(format_args!("unknown notification fields {present:#04x}")));
            }
            let operate_by = if present & OPERATE_BY != 0 { Some(r.user("operate_by")?) } else { None };
            let recalled_message_id = if present & RECALLED_ID != 0 {
                Some(
                    MessageUuid::new(r.id()?)
                        .map_err(|e| malformed(format_args!("recalled_message_id: {e}")))?,
                )
            } else {
                None
            };
            MessageBody::Notification { event_type, operate_by, recalled_message_id }
        }
        other => return Err(malformed(format_args!("unknown body kind {other}"))),
    };
    if !r.0.is_empty() {
        return Err(malformed(format_args!("{} bytes after the last field", r.0.len())));
    }
    Ok(ChatMessage {
        message_uuid,
        seq,
        chatroom_type,
        from_user_uuid,
        from_nick,
        from_avatar,
        from_backend: flags & FROM_BACKEND != 0,
        to_user_uuid_list,
        time,
        recalled: flags & RECALLED != 0,
        priority,
        persist: flags & PERSIST != 0,
        body,
    })
}

/// A room's record.
pub fn encode_room_record(record: &RoomRecord) -> Vec<u8> {
    let mut out = vec![ROOM_RECORD_VERSION];
    serde_json::to_writer(&mut out, record).expect("a RoomRecord always serializes");
    seal(out)
}

/// Decodes a room record, verifying its checksum first. Never panics.
pub fn decode_room_record(bytes: &[u8]) -> Result<RoomRecord, RecordError> {
    serde_json::from_slice(open(bytes, ROOM_RECORD_VERSION)?).map_err(malformed)
}

/// Reads fields off the front of a record; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(malformed(format_args!("truncated: {n} bytes wanted, {} left", self.0.len())));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(malformed)?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(malformed)?))
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.take(n)?).map_err(malformed)
    }

    fn id(&mut self) -> Result<&'a str, RecordError> {
        let n = usize::from(self.u8()?);
        self.utf8(n)
    }

    fn user(&mut self, field: &str) -> Result<UserUuid, RecordError> {
        UserUuid::new(self.id()?).map_err(|e| malformed(format_args!("{field}: {e}")))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let n = self.u32()? as usize;
        Ok(self.utf8(n)?.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use roomkit_core::conformance::store::{message, record};

    use super::*;

    fn every_kind() -> Vec<ChatMessage> {
        let mut full = (*message(7, 1_700_000_000_123, "alice", Some(&["bob", "carol"]))).clone();
        full.from_avatar = Some("https://example.invalid/a.png".into());
        full.from_backend = true;
        full.recalled = true;
        full.priority = Priority::High;
        full.body = MessageBody::Text { text: "héllo\u{1}\n\"\\ 🎉".into() };
        let mut custom = (*message(8, 2, "bob", None)).clone();
        custom.body = MessageBody::Custom { attach_str: "{\"k\":[1,2]}".into() };
        custom.persist = false;
        custom.priority = Priority::Low;
        let mut recall = (*message(9, 3, "bob", None)).clone();
        recall.body = MessageBody::Notification {
            event_type: NotificationType::MessageRecall,
            operate_by: Some("alice".parse().expect("id")),
            recalled_message_id: Some("m7".parse().expect("id")),
        };
        let mut bare = recall.clone();
        bare.body = MessageBody::Notification {
            event_type: NotificationType::Unknown,
            operate_by: None,
            recalled_message_id: None,
        };
        let mut empty = (*message(u64::MAX, u64::MAX, "x", Some(&[]))).clone();
        empty.from_nick = String::new();
        empty.body = MessageBody::Text { text: String::new() };
        vec![full, custom, recall, bare, empty]
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn every_kind_of_message_round_trips() {
        for m in every_kind() {
            let bytes = encode_message_record(&m);
            assert_eq!(bytes[0], MESSAGE_RECORD_VERSION);
            assert_eq!(time_of(&bytes), m.time);
            assert_eq!(decode_message_record(&bytes), Ok(m));
        }
    }

    #[test]
    fn a_message_costs_its_text_plus_a_few_dozen_bytes() {
        // Control characters are stored as they are, not as six-byte JSON escapes.
        let mut m = (*message(1, 1, "alice", None)).clone();
        m.body = MessageBody::Text { text: "\u{1}".repeat(5_000) };
        let bytes = encode_message_record(&m);
        assert!(bytes.len() < 5_000 + 64, "{} bytes", bytes.len());
    }

    #[test]
    fn a_room_record_round_trips_and_is_checked() {
        let bytes = encode_room_record(&record("r"));
        assert_eq!(decode_room_record(&bytes), Ok(record("r")));
        let mut edited = bytes.clone();
        edited[5] ^= 0x20;
        assert_eq!(decode_room_record(&edited), Err(RecordError::Checksum));
        assert_eq!(decode_room_record(&bytes[..3]), Err(RecordError::TooShort(3)));
    }

    #[test]
    fn every_changed_byte_or_bit_is_caught() {
        for m in every_kind() {
            let bytes = encode_message_record(&m);
            for i in 0..bytes.len() {
                for bit in [0x01, 0x10, 0x80] {
                    let mut edited = bytes.clone();
                    edited[i] ^= bit;
                    assert_eq!(
                        decode_message_record(&edited),
                        Err(RecordError::Checksum),
                        "byte {i} ^ {bit:#x}"
                    );
                }
            }
        }
    }

    /// Re-seals `data` (a record without its checksum) so that decoding gets past the checksum.
    fn sealed(data: &[u8]) -> Vec<u8> {
        seal(data.to_vec())
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors_never_panics() {
        for m in every_kind() {
            let bytes = encode_message_record(&m);
            let data = &bytes[..bytes.len() - CRC_LEN];
            for cut in 0..bytes.len() {
                assert!(decode_message_record(&bytes[..cut]).is_err(), "cut at {cut}");
                // Truncated yet correctly sealed: the fields themselves must be checked.
                if cut < data.len() {
                    assert!(decode_message_record(&sealed(&data[..cut])).is_err(), "sealed cut at {cut}");
                }
            }
            // Every byte value at every position, sealed: errors or a message, never a panic.
            for i in 0..data.len() {
                for value in [0u8, 1, 2, 3, 31, 64, 65, 127, 128, 200, 254, 255] {
                    let mut edited = data.to_vec();
                    edited[i] = value;
                    let _ = decode_message_record(&sealed(&edited));
                }
            }
            let mut trailing = data.to_vec();
            trailing.push(0);
            assert!(matches!(decode_message_record(&sealed(&trailing)), Err(RecordError::Malformed(_))));
        }
        // A pseudo-random stream of inputs of every length up to 300, sealed and not.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..300 {
            for _ in 0..20 {
                let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let _ = decode_message_record(&garbage);
                if let Some(first) = garbage.first_mut() {
                    *first = MESSAGE_RECORD_VERSION;
                }
                let _ = decode_message_record(&sealed(&garbage));
                let _ = decode_room_record(&sealed(&garbage));
            }
        }
        assert_eq!(decode_message_record(&[]), Err(RecordError::TooShort(0)));
        assert_eq!(decode_message_record(&sealed(&[9, 1, 2])), Err(RecordError::Version(9)));
    }

    #[test]
    fn a_huge_recipient_count_allocates_nothing() {
        let m = (*message(1, 1, "alice", Some(&["bob"]))).clone();
        let bytes = encode_message_record(&m);
        let mut data = bytes[..bytes.len() - CRC_LEN].to_vec();
        // The count sits after the fixed fields, the two ids and the nick.
        let at = 21 + 1 + m.message_uuid.as_str().len() + 1 + 5 + 4 + m.from_nick.len();
        assert_eq!(&data[at..at + 4], &1u32.to_be_bytes());
        data[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_message_record(&sealed(&data)), Err(RecordError::Malformed(_))));
    }
}
