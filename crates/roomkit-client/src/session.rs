//! The connection engine: request/response matching and event dispatch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
};

use roomkit_core::transport::{CloseReason, Connection, FrameSink, FrameStream, TransportError};
use roomkit_protocol::{
    codec::{self, ResponseFrame, ServerFrame},
    ops::{LoginOutput, Operation},
    Code, Event, RoomUuid,
};
use tokio::sync::oneshot;

use crate::{room::RoomState, ClientConfig, Error};

/// Runs on the receive task when a response arrives, before later frames are handled, so
/// that state a response creates (a joined room) is in place before the events behind it.
pub(crate) type Apply = Box<dyn FnOnce(&Session, &ResponseFrame) + Send>;

struct Pending {
    tx: oneshot::Sender<ResponseFrame>,
    apply: Option<Apply>,
}

/// One logged-in (or logging-in) connection and the rooms joined through it.
pub(crate) struct Session {
    pub(crate) config: ClientConfig,
    sink: tokio::sync::Mutex<Box<dyn FrameSink>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    pub(crate) rooms: Mutex<HashMap<RoomUuid, Arc<RoomState>>>,
    pub(crate) user: Mutex<Option<LoginOutput>>,
    closed: Mutex<Option<Error>>,
    receiver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping the last handle closes the connection: the receive task owns the read
        // half, and a transport closes once both halves are gone.
        if let Some(task) = self.receiver.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl Session {
    pub(crate) fn start(connection: Connection, config: ClientConfig) -> Arc<Session> {
        let Connection { sink, stream, .. } = connection;
        let session = Arc::new(Session {
            config,
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            rooms: Mutex::new(HashMap::new()),
            user: Mutex::new(None),
            closed: Mutex::new(None),
            receiver: Mutex::new(None),
        });
        let task = tokio::spawn(receive_loop(stream, Arc::downgrade(&session)));
        *session.receiver.lock().expect("not poisoned") = Some(task);
        session
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call<O: Operation>(&self, params: &O) -> Result<O::Output, Error> {
        self.call_then(params, None).await
    }

    /// Like [`call`](Self::call), running `apply` on the receive task when the response
    /// arrives.
    pub(crate) async fn call_then<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
    ) -> Result<O::Output, Error> {
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("not poisoned").insert(id, Pending { tx, apply });
        let frame = codec::encode_request(id, params);
        let sent = self.sink.lock().await.send(&[frame]).await;
        if let Err(e) = sent {
            self.pending.lock().expect("not poisoned").remove(&id);
            return Err(self.closed_error().unwrap_or_else(|| Error::transport(e)));
        }
        let response = match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                return Err(self
                    .closed_error()
                    .unwrap_or_else(|| Error::new(Code::CONNECTION_CLOSED, "connection closed")))
            }
            Err(_) => {
                self.pending.lock().expect("not poisoned").remove(&id);
                return Err(Error::new(
                    Code::TIMEOUT,
                    format!("no response to `{}` within {:?}", O::OP, self.config.request_timeout),
                ));
            }
        };
        if !response.code.is_success() {
            return Err(Error::new(response.code, response.msg));
        }
        response.output::<O>().map_err(|e| Error::new(e.code, e.message))
    }

    pub(crate) fn closed_error(&self) -> Option<Error> {
        self.closed.lock().expect("not poisoned").clone()
    }

    pub(crate) fn room(&self, room: &RoomUuid) -> Option<Arc<RoomState>> {
        self.rooms.lock().expect("not poisoned").get(room).cloned()
    }

    /// Closes the connection; pending and later calls fail with `CONNECTION_CLOSED`.
    pub(crate) async fn close(&self) {
        self.mark_closed(Error::new(Code::CONNECTION_CLOSED, "closed by the client"));
        let _ = self.sink.lock().await.close(CloseReason::new(Code::SUCCESS, "client closed")).await;
    }

    fn mark_closed(&self, error: Error) {
        self.closed.lock().expect("not poisoned").get_or_insert(error);
        // Dropping the senders fails every waiting call.
        self.pending.lock().expect("not poisoned").clear();
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
            apply(self, &response);
        }
        let _ = pending.tx.send(response);
    }

    fn on_event(&self, event: Event) {
        let Some(room) = self.room(event.room_uuid()) else { return };
        if matches!(event, Event::RoomEnd { .. }) {
            // The context is gone before any listener hears of the end.
            self.rooms.lock().expect("not poisoned").remove(&room.uuid);
        }
        room.apply_event(event);
    }
}

async fn receive_loop(mut stream: Box<dyn FrameStream>, session: Weak<Session>) {
    loop {
        let received = stream.recv().await;
        let Some(session) = session.upgrade() else { return };
        match received {
            Ok(frame) => match codec::decode_server_frame(&frame) {
                Ok(ServerFrame::Response(response)) => session.on_response(response),
                Ok(ServerFrame::Event(event)) => session.on_event(event),
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
                session.mark_closed(error);
                return;
            }
        }
    }
}
