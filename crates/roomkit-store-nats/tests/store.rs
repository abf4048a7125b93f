//! What only the JetStream store must do: keep everything across a restart of nats-server
//! and a reopen, store a retried publish once, refuse a stale writer, fail clearly when NATS
//! is missing or unfit, never claim to have stored what it did not, and read a page without
//! reading the chatroom.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{all, appends, config, connect, room, seqs};
use roomkit_core::{
    conformance::store::{message, record},
    store::{HistoryQuery, HistoryRange, MessageStore, Retention, StoreOp},
};
use roomkit_protocol::{HistoryOrder, MessageBody};
use roomkit_store_nats::{
    testing::{NatsCluster, NatsServer},
    NatsStore, NatsStoreConfig, NatsStoreError,
};

/// How many messages the chat stream holds on `subject`.
async fn stored_on(url: &str, subject: &str) -> u64 {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("ROOMKIT_CHAT").await.expect("the chat stream");
    let info = stream.info_with_subjects(subject).await.expect("stream info");
    let counts: std::collections::HashMap<String, usize> =
        futures::TryStreamExt::try_collect(info).await.expect("subjects");
    counts.get(subject).copied().unwrap_or(0) as u64
}

fn recalled(seq: u64, time: u64) -> roomkit_protocol::SharedMessage {
    let mut m = (*message(seq, time, "a", None)).clone();
    m.recalled = true;
    m.body = MessageBody::Text { text: String::new() };
    Arc::new(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart_of_nats_server() {
    let mut server = NatsServer::start();
    {
        let store = connect(config(vec![server.url()], Retention::default())).await;
        let mut ops = vec![StoreOp::PutRoom(record("r"))];
        ops.extend(appends("r", (1..=3).map(|i| message(i, i, "a", None))));
        store.apply(10, &ops).await.unwrap();
        store.apply(10, &appends("r", [recalled(2, 2)])).await.unwrap();
    }
    server.kill();
    server.restart();
    let store = connect(config(vec![server.url()], Retention::default())).await;
    assert_eq!(store.rooms().await.unwrap(), vec![(record("r"), 3)]);
    let page = all(&store, "r", 10).await;
    assert_eq!(page.messages, vec![message(1, 1, "a", None), recalled(2, 2), message(3, 3, "a", None)]);
}

/// A reopened store numbers on from the newest sequence number, also when the newest stored
/// message is an older number's recalled form, and when retention dropped every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_continues_after_a_reopen() {
    let server = NatsServer::start();
    let retention = Retention { max_messages: None, max_age_ms: Some(1_000) };
    {
        let store = connect(config(vec![server.url()], retention)).await;
        let mut ops = vec![StoreOp::PutRoom(record("r"))];
        ops.extend(appends("r", (1..=5).map(|i| message(i, i * 100, "a", None))));
        store.apply(500, &ops).await.unwrap();
        store.apply(500, &appends("r", [recalled(3, 300)])).await.unwrap();
    }
    let store = connect(config(vec![server.url()], retention)).await;
    assert_eq!(store.rooms().await.unwrap(), vec![(record("r"), 5)], "the recall is not the newest number");
    drop(store);
    {
        let store = connect(config(vec![server.url()], retention)).await;
        store.apply(10_000, &appends("r", [message(6, 10_000, "a", None)])).await.unwrap();
        assert_eq!(stored_on(&server.url(), "roomkit.chat.r").await, 1, "retention deleted 1 to 5");
    }
    let store = connect(config(vec![server.url()], retention)).await;
    assert_eq!(store.rooms().await.unwrap(), vec![(record("r"), 6)]);
    let page = all(&store, "r", 100_000).await;
    assert_eq!((seqs(&page), page.first_seq, page.last_seq), (vec![], 7, 6), "every message too old");
    store.apply(100_000, &appends("r", [message(7, 100_000, "a", None)])).await.unwrap();
    let page = all(&store, "r", 100_000).await;
    assert_eq!((seqs(&page), page.first_seq, page.last_seq), (vec![7], 7, 7));
}

/// A publish whose acknowledgement was lost is sent again, and the message is stored once:
/// the second send carries the same dedupe id and fence, and when JetStream refuses it (the
/// first one moved the subject on) the store finds its own message, by that id, as the
/// subject's newest. The commit succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_sent_again_after_a_lost_acknowledgement_is_stored_once() {
    let server = NatsServer::start();
    let store = connect(config(vec![server.url()], Retention::default())).await;
    store.lose_next_acks(1);
    store.apply(10, &appends("r", [message(1, 1, "a", None)])).await.expect("stored despite the lost ack");
    store.lose_next_acks(1);
    store.apply(10, &appends("r", [message(2, 2, "a", None), message(3, 3, "a", None)])).await.unwrap();
    assert_eq!(stored_on(&server.url(), "roomkit.chat.r").await, 3, "each message once");
    let reopened = connect(config(vec![server.url()], Retention::default())).await;
    assert_eq!(seqs(&all(&reopened, "r", 10).await), vec![1, 2, 3]);
}

