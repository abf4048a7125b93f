//! The admin HTTP API over real HTTP: [`roomkit_server::admin::router`] served by
//! [`roomkit_server::net::serve`] on loopback, next to a [`WsHarness`] whose SDK clients
//! the API must see and reach. Requests go through the hand-written client in
//! [`roomkit_tests::http`].

use std::{net::SocketAddr, sync::Arc};

use roomkit_client::EndReason;
use roomkit_protocol::{Code, UserUuid};
use roomkit_server::{
    admin::{self, AdminLimits, AdminState},
    ServerConfig,
};
use roomkit_tests::{
    expect_code, http, join, join_params, start_chatroom, start_room, Harness, Seen, WsFront, WsHarness,
};
use roomkit_token::JwtAuthenticator;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// The admin key of every test.
const KEY: &str = "k";

/// The secret `POST /v1/tokens` signs with.
const SECRET: &[u8] = b"admin-test-secret";

/// The admin API of a running server, on its own loopback port.
struct Admin {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Admin {
    /// Serves the admin API for `h`'s server; `tokens` mints for `POST /v1/tokens`.
    async fn serve(h: &WsHarness, tokens: Option<JwtAuthenticator>) -> Self {
        Self::serve_with(h, tokens, AdminLimits::default()).await
    }

    /// [`serve`](Self::serve) with `limits`.
    async fn serve_with(h: &WsHarness, tokens: Option<JwtAuthenticator>, limits: AdminLimits) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind the admin port");
        let addr = tcp.local_addr().expect("address");
        let state = AdminState {
            rooms: h.server().rooms(),
            admin_key: KEY.into(),
            tokens,
            backend_user: UserUuid::new("backend").expect("valid id"),
            limits,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(roomkit_server::net::serve(
            tcp,
            admin::router(state),
            std::time::Duration::from_secs(10),
            stop_rx,
        ));
        Self { addr, stop, task }
    }

    /// Sends `request` with the admin key.
    async fn call(&self, request: http::Request<'_>) -> http::Response {
        http::send(self.addr, request.bearer(KEY)).await
    }

    async fn get(&self, path: &str) -> http::Response {
        self.call(http::Request::new("GET", path)).await
    }

    async fn post(&self, path: &str, body: Value) -> http::Response {
        self.call(http::Request::new("POST", path).json(&body)).await
    }

