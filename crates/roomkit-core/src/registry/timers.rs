//! The registry's deadlines: rooms that may have been empty for the idle timeout, members
//! whose connection may have been gone for the reconnect grace period, presence digests.

use std::collections::{BTreeSet, HashMap};

use roomkit_protocol::{RoomUuid, UserUuid};

/// What a deadline is for. Each is still checked when it comes due (the room may have got
/// members again in the same instant), but a timer that lost its purpose is cancelled, and
/// arming one that is already armed moves it: there is at most one of each per room (and
/// per member for [`Timer::Grace`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// The room may have been empty for the idle timeout.
    RoomIdle(RoomUuid),
    /// The member's connection may have been gone for the reconnect grace period.
    Grace(RoomUuid, UserUuid),
    /// The room's pending `members_changed` digest may be due.
    Digest(RoomUuid),
}

/// Deadlines in the order they come due, one per [`Timer`].
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    due: BTreeSet<(u64, Timer)>,
    armed: HashMap<Timer, u64>,
}

impl TimerTable {
    /// The room may end `idle_ms` after `now`.
    pub(crate) fn arm_idle(&mut self, now: u64, idle_ms: u64, room: RoomUuid) {
        self.set(now.saturating_add(idle_ms), Timer::RoomIdle(room));
    }

    /// The detached member may leave `grace_ms` after `now`.
    pub(crate) fn arm_grace(&mut self, now: u64, grace_ms: u64, room: RoomUuid, user: UserUuid) {
        self.set(now.saturating_add(grace_ms), Timer::Grace(room, user));
    }

    /// The room's digest is due at `due`.
    pub(crate) fn arm_digest(&mut self, due: u64, room: RoomUuid) {
        self.set(due, Timer::Digest(room));
    }

    /// Arms `timer` at `at`, replacing its earlier deadline if it had one.
    fn set(&mut self, at: u64, timer: Timer) {
        if let Some(old) = self.armed.insert(timer.clone(), at) {
            self.due.remove(&(old, timer.clone()));
        }
        self.due.insert((at, timer));
    }

    /// Forgets `timer`, if it is armed.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(at) = self.armed.remove(&timer) {
            self.due.remove(&(at, timer));
        }
    }

    /// The earliest timer due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Timer> {
        if self.due.first().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        let (_, timer) = self.due.pop_first()?;
        self.armed.remove(&timer);
        Some(timer)
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// How many timers are armed.
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomUuid {
        name.parse().expect("valid id")
    }

    #[test]
    fn arming_again_moves_the_deadline_and_cancelling_forgets_it() {
        let mut timers = TimerTable::default();
        timers.arm_idle(0, 100, room("a"));
        timers.arm_idle(50, 100, room("a"));
        timers.arm_digest(120, room("b"));
        assert_eq!((timers.len(), timers.next_deadline()), (2, Some(120)));
        assert_eq!(timers.pop_due(149), Some(Timer::Digest(room("b"))));
        assert_eq!(timers.pop_due(149), None, "the first deadline of a was replaced");
        timers.cancel(Timer::RoomIdle(room("a")));
        assert_eq!((timers.len(), timers.next_deadline()), (0, None));
        timers.cancel(Timer::RoomIdle(room("a")));
        assert_eq!(timers.pop_due(u64::MAX), None);
    }
}
