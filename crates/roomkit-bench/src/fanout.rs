//! roomkit's fan-out scenario at one room size: S members join a room and its chatroom over
//! WebSocket against the release server binary (the join storm and the RSS per member are
//! measured on the way), then the first member publishes and the other S-1 receive, in the
//! two phases of [`crate::generator`]. The server's CPU time and its frames per socket write
//! (from its metrics) are read around the fan-out phase.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    bar, call, cpu_secs,
    generator::{add_phases, Deliveries, Publish, Receiver, Run},
    member, member_connect, metric_sum_count, pin, rss_bytes, settle, start_server_on,
    wsraw::RawMember,
    Options, Ws,
};

/// The first member's write half: each text becomes a `send_text_message` request.
pub(crate) struct Publisher<'a> {
    pub(crate) sink: &'a mut SplitSink<Ws, Message>,
    pub(crate) room: &'a str,
}

impl Publish for Publisher<'_> {
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
    tokio::spawn(async move {
        while let Some(text) = member.next_text().await {
            count(&text, &mut receiver, &frames);
        }
    })
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

/// Runs the scenario against a fresh server, started on `server_cpu` when given.
pub(crate) async fn run_size(
    bin: &std::path::Path,
    size: usize,
    o: &Options,
    server_cpu: Option<usize>,
) -> Result<Value, String> {
    let (child, addr, admin) = start_server_on(bin, &["--store", "memory"], server_cpu).await?;
    let pid = child.id().ok_or("server exited")?;
    let room = format!("bench-{size}");
    let deliveries = Deliveries::new();
    let frames = Arc::new(AtomicU64::new(0));

    // The first member creates the room.
    let mut creator = member_connect(addr).await?;
    call(&mut creator, 1, json!({"op": "login", "account_id": "creator", "token": "bench"})).await?;
    call(
        &mut creator,
        2,
        json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true}),
    )
    .await?;
    drop(creator);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_bytes(pid);

    let pb = bar(size as u64, &format!("roomkit: join storm, {size} members"));
    let (publisher, members, join_storm) = join_members(&[addr], size, &room, &pb).await?;
    pb.finish_and_clear();
    let (sink, stream) = publisher.split();
    let mut sinks = vec![sink];
    let mut readers = vec![spawn_reader(stream, deliveries.receiver(), Arc::clone(&frames))];
    for m in members {
        readers.push(spawn_raw_reader(m, deliveries.receiver(), Arc::clone(&frames)));
    }
    // Let the join events drain before measuring memory.
    settle(&frames, Duration::from_millis(500), Duration::from_secs(120)).await;
    let rss_after = rss_bytes(pid);
    let per_member = rss_after.saturating_sub(rss_before) / size as u64;

    let receivers = (size - 1).max(1) as u64;
    let mut publisher = Publisher { sink: &mut sinks[0], room: &room };
    let mut run = Run::new(&mut publisher, &deliveries, receivers, "roomkit");
    let cpu_before = cpu_secs(pid);
    let writes_before = metric_sum_count(admin, "roomkit_write_batch_frames").await.unwrap_or_default();
    let fanout = run.fanout(o.deliveries).await?;
    let server_cpu = cpu_secs(pid) - cpu_before;
    let writes_after = metric_sum_count(admin, "roomkit_write_batch_frames").await.unwrap_or_default();
    let frames_per_write = (writes_after.0 - writes_before.0) / (writes_after.1 - writes_before.1).max(1.0);
    let latency = run.latency(o.rate, o.rate_secs, &[pid]).await?;
    let writes_latency = metric_sum_count(admin, "roomkit_write_batch_frames").await.unwrap_or_default();
    let latency_frames_per_write =
        (writes_latency.0 - writes_after.0) / (writes_latency.1 - writes_after.1).max(1.0);
    let server_cpus = pin::allowed_cpus(&pid.to_string()).unwrap_or_default();

    drop(sinks);
    for r in readers {
        r.abort();
    }
    drop(child);
    let mut row = json!({
        "scenario": "fanout",
        "system": "roomkit",
        "members": size,
        "server_cpus": server_cpus,
        "join_storm_secs": join_storm.as_secs_f64(),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_per_member_bytes": per_member,
        "fanout_frames_per_write": (frames_per_write * 100.0).round() / 100.0,
        "latency_frames_per_write": (latency_frames_per_write * 100.0).round() / 100.0,
    });
    add_phases(&mut row, &fanout, server_cpu, &latency, o.rate);
    Ok(row)
}

/// roomkit's own figures, one line per size.
pub(crate) fn print_table(rows: &[Value]) {
    println!(
        "{:>8} {:>11} {:>13} {:>16} {:>18} {:>10} {:>10} {:>10} {:>14} {:>6}",
        "members",
        "join storm",
        "RSS/member",
        "fan-out deliv/s",
        "deliv/server-cpu-s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "delivered",
        "lost"
    );
    for r in rows {
        println!(
            "{:>8} {:>10.2}s {:>11.1}KB {:>16.0} {:>18.0} {:>10.3} {:>10.3} {:>10.3} {:>14} {:>6}",
            r["members"],
            r["join_storm_secs"].as_f64().unwrap_or(0.0),
            r["rss_per_member_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["fanout_deliveries_per_sec"].as_f64().unwrap_or(0.0),
            r["fanout_deliveries_per_server_cpu_sec"].as_f64().unwrap_or(0.0),
            r["latency_p50_ms"].as_f64().unwrap_or(0.0),
            r["latency_p99_ms"].as_f64().unwrap_or(0.0),
            r["latency_p999_ms"].as_f64().unwrap_or(0.0),
            format!("{}/{}", r["latency_deliveries"], r["latency_expected_deliveries"]),
            r["fanout_lost"].as_u64().unwrap_or(0) + r["latency_lost"].as_u64().unwrap_or(0),
        );
    }
    println!();
}
