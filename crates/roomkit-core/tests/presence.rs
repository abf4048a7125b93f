//! Presence that adapts to a room's size: per-member events up to `presence_per_member_max`,
//! then one `members_changed` digest per `presence_digest_ms`, then counts and the host only
//! above `presence_count_only_min`, with hysteresis. Small thresholds stand in for the
//! defaults (500 and 20 000); time is advanced, never slept.

mod support;

use roomkit_core::{ConnId, CoreConfig};
use roomkit_protocol::{
    ops::{LeaveChatroom, LeaveRoom},
    Event, MemberCounts, MembersChanged,
};
use support::*;

/// Per-member events up to 5 members, digests above, counts only above 10; back to
/// per-member at 4, back to names at 8; a digest per second naming 2 members per list.
fn small() -> CoreConfig {
    let mut c = CoreConfig::default();
    c.reconnect_grace_ms = 0;
    c.presence_per_member_max = 5;
    c.presence_count_only_min = 10;
    c.presence_digest_names = 2;
    c.presence_digest_ms = 1000;
    c.presence_hysteresis_percent = 20;
    c
}

fn users(n: usize) -> Vec<User> {
    (0..n).map(|i| User::new(&format!("u{i:02}"), 100 + i as u64)).collect()
}

fn digests(deliveries: &[(ConnId, Event)], conn: ConnId) -> Vec<MembersChanged> {
    deliveries
        .iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, e)| match e {
            Event::MembersChanged(d) => Some((**d).clone()),
            _ => None,
        })
        .collect()
}

fn uuids(members: &[roomkit_protocol::RoomMember]) -> Vec<String> {
    members.iter().map(|m| m.uuid.to_string()).collect()
}

/// A room "r" created by `u[0]` (who does not join), joined by `u[1..=n]`.
fn room_of(h: &mut Harness, u: &[User], n: usize) {
    h.ok(&u[0], create("r", true));
    for x in &u[1..=n] {
        h.ok(x, join("r", x.name()));
    }
}

