//! The conformance suites every transport and every store runs, as macros that expand to one
//! `#[test]` per case (as matrix-sdk's store integration tests do), so a failure names the case.
//!
//! ```ignore
//! async fn setup() -> (MyListener, MyConnector) {
//!     my_transport()
//! }
//! // One test per case, in a module named `transport_conformance`.
//! roomkit_core::transport_conformance_tests!(#[tokio::test] setup);
//!
//! fn open(retention: Retention) -> MyStore {
//!     MyStore::new(retention)
//! }
//! // One test per case, in a module named `store_conformance`.
//! roomkit_core::store_conformance_tests!(#[tokio::test] open);
//! ```
//!
//! The cases need no runtime of their own (only `futures`), so a transport may run them under
//! whichever executor it uses: the caller names the test attribute. Each case panics with what
//! was expected.

use futures::future::join;
use roomkit_protocol::Code;

use crate::transport::{CloseReason, Connection, Connector, Frame, Listener, TransportError};

/// Expands to `mod transport_conformance`, one test per case of the transport suite.
///
/// `$test` is the test attribute (e.g. `#[tokio::test]`); `$setup` names an async function
/// (seen from the calling module) that returns a fresh `(listener, connector)` pair; it is
/// called once per case.
#[macro_export]
macro_rules! transport_conformance_tests {
    (#[$test:meta] $setup:expr) => {
        $crate::transport_conformance_tests!(@cases #[$test] $setup;
            frames_arrive_whole_and_in_order,
            batches_arrive_in_order,
            batches_taken_whole_arrive_in_order,
            what_try_send_takes_and_send_all_the_rest_arrive_in_order,
            large_frames_arrive_whole,
            close_reason_reaches_the_peer,
            client_close_is_seen_by_the_server,
            dropped_client_is_seen_by_the_server,
            many_connections_are_independent,
            a_keep_alive_ping_is_answered,
        );
    };
    (@cases #[$test:meta] $setup:expr; $($case:ident,)*) => {
        /// The transport conformance suite, one test per case.
        mod transport_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$test]
                async fn $case() {
                    let (mut listener, connector) = ($setup)().await;
                    $crate::conformance::$case(&mut listener, &connector).await;
                }
            )*
        }
    };
}

async fn pair<L: Listener, C: Connector>(listener: &mut L, connector: &C) -> (Connection, Connection) {
    let (server, client) = join(listener.accept(), connector.connect()).await;
    (server.expect("accept"), client.expect("connect"))
}

fn frame(i: usize) -> Frame {
    Frame::from(format!("{{\"n\":{i}}}").as_str())
}

/// A keep-alive ping from the server is answered while the client reads: the server's next
/// sign of the client is the answer (`recv_or_alive` gives `None`), and the client never
/// sees the ping as a message.
pub async fn a_keep_alive_ping_is_answered<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let server_side = async {
        server.sink.send(&[Frame::ping()]).await.expect("send a ping");
        assert_eq!(server.stream.recv_or_alive().await.expect("the answer"), None);
        server.sink.send(&[frame(1)]).await.expect("server send");
        client_frame_arrives(&mut server).await;
    };
    let client_side = async {
        let got = client.stream.recv().await.expect("client recv");
        assert_eq!(got, frame(1).payload(), "the ping is no message");
        client.sink.send(&[frame(2)]).await.expect("client send");
    };
    join(server_side, client_side).await;

    async fn client_frame_arrives(server: &mut Connection) {
        let got = server.stream.recv_or_alive().await.expect("server recv");
        assert_eq!(got, Some(frame(2).payload()));
    }
}

