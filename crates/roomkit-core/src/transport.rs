//! How a driver talks to the network: whole frames in, whole frames out.
//!
//! A transport hands the server a [`Connection`] per accepted client (through a
//! [`Listener`]) and hands a client a [`Connection`] to the server (through a
//! [`Connector`]). A connection is split into a [`FrameSink`] and a [`FrameStream`] so that
//! reading and writing run in separate tasks. The traits are object-safe; drivers hold them
//! boxed.
//!
//! Every transport runs the same conformance suite (`conformance` feature).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use roomkit_protocol::Code;

/// Why a connection was closed, as told to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// A code from the protocol's table.
    pub code: Code,
    /// A short human-readable reason.
    pub reason: String,
}

impl CloseReason {
    /// A close reason with `code` and `reason`.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection is closed; the peer's reason, when it gave one.
    #[error("connection closed{}", .0.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed(Option<CloseReason>),
    /// The peer sent something the transport refuses (a binary frame); the connection stays
    /// usable and the driver answers with the reason's code.
    #[error("frame rejected: {0}")]
    Rejected(CloseReason),
    /// The peer broke the protocol in a way the connection cannot recover from (a frame over
    /// the size limit); the driver closes the connection with this reason.
    #[error("protocol violation: {0}")]
    Violation(CloseReason),
    /// Connecting or listening failed.
    #[error("transport I/O error: {0}")]
    Io(String),
}

/// The sending half of a connection.
#[async_trait]
pub trait FrameSink: Send {
    /// Sends `frames` in order, flushing once after the last: a batch is one write where
    /// the transport allows it.
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError>;

    /// Tells the peer why the connection ends, then closes it. Idempotent.
    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError>;
}

/// The receiving half of a connection.
#[async_trait]
pub trait FrameStream: Send {
    /// The next whole frame. `Err(Closed)` once the connection has ended; every later call
    /// returns `Err(Closed)` too.
    async fn recv(&mut self) -> Result<Bytes, TransportError>;
}

/// One established connection.
pub struct Connection {
    /// Frames to the peer.
    pub sink: Box<dyn FrameSink>,
    /// Frames from the peer.
    pub stream: Box<dyn FrameStream>,
    /// A description of the peer for logs (an address, or an in-memory id).
    pub peer: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// The server side: accepts connections.
#[async_trait]
pub trait Listener: Send {
    /// Waits for the next client. `Err(Closed)` when the listener is shut down for good;
    /// other errors concern one failed accept and the listener stays usable.
    async fn accept(&mut self) -> Result<Connection, TransportError>;

    /// Where clients reach this listener, for logs.
    fn local_addr(&self) -> String;
}

/// The client side: opens connections to one server.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Opens a new connection.
    async fn connect(&self) -> Result<Connection, TransportError>;
}
