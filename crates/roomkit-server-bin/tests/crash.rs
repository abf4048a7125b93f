//! Crash: the real `roomkit-server` binary, with the redb store in a fresh data directory, is
//! killed with SIGKILL while two clients send a stream of messages, and restarted on the same
//! directory and ports. The clients reconnect by themselves. Afterwards:
//!
//! - every message a sender saw acknowledged is in history, under the same sequence number;
//! - history is gapless, and every member was told every message of the others exactly once,
//!   in sequence order (the ones it missed while the server was down on resume);
//! - sequence numbers after the restart continue above those before it.
//!
//! Timing decides nothing here: the kill comes after a number of acknowledgements, and every
//! wait is for a condition, bounded only to keep a broken build from hanging.

use std::{
    collections::HashSet,
    fs::File,
    future::Future,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use roomkit_client::{
    ChatController, ChatMessage, ClientConfig, CreateRoomOptions, CreateRoomParams, FetchHistoryOptions,
    JoinRoomOptions, JoinRoomParams, ReconnectPolicy, RoomEventCallback, RoomKit,
};

const ROOM: &str = "crash-room";
const PER_SENDER: usize = 300;
/// The server is killed once this many sends were acknowledged.
const KILL_AFTER_ACKS: usize = 150;
/// Bound on any single wait.
const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A directory of its own under the system's temporary directory; removed at the end unless
/// the test failed (then it is kept, with the server's logs, and its path printed).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("roomkit-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free local port (bound, then released for the server to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// The server binary as one process; killed (SIGKILL) when dropped.
struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the binary (cargo builds it for this test: `CARGO_BIN_EXE_roomkit-server`).
    fn start(dir: &Path, port: u16, admin_port: u16, run: usize) -> ServerProcess {
        let log = dir.join(format!("server-{run}.log"));
        let out = File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomkit-server"));
        command
            .arg("--dev")
            .args(["--store", "redb"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--rate-limit-per-second", "100000", "--rate-limit-burst", "100000"])
            // The senders flood on purpose: no message rates.
            .args(["--member-message-rate", "0", "--chatroom-message-rate", "0"])
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
        ServerProcess { child, log }
    }

    /// Waits until `GET /healthz` answers on the client port.
    async fn wait_ready(&mut self, port: u16) {
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
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    fn log_text(&self) -> String {
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
struct Told {
    messages: Mutex<Vec<ChatMessage>>,
    resumed: Mutex<Vec<bool>>,
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
    fn seqs(&self) -> Vec<u64> {
        self.messages.lock().expect("not poisoned").iter().map(|m| m.seq).collect()
    }
}

struct Client {
    user: String,
    kit: RoomKit,
    chat: ChatController,
    told: Arc<Told>,
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    // A send in flight at the crash waits for the server to be back.
    config.request_timeout = LIMIT;
    config.reconnect = ReconnectPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_attempts: 1000,
    };
    config
}

async fn client(url: &str, user: &str, create: bool) -> Client {
    let kit = within("connecting", RoomKit::connect_with(url, client_config())).await.expect("connect");
    within("logging in", kit.login(user, "dev-token")).await.expect("log in");
    let rooms = kit.room_service();
    if create {
        let params =
            CreateRoomParams { room_uuid: ROOM.into(), room_name: ROOM.into(), ..Default::default() };
        let create = rooms.create_room(params, CreateRoomOptions { enable_chatroom: true });
        within("creating the room", create).await.expect("create the room");
    }
    let params = JoinRoomParams { room_uuid: ROOM.into(), user_name: user.into(), ..Default::default() };
    let ctx = within("joining", rooms.join_room(params, JoinRoomOptions::default())).await.expect("join");
    let told = Arc::new(Told::default());
    ctx.add_event_callback(told.clone());
    let chat = ctx.chat_controller();
    within("entering the chatroom", chat.join_chatroom()).await.expect("join the chatroom");
    Client { user: user.into(), kit, chat, told }
}

/// The whole history, by sequence number, 100 at a time.
async fn full_history(chat: &ChatController) -> Vec<ChatMessage> {
    let mut all: Vec<ChatMessage> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq);
        let options = FetchHistoryOptions { after_seq: Some(after), limit: 100, ..Default::default() };
        let page = within("a history page", chat.fetch_chatroom_history_messages(options))
            .await
            .expect("fetch history");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// A send that returned: the message, and how many kills had happened when it started and
/// when it returned.
struct Acked {
    message: ChatMessage,
    started_after: usize,
    returned_after: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_and_every_member_gets_them_in_order_once() {
    let dir = TempDir::new("crash");
    let (port, admin_port) = (free_port(), free_port());
    let mut server = ServerProcess::start(&dir.0, port, admin_port, 1);
    server.wait_ready(port).await;
    let url = format!("ws://127.0.0.1:{port}/v1");
    let clients = vec![
        client(&url, "sender-a", true).await,
        client(&url, "sender-b", false).await,
        client(&url, "listener", false).await,
    ];
    let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();

    // Two senders, each a stream of sequential sends.
    let kills = Arc::new(AtomicUsize::new(0));
    let acks = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for sender in clients.iter().take(2).cloned() {
        let (kills, acks, failures) = (Arc::clone(&kills), Arc::clone(&acks), Arc::clone(&failures));
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..PER_SENDER {
                let text = format!("{} #{k}", sender.user);
                let started_after = kills.load(Ordering::SeqCst);
                match sender.chat.send_broadcast_text_message(&text).await {
                    Ok(message) => {
                        acks.fetch_add(1, Ordering::SeqCst);
                        acked.push(Acked {
                            message,
                            started_after,
                            returned_after: kills.load(Ordering::SeqCst),
                        });
                    }
                    Err(e) => failures.lock().expect("not poisoned").push(format!("{text}: {e}")),
                }
            }
            acked
        }));
    }

    // Mid-stream: SIGKILL, then the same data directory and ports again.
    eventually("acknowledgements before the kill", || acks.load(Ordering::SeqCst) >= KILL_AFTER_ACKS).await;
    server.kill();
    let acked_at_kill = acks.load(Ordering::SeqCst);
    kills.fetch_add(1, Ordering::SeqCst);
    let mut server = ServerProcess::start(&dir.0, port, admin_port, 2);
    server.wait_ready(port).await;
    kills.fetch_add(1, Ordering::SeqCst); // 2: restarted

    let mut acked: Vec<Vec<Acked>> = Vec::new();
    for task in senders {
        acked.push(within("a sender to finish", task).await.expect("the sender task"));
    }
    let failures = failures.lock().expect("not poisoned").clone();
    let all_acked: Vec<&Acked> = acked.iter().flatten().collect();

    // Everybody catches up with history.
    let history = full_history(&clients[2].chat).await;
    let last = history.last().map_or(0, |m| m.seq);
    eventually("every member to catch up", || {
        clients.iter().zip(acked.iter().map(Some).chain(std::iter::repeat(None))).all(|(c, own)| {
            let own_last = own.and_then(|o| o.iter().map(|a| a.message.seq).max()).unwrap_or(0);
            c.told.seqs().last().copied().unwrap_or(0).max(own_last) >= last
        })
    })
    .await;
    let resumes: Vec<Vec<bool>> =
        clients.iter().map(|c| c.told.resumed.lock().expect("not poisoned").clone()).collect();
    let across = all_acked.iter().filter(|a| a.started_after == 0 && a.returned_after > 0).count();
    println!(
        "crash: {} sends acknowledged ({} before the kill, {across} in flight across it), \
         {} failed, history of {} messages, resumes {resumes:?}",
        all_acked.len(),
        acked_at_kill,
        failures.len(),
        history.len()
    );

    // History: gapless, one id per message, holding every acknowledged message as acknowledged.
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "history has no gap");
    let uuids: HashSet<_> = history.iter().map(|m| m.message_uuid.clone()).collect();
    assert_eq!(uuids.len(), history.len(), "no message is stored twice");
    let stored: HashSet<_> = history.iter().map(|m| (m.seq, m.message_uuid.clone())).collect();
    for a in &all_acked {
        assert!(
            stored.contains(&(a.message.seq, a.message.message_uuid.clone())),
            "acknowledged message {:?} (seq {}) is not in history",
            a.message.text(),
            a.message.seq
        );
    }
    assert!(failures.is_empty(), "sends failed although the SDK retries across reconnects: {failures:?}");
    assert_eq!(all_acked.len(), 2 * PER_SENDER);
    assert_eq!(history.len(), 2 * PER_SENDER, "history is exactly the acknowledged messages");

    // Numbering continues after the restart.
    let before = all_acked.iter().filter(|a| a.returned_after == 0).map(|a| a.message.seq).max();
    let after = all_acked.iter().filter(|a| a.started_after == 2).map(|a| a.message.seq).min();
    let (Some(before), Some(after)) = (before, after) else {
        panic!("messages were acknowledged both before the kill and after the restart");
    };
    assert!(after > before, "seq {after} after the restart, {before} before it");

    // Every member was told every message of the others exactly once, in order.
    for c in &clients {
        let told = c.told.seqs();
        let expected: Vec<u64> =
            history.iter().filter(|m| m.from_user_uuid.as_str() != c.user).map(|m| m.seq).collect();
        if told != expected {
            let told_set: HashSet<u64> = told.iter().copied().collect();
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

    for c in &clients {
        within("closing a client", c.kit.close()).await;
    }
    server.kill();
}
