//! A large room over real WebSocket connections: 2,000 members join a room and its chatroom
//! in a storm while the host chats. Each member is a raw frame-level client (the SDK would
//! be heavier than the test needs at this count) that remembers the last online counts it
//! saw — from its `join_room` answer and from the `members_changed` digests — and the
//! sequence numbers of the chat messages it received.
//!
//! What a user relies on: once the room is quiet, every member's last-seen counts are the
//! truth; paging with `fetch_room_members` and `fetch_chatroom_members` returns every member
//! exactly once; every chatroom member received the host's messages complete and in order
//! from the moment it entered.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use roomkit_core::config::MessageRate;
use roomkit_server::ServerConfig;
use roomkit_tests::{within, ws::WsClient, Harness, WsHarness};
use serde::{de::IgnoredAny, Deserialize};
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch, Semaphore},
};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

/// Members of the room, the host included.
const MEMBERS: usize = 2000;

/// Members in the chatroom before the host's first message: they must receive every one.
const EARLY: usize = 20;

/// Joins in flight at once during the storm.
const CONCURRENCY: usize = 64;

/// The host sends one message per this many joins of the storm.
const JOINS_PER_MESSAGE: usize = 20;

/// The digest interval of the test's server (the default).
const DIGEST_MS: u64 = 1000;

const ROOM: &str = "stadium";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    account: String,
    /// The last online counts it saw (`room`, `chatroom`).
    counts: Option<(u64, u64)>,
    /// The `seq` of every chat message received, in arrival order.
    seqs: Vec<u64>,
    /// Members in its join answer, and whether the answer said more pages follow.
    join_page: (usize, bool),
    /// The chatroom's newest `seq` when it entered (`join_chatroom`'s `last_seq`).
    entered_after: u64,
}

impl Seen {
    /// Takes what an event says.
    fn observe(&mut self, event: Frame) {
        match event.event.as_deref() {
            Some("members_changed") => self.counts = event.counts.map(|c| (c.room, c.chatroom)),
            Some("chatroom_messages_received") => self.seqs.extend(event.messages.iter().map(|m| m.seq)),
            _ => {}
        }
    }
}

/// The parts of a server frame the members look at; the rest is skipped unread, which keeps
/// 2,000 clients reading every digest cheap.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    counts: Option<Counts>,
    #[serde(default)]
    messages: Vec<Seq>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Debug, Deserialize)]
struct Counts {
    room: u64,
    chatroom: u64,
}

#[derive(Debug, Deserialize)]
struct Seq {
    seq: u64,
}

/// The `data` of a `join_room` or `join_chatroom` answer (other answers have none of these
/// fields).
#[derive(Debug, Deserialize)]
struct Data {
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default)]
    counts: Option<Counts>,
    #[serde(default)]
    members: Vec<IgnoredAny>,
    #[serde(default)]
    next_cursor: Option<String>,
}

fn counts_of(counts: &Value) -> Option<(u64, u64)> {
    Some((counts["room"].as_u64()?, counts["chatroom"].as_u64()?))
}

