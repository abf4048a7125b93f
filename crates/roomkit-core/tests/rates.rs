//! Message rates and priorities: the per-member rate (`MESSAGE_RATE_LIMITED`), the chatroom's
//! cap (`CHATROOM_RATE_LIMITED`) refusing low-priority messages first and high-priority ones
//! never, the priority core gives each message, and ephemeral messages (`persist: false`):
//! delivered like any message, never stored, numbered, deduplicated or recalled.

mod support;

use roomkit_core::{ConnId, CoreConfig, Grants, Identity, MessageRate, Output};
use roomkit_protocol::{
    ops::{RecallChatroomMessage, Request, SendCustomMessage},
    Code, Event, HistoryOrder, Priority,
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

fn config(f: impl FnOnce(&mut CoreConfig)) -> CoreConfig {
    let mut c = CoreConfig::default();
    c.reconnect_grace_ms = 0;
    f(&mut c);
    c
}

fn ephemeral(r: &str, attach: &str) -> SendCustomMessage {
    SendCustomMessage { persist: false, ..custom(r, attach) }
}

/// Alice (host), Bob and Carol in room "r1" and its chatroom.
fn rig(c: CoreConfig) -> Harness {
    let mut h = Harness::new(c);
    let (a, b, cc) = (alice(), bob(), carol());
    h.ok(&a, create("r1", true));
    h.ok(&a, join_host("r1", "Alice"));
    for x in [&b, &cc] {
        h.ok(x, join("r1", x.name()));
    }
    for x in [&a, &b, &cc] {
        h.ok(x, join_chat("r1"));
    }
    h
}

#[test]
fn a_member_sends_its_burst_then_at_its_rate() {
    let mut h = rig(config(|c| c.member_message_rate = MessageRate { per_second: 20, burst: 40 }));
    let (b, cc) = (bob(), carol());
    for i in 0..40 {
        h.ok(&b, text("r1", &format!("m{i}")));
    }
    let e = h.fails(&b, text("r1", "one too many"), Code::MESSAGE_RATE_LIMITED);
    assert!(e.to_string().contains("20 per second"), "{e}");
    h.fails(&b, ephemeral("r1", "like"), Code::MESSAGE_RATE_LIMITED);
    h.ok(&cc, text("r1", "carol has her own rate"));
    h.advance(49);
    h.fails(&b, text("r1", "still too soon"), Code::MESSAGE_RATE_LIMITED);
    h.advance(1);
    h.ok(&b, text("r1", "one message back every 50 ms"));
    h.fails(&b, text("r1", "and only one"), Code::MESSAGE_RATE_LIMITED);
    // A retry of a stored message is answered again without spending the rate.
    let stored = h.ok(
        &cc,
        roomkit_protocol::ops::SendTextMessage {
            message_uuid: Some("c1".parse().unwrap()),
            ..text("r1", "x")
        },
    );
    for _ in 0..100 {
        let again = h.ok(
            &cc,
            roomkit_protocol::ops::SendTextMessage {
                message_uuid: Some("c1".parse().unwrap()),
                ..text("r1", "x")
            },
        );
        assert_eq!(again.message(), stored.message());
    }
}

#[test]
fn the_chatroom_cap_refuses_low_first_then_normal_and_never_high() {
    let mut h = rig(config(|c| {
        c.member_message_rate = MessageRate::UNLIMITED;
        c.chatroom_message_rate = MessageRate { per_second: 10, burst: 10 };
    }));
    let (a, b) = (alice(), bob());
    for i in 0..5 {
        h.ok(&b, text("r1", &format!("n{i}")));
    }
    // Half the burst is used: low priority is refused, normal is not.
    let e = h.fails(&b, ephemeral("r1", "like"), Code::CHATROOM_RATE_LIMITED);
    assert!(e.to_string().contains("r1"), "{e}");
    for i in 5..10 {
        h.ok(&b, text("r1", &format!("n{i}")));
    }
    h.fails(&b, text("r1", "over the cap"), Code::CHATROOM_RATE_LIMITED);
    // The host's messages, recalls and the backend's are never refused, and still count.
    let hosts = h.ok(&a, text("r1", "from the host"));
    assert_eq!(hosts.message().priority, Priority::High);
    let id = hosts.message().message_uuid.clone();
    let recall = h.ok(&a, RecallChatroomMessage { room_uuid: room("r1"), message_uuid: id });
    let roomkit_protocol::ops::Response::RecallChatroomMessage(recalled) = recall.ok() else { panic!() };
    assert_eq!(recalled.message.priority, Priority::High);
    let backend = h.reg.send_backend_message(h.now, &room("r1"), uid("ops"), "Ops".into(), "notice".into());
    assert_eq!(backend.unwrap().priority, Priority::High);
    h.drain();
    // Three high-priority messages of debt: a normal one fits again after 400 ms, not 100.
    h.advance(399);
    h.fails(&b, text("r1", "debt first"), Code::CHATROOM_RATE_LIMITED);
    h.advance(1);
    h.ok(&b, text("r1", "paid back"));
}

#[test]
fn an_identity_with_the_room_admin_grant_sends_as_the_host() {
    let mut h = rig(config(|c| {
        c.member_message_rate = MessageRate::UNLIMITED;
        c.chatroom_message_rate = MessageRate { per_second: 1, burst: 2 };
    }));
    let admin = User {
        id: Identity {
            grants: Grants { room_admin: true, ..Grants::default() },
            ..Identity::unrestricted(uid("root"))
        },
        conn: ConnId(9),
    };
    h.ok(&admin, join("r1", "Root"));
    h.ok(&admin, join_chat("r1"));
    h.ok(&bob(), text("r1", "a"));
    h.ok(&bob(), text("r1", "b"));
    h.fails(&bob(), text("r1", "c"), Code::CHATROOM_RATE_LIMITED);
    let o = h.ok(&admin, text("r1", "admin"));
    assert_eq!(o.message().priority, Priority::High);
}

#[test]
fn core_sets_each_message_priority() {
    let mut h = rig(CoreConfig::default());
    let (a, b) = (alice(), bob());
    assert_eq!(h.ok(&b, text("r1", "t")).message().priority, Priority::Normal);
    assert_eq!(h.ok(&b, custom("r1", "c")).message().priority, Priority::Normal);
    assert_eq!(h.ok(&b, ephemeral("r1", "e")).message().priority, Priority::Low);
    assert_eq!(
        h.ok(&a, ephemeral("r1", "e")).message().priority,
        Priority::Low,
        "ephemeral is low, even the host's"
    );
    let o = h.ok(&a, text("r1", "t"));
    assert_eq!(o.message().priority, Priority::High);
    let Event::ChatroomMessagesReceived { messages, .. } = &o.events_for(b.conn)[0] else { panic!() };
    assert_eq!(messages[0].priority, Priority::High, "delivered with its priority, for slow readers");
}

#[test]
fn ephemeral_messages_are_delivered_but_not_stored_numbered_or_recallable() {
    let mut h = rig(CoreConfig::default());
    let (a, b, cc) = (alice(), bob(), carol());
    h.ok(&b, text("r1", "stored"));
    let req: Request =
        SendCustomMessage { message_uuid: Some("like-1".parse().unwrap()), ..ephemeral("r1", "like") }.into();
    h.reg.handle_request(h.now, b.conn, &b.id, 500, req.clone());
    assert!(h.reg.take_commit().is_empty(), "no store operation");
    let mut replies = 0;
    while let Some(out) = h.reg.poll_output() {
        if let Output::Reply { result, .. } = out {
            let Ok(roomkit_protocol::ops::Response::SendCustomMessage(o)) = result else { panic!() };
            assert_eq!((o.message.seq, o.message.persist), (0, false));
            replies += 1;
        }
    }
    assert_eq!(replies, 1);
    // No dedupe: the same id twice is delivered twice, to the same audience as any message.
    let o = h.ok(&b, req.clone());
    assert_eq!(o.recipients(), [a.conn, cc.conn].into_iter().collect());
    let o2 = h.ok(&b, req);
    assert_eq!(o2.recipients(), o.recipients());
    let direct = h
        .ok(&b, SendCustomMessage { to_user_uuid_list: Some(vec![uid("carol")]), ..ephemeral("r1", "psst") });
    assert_eq!(direct.recipients(), [cc.conn].into_iter().collect());
    // Without a client id, each gets an id of its own.
    let first = h.ok(&b, ephemeral("r1", "x")).message().message_uuid.clone();
    let second = h.ok(&b, ephemeral("r1", "y")).message().message_uuid.clone();
    assert_ne!(first, second, "same millisecond, distinct ids");
    // Not in history, not numbered: the next stored message follows the last stored one.
    let history = h.ok(&a, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&history), ["stored"]);
    assert_eq!(h.ok(&b, text("r1", "next")).message().seq, 2);
    // Not recallable.
    h.fails(
        &a,
        RecallChatroomMessage { room_uuid: room("r1"), message_uuid: "like-1".parse().unwrap() },
        Code::MESSAGE_NOT_FOUND,
    );
}

