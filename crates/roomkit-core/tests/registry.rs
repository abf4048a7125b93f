//! Behaviour tests of `RoomRegistry`, the sans-IO room and chatroom state machine: who
//! receives which event, in which order, and which requests fail with which code; then a
//! property test checking random operation sequences against a simple model.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use roomkit_core::{ConnId, CoreConfig, Grants, Identity, RoomGrant};
use roomkit_protocol::{
    ops::{CreateRoom, Response},
    Code, EndReason, Event, HistoryOrder, Role,
};
use support::*;

fn alice() -> User {
    User::new("alice", 1)
}
fn bob() -> User {
    User::new("bob", 2)
}
fn carol() -> User {
    User::new("carol", 3)
}
fn dave() -> User {
    User::new("dave", 4)
}

/// Default limits with no reconnect grace (see `Harness::default`), changed by `f`.
fn config(f: impl FnOnce(&mut CoreConfig)) -> CoreConfig {
    let mut c = CoreConfig::default();
    c.reconnect_grace_ms = 0;
    f(&mut c);
    c
}

fn set(conns: &[&User]) -> BTreeSet<ConnId> {
    conns.iter().map(|u| u.conn).collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- a. create_room and enable_chatroom ---------------------------------------------------

#[test]
fn a_room_created_with_chatroom_can_be_entered() {
    let mut h = Harness::default();
    let a = alice();
    let created = h.ok(&a, create("r1", true));
    let Response::CreateRoom(out) = created.ok() else { panic!("{:?}", created.result) };
    assert!(out.room.chatroom_enabled);
    h.ok(&a, join("r1", "Alice"));
    h.ok(&a, join_chat("r1"));
    assert_eq!(h.chatroom_members("r1"), ["alice"]);
    assert_eq!(h.members("r1"), [("alice".to_string(), true)]);
}

#[test]
fn a_room_created_without_chatroom_refuses_every_chatroom_operation() {
    let mut h = Harness::default();
    let a = alice();
    h.ok(&a, create("r1", false));
    assert!(!h.reg.room_info(&room("r1")).unwrap().chatroom_enabled);
    h.ok(&a, join("r1", "Alice"));
    h.fails(&a, join_chat("r1"), Code::CHATROOM_NOT_ENABLED);
    h.fails(&a, leave_chat("r1"), Code::CHATROOM_NOT_ENABLED);
    h.fails(&a, text("r1", "hi"), Code::CHATROOM_NOT_ENABLED);
    h.fails(&a, fetch("r1", None, None, HistoryOrder::Desc), Code::CHATROOM_NOT_ENABLED);
    assert!(h.chatroom_members("r1").is_empty());
    assert_eq!(h.members("r1"), [("alice".to_string(), false)]);
}

// ---- b. create_room validation -------------------------------------------------------------

#[test]
fn b_create_room_does_not_join_and_emits_nothing() {
    let mut h = Harness::default();
    let a = alice();
    let o = h.ok(&a, create("r1", true));
    assert!(o.out.deliveries.is_empty() && o.out.ended.is_empty());
    let Response::CreateRoom(out) = o.ok() else { panic!() };
    assert_eq!(out.room.room_uuid, room("r1"));
    assert_eq!(out.room.creator, a.uuid());
    assert_eq!(out.room.created_at, h.now);
    assert!(!out.room.locked && !out.room.has_password);
    assert_eq!(h.reg.room_count(), 1);
    assert_eq!(h.reg.members(&room("r1")), Some(vec![]));
    assert_eq!(h.reg.chatroom_members(&room("r1")), Some(vec![]));
    assert_eq!(h.reg.member_counts(), (0, 0));
}

#[test]
fn b_create_room_with_a_taken_uuid_fails_room_already_exists() {
    let mut h = Harness::default();
    h.ok(&alice(), create("r1", true));
    h.fails(&alice(), create("r1", true), Code::ROOM_ALREADY_EXISTS);
    let other = CreateRoom { room_name: "other".into(), ..create("r1", false) };
    h.fails(&bob(), other, Code::ROOM_ALREADY_EXISTS);
    let info = h.reg.room_info(&room("r1")).unwrap();
    assert_eq!((info.room_name.as_str(), info.creator.as_str()), ("room r1", "alice"));
    assert!(info.chatroom_enabled);
    assert_eq!(h.reg.room_count(), 1);
}

#[test]
fn b_create_room_name_and_password_limits_default_to_64_characters() {
    let mut h = Harness::default();
    let a = alice();
    let named = |r: &str, name: String| CreateRoom { room_name: name, ..create(r, true) };
    let pw = |r: &str, pw: String| CreateRoom { password: Some(pw), ..create(r, true) };

    h.ok(&a, named("n64", "x".repeat(64)));
    // The limit is in characters, not bytes.
    h.ok(&a, named("n64b", "é".repeat(64)));
    let e = h.fails(&a, named("n65", "x".repeat(65)), Code::BAD_REQUEST);
    assert!(e.to_string().contains("room_name"), "{e}");
    let e = h.fails(&a, named("n0", String::new()), Code::BAD_REQUEST);
    assert!(e.to_string().contains("room_name"), "{e}");

    h.ok(&a, pw("p64", "x".repeat(64)));
    let e = h.fails(&a, pw("p65", "x".repeat(65)), Code::BAD_REQUEST);
    assert!(e.to_string().contains("password"), "{e}");
    assert!(!e.to_string().contains("room_name"), "{e}");

    let zero = CreateRoom { max_members: Some(0), ..create("m0", true) };
    let e = h.fails(&a, zero, Code::BAD_REQUEST);
    assert!(e.to_string().contains("max_members"), "{e}");

    for r in ["n65", "n0", "p65", "m0"] {
        assert!(h.reg.room_info(&room(r)).is_none(), "{r} was created");
    }
}

#[test]
fn b_create_room_limits_come_from_core_config() {
    let mut h = Harness::new(config(|c| {
        c.max_room_name_chars = 8;
        c.max_password_chars = 4;
    }));
    let a = alice();
    let named = |r: &str, name: &str| CreateRoom { room_name: name.into(), ..create(r, true) };
    let pw = |r: &str, pw: &str| CreateRoom { password: Some(pw.into()), ..create(r, true) };
    h.ok(&a, named("n8", "12345678"));
    let e = h.fails(&a, named("n9", "123456789"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("room_name"), "{e}");
    h.ok(&a, pw("p4", "1234"));
    let e = h.fails(&a, pw("p5", "12345"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("password"), "{e}");
}

// ---- c. join_room --------------------------------------------------------------------------

#[test]
fn c_join_room_announces_the_joiner_to_the_others_only() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.ok(&a, create("r1", true));
    let o = h.ok(&a, join("r1", "Alice"));
    assert!(o.out.deliveries.is_empty(), "nobody else to tell");
    let o = h.ok(&b, join("r1", "Bob"));
    assert_eq!(o.recipients(), set(&[&a]));
    let o = h.ok(&c, join("r1", "Carol"));
    assert_eq!(o.recipients(), set(&[&a, &b]));
    assert_eq!(described(&o.out.deliveries, a.conn), ["join_room carol"]);
    let Event::MemberJoinRoom { members, .. } = &o.events_for(b.conn)[0] else { panic!() };
    assert_eq!((members[0].name.as_str(), members[0].role), ("Carol", Role::Member));
    assert!(!members[0].is_in_chatroom);
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    let names: Vec<_> = out.members.iter().map(|m| m.uuid.to_string()).collect();
    assert_eq!(names, ["alice", "bob", "carol"], "a small room is complete, in join order");
    assert_eq!(out.next_cursor, None);
    assert_eq!(out.room.room_uuid, room("r1"));
    assert_eq!(out.member.uuid, c.uuid());
    assert_eq!(out.host, None, "nobody joined as host");
    assert_eq!(out.counts, roomkit_protocol::MemberCounts { room: 3, chatroom: 0 });

    // Joining again on the same connection changes nothing and tells nobody.
    let o = h.ok(&c, join("r1", "Carol"));
    assert!(o.out.deliveries.is_empty());
    assert_eq!(h.reg.member_counts(), (3, 0));
    // Unknown room.
    h.fails(&c, join("nope", "Carol"), Code::ROOM_NOT_EXIST);
}

#[test]
fn c_join_room_checks_the_password() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    let o = h.ok(&a, CreateRoom { password: Some("secret".into()), ..create("r1", true) });
    let Response::CreateRoom(out) = o.ok() else { panic!() };
    assert!(out.room.has_password);
    h.fails(&b, join_pw("r1", "Bob", None), Code::BAD_PASSWORD);
    h.fails(&b, join_pw("r1", "Bob", Some("Secret")), Code::BAD_PASSWORD);
    h.fails(&b, join_pw("r1", "Bob", Some("")), Code::BAD_PASSWORD);
    assert!(h.members("r1").is_empty());
    h.ok(&b, join_pw("r1", "Bob", Some("secret")));
    assert_eq!(h.members("r1"), [("bob".to_string(), false)]);

    // An empty password at creation means no password.
    h.ok(&a, CreateRoom { password: Some(String::new()), ..create("r2", true) });
    assert!(!h.reg.room_info(&room("r2")).unwrap().has_password);
    h.ok(&b, join("r2", "Bob"));
}

#[test]
fn c_join_room_refuses_newcomers_to_a_locked_room() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.ok(&b, join("r1", "Bob"));
    h.ok(&a, lock("r1"));
    let e = h.fails(&c, join("r1", "Carol"), Code::ROOM_LOCKED);
    assert!(e.to_string().contains("r1"), "{e}");
    // Members are not locked out: rejoining on the same connection, or switching device.
    h.ok(&b, join("r1", "Bob"));
    h.ok(&b.on(12), join("r1", "Bob"));
    h.ok(&a, unlock("r1"));
    h.ok(&c, join("r1", "Carol"));
    assert_eq!(h.members("r1").len(), 3);
}

