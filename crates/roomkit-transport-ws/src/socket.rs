//! The server's side of a WebSocket on an upgraded TCP socket, framed here rather than by a
//! WebSocket library ([`socket_connection`]).
//!
//! **Writing.** A batch of frames built once for all their recipients ([`Frame::wire`]: the
//! header is already in front) goes to the socket with vectored writes, up to
//! [`MAX_IOVECS`] frames per `writev`, straight from the shared buffers: no copy into a
//! per-connection buffer, and no write buffer that stays at the size of the largest frame
//! ever sent. One frame (each delivery at light load) is a plain `send`, with no vector for
//! the kernel to copy in. A writer first offers its batch to [`FrameSink::try_send`], writes
//! that never wait: a socket with room takes the batch in place, and what it does not take
//! goes through [`FrameSink::send`].
//!
//! **Reading.** Bytes are read into a buffer only while a frame is incomplete; once a frame
//! is whole the buffer is handed on with it, so an idle connection holds no read buffer at
//! all. Client frames must be masked (RFC 6455 §5.1) and use no extension bits; a text
//! message may come in fragments (up to the size limit in all); pings are answered with
//! pongs, a close with a close. The roomkit rules on top are those of the rest of this
//! crate: a binary message is refused with `UNSUPPORTED_FRAME` (the connection stays), a
//! message over the limit is `FRAME_TOO_LARGE`, text that is not UTF-8 `MALFORMED_FRAME`.
//!
//! **Keep-alive.** A [`Frame::ping`] goes out like any frame (its wire form is a ping frame);
//! the client's pong, and any ping of its own, is reported by
//! [`FrameStream::recv_or_alive`] as a sign of life (`None`) and passed over by `recv`.
//!
//! The reading and the writing halves share the socket (in the server, one connection task
//! polls both); the write lock keeps a pong or a close from landing inside a frame the writer
//! is part-way through, and lets it go first, between two whole frames (see [`Writing`]).

use std::{
    io::{self, IoSlice},
    net::Shutdown,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Poll, Waker},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use roomkit_core::transport::{CloseReason, Connection, Frame, FrameSink, Taken, TransportError};
use tokio::{io::Interest, net::TcpStream};

use crate::{
    stream::{close_code, close_text},
    WsConfig,
};

/// The flags of every write: a peer gone is an error, not a `SIGPIPE` (Windows has no such
/// signal).
#[cfg(unix)]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(unix))]
const SEND_FLAGS: i32 = 0;

/// Most frames given to one `writev` (Linux's `IOV_MAX` is 1024; more buys nothing).
pub const MAX_IOVECS: usize = 64;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A server connection on `tcp`, whose WebSocket handshake is done; `read_ahead` holds what
/// the HTTP front read past the handshake (a client may send its first frame at once).
/// Messages over `config.max_frame_bytes` close the connection; reads ask for
/// `config.read_buffer_bytes` at a time.
pub fn socket_connection(tcp: TcpStream, read_ahead: Bytes, config: &WsConfig, peer: String) -> Connection {
    let socket = Arc::new(Socket::new(tcp));
    Connection {
        sink: Box::new(SocketSink { socket: Arc::clone(&socket) }),
        stream: Box::new(SocketStream {
            socket,
            buf: BytesMut::from(&read_ahead[..]),
            message: None,
            max_message_bytes: config.max_frame_bytes,
            read_chunk: config.read_buffer_bytes.max(64),
            closed: None,
            discard: false,
        }),
        peer,
    }
}

struct Socket {
    tcp: TcpStream,
    writing: Mutex<Writing>,
}

/// The writing direction of a socket, under its lock, so that frames never interleave.
///
/// A write that does not wait ([`FrameSink::try_send`], once per delivery to an idle member)
/// writes under the lock itself: one uncontended lock and unlock. A write that waits for
/// room ([`Socket::write_parts`]) cannot keep a lock over its waits: it holds the direction
/// instead ([`Socket::hold`]), and others wait for it to be let go. A control frame (a pong,
/// a close) waiting for the direction goes before any data written after it: data waits
/// while one does, so a writer with a backlog, sending batch after batch, cannot keep a
/// pong or the answer to a close waiting. (tokio's async lock costs a semaphore and its
/// waiter list's lock at every release, a per cent of a server's CPU at light load, and an
/// async lock of the `futures` crate 16 bytes more per member.)
#[derive(Default)]
struct Writing {
    /// A waiting write holds the direction.
    held: bool,
    /// A close frame went out: nothing may follow it.
    close_sent: bool,
    /// Control frames waiting for the direction (see [`ControlWaits`]).
    controls: u32,
    /// The frame a cancelled or non-waiting write left part-way, and how much of it went
    /// out; whoever writes next finishes it first, so the stream stays whole whatever future
    /// is dropped. (Boxed: an idle socket keeps a pointer, not room for a frame it rarely
    /// has.) While the direction is held, its holder has it ([`Held`]).
    cut: Option<Box<(Bytes, usize)>>,
    /// The tasks waiting for the direction, woken all when it is let go (a pong or a close
    /// beside the connection's writer: rarely more than one).
    waiters: Vec<Waker>,
}

