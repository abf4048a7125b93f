//! The roomkit server: drives [`roomkit_core`] over any transport.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use roomkit_server::{DevAuthenticator, Server, ServerConfig};
//!
//! let (listener, connector) = roomkit_transport_memory::transport();
//! let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator)).spawn(listener);
//! // ... connect clients through `connector` ...
//! # drop(connector);
//! server.shutdown().await;
//! # }
//! ```
//!
//! Shape at run time:
//! - one accept task;
//! - per connection, one task: its reading half (decode, login, route) and its writing half
//!   (drain the bounded send queue, one batched write per wake-up);
//! - `write_pools` write-pool tasks, which write idle connections' queues in place, so that a
//!   delivery to an idle member costs no wake-up of its task;
//! - `shards` shard tasks, each owning the rooms hashed to it and driving a
//!   [`roomkit_core::RoomRegistry`]: no lock on the hot path, and one room's events are
//!   produced by one task in one order.

pub mod admin;
mod admission;
mod auth;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "cluster_off.rs"]
mod cluster;
mod commit;
mod config;
mod connection;
mod jwt;
mod keepalive;
mod live;
pub mod metrics;
pub mod net;
pub mod web;

mod outbox;
mod rate;
mod shard;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

pub use auth::{AuthError, Authenticator, DevAuthenticator};
pub use config::{RateLimit, ServerConfig};
use roomkit_core::{
    transport::{CloseReason, Listener, TransportError},
    ConnId, RoomRegistry,
};
use roomkit_protocol::{ops, Code, RoomUuid};
pub use shard::shard_of;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    outbox::Outbox,
    shard::{Shard, ShardMsg, ShardSetup},
};
use roomkit_core::store::{MemoryStore, MessageStore, Retention};

/// State shared by the server's tasks.
pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) shards: Vec<Shard>,
    /// Live connections, to close them on shutdown and to sweep them for keep-alive.
    pub(crate) connections: Mutex<HashMap<ConnId, Outbox>>,
    /// The bounds of every connection's send queue.
    pub(crate) outbox_bounds: Arc<outbox::Bounds>,
    /// The keep-alive's clock.
    pub(crate) clock: keepalive::Clock,
    /// The write pools (see `outbox::pool`); none when `write_pools` is 0.
    pub(crate) pools: Arc<[Arc<outbox::pool::WritePool>]>,
    /// The connection caps and what counts against them.
    pub(crate) admission: admission::Admission,
    /// Connection tasks not ended yet, for shutdown to wait for.
    pub(crate) live: live::LiveTasks,
    /// In cluster mode, this node.
    pub(crate) cluster: Option<Arc<cluster::Node>>,
}

/// A server, configured but not yet running.
pub struct Server {
    config: ServerConfig,
    authenticator: Arc<dyn Authenticator>,
    store: Option<Arc<dyn MessageStore>>,
    cluster: Option<Arc<cluster::Node>>,
}

impl Server {
    /// A server that logs connections in through `authenticator`, keeping history in
    /// memory (as many messages per chatroom as `core.history_ring_size`).
    pub fn new(config: ServerConfig, authenticator: Arc<dyn Authenticator>) -> Self {
        Self { config, authenticator, store: None, cluster: None }
    }

    /// Runs as a node of a cluster (see `cluster`): rooms are shared with the other nodes
    /// through NATS, each one running on the node holding its lease. The store must be one
    /// every node reads and writes (JetStream's), given with [`with_store`](Self::with_store).
    #[cfg(feature = "cluster")]
    pub fn with_cluster(mut self, cluster: cluster::Cluster) -> Self {
        self.cluster = Some(cluster.into_node());
        self
    }

