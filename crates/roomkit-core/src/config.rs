//! Limits and timings of the room and chatroom state machines.

/// Configuration of [`RoomRegistry`](crate::RoomRegistry). Every limit is named here, has a
/// default, and is checked by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Longest room name, in characters (NERoom: 64).
    pub max_room_name_chars: usize,
    /// Longest room password, in characters (NERoom: 64).
    pub max_password_chars: usize,
    /// Longest member display name, in characters.
    pub max_user_name_chars: usize,
    /// Longest avatar URL or template id, in bytes.
    pub max_avatar_bytes: usize,
    /// Longest property key, in bytes.
    pub max_property_key_bytes: usize,
    /// Longest property value, in bytes.
    pub max_property_value_bytes: usize,
    /// Most properties a room or a member may have.
    pub max_properties: usize,
    /// Longest chat message text or custom payload, in bytes (NERoom: 5 KB).
    pub max_message_bytes: usize,
    /// Most recipients of one directed message.
    pub max_recipients: usize,
    /// Recent messages per chatroom a driver brings back on restart (their ids join the
    /// retry window); `roomkit-server` also keeps this many per chatroom in the in-memory
    /// store it uses when given none. Core itself keeps no history: the store answers it.
    pub history_ring_size: usize,
    /// A room with no members for this long ends with `end_of_life` (NERoom: 24 h).
    pub room_idle_timeout_ms: u64,
    /// How many ended room uuids are remembered, to answer `ROOM_ENDED` rather than
    /// `ROOM_NOT_EXIST`.
    pub ended_rooms_remembered: usize,
    /// Message ids remembered per chatroom: a send repeating one of them (a retry) returns
    /// the stored message instead of storing it again.
    pub dedupe_window: usize,
    /// A member whose connection drops stays a member this long: if it joins again (from a
    /// new connection) in time, nobody sees it leave or join. 0 leaves at once.
    pub reconnect_grace_ms: u64,
    /// A sender may recall its message this long after sending it; the host at any time.
    pub recall_window_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_room_name_chars: 64,
            max_password_chars: 64,
            max_user_name_chars: 64,
            max_avatar_bytes: 1024,
            max_property_key_bytes: 64,
            max_property_value_bytes: 4096,
            max_properties: 64,
            max_message_bytes: 5 * 1024,
            max_recipients: 100,
            history_ring_size: 1000,
            room_idle_timeout_ms: 24 * 60 * 60 * 1000,
            ended_rooms_remembered: 4096,
            dedupe_window: 10_000,
            reconnect_grace_ms: 30_000,
            recall_window_ms: 2 * 60 * 1000,
        }
    }
}

/// Most messages one history query returns (NERoom: 100).
pub const MAX_HISTORY_LIMIT: u32 = 100;
