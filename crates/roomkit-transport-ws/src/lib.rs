//! roomkit's WebSocket transport: [`WsConnector`] for clients; for servers, [`ws_connection`]
//! wraps a stream the server's own HTTP front has upgraded, and a [`QueueListener`] hands it
//! to the server (`roomkit-server`'s `net` module does both, and that path is the one the
//! transport conformance suite runs against).
//!
//! Each roomkit frame is one WebSocket text message holding one JSON document. Clients
//! connect to the versioned path, `ws://host:port/v1`. A binary message is refused with
//! `UNSUPPORTED_FRAME` (the connection stays open); a message over the size limit closes the
//! connection with `FRAME_TOO_LARGE`.
//!
//! A close carries the roomkit code in the close frame's reason, as `"<code> <reason>"` (for
//! example `"5002 send queue full"`), under WebSocket close code 1000 (success), 1001 (server
//! shutting down), 1009 (frame too large), 1011 (internal error) or 4000 (any other code).
//!
//! The server frames its own WebSocket on each upgraded TCP socket ([`socket_connection`]):
//! a batch of frames built once for all their recipients is written with vectored I/O, and
//! an idle connection holds no buffers. Clients ([`WsConnector`]) and any upgraded stream
//! that is not a bare TCP socket go through the WebSocket library ([`ws_connection`]), with
//! a 4 KiB read buffer and a 16 KiB write buffer.

mod socket;
mod stream;

use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::transport::{Connection, Connector, Listener, TransportError};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use socket::{socket_connection, MAX_IOVECS};
pub use stream::{close_reason_from_frame, ws_connection};

/// Largest frame a [`WsConnector`] accepts from the server by default (16 MiB).
pub const CLIENT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The path of protocol version 1.
pub const PATH_V1: &str = "/v1";

/// Tunables of the WebSocket transport. Every limit is named and has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest message accepted, in bytes (default 64 KiB). A larger one closes the
    /// connection with `FRAME_TOO_LARGE`.
    pub max_frame_bytes: usize,
    /// Bytes read at a time (default 4 KiB). The server's sockets
    /// ([`socket_connection`]) read this much while a frame is incomplete and hold no
    /// buffer between frames; the library's streams (clients) keep a buffer this size.
    pub read_buffer_bytes: usize,
    /// The library's streams (clients) gather a batch's frames up to this many bytes per
    /// socket write (default 16 KiB). The server's sockets write a batch with vectored I/O
    /// straight from the frames and have no write buffer.
    pub write_buffer_bytes: usize,
    /// A [`WsConnector`] gives up on a handshake that has not completed in this time (the
    /// server's HTTP front has its own request-head timeout; the binary sets both alike).
    pub handshake_timeout: Duration,
    /// Upgraded connections waiting to be accepted by the server (a [`QueueListener`]'s
    /// backlog, as the binary builds it).
    pub accept_backlog: usize,
    /// The path the server's HTTP front upgrades to WebSocket (`/v1`).
    pub path: String,
    /// Origins (`scheme://host[:port]`) whose browser pages the server's HTTP front lets
    /// open a WebSocket; an upgrade naming any other `Origin` is refused with 403. Empty (the
    /// default): every origin. A page of the server's own origin (an `Origin` naming the host
    /// the request was sent to) and clients that send no `Origin` (no browser) are always let
    /// through.
    pub allowed_origins: Vec<String>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            read_buffer_bytes: 4 * 1024,
            write_buffer_bytes: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            accept_backlog: 1024,
            path: PATH_V1.into(),
            allowed_origins: Vec::new(),
        }
    }
}

impl WsConfig {
    /// The tungstenite configuration these limits translate to, for code that performs the
    /// HTTP upgrade itself (see [`ws_connection`] and [`QueueListener`]).
    pub fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_message_size(Some(self.max_frame_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }
}

/// A listener fed by code that accepts connections itself — for example an HTTP server
/// that serves pages and upgrades `/v1` to WebSocket on the same port. Push each
/// established connection with the [`QueueSender`].
pub struct QueueListener {
    addr: String,
    rx: mpsc::Receiver<Connection>,
}

/// Feeds a [`QueueListener`]. Cheap to clone.
#[derive(Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<Connection>,
}

impl QueueListener {
    /// A listener described as `addr` in logs, holding at most `backlog` waiting connections.
    pub fn new(addr: impl Into<String>, backlog: usize) -> (QueueListener, QueueSender) {
        let (tx, rx) = mpsc::channel(backlog.max(1));
        (QueueListener { addr: addr.into(), rx }, QueueSender { tx })
    }
}

impl QueueSender {
    /// Hands an established connection to the listener; waits while the backlog is full.
    pub async fn send(&self, connection: Connection) -> Result<(), TransportError> {
        self.tx.send(connection).await.map_err(|_| TransportError::Closed(None))
    }
}

#[async_trait]
impl Listener for QueueListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.rx.recv().await.ok_or(TransportError::Closed(None))
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

/// Opens WebSocket connections to one server URL, e.g. `ws://127.0.0.1:7700/v1`.
#[derive(Debug, Clone)]
pub struct WsConnector {
    url: String,
    config: WsConfig,
}

impl WsConnector {
    /// A connector to `url`. It accepts server frames up to [`CLIENT_MAX_FRAME_BYTES`]:
    /// the server is trusted, and some of its answers (a big room's member list) are large.
    pub fn new(url: impl Into<String>) -> Self {
        let config = WsConfig { max_frame_bytes: CLIENT_MAX_FRAME_BYTES, ..WsConfig::default() };
        Self::with_config(url, config)
    }

    /// A connector to `url` with explicit limits.
    pub fn with_config(url: impl Into<String>, config: WsConfig) -> Self {
        Self { url: url.into(), config }
    }
}

#[async_trait]
impl Connector for WsConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let connect = tokio_tungstenite::connect_async_with_config(
            self.url.as_str(),
            Some(self.config.websocket()),
            true,
        );
        let (ws, _) = tokio::time::timeout(self.config.handshake_timeout, connect)
            .await
            .map_err(|_| TransportError::Io(format!("connecting to {} timed out", self.url)))?
            .map_err(|e| TransportError::Io(format!("connecting to {}: {e}", self.url)))?;
        Ok(ws_connection(ws, self.url.clone()))
    }
}
