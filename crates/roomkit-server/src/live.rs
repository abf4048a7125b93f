//! The connection tasks still running, counted for shutdown to wait for.
//!
//! Counted rather than kept in a `JoinSet`: a set keeps an entry per task (about 70 bytes
//! with the allocator's), which every waiting member paid for and only shutdown used.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How many connection tasks (serving or refusing) have not ended.
#[derive(Debug, Default)]
pub(crate) struct LiveTasks {
    count: AtomicUsize,
    none_left: Notify,
}

impl LiveTasks {
    /// A task starts; it must call [`ended`](Self::ended) once, when it is dropped.
    pub(crate) fn started(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// A task ended (finished, or was dropped or unwound part-way).
    pub(crate) fn ended(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_left.notify_waiters();
        }
    }

    /// Tasks not ended yet.
    pub(crate) fn running(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no task is left.
    pub(crate) async fn all_ended(&self) {
        loop {
            let none_left = self.none_left.notified();
            tokio::pin!(none_left);
            // Registered before the count is read: an end between the two still wakes us.
            none_left.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            none_left.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::LiveTasks;

    #[tokio::test]
    async fn shutdown_waits_for_the_last_task_and_not_longer() {
        let live = Arc::new(LiveTasks::default());
        live.all_ended().await; // none started: at once
        for _ in 0..3 {
            live.started();
        }
        let waiter = tokio::spawn({
            let live = Arc::clone(&live);
            async move { live.all_ended().await }
        });
        live.ended();
        live.ended();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one task is still running");
        live.ended();
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").unwrap();
        assert_eq!(live.running(), 0);
    }
}
