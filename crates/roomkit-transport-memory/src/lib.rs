//! The in-memory transport: connections are pairs of bounded in-process frame queues.
//!
//! Use it to run a roomkit server and any number of clients in one process — in tests of
//! your own app, or in examples — with the same behaviour as over the network:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use roomkit_core::transport::{Connector, Listener};
//!
//! let (mut listener, connector) = roomkit_transport_memory::transport();
//! let (server_side, client_side) = tokio::join!(listener.accept(), connector.connect());
//! let (mut server_side, mut client_side) = (server_side.unwrap(), client_side.unwrap());
//! client_side.sink.send(&["{}".into()]).await.unwrap();
//! assert_eq!(&server_side.stream.recv().await.unwrap()[..], b"{}");
//! # }
//! ```
//!
//! Each direction of a connection is a queue of [`MemoryConfig::channel_capacity`] frames: a
//! peer that stops reading makes the other side's `send` wait, as a full socket buffer would,
//! so slow-consumer handling is exercised for real. A batch of frames is handed over under
//! one lock with one wake-up (moved, not cloned, when given with `send_all`), and the reader
//! takes every queued frame at once (`recv_many` hands it all of them).
//!
//! A keep-alive ping ([`Frame::ping`]) is answered by the transport itself, at once, for as
//! long as the peer's end is there: an in-memory peer cannot vanish without its end closing
//! (or the connection being severed), so there is nothing for a round trip to find out. The
//! answer arrives on the pinging side's [`FrameStream::recv_or_alive`], after what the peer
//! had sent before it.

use std::{
    collections::VecDeque,
    sync::{
        atomic::AtomicBool,
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use roomkit_core::transport::{
    CloseReason, Connection, Connector, Frame, FrameSink, FrameStream, Listener, Taken, TransportError,
};
use tokio::sync::{mpsc, Notify};

/// Tunables of the in-memory transport.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Frames buffered per direction of a connection before `send` waits.
    pub channel_capacity: usize,
    /// Connections waiting to be accepted before `connect` waits.
    pub accept_backlog: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { channel_capacity: 256, accept_backlog: 128 }
    }
}

/// A listener and a connector to it, with the default configuration.
pub fn transport() -> (MemoryListener, MemoryConnector) {
    transport_with(MemoryConfig::default())
}

/// A listener and a connector to it.
pub fn transport_with(config: MemoryConfig) -> (MemoryListener, MemoryConnector) {
    let (tx, rx) = mpsc::channel(config.accept_backlog.max(1));
    let next_id = Arc::new(AtomicU64::new(1));
    (MemoryListener { rx }, MemoryConnector { tx, config, next_id, live: Arc::default() })
}

/// The server side of the in-memory transport.
#[derive(Debug)]
pub struct MemoryListener {
    rx: mpsc::Receiver<Connection>,
}

#[async_trait]
impl Listener for MemoryListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.rx.recv().await.ok_or(TransportError::Closed(None))
    }

    fn local_addr(&self) -> String {
        "memory".into()
    }
}

/// The client side: each [`connect`](Connector::connect) opens a new in-memory connection.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    tx: mpsc::Sender<Connection>,
    config: MemoryConfig,
    next_id: Arc<AtomicU64>,
    live: Arc<Mutex<Vec<Weak<Cut>>>>,
}

impl MemoryConnector {
    /// A connector to the same listener whose connections are severed on their own: give
    /// one client its own connector to drop just its connection.
    pub fn separate(&self) -> MemoryConnector {
        MemoryConnector { live: Arc::default(), ..self.clone() }
    }

    /// Fault injection: drops every open connection of this connector at once, as a network
    /// failure would — no close reason, and frames in flight are lost. Returns how many.
    pub fn sever_all(&self) -> usize {
        self.sever(|_| true)
    }

    /// Fault injection: drops about one open connection in `one_in` (at random), as
    /// [`sever_all`](Self::sever_all) does. Returns how many.
    pub fn sever_some(&self, one_in: u64) -> usize {
        let mut state = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        self.sever(move |_| {
            // xorshift: good enough to pick victims.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % one_in.max(1) == 0
        })
    }

    fn sever(&self, mut pick: impl FnMut(&Cut) -> bool) -> usize {
        let mut live = self.live.lock().expect("not poisoned");
        live.retain(|w| w.strong_count() > 0);
        let mut severed = 0;
        for cut in live.iter().filter_map(Weak::upgrade) {
            if !cut.is_cut() && pick(&cut) {
                cut.cut();
                severed += 1;
            }
        }
        severed
    }
}

/// The switch that drops one connection (both directions) abruptly.
#[derive(Debug, Default)]
struct Cut {
    done: AtomicBool,
    notify: Notify,
}

