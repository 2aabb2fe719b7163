//! The counters the module shows in `INFO entra`.

use std::sync::atomic::{AtomicU64, Ordering};

use redis_entra_jwt::Rejection;

use crate::verify::Refusal;

/// The module's counters (relaxed atomics: they are only ever read for `INFO`).
#[derive(Default)]
pub struct Stats {
    /// Tokens accepted (the client became the ACL user named by the `oid`).
    pub accepted: AtomicU64,
    /// Passwords that were not tokens, left to the server's own check.
    pub passed_through: AtomicU64,
    /// Refusals by [`Refusal::name`]: the token reasons, then oversized, no user, busy.
    refused: [AtomicU64; Rejection::ALL.len() + 3],
    /// Connections closed because their token expired.
    pub expired_closes: AtomicU64,
    /// Authentications that waited for keys to be fetched.
    pub blocked_auths: AtomicU64,
    /// Key fetches that succeeded (per tenant).
    pub key_refreshes: AtomicU64,
    /// Key fetches that failed (per tenant).
    pub key_refresh_failures: AtomicU64,
}

fn index(refusal: Refusal) -> usize {
    let n = Rejection::ALL.len();
    match refusal {
        Refusal::Token(r) => Rejection::ALL.iter().position(|x| *x == r).unwrap_or(0),
        Refusal::Oversized => n,
        Refusal::NoUser => n + 1,
        Refusal::Busy => n + 2,
    }
}

impl Stats {
    /// Counts one increment of `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal.
    pub fn refused(&self, refusal: Refusal) {
        if let Some(c) = self.refused.get(index(refusal)) {
            Self::bump(c);
        }
    }

    /// Every refusal reason with its count.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Rejection::ALL
            .iter()
            .map(|r| Refusal::Token(*r))
            .chain([Refusal::Oversized, Refusal::NoUser, Refusal::Busy])
            .map(|r| {
                let n = self
                    .refused
                    .get(index(r))
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                (r.name(), n)
            })
            .collect()
    }

    /// All refusals.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
