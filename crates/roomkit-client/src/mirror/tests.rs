//! Unit tests of [`RoomMirror`]: what is told, in which order, and what never twice.

use std::sync::Arc;

use roomkit_protocol::{
    ops::JoinRoomOutput, ChatMessage, ChatroomType, EndReason, Event, MemberCounts, MembersChanged,
    MessageBody, MessageUuid, Priority, RoomInfo, RoomMember, RoomUuid, SharedMessage, UserUuid,
};

use super::RoomMirror;
use crate::RoomEvent;

fn user(s: &str) -> UserUuid {
    UserUuid::new(s).expect("valid id")
}

pub(crate) fn room() -> RoomUuid {
    RoomUuid::new("r1").expect("valid id")
}

pub(crate) fn member(uuid: &str, in_chatroom: bool) -> RoomMember {
    RoomMember {
        uuid: user(uuid),
        name: uuid.to_uppercase(),
        avatar: None,
        role: Default::default(),
        properties: Default::default(),
        is_in_chatroom: in_chatroom,
    }
}

fn info() -> RoomInfo {
    RoomInfo {
        room_uuid: room(),
        room_name: "Room 1".into(),
        creator: user("alice"),
        properties: Default::default(),
        locked: false,
        max_members: None,
        chatroom_enabled: true,
        has_password: false,
        created_at: 0,
    }
}

/// A join answer showing `members` (the first of them the joiner) of a room of `counts`.
// `into()`: the protocol boxes the joiner and the host in newer versions.
#[allow(clippy::useless_conversion)]
pub(crate) fn answer(members: Vec<RoomMember>, counts: (u64, u64)) -> JoinRoomOutput {
    JoinRoomOutput {
        room: info(),
        member: members[0].clone().into(),
        host: None,
        counts: MemberCounts { room: counts.0, chatroom: counts.1 },
        members,
        next_cursor: None,
    }
}

/// Alice's mirror of a room she and Bob are in, both in the chatroom.
pub(crate) fn alice() -> RoomMirror {
    RoomMirror::new(user("alice"), answer(vec![member("alice", true), member("bob", true)], (2, 2)))
}

/// A `members_changed` digest of room `r1` with these counts and nobody named.
pub(crate) fn digest(counts: (u64, u64)) -> MembersChanged {
    MembersChanged {
        room_uuid: room(),
        counts: MemberCounts { room: counts.0, chatroom: counts.1 },
        joined_count: 0,
        left_count: 0,
        chatroom_joined_count: 0,
        chatroom_left_count: 0,
        joined: Vec::new(),
        left: Vec::new(),
        chatroom_joined: Vec::new(),
        chatroom_left: Vec::new(),
    }
}

pub(crate) fn counts(room: u64, chatroom: u64) -> MemberCounts {
    MemberCounts { room, chatroom }
}

fn message(seq: u64, from: &str) -> SharedMessage {
    Arc::new(ChatMessage {
        message_uuid: MessageUuid::new(format!("m{seq}")).expect("valid id"),
        seq,
        chatroom_type: ChatroomType::Common,
        from_user_uuid: user(from),
        from_nick: from.into(),
        from_avatar: None,
        from_backend: false,
        to_user_uuid_list: None,
        time: seq,
        recalled: false,
        priority: Priority::Normal,
        persist: true,
        body: MessageBody::Text { text: format!("message {seq}") },
    })
}

/// A message as received.
pub(crate) fn live_message(seq: u64, from: &str) -> ChatMessage {
    Arc::unwrap_or_clone(message(seq, from))
}

fn live(seqs: &[u64]) -> Event {
    Event::ChatroomMessagesReceived {
        room_uuid: room(),
        messages: seqs.iter().map(|&s| message(s, "bob")).collect(),
    }
}

/// The sequence numbers an event tells, or `None` if it tells nothing.
fn told(events: impl IntoIterator<Item = RoomEvent>) -> Option<Vec<u64>> {
    let mut events = events.into_iter();
    let told = match events.next()? {
        RoomEvent::ChatroomMessagesReceived(messages) => Some(messages.iter().map(|m| m.seq).collect()),
        other => panic!("expected messages, got {other:?}"),
    };
    assert_eq!(events.next(), None, "one event");
    told
}

#[test]
fn live_messages_are_told_in_sequence_order() {
    let mut mirror = alice();
    assert_eq!(told(mirror.apply(live(&[3, 1, 2]))), Some(vec![1, 2, 3]));
    assert_eq!(mirror.last_seq(), 3);
}

#[test]
fn a_message_is_never_told_twice() {
    let mut mirror = alice();
    assert_eq!(told(mirror.apply(live(&[1, 2]))), Some(vec![1, 2]));
    assert_eq!(told(mirror.apply(live(&[2]))), None, "a repeated message is dropped");
    assert_eq!(told(mirror.apply(live(&[2, 3, 3]))), Some(vec![3]), "duplicates in one batch too");
    assert_eq!(told(mirror.replayed(vec![message(1, "bob"), message(3, "bob")])), None);
    assert_eq!(mirror.last_seq(), 3);
}

#[test]
fn own_sends_and_the_entry_point_count_as_seen() {
    let mut mirror = alice();
    mirror.note_seq(5); // entered the chatroom at seq 5
    assert_eq!(told(mirror.apply(live(&[4, 5, 6]))), Some(vec![6]));
    mirror.note_seq(7); // sent seq 7
    mirror.note_seq(2); // never goes back
    assert_eq!(mirror.last_seq(), 7);
    assert_eq!(told(mirror.apply(live(&[7, 8]))), Some(vec![8]));
}

