//! The end-to-end behaviour suite over the in-memory transport: once with the transport's
//! defaults, once with one-frame channels (every send waits for the peer to read).

mod memory_transport;
mod tiny;

roomkit_tests::behaviour_suite!(memory, roomkit_tests::MemoryHarness);
roomkit_tests::behaviour_suite!(memory_tiny_channels, crate::tiny::TinyMemoryHarness);
