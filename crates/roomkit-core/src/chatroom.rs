//! A room's chatroom: its members, its sequence numbers, its recent history and the window
//! of recent message ids that makes a retried send idempotent.

use std::collections::{HashMap, VecDeque};

use roomkit_protocol::{MessageUuid, SharedMessage};

use crate::{
    roster::Roster,
    store::{select, HistoryPage, HistoryQuery},
};

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
    /// Recently accepted messages by id, oldest first, at most `dedupe_capacity`.
    recent_ids: HashMap<MessageUuid, SharedMessage>,
    recent_order: VecDeque<MessageUuid>,
    dedupe_capacity: usize,
}

impl Chatroom {
    pub(crate) fn new(capacity: usize, dedupe_capacity: usize) -> Self {
        Self {
            roster: Roster::default(),
            next_seq: 1,
            history: VecDeque::new(),
            capacity,
            recent_ids: HashMap::new(),
            recent_order: VecDeque::new(),
            dedupe_capacity,
        }
    }

    /// Continues numbering after `last_seq` (a room restored from the store).
    pub(crate) fn resume_after(&mut self, last_seq: u64) {
        self.next_seq = self.next_seq.max(last_seq + 1);
    }

    /// Takes the next sequence number.
    pub(crate) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The message accepted earlier with this id, if it is still in the window.
    pub(crate) fn find_recent(&self, id: &MessageUuid) -> Option<&SharedMessage> {
        self.recent_ids.get(id)
    }

    /// Keeps `message` in the ring and the id window, evicting the oldest when full.
    pub(crate) fn remember(&mut self, message: SharedMessage) {
        if self.dedupe_capacity > 0 {
            if self.recent_order.len() == self.dedupe_capacity {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent_ids.remove(&old);
                }
            }
            self.recent_order.push_back(message.message_uuid.clone());
            self.recent_ids.insert(message.message_uuid.clone(), message.clone());
        }
        if self.capacity == 0 {
            return;
        }
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(message);
    }

    /// Replaces a remembered message (same id and seq) with `message`, e.g. its recalled form.
    pub(crate) fn replace(&mut self, message: SharedMessage) {
        if let Some(slot) = self.recent_ids.get_mut(&message.message_uuid) {
            *slot = message.clone();
        }
        if let Some(slot) = self.history.iter_mut().find(|m| m.seq == message.seq) {
            *slot = message;
        }
    }

    /// Forgets a message that could not be stored: a retry must store it, not find it.
    pub(crate) fn forget(&mut self, message: &SharedMessage) {
        if self.recent_ids.get(&message.message_uuid).is_some_and(|m| m.seq == message.seq) {
            self.recent_ids.remove(&message.message_uuid);
            self.recent_order.retain(|id| *id != message.message_uuid);
        }
        self.history.retain(|m| m.seq != message.seq);
    }

    /// A page of the recent-history ring.
    pub(crate) fn page(&self, query: &HistoryQuery) -> HistoryPage {
        let last_seq = self.next_seq - 1;
        HistoryPage {
            messages: select(self.history.iter(), query),
            first_seq: self.history.front().map_or(last_seq + u64::from(last_seq > 0), |m| m.seq),
            last_seq,
        }
    }
}
