//! Chatroom messages: broadcast, direct, group, limits, history and ordering.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use roomkit_client::{ChatMessage, FetchHistoryOptions, HistoryOrder};
use roomkit_protocol::{Code, MessageBody};
use roomkit_server::ServerConfig;

use crate::{expect_code, join, seen, start_chatroom, start_room, within, Harness, Seen};

/// The user uuids of a message's recipient list.
fn recipients(m: &ChatMessage) -> Option<Vec<String>> {
    m.to_user_uuid_list.as_ref().map(|l| l.iter().map(ToString::to_string).collect())
}

/// A broadcast (text or custom) reaches every chatroom member except the sender, who gets
/// the stored message (with its sequence number) as the call's result; a room member outside
/// the chatroom gets nothing.
pub async fn broadcast_reaches_the_chatroom_but_not_the_sender<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms =
        start_room(&h, "r", &["alice", "bob", "carol", "dave"], true, &["alice", "bob", "carol"]).await;
    let sent = ms[0].chat().send_broadcast_text_message("hello").await.expect("broadcast");
    assert_eq!(sent.seq, 1);
    assert_eq!(sent.from_user_uuid.as_str(), "alice");
    assert_eq!(sent.from_nick, "Alice");
    assert_eq!(sent.text(), Some("hello"));
    assert_eq!(sent.to_user_uuid_list, None);
    assert_eq!(ms[0].chat().last_seq(), 1);
    for i in [1, 2] {
        let got = ms[i].messages(1).await;
        assert_eq!(got, vec![sent.clone()], "{} got a different message", ms[i].uuid());
        assert_eq!(ms[i].chat().last_seq(), 1);
    }
    for m in &mut ms {
        m.assert_quiet().await;
    }

    let custom = ms[0].chat().send_broadcast_custom_message(r#"{"kind":"wave"}"#).await.expect("custom");
    assert_eq!(custom.seq, 2);
    assert_eq!(custom.body, MessageBody::Custom { attach_str: r#"{"kind":"wave"}"#.into() });
    for i in [1, 2] {
        assert_eq!(ms[i].messages(1).await, vec![custom.clone()]);
    }
    for m in &mut ms {
        m.assert_quiet().await;
    }

    let second = ms[1].chat().send_broadcast_text_message("hi alice").await.expect("broadcast");
    assert_eq!(second.seq, 3);
    for i in [0, 2] {
        ms[i].expect(Seen::message(&second)).await;
    }
    for m in &mut ms {
        m.assert_quiet().await;
    }
    h.stop().await;
}

/// Sending needs the chatroom (`NOT_IN_CHATROOM`) and non-empty text (`BAD_REQUEST`); text of
/// 5 KB is accepted, one byte more is `MESSAGE_TOO_LONG` (the limit counts bytes). Refused
/// messages reach nobody and take no sequence number.
pub async fn broadcast_checks_membership_and_text<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_room(&h, "r", &["alice", "bob", "dave"], true, &["alice", "bob"]).await;
    expect_code(ms[2].chat().send_broadcast_text_message("let me in").await, Code::NOT_IN_CHATROOM);
    let e = expect_code(ms[0].chat().send_broadcast_text_message("").await, Code::BAD_REQUEST);
    assert!(e.msg().contains("text"), "{}", e.msg());
    let limit = 5 * 1024;
    expect_code(
        ms[0].chat().send_broadcast_text_message(&"x".repeat(limit + 1)).await,
        Code::MESSAGE_TOO_LONG,
    );
    let two_byte_chars = "é".repeat(limit / 2 + 1);
    expect_code(ms[0].chat().send_broadcast_text_message(&two_byte_chars).await, Code::MESSAGE_TOO_LONG);
    for m in &mut ms {
        m.assert_quiet().await;
    }

    let full = "y".repeat(limit);
    let sent = ms[0].chat().send_broadcast_text_message(&full).await.expect("exactly 5 KB");
    assert_eq!(sent.seq, 1, "refused messages must not take sequence numbers");
    let got = ms[1].messages(1).await;
    assert_eq!(got[0].text(), Some(full.as_str()));
    for m in &mut ms {
        m.assert_quiet().await;
    }
    h.stop().await;
}

/// A smaller `max_message_bytes` is honoured.
pub async fn message_size_limit_is_configurable<H: Harness>() {
    let mut config = ServerConfig::default();
    config.core.max_message_bytes = 16;
    let h = H::start(config).await;
    let mut ms = start_chatroom(&h, "r", &["alice", "bob"]).await;
    let e =
        expect_code(ms[0].chat().send_broadcast_text_message(&"x".repeat(17)).await, Code::MESSAGE_TOO_LONG);
    assert!(e.msg().contains("16"), "the message should state the limit: {}", e.msg());
    let sent = ms[0].chat().send_broadcast_text_message(&"x".repeat(16)).await.expect("16 bytes");
    ms[1].expect(Seen::message(&sent)).await;
    ms[1].assert_quiet().await;
    h.stop().await;
}

/// A direct message reaches only its recipient; a group message exactly the listed members.
/// Recipients must be in the chatroom (`MEMBER_NOT_FOUND`), the sender too
/// (`NOT_IN_CHATROOM`), and a group must not be empty (`BAD_REQUEST`).
pub async fn direct_and_group_messages_reach_exactly_their_recipients<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let accounts = ["alice", "bob", "carol", "erin", "dave"];
    let mut ms = start_room(&h, "r", &accounts, true, &["alice", "bob", "carol", "erin"]).await;

    let direct = ms[0].chat().send_direct_text_message("bob", "psst").await.expect("direct");
    assert_eq!(recipients(&direct), Some(vec!["bob".to_string()]));
    assert_eq!(ms[1].messages(1).await, vec![direct.clone()]);
    for m in &mut ms {
        m.assert_quiet().await;
    }

    let group = ms[0].chat().send_group_text_message(&["bob", "carol"], "you two").await.expect("group");
    assert_eq!(recipients(&group), Some(vec!["bob".to_string(), "carol".to_string()]));
    for i in [1, 2] {
        assert_eq!(ms[i].messages(1).await, vec![group.clone()]);
    }
    for m in &mut ms {
        m.assert_quiet().await;
    }

    expect_code(ms[0].chat().send_direct_text_message("dave", "outside").await, Code::MEMBER_NOT_FOUND);
    expect_code(ms[0].chat().send_direct_text_message("nobody", "anyone?").await, Code::MEMBER_NOT_FOUND);
    expect_code(
        ms[0].chat().send_group_text_message(&["bob", "dave"], "mixed").await,
        Code::MEMBER_NOT_FOUND,
    );
    expect_code(ms[0].chat().send_group_text_message(&[], "nobody").await, Code::BAD_REQUEST);
    expect_code(ms[4].chat().send_direct_text_message("alice", "from outside").await, Code::NOT_IN_CHATROOM);
    for m in &mut ms {
        m.assert_quiet().await;
    }

    // Refused messages took no sequence number.
    let next = ms[1].chat().send_direct_text_message("alice", "back").await.expect("direct");
    assert_eq!(next.seq, group.seq + 1);
    ms[0].expect(Seen::message(&next)).await;
    for m in &mut ms {
        m.assert_quiet().await;
    }
    h.stop().await;
}

