//! Requests and their answers over the current connection: request ids, pending calls, and the
//! receive loop.
//!
//! This layer knows frames, ids and connections, not rooms: the receive loop hands events
//! and the loss of the connection to an [`Inbound`] (the session), and a response to the
//! call waiting for it, after running the call's [`Apply`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
};

use roomkit_core::transport::{CloseReason, Frame, FrameSink, FrameStream, TransportError};
use roomkit_protocol::{
    codec::{self, ResponseFrame, ServerFrame},
    ops::Operation,
    Code, Event,
};
use tokio::sync::oneshot;

use crate::Error;

/// Runs on the receive task when a response arrives, before later frames are handled, so
/// that state a response creates (a joined room) is in place before the events behind it.
pub(crate) type Apply = Box<dyn FnOnce(&ResponseFrame) + Send>;

/// What the receive loop tells its owner.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// The request layer whose calls the loop answers.
    fn rpc(&self) -> &Rpc;
    /// A server event arrived.
    fn on_event(&self, event: Event);
    /// The connection of `epoch` ended with `error`.
    fn on_lost(self: Arc<Self>, epoch: u64, error: Error);
}

/// How a call is made.
#[derive(Default)]
pub(crate) struct CallOptions {
    /// Run on the receive task when the response arrives.
    pub(crate) apply: Option<Apply>,
    /// Kept and written again after a reconnect instead of failing (sends: the server
    /// recognises their message ids).
    pub(crate) resend: bool,
    /// Send only on this connection (an [`Rpc::epoch`]): a request meant for the connection
    /// the caller saw established must not go out on a newer one that has not resumed yet
    /// (it would reach the server before the rooms are rejoined). A resendable request is
    /// `Rpc::send` then sends nothing and hands the options back ([`Refused::Stale`]).
    pub(crate) epoch: Option<u64>,
}

/// Why [`Rpc::send`] sent nothing.
pub(crate) enum Refused {
    /// The connection is not the one of [`CallOptions::epoch`]; the options come back.
    Stale(CallOptions),
    /// Sending failed.
    Failed(Error),
}

struct Pending {
    tx: oneshot::Sender<ResponseFrame>,
    apply: Option<Apply>,
    /// The frame to write again after a reconnect, for a resendable call.
    frame: Option<Frame>,
}

/// Request ids, calls waiting for their answers, and the current connection's sending half.
pub(crate) struct Rpc {
    /// `None` between connections.
    sink: tokio::sync::Mutex<Option<Box<dyn FrameSink>>>,
    /// Which connection is current; a receive loop of an older one changes nothing.
    epoch: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    receiver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Frames received from the server so far, on any connection: the keep-alive counts any
    /// frame as a sign of life.
    heard: AtomicU64,
}

impl Drop for Rpc {
    fn drop(&mut self) {
        // The receive task owns the read half; a transport closes once both halves are gone.
        if let Some(task) = self.receiver.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl Rpc {
    pub(crate) fn new() -> Self {
        Self {
            sink: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            receiver: Mutex::new(None),
            heard: AtomicU64::new(0),
        }
    }

    /// Makes a connection current: its sink takes the writes, a new receive loop reads its
    /// stream on behalf of `owner`. Returns the connection's epoch.
    pub(crate) async fn install<H: Inbound>(
        &self,
        owner: &Arc<H>,
        sink: Box<dyn FrameSink>,
        stream: Box<dyn FrameStream>,
    ) -> u64 {
        // The epoch moves with the sink, under its lock: a send that finds the new sink
        // finds the new epoch too.
        let mut current = self.sink.lock().await;
        *current = Some(sink);
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        drop(current);
        let task = tokio::spawn(receive_loop(stream, Arc::downgrade(owner), epoch));
        if let Some(old) = self.receiver.lock().expect("not poisoned").replace(task) {
            old.abort();
        }
        epoch
    }

    /// How many frames have been received from the server so far (see `keepalive.rs`).
    pub(crate) fn heard(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// The current connection's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether `epoch` is the current connection's.
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::SeqCst) == epoch
    }

    /// Sends a request on the current connection, whatever the state, and returns the
    /// receiver of its answer with the request id.
    pub(crate) async fn send<O: Operation>(
        &self,
        params: &O,
        options: CallOptions,
    ) -> Result<(oneshot::Receiver<ResponseFrame>, u64), Refused> {
        let mut sink = self.sink.lock().await;
        if options.epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst)) {
            // Nothing was sent or kept: the caller waits for the new connection to be
            // resumed and sends again.
            return Err(Refused::Stale(options));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let frame = Frame::from(codec::encode_request(id, params));
        let pending = Pending { tx, apply: options.apply, frame: options.resend.then(|| frame.clone()) };
        self.pending.lock().expect("not poisoned").insert(id, pending);
        let sent = match sink.as_mut() {
            Some(sink) => sink.send(&[frame]).await.map_err(Error::transport),
            None => Err(Error::new(Code::CONNECTION_CLOSED, "not connected")),
        };
        drop(sink);
        match sent {
            Err(e) if !options.resend => {
                self.pending.lock().expect("not poisoned").remove(&id);
                Err(Refused::Failed(e))
            }
            // A resendable call is kept: written again once the connection is back.
            _ => Ok((rx, id)),
        }
    }

