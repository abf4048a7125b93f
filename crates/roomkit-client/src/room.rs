//! A joined room as the SDK holds it: the [`RoomMirror`] behind one lock, the listeners
//! behind another, and the table of joined rooms.
//!
//! Everything a room tells its listeners goes through [`Room::update`]: the mirror decides
//! what to tell, and events are told in the order the mirror produced them, by whichever
//! task is telling at the time, never under the mirror's lock (a callback may read the room).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use roomkit_protocol::{ops::JoinRoom, EndReason, RoomUuid, UserUuid};
use tokio::sync::mpsc;

use crate::{
    events::{self, RoomEvent, RoomEventCallback, RoomEvents},
    mirror::RoomMirror,
    rpc::Apply,
};

/// One joined room: its mirror and its listeners (two locks, never held together).
pub(crate) struct Room {
    pub(crate) uuid: RoomUuid,
    /// How the room was joined, to join it again after a reconnect.
    join: JoinRoom,
    state: Mutex<State>,
    listeners: Mutex<Listeners>,
}

struct State {
    mirror: RoomMirror,
    /// Events produced by the mirror and not yet told, in order.
    outbox: VecDeque<RoomEvent>,
    /// A task is telling the outbox; others leave their events to it.
    telling: bool,
}

#[derive(Default)]
struct Listeners {
    callbacks: Vec<Arc<dyn RoomEventCallback>>,
    streams: Vec<mpsc::UnboundedSender<RoomEvent>>,
}

impl Room {
    fn new(join: JoinRoom, mirror: RoomMirror) -> Self {
        Self {
            uuid: mirror.info().room_uuid.clone(),
            join,
            state: Mutex::new(State { mirror, outbox: VecDeque::new(), telling: false }),
            listeners: Mutex::new(Listeners::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Reads the mirror.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&RoomMirror) -> R) -> R {
        f(&self.state().mirror)
    }

    /// Changes the mirror and tells listeners what it returns.
    pub(crate) fn update(&self, f: impl FnOnce(&mut RoomMirror) -> Option<RoomEvent>) {
        let mut state = self.state();
        let Some(event) = f(&mut state.mirror) else { return };
        state.outbox.push_back(event);
        if state.telling {
            return; // the task telling now tells this one after the ones before it
        }
        state.telling = true;
        while let Some(event) = state.outbox.pop_front() {
            drop(state);
            self.notify(&event);
            state = self.state();
        }
        state.telling = false;
    }

    /// Tells listeners something the mirror does not decide (a rejoin's outcome).
    pub(crate) fn tell(&self, event: RoomEvent) {
        self.update(|_| Some(event));
    }

    /// How the room was joined.
    pub(crate) fn join_params(&self) -> &JoinRoom {
        &self.join
    }

    pub(crate) fn add_callback(&self, callback: Arc<dyn RoomEventCallback>) {
        self.listeners().callbacks.push(callback);
    }

    pub(crate) fn remove_callback(&self, callback: &Arc<dyn RoomEventCallback>) {
        self.listeners().callbacks.retain(|c| !Arc::ptr_eq(c, callback));
    }

    pub(crate) fn subscribe(&self) -> RoomEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners().streams.push(tx);
        RoomEvents { rx }
    }

    fn listeners(&self) -> MutexGuard<'_, Listeners> {
        self.listeners.lock().expect("not poisoned")
    }

    /// Tells callbacks and streams; after `RoomEnd`, drops them.
    fn notify(&self, event: &RoomEvent) {
        let ended = matches!(event, RoomEvent::RoomEnd(_));
        let callbacks = {
            let mut listeners = self.listeners();
            listeners.streams.retain(|s| s.send(event.clone()).is_ok());
            if ended {
                listeners.streams.clear();
            }
            listeners.callbacks.clone()
        };
        for callback in &callbacks {
            events::call(callback.as_ref(), event);
        }
        if ended {
            self.listeners().callbacks.clear();
        }
    }
}

/// The rooms joined through one session.
#[derive(Default)]
pub(crate) struct Rooms {
    rooms: Mutex<HashMap<RoomUuid, Arc<Room>>>,
}

impl Rooms {
    fn map(&self) -> MutexGuard<'_, HashMap<RoomUuid, Arc<Room>>> {
        self.rooms.lock().expect("not poisoned")
    }

    pub(crate) fn get(&self, room: &RoomUuid) -> Option<Arc<Room>> {
        self.map().get(room).cloned()
    }

    pub(crate) fn remove(&self, room: &RoomUuid) -> Option<Arc<Room>> {
        self.map().remove(room)
    }

    pub(crate) fn all(&self) -> Vec<Arc<Room>> {
        self.map().values().cloned().collect()
    }

    pub(crate) fn uuids(&self) -> Vec<RoomUuid> {
        self.map().keys().cloned().collect()
    }

    /// What a successful `join` answer does, on the receive task so that no event behind
    /// the answer is missed: creates the room's mirror, or refreshes it when the room was
    /// joined again on this connection (same room, same listeners).
    pub(crate) fn on_joined(self: &Arc<Self>, local: UserUuid, join: JoinRoom) -> Apply {
        let rooms = Arc::clone(self);
        Box::new(move |response| {
            let Ok(out) = response.output::<JoinRoom>() else { return };
            let mut map = rooms.map();
            match map.get(&out.room.room_uuid) {
                Some(room) => room.update(|m| {
                    m.refresh(out.room, out.members);
                    None
                }),
                None => {
                    let room = Arc::new(Room::new(join, RoomMirror::new(local, out.room, out.members)));
                    map.insert(room.uuid.clone(), room);
                }
            }
        })
    }

    /// What a successful `leave_room` answer does: the context is gone, and its listeners
    /// are told [`EndReason::LeaveBySelf`].
    pub(crate) fn on_left(self: &Arc<Self>, room: RoomUuid) -> Apply {
        let rooms = Arc::clone(self);
        Box::new(move |response| {
            if response.code.is_success() {
                if let Some(room) = rooms.remove(&room) {
                    room.tell(RoomEvent::RoomEnd(EndReason::LeaveBySelf));
                }
            }
        })
    }
}
