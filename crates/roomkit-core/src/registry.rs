//! The room registry: the sans-IO state machine a driver runs. It routes each input to its
//! room and keeps the indexes across rooms (timers, connections, ended rooms, the output queue
//! and its commit); the rules themselves are methods of [`Room`].

mod commits;
mod conns;
mod ended;
mod output;
mod placement;
mod timers;

use std::collections::HashMap;

use roomkit_protocol::{
    ops::{CreateRoom, CreateRoomOutput, Empty, MembersPage, Request, Response},
    EndReason, MemberCounts, RoomInfo, RoomMember, RoomUuid, SharedMessage, UserUuid,
};

pub use output::Output;
pub(crate) use output::Outputs;

use self::{
    conns::ConnIndex,
    ended::EndedRooms,
    timers::{Timer, TimerTable},
};
use crate::{
    config::MAX_HISTORY_LIMIT,
    room::{Caller, Left, MemberList, Room, Send as MessageSend},
    store::StoreOp,
    tally::{Over, RoomTally},
    ConnId, CoreConfig, Error, Identity,
};

/// Every room of one shard, and the rules of rooms and chatrooms.
///
/// A sans-IO state machine in the manner of `quinn-proto`: it never blocks, spawns or reads
/// a clock. Methods group as:
/// - inputs: [`handle_request`](Self::handle_request),
///   [`handle_disconnect`](Self::handle_disconnect), [`handle_timeout`](Self::handle_timeout),
///   [`handle_commit`](Self::handle_commit);
/// - commands: [`close_room`](Self::close_room), [`restore_room`](Self::restore_room),
///   [`create_room`](Self::create_room), [`send_backend_message`](Self::send_backend_message);
/// - outputs: [`take_commit`](Self::take_commit) (what to make durable),
///   [`poll_output`](Self::poll_output) and [`poll_timeout`](Self::poll_timeout);
/// - getters: [`room_info`](Self::room_info), [`members`](Self::members), ...
///
/// After every input or command: take the commit, apply it to the store (all of it, in one
/// durable write), report the result with `handle_commit`, then drain `poll_output`. Outputs
/// queued after a store operation are held back until its commit is reported, so nothing is
/// acknowledged or delivered before it is durable. A failed commit is settled here: its
/// messages are forgotten (a retry with the same id stores them as new), their deliveries
/// dropped and their sends answered with [`Error::NotStored`].
///
/// Time is an input: `now` is milliseconds since the Unix epoch; it stamps messages and
/// drives idle expiry.
///
/// ```
/// use roomkit_core::{ConnId, CoreConfig, Identity, Output, RoomRegistry};
/// use roomkit_protocol::ops::{CreateRoom, Request};
///
/// let mut rooms = RoomRegistry::new(CoreConfig::default());
/// let alice = Identity::unrestricted("alice".parse().unwrap());
/// let create = CreateRoom {
///     room_uuid: "r1".parse().unwrap(),
///     room_name: "Maths".into(),
///     template_id: None,
///     max_members: None,
///     password: None,
///     initial_room_properties: Default::default(),
///     enable_chatroom: true,
/// };
/// rooms.handle_request(1_000, ConnId(1), &alice, 7, Request::CreateRoom(create));
/// let commit = rooms.take_commit();
/// assert_eq!(commit.len(), 1); // the new room; a driver applies it to its store
/// assert!(rooms.poll_output().is_none(), "the reply waits for the commit");
/// rooms.handle_commit(Ok(()));
/// while let Some(output) = rooms.poll_output() {
///     match output {
///         Output::Reply { conn, request_id, result } => {
///             assert_eq!((conn, request_id), (ConnId(1), 7));
///             assert!(result.is_ok());
///         }
///         Output::Deliver { .. }
///         | Output::History { .. }
///         | Output::RoomEnded { .. }
///         | Output::Roster { .. } => {}
///     }
/// }
/// assert_eq!(rooms.room_count(), 1);
/// ```
#[derive(Debug)]
pub struct RoomRegistry {
    config: CoreConfig,
    rooms: HashMap<RoomUuid, Room>,
    conns: ConnIndex,
    ended: EndedRooms,
    timers: TimerTable,
    outputs: Outputs,
    /// Live rooms by creator, for the room caps; shared with the server's other registries.
    tally: RoomTally,
}

impl RoomRegistry {
    /// An empty registry, counting its rooms toward the caps on its own.
    pub fn new(config: CoreConfig) -> Self {
        Self::with_tally(config, RoomTally::new())
    }

