//! Configuration: defaults < TOML file < environment < flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use roomkit_core::{store::Retention, CoreConfig};
use roomkit_server::{admin::AdminLimits, RateLimit, ServerConfig};
use roomkit_transport_ws::WsConfig;
use serde::Deserialize;

use crate::{
    access::{AccessArgs, AccessTargets},
    cluster::{ClusterArgs, ClusterSettings},
};

/// The secret `--dev` signs tokens with when none is configured. Development only.
pub const DEV_TOKEN_SECRET: &str = "roomkit-development-secret";

#[derive(Debug, Parser)]
#[command(name = "roomkit-server", version, about = "The roomkit room + chatroom server")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Print an access token signed with the configured secret.
    Token(TokenArgs),
    /// Verify the store in a data directory (every room and message); exit 1 on any problem.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The data directory to verify.
    #[arg(long, env = "ROOMKIT_DATA_DIR", default_value = "roomkit-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "ROOMKIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where clients connect (WebSocket at /v1) [default: 127.0.0.1:7700].
    #[arg(long, env = "ROOMKIT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the admin HTTP API listens [default: 127.0.0.1:7701].
    #[arg(long, env = "ROOMKIT_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// The secret access tokens are signed with (HS256). Prefer the environment variable or
    /// the config file: a flag is visible to every user of the machine in the process list.
    #[arg(long, env = "ROOMKIT_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// The bearer key of the admin API. Prefer the environment variable or the config file:
    /// a flag is visible to every user of the machine in the process list.
    #[arg(long, env = "ROOMKIT_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Development mode: any account logs in with any non-empty token. Never expose it.
    #[arg(long, env = "ROOMKIT_DEV")]
    pub dev: bool,
    /// Log filter, e.g. `info` or `roomkit_server=debug,info` [default: info].
    #[arg(long, env = "ROOMKIT_LOG")]
    pub log: Option<String>,
    /// Where rooms and history are kept (created if missing) [default: ./roomkit-data].
    #[arg(long, env = "ROOMKIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `redb` (durable, in the data directory) or `memory` (nothing survives a restart)
    /// [default: redb].
    #[arg(long, env = "ROOMKIT_STORE")]
    pub store: Option<StoreKind>,
    /// If the store does not open cleanly, move its file aside (renamed, not deleted) and start
    /// with an empty one. Without it such a store stops the server.
    #[arg(long, env = "ROOMKIT_RESET_STORE")]
    pub reset_store: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Which store keeps rooms and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Durable, in the data directory.
    Redb,
    /// In memory: nothing survives a restart.
    Memory,
}

