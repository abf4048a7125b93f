//! A join storm against core alone, without a server or a store: N members join one room and
//! its chatroom, each drained as a driver would, then every member reads the member list page
//! by page. Prints the time per 1000 joins, the events delivered per join and the process's resident
//! memory after each size (sizes run one after the other in one process). `cargo run --release -p roomkit-core --example join_storm [N...]`

use std::time::Instant;

use roomkit_core::{ConnId, CoreConfig, Identity, Output, RoomRegistry};
use roomkit_protocol::ops::{CreateRoom, FetchRoomMembers, JoinChatroom, JoinRoom, Request, Response};

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000, 5_000, 10_000, 50_000] } else { sizes };
    for n in sizes {
        storm(n);
    }
}

/// Drains the registry; returns (replies, deliveries counted per recipient).
fn drain(reg: &mut RoomRegistry, now: u64) -> (Vec<Response>, u64) {
    let _ = reg.take_commit();
    reg.handle_commit(Ok(()));
    let (mut replies, mut delivered) = (Vec::new(), 0);
    while let Some(out) = reg.poll_output() {
        match out {
            Output::Reply { result, .. } => replies.push(result.expect("success")),
            Output::Deliver { audience, .. } => delivered += audience.len() as u64,
            Output::History { .. } | Output::Roster { .. } | Output::RoomEnded { .. } => {}
        }
    }
    reg.handle_timeout(now);
    while let Some(out) = reg.poll_output() {
        if let Output::Deliver { audience, .. } = out {
            delivered += audience.len() as u64;
        }
    }
    (replies, delivered)
}

fn storm(n: usize) {
    let mut reg = RoomRegistry::new(CoreConfig::default());
    let owner = Identity::unrestricted("owner".parse().unwrap());
    let create = CreateRoom {
        room_uuid: "live".parse().unwrap(),
        room_name: "Live".into(),
        template_id: None,
        max_members: None,
        password: None,
        initial_room_properties: Default::default(),
        enable_chatroom: true,
    };
    let mut now = 1_000_000;
    reg.handle_request(now, ConnId(0), &owner, 0, Request::CreateRoom(create));
    drain(&mut reg, now);
    let users: Vec<Identity> =
        (0..n).map(|i| Identity::unrestricted(format!("u{i}").parse().unwrap())).collect();
    let started = Instant::now();
    let mut delivered = 0;
    let mut lap = Instant::now();
    let mut laps = Vec::new();
    for (i, id) in users.iter().enumerate() {
        now += 1; // a join storm of 1000 joins per second
        let join = JoinRoom {
            room_uuid: "live".parse().unwrap(),
            user_name: format!("user {i}"),
            role: Default::default(),
            avatar: None,
            password: None,
            initial_my_properties: Default::default(),
            resume: false,
        };
        reg.handle_request(now, ConnId(i as u64 + 1), id, 1, Request::JoinRoom(join));
        let chat = JoinChatroom { room_uuid: "live".parse().unwrap(), history_count: None };
        reg.handle_request(now, ConnId(i as u64 + 1), id, 2, Request::JoinChatroom(chat));
        delivered += drain(&mut reg, now).1;
        if (i + 1) % 1000 == 0 {
            laps.push(lap.elapsed().as_secs_f64() * 1000.0);
            lap = Instant::now();
        }
    }
    let joined = started.elapsed();
    let paged = Instant::now();
    let (mut seen, mut cursor) = (0, None);
    loop {
        let fetch = FetchRoomMembers { room_uuid: "live".parse().unwrap(), cursor, limit: Some(100) };
        reg.handle_request(now, ConnId(1), &users[0], 3, Request::FetchRoomMembers(fetch));
        let (replies, _) = drain(&mut reg, now);
        let Some(Response::FetchRoomMembers(page)) = replies.into_iter().next() else { panic!("no page") };
        seen += page.members.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, n);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l[6..].trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let (first, last) = (laps.first().copied().unwrap_or(0.0), laps.last().copied().unwrap_or(0.0));
    println!(
        "{n:>6} members: joined in {:>7.1} ms; per 1000 joins: first {first:.1} ms, last {last:.1} ms; \
         events delivered per join {:.1}; all {n} paged (100 per page) in {:.1} ms; process RSS {rss}",
        joined.as_secs_f64() * 1000.0,
        delivered as f64 / n as f64,
        paged.elapsed().as_secs_f64() * 1000.0,
    );
}
