//! Access settings: who may connect, how much one account or address may hold, how long a
//! silent peer is kept, what the admin port reads, and whether members name themselves.
//! Flags and `ROOMKIT_*` variables like every other setting; in the file, the `[access]`
//! table.

use clap::Args;
use roomkit_server::ServerConfig;
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
}

impl AccessArgs {
    /// Flags (and environment) over the file.
    pub fn merge(flags: &AccessArgs, file: &AccessArgs) -> AccessArgs {
        AccessArgs { pin_display_names: flags.pin_display_names.or(file.pin_display_names) }
    }

    /// Sets what these settings say in the server's configuration.
    pub fn apply(&self, server: &mut ServerConfig) {
        if let Some(pin) = self.pin_display_names {
            server.core.pin_display_names = pin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file = AccessArgs { pin_display_names: Some(true) };
        let mut server = ServerConfig::default();
        AccessArgs::merge(&AccessArgs::default(), &file).apply(&mut server);
        assert!(server.core.pin_display_names);
        AccessArgs::merge(&AccessArgs { pin_display_names: Some(false) }, &file).apply(&mut server);
        assert!(!server.core.pin_display_names);
    }
}
