//! The socket transport's own tests: reading holds no buffer when idle nor reads an emptied
//! socket again, writes cut part-way are finished, and a waiting read stays small.

use std::{future::Future, task::Context, time::Duration};

use tokio::{io::AsyncWriteExt, net::TcpListener};

use roomkit_core::transport::FrameStream;
use roomkit_protocol::Code;

use super::*;

/// A masked client text frame.
fn client_text(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | payload.len() as u8, 1, 2, 3, 4];
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
    frame
}

/// A connected pair over loopback: (client, server).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// The reading half of `socket`: messages of at most 1 KiB, read 4 KiB at a time.
fn reader(socket: Arc<Socket>) -> SocketStream {
    SocketStream {
        socket,
        buf: BytesMut::new(),
        message: None,
        max_message_bytes: 1024,
        read_chunk: 4096,
        closed: None,
        discard: false,
    }
}

#[tokio::test]
async fn an_idle_reader_holds_no_buffer() {
    let (mut client, server) = tcp_pair().await;
    let mut stream = reader(Arc::new(Socket::new(server)));
    for _ in 0..3 {
        client.write_all(&client_text(b"{}")).await.unwrap();
        assert_eq!(&stream.recv().await.unwrap()[..], b"{}");
        // Waiting for the next frame, with nothing partial: no buffer.
        assert!(tokio::time::timeout(Duration::from_millis(50), stream.recv()).await.is_err());
        assert_eq!(stream.buf.capacity(), 0, "an idle connection keeps no read buffer");
    }
    // Half a frame is kept until the rest comes.
    let frame = client_text(b"{\"half\":1}");
    client.write_all(&frame[..5]).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), stream.recv()).await.is_err());
    assert!(stream.buf.capacity() > 0);
    client.write_all(&frame[5..]).await.unwrap();
    assert_eq!(&stream.recv().await.unwrap()[..], b"{\"half\":1}");
}

/// A read that got less than it asked for emptied the socket: the readiness it was made under
/// is cleared, so the next wait waits for input without a read that would block first. Input
/// that comes after, and the end of the stream right behind a frame, still wake the reader.
#[tokio::test]
async fn a_read_that_empties_the_socket_leaves_the_next_wait_to_the_socket() {
    let (mut client, server) = tcp_pair().await;
    let socket = Arc::new(Socket::new(server));
    let mut stream = reader(Arc::clone(&socket));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for text in [&b"{\"a\":1}"[..], b"{\"b\":2}"] {
        client.write_all(&client_text(text)).await.unwrap();
        assert_eq!(&stream.recv().await.unwrap()[..], text);
        assert!(
            socket.tcp.poll_read_ready(&mut cx).is_pending(),
            "the readiness of the emptied socket is cleared"
        );
    }
    // A frame and the end of the stream at once: the end is not cleared with the frame's
    // readiness.
    client.write_all(&client_text(b"{\"c\":3}")).await.unwrap();
    client.shutdown().await.unwrap();
    let wait = Duration::from_secs(10);
    assert_eq!(&tokio::time::timeout(wait, stream.recv()).await.unwrap().unwrap()[..], b"{\"c\":3}");
    let end = tokio::time::timeout(wait, stream.recv()).await.expect("the end wakes the reader");
    assert!(matches!(end, Err(TransportError::Closed(_))));
}

/// A receive's future is boxed while it lasts (a frame being read, or one cut short): it
/// holds what reading needs and waits on the socket's own registration (it took 240
/// bytes with a readiness future and the discarding path inline).
#[tokio::test]
async fn a_waiting_readers_future_stays_small() {
    let (_client, server) = tcp_pair().await;
    let Connection { mut stream, .. } =
        socket_connection(server, Bytes::new(), &WsConfig::default(), "peer".into());
    let waiting = stream.recv_or_alive();
    let size = std::mem::size_of_val(&*waiting);
    assert!(size <= 128, "{size} B");
}

