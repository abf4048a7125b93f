//! The store the server runs with: opening it — a redb store that does not open cleanly stops
//! the start unless `--reset-store` moves it aside — and the `check` subcommand.

use std::sync::Arc;

use roomkit_core::store::{MemoryStore, MessageStore};
use roomkit_store_redb::{Durability, OpenError, RedbConfig, RedbStore};

use crate::config::{CheckArgs, DurabilityKind, Settings, StoreKind};

/// Opens the configured store. With `reset`, a redb store that does not open cleanly is moved
/// aside and an empty one started; a store in use or unreachable is never moved.
pub fn open(settings: &Settings, reset: bool) -> Result<Arc<dyn MessageStore>, String> {
    if settings.store == StoreKind::Memory {
        return Ok(MemoryStore::shared(settings.retention));
    }
    let durability = match settings.durability {
        DurabilityKind::Immediate => Durability::Immediate,
        DurabilityKind::Eventual => Durability::Eventual,
    };
    let config = RedbConfig {
        retention: settings.retention,
        durability,
        checkpoint_interval: settings.checkpoint_interval,
        checkpoint_journal_bytes: settings.checkpoint_journal_bytes,
    };
    let dir = &settings.data_dir;
    let store = match RedbStore::open(dir, config) {
        Ok(store) => {
            if reset {
                tracing::info!("--reset-store: the store opened cleanly; nothing was moved");
            }
            store
        }
        Err(OpenError::Damaged { path, reason }) if reset => {
            let aside = RedbStore::move_aside(dir)
                .map_err(|e| format!("--reset-store: moving {} aside: {e}", path.display()))?;
            tracing::warn!(
                damaged = %path.display(), moved_to = ?aside, %reason,
                "--reset-store: the store did not open cleanly; moved it aside, starting with an empty store"
            );
            RedbStore::open(dir, config).map_err(|e| e.to_string())?
        }
        Err(e) => {
            tracing::error!(error = %e, "the store did not open");
            let mut message = format!("the store did not open: {e}");
            if matches!(e, OpenError::Damaged { .. }) {
                message.push_str(&format!(
                    "\n  Nothing was changed. `roomkit-server check --data-dir {}` reports what is wrong; \
                     --reset-store moves the damaged file aside (renamed, kept) and starts with an empty store.",
                    dir.display()
                ));
            }
            return Err(message);
        }
    };
    tracing::info!(path = %store.path().display(), ?durability, "store opened");
    Ok(Arc::new(store))
}

/// `roomkit-server check`: prints what the data directory holds and what is wrong with it.
pub fn check(args: CheckArgs) -> Result<(), String> {
    let report = roomkit_store_redb::check(&args.data_dir);
    println!("{report}");
    if report.is_ok() {
        Ok(())
    } else {
        Err(format!("{} problem(s) in {}", report.problem_count, report.path.display()))
    }
}
