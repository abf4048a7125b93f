//! How nodes know each other alive: each renews its announcement in the node bucket with
//! its leases, lists the bucket, and acts on nodes that disappeared from it; and what a node
//! does when it may have missed records of the rooms it follows.

use std::{
    collections::{HashMap, HashSet},
    sync::Weak,
};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use roomkit_protocol::RoomUuid;

use super::{follow, own, Node};

/// When this node may have missed room stream records — it reconnected to NATS (the first
/// connection aside), or a subscription overflowed — every followed room is reset: its
/// clients here resume, and catch up from history what they may have missed.
pub(crate) async fn watch_connection(
    node: Weak<Node>,
    mut lost: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut first = true;
    while let Some(event) = lost.recv().await {
        if std::mem::take(&mut first) && event == async_nats::Event::Connected.to_string() {
            continue;
        }
        let Some(node) = node.upgrade() else { return };
        // Records this node published while it was away from NATS are lost to the other
        // nodes: their clients in the rooms it runs resume.
        let owned: Vec<RoomUuid> = node.state.lock().expect("not poisoned").owned.keys().cloned().collect();
        for room in &owned {
            node.publish(room, super::wire::Record::Moved.encode());
        }
        let rooms: Vec<RoomUuid> =
            node.state.lock().expect("not poisoned").followed.keys().cloned().collect();
        tracing::warn!(%event, rooms = rooms.len(), "room stream records may have been lost: the rooms' clients resume");
        for room in rooms {
            follow::reset(&node, &room, "this node may have missed some of its events");
        }
    }
}

/// Every third of the lease time: renews this node's announcement and leases, and looks for
/// nodes that are gone.
pub(crate) async fn upkeep(node: Weak<Node>) {
    let period = match node.upgrade() {
        Some(node) => node.config.lease_ttl / 3,
        None => return,
    };
    // When each known node was first found missing. Rooms followed here whose owner is
    // missing from two listings in a row are reset (a false alarm costs their clients a
    // resume); an owner disconnects a node's connections only once it has been missing for
    // two lease times (a false alarm would drop live members), since members of a really dead
    // node resume elsewhere anyway and take their places back.
    let mut missing_since: HashMap<u16, std::time::Instant> = HashMap::new();
    let mut known: HashSet<u16> = HashSet::new();
    let mut reset_for: HashSet<u16> = HashSet::new();
    loop {
        tokio::time::sleep(period).await;
        let Some(node) = node.upgrade() else { return };
        announce(&node).await;
        own::renew(&node).await;
        let live = match list_nodes(&node).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the cluster's nodes");
                continue;
            }
        };
        known.extend(live.iter().copied());
        let now = std::time::Instant::now();
        missing_since.retain(|slot, _| !live.contains(slot));
        reset_for.retain(|slot| !live.contains(slot));
        let mut gone_owners = HashSet::new();
        let mut dead = HashSet::new();
        for slot in known.iter().filter(|s| !live.contains(s)) {
            match missing_since.get(slot) {
                None => {
                    missing_since.insert(*slot, now);
                }
                Some(since) => {
                    if reset_for.insert(*slot) {
                        gone_owners.insert(*slot);
                    }
                    if now - *since >= node.config.lease_ttl * 2 {
                        dead.insert(*slot);
                    }
                }
            }
        }
        if !gone_owners.is_empty() {
            tracing::warn!(slots = ?gone_owners, "nodes of the cluster are gone: rooms they ran move");
            follow::drop_dead(&node, &gone_owners);
        }
        if !dead.is_empty() {
            tracing::warn!(slots = ?dead, "nodes of the cluster are gone for good: their clients leave");
            own::drop_dead(&node, &dead).await;
            known.retain(|slot| !dead.contains(slot));
            for slot in &dead {
                missing_since.remove(slot);
                reset_for.remove(slot);
            }
        }
    }
}

/// Renews this node's announcement. Found expired or replaced, this node was taken for dead
/// by the others, which disconnected its clients from their rooms: every room it follows is
/// reset (its clients here resume) before it announces itself again.
async fn announce(node: &Node) {
    let key = format!("n{}", node.slot);
    let value = Bytes::from(node.config.node_id.clone());
    let holds = match node.nodes.entry(&key).await {
        Ok(Some(entry)) => entry.operation == kv::Operation::Put && entry.value == value,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not read this node's announcement");
            return;
        }
    };
    if !holds {
        let rooms: Vec<RoomUuid> =
            node.state.lock().expect("not poisoned").followed.keys().cloned().collect();
        tracing::warn!(rooms = rooms.len(), "this node's announcement expired: the others took it for dead");
        for room in rooms {
            follow::reset(node, &room, "this node was taken for dead");
        }
    }
    if let Err(e) = node.nodes.put(&key, value).await {
        tracing::warn!(error = %e, "could not renew this node's announcement");
    }
}

/// The slots of every announced node; an error if the listing did not complete.
async fn list_nodes(node: &Node) -> Result<HashSet<u16>, String> {
    let mut keys = node.nodes.keys().await.map_err(|e| e.to_string())?;
    let mut live = HashSet::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Some(slot) = key.strip_prefix('n').and_then(|s| s.parse::<u16>().ok()) {
            live.insert(slot);
        }
    }
    Ok(live)
}
