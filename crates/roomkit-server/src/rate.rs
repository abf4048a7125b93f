//! The per-connection request rate limiter: a token bucket, time as an input.

#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use crate::RateLimit;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle it.
    Allow,
    /// Answer `RATE_LIMITED`.
    Refuse,
    /// Answer `RATE_LIMITED` and close the connection.
    Close,
}

/// A connection's token bucket. (Its limit is the server's, given to every check: every
/// connection has a limiter, so it keeps no copy.)
#[derive(Debug)]
pub(crate) struct RateLimiter {
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self { tokens: f64::from(limit.burst.max(1)), last: now, refused_in_a_row: 0 }
    }

    pub(crate) fn check(&mut self, limit: RateLimit, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let burst = f64::from(limit.burst.max(1));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(limit.per_second)).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Verdict::Allow;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= limit.close_after.max(1) {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refill_interval(limit: RateLimit) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(limit.per_second.max(1)))
    }

    #[test]
    fn burst_then_refill_then_close() {
        let limit = RateLimit { per_second: 10, burst: 3, close_after: 4 };
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limit, t0);
        assert_eq!([r.check(limit, t0), r.check(limit, t0), r.check(limit, t0)], [Verdict::Allow; 3]);
        assert_eq!(r.check(limit, t0), Verdict::Refuse);
        // 100 ms refills one token at 10/s.
        let t1 = t0 + refill_interval(limit);
        assert_eq!(r.check(limit, t1), Verdict::Allow);
        assert_eq!([r.check(limit, t1), r.check(limit, t1), r.check(limit, t1)], [Verdict::Refuse; 3]);
        assert_eq!(r.check(limit, t1), Verdict::Close);
    }

    #[test]
    fn an_allowed_request_resets_the_refusal_count() {
        let limit = RateLimit { per_second: 1, burst: 1, close_after: 2 };
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limit, t0);
        assert_eq!(r.check(limit, t0), Verdict::Allow);
        assert_eq!(r.check(limit, t0), Verdict::Refuse);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.check(limit, t1), Verdict::Allow);
        assert_eq!(r.check(limit, t1), Verdict::Refuse);
        assert_eq!(r.check(limit, t1), Verdict::Close);
    }
}
