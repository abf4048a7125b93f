//! Where a connection's sink is, and who writes what, with a write pool.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
};

use async_trait::async_trait;
use roomkit_core::transport::{CloseReason, Frame, FrameSink, Taken, TransportError};
use roomkit_protocol::Code;

use super::*;
use crate::outbox::Shed;

/// What a test sink did: the frames written in place, then those sent with waiting writes.
#[derive(Default)]
struct Log {
    in_place: Vec<String>,
    sent: Vec<String>,
}

fn text(frame: &Frame) -> String {
    String::from_utf8(frame.payload().to_vec()).expect("utf-8")
}

/// A sink whose `try_send` takes at most `take` frames (the last of them in part with
/// `cut`), and runs `during` (once) as it writes, as another task would meanwhile.
struct Sink {
    log: Arc<Mutex<Log>>,
    take: usize,
    cut: bool,
    during: Option<Box<dyn FnOnce() + Send>>,
}

#[async_trait]
impl FrameSink for Sink {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        self.log.lock().unwrap().sent.extend(frames.iter().map(text));
        Ok(())
    }

    async fn close(&mut self, _: CloseReason) -> Result<(), TransportError> {
        Ok(())
    }

    fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
        if let Some(during) = self.during.take() {
            during();
        }
        let n = self.take.min(frames.len());
        self.log.lock().unwrap().in_place.extend(frames.drain(..n).map(|f| text(&f)));
        Taken { frames: n, cut: self.cut && n > 0 }
    }

    fn writes_in_place(&self) -> bool {
        true
    }
}

fn sink(take: usize) -> (Box<Sink>, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    (Box::new(Sink { log: Arc::clone(&log), take, cut: false, during: None }), log)
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (Arc::clone(&count), Waker::from(count))
}

/// The connections waiting in `pool`'s list.
fn waiting(pool: &WritePool) -> usize {
    let mut taken = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let _ = pool.poll_take(&mut cx, &mut taken);
    let n = taken.len();
    pool.inner.lock().unwrap().outboxes = taken;
    n
}

/// What the task would write now: the queue, taken.
fn taken(outbox: &Outbox) -> Vec<String> {
    let mut batch = Vec::new();
    outbox.take(&mut batch);
    batch.iter().map(text).collect()
}

/// The connection's task polling its writing half, without its sink: ready (what to do)
/// with the sink back in `slot`, or waiting.
fn poll_task(outbox: &Outbox, waker: &Waker, slot: &mut Option<Box<dyn FrameSink>>) -> Option<Ready> {
    match outbox.poll_ready_unparked(&mut Context::from_waker(waker), slot) {
        Poll::Ready(ready) => Some(ready),
        Poll::Pending => None,
    }
}

#[test]
fn a_parked_connection_is_written_by_its_pool_in_order_once_per_wake_up() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (sink, log) = sink(usize::MAX);
    assert!(outbox.park(sink).is_none(), "an idle queue takes the sink");
    let (task, task_waker) = counting();
    assert_eq!(poll_task(&outbox, &task_waker, &mut None), None, "nothing to do");

    for t in ["a", "b"] {
        assert_eq!(
            outbox.enqueue(Frame::from(t), Shed::Keep) == crate::outbox::Enqueued::NeedsWake,
            t == "a"
        );
        outbox.wake_via(&pools);
    }
    assert_eq!(waiting(&pools[0]), 1, "in the pool's list once");
    assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task is not woken");

    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a", "b"]);
    // Parked again: the next frame goes through the pool too.
    assert!(outbox.enqueue(Frame::from("c"), Shed::Keep) == crate::outbox::Enqueued::NeedsWake);
    outbox.wake_via(&pools);
    assert_eq!(waiting(&pools[0]), 2, "joined the list again");
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a", "b", "c"]);
    assert_eq!(task.0.load(Ordering::SeqCst), 0);
    assert!(log.lock().unwrap().sent.is_empty());
}

#[test]
fn what_the_socket_leaves_goes_back_in_front_and_the_task_sends_it() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (sink, log) = sink(1);
    assert!(outbox.park(sink).is_none());
    let (task, task_waker) = counting();
    assert_eq!(poll_task(&outbox, &task_waker, &mut None), None);
    for t in ["a", "b", "c"] {
        outbox.enqueue(Frame::from(t), Shed::Keep);
    }
    outbox.wake_via(&pools);
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
    assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken for the rest");
    // Queued after: behind the rest, and the task's turn (not the pool's).
    assert_eq!(outbox.enqueue(Frame::from("d"), Shed::Keep), crate::outbox::Enqueued::Queued);
    outbox.wake_via(&pools);
    assert_eq!(waiting(&pools[0]), 1, "only the first wake-up went to the pool");
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"], "the pool leaves a connection handed to its task");

    let mut slot = None;
    assert_eq!(poll_task(&outbox, &task_waker, &mut slot), Some(Ready::Owed), "a send is owed");
    assert!(slot.is_some(), "the task has the sink back");
    assert_eq!(taken(&outbox), ["b", "c", "d"]);
}