/// The writing direction held by a waiting write, and the frame it is part-way through;
/// let go when dropped, finished or cancelled, the cut frame left for the next writer.
struct Held<'a> {
    socket: &'a Socket,
    cut: Option<Box<(Bytes, usize)>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut writing = self.socket.writing();
            writing.held = false;
            writing.cut = self.cut.take();
            std::mem::take(&mut writing.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// A control frame's place among [`Writing::controls`] while it waits for the direction:
/// given up when it gets the direction, or when its write is cancelled (then data that
/// waited for it is woken, if no other control frame waits).
struct ControlWaits<'a> {
    socket: &'a Socket,
    counted: bool,
}

impl Drop for ControlWaits<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let waiters = {
            let mut writing = self.socket.writing();
            writing.controls -= 1;
            match writing.controls {
                0 => std::mem::take(&mut writing.waiters),
                _ => Vec::new(),
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        Self { tcp, writing: Mutex::new(Writing::default()) }
    }

    /// The writing direction's state. (Not `expect`: a transport that panicked mid-write is
    /// written off by its connection, which still closes it.)
    fn writing(&self) -> MutexGuard<'_, Writing> {
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the writing direction once nobody else does, and, for data (not `control`),
    /// once no control frame waits for it either.
    async fn hold(&self, control: bool) -> Held<'_> {
        let mut place = ControlWaits { socket: self, counted: false };
        std::future::poll_fn(|cx| {
            let mut writing = self.writing();
            if writing.held || (!control && writing.controls > 0) {
                if control && !place.counted {
                    writing.controls += 1;
                    place.counted = true;
                }
                if !writing.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    writing.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if std::mem::take(&mut place.counted) {
                writing.controls -= 1;
            }
            writing.held = true;
            Poll::Ready(Held { socket: self, cut: writing.cut.take() })
        })
        .await
    }

    /// Marks the close frame sent, and ends the sending direction.
    fn close_sent(&self) {
        self.writing().close_sent = true;
        let _ = socket2::SockRef::from(&self.tcp).shutdown(Shutdown::Write);
    }

