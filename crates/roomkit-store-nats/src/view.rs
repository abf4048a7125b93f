//! A room's view: what the store knows of a room's subject without reading it again. The
//! index maps each kept sequence number to the stream sequence and time of its newest form;
//! beside it, the room's newest sequence number, the subject's newest stored message (what
//! the next publish expects), and the stored messages no longer served, to delete.

use std::collections::{HashSet, VecDeque};

use roomkit_core::store::Retention;

/// One kept message: its sequence number, where its newest form is stored, and its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number in the chatroom.
    pub seq: u64,
    /// The stream sequence of its newest form.
    pub stream_seq: u64,
    /// Its time, in milliseconds since the Unix epoch.
    pub time: u64,
}

/// What the store knows of one room's subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomView {
    /// The newest form of every stored message, by sequence number.
    pub entries: VecDeque<Entry>,
    /// The room's newest sequence number; it outlives retention.
    pub last_seq: u64,
    /// The stream sequence of the subject's newest stored message (0: none): the next
    /// publish expects it. Retention never deletes that message, and its
    /// [`LAST_SEQ_HEADER`](crate::layout::LAST_SEQ_HEADER) keeps `last_seq`.
    pub last_stream_seq: u64,
    /// Whether the subject's newest stored message is served by no entry (a fence, or a
    /// message retention dropped): it becomes garbage once another message follows it.
    pub newest_unserved: bool,
    /// Stored messages no longer served, to delete: replaced forms, messages retention
    /// dropped, fences no longer the newest. Never holds `last_stream_seq`.
    pub garbage: Vec<u64>,
}

/// A room whose view is not to be trusted: it is read again from JetStream before use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doubt {
    /// Dedupe ids of publishes whose outcome is unknown (their acknowledgement never came):
    /// if they were stored, the read removes them, after storing a fence that a publish still
    /// under way cannot follow.
    pub ids: HashSet<String>,
    /// Stream sequences of messages of failed commits that could not be deleted.
    pub seqs: Vec<u64>,
}

impl Doubt {
    /// Adds `other`'s doubts to these.
    pub fn merge(&mut self, other: Doubt) {
        self.ids.extend(other.ids);
        self.seqs.extend(other.seqs);
    }
}

/// A room's place in the store's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The view matches the subject as of the store's last write or read.
    Ready(RoomView),
    /// The view must be read again first.
    Stale(Doubt),
}

/// One stored message as a scan of the subject sees it (headers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its chat message's sequence number; `None` for a fence or a message the store did not
    /// write.
    pub seq: Option<u64>,
    /// Its chat message's time.
    pub time: u64,
    /// The room's newest sequence number when it was stored.
    pub last_seq: Option<u64>,
    /// Its dedupe id.
    pub id: Option<String>,
    /// Whether it is a fence.
    pub fence: bool,
}

impl RoomView {
    /// The view a scan of the subject (in stream order) gives, leaving out what `doubt`
    /// names (messages of failed commits, by dedupe id or stream sequence). Returns the view
    /// and the stream sequences of the messages left out, to delete; the view's
    /// `last_stream_seq` is the subject's newest message, left out or not.
    pub fn from_scan(scan: Vec<Scanned>, doubt: &Doubt) -> (Self, Vec<u64>) {
        let newest_stored = scan.last().map_or(0, |m| m.stream_seq);
        let doomed = |m: &Scanned| {
            doubt.seqs.contains(&m.stream_seq) || m.id.as_ref().is_some_and(|id| doubt.ids.contains(id))
        };
        let (left_out, kept): (Vec<Scanned>, Vec<Scanned>) = scan.into_iter().partition(doomed);
        let mut view = RoomView::default();
        if let Some(newest) = kept.last().cloned() {
            for m in kept {
                match m.seq {
                    Some(seq) => {
                        view.put(Entry { seq, stream_seq: m.stream_seq, time: m.time });
                        view.last_seq = view.last_seq.max(seq);
                    }
                    None if m.fence && m.stream_seq != newest_stored => view.garbage.push(m.stream_seq),
                    None => {}
                }
            }
            view.newest_unserved = newest.fence && newest.stream_seq == newest_stored;
            view.last_seq = view.last_seq.max(newest.last_seq.unwrap_or(0));
        }
        view.last_stream_seq = newest_stored;
        (view, left_out.iter().map(|m| m.stream_seq).collect())
    }

    /// Index of the first entry that retention keeps at `now`. Messages are timed when
    /// accepted, in number order, so those too old are a prefix.
    pub fn kept_from(&self, retention: Retention, now: u64) -> usize {
        let len = self.entries.len();
        let by_count = retention
            .max_messages
            .map_or(0, |max| len.saturating_sub(usize::try_from(max).unwrap_or(usize::MAX)));
        let by_age = retention.max_age_ms.map_or(0, |age| {
            let cutoff = now.saturating_sub(age);
            self.entries.partition_point(|e| e.time < cutoff)
        });
        by_count.max(by_age)
    }

    /// The oldest kept sequence number when the kept entries start at `from`; with nothing
    /// kept, the next one (`last_seq + 1`), or 0 if the room never had a message.
    pub fn first_seq(&self, from: usize) -> u64 {
        self.entries.get(from).map_or(self.last_seq + u64::from(self.last_seq > 0), |e| e.seq)
    }

