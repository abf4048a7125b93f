//! roomkit's clustered store: rooms and chatroom history in NATS JetStream, so that the node
//! owning a room stores its chatroom where every node can read it.
//!
//! Layout (names from [`NatsStoreConfig::name_prefix`], `roomkit` by default):
//!
//! - the stream `ROOMKIT_CHAT` (file storage, [`NatsStoreConfig::replicas`] replicas, no
//!   limits of its own) holds every chat message, one subject per room:
//!   `roomkit.chat.<room>` (the room id as one token, see [`room_token`]). A stored message is
//!   the message record of `roomkit_store_redb::record` (binary, checksummed) with the headers
//!   `Roomkit-Seq`, `Roomkit-Time`, `Roomkit-Last-Seq` (the room's newest sequence number
//!   then) and `Nats-Msg-Id`;
//! - the key-value bucket `ROOMKIT_ROOMS` (same storage and replicas) maps a room's token to
//!   its [`RoomRecord`] (the room record of `roomkit_store_redb::record`).
//!
//! Appends. Each message is published with a dedupe id ([`message_id`]: room, sequence
//! number, which form, checksum of the record) and with `Nats-Expected-Last-Subject-Sequence`
//! set to the stream sequence of the room's newest stored message: a store that still writes
//! a room after another store wrote it (a stale owner) is refused by JetStream, and reads the
//! room again before its next use. A publish whose acknowledgement was lost is sent again with
//! the same id and expectation, and stored once: JetStream takes it for a duplicate, or
//! refuses it for its expectation and the store finds its own message, by its id, as the
//! subject's newest. The recalled form of a message is published as a new
//! message; the older form is deleted once the commit succeeded, and a read of the subject
//! keeps the newest form of each number. [`MessageStore::apply`] publishes the messages of
//! different rooms together and awaits their acknowledgements together; one room's messages
//! go one after the other, since each one expects the stream sequence of the one before,
//! which only its acknowledgement tells.
//!
//! All or nothing: when a publish of a commit fails, the messages of the commit that were
//! stored are deleted (by stream sequence) before `apply` returns the error. The store never
//! deletes a subject's newest message (nats-server 2.9 then takes the subject for empty):
//! when it may be one of those, a fence (a message without a chat message) is stored after
//! them first. When that is not possible either (NATS gone, or an acknowledgement that never
//! came, so the publish may yet be stored, even after the client reconnects), the rooms
//! concerned are marked stale: before serving them again the store reads them from
//! JetStream, stores a fence after whatever it finds (a publish still under way from before
//! expects an older newest message, so JetStream refuses it), and deletes what it found of
//! the failed commits. Room records and deletions are not undone: core applies them again in
//! its next commit.
//!
//! History. The first use of a room reads its subject once, headers only, with an ephemeral
//! consumer (made again while it stops short of the subject's newest message: it may run on
//! a replica that is behind), into an index (sequence number → stream sequence and time of the newest form;
//! 24 bytes a message) that this store's own appends keep up to date. A query then
//! costs a binary search in the index and one `STREAM.MSG.GET` per message it returns (all of
//! a page's messages requested together; more when a viewer may not see every message).
//! `rooms()` reads the bucket's keys and, for a room not indexed yet, the subject's newest
//! message.
//!
//! Retention: by count and by age, against the index, at every commit that appends to a room
//! (the dropped messages are deleted after the commit) and at every read. The subject's
//! newest stored message is never deleted, even when retention drops it: its
//! `Roomkit-Last-Seq` is the room's newest sequence number, which never goes back.
//! `DeleteRoom` removes the room's record and purges its subject.

mod apply;
mod connect;
mod history;
mod layout;
mod load;
#[cfg(feature = "testing")]
pub mod testing;
mod view;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use layout::Names;
pub use layout::{message_id, room_token};
use roomkit_core::store::{
    HistoryPage, HistoryQuery, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
};
use roomkit_protocol::RoomUuid;
use view::{RoomView, Slot};

/// The default [`NatsStoreConfig::name_prefix`].
pub const DEFAULT_NAME_PREFIX: &str = "roomkit";
/// The default [`NatsStoreConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`NatsStoreConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`NatsStoreConfig::publish_attempts`].
pub const DEFAULT_PUBLISH_ATTEMPTS: u32 = 2;
/// The default [`NatsStoreConfig::reconnect_delay_max`].
pub const DEFAULT_RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// The default [`NatsStoreConfig::scan_batch`].
pub const DEFAULT_SCAN_BATCH: usize = 1_000;

/// Settings of a [`NatsStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsStoreConfig {
    /// The NATS servers (`nats://host:port`); reaching any one is enough, and the client
    /// learns the rest of the cluster from it.
    pub urls: Vec<String>,
    /// Names the stream (`<PREFIX>_CHAT`), the bucket (`<PREFIX>_ROOMS`) and the subjects
    /// (`<prefix>.chat.<room>`): letters, digits, `-` and `_`.
    pub name_prefix: String,
    /// How many servers keep each message and room record: 1, or 3 in a cluster (at most 5).
    pub replicas: usize,
    /// How long chatroom messages are kept.
    pub retention: Retention,
    /// Longest [`NatsStore::connect`] waits for a server to answer, all URLs together; and,
    /// from the first answer, for a cluster that is still forming (no meta leader yet, or
    /// fewer servers than [`replicas`](Self::replicas)) to take the stream and the bucket.
    pub connect_timeout: Duration,
    /// Longest one JetStream request, or one publish's acknowledgement, is awaited; also how
    /// long a read of a room's subject may keep being made again while a replica is behind,
    /// and how long its consumer outlives its last request.
    pub request_timeout: Duration,
    /// How many times a publish whose acknowledgement does not come is sent (with the same
    /// dedupe id, so it is stored once) before the commit fails.
    pub publish_attempts: u32,
    /// Longest wait between two attempts to reconnect after the connection is lost.
    pub reconnect_delay_max: Duration,
    /// Messages asked for at a time when a room's subject is read into its index.
    pub scan_batch: usize,
}

