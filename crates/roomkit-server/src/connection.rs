//! One client connection, one task: its reading half logs in and routes requests, and its
//! writing half, beside it in the same task, drains the bounded send queue in batches.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

mod close;
mod write;

use close::close;
pub(crate) use close::refuse;
use write::{write_now, write_step, Rest};

use crate::{
    outbox::{pool::Ready, Outbox},
    rate::{RateLimiter, Verdict},
    shard::{shard_of, ShardMsg},
    ServerShared,
};
use roomkit_core::{
    transport::{CloseReason, Connection, FrameSink, FrameStream, TransportError},
    ConnId, Identity,
};
use roomkit_protocol::{
    codec::{self, RequestFrame},
    ops::{Empty, Login, LoginOutput, Ping, Request},
    Code,
};

/// The task of a connection: see [`ConnTask`].
pub(crate) fn run(conn_id: ConnId, connection: Connection, shared: Arc<ServerShared>) -> ConnTask {
    let Connection { sink, stream, peer } = connection;
    tracing::debug!(conn = conn_id.0, %peer, "connection opened");
    metrics::counter!("roomkit_connections_total").increment(1);
    metrics::gauge!("roomkit_connections").increment(1.0);
    // Connections spread over the write pools by id (see `outbox::pool`).
    let pool = conn_id.0 % shared.pools.len().max(1) as u64;
    let outbox = Outbox::with_bounds(Arc::clone(&shared.outbox_bounds), pool as u16);
    outbox.touch(&shared.clock);
    shared.connections.lock().expect("not poisoned").insert(conn_id, outbox.clone());
    // Live until the reader is dropped with the task (see `Drop for Reader`).
    shared.live.started();
    // Boxed, and dropped once logged in: a logged-in idle member keeps no timer.
    let login_deadline = Some(Box::pin(tokio::time::sleep(shared.config.login_timeout)));
    let reader = Reader {
        conn_id,
        outbox: outbox.clone(),
        identity: None,
        rate: RateLimiter::new(shared.config.rate_limit, Instant::now()),
        shared: Arc::clone(&shared),
    };
    ConnTask(State::Open(Open {
        write: Half::Idle(WriteParts { sink: Some(sink), outbox }),
        read: Half::Idle(ReadParts { stream, login_deadline, reader }),
        shared,
        peer: peer.into_boxed_str(),
    }))
}

/// A connection's task: the reading half (log in, route requests) and the writing half (drain
/// the send queue) side by side, the writing half polled first, so that a reader that waits
/// (on a full shard queue, on the authenticator) never holds up the writes.
///
/// Written by hand rather than as an `async` block because every idle member has one, and a
/// tokio task stores its future inline: 152 bytes of future make a 256-byte task, the next
/// size a 384-byte one (tokio adds 104 bytes and aligns to 128). An idle half holds only its
/// parts and waits in a poll method (the outbox's [`poll_ready`](Outbox::poll_ready), the
/// stream's [`poll_readable`](FrameStream::poll_readable)); a half at work is one boxed step
/// that owns its parts and hands them back when it is done. An `async` block borrowing the
/// task's parts kept their references and pins too (248 bytes).
pub(crate) struct ConnTask(State);