/// Whether `stream` is readable now (its readiness polled once).
fn readable_now(stream: &mut dyn FrameStream) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    stream.poll_readable(&mut cx).is_ready()
}

/// Waits (at most 10 s) until `stream` is readable.
async fn became_readable(stream: &mut dyn FrameStream) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), std::future::poll_fn(|cx| stream.poll_readable(cx))).await
}

/// An idle member's connection waits in `poll_readable` rather than in a boxed receive: it
/// must be pending exactly while there is nothing to receive, and wake when there is.
#[tokio::test]
async fn readiness_is_pending_while_nothing_came_and_ready_for_input_or_the_end() {
    let (mut client, server) = tcp_pair().await;
    let Connection { mut stream, .. } =
        socket_connection(server, Bytes::new(), &WsConfig::default(), "peer".into());
    assert!(!readable_now(stream.as_mut()), "nothing came yet");
    // Two frames in one write: ready for the first, and for the second while it is buffered.
    let mut both = client_text(b"{\"a\":1}");
    both.extend(client_text(b"{\"b\":2}"));
    client.write_all(&both).await.unwrap();
    became_readable(stream.as_mut()).await.expect("input wakes the waiter");
    assert_eq!(&stream.recv_or_alive().await.unwrap().unwrap()[..], b"{\"a\":1}");
    assert!(readable_now(stream.as_mut()), "a whole frame is still buffered");
    assert_eq!(&stream.recv_or_alive().await.unwrap().unwrap()[..], b"{\"b\":2}");
    assert!(!readable_now(stream.as_mut()), "everything was taken");
    // The peer going away is something to receive too.
    drop(client);
    became_readable(stream.as_mut()).await.expect("the end wakes the waiter");
    assert!(matches!(stream.recv_or_alive().await, Err(TransportError::Closed(_))));
    assert!(readable_now(stream.as_mut()), "an ended stream stays ready");
}

/// Reads the server's frames off `client` until the end of the stream: (opcode, payload).
async fn read_frames(client: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    client.read_to_end(&mut bytes).await.unwrap();
    let mut frames = Vec::new();
    let mut b = &bytes[..];
    while !b.is_empty() {
        assert_eq!(b[0] & 0x80, 0x80, "every frame is whole: FIN set");
        let (len, at) = match b[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            n => (usize::from(n), 2),
        };
        frames.push((b[0] & 0x0f, b[at..at + len].to_vec()));
        b = &b[at + len..];
    }
    frames
}

#[tokio::test]
async fn a_write_cancelled_mid_frame_is_finished_before_the_close_frame() {
    let (mut client, server) = tcp_pair().await;
    let socket = Arc::new(Socket::new(server));
    let mut sink = SocketSink { socket };
    // Far more than the socket buffers hold while the client does not read: the write
    // is cut part-way through some frame.
    let big = "x".repeat(1 << 20);
    let batch: Vec<Frame> = (0..16).map(|_| Frame::text(big.as_bytes())).collect();
    let cut = tokio::time::timeout(Duration::from_millis(100), sink.send(&batch)).await;
    assert!(cut.is_err(), "the write must still be under way when it is dropped");
    let reader = tokio::spawn(async move { read_frames(&mut client).await });
    sink.close(CloseReason::new(Code::SLOW_CONSUMER, "send queue full")).await.unwrap();
    let frames = reader.await.unwrap();
    let (last, texts) = frames.split_last().expect("frames");
    assert!(!texts.is_empty() && texts.len() < 16, "{} whole texts", texts.len());
    assert!(texts.iter().all(|(op, p)| *op == OP_TEXT && p.len() == 1 << 20), "whole frames only");
    assert_eq!(last.0, OP_CLOSE);
    assert_eq!(&last.1[..2], &4000u16.to_be_bytes());
}

