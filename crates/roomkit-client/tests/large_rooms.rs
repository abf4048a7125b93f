//! Presence and counts end to end: an in-process server over the in-memory transport and SDK
//! clients. In a small room every join and leave is told per member and the counts move with
//! them; in a large one (the server's `presence_per_member_max` set low here) joins and leaves
//! come as digests, and the SDK still fires NERoom's per-member callbacks for the members a
//! digest names, with counts that track the truth.

mod support;

use std::sync::Arc;

use roomkit_client::{MemberCounts, RoomEvent};
use roomkit_server::{DevAuthenticator, Server, ServerConfig, ServerHandle};
use roomkit_transport_memory::MemoryConnector;
use support::*;

const ROOM: &str = "large-room";

fn counts(room: u64, chatroom: u64) -> MemberCounts {
    MemberCounts { room, chatroom }
}

fn memory_server(config: ServerConfig) -> (ServerHandle, MemoryConnector) {
    let (listener, connector) = roomkit_transport_memory::transport();
    (Server::new(config, Arc::new(DevAuthenticator)).spawn(listener), connector)
}

/// `user` logged in over its own connection, in the room and its chatroom.
async fn member(connector: &MemoryConnector, user: &str) -> Member {
    member_paging(connector, user, roomkit_client::ClientConfig::default().complete_member_list_max).await
}

