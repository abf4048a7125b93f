//! The generator's shape, the same for roomkit and for the redis baseline: one publisher,
//! S-1 receivers, 100-byte texts, and two phases run one after the other on the same
//! connections.
//!
//! - **fan-out**: the publisher sends as fast as the slowest receivers allow (at most
//!   [`FANOUT_WINDOW`] messages ahead of the deliveries, checked every [`FANOUT_FLUSH_EVERY`]
//!   messages); the figure is deliveries per second of wall time;
//! - **latency**: the publisher sends at a fixed rate; after a warm-up second ([`WARMUP_SECS`]),
//!   each text carries its send time, and each receiver records send-to-receive time in the
//!   run's one histogram, made whole before the first message (see [`Deliveries`]). The phase
//!   may run several times (rounds, [`latency_summary`]).
//!
//! Every text carries a sequence number, counted across both phases. Each receiver keeps the
//! next number it expects: a text at or past it is in order (numbers skipped on the way are
//! lost), a text below it arrived out of order. A phase's losses are the deliveries it should
//! have made less the in-order ones it saw, so a message that never arrives, or arrives after
//! the phase gave up waiting, counts as lost.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::bar;

/// Bytes of every text the publisher sends.
pub(crate) const PAYLOAD_BYTES: usize = 100;

/// How many messages the fan-out publisher may run ahead of the deliveries.
const FANOUT_WINDOW: u64 = 200;

/// The fan-out publisher flushes, and checks the window, after this many messages.
const FANOUT_FLUSH_EVERY: u64 = 50;

/// Seconds the fixed-rate phase runs before its latencies count: the first messages after
/// the fan-out phase meet both systems still settling.
pub(crate) const WARMUP_SECS: u64 = 1;

/// Digits of a text's sequence number.
const SEQ_DIGITS: usize = 10;

/// Digits of a latency text's send time (nanoseconds since [`Deliveries::epoch`]).
const STAMP_DIGITS: usize = 20;

/// A fan-out text: `F`, the sequence number, then padding to [`PAYLOAD_BYTES`].
pub(crate) fn fanout_text(seq: u64) -> String {
    let head = format!("F{seq:0SEQ_DIGITS$}");
    format!("{head}{}", "x".repeat(PAYLOAD_BYTES - head.len()))
}

/// A latency text: `L`, the sequence number, the send time, then padding.
pub(crate) fn latency_text(seq: u64, sent_nanos: u64) -> String {
    let head = format!("L{seq:0SEQ_DIGITS$}{sent_nanos:0STAMP_DIGITS$}");
    format!("{head}{}", "x".repeat(PAYLOAD_BYTES - head.len()))
}

fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// Longest latency the histogram holds (60 s, in nanoseconds); a longer one counts as this.
const LATENCY_MAX_NANOS: u64 = 60_000_000_000;

/// What every receiver of one run adds to: each receiver counts in counters of its own
/// (one writer each, on a cache line of its own: thousands of receivers on several threads
/// would otherwise all write to one line), and the run sums them when it looks. Latencies go
/// to one histogram, allocated whole when the run starts: a histogram per receiver that grew
/// on its first latency made the generator allocate and clear hundreds of megabytes (a
/// thousand receivers' histograms) in the first tenth of a second of the phase, delaying the
/// first ten messages' deliveries by tens of milliseconds, for both systems alike: the p99 of
/// a three-second phase at 100 msg/s was that delay, 25–36 ms, against 5 ms over twenty
/// seconds. The generator runs on one thread, so the histogram's lock is never contended.
pub(crate) struct Deliveries {
    /// The clock latency texts are stamped against.
    pub(crate) epoch: Instant,
    receivers: Mutex<Vec<Arc<Counts>>>,
    histogram: Mutex<Histogram<u64>>,
}

/// One receiver's counts.
#[repr(align(128))]
#[derive(Default)]
struct Counts {
    /// Texts delivered, in order or not.
    delivered: AtomicU64,
    /// Texts that arrived at or past the receiver's next expected sequence number.
    in_order: AtomicU64,
    /// Texts that arrived below it.
    out_of_order: AtomicU64,
}

