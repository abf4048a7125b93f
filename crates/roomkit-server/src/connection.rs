//! One client connection, one task: its reading half logs in and routes requests, and its
//! writing half, beside it in the same task, drains the bounded send queue in batches.

use std::{future::Future, sync::Arc, time::Instant};

use crate::{
    keepalive::Clock,
    outbox::{Closing, Outbox},
    rate::{RateLimiter, Verdict},
    shard::{shard_of, ShardMsg},
    ServerShared,
};
use roomkit_core::{
    transport::{CloseReason, Connection, Frame, FrameSink, FrameStream, TransportError},
    ConnId, Identity,
};
use roomkit_protocol::{
    codec::{self, RequestFrame},
    ops::{Empty, Login, LoginOutput, Ping, Request},
    Code,
};

/// The task of a connection. (The futures of this module are `async move` blocks rather than
/// `async fn`s where they stay alive for a whole connection: an `async fn` keeps its
/// arguments twice, as given and as moved into its body.)
pub(crate) fn run(
    conn_id: ConnId,
    connection: Connection,
    shared: Arc<ServerShared>,
) -> impl Future<Output = ()> + Send {
    let Connection { sink, stream, peer } = connection;
    tracing::debug!(conn = conn_id.0, %peer, "connection opened");
    metrics::counter!("roomkit_connections_total").increment(1);
    metrics::gauge!("roomkit_connections").increment(1.0);
    let outbox = Outbox::with_bounds(Arc::clone(&shared.outbox_bounds));
    outbox.touch(&shared.clock);
    shared.connections.lock().expect("not poisoned").insert(conn_id, outbox.clone());
    // Live until the reader is dropped with the task (see `Drop for Reader`).
    shared.live.started();
    let reader = Reader {
        conn_id,
        outbox,
        identity: None,
        rate: RateLimiter::new(shared.config.rate_limit, Instant::now()),
        shared,
    };
    serve(reader, sink, stream, peer.into_boxed_str())
}

#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice
fn serve(
    mut reader: Reader,
    mut sink: Box<dyn FrameSink>,
    mut stream: Box<dyn FrameStream>,
    peer: Box<str>,
) -> impl Future<Output = ()> + Send {
    async move {
        let (outbox, shared) = (reader.outbox.clone(), Arc::clone(&reader.shared));
        // The writing half runs beside the reading half in this one task: a reader that waits
        // (on a full shard queue, on the authenticator) never holds up the writes.
        let wrote = {
            let write = write_lane(&mut sink, &outbox, &shared.clock);
            tokio::pin!(write);
            let read_ended = {
                // Polled by hand, the writing half first: a `select!` keeps a copy of its
                // futures' pins and its own state in the task.
                let (mut writing, mut read) = (write.as_mut(), std::pin::pin!(reader.run(&mut stream)));
                std::future::poll_fn(move |cx| match writing.as_mut().poll(cx) {
                    std::task::Poll::Ready(wrote) => std::task::Poll::Ready(Err(wrote)),
                    std::task::Poll::Pending => read.as_mut().poll(cx).map(Ok),
                })
                .await
            };
            match read_ended {
                Err(wrote) => wrote,
                // Boxed, like everything of the closing below.
                Ok(()) => Box::pin(stop_writing(&outbox, write, stream.as_mut())).await,
            }
        };
        // Boxed: an open connection's task does not carry the closing state.
        Box::pin(async {
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
        })
        .await;
        // The socket goes before the reader, whose drop tells shutdown this task has ended.
        drop((sink, stream));
        drop(reader);
    }
}

struct Reader {
    conn_id: ConnId,
    outbox: Outbox,
    shared: Arc<ServerShared>,
    identity: Option<Arc<Identity>>,
    rate: RateLimiter,
}

/// The reader lives in its connection's task to the end and is dropped with it (finished,
/// or unwound): its drop ends the task's count for shutdown ([`LiveTasks`](crate::live::LiveTasks)),
/// which costs a waiting connection nothing.
impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.live.ended();
    }
}

