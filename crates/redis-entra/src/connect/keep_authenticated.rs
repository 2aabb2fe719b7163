//! A companion for the connections you built yourself: re-`AUTH` on each new token, retried
//! until the server accepts it, and the connection replaced before expiry when that keeps
//! failing.
//!
//! redis-rs re-authenticates the connections it opens with an
//! [`EntraCredentialsProvider`](super::provider::EntraCredentialsProvider) on each new token,
//! but if one re-`AUTH` fails (the server refused it, the reply timed out) it never tries that
//! connection again, and the server closes it when its token expires. fred re-authenticates
//! only at a fixed interval. [`keep_authenticated`] closes both gaps. Hold its guard as long as
//! the connection: it stops when dropped.
//!
//! On each token the manager acquires, it sends `AUTH <oid> <token>` on the connection (every
//! node of a cluster), in order with the application's commands. A failed `AUTH` is retried with
//! backoff (100 ms doubling); after 5 failures, or once only max(lifetime/10, 1 s) is left on the
//! token the connection holds, the connection is replaced, so that it authenticates anew with
//! the current token, before the server closes it:
//!
//! | connection | how it is replaced |
//! |---|---|
//! | `redis::aio::ConnectionManager` | `QUIT`: the manager reconnects at once, with the provider's current token |
//! | `redis::cluster_async::ClusterConnection` | `QUIT` on every node: redis-rs reconnects each node (with the current token) and retries the commands caught by the close |
//! | a fred client | fred's `force_reconnection` |
//! | `redis::aio::MultiplexedConnection` | it cannot be: redis-rs has no way to reconnect it; the guard keeps retrying until the token expires (use a `ConnectionManager`, or [`EntraConnection`](crate::EntraConnection), where that matters) |
//!
//! Commands in flight when a connection is replaced fail as they would have at expiry, with a
//! connection error (a `ConnectionManager` does not retry them; a cluster connection does). The
//! guard emits [`TokenEvent::ConnectionReauthenticated`], [`TokenEvent::ReauthenticationFailed`]
//! and [`TokenEvent::Reconnected`] with [`Reauthentication::id`].
//!
//! # Invariants
//!
//! Each with a test that tries to break it (`tests/keep_your_types.rs`, `tests/cluster.rs`,
//! `tests/fred.rs`):
//!
//! - **Every new token is sent once per connection, in order with the traffic**, even where
//!   redis-rs' own re-authentication gave up
//!   (`connection_manager_follows_ten_token_rotations_without_a_failed_command`).
//! - **A re-`AUTH` the server keeps refusing gets the connection replaced before the token
//!   expires**, and the replacement starts with the current token
//!   (`connection_manager_is_replaced_before_expiry_when_reauth_keeps_failing`).
//! - **The guard's task ends with the guard** (`dropping_the_guard_stops_its_task`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;
use crate::token::manager::TokenManager;

/// How long one re-`AUTH` may take.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed re-`AUTH`s after which the connection is replaced.
const MAX_REAUTH_FAILURES: u32 = 5;

/// A boxed future, as the connection kinds return them.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a connection is re-authenticated and replaced (sealed: the kinds are this crate's).
pub(crate) mod sealed {
    use super::BoxFuture;
    use crate::token::credentials::RedisCredentials;

    /// The two operations the guard needs from a connection.
    pub trait Connection: Clone + Send + Sync + 'static {
        /// `AUTH <oid> <token>` on every underlying connection; the errors (never the token)
        /// if any refused it.
        fn auth<'a>(
            &'a mut self,
            creds: &'a RedisCredentials,
        ) -> BoxFuture<'a, std::result::Result<(), String>>;

        /// Has the connection re-established with the current token; whether it could.
        fn replace(&mut self) -> BoxFuture<'_, bool>;

        /// Whether the connection is up (while it is not, its own reconnect authenticates it).
        fn is_connected(&self) -> bool {
            true
        }
    }
}

/// A connection [`keep_authenticated`] can keep authenticated: redis-rs'
/// `MultiplexedConnection`, `ConnectionManager` (feature `connection-manager`) and
/// `ClusterConnection`, and fred's clients (feature `fred`, through
/// `connect::fred::keep_authenticated`).
pub trait Reauthenticate: sealed::Connection {}

impl<C: sealed::Connection> Reauthenticate for C {}

/// Keeps a connection authenticated while it lives: the task stops when it is dropped (see
/// [`keep_authenticated`]).
#[derive(Debug)]
pub struct Reauthentication {
    id: u64,
    task: tokio::task::AbortHandle,
}

impl Reauthentication {
    /// The id [`TokenEvent`]s give this connection.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Reauthentication {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `AUTH <oid> <token>` on `conn` (a clone of it: clones share the connection) each time
/// `manager` acquires a token, as long as the returned guard lives; see the
/// [module docs](self) for the retry and replacement rule.
///
/// Give the connection an [`EntraCredentialsProvider`](crate::EntraCredentialsProvider) too:
/// the guard follows tokens, the provider authenticates each new connection.
///
/// # Errors
///
/// [`Error::NoRuntime`] when called outside a Tokio runtime.
pub fn keep_authenticated<C: Reauthenticate>(
    conn: &C,
    manager: TokenManager,
) -> Result<Reauthentication> {
    spawn(crate::connect::next_connection_id(), conn.clone(), manager)
}

/// [`keep_authenticated`] with a given connection id.
pub(crate) fn spawn<C: sealed::Connection>(
    id: u64,
    mut conn: C,
    manager: TokenManager,
) -> Result<Reauthentication> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let task = runtime.spawn(async move {
        let mut tokens = manager.watch();
        // What the connection last authenticated with, as far as this task knows.
        let mut held = manager.current();
        while let Some(creds) = tokens.next().await {
            if held
                .as_ref()
                .is_some_and(|h| h.generation() >= creds.generation())
            {
                continue; // the token the connection started with
            }
            held = Some(reauthenticate(id, &mut conn, &manager, creds, held).await);
        }
    });
    Ok(Reauthentication {
        id,
        task: task.abort_handle(),
    })
}

