//! Connection pools that stay authenticated: [r2d2] (sync), [bb8] and [deadpool] (async).
//!
//! A pooled connection belongs to one borrower at a time, who may send a `MULTI`, some commands
//! and an `EXEC` as separate round trips. An `AUTH` sent in the middle would be queued inside the
//! transaction, so a pooled connection is re-authenticated only where no borrower is in the
//! middle of something:
//!
//! - **at checkout** (`is_valid`, which r2d2 and bb8 call before handing a connection out unless
//!   `test_on_check_out` is turned off; deadpool's `recycle`): `AUTH` if a newer token exists, a reconnect if the
//!   connection died or its token expired, then `PING`;
//! - **while idle**: a worker, woken by every new token and by every connection returned with an
//!   old token, sends `AUTH` on the connections that sit idle in the pool, so that an idle
//!   connection is never closed by the server at expiry;
//! - **lazily, before a borrower's command**, only if the borrow outlives the token's refresh
//!   point, and never between a `MULTI` and its `EXEC`/`DISCARD`.
//!
//! A connection that failed on the wire is reported broken when returned (`has_broken`), so the
//! pool drops it and opens a new one with a fresh token.
//!
//! # Invariants
//!
//! What you can rely on, each with a test that tries to break it (in
//! `tests/pool_invariants.rs` unless named otherwise):
//!
//! - **A pool never hands out a connection in a state its borrower did not ask for.** Every
//!   command is noted before it is sent; a connection given back with a `MULTI` or `WATCH` open,
//!   after a session-altering command (`SELECT`, `CLIENT REPLY`, `RESET`, `SUBSCRIBE`, …), or
//!   with a command whose reply was never read (its future was cancelled) is discarded on
//!   return, and checkout's `PING` must answer `PONG`
//!   (`r2d2_never_hands_out_a_connection_left_inside_multi`,
//!   `r2d2_never_hands_out_a_connection_with_a_watch_left_open`,
//!   `bb8_never_hands_out_a_connection_left_inside_multi`,
//!   `bb8_a_multi_cancelled_after_it_was_sent_never_lets_the_next_borrower_queue`,
//!   `r2d2_a_borrower_that_panics_inside_multi_does_not_poison_the_next_one`,
//!   `bb8_a_borrower_that_panics_inside_multi_does_not_poison_the_next_one`).
//! - **No `AUTH` between a borrower's `MULTI` and its `EXEC`** (`tests/pool.rs`:
//!   `a_bb8_transaction_open_across_a_token_arrival_is_not_broken`).
//! - **A transaction is never run in part, nor committed without its `WATCH`**: a connection
//!   replaced inside `MULTI` or after `WATCH` (it died, or its token expired) fails every
//!   command until the borrower ends the transaction
//!   (`bb8_a_reconnect_inside_multi_fails_the_transaction_instead_of_running_it_piecemeal`,
//!   `sync_a_reconnect_inside_multi_fails_the_transaction_instead_of_running_it_piecemeal`,
//!   `sync_a_reconnect_after_watch_never_commits_the_transaction`).
//! - **A refused re-`AUTH` is retried with backoff**, not before every command, and replaced
//!   before expiry if it keeps failing (`sync_a_refused_reauthentication_is_retried_with_backoff_not_per_command`;
//!   `tests/reauth_failure.rs`: `pooled_connections_whose_reauth_keeps_failing_are_replaced_before_expiry`).
//! - **Idle connections stay authenticated** (`tests/pool.rs`, ten rotations, `closed_at_expiry`
//!   0).
//!
//! An async pooled connection whose re-`AUTH` fails is retried with backoff (not on every
//! command), and if it keeps failing (5 times, or once only max(lifetime/10, 1 s) is left on its
//! token) it is replaced before its token expires, where no borrower is mid-transaction: the new
//! connection is opened first, and if that fails the old one (still valid) stays until the next
//! try. Idle connections get the same treatment from the worker, on a short timer.
//!
//! For async code the pool's connection is [`EntraPooledConnection`], a redis-rs
//! `MultiplexedConnection` re-authenticated by those rules, rather than an
//! [`EntraConnection`](crate::EntraConnection): the latter re-authenticates from a background task
//! as soon as a token arrives, which is right for a shared connection but could land between a
//! borrower's `MULTI` and `EXEC`.
//!
//! [r2d2]: https://docs.rs/r2d2
//! [bb8]: https://docs.rs/bb8
//! [deadpool]: https://docs.rs/deadpool

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The connections a pool created, for its idle-connection worker.
struct Registry<T> {
    conns: Mutex<Vec<Weak<T>>>,
    wake: Arc<Notify>,
}

impl<T> Registry<T> {
    fn new() -> Self {
        Self {
            conns: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        }
    }

    fn add(&self, conn: &Arc<T>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.push(Arc::downgrade(conn));
    }

    fn live(&self) -> Vec<Arc<T>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.iter().filter_map(Weak::upgrade).collect()
    }
}

#[cfg(feature = "bb8")]
mod bb8;
#[cfg(feature = "deadpool")]
mod deadpool;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
mod pooled;
#[cfg(feature = "r2d2")]
mod r2d2;

#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub use self::bb8::EntraAsyncConnectionManager;
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub use self::deadpool::EntraDeadpoolManager;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "bb8", feature = "deadpool"))))]
pub use self::pooled::EntraPooledConnection;
#[cfg(feature = "r2d2")]
#[cfg_attr(docsrs, doc(cfg(feature = "r2d2")))]
pub use self::r2d2::EntraConnectionManager;