impl Reader {
    /// Reads and handles the peer's frames until the stream ends, the connection breaks a
    /// rule (the close is then set), or it is closing.
    #[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice
    fn run<'a>(&'a mut self, stream: &'a mut Box<dyn FrameStream>) -> impl Future<Output = ()> + Send + 'a {
        async move {
            // Boxed, and dropped once logged in: a logged-in idle member keeps no timer.
            let mut login_deadline = Some(Box::pin(tokio::time::sleep(self.shared.config.login_timeout)));
            loop {
                if self.identity.is_some() {
                    login_deadline = None;
                }
                // What was received does not outlive this block, so the handling of a frame
                // does not keep its room beside the boxed handler.
                let frame = {
                    // Until the login, the wait also watches the login timer: boxed, so that a
                    // logged-in member's task does not carry it.
                    let received = match login_deadline.as_mut() {
                        Some(deadline) => {
                            match Box::pin(read_or_expire(deadline.as_mut(), stream.as_mut())).await {
                                Some(received) => received,
                                None => {
                                    self.outbox.close(
                                        CloseReason::new(
                                            Code::UNAUTHENTICATED,
                                            "no login within the login timeout",
                                        ),
                                        true,
                                    );
                                    return;
                                }
                            }
                        }
                        None => {
                            // Waits on the transport's readiness first: an idle member's task
                            // holds no boxed receive.
                            std::future::poll_fn(|cx| stream.poll_readable(cx)).await;
                            stream.recv_or_alive().await
                        }
                    };
                    if self.outbox.is_closing() {
                        return;
                    }
                    if !matches!(received, Err(TransportError::Closed(_) | TransportError::Io(_))) {
                        self.outbox.touch(&self.shared.clock);
                    }
                    match received {
                        Ok(Some(frame)) => frame,
                        // The answer to a keep-alive ping, or a ping: alive, nothing to handle.
                        Ok(None) => continue,
                        // Refused frames count toward the rate limit like any other.
                        Err(TransportError::Rejected(reason)) => match self.admit(None) {
                            Verdict::Allow => {
                                self.reply_error(None, reason.code, &reason.reason);
                                continue;
                            }
                            Verdict::Refuse => continue,
                            Verdict::Close => return,
                        },
                        Err(TransportError::Violation(reason)) => {
                            self.reply_error(None, reason.code, &reason.reason);
                            self.outbox.close(reason, true);
                            return;
                        }
                        Err(_) => return,
                    }
                };
                // Boxed with the frame: a waiting reader holds neither.
                if !Box::pin(self.on_frame(frame)).await {
                    return;
                }
            }
        }
    }

    /// Handles one frame; false when the connection must close.
    async fn on_frame(&mut self, frame: bytes::Bytes) -> bool {
        let decoded = codec::decode_request(&frame);
        let id = decoded.as_ref().map_or_else(|e| e.id, |f| Some(f.id));
        match self.admit(id) {
            Verdict::Allow => {}
            Verdict::Refuse => return true,
            Verdict::Close => return false,
        }
        match decoded {
            Ok(decoded) => self.on_request(decoded, &frame).await,
            Err(e) => self.reply_error(e.id, e.code, &e.message),
        }
        true
    }

    /// The rate limit, for every frame, readable or not: over it, the frame is answered
    /// `RATE_LIMITED` (with its id when it has one) and not handled; when it persists, the
    /// connection is closed.
    fn admit(&mut self, id: Option<u64>) -> Verdict {
        let verdict = self.rate.check(self.shared.config.rate_limit, Instant::now());
        if verdict == Verdict::Allow {
            return verdict;
        }
        metrics::counter!("roomkit_rate_limited_total").increment(1);
        let limit = self.shared.config.rate_limit;
        let msg = format!("more than {} requests per second (burst {})", limit.per_second, limit.burst);
        self.reply_error(id, Code::RATE_LIMITED, &msg);
        if verdict == Verdict::Close {
            self.outbox
                .close(CloseReason::new(Code::RATE_LIMITED, "request rate limit exceeded repeatedly"), true);
        }
        verdict
    }

    /// Handles a decoded request; `raw` is the frame it came in (a cluster node forwards it
    /// as is).
    async fn on_request(&mut self, frame: RequestFrame, raw: &[u8]) {
        let RequestFrame { id, request } = frame;
        metrics::counter!("roomkit_requests_total", "op" => request.op()).increment(1);
        let Some(identity) = self.identity.clone() else {
            return match request {
                Request::Login(login) => self.login(id, login).await,
                _ => self.reply_error(Some(id), Code::UNAUTHENTICATED, "log in first"),
            };
        };
        match request {
            Request::Login(_) => {
                self.reply_error(Some(id), Code::ALREADY_LOGGED_IN, "this connection is already logged in")
            }
            Request::Ping(_) => {
                self.outbox.push(codec::encode_output::<Ping>(id, &Empty {}).into());
            }
            request => {
                let Some(room) = request.room_uuid() else {
                    return self.reply_error(
                        Some(id),
                        Code::UNKNOWN_OPERATION,
                        "operation not supported here",
                    );
                };
                if let Some(node) = &self.shared.cluster {
                    let raw = bytes::Bytes::copy_from_slice(raw);
                    return node.route(self.conn_id, &self.outbox, &identity, id, request, raw).await;
                }
                let shard = &self.shared.shards[shard_of(room, self.shared.shards.len())];
                let msg = ShardMsg::Request {
                    conn: self.conn_id,
                    outbox: Some(self.outbox.clone()),
                    identity,
                    request_id: id,
                    request,
                    received: Instant::now(),
                };
                if shard.tx.send(msg).await.is_err() {
                    self.reply_error(Some(id), Code::SERVER_SHUTTING_DOWN, "the server is shutting down");
                }
            }
        }
    }