    async fn delete(&self, path: &str) -> http::Response {
        self.call(http::Request::new("DELETE", path)).await
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = roomkit_tests::within("the admin port to stop", self.task).await;
    }
}

/// A server (development logins) and its admin API (minting with [`SECRET`]).
async fn start() -> (WsHarness, Admin) {
    // Installed before any traffic, as the binary does, so that /metrics counts it all.
    let _ = roomkit_server::metrics::prometheus();
    let h = WsHarness::start(ServerConfig::default()).await;
    let admin = Admin::serve(&h, Some(JwtAuthenticator::new(SECRET))).await;
    (h, admin)
}

async fn stop(h: WsHarness, admin: Admin) {
    admin.stop().await;
    h.stop().await;
}

/// Asserts that `r` is the JSON success `{"code":0,"msg":"success","data":...}` with HTTP
/// `status`; returns `data`.
#[track_caller]
fn success(r: &http::Response, status: u16) -> Value {
    let body = r.json();
    assert_eq!((r.status, body["code"].as_u64()), (status, Some(0)), "{body}");
    assert_eq!(body["msg"], "success", "{body}");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{r:?}");
    body["data"].clone()
}

/// Asserts that `r` is the JSON error with HTTP `status` and protocol `code`, and that its
/// message mentions `mentions`.
#[track_caller]
fn failure(r: &http::Response, status: u16, code: Code, mentions: &str) {
    let body = r.json();
    assert_eq!((r.status, body["code"].as_u64()), (status, Some(u64::from(code.0))), "{body}");
    let msg = body["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(mentions), "the message should mention {mentions:?}: {body}");
    assert!(body.get("data").is_none(), "{body}");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{r:?}");
}

/// Every `/v1` route needs `Authorization: Bearer <admin key>`: without it, or with a wrong
/// key or scheme, the answer is 401 with `{"code":1100,...}` and nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_is_required() {
    let (h, admin) = start().await;
    let room = json!({"room_uuid": "r", "room_name": "R"});
    let requests = || {
        [
            http::Request::new("GET", "/v1/rooms"),
            http::Request::new("POST", "/v1/rooms").json(&room),
            http::Request::new("GET", "/v1/rooms/r"),
            http::Request::new("GET", "/v1/rooms/r/members"),
            http::Request::new("GET", "/v1/rooms/r/chatroom/members"),
            http::Request::new("POST", "/v1/rooms/r/chatroom/messages").json(&json!({"text": "hi"})),
            http::Request::new("DELETE", "/v1/rooms/r"),
            http::Request::new("POST", "/v1/tokens").json(&json!({"account": "alice"})),
        ]
    };
    for request in requests() {
        let what = format!("{} {}", request.method, request.path);
        let r = http::send(admin.addr, request).await;
        assert_eq!(r.status, 401, "{what} without a key: {r:?}");
        failure(&r, 401, Code::UNAUTHENTICATED, "");
    }
    for authorization in ["Bearer nope", "Bearer k2", "Bearer ", "Basic k", "bearer k", "k"] {
        for request in requests() {
            let what = format!("{} {} with {authorization:?}", request.method, request.path);
            let r = http::send(admin.addr, request.header("Authorization", authorization)).await;
            assert_eq!(r.status, 401, "{what}: {r:?}");
            failure(&r, 401, Code::UNAUTHENTICATED, "");
        }
    }
    // Nothing was created.
    let data = success(&admin.get("/v1/rooms").await, 200);
    assert_eq!(data, json!({"rooms": []}));
    stop(h, admin).await;
}

/// `POST /v1/rooms` creates a room (201, created by `backend`) that SDK clients can join; a
/// second one with the same uuid is 409 with `ROOM_ALREADY_EXISTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_once() {
    let (h, admin) = start().await;
    let body =
        json!({"room_uuid": "class-1", "room_name": "Class 1", "enable_chatroom": true, "max_members": 10});
    let data = success(&admin.post("/v1/rooms", body.clone()).await, 201);
    let room = &data["room"];
    assert_eq!(
        (room["room_uuid"].as_str(), room["creator"].as_str()),
        (Some("class-1"), Some("backend")),
        "{data}"
    );
    assert_eq!(
        (room["chatroom_enabled"].as_bool(), room["max_members"].as_u64()),
        (Some(true), Some(10)),
        "{data}"
    );
    failure(&admin.post("/v1/rooms", body).await, 409, Code::ROOM_ALREADY_EXISTS, "class-1");

    let kit = h.client("alice").await;
    let alice = join(&kit, "class-1").await;
    alice.chat().join_chatroom().await.expect("the room has a chatroom");
    stop(h, admin).await;
}

/// The admin API acts as `backend`, and nobody else can: a login as `backend` (here with
/// development credentials, which accept any account) is refused with `RESERVED_ACCOUNT`, so
/// nobody joins a room the API created as its host or ends it; and the API mints no token
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_act_as_the_admin_apis_own_identity() {
    let (h, admin) = start().await;
    let body = json!({"room_uuid": "class-1", "room_name": "Class 1", "enable_chatroom": true});
    success(&admin.post("/v1/rooms", body).await, 201);
    for account in ["backend", "Backend", "system"] {
        let kit = h.connect().await;
        let e = expect_code(kit.login(account, "dev-token").await, Code::RESERVED_ACCOUNT);
        assert!(e.msg().contains("reserved"), "{}", e.msg());
        assert_eq!(kit.user_uuid(), None);
        let join = kit.room_service().join_room(join_params("class-1", account), Default::default()).await;
        expect_code(join, Code::UNAUTHENTICATED);
    }
    let r = admin.post("/v1/tokens", json!({"account": "backend"})).await;
    failure(&r, 400, Code::BAD_REQUEST, "reserved");
    // The room is untouched: still there, nobody in it.
    let data = success(&admin.get("/v1/rooms/class-1").await, 200);
    assert_eq!(data["member_count"], 0, "{data}");
    stop(h, admin).await;
}

