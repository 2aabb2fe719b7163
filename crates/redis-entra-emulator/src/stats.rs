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
    /// Gateway connections closed because the signing key that verified their token was
    /// removed or replaced.
    pub closed_key_revoked: AtomicU64,
    /// Gateway connections closed by an injected fault: at random
    /// ([`Faults::set_random_close`](crate::faults::Faults::set_random_close)) or all at once
    /// ([`Faults::close_all_connections`](crate::faults::Faults::close_all_connections)).
    pub closed_by_fault: AtomicU64,
    /// Gateway connections closed because the backend closed its side or failed (a backend
    /// restart, or `QUIT`/a protocol error, after which Redis closes).
    pub closed_by_backend: AtomicU64,
    /// Backend restarts ([`Emulator::restart_backend`](crate::Emulator::restart_backend)).
    pub backend_restarts: AtomicU64,
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
