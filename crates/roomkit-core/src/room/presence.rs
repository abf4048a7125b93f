//! Presence that adapts to a room's size: per-member join and leave events in a small room,
//! one coalesced `members_changed` digest per interval in a large one, counts and the host
//! only in a huge one, with hysteresis between them (see "Presence in large rooms" in
//! `docs/protocol.md`).
//!
//! [`Presence`] holds the mode and the digest being gathered; the room tells it each change
//! and sends what it returns. The timer that sends a digest lives in the registry's table:
//! [`Presence::take_arm`] says when one must be armed.

use roomkit_protocol::{MemberCounts, MembersChanged, RoomMember, RoomUuid};

use crate::CoreConfig;

/// How a room's members learn of each other's comings and goings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One event per change.
    PerMember,
    /// Digests naming up to `presence_digest_names` members per list.
    Digest,
    /// Digests with counts and the host only.
    CountOnly,
}

/// Which list of a digest a change goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    JoinedRoom,
    LeftRoom,
    EnteredChatroom,
    LeftChatroom,
}

impl Change {
    /// The change that undoes this one.
    fn opposite(self) -> Change {
        match self {
            Change::JoinedRoom => Change::LeftRoom,
            Change::LeftRoom => Change::JoinedRoom,
            Change::EnteredChatroom => Change::LeftChatroom,
            Change::LeftChatroom => Change::EnteredChatroom,
        }
    }
}

/// The thresholds, copied from [`CoreConfig`].
#[derive(Debug, Clone, Copy)]
struct Policy {
    per_member_max: usize,
    count_only_min: usize,
    digest_ms: u64,
    names: usize,
    hysteresis_percent: usize,
}

impl Policy {
    /// What a room in `mode` switches to at `count` members.
    fn next_mode(&self, mode: Mode, count: usize) -> Mode {
        let back = |threshold: usize| {
            threshold / 100 * (100 - self.hysteresis_percent)
                + threshold % 100 * (100 - self.hysteresis_percent) / 100
        };
        match mode {
            _ if count > self.count_only_min => Mode::CountOnly,
            Mode::PerMember if count > self.per_member_max => Mode::Digest,
            Mode::PerMember => Mode::PerMember,
            _ if count <= back(self.per_member_max) => Mode::PerMember,
            Mode::CountOnly if count > back(self.count_only_min) => Mode::CountOnly,
            _ => Mode::Digest,
        }
    }
}

/// A digest being gathered.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// When it is due.
    pub(crate) due: u64,
    digest: Lists,
}

#[derive(Debug, Default)]
struct Lists {
    counts: [u64; 4],
    names: [Vec<RoomMember>; 4],
}

/// A room's presence mode and its pending digest.
#[derive(Debug)]
pub(crate) struct Presence {
    policy: Policy,
    mode: Mode,
    pending: Option<Pending>,
    /// A digest timer to arm at this time, not yet taken by the registry.
    arm: Option<u64>,
}

impl Presence {
    pub(crate) fn new(config: &CoreConfig) -> Self {
        let policy = Policy {
            per_member_max: config.presence_per_member_max,
            count_only_min: config.presence_count_only_min,
            digest_ms: config.presence_digest_ms,
            names: config.presence_digest_names,
            hysteresis_percent: usize::from(config.presence_hysteresis_percent.min(100)),
        };
        Self { policy, mode: Mode::PerMember, pending: None, arm: None }
    }

    /// Whether changes are announced one by one.
    pub(crate) fn per_member(&self) -> bool {
        self.mode == Mode::PerMember
    }

    /// The room is about to have `count` members. If that changes the mode, the digest
    /// gathered so far is returned, to be sent before the change (its counts are the room's
    /// now, which is what it describes).
    pub(crate) fn resize(&mut self, count: usize) -> Option<Pending> {
        let next = self.policy.next_mode(self.mode, count);
        if next == self.mode {
            return None;
        }
        self.mode = next;
        self.pending.take()
    }

