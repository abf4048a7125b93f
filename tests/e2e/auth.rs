//! Logging in with signed tokens over WebSocket: a server whose authenticator is
//! [`JwtAuthenticator`], and tokens minted with the same secret (or another one).

use std::{sync::Arc, time::SystemTime};

use roomkit_client::{CreateRoomOptions, JoinRoomOptions, JoinRoomParams, RoomKit};
use roomkit_protocol::{Code, Role};
use roomkit_server::ServerConfig;
use roomkit_tests::{
    create_params, expect_code, join_params, join_with, ws::WsClient, Harness, Member, Seen, WsFront,
    WsHarness,
};
use roomkit_token::{Claims, JwtAuthenticator, TokenGrants};
use serde_json::json;

const SECRET: &[u8] = b"secret";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Claims for `account` named `name`, valid for an hour, with the default grants.
fn claims(account: &str, name: &str) -> Claims {
    Claims { sub: account.into(), name: name.into(), exp: now_secs() + 3600, grants: TokenGrants::default() }
}

/// A token for `account` signed with [`SECRET`].
fn token(account: &str) -> String {
    JwtAuthenticator::new(SECRET).mint(&claims(account, &roomkit_tests::nick(account)))
}

/// A server that logs in with tokens signed with [`SECRET`].
async fn start() -> WsHarness {
    let front = WsFront { authenticator: Arc::new(JwtAuthenticator::new(SECRET)), ..WsFront::default() };
    WsHarness::start_front(ServerConfig::default(), front).await
}

/// A client logged in as `account` with a valid token.
async fn client(h: &WsHarness, account: &str) -> RoomKit {
    let kit = h.connect().await;
    kit.login(account, &token(account)).await.unwrap_or_else(|e| panic!("login as {account}: {e}"));
    kit
}

/// `account` creates room `uuid` (with a chatroom) and joins it as host.
async fn host(h: &WsHarness, account: &str, uuid: &str) -> Member {
    let kit = client(h, account).await;
    kit.room_service()
        .create_room(create_params(uuid), CreateRoomOptions { enable_chatroom: true })
        .await
        .unwrap_or_else(|e| panic!("create_room {uuid}: {e}"));
    join_with(&kit, JoinRoomParams { role: Role::Host, ..join_params(uuid, account) }).await
}

/// A valid token logs in as its account, with its display name; the client can then
/// create and join rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_logs_in() {
    let h = start().await;
    let mut raw = WsClient::connect(h.url()).await;
    let t = JwtAuthenticator::new(SECRET).mint(&claims("alice", "Alice Liddell"));
    let r = raw.request_ok(json!({"op": "login", "account_id": "alice", "token": t})).await;
    assert_eq!(r["data"], json!({"user_uuid": "alice", "name": "Alice Liddell"}), "{r}");
    raw.request_ok(json!({"op": "ping"})).await;

    let alice = host(&h, "alice", "r1").await;
    assert_eq!(alice.uuid(), "alice");
    assert_eq!(alice.ctx.get_member("alice").map(|m| m.role), Some(Role::Host));
    h.stop().await;
}

/// A token signed with another secret, or not a token at all, is `UNAUTHENTICATED`; the
/// connection stays open and a valid token then logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_unauthenticated() {
    let h = start().await;
    let kit = h.connect().await;
    let forged = JwtAuthenticator::new(b"not the secret").mint(&claims("alice", "Alice"));
    let e = expect_code(kit.login("alice", &forged).await, Code::UNAUTHENTICATED);
    assert!(e.msg().contains("signature"), "{}", e.msg());
    expect_code(kit.login("alice", "not.a.jwt").await, Code::UNAUTHENTICATED);
    expect_code(kit.login("alice", "").await, Code::UNAUTHENTICATED);
    // A token whose signature was tampered with: same header and claims, other signature.
    let good = token("alice");
    let (unsigned, _) = good.rsplit_once('.').expect("a JWT");
    let tampered = format!("{unsigned}.{}", "A".repeat(43));
    expect_code(kit.login("alice", &tampered).await, Code::UNAUTHENTICATED);
    assert_eq!(kit.user_uuid(), None);
    kit.login("alice", &good).await.expect("a valid token after refused ones");
    assert_eq!(kit.user_uuid().map(|u| u.to_string()).as_deref(), Some("alice"));
    h.stop().await;
}