#[test]
fn c_join_room_refuses_joins_beyond_max_members() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.ok(&a, CreateRoom { max_members: Some(2), ..create("r1", true) });
    h.ok(&a, join("r1", "Alice"));
    h.ok(&b, join("r1", "Bob"));
    let e = h.fails(&c, join("r1", "Carol"), Code::ROOM_FULL);
    assert!(e.to_string().contains('2'), "{e}");
    // A member switching device takes its own place.
    h.ok(&b.on(12), join("r1", "Bob"));
    assert_eq!(h.members("r1").len(), 2);
    h.ok(&b.on(12), leave("r1"));
    h.ok(&c, join("r1", "Carol"));
    assert_eq!(h.members("r1").len(), 2);
}

#[test]
fn c_joining_from_a_second_connection_replaces_the_first() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    let a2 = a.on(11);
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    let o = h.ok(&a2, join("r1", "Alice 2"));
    assert_eq!(
        described(&o.out.deliveries, a.conn),
        ["room_end KickedByOtherDevice"],
        "the old connection is told only that the room ended for it"
    );
    assert_eq!(
        o.events_for(a.conn),
        [Event::RoomEnd { room_uuid: room("r1"), reason: EndReason::KickedByOtherDevice }]
    );
    assert_eq!(
        described(&o.out.deliveries, b.conn),
        ["leave_chatroom alice", "leave_room alice", "join_room alice"]
    );
    assert!(o.events_for(a2.conn).is_empty());
    assert!(o.out.ended.is_empty(), "the room lives on");
    // Alice is a member once, through the new connection, and out of the chatroom.
    assert_eq!(h.members("r1"), [("alice".to_string(), false), ("bob".to_string(), true)]);
    assert_eq!(
        h.reg.members(&room("r1")).unwrap().iter().find(|m| m.name == "Alice 2").unwrap().uuid,
        a.uuid()
    );
    h.fails(&a, join_chat("r1"), Code::NOT_IN_ROOM);
    h.fails(&a, leave("r1"), Code::NOT_IN_ROOM);
    h.ok(&a2, join_chat("r1"));
    // The old connection going away no longer affects the member.
    assert!(h.disconnect(a.conn).is_empty());
    assert_eq!(h.members("r1"), [("alice".to_string(), true), ("bob".to_string(), true)]);
    // The new one does.
    let d = h.disconnect(a2.conn);
    assert_eq!(described(&d.deliveries, b.conn), ["leave_chatroom alice", "leave_room alice"]);
    assert_eq!(h.members("r1"), [("bob".to_string(), true)]);
}

#[test]
fn c_only_the_creator_may_join_as_host() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    h.ok(&a, create("r1", true));
    let e = h.fails(&b, join_host("r1", "Bob"), Code::FORBIDDEN);
    assert!(e.to_string().contains("host"), "{e}");
    assert!(h.members("r1").is_empty());
    let o = h.ok(&a, join_host("r1", "Alice"));
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    assert_eq!(out.members[0].role, Role::Host);
    assert_eq!(out.host.as_ref(), Some(&out.member), "the host joiner is its own host");
    let o = h.ok(&b, join("r1", "Bob"));
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    assert_eq!(out.host.as_ref().map(|m| (m.uuid.to_string(), m.role)), Some(("alice".into(), Role::Host)));
    let roles: BTreeMap<_, _> =
        h.reg.members(&room("r1")).unwrap().into_iter().map(|m| (m.uuid.to_string(), m.role)).collect();
    assert_eq!(roles, BTreeMap::from([("alice".into(), Role::Host), ("bob".into(), Role::Member)]));

    // An admin may join as host, but not while another member holds the role.
    let admin = User {
        id: Identity {
            grants: Grants { room_admin: true, ..Grants::default() },
            ..Identity::unrestricted(uid("root"))
        },
        conn: ConnId(9),
    };
    h.fails(&admin, join_host("r1", "Root"), Code::OVER_ROLE_LIMIT_COUNT);
}

// ---- e, f. join_chatroom -------------------------------------------------------------------

#[test]
fn e_join_chatroom_needs_room_membership_on_this_connection() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a], &[]);
    h.fails(&b, join_chat("r1"), Code::NOT_IN_ROOM);
    // The same user, joined on another connection.
    h.fails(&a.on(11), join_chat("r1"), Code::NOT_IN_ROOM);
    h.fails(&a, join_chat("nope"), Code::ROOM_NOT_EXIST);
    assert!(h.chatroom_members("r1").is_empty());
    assert_eq!(h.members("r1"), [("alice".to_string(), false)]);
}

#[test]
fn e_join_chatroom_is_announced_to_every_room_member_including_the_joiner() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.setup(&a, "r1", &[&a, &b, &c], &[&a]);
    let o = h.ok(&b, join_chat("r1"));
    assert_eq!(o.recipients(), set(&[&a, &b, &c]));
    for u in [&a, &b, &c] {
        let events = o.events_for(u.conn);
        assert_eq!(events.len(), 1);
        let Event::MemberJoinChatroom { room_uuid, members } = &events[0] else { panic!("{events:?}") };
        assert_eq!(room_uuid, &room("r1"));
        assert_eq!(members.len(), 1);
        assert_eq!((members[0].uuid.as_str(), members[0].name.as_str()), ("bob", "bob"));
        assert!(members[0].is_in_chatroom);
    }
    assert_eq!(h.chatroom_members("r1"), ["alice", "bob"]);
    assert_eq!(
        h.members("r1"),
        [("alice".to_string(), true), ("bob".to_string(), true), ("carol".to_string(), false)]
    );
    assert!(h.reg.chatroom_members(&room("r1")).unwrap().iter().all(|m| m.is_in_chatroom));
    assert_eq!(h.reg.member_counts(), (3, 2));
}

#[test]
fn f_join_chatroom_twice_succeeds_without_a_second_event() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a, &b], &[]);
    let first = h.ok(&a, join_chat("r1"));
    assert_eq!(first.recipients(), set(&[&a, &b]));
    let second = h.ok(&a, join_chat("r1"));
    assert!(second.out.deliveries.is_empty(), "{:?}", second.out.deliveries);
    assert_eq!(h.chatroom_members("r1"), ["alice"]);
}

// ---- g. leave_chatroom ---------------------------------------------------------------------

#[test]
fn g_leave_chatroom_is_announced_to_the_others_and_stops_broadcasts() {
    let mut h = Harness::default();
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    h.setup(&a, "r1", &[&a, &b, &c, &d], &[&a, &b, &c]);
    let o = h.ok(&b, leave_chat("r1"));
    assert_eq!(o.recipients(), set(&[&a, &c, &d]), "every other room member, in the chatroom or not");
    for u in [&a, &c, &d] {
        let events = o.events_for(u.conn);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], Event::MemberLeaveChatroom { .. }), "{events:?}");
        assert_eq!(subject(&events[0]), Some(("bob".into(), false)));
    }
    assert_eq!(h.chatroom_members("r1"), ["alice", "carol"]);
    assert!(h.members("r1").contains(&("bob".to_string(), false)));

    let o = h.ok(&a, text("r1", "after"));
    assert_eq!(o.recipients(), set(&[&c]));
    let o = h.ok(&c, text("r1", "after 2"));
    assert_eq!(o.recipients(), set(&[&a]));

    let e = h.fails(&b, leave_chat("r1"), Code::NOT_IN_CHATROOM);
    assert!(e.to_string().contains("r1"), "{e}");
    h.fails(&d, leave_chat("r1"), Code::NOT_IN_CHATROOM);
    h.fails(&User::new("eve", 5), leave_chat("r1"), Code::NOT_IN_ROOM);
}

// ---- h. broadcast messages -----------------------------------------------------------------

