//! The one table of stable error codes.
//!
//! Every failure that reaches a caller carries a [`Code`] and a human message (NERoom's
//! `code` / `msg`). The numbers are generated from the table below, never from enum order,
//! and never change once published: `tests::numbers_are_pinned` fails if one does.
//!
//! Ranges: `0` success; `1` generic failure; `1000–1099` framing and requests;
//! `1100–1199` authentication; `2000–2099` rooms; `3000–3099` chatrooms;
//! `5000–5099` server and connection.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable numeric result code. `Code::SUCCESS` is 0; everything else is a failure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Code(pub u32);

/// One row of the code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The code.
    pub code: Code,
    /// Its name, `SCREAMING_SNAKE_CASE`, as used in docs and logs.
    pub name: &'static str,
    /// The HTTP status an HTTP API answers with for this code.
    pub http_status: u16,
    /// A default human-readable description.
    pub description: &'static str,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $http:literal, $desc:literal; )*) => {
        impl Code {
            $( $(#[$doc])* pub const $name: Code = Code($num); )*
        }

        /// Every code, in numeric order.
        pub const ALL_CODES: &[CodeInfo] = &[
            $( CodeInfo { code: Code($num), name: stringify!($name), http_status: $http, description: $desc }, )*
        ];
    };
}

codes! {
    /// The call succeeded.
    SUCCESS = 0, 200, "success";
    /// An unspecified failure.
    FAILURE = 1, 500, "failure";

    /// The frame is not a JSON object with a numeric `id` and a string `op`.
    MALFORMED_FRAME = 1000, 400, "malformed frame";
    /// The `op` names no known operation.
    UNKNOWN_OPERATION = 1001, 400, "unknown operation";
    /// A field is missing, mistyped or invalid; the message names the field.
    BAD_REQUEST = 1002, 400, "bad request";
    /// The frame is larger than the server's frame size limit.
    FRAME_TOO_LARGE = 1003, 413, "frame too large";
    /// The connection sends requests faster than its rate limit allows.
    RATE_LIMITED = 1004, 429, "rate limited";
    /// The frame type is not accepted (for example a binary WebSocket frame).
    UNSUPPORTED_FRAME = 1005, 400, "unsupported frame type";
    /// The request did not complete in time.
    TIMEOUT = 1006, 504, "request timed out";
    /// The connection already has as many store reads (history) in flight as it may; retry
    /// once an answer has arrived.
    TOO_MANY_PENDING = 1007, 429, "too many requests pending";

    /// The connection has not logged in, or the credentials are invalid.
    UNAUTHENTICATED = 1100, 401, "unauthenticated";
    /// The access token has expired.
    AUTH_EXPIRED = 1101, 401, "authentication expired";
    /// The caller is authenticated but not allowed to do this (for example: not the host).
    FORBIDDEN = 1102, 403, "forbidden";
    /// The connection has already logged in.
    ALREADY_LOGGED_IN = 1103, 409, "already logged in";
    /// The account id is one the server keeps for itself (such as `backend`, the admin API's
    /// identity): nobody may log in as it or be issued a token for it.
    RESERVED_ACCOUNT = 1104, 403, "account id reserved";

    /// No room has this uuid.
    ROOM_NOT_EXIST = 2000, 404, "room does not exist";
    /// A room with this uuid already exists.
    ROOM_ALREADY_EXISTS = 2001, 409, "room already exists";
    /// The room has ended.
    ROOM_ENDED = 2002, 410, "room has ended";
    /// The room is locked: nobody new may join.
    ROOM_LOCKED = 2003, 403, "room is locked";
    /// The password is wrong or missing.
    BAD_PASSWORD = 2004, 403, "bad password";
    /// The room has reached its maximum number of members.
    ROOM_FULL = 2005, 403, "room is full";
    /// The caller has not joined the room.
    NOT_IN_ROOM = 2006, 403, "not in room";
    /// No member with this uuid is where the request needs it.
    MEMBER_NOT_FOUND = 2007, 404, "member not found";
    /// The role asked for is already taken by as many members as it allows.
    OVER_ROLE_LIMIT_COUNT = 2008, 409, "over role limit count";
    /// The account already has as many live rooms as one account may create; end one first.
    TOO_MANY_ROOMS = 2009, 429, "too many rooms";

    /// The room was not created with `enable_chatroom`.
    CHATROOM_NOT_ENABLED = 3000, 404, "chatroom not enabled";
    /// The caller has not joined the room's chatroom.
    NOT_IN_CHATROOM = 3001, 403, "not in chatroom";
    /// The message text is longer than the server's limit.
    MESSAGE_TOO_LONG = 3002, 413, "message too long";
    /// No message with this uuid is known.
    MESSAGE_NOT_FOUND = 3003, 404, "message not found";
    /// The member sends chatroom messages faster than its per-member message rate allows.
    MESSAGE_RATE_LIMITED = 3004, 429, "sending messages too fast";
    /// The chatroom has reached its message rate cap; lower-priority messages are refused
    /// first, the host's never.
    CHATROOM_RATE_LIMITED = 3005, 429, "chatroom message rate cap reached";

    /// The server cannot take more work right now; retry later.
    SERVER_BUSY = 5000, 503, "server busy";
    /// An internal error; the server logged the details.
    INTERNAL = 5001, 500, "internal error";
    /// The connection's send queue overflowed and the server closed it.
    SLOW_CONSUMER = 5002, 503, "slow consumer";
    /// The connection was closed.
    CONNECTION_CLOSED = 5003, 503, "connection closed";
    /// The server is shutting down.
    SERVER_SHUTTING_DOWN = 5004, 503, "server shutting down";
    /// The account, or the client address, already has as many connections as the server
    /// allows it.
    TOO_MANY_CONNECTIONS = 5005, 429, "too many connections";
    /// Nothing arrived from the client (no frame, no answer to the server's pings) within the
    /// server's idle timeout: the server closed the connection as dead.
    KEEPALIVE_TIMEOUT = 5006, 408, "keep-alive timeout";
    /// Cluster mode: the node running the room could not be reached (the room is moving to
    /// another node, or the cluster's NATS is unreachable); retry. Also the close code of a
    /// connection whose room's node died: reconnect and resume.
    ROOM_UNAVAILABLE = 5007, 503, "room unavailable";
}

