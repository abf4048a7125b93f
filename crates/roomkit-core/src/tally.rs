//! Live rooms, counted by creator, for the room caps (`max_rooms_per_account`, `max_rooms`).
//!
//! A server spreads its rooms over several registries (one per shard), so a count kept in one
//! registry would let an account hold the cap once per shard. The registries of one server
//! share one [`RoomTally`] instead: a mutex-guarded map, touched once per room created or
//! ended, never on the path of a message. It is plain shared state, no IO and no clock: the
//! rule that refuses a room stays in the registry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use roomkit_protocol::UserUuid;

/// The live rooms of every registry sharing it, in total and by creator. Cheap to clone (the
/// clones are the same tally).
#[derive(Debug, Clone, Default)]
pub struct RoomTally(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_creator: HashMap<UserUuid, usize>,
}

/// Which cap a room would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The creator's own rooms.
    Account(usize),
    /// Every room.
    Total(usize),
}

impl RoomTally {
    /// A tally of no rooms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live rooms in total.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Live rooms `creator` created.
    pub fn rooms_of(&self, creator: &UserUuid) -> usize {
        self.lock().by_creator.get(creator).copied().unwrap_or(0)
    }

    /// Counts a new room of `creator`, unless it would make more than `per_account` rooms of
    /// its creator (`None`: no cap) or more than `total` rooms (`None`: no cap).
    pub(crate) fn add(
        &self,
        creator: &UserUuid,
        per_account: Option<usize>,
        total: Option<usize>,
    ) -> Result<(), Over> {
        let mut counts = self.lock();
        if let Some(max) = total.filter(|max| counts.total >= *max) {
            return Err(Over::Total(max));
        }
        let mine = counts.by_creator.get(creator).copied().unwrap_or(0);
        if let Some(max) = per_account.filter(|max| mine >= *max) {
            return Err(Over::Account(max));
        }
        counts.total += 1;
        *counts.by_creator.entry(creator.clone()).or_default() += 1;
        Ok(())
    }

    /// Counts a room whatever the caps (one brought back from the store).
    pub(crate) fn add_anyway(&self, creator: &UserUuid) {
        let _ = self.add(creator, None, None);
    }

    /// A room of `creator` ended.
    pub(crate) fn remove(&self, creator: &UserUuid) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.by_creator.get_mut(creator) {
            *mine -= 1;
            if *mine == 0 {
                counts.by_creator.remove(creator);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them: each change is
        // one statement.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_creator_and_in_total_and_ended_rooms_make_room() {
        let tally = RoomTally::new();
        let (alice, bob): (UserUuid, UserUuid) = ("alice".parse().unwrap(), "bob".parse().unwrap());
        assert_eq!(tally.add(&alice, Some(2), Some(3)), Ok(()));
        assert_eq!(tally.add(&alice, Some(2), Some(3)), Ok(()));
        assert_eq!(tally.add(&alice, Some(2), Some(3)), Err(Over::Account(2)));
        assert_eq!(tally.add(&bob, Some(2), Some(3)), Ok(()));
        assert_eq!(tally.add(&bob, Some(2), Some(3)), Err(Over::Total(3)));
        assert_eq!((tally.total(), tally.rooms_of(&alice), tally.rooms_of(&bob)), (3, 2, 1));
        tally.remove(&alice);
        assert_eq!(tally.clone().add(&bob, Some(2), Some(3)), Ok(()), "a clone is the same tally");
        assert_eq!((tally.total(), tally.rooms_of(&alice), tally.rooms_of(&bob)), (3, 1, 2));
        tally.add_anyway(&alice);
        assert_eq!(tally.total(), 4, "rooms brought back count whatever the caps");
    }
}
