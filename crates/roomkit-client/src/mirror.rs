//! The client's mirror of one joined room: plain data with `&mut self` methods, no locks, no
//! IO, no runtime.
//!
//! The network layer feeds it what the server says (events, join answers, replayed history,
//! the answers to its own sends) and tells the app the [`RoomEvent`]s it returns. What to tell,
//! in which order, and what never to tell twice is decided here and unit-tested without a
//! runtime; locks and sockets live one layer up (`room.rs`, `session.rs`).
//!
//! Who is in the room and how many are online is kept in `presence.rs`.

use std::{collections::HashMap, sync::Arc};

use roomkit_protocol::{
    ops::JoinRoomOutput, ChatMessage, Event, MemberCounts, RoomInfo, RoomMember, SharedMessage, UserUuid,
};

use crate::RoomEvent;

mod presence;

/// A joined room as the local member knows it.
#[derive(Debug)]
pub(crate) struct RoomMirror {
    local: UserUuid,
    info: RoomInfo,
    /// The members this client has seen: the join answer's page, the joiner and the host,
    /// per-member events, the members digests name, and fetched pages. In a small room that
    /// is every member; in a large one only some.
    members: HashMap<UserUuid, RoomMember>,
    /// Exact online counts as of the last answer or event that carried them, kept current
    /// by per-member events in between.
    counts: MemberCounts,
    /// Highest chatroom sequence number told, sent, or current when the chatroom was entered.
    last_seq: u64,
    /// While catching up after a reconnect, live messages wait here so that everything is
    /// told in sequence order.
    held: Option<Vec<ChatMessage>>,
    /// `members_changed` digests applied so far (see [`local_entered_chatroom`](Self::local_entered_chatroom)).
    digests: u64,
}

impl RoomMirror {
    /// The mirror of a room just joined by `local`, from the join answer.
    pub(crate) fn new(local: UserUuid, joined: JoinRoomOutput) -> Self {
        let JoinRoomOutput { room, counts, .. } = &joined;
        let (info, counts) = (room.clone(), *counts);
        Self { local, info, members: seen_in(joined), counts, last_seq: 0, held: None, digests: 0 }
    }

    /// The room's state as last seen.
    pub(crate) fn info(&self) -> &RoomInfo {
        &self.info
    }

    /// The local member, if the mirror knows it (it does once joined).
    pub(crate) fn local_member(&self) -> Option<&RoomMember> {
        self.members.get(&self.local)
    }

    /// A member by uuid, local or remote.
    pub(crate) fn member(&self, user_uuid: &str) -> Option<&RoomMember> {
        self.members.get(user_uuid)
    }

    /// Every member seen but the local one, in no particular order.
    pub(crate) fn remote_members(&self) -> impl Iterator<Item = &RoomMember> {
        self.members.values().filter(|m| m.uuid != self.local)
    }

    /// Whether the local member is in the chatroom.
    pub(crate) fn local_in_chatroom(&self) -> bool {
        self.local_member().is_some_and(|m| m.is_in_chatroom)
    }

    /// Highest chatroom sequence number seen (told, sent, or current on entering).
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Replaces room, members and counts with a fresh snapshot (a join answer), keeping the
    /// sequence number and any catch-up under way. Tells the new counts if they changed.
    pub(crate) fn refresh(&mut self, joined: JoinRoomOutput) -> Vec<RoomEvent> {
        self.info = joined.room.clone();
        let counts = joined.counts;
        self.members = seen_in(joined);
        self.set_counts(counts)
    }

