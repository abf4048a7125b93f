//! A connection's bounded send queue, its shedding policy for slow readers, and the switch
//! that closes the connection.

use std::sync::{Arc, Mutex};

use roomkit_core::transport::{CloseReason, Frame};
use roomkit_protocol::{Code, Event, RoomUuid, Shedding};
use tokio::sync::Notify;

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub(crate) reason: CloseReason,
    /// Send what is queued before closing (shutdown), or drop it (slow consumer).
    pub(crate) flush: bool,
}

/// Closes a connection once, from any task; the first reason wins. (A mutex and a `Notify`:
/// every connection has one, so it is kept smaller than a watch channel.)
#[derive(Debug, Clone)]
pub(crate) struct Closer(Arc<CloserState>);

#[derive(Debug, Default)]
pub(crate) struct CloserState {
    closing: Mutex<Option<Closing>>,
    notify: Notify,
}

impl Closer {
    pub(crate) fn new() -> Self {
        Self(Arc::default())
    }

    /// Returns true if this call closed it (false if it was closing already).
    pub(crate) fn close(&self, reason: CloseReason, flush: bool) -> bool {
        {
            let mut closing = self.0.closing.lock().expect("not poisoned");
            if closing.is_some() {
                return false;
            }
            *closing = Some(Closing { reason, flush });
        }
        self.0.notify.notify_waiters();
        true
    }

    /// How the connection is being closed, if it is.
    pub(crate) fn closing(&self) -> Option<Closing> {
        self.0.closing.lock().expect("not poisoned").clone()
    }

    /// Resolves once the connection is being closed.
    pub(crate) async fn closed(&self) -> Closing {
        loop {
            // Registered before looking, so a close in between is not missed.
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(closing) = self.closing() {
                return closing;
            }
            notified.await;
        }
    }
}

/// How a queued frame may be shed when its connection falls behind: an event's
/// [`Event::shedding`] class, with the room for a conflated one. Answers are [`Shed::Keep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Must be delivered; if it cannot be queued, the connection closes (`SLOW_CONSUMER`).
    Keep,
    /// Dropped first once the queue passes its high watermark (low-priority messages).
    Droppable,
    /// Past the high watermark only the newest queued frame of its room is kept (presence
    /// digests).
    Conflate(RoomUuid),
}

impl Shed {
    /// The class of `event`'s frame. Computed once per event, then cloned per recipient (a
    /// reference count for a conflated one, no allocation).
    pub(crate) fn of(event: &Event) -> Self {
        match event.shedding() {
            Shedding::Keep => Shed::Keep,
            Shedding::Droppable => Shed::Droppable,
            Shedding::Conflate => Shed::Conflate(event.room_uuid().clone()),
        }
    }

    /// The `class` label of `roomkit_queue_shed_total`.
    fn label(&self) -> &'static str {
        match self {
            Shed::Keep => "keep",
            Shed::Droppable => "droppable",
            Shed::Conflate(_) => "conflate",
        }
    }
}

/// Where shards and the reader queue frames for one connection. Cheap to clone.
///
/// Queuing never waits. Past the high watermark (`send_queue_high_watermark`, three quarters
/// of the bound by default) the queue sheds: queued [`Shed::Droppable`] frames are dropped,
/// a new one is not queued, and only the newest [`Shed::Conflate`] frame of each room stays.
/// When the queue still holds `capacity` frames and a frame that must be delivered arrives,
/// the connection is closed with `SLOW_CONSUMER` and its backlog dropped, so one slow reader
/// never blocks a room; the client resumes from history. Every shed frame is counted in
/// `roomkit_queue_shed_total{class}`.
///
/// A shard queues with [`enqueue`](Self::enqueue), which does not wake the writer, and wakes
/// each connection it queued to once at the end of its burst ([`wake`](Self::wake)). The
/// writer then takes the whole burst at once and writes it with one flush: that is what
/// keeps fan-out to a writing syscall per burst per member rather than per message.
#[derive(Debug, Clone)]
pub(crate) struct Outbox(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    notify: Notify,
    capacity: usize,
    high_watermark: usize,
    closer: Closer,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Vec<Frame>,
    /// The frames that may be shed, by index into `frames`, ascending, with their class
    /// (never [`Shed::Keep`]): a chat message, the frame of nearly every delivery, costs one
    /// push, not two.
    marked: Vec<(usize, Shed)>,
    /// Queued droppable frames.
    droppable: usize,
    /// Queued conflated frames.
    conflated: usize,
    /// A conflated frame was queued beside another since the last shedding: one room may
    /// have two.
    conflate_due: bool,
    /// A wake-up is due or pending: later frames need not ask for another.
    scheduled: bool,
    /// No more frames are accepted.
    closed: bool,
}