/// Every limit, as flags / environment / file keys.
#[derive(Debug, Args, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// Largest WebSocket message, bytes [default: 65536].
    #[arg(long, env = "ROOMKIT_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Longest chat message text, bytes [default: 5120].
    #[arg(long, env = "ROOMKIT_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most recipients of one directed message [default: 100].
    #[arg(long, env = "ROOMKIT_MAX_RECIPIENTS")]
    pub max_recipients: Option<usize>,
    /// Frames queued per connection before it is closed as a slow consumer [default: 4096].
    #[arg(long, env = "ROOMKIT_SEND_QUEUE_FRAMES")]
    pub send_queue_frames: Option<usize>,
    /// Bytes queued per connection before it is closed as a slow consumer; past 3/4 of it the
    /// queue sheds [default: 4194304].
    #[arg(long, env = "ROOMKIT_SEND_QUEUE_BYTES")]
    pub send_queue_bytes: Option<usize>,
    /// Queued frames past which a connection's queue sheds low-priority messages and older
    /// presence digests [default: 3/4 of send_queue_frames].
    #[arg(long, env = "ROOMKIT_SEND_QUEUE_HIGH_WATERMARK")]
    pub send_queue_high_watermark: Option<usize>,
    /// Sustained requests per second per connection [default: 50].
    #[arg(long, env = "ROOMKIT_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<u32>,
    /// Request burst per connection [default: 100].
    #[arg(long, env = "ROOMKIT_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Refused requests in a row before the connection is closed [default: 100].
    #[arg(long, env = "ROOMKIT_RATE_LIMIT_CLOSE_AFTER")]
    pub rate_limit_close_after: Option<u32>,
    /// Recent messages kept in memory per chatroom (recall and retries also use the id
    /// window) [default: 1000].
    #[arg(long, env = "ROOMKIT_HISTORY_RING_SIZE")]
    pub history_ring_size: Option<usize>,
    /// Seconds an empty room lives [default: 86400].
    #[arg(long, env = "ROOMKIT_ROOM_IDLE_TIMEOUT_SECS")]
    pub room_idle_timeout_secs: Option<u64>,
    /// Seconds to complete the HTTP/WebSocket handshake [default: 10].
    #[arg(long, env = "ROOMKIT_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds to log in after connecting [default: 10].
    #[arg(long, env = "ROOMKIT_LOGIN_TIMEOUT_SECS")]
    pub login_timeout_secs: Option<u64>,
    /// Shard tasks rooms are spread over [default: number of CPUs].
    #[arg(long, env = "ROOMKIT_SHARDS")]
    pub shards: Option<usize>,
    /// Longest room name, characters [default: 64].
    #[arg(long, env = "ROOMKIT_MAX_ROOM_NAME_CHARS")]
    pub max_room_name_chars: Option<usize>,
    /// Longest room password, characters [default: 64].
    #[arg(long, env = "ROOMKIT_MAX_PASSWORD_CHARS")]
    pub max_password_chars: Option<usize>,
    /// Longest member display name, characters [default: 64].
    #[arg(long, env = "ROOMKIT_MAX_USER_NAME_CHARS")]
    pub max_user_name_chars: Option<usize>,
    /// Longest avatar URL or template id, bytes [default: 1024].
    #[arg(long, env = "ROOMKIT_MAX_AVATAR_BYTES")]
    pub max_avatar_bytes: Option<usize>,
    /// Longest property key, bytes [default: 64].
    #[arg(long, env = "ROOMKIT_MAX_PROPERTY_KEY_BYTES")]
    pub max_property_key_bytes: Option<usize>,
    /// Longest property value, bytes [default: 4096].
    #[arg(long, env = "ROOMKIT_MAX_PROPERTY_VALUE_BYTES")]
    pub max_property_value_bytes: Option<usize>,
    /// Most properties per room or member [default: 64].
    #[arg(long, env = "ROOMKIT_MAX_PROPERTIES")]
    pub max_properties: Option<usize>,
    /// Ended room uuids remembered to answer ROOM_ENDED [default: 4096].
    #[arg(long, env = "ROOMKIT_ENDED_ROOMS_REMEMBERED")]
    pub ended_rooms_remembered: Option<usize>,
    /// Requests a shard takes from its queue per wake-up (commits gather whatever came since the last) [default: 64].
    #[arg(long, env = "ROOMKIT_SHARD_BATCH")]
    pub shard_batch: Option<usize>,
    /// Writers a shard wakes at once while queuing a burst: a large room's burst starts
    /// going out after this many members [default: 1024].
    #[arg(long, env = "ROOMKIT_WRITER_WAKE_BATCH")]
    pub writer_wake_batch: Option<usize>,
    /// Write-pool tasks that write idle WebSocket connections' queued frames in place, at
    /// most 65536 (0: each connection's own task writes) [default: the number of CPUs].
    #[arg(long, env = "ROOMKIT_WRITE_POOLS")]
    pub write_pools: Option<usize>,
    /// Commits one shard may have handed to the store and not had answered: the next one
    /// joins the next durable write while the earlier ones sync [default: 4; at least 1].
    #[arg(long, env = "ROOMKIT_COMMITS_IN_FLIGHT")]
    pub commits_in_flight: Option<usize>,
    /// Requests queued per shard before readers wait [default: 4096].
    #[arg(long, env = "ROOMKIT_SHARD_QUEUE")]
    pub shard_queue: Option<usize>,
    /// Connections the kernel queues for the accept loop on each listening port [default:
    /// 4096; the kernel caps it at net.core.somaxconn]. A join storm past it sees SYNs dropped
    /// and retried a second later.
    #[arg(long, env = "ROOMKIT_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Bytes asked of a socket per read while a WebSocket frame is incomplete [default:
    /// 4096]; an idle connection holds no read buffer.
    #[arg(long, env = "ROOMKIT_READ_BUFFER_BYTES")]
    pub read_buffer_bytes: Option<usize>,
    /// Seconds shutdown waits for connections to flush [default: 5].
    #[arg(long, env = "ROOMKIT_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Message ids remembered per chatroom, so a retried send is stored once [default: 10000].
    #[arg(long, env = "ROOMKIT_DEDUPE_WINDOW")]
    pub dedupe_window: Option<usize>,
    /// Stored messages one history request may read; past it the page ends with a cursor
    /// [default: 1000; at least 100].
    #[arg(long, env = "ROOMKIT_HISTORY_SCAN_LIMIT")]
    pub history_scan_limit: Option<usize>,
    /// History reads one connection may have under way; more are TOO_MANY_PENDING [default: 8].
    #[arg(long, env = "ROOMKIT_READS_IN_FLIGHT")]
    pub reads_in_flight: Option<usize>,
    /// Seconds a dropped member stays before leaving, if it does not come back [default: 30].
    #[arg(long, env = "ROOMKIT_RECONNECT_GRACE_SECS")]
    pub reconnect_grace_secs: Option<u64>,
    /// Seconds a sender may recall its message [default: 120].
    #[arg(long, env = "ROOMKIT_RECALL_WINDOW_SECS")]
    pub recall_window_secs: Option<u64>,
    /// Messages kept per chatroom in the store [default: 100000].
    #[arg(long, env = "ROOMKIT_RETENTION_MESSAGES")]
    pub retention_messages: Option<u64>,
    /// Seconds messages are kept in the store [default: 30 days].
    #[arg(long, env = "ROOMKIT_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// Most members in a join_room answer; larger rooms are paged [default: 50].
    #[arg(long, env = "ROOMKIT_JOIN_MEMBER_PAGE")]
    pub join_member_page: Option<usize>,
    /// Largest room told of each join and leave one by one; above it, digests [default: 500].
    #[arg(long, env = "ROOMKIT_PRESENCE_PER_MEMBER_MAX")]
    pub presence_per_member_max: Option<usize>,
    /// Milliseconds between members_changed digests [default: 1000].
    #[arg(long, env = "ROOMKIT_PRESENCE_DIGEST_MS")]
    pub presence_digest_ms: Option<u64>,
    /// Most members a digest names per list (the host always) [default: 20].
    #[arg(long, env = "ROOMKIT_PRESENCE_DIGEST_NAMES")]
    pub presence_digest_names: Option<usize>,
    /// Above this many members digests carry counts and the host only [default: 20000].
    #[arg(long, env = "ROOMKIT_PRESENCE_COUNT_ONLY_MIN")]
    pub presence_count_only_min: Option<usize>,
    /// Hysteresis of the presence thresholds, percent [default: 20].
    #[arg(long, env = "ROOMKIT_PRESENCE_HYSTERESIS_PERCENT")]
    pub presence_hysteresis_percent: Option<u8>,
    /// Chatroom messages per second one member may send; 0 for no limit [default: 20].
    #[arg(long, env = "ROOMKIT_MEMBER_MESSAGE_RATE")]
    pub member_message_rate: Option<u32>,
    /// ...and at once [default: 40].
    #[arg(long, env = "ROOMKIT_MEMBER_MESSAGE_BURST")]
    pub member_message_burst: Option<u32>,
    /// Messages per second one chatroom accepts from all its members; 0 for no limit [default: 100].
    #[arg(long, env = "ROOMKIT_CHATROOM_MESSAGE_RATE")]
    pub chatroom_message_rate: Option<u32>,
    /// ...and at once [default: 200].
    #[arg(long, env = "ROOMKIT_CHATROOM_MESSAGE_BURST")]
    pub chatroom_message_burst: Option<u32>,
    /// `immediate`: a message is fsynced before it is acknowledged (its answer says
    /// `durable: true`). `eventual`: fsync at most once a second; acknowledged messages are
    /// NOT durable (answers say `durable: false`) and a crash loses the last second or so of
    /// them [default: immediate].
    #[arg(long, env = "ROOMKIT_DURABILITY")]
    pub durability: Option<DurabilityKind>,
    /// With `immediate`: the first commit this many milliseconds after the last checkpoint
    /// syncs the database and empties the journal [default: 1000].
    #[arg(long, env = "ROOMKIT_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// ...and so does the first once the journal holds this many bytes [default: 4194304].
    #[arg(long, env = "ROOMKIT_CHECKPOINT_JOURNAL_BYTES")]
    pub checkpoint_journal_bytes: Option<u64>,
}