impl Cut {
    fn cut(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_cut(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cap = self.config.channel_capacity.max(1);
        let cut = Arc::new(Cut::default());
        {
            let mut live = self.live.lock().expect("not poisoned");
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&cut));
        }
        let (mut to_server, from_client) = direction(cap, &cut);
        let (mut to_client, from_server) = direction(cap, &cut);
        // A side's pings are answered into its own stream.
        to_client.answers = to_server.queue.as_ref().map(Arc::downgrade);
        to_server.answers = to_client.queue.as_ref().map(Arc::downgrade);
        let server_side = Connection {
            sink: Box::new(to_client),
            stream: Box::new(from_client),
            peer: format!("memory-client-{id}"),
        };
        self.tx
            .send(server_side)
            .await
            .map_err(|_| TransportError::Io("the in-memory listener is gone".into()))?;
        Ok(Connection {
            sink: Box::new(to_server),
            stream: Box::new(from_server),
            peer: "memory-server".into(),
        })
    }
}

/// One direction of a connection: frames, then (once the sender is gone) the close reason
/// the sender left, read after every queued frame like a WebSocket close frame.
///
/// A queue of at most `capacity` frames under a mutex, with one wake-up each way: a `send`
/// of a batch takes the lock once and wakes the reader once, and the reader takes every
/// queued frame at once (frames, not batches, are what the capacity counts, so a full queue
/// still makes `send` wait as a full socket buffer would).
fn direction(capacity: usize, cut: &Arc<Cut>) -> (MemorySink, MemoryStream) {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState { frames: VecDeque::new(), sender_gone: false, receiver_gone: false }),
        capacity,
        readable: Notify::new(),
        writable: Notify::new(),
        reason: OnceLock::new(),
    });
    (
        MemorySink { queue: Some(Arc::clone(&queue)), cut: Arc::clone(cut), answers: None },
        MemoryStream { queue, taken: VecDeque::new(), closed: false, cut: Arc::clone(cut) },
    )
}

struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
    /// Woken (one permit) when frames were added or the sender left.
    readable: Notify,
    /// Woken (one permit) when frames were taken or the receiver left.
    writable: Notify,
    /// Why the sender closed, set before it leaves.
    reason: OnceLock<CloseReason>,
}

/// What one direction of a connection carries.
#[derive(Debug)]
enum Item {
    Frame(Bytes),
    /// The answer to a keep-alive ping this side sent.
    Alive,
}

struct QueueState {
    frames: VecDeque<Item>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().expect("not poisoned")
    }

    fn sender_leaves(&self) {
        self.lock().sender_gone = true;
        self.readable.notify_one();
    }
}

struct MemorySink {
    queue: Option<Arc<Queue>>,
    cut: Arc<Cut>,
    /// This side's own incoming direction, where the answers to its pings go. Weak: the
    /// queue belongs to the peer's sink and this side's stream.
    answers: Option<Weak<Queue>>,
}

impl MemorySink {
    /// Answers a ping of this side: the peer is there while its end of this direction is.
    fn answer_ping(&self, queue: &Queue) {
        if queue.lock().receiver_gone || self.cut.is_cut() {
            return;
        }
        if let Some(answers) = self.answers.as_ref().and_then(Weak::upgrade) {
            let mut state = answers.lock();
            // A full queue holds frames from the peer: signs of life enough.
            if state.sender_gone || state.receiver_gone || state.frames.len() >= answers.capacity {
                return;
            }
            state.frames.push_back(Item::Alive);
            drop(state);
            answers.readable.notify_one();
        }
    }
}

/// Frames a [`MemorySink`] hands over: borrowed ones are cloned into the queue, owned ones
/// moved (no reference-count change).
trait Outgoing: Send {
    fn rest(&self) -> &[Frame];
    /// Puts the first `n` frames' payloads in `into` (pings left out: the transport answers
    /// them); returns whether there was a ping among them.
    fn hand(&mut self, n: usize, into: &mut VecDeque<Item>) -> bool;
}

impl Outgoing for &[Frame] {
    fn rest(&self) -> &[Frame] {
        self
    }

    fn hand(&mut self, n: usize, into: &mut VecDeque<Item>) -> bool {
        let (now, later) = self.split_at(n);
        *self = later;
        queue_payloads(now.iter().cloned(), into)
    }
}

impl Outgoing for &mut Vec<Frame> {
    fn rest(&self) -> &[Frame] {
        self
    }

    fn hand(&mut self, n: usize, into: &mut VecDeque<Item>) -> bool {
        queue_payloads(self.drain(..n), into)
    }
}

/// Puts the payloads of `frames` but pings in `into`; returns whether there was a ping.
fn queue_payloads(frames: impl Iterator<Item = Frame>, into: &mut VecDeque<Item>) -> bool {
    let mut pinged = false;
    for frame in frames {
        if frame.is_ping() {
            pinged = true;
        } else {
            into.push_back(Item::Frame(frame.into_payload()));
        }
    }
    pinged
}

