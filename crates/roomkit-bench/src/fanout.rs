//! roomkit's fan-out scenario at one room size: S members join a room and its chatroom over
//! WebSocket against the release server binary (the join storm and the RSS per member are
//! measured on the way), then the first member publishes and the other S-1 receive, in the
//! two phases of [`crate::generator`]. The server's CPU time is read around the fan-out phase,
//! and its frames per socket write (from its metrics) around each phase.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde_json::{json, Map, Value};
use tokio::{process::Child, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    bar, call, cpu_secs,
    generator::{add_fanout, hundredths, Deliveries, Latency, Publish, Receiver, Run},
    member, member_connect, metric_sum_count, pin, rss_bytes, settle, start_server_on,
    wsraw::RawMember,
    Ws,
};

/// The first member's write half: each text becomes a `send_text_message` request.
pub(crate) struct Publisher {
    pub(crate) sink: SplitSink<Ws, Message>,
    pub(crate) room: String,
}

impl Publish for Publisher {
    async fn feed(&mut self, text: &str) -> Result<(), String> {
        let frame =
            json!({"id": 0, "op": "send_text_message", "room_uuid": self.room, "text": text}).to_string();
        self.sink.feed(Message::Text(frame.into())).await.map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.sink.flush().await.map_err(|e| e.to_string())
    }
}

/// Hands the text of each chatroom message in `frame` to `receiver`; returns whether `frame`
/// was a chatroom message event (the readers count other frames, to see when the joins'
/// events have settled).
pub(crate) fn observe(frame: &[u8], receiver: &mut Receiver) -> bool {
    const EVENT: &[u8] = b"{\"event\":\"chatroom_messages_received\"";
    const TEXT: &[u8] = b"\"text\":\"";
    if !frame.starts_with(EVENT) {
        return false;
    }
    // One event may carry several messages, each with its text.
    let mut rest = frame;
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TEXT));
    while let Some(at) = FINDER.find(rest) {
        rest = &rest[at + TEXT.len()..];
        receiver.observe(rest);
    }
    true
}

/// What every reader does with a frame: its messages go to `receiver`, and any other frame
/// is counted in `frames` (to see when the joins' events have settled).
pub(crate) fn count(frame: &[u8], receiver: &mut Receiver, frames: &AtomicU64) {
    if !observe(frame, receiver) {
        frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the publisher's frames until the connection ends, counting those that are not chatroom
/// messages.
pub(crate) fn spawn_reader(
    mut stream: futures_util::stream::SplitStream<Ws>,
    mut receiver: Receiver,
    frames: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            count(text.as_bytes(), &mut receiver, &frames);
        }
    })
}

/// Reads a receiving member's frames (see [`RawMember`]) until the connection ends, counting
/// the frames other than chatroom messages and handing the text of each message to `receiver`.
pub(crate) fn spawn_raw_reader(
    mut member: RawMember,
    mut receiver: Receiver,
    frames: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move { member.for_each_text(|text| count(text, &mut receiver, &frames)).await })
}

/// The join storm: member 0, the publisher, through the WebSocket library (it sends), and
/// members 1 to `size - 1`, the receivers, through the generator's lean reader, join `room`
/// and its chatroom, member `i` on `addrs[i % addrs.len()]`, 256 at a time, each counted on
/// `pb`. Returns the publisher, the receivers in order, and how long the storm took.
pub(crate) async fn join_members(
    addrs: &[SocketAddr],
    size: usize,
    room: &str,
    pb: &ProgressBar,
) -> Result<(Ws, Vec<RawMember>, Duration), String> {
    let start = Instant::now();
    let publisher = member(addrs[0], 0, room).await.map_err(|e| format!("member 0: {e}"))?;
    pb.inc(1);
    let mut members: Vec<Option<RawMember>> = (0..size).map(|_| None).collect();
    let mut next = 1;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    while next < size || !pending.is_empty() {
        while next < size && pending.len() < 256 {
            let (i, addr) = (next, addrs[next % addrs.len()]);
            pending.push(async move { (i, RawMember::join(addr, i, room).await) });
            next += 1;
        }
        if let Some((i, result)) = pending.next().await {
            members[i] = Some(result.map_err(|e| format!("member {i}: {e}"))?);
            pb.inc(1);
        }
    }
    Ok((publisher, members.into_iter().flatten().collect(), start.elapsed()))
}

/// roomkit at one room size: a fresh server with its members joined and their readers
/// running, ready for the phases; the row of its figures so far.
pub(crate) struct Roomkit {
    child: Child,
    pid: u32,
    admin: SocketAddr,
    run: Run<Publisher>,
    readers: Vec<JoinHandle<()>>,
    row: Value,
    /// Frames and socket writes over each rate's rounds so far (from the server's metrics),
    /// `None` once a reading failed.
    latency_writes: BTreeMap<u64, Option<(f64, f64)>>,
}