#[test]
fn per_member_events_up_to_the_threshold_then_one_digest_per_interval() {
    let mut h = Harness::new(small());
    let u = users(8);
    h.ok(&u[0], create("r", true));
    for x in &u[1..=5] {
        let o = h.ok(x, join("r", x.name()));
        assert!(o.out.deliveries.iter().all(|(_, e)| matches!(e, Event::MemberJoinRoom { .. })));
    }
    let t0 = h.now;
    let o = h.ok(&u[6], join("r", "six"));
    assert!(o.out.deliveries.is_empty(), "the sixth member is only counted: {:?}", o.out.deliveries);
    assert_eq!(h.reg.poll_timeout(), Some(t0 + 1000), "armed by the first change");
    h.advance(300);
    h.ok(&u[6], join_chat("r"));
    h.advance(300);
    assert!(h.ok(&u[7], join("r", "seven")).out.deliveries.is_empty());
    assert!(h.timeout_at(t0 + 999).deliveries.is_empty(), "not before the interval");
    let d = h.timeout_at(t0 + 1000);
    let everyone: Vec<ConnId> = u[1..=7].iter().map(|x| x.conn).collect();
    assert_eq!(d.recipients(), everyone.iter().copied().collect(), "every member, the joiners too");
    for conn in everyone {
        assert_eq!(digests(&d.deliveries, conn).len(), 1);
    }
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!(digest.counts, MemberCounts { room: 7, chatroom: 1 });
    assert_eq!((digest.joined_count, digest.left_count), (2, 0));
    assert_eq!((digest.chatroom_joined_count, digest.chatroom_left_count), (1, 0));
    assert_eq!(uuids(&digest.joined), ["u06", "u07"]);
    assert_eq!(uuids(&digest.chatroom_joined), ["u06"]);
    assert!(h.timeout_at(t0 + 5000).deliveries.is_empty(), "nothing changed: no digest");

    // The next change arms the next digest, one interval after it.
    let t1 = h.now;
    h.ok(&u[7], LeaveRoom { room_uuid: room("r") });
    assert!(h.timeout_at(t1 + 999).deliveries.is_empty());
    let d = h.timeout_at(t1 + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!((digest.joined_count, digest.left_count, digest.counts.room), (0, 1, 6));
    assert_eq!(uuids(&digest.left), ["u07"]);
    assert!(digests(&d.deliveries, u[7].conn).is_empty(), "the leaver learns from its response");
}

#[test]
fn names_are_capped_and_the_host_is_always_named() {
    let mut h = Harness::new(small());
    let u = users(10);
    room_of(&mut h, &u, 5);
    for x in &u[6..=8] {
        h.ok(x, join("r", x.name()));
    }
    h.ok(&u[0], join_host("r", "Host")); // the creator, joining last as host
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!(digest.joined_count, 4);
    assert_eq!(uuids(&digest.joined), ["u06", "u07", "u00"], "two names, and the host beyond them");
    h.ok(&u[0], LeaveRoom { room_uuid: room("r") });
    h.ok(&u[8], LeaveRoom { room_uuid: room("r") });
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!(uuids(&digest.left), ["u00", "u08"]);
}

#[test]
fn a_member_who_leaves_and_comes_back_within_an_interval_is_named_once_as_present() {
    let mut h = Harness::new(small());
    let u = users(10);
    room_of(&mut h, &u, 6);
    h.ok(&u[2], join_chat("r"));
    h.timeout_at(h.now + 1000);
    // u02 leaves (room and chatroom) and joins the room again; u03 joins from a second
    // device (a leave and a join in one request); u07 joins and leaves.
    h.ok(&u[2], LeaveRoom { room_uuid: room("r") });
    h.ok(&u[2], join("r", "two again"));
    h.ok(&u[3].on(50), join("r", "three elsewhere"));
    h.ok(&u[7], join("r", "seven"));
    h.ok(&u[7], LeaveRoom { room_uuid: room("r") });
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!((digest.joined_count, digest.left_count), (3, 3), "every change is counted");
    assert_eq!(uuids(&digest.joined), ["u02", "u03"], "named by their last change");
    assert_eq!(uuids(&digest.left), ["u07"]);
    assert_eq!((digest.chatroom_left_count, uuids(&digest.chatroom_left)), (1, vec!["u02".to_string()]));
    assert_eq!(digest.counts, MemberCounts { room: 6, chatroom: 0 });
}

#[test]
fn a_room_admin_is_named_like_the_host() {
    let mut h = Harness::new(small());
    let u = users(12);
    room_of(&mut h, &u, 10);
    h.timeout_at(h.now + 1000);
    let admin = User {
        id: roomkit_core::Identity {
            grants: roomkit_core::Grants { room_admin: true, ..roomkit_core::Grants::default() },
            ..roomkit_core::Identity::unrestricted(uid("root"))
        },
        conn: ConnId(99),
    };
    h.ok(&u[11], join("r", "eleven")); // 11 members: counts only
    h.ok(&admin, join("r", "Root")); // privileged: named all the same
    h.ok(&admin, join_chat("r"));
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!(uuids(&digest.joined), ["root"]);
    assert_eq!(uuids(&digest.chatroom_joined), ["root"]);
}

#[test]
fn above_the_count_only_threshold_digests_name_the_host_only() {
    let mut h = Harness::new(small());
    let u = users(14);
    room_of(&mut h, &u, 10);
    h.timeout_at(h.now + 1000);
    h.ok(&u[11], join("r", "eleven")); // 11 members: counts only
    h.ok(&u[0], join_host("r", "Host"));
    h.ok(&u[11], join_chat("r"));
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[1].conn)[0];
    assert_eq!(digest.counts, MemberCounts { room: 12, chatroom: 1 });
    assert_eq!((digest.joined_count, digest.chatroom_joined_count), (2, 1));
    assert_eq!(uuids(&digest.joined), ["u00"], "only the host is named");
    assert!(digest.chatroom_joined.is_empty());
}

