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
//! The reader and the writer run in different tasks and share the socket; a write lock keeps
//! a pong or a close from landing inside a frame the writer is part-way through.

use std::{
    io::{self, IoSlice},
    net::Shutdown,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use roomkit_core::transport::{
    CloseReason, Connection, Frame, FrameSink, FrameStream, Taken, TransportError,
};
use roomkit_protocol::Code;
use tokio::{net::TcpStream, sync::Mutex};

use crate::{
    stream::{close_code, close_reason_from_parts, close_text},
    WsConfig,
};

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
    let socket = Arc::new(Socket { tcp, writing: Mutex::new(None), close_sent: AtomicBool::new(false) });
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
    /// Held for every write, so that frames never interleave. Inside: the frame a cancelled
    /// write left part-way, and how much of it went out; whoever writes next finishes it
    /// first, so the stream stays whole whatever future is dropped. (Boxed: an idle socket
    /// keeps a pointer, not room for a frame it rarely has.)
    writing: Mutex<Option<Box<(Bytes, usize)>>>,
    /// A close frame went out: nothing may follow it.
    close_sent: AtomicBool,
}

impl Socket {
    /// Writes `count` parts (`part(i)`) in order, whole, holding the write lock; with `close`,
    /// then ends the sending direction (a close frame was the last part). Safe to cancel: a
    /// frame cut part-way is finished by the next write.
    async fn write_parts<'a>(
        &self,
        count: usize,
        part: impl Fn(usize) -> &'a Bytes,
        close: bool,
    ) -> io::Result<()> {
        let mut writing = self.writing.lock().await;
        if self.close_sent.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let Some((cut, offset)) = writing.as_deref().cloned() {
            self.write_all(&mut writing, 1, |_| &cut, offset).await?;
            if cut.first() == Some(&(0x80 | OP_CLOSE)) {
                // A cancelled close, now out: nothing may follow it.
                self.close_sent.store(true, Ordering::Release);
                let _ = socket2::SockRef::from(&self.tcp).shutdown(Shutdown::Write);
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        self.write_all(&mut writing, count, part, 0).await?;
        if close {
            self.close_sent.store(true, Ordering::Release);
            let _ = socket2::SockRef::from(&self.tcp).shutdown(Shutdown::Write);
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
            self.tcp.try_write(&part(i)[offset..])?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (j, slice) in (i..count).zip(slices.iter_mut()) {
                *slice = IoSlice::new(&part(j)[if j == i { offset } else { 0 }..]);
                n += 1;
            }
            self.tcp.try_write_vectored(&slices[..n])?
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

    /// Sends a control frame (pong or close), unless a close already went out; a close
    /// also ends the sending direction (the peer sees the close, then the end of the
    /// stream).
    async fn control(&self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() <= 125);
        let mut frame = Vec::with_capacity(2 + payload.len());
        frame.extend_from_slice(&[0x80 | opcode, payload.len() as u8]);
        frame.extend_from_slice(payload);
        let frame = Bytes::from(frame);
        self.write_parts(1, |_| &frame, opcode == OP_CLOSE).await
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
            .write_parts(frames.len(), |i| frames[i].wire(), false)
            .await
            .map_err(|_| TransportError::Closed(None))
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        if !self.socket.close_sent.load(Ordering::Acquire) {
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
        let Ok(mut writing) = socket.writing.try_lock() else { return Taken::default() };
        if writing.is_some() || socket.close_sent.load(Ordering::Acquire) {
            return Taken::default();
        }
        // Writes until the socket is full; a failed write is left to `send`, which meets it
        // again and reports it.
        let mut at = (0, 0);
        let part = |i: usize| frames[i].wire();
        while at.0 < frames.len() && socket.write_once(frames.len(), &part, &mut at).is_ok() {}
        let cut = at.1 > 0;
        if cut {
            *writing = Some(Box::new((frames[at.0].wire().clone(), at.1)));
        }
        let taken = at.0 + usize::from(cut);
        frames.drain(..taken);
        Taken { frames: taken, cut }
    }

    fn writes_in_place(&self) -> bool {
        true
    }
}

/// A text message being assembled from fragments, or a binary one being skipped.
enum Partial {
    Text(BytesMut),
    Binary(usize),
}

struct SocketStream {
    socket: Arc<Socket>,
    /// Bytes read but not yet a whole frame; no allocation between frames.
    buf: BytesMut,
    /// Boxed, like `closed`: rarely there, so an idle stream keeps a pointer for each.
    message: Option<Box<Partial>>,
    max_message_bytes: usize,
    /// Bytes asked of the socket per read while a frame is incomplete.
    read_chunk: usize,
    /// Set once the stream has ended, with the peer's reason if it gave one.
    closed: Option<Box<Option<CloseReason>>>,
    /// The stream ended on a protocol violation: what the peer still sends is read and
    /// thrown away until it closes, since a socket closed with unread input is reset, and a
    /// reset destroys the answer and the close frame the peer has not read yet.
    discard: bool,
}

/// What one whole frame amounted to.
enum Step {
    /// A complete text message.
    Message(Bytes),
    /// A ping (answered) or a pong: the peer is alive.
    Alive,
    /// A fragment stored: read on.
    Continue,
}

fn violation(code: Code, msg: impl Into<String>) -> TransportError {
    TransportError::Violation(CloseReason::new(code, msg))
}

impl SocketStream {
    /// Takes one whole frame off the buffer, if there is one.
    fn next_frame(&mut self) -> Result<Option<(bool, u8, BytesMut)>, TransportError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        let (masked, len7) = (b[1] & 0x80 != 0, b[1] & 0x7f);
        if rsv != 0 {
            return Err(violation(
                Code::MALFORMED_FRAME,
                "reserved WebSocket bits set: no extension was agreed",
            ));
        }
        if !masked {
            return Err(violation(Code::MALFORMED_FRAME, "a client's WebSocket frames must be masked"));
        }
        let (len, at) = match len7 {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => match u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) {
                len if len >> 63 == 0 => (len, 10),
                _ => return Err(violation(Code::MALFORMED_FRAME, "a WebSocket length's top bit must be 0")),
            },
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(violation(
                Code::MALFORMED_FRAME,
                "a WebSocket control frame must be whole and at most 125 bytes",
            ));
        }
        let so_far = match self.message.as_deref() {
            Some(Partial::Text(m)) => m.len(),
            Some(Partial::Binary(n)) => *n,
            None => 0,
        };
        let total = u64::try_from(so_far).unwrap_or(u64::MAX).saturating_add(len);
        if opcode & 0x8 == 0 && total > self.max_message_bytes as u64 {
            return Err(violation(
                Code::FRAME_TOO_LARGE,
                format!("frame of {total} bytes is over the limit of {} bytes", self.max_message_bytes),
            ));
        }
        let len = len as usize; // at most the limit, checked above
        let whole = at + 4 + len;
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        let mask: [u8; 4] = self.buf[at..at + 4].try_into().expect("4 bytes");
        let mut frame = self.buf.split_to(whole);
        frame.advance(at + 4);
        for (i, byte) in frame.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        if self.buf.is_empty() {
            // Give the allocation back with the frame: an idle connection keeps no buffer.
            self.buf = BytesMut::new();
        }
        Ok(Some((fin, opcode, frame)))
    }

    /// Acts on one whole frame.
    async fn on_frame(&mut self, fin: bool, opcode: u8, payload: BytesMut) -> Result<Step, TransportError> {
        let unexpected = || violation(Code::MALFORMED_FRAME, "unexpected WebSocket continuation or fragment");
        let message = match (opcode, self.message.take().map(|m| *m)) {
            (OP_PING, partial) => {
                self.message = partial.map(Box::new);
                let _ = self.socket.control(OP_PONG, &payload).await;
                return Ok(Step::Alive);
            }
            (OP_PONG, partial) => {
                self.message = partial.map(Box::new);
                return Ok(Step::Alive);
            }
            (OP_CLOSE, _) => return Err(self.on_close(&payload).await),
            (OP_TEXT, None) => payload,
            (OP_BINARY, None) => {
                if !fin {
                    self.message = Some(Box::new(Partial::Binary(payload.len())));
                    return Ok(Step::Continue);
                }
                return Err(binary_refused());
            }
            (OP_CONTINUATION, Some(Partial::Text(mut text))) => {
                text.extend_from_slice(&payload);
                text
            }
            (OP_CONTINUATION, Some(Partial::Binary(n))) => {
                if !fin {
                    self.message = Some(Box::new(Partial::Binary(n + payload.len())));
                    return Ok(Step::Continue);
                }
                return Err(binary_refused());
            }
            (OP_CONTINUATION | OP_TEXT | OP_BINARY, _) => return Err(unexpected()),
            _ => return Err(violation(Code::MALFORMED_FRAME, format!("unknown WebSocket opcode {opcode}"))),
        };
        if !fin {
            self.message = Some(Box::new(Partial::Text(message)));
            return Ok(Step::Continue);
        }
        if std::str::from_utf8(&message).is_err() {
            return Err(violation(Code::MALFORMED_FRAME, "text frame is not valid UTF-8"));
        }
        Ok(Step::Message(message.freeze()))
    }

    /// The peer closes: answer with a close (echoing its status) unless one went out, and end.
    async fn on_close(&mut self, payload: &[u8]) -> TransportError {
        let (status, text) = match payload {
            [hi, lo, text @ ..] => (Some(u16::from_be_bytes([*hi, *lo])), std::str::from_utf8(text).ok()),
            _ => (None, Some("")),
        };
        // The answer (RFC 6455 §5.5.1, §7.4): the same status; an empty close for an empty
        // one; 1002 for a one-byte payload or a status no endpoint may send; 1007 for a
        // reason that is not UTF-8.
        let answer = match (payload.len(), status, text) {
            (0, _, _) => None,
            (1, _, _) => Some(1002),
            (_, Some(s), _) if !sendable_status(s) => Some(1002),
            (_, _, None) => Some(1007),
            (_, status, _) => status,
        };
        if !self.socket.close_sent.load(Ordering::Acquire) {
            self.socket.close(answer, "").await;
        }
        let reason = status.map(|status| close_reason_from_parts(status, text.unwrap_or("")));
        self.closed = Some(Box::new(reason.clone()));
        TransportError::Closed(reason)
    }

    /// The peer broke the protocol: the stream ends, and what follows is thrown away.
    fn violated(&mut self) {
        self.closed = Some(Box::new(None));
        self.discard = true;
        self.buf = BytesMut::new();
        self.message = None;
    }

    /// Reads and drops input until the peer closes (the caller bounds how long it waits).
    async fn discard_until_end(&mut self) {
        while self.socket.tcp.readable().await.is_ok() {
            let read = {
                let mut chunk = [0u8; 4096];
                self.socket.tcp.try_read(&mut chunk)
            };
            match read {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Reads more bytes; `Closed` at the end of the stream.
    async fn fill(&mut self) -> Result<(), TransportError> {
        // Waits with the task's waker stored in the socket's registration: a waiting reader's
        // future holds no readiness future of its own.
        while std::future::poll_fn(|cx| self.socket.tcp.poll_read_ready(cx)).await.is_ok() {
            match self.read_once() {
                Read::Some => return Ok(()),
                Read::Stale => {}
                Read::End => break,
            }
        }
        self.end();
        Err(TransportError::Closed(None))
    }

    /// One read, once the socket said it is readable.
    fn read_once(&mut self) -> Read {
        if self.buf.capacity() - self.buf.len() < self.read_chunk / 4 {
            self.buf.reserve(self.read_chunk);
        }
        match self.socket.tcp.try_read_buf(&mut self.buf) {
            Ok(0) => Read::End,
            Ok(_) => Read::Some,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.buf.is_empty() {
                    // Readiness was stale: wait holding no buffer.
                    self.buf = BytesMut::new();
                }
                Read::Stale
            }
            Err(_) => Read::End,
        }
    }

    /// The stream ended: every later receive returns `Closed`.
    fn end(&mut self) {
        self.closed = Some(Box::new(None));
    }
}

/// What one read got.
enum Read {
    /// Bytes, now in the buffer.
    Some,
    /// Nothing: the readiness was stale (and is now cleared).
    Stale,
    /// The end of the stream, or a broken socket.
    End,
}

/// Whether a close frame may carry `status` (RFC 6455 §7.4): the defined codes but 1004,
/// 1005, 1006 and 1015, and the 3000–4999 range for libraries and applications.
fn sendable_status(status: u16) -> bool {
    matches!(status, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn binary_refused() -> TransportError {
    TransportError::Rejected(CloseReason::new(
        Code::UNSUPPORTED_FRAME,
        "binary frames are not accepted: send JSON in text frames",
    ))
}

#[async_trait]
impl FrameStream for SocketStream {
    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(message) = self.next_message(false).await? {
                return Ok(message);
            }
        }
    }

    async fn recv_or_alive(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.next_message(true).await
    }

    /// Pending only while nothing is buffered, the stream is open and the socket has no new
    /// input: an idle connection waits on the socket's registration alone.
    ///
    /// Readiness the socket reports is checked by reading: tokio's is only cleared by a read
    /// that would block, and after a frame it is still set, so a waiter that trusted it
    /// would go on to wait inside a receive.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.closed.is_some() || !self.buf.is_empty() {
                return Poll::Ready(());
            }
            if std::task::ready!(self.socket.tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match self.read_once() {
                Read::Some => return Poll::Ready(()),
                Read::Stale => {}
                Read::End => {
                    self.end();
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl SocketStream {
    /// The next message, or with `alive`, `None` for a ping or a pong.
    async fn next_message(&mut self, alive: bool) -> Result<Option<Bytes>, TransportError> {
        loop {
            if self.closed.is_some() && std::mem::take(&mut self.discard) {
                // Boxed: a waiting reader's future holds only what reading needs.
                Box::pin(self.discard_until_end()).await;
            }
            if let Some(reason) = self.closed.as_deref() {
                return Err(TransportError::Closed(reason.clone()));
            }
            let Some((fin, opcode, payload)) = self.next_frame().inspect_err(|_| self.violated())? else {
                self.fill().await?;
                continue;
            };
            // Boxed: a waiting reader's future holds only what reading needs.
            match Box::pin(self.on_frame(fin, opcode, payload)).await {
                Ok(Step::Message(text)) => return Ok(Some(text)),
                Ok(Step::Alive) if alive => return Ok(None),
                Ok(Step::Alive | Step::Continue) => {}
                Err(e @ TransportError::Rejected(_)) => return Err(e),
                Err(e @ TransportError::Violation(_)) => {
                    self.violated();
                    return Err(e);
                }
                Err(e) => {
                    self.closed.get_or_insert_with(|| Box::new(None));
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
