//! A damaged database is refused or reported, never served as genuine: an empty, truncated or
//! overwritten file does not open; a message edited on disk is left out of history and
//! reported; `check` finds what is wrong; a format-1 database is converted.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use redb::{Database, ReadableDatabase, TableDefinition};
use roomkit_core::{
    conformance::store::{message, record},
    store::{HistoryQuery, HistoryRange, MessageStore, RoomRecord, StoreOp},
};
use roomkit_protocol::{ChatMessage, MessageBody, RoomUuid};
use roomkit_store_redb::{check, OpenError, RedbConfig, RedbStore, FILE_NAME, FORMAT_VERSION};

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "roomkit-redb-damage-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn room(s: &str) -> RoomUuid {
    s.parse().unwrap()
}

/// Message `seq` of room `r`, with a text found nowhere else in the file.
fn marked(r: &str, seq: u64) -> ChatMessage {
    let mut m = (*message(seq, seq, "alice", None)).clone();
    m.body = MessageBody::Text { text: format!("marker-{r}-{seq:04}") };
    m
}

/// Two rooms with ten messages each, written and closed.
async fn fill(dir: &Path) {
    let store = RedbStore::open(dir, RedbConfig::default()).unwrap();
    let mut ops = vec![StoreOp::PutRoom(record("r1")), StoreOp::PutRoom(record("r2"))];
    for r in ["r1", "r2"] {
        ops.extend((1..=10).map(|i| StoreOp::Append { room: room(r), message: marked(r, i).into() }));
    }
    store.apply(100, &ops).await.unwrap();
}

/// Replaces every occurrence of `from` in the database file by `to` (same length): redb
/// copies pages on write, so an old copy may be lying around too. Returns how many.
fn edit(dir: &Path, from: &str, to: &str) -> usize {
    assert_eq!(from.len(), to.len());
    let path = dir.join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from.as_bytes()) {
        bytes[at + i..at + i + to.len()].copy_from_slice(to.as_bytes());
        at += i + to.len();
        n += 1;
    }
    std::fs::write(&path, bytes).unwrap();
    n
}

fn all(limit: usize) -> HistoryQuery {
    HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit }
}