/// Sends a request and reads until its answer, observing every event on the way.
async fn call(ws: &mut Ws, seen: &mut Seen, id: u64, mut request: Value) -> Result<Option<Data>, String> {
    request["id"] = json!(id);
    ws.send(Message::text(request.to_string())).await.map_err(|e| e.to_string())?;
    loop {
        let frame = next_frame(ws).await.ok_or("connection ended")?;
        if frame.event.is_some() {
            seen.observe(frame);
        } else if frame.id == Some(id) {
            return if frame.code == Some(0) { Ok(frame.data) } else { Err(format!("{request}: {frame:?}")) };
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Option<Frame> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// One member: joins the room and its chatroom (holding a permit of `gate`), says so on
/// `joined`, then reads until `stop`, counting every frame in `activity`.
async fn member(
    url: String,
    account: String,
    gate: Arc<Semaphore>,
    joined: mpsc::UnboundedSender<()>,
    mut stop: watch::Receiver<bool>,
    activity: Arc<AtomicU64>,
) -> Result<Seen, String> {
    let mut seen = Seen { account: account.clone(), ..Seen::default() };
    let permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
    call(&mut ws, &mut seen, 1, json!({"op": "login", "account_id": account, "token": "t"})).await?;
    let join = json!({"op": "join_room", "room_uuid": ROOM, "user_name": account});
    let answer = call(&mut ws, &mut seen, 2, join).await?.ok_or("a join answer without data")?;
    seen.counts = answer.counts.map(|c| (c.room, c.chatroom));
    seen.join_page = (answer.members.len(), answer.next_cursor.is_some());
    let entered = call(&mut ws, &mut seen, 3, json!({"op": "join_chatroom", "room_uuid": ROOM})).await?;
    seen.entered_after = entered.and_then(|d| d.last_seq).unwrap_or(0);
    drop(permit);
    let _ = joined.send(());
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(seen),
            frame = next_frame(&mut ws) => {
                let frame = frame.ok_or_else(|| format!("{account}: connection ended"))?;
                activity.fetch_add(1, Ordering::Relaxed);
                seen.observe(frame);
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit: both ends of 2,000 sockets live in
/// this process.
fn raise_file_limit() {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
        if soft < hard {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
        }
    }
}

/// Waits until `activity` has not moved for `quiet`.
async fn quiet(activity: &AtomicU64, quiet: Duration) {
    let mut last = activity.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(quiet).await;
        let now = activity.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Every page of `op`, as the host reads them: the uuids in order.
async fn page_all(host: &mut WsClient, op: &str) -> Vec<String> {
    let mut uuids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = json!({"op": op, "room_uuid": ROOM, "limit": 100});
        if let Some(c) = &cursor {
            request["cursor"] = json!(c);
        }
        let page = host.request_ok(request).await;
        let members = page["data"]["members"].as_array().expect("members");
        assert!(members.len() <= 100, "{page}");
        uuids.extend(members.iter().map(|m| m["uuid"].as_str().expect("uuid").to_string()));
        match page["data"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return uuids,
        }
    }
}

/// The host sends message k once `k * JOINS_PER_MESSAGE` storm members have joined;
/// returns the seqs the server gave them.
async fn host_chats(
    mut host: WsClient,
    mut progress: watch::Receiver<usize>,
    messages: usize,
) -> (WsClient, Vec<u64>) {
    let mut seqs = Vec::with_capacity(messages);
    for k in 0..messages {
        let _ = progress.wait_for(|joined| *joined >= k * JOINS_PER_MESSAGE).await;
        let sent = host
            .request_ok(json!({"op": "send_text_message", "room_uuid": ROOM, "text": format!("m{k}")}))
            .await;
        seqs.push(sent["data"]["message"]["seq"].as_u64().expect("seq"));
    }
    (host, seqs)
}

fn config() -> ServerConfig {
    let mut config = ServerConfig::default();
    // Every member connects from 127.0.0.1.
    config.max_connections_per_address = 0;
    config.core.presence_digest_ms = DIGEST_MS;
    // Fewer per-member events and smaller digests than by default, so that 2,000 clients of a
    // debug build keep up on two cores; the rules are the same.
    config.core.presence_per_member_max = 200;
    config.core.presence_digest_names = 4;
    // The host sends about 100 messages within the storm's second or two: more than 20 per
    // second from one member.
    config.core.member_message_rate = MessageRate::UNLIMITED;
    config.core.chatroom_message_rate = MessageRate::UNLIMITED;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_members_join_in_a_storm_and_see_exact_counts_and_every_message() {
    raise_file_limit();
    let started = std::time::Instant::now();
    let h = WsHarness::start(config()).await;
    let url = h.url().to_string();
    let mut host = WsClient::connect(&url).await;
    host.login("host").await;
    host.request_ok(
        json!({"op": "create_room", "room_uuid": ROOM, "room_name": "Stadium", "enable_chatroom": true}),
    )
    .await;
    host.request_ok(json!({"op": "join_room", "room_uuid": ROOM, "user_name": "Host", "role": "host"})).await;
    host.request_ok(json!({"op": "join_chatroom", "room_uuid": ROOM})).await;

    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let (stop_tx, stop) = watch::channel(false);
    let activity = Arc::new(AtomicU64::new(0));
    let (joined_tx, mut joined) = mpsc::unbounded_channel();
    let spawn = |i: usize| {
        tokio::spawn(member(
            url.clone(),
            format!("m{i:04}"),
            Arc::clone(&gate),
            joined_tx.clone(),
            stop.clone(),
            Arc::clone(&activity),
        ))
    };
    // The early members are in the chatroom before the first message.
    let mut tasks: Vec<_> = (1..EARLY).map(spawn).collect();
    for _ in 1..EARLY {
        within("an early member to join", joined.recv()).await.expect("a member joined");
    }
    // The storm, while the host chats.
    let storm = MEMBERS - EARLY;
    let (progress_tx, progress) = watch::channel(0usize);
    let messages = storm / JOINS_PER_MESSAGE;
    let chat = tokio::spawn(host_chats(host, progress, messages));
    tasks.extend((EARLY..MEMBERS).map(spawn));
    for n in 1..=storm {
        within("a storm member to join", joined.recv()).await.expect("a member joined");
        progress_tx.send_replace(n);
    }
    eprintln!("{MEMBERS} members joined after {:?}", started.elapsed());
    let (mut host, sent) = within("the host's messages", chat).await.expect("the host's task");
    quiet(&activity, Duration::from_millis(DIGEST_MS * 5 / 2)).await;
    eprintln!("quiet after {:?}", started.elapsed());

    let truth = host.request_ok(json!({"op": "get_room_info", "room_uuid": ROOM})).await;
    let truth = counts_of(&truth["data"]["counts"]).expect("counts");
    assert_eq!(truth, (MEMBERS as u64, MEMBERS as u64));

    let _ = stop_tx.send(true);
    let mut everyone = vec!["host".to_string()];
    for task in tasks {
        let seen = within("a member's report", task).await.expect("member task").expect("member");
        assert_eq!(seen.counts, Some(truth), "{}'s last-seen counts", seen.account);
        assert!(seen.join_page.0 <= 50, "{}: a join answer is one page", seen.account);
        check_messages(&seen, &sent);
        everyone.push(seen.account);
    }

    let room = page_all(&mut host, "fetch_room_members").await;
    assert_eq!(room.len(), MEMBERS, "as many as there are members");
    assert_eq!(room[0], "host", "in join order: the host first");
    let room: HashSet<String> = room.into_iter().collect();
    assert_eq!(room, everyone.iter().cloned().collect(), "every member exactly once");
    let chatroom = page_all(&mut host, "fetch_chatroom_members").await;
    assert_eq!(chatroom.len(), MEMBERS, "as many as there are chatroom members");
    assert_eq!(chatroom.into_iter().collect::<HashSet<_>>(), room, "every chatroom member exactly once");
    h.stop().await;
}

/// An early member received every message in order; a storm member, every message after
/// the chatroom's newest when it entered (its `join_chatroom` answer's `last_seq`), in
/// order, none missing.
fn check_messages(seen: &Seen, sent: &[u64]) {
    let early = seen.account.as_str() < format!("m{EARLY:04}").as_str();
    if early {
        assert_eq!(seen.seqs, sent, "{} was in the chatroom for every message", seen.account);
        return;
    }
    // Every message after `last_seq` must arrive; one accepted while the answer was read may
    // arrive live too, just before it (at or below `last_seq`).
    let after = sent.partition_point(|s| *s <= seen.entered_after);
    let from = match seen.seqs.first() {
        Some(first) => sent.iter().position(|s| s == first).expect("a message the host sent"),
        None => sent.len(),
    };
    assert!(
        from <= after,
        "{}: missed messages after seq {}: {:?}",
        seen.account,
        seen.entered_after,
        seen.seqs
    );
    assert_eq!(seen.seqs, sent[from..], "{}: complete and in order from its entry", seen.account);
}
