//! nats-server for tests (the `testing` feature): one server ([`NatsServer`]) or a cluster
//! ([`NatsCluster`]), with JetStream, on free loopback ports and fresh store folders; killed
//! (SIGKILL) and restarted on demand, killed and removed when dropped. Starting waits until
//! the server takes connections and JetStream answers (in a cluster: has a meta leader).
//!
//! ```no_run
//! use roomkit_store_nats::testing::NatsServer;
//! let mut server = NatsServer::start();
//! let url = server.url();
//! server.kill();
//! server.restart();
//! ```

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime},
};

/// Longest a server may take to take connections and answer for JetStream (a cluster's
/// servers also elect a meta leader meanwhile). Bounds hangs only.
pub const START_BOUND: Duration = Duration::from_secs(60);

/// Where `nats-server` is looked for besides `PATH` (Debian installs it in `/usr/sbin`).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The `nats-server` executable; panics naming the fix when it is not installed.
pub fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed (not on PATH, nor in /usr/sbin): run `cargo xtask test`, \
                 which installs it (or `apt-get install nats-server`)"
            )
        })
}

/// A fresh folder under the system's temporary folder.
fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "roomkit-{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// `n` loopback ports that were free a moment ago (held together, so they differ).
fn free_ports(n: usize) -> Vec<u16> {
    reserve_ports(n).iter().map(port_of).collect()
}

/// Listeners on `n` free loopback ports: while they are held, nothing else takes the ports.
fn reserve_ports(n: usize) -> Vec<TcpListener> {
    (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a probe")).collect()
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("address").port()
}

/// One nats-server process and how to start it again.
struct Process {
    command: Vec<String>,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Its ports, held until it first starts (a cluster server started later keeps them).
    reserved: Vec<TcpListener>,
}

impl Process {
    fn spawn(&mut self) {
        self.reserved.clear();
        let log = File::options().create(true).append(true).open(&self.log).expect("open the server log");
        let child = Command::new(nats_server_binary())
            .args(&self.command)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server takes connections and, with `jetstream`, JetStream answers.
    fn wait_ready(&mut self, jetstream: bool) {
        let deadline = Instant::now() + START_BOUND;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("nats-server exited ({status}) while starting:\n{}", self.log_tail());
            }
            match probe(self.port, jetstream) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nats-server on port {} not ready within {START_BOUND:?} ({last}):\n{}",
            self.port,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Asks the server on `port` for its greeting and, with `jetstream`, for the account's
/// JetStream info, speaking the NATS protocol directly.
fn probe(port: u16, jetstream: bool) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    if !line.starts_with("INFO ") {
        return Err(format!("unexpected greeting {line:?}"));
    }
    if !jetstream {
        return Ok(());
    }
    let request =
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n\
                   SUB _INBOX.probe 1\r\nPUB $JS.API.INFO _INBOX.probe 0\r\n\r\n";
    stream.write_all(request.as_bytes()).map_err(io)?;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err("connection closed".into());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("PING") => stream.write_all(b"PONG\r\n").map_err(io)?,
            Some("MSG") => {
                let size: usize = words.last().and_then(|n| n.parse().ok()).ok_or("bad MSG line")?;
                let mut payload = vec![0; size + 2];
                reader.read_exact(&mut payload).map_err(io)?;
                let payload = String::from_utf8_lossy(&payload);
                return if payload.contains("\"error\"") { Err(payload.trim().to_owned()) } else { Ok(()) };
            }
            Some("HMSG") => return Err("JetStream does not answer (no responders)".into()),
            Some("-ERR") => return Err(line.trim().to_owned()),
            _ => {}
        }
    }
}

/// One nats-server with JetStream, for a test.
pub struct NatsServer {
    process: Process,
    dir: PathBuf,
    jetstream: bool,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port, storing in a fresh folder.
    pub fn start() -> Self {
        Self::launch(true)
    }

    /// Starts a server without JetStream (to test what a store says about it).
    pub fn start_without_jetstream() -> Self {
        Self::launch(false)
    }

    fn launch(jetstream: bool) -> Self {
        let dir = scratch_dir("nats");
        let port = free_ports(1)[0];
        let mut command: Vec<String> =
            ["-a", "127.0.0.1", "-p", &port.to_string(), "-n", "roomkit-test"].map(String::from).into();
        if jetstream {
            command.extend(["-js".to_owned(), "-sd".to_owned(), dir.join("store").display().to_string()]);
        }
        let process =
            Process { command, log: dir.join("nats-server.log"), port, child: None, reserved: Vec::new() };
        let mut server = Self { process, dir, jetstream };
        server.restart();
        server
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.port)
    }

    /// Its JetStream store folder.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Kills it (SIGKILL: no clean shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again (killing it first if it runs) on the same port and folder, and waits
    /// until it is ready.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.spawn();
        self.process.wait_ready(self.jetstream);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cluster of nats-servers with JetStream, for a test.
pub struct NatsCluster {
    nodes: Vec<Process>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `n` servers forming one JetStream cluster (each with its own configuration
    /// file, store folder and client and cluster ports) and waits until every one of them
    /// answers for JetStream, which needs a meta leader.
    pub fn start(n: usize) -> Self {
        Self::start_some(n, n)
    }

    /// A cluster of `n` servers of which only the first `up` are started (and waited for, as
    /// [`start`](Self::start) does); [`restart`](Self::restart) starts the others.
    pub fn start_some(n: usize, up: usize) -> Self {
        assert!(n >= 1 && up <= n, "a cluster has servers");
        let dir = scratch_dir("nats-cluster");
        // Held by each server until it starts: one started later finds its ports free.
        let mut reserved: Vec<Option<TcpListener>> = reserve_ports(2 * n).into_iter().map(Some).collect();
        let ports: Vec<u16> = reserved.iter().flatten().map(port_of).collect();
        let (client_ports, cluster_ports) = ports.split_at(n);
        let routes: Vec<String> =
            cluster_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let nodes = (0..n)
            .map(|i| {
                let config = dir.join(format!("n{i}.conf"));
                let text =
                    node_config(i, client_ports[i], cluster_ports[i], &routes, &dir.join(format!("n{i}")));
                fs::write(&config, text).expect("write a server configuration");
                Process {
                    command: vec!["-c".to_owned(), config.display().to_string()],
                    log: dir.join(format!("n{i}.log")),
                    port: client_ports[i],
                    child: None,
                    reserved: [i, n + i].iter().filter_map(|&at| reserved[at].take()).collect(),
                }
            })
            .collect();
        let mut cluster = Self { nodes, dir };
        for node in &mut cluster.nodes[..up] {
            node.spawn();
        }
        for node in &mut cluster.nodes[..up] {
            node.wait_ready(true);
        }
        cluster
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect()
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts server `i` (again, if it ran) on its ports and folder, and waits until it
    /// answers for JetStream.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.kill();
        node.spawn();
        node.wait_ready(true);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The configuration file of cluster server `i`.
fn node_config(i: usize, port: u16, cluster_port: u16, routes: &[String], store: &Path) -> String {
    format!(
        "server_name: n{i}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n}}\n\
         cluster {{\n  name: roomkit-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [\n    {}\n  ]\n}}\n",
        store.display(),
        routes.join("\n    ")
    )
}
