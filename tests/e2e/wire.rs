//! Bad input over a real socket. A raw WebSocket client (or a plain TCP one) misbehaves in
//! one way per test, against a server behind the binary's HTTP/WebSocket front; each test
//! checks the answer (the response code, or the WebSocket close code and the `"<code>
//! <reason>"` close text) and then that nobody else noticed: the members already in the
//! chatroom keep receiving messages, and new connections are still accepted and served.

use std::time::Duration;

use roomkit_protocol::Code;
use roomkit_server::{RateLimit, ServerConfig};
use roomkit_tests::{
    http, join, nick, start_chatroom, within,
    ws::{code_of, msg_of, Received, WsClient},
    Harness, Member, Seen, WsFront, WsHarness,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    protocol::{
        frame::{
            coding::{CloseCode, Data, OpCode},
            Frame,
        },
        CloseFrame,
    },
    Message,
};

/// The room every test's members are in.
const ROOM: &str = "r";

/// A server with alice (the room's host) and bob in room [`ROOM`] and its chatroom, and
/// the checks that they are unaffected by whatever a misbehaving client does.
struct Fixture {
    h: WsHarness,
    /// The members: the first sends, the others receive.
    ms: Vec<Member>,
    newcomers: u32,
}

impl Fixture {
    /// Starts the server; a closed connection leaves its rooms at once (no reconnect grace
    /// period), so that the members see a misbehaving client go when it is closed.
    async fn start(mut config: ServerConfig, front: WsFront) -> Self {
        config.core.reconnect_grace_ms = 0;
        let h = WsHarness::start_front(config, front).await;
        let ms = start_chatroom(&h, ROOM, &["alice", "bob"]).await;
        Self { h, ms, newcomers: 0 }
    }

    async fn start_default() -> Self {
        Self::start(ServerConfig::default(), WsFront::default()).await
    }

    async fn raw(&self) -> WsClient {
        WsClient::connect(self.h.url()).await
    }

    /// A raw client logged in as `account`, in the room and its chatroom; the members have
    /// seen it arrive.
    async fn raw_member(&mut self, account: &str) -> WsClient {
        let mut raw = self.raw().await;
        raw.login(account).await;
        raw.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": nick(account)})).await;
        raw.request_ok(json!({"op": "join_chatroom", "room_uuid": ROOM})).await;
        for m in &mut self.ms {
            m.expect(Seen::JoinRoom(account.into())).await;
            m.expect(Seen::JoinChatroom(account.into())).await;
        }
        raw.take_events();
        raw
    }

    /// Asserts that every member sees `account` leave the chatroom, then the room.
    async fn saw_leave(&mut self, account: &str) {
        for m in &mut self.ms {
            m.expect(Seen::LeaveChatroom(account.into())).await;
            m.expect(Seen::LeaveRoom(account.into())).await;
        }
    }

    /// The first member broadcasts `text`; every other member receives exactly it.
    async fn broadcast(&mut self, text: &str) {
        let (sender, receivers) = self.ms.split_first_mut().expect("members");
        let sent = sender.chat().send_broadcast_text_message(text).await.expect("broadcast");
        for r in receivers {
            r.expect(Seen::message(&sent)).await;
        }
    }

    /// Nobody else noticed: the members still get messages, and a new client connects, logs
    /// in, joins the room and the chatroom, and gets messages too.
    async fn assert_unaffected(&mut self, after: &str) {
        self.broadcast(&format!("still here after {after}")).await;
        self.newcomers += 1;
        let account = format!("newcomer{}", self.newcomers);
        let kit = self.h.client(&account).await;
        let mut newcomer = join(&kit, ROOM).await;
        newcomer.chat().join_chatroom().await.expect("the newcomer joins the chatroom");
        newcomer.drain().await;
        for m in &mut self.ms {
            m.expect(Seen::JoinRoom(account.clone())).await;
            m.expect(Seen::JoinChatroom(account.clone())).await;
        }
        self.ms.push(newcomer);
        self.broadcast(&format!("welcome {account}, after {after}")).await;
        for m in &mut self.ms {
            m.assert_quiet().await;
        }
    }

    async fn stop(self) {
        let Fixture { h, ms, .. } = self;
        h.stop().await;
        drop(ms);
    }
}

