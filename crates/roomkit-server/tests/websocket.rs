//! The WebSocket transport as the server really serves it — the HTTP front of
//! [`roomkit_server::net`] upgrading `/v1` and feeding a [`QueueListener`] — against the
//! transport conformance suite, and its edge cases, over real loopback sockets.

use std::{net::SocketAddr, time::Duration};

use async_trait::async_trait;
use roomkit_core::transport::{Connection, Connector, Listener, TransportError};
use roomkit_protocol::Code;
use roomkit_transport_ws::{QueueListener, WsConfig, WsConnector};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

/// The server side of the client port: connections upgraded by [`roomkit_server::net::serve`].
/// Dropping it stops the HTTP front.
struct ClientPort {
    listener: QueueListener,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

#[async_trait]
impl Listener for ClientPort {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.listener.accept().await
    }

    fn local_addr(&self) -> String {
        self.listener.local_addr()
    }
}

/// Serves the client port on `127.0.0.1:0` as the binary does, with `config` and a request
/// head timeout of `header_timeout`; returns it and a connector to it.
async fn client_port(config: WsConfig, header_timeout: Duration) -> (ClientPort, WsConnector) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let url = format!("ws://{addr}{}", roomkit_transport_ws::PATH_V1);
    let (listener, sender) = QueueListener::new(url.clone(), config.accept_backlog);
    let (stop, stop_rx) = watch::channel(false);
    let router = roomkit_server::net::client_router(config.clone(), sender);
    tokio::spawn(roomkit_server::net::serve(tcp, router, header_timeout, stop_rx));
    (ClientPort { listener, addr, _stop: stop }, WsConnector::with_config(url, config))
}

async fn setup() -> (ClientPort, WsConnector) {
    client_port(WsConfig::default(), Duration::from_secs(10)).await
}

roomkit_core::transport_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    setup
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_a_violation() {
    let mut config = WsConfig::default();
    config.max_frame_bytes = 1024;
    let (mut port, connector) = client_port(config, Duration::from_secs(10)).await;
    let (server, client) = tokio::join!(port.accept(), connector.connect());
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.sink.send(&["x".repeat(2048).as_str().into()]).await.unwrap();
    match server.stream.recv().await {
        Err(TransportError::Violation(reason)) => assert_eq!(reason.code, Code::FRAME_TOO_LARGE),
        other => panic!("expected a FRAME_TOO_LARGE violation, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_path_is_refused_with_404() {
    let (port, _) = setup().await;
    let mut tcp = tokio::net::TcpStream::connect(port.addr).await.unwrap();
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
    let (mut port, connector) = client_port(WsConfig::default(), Duration::from_millis(300)).await;
    // Opens TCP and never sends a request head.
    let mut stalled = tokio::net::TcpStream::connect(port.addr).await.unwrap();
    // Others still get through meanwhile.
    let (server, client) = tokio::join!(port.accept(), connector.connect());
    assert!(server.is_ok() && client.is_ok());
    // The stalled socket is closed by the server once the timeout passes (hyper may say
    // why first, in a 408 response).
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest))
        .await
        .expect("the server must close a stalled handshake")
        .ok();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 408"), "{rest}");
}

/// The status line of a WebSocket upgrade of `/v1` on `addr`, with the `Host` and (if any)
/// `Origin` given.
async fn upgrade_status(addr: SocketAddr, host: &str, origin: Option<&str>) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let head = format!(
        "GET /v1 HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0; 512];
    let n = tcp.read(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    head.lines().next().unwrap_or_default().to_string()
}

/// With allowed origins set, a browser page from another origin is refused with 403 before
/// any WebSocket exists; listed origins, the server's own origin and clients sending no
/// `Origin` are let through. Without the setting every origin is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_from_origins_not_allowed_are_refused() {
    let mut config = WsConfig::default();
    config.allowed_origins = vec!["https://app.example".into()];
    let (port, _) = client_port(config, Duration::from_secs(10)).await;
    let own = port.addr.to_string();
    let cases = [
        (Some("https://evil.example"), "HTTP/1.1 403"),
        (Some("null"), "HTTP/1.1 403"),
        (Some("https://app.example"), "HTTP/1.1 101"),
        (Some("https://APP.example/"), "HTTP/1.1 101"),
        (Some(format!("http://{own}").as_str()), "HTTP/1.1 101"),
        (None, "HTTP/1.1 101"),
    ]
    .map(|(o, s)| (o.map(str::to_owned), s));
    for (origin, expected) in cases {
        let status = upgrade_status(port.addr, &own, origin.as_deref()).await;
        assert!(status.starts_with(expected), "{origin:?}: {status}");
    }
    let (open, _) = setup().await;
    let status = upgrade_status(open.addr, &open.addr.to_string(), Some("https://evil.example")).await;
    assert!(status.starts_with("HTTP/1.1 101"), "no list: every origin ({status})");
}
