//! The binary and a damaged store: a database file that does not open cleanly stops the start
//! with a clear message and exit status 1, unless `--reset-store` moves it aside; `check`
//! verifies a data directory; a message edited on disk is reported by `check` and never served
//! as genuine by history.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use common::{free_addr, run_to_end, server_command, TempDir, PROCESS_BOUND};
use roomkit_client::{CreateRoomOptions, FetchHistoryOptions, JoinRoomParams, RoomKit};
use roomkit_protocol::Role;
use roomkit_tests::{create_params, http, join_params, join_with, within, Member};

/// The arguments that start a development server on free ports with `data` as its data dir.
fn serve_args(data: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--dev", "--admin-key", "k", "--listen", &free_addr().to_string()]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(["--admin-listen".into(), free_addr().to_string(), "--data-dir".into()]);
    args.push(data.display().to_string());
    args
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A serving `roomkit-server`; killed on drop if still running.
struct Server {
    child: Child,
    client: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on `data` with `extra` arguments and waits until it serves.
    async fn start(dir: &TempDir, extra: &[&str]) -> Server {
        for attempt in 0..5 {
            let args = serve_args(&dir.data());
            let client: SocketAddr = args[4].parse().expect("the --listen address");
            let log = dir.path().join(format!("server-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log handle");
            let child =
                server_command().args(&args).args(extra).stdout(out).stderr(err).spawn().expect("spawn");
            let mut server = Server { child, client, log };
            if server.wait_until_serving().await {
                return server;
            }
            let logs = server.logs();
            assert!(logs.contains("binding"), "roomkit-server exited at start:\n{logs}");
        }
        panic!("could not bind the ports of roomkit-server");
    }

    async fn wait_until_serving(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PROCESS_BOUND;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            let probe = http::try_send(self.client, http::Request::new("GET", "/healthz"));
            if matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(r)) if r.status == 200)
            {
                return true;
            }
            assert!(tokio::time::Instant::now() < deadline, "roomkit-server never served:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process printed so far, without terminal colours.
    fn logs(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                out.push(c);
            }
        }
        out
    }

    async fn client(&self, account: &str) -> RoomKit {
        let url = format!("ws://{}/v1", self.client);
        let kit = within("RoomKit::connect", RoomKit::connect(url.as_str())).await.expect("connect");
        kit.login(account, "dev").await.expect("login");
        kit
    }

    /// SIGTERM, then a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let deadline = tokio::time::Instant::now() + PROCESS_BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "no exit:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "exit {status}:\n{}", self.logs());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kit` creates room `uuid` with a chatroom, joins it as host and enters the chatroom.
async fn host(kit: &RoomKit, uuid: &str) -> Member {
    kit.room_service()
        .create_room(create_params(uuid), CreateRoomOptions { enable_chatroom: true })
        .await
        .expect("create_room");
    let account = kit.user_uuid().expect("logged in").to_string();
    let mut m = join_with(kit, JoinRoomParams { role: Role::Host, ..join_params(uuid, &account) }).await;
    m.chat().join_chatroom().await.expect("join_chatroom");
    m.drain().await;
    m
}

/// Replaces every copy of `from` in the file by `to` (same length); returns how many.
fn edit(path: &Path, from: &str, to: &str) -> usize {
    let mut bytes = std::fs::read(path).expect("read the database");
    let positions: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from.as_bytes())
        .map(|(i, _)| i)
        .collect();
    for &i in &positions {
        bytes[i..i + to.len()].copy_from_slice(to.as_bytes());
    }
    std::fs::write(path, bytes).expect("write the database");
    positions.len()
}

/// A 0-byte database file stops the start: exit status 1, a message naming the file, what is
/// wrong and the way out; the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_file_stops_the_start() {
    let dir = TempDir::new();
    std::fs::write(dir.database(), b"").expect("an empty file");
    let out = run_to_end(&serve_args(&dir.data())).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}\nstderr:\n{stderr}", text(&out.stdout));
    assert!(stderr.contains("roomkit.redb") && stderr.contains("empty (0 bytes)"), "{stderr}");
    assert!(stderr.contains("roomkit-server check") && stderr.contains("--reset-store"), "{stderr}");
    assert!(!text(&out.stdout).contains("listening"), "it served:\n{}", text(&out.stdout));
    assert_eq!(std::fs::metadata(dir.database()).expect("still there").len(), 0, "left as it was");

    let out = run_to_end(&["check".into(), "--data-dir".into(), dir.data().display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("PROBLEM: the file is empty"), "{}", text(&out.stdout));
}

/// `--reset-store` moves a file that does not open cleanly aside, keeping it, and starts with
/// an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_store_moves_the_damaged_file_aside_and_starts_empty() {
    let dir = TempDir::new();
    std::fs::write(dir.database(), b"not a database at all").expect("a damaged file");
    let server = Server::start(&dir, &["--reset-store"]).await;
    let kit = server.client("alice").await;
    host(&kit, "fresh").await;
    drop(kit);
    assert!(server.logs().contains("moved it aside"), "{}", server.logs());
    server.stop().await;
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.data())
        .expect("list the data directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("roomkit.redb.damaged-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("kept"), b"not a database at all");
    let out = run_to_end(&["check".into(), "--data-dir".into(), dir.data().display().to_string()]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("rooms:    1"), "the fresh store checks out:\n{stdout}");
}

/// A message edited in place on disk: `check` names it and exits 1; the server still starts
/// (the rooms are intact), history leaves the message out, and the log says which it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_message_is_reported_by_check_and_not_served() {
    let dir = TempDir::new();
    let server = Server::start(&dir, &[]).await;
    let kit = server.client("alice").await;
    let alice = host(&kit, "r").await;
    for t in ["genuine one", "genuine two", "genuine three"] {
        alice.chat().send_broadcast_text_message(t).await.expect("send");
    }
    drop(alice);
    drop(kit);
    server.stop().await;

    let check = ["check".to_string(), "--data-dir".into(), dir.data().display().to_string()];
    let out = run_to_end(&check).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("messages: 3"), "{}", text(&out.stdout));

    assert!(edit(&dir.database(), "genuine two", "forged! two") >= 1);
    let out = run_to_end(&check).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("room r message 2: checksum mismatch"), "{stdout}");

    let server = Server::start(&dir, &[]).await;
    let kit = server.client("alice").await;
    let alice = roomkit_tests::join(&kit, "r").await;
    alice.chat().join_chatroom().await.expect("join_chatroom");
    let history =
        alice.chat().fetch_chatroom_history_messages(FetchHistoryOptions::default()).await.expect("history");
    let mut served: Vec<(u64, String)> =
        history.iter().map(|m| (m.seq, m.text().unwrap_or_default().to_string())).collect();
    served.sort();
    assert_eq!(served, [(1, "genuine one".to_string()), (3, "genuine three".to_string())]);
    let logs = server.logs();
    assert!(logs.contains("failed verification") && logs.contains("seq=2"), "{logs}");
    server.stop().await;
}