    /// Keeps rooms and history in `store` instead: with a durable store, rooms and history
    /// survive a restart, and a message is acknowledged only once it is stored. With several
    /// shards and a store whose commits wait ([`MessageStore::commit_waits`]), the shards'
    /// commits are grouped: one committer writes every commit waiting at once as one
    /// `apply` (see `commit.rs` and [`ServerConfig::commits_in_flight`]).
    pub fn with_store(mut self, store: Arc<dyn MessageStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts serving connections from `listener` on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If the configuration is refused by [`ServerConfig::check`].
    pub fn spawn<L: Listener + 'static>(self, listener: L) -> ServerHandle {
        if let Err(e) = self.config.check() {
            panic!("invalid server configuration: {e}");
        }
        let count = self.config.shards.max(1);
        let core = self.config.core.clone();
        let store = self.store.unwrap_or_else(|| {
            // Without a durable store, keep `history_ring_size` messages per chatroom.
            let keep = Retention { max_messages: Some(core.history_ring_size as u64), max_age_ms: None };
            MemoryStore::shared(keep)
        });
        // A store whose commits wait (on a disk, a network) is written through one committer
        // for all shards, when there are several; otherwise each shard calls it directly.
        let committer = commit::GroupCommit::for_shards(&store, count);
        let tally = roomkit_core::RoomTally::new();
        let clock = keepalive::Clock::start();
        let pools: Arc<[_]> = (0..self.config.write_pools.min(usize::from(u16::MAX) + 1))
            .map(|_| Arc::new(outbox::pool::WritePool::default()))
            .collect();
        // Each pool's task ends once the pool is gone: when the last connection task has
        // ended with the server's state, whether or not the server was shut down.
        for pool in pools.iter() {
            tokio::spawn(outbox::pool::run(Arc::downgrade(pool), clock));
        }
        let shards = (0..count)
            .map(|index| {
                shard::spawn(ShardSetup {
                    pools: Arc::clone(&pools),
                    index,
                    shards: count,
                    config: core.clone(),
                    queue: self.config.shard_queue,
                    batch: self.config.shard_batch,
                    wake_batch: self.config.writer_wake_batch,
                    reads_in_flight: self.config.reads_in_flight,
                    commits_in_flight: self.config.commits_in_flight,
                    store: Arc::clone(&store),
                    committer: committer.clone(),
                    tally: tally.clone(),
                    cluster: self.cluster.clone(),
                })
            })
            .collect::<Vec<_>>();
        let caps = admission::Caps {
            total: self.config.max_connections,
            per_address: self.config.max_connections_per_address,
            per_account: self.config.max_connections_per_account,
        };
        let outbox_bounds = outbox::Bounds::new(
            self.config.send_queue_frames,
            self.config.high_watermark(),
            self.config.send_queue_bytes,
        );
        let shared = Arc::new(ServerShared {
            admission: admission::Admission::new(caps),
            outbox_bounds,
            config: self.config,
            authenticator: self.authenticator,
            shards: shards.clone(),
            connections: Mutex::new(HashMap::new()),
            clock,
            pools,
            live: live::LiveTasks::default(),
            cluster: self.cluster.clone(),
        });
        let cluster_tasks = match &self.cluster {
            Some(node) => node.attach(shards, Arc::downgrade(&shared), Arc::clone(&store)),
            None => Vec::new(),
        };
        let (ping_interval, idle_timeout) = (shared.config.ping_interval, shared.config.idle_timeout);
        let keepalive = (!ping_interval.is_zero())
            .then(|| tokio::spawn(keepalive::sweep(Arc::downgrade(&shared), ping_interval, idle_timeout)));
        let (stop_tx, stop_rx) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
        let upkeeps = Arc::new(AtomicU64::new(0));
        let upkeep = metrics::spawn_counted_upkeep(Arc::clone(&upkeeps));
        ServerHandle {
            rooms: Rooms { shared: Arc::clone(&shared) },
            shared,
            stop: Some(stop_tx),
            accept,
            keepalive,
            upkeep,
            upkeeps,
            cluster_tasks,
        }
    }
}

/// Connections refused by a cap that may be answered at once (each is held while its close
/// frame goes out, up to a few seconds). Past it, a refused connection is dropped at once
/// without an answer: in a connect flood the caps bound the sockets held to the caps plus
/// this many.
pub const MAX_REFUSALS_IN_PROGRESS: usize = 64;

