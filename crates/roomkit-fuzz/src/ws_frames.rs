//! Target `ws_frames`: the server's WebSocket framing (`roomkit_transport_ws::socket_connection`),
//! fed bytes from a real client socket on loopback TCP.
//!
//! The first byte picks a mode:
//! - **raw** (even): the rest goes to the server as it is. What must hold: no panic, no hang;
//!   every message handed on is UTF-8 and within the size limit; the stream ends with an
//!   error, after which it stays ended.
//! - **scripted** (odd): the rest is read as a script of frames the server must understand
//!   the way RFC 6455 and roomkit's rules say — text messages in fragments with pings and
//!   pongs between them, binary messages, oversized messages, a close with any status and
//!   reason, a protocol error, the stream cut mid-frame — masked with any key, lengths in any
//!   of the three encodings, written in chunks of any size. The server must hand on exactly
//!   the expected messages and refusals, end the way the script ends, and answer every ping
//!   with its pong and a close with the close RFC 6455 §5.5.1 asks for.
//!
//! Each input runs a fresh connection, with small limits (messages of [`MAX_MESSAGE`] bytes,
//! reads of 64 bytes) so that the size checks and partial reads are reached by short inputs.

mod script;

use std::{cell::RefCell, net::SocketAddr, time::Duration};

use bytes::Bytes;
use roomkit_core::transport::TransportError;
use roomkit_protocol::Code;
use roomkit_transport_ws::{socket_connection, WsConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

use self::script::{Ending, Expect, Script};
use crate::input::Input;

/// Largest message the server under test accepts.
pub const MAX_MESSAGE: usize = 200;

/// Longest one input may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// What the server's stream produced, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(Vec<u8>),
    Rejected(Code),
    Ended(Ending),
}

/// A runtime and a listener, made once per thread: a fuzzing process runs many inputs.
struct Harness {
    runtime: Runtime,
    listener: TcpListener,
    addr: SocketAddr,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn harness<T>(f: impl FnOnce(&Harness) -> T) -> T {
    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let harness = slot.get_or_insert_with(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .expect("a runtime");
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("a loopback listener");
            let addr = listener.local_addr().expect("the listener's address");
            Harness { runtime, listener, addr }
        });
        f(harness)
    })
}

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    if input.byte() & 1 == 0 {
        let ahead = usize::from(input.byte());
        let wire = input.rest();
        let (seen, _) = exchange(wire, ahead, &[]);
        check_raw(wire, &seen);
    } else {
        let script = Script::generate(&mut input);
        let ahead = usize::from(input.byte());
        let chunks = input.rest();
        let (seen, from_server) = exchange(&script.wire, ahead, chunks);
        check_scripted(&script, &seen, &from_server);
    }
}

/// Sends `wire` to a fresh server connection (its first `ahead` bytes as what the HTTP front
/// read past the handshake, the rest in chunks sized by `chunks`), reads the server's stream
/// until it ends, and returns what it produced and the bytes the server sent back.
fn exchange(wire: &[u8], ahead: usize, chunks: &[u8]) -> (Vec<Seen>, Vec<u8>) {
    let ahead = ahead.min(wire.len());
    let (read_ahead, rest) = wire.split_at(ahead);
    let rest = rest.to_vec();
    let chunks = chunks.to_vec();
    // Each frame takes at least 6 bytes: more messages than that means a stream repeating itself.
    let most_messages = wire.len() / 6 + 1;
    harness(|h| {
        h.runtime.block_on(async {
            let outcome = tokio::time::timeout(HANG, async {
                let client = TcpStream::connect(h.addr).await.expect("connect on loopback");
                let (server, _) = h.listener.accept().await.expect("accept on loopback");
                // The client resets rather than lingers: thousands of connections a second
                // must not use up the loopback ports.
                socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger");
                let (mut from_server, mut to_server) = client.into_split();
                let writer = tokio::spawn(async move {
                    write_in_chunks(&mut to_server, &rest, &chunks).await;
                    let _ = to_server.shutdown().await;
                    to_server
                });
                let reader = tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let _ = from_server.read_to_end(&mut bytes).await;
                    (bytes, from_server)
                });
                let mut config = WsConfig::default();
                config.max_frame_bytes = MAX_MESSAGE;
                config.read_buffer_bytes = 64;
                let mut conn =
                    socket_connection(server, Bytes::copy_from_slice(read_ahead), &config, "fuzz".into());
                let mut seen = Vec::new();
                loop {
                    match conn.stream.recv().await {
                        Ok(message) => {
                            seen.push(Seen::Message(message.to_vec()));
                            assert!(seen.len() <= most_messages, "more messages than the client sent");
                        }
                        Err(TransportError::Rejected(reason)) => seen.push(Seen::Rejected(reason.code)),
                        Err(e) => {
                            seen.push(Seen::Ended(Ending::of(&e)));
                            break;
                        }
                    }
                }
                // Once ended, the stream stays ended (after reading what the client still
                // sends, as the server does after a violation).
                match conn.stream.recv().await {
                    Err(TransportError::Closed(_)) => {}
                    other => panic!("the stream went on after it ended: {other:?}"),
                }
                // Closed before the writer is awaited: a client still sending after its close
                // frame, which the server no longer reads, must not wait for buffer space.
                drop(conn);
                let to_server = writer.await.expect("the client's writer");
                let (bytes, from_server) = reader.await.expect("the client's reader");
                drop((to_server, from_server));
                (seen, bytes)
            })
            .await;
            outcome.unwrap_or_else(|_| panic!("the server's stream hung for {HANG:?}"))
        })
    })
}

async fn write_in_chunks(to_server: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8], chunks: &[u8]) {
    let mut at = 0;
    let mut sizes = chunks.iter().map(|c| usize::from(*c) + 1).chain(std::iter::repeat(usize::MAX));
    while at < bytes.len() {
        let end = at.saturating_add(sizes.next().unwrap_or(usize::MAX)).min(bytes.len());
        if to_server.write_all(&bytes[at..end]).await.is_err() {
            return; // the server closed: the rest is not for it
        }
        at = end;
        tokio::task::yield_now().await;
    }
}

fn check_raw(wire: &[u8], seen: &[Seen]) {
    let (last, before) = seen.split_last().expect("the stream ends");
    assert!(matches!(last, Seen::Ended(_)), "the stream ends with an error: {seen:?}");
    let mut total = 0;
    for item in before {
        match item {
            Seen::Message(m) => {
                assert!(m.len() <= MAX_MESSAGE, "a message of {} bytes passed the limit", m.len());
                assert!(std::str::from_utf8(m).is_ok(), "a message that is not UTF-8 passed");
                total += m.len() + 6;
            }
            Seen::Rejected(code) => assert_eq!(*code, Code::UNSUPPORTED_FRAME),
            Seen::Ended(_) => unreachable!("only the last item ends the stream"),
        }
    }
    assert!(total <= wire.len(), "the messages hold more than the client sent");
}

fn check_scripted(script: &Script, seen: &[Seen], from_server: &[u8]) {
    let expected: Vec<Seen> = script
        .expect
        .iter()
        .map(|e| match e {
            Expect::Message(m) => Seen::Message(m.clone()),
            Expect::Rejected(code) => Seen::Rejected(*code),
            Expect::Ended(ending) => Seen::Ended(*ending),
        })
        .collect();
    assert_eq!(seen, expected, "the server read the script differently");
    let frames = script::server_frames(from_server);
    assert_eq!(frames, script.replies, "the server answered the client's control frames differently");
}