/// Whether store commits wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityKind {
    /// fsync before a message is acknowledged.
    Immediate,
    /// fsync at most once a second: acknowledgements say `durable: false`, and a crash may
    /// lose up to a second of acknowledged messages.
    Eventual,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The account id the token is for.
    #[arg(long)]
    pub account: String,
    /// Display name [default: the account id].
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = roomkit_token::parse_duration)]
    pub ttl: Duration,
    /// A room the token may join (repeat for more); none means every room.
    #[arg(long = "room")]
    pub rooms: Vec<String>,
    /// Grant room admin (host rights in every room).
    #[arg(long)]
    pub admin: bool,
    /// Do not grant creating rooms.
    #[arg(long)]
    pub no_create: bool,
    /// A TOML configuration file to read the secret from.
    #[arg(long, env = "ROOMKIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The signing secret (prefer the environment variable or the config file: a flag is
    /// visible in the process list).
    #[arg(long, env = "ROOMKIT_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Use the development secret (for servers started with --dev).
    #[arg(long, env = "ROOMKIT_DEV")]
    pub dev: bool,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub token_secret: Option<String>,
    pub admin_key: Option<String>,
    #[serde(default)]
    pub dev: bool,
    pub log: Option<String>,
    #[serde(default)]
    pub limits: LimitArgs,
    #[serde(default)]
    pub access: AccessArgs,
    #[serde(default)]
    pub cluster: ClusterArgs,
}

