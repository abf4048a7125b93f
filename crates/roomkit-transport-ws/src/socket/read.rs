//! The reading half of a socket connection: frames read into a buffer only while one is
//! incomplete, client frames checked, pings and closes answered (see the parent module).

use std::{
    io,
    sync::Arc,
    task::{Context, Poll},
};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use roomkit_core::transport::{CloseReason, FrameStream, TransportError};
use roomkit_protocol::Code;
use socket2::SockRef;
use tokio::io::Interest;

use super::{Socket, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use crate::stream::close_reason_from_parts;

/// A text message being assembled from fragments, or a binary one being skipped.
pub(super) enum Partial {
    Text(BytesMut),
    Binary(usize),
}

pub(super) struct SocketStream {
    pub(super) socket: Arc<Socket>,
    /// Bytes read but not yet a whole frame; no allocation between frames.
    pub(super) buf: BytesMut,
    /// Boxed, like `closed`: rarely there, so an idle stream keeps a pointer for each.
    pub(super) message: Option<Box<Partial>>,
    pub(super) max_message_bytes: usize,
    /// Bytes asked of the socket per read while a frame is incomplete.
    pub(super) read_chunk: usize,
    /// Set once the stream has ended, with the peer's reason if it gave one.
    pub(super) closed: Option<Box<Option<CloseReason>>>,
    /// The stream ended on a protocol violation: what the peer still sends is read and
    /// thrown away until it closes, since a socket closed with unread input is reset, and a
    /// reset destroys the answer and the close frame the peer has not read yet.
    pub(super) discard: bool,
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
        if !self.socket.writing().close_sent {
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

    /// One read, once the socket said it is readable, of at most `read_chunk` bytes (zeroed
    /// first: a safe read needs initialised bytes, and a frame being read may have reserved
    /// far more room than one read fills). A read that got fewer bytes than it asked
    /// for emptied the socket, so the readiness it was made under is cleared, as tokio's own
    /// `poll_read` does: the next wait for input then waits, rather than making a read that
    /// would block — a system call on the way from every request to its shard. (Input that
    /// arrived after that readiness has set a newer one, which the clearing leaves; and the
    /// end of the stream is never cleared.)
    fn read_once(&mut self) -> Read {
        if self.buf.capacity() - self.buf.len() < self.read_chunk / 4 {
            self.buf.reserve(self.read_chunk);
        }
        let start = self.buf.len();
        let asked = (self.buf.capacity() - start).min(self.read_chunk);
        self.buf.resize(start + asked, 0);
        let mut got = 0;
        let (tcp, into) = (&self.socket.tcp, &mut self.buf[start..]);
        let read = tcp.try_io(Interest::READABLE, || {
            got = io::Read::read(&mut &*SockRef::from(tcp), into)?;
            if got > 0 && got < asked {
                // Taken, and the socket is empty: `try_io` clears the readiness.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        self.buf.truncate(start + got);
        match read {
            Ok(0) => Read::End,
            Ok(_) => Read::Some,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Read::Some,
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
    /// Readiness the socket reports is checked by reading: it is cleared only by a read that
    /// would block or got less than it asked for, and after a frame that filled the read it
    /// is still set, so a waiter that trusted it would go on to wait inside a receive.
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
