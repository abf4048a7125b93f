//! The `roomkit` binary, run with piped standard input and output against a live server on
//! 127.0.0.1 (wired as `roomkit-server` wires itself: WebSocket at /v1, admin API on a second
//! port, development logins).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use roomkit_protocol::UserUuid;
use roomkit_server::{
    admin::{self, AdminState},
    net, DevAuthenticator, Server, ServerConfig, ServerHandle,
};
use roomkit_token::JwtAuthenticator;
use roomkit_transport_ws::{QueueListener, WsConfig};
use tokio::{net::TcpListener, sync::watch};

const WAIT: Duration = Duration::from_secs(15);
const ADMIN_KEY: &str = "test-admin-key";

struct Live {
    ws_url: String,
    admin_url: String,
    runtime: tokio::runtime::Runtime,
    server: Option<ServerHandle>,
    _stop: watch::Sender<bool>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

fn live_server() -> Live {
    live_server_with(ServerConfig::default())
}

fn live_server_with(config: ServerConfig) -> Live {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, stop, client_addr, admin_addr) = runtime.block_on(async {
        let client_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client_addr: SocketAddr = client_tcp.local_addr().unwrap();
        let admin_addr: SocketAddr = admin_tcp.local_addr().unwrap();
        let ws = WsConfig::default();
        let (listener, sender) = QueueListener::new(format!("ws://{client_addr}/v1"), ws.accept_backlog);
        let server = Server::new(config, Arc::new(DevAuthenticator)).spawn(listener);
        let (stop, stop_rx) = watch::channel(false);
        let timeout = Duration::from_secs(10);
        tokio::spawn(net::serve(client_tcp, net::client_router(ws, sender), timeout, stop_rx.clone()));
        let state = AdminState {
            rooms: server.rooms(),
            admin_key: ADMIN_KEY.into(),
            tokens: None,
            backend_user: UserUuid::new("backend").unwrap(),
            limits: Default::default(),
        };
        tokio::spawn(net::serve(admin_tcp, admin::router(state), timeout, stop_rx));
        (server, stop, client_addr, admin_addr)
    });
    Live {
        ws_url: format!("ws://{client_addr}/v1"),
        admin_url: format!("http://{admin_addr}"),
        runtime,
        server: Some(server),
        _stop: stop,
    }
}

/// A running `roomkit` process: its stdout as lines, its stderr collected.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: JoinHandle<String>,
}

impl Cli {
    fn spawn(args: &[&str]) -> Cli {
        Cli::spawn_with_env(args, &[])
    }

    /// Like [`spawn`](Self::spawn), with these environment variables set.
    fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Cli {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomkit"))
            .args(args)
            .env_remove("ROOMKIT_TOKEN")
            .env_remove("ROOMKIT_SERVER")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roomkit");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Cli { stdin: child.stdin.take(), child, lines, seen: Vec::new(), stderr }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a line of output containing `needle`; returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no output line containing {needle:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Closes stdin and waits for the exit: status, all stdout, stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("roomkit did not exit; output:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"), self.stderr.join().unwrap())
    }
}

/// Runs `roomkit ARGS` to the end.
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    Cli::spawn(args).finish()
}

