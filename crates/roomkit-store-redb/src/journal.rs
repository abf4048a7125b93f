//! The journal: with [`Durability::Immediate`](crate::Durability::Immediate), each commit's
//! operations are appended to `roomkit.journal` and fsynced, and committed to the database
//! without waiting for the disk; a durable database commit (a checkpoint) now and then makes
//! the journal's records up to it redundant, and the journal is emptied.
//!
//! One sequential append and one `fdatasync` cost less than a durable database commit, which
//! writes and syncs every page the commit touched (each room's pages; measured: 0.8 ms for 20
//! messages over 8 rooms against 0.26 ms for one message in one room). After a crash the
//! database opens at its last durable commit, whose `journal_seq` in `meta` names the last
//! journal record it holds; opening the store applies the records after it, in order.
//!
//! A record: `RKJ1`, the payload's length (u32 LE), the payload's CRC-32C (u32 LE), the
//! payload: the record's number (u64), the commit's time (u64, for age retention), the count
//! of operations (u32), then each operation: `1` append (room, message record), `2` put room
//! (room record), `3` delete room (room); a room is its uuid (u16 length, bytes), a record
//! its bytes (u32 length, bytes) as the tables hold them. Reading stops at the first record
//! that is incomplete or fails its checksum: the tail of an append a crash cut, never
//! acknowledged.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
    sync::Arc,
};

use redb::ReadableTable;
use roomkit_core::store::{StoreError, StoreOp};
use roomkit_protocol::RoomUuid;

use crate::{
    err,
    record::{crc32c, decode_message_record, decode_room_record, encode_message_record, encode_room_record},
    META,
};

/// The journal file inside the data directory.
pub const JOURNAL_FILE_NAME: &str = "roomkit.journal";

const MAGIC: &[u8; 4] = b"RKJ1";

/// One commit as the journal holds it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) now: u64,
    pub(crate) ops: Vec<StoreOp>,
}

/// The open journal file.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    /// Bytes of whole records in the file.
    pub(crate) len: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the records it holds, up to
    /// the first that is cut or damaged (the file is cut there).
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Self, Vec<Entry>)> {
        let path = dir.join(JOURNAL_FILE_NAME);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // The file's name, if it was just created, must outlive a power loss too.
        File::open(dir)?.sync_all()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (entries, len) = read(&bytes);
        let mut journal = Self { file, len: bytes.len() as u64 };
        if len < journal.len {
            journal.rewind(len)?;
        }
        Ok((journal, entries))
    }

    /// Appends commit `seq` of `ops` at `now` and waits until it is on disk. On failure the
    /// caller must [`rewind`](Self::rewind) to the length before.
    pub(crate) fn append(&mut self, seq: u64, now: u64, ops: &[StoreOp]) -> std::io::Result<()> {
        let bytes = encode(seq, now, ops);
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the journal to `len` bytes (0 empties it), on disk.
    pub(crate) fn rewind(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        // Cut, if not yet on disk: the next record goes right after.
        self.len = len;
        self.file.sync_data()
    }
}

/// The journal and where it stands.
#[derive(Debug)]
pub(crate) struct Journaled {
    pub(crate) journal: Journal,
    /// The number of the next record (and of the commit holding it: `journal_seq`).
    pub(crate) next_seq: u64,
    pub(crate) last_checkpoint: std::time::Instant,
    /// The next commit is a checkpoint: emptying the journal after the last one failed.
    pub(crate) checkpoint_due: bool,
    /// A failed record could neither be cut off nor marked as held: no commit is taken until
    /// the store is opened again (the record's outcome is then unknown).
    pub(crate) broken: bool,
}

/// The `meta` key naming the last journal record the database holds.
pub(crate) const JOURNAL_SEQ: &str = "journal_seq";

impl crate::RedbStore {
    /// Applies the journal's records the database does not hold (those after its
    /// `journal_seq`), in one durable commit, and empties the journal. Refuses a journal whose
    /// records do not follow the database's (a gap: an older database file put back beside
    /// a newer journal), rather than drop them.
    pub(crate) fn replay(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut journaled = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(redb::Durability::Immediate).map_err(err)?;
        let held = txn.open_table(META).map_err(err)?.get(JOURNAL_SEQ).map_err(err)?.map_or(0, |v| v.value());
        let mut last = held;
        // The records after the database's, in order; a gap would mean a record is missing:
        // nothing after it is applied.
        for entry in entries.into_iter().skip_while(|e| e.seq <= held) {
            if entry.seq != last + 1 {
                let why = format!("its record {} does not follow the database's last, {last}", entry.seq);
                return Err(StoreError(why));
            }
            self.write_ops(&txn, entry.now, &entry.ops)?;
            last = entry.seq;
        }
        txn.open_table(META).map_err(err)?.insert(JOURNAL_SEQ, last).map_err(err)?;
        txn.commit().map_err(err)?;
        journaled.journal.rewind(0).map_err(err)?;
        journaled.next_seq = last + 1;
        Ok(())
    }

