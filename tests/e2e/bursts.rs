//! Many requests reaching a shard at once: the shard queues a wake-up's events member by
//! member, and every connection must still get its answers and events in the order the
//! room produced them, over the in-memory transport and over WebSocket, where the write
//! pools write idle members' sockets and each member's own task writes what a socket did not
//! take (small socket buffers, so that it happens often).

use std::collections::BTreeSet;

use roomkit_core::{
    config::MessageRate,
    transport::{Connection, Connector, Frame},
};
use roomkit_server::{RateLimit, ServerConfig};
use roomkit_tests::{Harness, MemoryHarness, TransportOptions, WsHarness};
use serde_json::{json, Value};

/// Sends `request` with `id` and reads until its answer (events before it are dropped).
async fn call(c: &mut Connection, id: u64, mut request: Value) {
    request["id"] = json!(id);
    c.sink.send(&[Frame::from(request.to_string().as_str())]).await.expect("sent");
    loop {
        let frame = c.stream.recv().await.expect("answered");
        let v: Value = serde_json::from_slice(&frame).expect("json");
        if v["id"] == json!(id) {
            assert_eq!(v["code"], json!(0), "{request} answered {v}");
            return;
        }
    }
}

/// What one member read: the `seq` of each answer and of each event's message, in arrival
/// order, and which texts arrived by event.
#[derive(Default)]
struct Read {
    seqs: Vec<u64>,
    answers: usize,
    texts: BTreeSet<String>,
}

async fn read(c: &mut Connection, answers: usize, events: usize) -> Read {
    let mut read = Read::default();
    while read.answers < answers || read.texts.len() < events {
        let frame = roomkit_tests::within("the member's frames", c.stream.recv()).await.expect("open");
        let v: Value = serde_json::from_slice(&frame).expect("json");
        if v["event"] == json!("chatroom_messages_received") {
            for m in v["messages"].as_array().expect("messages") {
                read.seqs.push(m["seq"].as_u64().expect("seq"));
                assert!(read.texts.insert(m["text"].as_str().expect("text").to_owned()), "{m} twice");
            }
        } else if v.get("id").is_some() {
            assert_eq!(v["code"], json!(0), "{v}");
            read.seqs.push(v["data"]["message"]["seq"].as_u64().expect("seq"));
            read.answers += 1;
        }
    }
    read
}

/// Three members send 40 messages each without waiting for answers, all at once (one of
/// them directs every other message to the fourth member only). Every member gets each
/// message meant for it once, its own answers, and everything in sequence order: an answer
/// after every event of a lower number, an event after every answer of a lower one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_events_of_a_burst_reach_each_member_in_sequence_order() {
    burst_in_order::<MemoryHarness>(TransportOptions::default()).await;
}

/// The same over WebSocket, with two write pools and small socket buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_websocket_written_by_pools_and_tasks_each_member_reads_in_sequence_order() {
    burst_in_order::<WsHarness>(TransportOptions { small_buffers: true }).await;
}

async fn burst_in_order<H: Harness>(options: TransportOptions) {
    const SENDS: usize = 40;
    let mut config = ServerConfig::default();
    config.shards = 1;
    config.write_pools = 2;
    config.rate_limit = RateLimit { per_second: 1_000_000, burst: 1_000_000, close_after: 100 };
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    let h = H::start_with(config, options).await;
    let connector = h.connector();
    let room = "bursts";
    let mut members = Vec::new();
    for i in 0..4 {
        let mut c = connector.connect().await.expect("connected");
        let account = format!("u{i}");
        call(&mut c, 1, json!({"op": "login", "account_id": account, "token": "t"})).await;
        if i == 0 {
            call(
                &mut c,
                2,
                json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true}),
            )
            .await;
        }
        call(&mut c, 3, json!({"op": "join_room", "room_uuid": room, "user_name": account})).await;
        call(&mut c, 4, json!({"op": "join_chatroom", "room_uuid": room})).await;
        members.push(c);
    }
    // Every send of the three senders in one write each, the three writes at once.
    let batches: Vec<Vec<Frame>> = (0..3)
        .map(|s| {
            (0..SENDS)
                .map(|n| {
                    let mut send = json!({"id": 100 + n, "op": "send_text_message", "room_uuid": room, "text": format!("{s}-{n}")});
                    if s == 1 && n % 2 == 0 {
                        send["to_user_uuid_list"] = json!(["u3"]);
                    }
                    Frame::from(send.to_string().as_str())
                })
                .collect()
        })
        .collect();
    let sends = members.iter_mut().zip(&batches).map(|(c, batch)| c.sink.send(batch));
    for sent in futures::future::join_all(sends).await {
        sent.expect("sent");
    }
    // The others' messages, but for the directed half of member 1's.
    let everyone_else = |s: usize| if s == 1 { 2 * SENDS } else { SENDS + SENDS / 2 };
    let expected =
        [(SENDS, everyone_else(0)), (SENDS, everyone_else(1)), (SENDS, everyone_else(2)), (0, 3 * SENDS)];
    for (i, (c, (answers, events))) in members.iter_mut().zip(expected).enumerate() {
        let read = read(c, answers, events).await;
        assert!(read.seqs.windows(2).all(|w| w[0] < w[1]), "member {i} read out of order: {:?}", read.seqs);
        assert_eq!(read.answers, answers, "member {i}");
        assert_eq!(read.texts.len(), events, "member {i}");
        let directed = (0..SENDS).step_by(2).map(|n| format!("1-{n}"));
        if i == 3 {
            assert!(directed.into_iter().all(|t| read.texts.contains(&t)), "u3 gets the directed messages");
        } else {
            assert!(
                directed.into_iter().all(|t| !read.texts.contains(&t)),
                "member {i} got a directed message"
            );
        }
    }
    h.stop().await;
}
