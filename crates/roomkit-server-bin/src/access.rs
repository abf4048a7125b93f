//! Access settings: who may connect, how much one account or address may hold, how long a
//! silent peer is kept, what the admin port reads, and whether members name themselves.
//! Flags and `ROOMKIT_*` variables like every other setting; in the file, the `[access]`
//! table.

use std::time::Duration;

use clap::Args;
use roomkit_server::{admin::AdminLimits, ServerConfig};
use roomkit_transport_ws::WsConfig;
use serde::Deserialize;

/// Every access setting, as flags / environment / `[access]` file keys.
#[derive(Debug, Args, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AccessArgs {
    /// A member's display name is its token's `name`; the `user_name` a join asks for is
    /// ignored [default: false: members name themselves, and clients show the account id
    /// beside the name].
    #[arg(long, env = "ROOMKIT_PIN_DISPLAY_NAMES", num_args = 0..=1, default_missing_value = "true")]
    pub pin_display_names: Option<bool>,
    /// Origins (`https://app.example`, comma-separated) whose web pages may open WebSocket
    /// connections; others are refused with 403. The server's own page and non-browser
    /// clients always may [default: every origin].
    #[arg(long, env = "ROOMKIT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Live rooms one account may have created; more is TOO_MANY_ROOMS; 0 for no cap
    /// [default: 100].
    #[arg(long, env = "ROOMKIT_MAX_ROOMS_PER_ACCOUNT")]
    pub max_rooms_per_account: Option<usize>,
    /// Live rooms in total; more is SERVER_BUSY; 0 for no cap [default: 100000].
    #[arg(long, env = "ROOMKIT_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Open client connections in total; more are closed with SERVER_BUSY; 0 for no cap
    /// [default: 100000].
    #[arg(long, env = "ROOMKIT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open client connections from one IP address, logged in or not; more are closed with
    /// TOO_MANY_CONNECTIONS; 0 for no cap (behind a proxy, every client has its address)
    /// [default: 1000].
    #[arg(long, env = "ROOMKIT_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Connections logged in as one account at once; another login is TOO_MANY_CONNECTIONS;
    /// 0 for no cap [default: 16].
    #[arg(long, env = "ROOMKIT_MAX_CONNECTIONS_PER_ACCOUNT")]
    pub max_connections_per_account: Option<usize>,
    /// Seconds between keep-alive sweeps: a connection quiet for half of this is sent a
    /// WebSocket ping; 0 turns keep-alive off [default: 30].
    #[arg(long, env = "ROOMKIT_PING_INTERVAL_SECS")]
    pub ping_interval_secs: Option<u64>,
    /// Seconds without anything from a client (no frame, no pong) after which its connection
    /// is closed with KEEPALIVE_TIMEOUT; at least the ping interval [default: 75].
    #[arg(long, env = "ROOMKIT_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Largest admin API request body, bytes; larger is 413 [default: 262144].
    #[arg(long, env = "ROOMKIT_ADMIN_MAX_BODY_BYTES")]
    pub admin_max_body_bytes: Option<usize>,
    /// Seconds an admin API request's body may take to arrive; slower is 408 [default: 10].
    #[arg(long, env = "ROOMKIT_ADMIN_BODY_TIMEOUT_SECS")]
    pub admin_body_timeout_secs: Option<u64>,
}

/// Where the access settings go.
pub struct AccessTargets<'a> {
    pub server: &'a mut ServerConfig,
    pub ws: &'a mut WsConfig,
    pub admin: &'a mut AdminLimits,
}

impl AccessArgs {
    /// Flags (and environment) over the file.
    pub fn merge(flags: &AccessArgs, file: &AccessArgs) -> AccessArgs {
        AccessArgs {
            pin_display_names: flags.pin_display_names.or(file.pin_display_names),
            allowed_origins: flags.allowed_origins.clone().or_else(|| file.allowed_origins.clone()),
            max_rooms_per_account: flags.max_rooms_per_account.or(file.max_rooms_per_account),
            max_rooms: flags.max_rooms.or(file.max_rooms),
            max_connections: flags.max_connections.or(file.max_connections),
            max_connections_per_address: flags
                .max_connections_per_address
                .or(file.max_connections_per_address),
            max_connections_per_account: flags
                .max_connections_per_account
                .or(file.max_connections_per_account),
            ping_interval_secs: flags.ping_interval_secs.or(file.ping_interval_secs),
            idle_timeout_secs: flags.idle_timeout_secs.or(file.idle_timeout_secs),
            admin_max_body_bytes: flags.admin_max_body_bytes.or(file.admin_max_body_bytes),
            admin_body_timeout_secs: flags.admin_body_timeout_secs.or(file.admin_body_timeout_secs),
        }
    }