pub fn read_file(path: Option<&PathBuf>) -> Result<FileConfig, String> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Everything the server runs with, resolved.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The accept queue of each listening port.
    pub listen_backlog: u32,
    pub token_secret: Option<String>,
    pub admin_key: Option<String>,
    pub dev: bool,
    pub log: String,
    pub server: ServerConfig,
    pub ws: WsConfig,
    pub handshake_timeout: Duration,
    pub admin_limits: AdminLimits,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub retention: Retention,
    pub durability: DurabilityKind,
    /// When the journal's commits are checkpointed (see `RedbConfig`).
    pub checkpoint_interval: Duration,
    pub checkpoint_journal_bytes: u64,
    /// Cluster mode, when `--cluster` is given.
    pub cluster: Option<ClusterSettings>,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
        let file = read_file(args.config.as_ref())?;
        let l = merge_limits(&args.limits, &file.limits);
        let mut server = ServerConfig::default();
        let mut ws = WsConfig::default();
        set(&mut ws.max_frame_bytes, l.max_frame_bytes);
        set(&mut server.core.max_message_bytes, l.max_message_bytes);
        set(&mut server.core.max_recipients, l.max_recipients);
        set(&mut server.send_queue_frames, l.send_queue_frames);
        set(&mut server.send_queue_bytes, l.send_queue_bytes);
        server.send_queue_high_watermark = l.send_queue_high_watermark;
        let d = RateLimit::default();
        server.rate_limit = RateLimit {
            per_second: l.rate_limit_per_second.unwrap_or(d.per_second),
            burst: l.rate_limit_burst.unwrap_or(d.burst),
            close_after: l.rate_limit_close_after.unwrap_or(d.close_after),
        };
        set(&mut server.core.history_ring_size, l.history_ring_size);
        set(&mut server.core.room_idle_timeout_ms, l.room_idle_timeout_secs.map(|v| v.saturating_mul(1000)));
        set(&mut server.login_timeout, l.login_timeout_secs.map(Duration::from_secs));
        set(&mut server.shards, l.shards.map(|v| v.max(1)));
        let c = &mut server.core;
        set(&mut c.max_room_name_chars, l.max_room_name_chars);
        set(&mut c.max_password_chars, l.max_password_chars);
        set(&mut c.max_user_name_chars, l.max_user_name_chars);
        set(&mut c.max_avatar_bytes, l.max_avatar_bytes);
        set(&mut c.max_property_key_bytes, l.max_property_key_bytes);
        set(&mut c.max_property_value_bytes, l.max_property_value_bytes);
        set(&mut c.max_properties, l.max_properties);
        set(&mut c.ended_rooms_remembered, l.ended_rooms_remembered);
        set(&mut c.dedupe_window, l.dedupe_window);
        set(&mut c.history_scan_limit, l.history_scan_limit);
        set(&mut c.reconnect_grace_ms, l.reconnect_grace_secs.map(|s| s.saturating_mul(1000)));
        set(&mut c.recall_window_ms, l.recall_window_secs.map(|s| s.saturating_mul(1000)));
        set_presence_and_rates(c, &l);
        let cluster = ClusterArgs::merge(&args.cluster, &file.cluster).resolve()?;
        if cluster.is_some() && args.store.or(file.store).is_some() {
            return Err(
                "--store and --cluster do not go together: a cluster keeps rooms and history in JetStream"
                    .into(),
            );
        }
        let store = args.store.or(file.store).unwrap_or(StoreKind::Redb);
        let durability = l.durability.unwrap_or(DurabilityKind::Immediate);
        // JetStream acknowledges a publish once stored (on a majority of its replicas).
        c.durable_acks =
            cluster.is_some() || (store == StoreKind::Redb && durability == DurabilityKind::Immediate);
        c.check()?;
        set(&mut server.shard_queue, l.shard_queue);
        set(&mut server.shard_batch, l.shard_batch);
        set(&mut server.reads_in_flight, l.reads_in_flight.map(|v| v.max(1)));
        set(&mut server.writer_wake_batch, l.writer_wake_batch);
        set(&mut server.write_pools, l.write_pools);
        set(&mut server.commits_in_flight, l.commits_in_flight.map(|v| v.max(1)));
        set(&mut ws.read_buffer_bytes, l.read_buffer_bytes);
        set(&mut server.shutdown_grace, l.shutdown_grace_secs.map(Duration::from_secs));
        let mut admin_limits = AdminLimits::default();
        let targets = AccessTargets { server: &mut server, ws: &mut ws, admin: &mut admin_limits };
        AccessArgs::merge(&args.access, &file.access).apply(targets)?;
        server.check()?;
        let handshake_timeout = Duration::from_secs(l.handshake_timeout_secs.unwrap_or(10));
        ws.handshake_timeout = handshake_timeout;
        let dev = args.dev || file.dev;
        let token_secret =
            args.token_secret.or(file.token_secret).or_else(|| dev.then(|| DEV_TOKEN_SECRET.into()));
        if token_secret.is_none() {
            return Err(
                "no token secret: set --token-secret (or ROOMKIT_TOKEN_SECRET, or token_secret in the \
                        config file), or run in development mode with --dev"
                    .into(),
            );
        }
        Ok(Settings {
            listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7700".parse().expect("valid")),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| "127.0.0.1:7701".parse().expect("valid")),
            listen_backlog: l.listen_backlog.unwrap_or(4096),
            token_secret,
            admin_key: args.admin_key.or(file.admin_key),
            dev,
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            server,
            ws,
            handshake_timeout,
            admin_limits,
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("roomkit-data")),
            store,
            retention: Retention {
                max_messages: Some(l.retention_messages.unwrap_or(100_000)),
                max_age_ms: Some(l.retention_secs.unwrap_or(30 * 86_400).saturating_mul(1000)),
            },
            durability,
            checkpoint_interval: l
                .checkpoint_interval_ms
                .map_or(roomkit_store_redb::CHECKPOINT_INTERVAL, Duration::from_millis),
            checkpoint_journal_bytes: l
                .checkpoint_journal_bytes
                .unwrap_or(roomkit_store_redb::CHECKPOINT_JOURNAL_BYTES),
            cluster,
        })
    }
}

