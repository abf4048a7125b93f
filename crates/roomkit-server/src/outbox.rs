//! A connection's bounded send queue, its shedding policy for slow readers, the switch that
//! closes the connection, and when the connection last showed a sign of life.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
};

use roomkit_core::transport::{CloseReason, Frame};

use self::{
    pool::Due,
    queue::{put, Queue},
};
use roomkit_protocol::{Code, Event, RoomUuid, Shedding};

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub(crate) reason: CloseReason,
    /// Send what is queued before closing (shutdown), or drop it (slow consumer).
    pub(crate) flush: bool,
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

/// Where shards and the connection's task queue frames for one connection, and what else
/// the rest of the server holds of it: its closing switch ([`close`](Self::close), the first
/// reason wins) and its last sign of life (for the keep-alive sweep). Cheap to clone; one
/// allocation per connection, since every idle member has one.
///
/// The queue is bounded twice: in frames (`send_queue_frames`) and in bytes
/// (`send_queue_bytes`, whole frames; a frame shared by a fan-out counts in every queue that
/// holds it), since one frame may be a few bytes or a history page of half a megabyte. The
/// bytes count from queuing until the writer has written them ([`settle`](Self::settle)),
/// so the batch being written counts too. A frame is always accepted when the connection
/// holds nothing (queued or being written), so the bytes a connection holds stay below the
/// byte bound plus one frame.
///
/// Queuing never waits. Past the high watermark (`send_queue_high_watermark` frames, three
/// quarters of the frame bound by default, or three quarters of the byte bound) the queue
/// sheds: queued [`Shed::Droppable`] frames are dropped, a new one is not queued, and only the
/// newest [`Shed::Conflate`] frame of each room stays. When a frame that must be delivered
/// does not fit in either bound, the connection is closed with `SLOW_CONSUMER` and its
/// backlog dropped, so one slow reader never blocks a room nor holds more than its bounds;
/// the client resumes from history. Every shed frame is counted in
/// `roomkit_queue_shed_total{class}`.
///
/// A shard queues a burst at a time with [`enqueue_all`](Self::enqueue_all), which does not
/// wake the writer but says which wake-up it is due (through the connection's write pool
/// while its sink is parked here, see [`pool`]), and wakes each connection it queued to once
/// at the end of its burst ([`Wakes`](pool::Wakes)). The
/// writer then takes the whole burst at once and writes it with one flush: that is what
/// keeps fan-out to a writing syscall per burst per member rather than per message.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Inner>);

/// (Not derived: the parked sink is a transport's, with no `Debug`.)
impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

struct Inner {
    queue: Mutex<Queue>,
    /// The same for every connection of a server: shared, not kept by each.
    bounds: Arc<Bounds>,
    /// When the peer last showed a sign of life, in milliseconds of the keep-alive's
    /// [`Clock`](crate::keepalive::Clock).
    seen: AtomicU64,
}

/// An outbox's bounds (see [`Outbox`]).
#[derive(Debug)]
pub(crate) struct Bounds {
    capacity: usize,
    high_watermark: usize,
    capacity_bytes: usize,
    high_watermark_bytes: usize,
}

impl Bounds {
    /// At most `capacity` frames and `capacity_bytes` bytes, shedding past `high_watermark`
    /// frames (clamped to `1..=capacity`) or three quarters of `capacity_bytes`.
    pub(crate) fn new(capacity: usize, high_watermark: usize, capacity_bytes: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            capacity,
            high_watermark: high_watermark.clamp(1, capacity),
            capacity_bytes,
            high_watermark_bytes: capacity_bytes / 4 * 3 + capacity_bytes % 4 * 3 / 4,
        })
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

/// What [`Outbox::admit`] decided for one frame.
enum Admit {
    /// Queue it ([`put`]).
    Take,
    /// Not queued; the connection stays.
    Shed,
    /// Not queued: the connection is closing.
    Closed,
    /// Not queued, and the connection must close as a slow consumer: this many frames (the
    /// backlog and this one) were dropped.
    Overflow(u64),
}

fn count_shed(class: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("roomkit_queue_shed_total", "class" => class).increment(n);
    }
}

