//! Group commit across shards: one committer task writes the store operations of every shard
//! that is waiting, in one transaction per durable write.
//!
//! Against a store that syncs to disk, one sync costs the same for one operation as for a
//! thousand, and a store such as redb takes one write transaction at a time: shards committing
//! on their own would queue for the disk one after the other, each paying a sync.
//! [`GroupCommit`] stands in front of the store instead: a shard hands it a commit
//! ([`submit`](GroupCommit::submit)), and the committer takes every commit waiting at that
//! moment, from every shard, applies them as one, and reports the one result to each. While a
//! sync is under way, the next group gathers.
//!
//! A shard may have several commits handed and unreported (`commits_in_flight`): it hands
//! the store operations gathered since its previous commit was taken without waiting for that
//! one's result, and goes on handling requests; the answers and deliveries that follow a
//! commit are held in its registry until the result is reported (nothing is acknowledged
//! before it is durable). So a shard's next commit is waiting when the sync under way ends,
//! and joins the next group with the other shards', rather than the shards taking turns at
//! the disk. The committer applies each shard's commits in the order they were handed.
//!
//! A failed group fails every commit in it: each shard's core refuses the sends of that
//! commit, and of the commits it handed after it before hearing of the failure — those are
//! refused here without being applied (the job carries the registry's
//! [`commit_epoch`](roomkit_core::RoomRegistry::commit_epoch); the committer refuses a shard's
//! jobs of an epoch that failed). Reads go straight to the store. Shards own disjoint rooms,
//! so the operations of different shards in one group never touch the same room, and each
//! shard's operations keep their order.

use std::{
    collections::HashMap,
    future::Future,
    panic::{self, AssertUnwindSafe},
    sync::Arc,
    task::Poll,
};

use roomkit_core::store::{MessageStore, StoreError, StoreOp};
use tokio::sync::{mpsc, oneshot};

/// A commit waiting for the committer.
struct Job {
    /// The shard that handed it.
    source: usize,
    /// Its registry's commit epoch when it was taken.
    epoch: u64,
    now: u64,
    ops: Vec<StoreOp>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The committer of a store whose commits are grouped across shards (see the module comment).
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

/// The answer to a commit handed to [`GroupCommit::submit`].
pub(crate) type Committed = oneshot::Receiver<Result<(), StoreError>>;

impl GroupCommit {
    /// A committer for `store` written by `shards` shards, when there are commits to group:
    /// several shards, and commits that wait on something (a disk, a network:
    /// [`MessageStore::commit_waits`]). `None` otherwise: the shards call the store directly,
    /// one commit at a time each (a lone shard gains nothing measurable from a committer:
    /// its commits would only take two more task hops).
    pub fn for_shards(store: &Arc<dyn MessageStore>, shards: usize) -> Option<Arc<Self>> {
        (shards > 1 && store.commit_waits()).then(|| Self::start(Arc::clone(store)))
    }

    /// Starts the committer of `store` on the current tokio runtime. It ends when the
    /// `GroupCommit` is dropped, once the commits handed before are answered.
    pub fn start(store: Arc<dyn MessageStore>) -> Arc<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(committer(store, rx));
        Arc::new(GroupCommit { jobs })
    }

    /// Hands `ops`, taken by shard `source`'s registry at commit epoch `epoch`, to the
    /// committer. A shard's commits are applied in the order they are handed; a commit is
    /// refused without being applied when an earlier commit of the same shard and epoch
    /// failed.
    pub(crate) fn submit(&self, source: usize, epoch: u64, now: u64, ops: Vec<StoreOp>) -> Committed {
        let (done, answer) = oneshot::channel();
        // A stopped committer drops the job, and with it `done`: the answer is an error.
        let _ = self.jobs.send(Job { source, epoch, now, ops, done });
        answer
    }
}

/// Why a commit got no answer: the committer stopped (the runtime is shutting down).
pub(crate) fn stopped() -> StoreError {
    StoreError("the store's committer has stopped".into())
}