/// A connected client and the server's connection on it, with small socket buffers (64 KiB
/// each way, whatever the host's defaults), and the server's side known to be writable.
async fn small_buffered_pair() -> (TcpStream, Connection) {
    let (client, server) = tcp_pair().await;
    socket2::SockRef::from(&server).set_send_buffer_size(64 << 10).unwrap();
    socket2::SockRef::from(&client).set_recv_buffer_size(64 << 10).unwrap();
    server.writable().await.unwrap();
    (client, socket_connection(server, Bytes::new(), &WsConfig::default(), "peer".into()))
}

/// A writer's batch goes out in place when the socket has room; when it has not, the socket
/// takes what fits, keeps the rest of a frame it took in part, and the next `send` finishes
/// that frame before the frames not taken: the peer gets every frame whole, in order.
#[tokio::test]
async fn a_write_that_does_not_wait_takes_what_fits_and_the_next_send_finishes_it() {
    let (mut client, Connection { mut sink, .. }) = small_buffered_pair().await;
    // More frames than one `writev` takes: an idle socket takes them all, in writes of
    // `MAX_IOVECS`.
    let small_text = |i: usize| format!("{{\"n\":{i}}}");
    let mut small: Vec<Frame> = (0..100).map(|i| Frame::text(small_text(i).as_bytes())).collect();
    assert_eq!(sink.try_send(&mut small), Taken { frames: 100, cut: false }, "an idle socket takes it all");
    assert!(small.is_empty(), "what is taken leaves the batch");
    // Far more than the socket buffers hold while the client does not read; each frame
    // tells its place by its filler.
    let mut batch: Vec<Frame> = (0..16u8).map(|i| Frame::text(&vec![b'a' + i; 1 << 20])).collect();
    let taken = sink.try_send(&mut batch);
    assert!(!batch.is_empty(), "a full socket takes part of the batch: {taken:?}");
    assert_eq!(batch.len() + taken.frames, 16);
    if taken.cut {
        let before = batch.len();
        assert_eq!(sink.try_send(&mut batch), Taken::default(), "nothing overtakes a cut frame");
        assert_eq!(batch.len(), before);
    }
    let reader = tokio::spawn(async move { read_frames(&mut client).await });
    sink.send_all(&mut batch).await.unwrap();
    sink.close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "bye")).await.unwrap();
    let frames = reader.await.unwrap();
    let (last, texts) = frames.split_last().expect("frames");
    assert_eq!(texts.len(), 116, "every frame arrives once");
    for (i, (_, payload)) in texts[..100].iter().enumerate() {
        assert_eq!(payload, small_text(i).as_bytes());
    }
    for (i, (op, payload)) in texts[100..].iter().enumerate() {
        assert_eq!(*op, OP_TEXT);
        assert!(
            payload.len() == 1 << 20 && payload.iter().all(|b| *b == b'a' + i as u8),
            "frame {i} whole, in place"
        );
    }
    assert_eq!(last.0, OP_CLOSE);
}

/// A frame taken in part with nothing after it: an empty send writes the rest of it (not
/// only the next frame or the close).
#[tokio::test]
async fn an_empty_send_finishes_a_frame_taken_in_part() {
    use tokio::io::AsyncReadExt;
    let (mut client, Connection { mut sink, .. }) = small_buffered_pair().await;
    let huge = Frame::text(&vec![b'h'; 4 << 20]);
    assert_eq!(sink.try_send(&mut vec![huge.clone()]), Taken { frames: 1, cut: true });
    let len = huge.wire().len();
    let reader = tokio::spawn(async move {
        let mut bytes = vec![0; len];
        client.read_exact(&mut bytes).await.map(|_| bytes)
    });
    sink.send(&[]).await.unwrap();
    let bytes = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the rest of the frame is written by the empty send")
        .unwrap()
        .unwrap();
    assert!(bytes == huge.wire()[..], "the frame arrives whole");
}

