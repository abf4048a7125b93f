//! Who is in the room and how many are online, as the local member knows it.
//!
//! A small room tells every join and leave as it happens; a large one coalesces them into
//! `members_changed` digests that carry the exact counts and name only some members. Both
//! are told to the app through the same NERoom callbacks: a digest becomes the per-member
//! events of the members it names, and the counts are told whenever they change
//! ([`RoomEvent::MemberCountChanged`]). Counts come from answers and digests (the truth
//! when sent) and move by one per per-member event in between.

use roomkit_protocol::{ops::MembersPage, MemberCounts, MembersChanged, RoomInfo, RoomMember};

use super::RoomMirror;
use crate::RoomEvent;

impl RoomMirror {
    /// The online counts as last told.
    pub(crate) fn counts(&self) -> MemberCounts {
        self.counts
    }

    /// Takes counts the server said are exact; tells them if they changed.
    pub(crate) fn set_counts(&mut self, counts: MemberCounts) -> Vec<RoomEvent> {
        if counts == self.counts {
            return Vec::new();
        }
        self.counts = counts;
        vec![RoomEvent::MemberCountChanged(counts)]
    }

    /// Moves the counts by what per-member events said; tells them if they changed.
    fn shift_counts(&mut self, room: i64, chatroom: i64) -> Vec<RoomEvent> {
        let shift = |n: u64, by: i64| n.saturating_add_signed(by);
        let counts = MemberCounts {
            room: shift(self.counts.room, room),
            chatroom: shift(self.counts.chatroom, chatroom),
        };
        self.set_counts(counts)
    }

    pub(super) fn joined_room(&mut self, members: Vec<RoomMember>) -> Vec<RoomEvent> {
        for m in &members {
            self.members.insert(m.uuid.clone(), m.clone());
        }
        let n = members.len() as i64;
        let mut told = vec![RoomEvent::MemberJoinRoom(members)];
        told.extend(self.shift_counts(n, 0));
        told
    }

    pub(super) fn left_room(&mut self, members: Vec<RoomMember>) -> Vec<RoomEvent> {
        for m in &members {
            self.members.remove(&m.uuid);
        }
        let n = members.len() as i64;
        let mut told = vec![RoomEvent::MemberLeaveRoom(members)];
        told.extend(self.shift_counts(-n, 0));
        told
    }

    pub(super) fn joined_chatroom(&mut self, members: Vec<RoomMember>) -> Vec<RoomEvent> {
        // The local member's own entry is counted by this event, not again by its answer.
        self.set_in_chatroom(&members, true);
        let n = members.len() as i64;
        let mut told = vec![RoomEvent::MemberJoinChatroom(members)];
        told.extend(self.shift_counts(0, n));
        told
    }

    pub(super) fn left_chatroom(&mut self, members: Vec<RoomMember>) -> Vec<RoomEvent> {
        self.set_in_chatroom(&members, false);
        let n = members.len() as i64;
        let mut told = vec![RoomEvent::MemberLeaveChatroom(members)];
        told.extend(self.shift_counts(0, -n));
        told
    }

    /// A `members_changed` digest: the named members become per-member events (joins before
    /// leaves, so that a member who came and went within the interval ends up gone), and its
    /// counts replace the local ones. The local member is left out of the names: it learns
    /// its own joins and leaves from its own calls.
    pub(super) fn digest(&mut self, digest: MembersChanged) -> Vec<RoomEvent> {
        self.digests += 1;
        let local = self.local.clone();
        let others = |list: Vec<RoomMember>| -> Vec<RoomMember> {
            list.into_iter().filter(|m| m.uuid != local).collect()
        };
        let mut told = Vec::new();
        let joined = others(digest.joined);
        if !joined.is_empty() {
            for m in &joined {
                self.members.insert(m.uuid.clone(), m.clone());
            }
            told.push(RoomEvent::MemberJoinRoom(joined));
        }
        let entered = others(digest.chatroom_joined);
        if !entered.is_empty() {
            self.set_in_chatroom(&entered, true);
            told.push(RoomEvent::MemberJoinChatroom(entered));
        }
        let went_out = others(digest.chatroom_left);
        if !went_out.is_empty() {
            self.set_in_chatroom(&went_out, false);
            told.push(RoomEvent::MemberLeaveChatroom(went_out));
        }
        let left = others(digest.left);
        if !left.is_empty() {
            for m in &left {
                self.members.remove(&m.uuid);
            }
            told.push(RoomEvent::MemberLeaveRoom(left));
        }
        told.extend(self.set_counts(digest.counts));
        told
    }

