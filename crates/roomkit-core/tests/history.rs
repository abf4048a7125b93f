//! History reads: what a page holds, for whom, how much of the store one request may read
//! (`history_scan_limit`), the cursor that continues a page cut short, and the snapshot a
//! read answers for, however late it runs.

mod support;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use futures::executor::block_on;
use roomkit_core::{
    store::{
        HistoryPage, HistoryQuery, MemoryStore, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
    },
    CoreConfig, MessageRate, Output,
};
use roomkit_protocol::{
    ops::{FetchChatroomHistory, FetchChatroomHistoryOutput, Request, Response},
    Code, HistoryOrder, RoomUuid,
};
use support::*;

/// A [`MemoryStore`] that counts the messages its history reads return.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    read: AtomicUsize,
}

#[async_trait]
impl MessageStore for Counting {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.inner.apply(now, ops).await
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        let page = self.inner.history(room, query, now).await?;
        self.read.fetch_add(page.messages.len(), Ordering::Relaxed);
        Ok(page)
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        self.inner.rooms().await
    }
}

const SCAN: usize = 100;

/// Alice, Bob and Carol in the chatroom of room "r", with a store that counts what is read,
/// `history_scan_limit` at its smallest, and no message rates. Alice then sends: "first" to
/// everyone (seq 1), 250 messages to Carol only (seq 2 to 251), "last" to everyone (seq 252).
fn busy_chatroom() -> (Harness, Arc<Counting>, [User; 3]) {
    let mut config = CoreConfig::default();
    config.history_scan_limit = SCAN;
    config.member_message_rate = MessageRate::UNLIMITED;
    config.chatroom_message_rate = MessageRate::UNLIMITED;
    let store = Arc::new(Counting { inner: MemoryStore::new(Retention::default()), ..Default::default() });
    let mut h = Harness::with_store(config, Arc::clone(&store) as Arc<dyn MessageStore>);
    let (a, b, c) = (User::new("alice", 1), User::new("bob", 2), User::new("carol", 3));
    h.setup(&a, "r", &[&a, &b, &c], &[&a, &b, &c]);
    h.ok(&a, text("r", "first"));
    for i in 0..250 {
        h.ok(&a, direct("r", &["carol"], &format!("for carol {i}")));
    }
    h.ok(&a, text("r", "last"));
    store.read.store(0, Ordering::Relaxed);
    (h, store, [a, b, c])
}

fn page(h: &mut Harness, who: &User, fetch: FetchChatroomHistory) -> FetchChatroomHistoryOutput {
    match h.ok(who, fetch).ok() {
        Response::FetchChatroomHistory(page) => page.clone(),
        other => panic!("{other:?}"),
    }
}

fn newest_first(cursor: Option<String>) -> FetchChatroomHistory {
    FetchChatroomHistory {
        room_uuid: room("r"),
        start_time: None,
        limit: Some(10),
        order: HistoryOrder::Desc,
        after_seq: None,
        cursor,
    }
}

/// Bob may see 2 of 252 messages. Each request reads at most `history_scan_limit` of them
/// and answers what it found with a cursor; following the cursors finds both, and the last
/// page has none.
#[test]
fn a_viewer_who_may_see_few_messages_pages_through_them_by_cursor_at_a_bounded_cost() {
    let (mut h, store, [_, b, c]) = busy_chatroom();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut requests = 0;
    loop {
        requests += 1;
        let p = page(&mut h, &b, newest_first(cursor));
        assert!(store.read.swap(0, Ordering::Relaxed) <= SCAN, "one request reads at most {SCAN}");
        assert_eq!((p.first_seq, p.last_seq), (1, 252));
        seen.extend(texts(&p.messages));
        cursor = p.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["last", "first"]);
    assert_eq!(requests, 3, "252 messages, 100 at a time");

    // Carol sees them all: her page is full at once, with no cursor.
    let p = page(&mut h, &c, newest_first(None));
    assert_eq!(p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (243..=252).rev().collect::<Vec<_>>());
    assert_eq!(p.next_cursor, None);
}

/// Oldest first, by sequence number (a catch-up): the same bound, the same cursors.
#[test]
fn a_catch_up_by_sequence_number_continues_by_cursor() {
    let (mut h, store, [_, b, _]) = busy_chatroom();
    let mut fetch =
        FetchChatroomHistory { after_seq: Some(0), order: HistoryOrder::Asc, ..newest_first(None) };
    let mut seen = Vec::new();
    let mut cursors = Vec::new();
    loop {
        let p = page(&mut h, &b, fetch.clone());
        assert!(store.read.swap(0, Ordering::Relaxed) <= SCAN);
        seen.extend(texts(&p.messages));
        let Some(next) = p.next_cursor else { break };
        cursors.push(next.clone());
        fetch.cursor = Some(next);
    }
    assert_eq!(seen, ["first", "last"]);
    assert_eq!(cursors, ["a100", "a200"]);
}

/// A cursor is the server's: one of the other direction, or made up, is refused by name.
#[test]
fn a_cursor_the_server_did_not_hand_out_is_refused() {
    let (mut h, _, [_, b, _]) = busy_chatroom();
    for bad in ["a100", "d", "x5", "d07", "d-1", ""] {
        let e = h.fails(&b, newest_first(Some(bad.into())), Code::BAD_REQUEST);
        assert!(e.to_string().contains("cursor"), "{bad}: {e}");
    }
}

/// The answer covers the messages accepted before the request, however late the read runs:
/// what came after reaches the asker live, so the page neither holds it nor counts it in
/// `last_seq`.
#[test]
fn a_read_that_runs_late_answers_as_of_its_request() {
    let (mut h, _, [a, b, _]) = busy_chatroom();
    h.reg.handle_request(h.now, b.conn, &b.id, 900, Request::FetchChatroomHistory(newest_first(None)));
    let read = match std::iter::from_fn(|| h.reg.poll_output()).collect::<Vec<_>>().pop() {
        Some(Output::History { read, .. }) => read,
        other => panic!("{other:?}"),
    };
    h.ok(&a, text("r", "later"));
    match block_on(read.run(&*h.store, &room("r"), h.now)) {
        Ok(Response::FetchChatroomHistory(p)) => {
            assert_eq!(texts(&p.messages), ["last"]);
            assert_eq!(p.last_seq, 252, "not 253: that one is delivered live");
        }
        other => panic!("{other:?}"),
    }
}

/// Newest first from a `start_time`, read after more than `history_scan_limit` messages came
/// in: those are past the snapshot and not counted, so Carol, who may see every message,
/// gets a full page and no cursor.
#[test]
fn messages_after_the_snapshot_do_not_cut_a_newest_first_page_by_time() {
    let (mut h, _, [a, _, c]) = busy_chatroom();
    let fetch = FetchChatroomHistory { start_time: Some(h.now + 3_600_000), ..newest_first(None) };
    h.reg.handle_request(h.now, c.conn, &c.id, 900, Request::FetchChatroomHistory(fetch));
    let read = match std::iter::from_fn(|| h.reg.poll_output()).collect::<Vec<_>>().pop() {
        Some(Output::History { read, .. }) => read,
        other => panic!("{other:?}"),
    };
    for i in 0..SCAN + 20 {
        h.ok(&a, text("r", &format!("later {i}")));
    }
    match block_on(read.run(&*h.store, &room("r"), h.now)) {
        Ok(Response::FetchChatroomHistory(p)) => {
            let seqs = p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
            assert_eq!(seqs, (243..=252).rev().collect::<Vec<_>>());
            assert_eq!((p.last_seq, p.next_cursor), (252, None));
        }
        other => panic!("{other:?}"),
    }
}
