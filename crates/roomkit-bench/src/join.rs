//! The join storm: `size` members connect, log in, join one room and enter its chatroom
//! (`concurrency` at a time), then stay and read what the server sends them.
//!
//! Reported: the total time, the time each successive 1,000 joins took (flat when a join
//! costs the same whatever the room's size), the bytes the server sent per join (counted by
//! the clients: WebSocket payloads, everything from the login answer to the last digest; the
//! server writes with `sendmsg`, which `/proc/<pid>/io` does not count), the CPU time of the
//! server and of the bench during the storm, the server's RSS, and the room's online counts
//! as `get_room_info` reports them once the storm is over.
//!
//! Loopback TCP runs out of source ports near 28,000 connections per address pair, so the
//! clients bind their sockets to 127.0.0.2, 127.0.0.3, … in turn. Every socket costs a file
//! descriptor on each side: the bench raises its limit (see [`raise_file_limit`]; the server
//! it spawns inherits it). A room larger than the limit allows runs on a cluster of server
//! nodes, each node's share of the members connected by a generator process of its own
//! ([`against_cluster`], [`worker`]); without nats-server, against a server inside the bench
//! process, its first members over WebSocket and the rest over the in-memory transport: the
//! same server code, minus the sockets it cannot have.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use roomkit_core::transport::{Connection, Connector};
use roomkit_server::{DevAuthenticator, RateLimit, Server, ServerConfig};
use roomkit_transport_memory::MemoryConnector;
use roomkit_transport_ws::{QueueListener, WsConfig};
use serde_json::{json, Value};
use std::{io::Write, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpSocket, TcpStream},
    sync::{mpsc, watch, Semaphore},
};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::{bar, client_config, cpu_secs, rss_bytes, settle, start_server};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// File descriptors kept free for everything that is not a member's socket.
const SPARE_FDS: u64 = 512;

/// The open-file limit the bench asks for: enough for a 50,000-member storm against a separate
/// server (one descriptor per member on each side, plus spares).
const WANTED_FILE_LIMIT: u64 = 131_072;

/// Raises the limit on open files for the bench and the server it spawns: to
/// [`WANTED_FILE_LIMIT`] when allowed (raising the hard limit needs root or
/// `CAP_SYS_RESOURCE`, and never past `fs.nr_open`), else the soft limit to the hard one.
/// Returns the limit in effect.
pub(crate) fn raise_file_limit() -> u64 {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else { return 1024 };
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let wanted = WANTED_FILE_LIMIT.min(ceiling);
    if wanted > hard && rlimit::Resource::NOFILE.set(wanted, wanted).is_ok() {
        return wanted;
    }
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Where the members connect.
#[derive(Clone)]
enum Target {
    /// The `roomkit-server` binary, every member over WebSocket.
    Process { addr: SocketAddr, pid: u32 },
    /// A server inside the bench: members below `sockets` over WebSocket, the rest in memory.
    InProcess { addr: SocketAddr, memory: MemoryConnector, sockets: usize },
}

/// A member's connection.
enum Link {
    Ws(Box<Ws>),
    Memory(Connection),
}

impl Link {
    async fn open(target: &Target, i: usize, addresses: usize) -> Result<Link, String> {
        let addr = match target {
            Target::InProcess { memory, sockets, .. } if i >= *sockets => {
                return memory.connect().await.map(Link::Memory).map_err(|e| e.to_string());
            }
            Target::Process { addr, .. } | Target::InProcess { addr, .. } => *addr,
        };
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % addresses.clamp(1, 250)) as u8);
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket.connect(addr).await.map_err(|e| format!("connect from {source}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let url = format!("ws://{addr}/v1");
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(client_config()),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Link::Ws(Box::new(ws)))
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        match self {
            Link::Ws(ws) => ws.send(Message::Text(text.into())).await.map_err(|e| e.to_string()),
            Link::Memory(c) => c.sink.send(&[text.as_str().into()]).await.map_err(|e| e.to_string()),
        }
    }

    /// The next frame from the server; `None` once the connection is gone.
    async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Link::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Text(text)) => return Some(Bytes::from(text)),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            },
            Link::Memory(c) => c.stream.recv().await.ok(),
        }
    }

    /// Sends a request and waits for its answer, counting every byte received.
    async fn call(&mut self, received: &AtomicU64, id: u64, mut request: Value) -> Result<Value, String> {
        request["id"] = json!(id);
        self.send(request.to_string()).await?;
        let prefix = format!("{{\"id\":{id},");
        loop {
            let frame = self.recv().await.ok_or("connection closed")?;
            received.fetch_add(frame.len() as u64, Ordering::Relaxed);
            if !frame.starts_with(prefix.as_bytes()) {
                continue;
            }
            let v: Value = serde_json::from_slice(&frame).map_err(|e| e.to_string())?;
            return if v["code"] == json!(0) { Ok(v) } else { Err(format!("{request} failed: {v}")) };
        }
    }
}