/// Once another store has written a room, a store that still writes it from its older view
/// (an owner that lost the room) is refused, and stores nothing of its commit, in that room
/// or any other; it reads the room again before its next use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_refused_and_its_commit_is_undone() {
    let server = NatsServer::start();
    let url = || vec![server.url()];
    let old_owner = connect(config(url(), Retention::default())).await;
    let mut ops = vec![StoreOp::PutRoom(record("r"))];
    ops.extend(appends("r", [message(1, 1, "a", None), message(2, 2, "a", None)]));
    old_owner.apply(10, &ops).await.unwrap();

    let new_owner = connect(config(url(), Retention::default())).await;
    assert_eq!(seqs(&all(&new_owner, "r", 10).await), vec![1, 2], "the new owner reads the room");
    new_owner.apply(20, &appends("r", [message(3, 3, "new", None)])).await.unwrap();

    let mut stale = appends("r", [message(3, 3, "old", None), message(4, 4, "old", None)]);
    stale.extend(appends("other", [message(1, 1, "old", None)]));
    let refused = old_owner.apply(30, &stale).await.expect_err("the stale writer is refused");
    assert!(refused.0.contains("another store wrote the room"), "{refused}");

    let reader = connect(config(url(), Retention::default())).await;
    let page = all(&reader, "r", 40).await;
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    assert_eq!(page.messages[2].from_user_uuid.as_str(), "new", "the new owner's message stands");
    assert!(all(&reader, "other", 40).await.messages.is_empty(), "nothing of the refused commit stays");
    assert!(
        stored_on(&server.url(), "roomkit.chat.other").await <= 1,
        "at most the fence stored so that the undone message was not the newest when deleted"
    );
    let page = all(&old_owner, "r", 40).await;
    assert_eq!(page.messages[2].from_user_uuid.as_str(), "new", "the old owner read the room again");
}

/// A server that takes the connection but never speaks, and a port where nothing listens:
/// `connect` fails with `Unreachable` within `connect_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_connect_within_the_bound() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let bound = Duration::from_millis(500);
    for url in [format!("nats://{}", silent.local_addr().unwrap()), format!("nats://{closed}")] {
        let started = Instant::now();
        let config =
            NatsStoreConfig { connect_timeout: bound, ..config(vec![url.clone()], Retention::default()) };
        let error = NatsStore::connect(config).await.expect_err("nothing to connect to");
        let took = started.elapsed();
        assert!(matches!(error, NatsStoreError::Unreachable { .. }), "{url}: {error:?}");
        assert!(error.to_string().contains(&url), "the error names the URL: {error}");
        assert!(took < bound + Duration::from_secs(2), "{url}: gave up after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_refused_clearly() {
    let server = NatsServer::start_without_jetstream();
    let error =
        NatsStore::connect(config(vec![server.url()], Retention::default())).await.expect_err("no JetStream");
    assert!(matches!(error, NatsStoreError::JetStreamDisabled { .. }), "{error:?}");
    assert!(error.to_string().contains("-js"), "the error says how to enable it: {error}");
}

/// A store with three replicas started beside a cluster of which two servers of three are up
/// (as when roomkit and a new NATS cluster start together): the streams cannot be placed yet,
/// and `connect` asks again, within `connect_timeout`, until the third server joins; a cluster
/// that does not form in time is reported as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_forming_cluster_within_the_bound() {
    let mut cluster = NatsCluster::start_some(3, 2);
    let urls = cluster.urls()[..2].to_vec();
    let config = |timeout| NatsStoreConfig {
        replicas: 3,
        connect_timeout: timeout,
        ..config(urls.clone(), Retention::default())
    };
    let started = Instant::now();
    let error =
        NatsStore::connect(config(Duration::from_secs(2))).await.expect_err("two servers, three replicas");
    let took = started.elapsed();
    assert!(matches!(error, NatsStoreError::JetStream(_)), "{error:?}");
    assert!(error.to_string().contains("did not form within"), "the error says why: {error}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "gave up after {took:?}");

    let connecting = tokio::spawn(NatsStore::connect(config(Duration::from_secs(60))));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!connecting.is_finished(), "three replicas do not fit on two servers: connect waits");
    tokio::task::block_in_place(|| cluster.restart(2));
    let store = connecting.await.unwrap().expect("connects once the third server is in");
    store.apply(10, &[StoreOp::PutRoom(record("r"))]).await.expect("a commit on three replicas");
    assert_eq!(store.rooms().await.expect("rooms"), vec![(record("r"), 0)]);
}