impl Outbox {
    /// A queue of at most `capacity` frames and `capacity_bytes` bytes that sheds past
    /// `high_watermark` frames (clamped to `1..=capacity`) or three quarters of
    /// `capacity_bytes`.
    #[cfg(test)]
    pub(crate) fn new(capacity: usize, high_watermark: usize, capacity_bytes: usize) -> Self {
        Self::with_bounds(Bounds::new(capacity, high_watermark, capacity_bytes), 0)
    }

    /// A queue within `bounds`, which it shares with the other connections' queues, written
    /// by the server's write pool number `pool` while its writer is idle (see [`pool`]).
    pub(crate) fn with_bounds(bounds: Arc<Bounds>, pool: u16) -> Self {
        let queue = Queue { pool, ..Queue::default() };
        Self(Arc::new(Inner { queue: Mutex::new(queue), bounds, seen: AtomicU64::new(0) }))
    }

    /// Closes the connection with `reason`, sending what is queued first when `flush`
    /// (shutdown), or dropping it (slow consumer). Returns true if this call closed it (false
    /// if it was closing already: the first reason wins).
    pub(crate) fn close(&self, reason: CloseReason, flush: bool) -> bool {
        let waker = {
            let mut queue = self.0.queue.lock().expect("not poisoned");
            if queue.closing.is_some() {
                return false;
            }
            queue.closing = Some(Box::new(Closing { reason, flush }));
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// How the connection is being closed, if it is.
    pub(crate) fn closing(&self) -> Option<Closing> {
        self.0.queue.lock().expect("not poisoned").closing.as_deref().cloned()
    }

    /// Whether the connection is being closed.
    pub(crate) fn is_closing(&self) -> bool {
        self.0.queue.lock().expect("not poisoned").closing.is_some()
    }

    /// Resolves once the connection is being closed.
    pub(crate) async fn closed(&self) -> Closing {
        std::future::poll_fn(|cx| self.poll_until(cx, |queue| queue.closing.as_deref().cloned())).await
    }

    /// Ready once the connection is being closed, like [`closed`](Self::closed), as a poll
    /// method.
    pub(crate) fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_until(cx, |queue| queue.closing.is_some().then_some(()))
    }

    /// Ready with what `done` finds in the queue; else the task waits to be woken (by a
    /// wake-up or a close), looking under the same lock as the wakers do, so that nothing in
    /// between is missed.
    fn poll_until<T>(&self, cx: &mut Context<'_>, done: impl FnOnce(&mut Queue) -> Option<T>) -> Poll<T> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if let Some(found) = done(&mut queue) {
            return Poll::Ready(found);
        }
        queue.register(cx.waker());
        Poll::Pending
    }

    /// Records a sign of life from the peer, for the keep-alive sweep.
    pub(crate) fn touch(&self, clock: &crate::keepalive::Clock) {
        self.touch_at(clock.now_ms());
    }

    /// [`touch`](Self::touch) with the time read already (`now_ms` of the keep-alive's clock).
    pub(crate) fn touch_at(&self, now_ms: u64) {
        self.0.seen.store(now_ms, Ordering::Relaxed);
    }

