//! Recall, and the reconnect grace period: who is told what, and when.

mod support;

use std::sync::Arc;

use roomkit_core::{store::MessageStore, ConnId, CoreConfig, Identity, Output, RoomRegistry};
use roomkit_protocol::{
    ops::{CreateRoom, JoinChatroom, JoinRoom, RecallChatroomMessage, Request, Response, SendTextMessage},
    Code, Event, MessageBody, NotificationType, Role, RoomUuid, SharedMessage,
};

const GRACE: u64 = 30_000;
const WINDOW: u64 = 120_000;

struct Rig {
    reg: RoomRegistry,
    store: Arc<dyn MessageStore>,
    now: u64,
    next: u64,
}

type Delivered = Vec<(ConnId, Event)>;

impl Rig {
    fn new() -> Self {
        let mut config = CoreConfig::default();
        config.reconnect_grace_ms = GRACE;
        config.recall_window_ms = WINDOW;
        let store = support::memory_store(&config);
        Self { reg: RoomRegistry::new(config), store, now: 1_000_000, next: 1 }
    }

    fn drain(&mut self) -> (Option<Result<Response, roomkit_core::Error>>, Delivered) {
        let (mut reply, mut delivered) = (None, Vec::new());
        for o in support::settle(&mut self.reg, self.store.as_ref(), self.now) {
            match o {
                Output::Reply { result, .. } => reply = Some(result),
                Output::Deliver { audience, event } => {
                    delivered.extend(audience.iter().map(|c| (c, event.clone())))
                }
                _ => {}
            }
        }
        (reply, delivered)
    }

    fn req(
        &mut self,
        conn: u64,
        who: &Identity,
        request: impl Into<Request>,
    ) -> (Result<Response, roomkit_core::Error>, Delivered) {
        self.reg.handle_request(self.now, ConnId(conn), who, self.next, request.into());
        self.next += 1;
        let (reply, delivered) = self.drain();
        (reply.expect("a reply"), delivered)
    }

    fn enter(&mut self, conn: u64, who: &Identity, role: Role) {
        let join = JoinRoom {
            room_uuid: r(),
            user_name: who.name.clone(),
            role,
            avatar: None,
            password: None,
            initial_my_properties: Default::default(),
            resume: false,
        };
        self.req(conn, who, join).0.expect("join room");
        self.req(conn, who, JoinChatroom { room_uuid: r(), history_count: None }).0.expect("join chatroom");
    }

    fn send(&mut self, conn: u64, who: &Identity, text: &str) -> SharedMessage {
        let send = SendTextMessage {
            room_uuid: r(),
            message_uuid: None,
            to_user_uuid_list: None,
            text: text.into(),
        };
        match self.req(conn, who, send).0 {
            Ok(Response::SendTextMessage(out)) => out.message,
            other => panic!("{other:?}"),
        }
    }
}

fn r() -> RoomUuid {
    "r".parse().unwrap()
}

fn id(s: &str) -> Identity {
    Identity::unrestricted(s.parse().unwrap())
}

/// A room created by `host`, with host, alice and bob in its chatroom on conns 1, 2, 3.
fn setup() -> (Rig, Identity, Identity, Identity) {
    let (host, alice, bob) = (id("host"), id("alice"), id("bob"));
    let mut rig = Rig::new();
    let create = CreateRoom {
        room_uuid: r(),
        room_name: "R".into(),
        template_id: None,
        max_members: None,
        password: None,
        initial_room_properties: Default::default(),
        enable_chatroom: true,
    };
    rig.req(1, &host, create).0.unwrap();
    rig.enter(1, &host, Role::Host);
    rig.enter(2, &alice, Role::Member);
    rig.enter(3, &bob, Role::Member);
    (rig, host, alice, bob)
}

fn recall(id: &roomkit_protocol::MessageUuid) -> RecallChatroomMessage {
    RecallChatroomMessage { room_uuid: r(), message_uuid: id.clone() }
}

