//! Quotas over real sockets: connections per client address, per account and in total, and
//! live rooms per account across shards. Whoever is over a cap gets a clear code; everyone
//! else carries on.

use std::time::Duration;

use roomkit_client::{CreateRoomOptions, RoomKit};
use roomkit_protocol::{Code, EndReason, RoomUuid};
use roomkit_server::ServerConfig;
use roomkit_tests::{
    create_params, expect_code,
    ws::{Received, WsClient},
    Harness, WsHarness,
};

/// How a connection accepted by the WebSocket front ended: the roomkit code and reason text
/// of its close frame.
async fn refused(url: &str) -> (u32, String) {
    let mut client = WsClient::connect(url).await;
    match client.read_to_close().await {
        (frames, Received::Close(Some(frame))) => {
            assert!(frames.is_empty(), "{frames:?}");
            let (code, text) = frame.reason.split_once(' ').expect("\"<code> <reason>\"");
            (code.parse().expect("a roomkit code"), text.to_string())
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Connects and logs in as `account` once the server lets a connection in again (the count of
/// a closed connection is given back when its task ends).
async fn connect_when_allowed(url: &str, account: &str) -> WsClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut client = WsClient::connect(url).await;
        let login = serde_json::json!({"op": "login", "account_id": account, "token": "dev"});
        client
            .send_json(&serde_json::json!({"id": 1, "op": "login", "account_id": account, "token": "dev"}))
            .await;
        if let Received::Json(answer) = client.next().await {
            assert_eq!(answer["code"], 0, "{login}: {answer}");
            return client;
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection let in again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped() {
    let mut config = ServerConfig::default();
    config.max_connections_per_address = 3;
    let h = WsHarness::start(config).await;
    // Three connections, two of them never logging in: all count.
    let mut first = WsClient::connect(h.url()).await;
    first.login("alice").await;
    let idle = [WsClient::connect(h.url()).await, WsClient::connect(h.url()).await];
    let (code, reason) = refused(h.url()).await;
    assert_eq!(code, Code::TOO_MANY_CONNECTIONS.0, "{reason}");
    assert!(reason.contains("127.0.0.1") && reason.contains("limit 3"), "{reason}");
    // Those in are unaffected.
    first.request_ok(serde_json::json!({"op": "ping"})).await;
    // One leaves: another may come in.
    let [one, _two] = idle;
    one.close().await;
    let mut next = connect_when_allowed(h.url(), "bob").await;
    next.request_ok(serde_json::json!({"op": "ping"})).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_of_one_account_are_capped() {
    let mut config = ServerConfig::default();
    config.max_connections_per_account = 2;
    let h = WsHarness::start(config).await;
    let alice = [h.client("alice").await, h.client("alice").await];
    let third = h.connect().await;
    let e = expect_code(third.login("alice", "dev").await, Code::TOO_MANY_CONNECTIONS);
    assert!(e.msg().contains("`alice`") && e.msg().contains("limit 2"), "{}", e.msg());
    assert_eq!(third.user_uuid(), None);
    // Other accounts log in as usual, on that very connection too.
    let _bob = h.client("bob").await;
    third.login("carol", "dev").await.expect("the refused connection stays usable");
    // One of Alice's connections closes: she may log in again.
    let [one, _two] = alice;
    one.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let kit = h.connect().await;
        match kit.login("alice", "dev").await {
            Ok(()) => break,
            Err(e) if e.code() == Code::TOO_MANY_CONNECTIONS => {
                assert!(tokio::time::Instant::now() < deadline, "alice's slot never came back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_of_connections_is_capped_with_server_busy() {
    let mut config = ServerConfig::default();
    config.max_connections = 2;
    let h = WsHarness::start(config).await;
    let kits: Vec<RoomKit> = vec![h.client("alice").await, h.client("bob").await];
    let (code, reason) = refused(h.url()).await;
    assert_eq!(code, Code::SERVER_BUSY.0, "{reason}");
    assert!(reason.contains("limit of 2 connections"), "{reason}");
    // The SDK reports the same code for a connection refused this way.
    let kit = h.connect().await;
    expect_code(kit.login("carol", "dev").await, Code::SERVER_BUSY);
    for kit in &kits {
        assert!(kit.room_service().get_room_context("none").is_none());
    }
    kits[0].close().await;
    connect_when_allowed(h.url(), "carol").await;
    h.stop().await;
}

/// An account's live rooms are capped across shards (rooms are spread over them by uuid):
/// past the cap `create_room` is `TOO_MANY_ROOMS`; a room that ends frees a place; other
/// accounts are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_per_account_are_capped_across_shards() {
    let mut config = ServerConfig::default();
    config.shards = 4;
    config.core.max_rooms_per_account = 3;
    let h = WsHarness::start(config).await;
    let alice = h.client("alice").await;
    let service = alice.room_service();
    let create =
        |uuid: &str| service.create_room(create_params(uuid), CreateRoomOptions { enable_chatroom: true });
    // One room name per shard, so that the rooms really are on different shards.
    let names: Vec<String> = (0..4).map(|shard| on_shard("a", shard, 4)).collect();
    for uuid in &names[..3] {
        create(uuid).await.unwrap_or_else(|e| panic!("{uuid}: {e}"));
    }
    // Refused on the shard alice has no room on yet, and on one she has.
    for uuid in [names[3].clone(), format!("{}x", names[0])] {
        let e = expect_code(create(&uuid).await, Code::TOO_MANY_ROOMS);
        assert!(e.msg().contains("3 live rooms"), "{}", e.msg());
    }
    let bob = h.client("bob").await;
    bob.room_service()
        .create_room(create_params("b0"), CreateRoomOptions::default())
        .await
        .expect("bob is not affected");
    let a1: RoomUuid = names[1].parse().unwrap();
    let room = a1.clone();
    let ended =
        h.server().with_room(&a1, move |reg, _| reg.close_room(&room, EndReason::CloseByBackend)).await;
    assert!(matches!(ended, Some(Ok(()))), "{ended:?}");
    create(&names[3]).await.expect("an ended room on another shard frees a place");
    h.stop().await;
}

/// The first room name `<prefix><n>` that `shard_of` puts on `shard` of `shards`.
fn on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|name| roomkit_server::shard_of(&name.parse().expect("a room id"), shards) == shard)
        .expect("some name lands on every shard")
}