    /// Sets what these settings say in the server's, the WebSocket front's and the admin
    /// API's configuration; refuses an idle timeout shorter than the ping interval, naming
    /// the settings.
    pub fn apply(&self, to: AccessTargets<'_>) -> Result<(), String> {
        let AccessTargets { server, ws, admin } = to;
        if let Some(pin) = self.pin_display_names {
            server.core.pin_display_names = pin;
        }
        if let Some(origins) = &self.allowed_origins {
            ws.allowed_origins =
                origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        }
        set(&mut server.core.max_rooms_per_account, self.max_rooms_per_account);
        set(&mut server.core.max_rooms, self.max_rooms);
        set(&mut server.max_connections, self.max_connections);
        set(&mut server.max_connections_per_address, self.max_connections_per_address);
        set(&mut server.max_connections_per_account, self.max_connections_per_account);
        if let Some(bytes) = self.admin_max_body_bytes {
            admin.max_body_bytes = bytes;
        }
        if let Some(secs) = self.admin_body_timeout_secs {
            admin.body_timeout = Duration::from_secs(secs.max(1));
        }
        set(&mut server.ping_interval, self.ping_interval_secs.map(Duration::from_secs));
        set(&mut server.idle_timeout, self.idle_timeout_secs.map(Duration::from_secs));
        if !server.ping_interval.is_zero() && server.idle_timeout < server.ping_interval {
            return Err(format!(
                "idle_timeout_secs ({}) must be at least ping_interval_secs ({}): a live client must be pinged before it is judged",
                server.idle_timeout.as_secs(),
                server.ping_interval.as_secs()
            ));
        }
        Ok(())
    }
}

fn set<T: Copy>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `args` to fresh configurations.
    fn applied(args: &AccessArgs) -> (ServerConfig, WsConfig, AdminLimits) {
        let (mut server, mut ws, mut admin) =
            (ServerConfig::default(), WsConfig::default(), AdminLimits::default());
        args.apply(AccessTargets { server: &mut server, ws: &mut ws, admin: &mut admin })
            .expect("valid settings");
        (server, ws, admin)
    }

    #[test]
    fn flags_override_the_file() {
        let file = AccessArgs {
            pin_display_names: Some(true),
            allowed_origins: Some(vec!["https://a.example".into()]),
            admin_max_body_bytes: Some(1000),
            ..AccessArgs::default()
        };
        let (server, ws, admin) = applied(&AccessArgs::merge(&AccessArgs::default(), &file));
        assert!(server.core.pin_display_names);
        assert_eq!(ws.allowed_origins, ["https://a.example"]);
        assert_eq!(admin.max_body_bytes, 1000);
        let flags = AccessArgs {
            pin_display_names: Some(false),
            allowed_origins: Some(vec![" https://b.example".into(), String::new()]),
            admin_body_timeout_secs: Some(3),
            ..AccessArgs::default()
        };
        let (server, ws, admin) = applied(&AccessArgs::merge(&flags, &file));
        assert!(!server.core.pin_display_names);
        assert_eq!(ws.allowed_origins, ["https://b.example"]);
        assert_eq!((admin.max_body_bytes, admin.body_timeout), (1000, Duration::from_secs(3)));
    }

    #[test]
    fn the_caps_are_settings() {
        let file =
            AccessArgs { max_rooms: Some(10), max_connections_per_account: Some(2), ..AccessArgs::default() };
        let flags = AccessArgs {
            max_rooms_per_account: Some(3),
            max_connections: Some(50),
            max_connections_per_address: Some(0),
            max_connections_per_account: Some(4),
            ..AccessArgs::default()
        };
        let (server, _, _) = applied(&AccessArgs::merge(&flags, &file));
        assert_eq!((server.core.max_rooms_per_account, server.core.max_rooms), (3, 10));
        assert_eq!(
            (server.max_connections, server.max_connections_per_address, server.max_connections_per_account),
            (50, 0, 4)
        );
    }

    #[test]
    fn keep_alive_is_a_setting_and_the_timeout_may_not_be_shorter_than_the_interval() {
        let args =
            AccessArgs { ping_interval_secs: Some(10), idle_timeout_secs: Some(25), ..AccessArgs::default() };
        let (server, _, _) = applied(&args);
        assert_eq!(
            (server.ping_interval, server.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(25))
        );
        let off =
            AccessArgs { ping_interval_secs: Some(0), idle_timeout_secs: Some(1), ..AccessArgs::default() };
        assert!(applied(&off).0.ping_interval.is_zero());
        let bad = AccessArgs { idle_timeout_secs: Some(5), ..AccessArgs::default() };
        let (mut server, mut ws, mut admin) =
            (ServerConfig::default(), WsConfig::default(), AdminLimits::default());
        let e = bad.apply(AccessTargets { server: &mut server, ws: &mut ws, admin: &mut admin }).unwrap_err();
        assert!(e.contains("idle_timeout_secs") && e.contains("ping_interval_secs"), "{e}");
    }

    #[test]
    fn unset_settings_keep_the_defaults() {
        let (server, ws, admin) = applied(&AccessArgs::default());
        assert!(!server.core.pin_display_names && ws.allowed_origins.is_empty());
        assert_eq!(admin, AdminLimits::default());
    }
}
