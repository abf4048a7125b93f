//! Where the SDK connects: one server URL, any transport connector, or several servers of a
//! cluster tried in turn ([`FailoverConnector`]).
//!
//! Every session holds its servers as a [`FailoverConnector`] (one server is a list of one).
//! Connecting tries the servers in turn, from the current one, until one accepts: one
//! *round*. Reconnecting after a drop starts its rounds at the server after the one that
//! dropped the connection, so that server is tried last.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use roomkit_core::transport::{Connection, Connector, TransportError};

/// Where [`RoomKit::connect`](crate::RoomKit::connect) connects: a WebSocket URL, several
/// (a slice, array or `Vec` of URLs: the nodes of a cluster, tried in turn), a transport
/// connector, or a [`FailoverConnector`].
pub trait IntoConnector {
    /// The connector.
    fn into_connector(self) -> Arc<dyn Connector>;

    /// The servers to try, in order. By default, just [`into_connector`](Self::into_connector)
    /// (named by its connections' peer description).
    fn into_failover(self) -> FailoverConnector
    where
        Self: Sized,
    {
        let server = Server { name: None, connector: self.into_connector() };
        FailoverConnector { servers: vec![server], ..FailoverConnector::default() }
    }
}

impl IntoConnector for &str {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(roomkit_transport_ws::WsConnector::new(self))
    }

    fn into_failover(self) -> FailoverConnector {
        FailoverConnector::from_urls([self])
    }
}

impl IntoConnector for String {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(roomkit_transport_ws::WsConnector::new(self))
    }

    fn into_failover(self) -> FailoverConnector {
        FailoverConnector::from_urls([self])
    }
}

impl<S: AsRef<str>> IntoConnector for &[S] {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self.into_failover())
    }

    fn into_failover(self) -> FailoverConnector {
        FailoverConnector::from_urls(self.iter().map(AsRef::as_ref))
    }
}

impl<S: AsRef<str>, const N: usize> IntoConnector for &[S; N] {
    fn into_connector(self) -> Arc<dyn Connector> {
        self.as_slice().into_connector()
    }

    fn into_failover(self) -> FailoverConnector {
        self.as_slice().into_failover()
    }
}

impl<S: AsRef<str>, const N: usize> IntoConnector for [S; N] {
    fn into_connector(self) -> Arc<dyn Connector> {
        self.as_slice().into_connector()
    }

    fn into_failover(self) -> FailoverConnector {
        self.as_slice().into_failover()
    }
}

impl<S: AsRef<str>> IntoConnector for Vec<S> {
    fn into_connector(self) -> Arc<dyn Connector> {
        self.as_slice().into_connector()
    }

    fn into_failover(self) -> FailoverConnector {
        self.as_slice().into_failover()
    }
}

impl IntoConnector for roomkit_transport_ws::WsConnector {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self)
    }
}

impl IntoConnector for roomkit_transport_memory::MemoryConnector {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self)
    }
}

impl IntoConnector for Arc<dyn Connector> {
    fn into_connector(self) -> Arc<dyn Connector> {
        self
    }
}

impl IntoConnector for Box<dyn Connector> {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::from(self)
    }
}

impl IntoConnector for FailoverConnector {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self)
    }

    fn into_failover(self) -> FailoverConnector {
        self
    }
}