    /// An empty registry whose rooms count toward the caps (`max_rooms_per_account`,
    /// `max_rooms`) together with those of every registry sharing `tally`: a server with
    /// several shards gives each shard's registry the same tally.
    pub fn with_tally(config: CoreConfig, tally: RoomTally) -> Self {
        let ended = EndedRooms::new(config.ended_rooms_remembered);
        Self {
            config,
            rooms: HashMap::new(),
            conns: ConnIndex::default(),
            ended,
            timers: TimerTable::default(),
            outputs: Outputs::default(),
            tally,
        }
    }

    /// This registry also reports every change of a room's member lists
    /// ([`Output::Roster`]), for a driver that delivers events away from the registry.
    #[must_use]
    pub fn with_roster_outputs(mut self) -> Self {
        self.outputs.rosters = true;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Handles one request of connection `conn`, authenticated as `identity`. Produces a
    /// [`Output::Reply`] (or, for a request answered from the store, an [`Output::History`]),
    /// preceded by the events the request caused, in the order members must see them.
    ///
    /// Only room and chatroom operations are handled here: the connection answers `login`
    /// and `ping` itself; any other operation is refused with `FORBIDDEN`.
    pub fn handle_request(
        &mut self,
        now: u64,
        conn: ConnId,
        identity: &Identity,
        request_id: u64,
        request: Request,
    ) {
        let caller = Caller { conn, identity };
        // An ephemeral message is stored nowhere: its answer never waits on a commit's fate.
        let acknowledges_message = match &request {
            Request::SendTextMessage(_) | Request::RecallChatroomMessage(_) => true,
            Request::SendCustomMessage(p) => p.persist,
            _ => false,
        };
        let room_uuid = request.room_uuid().cloned();
        let dispatched = self.dispatch(now, caller, request_id, request);
        if let Some(room_uuid) = room_uuid {
            self.arm_digest_timer(&room_uuid);
        }
        let result = match dispatched {
            Ok(None) => return, // answered with an `Output::History`
            Ok(Some(response)) => Ok(response),
            Err(e) => Err(e),
        };
        if acknowledges_message {
            self.outputs.acknowledge(conn, request_id, result);
        } else {
            self.outputs.reply(conn, request_id, result);
        }
    }

    /// Runs one request; `None` when the store answers it.
    fn dispatch(
        &mut self,
        now: u64,
        caller: Caller<'_>,
        request_id: u64,
        request: Request,
    ) -> Result<Option<Response>, Error> {
        let done = |()| Empty {};
        let response = match request {
            Request::CreateRoom(p) => Response::CreateRoom(self.create_room(now, caller.identity, p)?),
            Request::JoinRoom(p) => Response::JoinRoom(self.join_room(now, caller, p)?),
            Request::LeaveRoom(p) => {
                Response::LeaveRoom(self.leave_room(now, caller, &p.room_uuid).map(done)?)
            }
            Request::EndRoom(p) => Response::EndRoom(self.end_room(caller, &p.room_uuid).map(done)?),
            Request::LockRoom(p) => {
                let (room, _, out) = self.room_parts(&p.room_uuid)?;
                Response::LockRoom(room.set_locked(caller, true, out).map(done)?)
            }
            Request::UnlockRoom(p) => {
                let (room, _, out) = self.room_parts(&p.room_uuid)?;
                Response::UnlockRoom(room.set_locked(caller, false, out).map(done)?)
            }
            Request::UpdateRoomProperty(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                let changed = room.update_property(config, caller, p.key, Some(p.value), out);
                Response::UpdateRoomProperty(changed.map(done)?)
            }
            Request::DeleteRoomProperty(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                Response::DeleteRoomProperty(
                    room.update_property(config, caller, p.key, None, out).map(done)?,
                )
            }
            Request::JoinChatroom(p) => {
                if p.history_count.is_some_and(|n| n == 0 || n > MAX_HISTORY_LIMIT) {
                    return Err(Error::bad("history_count", format!("must be 1 to {MAX_HISTORY_LIMIT}")));
                }
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                room.join_chatroom(now, config, caller, request_id, p.history_count, out)?;
                return Ok(None);
            }
            Request::LeaveChatroom(p) => {
                let (room, _, out) = self.room_parts(&p.room_uuid)?;
                Response::LeaveChatroom(room.leave_chatroom(now, caller, out).map(done)?)
            }
            Request::SendTextMessage(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                Response::SendTextMessage(room.send(now, config, caller, MessageSend::text(p), out)?)
            }
            Request::SendCustomMessage(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                Response::SendCustomMessage(room.send(now, config, caller, MessageSend::custom(p), out)?)
            }
            Request::FetchChatroomHistory(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                room.fetch_history(config, caller, request_id, p, out)?;
                return Ok(None);
            }
            Request::RecallChatroomMessage(p) => {
                let (room, config, out) = self.room_parts(&p.room_uuid)?;
                Response::RecallChatroomMessage(room.recall(now, config, caller, &p.message_uuid, out)?)
            }
            other => return self.read(caller, other).map(Some),
        };
        Ok(Some(response))
    }

    /// The requests that only read a room: member pages and counts.
    fn read(&self, caller: Caller<'_>, request: Request) -> Result<Response, Error> {
        Ok(match request {
            Request::FetchRoomMembers(p) => {
                let room = self.live(&p.room_uuid)?;
                let page = room.fetch_members(caller, MemberList::Room, p.cursor.as_deref(), p.limit);
                Response::FetchRoomMembers(page?)
            }
            Request::FetchChatroomMembers(p) => {
                let room = self.live(&p.room_uuid)?;
                let page = room.fetch_members(caller, MemberList::Chatroom, p.cursor.as_deref(), p.limit);
                Response::FetchChatroomMembers(page?)
            }
            Request::GetRoomInfo(p) => Response::GetRoomInfo(self.live(&p.room_uuid)?.get_info(caller)?),
            _ => return Err(Error::Forbidden("operation not handled by rooms")),
        })
    }

    /// The connection is gone. Its members stay for `reconnect_grace_ms`, silently: if they
    /// join again in time nobody notices; if not, they leave with the usual events. With no
    /// grace period they leave at once.
    pub fn handle_disconnect(&mut self, now: u64, conn: ConnId) {
        let Some((user, rooms)) = self.conns.remove(conn) else { return };
        let grace = self.config.reconnect_grace_ms;
        for room_uuid in rooms {
            if grace == 0 {
                self.remove_member(now, &room_uuid, &user);
            } else if let Some(room) = self.rooms.get_mut(&room_uuid) {
                room.detach(&user, now);
                self.timers.arm_grace(now, grace, room_uuid, user.clone());
            }
        }
    }

    /// Ends rooms empty for the idle timeout; removes members gone for the grace period.
    pub fn handle_timeout(&mut self, now: u64) {
        let (idle, grace) = (self.config.room_idle_timeout_ms, self.config.reconnect_grace_ms);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::RoomIdle(room_uuid) => {
                    let Some(since) = self.rooms.get(&room_uuid).and_then(|r| r.empty_since) else {
                        continue;
                    };
                    if since.saturating_add(idle) <= now {
                        self.close_room_now(&room_uuid, EndReason::EndOfLife);
                    } else {
                        self.timers.arm_idle(since, idle, room_uuid);
                    }
                }
                Timer::Digest(room_uuid) => {
                    if let Some(room) = self.rooms.get_mut(&room_uuid) {
                        room.digest_due(now, &mut self.outputs);
                    }
                }
                Timer::Grace(room_uuid, user) => {
                    let gone = self
                        .rooms
                        .get(&room_uuid)
                        .and_then(|r| r.detached_since(&user))
                        .is_some_and(|since| since.saturating_add(grace) <= now);
                    if gone {
                        self.remove_member(now, &room_uuid, &user);
                    }
                }
            }
        }
    }

    // ---- commands -----------------------------------------------------------------------

    /// Creates a room as `identity` — the `create_room` request, for callers without a
    /// connection (the admin API). Same checks, same result.
    pub fn create_room(
        &mut self,
        now: u64,
        identity: &Identity,
        p: CreateRoom,
    ) -> Result<CreateRoomOutput, Error> {
        let room = Room::create(now, &self.config, identity, p)?;
        let room_uuid = room.info.room_uuid.clone();
        if self.rooms.contains_key(&room_uuid) {
            return Err(Error::RoomAlreadyExists(room_uuid));
        }
        // The server's own identity (the admin API's rooms) is held to the total only.
        let creator = &identity.user;
        let per_account =
            Some(self.config.max_rooms_per_account).filter(|m| *m > 0 && !creator.is_reserved());
        let total = Some(self.config.max_rooms).filter(|m| *m > 0);
        self.tally.add(creator, per_account, total).map_err(|over| match over {
            Over::Account(max) => Error::TooManyRooms { max },
            Over::Total(max) => Error::TooManyRoomsInTotal { max },
        })?;
        let output = CreateRoomOutput { room: room.info.clone() };
        self.outputs.store(StoreOp::PutRoom(room.record()));
        self.ended.forget(&room_uuid);
        self.rooms.insert(room_uuid.clone(), room);
        self.timers.arm_idle(now, self.config.room_idle_timeout_ms, room_uuid);
        Ok(output)
    }

    /// Sends a text message from the application's backend to the whole chatroom: every
    /// chatroom member receives it, with `from_backend` set. Same text limits as members'.
    pub fn send_backend_message(
        &mut self,
        now: u64,
        room_uuid: &RoomUuid,
        from: UserUuid,
        from_nick: String,
        text: String,
    ) -> Result<SharedMessage, Error> {
        let (room, config, out) = self.room_parts(room_uuid)?;
        room.send_backend(now, config, from, from_nick, text, out)
    }

    /// Ends a room on behalf of the backend or operator; members get `room_end(reason)`.
    pub fn close_room(&mut self, room_uuid: &RoomUuid, reason: EndReason) -> Result<(), Error> {
        self.room_parts(room_uuid)?;
        self.close_room_now(room_uuid, reason);
        Ok(())
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next thing the driver must do. `None` also while the next output waits for an
    /// unreported commit.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop()
    }

    /// Deadlines pending: at most one idle timer and one digest timer per room, and one grace
    /// period per detached member; a timer that lost its purpose (a room joined again, a room
    /// ended) is gone.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    // ---- getters ------------------------------------------------------------------------

    /// Number of live rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Every live room.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomInfo> {
        self.rooms.values().map(|r| &r.info)
    }

    /// A live room's state.
    pub fn room_info(&self, room_uuid: &RoomUuid) -> Option<&RoomInfo> {
        self.rooms.get(room_uuid).map(|r| &r.info)
    }

    /// A live room's members, in join order. Copies every member: for tests and small
    /// rooms; page with [`room_members_page`](Self::room_members_page).
    pub fn members(&self, room_uuid: &RoomUuid) -> Option<Vec<RoomMember>> {
        self.rooms.get(room_uuid).map(Room::members)
    }

    /// A live room's chatroom members, in the order they entered. Copies every member; page
    /// with [`chatroom_members_page`](Self::chatroom_members_page).
    pub fn chatroom_members(&self, room_uuid: &RoomUuid) -> Option<Vec<RoomMember>> {
        self.rooms.get(room_uuid).map(Room::chatroom_members)
    }

    /// One page of a live room's members in join order, as `fetch_room_members` answers it
    /// (`cursor` is a previous page's `next_cursor`), for any `limit`; O(log n + limit).
    pub fn room_members_page(
        &self,
        room_uuid: &RoomUuid,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MembersPage, Error> {
        self.live(room_uuid)?.members_page(MemberList::Room, cursor, limit)
    }

    /// One page of a live room's chatroom members, as `fetch_chatroom_members` answers it.
    pub fn chatroom_members_page(
        &self,
        room_uuid: &RoomUuid,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MembersPage, Error> {
        self.live(room_uuid)?.members_page(MemberList::Chatroom, cursor, limit)
    }

    /// The sequence number of the newest message a room's chatroom accepted, stored or not
    /// yet (0 before the first); `None` without a live room with a chatroom.
    pub fn chatroom_last_seq(&self, room_uuid: &RoomUuid) -> Option<u64> {
        self.rooms.get(room_uuid)?.chatroom.as_ref().map(|c| c.last_seq())
    }

    /// A live room's exact online counts, in O(1).
    pub fn room_counts(&self, room_uuid: &RoomUuid) -> Option<MemberCounts> {
        self.rooms.get(room_uuid).map(Room::counts)
    }

    /// Total members of all rooms, and of all chatrooms: O(rooms), no member is visited.
    pub fn member_counts(&self) -> (usize, usize) {
        self.rooms
            .values()
            .map(Room::counts)
            .fold((0, 0), |(m, c), counts| (m + counts.room as usize, c + counts.chatroom as usize))
    }

    // ---- routing ------------------------------------------------------------------------

    fn live(&self, room_uuid: &RoomUuid) -> Result<&Room, Error> {
        self.rooms.get(room_uuid).ok_or_else(|| self.ended.missing(room_uuid))
    }

    /// A live room, with what its rules need: the configuration and the output queue.
    fn room_parts(&mut self, room_uuid: &RoomUuid) -> Result<(&mut Room, &CoreConfig, &mut Outputs), Error> {
        let room = self.rooms.get_mut(room_uuid).ok_or_else(|| self.ended.missing(room_uuid))?;
        Ok((room, &self.config, &mut self.outputs))
    }

    fn join_room(
        &mut self,
        now: u64,
        caller: Caller<'_>,
        mut p: roomkit_protocol::ops::JoinRoom,
    ) -> Result<roomkit_protocol::ops::JoinRoomOutput, Error> {
        Room::check_join(&self.config, caller, &mut p)?;
        let room_uuid = p.room_uuid.clone();
        let (room, _, out) = self.room_parts(&room_uuid)?;
        // The room's own uuid, which the connection index then shares, rather than the
        // request's copy: one allocation fewer per member.
        let room_uuid = room.info.room_uuid.clone();
        let joined = room.join(now, caller, p, out)?;
        if let Some(left) = joined.displaced {
            self.forget_conn(now, &room_uuid, left);
        }
        // The room has a member, and this one a connection: their timers have no purpose.
        self.timers.cancel(Timer::RoomIdle(room_uuid.clone()));
        self.timers.cancel(Timer::Grace(room_uuid.clone(), caller.user().clone()));
        self.conns.track(caller.conn, caller.user(), room_uuid);
        Ok(joined.output)
    }

    fn leave_room(&mut self, now: u64, caller: Caller<'_>, room_uuid: &RoomUuid) -> Result<(), Error> {
        let (room, _, out) = self.room_parts(room_uuid)?;
        let left = room.leave(now, caller, out)?;
        self.forget_conn(now, room_uuid, left);
        Ok(())
    }

    fn end_room(&mut self, caller: Caller<'_>, room_uuid: &RoomUuid) -> Result<(), Error> {
        self.room_parts(room_uuid)?.0.require_host(caller)?;
        self.close_room_now(room_uuid, EndReason::CloseByMember);
        Ok(())
    }

    /// Removes `user` from the room (its connection is gone for good).
    fn remove_member(&mut self, now: u64, room_uuid: &RoomUuid, user: &UserUuid) {
        self.timers.cancel(Timer::Grace(room_uuid.clone(), user.clone()));
        let Some(room) = self.rooms.get_mut(room_uuid) else { return };
        if let Some(left) = room.remove_member(now, user, None, &mut self.outputs) {
            self.forget_conn(now, room_uuid, left);
        }
        self.arm_digest_timer(room_uuid);
    }

    /// Arms the room's digest timer if a change started a new digest.
    fn arm_digest_timer(&mut self, room_uuid: &RoomUuid) {
        if let Some(due) = self.rooms.get_mut(room_uuid).and_then(Room::take_digest_timer) {
            self.timers.arm_digest(due, room_uuid.clone());
        }
    }

    /// A connection left a room: unindex it; an emptied room starts its idle timer.
    fn forget_conn(&mut self, now: u64, room_uuid: &RoomUuid, left: Left) {
        self.conns.untrack(left.conn, room_uuid);
        if left.emptied {
            self.timers.arm_idle(now, self.config.room_idle_timeout_ms, room_uuid.clone());
        }
    }

    /// Ends a room and deletes it from the store; members get `room_end(reason)`.
    fn close_room_now(&mut self, room_uuid: &RoomUuid, reason: EndReason) {
        let Some(room) = self.rooms.remove(room_uuid) else { return };
        self.tally.remove(&room.info.creator);
        self.timers.cancel(Timer::RoomIdle(room_uuid.clone()));
        self.timers.cancel(Timer::Digest(room_uuid.clone()));
        for user in room.detached_members() {
            self.timers.cancel(Timer::Grace(room_uuid.clone(), user.clone()));
        }
        let audience = room.audience(None);
        for conn in audience.iter() {
            self.conns.untrack(conn, room_uuid);
        }
        self.outputs
            .deliver(audience, roomkit_protocol::Event::RoomEnd { room_uuid: room_uuid.clone(), reason });
        self.ended.remember(room_uuid.clone());
        self.outputs.store(StoreOp::DeleteRoom(room_uuid.clone()));
        self.outputs.room_ended(room_uuid.clone(), reason);
    }
}
