//! Connection-level behaviour: login, malformed frames, identity, slow consumers.

use std::time::Duration;

use roomkit_client::JoinRoomOptions;
use roomkit_core::{transport::TransportError, MessageRate};
use roomkit_protocol::{codec, Code, Event};
use roomkit_server::{RateLimit, ServerConfig};
use serde_json::json;

use crate::{expect_code, join_params, start_chatroom, Harness, Member, RawClient, Seen, TransportOptions};

/// Before login every request is `UNAUTHENTICATED` (the id is echoed); afterwards the same
/// connection works. The SDK refuses to join before login, and an empty token is refused.
pub async fn requests_before_login_are_refused<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut raw = h.raw_client().await;
    for frame in [
        json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"}),
        json!({"op": "create_room", "room_uuid": "r", "room_name": "R"}),
        json!({"op": "ping"}),
    ] {
        let r = raw.request(frame).await;
        assert_eq!(r.code, Code::UNAUTHENTICATED, "{}", r.msg);
    }
    raw.login("eve").await;
    raw.request_ok(json!({"op": "ping"})).await;
    let r = raw.request(json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    assert_eq!(r.code, Code::ROOM_NOT_EXIST, "{}", r.msg);

    let kit = h.connect().await;
    let params = join_params("r", "eve");
    expect_code(
        kit.room_service().join_room(params, JoinRoomOptions::default()).await,
        Code::UNAUTHENTICATED,
    );
    expect_code(kit.login("eve", "").await, Code::UNAUTHENTICATED);
    assert_eq!(kit.user_uuid(), None);
    kit.login("eve", "dev").await.expect("login after a refused one");
    h.stop().await;
}

/// A frame that is not JSON (or lacks `id`/`op`) is answered with `MALFORMED_FRAME` (with
/// the id when it could be read) and the connection stays usable.
pub async fn malformed_frames_are_answered_and_the_connection_survives<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut raw = h.raw_client().await;
    for (frame, id) in [(&b"not json"[..], None), (br#"{"op":"ping"}"#, None), (br#"{"id":4}"#, Some(4))] {
        raw.send_bytes(frame.to_vec()).await;
        let r = raw.response().await;
        assert_eq!(
            (r.id, r.code),
            (id, Code::MALFORMED_FRAME),
            "{:?}: {}",
            String::from_utf8_lossy(frame),
            r.msg
        );
    }
    raw.login("eve").await;
    raw.send_bytes(&b"{\"id\": 9, \"op\""[..]).await;
    assert_eq!(raw.response().await.code, Code::MALFORMED_FRAME);
    raw.request_ok(json!({"op": "ping"})).await;
    h.stop().await;
}

/// An unknown `op` is `UNKNOWN_OPERATION`, naming it; a bad field is `BAD_REQUEST`, naming
/// the field. The connection stays usable.
pub async fn unknown_operations_are_refused<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut raw = h.raw_client().await;
    raw.login("eve").await;
    let r = raw.request(json!({"op": "fly", "room_uuid": "r"})).await;
    assert_eq!(r.code, Code::UNKNOWN_OPERATION);
    assert!(r.msg.contains("fly"), "{}", r.msg);
    let r = raw.request(json!({"op": "join_room", "room_uuid": "no spaces", "user_name": "Eve"})).await;
    assert_eq!(r.code, Code::BAD_REQUEST);
    assert!(r.msg.contains("room_uuid"), "{}", r.msg);
    let r = raw.request(json!({"op": "join_room", "room_uuid": "r"})).await;
    assert_eq!(r.code, Code::BAD_REQUEST);
    assert!(r.msg.contains("user_name"), "{}", r.msg);
    raw.request_ok(json!({"op": "ping"})).await;
    h.stop().await;
}