/// A token whose `exp` has passed is `AUTH_EXPIRED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_auth_expired() {
    let h = start().await;
    let kit = h.connect().await;
    let mut old = claims("alice", "Alice");
    old.exp = now_secs() - 3600;
    let expired = JwtAuthenticator::new(SECRET).mint(&old);
    expect_code(kit.login("alice", &expired).await, Code::AUTH_EXPIRED);
    assert_eq!(kit.user_uuid(), None);
    kit.login("alice", &token("alice")).await.expect("a fresh token");
    h.stop().await;
}

/// A correctly signed token for one of the server's own identities (`backend`, as which the
/// admin API acts) logs nobody in: `RESERVED_ACCOUNT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_reserved_account_is_refused() {
    let h = start().await;
    let kit = h.connect().await;
    let forged = JwtAuthenticator::new(SECRET).mint(&claims("backend", "Backend"));
    let e = expect_code(kit.login("backend", &forged).await, Code::RESERVED_ACCOUNT);
    assert!(e.msg().contains("`backend` is reserved"), "{}", e.msg());
    assert_eq!(kit.user_uuid(), None);
    h.stop().await;
}

/// A valid token for another account is `UNAUTHENTICATED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_account_is_unauthenticated() {
    let h = start().await;
    let kit = h.connect().await;
    let e = expect_code(kit.login("alice", &token("bob")).await, Code::UNAUTHENTICATED);
    assert!(e.msg().contains("bob"), "{}", e.msg());
    assert_eq!(kit.user_uuid(), None);
    h.stop().await;
}

/// A token granting only room r1: joining r2 is `FORBIDDEN`, joining r1 works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_grant_limits_which_rooms_may_be_joined() {
    let h = start().await;
    let mut alice = host(&h, "alice", "r1").await;
    let _alice_r2 = host(&h, "alice", "r2").await;

    let kit = h.connect().await;
    let mut c = claims("bob", "Bob");
    c.grants.rooms = Some(vec!["r1".into()]);
    kit.login("bob", &JwtAuthenticator::new(SECRET).mint(&c)).await.expect("login");
    let service = kit.room_service();
    expect_code(
        service.join_room(join_params("r2", "bob"), JoinRoomOptions::default()).await,
        Code::FORBIDDEN,
    );
    assert!(service.get_room_context("r2").is_none());
    let bob = join_with(&kit, join_params("r1", "bob")).await;
    assert_eq!(bob.room(), "r1");
    alice.expect(Seen::JoinRoom("bob".into())).await;
    h.stop().await;
}

/// A token with `create_rooms: false` may not create rooms (`FORBIDDEN`) but may join them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_create_rooms_may_not_create() {
    let h = start().await;
    let _alice = host(&h, "alice", "r1").await;
    let kit = h.connect().await;
    let mut c = claims("bob", "Bob");
    c.grants.create_rooms = false;
    kit.login("bob", &JwtAuthenticator::new(SECRET).mint(&c)).await.expect("login");
    expect_code(
        kit.room_service().create_room(create_params("r9"), CreateRoomOptions::default()).await,
        Code::FORBIDDEN,
    );
    join_with(&kit, join_params("r1", "bob")).await;
    expect_code(
        kit.room_service().join_room(join_params("r9", "bob"), JoinRoomOptions::default()).await,
        Code::ROOM_NOT_EXIST,
    );
    h.stop().await;
}

/// Only the creator joins as host, unless the token carries the admin grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_grant_gives_host_rights_in_every_room() {
    let h = start().await;
    let _alice = host(&h, "alice", "r1").await;
    let as_host = |account: &str| JoinRoomParams { role: Role::Host, ..join_params("r1", account) };

    let bob = client(&h, "bob").await;
    expect_code(
        bob.room_service().join_room(as_host("bob"), JoinRoomOptions::default()).await,
        Code::FORBIDDEN,
    );

    let kit = h.connect().await;
    let mut c = claims("carol", "Carol");
    c.grants.admin = true;
    kit.login("carol", &JwtAuthenticator::new(SECRET).mint(&c)).await.expect("login");
    let carol = join_with(&kit, join_params("r1", "carol")).await;
    carol.ctx.lock_room().await.expect("an admin may lock a room it did not create");
    h.stop().await;
}

