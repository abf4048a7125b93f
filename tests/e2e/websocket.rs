//! The behaviour suite over real loopback sockets: [`roomkit_tests::WsHarness`] serves the
//! same HTTP/WebSocket front as the `roomkit-server` binary, and SDK clients connect with
//! [`roomkit_transport_ws::WsConnector`].

use roomkit_server::ServerConfig;
use roomkit_tests::{http, within, Harness, WsHarness};

roomkit_tests::behaviour_suite!(behaviour, roomkit_tests::WsHarness);

/// Stopping the harness stops the HTTP accept loop too: the port refuses connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_harness_closes_the_client_port() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let addr = h.addr();
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    let kit = h.client("alice").await;
    h.stop().await;
    let refused = within("a connection attempt", tokio::net::TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "the client port still accepts connections after stop");
    drop(kit);
}
