//! The large-room operations and the message rates on the wire: `fetch_room_members`,
//! `fetch_chatroom_members` and `get_room_info` answer bad input with `BAD_REQUEST` naming
//! the field (and the usual codes for the wrong caller); a member over its message rate gets
//! `MESSAGE_RATE_LIMITED`, a chatroom over its cap `CHATROOM_RATE_LIMITED` — low priority
//! first, the host never — and the connection stays usable.

use roomkit_core::config::MessageRate;
use roomkit_protocol::Code;
use roomkit_server::ServerConfig;
use roomkit_tests::{
    ws::{code_of, msg_of, WsClient},
    Harness, WsHarness,
};
use serde_json::{json, Value};

const ROOM: &str = "r";

/// A raw client logged in as `account` and in [`ROOM`] and its chatroom; the first one
/// creates the room and is its host.
async fn member(h: &WsHarness, account: &str, host: bool) -> WsClient {
    let mut c = WsClient::connect(h.url()).await;
    c.login(account).await;
    if host {
        c.request_ok(
            json!({"op": "create_room", "room_uuid": ROOM, "room_name": "R", "enable_chatroom": true}),
        )
        .await;
        c.request_ok(json!({"op": "create_room", "room_uuid": "plain", "room_name": "P"})).await;
    }
    let role = if host { "host" } else { "member" };
    c.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": account, "role": role})).await;
    c.request_ok(json!({"op": "join_chatroom", "room_uuid": ROOM})).await;
    c
}

#[track_caller]
fn assert_refused(response: &Value, code: Code, mentions: &str) {
    assert_eq!(code_of(response), code, "{response}");
    assert!(msg_of(response).contains(mentions), "the message should mention {mentions:?}: {response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_paging_refuses_bad_limits_and_cursors_and_strangers() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let mut alice = member(&h, "alice", true).await;
    let _bob = member(&h, "bob", false).await;

    for op in ["fetch_room_members", "fetch_chatroom_members"] {
        for limit in [0, 101] {
            let r = alice.request(json!({"op": op, "room_uuid": ROOM, "limit": limit})).await;
            assert_refused(&r, Code::BAD_REQUEST, "limit");
        }
        for cursor in ["abc", "-1", "0", "01", "999999"] {
            let r = alice.request(json!({"op": op, "room_uuid": ROOM, "cursor": cursor})).await;
            assert_refused(&r, Code::BAD_REQUEST, "cursor");
        }
        let r = alice.request(json!({"op": op, "room_uuid": ROOM, "limit": "5"})).await;
        assert_refused(&r, Code::BAD_REQUEST, "limit");
        // One at a time, then on from the cursor.
        let first = alice.request_ok(json!({"op": op, "room_uuid": ROOM, "limit": 1})).await;
        assert_eq!(first["data"]["members"][0]["uuid"], "alice", "{first}");
        let cursor = first["data"]["next_cursor"].as_str().expect("a second page").to_string();
        let second =
            alice.request_ok(json!({"op": op, "room_uuid": ROOM, "limit": 1, "cursor": cursor})).await;
        assert_eq!(second["data"]["members"][0]["uuid"], "bob", "{second}");
        assert!(second["data"].get("next_cursor").is_none(), "{second}");
        assert_eq!(second["data"]["counts"], json!({"room": 2, "chatroom": 2}));
    }

    let mut carol = WsClient::connect(h.url()).await;
    carol.login("carol").await;
    for op in ["fetch_room_members", "fetch_chatroom_members", "get_room_info"] {
        let r = carol.request(json!({"op": op, "room_uuid": ROOM})).await;
        assert_eq!(code_of(&r), Code::NOT_IN_ROOM, "{op} by a stranger: {r}");
    }
    carol.request_ok(json!({"op": "join_room", "room_uuid": "plain", "user_name": "carol"})).await;
    let r = carol.request(json!({"op": "fetch_chatroom_members", "room_uuid": "plain"})).await;
    assert_eq!(code_of(&r), Code::CHATROOM_NOT_ENABLED, "{r}");
    let info = carol.request_ok(json!({"op": "get_room_info", "room_uuid": "plain"})).await;
    assert_eq!(info["data"]["counts"], json!({"room": 1, "chatroom": 0}), "{info}");
    h.stop().await;
}

/// Sends every request in `requests` before reading any answer (so that they reach the
/// server together, within one refill of the rates), then returns the answers in order.
async fn pipelined(c: &mut WsClient, first_id: u64, requests: &[Value]) -> Vec<Value> {
    for (i, r) in requests.iter().enumerate() {
        let mut r = r.clone();
        r["id"] = json!(first_id + i as u64);
        c.send_json(&r).await;
    }
    let mut answers = Vec::new();
    for i in 0..requests.len() {
        let answer = c.response().await;
        assert_eq!(answer["id"], json!(first_id + i as u64), "{answer}");
        answers.push(answer);
    }
    answers
}

fn text(t: &str) -> Value {
    json!({"op": "send_text_message", "room_uuid": ROOM, "text": t})
}

fn ephemeral(t: &str) -> Value {
    json!({"op": "send_custom_message", "room_uuid": ROOM, "attach_str": t, "persist": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_its_message_rate_is_refused_and_may_go_on() {
    let mut config = ServerConfig::default();
    config.core.member_message_rate = MessageRate { per_second: 1, burst: 3 };
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    let h = WsHarness::start(config).await;
    let _alice = member(&h, "alice", true).await;
    let mut bob = member(&h, "bob", false).await;
    let mut carol = member(&h, "carol", false).await;

    let answers = pipelined(&mut bob, 100, &[text("1"), text("2"), text("3"), text("4")]).await;
    let codes: Vec<Code> = answers.iter().map(code_of).collect();
    assert_eq!(
        codes,
        [Code::SUCCESS, Code::SUCCESS, Code::SUCCESS, Code::MESSAGE_RATE_LIMITED],
        "{answers:?}"
    );
    assert_eq!(Code::MESSAGE_RATE_LIMITED.0, 3004);
    // The limit is bob's own: carol sends, and bob's connection still answers.
    carol.request_ok(text("carol's")).await;
    bob.request_ok(json!({"op": "ping"})).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatroom_at_its_cap_refuses_low_priority_first_and_the_host_never() {
    let mut config = ServerConfig::default();
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate { per_second: 1, burst: 4 };
    let h = WsHarness::start(config).await;
    let mut alice = member(&h, "alice", true).await;
    let mut bob = member(&h, "bob", false).await;

    // Half the burst used: an ephemeral (low-priority) message is refused, normal ones go
    // on until the burst is used up.
    let sends = [text("1"), text("2"), ephemeral("like"), text("3"), text("4"), text("5")];
    let answers = pipelined(&mut bob, 100, &sends).await;
    let codes: Vec<Code> = answers.iter().map(code_of).collect();
    let (ok, capped) = (Code::SUCCESS, Code::CHATROOM_RATE_LIMITED);
    assert_eq!(codes, [ok, ok, capped, ok, ok, capped], "{answers:?}");
    assert_eq!(capped.0, 3005);
    // The host's messages are high priority: never refused.
    let host = pipelined(&mut alice, 100, &[text("h1"), text("h2")]).await;
    assert!(host.iter().all(|a| code_of(a) == Code::SUCCESS), "{host:?}");
    h.stop().await;
}
