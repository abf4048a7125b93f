//! The frames a connection's [`Outbox`](super::Outbox) holds, with the bookkeeping its
//! shedding policy reads (what may be shed, the bytes held) and the operations that keep that
//! bookkeeping true as frames come and go.

use std::task::Waker;

use roomkit_core::transport::Frame;
use roomkit_protocol::RoomUuid;

use super::{Closing, Shed};

#[derive(Default)]
pub(super) struct Queue {
    pub(super) frames: Vec<Frame>,
    /// The bytes of `frames`, headers included.
    pub(super) bytes: usize,
    /// The bytes of the batch the writer took and has not written yet (see
    /// [`Outbox::settle`](super::Outbox::settle)): they still count against the byte bound.
    pub(super) writing: usize,
    /// The frames that may be shed (see [`Marks`]).
    pub(super) marked: Marks,
    /// Queued droppable frames.
    pub(super) droppable: u32,
    /// Queued conflated frames.
    pub(super) conflated: u32,
    /// Store reads under way for this connection (see
    /// [`Outbox::begin_read`](super::Outbox::begin_read)).
    pub(super) reads: u32,
    /// A conflated frame was queued beside another since the last shedding: one room may
    /// have two.
    pub(super) conflate_due: bool,
    /// A wake-up is due or pending: later frames need not ask for another.
    pub(super) scheduled: bool,
    /// No more frames are accepted.
    pub(super) closed: bool,
    /// How the connection is being closed, once it is. (Boxed: an open connection keeps a
    /// pointer, not room for a reason.)
    pub(super) closing: Option<Box<Closing>>,
    /// A wake-up was asked for since the writer last looked (see [`Outbox::ready`](super::Outbox::ready)).
    pub(super) woken: bool,
    /// The connection's task, waiting in [`Outbox::ready`](super::Outbox::ready),
    /// [`Outbox::closed`](super::Outbox::closed), or for its sink back from a write pool
    /// ([`Outbox::poll_ready_unparked`](super::Outbox::poll_ready_unparked),
    /// [`Outbox::unpark`](super::Outbox::unpark)): one task
    /// waits, so one waker (a `Notify` and its waiting future cost an idle member a hundred
    /// bytes more).
    pub(super) waker: Option<Waker>,
    /// The connection's sink while its task does not hold it: parked for the pool, or (when
    /// `handed`) for the task (see `pool`).
    pub(super) parked: Option<Box<dyn roomkit_core::transport::FrameSink>>,
    /// The parked sink waits for the task, to send what a pool's write left.
    pub(super) handed: bool,
    /// A pool is writing with the sink.
    pub(super) pool_writing: bool,
    /// The connection is in its pool's list.
    pub(super) in_pool_list: bool,
    /// The task waits for the sink to come back from a pool.
    pub(super) task_waits: bool,
    /// The connection's pool, by index into the server's pools.
    pub(super) pool: u16,
}

/// The queued frames that may be shed, by index into the queue's frames, ascending, with
/// their class (never [`Shed::Keep`]): a chat message, the frame of nearly every delivery,
/// costs one push, not two. Boxed, and only once a frame is marked: an idle member's outbox
/// keeps a pointer rather than a list's 24 bytes.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes while nothing is marked
pub(super) struct Marks(Option<Box<Vec<(usize, Shed)>>>);

impl Marks {
    pub(super) fn as_slice(&self) -> &[(usize, Shed)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, mark: (usize, Shed)) {
        self.0.get_or_insert_default().push(mark);
    }

    fn retain_mut(&mut self, keep: impl FnMut(&mut (usize, Shed)) -> bool) {
        if let Some(marks) = &mut self.0 {
            marks.retain_mut(keep);
        }
    }

    /// Moves every mark `by` frames later (frames were put in front of the queue).
    pub(super) fn shift(&mut self, by: usize) {
        self.retain_mut(|(at, _)| {
            *at += by;
            true
        });
    }

