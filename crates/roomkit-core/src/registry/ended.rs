//! A bounded memory of ended rooms, so that a request for one is answered `ROOM_ENDED` rather
//! than `ROOM_NOT_EXIST`.

use std::collections::{HashSet, VecDeque};

use roomkit_protocol::RoomUuid;

use crate::Error;

/// Ended rooms, oldest forgotten first.
#[derive(Debug)]
pub(crate) struct EndedRooms {
    order: VecDeque<RoomUuid>,
    set: HashSet<RoomUuid>,
    capacity: usize,
}

impl EndedRooms {
    /// Remembers at most `capacity` rooms.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    /// `room` ended.
    pub(crate) fn remember(&mut self, room: RoomUuid) {
        if self.capacity == 0 || !self.set.insert(room.clone()) {
            return;
        }
        self.order.push_back(room);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// `room` lives again (created anew, or restored).
    pub(crate) fn forget(&mut self, room: &RoomUuid) {
        if self.set.remove(room) {
            self.order.retain(|r| r != room);
        }
    }

    /// The error for a request naming `room`, which is not live.
    pub(crate) fn missing(&self, room: &RoomUuid) -> Error {
        if self.set.contains(room) {
            Error::RoomEnded(room.clone())
        } else {
            Error::RoomNotExist(room.clone())
        }
    }
}