/// Frames sent one by one arrive whole and in order, both ways.
pub async fn frames_arrive_whole_and_in_order<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let n = 500;
    let send = async {
        for i in 0..n {
            client.sink.send(&[frame(i)]).await.expect("client send");
        }
    };
    let recv = async {
        for i in 0..n {
            assert_eq!(
                server.stream.recv().await.expect("server recv"),
                frame(i).payload(),
                "client→server frame {i}"
            );
        }
    };
    join(send, recv).await;
    let send = async {
        for i in 0..n {
            server.sink.send(&[frame(i)]).await.expect("server send");
        }
    };
    let recv = async {
        for i in 0..n {
            assert_eq!(
                client.stream.recv().await.expect("client recv"),
                frame(i).payload(),
                "server→client frame {i}"
            );
        }
    };
    join(send, recv).await;
}

/// A batch of frames arrives frame by frame, in order; an empty batch is fine.
pub async fn batches_arrive_in_order<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let batch: Vec<Frame> = (0..64).map(frame).collect();
    let send = async {
        for _ in 0..10 {
            server.sink.send(&batch).await.expect("batch send");
        }
        server.sink.send(&[]).await.expect("an empty batch is fine");
    };
    let recv = async {
        for round in 0..10 {
            for (i, expected) in batch.iter().enumerate() {
                let got = client.stream.recv().await.expect("recv");
                assert_eq!(got, expected.payload(), "round {round} frame {i}");
            }
        }
    };
    join(send, recv).await;
}

/// Batches handed over with `send_all` (which empties them) and read with `recv_many` (any
/// number at a time) arrive whole and in order.
pub async fn batches_taken_whole_arrive_in_order<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let rounds = 10;
    let send = async {
        for round in 0..rounds {
            let mut batch: Vec<Frame> = (0..64).map(|i| frame(round * 64 + i)).collect();
            server.sink.send_all(&mut batch).await.expect("batch send");
            assert!(batch.is_empty(), "send_all takes the frames");
        }
    };
    let recv = async {
        let mut got = Vec::new();
        while got.len() < rounds * 64 {
            let max = 1 + got.len() % 7;
            let n = client.stream.recv_many(&mut got, max).await.expect("recv");
            assert!(n >= 1, "at least one frame per call");
        }
        for (i, payload) in got.iter().enumerate() {
            assert_eq!(*payload, frame(i).payload(), "frame {i}");
        }
    };
    join(send, recv).await;
}

/// Batches offered to `try_send` (which takes what the transport has room for, maybe none,
/// out of the batch) with the rest handed to `send_all`, as a server's writer does, arrive
/// whole and in order, including batches larger than a socket holds at once.
pub async fn what_try_send_takes_and_send_all_the_rest_arrive_in_order<L: Listener, C: Connector>(
    listener: &mut L,
    connector: &C,
) {
    let (mut server, mut client) = pair(listener, connector).await;
    let big = |i: usize| Frame::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60 << 10)).as_str());
    let rounds = 20;
    let expected = |round: usize| -> Vec<Frame> {
        match round % 4 {
            // Every fourth batch is larger than a socket's buffers (of 60 KiB frames, which
            // every transport's default limits take).
            3 => (0..256).map(|i| big(round * 1000 + i)).collect(),
            _ => (0..100).map(|i| frame(round * 1000 + i)).collect(),
        }
    };
    let send = async {
        for round in 0..rounds {
            let mut batch = expected(round);
            let len = batch.len();
            let taken = server.sink.try_send(&mut batch);
            assert_eq!(taken.frames + batch.len(), len, "what is taken leaves the batch");
            server.sink.send_all(&mut batch).await.expect("the rest");
        }
    };
    let recv = async {
        for round in 0..rounds {
            for (i, frame) in expected(round).iter().enumerate() {
                let got = client.stream.recv().await.expect("recv");
                assert!(got == frame.payload(), "round {round} frame {i}");
            }
        }
    };
    join(send, recv).await;
}

/// A 60 KiB frame arrives whole.
pub async fn large_frames_arrive_whole<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let big = Frame::from(format!("\"{}\"", "x".repeat(60 * 1024)).as_str());
    let (sent, got) = join(client.sink.send(std::slice::from_ref(&big)), server.stream.recv()).await;
    sent.expect("send large");
    assert_eq!(got.expect("recv large"), big.payload());
}

