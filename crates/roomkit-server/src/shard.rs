//! Shard tasks: each owns the rooms hashed to it and drives a [`RoomRegistry`].

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use roomkit_core::{
    store::{HistoryPage, HistoryQuery, HistoryRange, MessageStore, StoreError},
    transport::Frame,
    ConnId, ConnMap, CoreConfig, Error, Identity, Output, RoomRegistry, RoomTally,
};
use roomkit_protocol::{
    codec,
    ops::{Request, Response},
    Code, RoomUuid,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    clock::now_ms,
    cluster::Node,
    commit::{self, GroupCommit},
    outbox::{
        pool::{Wakes, WritePool},
        Outbox, ReadSlot, Shed,
    },
};

mod answer;
mod burst;

use answer::{answer_history, reply_frame, FRAME_HINT};
// The cluster's owner answers on its rooms' streams with these.
#[cfg(feature = "cluster")]
pub(crate) use answer::{log_history_failure, read_history_apart, reply_text};

/// A job run on a shard's registry, with the current time.
pub(crate) type Job = Box<dyn FnOnce(&mut RoomRegistry, u64) + Send>;

/// A job whose answer carries a stored message: it is held like a member's acknowledgement
/// (see [`ShardMsg::Acknowledged`]).
pub(crate) type AckJob = Box<dyn FnOnce(&mut RoomRegistry, u64) -> Result<Response, Error> + Send>;

/// The connection id a shard answers its own [`ShardMsg::Acknowledged`] jobs under; no
/// connection has it (ids count up from 1; a cluster node's carry its slot in the top bits).
const DRIVER_CONN: ConnId = ConnId(u64::MAX);

/// Work for a shard.
pub(crate) enum ShardMsg {
    /// A request of a logged-in connection.
    Request {
        conn: ConnId,
        /// The connection's queue; `None` for a request forwarded by another cluster node
        /// (the answers go out on the room's stream; see `cluster`).
        outbox: Option<Outbox>,
        identity: Arc<Identity>,
        request_id: u64,
        request: Request,
        received: Instant,
    },
    /// The connection is gone.
    Disconnect { conn: ConnId },
    /// Runs `f` against the registry (admin commands, inspection); outputs are dispatched.
    Run(Job),
    /// End every room, dispatch the events, then acknowledge.
    Shutdown(oneshot::Sender<()>),
    /// Acknowledge once everything handled before this is stored, or settled as failed:
    /// once the commit holding the last store operation so far is reported.
    Settled(oneshot::Sender<()>),
    /// Runs the job and answers with its result once the message it carries is stored, or
    /// with [`Error::NotStored`] if that fails (the registry's `acknowledge`).
    Acknowledged(AckJob, oneshot::Sender<Result<Response, Error>>),
}

/// A handle to one shard task.
#[derive(Clone)]
pub(crate) struct Shard {
    pub(crate) tx: mpsc::Sender<ShardMsg>,
}