/// A body that does not parse is 400 with `BAD_REQUEST`, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_bad_requests_naming_the_field() {
    let (h, admin) = start().await;
    let cases = [
        ("/v1/rooms", json!({"room_uuid": "r", "room_name": 5}), "room_name"),
        ("/v1/rooms", json!({"room_uuid": "r"}), "room_name"),
        ("/v1/rooms", json!({"room_uuid": "a b", "room_name": "R"}), "room_uuid"),
        ("/v1/rooms", json!({"room_uuid": "a".repeat(65), "room_name": "R"}), "room_uuid"),
        ("/v1/rooms", json!({"room_uuid": "r", "room_name": "R", "max_members": "ten"}), "max_members"),
        (
            "/v1/rooms",
            json!({"room_uuid": "r", "room_name": "R", "enable_chatroom": "yes"}),
            "enable_chatroom",
        ),
        ("/v1/tokens", json!({"account": 5}), "account"),
        ("/v1/tokens", json!({"name": "Alice"}), "account"),
        ("/v1/tokens", json!({"account": "al ice"}), "account"),
        ("/v1/tokens", json!({"account": "alice", "ttl_secs": -1}), "ttl_secs"),
        ("/v1/tokens", json!({"account": "alice", "rooms": ["a b"]}), "rooms"),
    ];
    for (path, body, field) in cases {
        let what = format!("POST {path} {body}");
        let r = admin.post(path, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        failure(&r, 400, Code::BAD_REQUEST, field);
    }
    let r = admin.call(http::Request::new("POST", "/v1/rooms").raw_body("{not json")).await;
    failure(&r, 400, Code::BAD_REQUEST, "");
    // A message to a room that exists, without text.
    success(
        &admin.post("/v1/rooms", json!({"room_uuid": "r", "room_name": "R", "enable_chatroom": true})).await,
        201,
    );
    let r = admin.post("/v1/rooms/r/chatroom/messages", json!({"txt": "hi"})).await;
    failure(&r, 400, Code::BAD_REQUEST, "text");
    // A bad uuid in the path.
    failure(&admin.get("/v1/rooms/a%20b").await, 400, Code::BAD_REQUEST, "room_uuid");
    stop(h, admin).await;
}

