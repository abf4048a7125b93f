//! The roomkit server binary: WebSocket clients on one port, the admin HTTP API on another.
//!
//! `roomkit-server --dev` runs with development defaults; `roomkit-server token --account
//! alice` prints an access token; `roomkit-server check --data-dir DIR` verifies a store.
//! `roomkit-server --help` lists every setting.
//!
//! This package holds what only the binary needs (flags, environment and TOML settings,
//! logging, the redb store); the `roomkit-server` library stays free of them.

mod access;
mod cluster;
mod config;
mod store;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::{CommandFactory, FromArgMatches};
use config::{Cli, Command, Settings, TokenArgs, DEV_TOKEN_SECRET};
use roomkit_protocol::UserUuid;
use roomkit_server::{
    admin::{self, AdminState},
    clock, net,
    web::{self, WebConfig},
    Authenticator, DevAuthenticator, Server,
};
use roomkit_token::{JwtAuthenticator, TokenField, TokenRequest};
use roomkit_transport_ws::QueueListener;
use tokio::{net::TcpListener, sync::watch};

/// jemalloc rather than the system's allocator: a storm of joins leaves glibc's heap holding
/// what the storm's short-lived buffers freed, jemalloc's background thread gives it back
/// (decay times in `.cargo/config.toml`; docs/architecture.md, "Memory per member").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    warn_of_secret_flags(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(Command::Token(args)) => token(args),
        Some(Command::Check(args)) => store::check(args),
        Some(Command::Serve(args)) => serve(*args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomkit-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Secrets given as flags are readable by every user of the machine (`ps`, `/proc/PID/cmdline`):
/// say so at start, naming the safer ways.
fn warn_of_secret_flags(matches: &clap::ArgMatches) {
    let mut found = Vec::new();
    let levels = [Some(matches), matches.subcommand_matches("serve"), matches.subcommand_matches("token")];
    for m in levels.into_iter().flatten() {
        for (id, flag, env) in SECRET_FLAGS {
            let on_command_line = m.try_get_raw(id).ok().flatten().is_some()
                && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
            if on_command_line && !found.contains(&flag) {
                found.push(flag);
                eprintln!(
                    "roomkit-server: warning: {flag} on the command line is visible to every user of this \
                     machine (ps, /proc); set {env} or put it in the --config file instead"
                );
            }
        }
    }
}

/// The flags that carry secrets: (argument id, flag, environment variable).
const SECRET_FLAGS: [(&str, &str, &str); 2] = [
    ("token_secret", "--token-secret", "ROOMKIT_TOKEN_SECRET"),
    ("admin_key", "--admin-key", "ROOMKIT_ADMIN_KEY"),
];

fn token(args: TokenArgs) -> Result<(), String> {
    let file = config::read_file(args.config.as_ref())?;
    let secret = args
        .token_secret
        .or(file.token_secret)
        .or_else(|| (args.dev || file.dev).then(|| DEV_TOKEN_SECRET.to_string()))
        .ok_or("no token secret: pass --token-secret (or ROOMKIT_TOKEN_SECRET, or --config), or --dev")?;
    let request = TokenRequest {
        account: args.account,
        name: args.name,
        ttl: args.ttl,
        rooms: args.rooms,
        admin: args.admin,
        create_rooms: !args.no_create,
    };
    let issued = JwtAuthenticator::new(secret.as_bytes())
        .with_clock(clock::now_secs)
        .issue(request)
        .map_err(|e| format!("{}: {}", flag(e.field), e.reason))?;
    println!("{}", issued.token);
    Ok(())
}

/// The command-line flag of a token request's field.
fn flag(field: TokenField) -> &'static str {
    match field {
        TokenField::Account => "--account",
        TokenField::Rooms => "--room",
        TokenField::Ttl => "--ttl",
        TokenField::Name => "--name",
        _ => "a token flag",
    }
}

fn serve(args: config::ServeArgs) -> Result<(), String> {
    let reset_store = args.reset_store;
    let settings = Settings::resolve(args)?;
    init_logs(&settings.log)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(run(settings, reset_store))
}

fn init_logs(filter: &str) -> Result<(), String> {
    let targets: tracing_subscriber::filter::Targets =
        filter.parse().map_err(|e| format!("--log `{filter}`: {e}"))?;
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(targets)
        .init();
    Ok(())
}