/// Sends `AUTH` with `creds` until it succeeds, the connection is down, or it has to be
/// replaced; returns what the connection now holds.
async fn reauthenticate<C: sealed::Connection>(
    id: u64,
    conn: &mut C,
    manager: &TokenManager,
    mut creds: Arc<RedisCredentials>,
    held: Option<Arc<RedisCredentials>>,
) -> Arc<RedisCredentials> {
    // The deadline is the held token's expiry; a fresh token's time left is the lifetime.
    let expires_on = held.as_ref().unwrap_or(&creds).expires_on();
    let replace_at = (creds.time_left() / 10).max(Duration::from_secs(1));
    let mut attempt = 0u32;
    loop {
        if !conn.is_connected() {
            // Its reconnect authenticates with the current token.
            return manager.current().unwrap_or(creds);
        }
        let started = Instant::now();
        let error = match tokio::time::timeout(AUTH_TIMEOUT, conn.auth(&creds)).await {
            Ok(Ok(())) => {
                let took = started.elapsed();
                tracing::debug!(connection = id, ?took, "re-authenticated");
                manager.emit(TokenEvent::ConnectionReauthenticated {
                    connection_id: id,
                    expires_on: creds.expires_on(),
                    took,
                });
                return creds;
            }
            Ok(Err(e)) => e,
            Err(_) => format!("AUTH timed out after {AUTH_TIMEOUT:?}"),
        };
        attempt += 1;
        tracing::warn!(connection = id, attempt, %error, "re-authentication failed");
        manager.emit(TokenEvent::ReauthenticationFailed {
            connection_id: id,
            error,
        });
        let left = expires_on
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left <= replace_at || attempt >= MAX_REAUTH_FAILURES {
            let reason = "re-authentication kept failing";
            if conn.replace().await {
                tracing::info!(connection = id, reason, "replaced with a fresh token");
                manager.emit(TokenEvent::Reconnected {
                    connection_id: id,
                    reason: reason.to_string(),
                });
                return manager.current().unwrap_or(creds);
            }
            if left.is_zero() {
                // Not replaceable, and the server closes it now: nothing left to do.
                return creds;
            }
        }
        // Backoff (100 ms doubling to 6.4 s), shortened to reach the replacement point in time;
        // past that point (a connection that cannot be replaced) the plain backoff, not a
        // 50 ms loop until expiry.
        let backoff = Duration::from_millis(100u64 << attempt.min(6));
        let to_replace_at = left.saturating_sub(replace_at);
        let delay = if to_replace_at.is_zero() {
            backoff
        } else {
            backoff
                .min(to_replace_at / 2)
                .max(Duration::from_millis(50))
        };
        tokio::time::sleep(delay).await;
        if let Some(newer) = manager.current() {
            if newer.generation() > creds.generation() {
                creds = newer;
            }
        }
    }
}

/// `AUTH <oid> <token>` as a redis-rs command.
pub(crate) fn auth_command(creds: &RedisCredentials) -> redis::Cmd {
    let mut auth = redis::cmd("AUTH");
    auth.arg(creds.username()).arg(creds.token());
    auth
}

/// An `AUTH` reply as the guard reports it (a reply is never printed: it could echo anything).
fn auth_outcome(reply: redis::RedisResult<redis::Value>) -> std::result::Result<(), String> {
    match reply {
        Ok(redis::Value::Okay) => Ok(()),
        Ok(redis::Value::SimpleString(s)) if s == "OK" => Ok(()),
        Ok(_) => Err("unexpected reply to AUTH".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl sealed::Connection for redis::aio::MultiplexedConnection {
    fn auth<'a>(
        &'a mut self,
        creds: &'a RedisCredentials,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move { auth_outcome(auth_command(creds).query_async(self).await) })
    }

    fn replace(&mut self) -> BoxFuture<'_, bool> {
        // redis-rs cannot reconnect a `MultiplexedConnection` in place.
        Box::pin(async { false })
    }
}

#[cfg(feature = "connection-manager")]
#[cfg_attr(docsrs, doc(cfg(feature = "connection-manager")))]
impl sealed::Connection for redis::aio::ConnectionManager {
    fn auth<'a>(
        &'a mut self,
        creds: &'a RedisCredentials,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move { auth_outcome(auth_command(creds).query_async(self).await) })
    }

    fn replace(&mut self) -> BoxFuture<'_, bool> {
        // The server closes the connection after `QUIT`'s reply. The manager reconnects when a
        // command meets the closed connection (its reconnect subscribes to the provider, whose
        // first item is the current token): our own `PING`s are those commands, so that the
        // application's next one finds the new connection rather than failing on the old one.
        Box::pin(async move {
            let quit = redis::cmd("QUIT");
            if !matches!(
                tokio::time::timeout(AUTH_TIMEOUT, quit.query_async::<redis::Value>(self)).await,
                Ok(Ok(_))
            ) {
                return false;
            }
            for _ in 0..3 {
                let ping = redis::cmd("PING");
                let reply = tokio::time::timeout(AUTH_TIMEOUT, ping.query_async(self)).await;
                if matches!(reply, Ok(Ok(ref pong)) if crate::connect::is_pong(pong)) {
                    return true;
                }
            }
            false
        })
    }
}