/// Asserts that `response` failed with `code`, for request `id` (`Value::Null`: none), and
/// that its message contains `mentions`.
#[track_caller]
fn assert_error(response: &Value, id: Value, code: Code, mentions: &str) {
    assert_eq!(response["id"], id, "wrong id: {response}");
    assert_eq!(code_of(response), code, "wrong code: {response}");
    assert!(response.get("data").is_none(), "an error response carries no data: {response}");
    assert!(msg_of(response).contains(mentions), "the message should mention {mentions:?}: {response}");
}

/// Asserts that `end` is a close frame with WebSocket close code `code` and a reason text
/// `"<roomkit code> ..."`.
#[track_caller]
fn assert_closed(end: &Received, code: CloseCode, roomkit: Code) {
    let prefix = format!("{} ", roomkit.0);
    match end {
        Received::Close(Some(CloseFrame { code: got, reason })) => {
            assert_eq!(*got, code, "wrong close code; reason {reason:?}");
            assert!(
                reason.as_str().starts_with(&prefix),
                "close reason {reason:?} should start with {prefix:?}"
            );
        }
        other => panic!("expected a close frame {code:?} \"{prefix}...\", got {other:?}"),
    }
}

/// Text that is not JSON is answered `MALFORMED_FRAME` with a null id, before login as
/// after, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_text_is_a_malformed_frame_with_a_null_id() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    raw.send_text("hello").await;
    assert_error(&raw.response().await, Value::Null, Code::MALFORMED_FRAME, "");
    raw.login("eve").await;
    for text in ["not json", "[1,2]", r#"{"id":"x","op":"ping"}"#, r#"{"op":"ping"}"#] {
        raw.send_text(text).await;
        assert_error(&raw.response().await, Value::Null, Code::MALFORMED_FRAME, "");
    }
    raw.request_ok(json!({"op": "ping"})).await;
    f.assert_unaffected("non-JSON text").await;
    f.stop().await;
}

/// A binary message is answered `UNSUPPORTED_FRAME` with a null id; the connection stays
/// open and its member keeps receiving the chatroom's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_unsupported_and_the_connection_stays_usable() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw_member("eve").await;
    raw.send_binary(br#"{"id":1,"op":"ping"}"#.to_vec()).await;
    assert_error(&raw.response().await, Value::Null, Code::UNSUPPORTED_FRAME, "binary");
    raw.request_ok(json!({"op": "ping"})).await;

    let sent = f.ms[0].chat().send_broadcast_text_message("to eve too").await.expect("broadcast");
    f.ms[1].expect(Seen::message(&sent)).await;
    let event = raw.recv_json().await;
    assert_eq!(event["event"], "chatroom_messages_received", "{event}");
    assert_eq!(event["messages"][0]["text"], "to eve too", "{event}");
    raw.request_ok(json!({"op": "send_text_message", "room_uuid": ROOM, "text": "eve is fine"})).await;
    for m in &mut f.ms {
        let got = m.messages(1).await.pop().expect("one");
        assert_eq!((got.from_user_uuid.as_str(), got.text()), ("eve", Some("eve is fine")));
    }
    f.assert_unaffected("a binary frame").await;
    f.stop().await;
}

/// A message over `max_frame_bytes` is answered `FRAME_TOO_LARGE` (null id) and the
/// connection is closed with WebSocket code 1009 and reason `"1003 ..."`; the room sees the
/// member leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_size_limit_closes_the_connection() {
    let mut front = WsFront::default();
    front.ws.max_frame_bytes = 1024;
    let mut f = Fixture::start(ServerConfig::default(), front).await;
    let mut raw = f.raw_member("eve").await;
    // Just under the limit is fine.
    let fits = json!({"id": 50, "op": "ping", "pad": "x".repeat(900)}).to_string();
    assert!(fits.len() <= 1024);
    raw.send_text(fits).await;
    assert_eq!(code_of(&raw.response().await), Code::SUCCESS);

    let text = "y".repeat(2000);
    raw.send_json(&json!({"id": 51, "op": "send_text_message", "room_uuid": ROOM, "text": text})).await;
    let (frames, end) = raw.read_to_close().await;
    let responses: Vec<&Value> = frames.iter().filter(|f| f.get("event").is_none()).collect();
    assert_eq!(responses.len(), 1, "one answer before the close: {frames:?}");
    assert_error(responses[0], Value::Null, Code::FRAME_TOO_LARGE, "");
    assert_closed(&end, CloseCode::Size, Code::FRAME_TOO_LARGE);
    f.saw_leave("eve").await;
    f.assert_unaffected("an oversized frame").await;
    f.stop().await;
}

