//! The durable-send scenario: acknowledged sends per second with each store, and (through
//! [`send_acknowledged`]) on a cluster's nodes.

use std::{net::SocketAddr, time::Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::{bar, call, member, member_connect, start_server_with};

/// `senders` members send `total` messages between them, each waiting for the
/// acknowledgement of one before sending the next, into [`rooms_for`] chatrooms (so that
/// several shards commit at once, and their commits are grouped). The redb store runs with
/// `--durability immediate`: an acknowledgement means fsynced.
pub(crate) async fn durable_send(
    bin: &std::path::Path,
    store: &str,
    senders: usize,
    total: usize,
) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("roomkit-bench-{}-{store}-{senders}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.display().to_string();
    let args = ["--store", store, "--data-dir", &dir_arg, "--durability", "immediate"];
    let (child, addr, _) = start_server_with(bin, &args).await?;
    let figures = send_acknowledged(&[addr], "durable", senders, total, store).await;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let mut row = json!({"scenario": "durable_send", "store": store});
    if let (Some(row), Value::Object(figures)) = (row.as_object_mut(), figures?) {
        row.extend::<Map<String, Value>>(figures);
    }
    Ok(row)
}

/// The scenario's generator: a member on `addrs[0]` creates [`rooms_for`] rooms named
/// `{room_prefix}-0`, `{room_prefix}-1`, …; `senders` members, member `i` on
/// `addrs[i % addrs.len()]` and in room `i % rooms`, send `total` messages between them, each
/// waiting for the acknowledgement of one before sending the next. Returns the senders, the
/// rooms, the acknowledgements, acknowledgements per second and their latency (p50, p99).
pub(crate) async fn send_acknowledged(
    addrs: &[SocketAddr],
    room_prefix: &str,
    senders: usize,
    total: usize,
    label: &str,
) -> Result<Value, String> {
    let rooms: Vec<String> = (0..rooms_for(senders)).map(|r| format!("{room_prefix}-{r}")).collect();
    let mut creator = member_connect(addrs[0]).await?;
    call(&mut creator, 1, json!({"op": "login", "account_id": "creator", "token": "bench"})).await?;
    for (r, room) in rooms.iter().enumerate() {
        let create =
            json!({"op": "create_room", "room_uuid": room, "room_name": room, "enable_chatroom": true});
        call(&mut creator, 2 + r as u64, create).await?;
    }
    let mut members = Vec::new();
    for i in 0..senders {
        let room = &rooms[i % rooms.len()];
        members.push((member(addrs[i % addrs.len()], i, room).await?, room.clone()));
    }
    let per_sender = (total / senders).max(1);
    let pb = bar((per_sender * senders) as u64, &format!("{label}: {senders} senders"));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, (mut ws, room)) in members.into_iter().enumerate() {
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for n in 0..per_sender {
                let id = 10 + n as u64;
                let text = format!("D{i}-{n}-{}", "x".repeat(90));
                let sent = Instant::now();
                let request = json!({"op": "send_text_message", "room_uuid": room, "message_uuid": format!("d{i}n{n}"), "text": text});
                call(&mut ws, id, request).await?;
                h.record(sent.elapsed().as_nanos() as u64).expect("in range");
                pb.inc(1);
            }
            Ok::<_, String>(h)
        }));
    }
    let mut merged = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        merged.add(t.await.map_err(|e| e.to_string())??).expect("same bounds");
    }
    let elapsed = start.elapsed();
    pb.finish_and_clear();
    drop(creator);
    let acks = (per_sender * senders) as f64;
    Ok(json!({
        "senders": senders,
        "rooms": rooms.len(),
        "acks": acks,
        "acks_per_sec": (acks / elapsed.as_secs_f64()).round(),
        "ack_p50_ms": merged.value_at_quantile(0.5) as f64 / 1e6,
        "ack_p99_ms": merged.value_at_quantile(0.99) as f64 / 1e6,
    }))
}

/// Rooms the senders are spread over: one per 8 senders, at least one.
fn rooms_for(senders: usize) -> usize {
    senders.div_ceil(8).max(1)
}
