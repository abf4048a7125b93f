//! `cargo xtask cluster`: a three-node roomkit cluster on this machine, for trying cluster mode
//! out. Starts a nats-server with JetStream (its data in `target/cluster/nats`) and three
//! `roomkit-server` nodes in development mode on it, prints where clients connect, and stops
//! everything on Ctrl-C (or when any process exits).

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use crate::{cmd, system};

/// The NATS port the example uses.
const NATS_PORT: u16 = 4222;

/// The nodes: id, client port, admin port.
const NODES: [(&str, u16, u16); 3] = [("node-1", 7700, 7701), ("node-2", 7710, 7711), ("node-3", 7720, 7721)];

/// Children killed when dropped.
struct Group(Vec<(String, Child)>);

impl Drop for Group {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("stopped {name}");
        }
    }
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    system::ensure(&[system::NATS_SERVER])?;
    cmd("cargo", &["build", "--quiet", "--package", "roomkit-server-bin", "--bin", "roomkit-server"])?;
    let nats_dir = "target/cluster/nats";
    std::fs::create_dir_all(nats_dir).map_err(|e| format!("creating {nats_dir}: {e}"))?;
    let mut group = Group(Vec::new());
    let nats = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &NATS_PORT.to_string(), "-sd", nats_dir])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting nats-server: {e}"))?;
    group.0.push(("nats-server".into(), nats));
    wait_for_port(NATS_PORT)?;
    let nats_url = format!("nats://127.0.0.1:{NATS_PORT}");
    for (id, port, admin) in NODES {
        let mut command = Command::new("target/debug/roomkit-server");
        command.args([
            "--dev",
            "--cluster",
            &nats_url,
            "--node-id",
            id,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ]);
        command.args(args);
        let child = command.spawn().map_err(|e| format!("starting {id}: {e}"))?;
        group.0.push((id.into(), child));
    }
    for (_, port, _) in NODES {
        wait_for_port(port)?;
    }
    println!("\nA three-node roomkit cluster on {nats_url}:");
    for (id, port, admin) in NODES {
        println!("  {id}: clients ws://127.0.0.1:{port}/v1   web page http://127.0.0.1:{port}/   admin http://127.0.0.1:{admin}");
    }
    println!("Connect clients to any node (the SDK takes all three URLs). Ctrl-C stops the cluster.\n");
    // Runs until a process exits (Ctrl-C reaches the whole process group).
    loop {
        thread::sleep(Duration::from_millis(200));
        for (name, child) in &mut group.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{name} exited ({status}); stopping the cluster"));
            }
        }
    }
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_for_port(port: u16) -> Result<(), String> {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 30 s"))
}
