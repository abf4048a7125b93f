//! Answering a history request: which stored messages a `join_chatroom` or
//! `fetch_chatroom_history` returns, read from the store a bounded number at a time.
//!
//! A [`HistoryRead`] is what [`Output::History`](crate::Output::History) hands the driver. It is
//! a small sans-IO state machine: [`next_query`](HistoryRead::next_query) says what to read
//! next (always every message of a range, never filtered by the store), the driver reads it
//! and feeds the page back with [`handle_page`](HistoryRead::handle_page), until
//! `next_query` says `None`; then [`into_response`](HistoryRead::into_response) is the answer.
//! [`run`](HistoryRead::run) is that loop against a [`MessageStore`].
//!
//! Three rules live here:
//! - **What the caller may see**: broadcasts, and directed messages to or from it.
//! - **A bounded cost**: at most `history_scan_limit` stored messages are read per request,
//!   whoever asks. A viewer who may see few of them gets the page found so far and a
//!   `next_cursor` to continue, instead of the server reading the whole chatroom.
//! - **A snapshot**: the answer covers the messages accepted before the request (its
//!   `last_seq` is the chatroom's newest then). Later messages reach the caller live, so a
//!   read that runs while the chatroom goes on (off the driver's critical path) answers the
//!   same as one that ran at once.

use roomkit_protocol::{
    ops::{FetchChatroomHistoryOutput, Response},
    HistoryOrder, RoomUuid, SharedMessage, UserUuid,
};

use crate::{
    store::{HistoryPage, HistoryQuery, HistoryRange, MessageStore},
    Error,
};

/// Fewest messages asked of the store at once while scanning.
const MIN_CHUNK: usize = 50;

/// The operation a [`HistoryRead`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryRequest {
    /// `join_chatroom`: the chatroom's newest sequence number and, if asked, its last messages.
    JoinChatroom,
    /// `fetch_chatroom_history`.
    FetchChatroomHistory,
}

/// Where a read continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Not started: the first read is by time (the store skips what is out of range).
    ByTime,
    /// The messages numbered after this one, oldest first.
    After(u64),
    /// The messages numbered before this one, newest first.
    Before(u64),
    /// Nothing more to read.
    Done,
}

/// The read in progress: what was asked of the store last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A read by time, of at most this many messages.
    ByTime(usize),
    /// The messages after a number, at most this many.
    After(usize),
    /// The messages numbered `low..before`, asked as those after `low - 1`.
    Window { low: u64, before: u64 },
    /// Only the chatroom's numbers.
    Numbers,
}

/// One history request being answered: what to read from the store, for whom, and the
/// answer it makes.
///
/// A sans-IO state machine: [`next_query`](Self::next_query) says what to read next (every
/// message of a range, never filtered by the store), the driver reads it and feeds the page
/// back with [`handle_page`](Self::handle_page) until `next_query` says `None`; then
/// [`into_response`](Self::into_response) is the answer. [`run`](Self::run) is that loop.
///
/// It keeps the messages the viewer may see (broadcasts, and directed messages to or from
/// it), reads at most `history_scan_limit` stored messages (a page it could not fill within
/// that ends with a `next_cursor`), and answers as of the request: its `last_seq` is the
/// chatroom's newest message then, and later messages reach the asker live, so a read that
/// runs late answers the same as one that ran at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead {
    asked_by: HistoryRequest,
    viewer: Option<UserUuid>,
    limit: usize,
    order: HistoryOrder,
    /// `start_time`: a lower bound of `time` oldest first, an upper bound newest first.
    start_time: Option<u64>,
    /// The chatroom's newest sequence number when the request was handled.
    newest: u64,
    max_scanned: usize,
    position: Position,
    asked: Option<Asked>,
    scanned: usize,
    found: Vec<SharedMessage>,
    first_seq: u64,
    last_seq: u64,
    /// Whether the store has been asked anything yet (its numbers are needed).
    numbers_read: bool,
    /// Where the scan bound stopped the read, with more to read.
    cut: Option<Position>,
}

/// Where a history request starts, from its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// By time, in `order`, bounded by `start_time`.
    Time { start_time: Option<u64>, order: HistoryOrder },
    /// After a sequence number, oldest first.
    AfterSeq(u64),
    /// The newest messages (a join's `history_count`).
    Newest,
}

