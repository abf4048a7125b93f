//! Member lists of any size: `join_room`'s one page, `fetch_room_members` and
//! `fetch_chatroom_members` paging (stable order, exactly once, cursor and limit errors), and
//! the exact counts of `get_room_info`.

mod support;

use std::collections::BTreeSet;

use roomkit_core::CoreConfig;
use roomkit_protocol::{
    ops::{FetchChatroomMembers, FetchRoomMembers, GetRoomInfo, MembersPage, Response},
    Code, Event, MemberCounts,
};
use support::*;

fn users(n: usize) -> Vec<User> {
    (0..n).map(|i| User::new(&format!("u{i:03}"), 100 + i as u64)).collect()
}

fn fetch_room(r: &str, cursor: Option<&str>, limit: Option<u32>) -> FetchRoomMembers {
    FetchRoomMembers { room_uuid: room(r), cursor: cursor.map(Into::into), limit }
}

fn fetch_chat(r: &str, cursor: Option<&str>, limit: Option<u32>) -> FetchChatroomMembers {
    FetchChatroomMembers { room_uuid: room(r), cursor: cursor.map(Into::into), limit }
}

#[track_caller]
fn page(h: &mut Harness, who: &User, request: impl Into<roomkit_protocol::ops::Request>) -> MembersPage {
    let o = h.ok(who, request);
    match o.ok() {
        Response::FetchRoomMembers(p) | Response::FetchChatroomMembers(p) => p.clone(),
        other => panic!("not a page: {other:?}"),
    }
}

fn names(p: &MembersPage) -> Vec<String> {
    p.members.iter().map(|m| m.uuid.to_string()).collect()
}

fn counts(room: u64, chatroom: u64) -> MemberCounts {
    MemberCounts { room, chatroom }
}

fn harness(join_page: usize) -> Harness {
    let mut c = CoreConfig::default();
    c.reconnect_grace_ms = 0;
    c.join_member_page = join_page;
    Harness::new(c)
}

#[test]
fn a_join_answers_one_page_and_the_rest_is_fetched_in_join_order() {
    let mut h = harness(3);
    let u = users(5);
    h.ok(&u[0], create("r", true));
    for x in &u[..4] {
        h.ok(x, join("r", x.name()));
    }
    h.ok(&u[1], join_chat("r"));
    let o = h.ok(&u[4], join("r", "last"));
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    let first: Vec<_> = out.members.iter().map(|m| m.uuid.to_string()).collect();
    assert_eq!(first, ["u000", "u001", "u002"]);
    assert_eq!(out.member.uuid, u[4].uuid(), "the joiner is in the answer though not on the page");
    assert_eq!(out.counts, counts(5, 1));
    let cursor = out.next_cursor.clone().expect("more members than one page");
    let rest = page(&mut h, &u[4], fetch_room("r", Some(&cursor), None));
    assert_eq!(names(&rest), ["u003", "u004"]);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(rest.counts, counts(5, 1));
    assert!(h.ok(&u[4], fetch_room("r", None, Some(1))).out.deliveries.is_empty(), "fetching tells nobody");
}

#[test]
fn a_room_that_fits_one_join_page_is_complete_without_a_cursor() {
    let mut h = harness(3);
    let u = users(3);
    h.ok(&u[0], create("r", true));
    for x in &u {
        let o = h.ok(x, join("r", x.name()));
        let Response::JoinRoom(out) = o.ok() else { panic!() };
        assert_eq!(out.next_cursor, None);
        assert_eq!(out.members.len() as u64, out.counts.room);
    }
}

#[test]
fn paging_returns_every_member_present_throughout_exactly_once() {
    let mut h = Harness::default();
    let u = users(30);
    h.ok(&u[0], create("r", true));
    for x in &u[..20] {
        h.ok(x, join("r", x.name()));
    }
    let reader = &u[0];
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let p = page(&mut h, reader, fetch_room("r", cursor.as_deref(), Some(4)));
        seen.extend(names(&p));
        // Between pages: one member ahead of the reader's position leaves, one joins.
        round += 1;
        if round <= 3 {
            h.ok(&u[20 + round], join("r", "late"));
            h.ok(&u[20 - round], roomkit_protocol::ops::LeaveRoom { room_uuid: room("r") });
        }
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let distinct: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "nobody twice: {seen:?}");
    for x in &u[..17] {
        assert!(distinct.contains(x.name()), "{} was present throughout and is missing", x.name());
    }
    let order: Vec<_> = seen.iter().filter(|n| n.as_str() < "u017").cloned().collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "join order");
    assert!(distinct.contains("u023"), "joined between pages: on a later page");
    assert!(!distinct.contains("u017"), "left before its page: not returned");
}