/// A stream of the same name that would lose messages (memory storage, an age limit) is
/// not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_with_other_settings_is_refused() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ROOMKIT_CHAT".into(),
        subjects: vec!["roomkit.chat.*".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        max_age: Duration::from_secs(60),
        ..Default::default()
    })
    .await
    .unwrap();
    let error =
        NatsStore::connect(config(vec![server.url()], Retention::default())).await.expect_err("conflict");
    let NatsStoreError::Conflict { name, reason } = &error else { panic!("{error:?}") };
    assert_eq!(name, "ROOMKIT_CHAT");
    assert!(reason.contains("storage") && reason.contains("limits"), "{reason}");
}

/// With nats-server gone, a commit fails (it is not acknowledged as stored) and a read fails
/// rather than answer from what the store knew; once the server is back, commits succeed
/// again and the history holds each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_fails_while_nats_is_down_and_succeeds_once_it_is_back() {
    let mut server = NatsServer::start();
    let config = NatsStoreConfig {
        request_timeout: Duration::from_millis(500),
        ..config(vec![server.url()], Retention::default())
    };
    let store = connect(config).await;
    let mut ops = vec![StoreOp::PutRoom(record("r"))];
    ops.extend(appends("r", [message(1, 1, "a", None)]));
    store.apply(10, &ops).await.unwrap();

    server.kill();
    let two = appends("r", [message(2, 2, "a", None)]);
    let error = store.apply(20, &two).await.expect_err("nothing can be stored");
    assert!(error.0.contains("roomkit.chat.r"), "{error}");
    let query = HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit: 10 };
    assert!(store.history(&room("r"), &query, 20).await.is_err(), "no answer from a stale view");

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.apply(30, &two).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after the restart: {e}"),
        }
    }
    assert_eq!(seqs(&all(&store, "r", 30).await), vec![1, 2]);
    let reopened = connect(self::config(vec![server.url()], Retention::default())).await;
    assert_eq!(seqs(&all(&reopened, "r", 30).await), vec![1, 2], "each message once");
    assert_eq!(stored_on(&server.url(), "roomkit.chat.r").await, 2);
}

/// The first read of a room goes through its subject once (headers only); every read after
/// fetches the messages of its page, not the chatroom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_fetches_its_page_not_the_chatroom() {
    let server = NatsServer::start();
    let writer = connect(config(vec![server.url()], Retention::default())).await;
    for chunk in (1..=300u64).collect::<Vec<_>>().chunks(100) {
        writer.apply(10, &appends("r", chunk.iter().map(|&i| message(i, i * 10, "a", None)))).await.unwrap();
    }
    let store = connect(config(vec![server.url()], Retention::default())).await;
    let query = |range, limit| HistoryQuery { viewer: None, range, limit };
    let cases = [
        (
            query(HistoryRange::Time { start_time: None, order: HistoryOrder::Desc }, 10),
            (291..=300).rev().collect::<Vec<_>>(),
        ),
        (query(HistoryRange::AfterSeq(100), 5), (101..=105).collect()),
        (
            query(HistoryRange::Time { start_time: Some(1_505), order: HistoryOrder::Asc }, 3),
            vec![151, 152, 153],
        ),
        (
            query(HistoryRange::Time { start_time: Some(55), order: HistoryOrder::Desc }, 50),
            (1..=5).rev().collect(),
        ),
    ];
    for (query, expected) in cases {
        let before = store.messages_fetched();
        let page = store.history(&room("r"), &query, 10).await.unwrap();
        assert_eq!(seqs(&page), expected, "{query:?}");
        assert_eq!((page.first_seq, page.last_seq), (1, 300));
        assert_eq!(
            store.messages_fetched() - before,
            expected.len() as u64,
            "{query:?} fetched only its page"
        );
    }
    assert_eq!(store.messages_scanned(), 300, "the subject was read once, when the room was first used");
    store.apply(10, &appends("r", [message(301, 3_010, "a", None)])).await.unwrap();
    let page = store.history(&room("r"), &query(HistoryRange::AfterSeq(299), 10), 10).await.unwrap();
    assert_eq!(seqs(&page), vec![300, 301], "its own appends keep the index up to date");
    assert_eq!(store.messages_scanned(), 300);
}