/// Adds one to a counter only its receiver writes (no read-modify-write instruction needed).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Deliveries {
    pub(crate) fn new() -> Arc<Self> {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_NANOS, 3).expect("valid bounds");
        Arc::new(Self {
            epoch: Instant::now(),
            receivers: Mutex::new(Vec::new()),
            histogram: Mutex::new(histogram),
        })
    }

    /// A new receiver's state, expecting sequence number 1 first.
    pub(crate) fn receiver(self: &Arc<Self>) -> Receiver {
        self.receiver_of(None)
    }

    /// Like [`receiver`](Self::receiver), its deliveries also counted in `group` (the
    /// receivers of one cluster node, say).
    pub(crate) fn receiver_in(self: &Arc<Self>, group: &Arc<AtomicU64>) -> Receiver {
        self.receiver_of(Some(Arc::clone(group)))
    }

    fn receiver_of(self: &Arc<Self>, group: Option<Arc<AtomicU64>>) -> Receiver {
        let counts = Arc::new(Counts::default());
        self.receivers.lock().expect("not poisoned").push(Arc::clone(&counts));
        Receiver { next: 1, counts, shared: Arc::clone(self), group }
    }

    /// Texts delivered so far, over every receiver.
    pub(crate) fn delivered(&self) -> u64 {
        self.sum(|c| &c.delivered)
    }

    fn sum(&self, counter: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.receivers.lock().expect("not poisoned").iter().map(|c| counter(c).load(Ordering::Relaxed)).sum()
    }

    fn reset_histogram(&self) {
        self.histogram.lock().expect("not poisoned").reset();
    }

    fn histogram(&self) -> Histogram<u64> {
        self.histogram.lock().expect("not poisoned").clone()
    }
}

/// One receiver's view of the sequence, and its counts.
pub(crate) struct Receiver {
    next: u64,
    counts: Arc<Counts>,
    shared: Arc<Deliveries>,
    /// Where this receiver's deliveries are counted besides its own counts, if anywhere.
    group: Option<Arc<AtomicU64>>,
}

impl Receiver {
    /// Counts one delivered text: `text` starts with the publisher's text (anything after it,
    /// such as the rest of a JSON event, is ignored).
    pub(crate) fn observe(&mut self, text: &[u8]) {
        let counts = &*self.counts;
        bump(&counts.delivered);
        if let Some(group) = &self.group {
            group.fetch_add(1, Ordering::Relaxed);
        }
        let Some(seq) = text.get(1..=SEQ_DIGITS).and_then(digits) else { return };
        if seq >= self.next {
            self.next = seq + 1;
            bump(&counts.in_order);
        } else {
            bump(&counts.out_of_order);
        }
        if text.first() == Some(&b'L') {
            if let Some(sent) = text.get(1 + SEQ_DIGITS..1 + SEQ_DIGITS + STAMP_DIGITS).and_then(digits) {
                let now = self.shared.epoch.elapsed().as_nanos() as u64;
                let latency = now.saturating_sub(sent).clamp(1, LATENCY_MAX_NANOS);
                self.shared.histogram.lock().expect("not poisoned").saturating_record(latency);
            }
        }
    }
}

/// The publisher's side of a system under test.
pub(crate) trait Publish {
    /// Sends one text without waiting for buffered ones to go out.
    async fn feed(&mut self, text: &str) -> Result<(), String>;
    /// Sends everything buffered.
    async fn flush(&mut self) -> Result<(), String>;
}

/// The publisher, its next sequence number, and the deliveries its receivers count.
pub(crate) struct Run<P> {
    publisher: P,
    deliveries: Arc<Deliveries>,
    /// How many receivers each text goes to.
    receivers: u64,
    /// Prefix of the progress bars' labels (`roomkit`, `redis`).
    system: String,
    next_seq: u64,
}

/// What the fan-out phase measured.
pub(crate) struct Fanout {
    pub(crate) messages: u64,
    pub(crate) delivered: u64,
    pub(crate) elapsed: Duration,
    pub(crate) lost: u64,
    pub(crate) out_of_order: u64,
}

