//! The real `roomkit-server` binary, run as a child process on loopback ports. Cargo builds
//! it for these tests (`CARGO_BIN_EXE_roomkit-server`).

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    time::{Duration, SystemTime},
};

use common::{free_addr, run_to_end, scratch_dir, server_command, TempDir, PROCESS_BOUND};
use roomkit_client::{
    ConnectionState, CreateRoomOptions, FetchHistoryOptions, JoinRoomParams, MessageContent, RoomEvent,
    RoomKit,
};
use roomkit_protocol::{Code, Role};
use roomkit_server::ServerConfig;
use roomkit_tests::{
    create_params, expect_code, http, join, join_params, join_with, within, Harness, Member, Seen, WsFront,
    WsHarness,
};
use roomkit_token::JwtAuthenticator;

/// The secret `--dev` signs tokens with (`DEV_TOKEN_SECRET` in the binary).
const DEV_TOKEN_SECRET: &[u8] = b"roomkit-development-secret";

/// A running `roomkit-server`; killed on drop if still running.
struct ServerProcess {
    child: Child,
    client: SocketAddr,
    admin: SocketAddr,
    dir: PathBuf,
}

/// How to start a [`ServerProcess`].
#[derive(Default)]
struct Launch<'a> {
    /// Arguments after the common ones.
    extra: &'a [&'a str],
    /// Environment variables.
    env: &'a [(&'a str, &'a str)],
    /// The data directory; a fresh one in the process's scratch folder when `None`.
    data_dir: Option<&'a Path>,
    /// The client and admin addresses; free ones when `None`.
    ports: Option<(SocketAddr, SocketAddr)>,
}

impl ServerProcess {
    /// Starts `roomkit-server --dev --listen … --admin-listen … --admin-key k --data-dir …`
    /// plus `extra`, and waits until both ports answer `/healthz`.
    async fn start(extra: &[&str]) -> Self {
        Self::launch(Launch { extra, ..Launch::default() }).await
    }