#[test]
fn h_broadcast_reaches_the_chatroom_but_not_the_sender_nor_the_rest_of_the_room() {
    let mut h = Harness::default();
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    h.setup(&a, "r1", &[&a, &b, &c, &d], &[&a, &b, &c]);
    let mut seqs = Vec::new();
    for (i, sender) in [&a, &b, &c, &a].into_iter().enumerate() {
        h.advance(10);
        let o = h.ok(sender, text("r1", &format!("hello {i}")));
        let message = o.message();
        let everyone: BTreeSet<_> = [&a, &b, &c].iter().map(|u| u.conn).collect();
        let expected: BTreeSet<_> = everyone.into_iter().filter(|c| *c != sender.conn).collect();
        assert_eq!(o.recipients(), expected, "message {i}");
        for (_, e) in &o.out.deliveries {
            let Event::ChatroomMessagesReceived { room_uuid, messages } = e else { panic!("{e:?}") };
            assert_eq!(room_uuid, &room("r1"));
            assert_eq!(messages, &vec![message.clone()], "recipients get the message of the reply");
        }
        assert_eq!(message.from_user_uuid, sender.uuid());
        assert_eq!(message.from_nick, sender.name());
        assert_eq!(message.text(), Some(format!("hello {i}").as_str()));
        assert_eq!(message.time, h.now);
        assert_eq!(message.to_user_uuid_list, None);
        assert!(!message.message_uuid.as_str().is_empty());
        seqs.push(message.seq);
    }
    let o = h.ok(&b, custom("r1", "{\"k\":1}"));
    assert_eq!(o.recipients(), set(&[&a, &c]));
    seqs.push(o.message().seq);
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let ids: BTreeSet<_> = h
        .ok(&a, fetch("r1", None, None, HistoryOrder::Asc))
        .history()
        .iter()
        .map(|m| m.message_uuid.clone())
        .collect();
    assert_eq!(ids.len(), 5, "server-chosen message uuids are distinct");
}

#[test]
fn h_send_is_refused_outside_the_chatroom_and_for_bad_text() {
    let mut h = Harness::default();
    let (a, b, d) = (alice(), bob(), dave());
    h.setup(&a, "r1", &[&a, &b, &d], &[&a, &b]);
    let e = h.fails(&d, text("r1", "hi"), Code::NOT_IN_CHATROOM);
    assert!(e.to_string().contains("r1"), "{e}");
    h.fails(&User::new("eve", 5), text("r1", "hi"), Code::NOT_IN_ROOM);
    let e = h.fails(&a, text("r1", ""), Code::BAD_REQUEST);
    assert!(e.to_string().contains("text"), "{e}");
    let e = h.fails(&a, custom("r1", ""), Code::BAD_REQUEST);
    assert!(e.to_string().contains("attach_str"), "{e}");
    // Refused messages take no sequence number.
    assert_eq!(h.ok(&a, text("r1", "first")).message().seq, 1);
}

#[test]
fn h_message_length_limit_is_exact_in_bytes() {
    let mut h = Harness::new(config(|c| c.max_message_bytes = 10));
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    let o = h.ok(&a, text("r1", "é".repeat(5).as_str())); // 10 bytes, 5 characters
    assert_eq!(o.recipients(), set(&[&b]));
    let e = h.fails(&a, text("r1", &format!("{}a", "é".repeat(5))), Code::MESSAGE_TOO_LONG);
    assert!(e.to_string().contains("11") && e.to_string().contains("10"), "{e}");
    h.fails(&a, custom("r1", &"x".repeat(11)), Code::MESSAGE_TOO_LONG);
    assert_eq!(h.ok(&a, text("r1", &"x".repeat(10))).message().seq, 2);

    // The default limit: 5 KiB.
    let mut h = Harness::default();
    h.setup(&a, "r1", &[&a], &[&a]);
    h.ok(&a, text("r1", &"x".repeat(5 * 1024)));
    h.fails(&a, text("r1", &"x".repeat(5 * 1024 + 1)), Code::MESSAGE_TOO_LONG);
}

// ---- i. directed messages ------------------------------------------------------------------

