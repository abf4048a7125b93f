//! Several servers, tried in turn: the order in which a client tries the nodes of a cluster
//! when it connects and when its connection drops, over in-memory servers whose connectors
//! log every attempt and refuse on demand.
//!
//! (Failing over between real servers on loopback sockets is in the end-to-end suite,
//! `tests/e2e/failover.rs`.)

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use roomkit_client::{ConnectionState, ErrorCode, FailoverConnector, RoomKit};
use roomkit_core::transport::{Connection, Connector, TransportError};
use roomkit_protocol::RoomUuid;
use roomkit_server::{DevAuthenticator, Server, ServerHandle};
use roomkit_transport_memory::MemoryConnector;
use support::*;

/// One node: an in-memory server, and a connector to it that logs each attempt by the
/// node's name in a log shared by all nodes, and refuses while the node is marked down.
struct Node {
    name: &'static str,
    server: ServerHandle,
    connector: MemoryConnector,
    down: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Logged {
    name: &'static str,
    inner: MemoryConnector,
    down: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

#[async_trait]
impl Connector for Logged {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.log.lock().expect("not poisoned").push(self.name);
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::Io(format!("{} refuses connections", self.name)));
        }
        self.inner.connect().await
    }
}

fn node(name: &'static str) -> Node {
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(server_config(30_000), Arc::new(DevAuthenticator)).spawn(listener);
    Node { name, server, connector, down: Arc::default() }
}

/// The nodes as one failover list, in order, and the log of connection attempts.
fn cluster(nodes: &[Node]) -> (FailoverConnector, Arc<Mutex<Vec<&'static str>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let list = nodes.iter().fold(FailoverConnector::new(), |list, n| {
        let logged = Logged {
            name: n.name,
            inner: n.connector.clone(),
            down: Arc::clone(&n.down),
            log: Arc::clone(&log),
        };
        list.with(n.name, Arc::new(logged) as Arc<dyn Connector>)
    });
    (list, log)
}

async fn has_room(server: &ServerHandle, room: &str) -> bool {
    let uuid = RoomUuid::new(room).expect("a valid room uuid");
    let probe = uuid.clone();
    server.with_room(&uuid, move |rooms, _| rooms.room_info(&probe).is_some()).await.expect("shard alive")
}

