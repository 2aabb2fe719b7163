//! Counters the emulator keeps, for tests and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the emulator has seen so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests to the token endpoint and the managed-identity endpoint.
    pub token_requests: AtomicU64,
    /// Tokens issued.
    pub tokens_issued: AtomicU64,
    /// Gateway connections accepted.
    pub connections_accepted: AtomicU64,
    /// Successful `AUTH`/`HELLO … AUTH` on the gateway.
    pub auth_succeeded: AtomicU64,
    /// Refused `AUTH`/`HELLO … AUTH` on the gateway.
    pub auth_failed: AtomicU64,
    /// Gateway connections closed because their token expired.
    pub closed_at_expiry: AtomicU64,
    /// Access-key connections closed because access keys were disabled.
    pub closed_keys_disabled: AtomicU64,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