/// Several servers — the nodes of a cluster, any of which accepts any client — tried in turn.
///
/// [`RoomKit::connect`](crate::RoomKit::connect) with a list of URLs builds one; build it
/// yourself to mix transports or name the servers (in-memory ones, in tests). Connecting
/// tries the current server, and on failure the next, round robin, until one accepts or
/// every one has failed once (a *round*). After a dropped connection the SDK reconnects
/// starting at the server after the one that dropped it, so that one is tried last; a round
/// counts as one attempt of the [`ReconnectPolicy`](crate::ReconnectPolicy), whose backoff
/// comes between rounds. [`RoomKit::server_url`](crate::RoomKit::server_url) and
/// [`RoomKit::server_index`](crate::RoomKit::server_index) tell which server the client is
/// on.
///
/// ```
/// # use std::sync::Arc;
/// # use roomkit_client::{FailoverConnector, RoomKit};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), roomkit_client::Error> {
/// # let serve = |listener| {
/// #     roomkit_server::Server::new(Default::default(), Arc::new(roomkit_server::DevAuthenticator))
/// #         .spawn(listener)
/// # };
/// // Node "a" is down; node "b" is up.
/// let (down, to_a) = roomkit_transport_memory::transport();
/// drop(down);
/// let (listener, to_b) = roomkit_transport_memory::transport();
/// let server = serve(listener);
///
/// let nodes = FailoverConnector::new().with("a", to_a).with("b", to_b);
/// let kit = RoomKit::connect(nodes).await?;
/// assert_eq!((kit.server_index(), kit.server_url().as_str()), (1, "b"));
///
/// // With URLs, as a cluster's clients would (the first is tried first):
/// // RoomKit::connect(["ws://10.0.0.1:7700/v1", "ws://10.0.0.2:7700/v1"]).await?;
/// # server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct FailoverConnector {
    servers: Vec<Server>,
    /// The server connected to last (where a first connect starts).
    current: AtomicUsize,
}

struct Server {
    /// The URL or given name; `None`: the connection's peer description.
    name: Option<String>,
    connector: Arc<dyn Connector>,
}

impl FailoverConnector {
    /// No servers yet: add them with [`with`](Self::with). Connecting through an empty list
    /// fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// One WebSocket server per URL, tried in this order.
    pub fn from_urls<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Self {
        urls.into_iter().fold(Self::new(), |nodes, url| {
            let url = url.as_ref();
            nodes.with(url, roomkit_transport_ws::WsConnector::new(url))
        })
    }

    /// Adds a server, after the others: `name` (its URL, say) is what
    /// [`RoomKit::server_url`](crate::RoomKit::server_url) reports while connected to it.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, to: impl IntoConnector) -> Self {
        self.servers.push(Server { name: Some(name.into()), connector: to.into_connector() });
        self
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// One round from server `first` on: each server once, in order, wrapping around, until
    /// one accepts. Returns its index and the connection, or the last server's error.
    pub(crate) async fn connect_from(&self, first: usize) -> Result<(usize, Connection), TransportError> {
        let n = self.servers.len();
        let mut last_error = TransportError::Io("no server to connect to: the list is empty".into());
        for i in (0..n).map(|k| (first + k) % n) {
            match self.servers[i].connector.connect().await {
                Ok(connection) => {
                    self.current.store(i, Ordering::SeqCst);
                    return Ok((i, connection));
                }
                Err(e) => {
                    tracing::debug!(server = %self.name(i, None), error = %e, "connecting failed");
                    last_error = e;
                }
            }
        }
        if n > 1 {
            last_error = TransportError::Io(format!(
                "none of the {n} servers accepted a connection; the last: {last_error}"
            ));
        }
        Err(last_error)
    }

    /// A round starting at the current server (a first connect: the first server).
    pub(crate) async fn connect_first(&self) -> Result<(usize, Connection), TransportError> {
        self.connect_from(self.current.load(Ordering::SeqCst)).await
    }

    /// A round after a dropped connection: from the server after the current one, which is
    /// tried last.
    pub(crate) async fn connect_after_drop(&self) -> Result<(usize, Connection), TransportError> {
        self.connect_from(self.current.load(Ordering::SeqCst) + 1).await
    }

    /// The name of server `index`; a server without one is named by `connection`'s peer.
    pub(crate) fn name(&self, index: usize, connection: Option<&Connection>) -> String {
        match (self.servers.get(index).and_then(|s| s.name.as_ref()), connection) {
            (Some(name), _) => name.clone(),
            (None, Some(connection)) => connection.peer.clone(),
            (None, None) => format!("server {index}"),
        }
    }
}

impl std::fmt::Debug for FailoverConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = (0..self.servers.len()).map(|i| self.name(i, None)).collect();
        f.debug_struct("FailoverConnector")
            .field("servers", &names)
            .field("current", &self.current.load(Ordering::SeqCst))
            .finish()
    }
}

/// As a plain connector (nested in another list, or used directly): each `connect` is one
/// round from the server connected to last.
#[async_trait]
impl Connector for FailoverConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.connect_first().await.map(|(_, connection)| connection)
    }
}