    /// Starts the binary as `launch` says. If a port was taken in the meantime, retries: with
    /// other free ports, or with the given ones a little later.
    async fn launch(launch: Launch<'_>) -> Self {
        for _ in 0..5 {
            let (client, admin) = launch.ports.unwrap_or_else(|| (free_addr(), free_addr()));
            let dir = scratch_dir();
            let data_dir = launch.data_dir.map_or_else(|| dir.join("data"), Path::to_path_buf);
            let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
            let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
            let child = server_command()
                .args(["--dev", "--listen", &client.to_string(), "--admin-listen", &admin.to_string()])
                .args(["--admin-key", "k", "--data-dir"])
                .arg(&data_dir)
                .args(launch.extra)
                .envs(launch.env.iter().copied())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", env!("CARGO_BIN_EXE_roomkit-server")));
            let mut server = ServerProcess { child, client, admin, dir };
            if server.wait_until_serving().await {
                return server;
            }
            let logs = server.logs();
            assert!(logs.contains("binding"), "roomkit-server exited at start:\n{logs}");
            // A port was taken meanwhile: try other ports, or the same ones again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("could not bind the ports of roomkit-server");
    }

    /// Waits until `/healthz` answers on both ports; false if the process exited.
    async fn wait_until_serving(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PROCESS_BOUND;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            let mut up = true;
            for addr in [self.client, self.admin] {
                let probe = http::try_send(addr, http::Request::new("GET", "/healthz"));
                up &= matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(r)) if r.status == 200);
            }
            if up {
                return true;
            }
            assert!(tokio::time::Instant::now() < deadline, "roomkit-server never served:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The WebSocket URL clients connect to.
    fn url(&self) -> String {
        format!("ws://{}/v1", self.client)
    }

    /// An SDK client connected with the URL form, `RoomKit::connect("ws://…/v1")`.
    async fn connect(&self) -> RoomKit {
        let url = self.url();
        within("RoomKit::connect", RoomKit::connect(url.as_str())).await.expect("RoomKit::connect")
    }

    /// An SDK client logged in as `account` (development mode takes any token).
    async fn client(&self, account: &str) -> RoomKit {
        let kit = self.connect().await;
        kit.login(account, "dev").await.unwrap_or_else(|e| panic!("login as {account}: {e}"));
        kit
    }

    /// What the process printed so far.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("--- stdout\n{}--- stderr\n{}", read("stdout"), read("stderr"))
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, at most [`PROCESS_BOUND`].
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + PROCESS_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomkit-server did not exit within {PROCESS_BOUND:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0).
    async fn stop(mut self) {
        self.terminate();
        let status = self.wait_exit().await;
        assert!(status.success(), "roomkit-server exited with {status}:\n{}", self.logs());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client creates room `uuid` with a chatroom, joins it as host and enters the
/// chatroom; its own events are read.
async fn host(kit: &RoomKit, uuid: &str) -> Member {
    kit.room_service()
        .create_room(create_params(uuid), CreateRoomOptions { enable_chatroom: true })
        .await
        .unwrap_or_else(|e| panic!("create_room {uuid}: {e}"));
    let account = kit.user_uuid().expect("logged in").to_string();
    let mut m = join_with(kit, JoinRoomParams { role: Role::Host, ..join_params(uuid, &account) }).await;
    m.chat().join_chatroom().await.expect("join_chatroom");
    m.drain().await;
    m
}

/// A member of room `uuid` who entered its chatroom; its own events are read.
async fn member(kit: &RoomKit, uuid: &str) -> Member {
    let mut m = join(kit, uuid).await;
    m.chat().join_chatroom().await.expect("join_chatroom");
    m.drain().await;
    m
}

/// Two SDK clients, connected with the URL form, create, join and chat through the binary;
/// the admin API (key `k`) sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_chat_through_the_binary() {
    let server = ServerProcess::start(&[]).await;
    let alice_kit = server.client("alice").await;
    let mut alice = host(&alice_kit, "r").await;
    let bob_kit = server.client("bob").await;
    let mut bob = member(&bob_kit, "r").await;
    alice.expect(Seen::JoinRoom("bob".into())).await;
    alice.expect(Seen::JoinChatroom("bob".into())).await;
    bob.drain().await;

    let hello = alice.chat().send_broadcast_text_message("hello bob").await.expect("send");
    bob.expect(Seen::message(&hello)).await;
    let reply = bob.chat().send_broadcast_text_message("hello alice").await.expect("send");
    alice.expect(Seen::message(&reply)).await;
    assert_eq!((hello.seq, reply.seq), (1, 2));

    let r = http::send(server.admin, http::Request::new("GET", "/v1/rooms/r").bearer("k")).await;
    let body = r.json();
    assert_eq!((r.status, body["data"]["member_count"].as_u64()), (200, Some(2)), "{body}");
    let r = http::send(server.admin, http::Request::new("GET", "/v1/rooms").bearer("wrong")).await;
    assert_eq!(r.status, 401);
    server.stop().await;
}

/// A send's acknowledgement says whether the message is on disk: `durable: true` only with
/// the redb store at `--durability immediate` (the default); `--durability eventual` and the
/// memory store acknowledge messages a crash can lose, and say so, as `--help` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_say_whether_the_message_is_durable() {
    let cases: [(&[&str], bool); 3] =
        [(&[], true), (&["--durability", "eventual"], false), (&["--store", "memory"], false)];
    for (args, durable) in cases {
        let server = ServerProcess::start(args).await;
        let kit = server.client("alice").await;
        let alice = host(&kit, "r").await;
        let sent = alice.chat().send_message(None, MessageContent::Text("hello")).await.expect("send");
        assert_eq!((sent.message.seq, sent.durable), (1, durable), "{args:?}");
        let like = MessageContent::Custom { attach_str: "{}", persist: false };
        let sent = alice.chat().send_message(None, like).await.expect("an ephemeral send");
        assert!(!sent.durable, "{args:?}: an ephemeral message is never stored");
        server.stop().await;
    }
    let help = run_to_end(&["--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("NOT durable") && help.contains("durable: false"), "{help}");
}

/// With `--pin-display-names` a member's name is its credentials' name (in development mode,
/// the account id): asking to be called someone else is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_display_names_ignore_the_name_asked_for() {
    for (args, expected) in [(&[][..], "alice"), (&["--pin-display-names"][..], "mallory")] {
        let server = ServerProcess::start(args).await;
        let kit = server.client("alice").await;
        let mut alice = host(&kit, "r").await;
        let kit = server.client("mallory").await;
        let mallory =
            join_with(&kit, JoinRoomParams { user_name: "alice".into(), ..join_params("r", "mallory") })
                .await;
        assert_eq!(mallory.ctx.local_member().name, expected, "{args:?}");
        alice.expect(Seen::JoinRoom("mallory".into())).await;
        let seen = alice.ctx.get_member("mallory").map(|m| m.name);
        assert_eq!(seen.as_deref(), Some(expected), "{args:?}");
        server.stop().await;
    }
}

/// A secret given as a flag is visible in the process list: the binary says so at start,
/// naming the environment variable to use instead; a secret from the environment is not
/// warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_given_as_flags_are_warned_about() {
    let out = run_to_end(&["token", "--account", "alice", "--token-secret", "s3cret"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--token-secret on the command line") && stderr.contains("ROOMKIT_TOKEN_SECRET"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the warning must not repeat the secret: {stderr}");

    let mut cmd = server_command();
    cmd.args(["token", "--account", "alice"]).env("ROOMKIT_TOKEN_SECRET", "s3cret");
    let out = cmd.output().expect("run the token command");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{out:?}");

    let server = ServerProcess::start(&["--token-secret", "s3cret"]).await;
    let logs = server.logs();
    assert!(logs.contains("--token-secret on the command line"), "{logs}");
    assert!(logs.contains("--admin-key on the command line") && logs.contains("ROOMKIT_ADMIN_KEY"), "{logs}");
    server.stop().await;
}

/// `--admin-max-body-bytes` bounds what the admin API reads: a larger body is 413 with
/// `FRAME_TOO_LARGE`, a smaller one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_body_limit_is_a_setting() {
    let server = ServerProcess::start(&["--admin-max-body-bytes", "100"]).await;
    let post = |body: serde_json::Value| http::Request::new("POST", "/v1/rooms").bearer("k").json(&body);
    let big = serde_json::json!({"room_uuid": "r", "room_name": "x".repeat(100)});
    let r = http::send(server.admin, post(big)).await;
    assert_eq!((r.status, r.json()["code"].as_u64()), (413, Some(1003)), "{r:?}");
    let r = http::send(server.admin, post(serde_json::json!({"room_uuid": "r", "room_name": "R"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    server.stop().await;
}

/// A fresh binary's `/metrics` lists every metric family before anything happened, each at
/// zero (the families are the names in the metrics table of `roomkit_server::metrics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_scrapes_every_metric_family_at_zero() {
    let server = ServerProcess::start(&[]).await;
    let r = http::get(server.admin, "/metrics").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let families = include_str!("../../roomkit-server/src/metrics.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|rest| rest.split(['`', '{']).next())
        .collect::<Vec<_>>();
    assert!(families.len() >= 17, "{families:?}");
    for name in families {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from a fresh scrape:\n{text}");
    }
    for zero in
        ["roomkit_messages_in_total 0", "roomkit_store_errors_total 0", "roomkit_rate_limited_total 0"]
    {
        assert!(text.lines().any(|l| l == zero), "{zero} missing:\n{text}");
    }
    server.stop().await;
}

/// `roomkit-server token --dev --account alice --room r1` prints a token signed with the
/// development secret, granting room r1 only; a server checking tokens with that secret
/// logs alice in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_prints_a_token_a_jwt_server_accepts() {
    let out = run_to_end(&["token", "--dev", "--account", "alice", "--room", "r1"]).await;
    assert!(out.status.success(), "token failed: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("UTF-8").trim().to_string();
    let jwt = JwtAuthenticator::new(DEV_TOKEN_SECRET);
    let claims = jwt.verify(&token).unwrap_or_else(|e| panic!("the printed token {token:?} is refused: {e}"));
    assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("alice", "alice"));
    assert_eq!(claims.grants.rooms, Some(vec!["r1".to_string()]));
    assert!(claims.grants.create_rooms && !claims.grants.admin, "{claims:?}");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs();
    assert!(claims.exp > now, "{claims:?}");

    let front = WsFront { authenticator: std::sync::Arc::new(jwt), ..WsFront::default() };
    let h = WsHarness::start_front(ServerConfig::default(), front).await;
    let kit = h.connect().await;
    kit.login("alice", &token).await.expect("the printed token logs in");
    roomkit_tests::create_room(&kit, "r1", false).await;
    roomkit_tests::create_room(&kit, "r2", false).await;
    expect_code(
        kit.room_service().join_room(join_params("r2", "alice"), Default::default()).await,
        Code::FORBIDDEN,
    );
    join(&kit, "r1").await;
    h.stop().await;

    // Without --dev or a secret, there is nothing to sign with.
    let out = run_to_end(&["token", "--account", "alice"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-secret"));
}

/// A `--ttl` too long to represent (a usage error, exit status 2) or over the longest token
/// lifetime (exit status 1) is reported as an error naming `--ttl`, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_ttl_is_an_error() {
    for ttl in ["300000000000000000d", "18446744073709551615s"] {
        let out = run_to_end(&["token", "--dev", "--account", "alice", "--ttl", ttl]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 2)), "--ttl {ttl}: {:?} {stderr}", out.status);
        assert!(stderr.contains("--ttl") && !stderr.contains("panicked"), "--ttl {ttl}: {stderr}");
        assert!(out.stdout.is_empty(), "--ttl {ttl} printed a token");
    }
}

/// The server's own identity (`backend`, as which the admin API acts) cannot be minted: the
/// token command refuses it, naming `--account`, and prints nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_refuses_a_reserved_account() {
    for account in ["backend", "System"] {
        let out = run_to_end(&["token", "--dev", "--account", account]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{account}: {stderr}");
        assert!(stderr.contains("--account") && stderr.contains("reserved"), "{account}: {stderr}");
        assert!(out.stdout.is_empty(), "{account}: a token was printed");
    }
}

/// A configuration file's `[limits] max_message_bytes = 10` applies: 10 bytes pass, 11 are
/// `MESSAGE_TOO_LONG`; so does its `[access]` table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_the_limits() {
    let dir = TempDir::new();
    let path = dir.path().join("roomkit.toml");
    let file = "[limits]\nmax_message_bytes = 10\n[access]\nmax_rooms_per_account = 1\n";
    std::fs::write(&path, file).expect("write the config file");
    let server = ServerProcess::start(&["--config", path.to_str().expect("UTF-8 path")]).await;
    let alice_kit = server.client("alice").await;
    let alice = host(&alice_kit, "r").await;
    let bob_kit = server.client("bob").await;
    let mut bob = member(&bob_kit, "r").await;
    bob.drain().await;

    let ten = alice.chat().send_broadcast_text_message("0123456789").await.expect("10 bytes fit");
    bob.expect(Seen::message(&ten)).await;
    let e =
        expect_code(alice.chat().send_broadcast_text_message("0123456789a").await, Code::MESSAGE_TOO_LONG);
    assert!(e.msg().contains("10"), "{}", e.msg());
    bob.assert_quiet().await;
    // The [access] table applies too: alice has her one room.
    let second =
        alice_kit.room_service().create_room(create_params("r2"), CreateRoomOptions::default()).await;
    expect_code(second, Code::TOO_MANY_ROOMS);
    server.stop().await;
}

/// Settings stack up as documented: defaults < file < environment < flags. The file says
/// 10 bytes, the environment 12, a flag 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_overrides_the_file_and_flags_override_both() {
    let dir = TempDir::new();
    let path = dir.path().join("roomkit.toml");
    let file = "[limits]\nmax_message_bytes = 10\n[access]\nmax_rooms_per_account = 1\n";
    std::fs::write(&path, file).expect("write the config file");
    let config = path.to_str().expect("UTF-8 path");
    let env = [("ROOMKIT_MAX_MESSAGE_BYTES", "12")];
    for (extra, limit) in
        [(vec!["--config", config], 12), (vec!["--config", config, "--max-message-bytes", "11"], 11)]
    {
        let server = ServerProcess::launch(Launch { extra: &extra, env: &env, ..Launch::default() }).await;
        let alice_kit = server.client("alice").await;
        let alice = host(&alice_kit, "r").await;
        let fits = "x".repeat(limit);
        alice
            .chat()
            .send_broadcast_text_message(&fits)
            .await
            .unwrap_or_else(|e| panic!("{extra:?}: {limit} bytes: {e}"));
        let over = "x".repeat(limit + 1);
        expect_code(alice.chat().send_broadcast_text_message(&over).await, Code::MESSAGE_TOO_LONG);
        server.stop().await;
    }
}

/// `--handshake-timeout-secs` bounds how long a connection may take to send its request
/// head: a TCP connection that sends nothing is closed, on the client port and on the
/// admin port, while clients keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_to_the_binary_are_closed() {
    use tokio::io::AsyncReadExt;
    let server = ServerProcess::start(&["--handshake-timeout-secs", "1"]).await;
    let mut silent = Vec::new();
    for addr in [server.client, server.admin] {
        silent.push(within("a TCP connection", tokio::net::TcpStream::connect(addr)).await.expect("connect"));
    }
    let kit = server.client("alice").await;
    roomkit_tests::create_room(&kit, "r", true).await;
    for stream in &mut silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a silent connection was not closed:\n{}", server.logs());
    }
    server.stop().await;
}

