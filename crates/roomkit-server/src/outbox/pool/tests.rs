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
use crate::outbox::{Bounds, Shed};

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

/// What a shard does for a connection it queued to, at the end of its burst: the wake-up it
/// is due, carried out.
fn wake_via(outbox: &Outbox, pools: &[Arc<WritePool>]) {
    let due = outbox.0.queue.lock().unwrap().due(pools.len());
    let mut wakes = Wakes::default();
    wakes.add(outbox, due);
    wakes.wake(pools);
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
        wake_via(&outbox, &pools);
    }
    assert_eq!(waiting(&pools[0]), 1, "in the pool's list once");
    assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task is not woken");

    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a", "b"]);
    // Parked again: the next frame goes through the pool too.
    assert!(outbox.enqueue(Frame::from("c"), Shed::Keep) == crate::outbox::Enqueued::NeedsWake);
    wake_via(&outbox, &pools);
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
    wake_via(&outbox, &pools);
    outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    assert_eq!(log.lock().unwrap().in_place, ["a"]);
    assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken for the rest");
    // Queued after: behind the rest, and the task's turn (not the pool's).
    assert_eq!(outbox.enqueue(Frame::from("d"), Shed::Keep), crate::outbox::Enqueued::Queued);
    wake_via(&outbox, &pools);
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
            wake_via(&outbox, &pools);
        }
    };
    sink.during = Some(Box::new(during));
    assert!(outbox.park(sink).is_none());
    outbox.enqueue(Frame::from("a"), Shed::Keep);
    wake_via(&outbox, &pools);
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
    wake_via(&outbox, &pools);
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
    wake_via(&outbox, &pools);
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
    wake_via(&outbox, &pools);
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

/// A burst's wake-ups, decided as it queues: connections parked for a pool join its list in
/// the order they were queued to, once each, behind those already in it; a connection whose
/// task holds its sink has the task woken instead; none is woken before the burst's end.
#[test]
fn a_bursts_wake_ups_join_each_pools_list_in_order_once_and_wake_tasks() {
    let pools = [Arc::new(WritePool::default()), Arc::new(WritePool::default())];
    let in_pool = |pool: u16| Outbox::with_bounds(Bounds::new(16, 16, usize::MAX), pool);
    let earlier = in_pool(1);
    let parked: Vec<(Outbox, Arc<Mutex<Log>>)> = (0..4u16)
        .map(|i| {
            let outbox = in_pool(i % 2);
            let (sink, log) = sink(usize::MAX);
            assert!(outbox.park(sink).is_none());
            (outbox, log)
        })
        .collect();
    let (earlier_sink, _) = sink(usize::MAX);
    assert!(earlier.park(earlier_sink).is_none());
    wake_via(&earlier.clone(), &pools);
    assert_eq!(waiting(&pools[1]), 1);
    // A connection whose task has its sink (never parked), its task waiting.
    let busy = in_pool(0);
    let (task, task_waker) = counting();
    assert_eq!(busy.poll_ready(&mut Context::from_waker(&task_waker)), Poll::Pending);

    let frames = [(Frame::from("m1"), Shed::Keep), (Frame::from("m2"), Shed::Keep)];
    let mut wakes = Wakes::default();
    for round in 0..2 {
        for outbox in parked.iter().map(|(outbox, _)| outbox).chain([&busy]) {
            let due = outbox.enqueue_all(frames.iter(), |(f, s)| (f, s), |_| {}, pools.len());
            assert_eq!(due.is_some(), round == 0, "one wake-up per connection until it is written");
            if let Some(due) = due {
                wakes.add(outbox, due);
            }
        }
    }
    assert_eq!(wakes.len(), 5);
    assert_eq!((waiting(&pools[0]), waiting(&pools[1])), (0, 1), "nothing joins before the burst's end");
    assert_eq!(task.0.load(Ordering::SeqCst), 0);

    wakes.wake(&pools);
    assert_eq!(wakes.len(), 0);
    assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
    assert_eq!((waiting(&pools[0]), waiting(&pools[1])), (2, 3));
    let mut lists = [Vec::new(), Vec::new()];
    for (pool, list) in pools.iter().zip(&mut lists) {
        let noop = Waker::noop();
        assert_eq!(pool.poll_take(&mut Context::from_waker(noop), list), Poll::Ready(()));
    }
    let same = |a: &Outbox, b: &Outbox| Arc::ptr_eq(&a.0, &b.0);
    assert!(same(&lists[1][0], &earlier), "behind the connections already listed");
    for (pool, at) in [(0, [0, 2]), (1, [1, 3])] {
        let listed: Vec<&Outbox> = lists[pool].iter().filter(|o| !same(o, &earlier)).collect();
        assert_eq!(listed.len(), 2);
        for (outbox, i) in listed.into_iter().zip(at) {
            assert!(same(outbox, &parked[i].0), "pool {pool}: in the order queued to");
        }
    }
    for outbox in lists.iter().flatten() {
        outbox.write_pooled(&mut Stretch::new(&Clock::start()));
    }
    for (_, log) in &parked {
        assert_eq!(log.lock().unwrap().in_place, ["m1", "m2", "m1", "m2"]);
    }
}

/// A wake-up held for the burst's end leaves the task's waker registered: a close meanwhile
/// wakes the task at once, not when the burst ends.
#[test]
fn a_close_before_the_bursts_end_wakes_the_task_at_once() {
    let outbox = Outbox::new(16, 16, usize::MAX);
    let (task, task_waker) = counting();
    assert_eq!(outbox.poll_ready(&mut Context::from_waker(&task_waker)), Poll::Pending);
    let frames = [(Frame::from("m"), Shed::Keep)];
    let due = outbox.enqueue_all(frames.iter(), |(f, s)| (f, s), |_| {}, 1).expect("a wake-up is due");
    let mut wakes = Wakes::default();
    wakes.add(&outbox, due);
    assert_eq!(task.0.load(Ordering::SeqCst), 0);
    assert!(outbox.close(CloseReason::new(Code::SLOW_CONSUMER, "gone"), false));
    assert_eq!(task.0.load(Ordering::SeqCst), 1, "woken by the close");
    wakes.wake(&[Arc::new(WritePool::default())]);
    assert_eq!(task.0.load(Ordering::SeqCst), 2);
}
