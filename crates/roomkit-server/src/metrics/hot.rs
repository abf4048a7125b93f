//! The families recorded for every request and every message, by handles taken once.
//!
//! Recording through the `metrics` macros looks the family up by name and labels each time:
//! a hash, a map read under a lock, and an allocation for a label. Per message that was six
//! look-ups, each touching memory the previous message had left cold. So the server's own
//! recorder hands out these families' handles once, before it is installed ([`take`]), and
//! they are kept for the life of the process. Where another recorder was installed first (an
//! embedding app's), every record goes through the macros, to that recorder.

use std::{sync::OnceLock, time::Duration};

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use roomkit_protocol::ops::ALL_OPS;

/// The handles, by family; the labelled ones by operation, in the order of [`ALL_OPS`].
pub(super) struct Handles {
    requests: Vec<Counter>,
    durations: Vec<Histogram>,
    messages_in: Counter,
    events_out: Counter,
    messages_out: Counter,
    commit_seconds: Histogram,
}

/// The handles of the server's recorder, once it is installed.
static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Takes the handles from `recorder` (the series the macros would name: same families, same
/// labels).
pub(super) fn take(recorder: &impl Recorder) -> Handles {
    const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
    let by_op =
        |name: &'static str| ALL_OPS.iter().map(move |&op| Key::from_parts(name, vec![Label::new("op", op)]));
    let plain = Key::from_static_name;
    Handles {
        requests: by_op("roomkit_requests_total").map(|key| recorder.register_counter(&key, &META)).collect(),
        durations: by_op("roomkit_request_duration_seconds")
            .map(|key| recorder.register_histogram(&key, &META))
            .collect(),
        messages_in: recorder.register_counter(&plain("roomkit_messages_in_total"), &META),
        events_out: recorder.register_counter(&plain("roomkit_events_out_total"), &META),
        messages_out: recorder.register_counter(&plain("roomkit_messages_out_total"), &META),
        commit_seconds: recorder.register_histogram(&plain("roomkit_store_commit_seconds"), &META),
    }
}

/// Keeps `handles` (of the recorder just installed) for every later record.
pub(super) fn keep(handles: Handles) {
    let _ = HANDLES.set(handles);
}

/// The server's recorder's handles, if it is the one installed.
fn handles() -> Option<&'static Handles> {
    HANDLES.get()
}

/// `roomkit_requests_total{op}`: a request received, of the operation `ALL_OPS[op]`
/// ([`Request::op_index`](roomkit_protocol::ops::Request::op_index)).
pub(crate) fn request_received(op: usize) {
    match handles() {
        Some(handles) => handles.requests[op].increment(1),
        None => metrics::counter!("roomkit_requests_total", "op" => ALL_OPS[op]).increment(1),
    }
}

/// `roomkit_request_duration_seconds{op}`: a request's time in its shard (`op` as in
/// [`request_received`]).
pub(crate) fn request_handled(op: usize, took: Duration) {
    match handles() {
        Some(handles) => handles.durations[op].record(took),
        None => metrics::histogram!("roomkit_request_duration_seconds", "op" => ALL_OPS[op]).record(took),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `series` (name and labels, as scraped), 0 if absent.
    fn scraped(series: &str) -> f64 {
        let text = crate::metrics::render();
        text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
    }

    #[test]
    fn the_kept_handles_record_into_the_series_the_scrape_shows() {
        crate::metrics::prometheus();
        assert!(handles().is_some(), "the server's recorder is the one installed in this test binary");
        let requests = r#"roomkit_requests_total{op="send_text_message"} "#;
        let (before, messages) = (scraped(requests), scraped("roomkit_messages_out_total "));
        let send = ALL_OPS.iter().position(|&op| op == "send_text_message").expect("an operation");
        request_received(send);
        queued_out(3, 2);
        // Other tests of this binary count too: at least what this one added.
        assert!(scraped(requests) >= before + 1.0);
        assert!(scraped("roomkit_messages_out_total ") >= messages + 2.0);
        // A histogram's scrape ends with its samples' count.
        let commits = concat!("roomkit_store_commit_seconds", "_count ");
        let before = scraped(commits);
        commit_timed(Duration::from_millis(3));
        assert!(scraped(commits) >= before + 1.0);
    }
}
