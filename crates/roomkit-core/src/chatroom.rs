//! A room's chatroom: its members, its sequence numbers, and the window of recent message ids
//! that makes a retried send idempotent. Its history lives in the store.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use roomkit_protocol::{
    ChatMessage, ChatroomType, MessageBody, MessageUuid, Priority, SharedMessage, UserUuid,
};

use crate::{config::MessageRate, rate::TokenBucket, roster::Roster};

/// The chatroom of a room created with `enable_chatroom`.
#[derive(Debug)]
pub(crate) struct Chatroom {
    /// Members inside the chatroom.
    pub(crate) roster: Roster,
    /// The sequence number of the next accepted message.
    next_seq: u64,
    /// Recently accepted messages by id, oldest first, at most `dedupe_capacity`.
    recent_ids: HashMap<MessageUuid, SharedMessage>,
    recent_order: VecDeque<MessageUuid>,
    dedupe_capacity: usize,
    /// The chatroom's message rate cap, shared by all its senders.
    pub(crate) rate: TokenBucket,
}

/// A message about to be accepted: everything but its number and time.
#[derive(Debug)]
pub(crate) struct Draft {
    /// The client's id for it; without one, `<id_prefix><time>-<seq>`.
    pub(crate) id: Option<MessageUuid>,
    /// `s` for members' messages, `b` for the backend's, `r` for recall notifications.
    pub(crate) id_prefix: char,
    pub(crate) from: UserUuid,
    pub(crate) from_nick: String,
    pub(crate) from_avatar: Option<String>,
    pub(crate) from_backend: bool,
    pub(crate) to: Option<Vec<UserUuid>>,
    pub(crate) body: MessageBody,
    /// Set by the rules that accept it (see [`Priority`]).
    pub(crate) priority: Priority,
}

impl Chatroom {
    pub(crate) fn new(dedupe_capacity: usize, rate: MessageRate) -> Self {
        Self {
            roster: Roster::default(),
            next_seq: 1,
            recent_ids: HashMap::new(),
            recent_order: VecDeque::new(),
            dedupe_capacity,
            rate: TokenBucket::new(rate),
        }
    }

    /// Continues numbering after `last_seq` (a room restored from the store).
    pub(crate) fn resume_after(&mut self, last_seq: u64) {
        self.next_seq = self.next_seq.max(last_seq + 1);
    }

    /// Accepts `draft` at `now`: numbers it, stamps it and remembers its id.
    pub(crate) fn accept(&mut self, now: u64, draft: Draft) -> SharedMessage {
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = stamp(now, seq, draft, true);
        self.remember(Arc::clone(&message));
        message
    }

    /// Accepts an ephemeral message (`persist: false`) at `now`: not numbered (seq 0), not
    /// remembered (so neither deduplicated nor recallable), low priority.
    pub(crate) fn accept_ephemeral(&mut self, now: u64, draft: Draft) -> SharedMessage {
        stamp(now, 0, Draft { priority: Priority::Low, ..draft }, false)
    }

    /// The message accepted earlier with this id, if it is still in the window.
    pub(crate) fn find_recent(&self, id: &MessageUuid) -> Option<&SharedMessage> {
        self.recent_ids.get(id)
    }

    /// Keeps `message` in the id window, evicting the oldest when full.
    pub(crate) fn remember(&mut self, message: SharedMessage) {
        if self.dedupe_capacity == 0 {
            return;
        }
        if self.recent_order.len() == self.dedupe_capacity {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent_ids.remove(&old);
            }
        }
        self.recent_order.push_back(message.message_uuid.clone());
        self.recent_ids.insert(message.message_uuid.clone(), message);
    }

    /// Replaces a remembered message (same id and seq) with `message`, e.g. its recalled form.
    pub(crate) fn replace(&mut self, message: SharedMessage) {
        if let Some(slot) = self.recent_ids.get_mut(&message.message_uuid) {
            *slot = message;
        }
    }

    /// Forgets a message that could not be stored: a retry must store it, not find it.
    pub(crate) fn forget(&mut self, message: &SharedMessage) {
        if self.recent_ids.get(&message.message_uuid).is_some_and(|m| m.seq == message.seq) {
            self.recent_ids.remove(&message.message_uuid);
            self.recent_order.retain(|id| *id != message.message_uuid);
        }
    }
}

/// The message `draft` becomes, numbered `seq` at `now`.
fn stamp(now: u64, seq: u64, draft: Draft, persist: bool) -> SharedMessage {
    let message_uuid = draft.id.unwrap_or_else(|| {
        MessageUuid::new(format!("{}{now}-{seq}", draft.id_prefix)).expect("a letter, digits and a dash")
    });
    Arc::new(ChatMessage {
        message_uuid,
        seq,
        chatroom_type: ChatroomType::Common,
        from_user_uuid: draft.from,
        from_nick: draft.from_nick,
        from_avatar: draft.from_avatar,
        from_backend: draft.from_backend,
        to_user_uuid_list: draft.to,
        time: now,
        recalled: false,
        priority: draft.priority,
        persist,
        body: draft.body,
    })
}
