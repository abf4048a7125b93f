//! Durable commits kept in flight: a shard hands its next commit while the store syncs the
//! previous one. A store whose commits wait (here a stand-in held at a gate) fails one write:
//! the sends of that commit, and of every commit the shard handed before it heard of the
//! failure, are refused and never stored; every send after is stored; what is acknowledged
//! is exactly what history and the other members have.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use async_trait::async_trait;
use roomkit_core::store::{
    HistoryPage, HistoryQuery, MemoryStore, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
};
use roomkit_protocol::{Code, Event, RoomUuid};
use roomkit_server::{DevAuthenticator, Server, ServerConfig};
use roomkit_tests::{within, Gate, RawClient};
use serde_json::json;

/// A [`MemoryStore`] standing in for one whose commits wait on a disk: each write passes a
/// gate, and the next write fails when told to.
#[derive(Default)]
struct DiskLike {
    inner: MemoryStore,
    gate: Gate,
    fail_next: AtomicBool,
}

#[async_trait]
impl MessageStore for DiskLike {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.gate.pass().await;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError("disk full".into()));
        }
        self.inner.apply(now, ops).await
    }

    fn commit_waits(&self) -> bool {
        true
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

async fn member(connector: &roomkit_transport_memory::MemoryConnector, account: &str) -> RawClient {
    use roomkit_core::transport::Connector;
    let mut raw = RawClient::new(within("a connection", connector.connect()).await.expect("connect"));
    raw.login(account).await;
    let create = raw
        .request(json!({"op": "create_room", "room_uuid": "r", "room_name": "r", "enable_chatroom": true}));
    let code = create.await.code;
    assert!(code == Code::SUCCESS || code == Code::ROOM_ALREADY_EXISTS, "{code:?}");
    raw.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": account})).await;
    raw.request_ok(json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    raw
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
    let store = Arc::new(DiskLike { inner: MemoryStore::new(Retention::default()), ..Default::default() });
    // Several shards: their commits go through the committer, which keeps them in flight.
    let mut config = ServerConfig::default();
    config.shards = 2;
    config.commits_in_flight = 4;
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator))
        .with_store(Arc::clone(&store) as Arc<dyn MessageStore>)
        .spawn(listener);
    let mut alice = member(&connector, "alice").await;
    let mut bob = member(&connector, "bob").await;
    alice.take_events();

    // The first write is held at the gate and will fail; the sends that follow while it is
    // held are handed as later commits (up to the bound) or wait in the shard.
    store.gate.close();
    store.fail_next.store(true, Ordering::SeqCst);
    for i in 0..SENDS {
        let text = format!("m{i}");
        alice
            .send_json(json!({"id": 100 + i, "op": "send_text_message", "room_uuid": "r", "text": text}))
            .await;
        if i == 0 {
            within("the first write to reach the store", store.gate.until_waiting(1)).await;
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
    store.gate.open();
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