#[test]
fn a_task_waits_for_the_sink_while_the_pool_writes_and_frames_queued_meanwhile_follow() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (mut sink, log) = sink(usize::MAX);
    let (task, task_waker) = counting();
    let during = {
        let (outbox, pools, task_waker) = (outbox.clone(), pools.clone(), task_waker.clone());
        move || {
            // An answer queued by the reader wakes the task, which finds the sink away.
            assert!(outbox.push(Frame::from("answer")));
            assert_eq!(poll_task(&outbox, &task_waker, &mut None), None, "the pool has the sink");
            // The shard's next message: the connection joins the pool's list again.
            outbox.enqueue(Frame::from("next"), Shed::Keep);
            outbox.wake_via(&pools);
        }
    };
    sink.during = Some(Box::new(during));
    assert!(outbox.park(sink).is_none());
    outbox.enqueue(Frame::from("a"), Shed::Keep);
    outbox.wake_via(&pools);
    let before = task.0.load(Ordering::SeqCst);
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
    assert!(task.0.load(Ordering::SeqCst) > before, "the waiting task is woken when the sink is back");
    let mut slot = None;
    assert_eq!(poll_task(&outbox, &task_waker, &mut slot), Some(Ready::Write));
    assert!(slot.is_some());
    assert_eq!(taken(&outbox), ["answer", "next"], "after what the pool wrote, in order");
    // The pool's second turn finds the sink with the task: it writes nothing.
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
}

#[test]
fn a_closing_connection_is_left_to_its_task_with_its_sink() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (sink, log) = sink(usize::MAX);
    assert!(outbox.park(sink).is_none());
    outbox.enqueue(Frame::from("a"), Shed::Keep);
    outbox.wake_via(&pools);
    assert!(outbox.close(CloseReason::new(Code::SLOW_CONSUMER, "slow"), true));
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert!(log.lock().unwrap().in_place.is_empty(), "the closing writes, not the pool");
    let (_, task_waker) = counting();
    let mut slot = None;
    assert_eq!(poll_task(&outbox, &task_waker, &mut slot), Some(Ready::Closing));
    assert!(slot.is_some(), "the closing has the sink");
    let (sink, _) = self::sink(usize::MAX);
    assert!(outbox.park(sink).is_some(), "a closing connection parks nothing");
}

#[test]
fn only_an_idle_queue_takes_the_sink() {
    let outbox = Outbox::new(16, 16, usize::MAX);
    outbox.enqueue(Frame::from("a"), Shed::Keep);
    assert!(outbox.park(sink(1).0).is_some(), "frames queued");
    taken(&outbox);
    outbox.wake();
    assert!(outbox.park(sink(1).0).is_some(), "a wake-up due");
    let (_, task_waker) = counting();
    let mut slot: Option<Box<dyn FrameSink>> = Some(sink(1).0);
    assert_eq!(poll_task(&outbox, &task_waker, &mut slot), Some(Ready::Write));
    assert!(outbox.park(slot.take().expect("kept")).is_none(), "idle");
}

/// Frames queued while a pool writes are behind what the socket left: their shedding
/// marks move with them, so the queue sheds them, not the frame put back in front.
#[test]
fn frames_put_back_in_front_keep_the_shedding_marks_of_those_behind_right() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 2, usize::MAX);
    let (mut sink, log) = sink(1);
    let during = {
        let outbox = outbox.clone();
        move || {
            outbox.enqueue(Frame::from("low"), Shed::Droppable);
        }
    };
    sink.during = Some(Box::new(during));
    assert!(outbox.park(sink).is_none());
    for t in ["a", "b"] {
        outbox.enqueue(Frame::from(t), Shed::Keep);
    }
    outbox.wake_via(&pools);
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
    // [b, low] is at the watermark: queuing one more sheds the droppable one.
    outbox.enqueue(Frame::from("c"), Shed::Keep);
    assert_eq!(taken(&outbox), ["b", "c"]);
}

/// A last frame the socket took only in part leaves nothing queued, but a send owed: the
/// task is woken and told so (it sends, even nothing, and the transport finishes the frame).
#[test]
fn a_frame_cut_part_way_leaves_the_task_a_send_to_make() {
    let pools = [Arc::new(WritePool::default())];
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (mut sink, log) = sink(usize::MAX);
    sink.cut = true;
    assert!(outbox.park(sink).is_none());
    let (task, task_waker) = counting();
    assert_eq!(poll_task(&outbox, &task_waker, &mut None), None);
    outbox.enqueue(Frame::from("a"), Shed::Keep);
    outbox.wake_via(&pools);
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
    assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
    let mut slot = None;
    assert_eq!(poll_task(&outbox, &task_waker, &mut slot), Some(Ready::Owed));
    assert!(taken(&outbox).is_empty(), "nothing queued, yet a send is owed");
}

/// A pool's task ends once its pool is gone.
#[tokio::test]
async fn a_pools_task_ends_with_its_pool() {
    let pool = Arc::new(WritePool::default());
    let task = tokio::spawn(run(Arc::downgrade(&pool), Clock::start()));
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    drop(pool);
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("ended").expect("no panic");
}