/// A frame naming another sender is sent as the logged-in account: the others receive the
/// message from its uuid and its display name in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cannot_name_another_sender() {
    let h = start().await;
    let mut alice = host(&h, "alice", "r").await;
    alice.chat().join_chatroom().await.expect("join_chatroom");
    let bob_kit = client(&h, "bob").await;
    let mut bob = join_with(&bob_kit, join_params("r", "bob")).await;
    bob.chat().join_chatroom().await.expect("join_chatroom");
    alice.drain().await;
    bob.drain().await;

    let mut eve = WsClient::connect(h.url()).await;
    let t = JwtAuthenticator::new(SECRET).mint(&claims("eve", "Eve from the token"));
    eve.login_with("eve", &t).await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve", "user_uuid": "mallory"}))
        .await;
    eve.request_ok(json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    for m in [&mut alice, &mut bob] {
        m.expect(Seen::JoinRoom("eve".into())).await;
        m.expect(Seen::JoinChatroom("eve".into())).await;
    }
    let r = eve
        .request_ok(json!({
            "op": "send_text_message", "room_uuid": "r", "text": "trust me",
            "from_user_uuid": "mallory", "from_nick": "Mallory",
        }))
        .await;
    assert_eq!(r["data"]["message"]["from_user_uuid"], "eve", "{r}");
    assert_eq!(r["data"]["message"]["from_nick"], "Eve", "{r}");
    for m in [&mut alice, &mut bob] {
        let got = m.messages(1).await.pop().expect("one");
        assert_eq!((got.from_user_uuid.as_str(), got.from_nick.as_str()), ("eve", "Eve"));
        assert_eq!(got.text(), Some("trust me"));
        m.assert_quiet().await;
    }
    assert!(alice.ctx.get_member("mallory").is_none());
    h.stop().await;
}

/// A recall is done as the logged-in account too: naming another operator in the frame does
/// not let a member recall someone else's message (`FORBIDDEN`), and the notification of its
/// own recall names it as the operator and sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_cannot_name_another_operator() {
    let h = start().await;
    let mut alice = host(&h, "alice", "r").await;
    alice.chat().join_chatroom().await.expect("join_chatroom");
    alice.drain().await;

    let mut eve = WsClient::connect(h.url()).await;
    eve.login_with("eve", &token("eve")).await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    eve.request_ok(json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    alice.expect(Seen::JoinRoom("eve".into())).await;
    alice.expect(Seen::JoinChatroom("eve".into())).await;

    let hosts = alice.chat().send_broadcast_text_message("the host's words").await.expect("send");
    let r = eve
        .request(json!({
            "op": "recall_chatroom_message", "room_uuid": "r", "message_uuid": hosts.message_uuid.as_str(),
            "operate_by": "alice", "from_user_uuid": "alice", "user_uuid": "alice",
        }))
        .await;
    assert_eq!(roomkit_tests::ws::code_of(&r), Code::FORBIDDEN, "{r}");

    let own = eve
        .request_ok(
            json!({"op": "send_text_message", "room_uuid": "r", "message_uuid": "eve-1", "text": "oops"}),
        )
        .await;
    assert_eq!(own["data"]["message"]["message_uuid"], "eve-1", "{own}");
    let r = eve
        .request_ok(json!({
            "op": "recall_chatroom_message", "room_uuid": "r", "message_uuid": "eve-1",
            "operate_by": "alice", "from_user_uuid": "alice", "from_nick": "Alice",
        }))
        .await;
    let notification = &r["data"]["message"];
    assert_eq!(notification["message_type"], "notification", "{r}");
    assert_eq!(notification["operate_by"], "eve", "{r}");
    assert_eq!(notification["from_user_uuid"], "eve", "{r}");
    assert_eq!(notification["from_nick"], "Eve", "{r}");
    assert_eq!(notification["recalled_message_id"], "eve-1", "{r}");

    let mut got = Vec::new();
    while got.len() < 2 {
        match alice.next_event().await {
            roomkit_client::RoomEvent::ChatroomMessagesReceived(msgs) => got.extend(msgs),
            other => panic!("alice expected messages, got {other:?}"),
        }
    }
    let got: Vec<serde_json::Value> = got.iter().map(|m| serde_json::to_value(m).expect("JSON")).collect();
    assert_eq!((got[0]["message_uuid"].as_str(), got[0]["text"].as_str()), (Some("eve-1"), Some("oops")));
    assert_eq!(got[1]["operate_by"], "eve", "{}", got[1]);
    assert_eq!(got[1]["from_user_uuid"], "eve", "{}", got[1]);
    alice.assert_quiet().await;
    h.stop().await;
}
