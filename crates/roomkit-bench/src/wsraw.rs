//! A minimal WebSocket client for the fan-out's receiving members: the handshake, masked
//! text frames out, and the server's (unmasked, unfragmented) frames in, read straight from
//! the socket into one buffer per member.
//!
//! The fan-out compares roomkit with redis pub/sub through the same generator, whose one core
//! is often the limit. The redis side reads RESP with a small hand-written reader
//! (`resp.rs`); this is its counterpart, so that the generator does not spend more per
//! delivery on roomkit's side (a WebSocket library validates, copies and allocates each
//! message) than on redis's; both read into a [`ReadBuffer`].

use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::readbuf::ReadBuffer;

/// The server frame at the start of `b`, if it is whole: its opcode and where its payload
/// starts and ends.
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (opcode, len7) = (b[0] & 0x0f, b[1] & 0x7f);
    let (len, at) = match len7 {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    (b.len() >= at + len).then_some((opcode, at, at + len))
}

/// The bytes still missing of a frame `b` starts with, once its length is known.
fn wanted(b: &[u8]) -> Option<usize> {
    let need = match *b.get(1)? & 0x7f {
        126 => 4 + usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])),
        127 => 10 + u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
        n => 2 + usize::from(n),
    };
    need.checked_sub(b.len()).filter(|&n| n > 0)
}

/// One member's connection (a TCP socket but in tests).
pub(crate) struct RawMember<S = TcpStream> {
    stream: S,
    buf: ReadBuffer,
}