    /// A sequence number the local member knows without being told: its own sends, and the
    /// chatroom's newest message when entering (what came before is history, not missed).
    pub(crate) fn note_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Applies a server event; returns what to tell the app, in order.
    pub(crate) fn apply(&mut self, event: Event) -> Vec<RoomEvent> {
        let event = match event {
            Event::MemberJoinRoom { members, .. } => return self.joined_room(members),
            Event::MemberLeaveRoom { members, .. } => return self.left_room(members),
            Event::MemberJoinChatroom { members, .. } => return self.joined_chatroom(members),
            Event::MemberLeaveChatroom { members, .. } => return self.left_chatroom(members),
            Event::MembersChanged(digest) => return self.digest(*digest),
            Event::ChatroomMessagesReceived { messages, .. } => {
                return self.live(unshare(messages)).into_iter().collect()
            }
            Event::RoomEnd { reason, .. } => RoomEvent::RoomEnd(reason),
            Event::RoomPropertiesChanged { properties, .. } => {
                self.info.properties.extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
                RoomEvent::RoomPropertiesChanged(properties)
            }
            Event::RoomPropertiesDeleted { keys, .. } => {
                for k in &keys {
                    self.info.properties.remove(k);
                }
                RoomEvent::RoomPropertiesDeleted(keys)
            }
            Event::RoomLockStateChanged { locked, .. } => {
                self.info.locked = locked;
                RoomEvent::RoomLockStateChanged(locked)
            }
            _ => return Vec::new(),
        };
        vec![event]
    }

    /// Whether live messages are being held back for a catch-up.
    #[cfg(test)]
    pub(crate) fn is_resuming(&self) -> bool {
        self.held.is_some()
    }

    /// Starts a catch-up after a reconnect: live messages are held back from now on.
    pub(crate) fn begin_resume(&mut self) {
        self.held = Some(Vec::new());
    }

    /// Missed messages fetched from history during a catch-up. The local member's own are
    /// skipped (it knows them from its sends), except those the server sent on its behalf.
    pub(crate) fn replayed(&mut self, messages: Vec<SharedMessage>) -> Option<RoomEvent> {
        let mut fresh = self.take_fresh(unshare(messages));
        fresh.retain(|m| m.from_user_uuid != self.local || m.from_backend);
        messages_event(fresh)
    }

    /// Ends the catch-up: releases the held live messages that the replay did not already
    /// tell, in order. Live messages are told directly again from now on.
    pub(crate) fn end_resume(&mut self) -> Option<RoomEvent> {
        let held = self.held.take().unwrap_or_default();
        let fresh = self.take_fresh(held);
        messages_event(fresh)
    }

    /// Live messages. Ephemeral ones (`persist: false`, `seq` 0) are told at once, even
    /// during a catch-up: they are never in history, have no place in the sequence and are
    /// not deduplicated. The others are told in sequence order, once, after any catch-up.
    fn live(&mut self, messages: Vec<ChatMessage>) -> Option<RoomEvent> {
        let (ephemeral, numbered): (Vec<_>, Vec<_>) = messages.into_iter().partition(is_ephemeral);
        let mut told = match self.held.as_mut() {
            Some(held) => {
                held.extend(numbered);
                Vec::new()
            }
            None => self.take_fresh(numbered),
        };
        told.extend(ephemeral);
        messages_event(told)
    }

    /// The messages newer than any seen, in order; advances the last sequence number. This
    /// is what makes replays and retries invisible: nothing is told twice.
    fn take_fresh(&mut self, mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
        messages.sort_by_key(|m| m.seq);
        let last = &mut self.last_seq;
        messages.retain(|m| {
            let fresh = m.seq > *last;
            *last = (*last).max(m.seq);
            fresh
        });
        messages
    }
}

/// The members a join answer shows: its page, the joiner and the host.
fn seen_in(joined: JoinRoomOutput) -> HashMap<UserUuid, RoomMember> {
    let JoinRoomOutput { member, host, members, .. } = joined;
    let (member, host) = (unboxed(&member), host.as_ref().map(unboxed));
    members.into_iter().chain(host).chain([member]).map(|m| (m.uuid.clone(), m)).collect()
}

/// The join answer's joiner and host, boxed or not.
fn unboxed(m: &impl std::borrow::Borrow<RoomMember>) -> RoomMember {
    m.borrow().clone()
}

fn is_ephemeral(m: &ChatMessage) -> bool {
    !m.persist || m.seq == 0
}

fn unshare(messages: Vec<SharedMessage>) -> Vec<ChatMessage> {
    messages.into_iter().map(Arc::unwrap_or_clone).collect()
}

fn messages_event(messages: Vec<ChatMessage>) -> Option<RoomEvent> {
    (!messages.is_empty()).then_some(RoomEvent::ChatroomMessagesReceived(messages))
}

#[cfg(test)]
pub(crate) mod tests;