/// History holds what the caller may see (broadcasts, and directed messages to or from it),
/// newest first by default, bounded by `start_time` and `limit`; `limit` 0 or over 100 is
/// `BAD_REQUEST`.
pub async fn history_returns_visible_messages_with_time_limit_and_order<H: Harness>() {
    let h = H::start(ServerConfig::default()).await;
    let ms = start_chatroom(&h, "r", &["alice", "bob", "carol"]).await;
    let (a, b, c) = (ms[0].chat(), ms[1].chat(), ms[2].chat());
    let mut all = Vec::new();
    for step in 0..6 {
        let sent = match step {
            0 => a.send_broadcast_text_message("m1 all").await,
            1 => a.send_direct_text_message("bob", "m2 alice to bob").await,
            2 => b.send_direct_text_message("carol", "m3 bob to carol").await,
            3 => c.send_broadcast_text_message("m4 all").await,
            4 => a.send_group_text_message(&["bob", "carol"], "m5 alice to bob and carol").await,
            _ => b.send_broadcast_text_message("m6 all").await,
        };
        all.push(sent.expect("send"));
        // Spread the timestamps a little so that `start_time` splits the history; the
        // expectations below are computed from the actual times, so equal times are fine.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let seqs_of = |msgs: &[ChatMessage]| msgs.iter().map(|m| m.seq).collect::<Vec<_>>();

    for (member, visible_seqs) in
        [(&ms[0], vec![1, 2, 4, 5, 6]), (&ms[2], vec![1, 3, 4, 5, 6]), (&ms[1], vec![1, 2, 3, 4, 5, 6])]
    {
        let visible: Vec<ChatMessage> =
            all.iter().filter(|m| visible_seqs.contains(&m.seq)).cloned().collect();
        let chat = member.chat();
        let fetch = |start_time, limit, order| {
            chat.fetch_chatroom_history_messages(FetchHistoryOptions {
                start_time,
                limit,
                order,
                ..Default::default()
            })
        };
        let who = member.uuid();

        let desc =
            chat.fetch_chatroom_history_messages(FetchHistoryOptions::default()).await.expect("history");
        let expected: Vec<ChatMessage> = visible.iter().rev().cloned().collect();
        assert_eq!(desc, expected, "{who}: default history (desc)");
        let asc = fetch(None, 100, HistoryOrder::Asc).await.expect("asc");
        assert_eq!(asc, visible, "{who}: asc");
        let newest = fetch(None, 2, HistoryOrder::Desc).await.expect("limit 2");
        assert_eq!(seqs_of(&newest), seqs_of(&expected[..2]), "{who}: desc limit 2");
        let oldest = fetch(None, 2, HistoryOrder::Asc).await.expect("asc limit 2");
        assert_eq!(seqs_of(&oldest), seqs_of(&visible[..2]), "{who}: asc limit 2");

        let t = all[3].time;
        let until: Vec<u64> = visible.iter().rev().filter(|m| m.time <= t).map(|m| m.seq).collect();
        assert_eq!(
            seqs_of(&fetch(Some(t), 100, HistoryOrder::Desc).await.expect("desc from t")),
            until,
            "{who}"
        );
        let from: Vec<u64> = visible.iter().filter(|m| m.time >= t).map(|m| m.seq).collect();
        assert_eq!(
            seqs_of(&fetch(Some(t), 100, HistoryOrder::Asc).await.expect("asc from t")),
            from,
            "{who}"
        );
        let before_all = all[0].time.saturating_sub(1);
        assert!(fetch(Some(before_all), 100, HistoryOrder::Desc).await.expect("desc before").is_empty());

        let e = expect_code(fetch(None, 0, HistoryOrder::Desc).await, Code::BAD_REQUEST);
        assert!(e.msg().contains("limit"), "{}", e.msg());
        expect_code(fetch(None, 101, HistoryOrder::Desc).await, Code::BAD_REQUEST);
    }
    h.stop().await;
}

/// Five members send 20 broadcasts each, concurrently, while a sixth joins and leaves the
/// room and its chatroom. Sequence numbers are 1..=100 without gaps; every member receives
/// every message but its own, in increasing sequence order; and any two members see the
/// events they both receive in the same order.
pub async fn concurrent_senders_are_seen_in_one_order_by_everyone<H: Harness>() {
    const ACCOUNTS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
    const PER_SENDER: usize = 20;
    const TOTAL: usize = ACCOUNTS.len() * PER_SENDER;
    let h = H::start(ServerConfig::default()).await;
    let mut ms = start_chatroom(&h, "busy", &ACCOUNTS).await;
    let frank = h.client("frank").await;
    let start = Arc::new(tokio::sync::Barrier::new(ACCOUNTS.len() + 1));

    let senders: Vec<_> = ms
        .iter()
        .map(|m| {
            let (chat, name, start) = (m.chat(), m.uuid(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                let mut sent = Vec::with_capacity(PER_SENDER);
                for i in 0..PER_SENDER {
                    let text = format!("{name} {i}");
                    sent.push(chat.send_broadcast_text_message(&text).await.expect("broadcast"));
                }
                sent
            })
        })
        .collect();
    let visitor = tokio::spawn(async move {
        start.wait().await;
        let f = join(&frank, "busy").await;
        f.chat().join_chatroom().await.expect("frank join_chatroom");
        f.chat().leave_chatroom().await.expect("frank leave_chatroom");
        f.ctx.leave_room().await.expect("frank leave_room");
    });

    let mut sender_of: HashMap<u64, String> = HashMap::new();
    let mut own: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (task, account) in senders.into_iter().zip(ACCOUNTS) {
        let sent = within("the senders", task).await.expect("sender task");
        let seqs: Vec<u64> = sent.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{account}'s own seqs not increasing: {seqs:?}");
        for m in &sent {
            assert_eq!(sender_of.insert(m.seq, account.to_string()), None, "seq {} given twice", m.seq);
        }
        own.insert(account.to_string(), seqs.into_iter().collect());
    }
    within("the visitor", visitor).await.expect("visitor task");
    let all: BTreeSet<u64> = sender_of.keys().copied().collect();
    assert_eq!(all, (1..=TOTAL as u64).collect(), "sequence numbers must be 1..={TOTAL} without gaps");

    let frank_events = [
        Seen::JoinRoom("frank".into()),
        Seen::JoinChatroom("frank".into()),
        Seen::LeaveChatroom("frank".into()),
        Seen::LeaveRoom("frank".into()),
    ];
    let mut timelines: Vec<(String, Vec<Seen>)> = Vec::new();
    for m in &mut ms {
        let me = m.uuid();
        let expected_messages = TOTAL - PER_SENDER;
        let mut timeline = Vec::new();
        let (mut messages, mut visits) = (0, 0);
        while messages < expected_messages || visits < frank_events.len() {
            for item in seen(&m.next_event().await) {
                match &item {
                    Seen::Message { .. } => messages += 1,
                    other if frank_events.contains(other) => visits += 1,
                    other => panic!("{me} received an unexpected event {other:?}"),
                }
                timeline.push(item);
            }
        }
        m.assert_quiet().await;
        check_timeline(&me, &timeline, &all, &own[&me], &sender_of, &frank_events);
        timelines.push((me, timeline));
    }

    // Any two members see what they both receive in the same order.
    for (x, tx) in &timelines {
        for (y, ty) in &timelines {
            if x >= y {
                continue;
            }
            let px: Vec<&Seen> = tx.iter().filter(|s| !is_from(s, y)).collect();
            let py: Vec<&Seen> = ty.iter().filter(|s| !is_from(s, x)).collect();
            assert_eq!(px, py, "{x} and {y} disagree on the order of the room's events");
        }
    }
    h.stop().await;
}

/// Whether `s` is a message sent by `who`.
fn is_from(s: &Seen, who: &str) -> bool {
    matches!(s, Seen::Message { from, .. } if from == who)
}

/// One member's view: every message but its own, once, in increasing order, from the right
/// sender; the visitor's events once each, in causal order.
fn check_timeline(
    me: &str,
    timeline: &[Seen],
    all: &BTreeSet<u64>,
    own: &BTreeSet<u64>,
    sender_of: &HashMap<u64, String>,
    frank_events: &[Seen],
) {
    let mut seqs = Vec::new();
    for item in timeline {
        if let Seen::Message { seq, from, text } = item {
            assert_eq!(Some(from), sender_of.get(seq), "{me}: seq {seq} has the wrong sender");
            assert!(text.starts_with(from.as_str()), "{me}: seq {seq} has the wrong text {text:?}");
            seqs.push(*seq);
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{me} received seqs out of order: {seqs:?}");
    let received: BTreeSet<u64> = seqs.iter().copied().collect();
    let expected: BTreeSet<u64> = all.difference(own).copied().collect();
    assert_eq!(received, expected, "{me} must receive every message but its own");
    let visits: Vec<&Seen> = timeline.iter().filter(|s| frank_events.contains(s)).collect();
    assert_eq!(visits, frank_events.iter().collect::<Vec<_>>(), "{me}: the visitor's events");
}
