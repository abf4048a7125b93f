//! Cluster mode: many servers share the rooms through NATS (see "Cluster mode" in
//! docs/architecture.md).
//!
//! - Every node accepts any client. A room runs on one node at a time, its **owner**: the
//!   node holding the room's lease, a key in the JetStream key-value bucket `<prefix>_owners`
//!   created by the first node that needs the room and renewed while the node lives (the
//!   bucket's age limit is the lease's time to live).
//! - A node forwards a request for a room it does not own to the owner, as a NATS request on
//!   the room's `req` subject (`wire::Forward`); the owner acknowledges it at once and
//!   feeds it to its shard's registry.
//! - The owner publishes everything the registry outputs for the room — answers, events,
//!   member list changes — in order, once, on the room's `ev` subject (`wire::Record`).
//!   Every node with clients in the room subscribes and delivers to its own connections:
//!   an event is encoded once by the owner and framed once per node.
//! - Connection ids carry their node's slot in the top 16 bits, so the owner's registry
//!   tells every node's connections apart and a record names its connections' node.
//! - Nodes announce themselves in `<prefix>_nodes` (same time to live). A node that
//!   disappears from it is dead: owners disconnect its connections (their members get the
//!   grace period and resume on another node), and nodes whose rooms it owned close their
//!   members' connections with `ROOM_UNAVAILABLE` so that they resume on the room's next
//!   owner, which rebuilds the room from the store.

mod conn_rooms;
mod follow;
mod liveness;
mod own;
pub(crate) mod wire;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use roomkit_core::{store::MessageStore, ConnId, ConnMap, Identity};
use roomkit_protocol::{codec, ops::Request, Code, RoomUuid};
use tokio::task::AbortHandle;

use crate::{outbox::Outbox, shard::Shard, ServerShared};
use conn_rooms::ConnRooms;
use wire::Forward;

/// Times a connection's departure is sent to a room's owner before giving up.
const GONE_ATTEMPTS: usize = 5;

/// How a server joins a cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port`); any one will do.
    pub urls: Vec<String>,
    /// This node's name: unique in the cluster, stable across restarts.
    pub node_id: String,
    /// Prefix of every subject and bucket the cluster uses (default `roomkit`): clusters
    /// with different prefixes share a NATS without seeing each other.
    pub prefix: String,
    /// A room's lease and a node's announcement expire this long after their last renewal
    /// (default 6 s); renewed every third of it. A dead owner's rooms move after at most
    /// about this long.
    pub lease_ttl: Duration,
    /// How long joining may take at startup: connecting to NATS, and the first write to the
    /// node bucket, which on a NATS cluster that just created it waits for its leader (default
    /// 10 s).
    pub connect_timeout: Duration,
    /// How long a request may wait for its room's node (while a room moves to a new owner, or
    /// NATS is unreachable) before it is answered `ROOM_UNAVAILABLE` (default 15 s).
    pub forward_timeout: Duration,
    /// How many NATS servers keep the lease buckets: 1, or 3 on a three-server NATS cluster so
    /// that leases survive the loss of one (default 1).
    pub replicas: usize,
}

impl ClusterConfig {
    /// Default settings for node `node_id` on the NATS servers at `urls`.
    pub fn new(urls: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            urls,
            node_id: node_id.into(),
            prefix: "roomkit".into(),
            lease_ttl: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(10),
            forward_timeout: Duration::from_secs(15),
            replicas: 1,
        }
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A setting is unusable.
    #[error("bad cluster setting: {0}")]
    Config(String),
    /// NATS could not be reached.
    #[error("could not connect to NATS at {urls}: {reason}")]
    Connect {
        /// The addresses tried.
        urls: String,
        /// Why.
        reason: String,
    },
    /// NATS answered, but JetStream (needed for leases) did not, or not in time.
    #[error("NATS JetStream did not answer (is nats-server started with -js?): {0}")]
    JetStream(String),
    /// Another live node uses this node's slot.
    #[error("{0}")]
    NodeId(String),
}

/// A connection to a cluster, made before the server starts
/// ([`Server::with_cluster`](crate::Server::with_cluster)): a node that cannot reach NATS
/// fails here, with a clear error, rather than at its first request.
pub struct Cluster {
    node: Arc<Node>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node.config.node_id)
            .field("slot", &self.node.slot)
            .finish()
    }
}

