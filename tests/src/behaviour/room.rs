//! Rooms: creating, joining, and the room context.

use std::sync::{Arc, Mutex};

use roomkit_client::{
    CreateRoomOptions, CreateRoomParams, EndReason, JoinRoomOptions, JoinRoomParams, RoomEvent,
    RoomEventCallback, RoomService,
};
use roomkit_protocol::{Code, Role};
use roomkit_server::ServerConfig;

use crate::{
    create_params, create_room, expect_code, join, join_as_host, join_params, join_with, start_room, Harness,
    Member, Seen,
};

/// With `enable_chatroom` the chat controller is supported and entering works; without it,
/// it is not supported and entering fails with `CHATROOM_NOT_ENABLED`.
pub async fn chatroom_support_follows_enable_chatroom<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let kit = h.client("alice").await;
    assert!(create_room(&kit, "with-chat", true).await.chatroom_enabled);
    assert!(!create_room(&kit, "no-chat", false).await.chatroom_enabled);

    let with = join_as_host(&kit, "with-chat").await;
    assert!(with.chat().is_supported());
    assert!(!with.chat().is_in_chatroom());
    with.chat().join_chatroom().await.expect("join_chatroom in a chatroom-enabled room");
    assert!(with.chat().is_in_chatroom());

    let without = join_as_host(&kit, "no-chat").await;
    assert!(!without.chat().is_supported());
    expect_code(without.chat().join_chatroom().await, Code::CHATROOM_NOT_ENABLED);
    assert!(!without.chat().is_in_chatroom());
    expect_code(without.chat().send_broadcast_text_message("hi").await, Code::CHATROOM_NOT_ENABLED);
    h.stop().await;
}

/// `create_room` does not join: the creator has no context, and the first joiner sees only
/// itself. A second room with the same uuid is refused with `ROOM_ALREADY_EXISTS`.
pub async fn create_room_does_not_join<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    let info = create_room(&alice, "r1", true).await;
    assert_eq!(info.room_uuid.as_str(), "r1");
    assert_eq!(info.room_name, "Room r1");
    assert_eq!(info.creator.as_str(), "alice");
    assert!(!info.locked && !info.has_password && info.max_members.is_none());
    assert!(alice.room_service().get_room_context("r1").is_none());

    let bob = h.client("bob").await;
    let mut b = join(&bob, "r1").await;
    assert!(b.ctx.remote_members().is_empty(), "the creator did not join: {:?}", b.ctx.remote_members());
    assert_eq!(b.ctx.local_member().uuid.as_str(), "bob");
    assert!(alice.room_service().get_room_context("r1").is_none());

    let again = |kit: &roomkit_client::RoomKit| {
        let service = kit.room_service();
        async move { service.create_room(create_params("r1"), CreateRoomOptions { enable_chatroom: false }).await }
    };
    expect_code(again(&alice).await, Code::ROOM_ALREADY_EXISTS);
    expect_code(again(&bob).await, Code::ROOM_ALREADY_EXISTS);
    b.assert_quiet().await;
    h.stop().await;
}

