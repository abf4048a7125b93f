//! The cluster scenario (`--cluster`): roomkit's fan-out and durable sends on a cluster of
//! 1 and then 3 nodes (`--cluster-nodes`) sharing one nats-server.
//!
//! One nats-server with JetStream runs on a free loopback port with its store in a fresh
//! folder. For each node count N and each room size S (`--sizes`, 1000 by default here),
//! N fresh `roomkit-server` nodes start on it (the release binary, `--dev --cluster URL
//! --node-id nK`, the fan-out scenario's limits and rates off, a cluster prefix of their own so
//! that each start has fresh buckets and a fresh stream). A member on node 1 creates the room,
//! so node 1 holds its lease and runs it; the S members join round-robin over the nodes
//! (member `i` on node `i mod N`), the publisher (member 0) on node 1. Then the fan-out
//! scenario's phases (`generator.rs`): deliveries per second with the publisher as fast as the
//! slowest readers allow, and latency at each of `--rates` (100 and 1000 msg/s). Each
//! node's CPU time over the saturation phase (`/proc/PID/stat`), divided by the deliveries its
//! own members received in it, is its CPU cost per delivery: the figure that should not grow
//! with N, since each node only delivers to its own members. nats-server's CPU time and its
//! `/varz` counters over the same phase give what NATS does and carries per text. Last, for each N, durable sends
//! on fresh nodes (`durable.rs`): `--cluster-senders` members spread over the nodes, each
//! waiting for the acknowledgement of one message (stored in JetStream) before sending the
//! next, in rooms created through node 1.
//!
//! The servers (nats-server and every node) run on one CPU and the generator on another when
//! there are two (`pin.rs`). Every process started here is killed when its guard is dropped,
//! on success, on error and on a panic. Results: a table, and `docs/bench/cluster.json`
//! (`cluster_report.rs`).

use std::{
    fs::{self, File},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child as StdChild, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream, process::Child};

use crate::{
    bar, call, cluster_report, cpu_secs, durable,
    fanout::{self, Publisher},
    free_port,
    generator::{Deliveries, Latency, Run},
    join, member_connect, pin, settle, start_server_on, Options,
};

/// Where `nats-server` is looked for besides `PATH` (Debian installs it in `/usr/sbin`).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// Longest nats-server or a node may take to be ready. Bounds hangs only.
const START_BOUND: Duration = Duration::from_secs(30);

/// One nats-server with JetStream; killed, and its folder removed, when dropped.
pub(crate) struct Nats {
    child: StdChild,
    dir: PathBuf,
    url: String,
    /// Its monitoring port (`-m`), for `/varz`.
    monitor: SocketAddr,
}