#[test]
fn two_chat_sessions_talk() {
    let live = live_server();
    let server = live.ws_url.as_str();
    let mut alice =
        Cli::spawn(&["chat", "--server", server, "--room", "cli-chat", "--name", "Alice", "--create"]);
    alice.expect("created room cli-chat");
    alice.expect("joined room cli-chat");
    let mut bob = Cli::spawn(&["chat", "--server", server, "--room", "cli-chat", "--name", "Bob"]);
    bob.expect("joined room cli-chat");
    bob.expect("* 2 members, 2 in the chatroom:");
    alice.expect("* online: 2 members, 1 in the chatroom");
    alice.expect("* Bob (bob) entered the chatroom");
    alice.expect("* online: 2 members, 2 in the chatroom");
    bob.say("/like");
    bob.expect("* you sent a like");
    alice.expect("Bob (bob) sent a like");

    alice.say("hello bob");
    let line = bob.expect("Alice (alice): hello bob");
    assert!(line.starts_with('[') && line.as_bytes()[9] == b']', "time first: {line}");
    bob.say("hi alice");
    alice.expect("Bob (bob): hi alice");
    bob.say("/dm alice just for you");
    bob.expect("you → Alice (alice): just for you");
    alice.expect("Bob (bob) (to you): just for you");

    alice.say("/members");
    alice.expect("2 members, 2 in the chatroom");
    alice.expect("Alice (alice): you, host, in the chatroom");
    alice.expect("Bob (bob): in the chatroom");
    alice.say("/history");
    alice.expect("you: hello bob");
    alice.expect("Bob (bob): hi alice");

    // Alice recalls her last message: both are told, and history shows it recalled.
    alice.say("/recall");
    alice.expect("* you recalled a message");
    bob.expect("* Alice (alice) recalled a message");
    bob.say("/history");
    bob.expect("Alice (alice): (recalled)");

    bob.say("/leave");
    bob.expect("you left the chatroom");
    alice.expect("* Bob (bob) left the chatroom");
    bob.say("/quit");
    let (status, _, stderr) = bob.finish();
    assert!(status.success(), "bob: {status}; {stderr}");
    assert!(stderr.contains("development token"), "says it uses a development token: {stderr}");
    alice.expect("* Bob (bob) left the room");
    alice.say("/quit");
    let (status, _, stderr) = alice.finish();
    assert!(status.success(), "alice: {status}; {stderr}");
}

#[test]
fn send_history_and_rooms() {
    let live = live_server();
    let server = live.ws_url.as_str();
    // Create the room: a chat session that ends with its input.
    let (status, out, err) =
        run(&["chat", "--server", server, "--room", "notes", "--name", "Ann", "--create"]);
    assert!(status.success(), "{out}\n{err}");

    let text = "one-shot <b>note</b> ünïcode";
    let (status, out, err) =
        run(&["send", "--server", server, "--room", "notes", "--text", text, "--name", "Ann"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("sent #1"), "{out}");

    let (status, out, err) = run(&["history", "--server", server, "--room", "notes"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("Ann (ann): {text}")), "{out}");

    let (status, out, err) = run(&["rooms", "--admin", &live.admin_url, "--admin-key", ADMIN_KEY]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("notes") && l.contains("chatroom")), "{out}");
    let (status, out, _) = run(&["rooms", "--admin", &live.admin_url, "--admin-key", ADMIN_KEY, "--json"]);
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rooms"][0]["room_uuid"], "notes");

    let (status, _, err) = run(&["rooms", "--admin", &live.admin_url, "--admin-key", "wrong"]);
    assert!(!status.success());
    assert!(err.contains("1100 UNAUTHENTICATED"), "{err}");
}

#[test]
fn failures_exit_non_zero_with_the_code() {
    let live = live_server();
    let server = live.ws_url.as_str();
    let cases: &[(&[&str], &str)] = &[
        (&["send", "--server", server, "--room", "bad room", "--text", "x"], "error 1002 BAD_REQUEST"),
        (&["send", "--server", server, "--room", "no-such-room", "--text", "x"], "error 2000 ROOM_NOT_EXIST"),
        (&["history", "--server", server, "--room", "no-such-room"], "error 2000 ROOM_NOT_EXIST"),
        (
            &["chat", "--server", server, "--room", "no-such-room", "--name", "Al"],
            "error 2000 ROOM_NOT_EXIST",
        ),
        (&["chat", "--server", server, "--room", "r", "--name", "Al", "--account", "a b"], "error 1002"),
        (&["send", "--server", "ws://127.0.0.1:9/v1", "--room", "r", "--text", "x"], "error 5003"),
    ];
    for (args, code) in cases {
        let (status, out, err) = run(args);
        assert_eq!(status.code(), Some(1), "{args:?}: {out}\n{err}");
        assert!(err.contains(code), "{args:?}: stderr should name {code}: {err}");
    }
}