/// Without `--dev` and without a token secret the binary refuses to start, naming
/// `--token-secret`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_without_a_secret_fails() {
    let listen = free_addr().to_string();
    let admin = free_addr().to_string();
    let out = run_to_end(&["--listen", &listen, "--admin-listen", &admin]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a secret: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("--token-secret"), "{stderr}");
}

/// SIGTERM closes every connection with `SERVER_SHUTTING_DOWN` without ending any room (no
/// `RoomEnd`: rooms outlive a restart, see protocol.md §5), the SDK clients start
/// reconnecting, and the process exits with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_and_exits_cleanly() {
    let server = ServerProcess::start(&[]).await;
    let alice_kit = server.client("alice").await;
    let mut alice = host(&alice_kit, "r").await;
    let bob_kit = server.client("bob").await;
    let mut bob = member(&bob_kit, "r").await;
    alice.drain().await;
    let mut states = [alice_kit.connection_events(), bob_kit.connection_events()];

    let mut server = server;
    server.terminate();
    let status = server.wait_exit().await;
    assert!(status.success(), "roomkit-server exited with {status}:\n{}", server.logs());
    for (m, states) in [&mut alice, &mut bob].into_iter().zip(&mut states) {
        let state = within("a connection state change", states.recv()).await.expect("state events");
        assert!(matches!(state, ConnectionState::Reconnecting { .. }), "{}: {state:?}", m.uuid());
        let events: Vec<RoomEvent> = std::iter::from_fn(|| m.events.try_recv()).collect();
        assert!(events.is_empty(), "{} received events on shutdown: {events:?}", m.uuid());
        assert!(m.kit.room_service().get_room_context("r").is_some(), "{} lost its context", m.uuid());
    }
}

