//! The writing half of a connection: a batch written in place when the socket takes it
//! ([`write_now`]), and the boxed step that writes what must wait ([`write_step`],
//! [`write_batches`]).

use std::task::{Context, Poll};

use roomkit_core::transport::{CloseReason, Frame, FrameSink, TransportError};
use roomkit_protocol::Code;

use super::{close::CLOSE_TIMEOUT, WriteParts};
use crate::{keepalive::Clock, outbox::Outbox};

/// The writing half's step: writes `rest`, then what is queued until the queue is empty
/// (`None`) or the connection is closing (see [`write_batches`]).
pub(super) async fn write_step(
    mut parts: WriteParts,
    clock: Clock,
    rest: Option<Rest>,
) -> (WriteParts, Option<bool>) {
    let WriteParts { sink, outbox } = &mut parts;
    let sink = sink.as_deref_mut().expect("a writing half holds its sink");
    let done = write_batches(sink, outbox, &clock, rest).await;
    (parts, done)
}

/// What a batch written in place left to send: the frames the transport did not take, and the
/// batch's bytes and sign of life (see [`write_batches`]).
pub(super) struct Rest {
    frames: Vec<Frame>,
    written: usize,
    alive: bool,
}

impl Rest {
    /// What a write pool's write left (see `outbox::pool`): no frames (those it did not
    /// take are back in the queue) but a send owed, to finish a frame cut part-way.
    pub(super) fn owed() -> Self {
        Rest { frames: Vec::new(), written: 0, alive: false }
    }
}

/// Takes what is queued and hands it to the transport's write that does not wait
/// ([`FrameSink::try_send`]), batch after batch while more is queued meanwhile (in the same
/// buffer, as [`write_batches`] does) and the task's budget lasts; `None` when it all went
/// out, else what is left for [`write_batches`]. A delivery to a connection with room in its
/// socket thus costs the write, with no future built, boxed and polled around it.
pub(super) fn write_now(parts: &mut WriteParts, clock: &Clock, cx: &mut Context<'_>) -> Option<Rest> {
    let mut frames = Vec::new();
    loop {
        let (written, alive) = take_batch(&parts.outbox, &mut frames);
        if frames.is_empty() {
            parts.outbox.settle(&mut frames, written);
            return None;
        }
        // What the transport takes leaves `frames`; a frame it took in part is its own now,
        // and it finishes that frame at the next send, before the rest.
        let taken = parts.sink().try_send(&mut frames);
        if !frames.is_empty() || taken.cut {
            return Some(Rest { frames, written, alive });
        }
        if alive {
            parts.outbox.touch(clock);
        }
        // Idle: the buffers are given back. Busy: more was queued while this was written,
        // its wake-up perhaps not asked for yet (a shard wakes at the end of its burst); it
        // is taken now, or, once the budget is spent, after the wake-up that is due; or, if
        // the connection is closing meanwhile, by the closing, which flushes it or drops it.
        if parts.outbox.settle(&mut frames, written) || parts.outbox.is_closing() {
            return None;
        }
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(coop) => coop.made_progress(),
            Poll::Pending => return None,
        }
    }
}

/// Takes what is queued into `batch` (empty), counting it in the frames-per-write tally when
/// there is any; returns its bytes (for [`Outbox::settle`]) and whether writing it is a sign of
/// life for the keep-alive: anything but pings in it (see `keepalive.rs`).
fn take_batch(outbox: &Outbox, batch: &mut Vec<Frame>) -> (usize, bool) {
    let written = outbox.take(batch);
    if !batch.is_empty() {
        crate::metrics::WRITE_BATCH_FRAMES.record(batch.len());
    }
    (written, batch.iter().any(|frame| !frame.is_ping()))
}