/// A server close sends what was queued, then the close reason; close is idempotent.
pub async fn close_reason_reaches_the_peer<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    let reason = CloseReason::new(Code::SLOW_CONSUMER, "send queue full");
    server.sink.send(&[frame(1)]).await.expect("send before close");
    server.sink.close(reason.clone()).await.expect("close");
    assert_eq!(client.stream.recv().await.expect("frame sent before close"), frame(1).payload());
    match client.stream.recv().await {
        Err(TransportError::Closed(Some(got))) => assert_eq!(got, reason),
        other => panic!("expected Closed({reason}), got {other:?}"),
    }
    assert!(matches!(client.stream.recv().await, Err(TransportError::Closed(_))), "closed stays closed");
    assert!(server.sink.close(reason).await.is_ok(), "close is idempotent");
}

/// A client close ends the server's stream.
pub async fn client_close_is_seen_by_the_server<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let (mut server, mut client) = pair(listener, connector).await;
    client.sink.close(CloseReason::new(Code::SUCCESS, "bye")).await.expect("client close");
    match server.stream.recv().await {
        Err(TransportError::Closed(_)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// A dropped client ends the server's stream.
pub async fn dropped_client_is_seen_by_the_server<L: Listener, C: Connector>(
    listener: &mut L,
    connector: &C,
) {
    let (mut server, client) = pair(listener, connector).await;
    drop(client);
    match server.stream.recv().await {
        Err(TransportError::Closed(_)) => {}
        other => panic!("expected Closed after the client dropped, got {other:?}"),
    }
}

/// Frames on one of many connections never reach another.
pub async fn many_connections_are_independent<L: Listener, C: Connector>(listener: &mut L, connector: &C) {
    let mut pairs = Vec::new();
    for _ in 0..32 {
        pairs.push(pair(listener, connector).await);
    }
    for (i, (server, _)) in pairs.iter_mut().enumerate() {
        server.sink.send(&[frame(i)]).await.expect("send");
    }
    for (i, (_, client)) in pairs.iter_mut().enumerate().rev() {
        assert_eq!(
            client.stream.recv().await.expect("recv"),
            frame(i).payload(),
            "connection {i} got another's frame"
        );
    }
}

/// Expands to `mod store_conformance`, one test per case of the store suite.
///
/// `$test` is the test attribute (e.g. `#[tokio::test]`); `$open` names a function (seen from
/// the calling module) that opens a fresh, empty store with the given
/// [`Retention`](crate::store::Retention); it is called once per case.
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$test:meta] $open:expr) => {
        $crate::store_conformance_tests!(@cases #[$test] $open;
            history_by_time_and_order,
            history_by_sequence,
            history_shows_only_what_the_viewer_may_see,
            rooms_are_kept_changed_and_deleted,
            retention_by_count,
            retention_by_age,
            retention_across_many_commits,
            a_replaced_message_counts_once,
            a_room_ended_and_created_again_starts_afresh,
            rooms_do_not_mix,
        );
    };
    (@cases #[$test:meta] $open:expr; $($case:ident,)*) => {
        /// The store conformance suite, one test per case.
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$test]
                async fn $case() {
                    $crate::conformance::store::$case($open).await;
                }
            )*
        }
    };
}

/// The store conformance suite: every [`MessageStore`](crate::store::MessageStore) runs it
/// through [`store_conformance_tests!`](crate::store_conformance_tests). Each case opens its
/// store with `open` and the retention it needs.
pub mod store {
    use std::sync::Arc;

    use roomkit_protocol::{
        ChatMessage, ChatroomType, HistoryOrder, MessageBody, RoomInfo, RoomUuid, SharedMessage, UserUuid,
    };

    use crate::store::{HistoryQuery, HistoryRange, MessageStore, Retention, RoomRecord, StoreOp};

    fn room(s: &str) -> RoomUuid {
        s.parse().expect("valid id")
    }

    fn user(s: &str) -> UserUuid {
        s.parse().expect("valid id")
    }

