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
//! | `roomkit_request_duration_seconds{op}` | histogram | from a request being sent to its shard's queue until its wake-up's outputs are queued (the store commit included) |
//! | `roomkit_messages_in_total` | counter | chat messages acknowledged to their senders (stored; a deduplicated retry counts again) |
//! | `roomkit_messages_out_total` | counter | chat message deliveries queued to recipients |
//! | `roomkit_events_out_total` | counter | event deliveries queued (messages included) |
//! | `roomkit_queue_drops_total` | counter | frames dropped because a connection's queue was full |
//! | `roomkit_queue_shed_total{class}` | counter | frames a slow reader's queue shed past its high watermark, by class: `droppable` (low-priority messages), `conflate` (presence digests superseded by a newer one) |
//! | `roomkit_slow_consumer_closes_total` | counter | connections closed as slow consumers |
//! | `roomkit_keepalive_closes_total` | counter | connections closed because nothing arrived from the client within the idle timeout |
//! | `roomkit_rate_limited_total` | counter | requests refused by the rate limiter |
//! | `roomkit_write_batch_frames` | histogram | frames per transport write (one flush each) |
//! | `roomkit_store_commit_seconds` | histogram | time of one store commit (one per shard wake-up with changes) |
//! | `roomkit_store_group_size` | histogram | shard commits written together in one store write |
//! | `roomkit_store_write_seconds` | histogram | time of one store write (a group of shard commits), the sync included |
//! | `roomkit_store_errors_total` | counter | store commits that failed; the sends in them, and in the commits their shard had queued behind them (refused unapplied, not counted), were answered with `INTERNAL` |

//!
//! Every family is described and registered at zero when the recorder is installed (the
//! labelled ones once per known operation or error code), so a scrape of a fresh server
//! already lists them all.
//!
//! The recorder keeps each histogram sample until it is folded into the buckets: a scrape
//! does that, and so does the upkeep every running server does every [`UPKEEP_INTERVAL`]
//! ([`spawn_upkeep`]), so a server nobody scrapes does not grow by every request it times.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

pub(crate) mod hot;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use roomkit_protocol::{ops::ALL_OPS, Code, ALL_CODES};

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A histogram of counts the server tallies itself ([`Tally`]), for one too frequent to
    /// hand the recorder every sample.
    Tallied,
}

/// The label a family is split by, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    None,
    /// `op`: every operation's wire name.
    Op,
    /// `code`: every error code's name.
    Code,
    /// `class`: every shedding class of a queued frame that can be shed.
    Class,
}

/// The `class` label values of `roomkit_queue_shed_total`.
const SHED_CLASSES: &[&str] = &["droppable", "conflate"];

/// Every family the server records: name, kind, label, unit, help. Keep it in step with the
/// table above (a test checks).
const FAMILIES: &[(&str, Kind, Label, Unit, &str)] = &[
    ("roomkit_connections", Kind::Gauge, Label::None, Unit::Count, "open client connections"),
    ("roomkit_connections_total", Kind::Counter, Label::None, Unit::Count, "connections accepted"),
    ("roomkit_rooms", Kind::Gauge, Label::None, Unit::Count, "live rooms (set at scrape time)"),
    (
        "roomkit_room_members",
        Kind::Gauge,
        Label::None,
        Unit::Count,
        "members of all rooms (set at scrape time)",
    ),
    (
        "roomkit_chatroom_members",
        Kind::Gauge,
        Label::None,
        Unit::Count,
        "members of all chatrooms (set at scrape time)",
    ),
    ("roomkit_requests_total", Kind::Counter, Label::Op, Unit::Count, "requests received, by operation"),
    (
        "roomkit_request_errors_total",
        Kind::Counter,
        Label::Code,
        Unit::Count,
        "requests answered with an error, by code name",
    ),
    (
        "roomkit_request_duration_seconds",
        Kind::Histogram,
        Label::Op,
        Unit::Seconds,
        "from a request being sent to its shard's queue until its wake-up's outputs are queued (the store commit included)",
    ),
    ("roomkit_messages_in_total", Kind::Counter, Label::None, Unit::Count, "chat messages acknowledged to their senders (stored; a deduplicated retry counts again)"),
    (
        "roomkit_messages_out_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "chat message deliveries queued to recipients",
    ),
    (
        "roomkit_events_out_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "event deliveries queued (messages included)",
    ),
    (
        "roomkit_queue_drops_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "frames dropped because a connection's queue was full",
    ),
    (
        "roomkit_queue_shed_total",
        Kind::Counter,
        Label::Class,
        Unit::Count,
        "frames a slow reader's queue shed past its high watermark, by class: droppable (low-priority messages), conflate (presence digests superseded by a newer one)",
    ),
    (
        "roomkit_slow_consumer_closes_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "connections closed as slow consumers",
    ),
    (
        "roomkit_keepalive_closes_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "connections closed because nothing arrived from the client within the idle timeout",
    ),
    (
        "roomkit_rate_limited_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "requests refused by the rate limiter",
    ),
    (
        "roomkit_write_batch_frames",
        Kind::Tallied,
        Label::None,
        Unit::Count,
        "frames per transport write (one flush each)",
    ),
    (
        "roomkit_store_commit_seconds",
        Kind::Histogram,
        Label::None,
        Unit::Seconds,
        "time of one store commit (one per shard wake-up with changes)",
    ),
    (
        "roomkit_store_group_size",
        Kind::Histogram,
        Label::None,
        Unit::Count,
        "shard commits written together in one store write (group commit)",
    ),
    (
        "roomkit_store_write_seconds",
        Kind::Histogram,
        Label::None,
        Unit::Seconds,
        "time of one store write (a group of shard commits), the sync included",
    ),
    (
        "roomkit_store_errors_total",
        Kind::Counter,
        Label::None,
        Unit::Count,
        "store commits that failed; the sends in them were answered with INTERNAL",
    ),
];