#[test]
fn an_ephemeral_message_survives_the_failed_commit_it_queued_behind() {
    let mut h = rig(CoreConfig::default());
    let (a, b) = (alice(), bob());
    h.reg.handle_request(h.now, a.conn, &a.id, 1, text("r1", "lost").into());
    h.reg.handle_request(h.now, b.conn, &b.id, 2, ephemeral("r1", "like").into());
    assert_eq!(h.reg.take_commit().len(), 1, "only the text is stored");
    assert!(h.reg.poll_output().is_none(), "the ephemeral queues behind the pending commit");
    h.reg.handle_commit(Err(roomkit_core::store::StoreError("disk full".into())));
    let mut seen = Vec::new();
    while let Some(out) = h.reg.poll_output() {
        match out {
            Output::Reply { request_id, result, .. } => {
                seen.push(format!("reply {request_id} {:?}", result.map(|_| ()).map_err(|e| e.code())))
            }
            Output::Deliver { event: Event::ChatroomMessagesReceived { messages, .. }, audience } => {
                seen.push(format!("deliver {} to {}", messages[0].seq, audience.len()))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["reply 1 Err(INTERNAL(5001))", "deliver 0 to 2", "reply 2 Ok(())"]);
}

#[test]
fn leaving_and_joining_again_does_not_refill_a_members_rate() {
    let mut h = rig(config(|c| c.member_message_rate = MessageRate { per_second: 20, burst: 40 }));
    let b = bob();
    for i in 0..40 {
        h.ok(&b, text("r1", &format!("m{i}")));
    }
    h.fails(&b, text("r1", "over"), Code::MESSAGE_RATE_LIMITED);
    h.ok(&b, roomkit_protocol::ops::LeaveRoom { room_uuid: room("r1") });
    h.ok(&b, join("r1", "Bob"));
    h.ok(&b, join_chat("r1"));
    h.fails(&b, text("r1", "still over"), Code::MESSAGE_RATE_LIMITED);
    h.advance(50);
    h.ok(&b, text("r1", "the rate refills it as before"));
    // Once the bucket would be full anyway, a member coming back has its whole burst.
    h.ok(&b, roomkit_protocol::ops::LeaveRoom { room_uuid: room("r1") });
    h.advance(2000);
    h.ok(&b, join("r1", "Bob"));
    h.ok(&b, join_chat("r1"));
    for i in 0..40 {
        h.ok(&b, text("r1", &format!("n{i}")));
    }
}

#[test]
fn a_members_recalls_spend_its_own_rate_the_hosts_do_not() {
    let mut h = rig(config(|c| c.member_message_rate = MessageRate { per_second: 1, burst: 2 }));
    let (a, b) = (alice(), bob());
    let first = h.ok(&b, text("r1", "one")).message().message_uuid.clone();
    let second = h.ok(&b, text("r1", "two")).message().message_uuid.clone();
    h.advance(1000);
    h.ok(&b, RecallChatroomMessage { room_uuid: room("r1"), message_uuid: first });
    let e = h.fails(
        &b,
        RecallChatroomMessage { room_uuid: room("r1"), message_uuid: second.clone() },
        Code::MESSAGE_RATE_LIMITED,
    );
    assert!(e.to_string().contains("1 per second"), "{e}");
    h.ok(&a, RecallChatroomMessage { room_uuid: room("r1"), message_uuid: second });
}