/// Every idle member holds a socket's shared part and its reading half: what only a cut
/// write, a fragmented message or the end of the stream needs is boxed when it happens.
/// (The shared part is 80 bytes in the release server, a 96-byte allocation with its
/// reference counts; with the tokio features the workspace's tests enable, its `TcpStream`
/// is a word larger.)
#[test]
fn an_idle_sockets_parts_stay_small() {
    let (shared, stream) = (std::mem::size_of::<Socket>(), std::mem::size_of::<SocketStream>());
    assert!(shared <= 88 && stream <= 80, "the socket takes {shared} B, its reading half {stream} B");
}

/// A socket on a connected pair whose client does not read yet, with small socket buffers
/// (64 KiB each way, whatever the host's defaults), and the client.
async fn unread_pair() -> (TcpStream, Arc<Socket>) {
    let (client, server) = tcp_pair().await;
    socket2::SockRef::from(&server).set_send_buffer_size(64 << 10).unwrap();
    socket2::SockRef::from(&client).set_recv_buffer_size(64 << 10).unwrap();
    (client, Arc::new(Socket::new(server)))
}

/// Eight frames of 1 MiB: far more than the socket buffers hold while the client does not
/// read, so a waiting write of them holds the writing direction until it reads.
fn backlog() -> Vec<Frame> {
    (0..8).map(|_| Frame::text(&[b'x'; 1 << 20])).collect()
}

/// Waits (a bounded while) until someone holds the writing direction of `socket`.
async fn until_held(socket: &Socket) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !socket.writing().held {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the write holds the direction");
}

/// The opcodes of `frames`, checking that every text is whole.
fn opcodes(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    assert!(frames.iter().all(|(op, p)| *op != OP_TEXT || p.len() == 1 << 20), "whole frames only");
    frames.iter().map(|(op, _)| *op).collect()
}