    /// How long the peer has shown no sign of life, in milliseconds of `now_ms`.
    pub(crate) fn quiet_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.0.seen.load(Ordering::Relaxed))
    }

    /// Counts a store read for this connection, unless `max` are under way already; the read
    /// counts until the returned slot is dropped. Every shard reads for the same connection
    /// through the same outbox, so the bound is per connection.
    pub(crate) fn begin_read(&self, max: usize) -> Option<ReadSlot> {
        // Not `expect`: a slot is dropped while a shard unwinds, and a panic there would abort.
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.reads as usize >= max {
            return None;
        }
        queue.reads += 1;
        Some(ReadSlot(self.clone()))
    }

    /// Whether the connection is closing: nothing more will be queued.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.queue.lock().expect("not poisoned").closed
    }

    /// Whether queuing `len` more bytes would take the queue past its high watermark.
    fn past_watermark(&self, queue: &Queue, len: usize) -> bool {
        queue.frames.len() >= self.0.bounds.high_watermark
            || queue.held_bytes(len) > self.0.bounds.high_watermark_bytes
    }

    /// Whether a frame of `len` bytes does not fit (a connection that holds nothing takes
    /// any frame).
    fn full(&self, queue: &Queue, len: usize) -> bool {
        queue.frames.len() >= self.0.bounds.capacity || queue.held_bytes(len) > self.0.bounds.capacity_bytes
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
        match self.admit(&mut queue, frame.wire().len(), &shed) {
            Admit::Take if put(&mut queue, frame, &shed) => Enqueued::NeedsWake,
            Admit::Take => Enqueued::Queued,
            Admit::Shed => Enqueued::Shed,
            Admit::Closed => Enqueued::Refused,
            Admit::Overflow(dropped) => {
                drop(queue);
                self.overflowed(dropped);
                Enqueued::Refused
            }
        }
    }

    /// Queues the frames of `items` (`frame_of` each) in order under one lock, as
    /// [`enqueue`](Self::enqueue) would one by one (what a shard's wake-up has for this
    /// connection: one lock per burst, not per frame); `queued` is called with each item
    /// whose frame was queued. Stops at the first frame refused because the connection
    /// closed. When the writer needs a wake ([`Enqueued::NeedsWake`] for one of them),
    /// returns the wake-up it is due through `pools` pools, decided under the same lock (see
    /// [`Queue::due`]), for [`Wakes`](pool::Wakes) to carry out.
    pub(crate) fn enqueue_all<'a, T: 'a>(
        &self,
        items: impl Iterator<Item = &'a T>,
        frame_of: impl Fn(&'a T) -> (&'a Frame, &'a Shed),
        mut queued: impl FnMut(&'a T),
        pools: usize,
    ) -> Option<Due> {
        let mut wake = false;
        let mut queue = self.0.queue.lock().expect("not poisoned");
        for item in items {
            let (frame, shed) = frame_of(item);
            match self.admit(&mut queue, frame.wire().len(), shed) {
                Admit::Take => {
                    wake |= put(&mut queue, frame.clone(), shed);
                    queued(item);
                }
                Admit::Shed => {}
                Admit::Closed => break,
                Admit::Overflow(dropped) => {
                    // Closing wakes the task: nothing more is due.
                    drop(queue);
                    self.overflowed(dropped);
                    return None;
                }
            }
        }
        wake.then(|| queue.due(pools))
    }

    /// Whether a frame of `len` bytes and class `shed` may be queued, shedding what the
    /// policy sheds on the way; on [`Admit::Overflow`] the queue is closed and emptied.
    fn admit(&self, queue: &mut Queue, len: usize, shed: &Shed) -> Admit {
        if queue.closed {
            return Admit::Closed;
        }
        if self.past_watermark(queue, len) {
            if queue.droppable > 0 || queue.conflate_due {
                let (dropped, conflated) = queue.shed();
                count_shed("droppable", dropped);
                count_shed("conflate", conflated);
            }
            match shed {
                Shed::Droppable if self.past_watermark(queue, len) => {
                    count_shed(shed.label(), 1);
                    return Admit::Shed;
                }
                Shed::Conflate(room) if queue.conflated > 0 => {
                    let gone = queue.supersede(room);
                    count_shed(shed.label(), gone);
                }
                _ => {}
            }
        }
        let full = self.full(queue, len);
        if full && *shed != Shed::Keep {
            // A digest (or a low-priority message) that does not fit is not worth the
            // connection: the next digest carries the exact counts.
            count_shed(shed.label(), 1);
            return Admit::Shed;
        }
        if full {
            queue.closed = true;
            // The backlog and the frame that did not fit.
            let dropped = queue.frames.len() as u64 + 1;
            queue.frames = Vec::new();
            queue.marked.release();
            queue.bytes = 0;
            return Admit::Overflow(dropped);
        }
        Admit::Take
    }

    /// After [`Admit::Overflow`], with the queue unlocked: the connection closes as a slow
    /// consumer.
    fn overflowed(&self, dropped: u64) {
        metrics::counter!("roomkit_queue_drops_total").increment(dropped);
        let reason = CloseReason::new(Code::SLOW_CONSUMER, "send queue full: reconnect and resume");
        if self.close(reason, false) {
            metrics::counter!("roomkit_slow_consumer_closes_total").increment(1);
        }
    }

    /// Queues a keep-alive ping ([`Frame::ping`]) and wakes the writer, if the connection
    /// holds nothing (queued or being written). Otherwise the ping is not needed: the frames
    /// ahead of it probe the peer, since a write that completes counts as a sign of life
    /// (see `keepalive.rs`), and a ping behind them would only wait. A ping is thus never
    /// shed, nor counted as shed. Returns whether it was queued.
    pub(crate) fn ping(&self) -> bool {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if queue.closed || !queue.frames.is_empty() || queue.writing > 0 {
            return false;
        }
        let frame = Frame::ping();
        queue.bytes += frame.wire().len();
        queue.frames.push(frame);
        let wake = !std::mem::replace(&mut queue.scheduled, true);
        drop(queue);
        if wake {
            self.wake();
        }
        true
    }

    /// Wakes the writer.
    pub(crate) fn wake(&self) {
        let waker = self.0.queue.lock().expect("not poisoned").ask_wake();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Writer side: waits until frames may be waiting (a wake-up was asked for since the
    /// last call: false), or the connection is closing (true). A wake-up that comes while
    /// the writer waits for something else (a close, during a write) is kept for this call.
    /// (Not an `async fn`, which would keep `self` twice: an idle connection waits here.)
    pub(crate) fn ready(&self) -> impl std::future::Future<Output = bool> + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(cx))
    }

    /// Writer side: [`ready`](Self::ready) as a poll method.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.poll_until(cx, Queue::ready)
    }

    /// Writer side: what [`ready`](Self::ready) would be at once, or `None` when it would
    /// wait.
    pub(crate) fn ready_now(&self) -> Option<bool> {
        Queue::ready(&mut self.0.queue.lock().expect("not poisoned"))
    }

    /// Writer side: moves every queued frame into `into` (which must be empty). Their bytes
    /// still count against the byte bound until [`settle`](Self::settle).
    /// Returns their bytes, for [`settle`](Self::settle).
    pub(crate) fn take(&self, into: &mut Vec<Frame>) -> usize {
        Self::take_locked(&mut self.0.queue.lock().expect("not poisoned"), into)
    }

    fn take_locked(queue: &mut Queue, into: &mut Vec<Frame>) -> usize {
        std::mem::swap(&mut queue.frames, into);
        let taken = std::mem::take(&mut queue.bytes);
        queue.writing += taken;
        queue.marked.clear();
        queue.droppable = 0;
        queue.conflated = 0;
        queue.conflate_due = false;
        queue.scheduled = false;
        taken
    }

    /// Writer side, after writing `batch` (`written` bytes, as [`take`](Self::take) said; the
    /// transport may have taken the frames out of it): releases its bytes, empties it, and if
    /// nothing new is queued (the connection goes idle) gives back its buffers, the queue's
    /// and the batch's, and returns true. A busy connection keeps them, so a steady stream of
    /// bursts does not reallocate.
    pub(crate) fn settle(&self, batch: &mut Vec<Frame>, written: usize) -> bool {
        batch.clear();
        let mut queue = self.0.queue.lock().expect("not poisoned");
        queue.writing = queue.writing.saturating_sub(written);
        let idle = queue.frames.is_empty();
        if idle {
            shrink(&mut queue.frames);
            queue.marked.release();
            shrink(batch);
        }
        idle
    }

    /// Writer side: accepts no more frames; returns what was still queued.
    pub(crate) fn shut(&self) -> Vec<Frame> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        queue.closed = true;
        queue.marked.release();
        queue.bytes = 0;
        queue.writing = 0;
        std::mem::take(&mut queue.frames)
    }
}

/// A store read counted against its connection's bound until dropped; see
/// [`Outbox::begin_read`].
#[derive(Debug)]
pub(crate) struct ReadSlot(Outbox);

impl ReadSlot {
    /// The connection the read is for.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.0
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        // Dropped while a shard unwinds, perhaps from a panic under this lock: a second panic
        // would abort the process.
        self.0 .0.queue.lock().unwrap_or_else(PoisonError::into_inner).reads -= 1;
    }
}

/// Empties `v` and gives back its buffer: an idle member holds no queue buffers (a burst
/// to an idle member costs an allocation, against the bytes of every idle member kept).
fn shrink<T>(v: &mut Vec<T>) {
    *v = Vec::new();
}

pub(crate) mod pool;
mod queue;
#[cfg(test)]
mod tests;