impl HistoryRead {
    /// A request for at most `limit` messages (0: the numbers only) that `viewer` may see,
    /// from `start`, continuing at `cursor` if given, reading at most `max_scanned` stored
    /// messages, of a chatroom whose newest message is `newest`.
    pub(crate) fn new(
        asked_by: HistoryRequest,
        viewer: Option<UserUuid>,
        start: Start,
        limit: usize,
        cursor: Option<&str>,
        newest: u64,
        max_scanned: usize,
    ) -> Result<Self, Error> {
        let (order, start_time, position) = match start {
            Start::Time { start_time, order: HistoryOrder::Asc } => {
                (HistoryOrder::Asc, start_time, Position::ByTime)
            }
            Start::Time { start_time: Some(t), order: HistoryOrder::Desc } => {
                (HistoryOrder::Desc, Some(t), Position::ByTime)
            }
            Start::Time { start_time: None, order: HistoryOrder::Desc } | Start::Newest => {
                (HistoryOrder::Desc, None, Position::Before(newest.saturating_add(1)))
            }
            Start::AfterSeq(after) => (HistoryOrder::Asc, None, Position::After(after)),
        };
        let position = match cursor {
            None => position,
            Some(cursor) => parse_cursor(cursor, order)?,
        };
        Ok(Self {
            asked_by,
            viewer,
            limit,
            order,
            start_time,
            newest,
            max_scanned: max_scanned.max(1),
            position: if limit == 0 { Position::Done } else { position },
            asked: None,
            scanned: 0,
            found: Vec::new(),
            first_seq: 0,
            last_seq: 0,
            numbers_read: false,
            cut: None,
        })
    }

    /// The operation this read answers.
    pub fn asked_by(&self) -> HistoryRequest {
        self.asked_by
    }

    /// Whose view of the chatroom the answer is (`None`: every message).
    pub fn viewer(&self) -> Option<&UserUuid> {
        self.viewer.as_ref()
    }

    /// Most messages the answer holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The chatroom's newest sequence number when the request was handled: the answer covers
    /// the messages up to it.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// What to read from the store next, or `None` when the answer is complete. Every query
    /// asks for every message of its range (`viewer: None`): this read filters them, and
    /// counts them against the scan bound.
    #[must_use]
    pub fn next_query(&mut self) -> Option<HistoryQuery> {
        let bottom = self.first_seq.max(1);
        let exhausted = match self.position {
            Position::After(after) => after >= self.newest,
            Position::Before(before) => before <= bottom,
            Position::ByTime | Position::Done => false,
        };
        if exhausted {
            self.position = Position::Done;
        }
        let budget = self.max_scanned.saturating_sub(self.scanned);
        if self.position != Position::Done && budget == 0 {
            self.cut = Some(self.position);
            self.position = Position::Done;
        }
        // The first read asks for no more than the page needs (a caller who may see every
        // message costs one read of `limit`); later ones, for at least MIN_CHUNK.
        let need = self.limit.saturating_sub(self.found.len());
        let chunk = if self.scanned == 0 { need } else { need.max(MIN_CHUNK) }.min(budget).max(1);
        let (range, asked) = match self.position {
            Position::Done if self.numbers_read => return None,
            Position::Done => (HistoryRange::AfterSeq(u64::MAX), Asked::Numbers),
            Position::ByTime => {
                let range = HistoryRange::Time { start_time: self.start_time, order: self.order };
                (range, Asked::ByTime(chunk))
            }
            Position::After(after) => {
                let chunk = chunk.min(usize::try_from(self.newest - after).unwrap_or(usize::MAX));
                (HistoryRange::AfterSeq(after), Asked::After(chunk))
            }
            Position::Before(before) => {
                let low = before.saturating_sub(chunk as u64).max(bottom);
                (HistoryRange::AfterSeq(low - 1), Asked::Window { low, before })
            }
        };
        let limit = match asked {
            Asked::ByTime(n) | Asked::After(n) => n,
            Asked::Window { low, before } => (before - low) as usize,
            Asked::Numbers => 0,
        };
        self.asked = Some(asked);
        self.numbers_read = true;
        Some(HistoryQuery { viewer: None, range, limit })
    }

