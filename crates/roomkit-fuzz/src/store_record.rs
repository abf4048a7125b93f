//! Target `store_record`: the redb store's record decoding, fed arbitrary bytes as a stored
//! value, the way a damaged or foreign database file would present them.
//!
//! The first byte picks the table: a chatroom message record or a room record. What must hold:
//! - decoding returns, never panics;
//! - a record that decodes, encoded again the way the store writes it, decodes to the same
//!   value (so what is read back and written again does not drift), and a message record's
//!   time prefix is the message's time.
//!
//! By default this is the store's current layout (`roomkit-store-redb`'s `lib.rs`): a message
//! is its time (8 bytes, big-endian) then its JSON, a room is its `RoomRecord` as JSON. The
//! store's decoding is private there, so it is restated here in two lines. With the
//! `store-record-api` feature the target calls the store crate's own record functions
//! instead (`decode_message_record`, `decode_room_record` and their encoders), for the binary
//! record format that replaces the JSON one.

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&table, record)) = data.split_first() else { return };
    if table & 1 == 0 {
        message_record(record);
    } else {
        room_record(record);
    }
}

#[cfg(not(feature = "store-record-api"))]
mod format {
    //! The store's current record layout, as `roomkit-store-redb` reads and writes it.

    use roomkit_core::store::RoomRecord;
    use roomkit_protocol::ChatMessage;

    /// A message record's time: its first 8 bytes, big-endian (0 when shorter).
    pub(super) fn time_of(record: &[u8]) -> u64 {
        record.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
    }

    pub(super) fn decode_message(record: &[u8]) -> Result<ChatMessage, String> {
        serde_json::from_slice(record.get(8..).unwrap_or_default()).map_err(|e| e.to_string())
    }

    pub(super) fn encode_message(message: &ChatMessage) -> Vec<u8> {
        let mut record = message.time.to_be_bytes().to_vec();
        serde_json::to_writer(&mut record, message).expect("a message always serialises");
        record
    }

    pub(super) fn decode_room(record: &[u8]) -> Result<RoomRecord, String> {
        serde_json::from_slice(record).map_err(|e| e.to_string())
    }

    pub(super) fn encode_room(room: &RoomRecord) -> Vec<u8> {
        serde_json::to_vec(room).expect("a room always serialises")
    }
}

#[cfg(feature = "store-record-api")]
mod format {
    //! The store crate's own record functions.

    use roomkit_core::store::RoomRecord;
    use roomkit_protocol::ChatMessage;
    use roomkit_store_redb::record;

    pub(super) fn time_of(bytes: &[u8]) -> u64 {
        record::time_of(bytes)
    }

    pub(super) fn decode_message(bytes: &[u8]) -> Result<ChatMessage, String> {
        roomkit_store_redb::decode_message_record(bytes).map_err(|e| e.to_string())
    }

    pub(super) fn encode_message(message: &ChatMessage) -> Vec<u8> {
        roomkit_store_redb::encode_message_record(message)
    }

    pub(super) fn decode_room(bytes: &[u8]) -> Result<RoomRecord, String> {
        record::decode_room_record(bytes).map_err(|e| e.to_string())
    }

    pub(super) fn encode_room(room: &RoomRecord) -> Vec<u8> {
        record::encode_room_record(room)
    }
}

fn message_record(record: &[u8]) {
    let _ = format::time_of(record);
    let Ok(message) = format::decode_message(record) else { return };
    let again = format::encode_message(&message);
    assert_eq!(format::time_of(&again), message.time, "a written record's time is its message's");
    match format::decode_message(&again) {
        Ok(back) => assert_eq!(back, message, "a message changed on its way through the store"),
        Err(e) => panic!("the store cannot read back a message it wrote: {e}\n{message:?}"),
    }
}

fn room_record(record: &[u8]) {
    let Ok(room) = format::decode_room(record) else { return };
    match format::decode_room(&format::encode_room(&room)) {
        Ok(back) => assert_eq!(back, room, "a room changed on its way through the store"),
        Err(e) => panic!("the store cannot read back a room it wrote: {e}\n{room:?}"),
    }
}
