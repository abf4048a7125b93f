//! The connection engine: request/response matching, event dispatch, and reconnection.
//!
//! A session outlives its connections. When a connection drops (not closed by the app or
//! refused for good by the server), the session reconnects with exponential backoff and
//! jitter, logs in again, rejoins every room and chatroom, catches up on missed chatroom
//! messages by sequence number, and resends unacknowledged sends (the server recognises
//! their message ids, so each is stored and delivered once).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use roomkit_core::transport::{CloseReason, Connection, Connector, FrameSink, FrameStream, TransportError};
use roomkit_protocol::{
    codec::{self, ResponseFrame, ServerFrame},
    ops::{FetchChatroomHistory, JoinChatroom, Login, LoginOutput, Operation},
    Code, EndReason, Event, HistoryOrder, RoomUuid,
};
use tokio::sync::{mpsc, oneshot};

use crate::{room::RoomState, ClientConfig, ConnectionState, Error, RoomEvent};

/// Runs on the receive task when a response arrives, before later frames are handled, so
/// that state a response creates (a joined room) is in place before the events behind it.
pub(crate) type Apply = Box<dyn FnOnce(&Session, &ResponseFrame) + Send>;

#[derive(Default)]
struct ReconnectCtl {
    running: bool,
    /// The connection the loop was resuming on dropped too.
    lost_again: bool,
}

struct Pending {
    tx: oneshot::Sender<ResponseFrame>,
    apply: Option<Apply>,
    /// Resent after a reconnect instead of failing (sends: the server deduplicates them).
    frame: Option<Bytes>,
}

