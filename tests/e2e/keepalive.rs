//! Keep-alive: the server pings connections that have gone quiet and closes those that stop
//! answering, with `KEEPALIVE_TIMEOUT`; connections whose peer answers are never closed for
//! being idle.

use std::time::Duration;

use roomkit_client::{ClientConfig, ConnectionState, RoomKit};
use roomkit_protocol::Code;
use roomkit_server::ServerConfig;
use roomkit_tests::{
    ws::{Received, WsClient},
    Harness, MemoryHarness, WsHarness,
};

/// A client that stops reading (so it answers no ping) is closed once the idle timeout has
/// passed; an SDK client on the same server, idle too but answering, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_is_closed_and_one_that_answers_stays() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(200);
    config.idle_timeout = Duration::from_secs(3);
    let h = WsHarness::start(config).await;
    let answering = h.client("alice").await;
    let mut silent = WsClient::connect(h.url()).await;
    silent.login("bob").await;
    // From now on `silent` reads nothing, so its WebSocket library answers no ping.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.server().connection_count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the silent connection was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match silent.read_to_close().await {
        (_, Received::Close(Some(frame))) => {
            assert!(frame.reason.starts_with("5006 "), "{frame:?}");
            assert_eq!(u16::from(frame.code), 4000);
        }
        other => panic!("expected a close frame with KEEPALIVE_TIMEOUT, got {other:?}"),
    }
    // Alice was as idle as Bob, but her SDK answered the pings.
    assert_eq!(answering.connection_state(), ConnectionState::Connected);
    assert_eq!(h.server().connection_count(), 1);
    answering
        .room_service()
        .create_room(roomkit_tests::create_params("r"), Default::default())
        .await
        .expect("alice's connection still works");
    h.stop().await;
}

/// A client busy receiving counts as alive while the server's writes to it complete, even
/// if it does not answer a ping in time (it answers late when its link is slow; here it
/// reads nothing at all); once nothing but pings is written to it, it is closed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_writes_complete_is_alive_without_answering_pings() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(200);
    config.idle_timeout = Duration::from_secs(3);
    let h = WsHarness::start(config).await;
    let alice = roomkit_tests::start_chatroom(&h, "r", &["alice"]).await.remove(0);
    let mut busy = WsClient::connect(h.url()).await;
    busy.login("bob").await;
    busy.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Bob"})).await;
    busy.request_ok(serde_json::json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    // From now on bob reads nothing (so answers no ping), but messages keep being written to him.
    let until = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < until {
        alice.chat().send_broadcast_text_message("hi").await.expect("sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.server().connection_count(), 2, "bob was closed while writes to him completed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.server().connection_count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "bob was never closed once only pings went out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

/// Over the in-memory transport a peer is there for as long as its end is, and the transport
/// answers pings itself: hours of paused time pass and nobody is closed for being idle.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_clients_that_are_there_stay_connected_for_hours() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_secs(30);
    config.idle_timeout = Duration::from_secs(75);
    let h = MemoryHarness::start(config).await;
    // The client sends nothing of its own (no keep-alive pings): only the transport's answers
    // to the server's pings show it is there.
    let mut quiet = ClientConfig::default();
    quiet.keep_alive.interval = Duration::ZERO;
    let kit = RoomKit::connect_with(h.connector(), quiet).await.expect("connect");
    kit.login("alice", "dev").await.expect("log in");
    let mut raw = h.raw_client().await;
    raw.send_json(serde_json::json!({"id": 1, "op": "login", "account_id": "bob", "token": "dev"})).await;
    let _login = raw.recv_frame().await;
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(h.server().connection_count(), 2);
    assert_eq!(kit.connection_state(), ConnectionState::Connected);
    let e =
        kit.room_service().join_room(roomkit_tests::join_params("nope", "alice"), Default::default()).await;
    assert_eq!(e.unwrap_err().code(), Code::ROOM_NOT_EXIST, "the connection still answers");
    h.stop().await;
}
