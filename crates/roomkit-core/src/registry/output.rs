//! What the registry asks of its driver, and the queue that holds outputs back until the
//! store commit they follow has been reported.
//!
//! Every store operation joins the pending commit. Any output queued after it waits for that
//! commit (later outputs wait too, so nothing overtakes). When the driver reports a failed
//! commit, the outputs that depended on it are settled by the rule each was queued with:
//! a message delivery is dropped, a send's acknowledgement becomes an error; the rest go out.
//!
//! A driver may keep several commits in flight ([`RoomRegistry::with_commits_in_flight`]);
//! they are reported in the order they were taken. A failed commit fails every commit taken
//! after it and not yet reported, whatever the driver says of them: they follow it in the
//! store (a room deleted by the failed one may be created again by a later one), so the store
//! must not have applied them — a driver hands each commit with the registry's
//! [`commit_epoch`](RoomRegistry::commit_epoch) and its store refuses the commits of an epoch
//! that failed. No new commit is taken until those are reported, so that the failed
//! commits' room records are stored again, in order, before anything that came after them.
//!
//! [`RoomRegistry::with_commits_in_flight`]: crate::RoomRegistry::with_commits_in_flight
//! [`commit_epoch`]: crate::RoomRegistry::commit_epoch

use std::{collections::VecDeque, mem};

use roomkit_protocol::{ops::Response, EndReason, Event, RoomUuid, SharedMessage};

use crate::{roster::RosterKind, store::StoreOp, Audience, ConnId, Error, HistoryRead};

/// What the driver must do next. Drain with [`RoomRegistry::poll_output`](crate::RoomRegistry::poll_output)
/// after every input and after every [`handle_commit`](crate::RoomRegistry::handle_commit).
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Answer request `request_id` of connection `conn`.
    Reply {
        /// The connection that sent the request.
        conn: ConnId,
        /// The request's id.
        request_id: u64,
        /// The response data, or why the request failed.
        result: Result<Response, Error>,
    },
    /// Send `event` to every connection of `audience`. Encode it once and share the bytes.
    Deliver {
        /// The recipients.
        audience: Audience,
        /// The event.
        event: Event,
    },
    /// Answer request `request_id` of `conn` with a page of the room's history, read from the
    /// store by [`HistoryRead::run`] (or step by step: see [`HistoryRead`]). The read may run
    /// off the driver's critical path: its answer covers the messages accepted before the
    /// request, and every later one reaches the asker live.
    History {
        /// The connection that asked.
        conn: ConnId,
        /// The request's id.
        request_id: u64,
        /// The room.
        room_uuid: RoomUuid,
        /// What to read, for whom, and the answer it makes.
        read: HistoryRead,
    },
    /// A connection entered (`present`) or left one of a room's member lists. Only from a
    /// registry made [`with_roster_outputs`](crate::RoomRegistry::with_roster_outputs), for
    /// a driver that delivers a room's events away from the registry (a cluster's nodes keep
    /// their own connections' share of each list and deliver an [`Audience`] that is a
    /// whole list, [`Audience::roster`], from it). Ordered with the other outputs: a
    /// delivery's audience is the list as these changes left it. When a room ends its lists
    /// are dropped with it ([`Output::RoomEnded`]), without one change per member.
    Roster {
        /// The room.
        room_uuid: RoomUuid,
        /// Which list.
        roster: RosterKind,
        /// The connection.
        conn: ConnId,
        /// Entered (true) or left (false).
        present: bool,
    },
    /// A room ended; informational (logs, metrics). Its members were sent `room_end`.
    RoomEnded {
        /// The room.
        room_uuid: RoomUuid,
        /// Why.
        reason: EndReason,
    },
}

/// What becomes of a queued output if the commit it waits for fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfLost {
    /// It goes out anyway.
    Send,
    /// It announced an uncommitted message: it is dropped.
    Drop,
    /// It acknowledges a message (a send's, a recall's notification): it becomes
    /// [`Error::NotStored`] if the commit holding that message fails.
    Fail,
}

#[derive(Debug)]
struct Queued {
    output: Output,
    /// The commit it waits for, if any.
    after: Option<u64>,
    if_lost: IfLost,
}

/// A commit taken by the driver and not yet reported.
#[derive(Debug)]
pub(crate) struct InFlight {
    number: u64,
    /// The messages it appends, to forget if it fails.
    pub(crate) appended: Vec<(RoomUuid, SharedMessage)>,
    /// Its room records and deletions, to store again if it fails.
    rooms: Vec<StoreOp>,
}

