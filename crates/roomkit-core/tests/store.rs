//! The in-memory store against the store conformance suite, and the registry's commits:
//! what it asks to be stored, what waits for the commit, and how retries and restarts behave.

use std::sync::Arc;

use futures::executor::block_on;
use roomkit_core::{
    store::{MemoryStore, MessageStore, RoomRecord, StoreOp},
    ConnId, CoreConfig, HistoryRequest, Identity, Output, RoomRegistry,
};
use roomkit_protocol::{
    ops::{CreateRoom, FetchChatroomHistory, JoinChatroom, JoinRoom, Request, Response, SendTextMessage},
    Code, Event, HistoryOrder, RoomUuid,
};

roomkit_core::store_conformance_tests!(
    #[tokio::test]
    MemoryStore::new
);

fn id(s: &str) -> Identity {
    Identity::unrestricted(s.parse().unwrap())
}

fn r() -> RoomUuid {
    "r".parse().unwrap()
}

struct Rig {
    reg: RoomRegistry,
    store: MemoryStore,
    next: u64,
    /// The operations of the last commit.
    committed: Vec<StoreOp>,
}

impl Rig {
    fn new() -> Self {
        let store = MemoryStore::default();
        Self { reg: RoomRegistry::new(CoreConfig::default()), store, next: 1, committed: Vec::new() }
    }

    /// Sends one request; commits to the store what it asks (checking that nothing comes
    /// out before the commit is reported), and returns the outputs as they are.
    fn req(&mut self, conn: u64, who: &Identity, request: impl Into<Request>) -> Vec<Output> {
        self.reg.handle_request(1_000 + self.next, ConnId(conn), who, self.next, request.into());
        self.next += 1;
        self.commit()
    }

    fn commit(&mut self) -> Vec<Output> {
        self.committed = self.reg.take_commit();
        if !self.committed.is_empty() {
            let mut early = Vec::new();
            while let Some(o) = self.reg.poll_output() {
                early.push(o);
            }
            assert!(
                early.iter().all(|o| !matches!(o, Output::Reply { .. } | Output::History { .. })),
                "an answer came out before the commit was reported: {early:?}"
            );
            self.reg.handle_commit(block_on(self.store.apply(1_000 + self.next, &self.committed)));
            return early.into_iter().chain(std::iter::from_fn(|| self.reg.poll_output())).collect();
        }
        std::iter::from_fn(|| self.reg.poll_output()).collect()
    }

    fn enter(&mut self, conn: u64, who: &Identity) {
        let join = JoinRoom {
            room_uuid: r(),
            user_name: who.name.clone(),
            role: Default::default(),
            avatar: None,
            password: None,
            initial_my_properties: Default::default(),
            resume: false,
        };
        self.req(conn, who, join);
        self.req(conn, who, JoinChatroom { room_uuid: r(), history_count: None });
    }
}

fn create() -> CreateRoom {
    CreateRoom {
        room_uuid: r(),
        room_name: "R".into(),
        template_id: None,
        max_members: None,
        password: None,
        initial_room_properties: Default::default(),
        enable_chatroom: true,
    }
}

fn send(text: &str, id: &str) -> SendTextMessage {
    SendTextMessage {
        room_uuid: r(),
        message_uuid: Some(id.parse().unwrap()),
        to_user_uuid_list: None,
        text: text.into(),
    }
}

