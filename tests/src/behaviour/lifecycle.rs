//! How members and rooms go away: leaving, closing, the reconnect grace period, idle expiry,
//! ending, shutdown.

use std::time::{Duration, Instant};

use roomkit_client::{ConnectionState, EndReason, JoinRoomOptions, RoomEvent, RoomKit};
use roomkit_core::transport::TransportError;
use roomkit_protocol::{Code, Event, RoomUuid};
use roomkit_server::ServerConfig;

use crate::{
    counted, create_room, expect_code, join_as_host, join_params, start_chatroom, start_room, within,
    Harness, Member, Seen,
};

/// Polls `check` every few milliseconds until it holds; panics after the event timeout.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Whether the server still has room `room`.
async fn room_alive<H: Harness>(h: &H, room: &str) -> bool {
    let uuid: RoomUuid = room.parse().expect("room uuid");
    let probe = uuid.clone();
    h.server().with_room(&uuid, move |rooms, _| rooms.room_info(&probe).is_some()).await.expect("shard alive")
}

/// Waits until the server has ended room `room` on its own.
async fn wait_until_ended<H: Harness>(h: &H, room: &str) {
    within(&format!("room {room} to end"), async {
        while room_alive(h, room).await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// Asserts the next event of `m` is `MemberLeaveChatroom` or `MemberLeaveRoom` (per
/// `chatroom`) of `who`, described as out of the chatroom.
async fn expect_leave(m: &mut Member, who: &str, chatroom: bool) {
    let event = m.next_event().await;
    let members = match (&event, chatroom) {
        (RoomEvent::MemberLeaveChatroom(members), true) | (RoomEvent::MemberLeaveRoom(members), false) => {
            members
        }
        _ => panic!(
            "{} expected {} of {who}, got {event:?}",
            m.uuid(),
            if chatroom { "LeaveChatroom" } else { "LeaveRoom" }
        ),
    };
    assert_eq!(members.len(), 1, "{event:?}");
    assert_eq!(members[0].uuid.as_str(), who);
    assert!(!members[0].is_in_chatroom, "{}: a leaving member is described as out of the chatroom", m.uuid());
}

/// `leave_room` from inside the chatroom: the others get `MemberLeaveChatroom` then
/// `MemberLeaveRoom`; the leaver's listeners get `RoomEnd(LeaveBySelf)` and its stream ends.
/// A member outside the chatroom only causes `MemberLeaveRoom`.
pub async fn leave_room_leaves_the_chatroom_first<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let accounts = ["alice", "bob", "carol", "dave"];
    let mut ms = start_room(&h, "r", &accounts, true, &["alice", "bob", "carol"]).await;
    ms[1].ctx.leave_room().await.expect("bob leaves");
    assert!(ms[1].kit.room_service().get_room_context("r").is_none());
    ms[1].expect(Seen::End(EndReason::LeaveBySelf)).await;
    assert!(within("bob's stream to end", ms[1].events.recv()).await.is_none());
    for i in [0, 2, 3] {
        expect_leave(&mut ms[i], "bob", true).await;
        expect_leave(&mut ms[i], "bob", false).await;
        assert!(ms[i].ctx.get_member("bob").is_none());
        ms[i].assert_quiet().await;
    }
    expect_code(ms[1].ctx.leave_room().await, Code::NOT_IN_ROOM);

    ms[3].ctx.leave_room().await.expect("dave leaves");
    for i in [0, 2] {
        expect_leave(&mut ms[i], "dave", false).await;
    }
    let sent = ms[0].chat().send_broadcast_text_message("who is left?").await.expect("broadcast");
    ms[2].expect(Seen::message(&sent)).await;
    for i in [0, 2] {
        ms[i].assert_quiet().await;
    }
    h.stop().await;
}

/// Closing a client takes it out of all its rooms: the others get `MemberLeaveChatroom` (if
/// it was inside) then `MemberLeaveRoom`. The closed client's calls fail with
/// `CONNECTION_CLOSED`.
pub async fn closing_a_client_leaves_its_rooms<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob", "carol"], true, &["alice", "bob"]).await;
    // Bob is in a second room too.
    create_room(&ms[0].kit, "side", false).await;
    let mut alice_side = join_as_host(&ms[0].kit, "side").await;
    let _bob_side = crate::join(&ms[1].kit, "side").await;
    alice_side.expect(Seen::JoinRoom("bob".into())).await;
    assert_eq!(h.server().connection_count(), 3);

    ms[1].kit.close().await;
    for i in [0, 2] {
        expect_leave(&mut ms[i], "bob", true).await;
        expect_leave(&mut ms[i], "bob", false).await;
        ms[i].assert_quiet().await;
    }
    expect_leave(&mut alice_side, "bob", false).await;
    alice_side.assert_quiet().await;
    expect_code(ms[1].chat().send_broadcast_text_message("anyone?").await, Code::CONNECTION_CLOSED);
    assert_eq!(ms[1].kit.close_reason().map(|e| e.code()), Some(Code::CONNECTION_CLOSED));
    let server = h.server();
    eventually("the server to forget the closed connection", || server.connection_count() == 2).await;
    h.stop().await;
}

/// Dropping every handle of a client (kit, contexts, streams) closes its connection, which
/// takes it out of its rooms as [`closing_a_client_leaves_its_rooms`] does — at once when
/// there is no reconnect grace period (`reconnect_grace_ms: 0`).
pub async fn dropping_a_client_leaves_its_rooms<H: Harness>() {
    let mut config = ServerConfig::default();
    config.core.reconnect_grace_ms = 0;
    let h = H::start(config).await;
    let mut ms = start_room(&h, "r", &["alice", "carol", "dave"], true, &["alice", "carol"]).await;
    let dave = ms.pop().expect("dave");
    let carol = ms.pop().expect("carol");
    let mut alice = ms.pop().expect("alice");

    drop(carol);
    expect_leave(&mut alice, "carol", true).await;
    expect_leave(&mut alice, "carol", false).await;
    drop(dave);
    expect_leave(&mut alice, "dave", false).await;
    alice.assert_quiet().await;
    assert_eq!(alice.ctx.remote_members(), vec![]);
    let server = h.server();
    eventually("the server to forget dropped connections", || server.connection_count() == 1).await;
    h.stop().await;
}

/// A room nobody is in ends on its own after `room_idle_timeout_ms` — whether nobody ever
/// joined or everyone left — and joining it then is `ROOM_ENDED`. A room with a member does
/// not end.
pub async fn idle_rooms_end<H: Harness>() {
    const IDLE_MS: u64 = 300;
    let mut config = ServerConfig::default();
    config.core.room_idle_timeout_ms = IDLE_MS;
    let h = H::start(config).await;
    let alice = h.client("alice").await;
    let bob = h.client("bob").await;
    let try_join = |kit: &RoomKit, room: &str| {
        let params = join_params(room, kit.user_uuid().expect("logged in").as_str());
        let service = kit.room_service();
        async move { service.join_room(params, JoinRoomOptions::default()).await }
    };

    create_room(&alice, "never-joined", true).await;
    create_room(&alice, "emptied", true).await;
    join_as_host(&alice, "emptied").await.ctx.leave_room().await.expect("leave");
    // A room with a member. Should the machine stall past the idle time between creating and
    // joining, the room has rightly ended: try another.
    let mut busy = None;
    for attempt in 0..5 {
        let room = format!("busy-{attempt}");
        create_room(&alice, &room, true).await;
        if let Ok(ctx) = try_join(&bob, &room).await {
            busy = Some((Member::new(bob.clone(), ctx), Instant::now()));
            break;
        }
    }
    let (mut busy, joined_at) = busy.expect("could join a fresh room within its idle time");

    wait_until_ended(&h, "never-joined").await;
    wait_until_ended(&h, "emptied").await;
    expect_code(try_join(&bob, "never-joined").await, Code::ROOM_ENDED);
    expect_code(try_join(&bob, "emptied").await, Code::ROOM_ENDED);

    let well_past = joined_at + Duration::from_millis(3 * IDLE_MS);
    tokio::time::sleep_until(well_past.into()).await;
    let room = busy.room();
    assert!(room_alive(&h, &room).await, "a room with a member must not end");
    busy.assert_quiet().await;
    busy.ctx.leave_room().await.expect("leave busy");
    wait_until_ended(&h, &room).await;
    expect_code(try_join(&alice, &room).await, Code::ROOM_ENDED);
    h.stop().await;
}

/// The host's `end_room`: every member, the host included, gets `RoomEnd(CloseByMember)`, the
/// contexts are gone and the streams end; joining later is `ROOM_ENDED`. A non-host's
/// `end_room` is `FORBIDDEN`.
pub async fn end_room_ends_it_for_everyone<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob", "carol"], true, &["alice", "bob"]).await;
    expect_code(ms[1].ctx.end_room(false).await, Code::FORBIDDEN);
    for m in &mut ms {
        m.assert_quiet().await;
    }

    ms[0].ctx.end_room(true).await.expect("the host ends the room");
    assert!(
        ms[0].kit.room_service().get_room_context("r").is_none(),
        "the host's context outlived its own end_room"
    );
    for m in &mut ms {
        m.expect(Seen::End(EndReason::CloseByMember)).await;
        m.settle().await;
        assert!(m.kit.room_service().get_room_context("r").is_none(), "{} still has a context", m.uuid());
        assert!(
            within("the stream to end", m.events.recv()).await.is_none(),
            "{}'s stream goes on",
            m.uuid()
        );
    }
    expect_code(ms[1].chat().send_broadcast_text_message("hello?").await, Code::ROOM_ENDED);
    let dave = h.client("dave").await;
    for kit in [&dave, &ms[0].kit] {
        let params = join_params("r", kit.user_uuid().expect("logged in").as_str());
        expect_code(kit.room_service().join_room(params, JoinRoomOptions::default()).await, Code::ROOM_ENDED);
    }
    h.stop().await;
}

