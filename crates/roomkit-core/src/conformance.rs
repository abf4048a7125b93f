//! The conformance suite every transport runs.
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let (listener, connector) = my_transport();
//!     roomkit_core::conformance::run(listener, connector).await;
//! }
//! ```
//!
//! It needs no runtime of its own (only `futures`), so a transport may run it under
//! whichever executor it uses. It panics on the first failure with what was expected.

use bytes::Bytes;
use futures::future::join;
use roomkit_protocol::Code;

use crate::transport::{CloseReason, Connection, Connector, Listener, TransportError};

/// Runs every check against a fresh listener and a connector to it.
pub async fn run<L: Listener, C: Connector>(mut listener: L, connector: C) {
    frames_arrive_whole_and_in_order(&mut listener, &connector).await;
    batches_arrive_in_order(&mut listener, &connector).await;
    large_frames_arrive_whole(&mut listener, &connector).await;
    close_reason_reaches_the_peer(&mut listener, &connector).await;
    client_close_is_seen_by_the_server(&mut listener, &connector).await;
    dropped_client_is_seen_by_the_server(&mut listener, &connector).await;
    many_connections_are_independent(&mut listener, &connector).await;
}

async fn pair<L: Listener, C: Connector>(listener: &mut L, connector: &C) -> (Connection, Connection) {
    let (server, client) = join(listener.accept(), connector.connect()).await;
    (server.expect("accept"), client.expect("connect"))
}

fn frame(i: usize) -> Bytes {
    Bytes::from(format!("{{\"n\":{i}}}"))
}

async fn frames_arrive_whole_and_in_order<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let n = 500;
    let send = async {
        for i in 0..n {
            client.sink.send(&[frame(i)]).await.expect("client send");
        }
    };
    let recv = async {
        for i in 0..n {
            assert_eq!(server.stream.recv().await.expect("server recv"), frame(i), "client→server frame {i}");
        }
    };
    join(send, recv).await;
    let send = async {
        for i in 0..n {
            server.sink.send(&[frame(i)]).await.expect("server send");
        }
    };
    let recv = async {
        for i in 0..n {
            assert_eq!(client.stream.recv().await.expect("client recv"), frame(i), "server→client frame {i}");
        }
    };
    join(send, recv).await;
}

async fn batches_arrive_in_order<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let batch: Vec<Bytes> = (0..64).map(frame).collect();
    let send = async {
        for _ in 0..10 {
            server.sink.send(&batch).await.expect("batch send");
        }
        server.sink.send(&[]).await.expect("an empty batch is fine");
    };
    let recv = async {
        for round in 0..10 {
            for (i, expected) in batch.iter().enumerate() {
                let got = client.stream.recv().await.expect("recv");
                assert_eq!(&got, expected, "round {round} frame {i}");
            }
        }
    };
    join(send, recv).await;
}

async fn large_frames_arrive_whole<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let big = Bytes::from(format!("\"{}\"", "x".repeat(60 * 1024)));
    let (sent, got) = join(client.sink.send(std::slice::from_ref(&big)), server.stream.recv()).await;
    sent.expect("send large");
    assert_eq!(got.expect("recv large"), big);
}

async fn close_reason_reaches_the_peer<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let reason = CloseReason::new(Code::SLOW_CONSUMER, "send queue full");
    server.sink.send(&[frame(1)]).await.expect("send before close");
    server.sink.close(reason.clone()).await.expect("close");
    assert_eq!(client.stream.recv().await.expect("frame sent before close"), frame(1));
    match client.stream.recv().await {
        Err(TransportError::Closed(Some(got))) => assert_eq!(got, reason),
        other => panic!("expected Closed({reason}), got {other:?}"),
    }
    assert!(matches!(client.stream.recv().await, Err(TransportError::Closed(_))), "closed stays closed");
    assert!(server.sink.close(reason).await.is_ok(), "close is idempotent");
}

async fn client_close_is_seen_by_the_server<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    client.sink.close(CloseReason::new(Code::SUCCESS, "bye")).await.expect("client close");
    match server.stream.recv().await {
        Err(TransportError::Closed(_)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

async fn dropped_client_is_seen_by_the_server<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, client) = pair(listener, connector).await;
    drop(client);
    match server.stream.recv().await {
        Err(TransportError::Closed(_)) => {}
        other => panic!("expected Closed after the client dropped, got {other:?}"),
    }
}

async fn many_connections_are_independent<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let mut pairs = Vec::new();
    for _ in 0..32 {
        pairs.push(pair(listener, connector).await);
    }
    for (i, (server, _)) in pairs.iter_mut().enumerate() {
        server.sink.send(&[frame(i)]).await.expect("send");
    }
    for (i, (_, client)) in pairs.iter_mut().enumerate().rev() {
        assert_eq!(client.stream.recv().await.expect("recv"), frame(i), "connection {i} got another's frame");
    }
}