/// The upper bounds of the buckets of the histograms of durations, in seconds.
const SECONDS_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0];

/// The histograms that count things (frames, commits) rather than time them...
const COUNT_HISTOGRAMS: &[&str] = &["roomkit_store_group_size"];

/// ...and their buckets' upper bounds.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Whether the recorder installed is ours ([`prometheus`]): else an embedding app's gets
/// every family through the `metrics` facade, [`WRITE_BATCH_FRAMES`] included.
static OURS: AtomicBool = AtomicBool::new(false);

/// Frames per transport write, tallied here: a write happens for every delivery at light
/// load (a million a second at 1,000 messages a second to 1,000 members), and the recorder
/// keeps each histogram sample, with its time, until its upkeep folds them (every
/// [`UPKEEP_INTERVAL`], on a runtime worker, holding up every task there meanwhile).
pub(crate) static WRITE_BATCH_FRAMES: Tally = Tally::new("roomkit_write_batch_frames");

/// A histogram of counts with the buckets [`COUNT_BUCKETS`], in fixed counters: recording is
/// two atomic additions, and memory does not grow with the samples.
pub(crate) struct Tally {
    /// The family's name (the recorder's, when it is not ours).
    name: &'static str,
    /// Samples per bucket (not cumulative); the last one is past the last bound.
    buckets: [AtomicU64; COUNT_BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl Tally {
    const fn new(name: &'static str) -> Self {
        Self { name, buckets: [const { AtomicU64::new(0) }; COUNT_BUCKETS.len() + 1], sum: AtomicU64::new(0) }
    }

    /// Counts one sample of `n` (hands it to the installed recorder when that is not ours).
    pub(crate) fn record(&self, n: usize) {
        if OURS.load(Ordering::Relaxed) {
            self.tally(n as u64);
        } else {
            metrics::histogram!(self.name).record(n as f64);
        }
    }

    fn tally(&self, n: u64) {
        self.buckets[bucket_of(n)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// Like [`record`](Self::record), but into `gathered`, to be added later
    /// ([`add`](Self::add)) when the recorder is ours.
    pub(crate) fn gather(&self, gathered: &mut Gathered, n: usize) {
        if OURS.load(Ordering::Relaxed) {
            gathered.buckets[bucket_of(n as u64)] += 1;
            gathered.sum += n as u64;
        } else {
            metrics::histogram!(self.name).record(n as f64);
        }
    }

    /// Adds what `gathered` holds, and empties it.
    pub(crate) fn add(&self, gathered: &mut Gathered) {
        for (bucket, count) in self.buckets.iter().zip(&mut gathered.buckets) {
            if *count > 0 {
                bucket.fetch_add(std::mem::take(count), Ordering::Relaxed);
            }
        }
        if gathered.sum > 0 {
            self.sum.fetch_add(std::mem::take(&mut gathered.sum), Ordering::Relaxed);
        }
    }

    /// Appends the family `name` in Prometheus' text format, as the recorder renders its own
    /// histograms: cumulative buckets, then the sum and the count.
    fn render_into(&self, out: &mut String, help: &str) {
        use std::fmt::Write;
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            count += bucket.load(Ordering::Relaxed);
            match COUNT_BUCKETS.get(i) {
                Some(bound) => _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}"),
                None => _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}"),
            }
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {count}\n", self.sum.load(Ordering::Relaxed));
    }
}

/// The bucket of [`COUNT_BUCKETS`] a sample of `n` falls in (the last: past the last bound).
fn bucket_of(n: u64) -> usize {
    COUNT_BUCKETS.iter().position(|&bound| n as f64 <= bound).unwrap_or(COUNT_BUCKETS.len())
}

/// Samples of a [`Tally`] gathered over a run of records (a write pool's stretch of
/// writes between two yields) and added to it at once: an atomic addition a stretch for each
/// bucket used and one for the sum, rather than two a write.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    buckets: [u64; COUNT_BUCKETS.len() + 1],
    sum: u64,
}

/// The scrape: the recorder's families, then those the server tallies itself.
pub fn render() -> String {
    let mut text = prometheus().render();
    for tally in [&WRITE_BATCH_FRAMES] {
        if let Some(&(.., help)) = FAMILIES.iter().find(|f| f.0 == tally.name && f.1 == Kind::Tallied) {
            tally.render_into(&mut text, help);
        }
    }
    text
}

/// The process-wide Prometheus recorder, installed on first use with every family
/// registered at zero.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder =
            PrometheusBuilder::new().set_buckets(SECONDS_BUCKETS).expect("static buckets are valid");
        for name in COUNT_HISTOGRAMS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).into()), COUNT_BUCKETS)
                .expect("static buckets are valid");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let hot = hot::take(&recorder);
        // Another recorder may already be installed (an embedding app's); then ours only
        // renders what it saw, which is nothing, and the app's recorder gets the data.
        let ours = metrics::set_global_recorder(recorder).is_ok();
        if ours {
            hot::keep(hot);
        }
        OURS.store(ours, Ordering::Relaxed);
        register_at_zero();
        handle
    })
}

