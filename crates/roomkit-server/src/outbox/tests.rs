//! The outbox's bounds and shedding policy, frame by frame.

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

/// Six frames of every class, two digests of room `r` among them.
fn mixed() -> [(&'static str, Shed); 6] {
    [
        ("a", Shed::Keep),
        ("low1", Shed::Droppable),
        ("r-old", room("r")),
        ("s-only", room("s")),
        ("b", Shed::Keep),
        ("r-mid", room("r")),
    ]
}

/// Runs `test` with a metrics recorder of its own, given a way to read its shed counts: the
/// tests running beside it on other threads shed into the global one.
fn with_shed_counts<T>(test: impl FnOnce(&dyn Fn(&str) -> u64) -> T) -> T {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let shed_count = |class: &str| {
        let key = format!("roomkit_queue_shed_total{{class=\"{class}\"}} ");
        handle.render().lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.parse().expect("a number"))
    };
    metrics::with_local_recorder(&recorder, || test(&shed_count))
}

#[test]
fn only_the_first_frame_of_a_burst_asks_for_a_wake() {
    let outbox = Outbox::new(10, 10, usize::MAX);
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::NeedsWake);
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Queued);
    let mut batch = Vec::new();
    outbox.take(&mut batch);
    assert_eq!(batch.len(), 2);
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::NeedsWake);
}

#[tokio::test]
async fn overflow_closes_as_slow_consumer_and_drops_the_backlog() {
    let outbox = Outbox::new(2, 2, usize::MAX);
    assert!(outbox.push(frame()));
    assert!(outbox.push(frame()));
    assert!(!outbox.push(frame()));
    assert_eq!(outbox.closed().await.reason.code, Code::SLOW_CONSUMER);
    assert!(outbox.shut().is_empty(), "the backlog is dropped");
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Refused);
}

#[test]
fn a_burst_leaves_no_large_buffers_behind() {
    let outbox = Outbox::new(4096, 4096, usize::MAX);
    for _ in 0..1000 {
        outbox.enqueue(frame(), Shed::Keep);
    }
    let mut batch = Vec::new();
    let written = outbox.take(&mut batch);
    assert_eq!(batch.len(), 1000);
    // Busy: another frame came while the batch was written; the buffers stay.
    outbox.enqueue(frame(), Shed::Keep);
    assert!(!outbox.settle(&mut batch, written), "busy: the writer takes the next batch at once");
    assert!(batch.is_empty() && batch.capacity() >= 1000);
    let written = outbox.take(&mut batch);
    assert!(outbox.settle(&mut batch, written), "idle");
    let queue = outbox.0.queue.lock().unwrap();
    assert_eq!(batch.capacity(), 0);
    assert_eq!((queue.frames.capacity(), queue.marked.capacity()), (0, 0), "an idle queue holds no buffers");
}

#[test]
fn shedding_twice_keeps_the_right_frames_in_order() {
    let outbox = Outbox::new(100, 8, usize::MAX);
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
    let outbox = Outbox::new(8, 6, usize::MAX);
    for (name, class) in
        [("low1", Shed::Droppable), ("d1", room("r")), ("d2", room("r")), ("low2", Shed::Droppable)]
    {
        assert_ne!(outbox.enqueue(named(name), class), Enqueued::Shed);
    }
    assert_eq!(taken(&outbox), ["low1", "d1", "d2", "low2"]);
}

#[test]
fn past_the_watermark_low_priority_frames_go_and_only_the_newest_digest_per_room_stays() {
    with_shed_counts(|shed_count| {
        let outbox = Outbox::new(8, 6, usize::MAX);
        for (name, class) in mixed() {
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
        assert!(outbox.closing().is_none(), "shedding keeps the connection");
        assert_eq!(shed_count("droppable"), 2);
        assert_eq!(shed_count("conflate"), 2);
    });
}

#[tokio::test]
async fn a_frame_that_must_be_delivered_closes_the_connection_only_when_shedding_cannot_make_room() {
    let outbox = Outbox::new(3, 3, usize::MAX);
    for class in [Shed::Keep, Shed::Droppable, Shed::Droppable] {
        outbox.enqueue(frame(), class);
    }
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Queued, "the low-priority frames made room");
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Queued);
    assert!(outbox.closing().is_none());
    assert_eq!(outbox.enqueue(frame(), room("r")), Enqueued::Shed, "a digest that does not fit is dropped");
    assert!(outbox.closing().is_none(), "not worth the connection");
    assert_eq!(outbox.enqueue(frame(), Shed::Keep), Enqueued::Refused, "three frames that must go");
    assert_eq!(outbox.closed().await.reason.code, Code::SLOW_CONSUMER);
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

