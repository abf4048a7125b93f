//! [`RoomContext`]: a thin handle on a joined room, over the session and the room's mirror.

use std::sync::Arc;

use roomkit_protocol::{
    ops::{
        DeleteRoomProperty, EndRoom, FetchRoomMembers, GetRoomInfo, GetRoomInfoOutput, LeaveRoom, LockRoom,
        MembersPage, UnlockRoom, UpdateRoomProperty,
    },
    MemberCounts, Properties, RoomInfo, RoomMember, RoomUuid,
};

use crate::{
    events::{RoomEventCallback, RoomEvents},
    room::Room,
    rpc::{Apply, CallOptions},
    session::Session,
    ChatController, Error,
};

/// Applies a `get_room_info` answer to `room`'s mirror (its info and exact counts) on the
/// receive task, before the room's next event is told.
pub(crate) fn apply_room_info(room: Arc<Room>) -> Apply {
    Box::new(move |response| {
        if let (true, Ok(out)) = (response.code.is_success(), response.output::<GetRoomInfo>()) {
            room.update(|m| m.room_info(out.room, out.counts));
        }
    })
}

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

    /// The members other than the local one that this client has seen (NERoom
    /// `remoteMembers`), in no particular order.
    ///
    /// In a room of up to [`ClientConfig::complete_member_list_max`](crate::ClientConfig)
    /// members (500) when it was joined, that is every member: `join_room` read the whole
    /// list, and per-member events keep it whole while the room stays under the server's
    /// per-member presence threshold (500). In a large
    /// room it holds only the members the client has seen: the join answer's page and host,
    /// those named by events and digests, and the pages read with
    /// [`fetch_room_members`](Self::fetch_room_members) and
    /// [`ChatController::fetch_chatroom_members`]; a member who left unnamed by a digest may
    /// still be listed. Use [`online_count`](Self::online_count) for how many there are,
    /// and page the member list for who they are.
    pub fn remote_members(&self) -> Vec<RoomMember> {
        self.room.read(|m| m.remote_members().cloned().collect())
    }

    /// How many members the room has, the local one included: exact as of the last answer
    /// or digest, kept current by per-member events in between. Changes are told as
    /// [`RoomEvent::MemberCountChanged`](crate::RoomEvent::MemberCountChanged).
    pub fn online_count(&self) -> u64 {
        self.room.read(|m| m.counts().room)
    }

    /// How many of the room's members are in its chatroom (see
    /// [`online_count`](Self::online_count)).
    pub fn chatroom_online_count(&self) -> u64 {
        self.room.read(|m| m.counts().chatroom)
    }

    /// Both online counts.
    pub fn member_counts(&self) -> MemberCounts {
        self.room.read(|m| m.counts())
    }

    /// One page of the room's members, in join order: `cursor` is `None` for the first page,
    /// then the previous page's `next_cursor`; `limit` is 1–100. Paging from first to last
    /// returns every member present throughout exactly once. The page's members become
    /// known to [`get_member`](Self::get_member) and [`remote_members`](Self::remote_members),
    /// and its exact counts replace the local ones.
    pub async fn fetch_room_members(&self, cursor: Option<&str>, limit: u32) -> Result<MembersPage, Error> {
        let params = FetchRoomMembers {
            room_uuid: self.room_uuid(),
            cursor: cursor.map(str::to_owned),
            limit: Some(limit),
        };
        let room = Arc::clone(&self.room);
        let apply: Apply = Box::new(move |response| {
            if let (true, Ok(page)) = (response.code.is_success(), response.output::<FetchRoomMembers>()) {
                room.update(|m| m.fetched(&page));
            }
        });
        self.session
            .call_with(&params, CallOptions { apply: Some(apply), resend: false, ..Default::default() })
            .await
    }

    /// Reads the room and its exact online counts from the server (cheap at any size) and
    /// refreshes the local copies.
    pub async fn get_room_info(&self) -> Result<GetRoomInfoOutput, Error> {
        let options = CallOptions {
            apply: Some(apply_room_info(Arc::clone(&self.room))),
            resend: false,
            ..Default::default()
        };
        self.session.call_with(&GetRoomInfo { room_uuid: self.room_uuid() }, options).await
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
        let options = CallOptions { apply: Some(apply), resend: false, ..Default::default() };
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
