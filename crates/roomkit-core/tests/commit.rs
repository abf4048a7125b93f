//! The commit contract: outputs wait for the store commit they follow, and a failed commit is
//! settled by core (its sends refused with `INTERNAL`, its deliveries dropped, its messages
//! forgotten so that a retry stores them), with a store stand-in that fails on demand.

mod support;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use async_trait::async_trait;
use futures::executor::block_on;
use roomkit_core::{
    store::{HistoryPage, HistoryQuery, MemoryStore, MessageStore, RoomRecord, StoreError, StoreOp},
    ConnId, CoreConfig, Error, Output,
};
use roomkit_protocol::{
    ops::{Response, SendTextMessage},
    Code, EndReason, HistoryOrder, RoomUuid,
};
use support::*;

/// A `MemoryStore` whose commits fail while `failing` is set.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl MessageStore for FlakyStore {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError("disk full".into()));
        }
        self.inner.apply(now, ops).await
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.inner.history(room, query, now).await
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        self.inner.rooms().await
    }
}

fn rig() -> (Harness, Arc<FlakyStore>, User, User) {
    let store = Arc::new(FlakyStore::default());
    let mut config = CoreConfig::default();
    config.reconnect_grace_ms = 0;
    let mut h = Harness::with_store(config, store.clone());
    let (a, b) = (User::new("alice", 1), User::new("bob", 2));
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    (h, store, a, b)
}

fn send(text: &str, id: &str) -> SendTextMessage {
    SendTextMessage {
        room_uuid: room("r1"),
        message_uuid: Some(id.parse().unwrap()),
        to_user_uuid_list: None,
        text: text.into(),
    }
}

#[test]
fn a_failed_commit_refuses_the_send_and_delivers_nothing() {
    let (mut h, store, a, b) = rig();
    store.failing.store(true, Ordering::SeqCst);
    let o = h.req(&a, send("lost", "m1"));
    assert_eq!(o.code(), Code::INTERNAL, "{:?}", o.result);
    assert_eq!(*o.err(), Error::NotStored);
    assert!(o.out.deliveries.is_empty(), "nobody sees an unstored message: {:?}", o.out.deliveries);
    // Nothing reached the store.
    store.failing.store(false, Ordering::SeqCst);
    assert!(h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history().is_empty());
}

#[test]
fn a_retry_after_a_failed_commit_is_stored_as_new() {
    let (mut h, store, a, b) = rig();
    store.failing.store(true, Ordering::SeqCst);
    h.fails(&a, send("hi", "m1"), Code::INTERNAL);
    store.failing.store(false, Ordering::SeqCst);
    let o = h.ok(&a, send("hi", "m1"));
    assert_eq!(o.recipients(), [b.conn].into(), "delivered this time");
    let stored = h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&stored), ["hi"]);
    assert_eq!(stored[0], o.message());
    // And now it is a retry like any other: answered, not stored again.
    let again = h.ok(&a, send("hi", "m1"));
    assert_eq!(again.message(), o.message());
    assert!(again.out.deliveries.is_empty());
}

#[test]
fn a_failed_commit_does_not_hold_back_what_stores_nothing() {
    let (mut h, store, a, _b) = rig();
    let carol = User::new("carol", 3);
    store.failing.store(true, Ordering::SeqCst);
    // Joining stores nothing: it is announced whatever the store does.
    let o = h.ok(&carol, join("r1", "carol"));
    assert_eq!(described(&o.out.deliveries, a.conn), ["join_room carol"]);
}