impl Queue {
    /// Drops every droppable frame and every conflated frame with a newer one of its room
    /// queued; returns how many of each class went.
    fn shed(&mut self) -> (u64, u64) {
        let (mut dropped, mut conflated) = (0u64, 0u64);
        // Newest first: the first conflated frame seen of a room is the one to keep.
        let mut rooms: Vec<&RoomUuid> = Vec::new();
        let mut gone = Vec::new();
        for (i, class) in self.marked.iter().rev() {
            match class {
                Shed::Keep => {}
                Shed::Droppable => {
                    gone.push(*i);
                    dropped += 1;
                }
                Shed::Conflate(room) if rooms.contains(&room) => {
                    gone.push(*i);
                    conflated += 1;
                }
                Shed::Conflate(room) => rooms.push(room),
            }
        }
        gone.reverse();
        self.remove(&gone);
        self.droppable = 0;
        self.conflated -= conflated as usize;
        self.conflate_due = false;
        (dropped, conflated)
    }

    /// Removes the queued conflated frames of `room` (a newer one is coming); returns how many.
    fn supersede(&mut self, room: &RoomUuid) -> u64 {
        let gone: Vec<usize> = self
            .marked
            .iter()
            .filter(|(_, class)| matches!(class, Shed::Conflate(r) if r == room))
            .map(|(i, _)| *i)
            .collect();
        self.remove(&gone);
        self.conflated -= gone.len();
        gone.len() as u64
    }

    /// Removes the frames at `gone` (ascending indices of marked frames) and their marks,
    /// and moves the marks left to the frames' new places.
    fn remove(&mut self, gone: &[usize]) {
        if gone.is_empty() {
            return;
        }
        let mut next = gone.iter().peekable();
        let mut index = 0;
        self.frames.retain(|_| {
            let keep = next.peek() != Some(&&index);
            if !keep {
                next.next();
            }
            index += 1;
            keep
        });
        let mut removed = 0;
        let mut next = gone.iter().peekable();
        self.marked.retain_mut(|(i, _)| {
            while next.peek().is_some_and(|g| **g < *i) {
                next.next();
                removed += 1;
            }
            if next.peek() == Some(&&*i) {
                return false;
            }
            *i -= removed;
            true
        });
    }
}

/// The result of [`Outbox::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued; the caller must call [`Outbox::wake`] (this was the first frame since the
    /// writer last took the queue).
    NeedsWake,
    /// Queued; a wake-up is already due.
    Queued,
    /// Not queued and the connection stays: a droppable frame past the high watermark.
    Shed,
    /// Not queued: the connection is closing.
    Refused,
}

fn count_shed(class: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("roomkit_queue_shed_total", "class" => class).increment(n);
    }
}