/// How often a running server folds the recorder's pending samples into its histograms.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds the histogram samples recorded since the last scrape or upkeep into their buckets
/// (the recorder keeps every sample until then), and drops what it no longer needs.
pub fn run_upkeep() {
    prometheus().run_upkeep();
}

/// Runs [`run_upkeep`] every [`UPKEEP_INTERVAL`] on the current tokio runtime until the
/// returned task is aborted. [`Server::spawn`](crate::Server::spawn) starts one.
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    spawn_counted_upkeep(Arc::default())
}

/// [`spawn_upkeep`], counting its upkeeps in `count` (one server's, observable apart from
/// any other server's in the process).
pub(crate) fn spawn_counted_upkeep(count: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            run_upkeep();
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Describes every family and registers each of its series, so that it is scraped at zero
/// before its first event.
fn register_at_zero() {
    for &(name, kind, label, unit, help) in FAMILIES {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
            // Not the recorder's: rendered by `render`.
            Kind::Tallied => continue,
        }
        let values: Vec<&'static str> = match label {
            Label::None => vec![""],
            Label::Op => ALL_OPS.to_vec(),
            Label::Code => ALL_CODES.iter().filter(|c| c.code != Code::SUCCESS).map(|c| c.name).collect(),
            Label::Class => SHED_CLASSES.to_vec(),
        };
        let key = match label {
            Label::None => "",
            Label::Op => "op",
            Label::Code => "code",
            Label::Class => "class",
        };
        for value in values {
            let labels: Vec<(&'static str, &'static str)> =
                if key.is_empty() { Vec::new() } else { vec![(key, value)] };
            match kind {
                Kind::Counter => metrics::counter!(name, &labels).absolute(0),
                Kind::Gauge => metrics::gauge!(name, &labels).set(0.0),
                // Registered, not recorded: an empty histogram.
                Kind::Histogram => drop(metrics::histogram!(name, &labels)),
                Kind::Tallied => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The family names of the table in this module's documentation.
    fn documented() -> Vec<String> {
        include_str!("metrics.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | `"))
            .filter_map(|rest| rest.split(['`', '{']).next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_documented_family_is_registered_and_scraped_from_the_start() {
        let documented = documented();
        let registered: Vec<String> = FAMILIES.iter().map(|f| f.0.to_string()).collect();
        assert_eq!(documented, registered, "the doc table and FAMILIES must list the same families");
        let text = render();
        for name in &documented {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from a fresh scrape:\n{text}");
        }
        assert!(text.contains("roomkit_requests_total{op=\"send_text_message\"} 0"), "{text}");
        assert!(text.contains("roomkit_request_errors_total{code=\"RATE_LIMITED\"} 0"), "{text}");
        assert!(text.contains("roomkit_queue_shed_total{class=\"droppable\"} 0"), "{text}");
        assert!(text.contains("roomkit_queue_shed_total{class=\"conflate\"} 0"), "{text}");
    }

    /// Counts have buckets of counts: with the buckets of durations (up to 1), every batch of
    /// frames and every group of commits fell in `+Inf`.
    #[test]
    fn histograms_of_counts_have_buckets_of_counts_and_durations_of_seconds() {
        let handle = prometheus();
        metrics::histogram!("roomkit_store_group_size").record(3.0);
        let text = handle.render();
        assert!(text.contains("roomkit_store_group_size_bucket{le=\"64\"}"), "{text}");
        assert!(!text.contains("roomkit_store_group_size_bucket{le=\"0.001\"}"), "{text}");
        assert!(text.contains("roomkit_store_write_seconds_bucket{le=\"0.001\"}"), "{text}");
    }

    /// Samples gathered over a stretch and added at once make the same histogram as samples
    /// tallied one by one; adding empties the gathering, so adding again counts nothing twice.
    #[test]
    fn gathered_samples_add_up_to_the_same_tally() {
        prometheus();
        assert!(OURS.load(Ordering::Relaxed), "the recorder installed is ours");
        let (one_by_one, at_once) = (Tally::new("t"), Tally::new("t"));
        let mut gathered = Gathered::default();
        for n in [1, 1, 3, 200, 5000] {
            one_by_one.tally(n);
            at_once.gather(&mut gathered, n as usize);
        }
        at_once.add(&mut gathered);
        at_once.add(&mut gathered);
        let render = |tally: &Tally| {
            let mut text = String::new();
            tally.render_into(&mut text, "help");
            text
        };
        assert_eq!(render(&at_once), render(&one_by_one));
        assert!(render(&at_once).contains("t_count 5\n"), "{}", render(&at_once));
    }

    /// The tally renders as a histogram: cumulative buckets, the sum and the count.
    #[test]
    fn a_tally_renders_cumulative_buckets_its_sum_and_its_count() {
        let tally = Tally::new("t");
        for n in [1, 3, 4, 40, 5000] {
            tally.tally(n);
        }
        let mut text = String::new();
        tally.render_into(&mut text, "help");
        let value = |line: &str| -> u64 {
            text.lines().find_map(|l| l.strip_prefix(line)).and_then(|v| v.trim().parse().ok()).expect(line)
        };
        assert!(text.starts_with("# HELP t help\n# TYPE t histogram\n"), "{text}");
        assert_eq!(value("t_bucket{le=\"1\"}"), 1);
        assert_eq!(value("t_bucket{le=\"2\"}"), 1);
        assert_eq!(value("t_bucket{le=\"4\"}"), 3);
        assert_eq!(value("t_bucket{le=\"64\"}"), 4);
        assert_eq!(value("t_bucket{le=\"4096\"}"), 4);
        assert_eq!(value("t_bucket{le=\"+Inf\"}"), 5);
        assert_eq!(value("t_sum"), 5048);
        assert_eq!(value("t_count"), 5);
    }

    /// A running server folds its histogram samples on a timer, scraped or not: without
    /// that, every timed request stays in memory until the next scrape. The count is this
    /// server's own: another server in the process cannot make it pass.
    #[tokio::test(start_paused = true)]
    async fn a_running_server_runs_the_upkeep_without_a_scrape() {
        let (listener, connector) = roomkit_transport_memory::transport();
        let server =
            crate::Server::new(crate::ServerConfig::default(), std::sync::Arc::new(crate::DevAuthenticator))
                .spawn(listener);
        let before = server.upkeeps.load(Ordering::Relaxed);
        tokio::time::sleep(UPKEEP_INTERVAL * 3 + Duration::from_millis(1)).await;
        let ran = server.upkeeps.load(Ordering::Relaxed) - before;
        assert!(ran >= 3, "{ran} upkeeps in three intervals");
        drop(connector);
        server.shutdown().await;
    }
}
