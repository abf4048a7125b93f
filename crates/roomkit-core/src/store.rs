//! Durable history: the store trait, its in-memory implementation, and the queries both
//! answer.
//!
//! Core stays sans-IO: the registry collects *what* must be stored into a commit the driver
//! takes with [`RoomRegistry::take_commit`] and applies to a [`MessageStore`] in one
//! [`MessageStore::apply`] call (one durable commit), reporting the result with
//! [`RoomRegistry::handle_commit`]. The replies and deliveries that follow a store operation
//! are held back until then — so a message is acknowledged, and seen by anyone, only once it
//! is stored. History queries come out as [`Output::History`]: the store is the one source of
//! a chatroom's history.
//!
//! [`RoomRegistry::take_commit`]: crate::RoomRegistry::take_commit
//! [`RoomRegistry::handle_commit`]: crate::RoomRegistry::handle_commit
//! [`Output::History`]: crate::Output::History

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use roomkit_protocol::{HistoryOrder, RoomInfo, RoomUuid, SharedMessage, UserUuid};
use serde::{Deserialize, Serialize};

/// A room as it survives a restart: its state without its members (connections do not
/// survive a restart; members join again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// The room.
    pub info: RoomInfo,
    /// Its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// One change to make durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// A chatroom message was accepted.
    Append {
        /// The room whose chatroom it belongs to.
        room: RoomUuid,
        /// The message.
        message: SharedMessage,
    },
    /// A room was created or changed (lock, properties).
    PutRoom(RoomRecord),
    /// A room ended: forget it and its messages.
    DeleteRoom(RoomUuid),
}

/// Which messages a history query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// By time: `Desc` is at or before `start_time` (default: now), newest first; `Asc` at or
    /// after `start_time` (default: the beginning), oldest first.
    Time {
        /// Bound, in milliseconds since the Unix epoch.
        start_time: Option<u64>,
        /// Direction.
        order: HistoryOrder,
    },
    /// By sequence number: the messages after `after`, oldest first.
    AfterSeq(u64),
}

/// A history query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages this user may see (broadcasts, and directed messages to or from it);
    /// `None` for every message.
    pub viewer: Option<UserUuid>,
    /// Which messages.
    pub range: HistoryRange,
    /// At most this many.
    pub limit: usize,
}

/// The answer to a history query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// The messages, in the order the range asks for.
    pub messages: Vec<SharedMessage>,
    /// The oldest sequence number still kept; 0 if the chatroom never had a message. When
    /// retention dropped every message, `last_seq + 1`.
    pub first_seq: u64,
    /// The newest sequence number; 0 if none.
    pub last_seq: u64,
    /// Stored messages the page left out because they failed verification (the store found
    /// them changed on disk); empty unless the store is damaged. The driver logs them.
    pub corrupt: Vec<CorruptMessage>,
}

/// A stored message that failed verification when it was read: not served, only reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptMessage {
    /// The sequence number it is stored under.
    pub seq: u64,
    /// What is wrong with it (e.g. a checksum mismatch).
    pub reason: String,
}

/// How long chatroom messages are kept. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many messages per chatroom (the oldest go first).
    pub max_messages: Option<u64>,
    /// Keep messages at most this old, in milliseconds.
    pub max_age_ms: Option<u64>,
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store error: {0}")]
pub struct StoreError(pub String);

/// Where chatroom messages and rooms are kept. Implementations: [`MemoryStore`] here, and
/// `roomkit-store-redb` on disk. Every implementation runs the store conformance suite.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Makes `ops` durable, all or nothing, then returns. `now` drives age retention.
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError>;

    /// Reads a room's chatroom history.
    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError>;

    /// Every stored room, with its chatroom's newest sequence number (0 if none).
    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError>;

    /// One stored room, with its chatroom's newest sequence number; `None` if it is not
    /// stored. A cluster node loads a room this way when it takes the room over. The default
    /// reads [`rooms`](Self::rooms); a store with many rooms answers it directly.
    async fn room(&self, uuid: &RoomUuid) -> Result<Option<(RoomRecord, u64)>, StoreError> {
        Ok(self.rooms().await?.into_iter().find(|(record, _)| &record.info.room_uuid == uuid))
    }

    /// Whether a commit waits on something outside the process (a sync to disk, a network
    /// round trip). A driver groups such commits from several callers into one (one sync for
    /// all); a store that answers at once (false: [`MemoryStore`]) is better called directly,
    /// since handing its commits to a committer only adds two task hops to every
    /// acknowledgement. The default is true.
    fn commit_waits(&self) -> bool {
        true
    }
}