impl Code {
    /// True for [`Code::SUCCESS`].
    pub fn is_success(self) -> bool {
        self == Code::SUCCESS
    }

    /// The table row for this code, if it is a known code.
    pub fn info(self) -> Option<&'static CodeInfo> {
        ALL_CODES.iter().find(|i| i.code == self)
    }

    /// The code's name, or `"UNKNOWN"`.
    pub fn name(self) -> &'static str {
        self.info().map_or("UNKNOWN", |i| i.name)
    }

    /// The code's default description, or `"unknown code"`.
    pub fn description(self) -> &'static str {
        self.info().map_or("unknown code", |i| i.description)
    }

    /// The HTTP status matching this code (500 for unknown codes).
    pub fn http_status(self) -> u16 {
        self.info().map_or(500, |i| i.http_status)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published numbers never change. Adding a code means adding a line here.
    #[test]
    fn numbers_are_pinned() {
        let pinned: &[(&str, u32)] = &[
            ("SUCCESS", 0),
            ("FAILURE", 1),
            ("MALFORMED_FRAME", 1000),
            ("UNKNOWN_OPERATION", 1001),
            ("BAD_REQUEST", 1002),
            ("FRAME_TOO_LARGE", 1003),
            ("RATE_LIMITED", 1004),
            ("UNSUPPORTED_FRAME", 1005),
            ("TIMEOUT", 1006),
            ("TOO_MANY_PENDING", 1007),
            ("UNAUTHENTICATED", 1100),
            ("AUTH_EXPIRED", 1101),
            ("FORBIDDEN", 1102),
            ("ALREADY_LOGGED_IN", 1103),
            ("RESERVED_ACCOUNT", 1104),
            ("ROOM_NOT_EXIST", 2000),
            ("ROOM_ALREADY_EXISTS", 2001),
            ("ROOM_ENDED", 2002),
            ("ROOM_LOCKED", 2003),
            ("BAD_PASSWORD", 2004),
            ("ROOM_FULL", 2005),
            ("NOT_IN_ROOM", 2006),
            ("MEMBER_NOT_FOUND", 2007),
            ("OVER_ROLE_LIMIT_COUNT", 2008),
            ("TOO_MANY_ROOMS", 2009),
            ("CHATROOM_NOT_ENABLED", 3000),
            ("NOT_IN_CHATROOM", 3001),
            ("MESSAGE_TOO_LONG", 3002),
            ("MESSAGE_NOT_FOUND", 3003),
            ("MESSAGE_RATE_LIMITED", 3004),
            ("CHATROOM_RATE_LIMITED", 3005),
            ("SERVER_BUSY", 5000),
            ("INTERNAL", 5001),
            ("SLOW_CONSUMER", 5002),
            ("CONNECTION_CLOSED", 5003),
            ("SERVER_SHUTTING_DOWN", 5004),
            ("TOO_MANY_CONNECTIONS", 5005),
            ("KEEPALIVE_TIMEOUT", 5006),
            ("ROOM_UNAVAILABLE", 5007),
        ];
        let table: Vec<(&str, u32)> = ALL_CODES.iter().map(|i| (i.name, i.code.0)).collect();
        assert_eq!(table, pinned);
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in ALL_CODES.windows(2) {
            assert!(pair[0].code < pair[1].code, "{:?} before {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(Code::ROOM_NOT_EXIST.name(), "ROOM_NOT_EXIST");
        assert_eq!(Code::ROOM_NOT_EXIST.http_status(), 404);
        assert_eq!(Code(9999).name(), "UNKNOWN");
        assert_eq!(Code::ROOM_FULL.to_string(), "2005 ROOM_FULL");
        assert!(Code::SUCCESS.is_success());
    }
}
