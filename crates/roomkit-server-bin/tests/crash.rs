//! Crash: the real `roomkit-server` binary, with the redb store in a fresh data directory, is
//! killed with SIGKILL while two clients send a stream of messages, and restarted on the same
//! directory and ports. The clients reconnect by themselves. Afterwards:
//!
//! - every message a sender saw acknowledged is in history, under the same sequence number;
//! - history is gapless, and every member was told every message of the others exactly once,
//!   in sequence order (the ones it missed while the server was down on resume);
//! - sequence numbers after the restart continue above those before it.
//!
//! Timing decides nothing here: the kill comes after a number of acknowledgements, and every
//! wait is for a condition, bounded only to keep a broken build from hanging.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use common::chaos::{
    assert_history_holds, assert_told_everything_once, client, eventually, free_port, full_history, within,
    Client, ServerProcess,
};
use roomkit_client::ChatMessage;

const ROOM: &str = "crash-room";
const PER_SENDER: usize = 300;
/// The server is killed once this many sends were acknowledged.
const KILL_AFTER_ACKS: usize = 150;

/// A send that returned: the message, and how many kills had happened when it started and
/// when it returned.
struct Acked {
    message: ChatMessage,
    started_after: usize,
    returned_after: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_and_every_member_gets_them_in_order_once() {
    let dir = common::TempDir::new();
    let (port, admin_port) = (free_port(), free_port());
    let data = dir.data().display().to_string();
    let args = ["--store".to_owned(), "redb".to_owned(), "--data-dir".to_owned(), data];
    let mut server = ServerProcess::start(dir.path(), "server-1", port, admin_port, &args);
    server.wait_ready().await;
    let url = vec![server.url()];
    let clients = vec![
        client(url.clone(), "sender-a", ROOM, true).await,
        client(url.clone(), "sender-b", ROOM, false).await,
        client(url, "listener", ROOM, false).await,
    ];
    let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();

    // Two senders, each a stream of sequential sends.
    let kills = Arc::new(AtomicUsize::new(0));
    let acks = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for sender in clients.iter().take(2).cloned() {
        let (kills, acks, failures) = (Arc::clone(&kills), Arc::clone(&acks), Arc::clone(&failures));
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..PER_SENDER {
                let text = format!("{} #{k}", sender.user);
                let started_after = kills.load(Ordering::SeqCst);
                match sender.chat.send_broadcast_text_message(&text).await {
                    Ok(message) => {
                        acks.fetch_add(1, Ordering::SeqCst);
                        acked.push(Acked {
                            message,
                            started_after,
                            returned_after: kills.load(Ordering::SeqCst),
                        });
                    }
                    Err(e) => failures.lock().expect("not poisoned").push(format!("{text}: {e}")),
                }
            }
            acked
        }));
    }

    // Mid-stream: SIGKILL, then the same data directory and ports again.
    eventually("acknowledgements before the kill", || acks.load(Ordering::SeqCst) >= KILL_AFTER_ACKS).await;
    server.kill();
    let acked_at_kill = acks.load(Ordering::SeqCst);
    kills.fetch_add(1, Ordering::SeqCst);
    let mut server = ServerProcess::start(dir.path(), "server-2", port, admin_port, &args);
    server.wait_ready().await;
    kills.fetch_add(1, Ordering::SeqCst); // 2: restarted

    let mut acked: Vec<Vec<Acked>> = Vec::new();
    for task in senders {
        acked.push(within("a sender to finish", task).await.expect("the sender task"));
    }
    let failures = failures.lock().expect("not poisoned").clone();
    let all_acked: Vec<&Acked> = acked.iter().flatten().collect();

    // Everybody catches up with history.
    let history = full_history(&clients[2].chat).await;
    let last = history.last().map_or(0, |m| m.seq);
    eventually("every member to catch up", || {
        clients.iter().zip(acked.iter().map(Some).chain(std::iter::repeat(None))).all(|(c, own)| {
            let own_last = own.and_then(|o| o.iter().map(|a| a.message.seq).max()).unwrap_or(0);
            c.told.seqs().last().copied().unwrap_or(0).max(own_last) >= last
        })
    })
    .await;
    let resumes: Vec<Vec<bool>> =
        clients.iter().map(|c| c.told.resumed.lock().expect("not poisoned").clone()).collect();
    let across = all_acked.iter().filter(|a| a.started_after == 0 && a.returned_after > 0).count();
    println!(
        "crash: {} sends acknowledged ({} before the kill, {across} in flight across it), \
         {} failed, history of {} messages, resumes {resumes:?}",
        all_acked.len(),
        acked_at_kill,
        failures.len(),
        history.len()
    );

    // History: gapless, one id per message, holding every acknowledged message as acknowledged.
    assert_history_holds(&history, all_acked.iter().map(|a| &a.message));
    assert!(failures.is_empty(), "sends failed although the SDK retries across reconnects: {failures:?}");
    assert_eq!(all_acked.len(), 2 * PER_SENDER);
    assert_eq!(history.len(), 2 * PER_SENDER, "history is exactly the acknowledged messages");

    // Numbering continues after the restart.
    let before = all_acked.iter().filter(|a| a.returned_after == 0).map(|a| a.message.seq).max();
    let after = all_acked.iter().filter(|a| a.started_after == 2).map(|a| a.message.seq).min();
    let (Some(before), Some(after)) = (before, after) else {
        panic!("messages were acknowledged both before the kill and after the restart");
    };
    assert!(after > before, "seq {after} after the restart, {before} before it");

    // Every member was told every message of the others exactly once, in order.
    assert_told_everything_once(&clients, &history);

    for c in &clients {
        within("closing a client", c.kit.close()).await;
    }
    server.kill();
}
