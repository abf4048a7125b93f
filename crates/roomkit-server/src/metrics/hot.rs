//! The families recorded for every request and every message, by handles taken once.
//!
//! Recording through the `metrics` macros looks the family up by name and labels each time:
//! a hash, a map read under a lock, and an allocation for a label. Per message that was five
//! look-ups, each touching memory the previous message had left cold. With the server's own
//! recorder installed (it stays for the life of the process), the handles are taken at the
//! first record and kept; with another recorder, or none yet, every record goes through the
//! macros as before, so an embedding app's recorder installed later still gets them.

use std::{
    sync::{atomic::Ordering, OnceLock},
    time::Duration,
};

use metrics::{Counter, Histogram};
use roomkit_protocol::ops::ALL_OPS;

use super::OURS;

/// The handles, by family; the labelled ones by operation, in the order of [`ALL_OPS`].
struct Handles {
    requests: Vec<Counter>,
    durations: Vec<Histogram>,
    messages_in: Counter,
    events_out: Counter,
    messages_out: Counter,
    commit_seconds: Histogram,
}

/// Our recorder's handles, once it is installed.
fn handles() -> Option<&'static Handles> {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    OURS.load(Ordering::Relaxed).then(|| {
        HANDLES.get_or_init(|| Handles {
            requests: ALL_OPS
                .iter()
                .map(|&op| metrics::counter!("roomkit_requests_total", "op" => op))
                .collect(),
            durations: ALL_OPS
                .iter()
                .map(|&op| metrics::histogram!("roomkit_request_duration_seconds", "op" => op))
                .collect(),
            messages_in: metrics::counter!("roomkit_messages_in_total"),
            events_out: metrics::counter!("roomkit_events_out_total"),
            messages_out: metrics::counter!("roomkit_messages_out_total"),
            commit_seconds: metrics::histogram!("roomkit_store_commit_seconds"),
        })
    })
}

/// The index of `op` in [`ALL_OPS`].
fn op_index(op: &str) -> Option<usize> {
    ALL_OPS.iter().position(|&known| known == op)
}

/// `roomkit_requests_total{op}`: a request received.
pub(crate) fn request_received(op: &'static str) {
    match handles().zip(op_index(op)) {
        Some((handles, i)) => handles.requests[i].increment(1),
        None => metrics::counter!("roomkit_requests_total", "op" => op).increment(1),
    }
}

/// `roomkit_request_duration_seconds{op}`: a request's time in its shard.
pub(crate) fn request_handled(op: &'static str, took: Duration) {
    match handles().zip(op_index(op)) {
        Some((handles, i)) => handles.durations[i].record(took),
        None => metrics::histogram!("roomkit_request_duration_seconds", "op" => op).record(took),
    }
}

/// `roomkit_messages_in_total`: a chat message acknowledged to its sender.
pub(crate) fn message_in() {
    match handles() {
        Some(handles) => handles.messages_in.increment(1),
        None => metrics::counter!("roomkit_messages_in_total").increment(1),
    }
}

/// `roomkit_events_out_total` and `roomkit_messages_out_total`: deliveries queued.
pub(crate) fn queued_out(events: u64, messages: u64) {
    match handles() {
        Some(handles) => {
            handles.events_out.increment(events);
            handles.messages_out.increment(messages);
        }
        None => {
            metrics::counter!("roomkit_events_out_total").increment(events);
            metrics::counter!("roomkit_messages_out_total").increment(messages);
        }
    }
}

/// `roomkit_store_commit_seconds`: a store commit answered.
pub(crate) fn commit_timed(took: Duration) {
    match handles() {
        Some(handles) => handles.commit_seconds.record(took),
        None => metrics::histogram!("roomkit_store_commit_seconds").record(took),
    }
}
