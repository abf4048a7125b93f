//! Verifying a data directory: every room record, every chatroom, every message (checksum,
//! decoding, the sequence number it is stored under, numbering within its chatroom's count and
//! newest number), then redb's own check of every page. `roomkit-server check` prints the
//! report.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::{
    guarded, open_database, record, verify, Chatroom, OpenError, CHATROOMS, CHAT_MESSAGES, FILE_NAME,
    FORMAT_VERSION, META, ROOM_RECORDS,
};

/// Problems listed one by one; past this many only their number grows.
const LISTED: usize = 100;

/// What [`check()`] found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The database file.
    pub path: PathBuf,
    /// Its format, if it could be read.
    pub format: Option<u64>,
    /// Room records verified.
    pub rooms: u64,
    /// Chatrooms (rooms that have had a message).
    pub chatrooms: u64,
    /// Stored messages read.
    pub messages: u64,
    /// Sequence numbers missing between stored messages of a chatroom: a send whose commit
    /// failed leaves one, so gaps alone are not a problem.
    pub gaps: u64,
    /// What is wrong: the first 100 problems.
    pub problems: Vec<String>,
    /// How many problems there are in all.
    pub problem_count: u64,
}

impl CheckReport {
    /// True if nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, what: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < LISTED {
            self.problems.push(what.into());
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database: {}", self.path.display())?;
        match self.format {
            Some(format) => writeln!(f, "format:   {format}")?,
            None => writeln!(f, "format:   unknown")?,
        }
        writeln!(f, "rooms:    {}", self.rooms)?;
        writeln!(
            f,
            "chatrooms: {}, messages: {}, numbering gaps: {}",
            self.chatrooms, self.messages, self.gaps
        )?;
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        if self.problem_count > self.problems.len() as u64 {
            writeln!(f, "... and {} more problems", self.problem_count - self.problems.len() as u64)?;
        }
        if self.is_ok() {
            write!(f, "result:   ok")
        } else {
            write!(f, "result:   {} problem(s)", self.problem_count)
        }
    }
}

/// Verifies the database in `data_dir` without changing what it holds (redb may complete the
/// recovery from an unclean shutdown, as a server start would). Fails only if it cannot look.
pub fn check(data_dir: impl AsRef<Path>) -> CheckReport {
    let path = data_dir.as_ref().join(FILE_NAME);
    let mut report = CheckReport { path: path.clone(), ..CheckReport::default() };
    if !path.exists() {
        report.problem("no database file");
        return report;
    }
    let walked = open_database(&path, false).and_then(|db| {
        guarded(&path, || {
            walk(&db, &mut report);
            Ok(())
        })
    });
    if let Err(e) = walked {
        report.problem(opening(e));
        return report;
    }
    // Then every page against the checksums redb keeps for it.
    if let Err(e) = open_database(&path, true) {
        report.problem(format!("redb's page check: {}", opening(e)));
    }
    report
}

fn opening(e: OpenError) -> String {
    match e {
        OpenError::Damaged { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Reads everything, recording what is wrong in `report`.
fn walk(db: &Database, report: &mut CheckReport) {
    if let Err(e) = try_walk(db, report) {
        report.problem(format!("reading stopped: {e}"));
    }
}

fn try_walk(db: &Database, report: &mut CheckReport) -> Result<(), redb::Error> {
    let txn = db.begin_read()?;
    let format = txn.open_table(META)?.get("format")?.map(|v| v.value());
    report.format = format;
    if format != Some(FORMAT_VERSION) {
        report.problem(format!("format {format:?}: this build verifies format {FORMAT_VERSION} only"));
        return Ok(());
    }
    for entry in txn.open_table(ROOM_RECORDS)?.iter()? {
        let (key, value) = entry?;
        report.rooms += 1;
        match record::decode_room_record(value.value()) {
            Ok(r) if r.info.room_uuid.as_str() == key.value() => {}
            Ok(r) => {
                report.problem(format!("room {}: holds the record of room {}", key.value(), r.info.room_uuid))
            }
            Err(e) => report.problem(format!("room {}: its record: {e}", key.value())),
        }
    }
    let mut chatrooms: HashMap<u64, (String, Chatroom, u64)> = HashMap::new();
    for entry in txn.open_table(CHATROOMS)?.iter()? {
        let (key, value) = entry?;
        let chat = Chatroom::from_row(value.value());
        report.chatrooms += 1;
        if let Some((other, ..)) = chatrooms.insert(chat.id, (key.value().to_string(), chat, 0)) {
            report.problem(format!("rooms {other} and {} share chatroom id {}", key.value(), chat.id));
        }
    }
    let messages = txn.open_table(CHAT_MESSAGES)?;
    let mut orphans: HashMap<u64, u64> = HashMap::new();
    let mut previous: Option<(u64, u64)> = None;
    for entry in messages.iter()? {
        let (key, value) = entry?;
        let (id, seq) = key.value();
        report.messages += 1;
        let Some((room, chat, stored)) = chatrooms.get_mut(&id) else {
            *orphans.entry(id).or_default() += 1;
            continue;
        };
        *stored += 1;
        if let Err(reason) = verify(seq, value.value()) {
            report.problem(format!("room {room} message {seq}: {reason}"));
        }
        if seq > chat.last_seq {
            report.problem(format!("room {room} message {seq}: above the newest number {}", chat.last_seq));
        }
        if let Some((_, prev_seq)) = previous.filter(|(prev_id, _)| *prev_id == id) {
            report.gaps += seq.saturating_sub(prev_seq + 1);
        }
        previous = Some((id, seq));
    }
    for (room, chat, stored) in chatrooms.values() {
        if *stored != chat.kept {
            report.problem(format!("room {room}: {stored} messages stored, {} counted", chat.kept));
        }
    }
    for (id, n) in orphans {
        report.problem(format!("{n} messages under chatroom id {id}, which no room has"));
    }
    Ok(())
}