impl Fanout {
    pub(crate) fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// The fan-out phase's fields of a result row of either system (with the server's CPU time
/// during it), added to `row`.
pub(crate) fn add_fanout(row: &mut Value, fanout: &Fanout, server_cpu: f64) {
    let phase = json!({
        "fanout_messages": fanout.messages,
        "fanout_deliveries": fanout.delivered,
        "fanout_deliveries_per_sec": fanout.deliveries_per_sec().round(),
        "fanout_lost": fanout.lost,
        "fanout_out_of_order": fanout.out_of_order,
        "fanout_server_cpu_secs": server_cpu,
        "fanout_deliveries_per_server_cpu_sec": (fanout.delivered as f64 / server_cpu.max(0.01)).round(),
    });
    if let (Some(row), Value::Object(phase)) = (row.as_object_mut(), phase) {
        row.extend::<Map<String, Value>>(phase);
    }
}

/// Rounds to two decimals.
pub(crate) fn hundredths(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The fixed-rate phase's rounds at one rate, as a result row holds them: each round's
/// percentiles and CPUs, and over all rounds the counts, the percentiles of every timed
/// delivery, and the mean CPUs.
pub(crate) fn latency_summary(rounds: &[Latency]) -> Value {
    let mut merged = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_NANOS, 3).expect("valid bounds");
    for r in rounds {
        merged.add(&r.histogram).expect("same bounds");
    }
    let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1e6;
    let sum = |f: fn(&Latency) -> u64| rounds.iter().map(f).sum::<u64>();
    let mean = |f: fn(&Latency) -> f64| rounds.iter().map(f).sum::<f64>() / rounds.len().max(1) as f64;
    json!({
        "rounds": rounds.iter().map(|r| json!({
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "p999_ms": r.p999_ms,
            "busy_server_cpus": hundredths(r.server_cpu),
            "busy_generator_cpus": hundredths(r.generator_cpu),
            "generator_waits_per_message": r.generator_waits_per_message,
        })).collect::<Vec<_>>(),
        "messages": sum(|r| r.messages),
        "warmup_messages": sum(|r| r.warmup),
        "deliveries": sum(|r| r.delivered),
        "expected_deliveries": sum(|r| r.expected),
        "lost": sum(|r| r.lost),
        "out_of_order": sum(|r| r.out_of_order),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": merged.max() as f64 / 1e6,
        "busy_server_cpus": hundredths(mean(|r| r.server_cpu)),
        "busy_generator_cpus": hundredths(mean(|r| r.generator_cpu)),
        "generator_waits_per_message": hundredths(mean(|r| r.generator_waits_per_message)),
    })
}

/// What the fixed-rate phase measured; latencies in milliseconds.
pub(crate) struct Latency {
    /// Messages sent, the warm-up's included (the delivery counts and losses cover them all;
    /// the percentiles only the timed ones).
    pub(crate) messages: u64,
    /// Of those, the warm-up's: checked, not timed.
    pub(crate) warmup: u64,
    pub(crate) delivered: u64,
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    pub(crate) out_of_order: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// CPU the servers used over the timed part, in CPUs (1.0: one CPU busy throughout).
    pub(crate) server_cpu: f64,
    /// CPU this generator used over the timed part, in CPUs: near 1.0 on its one CPU, its
    /// own backlog is part of every latency it measures.
    pub(crate) generator_cpu: f64,
    /// Times this generator went to sleep waiting for input, per timed message: about 2
    /// when it reads each message's deliveries in one stretch, behind the server; tens when
    /// it keeps catching up with the server's writes and is woken for each few (each wake-up
    /// costs both sides: the deliveries of such rounds take longer, for either system).
    pub(crate) generator_waits_per_message: f64,
    /// Every timed delivery's latency, in nanoseconds.
    pub(crate) histogram: Histogram<u64>,
}

/// CPU time used by the processes `pids` together, in seconds.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&pid| crate::cpu_secs(pid)).sum()
}

/// Times this process's threads went to sleep of their own accord (mostly waiting for
/// input): the sum of their `voluntary_ctxt_switches`.
fn voluntary_waits() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")?.trim().parse::<u64>().ok())
        })
        .sum()
}

impl<P: Publish> Run<P> {
    pub(crate) fn new(publisher: P, deliveries: &Arc<Deliveries>, receivers: u64, system: &str) -> Self {
        let deliveries = Arc::clone(deliveries);
        Self { publisher, deliveries, receivers, system: system.to_owned(), next_seq: 1 }
    }

    fn counts(&self) -> (u64, u64, u64) {
        let d = &self.deliveries;
        (d.delivered(), d.sum(|c| &c.in_order), d.sum(|c| &c.out_of_order))
    }

    /// Waits until `target` deliveries have been counted, or `limit` passes.
    async fn drain(&self, target: u64, limit: Duration, poll: Duration) {
        let deadline = Instant::now() + limit;
        while self.deliveries.delivered() < target && Instant::now() < deadline {
            tokio::time::sleep(poll).await;
        }
    }