    /// Empties the list, keeping its buffer.
    pub(super) fn clear(&mut self) {
        if let Some(marks) = &mut self.0 {
            marks.clear();
        }
    }

    /// Empties the list and gives back its buffers.
    pub(super) fn release(&mut self) {
        self.0 = None;
    }

    /// The marks the list has room for.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |marks| marks.capacity())
    }
}

impl Queue {
    /// Keeps `waker`, the connection task's, for the next wake-up.
    pub(super) fn register(&mut self, waker: &Waker) {
        match &mut self.waker {
            Some(kept) if kept.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    /// Records that a wake-up was asked for; the task's waker, to wake once the lock is let go.
    pub(super) fn ask_wake(&mut self) -> Option<Waker> {
        self.woken = true;
        self.waker.take()
    }

    /// See [`Outbox::ready`](super::Outbox::ready): true when closing, false when a wake-up
    /// was asked for (taking it), `None` when there is nothing to do.
    pub(super) fn ready(&mut self) -> Option<bool> {
        match self.closing {
            Some(_) => Some(true),
            None => std::mem::take(&mut self.woken).then_some(false),
        }
    }

    /// The bytes the connection would hold (queued and being written) with `len` more, or
    /// 0 if it holds nothing yet: one frame always fits.
    pub(super) fn held_bytes(&self, len: usize) -> usize {
        let held = self.bytes + self.writing;
        if held == 0 {
            0
        } else {
            held.saturating_add(len)
        }
    }

    /// Drops every droppable frame and every conflated frame with a newer one of its room
    /// queued; returns how many of each class went.
    pub(super) fn shed(&mut self) -> (u64, u64) {
        let (mut dropped, mut conflated) = (0u64, 0u64);
        // Newest first: the first conflated frame seen of a room is the one to keep.
        let mut rooms: Vec<&RoomUuid> = Vec::new();
        let mut gone = Vec::new();
        for (i, class) in self.marked.as_slice().iter().rev() {
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
        self.conflated -= conflated as u32;
        self.conflate_due = false;
        (dropped, conflated)
    }

    /// Removes the queued conflated frames of `room` (a newer one is coming); returns how many.
    pub(super) fn supersede(&mut self, room: &RoomUuid) -> u64 {
        let gone: Vec<usize> = self
            .marked
            .as_slice()
            .iter()
            .filter(|(_, class)| matches!(class, Shed::Conflate(r) if r == room))
            .map(|(i, _)| *i)
            .collect();
        self.remove(&gone);
        self.conflated -= gone.len() as u32;
        gone.len() as u64
    }

    /// Removes the frames at `gone` (ascending indices of marked frames) and their marks,
    /// and moves the marks left to the frames' new places.
    pub(super) fn remove(&mut self, gone: &[usize]) {
        if gone.is_empty() {
            return;
        }
        let mut next = gone.iter().peekable();
        let mut index = 0;
        let mut freed = 0;
        self.frames.retain(|frame| {
            let keep = next.peek() != Some(&&index);
            if !keep {
                next.next();
                freed += frame.wire().len();
            }
            index += 1;
            keep
        });
        self.bytes -= freed;
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

/// Queues an admitted frame; returns whether the writer needs a wake (the first frame since
/// it last took the queue).
pub(super) fn put(queue: &mut Queue, frame: Frame, shed: &Shed) -> bool {
    match shed {
        Shed::Keep => {}
        Shed::Droppable => queue.droppable += 1,
        Shed::Conflate(_) => {
            queue.conflate_due |= queue.conflated > 0;
            queue.conflated += 1;
        }
    }
    if *shed != Shed::Keep {
        let at = queue.frames.len();
        queue.marked.push((at, shed.clone()));
    }
    queue.bytes += frame.wire().len();
    queue.frames.push(frame);
    !std::mem::replace(&mut queue.scheduled, true)
}
