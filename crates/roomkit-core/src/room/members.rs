//! Room membership rules: creating a room, joining it (first time, again from another device,
//! back within the grace period), leaving it and being removed from it.

use roomkit_protocol::{
    ops::{CreateRoom, JoinRoom, JoinRoomOutput},
    EndReason, Event, Role, RoomInfo, RoomMember, UserUuid,
};

use super::{Caller, Change, Room};
use crate::{
    registry::Outputs,
    validate::{check_bytes, check_chars, check_properties},
    ConnId, CoreConfig, Error, Identity,
};

/// A connection that lost its place in a room: the registry stops indexing it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    /// The connection the member was on.
    pub(crate) conn: ConnId,
    /// The room has no member left: its idle timer starts.
    pub(crate) emptied: bool,
}

/// The answer to a successful `join_room`, and the connection it displaced, if any.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) output: JoinRoomOutput,
    pub(crate) displaced: Option<Left>,
}

impl Room {
    /// A room made by `create_room` as `identity`. Checks the fields only: the registry
    /// checks that the uuid is free, and stores the room.
    pub(crate) fn create(
        now: u64,
        config: &CoreConfig,
        identity: &Identity,
        p: CreateRoom,
    ) -> Result<Self, Error> {
        if !identity.grants.create_rooms {
            return Err(Error::Forbidden("the credentials do not grant creating rooms"));
        }
        check_chars("room_name", &p.room_name, 1, config.max_room_name_chars)?;
        let password = p.password.clone().filter(|p| !p.is_empty());
        if let Some(pw) = &password {
            check_chars("password", pw, 1, config.max_password_chars)?;
        }
        if let Some(t) = &p.template_id {
            check_bytes("template_id", t, config.max_avatar_bytes)?;
        }
        if p.max_members == Some(0) {
            return Err(Error::bad("max_members", "must be at least 1"));
        }
        check_properties("initial_room_properties", &p.initial_room_properties, config)?;
        Ok(Self::new_created(now, identity, p, password, config))
    }

    fn new_created(
        now: u64,
        identity: &Identity,
        p: CreateRoom,
        password: Option<String>,
        config: &CoreConfig,
    ) -> Self {
        let info = RoomInfo {
            room_uuid: p.room_uuid,
            room_name: p.room_name,
            creator: identity.user.clone(),
            properties: p.initial_room_properties,
            locked: false,
            max_members: p.max_members,
            chatroom_enabled: p.enable_chatroom,
            has_password: password.is_some(),
            created_at: now,
        };
        Room::new(info, password, config)
    }

    /// The checks of `join_room` that need no room: grants and fields. With
    /// `pin_display_names`, the display name asked for is replaced by the credentials' name,
    /// cut to `max_user_name_chars` characters if it is longer (the credentials' name is not
    /// the joiner's to fix, so it never fails the join).
    pub(crate) fn check_join(config: &CoreConfig, caller: Caller<'_>, p: &mut JoinRoom) -> Result<(), Error> {
        if !caller.identity.grants.join.allows(&p.room_uuid) {
            return Err(Error::Forbidden("the credentials do not grant joining this room"));
        }
        if config.pin_display_names && p.user_name != caller.identity.name {
            p.user_name.clone_from(&caller.identity.name);
        }
        if config.pin_display_names {
            if let Some((cut, _)) = p.user_name.char_indices().nth(config.max_user_name_chars) {
                p.user_name.truncate(cut);
            }
        }
        check_chars("user_name", &p.user_name, 1, config.max_user_name_chars)?;
        if let Some(a) = &p.avatar {
            check_bytes("avatar", a, config.max_avatar_bytes)?;
        }
        check_properties("initial_my_properties", &p.initial_my_properties, config)
    }

    /// `join_room`, once [`check_join`](Self::check_join) passed. The same account on another connection is replaced (its old connection
    /// told `room_end(kicked_by_other_device)`); a member back within the grace period, or a
    /// `resume` rejoin, takes up its place silently.
    pub(crate) fn join(
        &mut self,
        now: u64,
        caller: Caller<'_>,
        p: JoinRoom,
        out: &mut Outputs,
    ) -> Result<Joined, Error> {
        let user = caller.user();
        let previous_conn = self.member(user).map(|m| m.conn);
        if previous_conn == Some(caller.conn) {
            // Joining again on the same connection changes nothing.
            return Ok(Joined { output: self.join_output(user), displaced: None });
        }
        let detached = self.detached_since(user).is_some();
        if detached || (p.resume && previous_conn.is_some()) {
            // Back within the grace period (or before the server noticed the drop): the
            // member takes up its place again on this connection, silently. (The password
            // was checked when it first joined.)
            self.reattach(user, caller.conn, out);
            let displaced = previous_conn.filter(|_| !detached).map(|old| {
                // The old connection, if it is still there at all, is told it lost the room.
                let room_uuid = self.info.room_uuid.clone();
                out.deliver_to(old, Event::RoomEnd { room_uuid, reason: EndReason::KickedByOtherDevice });
                Left { conn: old, emptied: false }
            });
            return Ok(Joined { output: self.join_output(user), displaced });
        }
        self.check_admission(caller, &p, previous_conn.is_some())?;
        // The same account on another connection: that connection is replaced.
        let displaced = if previous_conn.is_some() {
            self.remove_member(now, user, Some(EndReason::KickedByOtherDevice), out)
        } else {
            None
        };
        let info = RoomMember {
            uuid: user.clone(),
            name: p.user_name,
            avatar: p.avatar,
            role: p.role,
            properties: p.initial_my_properties,
            is_in_chatroom: false,
        };
        self.resize_presence(self.member_count() + 1, out);
        let room_admin = caller.identity.grants.room_admin;
        self.add(info.clone(), caller.conn, room_admin, out);
        if self.presence.per_member() {
            let audience = self.audience(Some(caller.conn));
            out.deliver(audience, Event::MemberJoinRoom { room_uuid: p.room_uuid, members: vec![info] });
        } else {
            self.presence.record(now, Change::JoinedRoom, &info, room_admin || info.role == Role::Host);
        }
        Ok(Joined { output: self.join_output(user), displaced })
    }

