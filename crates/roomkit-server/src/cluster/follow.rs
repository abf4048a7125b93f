//! The follower's side: a node with connections in a room follows the room's stream and
//! delivers each record to its own connections — answers to the one asking, events to its
//! share of the member lists, kept from the stream's member list changes.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, Weak},
};

use bytes::Bytes;

use futures::{FutureExt, StreamExt};
use roomkit_core::{
    transport::{CloseReason, Frame},
    ConnId, ConnMap, RosterKind,
};
use roomkit_protocol::{Code, RoomUuid};
use tokio::{
    sync::{mpsc, OnceCell},
    task::AbortHandle,
};

use super::{
    slot_of_conn,
    wire::{Record, ShedClass},
    Node,
};
use crate::outbox::{pool::Wakes, Outbox, Shed};

/// A room whose stream this node follows.
pub(crate) struct Followed {
    /// The task reading the stream, once subscribed.
    task: Arc<OnceCell<AbortHandle>>,
    /// The room's records when this node owns it: NATS does not echo a node's own records to
    /// it (`no_echo`), so the owner hands them to its own follower directly — in order, and
    /// whether or not NATS is reachable.
    pub(crate) local: mpsc::UnboundedSender<Bytes>,
    /// The receiving end, until the task takes it.
    local_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>,
    /// This node's connections that sent requests for the room.
    users: HashSet<ConnId>,
    /// The slot of the room's owner, as last heard.
    owner: Option<u16>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Node {
    /// Makes sure this node follows room `room`'s stream before `conn`'s request goes out, so
    /// that the answer is not missed.
    pub(crate) async fn follow(self: &Arc<Self>, room: &RoomUuid, conn: ConnId) -> Result<(), String> {
        let cell = {
            let mut state = self.state.lock().expect("not poisoned");
            state.conn_rooms.entry(conn).or_default().insert(room);
            let followed = state.followed.entry(room.clone()).or_insert_with(|| {
                let (local, local_rx) = mpsc::unbounded_channel();
                Followed {
                    task: Arc::new(OnceCell::new()),
                    local,
                    local_rx: Arc::new(Mutex::new(Some(local_rx))),
                    users: HashSet::new(),
                    owner: None,
                }
            });
            followed.users.insert(conn);
            (Arc::clone(&followed.task), Arc::clone(&followed.local_rx))
        };
        let (cell, local_rx) = cell;
        cell.get_or_try_init(|| async {
            let subscription =
                self.client.subscribe(self.subject(room, "ev")).await.map_err(|e| e.to_string())?;
            let local = local_rx.lock().expect("not poisoned").take().ok_or("followed twice")?;
            let task = run(Arc::downgrade(self), room.clone(), subscription, local);
            Ok::<_, String>(tokio::spawn(task).abort_handle())
        })
        .await?;
        // The room may have been reset while this node subscribed: its entry (whose drop stops
        // the task) is gone, and this task must not outlive it.
        let current = self
            .state
            .lock()
            .expect("not poisoned")
            .followed
            .get(room)
            .is_some_and(|f| Arc::ptr_eq(&f.task, &cell));
        if !current {
            if let Some(task) = cell.get() {
                task.abort();
            }
            return Err("the room was reset meanwhile".into());
        }
        Ok(())
    }

    /// `conn` no longer uses room `room`; the last one to go stops following it.
    pub(crate) fn unfollow_if_unused(&self, room: &RoomUuid, conn: ConnId) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(followed) = state.followed.get_mut(room) {
            followed.users.remove(&conn);
            if followed.users.is_empty() {
                state.followed.remove(room);
            }
        }
    }
}

/// The slot of the node room `room` ran on when this node's connections last heard of it.
pub(crate) fn owner_of(node: &Node, room: &RoomUuid) -> Option<u16> {
    node.state.lock().expect("not poisoned").followed.get(room).and_then(|f| f.owner)
}

/// Records that room `room` runs on the node with slot `owner`.
pub(crate) fn owner_is(node: &Node, room: &RoomUuid, owner: u16) {
    if let Some(followed) = node.state.lock().expect("not poisoned").followed.get_mut(room) {
        followed.owner = Some(owner);
    }
}

/// Room `room` no longer runs where it ran, or this node may have missed some of its stream:
/// this node's connections that used it are closed with `ROOM_UNAVAILABLE` (`why` says which),
/// and resume — on the room's next owner, rebuilt from the store, catching up from history.
pub(crate) fn reset(node: &Node, room: &RoomUuid, why: &str) {
    let Some(followed) = node.state.lock().expect("not poisoned").followed.remove(room) else { return };
    let reason = CloseReason::new(Code::ROOM_UNAVAILABLE, format!("room {room}: {why}: reconnect to resume"));
    for conn in &followed.users {
        if let Some(outbox) = node.outbox_of(*conn) {
            outbox.close(reason.clone(), true);
        }
    }
    tracing::warn!(room = %room, connections = followed.users.len(), why, "a followed room is reset: its clients here resume");
}