#[test]
fn a_sender_recalls_within_the_window_and_everyone_is_notified() {
    let (mut rig, _host, alice, _bob) = setup();
    let sent = rig.send(2, &alice, "oops");
    rig.now += WINDOW;
    let (reply, delivered) = rig.req(2, &alice, recall(&sent.message_uuid));
    let Ok(Response::RecallChatroomMessage(out)) = reply else { panic!("{reply:?}") };
    match &out.message.body {
        MessageBody::Notification { event_type, recalled_message_id, operate_by } => {
            assert_eq!(*event_type, NotificationType::MessageRecall);
            assert_eq!(recalled_message_id.as_ref(), Some(&sent.message_uuid));
            assert_eq!(operate_by.as_ref(), Some(&alice.user));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.message.seq, sent.seq + 1, "the notification is numbered like any message");
    let receivers: Vec<ConnId> = delivered.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        receivers,
        vec![ConnId(1), ConnId(2), ConnId(3)],
        "every chatroom member, the recaller included"
    );
    // History shows the original as recalled, its text gone.
    let fetch = roomkit_protocol::ops::FetchChatroomHistory {
        room_uuid: r(),
        start_time: None,
        limit: None,
        order: Default::default(),
        after_seq: Some(0),
        cursor: None,
    };
    let Ok(Response::FetchChatroomHistory(page)) = rig.req(3, &id("bob"), fetch).0 else { panic!() };
    let original = page.messages.iter().find(|m| m.seq == sent.seq).expect("still in history");
    assert!(original.recalled);
    assert_eq!(original.text(), Some(""));
}

#[test]
fn recall_outside_the_window_is_forbidden_but_the_host_may_recall_anything() {
    let (mut rig, host, alice, bob) = setup();
    let sent = rig.send(2, &alice, "old news");
    rig.now += WINDOW + 1;
    let (reply, delivered) = rig.req(2, &alice, recall(&sent.message_uuid));
    assert_eq!(reply.unwrap_err().code(), Code::FORBIDDEN);
    assert!(delivered.is_empty());
    let (reply, _) = rig.req(3, &bob, recall(&sent.message_uuid));
    assert_eq!(reply.unwrap_err().code(), Code::FORBIDDEN, "not the sender, not the host");
    let (reply, delivered) = rig.req(1, &host, recall(&sent.message_uuid));
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(delivered.len(), 3);
}

