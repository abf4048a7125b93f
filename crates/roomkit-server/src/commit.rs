//! Group commit across shards: one committer task writes the store operations of every shard
//! that is waiting, in one transaction per durable write.
//!
//! Each shard has at most one commit in flight: it hands the store operations gathered since
//! its previous commit was taken, and goes on handling requests while the commit syncs; the
//! answers and deliveries that follow the commit are held until its result is reported
//! (nothing is acknowledged before it is durable). Against a store that syncs to disk, one sync costs the
//! same for one operation as for a thousand, and a store such as redb takes one write
//! transaction at a time: shards committing on their own would queue for the disk one after
//! the other, each paying a sync. [`GroupCommit`] wraps the store instead: a commit is handed
//! to the committer, which takes every commit waiting at that moment, from every shard,
//! applies them as one, and reports the one result to each. While a sync is under way, the
//! next group gathers.
//!
//! A failed group fails every commit in it: each shard's core refuses the sends of that commit,
//! as for a failed commit of its own. Reads pass straight through to the store. Shards own
//! disjoint rooms, so the operations of different shards in one group never touch the same
//! room, and each shard's operations keep their order.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::store::{HistoryPage, HistoryQuery, MessageStore, RoomRecord, StoreError, StoreOp};
use roomkit_protocol::RoomUuid;
use tokio::sync::{mpsc, oneshot};

/// A commit waiting for the committer.
struct Job {
    now: u64,
    ops: Vec<StoreOp>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A [`MessageStore`] whose commits are grouped across callers (see the module comment).
pub struct GroupCommit {
    store: Arc<dyn MessageStore>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// `store` as `shards` shards should call it: [`wrap`](Self::wrap)ped when there are
    /// commits to group — several shards, and commits that wait on something
    /// ([`MessageStore::commit_waits`]) — and as it is otherwise: one shard has one commit in
    /// flight at a time, so a committer would only add two task hops to each.
    pub fn for_shards(store: Arc<dyn MessageStore>, shards: usize) -> Arc<dyn MessageStore> {
        if shards > 1 && store.commit_waits() {
            Self::wrap(store)
        } else {
            store
        }
    }

    /// Wraps `store`, starting its committer on the current tokio runtime. The committer ends
    /// when the `GroupCommit` is dropped.
    pub fn wrap(store: Arc<dyn MessageStore>) -> Arc<dyn MessageStore> {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(committer(Arc::clone(&store), rx));
        Arc::new(GroupCommit { store, jobs })
    }
}

/// Takes every waiting commit, applies them as one, tells each the result; again.
async fn committer(store: Arc<dyn MessageStore>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut group: Vec<Job> = Vec::new();
    let mut ops: Vec<StoreOp> = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        while let Ok(job) = rx.try_recv() {
            group.push(job);
        }
        // Age retention runs with the newest time in the group.
        let now = group.iter().map(|j| j.now).max().unwrap_or_default();
        for job in &mut group {
            ops.append(&mut job.ops);
        }
        metrics::histogram!("roomkit_store_group_size").record(group.len() as f64);
        // On a task of its own: a store that panics fails this group, not every later one.
        let (task_store, batch) = (Arc::clone(&store), std::mem::take(&mut ops));
        let result = match tokio::spawn(async move { (task_store.apply(now, &batch).await, batch) }).await {
            Ok((result, batch)) => {
                ops = batch;
                result
            }
            Err(e) => Err(StoreError(format!("the store's commit failed: {e}"))),
        };
        for job in group.drain(..) {
            let _ = job.done.send(result.clone());
        }
        ops.clear();
        if ops.capacity() > 4096 {
            ops = Vec::new();
        }
    }
}

#[async_trait]
impl MessageStore for GroupCommit {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let job = Job { now, ops: ops.to_vec(), done };
        self.jobs.send(job).map_err(|_| StoreError("the store's committer has stopped".into()))?;
        result.await.map_err(|_| StoreError("the store's committer has stopped".into()))?
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.store.history(room, query, now).await
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        self.store.rooms().await
    }

    async fn room(&self, uuid: &RoomUuid) -> Result<Option<(RoomRecord, u64)>, StoreError> {
        self.store.room(uuid).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use roomkit_core::store::MemoryStore;

    use super::*;

    /// A store that records the size of each apply and can be told to fail, and that holds
    /// each apply until released (so that commits pile up behind it).
    struct Recording {
        inner: Arc<dyn MessageStore>,
        applies: Mutex<Vec<usize>>,
        fail: std::sync::atomic::AtomicBool,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl MessageStore for Recording {
        async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
            self.gate.acquire().await.expect("open").forget();
            self.applies.lock().unwrap().push(ops.len());
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError("disk full".into()));
            }
            self.inner.apply(now, ops).await
        }

        async fn history(&self, r: &RoomUuid, q: &HistoryQuery, now: u64) -> Result<HistoryPage, StoreError> {
            self.inner.history(r, q, now).await
        }

        async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
            self.inner.rooms().await
        }
    }

    #[tokio::test]
    async fn only_commits_of_several_shards_that_wait_go_through_the_committer() {
        let memory = MemoryStore::shared(Default::default());
        let direct = |store: &Arc<dyn MessageStore>, shards| {
            Arc::ptr_eq(&GroupCommit::for_shards(Arc::clone(store), shards), store)
        };
        assert!(direct(&memory, 4), "an in-memory store is called directly");
        let recording: Arc<dyn MessageStore> = Arc::new(Recording {
            inner: memory,
            applies: Mutex::new(Vec::new()),
            fail: false.into(),
            gate: tokio::sync::Semaphore::new(0),
        });
        assert!(direct(&recording, 1), "one shard has nothing to group");
        assert!(!direct(&recording, 4), "several shards' commits are grouped");
    }

    fn room_op(uuid: &str) -> StoreOp {
        StoreOp::PutRoom(roomkit_core::conformance::store::record(uuid))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_waiting_behind_a_write_go_together_and_each_gets_the_result() {
        let recording = Arc::new(Recording {
            inner: MemoryStore::shared(Default::default()),
            applies: Mutex::new(Vec::new()),
            fail: false.into(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let store = GroupCommit::wrap(recording.clone());
        // The first commit holds the (gated) store; three more pile up behind it.
        let first = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.apply(1, &[room_op("a")]).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiting: Vec<_> = ["b", "c", "d"]
            .into_iter()
            .map(|r| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.apply(2, &[room_op(r), room_op(&format!("{r}2"))]).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!first.is_finished(), "nothing is answered before the store applied it");
        recording.gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok(()));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(*recording.applies.lock().unwrap(), [1, 6], "one write for the three that waited");
        let rooms: Vec<String> =
            store.rooms().await.unwrap().into_iter().map(|(r, _)| r.info.room_uuid.to_string()).collect();
        assert_eq!(rooms.len(), 7, "{rooms:?}");

        // A failed write fails every commit of its group.
        recording.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        recording.gate.add_permits(2);
        let (x_ops, y_ops) = ([room_op("x")], [room_op("y")]);
        let (x, y) = tokio::join!(store.apply(3, &x_ops), store.apply(3, &y_ops));
        assert!(x.is_err() && y.is_err(), "{x:?} {y:?}");
    }
}