/// The room listings reflect what SDK clients did over WebSocket; an unknown room is 404
/// with `ROOM_NOT_EXIST`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_listings_reflect_websocket_clients() {
    let (h, admin) = start().await;
    // alice (host) and bob in room r, only alice in its chatroom; carol alone in room s.
    let ms = start_room(&h, "r", &["alice", "bob"], true, &["alice"]).await;
    let _carol = start_room(&h, "s", &["carol"], false, &[]).await;

    let data = success(&admin.get("/v1/rooms").await, 200);
    let rooms = data["rooms"].as_array().expect("rooms");
    let summary: Vec<(&str, u64, u64)> = rooms
        .iter()
        .map(|r| {
            let counts = (r["member_count"].as_u64(), r["chatroom_member_count"].as_u64());
            (r["room_uuid"].as_str().expect("uuid"), counts.0.expect("count"), counts.1.expect("count"))
        })
        .collect();
    assert_eq!(summary, [("r", 2, 1), ("s", 1, 0)], "{data}");

    let room = success(&admin.get("/v1/rooms/r").await, 200);
    assert_eq!(room["room_uuid"], "r", "{room}");
    assert_eq!(room["creator"], "alice", "{room}");
    assert_eq!((room["member_count"].as_u64(), room["chatroom_member_count"].as_u64()), (Some(2), Some(1)));

    let members = success(&admin.get("/v1/rooms/r/members").await, 200);
    let mut seen: Vec<(String, String, bool)> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("uuid"), s("role"), m["is_in_chatroom"].as_bool().unwrap_or_default())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("alice".to_string(), "host".to_string(), true), ("bob".to_string(), "member".to_string(), false)],
        "{members}"
    );
    let chat = success(&admin.get("/v1/rooms/r/chatroom/members").await, 200);
    let uuids: Vec<&str> =
        chat["members"].as_array().expect("members").iter().filter_map(|m| m["uuid"].as_str()).collect();
    assert_eq!(uuids, ["alice"], "{chat}");

    failure(&admin.get("/v1/rooms/nope").await, 404, Code::ROOM_NOT_EXIST, "nope");
    failure(&admin.get("/v1/rooms/nope/members").await, 404, Code::ROOM_NOT_EXIST, "nope");
    failure(&admin.get("/v1/rooms/nope/chatroom/members").await, 404, Code::ROOM_NOT_EXIST, "nope");
    failure(&admin.get("/v1/rooms/s/chatroom/members").await, 404, Code::CHATROOM_NOT_ENABLED, "s");

    // Bob leaves: the listing follows.
    ms[1].ctx.leave_room().await.expect("leave_room");
    let room = success(&admin.get("/v1/rooms/r").await, 200);
    assert_eq!((room["member_count"].as_u64(), room["chatroom_member_count"].as_u64()), (Some(1), Some(1)));
    stop(h, admin).await;
}

/// `POST /v1/rooms/{uuid}/chatroom/messages` reaches every chatroom member with
/// `from_backend: true`, from `backend`, and nobody outside the chatroom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_messages_reach_every_chatroom_member() {
    let (h, admin) = start().await;
    let mut ms =
        start_room(&h, "r", &["alice", "bob", "carol", "dave"], true, &["alice", "bob", "carol"]).await;
    let r = admin
        .post(
            "/v1/rooms/r/chatroom/messages",
            json!({"text": "Class starts in 5 minutes", "from_nick": "Teacher"}),
        )
        .await;
    let data = success(&r, 201);
    assert_eq!(data["message"]["from_backend"], true, "{data}");
    let seq = data["message"]["seq"].as_u64().expect("seq");
    for m in &mut ms[..3] {
        let got = m.messages(1).await.pop().expect("one");
        assert!(got.from_backend, "{} got {got:?}", m.uuid());
        assert_eq!((got.from_user_uuid.as_str(), got.from_nick.as_str()), ("backend", "Teacher"));
        assert_eq!((got.seq, got.text()), (seq, Some("Class starts in 5 minutes")));
    }
    for m in &mut ms {
        m.assert_quiet().await;
    }
    // Without a nick the message is from "System".
    let data = success(&admin.post("/v1/rooms/r/chatroom/messages", json!({"text": "second"})).await, 201);
    assert_eq!(data["message"]["from_nick"], "System", "{data}");
    for m in &mut ms[..3] {
        let got = m.messages(1).await.pop().expect("one");
        assert!(got.from_backend && got.from_nick == "System", "{got:?}");
    }
    // Members can fetch it from history too, marked as the backend's.
    let history = ms[3].chat().fetch_chatroom_history_messages(Default::default()).await.expect("history");
    assert!(history.iter().all(|m| m.from_backend), "{history:?}");
    failure(
        &admin.post("/v1/rooms/nope/chatroom/messages", json!({"text": "x"})).await,
        404,
        Code::ROOM_NOT_EXIST,
        "",
    );
    // The members' limits apply to the backend too.
    let long = "x".repeat(ServerConfig::default().core.max_message_bytes + 1);
    failure(
        &admin.post("/v1/rooms/r/chatroom/messages", json!({"text": long})).await,
        413,
        Code::MESSAGE_TOO_LONG,
        "",
    );
    let _plain = start_room(&h, "plain", &["erin"], false, &[]).await;
    failure(
        &admin.post("/v1/rooms/plain/chatroom/messages", json!({"text": "x"})).await,
        404,
        Code::CHATROOM_NOT_ENABLED,
        "plain",
    );
    for m in &mut ms {
        m.assert_quiet().await;
    }
    stop(h, admin).await;
}

