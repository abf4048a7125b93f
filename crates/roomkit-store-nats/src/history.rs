//! History reads: the index picks the messages of a page (retention and the range applied),
//! then they are fetched by stream sequence, a chunk at a time, and filtered for the viewer.

use std::sync::atomic::Ordering;

use futures::future::join_all;
use roomkit_core::store::{CorruptMessage, HistoryPage, HistoryQuery, HistoryRange, Retention, StoreError};
use roomkit_protocol::{ChatMessage, HistoryOrder, RoomUuid};
use roomkit_store_redb::record::decode_message_record;

use crate::{
    err,
    view::{Doubt, Entry, RoomView},
    Inner,
};

/// Most messages fetched at once while a page is not full.
const FETCH_CHUNK: usize = 64;

/// Where a read stands: the last sequence number it went through.
type Cursor = Option<u64>;

/// The next `n` entries of the range after `cursor`, in the range's order, among those
/// retention keeps at `now`.
pub fn candidates(
    view: &RoomView,
    range: HistoryRange,
    retention: Retention,
    now: u64,
    cursor: Cursor,
    n: usize,
) -> Vec<Entry> {
    let entries = &view.entries;
    let kept = view.kept_from(retention, now);
    let after = |seq: u64| entries.partition_point(|e| e.seq <= seq);
    match range {
        HistoryRange::AfterSeq(after_seq) => {
            let from = after(after_seq.max(cursor.unwrap_or(0))).max(kept);
            entries.range(from..).take(n).copied().collect()
        }
        HistoryRange::Time { start_time, order: HistoryOrder::Asc } => {
            let from = start_time.unwrap_or(0);
            let start = entries.partition_point(|e| e.time < from).max(kept);
            let start = cursor.map_or(start, |c| start.max(after(c)));
            entries.range(start..).take(n).copied().collect()
        }
        HistoryRange::Time { start_time, order: HistoryOrder::Desc } => {
            let until = start_time.unwrap_or(u64::MAX);
            let end = entries.partition_point(|e| e.time <= until);
            let end = cursor.map_or(end, |c| end.min(entries.partition_point(|e| e.seq < c)));
            if end <= kept {
                return Vec::new();
            }
            entries.range(kept..end).rev().take(n).copied().collect()
        }
    }
}

/// What one fetched entry gave.
enum Fetched {
    /// The message.
    Message(ChatMessage),
    /// The stored bytes failed verification.
    Corrupt(String),
    /// Nothing is stored there any more.
    Gone,
}