/// One logical connection to a server, and the rooms joined through it.
pub(crate) struct Session {
    pub(crate) config: ClientConfig,
    connector: Arc<dyn Connector>,
    /// The current connection's sending half; `None` between connections.
    sink: tokio::sync::Mutex<Option<Box<dyn FrameSink>>>,
    /// Which connection is current; a receive loop of an older one changes nothing.
    epoch: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    pub(crate) rooms: Mutex<HashMap<RoomUuid, Arc<RoomState>>>,
    pub(crate) user: Mutex<Option<LoginOutput>>,
    credentials: Mutex<Option<Login>>,
    state: Mutex<ConnectionState>,
    state_listeners: Mutex<Vec<mpsc::UnboundedSender<ConnectionState>>>,
    state_changed: tokio::sync::Notify,
    /// Set once the session is over for good.
    closed: Mutex<Option<Error>>,
    /// At most one reconnect loop runs; a drop during it makes it try again.
    reconnecting: Mutex<ReconnectCtl>,
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
    pub(crate) fn start(
        connection: Connection,
        connector: Arc<dyn Connector>,
        config: ClientConfig,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            config,
            connector,
            sink: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            rooms: Mutex::new(HashMap::new()),
            user: Mutex::new(None),
            credentials: Mutex::new(None),
            state: Mutex::new(ConnectionState::Connecting),
            state_listeners: Mutex::new(Vec::new()),
            state_changed: tokio::sync::Notify::new(),
            closed: Mutex::new(None),
            reconnecting: Mutex::default(),
            receiver: Mutex::new(None),
        });
        let Connection { sink, stream, .. } = connection;
        *session.sink.try_lock().expect("nobody else has the session yet") = Some(sink);
        session.spawn_receiver(stream);
        session.set_state(ConnectionState::Connected);
        session
    }

    /// Makes `connection` the current one.
    async fn install(self: &Arc<Self>, connection: Connection) {
        let Connection { sink, stream, .. } = connection;
        *self.sink.lock().await = Some(sink);
        self.spawn_receiver(stream);
    }

    fn spawn_receiver(self: &Arc<Self>, stream: Box<dyn FrameStream>) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let task = tokio::spawn(receive_loop(stream, Arc::downgrade(self), epoch));
        if let Some(old) = self.receiver.lock().expect("not poisoned").replace(task) {
            old.abort();
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.state.lock().expect("not poisoned").clone()
    }

    fn set_state(&self, state: ConnectionState) {
        {
            let mut current = self.state.lock().expect("not poisoned");
            if *current == state {
                return;
            }
            *current = state.clone();
        }
        self.state_listeners.lock().expect("not poisoned").retain(|l| l.send(state.clone()).is_ok());
        self.state_changed.notify_waiters();
    }

    pub(crate) fn state_events(&self) -> mpsc::UnboundedReceiver<ConnectionState> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state_listeners.lock().expect("not poisoned").push(tx);
        rx
    }

    /// Remembers the credentials for reconnecting.
    pub(crate) fn remember_login(&self, login: Login, output: LoginOutput) {
        *self.credentials.lock().expect("not poisoned") = Some(login);
        *self.user.lock().expect("not poisoned") = Some(output);
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call<O: Operation>(&self, params: &O) -> Result<O::Output, Error> {
        self.request(params, None, false).await
    }

    /// Like [`call`](Self::call), running `apply` on the receive task when the response
    /// arrives.
    pub(crate) async fn call_then<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
    ) -> Result<O::Output, Error> {
        self.request(params, apply, false).await
    }

    /// A send: if the connection drops before the answer, it is sent again after the
    /// reconnect with the same message id, so it is stored and delivered once.
    pub(crate) async fn call_retrying<O: Operation>(&self, params: &O) -> Result<O::Output, Error> {
        self.request(params, None, true).await
    }

    async fn request<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
        retry: bool,
    ) -> Result<O::Output, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        // While reconnecting, wait (within the request timeout) for the connection to be back.
        loop {
            if let Some(e) = self.closed_error() {
                return Err(e);
            }
            let notified = self.state_changed.notified();
            if self.state() == ConnectionState::Connected {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    Code::TIMEOUT,
                    format!("not connected within {:?}", self.config.request_timeout),
                ));
            }
        }
        let (rx, id) = self.send_request(params, apply, retry).await?;
        self.await_response::<O>(rx, id, deadline).await
    }

    /// Sends on the current connection, whatever the state (the reconnect task uses this).
    async fn send_request<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
        retry: bool,
    ) -> Result<(oneshot::Receiver<ResponseFrame>, u64), Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let frame = codec::encode_request(id, params);
        self.pending
            .lock()
            .expect("not poisoned")
            .insert(id, Pending { tx, apply, frame: retry.then(|| frame.clone()) });
        let mut sink = self.sink.lock().await;
        let sent = match sink.as_mut() {
            Some(sink) => sink.send(&[frame]).await.map_err(Error::transport),
            None => Err(Error::new(Code::CONNECTION_CLOSED, "not connected")),
        };
        drop(sink);
        if let Err(e) = sent {
            if !retry {
                self.pending.lock().expect("not poisoned").remove(&id);
                return Err(self.closed_error().unwrap_or(e));
            }
            // Kept: resent once the connection is back.
        }
        Ok((rx, id))
    }

    async fn await_response<O: Operation>(
        &self,
        rx: oneshot::Receiver<ResponseFrame>,
        id: u64,
        deadline: tokio::time::Instant,
    ) -> Result<O::Output, Error> {
        let response = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                return Err(self.closed_error().unwrap_or_else(|| {
                    Error::new(Code::CONNECTION_CLOSED, "the connection dropped before the answer")
                }))
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

    /// A request on the current connection while reconnecting.
    async fn internal_call<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
    ) -> Result<O::Output, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let (rx, id) = self.send_request(params, apply, false).await?;
        self.await_response::<O>(rx, id, deadline).await
    }

    pub(crate) fn closed_error(&self) -> Option<Error> {
        self.closed.lock().expect("not poisoned").clone()
    }

    pub(crate) fn room(&self, room: &RoomUuid) -> Option<Arc<RoomState>> {
        self.rooms.lock().expect("not poisoned").get(room).cloned()
    }

    /// Closes the connection for good; pending and later calls fail with
    /// `CONNECTION_CLOSED`.
    pub(crate) async fn close(&self) {
        // Closing on purpose is leaving: others should not wait out a reconnect grace period.
        if self.state() == ConnectionState::Connected {
            let rooms: Vec<RoomUuid> = self.rooms.lock().expect("not poisoned").keys().cloned().collect();
            for room_uuid in rooms {
                let leave = roomkit_protocol::ops::LeaveRoom { room_uuid };
                let _ = tokio::time::timeout(Duration::from_secs(2), self.internal_call(&leave, None)).await;
            }
        }
        self.end(Error::new(Code::CONNECTION_CLOSED, "closed by the client"));
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let _ = sink.close(CloseReason::new(Code::SUCCESS, "client closed")).await;
        }
    }

    /// The session is over: fail everything waiting, tell listeners.
    fn end(&self, error: Error) {
        self.closed.lock().expect("not poisoned").get_or_insert(error.clone());
        // Dropping the senders fails every waiting call.
        self.pending.lock().expect("not poisoned").clear();
        self.set_state(ConnectionState::Disconnected { code: error.code(), msg: error.msg().to_string() });
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

    /// The current connection ended with `error`.
    fn on_lost(self: &Arc<Self>, epoch: u64, error: Error) {
        if self.epoch.load(Ordering::SeqCst) != epoch || self.closed_error().is_some() {
            return;
        }
        let logged_in = self.credentials.lock().expect("not poisoned").is_some();
        let final_code = matches!(error.code(), Code::UNAUTHENTICATED | Code::AUTH_EXPIRED | Code::FORBIDDEN);
        if !self.config.reconnect.enabled || !logged_in || final_code {
            self.end(error);
            return;
        }
        if let Ok(mut sink) = self.sink.try_lock() {
            *sink = None;
        }
        // Answers to anything but sends are lost with the connection.
        self.pending.lock().expect("not poisoned").retain(|_, p| p.frame.is_some());
        {
            let mut ctl = self.reconnecting.lock().expect("not poisoned");
            if ctl.running {
                ctl.lost_again = true; // the running loop tries again
                return;
            }
            ctl.running = true;
        }
        self.set_state(ConnectionState::Reconnecting { attempt: 1 });
        tokio::spawn(reconnect(Arc::downgrade(self), error));
    }
}

