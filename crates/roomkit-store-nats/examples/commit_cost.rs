//! What commits and reads cost on the JetStream store, against a nats-server started for the
//! run (one server, file storage, on loopback): the latency of a commit of one message, of
//! 64 messages to one room (published one after the other, each expecting the one before) and
//! of 64 messages to 64 rooms (published together); then the first read of a room of
//! `HISTORY` messages (its index is built from the subject) and a read of a 50-message page.
//!
//! `cargo run --release -p roomkit-store-nats --features testing --example commit_cost`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use roomkit_core::{
    conformance::store,
    store::{HistoryQuery, HistoryRange, MessageStore, StoreOp},
};
use roomkit_protocol::{ChatMessage, HistoryOrder, MessageBody};
use roomkit_store_nats::{testing::NatsServer, NatsStore, NatsStoreConfig};

const HISTORY: u64 = 10_000;
const ROUNDS: u32 = 100;

/// The store suite's message `seq`, with an id unique across rooms and a 100-byte text,
/// appended to `room`.
fn append(room: &str, seq: u64) -> StoreOp {
    let mut message = ChatMessage::clone(&store::message(seq, seq, "sender", None));
    message.message_uuid = format!("m-{room}-{seq}").parse().expect("valid id");
    message.body = MessageBody::Text { text: "x".repeat(100) };
    StoreOp::Append { room: room.parse().expect("valid id"), message: Arc::new(message) }
}

fn per(total: Duration, n: u32) -> String {
    format!("{:.2} ms", total.as_secs_f64() * 1e3 / f64::from(n))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = NatsServer::start();
    let config = NatsStoreConfig { urls: vec![server.url()], ..Default::default() };
    let store = NatsStore::connect(config.clone()).await.expect("connect");
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };

    let started = Instant::now();
    for _ in 0..ROUNDS {
        store.apply(0, &[append("one", next())]).await.expect("apply");
    }
    println!("commit of 1 message:              {}", per(started.elapsed(), ROUNDS));

    let started = Instant::now();
    for _ in 0..ROUNDS / 10 {
        let ops: Vec<StoreOp> = (0..64).map(|_| append("one", next())).collect();
        store.apply(0, &ops).await.expect("apply");
    }
    println!("commit of 64 messages to 1 room:  {}", per(started.elapsed(), ROUNDS / 10));

    let started = Instant::now();
    for round in 0..u64::from(ROUNDS / 10) {
        let ops: Vec<StoreOp> = (0..64).map(|r| append(&format!("room{r}"), round + 1)).collect();
        store.apply(0, &ops).await.expect("apply");
    }
    println!("commit of 64 messages to 64 rooms: {}", per(started.elapsed(), ROUNDS / 10));

    for chunk in (1..=HISTORY).collect::<Vec<_>>().chunks(500) {
        let ops: Vec<StoreOp> = chunk.iter().map(|&s| append("big", s)).collect();
        store.apply(0, &ops).await.expect("apply");
    }
    let reader = NatsStore::connect(config).await.expect("connect");
    let page = HistoryQuery {
        viewer: None,
        range: HistoryRange::Time { start_time: None, order: HistoryOrder::Desc },
        limit: 50,
    };
    let started = Instant::now();
    reader.history(&"big".parse().expect("valid id"), &page, 0).await.expect("history");
    println!("first read of a {HISTORY}-message room: {}", per(started.elapsed(), 1));
    let started = Instant::now();
    for _ in 0..ROUNDS / 10 {
        reader.history(&"big".parse().expect("valid id"), &page, 0).await.expect("history");
    }
    println!("read of a 50-message page:        {}", per(started.elapsed(), ROUNDS / 10));
}
