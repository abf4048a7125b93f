//! Which connections are let in: the connection caps, counted as connections are accepted,
//! log in and end (`ServerConfig::max_connections`, `max_connections_per_address`,
//! `max_connections_per_account`).
//!
//! The total and the per-address counts are taken when a connection is accepted, before it
//! costs the server anything but the refusal; the per-account count when it logs in. Each is
//! given back when the connection ends.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, MutexGuard, PoisonError},
};

use roomkit_core::transport::CloseReason;
use roomkit_protocol::{Code, UserUuid};

/// The connection caps in force (0: no cap).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) total: usize,
    pub(crate) per_address: usize,
    pub(crate) per_account: usize,
}

/// The connections counted against the caps.
#[derive(Debug)]
pub(crate) struct Admission {
    caps: Caps,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<String, usize>,
    by_account: HashMap<UserUuid, usize>,
}

/// The address a connection's peer is counted under: its IP address (any port), or the whole
/// description for transports without addresses (each in-memory connection is its own).
pub(crate) fn address_of(peer: &str) -> String {
    peer.parse::<SocketAddr>().map_or_else(|_| peer.to_string(), |addr| addr.ip().to_string())
}

impl Admission {
    pub(crate) fn new(caps: Caps) -> Self {
        Self { caps, counts: Mutex::default() }
    }

    /// Counts a newly accepted connection from `address`, or says why it is refused:
    /// `SERVER_BUSY` at the total cap, `TOO_MANY_CONNECTIONS` at the address's.
    pub(crate) fn accept(&self, address: &str) -> Result<(), CloseReason> {
        let mut counts = self.lock();
        if self.caps.total > 0 && counts.total >= self.caps.total {
            let msg = format!("server busy: it already has its limit of {} connections", self.caps.total);
            return Err(CloseReason::new(Code::SERVER_BUSY, msg));
        }
        let from_address = counts.by_address.get(address).copied().unwrap_or(0);
        if self.caps.per_address > 0 && from_address >= self.caps.per_address {
            let msg = format!("too many connections from {address} (limit {})", self.caps.per_address);
            return Err(CloseReason::new(Code::TOO_MANY_CONNECTIONS, msg));
        }
        counts.total += 1;
        *counts.by_address.entry(address.to_string()).or_default() += 1;
        Ok(())
    }

    /// A connection accepted from `address` ended.
    pub(crate) fn release(&self, address: &str) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        decrement(&mut counts.by_address, address);
    }

    /// Counts a connection logging in as `user`, or refuses it with the message to answer:
    /// the account has `max_connections_per_account` connections already.
    pub(crate) fn log_in(&self, user: &UserUuid) -> Result<(), String> {
        let mut counts = self.lock();
        let mine = counts.by_account.get(user).copied().unwrap_or(0);
        if self.caps.per_account > 0 && mine >= self.caps.per_account {
            return Err(format!(
                "too many connections: account `{user}` already has {mine} (limit {})",
                self.caps.per_account
            ));
        }
        *counts.by_account.entry(user.clone()).or_default() += 1;
        Ok(())
    }

    /// A connection logged in as `user` ended.
    pub(crate) fn log_out(&self, user: &UserUuid) {
        decrement(&mut self.lock().by_account, user.as_str());
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Every change is one step: the counts are whole whatever panicked holding them.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn decrement<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_release() {
        let a = Admission::new(Caps { total: 3, per_address: 2, per_account: 1 });
        let (one, two) = (address_of("10.0.0.1:5000"), address_of("10.0.0.2:5000"));
        assert_eq!(one, "10.0.0.1");
        assert_eq!(address_of("[::1]:80"), "::1");
        assert_eq!(address_of("memory-client-7"), "memory-client-7");
        assert!(a.accept(&one).is_ok() && a.accept(&address_of("10.0.0.1:5001")).is_ok());
        assert_eq!(a.accept(&one).unwrap_err().code, Code::TOO_MANY_CONNECTIONS);
        assert!(a.accept(&two).is_ok());
        assert_eq!(a.accept(&two).unwrap_err().code, Code::SERVER_BUSY);
        a.release(&one);
        assert!(a.accept(&two).is_ok());
        let alice: UserUuid = "alice".parse().unwrap();
        assert!(a.log_in(&alice).is_ok());
        assert!(a.log_in(&alice).unwrap_err().contains("limit 1"));
        a.log_out(&alice);
        assert!(a.log_in(&alice).is_ok());
        let open = Admission::new(Caps { total: 0, per_address: 0, per_account: 0 });
        for _ in 0..1000 {
            assert!(open.accept(&one).is_ok() && open.log_in(&alice).is_ok());
        }
    }
}
