//! Access settings: who may connect, how much one account or address may hold, how long a
//! silent peer is kept, what the admin port reads, and whether members name themselves.
//! Flags and `ROOMKIT_*` variables like every other setting; in the file, the `[access]`
//! table.

use clap::Args;
use roomkit_server::ServerConfig;
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
}

impl AccessArgs {
    /// Flags (and environment) over the file.
    pub fn merge(flags: &AccessArgs, file: &AccessArgs) -> AccessArgs {
        AccessArgs {
            pin_display_names: flags.pin_display_names.or(file.pin_display_names),
            allowed_origins: flags.allowed_origins.clone().or_else(|| file.allowed_origins.clone()),
        }
    }

    /// Sets what these settings say in the server's and the WebSocket front's configuration.
    pub fn apply(&self, server: &mut ServerConfig, ws: &mut WsConfig) {
        if let Some(pin) = self.pin_display_names {
            server.core.pin_display_names = pin;
        }
        if let Some(origins) = &self.allowed_origins {
            ws.allowed_origins =
                origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file = AccessArgs {
            pin_display_names: Some(true),
            allowed_origins: Some(vec!["https://a.example".into()]),
            ..AccessArgs::default()
        };
        let (mut server, mut ws) = (ServerConfig::default(), WsConfig::default());
        AccessArgs::merge(&AccessArgs::default(), &file).apply(&mut server, &mut ws);
        assert!(server.core.pin_display_names);
        assert_eq!(ws.allowed_origins, ["https://a.example"]);
        let flags = AccessArgs {
            pin_display_names: Some(false),
            allowed_origins: Some(vec![" https://b.example".into(), String::new()]),
            ..AccessArgs::default()
        };
        AccessArgs::merge(&flags, &file).apply(&mut server, &mut ws);
        assert!(!server.core.pin_display_names);
        assert_eq!(ws.allowed_origins, ["https://b.example"]);
    }
}
