//! Cluster mode: three nodes on one nats-server, each a full server with its own WebSocket
//! port, sharing one store; clients spread over the nodes.

use std::{sync::Arc, time::Duration};

use roomkit_client::ConnectionState;
use roomkit_client::{FetchHistoryOptions, RoomEvent, RoomKit};
use roomkit_core::store::{MemoryStore, MessageStore, Retention};
use roomkit_protocol::HistoryOrder;
use roomkit_server::{
    cluster::{Cluster, ClusterConfig, ClusterError},
    DevAuthenticator, Server, ServerConfig,
};
use roomkit_store_nats::testing::NatsServer;
use roomkit_tests::{
    create_room, join, join_as_host, within, Harness, Member, WsFront, WsHarness, DEV_TOKEN,
};

async fn node(nats: &NatsServer, id: &str, store: &Arc<dyn MessageStore>) -> WsHarness {
    node_with(nats, id, store, ServerConfig::default()).await
}

async fn node_with(
    nats: &NatsServer,
    id: &str,
    store: &Arc<dyn MessageStore>,
    config: ServerConfig,
) -> WsHarness {
    let cluster =
        Cluster::connect(ClusterConfig::new(vec![nats.url()], id)).await.expect("joins the cluster");
    let server =
        Server::new(config, Arc::new(DevAuthenticator)).with_store(Arc::clone(store)).with_cluster(cluster);
    WsHarness::start_server(server, WsFront::default()).await
}

async fn client(node: &WsHarness, account: &str) -> RoomKit {
    let kit = RoomKit::connect(node.url()).await.expect("connects");
    kit.login(account, DEV_TOKEN).await.expect("logs in");
    kit
}