impl Cluster {
    /// Connects to NATS, opens the lease buckets and announces this node.
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        if config.urls.is_empty() {
            return Err(ClusterError::Config("no NATS address given".into()));
        }
        if config.node_id.is_empty()
            || !config.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ClusterError::Config(format!(
                "node id {:?}: use letters, digits, '-' and '_'",
                config.node_id
            )));
        }
        if !matches!(config.replicas, 1 | 3 | 5) {
            return Err(ClusterError::Config(format!("replicas must be 1, 3 or 5, not {}", config.replicas)));
        }
        if config.lease_ttl < Duration::from_secs(1) {
            return Err(ClusterError::Config("lease_ttl must be at least 1 s".into()));
        }
        let urls = config.urls.join(",");
        let connect_error = |reason: String| ClusterError::Connect { urls: urls.clone(), reason };
        let addrs = config
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>().map_err(|e| connect_error(format!("{u}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        // Core NATS delivers at most once: records published while this node was disconnected
        // from NATS, or dropped by a full subscription, are lost to it. Either is signalled.
        let (lost_tx, lost_rx) = tokio::sync::mpsc::unbounded_channel();
        let options = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let lost_tx = lost_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected | async_nats::Event::SlowConsumer(_) => {
                            let _ = lost_tx.send(event.to_string());
                        }
                        _ => {}
                    }
                }
            })
            // A node's own room records reach its own clients directly (`Node::publish`).
            .no_echo()
            .name(format!("roomkit-{}", config.node_id))
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.forward_timeout.min(Duration::from_secs(5))));
        let client = tokio::time::timeout(config.connect_timeout, options.connect(addrs))
            .await
            .map_err(|_| connect_error(format!("no answer within {:?}", config.connect_timeout)))?
            .map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        // Lease operations are small and frequent: one that takes long is retried (or, for a
        // renewal, tried again a third of a lease later), not awaited.
        js.set_timeout((config.lease_ttl / 3).clamp(Duration::from_millis(500), Duration::from_secs(2)));
        let replicas = config.replicas;
        // A NATS cluster that just started may take a while to answer for JetStream: retried
        // until `connect_timeout`.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let (owners, nodes) = loop {
            let pair = async {
                let owners =
                    bucket(&js, format!("{}_owners", config.prefix), config.lease_ttl, replicas).await?;
                let nodes =
                    bucket(&js, format!("{}_nodes", config.prefix), config.lease_ttl, replicas).await?;
                Ok::<_, ClusterError>((owners, nodes))
            };
            match pair.await {
                Ok(pair) => break pair,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let slot = slot_of(&config.node_id);
        let node_key = format!("n{slot}");
        // A bucket replicated over a NATS cluster that was just created may still be electing
        // its leader: its first writes time out. Retried until `connect_timeout`.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        loop {
            let error = match nodes.create(&node_key, Bytes::from(config.node_id.clone())).await {
                Ok(_) => break,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let holder = nodes.get(&node_key).await.ok().flatten().unwrap_or_default();
                    if holder != config.node_id.as_bytes() {
                        return Err(ClusterError::NodeId(format!(
                            "node id {:?} shares its slot ({slot}) with the live node {:?}: choose another id",
                            config.node_id,
                            String::from_utf8_lossy(&holder)
                        )));
                    }
                    // The same node, restarted before its announcement expired.
                    match nodes.put(&node_key, Bytes::from(config.node_id.clone())).await {
                        Ok(_) => break,
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::JetStream(format!(
                    "announcing this node in {}_nodes: {error}",
                    config.prefix
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(node = %config.node_id, slot, nats = %urls, "joined the cluster");
        let node = Arc::new_cyclic(|me| Node {
            config,
            client,
            owners,
            nodes,
            slot,
            state: Mutex::default(),
            runtime: OnceLock::new(),
            me: me.clone(),
            lost: Mutex::new(Some(lost_rx)),
        });
        Ok(Cluster { node })
    }

    /// This node's slot: the top 16 bits of its connections' ids.
    pub fn slot(&self) -> u16 {
        self.node.slot
    }

    pub(crate) fn into_node(self) -> Arc<Node> {
        self.node
    }
}

/// Opens key-value bucket `name`, creating it when missing. Created as the stream the
/// bucket is made of, as `create_key_value` would: that call first reads the account's
/// limits, whose answer from nats-server 2.9 the client does not parse.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        duplicate_window: ttl.min(Duration::from_secs(120)),
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    if let Err(e) = js.create_stream(config).await {
        // Another node may have created it meanwhile: the bucket decides.
        tracing::debug!(bucket = %name, error = %e, "creating a bucket failed");
    }
    js.get_key_value(&name).await.map_err(|e| ClusterError::JetStream(format!("bucket {name}: {e}")))
}

/// A node id's slot: a 16-bit hash, never 0 (0 is a server outside any cluster).
fn slot_of(node_id: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node_id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    ((h ^ (h >> 16)) as u16).max(1)
}

/// The slot of connection `conn`'s node.
pub(crate) fn slot_of_conn(conn: ConnId) -> u16 {
    (conn.0 >> 48) as u16
}

/// Where this process starts numbering its connections: at random in the lower half of the
/// 48-bit space, so that a node restarted under the same id (hence the same slot) does not
/// hand out the ids of its previous run, which other nodes' rooms may still hold.
pub(crate) fn first_conn_number() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    (h.finish() & ((1 << 47) - 1)).max(1)
}

/// The id of this node's `n`th connection.
pub(crate) fn conn_id(slot: u16, n: u64) -> ConnId {
    ConnId(u64::from(slot) << 48 | (n & ((1 << 48) - 1)))
}

/// Room ids may hold `.` and `~`, which NATS subjects and keys do not take: they are named by
/// their hex form.
fn hex(room: &RoomUuid) -> String {
    room.as_str().bytes().map(|b| format!("{b:02x}")).collect()
}

/// This node of a cluster.
pub(crate) struct Node {
    pub(crate) config: ClusterConfig,
    client: async_nats::Client,
    owners: kv::Store,
    nodes: kv::Store,
    pub(crate) slot: u16,
    state: Mutex<State>,
    runtime: OnceLock<Runtime>,
    /// This node, for tasks it starts.
    me: Weak<Node>,
    /// Signals that room stream records may have been lost (see `liveness::watch_connection`).
    lost: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

/// What the node runs on, known once the server has started.
struct Runtime {
    shards: Vec<Shard>,
    shared: Weak<ServerShared>,
    store: Arc<dyn MessageStore>,
    /// Records to publish, in order ([`own::publisher`]).
    publish: tokio::sync::mpsc::UnboundedSender<own::ToPublish>,
}

#[derive(Default)]
struct State {
    /// Rooms this node owns, with their lease's revision and the task taking their requests.
    owned: HashMap<RoomUuid, own::Owned>,
    /// Rooms whose stream this node follows, for its own connections.
    followed: HashMap<RoomUuid, follow::Followed>,
    /// Rooms each of this node's connections sent requests for.
    conn_rooms: ConnMap<ConnRooms>,
    /// Other nodes' connections in rooms this node owns, by node slot (to disconnect them
    /// when their node dies).
    remote: HashMap<u16, HashSet<(ConnId, RoomUuid)>>,
}

impl Node {
    /// This node's slot.
    pub(crate) fn slot(&self) -> u16 {
        self.slot
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.get().expect("the cluster node is attached when the server starts")
    }

    fn subject(&self, room: &RoomUuid, what: &str) -> String {
        format!("{}.room.{}.{what}", self.config.prefix, hex(room))
    }

    /// Starts the node's tasks, once the server's shards exist.
    pub(crate) fn attach(
        self: &Arc<Self>,
        shards: Vec<Shard>,
        shared: Weak<ServerShared>,
        store: Arc<dyn MessageStore>,
    ) -> Vec<AbortHandle> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = Runtime { shards, shared, store, publish: tx };
        assert!(self.runtime.set(runtime).is_ok(), "attached once");
        let lost = self.lost.lock().expect("not poisoned").take().expect("attached once");
        vec![
            tokio::spawn(own::publisher(self.client.clone(), self.config.prefix.clone(), rx)).abort_handle(),
            tokio::spawn(liveness::upkeep(Arc::downgrade(self))).abort_handle(),
            tokio::spawn(liveness::watch_connection(Arc::downgrade(self), lost)).abort_handle(),
        ]
    }

    /// Routes a request of connection `conn` to its room's owner (this node or another) and
    /// makes sure this node follows the room's stream, where the answer comes.
    pub(crate) async fn route(
        self: &Arc<Self>,
        conn: ConnId,
        outbox: &Outbox,
        identity: &Arc<Identity>,
        request_id: u64,
        request: Request,
        frame: Bytes,
    ) {
        let Some(room) = request.room_uuid().cloned() else { return };
        if let Err(e) = self.follow(&room, conn).await {
            return refuse(outbox, request_id, &format!("could not follow room {room}: {e}"));
        }
        let deadline = tokio::time::Instant::now() + self.config.forward_timeout;
        // The owner this node's connections in the room joined under, if any.
        let expect = follow::owner_of(self, &room);
        // Encoded once, when first forwarded: a room this node runs needs none of it.
        let mut forward: Option<Bytes> = None;
        let subject = self.subject(&room, "req");
        loop {
            if self.owns(&room) {
                if expect.is_some_and(|owner| owner != self.slot) {
                    // This node took the room over: its clients here were members of the
                    // previous owner's room, and rejoin this one.
                    return follow::reset(self, &room, "it moved to another node");
                }
                follow::owner_is(self, &room, self.slot);
                return own::hand_to_shard(self, &room, conn, Arc::clone(identity), request_id, request)
                    .await;
            }
            let forward = forward
                .get_or_insert_with(|| {
                    let identity = Identity::clone(identity);
                    let expect = expect.unwrap_or(0);
                    Bytes::from(Forward::Request { conn, expect, identity, frame: frame.clone() }.encode())
                })
                .clone();
            match self.client.request(subject.clone(), forward).await {
                Ok(answer) if answer.payload.starts_with(own::ACCEPTED) => {
                    let owner = answer.payload.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                    return follow::owner_is(self, &room, owner);
                }
                Ok(answer) if answer.payload.as_ref() == own::MOVED => {
                    return follow::reset(self, &room, "it moved to another node");
                }
                Ok(_) => {} // the node lost the room meanwhile: ask again
                Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut && !resendable(&request) => {
                    // The owner may have taken it: sending it again could run it twice.
                    tracing::warn!(room = %room, "a forwarded request was not acknowledged in time");
                    return refuse(
                        outbox,
                        request_id,
                        &format!("the node running room {room} did not answer in time"),
                    );
                }
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    match own::acquire(self, &room).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(room = %room, error = %e, "could not take a room's lease"),
                    }
                }
                Err(e) => tracing::debug!(room = %room, error = %e, "forwarding a request failed; retrying"),
            }
            if tokio::time::Instant::now() >= deadline {
                return refuse(
                    outbox,
                    request_id,
                    &format!("the node running room {room} could not be reached"),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn owns(&self, room: &RoomUuid) -> bool {
        self.state.lock().expect("not poisoned").owned.contains_key(room)
    }

    /// Connection `conn` of this node is gone: every room it used hears of it.
    pub(crate) async fn disconnect(&self, conn: ConnId) {
        let rooms = self.state.lock().expect("not poisoned").conn_rooms.remove(&conn).unwrap_or_default();
        for room in rooms.into_vec() {
            if self.owns(&room) {
                own::disconnect_local(self, &room, conn).await;
            } else {
                // Told until the owner acknowledges it (or nobody runs the room any more: its
                // next owner rebuilds it without this connection), on a task of its own.
                let gone = Bytes::from(Forward::Gone { conn }.encode());
                let (client, subject, room) = (self.client.clone(), self.subject(&room, "req"), room.clone());
                tokio::spawn(async move {
                    for _ in 0..GONE_ATTEMPTS {
                        match client.request(subject.clone(), gone.clone()).await {
                            Ok(_) => return,
                            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return,
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                    tracing::warn!(room = %room, "could not tell a room's owner of a disconnect");
                });
            }
            self.unfollow_if_unused(&room, conn);
        }
    }

    /// Leaves the cluster on shutdown, once the shards have stopped: every owned room is
    /// announced `Moved` (after everything it published before) and its lease given up, and the
    /// node's announcement removed, so that the rooms move to other nodes at once rather than
    /// when the leases expire, and every node's members of them resume there.
    pub(crate) async fn leave(&self) {
        // Stop taking requests (the serve tasks end with their `Owned`) and take the rooms out
        // of the shards, then announce them moved, after everything published before.
        let owned: Vec<(RoomUuid, own::Owned)> =
            self.state.lock().expect("not poisoned").owned.drain().collect();
        let rooms: Vec<RoomUuid> = owned.iter().map(|(room, _)| room.clone()).collect();
        drop(owned);
        for room in &rooms {
            own::evict(self, room).await;
            self.publish(room, wire::Record::Moved.encode());
        }
        self.flush().await;
        for room in &rooms {
            let _ = self.owners.delete(hex(room)).await;
        }
        let _ = self.nodes.delete(format!("n{}", self.slot)).await;
        let _ = self.client.flush().await;
    }

    fn outbox_of(&self, conn: ConnId) -> Option<Outbox> {
        let shared = self.runtime().shared.upgrade()?;
        let connections = shared.connections.lock().expect("not poisoned");
        connections.get(&conn).cloned()
    }

    /// The server's write pools, through which this node's connections are woken (none once
    /// the server is gone).
    fn pools(&self) -> Arc<[Arc<crate::outbox::pool::WritePool>]> {
        self.runtime().shared.upgrade().map(|shared| Arc::clone(&shared.pools)).unwrap_or_default()
    }
}

/// Whether a request may be forwarded again when its first copy was not acknowledged: a stored
/// send with its own message id, which the room's id window recognises if the first copy ran.
fn resendable(request: &Request) -> bool {
    match request {
        Request::SendTextMessage(r) => r.message_uuid.is_some(),
        Request::SendCustomMessage(r) => r.message_uuid.is_some() && r.persist,
        _ => false,
    }
}

/// Answers a request that could not reach its room's node.
fn refuse(outbox: &Outbox, request_id: u64, msg: &str) {
    metrics::counter!("roomkit_request_errors_total", "code" => Code::ROOM_UNAVAILABLE.name()).increment(1);
    outbox.push(codec::encode_error(Some(request_id), Code::ROOM_UNAVAILABLE, msg).into());
}