/// While a waiting write holds the writing direction (the socket full, the client not
/// reading), a write that does not wait takes nothing and a pong waits, listed once however
/// often it is polled; once the client reads, the pong follows the held write's frames.
#[tokio::test]
async fn a_pong_waits_for_the_write_that_holds_the_direction() {
    let (mut client, socket) = unread_pair().await;
    let mut sink = SocketSink { socket: Arc::clone(&socket) };
    let writer = {
        let mut sink = SocketSink { socket: Arc::clone(&socket) };
        tokio::spawn(async move { sink.send(&backlog()).await })
    };
    until_held(&socket).await;
    let mut more = vec![Frame::text(b"{}")];
    assert_eq!(sink.try_send(&mut more), Taken::default(), "the direction is held: nothing taken");
    // A pong's wait, polled twice by one task and once by another: two wakers listed.
    let mut pong = std::pin::pin!(socket.control(OP_PONG, b"p"));
    let (one, other) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
    for waker in [Waker::from(Arc::clone(&one)), Waker::from(Arc::clone(&one)), Waker::from(other)] {
        assert!(pong.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "the pong waits");
    }
    assert_eq!(socket.writing().waiters.len(), 2, "a waker is listed once");
    assert_eq!(socket.writing().controls, 1, "one control frame waits");
    let reader = tokio::spawn(async move { read_frames(&mut client).await });
    writer.await.unwrap().unwrap();
    assert!(one.0.load(std::sync::atomic::Ordering::Relaxed) > 0, "letting go wakes the pong");
    pong.await.unwrap();
    sink.close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "bye")).await.unwrap();
    let ops = opcodes(&reader.await.unwrap());
    assert_eq!(ops, [[OP_TEXT; 8].as_slice(), &[OP_PONG, OP_CLOSE]].concat());
    let writing = socket.writing();
    assert!(writing.waiters.is_empty() && !writing.held && writing.controls == 0);
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counted(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counted {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Once a write holds the writing direction of `socket`, a pong in a task of its own, waiting
/// for it (counted among the control frames waiting: a bounded while).
async fn pong_behind_the_holder(socket: &Arc<Socket>) -> tokio::task::JoinHandle<io::Result<()>> {
    until_held(socket).await;
    let pong = {
        let socket = Arc::clone(socket);
        tokio::spawn(async move { socket.control(OP_PONG, b"p").await })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while socket.writing().controls == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the pong waits for the direction");
    pong
}

/// A writer with a backlog sends batch after batch, without yielding in between: a pong that
/// came during the first batch goes before the second, not after the whole backlog.
#[tokio::test]
async fn a_pong_goes_before_the_writers_next_batch() {
    let (mut client, socket) = unread_pair().await;
    let writer = {
        let mut sink = SocketSink { socket: Arc::clone(&socket) };
        tokio::spawn(async move {
            sink.send(&backlog()).await?;
            sink.send(&backlog()).await?;
            sink.close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "bye")).await
        })
    };
    let pong = pong_behind_the_holder(&socket).await;
    let frames = read_frames(&mut client).await;
    writer.await.unwrap().unwrap();
    pong.await.unwrap().unwrap();
    let ops = opcodes(&frames);
    assert_eq!(ops, [[OP_TEXT; 8].as_slice(), &[OP_PONG], &[OP_TEXT; 8], &[OP_CLOSE]].concat());
}

/// The write holding the direction is cancelled part-way through a frame while a pong waits:
/// the pong is woken, finishes the cut frame first, then goes; every frame arrives whole.
#[tokio::test]
async fn a_pong_waiting_for_a_cancelled_write_finishes_its_cut_frame_first() {
    let (mut client, socket) = unread_pair().await;
    let writer = {
        let mut sink = SocketSink { socket: Arc::clone(&socket) };
        tokio::spawn(async move { sink.send(&backlog()).await })
    };
    let pong = pong_behind_the_holder(&socket).await;
    writer.abort();
    let _ = writer.await;
    let reader = tokio::spawn(async move { read_frames(&mut client).await });
    pong.await.unwrap().unwrap();
    SocketSink { socket: Arc::clone(&socket) }
        .close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "bye"))
        .await
        .unwrap();
    let ops = opcodes(&reader.await.unwrap());
    let texts = ops.iter().take_while(|&&op| op == OP_TEXT).count();
    assert!((1..8).contains(&texts), "{texts} whole texts before the cancel");
    assert_eq!(ops[texts..], [OP_PONG, OP_CLOSE]);
}

/// A write that finds the socket full leaves the next wait to the socket: the write goes
/// straight to the socket, but when the socket refuses it, it is made again through tokio,
/// whose `WouldBlock` clears its record of the socket's readiness, so a waiting write sleeps
/// until the peer reads rather than trying again at once, in a loop; and once the peer reads,
/// the wait ends. Both kinds of write: a plain `send` (one frame) and a vectored one (two).
#[tokio::test]
async fn a_write_that_finds_the_socket_full_leaves_the_next_wait_to_the_socket() {
    use tokio::io::AsyncReadExt;
    for count in [1, 2] {
        let (mut client, socket) = unread_pair().await;
        socket.tcp.writable().await.unwrap();
        let frame = Frame::text(&[b'x'; 1 << 20]);
        let mut at = (0, 0);
        let full = loop {
            match socket.write_once(count, &|_| frame.wire(), &mut at) {
                Ok(()) if at.0 == count => at = (0, 0),
                Ok(()) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock, "{count} frames");
        let mut writable = std::pin::pin!(socket.tcp.writable());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            writable.as_mut().poll(&mut cx).is_pending(),
            "a full socket is not writable ({count} frames)"
        );
        let drain = tokio::spawn(async move {
            let mut sink = vec![0; 1 << 16];
            while client.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        tokio::time::timeout(Duration::from_secs(10), writable).await.expect("writable once read").unwrap();
        drain.abort();
    }
}
