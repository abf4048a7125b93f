//! The rooms each of a node's connections used.

use std::collections::HashSet;

use roomkit_protocol::RoomUuid;

/// The rooms one of this node's connections sent requests for: nearly always one, which is
/// kept without an allocation of its own (a set per connection cost ~150 bytes per member of
/// a large room).
#[derive(Default)]
pub(super) enum ConnRooms {
    #[default]
    None,
    One(RoomUuid),
    // Boxed: the set inline would make every connection's entry 48 bytes, not 24.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<RoomUuid>>),
}

impl ConnRooms {
    pub(super) fn insert(&mut self, room: &RoomUuid) {
        match self {
            ConnRooms::None => *self = ConnRooms::One(room.clone()),
            ConnRooms::One(one) if one == room => {}
            ConnRooms::One(one) => {
                *self = ConnRooms::Many(Box::new(HashSet::from([one.clone(), room.clone()])));
            }
            ConnRooms::Many(many) => {
                many.insert(room.clone());
            }
        }
    }

    pub(super) fn into_vec(self) -> Vec<RoomUuid> {
        match self {
            ConnRooms::None => Vec::new(),
            ConnRooms::One(one) => vec![one],
            ConnRooms::Many(many) => many.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomUuid {
        name.parse().expect("valid id")
    }

    #[test]
    fn a_connections_rooms_are_each_kept_once() {
        let mut rooms = ConnRooms::default();
        assert!(matches!(rooms, ConnRooms::None));
        rooms.insert(&room("a"));
        rooms.insert(&room("a"));
        assert!(matches!(rooms, ConnRooms::One(_)), "one room takes no allocation");
        rooms.insert(&room("b"));
        rooms.insert(&room("a"));
        rooms.insert(&room("c"));
        let mut all = rooms.into_vec();
        all.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(all, [room("a"), room("b"), room("c")]);
        assert!(std::mem::size_of::<ConnRooms>() <= 24);
    }
}