#[test]
fn i_directed_messages_reach_exactly_their_recipients() {
    let mut h = Harness::default();
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    h.setup(&a, "r1", &[&a, &b, &c, &d], &[&a, &b, &c]);

    let o = h.ok(&a, direct("r1", &["carol"], "psst"));
    assert_eq!(o.recipients(), set(&[&c]));
    assert_eq!(o.message().to_user_uuid_list, Some(vec![uid("carol")]));
    assert_eq!(o.message().seq, 1);

    let e = h.fails(&a, direct("r1", &["dave"], "psst"), Code::MEMBER_NOT_FOUND);
    assert!(e.to_string().contains("dave"), "{e}");
    let e = h.fails(&a, direct("r1", &["bob", "zed"], "psst"), Code::MEMBER_NOT_FOUND);
    assert!(e.to_string().contains("zed"), "{e}");
    let e = h.fails(&a, direct("r1", &[], "psst"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("to_user_uuid_list"), "{e}");

    let o = h.ok(&c, direct("r1", &["alice", "bob"], "group"));
    assert_eq!(o.recipients(), set(&[&a, &b]));
    assert_eq!(o.message().seq, 2);

    // Duplicates count once; the sender naming itself does not get its own message.
    let o = h.ok(&b, direct("r1", &["carol", "carol", "bob"], "dup"));
    assert_eq!(o.out.deliveries.len(), 1);
    assert_eq!(o.recipients(), set(&[&c]));
    assert_eq!(o.message().to_user_uuid_list, Some(vec![uid("carol"), uid("bob")]));
    assert_eq!(o.message().seq, 3);
}

#[test]
fn i_max_recipients_comes_from_core_config() {
    let mut h = Harness::new(config(|c| c.max_recipients = 2));
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    h.setup(&a, "r1", &[&a, &b, &c, &d], &[&a, &b, &c, &d]);
    h.ok(&a, direct("r1", &["bob", "carol"], "two"));
    let e = h.fails(&a, direct("r1", &["bob", "carol", "dave"], "three"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("to_user_uuid_list"), "{e}");
}

// ---- j. leave_room and idle expiry ---------------------------------------------------------

#[test]
fn j_leave_room_from_the_chatroom_announces_chatroom_then_room_leave() {
    let mut h = Harness::default();
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    h.setup(&a, "r1", &[&a, &b, &c, &d], &[&a, &b]);
    let o = h.ok(&b, leave("r1"));
    for u in [&a, &c, &d] {
        assert_eq!(
            described(&o.out.deliveries, u.conn),
            ["leave_chatroom bob", "leave_room bob"],
            "{}",
            u.name()
        );
        for e in o.events_for(u.conn) {
            assert_eq!(subject(&e), Some(("bob".into(), false)));
        }
    }
    assert!(o.events_for(b.conn).is_empty());
    assert_eq!(h.chatroom_members("r1"), ["alice"]);
    assert_eq!(h.members("r1").len(), 3);

    // Not in the chatroom: only member_leave_room.
    let o = h.ok(&d, leave("r1"));
    assert_eq!(o.recipients(), set(&[&a, &c]));
    assert_eq!(described(&o.out.deliveries, a.conn), ["leave_room dave"]);
    // Leaving twice.
    h.fails(&d, leave("r1"), Code::NOT_IN_ROOM);
    h.fails(&d, leave("nope"), Code::ROOM_NOT_EXIST);
}

const IDLE: u64 = 10_000;

fn idle_harness() -> Harness {
    Harness::new(config(|c| c.room_idle_timeout_ms = IDLE))
}

#[test]
fn j_a_room_never_joined_ends_exactly_at_the_idle_deadline() {
    let mut h = idle_harness();
    let a = alice();
    assert_eq!(h.reg.poll_timeout(), None);
    let t0 = h.now;
    h.ok(&a, create("r1", true));
    assert_eq!(h.reg.poll_timeout(), Some(t0 + IDLE));
    assert!(h.timeout_at(t0 + IDLE - 1).is_empty());
    assert_eq!(h.reg.room_count(), 1);
    let d = h.timeout_at(t0 + IDLE);
    assert_eq!(d.ended, [(room("r1"), EndReason::EndOfLife)]);
    assert!(d.deliveries.is_empty() && d.replies.is_empty());
    assert_eq!(h.reg.room_count(), 0);
    assert_eq!(h.reg.poll_timeout(), None);
    h.fails(&a, join("r1", "Alice"), Code::ROOM_ENDED);
    // A timer run with nothing due does nothing.
    assert!(h.timeout_at(t0 + 10 * IDLE).is_empty());
}

#[test]
fn j_an_emptied_room_ends_idle_timeout_after_its_last_member_left() {
    let mut h = idle_harness();
    let (a, b) = (alice(), bob());
    let t0 = h.now;
    h.setup(&a, "r1", &[&a, &b], &[&a]);
    h.advance(1_000);
    h.ok(&a, leave("r1"));
    h.advance(1_000);
    let left = h.now;
    h.ok(&b, leave("r1"));
    // The creation deadline passes harmlessly: the room has had members since.
    assert!(h.timeout_at(t0 + IDLE).is_empty());
    assert_eq!(h.reg.room_count(), 1);
    assert_eq!(h.reg.poll_timeout(), Some(left + IDLE));
    assert!(h.timeout_at(left + IDLE - 1).is_empty());
    let d = h.timeout_at(left + IDLE);
    assert_eq!(d.ended, [(room("r1"), EndReason::EndOfLife)]);
    assert!(d.deliveries.is_empty());
    h.fails(&a, join_chat("r1"), Code::ROOM_ENDED);
}

#[test]
fn j_a_room_rejoined_before_its_deadline_does_not_end() {
    let mut h = idle_harness();
    let a = alice();
    h.setup(&a, "r1", &[&a], &[]);
    h.advance(1_000);
    let left = h.now;
    h.ok(&a, leave("r1"));
    assert!(h.reg.poll_timeout().is_some_and(|t| t <= left + IDLE));
    h.advance(IDLE / 2);
    h.ok(&a, join("r1", "Alice"));
    assert!(h.timeout_at(left + IDLE).is_empty());
    assert!(h.timeout_at(left + 5 * IDLE).is_empty(), "a room with a member never idles out");
    assert_eq!(h.reg.room_count(), 1);
    // Emptied again: a fresh deadline from then.
    let left_again = h.now;
    h.ok(&a, leave("r1"));
    assert_eq!(h.reg.poll_timeout(), Some(left_again + IDLE));
    assert!(h.timeout_at(left_again + IDLE - 1).is_empty());
    assert_eq!(h.timeout_at(left_again + IDLE).ended, [(room("r1"), EndReason::EndOfLife)]);
}

#[test]
fn j_a_disconnect_emptying_a_room_starts_its_idle_timer() {
    let mut h = idle_harness();
    let a = alice();
    h.setup(&a, "r1", &[&a], &[&a]);
    h.advance(IDLE * 2);
    assert!(h.timeout_at(h.now).is_empty());
    let gone = h.now;
    assert!(h.disconnect(a.conn).is_empty(), "nobody left to tell");
    assert_eq!(h.reg.poll_timeout(), Some(gone + IDLE));
    assert_eq!(h.timeout_at(gone + IDLE).ended, [(room("r1"), EndReason::EndOfLife)]);
}

/// Every leave that empties a room arms its idle timer, and a join cancels it: a room joined
/// and left over and over holds one timer at most, not one per leave (each kept for the whole
/// idle timeout).
#[test]
fn j_join_and_leave_cycles_keep_at_most_one_idle_timer() {
    let mut h = idle_harness();
    let a = alice();
    h.setup(&a, "r1", &[&a], &[]);
    for _ in 0..1000 {
        h.advance(1);
        h.ok(&a, leave("r1"));
        assert_eq!(h.reg.timer_count(), 1, "the emptied room's idle timer");
        h.ok(&a, join("r1", "Alice"));
        assert_eq!(h.reg.timer_count(), 0, "a room with a member needs no idle timer");
    }
    let left = h.now;
    h.ok(&a, leave("r1"));
    assert_eq!(h.timeout_at(left + IDLE).ended, [(room("r1"), EndReason::EndOfLife)]);
    assert_eq!(h.reg.timer_count(), 0);
}

/// A member whose connection keeps dropping and coming back within the grace period holds
/// one grace timer at most; a room that ends takes its timers with it.
#[test]
fn j_reconnect_cycles_keep_one_grace_timer_and_an_ended_room_keeps_none() {
    let mut h = Harness::new(config(|c| c.reconnect_grace_ms = 30_000));
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    let mut conn = b.conn.0;
    for _ in 0..1000 {
        h.advance(1);
        h.disconnect(ConnId(conn));
        assert_eq!(h.reg.timer_count(), 1, "bob's grace period");
        conn += 1;
        h.ok(&b.on(conn), join("r1", "Bob"));
        assert_eq!(h.reg.timer_count(), 0, "bob is back");
    }
    h.disconnect(ConnId(conn));
    assert_eq!(h.reg.timer_count(), 1);
    h.reg.close_room(&room("r1"), EndReason::CloseByBackend).expect("live room");
    assert_eq!(h.reg.timer_count(), 0, "the grace timer of an ended room is gone");
}

// ---- k. ending rooms -----------------------------------------------------------------------

#[test]
fn k_end_room_by_the_host_ends_it_for_every_member() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.ok(&b, join("r1", "Bob"));
    h.ok(&c, join("r1", "Carol"));
    h.ok(&b, join_chat("r1"));
    let e = h.fails(&b, end("r1"), Code::FORBIDDEN);
    assert!(e.to_string().contains("host"), "{e}");
    h.fails(&dave(), end("r1"), Code::NOT_IN_ROOM);
    assert_eq!(h.reg.room_count(), 1);

    let o = h.ok(&a, end("r1"));
    assert_eq!(o.recipients(), set(&[&a, &b, &c]));
    for u in [&a, &b, &c] {
        assert_eq!(
            o.events_for(u.conn),
            [Event::RoomEnd { room_uuid: room("r1"), reason: EndReason::CloseByMember }]
        );
    }
    assert_eq!(o.out.ended, [(room("r1"), EndReason::CloseByMember)]);
    assert_eq!(h.reg.room_count(), 0);
    assert!(h.reg.room_info(&room("r1")).is_none());
    h.fails(&b, join("r1", "Bob"), Code::ROOM_ENDED);
    h.fails(&b, join_chat("r1"), Code::ROOM_ENDED);
    h.fails(&b, text("r1", "hi"), Code::ROOM_ENDED);
    h.fails(&a, end("r1"), Code::ROOM_ENDED);
    // Former members' connections are no longer in the room.
    assert!(h.disconnect(b.conn).is_empty());
    // The uuid may be used again.
    h.ok(&a, create("r1", true));
    h.ok(&b, join("r1", "Bob"));
}

#[test]
fn k_close_room_by_the_backend() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.setup(&a, "r1", &[&a, &b], &[&a]);
    h.setup(&c, "r2", &[&c], &[]);
    h.reg.close_room(&room("r1"), EndReason::CloseByBackend).unwrap();
    let d = h.drain();
    assert!(d.replies.is_empty());
    assert_eq!(d.recipients(), set(&[&a, &b]));
    for u in [&a, &b] {
        assert_eq!(described(&d.deliveries, u.conn), ["room_end CloseByBackend"]);
    }
    assert_eq!(d.ended, [(room("r1"), EndReason::CloseByBackend)]);
    assert_eq!(h.reg.room_count(), 1);
    let err = h.reg.close_room(&room("r1"), EndReason::CloseByBackend).unwrap_err();
    assert_eq!(err.code(), Code::ROOM_ENDED);
    let err = h.reg.close_room(&room("nope"), EndReason::CloseByBackend).unwrap_err();
    assert_eq!(err.code(), Code::ROOM_NOT_EXIST);
    assert!(h.drain().is_empty());
    assert_eq!(h.members("r2"), [("carol".to_string(), false)]);
}

// ---- l. history ----------------------------------------------------------------------------

#[test]
fn l_history_returns_what_the_caller_may_see_in_the_order_asked() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.setup(&a, "r1", &[&a, &b, &c], &[&a, &b, &c]);
    let t0 = h.now;
    let at = |h: &mut Harness, t: u64| h.now = t0 + t;
    at(&mut h, 100);
    h.ok(&a, text("r1", "m1 broadcast"));
    at(&mut h, 200);
    h.ok(&b, direct("r1", &["carol"], "m2 bob to carol"));
    at(&mut h, 300);
    h.ok(&a, direct("r1", &["bob"], "m3 alice to bob"));
    at(&mut h, 400);
    h.ok(&c, direct("r1", &["alice"], "m4 carol to alice"));
    at(&mut h, 500);
    h.ok(&b, custom("r1", "m5 custom"));
    at(&mut h, 600);
    h.ok(&b, text("r1", "m6 broadcast"));

    let q = |h: &mut Harness, start: Option<u64>, limit: Option<u32>, order| {
        let o = h.ok(&a, fetch("r1", start.map(|s| t0 + s), limit, order));
        assert!(o.out.deliveries.is_empty());
        o.history().iter().map(|m| m.seq).collect::<Vec<_>>()
    };
    // Desc (newest first) is the default; m2 is between two others.
    assert_eq!(q(&mut h, None, None, HistoryOrder::default()), [6, 5, 4, 3, 1]);
    assert_eq!(q(&mut h, None, None, HistoryOrder::Asc), [1, 3, 4, 5, 6]);
    // start_time is inclusive: at or before for desc, at or after for asc.
    assert_eq!(q(&mut h, Some(300), None, HistoryOrder::Desc), [3, 1]);
    assert_eq!(q(&mut h, Some(299), None, HistoryOrder::Desc), [1]);
    assert_eq!(q(&mut h, Some(300), None, HistoryOrder::Asc), [3, 4, 5, 6]);
    assert_eq!(q(&mut h, Some(301), None, HistoryOrder::Asc), [4, 5, 6]);
    // limit counts visible messages only.
    assert_eq!(q(&mut h, None, Some(2), HistoryOrder::Desc), [6, 5]);
    assert_eq!(q(&mut h, None, Some(2), HistoryOrder::Asc), [1, 3]);
    assert_eq!(q(&mut h, Some(350), Some(1), HistoryOrder::Desc), [3]);
    assert_eq!(q(&mut h, None, Some(100), HistoryOrder::Asc), [1, 3, 4, 5, 6]);

    // Bob sees m2 (sent) and m3 (received), not m4.
    let seqs: Vec<_> =
        h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 5, 6]);
    let got = h.ok(&c, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 4, 5, 6]);
    assert_eq!(texts(&got[..2]), ["m1 broadcast", "m2 bob to carol"]);
}

