//! What the JetStream store's tests share: opening a store on a test server, from async code
//! or from the conformance suite's plain `open` function.

#![allow(dead_code)] // each test file uses its own part

use std::time::Duration;

use roomkit_core::store::{MessageStore, Retention, StoreOp};
use roomkit_protocol::{RoomUuid, SharedMessage};
use roomkit_store_nats::{NatsStore, NatsStoreConfig};

/// Settings for a store on `urls`, with timeouts short enough for tests of failures.
pub fn config(urls: Vec<String>, retention: Retention) -> NatsStoreConfig {
    NatsStoreConfig {
        urls,
        retention,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        reconnect_delay_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Connects, panicking with the reason if it fails.
pub async fn connect(config: NatsStoreConfig) -> NatsStore {
    NatsStore::connect(config).await.expect("connect the store")
}

/// [`connect`] from synchronous code running on a multi-threaded runtime.
pub fn connect_blocking(config: NatsStoreConfig) -> NatsStore {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(connect(config)))
}

pub fn room(s: &str) -> RoomUuid {
    s.parse().expect("valid id")
}

/// Appends `messages` to `r` in one commit.
pub fn appends(r: &str, messages: impl IntoIterator<Item = SharedMessage>) -> Vec<StoreOp> {
    messages.into_iter().map(|message| StoreOp::Append { room: room(r), message }).collect()
}

/// The sequence numbers of a page.
pub fn seqs(page: &roomkit_core::store::HistoryPage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

/// Every message of `r` (retention applied at `now`).
pub async fn all(store: &impl MessageStore, r: &str, now: u64) -> roomkit_core::store::HistoryPage {
    let query = roomkit_core::store::HistoryQuery {
        viewer: None,
        range: roomkit_core::store::HistoryRange::AfterSeq(0),
        limit: 10_000,
    };
    store.history(&room(r), &query, now).await.expect("history")
}
