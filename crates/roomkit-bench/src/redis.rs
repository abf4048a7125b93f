//! The baseline: the same generator against redis pub/sub. At each size S a fresh
//! `redis-server` (persistence off, no protected mode, room for every client, no cut-off of
//! subscribers that fall behind) listens on a free loopback port; S-1 connections `SUBSCRIBE`
//! to one channel and one connection `PUBLISH`es to it, in the two phases of
//! [`crate::generator`]. The clients mirror roomkit's: Nagle off, a 4 KiB read buffer each, one
//! write per published message, replies read and counted off the publisher's connection.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedWriteHalf, TcpStream},
    process::Child,
    task::JoinHandle,
};

use crate::{
    bar, cpu_secs, free_port,
    generator::{add_fanout, Deliveries, Latency, Publish, Receiver, Run, PAYLOAD_BYTES},
    pin,
    readbuf::ReadBuffer,
    resp, rss_bytes,
};

/// Where `cargo xtask bench` makes sure redis is installed (Debian's `redis-server`).
pub(crate) const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// The channel every subscriber listens on.
const CHANNEL: &[u8] = b"bench";

/// `redis-server --version`, such as `Redis server v=7.0.15 sha=…`.
pub(crate) fn version() -> Option<String> {
    let out = std::process::Command::new(REDIS_SERVER).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts redis on a free loopback port, on `cpu` when given.
async fn start_redis(clients: usize, cpu: Option<usize>) -> Result<(Child, SocketAddr), String> {
    if !std::path::Path::new(REDIS_SERVER).exists() {
        return Err(format!(
            "{REDIS_SERVER} not found: run the bench through `cargo xtask bench`, which installs it"
        ));
    }
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid");
    let child = pin::command(std::path::Path::new(REDIS_SERVER), cpu)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--maxclients", &(clients + 64).to_string()])
        // Subscribers are never cut off for falling behind (roomkit's bench server gets a
        // send queue of 65,536 frames for the same reason).
        .args(["--client-output-buffer-limit", "pubsub 1gb 1gb 0"])
        .args(["--daemonize", "no", "--loglevel", "warning", "--logfile", ""])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {REDIS_SERVER}: {e}"))?;
    for _ in 0..200 {
        if let Ok(mut tcp) = TcpStream::connect(addr).await {
            let mut ping = Vec::new();
            resp::command(&mut ping, &[b"PING"]);
            tcp.write_all(&ping).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if buf[..n].starts_with(b"+PONG") {
                return Ok((child, addr));
            }
            return Err(format!("redis answered PING with {:?}", String::from_utf8_lossy(&buf[..n])));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("redis-server did not start listening".into())
}

/// A connection's incoming bytes, parsed one RESP value at a time.
struct RespReader<R> {
    read: R,
    buf: ReadBuffer,
}

impl<R: AsyncRead + Unpin> RespReader<R> {
    fn new(read: R) -> Self {
        Self { read, buf: ReadBuffer::new() }
    }

    /// Calls `each` with every value until the connection ends or `each` says stop.
    async fn for_each(&mut self, mut each: impl FnMut(&resp::Resp<'_>) -> bool) -> Result<(), String> {
        loop {
            while let Some((value, used)) = resp::parse(self.buf.unread())? {
                let stop = !each(&value);
                self.buf.take(used);
                if stop {
                    return Ok(());
                }
            }
            self.buf.fill(&mut self.read, None).await?;
        }
    }

    /// Calls `each` with the payload of every pub/sub message, taken in place, until the
    /// connection ends; other values are skipped.
    async fn for_each_message(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), String> {
        loop {
            loop {
                let unread = self.buf.unread();
                let used = match resp::message(unread) {
                    resp::Push::Message(payload, used) => {
                        each(payload);
                        used
                    }
                    resp::Push::Partial => break,
                    resp::Push::Other => match resp::parse(unread)? {
                        Some((_, used)) => used,
                        None => break,
                    },
                };
                self.buf.take(used);
            }
            self.buf.fill(&mut self.read, None).await?;
        }
    }
}

/// Connects a subscriber and waits for redis to confirm its subscription.
async fn subscriber(addr: SocketAddr) -> Result<RespReader<TcpStream>, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut subscribe = Vec::new();
    resp::command(&mut subscribe, &[b"SUBSCRIBE", CHANNEL]);
    tcp.write_all(&subscribe).await.map_err(|e| e.to_string())?;
    let mut reader = RespReader::new(tcp);
    let mut confirmed = false;
    reader
        .for_each(|value| {
            confirmed = matches!(value, resp::Resp::Array(Some(items)) if items.first() == Some(&resp::Resp::Bulk(Some(b"subscribe"))));
            !confirmed
        })
        .await?;
    Ok(reader)
}

fn spawn_subscriber(mut reader: RespReader<TcpStream>, mut receiver: Receiver) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = reader.for_each_message(|payload| receiver.observe(payload)).await;
    })
}

/// The publisher's connection: one `PUBLISH` written per text.
struct Publisher {
    write: OwnedWriteHalf,
    frame: Vec<u8>,
}

impl Publish for Publisher {
    async fn feed(&mut self, text: &str) -> Result<(), String> {
        self.frame.clear();
        resp::command(&mut self.frame, &[b"PUBLISH", CHANNEL, text.as_bytes()]);
        self.write.write_all(&self.frame).await.map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.write.flush().await.map_err(|e| e.to_string())
    }
}

/// redis at one size: a fresh server with its subscribers connected and read, and the
/// publisher's connection, ready for the phases; the row of its figures so far.
pub(crate) struct Redis {
    child: Child,
    pid: u32,
    run: Run<Publisher>,
    readers: Vec<JoinHandle<()>>,
    /// Reads the publisher's replies, counting them in `replies`; ends with the first error
    /// reply's text, or the connection's error.
    reply_reader: JoinHandle<Result<(), String>>,
    replies: Arc<AtomicU64>,
    row: Value,
}