#[test]
fn hysteresis_keeps_a_room_hovering_at_the_threshold_in_one_mode() {
    let mut h = Harness::new(small());
    let u = users(8);
    room_of(&mut h, &u, 6); // digest mode since the sixth
    h.timeout_at(h.now + 1000);
    for _ in 0..3 {
        // 6 → 5 → 6: still digests, never per-member events.
        let o = h.ok(&u[6], LeaveRoom { room_uuid: room("r") });
        assert!(o.out.deliveries.is_empty(), "{:?}", o.out.deliveries);
        let o = h.ok(&u[6], join("r", "six"));
        assert!(o.out.deliveries.is_empty());
        let d = h.timeout_at(h.now + 1000);
        let digest = &digests(&d.deliveries, u[1].conn)[0];
        assert_eq!((digest.joined_count, digest.left_count, digest.counts.room), (1, 1, 6));
    }
    // 6 → 5 (digest), then → 4: back to per-member; the pending digest goes out first.
    h.ok(&u[6], LeaveRoom { room_uuid: room("r") });
    let o = h.ok(&u[5], LeaveRoom { room_uuid: room("r") });
    assert_eq!(
        described(&o.out.deliveries, u[1].conn),
        ["members_changed 5/0 +0 -1 chat +0 -0", "leave_room u05"],
        "the pending digest, with the counts it describes, then the per-member event"
    );
    // 4 → 5 → 4: per-member both ways.
    let o = h.ok(&u[5], join("r", "five"));
    assert_eq!(described(&o.out.deliveries, u[1].conn), ["join_room u05"]);
    let o = h.ok(&u[5], LeaveRoom { room_uuid: room("r") });
    assert_eq!(described(&o.out.deliveries, u[1].conn), ["leave_room u05"]);
    assert!(h.timeout_at(h.now + 5000).deliveries.is_empty(), "the old digest timer is stale");
}

#[test]
fn chatroom_comings_and_goings_are_digested_too() {
    let mut h = Harness::new(small());
    let u = users(8);
    room_of(&mut h, &u, 6);
    h.timeout_at(h.now + 1000);
    h.ok(&u[1], join_chat("r"));
    h.ok(&u[2], join_chat("r"));
    let o = h.ok(&u[1], LeaveChatroom { room_uuid: room("r") });
    assert!(o.out.deliveries.is_empty());
    h.disconnect(u[2].conn); // leaves the chatroom and the room
    let d = h.timeout_at(h.now + 1000);
    let digest = &digests(&d.deliveries, u[3].conn)[0];
    assert_eq!(digest.counts, MemberCounts { room: 5, chatroom: 0 });
    assert_eq!((digest.chatroom_joined_count, digest.chatroom_left_count), (2, 2));
    assert_eq!(uuids(&digest.chatroom_left), ["u01", "u02"]);
    assert_eq!((uuids(&digest.left), digest.left[0].is_in_chatroom), (vec!["u02".to_string()], false));
}

#[test]
fn a_room_that_ends_sends_no_digest_and_its_timer_does_not_touch_a_new_room() {
    let mut h = Harness::new(small());
    let u = users(8);
    room_of(&mut h, &u, 6);
    h.reg.close_room(&room("r"), roomkit_protocol::EndReason::CloseByBackend).unwrap();
    h.drain();
    let t0 = h.now;
    h.advance(500);
    room_of(&mut h, &u, 6); // the same uuid again; its sixth join arms its own digest
    let d = h.timeout_at(t0 + 1000);
    assert!(d.deliveries.is_empty(), "the ended room's timer is stale: {:?}", d.deliveries);
    let d = h.timeout_at(t0 + 1500);
    assert_eq!(digests(&d.deliveries, u[1].conn).len(), 1);
}

/// A room that ends with a digest pending takes its digest timer with it.
#[test]
fn an_ended_room_leaves_no_digest_timer_behind() {
    let mut h = Harness::new(small());
    let u = users(8);
    room_of(&mut h, &u, 6);
    assert_eq!(h.reg.timer_count(), 1, "the digest of the sixth join");
    h.reg.close_room(&room("r"), roomkit_protocol::EndReason::CloseByBackend).expect("live room");
    assert_eq!(h.reg.timer_count(), 0);
}
