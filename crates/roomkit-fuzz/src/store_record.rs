//! Target `store_record`: the redb store's record decoding, fed arbitrary bytes as a stored
//! value, the way a damaged or foreign database file would present them.
//!
//! The first byte picks the table: a chatroom message record or a room record. What must hold:
//! - decoding returns, never panics;
//! - a record that decodes, encoded again the way the store writes it, decodes to the same
//!   value (so what is read back and written again does not drift), and a message record's
//!   time prefix is the message's time.
//!
//! The target calls the store crate's own record functions (`decode_message_record`,
//! `record::decode_room_record` and their encoders): the binary, checksummed record format
//! of `roomkit-store-redb`'s `record.rs`. Records carry a CRC-32C, so random bytes mostly stop
//! at the checksum; the seeds are real records, which the fuzzer mutates and (for coverage
//! past the checksum) the harness also reseals: see [`run`].

/// Runs one input; panics when an invariant breaks. The first byte picks the table (bit 0:
/// message or room) and whether to reseal (bit 1): the record's last 4 bytes are replaced by
/// the CRC-32C of the rest, as if the bytes had been written by the store, so that mutations
/// reach the field decoding behind the checksum.
pub fn run(data: &[u8]) {
    let Some((&table, record)) = data.split_first() else { return };
    let mut resealed;
    let record = if table & 2 != 0 && record.len() >= 4 {
        resealed = record.to_vec();
        let body = resealed.len() - 4;
        let crc = roomkit_store_redb::record::crc32c(&resealed[..body]);
        resealed[body..].copy_from_slice(&crc.to_be_bytes());
        &resealed[..]
    } else {
        record
    };
    if table & 1 == 0 {
        message_record(record);
    } else {
        room_record(record);
    }
}

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
