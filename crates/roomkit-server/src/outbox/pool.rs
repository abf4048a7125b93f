//! Write pools: tasks that write idle connections' queued frames to their sockets in place,
//! so that a delivery to an idle member costs the write, not a wake-up and a poll of the
//! member's own task around the same write.
//!
//! **Where the sink is.** A connection's writing half ([`FrameSink`]) is in exactly one
//! place at any time, and only that place writes: with the connection's task; parked in its
//! outbox, for a pool ([`Outbox::park`]); with a pool while it writes
//! ([`Outbox::write_pooled`], under no lock, the outbox marked meanwhile); or parked for the
//! task after a pool's write the socket did not take whole. So frames never interleave nor
//! reorder, whoever writes them.
//!
//! **The flow.** A connection's task parks its sink when its queue is empty and its
//! transport writes in place ([`FrameSink::writes_in_place`]). A shard then wakes that
//! connection through its pool ([`Queue::due`], [`Wakes`]): the outbox joins the pool's list
//! once, and the pool takes its frames and the sink together, writes with
//! [`FrameSink::try_send`], and parks the sink again. What the socket does not take goes
//! back to the front of the queue, a cut frame's rest stays with the transport, and the sink
//! is parked for the task, which is woken and sends the rest with waiting writes; it parks
//! the sink again once its queue is empty. Anything else that wakes the task (an answer
//! queued by the reader, a ping, a close) makes it take the sink back first, waiting for a
//! pool that is writing with it.
//!
//! **Order and fairness.** A pool writes the connections of its list in the order they
//! joined it, one pass over the list at a time, and yields to the runtime [`YIELDS_PER_PASS`]
//! times a pass (every [`YIELD_MIN`] connections at least), so that a shard reads and queues
//! the next messages meanwhile: a connection not reached yet takes them in the same write,
//! and one already written joins the list again, behind the rest. Yielding more often would
//! have the shard queue each message to a large room on its own, a lock per member per
//! message, where yielding a few times a pass lets the messages that came meanwhile go to
//! each member as one burst (see `docs/architecture.md`, "Write pools", for the figures).
//! Each connection belongs to one of the server's pools (`write_pools`, one per CPU by
//! default), by its id, so a large room's writes spread over every pool and every CPU.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Waker},
};

use roomkit_core::transport::{Frame, FrameSink};

use super::{queue::Queue, shrink, Outbox};
use crate::{
    keepalive::Clock,
    metrics::{Gathered, WRITE_BATCH_FRAMES},
};

/// Times a pool yields to the runtime over one pass of its list (and once between two passes,
/// when the next was waiting)...
pub(crate) const YIELDS_PER_PASS: usize = 4;
/// ...but not before this many connections were written since the last yield...
pub(crate) const YIELD_MIN: usize = 64;
/// ...nor after more than this many.
pub(crate) const YIELD_MAX: usize = 1024;

/// The connections waiting for one pool to write them; see the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct WritePool {
    inner: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    outboxes: Vec<Outbox>,
    /// The pool's task, waiting for a connection.
    waker: Option<Waker>,
}

