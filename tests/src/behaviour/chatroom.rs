//! Entering and leaving a room's chatroom.

use roomkit_client::{RoomEvent, RoomMember};
use roomkit_protocol::{Code, Event};
use roomkit_server::ServerConfig;
use serde_json::json;

use crate::{expect_code, start_chatroom, start_room, Harness, Member, Seen};

/// Asserts that `m`'s next event is `MemberJoinChatroom` of exactly `who`, inside the chatroom.
async fn expect_join_chatroom(m: &mut Member, who: &str, name: &str) -> RoomMember {
    match m.next_event().await {
        RoomEvent::MemberJoinChatroom(members) => {
            assert_eq!(members.len(), 1, "{}: {members:?}", m.uuid());
            let joiner = members.into_iter().next().expect("one");
            assert_eq!((joiner.uuid.as_str(), joiner.name.as_str()), (who, name));
            assert!(joiner.is_in_chatroom, "{}: the joiner's info says it is not in the chatroom", m.uuid());
            joiner
        }
        other => panic!("{} expected MemberJoinChatroom({who}), got {other:?}", m.uuid()),
    }
}

/// Entering the chatroom needs membership of the room: a context kept after leaving the room
/// is refused with `NOT_IN_ROOM`.
pub async fn join_chatroom_needs_room_membership<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &[]).await;
    ms[1].ctx.leave_room().await.expect("bob leaves");
    expect_code(ms[1].chat().join_chatroom().await, Code::NOT_IN_ROOM);
    expect_code(ms[1].chat().leave_chatroom().await, Code::NOT_IN_ROOM);
    ms[0].expect(Seen::LeaveRoom("bob".into())).await;
    ms[0].assert_quiet().await;
    h.stop().await;
}

/// Over a raw connection: `join_chatroom` before joining the room is `NOT_IN_ROOM`; after
/// joining it succeeds, and every member, the joiner included (before its response), gets
/// `MemberJoinChatroom` with the joiner's info.
pub async fn join_chatroom_over_a_raw_connection<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &["alice"]).await;
    let mut eve = h.raw_client().await;
    eve.send_json(json!({"id": 1, "op": "login", "account_id": "eve", "token": "x"})).await;
    let r = eve.response().await;
    assert_eq!((r.id, r.code), (Some(1), Code::SUCCESS), "{}", r.msg);
    eve.send_json(json!({"id": 2, "op": "join_chatroom", "room_uuid": "r"})).await;
    let r = eve.response().await;
    assert_eq!((r.id, r.code), (Some(2), Code::NOT_IN_ROOM), "{}", r.msg);
    for m in &mut ms {
        m.assert_quiet().await;
    }

    eve.send_json(json!({"id": 3, "op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    let r = eve.response().await;
    assert_eq!((r.id, r.code), (Some(3), Code::SUCCESS), "{}", r.msg);
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
    }
    eve.send_json(json!({"id": 4, "op": "join_chatroom", "room_uuid": "r"})).await;
    let r = eve.response().await;
    assert_eq!((r.id, r.code), (Some(4), Code::SUCCESS), "{}", r.msg);
    match &eve.take_events()[..] {
        [Event::MemberJoinChatroom { room_uuid, members }] => {
            assert_eq!(room_uuid.as_str(), "r");
            assert_eq!(members.len(), 1);
            assert_eq!(members[0].uuid.as_str(), "eve");
            assert!(members[0].is_in_chatroom);
        }
        other => panic!("eve expected her own MemberJoinChatroom before the response, got {other:?}"),
    }
    for m in &mut ms {
        expect_join_chatroom(m, "eve", "Eve").await;
        assert!(m.ctx.get_member("eve").expect("eve").is_in_chatroom);
        m.assert_quiet().await;
    }
    h.stop().await;
}

/// Entering the chatroom: every room member, the joiner included, gets `MemberJoinChatroom`
/// with the joiner's info; the joiner's own event is there when the call returns; every
/// context sees the joiner inside.
pub async fn join_chatroom_tells_every_member<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob", "carol"], true, &[]).await;
    ms[1].chat().join_chatroom().await.expect("bob join_chatroom");
    assert!(ms[1].events.try_recv().is_some(), "bob's own MemberJoinChatroom must precede the response");
    assert!(ms[1].chat().is_in_chatroom());
    for m in &mut ms[..] {
        if m.uuid() != "bob" {
            expect_join_chatroom(m, "bob", "Bob").await;
        }
        assert!(m.ctx.get_member("bob").expect("bob").is_in_chatroom, "as seen by {}", m.uuid());
        assert!(!m.ctx.get_member("alice").expect("alice").is_in_chatroom);
        m.assert_quiet().await;
    }
    h.stop().await;
}

/// Entering twice succeeds, and nobody gets a second `MemberJoinChatroom`.
pub async fn join_chatroom_twice_is_a_no_op<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &["bob"]).await;
    ms[1].chat().join_chatroom().await.expect("join_chatroom again");
    assert!(ms[1].chat().is_in_chatroom());
    for m in &mut ms {
        m.assert_quiet().await;
        assert!(m.ctx.get_member("bob").expect("bob").is_in_chatroom);
    }
    h.stop().await;
}

/// Leaving the chatroom: every other member gets `MemberLeaveChatroom`, the leaver gets none
/// and no further broadcasts; leaving again is `NOT_IN_CHATROOM`; entering again is
/// announced as usual.
pub async fn leave_chatroom_tells_the_others_and_stops_delivery<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob", "carol"]).await;
    ms[1].chat().leave_chatroom().await.expect("bob leave_chatroom");
    assert!(!ms[1].chat().is_in_chatroom());
    for i in [0, 2] {
        match ms[i].next_event().await {
            RoomEvent::MemberLeaveChatroom(members) => {
                assert_eq!(members.len(), 1);
                assert_eq!(members[0].uuid.as_str(), "bob");
                assert!(!members[0].is_in_chatroom);
            }
            other => panic!("{} expected MemberLeaveChatroom(bob), got {other:?}", ms[i].uuid()),
        }
        assert!(!ms[i].ctx.get_member("bob").expect("bob is still in the room").is_in_chatroom);
    }
    ms[1].assert_quiet().await;

    let sent = ms[0].chat().send_broadcast_text_message("after bob left").await.expect("broadcast");
    ms[2].expect(Seen::message(&sent)).await;
    for m in &mut ms {
        m.assert_quiet().await;
    }

    expect_code(ms[1].chat().leave_chatroom().await, Code::NOT_IN_CHATROOM);
    ms[1].chat().join_chatroom().await.expect("bob comes back");
    for m in &mut ms {
        m.expect(Seen::JoinChatroom("bob".into())).await;
        m.assert_quiet().await;
    }
    h.stop().await;
}
