//! A wake-up's deliveries to one member list, queued recipient by recipient.
//!
//! A shard's wake-up often holds a burst of events to the same room: every message sent to a
//! chatroom while the shard was busy goes to the same member list (core hands each event
//! the list it shares with the room's roster, unchanged while nobody joins or leaves). Queued
//! event by event, each event touches every member's queue once: a thousand members and
//! fifty events cost fifty thousand locks on a thousand queues, each time gone from the
//! cache. Held back until the burst ends and then queued member by member, they cost each
//! member one lock and one look-up, whatever the number of events.
//!
//! Every connection still gets its frames in the order core produced them: a burst holds
//! the events to one list in order, and the answers and directed frames produced between
//! them; a member gets, in that same order, each event that does not leave it out and each
//! frame addressed to it. A frame to a connection outside the list is queued after the burst
//! (it receives none of the burst's events, so nothing of its own is reordered).

use roomkit_core::{transport::Frame, Audience, ConnId};

use super::ShardState;
use crate::outbox::Shed;

/// Events to one member list, and the frames to single connections produced among them.
pub(super) struct Burst {
    /// The first event's audience: its list is the burst's.
    list: Audience,
    items: Vec<Item>,
}

enum Item {
    /// An event to the list, but `except`.
    Event { frame: Frame, shed: Shed, except: Option<ConnId>, message: bool },
    /// An answer (or any frame that must be delivered) to one connection.
    Direct { conn: ConnId, frame: Frame },
}

impl Item {
    /// Whether the item goes to `conn` (`direct`: whether frames addressed to `conn` are
    /// taken, or only events).
    fn goes_to(&self, conn: ConnId, direct: bool) -> bool {
        match self {
            Item::Event { except, .. } => *except != Some(conn),
            Item::Direct { .. } => direct && self.is_direct_to(conn),
        }
    }

    /// Whether the item is a frame addressed to `conn` alone.
    fn is_direct_to(&self, conn: ConnId) -> bool {
        matches!(self, Item::Direct { conn: to, .. } if *to == conn)
    }

    fn frame(&self) -> (&Frame, &Shed) {
        match self {
            Item::Event { frame, shed, .. } => (frame, shed),
            Item::Direct { frame, .. } => (frame, &Shed::Keep),
        }
    }
}

impl ShardState {
    /// Holds `frame`, an event to `audience`, in this wake-up's burst to that list (queuing
    /// the burst to another list first).
    pub(super) fn deliver(&mut self, audience: Audience, frame: Frame, shed: Shed, message: bool) {
        let except = audience.except();
        let item = Item::Event { frame, shed, except, message };
        match &mut self.burst {
            Some(burst) if burst.list.shares_list(&audience) => burst.items.push(item),
            _ => {
                self.queue_burst();
                self.burst = Some(Burst { list: audience, items: vec![item] });
            }
        }
    }

    /// Queues a frame that must be delivered to `conn`: held in the burst under way, if any,
    /// so that it keeps its place among the burst's events.
    pub(super) fn send(&mut self, conn: ConnId, frame: Frame) {
        match &mut self.burst {
            Some(burst) => burst.items.push(Item::Direct { conn, frame }),
            None => {
                let item = Item::Direct { conn, frame };
                self.queue_to(conn, std::iter::once(&item), |_| {});
            }
        }
    }

    /// Queues the burst under way, if any: to each member of its list what goes to it, in
    /// order, under one lock; then the frames to connections outside the list.
    pub(super) fn queue_burst(&mut self) {
        let Some(burst) = self.burst.take() else { return };
        // The connections with frames of their own, and whether each has had them (a list
        // may name a connection twice: its frames go with the first).
        let mut directs: Vec<(ConnId, bool)> = burst
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Direct { conn, .. } => Some((*conn, false)),
                Item::Event { .. } => None,
            })
            .collect();
        directs.sort_unstable();
        directs.dedup();
        let (mut events, mut messages) = (0u64, 0u64);
        let mut count = |item: &Item| {
            if let Item::Event { message, .. } = item {
                events += 1;
                messages += u64::from(*message);
            }
        };
        for &conn in burst.list.list() {
            let direct = match directs.binary_search_by_key(&conn, |(c, _)| *c) {
                Ok(at) => !std::mem::replace(&mut directs[at].1, true),
                Err(_) => false,
            };
            self.queue_to(conn, burst.items.iter().filter(|item| item.goes_to(conn, direct)), &mut count);
        }
        crate::metrics::hot::queued_out(events, messages);
        // Outside the list: its own frames only.
        for (conn, _) in directs.into_iter().filter(|(_, had)| !had) {
            self.queue_to(conn, burst.items.iter().filter(|item| item.is_direct_to(conn)), |_| {});
        }
    }

    /// Queues `items` to `conn` under one lock (nothing if the connection is gone), and
    /// marks its writer for a wake if it needs one.
    fn queue_to<'a>(
        &mut self,
        conn: ConnId,
        items: impl Iterator<Item = &'a Item>,
        mut queued: impl FnMut(&'a Item),
    ) {
        let Some(outbox) = self.outboxes.get(&conn) else { return };
        let mut frames = 0;
        let due = outbox.enqueue_all(
            items,
            Item::frame,
            |item| {
                frames += 1;
                queued(item);
            },
            self.pools.len(),
        );
        if let Some(due) = due {
            self.wake.add(outbox, due);
        }
        self.queued_since_wake += frames;
        if self.wake.len() >= self.wake_batch || self.queued_since_wake >= self.wake_batch {
            // A burst to a large room must not wait for the whole room to be queued: the
            // writers queued to so far start now, after `wake_batch` of them or of frames
            // (one member may take a whole burst of events at once). A writer that took its
            // queue asks for a new wake with its next frame, so nothing waits unwoken.
            self.wake_writers();
        }
    }
}
