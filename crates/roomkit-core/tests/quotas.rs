//! Room caps: live rooms per account and in total, across every registry sharing a tally.

mod support;

use roomkit_core::{CoreConfig, Identity, RoomRegistry, RoomTally};
use roomkit_protocol::{Code, EndReason, UserUuid};
use support::*;

fn capped(per_account: usize, total: usize) -> CoreConfig {
    let mut config = CoreConfig::default();
    config.max_rooms_per_account = per_account;
    config.max_rooms = total;
    config
}

#[test]
fn an_account_holds_at_most_its_cap_of_live_rooms() {
    let mut h = Harness::new(capped(2, 0));
    let (alice, bob) = (User::new("alice", 1), User::new("bob", 2));
    h.ok(&alice, create("a1", true));
    h.ok(&alice, create("a2", false));
    let e = h.fails(&alice, create("a3", true), Code::TOO_MANY_ROOMS);
    assert!(e.to_string().contains("2 live rooms"), "{e}");
    assert!(h.reg.room_info(&room("a3")).is_none());
    // Others are not affected.
    h.ok(&bob, create("b1", true));
    // A room that ends makes room for another.
    h.reg.close_room(&room("a1"), EndReason::CloseByBackend).unwrap();
    h.drain();
    h.ok(&alice, create("a3", true));
    // So does one that expires empty.
    h.fails(&alice, create("a4", true), Code::TOO_MANY_ROOMS);
    let idle = h.reg.config().room_idle_timeout_ms;
    h.timeout_at(h.now + idle + 1);
    h.ok(&alice, create("a4", true));
}

#[test]
fn the_total_cap_answers_server_busy() {
    let mut h = Harness::new(capped(0, 2));
    h.ok(&User::new("alice", 1), create("a1", true));
    h.ok(&User::new("bob", 2), create("b1", true));
    let e = h.fails(&User::new("carol", 3), create("c1", true), Code::SERVER_BUSY);
    assert!(e.to_string().contains("2 rooms"), "{e}");
}

#[test]
fn registries_sharing_a_tally_share_the_caps() {
    let tally = RoomTally::new();
    let mut shards: Vec<Harness> = (0..2)
        .map(|_| {
            let config = capped(2, 3);
            let store = memory_store(&config);
            Harness::with_registry(RoomRegistry::with_tally(config, tally.clone()), store)
        })
        .collect();
    let alice = User::new("alice", 1);
    shards[0].ok(&alice, create("a1", true));
    shards[1].ok(&alice, create("a2", true));
    shards[0].fails(&alice, create("a3", true), Code::TOO_MANY_ROOMS);
    shards[1].fails(&alice, create("a3", true), Code::TOO_MANY_ROOMS);
    shards[1].ok(&User::new("bob", 2), create("b1", true));
    shards[0].fails(&User::new("carol", 3), create("c1", true), Code::SERVER_BUSY);
    assert_eq!((tally.total(), tally.rooms_of(&alice.uuid())), (3, 2));
}

#[test]
fn the_servers_own_identity_is_held_to_the_total_only() {
    let mut h = Harness::new(capped(1, 3));
    let backend = Identity::unrestricted(UserUuid::backend());
    for (i, r) in ["x1", "x2", "x3"].into_iter().enumerate() {
        let created = h.reg.create_room(h.now, &backend, create(r, true));
        assert!(created.is_ok(), "room {i}: {created:?}");
        h.drain();
    }
    let over = h.reg.create_room(h.now, &backend, create("x4", true)).unwrap_err();
    assert_eq!(over.code(), Code::SERVER_BUSY);
}
