//! Cluster chaos: three `roomkit-server` processes on NATS (one nats-server, then a
//! three-server NATS cluster with everything replicated three times), clients spread over
//! them sending with acknowledgements, and the node owning the room killed with SIGKILL (and,
//! on the NATS cluster, one NATS server too). Afterwards:
//!
//! - every acknowledged message is in history exactly once, under the number it was
//!   acknowledged with, and history has no gap;
//! - every member was told every message of the others once, in order (after resuming);
//! - the room's lease moved to a surviving node, and the takeover time is printed.
//!
//! Timing decides nothing: the kill comes after a number of acknowledgements, and every wait
//! is for a condition, bounded only to keep a broken build from hanging.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use common::chaos::{
    assert_history_holds, assert_told_everything_once, client, eventually, free_port, full_history, within,
    Client, ServerProcess,
};
use roomkit_client::ChatMessage;
use roomkit_store_nats::testing::{NatsCluster, NatsServer};

const ROOM: &str = "chaos-room";
const PER_SENDER: usize = 150;
/// The owner is killed once this many sends were acknowledged.
const KILL_AFTER_ACKS: usize = 60;
/// Three roomkit nodes on `nats` (comma-separated URLs), with leases of `lease_ttl_secs`
/// (short: a dead owner's room moves after about this long).
fn start_nodes(
    dir: &std::path::Path,
    nats: &str,
    replicas: usize,
    lease_ttl_secs: u64,
) -> Vec<ServerProcess> {
    (1..=3)
        .map(|i| {
            let args = [
                "--cluster".to_owned(),
                nats.to_owned(),
                "--node-id".to_owned(),
                format!("n{i}"),
                "--lease-ttl-secs".to_owned(),
                lease_ttl_secs.to_string(),
                "--forward-timeout-secs".to_owned(),
                "30".to_owned(),
                "--nats-replicas".to_owned(),
                replicas.to_string(),
            ];
            ServerProcess::start(dir, &format!("n{i}"), free_port(), free_port(), &args)
        })
        .collect()
}