async fn receive_loop(mut stream: Box<dyn FrameStream>, session: Weak<Session>, epoch: u64) {
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
                session.on_lost(epoch, error);
                return;
            }
        }
    }
}

/// Backoff before attempt `n` (1-based): exponential from `initial`, capped at `max`, with up
/// to 50 % random jitter so that many clients do not reconnect in lockstep.
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(max);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (exp.as_millis() as u64 / 2 + 1);
    exp.saturating_sub(Duration::from_millis(jitter))
}

async fn reconnect(session: Weak<Session>, mut last_error: Error) {
    let policy = match session.upgrade() {
        Some(s) => s.config.reconnect.clone(),
        None => return,
    };
    for attempt in 1..=policy.max_attempts.max(1) {
        tokio::time::sleep(backoff(policy.initial_backoff, policy.max_backoff, attempt)).await;
        let Some(session) = session.upgrade() else { return };
        if session.closed_error().is_some() {
            return;
        }
        session.set_state(ConnectionState::Reconnecting { attempt });
        session.reconnecting.lock().expect("not poisoned").lost_again = false;
        match session.connector.connect().await {
            Ok(connection) => session.install(connection).await,
            Err(e) => {
                last_error = Error::transport(e);
                continue;
            }
        }
        match resume(&session).await {
            Ok(()) => {
                {
                    let mut ctl = session.reconnecting.lock().expect("not poisoned");
                    if ctl.lost_again {
                        continue; // dropped while resuming: once more
                    }
                    ctl.running = false;
                    session.set_state(ConnectionState::Connected);
                }
                resend_pending(&session).await;
                return;
            }
            Err(e) if matches!(e.code(), Code::UNAUTHENTICATED | Code::AUTH_EXPIRED) => {
                session.reconnecting.lock().expect("not poisoned").running = false;
                session.end(e);
                return;
            }
            Err(e) => last_error = e,
        }
    }
    if let Some(session) = session.upgrade() {
        session.reconnecting.lock().expect("not poisoned").running = false;
        session.end(Error::new(
            Code::CONNECTION_CLOSED,
            format!("gave up reconnecting after {} attempts: {}", policy.max_attempts, last_error.msg()),
        ));
    }
}