/// A text message that is not valid UTF-8 is answered `MALFORMED_FRAME` (null id) and the
/// connection is closed with reason `"1000 ..."`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_closes_the_connection() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw_member("eve").await;
    let frame = Frame::message(
        b"{\"id\":1,\"op\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    raw.send_message(Message::Frame(frame)).await;
    let (frames, end) = raw.read_to_close().await;
    let responses: Vec<&Value> = frames.iter().filter(|f| f.get("event").is_none()).collect();
    assert_eq!(responses.len(), 1, "one answer before the close: {frames:?}");
    assert_error(responses[0], Value::Null, Code::MALFORMED_FRAME, "UTF-8");
    assert_closed(&end, CloseCode::Library(4000), Code::MALFORMED_FRAME);
    f.saw_leave("eve").await;
    f.assert_unaffected("invalid UTF-8").await;
    f.stop().await;
}

/// An unknown `op` is `UNKNOWN_OPERATION` with the request's id, naming the operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_operation_is_refused_with_its_id() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    raw.login("eve").await;
    raw.send_text(r#"{"id": 77, "op": "fly", "room_uuid": "r"}"#).await;
    assert_error(&raw.response().await, json!(77), Code::UNKNOWN_OPERATION, "fly");
    raw.send_text(r#"{"id": 78}"#).await;
    assert_error(&raw.response().await, json!(78), Code::MALFORMED_FRAME, "op");
    raw.request_ok(json!({"op": "ping"})).await;
    f.assert_unaffected("an unknown operation").await;
    f.stop().await;
}

/// A missing or mistyped parameter is `BAD_REQUEST` with the id, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_mistyped_fields_are_bad_requests_naming_the_field() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    raw.login("eve").await;
    let cases = [
        (json!({"op": "join_room", "room_uuid": ROOM}), "user_name"),
        (json!({"op": "join_room", "user_name": "Eve"}), "room_uuid"),
        (json!({"op": "join_room", "room_uuid": ROOM, "user_name": 5}), "user_name"),
        (json!({"op": "join_room", "room_uuid": ["r"], "user_name": "Eve"}), "room_uuid"),
        (json!({"op": "create_room", "room_uuid": "r2", "room_name": true}), "room_name"),
        (
            json!({"op": "create_room", "room_uuid": "r2", "room_name": "R", "max_members": "ten"}),
            "max_members",
        ),
        (json!({"op": "send_text_message", "room_uuid": ROOM, "text": 42}), "text"),
        (json!({"op": "send_text_message", "room_uuid": ROOM}), "text"),
    ];
    for (frame, field) in cases {
        let what = frame.to_string();
        let r = raw.request(frame).await;
        assert_eq!(code_of(&r), Code::BAD_REQUEST, "{what}: {r}");
        assert!(msg_of(&r).contains(&format!("`{field}`")), "{what}: the message should name `{field}`: {r}");
    }
    raw.request_ok(json!({"op": "ping"})).await;
    f.assert_unaffected("bad requests").await;
    f.stop().await;
}

/// Ids are at most 64 characters and user names at most `max_user_name_chars` (64): one
/// more is `BAD_REQUEST` naming the field; exactly the limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_ids_and_names_are_bad_requests_naming_the_field() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    raw.login("eve").await;
    let (id64, id65) = ("a".repeat(64), "a".repeat(65));
    let r = raw.request(json!({"op": "create_room", "room_uuid": id65, "room_name": "Long"})).await;
    assert_eq!(code_of(&r), Code::BAD_REQUEST, "{r}");
    assert!(msg_of(&r).contains("`room_uuid`"), "{r}");
    let r = raw.request(json!({"op": "join_room", "room_uuid": id65, "user_name": "Eve"})).await;
    assert_eq!(code_of(&r), Code::BAD_REQUEST, "{r}");
    assert!(msg_of(&r).contains("`room_uuid`"), "{r}");
    raw.request_ok(json!({"op": "create_room", "room_uuid": id64, "room_name": "Long"})).await;

    let (name64, name65) = ("é".repeat(64), "é".repeat(65));
    let r = raw.request(json!({"op": "join_room", "room_uuid": id64, "user_name": name65})).await;
    assert_eq!(code_of(&r), Code::BAD_REQUEST, "{r}");
    assert!(msg_of(&r).contains("`user_name`"), "{r}");
    let r = raw.request(json!({"op": "join_room", "room_uuid": ROOM, "user_name": name65})).await;
    assert_eq!(code_of(&r), Code::BAD_REQUEST, "{r}");
    let joined = raw.request_ok(json!({"op": "join_room", "room_uuid": id64, "user_name": name64})).await;
    assert_eq!(joined["data"]["room"]["room_uuid"], json!(id64), "{joined}");
    f.assert_unaffected("over-long ids and names").await;
    f.stop().await;
}