/// Picks a page out of messages kept in sequence order, as [`MemoryStore`] answers a query.
pub fn select<'a>(
    messages: impl DoubleEndedIterator<Item = &'a SharedMessage>,
    query: &HistoryQuery,
) -> Vec<SharedMessage> {
    let visible = |m: &&SharedMessage| query.viewer.as_ref().is_none_or(|v| m.is_visible_to(v));
    match query.range {
        HistoryRange::Time { start_time, order: HistoryOrder::Desc } => {
            let until = start_time.unwrap_or(u64::MAX);
            messages.rev().filter(|m| m.time <= until).filter(visible).take(query.limit).cloned().collect()
        }
        HistoryRange::Time { start_time, order: HistoryOrder::Asc } => {
            let from = start_time.unwrap_or(0);
            messages.filter(|m| m.time >= from).filter(visible).take(query.limit).cloned().collect()
        }
        HistoryRange::AfterSeq(after) => {
            messages.filter(|m| m.seq > after).filter(visible).take(query.limit).cloned().collect()
        }
    }
}

/// The in-memory store: for tests and for embedding without persistence. Same semantics as
/// the durable store, including retention; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    retention: Retention,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    rooms: HashMap<RoomUuid, RoomRecord>,
    messages: HashMap<RoomUuid, BTreeMap<u64, SharedMessage>>,
    /// The newest sequence number ever stored per room, kept even when retention has
    /// dropped every message: sequence numbers never go back.
    last_seq: HashMap<RoomUuid, u64>,
}

impl MemoryStore {
    /// An empty store keeping messages as `retention` says.
    pub fn new(retention: Retention) -> Self {
        Self { retention, state: Mutex::default() }
    }

    /// An empty store behind an `Arc`, ready to hand to a server.
    pub fn shared(retention: Retention) -> Arc<dyn MessageStore> {
        Arc::new(Self::new(retention))
    }
}

/// Drops what retention no longer keeps from one chatroom's messages.
fn retain(messages: &mut BTreeMap<u64, SharedMessage>, retention: Retention, now: u64) {
    if let Some(max) = retention.max_messages {
        while messages.len() as u64 > max {
            messages.pop_first();
        }
    }
    if let Some(age) = retention.max_age_ms {
        let oldest_kept = now.saturating_sub(age);
        while messages.first_key_value().is_some_and(|(_, m)| m.time < oldest_kept) {
            messages.pop_first();
        }
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    fn commit_waits(&self) -> bool {
        false
    }

    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("not poisoned");
        for op in ops {
            match op {
                StoreOp::Append { room, message } => {
                    let messages = state.messages.entry(room.clone()).or_default();
                    messages.insert(message.seq, Arc::clone(message));
                    retain(messages, self.retention, now);
                    let last = state.last_seq.entry(room.clone()).or_default();
                    *last = (*last).max(message.seq);
                }
                StoreOp::PutRoom(record) => {
                    state.rooms.insert(record.info.room_uuid.clone(), record.clone());
                }
                StoreOp::DeleteRoom(room) => {
                    state.rooms.remove(room);
                    state.messages.remove(room);
                    state.last_seq.remove(room);
                }
            }
        }
        Ok(())
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        let mut state = self.state.lock().expect("not poisoned");
        let last_seq = state.last_seq.get(room).copied().unwrap_or(0);
        let Some(messages) = state.messages.get_mut(room) else {
            return Ok(HistoryPage {
                last_seq,
                first_seq: last_seq + u64::from(last_seq > 0),
                ..Default::default()
            });
        };
        retain(messages, self.retention, now);
        // A read after a sequence number starts there, not at the oldest message.
        let from = match query.range {
            HistoryRange::AfterSeq(after) => after.saturating_add(1),
            HistoryRange::Time { .. } => 0,
        };
        Ok(HistoryPage {
            messages: select(messages.range(from..).map(|(_, m)| m), query),
            // With nothing kept, the next message would be the first one kept.
            first_seq: messages.first_key_value().map_or(last_seq + u64::from(last_seq > 0), |(seq, _)| *seq),
            last_seq,
            corrupt: Vec::new(),
        })
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        let state = self.state.lock().expect("not poisoned");
        Ok(state
            .rooms
            .values()
            .map(|r| (r.clone(), state.last_seq.get(&r.info.room_uuid).copied().unwrap_or(0)))
            .collect())
    }
}
