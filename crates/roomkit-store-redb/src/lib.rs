//! roomkit's durable store: rooms and chatroom history in an embedded [redb] database, one
//! file in a data directory.
//!
//! Durability contract: [`MessageStore::apply`] returns only after its operations are
//! committed; with [`Durability::Immediate`] (the default) the commit is fsynced first, so an
//! acknowledged message survives a crash or power loss. The server calls `apply` once per
//! shard wake-up with every operation of that wake-up, so under load many messages share one
//! fsync (group commit). [`Durability::Eventual`] fsyncs at most once per
//! [`EVENTUAL_SYNC_INTERVAL`]: faster under load, and a crash may lose the acknowledged
//! messages of up to that interval (it never corrupts the database).
//!
//! Layout: `messages` maps `(room, seq)` to the message's time (8 bytes, big-endian) followed
//! by its JSON; `rooms` maps a room uuid to its [`RoomRecord`] as JSON; `seqs` keeps each
//! room's newest sequence number, which outlives retention.
//!
//! [redb]: https://docs.rs/redb

pub mod record;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use roomkit_core::store::{
    HistoryPage, HistoryQuery, HistoryRange, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
};
use roomkit_protocol::{ChatMessage, HistoryOrder, RoomUuid, SharedMessage};

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const SEQS: TableDefinition<&str, u64> = TableDefinition::new("seqs");

/// With [`Durability::Eventual`], the longest time between two fsynced commits.
pub const EVENTUAL_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedbConfig {
    /// How long messages are kept.
    pub retention: Retention,
    /// Whether commits wait for the disk.
    pub durability: Durability,
}

