//! roomkit's load generator, run by `cargo xtask bench`.
//!
//! - **fan-out, beside a baseline** (`fanout.rs`, `redis.rs`, `generator.rs`): for each room
//!   size S, S members join a room and its chatroom on the release `roomkit-server` binary (the
//!   join storm's time and the server's RSS per member are measured on the way), and then the
//!   same generator runs against roomkit and against redis pub/sub (S-1 subscribers, one
//!   publisher): deliveries per second with the publisher as fast as the slowest readers allow,
//!   then p50/p99/p999 send-to-receive latency at fixed rates (default 100 and 1000 msg/s), in
//!   rounds, the two systems taking turns. Every text
//!   is 100 bytes and carries a sequence number; losses and out-of-order texts are counted.
//!   The servers run on one CPU and the generator on another when there are two (`pin.rs`).
//!   roomkit's figures are printed beside redis's with their ratio, and written to
//!   `docs/bench/results.json` and `docs/bench/fanout.svg` (`report.rs`, `plot.rs`).
//!
//! - **join storm** (`join.rs`): at each of `--join-sizes` (1k, 5k, 10k, 50k), members connect,
//!   log in, join one room and its chatroom; reports total time, time per 1,000 joins, server
//!   bytes per join, RSS and the room's counts. Sizes past one process's file limit run on a
//!   cluster of nodes, each node's members connected by a generator process of its own
//!   (`join-worker`); without nats-server, in process, partly over the in-memory transport
//!   (see `join.rs`).
//!
//! - **durable send** (`durable.rs`): 1, 16 and 64 members (8 per room) send `--durable-messages`
//!   texts between them (default 16 000; 4 000 with `--cluster`), one at a time each, waiting for each
//!   acknowledgement; with the redb store (`--durability immediate`: fsync per commit, commits of all shards grouped) and with the
//!   memory store; reports acknowledged messages per second and ack latency p50/p99.
//!
//! - **cluster** (`cluster.rs`, with `--cluster`, instead of the others): one nats-server and
//!   1, then 3 cluster nodes on it; one room owned by node 1, its members round-robin over the
//!   nodes; the fan-out phases (deliveries per second, p99 at 100 and 1000 msg/s), each node's
//!   CPU µs per delivery to its own members, and durable sends spread over the nodes; written
//!   to `docs/bench/cluster.json` (`cluster_report.rs`).
//!
//! - **in process** (`inprocess.rs`, with `--in-process`): the same fan-out against the server
//!   as a library in this process, one shard, members over the in-memory transport.
//!
//! Every row also goes, one JSON object per line, to `target/bench/results.jsonl`. The flags
//! and their defaults are in `options.rs`.
//!
//! ```text
//! cargo xtask bench [--sizes 100,1000,5000] [--rates 100,1000] [--rate-secs 3] [--latency-rounds 4]
//!                   [--deliveries 4000000]
//!                   [--join-sizes 1000,5000,10000,50000] [--join-concurrency 256] [--join-addresses 16]
//!                   [--no-fanout] [--no-join] [--no-durable] [--durable-messages 16000]
//! cargo xtask bench --replot   # redraw docs/bench/fanout.svg from docs/bench/results.json
//! cargo xtask bench --cluster [--sizes 1000] [--cluster-nodes 1,3] [--rates 100,1000]
//!                   [--cluster-senders 16] [--durable-messages 4000]
//! ```