    async fn login(&mut self, id: u64, login: Login) {
        match crate::auth::log_in(self.shared.authenticator.as_ref(), &login.account_id, &login.token).await {
            Ok(identity) => {
                if let Err(msg) = self.shared.admission.log_in(&identity.user) {
                    return self.reply_error(Some(id), Code::TOO_MANY_CONNECTIONS, &msg);
                }
                let output = LoginOutput { user_uuid: identity.user.clone(), name: identity.name.clone() };
                tracing::debug!(conn = self.conn_id.0, user = %identity.user, "logged in");
                self.identity = Some(Arc::new(identity));
                self.outbox.push(codec::encode_output::<Login>(id, &output).into());
            }
            Err(e) => self.reply_error(Some(id), e.code(), &e.to_string()),
        }
    }

    fn reply_error(&self, id: Option<u64>, code: Code, msg: &str) {
        self.outbox.push(codec::encode_error(id, code, msg).into());
    }
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

/// The writing half of a connection: drains the queue, everything queued since the last
/// write going out as one batch, flushed once. Returns once the connection is closing
/// (having finished the write under way if the close flushes): true, or false when a write
/// failed (the connection is then closed, with nothing more to send).
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice
fn write_lane<'a>(
    sink: &'a mut Box<dyn FrameSink>,
    outbox: &'a Outbox,
    clock: &'a Clock,
) -> impl Future<Output = bool> + Send + 'a {
    async move {
        loop {
            if outbox.ready().await {
                return true;
            }
            // Boxed while there is something to write: an idle connection's task holds no
            // batch and no write under way.
            if let Some(wrote) = Box::pin(write_batches(sink, outbox, clock)).await {
                return wrote;
            }
        }
    }
}

/// The peer's next frame or sign of life ([`FrameStream::recv_or_alive`]), or `None` when
/// `deadline` passes first.
async fn read_or_expire(
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    stream: &mut dyn FrameStream,
) -> Option<Result<Option<bytes::Bytes>, TransportError>> {
    tokio::select! {
        biased;
        () = deadline => None,
        received = stream.recv_or_alive() => Some(received),
    }
}

/// Writes what is queued, batch after batch, as long as more is queued meanwhile; `None` once
/// the queue is empty with no wake-up due (the connection is idle), else what
/// [`write_lane`] returns.
async fn write_batches(sink: &mut Box<dyn FrameSink>, outbox: &Outbox, clock: &Clock) -> Option<bool> {
    let mut batch = Vec::new();
    loop {
        let written = outbox.take(&mut batch);
        let mut busy = false;
        if !batch.is_empty() {
            metrics::histogram!("roomkit_write_batch_frames").record(batch.len() as f64);
            // A written batch with anything but pings in it is a sign of life for the keep-alive
            // (see `keepalive.rs`); the transport may take the frames out of `batch`.
            let alive = batch.iter().any(|frame| !frame.is_ping());
            let sent = {
                let mut send = sink.send_all(&mut batch);
                let sent = tokio::select! {
                    biased;
                    closing = outbox.closed() => Err(closing.flush),
                    sent = &mut send => Ok(sent),
                };
                // A peer that stopped reading must not keep a closing connection alive: a close
                // that flushes lets this write go on (the same write, not a new one) for at most
                // CLOSE_TIMEOUT; one that does not flush drops it (the transport finishes a cut
                // frame before the close frame).
                match sent {
                    Ok(sent) => sent,
                    Err(false) => return Some(true),
                    Err(true) => Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, send))
                        .await
                        .unwrap_or(Err(TransportError::Io("flushing timed out".into()))),
                }
            };
            if sent.is_err() {
                outbox.close(CloseReason::new(Code::CONNECTION_CLOSED, "write failed"), false);
                return Some(false);
            }
            if alive {
                outbox.touch(clock);
            }
            // An idle member should cost little: give back a burst's buffers.
            busy = !outbox.settle(&mut batch, written);
        }
        match outbox.ready_now() {
            Some(true) => return Some(true),
            Some(false) => {}
            // More was queued while this batch was written, its wake-up not asked for yet (a
            // shard wakes at the end of its burst): take it now, keeping the buffers.
            None if busy => {}
            None => return None,
        }
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
    outbox: &Outbox,
    mut write: std::pin::Pin<&mut impl std::future::Future<Output = bool>>,
    stream: &mut dyn FrameStream,
) -> bool {
    outbox.close(CloseReason::new(Code::CONNECTION_CLOSED, "connection closed"), false);
    tokio::select! {
        closing = &mut write => closing,
        () = discard_until_closed(stream) => write.await,
    }
}

/// How long a closing connection may take to flush and send its close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    /// The size of the future a function of three arguments returns.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle member holds one task, its future stored inline in the task's cell: what
    /// only a request, a write, the login or a close needs is boxed when it happens, so the
    /// task stays small. A tokio task adds 104 bytes to its future and is rounded up to 128:
    /// at most 280 bytes of future make a 384-byte task (408 made 512; a reader and a writer
    /// task took 640 bytes each).
    #[test]
    fn an_idle_connections_task_stays_small() {
        let size = future_size(super::run);
        assert!(size <= 280, "the connection's future takes {size} B");
    }
}
