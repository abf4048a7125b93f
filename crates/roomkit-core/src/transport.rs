//! How a driver talks to the network: whole frames in, whole frames out.
//!
//! A transport hands the server a [`Connection`] per accepted client (through a
//! [`Listener`]) and hands a client a [`Connection`] to the server (through a
//! [`Connector`]). A connection is split into a [`FrameSink`] and a [`FrameStream`] so that
//! reading and writing run in separate tasks. The traits are object-safe; drivers hold them
//! boxed.
//!
//! Every transport runs the same conformance suite (`conformance` feature).

use std::{
    fmt,
    task::{Context, Poll},
};

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

/// One outgoing frame, encoded once for all its recipients: a JSON text with the header of an
/// unmasked WebSocket text frame already in front of it, or a keep-alive ping
/// ([`Frame::ping`]).
///
/// A server's WebSocket frames are the same bytes for every recipient, so the frame is built
/// once where its event is encoded, and every recipient's queue holds the same
/// reference-counted buffer: a WebSocket connection writes [`wire`](Self::wire) as it is,
/// with vectored I/O; other transports (and clients, whose frames are masked) take the
/// [`payload`](Self::payload), a slice of the same buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    /// Where the payload starts in `wire` (the header's length: 2, 4 or 10).
    payload_at: u8,
}

/// The longest header of a text frame: two bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// The header of an unmasked text frame of `len` bytes, and its length.
fn text_header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0u8; MAX_HEADER];
    header[0] = 0x81; // FIN, text
    let n = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, n)
}

impl Frame {
    /// The frame carrying `payload` (copied once, behind its header).
    pub fn text(payload: &[u8]) -> Frame {
        Frame::write_text(payload.len(), |out| out.extend_from_slice(payload))
    }

    /// The frame whose payload `write` appends to the buffer it is handed (room for about
    /// `size_hint` bytes; `write` must only append): the payload is written once, behind room
    /// kept for its header, where [`text`](Self::text) copies one written elsewhere. The few
    /// bytes of that room a short header leaves are not sent. A buffer left more than half
    /// again as large as its frame is shrunk to it (a copy): queues bound their frames by
    /// length, and a frame's memory stays within one and a half times that.
    pub fn write_text(size_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Frame {
        let mut wire = Vec::with_capacity(MAX_HEADER + size_hint);
        wire.resize(MAX_HEADER, 0);
        write(&mut wire);
        debug_assert!(wire.len() >= MAX_HEADER, "`write` only appends");
        if wire.capacity() - wire.len() > wire.len() / 2 {
            wire.shrink_to_fit();
        }
        let (header, n) = text_header(wire.len() - MAX_HEADER);
        let at = MAX_HEADER - n;
        wire[at..MAX_HEADER].copy_from_slice(&header[..n]);
        let mut wire = Bytes::from(wire);
        bytes::Buf::advance(&mut wire, at);
        Frame { wire, payload_at: n as u8 }
    }

    /// A keep-alive ping: a WebSocket ping frame with no payload. A transport sends it as its
    /// own kind of ping (or answers it itself, if the peer cannot be silent without the
    /// transport knowing), never as a message; the peer's answer shows up on this side's
    /// [`FrameStream::recv_or_alive`].
    pub fn ping() -> Frame {
        Frame { wire: Bytes::from_static(&[0x89, 0x00]), payload_at: 2 }
    }

    /// Whether this is a keep-alive ping ([`Frame::ping`]).
    pub fn is_ping(&self) -> bool {
        self.wire.first() == Some(&0x89)
    }

    /// The whole WebSocket frame: header and payload.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The payload (the JSON text), without copying.
    pub fn payload(&self) -> Bytes {
        self.wire.slice(usize::from(self.payload_at)..)
    }

    /// The payload, taking the frame (no reference-count change).
    pub fn into_payload(self) -> Bytes {
        let mut wire = self.wire;
        bytes::Buf::advance(&mut wire, usize::from(self.payload_at));
        wire
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.wire.len() - usize::from(self.payload_at)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Frame {
    fn from(payload: Bytes) -> Frame {
        Frame::text(&payload)
    }
}

impl From<&str> for Frame {
    fn from(payload: &str) -> Frame {
        Frame::text(payload.as_bytes())
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ping() {
            return f.write_str("Frame(ping)");
        }
        f.debug_tuple("Frame")
            .field(&String::from_utf8_lossy(&self.wire[usize::from(self.payload_at)..]))
            .finish()
    }
}

/// The sending half of a connection.
#[async_trait]
pub trait FrameSink: Send {
    /// Sends `frames` in order, flushing once after the last: a batch is one write where
    /// the transport allows it. Whatever [`try_send`](Self::try_send) took in part goes
    /// first, so even an empty batch may write, and fail once the connection is closed.
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError>;

    /// Like [`send`](Self::send), taking the frames: `frames` is left empty (its buffer
    /// kept). A transport that keeps frames after sending them (a queue) moves them rather
    /// than cloning each, which spares two reference-count changes per frame. After an error,
    /// or if the call is dropped before it finishes, some of the frames may have been sent
    /// whether or not they are still in `frames`: the caller discards them (a connection that
    /// failed a write is closed). The default sends them with `send`, then empties `frames`.
    async fn send_all(&mut self, frames: &mut Vec<Frame>) -> Result<(), TransportError> {
        let sent = self.send(frames).await;
        frames.clear();
        sent
    }

    /// Tells the peer why the connection ends, then closes it. Idempotent.
    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError>;

    /// Sends what of `frames`, from the first, the transport takes at once, without waiting,
    /// taking those frames out of `frames` (as [`send_all`](Self::send_all) does): a writer
    /// whose connection has room (nearly always) writes its batch in place, with no future to
    /// build and poll, and sends what is left with [`send_all`](Self::send_all). See
    /// [`Taken`]. The default takes nothing.
    fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
        let _ = frames;
        Taken::default()
    }

    /// Whether [`try_send`](Self::try_send) writes (it takes frames whenever the connection
    /// has room): a driver may then hand an idle connection's sink to a task that writes
    /// many connections in place, rather than wake a task per connection. The default: no.
    fn writes_in_place(&self) -> bool {
        false
    }
}

/// What a [`FrameSink::try_send`] did: it took the first `frames` (maybe none: a write is
/// under way, the connection would wait, or it failed; the caller sends the rest with
/// [`FrameSink::send`], which meets the failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// How many of the frames, from the first, the transport took.
    pub frames: usize,
    /// The last frame taken went out in part: the transport keeps the rest of it, and the
    /// next [`FrameSink::send`] (which the caller must make, with no frames if none are
    /// left) writes it before anything else.
    pub cut: bool,
}

/// The receiving half of a connection.
#[async_trait]
pub trait FrameStream: Send {
    /// The next whole frame. `Err(Closed)` once the connection has ended; every later call
    /// returns `Err(Closed)` too.
    async fn recv(&mut self) -> Result<Bytes, TransportError>;