/// [`member`], reading the whole member list on joining rooms of up to `complete` members.
async fn member_paging(connector: &MemoryConnector, user: &str, complete: u64) -> Member {
    let mut config = client_config(std::time::Duration::from_millis(50));
    config.complete_member_list_max = complete;
    let kit = login(connector.separate(), config, user).await;
    Member::join(kit, ROOM).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_room_larger_than_the_join_page_is_complete_after_join_room() {
    let mut config = server_config(0);
    config.core.join_member_page = 2;
    let (server, connector) = memory_server(config);
    let alice =
        login(connector.separate(), client_config(std::time::Duration::from_millis(50)), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let mut others = Vec::new();
    for user in ["bob", "carol", "dave", "erin"] {
        others.push(member(&connector, user).await);
    }
    let erin = others.last().expect("erin");
    let mut seen: Vec<String> = erin.ctx.remote_members().iter().map(|m| m.uuid.to_string()).collect();
    seen.sort();
    assert_eq!(seen, ["alice", "bob", "carol", "dave"], "three pages read by join_room");
    // With paging turned off, a join shows the first page only.
    let frank = member_paging(&connector, "frank", 0).await;
    let mut seen: Vec<String> = frank.ctx.remote_members().iter().map(|m| m.uuid.to_string()).collect();
    seen.sort();
    assert_eq!(seen, ["alice", "bob"], "the join answer's page");
    assert_eq!(frank.ctx.online_count(), 6, "the counts are exact all the same");
    let mut all: Vec<&Member> = others.iter().collect();
    all.extend([&alice, &frank]);
    close_all(&all).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_small_room_counts_move_with_every_join_and_leave() {
    let (server, connector) = memory_server(server_config(0));
    let alice =
        login(connector.separate(), client_config(std::time::Duration::from_millis(50)), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    assert_eq!(alice.ctx.member_counts(), counts(1, 1), "her own entry, from her own calls");
    let bob = member(&connector, "bob").await;
    assert_eq!(bob.ctx.member_counts(), counts(2, 2), "the join answer's counts, then his entry");
    eventually("alice counts bob", || alice.ctx.member_counts() == counts(2, 2)).await;
    eventually("alice is told bob's counts", || alice.recorder.counts().len() >= 3).await;
    assert_eq!(alice.recorder.counts(), [counts(1, 1), counts(2, 1), counts(2, 2)], "told as they changed");
    assert_eq!(member_events_of(&alice.recorder.all(), "bob"), ["join_room", "join_chatroom"]);

    within("bob leaves the chatroom", bob.chat.leave_chatroom()).await.expect("leave the chatroom");
    assert_eq!(bob.ctx.member_counts(), counts(2, 1), "the leaver counts itself out");
    eventually("alice sees bob leave the chatroom", || alice.ctx.chatroom_online_count() == 1).await;
    within("bob leaves the room", bob.ctx.leave_room()).await.expect("leave the room");
    eventually("alice sees bob leave", || alice.ctx.online_count() == 1).await;
    // The callback is told just after the state changes: wait for it too.
    eventually("alice is told the count", || alice.recorder.counts().last() == Some(&counts(1, 1))).await;
    let info = within("get_room_info", alice.ctx.get_room_info()).await.expect("room info");
    assert_eq!(info.counts, counts(1, 1), "what she counted is the server's truth");
    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

async fn close_all(members: &[&Member]) {
    for m in members {
        within("closing a client", m.kit.close()).await;
    }
}

/// A server whose rooms switch to digests past two members, digest every 20 ms, and answer a
/// join with a page of two.
fn digest_server() -> (ServerHandle, MemoryConnector) {
    let mut config = server_config(0);
    config.core.presence_per_member_max = 2;
    config.core.presence_digest_ms = 20;
    config.core.join_member_page = 2;
    memory_server(config)
}

/// Every member's `user`s, page by page with `limit`, through `fetch`.
async fn page_all<F, Fut>(limit: u32, fetch: F) -> Vec<String>
where
    F: Fn(Option<String>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<roomkit_client::MembersPage, roomkit_client::Error>>,
{
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = within("a page of members", fetch(cursor.take(), limit)).await.expect("a page");
        assert!(page.members.len() <= limit as usize);
        seen.extend(page.members.iter().map(|m| m.uuid.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_digest_mode_the_named_members_fire_the_neroom_callbacks_and_counts_track() {
    let (server, connector) = digest_server();
    let alice =
        login(connector.separate(), client_config(std::time::Duration::from_millis(50)), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let bob = member(&connector, "bob").await;
    let carol = member(&connector, "carol").await;
    // Past two members: joins come as digests from now on. The one naming carol is out first.
    eventually("alice counts carol", || alice.ctx.member_counts() == counts(3, 3)).await;
    let mark = alice.recorder.len();
    // Dave reads no more than the join answer's page, as in a room past the SDK's paging size.
    let dave = member_paging(&connector, "dave", 0).await;
    let erin = member(&connector, "erin").await;
    eventually("alice counts dave and erin", || alice.ctx.member_counts() == counts(5, 5)).await;
    // Callbacks are told just after the state changes, the count last: wait for it.
    eventually("the last count told is the truth", || alice.recorder.counts().last() == Some(&counts(5, 5)))
        .await;
    let told = alice.recorder.since(mark);
    for user in ["dave", "erin"] {
        assert_eq!(member_events_of(&told, user), ["join_room", "join_chatroom"], "{user}: {told:?}");
        assert!(alice.ctx.get_member(user).is_some_and(|m| m.is_in_chatroom), "{user} is seen");
    }

    // Dave's join answer showed a page of two, the host and himself; paging shows everyone once.
    eventually("dave counts erin", || dave.ctx.member_counts() == counts(5, 5)).await;
    assert!(dave.ctx.get_member("carol").is_none(), "carol was neither on dave's page nor named to him");
    let mut everyone = page_all(2, |c, l| {
        let ctx = dave.ctx.clone();
        async move { ctx.fetch_room_members(c.as_deref(), l).await }
    })
    .await;
    assert_eq!(everyone, ["alice", "bob", "carol", "dave", "erin"], "join order, each once");
    everyone.sort();
    let mut remote: Vec<String> = dave.ctx.remote_members().iter().map(|m| m.uuid.to_string()).collect();
    remote.sort();
    assert_eq!(remote, ["alice", "bob", "carol", "erin"], "the pages fetched are seen");
    let chatting = page_all(3, |c, l| {
        let chat = dave.chat.clone();
        async move { chat.fetch_chatroom_members(c.as_deref(), l).await }
    })
    .await;
    assert_eq!(chatting.len(), 5, "{chatting:?}");

    // Erin leaves: the others are told by digest, leave of the chatroom before the room's.
    let mark = alice.recorder.len();
    within("erin leaves", erin.ctx.leave_room()).await.expect("leave");
    for m in [&alice, &bob, &carol, &dave] {
        eventually(&format!("{} counts erin out", m.user), || m.ctx.member_counts() == counts(4, 4)).await;
    }
    eventually("alice is told the count", || alice.recorder.counts().last() == Some(&counts(4, 4))).await;
    assert_eq!(member_events_of(&alice.recorder.since(mark), "erin"), ["leave_chatroom", "leave_room"]);
    assert!(alice.ctx.get_member("erin").is_none());
    let info = within("get_room_info", bob.ctx.get_room_info()).await.expect("room info");
    assert_eq!(info.counts, counts(4, 4));
    close_all(&[&alice, &bob, &carol, &dave]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_message_is_told_at_once_with_seq_0_and_never_kept() {
    let (server, connector) = memory_server(server_config(0));
    let alice =
        login(connector.separate(), client_config(std::time::Duration::from_millis(50)), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let bob = member(&connector, "bob").await;
    bob.send("a stored message").await;
    alice.recorder.wait_for_text("a stored message").await;
    let seen = alice.chat.last_seq();

    let like = roomkit_client::CustomMessageOptions { persist: false, ..Default::default() };
    let sent = within("a like", bob.chat.send_custom_message(r#"{"type":"like"}"#, like.clone()))
        .await
        .expect("an ephemeral send");
    assert_eq!((sent.seq, sent.persist), (0, false));
    within("a second like", bob.chat.send_custom_message(r#"{"type":"like"}"#, like)).await.expect("again");
    eventually("alice gets both likes", || {
        alice.recorder.messages().iter().filter(|m| !m.persist && m.seq == 0).count() == 2
    })
    .await;
    assert_eq!(alice.chat.last_seq(), seen, "an ephemeral message takes no place in the sequence");
    let history = full_history(&alice.chat).await;
    assert!(history.iter().all(|m| m.persist), "never in history: {history:?}");
    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_rate_codes_reach_the_caller_unretried() {
    let mut config = server_config(0);
    config.core.member_message_rate = roomkit_core::config::MessageRate { per_second: 1, burst: 3 };
    let (server, connector) = memory_server(config);
    let alice =
        login(connector.separate(), client_config(std::time::Duration::from_millis(50)), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    // Sends as fast as answers come: the bucket of three runs dry long before it refills.
    let mut accepted = 0;
    let refusal = loop {
        match within("a send", alice.chat.send_broadcast_text_message("fast")).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "never refused");
    };
    assert_eq!(refusal.code(), roomkit_client::ErrorCode::MESSAGE_RATE_LIMITED, "{refusal}");
    let history = full_history(&alice.chat).await;
    assert_eq!(history.len(), accepted, "the refused send was not retried behind the caller's back");
    close_all(&[&alice]).await;
    server.shutdown().await;
}

/// Members joined by the storm test, past its per-member presence threshold.
const STORM: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_join_storm_past_the_threshold_every_member_counts_the_truth() {
    let mut config = server_config(0);
    config.core.presence_per_member_max = 100;
    config.core.presence_digest_names = 5;
    config.core.presence_digest_ms = 500;
    let (server, connector) = memory_server(config);
    let backoff = std::time::Duration::from_millis(50);
    let host = Member::join(
        {
            let kit = login(connector.separate(), client_config(backoff), "host").await;
            create_room(&kit, ROOM).await;
            kit
        },
        ROOM,
    )
    .await;
    let started = std::time::Instant::now();
    let joins: Vec<_> = (0..STORM)
        .map(|i| {
            let connector = connector.separate();
            tokio::spawn(async move {
                Member::join(login(connector, client_config(backoff), &format!("m{i:04}")).await, ROOM).await
            })
        })
        .collect();
    let mut members = Vec::with_capacity(STORM);
    for join in joins {
        members.push(join.await.expect("a member joined"));
    }
    let joined_in = started.elapsed();
    let truth = counts(STORM as u64 + 1, STORM as u64 + 1);
    for m in members.iter().chain([&host]) {
        eventually(&format!("{} counts everyone", m.user), || m.ctx.member_counts() == truth).await;
    }
    let told = host.recorder.all();
    let named: std::collections::HashSet<String> = told
        .iter()
        .filter_map(|e| match e {
            RoomEvent::MemberJoinRoom(m) => Some(m.iter().map(|m| m.uuid.to_string())),
            _ => None,
        })
        .flatten()
        .collect();
    println!(
        "{STORM} members joined in {joined_in:?}; the host was told {} events ({} count changes) \
         and {} of the joiners by name",
        told.len(),
        host.recorder.counts().len(),
        named.len()
    );
    assert!(named.len() < STORM, "past the threshold only some joiners are named: {}", named.len());
    let m0 = members[0].clone();
    let everyone = page_all(100, |c, l| {
        let ctx = m0.ctx.clone();
        async move { ctx.fetch_room_members(c.as_deref(), l).await }
    })
    .await;
    let distinct: std::collections::HashSet<&String> = everyone.iter().collect();
    assert_eq!((everyone.len(), distinct.len()), (STORM + 1, STORM + 1), "every member, each once");
    for m in members.iter().chain([&host]) {
        within("closing a client", m.kit.close()).await;
    }
    server.shutdown().await;
}