impl Shard {
    /// Waits until everything the shard handled before the call is stored or settled as
    /// failed (at once if the shard has stopped).
    pub(crate) async fn settled(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ShardMsg::Settled(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Which of `shards` shard tasks owns `room` (an index from 0). Stable for the life of the
/// process.
pub fn shard_of(room: &RoomUuid, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    room.as_str().hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Everything a shard task needs besides its messages.
pub(crate) struct ShardSetup {
    pub(crate) index: usize,
    pub(crate) shards: usize,
    pub(crate) config: CoreConfig,
    pub(crate) queue: usize,
    /// Most messages taken from the queue per wake-up (one wake per writer each); a commit
    /// holds every store operation since the previous one was taken, whatever the wake-ups.
    pub(crate) batch: usize,
    /// Writers woken as soon as this many wait for a wake, or this many frames were queued
    /// since the last wake (see `burst::queue_to`).
    pub(crate) wake_batch: usize,
    /// Most history reads one connection may have under way (`reads_in_flight`).
    pub(crate) reads_in_flight: usize,
    /// Most commits handed to the committer and not answered (`commits_in_flight`).
    pub(crate) commits_in_flight: usize,
    /// The store: read directly, written directly when there is no committer.
    pub(crate) store: Arc<dyn MessageStore>,
    /// The committer of a store whose commits wait (see `commit`).
    pub(crate) committer: Option<Arc<GroupCommit>>,
    /// Live rooms by creator, shared by every shard: the room caps hold across shards.
    pub(crate) tally: RoomTally,
    /// In cluster mode, the node: rooms are loaded when the node takes their lease (not all
    /// at start), and outputs are published on the rooms' streams.
    pub(crate) cluster: Option<Arc<Node>>,
    /// The server's write pools: a connection whose sink is parked is woken through its
    /// pool (see `outbox::pool`).
    pub(crate) pools: Arc<[Arc<WritePool>]>,
}

pub(crate) fn spawn(setup: ShardSetup) -> Shard {
    let (tx, rx) = mpsc::channel(setup.queue.max(1));
    tokio::spawn(run(setup, rx));
    Shard { tx }
}

/// The state a shard task drives.
struct ShardState {
    registry: RoomRegistry,
    store: Arc<dyn MessageStore>,
    outboxes: ConnMap<Outbox>,
    /// This wake-up's events to one member list, held to be queued member by member (see
    /// `burst`).
    burst: Option<burst::Burst>,
    /// Connections queued to during this wake-up and not woken yet; woken at its end, or
    /// as soon as there are `wake_batch` of them or `wake_batch` frames were queued to them.
    wake: Wakes,
    /// See `ShardSetup::pools`.
    pools: Arc<[Arc<WritePool>]>,
    /// Frames queued since the writers were last woken.
    queued_since_wake: usize,
    wake_batch: usize,
    reads_in_flight: usize,
    /// Read slots taken for requests answered from the store (`join_chatroom`,
    /// `fetch_chatroom_history`) before the registry handled them, by connection and request
    /// id; each is used by the request's read, or given back with its reply.
    reserved: ConnMap<Vec<(u64, ReadSlot)>>,
    /// Connections gone during this wake-up; forgotten once its outputs are sent.
    gone: Vec<ConnId>,
    /// Requests handled during this wake-up (their operation, by `Request::op_index`), for
    /// the latency histogram.
    timings: Vec<(usize, Instant)>,
    /// Shutdown acknowledgements, sent once this wake-up's outputs are out and no commit
    /// is in flight.
    acks: Vec<oneshot::Sender<()>>,
    /// `Settled` acknowledgements, with the commit each waits for.
    settling: Vec<(u64, oneshot::Sender<()>)>,
    /// `Acknowledged` jobs' answers, by the request id they were queued under.
    driver_acks: HashMap<u64, oneshot::Sender<Result<Response, Error>>>,
    next_driver_ack: u64,
    /// The shard's index, naming its commits to the committer.
    index: usize,
    committer: Option<Arc<GroupCommit>>,
    /// Whether commits go straight to a store that answers at once
    /// ([`MessageStore::commit_waits`] false, no committer): they are answered in the flush
    /// that hands them.
    answers_at_once: bool,
    /// The commits handed to the store and not yet answered, oldest first, with the
    /// registry's commit epoch when each was taken; at most one without a committer,
    /// `commits_in_flight` with one (the registry holds to it).
    commits: VecDeque<(u64, CommitFuture)>,
    /// In cluster mode, the node whose rooms' streams the outputs go out on.
    cluster: Option<Arc<Node>>,
    /// In cluster mode, the room of each request not answered yet, by connection and
    /// request id: the answer goes out on that room's stream.
    answering: ConnMap<Vec<(u64, RoomUuid)>>,
}

/// A commit handed to the store and not yet answered.
type CommitFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

async fn run(setup: ShardSetup, mut rx: mpsc::Receiver<ShardMsg>) {
    let in_flight = if setup.committer.is_some() { setup.commits_in_flight } else { 1 };
    let mut registry = RoomRegistry::with_tally(setup.config, setup.tally).with_commits_in_flight(in_flight);
    if setup.cluster.is_some() {
        // Rooms come one at a time, as the node takes their leases.
        registry = registry.with_roster_outputs();
    } else {
        restore(&mut registry, setup.store.as_ref(), setup.index, setup.shards).await;
    }
    let answers_at_once = setup.committer.is_none() && !setup.store.commit_waits();
    let mut state = ShardState {
        registry,
        store: setup.store,
        outboxes: ConnMap::default(),
        burst: None,
        wake: Wakes::default(),
        queued_since_wake: 0,
        wake_batch: setup.wake_batch.max(1),
        pools: Arc::clone(&setup.pools),
        reads_in_flight: setup.reads_in_flight.max(1),
        reserved: ConnMap::default(),
        gone: Vec::new(),
        timings: Vec::new(),
        acks: Vec::new(),
        settling: Vec::new(),
        driver_acks: HashMap::new(),
        next_driver_ack: 0,
        index: setup.index,
        answers_at_once,
        committer: setup.committer,
        commits: VecDeque::new(),
        cluster: setup.cluster,
        answering: ConnMap::default(),
    };
    let max_batch = setup.batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    let mut open = true;
    // Runs until the channel has closed and the last commit has been reported.
    while open || !state.commits.is_empty() {
        let sleep = state.registry.poll_timeout().map(|deadline| {
            let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
            tokio::time::sleep(wait)
        });
        tokio::select! {
            // A commit's answer (that of a store that waits; see `flush`), which releases the
            // outputs it held. Commits are answered in the order they were handed. (The
            // branches are polled from a random one, so that none starves the others.)
            result = async { state.commits.front_mut().expect("guarded").1.as_mut().await }, if !state.commits.is_empty() => {
                state.commit_answered(result);
            }
            n = rx.recv_many(&mut batch, max_batch), if open => {
                if n == 0 {
                    open = false;
                }
                for msg in batch.drain(..) {
                    state.handle(msg);
                }
            }
            () = async { sleep.expect("guarded").await }, if sleep.is_some() => {
                state.registry.handle_timeout(now_ms());
            }
        }
        state.flush().await;
    }
}

/// Brings back this shard's rooms from the store.
async fn restore(registry: &mut RoomRegistry, store: &dyn MessageStore, index: usize, shards: usize) {
    let rooms = match store.rooms().await {
        Ok(rooms) => rooms,
        Err(e) => {
            tracing::error!(error = %e, "could not read rooms from the store; starting without them");
            return;
        }
    };
    let now = now_ms();
    let recent = registry.config().history_ring_size.max(registry.config().dedupe_window.min(1000));
    for (record, last_seq) in rooms {
        let uuid = record.info.room_uuid.clone();
        if shard_of(&uuid, shards) != index {
            continue;
        }
        let query = HistoryQuery {
            viewer: None,
            range: HistoryRange::AfterSeq(last_seq.saturating_sub(recent as u64)),
            limit: recent,
        };
        let messages = match store.history(&uuid, &query, now).await {
            Ok(page) => {
                log_corrupt(&uuid, &page);
                page.messages
            }
            Err(e) => {
                // The room comes back without its retry window: a send retried across the
                // restart would be stored twice.
                tracing::error!(room = %uuid, error = %e, "could not read recent messages of a restored room");
                Vec::new()
            }
        };
        registry.restore_room(now, record, last_seq, messages);
        tracing::debug!(room = %uuid, last_seq, "room restored");
    }
}

/// Logs the stored messages a history page left out because they failed verification.
pub(super) fn log_corrupt(room: &RoomUuid, page: &HistoryPage) {
    for bad in &page.corrupt {
        tracing::error!(
            room = %room, seq = bad.seq, reason = %bad.reason,
            "a stored message failed verification: left out of history"
        );
    }
}

impl ShardState {
    /// Feeds one message to the registry. Outputs wait for [`flush`](Self::flush).
    fn handle(&mut self, msg: ShardMsg) {
        let now = now_ms();
        match msg {
            ShardMsg::Request { conn, outbox, identity, request_id, request, received } => {
                self.timings.push((request.op_index(), received));
                let Some(outbox) = outbox else {
                    // Cluster mode: the answer goes out on the room's stream.
                    if let Some(room) = request.room_uuid() {
                        self.answering.entry(conn).or_default().push((request_id, room.clone()));
                    }
                    self.registry.handle_request(now, conn, &identity, request_id, request);
                    return;
                };
                let outbox = self.outboxes.entry(conn).or_insert(outbox);
                if matches!(request, Request::JoinChatroom(_) | Request::FetchChatroomHistory(_)) {
                    // The bound is checked before the registry sees the request: a refused
                    // `join_chatroom` has not entered the chatroom.
                    let Some(slot) = outbox.begin_read(self.reads_in_flight) else {
                        self.refuse_read(conn, request_id);
                        return;
                    };
                    self.reserved.entry(conn).or_default().push((request_id, slot));
                }
                self.registry.handle_request(now, conn, &identity, request_id, request);
            }
            ShardMsg::Disconnect { conn } => {
                self.registry.handle_disconnect(now, conn);
                self.gone.push(conn);
            }
            ShardMsg::Run(f) => f(&mut self.registry, now),
            // Rooms outlive a restart (they are in the store): members are not told the room
            // ended; their connections close with SERVER_SHUTTING_DOWN and clients resume.
            ShardMsg::Shutdown(done) => self.acks.push(done),
            ShardMsg::Settled(done) => self.settling.push((self.registry.last_commit_needed(), done)),
            ShardMsg::Acknowledged(job, done) => {
                self.next_driver_ack += 1;
                let result = job(&mut self.registry, now);
                self.registry.acknowledge(DRIVER_CONN, self.next_driver_ack, result);
                self.driver_acks.insert(self.next_driver_ack, done);
            }
        }
    }

    /// Sends this wake-up's outputs. Commits are pipelined: the registry's pending store
    /// operations are handed to the store as one commit (when the registry lets the shard
    /// have one more in flight), and the shard goes on handling requests (of every room)
    /// while the store syncs; the outputs that follow a commit — its acknowledgements and
    /// deliveries — stay held in the registry until the store's answer is reported to it
    /// (nothing is acknowledged before it is durable; a commit a store that does not wait
    /// answers at once is reported in this flush). Then, in order, the replies and
    /// deliveries that are ready (each event encoded once), starting the history reads on
    /// tasks of their own (see [`answer_history`]); then one wake-up per connection queued to.
    async fn flush(&mut self) {
        let now = now_ms();
        self.hand_commit(now);
        // A store that answers at once (the memory store, without a committer) is answered in
        // this flush, so what a commit held goes out now, not after another turn of the
        // shard's loop; an answer may let the registry have its next commit, handed at once
        // too. A store that waits is answered in the loop's `select!`: polling it here would
        // only put a store's own work ahead of this flush's outputs.
        if self.answers_at_once {
            while self.answer_ready_commit().await {
                self.hand_commit(now);
            }
        }
        while let Some(output) = self.registry.poll_output() {
            self.dispatch(output, now);
        }
        self.queue_burst();
        for (op, received) in self.timings.drain(..) {
            crate::metrics::hot::request_handled(op, received.elapsed());
        }
        for conn in self.gone.drain(..) {
            self.outboxes.remove(&conn);
            self.reserved.remove(&conn);
            self.answering.remove(&conn);
        }
        let reported = self.registry.commits_reported();
        let (settled, waiting) =
            std::mem::take(&mut self.settling).into_iter().partition(|(needed, _)| *needed <= reported);
        self.settling = waiting;
        for (_, done) in settled {
            let _ = done.send(());
        }
        if self.commits.is_empty() {
            // Shutdown is acknowledged once everything taken has been stored and sent.
            for done in self.acks.drain(..) {
                let _ = done.send(());
            }
        }
        self.wake_writers();
    }

    /// Hands the registry's pending store operations to the store as one commit, if there
    /// are some and the registry lets the shard have one more in flight.
    fn hand_commit(&mut self, now: u64) {
        let epoch = self.registry.commit_epoch();
        let ops = self.registry.take_commit();
        if ops.is_empty() {
            return;
        }
        let started = Instant::now();
        let answer: CommitFuture = match &self.committer {
            Some(committer) => {
                let answer = committer.submit(self.index, epoch, now, ops);
                Box::pin(async move { answer.await.unwrap_or_else(|_| Err(commit::stopped())) })
            }
            None => {
                let store = Arc::clone(&self.store);
                Box::pin(async move { store.apply(now, &ops).await })
            }
        };
        let answer = Box::pin(async move {
            let result = answer.await;
            crate::metrics::hot::commit_timed(started.elapsed());
            result
        });
        self.commits.push_back((epoch, answer));
    }

    /// Reports the oldest commit in flight, if the store has answered it; whether it had.
    async fn answer_ready_commit(&mut self) -> bool {
        let Some((_, front)) = self.commits.front_mut() else { return false };
        let answered = std::future::poll_fn(|cx| Poll::Ready(front.as_mut().poll(cx))).await;
        let Poll::Ready(result) = answered else { return false };
        self.commit_answered(result);
        true
    }

    /// Reports the answer of the oldest commit in flight to the registry.
    fn commit_answered(&mut self, result: Result<(), StoreError>) {
        let (epoch, _) = self.commits.pop_front().expect("a commit in flight");
        if let Err(e) = &result {
            if epoch < self.registry.commit_epoch() {
                // Taken before an earlier commit's failure was reported: refused with it.
                tracing::debug!(error = %e, "store commit refused after an earlier one failed");
            } else {
                metrics::counter!("roomkit_store_errors_total").increment(1);
                tracing::error!(error = %e, "store commit failed: the messages in it are refused");
            }
        }
        self.registry.handle_commit(result);
    }

    /// Answers a request that would start one more store read than `reads_in_flight`.
    fn refuse_read(&mut self, conn: ConnId, request_id: u64) {
        let code = Code::TOO_MANY_PENDING;
        metrics::counter!("roomkit_request_errors_total", "code" => code.name()).increment(1);
        let msg = format!(
            "{} history reads of this connection are under way: retry once one is answered",
            self.reads_in_flight
        );
        self.send(conn, Frame::from(codec::encode_error(Some(request_id), code, &msg)));
    }

    /// The read slot taken for request `request_id` of `conn`, if any.
    fn take_reserved(&mut self, conn: ConnId, request_id: u64) -> Option<ReadSlot> {
        let slots = self.reserved.get_mut(&conn)?;
        let at = slots.iter().position(|(id, _)| *id == request_id)?;
        let (_, slot) = slots.remove(at);
        if slots.is_empty() {
            self.reserved.remove(&conn);
        }
        Some(slot)
    }

    fn wake_writers(&mut self) {
        self.queued_since_wake = 0;
        self.wake.wake(&self.pools);
    }

    fn dispatch(&mut self, output: Output, now: u64) {
        let output = match output {
            Output::Reply { conn: DRIVER_CONN, request_id, result } => {
                if let Some(done) = self.driver_acks.remove(&request_id) {
                    let _ = done.send(result);
                }
                return;
            }
            other => other,
        };
        if let Some(node) = &self.cluster {
            let room = match &output {
                Output::Reply { conn, request_id, .. } | Output::History { conn, request_id, .. } => {
                    take_answering(&mut self.answering, *conn, *request_id)
                }
                _ => None,
            };
            return node.dispatch(output, room, &self.store, now);
        }
        match output {
            Output::Reply { conn, request_id, result } => {
                // A request answered without reading the store gives its slot back.
                drop(self.take_reserved(conn, request_id));
                self.send(conn, reply_frame(request_id, result));
            }
            Output::Deliver { audience, event } => {
                // Encoded and framed once; every recipient's queue holds the same buffer.
                let frame = Frame::write_text(FRAME_HINT, |out| codec::write_event(out, &event));
                self.deliver(audience, frame, Shed::of(&event), event.is_chat_message());
            }
            Output::History { conn, request_id, room_uuid, read } => {
                // The read's answer is queued by another task, at any time: what precedes it
                // is queued first.
                self.queue_burst();
                let reserved = self.take_reserved(conn, request_id);
                let Some(outbox) = self.outboxes.get(&conn) else { return };
                let Some(slot) = reserved.or_else(|| outbox.begin_read(self.reads_in_flight)) else {
                    self.refuse_read(conn, request_id);
                    return;
                };
                let store = Arc::clone(&self.store);
                tokio::spawn(answer_history(store, slot, request_id, room_uuid, read, now));
            }
            // Only a registry made `with_roster_outputs` reports these.
            Output::Roster { .. } => {}
            Output::RoomEnded { room_uuid, reason } => {
                tracing::info!(room = %room_uuid, ?reason, "room ended");
            }
        }
    }
}

/// The room of request `request_id` of `conn`, forgotten once answered.
fn take_answering(
    answering: &mut ConnMap<Vec<(u64, RoomUuid)>>,
    conn: ConnId,
    request_id: u64,
) -> Option<RoomUuid> {
    let list = answering.get_mut(&conn)?;
    let at = list.iter().position(|(id, _)| *id == request_id)?;
    let (_, room) = list.swap_remove(at);
    if list.is_empty() {
        answering.remove(&conn);
    }
    Some(room)
}
