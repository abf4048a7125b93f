//! Reading a room's members a page at a time, and its exact online counts: the answer to
//! `join_room`, `fetch_room_members`, `fetch_chatroom_members` and `get_room_info`.
//!
//! A cursor names its list (`r` for the room's members, `c` for the chatroom's) and the order
//! number of the last member a page returned (see [`Roster`]), e.g. `r50`; it is opaque to
//! clients, and a cursor the room never handed out, or one of the other list, is refused.

use roomkit_protocol::{
    ops::{GetRoomInfoOutput, JoinRoomOutput, MembersPage},
    RoomMember, UserUuid,
};

use super::{Caller, Room};
use crate::{
    config::{DEFAULT_MEMBERS_LIMIT, MAX_MEMBERS_LIMIT},
    roster::Roster,
    Error,
};

/// Which of a room's member lists to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberList {
    /// The room's members, in join order.
    Room,
    /// The chatroom's members, in the order they entered.
    Chatroom,
}

impl Room {
    /// The answer to a successful `join_room` by `user`: the room, the joiner, the host, the
    /// counts and the first page of members.
    pub(crate) fn join_output(&self, user: &UserUuid) -> JoinRoomOutput {
        let (members, next_cursor) = self.page_of(MemberList::Room, &self.roster, 0, self.join_member_page);
        JoinRoomOutput {
            room: self.info.clone(),
            member: Box::new(self.members[user].info.clone()),
            host: self.host().cloned().map(Box::new),
            counts: self.counts(),
            members,
            next_cursor,
        }
    }

    /// `fetch_room_members` / `fetch_chatroom_members`.
    pub(crate) fn fetch_members(
        &self,
        caller: Caller<'_>,
        list: MemberList,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<MembersPage, Error> {
        self.member_on(caller.conn, caller.user())?;
        let limit = limit.unwrap_or(DEFAULT_MEMBERS_LIMIT);
        if limit == 0 || limit > MAX_MEMBERS_LIMIT {
            return Err(Error::bad("limit", format!("must be 1 to {MAX_MEMBERS_LIMIT}")));
        }
        self.members_page(list, cursor, limit as usize)
    }

    /// One page of `list` after `cursor`, whoever asks (the admin API pages this way too).
    pub(crate) fn members_page(
        &self,
        list: MemberList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MembersPage, Error> {
        let roster = match list {
            MemberList::Room => &self.roster,
            MemberList::Chatroom => {
                &self
                    .chatroom
                    .as_ref()
                    .ok_or_else(|| Error::ChatroomNotEnabled(self.info.room_uuid.clone()))?
                    .roster
            }
        };
        let after = parse_cursor(list, roster, cursor)?;
        let (members, next_cursor) = self.page_of(list, roster, after, limit);
        Ok(MembersPage { members, next_cursor, counts: self.counts() })
    }

    /// `get_room_info`.
    pub(crate) fn get_info(&self, caller: Caller<'_>) -> Result<GetRoomInfoOutput, Error> {
        self.member_on(caller.conn, caller.user())?;
        Ok(GetRoomInfoOutput { room: self.info.clone(), counts: self.counts() })
    }

    fn page_of(
        &self,
        list: MemberList,
        roster: &Roster,
        after: u64,
        limit: usize,
    ) -> (Vec<RoomMember>, Option<String>) {
        let (users, next) = roster.page(after, limit);
        let members = users.into_iter().map(|u| self.members[u].info.clone()).collect();
        (members, next.map(|order| format!("{}{order}", list.cursor_prefix())))
    }
}

impl MemberList {
    /// The letter a cursor into this list starts with.
    fn cursor_prefix(self) -> char {
        match self {
            MemberList::Room => 'r',
            MemberList::Chatroom => 'c',
        }
    }
}

/// The order number a cursor continues after (0 for none). Only the list's letter and a
/// decimal number the roster handed out, written as the server writes them, is a cursor.
fn parse_cursor(list: MemberList, roster: &Roster, cursor: Option<&str>) -> Result<u64, Error> {
    let Some(cursor) = cursor else { return Ok(0) };
    let not_ours = || {
        Error::bad(
            "cursor",
            "not a cursor of this list: pass the previous page's `next_cursor` of the same operation",
        )
    };
    let digits = cursor.strip_prefix(list.cursor_prefix()).ok_or_else(not_ours)?;
    let order: u64 = digits.parse().map_err(|_| not_ours())?;
    if order == 0 || order.to_string() != digits || !roster.issued(order) {
        return Err(not_ours());
    }
    Ok(order)
}