/// What every member task shares.
struct Storm {
    target: Target,
    room: String,
    addresses: usize,
    gate: Semaphore,
    received: AtomicU64,
    stop: watch::Receiver<bool>,
}

/// One member: joins (holding a permit of the gate), reports, then reads until told to stop.
async fn member(storm: Arc<Storm>, i: usize, done: mpsc::UnboundedSender<Result<(), String>>) {
    let joined = async {
        let _permit = storm.gate.acquire().await.map_err(|e| e.to_string())?;
        let mut link = Link::open(&storm.target, i, storm.addresses).await?;
        let account = format!("j{i}");
        let r = &storm.received;
        link.call(r, 1, json!({"op": "login", "account_id": account, "token": "bench"})).await?;
        link.call(r, 2, json!({"op": "join_room", "room_uuid": storm.room, "user_name": account})).await?;
        link.call(r, 3, json!({"op": "join_chatroom", "room_uuid": storm.room})).await?;
        Ok::<_, String>(link)
    }
    .await;
    let mut link = match joined {
        Ok(link) => link,
        Err(e) => {
            let _ = done.send(Err(format!("member {i}: {e}")));
            return;
        }
    };
    let _ = done.send(Ok(()));
    // Reported: the channel closes once every member has reported or ended, so a member
    // that panics before it reports ends the wait for it rather than hanging it.
    drop(done);
    let mut stop = storm.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            frame = link.recv() => match frame {
                Some(frame) => {
                    storm.received.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                None => return,
            },
        }
    }
}

/// Creates the room as an account that does not join it, so the members are exactly `size`.
async fn create_room(target: &Target, room: &str) -> Result<(), String> {
    let received = AtomicU64::new(0);
    let mut link = Link::open(target, 0, 1).await?;
    link.call(&received, 1, json!({"op": "login", "account_id": "creator", "token": "bench"})).await?;
    let create = json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
    link.call(&received, 2, create).await?;
    Ok(())
}

