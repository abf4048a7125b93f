//! The server's configuration: every limit has a name and a default.

use std::time::Duration;

use roomkit_core::CoreConfig;

#[cfg(doc)]
use {crate::Server, roomkit_core::store::MessageStore};

/// Server configuration. Every limit has a name and a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Room and chatroom rules and limits.
    pub core: CoreConfig,
    /// Number of shard tasks rooms are hashed to. Default: the number of CPUs.
    pub shards: usize,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub send_queue_frames: usize,
    /// Bytes queued per connection (whole frames, counted until written) before it is closed
    /// as a slow consumer; past three quarters of it the queue sheds as past
    /// `send_queue_high_watermark`. One frame is accepted into an empty queue whatever its
    /// size. At least 1 (see [`check`](Self::check)): there is no "no cap" value.
    pub send_queue_bytes: usize,
    /// Queued frames past which a connection's queue sheds: its low-priority messages are
    /// dropped and only the newest `members_changed` per room is kept. `None`: three
    /// quarters of `send_queue_frames`. Clamped to `1..=send_queue_frames`.
    pub send_queue_high_watermark: Option<usize>,
    /// Messages queued per shard before readers wait (backpressure on senders only).
    pub shard_queue: usize,
    /// Most requests a shard takes from its queue per wake-up; each connection a wake-up's
    /// outputs reach is woken once. Store operations gather into the next commit whatever
    /// the wake-ups (commits are pipelined: see `commits_in_flight`).
    pub shard_batch: usize,
    /// Writers a shard wakes at once while it queues a wake-up's frames (default 1024). A
    /// writer is woken once per wake-up (one write per member per burst), but a burst to a
    /// large room starts going out after this many members, or this many frames, are queued
    /// to, not after the whole room: it bounds the time from a message's arrival to its first
    /// deliveries.
    pub writer_wake_batch: usize,
    /// Write pools (default: one per CPU; at most 65,536; 0: none): tasks that write idle
    /// connections' frames to their sockets in place, so that a delivery to an idle member
    /// costs the write rather than a wake-up and a poll of the member's own task too. Each
    /// connection belongs to one pool, by its id, so a large room's writes spread over all
    /// of them. Only for transports that write in place (WebSocket); see
    /// `docs/architecture.md`, "Write pools".
    pub write_pools: usize,
    /// Commits one shard may have handed to a durable store and not had answered (default 4;
    /// 0 counts as 1). A shard hands the store operations gathered since its last commit
    /// while the earlier ones sync, so that they join the next durable write, with the other
    /// shards' (see `docs/architecture.md`, "Durability"). Only where the shards' commits
    /// go through a committer: several shards and a store whose commits wait on a disk or a
    /// network ([`MessageStore::commit_waits`]); otherwise each shard has one commit at a
    /// time.
    pub commits_in_flight: usize,
    /// A connection that has not logged in within this time is closed.
    pub login_timeout: Duration,
    /// How long shutdown waits for connections to flush before giving up on them.
    pub shutdown_grace: Duration,
    /// Per-connection request rate limit.
    pub rate_limit: RateLimit,
    /// Most history reads (`join_chatroom`, `fetch_chatroom_history`) one connection may have
    /// under way; one more is answered `TOO_MANY_PENDING`.
    pub reads_in_flight: usize,
    /// Open connections in total (0: no cap). One more is closed as soon as it is accepted,
    /// with `SERVER_BUSY`.
    pub max_connections: usize,
    /// Open connections from one client IP address, logged in or not (0: no cap). One more
    /// is closed as soon as it is accepted, with `TOO_MANY_CONNECTIONS`. Behind a proxy every
    /// client has the proxy's address: raise it, or set 0 and cap at the proxy.
    pub max_connections_per_address: usize,
    /// Connections logged in as one account at once (0: no cap). One more login is answered
    /// `TOO_MANY_CONNECTIONS` (the connection stays, not logged in).
    pub max_connections_per_account: usize,
    /// How often the server sweeps its connections for keep-alive (default 30 s): each one
    /// from which nothing has arrived for half of this is sent a WebSocket ping. Zero turns
    /// keep-alive off (no pings, no `idle_timeout`).
    pub ping_interval: Duration,
    /// A connection from which nothing (no frame, no answer to a ping) has arrived for this
    /// long is closed with `KEEPALIVE_TIMEOUT` at the next sweep (default 75 s; at least
    /// `ping_interval`, so that a live peer is pinged before it is judged; see
    /// [`check`](Self::check)).
    pub idle_timeout: Duration,
}

impl ServerConfig {
    /// Refuses settings that would silently break a rule, naming the setting:
    /// `send_queue_bytes` 0 (every second queued frame would close its connection), and an
    /// `idle_timeout` shorter than a non-zero `ping_interval` (every idle connection would be
    /// closed before it is pinged). [`Server::spawn`] asserts it; the binary reports it at
    /// startup. [`CoreConfig::check`] covers `core`.
    pub fn check(&self) -> Result<(), String> {
        if self.send_queue_bytes == 0 {
            return Err("send_queue_bytes must be at least 1 (it has no \"no cap\" value)".into());
        }
        if !self.ping_interval.is_zero() && self.idle_timeout < self.ping_interval {
            return Err(format!(
                "idle_timeout ({:?}) must be at least ping_interval ({:?}): a live client must be pinged before it is judged",
                self.idle_timeout, self.ping_interval
            ));
        }
        Ok(())
    }

    /// The high watermark in effect: `send_queue_high_watermark`, or three quarters of
    /// `send_queue_frames`.
    pub fn high_watermark(&self) -> usize {
        let frames = self.send_queue_frames.max(1);
        self.send_queue_high_watermark.unwrap_or(frames / 4 * 3 + frames % 4 * 3 / 4).clamp(1, frames)
    }
}

/// A token bucket per connection: `per_second` requests refill, up to `burst` at once.
/// A request over the limit is answered `RATE_LIMITED`; a connection that keeps going
/// (`close_after` refused requests in a row) is closed with `RATE_LIMITED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Refused requests in a row after which the connection is closed.
    pub close_after: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 50, burst: 100, close_after: 100 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            send_queue_frames: 4096,
            send_queue_bytes: 4 * 1024 * 1024,
            send_queue_high_watermark: None,
            shard_queue: 4096,
            shard_batch: 64,
            writer_wake_batch: 1024,
            write_pools: std::thread::available_parallelism().map_or(1, |n| n.get()),
            commits_in_flight: 4,
            login_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            rate_limit: RateLimit::default(),
            reads_in_flight: 8,
            max_connections: 100_000,
            max_connections_per_address: 1000,
            max_connections_per_account: 16,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
        }
    }
}