/// Writes `rest` (what [`write_now`] left, sent even if no frame is left in it: the transport
/// finishes a frame it took in part), then what is queued, batch after batch, as long as more
/// is queued meanwhile; `None` once the queue is empty with no wake-up due (the connection is
/// idle), else `Some` once the connection is closing: true, or false when a write failed (the
/// connection is then closed, with nothing more to send).
pub(super) async fn write_batches(
    sink: &mut dyn FrameSink,
    outbox: &Outbox,
    clock: &Clock,
    mut rest: Option<Rest>,
) -> Option<bool> {
    let mut batch = Vec::new();
    loop {
        // The transport may take the frames out of `batch`: whether it is a sign of life is
        // known before.
        let (written, alive, resumed) = match rest.take() {
            Some(Rest { frames, written, alive }) => {
                batch = frames;
                (written, alive, true)
            }
            None => {
                let (written, alive) = take_batch(outbox, &mut batch);
                (written, alive, false)
            }
        };
        let mut busy = false;
        if !batch.is_empty() || resumed {
            let sent = {
                let mut send = sink.send_all(&mut batch);
                let sent = tokio::select! {
                    biased;
                    closing = outbox.closed() => Err(closing.flush),
                    sent = &mut send => Ok(sent),
                };
                // A peer that stopped reading must not keep a closing connection alive: a close
                // that flushes lets this write go on (the same write, not a new one) for at most
                // CLOSE_TIMEOUT; one that does not flush drops it (the transport finishes a cut
                // frame before the close frame).
                match sent {
                    Ok(sent) => sent,
                    Err(false) => return Some(true),
                    Err(true) => Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, send))
                        .await
                        .unwrap_or(Err(TransportError::Io("flushing timed out".into()))),
                }
            };
            if sent.is_err() {
                outbox.close(CloseReason::new(Code::CONNECTION_CLOSED, "write failed"), false);
                return Some(false);
            }
            if alive {
                outbox.touch(clock);
            }
            // An idle member should cost little: give back a burst's buffers.
            busy = !outbox.settle(&mut batch, written);
        }
        match outbox.ready_now() {
            Some(true) => return Some(true),
            Some(false) => {}
            // More was queued while this batch was written, its wake-up not asked for yet (a
            // shard wakes at the end of its burst): take it now, keeping the buffers.
            None if busy => {}
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use roomkit_core::transport::{CloseReason, Frame, FrameSink, Taken, TransportError};

    use super::{write_batches, write_now, Rest, WriteParts};
    use crate::{keepalive::Clock, outbox::Outbox};

    /// A sink whose `try_send` takes `take` of the frames (all, with `None`), the last one in
    /// part with `cut`, and which records the frames each `send` gets.
    struct Partial {
        take: Option<usize>,
        cut: bool,
        sends: Arc<Mutex<Vec<usize>>>,
    }

    #[async_trait]
    impl FrameSink for Partial {
        async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
            self.sends.lock().unwrap().push(frames.len());
            Ok(())
        }

        async fn close(&mut self, _: CloseReason) -> Result<(), TransportError> {
            Ok(())
        }

        fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
            let n = self.take.unwrap_or(frames.len()).min(frames.len());
            frames.drain(..n);
            Taken { frames: n, cut: self.cut && n > 0 }
        }
    }

    /// A sink that, at its first write in place, has another frame queued and the
    /// connection closed (as a shard and a slow-consumer close would), and counts its writes.
    struct ClosedMeanwhile {
        outbox: Outbox,
        tries: Arc<Mutex<usize>>,
    }

    #[async_trait]
    impl FrameSink for ClosedMeanwhile {
        async fn send(&mut self, _: &[Frame]) -> Result<(), TransportError> {
            Ok(())
        }

        async fn close(&mut self, _: CloseReason) -> Result<(), TransportError> {
            Ok(())
        }

        fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
            let mut tries = self.tries.lock().unwrap();
            *tries += 1;
            if *tries == 1 {
                self.outbox.push(Frame::from("{\"late\":1}"));
                self.outbox.close(CloseReason::new(roomkit_protocol::Code::SLOW_CONSUMER, "slow"), false);
            }
            let n = frames.len();
            frames.clear();
            Taken { frames: n, cut: false }
        }
    }

    /// A connection closed while a batch is written in place is left to the closing (which
    /// flushes what was queued meanwhile, or drops it): nothing more is written in place.
    #[tokio::test]
    async fn a_close_during_a_write_in_place_ends_the_writing_in_place() {
        let outbox = Outbox::new(16, 12, 1 << 20);
        assert!(outbox.push(Frame::from("{\"a\":1}")));
        let tries = Arc::new(Mutex::new(0));
        let sink = Box::new(ClosedMeanwhile { outbox: outbox.clone(), tries: Arc::clone(&tries) });
        let mut parts = WriteParts { sink: Some(sink), outbox: outbox.clone() };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(write_now(&mut parts, &Clock::start(), &mut cx).is_none());
        assert_eq!(*tries.lock().unwrap(), 1, "the frame queued after the close is the closing's");
        assert!(outbox.is_closing());
    }

    /// Writes two queued frames through a sink that takes `take` of them in place (`cut`: the
    /// last in part); returns the frames each later send got.
    async fn write_two(take: Option<usize>, cut: bool) -> Vec<usize> {
        let outbox = Outbox::new(16, 12, 1 << 20);
        assert!(outbox.push(Frame::from("{\"a\":1}")) && outbox.push(Frame::from("{\"b\":2}")));
        let sends = Arc::new(Mutex::new(Vec::new()));
        let sink = Box::new(Partial { take, cut, sends: Arc::clone(&sends) });
        let mut parts = WriteParts { sink: Some(sink), outbox: outbox.clone() };
        let clock = Clock::start();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let Some(rest) = write_now(&mut parts, &clock, &mut cx) {
            let Rest { frames, .. } = &rest;
            assert_eq!(frames.len(), 2 - take.unwrap_or(2), "what was not taken is left to send");
            assert!(!outbox.ping(), "the batch's bytes are held until it is all out");
            let done = write_batches(parts.sink(), &outbox, &clock, Some(rest)).await;
            assert_eq!(done, None, "the connection is idle again");
        }
        assert!(outbox.ping(), "the batch's bytes are released: a keep-alive ping may go");
        let sends = sends.lock().unwrap().clone();
        sends
    }

    /// A batch the socket takes whole costs no send; what it does not take is sent; a frame it
    /// took in part is finished by a send, an empty one if nothing else is left; and in every
    /// case the batch's bytes are released once it is out.
    #[tokio::test]
    async fn a_batch_written_in_place_leaves_only_what_was_not_taken_to_send() {
        assert_eq!(write_two(None, false).await, Vec::<usize>::new(), "all taken: no send");
        assert_eq!(write_two(Some(0), false).await, vec![2], "nothing taken: one send of both");
        assert_eq!(write_two(Some(1), false).await, vec![1], "one taken: the other is sent");
        assert_eq!(write_two(Some(1), true).await, vec![1], "one cut: the send finishes it with the other");
        assert_eq!(
            write_two(None, true).await,
            vec![0],
            "all taken, the last cut: an empty send finishes it"
        );
    }

    /// The send a write pool's cut frame leaves owed is made even with nothing queued, then
    /// what was put back goes out.
    #[tokio::test]
    async fn a_send_owed_by_a_pools_write_is_made_with_nothing_queued() {
        let clock = Clock::start();
        let sends = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Partial { take: Some(0), cut: false, sends: Arc::clone(&sends) };
        let outbox = Outbox::new(16, 12, 1 << 20);
        let done = write_batches(&mut sink, &outbox, &clock, Some(Rest::owed())).await;
        assert_eq!(done, None);
        assert_eq!(*sends.lock().unwrap(), vec![0], "an empty send");
        assert!(outbox.push(Frame::from("{\"a\":1}")));
        assert!(outbox.push(Frame::from("{\"b\":2}")));
        sends.lock().unwrap().clear();
        let done = write_batches(&mut sink, &outbox, &clock, Some(Rest::owed())).await;
        assert_eq!(done, None);
        assert_eq!(*sends.lock().unwrap(), vec![0, 2], "the owed send, then the queue");
    }
}