    /// Sends enough messages for about `deliveries` deliveries (200 to 50,000 messages) as fast
    /// as the window allows, and waits for them all.
    pub(crate) async fn fanout(&mut self, deliveries: u64) -> Result<Fanout, String> {
        let receivers = self.receivers;
        let messages = (deliveries / receivers).clamp(200, 50_000);
        let pb = bar(messages, &format!("{}: fan-out to {receivers}", self.system));
        let (base, in_order, out_of_order) = self.counts();
        let start = Instant::now();
        for sent in 1..=messages {
            self.publisher.feed(&fanout_text(self.next_seq)).await?;
            self.next_seq += 1;
            if sent % FANOUT_FLUSH_EVERY == 0 || sent == messages {
                self.publisher.flush().await?;
                pb.set_position(sent);
                let stalled = Instant::now() + Duration::from_secs(30);
                while self.deliveries.delivered() - base + FANOUT_WINDOW * receivers < sent * receivers {
                    if Instant::now() > stalled {
                        return Err(format!("fan-out: deliveries stalled after {sent} messages"));
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
        self.drain(base + messages * receivers, Duration::from_secs(120), Duration::from_micros(500)).await;
        let elapsed = start.elapsed();
        pb.finish_and_clear();
        let (after, in_order_after, out_of_order_after) = self.counts();
        Ok(Fanout {
            messages,
            delivered: after - base,
            elapsed,
            lost: (messages * receivers).saturating_sub(in_order_after - in_order),
            out_of_order: out_of_order_after - out_of_order,
        })
    }

    /// Sends `rate` messages per second for [`WARMUP_SECS`] and then `secs` seconds, those of
    /// the last `secs` stamped with their send time, and waits for their deliveries; also
    /// reports the CPU used over that timed part by the servers (`servers`, process ids) and
    /// by this generator.
    pub(crate) async fn latency(&mut self, rate: u64, secs: u64, servers: &[u32]) -> Result<Latency, String> {
        self.deliveries.reset_histogram();
        let receivers = self.receivers;
        let warmup = rate * WARMUP_SECS;
        let total = rate * secs;
        let pb = bar(warmup + total, &format!("{}: {rate} msg/s to {receivers}", self.system));
        let (base, in_order, out_of_order) = self.counts();
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut timed = (Instant::now(), 0.0, 0.0);
        let mut waits = 0;
        for i in 0..warmup + total {
            tick.tick().await;
            if i == warmup {
                timed = (Instant::now(), cpu_of(servers), cpu_of(&[std::process::id()]));
                waits = voluntary_waits();
            }
            let stamp = self.deliveries.epoch.elapsed().as_nanos() as u64;
            let text =
                if i < warmup { fanout_text(self.next_seq) } else { latency_text(self.next_seq, stamp) };
            self.publisher.feed(&text).await?;
            self.publisher.flush().await?;
            self.next_seq += 1;
            if i % 100 == 0 {
                pb.set_position(i);
            }
        }
        let sent = warmup + total;
        self.drain(base + sent * receivers, Duration::from_secs(60), Duration::from_millis(5)).await;
        let wall = timed.0.elapsed().as_secs_f64().max(1e-3);
        let server_cpu = (cpu_of(servers) - timed.1) / wall;
        let generator_cpu = (cpu_of(&[std::process::id()]) - timed.2) / wall;
        let waits = voluntary_waits().saturating_sub(waits);
        pb.finish_and_clear();
        let (after, in_order_after, out_of_order_after) = self.counts();
        let merged = self.deliveries.histogram();
        let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1e6;
        Ok(Latency {
            messages: sent,
            warmup,
            delivered: after - base,
            expected: sent * receivers,
            lost: (sent * receivers).saturating_sub(in_order_after - in_order),
            out_of_order: out_of_order_after - out_of_order,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: merged.max() as f64 / 1e6,
            server_cpu,
            generator_cpu,
            generator_waits_per_message: hundredths(waits as f64 / total.max(1) as f64),
            histogram: merged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_a_hundred_bytes() {
        assert_eq!(fanout_text(7).len(), PAYLOAD_BYTES);
        assert_eq!(latency_text(u64::from(u32::MAX), u64::MAX).len(), PAYLOAD_BYTES);
    }

    #[test]
    fn a_receiver_counts_gaps_as_losses_and_late_texts_as_out_of_order() {
        let deliveries = Deliveries::new();
        let mut receiver = deliveries.receiver();
        for seq in [1, 2, 4, 3, 5] {
            receiver.observe(fanout_text(seq).as_bytes());
        }
        // 3 was skipped when 4 arrived: four in order out of five sent, one out of order.
        assert_eq!(deliveries.delivered(), 5);
        assert_eq!(deliveries.sum(|c| &c.in_order), 4);
        assert_eq!(deliveries.sum(|c| &c.out_of_order), 1);
    }

    #[test]
    fn receivers_record_the_latency_of_stamped_texts_in_the_runs_histogram() {
        let deliveries = Deliveries::new();
        let (mut one, mut two) = (deliveries.receiver(), deliveries.receiver());
        one.observe(latency_text(1, 0).as_bytes());
        one.observe(fanout_text(2).as_bytes());
        two.observe(latency_text(1, 0).as_bytes());
        assert_eq!(deliveries.histogram().len(), 2);
        deliveries.reset_histogram();
        assert_eq!(deliveries.histogram().len(), 0);
    }

    #[test]
    fn a_group_counts_its_own_receivers_deliveries() {
        let deliveries = Deliveries::new();
        let group = Arc::new(AtomicU64::new(0));
        let (mut inside, mut outside) = (deliveries.receiver_in(&group), deliveries.receiver());
        inside.observe(fanout_text(1).as_bytes());
        outside.observe(fanout_text(1).as_bytes());
        inside.observe(fanout_text(2).as_bytes());
        assert_eq!(group.load(Ordering::Relaxed), 2);
        assert_eq!(deliveries.delivered(), 3);
    }
}
