//! The server's configuration check and the lifetime of the tasks a running server owns.

use std::{sync::Arc, time::Duration};

use super::*;

#[test]
fn settings_that_would_break_a_rule_are_refused_by_name() {
    assert_eq!(ServerConfig::default().check(), Ok(()));
    let zero_bytes = ServerConfig { send_queue_bytes: 0, ..ServerConfig::default() };
    assert!(zero_bytes.check().expect_err("refused").contains("send_queue_bytes"));
    let mut early = ServerConfig::default();
    early.idle_timeout = early.ping_interval - Duration::from_secs(1);
    let e = early.check().expect_err("refused");
    assert!(e.contains("idle_timeout") && e.contains("ping_interval"), "{e}");
    early.ping_interval = Duration::ZERO;
    assert_eq!(early.check(), Ok(()), "no keep-alive, no idle timeout to compare");
}

/// An embedding server with an idle timeout below its ping interval would close every idle
/// connection before pinging it: it does not start.
#[tokio::test]
#[should_panic(expected = "idle_timeout")]
async fn a_server_with_an_idle_timeout_shorter_than_its_ping_interval_does_not_start() {
    let config = ServerConfig {
        ping_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let (listener, _connector) = roomkit_transport_memory::transport();
    let _server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
}

/// A handle dropped without `shutdown` leaves no periodic task behind: the metrics upkeep
/// (and the keep-alive sweep) stop with it.
#[tokio::test(start_paused = true)]
async fn a_dropped_handle_stops_the_servers_periodic_tasks() {
    let (listener, _connector) = roomkit_transport_memory::transport();
    let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator)).spawn(listener);
    let upkeeps = Arc::clone(&server.upkeeps);
    tokio::time::sleep(metrics::UPKEEP_INTERVAL * 2 + Duration::from_millis(1)).await;
    assert!(upkeeps.load(Ordering::Relaxed) >= 2, "the upkeep runs while the server does");
    drop(server);
    tokio::task::yield_now().await;
    let after_drop = upkeeps.load(Ordering::Relaxed);
    tokio::time::sleep(metrics::UPKEEP_INTERVAL * 5).await;
    assert_eq!(upkeeps.load(Ordering::Relaxed), after_drop, "no upkeep after the handle is gone");
}

