//! roomkit's load generator, run by `cargo xtask bench`.
//!
//! For each room size S it starts the release `roomkit-server` binary on loopback, then:
//! - **join storm**: S WebSocket members connect, log in, join the room and its chatroom
//!   (256 at a time); reports the wall time;
//! - **memory**: the server's RSS before and after the S members joined, divided by S;
//! - **fan-out**: one member broadcasts 100-byte texts as fast as the slowest readers allow;
//!   reports deliveries per second to the other S-1 members;
//! - **latency**: one member broadcasts at a fixed rate (default 1000 msg/s) for a few seconds;
//!   reports p50/p99/p999 of send-to-receive time over every delivery (hdrhistogram).
//!
//! - **join storm** (`join.rs`): at each of `--join-sizes` (1k, 5k, 10k, 50k), members connect,
//!   log in, join one room and its chatroom; reports total time, time per 1,000 joins, server
//!   bytes per join, RSS and the room's counts. Sizes past the file limit run in process,
//!   partly over the in-memory transport (see `join.rs`).
//!
//! - **durable send**: 1 and 16 members each send texts one at a time, waiting for each
//!   acknowledgement, into one chatroom; with the redb store (fsync per commit) and with the
//!   memory store; reports acknowledged messages per second and ack latency p50/p99.
//!
//! Results go to stdout as a table and, one JSON object per line, to
//! `target/bench/results.jsonl`.
//!
//! ```text
//! cargo xtask bench [--sizes 100,1000,5000] [--rate 1000] [--rate-secs 3] [--deliveries 4000000]
//!                   [--join-sizes 1000,5000,10000,50000] [--join-concurrency 256] [--join-addresses 16]
//!                   [--no-fanout] [--no-join] [--no-durable]
//! ```