#[test]
fn a_member_back_within_the_grace_period_keeps_its_place() {
    let mut c = CoreConfig::default();
    c.reconnect_grace_ms = 1000;
    let mut h = Harness::new(c);
    let u = users(3);
    h.ok(&u[0], create("r", true));
    for x in &u {
        h.ok(x, join("r", x.name()));
    }
    h.disconnect(u[0].conn);
    let back = u[0].on(99);
    h.ok(&back, join("r", "again"));
    let p = page(&mut h, &back, fetch_room("r", None, None));
    assert_eq!(names(&p), ["u000", "u001", "u002"]);
    assert_eq!(p.counts, counts(3, 0));
}

#[test]
fn the_chatroom_pages_in_the_order_members_entered_it() {
    let mut h = Harness::default();
    let u = users(4);
    h.ok(&u[0], create("r", true));
    for x in &u {
        h.ok(x, join("r", x.name()));
    }
    for i in [2, 0, 3] {
        h.ok(&u[i], join_chat("r"));
    }
    let p = page(&mut h, &u[1], fetch_chat("r", None, Some(2)));
    assert_eq!(names(&p), ["u002", "u000"]);
    assert_eq!(p.counts, counts(4, 3));
    let p = page(&mut h, &u[1], fetch_chat("r", p.next_cursor.as_deref(), Some(2)));
    assert_eq!(names(&p), ["u003"]);
    assert_eq!(p.next_cursor, None);
    assert!(p.members.iter().all(|m| m.is_in_chatroom));
}

#[test]
fn bad_cursors_and_limits_are_refused_naming_the_field() {
    let mut h = Harness::default();
    let u = users(3);
    h.ok(&u[0], create("r", true));
    for x in &u {
        h.ok(x, join("r", x.name()));
    }
    for bad in ["abc", "0", "r0", "r007", "r+2", "r4", "r18446744073709551616", "", "2", "r", "c1x"] {
        let e = h.fails(&u[0], fetch_room("r", Some(bad), None), Code::BAD_REQUEST);
        assert!(e.to_string().contains("`cursor`"), "{bad:?}: {e}");
        let e = h.fails(&u[0], fetch_chat("r", Some(bad), None), Code::BAD_REQUEST);
        assert!(e.to_string().contains("`cursor`"), "{bad:?}: {e}");
    }
    for limit in [0, 101] {
        let e = h.fails(&u[0], fetch_room("r", None, Some(limit)), Code::BAD_REQUEST);
        assert!(e.to_string().contains("`limit`"), "{e}");
    }
    assert_eq!(names(&page(&mut h, &u[0], fetch_room("r", None, Some(100)))).len(), 3);
    assert_eq!(names(&page(&mut h, &u[0], fetch_room("r", Some("r3"), None))).len(), 0);
    // A cursor belongs to its list: a room cursor is not a chatroom cursor.
    for x in &u {
        h.ok(x, join_chat("r"));
    }
    let room_cursor = page(&mut h, &u[0], fetch_room("r", None, Some(1))).next_cursor.unwrap();
    let chat_cursor = page(&mut h, &u[0], fetch_chat("r", None, Some(1))).next_cursor.unwrap();
    assert_eq!((room_cursor.as_str(), chat_cursor.as_str()), ("r1", "c1"));
    h.fails(&u[0], fetch_chat("r", Some(&room_cursor), None), Code::BAD_REQUEST);
    h.fails(&u[0], fetch_room("r", Some(&chat_cursor), None), Code::BAD_REQUEST);
}

#[test]
fn only_members_read_members_and_counts() {
    let mut h = Harness::default();
    let (a, b) = (User::new("alice", 1), User::new("bob", 2));
    h.ok(&a, create("r", false));
    h.ok(&a, join("r", "Alice"));
    h.fails(&b, fetch_room("r", None, None), Code::NOT_IN_ROOM);
    h.fails(&b, GetRoomInfo { room_uuid: room("r") }, Code::NOT_IN_ROOM);
    h.fails(&a, fetch_chat("r", None, None), Code::CHATROOM_NOT_ENABLED);
    h.fails(&a, fetch_room("nope", None, None), Code::ROOM_NOT_EXIST);
}