impl WritePool {
    /// Moves the connections of `outboxes` to the end of the list, under one lock, and
    /// wakes the pool's task. (Appended, never swapped: a list's buffer, the size of the
    /// largest backlog it held, stays with the pool rather than travelling to whoever pushes
    /// next.)
    fn push_all(&self, outboxes: &mut Vec<Outbox>) {
        let waker = {
            let mut waiting = self.inner.lock().expect("not poisoned");
            waiting.outboxes.append(outboxes);
            waiting.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Swaps the waiting connections into `into` (empty), or waits for one.
    fn poll_take(&self, cx: &mut Context<'_>, into: &mut Vec<Outbox>) -> Poll<()> {
        let mut waiting = self.inner.lock().expect("not poisoned");
        if waiting.outboxes.is_empty() {
            waiting.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut waiting.outboxes, into);
        Poll::Ready(())
    }
}

/// The pool is gone with the server's state, once every connection's task has ended: its
/// task ends too.
impl Drop for WritePool {
    fn drop(&mut self) {
        let waiting = self.inner.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(waker) = waiting.waker.take() {
            waker.wake();
        }
    }
}

/// A pool's task: writes the connections of `pool`'s list as they come, until the pool is
/// gone (see `Drop for WritePool`; it holds the pool only to take its list).
pub(crate) async fn run(pool: Weak<WritePool>, clock: Clock) {
    let mut batch = Vec::new();
    loop {
        let mut waited = false;
        let taken = std::future::poll_fn(|cx| match pool.upgrade() {
            Some(pool) => {
                let taken = pool.poll_take(cx, &mut batch);
                waited |= taken.is_pending();
                taken.map(|()| true)
            }
            None => Poll::Ready(false),
        });
        if !taken.await {
            return;
        }
        // A few yields per pass, and one between two passes when the next was waiting (one
        // that had to wait let the runtime go on already; a yield besides would have it poll
        // its I/O driver once more a message, in a small room): the shard reads and queues
        // meanwhile, and what it queues in between goes out as one burst (see the module's
        // documentation); nor does a pool fed without pause keep its worker.
        if !waited {
            tokio::task::yield_now().await;
        }
        let every = (batch.len() / YIELDS_PER_PASS).clamp(YIELD_MIN, YIELD_MAX);
        let mut stretch = Stretch::new(&clock);
        for (n, outbox) in batch.drain(..).enumerate() {
            // A panic writes off this connection (its task is woken and closes it), not the
            // pool: its other connections would wait for writes that never come.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| outbox.write_pooled(&mut stretch)));
            if n % every == every - 1 {
                stretch.end();
                tokio::task::yield_now().await;
                stretch = Stretch::new(&clock);
            }
        }
        stretch.end();
    }
}

/// What a pool's writes between two yields share: the time, read once, for the keep-alive's
/// record of each connection's last write; and the frames each write took, added to the
/// metric once. (A clock read and two atomic additions per delivery were nearly two per cent
/// of a server's CPU samples at 1,000 members × 100 messages/s.)
pub(crate) struct Stretch {
    now_ms: u64,
    batches: Gathered,
}

impl Stretch {
    pub(crate) fn new(clock: &Clock) -> Self {
        Self { now_ms: clock.now_ms(), batches: Gathered::default() }
    }

    /// Adds the stretch's samples to the metric.
    pub(crate) fn end(&mut self) {
        WRITE_BATCH_FRAMES.add(&mut self.batches);
    }
}

/// The wake-up a connection's writer is due once frames were queued to it, decided under
/// the queue's lock ([`Queue::due`]) and carried out by [`Wakes`] once the lock is let go.
#[derive(Debug)]
pub(crate) enum Due {
    /// Its task's, by a clone of its waker (none while the task is not waiting: it sees the
    /// wake-up when it next looks). The waker stays registered, so that a close or another
    /// frame before the burst's end still wakes the task at once.
    Task(Option<Waker>),
    /// Its pool's, by index: the connection is marked as in that pool's list and must join
    /// it.
    Pool(u16),
    /// None: the connection is in its pool's list already.
    Listed,
}

impl Queue {
    /// Asks for a wake-up of the writer (the frames are queued), through the connection's
    /// pool (one of `pools`) when its sink is parked for one or a pool is writing with it.
    pub(super) fn due(&mut self, pools: usize) -> Due {
        let pooled = (self.parked.is_some() && !self.handed) || self.pool_writing;
        if !pooled || usize::from(self.pool) >= pools {
            self.woken = true;
            return Due::Task(self.waker.clone());
        }
        if std::mem::replace(&mut self.in_pool_list, true) {
            Due::Listed
        } else {
            Due::Pool(self.pool)
        }
    }
}

/// The wake-ups due after a burst of queuing, carried out together at its end: tasks by
/// their wakers, and the connections due a pool's write in one list per pool, which joins
/// the pool's under one lock. (One lock per pool and burst, where the pool's lock per
/// connection was nearly a third of what a shard spent queuing a message to a large room:
/// 35 of 120 µs at 1,000 members.)
#[derive(Default)]
pub(crate) struct Wakes {
    tasks: Vec<Waker>,
    /// By pool index.
    pooled: Vec<Vec<Outbox>>,
    len: usize,
}

impl Wakes {
    /// The wake-ups held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Holds `outbox`'s `due` wake-up.
    pub(crate) fn add(&mut self, outbox: &Outbox, due: Due) {
        match due {
            Due::Task(None) | Due::Listed => return,
            Due::Task(Some(waker)) => self.tasks.push(waker),
            Due::Pool(pool) => {
                let pool = usize::from(pool);
                if self.pooled.len() <= pool {
                    self.pooled.resize_with(pool + 1, Vec::new);
                }
                self.pooled[pool].push(outbox.clone());
            }
        }
        self.len += 1;
    }

    /// Carries out the wake-ups held, through `pools` (those [`Due::Pool`] was decided
    /// for).
    pub(crate) fn wake(&mut self, pools: &[Arc<WritePool>]) {
        for (pool, outboxes) in pools.iter().zip(&mut self.pooled) {
            if !outboxes.is_empty() {
                pool.push_all(outboxes);
            }
        }
        for waker in self.tasks.drain(..) {
            waker.wake();
        }
        self.len = 0;
    }
}

/// What the connection's task is to do, once ready with its sink (see
/// [`Outbox::poll_ready_unparked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Close: the connection is closing.
    Closing,
    /// Write what is queued.
    Write,
    /// Send what a pool's write left (the rest of a frame cut part-way, then the frames put
    /// back), with a waiting send even if nothing is queued: the transport owes it.
    Owed,
}

impl Outbox {
    /// Writer side: parks `sink` here for the connection's pool, if nothing is queued, no
    /// wake-up is due and the connection is not closing; else gives it back.
    pub(crate) fn park(&self, sink: Box<dyn FrameSink>) -> Option<Box<dyn FrameSink>> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if !queue.frames.is_empty() || queue.woken || queue.closing.is_some() || queue.closed {
            return Some(sink);
        }
        queue.parked = Some(sink);
        queue.handed = false;
        None
    }

