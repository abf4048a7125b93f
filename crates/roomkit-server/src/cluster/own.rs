//! The owner's side: taking a room's lease, loading the room, taking its requests, publishing
//! its outputs, renewing the lease, and disconnecting the connections of dead nodes.

use std::{collections::HashSet, sync::Arc, time::Instant};

use bytes::Bytes;
use futures::StreamExt;
use roomkit_core::{
    store::{HistoryQuery, HistoryRange, MessageStore},
    ConnId, Identity, Output,
};
use roomkit_protocol::{codec, ops::Request, RoomUuid, Shedding};
use tokio::{sync::mpsc, task::AbortHandle};

use super::{
    hex, slot_of_conn,
    wire::{Forward, Record, ShedClass},
    Node,
};
use crate::{
    clock::now_ms,
    shard::{shard_of, ShardMsg},
};

/// The owner's answer to a forwarded request it took; its slot follows, two bytes.
pub(crate) const ACCEPTED: &[u8] = b"ok";
/// The owner's answer to a forwarded request from a connection that joined the room under
/// another owner: the request is not taken, the connection must resume.
pub(crate) const MOVED: &[u8] = b"mv";

/// A room this node owns.
pub(crate) struct Owned {
    /// The revision of the lease's last renewal.
    revision: u64,
    /// When the lease was last renewed (or taken).
    renewed: Instant,
    /// When the lease was taken.
    taken: Instant,
    /// The task taking the room's forwarded requests.
    task: AbortHandle,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lease_key(room: &RoomUuid) -> String {
    hex(room)
}

/// Takes room `room`'s lease if nobody holds it, loads the room from the store, and starts
/// taking its requests. False when another node holds the lease.
pub(crate) async fn acquire(node: &Arc<Node>, room: &RoomUuid) -> Result<bool, String> {
    let value = Bytes::from(node.config.node_id.clone());
    let revision = match node.owners.create(lease_key(room), value).await {
        Ok(revision) => revision,
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    let started = Instant::now();
    if let Err(e) = load(node, room).await {
        // Without its state the room cannot run here: give the lease back.
        let _ = node.owners.delete(lease_key(room)).await;
        return Err(format!("could not load room {room}: {e}"));
    }
    let subscription = match node.client.subscribe(node.subject(room, "req")).await {
        Ok(s) => s,
        Err(e) => {
            evict(node, room).await;
            let _ = node.owners.delete(lease_key(room)).await;
            return Err(e.to_string());
        }
    };
    let task = tokio::spawn(serve(Arc::downgrade(node), room.clone(), subscription)).abort_handle();
    node.state
        .lock()
        .expect("not poisoned")
        .owned
        .insert(room.clone(), Owned { revision, renewed: Instant::now(), taken: Instant::now(), task });
    metrics::counter!("roomkit_cluster_rooms_taken_total").increment(1);
    tracing::info!(room = %room, took = ?started.elapsed(), "took the room's lease");
    Ok(true)
}

/// Brings the room back from the store into its shard, as a restart does (no members;
/// numbering after its last stored message; recent message ids in the retry window).
async fn load(node: &Node, room: &RoomUuid) -> Result<(), String> {
    let runtime = node.runtime();
    let Some((record, last_seq)) = runtime.store.room(room).await.map_err(|e| e.to_string())? else {
        return Ok(()); // not stored: a room about to be created
    };
    let shard = &runtime.shards[shard_of(room, runtime.shards.len())];
    let uuid = room.clone();
    let store = Arc::clone(&runtime.store);
    let (done, wait) = tokio::sync::oneshot::channel();
    let recent_count = {
        let shared = runtime.shared.upgrade().ok_or("the server stopped")?;
        let c = &shared.config.core;
        c.history_ring_size.max(c.dedupe_window.min(1000))
    };
    let query = HistoryQuery {
        viewer: None,
        range: HistoryRange::AfterSeq(last_seq.saturating_sub(recent_count as u64)),
        limit: recent_count,
    };
    let recent = store.history(&uuid, &query, now_ms()).await.map_err(|e| e.to_string())?.messages;
    let job = Box::new(move |r: &mut roomkit_core::RoomRegistry, now| {
        if !r.has_room(&uuid) {
            r.restore_room(now, record, last_seq, recent);
        }
        let _ = done.send(());
    });
    shard.tx.send(ShardMsg::Run(job)).await.map_err(|_| "shard stopped".to_string())?;
    wait.await.map_err(|_| "shard stopped".to_string())
}

/// Takes the room's forwarded requests, in the order they come, for as long as this node
/// owns it.
async fn serve(node: std::sync::Weak<Node>, room: RoomUuid, mut requests: async_nats::Subscriber) {
    while let Some(message) = requests.next().await {
        let Some(node) = node.upgrade() else { return };
        match Forward::decode(&message.payload) {
            Ok(Forward::Request { conn, expect, identity, frame }) => {
                if expect != 0 && expect != node.slot {
                    if let Some(reply) = message.reply {
                        let _ = node.client.publish(reply, Bytes::from_static(MOVED)).await;
                    }
                    continue;
                }
                let slot = slot_of_conn(conn);
                if slot != node.slot {
                    node.state
                        .lock()
                        .expect("not poisoned")
                        .remote
                        .entry(slot)
                        .or_default()
                        .insert((conn, room.clone()));
                }
                // Acknowledged on receipt: the forwarder does not send it again (a busy shard
                // must not make it run twice); the answer comes on the room's stream.
                if let Some(reply) = message.reply {
                    let mut answer = ACCEPTED.to_vec();
                    answer.extend_from_slice(&node.slot.to_be_bytes());
                    let _ = node.client.publish(reply, Bytes::from(answer)).await;
                }
                // The forwarding node decoded it already: it is well formed.
                if let Ok(decoded) = codec::decode_request(&frame) {
                    hand_to_shard(&node, &room, conn, Arc::new(identity), decoded.id, decoded.request).await;
                }
            }
            Ok(Forward::Gone { conn }) => {
                if let Some(conns) =
                    node.state.lock().expect("not poisoned").remote.get_mut(&slot_of_conn(conn))
                {
                    conns.remove(&(conn, room.clone()));
                }
                if let Some(reply) = message.reply {
                    let _ = node.client.publish(reply, Bytes::from_static(ACCEPTED)).await;
                }
                disconnect_local(&node, &room, conn).await;
            }
            Err(e) => tracing::warn!(room = %room, error = %e, "unreadable forwarded request"),
        }
    }
}

/// Gives a request to the shard that runs `room` here.
pub(crate) async fn hand_to_shard(
    node: &Node,
    room: &RoomUuid,
    conn: ConnId,
    identity: Arc<Identity>,
    request_id: u64,
    request: Request,
) {
    let runtime = node.runtime();
    let shard = &runtime.shards[shard_of(room, runtime.shards.len())];
    let msg =
        ShardMsg::Request { conn, outbox: None, identity, request_id, request, received: Instant::now() };
    let _ = shard.tx.send(msg).await;
}

/// Connection `conn` is gone from room `room`, which runs here.
pub(crate) async fn disconnect_local(node: &Node, room: &RoomUuid, conn: ConnId) {
    let runtime = node.runtime();
    let shard = &runtime.shards[shard_of(room, runtime.shards.len())];
    let _ = shard.tx.send(ShardMsg::Disconnect { conn }).await;
}

/// What the publisher task is asked to do.
pub(crate) enum ToPublish {
    /// Publish a record on a room's stream.
    Record(RoomUuid, Bytes),
    /// Answer once everything asked before is published and flushed to NATS.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Publishes the records the shards hand over, in the order they come (one room's records
/// come from one shard, in its order).
pub(crate) async fn publisher(
    client: async_nats::Client,
    prefix: String,
    mut rx: mpsc::UnboundedReceiver<ToPublish>,
) {
    while let Some(job) = rx.recv().await {
        match job {
            ToPublish::Record(room, record) => {
                let subject = format!("{prefix}.room.{}.ev", hex(&room));
                if let Err(e) = client.publish(subject, record).await {
                    metrics::counter!("roomkit_cluster_publish_errors_total").increment(1);
                    tracing::error!(room = %room, error = %e, "could not publish a room's record");
                }
            }
            ToPublish::Flush(done) => {
                let _ = client.flush().await;
                let _ = done.send(());
            }
        }
    }
}

impl Node {
    /// Queues a record of room `room` for publishing.
    /// Hands a record of room `room`, which this node owns, to this node's own follower of the
    /// room, and queues it for the other nodes' (NATS does not echo it back here).
    pub(crate) fn publish(&self, room: &RoomUuid, record: Vec<u8>) {
        let record = Bytes::from(record);
        if let Some(followed) = self.state.lock().expect("not poisoned").followed.get(room) {
            let _ = followed.local.send(record.clone());
        }
        let _ = self.runtime().publish.send(ToPublish::Record(room.clone(), record));
    }

    /// Waits until every record queued so far is published.
    pub(crate) async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.runtime().publish.send(ToPublish::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Gives room `room` up: it ended here, this node is leaving, or no such room exists. The
/// room stops taking requests first (its serve task ends with its `Owned`), then leaves its
/// shard — a room created again in between goes too: it is in the store, and its next owner
/// loads it — and only then is the lease deleted, so that no other node loads it while a copy
/// still runs here.
pub(crate) async fn release(node: &Node, room: &RoomUuid) {
    let owned = node.state.lock().expect("not poisoned").owned.remove(room);
    if owned.is_none() {
        return;
    }
    drop(owned);
    evict(node, room).await;
    let _ = node.owners.delete(lease_key(room)).await;
}

/// Removes room `room` from its shard here (no events, nothing stored) and forgets the other
/// nodes' connections in it. Returns once what the shard accepted before is stored (or
/// settled as failed): the room's last messages must be in the store before its lease goes
/// and another node loads it.
pub(crate) async fn evict(node: &Node, room: &RoomUuid) {
    for conns in node.state.lock().expect("not poisoned").remote.values_mut() {
        conns.retain(|(_, r)| r != room);
    }
    let runtime = node.runtime();
    let shard = &runtime.shards[shard_of(room, runtime.shards.len())];
    let uuid = room.clone();
    let (done, wait) = tokio::sync::oneshot::channel();
    let job = Box::new(move |r: &mut roomkit_core::RoomRegistry, _| {
        r.evict_room(&uuid);
        let _ = done.send(());
    });
    if shard.tx.send(ShardMsg::Run(job)).await.is_ok() {
        let _ = wait.await;
    }
    shard.settled().await;
}

/// Releases the leases of rooms this node took but does not run, a lease time after it took
/// them: a request for a room that does not exist (or no longer does) takes its lease like
/// any other.
async fn release_unused(node: &Arc<Node>) {
    let old: Vec<RoomUuid> = node
        .state
        .lock()
        .expect("not poisoned")
        .owned
        .iter()
        .filter(|(_, o)| o.taken.elapsed() >= node.config.lease_ttl)
        .map(|(room, _)| room.clone())
        .collect();
    if old.is_empty() {
        return;
    }
    let runtime = node.runtime();
    let mut unused = Vec::new();
    for (index, shard) in runtime.shards.iter().enumerate() {
        let rooms: Vec<RoomUuid> =
            old.iter().filter(|r| shard_of(r, runtime.shards.len()) == index).cloned().collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move |r: &mut roomkit_core::RoomRegistry, _| {
            let _ = tx.send(rooms.into_iter().filter(|room| !r.has_room(room)).collect::<Vec<_>>());
        });
        if shard.tx.send(ShardMsg::Run(job)).await.is_ok() {
            unused.extend(rx.await.unwrap_or_default());
        }
    }
    for room in unused {
        tracing::debug!(room = %room, "giving back the lease of a room that does not run here");
        release(node, &room).await;
    }
}

/// Renews every lease this node holds. A lease another node holds now (the renewal finds
/// another revision), or one not renewed for a whole time to live (NATS unreachable: another
/// node may have it by now), makes the room leave this node.
pub(crate) async fn renew(node: &Arc<Node>) {
    release_unused(node).await;
    let leases: Vec<(RoomUuid, u64)> =
        node.state.lock().expect("not poisoned").owned.iter().map(|(r, o)| (r.clone(), o.revision)).collect();
    let value = Bytes::from(node.config.node_id.clone());
    for (room, revision) in leases {
        match node.owners.update(lease_key(&room), value.clone(), revision).await {
            Ok(new) => {
                if let Some(owned) = node.state.lock().expect("not poisoned").owned.get_mut(&room) {
                    owned.revision = new;
                    owned.renewed = Instant::now();
                }
            }
            Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                // An earlier renewal may have been stored though its answer timed out: the
                // lease is still this node's if it holds this node's id.
                match reclaim(node, &room).await {
                    Some(revision) => {
                        if let Some(owned) = node.state.lock().expect("not poisoned").owned.get_mut(&room) {
                            owned.revision = revision;
                            owned.renewed = Instant::now();
                        }
                    }
                    None => lose(node, &room, &e.to_string()).await,
                }
            }
            Err(e) => {
                let stale = node
                    .state
                    .lock()
                    .expect("not poisoned")
                    .owned
                    .get(&room)
                    .is_some_and(|o| o.renewed.elapsed() >= node.config.lease_ttl);
                if !stale {
                    tracing::warn!(room = %room, error = %e, "could not renew a room's lease; trying again");
                    continue;
                }
                lose(node, &room, &e.to_string()).await;
            }
        }
    }
}

/// After a renewal found another revision: the lease's revision if it still names this node
/// (an earlier renewal was stored, its answer lost), or if it expired and this node could
/// take it again at once (nobody else has the room meanwhile: its state here is current).
async fn reclaim(node: &Node, room: &RoomUuid) -> Option<u64> {
    let me = node.config.node_id.as_bytes();
    match node.owners.entry(lease_key(room)).await {
        Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
            (entry.value.as_ref() == me).then_some(entry.revision)
        }
        // Deleted: another node held the room and gave it up; this node's copy is stale.
        Ok(Some(_)) => None,
        // Expired, and nobody took it since: this node's copy is current.
        Ok(None) => node.owners.create(lease_key(room), Bytes::copy_from_slice(me)).await.ok(),
        Err(_) => None,
    }
}

/// The room's lease is another node's now: the room leaves this node without ending.
async fn lose(node: &Node, room: &RoomUuid, why: &str) {
    tracing::warn!(room = %room, error = why, "lost a room's lease: the room leaves this node");
    node.state.lock().expect("not poisoned").owned.remove(room);
    evict(node, room).await;
    // Every node's members of the room resume with its next owner.
    node.publish(room, Record::Moved.encode());
    super::follow::reset(node, room, "its node lost it");
}

/// Disconnects, from the rooms this node owns, the connections of the `dead` nodes.
pub(crate) async fn drop_dead(node: &Node, dead: &HashSet<u16>) {
    let dead: Vec<(ConnId, RoomUuid)> = {
        let mut state = node.state.lock().expect("not poisoned");
        let slots: Vec<u16> = state.remote.keys().copied().filter(|s| dead.contains(s)).collect();
        slots.into_iter().flat_map(|s| state.remote.remove(&s).unwrap_or_default()).collect()
    };
    if !dead.is_empty() {
        tracing::warn!(connections = dead.len(), "a node is gone: its connections leave this node's rooms");
    }
    for (conn, room) in dead {
        disconnect_local(node, &room, conn).await;
    }
}

impl Node {
    /// Publishes one output of a room this node owns on the room's stream; `room` is the room
    /// of the request an answer answers. Events are encoded once, here, for every node.
    pub(crate) fn dispatch(
        &self,
        output: Output,
        room: Option<RoomUuid>,
        store: &Arc<dyn MessageStore>,
        now: u64,
    ) {
        match output {
            Output::Reply { conn, request_id, result } => {
                let Some(room) = room else { return };
                let text = crate::shard::reply_text(request_id, result);
                self.publish(&room, Record::Reply { conn, text }.encode());
            }
            Output::Deliver { audience, event } => {
                let text = codec::encode_event(&event);
                let shed = match event.shedding() {
                    Shedding::Keep => ShedClass::Keep,
                    Shedding::Droppable => ShedClass::Droppable,
                    Shedding::Conflate => ShedClass::Conflate,
                };
                let message = event.is_chat_message();
                let record = match audience.roster() {
                    Some(roster) => {
                        Record::ToRoster { roster, except: audience.except(), shed, message, text }
                    }
                    None => Record::ToConns { conns: audience.iter().collect(), shed, message, text },
                };
                self.publish(event.room_uuid(), record.encode());
            }
            Output::History { conn, request_id, room_uuid, read } => {
                let store = Arc::clone(store);
                let node = self.me.clone();
                tokio::spawn(async move {
                    let result = crate::shard::read_history_apart(store, &room_uuid, read, now).await;
                    crate::shard::log_history_failure(&room_uuid, &result);
                    let text = crate::shard::reply_text(request_id, result);
                    if let Some(node) = node.upgrade() {
                        node.publish(&room_uuid, Record::Reply { conn, text }.encode());
                    }
                });
            }
            Output::Roster { room_uuid, roster, conn, present } => {
                self.publish(&room_uuid, Record::Roster { roster, conn, present }.encode());
            }
            Output::RoomEnded { room_uuid, reason } => {
                tracing::info!(room = %room_uuid, ?reason, "room ended");
                self.publish(&room_uuid, Record::Ended.encode());
                if let Some(node) = self.me.upgrade() {
                    tokio::spawn(async move { release(&node, &room_uuid).await });
                }
            }
        }
    }
}