#[test]
fn what_must_be_durable_comes_before_the_reply_and_the_deliveries() {
    let (alice, bob) = (id("alice"), id("bob"));
    let mut rig = Rig::new();
    rig.reg.handle_request(1_000, ConnId(1), &alice, 100, create().into());
    assert!(rig.reg.poll_output().is_none(), "the reply waits for the commit");
    let out = rig.commit();
    assert!(matches!(&rig.committed[..], [StoreOp::PutRoom(rec)] if rec.info.room_uuid == r()));
    assert!(matches!(&out[..], [Output::Reply { .. }]));
    rig.enter(1, &alice);
    rig.enter(2, &bob);
    let out = rig.req(1, &alice, send("hi", "m1"));
    let [StoreOp::Append { message, .. }] = &rig.committed[..] else { panic!("{:?}", rig.committed) };
    match &out[..] {
        [Output::Deliver { event: Event::ChatroomMessagesReceived { .. }, .. }, Output::Reply { result: Ok(Response::SendTextMessage(sent)), .. }] =>
        {
            assert_eq!(message.seq, 1);
            assert_eq!(sent.message, *message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_retried_send_returns_the_stored_message_and_is_delivered_once() {
    let (alice, bob) = (id("alice"), id("bob"));
    let mut rig = Rig::new();
    rig.req(1, &alice, create());
    rig.enter(1, &alice);
    rig.enter(2, &bob);
    let first = rig.req(1, &alice, send("hi", "m1"));
    let retry = rig.req(1, &alice, send("hi", "m1"));
    let sent = |out: &[Output]| match out.last() {
        Some(Output::Reply { result: Ok(Response::SendTextMessage(s)), .. }) => Arc::clone(&s.message),
        other => panic!("{other:?}"),
    };
    assert_eq!(sent(&first), sent(&retry), "same uuid, same seq");
    assert_eq!(retry.len(), 1, "a retry delivers nothing: {retry:?}");
    assert!(rig.committed.is_empty(), "a retry stores nothing");
    let next = rig.req(1, &alice, send("again", "m2"));
    assert_eq!(sent(&next).seq, 2, "no sequence number was spent on the retry");
    // Another sender cannot reuse the id.
    let stolen = rig.req(2, &bob, send("mine", "m1"));
    match stolen.last() {
        Some(Output::Reply { result: Err(e), .. }) => {
            assert_eq!(e.code(), Code::BAD_REQUEST);
            assert!(e.to_string().contains("message_uuid"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The window keeps a hash of the content, not the content: a "retry" carrying other
    // text is refused rather than answered as if that text had been stored.
    let changed = rig.req(1, &alice, send("not what was said", "m1"));
    match changed.last() {
        Some(Output::Reply { result: Err(e), .. }) => {
            assert_eq!(e.code(), Code::BAD_REQUEST);
            assert!(e.to_string().contains("other content"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(rig.committed.is_empty(), "nothing stored");
}

#[test]
fn history_is_asked_of_the_store_when_there_is_one() {
    let alice = id("alice");
    let mut rig = Rig::new();
    rig.req(1, &alice, create());
    rig.enter(1, &alice);
    let fetch = FetchChatroomHistory {
        room_uuid: r(),
        start_time: None,
        limit: Some(10),
        order: HistoryOrder::Desc,
        after_seq: Some(3),
        cursor: None,
    };
    // Five messages: the read covers them and none later.
    for i in 0..5 {
        rig.req(1, &alice, send("hi", &format!("m{i}")));
    }
    let out = rig.req(1, &alice, fetch);
    match &out[..] {
        [Output::History { conn, read, .. }] => {
            assert_eq!(read.asked_by(), HistoryRequest::FetchChatroomHistory);
            assert_eq!(*conn, ConnId(1));
            assert_eq!(read.viewer(), Some(&alice.user));
            assert_eq!((read.limit(), read.newest()), (10, 5));
            let mut read = read.clone();
            let query = read.next_query().expect("a read");
            assert_eq!(query.viewer, None, "the read filters what it reads itself");
            assert_eq!(query.range, roomkit_core::store::HistoryRange::AfterSeq(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ending_a_room_deletes_it_from_the_store() {
    let alice = id("alice");
    let mut rig = Rig::new();
    rig.req(1, &alice, create());
    rig.reg.close_room(&r(), roomkit_protocol::EndReason::CloseByBackend).unwrap();
    let out = rig.commit();
    assert!(matches!(&rig.committed[..], [StoreOp::DeleteRoom(room)] if *room == r()), "{:?}", rig.committed);
    assert!(matches!(&out[..], [Output::RoomEnded { .. }]), "{out:?}");
}

#[test]
fn a_restored_room_continues_its_numbering_and_remembers_recent_ids() {
    let alice = id("alice");
    let mut rig = Rig::new();
    let record = RoomRecord { info: roomkit_core::conformance::store::record("r").info, password: None };
    let mut record = record;
    record.info.has_password = false;
    let earlier = roomkit_core::conformance::store::message(7, 5, "alice", None);
    rig.reg.restore_room(2_000, record, 7, vec![Arc::clone(&earlier)]);
    rig.enter(1, &alice);
    let out = rig.req(1, &alice, send("after restart", "fresh"));
    match out.last() {
        Some(Output::Reply { result: Ok(Response::SendTextMessage(s)), .. }) => assert_eq!(s.message.seq, 8),
        other => panic!("{other:?}"),
    }
    // A retry of a message stored before the restart is recognised.
    let out = rig.req(1, &alice, send("text 7", "m7"));
    match out.last() {
        Some(Output::Reply { result: Ok(Response::SendTextMessage(s)), .. }) => {
            assert_eq!(s.message, earlier)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn joining_the_chatroom_can_ask_for_its_last_messages_in_the_same_call() {
    let (alice, bob) = (id("alice"), id("bob"));
    let mut rig = Rig::new();
    rig.req(1, &alice, create());
    rig.enter(1, &alice);
    for i in 0..3 {
        rig.req(1, &alice, send("hi", &format!("m{i}")));
    }
    let join = JoinRoom {
        room_uuid: r(),
        user_name: "bob".into(),
        role: Default::default(),
        avatar: None,
        password: None,
        initial_my_properties: Default::default(),
        resume: false,
    };
    rig.req(2, &bob, join);
    let out = rig.req(2, &bob, JoinChatroom { room_uuid: r(), history_count: Some(2) });
    match &out[..] {
        [Output::Deliver { event: Event::MemberJoinChatroom { .. }, .. }, Output::History { conn, read, .. }] =>
        {
            assert_eq!(read.asked_by(), HistoryRequest::JoinChatroom, "answered as join_chatroom");
            assert_eq!(*conn, ConnId(2));
            assert_eq!(read.limit(), 2);
            assert_eq!(read.viewer(), Some(&bob.user));
        }
        other => panic!("{other:?}"),
    }
    let out = rig.req(2, &bob, JoinChatroom { room_uuid: r(), history_count: Some(101) });
    match out.last() {
        Some(Output::Reply { result: Err(e), .. }) => assert!(e.to_string().contains("history_count"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Without history, the store's answer carries the newest sequence number: the entry
    // point.
    let out = rig.req(2, &bob, JoinChatroom { room_uuid: r(), history_count: None });
    match &out[..] {
        [Output::History { room_uuid, read, .. }] => {
            assert_eq!(read.limit(), 0);
            let Ok(Response::JoinChatroom(page)) = block_on(read.clone().run(&rig.store, room_uuid, 2_000))
            else {
                panic!("not join_chatroom's answer")
            };
            assert_eq!(page.last_seq, 3);
            assert!(page.messages.is_empty());
        }
        other => panic!("{other:?}"),
    }
}
