//! Keep-alive: noticing peers that are gone without closing.
//!
//! Every connection records when it last showed a sign of life: anything arriving from its
//! peer (a request, any frame, the answer to a ping:
//! [`FrameStream::recv_or_alive`](roomkit_core::transport::FrameStream)), or a write of
//! frames other than pings completing (a client busy receiving a backlog on a slow link
//! answers pings late, but its writer makes progress). One task for the whole server sweeps
//! the connections every `ping_interval`: it queues a keep-alive ping ([`Frame::ping`](roomkit_core::transport::Frame::ping)) to
//! each one quiet for at least half an interval (unless frames are queued or being written
//! already: they are the probe, see [`Outbox::ping`](crate::outbox::Outbox::ping)), and closes each one quiet for
//! `idle_timeout` with `KEEPALIVE_TIMEOUT`. An idle member thus costs a timestamp (in its
//! [`Outbox`](crate::outbox::Outbox)), not a timer of its own.

use std::{sync::Weak, time::Duration};

use roomkit_core::transport::CloseReason;
use roomkit_protocol::Code;
use tokio::time::{Instant, MissedTickBehavior};

use crate::ServerShared;

/// The keep-alive's time: milliseconds since the server started, on tokio's clock (so that
/// tests with paused time drive it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Sweeps the server's connections every `ping_interval` until the server is gone.
pub(crate) async fn sweep(shared: Weak<ServerShared>, ping_interval: Duration, idle_timeout: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (ping_after, close_after) = (ping_interval.as_millis() as u64 / 2, idle_timeout.as_millis() as u64);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let now = shared.clock.now_ms();
        let (mut quiet, mut silent) = (Vec::new(), Vec::new());
        for outbox in shared.connections.lock().expect("not poisoned").values() {
            match outbox.quiet_ms(now) {
                q if q >= close_after => silent.push(outbox.clone()),
                q if q >= ping_after => quiet.push(outbox.clone()),
                _ => {}
            }
        }
        for outbox in quiet {
            outbox.ping();
        }
        let secs = idle_timeout.as_secs_f64();
        for outbox in silent {
            let reason = format!("nothing from the client for {secs} s (no frame, no answer to pings)");
            if outbox.close(CloseReason::new(Code::KEEPALIVE_TIMEOUT, reason), false) {
                metrics::counter!("roomkit_keepalive_closes_total").increment(1);
            }
        }
    }
}