/// Before login every request is `UNAUTHENTICATED` with its id; logging in then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_unauthenticated() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    for frame in [
        json!({"op": "ping"}),
        json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Eve"}),
        json!({"op": "send_text_message", "room_uuid": ROOM, "text": "hi"}),
    ] {
        let r = raw.request(frame).await;
        assert_eq!(code_of(&r), Code::UNAUTHENTICATED, "{r}");
    }
    raw.login("eve").await;
    raw.request_ok(json!({"op": "ping"})).await;
    f.assert_unaffected("requests before login").await;
    f.stop().await;
}

/// A second login on a connection is `ALREADY_LOGGED_IN`; the first identity stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_is_already_logged_in() {
    let mut f = Fixture::start_default().await;
    let mut raw = f.raw().await;
    raw.login("eve").await;
    let r = raw.request(json!({"op": "login", "account_id": "mallory", "token": "x"})).await;
    assert_eq!(code_of(&r), Code::ALREADY_LOGGED_IN, "{r}");
    raw.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Eve"})).await;
    for m in &mut f.ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
    }
    f.assert_unaffected("a second login").await;
    f.stop().await;
}

/// Requests beyond the rate limit are answered `RATE_LIMITED` (with their ids); a client
/// that keeps going is closed with `"1004 ..."`, and the room sees it leave. The flood is
/// sent in lock step (each request after the previous answer), so nothing is left unread
/// when the server closes; it runs until the close, bounded in count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_rate_limited_then_closed() {
    let mut config = ServerConfig::default();
    config.rate_limit = RateLimit { per_second: 5, burst: 10, close_after: 20 };
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut raw = f.raw_member("eve").await;
    let mut limited = 0;
    let mut allowed = 0;
    let end = 'flood: {
        for id in 1000..101_000u64 {
            raw.send_json(&json!({"id": id, "op": "ping"})).await;
            match raw.next().await {
                Received::Json(r) => {
                    assert_eq!(r["id"], json!(id), "{r}");
                    match code_of(&r) {
                        Code::SUCCESS => allowed += 1,
                        Code::RATE_LIMITED => {
                            assert!(msg_of(&r).contains("per second"), "{r}");
                            limited += 1;
                        }
                        other => panic!("unexpected answer {other:?} to a ping: {r}"),
                    }
                }
                end => break 'flood end,
            }
        }
        panic!("not closed after {allowed} allowed and {limited} refused pings");
    };
    assert!(limited >= 19, "closed after only {limited} refusals ({allowed} allowed)");
    assert_closed(&end, CloseCode::Library(4000), Code::RATE_LIMITED);
    f.saw_leave("eve").await;
    f.assert_unaffected("a request flood").await;
    f.stop().await;
}

/// A flood sent all at once, without reading: the server closes the connection for the rate
/// limit while most of the flood is still unread, and yet every answer queued before the
/// close, then the close frame (4000, `"1004 ..."`), reach the client — the server keeps
/// reading and discarding input while it closes, so the close is not a TCP reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_close_with_unread_input_still_delivers_the_close_frame() {
    let mut config = ServerConfig::default();
    config.rate_limit = RateLimit { per_second: 5, burst: 10, close_after: 20 };
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut raw = f.raw_member("eve").await;
    for id in 0..2000u64 {
        raw.send_json(&json!({"id": id, "op": "ping"})).await;
    }
    let (answers, end) = raw.read_to_close().await;
    let ids: Vec<u64> = answers.iter().map(|a| a["id"].as_u64().expect("an id")).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "answers in order, none lost");
    let limited = answers.iter().filter(|a| code_of(a) == Code::RATE_LIMITED).count();
    assert!(limited >= 20, "only {limited} refusals arrived before the close: {answers:?}");
    assert_closed(&end, CloseCode::Library(4000), Code::RATE_LIMITED);
    f.saw_leave("eve").await;
    f.assert_unaffected("a flood closed with unread input").await;
    f.stop().await;
}