    /// A text message `seq` at `time` from `from`, to `to` (or everyone).
    pub fn message(seq: u64, time: u64, from: &str, to: Option<&[&str]>) -> SharedMessage {
        Arc::new(ChatMessage {
            message_uuid: format!("m{seq}").parse().expect("valid id"),
            seq,
            chatroom_type: ChatroomType::Common,
            from_user_uuid: user(from),
            from_nick: from.to_uppercase(),
            from_avatar: None,
            from_backend: false,
            to_user_uuid_list: to.map(|to| to.iter().map(|u| user(u)).collect()),
            time,
            recalled: false,
            priority: roomkit_protocol::Priority::Normal,
            persist: true,
            body: MessageBody::Text { text: format!("text {seq}") },
        })
    }

    /// A room record for `uuid`.
    pub fn record(uuid: &str) -> RoomRecord {
        RoomRecord {
            info: RoomInfo {
                room_uuid: room(uuid),
                room_name: uuid.to_uppercase(),
                creator: user("creator"),
                properties: [("k".to_string(), "v".to_string())].into(),
                locked: false,
                max_members: Some(10),
                chatroom_enabled: true,
                has_password: true,
                created_at: 1,
            },
            password: Some("pw".into()),
        }
    }

    async fn append(store: &impl MessageStore, now: u64, r: &str, messages: Vec<SharedMessage>) {
        let ops: Vec<StoreOp> =
            messages.into_iter().map(|message| StoreOp::Append { room: room(r), message }).collect();
        store.apply(now, &ops).await.expect("apply");
    }

    fn seqs(page: &crate::store::HistoryPage) -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    fn query(range: HistoryRange, limit: usize) -> HistoryQuery {
        HistoryQuery { viewer: None, range, limit }
    }