impl MemorySink {
    /// Queues `out`'s frames in order, waiting while the queue is full.
    async fn hand_over(&mut self, mut out: impl Outgoing) -> Result<(), TransportError> {
        let queue = self.queue.as_ref().ok_or(TransportError::Closed(None))?;
        while !out.rest().is_empty() {
            if self.cut.is_cut() {
                return Err(TransportError::Closed(None));
            }
            let (added, pinged) = {
                let mut state = queue.lock();
                if state.receiver_gone {
                    // A ping to a peer that is gone is not answered; a frame fails.
                    return if out.rest().iter().all(Frame::is_ping) {
                        Ok(())
                    } else {
                        Err(TransportError::Closed(None))
                    };
                }
                let room = queue.capacity.saturating_sub(state.frames.len()).min(out.rest().len());
                (room, out.hand(room, &mut state.frames))
            };
            if pinged {
                self.answer_ping(queue);
            }
            if added > 0 {
                queue.readable.notify_one();
            } else {
                // Full: wait for the reader to take frames (or leave), or for a cut.
                let cut = self.cut.notify.notified();
                tokio::pin!(cut);
                cut.as_mut().enable();
                if self.cut.is_cut() {
                    return Err(TransportError::Closed(None));
                }
                tokio::select! {
                    () = queue.writable.notified() => {}
                    () = cut => {}
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl FrameSink for MemorySink {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        self.hand_over(frames).await
    }

    async fn send_all(&mut self, frames: &mut Vec<Frame>) -> Result<(), TransportError> {
        self.hand_over(frames).await
    }

    /// What the queue has room for, moved in; nothing once the connection is closed or cut
    /// (the send that follows reports it).
    fn try_send(&mut self, frames: &mut Vec<Frame>) -> Taken {
        let Some(queue) = self.queue.as_ref() else { return Taken::default() };
        if self.cut.is_cut() {
            return Taken::default();
        }
        let (added, pinged) = {
            let mut state = queue.lock();
            if state.receiver_gone {
                return Taken::default();
            }
            let room = queue.capacity.saturating_sub(state.frames.len()).min(frames.len());
            (room, (&mut *frames).hand(room, &mut state.frames))
        };
        if pinged {
            self.answer_ping(queue);
        }
        if added > 0 {
            queue.readable.notify_one();
        }
        Taken { frames: added, cut: false }
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        if let Some(queue) = self.queue.take() {
            // The reason must be in place before the peer can see the sender gone.
            let _ = queue.reason.set(reason);
            queue.sender_leaves();
        }
        Ok(())
    }
}

impl Drop for MemorySink {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.sender_leaves();
        }
    }
}

struct MemoryStream {
    queue: Arc<Queue>,
    /// Items taken from the queue and not yet returned.
    taken: VecDeque<Item>,
    closed: bool,
    cut: Arc<Cut>,
}

impl MemoryStream {
    /// The next frame, or with `alive`, `None` for the answer to a ping.
    async fn next(&mut self, alive: bool) -> Result<Option<Bytes>, TransportError> {
        while !self.closed && !self.cut.is_cut() {
            match self.taken.pop_front() {
                Some(Item::Frame(frame)) => return Ok(Some(frame)),
                Some(Item::Alive) if alive => return Ok(None),
                Some(Item::Alive) => continue,
                None => {}
            }
            let sender_gone = {
                let mut state = self.queue.lock();
                // Swapped, not copied: the two buffers trade places.
                std::mem::swap(&mut state.frames, &mut self.taken);
                state.sender_gone
            };
            if !self.taken.is_empty() {
                self.queue.writable.notify_one();
                continue;
            }
            if sender_gone {
                self.closed = true;
                break;
            }
            let cut = self.cut.notify.notified();
            tokio::pin!(cut);
            cut.as_mut().enable();
            if self.cut.is_cut() {
                break;
            }
            tokio::select! {
                () = self.queue.readable.notified() => {}
                () = cut => {}
            }
        }
        if self.cut.is_cut() {
            self.taken.clear();
            self.leave();
            return Err(TransportError::Closed(None));
        }
        Err(TransportError::Closed(self.queue.reason.get().cloned()))
    }

    /// Lets the peer's pending and later `send`s fail now rather than wait on a reader that
    /// is gone; the frames still queued are dropped.
    fn leave(&self) {
        let mut state = self.queue.lock();
        state.receiver_gone = true;
        state.frames.clear();
        drop(state);
        self.queue.writable.notify_one();
    }
}

#[async_trait]
impl FrameStream for MemoryStream {
    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        Ok(self.next(false).await?.expect("only answers to pings are None"))
    }

    async fn recv_or_alive(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.next(true).await
    }

    async fn recv_many(&mut self, into: &mut Vec<Bytes>, max: usize) -> Result<usize, TransportError> {
        into.push(self.next(false).await?.expect("only answers to pings are None"));
        let mut taken = 1;
        while taken < max {
            match self.taken.pop_front() {
                Some(Item::Frame(frame)) => {
                    into.push(frame);
                    taken += 1;
                }
                Some(Item::Alive) => {}
                None => break,
            }
        }
        Ok(taken)
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests;
