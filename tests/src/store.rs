//! A store stand-in for tests that need to hold the store still: a [`MemoryStore`] whose
//! reads and writes pass gates a test opens and closes, and whose next write fails when told
//! to; and the [`Gate`] itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use roomkit_core::store::{
    HistoryPage, HistoryQuery, MemoryStore, MessageStore, RoomRecord, StoreError, StoreOp,
};
use roomkit_protocol::RoomUuid;
use tokio::sync::Notify;

/// Open until [`close`](Self::close)d.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    opened: Notify,
    /// Calls that reached the gate while it was closed.
    waiting: AtomicUsize,
    arrived: Notify,
}

impl Gate {
    /// Calls that reach the gate from now on wait.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Lets every waiting call through, and later ones.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Passes the gate: at once while it is open, once it opens otherwise.
    pub async fn pass(&self) {
        let mut counted = false;
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::SeqCst);
                self.arrived.notify_waiters();
            }
            opened.await;
        }
    }

    /// Waits until `n` calls have reached the gate while it was closed (in all).
    pub async fn until_waiting(&self, n: usize) {
        loop {
            let arrived = self.arrived.notified();
            if self.waiting.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }
}

/// A [`MemoryStore`] (no retention) standing in for one on a disk: its commits wait
/// ([`MessageStore::commit_waits`], unless `claims_no_wait` is set), history reads pass
/// `reads`, writes pass `writes`, and the next write fails ("disk full") once
/// `fail_next_write` is set.
#[derive(Default)]
pub struct GatedStore {
    /// Where the messages are.
    pub inner: MemoryStore,
    /// History reads wait here while it is closed.
    pub reads: Gate,
    /// Writes wait here while it is closed.
    pub writes: Gate,
    /// The next write fails (and clears it).
    pub fail_next_write: AtomicBool,
    /// Claims that its commits do not wait ([`MessageStore::commit_waits`] false), as a
    /// store answering at once does, while its writes still pass `writes`.
    pub claims_no_wait: AtomicBool,
}

#[async_trait]
impl MessageStore for GatedStore {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.writes.pass().await;
        if self.fail_next_write.swap(false, Ordering::SeqCst) {
            return Err(StoreError("disk full".into()));
        }
        self.inner.apply(now, ops).await
    }

    fn commit_waits(&self) -> bool {
        !self.claims_no_wait.load(Ordering::SeqCst)
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.reads.pass().await;
        self.inner.history(room, query, now).await
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        self.inner.rooms().await
    }
}