/// `DELETE /v1/rooms/{uuid}` ends the room: every member gets `RoomEnd(CloseByBackend)` and
/// loses its context; the room is gone from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_room_ends_it_for_every_member() {
    let (h, admin) = start().await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob", "carol"]).await;
    let _other = start_room(&h, "s", &["dave"], false, &[]).await;
    success(&admin.delete("/v1/rooms/r").await, 200);
    for m in &mut ms {
        m.expect(Seen::End(EndReason::CloseByBackend)).await;
        assert!(m.kit.room_service().get_room_context("r").is_none(), "{} still has a context", m.uuid());
        assert!(within_none(&mut m.events).await, "{}: the event stream should end after RoomEnd", m.uuid());
    }
    let data = success(&admin.get("/v1/rooms").await, 200);
    let uuids: Vec<&str> =
        data["rooms"].as_array().expect("rooms").iter().filter_map(|r| r["room_uuid"].as_str()).collect();
    assert_eq!(uuids, ["s"], "{data}");
    let r = admin.get("/v1/rooms/r").await;
    assert!(r.status == 404 || r.status == 410, "an ended room: {r:?}");
    failure(&admin.delete("/v1/rooms/nope").await, 404, Code::ROOM_NOT_EXIST, "nope");
    // The ended room cannot be joined again.
    let kit = ms[0].kit.clone();
    expect_code(
        kit.room_service().join_room(join_params("r", "alice"), Default::default()).await,
        Code::ROOM_ENDED,
    );
    stop(h, admin).await;
}

/// Whether the stream ends (yields `None`) right away; panics if it hangs.
async fn within_none(events: &mut roomkit_client::RoomEvents) -> bool {
    roomkit_tests::within("the end of an event stream", events.recv()).await.is_none()
}

/// `POST /v1/tokens` mints a token that logs in on a server checking tokens with the same
/// secret, with the grants asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_log_in() {
    let front = WsFront { authenticator: Arc::new(JwtAuthenticator::new(SECRET)), ..WsFront::default() };
    let h = WsHarness::start_front(ServerConfig::default(), front).await;
    let admin = Admin::serve(&h, Some(JwtAuthenticator::new(SECRET))).await;
    success(&admin.post("/v1/rooms", json!({"room_uuid": "r1", "room_name": "R1"})).await, 201);
    success(&admin.post("/v1/rooms", json!({"room_uuid": "r2", "room_name": "R2"})).await, 201);

    let data = success(
        &admin
            .post(
                "/v1/tokens",
                json!({"account": "alice", "name": "Alice L.", "ttl_secs": 600, "rooms": ["r1"]}),
            )
            .await,
        201,
    );
    let token = data["token"].as_str().expect("a token").to_string();
    assert!(data["expires_at"].as_u64().is_some(), "{data}");
    let claims = JwtAuthenticator::new(SECRET).verify(&token).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("alice", "Alice L."));
    assert_eq!(claims.exp, data["expires_at"].as_u64().expect("expires_at"));
    assert_eq!(claims.grants.rooms, Some(vec!["r1".to_string()]));

    let kit = h.connect().await;
    expect_code(kit.login("bob", &token).await, Code::UNAUTHENTICATED);
    kit.login("alice", &token).await.expect("the minted token logs in");
    expect_code(
        kit.room_service().join_room(join_params("r2", "alice"), Default::default()).await,
        Code::FORBIDDEN,
    );
    let alice = join(&kit, "r1").await;
    assert_eq!(alice.uuid(), "alice");

    // Another secret does not accept it.
    assert!(JwtAuthenticator::new(b"other").verify(&token).is_err());
    admin.stop().await;
    h.stop().await;
}

