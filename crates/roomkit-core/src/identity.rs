//! Who a connection is and what it may do.

use roomkit_protocol::{RoomUuid, UserUuid};

/// The authenticated identity of a connection. Everything the connection does is done as
/// this user: identity never comes from a request's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user uuid (account id).
    pub user: UserUuid,
    /// Display name carried by the credentials.
    pub name: String,
    /// What the user may do.
    pub grants: Grants,
}

impl Identity {
    /// An identity with every grant except room admin; for development and tests.
    pub fn unrestricted(user: UserUuid) -> Self {
        Self { name: user.to_string(), user, grants: Grants::default() }
    }
}

/// Permissions carried by credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// May create rooms.
    pub create_rooms: bool,
    /// Which rooms may be joined.
    pub join: RoomGrant,
    /// Acts as host in every room it joins: may lock, end, and change properties.
    pub room_admin: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self { create_rooms: true, join: RoomGrant::All, room_admin: false }
    }
}

/// Rooms a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    /// Every room.
    All,
    /// Only these rooms.
    Only(Vec<RoomUuid>),
}

impl RoomGrant {
    /// Whether `room` is covered.
    pub fn allows(&self, room: &RoomUuid) -> bool {
        match self {
            RoomGrant::All => true,
            RoomGrant::Only(rooms) => rooms.contains(room),
        }
    }
}
