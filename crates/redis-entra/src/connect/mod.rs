//! Redis connections that stay authenticated: one file (or folder) per kind of connection.
//!
//! | kind | type | how it stays authenticated |
//! |---|---|---|
//! | **your own redis-rs types** (`MultiplexedConnection`, `ConnectionManager`, `ClusterConnection`) | [`EntraCredentialsProvider`](provider::EntraCredentialsProvider) + [`keep_authenticated`](keep_authenticated::keep_authenticated) | redis-rs' credentials hook: each connection starts with the current token and re-`AUTH`s on each new one; the guard retries a refused re-`AUTH` and has the connection replaced before expiry when that keeps failing |
//! | async, multiplexed | [`EntraConnection`](multiplexed::EntraConnection) | a task per connection sends `AUTH` in place when a token arrives, reconnects when the connection is lost |
//! | sync | [`EntraSyncConnection`](sync::EntraSyncConnection) | sends `AUTH` before the next command once a newer token exists (never inside `MULTI`), reconnects a dead connection first |
//! | r2d2 / bb8 / deadpool pools | `pool` (features `r2d2`, `bb8`, `deadpool`) | `AUTH` at checkout, on return, or while idle: never in the middle of a borrower's commands |
//! | cluster | [`EntraClusterConnection`](cluster::EntraClusterConnection) | redis-rs' cluster client with our token stream as its credentials provider: every node connection starts with the current token and re-`AUTH`s in place (see [`cluster`] for the limits) |
//! | pub/sub | [`EntraPubSub`](pubsub::EntraPubSub) | RESP3: `AUTH` in place; RESP2 (where Redis refuses `AUTH` in subscribed mode): a new connection takes over before the token expires, without losing or repeating a message |
//! | fred (feature `fred`) | a fred client configured by `fred::builder` | fred fetches the current token on every (re)connect; `fred::keep_authenticated` sends `AUTH` to every node once per new token, and has the client reconnect if that keeps failing |

pub mod cluster;
#[cfg(feature = "fred")]
#[cfg_attr(docsrs, doc(cfg(feature = "fred")))]
pub mod fred;
pub mod keep_authenticated;
pub mod multiplexed;
pub mod options;
#[cfg(any(feature = "r2d2", feature = "bb8", feature = "deadpool"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "r2d2", feature = "bb8", feature = "deadpool")))
)]
pub mod pool;
pub mod provider;
pub mod pubsub;
pub(crate) mod session;
pub mod sync;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// A process-wide id for a new connection of any kind (events name connections by it).
pub(crate) fn next_connection_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Turns a library error into a redis error, for the `ConnectionLike` paths: no token (the
/// credential failed, timed out, panicked, or its token could not be read) is an authentication
/// failure to redis-rs, as a refused password would be; the rest is an I/O or client error.
pub(crate) fn to_redis_error(context: &'static str, e: Error) -> redis::RedisError {
    let kind = match &e {
        Error::Redis(re) => return (**re).clone(),
        Error::Credential(_)
        | Error::CredentialTimeout(_)
        | Error::CredentialPanicked
        | Error::Claims(_) => redis::ErrorKind::AuthenticationFailed,
        Error::Config(_) | Error::Tls(_) => redis::ErrorKind::Client,
        _ => redis::ErrorKind::Io,
    };
    redis::RedisError::from((kind, context, e.to_string()))
}

/// Whether a reply is `PING`'s `PONG` (and not, say, `QUEUED` inside a `MULTI`).
pub(crate) fn is_pong(reply: &redis::Value) -> bool {
    match reply {
        redis::Value::SimpleString(s) => s == "PONG",
        redis::Value::BulkString(b) => b == b"PONG",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_is_an_authentication_failure_to_redis_rs() {
        let e = to_redis_error(
            "connect",
            Error::CredentialTimeout(std::time::Duration::ZERO),
        );
        assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed);
        let e = to_redis_error("connect", Error::CredentialPanicked);
        assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed);
        let e = to_redis_error("connect", Error::Config("no host".into()));
        assert_eq!(e.kind(), redis::ErrorKind::Client);
        let e = to_redis_error("connect", Error::Stopped);
        assert_eq!(e.kind(), redis::ErrorKind::Io);
    }
}