/// `--server` takes several URLs, comma-separated or repeated (and `ROOMKIT_SERVER` a
/// comma-separated list): a first one that refuses connections is skipped.
#[test]
fn several_servers_are_tried_in_turn() {
    let live = live_server();
    let server = live.ws_url.as_str();
    let refused = "ws://127.0.0.1:9/v1";
    let both = format!("{refused}, {server}");
    let (status, out, err) =
        run(&["chat", "--server", &both, "--room", "nodes", "--name", "Ann", "--create"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("* connected to {server}")), "{out}");
    assert!(out.contains("created room nodes"), "{out}");

    let (status, out, err) = run(&[
        "send", "--server", refused, "--server", server, "--room", "nodes", "--text", "hi", "--name", "Ann",
    ]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("sent #1"), "{out}");

    let env = format!("{refused},{server}");
    let (status, out, err) =
        Cli::spawn_with_env(&["history", "--room", "nodes"], &[("ROOMKIT_SERVER", &env)]).finish();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("Ann (ann): hi"), "{out}");

    // None accepts: the error says so.
    let (status, _, err) =
        run(&["send", "--server", &format!("{refused},{refused}"), "--room", "r", "--text", "x"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("error 5003") && err.contains("none of the 2 servers"), "{err}");
}

#[test]
fn token_mints_what_the_server_checks() {
    let (status, out, err) =
        run(&["token", "--secret", "s3cret", "--account", "alice", "--ttl", "30m", "--room", "class-1"]);
    assert!(status.success(), "{err}");
    let claims = JwtAuthenticator::new(b"s3cret").verify(out.trim()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.grants.rooms, Some(vec!["class-1".to_string()]));
    assert!(JwtAuthenticator::new(b"other").verify(out.trim()).is_err());

    let (status, _, err) = run(&["token", "--secret", "s", "--account", "not valid"]);
    assert!(!status.success());
    assert!(err.contains("1002"), "{err}");
}

#[test]
fn a_large_room_shows_counts_and_pages_its_members() {
    let mut config = ServerConfig::default();
    config.core.join_member_page = 3;
    config.core.presence_per_member_max = 5;
    config.core.presence_digest_ms = 20;
    let live = live_server_with(config);
    let server = live.ws_url.as_str();
    let mut alice = Cli::spawn(&["chat", "--server", server, "--room", "big", "--name", "Alice", "--create"]);
    alice.expect("joined room big");
    alice.expect("1 member, 1 in the chatroom");
    // 24 viewers join the room and its chatroom through the SDK.
    let viewers: Vec<roomkit_client::RoomKit> = live.runtime.block_on(async {
        let mut viewers = Vec::new();
        for i in 0..24 {
            let kit = roomkit_client::RoomKit::connect(server).await.unwrap();
            kit.login(&format!("v{i:02}"), "dev-token").await.unwrap();
            let params = roomkit_client::JoinRoomParams {
                room_uuid: "big".into(),
                user_name: format!("Viewer {i:02}"),
                ..Default::default()
            };
            let room = kit.room_service().join_room(params, Default::default()).await.unwrap();
            room.chat_controller().join_chatroom().await.unwrap();
            viewers.push(kit);
        }
        viewers
    });
    alice.expect("* online: 25 members, 25 in the chatroom");
    alice.say("/members");
    alice.expect("* 25 members, 25 in the chatroom:");
    alice.expect("Viewer 18 (v18)");
    alice.expect("* more members: /members more");
    alice.say("/members more");
    alice.expect("Viewer 19 (v19)");
    alice.expect("Viewer 23 (v23)");
    alice.say("/members more");
    alice.expect("* no more members");

    let mut bob = Cli::spawn(&["chat", "--server", server, "--room", "big", "--name", "Bob"]);
    bob.expect("* 26 members, 26 in the chatroom:");
    bob.expect("* /members lists them page by page");
    bob.say("/quit");
    let (status, out, stderr) = bob.finish();
    assert!(status.success(), "bob: {status}; {stderr}");
    // The SDK read the 26 members on joining; the terminal shows 20 of them, then the hint.
    assert!(
        out.contains("Viewer 17") && !out.contains("Viewer 18"),
        "bob's join shows a page, not the roster: {out}"
    );
    alice.say("/quit");
    let (status, _, stderr) = alice.finish();
    assert!(status.success(), "alice: {status}; {stderr}");
    live.runtime.block_on(async {
        for kit in viewers {
            kit.close().await;
        }
    });
}
