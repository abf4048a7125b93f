//! The WebSocket transport against the transport conformance suite, and its own edge cases,
//! over real loopback sockets.

use roomkit_core::transport::{Connector, Listener, TransportError};
use roomkit_protocol::Code;
use roomkit_transport_ws::{WsConfig, WsConnector, WsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn listener(config: WsConfig) -> (WsListener, WsConnector) {
    let listener = WsListener::bind("127.0.0.1:0", config.clone()).await.unwrap();
    let connector = WsConnector::with_config(listener.url(), config);
    (listener, connector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let (listener, connector) = listener(WsConfig::default()).await;
    roomkit_core::conformance::run(listener, connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_a_violation() {
    let mut config = WsConfig::default();
    config.max_frame_bytes = 1024;
    let (mut listener, connector) = listener(config).await;
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.sink.send(&[bytes::Bytes::from("x".repeat(2048))]).await.unwrap();
    match server.stream.recv().await {
        Err(TransportError::Violation(reason)) => assert_eq!(reason.code, Code::FRAME_TOO_LARGE),
        other => panic!("expected a FRAME_TOO_LARGE violation, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_path_is_refused_with_404() {
    let (listener, _) = listener(WsConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(listener.local_addr()).await.unwrap();
    tcp.write_all(
        b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = vec![0; 512];
    let n = tcp.read(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_times_out_and_blocks_nobody() {
    let mut config = WsConfig::default();
    config.handshake_timeout = std::time::Duration::from_millis(300);
    let (mut listener, connector) = listener(config).await;
    // Opens TCP and never sends a handshake.
    let mut stalled = tokio::net::TcpStream::connect(listener.local_addr()).await.unwrap();
    // Others still get through meanwhile.
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    assert!(server.is_ok() && client.is_ok());
    // The stalled socket is closed by the server once the timeout passes.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("the server must close a stalled handshake")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
}
