//! Reconnect and resume, end to end: an in-process server, SDK clients, and faults injected
//! into their connections.
//!
//! - grace period: a member that drops and comes back within `reconnect_grace_ms` is not
//!   seen leaving or joining; one that comes back later is;
//! - dedupe: a send whose acknowledgement is lost is stored and delivered once;
//! - retention: resuming past what the store keeps says `recovered = false`;
//! - chaos: many clients, a few senders, connections of established sessions dropped at
//!   random — over the in-memory transport and over real WebSocket connections through a
//!   proxy that kills them — and every client ends with the full sequence, in order, with no
//!   gap and no duplicate.
//!
//! Also the edges: drops while resuming, rejoins the server sees before the drop, and late
//! joiners, who are not told what came before they entered.
//!
//! Outcomes never depend on timing: a client is held away by closing its connector's gate,
//! not by a long backoff, and every wait is for a condition (its limit only bounds a hang).

mod support;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use roomkit_client::{ChatMessage, ConnectionState, KeepAlivePolicy, RoomEvent, RoomKit};
use roomkit_core::store::{MemoryStore, Retention};
use roomkit_server::{net, DevAuthenticator, Server, ServerHandle};
use roomkit_transport_memory::MemoryConnector;
use roomkit_transport_ws::{QueueListener, WsConfig, WsConnector};
use support::*;
use tokio::{
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

const ROOM: &str = "resume-room";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn texts(messages: &[ChatMessage]) -> Vec<String> {
    messages.iter().map(|m| m.text().unwrap_or_default().to_string()).collect()
}

fn ids(messages: &[ChatMessage]) -> Vec<(u64, String)> {
    messages.iter().map(|m| (m.seq, m.message_uuid.to_string())).collect()
}

/// A server over the in-memory transport with a reconnect grace period of `grace_ms`, and
/// the connector to it.
fn memory_server(grace_ms: u64, retention: Option<Retention>) -> (ServerHandle, MemoryConnector) {
    let (listener, connector) = roomkit_transport_memory::transport();
    let mut server = Server::new(server_config(grace_ms), Arc::new(DevAuthenticator));
    if let Some(retention) = retention {
        server = server.with_store(MemoryStore::shared(retention));
    }
    (server.spawn(listener), connector)
}

/// Alice on a connector of her own that the test can fault, and Bob; both in the room and
/// its chatroom, each having seen a message of the other.
async fn alice_and_bob(connector: &MemoryConnector, backoff: Duration) -> (FaultyConnector, Member, Member) {
    let link = FaultyConnector::new(connector.separate());
    let alice = login(link.boxed(), client_config(backoff), "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let bob = Member::join(login(connector.separate(), client_config(backoff), "bob").await, ROOM).await;
    bob.send("hello from bob").await;
    alice.recorder.wait_for_text("hello from bob").await;
    alice.send("hello from alice").await;
    bob.recorder.wait_for_text("hello from alice").await;
    (link, alice, bob)
}

async fn close_all(members: &[&Member]) {
    for m in members {
        within("closing a client", m.kit.close()).await;
    }
}

/// A connection that goes silent without closing (everything from the server is lost on the
/// way) is noticed by the keep-alive: a ping goes unanswered, the client reconnects, resumes,
/// and catches up on what was said meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_noticed_by_keep_alive_and_resumed() {
    let (server, connector) = memory_server(30_000, None);
    let link = FaultyConnector::new(connector.separate());
    let mut config = client_config(ms(50));
    config.keep_alive = KeepAlivePolicy { interval: ms(200), timeout: ms(1000) };
    let alice = login(link.boxed(), config, "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let bob = Member::join(login(connector.separate(), client_config(ms(50)), "bob").await, ROOM).await;
    bob.send("before").await;
    alice.recorder.wait_for_text("before").await;
    let mut alice_states = alice.kit.connection_events();

    link.deafen();
    bob.send("while alice heard nothing").await;
    assert!(
        matches!(next_state(&mut alice_states).await, ConnectionState::Reconnecting { .. }),
        "the unanswered ping counts as a lost connection"
    );
    until_connected(&mut alice_states).await;
    alice.recorder.wait_for_text("while alice heard nothing").await;
    assert_eq!(link.connects(), 2, "one reconnect");
    assert_eq!(alice.kit.connection_state(), ConnectionState::Connected);
    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_and_resume_inside_the_grace_period_is_silent_and_loses_nothing() {
    let (server, connector) = memory_server(30_000, None);
    let (link, alice, bob) = alice_and_bob(&connector, ms(50)).await;
    let mut alice_events = alice.ctx.events();
    let mut alice_states = alice.kit.connection_events();
    let bob_mark = bob.recorder.len();

    // Alice's connection drops, and she cannot reconnect until the gate opens.
    link.close_gate();
    assert_eq!(link.sever(), 1, "alice had one connection");
    assert!(
        matches!(next_state(&mut alice_states).await, ConnectionState::Reconnecting { .. }),
        "alice reports that she is reconnecting"
    );
    let mut missed = Vec::new();
    for i in 0..10 {
        missed.push(bob.send(&format!("missed {i}")).await);
    }
    link.open();
    until_connected(&mut alice_states).await;
    assert_eq!(alice.kit.connection_state(), ConnectionState::Connected);

    // Alice's stream (taken before the drop) tells exactly the missed messages, in order,
    // then that she resumed with everything recovered.
    let mut told = Vec::new();
    loop {
        match within("alice's events", alice_events.recv()).await.expect("alice's stream is open") {
            RoomEvent::ChatroomMessagesReceived(messages) => told.extend(messages),
            RoomEvent::Resumed { recovered } => {
                assert!(recovered, "nothing was beyond retention");
                break;
            }
            other => panic!("alice was told {other:?} while resuming"),
        }
    }
    assert_eq!(ids(&told), ids(&missed), "alice is told every missed message, in order, once");

    // Barrier: alice's rejoin (room, chatroom) was handled before this send, so any
    // leave or join event for her would reach bob before this message.
    alice.send("alice is back").await;
    bob.recorder.wait_for_text("alice is back").await;
    let bob_saw = bob.recorder.since(bob_mark);
    assert_eq!(
        member_events_of(&bob_saw, "alice"),
        Vec::<&str>::new(),
        "bob saw alice leave or join: {bob_saw:?}"
    );
    assert_eq!(texts(&messages_of(&bob_saw)), ["alice is back"]);
    let alice_for_bob = bob.ctx.get_member("alice").expect("alice is still a member for bob");
    assert!(alice_for_bob.is_in_chatroom, "alice is still in the chatroom for bob");

    // The same context and stream keep working, with nothing told twice.
    bob.send("welcome back").await;
    match within("alice's next event", alice_events.recv()).await.expect("alice's stream is open") {
        RoomEvent::ChatroomMessagesReceived(messages) => assert_eq!(texts(&messages), ["welcome back"]),
        other => panic!("expected bob's message, got {other:?}"),
    }
    assert_eq!(alice_events.try_recv(), None, "nothing more for alice");
    assert!(alice.chat.is_in_chatroom());
    assert_eq!(alice.chat.last_seq(), bob.chat.last_seq(), "alice has seen up to bob's last send");
    assert!(alice.ctx.remote_members().iter().any(|m| m.uuid.as_str() == "bob"));
    let again = alice.kit.room_service().get_room_context(ROOM).expect("the room is still joined");
    assert_eq!(again.room_uuid(), alice.ctx.room_uuid());
    assert_eq!(alice.recorder.resumed(), [true]);
    assert_strictly_increasing("alice", &alice.recorder.seqs());
    assert_eq!(link.connects(), 2, "one reconnect");

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_grace_period_shows_leave_and_join_and_still_loses_nothing() {
    let (server, connector) = memory_server(300, None);
    let (link, alice, bob) = alice_and_bob(&connector, ms(50)).await;
    let alice_mark = alice.recorder.len();
    let bob_mark = bob.recorder.len();

    link.close_gate();
    assert_eq!(link.sever(), 1);
    // Alice is held away until the grace period is over: bob sees her leave.
    let left = ["leave_chatroom", "leave_room"];
    eventually("bob to see alice leave", || member_events_of(&bob.recorder.since(bob_mark), "alice") == left)
        .await;
    assert!(bob.ctx.get_member("alice").is_none(), "alice is gone for bob");
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(bob.send(&format!("missed {i}")).await);
    }

    link.open();
    eventually("alice to resume", || !alice.recorder.resumed().is_empty()).await;
    assert_eq!(alice.recorder.resumed(), [true], "everything she missed is in history");
    alice.send("alice is back").await;
    bob.recorder.wait_for_text("alice is back").await;
    let bob_saw = bob.recorder.since(bob_mark);
    assert_eq!(
        member_events_of(&bob_saw, "alice"),
        ["leave_chatroom", "leave_room", "join_room", "join_chatroom"],
        "bob sees alice leave, then come back"
    );
    let alice_for_bob = bob.ctx.get_member("alice").expect("alice is back for bob");
    assert!(alice_for_bob.is_in_chatroom);

    let told = messages_of(&alice.recorder.since(alice_mark));
    assert_eq!(ids(&told), ids(&missed), "alice is told what she missed, in order, once");
    assert_strictly_increasing("alice", &alice.recorder.seqs());
    assert!(alice.chat.is_in_chatroom());

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_server_sees_before_the_drop_is_silent_too() {
    let (server, connector) = memory_server(30_000, None);
    let (link, alice, bob) = alice_and_bob(&connector, ms(20)).await;
    let bob_mark = bob.recorder.len();

    // Alice's side of the connection ends; the server's stays open (it has not noticed),
    // so her rejoin arrives while her old connection still holds her place.
    link.drop_client_side();
    eventually("alice to resume", || !alice.recorder.resumed().is_empty()).await;
    alice.send("alice is back").await;
    bob.recorder.wait_for_text("alice is back").await;
    let bob_saw = bob.recorder.since(bob_mark);
    assert_eq!(
        member_events_of(&bob_saw, "alice"),
        Vec::<&str>::new(),
        "a resume within the grace period is silent, whichever side noticed the drop first"
    );
    assert_eq!(alice.recorder.resumed(), [true]);

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_while_the_session_says_connected_does_not_fail() {
    let (server, connector) = memory_server(30_000, None);
    let link = FaultyConnector::new(connector.separate());
    let mut config = client_config(ms(5));
    // A reconnect stuck on a lost answer gives up after this (and the test ends sooner).
    config.request_timeout = Duration::from_secs(5);
    let alice = login(link.boxed(), config, "alice").await;
    create_room(&alice, ROOM).await;
    let alice = Member::join(alice, ROOM).await;
    let bob = Member::join(login(connector.separate(), client_config(ms(5)), "bob").await, ROOM).await;
    bob.send("hello").await;
    alice.recorder.wait_for_text("hello").await;

    // A drop while resuming (every reconnect held at the gate)...
    link.deafen_next();
    assert_eq!(link.sever(), 1);
    eventually("alice's second connection", || link.connects() == 2).await;
    link.close_gate();
    assert_eq!(link.sever(), 1);
    eventually("a reconnect attempt at the gate", || link.waiting() >= 1).await;
    // ... one reconnect goes through and resumes.
    link.allow(1);
    eventually("alice to resume", || alice.recorder.resumed().len() == 1).await;
    eventually("alice to be connected", || alice.kit.connection_state() == ConnectionState::Connected).await;

    // If another reconnect was waiting, it goes through now; its login answer is lost, so it
    // is stuck before rejoining. (With a single reconnect, nothing happens: no wait for it.)
    link.swallow_next(1);
    link.allow(1);
    let stale = async {
        while link.frames_sent(3).unwrap_or(0) == 0 {
            tokio::time::sleep(ms(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stale).await;
    println!("connections: {}, state: {:?}", link.connects(), alice.kit.connection_state());

    // The app sends while the session says it is connected.
    let sent = alice.chat.send_broadcast_text_message("sent while connected").await;
    assert!(sent.is_ok(), "a send while connected failed: {sent:?}");

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_while_resuming_reconnects_once() {
    let (server, connector) = memory_server(30_000, None);
    let (link, alice, bob) = alice_and_bob(&connector, ms(5)).await;
    let mut alice_states = alice.kit.connection_events();

    // The first reconnect gets no answers: alice is stuck resuming on it...
    link.deafen_next();
    assert_eq!(link.sever(), 1);
    eventually("alice's second connection", || link.connects() == 2).await;
    // ... when it drops too.
    assert_eq!(link.sever(), 1);
    let mut states = Vec::new();
    loop {
        let state = next_state(&mut alice_states).await;
        states.push(state.clone());
        if state == ConnectionState::Connected {
            break;
        }
    }
    eventually("alice to resume", || !alice.recorder.resumed().is_empty()).await;
    // Round trips both ways, then more of them: a second reconnect loop, if there were one,
    // would have connected again meanwhile (its backoff is a few milliseconds).
    for round in 0..20 {
        bob.send(&format!("ping {round}")).await;
        alice.recorder.wait_for_text(&format!("ping {round}")).await;
        alice.send(&format!("pong {round}")).await;
        bob.recorder.wait_for_text(&format!("pong {round}")).await;
    }
    // Whatever changed meanwhile (a timeout of zero still polls once).
    while let Ok(Some(state)) = tokio::time::timeout(Duration::ZERO, alice_states.recv()).await {
        states.push(state);
    }
    println!("states: {states:?}, connections: {}", link.connects());
    assert_eq!(link.connects(), 3, "one connection per drop (states {states:?})");
    assert_eq!(alice.recorder.resumed(), [true]);
    assert_eq!(alice.kit.connection_state(), ConnectionState::Connected);

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_that_resumes_is_not_told_what_came_before_it_joined() {
    let (server, connector) = memory_server(30_000, None);
    let (_, alice, bob) = alice_and_bob(&connector, ms(20)).await;
    // Carol enters after the two greetings, and is told nothing before dropping.
    let link = FaultyConnector::new(connector.separate());
    let carol = Member::join(login(link.boxed(), client_config(ms(20)), "carol").await, ROOM).await;
    link.close_gate();
    assert_eq!(link.sever(), 1);
    let missed = bob.send("while carol is away").await;
    link.open();
    eventually("carol to resume", || !carol.recorder.resumed().is_empty()).await;
    assert_eq!(carol.recorder.resumed(), [true]);
    assert_eq!(
        texts(&carol.recorder.messages()),
        [missed.text().unwrap_or_default()],
        "carol is told what she missed, not the messages from before she joined"
    );

    close_all(&[&alice, &bob, &carol]).await;
    server.shutdown().await;
}

/// How a dedupe round drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    /// At once: the request is usually lost before the server reads it.
    AtOnce,
    /// After the server stored and delivered the message, its acknowledgement lost.
    AckLost,
    /// After a random number of scheduler turns: anywhere in between.
    Random,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_acknowledgement_is_lost_is_stored_and_delivered_once() {
    const ROUNDS: usize = 30;
    let (server, connector) = memory_server(30_000, None);
    let (link, alice, bob) = alice_and_bob(&connector, ms(20)).await;
    // Start counting from here: the two greetings are seqs 1 and 2.
    let base = bob.chat.last_seq();
    let alice_mark = alice.recorder.len();
    let bob_mark = bob.recorder.len();
    let mut rng = Rng::from_clock("dedupe");
    let mut results = Vec::new();
    let mut modes: HashMap<Fault, usize> = HashMap::new();

    for round in 0..ROUNDS {
        let mode = [Fault::AtOnce, Fault::AckLost, Fault::Random][round % 3];
        *modes.entry(mode).or_default() += 1;
        let text = format!("round {round}");
        if mode == Fault::AckLost {
            link.deafen();
        }
        let chat = alice.chat.clone();
        let sent = {
            let text = text.clone();
            tokio::spawn(async move { chat.send_broadcast_text_message(&text).await })
        };
        match mode {
            Fault::AtOnce => {}
            Fault::AckLost => bob.recorder.wait_for_text(&text).await,
            Fault::Random => {
                for _ in 0..rng.below(40) {
                    tokio::task::yield_now().await;
                }
            }
        }
        assert_eq!(link.sever(), 1, "round {round}: alice had one connection");
        let message = within("the send to return", sent)
            .await
            .expect("the send task")
            .unwrap_or_else(|e| panic!("round {round} ({mode:?}): the send failed: {e}"));
        assert_eq!(message.text(), Some(text.as_str()));
        // The send may have been answered before the drop: wait for the reconnect to finish
        // before the next round drops the connection again.
        eventually("alice to resume", || alice.recorder.resumed().len() == round + 1).await;
        if mode == Fault::AckLost {
            let delivered = bob.recorder.messages().into_iter().find(|m| m.text() == Some(text.as_str()));
            assert_eq!(
                delivered.map(|m| (m.seq, m.message_uuid)),
                Some((message.seq, message.message_uuid.clone())),
                "round {round}: the retry is answered with the message stored the first time"
            );
        }
        results.push(message);
    }
    println!("dedupe: rounds by mode {modes:?}");

    let expected: Vec<u64> = (base + 1..=base + ROUNDS as u64).collect();
    assert_eq!(results.iter().map(|m| m.seq).collect::<Vec<_>>(), expected, "one seq per round, none burnt");

    // History: exactly one message per round, in order, under the id the sender chose.
    let history = full_history(&bob.chat).await;
    let rounds: Vec<ChatMessage> = history.into_iter().filter(|m| m.seq > base).collect();
    assert_eq!(ids(&rounds), ids(&results), "history holds each round's message once");
    let distinct: HashSet<_> = rounds.iter().map(|m| m.message_uuid.clone()).collect();
    assert_eq!(distinct.len(), ROUNDS);
    assert_eq!(texts(&rounds), (0..ROUNDS).map(|r| format!("round {r}")).collect::<Vec<_>>());

    // Bob got each once, in order; alice was never told her own.
    bob.send("done").await;
    alice.recorder.wait_for_text("done").await;
    let bob_told = messages_of(&bob.recorder.since(bob_mark));
    assert_eq!(ids(&bob_told), ids(&results), "bob is told each round's message exactly once");
    assert_eq!(texts(&messages_of(&alice.recorder.since(alice_mark))), ["done"]);
    assert_eq!(link.connects(), ROUNDS + 1, "every round reconnected");
    assert_eq!(alice.recorder.resumed(), vec![true; ROUNDS]);

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_retention_says_not_recovered_and_live_messages_still_arrive() {
    let keep_five = Retention { max_messages: Some(5), max_age_ms: None };
    let (server, connector) = memory_server(30_000, Some(keep_five));
    let (link, alice, bob) = alice_and_bob(&connector, ms(50)).await;
    let seen = alice.chat.last_seq();
    let alice_mark = alice.recorder.len();

    // Away while bob sends 20: only the last 5 are kept.
    link.close_gate();
    assert_eq!(link.sever(), 1);
    let mut missed = Vec::new();
    for i in 0..20 {
        missed.push(bob.send(&format!("missed {i}")).await);
    }
    assert_eq!(missed[0].seq, seen + 1);
    link.open();
    eventually("alice to resume", || !alice.recorder.resumed().is_empty()).await;
    assert_eq!(alice.recorder.resumed(), [false], "some missed messages were beyond retention");
    let told = messages_of(&alice.recorder.since(alice_mark));
    assert_eq!(ids(&told), ids(&missed[15..]), "alice is told what is still kept, in order");

    // Live messages still arrive.
    let live = bob.send("live after the gap").await;
    alice.recorder.wait_for_text("live after the gap").await;
    assert_eq!(alice.chat.last_seq(), live.seq);

    // A short drop within retention is recovered again.
    let mark = alice.recorder.len();
    link.close_gate();
    assert_eq!(link.sever(), 1);
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(bob.send(&format!("missed again {i}")).await);
    }
    link.open();
    eventually("alice to resume again", || alice.recorder.resumed().len() == 2).await;
    assert_eq!(alice.recorder.resumed(), [false, true]);
    assert_eq!(ids(&messages_of(&alice.recorder.since(mark))), ids(&missed));
    assert_strictly_increasing("alice", &alice.recorder.seqs());

    close_all(&[&alice, &bob]).await;
    server.shutdown().await;
}

/// What a chaos run ends with, to check.
struct Crowd {
    members: Vec<Member>,
    /// Per member: the messages it sent (acknowledged).
    sent: Vec<Vec<ChatMessage>>,
}

/// Sends `per_sender` messages from each of the first `senders` members, sequentially, while
/// `chaos` runs; then stops `chaos` (it checks `stop`) and waits for everybody to catch up and
/// be connected.
async fn run_crowd(
    members: Vec<Member>,
    senders: usize,
    per_sender: usize,
    stop: Arc<AtomicBool>,
    chaos: tokio::task::JoinHandle<()>,
) -> Crowd {
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for member in members.iter().take(senders).cloned() {
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(per_sender);
            for k in 0..per_sender {
                let text = format!("{} #{k}", member.user);
                let started = std::time::Instant::now();
                match tokio::time::timeout(LIMIT, member.chat.send_broadcast_text_message(&text)).await {
                    Ok(Ok(message)) => {
                        if started.elapsed() > Duration::from_secs(15) {
                            println!("slow: {text} took {:?}", started.elapsed());
                        }
                        sent.push(message)
                    }
                    Ok(Err(e)) => panic!("{text}: the send failed: {e}"),
                    Err(_) => panic!("{text}: the send did not return within {LIMIT:?}"),
                }
            }
            sent
        }));
    }
    let mut sent = vec![Vec::new(); members.len()];
    for (i, task) in tasks.into_iter().enumerate() {
        sent[i] = within("a sender to finish", task).await.expect("the sender task");
    }
    stop.store(true, Ordering::SeqCst);
    within("the chaos task", chaos).await.expect("the chaos task");
    let sending = started.elapsed();
    let total = (senders * per_sender) as u64;
    let last = sent.iter().flatten().map(|m| m.seq).max().unwrap_or(0);
    assert!(last >= total, "{total} messages sent, the last seq is {last}");
    eventually("every client to catch up", || {
        members.iter().zip(&sent).all(|(m, own)| {
            let own_last = own.last().map_or(0, |m| m.seq);
            m.recorder.last_seq().max(own_last) == last
        })
    })
    .await;
    // And back on line: a client dropped after the last message has nothing to catch up on.
    eventually("every client to be connected", || {
        members.iter().all(|m| m.kit.connection_state() == ConnectionState::Connected)
    })
    .await;
    println!("sending took {sending:?}, catching up {:?} more", started.elapsed() - sending);
    Crowd { members, sent }
}

/// Every member has exactly the full sequence: what it was told and what it sent together are
/// every message of history, once, and what it was told came in strictly increasing order.
async fn check_crowd(name: &str, crowd: &Crowd) {
    let history = full_history(&crowd.members[0].chat).await;
    let all: Vec<u64> = history.iter().map(|m| m.seq).collect();
    let total = crowd.sent.iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "{name}: history is 1..={total} with no gap");
    let uuids: HashSet<_> = history.iter().map(|m| m.message_uuid.clone()).collect();
    assert_eq!(uuids.len() as u64, total, "{name}: every stored message has its own id");
    let sent_ids: HashSet<_> = crowd.sent.iter().flatten().map(|m| (m.seq, m.message_uuid.clone())).collect();
    let history_ids: HashSet<_> = history.iter().map(|m| (m.seq, m.message_uuid.clone())).collect();
    assert_eq!(sent_ids, history_ids, "{name}: history is exactly what was acknowledged");
    for (member, own) in crowd.members.iter().zip(&crowd.sent) {
        let told = member.recorder.seqs();
        assert_strictly_increasing(&format!("{name}: {}", member.user), &told);
        let own: BTreeSet<u64> = own.iter().map(|m| m.seq).collect();
        let told_set: BTreeSet<u64> = told.iter().copied().collect();
        assert!(told_set.is_disjoint(&own), "{name}: {} was told its own messages", member.user);
        let everything: Vec<u64> = told_set.union(&own).copied().collect();
        if everything != all {
            let missing: Vec<u64> =
                all.iter().filter(|s| !told_set.contains(s) && !own.contains(s)).copied().collect();
            let (lo, hi) = (missing[0].saturating_sub(3), missing[missing.len() - 1] + 3);
            let around: Vec<String> = member
                .recorder
                .since(0)
                .iter()
                .filter_map(|e| match e {
                    RoomEvent::ChatroomMessagesReceived(m) => {
                        let near: Vec<u64> =
                            m.iter().map(|m| m.seq).filter(|s| (lo..=hi).contains(s)).collect();
                        (!near.is_empty()).then(|| format!("told {near:?}"))
                    }
                    RoomEvent::Resumed { recovered } => Some(format!("resumed({recovered})")),
                    _ => None,
                })
                .collect();
            let own_near: Vec<u64> = own.iter().copied().filter(|s| (lo..=hi).contains(s)).collect();
            panic!(
                "{name}: {} misses seqs {missing:?}; its own sends near them: {own_near:?}; \
                 events near them: {around:?}",
                member.user
            );
        }
        let recovered = member.recorder.resumed();
        assert!(recovered.iter().all(|r| *r), "{name}: {} resumed without recovering", member.user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_over_the_memory_transport_every_client_ends_with_the_full_sequence() {
    memory_chaos("chaos (memory)", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_over_the_memory_transport_with_drops_at_any_moment() {
    memory_chaos("chaos (memory, any moment)", true).await;
}

/// 50 clients, 3 of them sending 500 messages each, while a few connections are severed every
/// 50 ms: only those of established sessions, or (`any_moment`) also of clients still
/// resuming.
async fn memory_chaos(name: &'static str, any_moment: bool) {
    const CLIENTS: usize = 50;
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 500;
    let (server, connector) = memory_server(30_000, Some(Retention::default()));
    let mut links = Vec::new();
    let mut members = Vec::new();
    for i in 0..CLIENTS {
        let link = FaultyConnector::new(connector.separate());
        let kit = login(link.boxed(), client_config(ms(20)), &format!("user-{i:02}")).await;
        if i == 0 {
            create_room(&kit, ROOM).await;
        }
        members.push(Member::join(kit, ROOM).await);
        links.push(link);
    }

    // Drop a few connections every 50 ms (senders among them), until the senders are done.
    let stop = Arc::new(AtomicBool::new(false));
    let severed = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (stop, severed, links) = (Arc::clone(&stop), Arc::clone(&severed), links.clone());
        let kits: Vec<RoomKit> = members.iter().map(|m| m.kit.clone()).collect();
        tokio::spawn(async move {
            let mut rng = Rng::from_clock(name);
            let sever = |victim: usize| {
                if any_moment || kits[victim].connection_state() == ConnectionState::Connected {
                    severed.fetch_add(links[victim].sever(), Ordering::SeqCst);
                }
            };
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(ms(50)).await;
                for _ in 0..=rng.below(3) {
                    sever(rng.below(CLIENTS as u64) as usize);
                }
                if rng.below(4) == 0 {
                    sever(rng.below(SENDERS as u64) as usize);
                }
            }
        })
    };
    let crowd = run_crowd(members, SENDERS, PER_SENDER, stop, chaos).await;

    let severed = severed.load(Ordering::SeqCst);
    let resumes = || crowd.members.iter().map(|m| m.recorder.resumed().len()).sum::<usize>();
    if !any_moment {
        // A drop at the very end may not have been noticed yet: each drop of an established
        // session ends in one resume.
        eventually("every dropped client to resume", || resumes() >= severed).await;
    }
    let reconnects: usize = links.iter().map(|l| l.connects() - 1).sum();
    let resumed = resumes();
    println!(
        "{name}: {CLIENTS} clients, {} messages, {severed} connections severed, \
         {reconnects} reconnects, {resumed} resumes",
        SENDERS * PER_SENDER
    );
    assert!(severed >= 10, "faults happened: only {severed} connections were severed");
    if any_moment {
        // (A connection abandoned by a second reconnect loop can be severed unnoticed.)
        assert!(reconnects >= 10 && resumed >= 10, "clients reconnected and resumed");
    } else {
        // Each drop of an established session: one reconnect, one resume.
        assert_eq!((reconnects, resumed), (severed, severed), "every dropped client came back once");
    }
    check_crowd(name, &crowd).await;

    let refs: Vec<&Member> = crowd.members.iter().collect();
    close_all(&refs).await;
    server.shutdown().await;
}

/// A TCP proxy in front of the server for one client: it forwards bytes both ways and kills
/// the client's connection on demand — the real socket closes a network failure causes
/// (every other one with a reset).
struct Proxy {
    addr: SocketAddr,
    live: Arc<Mutex<HashMap<u64, AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = tcp.local_addr().expect("the proxy's address");
        let live: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
        let next = AtomicU64::new(0);
        let accept = {
            let live = Arc::clone(&live);
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = tcp.accept().await else { continue };
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let live_too = Arc::clone(&live);
                    let mut guard = live.lock().expect("not poisoned");
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            if id % 2 == 0 {
                                // Dropped with a reset rather than a FIN.
                                let _ = client.set_zero_linger();
                                let _ = server.set_zero_linger();
                            }
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        live_too.lock().expect("not poisoned").remove(&id);
                    });
                    guard.insert(id, task.abort_handle());
                }
            })
            .abort_handle()
        };
        Proxy { addr, live, accept }
    }

    /// Kills every proxied connection; how many there were.
    fn kill(&self) -> usize {
        let mut live = self.live.lock().expect("not poisoned");
        let n = live.len();
        for (_, task) in live.drain() {
            task.abort();
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_over_websocket_with_real_socket_closes_every_client_ends_with_the_full_sequence() {
    const CLIENTS: usize = 20;
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 200;
    // The server as the binary wires it: HTTP on TCP, `/v1` upgraded to WebSocket.
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind the server");
    let server_addr = tcp.local_addr().expect("the server's address");
    let (listener, sender) = QueueListener::new(format!("ws://{server_addr}/v1"), 1024);
    let server = Server::new(server_config(30_000), Arc::new(DevAuthenticator))
        .with_store(MemoryStore::shared(Retention::default()))
        .spawn(listener);
    let (stop_http, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(net::serve(
        tcp,
        net::client_router(WsConfig::default(), sender),
        Duration::from_secs(10),
        stop_rx,
    ));
    let mut proxies = Vec::new();
    let mut members = Vec::new();
    for i in 0..CLIENTS {
        let proxy = Proxy::start(server_addr).await;
        let url = format!("ws://{}/v1", proxy.addr);
        let kit = login(WsConnector::new(url), client_config(ms(20)), &format!("ws-{i:02}")).await;
        if i == 0 {
            create_room(&kit, ROOM).await;
        }
        members.push(Member::join(kit, ROOM).await);
        proxies.push(proxy);
    }

    // Kill a connection or two every 50 ms, until the senders are done (established sessions
    // only, as in the memory variant).
    let stop = Arc::new(AtomicBool::new(false));
    let proxies = Arc::new(proxies);
    let killed = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (stop, killed, proxies) = (Arc::clone(&stop), Arc::clone(&killed), Arc::clone(&proxies));
        let kits: Vec<RoomKit> = members.iter().map(|m| m.kit.clone()).collect();
        tokio::spawn(async move {
            let mut rng = Rng::from_clock("chaos (websocket)");
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(ms(50)).await;
                for _ in 0..=rng.below(2) {
                    let victim = rng.below(CLIENTS as u64) as usize;
                    if kits[victim].connection_state() == ConnectionState::Connected {
                        killed.fetch_add(proxies[victim].kill(), Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let crowd = run_crowd(members, SENDERS, PER_SENDER, stop, chaos).await;

    let killed = killed.load(Ordering::SeqCst);
    let resumes = || crowd.members.iter().map(|m| m.recorder.resumed().len()).sum::<usize>();
    eventually("every dropped client to resume", || resumes() >= killed).await;
    let resumed = resumes();
    println!(
        "chaos (websocket): {CLIENTS} clients, {} messages, {killed} TCP connections killed, \
         {resumed} resumes",
        SENDERS * PER_SENDER
    );
    assert!(killed >= 10, "faults happened: only {killed} connections were killed");
    assert_eq!(resumed, killed, "every dropped client came back once");
    check_crowd("chaos (websocket)", &crowd).await;

    let refs: Vec<&Member> = crowd.members.iter().collect();
    close_all(&refs).await;
    server.shutdown().await;
    let _ = stop_http.send(true);
    let _ = within("the HTTP front to stop", http).await;
}

/// A late joiner can ask for the chatroom's last messages in the join call itself; what came
/// before is history, so a later resume does not tell it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_the_chatroom_with_history_returns_the_last_messages_oldest_first() {
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = roomkit_server::Server::new(
        Default::default(),
        std::sync::Arc::new(roomkit_server::DevAuthenticator),
    )
    .spawn(listener);
    let alice = roomkit_client::RoomKit::connect(connector.clone()).await.unwrap();
    alice.login("alice", "t").await.unwrap();
    let params = roomkit_client::CreateRoomParams {
        room_uuid: "h".into(),
        room_name: "H".into(),
        ..Default::default()
    };
    alice
        .room_service()
        .create_room(params, roomkit_client::CreateRoomOptions { enable_chatroom: true })
        .await
        .unwrap();
    let join = |name: &str| roomkit_client::JoinRoomParams {
        room_uuid: "h".into(),
        user_name: name.into(),
        ..Default::default()
    };
    let a = alice.room_service().join_room(join("Alice"), Default::default()).await.unwrap();
    a.chat_controller().join_chatroom().await.unwrap();
    for text in ["one", "two", "three"] {
        a.chat_controller().send_broadcast_text_message(text).await.unwrap();
    }
    let bob = roomkit_client::RoomKit::connect(connector).await.unwrap();
    bob.login("bob", "t").await.unwrap();
    let b = bob.room_service().join_room(join("Bob"), Default::default()).await.unwrap();
    let last = b.chat_controller().join_chatroom_with_history(2).await.unwrap();
    let texts: Vec<_> = last.iter().filter_map(|m| m.text()).collect();
    assert_eq!(texts, ["two", "three"]);
    assert_eq!(b.chat_controller().last_seq(), 3, "the catch-up cursor starts at the newest message");
    server.shutdown().await;
}

/// A server whose answers to `ping` are late (on a slow link they wait behind a backlog)
/// but whose other frames keep arriving is there: the keep-alive counts any frame as a sign
/// of life and does not reconnect. Once nothing at all arrives, the connection counts as
/// lost as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_from_the_server_keeps_the_connection_alive_without_ping_answers() {
    use roomkit_core::transport::{Connection, Frame, Listener};
    use roomkit_protocol::{codec, ops, UserUuid};
    let (mut listener, connector) = roomkit_transport_memory::transport();
    let talking = Arc::new(AtomicBool::new(true));
    let still_talking = Arc::clone(&talking);
    // Answers the login, never a ping, and sends an unrelated frame every 100 ms while talking.
    let server = tokio::spawn(async move {
        let Connection { mut sink, mut stream, .. } = listener.accept().await.expect("a connection");
        let mut tick = tokio::time::interval(ms(100));
        loop {
            tokio::select! {
                frame = stream.recv() => {
                    let Ok(frame) = frame else { return };
                    let request = codec::decode_request(&frame).expect("a request");
                    if let ops::Request::Login(login) = request.request {
                        let output = ops::LoginOutput {
                            user_uuid: UserUuid::new(&login.account_id).expect("valid"),
                            name: login.account_id.to_string(),
                        };
                        let answer: Frame = codec::encode_output::<ops::Login>(request.id, &output).into();
                        sink.send(&[answer]).await.expect("sent");
                    }
                }
                _ = tick.tick() => if still_talking.load(Ordering::SeqCst) {
                    let unrelated: Frame = codec::encode_output::<ops::Ping>(u64::MAX, &ops::Empty {}).into();
                    if sink.send(&[unrelated]).await.is_err() {
                        return;
                    }
                },
            }
        }
    });
    let mut config = client_config(ms(50));
    config.keep_alive = KeepAlivePolicy { interval: ms(200), timeout: ms(1000) };
    let alice = login(connector, config, "alice").await;
    let mut states = alice.connection_events();
    tokio::time::sleep(ms(4000)).await;
    assert_eq!(alice.connection_state(), ConnectionState::Connected, "no ping was answered, yet frames came");
    talking.store(false, Ordering::SeqCst);
    assert!(
        matches!(next_state(&mut states).await, ConnectionState::Reconnecting { .. }),
        "silence counts as a lost connection"
    );
    server.abort();
}
