//! What the `registry` target's store holds: every commit reported stored, applied the way a
//! store applies it, so that a restart can bring the rooms back as the server does.

use std::collections::{BTreeMap, HashMap};

use roomkit_core::{
    store::{RoomRecord, StoreOp},
    RoomRegistry,
};
use roomkit_protocol::{RoomUuid, SharedMessage};

/// Rooms, each chatroom's newest stored sequence number, and its stored messages.
#[derive(Debug, Default)]
pub(super) struct Disk {
    rooms: BTreeMap<RoomUuid, RoomRecord>,
    last_seq: HashMap<RoomUuid, u64>,
    messages: HashMap<RoomUuid, Vec<SharedMessage>>,
}

impl Disk {
    /// Applies a commit reported stored. A room's stored messages must have rising sequence
    /// numbers: a number given twice would make history and resuming clients skip a message.
    /// Only a recall stores under a number again: the recalled form of the same message, which
    /// must be stored already (core refuses a recall while the message's commit is unreported).
    pub(super) fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::Append { room, message } => {
                    let messages = self.messages.entry(room.clone()).or_default();
                    let last = self.last_seq.entry(room.clone()).or_default();
                    if message.recalled {
                        // A recall stores the recalled form over the message, under its number.
                        let stored = messages.iter_mut().find(|m| m.seq == message.seq);
                        let stored = stored.unwrap_or_else(|| {
                            panic!("{room}: the recall of {} stored, not the message", message.message_uuid)
                        });
                        let (was, now) = (&stored.message_uuid, &message.message_uuid);
                        assert_eq!(was, now, "{room}: a recall overwrote another message");
                        *stored = message.clone();
                        continue;
                    }
                    assert!(message.seq > *last, "{room}: message {} stored after {}", message.seq, *last);
                    *last = message.seq;
                    messages.push(message.clone());
                }
                StoreOp::PutRoom(record) => {
                    self.rooms.insert(record.info.room_uuid.clone(), record.clone());
                }
                StoreOp::DeleteRoom(room) => {
                    self.rooms.remove(room);
                    self.last_seq.remove(room);
                    self.messages.remove(room);
                }
            }
        }
    }

    /// Brings every stored room back into `reg`, as the server's shards do when they start:
    /// with its newest sequence number and its `recent` newest messages (the retry window).
    pub(super) fn restore(&self, reg: &mut RoomRegistry, now: u64) {
        let config = reg.config();
        let recent = config.history_ring_size.max(config.dedupe_window.min(1000));
        for (uuid, record) in &self.rooms {
            let last_seq = self.last_seq.get(uuid).copied().unwrap_or(0);
            let messages = self.messages.get(uuid).map(Vec::as_slice).unwrap_or_default();
            let newest = messages[messages.len().saturating_sub(recent)..].to_vec();
            reg.restore_room(now, record.clone(), last_seq, newest);
        }
    }
}
