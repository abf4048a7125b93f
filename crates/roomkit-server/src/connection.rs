//! One client connection: a reader task that logs in and routes requests, and a writer
//! task that drains the bounded send queue in batches.

use std::{sync::Arc, time::Instant};

use roomkit_core::{
    transport::{CloseReason, Connection, Frame, FrameSink, FrameStream, TransportError},
    ConnId, Identity,
};
use roomkit_protocol::{
    codec::{self, RequestFrame},
    ops::{Empty, Login, LoginOutput, Ping, Request},
    Code,
};
use tokio::task::JoinHandle;

use crate::{
    keepalive::{LastSeen, Live},
    outbox::{Closer, Closing, Outbox},
    rate::{RateLimiter, Verdict},
    shard::{shard_of, ShardMsg},
    ServerShared,
};

pub(crate) async fn run(conn_id: ConnId, connection: Connection, shared: Arc<ServerShared>) {
    let Connection { sink, stream, peer } = connection;
    tracing::debug!(conn = conn_id.0, %peer, "connection opened");
    metrics::counter!("roomkit_connections_total").increment(1);
    metrics::gauge!("roomkit_connections").increment(1.0);
    let closer = Closer::new();
    let config = &shared.config;
    let outbox = Outbox::new(
        config.send_queue_frames,
        config.high_watermark(),
        config.send_queue_bytes,
        closer.clone(),
    );
    let seen = LastSeen::now(&shared.clock);
    let live = Live { closer: closer.clone(), outbox: outbox.clone(), seen: Arc::clone(&seen) };
    shared.connections.lock().expect("not poisoned").insert(conn_id, live);
    let progress = Progress { seen: Arc::clone(&seen), clock: shared.clock };
    let writer = tokio::spawn(write_loop(sink, outbox.clone(), closer.clone(), progress));

    let rate = RateLimiter::new(shared.config.rate_limit, Instant::now());
    let mut reader = Reader {
        conn_id,
        outbox,
        closer: closer.clone(),
        shared: Arc::clone(&shared),
        identity: None,
        rate,
        seen,
    };
    let mut stream = stream;
    reader.run(&mut stream).await;

    let address = crate::admission::address_of(&peer);
    // Boxed: an open connection's task does not carry the closing state.
    Box::pin(async move {
        closer.close(CloseReason::new(Code::CONNECTION_CLOSED, "connection closed"), false);
        if let Some(node) = &shared.cluster {
            node.disconnect(conn_id).await;
        } else {
            for shard in &shared.shards {
                let _ = shard.tx.send(ShardMsg::Disconnect { conn: conn_id }).await;
            }
        }
        shared.connections.lock().expect("not poisoned").remove(&conn_id);
        shared.admission.release(&address);
        if let Some(identity) = &reader.identity {
            shared.admission.log_out(&identity.user);
        }
        close_gracefully(writer, stream).await;
    })
    .await;
    metrics::gauge!("roomkit_connections").decrement(1.0);
    tracing::debug!(conn = conn_id.0, %peer, "connection closed");
}

struct Reader {
    conn_id: ConnId,
    outbox: Outbox,
    closer: Closer,
    shared: Arc<ServerShared>,
    identity: Option<Arc<Identity>>,
    rate: RateLimiter,
    /// When anything last arrived from the peer, for the keep-alive sweep.
    seen: Arc<LastSeen>,
}

