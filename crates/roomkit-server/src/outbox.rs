//! A connection's bounded send queue, and the switch that closes the connection.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use roomkit_core::transport::CloseReason;
use roomkit_protocol::Code;
use tokio::sync::{watch, Notify};

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub(crate) reason: CloseReason,
    /// Send what is queued before closing (shutdown), or drop it (slow consumer).
    pub(crate) flush: bool,
}

/// Closes a connection once, from any task; the first reason wins.
#[derive(Debug, Clone)]
pub(crate) struct Closer(watch::Sender<Option<Closing>>);

impl Closer {
    pub(crate) fn new() -> Self {
        Self(watch::Sender::new(None))
    }

    /// Returns true if this call closed it (false if it was closing already).
    pub(crate) fn close(&self, reason: CloseReason, flush: bool) -> bool {
        self.0.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(Closing { reason, flush });
            true
        })
    }

    /// Resolves once the connection is being closed.
    pub(crate) async fn closed(&self) -> Closing {
        let mut rx = self.0.subscribe();
        let state = rx.wait_for(Option::is_some).await.expect("the sender lives in self");
        state.clone().expect("waited for Some")
    }
}

/// Where shards and the reader queue frames for one connection. Cheap to clone.
///
/// Queuing never waits: when the queue holds `capacity` frames the connection is closed with
/// `SLOW_CONSUMER` and its backlog dropped, so one slow reader never blocks a room; the client
/// resumes from history.
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
    closer: Closer,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Vec<Bytes>,
    /// A wake-up is due or pending: later frames need not ask for another.
    scheduled: bool,
    /// No more frames are accepted.
    closed: bool,
}

/// The result of [`Outbox::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued; the caller must call [`Outbox::wake`] (this was the first frame since the
    /// writer last took the queue).
    NeedsWake,
    /// Queued; a wake-up is already due.
    Queued,
    /// Not queued: the connection is closing.
    Refused,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, closer: Closer) -> Self {
        Self(Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            closer,
        }))
    }

    /// Queues a frame and wakes the writer. Returns false if the frame was not queued.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        match self.enqueue(frame) {
            Enqueued::NeedsWake => {
                self.wake();
                true
            }
            Enqueued::Queued => true,
            Enqueued::Refused => false,
        }
    }

    /// Queues a frame without waking the writer; see [`Enqueued`].
    pub(crate) fn enqueue(&self, frame: Bytes) -> Enqueued {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        if queue.closed {
            return Enqueued::Refused;
        }
        if queue.frames.len() >= self.0.capacity {
            queue.closed = true;
            queue.frames = Vec::new();
            drop(queue);
            metrics::counter!("roomkit_queue_drops_total").increment(1);
            let first = self
                .0
                .closer
                .close(CloseReason::new(Code::SLOW_CONSUMER, "send queue full: reconnect and resume"), false);
            if first {
                metrics::counter!("roomkit_slow_consumer_closes_total").increment(1);
            }
            return Enqueued::Refused;
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
    pub(crate) fn take(&self, into: &mut Vec<Bytes>) {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        std::mem::swap(&mut queue.frames, into);
        queue.scheduled = false;
    }

    /// Writer side: accepts no more frames; returns what was still queued.
    pub(crate) fn shut(&self) -> Vec<Bytes> {
        let mut queue = self.0.queue.lock().expect("not poisoned");
        queue.closed = true;
        std::mem::take(&mut queue.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Bytes {
        Bytes::from_static(b"{}")
    }

    #[test]
    fn only_the_first_frame_of_a_burst_asks_for_a_wake() {
        let outbox = Outbox::new(10, Closer::new());
        assert_eq!(outbox.enqueue(frame()), Enqueued::NeedsWake);
        assert_eq!(outbox.enqueue(frame()), Enqueued::Queued);
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(batch.len(), 2);
        assert_eq!(outbox.enqueue(frame()), Enqueued::NeedsWake);
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_and_drops_the_backlog() {
        let closer = Closer::new();
        let outbox = Outbox::new(2, closer.clone());
        assert!(outbox.push(frame()));
        assert!(outbox.push(frame()));
        assert!(!outbox.push(frame()));
        assert_eq!(closer.closed().await.reason.code, Code::SLOW_CONSUMER);
        assert!(outbox.shut().is_empty(), "the backlog is dropped");
        assert_eq!(outbox.enqueue(frame()), Enqueued::Refused);
    }
}
