//! The connection → rooms index: which rooms a connection is in, so that a disconnect
//! reaches every one of them.

use roomkit_protocol::{RoomUuid, UserUuid};

use crate::{ConnId, ConnMap};

/// The user of each connection that is in rooms, and those rooms.
#[derive(Debug, Default)]
pub(crate) struct ConnIndex {
    map: ConnMap<(UserUuid, Rooms)>,
}

/// A connection's rooms. Nearly every connection is in one room, held inline: a list
/// would be one more allocation for each of them.
#[derive(Debug)]
enum Rooms {
    One(RoomUuid),
    Many(Vec<RoomUuid>),
}

impl ConnIndex {
    /// `conn` (logged in as `user`) is now in `room`.
    pub(crate) fn track(&mut self, conn: ConnId, user: &UserUuid, room: RoomUuid) {
        match self.map.get_mut(&conn) {
            None => {
                self.map.insert(conn, (user.clone(), Rooms::One(room)));
            }
            Some((_, rooms)) => match rooms {
                Rooms::Many(list) => list.push(room),
                Rooms::One(first) => *rooms = Rooms::Many(vec![first.clone(), room]),
            },
        }
    }

    /// `conn` is no longer in `room`; a connection in no room is forgotten.
    pub(crate) fn untrack(&mut self, conn: ConnId, room: &RoomUuid) {
        let Some((_, rooms)) = self.map.get_mut(&conn) else { return };
        let now_empty = match rooms {
            Rooms::One(only) => only == room,
            Rooms::Many(list) => {
                list.retain(|r| r != room);
                list.is_empty()
            }
        };
        if now_empty {
            self.map.remove(&conn);
        }
    }

    /// Forgets `conn`; returns its user and rooms.
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<(UserUuid, Vec<RoomUuid>)> {
        self.map.remove(&conn).map(|(user, rooms)| match rooms {
            Rooms::One(room) => (user, vec![room]),
            Rooms::Many(list) => (user, list),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomUuid {
        s.parse().unwrap()
    }

    /// An entry is a connection, a user and one room, with no list behind it.
    #[test]
    fn an_entry_stays_small() {
        assert_eq!(std::mem::size_of::<(ConnId, (UserUuid, Rooms))>(), 48);
    }

    #[test]
    fn a_connection_is_forgotten_after_its_last_room() {
        let (mut index, user) = (ConnIndex::default(), "u".parse().unwrap());
        index.track(ConnId(1), &user, room("a"));
        index.untrack(ConnId(1), &room("b"));
        index.track(ConnId(1), &user, room("b"));
        index.track(ConnId(1), &user, room("c"));
        index.untrack(ConnId(1), &room("a"));
        assert_eq!(index.remove(ConnId(1)), Some((user.clone(), vec![room("b"), room("c")])));
        index.track(ConnId(2), &user, room("a"));
        index.untrack(ConnId(2), &room("b"));
        assert_eq!(index.remove(ConnId(2)), Some((user.clone(), vec![room("a")])));
        index.track(ConnId(3), &user, room("a"));
        index.untrack(ConnId(3), &room("a"));
        assert_eq!(index.remove(ConnId(3)), None);
    }
}
