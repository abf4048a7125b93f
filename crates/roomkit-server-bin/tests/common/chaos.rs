//! What the tests that kill servers share: server processes started with flags and killed
//! with SIGKILL, SDK clients that reconnect on their own and record what they are told, and
//! bounded waits for conditions (timing decides nothing; the bounds only keep a broken build
//! from hanging).

use std::{
    fs::File,
    future::Future,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use roomkit_client::{
    ChatController, ChatMessage, ClientConfig, CreateRoomOptions, CreateRoomParams, ErrorCode as Code,
    FetchHistoryOptions, JoinRoomOptions, JoinRoomParams, ReconnectPolicy, RoomEventCallback, RoomKit,
};

/// Bound on any single wait.
pub const LIMIT: Duration = Duration::from_secs(60);

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A free local port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// The server binary as one process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl ServerProcess {
    /// Starts the binary (cargo builds it for this test: `CARGO_BIN_EXE_roomkit-server`) in
    /// development mode on `port` and `admin_port`, with the rate limits off (the senders
    /// flood on purpose) and `args`; its output goes to `dir/name.log`.
    pub fn start(dir: &Path, name: &str, port: u16, admin_port: u16, args: &[String]) -> ServerProcess {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomkit-server"));
        command
            .arg("--dev")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--rate-limit-per-second", "100000", "--rate-limit-burst", "100000"])
            .args(["--member-message-rate", "0", "--chatroom-message-rate", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Only the flags above configure it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROOMKIT_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().expect("start roomkit-server");
        ServerProcess { child, log, port }
    }

    /// Its clients' URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1", self.port)
    }

    /// Waits until `GET /healthz` answers on the client port.
    pub async fn wait_ready(&mut self) {
        let port = self.port;
        let ready = async {
            loop {
                if let Some(status) = self.child.try_wait().expect("poll the server process") {
                    panic!("roomkit-server exited with {status}:\n{}", self.log_text());
                }
                if healthz(port) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        within("the server to answer /healthz", ready).await;
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthz(port: u16) -> bool {
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if tcp.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The messages and resumes a member was told.
#[derive(Default)]
pub struct Told {
    pub messages: Mutex<Vec<ChatMessage>>,
    pub resumed: Mutex<Vec<bool>>,
}

impl RoomEventCallback for Told {
    fn chatroom_messages_received(&self, messages: &[ChatMessage]) {
        self.messages.lock().expect("not poisoned").extend(messages.iter().cloned());
    }
    fn room_resumed(&self, recovered: bool) {
        self.resumed.lock().expect("not poisoned").push(recovered);
    }
}

impl Told {
    pub fn seqs(&self) -> Vec<u64> {
        self.messages.lock().expect("not poisoned").iter().map(|m| m.seq).collect()
    }
}

/// A member of one room's chatroom, recording what it is told.
pub struct Client {
    pub user: String,
    pub kit: RoomKit,
    pub chat: ChatController,
    pub told: Arc<Told>,
}

/// Retries for as long as a test may wait: a send in flight at a crash waits for a server.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.request_timeout = LIMIT;
    config.reconnect = ReconnectPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_attempts: 1000,
    };
    config
}

/// Connects to the first of `urls` that accepts (failing over to the others later), logs in
/// as `user`, creates `room` with a chatroom when `create`, joins it and its chatroom.
pub async fn client(urls: Vec<String>, user: &str, room: &str, create: bool) -> Client {
    let kit = within("connecting", RoomKit::connect_with(urls, client_config())).await.expect("connect");
    within("logging in", kit.login(user, "dev-token")).await.expect("log in");
    let rooms = kit.room_service();
    if create {
        let params =
            CreateRoomParams { room_uuid: room.into(), room_name: room.into(), ..Default::default() };
        let create = rooms.create_room(params, CreateRoomOptions { enable_chatroom: true });
        within("creating the room", create).await.expect("create the room");
    }
    let params = JoinRoomParams { room_uuid: room.into(), user_name: user.into(), ..Default::default() };
    let ctx = within("joining", rooms.join_room(params, JoinRoomOptions::default())).await.expect("join");
    let told = Arc::new(Told::default());
    ctx.add_event_callback(told.clone());
    let chat = ctx.chat_controller();
    within("entering the chatroom", chat.join_chatroom()).await.expect("join the chatroom");
    Client { user: user.into(), kit, chat, told }
}

/// The whole history, by sequence number, 100 at a time. A page whose connection dropped
/// under it (a node resetting the rooms it follows after the chaos) is asked again, as an
/// app would: a read changes nothing.
pub async fn full_history(chat: &ChatController) -> Vec<ChatMessage> {
    let mut all: Vec<ChatMessage> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq);
        let page = within("a history page", async {
            loop {
                let options =
                    FetchHistoryOptions { after_seq: Some(after), limit: 100, ..Default::default() };
                match chat.fetch_chatroom_history_messages(options).await {
                    Err(e) if matches!(e.code(), Code::CONNECTION_CLOSED | Code::ROOM_UNAVAILABLE) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    page => return page.expect("fetch history"),
                }
            }
        })
        .await;
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Checks that `history` has no gap, holds each message once, and holds every message in
/// `acked` under the number it was acknowledged with.
pub fn assert_history_holds<'a>(history: &[ChatMessage], acked: impl IntoIterator<Item = &'a ChatMessage>) {
    let last = history.last().map_or(0, |m| m.seq);
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "history has no gap");
    let uuids: std::collections::HashSet<_> = history.iter().map(|m| m.message_uuid.clone()).collect();
    assert_eq!(uuids.len(), history.len(), "no message is stored twice");
    let stored: std::collections::HashSet<_> =
        history.iter().map(|m| (m.seq, m.message_uuid.clone())).collect();
    for message in acked {
        assert!(
            stored.contains(&(message.seq, message.message_uuid.clone())),
            "acknowledged message {:?} (seq {}) is not in history",
            message.text(),
            message.seq
        );
    }
}

/// Checks that every client was told every message of the others in `history` exactly once,
/// in sequence order, and resumed with everything recovered.
pub fn assert_told_everything_once(clients: &[Arc<Client>], history: &[ChatMessage]) {
    for c in clients {
        let told = c.told.seqs();
        let expected: Vec<u64> =
            history.iter().filter(|m| m.from_user_uuid.as_str() != c.user).map(|m| m.seq).collect();
        if told != expected {
            let told_set: std::collections::HashSet<u64> = told.iter().copied().collect();
            let missing: Vec<u64> = expected.iter().filter(|s| !told_set.contains(s)).copied().collect();
            let out_of_order = told.windows(2).find(|w| w[0] >= w[1]);
            panic!(
                "{} was told {} messages, expected {}; missing {missing:?}; \
                 first duplicate or out of order pair {out_of_order:?}",
                c.user,
                told.len(),
                expected.len()
            );
        }
        let resumed = c.told.resumed.lock().expect("not poisoned").clone();
        assert!(!resumed.is_empty() && resumed.iter().all(|r| *r), "{} resumed as {resumed:?}", c.user);
    }
}
