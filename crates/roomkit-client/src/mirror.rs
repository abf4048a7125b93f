//! The client's mirror of one joined room: plain data with `&mut self` methods, no locks, no
//! IO, no runtime.
//!
//! The network layer feeds it what the server says (events, join answers, replayed history,
//! the answers to its own sends) and tells the app the [`RoomEvent`]s it returns. What to tell,
//! in which order, and what never to tell twice is decided here and unit-tested without a
//! runtime; locks and sockets live one layer up (`room.rs`, `session.rs`).

use std::{collections::HashMap, sync::Arc};

use roomkit_protocol::{ChatMessage, Event, RoomInfo, RoomMember, SharedMessage, UserUuid};

use crate::RoomEvent;

/// A joined room as the local member knows it.
#[derive(Debug)]
pub(crate) struct RoomMirror {
    local: UserUuid,
    info: RoomInfo,
    members: HashMap<UserUuid, RoomMember>,
    /// Highest chatroom sequence number told, sent, or current when the chatroom was entered.
    last_seq: u64,
    /// While catching up after a reconnect, live messages wait here so that everything is
    /// told in sequence order.
    held: Option<Vec<ChatMessage>>,
}

impl RoomMirror {
    /// The mirror of a room just joined by `local`, from the join answer.
    pub(crate) fn new(local: UserUuid, info: RoomInfo, members: Vec<RoomMember>) -> Self {
        Self { local, info, members: by_uuid(members), last_seq: 0, held: None }
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

    /// Every member but the local one, in no particular order.
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

    /// Replaces room and members with a fresh snapshot (a join answer), keeping the
    /// sequence number and any catch-up under way.
    pub(crate) fn refresh(&mut self, info: RoomInfo, members: Vec<RoomMember>) {
        self.info = info;
        self.members = by_uuid(members);
    }

    /// The local member entered or left the chatroom (its own call's answer).
    pub(crate) fn set_local_in_chatroom(&mut self, inside: bool) {
        if let Some(m) = self.members.get_mut(&self.local) {
            m.is_in_chatroom = inside;
        }
    }

    /// A sequence number the local member knows without being told: its own sends, and the
    /// chatroom's newest message when entering (what came before is history, not missed).
    pub(crate) fn note_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Applies a server event; returns what to tell the app, if anything.
    pub(crate) fn apply(&mut self, event: Event) -> Option<RoomEvent> {
        Some(match event {
            Event::MemberJoinRoom { members, .. } => {
                for m in &members {
                    self.members.insert(m.uuid.clone(), m.clone());
                }
                RoomEvent::MemberJoinRoom(members)
            }
            Event::MemberLeaveRoom { members, .. } => {
                for m in &members {
                    self.members.remove(&m.uuid);
                }
                RoomEvent::MemberLeaveRoom(members)
            }
            Event::MemberJoinChatroom { members, .. } => {
                self.set_in_chatroom(&members, true);
                RoomEvent::MemberJoinChatroom(members)
            }
            Event::MemberLeaveChatroom { members, .. } => {
                self.set_in_chatroom(&members, false);
                RoomEvent::MemberLeaveChatroom(members)
            }
            Event::ChatroomMessagesReceived { messages, .. } => return self.live(unshare(messages)),
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
            _ => return None,
        })
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

    fn live(&mut self, messages: Vec<ChatMessage>) -> Option<RoomEvent> {
        if let Some(held) = self.held.as_mut() {
            held.extend(messages);
            return None;
        }
        let fresh = self.take_fresh(messages);
        messages_event(fresh)
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

    fn set_in_chatroom(&mut self, members: &[RoomMember], inside: bool) {
        for m in members {
            if let Some(known) = self.members.get_mut(&m.uuid) {
                known.is_in_chatroom = inside;
            }
        }
    }
}

fn by_uuid(members: Vec<RoomMember>) -> HashMap<UserUuid, RoomMember> {
    members.into_iter().map(|m| (m.uuid.clone(), m)).collect()
}

fn unshare(messages: Vec<SharedMessage>) -> Vec<ChatMessage> {
    messages.into_iter().map(Arc::unwrap_or_clone).collect()
}

fn messages_event(messages: Vec<ChatMessage>) -> Option<RoomEvent> {
    (!messages.is_empty()).then_some(RoomEvent::ChatroomMessagesReceived(messages))
}

#[cfg(test)]
pub(crate) mod tests;