/// Invalid parameters of `create_room` fail with `BAD_REQUEST` naming the field, and create
/// nothing; the limits themselves (64 characters) are accepted.
pub async fn create_room_validates_its_parameters<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    let service = alice.room_service();
    let create = |params: CreateRoomParams| service.create_room(params, CreateRoomOptions::default());
    let bad = |result, field: &str| {
        let e = expect_code(result, Code::BAD_REQUEST);
        assert!(e.msg().contains(field), "the message should name `{field}`: {}", e.msg());
    };

    bad(create(create_params("bad uuid!")).await, "room_uuid");
    bad(create(create_params(&"u".repeat(65))).await, "room_uuid");
    bad(create(create_params("")).await, "room_uuid");
    bad(create(CreateRoomParams { room_name: "n".repeat(65), ..create_params("r-name") }).await, "room_name");
    bad(create(CreateRoomParams { room_name: String::new(), ..create_params("r-name") }).await, "room_name");
    bad(
        create(CreateRoomParams { password: Some("p".repeat(65)), ..create_params("r-pass") }).await,
        "password",
    );

    // The server validates too: a raw client bypasses the SDK's checks.
    let mut raw = h.raw_client().await;
    raw.login("eve").await;
    let r = raw
        .request(serde_json::json!({"op": "create_room", "room_uuid": "bad uuid!", "room_name": "x"}))
        .await;
    assert_eq!(r.code, Code::BAD_REQUEST);
    assert!(r.msg.contains("room_uuid"), "{}", r.msg);
    let r = raw
        .request(serde_json::json!({"op": "create_room", "room_uuid": "r-raw", "room_name": "n".repeat(65)}))
        .await;
    assert_eq!(r.code, Code::BAD_REQUEST);
    assert!(r.msg.contains("room_name"), "{}", r.msg);

    // Nothing was created by the failures; the limits are inclusive.
    let name = "n".repeat(64);
    let password = "p".repeat(64);
    let uuid = "u".repeat(64);
    let info = create(CreateRoomParams { room_name: name.clone(), ..create_params("r-name") })
        .await
        .expect("a 64-character name");
    assert_eq!(info.room_name, name);
    let info = create(CreateRoomParams { password: Some(password.clone()), ..create_params("r-pass") })
        .await
        .expect("a 64-character password");
    assert!(info.has_password);
    create(CreateRoomParams { room_name: "long uuid".into(), ..create_params(&uuid) })
        .await
        .expect("a 64-character uuid");
    let m = join_with(&alice, JoinRoomParams { password: Some(password), ..join_params("r-pass", "alice") })
        .await;
    assert_eq!(m.room(), "r-pass");
    h.stop().await;
}

/// `join_room` returns a context holding the local member as it joined; the members already
/// there get `MemberJoinRoom` with the joiner's info, the joiner gets no event about itself.
/// Only the creator may join as host; a missing room is `ROOM_NOT_EXIST`.
pub async fn join_room_returns_a_context_with_the_local_member<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    create_room(&alice, "r", true).await;
    let mut a = join_as_host(&alice, "r").await;
    assert_eq!(a.ctx.room_uuid().as_str(), "r");
    assert_eq!(a.ctx.room_name(), "Room r");
    assert_eq!(a.ctx.room_info().creator.as_str(), "alice");
    let local = a.ctx.local_member();
    assert_eq!((local.uuid.as_str(), local.name.as_str(), local.role), ("alice", "Alice", Role::Host));
    assert!(!local.is_in_chatroom);
    assert!(a.ctx.remote_members().is_empty());

    let bob = h.client("bob").await;
    let params = JoinRoomParams {
        avatar: Some("https://example.invalid/bob.png".into()),
        initial_my_properties: [("seat".to_string(), "3".to_string())].into(),
        ..join_params("r", "bob")
    };
    let mut b = join_with(&bob, params).await;
    let me = b.ctx.local_member();
    assert_eq!((me.uuid.as_str(), me.name.as_str(), me.role), ("bob", "Bob", Role::Member));
    assert_eq!(me.avatar.as_deref(), Some("https://example.invalid/bob.png"));
    assert_eq!(me.properties.get("seat").map(String::as_str), Some("3"));
    let remote: Vec<String> = b.ctx.remote_members().iter().map(|m| m.uuid.to_string()).collect();
    assert_eq!(remote, ["alice"]);
    assert_eq!(b.ctx.get_member("alice").expect("alice").role, Role::Host);

    match a.next_event().await {
        RoomEvent::MemberJoinRoom(members) => assert_eq!(members, vec![me.clone()]),
        other => panic!("alice expected MemberJoinRoom(bob), got {other:?}"),
    }
    assert_eq!(a.ctx.get_member("bob"), Some(me));
    b.assert_quiet().await;
    a.assert_quiet().await;

    let carol = h.client("carol").await;
    let as_host = JoinRoomParams { role: Role::Host, ..join_params("r", "carol") };
    expect_code(carol.room_service().join_room(as_host, JoinRoomOptions::default()).await, Code::FORBIDDEN);
    let missing = join_params("no-such-room", "carol");
    expect_code(
        carol.room_service().join_room(missing, JoinRoomOptions::default()).await,
        Code::ROOM_NOT_EXIST,
    );
    let long_name = JoinRoomParams { user_name: "c".repeat(65), ..join_params("r", "carol") };
    let e = expect_code(
        carol.room_service().join_room(long_name, JoinRoomOptions::default()).await,
        Code::BAD_REQUEST,
    );
    assert!(e.msg().contains("user_name"), "{}", e.msg());
    a.assert_quiet().await;
    h.stop().await;
}