/// A handle dropped without `shutdown` closes the connections it served, as a shutdown
/// does (without waiting for them): none is left open with nobody to close it, and the
/// count of live tasks comes back to zero.
#[tokio::test]
async fn a_dropped_handle_closes_its_connections_with_server_shutting_down() {
    use roomkit_core::transport::{Connector, Frame, TransportError};
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator)).spawn(listener);
    let shared = Arc::clone(&server.shared);
    let mut client = connector.connect().await.expect("connects");
    let login = r#"{"id":1,"op":"login","account_id":"alice","token":"dev"}"#;
    client.sink.send(&[Frame::text(login.as_bytes())]).await.expect("sent");
    let answer = tokio::time::timeout(Duration::from_secs(10), client.stream.recv()).await.expect("answered");
    assert!(String::from_utf8_lossy(&answer.expect("a frame")).contains("\"code\":0"), "logged in");
    drop(server);
    let closed = tokio::time::timeout(Duration::from_secs(10), client.stream.recv()).await.expect("closed");
    match closed {
        Err(TransportError::Closed(Some(reason))) => assert_eq!(reason.code, Code::SERVER_SHUTTING_DOWN),
        other => panic!("expected a close with SERVER_SHUTTING_DOWN, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), shared.live.all_ended()).await.expect("no task left");
}

/// In a connect flood past a cap, at most `MAX_REFUSALS_IN_PROGRESS` refused connections
/// are held to be answered; the others are dropped at once without an answer.
#[tokio::test(start_paused = true)]
async fn refusals_in_progress_are_bounded_and_the_rest_are_dropped_unanswered() {
    use roomkit_core::transport::{Connector, TransportError};
    let flood = MAX_REFUSALS_IN_PROGRESS + 10;
    let memory = roomkit_transport_memory::MemoryConfig { accept_backlog: flood + 8, ..Default::default() };
    let (listener, connector) = roomkit_transport_memory::transport_with(memory);
    let config = ServerConfig { max_connections: 1, ..ServerConfig::default() };
    let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
    let _admitted = connector.connect().await.expect("connects");
    let mut clients = Vec::new();
    for _ in 0..flood {
        // Kept open and silent: each answered refusal holds its socket for a while.
        clients.push(connector.connect().await.expect("connects"));
    }
    let (mut answered, mut dropped) = (0, 0);
    for client in &mut clients {
        match client.stream.recv().await {
            Err(TransportError::Closed(Some(reason))) if reason.code == Code::SERVER_BUSY => answered += 1,
            Err(TransportError::Closed(None)) => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((answered, dropped), (MAX_REFUSALS_IN_PROGRESS, 10));
    drop(clients);
    server.shutdown().await;
}

mod closing {
    use std::sync::{Mutex, OnceLock};

    use async_trait::async_trait;
    use roomkit_core::transport::{Connection, Connector, Frame, FrameStream, Listener, TransportError};
    use roomkit_protocol::UserUuid;

    use super::*;

    type Slot = Arc<OnceLock<Arc<ServerShared>>>;

    /// The server's half of a socket that notes, when dropped, how many connection tasks
    /// were still counted live.
    struct Spy {
        inner: Box<dyn FrameStream>,
        shared: Slot,
        seen: Arc<Mutex<Option<usize>>>,
    }

    #[async_trait]
    impl FrameStream for Spy {
        async fn recv(&mut self) -> Result<bytes::Bytes, TransportError> {
            self.inner.recv().await
        }
        async fn recv_or_alive(&mut self) -> Result<Option<bytes::Bytes>, TransportError> {
            self.inner.recv_or_alive().await
        }
        fn poll_readable(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            self.inner.poll_readable(cx)
        }
    }

    impl Drop for Spy {
        fn drop(&mut self) {
            if let Some(shared) = self.shared.get() {
                *self.seen.lock().unwrap() = Some(shared.live.running());
            }
        }
    }

    struct SpyListener<L> {
        inner: L,
        shared: Slot,
        seen: Arc<Mutex<Option<usize>>>,
    }

    #[async_trait]
    impl<L: Listener> Listener for SpyListener<L> {
        async fn accept(&mut self) -> Result<Connection, TransportError> {
            let mut c = self.inner.accept().await?;
            c.stream = Box::new(Spy {
                inner: c.stream,
                shared: Arc::clone(&self.shared),
                seen: Arc::clone(&self.seen),
            });
            Ok(c)
        }
        fn local_addr(&self) -> String {
            self.inner.local_addr()
        }
    }

    /// A connection task dropped while it closes (the runtime shutting down under it) lets
    /// go of its socket before it stops counting as live.
    #[test]
    fn a_task_dropped_while_closing_drops_its_socket_before_it_stops_counting() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(None));
        let slot: Slot = Arc::default();
        let _client = rt.block_on(async {
            let (listener, connector) = roomkit_transport_memory::transport();
            let listener =
                SpyListener { inner: listener, shared: Arc::clone(&slot), seen: Arc::clone(&seen) };
            let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator)).spawn(listener);
            let _ = slot.set(Arc::clone(&server.shared));
            let mut client = connector.connect().await.expect("connects");
            let login = r#"{"id":1,"op":"login","account_id":"alice","token":"dev"}"#;
            client.sink.send(&[Frame::text(login.as_bytes())]).await.expect("sent");
            let answer =
                tokio::time::timeout(Duration::from_secs(10), client.stream.recv()).await.expect("answered");
            assert!(String::from_utf8_lossy(&answer.expect("a frame")).contains("\"code\":0"));
            drop(server);
            let closed =
                tokio::time::timeout(Duration::from_secs(10), client.stream.recv()).await.expect("closed");
            assert!(matches!(closed, Err(TransportError::Closed(Some(_)))), "{closed:?}");
            client
        });
        assert_eq!(*seen.lock().unwrap(), None, "the task is still closing (lingering)");
        drop(rt);
        assert_eq!(*seen.lock().unwrap(), Some(1), "the socket went while the task still counted as live");
    }

    /// Never answers.
    struct Stuck;

    #[async_trait]
    impl Authenticator for Stuck {
        async fn authenticate(
            &self,
            _: &UserUuid,
            _: &str,
        ) -> Result<roomkit_core::Identity, crate::auth::AuthError> {
            std::future::pending().await
        }
    }

    /// A login waiting on its authenticator does not hold up shutdown: the connection gets
    /// SERVER_SHUTTING_DOWN and its task ends.
    #[tokio::test]
    async fn a_login_stuck_in_the_authenticator_is_closed_by_shutdown() {
        let (listener, connector) = roomkit_transport_memory::transport();
        let config = ServerConfig { shutdown_grace: Duration::from_secs(60), ..ServerConfig::default() };
        let server = Server::new(config, Arc::new(Stuck)).spawn(listener);
        let shared = Arc::clone(&server.shared);
        let mut client = connector.connect().await.expect("connects");
        let login = r#"{"id":1,"op":"login","account_id":"alice","token":"dev"}"#;
        client.sink.send(&[Frame::text(login.as_bytes())]).await.expect("sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(10), server.shutdown())
            .await
            .expect("shutdown does not wait 60 s");
        assert_eq!(shared.live.running(), 0);
        let closed =
            tokio::time::timeout(Duration::from_secs(10), client.stream.recv()).await.expect("closed");
        match closed {
            Err(TransportError::Closed(Some(reason))) => assert_eq!(reason.code, Code::SERVER_SHUTTING_DOWN),
            other => panic!("expected SERVER_SHUTTING_DOWN, got {other:?}"),
        }
    }
}