/// A connection that does not log in within `login_timeout` is closed with
/// `UNAUTHENTICATED`; one that logged in stays open past it.
pub async fn connections_that_never_log_in_are_closed<H: Harness>() {
    let mut config = ServerConfig::default();
    config.login_timeout = Duration::from_millis(200);
    let h = H::start(config).await;
    // Should the machine stall past the login timeout before the login is read, the
    // connection is rightly closed: try again.
    let mut logged_in = None;
    for _ in 0..5 {
        let mut raw = h.raw_client().await;
        raw.send_json(json!({"id": 1, "op": "login", "account_id": "eve", "token": "x"})).await;
        if let Ok(frame) = raw.recv_bytes().await {
            match codec::decode_server_frame(&frame).expect("decodable") {
                codec::ServerFrame::Response(r) if r.code == Code::SUCCESS => {
                    logged_in = Some(raw);
                    break;
                }
                other => panic!("unexpected answer to login: {other:?}"),
            }
        }
    }
    let mut logged_in = logged_in.expect("a login within the login timeout");

    let mut silent = h.raw_client().await;
    match silent.read_to_end().await {
        (frames, TransportError::Closed(Some(reason))) if frames.is_empty() => {
            assert_eq!(reason.code, Code::UNAUTHENTICATED, "{reason}")
        }
        other => panic!("a silent connection should be closed with UNAUTHENTICATED, got {other:?}"),
    }
    // `logged_in` connected before `silent`, so its login timeout has passed too.
    logged_in.request_ok(json!({"op": "ping"})).await;
    h.stop().await;
}

/// A second login on the same connection is `ALREADY_LOGGED_IN`, and the first identity stays.
pub async fn logging_in_twice_is_refused<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut raw = h.raw_client().await;
    raw.login("eve").await;
    let r = raw.request(json!({"op": "login", "account_id": "mallory", "token": "x"})).await;
    assert_eq!(r.code, Code::ALREADY_LOGGED_IN, "{}", r.msg);
    let r = raw.request_ok(json!({"op": "create_room", "room_uuid": "r", "room_name": "R"})).await;
    let data = r.data.expect("create_room data");
    let created: serde_json::Value = serde_json::from_str(data.get()).expect("JSON");
    assert_eq!(created["room"]["creator"], "eve");

    let kit = h.client("alice").await;
    expect_code(kit.login("bob", "dev").await, Code::ALREADY_LOGGED_IN);
    assert_eq!(kit.user_uuid().map(|u| u.to_string()).as_deref(), Some("alice"));
    h.stop().await;
}

