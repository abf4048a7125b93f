//! Presence and counts end to end: an in-process server over the in-memory transport and SDK
//! clients. In a small room every join and leave is told per member and the counts move with
//! them; in a large one (the server's `presence_per_member_max` set low here) joins and leaves
//! come as digests, and the SDK still fires NERoom's per-member callbacks for the members a
//! digest names, with counts that track the truth.

mod support;

use std::sync::Arc;

use roomkit_client::MemberCounts;
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
    let kit = login(connector.separate(), client_config(std::time::Duration::from_millis(50)), user).await;
    Member::join(kit, ROOM).await
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
    assert_eq!(alice.recorder.counts(), [counts(1, 1), counts(2, 1), counts(2, 2)], "told as they changed");
    assert_eq!(member_events_of(&alice.recorder.all(), "bob"), ["join_room", "join_chatroom"]);

    within("bob leaves the chatroom", bob.chat.leave_chatroom()).await.expect("leave the chatroom");
    assert_eq!(bob.ctx.member_counts(), counts(2, 1), "the leaver counts itself out");
    eventually("alice sees bob leave the chatroom", || alice.ctx.chatroom_online_count() == 1).await;
    within("bob leaves the room", bob.ctx.leave_room()).await.expect("leave the room");
    eventually("alice sees bob leave", || alice.ctx.online_count() == 1).await;
    assert_eq!(alice.recorder.counts().last(), Some(&counts(1, 1)));
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