/// Shutting the server down ends no room and sends no `room_end` (rooms outlive a restart):
/// every connection is closed with `SERVER_SHUTTING_DOWN`, with nothing before it; SDK
/// clients keep their contexts and start reconnecting; no new connection is accepted.
pub async fn shutdown_closes_clients_and_keeps_rooms<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &["alice"]).await;
    let mut raw = h.raw_client().await;
    raw.login("eve").await;
    raw.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
    }
    let mut states: Vec<_> = ms.iter().map(|m| m.kit.connection_events()).collect();
    let connector = h.connector();
    within("shutdown", h.stop()).await;

    // Over the wire: nothing but the close, with SERVER_SHUTTING_DOWN.
    match raw.read_to_end().await {
        (frames, TransportError::Closed(Some(reason))) => {
            assert!(frames.is_empty(), "eve expected nothing before the close, got {frames:?}");
            assert_eq!(reason.code, Code::SERVER_SHUTTING_DOWN, "{reason}");
        }
        other => panic!("eve's connection should be closed with SERVER_SHUTTING_DOWN, got {other:?}"),
    }
    for (m, states) in ms.iter_mut().zip(&mut states) {
        // The SDK treats the close like any dropped connection: it tries to reconnect.
        let state = within("a connection state change", states.recv()).await.expect("state events");
        assert!(matches!(state, ConnectionState::Reconnecting { .. }), "{}: {state:?}", m.uuid());
        assert!(m.kit.room_service().get_room_context("r").is_some(), "{} lost its context", m.uuid());
        assert_eq!(m.kit.close_reason(), None, "{} gave up at once", m.uuid());
        let early: Vec<RoomEvent> =
            std::iter::from_fn(|| m.events.try_recv()).filter(|e| !counted(e)).collect();
        assert!(early.is_empty(), "{} received events on shutdown: {early:?}", m.uuid());
    }
    let late = within("a connection attempt", RoomKit::connect(connector)).await;
    assert!(late.is_err(), "a stopped server accepted a connection");
}