#[test]
fn l_history_limit_must_be_1_to_100() {
    let mut h = Harness::default();
    let a = alice();
    h.setup(&a, "r1", &[&a], &[&a]);
    for limit in [0, 101, u32::MAX] {
        let e = h.fails(&a, fetch("r1", None, Some(limit), HistoryOrder::Desc), Code::BAD_REQUEST);
        assert!(e.to_string().contains("limit"), "{e}");
    }
    for limit in [1, 100] {
        h.ok(&a, fetch("r1", None, Some(limit), HistoryOrder::Desc));
    }
    h.fails(&bob(), fetch("r1", None, None, HistoryOrder::Desc), Code::NOT_IN_ROOM);
    h.fails(&a.on(11), fetch("r1", None, None, HistoryOrder::Desc), Code::NOT_IN_ROOM);
    h.fails(&a, fetch("nope", None, None, HistoryOrder::Desc), Code::ROOM_NOT_EXIST);
}

#[test]
fn l_history_ring_evicts_the_oldest_beyond_its_size() {
    let mut h = Harness::new(config(|c| c.history_ring_size = 3));
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    for i in 1..=5 {
        h.advance(1);
        h.ok(&a, text("r1", &format!("m{i}")));
    }
    let got = h.ok(&b, fetch("r1", None, None, HistoryOrder::Desc)).history();
    assert_eq!(texts(&got), ["m5", "m4", "m3"]);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [5, 4, 3]);
    // Directs count toward the ring even for those who cannot see them.
    h.ok(&a, direct("r1", &["alice"], "note to self"));
    let got = h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&got), ["m4", "m5"]);

    // A ring of 0 keeps nothing.
    let mut h = Harness::new(config(|c| c.history_ring_size = 0));
    h.setup(&a, "r1", &[&a], &[&a]);
    h.ok(&a, text("r1", "gone"));
    assert!(h.ok(&a, fetch("r1", None, None, HistoryOrder::Desc)).history().is_empty());
}

#[test]
fn l_history_default_limit_is_100() {
    let mut h = Harness::default();
    let a = alice();
    h.setup(&a, "r1", &[&a], &[&a]);
    for i in 1..=120 {
        h.advance(50); // the member's message rate: 20 per second
        h.ok(&a, text("r1", &format!("m{i}")));
    }
    let got = h.ok(&a, fetch("r1", None, None, HistoryOrder::Desc)).history();
    assert_eq!(got.len(), 100);
    assert_eq!((got[0].seq, got[99].seq), (120, 21));
    let got = h.ok(&a, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!((got[0].seq, got[99].seq), (1, 100));
}

// ---- m. one order for everyone -------------------------------------------------------------

#[test]
fn m_every_member_sees_the_room_events_in_the_same_order() {
    let mut h = Harness::default();
    let (a, b, c, d) = (alice(), bob(), carol(), dave());
    let mut log: Vec<(ConnId, Event)> = Vec::new();
    let mut run = |h: &mut Harness, who: &User, req: roomkit_protocol::ops::Request| {
        let o = h.ok(who, req);
        log.extend(o.out.deliveries);
    };
    run(&mut h, &a, create("r1", true).into());
    run(&mut h, &a, join_host("r1", "alice").into());
    run(&mut h, &b, join("r1", "bob").into());
    run(&mut h, &c, join("r1", "carol").into());
    run(&mut h, &b, join_chat("r1").into());
    run(&mut h, &d, join("r1", "dave").into());
    run(&mut h, &a, set_prop("r1", "topic", "maths").into());
    run(&mut h, &c, join_chat("r1").into());
    run(&mut h, &b, text("r1", "one").into());
    run(&mut h, &a, lock("r1").into());
    run(&mut h, &c, text("r1", "two").into());
    run(&mut h, &d, join_chat("r1").into());
    run(&mut h, &a, join_chat("r1").into());
    run(&mut h, &a, set_prop("r1", "level", "2").into());
    run(&mut h, &b, leave("r1").into());
    run(&mut h, &d, text("r1", "three").into());
    run(&mut h, &c, leave_chat("r1").into());
    run(&mut h, &a, del_prop("r1", "topic").into());
    run(&mut h, &a, unlock("r1").into());
    run(&mut h, &a, text("r1", "four").into());

    let per: BTreeMap<ConnId, Vec<String>> =
        [&a, &b, &c, &d].iter().map(|u| (u.conn, described(&log, u.conn))).collect();
    assert_eq!(
        per[&d.conn],
        strs(&[
            "properties_changed topic=maths",
            "join_chatroom carol",
            "locked true",
            "join_chatroom dave",
            "join_chatroom alice",
            "properties_changed level=2",
            "leave_chatroom bob",
            "leave_room bob",
            "leave_chatroom carol",
            "properties_deleted topic",
            "locked false",
            "message 4",
        ])
    );
    for (x, xs) in &per {
        for (y, ys) in &per {
            let common_x: Vec<_> = xs.iter().filter(|e| ys.contains(e)).collect();
            let common_y: Vec<_> = ys.iter().filter(|e| xs.contains(e)).collect();
            assert_eq!(common_x, common_y, "{x:?} and {y:?} disagree on the order");
        }
    }
    // Each member's events are unique and messages arrive in sequence order.
    for (conn, events) in &per {
        let unique: BTreeSet<_> = events.iter().collect();
        assert_eq!(unique.len(), events.len(), "{conn:?} got a duplicate");
        let seqs: Vec<u64> =
            events.iter().filter_map(|e| e.strip_prefix("message ")).map(|s| s.parse().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{conn:?}: {seqs:?}");
    }
    assert_eq!(per[&a.conn].iter().filter(|e| per[&c.conn].contains(e)).count(), 13);
}

// ---- n. disconnects ------------------------------------------------------------------------

#[test]
fn n_disconnect_leaves_every_room_of_the_connection() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    h.setup(&c, "r2", &[&c, &a], &[&c]);
    h.setup(&c, "r3", &[&c], &[]);
    let d = h.disconnect(a.conn);
    assert!(d.replies.is_empty() && d.ended.is_empty());
    assert_eq!(described(&d.deliveries, b.conn), ["leave_chatroom alice", "leave_room alice"]);
    assert!(d.deliveries.iter().filter(|(c, _)| *c == b.conn).all(|(_, e)| e.room_uuid() == &room("r1")));
    assert_eq!(described(&d.deliveries, c.conn), ["leave_room alice"]);
    assert!(d.deliveries.iter().filter(|(x, _)| *x == c.conn).all(|(_, e)| e.room_uuid() == &room("r2")));
    assert!(d.events_for(a.conn).is_empty());
    assert_eq!(h.members("r1"), [("bob".to_string(), true)]);
    assert_eq!(h.members("r2"), [("carol".to_string(), true)]);
    assert_eq!(h.reg.member_counts(), (3, 2));
    // Twice, or an unknown connection: nothing.
    assert!(h.disconnect(a.conn).is_empty());
    assert!(h.disconnect(ConnId(999)).is_empty());
    // The user may come back on a new connection.
    let a2 = a.on(11);
    let o = h.ok(&a2, join("r1", "Alice"));
    assert_eq!(described(&o.out.deliveries, b.conn), ["join_room alice"]);
}

#[test]
fn n_disconnect_after_leaving_a_room_leaves_only_the_remaining_ones() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    h.setup(&a, "r1", &[&a, &b], &[]);
    h.setup(&a, "r2", &[&a, &b], &[]);
    h.ok(&a, leave("r1"));
    let d = h.disconnect(a.conn);
    assert_eq!(described(&d.deliveries, b.conn), ["leave_room alice"]);
    assert_eq!(d.deliveries[0].1.room_uuid(), &room("r2"));
    assert_eq!(h.members("r1"), [("bob".to_string(), false)]);
    assert_eq!(h.members("r2"), [("bob".to_string(), false)]);
}

// ---- lock, properties, grants --------------------------------------------------------------

