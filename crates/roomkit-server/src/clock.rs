//! The one place the server reads wall time from.
//!
//! Core takes time as an input (milliseconds since the Unix epoch); shards, the JWT check and
//! the web page's development tokens all read it here, so a test or a future simulated clock
//! has one seam to replace. Wall time only: durations and deadlines use tokio's monotonic
//! clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: core's notion of time.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, as tokens count time (a [`roomkit_token::Clock`]).
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_and_milliseconds_agree() {
        let (ms, s) = (super::now_ms(), super::now_secs());
        assert!(ms > 1_600_000_000_000, "after 2020");
        assert!(s.abs_diff(ms / 1000) <= 1);
    }
}
