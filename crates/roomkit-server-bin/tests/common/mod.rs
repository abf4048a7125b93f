//! What the process-level tests share: the binary with a clean environment, scratch folders,
//! free loopback addresses.

#![allow(dead_code)] // each test file uses its own part

pub mod chaos;

use std::{
    ffi::OsStr,
    fmt::Debug,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

/// Longest the binary may take to start serving or to exit. Bounds hangs only.
pub const PROCESS_BOUND: Duration = Duration::from_secs(60);

/// A command running the binary with a clean `ROOMKIT_*` environment.
pub fn server_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomkit-server"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROOMKIT_") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A fresh scratch folder for one process's files.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "roomkit-e2e-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// A scratch folder, removed when dropped (also when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        Self(scratch_dir())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Its `data` folder, for `--data-dir` (created).
    pub fn data(&self) -> PathBuf {
        let data = self.0.join("data");
        std::fs::create_dir_all(&data).expect("create the data folder");
        data
    }

    /// The database file in [`data`](Self::data).
    pub fn database(&self) -> PathBuf {
        self.data().join("roomkit.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("address")
}

/// Runs the binary with `args` to completion (bounded by [`PROCESS_BOUND`]); returns its
/// output.
pub async fn run_to_end<S: AsRef<OsStr> + Debug>(args: &[S]) -> Output {
    let mut cmd = server_command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id();
    let waited =
        tokio::time::timeout(PROCESS_BOUND, tokio::task::spawn_blocking(move || child.wait_with_output()))
            .await;
    match waited {
        Ok(out) => out.expect("the waiting task").expect("wait for the process"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("roomkit-server {args:?} did not exit within {PROCESS_BOUND:?}");
        }
    }
}
