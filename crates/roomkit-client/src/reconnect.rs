//! Reconnecting after a dropped connection.
//!
//! When a connection drops (not closed by the app, not refused for good by the server), the
//! session reconnects with exponential backoff and jitter (each attempt a round over its
//! servers, the one that dropped the connection last), logs in again, rejoins every room
//! and chatroom, catches up on missed chatroom messages by sequence number, and resends
//! unacknowledged sends (the server recognises their message ids, so each is stored and
//! delivered once). At most one reconnect loop runs per session; a drop while it resumes
//! makes it try again.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use roomkit_protocol::{
    ops::{FetchChatroomHistory, GetRoomInfo, JoinChatroom, JoinRoom},
    Code, EndReason, HistoryOrder,
};

use crate::{
    context::apply_room_info, room::Room, rpc::Apply, session::Session, ConnectionState, Error, RoomEvent,
};

/// Messages asked for per history page while catching up.
const PAGE: u32 = 100;

/// Whether a reconnect loop runs.
#[derive(Default)]
pub(crate) struct ReconnectCtl {
    running: bool,
    /// The connection the loop was resuming on dropped too.
    lost_again: bool,
}

impl Session {
    /// The connection of `epoch` ended with `error`: reconnect, or end the session.
    pub(crate) fn connection_lost(self: &Arc<Self>, epoch: u64, error: Error) {
        if !self.rpc.is_current(epoch) || self.closed_error().is_some() {
            return;
        }
        let logged_in = self.credentials().is_some();
        let final_code = matches!(error.code(), Code::UNAUTHENTICATED | Code::AUTH_EXPIRED | Code::FORBIDDEN);
        if !self.config.reconnect.enabled || !logged_in || final_code {
            self.end(error);
            return;
        }
        // Answers to anything but sends are lost with the connection.
        self.rpc.connection_lost();
        {
            let mut ctl = self.reconnecting.lock().expect("not poisoned");
            if ctl.running {
                ctl.lost_again = true; // the running loop tries again
                return;
            }
            ctl.running = true;
        }
        self.set_state(ConnectionState::Reconnecting { attempt: 1 });
        tokio::spawn(reconnect(Arc::downgrade(self), error));
    }

    fn reconnect_done(&self) {
        self.reconnecting.lock().expect("not poisoned").running = false;
    }
}

/// Backoff before attempt `n` (1-based): exponential from `initial`, capped at `max`, with up
/// to 50 % random jitter so that many clients do not reconnect in lockstep.
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(max);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (exp.as_millis() as u64 / 2 + 1);
    exp.saturating_sub(Duration::from_millis(jitter))
}

async fn reconnect(session: Weak<Session>, mut last_error: Error) {
    let policy = match session.upgrade() {
        Some(s) => s.config.reconnect.clone(),
        None => return,
    };
    for attempt in 1..=policy.max_attempts.max(1) {
        tokio::time::sleep(backoff(policy.initial_backoff, policy.max_backoff, attempt)).await;
        let Some(session) = session.upgrade() else { return };
        if session.closed_error().is_some() {
            return;
        }
        session.set_state(ConnectionState::Reconnecting { attempt });
        session.reconnecting.lock().expect("not poisoned").lost_again = false;
        // One round: every server once, the one that dropped the connection last.
        match session.servers.connect_after_drop().await {
            Ok((index, connection)) => session.install(index, connection).await,
            Err(e) => {
                last_error = Error::transport(e);
                continue;
            }
        }
        match resume(&session).await {
            Ok(()) => {
                {
                    let mut ctl = session.reconnecting.lock().expect("not poisoned");
                    if ctl.lost_again {
                        continue; // dropped while resuming: once more
                    }
                    ctl.running = false;
                    session.set_state(ConnectionState::Connected);
                }
                session.rpc.resend_pending().await;
                return;
            }
            Err(e) if matches!(e.code(), Code::UNAUTHENTICATED | Code::AUTH_EXPIRED) => {
                session.reconnect_done();
                session.end(e);
                return;
            }
            Err(e) => last_error = e,
        }
    }
    if let Some(session) = session.upgrade() {
        session.reconnect_done();
        session.end(Error::new(
            Code::CONNECTION_CLOSED,
            format!("gave up reconnecting after {} attempts: {}", policy.max_attempts, last_error.msg()),
        ));
    }
}