impl Roomkit {
    /// Starts a server (on `server_cpu` when given), and lets `size` members join its room and
    /// chatroom: the join storm's time and the RSS per member go into the row.
    pub(crate) async fn start(bin: &Path, size: usize, server_cpu: Option<usize>) -> Result<Self, String> {
        let (child, addr, admin) = start_server_on(bin, &["--store", "memory"], server_cpu).await?;
        let pid = child.id().ok_or("server exited")?;
        let room = format!("bench-{size}");
        let deliveries = Deliveries::new();
        let frames = Arc::new(AtomicU64::new(0));

        // The first member creates the room.
        let mut creator = member_connect(addr).await?;
        call(&mut creator, 1, json!({"op": "login", "account_id": "creator", "token": "bench"})).await?;
        let create =
            json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
        call(&mut creator, 2, create).await?;
        drop(creator);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss_before = rss_bytes(pid);

        let pb = bar(size as u64, &format!("roomkit: join storm, {size} members"));
        let (publisher, members, join_storm) = join_members(&[addr], size, &room, &pb).await?;
        pb.finish_and_clear();
        let (sink, stream) = publisher.split();
        let mut readers = vec![spawn_reader(stream, deliveries.receiver(), Arc::clone(&frames))];
        for m in members {
            readers.push(spawn_raw_reader(m, deliveries.receiver(), Arc::clone(&frames)));
        }
        // Let the join events drain before measuring memory.
        settle(&frames, Duration::from_millis(500), Duration::from_secs(120)).await;
        let rss_after = rss_bytes(pid);

        let receivers = (size - 1).max(1) as u64;
        let run = Run::new(Publisher { sink, room }, &deliveries, receivers, "roomkit");
        let row = json!({
            "scenario": "fanout",
            "system": "roomkit",
            "members": size,
            "server_cpus": pin::allowed_cpus(&pid.to_string()).unwrap_or_default(),
            "join_storm_secs": join_storm.as_secs_f64(),
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_per_member_bytes": rss_after.saturating_sub(rss_before) / size as u64,
        });
        Ok(Self { child, pid, admin, run, readers, row, latency_writes: BTreeMap::new() })
    }

    /// Frames and socket writes so far, from the server's metrics.
    async fn writes(&self) -> Option<(f64, f64)> {
        metric_sum_count(self.admin, "roomkit_write_batch_frames").await
    }

    /// The fan-out phase, with the server's CPU time and frames per write over it.
    pub(crate) async fn fanout(&mut self, deliveries: u64) -> Result<(), String> {
        let (cpu_before, writes_before) = (cpu_secs(self.pid), self.writes().await);
        let fanout = self.run.fanout(deliveries).await?;
        let server_cpu = cpu_secs(self.pid) - cpu_before;
        let writes = self.writes().await;
        add_fanout(&mut self.row, &fanout, server_cpu);
        self.row["fanout_frames_per_write"] = json!(frames_per_write(writes_before.zip(writes)));
        Ok(())
    }

    /// One round of the fixed-rate phase; the frames per write over each rate's rounds go into
    /// the row's latency figures ([`finish`](Self::finish)).
    pub(crate) async fn latency(&mut self, rate: u64, secs: u64) -> Result<Latency, String> {
        let before = self.writes().await;
        let latency = self.run.latency(rate, secs, &[self.pid]).await?;
        let after = self.writes().await;
        let sum = self.latency_writes.entry(rate).or_insert(Some((0.0, 0.0)));
        *sum = sum
            .zip(before.zip(after))
            .map(|(sum, (before, after))| (sum.0 + after.0 - before.0, sum.1 + after.1 - before.1));
        Ok(latency)
    }

    /// Stops the server and its members; the row, with `latency` (the figures of each rate,
    /// keyed by rate).
    pub(crate) fn finish(mut self, mut latency: Map<String, Value>) -> Value {
        for (rate, writes) in &self.latency_writes {
            if let Some(figures) = latency.get_mut(&rate.to_string()) {
                figures["frames_per_write"] = json!(frames_per_write(writes.map(|w| ((0.0, 0.0), w))));
            }
        }
        self.row["latency"] = Value::Object(latency);
        for r in self.readers {
            r.abort();
        }
        drop(self.run);
        drop(self.child);
        self.row
    }
}

/// Frames per socket write between two readings of the server's `(sum, count)`, if both
/// readings were had.
fn frames_per_write(readings: Option<((f64, f64), (f64, f64))>) -> Option<f64> {
    let (before, after) = readings?;
    Some(hundredths((after.0 - before.0) / (after.1 - before.1).max(1.0)))
}

/// roomkit's own figures, one line per size (the latencies are in the comparison's table).
pub(crate) fn print_table(rows: &[Value]) {
    println!(
        "{:>8} {:>11} {:>13} {:>16} {:>18} {:>13} {:>6}",
        "members",
        "join storm",
        "RSS/member",
        "fan-out deliv/s",
        "deliv/server-cpu-s",
        "frames/write",
        "lost"
    );
    for r in rows {
        println!(
            "{:>8} {:>10.2}s {:>11.1}KB {:>16.0} {:>18.0} {:>13.2} {:>6}",
            r["members"].as_u64().unwrap_or(0),
            r["join_storm_secs"].as_f64().unwrap_or(0.0),
            r["rss_per_member_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["fanout_deliveries_per_sec"].as_f64().unwrap_or(0.0),
            r["fanout_deliveries_per_server_cpu_sec"].as_f64().unwrap_or(0.0),
            r["fanout_frames_per_write"].as_f64().unwrap_or(0.0),
            crate::report::lost(r),
        );
    }
    println!();
}
