//! A harness over the in-memory transport with one-frame channels and a one-connection
//! accept backlog: the least buffering the transport allows.

use async_trait::async_trait;
use roomkit_server::{ServerConfig, ServerHandle};
use roomkit_tests::{Harness, MemoryHarness, SharedConnector, TransportOptions};
use roomkit_transport_memory::MemoryConfig;

/// [`MemoryHarness`] with `channel_capacity: 1` and `accept_backlog: 1`.
pub struct TinyMemoryHarness(MemoryHarness);

#[async_trait]
impl Harness for TinyMemoryHarness {
    async fn start_with(config: ServerConfig, _options: TransportOptions) -> Self {
        Self(MemoryHarness::with_memory_config(
            config,
            MemoryConfig { channel_capacity: 1, accept_backlog: 1 },
        ))
    }

    fn connector(&self) -> SharedConnector {
        self.0.connector()
    }

    fn server(&self) -> &ServerHandle {
        self.0.server()
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}
