//! The redb store against the store conformance suite, and what only a durable store must do:
//! keep everything across a reopen.

use std::sync::atomic::{AtomicU32, Ordering};

use roomkit_core::{
    conformance::store::{message, record},
    store::{HistoryQuery, HistoryRange, MessageStore, Retention, StoreOp},
};
use roomkit_protocol::HistoryOrder;
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

/// A crash after acknowledged commits leaves the database at its last durable commit (a
/// checkpoint) and the journal holding what came after: opening the store applies the journal,
/// once. Simulated by putting back the database file as it was at the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_the_last_checkpoint_come_back_from_the_journal() {
    let dir = temp_dir("journal");
    // No checkpoint by time in this test: only at open.
    let config =
        RedbConfig { checkpoint_interval: std::time::Duration::from_secs(3600), ..RedbConfig::default() };
    let db_file = dir.join(roomkit_store_redb::FILE_NAME);
    let journal_file = dir.join(roomkit_store_redb::journal::JOURNAL_FILE_NAME);
    let append = |i: u64| StoreOp::Append { room: "r".parse().unwrap(), message: message(i, i, "a", None) };
    {
        let store = RedbStore::open(&dir, config).unwrap();
        store.apply(10, &[StoreOp::PutRoom(record("r")), append(1)]).await.unwrap();
        drop(store);
        // Opening checkpoints: the database holds r and message 1 durably.
        let store = RedbStore::open(&dir, config).unwrap();
        assert_eq!(std::fs::metadata(&journal_file).unwrap().len(), 0, "emptied by the checkpoint");
        let at_checkpoint = std::fs::read(&db_file).unwrap();
        // Two acknowledged commits, journaled; then the "crash": the database as it was.
        store.apply(20, &[append(2)]).await.unwrap();
        store.apply(30, &[append(3), StoreOp::PutRoom(record("s"))]).await.unwrap();
        assert!(std::fs::metadata(&journal_file).unwrap().len() > 0, "journaled");
        drop(store);
        std::fs::write(&db_file, at_checkpoint).unwrap();
    }
    let check = |store: RedbStore| async move {
        let rooms: Vec<u64> = store.rooms().await.unwrap().into_iter().map(|(_, last)| last).collect();
        let query = HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit: 10 };
        let page = store.history(&"r".parse().unwrap(), &query, 30).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        (rooms.len(), seqs)
    };
    let store = RedbStore::open(&dir, config).unwrap();
    assert_eq!(check(store).await, (2, vec![1, 2, 3]), "both commits back, room s too");
    assert_eq!(std::fs::metadata(&journal_file).unwrap().len(), 0, "applied and emptied");
    // Opened again: nothing is applied twice.
    let store = RedbStore::open(&dir, config).unwrap();
    assert_eq!(check(store).await, (2, vec![1, 2, 3]));
}

/// A journal past `checkpoint_journal_bytes` makes the next commit a checkpoint, which
/// empties it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_past_its_size_bound_is_checkpointed_and_emptied() {
    let dir = temp_dir("journal-size");
    let hour = std::time::Duration::from_secs(3600);
    let config =
        RedbConfig { checkpoint_interval: hour, checkpoint_journal_bytes: 1, ..RedbConfig::default() };
    let journal_file = dir.join(roomkit_store_redb::journal::JOURNAL_FILE_NAME);
    let store = RedbStore::open(&dir, config).unwrap();
    store.apply(10, &[StoreOp::PutRoom(record("r"))]).await.unwrap();
    assert!(std::fs::metadata(&journal_file).unwrap().len() > 0, "journaled");
    store.apply(20, &[StoreOp::PutRoom(record("s"))]).await.unwrap();
    assert_eq!(std::fs::metadata(&journal_file).unwrap().len(), 0, "a checkpoint emptied it");
    assert_eq!(store.rooms().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_created_if_missing() {
    let dir = temp_dir("nested").join("a").join("b");
    let store =
        RedbStore::open(&dir, RedbConfig { retention: Retention::default(), ..Default::default() }).unwrap();
    assert!(store.path().exists());
}

/// The work retention does for one more message is the same at any history length: it reads
/// the message it deletes and the one it stops at, never the whole chatroom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_work_per_append_does_not_grow_with_history() {
    let mut per_append = Vec::new();
    for history in [1_000u64, 20_000] {
        let retention = Retention { max_messages: Some(history), max_age_ms: Some(u64::MAX / 2) };
        let store = open(retention);
        let room: roomkit_protocol::RoomUuid = "r".parse().unwrap();
        for chunk in (1..=history).collect::<Vec<_>>().chunks(1_000) {
            let ops: Vec<StoreOp> = chunk
                .iter()
                .map(|&i| StoreOp::Append { room: room.clone(), message: message(i, i, "a", None) })
                .collect();
            store.apply(history, &ops).await.unwrap();
        }
        let before = store.retention_visits();
        for i in history + 1..=history + 10 {
            let op = StoreOp::Append { room: room.clone(), message: message(i, i, "a", None) };
            store.apply(i, &[op]).await.unwrap();
        }
        per_append.push((store.retention_visits() - before) as f64 / 10.0);
        let query = HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit: 1 };
        let page = store.history(&room, &query, history + 10).await.unwrap();
        assert_eq!((page.first_seq, page.last_seq), (11, history + 10), "retention still keeps {history}");
    }
    assert_eq!(per_append, [2.0, 2.0], "messages read by retention per append, at 1 000 and 20 000");
}

/// A read by time seeks the start of its range: with 20 000 messages, asking for those after
/// the newest (oldest first) or before the oldest few (newest first) reads a few dozen
/// messages, not the whole chatroom, and answers the same as a walk would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_time_does_not_walk_the_chatroom_to_its_range() {
    let history = 20_000u64;
    let store = open(Retention { max_messages: None, max_age_ms: Some(u64::MAX / 2) });
    let room: roomkit_protocol::RoomUuid = "r".parse().unwrap();
    store.apply(0, &[StoreOp::PutRoom(record("r"))]).await.unwrap();
    for chunk in (1..=history).collect::<Vec<_>>().chunks(1_000) {
        let ops: Vec<StoreOp> = chunk
            .iter()
            .map(|&i| StoreOp::Append { room: room.clone(), message: message(i, i * 10, "a", None) })
            .collect();
        store.apply(history * 10, &ops).await.unwrap();
    }
    let by_time = |start_time, order, limit| HistoryQuery {
        viewer: None,
        range: HistoryRange::Time { start_time: Some(start_time), order },
        limit,
    };
    let cases = [
        (by_time(history * 10 + 1, HistoryOrder::Asc, 50), vec![]),
        (by_time(55, HistoryOrder::Desc, 50), vec![5, 4, 3, 2, 1]),
        (by_time(100_000, HistoryOrder::Asc, 3), vec![10_000, 10_001, 10_002]),
        (by_time(100_000, HistoryOrder::Desc, 3), vec![10_000, 9_999, 9_998]),
    ];
    for (query, expected) in cases {
        let before = store.history_visits();
        let page = store.history(&room, &query, history * 10).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, expected, "{query:?}");
        assert_eq!((page.first_seq, page.last_seq), (1, history));
        let read = store.history_visits() - before;
        assert!(read <= 60, "{query:?} read {read} stored messages");
    }
}