enum State {
    Open(Open),
    /// One boxed future owns everything while the connection closes.
    Closing(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

/// An open connection's parts. (Fields drop in order: the socket before the reader, whose
/// drop tells shutdown that the task has ended.)
struct Open {
    write: Half<WriteParts, Option<bool>>,
    read: Half<ReadParts, bool>,
    shared: Arc<ServerShared>,
    peer: Box<str>,
}

/// A half of the connection: idle, holding its parts, or at work in a boxed step that owns
/// them and gives them back with its result.
enum Half<P, R> {
    Idle(P),
    Busy(Pin<Box<dyn Future<Output = (P, R)> + Send>>),
}

/// What the writing half owns: the sink and the queue it drains.
struct WriteParts {
    /// `None` while the sink is parked in the outbox, or with a write pool (see
    /// `outbox::pool`); always there when the half is busy.
    sink: Option<Box<dyn FrameSink>>,
    outbox: Outbox,
}

impl WriteParts {
    /// The sink, which the half holds while it writes.
    fn sink(&mut self) -> &mut dyn FrameSink {
        self.sink.as_deref_mut().expect("a writing half holds its sink")
    }

    /// Takes the sink back, if it is parked, waiting while a write pool writes with it.
    async fn unparked(&mut self) {
        if self.sink.is_none() {
            self.sink = Some(self.outbox.unpark().await);
        }
    }

    /// The half gone idle: its sink parked for the connection's write pool, when the server
    /// has pools, the transport writes in place, and nothing is queued.
    fn idle(mut self, shared: &ServerShared) -> Half<WriteParts, Option<bool>> {
        if let Some(sink) = self.sink.take_if(|sink| !shared.pools.is_empty() && sink.writes_in_place()) {
            self.sink = self.outbox.park(sink);
        }
        Half::Idle(self)
    }
}

/// What the reading half owns.
struct ReadParts {
    stream: Box<dyn FrameStream>,
    /// Until the login; then dropped.
    login_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    reader: Reader,
}

/// Which half ended first, with everything the closing needs.
enum Ended {
    /// The writing half: the connection is closing (`wrote`: false when a write failed).
    Write { write: WriteParts, wrote: bool, read: Half<ReadParts, bool> },
    /// The reading half: the peer closed or broke a rule.
    Read { read: ReadParts, write: Half<WriteParts, Option<bool>> },
}

impl Future for ConnTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            // Taken out and put back: moving a part between a half's states needs it owned.
            match std::mem::replace(&mut this.0, State::Done) {
                State::Open(open) => match open.poll_halves(cx) {
                    Ok(open) => {
                        this.0 = State::Open(open);
                        return Poll::Pending;
                    }
                    Err(closed) => {
                        let (ended, shared, peer) = *closed;
                        this.0 = State::Closing(Box::pin(close(ended, shared, peer)));
                    }
                },
                State::Closing(mut closing) => {
                    if closing.as_mut().poll(cx).is_pending() {
                        this.0 = State::Closing(closing);
                        return Poll::Pending;
                    }
                    return Poll::Ready(());
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

type Closed = (Ended, Arc<ServerShared>, Box<str>);

impl Open {
    /// Polls each half, the writing half first, until it waits (`Ok`) or one ends. A half
    /// that goes back to idle, or starts a step, is polled again at once.
    fn poll_halves(mut self, cx: &mut Context<'_>) -> Result<Self, Box<Closed>> {
        loop {
            self.write = match self.write {
                Half::Idle(mut parts) => {
                    // A write in place never waits, so it takes from the task's budget itself:
                    // a connection fed without pause yields to the other tasks (its wake-up is
                    // asked for), as one whose writes wait does.
                    let Poll::Ready(coop) = tokio::task::coop::poll_proceed(cx) else {
                        self.write = Half::Idle(parts);
                        break;
                    };
                    // With the sink back first if it was parked (see `outbox::pool`).
                    match parts.outbox.poll_ready_unparked(cx, &mut parts.sink) {
                        Poll::Pending => {
                            self.write = Half::Idle(parts);
                            break;
                        }
                        Poll::Ready(Ready::Closing) => {
                            let ended = Ended::Write { write: parts, wrote: true, read: self.read };
                            return Err(Box::new((ended, self.shared, self.peer)));
                        }
                        // What a pool's write left: a waiting send, even of nothing, finishes a
                        // frame cut part-way, then the frames put back go out.
                        Poll::Ready(Ready::Owed) => {
                            coop.made_progress();
                            Half::Busy(Box::pin(write_step(parts, self.shared.clock, Some(Rest::owed()))))
                        }
                        // Written in place when the socket takes it all (nearly always); boxed
                        // only for what must wait: an idle connection's task holds no batch
                        // and no write under way.
                        Poll::Ready(Ready::Write) => {
                            coop.made_progress();
                            match write_now(&mut parts, &self.shared.clock, cx) {
                                None => parts.idle(&self.shared),
                                Some(rest) => {
                                    Half::Busy(Box::pin(write_step(parts, self.shared.clock, Some(rest))))
                                }
                            }
                        }
                    }
                }
                Half::Busy(mut step) => match step.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.write = Half::Busy(step);
                        break;
                    }
                    Poll::Ready((parts, None)) => parts.idle(&self.shared),
                    Poll::Ready((parts, Some(wrote))) => {
                        let ended = Ended::Write { write: parts, wrote, read: self.read };
                        return Err(Box::new((ended, self.shared, self.peer)));
                    }
                },
            };
        }
        loop {
            self.read = match self.read {
                // Once logged in, an idle reader waits on the transport's readiness, holding
                // no boxed receive; until then its step also watches the login timer.
                Half::Idle(mut parts) => {
                    if parts.login_deadline.is_none() && parts.stream.poll_readable(cx).is_pending() {
                        self.read = Half::Idle(parts);
                        break;
                    }
                    Half::Busy(Box::pin(read_step(parts)))
                }
                Half::Busy(mut step) => match step.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.read = Half::Busy(step);
                        break;
                    }
                    Poll::Ready((parts, true)) => Half::Idle(parts),
                    Poll::Ready((parts, false)) => {
                        let ended = Ended::Read { read: parts, write: self.write };
                        return Err(Box::new((ended, self.shared, self.peer)));
                    }
                },
            };
        }
        Ok(self)
    }
}