/// Identity comes from login only: fields naming another user in a request's payload are
/// ignored, and the message arrives from the logged-in account with its own name.
pub async fn identity_comes_from_login_not_from_the_payload<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    let mut eve = h.raw_client().await;
    eve.login("eve").await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve", "account_id": "bob", "user_uuid": "bob"}))
        .await;
    eve.request_ok(json!({"op": "join_chatroom", "room_uuid": "r", "user_uuid": "bob"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.expect(Seen::JoinChatroom("eve".into())).await;
    }
    let r = eve
        .request_ok(json!({
            "op": "send_text_message", "room_uuid": "r", "text": "it's me, bob",
            "from_user_uuid": "bob", "from_nick": "Bob", "seq": 999, "time": 1,
        }))
        .await;
    let data: serde_json::Value = serde_json::from_str(r.data.expect("data").get()).expect("JSON");
    assert_eq!(data["message"]["from_user_uuid"], "eve");
    for m in &mut ms {
        let got = m.messages(1).await.pop().expect("one");
        assert_eq!((got.from_user_uuid.as_str(), got.from_nick.as_str()), ("eve", "Eve"));
        assert_eq!((got.seq, got.text()), (1, Some("it's me, bob")));
        assert_ne!(got.time, 1);
        m.assert_quiet().await;
    }
    assert!(ms[1].ctx.get_member("bob").is_some_and(|b| b.is_in_chatroom));
    h.stop().await;
}

/// The chatroom text of the slow-consumer cases: large, so that transports with big
/// buffers fill them in a reasonable number of messages.
fn bulky(n: u64) -> String {
    format!("{n:06} {}", "x".repeat(4000))
}

/// Most messages sent before a never-reading client must have been closed.
const MAX_MESSAGES_TO_OVERFLOW: u64 = 5000;

/// Starts a server whose send queues hold 8 frames, with alice (sender), bob and carol
/// (readers) and a raw client "slow" in the chatroom. Slow stops reading; alice sends in
/// lock step with bob and carol (each message is read by both before the next is sent) until
/// both have seen slow leave. Returns the server, the members, slow, and the number sent.
async fn overflow_a_slow_consumer<H: Harness>(mut config: ServerConfig) -> (H, Vec<Member>, RawClient, u64) {
    config.send_queue_frames = 8;
    // The closed connection leaves at once, not after a reconnect grace period.
    config.core.reconnect_grace_ms = 0;
    // Alice sends as fast as the readers keep up; transports with big buffers need many
    // messages, which the default rate limit would refuse.
    config.rate_limit = RateLimit { per_second: 1_000_000, burst: 1_000_000, close_after: u32::MAX };
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    let h = H::start_with(config, TransportOptions { small_buffers: true }).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob", "carol"]).await;
    let mut slow = h.raw_client().await;
    slow.login("slow").await;
    slow.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Slow"})).await;
    slow.request_ok(json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("slow".into())).await;
        m.expect(Seen::JoinChatroom("slow".into())).await;
    }
    // From here on, slow reads nothing.

    let (alice, readers) = ms.split_first_mut().expect("members");
    let mut gone = [(false, false); 2]; // (left the chatroom, left the room), per reader
    let mut sent = 0;
    while !gone.iter().all(|g| g.1) {
        assert!(sent < MAX_MESSAGES_TO_OVERFLOW, "slow was never closed after {sent} messages");
        sent += 1;
        let message = alice.chat().send_broadcast_text_message(&bulky(sent)).await.expect("broadcast");
        assert_eq!(message.seq, sent);
        for (reader, gone) in readers.iter_mut().zip(&mut gone) {
            loop {
                match reader.next_seen().await {
                    Seen::Message { seq, .. } if seq == sent => break,
                    Seen::LeaveChatroom(u) if u == "slow" && !gone.0 => gone.0 = true,
                    Seen::LeaveRoom(u) if u == "slow" && gone.0 && !gone.1 => gone.1 = true,
                    other => {
                        panic!("{} expected message {sent} or slow leaving, got {other:?}", reader.uuid())
                    }
                }
            }
        }
    }
    alice.expect(Seen::LeaveChatroom("slow".into())).await;
    alice.expect(Seen::LeaveRoom("slow".into())).await;
    (h, ms, slow, sent)
}

/// A client that stops reading is closed with `SLOW_CONSUMER` once its send queue is full:
/// the room sees it leave, the other members keep receiving every message, and the client
/// itself, once it reads again, gets a prefix of the messages and then the close reason.
pub async fn slow_consumer_is_closed_without_holding_up_the_room<H: Harness>() {
    let (h, mut ms, mut slow, sent) = overflow_a_slow_consumer::<H>(ServerConfig::default()).await;
    for i in 1..=3 {
        let m = ms[0].chat().send_broadcast_text_message(&format!("after {i}")).await.expect("broadcast");
        assert_eq!(m.seq, sent + i);
        for reader in &mut ms[1..] {
            reader.expect(Seen::message(&m)).await;
        }
    }
    for m in &mut ms {
        m.assert_quiet().await;
        assert!(m.ctx.get_member("slow").is_none());
    }

    // Slow drains: a prefix of the messages in order, then the close reason; the backlog
    // beyond the queue was dropped.
    let (frames, end) = slow.read_to_end().await;
    let mut seqs = Vec::new();
    for frame in frames {
        match frame {
            codec::ServerFrame::Event(Event::ChatroomMessagesReceived { messages, .. }) => {
                seqs.extend(messages.iter().map(|m| m.seq));
            }
            other => panic!("slow received an unexpected frame {other:?}"),
        }
    }
    match end {
        TransportError::Closed(Some(reason)) => assert_eq!(reason.code, Code::SLOW_CONSUMER, "{reason}"),
        other => panic!("slow's connection should end with SLOW_CONSUMER, got {other:?}"),
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "slow must get a prefix, in order");
    assert!((seqs.len() as u64) < sent, "slow's backlog should have been dropped ({} of {sent})", seqs.len());
    h.stop().await;
}