impl Outbox {
    /// A queue of at most `capacity` frames that sheds past `high_watermark` (clamped to
    /// `1..=capacity`).
    pub(crate) fn new(capacity: usize, high_watermark: usize, closer: Closer) -> Self {
        let capacity = capacity.max(1);
        Self(Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            capacity,
            high_watermark: high_watermark.clamp(1, capacity),
            closer,
        }))
    }

    /// Queues a frame that must be delivered and wakes the writer. Returns false if the
    /// frame was not queued.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        match self.enqueue(frame, Shed::Keep) {
            Enqueued::NeedsWake => {
                self.wake();
                true
            }
            Enqueued::Queued => true,
            Enqueued::Shed | Enqueued::Refused => false,
        }
    }

    /// Queues a frame of class `shed` without waking the writer; see [`Enqueued`].
    pub(crate) fn enqueue(&self, frame: Frame, shed: Shed) -> Enqueued {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if queue.closed {
            return Enqueued::Refused;
        }
        if queue.frames.len() >= self.0.high_watermark {
            if queue.droppable > 0 || queue.conflate_due {
                let (dropped, conflated) = queue.shed();
                count_shed("droppable", dropped);
                count_shed("conflate", conflated);
            }
            match &shed {
                Shed::Droppable if queue.frames.len() >= self.0.high_watermark => {
                    count_shed(shed.label(), 1);
                    return Enqueued::Shed;
                }
                Shed::Conflate(room) if queue.conflated > 0 => {
                    let gone = queue.supersede(room);
                    count_shed(shed.label(), gone);
                }
                _ => {}
            }
        }
        if queue.frames.len() >= self.0.capacity && matches!(shed, Shed::Conflate(_)) {
            // A digest that does not fit is not worth the connection: the next one carries
            // the exact counts.
            count_shed(shed.label(), 1);
            return Enqueued::Shed;
        }
        if queue.frames.len() >= self.0.capacity {
            queue.closed = true;
            // The backlog and the frame that did not fit.
            let dropped = queue.frames.len() as u64 + 1;
            queue.frames = Vec::new();
            queue.marked = Vec::new();
            drop(queue);
            metrics::counter!("roomkit_queue_drops_total").increment(dropped);
            let first = self
                .0
                .closer
                .close(CloseReason::new(Code::SLOW_CONSUMER, "send queue full: reconnect and resume"), false);
            if first {
                metrics::counter!("roomkit_slow_consumer_closes_total").increment(1);
            }
            return Enqueued::Refused;
        }
        match &shed {
            Shed::Keep => {}
            Shed::Droppable => queue.droppable += 1,
            Shed::Conflate(_) => {
                queue.conflate_due |= queue.conflated > 0;
                queue.conflated += 1;
            }
        }
        if shed != Shed::Keep {
            let at = queue.frames.len();
            queue.marked.push((at, shed));
        }
        queue.frames.push(frame);
        if std::mem::replace(&mut queue.scheduled, true) {
            Enqueued::Queued
        } else {
            Enqueued::NeedsWake
        }
    }

    /// Wakes the writer.
    pub(crate) fn wake(&self) {
        self.0.notify.notify_one();
    }

    /// Writer side: waits until frames may be waiting.
    pub(crate) async fn ready(&self) {
        self.0.notify.notified().await;
    }

    /// Writer side: moves every queued frame into `into` (which must be empty).
    pub(crate) fn take(&self, into: &mut Vec<Frame>) {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        std::mem::swap(&mut queue.frames, into);
        queue.marked.clear();
        queue.droppable = 0;
        queue.conflated = 0;
        queue.conflate_due = false;
        queue.scheduled = false;
    }

    /// Writer side, after writing `batch`: empties it, and if nothing new is queued (the
    /// connection goes idle) gives back the buffers a burst grew. A busy connection keeps
    /// them, so a steady stream of bursts does not reallocate.
    pub(crate) fn settle(&self, batch: &mut Vec<Frame>) {
        batch.clear();
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if queue.frames.is_empty() {
            shrink(&mut queue.frames);
            shrink(&mut queue.marked);
            shrink(batch);
        }
    }

    /// Writer side: accepts no more frames; returns what was still queued.
    pub(crate) fn shut(&self) -> Vec<Frame> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        queue.closed = true;
        queue.marked = Vec::new();
        std::mem::take(&mut queue.frames)
    }
}

/// Entries a connection's queue vectors keep once it is idle: an idle member should cost
/// little, so a burst's larger buffers are given back (see [`Outbox::settle`]).
pub(crate) const KEPT_CAPACITY: usize = 4;