fn attempts(log: &Mutex<Vec<&'static str>>) -> Vec<&'static str> {
    log.lock().expect("not poisoned").clone()
}

/// Drops the client's connection to `node` and waits until it is connected again.
async fn drop_and_reconnect(kit: &RoomKit, node: &Node) {
    let mut states = kit.connection_events();
    assert_eq!(node.connector.sever_all(), 1, "one connection to {}", node.name);
    match next_state(&mut states).await {
        ConnectionState::Reconnecting { .. } => {}
        other => panic!("expected to reconnect, got {other:?}"),
    }
    until_connected(&mut states).await;
    assert_eq!(kit.connection_state(), ConnectionState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_drop_the_next_node_is_tried_first_and_the_one_that_dropped_last() {
    let nodes = [node("a"), node("b"), node("c")];
    let (list, log) = cluster(&nodes);
    let kit = login(list, client_config(Duration::from_millis(10)), "alice").await;
    assert_eq!((kit.server_index(), kit.server_url().as_str()), (0, "a"));
    assert_eq!(attempts(&log), ["a"]);

    // a drops the client: b, the next, is tried first, and accepts.
    drop_and_reconnect(&kit, &nodes[0]).await;
    assert_eq!((kit.server_index(), kit.server_url().as_str()), (1, "b"));
    assert_eq!(attempts(&log), ["a", "b"]);

    // c is down, and b drops the client: c refuses, then a accepts.
    nodes[2].down.store(true, Ordering::SeqCst);
    drop_and_reconnect(&kit, &nodes[1]).await;
    assert_eq!(kit.server_url(), "a");
    assert_eq!(attempts(&log), ["a", "b", "c", "a"]);

    // b and c are down, and a drops the client: a is tried only after both, within the
    // same attempt (the state says attempt 1 throughout).
    nodes[1].down.store(true, Ordering::SeqCst);
    let mut states = kit.connection_events();
    drop_and_reconnect(&kit, &nodes[0]).await;
    assert_eq!(kit.server_url(), "a");
    assert_eq!(attempts(&log), ["a", "b", "c", "a", "b", "c", "a"]);
    assert_eq!(next_state(&mut states).await, ConnectionState::Reconnecting { attempt: 1 });
    assert_eq!(next_state(&mut states).await, ConnectionState::Connected);

    // The session works on the node it ended on.
    create_room(&kit, "after-failover").await;
    for (n, has) in nodes.iter().zip([true, false, false]) {
        assert_eq!(has_room(&n.server, "after-failover").await, has, "node {}", n.name);
    }
    kit.close().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_refuses_each_round_is_one_attempt_with_the_backoff_between() {
    let nodes = [node("a"), node("b")];
    let (list, log) = cluster(&nodes);
    let kit = login(list, client_config(Duration::from_millis(10)), "alice").await;
    let mut states = kit.connection_events();
    nodes[0].down.store(true, Ordering::SeqCst);
    nodes[1].down.store(true, Ordering::SeqCst);
    assert_eq!(nodes[0].connector.sever_all(), 1);
    assert_eq!(next_state(&mut states).await, ConnectionState::Reconnecting { attempt: 1 });
    assert_eq!(next_state(&mut states).await, ConnectionState::Reconnecting { attempt: 2 });
    assert_eq!(next_state(&mut states).await, ConnectionState::Reconnecting { attempt: 3 });
    // Rounds 1 and 2 tried b then a, each once.
    assert_eq!(attempts(&log)[..5], ["a", "b", "a", "b", "a"]);
    nodes[1].down.store(false, Ordering::SeqCst);
    until_connected(&mut states).await;
    assert_eq!(kit.server_url(), "b");
    kit.close().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

#[tokio::test]
async fn a_first_connect_skips_a_node_that_is_down() {
    let nodes = [node("a"), node("b")];
    nodes[0].down.store(true, Ordering::SeqCst);
    let (list, log) = cluster(&nodes);
    let kit = login(list, client_config(Duration::from_millis(10)), "alice").await;
    assert_eq!((kit.server_index(), kit.server_url().as_str()), (1, "b"));
    assert_eq!(attempts(&log), ["a", "b"]);
    kit.close().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

#[tokio::test]
async fn when_no_node_accepts_the_first_connect_fails_naming_the_last_failure() {
    let nodes = [node("a"), node("b")];
    nodes[0].down.store(true, Ordering::SeqCst);
    nodes[1].down.store(true, Ordering::SeqCst);
    let (list, log) = cluster(&nodes);
    let e = RoomKit::connect(list).await.expect_err("nobody accepts");
    assert_eq!(e.code(), ErrorCode::CONNECTION_CLOSED);
    assert!(e.msg().contains("none of the 2 servers") && e.msg().contains("b refuses"), "{e}");
    assert_eq!(attempts(&log), ["a", "b"]);
    for n in nodes {
        n.server.shutdown().await;
    }
}

#[tokio::test]
async fn an_empty_list_of_servers_is_an_error() {
    let empty: [Result<RoomKit, _>; 4] = [
        RoomKit::connect(Vec::<String>::new()).await,
        RoomKit::connect(&[] as &[&str]).await,
        RoomKit::connect([""; 0]).await,
        RoomKit::connect(FailoverConnector::new()).await,
    ];
    for result in empty {
        let e = result.expect_err("no server to connect to");
        assert_eq!(e.code(), ErrorCode::BAD_REQUEST);
        assert!(e.msg().contains("no server to connect to"), "{e}");
    }
}

#[tokio::test]
async fn one_connector_is_named_by_its_peer() {
    let n = node("solo");
    let kit = RoomKit::connect(n.connector.clone()).await.expect("connect");
    assert_eq!((kit.server_index(), kit.server_url().as_str()), (0, "memory-server"));
    kit.close().await;
    n.server.shutdown().await;
}