    /// Writes `count` parts (`part(i)`) in order, whole, holding the writing direction
    /// ([`hold`](Self::hold); `control` for a control frame); with `close`, then ends the
    /// sending direction (a close frame was the last part). Safe to cancel: a frame cut
    /// part-way is finished by the next write.
    async fn write_parts<'a>(
        &self,
        count: usize,
        part: impl Fn(usize) -> &'a Bytes,
        control: bool,
        close: bool,
    ) -> io::Result<()> {
        let mut held = self.hold(control).await;
        if self.writing().close_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let Some((cut, offset)) = held.cut.as_deref().cloned() {
            self.write_all(&mut held.cut, 1, |_| &cut, offset).await?;
            if cut.first() == Some(&(0x80 | OP_CLOSE)) {
                // A cancelled close, now out: nothing may follow it.
                self.close_sent();
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        self.write_all(&mut held.cut, count, part, 0).await?;
        if close {
            self.close_sent();
        }
        Ok(())
    }

    /// The loop of [`write_parts`](Self::write_parts): writes ([`write_once`](Self::write_once))
    /// from part 0 at `offset`, recording in `cut` the part under way at every wait.
    async fn write_all<'a>(
        &self,
        cut: &mut Option<Box<(Bytes, usize)>>,
        count: usize,
        part: impl Fn(usize) -> &'a Bytes,
        offset: usize,
    ) -> io::Result<()> {
        let mut at = (0, offset);
        while at.0 < count {
            *cut = (at.1 > 0).then(|| Box::new((part(at.0).clone(), at.1)));
            // The write first, the wait only when the socket is full: a socket that takes
            // the write (nearly always) costs no readiness future.
            match self.write_once(count, &part, &mut at) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                written => written?,
            }
        }
        *cut = None;
        Ok(())
    }

    /// One write that does not wait, of parts `at.0..count` (at most [`MAX_IOVECS`]; a
    /// vectored one unless a single part is left), the first from its byte `at.1`; moves `at`
    /// past what went out: whole parts, then part of one. `WouldBlock` when the socket is full.
    fn write_once<'a>(
        &self,
        count: usize,
        part: &impl Fn(usize) -> &'a Bytes,
        at: &mut (usize, usize),
    ) -> io::Result<()> {
        let (mut i, mut offset) = *at;
        let written = if count - i == 1 {
            // One frame (a delivery at light load): a plain `send`, with no vector for the
            // kernel to copy in.
            self.send_now(|socket| socket.send_with_flags(&part(i)[offset..], SEND_FLAGS))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (j, slice) in (i..count).zip(slices.iter_mut()) {
                *slice = IoSlice::new(&part(j)[if j == i { offset } else { 0 }..]);
                n += 1;
            }
            self.send_now(|socket| socket.send_vectored_with_flags(&slices[..n], SEND_FLAGS))?
        };
        let mut written = match written {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            written => written,
        };
        while i < count {
            let left = part(i).len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            i += 1;
            offset = 0;
        }
        *at = (i, offset);
        Ok(())
    }

    /// A write that does not wait, `send` on the socket itself: straight to it first, and
    /// only when the socket refuses it (`WouldBlock`), the same write again through tokio's
    /// record of the socket's readiness ([`TcpStream::try_io`]), whose `WouldBlock` clears that
    /// record, so that a later [`TcpStream::writable`] waits for room. The second try is
    /// needed: tokio reads the record before the write and clears it only if no readiness
    /// came meanwhile, so room made between the refusal and that read is not lost (clearing it
    /// without writing again could leave the writer waiting for good). A full socket thus costs
    /// one refused system call more; a write that goes through costs no look-up of the record,
    /// which tokio's own write makes every time: a cache miss per delivery once a large room's
    /// sockets no longer fit in the cache (about 1 % of a server's CPU at 1,000 members × 100
    /// messages/s).
    fn send_now(&self, send: impl Fn(socket2::SockRef<'_>) -> io::Result<usize>) -> io::Result<usize> {
        match send(socket2::SockRef::from(&self.tcp)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.tcp.try_io(Interest::WRITABLE, || send(socket2::SockRef::from(&self.tcp)))
            }
            sent => sent,
        }
    }

    /// Sends a control frame (pong or close), unless a close already went out; a close
    /// also ends the sending direction (the peer sees the close, then the end of the
    /// stream).
    async fn control(&self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() <= 125);
        let mut frame = Vec::with_capacity(2 + payload.len());
        frame.extend_from_slice(&[0x80 | opcode, payload.len() as u8]);
        frame.extend_from_slice(payload);
        let frame = Bytes::from(frame);
        self.write_parts(1, |_| &frame, true, opcode == OP_CLOSE).await
    }

    /// Sends a close frame with `status` (none: an empty close) and `text`. Once only.
    async fn close(&self, status: Option<u16>, text: &str) {
        let mut payload = Vec::new();
        if let Some(status) = status {
            payload.extend_from_slice(&status.to_be_bytes());
            payload.extend_from_slice(text.as_bytes());
        }
        let _ = self.control(OP_CLOSE, &payload).await;
    }
}

struct SocketSink {
    socket: Arc<Socket>,
}

#[async_trait]
impl FrameSink for SocketSink {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        // Even with no frames: `try_send` may have left one part-way.
        self.socket
            .write_parts(frames.len(), |i| frames[i].wire(), false, false)
            .await
            .map_err(|_| TransportError::Closed(None))
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        if !self.socket.writing().close_sent {
            self.socket.close(Some(close_code(reason.code)), &close_text(&reason)).await;
        }
        Ok(())
    }

    /// Writes that do not wait ([`Socket::write_once`]) until the socket is full, if
    /// nobody else is writing (a pong, a close, a send): the frames the socket takes whole,
    /// and the one it takes in part, whose rest is kept as a cut frame that the next write
    /// finishes first.
    fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
        let socket = &*self.socket;
        if frames.is_empty() {
            return Taken::default();
        }
        let mut writing = socket.writing();
        if writing.held || writing.controls > 0 || writing.cut.is_some() || writing.close_sent {
            return Taken::default();
        }
        // Writes until the socket is full; a failed write is left to `send`, which meets it
        // again and reports it.
        let mut at = (0, 0);
        let part = |i: usize| frames[i].wire();
        while at.0 < frames.len() && socket.write_once(frames.len(), &part, &mut at).is_ok() {}
        let cut = at.1 > 0;
        if cut {
            writing.cut = Some(Box::new((frames[at.0].wire().clone(), at.1)));
        }
        drop(writing);
        // The frames taken are let go outside the lock: a frame's last reference frees it.
        let taken = at.0 + usize::from(cut);
        frames.drain(..taken);
        Taken { frames: taken, cut }
    }

    fn writes_in_place(&self) -> bool {
        true
    }
}

mod read;
#[cfg(test)]
mod tests;

use read::SocketStream;