/// A wrong or missing password is `BAD_PASSWORD`; a locked room is `ROOM_LOCKED` until
/// unlocked; a room at `max_members` is `ROOM_FULL` until someone leaves.
pub async fn join_room_checks_password_lock_and_capacity<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    let bob = h.client("bob").await;
    let carol = h.client("carol").await;
    let try_join = |kit: &roomkit_client::RoomKit, params: JoinRoomParams| {
        let service = kit.room_service();
        async move { service.join_room(params, JoinRoomOptions::default()).await }
    };

    // Password.
    let params = CreateRoomParams { password: Some("secret".into()), ..create_params("pw") };
    alice.room_service().create_room(params, CreateRoomOptions::default()).await.expect("create pw");
    expect_code(try_join(&bob, join_params("pw", "bob")).await, Code::BAD_PASSWORD);
    let wrong = JoinRoomParams { password: Some("guess".into()), ..join_params("pw", "bob") };
    expect_code(try_join(&bob, wrong).await, Code::BAD_PASSWORD);
    let right = JoinRoomParams { password: Some("secret".into()), ..join_params("pw", "bob") };
    try_join(&bob, right).await.expect("the right password");

    // Lock: only new joiners are refused, and only while locked.
    create_room(&alice, "locked", false).await;
    let mut host = join_as_host(&alice, "locked").await;
    let mut c = join(&carol, "locked").await;
    host.expect(Seen::JoinRoom("carol".into())).await;
    host.ctx.lock_room().await.expect("lock_room");
    for m in [&mut host, &mut c] {
        match m.next_event().await {
            RoomEvent::RoomLockStateChanged(true) => {}
            other => panic!("{} expected RoomLockStateChanged(true), got {other:?}", m.uuid()),
        }
        assert!(m.ctx.is_room_locked());
    }
    expect_code(try_join(&bob, join_params("locked", "bob")).await, Code::ROOM_LOCKED);
    expect_code(c.ctx.lock_room().await, Code::FORBIDDEN);
    host.ctx.unlock_room().await.expect("unlock_room");
    try_join(&bob, join_params("locked", "bob")).await.expect("join after unlock");

    // Capacity.
    let params = CreateRoomParams { max_members: Some(2), ..create_params("full") };
    alice.room_service().create_room(params, CreateRoomOptions::default()).await.expect("create full");
    let a = join_as_host(&alice, "full").await;
    assert_eq!(a.ctx.max_members(), Some(2));
    let b = join(&bob, "full").await;
    expect_code(try_join(&carol, join_params("full", "carol")).await, Code::ROOM_FULL);
    b.ctx.leave_room().await.expect("bob leaves");
    try_join(&carol, join_params("full", "carol")).await.expect("join after someone left");
    h.stop().await;
}