/// A frame of `n` payload bytes (its wire size is `n` plus a header of 2, 4 or 10 bytes).
fn sized(n: usize) -> Frame {
    Frame::text(&vec![b'x'; n])
}

#[tokio::test]
async fn a_queue_bounded_in_bytes_closes_as_slow_consumer_long_before_its_frame_bound() {
    // Room for 4096 frames but only 10 000 bytes: three frames of 3 000 bytes fit.
    let outbox = Outbox::new(4096, 4096, 10_000);
    for _ in 0..3 {
        assert_ne!(outbox.enqueue(sized(3_000), Shed::Keep), Enqueued::Refused);
    }
    assert!(outbox.closing().is_none());
    assert_eq!(outbox.enqueue(sized(3_000), Shed::Keep), Enqueued::Refused, "a fourth does not fit");
    assert_eq!(outbox.closed().await.reason.code, Code::SLOW_CONSUMER);
    assert!(outbox.shut().is_empty(), "the backlog is dropped");
}

#[test]
fn past_three_quarters_of_the_byte_bound_low_priority_frames_are_shed() {
    let outbox = Outbox::new(4096, 4096, 10_000);
    outbox.enqueue(sized(4_000), Shed::Keep);
    outbox.enqueue(sized(1_000), Shed::Droppable);
    outbox.enqueue(sized(2_000), Shed::Keep);
    // About 7 000 bytes queued: another 1 000 would pass 7 500, the high watermark, so the
    // queued low-priority frame goes first.
    assert_eq!(outbox.enqueue(sized(1_000), Shed::Keep), Enqueued::Queued);
    // Still past it with what must be delivered: a new low-priority frame is not queued.
    outbox.enqueue(sized(500), Shed::Keep);
    assert_eq!(outbox.enqueue(sized(1_000), Shed::Droppable), Enqueued::Shed);
    assert!(outbox.closing().is_none(), "shedding keeps the connection");
    let mut batch = Vec::new();
    outbox.take(&mut batch);
    assert_eq!(batch.iter().map(Frame::len).collect::<Vec<_>>(), [4_000, 2_000, 1_000, 500]);
}

#[test]
fn an_empty_queue_takes_a_frame_larger_than_its_byte_bound_and_writing_frees_the_bytes() {
    let outbox = Outbox::new(4096, 4096, 1_000);
    assert_eq!(outbox.enqueue(sized(5_000), Shed::Keep), Enqueued::NeedsWake, "alone, it goes");
    let mut batch = Vec::new();
    let written = outbox.take(&mut batch);
    outbox.settle(&mut batch, written);
    assert_eq!(outbox.enqueue(sized(600), Shed::Keep), Enqueued::NeedsWake, "the written bytes are free");
    assert_eq!(outbox.enqueue(sized(100), Shed::Keep), Enqueued::Queued);
    assert_eq!(outbox.enqueue(sized(600), room("r")), Enqueued::Shed, "a digest that does not fit goes");
    assert!(outbox.closing().is_none());
}

/// The batch the writer took still counts until it is written: a connection holds at most
/// its byte bound plus one frame, not a bound's worth queued beside a bound's worth being
/// written.
#[tokio::test]
async fn the_batch_being_written_counts_against_the_byte_bound_until_it_is_written() {
    let outbox = Outbox::new(4096, 4096, 10_000);
    for _ in 0..3 {
        assert_ne!(outbox.enqueue(sized(3_000), Shed::Keep), Enqueued::Refused);
    }
    let mut batch = Vec::new();
    outbox.take(&mut batch);
    // The writer holds 9 000 bytes: 3 000 more would pass the bound.
    assert_eq!(outbox.enqueue(sized(3_000), Shed::Droppable), Enqueued::Shed, "past the watermark");
    assert_eq!(outbox.enqueue(sized(3_000), Shed::Keep), Enqueued::Refused, "the bound holds");
    assert_eq!(outbox.closed().await.reason.code, Code::SLOW_CONSUMER);

    let outbox = Outbox::new(4096, 4096, 10_000);
    for _ in 0..3 {
        outbox.enqueue(sized(3_000), Shed::Keep);
    }
    let written = outbox.take(&mut batch);
    outbox.settle(&mut batch, written);
    for _ in 0..3 {
        assert_ne!(outbox.enqueue(sized(3_000), Shed::Keep), Enqueued::Refused, "written bytes are free");
    }
}