    /// The store's answer to the last [`next_query`](Self::next_query).
    pub fn handle_page(&mut self, page: HistoryPage) {
        self.first_seq = page.first_seq;
        self.last_seq = page.last_seq;
        let Some(asked) = self.asked.take() else { return };
        // A message the store found damaged was read too (and is left out; the driver logs
        // it): it counts against the bound, not against the page.
        self.scanned += page.corrupt.len();
        let returned = page.messages.len();
        match asked {
            Asked::Numbers => {}
            Asked::ByTime(n) | Asked::After(n) => {
                let ascending = self.order == HistoryOrder::Asc;
                let mut edge = None;
                for message in page.messages {
                    if message.seq > self.newest {
                        // Past the snapshot: later messages reach the caller live. Oldest
                        // first, nothing more is in the snapshot; newest first, the snapshot's
                        // messages come after them. Either way they are not counted against
                        // the scan bound: a page the caller may fully see is never cut.
                        if ascending {
                            self.position = Position::Done;
                            return;
                        }
                        edge = Some(self.newest.saturating_add(1));
                        continue;
                    }
                    self.scanned += 1;
                    edge = Some(message.seq);
                    if self.take(message) {
                        self.position = Position::Done;
                        return;
                    }
                }
                self.position = match edge {
                    _ if returned < n => Position::Done,
                    Some(seq) if ascending => Position::After(seq),
                    Some(seq) => Position::Before(seq),
                    None => Position::Done,
                };
            }
            Asked::Window { low, before } => {
                for message in page.messages.into_iter().rev() {
                    if message.seq >= before || message.seq > self.newest {
                        continue;
                    }
                    self.scanned += 1;
                    if self.take(message) {
                        self.position = Position::Done;
                        return;
                    }
                }
                self.position = Position::Before(low);
            }
        }
    }

    /// Keeps `message` if it is in the time range and the viewer may see it; true once the
    /// page is full.
    fn take(&mut self, message: SharedMessage) -> bool {
        let in_time = match (self.start_time, self.order) {
            (None, _) => true,
            (Some(from), HistoryOrder::Asc) => message.time >= from,
            (Some(until), HistoryOrder::Desc) => message.time <= until,
        };
        if in_time && self.viewer.as_ref().is_none_or(|v| message.is_visible_to(v)) {
            self.found.push(message);
        }
        self.found.len() >= self.limit
    }

    /// The answer, once [`next_query`](Self::next_query) has said `None`.
    pub fn into_response(self) -> Response {
        let last_seq = self.last_seq.min(self.newest);
        let first_seq = if last_seq == 0 { 0 } else { self.first_seq.min(last_seq + 1) };
        let next_cursor = self.cut.and_then(|at| match at {
            Position::After(seq) => Some(format!("a{seq}")),
            Position::Before(seq) => Some(format!("d{seq}")),
            Position::ByTime | Position::Done => None,
        });
        let out = FetchChatroomHistoryOutput { messages: self.found, first_seq, last_seq, next_cursor };
        match self.asked_by {
            HistoryRequest::JoinChatroom => Response::JoinChatroom(out),
            HistoryRequest::FetchChatroomHistory => Response::FetchChatroomHistory(out),
        }
    }

    /// Reads the answer from `store` (room `room`, at `now`) and returns it.
    pub async fn run(
        mut self,
        store: &dyn MessageStore,
        room: &RoomUuid,
        now: u64,
    ) -> Result<Response, Error> {
        while let Some(query) = self.next_query() {
            let page = store.history(room, &query, now).await.map_err(Error::HistoryNotRead)?;
            self.handle_page(page);
        }
        Ok(self.into_response())
    }
}

/// The position a `cursor` names: `a<seq>` continues oldest first after `seq`, `d<seq>` newest
/// first before it; its direction must be the request's.
fn parse_cursor(cursor: &str, order: HistoryOrder) -> Result<Position, Error> {
    let not_ours = || {
        Error::bad(
            "cursor",
            "not a cursor of this query: pass the previous answer's `next_cursor` with the same parameters",
        )
    };
    let (direction, digits) = cursor.split_at_checked(1).ok_or_else(not_ours)?;
    let seq: u64 = digits.parse().map_err(|_| not_ours())?;
    if seq.to_string() != digits {
        return Err(not_ours());
    }
    match (direction, order) {
        ("a", HistoryOrder::Asc) => Ok(Position::After(seq)),
        ("d", HistoryOrder::Desc) => Ok(Position::Before(seq)),
        _ => Err(not_ours()),
    }
}
