//! History reads run off the shard: a read that blocks in the store holds up neither the
//! other rooms of its shard nor the asker's other requests, and a connection may have only
//! `reads_in_flight` of them under way.

use std::sync::Arc;

use roomkit_core::store::MessageStore;
use roomkit_protocol::{codec::ServerFrame, Code, Event};
use roomkit_server::{DevAuthenticator, Server, ServerConfig, ServerHandle};
use roomkit_tests::{raw_chatroom_member, within, GatedStore};
use serde_json::json;

/// One shard, so that every room shares it; the gated store; the in-memory transport.
fn start(config: ServerConfig) -> (ServerHandle, roomkit_transport_memory::MemoryConnector, Arc<GatedStore>) {
    let store = Arc::new(GatedStore::default());
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator))
        .with_store(Arc::clone(&store) as Arc<dyn MessageStore>)
        .spawn(listener);
    (server, connector, store)
}

fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.shards = 1;
    config
}

/// While Alice's history read of room "big" is stuck in the store, Bob's message in room
/// "small" — same shard — is acknowledged and delivered to Carol; Alice's answer comes once
/// the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_history_read_does_not_delay_a_send_in_another_room_of_its_shard() {
    let (server, connector, store) = start(config());
    let mut alice = raw_chatroom_member(&connector, "alice", "big").await;
    let mut bob = raw_chatroom_member(&connector, "bob", "small").await;
    let mut carol = raw_chatroom_member(&connector, "carol", "small").await;
    bob.take_events();

    store.reads.close();
    alice.send_json(json!({"id": 50, "op": "fetch_chatroom_history", "room_uuid": "big"})).await;
    within("alice's read to reach the store", store.reads.until_waiting(1)).await;

    let sent =
        bob.request(json!({"op": "send_text_message", "room_uuid": "small", "text": "meanwhile"})).await;
    assert_eq!(sent.code, Code::SUCCESS, "{}", sent.msg);
    match carol.recv_frame().await {
        ServerFrame::Event(Event::ChatroomMessagesReceived { messages, .. }) => {
            assert_eq!(messages[0].text(), Some("meanwhile"));
        }
        other => panic!("carol expected bob's message, got {other:?}"),
    }

    store.reads.open();
    let answer = alice.response().await;
    assert_eq!((answer.id, answer.code), (Some(50), Code::SUCCESS));
    server.shutdown().await;
}

/// A connection may have `reads_in_flight` history reads under way; one more is answered
/// `TOO_MANY_PENDING` at once, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_past_the_in_flight_bound_are_answered_too_many_pending() {
    let mut config = config();
    config.reads_in_flight = 2;
    let (server, connector, store) = start(config);
    let mut alice = raw_chatroom_member(&connector, "alice", "big").await;

    store.reads.close();
    for id in [100, 101] {
        alice.send_json(json!({"id": id, "op": "fetch_chatroom_history", "room_uuid": "big"})).await;
    }
    within("both reads to reach the store", store.reads.until_waiting(2)).await;
    let refused = alice.request(json!({"op": "fetch_chatroom_history", "room_uuid": "big"})).await;
    assert_eq!(refused.code, Code::TOO_MANY_PENDING, "{}", refused.msg);
    assert!(refused.msg.contains("2 history reads"), "{}", refused.msg);
    alice.request_ok(json!({"op": "ping"})).await;

    store.reads.open();
    let mut answered = [alice.response().await, alice.response().await];
    answered.sort_by_key(|r| r.id);
    assert_eq!(
        answered.iter().map(|r| (r.id, r.code)).collect::<Vec<_>>(),
        [(Some(100), Code::SUCCESS), (Some(101), Code::SUCCESS)]
    );
    // The slots are free again.
    alice.request_ok(json!({"op": "fetch_chatroom_history", "room_uuid": "big"})).await;
    server.shutdown().await;
}

/// A `join_chatroom` past the in-flight bound is refused before it enters the chatroom: the
/// member is not inside (leaving answers `NOT_IN_CHATROOM`), nobody is told of an entry, and
/// once a slot is free the same join enters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_chatroom_refused_too_many_pending_does_not_enter() {
    let mut config = config();
    config.reads_in_flight = 1;
    let (server, connector, store) = start(config);
    let mut alice = raw_chatroom_member(&connector, "alice", "big").await;
    let mut bob = raw_chatroom_member(&connector, "bob", "other").await;
    alice.request_ok(json!({"op": "join_room", "room_uuid": "other", "user_name": "alice"})).await;
    bob.take_events();

    store.reads.close();
    alice.send_json(json!({"id": 100, "op": "fetch_chatroom_history", "room_uuid": "big"})).await;
    within("alice's read to reach the store", store.reads.until_waiting(1)).await;
    let refused = alice.request(json!({"op": "join_chatroom", "room_uuid": "other"})).await;
    assert_eq!(refused.code, Code::TOO_MANY_PENDING, "{}", refused.msg);
    let left = alice.request(json!({"op": "leave_chatroom", "room_uuid": "other"})).await;
    assert_eq!(left.code, Code::NOT_IN_CHATROOM, "the refused join entered: {}", left.msg);
    // Bob is told of nothing: a request of his to the same shard is answered with no event
    // before it.
    bob.request_ok(json!({"op": "fetch_chatroom_members", "room_uuid": "other"})).await;
    let entries = bob.take_events().into_iter().filter(|e| matches!(e, Event::MemberJoinChatroom { .. }));
    assert_eq!(entries.count(), 0, "bob was told of an entry");

    store.reads.open();
    assert_eq!(alice.response().await.id, Some(100));
    alice.request_ok(json!({"op": "join_chatroom", "room_uuid": "other"})).await;
    match bob.recv_frame().await {
        ServerFrame::Event(Event::MemberJoinChatroom { members, .. }) => {
            assert_eq!(members[0].uuid.as_str(), "alice");
        }
        other => panic!("bob expected alice's entry, got {other:?}"),
    }
    server.shutdown().await;
}