/// The reading half's step: receives a frame and handles it; false once reading is over. It
/// stops wherever it is when the connection is closing, and gives its parts back (the closing
/// needs the stream and the reader).
async fn read_step(mut parts: ReadParts) -> (ReadParts, bool) {
    let outbox = parts.reader.outbox.clone();
    let go_on = {
        let mut next = std::pin::pin!(parts.next());
        std::future::poll_fn(|cx| match outbox.poll_closing(cx) {
            Poll::Ready(()) => Poll::Ready(false),
            Poll::Pending => next.as_mut().poll(cx),
        })
        .await
    };
    (parts, go_on)
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

impl ReadParts {
    /// Receives the peer's next frame or sign of life and handles it; false when reading is
    /// over: the stream ended, the connection broke a rule (the close is then set), or it is
    /// closing.
    async fn next(&mut self) -> bool {
        let reader = &mut self.reader;
        let received = match self.login_deadline.as_mut() {
            // Until the login, the wait also watches the login timer.
            Some(deadline) => match read_or_expire(deadline.as_mut(), self.stream.as_mut()).await {
                Some(received) => received,
                None => {
                    let reason = CloseReason::new(Code::UNAUTHENTICATED, "no login within the login timeout");
                    reader.outbox.close(reason, true);
                    return false;
                }
            },
            None => self.stream.recv_or_alive().await,
        };
        if reader.outbox.is_closing() {
            return false;
        }
        if !matches!(received, Err(TransportError::Closed(_) | TransportError::Io(_))) {
            reader.outbox.touch(&reader.shared.clock);
        }
        let frame = match received {
            Ok(Some(frame)) => frame,
            // The answer to a keep-alive ping, or a ping: alive, nothing to handle.
            Ok(None) => return true,
            // Refused frames count toward the rate limit like any other.
            Err(TransportError::Rejected(reason)) => {
                return match reader.admit(None) {
                    Verdict::Allow => {
                        reader.reply_error(None, reason.code, &reason.reason);
                        true
                    }
                    Verdict::Refuse => true,
                    Verdict::Close => false,
                }
            }
            Err(TransportError::Violation(reason)) => {
                reader.reply_error(None, reason.code, &reason.reason);
                reader.outbox.close(reason, true);
                return false;
            }
            Err(_) => return false,
        };
        let go_on = reader.on_frame(frame).await;
        if reader.identity.is_some() {
            self.login_deadline = None;
        }
        go_on
    }
}

impl Reader {
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
        crate::metrics::hot::request_received(request.op_index());
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

#[cfg(test)]
mod tests {
    /// Every idle member holds one task, its future stored inline in the task's cell: what
    /// only a request, a write, the login or a close needs is boxed when it happens, so the
    /// task stays small. A tokio task adds 104 bytes to its future and is rounded up to 128:
    /// at most 152 bytes of future make a 256-byte task (the `async` version's 248 made 384;
    /// a reader and a writer task took 640 bytes each).
    #[test]
    fn an_idle_connections_task_stays_small() {
        let size = std::mem::size_of::<super::ConnTask>();
        assert!(size <= 152, "the connection's future takes {size} B");
    }
}
