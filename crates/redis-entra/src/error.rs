//! The library's error type.

use std::sync::Arc;

use crate::claims::ClaimsError;

/// What went wrong, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The credential could not get a token.
    #[error("could not get an Entra ID token: {0}")]
    Credential(Arc<azure_core::Error>),
    /// The token request did not finish in time.
    #[error("the token request did not finish within {0:?}: is the identity endpoint reachable?")]
    CredentialTimeout(std::time::Duration),
    /// The token could not be read.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The token manager has stopped.
    #[error("the token manager has stopped")]
    Stopped,
    /// The credential panicked while asked for a token (a bug in the credential). The token
    /// manager treats it as a failed request and retries with backoff.
    #[error("the credential panicked while asked for a token (a bug in it; its message went to the panic hook); retrying with backoff")]
    CredentialPanicked,
    /// The token manager's refresh task needs a Tokio runtime, and none is running here.
    #[error("the token manager needs a Tokio runtime: call it from inside one, or use BlockingTokenManager in synchronous code")]
    NoRuntime,
    /// Redis refused or failed.
    #[error("redis: {0}")]
    Redis(Arc<redis::RedisError>),
    /// The configuration is wrong.
    #[error("{0}")]
    Config(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// fred refused or failed (feature `fred`).
    #[cfg(feature = "fred")]
    #[error("fred: {0}")]
    Fred(Arc<fred::error::Error>),
}

#[cfg(feature = "fred")]
impl From<fred::error::Error> for Error {
    fn from(e: fred::error::Error) -> Self {
        Self::Fred(Arc::new(e))
    }
}

impl From<azure_core::Error> for Error {
    fn from(e: azure_core::Error) -> Self {
        Self::Credential(Arc::new(e))
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(Arc::new(e))
    }
}

// The public handles can be shared across tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Error>();
    send_sync::<crate::TokenManager>();
    send_sync::<crate::BlockingTokenManager>();
    send_sync::<crate::EntraConnection>();
    send_sync::<crate::EntraClusterConnection>();
    send_sync::<crate::EntraCredentialsProvider>();
    send_sync::<crate::Reauthentication>();
    send_sync::<crate::RedisCredentials>();
    send_sync::<crate::ConnectOptions>();
    send_sync::<crate::TokenManagerOptions>();
    send_sync::<crate::config::RedisConfig>();
};
const _: () = {
    const fn send<T: Send>() {}
    send::<crate::EntraSyncConnection>();
    send::<crate::EntraPubSub>();
};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