/// The registry's output queue and its pending commit.
#[derive(Debug)]
pub(crate) struct Outputs {
    queue: VecDeque<Queued>,
    /// Store operations not yet taken by the driver: commit number `taken + 1`.
    pending: Vec<StoreOp>,
    /// Commits taken so far.
    taken: u64,
    /// Commits reported so far (they are reported in order, one at a time).
    reported: u64,
    /// Commits taken and not yet reported, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Most commits in flight at once.
    pub(crate) max_in_flight: usize,
    /// Commits up to this number fail, whatever their report: they were taken before an
    /// earlier one's failure was reported.
    doomed_through: u64,
    /// Failures reported so far, not counting the commits they doomed.
    epoch: u64,
    /// Room records and deletions of failed commits, stored first in the next commit.
    unstored_rooms: Vec<StoreOp>,
    /// Whether to report member list changes ([`Output::Roster`]).
    pub(crate) rosters: bool,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            pending: Vec::new(),
            taken: 0,
            reported: 0,
            in_flight: VecDeque::new(),
            max_in_flight: 1,
            doomed_through: 0,
            epoch: 0,
            unstored_rooms: Vec::new(),
            rosters: false,
        }
    }
}

impl Outputs {
    fn push(&mut self, output: Output, if_lost: IfLost) {
        let after = if self.pending.is_empty() {
            // Nothing new to commit, but nothing may overtake what already waits.
            self.queue.back().and_then(|q| q.after).filter(|n| *n > self.reported)
        } else {
            Some(self.taken + 1)
        };
        self.queue.push_back(Queued { output, after, if_lost });
    }

    /// Like [`push`](Self::push), for an output that reads the store: it also waits for the
    /// commits in flight, whose messages the read must find (they were delivered live only to
    /// those in the chatroom when they were accepted).
    fn push_read(&mut self, output: Output) {
        self.push(output, IfLost::Send);
        let in_flight = self.in_flight.back().map(|f| f.number);
        if let Some(queued) = self.queue.back_mut() {
            queued.after = queued.after.max(in_flight);
        }
    }

    /// Answers a request.
    pub(crate) fn reply(&mut self, conn: ConnId, request_id: u64, result: Result<Response, Error>) {
        self.push(Output::Reply { conn, request_id, result }, IfLost::Send);
    }

    /// Acknowledges a sent message or a recall: an error instead if the commit holding the
    /// message (the recall's notification) fails.
    pub(crate) fn acknowledge(&mut self, conn: ConnId, request_id: u64, result: Result<Response, Error>) {
        self.push(Output::Reply { conn, request_id, result }, IfLost::Fail);
    }

    /// Sends `event` to `audience`, unless nobody is in it.
    pub(crate) fn deliver(&mut self, audience: Audience, event: Event) {
        if !audience.is_empty() {
            self.push(Output::Deliver { audience, event }, IfLost::Send);
        }
    }

    /// Sends `event` to one connection.
    pub(crate) fn deliver_to(&mut self, conn: ConnId, event: Event) {
        self.deliver(Audience::only(vec![conn]), event);
    }

    /// Makes `op` durable in the next commit.
    pub(crate) fn store(&mut self, op: StoreOp) {
        self.pending.push(op);
    }

    /// Stores an accepted chatroom message and announces it to `audience` once stored.
    pub(crate) fn message(&mut self, room: &RoomUuid, message: &SharedMessage, audience: Audience) {
        self.store(StoreOp::Append { room: room.clone(), message: SharedMessage::clone(message) });
        if !audience.is_empty() {
            let event =
                Event::ChatroomMessagesReceived { room_uuid: room.clone(), messages: vec![message.clone()] };
            self.push(Output::Deliver { audience, event }, IfLost::Drop);
        }
    }

    /// Asks the driver to answer a request from the store.
    pub(crate) fn history(&mut self, conn: ConnId, request_id: u64, room_uuid: &RoomUuid, read: HistoryRead) {
        let room_uuid = room_uuid.clone();
        self.push_read(Output::History { conn, request_id, room_uuid, read });
    }

    /// Reports that `conn` entered or left a member list of `room_uuid`, when asked to.
    pub(crate) fn roster(&mut self, room_uuid: &RoomUuid, roster: RosterKind, conn: ConnId, present: bool) {
        if self.rosters {
            let room_uuid = room_uuid.clone();
            self.push(Output::Roster { room_uuid, roster, conn, present }, IfLost::Send);
        }
    }