#[test]
fn outputs_wait_for_the_commit_they_follow_and_keep_their_order() {
    let (mut h, _store, a, b) = rig();
    let now = h.now;
    // Two requests in one wake-up: a message (stored), then a leave (not stored).
    h.reg.handle_request(now, a.conn, &a.id, 100, send("first", "m1").into());
    h.reg.handle_request(now, b.conn, &b.id, 101, leave_chat("r1").into());
    assert!(h.reg.poll_output().is_none(), "the message waits for its commit, and the leave waits behind it");
    let ops = h.reg.take_commit();
    assert_eq!(ops.len(), 1);
    // While the commit is in flight, a new message waits for the next one.
    h.reg.handle_request(now, a.conn, &a.id, 102, send("second", "m2").into());
    assert!(h.reg.take_commit().is_empty(), "one commit at a time");
    assert!(h.reg.poll_output().is_none());
    h.reg.handle_commit(Ok(()));
    let ids: Vec<u64> = std::iter::from_fn(|| h.reg.poll_output())
        .filter_map(|o| match o {
            Output::Reply { request_id, .. } => Some(request_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [100, 101], "the second message still waits");
    // The second commit fails: only what followed it is settled as failed.
    assert_eq!(h.reg.take_commit().len(), 1);
    h.reg.handle_commit(Err(StoreError("disk full".into())));
    let out: Vec<Output> = std::iter::from_fn(|| h.reg.poll_output()).collect();
    match &out[..] {
        [Output::Reply { conn, request_id: 102, result: Err(Error::NotStored) }] => {
            assert_eq!(*conn, ConnId(1))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_history_read_waits_for_the_commit_in_flight_whose_messages_it_must_find() {
    let store = Arc::new(FlakyStore::default());
    let mut h = Harness::with_store(CoreConfig::default(), store.clone());
    let (a, carol) = (User::new("alice", 1), User::new("carol", 3));
    // A room whose chatroom nobody is in.
    h.setup(&a, "r1", &[&a, &carol], &[]);
    let now = h.now;
    // The backend's message is accepted and its commit taken, not yet reported. Nobody was
    // in the chatroom to receive it live, so nothing waits in the output queue.
    h.reg
        .send_backend_message(now, &room("r1"), uid("backend-bot"), "bot".into(), "in flight".into())
        .unwrap();
    let ops = h.reg.take_commit();
    assert_eq!(ops.len(), 1);
    assert!(h.reg.poll_output().is_none());
    // Carol enters the chatroom now: her answer reads the store, so it must not be read
    // before that commit is stored, or she would never see the message.
    h.reg.handle_request(now, carol.conn, &carol.id, 101, join_chat("r1").into());
    let early: Vec<Output> = std::iter::from_fn(|| h.reg.poll_output()).collect();
    assert!(
        early.iter().all(|o| !matches!(o, Output::History { .. })),
        "the read waits for the commit in flight: {early:?}"
    );
    h.reg.handle_commit(block_on(store.apply(now, &ops)));
    let (room_uuid, read) = std::iter::from_fn(|| h.reg.poll_output())
        .find_map(|o| match o {
            Output::History { room_uuid, read, .. } => Some((room_uuid, read)),
            _ => None,
        })
        .expect("released once the commit is reported");
    let answer = block_on(read.run(store.as_ref(), &room_uuid, now)).expect("reads");
    let roomkit_protocol::ops::Response::JoinChatroom(out) = answer else { panic!("{answer:?}") };
    assert_eq!(out.last_seq, 1, "the read finds the message stored before it");
}

/// Alice's m1 (request 100) is in flight; then Bob's m2 (101), for the next commit, and
/// Alice's retry of m1 (102), answered with m1 and waiting behind that next commit.
fn retry_behind_the_next_commit() -> (Harness, User, User) {
    let (mut h, _store, a, b) = rig();
    let now = h.now;
    h.reg.handle_request(now, a.conn, &a.id, 100, send("first", "m1").into());
    assert_eq!(h.reg.take_commit().len(), 1, "m1 is in flight");
    h.reg.handle_request(now, b.conn, &b.id, 101, send("second", "m2").into());
    h.reg.handle_request(now, a.conn, &a.id, 102, send("first", "m1").into());
    (h, a, b)
}

#[test]
fn a_retry_answered_while_its_commit_is_in_flight_fails_with_that_commit() {
    let (mut h, a, b) = retry_behind_the_next_commit();
    h.reg.handle_commit(Err(StoreError("disk full".into())));
    assert_eq!(h.reg.take_commit().len(), 1, "m2 is in flight");
    h.reg.handle_commit(Ok(()));
    let replies: Vec<(u64, Result<(), Error>)> = std::iter::from_fn(|| h.reg.poll_output())
        .filter_map(|o| match o {
            Output::Reply { request_id, result, .. } => Some((request_id, result.map(|_| ()))),
            _ => None,
        })
        .collect();
    // m1 was never stored: its retry must not be told it was.
    assert_eq!(replies, [(100, Err(Error::NotStored)), (101, Ok(())), (102, Err(Error::NotStored))]);
    // And m1 is forgotten: sent again, it is stored as new.
    let o = h.ok(&a, send("first", "m1"));
    assert_eq!(o.recipients(), [b.conn].into(), "delivered this time");
}

#[test]
fn a_room_deleted_by_a_failed_commit_and_created_again_has_none_of_the_old_rooms_messages() {
    let (mut h, store, a, b) = rig();
    h.ok(&a, send("old one", "m1"));
    h.ok(&a, send("old two", "m2"));
    store.failing.store(true, Ordering::SeqCst);
    h.reg.close_room(&room("r1"), EndReason::CloseByBackend).unwrap();
    h.drain(); // the deletion does not reach the store
    assert!(h.reg.take_commit().is_empty(), "it waits for the next commit, not retried on its own");
    store.failing.store(false, Ordering::SeqCst);
    h.setup(&a, "r1", &[&a, &b], &[&a, &b]);
    let new = h.ok(&a, send("new", "m3"));
    assert_eq!(new.message().seq, 1, "a new room numbers its messages from 1");
    let history = h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&history), ["new"], "the old room's messages went with it");
}

/// Request ids of the replies ready now, with whether each succeeded.
fn replies(h: &mut Harness) -> Vec<(u64, Result<(), Error>)> {
    std::iter::from_fn(|| h.reg.poll_output())
        .filter_map(|o| match o {
            Output::Reply { request_id, result, .. } => Some((request_id, result.map(|_| ()))),
            _ => None,
        })
        .collect()
}

/// `rig`'s room, with a registry that may keep `max` commits in flight.
fn rig_in_flight(max: usize) -> (Harness, Arc<FlakyStore>, User, User) {
    let (mut h, store, a, b) = rig();
    let reg = std::mem::replace(&mut h.reg, roomkit_core::RoomRegistry::new(CoreConfig::default()));
    h.reg = reg.with_commits_in_flight(max);
    (h, store, a, b)
}

#[test]
fn commits_in_flight_are_taken_up_to_the_bound_and_release_their_outputs_in_order() {
    let (mut h, _store, a, b) = rig_in_flight(2);
    let now = h.now;
    let base = h.reg.commits_reported();
    assert_eq!(h.reg.last_commit_needed(), base, "everything so far is stored");
    h.reg.handle_request(now, a.conn, &a.id, 100, send("one", "m1").into());
    assert_eq!(h.reg.last_commit_needed(), base + 1, "m1 needs the next commit");
    assert_eq!(h.reg.take_commit().len(), 1);
    h.reg.handle_request(now, b.conn, &b.id, 101, send("two", "m2").into());
    assert_eq!(h.reg.take_commit().len(), 1, "a second commit while the first is in flight");
    h.reg.handle_request(now, a.conn, &a.id, 102, send("three", "m3").into());
    assert!(h.reg.take_commit().is_empty(), "two in flight: the bound");
    assert_eq!(h.reg.last_commit_needed(), base + 3, "m3 waits to be taken");
    assert_eq!(h.reg.commit_epoch(), 0);
    assert!(replies(&mut h).is_empty(), "every answer waits for its commit");
    h.reg.handle_commit(Ok(()));
    assert_eq!(h.reg.commits_reported(), base + 1);
    assert_eq!(replies(&mut h), [(100, Ok(()))], "the first commit releases only its own");
    assert_eq!(h.reg.take_commit().len(), 1, "room for the third");
    h.reg.handle_commit(Ok(()));
    h.reg.handle_commit(Ok(()));
    assert_eq!(replies(&mut h), [(101, Ok(())), (102, Ok(()))]);
    assert_eq!((h.reg.commits_reported(), h.reg.last_commit_needed()), (base + 3, base + 3));
    assert_eq!(h.reg.commit_epoch(), 0, "no failure");
}

#[test]
fn a_failed_commit_fails_the_commits_taken_after_it_whatever_their_reports() {
    let (mut h, store, a, b) = rig_in_flight(3);
    let now = h.now;
    h.reg.handle_request(now, a.conn, &a.id, 100, send("one", "m1").into());
    assert_eq!(h.reg.take_commit().len(), 1);
    h.reg.handle_request(now, b.conn, &b.id, 101, send("two", "m2").into());
    assert_eq!(h.reg.take_commit().len(), 1);
    h.reg.handle_commit(Err(StoreError("disk full".into())));
    assert_eq!(h.reg.commit_epoch(), 1, "the failure starts a new epoch");
    assert_eq!(replies(&mut h), [(100, Err(Error::NotStored))]);
    // m3 comes while the doomed commit is unreported: it waits, so that the failed commits'
    // room records go to the store before it.
    h.reg.handle_request(now, a.conn, &a.id, 102, send("three", "m3").into());
    assert!(h.reg.take_commit().is_empty(), "nothing new while a doomed commit is in flight");
    // The second commit was taken before the failure was reported: it fails, even if the
    // driver says otherwise.
    h.reg.handle_commit(Ok(()));
    assert_eq!(replies(&mut h), [(101, Err(Error::NotStored))]);
    assert_eq!(h.reg.commit_epoch(), 1, "one failure, not two");
    let ops = h.reg.take_commit();
    assert_eq!(ops.len(), 1, "m3, in the new epoch");
    h.reg.handle_commit(block_on(store.apply(now, &ops)));
    assert_eq!(replies(&mut h), [(102, Ok(()))]);
    // m2 was forgotten with its commit: sent again, it is stored as new, after m3.
    let o = h.ok(&b, send("two", "m2"));
    assert_eq!(o.recipients(), [a.conn].into(), "delivered this time");
    let stored = h.ok(&a, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&stored), ["three", "two"]);
}

#[test]
fn a_read_waits_for_every_commit_in_flight() {
    let (mut h, store, a, _b) = rig_in_flight(2);
    let carol = User::new("carol", 3);
    h.ok(&carol, join("r1", "carol"));
    let now = h.now;
    let mut taken = Vec::new();
    for (i, id) in ["m1", "m2"].into_iter().enumerate() {
        h.reg.handle_request(now, a.conn, &a.id, 100 + i as u64, send(id, id).into());
        taken.push(h.reg.take_commit());
    }
    h.reg.handle_request(now, carol.conn, &carol.id, 102, join_chat("r1").into());
    let answer = |h: &mut Harness| {
        std::iter::from_fn(|| h.reg.poll_output()).find_map(|o| match o {
            Output::History { room_uuid, read, .. } => Some((room_uuid, read)),
            _ => None,
        })
    };
    h.reg.handle_commit(block_on(store.apply(now, &taken[0])));
    assert!(answer(&mut h).is_none(), "the read waits for the second commit too");
    h.reg.handle_commit(block_on(store.apply(now, &taken[1])));
    let (room_uuid, read) = answer(&mut h).expect("released once both are reported");
    let roomkit_protocol::ops::Response::JoinChatroom(out) =
        block_on(read.run(store.as_ref(), &room_uuid, now)).expect("reads")
    else {
        panic!()
    };
    assert_eq!(out.last_seq, 2, "the read finds both messages");
}

#[test]
fn a_room_deleted_by_a_failed_commit_stays_deleted_before_a_doomed_commit_recreates_it() {
    let (mut h, store, a, b) = rig_in_flight(4);
    h.ok(&a, send("old one", "m1"));
    h.ok(&a, send("old two", "m2"));
    let now = h.now;
    // The room is closed (commit 1), then created again under its id with a message
    // (commit 2), both in flight; the store fails the first, and so refuses the second.
    h.reg.close_room(&room("r1"), EndReason::CloseByBackend).unwrap();
    let close = h.reg.take_commit();
    assert_eq!(close.len(), 1);
    let epoch = h.reg.commit_epoch();
    let create = roomkit_protocol::ops::CreateRoom {
        room_uuid: room("r1"),
        room_name: "again".into(),
        template_id: None,
        max_members: None,
        password: None,
        initial_room_properties: Default::default(),
        enable_chatroom: true,
    };
    h.reg.handle_request(now, a.conn, &a.id, 200, create.into());
    let recreate = h.reg.take_commit();
    assert_eq!(recreate.len(), 1);
    assert_eq!(h.reg.commit_epoch(), epoch, "both taken in one epoch");
    store.failing.store(true, Ordering::SeqCst);
    h.reg.handle_commit(block_on(store.apply(now, &close)));
    store.failing.store(false, Ordering::SeqCst);
    // The second is refused by the store without being applied; the registry would count
    // it as failed anyway.
    h.reg.handle_commit(Err(StoreError("an earlier commit of this epoch failed".into())));
    let _ = h.drain();
    // The room was created all the same (only its record is unstored): the next commit
    // stores the deletion and the new room's record again, in that order, then the message.
    for (who, name) in [(&a, "alice"), (&b, "bob")] {
        h.ok(who, join("r1", name));
        h.ok(who, join_chat("r1"));
    }
    let new = h.ok(&a, send("new", "m3"));
    assert_eq!(new.message().seq, 1, "a new room numbers its messages from 1");
    let history = h.ok(&b, fetch("r1", None, None, HistoryOrder::Asc)).history();
    assert_eq!(texts(&history), ["new"], "the old room's messages went with it");
    let rooms = block_on(store.rooms()).unwrap();
    assert_eq!(rooms.len(), 1, "{rooms:?}");
}

fn recall(id: &str) -> roomkit_protocol::ops::RecallChatroomMessage {
    roomkit_protocol::ops::RecallChatroomMessage { room_uuid: room("r1"), message_uuid: id.parse().unwrap() }
}

#[test]
fn a_retry_of_a_stored_message_is_not_failed_by_the_commit_it_waited_behind() {
    let (mut h, _, _) = retry_behind_the_next_commit();
    h.reg.handle_commit(Ok(()));
    assert_eq!(replies(&mut h), [(100, Ok(()))]);
    assert_eq!(h.reg.take_commit().len(), 1, "m2");
    h.reg.handle_commit(Err(StoreError("disk full".into())));
    // m1 is stored: its retry says so, whatever became of m2.
    assert_eq!(replies(&mut h), [(101, Err(Error::NotStored)), (102, Ok(()))]);
}

#[test]
fn a_recall_whose_commit_fails_is_refused_and_the_message_stands() {
    let (mut h, store, a, b) = rig_in_flight(2);
    h.ok(&a, send("oops", "m1"));
    let now = h.now;
    // Bob's send is the first commit in flight, Alice's recall of m1 the second; the first
    // fails, and the recall with it.
    h.reg.handle_request(now, b.conn, &b.id, 100, send("mine", "m2").into());
    assert_eq!(h.reg.take_commit().len(), 1);
    h.reg.handle_request(now, a.conn, &a.id, 101, recall("m1").into());
    assert_eq!(h.reg.take_commit().len(), 2, "the recalled form and the notification");
    h.reg.handle_commit(Err(StoreError("disk full".into())));
    h.reg.handle_commit(Ok(()));
    let out: Vec<Output> = std::iter::from_fn(|| h.reg.poll_output()).collect();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Deliver { .. })),
        "nobody is told of a recall that was not stored: {out:?}"
    );
    let answers: Vec<(u64, Result<(), Error>)> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Reply { request_id, result, .. } => Some((request_id, result.map(|_| ()))),
            _ => None,
        })
        .collect();
    assert_eq!(answers, [(100, Err(Error::NotStored)), (101, Err(Error::NotStored))]);
    // m1 stands as stored: a retry of its send is answered, not stored again...
    let again = h.ok(&a, send("oops", "m1"));
    assert!(again.out.deliveries.is_empty(), "a retry, delivered to nobody");
    assert_eq!(again.message().seq, 1);
    // ...and it may be recalled again, once.
    h.ok(&a, recall("m1"));
    let history = block_on(store.history(
        &room("r1"),
        &HistoryQuery { viewer: None, range: roomkit_core::store::HistoryRange::AfterSeq(0), limit: 100 },
        h.now,
    ))
    .unwrap()
    .messages;
    let m1: Vec<_> = history.iter().filter(|m| m.message_uuid.as_str() == "m1").collect();
    assert_eq!(m1.len(), 1, "stored once: {history:?}");
    assert!(m1[0].recalled, "recalled by the second recall");
}

#[test]
fn a_message_is_recalled_only_once_its_send_is_stored() {
    let (mut h, _store, a, _b) = rig();
    let now = h.now;
    h.reg.handle_request(now, a.conn, &a.id, 100, send("oops", "m1").into());
    let ops = h.reg.take_commit();
    assert_eq!(ops.len(), 1, "m1 is in flight");
    h.reg.handle_request(now, a.conn, &a.id, 101, recall("m1").into());
    assert!(h.reg.take_commit().is_empty(), "nothing to store: the recall is refused");
    h.reg.handle_commit(Ok(()));
    let answers: Vec<(u64, Result<Response, Error>)> = std::iter::from_fn(|| h.reg.poll_output())
        .filter_map(|o| match o {
            Output::Reply { request_id, result, .. } => Some((request_id, result)),
            _ => None,
        })
        .collect();
    match &answers[..] {
        [(100, Ok(_)), (101, Err(e))] => {
            assert_eq!(*e, Error::NotStoredYet("m1".parse().unwrap()));
            assert_eq!(e.code(), Code::MESSAGE_NOT_FOUND);
            assert!(e.to_string().contains("not stored yet"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    h.ok(&a, recall("m1"));
}