fn damaged(result: Result<RedbStore, OpenError>) -> String {
    match result {
        Err(OpenError::Damaged { reason, .. }) => reason,
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn an_empty_file_is_refused_and_left_as_it_is() {
    let dir = temp_dir("empty");
    std::fs::write(dir.join(FILE_NAME), b"").unwrap();
    let reason = damaged(RedbStore::open(&dir, RedbConfig::default()));
    assert!(reason.contains("empty (0 bytes)"), "{reason}");
    assert_eq!(std::fs::metadata(dir.join(FILE_NAME)).unwrap().len(), 0, "not initialised in place");
    let report = check(&dir);
    assert!(!report.is_ok());
    assert!(report.problems[0].contains("empty"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_overwritten_file_is_refused() {
    let dir = temp_dir("truncated");
    fill(&dir).await;
    let path = dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    damaged(RedbStore::open(&dir, RedbConfig::default()));
    assert!(!check(&dir).is_ok());

    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..bytes.len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&path, garbage).unwrap();
    damaged(RedbStore::open(&dir, RedbConfig::default()));
    assert!(!check(&dir).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_message_is_left_out_of_history_and_reported() {
    let dir = temp_dir("edited");
    fill(&dir).await;
    assert!(edit(&dir, "marker-r1-0004", "marker-r1-9999") >= 1);
    let store = RedbStore::open(&dir, RedbConfig::default()).expect("the rooms are intact: it opens");
    let page = store.history(&room("r1"), &all(100), 100).await.unwrap();
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 5, 6, 7, 8, 9, 10], "the edited message is not served");
    assert!(page.messages.iter().all(|m| !m.text().unwrap_or_default().contains("9999")));
    assert_eq!(page.corrupt.len(), 1);
    assert_eq!(page.corrupt[0].seq, 4);
    assert!(page.corrupt[0].reason.contains("checksum"), "{:?}", page.corrupt);
    let other = store.history(&room("r2"), &all(100), 100).await.unwrap();
    assert_eq!((other.messages.len(), other.corrupt.len()), (10, 0), "the other room is unaffected");
    drop(store);

    let report = check(&dir);
    assert!(!report.is_ok(), "{report}");
    assert!(
        report.problems.iter().any(|p| p.contains("room r1 message 4") && p.contains("checksum")),
        "{report}"
    );
    assert_eq!((report.rooms, report.chatrooms, report.messages), (2, 2, 20), "{report}");
    let store = RedbStore::open(&dir, RedbConfig::default()).expect("check changed nothing");
    let page = store.history(&room("r1"), &all(100), 100).await.unwrap();
    assert_eq!((page.messages.len(), page.corrupt.len()), (9, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_room_record_stops_the_open() {
    let dir = temp_dir("room");
    fill(&dir).await;
    // The conformance record's name is the uppercased id.
    assert!(edit(&dir, "\"room_name\":\"R2\"", "\"room_name\":\"X2\"") >= 1);
    let reason = damaged(RedbStore::open(&dir, RedbConfig::default()));
    assert!(reason.contains("room r2") && reason.contains("checksum"), "{reason}");
    assert!(check(&dir).problems.iter().any(|p| p.contains("room r2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_healthy_store_and_counts_what_it_read() {
    let dir = temp_dir("healthy");
    fill(&dir).await;
    let report = check(&dir);
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.format, report.rooms, report.chatrooms, report.messages),
        (Some(FORMAT_VERSION), 2, 2, 20)
    );
    assert!(report.to_string().ends_with("result:   ok"), "{report}");
    RedbStore::open(&dir, RedbConfig::default()).expect("check leaves the store usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_is_refused_as_in_use_and_nothing_is_moved() {
    let dir = temp_dir("in-use");
    let _first = RedbStore::open(&dir, RedbConfig::default()).unwrap();
    assert!(matches!(RedbStore::open(&dir, RedbConfig::default()), Err(OpenError::InUse(_))));
}

#[test]
fn move_aside_keeps_the_old_file_beside_a_fresh_start() {
    let dir = temp_dir("aside");
    assert_eq!(RedbStore::move_aside(&dir).unwrap(), None, "nothing to move");
    std::fs::write(dir.join(FILE_NAME), b"").unwrap();
    // Its journal's records belong to it: they go aside too, not into the fresh store.
    let journal = dir.join(roomkit_store_redb::journal::JOURNAL_FILE_NAME);
    std::fs::write(&journal, b"RKJ1 records of the old database").unwrap();
    let aside = RedbStore::move_aside(&dir).unwrap().expect("moved");
    assert!(aside.file_name().unwrap().to_string_lossy().starts_with("roomkit.redb.damaged-"));
    assert!(aside.exists() && !dir.join(FILE_NAME).exists());
    assert!(!journal.exists(), "the journal went aside");
    let journal_aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("roomkit.journal.damaged-"));
    assert!(journal_aside, "kept beside it");
    RedbStore::open(&dir, RedbConfig::default()).expect("a fresh store");
}

#[test]
fn a_newer_format_is_refused() {
    let dir = temp_dir("newer");
    drop(RedbStore::open(&dir, RedbConfig::default()).unwrap());
    let db = Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .insert("format", FORMAT_VERSION + 1)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let result = RedbStore::open(&dir, RedbConfig::default());
    assert!(matches!(result, Err(OpenError::NewerFormat { found, .. }) if found == FORMAT_VERSION + 1));
}

/// A database as the first release wrote it: messages as JSON keyed by room uuid strings.
fn write_format_1(dir: &Path, rooms: &[RoomRecord], messages: &[(&str, ChatMessage)], seqs: &[(&str, u64)]) {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new("rooms")).unwrap();
        for r in rooms {
            table.insert(r.info.room_uuid.as_str(), serde_json::to_vec(r).unwrap().as_slice()).unwrap();
        }
        let mut table = txn.open_table(TableDefinition::<(&str, u64), &[u8]>::new("messages")).unwrap();
        for (r, m) in messages {
            let mut value = m.time.to_be_bytes().to_vec();
            serde_json::to_writer(&mut value, m).unwrap();
            table.insert((*r, m.seq), value.as_slice()).unwrap();
        }
        let mut table = txn.open_table(TableDefinition::<&str, u64>::new("seqs")).unwrap();
        for (r, last) in seqs {
            table.insert(*r, *last).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_database_is_converted_on_open() {
    let dir = temp_dir("format-1");
    let messages: Vec<(&str, ChatMessage)> =
        (3..=6).map(|i| ("r1", marked("r1", i))).chain([("r2", marked("r2", 1))]).collect();
    // r1 kept 3..=6 of its 8 (retention dropped 1 and 2; 7 and 8 failed to commit); r3 kept
    // none of its 5.
    write_format_1(&dir, &[record("r1"), record("r2")], &messages, &[("r1", 8), ("r2", 1), ("r3", 5)]);
    let store = RedbStore::open(&dir, RedbConfig::default()).expect("converted");
    let mut rooms = store.rooms().await.unwrap();
    rooms.sort_by(|a, b| a.0.info.room_uuid.cmp(&b.0.info.room_uuid));
    assert_eq!(rooms, [(record("r1"), 8), (record("r2"), 1)]);
    let page = store.history(&room("r1"), &all(100), 100).await.unwrap();
    let expected: Vec<ChatMessage> = (3..=6).map(|i| marked("r1", i)).collect();
    assert_eq!(page.messages.iter().map(|m| (**m).clone()).collect::<Vec<_>>(), expected);
    assert_eq!((page.first_seq, page.last_seq), (3, 8));
    let page = store.history(&room("r3"), &all(100), 100).await.unwrap();
    assert_eq!((page.messages.len(), page.first_seq, page.last_seq), (0, 6, 5), "numbering kept");
    store.apply(200, &[StoreOp::Append { room: room("r1"), message: marked("r1", 9).into() }]).await.unwrap();
    drop(store);
    let tables = table_names(&dir);
    assert!(!tables.iter().any(|t| matches!(t.as_str(), "messages" | "rooms" | "seqs")), "{tables:?}");
    let report = check(&dir);
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.rooms, report.chatrooms, report.messages), (2, 3, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_record_that_does_not_decode_stops_the_conversion_and_changes_nothing() {
    let dir = temp_dir("format-1-bad");
    write_format_1(&dir, &[record("r1")], &[("r1", marked("r1", 1))], &[("r1", 1)]);
    assert_eq!(edit(&dir, "marker-r1-0001\"", "marker-r1-0001X"), 1);
    let before = std::fs::read(dir.join(FILE_NAME)).unwrap();
    let reason = damaged(RedbStore::open(&dir, RedbConfig::default()));
    assert!(reason.contains("format 1") && reason.contains("room r1 message 1"), "{reason}");
    let tables = table_names(&dir);
    assert!(tables.iter().any(|t| t == "messages") && !tables.iter().any(|t| t == "meta"), "{tables:?}");
    assert!(!before.is_empty());
}

/// The names of the tables in the database file of `dir`.
fn table_names(dir: &std::path::Path) -> Vec<String> {
    let db = Database::open(dir.join(FILE_NAME)).unwrap();
    let read = db.begin_read().unwrap();
    let names = read.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_string()).collect();
    names
}
