//! Durable commits kept in flight: a shard hands its next commit while the store syncs the
//! previous one. A store whose commits wait (a stand-in whose writes wait at a gate) fails one
//! write:
//! the sends of that commit, and of every commit the shard handed before it heard of the
//! failure, are refused and never stored; every send after is stored; what is acknowledged
//! is exactly what history and the other members have.

use std::sync::{atomic::Ordering, Arc};

use roomkit_core::store::MessageStore;
use roomkit_protocol::{Code, Event, RoomUuid};
use roomkit_server::{DevAuthenticator, Server, ServerConfig, ServerHandle};
use roomkit_tests::{raw_chatroom_member, within, GatedStore};
use serde_json::json;

/// Two shards over the gated store (their commits go through the committer, which keeps up
/// to four of each in flight), on the in-memory transport.
fn start() -> (ServerHandle, roomkit_transport_memory::MemoryConnector, Arc<GatedStore>) {
    let store = Arc::new(GatedStore::default());
    let mut config = ServerConfig::default();
    config.shards = 2;
    config.commits_in_flight = 4;
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator))
        .with_store(Arc::clone(&store) as Arc<dyn MessageStore>)
        .spawn(listener);
    (server, connector, store)
}

/// The texts of the chatroom messages among `events`.
fn texts(events: impl IntoIterator<Item = Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::ChatroomMessagesReceived { messages, .. } => Some(messages),
            _ => None,
        })
        .flatten()
        .filter_map(|m| m.text().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_refuses_its_sends_and_those_handed_after_it_and_keeps_the_rest() {
    const SENDS: u64 = 30;
    let (server, connector, store) = start();
    let mut alice = raw_chatroom_member(&connector, "alice", "r").await;
    let mut bob = raw_chatroom_member(&connector, "bob", "r").await;
    alice.take_events();

    // The first write is held at the gate and will fail; the sends that follow while it is
    // held are handed as later commits (up to the bound) or wait in the shard.
    store.writes.close();
    store.fail_next_write.store(true, Ordering::SeqCst);
    for i in 0..SENDS {
        let text = format!("m{i}");
        alice
            .send_json(json!({"id": 100 + i, "op": "send_text_message", "room_uuid": "r", "text": text}))
            .await;
        if i == 0 {
            within("the first write to reach the store", store.writes.until_waiting(1)).await;
        }
    }
    // Once the shard has accepted every send, a later job on it finds the commits taken
    // (a shard hands its commit at the end of the wake-up that accepted the sends).
    let room: RoomUuid = "r".parse().expect("valid");
    within("the shard to accept every send", async {
        let last_seq =
            |room: RoomUuid| move |reg: &mut roomkit_core::RoomRegistry, _| reg.chatroom_last_seq(&room);
        while server.with_room(&room, last_seq(room.clone())).await != Some(Some(SENDS)) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.with_room(&room, |_, _| ()).await;
    store.writes.open();
    let mut answers = Vec::new();
    for _ in 0..SENDS {
        let answer = alice.response().await;
        answers.push((answer.id.expect("an id"), answer.code));
    }
    assert_eq!(answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (100..100 + SENDS).collect::<Vec<_>>());
    // Refused: the failed write's sends and those handed before the failure was reported, a
    // prefix; stored: every later one.
    let refused = answers.iter().take_while(|(_, code)| *code == Code::INTERNAL).count();
    assert!(refused >= 1, "the first send was in the failed write: {answers:?}");
    assert!(
        answers[refused..].iter().all(|(_, code)| *code == Code::SUCCESS),
        "after the refused ones, every send is stored: {answers:?}"
    );
    let mut acknowledged: Vec<String> = (refused as u64..SENDS).map(|i| format!("m{i}")).collect();
    // Sent once the failure is known: stored.
    for i in SENDS..SENDS + 5 {
        let text = format!("m{i}");
        alice.request_ok(json!({"op": "send_text_message", "room_uuid": "r", "text": text.clone()})).await;
        acknowledged.push(text);
    }

    // Bob received exactly the acknowledged messages, in order; history has exactly them.
    // (The history answer comes after every event sent before it: a barrier.)
    let fetch = json!({"op": "fetch_chatroom_history", "room_uuid": "r", "limit": 100, "order": "asc"});
    let page = bob.request_ok(fetch).await;
    assert_eq!(texts(bob.take_events()), acknowledged, "bob sees what was acknowledged, nothing else");
    let page: serde_json::Value = serde_json::from_str(page.data.expect("a page").get()).expect("JSON");
    let history: Vec<&str> =
        page["messages"].as_array().expect("messages").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(history, acknowledged, "history holds exactly the acknowledged messages");
    server.shutdown().await;
}

/// `commits_settled` (what a cluster node waits for before handing a room on) returns only
/// once the write holding what was accepted before it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_settled_waits_for_the_write_in_flight() {
    let (server, connector, store) = start();
    let mut alice = raw_chatroom_member(&connector, "alice", "r").await;
    store.writes.close();
    alice.send_json(json!({"id": 9, "op": "send_text_message", "room_uuid": "r", "text": "held"})).await;
    within("the write to reach the store", store.writes.until_waiting(1)).await;
    let rooms = server.rooms();
    let settled = rooms.commits_settled();
    tokio::pin!(settled);
    // The write is held: nothing can settle it. (A bounded wait for an absence.)
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut settled).await;
    assert!(early.is_err(), "settled while the write was held");
    store.writes.open();
    within("the commits to settle", settled).await;
    let page = store
        .inner
        .history(
            &"r".parse().expect("valid"),
            &roomkit_core::store::HistoryQuery {
                viewer: None,
                range: roomkit_core::store::HistoryRange::AfterSeq(0),
                limit: 10,
            },
            0,
        )
        .await
        .expect("reads");
    assert_eq!(page.messages.iter().filter_map(|m| m.text()).collect::<Vec<_>>(), ["held"]);
    assert_eq!(alice.response().await.code, Code::SUCCESS);
    server.shutdown().await;
}

/// A shard that finds, in the flush after a request, that its commit in flight has been
/// answered hands the operations that waited behind it in the same flush: nothing else need
/// come for them to be stored and acknowledged. One shard over a store that claims to answer
/// at once (so its flush polls the commit it handed) but holds the first write at the gate;
/// the gate opens just as the next send arrives, so the shard wakes with both, and takes the
/// send first about half the time: the scenario runs several times.
#[tokio::test(flavor = "current_thread")]
async fn a_commit_answered_in_a_flush_lets_the_sends_that_waited_behind_it_be_handed() {
    let store = Arc::new(GatedStore::default());
    store.claims_no_wait.store(true, Ordering::SeqCst);
    let mut config = ServerConfig::default();
    config.shards = 1;
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator))
        .with_store(Arc::clone(&store) as Arc<dyn MessageStore>)
        .spawn(listener);
    let mut alice = raw_chatroom_member(&connector, "alice", "r").await;
    for round in 0..16u64 {
        store.writes.close();
        let send = |id: u64| json!({"id": id, "op": "send_text_message", "room_uuid": "r", "text": format!("m{id}")});
        alice.send_json(send(2 * round + 100)).await;
        within("the write to reach the store", store.writes.until_waiting(round as usize + 1)).await;
        // The second send waits in the registry behind the commit in flight.
        alice.send_json(send(2 * round + 101)).await;
        store.writes.open();
        for id in [2 * round + 100, 2 * round + 101] {
            let response = within("each send's answer, with nothing more sent", alice.response()).await;
            assert_eq!((response.id, response.code), (Some(id), Code::SUCCESS), "round {round}");
        }
    }
    server.shutdown().await;
}