    /// Lock, password, capacity and host role, for a join that is not a silent return.
    fn check_admission(&self, caller: Caller<'_>, p: &JoinRoom, already_member: bool) -> Result<(), Error> {
        let user = caller.user();
        if !already_member && self.info.locked {
            return Err(Error::RoomLocked(p.room_uuid.clone()));
        }
        if self.password.is_some() && self.password != p.password {
            return Err(Error::BadPassword(p.room_uuid.clone()));
        }
        if let Some(max) = self.info.max_members.filter(|_| !already_member) {
            if self.member_count() >= max as usize {
                return Err(Error::RoomFull { room: p.room_uuid.clone(), max });
            }
        }
        if p.role == Role::Host {
            if self.info.creator != *user && !caller.identity.grants.room_admin {
                return Err(Error::Forbidden("only the room's creator may join as host"));
            }
            let host_elsewhere =
                self.has_host() && !self.member(user).is_some_and(|m| m.info.role == Role::Host);
            if host_elsewhere {
                return Err(Error::OverRoleLimit(p.room_uuid.clone()));
            }
        }
        Ok(())
    }

    /// `leave_room`.
    pub(crate) fn leave(&mut self, now: u64, caller: Caller<'_>, out: &mut Outputs) -> Result<Left, Error> {
        self.member_on(caller.conn, caller.user())?;
        self.remove_member(now, caller.user(), None, out)
            .ok_or_else(|| Error::NotInRoom(self.info.room_uuid.clone()))
    }

    /// Removes `user`, telling the others (`member_leave_chatroom` if it was in the chatroom,
    /// then `member_leave_room`). With `ended`, the member's own connection is sent
    /// `room_end(ended)`.
    pub(crate) fn remove_member(
        &mut self,
        now: u64,
        user: &UserUuid,
        ended: Option<EndReason>,
        out: &mut Outputs,
    ) -> Option<Left> {
        self.member(user)?;
        let was_in_chatroom = self.is_in_chatroom(user);
        self.resize_presence(self.member_count() - 1, out);
        let member = self.remove(user, now, out)?;
        let room_uuid = &self.info.room_uuid;
        let mut info = member.info;
        info.is_in_chatroom = false;
        if !self.presence.per_member() {
            if was_in_chatroom {
                self.presence.record(now, Change::LeftChatroom, &info, member.privileged);
            }
            self.presence.record(now, Change::LeftRoom, &info, member.privileged);
        } else {
            let others = self.audience(None);
            if was_in_chatroom {
                let event =
                    Event::MemberLeaveChatroom { room_uuid: room_uuid.clone(), members: vec![info.clone()] };
                out.deliver(others.clone(), event);
            }
            out.deliver(others, Event::MemberLeaveRoom { room_uuid: room_uuid.clone(), members: vec![info] });
        }
        let room_uuid = &self.info.room_uuid;
        if let Some(reason) = ended {
            out.deliver_to(member.conn, Event::RoomEnd { room_uuid: room_uuid.clone(), reason });
        }
        Some(Left { conn: member.conn, emptied: self.member_count() == 0 })
    }
}

impl Room {
    /// The room is about to have `count` members: if that changes its presence mode, the
    /// digest gathered so far goes out first.
    fn resize_presence(&mut self, count: usize, out: &mut Outputs) {
        if let Some(pending) = self.presence.resize(count) {
            self.send_digest(pending, out);
        }
    }

    /// Sends the pending digest if it is due at `now` (the registry's digest timer fired).
    pub(crate) fn digest_due(&mut self, now: u64, out: &mut Outputs) {
        if let Some(pending) = self.presence.take_due(now) {
            self.send_digest(pending, out);
        }
    }

    /// When a digest timer must be armed for this room, once.
    pub(crate) fn take_digest_timer(&mut self) -> Option<u64> {
        self.presence.take_arm()
    }

    fn send_digest(&mut self, pending: super::presence::Pending, out: &mut Outputs) {
        let digest = pending.into_event(self.info.room_uuid.clone(), self.counts());
        out.deliver(self.audience(None), Event::MembersChanged(Box::new(digest)));
    }
}