impl Redis {
    /// Starts redis (on `server_cpu` when given) and connects `size - 1` subscribers and a
    /// publisher: the time the subscriptions took and the RSS per member go into the row.
    pub(crate) async fn start(size: usize, server_cpu: Option<usize>) -> Result<Self, String> {
        let (child, addr) = start_redis(size, server_cpu).await?;
        let pid = child.id().ok_or("redis-server exited")?;
        let deliveries = Deliveries::new();
        let receivers = (size - 1).max(1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss_before = rss_bytes(pid);

        let pb = bar(receivers as u64, &format!("redis: {receivers} subscribers"));
        let start = Instant::now();
        let mut subscribers = Vec::with_capacity(receivers);
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut next = 0;
        while next < receivers || !pending.is_empty() {
            while next < receivers && pending.len() < 256 {
                pending.push(async move { (next, subscriber(addr).await) });
                next += 1;
            }
            if let Some((i, result)) = pending.next().await {
                subscribers.push(result.map_err(|e| format!("subscriber {i}: {e}"))?);
                pb.inc(1);
            }
        }
        let connect_secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let readers: Vec<_> =
            subscribers.into_iter().map(|s| spawn_subscriber(s, deliveries.receiver())).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss_after = rss_bytes(pid);

        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, write) = tcp.into_split();
        let replies = Arc::new(AtomicU64::new(0));
        let reply_reader = {
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                let mut refused = None;
                RespReader::new(read)
                    .for_each(|value| {
                        replies.fetch_add(1, Ordering::Relaxed);
                        if let resp::Resp::Error(text) = value {
                            refused = Some(String::from_utf8_lossy(text).into_owned());
                        }
                        refused.is_none()
                    })
                    .await?;
                refused.map_or(Ok(()), |text| Err(format!("PUBLISH refused: {text}")))
            })
        };
        let publisher = Publisher { write, frame: Vec::with_capacity(PAYLOAD_BYTES + 64) };
        let run = Run::new(publisher, &deliveries, receivers as u64, "redis");
        let row = json!({
            "scenario": "fanout",
            "system": "redis",
            "members": size,
            "server_cpus": pin::allowed_cpus(&pid.to_string()).unwrap_or_default(),
            "subscribe_secs": connect_secs,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_per_member_bytes": rss_after.saturating_sub(rss_before) / size as u64,
        });
        Ok(Self { child, pid, run, readers, reply_reader, replies, row })
    }

    /// The fan-out phase, with the server's CPU time over it.
    pub(crate) async fn fanout(&mut self, deliveries: u64) -> Result<(), String> {
        let cpu_before = cpu_secs(self.pid);
        let fanout = self.run.fanout(deliveries).await?;
        add_fanout(&mut self.row, &fanout, cpu_secs(self.pid) - cpu_before);
        Ok(())
    }

    /// One round of the fixed-rate phase.
    pub(crate) async fn latency(&mut self, rate: u64, secs: u64) -> Result<Latency, String> {
        self.run.latency(rate, secs, &[self.pid]).await
    }

    /// Stops redis and the clients; the row, with `latency` (the figures of each rate, keyed by
    /// rate), or the error redis replied to a `PUBLISH` with.
    pub(crate) async fn finish(mut self, latency: Map<String, Value>) -> Result<Value, String> {
        drop(self.run);
        if self.reply_reader.is_finished() {
            if let Ok(Err(e)) = self.reply_reader.await {
                return Err(format!("redis publisher: {e}"));
            }
        } else {
            self.reply_reader.abort();
        }
        for r in self.readers {
            r.abort();
        }
        drop(self.child);
        self.row["publish_replies"] = json!(self.replies.load(Ordering::Relaxed));
        self.row["latency"] = Value::Object(latency);
        Ok(self.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readbuf::READ_BUFFER;

    /// Reads `bytes` through a pipe that hands the reader at most `max` bytes a read.
    async fn payloads_read(bytes: Vec<u8>, max: usize) -> (Vec<Vec<u8>>, Result<(), String>) {
        let (mut server, client) = tokio::io::duplex(max);
        let writer = tokio::spawn(async move {
            server.write_all(&bytes).await.unwrap();
        });
        let mut reader = RespReader::new(client);
        let mut got = Vec::new();
        let read = reader.for_each_message(|payload| got.push(payload.to_vec()));
        let end = tokio::time::timeout(Duration::from_secs(20), read).await.expect("the reader is not stuck");
        writer.abort();
        (got, end)
    }

    #[tokio::test]
    async fn subscribers_take_every_message_once_and_in_order_whatever_the_reads() {
        let payloads: Vec<Vec<u8>> = vec![
            b"first".to_vec(),
            b"with\r\nlines\r\n".to_vec(),
            b":5".to_vec(),
            vec![b'x'; 3 * READ_BUFFER],
            Vec::new(),
            b"last".to_vec(),
        ];
        let mut bytes = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n+OK\r\n".to_vec();
        for (i, payload) in payloads.iter().enumerate() {
            resp::command(&mut bytes, &[b"message", CHANNEL, payload]);
            if i == 2 {
                bytes.extend_from_slice(b":7\r\n$-1\r\n");
            }
        }
        for max in [1, 7, READ_BUFFER, 64 * 1024] {
            let (got, end) = payloads_read(bytes.clone(), max).await;
            assert!(got == payloads, "reads of at most {max} bytes: {} payloads", got.len());
            assert_eq!(end, Err("connection closed".into()));
        }
    }
}
