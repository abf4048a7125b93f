//! Rooms that arrive or leave without their members: brought back from the store (after a
//! restart, or when a cluster node takes a room over) and handed over to another node.

use roomkit_protocol::{RoomUuid, SharedMessage};

use super::{timers::Timer, RoomRegistry};
use crate::{room::Room, store::RoomRecord};

impl RoomRegistry {
    /// Brings back a room from the store after a restart: no members (they join again), its
    /// chatroom numbering after `last_seq`, and the ids of `recent` messages (oldest first) in
    /// the retry window. The idle timer starts at `now`.
    pub fn restore_room(&mut self, now: u64, record: RoomRecord, last_seq: u64, recent: Vec<SharedMessage>) {
        let uuid = record.info.room_uuid.clone();
        if !self.rooms.contains_key(&uuid) {
            self.tally.add_anyway(&record.info.creator);
        }
        let mut room = Room::new(record.info, record.password, &self.config);
        room.empty_since = Some(now);
        if let Some(chat) = room.chatroom.as_mut() {
            chat.resume_after(last_seq);
            for message in &recent {
                chat.remember(message);
            }
        }
        self.ended.forget(&uuid);
        self.rooms.insert(uuid.clone(), room);
        self.timers.arm_idle(now, self.config.room_idle_timeout_ms, uuid);
    }

    /// Forgets a room without ending it: no events, nothing stored, no `RoomEnded`. For a
    /// driver whose room now runs elsewhere (a cluster node that lost the room's lease): the
    /// room lives on in the store and on its new node. Its members' connections stay open;
    /// the driver tells them. Whether the room was here.
    pub fn evict_room(&mut self, room_uuid: &RoomUuid) -> bool {
        let Some(room) = self.rooms.remove(room_uuid) else { return false };
        self.tally.remove(&room.info.creator);
        self.timers.cancel(Timer::RoomIdle(room_uuid.clone()));
        self.timers.cancel(Timer::Digest(room_uuid.clone()));
        for user in room.detached_members() {
            self.timers.cancel(Timer::Grace(room_uuid.clone(), user.clone()));
        }
        for conn in room.audience(None).iter() {
            self.conns.untrack(conn, room_uuid);
        }
        true
    }

    /// Whether `room_uuid` is a live room here.
    pub fn has_room(&self, room_uuid: &RoomUuid) -> bool {
        self.rooms.contains_key(room_uuid)
    }
}