use std::{
    io::Write,
    net::SocketAddr,
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use tokio::{net::TcpStream, process::Child};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

mod cluster;
mod cluster_report;
mod durable;
mod fanout;
mod generator;
mod inprocess;
mod join;
mod options;
mod pin;
mod plot;
mod readbuf;
mod redis;
mod report;
mod resp;
mod wsraw;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

use options::{options, Options};

/// The in-process fan-out at each of `--sizes`, and its table.
fn in_process(o: &Options) -> Vec<Value> {
    let cpus = pin::usable_cpus();
    let (one, two) = match cpus[..] {
        [a, b, ..] => (vec![a], vec![a, b]),
        [a] => (vec![a], vec![a]),
        [] => (Vec::new(), Vec::new()),
    };
    let mut rows = Vec::new();
    for &size in &o.sizes {
        for (rooms, shards, cpus) in [(1, 1, &one), (1, 1, &two), (2, 2, &two)] {
            match inprocess::run_on(cpus, size, rooms, shards, o) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    eprintln!("in-process fan-out of {rooms} x {size} on {shards} shard(s): {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!("in-process fan-out (in-memory transport, generator in the same process, one worker per CPU):");
    println!(
        "{:>8} {:>6} {:>7} {:>5} {:>16} {:>12} {:>6}",
        "members", "rooms", "shards", "CPUs", "deliveries/s", "process CPU", "lost"
    );
    for r in &rows {
        println!(
            "{:>8} {:>6} {:>7} {:>5} {:>16.0} {:>11.2}s {:>6}",
            r["members"].as_u64().unwrap_or(0),
            r["rooms"].as_u64().unwrap_or(0),
            r["shards"].as_u64().unwrap_or(0),
            r["cpus"].as_u64().unwrap_or(0),
            r["fanout_deliveries_per_sec"].as_f64().unwrap_or(0.0),
            r["process_cpu_secs"].as_f64().unwrap_or(0.0),
            r["fanout_lost"].as_u64().unwrap_or(0) + r["fanout_out_of_order"].as_u64().unwrap_or(0),
        );
    }
    println!();
    rows
}

/// The server binary's allocator, for the server run in process (docs/operations.md, "In
/// process").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// One thread for the generator's tasks: pinned to one CPU, two runtime threads would take
// turns at it, which lengthened the latency's tail for both systems (docs/operations.md).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "join-worker") {
        if let Err(e) = join::worker(&args[1..]).await {
            eprintln!("roomkit-bench join-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("roomkit-bench: {e}");
            std::process::exit(2);
        }
    };
    if options.replot {
        match report::replot() {
            Ok(path) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("roomkit-bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
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
    let mut lossless = true;
    if options.cluster {
        match cluster::run(&server_bin, &options).await {
            Ok((cluster_rows, all_delivered)) => {
                rows.extend(cluster_rows);
                lossless = all_delivered;
            }
            Err(e) => {
                eprintln!("roomkit-bench: cluster: {e}");
                std::process::exit(1);
            }
        }
    }
    if options.in_process {
        // Blocks this thread while the runs (each on a runtime of its own) go on: nothing
        // else of the bench runs meanwhile.
        rows.extend(in_process(&options));
    }
    if !options.join_sizes.is_empty() {
        rows.extend(join_storms(&server_bin, &options).await);
    }
    if !options.skip_fanout {
        let (fanout, all_delivered) = fanout_beside_redis(&server_bin, &options).await;
        rows.extend(fanout);
        lossless = all_delivered;
    }
    if !options.skip_durable {
        let mut durable = Vec::new();
        for store in ["memory", "redb"] {
            for senders in [1usize, 16, 64] {
                match durable::durable_send(&server_bin, store, senders, options.durable_messages).await {
                    Ok(row) => durable.push(row),
                    Err(e) => {
                        eprintln!("durable send ({store}, {senders} senders): {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        println!(
            "{:>8} {:>8} {:>6} {:>12} {:>12} {:>12}",
            "store", "senders", "rooms", "acks/s", "p50 ms", "p99 ms"
        );
        for r in &durable {
            println!(
                "{:>8} {:>8} {:>6} {:>12.0} {:>12.3} {:>12.3}",
                r["store"].as_str().unwrap_or(""),
                r["senders"].as_u64().unwrap_or(0),
                r["rooms"].as_u64().unwrap_or(0),
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
    if !lossless {
        eprintln!("roomkit-bench: the fan-out lost texts or delivered them out of order");
        std::process::exit(1);
    }
}

/// The fan-out scenario at every size, roomkit beside redis (see [`compare_at`]), with the generator and
/// the servers pinned to different CPUs when there are two; prints the tables and writes the
/// results and the plot under `docs/bench/`. Returns every row, roomkit's and redis's, and
/// whether every text arrived once and in order.
async fn fanout_beside_redis(server_bin: &std::path::Path, o: &Options) -> (Vec<Value>, bool) {
    // S members are S sockets in each server, and 2S in the generator, both systems being
    // connected at once.
    let limit = join::raise_file_limit();
    if let Some(&largest) = o.sizes.iter().max() {
        if 2 * largest as u64 + 256 > limit {
            eprintln!(
                "warning: {largest} members of each system need more open files than the limit ({limit})"
            );
        }
    }
    let plan = pin::pin_generator();
    match &plan.pinning {
        Ok(p) => {
            println!("pinning: servers on CPU {}, this generator on CPU {}", p.server_cpu, p.generator_cpu)
        }
        Err(reason) => println!("pinning: not applied ({reason})"),
    }
    let server_cpu = plan.pinning().map(|p| p.server_cpu);
    let redis_version = redis::version();
    println!("baseline: {}\n", redis_version.as_deref().unwrap_or("redis-server (version unknown)"));
    let mut compared = Vec::new();
    for &size in &o.sizes {
        match compare_at(server_bin, size, o, server_cpu).await {
            Ok(row) => compared.push(row),
            Err(e) => {
                eprintln!("size {size}: {e}");
                std::process::exit(1);
            }
        }
    }
    plan.restore();
    let roomkit_rows: Vec<Value> = compared.iter().map(|r| r["roomkit"].clone()).collect();
    fanout::print_table(&roomkit_rows);
    let pinning = plan.describe();
    let lost = report::print_comparison(&compared, &pinning, o);
    match report::write(&compared, &pinning, o, redis_version) {
        Ok((json_path, svg_path)) => println!("wrote {} and {}\n", json_path.display(), svg_path.display()),
        Err(e) => eprintln!("warning: {e}"),
    }
    (compared.iter().flat_map(|r| [r["roomkit"].clone(), r["redis"].clone()]).collect(), lost == 0)
}

/// roomkit and redis at one room size, both set up side by side: each system's fan-out phase,
/// then at each of `--rates` the fixed-rate phase in `--latency-rounds` rounds, the two systems
/// taking turns (each round has both, the one that goes first alternating), so that a change in
/// the machine's state over the minutes of a run falls on both alike. Returns the compared row.
async fn compare_at(
    server_bin: &std::path::Path,
    size: usize,
    o: &Options,
    server_cpu: Option<usize>,
) -> Result<Value, String> {
    let on_redis = |e: String| format!("redis: {e}");
    // redis starts after roomkit's join storm, which measures roomkit's memory per member.
    let mut roomkit = fanout::Roomkit::start(server_bin, size, server_cpu).await?;
    let mut redis = redis::Redis::start(size, server_cpu).await.map_err(on_redis)?;
    roomkit.fanout(o.deliveries).await?;
    redis.fanout(o.deliveries).await.map_err(on_redis)?;
    let (mut roomkit_latency, mut redis_latency) = (Map::new(), Map::new());
    for &rate in &o.rates {
        let (mut roomkit_rounds, mut redis_rounds) = (Vec::new(), Vec::new());
        for round in 0..o.latency_rounds {
            // Which system goes first alternates from round to round (an even count of rounds
            // balances the order).
            if round % 2 == 1 {
                redis_rounds.push(redis.latency(rate, o.rate_secs).await.map_err(on_redis)?);
            }
            roomkit_rounds.push(roomkit.latency(rate, o.rate_secs).await?);
            if round % 2 == 0 {
                redis_rounds.push(redis.latency(rate, o.rate_secs).await.map_err(on_redis)?);
            }
        }
        roomkit_latency.insert(rate.to_string(), generator::latency_summary(&roomkit_rounds));
        redis_latency.insert(rate.to_string(), generator::latency_summary(&redis_rounds));
    }
    let redis = redis.finish(redis_latency).await.map_err(on_redis)?;
    Ok(report::compare(roomkit.finish(roomkit_latency), redis))
}

/// The join storms, one per size: against the server binary while the file limit allows a
/// socket per member, on a cluster of nodes beyond (in process without nats-server).
async fn join_storms(server_bin: &std::path::Path, o: &Options) -> Vec<Value> {
    let limit = join::raise_file_limit();
    println!("open file limit: {limit}");
    let mut rows = Vec::new();
    for &size in &o.join_sizes {
        let budget = join::socket_budget(limit, false);
        let result = if size <= budget {
            join::against_process(server_bin, size, o.join_concurrency, o.join_addresses).await
        } else if budget > 0 && cluster::nats_version().is_some() {
            let nodes = size.div_ceil(budget);
            println!("{size} members: more than one process's file limit allows; {nodes} cluster nodes");
            join::against_cluster(server_bin, size, nodes, o.join_concurrency, o.join_addresses).await
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
    start_server_on(bin, extra, None).await
}

/// Starts the server binary with `extra` arguments, on `cpu` when given (see [`pin`]); returns
/// it with its client and admin addresses once it listens.
async fn start_server_on(
    bin: &std::path::Path,
    extra: &[&str],
    cpu: Option<usize>,
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let (port, admin) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid");
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("valid");
    let child = pin::command(bin, cpu)
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
        .args(["--send-queue-frames", "65536", "--send-queue-bytes", "1073741824"])
        // Every member connects from loopback, tens of thousands of them: no connection caps.
        .args(["--max-connections", "0", "--max-connections-per-address", "0"])
        // The generator's hand-written readers answer no pings: no keep-alive.
        .args(["--ping-interval-secs", "0"])
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

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>34} [{bar:40}] {pos}/{len} {elapsed}")
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