#[test]
fn lock_and_unlock_tell_every_member_once() {
    let mut h = Harness::default();
    let (a, b, c) = (alice(), bob(), carol());
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.ok(&b, join("r1", "Bob"));
    h.ok(&c, join("r1", "Carol"));
    let o = h.ok(&a, lock("r1"));
    assert_eq!(o.out.deliveries.len(), 3);
    for u in [&a, &b, &c] {
        assert_eq!(
            o.events_for(u.conn),
            [Event::RoomLockStateChanged { room_uuid: room("r1"), locked: true }]
        );
    }
    assert!(h.reg.room_info(&room("r1")).unwrap().locked);
    assert!(h.ok(&a, lock("r1")).out.deliveries.is_empty(), "unchanged: no event");
    h.fails(&b, lock("r1"), Code::FORBIDDEN);
    h.fails(&b, unlock("r1"), Code::FORBIDDEN);
    h.fails(&dave(), unlock("r1"), Code::NOT_IN_ROOM);
    let o = h.ok(&a, unlock("r1"));
    assert_eq!(o.recipients(), set(&[&a, &b, &c]));
    assert_eq!(described(&o.out.deliveries, c.conn), ["locked false"]);
    assert!(!h.reg.room_info(&room("r1")).unwrap().locked);
    assert!(h.ok(&a, unlock("r1")).out.deliveries.is_empty());
    h.fails(&a, lock("nope"), Code::ROOM_NOT_EXIST);
}

#[test]
fn room_properties_are_host_only_and_announced() {
    let mut h = Harness::default();
    let (a, b) = (alice(), bob());
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.ok(&b, join("r1", "Bob"));
    let o = h.ok(&a, set_prop("r1", "topic", "maths"));
    for u in [&a, &b] {
        assert_eq!(
            o.events_for(u.conn),
            [Event::RoomPropertiesChanged {
                room_uuid: room("r1"),
                properties: [("topic".to_string(), "maths".to_string())].into(),
            }]
        );
    }
    assert_eq!(
        h.reg.room_info(&room("r1")).unwrap().properties.get("topic").map(String::as_str),
        Some("maths")
    );
    h.fails(&b, set_prop("r1", "topic", "art"), Code::FORBIDDEN);
    h.fails(&b, del_prop("r1", "topic"), Code::FORBIDDEN);
    h.fails(&carol(), set_prop("r1", "topic", "art"), Code::NOT_IN_ROOM);
    let e = h.fails(&a, set_prop("r1", "", "x"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("key"), "{e}");
    h.ok(&a, set_prop("r1", &"k".repeat(64), "x"));
    h.fails(&a, set_prop("r1", &"k".repeat(65), "x"), Code::BAD_REQUEST);
    h.fails(&a, set_prop("r1", "big", &"v".repeat(4097)), Code::BAD_REQUEST);

    let o = h.ok(&a, del_prop("r1", "topic"));
    assert_eq!(o.recipients(), set(&[&a, &b]));
    assert_eq!(
        o.events_for(b.conn),
        [Event::RoomPropertiesDeleted { room_uuid: room("r1"), keys: vec!["topic".into()] }]
    );
    assert!(!h.reg.room_info(&room("r1")).unwrap().properties.contains_key("topic"));
    assert!(h.ok(&a, del_prop("r1", "topic")).out.deliveries.is_empty(), "deleting nothing tells nobody");
}

#[test]
fn room_property_count_limit_comes_from_core_config() {
    let mut h = Harness::new(config(|c| c.max_properties = 2));
    let a = alice();
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.ok(&a, set_prop("r1", "k1", "v"));
    h.ok(&a, set_prop("r1", "k2", "v"));
    h.fails(&a, set_prop("r1", "k3", "v"), Code::BAD_REQUEST);
    h.ok(&a, set_prop("r1", "k2", "changed"));
    let props = [("k1", "v"), ("k2", "v"), ("k3", "v")].map(|(k, v)| (k.to_string(), v.to_string()));
    let too_many = CreateRoom { initial_room_properties: props.into(), ..create("r2", true) };
    h.fails(&a, too_many, Code::BAD_REQUEST);
}

#[test]
fn room_property_key_limit_is_in_bytes_for_updates_as_for_creation() {
    let mut h = Harness::default();
    let a = alice();
    let key = "é".repeat(64); // 64 characters, 128 bytes: over the 64-byte limit
    let props = [(key.clone(), "v".to_string())].into();
    h.fails(&a, CreateRoom { initial_room_properties: props, ..create("r0", true) }, Code::BAD_REQUEST);
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    h.fails(&a, set_prop("r1", &key, "v"), Code::BAD_REQUEST);
}

#[test]
fn grants_limit_creating_and_joining() {
    let mut h = Harness::default();
    let a = alice();
    let restricted = |grants: Grants, conn| User {
        id: Identity { grants, ..Identity::unrestricted(uid("bob")) },
        conn: ConnId(conn),
    };
    let no_create = restricted(Grants { create_rooms: false, ..Grants::default() }, 2);
    let e = h.fails(&no_create, create("r0", true), Code::FORBIDDEN);
    assert!(e.to_string().contains("creat"), "{e}");
    assert_eq!(h.reg.room_count(), 0);

    h.ok(&a, create("r1", true));
    h.ok(&a, create("r2", true));
    let only_r1 = restricted(Grants { join: RoomGrant::Only(vec![room("r1")]), ..Grants::default() }, 3);
    h.ok(&only_r1, join("r1", "Bob"));
    h.fails(&only_r1, join("r2", "Bob"), Code::FORBIDDEN);
    // Denied before existence is revealed.
    h.fails(&only_r1, join("nope", "Bob"), Code::FORBIDDEN);
    assert_eq!(h.members("r1"), [("bob".to_string(), false)]);
    assert!(h.members("r2").is_empty());
}

#[test]
fn join_room_validates_member_fields() {
    let mut h = Harness::new(config(|c| c.max_user_name_chars = 5));
    let a = alice();
    h.ok(&a, create("r1", true));
    let e = h.fails(&a, join("r1", ""), Code::BAD_REQUEST);
    assert!(e.to_string().contains("user_name"), "{e}");
    let e = h.fails(&a, join("r1", "abcdef"), Code::BAD_REQUEST);
    assert!(e.to_string().contains("user_name"), "{e}");
    h.ok(&a, join("r1", "abcde"));
}

#[test]
fn ping_and_login_are_not_room_operations() {
    // The connection answers them before they would reach the registry.
    let mut h = Harness::default();
    let a = alice();
    let e = h.fails(&a, roomkit_protocol::ops::Ping {}, Code::FORBIDDEN);
    assert!(e.to_string().contains("not handled by rooms"), "{e}");
    let login = roomkit_protocol::ops::Login { account_id: uid("alice"), token: "t".into() };
    h.fails(&a, login, Code::FORBIDDEN);
    assert_eq!(h.reg.room_count(), 0);
}

// ---- model-based property test -------------------------------------------------------------

const ROOMS: usize = 3;
const USERS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    JoinRoom(usize, usize),
    LeaveRoom(usize, usize),
    JoinChatroom(usize, usize),
    LeaveChatroom(usize, usize),
    Broadcast(usize, usize),
    Direct(usize, usize, usize),
    Disconnect(usize),
    /// The user starts using a new connection; the old one stays open (and in its rooms).
    NewDevice(usize),
    /// The registry's timers run (presence digests come due).
    Tick,
}

/// The model's presence thresholds: per-member events up to 3 members, digests above, back to
/// per-member events at 1 member or fewer (34 % hysteresis); a digest 3 ms after the first
/// change. Small, so that random sequences cross them both ways.
const PER_MEMBER_MAX: usize = 3;
const PER_MEMBER_BACK: usize = 1;
const DIGEST_MS: u64 = 3;

fn model_config() -> CoreConfig {
    config(|c| {
        c.presence_per_member_max = PER_MEMBER_MAX;
        c.presence_hysteresis_percent = 34;
        c.presence_digest_ms = DIGEST_MS;
        // Rates have tests of their own; a random sequence may send in bursts.
        c.member_message_rate = roomkit_core::MessageRate::UNLIMITED;
    })
}

/// A digest being gathered by the model: when it is due, and joined / left room / chatroom.
#[derive(Debug, Clone, Default)]
struct ModelDigest {
    due: u64,
    counts: [u64; 4],
}

/// An operation, and whether to steer it (see [`Model::steer`]) towards an actor for whom it
/// succeeds: without steering, most random operations would fail.
fn op_strategy() -> impl Strategy<Value = (Op, bool)> {
    let ur = (0..USERS, 0..ROOMS);
    let op = prop_oneof![
        8 => ur.clone().prop_map(|(u, r)| Op::JoinRoom(u, r)),
        2 => ur.clone().prop_map(|(u, r)| Op::LeaveRoom(u, r)),
        6 => ur.clone().prop_map(|(u, r)| Op::JoinChatroom(u, r)),
        2 => ur.clone().prop_map(|(u, r)| Op::LeaveChatroom(u, r)),
        5 => ur.clone().prop_map(|(u, r)| Op::Broadcast(u, r)),
        3 => (0..USERS, 0..ROOMS, 0..USERS).prop_map(|(u, r, t)| Op::Direct(u, r, t)),
        1 => (0..USERS).prop_map(Op::Disconnect),
        1 => (0..USERS).prop_map(Op::NewDevice),
        2 => Just(Op::Tick),
    ];
    (op, proptest::bool::weighted(0.8))
}