/// A refusal under way, counted until dropped (as a refusal and as a live task).
struct RefusalSlot {
    refusing: Arc<AtomicUsize>,
    shared: Arc<ServerShared>,
}

impl Drop for RefusalSlot {
    fn drop(&mut self) {
        self.refusing.fetch_sub(1, Ordering::Relaxed);
        self.shared.live.ended();
    }
}

async fn accept_loop<L: Listener>(
    mut listener: L,
    shared: Arc<ServerShared>,
    mut stop: oneshot::Receiver<()>,
) {
    tracing::info!(addr = %listener.local_addr(), "accepting connections");
    // In a cluster a connection id carries its node's slot: ids are unique across nodes (and
    // across restarts of a node: see `cluster::first_conn_number`).
    let slot = shared.cluster.as_ref().map_or(0, |node| node.slot());
    let next_id = AtomicU64::new(if slot == 0 { 1 } else { cluster::first_conn_number() });
    let refusing = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(connection) => {
                // Over a cap, the connection is closed before it costs more than its refusal.
                if let Err(reason) = shared.admission.accept(&admission::address_of(&connection.peer)) {
                    // Only this loop counts up, so the check and the count agree.
                    if refusing.load(Ordering::Relaxed) >= MAX_REFUSALS_IN_PROGRESS {
                        tracing::debug!(peer = %connection.peer, %reason, "connection dropped: too many refusals under way");
                        drop(connection);
                        continue;
                    }
                    refusing.fetch_add(1, Ordering::Relaxed);
                    shared.live.started();
                    let slot = RefusalSlot { refusing: Arc::clone(&refusing), shared: Arc::clone(&shared) };
                    tokio::spawn(async move {
                        let _slot = slot;
                        connection::refuse(connection, reason).await;
                    });
                    continue;
                }
                let id = cluster::conn_id(slot, next_id.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(connection::run(id, connection, Arc::clone(&shared)));
            }
            Err(TransportError::Closed(_)) => break,
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

/// A running server.
pub struct ServerHandle {
    rooms: Rooms,
    shared: Arc<ServerShared>,
    stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    keepalive: Option<JoinHandle<()>>,
    /// The metrics recorder's periodic upkeep ([`metrics::spawn_upkeep`]).
    upkeep: JoinHandle<()>,
    /// Upkeeps this server's task has run (observed by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) upkeeps: Arc<AtomicU64>,
    /// In cluster mode, the node's publisher and its lease upkeep.
    cluster_tasks: Vec<tokio::task::AbortHandle>,
}

/// A handle dropped without [`shutdown`](ServerHandle::shutdown) stops the server's
/// periodic tasks (metrics upkeep, keep-alive sweep) and its accepting, and closes the
/// connections already open with `SERVER_SHUTTING_DOWN`, as a shutdown does, without waiting
/// for them.
impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.stop.is_some() {
            close_connections(&self.shared);
        }
        self.upkeep.abort();
        if let Some(keepalive) = self.keepalive.take() {
            keepalive.abort();
        }
        for task in &self.cluster_tasks {
            task.abort();
        }
    }
}

/// Access to a running server's rooms, for admin APIs and tests. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    shared: Arc<ServerShared>,
}

impl ServerHandle {
    /// Access to the rooms, to hand to an admin API.
    pub fn rooms(&self) -> Rooms {
        self.rooms.clone()
    }

    /// Runs `f` on the shard that owns `room`; see [`Rooms::with_room`].
    pub async fn with_room<R: Send + 'static>(
        &self,
        room: &RoomUuid,
        f: impl FnOnce(&mut RoomRegistry, u64) -> R + Send + 'static,
    ) -> Option<R> {
        self.rooms.with_room(room, f).await
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.rooms.connection_count()
    }

    /// Waits until everything handled so far is stored; see [`Rooms::commits_settled`].
    pub async fn commits_settled(&self) {
        self.rooms.commits_settled().await;
    }
}

