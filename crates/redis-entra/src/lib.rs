//! # redis-entra
//!
//! Microsoft Entra ID authentication for Azure Cache for Redis and Azure Managed Redis.
//!
//! Azure's rules: the password is an Entra access token for `https://redis.azure.com/.default`,
//! the username is the token's `oid` claim, the connection is TLS (port 6380, or 10000 on
//! Managed Redis), and the server closes a connection whose token expires unless the client sent
//! `AUTH <oid> <new token>` on it before then.
//!
//! The crate is built as one direction of flow:
//!
//! - [`credential`]: where tokens come from (any `azure_core` `TokenCredential`; helpers for
//!   client secrets, managed identities and the environment);
//! - [`token`]: the [`TokenManager`], which refreshes before expiry (ratio and margin, with
//!   jitter), retries failures with backoff **forever**, shares one request among all callers,
//!   and publishes [`TokenEvent`]s;
//! - [`claims`]: the token's claims, read as base64url JSON (no `oid`, no username: an error);
//! - [`connect`]: connections that re-authenticate in place and reconnect with a fresh token;
//! - [`config`]: Service Connector's variables, connection strings and Azure profiles;
//! - [`tls`]: whom to trust (system roots, plus an optional extra CA).
//!
//! ```no_run
//! # async fn run() -> redis_entra::Result<()> {
//! use redis::AsyncCommands;
//! use redis_entra::{ConnectOptions, EntraConnection, TokenManager, TokenManagerOptions};
//!
//! let credential = redis_entra::credential::from_env(&Default::default())?;
//! let manager = TokenManager::new(credential, TokenManagerOptions::default());
//! let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
//! let mut conn = EntraConnection::connect(options, manager).await?;
//! let _: () = conn.set("Az:key1", "value1").await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The `azure_core` crate whose `TokenCredential` the credentials implement.
pub use azure_core;
/// The `redis` crate this one is built on (its types appear in the API).
pub use redis;

pub mod claims;
pub mod config;
pub mod connect;
pub mod credential;
mod error;
pub mod tls;
pub mod token;

pub use claims::{ClaimsError, TokenClaims};
pub use connect::cluster::EntraClusterConnection;
#[cfg(feature = "fred")]
pub use connect::fred::{keep_authenticated as keep_fred_authenticated, EntraFredCredentials};
pub use connect::keep_authenticated::{keep_authenticated, Reauthenticate, Reauthentication};
pub use connect::multiplexed::EntraConnection;
pub use connect::options::{ConnectOptions, Protocol};
#[cfg(feature = "bb8")]
pub use connect::pool::EntraAsyncConnectionManager;
#[cfg(feature = "r2d2")]
pub use connect::pool::EntraConnectionManager;
#[cfg(feature = "deadpool")]
pub use connect::pool::EntraDeadpoolManager;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
pub use connect::pool::EntraPooledConnection;
pub use connect::provider::EntraCredentialsProvider;
pub use connect::pubsub::{
    EntraPubSub, EntraPubSubSink, EntraPubSubStream, Message, SubscriptionKind,
};
pub use connect::sync::{BlockingTokenManager, EntraSyncConnection};
pub use error::{Error, Result};
pub use tls::TlsOptions;
pub use token::credentials::RedisCredentials;
pub use token::events::TokenEvent;
pub use token::manager::{
    CredentialsWatch, TokenManager, TokenManagerOptions, TokenStats, Username, REDIS_SCOPE,
};
pub use token::policy::{RefreshPolicy, RetryPolicy};