use std::{
    io::Write,
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::{net::TcpStream, process::Child, task::JoinHandle};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

mod durable;
mod join;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Options {
    skip_durable: bool,
    skip_fanout: bool,
    join_sizes: Vec<usize>,
    join_concurrency: usize,
    join_addresses: usize,
    durable_messages: usize,
    sizes: Vec<usize>,
    rate: u64,
    rate_secs: u64,
    deliveries: u64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        skip_durable: false,
        skip_fanout: false,
        join_sizes: vec![1000, 5000, 10_000, 50_000],
        join_concurrency: 256,
        join_addresses: 16,
        durable_messages: 4000,
        sizes: vec![100, 1000, 5000],
        rate: 1000,
        rate_secs: 3,
        deliveries: 4_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sizes" => o.sizes = sizes(&value()?)?,
            "--join-sizes" => o.join_sizes = sizes(&value()?)?,
            "--join-concurrency" => {
                o.join_concurrency = value()?.parse().map_err(|_| "bad --join-concurrency")?
            }
            "--join-addresses" => o.join_addresses = value()?.parse().map_err(|_| "bad --join-addresses")?,
            "--no-join" => o.join_sizes.clear(),
            "--no-fanout" => o.skip_fanout = true,
            "--rate" => o.rate = value()?.parse().map_err(|_| "bad --rate")?,
            "--rate-secs" => o.rate_secs = value()?.parse().map_err(|_| "bad --rate-secs")?,
            "--deliveries" => o.deliveries = value()?.parse().map_err(|_| "bad --deliveries")?,
            "--durable-messages" => {
                o.durable_messages = value()?.parse().map_err(|_| "bad --durable-messages")?
            }
            "--no-durable" => o.skip_durable = true,
            "-h" | "--help" => {
                println!("cargo xtask bench [--sizes 100,1000,5000] [--rate 1000] [--rate-secs 3] [--deliveries 4000000] [--join-sizes 1000,5000,10000,50000] [--join-concurrency 256] [--join-addresses 16] [--no-fanout] [--no-join] [--no-durable]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(o)
}

fn sizes(list: &str) -> Result<Vec<usize>, String> {
    list.split(',').map(|s| s.trim().parse().map_err(|_| format!("bad size `{s}`"))).collect()
}

#[tokio::main]
async fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("roomkit-bench: {e}");
            std::process::exit(2);
        }
    };
    let server_bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("roomkit-server")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!("roomkit-bench: build the server first: cargo build --release -p roomkit-server-bin");
            std::process::exit(2);
        });
    println!(
        "roomkit bench: server {}, {} CPUs\n",
        server_bin.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut rows = Vec::new();
    if !options.join_sizes.is_empty() {
        rows.extend(join_storms(&server_bin, &options).await);
    }
    let fanout_start = rows.len();
    let fanout_sizes: &[usize] = if options.skip_fanout { &[] } else { &options.sizes };
    for &size in fanout_sizes {
        match run_size(&server_bin, size, &options).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("size {size}: {e}");
                std::process::exit(1);
            }
        }
    }
    if !options.skip_fanout {
        print_table(&rows[fanout_start..]);
    }
    if !options.skip_durable {
        let mut durable = Vec::new();
        for store in ["memory", "redb"] {
            for senders in [1usize, 16] {
                match durable::durable_send(&server_bin, store, senders, options.durable_messages).await {
                    Ok(row) => durable.push(row),
                    Err(e) => {
                        eprintln!("durable send ({store}, {senders} senders): {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        println!("{:>8} {:>8} {:>12} {:>12} {:>12}", "store", "senders", "acks/s", "p50 ms", "p99 ms");
        for r in &durable {
            println!(
                "{:>8} {:>8} {:>12.0} {:>12.3} {:>12.3}",
                r["store"].as_str().unwrap_or(""),
                r["senders"],
                r["acks_per_sec"].as_f64().unwrap_or(0.0),
                r["ack_p50_ms"].as_f64().unwrap_or(0.0),
                r["ack_p99_ms"].as_f64().unwrap_or(0.0),
            );
        }
        println!();
        rows.extend(durable);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("results.jsonl");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("results file");
    for row in &rows {
        writeln!(file, "{row}").expect("write results");
        println!("{row}");
    }
    println!("\nappended to {}", path.display());
}

/// The join storms, one per size: against the server binary while the file limit allows a
/// socket per member, in process beyond.
async fn join_storms(server_bin: &std::path::Path, o: &Options) -> Vec<Value> {
    let limit = join::raise_file_limit();
    println!("open file limit: {limit}");
    let mut rows = Vec::new();
    for &size in &o.join_sizes {
        let result = if size <= join::socket_budget(limit, false) {
            join::against_process(server_bin, size, o.join_concurrency, o.join_addresses).await
        } else {
            let sockets = join::socket_budget(limit, true);
            println!("{size} members: more than the file limit allows; {sockets} over WebSocket, the rest in memory");
            join::in_process(size, sockets, o.join_concurrency, o.join_addresses).await
        };
        match result {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("join storm of {size}: {e}");
                std::process::exit(1);
            }
        }
    }
    join::print_table(&rows);
    rows
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `(sum, count)` of a Prometheus histogram on the server's admin port.
async fn metric_sum_count(admin: SocketAddr, name: &str) -> Option<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(admin).await.ok()?;
    tcp.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.ok()?;
    let value = |suffix: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")?))
}

async fn start_server(bin: &std::path::Path) -> Result<(Child, SocketAddr, SocketAddr), String> {
    start_server_with(bin, &["--store", "memory"]).await
}

async fn start_server_with(
    bin: &std::path::Path,
    extra: &[&str],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let (port, admin) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid");
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("valid");
    let child = tokio::process::Command::new(bin)
        .args([
            "--dev",
            "--log",
            "warn",
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--rate-limit-per-second", "100000000", "--rate-limit-burst", "100000000"])
        .args(["--send-queue-frames", "65536"])
        // The fan-out and durable-send scenarios send as fast as they can on purpose: no
        // per-member or per-chatroom message rates.
        .args(["--member-message-rate", "0", "--chatroom-message-rate", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok((child, addr, admin_addr));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the server did not start listening".into())
}

/// CPU time (user + system) the process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Sends a request and waits for its response, skipping events.
async fn call(ws: &mut Ws, id: u64, mut request: Value) -> Result<Value, String> {
    request["id"] = json!(id);
    ws.send(Message::Text(request.to_string().into())).await.map_err(|e| e.to_string())?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg.map_err(|e| e.to_string())? else { continue };
        if !text.contains("\"code\"") {
            continue;
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["id"] == json!(id) {
            return if v["code"] == json!(0) { Ok(v) } else { Err(format!("{request} failed: {v}")) };
        }
    }
    Err("connection closed".into())
}

async fn member(addr: SocketAddr, i: usize, room: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}/v1");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(client_config()), true)
        .await
        .map_err(|e| e.to_string())?;
    let account = format!("u{i}");
    call(&mut ws, 1, json!({"op": "login", "account_id": account, "token": "bench"})).await?;
    call(&mut ws, 2, json!({"op": "join_room", "room_uuid": room, "user_name": account})).await?;
    call(&mut ws, 3, json!({"op": "join_chatroom", "room_uuid": room})).await?;
    Ok(ws)
}

struct Counters {
    delivered: AtomicU64,
    frames: AtomicU64,
    epoch: Instant,
}

/// Reads a member's frames until the connection ends, counting chatroom messages and
/// recording the latency of `L<nanos>` texts.
fn spawn_reader(
    mut stream: futures_util::stream::SplitStream<Ws>,
    counters: Arc<Counters>,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            counters.frames.fetch_add(1, Ordering::Relaxed);
            let text = text.as_str();
            if !text.starts_with("{\"event\":\"chatroom_messages_received\"") {
                continue;
            }
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(at) = text.find("\"text\":\"L") {
                let digits: String = text[at + 9..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(sent) = digits.parse::<u64>() {
                    let now = counters.epoch.elapsed().as_nanos() as u64;
                    let _ = histogram.lock().expect("not poisoned").record(now.saturating_sub(sent).max(1));
                }
            }
        }
    })
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Waits until `counter` stops moving for `quiet`, or `limit` passes.
async fn settle(counter: &AtomicU64, quiet: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

async fn run_size(bin: &std::path::Path, size: usize, o: &Options) -> Result<Value, String> {
    let (child, addr, admin) = start_server(bin).await?;
    let pid = child.id().ok_or("server exited")?;
    let room = format!("bench-{size}");
    let counters =
        Arc::new(Counters { delivered: AtomicU64::new(0), frames: AtomicU64::new(0), epoch: Instant::now() });

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

    // Join storm.
    let pb = bar(size as u64, &format!("join storm, {size} members"));
    let start = Instant::now();
    let mut members: Vec<Option<Ws>> = (0..size).map(|_| None).collect();
    let mut next = 0;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let histograms: Vec<Arc<Mutex<Histogram<u64>>>> = Vec::new();
    let mut histograms = histograms;
    let mut readers = Vec::new();
    let mut sinks = Vec::new();
    while next < size || !pending.is_empty() {
        while next < size && pending.len() < 256 {
            let (i, room) = (next, room.clone());
            pending.push(async move { (i, member(addr, i, &room).await) });
            next += 1;
        }
        if let Some((i, result)) = pending.next().await {
            members[i] = Some(result.map_err(|e| format!("member {i}: {e}"))?);
            pb.inc(1);
        }
    }
    let join_storm = start.elapsed();
    pb.finish_and_clear();
    for ws in members.into_iter().flatten() {
        let (sink, stream) = ws.split();
        let h = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
        readers.push(spawn_reader(stream, Arc::clone(&counters), Arc::clone(&h)));
        histograms.push(h);
        sinks.push(sink);
    }
    // Let the join events drain before measuring memory.
    settle(&counters.frames, Duration::from_millis(500), Duration::from_secs(120)).await;
    let rss_after = rss_bytes(pid);
    let per_member = rss_after.saturating_sub(rss_before) / size as u64;

    // Fan-out at full speed: windowed on the receivers' progress.
    let receivers = (size - 1).max(1) as u64;
    let messages = (o.deliveries / receivers).clamp(200, 50_000);
    let text = format!("F{}", "x".repeat(99));
    let frame = json!({"id": 0, "op": "send_text_message", "room_uuid": room, "text": text}).to_string();
    let pb = bar(messages, &format!("fan-out to {}", size - 1));
    let base = counters.delivered.load(Ordering::Relaxed);
    let sender = &mut sinks[0];
    let cpu_before = cpu_secs(pid);
    let writes_before = metric_sum_count(admin, "roomkit_write_batch_frames").await.unwrap_or_default();
    let start = Instant::now();
    let window: u64 = 200;
    for sent in 1..=messages {
        sender.feed(Message::Text(frame.clone().into())).await.map_err(|e| e.to_string())?;
        if sent % 50 == 0 || sent == messages {
            sender.flush().await.map_err(|e| e.to_string())?;
            pb.set_position(sent);
            let stalled = Instant::now() + Duration::from_secs(30);
            while counters.delivered.load(Ordering::Relaxed) - base + window * receivers < sent * receivers {
                if Instant::now() > stalled {
                    return Err(format!("fan-out: deliveries stalled after {sent} messages"));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
    let target = base + messages * receivers;
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.delivered.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = start.elapsed();
    let server_cpu = cpu_secs(pid) - cpu_before;
    pb.finish_and_clear();
    let delivered = counters.delivered.load(Ordering::Relaxed) - base;
    let deliveries_per_sec = delivered as f64 / elapsed.as_secs_f64();
    let deliveries_per_server_cpu_sec = delivered as f64 / server_cpu.max(0.01);
    let writes_after = metric_sum_count(admin, "roomkit_write_batch_frames").await.unwrap_or_default();
    let frames_per_write = (writes_after.0 - writes_before.0) / (writes_after.1 - writes_before.1).max(1.0);

    // Latency at a fixed rate.
    for h in &histograms {
        h.lock().expect("not poisoned").reset();
    }
    let total = o.rate * o.rate_secs;
    let pb = bar(total, &format!("{} msg/s to {}", o.rate, size - 1));
    let base = counters.delivered.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / o.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sender = &mut sinks[0];
    for i in 0..total {
        tick.tick().await;
        let stamp = counters.epoch.elapsed().as_nanos() as u64;
        let text = format!("L{stamp:020}{}", "x".repeat(79));
        let frame = json!({"id": 0, "op": "send_text_message", "room_uuid": room, "text": text}).to_string();
        sender.send(Message::Text(frame.into())).await.map_err(|e| e.to_string())?;
        if i % 100 == 0 {
            pb.set_position(i);
        }
    }
    let target = base + total * receivers;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.delivered.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pb.finish_and_clear();
    let latency_delivered = counters.delivered.load(Ordering::Relaxed) - base;
    let mut merged = Histogram::<u64>::new(3).expect("histogram");
    for h in &histograms {
        merged.add(&*h.lock().expect("not poisoned")).expect("same bounds");
    }
    let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1e6;

    drop(sinks);
    for r in readers {
        r.abort();
    }
    drop(child);
    Ok(json!({
        "members": size,
        "join_storm_secs": join_storm.as_secs_f64(),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_per_member_bytes": per_member,
        "fanout_messages": messages,
        "fanout_deliveries": delivered,
        "fanout_deliveries_per_sec": deliveries_per_sec.round(),
        "fanout_server_cpu_secs": server_cpu,
        "fanout_frames_per_write": (frames_per_write * 100.0).round() / 100.0,
        "fanout_deliveries_per_server_cpu_sec": deliveries_per_server_cpu_sec.round(),
        "latency_rate_per_sec": o.rate,
        "latency_messages": total,
        "latency_deliveries": latency_delivered,
        "latency_expected_deliveries": total * receivers,
        "latency_p50_ms": ms(0.5),
        "latency_p99_ms": ms(0.99),
        "latency_p999_ms": ms(0.999),
        "latency_max_ms": merged.max() as f64 / 1e6,
    }))
}

async fn member_connect(addr: SocketAddr) -> Result<Ws, String> {
    let url = format!("ws://{addr}/v1");
    tokio_tungstenite::connect_async_with_config(url.as_str(), Some(client_config()), true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// The generator's WebSocket settings: a small read buffer per member, as the SDK has.
/// tungstenite's default (128 KiB, zeroed when the connection opens) made the generator
/// spend a quarter of its CPU clearing memory in a join storm.
pub(crate) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0)
}

fn print_table(rows: &[Value]) {
    println!(
        "{:>8} {:>11} {:>13} {:>16} {:>18} {:>10} {:>10} {:>10} {:>14}",
        "members",
        "join storm",
        "RSS/member",
        "fan-out deliv/s",
        "deliv/server-cpu-s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "delivered"
    );
    for r in rows {
        println!(
            "{:>8} {:>10.2}s {:>11.1}KB {:>16.0} {:>18.0} {:>10.3} {:>10.3} {:>10.3} {:>14}",
            r["members"],
            r["join_storm_secs"].as_f64().unwrap_or(0.0),
            r["rss_per_member_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["fanout_deliveries_per_sec"].as_f64().unwrap_or(0.0),
            r["fanout_deliveries_per_server_cpu_sec"].as_f64().unwrap_or(0.0),
            r["latency_p50_ms"].as_f64().unwrap_or(0.0),
            r["latency_p99_ms"].as_f64().unwrap_or(0.0),
            r["latency_p999_ms"].as_f64().unwrap_or(0.0),
            format!("{}/{}", r["latency_deliveries"], r["latency_expected_deliveries"]),
        );
    }
    println!();
}
