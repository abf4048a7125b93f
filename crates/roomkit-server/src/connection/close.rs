//! How a connection ends: the writing half finishes, the server lets go of the connection,
//! and the close frame goes out while the peer's input is read and thrown away.

use std::sync::Arc;

use roomkit_core::transport::{CloseReason, Connection, Frame, FrameSink, FrameStream, TransportError};
use roomkit_protocol::Code;

use super::{write::write_batches, Ended, Half, ReadParts, WriteParts};
use crate::{keepalive::Clock, outbox::Closing, shard::ShardMsg, ServerShared};

/// The connection is over (`ended` says which half ended first): the writing half finishes,
/// the rest of the server lets go of the connection, and the close frame goes out.
pub(super) async fn close(ended: Ended, shared: Arc<ServerShared>, peer: Box<str>) {
    let (write, wrote, read) = match ended {
        Ended::Write { write, wrote, read } => {
            let read = match read {
                Half::Idle(parts) => parts,
                // It stops at once: the connection is closing.
                Half::Busy(step) => step.await.0,
            };
            (write, wrote, read)
        }
        Ended::Read { mut read, write } => {
            let (write, wrote) = stop_writing(write, shared.clock, &mut read).await;
            (write, wrote, read)
        }
    };
    // Declared first, dropped last: should the task be dropped while it closes (the runtime
    // shutting down), the socket still goes before the reader ends the task's count.
    let ReadParts { reader, mut stream, .. } = read;
    let mut write = write;
    write.unparked().await;
    let WriteParts { sink, outbox } = write;
    let mut sink = sink.expect("taken back");
    let conn_id = reader.conn_id;
    let rest = outbox.shut();
    if let Some(node) = &shared.cluster {
        node.disconnect(conn_id).await;
    } else {
        for shard in &shared.shards {
            let _ = shard.tx.send(ShardMsg::Disconnect { conn: conn_id }).await;
        }
    }
    shared.connections.lock().expect("not poisoned").remove(&conn_id);
    shared.admission.release(&crate::admission::address_of(&peer));
    if let Some(identity) = &reader.identity {
        shared.admission.log_out(&identity.user);
    }
    if let Some(closing) = outbox.closing().filter(|_| wrote) {
        close_gracefully(finish(sink.as_mut(), rest, closing), stream.as_mut()).await;
    }
    metrics::gauge!("roomkit_connections").decrement(1.0);
    tracing::debug!(conn = conn_id.0, %peer, "connection closed");
    // The socket goes before the reader, whose drop tells shutdown this task has ended.
    drop((sink, stream));
    drop(reader);
}

/// A connection refused when it was accepted (a connection cap): closed at once with
/// `reason`, reading and discarding what it sent meanwhile so that the close frame is not
/// lost to a reset.
pub(crate) async fn refuse(connection: Connection, reason: CloseReason) {
    let Connection { mut sink, mut stream, peer } = connection;
    tracing::debug!(%peer, %reason, "connection refused");
    let close = async {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close(reason)).await;
    };
    close_gracefully(close, stream.as_mut()).await;
}

/// The writing half from where it is to its end, once the connection is closing: finishes
/// the write under way when the close flushes. True, or false when a write failed.
async fn finish_writing(write: Half<WriteParts, Option<bool>>, clock: Clock) -> (WriteParts, bool) {
    let (mut parts, mut done) = match write {
        Half::Idle(parts) => (parts, None),
        Half::Busy(step) => step.await,
    };
    loop {
        if let Some(wrote) = done {
            return (parts, wrote);
        }
        if parts.outbox.ready().await {
            return (parts, true);
        }
        parts.unparked().await;
        let WriteParts { sink, outbox } = &mut parts;
        done = write_batches(sink.as_deref_mut().expect("taken back"), outbox, &clock, None).await;
    }
}

/// Sends what was still queued (when the close asks for it) and the close frame, within
/// [`CLOSE_TIMEOUT`]: the peer may have stopped reading.
async fn finish(sink: &mut dyn FrameSink, rest: Vec<Frame>, closing: Closing) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if closing.flush && !rest.is_empty() && sink.send(&rest).await.is_err() {
            return;
        }
        let _ = sink.close(closing.reason).await;
    })
    .await;
}

/// The reading half ended (the peer closed, or broke a rule and the close is set): the
/// writing half stops, finishing its write when the close flushes, while the peer's input is
/// read and thrown away.
async fn stop_writing(
    write: Half<WriteParts, Option<bool>>,
    clock: Clock,
    read: &mut ReadParts,
) -> (WriteParts, bool) {
    read.reader.outbox.close(CloseReason::new(Code::CONNECTION_CLOSED, "connection closed"), false);
    let mut finishing = std::pin::pin!(finish_writing(write, clock));
    tokio::select! {
        done = &mut finishing => done,
        () = discard_until_closed(read.stream.as_mut()) => finishing.await,
    }
}

/// How long a closing connection may take to flush and send its close frame.
pub(super) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest a closing connection keeps reading (and discarding) input after its close frame
/// went out.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// A closing connection whose peer sends nothing for this long has nothing left unread.
const CLOSE_QUIET: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads and throws away the peer's input until it closes its side. (A refused frame, binary,
/// is input like any other: read on.)
async fn discard_until_closed(stream: &mut dyn FrameStream) {
    while !matches!(stream.recv().await, Err(TransportError::Closed(_))) {}
}

/// Runs `closing` (sending what is queued and the close frame) while reading and discarding
/// the peer's input; then keeps discarding until the peer closes its side or goes quiet
/// ([`CLOSE_QUIET`]), at most [`CLOSE_LINGER`]. Dropping a socket with unread input makes the
/// kernel reset the connection, and a reset destroys what the peer had not read yet: the
/// answers and the close frame of a connection closed by policy (rate limit, slow consumer,
/// shutdown) while its client was still sending.
async fn close_gracefully(closing: impl std::future::Future<Output = ()>, stream: &mut dyn FrameStream) {
    tokio::pin!(closing);
    let peer_closed = tokio::select! {
        () = &mut closing => false,
        () = discard_until_closed(stream) => true,
    };
    if peer_closed {
        closing.await;
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(Ok(_) | Err(TransportError::Rejected(_))) =
            tokio::time::timeout(CLOSE_QUIET, stream.recv()).await
        {}
    })
    .await;
}
