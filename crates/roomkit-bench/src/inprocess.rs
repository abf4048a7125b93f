//! In-process fan-out: the server as a library, its members over the in-memory transport, the
//! same generator (one publisher, S-1 receivers, 100-byte texts) — what the server's own path
//! costs (core, shard, queues, writers) without sockets or a kernel. `--in-process` runs it at
//! `--sizes`, each run on a runtime of its own pinned to its CPUs: one room on one shard on
//! one CPU, the same on two CPUs, and two rooms (their fan-outs at once) on two shards on two
//! CPUs — which shows what a second core adds when the work can be split.

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use roomkit_core::{
    config::MessageRate,
    transport::{Connection, Connector, Frame},
};
use roomkit_server::{DevAuthenticator, RateLimit, Server, ServerConfig};
use serde_json::{json, Value};

use crate::{
    cpu_secs,
    fanout::count,
    generator::{Deliveries, Publish, Run},
    settle, Options,
};

/// Most frames a receiver takes from its connection at once.
const RECV_MANY: usize = 256;

/// The publisher: its texts become `send_text_message` requests, sent in batches.
struct Publisher<'a> {
    connection: &'a mut Connection,
    room: &'a str,
    batch: Vec<Frame>,
}

impl Publish for Publisher<'_> {
    async fn feed(&mut self, text: &str) -> Result<(), String> {
        let request = json!({"id": 0, "op": "send_text_message", "room_uuid": self.room, "text": text});
        self.batch.push(Frame::from(request.to_string().as_str()));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        let sent = self.connection.sink.send(&self.batch).await.map_err(|e| e.to_string());
        self.batch.clear();
        sent
    }
}

/// Sends a request and reads until its answer.
async fn call(c: &mut Connection, id: u64, mut request: Value) -> Result<(), String> {
    request["id"] = json!(id);
    c.sink.send(&[Frame::from(request.to_string().as_str())]).await.map_err(|e| e.to_string())?;
    loop {
        let frame = c.stream.recv().await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&frame).map_err(|e| e.to_string())?;
        if v["id"] == json!(id) {
            return if v["code"] == json!(0) { Ok(()) } else { Err(format!("{request}: {v}")) };
        }
    }
}

/// Rooms whose names hash to shards `0..rooms` of `shards` (one room per shard when there
/// are as many rooms as shards; all on shard 0 with one shard).
fn room_names(size: usize, rooms: usize, shards: usize) -> Vec<String> {
    let mut names = Vec::new();
    for wanted in 0..rooms {
        let shard = wanted % shards;
        let name = (0..)
            .map(|n| format!("in-process-{size}-{wanted}-{n}"))
            .find(|name| name.parse().is_ok_and(|uuid| roomkit_server::shard_of(&uuid, shards) == shard))
            .expect("some name hashes to every shard");
        names.push(name);
    }
    names
}

/// [`run_size`] on a runtime of its own whose threads (one worker per CPU) may use only `cpus`.
pub(crate) fn run_on(
    cpus: &[usize],
    size: usize,
    rooms: usize,
    shards: usize,
    o: &Options,
) -> Result<Value, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Unpinned (and said so in the row) where the CPUs cannot be set.
                let pinned = match cpus {
                    [] => Err("this process's CPUs could not be read".to_owned()),
                    _ => crate::pin::pin_this_thread(cpus),
                };
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cpus.len().max(1))
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                let mut row = runtime.block_on(run_size(size, rooms, shards, o))?;
                row["cpus"] = json!(cpus.len().max(1));
                if let Err(why) = pinned {
                    eprintln!("in-process run not pinned: {why}");
                    row["unpinned"] = json!(why);
                }
                Ok(row)
            })
            .join()
            .map_err(|_| "the in-process run panicked".to_owned())?
    })
}

/// One run: the server in this process with `shards` shards and no rate limits, `rooms`
/// rooms of `size` members each (one publisher and `size - 1` receivers per room), every
/// room's fan-out at once.
async fn run_size(size: usize, rooms: usize, shards: usize, o: &Options) -> Result<Value, String> {
    let mut config = ServerConfig::default();
    config.shards = shards;
    config.rate_limit = RateLimit { per_second: 100_000_000, burst: 100_000_000, close_after: 100 };
    config.send_queue_frames = 65_536;
    // Every member connects from this process: no connection caps.
    config.max_connections = 0;
    config.max_connections_per_address = 0;
    // Its readers answer no pings: no keep-alive.
    config.ping_interval = std::time::Duration::ZERO;
    config.send_queue_bytes = 1 << 30;
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
    let frames = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    for (r, room) in room_names(size, rooms, shards).into_iter().enumerate() {
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let mut c = connector.connect().await.map_err(|e| e.to_string())?;
            let account = format!("u{r}-{i}");
            call(&mut c, 1, json!({"op": "login", "account_id": account, "token": "bench"})).await?;
            if i == 0 {
                let create = json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
                call(&mut c, 2, create).await?;
            }
            call(&mut c, 3, json!({"op": "join_room", "room_uuid": room, "user_name": account})).await?;
            call(&mut c, 4, json!({"op": "join_chatroom", "room_uuid": room})).await?;
            members.push(c);
        }
        let deliveries = Deliveries::new();
        let publisher = members.remove(0);
        for c in members {
            let (mut receiver, frames) = (deliveries.receiver(), Arc::clone(&frames));
            readers.push(tokio::spawn(async move {
                // The whole connection moves in: a dropped sink would end it.
                let Connection { sink: _sink, mut stream, .. } = c;
                // A burst at a time, as the server's own readers would take it.
                let mut burst = Vec::with_capacity(RECV_MANY);
                while stream.recv_many(&mut burst, RECV_MANY).await.is_ok() {
                    for frame in burst.drain(..) {
                        count(&frame, &mut receiver, &frames);
                    }
                }
            }));
        }
        publishers.push((publisher, room, deliveries));
    }
    settle(&frames, Duration::from_millis(300), Duration::from_secs(60)).await;
    let pid = std::process::id();
    let cpu_before = cpu_secs(pid);
    let receivers = (size - 1).max(1) as u64;
    let per_room = o.deliveries / rooms as u64;
    // The publishers take turns on this task; each waits for its deliveries most of the time.
    let runs = publishers.into_iter().map(|(mut connection, room, deliveries)| async move {
        let p = Publisher { connection: &mut connection, room: &room, batch: Vec::new() };
        Run::new(p, &deliveries, receivers, "in process").fanout(per_room).await
    });
    let fanouts = futures_util::future::join_all(runs).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    let cpu = cpu_secs(pid) - cpu_before;
    for r in readers {
        r.abort();
    }
    server.shutdown().await;
    let delivered: u64 = fanouts.iter().map(|f| f.delivered).sum();
    let elapsed = fanouts.iter().map(|f| f.elapsed).max().unwrap_or_default();
    Ok(json!({
        "scenario": "in_process_fanout",
        "members": size,
        "rooms": rooms,
        "shards": shards,
        "fanout_messages": fanouts.iter().map(|f| f.messages).sum::<u64>(),
        "fanout_deliveries": delivered,
        "fanout_deliveries_per_sec": (delivered as f64 / elapsed.as_secs_f64()).round(),
        "fanout_lost": fanouts.iter().map(|f| f.lost).sum::<u64>(),
        "fanout_out_of_order": fanouts.iter().map(|f| f.out_of_order).sum::<u64>(),
        "process_cpu_secs": cpu,
    }))
}
