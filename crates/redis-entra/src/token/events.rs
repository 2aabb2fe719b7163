//! Events an application can subscribe to: tokens refreshed or failing, connections
//! re-authenticated or failing. They carry no secrets.

use std::time::{Duration, SystemTime};

/// Something that happened to tokens or connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TokenEvent {
    /// A new token was acquired and pushed to connections.
    Refreshed {
        /// The token's `oid` (the Redis username).
        username: String,
        /// When it expires.
        expires_on: SystemTime,
        /// Which refresh this is (1 for the first token).
        generation: u64,
    },
    /// A token request failed; the manager will try again after `retry_in`.
    RefreshFailed {
        /// What went wrong (no secrets).
        error: String,
        /// Consecutive failures so far.
        attempt: u32,
        /// Time left on the current token, if one is still valid.
        time_left: Option<Duration>,
        /// When the next attempt will be made.
        retry_in: Duration,
    },
    /// The credential handed back a token that expires no later than the current one (an
    /// identity library's cache); it was not pushed, and the manager asks again after `retry_in`.
    NotFresher {
        /// When the current token expires.
        expires_on: SystemTime,
        /// When the next attempt will be made.
        retry_in: Duration,
    },
    /// A connection sent `AUTH` with a new token.
    ConnectionReauthenticated {
        /// The connection's id within this process.
        connection_id: u64,
        /// When the token it now holds expires.
        expires_on: SystemTime,
        /// How long the `AUTH` round trip took.
        took: Duration,
    },
    /// A connection's re-authentication failed; it will be retried, and the connection
    /// replaced if it keeps failing.
    ReauthenticationFailed {
        /// The connection's id within this process.
        connection_id: u64,
        /// What went wrong.
        error: String,
    },
    /// A connection was (re)established with a fresh token.
    Reconnected {
        /// The connection's id within this process.
        connection_id: u64,
        /// Why it was reconnected.
        reason: String,
    },
    /// A pub/sub connection's channel, pattern or shard channel was refused by the server when
    /// the subscription was renewed on a new connection (for example `NOPERM` after the
    /// identity's access policy changed). It was dropped from the subscription; the others
    /// carry on.
    SubscriptionDropped {
        /// The subscription's id within this process.
        connection_id: u64,
        /// The channel or pattern (lossy UTF-8).
        name: String,
        /// What the server said.
        error: String,
    },
}