fn uname(u: usize) -> String {
    format!("u{u}")
}
fn rname(r: usize) -> String {
    format!("r{r}")
}

/// Per recipient, the events expected, as `"r1: leave_room u2"` strings.
type Expected = BTreeMap<ConnId, Vec<String>>;

/// The model: who is in which room through which connection, and who is in its chatroom.
#[derive(Debug)]
struct Model {
    /// Per room: user → (connection, in chatroom).
    rooms: Vec<BTreeMap<usize, (ConnId, bool)>>,
    /// Per connection: its rooms, in join order (for disconnects).
    conn_rooms: HashMap<ConnId, Vec<usize>>,
    /// Per user: its connections; the last one is the one in use.
    devices: Vec<Vec<ConnId>>,
    next_conn: u64,
    /// Per room: the last sequence number.
    seq: Vec<u64>,
    /// Per room: whether it is in digest mode, and its pending digest.
    digest_mode: Vec<bool>,
    pending: Vec<Option<ModelDigest>>,
    /// The time, as the harness has it.
    now: u64,
}

impl Model {
    fn new() -> Self {
        Self {
            rooms: vec![BTreeMap::new(); ROOMS],
            conn_rooms: HashMap::new(),
            devices: (0..USERS).map(|u| vec![ConnId(u as u64 + 1)]).collect(),
            next_conn: 100,
            seq: vec![0; ROOMS],
            digest_mode: vec![false; ROOMS],
            pending: vec![None; ROOMS],
            now: 0,
        }
    }

    /// Exact counts of room `r`: members, and of them in the chatroom.
    fn counts(&self, r: usize) -> (u64, u64) {
        let m = &self.rooms[r];
        (m.len() as u64, m.values().filter(|x| x.1).count() as u64)
    }

    /// Sends room `r`'s pending digest to every member, if there is one.
    fn flush(&mut self, ex: &mut Expected, r: usize) {
        let Some(d) = self.pending[r].take() else { return };
        let (room, chat) = self.counts(r);
        let [j, l, cj, cl] = d.counts;
        for (c, _) in self.rooms[r].values() {
            Self::push(ex, *c, r, format!("members_changed {room}/{chat} +{j} -{l} chat +{cj} -{cl}"));
        }
    }

    /// Room `r` is about to have `count` members: a change of mode sends the pending digest.
    fn resize(&mut self, ex: &mut Expected, r: usize, count: usize) {
        let digest = if self.digest_mode[r] { count > PER_MEMBER_BACK } else { count > PER_MEMBER_MAX };
        if digest != self.digest_mode[r] {
            self.flush(ex, r);
            self.digest_mode[r] = digest;
        }
    }

    /// Counts change `i` (0 joined, 1 left, 2 entered the chatroom, 3 left it) in the digest.
    fn record(&mut self, r: usize, i: usize) {
        let due = self.now + DIGEST_MS;
        self.pending[r].get_or_insert_with(|| ModelDigest { due, ..Default::default() }).counts[i] += 1;
    }

    fn conn(&self, u: usize) -> ConnId {
        *self.devices[u].last().expect("a user always has a connection")
    }

    fn fresh_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Re-targets `op` at a user and room for which it succeeds, if there are any: among the
    /// `(user, room)` pairs that qualify, takes the `n mod len`-th, `n` coming from the op.
    fn steer(&self, op: &Op) -> Op {
        let pairs = |ok: &dyn Fn(usize, usize) -> bool| -> Vec<(usize, usize)> {
            (0..USERS).flat_map(|u| (0..ROOMS).map(move |r| (u, r))).filter(|(u, r)| ok(*u, *r)).collect()
        };
        let pick = |n: usize, cands: Vec<(usize, usize)>| (!cands.is_empty()).then(|| cands[n % cands.len()]);
        let here = |u: usize, r: usize| self.member_here(u, r).ok();
        let in_chat = |u: usize, r: usize| here(u, r) == Some(true);
        let steered = match *op {
            Op::JoinRoom(u, r) => {
                pick(u * ROOMS + r, pairs(&|x, r| here(x, r).is_none())).map(|(u, r)| Op::JoinRoom(u, r))
            }
            Op::LeaveRoom(u, r) => {
                pick(u * ROOMS + r, pairs(&|x, r| here(x, r).is_some())).map(|(u, r)| Op::LeaveRoom(u, r))
            }
            Op::JoinChatroom(u, r) => pick(u * ROOMS + r, pairs(&|x, r| here(x, r) == Some(false)))
                .map(|(u, r)| Op::JoinChatroom(u, r)),
            Op::LeaveChatroom(u, r) => {
                pick(u * ROOMS + r, pairs(&in_chat)).map(|(u, r)| Op::LeaveChatroom(u, r))
            }
            Op::Broadcast(u, r) => pick(u * ROOMS + r, pairs(&in_chat)).map(|(u, r)| Op::Broadcast(u, r)),
            Op::Direct(u, r, t) => pick(u * ROOMS + r, pairs(&in_chat)).map(|(u, r)| {
                let targets = pairs(&|x, rr| rr == r && self.rooms[r].get(&x).is_some_and(|m| m.1));
                Op::Direct(u, r, pick(t, targets).map_or(t, |(t, _)| t))
            }),
            Op::Disconnect(u) => {
                pick(u, pairs(&|x, r| r == 0 && self.conn_rooms.contains_key(&self.conn(x))))
                    .map(|(u, _)| Op::Disconnect(u))
            }
            Op::NewDevice(_) | Op::Tick => None,
        };
        steered.unwrap_or_else(|| op.clone())
    }

    fn push(ex: &mut Expected, to: ConnId, r: usize, what: String) {
        ex.entry(to).or_default().push(format!("{}: {what}", rname(r)));
    }

    /// `u` is a member of `r` through its current connection; else NOT_IN_ROOM.
    fn member_here(&self, u: usize, r: usize) -> Result<bool, Code> {
        match self.rooms[r].get(&u) {
            Some((c, chat)) if *c == self.conn(u) => Ok(*chat),
            _ => Err(Code::NOT_IN_ROOM),
        }
    }

    fn remove(&mut self, ex: &mut Expected, u: usize, r: usize, kicked: bool) {
        self.resize(ex, r, self.rooms[r].len() - 1);
        let (conn, chat) = self.rooms[r].remove(&u).expect("member");
        let others: Vec<ConnId> = self.rooms[r].values().map(|(c, _)| *c).collect();
        if self.digest_mode[r] {
            if chat {
                self.record(r, 3);
            }
            self.record(r, 1);
        } else {
            if chat {
                for o in &others {
                    Self::push(ex, *o, r, format!("leave_chatroom {}", uname(u)));
                }
            }
            for o in &others {
                Self::push(ex, *o, r, format!("leave_room {}", uname(u)));
            }
        }
        if kicked {
            Self::push(ex, conn, r, "room_end KickedByOtherDevice".into());
        }
        if let Some(list) = self.conn_rooms.get_mut(&conn) {
            list.retain(|x| *x != r);
            if list.is_empty() {
                self.conn_rooms.remove(&conn);
            }
        }
    }

