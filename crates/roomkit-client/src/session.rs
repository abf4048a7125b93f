//! One logical connection to a server: its state, its login, the rooms joined through it, and
//! calls that wait for the connection while it is being re-established.
//!
//! A session outlives its connections: [`rpc`](crate::rpc) carries requests over the current
//! one, and [`reconnect`](crate::reconnect) replaces it when it drops.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use roomkit_core::transport::{CloseReason, Connection};
use roomkit_protocol::{
    ops::{LeaveRoom, Login, LoginOutput, Operation},
    Code, Event, RoomUuid, UserUuid,
};
use tokio::sync::mpsc;

use crate::{
    connector::FailoverConnector,
    reconnect::ReconnectCtl,
    room::{Room, Rooms},
    rpc::{self, Apply, CallOptions, Inbound, Refused, Rpc},
    ClientConfig, ConnectionState, Error,
};

/// One logical connection to a server, and the rooms joined through it.
pub(crate) struct Session {
    pub(crate) config: ClientConfig,
    /// The servers, tried in turn to connect and reconnect.
    pub(crate) servers: FailoverConnector,
    /// The current connection's server: its index among `servers` and its name.
    server: Mutex<(usize, String)>,
    pub(crate) rpc: Rpc,
    pub(crate) rooms: Arc<Rooms>,
    user: Mutex<Option<LoginOutput>>,
    credentials: Mutex<Option<Login>>,
    state: Mutex<ConnectionState>,
    state_listeners: Mutex<Vec<mpsc::UnboundedSender<ConnectionState>>>,
    state_changed: tokio::sync::Notify,
    /// Set once the session is over for good.
    closed: Mutex<Option<Error>>,
    /// At most one reconnect loop runs; a drop during it makes it try again.
    pub(crate) reconnecting: Mutex<ReconnectCtl>,
}