/// The chat messages in `events`, as (seq, sender, text).
fn chat(events: &[RoomEvent]) -> Vec<(u64, String, String)> {
    events
        .iter()
        .flat_map(|e| match e {
            RoomEvent::ChatroomMessagesReceived(msgs) => msgs.clone(),
            _ => Vec::new(),
        })
        .map(|m| (m.seq, m.from_user_uuid.to_string(), m.text().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_share_one_chatroom() {
    // Installed before any traffic, as the binary does, so that it counts every node's.
    let metrics = roomkit_server::metrics::prometheus();
    let nats = NatsServer::start();
    let store: Arc<dyn MessageStore> = MemoryStore::shared(Retention::default());
    let nodes =
        [node(&nats, "a", &store).await, node(&nats, "b", &store).await, node(&nats, "c", &store).await];

    // alice on a creates the room; bob on b and carol on c join it and its chatroom.
    let alice_kit = client(&nodes[0], "alice").await;
    create_room(&alice_kit, "spread", true).await;
    let mut alice = join_as_host(&alice_kit, "spread").await;
    let mut bob = join(&client(&nodes[1], "bob").await, "spread").await;
    let mut carol = join(&client(&nodes[2], "carol").await, "spread").await;
    for m in [&alice, &bob, &carol] {
        m.chat().join_chatroom().await.expect("join_chatroom");
    }
    assert_eq!(alice.ctx.member_counts().room, 3, "the owner counts members of every node");
    for m in [&mut alice, &mut bob, &mut carol] {
        m.drain().await;
    }

    // Everyone sends at once.
    let send = |m: &Member, who: &'static str| {
        let chat = m.chat();
        async move {
            for k in 0..5 {
                chat.send_broadcast_text_message(&format!("{who}{k}")).await.expect("send");
            }
        }
    };
    within("the sends", futures::future::join3(send(&alice, "a"), send(&bob, "b"), send(&carol, "c"))).await;
    // A directed message reaches its recipient only, across nodes.
    alice.chat().send_direct_text_message(&carol.uuid(), "psst").await.expect("direct");

    let mut seen = Vec::new();
    for m in [&mut alice, &mut bob, &mut carol] {
        let events = m.drain().await;
        seen.push(chat(&events));
    }
    for (i, got) in seen.iter().enumerate() {
        let seqs: Vec<u64> = got.iter().map(|(s, ..)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "member {i} got messages out of order: {seqs:?}");
    }
    // Each got the ten broadcasts of the other two; only carol got the direct message.
    assert_eq!(seen[0].len(), 10, "alice: {:?}", seen[0]);
    assert_eq!(seen[1].len(), 10, "bob: {:?}", seen[1]);
    assert_eq!(seen[2].len(), 11, "carol: {:?}", seen[2]);
    assert_eq!(seen[2].last().map(|(_, _, t)| t.as_str()), Some("psst"));
    assert!(!seen[1].iter().any(|(_, _, t)| t == "psst"), "bob must not see the direct message");
    // Every node counts the chat messages it delivers, the directed one too: in a cluster
    // every delivery is a follower's, the owner's own members' included. (Exactly, where each
    // test has its process, as under nextest; else at least, since the process's other tests
    // count theirs in the same recorder.)
    let scraped = metrics.render();
    let count = |name: &str| -> f64 {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{scraped}"))
    };
    let (messages, events) = (count("roomkit_messages_out_total"), count("roomkit_events_out_total"));
    if std::env::var_os("NEXTEST").is_some() {
        assert_eq!(messages, 31.0, "15 broadcasts to two members each and one directed");
    }
    assert!(messages >= 31.0, "15 broadcasts to two members each and one directed: {messages}");
    assert!(events >= messages, "messages are events: {events} < {messages}");

    // History is the same from every node (each sees what it may).
    let options = FetchHistoryOptions { limit: 100, order: HistoryOrder::Asc, ..Default::default() };
    let bob_history = bob.chat().fetch_chatroom_history_messages(options.clone()).await.expect("history");
    let carol_history = carol.chat().fetch_chatroom_history_messages(options).await.expect("history");
    assert_eq!(bob_history.len(), 15);
    assert_eq!(carol_history.len(), 16);
    let seqs: Vec<u64> = carol_history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>(), "one gap-free numbering");

    // Presence across nodes: carol leaving is seen on a and b.
    carol.ctx.leave_room().await.expect("leave");
    for m in [&mut alice, &mut bob] {
        let (_, _) = m.wait_for(|e| matches!(e, RoomEvent::MemberLeaveRoom(_))).await;
    }
}

#[tokio::test]
async fn an_unreachable_nats_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = ClusterConfig::new(vec![format!("nats://127.0.0.1:{port}")], "lonely");
    config.connect_timeout = Duration::from_millis(500);
    let err = within("the connect to fail", Cluster::connect(config)).await.expect_err("nobody listens");
    assert!(matches!(err, ClusterError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "names the address: {err}");
}

/// Sends `text` until the SDK is connected again and the send is acknowledged.
async fn send_when_back(m: &Member, text: &str) -> roomkit_client::ChatMessage {
    within("a send once resumed", async {
        loop {
            match m.chat().send_broadcast_text_message(text).await {
                Ok(message) => return message,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_when_its_node_shuts_down_and_members_resume_there() {
    let nats = NatsServer::start();
    let store: Arc<dyn MessageStore> = MemoryStore::shared(Retention::default());
    let a = node(&nats, "a", &store).await;
    let b = node(&nats, "b", &store).await;

    // alice knows both nodes and starts on a, which takes the room; bob is on b.
    let alice_kit = RoomKit::connect(vec![a.url().to_owned(), b.url().to_owned()]).await.expect("connects");
    alice_kit.login("alice", DEV_TOKEN).await.expect("logs in");
    create_room(&alice_kit, "moving", true).await;
    let alice = join_as_host(&alice_kit, "moving").await;
    let mut bob = join(&client(&b, "bob").await, "moving").await;
    alice.chat().join_chatroom().await.expect("join_chatroom");
    bob.chat().join_chatroom().await.expect("join_chatroom");
    bob.drain().await;
    let before = alice.chat().send_broadcast_text_message("before").await.expect("send");
    assert_eq!(before.seq, 1);
    let (event, _) = bob.wait_for(|e| matches!(e, RoomEvent::ChatroomMessagesReceived(_))).await;
    assert_eq!(chat(&[event])[0].0, 1);

    // Node a shuts down: the room moves to b, rebuilt from the store.
    a.stop().await;
    let after = send_when_back(&alice, "after").await;
    assert_eq!(alice_kit.server_index(), 1, "alice failed over to b");
    assert_eq!(after.seq, 2, "numbering continues on the new owner");
    assert_eq!(alice_kit.connection_state(), ConnectionState::Connected);

    // bob, on b all along, was moved too (his room's node was gone) and resumed: he gets the
    // new message once, and nothing twice.
    let (event, skipped) = bob.wait_for(|e| matches!(e, RoomEvent::ChatroomMessagesReceived(_))).await;
    let got = chat(&[event]);
    assert_eq!(got.iter().map(|(s, _, t)| (*s, t.as_str())).collect::<Vec<_>>(), vec![(2, "after")]);
    assert!(chat(&skipped).is_empty(), "no message seen twice: {skipped:?}");
    let options = FetchHistoryOptions { limit: 10, order: HistoryOrder::Asc, ..Default::default() };
    let history = bob.chat().fetch_chatroom_history_messages(options).await.expect("history");
    let texts: Vec<_> = history.iter().map(|m| (m.seq, m.text().unwrap_or_default().to_owned())).collect();
    assert_eq!(texts, vec![(1, "before".to_owned()), (2, "after".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_fails_sends_clearly_and_the_node_recovers_when_nats_returns() {
    use roomkit_store_nats::{NatsStore, NatsStoreConfig};
    let mut nats = NatsServer::start();
    let urls = vec![nats.url()];
    let config = NatsStoreConfig {
        urls: urls.clone(),
        request_timeout: Duration::from_secs(1),
        reconnect_delay_max: Duration::from_millis(200),
        ..NatsStoreConfig::default()
    };
    let store: Arc<dyn MessageStore> = Arc::new(NatsStore::connect(config).await.expect("the store opens"));
    let mut cluster = ClusterConfig::new(urls, "solo");
    cluster.forward_timeout = Duration::from_secs(2);
    let cluster = Cluster::connect(cluster).await.expect("joins");
    let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator))
        .with_store(Arc::clone(&store))
        .with_cluster(cluster);
    let node = WsHarness::start_server(server, WsFront::default()).await;
    let kit = client(&node, "alice").await;
    create_room(&kit, "outage", true).await;
    let alice = join_as_host(&kit, "outage").await;
    alice.chat().join_chatroom().await.expect("join_chatroom");
    alice.chat().send_broadcast_text_message("before").await.expect("stored");

    // NATS goes away: a send is refused with a clear code, never acknowledged.
    nats.kill();
    let started = std::time::Instant::now();
    let refused =
        tokio::time::timeout(Duration::from_secs(30), alice.chat().send_broadcast_text_message("during"))
            .await
            .expect("refused within the store's and the SDK's timeouts");
    println!("refused after {:?}: {refused:?}", started.elapsed());
    let code = refused.expect_err("nothing is acknowledged that was not stored").code();
    assert!(
        matches!(code, roomkit_protocol::Code::INTERNAL | roomkit_protocol::Code::ROOM_UNAVAILABLE),
        "a clear code, not {code:?}"
    );

    // NATS is back: the node and its clients recover by themselves.
    nats.restart();
    let after = send_when_back(&alice, "after").await;
    let options = FetchHistoryOptions { limit: 10, order: HistoryOrder::Asc, ..Default::default() };
    let history = alice.chat().fetch_chatroom_history_messages(options).await.expect("history");
    let texts: Vec<_> = history.iter().map(|m| m.text().unwrap_or_default().to_owned()).collect();
    assert_eq!(texts, ["before", "after"], "what was refused is not stored");
    assert_eq!(after.seq, history[1].seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_digests_and_paging_work_across_nodes() {
    let nats = NatsServer::start();
    let store: Arc<dyn MessageStore> = MemoryStore::shared(Retention::default());
    // Past two members the room is "large": presence comes as digests, members as pages.
    let mut config = ServerConfig::default();
    config.core.presence_per_member_max = 2;
    config.core.presence_digest_ms = 50;
    let nodes = [
        node_with(&nats, "a", &store, config.clone()).await,
        node_with(&nats, "b", &store, config.clone()).await,
        node_with(&nats, "c", &store, config).await,
    ];
    let alice_kit = client(&nodes[0], "alice").await;
    create_room(&alice_kit, "big", true).await;
    let alice = join_as_host(&alice_kit, "big").await;
    let mut bob = join(&client(&nodes[1], "bob").await, "big").await;
    let mut carol = join(&client(&nodes[2], "carol").await, "big").await;
    let mut dave = join(&client(&nodes[0], "dave").await, "big").await;
    for m in [&alice, &bob, &carol, &dave] {
        m.chat().join_chatroom().await.expect("join_chatroom");
    }
    for m in [&mut bob, &mut carol, &mut dave] {
        m.drain().await;
    }

    // A group message reaches exactly its recipients, on other nodes.
    let to = [bob.uuid(), carol.uuid()];
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    alice.chat().send_group_text_message(&to, "for two").await.expect("group send");
    for m in [&mut bob, &mut carol] {
        let (event, _) = m.wait_for(|e| matches!(e, RoomEvent::ChatroomMessagesReceived(_))).await;
        assert_eq!(chat(&[event])[0].2, "for two");
    }
    assert!(chat(&dave.drain().await).is_empty(), "dave, on the sender's node, is not a recipient");

    // A fifth member: the others hear of it through a digest, whatever their node.
    let _erin = join(&client(&nodes[1], "erin").await, "big").await;
    for m in [&mut carol, &mut dave] {
        let erin = |e: &RoomEvent| matches!(e, RoomEvent::MemberJoinRoom(ms) if ms.iter().any(|x| x.uuid.as_str() == "erin"));
        m.wait_for(erin).await;
        assert_eq!(m.ctx.member_counts().room, 5, "the digest's exact count");
    }

    // Paging from a node that does not run the room: the owner knows every member.
    let first = carol.ctx.fetch_room_members(None, 3).await.expect("a page");
    assert_eq!(first.members.len(), 3);
    assert_eq!(first.counts.room, 5);
    let cursor = first.next_cursor.clone().expect("more to come");
    let second = carol.ctx.fetch_room_members(Some(&cursor), 3).await.expect("the next page");
    assert_eq!(second.members.len(), 2);
    assert!(second.next_cursor.is_none());
    let mut names: Vec<String> =
        first.members.iter().chain(&second.members).map(|m| m.uuid.to_string()).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
}