    /// History by time, newest or oldest first, limited.
    pub async fn history_by_time_and_order<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention::default());
        store.apply(0, &[StoreOp::PutRoom(record("r"))]).await.expect("apply");
        append(store, 100, "r", (1..=5).map(|i| message(i, i * 10, "a", None)).collect()).await;
        let desc =
            |start_time, limit| query(HistoryRange::Time { start_time, order: HistoryOrder::Desc }, limit);
        let asc =
            |start_time, limit| query(HistoryRange::Time { start_time, order: HistoryOrder::Asc }, limit);
        let page = store.history(&room("r"), &desc(None, 100), 100).await.expect("history");
        assert_eq!(seqs(&page), vec![5, 4, 3, 2, 1], "desc, newest first");
        assert_eq!((page.first_seq, page.last_seq), (1, 5));
        let page = store.history(&room("r"), &desc(Some(30), 2), 100).await.expect("history");
        assert_eq!(seqs(&page), vec![3, 2], "desc: at or before start_time, limited");
        let page = store.history(&room("r"), &asc(Some(20), 2), 100).await.expect("history");
        assert_eq!(seqs(&page), vec![2, 3], "asc: at or after start_time, limited");
        let page = store.history(&room("r"), &asc(None, 100), 100).await.expect("history");
        assert_eq!(seqs(&page), vec![1, 2, 3, 4, 5]);
        assert_eq!(page.messages[0].text(), Some("text 1"), "content survives");
        assert_eq!(page.messages[0].from_nick, "A");
        let empty = store.history(&room("nope"), &asc(None, 100), 100).await.expect("history");
        assert_eq!((seqs(&empty), empty.first_seq, empty.last_seq), (vec![], 0, 0), "unknown room: nothing");
    }

    /// History after a sequence number: oldest first, exclusive.
    pub async fn history_by_sequence<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention::default());
        append(store, 100, "r", (1..=10).map(|i| message(i, i, "a", None)).collect()).await;
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(4), 3), 100).await.expect("history");
        assert_eq!(seqs(&page), vec![5, 6, 7], "after_seq: oldest first, exclusive");
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(10), 3), 100).await.expect("history");
        assert!(page.messages.is_empty());
        assert_eq!(page.last_seq, 10);
    }

    /// A viewer sees public messages and directed ones it sent or received.
    pub async fn history_shows_only_what_the_viewer_may_see<S: MessageStore>(
        open: impl FnOnce(Retention) -> S,
    ) {
        let store = &open(Retention::default());
        append(
            store,
            100,
            "r",
            vec![
                message(1, 1, "a", None),
                message(2, 2, "a", Some(&["b"])),
                message(3, 3, "c", Some(&["a"])),
                message(4, 4, "c", Some(&["d"])),
            ],
        )
        .await;
        let mut q = query(HistoryRange::AfterSeq(0), 100);
        q.viewer = Some(user("a"));
        assert_eq!(seqs(&store.history(&room("r"), &q, 100).await.expect("history")), vec![1, 2, 3]);
        q.viewer = Some(user("b"));
        assert_eq!(seqs(&store.history(&room("r"), &q, 100).await.expect("history")), vec![1, 2]);
        q.viewer = Some(user("d"));
        q.limit = 1;
        q.range = HistoryRange::Time { start_time: None, order: HistoryOrder::Desc };
        assert_eq!(
            seqs(&store.history(&room("r"), &q, 100).await.expect("history")),
            vec![4],
            "limit counts visible ones"
        );
    }

    /// Room records are kept, replaced and deleted with their messages.
    pub async fn rooms_are_kept_changed_and_deleted<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention::default());
        store
            .apply(0, &[StoreOp::PutRoom(record("r1")), StoreOp::PutRoom(record("r2"))])
            .await
            .expect("apply");
        append(store, 10, "r1", vec![message(1, 1, "a", None), message(2, 2, "a", None)]).await;
        let mut changed = record("r1");
        changed.info.locked = true;
        store.apply(20, &[StoreOp::PutRoom(changed.clone())]).await.expect("apply");
        let mut rooms = store.rooms().await.expect("rooms");
        rooms.sort_by(|a, b| a.0.info.room_uuid.cmp(&b.0.info.room_uuid));
        assert_eq!(rooms, vec![(changed, 2), (record("r2"), 0)]);
        store.apply(30, &[StoreOp::DeleteRoom(room("r1"))]).await.expect("apply");
        let rooms = store.rooms().await.expect("rooms");
        assert_eq!(rooms, vec![(record("r2"), 0)]);
        let page =
            store.history(&room("r1"), &query(HistoryRange::AfterSeq(0), 100), 40).await.expect("history");
        assert!(page.messages.is_empty(), "a deleted room's messages are gone");
    }

    /// Retention by count keeps the newest messages.
    pub async fn retention_by_count<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention { max_messages: Some(3), max_age_ms: None });
        store.apply(0, &[StoreOp::PutRoom(record("r"))]).await.expect("apply");
        append(store, 10, "r", (1..=5).map(|i| message(i, i, "a", None)).collect()).await;
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 10).await.expect("history");
        assert_eq!(seqs(&page), vec![3, 4, 5]);
        assert_eq!((page.first_seq, page.last_seq), (3, 5));
        assert_eq!(store.rooms().await.expect("rooms")[0].1, 5);
    }

    /// Retention by age drops old messages but never forgets the last sequence number.
    pub async fn retention_by_age<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention { max_messages: None, max_age_ms: Some(1_000) });
        store.apply(0, &[StoreOp::PutRoom(record("r"))]).await.expect("apply");
        append(store, 1_500, "r", (1..=5).map(|i| message(i, i * 400, "a", None)).collect()).await;
        // At 1500 the oldest kept is 500: 800, 1200, 1600, 2000 stay.
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 1_500).await.expect("history");
        assert_eq!(seqs(&page), vec![2, 3, 4, 5]);
        // Much later, every message is too old, yet numbering is not forgotten.
        let page = store
            .history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 100_000)
            .await
            .expect("history");
        assert!(page.messages.is_empty());
        assert_eq!((page.first_seq, page.last_seq), (6, 5), "nothing kept: the next one would be first");
        assert_eq!(store.rooms().await.expect("rooms")[0].1, 5, "the last seq outlives its messages");
    }

    /// Retention by count holds commit after commit, one message at a time, and the oldest go
    /// first.
    pub async fn retention_across_many_commits<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention { max_messages: Some(10), max_age_ms: None });
        for i in 1..=50 {
            append(store, 100, "r", vec![message(i, i, "a", None)]).await;
            let page = store
                .history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 100)
                .await
                .expect("history");
            let kept: Vec<u64> = (i.saturating_sub(9).max(1)..=i).collect();
            assert_eq!(seqs(&page), kept, "after message {i}");
            assert_eq!((page.first_seq, page.last_seq), (kept[0], i));
        }
    }

    /// A message stored again under its sequence number (its recalled form) replaces it and
    /// does not count twice towards retention.
    pub async fn a_replaced_message_counts_once<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention { max_messages: Some(3), max_age_ms: None });
        append(store, 10, "r", (1..=3).map(|i| message(i, i, "a", None)).collect()).await;
        let mut recalled = (*message(2, 2, "a", None)).clone();
        recalled.recalled = true;
        recalled.body = MessageBody::Text { text: String::new() };
        append(store, 10, "r", vec![Arc::new(recalled.clone())]).await;
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 10).await.expect("history");
        assert_eq!(seqs(&page), vec![1, 2, 3], "still three messages: nothing dropped");
        assert!(page.messages[1].recalled, "the stored form is the new one");
        append(store, 10, "r", vec![message(4, 4, "a", None)]).await;
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 10).await.expect("history");
        assert_eq!(seqs(&page), vec![2, 3, 4]);
        assert_eq!(*page.messages[0], recalled);
    }

    /// A room that ended and is created again has no history and numbers from scratch, also
    /// when both happen in one commit.
    pub async fn a_room_ended_and_created_again_starts_afresh<S: MessageStore>(
        open: impl FnOnce(Retention) -> S,
    ) {
        let store = &open(Retention { max_messages: Some(5), max_age_ms: None });
        store.apply(0, &[StoreOp::PutRoom(record("r"))]).await.expect("apply");
        append(store, 10, "r", (1..=4).map(|i| message(i, i, "a", None)).collect()).await;
        let ops = [
            StoreOp::DeleteRoom(room("r")),
            StoreOp::PutRoom(record("r")),
            StoreOp::Append { room: room("r"), message: message(1, 20, "b", None) },
        ];
        store.apply(20, &ops).await.expect("apply");
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 20).await.expect("history");
        assert_eq!(seqs(&page), vec![1]);
        assert_eq!(page.messages[0].from_user_uuid, user("b"), "the new room's message only");
        assert_eq!((page.first_seq, page.last_seq), (1, 1));
        assert_eq!(store.rooms().await.expect("rooms"), vec![(record("r"), 1)]);
        append(store, 30, "r", (2..=8).map(|i| message(i, 20 + i, "b", None)).collect()).await;
        let page =
            store.history(&room("r"), &query(HistoryRange::AfterSeq(0), 100), 30).await.expect("history");
        assert_eq!(seqs(&page), vec![4, 5, 6, 7, 8], "retention counts the new room's messages only");
    }

    /// Rooms whose ids share a prefix do not mix.
    pub async fn rooms_do_not_mix<S: MessageStore>(open: impl FnOnce(Retention) -> S) {
        let store = &open(Retention::default());
        append(store, 10, "a", vec![message(1, 1, "x", None)]).await;
        append(store, 10, "a-", vec![message(1, 1, "y", None), message(2, 2, "y", None)]).await;
        let page =
            store.history(&room("a"), &query(HistoryRange::AfterSeq(0), 100), 10).await.expect("history");
        assert_eq!(seqs(&page), vec![1]);
        assert_eq!(page.messages[0].from_user_uuid, user("x"));
    }
}
