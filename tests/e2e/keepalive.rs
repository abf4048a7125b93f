//! Keep-alive: the server pings connections that have gone quiet and closes those that stop
//! answering, with `KEEPALIVE_TIMEOUT`; connections whose peer answers are never closed for
//! being idle.

use std::time::Duration;

use roomkit_client::{ClientConfig, ConnectionState, RoomKit};
use roomkit_protocol::Code;
use roomkit_server::ServerConfig;
use roomkit_tests::{ws::WsClient, Harness, MemoryHarness, WsHarness};

/// A client that stops reading (so it answers no ping) is closed once the idle timeout has
/// passed; an SDK client on the same server, idle too but answering, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_is_closed_and_one_that_answers_stays() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(200);
    config.idle_timeout = Duration::from_secs(3);
    let h = WsHarness::start(config).await;
    let answering = h.client("alice").await;
    let silent = silent_login(h.url(), "bob").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.server().connection_count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the silent connection was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, reason) = close_frame_in(silent).await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.starts_with("5006 "), "expected KEEPALIVE_TIMEOUT, got {reason:?}");
    // Alice was as idle as Bob, but her SDK answered the pings.
    assert_eq!(answering.connection_state(), ConnectionState::Connected);
    assert_eq!(h.server().connection_count(), 1);
    answering
        .room_service()
        .create_room(roomkit_tests::create_params("r"), Default::default())
        .await
        .expect("alice's connection still works");
    h.stop().await;
}

/// A WebSocket connection to `url`, logged in as `account`, that then reads and writes
/// nothing: no library on it answers the server's pings (a library would answer them once
/// read, and its pong, written to a socket the server has closed, would fail before the close
/// frame behind them is read). Handshake and login are written by hand.
async fn silent_login(url: &str, account: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("ws://").expect("a ws:// url");
    let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("the handshake's answer"));
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let login =
        serde_json::json!({"id": 1, "op": "login", "account_id": account, "token": roomkit_tests::DEV_TOKEN});
    let payload = serde_json::to_vec(&login).expect("JSON");
    let mask = [7u8, 11, 13, 17];
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("login");
    tcp
}

/// Reads everything `tcp` received until the server ended it, and returns the code and
/// reason of the close frame among it.
async fn close_frame_in(mut tcp: tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    roomkit_tests::within("the server to end the connection", tcp.read_to_end(&mut bytes))
        .await
        .expect("read");
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let (opcode, short) = (bytes[at] & 0x0f, usize::from(bytes[at + 1] & 0x7f));
        let (len, start) = match short {
            126 => (usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])), at + 4),
            127 => {
                (u64::from_be_bytes(bytes[at + 2..at + 10].try_into().expect("8 bytes")) as usize, at + 10)
            }
            n => (n, at + 2),
        };
        let payload = &bytes[start..start + len];
        if opcode == 8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
        }
        at = start + len;
    }
    panic!("no close frame in the {} bytes the server sent", bytes.len());
}

/// A client busy receiving counts as alive while the server's writes to it complete, even
/// if it does not answer a ping in time (it answers late when its link is slow; here it
/// reads nothing at all); once nothing but pings is written to it, it is closed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_writes_complete_is_alive_without_answering_pings() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(200);
    config.idle_timeout = Duration::from_secs(3);
    let h = WsHarness::start(config).await;
    let alice = roomkit_tests::start_chatroom(&h, "r", &["alice"]).await.remove(0);
    let mut busy = WsClient::connect(h.url()).await;
    busy.login("bob").await;
    busy.request_ok(serde_json::json!({"op": "join_room", "room_uuid": "r", "user_name": "Bob"})).await;
    busy.request_ok(serde_json::json!({"op": "join_chatroom", "room_uuid": "r"})).await;
    // From now on bob reads nothing (so answers no ping), but messages keep being written to him.
    let until = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < until {
        alice.chat().send_broadcast_text_message("hi").await.expect("sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.server().connection_count(), 2, "bob was closed while writes to him completed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.server().connection_count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "bob was never closed once only pings went out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

/// Over the in-memory transport a peer is there for as long as its end is, and the transport
/// answers pings itself: hours of paused time pass and nobody is closed for being idle.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_clients_that_are_there_stay_connected_for_hours() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_secs(30);
    config.idle_timeout = Duration::from_secs(75);
    let h = MemoryHarness::start(config).await;
    // The client sends nothing of its own (no keep-alive pings): only the transport's answers
    // to the server's pings show it is there.
    let mut quiet = ClientConfig::default();
    quiet.keep_alive.interval = Duration::ZERO;
    let kit = RoomKit::connect_with(h.connector(), quiet).await.expect("connect");
    kit.login("alice", "dev").await.expect("log in");
    let mut raw = h.raw_client().await;
    raw.send_json(serde_json::json!({"id": 1, "op": "login", "account_id": "bob", "token": "dev"})).await;
    let _login = raw.recv_frame().await;
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(h.server().connection_count(), 2);
    assert_eq!(kit.connection_state(), ConnectionState::Connected);
    let e =
        kit.room_service().join_room(roomkit_tests::join_params("nope", "alice"), Default::default()).await;
    assert_eq!(e.unwrap_err().code(), Code::ROOM_NOT_EXIST, "the connection still answers");
    h.stop().await;
}