/// Logs in again, rejoins every room and chatroom, and catches up on missed messages.
async fn resume(session: &Session) -> Result<(), Error> {
    let login = session.credentials().expect("only logged-in sessions reconnect");
    let output = session.call_now(&login, None).await?;
    session.set_user(output);
    for room in session.rooms.all() {
        rejoin(session, &room).await?;
    }
    Ok(())
}

/// Rejoins one room (and its chatroom, if the local member was in it), holding live
/// messages back until the missed ones are told.
async fn rejoin(session: &Session, room: &Arc<Room>) -> Result<(), Error> {
    let in_chatroom = room.read(|m| m.local_in_chatroom());
    room.change(|m| m.begin_resume());
    let target = Arc::clone(room);
    let apply: Apply = Box::new(move |response| {
        if let Ok(out) = response.output::<JoinRoom>() {
            target.update(|m| m.refresh(out));
        }
    });
    let join = JoinRoom { resume: true, ..room.join_params().clone() };
    match session.call_now(&join, Some(apply)).await {
        Ok(_) => {}
        Err(e) if matches!(e.code(), Code::ROOM_NOT_EXIST | Code::ROOM_ENDED) => {
            session.rooms.remove(&room.uuid);
            room.tell(RoomEvent::RoomEnd(EndReason::Unknown));
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    if !in_chatroom {
        room.update(|m| m.end_resume());
        return Ok(());
    }
    let target = Arc::clone(room);
    let digests = room.read(|m| m.digests());
    let apply: Apply = Box::new(move |response| {
        if response.code.is_success() {
            target.update(|m| m.local_entered_chatroom(digests));
        }
    });
    session
        .call_now(&JoinChatroom { room_uuid: room.uuid.clone(), history_count: None }, Some(apply))
        .await?;
    // As in `join_chatroom`: a digest applied meanwhile may predate the entry, which would go
    // uncounted until the next one. The room answers this in order with its digests.
    if room.read(|m| m.digests()) != digests {
        let info = GetRoomInfo { room_uuid: room.uuid.clone() };
        session.call_now(&info, Some(apply_room_info(Arc::clone(room)))).await?;
    }
    let recovered = catch_up(session, room).await?;
    room.update(|m| m.end_resume());
    room.tell(RoomEvent::Resumed { recovered });
    Ok(())
}

/// Fetches and tells what the room's chatroom said after the last message seen, page after
/// page. Returns whether all of it could be told (false when some is beyond retention).
async fn catch_up(session: &Session, room: &Room) -> Result<bool, Error> {
    let seen = room.read(|m| m.last_seq());
    let mut recovered = true;
    let mut after = seen;
    let mut cursor = None;
    loop {
        let fetch = FetchChatroomHistory {
            room_uuid: room.uuid.clone(),
            start_time: None,
            limit: Some(PAGE),
            order: HistoryOrder::Asc,
            after_seq: Some(after),
            cursor: cursor.take(),
        };
        let page = session.call_now(&fetch, None).await?;
        if after == seen && page.first_seq > seen + 1 && page.last_seq > seen {
            recovered = false; // some of what was missed is beyond retention
        }
        let count = page.messages.len();
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        room.update(|m| m.replayed(page.messages));
        // A page the server cut short (most of what it read was not for this member)
        // continues at its cursor, full or not.
        if page.next_cursor.is_some() {
            cursor = page.next_cursor;
            continue;
        }
        if count < PAGE as usize || after >= page.last_seq {
            return Ok(recovered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=10 {
            let b = backoff(initial, max, attempt);
            let full = initial.saturating_mul(1 << (attempt - 1)).min(max);
            assert!(b <= full && b >= full / 2, "attempt {attempt}: {b:?} vs {full:?}");
        }
    }
}