async fn run(settings: Settings, reset_store: bool) -> Result<(), String> {
    let secret = settings.token_secret.clone().expect("resolve() requires a secret");
    let jwt = JwtAuthenticator::new(secret.as_bytes()).with_clock(clock::now_secs);
    let authenticator: Arc<dyn Authenticator> =
        if settings.dev { Arc::new(DevAuthenticator) } else { Arc::new(jwt.clone()) };
    let admin_key = match &settings.admin_key {
        Some(key) => key.clone(),
        None => {
            let key = uuid_like_key();
            tracing::warn!("no admin key configured: generated one for this run: {key}");
            key
        }
    };

    let client_tcp = bind(settings.listen, settings.listen_backlog)?;
    let admin_tcp = bind(settings.admin_listen, settings.listen_backlog)?;
    let client_addr = client_tcp.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_tcp.local_addr().map_err(|e| e.to_string())?;

    let ws_url = format!("ws://{client_addr}/v1");
    let (listener, sender) = QueueListener::new(ws_url.clone(), settings.ws.accept_backlog);
    // Install the recorder before anything is counted: /metrics then shows every family
    // from the start, at zero, and every connection.
    let _ = roomkit_server::metrics::prometheus();
    let server = match &settings.cluster {
        Some(cluster) => {
            let (cluster, store) = cluster::join(cluster, settings.retention).await?;
            Server::new(settings.server.clone(), authenticator).with_store(store).with_cluster(cluster)
        }
        None => {
            let store = store::open(&settings, reset_store)?;
            Server::new(settings.server.clone(), authenticator).with_store(store)
        }
    }
    .spawn(listener);

    let (stop_tx, stop_rx) = watch::channel(false);
    // The web page (and, in development mode only, its token endpoint) on the client port.
    let web_config = WebConfig { dev_tokens: settings.dev.then(|| jwt.clone()), ..WebConfig::default() };
    let client_router = net::client_router(settings.ws.clone(), sender).merge(web::router(web_config));
    let client_http =
        tokio::spawn(net::serve(client_tcp, client_router, settings.handshake_timeout, stop_rx.clone()));
    let admin_state = AdminState {
        rooms: server.rooms(),
        admin_key: admin_key.into(),
        tokens: Some(jwt),
        backend_user: UserUuid::backend(),
        limits: settings.admin_limits,
    };
    let admin_http =
        tokio::spawn(net::serve(admin_tcp, admin::router(admin_state), settings.handshake_timeout, stop_rx));

    println!("roomkit-server {} listening", env!("CARGO_PKG_VERSION"));
    println!("  web page:            http://{client_addr}/");
    println!("  clients (WebSocket): {ws_url}");
    println!("  admin API:           http://{admin_addr}/v1/rooms   (Authorization: Bearer <admin key>)");
    if let Some(cluster) = &settings.cluster {
        let c = &cluster.config;
        println!("  cluster:             node {} on {}", c.node_id, c.urls.join(","));
    }
    println!("  health / metrics:    http://{admin_addr}/healthz   http://{admin_addr}/metrics");
    if settings.dev {
        println!();
        println!("  *** DEVELOPMENT MODE: any account id logs in with any non-empty token. ***");
        println!("  *** Never expose this server to a network.                              ***");
        println!();
        println!("  Signed tokens:       roomkit-server token --dev --account alice --ttl 1h");
        println!("  Page sign-in tokens: GET http://{client_addr}/dev/token?account=alice   (1 h)");
    } else {
        println!("  Tokens:              roomkit-server token --account alice --ttl 1h   (same secret)");
    }
    println!("  Or over HTTP:        POST http://{admin_addr}/v1/tokens {{\"account\":\"alice\"}}");

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let grace = settings.server.shutdown_grace;
    server.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client_http.await;
        let _ = admin_http.await;
    })
    .await;
    tracing::info!(?grace, "stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A random admin key for a run without one configured.
fn uuid_like_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A listening socket on `addr` whose kernel accept queue holds `backlog` connections (the
/// usual default, 128, drops SYNs in a join storm: each retried a second later).
fn bind(addr: std::net::SocketAddr, backlog: u32) -> Result<TcpListener, String> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let listen = || {
        let socket = socket?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().map_err(|e| format!("binding {addr}: {e}"))
}