    /// The entry of `seq`, if kept.
    pub fn entry(&self, seq: u64) -> Option<Entry> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok().map(|i| self.entries[i])
    }

    /// Records a chat message stored as the subject's newest message, with the room's newest
    /// sequence number then.
    pub fn stored(&mut self, entry: Entry, last_seq: u64) {
        if entry.stream_seq > self.last_stream_seq {
            self.retire_unserved();
            self.last_stream_seq = entry.stream_seq;
        }
        self.put(entry);
        self.last_seq = self.last_seq.max(last_seq);
    }

    /// Records a fence stored as the subject's newest message.
    pub fn fenced(&mut self, stream_seq: u64) {
        self.retire_unserved();
        self.last_stream_seq = stream_seq;
        self.newest_unserved = true;
    }

    /// Drops from the index what retention no longer keeps at `now`; their messages become
    /// garbage, except the subject's newest (which keeps `last_seq`), until another follows it.
    pub fn enforce(&mut self, retention: Retention, now: u64) {
        let from = self.kept_from(retention, now);
        let newest = self.last_stream_seq;
        for dropped in self.entries.drain(..from) {
            if dropped.stream_seq == newest {
                self.newest_unserved = true;
            } else {
                self.garbage.push(dropped.stream_seq);
            }
        }
    }

    /// Puts `entry` in the index; a former form of its number becomes garbage.
    fn put(&mut self, entry: Entry) {
        match self.entries.binary_search_by_key(&entry.seq, |e| e.seq) {
            Ok(i) => {
                let old = std::mem::replace(&mut self.entries[i], entry);
                if old.stream_seq != entry.stream_seq && old.stream_seq != self.last_stream_seq {
                    self.garbage.push(old.stream_seq);
                }
            }
            Err(i) => self.entries.insert(i, entry),
        }
    }

    /// A newest message served by no entry becomes garbage when another follows it.
    fn retire_unserved(&mut self) {
        if std::mem::take(&mut self.newest_unserved) {
            self.garbage.push(self.last_stream_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, stream_seq: u64) -> Entry {
        Entry { seq, stream_seq, time: seq * 10 }
    }

    fn scanned(stream_seq: u64, seq: Option<u64>, id: &str) -> Scanned {
        Scanned {
            stream_seq,
            seq,
            time: seq.unwrap_or(0) * 10,
            last_seq: seq,
            id: Some(id.to_owned()),
            fence: seq.is_none(),
        }
    }

    #[test]
    fn a_newer_form_replaces_the_older() {
        let mut view = RoomView::default();
        for i in 1..=3 {
            view.stored(entry(i, 10 + i), i);
        }
        view.stored(entry(2, 20), 3);
        assert_eq!(view.entries, [entry(1, 11), entry(2, 20), entry(3, 13)]);
        assert_eq!((view.last_seq, view.last_stream_seq), (3, 20));
        assert_eq!(view.garbage, [12], "the older form is to delete");
    }

    #[test]
    fn retention_never_deletes_the_newest_stored_message() {
        let mut view = RoomView::default();
        for i in 1..=3 {
            view.stored(entry(i, i), i);
        }
        view.enforce(Retention { max_messages: None, max_age_ms: Some(1) }, 1_000);
        assert!(view.entries.is_empty());
        assert_eq!(view.garbage, [1, 2], "the newest message stays, keeping last_seq");
        assert_eq!((view.last_seq, view.first_seq(0)), (3, 4));
        view.stored(entry(4, 4), 4);
        assert_eq!(view.garbage, [1, 2, 3], "once another follows it, it goes too");
    }

    #[test]
    fn retention_by_count_and_age() {
        let mut view = RoomView::default();
        for i in 1..=5 {
            view.stored(entry(i, i), i);
        }
        assert_eq!(view.kept_from(Retention { max_messages: Some(3), max_age_ms: None }, 0), 2);
        assert_eq!(view.kept_from(Retention { max_messages: Some(3), max_age_ms: Some(15) }, 50), 3);
        assert_eq!(view.kept_from(Retention::default(), 1_000), 0);
    }

    #[test]
    fn a_scan_keeps_newest_forms_and_leaves_out_doubtful_messages() {
        let scan = vec![
            scanned(1, Some(1), "a"),
            scanned(2, Some(2), "b"),
            scanned(3, None, "fence"),
            scanned(4, Some(2), "b2"),
            scanned(5, Some(3), "ghost"),
        ];
        let doubt = Doubt { ids: ["ghost".to_owned()].into(), seqs: vec![1] };
        let (view, left_out) = RoomView::from_scan(scan, &doubt);
        assert_eq!(left_out, [1, 5]);
        assert_eq!(view.entries, [Entry { seq: 2, stream_seq: 4, time: 20 }]);
        assert_eq!(
            (view.last_seq, view.last_stream_seq, view.newest_unserved),
            (2, 5, false),
            "the newest stored message is left out, yet still the newest: a fence must follow it"
        );
        let mut garbage = view.garbage.clone();
        garbage.sort_unstable();
        assert_eq!(garbage, [2, 3], "the older form and the old fence");
    }

    #[test]
    fn a_fence_is_garbage_once_something_follows_it() {
        let mut view = RoomView::default();
        view.stored(entry(1, 1), 1);
        view.fenced(2);
        assert_eq!((view.last_stream_seq, view.newest_unserved), (2, true));
        view.stored(entry(2, 3), 2);
        assert_eq!(view.garbage, [2]);
        assert!(!view.newest_unserved);
    }
}