    /// Digests applied so far: read when a `join_chatroom` is sent, for
    /// [`local_entered_chatroom`](Self::local_entered_chatroom).
    pub(crate) fn digests(&self) -> u64 {
        self.digests
    }

    /// The local member's `join_chatroom` succeeded; `digests_before` is what
    /// [`digests`](Self::digests) said when it was sent. In a small room the event that said
    /// so came first and changed everything already; in a large one no event comes, so the
    /// entry is told here, as the small room's event would have told it, and counted unless a
    /// digest came in the meantime. The answer reads the store and may come after later
    /// events: a digest applied since the request may already count the entry (counting it
    /// again would stay wrong once the room is quiet), and one that does not is followed by
    /// another that does, since the entry is a change to digest (until then the caller reads
    /// the exact counts: see `ChatController::enter`).
    pub(crate) fn local_entered_chatroom(&mut self, digests_before: u64) -> Vec<RoomEvent> {
        match self.members.get(&self.local) {
            Some(me) if !me.is_in_chatroom => {
                let mut me = me.clone();
                me.is_in_chatroom = true;
                if self.digests == digests_before {
                    return self.joined_chatroom(vec![me]);
                }
                self.set_in_chatroom(std::slice::from_ref(&me), true);
                vec![RoomEvent::MemberJoinChatroom(vec![me])]
            }
            _ => Vec::new(),
        }
    }

    /// The local member's `leave_chatroom` succeeded (no event tells the leaver).
    pub(crate) fn local_left_chatroom(&mut self) -> Vec<RoomEvent> {
        match self.members.get_mut(&self.local) {
            Some(me) if me.is_in_chatroom => {
                me.is_in_chatroom = false;
                self.shift_counts(0, -1)
            }
            _ => Vec::new(),
        }
    }

    /// A page of `fetch_room_members` or `fetch_chatroom_members`: its members are seen, its
    /// counts are exact.
    pub(crate) fn fetched(&mut self, page: &MembersPage) -> Vec<RoomEvent> {
        for m in &page.members {
            self.members.insert(m.uuid.clone(), m.clone());
        }
        self.set_counts(page.counts)
    }

    /// A `get_room_info` answer.
    pub(crate) fn room_info(&mut self, info: RoomInfo, counts: MemberCounts) -> Vec<RoomEvent> {
        self.info = info;
        self.set_counts(counts)
    }

    /// Marks members in or out of the chatroom; members not seen before are seen now.
    fn set_in_chatroom(&mut self, members: &[RoomMember], inside: bool) {
        for m in members {
            self.members.entry(m.uuid.clone()).or_insert_with(|| m.clone()).is_in_chatroom = inside;
        }
    }