    /// Counts (and maybe names) a change in the pending digest, arming it if it is the first
    /// since the last one. Only in a digest mode. `privileged` members (the host, room
    /// admins) are always named.
    ///
    /// Names are netted per member: a member named in this digest appears once, in the list
    /// of its last change (a member that leaves and joins again within one interval is named
    /// as joined, not as both — a client applies `joined` before `left`).
    pub(crate) fn record(&mut self, now: u64, change: Change, member: &RoomMember, privileged: bool) {
        debug_assert!(!self.per_member());
        let digest_ms = self.policy.digest_ms;
        let pending = self.pending.get_or_insert_with(|| {
            let due = now.saturating_add(digest_ms);
            self.arm = Some(due);
            Pending { due, digest: Lists::default() }
        });
        let i = change as usize;
        pending.digest.counts[i] += 1;
        let opposite = change.opposite() as usize;
        let was_named = [i, opposite].into_iter().fold(false, |found, list| {
            let names = &mut pending.digest.names[list];
            let before = names.len();
            names.retain(|m| m.uuid != member.uuid);
            found || names.len() != before
        });
        let names = &mut pending.digest.names[i];
        let room_for_names = self.mode == Mode::Digest && names.len() < self.policy.names;
        if privileged || was_named || room_for_names {
            names.push(member.clone());
        }
    }

    /// The pending digest, if it is due at `now`.
    pub(crate) fn take_due(&mut self, now: u64) -> Option<Pending> {
        self.pending.take_if(|p| p.due <= now)
    }

    /// When a digest timer must be armed, once.
    pub(crate) fn take_arm(&mut self) -> Option<u64> {
        self.arm.take()
    }
}

impl Pending {
    /// The event carrying this digest, with the room's `counts` now.
    pub(crate) fn into_event(self, room_uuid: RoomUuid, counts: MemberCounts) -> MembersChanged {
        let [joined_count, left_count, chatroom_joined_count, chatroom_left_count] = self.digest.counts;
        let [joined, left, chatroom_joined, chatroom_left] = self.digest.names;
        MembersChanged {
            room_uuid,
            counts,
            joined_count,
            left_count,
            chatroom_joined_count,
            chatroom_left_count,
            joined,
            left,
            chatroom_joined,
            chatroom_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            per_member_max: 500,
            count_only_min: 20_000,
            digest_ms: 1000,
            names: 20,
            hysteresis_percent: 20,
        }
    }

    #[test]
    fn thresholds_have_hysteresis_both_ways() {
        let p = policy();
        assert_eq!(p.next_mode(Mode::PerMember, 500), Mode::PerMember);
        assert_eq!(p.next_mode(Mode::PerMember, 501), Mode::Digest);
        assert_eq!(p.next_mode(Mode::Digest, 401), Mode::Digest);
        assert_eq!(p.next_mode(Mode::Digest, 400), Mode::PerMember);
        assert_eq!(p.next_mode(Mode::Digest, 20_000), Mode::Digest);
        assert_eq!(p.next_mode(Mode::Digest, 20_001), Mode::CountOnly);
        assert_eq!(p.next_mode(Mode::CountOnly, 16_001), Mode::CountOnly);
        assert_eq!(p.next_mode(Mode::CountOnly, 16_000), Mode::Digest);
        assert_eq!(p.next_mode(Mode::CountOnly, 400), Mode::PerMember);
        assert_eq!(p.next_mode(Mode::PerMember, 20_001), Mode::CountOnly);
    }

    #[test]
    fn no_hysteresis_switches_back_at_the_threshold() {
        let p = Policy { hysteresis_percent: 0, ..policy() };
        assert_eq!(p.next_mode(Mode::Digest, 500), Mode::PerMember);
        assert_eq!(p.next_mode(Mode::CountOnly, 20_000), Mode::Digest);
    }
}