impl Session {
    /// A session over an open connection to server `index` of `servers`: it is `Connected`
    /// from the start.
    pub(crate) async fn start(
        index: usize,
        connection: Connection,
        servers: FailoverConnector,
        config: ClientConfig,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            config,
            servers,
            server: Mutex::new((index, String::new())),
            rpc: Rpc::new(),
            rooms: Arc::default(),
            user: Mutex::new(None),
            credentials: Mutex::new(None),
            state: Mutex::new(ConnectionState::Connected),
            state_listeners: Mutex::new(Vec::new()),
            state_changed: tokio::sync::Notify::new(),
            closed: Mutex::new(None),
            reconnecting: Mutex::default(),
        });
        session.install(index, connection).await;
        session
    }

    /// Makes `connection`, to server `index`, the current one, with its keep-alive.
    pub(crate) async fn install(self: &Arc<Self>, index: usize, connection: Connection) {
        let name = self.servers.name(index, Some(&connection));
        tracing::debug!(server = %name, index, "connected");
        *self.server.lock().expect("not poisoned") = (index, name);
        let Connection { sink, stream, .. } = connection;
        let epoch = self.rpc.install(self, sink, stream).await;
        if !self.config.keep_alive.interval.is_zero() {
            tokio::spawn(crate::keepalive::run(Arc::downgrade(self), epoch));
        }
    }

    /// The current connection's server: its index and name.
    pub(crate) fn server(&self) -> (usize, String) {
        self.server.lock().expect("not poisoned").clone()
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.state.lock().expect("not poisoned").clone()
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
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

    /// Remembers the credentials for reconnecting, and who is logged in.
    pub(crate) fn remember_login(&self, login: Login, output: LoginOutput) {
        *self.credentials.lock().expect("not poisoned") = Some(login);
        self.set_user(output);
    }

    pub(crate) fn set_user(&self, output: LoginOutput) {
        *self.user.lock().expect("not poisoned") = Some(output);
    }

    /// The credentials of the last login, if any.
    pub(crate) fn credentials(&self) -> Option<Login> {
        self.credentials.lock().expect("not poisoned").clone()
    }

    /// The logged-in user, if any.
    pub(crate) fn user_uuid(&self) -> Option<UserUuid> {
        self.user.lock().expect("not poisoned").as_ref().map(|u| u.user_uuid.clone())
    }

    pub(crate) fn room(&self, room: &RoomUuid) -> Option<Arc<Room>> {
        self.rooms.get(room)
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call<O: Operation>(&self, params: &O) -> Result<O::Output, Error> {
        self.call_with(params, CallOptions::default()).await
    }

    /// Like [`call`](Self::call), with an [`Apply`] or as a resendable send. While
    /// reconnecting, waits (within the request timeout) for the connection to be back.
    pub(crate) async fn call_with<O: Operation>(
        &self,
        params: &O,
        options: CallOptions,
    ) -> Result<O::Output, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut options = options;
        loop {
            if let Some(e) = self.closed_error() {
                return Err(e);
            }
            let notified = self.state_changed.notified();
            if self.state() == ConnectionState::Connected {
                // Only on the connection seen established: a newer one may not have
                // rejoined the rooms yet (see `CallOptions::epoch`).
                options.epoch = Some(self.rpc.epoch());
                match self.rpc.send(params, options).await {
                    Ok((rx, id)) => return self.answer::<O>(rx, id, deadline).await,
                    Err(Refused::Failed(e)) => return Err(self.closed_error().unwrap_or(e)),
                    Err(Refused::Stale(back)) => {
                        options = back;
                        continue;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    Code::TIMEOUT,
                    format!("not connected within {:?}", self.config.request_timeout),
                ));
            }
        }
    }

    /// A request on the current connection whatever the state (reconnecting uses this).
    pub(crate) async fn call_now<O: Operation>(
        &self,
        params: &O,
        apply: Option<Apply>,
    ) -> Result<O::Output, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let options = CallOptions { apply, ..Default::default() };
        match self.rpc.send(params, options).await {
            Ok((rx, id)) => self.answer::<O>(rx, id, deadline).await,
            Err(Refused::Failed(e)) => Err(self.closed_error().unwrap_or(e)),
            Err(Refused::Stale(_)) => unreachable!("no epoch asked for"),
        }
    }

    /// Waits for the answer to request `id`.
    async fn answer<O: Operation>(
        &self,
        rx: tokio::sync::oneshot::Receiver<roomkit_protocol::codec::ResponseFrame>,
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
                self.rpc.forget(id);
                return Err(Error::new(
                    Code::TIMEOUT,
                    format!("no response to `{}` within {:?}", O::OP, self.config.request_timeout),
                ));
            }
        };
        rpc::output::<O>(response)
    }

    pub(crate) fn closed_error(&self) -> Option<Error> {
        self.closed.lock().expect("not poisoned").clone()
    }

    /// Closes the connection for good; pending and later calls fail with
    /// `CONNECTION_CLOSED`.
    pub(crate) async fn close(&self) {
        // Closing on purpose is leaving: others should not wait out a reconnect grace period.
        if self.state() == ConnectionState::Connected {
            for room_uuid in self.rooms.uuids() {
                let leave = LeaveRoom { room_uuid };
                let _ = tokio::time::timeout(Duration::from_secs(2), self.call_now(&leave, None)).await;
            }
        }
        self.end(Error::new(Code::CONNECTION_CLOSED, "closed by the client"));
        self.rpc.close(CloseReason::new(Code::SUCCESS, "client closed")).await;
    }

    /// The session is over: fail everything waiting, tell listeners.
    pub(crate) fn end(&self, error: Error) {
        self.closed.lock().expect("not poisoned").get_or_insert(error.clone());
        self.rpc.fail_all();
        self.set_state(ConnectionState::Disconnected { code: error.code(), msg: error.msg().to_string() });
    }
}

impl Inbound for Session {
    fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    fn on_event(&self, event: Event) {
        let Some(room) = self.room(event.room_uuid()) else { return };
        if matches!(event, Event::RoomEnd { .. }) {
            // The context is gone before any listener hears of the end.
            self.rooms.remove(&room.uuid);
        }
        room.update(|mirror| mirror.apply(event));
    }

    fn on_lost(self: Arc<Self>, epoch: u64, error: Error) {
        self.connection_lost(epoch, error);
    }
}