impl RawMember {
    /// Connects to `ws://{addr}/v1` and completes the handshake.
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Result<RawMember, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        RawMember::handshake(tcp, &addr.to_string()).await
    }

    /// Connects, logs in as `u{i}` and enters `room` and its chatroom.
    pub(crate) async fn join(addr: std::net::SocketAddr, i: usize, room: &str) -> Result<RawMember, String> {
        let mut m = RawMember::connect(addr).await?;
        let account = format!("u{i}");
        m.call(1, json!({"op": "login", "account_id": account, "token": "bench"})).await?;
        m.call(2, json!({"op": "join_room", "room_uuid": room, "user_name": account})).await?;
        m.call(3, json!({"op": "join_chatroom", "room_uuid": room})).await?;
        Ok(m)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawMember<S> {
    /// Asks `host` over `stream` to upgrade to a WebSocket at `/v1`.
    async fn handshake(mut stream: S, host: &str) -> Result<Self, String> {
        let hello = format!(
            "GET /v1 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(hello.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut member = RawMember { stream, buf: ReadBuffer::new() };
        let end = loop {
            if let Some(at) = member.unread().windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            member.fill().await?;
        };
        if !member.unread().starts_with(b"HTTP/1.1 101") {
            return Err(format!("handshake refused: {}", String::from_utf8_lossy(&member.unread()[..end])));
        }
        member.buf.take(end);
        Ok(member)
    }

    fn unread(&self) -> &[u8] {
        self.buf.unread()
    }

    /// Reads what the socket has (see [`ReadBuffer::fill`]).
    async fn fill(&mut self) -> Result<(), String> {
        let missing = wanted(self.buf.unread());
        self.buf.fill(&mut self.stream, missing).await
    }

    /// Sends `text` as one masked text frame.
    pub(crate) async fn send(&mut self, text: &str) -> Result<(), String> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x81];
        match text.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.map_err(|e| e.to_string())
    }

    /// The next text message; `None` once the server closes.
    pub(crate) async fn next_text(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some((opcode, payload)) = self.frame() {
                match opcode {
                    0x1 => return Some(payload),
                    0x8 => return None,
                    _ => continue,
                }
            }
            self.fill().await.ok()?;
        }
    }

    /// Calls `each` with every text message, read in place from the buffer (no copy or
    /// reference count per message, as the RESP reader does), until the server closes.
    pub(crate) async fn for_each_text(&mut self, mut each: impl FnMut(&[u8])) {
        loop {
            while let Some((opcode, start, end)) = header(self.unread()) {
                match opcode {
                    0x1 => each(&self.unread()[start..end]),
                    0x8 => return,
                    _ => {}
                }
                self.buf.take(end);
            }
            if self.fill().await.is_err() {
                return;
            }
        }
    }

    /// Takes one whole server frame off the buffer: (opcode, payload).
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let (opcode, start, end) = header(self.unread())?;
        let payload = self.unread()[start..end].to_vec();
        self.buf.take(end);
        Some((opcode, payload))
    }

    /// Sends a request and reads until its answer (skipping events); fails unless it
    /// succeeded.
    pub(crate) async fn call(&mut self, id: u64, mut request: Value) -> Result<Value, String> {
        request["id"] = json!(id);
        self.send(&request.to_string()).await?;
        while let Some(text) = self.next_text().await {
            let v: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
            if v["id"] == json!(id) {
                return if v["code"] == json!(0) { Ok(v) } else { Err(format!("{request} failed: {v}")) };
            }
        }
        Err("connection closed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readbuf::READ_BUFFER;
    use tokio::io::AsyncReadExt;

    #[test]
    fn headers_of_whole_and_partial_frames() {
        // A 3-byte text frame, then the start of a 300-byte one (16-bit length).
        let mut b = vec![0x81, 3, b'a', b'b', b'c', 0x81, 126, 0x01, 0x2c];
        assert_eq!(header(&b), Some((0x1, 2, 5)));
        assert_eq!(wanted(&b), None);
        assert_eq!(header(&b[5..]), None);
        assert_eq!(wanted(&b[5..]), Some(300));
        b.extend(std::iter::repeat_n(b'x', 300));
        assert_eq!(header(&b[5..]), Some((0x1, 4, 304)));
        assert_eq!(header(&[0x81]), None);
        assert_eq!(wanted(&[0x81, 126, 0x01]), None);
    }

    /// A text frame as the server writes it (unmasked).
    fn server_frame(text: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x81];
        match text.len() {
            n if n < 126 => frame.push(n as u8),
            n if n <= 0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(text);
        frame
    }

    /// The texts a member reads from a server that answers its handshake, then writes
    /// `texts`' frames, a close frame and one text more, handing the member at most `max`
    /// bytes a read; and the member's buffer's size at the end.
    async fn texts_read(texts: &[Vec<u8>], max: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut server, client) = tokio::io::duplex(max);
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        out.extend(texts.iter().flat_map(|t| server_frame(t)));
        out.extend([0x88, 0]);
        out.extend(server_frame(b"after the close"));
        let writer = tokio::spawn(async move {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                request.push(server.read_u8().await.unwrap());
            }
            // The member stops reading at the close: the rest may never be read.
            let _ = server.write_all(&out).await;
            // Open until the member is gone, so that it sees the close and not the end.
            let _ = server.read_u8().await;
        });
        let mut member = RawMember::handshake(client, "test").await.unwrap();
        let mut got = Vec::new();
        let read = member.for_each_text(|text| got.push(text.to_vec()));
        tokio::time::timeout(std::time::Duration::from_secs(20), read)
            .await
            .expect("the reader is not stuck");
        let size = member.buf.size();
        drop(member);
        writer.await.unwrap();
        (got, size)
    }

    #[tokio::test]
    async fn frames_cut_anywhere_come_whole_in_order_and_up_to_the_close() {
        // Lengths of 7 and 16 bits, headers and payloads cut at every byte.
        let texts: Vec<Vec<u8>> = (0..400).map(|i| vec![b'a' + (i % 26) as u8; i % 300]).collect();
        for max in [1, 5, 1499] {
            let (got, size) = texts_read(&texts, max).await;
            assert!(got == texts, "reads of at most {max} bytes: {} texts", got.len());
            assert_eq!(size, READ_BUFFER, "the buffer, used again from its start, never grew");
        }
    }

    #[tokio::test]
    async fn frames_larger_than_the_buffer_grow_it_to_their_size() {
        let texts =
            vec![b"small".to_vec(), vec![b'b'; 10_000], b"x".to_vec(), vec![b'c'; 70_000], b"end".to_vec()];
        for max in [7, 64 * 1024] {
            let (got, size) = texts_read(&texts, max).await;
            assert!(got == texts, "reads of at most {max} bytes: {} texts", got.len());
            assert!(size >= 70_010, "grew for the largest frame: {size}");
        }
    }
}
