//! [`RoomContext`]: a thin handle on a joined room, over the session and the room's mirror.

use std::sync::Arc;

use roomkit_protocol::{
    ops::{DeleteRoomProperty, EndRoom, LeaveRoom, LockRoom, UnlockRoom, UpdateRoomProperty},
    Properties, RoomInfo, RoomMember, RoomUuid,
};

use crate::{
    events::{RoomEventCallback, RoomEvents},
    room::Room,
    rpc::CallOptions,
    session::Session,
    ChatController, Error,
};

/// A joined room (NERoom `NERoomContext`). Cheap to clone; every clone is the same room.
///
/// Getters read the local mirror, which the SDK keeps current from the server's events:
/// when a call returns, the mirror already reflects what the call did.
#[derive(Clone)]
pub struct RoomContext {
    pub(crate) session: Arc<Session>,
    pub(crate) room: Arc<Room>,
}

impl std::fmt::Debug for RoomContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomContext").field("room_uuid", &self.room.uuid).finish_non_exhaustive()
    }
}

impl RoomContext {
    /// The room's uuid.
    pub fn room_uuid(&self) -> RoomUuid {
        self.room.uuid.clone()
    }

    /// The room's name.
    pub fn room_name(&self) -> String {
        self.room.read(|m| m.info().room_name.clone())
    }

    /// The room's state as last seen: properties, lock, limits, creator.
    pub fn room_info(&self) -> RoomInfo {
        self.room.read(|m| m.info().clone())
    }

    /// The local member.
    pub fn local_member(&self) -> RoomMember {
        self.room.read(|m| m.local_member().cloned()).expect("the local member is in its own room")
    }

    /// Every member but the local one (NERoom `remoteMembers`). Order is unspecified.
    pub fn remote_members(&self) -> Vec<RoomMember> {
        self.room.read(|m| m.remote_members().cloned().collect())
    }

    /// A member by uuid, local or remote.
    pub fn get_member(&self, user_uuid: &str) -> Option<RoomMember> {
        self.room.read(|m| m.member(user_uuid).cloned())
    }

    /// The room's properties.
    pub fn room_properties(&self) -> Properties {
        self.room.read(|m| m.info().properties.clone())
    }

    /// Whether the room is locked against new joins.
    pub fn is_room_locked(&self) -> bool {
        self.room.read(|m| m.info().locked)
    }

    /// The room's member limit, if any.
    pub fn max_members(&self) -> Option<u32> {
        self.room.read(|m| m.info().max_members)
    }

    /// Leaves the room (and its chatroom). The context is gone afterwards, and listeners
    /// get [`RoomEvent::RoomEnd`](crate::RoomEvent::RoomEnd) with
    /// [`EndReason::LeaveBySelf`](crate::EndReason::LeaveBySelf).
    pub async fn leave_room(&self) -> Result<(), Error> {
        let apply = self.session.rooms.on_left(self.room.uuid.clone());
        let options = CallOptions { apply: Some(apply), resend: false };
        self.session.call_with(&LeaveRoom { room_uuid: self.room_uuid() }, options).await?;
        Ok(())
    }

    /// Ends the room for everyone (host only). Every member, the caller included, gets
    /// `room_end` with [`EndReason::CloseByMember`](crate::EndReason::CloseByMember).
    /// `force` is NERoom's `isForce`, accepted for compatibility.
    pub async fn end_room(&self, force: bool) -> Result<(), Error> {
        self.session.call(&EndRoom { room_uuid: self.room_uuid(), force }).await?;
        Ok(())
    }

    /// Locks the room against new joins (host only).
    pub async fn lock_room(&self) -> Result<(), Error> {
        self.session.call(&LockRoom { room_uuid: self.room_uuid() }).await?;
        Ok(())
    }

    /// Unlocks the room (host only).
    pub async fn unlock_room(&self) -> Result<(), Error> {
        self.session.call(&UnlockRoom { room_uuid: self.room_uuid() }).await?;
        Ok(())
    }

    /// Sets a room property (host only); every member gets `room_properties_changed`.
    pub async fn update_room_property(&self, key: &str, value: &str) -> Result<(), Error> {
        let params = UpdateRoomProperty { room_uuid: self.room_uuid(), key: key.into(), value: value.into() };
        self.session.call(&params).await?;
        Ok(())
    }

    /// Deletes a room property (host only); every member gets `room_properties_deleted`.
    pub async fn delete_room_property(&self, key: &str) -> Result<(), Error> {
        self.session.call(&DeleteRoomProperty { room_uuid: self.room_uuid(), key: key.into() }).await?;
        Ok(())
    }

    /// Registers a callback for this room's events.
    pub fn add_event_callback(&self, callback: Arc<dyn RoomEventCallback>) {
        self.room.add_callback(callback);
    }

    /// Unregisters a callback added with [`add_event_callback`](Self::add_event_callback).
    pub fn remove_event_callback(&self, callback: &Arc<dyn RoomEventCallback>) {
        self.room.remove_callback(callback);
    }

    /// This room's events from now on, as a stream.
    pub fn events(&self) -> RoomEvents {
        self.room.subscribe()
    }

    /// The room's chatroom.
    pub fn chat_controller(&self) -> ChatController {
        ChatController { room: self.clone() }
    }
}
