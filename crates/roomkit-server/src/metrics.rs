//! Prometheus metrics, recorded with the `metrics` crate.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `roomkit_connections` | gauge | open client connections |
//! | `roomkit_connections_total` | counter | connections accepted |
//! | `roomkit_rooms` | gauge | live rooms (set at scrape time) |
//! | `roomkit_room_members` | gauge | members of all rooms (set at scrape time) |
//! | `roomkit_chatroom_members` | gauge | members of all chatrooms (set at scrape time) |
//! | `roomkit_requests_total{op}` | counter | requests received, by operation |
//! | `roomkit_request_errors_total{code}` | counter | requests answered with an error, by code name |
//! | `roomkit_request_duration_seconds{op}` | histogram | shard time from a request's arrival to its reply being queued |
//! | `roomkit_messages_in_total` | counter | chat messages accepted |
//! | `roomkit_messages_out_total` | counter | chat message deliveries queued to recipients |
//! | `roomkit_events_out_total` | counter | event deliveries queued (messages included) |
//! | `roomkit_queue_drops_total` | counter | frames dropped because a connection's queue was full |
//! | `roomkit_slow_consumer_closes_total` | counter | connections closed as slow consumers |
//! | `roomkit_rate_limited_total` | counter | requests refused by the rate limiter |
//! | `roomkit_write_batch_frames` | histogram | frames per transport write (one flush each) |
//! | `roomkit_store_commit_seconds` | histogram | time of one store commit (one per shard wake-up with changes) |
//! | `roomkit_store_errors_total` | counter | store commits that failed (their messages were refused) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding app's); then ours only
        // renders what it saw, which is nothing, and the app's recorder gets the data.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