impl Nats {
    /// Starts nats-server on a free loopback port, on `cpu` when given, storing in a fresh
    /// folder, and waits until it takes connections (it enables JetStream before that).
    pub(crate) async fn start(cpu: Option<usize>) -> Result<Nats, String> {
        let bin = nats_server_binary()?;
        let dir = std::env::temp_dir().join(format!("roomkit-bench-nats-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = File::create(dir.join("nats-server.log")).map_err(|e| format!("nats-server's log: {e}"))?;
        let (port, monitor) = (free_port(), free_port());
        let store = dir.join("store").display().to_string();
        let child = pin::std_command(&bin, cpu)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", &store])
            .args(["-m", &monitor.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        // The guard first, so that the server is killed if it never gets ready.
        let monitor = SocketAddr::from(([127, 0, 0, 1], monitor));
        let mut nats = Nats { child, dir, url: format!("nats://127.0.0.1:{port}"), monitor };
        let deadline = Instant::now() + START_BOUND;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = nats.child.try_wait() {
                return Err(format!("nats-server exited ({status}):\n{}", nats.log_tail()));
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(nats);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("nats-server does not listen on port {port} after {START_BOUND:?}"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The messages and bytes the server has received and sent so far, from `/varz`:
    /// `[in_msgs, out_msgs, in_bytes, out_bytes]`, zeros when it does not answer.
    async fn traffic(&self) -> [u64; 4] {
        let varz = http_get(self.monitor, "/varz", "1.0")
            .await
            .and_then(|r| {
                r.split_once("\r\n\r\n").and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
            })
            .unwrap_or_default();
        ["in_msgs", "out_msgs", "in_bytes", "out_bytes"].map(|key| varz[key].as_u64().unwrap_or(0))
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("nats-server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The `nats-server` executable.
fn nats_server_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| "nats-server is not installed: `cargo xtask bench` installs it".to_owned())
}

/// `nats-server --version`, such as `nats-server: v2.9.10`.
pub(crate) fn nats_version() -> Option<String> {
    let out = std::process::Command::new(nats_server_binary().ok()?).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One roomkit node; killed when dropped (`kill_on_drop`).
pub(crate) struct Node {
    id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    _child: Child,
}

/// Starts `n` nodes `n1` … `nN` on `nats`, on `cpu` when given, under the cluster prefix
/// `prefix`, and waits until each answers on its admin port (a node binds its ports first,
/// then joins the cluster, then serves).
pub(crate) async fn start_nodes(
    bin: &Path,
    nats: &Nats,
    n: usize,
    cpu: Option<usize>,
    prefix: &str,
) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    let mut admins = Vec::new();
    for k in 1..=n {
        let id = format!("n{k}");
        let args = ["--cluster", &nats.url, "--node-id", &id, "--cluster-prefix", prefix];
        let (child, addr, admin) =
            start_server_on(bin, &args, cpu).await.map_err(|e| format!("node {id}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("node {id} exited at once"))?;
        nodes.push(Node { id, addr, pid, _child: child });
        admins.push(admin);
    }
    for (node, admin) in nodes.iter().zip(admins) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if http_get(admin, "/healthz", "1.1").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                break;
            }
            if Instant::now() > deadline || !Path::new(&format!("/proc/{}", node.pid)).exists() {
                return Err(format!("node {} did not join the cluster on {}", node.id, nats.url));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(nodes)
}

/// The response to `GET path` on `addr` in HTTP `version`, status line first (HTTP/1.0 for a
/// body that is not chunked).
async fn http_get(addr: SocketAddr, path: &str, version: &str) -> Option<String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/{version}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.ok()?;
        Some(response)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

/// The scenario, pinned as the fan-out is; prints the table and writes
/// `docs/bench/cluster.json`. Returns the rows and whether every text arrived once and in
/// order.
pub(crate) async fn run(bin: &Path, o: &Options) -> Result<(Vec<Value>, bool), String> {
    let limit = join::raise_file_limit();
    if let Some(&largest) = o.sizes.iter().max() {
        // Each member is a socket on both sides, and the nodes inherit this limit.
        if 2 * largest as u64 + 256 > limit {
            eprintln!("warning: {largest} members need more open files than the limit ({limit})");
        }
    }
    let load_before = fs::read_to_string("/proc/loadavg").map(|l| l.trim().to_owned()).ok();
    let plan = pin::pin_generator();
    match &plan.pinning {
        Ok(p) => println!(
            "pinning: nats-server and the nodes on CPU {}, this generator on CPU {}",
            p.server_cpu, p.generator_cpu
        ),
        Err(reason) => println!("pinning: not applied ({reason})"),
    }
    let result = run_pinned(bin, o, plan.pinning().map(|p| p.server_cpu)).await;
    plan.restore();
    let rows = result?;
    let pinning = plan.describe();
    let lost = cluster_report::print_table(&rows, &pinning, o);
    match cluster_report::write(&rows, &pinning, o, load_before) {
        Ok(path) => println!("wrote {}\n", path.display()),
        Err(e) => eprintln!("warning: {e}"),
    }
    Ok((rows, lost == 0))
}

/// Every node count and size, then the durable sends, with the servers on `cpu`.
async fn run_pinned(bin: &Path, o: &Options, cpu: Option<usize>) -> Result<Vec<Value>, String> {
    let nats = Nats::start(cpu).await?;
    println!("{} on {}\n", nats_version().as_deref().unwrap_or("nats-server"), nats.url);
    let mut starts = 0;
    let mut prefix = || {
        starts += 1;
        format!("bench{starts}")
    };
    let mut rows = Vec::new();
    for &n in &o.cluster_nodes {
        let mut rows_of_n = Vec::new();
        for &size in &o.sizes {
            let nodes = start_nodes(bin, &nats, n, cpu, &prefix()).await?;
            let row = fanout_on(&nodes, &nats, size, o)
                .await
                .map_err(|e| format!("{n} node(s), {size} members: {e}"))?;
            rows_of_n.push(row);
        }
        let nodes = start_nodes(bin, &nats, n, cpu, &prefix()).await?;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
        let label = format!("{n} node(s): durable");
        let durable =
            durable::send_acknowledged(&addrs, "durable", o.cluster_senders, o.durable_messages, &label)
                .await
                .map_err(|e| format!("{n} node(s), durable sends: {e}"))?;
        drop(nodes);
        for mut row in rows_of_n {
            row["durable"] = durable.clone();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The fan-out on `nodes`: the room created through node 1, `size` members round-robin over
/// the nodes, the generator's phases; one result row.
async fn fanout_on(nodes: &[Node], nats: &Nats, size: usize, o: &Options) -> Result<Value, String> {
    let n = nodes.len();
    let room = format!("cluster-{size}");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let mut creator = member_connect(addrs[0]).await?;
    call(&mut creator, 1, json!({"op": "login", "account_id": "creator", "token": "bench"})).await?;
    let create = json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
    call(&mut creator, 2, create).await?;
    drop(creator);

    let label = if n == 1 { "1 node".to_owned() } else { format!("{n} nodes") };
    let pb = bar(size as u64, &format!("{label}: join storm, {size} members"));
    let (publisher, members, join_storm) = fanout::join_members(&addrs, size, &room, &pb).await?;
    pb.finish_and_clear();
    // Each node's members' deliveries, counted apart: member i is on node i mod n.
    let per_node: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let deliveries = Deliveries::new();
    let frames = Arc::new(AtomicU64::new(0));
    let (sink, stream) = publisher.split();
    let mut readers =
        vec![fanout::spawn_reader(stream, deliveries.receiver_in(&per_node[0]), Arc::clone(&frames))];
    for (i, m) in (1..).zip(members) {
        let receiver = deliveries.receiver_in(&per_node[i % n]);
        readers.push(fanout::spawn_raw_reader(m, receiver, Arc::clone(&frames)));
    }
    // Let the join events drain before measuring.
    settle(&frames, Duration::from_millis(500), Duration::from_secs(120)).await;

    let receivers = (size - 1).max(1) as u64;
    let mut run = Run::new(Publisher { sink, room: room.clone() }, &deliveries, receivers, &label);
    let counts = || per_node.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<u64>>();
    let cpus = || nodes.iter().map(|node| cpu_secs(node.pid)).collect::<Vec<f64>>();
    let (delivered_before, cpu_before, nats_before) = (counts(), cpus(), cpu_secs(nats.pid()));
    let traffic_before = nats.traffic().await;
    let fanout = run.fanout(o.deliveries).await?;
    let (delivered_after, cpu_after, nats_after) = (counts(), cpus(), cpu_secs(nats.pid()));
    let traffic_after = nats.traffic().await;
    let mut latencies = Vec::new();
    let pids: Vec<u32> = nodes.iter().map(|node| node.pid).collect();
    for &rate in &o.rates {
        latencies.push((rate, run.latency(rate, o.rate_secs, &pids).await?));
    }
    drop(run);
    for r in readers {
        r.abort();
    }

    let mut node_rows = Vec::new();
    let (mut cpu_total, mut delivered_total) = (0.0, 0);
    for (k, node) in nodes.iter().enumerate() {
        let members = (0..size).filter(|i| i % n == k).count();
        let delivered = delivered_after[k] - delivered_before[k];
        let cpu = cpu_after[k] - cpu_before[k];
        cpu_total += cpu;
        delivered_total += delivered;
        node_rows.push(json!({
            "node": node.id,
            "owner": k == 0,
            "members": members,
            "receivers": if k == 0 { members.saturating_sub(1) } else { members },
            "fanout_deliveries": delivered,
            "fanout_cpu_secs": round(cpu, 2),
            "cpu_us_per_delivery": us_per(cpu, delivered),
        }));
    }
    let nats_cpu = nats_after - nats_before;
    // What NATS carried per text sent, the nodes' background (leases, announcements) included.
    let per_message = |i: usize| {
        let total = traffic_after[i].saturating_sub(traffic_before[i]);
        round(total as f64 / fanout.messages.max(1) as f64, 2)
    };
    Ok(json!({
        "scenario": "cluster_fanout",
        "nodes": n,
        "members": size,
        "join_storm_secs": round(join_storm.as_secs_f64(), 3),
        "fanout_messages": fanout.messages,
        "fanout_deliveries": fanout.delivered,
        "fanout_secs": round(fanout.elapsed.as_secs_f64(), 3),
        "fanout_deliveries_per_sec": fanout.deliveries_per_sec().round(),
        "fanout_lost": fanout.lost,
        "fanout_out_of_order": fanout.out_of_order,
        "per_node": node_rows,
        "nodes_cpu_secs": round(cpu_total, 2),
        "nodes_cpu_us_per_delivery": us_per(cpu_total, delivered_total),
        "nats_cpu_secs": round(nats_cpu, 2),
        "nats_cpu_us_per_message": us_per(nats_cpu, fanout.messages),
        "nats_in_msgs_per_message": per_message(0),
        "nats_out_msgs_per_message": per_message(1),
        "nats_in_bytes_per_message": per_message(2),
        "nats_out_bytes_per_message": per_message(3),
        "latency": latencies.iter().map(|(rate, l)| latency_row(*rate, l)).collect::<Vec<_>>(),
    }))
}

fn latency_row(rate: u64, l: &Latency) -> Value {
    json!({
        "rate_per_sec": rate,
        "messages": l.messages,
        "warmup_messages": l.warmup,
        "deliveries": l.delivered,
        "expected_deliveries": l.expected,
        "lost": l.lost,
        "out_of_order": l.out_of_order,
        "p50_ms": round(l.p50_ms, 3),
        "p99_ms": round(l.p99_ms, 3),
        "p999_ms": round(l.p999_ms, 3),
        "max_ms": round(l.max_ms, 3),
        "nodes_cpus": round(l.server_cpu, 2),
        "generator_cpus": round(l.generator_cpu, 2),
    })
}

/// Microseconds of CPU per item, to three decimals; null without items.
fn us_per(cpu_secs: f64, items: u64) -> Value {
    if items == 0 {
        Value::Null
    } else {
        json!(round(cpu_secs * 1e6 / items as f64, 3))
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