#[test]
fn a_replay_skips_the_local_members_own_messages_but_not_backend_ones() {
    let mut mirror = alice();
    mirror.begin_resume();
    let mut backend = Arc::unwrap_or_clone(message(3, "alice"));
    backend.from_backend = true;
    let page = vec![message(1, "bob"), message(2, "alice"), Arc::new(backend), message(4, "bob")];
    assert_eq!(told(mirror.replayed(page)), Some(vec![1, 3, 4]));
    assert_eq!(mirror.last_seq(), 4, "the skipped message counts as seen");
    assert_eq!(told(mirror.end_resume()), None);
}

#[test]
fn live_messages_wait_for_the_catch_up_and_follow_it() {
    let mut mirror = alice();
    assert_eq!(told(mirror.apply(live(&[1]))), Some(vec![1]));
    mirror.begin_resume();
    assert!(mirror.is_resuming());
    // Live messages arrive while history is being fetched: held back.
    assert_eq!(told(mirror.apply(live(&[5]))), None);
    assert_eq!(told(mirror.apply(live(&[4, 6]))), None);
    assert_eq!(
        told(mirror.replayed(vec![message(2, "bob"), message(3, "bob"), message(4, "bob")])),
        Some(vec![2, 3, 4])
    );
    // Released in order, without what the replay already told.
    assert_eq!(told(mirror.end_resume()), Some(vec![5, 6]));
    assert!(!mirror.is_resuming());
    assert_eq!(told(mirror.apply(live(&[7]))), Some(vec![7]), "told directly again");
}

#[test]
fn a_catch_up_with_nothing_held_tells_nothing_at_its_end() {
    let mut mirror = alice();
    mirror.begin_resume();
    assert_eq!(told(mirror.end_resume()), None);
    assert_eq!(told(mirror.end_resume()), None, "ending twice is harmless");
}

#[test]
fn a_join_answer_keeps_the_sequence_and_the_catch_up() {
    let mut mirror = alice();
    assert_eq!(told(mirror.apply(live(&[1, 2]))), Some(vec![1, 2]));
    mirror.begin_resume();
    let mut fresh = answer(vec![member("alice", false), member("carol", false)], (2, 0));
    fresh.room.locked = true;
    let told = mirror.refresh(fresh);
    assert_eq!(told, [RoomEvent::MemberCountChanged(MemberCounts { room: 2, chatroom: 0 })]);
    assert!(mirror.info().locked);
    assert!(mirror.member("bob").is_none() && mirror.member("carol").is_some());
    assert!(mirror.is_resuming());
    assert_eq!(mirror.last_seq(), 2);
}

#[test]
fn membership_events_update_the_roster() {
    let mut mirror = alice();
    let carol = member("carol", false);
    let joined = mirror.apply(Event::MemberJoinRoom { room_uuid: room(), members: vec![carol.clone()] });
    assert_eq!(
        joined,
        [RoomEvent::MemberJoinRoom(vec![carol.clone()]), RoomEvent::MemberCountChanged(counts(3, 2))]
    );
    mirror.apply(Event::MemberJoinChatroom { room_uuid: room(), members: vec![carol.clone()] });
    assert!(mirror.member("carol").is_some_and(|m| m.is_in_chatroom));
    mirror.apply(Event::MemberLeaveChatroom { room_uuid: room(), members: vec![member("bob", true)] });
    assert!(mirror.member("bob").is_some_and(|m| !m.is_in_chatroom));
    mirror.apply(Event::MemberLeaveChatroom { room_uuid: room(), members: vec![carol.clone()] });
    mirror.apply(Event::MemberLeaveRoom { room_uuid: room(), members: vec![carol] });
    let mut remote: Vec<_> = mirror.remote_members().map(|m| m.uuid.to_string()).collect();
    remote.sort();
    assert_eq!(remote, ["bob"]);
    assert_eq!(mirror.counts(), counts(2, 1), "carol came and went, bob left the chatroom");
    assert!(mirror.local_in_chatroom());
    assert_eq!(mirror.local_left_chatroom(), [RoomEvent::MemberCountChanged(counts(2, 0))]);
    assert!(!mirror.local_in_chatroom());
    assert_eq!(mirror.local_left_chatroom(), [], "leaving twice changes nothing");
}

#[test]
fn room_events_update_properties_and_lock() {
    let mut mirror = alice();
    let properties = [("topic".to_string(), "maths".to_string())].into_iter().collect();
    mirror.apply(Event::RoomPropertiesChanged { room_uuid: room(), properties });
    assert_eq!(mirror.info().properties.get("topic").map(String::as_str), Some("maths"));
    let deleted =
        mirror.apply(Event::RoomPropertiesDeleted { room_uuid: room(), keys: vec!["topic".into()] });
    assert_eq!(deleted, [RoomEvent::RoomPropertiesDeleted(vec!["topic".into()])]);
    assert!(mirror.info().properties.is_empty());
    mirror.apply(Event::RoomLockStateChanged { room_uuid: room(), locked: true });
    assert!(mirror.info().locked);
    let end = mirror.apply(Event::RoomEnd { room_uuid: room(), reason: EndReason::KickOut });
    assert_eq!(end, [RoomEvent::RoomEnd(EndReason::KickOut)]);
}
