//! An SDK client given several server URLs, over real loopback sockets: two servers served as
//! the `roomkit-server` binary serves them ([`WsHarness`]). A first URL that refuses
//! connections is skipped; a server that shuts down hands its clients over to the other.
//!
//! The two servers are separate single-node servers that share nothing: a room made on one
//! does not exist on the other (a cluster's nodes would share it).

use std::time::Duration;

use roomkit_client::{ConnectionState, EndReason, RoomEvent, RoomKit};
use roomkit_server::ServerConfig;
use roomkit_tests::{create_room, join, join_as_host, Harness, WsHarness, DEV_TOKEN};

/// Bound on reconnecting to the other server: generous for a loaded machine; reached only
/// when failing over does not happen.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_url_that_refuses_connections_is_skipped() {
    let down = WsHarness::start(ServerConfig::default()).await;
    let down_url = down.url().to_string();
    down.stop().await; // its port now refuses connections
    let up = WsHarness::start(ServerConfig::default()).await;

    let kit = RoomKit::connect([down_url.as_str(), up.url()]).await.expect("the second server accepts");
    assert_eq!(kit.server_url(), up.url());
    assert_eq!(kit.server_index(), 1);
    kit.login("alice", DEV_TOKEN).await.expect("login on the second server");
    create_room(&kit, "r", false).await;
    join_as_host(&kit, "r").await;
    assert_eq!(up.server().connection_count(), 1);

    // Both down: the error names the failures.
    let e = RoomKit::connect(vec![down_url.clone(), down_url.clone()]).await.expect_err("nobody accepts");
    assert_eq!(e.code(), roomkit_client::ErrorCode::CONNECTION_CLOSED);
    assert!(e.msg().contains("none of the 2 servers"), "{e}");
    kit.close().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_server_shuts_down_the_client_reconnects_to_the_next() {
    let a = WsHarness::start(ServerConfig::default()).await;
    let b = WsHarness::start(ServerConfig::default()).await;
    let urls = vec![a.url().to_string(), b.url().to_string()];
    let kit = RoomKit::connect(urls).await.expect("connect");
    assert_eq!((kit.server_index(), kit.server_url()), (0, a.url().to_string()));
    kit.login("alice", DEV_TOKEN).await.expect("login");
    create_room(&kit, "on-a", false).await;
    let mut on_a = join_as_host(&kit, "on-a").await;
    let mut states = kit.connection_events();

    let b_url = b.url().to_string();
    a.stop().await;

    // Reconnecting, then connected, on b.
    let reconnected = async {
        loop {
            match states.recv().await.expect("the session is alive") {
                ConnectionState::Connected => return,
                ConnectionState::Reconnecting { .. } => {}
                other => panic!("expected to fail over, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(FAILOVER_LIMIT, reconnected).await.expect("connected again within the limit");
    assert_eq!(kit.connection_state(), ConnectionState::Connected);
    assert_eq!((kit.server_index(), kit.server_url()), (1, b_url.clone()));
    assert_eq!(b.server().connection_count(), 1);

    // b does not have the room made on a: its context ends.
    let (end, _) = on_a.wait_for(|e| matches!(e, RoomEvent::RoomEnd(_))).await;
    assert!(matches!(end, RoomEvent::RoomEnd(EndReason::Unknown)), "{end:?}");
    assert!(kit.room_service().get_room_context("on-a").is_none());

    // The session carries on on b, logged in as before.
    assert_eq!(kit.user_uuid().map(|u| u.to_string()).as_deref(), Some("alice"));
    create_room(&kit, "on-b", true).await;
    let member = join_as_host(&kit, "on-b").await;
    member.chat().join_chatroom().await.expect("join the chatroom on b");
    member.chat().send_broadcast_text_message("hello from b").await.expect("send on b");
    let bob = b.client("bob").await;
    join(&bob, "on-b").await;
    kit.close().await;
    bob.close().await;
    b.stop().await;
}
