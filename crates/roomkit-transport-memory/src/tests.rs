//! The in-memory transport's own tests, and the conformance suite run on it.

use super::*;

/// The conformance suite with the default buffers.
mod default_buffers {
    use super::{transport, MemoryConnector, MemoryListener};

    async fn setup() -> (MemoryListener, MemoryConnector) {
        transport()
    }
    roomkit_core::transport_conformance_tests!(
        #[tokio::test(flavor = "current_thread")]
        setup
    );
}

/// The conformance suite with one-frame channels and a backlog of one.
mod tiny_buffers {
    use super::{transport_with, MemoryConfig, MemoryConnector, MemoryListener};

    async fn setup() -> (MemoryListener, MemoryConnector) {
        transport_with(MemoryConfig { channel_capacity: 1, accept_backlog: 1 })
    }
    roomkit_core::transport_conformance_tests!(
        #[tokio::test(flavor = "current_thread")]
        setup
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_channel_makes_send_wait() {
    let (mut listener, connector) = transport_with(MemoryConfig { channel_capacity: 2, accept_backlog: 1 });
    let (server, _client) = tokio::join!(listener.accept(), connector.connect());
    let mut server = server.unwrap();
    let f = Frame::from("{}");
    server.sink.send(&[f.clone(), f.clone()]).await.unwrap();
    let third = server.sink.send(std::slice::from_ref(&f));
    tokio::pin!(third);
    assert!(futures_poll_once(third.as_mut()).await.is_none(), "third frame must wait");
}

#[tokio::test(flavor = "current_thread")]
async fn a_ping_is_answered_while_the_peer_is_there_and_not_after() {
    let (mut listener, connector) = transport();
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.sink.send(&["{\"a\":1}".into()]).await.unwrap();
    server.sink.send(&[Frame::ping()]).await.unwrap();
    // What the peer sent first comes first; then the answer.
    assert_eq!(server.stream.recv_or_alive().await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(server.stream.recv_or_alive().await.unwrap(), None);
    // `recv` passes over answers.
    server.sink.send(&[Frame::ping()]).await.unwrap();
    client.sink.send(&["{}".into()]).await.unwrap();
    assert_eq!(&server.stream.recv().await.unwrap()[..], b"{}");
    // A peer whose end is gone answers nothing: its close comes instead.
    drop(client.stream);
    server.sink.send(&[Frame::ping()]).await.unwrap();
    drop(client.sink);
    assert!(matches!(server.stream.recv_or_alive().await, Err(TransportError::Closed(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn severing_drops_connections_abruptly_in_both_directions() {
    let (mut listener, connector) = transport();
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    let (_other_server, _other_client) = tokio::join!(listener.accept(), connector.connect());
    assert_eq!(connector.sever_all(), 2);
    assert_eq!(connector.sever_all(), 0, "already severed");
    assert_eq!(server.stream.recv().await, Err(TransportError::Closed(None)));
    assert_eq!(client.stream.recv().await, Err(TransportError::Closed(None)));
    assert!(client.sink.send(&["{}".into()]).await.is_err());
    // New connections are unaffected.
    let (server, client) = tokio::join!(listener.accept(), connector.connect());
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.sink.send(&["{}".into()]).await.unwrap();
    assert_eq!(&server.stream.recv().await.unwrap()[..], b"{}");
}

async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
    let mut f = f;
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}