/// The large-room rules: join page, presence thresholds and digests, message rates.
fn set_presence_and_rates(c: &mut CoreConfig, l: &LimitArgs) {
    set(&mut c.join_member_page, l.join_member_page);
    set(&mut c.presence_per_member_max, l.presence_per_member_max);
    set(&mut c.presence_digest_ms, l.presence_digest_ms);
    set(&mut c.presence_digest_names, l.presence_digest_names);
    set(&mut c.presence_count_only_min, l.presence_count_only_min);
    set(&mut c.presence_hysteresis_percent, l.presence_hysteresis_percent);
    set(&mut c.member_message_rate.per_second, l.member_message_rate);
    set(&mut c.member_message_rate.burst, l.member_message_burst);
    set(&mut c.chatroom_message_rate.per_second, l.chatroom_message_rate);
    set(&mut c.chatroom_message_rate.burst, l.chatroom_message_burst);
}

fn set<T: Copy>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

fn merge_limits(flags: &LimitArgs, file: &LimitArgs) -> LimitArgs {
    LimitArgs {
        max_frame_bytes: flags.max_frame_bytes.or(file.max_frame_bytes),
        max_message_bytes: flags.max_message_bytes.or(file.max_message_bytes),
        max_recipients: flags.max_recipients.or(file.max_recipients),
        send_queue_frames: flags.send_queue_frames.or(file.send_queue_frames),
        send_queue_bytes: flags.send_queue_bytes.or(file.send_queue_bytes),
        send_queue_high_watermark: flags.send_queue_high_watermark.or(file.send_queue_high_watermark),
        rate_limit_per_second: flags.rate_limit_per_second.or(file.rate_limit_per_second),
        rate_limit_burst: flags.rate_limit_burst.or(file.rate_limit_burst),
        rate_limit_close_after: flags.rate_limit_close_after.or(file.rate_limit_close_after),
        history_ring_size: flags.history_ring_size.or(file.history_ring_size),
        room_idle_timeout_secs: flags.room_idle_timeout_secs.or(file.room_idle_timeout_secs),
        handshake_timeout_secs: flags.handshake_timeout_secs.or(file.handshake_timeout_secs),
        login_timeout_secs: flags.login_timeout_secs.or(file.login_timeout_secs),
        shards: flags.shards.or(file.shards),
        max_room_name_chars: flags.max_room_name_chars.or(file.max_room_name_chars),
        max_password_chars: flags.max_password_chars.or(file.max_password_chars),
        max_user_name_chars: flags.max_user_name_chars.or(file.max_user_name_chars),
        max_avatar_bytes: flags.max_avatar_bytes.or(file.max_avatar_bytes),
        max_property_key_bytes: flags.max_property_key_bytes.or(file.max_property_key_bytes),
        max_property_value_bytes: flags.max_property_value_bytes.or(file.max_property_value_bytes),
        max_properties: flags.max_properties.or(file.max_properties),
        ended_rooms_remembered: flags.ended_rooms_remembered.or(file.ended_rooms_remembered),
        shard_queue: flags.shard_queue.or(file.shard_queue),
        shard_batch: flags.shard_batch.or(file.shard_batch),
        writer_wake_batch: flags.writer_wake_batch.or(file.writer_wake_batch),
        write_pools: flags.write_pools.or(file.write_pools),
        commits_in_flight: flags.commits_in_flight.or(file.commits_in_flight),
        listen_backlog: flags.listen_backlog.or(file.listen_backlog),
        read_buffer_bytes: flags.read_buffer_bytes.or(file.read_buffer_bytes),
        shutdown_grace_secs: flags.shutdown_grace_secs.or(file.shutdown_grace_secs),
        retention_messages: flags.retention_messages.or(file.retention_messages),
        dedupe_window: flags.dedupe_window.or(file.dedupe_window),
        history_scan_limit: flags.history_scan_limit.or(file.history_scan_limit),
        reads_in_flight: flags.reads_in_flight.or(file.reads_in_flight),
        reconnect_grace_secs: flags.reconnect_grace_secs.or(file.reconnect_grace_secs),
        recall_window_secs: flags.recall_window_secs.or(file.recall_window_secs),
        retention_secs: flags.retention_secs.or(file.retention_secs),
        durability: flags.durability.or(file.durability),
        checkpoint_interval_ms: flags.checkpoint_interval_ms.or(file.checkpoint_interval_ms),
        checkpoint_journal_bytes: flags.checkpoint_journal_bytes.or(file.checkpoint_journal_bytes),
        join_member_page: flags.join_member_page.or(file.join_member_page),
        presence_per_member_max: flags.presence_per_member_max.or(file.presence_per_member_max),
        presence_digest_ms: flags.presence_digest_ms.or(file.presence_digest_ms),
        presence_digest_names: flags.presence_digest_names.or(file.presence_digest_names),
        presence_count_only_min: flags.presence_count_only_min.or(file.presence_count_only_min),
        presence_hysteresis_percent: flags.presence_hysteresis_percent.or(file.presence_hysteresis_percent),
        member_message_rate: flags.member_message_rate.or(file.member_message_rate),
        member_message_burst: flags.member_message_burst.or(file.member_message_burst),
        chatroom_message_rate: flags.chatroom_message_rate.or(file.chatroom_message_rate),
        chatroom_message_burst: flags.chatroom_message_burst.or(file.chatroom_message_burst),
    }
}

#[cfg(test)]
mod tests;
