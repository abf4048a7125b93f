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

    /// Changes the mirror without telling anything.
    pub(crate) fn change(&self, f: impl FnOnce(&mut RoomMirror)) {
        f(&mut self.state().mirror);
    }

    /// Changes the mirror and tells listeners what it returns, in order.
    pub(crate) fn update<I: IntoIterator<Item = RoomEvent>>(&self, f: impl FnOnce(&mut RoomMirror) -> I) {
        let mut state = self.state();
        let before = state.outbox.len();
        let produced = f(&mut state.mirror);
        state.outbox.extend(produced);
        if state.outbox.len() == before || state.telling {
            // Nothing new, or the task telling now tells these after the ones before them.
            return;
        }
        state.telling = true;
        drop(state);
        let telling = Telling(self);
        loop {
            let event = {
                let mut state = self.state();
                let Some(event) = state.outbox.pop_front() else {
                    // Under the same lock as the last look at the outbox: an event pushed
                    // after it finds nobody telling and is told by its own task.
                    state.telling = false;
                    std::mem::forget(telling);
                    return;
                };
                event
            };
            self.notify(&event);
        }
    }

    /// Tells listeners something the mirror does not decide (a rejoin's outcome).
    pub(crate) fn tell(&self, event: RoomEvent) {
        self.update(|_| [event]);
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

/// Ends a task's telling if a callback panics, so that later events are still told.
struct Telling<'a>(&'a Room);

impl Drop for Telling<'_> {
    fn drop(&mut self) {
        self.0.state().telling = false;
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
            match map.get(&out.room.room_uuid).cloned() {
                Some(room) => {
                    drop(map); // telling may run callbacks, which may look rooms up
                    room.update(|m| m.refresh(out));
                }
                None => {
                    let room = Arc::new(Room::new(join, RoomMirror::new(local, out)));
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use roomkit_protocol::{ops::JoinRoom, EndReason, Role};

    use super::Room;
    use crate::{mirror::tests::alice, RoomEvent, RoomEventCallback};

    fn room() -> Arc<Room> {
        let mirror = alice();
        let join = JoinRoom {
            room_uuid: mirror.info().room_uuid.clone(),
            user_name: "Alice".into(),
            role: Role::Host,
            avatar: None,
            password: None,
            initial_my_properties: Default::default(),
            resume: false,
        };
        Arc::new(Room::new(join, mirror))
    }

    /// Records what it is told; on the first lock change it reads the room and makes the
    /// room tell something else, as another task would while this one is telling.
    struct Recorder {
        room: Arc<Room>,
        told: Mutex<Vec<String>>,
    }

    impl RoomEventCallback for Recorder {
        fn room_lock_state_changed(&self, locked: bool) {
            assert_eq!(self.room.read(|m| m.info().locked), locked, "the mirror is readable from a callback");
            self.told.lock().unwrap().push(format!("lock {locked}"));
            if locked {
                self.room.tell(RoomEvent::RoomEnd(EndReason::KickOut));
                assert_eq!(
                    self.told.lock().unwrap().len(),
                    1,
                    "told after this callback returns, not inside it"
                );
            }
        }

        fn room_end(&self, reason: EndReason) {
            self.told.lock().unwrap().push(format!("end {reason:?}"));
        }
    }

    #[test]
    fn events_produced_while_telling_are_told_after_in_order() {
        let room = room();
        let recorder = Arc::new(Recorder { room: Arc::clone(&room), told: Mutex::default() });
        room.add_callback(recorder.clone());
        let mut stream = room.subscribe();
        room.update(|m| {
            m.apply(roomkit_protocol::Event::RoomLockStateChanged {
                room_uuid: room.uuid.clone(),
                locked: true,
            })
        });
        assert_eq!(*recorder.told.lock().unwrap(), ["lock true", "end KickOut"]);
        assert_eq!(stream.try_recv(), Some(RoomEvent::RoomLockStateChanged(true)));
        assert_eq!(stream.try_recv(), Some(RoomEvent::RoomEnd(EndReason::KickOut)));
        assert_eq!(stream.try_recv(), None, "listeners are dropped after the end");
        room.tell(RoomEvent::RoomLockStateChanged(false));
        assert_eq!(recorder.told.lock().unwrap().len(), 2, "nobody is told after the end");
    }
}
