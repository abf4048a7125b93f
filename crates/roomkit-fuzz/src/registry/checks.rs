//! The invariants of the `registry` target: on each output as it is drained, and on every
//! room's state after each step.

use std::collections::BTreeSet;

use roomkit_core::{HistoryRequest, Output};
use roomkit_protocol::{
    ops::{MembersPage, Response},
    Event, RoomUuid, ALL_CODES,
};

use super::Sim;

/// Longest member list the checks page through (5 connections make at most 4 members).
const MAX_PAGES: usize = 16;

impl Sim {
    /// Checks one output as the driver receives it.
    pub(super) fn on_output(&mut self, output: Output) {
        match output {
            Output::Reply { conn, request_id, result } => {
                let Some(pending) = self.pending.remove(&(conn, request_id)) else {
                    panic!("an answer to no waiting request: {conn:?} #{request_id}: {result:?}");
                };
                match result {
                    Err(e) => {
                        let code = e.code();
                        assert!(
                            ALL_CODES.iter().any(|c| c.code == code),
                            "{} is not in the code table",
                            code
                        );
                        assert!(!e.to_string().is_empty(), "an error without a message");
                    }
                    Ok(response) => self.on_response(conn, pending, response),
                }
            }
            Output::History { conn, request_id, room_uuid, read } => {
                let Some(pending) = self.pending.remove(&(conn, request_id)) else {
                    panic!("a history answer to no waiting request: {conn:?} #{request_id}");
                };
                let expected = match read.asked_by() {
                    HistoryRequest::JoinChatroom => "join_chatroom",
                    _ => "fetch_chatroom_history",
                };
                assert_eq!(pending.op, expected, "a history read answers the wrong operation");
                assert_eq!(pending.room.as_ref(), Some(&room_uuid), "a history read of another room");
                assert_eq!(read.viewer(), self.users.get(&conn), "history read as someone else");
                assert!(read.limit() <= 100, "a history page of {} messages", read.limit());
            }
            Output::Deliver { audience, event } => {
                let conns: Vec<_> = audience.iter().collect();
                assert_eq!(conns.len(), audience.len(), "an audience miscounts itself");
                let distinct: BTreeSet<_> = conns.iter().collect();
                assert_eq!(
                    distinct.len(),
                    conns.len(),
                    "an event delivered twice to one connection: {event:?}"
                );
                for conn in &conns {
                    assert!(self.users.contains_key(conn), "an event for a connection never opened");
                }
                match &event {
                    Event::ChatroomMessagesReceived { room_uuid, messages } => {
                        for conn in conns {
                            for m in messages.iter().filter(|m| m.seq > 0) {
                                let key = (room_uuid.clone(), m.seq, m.message_uuid.clone());
                                assert!(
                                    self.stored.contains(&key),
                                    "message {} delivered before it was stored",
                                    m.seq
                                );
                                let last = self.last_seq.entry((conn, room_uuid.clone())).or_default();
                                assert!(
                                    m.seq > *last,
                                    "{conn:?} got message {} after {} in {room_uuid}",
                                    m.seq,
                                    *last
                                );
                                *last = m.seq;
                            }
                        }
                    }
                    Event::RoomEnd { room_uuid, .. } => {
                        for conn in conns {
                            self.last_seq.remove(&(conn, room_uuid.clone()));
                        }
                    }
                    _ => {}
                }
            }
            Output::Roster { .. } | Output::RoomEnded { .. } => {}
        }
    }