/// Logs in again, rejoins every room and chatroom, and catches up on missed messages.
async fn resume(session: &Session) -> Result<(), Error> {
    let login =
        session.credentials.lock().expect("not poisoned").clone().expect("only logged-in sessions reconnect");
    let output = session.internal_call(&login, None).await?;
    *session.user.lock().expect("not poisoned") = Some(output);
    let rooms: Vec<Arc<RoomState>> = session.rooms.lock().expect("not poisoned").values().cloned().collect();
    for room in rooms {
        let in_chatroom = room.local_in_chatroom();
        room.begin_resume();
        let state = Arc::clone(&room);
        let apply: Apply = Box::new(move |_, response| {
            if let Ok(out) = response.output::<roomkit_protocol::ops::JoinRoom>() {
                state.refresh(out.room, out.members);
            }
        });
        let mut join = room.join_params();
        join.resume = true;
        match session.internal_call(&join, Some(apply)).await {
            Ok(_) => {}
            Err(e) if matches!(e.code(), Code::ROOM_NOT_EXIST | Code::ROOM_ENDED) => {
                session.rooms.lock().expect("not poisoned").remove(&room.uuid);
                room.notify(RoomEvent::RoomEnd(EndReason::Unknown));
                continue;
            }
            Err(e) => return Err(e),
        }
        if !in_chatroom {
            room.end_resume();
            continue;
        }
        session
            .internal_call(&JoinChatroom { room_uuid: room.uuid.clone(), history_count: None }, None)
            .await?;
        room.set_local_in_chatroom(true);
        let seen = room.last_seq();
        let mut recovered = true;
        let mut after = seen;
        loop {
            let fetch = FetchChatroomHistory {
                room_uuid: room.uuid.clone(),
                start_time: None,
                limit: Some(100),
                order: HistoryOrder::Asc,
                after_seq: Some(after),
            };
            let page = session.internal_call(&fetch, None).await?;
            if after == seen && page.first_seq > seen + 1 && page.last_seq > seen {
                recovered = false; // some of what was missed is beyond retention
            }
            let count = page.messages.len();
            if let Some(last) = page.messages.last() {
                after = last.seq;
            }
            room.deliver_replayed(page.messages);
            if count < 100 || after >= page.last_seq {
                break;
            }
        }
        room.end_resume();
        room.notify(RoomEvent::Resumed { recovered });
    }
    Ok(())
}

/// Sends again what was sent but not answered before the connection dropped.
async fn resend_pending(session: &Session) {
    let frames: Vec<Bytes> =
        session.pending.lock().expect("not poisoned").values().filter_map(|p| p.frame.clone()).collect();
    if frames.is_empty() {
        return;
    }
    if let Some(sink) = session.sink.lock().await.as_mut() {
        let _ = sink.send(&frames).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=10 {
            let b = backoff(initial, max, attempt);
            let full = initial.saturating_mul(1 << (attempt - 1)).min(max);
            assert!(b <= full && b >= full / 2, "attempt {attempt}: {b:?} vs {full:?}");
        }
    }
}