/// Joining with the same account from a second connection replaces the first: the first
/// context gets `RoomEnd(KickedByOtherDevice)` and is gone; the others see the account leave
/// (chatroom first) and join again.
pub async fn same_account_joining_elsewhere_replaces_the_first_connection<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &["alice", "bob"]).await;
    let bob2 = h.client("bob").await;
    let mut second = join(&bob2, "r").await;
    let [alice, first] = &mut ms[..] else { unreachable!() };

    first.expect(Seen::End(EndReason::KickedByOtherDevice)).await;
    first.settle().await;
    assert!(first.kit.room_service().get_room_context("r").is_none());
    expect_code(first.chat().join_chatroom().await, Code::NOT_IN_ROOM);
    expect_code(first.chat().send_broadcast_text_message("still here?").await, Code::NOT_IN_ROOM);

    alice.expect(Seen::LeaveChatroom("bob".into())).await;
    alice.expect(Seen::LeaveRoom("bob".into())).await;
    alice.expect(Seen::JoinRoom("bob".into())).await;
    alice.assert_quiet().await;
    let seen_by_alice = alice.ctx.get_member("bob").expect("bob is a member again");
    assert!(!seen_by_alice.is_in_chatroom);

    let me = second.ctx.local_member();
    assert_eq!(me.uuid.as_str(), "bob");
    assert!(!me.is_in_chatroom);
    assert!(second.ctx.get_member("alice").expect("alice").is_in_chatroom);
    second.assert_quiet().await;

    // The replacement works as a member: its messages reach alice.
    second.chat().join_chatroom().await.expect("join_chatroom");
    alice.expect(Seen::JoinChatroom("bob".into())).await;
    h.stop().await;
}

/// `get_room_context` is `None` before joining, `Some` while joined, `None` after
/// `leave_room` (whose listeners get `RoomEnd(LeaveBySelf)`).
pub async fn get_room_context_follows_membership<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    let service = alice.room_service();
    assert!(service.get_room_context("r").is_none());
    create_room(&alice, "r", true).await;
    assert!(service.get_room_context("r").is_none());
    assert!(service.get_room_context("not a uuid").is_none());

    let mut a = join_as_host(&alice, "r").await;
    let found = service.get_room_context("r").expect("joined");
    assert_eq!(found.room_uuid(), a.ctx.room_uuid());
    assert_eq!(found.local_member(), a.ctx.local_member());
    assert!(service.get_room_context("other").is_none());

    a.ctx.leave_room().await.expect("leave_room");
    assert!(service.get_room_context("r").is_none());
    a.expect(Seen::End(EndReason::LeaveBySelf)).await;
    expect_code(a.ctx.leave_room().await, Code::NOT_IN_ROOM);
    h.stop().await;
}

/// What an [`EndProbe`] saw when `room_end` was called back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeOutcome {
    /// `get_room_context` answered: whether it still found the room.
    Answered { context_found: bool },
    /// `get_room_context` did not answer: the callback runs under a lock it needs.
    Blocked,
}

/// A callback that, on `room_end`, asks `get_room_context` whether the room is still
/// there. The question is asked from a helper thread with a bound, so that an SDK calling
/// back under its own lock shows up as [`ProbeOutcome::Blocked`] instead of deadlocking
/// the test.
struct EndProbe {
    service: RoomService,
    room: String,
    outcome: Mutex<Option<ProbeOutcome>>,
}

impl EndProbe {
    fn attach(m: &Member) -> Arc<EndProbe> {
        let probe =
            Arc::new(EndProbe { service: m.kit.room_service(), room: m.room(), outcome: Mutex::new(None) });
        m.ctx.add_event_callback(probe.clone());
        probe
    }

    fn outcome(&self) -> Option<ProbeOutcome> {
        *self.outcome.lock().expect("not poisoned")
    }
}

impl RoomEventCallback for EndProbe {
    fn room_end(&self, _reason: EndReason) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (service, room) = (self.service.clone(), self.room.clone());
        std::thread::spawn(move || {
            let _ = tx.send(service.get_room_context(&room).is_some());
        });
        let outcome = match rx.recv_timeout(std::time::Duration::from_secs(2)) {
            Ok(context_found) => ProbeOutcome::Answered { context_found },
            Err(_) => ProbeOutcome::Blocked,
        };
        *self.outcome.lock().expect("not poisoned") = Some(outcome);
    }
}