/// A lifetime too long to add to the current time is a bad request, not a crash: the
/// answer is 400 naming `ttl_secs`, and the API keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_ttl_is_a_bad_request() {
    let (h, admin) = start().await;
    let request = http::Request::new("POST", "/v1/tokens")
        .bearer(KEY)
        .json(&json!({"account": "alice", "ttl_secs": u64::MAX}));
    let r = roomkit_tests::within("the answer to a huge ttl_secs", http::try_send(admin.addr, request))
        .await
        .expect("an answer to a token request with a huge ttl_secs");
    failure(&r, 400, Code::BAD_REQUEST, "ttl_secs");
    success(&admin.post("/v1/tokens", json!({"account": "alice"})).await, 201);
    stop(h, admin).await;
}

/// Without a token secret, `POST /v1/tokens` fails (500, `FAILURE`) and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_needs_a_secret() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let admin = Admin::serve(&h, None).await;
    let r = admin.post("/v1/tokens", json!({"account": "alice"})).await;
    failure(&r, 500, Code::FAILURE, "secret");
    admin.stop().await;
    h.stop().await;
}

/// The value of the first sample of `name` in Prometheus text (`name value` or
/// `name{labels} value`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET /metrics` (no key needed) shows the connections and the messages of the traffic so
/// far; `GET /healthz` needs no key either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_need_no_key() {
    let (h, admin) = start().await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    for i in 0..3 {
        let sent = ms[0].chat().send_broadcast_text_message(&format!("m{i}")).await.expect("send");
        ms[1].expect(Seen::message(&sent)).await;
    }
    let r = http::get(admin.addr, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    let connections =
        sample(&text, "roomkit_connections").unwrap_or_else(|| panic!("no roomkit_connections in\n{text}"));
    assert!(connections >= 2.0, "roomkit_connections {connections}\n{text}");
    let messages = sample(&text, "roomkit_messages_in_total")
        .unwrap_or_else(|| panic!("no roomkit_messages_in_total in\n{text}"));
    assert!(messages >= 3.0, "roomkit_messages_in_total {messages}\n{text}");
    assert!(sample(&text, "roomkit_rooms").is_some_and(|n| n >= 1.0), "{text}");

    let r = http::get(admin.addr, "/healthz").await;
    assert_eq!((r.status, r.text().trim()), (200, "ok"), "{r:?}");
    let r = admin.get("/healthz").await;
    assert_eq!(r.status, 200, "with a key too: {r:?}");
    stop(h, admin).await;
}

/// A member whose connection dropped is still listed during the reconnect grace period
/// (protocol.md §5: "While it is away, the membership still counts").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_away_within_the_grace_period_are_still_listed() {
    let (h, admin) = start().await;
    let mut ms = start_chatroom(&h, "r", &["alice"]).await;
    let mut eve = roomkit_tests::ws::WsClient::connect(h.url()).await;
    eve.login("eve").await;
    eve.request_ok(json!({"op": "join_room", "room_uuid": "r", "user_name": "Eve"})).await;
    eve.request_ok(json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    ms[0].expect(Seen::JoinRoom("eve".into())).await;
    ms[0].expect(Seen::JoinChatroom("eve".into())).await;
    drop(eve);
    roomkit_tests::within("the server to notice the dropped connection", async {
        while h.server().connection_count() > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let room = success(&admin.get("/v1/rooms/r").await, 200);
    assert_eq!(
        (room["member_count"].as_u64(), room["chatroom_member_count"].as_u64()),
        (Some(2), Some(2)),
        "{room}"
    );
    let members = success(&admin.get("/v1/rooms/r/chatroom/members").await, 200);
    let uuids: Vec<&str> =
        members["members"].as_array().expect("members").iter().filter_map(|m| m["uuid"].as_str()).collect();
    assert!(uuids.contains(&"eve"), "{members}");
    ms[0].assert_quiet().await;
    stop(h, admin).await;
}

/// Reads every page of `path` (`limit` per page) and returns the member uuids in order, and
/// the counts of the last page.
async fn all_pages(admin: &Admin, path: &str, limit: u32) -> (Vec<String>, Value) {
    let mut uuids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = success(&admin.get(&format!("{path}?cursor={cursor}&limit={limit}")).await, 200);
        let members = page["members"].as_array().expect("members");
        assert!(members.len() <= limit as usize, "{page}");
        uuids.extend(members.iter().filter_map(|m| m["uuid"].as_str().map(str::to_string)));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return (uuids, page["counts"].clone()),
        }
    }
}

