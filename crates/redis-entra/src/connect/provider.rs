//! Keep your redis-rs types: [`EntraCredentialsProvider`] is redis-rs' own credentials hook
//! (`StreamingCredentialsProvider`) fed by a [`TokenManager`].
//!
//! Give it to the redis-rs types you already use, and each connection they open starts with the
//! current token (`AUTH <oid> <token>`, or `HELLO 3 AUTH` on RESP3), then re-authenticates in
//! place, in order with your commands, each time the manager acquires a new token:
//!
//! | your type | where the provider goes |
//! |---|---|
//! | `MultiplexedConnection` | `AsyncConnectionConfig::set_credentials_provider`, then `Client::get_multiplexed_async_connection_with_config` |
//! | `ConnectionManager` (cargo feature `connection-manager`) | `ConnectionManagerConfig::set_credentials_provider`, then `ConnectionManager::new_with_config` |
//! | `ClusterConnection` | `ClusterClientBuilder::set_credentials_provider` |
//!
//! redis-rs (1.8) has one weakness there: when a connection's re-`AUTH` fails once (the server
//! refused the token, the reply timed out), redis-rs never re-authenticates that connection
//! again, and the server closes it when its token expires. Hold a
//! [`keep_authenticated`](super::keep_authenticated::keep_authenticated) guard next to the
//! connection to close that gap: it re-sends `AUTH` on each new token, retries until the server
//! accepts it, and has the connection replaced before expiry when that keeps failing.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use redis::AsyncCommands;
//! use redis_entra::{keep_authenticated, EntraCredentialsProvider, TokenManager, TokenManagerOptions};
//!
//! let credential = redis_entra::credential::from_env(&Default::default())?;
//! let manager = TokenManager::new(credential, TokenManagerOptions::default());
//!
//! // Your client, as before; the username and password come from the provider.
//! let client = redis::Client::open("rediss://mycache.redis.cache.windows.net:6380")?;
//! let config = redis::AsyncConnectionConfig::new()
//!     .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
//! let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
//! let _guard = keep_authenticated(&conn, manager)?;
//!
//! let _: () = conn.set("Az:key1", "value1").await?;
//! # Ok(()) }
//! ```
//!
//! # Invariants
//!
//! Each with a test that tries to break it (`tests/keep_your_types.rs`):
//!
//! - **A connection opened at any moment starts with a token that has not expired**: the
//!   stream's first item is [`TokenManager::credentials`], which waits for the manager's next
//!   token if the current one has expired.
//! - **Every new token reaches every connection**, in order with the application's commands
//!   (`*_follows_ten_token_rotations_without_a_failed_command`).
//! - **The stream never ends while the manager lives**; a failed first token is yielded as an
//!   error (redis-rs fails that connect) and the stream carries on from the next token.

use std::pin::Pin;

use futures::Stream;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};
use redis::RedisResult;

use super::to_redis_error;
use crate::token::manager::{CredentialsWatch, TokenManager};

/// redis-rs' `StreamingCredentialsProvider` over a [`TokenManager`]: each subscriber gets valid
/// credentials first, then every new token the manager acquires.
///
/// Give it to redis-rs' `AsyncConnectionConfig`, `ConnectionManagerConfig` or
/// `ClusterClientBuilder` (see the [module docs](self)), and hold a
/// [`keep_authenticated`](crate::keep_authenticated) guard beside the connection.
/// [`EntraClusterConnection`](crate::EntraClusterConnection) uses it for every node connection.
#[derive(Debug, Clone)]
pub struct EntraCredentialsProvider {
    manager: TokenManager,
}

impl EntraCredentialsProvider {
    /// A provider over `manager`.
    pub fn new(manager: TokenManager) -> Self {
        Self { manager }
    }
}

/// Where a subscriber's stream is.
enum Feed {
    /// Nothing yielded yet.
    Start(TokenManager),
    /// Yielded the token of this generation; the next one comes from the watch.
    Following(CredentialsWatch, u64),
}

impl StreamingCredentialsProvider for EntraCredentialsProvider {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let start = Feed::Start(self.manager.clone());
        Box::pin(futures::stream::unfold(start, |feed| async move {
            match feed {
                Feed::Start(manager) => {
                    let watch = manager.watch();
                    match manager.credentials().await {
                        Ok(creds) => Some((
                            Ok(BasicAuth::new(
                                creds.username().to_string(),
                                creds.token().to_string(),
                            )),
                            Feed::Following(watch, creds.generation()),
                        )),
                        // Yielded as an error (redis-rs fails that connect and may retry it);
                        // the stream carries on from the manager's next token.
                        Err(e) => Some((
                            Err(to_redis_error("no Entra ID token", e)),
                            Feed::Following(watch, 0),
                        )),
                    }
                }
                Feed::Following(mut watch, seen) => loop {
                    let creds = watch.next().await?;
                    if creds.generation() > seen {
                        let generation = creds.generation();
                        return Some((
                            Ok(BasicAuth::new(
                                creds.username().to_string(),
                                creds.token().to_string(),
                            )),
                            Feed::Following(watch, generation),
                        ));
                    }
                },
            }
        }))
    }
}
