//! Opening a data directory: the file is created only where there is none; an existing file
//! must open cleanly — redb accepts it, its format is known (format 1 is converted), and every
//! room record verifies — or it is refused with an [`OpenError`], never replaced.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use roomkit_core::store::StoreError;

use crate::{migrate, record, CHATROOMS, CHAT_MESSAGES, FORMAT_VERSION, META, ROOM_RECORDS};

/// Why [`RedbStore::open`](crate::RedbStore::open) refused a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory or the file could not be reached (permissions, a missing disk): nothing
    /// is known to be wrong with the database itself.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process has the database open.
    #[error("{}: the database is in use by another process (another roomkit-server on this data directory?)", .0.display())]
    InUse(PathBuf),
    /// The file is not a roomkit database that opens cleanly: empty, truncated, overwritten,
    /// or with a record that fails its checksum.
    #[error("{} does not open cleanly: {reason}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer roomkit, in a format this build does not know.
    #[error("{} has format {found}; this roomkit-server reads format {FORMAT_VERSION}: run a newer one", path.display())]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// Its format.
        found: u64,
    },
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> Self {
        StoreError(e.to_string())
    }
}

/// What a panic carried, for a message.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs `f`, turning a panic inside redb (which a damaged file may cause) into an error.
pub(crate) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, OpenError>) -> Result<T, OpenError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(OpenError::Damaged {
            path: path.into(),
            reason: format!("redb failed reading it: {}", panic_text(&*panic)),
        })
    })
}

/// Sorts a redb failure met while opening: in use, unreachable, or damaged.
fn open_failure(path: &Path, e: impl Into<redb::Error>) -> OpenError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => OpenError::InUse(path.into()),
        redb::Error::Io(source)
            if !matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            OpenError::Io { path: path.into(), source }
        }
        other => OpenError::Damaged { path: path.into(), reason: other.to_string() },
    }
}

/// Opens the redb file at `path`, creating it only where there is no file at all.
pub(crate) fn open_database(path: &Path, check_pages: bool) -> Result<Database, OpenError> {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(check_pages);
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(OpenError::Damaged {
            path: path.into(),
            reason: "the file is empty (0 bytes): truncated or replaced".into(),
        }),
        Ok(_) => guarded(path, || builder.open(path).map_err(|e| open_failure(path, e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            builder.create(path).map_err(|e| open_failure(path, e))
        }
        Err(source) => Err(OpenError::Io { path: path.into(), source }),
    }
}

/// Brings an opened database to this build's format, or says why it cannot; then verifies
/// what a server reads at start (every room record).
pub(crate) fn prepare(db: &Database, path: &Path) -> Result<(), OpenError> {
    let fail = |e: redb::Error| open_failure(path, e);
    let damaged = |reason: String| OpenError::Damaged { path: path.into(), reason };
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| fail(e.into()))?
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    let format = if tables.iter().any(|t| t == "meta") {
        txn.open_table(META)
            .map_err(|e| fail(e.into()))?
            .get("format")
            .map_err(|e| fail(e.into()))?
            .map(|v| v.value())
    } else {
        None
    };
    match format {
        Some(FORMAT_VERSION) => {}
        Some(found) if found > FORMAT_VERSION => {
            return Err(OpenError::NewerFormat { path: path.into(), found })
        }
        Some(found) => return Err(damaged(format!("unknown format {found}"))),
        None if migrate::is_format_1(&tables) => migrate::from_format_1(&txn).map_err(damaged)?,
        None if !tables.is_empty() => {
            return Err(damaged(format!("not a roomkit database (tables: {})", tables.join(", "))))
        }
        None => {}
    }
    create_tables(&txn).map_err(fail)?;
    txn.commit().map_err(|e| fail(e.into()))?;
    let txn = db.begin_read().map_err(|e| fail(e.into()))?;
    let rooms = txn.open_table(ROOM_RECORDS).map_err(|e| fail(e.into()))?;
    for entry in rooms.iter().map_err(|e| fail(e.into()))? {
        let (key, value) = entry.map_err(|e| fail(e.into()))?;
        match record::decode_room_record(value.value()) {
            Ok(record) if record.info.room_uuid.as_str() == key.value() => {}
            Ok(record) => {
                return Err(damaged(format!(
                    "room {} holds the record of room {}",
                    key.value(),
                    record.info.room_uuid
                )))
            }
            Err(e) => return Err(damaged(format!("the record of room {}: {e}", key.value()))),
        }
    }
    Ok(())
}

/// Creates this format's tables (if missing) and marks the file with its version.
fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?.insert("format", FORMAT_VERSION)?;
    txn.open_table(ROOM_RECORDS)?;
    txn.open_table(CHATROOMS)?;
    txn.open_table(CHAT_MESSAGES)?;
    Ok(())
}