/// Empties `v`, giving back its buffer if a burst grew it past [`KEPT_CAPACITY`].
fn shrink<T>(v: &mut Vec<T>) {
    v.clear();
    if v.capacity() > KEPT_CAPACITY {
        *v = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use roomkit_protocol::{MemberCounts, MembersChanged};

    use super::*;

    fn frame() -> Frame {
        Frame::from("{}")
    }

    fn named(name: &str) -> Frame {
        Frame::from(name)
    }

    fn room(name: &str) -> Shed {
        Shed::Conflate(RoomUuid::new(name).expect("valid id"))
    }

    fn taken(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        batch.iter().map(|b| String::from_utf8(b.payload().to_vec()).expect("utf-8")).collect()
    }

    fn shed_count(class: &str) -> u64 {
        let text = crate::metrics::prometheus().render();
        let key = format!("roomkit_queue_shed_total{{class=\"{class}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.parse().expect("a number"))
    }

    #[test]
    fn only_the_first_frame_of_a_burst_asks_for_a_wake() {
        let outbox = Outbox::new(10, 10, Closer::new());
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::NeedsWake);
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Queued);
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(batch.len(), 2);
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::NeedsWake);
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_and_drops_the_backlog() {
        let closer = Closer::new();
        let outbox = Outbox::new(2, 2, closer.clone());
        assert!(outbox.push(frame()));
        assert!(outbox.push(frame()));
        assert!(!outbox.push(frame()));
        assert_eq!(closer.closed().await.reason.code, Code::SLOW_CONSUMER);
        assert!(outbox.shut().is_empty(), "the backlog is dropped");
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Refused);
    }

    #[test]
    fn a_burst_leaves_no_large_buffers_behind() {
        let outbox = Outbox::new(4096, 4096, Closer::new());
        for _ in 0..1000 {
            outbox.enqueue(frame(), Shed::Keep);
        }
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(batch.len(), 1000);
        // Busy: another frame came while the batch was written; the buffers stay.
        outbox.enqueue(frame(), Shed::Keep);
        outbox.settle(&mut batch);
        assert!(batch.is_empty() && batch.capacity() >= 1000);
        outbox.take(&mut batch);
        outbox.settle(&mut batch);
        let queue = outbox.0.queue.lock().unwrap();
        assert!(batch.capacity() <= KEPT_CAPACITY);
        assert!(queue.frames.capacity() <= KEPT_CAPACITY && queue.marked.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn shedding_twice_keeps_the_right_frames_in_order() {
        let outbox = Outbox::new(100, 8, Closer::new());
        let queued = [
            ("k0", Shed::Keep),
            ("low1", Shed::Droppable),
            ("r1", room("r")),
            ("k1", Shed::Keep),
            ("s1", room("s")),
            ("low2", Shed::Droppable),
            ("r2", room("r")),
            ("k2", Shed::Keep),
        ];
        for (name, class) in queued {
            outbox.enqueue(named(name), class);
        }
        // At the watermark: this frame sheds the queue first (low1, low2 and r1 go).
        outbox.enqueue(named("k3"), Shed::Keep);
        // Then a newer digest of s replaces s1, whose index moved with the first shedding.
        for name in ["k4", "k5", "k6"] {
            outbox.enqueue(named(name), Shed::Keep);
        }
        outbox.enqueue(named("s2"), room("s"));
        assert_eq!(taken(&outbox), ["k0", "k1", "r2", "k2", "k3", "k4", "k5", "k6", "s2"]);
    }

    #[test]
    fn below_the_watermark_nothing_is_shed() {
        let outbox = Outbox::new(8, 6, Closer::new());
        for (name, class) in
            [("low1", Shed::Droppable), ("d1", room("r")), ("d2", room("r")), ("low2", Shed::Droppable)]
        {
            assert_ne!(outbox.enqueue(named(name), class), Enqueued::Shed);
        }
        assert_eq!(taken(&outbox), ["low1", "d1", "d2", "low2"]);
    }

    #[test]
    fn past_the_watermark_low_priority_frames_go_and_only_the_newest_digest_per_room_stays() {
        let before = (shed_count("droppable"), shed_count("conflate"));
        let closer = Closer::new();
        let outbox = Outbox::new(8, 6, closer.clone());
        let queued = [
            ("a", Shed::Keep),
            ("low1", Shed::Droppable),
            ("r-old", room("r")),
            ("s-only", room("s")),
            ("b", Shed::Keep),
            ("r-mid", room("r")),
        ];
        for (name, class) in queued {
            outbox.enqueue(named(name), class);
        }
        // The queue is at the watermark: the next frame sheds first.
        assert_eq!(outbox.enqueue(named("c"), Shed::Keep), Enqueued::Queued);
        assert_eq!(outbox.enqueue(named("r-new"), room("r")), Enqueued::Queued);
        assert_eq!(outbox.enqueue(named("d"), Shed::Keep), Enqueued::Queued);
        assert_eq!(
            outbox.enqueue(named("low2"), Shed::Droppable),
            Enqueued::Shed,
            "still past the watermark"
        );
        assert_eq!(taken(&outbox), ["a", "s-only", "b", "c", "r-new", "d"]);
        assert!(closer.closing().is_none(), "shedding keeps the connection");
        assert_eq!(shed_count("droppable") - before.0, 2);
        assert_eq!(shed_count("conflate") - before.1, 2);
    }

    #[tokio::test]
    async fn a_frame_that_must_be_delivered_closes_the_connection_only_when_shedding_cannot_make_room() {
        let closer = Closer::new();
        let outbox = Outbox::new(3, 3, closer.clone());
        for class in [Shed::Keep, Shed::Droppable, Shed::Droppable] {
            outbox.enqueue(frame(), class);
        }
        assert_eq!(
            outbox.enqueue(frame(), Shed::Keep),
            Enqueued::Queued,
            "the low-priority frames made room"
        );
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Queued);
        assert!(closer.closing().is_none());
        assert_eq!(
            outbox.enqueue(frame(), room("r")),
            Enqueued::Shed,
            "a digest that does not fit is dropped"
        );
        assert!(closer.closing().is_none(), "not worth the connection");
        assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Refused, "three frames that must go");
        assert_eq!(closer.closed().await.reason.code, Code::SLOW_CONSUMER);
    }

    #[test]
    fn a_digest_is_conflated_and_an_answer_is_kept() {
        let digest = Event::MembersChanged(Box::new(MembersChanged {
            room_uuid: RoomUuid::new("big").expect("valid id"),
            counts: MemberCounts { room: 600, chatroom: 10 },
            joined_count: 1,
            left_count: 0,
            chatroom_joined_count: 0,
            chatroom_left_count: 0,
            joined: Vec::new(),
            left: Vec::new(),
            chatroom_joined: Vec::new(),
            chatroom_left: Vec::new(),
        }));
        assert_eq!(Shed::of(&digest), room("big"));
        let locked =
            Event::RoomLockStateChanged { room_uuid: RoomUuid::new("big").expect("valid id"), locked: true };
        assert_eq!(Shed::of(&locked), Shed::Keep);
    }
}
