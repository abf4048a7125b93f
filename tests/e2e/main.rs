//! The end-to-end tests: the behaviour suite over the in-memory transport (once with the
//! transport's defaults, once with one-frame channels, where every send waits for the peer
//! to read) and over WebSocket on loopback ([`websocket`]); bad input on a real socket
//! ([`wire`]); JWT logins ([`auth`]); the admin HTTP API ([`admin`]); member paging and
//! message rates on the wire ([`members_and_rates`]); connection and room caps
//! ([`quotas`]); many requests at once ([`bursts`]); keep-alive ([`keepalive`]); an SDK client failing over between two servers
//! ([`failover`]); and a 2,000-member room over WebSocket ([`large_room`]). The tests of the
//! `roomkit-server` binary itself live in its package, `roomkit-server-bin`.

mod admin;
mod auth;
mod bursts;
mod cluster;
mod commits;
mod failover;
mod history;
mod keepalive;
mod large_room;
mod members_and_rates;
mod memory_transport;
mod quotas;
mod tiny;
mod websocket;
mod wire;

roomkit_tests::behaviour_suite!(memory, roomkit_tests::MemoryHarness);
roomkit_tests::behaviour_suite!(memory_tiny_channels, crate::tiny::TinyMemoryHarness);