/// Sends `frame` in lock step (each after the previous answer) until the connection
/// closes; returns the answers' codes and how it ended. Panics if it is still open after
/// `max` frames.
async fn flood_until_closed(
    raw: &mut WsClient,
    frame: impl Fn() -> tokio_tungstenite::tungstenite::Message,
    max: usize,
) -> (Vec<(Value, Code)>, Received) {
    let mut answers = Vec::new();
    for _ in 0..max {
        raw.send_message(frame()).await;
        match raw.next().await {
            Received::Json(r) => {
                let code = code_of(&r);
                answers.push((r["id"].clone(), code));
            }
            end => return (answers, end),
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for (_, code) in &answers {
        *counts.entry(*code).or_insert(0) += 1;
    }
    panic!("still open after {max} frames; answers by code: {counts:?}");
}

/// Frames the server cannot read count toward the rate limit too: a flood of non-JSON text
/// is answered `MALFORMED_FRAME`, then `RATE_LIMITED` (null id), then closed with `"1004 ..."`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_frames_count_toward_the_rate_limit() {
    let mut config = ServerConfig::default();
    config.rate_limit = RateLimit { per_second: 5, burst: 10, close_after: 20 };
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut raw = f.raw_member("eve").await;
    let (answers, end) = flood_until_closed(&mut raw, || Message::text("not json"), 100_000).await;
    assert!(answers.iter().all(|(id, _)| id.is_null()), "{answers:?}");
    assert!(answers.iter().any(|(_, c)| *c == Code::MALFORMED_FRAME), "{answers:?}");
    let limited = answers.iter().filter(|(_, c)| *c == Code::RATE_LIMITED).count();
    assert!(limited >= 19, "closed after only {limited} refusals: {answers:?}");
    assert_closed(&end, CloseCode::Library(4000), Code::RATE_LIMITED);
    f.saw_leave("eve").await;
    f.assert_unaffected("a flood of unreadable frames").await;
    f.stop().await;
}

/// Binary messages are frames the server cannot read (protocol.md, section 4) and every
/// frame counts toward the rate limit: a flood of them must be refused and closed like any
/// other flood, or a client can keep the server answering `UNSUPPORTED_FRAME` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_count_toward_the_rate_limit() {
    let mut config = ServerConfig::default();
    config.rate_limit = RateLimit { per_second: 5, burst: 10, close_after: 20 };
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut raw = f.raw_member("eve").await;
    // Far more than the limit allows however slowly they are sent: 5 per second would take
    // 200 seconds to allow 1000 of them.
    let (answers, end) = flood_until_closed(&mut raw, || Message::binary(b"{}".to_vec()), 1000).await;
    let limited = answers.iter().filter(|(_, c)| *c == Code::RATE_LIMITED).count();
    assert!(limited >= 19, "closed after only {limited} refusals");
    assert_closed(&end, CloseCode::Library(4000), Code::RATE_LIMITED);
    f.saw_leave("eve").await;
    f.assert_unaffected("a flood of binary frames").await;
    f.stop().await;
}

/// Most bulky messages sent before a never-reading WebSocket client must have been closed
/// (the kernel's socket buffers hold a few megabytes on loopback).
const MAX_MESSAGES_TO_OVERFLOW: u64 = 20_000;

