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
    /// Most stored messages one history request reads (`join_chatroom`,
    /// `fetch_chatroom_history`). A caller who may see few of them gets the page found so far
    /// and a `next_cursor` to continue. At least `MAX_HISTORY_LIMIT`, so that a page of
    /// messages the caller may all see is never cut.
    pub history_scan_limit: usize,
    /// A member whose connection drops stays a member this long: if it joins again (from a
    /// new connection) in time, nobody sees it leave or join. 0 leaves at once.
    pub reconnect_grace_ms: u64,
    /// A sender may recall its message this long after sending it; the host at any time.
    pub recall_window_ms: u64,
    /// Most members in a `join_room` answer: a room up to this size is complete in it, a
    /// larger one is read on with `fetch_room_members`.
    pub join_member_page: usize,
    /// Largest room whose members are told of each join and leave one by one; above it they
    /// get one `members_changed` digest per `presence_digest_ms`.
    pub presence_per_member_max: usize,
    /// Interval of `members_changed` digests: one is sent this long after the first change
    /// following the previous one.
    pub presence_digest_ms: u64,
    /// Most members a digest names per list (the host is always named, beyond this).
    pub presence_digest_names: usize,
    /// Above this many members a digest carries counts and the host only, no other names.
    /// Should be above `presence_per_member_max`.
    pub presence_count_only_min: usize,
    /// Hysteresis of both presence thresholds, in percent: a room returns to the smaller
    /// room's presence only once it has shrunk to `100 - this` percent of the threshold.
    pub presence_hysteresis_percent: u8,
    /// Chatroom messages one member may send (NERoom: 20 per second per user), refused
    /// with `MESSAGE_RATE_LIMITED` beyond.
    pub member_message_rate: MessageRate,
    /// Chatroom messages one chatroom accepts from everyone together, refused with
    /// `CHATROOM_RATE_LIMITED` beyond: low-priority ones once half the burst is used, normal
    /// ones once it is used up, high-priority ones never (they still use it up).
    pub chatroom_message_rate: MessageRate,
    /// Whether the store the driver commits to has flushed a commit to disk when it reports
    /// it (an fsync per commit): the `durable` flag of every send acknowledgement. False by
    /// default, which is right for an in-memory store or one that syncs only now and then;
    /// a driver with a store that syncs every commit sets it.
    pub durable_acks: bool,
    /// Live rooms one account may have created (0: no cap); `create_room` beyond it is
    /// refused with `TOO_MANY_ROOMS`. Rooms count from creation until they end (including
    /// by the idle timeout). The server's own identity (the admin API) is not held to it.
    pub max_rooms_per_account: usize,
    /// Live rooms in total (0: no cap); `create_room` beyond it is refused with
    /// `SERVER_BUSY`. Every registry sharing a [`RoomTally`](crate::RoomTally) counts
    /// toward the same caps.
    pub max_rooms: usize,
    /// A member's display name is the name its credentials carry (a token's `name`): the
    /// `user_name` a join asks for is ignored. Off by default: a member names itself, and
    /// clients show the account id beside the name so that one member cannot pass for another.
    pub pin_display_names: bool,
}

/// A token bucket's rate: `per_second` on average, up to `burst` at once. `per_second: 0`
/// means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRate {
    /// Messages per second, on average; 0 for no limit.
    pub per_second: u32,
    /// Messages at once (the bucket's size).
    pub burst: u32,
}

impl MessageRate {
    /// No limit.
    pub const UNLIMITED: MessageRate = MessageRate { per_second: 0, burst: 0 };
}

impl CoreConfig {
    /// Refuses settings that would silently break a rule: a rate whose burst refuses every
    /// message, an empty join page, thresholds in the wrong order. The message names the
    /// setting.
    pub fn check(&self) -> Result<(), String> {
        if self.join_member_page == 0 {
            return Err("join_member_page must be at least 1".into());
        }
        if self.presence_count_only_min < self.presence_per_member_max {
            return Err("presence_count_only_min must be at least presence_per_member_max".into());
        }
        if self.presence_hysteresis_percent > 100 {
            return Err("presence_hysteresis_percent must be 0 to 100".into());
        }
        if self.history_scan_limit < MAX_HISTORY_LIMIT as usize {
            return Err(format!("history_scan_limit must be at least {MAX_HISTORY_LIMIT}"));
        }
        if self.presence_digest_ms == 0 {
            return Err("presence_digest_ms must be at least 1".into());
        }
        let rates = [
            ("member_message", self.member_message_rate, 1),
            ("chatroom_message", self.chatroom_message_rate, 2),
        ];
        for (name, rate, min_burst) in rates {
            if rate.per_second > 0 && rate.burst < min_burst {
                // The chatroom's low-priority messages need half a burst spare: a burst of 1
                // would refuse every one of them.
                return Err(format!("{name}_burst must be at least {min_burst} when {name}_rate is set"));
            }
        }
        Ok(())
    }
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
            history_scan_limit: 1000,
            reconnect_grace_ms: 30_000,
            recall_window_ms: 2 * 60 * 1000,
            join_member_page: 50,
            presence_per_member_max: 500,
            presence_digest_ms: 1000,
            presence_digest_names: 20,
            presence_count_only_min: 20_000,
            presence_hysteresis_percent: 20,
            member_message_rate: MessageRate { per_second: 20, burst: 40 },
            chatroom_message_rate: MessageRate { per_second: 100, burst: 200 },
            durable_acks: false,
            max_rooms_per_account: 100,
            max_rooms: 100_000,
            pin_display_names: false,
        }
    }
}

/// Most messages one history query returns (NERoom: 100).
pub const MAX_HISTORY_LIMIT: u32 = 100;

/// Most members one `fetch_room_members` / `fetch_chatroom_members` page returns.
pub const MAX_MEMBERS_LIMIT: u32 = 100;

/// Members per page when a fetch names no `limit`.
pub const DEFAULT_MEMBERS_LIMIT: u32 = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_break_a_rule_are_refused_by_name() {
        assert_eq!(CoreConfig::default().check(), Ok(()));
        let refused = |f: fn(&mut CoreConfig), name: &str| {
            let mut c = CoreConfig::default();
            f(&mut c);
            let e = c.check().expect_err(name);
            assert!(e.contains(name), "{e}");
        };
        refused(|c| c.join_member_page = 0, "join_member_page");
        refused(|c| c.presence_count_only_min = c.presence_per_member_max - 1, "presence_count_only_min");
        refused(|c| c.presence_digest_ms = 0, "presence_digest_ms");
        refused(|c| c.history_scan_limit = 99, "history_scan_limit");
        refused(|c| c.member_message_rate.burst = 0, "member_message_burst");
        refused(|c| c.chatroom_message_rate.burst = 1, "chatroom_message_burst");
        let unlimited = CoreConfig {
            member_message_rate: MessageRate::UNLIMITED,
            chatroom_message_rate: MessageRate::UNLIMITED,
            ..CoreConfig::default()
        };
        assert_eq!(unlimited.check(), Ok(()), "no rate needs no burst");
    }
}