/// `fut`'s output, or what it panicked with.
async fn unwinding<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(poll) => poll.map(Ok),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Poll::Ready(Err(message))
        }
    })
    .await
}

/// Takes every waiting commit, applies them as one, tells each the result; again.
async fn committer(store: Arc<dyn MessageStore>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut group: Vec<Job> = Vec::new();
    let mut ops: Vec<StoreOp> = Vec::new();
    // The epoch of each shard's last failed commit.
    let mut failed: HashMap<usize, u64> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(job) = next.take().or_else(|| rx.try_recv().ok()) {
            if failed.get(&job.source) == Some(&job.epoch) {
                let why =
                    "an earlier commit of this shard failed, and this one was taken before it was reported";
                let _ = job.done.send(Err(StoreError(why.into())));
            } else {
                group.push(job);
            }
        }
        if group.is_empty() {
            continue;
        }
        // Age retention runs with the newest time in the group.
        let now = group.iter().map(|j| j.now).max().unwrap_or_default();
        for job in &mut group {
            ops.append(&mut job.ops);
        }
        metrics::histogram!("roomkit_store_group_size").record(group.len() as f64);
        // A store that panics fails this group, not every later one.
        let started = std::time::Instant::now();
        let result = match unwinding(store.apply(now, &ops)).await {
            Ok(result) => result,
            Err(panic) => Err(StoreError(format!("the store's commit failed: it panicked: {panic}"))),
        };
        metrics::histogram!("roomkit_store_write_seconds").record(started.elapsed());
        for job in group.drain(..) {
            if result.is_err() {
                failed.insert(job.source, job.epoch);
            }
            let _ = job.done.send(result.clone());
        }
        ops.clear();
        if ops.capacity() > 4096 {
            ops = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    };

    use async_trait::async_trait;
    use roomkit_core::store::{HistoryPage, HistoryQuery, MemoryStore, RoomRecord};
    use roomkit_protocol::RoomUuid;

    use super::*;

    /// A store that records the size of each apply and can be told to fail, and that holds
    /// each apply until released (so that commits pile up behind it).
    struct Recording {
        inner: Arc<dyn MessageStore>,
        applies: Mutex<Vec<usize>>,
        fail: AtomicBool,
        panic: AtomicBool,
        gate: tokio::sync::Semaphore,
        /// Applies that reached the gate.
        arrived: AtomicUsize,
        arrival: tokio::sync::Notify,
    }

    impl Recording {
        fn new() -> Arc<Self> {
            Arc::new(Recording {
                inner: MemoryStore::shared(Default::default()),
                applies: Mutex::new(Vec::new()),
                fail: false.into(),
                panic: false.into(),
                gate: tokio::sync::Semaphore::new(0),
                arrived: AtomicUsize::new(0),
                arrival: tokio::sync::Notify::new(),
            })
        }

        /// Waits until `n` applies in all have reached the gate.
        async fn until_arrived(&self, n: usize) {
            loop {
                let arrival = self.arrival.notified();
                if self.arrived.load(Ordering::SeqCst) >= n {
                    return;
                }
                arrival.await;
            }
        }
    }

    #[async_trait]
    impl MessageStore for Recording {
        async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            self.arrival.notify_waiters();
            self.gate.acquire().await.expect("open").forget();
            self.applies.lock().unwrap().push(ops.len());
            assert!(!self.panic.swap(false, Ordering::SeqCst), "a corrupt page");
            if self.fail.load(Ordering::SeqCst) {
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
    async fn only_commits_of_several_shards_that_wait_go_through_a_committer() {
        let memory = MemoryStore::shared(Default::default());
        assert!(GroupCommit::for_shards(&memory, 4).is_none(), "an in-memory store is called directly");
        let recording: Arc<dyn MessageStore> = Recording::new();
        assert!(GroupCommit::for_shards(&recording, 1).is_none(), "one shard has nothing to group");
        assert!(GroupCommit::for_shards(&recording, 4).is_some(), "several shards' commits are grouped");
    }

    fn room_op(uuid: &str) -> StoreOp {
        StoreOp::PutRoom(roomkit_core::conformance::store::record(uuid))
    }

    async fn stored_rooms(store: &Recording) -> Vec<String> {
        let rooms = store.rooms().await.unwrap();
        let mut names: Vec<String> = rooms.into_iter().map(|(r, _)| r.info.room_uuid.to_string()).collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_waiting_behind_a_write_go_together_and_each_gets_the_result() {
        let recording = Recording::new();
        let committer = GroupCommit::start(recording.clone());
        // The first commit holds the (gated) store; four more pile up behind it, two of them
        // from the same shard.
        let first = committer.submit(0, 0, 1, vec![room_op("a")]);
        recording.until_arrived(1).await;
        let waiting: Vec<_> = [(1, "b"), (2, "c"), (3, "d"), (1, "e")]
            .into_iter()
            .map(|(shard, r)| committer.submit(shard, 0, 2, vec![room_op(r), room_op(&format!("{r}2"))]))
            .collect();
        assert!(recording.applies.lock().unwrap().is_empty(), "the first write holds the store");
        recording.gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok(()));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(*recording.applies.lock().unwrap(), [1, 8], "one write for the four that waited");
        assert_eq!(stored_rooms(&recording).await.len(), 9);

        // A failed write fails every commit of its group (two writes, should the committer
        // take the first alone).
        recording.fail.store(true, Ordering::SeqCst);
        recording.gate.add_permits(2);
        let (x, y) =
            (committer.submit(0, 0, 3, vec![room_op("x")]), committer.submit(1, 0, 3, vec![room_op("y")]));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        assert!(x.is_err() && y.is_err(), "{x:?} {y:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failure_a_shards_commits_of_that_epoch_are_refused_unapplied() {
        let recording = Recording::new();
        let committer = GroupCommit::start(recording.clone());
        recording.fail.store(true, Ordering::SeqCst);
        // Shard 0's commit fails while its next one (same epoch: taken before the failure
        // was reported), shard 1's and shard 0's first after the report (next epoch) wait.
        let failing = committer.submit(0, 0, 1, vec![room_op("a")]);
        recording.until_arrived(1).await;
        let doomed = committer.submit(0, 0, 1, vec![room_op("b")]);
        let other_shard = committer.submit(1, 0, 1, vec![room_op("c")]);
        let next_epoch = committer.submit(0, 1, 1, vec![room_op("d"), room_op("e")]);
        recording.gate.add_permits(1);
        assert!(failing.await.unwrap().is_err());
        recording.fail.store(false, Ordering::SeqCst);
        recording.gate.add_permits(1);
        let refused = doomed.await.unwrap().expect_err("taken before the failure was reported");
        assert!(refused.0.contains("earlier commit of this shard failed"), "{refused}");
        assert_eq!(other_shard.await.unwrap(), Ok(()), "another shard's commit is not concerned");
        assert_eq!(next_epoch.await.unwrap(), Ok(()));
        assert_eq!(*recording.applies.lock().unwrap(), [1, 3], "the refused commit was never applied");
        assert_eq!(stored_rooms(&recording).await, ["c", "d", "e"]);
    }

    #[tokio::test]
    async fn a_store_that_panics_fails_its_group_and_the_committer_goes_on() {
        let recording = Recording::new();
        let committer = GroupCommit::start(recording.clone());
        recording.gate.add_permits(2);
        recording.panic.store(true, Ordering::SeqCst);
        let failed = committer.submit(0, 0, 1, vec![room_op("a")]).await.expect("answered");
        let e = failed.expect_err("the write panicked");
        assert!(e.0.contains("panicked: a corrupt page"), "{e}");
        assert_eq!(committer.submit(1, 0, 1, vec![room_op("b")]).await.expect("answered"), Ok(()));
        assert_eq!(stored_rooms(&recording).await, ["b"]);
    }
}