    /// Like [`recv`](Self::recv) (it waits for the first frame the same way), but also takes
    /// the frames already there behind it, up to `max` in all (at least one, whatever `max`),
    /// appending them to `into`; returns how many. A reader that keeps up with bursts takes each whole, at one call
    /// per burst rather than per frame. The default takes one.
    async fn recv_many(&mut self, into: &mut Vec<Bytes>, max: usize) -> Result<usize, TransportError> {
        let _ = max;
        into.push(self.recv().await?);
        Ok(1)
    }

    /// Like [`recv`](Self::recv), but also returns `Ok(None)` when the peer showed it is alive
    /// without sending a frame: it answered a keep-alive ping ([`Frame::ping`]), or pinged.
    /// A driver that closes silent connections counts both as signs of life. The default,
    /// for a transport without pings, never returns `None`.
    async fn recv_or_alive(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.recv().await.map(Some)
    }

    /// Ready when a receive may have something to return at once: bytes arrived, the
    /// stream ended, or the transport cannot tell. A driver that keeps many connections
    /// waiting between frames waits here first, holding no receive future (each receive is
    /// a boxed future while it lasts), then receives. A receive after `Ready` may still
    /// wait (the bytes may be an incomplete frame, or readiness may be stale). Registers
    /// `cx`'s waker when `Pending`, like any poll method. The default is always ready: the
    /// driver then waits in the receive itself.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_has_the_websocket_header_for_its_length_and_a_payload_without_it() {
        for (len, header) in [(0, vec![0x81, 0]), (125, vec![0x81, 125]), (126, vec![0x81, 126, 0, 126])] {
            let payload = "x".repeat(len);
            let frame = Frame::text(payload.as_bytes());
            assert_eq!(&frame.wire()[..header.len()], &header[..], "{len}");
            assert_eq!(frame.payload(), payload.as_bytes());
            assert_eq!(frame.len(), len);
        }
        let big = vec![b'y'; 70_000];
        let frame = Frame::text(&big);
        assert_eq!(&frame.wire()[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(frame.payload().len(), 70_000);
        assert!(!frame.is_ping());
    }

    #[test]
    fn a_frame_written_in_place_is_the_same_bytes_as_one_copied_whatever_its_header() {
        for len in [0, 1, 125, 126, 511, 512, 513, 65_535, 65_536, 70_000] {
            let payload = vec![b'z'; len];
            // A hint below, at and above the payload's size: the buffer grows where it must.
            for hint in [0, len, len + 100] {
                let written = Frame::write_text(hint, |out| out.extend_from_slice(&payload));
                let copied = Frame::text(&payload);
                assert_eq!(written.wire(), copied.wire(), "{len} bytes, hint {hint}");
                let mut wire = match len {
                    0..=125 => vec![0x81, len as u8],
                    126..=65_535 => vec![0x81, 126, (len >> 8) as u8, len as u8],
                    _ => [vec![0x81, 127], (len as u64).to_be_bytes().to_vec()].concat(),
                };
                wire.extend_from_slice(&payload);
                assert_eq!(written.wire()[..], wire[..], "{len} bytes, hint {hint}");
                assert_eq!(written.payload(), payload, "{len} bytes, hint {hint}");
                assert_eq!(written.into_payload(), payload, "{len} bytes, hint {hint}");
            }
        }
    }

    #[test]
    fn a_ping_is_a_websocket_ping_frame_with_no_payload() {
        let ping = Frame::ping();
        assert!(ping.is_ping());
        assert_eq!(&ping.wire()[..], &[0x89, 0x00]);
        assert!(ping.is_empty());
        assert!(!Frame::text(b"").is_ping());
        assert_eq!(format!("{ping:?}"), "Frame(ping)");
    }
}