    /// Whether `user` is among the members seen.
    #[cfg(test)]
    pub(crate) fn has_seen(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use roomkit_protocol::{ops::MembersPage, Event, Role};

    use crate::{
        mirror::{
            tests::{answer, counts, digest, live_message, member, room},
            RoomMirror,
        },
        RoomEvent,
    };

    fn user(s: &str) -> roomkit_protocol::UserUuid {
        s.parse().expect("valid id")
    }

    /// Dave's mirror of a large room: the answer shows him, the host and a page of two.
    // `into()`: the protocol boxes the host in newer versions.
    #[allow(clippy::useless_conversion)]
    fn dave_in_a_large_room() -> RoomMirror {
        let mut joined =
            answer(vec![member("dave", false), member("m1", true), member("m2", false)], (900, 600));
        let mut host = member("alice", true);
        host.role = Role::Host;
        joined.host = Some(host.into());
        joined.next_cursor = Some("3".into());
        RoomMirror::new(user("dave"), joined)
    }

    fn uuids(members: &[roomkit_protocol::RoomMember]) -> Vec<&str> {
        members.iter().map(|m| m.uuid.as_str()).collect()
    }

    #[test]
    fn the_join_answer_shows_the_joiner_the_host_the_page_and_the_counts() {
        let mirror = dave_in_a_large_room();
        assert_eq!(mirror.counts(), counts(900, 600));
        for seen in ["dave", "alice", "m1", "m2"] {
            assert!(mirror.has_seen(seen), "{seen}");
        }
        assert_eq!(mirror.remote_members().count(), 3, "only the members seen, not 899");
        assert_eq!(mirror.member("alice").map(|m| m.role), Some(Role::Host));
    }

    #[test]
    fn a_digest_tells_the_named_members_through_the_per_member_events_then_the_counts() {
        let mut mirror = dave_in_a_large_room();
        let mut d = digest((902, 601));
        d.joined_count = 3;
        d.left_count = 1;
        d.chatroom_joined_count = 2;
        d.chatroom_left_count = 1;
        d.joined = vec![member("n1", false), member("n2", false)];
        d.chatroom_joined = vec![member("n1", true), member("m2", true)];
        d.chatroom_left = vec![member("m1", false)];
        d.left = vec![member("m1", false)];
        let told = mirror.apply(Event::MembersChanged(Box::new(d)));
        let names: Vec<(&str, Vec<&str>)> = told
            .iter()
            .map(|e| match e {
                RoomEvent::MemberJoinRoom(m) => ("join room", uuids(m)),
                RoomEvent::MemberJoinChatroom(m) => ("join chatroom", uuids(m)),
                RoomEvent::MemberLeaveChatroom(m) => ("leave chatroom", uuids(m)),
                RoomEvent::MemberLeaveRoom(m) => ("leave room", uuids(m)),
                RoomEvent::MemberCountChanged(c) => {
                    assert_eq!(*c, counts(902, 601));
                    ("counts", vec![])
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("join room", vec!["n1", "n2"]),
                ("join chatroom", vec!["n1", "m2"]),
                ("leave chatroom", vec!["m1"]),
                ("leave room", vec!["m1"]),
                ("counts", vec![]),
            ]
        );
        assert_eq!(mirror.counts(), counts(902, 601), "the digest's counts, not the names counted");
        assert!(mirror.member("n1").is_some_and(|m| m.is_in_chatroom));
        assert!(mirror.member("m2").is_some_and(|m| m.is_in_chatroom));
        assert!(mirror.member("n2").is_some_and(|m| !m.is_in_chatroom));
        assert!(!mirror.has_seen("m1"));
    }

    #[test]
    fn a_digest_without_names_or_change_tells_only_what_changed() {
        let mut mirror = dave_in_a_large_room();
        let told = mirror.apply(Event::MembersChanged(Box::new(digest((20_500, 20_000)))));
        assert_eq!(told, [RoomEvent::MemberCountChanged(counts(20_500, 20_000))]);
        let told = mirror.apply(Event::MembersChanged(Box::new(digest((20_500, 20_000)))));
        assert_eq!(told, [], "same counts: nothing to tell");
    }

    #[test]
    fn a_digest_never_names_the_local_member_to_itself() {
        let mut mirror = dave_in_a_large_room();
        let mut d = digest((900, 600));
        d.joined = vec![member("dave", false)];
        d.left = vec![member("dave", false)];
        assert_eq!(mirror.apply(Event::MembersChanged(Box::new(d))), []);
        assert!(mirror.local_member().is_some(), "still there");
    }

    #[test]
    fn per_member_events_move_the_counts_by_one() {
        let mut mirror = dave_in_a_large_room();
        let carol = member("carol", false);
        let mut m = dave_in_a_large_room();
        m.apply(Event::MemberJoinRoom { room_uuid: room(), members: vec![carol.clone()] });
        assert_eq!(m.counts(), counts(901, 600));
        m.apply(Event::MemberJoinChatroom { room_uuid: room(), members: vec![member("carol", true)] });
        assert_eq!(m.counts(), counts(901, 601));
        m.apply(Event::MemberLeaveChatroom { room_uuid: room(), members: vec![carol.clone()] });
        m.apply(Event::MemberLeaveRoom { room_uuid: room(), members: vec![carol] });
        assert_eq!(m.counts(), counts(900, 600));
        mirror.apply(Event::MembersChanged(Box::new(digest((3, 1)))));
        assert_eq!(mirror.counts(), counts(3, 1), "a digest is the truth");
    }

    #[test]
    fn entering_the_chatroom_without_an_event_is_told_and_counted_once() {
        let mut mirror = dave_in_a_large_room();
        let told = mirror.local_entered_chatroom(0);
        assert!(matches!(&told[..], [RoomEvent::MemberJoinChatroom(m), RoomEvent::MemberCountChanged(c)]
            if uuids(m) == ["dave"] && *c == counts(900, 601)));
        assert_eq!(mirror.local_entered_chatroom(0), [], "already inside");
        // In a small room the event comes first: the answer then changes nothing.
        let mut small = dave_in_a_large_room();
        small.apply(Event::MemberJoinChatroom { room_uuid: room(), members: vec![member("dave", true)] });
        assert_eq!(small.local_entered_chatroom(0), []);
        assert_eq!(small.counts(), counts(900, 601));
    }

    /// The answer to `join_chatroom` reads the store and may come after a digest that already
    /// counted the entry: counted again, the count would stay one too high once the room is
    /// quiet (seen after a join storm).
    #[test]
    fn an_entry_a_digest_already_counted_is_not_counted_again() {
        let mut mirror = dave_in_a_large_room();
        let sent_at = mirror.digests();
        mirror.apply(Event::MembersChanged(Box::new(digest((900, 601)))));
        let told = mirror.local_entered_chatroom(sent_at);
        assert!(matches!(&told[..], [RoomEvent::MemberJoinChatroom(m)] if uuids(m) == ["dave"]), "{told:?}");
        assert_eq!(mirror.counts(), counts(900, 601), "counted once, by the digest");
        assert!(mirror.local_in_chatroom());
        // A digest from before the entry: the count is short until the next one, which the
        // entry is part of.
        let mut early = dave_in_a_large_room();
        let sent_at = early.digests();
        early.apply(Event::MembersChanged(Box::new(digest((900, 600)))));
        early.local_entered_chatroom(sent_at);
        assert_eq!(early.counts(), counts(900, 600));
        early.apply(Event::MembersChanged(Box::new(digest((900, 601)))));
        assert_eq!(early.counts(), counts(900, 601));
    }

    #[test]
    fn a_fetched_page_is_seen_and_its_counts_are_the_truth() {
        let mut mirror = dave_in_a_large_room();
        let page = MembersPage {
            members: vec![member("m3", false), member("m4", true)],
            next_cursor: Some("5".into()),
            counts: counts(905, 602),
        };
        assert_eq!(mirror.fetched(&page), [RoomEvent::MemberCountChanged(counts(905, 602))]);
        assert!(mirror.has_seen("m3") && mirror.has_seen("m4"));
        assert_eq!(mirror.fetched(&page), [], "same counts");
    }

    #[test]
    fn ephemeral_messages_are_told_at_once_even_while_catching_up_and_never_counted() {
        let mut mirror = dave_in_a_large_room();
        mirror.note_seq(4);
        let mut like = live_message(0, "m1");
        like.persist = false;
        let batch = |m: Vec<roomkit_protocol::ChatMessage>| Event::ChatroomMessagesReceived {
            room_uuid: room(),
            messages: m.into_iter().map(std::sync::Arc::new).collect(),
        };
        let seqs = |told: Vec<RoomEvent>| match &told[..] {
            [RoomEvent::ChatroomMessagesReceived(m)] => m.iter().map(|m| m.seq).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(seqs(mirror.apply(batch(vec![like.clone()]))), [0]);
        assert_eq!(seqs(mirror.apply(batch(vec![like.clone()]))), [0], "not deduplicated");
        mirror.begin_resume();
        assert_eq!(seqs(mirror.apply(batch(vec![live_message(6, "m1"), like.clone()]))), [0], "not held");
        assert_eq!(mirror.last_seq(), 4, "an ephemeral message has no place in the sequence");
        assert_eq!(seqs(mirror.end_resume().into_iter().collect()), [6]);
        assert_eq!(mirror.last_seq(), 6);
    }
}
