//! Checks of the in-memory transport itself that the behaviour suite relies on.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Wake, Waker},
};

use bytes::Bytes;
use roomkit_core::transport::{CloseReason, Connection, Connector, Listener, TransportError};
use roomkit_protocol::Code;

type Recv = Pin<Box<dyn Future<Output = Result<Bytes, TransportError>> + Send>>;

/// A waker that, when woken, polls the receive future it guards right away and keeps the
/// result: it observes exactly what a reader woken at that instant would see.
struct PollOnWake {
    recv: Mutex<Option<Recv>>,
    seen: Mutex<Option<Result<Bytes, TransportError>>>,
}

impl Wake for PollOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut slot = self.recv.lock().expect("not poisoned");
        if let Some(recv) = slot.as_mut() {
            if let Poll::Ready(result) = recv.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                *self.seen.lock().expect("not poisoned") = Some(result);
                *slot = None;
            }
        }
    }
}

/// When one side closes with a reason, the other side's reader, woken by the close, must
/// find the reason: `Closed(Some(reason))`, never `Closed(None)`.
#[tokio::test(flavor = "current_thread")]
async fn close_reason_is_set_before_the_peer_is_woken() {
    let (mut listener, connector) = roomkit_transport_memory::transport();
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, client) = (server.expect("accept"), client.expect("connect"));
    let Connection { stream: mut client_stream, .. } = client;
    let probe = Arc::new(PollOnWake {
        recv: Mutex::new(Some(Box::pin(async move { client_stream.recv().await }))),
        seen: Mutex::new(None),
    });
    let waker = Waker::from(Arc::clone(&probe));
    {
        let mut slot = probe.recv.lock().expect("not poisoned");
        let recv = slot.as_mut().expect("not polled yet");
        assert!(recv.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "nothing was sent");
    }

    let reason = CloseReason::new(Code::SLOW_CONSUMER, "bye");
    server.sink.close(reason.clone()).await.expect("close");
    let seen = probe.seen.lock().expect("not poisoned").take().expect("the close woke the reader");
    assert_eq!(seen, Err(TransportError::Closed(Some(reason))));
}

/// `recv_many` takes what is queued, in order and up to its bound, skips the transport's own
/// answers to pings, waits for the first frame like `recv`, and ends like it.
#[tokio::test(flavor = "current_thread")]
async fn recv_many_takes_a_burst_in_order_up_to_its_bound() {
    use roomkit_core::transport::Frame;
    let (mut listener, connector) = roomkit_transport_memory::transport();
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, mut client) = (server.expect("accept"), client.expect("connect"));
    let frames: Vec<Frame> = (0..5).map(|n| Frame::from(format!("{n}").as_str())).collect();
    // A ping of the client's own is answered into its stream; recv_many leaves it out.
    client.sink.send(&[Frame::ping()]).await.expect("ping");
    server.sink.send(&frames).await.expect("sent");
    let mut got = Vec::new();
    assert_eq!(client.stream.recv_many(&mut got, 3).await, Ok(3));
    assert_eq!(client.stream.recv_many(&mut got, 10).await, Ok(2));
    assert_eq!(got, [&b"0"[..], b"1", b"2", b"3", b"4"]);
    let waiting = client.stream.recv_many(&mut got, 10);
    tokio::pin!(waiting);
    assert!(futures::poll!(&mut waiting).is_pending(), "nothing more was sent");
    server.sink.close(CloseReason::new(Code::SERVER_SHUTTING_DOWN, "bye")).await.expect("close");
    assert!(matches!(waiting.await, Err(TransportError::Closed(Some(_)))));
}
