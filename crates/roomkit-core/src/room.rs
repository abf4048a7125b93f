//! One room: its own state, its members and its chatroom, and the rules that decide what a
//! request does to them. The rules are `impl Room` blocks spread over files by concern:
//! [`members`] (join, leave, remove), [`paging`] (member pages and counts), [`properties`]
//! (lock, properties), [`chat`] (the chatroom). Each takes the configuration, the caller and the output queue; the registry only
//! finds the room and keeps its indexes.

mod chat;
mod members;
mod paging;
mod presence;
mod properties;

use std::collections::HashMap;

use roomkit_protocol::{MemberCounts, Role, RoomInfo, RoomMember, UserUuid};

use crate::{
    chatroom::Chatroom,
    config::MessageRate,
    rate::{DepartedRates, TokenBucket},
    registry::Outputs,
    roster::{Place, Roster, RosterKind},
    ConnId, CoreConfig, Error, Identity,
};

pub(crate) use chat::Send;
pub(crate) use members::Left;
pub(crate) use paging::MemberList;
pub(crate) use presence::Change;

/// Who sent a request: its connection and the account it is logged in as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) conn: ConnId,
    pub(crate) identity: &'a Identity,
}

impl Caller<'_> {
    pub(crate) fn user(&self) -> &UserUuid {
        &self.identity.user
    }
}

/// A member of a room, with the connection it joined through.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) info: RoomMember,
    pub(crate) conn: ConnId,
    room_place: Place,
    chat_place: Option<Place>,
    /// The member's chatroom message rate; `None` while full (made on the member's first
    /// message: most members of a large room never send, and an idle member keeps a pointer).
    sending: Option<Box<TokenBucket>>,
    /// The host or a room admin: always named in presence digests.
    pub(crate) privileged: bool,
}

impl Member {
    /// The member's chatroom message rate, made full on its first message.
    pub(crate) fn sending(&mut self, rate: MessageRate) -> &mut TokenBucket {
        self.sending.get_or_insert_with(|| Box::new(TokenBucket::new(rate)))
    }
}

/// `user` is no longer detached. The map is given back once empty: after many members
/// dropped at once (a network outage), it would keep their room for the room's life. (A
/// function of the map, so that a caller may hold a member of the room meanwhile.)
fn forget_detached(detached: &mut HashMap<UserUuid, u64>, user: &UserUuid) {
    if detached.remove(user).is_some() && detached.is_empty() {
        *detached = HashMap::new();
    }
}

/// A live room.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) info: RoomInfo,
    pub(crate) password: Option<String>,
    /// Boxed: the map keeps spare capacity (up to half its slots are empty after it grows),
    /// and an empty slot of a boxed map costs a pointer rather than a whole `Member`.
    members: HashMap<UserUuid, Box<Member>>,
    /// The members whose connection is gone, since when (they may come back within the
    /// reconnect grace period without anyone noticing). Kept beside the members rather than
    /// in each: few are detached at a time.
    detached: HashMap<UserUuid, u64>,
    roster: Roster,
    /// The member whose role is host, if one is in the room (kept so that no rule searches).
    host: Option<UserUuid>,
    pub(crate) chatroom: Option<Chatroom>,
    /// Since when the room has had no members (creation counts as the start).
    pub(crate) empty_since: Option<u64>,
    /// Most members in a `join_room` answer.
    join_member_page: usize,
    /// How members learn of each other's comings and goings, by the room's size.
    presence: presence::Presence,
    /// Each member's chatroom message rate.
    member_rate: MessageRate,
    /// The buckets of members who left before theirs refilled.
    departed_rates: DepartedRates,
}

impl Room {
    pub(crate) fn new(info: RoomInfo, password: Option<String>, config: &CoreConfig) -> Self {
        let chatroom =
            info.chatroom_enabled.then(|| Chatroom::new(config.dedupe_window, config.chatroom_message_rate));
        let empty_since = Some(info.created_at);
        Self {
            info,
            password,
            members: HashMap::new(),
            detached: HashMap::new(),
            roster: Roster::new(RosterKind::Room),
            host: None,
            chatroom,
            empty_since,
            join_member_page: config.join_member_page,
            presence: presence::Presence::new(config),
            member_rate: config.member_message_rate,
            departed_rates: DepartedRates::default(),
        }
    }

    /// What survives a restart.
    pub(crate) fn record(&self) -> crate::store::RoomRecord {
        crate::store::RoomRecord { info: self.info.clone(), password: self.password.clone() }
    }

    pub(crate) fn member_count(&self) -> usize {
        self.roster.len()
    }

    pub(crate) fn member(&self, user: &UserUuid) -> Option<&Member> {
        self.members.get(user).map(|m| &**m)
    }

    /// The caller's membership, which must be through this very connection.
    pub(crate) fn member_on(&self, conn: ConnId, user: &UserUuid) -> Result<&Member, Error> {
        match self.members.get(user) {
            Some(m) if m.conn == conn => Ok(m),
            _ => Err(Error::NotInRoom(self.info.room_uuid.clone())),
        }
    }