/// A client closed as a slow consumer that never reads again does not keep server resources:
/// shutting down does not wait for it (here `shutdown_grace` is far longer than the bound).
pub async fn stalled_slow_consumer_does_not_hold_up_shutdown<H: Harness>() {
    let mut config = ServerConfig::default();
    config.shutdown_grace = Duration::from_secs(600);
    let (h, ms, slow, _) = overflow_a_slow_consumer::<H>(config).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), h.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for a closed slow consumer that never reads");
    drop((ms, slow));
}

/// Most history requests a client that reads nothing may send before it must have been closed.
const MAX_REQUESTS_TO_OVERFLOW: u64 = 400;

/// A client that asks for history pages and reads none of the answers costs the server a
/// bounded amount: its send queue is bounded in bytes (here 64 KiB, about three pages of
/// five 4 KB messages), so it is closed with `SLOW_CONSUMER` after a few dozen unread pages at
/// most — not after `send_queue_frames` (4096) of them, some 80 MB — and the room's other
/// members see it leave and go on chatting.
pub async fn a_client_that_does_not_read_its_history_is_cut_off_by_the_byte_bound<H: Harness>() {
    let mut config = ServerConfig::default();
    config.send_queue_bytes = 64 * 1024;
    config.core.reconnect_grace_ms = 0;
    config.rate_limit = RateLimit { per_second: 1_000_000, burst: 1_000_000, close_after: u32::MAX };
    let h = H::start_with(config, TransportOptions { small_buffers: true }).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    for n in 1..=5 {
        let m = ms[0].chat().send_broadcast_text_message(&bulky(n)).await.expect("broadcast");
        ms[1].expect(Seen::message(&m)).await;
    }
    let mut flood = h.raw_client().await;
    flood.login("flood").await;
    flood.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Flood"})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("flood".into())).await;
    }
    // From here on, flood only asks.
    let mut asked = 0;
    for id in 100..100 + MAX_REQUESTS_TO_OVERFLOW {
        let fetch = json!({"id": id, "op": "fetch_chatroom_history", "room_uuid": "r", "limit": 5});
        if !flood.try_send_json(fetch).await {
            break;
        }
        asked += 1;
    }
    for m in &mut ms {
        m.expect(Seen::LeaveRoom("flood".into())).await;
    }
    let m = ms[0].chat().send_broadcast_text_message("still here").await.expect("broadcast");
    ms[1].expect(Seen::message(&m)).await;

    let (frames, end) = flood.read_to_end().await;
    match end {
        TransportError::Closed(Some(reason)) => assert_eq!(reason.code, Code::SLOW_CONSUMER, "{reason}"),
        other => panic!("flood's connection should end with SLOW_CONSUMER, got {other:?}"),
    }
    let mut ids = Vec::new();
    for frame in frames {
        match frame {
            codec::ServerFrame::Response(r) if matches!(r.code, Code::SUCCESS | Code::TOO_MANY_PENDING) => {
                ids.extend(r.id)
            }
            other => panic!("flood received an unexpected frame {other:?}"),
        }
    }
    // History answers are read off the shard and may overtake each other: match them by id.
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.iter().all(|id| (100..100 + asked).contains(id)), "answers to what flood asked: {ids:?}");
    assert!((ids.len() as u64) < asked, "flood's unread answers were dropped ({} of {asked})", ids.len());
    h.stop().await;
}
