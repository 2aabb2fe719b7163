//! An async multiplexed connection that stays authenticated.
//!
//! [`EntraConnection`] wraps redis-rs' `MultiplexedConnection`. A task per connection watches the
//! token manager: when a new token arrives it sends `AUTH <oid> <token>` on the live connection
//! (in order with the application's commands, so a transaction sent as one pipeline is never
//! split), retries a failed re-AUTH, and replaces the connection before its token expires if the
//! re-AUTH keeps failing. When the connection is lost it reconnects with a fresh token at once,
//! without waiting for the next command.
//!
//! A replacement because re-authentication keeps failing is make-before-break: the old
//! connection (still authenticated until its token expires) keeps serving commands while the new
//! one connects, and is closed only after the new one is installed and the commands already sent
//! on it have been answered. The application sees no error and no stall.
//!
//! A command issued while the connection is being replaced either succeeds on the new
//! connection or returns an error the caller can retry; it is never dropped silently.
//!
//! # Invariants
//!
//! What you can rely on, each with a test that tries to break it (in
//! `tests/multiplexed_invariants.rs` unless named otherwise):
//!
//! - **Every new token reaches the live connection** before the old one expires: `AUTH` in
//!   place, or a connection opened with it, including when the token arrives while the
//!   connection is being replaced (`every_new_token_reaches_the_live_connection_even_across_reconnects`;
//!   `tests/end_to_end.rs`: `traffic_across_ten_rotations_has_no_failed_command`).
//! - **No `AUTH` inside a hand-written `MULTI`**: the task waits for `EXEC` or `DISCARD`
//!   (`a_token_arriving_inside_a_hand_written_multi_waits_for_exec`). A `MULTI` still open when
//!   the token nears expiry loses its connection, and the transaction then fails as a whole
//!   until `EXEC`/`DISCARD`, never running in part
//!   (`a_hand_written_multi_outliving_its_token_fails_instead_of_running_piecemeal`). A
//!   transaction sent as one atomic pipeline is never split. (A hand-written `MULTI` on a
//!   connection that other tasks use at the same time interleaves their commands: use atomic
//!   pipelines, or a pool, for that.)
//! - **One lost connection, one reconnect**, however many signals report it
//!   (`one_dead_connection_is_replaced_once`).
//! - **A slow reply is not a dead connection**: the RESP2 probe never runs while commands are in
//!   flight (`a_slow_reply_is_not_taken_for_a_dead_connection`).
//! - **The task stops when the last handle is dropped**, whatever it is doing, and releases the
//!   token manager (`a_connection_dropped_while_refused_stops_its_task_and_releases_the_manager`;
//!   `tests/end_to_end.rs`: `a_connection_dropped_while_its_server_is_down_releases_its_task_and_the_manager`).
//! - **No command is dropped silently**: each gets its reply or an error; during an outage a
//!   command fails after one connect timeout instead of queueing (`tests/faults.rs`).
//! - **Bounded**: no queue of its own; token requests caused by refused `AUTH`s are paced by the
//!   [`TokenManager`] (see [`TokenManager::refresh_now`]).
//! - **The command path** is one atomic load while nothing changed: each handle keeps the
//!   connection it last used, and the task bumps an epoch when it replaces the connection,
//!   finds it dead, or sees its token expire.

// The module docs link to it; the code of this file does not use it.
#[cfg(doc)]
use crate::token::manager::TokenManager;

mod errors;
mod handle;
mod maintain;
mod reconnect;
mod state;
mod transaction;

pub(super) use errors::{is_auth_error, is_connection_error};
pub use handle::EntraConnection;