/// Which node holds the room's lease (its node id), read from the lease bucket through any
/// live NATS server (a few tries: a replicated bucket may be electing a leader).
async fn lease_holder(nats: &str) -> Option<String> {
    let key: String = ROOM.bytes().map(|b| format!("{b:02x}")).collect();
    for _ in 0..20 {
        let urls: Vec<&str> = nats.split(',').collect();
        if let Ok(client) = async_nats::connect(urls).await {
            if let Ok(kv) = async_nats::jetstream::new(client).get_key_value("roomkit_owners").await {
                if let Ok(Some(value)) = kv.get(&key).await {
                    return Some(String::from_utf8_lossy(&value).into_owned());
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    None
}

/// A send that returned, and whether the kill had happened when it started and returned.
struct Acked {
    message: ChatMessage,
    started_after_kill: bool,
    returned_at: Instant,
}

/// The scenario; `kill_nats` runs after the owner is killed (for the NATS cluster: kill one
/// NATS server).
async fn chaos(nats: &str, replicas: usize, lease_ttl_secs: u64, kill_nats: impl FnOnce()) {
    let dir = common::TempDir::new();
    let mut nodes = start_nodes(dir.path(), nats, replicas, lease_ttl_secs);
    for node in &mut nodes {
        node.wait_ready().await;
    }
    let urls: Vec<String> = nodes.iter().map(ServerProcess::url).collect();
    let rotated = |k: usize| -> Vec<String> { (0..3).map(|i| urls[(i + k) % 3].clone()).collect() };
    // sender-a starts on n1 and creates the room there: n1 owns it.
    let clients = vec![
        client(rotated(0), "sender-a", ROOM, true).await,
        client(rotated(1), "sender-b", ROOM, false).await,
        client(rotated(2), "listener", ROOM, false).await,
    ];
    assert_eq!(lease_holder(nats).await.as_deref(), Some("n1"), "the creating node owns the room");
    let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();

    let killed = Arc::new(Mutex::new(None::<Instant>));
    let acks = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for sender in clients.iter().take(2).cloned() {
        let (killed, acks, failures) = (Arc::clone(&killed), Arc::clone(&acks), Arc::clone(&failures));
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..PER_SENDER {
                let text = format!("{} #{k}", sender.user);
                let started_after_kill = killed.lock().expect("not poisoned").is_some();
                match sender.chat.send_broadcast_text_message(&text).await {
                    Ok(message) => {
                        acks.fetch_add(1, Ordering::SeqCst);
                        acked.push(Acked { message, started_after_kill, returned_at: Instant::now() });
                    }
                    Err(e) => failures.lock().expect("not poisoned").push(format!("{text}: {e}")),
                }
            }
            acked
        }));
    }

    eventually("acknowledgements before the kill", || acks.load(Ordering::SeqCst) >= KILL_AFTER_ACKS).await;
    nodes[0].kill();
    let kill_time = Instant::now();
    *killed.lock().expect("not poisoned") = Some(kill_time);
    kill_nats();

    let mut acked: Vec<Acked> = Vec::new();
    for task in senders {
        acked.extend(within("a sender to finish", task).await.expect("the sender task"));
    }
    let failures = failures.lock().expect("not poisoned").clone();
    let takeover = acked.iter().filter(|a| a.started_after_kill).map(|a| a.returned_at - kill_time).min();

    let history = full_history(&clients[2].chat).await;
    let last = history.last().map_or(0, |m| m.seq);
    let caught_up = |c: &Client| {
        let own = acked.iter().filter(|a| a.message.from_user_uuid.as_str() == c.user).map(|a| a.message.seq);
        c.told.seqs().last().copied().into_iter().chain(own).max().unwrap_or(0)
    };
    let waited = tokio::time::timeout(common::chaos::LIMIT, async {
        while !clients.iter().all(|c| caught_up(c) >= last) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    if waited.await.is_err() {
        let at: Vec<(String, u64, Vec<bool>)> = clients
            .iter()
            .map(|c| (c.user.clone(), caught_up(c), c.told.resumed.lock().expect("not poisoned").clone()))
            .collect();
        let logs: String = nodes.iter().map(|n| n.log_text()).collect::<Vec<_>>().join("\n----\n");
        panic!("members did not catch up with seq {last}: {at:?}\n{logs}");
    }
    let holder = lease_holder(nats).await;
    println!(
        "cluster chaos ({} NATS replica(s)): {} sends acknowledged, {} failed, history of {} messages; \
         first acknowledgement after the kill {takeover:?} later; lease now on {holder:?}",
        replicas,
        acked.len(),
        failures.len(),
        history.len()
    );

    assert_history_holds(&history, acked.iter().map(|a| &a.message));
    if !failures.is_empty() {
        let logs: String = nodes.iter().map(|n| n.log_text()).collect::<Vec<_>>().join("\n----\n");
        panic!(
            "{} sends failed although the SDK retries across reconnects, first {:?}\n{logs}",
            failures.len(),
            &failures[..1]
        );
    }
    assert_eq!(acked.len(), 2 * PER_SENDER);
    assert_eq!(history.len(), 2 * PER_SENDER, "history is exactly the acknowledged messages");
    assert_told_everything_once(&clients, &history);
    assert!(matches!(holder.as_deref(), Some("n2" | "n3")), "the room moved off the dead node: {holder:?}");

    for c in &clients {
        within("closing a client", c.kit.close()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_node_loses_no_acknowledged_message() {
    let nats = NatsServer::start();
    chaos(&nats.url(), 1, 2, || {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_nats_cluster_killing_the_owner_and_a_nats_server_loses_nothing() {
    let mut nats = NatsCluster::start(3);
    let urls = nats.urls().join(",");
    // The lease bucket, the stream and the room records are replicated three times: one
    // NATS server may go. Writes to a replicated bucket are slower (a quorum, and a leader
    // election when its leader was on the dead server): longer leases.
    chaos(&urls, 3, 5, || nats.kill(2)).await;
}