impl Inner {
    pub(crate) async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.ensure_ready(room).await?;
        let retention = self.config.retention;
        let mut page = HistoryPage::default();
        let mut cursor: Cursor = None;
        let mut chunk_size = query.limit.clamp(1, FETCH_CHUNK);
        let mut reread = false;
        loop {
            let selected = self.with_view(room, |view| {
                let first_seq = view.first_seq(view.kept_from(retention, now));
                let chunk = candidates(view, query.range, retention, now, cursor, chunk_size);
                (first_seq, view.last_seq, chunk)
            });
            let Some((first_seq, last_seq, chunk)) = selected else {
                // A failed commit made the view stale meanwhile: read the room again, once.
                if cursor.is_none() && !reread {
                    reread = true;
                    self.ensure_ready(room).await?;
                    continue;
                }
                return Err(StoreError(format!("room {room} changed while it was read: try again")));
            };
            if cursor.is_none() {
                (page.first_seq, page.last_seq) = (first_seq, last_seq);
            }
            let Some(last) = chunk.last() else { return Ok(page) };
            cursor = Some(last.seq);
            let fetched = join_all(chunk.iter().map(|entry| self.fetch(room, *entry))).await;
            for (entry, fetched) in chunk.iter().zip(fetched) {
                let message = match fetched? {
                    Fetched::Message(message) => message,
                    Fetched::Corrupt(reason) => {
                        page.corrupt.push(CorruptMessage { seq: entry.seq, reason });
                        continue;
                    }
                    Fetched::Gone => match self.refetch(room, *entry).await? {
                        Some(message) => message,
                        None => continue,
                    },
                };
                if query.viewer.as_ref().is_none_or(|v| message.is_visible_to(v)) {
                    page.messages.push(message.into());
                    if page.messages.len() >= query.limit {
                        return Ok(page);
                    }
                }
            }
            chunk_size = FETCH_CHUNK;
        }
    }

    /// Fetches the message `entry` points at, checking that it is the one it should be.
    async fn fetch(&self, room: &RoomUuid, entry: Entry) -> Result<Fetched, StoreError> {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let stored = match self.stream.get_raw_message(entry.stream_seq).await {
            Ok(stored) => stored,
            Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Fetched::Gone)
            }
            Err(e) => return Err(err(&format!("reading room {room}'s message {}", entry.seq), e)),
        };
        if stored.subject.as_str() != self.names.subject(room) {
            return Ok(Fetched::Corrupt(format!(
                "stream sequence {} holds a message of {}",
                entry.stream_seq, stored.subject
            )));
        }
        Ok(match decode_message_record(&stored.payload) {
            Ok(m) if m.seq == entry.seq => Fetched::Message(m),
            Ok(m) => {
                Fetched::Corrupt(format!("stored under sequence number {} but numbered {}", entry.seq, m.seq))
            }
            Err(e) => Fetched::Corrupt(e.to_string()),
        })
    }

    /// A message found gone while a page was read: dropped by retention meanwhile (left
    /// out), replaced by its recalled form (fetched), or deleted by another store (the room is
    /// read again, and the read fails).
    async fn refetch(&self, room: &RoomUuid, entry: Entry) -> Result<Option<ChatMessage>, StoreError> {
        match self.with_view(room, |view| view.entry(entry.seq)) {
            Some(None) => Ok(None),
            Some(Some(now)) if now.stream_seq != entry.stream_seq => match self.fetch(room, now).await? {
                Fetched::Message(m) => Ok(Some(m)),
                Fetched::Corrupt(_) | Fetched::Gone => Ok(None),
            },
            _ => {
                self.mark_stale(room, Doubt::default());
                Err(StoreError(format!(
                    "room {room}'s message {} is gone from JetStream: another store changed the room; it is read again next time",
                    entry.seq
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(times: &[u64]) -> RoomView {
        let mut view = RoomView::default();
        for (i, &time) in times.iter().enumerate() {
            let seq = i as u64 + 1;
            view.stored(Entry { seq, stream_seq: seq + 100, time }, seq);
        }
        view
    }

    fn seqs(entries: Vec<Entry>) -> Vec<u64> {
        entries.into_iter().map(|e| e.seq).collect()
    }

    #[test]
    fn ranges_continue_from_the_cursor() {
        let v = view(&[10, 20, 30, 40, 50]);
        let none = Retention::default();
        let desc = |start_time| HistoryRange::Time { start_time, order: HistoryOrder::Desc };
        let asc = |start_time| HistoryRange::Time { start_time, order: HistoryOrder::Asc };
        assert_eq!(seqs(candidates(&v, desc(None), none, 0, None, 2)), [5, 4]);
        assert_eq!(seqs(candidates(&v, desc(None), none, 0, Some(4), 2)), [3, 2]);
        assert_eq!(seqs(candidates(&v, desc(Some(30)), none, 0, None, 10)), [3, 2, 1]);
        assert_eq!(seqs(candidates(&v, asc(Some(25)), none, 0, None, 10)), [3, 4, 5]);
        assert_eq!(seqs(candidates(&v, asc(Some(25)), none, 0, Some(3), 1)), [4]);
        assert_eq!(seqs(candidates(&v, HistoryRange::AfterSeq(1), none, 0, Some(2), 2)), [3, 4]);
        assert!(candidates(&v, HistoryRange::AfterSeq(5), none, 0, None, 2).is_empty());
    }

    #[test]
    fn retention_hides_what_it_drops() {
        let v = view(&[10, 20, 30, 40, 50]);
        let keep_two = Retention { max_messages: Some(2), max_age_ms: None };
        let desc = HistoryRange::Time { start_time: None, order: HistoryOrder::Desc };
        assert_eq!(seqs(candidates(&v, desc, keep_two, 0, None, 10)), [5, 4]);
        assert_eq!(seqs(candidates(&v, HistoryRange::AfterSeq(0), keep_two, 0, None, 10)), [4, 5]);
        let young = Retention { max_messages: None, max_age_ms: Some(25) };
        assert_eq!(seqs(candidates(&v, desc, young, 50, None, 10)), [5, 4, 3]);
        assert!(candidates(&v, desc, young, 1_000, None, 10).is_empty());
    }
}
