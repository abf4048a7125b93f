//! A connection's bounded send queue, and the switch that closes the connection.

use bytes::Bytes;
use roomkit_core::transport::CloseReason;
use roomkit_protocol::Code;
use tokio::sync::{mpsc, watch};

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
/// Pushing never waits: when the queue is full the connection is closed with
/// `SLOW_CONSUMER` and its backlog dropped, so one slow reader never blocks a room. The
/// client resumes from history.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Bytes>,
    closer: Closer,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, closer: Closer) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, closer }, rx)
    }

    /// Queues a frame; returns false if the connection was full or gone.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("roomkit_queue_drops_total").increment(1);
                let first = self.closer.close(
                    CloseReason::new(Code::SLOW_CONSUMER, "send queue full: reconnect and resume"),
                    false,
                );
                if first {
                    metrics::counter!("roomkit_slow_consumer_closes_total").increment(1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
