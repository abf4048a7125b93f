//! The connection → rooms index: which rooms a connection is in, so that a disconnect
//! reaches every one of them.

use roomkit_protocol::{RoomUuid, UserUuid};

use crate::{ConnId, ConnMap};

/// The user of each connection that is in rooms, and those rooms.
#[derive(Debug, Default)]
pub(crate) struct ConnIndex {
    map: ConnMap<(UserUuid, Vec<RoomUuid>)>,
}

impl ConnIndex {
    /// `conn` (logged in as `user`) is now in `room`.
    pub(crate) fn track(&mut self, conn: ConnId, user: &UserUuid, room: RoomUuid) {
        self.map.entry(conn).or_insert_with(|| (user.clone(), Vec::new())).1.push(room);
    }

    /// `conn` is no longer in `room`; a connection in no room is forgotten.
    pub(crate) fn untrack(&mut self, conn: ConnId, room: &RoomUuid) {
        if let Some((_, rooms)) = self.map.get_mut(&conn) {
            rooms.retain(|r| r != room);
            if rooms.is_empty() {
                self.map.remove(&conn);
            }
        }
    }

    /// Forgets `conn`; returns its user and rooms.
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<(UserUuid, Vec<RoomUuid>)> {
        self.map.remove(&conn)
    }
}