    /// Tells the driver a room ended.
    pub(crate) fn room_ended(&mut self, room_uuid: RoomUuid, reason: EndReason) {
        self.push(Output::RoomEnded { room_uuid, reason }, IfLost::Send);
    }

    /// The next output that waits for no unreported commit.
    pub(crate) fn pop(&mut self) -> Option<Output> {
        if self.queue.front()?.after.is_some_and(|n| n > self.reported) {
            return None;
        }
        self.queue.pop_front().map(|q| q.output)
    }

    /// The pending operations, now in flight; empty while `max_in_flight` commits are in
    /// flight, or one that an earlier failure doomed.
    ///
    /// A failed commit's room records and deletions go first in the next one. The rooms
    /// already changed, so the store must follow, and before anything that came after them:
    /// a room deleted, then created again under its id, must not find the old room's messages
    /// under the new room's numbers. They wait for something new to commit rather than being
    /// retried on their own, so that a failing store is not retried in a loop.
    pub(crate) fn take_commit(&mut self) -> Vec<StoreOp> {
        let doomed_in_flight = self.in_flight.back().is_some_and(|f| f.number <= self.doomed_through);
        if self.in_flight.len() >= self.max_in_flight || doomed_in_flight || self.pending.is_empty() {
            return Vec::new();
        }
        self.taken += 1;
        let mut ops = mem::take(&mut self.unstored_rooms);
        ops.append(&mut self.pending);
        let appended = ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::Append { room, message } => Some((room.clone(), message.clone())),
                _ => None,
            })
            .collect();
        let rooms = ops.iter().filter(|op| !matches!(op, StoreOp::Append { .. })).cloned().collect();
        self.in_flight.push_back(InFlight { number: self.taken, appended, rooms });
        ops
    }

    /// Whether message `seq` of `room` waits for a commit: pending, or in one taken and not
    /// yet reported.
    pub(crate) fn unreported(&self, room: &RoomUuid, seq: u64) -> bool {
        let stores = |r: &RoomUuid, m: &SharedMessage| r == room && m.seq == seq;
        self.pending.iter().any(|op| matches!(op, StoreOp::Append { room: r, message } if stores(r, message)))
            || self.in_flight.iter().flat_map(|f| &f.appended).any(|(r, m)| stores(r, m))
    }

    /// See [`RoomRegistry::commit_epoch`](crate::RoomRegistry::commit_epoch).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Commits reported so far.
    pub(crate) fn reported(&self) -> u64 {
        self.reported
    }

    /// The number of the commit that holds the last store operation so far: the next one
    /// to be taken while operations are pending, else the last one taken.
    pub(crate) fn last_needed(&self) -> u64 {
        self.taken + u64::from(!self.pending.is_empty())
    }

    /// The oldest commit in flight was made durable (`ok`) or not. Returns it, if there was
    /// one, with whether it counts as durable: not if an earlier failure doomed it.
    pub(crate) fn commit_reported(&mut self, ok: bool) -> Option<(InFlight, bool)> {
        let mut done = self.in_flight.pop_front()?;
        let doomed = done.number <= self.doomed_through;
        let ok = ok && !doomed;
        if !ok {
            if !doomed {
                // The commits taken after this one follow it in the store: they fail too.
                self.epoch += 1;
                self.doomed_through = self.taken;
            }
            self.unstored_rooms.append(&mut done.rooms);
            self.queue.retain_mut(|q| match q.if_lost {
                IfLost::Send => true,
                IfLost::Drop => q.after != Some(done.number),
                // An answer fails with the commit that holds its message, whichever commit it
                // waited behind: a retry answered while its message's commit was in flight
                // may wait for a later one.
                IfLost::Fail => {
                    if acknowledges(&q.output, &done.appended) {
                        if let Output::Reply { result, .. } = &mut q.output {
                            *result = Err(Error::NotStored);
                        }
                    }
                    true
                }
            });
        }
        self.reported = done.number;
        Some((done, ok))
    }
}

/// Whether `output` acknowledges one of `appended`: a send answered with that message, or a
/// recall with that notification.
fn acknowledges(output: &Output, appended: &[(RoomUuid, SharedMessage)]) -> bool {
    let m = match output {
        Output::Reply {
            result: Ok(Response::SendTextMessage(out) | Response::SendCustomMessage(out)),
            ..
        } => &out.message,
        Output::Reply { result: Ok(Response::RecallChatroomMessage(out)), .. } => &out.message,
        _ => return false,
    };
    appended.iter().any(|(_, a)| {
        a.message_uuid == m.message_uuid && a.seq == m.seq && a.from_user_uuid == m.from_user_uuid
    })
}