/// A member that joins the chatroom and never reads is closed once its send queue
/// overflows; the others see it leave and receive every message, in order. When it reads
/// again it finds a prefix of the messages, in order, then the end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_the_others_get_every_message() {
    let mut config = ServerConfig::default();
    config.send_queue_frames = 8;
    config.rate_limit = RateLimit { per_second: 1_000_000, burst: 1_000_000, close_after: u32::MAX };
    // The flood is the point: no message rate in the way.
    config.core.member_message_rate = roomkit_core::MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = roomkit_core::MessageRate::UNLIMITED;
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut slow = f.raw_member("slow").await;
    // From here on, slow reads nothing.

    let mut received = Vec::new();
    let mut sent = 0u64;
    let (alice, bob) = match &mut f.ms[..] {
        [alice, bob] => (alice, bob),
        _ => unreachable!("two members"),
    };
    let mut left = (false, false);
    while !left.1 {
        assert!(sent < MAX_MESSAGES_TO_OVERFLOW, "slow was never closed after {sent} messages");
        sent += 1;
        let text = format!("{sent:06} {}", "x".repeat(4000));
        let message = alice.chat().send_broadcast_text_message(&text).await.expect("broadcast");
        assert_eq!(message.seq, sent);
        loop {
            match bob.next_seen().await {
                Seen::Message { seq, from, text } if seq == sent => {
                    assert_eq!(from, "alice");
                    assert!(text.starts_with(&format!("{sent:06} ")));
                    received.push(seq);
                    break;
                }
                Seen::LeaveChatroom(u) if u == "slow" && !left.0 => left.0 = true,
                Seen::LeaveRoom(u) if u == "slow" && left.0 && !left.1 => left.1 = true,
                other => panic!("bob expected message {sent} or slow leaving, got {other:?}"),
            }
        }
    }
    assert_eq!(received, (1..=sent).collect::<Vec<_>>(), "bob must receive every message, in order");
    alice.expect(Seen::LeaveChatroom("slow".into())).await;
    alice.expect(Seen::LeaveRoom("slow".into())).await;
    f.assert_unaffected("a slow consumer").await;

    // Slow reads again: a prefix of the messages in order, then the end. The close frame
    // ("5002 ...") is sent only if the socket drains within the server's close timeout.
    let (frames, end) = slow.read_to_close().await;
    let mut seqs = Vec::new();
    for frame in &frames {
        assert_eq!(frame["event"], "chatroom_messages_received", "slow got an unexpected frame {frame}");
        seqs.extend(
            frame["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")),
        );
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "slow must get a prefix, in order");
    assert!((seqs.len() as u64) < sent, "slow's backlog should have been dropped ({} of {sent})", seqs.len());
    if let Received::Close(_) = end {
        assert_closed(&end, CloseCode::Library(4000), Code::SLOW_CONSUMER);
    }
    f.stop().await;
}

/// Reads from `stream` until the server closes it (end of stream or a reset); returns what
/// it sent.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    // Generous: the header timeout is 300 ms.
    if tokio::time::timeout(Duration::from_secs(30), read).await.is_err() {
        panic!("the server did not close {what}");
    }
    got
}

/// A TCP connection that sends nothing, or only part of an HTTP request head, is closed by
/// the server after the header timeout; meanwhile other clients connect and are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_header_timeout() {
    let front = WsFront { header_timeout: Duration::from_millis(300), ..WsFront::default() };
    let mut f = Fixture::start(ServerConfig::default(), front).await;
    let mut silent = within("a TCP connection", TcpStream::connect(f.h.addr())).await.expect("connect");
    let mut partial = within("a TCP connection", TcpStream::connect(f.h.addr())).await.expect("connect");
    partial
        .write_all(format!("GET /v1 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n", f.h.addr()).as_bytes())
        .await
        .expect("write a partial head");

    // Meanwhile, normal clients.
    f.assert_unaffected("half-open connections").await;
    assert_eq!(http::get(f.h.addr(), "/healthz").await.status, 200);

    let got = read_until_closed(&mut silent, "a connection that sent nothing").await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "unexpected answer: {got:?}");
    let got = read_until_closed(&mut partial, "a connection that sent a partial request head").await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "unexpected answer: {got:?}");
    f.assert_unaffected("half-open connections were closed").await;
    f.stop().await;
}

/// A keep-alive HTTP connection that sent one request and then nothing is closed after the
/// header timeout too: the next request head never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let front = WsFront { header_timeout: Duration::from_millis(300), ..WsFront::default() };
    let mut f = Fixture::start(ServerConfig::default(), front).await;
    let mut idle = within("a TCP connection", TcpStream::connect(f.h.addr())).await.expect("connect");
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", f.h.addr()).as_bytes())
        .await
        .expect("write a request");
    f.assert_unaffected("an idle keep-alive connection").await;
    let got = read_until_closed(&mut idle, "an idle keep-alive connection").await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "the request was answered first: {got:?}");
    f.stop().await;
}

