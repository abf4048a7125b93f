//! Format 1 → format 2, on open, in the opening transaction.
//!
//! Format 1 kept `messages`: `(room uuid, seq)` → the message's time (8 bytes, big-endian) and
//! its JSON; `rooms`: room uuid → the `RoomRecord` as JSON; `seqs`: room uuid → newest sequence
//! number. Nothing was checksummed. The conversion writes every room and message as a format-2
//! record and drops the old tables; all of it commits together or not at all, so a failure
//! leaves the file as it was. A record that does not decode stops the conversion: the open
//! fails naming it.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use roomkit_core::store::RoomRecord;
use roomkit_protocol::ChatMessage;

use crate::{
    record::{encode_message_record, encode_room_record},
    Chatroom, CHATROOMS, CHAT_MESSAGES, META, ROOM_RECORDS,
};

const MESSAGES_1: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const ROOMS_1: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const SEQS_1: TableDefinition<&str, u64> = TableDefinition::new("seqs");

/// Whether a database with these tables (and no format mark) is of format 1.
pub(crate) fn is_format_1(tables: &[String]) -> bool {
    tables.iter().any(|t| matches!(t.as_str(), "messages" | "rooms" | "seqs"))
}

/// Converts the format-1 tables in `txn`; the caller commits.
pub(crate) fn from_format_1(txn: &WriteTransaction) -> Result<(), String> {
    let fail = |e: redb::Error| format!("converting from format 1: {e}");
    convert(txn).map_err(|e| match e {
        Failure::Redb(e) => fail(e),
        Failure::Record(what) => format!("converting from format 1: {what}"),
    })
}

enum Failure {
    Redb(redb::Error),
    Record(String),
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Redb(e.into())
    }
}

fn convert(txn: &WriteTransaction) -> Result<(), Failure> {
    let mut chatrooms: BTreeMap<String, Chatroom> = BTreeMap::new();
    let mut next_id = 1;
    {
        let mut room_records = txn.open_table(ROOM_RECORDS)?;
        let mut messages = txn.open_table(CHAT_MESSAGES)?;
        for entry in txn.open_table(ROOMS_1)?.iter()? {
            let (uuid, json) = entry?;
            let record: RoomRecord = serde_json::from_slice(json.value())
                .map_err(|e| Failure::Record(format!("room {}: {e}", uuid.value())))?;
            room_records.insert(uuid.value(), encode_room_record(&record).as_slice())?;
        }
        for entry in txn.open_table(SEQS_1)?.iter()? {
            let (uuid, last_seq) = entry?;
            chatrooms.insert(
                uuid.value().to_string(),
                Chatroom { id: next_id, last_seq: last_seq.value(), kept: 0 },
            );
            next_id += 1;
        }
        for entry in txn.open_table(MESSAGES_1)?.iter()? {
            let (key, value) = entry?;
            let (uuid, seq) = key.value();
            let message: ChatMessage = serde_json::from_slice(value.value().get(8..).unwrap_or_default())
                .map_err(|e| Failure::Record(format!("room {uuid} message {seq}: {e}")))?;
            if message.seq != seq {
                return Err(Failure::Record(format!(
                    "room {uuid} message {seq} is numbered {}",
                    message.seq
                )));
            }
            let chat = chatrooms.entry(uuid.to_string()).or_insert_with(|| {
                next_id += 1;
                Chatroom { id: next_id - 1, last_seq: 0, kept: 0 }
            });
            chat.last_seq = chat.last_seq.max(seq);
            chat.kept += 1;
            messages.insert((chat.id, seq), encode_message_record(&message).as_slice())?;
        }
        let mut table = txn.open_table(CHATROOMS)?;
        for (uuid, chat) in &chatrooms {
            table.insert(uuid.as_str(), chat.row())?;
        }
        txn.open_table(META)?.insert("next_room_id", next_id)?;
    }
    txn.delete_table(MESSAGES_1)?;
    txn.delete_table(ROOMS_1)?;
    txn.delete_table(SEQS_1)?;
    Ok(())
}
