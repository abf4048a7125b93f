//! Shard tasks: each owns the rooms hashed to it and drives a [`RoomRegistry`].

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use roomkit_core::{ConnId, CoreConfig, Identity, Output, RoomRegistry};
use roomkit_protocol::{
    codec,
    ops::{Request, Response},
    EndReason, Event, RoomUuid,
};
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{Enqueued, Outbox};

/// A job run on a shard's registry, with the current time.
pub(crate) type Job = Box<dyn FnOnce(&mut RoomRegistry, u64) + Send>;

/// Work for a shard.
pub(crate) enum ShardMsg {
    /// A request of a logged-in connection.
    Request {
        conn: ConnId,
        outbox: Outbox,
        identity: Arc<Identity>,
        request_id: u64,
        request: Request,
        received: Instant,
    },
    /// The connection is gone.
    Disconnect { conn: ConnId },
    /// Runs `f` against the registry (admin commands, inspection); outputs are dispatched.
    Run(Job),
    /// End every room, dispatch the events, then acknowledge.
    Shutdown(oneshot::Sender<()>),
}

/// A handle to one shard task.
#[derive(Clone)]
pub(crate) struct Shard {
    pub(crate) tx: mpsc::Sender<ShardMsg>,
}

/// Which shard owns `room`. Stable for the life of the process.
pub(crate) fn shard_of(room: &RoomUuid, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    room.as_str().hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Milliseconds since the Unix epoch: core's notion of time.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Most messages handled per wake-up before outputs are flushed and the timer checked.
const SHARD_BATCH: usize = 64;

pub(crate) fn spawn(config: CoreConfig, queue: usize) -> Shard {
    let (tx, rx) = mpsc::channel(queue.max(1));
    tokio::spawn(run(RoomRegistry::new(config), rx));
    Shard { tx }
}

async fn run(mut registry: RoomRegistry, mut rx: mpsc::Receiver<ShardMsg>) {
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    let mut batch = Vec::with_capacity(SHARD_BATCH);
    // Connections queued to during this wake-up; woken once, at its end.
    let mut wake: Vec<Outbox> = Vec::new();
    loop {
        let sleep = registry.poll_timeout().map(|deadline| {
            let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
            tokio::time::sleep(wait)
        });
        tokio::select! {
            n = rx.recv_many(&mut batch, SHARD_BATCH) => {
                if n == 0 {
                    return;
                }
                for msg in batch.drain(..) {
                    handle(&mut registry, &mut outboxes, &mut wake, msg);
                }
            }
            () = async { sleep.expect("guarded").await }, if sleep.is_some() => {
                registry.handle_timeout(now_ms());
                dispatch(&mut registry, &outboxes, &mut wake);
            }
        }
        for outbox in wake.drain(..) {
            outbox.wake();
        }
    }
}

fn handle(
    registry: &mut RoomRegistry,
    outboxes: &mut HashMap<ConnId, Outbox>,
    wake: &mut Vec<Outbox>,
    msg: ShardMsg,
) {
    let now = now_ms();
    match msg {
        ShardMsg::Request { conn, outbox, identity, request_id, request, received } => {
            let op = request.op();
            outboxes.entry(conn).or_insert(outbox);
            registry.handle_request(now, conn, &identity, request_id, request);
            dispatch(registry, outboxes, wake);
            metrics::histogram!("roomkit_request_duration_seconds", "op" => op).record(received.elapsed());
        }
        ShardMsg::Disconnect { conn } => {
            registry.handle_disconnect(now, conn);
            dispatch(registry, outboxes, wake);
            outboxes.remove(&conn);
        }
        ShardMsg::Run(f) => {
            f(registry, now);
            dispatch(registry, outboxes, wake);
        }
        ShardMsg::Shutdown(done) => {
            registry.close_all(EndReason::ServerShutdown);
            dispatch(registry, outboxes, wake);
            let _ = done.send(());
        }
    }
}

/// Drains core's outputs. Each event is encoded once; every recipient's queue gets the
/// same bytes.
fn dispatch(registry: &mut RoomRegistry, outboxes: &HashMap<ConnId, Outbox>, wake: &mut Vec<Outbox>) {
    let mut send = |outbox: &Outbox, frame: Bytes| match outbox.enqueue(frame) {
        Enqueued::NeedsWake => {
            wake.push(outbox.clone());
            true
        }
        Enqueued::Queued => true,
        Enqueued::Refused => false,
    };
    while let Some(output) = registry.poll_output() {
        match output {
            Output::Reply { conn, request_id, result } => {
                let frame = match result {
                    Ok(data) => {
                        if matches!(data, Response::SendTextMessage(_) | Response::SendCustomMessage(_)) {
                            metrics::counter!("roomkit_messages_in_total").increment(1);
                        }
                        codec::encode_success(request_id, &data)
                    }
                    Err(e) => {
                        metrics::counter!("roomkit_request_errors_total", "code" => e.code().name())
                            .increment(1);
                        codec::encode_error(Some(request_id), e.code(), &e.to_string())
                    }
                };
                if let Some(outbox) = outboxes.get(&conn) {
                    send(outbox, frame);
                }
            }
            Output::Deliver { audience, event } => {
                let frame = codec::encode_event(&event);
                let mut queued = 0u64;
                for conn in audience.iter() {
                    if let Some(outbox) = outboxes.get(&conn) {
                        queued += u64::from(send(outbox, frame.clone()));
                    }
                }
                metrics::counter!("roomkit_events_out_total").increment(queued);
                if matches!(event, Event::ChatroomMessagesReceived { .. }) {
                    metrics::counter!("roomkit_messages_out_total").increment(queued);
                }
            }
            Output::RoomEnded { room_uuid, reason } => {
                tracing::info!(room = %room_uuid, ?reason, "room ended");
            }
        }
    }
}