/// When the server ends the room for a member (here: the host's `end_room`), the context is
/// already gone when listeners hear `RoomEnd` ("the context is gone"), as it is for
/// `leave_room`.
pub async fn room_end_listeners_see_the_context_already_gone<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], false, &[]).await;
    let probes: Vec<Arc<EndProbe>> = ms.iter().map(EndProbe::attach).collect();
    ms[0].ctx.end_room(false).await.expect("alice ends the room");
    for (m, probe) in ms.iter_mut().zip(&probes) {
        m.expect(Seen::End(EndReason::CloseByMember)).await;
        m.settle().await;
        assert_eq!(
            probe.outcome(),
            Some(ProbeOutcome::Answered { context_found: false }),
            "{}: room_end was called back while get_room_context still found the room",
            m.uuid()
        );
    }
    h.stop().await;
}

/// A `room_end` callback may call back into the SDK: after `leave_room`, `get_room_context`
/// from the callback answers (with `None`) rather than blocking on the SDK's lock.
pub async fn room_end_callback_may_call_back_into_the_sdk<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let ms = start_room(&h, "r", &["alice", "bob"], false, &[]).await;
    let probe = EndProbe::attach(&ms[1]);
    ms[1].ctx.leave_room().await.expect("bob leaves");
    assert_eq!(probe.outcome(), Some(ProbeOutcome::Answered { context_found: false }));
    h.stop().await;
}

/// Joining again on the connection that is already in the room succeeds and changes nothing:
/// the context obtained first keeps receiving the room's events and stays current.
pub async fn joining_again_on_the_same_connection_keeps_contexts_live<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob"], true, &[]).await;
    let again = join(&ms[1].kit, "r").await;
    assert_eq!(again.ctx.local_member(), ms[1].ctx.local_member());
    ms[0].assert_quiet().await;

    let carol = h.client("carol").await;
    let _c = join(&carol, "r").await;
    let first: &mut Member = &mut ms[1];
    let events: Vec<Seen> = first.drain().await.iter().flat_map(crate::seen).collect();
    assert_eq!(events, [Seen::JoinRoom("carol".into())], "the first context's stream went silent");
    assert!(first.ctx.get_member("carol").is_some(), "the first context stopped being updated");
    h.stop().await;
}

/// Room properties: initial ones are in every joiner's context; the host's changes and
/// deletions reach every member (`RoomPropertiesChanged` / `RoomPropertiesDeleted`) and
/// update every context; a member's are `FORBIDDEN`.
pub async fn room_properties_are_the_hosts_and_reach_everyone<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let alice = h.client("alice").await;
    let initial = [("lang".to_string(), "en".to_string())].into();
    let params = CreateRoomParams { initial_room_properties: initial, ..create_params("r") };
    alice.room_service().create_room(params, CreateRoomOptions::default()).await.expect("create");
    let mut ms = vec![join_as_host(&alice, "r").await, join(&h.client("bob").await, "r").await];
    ms[0].expect(Seen::JoinRoom("bob".into())).await;
    assert_eq!(ms[1].ctx.room_properties().get("lang").map(String::as_str), Some("en"));

    ms[0].ctx.update_room_property("topic", "maths").await.expect("update");
    for m in &mut ms {
        match m.next_event().await {
            RoomEvent::RoomPropertiesChanged(p) => assert_eq!(p, [("topic".into(), "maths".into())].into()),
            other => panic!("{} expected RoomPropertiesChanged, got {other:?}", m.uuid()),
        }
        assert_eq!(m.ctx.room_properties().get("topic").map(String::as_str), Some("maths"));
    }
    expect_code(ms[1].ctx.update_room_property("topic", "art").await, Code::FORBIDDEN);
    expect_code(ms[1].ctx.delete_room_property("lang").await, Code::FORBIDDEN);
    ms[0].ctx.delete_room_property("lang").await.expect("delete");
    for m in &mut ms {
        match m.next_event().await {
            RoomEvent::RoomPropertiesDeleted(keys) => assert_eq!(keys, ["lang"]),
            other => panic!("{} expected RoomPropertiesDeleted, got {other:?}", m.uuid()),
        }
        assert!(!m.ctx.room_properties().contains_key("lang"));
        m.assert_quiet().await;
    }
    h.stop().await;
}
