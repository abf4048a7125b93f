//! A room's chatroom: its members, its sequence numbers and its recent history.

use std::collections::VecDeque;

use roomkit_protocol::{HistoryOrder, SharedMessage, UserUuid};

use crate::roster::Roster;

/// The chatroom of a room created with `enable_chatroom`.
#[derive(Debug)]
pub(crate) struct Chatroom {
    /// Members inside the chatroom.
    pub(crate) roster: Roster,
    /// The sequence number of the next accepted message.
    next_seq: u64,
    /// The most recent messages, oldest first, at most `capacity`.
    history: VecDeque<SharedMessage>,
    capacity: usize,
}

impl Chatroom {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { roster: Roster::default(), next_seq: 1, history: VecDeque::new(), capacity }
    }

    /// Takes the next sequence number.
    pub(crate) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Keeps `message` in the ring, evicting the oldest when full.
    pub(crate) fn remember(&mut self, message: SharedMessage) {
        if self.capacity == 0 {
            return;
        }
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(message);
    }

    /// The messages `viewer` may see, honouring `start_time`, `order` and `limit`.
    ///
    /// `desc`: at or before `start_time` (default: no bound), newest first.
    /// `asc`: at or after `start_time` (default 0), oldest first.
    pub(crate) fn history(
        &self,
        viewer: &UserUuid,
        start_time: Option<u64>,
        order: HistoryOrder,
        limit: usize,
    ) -> Vec<SharedMessage> {
        let visible = |m: &&SharedMessage| m.is_visible_to(viewer);
        match order {
            HistoryOrder::Desc => {
                let until = start_time.unwrap_or(u64::MAX);
                self.history
                    .iter()
                    .rev()
                    .filter(|m| m.time <= until)
                    .filter(visible)
                    .take(limit)
                    .cloned()
                    .collect()
            }
            HistoryOrder::Asc => {
                let from = start_time.unwrap_or(0);
                self.history.iter().filter(|m| m.time >= from).filter(visible).take(limit).cloned().collect()
            }
        }
    }
}