impl Default for NatsStoreConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            name_prefix: DEFAULT_NAME_PREFIX.to_owned(),
            replicas: 1,
            retention: Retention::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            publish_attempts: DEFAULT_PUBLISH_ATTEMPTS,
            reconnect_delay_max: DEFAULT_RECONNECT_DELAY_MAX,
            scan_batch: DEFAULT_SCAN_BATCH,
        }
    }
}

/// Why [`NatsStore::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsStoreError {
    /// A setting is out of range.
    #[error("invalid NATS store settings: {0}")]
    Config(String),
    /// No server answered within [`NatsStoreConfig::connect_timeout`].
    #[error("cannot reach NATS at {urls}: {reason}")]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answers but JetStream is not enabled on it.
    #[error(
        "NATS at {urls} has no JetStream: start nats-server with -js (or a `jetstream {{}}` block in its configuration)"
    )]
    JetStreamDisabled {
        /// The URLs tried.
        urls: String,
    },
    /// The stream or the bucket exists with settings this store cannot work with.
    #[error("JetStream stream {name} exists with other settings: {reason}")]
    Conflict {
        /// The stream.
        name: String,
        /// Which settings differ.
        reason: String,
    },
    /// A JetStream request failed.
    #[error("JetStream request failed: {0}")]
    JetStream(String),
}

/// The JetStream store. Cheap to clone; clones share the connection and the indexes.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore").field("config", &self.inner.config).finish()
    }
}

pub(crate) struct Inner {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// The room bucket: written through it.
    rooms: kv::Store,
    /// The room bucket's stream: read through it, from its leader.
    rooms_stream: jetstream::stream::Stream,
    names: Names,
    config: NatsStoreConfig,
    /// What the store knows of each room it used.
    views: Mutex<HashMap<RoomUuid, Slot>>,
    /// One commit at a time; reading a room's subject into its view also holds it, so that a
    /// read never overwrites what a commit wrote.
    apply_lock: tokio::sync::Mutex<()>,
    /// Acknowledgements to treat as lost (tests).
    lost_acks: AtomicU32,
    /// Messages history reads fetched.
    fetched: AtomicU64,
    /// Messages reads of subjects went through.
    scanned: AtomicU64,
}

pub(crate) fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

impl NatsStore {
    /// Connects to NATS, then creates the stream and the bucket, or checks that the existing
    /// ones fit. Fails with [`NatsStoreError::Unreachable`] when no server answers within
    /// [`NatsStoreConfig::connect_timeout`], [`NatsStoreError::JetStreamDisabled`] without
    /// JetStream, [`NatsStoreError::Conflict`] when the stream or bucket has other settings,
    /// [`NatsStoreError::JetStream`] when a request fails (a forming cluster is waited for, up to
    /// the same `connect_timeout`).
    pub async fn connect(config: NatsStoreConfig) -> Result<Self, NatsStoreError> {
        connect::connect(config).await
    }

    /// The settings it runs with.
    pub fn config(&self) -> &NatsStoreConfig {
        &self.inner.config
    }

    /// The name of the stream holding chat messages.
    pub fn stream_name(&self) -> &str {
        &self.inner.names.stream
    }

    /// The name of the bucket holding room records.
    pub fn bucket_name(&self) -> &str {
        &self.inner.names.bucket
    }

    /// The subject of `room`'s chat messages.
    pub fn subject(&self, room: &RoomUuid) -> String {
        self.inner.names.subject(room)
    }

    /// Treats the next `n` publish acknowledgements as lost: the publish counts as timed out
    /// and is sent again (tests of the dedupe id).
    #[doc(hidden)]
    pub fn lose_next_acks(&self, n: u32) {
        self.inner.lost_acks.store(n, Ordering::Relaxed);
    }

    /// Messages history reads fetched since the store was opened: a page's messages, not the
    /// chatroom's.
    #[doc(hidden)]
    pub fn messages_fetched(&self) -> u64 {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    /// Messages read (headers only) while building rooms' indexes since the store was opened.
    #[doc(hidden)]
    pub fn messages_scanned(&self) -> u64 {
        self.inner.scanned.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Runs `f` on `room`'s view if it is ready.
    fn with_view<R>(&self, room: &RoomUuid, f: impl FnOnce(&mut RoomView) -> R) -> Option<R> {
        match self.views.lock().expect("not poisoned").get_mut(room) {
            Some(Slot::Ready(view)) => Some(f(view)),
            _ => None,
        }
    }

    /// Marks `room`'s view stale, keeping what is in doubt.
    fn mark_stale(&self, room: &RoomUuid, doubt: view::Doubt) {
        let mut views = self.views.lock().expect("not poisoned");
        match views.get_mut(room) {
            Some(Slot::Stale(old)) => old.merge(doubt),
            _ => {
                views.insert(room.clone(), Slot::Stale(doubt));
            }
        }
    }
}

#[async_trait]
impl MessageStore for NatsStore {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.inner.apply(now, ops).await
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

    /// Reads the room afresh: in a cluster it is called when this node takes the room over,
    /// and other nodes may have written to it since this store last looked (its view of the
    /// room is re-read before it is used again).
    async fn room(&self, uuid: &RoomUuid) -> Result<Option<(RoomRecord, u64)>, StoreError> {
        if self.inner.with_view(uuid, |_| ()).is_some() {
            self.inner.mark_stale(uuid, view::Doubt::default());
        }
        self.inner.room(room_token(uuid)).await
    }
}