#[test]
fn room_info_counts_are_exact_after_every_change() {
    let mut h = Harness::default();
    let u = users(3);
    h.setup(&u[0], "r", &[&u[0], &u[1], &u[2]], &[&u[0], &u[1]]);
    let info = |h: &mut Harness| {
        let o = h.ok(&u[0], GetRoomInfo { room_uuid: room("r") });
        let Response::GetRoomInfo(out) = o.ok() else { panic!() };
        assert_eq!(out.room.room_uuid, room("r"));
        out.counts
    };
    assert_eq!(info(&mut h), counts(3, 2));
    h.ok(&u[1], roomkit_protocol::ops::LeaveChatroom { room_uuid: room("r") });
    assert_eq!(info(&mut h), counts(3, 1));
    h.disconnect(u[2].conn);
    assert_eq!(info(&mut h), counts(2, 1));
    assert_eq!(h.reg.room_counts(&room("r")), Some(counts(2, 1)));
    assert_eq!(h.reg.member_counts(), (2, 1));
}

#[test]
fn the_registry_pages_members_for_the_admin_api() {
    let mut h = Harness::default();
    let u = users(5);
    h.setup(&u[0], "r", &[&u[0], &u[1], &u[2], &u[3], &u[4]], &[&u[3]]);
    let p = h.reg.room_members_page(&room("r"), None, 2).unwrap();
    assert_eq!(names(&p), ["u000", "u001"]);
    let p = h.reg.room_members_page(&room("r"), p.next_cursor.as_deref(), 1000).unwrap();
    assert_eq!(names(&p), ["u002", "u003", "u004"]);
    assert_eq!(names(&h.reg.chatroom_members_page(&room("r"), None, 10).unwrap()), ["u003"]);
    let e = h.reg.room_members_page(&room("r"), Some("x"), 1).unwrap_err();
    assert_eq!(e.code(), Code::BAD_REQUEST);
    assert_eq!(h.reg.room_members_page(&room("gone"), None, 1).unwrap_err().code(), Code::ROOM_NOT_EXIST);
}

#[test]
fn a_join_answer_names_the_host_even_off_its_page() {
    let mut h = harness(2);
    let u = users(5);
    h.ok(&u[0], create("r", true));
    for x in &u[1..4] {
        h.ok(x, join("r", x.name()));
    }
    h.ok(&u[0], join_host("r", "Host")); // fourth in join order: not on a page of two
    let o = h.ok(&u[4], join("r", "late"));
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    assert_eq!(out.members.iter().map(|m| m.uuid.to_string()).collect::<Vec<_>>(), ["u001", "u002"]);
    assert_eq!(out.host.as_ref().map(|m| m.uuid.to_string()), Some("u000".into()));
    assert_eq!(out.counts, counts(5, 0));
    h.ok(&u[0], roomkit_protocol::ops::LeaveRoom { room_uuid: room("r") });
    let o = h.ok(&u[4], join("r", "late"));
    let Response::JoinRoom(out) = o.ok() else { panic!() };
    assert_eq!(out.host, None, "the host left");
}

#[test]
fn with_pinned_display_names_a_join_takes_the_credentials_name() {
    for pinned in [false, true] {
        let mut config = CoreConfig::default();
        config.pin_display_names = pinned;
        let mut h = Harness::new(config);
        let mut alice = User::new("alice", 1);
        alice.id.name = "Alice".into();
        let mut mallory = User::new("mallory", 2);
        mallory.id.name = "Mallory".into();
        h.ok(&alice, create("r", true));
        h.ok(&alice, join("r", "Alice"));
        // Mallory asks to be called Alice: everyone else sees the name the room kept.
        let o = h.ok(&mallory, join("r", "Alice"));
        let told: Vec<String> = o
            .out
            .events_for(alice.conn)
            .iter()
            .filter_map(|e| match e {
                Event::MemberJoinRoom { members, .. } => Some(members[0].name.clone()),
                _ => None,
            })
            .collect();
        let expected = if pinned { "Mallory" } else { "Alice" };
        assert_eq!(told, [expected], "pinned: {pinned}");
        let names: Vec<String> = h
            .reg
            .members(&room("r"))
            .unwrap()
            .into_iter()
            .map(|m| format!("{} {}", m.uuid, m.name))
            .collect();
        assert_eq!(names, ["alice Alice".to_string(), format!("mallory {expected}")], "pinned: {pinned}");
    }
}

/// A pinned name longer than a member's name may be is cut (at a character boundary) rather
/// than failing every join with `BAD_REQUEST`.
#[test]
fn a_pinned_name_that_is_too_long_is_cut_at_join() {
    let mut config = CoreConfig::default();
    config.pin_display_names = true;
    config.max_user_name_chars = 4;
    let mut h = Harness::new(config);
    let mut alice = User::new("alice", 1);
    alice.id.name = "Ålice Liddell".into();
    h.ok(&alice, create("r", true));
    h.ok(&alice, join("r", "whatever"));
    let names: Vec<String> = h.reg.members(&room("r")).unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["Ålic"]);
}