    /// Forgets a call that timed out.
    pub(crate) fn forget(&self, id: u64) {
        self.pending.lock().expect("not poisoned").remove(&id);
    }

    /// The connection dropped: calls whose answers are lost with it fail, resendable ones
    /// wait for the next connection.
    pub(crate) fn connection_lost(&self) {
        if let Ok(mut sink) = self.sink.try_lock() {
            *sink = None;
        }
        self.pending.lock().expect("not poisoned").retain(|_, p| p.frame.is_some());
    }

    /// Fails every waiting call (dropping a sender fails its call).
    pub(crate) fn fail_all(&self) {
        self.pending.lock().expect("not poisoned").clear();
    }

    /// Writes again what was sent, resendable, and not answered.
    pub(crate) async fn resend_pending(&self) {
        let frames: Vec<Frame> =
            self.pending.lock().expect("not poisoned").values().filter_map(|p| p.frame.clone()).collect();
        if frames.is_empty() {
            return;
        }
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let _ = sink.send(&frames).await;
        }
    }

    /// Closes the current connection with `reason`.
    pub(crate) async fn close(&self, reason: CloseReason) {
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let _ = sink.close(reason).await;
        }
    }

    fn on_response(&self, response: ResponseFrame) {
        let Some(id) = response.id else {
            tracing::warn!(code = %response.code, msg = %response.msg, "server refused a frame");
            return;
        };
        let Some(pending) = self.pending.lock().expect("not poisoned").remove(&id) else {
            return; // timed out meanwhile
        };
        if let Some(apply) = pending.apply {
            apply(&response);
        }
        let _ = pending.tx.send(response);
    }
}

/// A call's answer: the output, or the error code and message the server gave.
pub(crate) fn output<O: Operation>(response: ResponseFrame) -> Result<O::Output, Error> {
    if !response.code.is_success() {
        return Err(Error::new(response.code, response.msg));
    }
    response.output::<O>().map_err(|e| Error::new(e.code, e.message))
}

async fn receive_loop<H: Inbound>(mut stream: Box<dyn FrameStream>, owner: Weak<H>, epoch: u64) {
    loop {
        let received = stream.recv().await;
        let Some(owner) = owner.upgrade() else { return };
        if received.is_ok() && owner.rpc().is_current(epoch) {
            owner.rpc().heard.fetch_add(1, Ordering::Relaxed);
        }
        match received {
            Ok(frame) => match codec::decode_server_frame(&frame) {
                Ok(ServerFrame::Response(response)) => owner.rpc().on_response(response),
                Ok(ServerFrame::Event(event)) => owner.on_event(event),
                Err(e) => tracing::warn!(error = %e, "undecodable frame from the server"),
            },
            Err(e) => {
                // The server's reason, when it gave one, is the error's code.
                let error = match &e {
                    TransportError::Closed(Some(reason)) if !reason.code.is_success() => {
                        Error::new(reason.code, format!("connection closed by the server: {}", reason.reason))
                    }
                    other => Error::new(Code::CONNECTION_CLOSED, other.to_string()),
                };
                owner.on_lost(epoch, error);
                return;
            }
        }
    }
}
