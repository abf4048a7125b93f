//! roomkit's durable store: rooms and chatroom history in an embedded [redb] database, one
//! file in a data directory.
//!
//! Durability contract: [`MessageStore::apply`] returns only after its operations are
//! committed; with [`Durability::Immediate`] (the default) they are on disk first — appended
//! to the journal (`roomkit.journal`, see [`journal`]) and fsynced, then committed to the
//! database without waiting for it; the first commit after [`RedbConfig::checkpoint_interval`]
//! is a durable checkpoint instead, which empties the journal — so an acknowledged message
//! survives a crash or power loss: opening the store applies the journal's records after the
//! last checkpoint. The server calls
//! `apply` once per group of shard commits, so under load many messages share one fsync
//! (group commit). [`Durability::Eventual`] fsyncs at most once per
//! [`EVENTUAL_SYNC_INTERVAL`]: faster under load, and a crash may lose the acknowledged
//! messages of up to that interval (it never corrupts the database).
//!
//! Layout (format [`FORMAT_VERSION`]):
//!
//! - `meta`: `"format"` → the format version; `"next_room_id"` → the next chatroom id;
//!   `"journal_seq"` → the last journal record the database holds.
//! - `room_records`: room uuid → its [`RoomRecord`] (a versioned, checksummed record, see
//!   [`record`]).
//! - `chatrooms`: room uuid → `(id, last_seq, kept)`: a number standing for the room in
//!   message keys, its newest sequence number (which outlives retention) and how many of its
//!   messages are stored (so that retention by count needs no counting).
//! - `chat_messages`: `(id, seq)` → the message record (binary, checksummed).
//!
//! Keys are fixed-width integers, and retention deletes from the front of a chatroom's range
//! and stops at the first message it keeps: a commit costs the same however long the history
//! is. A record that fails its checksum is never served: history leaves it out and reports it
//! in [`HistoryPage::corrupt`]. [`RedbStore::open`] refuses a file that does not open cleanly
//! (see [`OpenError`]); [`check()`] verifies every record of a data directory.
//!
//! A database of format 1 (messages as JSON keyed by room uuid strings, no checksums) is
//! converted on open, in one transaction.
//!
//! [redb]: https://docs.rs/redb

mod check;
pub mod journal;
mod migrate;
mod open;
pub mod record;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use async_trait::async_trait;
pub use check::{check, CheckReport};
use journal::{Journaled, JOURNAL_SEQ};
pub use open::OpenError;
use open::{guarded, open_database, prepare};
pub use record::{decode_message_record, encode_message_record, RecordError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use roomkit_core::store::{
    CorruptMessage, HistoryPage, HistoryQuery, HistoryRange, MessageStore, Retention, RoomRecord, StoreError,
    StoreOp,
};
use roomkit_protocol::{ChatMessage, HistoryOrder, RoomUuid};

/// The layout this build reads and writes.
pub const FORMAT_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ROOM_RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("room_records");
const CHATROOMS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("chatrooms");
const CHAT_MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("chat_messages");

/// With [`Durability::Eventual`], the longest time between two fsynced commits.
pub const EVENTUAL_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The default of [`RedbConfig::checkpoint_interval`].
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The default of [`RedbConfig::checkpoint_journal_bytes`].
pub const CHECKPOINT_JOURNAL_BYTES: u64 = 4 << 20;

/// The database file inside the data directory.
pub const FILE_NAME: &str = "roomkit.redb";

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync before `apply` returns (default): acknowledged means on disk.
    #[default]
    Immediate,
    /// fsync at most once per [`EVENTUAL_SYNC_INTERVAL`]: a crash may lose the commits of
    /// up to that interval.
    Eventual,
}

/// Settings of a [`RedbStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbConfig {
    /// How long messages are kept.
    pub retention: Retention,
    /// Whether commits wait for the disk.
    pub durability: Durability,
    /// With [`Durability::Immediate`]: the first commit this long after the last checkpoint
    /// is a checkpoint (a durable database commit, after which the journal is emptied)...
    pub checkpoint_interval: std::time::Duration,
    /// ...and so is the first once the journal holds this many bytes.
    pub checkpoint_journal_bytes: u64,
}