    /// Host rights: the member's role, or an admin grant.
    pub(crate) fn require_host(&self, caller: Caller<'_>) -> Result<(), Error> {
        if caller.identity.grants.room_admin {
            return Ok(());
        }
        let member = self.member_on(caller.conn, caller.user())?;
        if member.info.role == roomkit_protocol::Role::Host {
            Ok(())
        } else {
            Err(Error::Forbidden("only the room's host may do this"))
        }
    }

    pub(crate) fn has_host(&self) -> bool {
        self.host.is_some()
    }

    /// The host, if one is in the room.
    pub(crate) fn host(&self) -> Option<&RoomMember> {
        self.host.as_ref().and_then(|u| self.members.get(u)).map(|m| &m.info)
    }

    /// Exact online counts, in O(1).
    pub(crate) fn counts(&self) -> MemberCounts {
        MemberCounts {
            room: self.roster.len() as u64,
            chatroom: self.chatroom.as_ref().map_or(0, |c| c.roster.len() as u64),
        }
    }

    /// Every member, in join order.
    pub(crate) fn members(&self) -> Vec<RoomMember> {
        self.roster.in_join_order().map(|u| self.members[u].info.clone()).collect()
    }

    /// Chatroom members, in the order they entered.
    pub(crate) fn chatroom_members(&self) -> Vec<RoomMember> {
        self.chatroom
            .as_ref()
            .map(|c| c.roster.in_join_order().map(|u| self.members[u].info.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn audience(&self, except: Option<ConnId>) -> crate::Audience {
        self.roster.audience(except)
    }

    /// Adds a member; `room_admin` is the caller's grant (the host is privileged by its role).
    pub(crate) fn add(&mut self, info: RoomMember, conn: ConnId, room_admin: bool, out: &mut Outputs) {
        let user = info.uuid.clone();
        let room_place = self.roster.push(user.clone(), conn);
        out.roster(&self.info.room_uuid, RosterKind::Room, conn, true);
        let privileged = room_admin || info.role == Role::Host;
        if info.role == Role::Host {
            self.host = Some(user.clone());
        }
        // A member back soon after leaving gets its bucket back, not a fresh burst.
        let sending = self.departed_rates.take(&user).map(Box::new);
        let member = Member { info, conn, room_place, chat_place: None, sending, privileged };
        self.members.insert(user, Box::new(member));
        self.empty_since = None;
    }

    /// Removes a member (leaving the chatroom first); returns it as it was.
    pub(crate) fn remove(&mut self, user: &UserUuid, now: u64, out: &mut Outputs) -> Option<Member> {
        self.exit_chatroom(user, out);
        let member = *self.members.remove(user)?;
        out.roster(&self.info.room_uuid, RosterKind::Room, member.conn, false);
        forget_detached(&mut self.detached, user);
        if let Some(bucket) = &member.sending {
            self.departed_rates.keep(now, user, TokenBucket::clone(bucket));
        }
        if let Some(moved) = self.roster.remove(member.room_place) {
            let moved = moved.clone();
            self.members.get_mut(&moved).expect("roster and members agree").room_place.slot =
                member.room_place.slot;
        }
        if self.host.as_ref() == Some(user) {
            self.host = None;
        }
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
        Some(member)
    }

    /// Marks a member's connection as gone; it stays a member for now.
    pub(crate) fn detach(&mut self, user: &UserUuid, now: u64) {
        if self.members.contains_key(user) {
            self.detached.insert(user.clone(), now);
        }
    }

    /// The members whose connection is gone (within the reconnect grace period).
    pub(crate) fn detached_members(&self) -> impl Iterator<Item = &UserUuid> {
        self.detached.keys()
    }

    /// Since when `user`'s connection has been gone, if it is a detached member.
    pub(crate) fn detached_since(&self, user: &UserUuid) -> Option<u64> {
        self.detached.get(user).copied()
    }

    /// Gives a detached member its new connection, silently.
    pub(crate) fn reattach(&mut self, user: &UserUuid, conn: ConnId, out: &mut Outputs) {
        let Some(member) = self.members.get_mut(user) else { return };
        forget_detached(&mut self.detached, user);
        let old = std::mem::replace(&mut member.conn, conn);
        self.roster.set_conn(member.room_place.slot, conn);
        let room = &self.info.room_uuid;
        out.roster(room, RosterKind::Room, old, false);
        out.roster(room, RosterKind::Room, conn, true);
        if let (Some(place), Some(chat)) = (member.chat_place, self.chatroom.as_mut()) {
            chat.roster.set_conn(place.slot, conn);
            out.roster(room, RosterKind::Chatroom, old, false);
            out.roster(room, RosterKind::Chatroom, conn, true);
        }
    }

    pub(crate) fn is_in_chatroom(&self, user: &UserUuid) -> bool {
        self.members.get(user).is_some_and(|m| m.chat_place.is_some())
    }

    /// Puts a member in the chatroom; returns it as it is now, or `None` if it already was in.
    pub(crate) fn enter_chatroom(&mut self, user: &UserUuid, out: &mut Outputs) -> Option<RoomMember> {
        let (Some(chat), Some(member)) = (self.chatroom.as_mut(), self.members.get_mut(user)) else {
            return None;
        };
        if member.chat_place.is_some() {
            return None;
        }
        member.chat_place = Some(chat.roster.push(user.clone(), member.conn));
        member.info.is_in_chatroom = true;
        out.roster(&self.info.room_uuid, RosterKind::Chatroom, member.conn, true);
        Some(member.info.clone())
    }

    /// Takes a member out of the chatroom; returns it as it is now, or `None` if it was not in.
    pub(crate) fn exit_chatroom(&mut self, user: &UserUuid, out: &mut Outputs) -> Option<RoomMember> {
        let (Some(chat), Some(member)) = (self.chatroom.as_mut(), self.members.get_mut(user)) else {
            return None;
        };
        let place = member.chat_place.take()?;
        member.info.is_in_chatroom = false;
        out.roster(&self.info.room_uuid, RosterKind::Chatroom, member.conn, false);
        let info = member.info.clone();
        if let Some(moved) = chat.roster.remove(place) {
            let moved = moved.clone();
            let moved = self.members.get_mut(&moved).expect("roster and members agree");
            if let Some(p) = moved.chat_place.as_mut() {
                p.slot = place.slot;
            }
        }
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(room: &str) -> RoomInfo {
        RoomInfo {
            room_uuid: room.parse().unwrap(),
            room_name: room.into(),
            creator: "c".parse().unwrap(),
            properties: Default::default(),
            locked: false,
            max_members: None,
            chatroom_enabled: true,
            has_password: false,
            created_at: 0,
        }
    }

    fn member(u: &str) -> RoomMember {
        RoomMember {
            uuid: u.parse().unwrap(),
            name: u.into(),
            avatar: None,
            role: Default::default(),
            properties: Default::default(),
            is_in_chatroom: false,
        }
    }

    /// Every member costs an entry of the room's map, and up to as much again in the map's
    /// spare capacity: an entry is a key and a pointer.
    #[test]
    fn a_member_entry_stays_small() {
        assert_eq!(std::mem::size_of::<(UserUuid, Box<Member>)>(), 24);
        // What each member's box holds: 160 bytes is an allocator size class, 192 the next.
        assert!(std::mem::size_of::<Member>() <= 160, "a member takes {} B", std::mem::size_of::<Member>());
    }

    #[test]
    fn slots_stay_consistent_through_removals() {
        let mut room = Room::new(info("r"), None, &CoreConfig::default());
        let out = &mut Outputs::default();
        for (i, u) in ["a", "b", "c", "d"].iter().enumerate() {
            room.add(member(u), ConnId(i as u64), false, out);
            assert!(room.enter_chatroom(&u.parse().unwrap(), out).is_some());
        }
        room.remove(&"a".parse().unwrap(), 5, out);
        assert!(room.exit_chatroom(&"b".parse().unwrap(), out).is_some());
        room.remove(&"d".parse().unwrap(), 6, out);
        let names: Vec<_> = room.chatroom_members().into_iter().map(|m| m.name).collect();
        assert_eq!(names, vec!["c"]);
        let all: Vec<_> = room.members().into_iter().map(|m| m.name).collect();
        assert_eq!(all, vec!["b", "c"], "join order survives swaps in the audience array");
        assert_eq!(room.counts(), MemberCounts { room: 2, chatroom: 1 });
        assert!(room.is_in_chatroom(&"c".parse().unwrap()));
        room.remove(&"b".parse().unwrap(), 7, out);
        room.remove(&"c".parse().unwrap(), 8, out);
        assert_eq!(room.empty_since, Some(8));
        assert_eq!(room.member_count(), 0);
    }

    /// After many members dropped at once and came back (or left), the map of detached
    /// members holds nothing: it is given back once empty, not kept at its peak.
    #[test]
    fn the_detached_map_is_given_back_once_everyone_is_back() {
        let mut room = Room::new(info("r"), None, &CoreConfig::default());
        let out = &mut Outputs::default();
        let users: Vec<UserUuid> = (0..200).map(|i| format!("u{i}").parse().unwrap()).collect();
        for (i, user) in users.iter().enumerate() {
            room.add(member(user.as_str()), ConnId(i as u64), false, out);
            room.detach(user, 10);
        }
        assert_eq!(room.detached_members().count(), 200);
        assert_eq!(room.detached_since(&users[7]), Some(10));
        for (i, user) in users.iter().enumerate() {
            if i % 2 == 0 {
                room.reattach(user, ConnId(1000 + i as u64), out);
            } else {
                room.remove(user, 20, out);
            }
        }
        assert_eq!(room.detached_members().count(), 0);
        assert_eq!(room.detached_since(&users[0]), None, "back: no longer detached");
        assert_eq!(room.detached.capacity(), 0, "the map's room was given back");
    }
}
