//! Token buckets for chatroom message rates, with time as an input.

use std::collections::{HashMap, VecDeque};

use roomkit_protocol::UserUuid;

use crate::config::MessageRate;

/// One message, in the bucket's unit (thousandths of a message, so that a refill of
/// `per_second` messages per second is `per_second` units per millisecond, in integers).
const MESSAGE: i64 = 1000;

/// A token bucket: `burst` messages at once, refilled at `per_second`. Starts full. Messages
/// that may not be refused may take it below empty, down to minus one burst: that debt is
/// paid back before anyone else's message fits.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: MessageRate,
    /// Units available; negative while in debt.
    units: i64,
    /// When the bucket was last refilled, in ms.
    last: u64,
}

impl TokenBucket {
    pub(crate) fn new(rate: MessageRate) -> Self {
        Self { rate, units: Self::capacity(rate), last: 0 }
    }

    fn capacity(rate: MessageRate) -> i64 {
        i64::from(rate.burst) * MESSAGE
    }

    fn unlimited(&self) -> bool {
        self.rate.per_second == 0
    }

    fn refill(&mut self, now: u64) {
        if now > self.last {
            let elapsed = i64::try_from(now - self.last).unwrap_or(i64::MAX);
            let gained = elapsed.saturating_mul(i64::from(self.rate.per_second));
            self.units = self.units.saturating_add(gained).min(Self::capacity(self.rate));
            self.last = now;
        }
    }

    /// Whether one more message fits at `now` and leaves at least `reserve_percent` of the
    /// burst unused.
    pub(crate) fn allows(&mut self, now: u64, reserve_percent: u8) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        let reserve = Self::capacity(self.rate) * i64::from(reserve_percent) / 100;
        self.units - MESSAGE >= reserve
    }

    /// Takes one message (after [`allows`](Self::allows), or unconditionally for messages
    /// that are never refused).
    pub(crate) fn take(&mut self, now: u64) {
        if self.unlimited() {
            return;
        }
        self.refill(now);
        self.units = (self.units - MESSAGE).max(-Self::capacity(self.rate));
    }
}

impl TokenBucket {
    /// When the bucket will be full again, or `None` if it is full at `now` (or unlimited).
    fn full_at(&mut self, now: u64) -> Option<u64> {
        if self.unlimited() {
            return None;
        }
        self.refill(now);
        let missing = Self::capacity(self.rate) - self.units;
        let per_ms = i64::from(self.rate.per_second);
        (missing > 0).then(|| now + u64::try_from((missing + per_ms - 1) / per_ms).unwrap_or(u64::MAX))
    }
}

/// The buckets of members who left a room before theirs refilled, so that leaving and joining
/// again does not buy a fresh burst. An entry is kept only until its bucket would be full,
/// so the map holds no more than the members who left in the last burst-refill time.
#[derive(Debug, Default)]
pub(crate) struct DepartedRates {
    buckets: HashMap<UserUuid, TokenBucket>,
    /// When each kept bucket is full again, oldest first (a user may appear twice; only the
    /// bucket in `buckets` counts).
    expiry: VecDeque<(u64, UserUuid)>,
}

impl DepartedRates {
    /// Keeps `user`'s bucket as it leaves, if it is not full.
    pub(crate) fn keep(&mut self, now: u64, user: &UserUuid, mut bucket: TokenBucket) {
        self.prune(now);
        if let Some(full_at) = bucket.full_at(now) {
            self.expiry.push_back((full_at, user.clone()));
            self.buckets.insert(user.clone(), bucket);
        }
    }

    /// The bucket `user` left with, if it is kept. (A bucket refills by the clock, so one
    /// kept past its expiry is simply full.)
    pub(crate) fn take(&mut self, user: &UserUuid) -> Option<TokenBucket> {
        self.buckets.remove(user)
    }

    fn prune(&mut self, now: u64) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            let (_, user) = self.expiry.pop_front().expect("front exists");
            if self.buckets.get_mut(&user).is_some_and(|b| b.full_at(now).is_none()) {
                self.buckets.remove(&user);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: u32, burst: u32) -> TokenBucket {
        TokenBucket::new(MessageRate { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = bucket(20, 40);
        for _ in 0..40 {
            assert!(b.allows(1000, 0));
            b.take(1000);
        }
        assert!(!b.allows(1000, 0));
        assert!(!b.allows(1049, 0), "one message takes 50 ms to come back");
        assert!(b.allows(1050, 0));
    }

    #[test]
    fn a_reserve_keeps_part_of_the_burst() {
        let mut b = bucket(100, 10);
        for _ in 0..5 {
            assert!(b.allows(0, 50));
            b.take(0);
        }
        assert!(!b.allows(0, 50));
        assert!(b.allows(0, 0));
    }

    #[test]
    fn debt_is_bounded_and_paid_back() {
        let mut b = bucket(1000, 2);
        for _ in 0..10 {
            b.take(0);
        }
        assert!(!b.allows(0, 0));
        assert!(!b.allows(2, 0), "two messages of debt and one to send: 3 ms at one per ms");
        assert!(b.allows(3, 0));
    }

    #[test]
    fn zero_per_second_is_unlimited() {
        let mut b = bucket(0, 0);
        for _ in 0..1000 {
            assert!(b.allows(0, 50));
            b.take(0);
        }
    }

    #[test]
    fn a_bucket_kept_on_leaving_comes_back_and_is_dropped_once_full() {
        let rate = MessageRate { per_second: 20, burst: 40 };
        let mut kept = DepartedRates::default();
        let user = UserUuid::new("u").unwrap();
        let mut b = TokenBucket::new(rate);
        for _ in 0..40 {
            b.take(1000);
        }
        kept.keep(1000, &user, b);
        let mut back = kept.take(&user).expect("kept while not full");
        assert!(!back.allows(1000, 0), "no fresh burst after leaving and joining again");
        assert!(back.allows(1050, 0), "the rate still refills it");
        kept.keep(1050, &user, back);
        // Full again 2 s after it was emptied: pruned by the next departure.
        kept.keep(4000, &UserUuid::new("v").unwrap(), TokenBucket::new(rate));
        assert_eq!(kept.len(), 0, "full buckets are not kept");
    }
}
