//! The redb store against the store conformance suite, and what only a durable store must do:
//! keep everything across a reopen.

use std::sync::atomic::{AtomicU32, Ordering};

use roomkit_core::{
    conformance::store::{message, record},
    store::{HistoryQuery, HistoryRange, MessageStore, Retention, StoreOp},
};
use roomkit_store_redb::{RedbConfig, RedbStore};

fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "roomkit-redb-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(retention: Retention) -> RedbStore {
    RedbStore::open(temp_dir("conformance"), RedbConfig { retention, ..Default::default() }).unwrap()
}

roomkit_core::store_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    open
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = temp_dir("reopen");
    {
        let store = RedbStore::open(&dir, RedbConfig::default()).unwrap();
        let mut ops = vec![StoreOp::PutRoom(record("r"))];
        ops.extend(
            (1..=3)
                .map(|i| StoreOp::Append { room: "r".parse().unwrap(), message: message(i, i, "a", None) }),
        );
        store.apply(10, &ops).await.unwrap();
    }
    let store = RedbStore::open(&dir, RedbConfig::default()).unwrap();
    assert_eq!(store.rooms().await.unwrap(), vec![(record("r"), 3)]);
    let query = HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit: 10 };
    let page = store.history(&"r".parse().unwrap(), &query, 10).await.unwrap();
    assert_eq!(page.messages, (1..=3).map(|i| message(i, i, "a", None)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_created_if_missing() {
    let dir = temp_dir("nested").join("a").join("b");
    let store =
        RedbStore::open(&dir, RedbConfig { retention: Retention::default(), ..Default::default() }).unwrap();
    assert!(store.path().exists());
}
