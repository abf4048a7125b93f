//! The registry's deadlines: rooms that may have been empty for the idle timeout, members
//! whose connection may have been gone for the reconnect grace period, presence digests.

use std::{cmp::Reverse, collections::BinaryHeap};

use roomkit_protocol::{RoomUuid, UserUuid};

/// What a deadline is for. Entries go stale (the room got members again, the member came
/// back); each is checked when it comes due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The room may have been empty for the idle timeout.
    RoomIdle(RoomUuid),
    /// The member's connection may have been gone for the reconnect grace period.
    Grace(RoomUuid, UserUuid),
    /// The room's pending `members_changed` digest may be due. Stale once the room ends (a
    /// room of the same uuid made later checks its own digest's due time).
    Digest(RoomUuid),
}

/// Deadlines in the order they come due.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    heap: BinaryHeap<Reverse<(u64, Timer)>>,
}

impl TimerTable {
    /// The room may end `idle_ms` after `now`.
    pub(crate) fn arm_idle(&mut self, now: u64, idle_ms: u64, room: RoomUuid) {
        self.heap.push(Reverse((now.saturating_add(idle_ms), Timer::RoomIdle(room))));
    }

    /// The detached member may leave `grace_ms` after `now`.
    pub(crate) fn arm_grace(&mut self, now: u64, grace_ms: u64, room: RoomUuid, user: UserUuid) {
        self.heap.push(Reverse((now.saturating_add(grace_ms), Timer::Grace(room, user))));
    }

    /// The room's digest is due at `due`.
    pub(crate) fn arm_digest(&mut self, due: u64, room: RoomUuid) {
        self.heap.push(Reverse((due, Timer::Digest(room))));
    }

    /// The earliest timer due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((deadline, _))) if *deadline <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }
}