/// Rooms and history are kept in `--data-dir` across a restart, and SDK clients resume on
/// their own: after SIGTERM and a new process on the same ports and data, both reconnect,
/// the chat goes on and the numbering continues after the messages sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_after_a_restart_with_the_same_data() {
    let data = TempDir::new();
    let first = ServerProcess::launch(Launch { data_dir: Some(data.path()), ..Launch::default() }).await;
    let ports = (first.client, first.admin);
    let alice_kit = first.client("alice").await;
    let mut alice = host(&alice_kit, "r").await;
    let bob_kit = first.client("bob").await;
    let mut bob = member(&bob_kit, "r").await;
    alice.drain().await;
    for text in ["before 1", "before 2"] {
        let sent = alice.chat().send_broadcast_text_message(text).await.expect("send");
        bob.expect(Seen::message(&sent)).await;
    }
    let mut states = [alice_kit.connection_events(), bob_kit.connection_events()];
    first.stop().await;

    let second = ServerProcess::launch(Launch {
        data_dir: Some(data.path()),
        ports: Some(ports),
        ..Launch::default()
    })
    .await;
    for (kit, states) in [&alice_kit, &bob_kit].into_iter().zip(&mut states) {
        let connected = tokio::time::timeout(PROCESS_BOUND, async {
            while let Some(state) = states.recv().await {
                match state {
                    ConnectionState::Connected => return true,
                    ConnectionState::Disconnected { .. } => return false,
                    _ => {}
                }
            }
            false
        })
        .await;
        assert_eq!(connected, Ok(true), "{kit:?} did not reconnect:\n{}", second.logs());
    }
    let after = alice.chat().send_broadcast_text_message("after").await.expect("send after the restart");
    assert_eq!(after.seq, 3, "the numbering continues after a restart");
    let (got, skipped) = bob.wait_for(|e| matches!(e, RoomEvent::ChatroomMessagesReceived(_))).await;
    assert!(!skipped.iter().any(|e| matches!(e, RoomEvent::RoomEnd(_))), "bob's room ended: {skipped:?}");
    let seen: Vec<Seen> = roomkit_tests::seen(&got);
    assert_eq!(seen, [Seen::message(&after)], "bob gets the new message once, and nothing again");
    let history =
        bob.chat().fetch_chatroom_history_messages(FetchHistoryOptions::default()).await.expect("history");
    let mut seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3], "history survives the restart");
    second.stop().await;
}