/// Resets every followed room whose owner is among the `dead` nodes.
pub(crate) fn drop_dead(node: &Node, dead: &HashSet<u16>) {
    let rooms: Vec<RoomUuid> = node
        .state
        .lock()
        .expect("not poisoned")
        .followed
        .iter()
        .filter(|(_, f)| f.owner.is_some_and(|o| dead.contains(&o)))
        .map(|(room, _)| room.clone())
        .collect();
    for room in rooms {
        reset(node, &room, "its node is gone");
    }
}

/// This node's share of a room's member lists.
#[derive(Default)]
struct Lists {
    room: ConnMap<Outbox>,
    chatroom: ConnMap<Outbox>,
}

impl Lists {
    fn get_mut(&mut self, roster: RosterKind) -> &mut ConnMap<Outbox> {
        match roster {
            RosterKind::Room => &mut self.room,
            RosterKind::Chatroom => &mut self.chatroom,
        }
    }
}

/// Most records a follower delivers before it wakes the writers it queued to.
const FOLLOW_BATCH: usize = 64;

/// Reads room `room`'s stream and delivers it to this node's connections. The records that
/// have arrived by the time one is delivered go out with it, up to [`FOLLOW_BATCH`], and
/// each writer they queued to is woken once for them all: a burst of a room's events costs a
/// member here one write, as it does on the room's own node (a shard's wake-up).
async fn run(
    node: Weak<Node>,
    room: RoomUuid,
    mut stream: async_nats::Subscriber,
    mut local: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut lists = Lists::default();
    let mut wake = Wakes::default();
    loop {
        let payload = tokio::select! {
            message = stream.next() => match message {
                Some(message) => message.payload,
                None => return,
            },
            Some(payload) = local.recv() => payload,
        };
        let Some(node) = node.upgrade() else { return };
        let pools = node.pools();
        let mut take = |payload: &Bytes| deliver(&node, &room, &mut lists, payload, &mut wake, pools.len());
        take(&payload);
        let mut ended = false;
        for _ in 1..FOLLOW_BATCH {
            let payload = match local.try_recv() {
                Ok(payload) => payload,
                Err(_) => match stream.next().now_or_never() {
                    Some(Some(message)) => message.payload,
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                },
            };
            take(&payload);
        }
        wake.wake(&pools);
        if ended {
            return;
        }
    }
}

/// Delivers one record of room `room`'s stream, queuing without waking; the wake-ups due
/// through the node's `pools` pools are added to `wake`.
fn deliver(node: &Node, room: &RoomUuid, lists: &mut Lists, payload: &Bytes, wake: &mut Wakes, pools: usize) {
    let record = match Record::decode(payload) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(room = %room, error = %e, "unreadable record in a room's stream");
            return;
        }
    };
    let mine = |conn: ConnId| slot_of_conn(conn) == node.slot;
    match record {
        Record::Reply { conn, text } => {
            if mine(conn) {
                if let Some(outbox) = node.outbox_of(conn) {
                    outbox.push(text.into());
                }
            }
        }
        Record::ToRoster { roster, except, shed, message, text } => {
            let frame = Frame::from(text);
            let shed = shed_of(shed, room);
            let mut queued = 0u64;
            for (conn, outbox) in lists.get_mut(roster).iter() {
                if Some(*conn) != except {
                    queued += u64::from(queue(outbox, &frame, &shed, wake, pools));
                }
            }
            count_out(queued, message);
        }
        Record::ToConns { conns, shed, message, text } => {
            let frame = Frame::from(text);
            let shed = shed_of(shed, room);
            let mut queued = 0u64;
            for conn in conns.into_iter().filter(|c| mine(*c)) {
                if let Some(outbox) = node.outbox_of(conn) {
                    queued += u64::from(queue(&outbox, &frame, &shed, wake, pools));
                }
            }
            count_out(queued, message);
        }
        Record::Roster { roster, conn, present } => {
            if mine(conn) {
                if !present {
                    lists.get_mut(roster).remove(&conn);
                } else if let Some(outbox) = node.outbox_of(conn) {
                    lists.get_mut(roster).insert(conn, outbox);
                }
            }
        }
        Record::Ended => {
            *lists = Lists::default();
            // A room created again under its id may run anywhere.
            if let Some(followed) = node.state.lock().expect("not poisoned").followed.get_mut(room) {
                followed.owner = None;
            }
        }
        Record::Moved => reset(node, room, "it moved to another node"),
    }
}

/// Counts one record's event, queued to `queued` connections of this node (a chat message's
/// as messages too).
fn count_out(queued: u64, message: bool) {
    crate::metrics::hot::queued_out(queued, if message { queued } else { 0 });
}

fn shed_of(class: ShedClass, room: &RoomUuid) -> Shed {
    match class {
        ShedClass::Keep => Shed::Keep,
        ShedClass::Droppable => Shed::Droppable,
        ShedClass::Conflate => Shed::Conflate(room.clone()),
    }
}

/// Queues without waking (the writers are woken once per batch of records); whether the
/// frame was queued.
fn queue(outbox: &Outbox, frame: &Frame, shed: &Shed, wake: &mut Wakes, pools: usize) -> bool {
    let mut queued = false;
    let item = (frame, shed);
    if let Some(due) = outbox.enqueue_all(std::iter::once(&item), |&(f, s)| (f, s), |_| queued = true, pools)
    {
        wake.add(outbox, due);
    }
    queued
}