/// A keep-alive ping goes only to a connection that holds nothing, and is never shed nor
/// counted as shed: behind a backlog, the backlog's writes are the sign of life.
#[test]
fn a_ping_goes_to_an_idle_connection_and_is_never_shed() {
    with_shed_counts(|shed_count| {
        let outbox = Outbox::new(4, 3, usize::MAX);
        assert!(outbox.ping(), "an idle connection is pinged");
        let mut batch = Vec::new();
        let written = outbox.take(&mut batch);
        assert!(batch.len() == 1 && batch[0].is_ping());
        outbox.settle(&mut batch, written);
        for _ in 0..3 {
            outbox.enqueue(frame(), Shed::Keep);
        }
        let shed = shed_count("droppable");
        assert!(!outbox.ping(), "past the watermark the backlog is the probe");
        let written = outbox.take(&mut batch);
        assert!(!outbox.ping(), "so is a batch being written");
        assert_eq!(shed_count("droppable"), shed, "a ping is not counted as shed");
        outbox.settle(&mut batch, written);
        assert!(outbox.ping());
    });
}

/// Every connection holds one outbox, idle or not: its queue keeps no buffers while empty,
/// its bounds are shared and a closing reason is boxed, so an idle outbox is one small
/// allocation. It also holds the idle connection's sink for the write pools (16 bytes, and
/// the pool's flags): 136 bytes, with the `Arc`'s counts in jemalloc's 160-byte class.
#[test]
fn an_idle_outbox_stays_small() {
    let size = std::mem::size_of::<Inner>();
    assert!(size <= 144, "an outbox takes {size} B");
}

/// A burst queued under one lock (`enqueue_all`, what a shard does per member) ends as the
/// same frames queued one by one: the same shed, the same close, the same wake-up asked for.
#[tokio::test]
async fn a_burst_queued_at_once_sheds_and_closes_as_frame_by_frame() {
    let more = [
        ("c", Shed::Keep),
        ("r-new", room("r")),
        ("d", Shed::Keep),
        ("low2", Shed::Droppable),
        ("e", Shed::Keep),
        ("f", Shed::Keep),
        ("g", Shed::Keep),
    ];
    let items: Vec<(Frame, Shed)> =
        mixed().into_iter().chain(more).map(|(name, class)| (named(name), class)).collect();
    for (capacity, watermark) in [(8, 6), (16, 6), (6, 6)] {
        let one_by_one = Outbox::new(capacity, watermark, usize::MAX);
        let mut wake_one = false;
        for (frame, class) in &items {
            wake_one |= one_by_one.enqueue(frame.clone(), class.clone()) == Enqueued::NeedsWake;
        }
        let at_once = Outbox::new(capacity, watermark, usize::MAX);
        let mut queued = Vec::new();
        let due = at_once.enqueue_all(items.iter(), |(f, s)| (f, s), |(f, _)| queued.push(f.clone()), 0);
        let closing = |o: &Outbox| o.closing().map(|c| c.reason.code);
        assert_eq!(closing(&at_once), closing(&one_by_one), "bounds {capacity}/{watermark}");
        // A connection that closed meanwhile is due no wake-up: closing woke its task.
        let wake_all = due.is_some();
        assert_eq!(wake_all, wake_one && closing(&at_once).is_none(), "bounds {capacity}/{watermark}");
        let (all, one) = (taken(&at_once), taken(&one_by_one));
        assert_eq!(all, one, "bounds {capacity}/{watermark}");
        if closing(&at_once).is_none() {
            // Everything reported queued was queued or shed later by a newer frame of its room.
            assert!(all.iter().all(|name| queued.iter().any(|f| f.payload() == name.as_bytes())));
        }
    }
}

/// A read slot let go after a panic under the queue's lock (a shard unwinding drops the
/// slots it reserved) must not panic in its turn: a panic while unwinding aborts the process.
#[test]
fn a_read_slot_dropped_after_a_panic_under_the_queue_lock_does_not_panic() {
    let outbox = Outbox::new(8, 6, 1 << 20);
    let slot = outbox.begin_read(4).expect("a slot");
    let poisoner = outbox.clone();
    let _ = std::thread::spawn(move || {
        let _queue = poisoner.0.queue.lock().unwrap();
        panic!("a bug under the lock");
    })
    .join();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(slot))).is_ok());
}
