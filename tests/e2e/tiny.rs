//! A harness over the in-memory transport with one-frame channels and a one-connection
//! accept backlog: the least buffering the transport allows; its shards wake each writer as
//! soon as it is queued to (`writer_wake_batch: 1`), so every case also checks that waking
//! writers part-way through a wake-up loses and reorders nothing.

use async_trait::async_trait;
use roomkit_server::{ServerConfig, ServerHandle};
use roomkit_tests::{Harness, MemoryHarness, SharedConnector, TransportOptions};
use roomkit_transport_memory::MemoryConfig;

/// [`MemoryHarness`] with `channel_capacity: 1`, `accept_backlog: 1` and `writer_wake_batch: 1`.
pub struct TinyMemoryHarness(MemoryHarness);

#[async_trait]
impl Harness for TinyMemoryHarness {
    async fn start_with(mut config: ServerConfig, _options: TransportOptions) -> Self {
        config.writer_wake_batch = 1;
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