/// A WebSocket client that never logs in is closed after `login_timeout` with
/// `"1100 ..."`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_never_comes_closes_the_connection() {
    let mut config = ServerConfig::default();
    // Short, but long enough for the fixture's own clients to log in on a busy machine.
    config.login_timeout = Duration::from_secs(1);
    let mut f = Fixture::start(config, WsFront::default()).await;
    let mut silent = f.raw().await;
    let (frames, end) = silent.read_to_close().await;
    assert!(frames.is_empty(), "nothing is sent before the close: {frames:?}");
    assert_closed(&end, CloseCode::Library(4000), Code::UNAUTHENTICATED);
    if let Received::Close(Some(frame)) = &end {
        assert!(frame.reason.as_str().contains("login"), "{frame:?}");
    }
    f.assert_unaffected("a connection that never logged in").await;
    f.stop().await;
}

/// Plain HTTP on the client port: `GET /v1` without the upgrade headers is 426 naming
/// WebSocket, `GET /healthz` is 200 "ok".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_client_port() {
    let mut f = Fixture::start_default().await;
    let r = http::get(f.h.addr(), "/v1").await;
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"), "{r:?}");
    // An upgrade request of the wrong WebSocket version is refused the same way.
    let r = http::send(
        f.h.addr(),
        http::Request::new("GET", "/v1")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade, close")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "8"),
    )
    .await;
    assert_eq!(r.status, 426, "{r:?}");
    let r = http::get(f.h.addr(), "/healthz").await;
    assert_eq!((r.status, r.text().trim()), (200, "ok"), "{r:?}");
    let r = http::get(f.h.addr(), "/v2").await;
    assert_eq!(r.status, 404, "{r:?}");
    f.assert_unaffected("plain HTTP requests").await;
    f.stop().await;
}

/// A send retried with the same `message_uuid` after the connection dropped (the answer
/// may or may not have been lost) is stored and delivered once: the retry's answer is the
/// stored message, and the others receive it exactly once. Another account reusing the id
/// is `BAD_REQUEST` naming `message_uuid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_a_dropped_connection_is_delivered_once() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let mut ms = start_chatroom(&h, ROOM, &["alice", "bob"]).await;
    let mut eve = WsClient::connect(h.url()).await;
    eve.login("eve").await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Eve"})).await;
    eve.request_ok(json!({"op": "join_chatroom", "room_uuid": ROOM})).await;
    for m in &mut ms {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.expect(Seen::JoinChatroom("eve".into())).await;
    }
    let send =
        json!({"op": "send_text_message", "room_uuid": ROOM, "message_uuid": "eve-42", "text": "once"});
    let mut first = send.clone();
    first["id"] = json!(1);
    eve.send_json(&first).await;
    // The connection drops without reading the answer.
    drop(eve);

    let mut eve = WsClient::connect(h.url()).await;
    eve.login("eve").await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Eve"})).await;
    let retry = eve.request_ok(send.clone()).await;
    let message = &retry["data"]["message"];
    assert_eq!((message["message_uuid"].as_str(), message["text"].as_str()), (Some("eve-42"), Some("once")));
    let again = eve.request_ok(send.clone()).await;
    assert_eq!(again["data"]["message"], *message, "a repeat returns the stored message");
    // The id is taken: other text under it is refused, not answered as stored.
    let other = eve
        .request(
            json!({"op": "send_text_message", "room_uuid": ROOM, "message_uuid": "eve-42", "text": "twice?"}),
        )
        .await;
    assert_eq!(code_of(&other), Code::BAD_REQUEST, "{other}");
    assert!(msg_of(&other).contains("message_uuid"), "{other}");
    for m in &mut ms {
        let got = m.messages(1).await.pop().expect("one");
        assert_eq!((got.message_uuid.as_str(), got.seq), ("eve-42", message["seq"].as_u64().expect("seq")));
        m.assert_quiet().await;
    }
    let mut mallory = WsClient::connect(h.url()).await;
    mallory.login("mallory").await;
    mallory.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Mallory"})).await;
    mallory.request_ok(json!({"op": "join_chatroom", "room_uuid": ROOM})).await;
    let reuse = mallory
        .request(json!({"op": "send_text_message", "room_uuid": ROOM, "message_uuid": "eve-42", "text": "mine now"}))
        .await;
    assert_eq!(code_of(&reuse), Code::BAD_REQUEST, "{reuse}");
    assert!(msg_of(&reuse).contains("message_uuid"), "{reuse}");
    for m in &mut ms {
        m.expect(Seen::JoinRoom("mallory".into())).await;
        m.expect(Seen::JoinChatroom("mallory".into())).await;
        m.assert_quiet().await;
    }
    h.stop().await;
}