#[test]
fn recalling_an_unknown_message_names_it() {
    let (mut rig, _host, alice, _bob) = setup();
    let (reply, _) = rig.req(2, &alice, recall(&"nope".parse().unwrap()));
    let e = reply.unwrap_err();
    assert_eq!(e.code(), Code::MESSAGE_NOT_FOUND);
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn a_drop_and_rejoin_inside_the_grace_period_is_invisible() {
    let (mut rig, _host, alice, _bob) = setup();
    rig.reg.handle_disconnect(rig.now, ConnId(2));
    let (_, delivered) = rig.drain();
    assert!(delivered.is_empty(), "nobody is told of the drop: {delivered:?}");
    // Messages meanwhile go to the others; the gone connection is simply not reached.
    rig.now += GRACE - 1;
    rig.reg.handle_timeout(rig.now);
    assert!(rig.drain().1.is_empty());
    // Back on a new connection: silently in its place, still in the chatroom.
    let join = JoinRoom {
        room_uuid: r(),
        user_name: "alice".into(),
        role: Role::Member,
        avatar: None,
        password: None,
        initial_my_properties: Default::default(),
        resume: false,
    };
    let (reply, delivered) = rig.req(4, &alice, join);
    assert!(reply.is_ok());
    assert!(delivered.is_empty(), "no join event either: {delivered:?}");
    let (reply, delivered) = rig.req(4, &alice, JoinChatroom { room_uuid: r(), history_count: None });
    assert!(reply.is_ok() && delivered.is_empty(), "already in the chatroom");
    // Live messages reach the new connection.
    let (_, delivered) = {
        let send = SendTextMessage {
            room_uuid: r(),
            message_uuid: None,
            to_user_uuid_list: None,
            text: "hi".into(),
        };
        rig.req(3, &id("bob"), send)
    };
    let receivers: Vec<ConnId> = delivered.iter().map(|(c, _)| *c).collect();
    assert_eq!(receivers, vec![ConnId(1), ConnId(4)]);
    // The old deadline passes without effect.
    rig.now += GRACE;
    rig.reg.handle_timeout(rig.now);
    assert!(rig.drain().1.is_empty());
    assert_eq!(rig.reg.members(&r()).unwrap().len(), 3);
}

#[test]
fn a_drop_past_the_grace_period_leaves_with_the_usual_events() {
    let (mut rig, _host, _alice, _bob) = setup();
    rig.reg.handle_disconnect(rig.now, ConnId(2));
    assert!(rig.drain().1.is_empty());
    assert_eq!(rig.reg.poll_timeout(), Some(rig.now + GRACE));
    rig.now += GRACE;
    rig.reg.handle_timeout(rig.now);
    let (_, delivered) = rig.drain();
    let seen: Vec<(ConnId, &str)> = delivered
        .iter()
        .map(|(c, e)| {
            (
                *c,
                match e {
                    Event::MemberLeaveChatroom { .. } => "leave_chatroom",
                    Event::MemberLeaveRoom { .. } => "leave_room",
                    _ => "other",
                },
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (ConnId(1), "leave_chatroom"),
            (ConnId(3), "leave_chatroom"),
            (ConnId(1), "leave_room"),
            (ConnId(3), "leave_room")
        ]
    );
    assert_eq!(rig.reg.members(&r()).unwrap().len(), 2);
}

fn directed(text: &str, to: &Identity) -> SendTextMessage {
    SendTextMessage {
        room_uuid: r(),
        message_uuid: None,
        to_user_uuid_list: Some(vec![to.user.clone()]),
        text: text.into(),
    }
}

fn receivers(delivered: &Delivered) -> std::collections::BTreeSet<ConnId> {
    delivered.iter().map(|(c, _)| *c).collect()
}

#[test]
fn a_directed_message_recall_reaches_its_parties_and_always_the_recaller() {
    let (mut rig, host, alice, bob) = setup();
    let carol = id("carol");
    rig.enter(4, &carol, Role::Member);
    let Ok(Response::SendTextMessage(sent)) = rig.req(2, &alice, directed("psst", &bob)).0 else { panic!() };
    // The host, no party to it, recalls it: the parties and the host are told, nobody else.
    let (reply, delivered) = rig.req(1, &host, recall(&sent.message.message_uuid));
    let Ok(Response::RecallChatroomMessage(out)) = reply else { panic!("{reply:?}") };
    assert_eq!(receivers(&delivered), [ConnId(1), ConnId(2), ConnId(3)].into());
    assert_eq!(out.message.to_user_uuid_list, Some(vec![bob.user.clone(), alice.user.clone()]));
    // The sender recalling its own directed message: the two parties.
    let Ok(Response::SendTextMessage(sent)) = rig.req(2, &alice, directed("again", &bob)).0 else { panic!() };
    let (reply, delivered) = rig.req(2, &alice, recall(&sent.message.message_uuid));
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(receivers(&delivered), [ConnId(2), ConnId(3)].into());
}

#[test]
fn the_recaller_is_told_even_outside_the_chatroom() {
    let (mut rig, host, alice, _bob) = setup();
    let sent = rig.send(2, &alice, "hello");
    rig.req(1, &host, roomkit_protocol::ops::LeaveChatroom { room_uuid: r() }).0.unwrap();
    let (reply, delivered) = rig.req(1, &host, recall(&sent.message_uuid));
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(receivers(&delivered), [ConnId(1), ConnId(2), ConnId(3)].into());
}

#[test]
fn a_second_recall_is_refused_and_tells_nobody() {
    let (mut rig, host, alice, _bob) = setup();
    let sent = rig.send(2, &alice, "oops");
    rig.req(2, &alice, recall(&sent.message_uuid)).0.unwrap();
    for (conn, who) in [(2, &alice), (1, &host)] {
        let (reply, delivered) = rig.req(conn, who, recall(&sent.message_uuid));
        let e = reply.unwrap_err();
        assert_eq!(e.code(), Code::BAD_REQUEST);
        assert!(e.to_string().contains("already recalled"), "{e}");
        assert!(delivered.is_empty());
    }
}

#[test]
fn a_directed_message_is_not_found_by_those_who_could_not_see_it() {
    let (mut rig, _host, alice, bob) = setup();
    let carol = id("carol");
    rig.enter(4, &carol, Role::Member);
    let Ok(Response::SendTextMessage(sent)) = rig.req(2, &alice, directed("psst", &bob)).0 else { panic!() };
    let unknown: roomkit_protocol::MessageUuid = "no-such-message".parse().unwrap();
    let (reply, _) = rig.req(4, &carol, recall(&unknown));
    let for_unknown = reply.unwrap_err();
    assert_eq!(for_unknown.code(), Code::MESSAGE_NOT_FOUND);
    // Carol, no party to it, cannot tell the private message from one that does not exist.
    let (reply, delivered) = rig.req(4, &carol, recall(&sent.message.message_uuid));
    let e = reply.unwrap_err();
    assert_eq!(e.code(), Code::MESSAGE_NOT_FOUND, "{e}");
    assert_eq!(
        e.to_string().replace(sent.message.message_uuid.as_str(), "no-such-message"),
        for_unknown.to_string()
    );
    assert!(delivered.is_empty());
    // Bob, its recipient, knows it exists: he is refused for not being its sender.
    let (reply, _) = rig.req(3, &bob, recall(&sent.message.message_uuid));
    assert_eq!(reply.unwrap_err().code(), Code::FORBIDDEN);
    // Once recalled, still nothing to see for Carol.
    rig.req(2, &alice, recall(&sent.message.message_uuid)).0.unwrap();
    let (reply, _) = rig.req(4, &carol, recall(&sent.message.message_uuid));
    assert_eq!(reply.unwrap_err().code(), Code::MESSAGE_NOT_FOUND);
}

/// A recalled message keeps its id: a retry with its content is answered with the recalled
/// form, other content under the id is refused `BAD_REQUEST` naming `message_uuid`, and
/// neither is stored or delivered.
#[test]
fn a_recalled_message_id_is_still_taken_by_its_content() {
    let (mut rig, _host, alice, _bob) = setup();
    let send = |text: &str| SendTextMessage {
        room_uuid: r(),
        message_uuid: Some("m1".parse().unwrap()),
        to_user_uuid_list: None,
        text: text.into(),
    };
    let Ok(Response::SendTextMessage(sent)) = rig.req(2, &alice, send("oops")).0 else { panic!() };
    rig.req(2, &alice, recall(&sent.message.message_uuid)).0.unwrap();

    let (reply, delivered) = rig.req(2, &alice, send("oops"));
    let Ok(Response::SendTextMessage(retry)) = reply else { panic!("{reply:?}") };
    assert_eq!((retry.message.seq, retry.message.recalled), (sent.message.seq, true));
    assert!(delivered.is_empty(), "{delivered:?}");

    let (reply, delivered) = rig.req(2, &alice, send("something else"));
    let e = reply.expect_err("other content under a taken id");
    assert_eq!(e.code(), Code::BAD_REQUEST);
    assert!(e.to_string().contains("message_uuid"), "{e}");
    assert!(delivered.is_empty(), "{delivered:?}");
}