/// The durable store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    config: RedbConfig,
    path: PathBuf,
    /// When a commit was last fsynced (for [`Durability::Eventual`]).
    last_sync: Arc<std::sync::Mutex<std::time::Instant>>,
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
    /// Opens (creating if missing) the store in `data_dir`.
    pub fn open(data_dir: impl AsRef<Path>, config: RedbConfig) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| err(format!("opening {}: {e}", path.display())))?;
        // Create the tables so that readers find them.
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(MESSAGES).map_err(err)?;
        txn.open_table(ROOMS).map_err(err)?;
        txn.open_table(SEQS).map_err(err)?;
        txn.commit().map_err(err)?;
        let last_sync = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        Ok(Self { db: Arc::new(db), config, path, last_sync })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn apply_blocking(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        let durability = match self.config.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Eventual => {
                let mut last = self.last_sync.lock().expect("not poisoned");
                if last.elapsed() >= EVENTUAL_SYNC_INTERVAL {
                    *last = std::time::Instant::now();
                    redb::Durability::Immediate
                } else {
                    redb::Durability::None
                }
            }
        };
        txn.set_durability(durability).map_err(err)?;
        {
            let mut messages = txn.open_table(MESSAGES).map_err(err)?;
            let mut rooms = txn.open_table(ROOMS).map_err(err)?;
            let mut seqs = txn.open_table(SEQS).map_err(err)?;
            let mut appended: Vec<&RoomUuid> = Vec::new();
            for op in ops {
                match op {
                    StoreOp::Append { room, message } => {
                        let mut value = message.time.to_be_bytes().to_vec();
                        serde_json::to_writer(&mut value, message.as_ref()).map_err(err)?;
                        messages.insert((room.as_str(), message.seq), value.as_slice()).map_err(err)?;
                        let last = seqs.get(room.as_str()).map_err(err)?.map_or(0, |v| v.value());
                        if message.seq > last {
                            seqs.insert(room.as_str(), message.seq).map_err(err)?;
                        }
                        if !appended.contains(&room) {
                            appended.push(room);
                        }
                    }
                    StoreOp::PutRoom(record) => {
                        let json = serde_json::to_vec(record).map_err(err)?;
                        rooms.insert(record.info.room_uuid.as_str(), json.as_slice()).map_err(err)?;
                    }
                    StoreOp::DeleteRoom(room) => {
                        rooms.remove(room.as_str()).map_err(err)?;
                        seqs.remove(room.as_str()).map_err(err)?;
                        let keys = keys_in(&messages, room, 0, u64::MAX)?;
                        for seq in keys {
                            messages.remove((room.as_str(), seq)).map_err(err)?;
                        }
                        appended.retain(|r| *r != room);
                    }
                }
            }
            for room in appended {
                self.enforce_retention(&mut messages, room, now)?;
            }
        }
        txn.commit().map_err(err)
    }

    /// Deletes the messages of `room` that retention no longer keeps.
    fn enforce_retention(
        &self,
        messages: &mut redb::Table<(&str, u64), &[u8]>,
        room: &RoomUuid,
        now: u64,
    ) -> Result<(), StoreError> {
        let Retention { max_messages, max_age_ms } = self.config.retention;
        let mut doomed = Vec::new();
        if let Some(max) = max_messages {
            let all = keys_in(messages, room, 0, u64::MAX)?;
            let excess = all.len().saturating_sub(max as usize);
            doomed.extend(all.into_iter().take(excess));
        }
        if let Some(age) = max_age_ms {
            let cutoff = now.saturating_sub(age);
            for entry in messages.range((room.as_str(), 0)..=(room.as_str(), u64::MAX)).map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                if time_of(value.value()) >= cutoff {
                    break;
                }
                doomed.push(key.value().1);
            }
        }
        for seq in doomed {
            messages.remove((room.as_str(), seq)).map_err(err)?;
        }
        Ok(())
    }

    fn history_blocking(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let messages = txn.open_table(MESSAGES).map_err(err)?;
        let seqs = txn.open_table(SEQS).map_err(err)?;
        let last_seq = seqs.get(room.as_str()).map_err(err)?.map_or(0, |v| v.value());
        let cutoff = self.config.retention.max_age_ms.map_or(0, |age| now.saturating_sub(age));
        let range = messages.range((room.as_str(), 0)..=(room.as_str(), u64::MAX)).map_err(err)?;
        // Retention by age also applies to reads: old messages are invisible before they are
        // deleted by the next append.
        let mut first_seq = 0;
        for entry in messages.range((room.as_str(), 0)..=(room.as_str(), u64::MAX)).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            if time_of(value.value()) >= cutoff {
                first_seq = key.value().1;
                break;
            }
        }
        if first_seq == 0 && last_seq > 0 {
            first_seq = last_seq + 1;
        }
        let visible = |m: &ChatMessage| query.viewer.as_ref().is_none_or(|v| m.is_visible_to(v));
        let mut out: Vec<SharedMessage> = Vec::new();
        let mut take = |value: &[u8]| -> Result<bool, StoreError> {
            let message = decode(value)?;
            if visible(&message) {
                out.push(Arc::new(message));
            }
            Ok(out.len() >= query.limit)
        };
        match query.range {
            HistoryRange::AfterSeq(after) => {
                let start = after.saturating_add(1);
                for entry in
                    messages.range((room.as_str(), start)..=(room.as_str(), u64::MAX)).map_err(err)?
                {
                    let (_, value) = entry.map_err(err)?;
                    if time_of(value.value()) >= cutoff && take(value.value())? {
                        break;
                    }
                }
            }
            HistoryRange::Time { start_time, order: HistoryOrder::Asc } => {
                let from = start_time.unwrap_or(0).max(cutoff);
                for entry in range {
                    let (_, value) = entry.map_err(err)?;
                    if time_of(value.value()) >= from && take(value.value())? {
                        break;
                    }
                }
            }
            HistoryRange::Time { start_time, order: HistoryOrder::Desc } => {
                let until = start_time.unwrap_or(u64::MAX);
                for entry in range.rev() {
                    let (_, value) = entry.map_err(err)?;
                    let time = time_of(value.value());
                    if time < cutoff {
                        break;
                    }
                    if time <= until && take(value.value())? {
                        break;
                    }
                }
            }
        }
        Ok(HistoryPage { messages: out, first_seq, last_seq })
    }

    fn rooms_blocking(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let rooms = txn.open_table(ROOMS).map_err(err)?;
        let seqs = txn.open_table(SEQS).map_err(err)?;
        let mut out = Vec::new();
        for entry in rooms.iter().map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let record: RoomRecord = serde_json::from_slice(value.value()).map_err(err)?;
            let last = seqs.get(key.value()).map_err(err)?.map_or(0, |v| v.value());
            out.push((record, last));
        }
        Ok(out)
    }
}

fn keys_in(
    messages: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    room: &RoomUuid,
    from: u64,
    to: u64,
) -> Result<Vec<u64>, StoreError> {
    let mut keys = Vec::new();
    for entry in messages.range((room.as_str(), from)..=(room.as_str(), to)).map_err(err)? {
        keys.push(entry.map_err(err)?.0.value().1);
    }
    Ok(keys)
}

fn time_of(value: &[u8]) -> u64 {
    value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

fn decode(value: &[u8]) -> Result<ChatMessage, StoreError> {
    serde_json::from_slice(value.get(8..).unwrap_or_default()).map_err(err)
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