/// Runs one storm against `target`; the caller measures the server.
async fn storm(target: Target, size: usize, concurrency: usize, addresses: usize) -> Result<Value, String> {
    let room = format!("storm-{size}");
    create_room(&target, &room).await?;
    let (stop_tx, stop) = watch::channel(false);
    let storm = Arc::new(Storm {
        target: target.clone(),
        room: room.clone(),
        addresses,
        gate: Semaphore::new(concurrency.max(1)),
        received: AtomicU64::new(0),
        stop,
    });
    let pid = match &target {
        Target::Process { pid, .. } => *pid,
        Target::InProcess { .. } => std::process::id(),
    };
    let cpu_before = (cpu_secs(pid), cpu_secs(std::process::id()));
    let rss_before = rss_bytes(pid);
    let pb = bar(size as u64, &format!("join storm, {size} members"));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let start = Instant::now();
    for i in 0..size {
        tokio::spawn(member(Arc::clone(&storm), i, done_tx.clone()));
    }
    drop(done_tx);
    let mut per_1000 = Vec::new();
    let mut last = start;
    for n in 1..=size {
        done.recv().await.ok_or("a member task vanished")??;
        pb.inc(1);
        if n % 1000 == 0 {
            per_1000.push(last.elapsed().as_secs_f64() * 1000.0);
            last = Instant::now();
        }
    }
    let total = start.elapsed();
    let cpu = (cpu_secs(pid) - cpu_before.0, cpu_secs(std::process::id()) - cpu_before.1);
    pb.finish_and_clear();
    // The last digests go out one interval after the last join: wait until the room is quiet.
    settle(&storm.received, Duration::from_millis(1500), Duration::from_secs(60)).await;
    let counts = room_counts(&target, &room, size).await;
    let received = storm.received.load(Ordering::Relaxed);
    let rss = rss_bytes(pid);
    let _ = stop_tx.send(true);
    Ok(json!({
        "scenario": "join_storm",
        "members": size,
        "concurrency": concurrency,
        "join_storm_secs": total.as_secs_f64(),
        "joins_per_sec": (size as f64 / total.as_secs_f64()).round(),
        "per_1000_joins_ms": per_1000.iter().map(|ms| (ms * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "server_cpu_secs": match &target {
            Target::Process { .. } => json!(cpu.0),
            Target::InProcess { .. } => Value::Null,
        },
        "bench_cpu_secs": cpu.1,
        "client_received_bytes_per_join": received / size as u64,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss,
        "rss_per_member_bytes": rss.saturating_sub(rss_before) / size as u64,
        "counts": counts,
    }))
}

/// The room's counts as a new member's `get_room_info` sees them (that member included).
async fn room_counts(target: &Target, room: &str, size: usize) -> Value {
    let received = AtomicU64::new(0);
    let check = async {
        let mut link = Link::open(target, size, 1).await?;
        link.call(&received, 1, json!({"op": "login", "account_id": "counter", "token": "bench"})).await?;
        link.call(&received, 2, json!({"op": "join_room", "room_uuid": room, "user_name": "counter"}))
            .await?;
        let info = link.call(&received, 3, json!({"op": "get_room_info", "room_uuid": room})).await?;
        Ok::<_, String>(info["data"]["counts"].clone())
    };
    check.await.unwrap_or_else(|e| json!(e))
}

/// A join storm of `size` members against the release server binary.
pub(crate) async fn against_process(
    bin: &std::path::Path,
    size: usize,
    concurrency: usize,
    addresses: usize,
) -> Result<Value, String> {
    let (child, addr, _) = start_server(bin).await?;
    let pid = child.id().ok_or("server exited")?;
    let mut row = storm(Target::Process { addr, pid }, size, concurrency, addresses).await?;
    row["server"] = json!("process");
    row["websocket_members"] = json!(size);
    drop(child);
    Ok(row)
}

/// A join storm of `size` members against a server inside the bench process: the first
/// `sockets` members over WebSocket, the rest over the in-memory transport. RSS is the
/// whole process's, clients included.
pub(crate) async fn in_process(
    size: usize,
    sockets: usize,
    concurrency: usize,
    addresses: usize,
) -> Result<Value, String> {
    let mut config = ServerConfig::default();
    config.rate_limit = RateLimit { per_second: 100_000_000, burst: 100_000_000, close_after: 100 };
    config.send_queue_frames = 65_536;
    // Every member connects from this process: no connection caps.
    config.max_connections = 0;
    config.max_connections_per_address = 0;
    // Its readers answer no pings: no keep-alive.
    config.ping_interval = std::time::Duration::ZERO;
    config.send_queue_bytes = 1 << 30;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    let mut ws = WsConfig::default();
    ws.accept_backlog = 4096;
    let (listener, sender) = QueueListener::new(addr.to_string(), ws.accept_backlog);
    let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
    let (stop_http, stop_rx) = watch::channel(false);
    let router = roomkit_server::net::client_router(ws, sender.clone());
    let http = tokio::spawn(roomkit_server::net::serve(tcp, router, Duration::from_secs(10), stop_rx));
    let (mut memory_listener, memory) = roomkit_transport_memory::transport();
    let forward = tokio::spawn(async move {
        use roomkit_core::transport::Listener;
        while let Ok(connection) = memory_listener.accept().await {
            if sender.send(connection).await.is_err() {
                return;
            }
        }
    });
    let sockets = sockets.min(size);
    let mut row = storm(Target::InProcess { addr, memory, sockets }, size, concurrency, addresses).await?;
    row["server"] = json!("in_process");
    row["websocket_members"] = json!(sockets);
    let _ = stop_http.send(true);
    forward.abort();
    let _ = http.await;
    server.shutdown().await;
    Ok(row)
}

/// A join storm of `size` members, more than one process may hold sockets for: on a cluster of
/// `nodes` server binaries sharing one nats-server, the room created through node 1 (which
/// runs it), the members split evenly over the nodes, each node's share connected by a
/// generator process of its own (`roomkit-bench join-worker`, see [`worker`]), so that no
/// process holds more sockets than its file limit allows. RSS and CPU are the nodes' sums.
pub(crate) async fn against_cluster(
    bin: &std::path::Path,
    size: usize,
    nodes: usize,
    concurrency: usize,
    addresses: usize,
) -> Result<Value, String> {
    let nats = crate::cluster::Nats::start(None).await?;
    let prefix = format!("join{size}x{}", std::process::id());
    let nodes = crate::cluster::start_nodes(bin, &nats, nodes, None, &prefix).await?;
    let room = format!("storm-{size}");
    // The room's own node: it creates the room, and answers the counts at the end.
    let first = Target::Process { addr: nodes[0].addr, pid: nodes[0].pid };
    create_room(&first, &room).await?;
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid).collect();
    let cpu_sum = || pids.iter().map(|&pid| cpu_secs(pid)).sum::<f64>();
    let rss_each = || pids.iter().map(|&pid| rss_bytes(pid)).collect::<Vec<u64>>();
    let rss_before_each = rss_each();
    let rss_before: u64 = rss_before_each.iter().sum();
    let cpu_before = cpu_sum();
    let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
    let pb = bar(size as u64, &format!("join storm, {size} members, {} nodes", nodes.len()));
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(usize, Option<String>)>();
    let mut workers = Vec::new();
    let share = size.div_ceil(nodes.len());
    let per_worker = (concurrency / nodes.len()).max(1);
    let start = Instant::now();
    for (k, node) in nodes.iter().enumerate() {
        let first = k * share;
        let count = share.min(size - first);
        let mut child = tokio::process::Command::new(&exe)
            .arg("join-worker")
            .args([node.addr.to_string(), room.clone(), first.to_string(), count.to_string()])
            .args([per_worker.to_string(), addresses.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting a join worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("a join worker without stdout")?;
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send((k, Some(line)));
            }
            let _ = tx.send((k, None));
        });
        workers.push((child, 0usize, None::<u64>));
    }
    let mut per_1000 = Vec::new();
    let mut last = start;
    let mut joined_at = None;
    while workers.iter().any(|w| w.2.is_none()) {
        let (k, line) = lines.recv().await.ok_or("the join workers' output ended")?;
        let line = line.ok_or_else(|| format!("join worker {k} exited before its members were in"))?;
        match line.split_once(' ') {
            Some(("joined", n)) => workers[k].1 = n.parse().map_err(|_| format!("worker {k}: `{line}`"))?,
            Some(("ready", bytes)) => {
                workers[k].2 = Some(bytes.parse().map_err(|_| format!("worker {k}: `{line}`"))?)
            }
            _ => return Err(format!("join worker {k}: {line}")),
        }
        let total: usize = workers.iter().map(|w| w.1).sum();
        pb.set_position(total as u64);
        while per_1000.len() < total / 1000 {
            per_1000.push(last.elapsed().as_secs_f64() * 1000.0);
            last = Instant::now();
        }
        if total == size && joined_at.is_none() {
            joined_at = Some((start.elapsed(), cpu_sum() - cpu_before));
        }
    }
    pb.finish_and_clear();
    let (total, cpu) = joined_at.ok_or("the join workers reported fewer members than they joined")?;
    let received: u64 = workers.iter().filter_map(|w| w.2).sum();
    let counts = room_counts(&first, &room, size).await;
    let rss_after_each = rss_each();
    let rss: u64 = rss_after_each.iter().sum();
    for (child, _, _) in &mut workers {
        // Closing its input tells a worker to close its members' sockets and exit.
        drop(child.stdin.take());
    }
    for (child, _, _) in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    // The nodes first, then the nats-server they use.
    drop(nodes);
    drop(nats);
    Ok(json!({
        "scenario": "join_storm",
        "server": "cluster",
        "nodes": pids.len(),
        "nats_server_pid_excluded": true,
        "members": size,
        "websocket_members": size,
        "concurrency": per_worker * pids.len(),
        "join_storm_secs": total.as_secs_f64(),
        "joins_per_sec": (size as f64 / total.as_secs_f64()).round(),
        "per_1000_joins_ms": per_1000.iter().map(|ms| (ms * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "server_cpu_secs": cpu,
        "client_received_bytes_per_join": received / size as u64,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss,
        "rss_per_member_bytes": rss.saturating_sub(rss_before) / size as u64,
        "rss_before_bytes_per_node": rss_before_each,
        "rss_after_bytes_per_node": rss_after_each,
        "counts": counts,
    }))
}

/// `roomkit-bench join-worker ADDR ROOM FIRST COUNT CONCURRENCY ADDRESSES`: members `FIRST` …
/// `FIRST + COUNT - 1` connect to the server at `ADDR`, join `ROOM` and its chatroom
/// (`CONCURRENCY` at a time, from `ADDRESSES` loopback addresses); prints `joined N` as they
/// come in, then, once nothing has arrived for a while, `ready BYTES` (the bytes its members
/// received), and keeps every socket open until its input closes. A failure prints one line
/// that says what failed.
pub(crate) async fn worker(args: &[String]) -> Result<(), String> {
    let [addr, room, first, count, concurrency, addresses] = args else {
        return Err("usage: join-worker ADDR ROOM FIRST COUNT CONCURRENCY ADDRESSES".into());
    };
    let number = |s: &String| s.parse::<usize>().map_err(|_| format!("not a number: `{s}`"));
    let addr: SocketAddr = addr.parse().map_err(|_| format!("not an address: `{addr}`"))?;
    let (first, count) = (number(first)?, number(count)?);
    raise_file_limit();
    let (stop_tx, stop) = watch::channel(false);
    let storm = Arc::new(Storm {
        target: Target::Process { addr, pid: 0 },
        room: room.clone(),
        addresses: number(addresses)?,
        gate: Semaphore::new(number(concurrency)?.max(1)),
        received: AtomicU64::new(0),
        stop,
    });
    let (done_tx, mut done) = mpsc::unbounded_channel();
    for i in first..first + count {
        tokio::spawn(member(Arc::clone(&storm), i, done_tx.clone()));
    }
    drop(done_tx);
    let mut out = std::io::stdout();
    for n in 1..=count {
        done.recv().await.ok_or("a member task vanished")??;
        if n % 100 == 0 || n == count {
            writeln!(out, "joined {n}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
        }
    }
    settle(&storm.received, Duration::from_millis(1500), Duration::from_secs(60)).await;
    let received = storm.received.load(Ordering::Relaxed);
    writeln!(out, "ready {received}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    let _ = tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 64];
        while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
    })
    .await;
    let _ = stop_tx.send(true);
    Ok(())
}

/// How many members can be sockets: against a separate server, every member (each side
/// has its own limit); in process, both ends of each socket count against one limit.
pub(crate) fn socket_budget(file_limit: u64, in_process: bool) -> usize {
    let free = file_limit.saturating_sub(SPARE_FDS);
    (if in_process { free / 2 } else { free }) as usize
}

/// Prints the storms' rows as a table.
pub(crate) fn print_table(rows: &[Value]) {
    println!(
        "{:>8} {:>11} {:>9} {:>10} {:>26} {:>12} {:>12} {:>10}",
        "members", "server", "sockets", "total", "per 1000 (first/mid/last)", "server CPU", "B/join", "RSS"
    );
    for r in rows {
        let per: Vec<f64> = r["per_1000_joins_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let pick = |i: usize| per.get(i).copied().unwrap_or(0.0);
        let spread =
            format!("{:.0}/{:.0}/{:.0} ms", pick(0), pick(per.len() / 2), pick(per.len().saturating_sub(1)));
        println!(
            "{:>8} {:>11} {:>9} {:>9.2}s {:>26} {:>11.2}s {:>12} {:>8}MB",
            r["members"].as_u64().unwrap_or(0),
            match r["nodes"].as_u64() {
                Some(n) => format!("{n} nodes"),
                None => r["server"].as_str().unwrap_or("").to_owned(),
            },
            r["websocket_members"].as_u64().unwrap_or(0),
            r["join_storm_secs"].as_f64().unwrap_or(0.0),
            spread,
            r["server_cpu_secs"].as_f64().unwrap_or(f64::NAN),
            r["client_received_bytes_per_join"].as_u64().unwrap_or(0),
            r["rss_after_bytes"].as_u64().unwrap_or(0) / (1024 * 1024),
        );
        println!("{:>8} counts {}", "", r["counts"]);
    }
    println!();
}