    /// Records durably that the database holds journal record `seq` (and those before it).
    pub(crate) fn mark_held(&self, seq: u64) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(redb::Durability::Immediate).map_err(err)?;
        txn.open_table(META).map_err(err)?.insert(JOURNAL_SEQ, seq).map_err(err)?;
        txn.commit().map_err(err)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8], wide: bool) {
    if wide {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// One record's bytes.
pub(crate) fn encode(seq: u64, now: u64, ops: &[StoreOp]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64 + 256 * ops.len());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&now.to_le_bytes());
    payload.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            StoreOp::Append { room, message } => {
                payload.push(1);
                put_bytes(&mut payload, room.as_str().as_bytes(), false);
                put_bytes(&mut payload, &encode_message_record(message), true);
            }
            StoreOp::PutRoom(record) => {
                payload.push(2);
                put_bytes(&mut payload, &encode_room_record(record), true);
            }
            StoreOp::DeleteRoom(room) => {
                payload.push(3);
                put_bytes(&mut payload, room.as_str().as_bytes(), false);
            }
        }
    }
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The whole records at the front of `bytes`, and how many bytes they take.
pub(crate) fn read(bytes: &[u8]) -> (Vec<Entry>, u64) {
    let mut entries = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 12) {
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 12..at + 12 + len) else { break };
        if &header[..4] != MAGIC || crc32c(payload) != crc {
            break;
        }
        let Some(entry) = decode(payload) else { break };
        entries.push(entry);
        at += 12 + len;
    }
    (entries, at as u64)
}

/// Reads fields off a payload; `None` past its end.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn bytes(&mut self, wide: bool) -> Option<&'a [u8]> {
        let len = if wide {
            self.u32()? as usize
        } else {
            usize::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
        };
        self.take(len)
    }

    fn room(&mut self) -> Option<RoomUuid> {
        std::str::from_utf8(self.bytes(false)?).ok()?.parse().ok()
    }
}

fn decode(payload: &[u8]) -> Option<Entry> {
    let mut f = Fields(payload);
    let (seq, now, count) = (f.u64()?, f.u64()?, f.u32()?);
    let mut ops = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let op = match f.take(1)?[0] {
            1 => {
                let room = f.room()?;
                let message = Arc::new(decode_message_record(f.bytes(true)?).ok()?);
                StoreOp::Append { room, message }
            }
            2 => StoreOp::PutRoom(decode_room_record(f.bytes(true)?).ok()?),
            3 => StoreOp::DeleteRoom(f.room()?),
            _ => return None,
        };
        ops.push(op);
    }
    Some(Entry { seq, now, ops })
}

#[cfg(test)]
mod tests {
    use roomkit_core::conformance::store::{message, record};

    use super::*;

    fn append(seq: u64) -> StoreOp {
        StoreOp::Append { room: "r".parse().expect("valid"), message: message(seq, seq, "u", None) }
    }

    fn ops_text(entries: &[Entry]) -> Vec<(u64, usize)> {
        entries.iter().map(|e| (e.seq, e.ops.len())).collect()
    }

    #[test]
    fn records_read_back_whole_and_reading_stops_at_a_cut_or_damaged_one() {
        let one = [append(1), StoreOp::PutRoom(record("r")), StoreOp::DeleteRoom("gone".parse().unwrap())];
        let mut bytes = encode(7, 1_000, &one);
        bytes.extend(encode(8, 2_000, &[append(2)]));
        let whole = bytes.len() as u64;
        let (entries, len) = read(&bytes);
        assert_eq!((ops_text(&entries), len), (vec![(7, 3), (8, 1)], whole));
        assert_eq!(entries[0].now, 1_000);
        match (&entries[0].ops[0], &entries[0].ops[1], &entries[0].ops[2]) {
            (StoreOp::Append { room, message }, StoreOp::PutRoom(r), StoreOp::DeleteRoom(gone)) => {
                assert_eq!((room.as_str(), message.seq, message.text()), ("r", 1, Some("text 1")));
                assert_eq!(r.info.room_uuid.as_str(), "r");
                assert_eq!(gone.as_str(), "gone");
            }
            other => panic!("{other:?}"),
        }
        // A third record cut short by a crash: the two before it stand.
        let mut cut = bytes.clone();
        cut.extend(&encode(9, 3_000, &[append(3)])[..20]);
        assert_eq!(ops_text(&read(&cut).0), [(7, 3), (8, 1)]);
        assert_eq!(read(&cut).1, whole);
        // A flipped byte in the second: only the first stands.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(ops_text(&read(&damaged).0), [(7, 3)]);
    }

    #[test]
    fn opening_cuts_the_file_after_its_last_whole_record_and_appends_after_it() {
        let dir = std::env::temp_dir().join(format!("roomkit-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = encode(1, 10, &[append(1)]);
        bytes.extend(b"RKJ1 torn");
        std::fs::write(dir.join(JOURNAL_FILE_NAME), &bytes).unwrap();
        let (mut journal, entries) = Journal::open(&dir).unwrap();
        assert_eq!(ops_text(&entries), [(1, 1)]);
        journal.append(2, 20, &[append(2)]).unwrap();
        drop(journal);
        let (journal, entries) = Journal::open(&dir).unwrap();
        assert_eq!(ops_text(&entries), [(1, 1), (2, 1)], "the torn tail is gone, the new record after");
        assert_eq!(journal.len, std::fs::metadata(dir.join(JOURNAL_FILE_NAME)).unwrap().len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records that do not follow the database's last (an older database file put back
    /// beside a newer journal) are refused, naming the journal, not dropped.
    #[test]
    fn a_journal_that_does_not_follow_the_database_is_refused() {
        let dir = std::env::temp_dir().join(format!("roomkit-journal-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        drop(crate::RedbStore::open(&dir, crate::RedbConfig::default()).unwrap());
        std::fs::write(dir.join(JOURNAL_FILE_NAME), encode(5, 10, &[append(1)])).unwrap();
        match crate::RedbStore::open(&dir, crate::RedbConfig::default()) {
            Err(crate::OpenError::Damaged { path, reason }) => {
                assert!(path.ends_with(JOURNAL_FILE_NAME), "{path:?}");
                assert!(reason.contains("record 5 does not follow"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(std::fs::metadata(dir.join(JOURNAL_FILE_NAME)).unwrap().len() > 0, "nothing dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