/// Member listings are paged like `fetch_room_members`: every member exactly once, in join
/// order, with the counts; the limit is 1–100 and a cursor must be one the server made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_listings_are_paged_with_the_counts() {
    let (h, admin) = start().await;
    let accounts = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let _ms = start_room(&h, "r", &accounts, true, &["grace", "bob", "alice", "erin"]).await;

    let (room, counts) = all_pages(&admin, "/v1/rooms/r/members", 3).await;
    assert_eq!(room, accounts, "every member once, in join order");
    assert_eq!(counts, json!({"room": 7, "chatroom": 4}));
    let (chat, counts) = all_pages(&admin, "/v1/rooms/r/chatroom/members", 2).await;
    assert_eq!(chat, ["grace", "bob", "alice", "erin"], "in the order they entered");
    assert_eq!(counts, json!({"room": 7, "chatroom": 4}));

    let first = success(&admin.get("/v1/rooms/r/members").await, 200);
    assert_eq!(first["members"].as_array().map(Vec::len), Some(7), "50 by default: {first}");
    assert!(first.get("next_cursor").is_none(), "{first}");

    for bad in ["limit=0", "limit=101", "limit=ten", "limit=-1"] {
        failure(&admin.get(&format!("/v1/rooms/r/members?{bad}")).await, 400, Code::BAD_REQUEST, "limit");
        failure(
            &admin.get(&format!("/v1/rooms/r/chatroom/members?{bad}")).await,
            400,
            Code::BAD_REQUEST,
            "limit",
        );
    }
    failure(&admin.get("/v1/rooms/r/members?cursor=zzz").await, 400, Code::BAD_REQUEST, "cursor");
    failure(&admin.get("/v1/rooms/r/chatroom/members?cursor=-3").await, 400, Code::BAD_REQUEST, "cursor");
    assert_eq!(
        success(&admin.get("/v1/rooms/r/members?limit=100").await, 200)["members"].as_array().map(Vec::len),
        Some(7)
    );
    stop(h, admin).await;
}

/// Sends `head` and then `body` (raw bytes) to the admin port and reads the answer: its
/// status line and its body, once whole. The server must answer without more input, and
/// then close the connection.
async fn raw_answer(addr: SocketAddr, head: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the admin port");
    tcp.write_all(head.as_bytes()).await.expect("send the head");
    tcp.write_all(body).await.expect("send the body");
    let answer = roomkit_tests::within("the admin port's answer", async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + len {
                    return bytes;
                }
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return bytes,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.to_lowercase().contains("connection: close"), "the connection is not kept: {head}");
    // And closed: nothing more comes.
    let mut rest = Vec::new();
    let closed =
        roomkit_tests::within("the admin port to close the connection", tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_err() || rest.is_empty(), "{closed:?} {rest:?}");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// A request with a wrong key (or none) is refused from its head alone: a 2 MB body that
/// never comes does not keep it waiting, and no room is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_before_the_body_is_read() {
    let (h, admin) = start().await;
    for auth in ["Authorization: Bearer wrong\r\n", ""] {
        let head = format!(
            "POST /v1/rooms HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 2097152\r\n\r\n"
        );
        let (status, body) = raw_answer(admin.addr, &head, b"").await;
        assert!(status.starts_with("HTTP/1.1 401"), "{status} {body}");
        assert!(body.contains("\"code\":1100"), "{body}");
    }
    let data = success(&admin.get("/v1/rooms").await, 200);
    assert_eq!(data, json!({"rooms": []}));
    stop(h, admin).await;
}