impl Reader {
    async fn run(&mut self, stream: &mut Box<dyn FrameStream>) {
        // Boxed, and dropped once logged in: a logged-in idle member keeps no timer.
        let mut login_deadline = Some(Box::pin(tokio::time::sleep(self.shared.config.login_timeout)));
        loop {
            if self.identity.is_some() {
                login_deadline = None;
            }
            let received = tokio::select! {
                biased;
                _ = self.closer.closed() => return,
                () = async { login_deadline.as_mut().expect("checked").await }, if login_deadline.is_some() => {
                    self.closer.close(CloseReason::new(Code::UNAUTHENTICATED, "no login within the login timeout"), true);
                    return;
                }
                received = stream.recv_or_alive() => received,
            };
            if !matches!(received, Err(TransportError::Closed(_) | TransportError::Io(_))) {
                self.seen.touch(&self.shared.clock);
            }
            match received {
                // The answer to a keep-alive ping, or a ping: alive, nothing to handle.
                Ok(None) => {}
                Ok(Some(frame)) => {
                    if !Box::pin(self.on_frame(&frame)).await {
                        return;
                    }
                }
                // Refused frames count toward the rate limit like any other.
                Err(TransportError::Rejected(reason)) => match self.admit(None) {
                    Verdict::Allow => self.reply_error(None, reason.code, &reason.reason),
                    Verdict::Refuse => {}
                    Verdict::Close => return,
                },
                Err(TransportError::Violation(reason)) => {
                    self.reply_error(None, reason.code, &reason.reason);
                    self.closer.close(reason, true);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Handles one frame; false when the connection must close.
    async fn on_frame(&mut self, frame: &[u8]) -> bool {
        let decoded = codec::decode_request(frame);
        let id = decoded.as_ref().map_or_else(|e| e.id, |f| Some(f.id));
        match self.admit(id) {
            Verdict::Allow => {}
            Verdict::Refuse => return true,
            Verdict::Close => return false,
        }
        match decoded {
            Ok(decoded) => self.on_request(decoded, frame).await,
            Err(e) => self.reply_error(e.id, e.code, &e.message),
        }
        true
    }

    /// The rate limit, for every frame, readable or not: over it, the frame is answered
    /// `RATE_LIMITED` (with its id when it has one) and not handled; when it persists, the
    /// connection is closed.
    fn admit(&mut self, id: Option<u64>) -> Verdict {
        let verdict = self.rate.check(Instant::now());
        if verdict == Verdict::Allow {
            return verdict;
        }
        metrics::counter!("roomkit_rate_limited_total").increment(1);
        let limit = self.shared.config.rate_limit;
        let msg = format!("more than {} requests per second (burst {})", limit.per_second, limit.burst);
        self.reply_error(id, Code::RATE_LIMITED, &msg);
        if verdict == Verdict::Close {
            self.closer
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
                    return node.route(self.conn_id, &self.outbox, &identity, &request, raw).await;
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
    let Connection { mut sink, stream, peer } = connection;
    tracing::debug!(%peer, %reason, "connection refused");
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close(reason)).await;
    });
    close_gracefully(writer, stream).await;
}

/// Where the writer records its progress: a written batch with anything but pings in it is a
/// sign of life for the keep-alive (see `keepalive.rs`).
struct Progress {
    seen: Arc<LastSeen>,
    clock: crate::keepalive::Clock,
}

/// Drains the queue: everything queued since the last write goes out as one batch, flushed
/// once.
async fn write_loop(mut sink: Box<dyn FrameSink>, outbox: Outbox, closer: Closer, progress: Progress) {
    let mut batch = Vec::new();
    let closing = loop {
        tokio::select! {
            biased;
            closing = closer.closed() => break closing,
            () = outbox.ready() => {}
        }
        outbox.take(&mut batch);
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("roomkit_write_batch_frames").record(batch.len() as f64);
        let sent = {
            let send = sink.send(&batch);
            tokio::pin!(send);
            tokio::select! {
                biased;
                // A peer that stopped reading must not keep a closing connection alive: a close
                // that flushes lets this write go on (the same write, not a new one) for at most
                // CLOSE_TIMEOUT; one that does not flush drops it (the transport finishes a cut
                // frame before the close frame).
                closing = closer.closed() => {
                    if !closing.flush {
                        break closing;
                    }
                    tokio::time::timeout(CLOSE_TIMEOUT, send)
                        .await
                        .unwrap_or(Err(TransportError::Io("flushing timed out".into())))
                }
                sent = &mut send => sent,
            }
        };
        if sent.is_err() {
            closer.close(CloseReason::new(Code::CONNECTION_CLOSED, "write failed"), false);
            outbox.shut();
            return;
        }
        if batch.iter().any(|frame| !frame.is_ping()) {
            progress.seen.touch(&progress.clock);
        }
        // An idle member should cost little: give back a burst's buffers.
        outbox.settle(&mut batch);
    };
    let rest = outbox.shut();
    // Boxed: an open connection's writer does not carry the closing state.
    Box::pin(finish(sink, rest, closing)).await;
}

/// Sends what was still queued (when the close asks for it) and the close frame, within
/// [`CLOSE_TIMEOUT`]: the peer may have stopped reading.
async fn finish(mut sink: Box<dyn FrameSink>, rest: Vec<Frame>, closing: Closing) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if closing.flush && !rest.is_empty() && sink.send(&rest).await.is_err() {
            return;
        }
        let _ = sink.close(closing.reason).await;
    })
    .await;
}

/// How long a closing connection may take to flush and send its close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest a closing connection keeps reading (and discarding) input after its close frame
/// went out.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// A closing connection whose peer sends nothing for this long has nothing left unread.
const CLOSE_QUIET: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits for the writer to send what is queued and the close frame while reading and
/// discarding the peer's input; then keeps discarding until the peer closes its side or goes
/// quiet ([`CLOSE_QUIET`]), at most [`CLOSE_LINGER`]. Dropping a socket with unread input
/// makes the kernel reset the connection, and a reset destroys what the peer had not read
/// yet: the answers and the close frame of a connection closed by policy (rate limit, slow
/// consumer, shutdown) while its client was still sending.
async fn close_gracefully(mut writer: JoinHandle<()>, mut stream: Box<dyn FrameStream>) {
    let peer_closed = {
        // A refused frame (binary) is input like any other: read on.
        let drain = async { while !matches!(stream.recv().await, Err(TransportError::Closed(_))) {} };
        tokio::pin!(drain);
        tokio::select! {
            _ = &mut writer => false,
            () = &mut drain => true,
        }
    };
    if peer_closed {
        let _ = writer.await;
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
    /// The size of the future an async fn of three arguments returns.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future an async fn of four arguments returns.
    fn future_size4<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle member holds a reader and a writer task: what only a request or a close
    /// needs is boxed when it happens, so the tasks stay small (they were 1.5 KB and 0.5 KB).
    #[test]
    fn an_idle_connections_tasks_stay_small() {
        let (reader, writer) = (future_size(super::run), future_size4(super::write_loop));
        assert!(reader <= 768 && writer <= 512, "reader {reader} B, writer {writer} B");
    }
}
