//! In-process fan-out: the server as a library with one shard, its members over the in-memory
//! transport, the same generator (one publisher, S-1 receivers, 100-byte texts) — what the
//! server's own path costs (core, shard, queues, writers) without sockets or a kernel.
//! `--in-process` runs it at `--sizes`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
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
    fanout::observe,
    generator::{Deliveries, Publish, Run},
    settle, Options,
};

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

/// One size: the server in this process, one shard, no rate limits.
pub(crate) async fn run_size(size: usize, o: &Options) -> Result<Value, String> {
    let mut config = ServerConfig::default();
    config.shards = 1;
    config.rate_limit = RateLimit { per_second: 100_000_000, burst: 100_000_000, close_after: 100 };
    config.send_queue_frames = 65_536;
    // Every member connects from this process: no connection caps.
    config.max_connections = 0;
    config.max_connections_per_address = 0;
    // Its readers answer no pings: no keep-alive.
    config.ping_interval = std::time::Duration::ZERO;
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
    let room = format!("in-process-{size}");
    let mut members = Vec::with_capacity(size);
    for i in 0..size {
        let mut c = connector.connect().await.map_err(|e| e.to_string())?;
        let account = format!("u{i}");
        call(&mut c, 1, json!({"op": "login", "account_id": account, "token": "bench"})).await?;
        if i == 0 {
            let create =
                json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
            call(&mut c, 2, create).await?;
        }
        call(&mut c, 3, json!({"op": "join_room", "room_uuid": room, "user_name": account})).await?;
        call(&mut c, 4, json!({"op": "join_chatroom", "room_uuid": room})).await?;
        members.push(c);
    }
    let deliveries = Deliveries::new();
    let frames = Arc::new(AtomicU64::new(0));
    let mut publisher = members.remove(0);
    let mut readers = Vec::new();
    for c in members {
        let (mut receiver, frames) = (deliveries.receiver(), Arc::clone(&frames));
        readers.push(tokio::spawn(async move {
            // The whole connection moves in: a dropped sink would end it.
            let Connection { sink: _sink, mut stream, .. } = c;
            while let Ok(frame) = stream.recv().await {
                frames.fetch_add(1, Ordering::Relaxed);
                observe(&frame, &mut receiver);
            }
        }));
    }
    settle(&frames, Duration::from_millis(300), Duration::from_secs(60)).await;
    let pid = std::process::id();
    let cpu_before = cpu_secs(pid);
    let mut p = Publisher { connection: &mut publisher, room: &room, batch: Vec::new() };
    let receivers = (size - 1).max(1) as u64;
    let fanout = Run::new(&mut p, &deliveries, receivers, "in process").fanout(o.deliveries).await?;
    let cpu = cpu_secs(pid) - cpu_before;
    for r in readers {
        r.abort();
    }
    server.shutdown().await;
    Ok(json!({
        "scenario": "in_process_fanout",
        "members": size,
        "shards": 1,
        "fanout_messages": fanout.messages,
        "fanout_deliveries": fanout.delivered,
        "fanout_deliveries_per_sec": fanout.deliveries_per_sec().round(),
        "fanout_lost": fanout.lost,
        "fanout_out_of_order": fanout.out_of_order,
        "process_cpu_secs": cpu,
    }))
}