/// With the key, a body declared larger than the limit is refused before it is read (413,
/// `FRAME_TOO_LARGE`), and one that grows past it without declaring its length is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let mut limits = AdminLimits::default();
    limits.max_body_bytes = 1000;
    let admin = Admin::serve_with(&h, None, limits).await;
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
    );
    let (status, body) = raw_answer(admin.addr, &head, b"").await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status} {body}");
    assert!(body.contains("\"code\":1003") && body.contains("1000 bytes"), "{body}");
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = format!("{:x}\r\n{}\r\n", 1001, "x".repeat(1001));
    let (status, body) = raw_answer(admin.addr, &head, chunk.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status} {body}");
    // A body within the limit is served as usual.
    let room = json!({"room_uuid": "r", "room_name": "R"});
    success(&admin.post("/v1/rooms", room).await, 201);
    stop(h, admin).await;
}

/// A body that trickles in slower than the body timeout is answered 408 (`TIMEOUT`) and the
/// connection closed, instead of holding it open for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out() {
    let h = WsHarness::start(ServerConfig::default()).await;
    let mut limits = AdminLimits::default();
    limits.body_timeout = std::time::Duration::from_millis(300);
    let admin = Admin::serve_with(&h, None, limits).await;
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let (status, body) = raw_answer(admin.addr, &head, b"{\"room_uuid\":").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status} {body}");
    assert!(body.contains("\"code\":1006"), "{body}");
    let data = success(&admin.get("/v1/rooms").await, 200);
    assert_eq!(data, json!({"rooms": []}));
    stop(h, admin).await;
}

/// `POST /v1/rooms/{uuid}/chatroom/messages` answers once the message is stored: held while
/// the store's write is, and a write that fails is answered 500 (`INTERNAL`) with nothing
/// delivered; the next message is stored and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_message_is_answered_once_stored_and_refused_if_it_cannot_be() {
    let store = Arc::new(roomkit_tests::GatedStore::default());
    let server =
        roomkit_server::Server::new(ServerConfig::default(), Arc::new(roomkit_server::DevAuthenticator))
            .with_store(Arc::clone(&store) as Arc<dyn roomkit_core::store::MessageStore>);
    let h = WsHarness::start_server(server, roomkit_tests::WsFront::default()).await;
    let admin = Admin::serve(&h, None).await;
    let mut ms = start_room(&h, "r", &["alice"], true, &["alice"]).await;

    store.writes.close();
    store.fail_next_write.store(true, std::sync::atomic::Ordering::SeqCst);
    {
        let post = admin.post("/v1/rooms/r/chatroom/messages", json!({"text": "lost"}));
        tokio::pin!(post);
        roomkit_tests::within("the write to reach the store", async {
            tokio::select! {
                r = &mut post => panic!("answered before the write: {r:?}"),
                () = store.writes.until_waiting(1) => {}
            }
        })
        .await;
        store.writes.open();
        failure(&post.await, 500, Code::INTERNAL, "could not be stored");
    }

    let data = success(&admin.post("/v1/rooms/r/chatroom/messages", json!({"text": "kept"})).await, 201);
    let got = ms[0].messages(1).await.pop().expect("one");
    assert_eq!((got.text(), got.seq), (Some("kept"), data["message"]["seq"].as_u64().expect("seq")));
    ms[0].assert_quiet().await;
    stop(h, admin).await;
}
