//! The server's own WebSocket framing (`roomkit_transport_ws::socket_connection`, used for
//! every upgraded TCP socket), driven by a hand-written client over a real loopback socket:
//! a first frame sent with the handshake, pings, fragmented messages with a ping between the
//! fragments, batches of frames of every header size, the close handshake, and the frames a
//! client must never send.

use std::time::Duration;

use bytes::Bytes;
use roomkit_core::transport::{CloseReason, Connection, Frame, FrameSink, Listener, TransportError};
use roomkit_protocol::Code;
use roomkit_transport_ws::{QueueListener, WsConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

const LIMIT: Duration = Duration::from_secs(10);

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A client frame: masked, as RFC 6455 requires of clients.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
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
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A connected hand-written client and the server's side of it, whose stream is read all the
/// time (as the server's reader does: pings are answered while it reads).
struct Pair {
    tcp: TcpStream,
    sink: Box<dyn FrameSink>,
    received: mpsc::UnboundedReceiver<Result<Bytes, TransportError>>,
    /// One entry per sign of life the server's stream reported (a ping or a pong).
    alive: mpsc::UnboundedReceiver<()>,
    _stop: watch::Sender<bool>,
}

/// Serves the client port, connects by hand and completes the handshake, sending `first`
/// in the same write as the request head.
async fn pair(first: &[u8]) -> Pair {
    let config = WsConfig::default();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (mut listener, sender) = QueueListener::new(addr.to_string(), 8);
    let (stop, stop_rx) = watch::channel(false);
    let router = roomkit_server::net::client_router(config, sender);
    tokio::spawn(roomkit_server::net::serve(tcp, router, LIMIT, stop_rx));
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    hello.extend_from_slice(first);
    client.write_all(&hello).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(client.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the accept key of RFC 6455's example: {head}");
    let server: Connection = tokio::time::timeout(LIMIT, listener.accept()).await.unwrap().unwrap();
    let (tx, received) = mpsc::unbounded_channel();
    let (alive_tx, alive) = mpsc::unbounded_channel();
    let mut stream = server.stream;
    tokio::spawn(async move {
        loop {
            let got = match stream.recv_or_alive().await {
                Ok(None) => {
                    let _ = alive_tx.send(());
                    continue;
                }
                Ok(Some(message)) => Ok(message),
                Err(e) => Err(e),
            };
            let ended = matches!(got, Err(TransportError::Closed(_)));
            if tx.send(got).is_err() || ended {
                return;
            }
        }
    });
    Pair { tcp: client, sink: server.sink, received, alive, _stop: stop }
}

impl Pair {
    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next server frame: (fin, opcode, payload). Server frames are never masked.
    async fn frame(&mut self) -> (bool, u8, Vec<u8>) {
        let read = async {
            let (b0, b1) = (self.tcp.read_u8().await.unwrap(), self.tcp.read_u8().await.unwrap());
            assert_eq!(b1 & 0x80, 0, "a server frame is not masked");
            let len = match b1 & 0x7f {
                126 => u64::from(self.tcp.read_u16().await.unwrap()),
                127 => self.tcp.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.tcp.read_exact(&mut payload).await.unwrap();
            (b0 & 0x80 != 0, b0 & 0x0f, payload)
        };
        tokio::time::timeout(LIMIT, read).await.expect("a frame from the server")
    }

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        let next = tokio::time::timeout(LIMIT, self.received.recv()).await.expect("the server's stream");
        next.unwrap_or(Err(TransportError::Closed(None)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_frame_pings_fragments_and_the_close_handshake() {
    let mut p = pair(&masked(true, TEXT, br#"{"first":true}"#)).await;
    assert_eq!(&p.recv().await.unwrap()[..], br#"{"first":true}"#, "sent with the handshake");

    p.send(&masked(true, PING, b"hi")).await;
    assert_eq!(p.frame().await, (true, PONG, b"hi".to_vec()), "a ping is answered in kind");

    // A message in three fragments, a ping between them.
    let mut bytes = masked(false, TEXT, br#"{"a":"#);
    bytes.extend(masked(false, CONTINUATION, b"12"));
    bytes.extend(masked(true, PING, b""));
    bytes.extend(masked(true, CONTINUATION, b"3}"));
    p.send(&bytes).await;
    assert_eq!(&p.recv().await.unwrap()[..], br#"{"a":123}"#);
    assert_eq!(p.frame().await, (true, PONG, Vec::new()));

    // A large client frame (16-bit length) arrives whole.
    let big = format!("\"{}\"", "y".repeat(40_000));
    p.send(&masked(true, TEXT, big.as_bytes())).await;
    assert_eq!(p.recv().await.unwrap(), big.as_bytes());

    p.send(&masked(true, CLOSE, b"\x03\xe8bye")).await; // 1000, "bye"
    match p.recv().await {
        Err(TransportError::Closed(Some(reason))) => {
            assert_eq!(reason, CloseReason::new(Code::SUCCESS, "bye"))
        }
        other => panic!("expected the client's close, got {other:?}"),
    }
    let (fin, opcode, payload) = p.frame().await;
    assert_eq!((fin, opcode, &payload[..2]), (true, CLOSE, &[0x03, 0xe8][..]), "the close is echoed");
    let mut rest = Vec::new();
    p.tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "nothing after the close: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_out_whole_and_in_order_then_the_close_reason() {
    let mut p = pair(b"").await;
    // Every header size: 7-bit, 16-bit and 64-bit lengths; more frames than one writev takes.
    let sizes = [0, 1, 125, 126, 65_535, 65_536, 200_000];
    let batch: Vec<Frame> = (0..3 * roomkit_transport_ws::MAX_IOVECS)
        .map(|i| Frame::text("z".repeat(sizes[i % sizes.len()]).as_bytes()))
        .collect();
    let expected: Vec<Vec<u8>> = batch.iter().map(|f| f.payload().to_vec()).collect();
    let mut sink = std::mem::replace(&mut p.sink, Box::new(NoSink));
    let send = tokio::spawn(async move {
        sink.send(&batch).await.expect("batch");
        sink.close(CloseReason::new(Code::SLOW_CONSUMER, "send queue full")).await.unwrap();
        sink
    });
    for (i, payload) in expected.iter().enumerate() {
        let (fin, opcode, got) = p.frame().await;
        assert_eq!((fin, opcode, got.len()), (true, TEXT, payload.len()), "frame {i}");
        assert_eq!(&got, payload, "frame {i}");
    }
    let (_, opcode, payload) = p.frame().await;
    assert_eq!(opcode, CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4000);
    let text = String::from_utf8(payload[2..].to_vec()).unwrap();
    assert_eq!(text, format!("{} send queue full", Code::SLOW_CONSUMER.0));
    drop(send.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_message_is_refused_and_the_connection_stays() {
    let mut p = pair(b"").await;
    let mut bytes = masked(false, BINARY, b"\x00\x01");
    bytes.extend(masked(true, CONTINUATION, b"\x02"));
    bytes.extend(masked(true, TEXT, b"{}"));
    p.send(&bytes).await;
    match p.recv().await {
        Err(TransportError::Rejected(reason)) => assert_eq!(reason.code, Code::UNSUPPORTED_FRAME),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(&p.recv().await.unwrap()[..], b"{}", "the connection still reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_client_must_never_send_are_violations() {
    let unmasked = [0x81, 0x02, b'{', b'}'].to_vec();
    let reserved = {
        let mut f = masked(true, TEXT, b"{}");
        f[0] |= 0x40; // RSV1: compression, never agreed
        f
    };
    let long_ping = masked(true, PING, &[0; 126]);
    let stray_continuation = masked(true, CONTINUATION, b"{}");
    let not_utf8 = masked(true, TEXT, b"\xff\xfe");
    for (what, bytes) in [
        ("unmasked", unmasked),
        ("reserved bits", reserved),
        ("a control frame over 125 bytes", long_ping),
        ("a continuation of nothing", stray_continuation),
        ("text that is not UTF-8", not_utf8),
    ] {
        let mut p = pair(&bytes).await;
        match p.recv().await {
            Err(TransportError::Violation(reason)) => {
                assert_eq!(reason.code, Code::MALFORMED_FRAME, "{what}")
            }
            other => panic!("{what}: expected a violation, got {other:?}"),
        }
        // What the client sends after it is read and dropped until it closes (a socket
        // closed with unread input would be reset, destroying the answer and the close).
        p.send(&masked(true, TEXT, b"{\"after\":1}")).await;
        p.tcp.shutdown().await.unwrap();
        assert!(matches!(p.recv().await, Err(TransportError::Closed(_))), "{what}: the stream stays ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_answered_as_rfc_6455_says() {
    for (what, payload, answer) in [
        ("an empty close", Vec::new(), Vec::new()),
        ("a normal close", b"\x03\xe8bye".to_vec(), vec![0x03, 0xe8]),
        ("an application's status", b"\x0f\xa0".to_vec(), vec![0x0f, 0xa0]),
        ("a one-byte payload", vec![0x03], vec![0x03, 0xea]),
        ("1005, which no endpoint may send", b"\x03\xed".to_vec(), vec![0x03, 0xea]),
        ("a status above 4999", b"\x13\x88".to_vec(), vec![0x03, 0xea]),
        ("a reason that is not UTF-8", b"\x03\xe8\xff".to_vec(), vec![0x03, 0xef]),
    ] {
        let mut p = pair(&masked(true, CLOSE, &payload)).await;
        assert!(matches!(p.recv().await, Err(TransportError::Closed(_))), "{what}");
        let (fin, opcode, got) = p.frame().await;
        assert_eq!((fin, opcode, got), (true, CLOSE, answer), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_refused_before_it_is_read() {
    // Only the header of a 1 GiB frame is sent: the limit is checked on the header.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut p = pair(&header).await;
    match p.recv().await {
        Err(TransportError::Violation(reason)) => assert_eq!(reason.code, Code::FRAME_TOO_LARGE),
        other => panic!("expected FRAME_TOO_LARGE, got {other:?}"),
    }
}

/// Stands in for a sink moved elsewhere.
struct NoSink;

#[async_trait::async_trait]
impl FrameSink for NoSink {
    async fn send(&mut self, _: &[Frame]) -> Result<(), TransportError> {
        Ok(())
    }

    async fn close(&mut self, _: CloseReason) -> Result<(), TransportError> {
        Ok(())
    }
}

/// A keep-alive ping goes out as a ping frame; the client's pong, and a ping of its own, are
/// signs of life on the server's stream, never messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_go_out_and_answers_are_signs_of_life() {
    let mut p = pair(b"").await;
    p.sink.send(&[Frame::ping()]).await.unwrap();
    assert_eq!(p.frame().await, (true, PING, vec![]));
    p.send(&masked(true, PONG, b"")).await;
    tokio::time::timeout(LIMIT, p.alive.recv()).await.expect("the pong reported").unwrap();
    p.send(&masked(true, PING, b"hi")).await;
    assert_eq!(p.frame().await, (true, PONG, b"hi".to_vec()), "a client's ping is answered");
    tokio::time::timeout(LIMIT, p.alive.recv()).await.expect("the ping reported").unwrap();
    p.send(&masked(true, TEXT, b"{}")).await;
    assert_eq!(&p.recv().await.unwrap()[..], b"{}", "no message came of the ping and the pong");
}