/// A member whose connection drops keeps its place for the reconnect grace period: nobody is
/// told anything, it still counts as a member (in the chatroom too), and when the same
/// account joins again from a new connection it takes up its old place silently — its name
/// is the old one, it is in the chatroom without joining it, and it can catch up on what it
/// missed from history.
pub async fn a_dropped_member_returns_silently_within_the_grace_period<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    let mut eve = h.raw_client().await;
    eve.login("eve").await;
    eve.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    eve.request_ok(serde_json::json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.expect(Seen::JoinChatroom("eve".into())).await;
    }
    // The connection drops without leaving.
    drop(eve);
    let server = h.server();
    eventually("the server to notice the dropped connection", || server.connection_count() == 2).await;
    let missed = ms[0].chat().send_broadcast_text_message("while eve is away").await.expect("send");
    ms[1].expect(Seen::message(&missed)).await;
    for m in &mut ms {
        m.assert_quiet().await;
        assert!(
            m.ctx.get_member("eve").is_some_and(|e| e.is_in_chatroom),
            "{}: eve is still a member",
            m.uuid()
        );
    }

    let mut eve = h.raw_client().await;
    eve.login("eve").await;
    let joined = eve
        .request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Someone Else"}))
        .await;
    let joined: serde_json::Value =
        serde_json::from_str(joined.data.expect("join data").get()).expect("JSON");
    let me = joined["members"].as_array().expect("members").iter().find(|m| m["uuid"] == "eve").cloned();
    let me = me.unwrap_or_else(|| panic!("eve is not in the member list: {joined}"));
    assert_eq!((me["name"].as_str(), me["is_in_chatroom"].as_bool()), (Some("Eve"), Some(true)), "{me}");
    for m in &mut ms {
        m.assert_quiet().await;
    }
    // Back in the chatroom without joining it.
    let sent = ms[1].chat().send_broadcast_text_message("welcome back").await.expect("send");
    ms[0].expect(Seen::message(&sent)).await;
    let history = eve
        .request_ok(serde_json::json!({"op": "fetch_chatroom_history", "room_uuid": "r", "after_seq": 0}))
        .await;
    let history: serde_json::Value =
        serde_json::from_str(history.data.expect("history").get()).expect("JSON");
    let seqs: Vec<u64> =
        history["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, [missed.seq, sent.seq], "{history}");
    let received: Vec<u64> = eve
        .take_events()
        .iter()
        .filter_map(|e| match e {
            Event::ChatroomMessagesReceived { messages, .. } => Some(messages.iter().map(|m| m.seq)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(received, [sent.seq], "eve receives what is sent after its return, not before");
    h.stop().await;
}

/// A member that does not come back within the grace period is removed when it ends, as if
/// it had left: the others get `MemberLeaveChatroom`, then `MemberLeaveRoom`.
pub async fn a_dropped_member_leaves_when_the_grace_period_ends<H: Harness>() {
    let mut config = ServerConfig::default();
    // Short, so that the leave comes well within the wait for an event.
    config.core.reconnect_grace_ms = 200;
    let h = H::start(config).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    let mut eve = h.raw_client().await;
    eve.login("eve").await;
    eve.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    eve.request_ok(serde_json::json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.expect(Seen::JoinChatroom("eve".into())).await;
    }
    drop(eve);
    for m in &mut ms {
        expect_leave(m, "eve", true).await;
        expect_leave(m, "eve", false).await;
        assert!(m.ctx.get_member("eve").is_none());
    }
    // Coming back now is a new join, seen by everyone.
    let mut eve = h.raw_client().await;
    eve.login("eve").await;
    eve.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.assert_quiet().await;
    }
    h.stop().await;
}