    /// Applies `op`; returns the expected reply (None for non-requests), the expected events
    /// and, for a successful send, the expected sequence number.
    fn apply(&mut self, op: &Op) -> (Option<Result<(), Code>>, Expected, Option<u64>) {
        let mut ex = Expected::new();
        let mut seq = None;
        let reply = match *op {
            Op::JoinRoom(u, r) => {
                let conn = self.conn(u);
                match self.rooms[r].get(&u).map(|(c, _)| *c) {
                    Some(c) if c == conn => {}
                    previous => {
                        if previous.is_some() {
                            self.remove(&mut ex, u, r, true);
                        }
                        self.resize(&mut ex, r, self.rooms[r].len() + 1);
                        if self.digest_mode[r] {
                            self.record(r, 0);
                        } else {
                            for (c, _) in self.rooms[r].values() {
                                Self::push(&mut ex, *c, r, format!("join_room {}", uname(u)));
                            }
                        }
                        self.rooms[r].insert(u, (conn, false));
                        self.conn_rooms.entry(conn).or_default().push(r);
                    }
                }
                Some(Ok(()))
            }
            Op::LeaveRoom(u, r) => Some(self.member_here(u, r).map(|_| self.remove(&mut ex, u, r, false))),
            Op::JoinChatroom(u, r) => Some(self.member_here(u, r).map(|chat| {
                if !chat {
                    self.rooms[r].get_mut(&u).expect("member").1 = true;
                    if self.digest_mode[r] {
                        self.record(r, 2);
                    } else {
                        for (c, _) in self.rooms[r].values() {
                            Self::push(&mut ex, *c, r, format!("join_chatroom {}", uname(u)));
                        }
                    }
                }
            })),
            Op::LeaveChatroom(u, r) => Some(match self.member_here(u, r) {
                Err(e) => Err(e),
                Ok(false) => Err(Code::NOT_IN_CHATROOM),
                Ok(true) => {
                    self.rooms[r].get_mut(&u).expect("member").1 = false;
                    if self.digest_mode[r] {
                        self.record(r, 3);
                    } else {
                        for (other, (c, _)) in &self.rooms[r] {
                            if *other != u {
                                Self::push(&mut ex, *c, r, format!("leave_chatroom {}", uname(u)));
                            }
                        }
                    }
                    Ok(())
                }
            }),
            Op::Broadcast(u, r) | Op::Direct(u, r, _) => {
                let target = match *op {
                    Op::Direct(_, _, t) => Some(t),
                    _ => None,
                };
                Some(match self.member_here(u, r) {
                    Err(e) => Err(e),
                    Ok(false) => Err(Code::NOT_IN_CHATROOM),
                    Ok(true) if target.is_some_and(|t| !self.rooms[r].get(&t).is_some_and(|m| m.1)) => {
                        Err(Code::MEMBER_NOT_FOUND)
                    }
                    Ok(true) => {
                        self.seq[r] += 1;
                        seq = Some(self.seq[r]);
                        for (other, (c, chat)) in &self.rooms[r] {
                            let wanted = match target {
                                None => *chat,
                                Some(t) => *other == t,
                            };
                            if wanted && *other != u {
                                Self::push(&mut ex, *c, r, format!("message {}", self.seq[r]));
                            }
                        }
                        Ok(())
                    }
                })
            }
            Op::Disconnect(u) => {
                let conn = self.conn(u);
                for r in self.conn_rooms.get(&conn).cloned().unwrap_or_default() {
                    assert_eq!(self.rooms[r].get(&u).map(|m| m.0), Some(conn), "model: tracked rooms agree");
                    self.remove(&mut ex, u, r, false);
                }
                assert!(!self.conn_rooms.contains_key(&conn));
                self.devices[u].pop();
                if self.devices[u].is_empty() {
                    let fresh = self.fresh_conn();
                    self.devices[u].push(fresh);
                }
                None
            }
            Op::NewDevice(u) => {
                let fresh = self.fresh_conn();
                self.devices[u].push(fresh);
                None
            }
            Op::Tick => {
                // Due digests go out in the order they came due.
                let mut due: Vec<(u64, usize)> = (0..ROOMS)
                    .filter_map(|r| self.pending[r].as_ref().map(|d| (d.due, r)))
                    .filter(|(at, _)| *at <= self.now)
                    .collect();
                due.sort();
                for (_, r) in due {
                    self.flush(&mut ex, r);
                }
                None
            }
        };
        (reply, ex, seq)
    }
}

fn actual_events(deliveries: &[(ConnId, Event)]) -> Result<Expected, TestCaseError> {
    let mut got = Expected::new();
    for (conn, e) in deliveries {
        if let Some((who, in_chat)) = subject(e) {
            let should = matches!(e, Event::MemberJoinChatroom { .. });
            prop_assert_eq!(in_chat, should, "is_in_chatroom of {} in {:?}", who, e);
        }
        got.entry(*conn).or_default().push(format!("{}: {}", e.room_uuid(), describe(e)));
    }
    Ok(got)
}

fn run_model(ops: &[(Op, bool)]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(model_config());
    let owner = User::new("owner", 1_000);
    for r in 0..ROOMS {
        h.ok(&owner, create(&rname(r), true));
    }
    let mut model = Model::new();
    for (step, (op, steer)) in ops.iter().enumerate() {
        let op = &if *steer { model.steer(op) } else { op.clone() };
        h.advance(1);
        model.now = h.now;
        let (user, room_ix) = match *op {
            Op::JoinRoom(u, r)
            | Op::LeaveRoom(u, r)
            | Op::JoinChatroom(u, r)
            | Op::LeaveChatroom(u, r)
            | Op::Broadcast(u, r)
            | Op::Direct(u, r, _) => (u, Some(r)),
            Op::Disconnect(u) | Op::NewDevice(u) => (u, None),
            Op::Tick => (0, None),
        };
        let who = User { id: Identity::unrestricted(uid(&uname(user))), conn: model.conn(user) };
        let r = room_ix.map(rname).unwrap_or_default();
        let request: Option<roomkit_protocol::ops::Request> = match *op {
            Op::JoinRoom(..) => Some(join(&r, &uname(user)).into()),
            Op::LeaveRoom(..) => Some(leave(&r).into()),
            Op::JoinChatroom(..) => Some(join_chat(&r).into()),
            Op::LeaveChatroom(..) => Some(leave_chat(&r).into()),
            Op::Broadcast(..) => Some(text(&r, &format!("step {step}")).into()),
            Op::Direct(_, _, t) => Some(direct(&r, &[&uname(t)], &format!("step {step}")).into()),
            Op::Disconnect(_) | Op::NewDevice(_) | Op::Tick => None,
        };
        let (expected_reply, expected_events, expected_seq) = model.apply(op);
        let deliveries = match request {
            Some(request) => {
                let o = h.req(&who, request);
                prop_assert!(o.out.ended.is_empty());
                let got = o.result.as_ref().map(|_| ()).map_err(|e| e.code());
                prop_assert_eq!(Some(got), expected_reply, "step {}: {:?}", step, op);
                if let Some(seq) = expected_seq {
                    let m = o.message();
                    prop_assert_eq!(m.seq, seq, "step {}: sequence numbers of {} have a gap", step, r);
                    prop_assert_eq!(&m.from_user_uuid, &who.id.user);
                    let want = format!("step {step}");
                    prop_assert_eq!(m.text(), Some(want.as_str()));
                }
                o.out.deliveries
            }
            None => {
                let d = match op {
                    Op::Disconnect(_) => h.disconnect(who.conn),
                    Op::Tick => h.timeout_at(h.now),
                    _ => h.drain(),
                };
                prop_assert!(d.replies.is_empty() && d.ended.is_empty());
                d.deliveries
            }
        };
        prop_assert_eq!(actual_events(&deliveries)?, expected_events, "step {}: {:?}", step, op);

        let mut counts = (0, 0);
        for (ri, members) in model.rooms.iter().enumerate() {
            let want: Vec<(String, bool)> = members.iter().map(|(u, (_, chat))| (uname(*u), *chat)).collect();
            let want_chat: Vec<String> = members.iter().filter(|m| m.1 .1).map(|(u, _)| uname(*u)).collect();
            prop_assert_eq!(h.members(&rname(ri)), want, "step {}: members of r{}", step, ri);
            prop_assert_eq!(h.chatroom_members(&rname(ri)), want_chat, "step {}: chatroom of r{}", step, ri);
            let (in_room, in_chatroom) = model.counts(ri);
            let exact = roomkit_protocol::MemberCounts { room: in_room, chatroom: in_chatroom };
            prop_assert_eq!(
                h.reg.room_counts(&room(&rname(ri))),
                Some(exact),
                "step {}: counts of r{}",
                step,
                ri
            );
            counts.0 += members.len();
            counts.1 += members.values().filter(|m| m.1).count();
        }
        prop_assert_eq!(h.reg.member_counts(), counts);
        prop_assert_eq!(h.reg.room_count(), ROOMS);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn model_random_operation_sequences(ops in prop::collection::vec(op_strategy(), 0..60)) {
        run_model(&ops)?;
    }
}

/// The model run on a fixed sequence that visits every path at least once.
#[test]
fn model_fixed_sequence() {
    use Op::*;
    let ops = [
        JoinRoom(0, 0),
        JoinRoom(1, 0),
        JoinRoom(2, 0),
        JoinChatroom(0, 0),
        JoinChatroom(1, 0),
        Broadcast(0, 0),
        Broadcast(2, 0),
        Direct(0, 0, 1),
        Direct(0, 0, 2),
        JoinRoom(0, 1),
        JoinChatroom(0, 1),
        NewDevice(0),
        Broadcast(0, 0),
        JoinRoom(0, 0),
        JoinChatroom(0, 0),
        Broadcast(0, 0),
        Disconnect(0),
        Broadcast(0, 1),
        Disconnect(0),
        LeaveChatroom(1, 0),
        LeaveChatroom(1, 0),
        LeaveRoom(2, 0),
        LeaveRoom(2, 0),
        Disconnect(1),
        JoinRoom(1, 0),
        // Past the presence threshold (3) and back below its hysteresis (1).
        JoinRoom(2, 0),
        JoinRoom(3, 0),
        JoinRoom(4, 0),
        JoinChatroom(4, 0),
        Tick,
        Tick,
        Tick,
        LeaveRoom(4, 0),
        NewDevice(3),
        JoinRoom(3, 0),
        Tick,
        Tick,
        Tick,
        Tick,
        LeaveRoom(3, 0),
        LeaveRoom(2, 0),
        Disconnect(1),
        Tick,
        JoinRoom(1, 0),
    ];
    let ops: Vec<_> = ops.into_iter().map(|op| (op, false)).collect();
    run_model(&ops).unwrap();
}