impl Default for RedbConfig {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            durability: Durability::default(),
            checkpoint_interval: CHECKPOINT_INTERVAL,
            checkpoint_journal_bytes: CHECKPOINT_JOURNAL_BYTES,
        }
    }
}

/// A chatroom's row in `chatrooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chatroom {
    /// Stands for the room in message keys; never reused.
    id: u64,
    /// The newest sequence number ever stored.
    last_seq: u64,
    /// How many messages are stored.
    kept: u64,
}

impl Chatroom {
    fn row(self) -> (u64, u64, u64) {
        (self.id, self.last_seq, self.kept)
    }

    fn from_row((id, last_seq, kept): (u64, u64, u64)) -> Self {
        Self { id, last_seq, kept }
    }

    /// The keys of its messages.
    fn keys(self) -> std::ops::RangeInclusive<(u64, u64)> {
        (self.id, 0)..=(self.id, u64::MAX)
    }
}

/// The durable store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    config: RedbConfig,
    path: PathBuf,
    /// When a commit was last fsynced (for [`Durability::Eventual`]).
    last_sync: Arc<std::sync::Mutex<std::time::Instant>>,
    /// The journal (for [`Durability::Immediate`]); held for a whole commit, so that its
    /// records are in the order of the database's commits.
    journal: Arc<std::sync::Mutex<Journaled>>,
    /// Messages retention has read, kept or deleted, since the store was opened.
    retention_visits: Arc<AtomicU64>,
    /// Messages history reads have read since the store was opened.
    history_visits: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).field("config", &self.config).finish()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedbStore {
    /// Opens the store in `data_dir`, creating the directory and an empty database if there is
    /// no database file. A file that is there but does not open cleanly is refused, never
    /// replaced: see [`OpenError`] and [`RedbStore::move_aside`]. A format-1 database is
    /// converted.
    pub fn open(data_dir: impl AsRef<Path>, config: RedbConfig) -> Result<Self, OpenError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.into(), source })?;
        let path = dir.join(FILE_NAME);
        let db = open_database(&path, false)?;
        guarded(&path, || prepare(&db, &path))?;
        let last_sync = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        let io = |source| OpenError::Io { path: dir.join(journal::JOURNAL_FILE_NAME), source };
        let (journal, entries) = journal::Journal::open(dir).map_err(io)?;
        let journaled = Journaled {
            journal,
            next_seq: 1,
            last_checkpoint: std::time::Instant::now(),
            checkpoint_due: false,
            broken: false,
        };
        let store = Self {
            db: Arc::new(db),
            config,
            path,
            last_sync,
            journal: Arc::new(std::sync::Mutex::new(journaled)),
            retention_visits: Arc::default(),
            history_visits: Arc::default(),
        };
        let journal_path = dir.join(journal::JOURNAL_FILE_NAME);
        let replay_failed = |e: StoreError| OpenError::Damaged {
            path: journal_path.clone(),
            reason: format!("applying it: {}", e.0),
        };
        guarded(&journal_path, || store.replay(entries).map_err(replay_failed))?;
        Ok(store)
    }

    /// Renames the database file of `data_dir` (if there is one) to
    /// `roomkit.redb.damaged-<unix seconds>` beside it, so that the next [`open`](Self::open)
    /// starts empty while the old file stays for inspection; its journal goes aside with it
    /// (`roomkit.journal.damaged-…`), since its records belong to the old database. Returns
    /// the database's new name.
    pub fn move_aside(data_dir: impl AsRef<Path>) -> std::io::Result<Option<PathBuf>> {
        let path = data_dir.as_ref().join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let journal = data_dir.as_ref().join(journal::JOURNAL_FILE_NAME);
        if journal.exists() {
            let suffix = format!(
                "damaged-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            std::fs::rename(
                &journal,
                journal.with_file_name(format!("{}.{suffix}", journal::JOURNAL_FILE_NAME)),
            )?;
        }
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut aside = path.with_file_name(format!("{FILE_NAME}.damaged-{secs}"));
        let mut n = 1;
        while aside.exists() {
            aside = path.with_file_name(format!("{FILE_NAME}.damaged-{secs}-{n}"));
            n += 1;
        }
        std::fs::rename(&path, &aside)?;
        Ok(Some(aside))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages retention has read (kept or deleted) since the store was opened: the work it
    /// does, which stays proportional to what it deletes, not to the history's length.
    #[doc(hidden)]
    pub fn retention_visits(&self) -> u64 {
        self.retention_visits.load(Ordering::Relaxed)
    }

    /// Messages history reads have read (returned or skipped) since the store was opened: a
    /// read by time costs a seek and the messages of its range, not the whole chatroom.
    #[doc(hidden)]
    pub fn history_visits(&self) -> u64 {
        self.history_visits.load(Ordering::Relaxed)
    }

    /// The lowest sequence number from which the messages of chatroom `id` are `past` their
    /// time: a binary search over the keys, reading one message per step. Messages are timed
    /// when accepted, in number order, so `past` holds from some message on.
    fn seek(
        &self,
        messages: &impl ReadableTable<(u64, u64), &'static [u8]>,
        id: u64,
        last_seq: u64,
        past: impl Fn(u64) -> bool,
    ) -> Result<u64, StoreError> {
        let (mut low, mut high) = (0u64, last_seq.saturating_add(1));
        while low < high {
            let mid = low + (high - low) / 2;
            let first =
                messages.range((id, mid)..=(id, u64::MAX)).map_err(err)?.next().transpose().map_err(err)?;
            self.history_visits.fetch_add(1, Ordering::Relaxed);
            if first.is_none_or(|(_, value)| past(record::time_of(value.value()))) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(low)
    }

    fn apply_blocking(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        if self.config.durability == Durability::Eventual {
            let mut txn = self.db.begin_write().map_err(err)?;
            let durability = {
                let mut last = self.last_sync.lock().expect("not poisoned");
                if last.elapsed() >= EVENTUAL_SYNC_INTERVAL {
                    *last = std::time::Instant::now();
                    redb::Durability::Immediate
                } else {
                    redb::Durability::None
                }
            };
            txn.set_durability(durability).map_err(err)?;
            self.write_ops(&txn, now, ops)?;
            return txn.commit().map_err(err);
        }
        // A panic in a write leaves the journal's state as the last finished step left it.
        let mut journaled = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if journaled.broken {
            return Err(StoreError(
                "the journal could not be cut back after a failed write: restart the server".into(),
            ));
        }
        let seq = journaled.next_seq;
        let checkpoint = journaled.checkpoint_due
            || journaled.last_checkpoint.elapsed() >= self.config.checkpoint_interval
            || journaled.journal.len >= self.config.checkpoint_journal_bytes;
        let mut txn = self.db.begin_write().map_err(err)?;
        self.write_ops(&txn, now, ops)?;
        txn.open_table(META).map_err(err)?.insert(JOURNAL_SEQ, seq).map_err(err)?;
        if checkpoint {
            // A durable commit: it holds every record of the journal, which can go.
            txn.set_durability(redb::Durability::Immediate).map_err(err)?;
            txn.commit().map_err(err)?;
            journaled.next_seq += 1;
            journaled.last_checkpoint = std::time::Instant::now();
            // Should emptying fail, the records stay, all at or below `journal_seq` (a replay
            // skips them), and every commit is a checkpoint until emptying succeeds.
            journaled.checkpoint_due = journaled.journal.rewind(0).is_err();
            return Ok(());
        }
        txn.set_durability(redb::Durability::None).map_err(err)?;
        let before = journaled.journal.len;
        // On disk before the database commit: once `apply` returns, a crash finds it here.
        let written =
            journaled.journal.append(seq, now, ops).map_err(err).and_then(|()| txn.commit().map_err(err));
        if let Err(e) = written {
            // Nothing of it may come back at the next open: cut the record off, or else mark
            // it as held (a durable commit of `journal_seq` alone), so that a replay skips it.
            if journaled.journal.rewind(before).is_err() {
                if self.mark_held(seq).is_ok() {
                    journaled.next_seq += 1;
                } else {
                    journaled.broken = true;
                }
            }
            return Err(e);
        }
        journaled.next_seq += 1;
        Ok(())
    }

    /// Applies `ops` to the tables in `txn`.
    fn write_ops(&self, txn: &redb::WriteTransaction, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut meta = txn.open_table(META).map_err(err)?;
        let mut messages = txn.open_table(CHAT_MESSAGES).map_err(err)?;
        let mut rooms = txn.open_table(ROOM_RECORDS).map_err(err)?;
        let mut chatrooms = txn.open_table(CHATROOMS).map_err(err)?;
        let mut appended: Vec<&RoomUuid> = Vec::new();
        for op in ops {
            match op {
                StoreOp::Append { room, message } => {
                    let mut chat = match chatrooms.get(room.as_str()).map_err(err)? {
                        Some(row) => Chatroom::from_row(row.value()),
                        None => {
                            let id = meta.get("next_room_id").map_err(err)?.map_or(1, |v| v.value());
                            meta.insert("next_room_id", id + 1).map_err(err)?;
                            Chatroom { id, last_seq: 0, kept: 0 }
                        }
                    };
                    let record = encode_message_record(message);
                    let replaced =
                        messages.insert((chat.id, message.seq), record.as_slice()).map_err(err)?.is_some();
                    chat.kept += u64::from(!replaced);
                    chat.last_seq = chat.last_seq.max(message.seq);
                    chatrooms.insert(room.as_str(), chat.row()).map_err(err)?;
                    if !appended.contains(&room) {
                        appended.push(room);
                    }
                }
                StoreOp::PutRoom(record) => {
                    let bytes = record::encode_room_record(record);
                    rooms.insert(record.info.room_uuid.as_str(), bytes.as_slice()).map_err(err)?;
                }
                StoreOp::DeleteRoom(room) => {
                    rooms.remove(room.as_str()).map_err(err)?;
                    let chat =
                        chatrooms.remove(room.as_str()).map_err(err)?.map(|r| Chatroom::from_row(r.value()));
                    if let Some(chat) = chat {
                        messages.retain_in(chat.keys(), |_, _| false).map_err(err)?;
                    }
                    appended.retain(|r| *r != room);
                }
            }
        }
        for room in appended {
            self.enforce_retention(&mut messages, &mut chatrooms, room, now)?;
        }
        Ok(())
    }

    /// Deletes the oldest messages of `room` that retention no longer keeps: it walks from the
    /// front of the chatroom's range and stops at the first message it keeps.
    fn enforce_retention(
        &self,
        messages: &mut redb::Table<(u64, u64), &[u8]>,
        chatrooms: &mut redb::Table<&str, (u64, u64, u64)>,
        room: &RoomUuid,
        now: u64,
    ) -> Result<(), StoreError> {
        let Retention { max_messages, max_age_ms } = self.config.retention;
        let Some(mut chat) =
            chatrooms.get(room.as_str()).map_err(err)?.map(|r| Chatroom::from_row(r.value()))
        else {
            return Ok(());
        };
        let excess = max_messages.map_or(0, |max| chat.kept.saturating_sub(max));
        let cutoff = max_age_ms.map(|age| now.saturating_sub(age));
        if excess == 0 && cutoff.is_none() {
            return Ok(());
        }
        let mut doomed = Vec::new();
        for entry in messages.range(chat.keys()).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            self.retention_visits.fetch_add(1, Ordering::Relaxed);
            let too_many = (doomed.len() as u64) < excess;
            if !too_many && cutoff.is_none_or(|cutoff| record::time_of(value.value()) >= cutoff) {
                break;
            }
            doomed.push(key.value());
        }
        for key in &doomed {
            messages.remove(*key).map_err(err)?;
        }
        chat.kept -= doomed.len() as u64;
        chatrooms.insert(room.as_str(), chat.row()).map_err(err)?;
        Ok(())
    }

    fn history_blocking(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let chatrooms = txn.open_table(CHATROOMS).map_err(err)?;
        let Some(chat) = chatrooms.get(room.as_str()).map_err(err)?.map(|r| Chatroom::from_row(r.value()))
        else {
            return Ok(HistoryPage::default());
        };
        let messages = txn.open_table(CHAT_MESSAGES).map_err(err)?;
        let last_seq = chat.last_seq;
        let cutoff = self.config.retention.max_age_ms.map_or(0, |age| now.saturating_sub(age));
        // Retention by age also applies to reads: old messages are invisible before they are
        // deleted by the next append.
        let kept_from = self.seek(&messages, chat.id, last_seq, |time| time >= cutoff)?;
        let first_seq = match messages.range((chat.id, kept_from)..=(chat.id, u64::MAX)).map_err(err)?.next()
        {
            Some(entry) => entry.map_err(err)?.0.value().1,
            None => last_seq + u64::from(last_seq > 0),
        };
        let mut page = HistoryPage { messages: Vec::new(), first_seq, last_seq, corrupt: Vec::new() };
        // Decodes and verifies one stored message; true once the page is full.
        let mut take = |seq: u64, value: &[u8]| {
            match verify(seq, value) {
                Ok(message) => {
                    if query.viewer.as_ref().is_none_or(|v| message.is_visible_to(v)) {
                        page.messages.push(Arc::new(message));
                    }
                }
                Err(reason) => page.corrupt.push(CorruptMessage { seq, reason }),
            }
            page.messages.len() >= query.limit
        };
        let id = chat.id;
        match query.range {
            HistoryRange::AfterSeq(after) => {
                for entry in messages.range((id, after.saturating_add(1))..=(id, u64::MAX)).map_err(err)? {
                    let (key, value) = entry.map_err(err)?;
                    self.history_visits.fetch_add(1, Ordering::Relaxed);
                    if record::time_of(value.value()) >= cutoff && take(key.value().1, value.value()) {
                        break;
                    }
                }
            }
            HistoryRange::Time { start_time, order: HistoryOrder::Asc } => {
                // Seeks the first message at or after `from` instead of walking up to it.
                let from = start_time.unwrap_or(0).max(cutoff);
                let start = self.seek(&messages, id, last_seq, |time| time >= from)?;
                for entry in messages.range((id, start)..=(id, u64::MAX)).map_err(err)? {
                    let (key, value) = entry.map_err(err)?;
                    self.history_visits.fetch_add(1, Ordering::Relaxed);
                    if record::time_of(value.value()) >= from && take(key.value().1, value.value()) {
                        break;
                    }
                }
            }
            HistoryRange::Time { start_time, order: HistoryOrder::Desc } => {
                // Seeks past the last message at or before `until` instead of walking down to it.
                let until = start_time.unwrap_or(u64::MAX);
                let end = self.seek(&messages, id, last_seq, |time| time > until)?;
                for entry in messages.range((id, 0)..(id, end)).map_err(err)?.rev() {
                    let (key, value) = entry.map_err(err)?;
                    self.history_visits.fetch_add(1, Ordering::Relaxed);
                    let time = record::time_of(value.value());
                    if time < cutoff {
                        break;
                    }
                    if time <= until && take(key.value().1, value.value()) {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    fn rooms_blocking(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let rooms = txn.open_table(ROOM_RECORDS).map_err(err)?;
        let chatrooms = txn.open_table(CHATROOMS).map_err(err)?;
        let mut out = Vec::new();
        for entry in rooms.iter().map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let record = record::decode_room_record(value.value())
                .map_err(|e| err(format!("the record of room {} is corrupt: {e}", key.value())))?;
            let last = chatrooms
                .get(key.value())
                .map_err(err)?
                .map_or(0, |v| Chatroom::from_row(v.value()).last_seq);
            out.push((record, last));
        }
        Ok(out)
    }
}

/// Decodes the message stored under `seq`, checking that it is the one it claims to be.
fn verify(seq: u64, value: &[u8]) -> Result<ChatMessage, String> {
    match decode_message_record(value) {
        Ok(m) if m.seq == seq => Ok(m),
        Ok(m) => Err(format!("stored under sequence number {seq} but numbered {}", m.seq)),
        Err(e) => Err(e.to_string()),
    }
}

#[async_trait]
impl MessageStore for RedbStore {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let store = self.clone();
        let ops = ops.to_vec();
        tokio::task::spawn_blocking(move || store.apply_blocking(now, &ops)).await.map_err(err)?
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        let (store, room, query) = (self.clone(), room.clone(), query.clone());
        tokio::task::spawn_blocking(move || store.history_blocking(&room, &query, now)).await.map_err(err)?
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.rooms_blocking()).await.map_err(err)?
    }
}
