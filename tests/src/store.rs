//! A gate for store stand-ins: calls that reach it while it is closed wait until it opens,
//! and a test can wait until a number of them are waiting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Open until [`close`](Self::close)d.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    opened: Notify,
    /// Calls that reached the gate while it was closed.
    waiting: AtomicUsize,
    arrived: Notify,
}

impl Gate {
    /// Calls that reach the gate from now on wait.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Lets every waiting call through, and later ones.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Passes the gate: at once while it is open, once it opens otherwise.
    pub async fn pass(&self) {
        let mut counted = false;
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::SeqCst);
                self.arrived.notify_waiters();
            }
            opened.await;
        }
    }

    /// Waits until `n` calls have reached the gate while it was closed (in all).
    pub async fn until_waiting(&self, n: usize) {
        loop {
            let arrived = self.arrived.notified();
            if self.waiting.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }
}