impl Rooms {
    /// Runs `f` on the shard that owns `room` (or would own it) and returns its result.
    /// Events and replies `f` causes are delivered as usual. For admin APIs and tests.
    pub async fn with_room<R: Send + 'static>(
        &self,
        room: &RoomUuid,
        f: impl FnOnce(&mut RoomRegistry, u64) -> R + Send + 'static,
    ) -> Option<R> {
        let shard = &self.shared.shards[shard::shard_of(room, self.shared.shards.len())];
        run_on(shard, f).await
    }

    /// Runs `f` on the shard that owns `room` and answers with its result once the message
    /// that result carries is stored, or with `NotStored` if it cannot be (a failed commit),
    /// as a member's send is acknowledged. `None` if the shard has stopped.
    pub(crate) async fn acknowledged(
        &self,
        room: &RoomUuid,
        f: impl FnOnce(&mut RoomRegistry, u64) -> Result<ops::Response, roomkit_core::Error> + Send + 'static,
    ) -> Option<Result<ops::Response, roomkit_core::Error>> {
        let shard = &self.shared.shards[shard::shard_of(room, self.shared.shards.len())];
        let (done, answer) = oneshot::channel();
        shard.tx.send(ShardMsg::Acknowledged(Box::new(f), done)).await.ok()?;
        answer.await.ok()
    }

    /// Runs `f` on every shard, returning the results in shard order.
    pub async fn with_every_shard<R: Send + 'static>(
        &self,
        f: impl Fn(&mut RoomRegistry, u64) -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let mut all = Vec::with_capacity(self.shared.shards.len());
        for shard in &self.shared.shards {
            all.extend(run_on(shard, f.clone()).await);
        }
        all
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.lock().expect("not poisoned").len()
    }

    /// Waits until everything the shards handled before the call is in the store, or was
    /// answered as not stored (a failed commit): every commit holding it has been reported.
    pub async fn commits_settled(&self) {
        for shard in &self.shared.shards {
            shard.settled().await;
        }
    }
}

impl ServerHandle {
    /// Stops accepting, lets every shard finish what it was doing, flushes and closes every
    /// connection (`SERVER_SHUTTING_DOWN`: clients reconnect and resume once a server is
    /// back; rooms and history stay in the store), and waits for them, at most
    /// `shutdown_grace`.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.upkeep.abort();
        let _ = (&mut self.accept).await;
        for shard in &self.shared.shards {
            let (done, wait) = oneshot::channel();
            if shard.tx.send(ShardMsg::Shutdown(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        if let Some(keepalive) = self.keepalive.take() {
            keepalive.abort();
        }
        if let Some(node) = &self.shared.cluster {
            // The rooms move to other nodes at once; clients resume there.
            node.leave().await;
        }
        close_connections(&self.shared);
        if tokio::time::timeout(self.shared.config.shutdown_grace, self.shared.live.all_ended())
            .await
            .is_err()
        {
            // Left to finish on their own, as before the grace period ran out.
            tracing::warn!(
                left = self.shared.live.running(),
                "connections did not close within the shutdown grace period"
            );
        }
    }
}

/// Closes every open connection with `SERVER_SHUTTING_DOWN` (each flushes what it has queued
/// first, within its close timeout).
fn close_connections(shared: &ServerShared) {
    let outboxes: Vec<Outbox> = shared.connections.lock().expect("not poisoned").values().cloned().collect();
    for outbox in outboxes {
        outbox.close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "server shutting down"), true);
    }
}

async fn run_on<R: Send + 'static>(
    shard: &Shard,
    f: impl FnOnce(&mut RoomRegistry, u64) -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = oneshot::channel();
    let job = Box::new(move |registry: &mut RoomRegistry, now| {
        let _ = tx.send(f(registry, now));
    });
    shard.tx.send(ShardMsg::Run(job)).await.ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests;