    /// Writer side: [`poll_ready`](Self::poll_ready), and when it is ready and `sink` is
    /// `None`, the sink back from where it is parked, or a wait while a pool writes with it
    /// (the pool wakes the task when it is done).
    pub(crate) fn poll_ready_unparked(
        &self,
        cx: &mut Context<'_>,
        sink: &mut Option<Box<dyn FrameSink>>,
    ) -> Poll<Ready> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        let closing = match (&queue.closing, queue.woken) {
            (Some(_), _) => true,
            (None, true) => false,
            (None, false) => {
                queue.register(cx.waker());
                return Poll::Pending;
            }
        };
        let mut owed = false;
        if sink.is_none() {
            match queue.parked.take() {
                Some(parked) => {
                    *sink = Some(parked);
                    owed = std::mem::take(&mut queue.handed);
                }
                None => {
                    queue.task_waits = true;
                    queue.register(cx.waker());
                    return Poll::Pending;
                }
            }
        }
        if closing {
            return Poll::Ready(Ready::Closing);
        }
        queue.woken = false;
        Poll::Ready(if owed { Ready::Owed } else { Ready::Write })
    }

    /// The sink back from where it is parked, waiting while a pool writes with it. (What a
    /// pool's write left is sent by whatever the closing writes next: the transport finishes a
    /// frame cut part-way before anything else, the close frame included.)
    pub(crate) async fn unpark(&self) -> Box<dyn FrameSink> {
        std::future::poll_fn(|cx| {
            let mut queue = self.0.queue.lock().expect("not poisoned");
            if let Some(sink) = queue.parked.take() {
                queue.handed = false;
                return Poll::Ready(sink);
            }
            queue.task_waits = true;
            queue.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Pool side: writes what is queued with the parked sink, in place, then parks it again:
    /// for the pool when the socket took everything, else (the rest back at the front of the
    /// queue) for the task, which is woken to send it. Leaves a connection that is closing,
    /// or whose task has the sink, to its task.
    pub(crate) fn write_pooled(&self, stretch: &mut Stretch) {
        let (mut sink, mut frames, written) = {
            let mut queue = self.0.queue.lock().expect("not poisoned");
            queue.in_pool_list = false;
            if queue.closing.is_some() || queue.closed || queue.handed {
                return;
            }
            let Some(sink) = queue.parked.take() else { return };
            let mut frames = Vec::new();
            let written = Self::take_locked(&mut queue, &mut frames);
            queue.pool_writing = true;
            (sink, frames, written)
        };
        let mut left = false;
        if !frames.is_empty() {
            let alive = frames.iter().any(|frame| !frame.is_ping());
            // What the transport takes leaves `frames`; a frame it took in part is its own
            // now, and it finishes that frame at the next send, before the rest. A panic in
            // the transport counts as nothing taken: the task meets it again with the sink.
            let taken =
                std::panic::catch_unwind(AssertUnwindSafe(|| sink.try_send(&mut frames))).unwrap_or_default();
            if taken.frames > 0 {
                WRITE_BATCH_FRAMES.gather(&mut stretch.batches, taken.frames);
            }
            left = !frames.is_empty() || taken.cut;
            if !left && alive {
                self.touch_at(stretch.now_ms);
            }
        }
        let waker = {
            let mut queue = self.0.queue.lock().expect("not poisoned");
            queue.pool_writing = false;
            queue.parked = Some(sink);
            queue.writing = queue.writing.saturating_sub(written);
            if left {
                put_back(&mut queue, frames);
                queue.handed = true;
                queue.woken = true;
            } else if queue.frames.is_empty() {
                shrink(&mut queue.frames);
                queue.marked.release();
            }
            // The task: to send the rest, or waiting for the sink (to write or to close).
            let wake = left || std::mem::take(&mut queue.task_waits) || queue.closing.is_some();
            if wake {
                queue.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Puts `frames`, taken and not sent, back in front of the queue, to be sent before what
/// was queued since. They count against the queue's bounds again (stricter than the task's
/// own waiting write, which holds its rest outside the queue), and are not shed: they were
/// taken already. (The bytes of a frame cut part-way are no longer counted: at most one
/// frame's, until the transport sends its rest.)
fn put_back(queue: &mut Queue, mut frames: Vec<Frame>) {
    queue.bytes += frames.iter().map(|frame| frame.wire().len()).sum::<usize>();
    queue.marked.shift(frames.len());
    frames.append(&mut queue.frames);
    queue.frames = frames;
    // The wake-up is due: later frames need not ask for another.
    queue.scheduled = true;
}

#[cfg(test)]
mod tests;
