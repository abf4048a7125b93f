//! What answers a request: the frame of a reply (counted in the metrics) and the reads of
//! history, which run on tasks of their own.

use std::sync::Arc;

use roomkit_core::{
    store::{MessageStore, StoreError},
    transport::Frame,
    Error, HistoryRead,
};
use roomkit_protocol::{codec, ops::Response, RoomUuid};

use super::log_corrupt;
use crate::outbox::ReadSlot;

/// Answers a history request from the store: [`HistoryRead`]'s loop, logging what the store
/// found damaged on the way.
async fn read_history(
    store: &dyn MessageStore,
    room: &RoomUuid,
    mut read: HistoryRead,
    now: u64,
) -> Result<Response, Error> {
    while let Some(query) = read.next_query() {
        let page = store.history(room, &query, now).await.map_err(Error::HistoryNotRead)?;
        log_corrupt(room, &page);
        read.handle_page(page);
    }
    Ok(read.into_response())
}

/// Reads a history answer on a task of its own: a store that panics fails this read only.
pub(crate) async fn read_history_apart(
    store: Arc<dyn MessageStore>,
    room: &RoomUuid,
    read: HistoryRead,
    now: u64,
) -> Result<Response, Error> {
    let task_room = room.clone();
    tokio::spawn(async move { read_history(store.as_ref(), &task_room, read, now).await })
        .await
        .unwrap_or_else(|e| Err(Error::HistoryNotRead(StoreError(format!("the read panicked: {e}")))))
}

/// Logs a history read that failed, before its answer is sent.
pub(crate) fn log_history_failure(room: &RoomUuid, result: &Result<Response, Error>) {
    if let Err(Error::HistoryNotRead(cause)) = result {
        tracing::error!(error = %cause, room = %room, "history read failed");
    }
}

/// Room kept for the text of a frame built in place ([`Frame::write_text`]): a chat
/// message's event, or the answer to its send, fits without growing the buffer.
pub(crate) const FRAME_HINT: usize = 512;

/// The frame answering request `request_id`, counted in the metrics.
pub(crate) fn reply_frame(request_id: u64, result: Result<Response, Error>) -> Frame {
    Frame::write_text(FRAME_HINT, |out| write_reply(out, request_id, result))
}

/// [`reply_frame`]'s text alone (a cluster node publishes it on the room's stream).
#[cfg(feature = "cluster")]
pub(crate) fn reply_text(request_id: u64, result: Result<Response, Error>) -> bytes::Bytes {
    let mut out = Vec::with_capacity(FRAME_HINT);
    write_reply(&mut out, request_id, result);
    bytes::Bytes::from(out)
}

/// Appends the text answering request `request_id` to `out`, counted in the metrics.
fn write_reply(out: &mut Vec<u8>, request_id: u64, result: Result<Response, Error>) {
    match result {
        Ok(data) => {
            if matches!(data, Response::SendTextMessage(_) | Response::SendCustomMessage(_)) {
                crate::metrics::hot::message_in();
            }
            codec::write_success(out, request_id, &data);
        }
        Err(e) => {
            metrics::counter!("roomkit_request_errors_total", "code" => e.code().name()).increment(1);
            codec::write_error(out, Some(request_id), e.code(), &e.to_string());
        }
    }
}

/// Reads a history answer and queues it for its connection, on a task of its own: a read may
/// take long (a large chatroom, a slow disk) and must not hold up the shard's other rooms.
/// The order clients rely on holds: the shard queued every event and answer that precedes
/// the request before starting the read, and the read answers for the messages accepted
/// before the request (later ones reach the connection live; see [`HistoryRead`]). The
/// connection's read slot is given back once the answer is queued.
pub(super) async fn answer_history(
    store: Arc<dyn MessageStore>,
    slot: ReadSlot,
    request_id: u64,
    room: RoomUuid,
    read: HistoryRead,
    now: u64,
) {
    let outbox = slot.outbox().clone();
    if outbox.is_closed() {
        return;
    }
    let result = read_history_apart(store, &room, read, now).await;
    log_history_failure(&room, &result);
    outbox.push(reply_frame(request_id, result));
    drop(slot);
}