    fn on_response(&mut self, conn: roomkit_core::ConnId, pending: super::Pending, response: Response) {
        let page_limit = self.reg.config().join_member_page;
        match response {
            Response::JoinRoom(out) => {
                assert_eq!(pending.op, "join_room");
                assert!(out.members.len() <= page_limit, "a join answer of {} members", out.members.len());
                assert!(out.members.len() <= out.counts.room as usize, "more members listed than counted");
                assert_eq!(Some(&out.room.room_uuid), pending.room.as_ref());
                assert_eq!(Some(&out.member.uuid), self.users.get(&conn), "joined as someone else");
                // A new membership: its messages may start again from 1 (a room ended and
                // created again under the same id), but never go back within it.
                self.last_seq.remove(&(conn, out.room.room_uuid.clone()));
            }
            Response::FetchRoomMembers(page) | Response::FetchChatroomMembers(page) => {
                assert!(pending.op.ends_with("_members"), "a member page answers {}", pending.op);
                assert!(page.members.len() <= 100, "a member page of {} members", page.members.len());
                self.cursors.extend(page.next_cursor);
                self.cursors.truncate(8);
            }
            Response::SendTextMessage(out) | Response::SendCustomMessage(out) => {
                assert!(pending.op.starts_with("send_"), "a sent message answers {}", pending.op);
                let m = &out.message;
                if m.seq > 0 {
                    let room = pending.room.clone().expect("a send names its room");
                    let key = (room, m.seq, m.message_uuid.clone());
                    assert!(
                        self.stored.contains(&key),
                        "message {} acknowledged before it was stored",
                        m.seq
                    );
                }
                assert_eq!(Some(&out.message.from_user_uuid), self.users.get(&conn), "sent as someone else");
            }
            Response::CreateRoom(out) => {
                assert_eq!(pending.op, "create_room");
                assert_eq!(Some(&out.room.room_uuid), pending.room.as_ref());
            }
            _ => {}
        }
    }

    /// Checks every live room's state against itself.
    pub(super) fn check_rooms(&self) {
        let uuids: Vec<RoomUuid> = self.reg.rooms().map(|r| r.room_uuid.clone()).collect();
        assert_eq!(uuids.len(), self.reg.room_count(), "room_count disagrees with the rooms");
        let (mut members_total, mut chat_total) = (0, 0);
        for uuid in &uuids {
            let counts = self.reg.room_counts(uuid).expect("a live room has counts");
            let members = self.reg.members(uuid).expect("a live room has members");
            let chat = self.reg.chatroom_members(uuid).expect("a live room has chatroom members");
            assert_eq!(counts.room as usize, members.len(), "{uuid}: room count vs member list");
            assert_eq!(counts.chatroom as usize, chat.len(), "{uuid}: chatroom count vs member list");
            let in_room: BTreeSet<_> = members.iter().map(|m| &m.uuid).collect();
            assert_eq!(in_room.len(), members.len(), "{uuid}: a member listed twice");
            let in_chat: BTreeSet<_> = chat.iter().map(|m| &m.uuid).collect();
            assert_eq!(in_chat.len(), chat.len(), "{uuid}: a chatroom member listed twice");
            assert!(in_chat.is_subset(&in_room), "{uuid}: in the chatroom but not in the room");
            for m in &members {
                assert_eq!(m.is_in_chatroom, in_chat.contains(&m.uuid), "{uuid}: {} is_in_chatroom", m.uuid);
            }
            let hosts = members.iter().filter(|m| m.role == roomkit_protocol::Role::Host).count();
            assert!(hosts <= 1, "{uuid}: {hosts} hosts");
            let chatroom_enabled = self.reg.room_info(uuid).is_some_and(|r| r.chatroom_enabled);
            assert!(chatroom_enabled || chat.is_empty(), "{uuid}: chatroom members without a chatroom");
            for limit in [1, 2, 3] {
                let paged = page_through(|cursor| self.reg.room_members_page(uuid, cursor, limit));
                assert_eq!(ids(&paged), ids(&members), "{uuid}: paging the room by {limit}");
                if chatroom_enabled {
                    let paged = page_through(|cursor| self.reg.chatroom_members_page(uuid, cursor, limit));
                    assert_eq!(ids(&paged), ids(&chat), "{uuid}: paging the chatroom by {limit}");
                }
            }
            members_total += members.len();
            chat_total += chat.len();
        }
        assert_eq!(self.reg.member_counts(), (members_total, chat_total), "member_counts vs the rooms");
    }
}

fn ids(members: &[roomkit_protocol::RoomMember]) -> Vec<String> {
    members.iter().map(|m| m.uuid.to_string()).collect()
}

/// Every member, page by page.
fn page_through(
    mut page: impl FnMut(Option<&str>) -> Result<MembersPage, roomkit_core::Error>,
) -> Vec<roomkit_protocol::RoomMember> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let p = page(cursor.as_deref()).expect("paging a live room");
        all.extend(p.members);
        match p.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("paging never ends");
}
