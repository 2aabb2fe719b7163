//! [fred](https://docs.rs/fred) clients authenticated with Entra ID (cargo feature `fred`).
//!
//! fred asks a [`CredentialProvider`] for a username and password on every connect and
//! reconnect; [`EntraFredCredentials`] answers from a [`TokenManager`] (the token's `oid` and
//! the token itself), so every connection fred opens starts with a valid token.
//!
//! For connections that stay open, fred's own re-authentication model is a **fixed interval**
//! ([`CredentialProvider::refresh_interval`]): every interval it fetches credentials and sends
//! `AUTH` (or `HELLO 3 AUTH`) to every node, whether or not the token changed. That is
//! available here ([`EntraFredCredentials::with_refresh_interval`], with
//! [`fixed_refresh_interval`] as a sensible value), but it is not the default: fred also exposes
//! `AUTH` on demand ([`AuthInterface::auth`], which reaches every cluster node), so
//! [`keep_authenticated()`] sends `AUTH` once per new token, as soon as the manager has it, with
//! the same retry-then-replace rule as [`EntraConnection`](crate::EntraConnection): if the
//! re-`AUTH` keeps failing, the client is told to reconnect (fred then fetches the current token)
//! before the old token expires.
//!
//! Invariants, each with a test in `tests/fred.rs`: every new token reaches every node
//! (`fred_stays_authenticated_across_ten_rotations`, and with fred's own interval
//! `fred_with_its_own_fixed_interval_stays_authenticated`); a re-`AUTH` that keeps failing gets
//! the client reconnected before the token expires
//! (`fred_is_reconnected_before_expiry_when_reauth_keeps_failing`). Connection ids are shared
//! with the other kinds (one process-wide sequence).
//!
//! TLS is configured from [`TlsOptions::client_config`](crate::TlsOptions::client_config) (our
//! aws-lc-rs rustls configuration); fred's `enable-rustls` feature uses aws-lc-rs too, so no
//! second crypto provider and no process-wide default provider are involved.
//!
//! ```no_run
//! # async fn run() -> redis_entra::Result<()> {
//! use fred::prelude::*;
//! use redis_entra::connect::fred::{builder, keep_authenticated};
//! use redis_entra::{ConnectOptions, TokenManager, TokenManagerOptions};
//!
//! let credential = redis_entra::credential::from_env(&Default::default())?;
//! let manager = TokenManager::new(credential, TokenManagerOptions::default());
//! let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
//! let client = builder(&options, &manager)?.build()?;
//! client.init().await?;
//! let _reauth = keep_authenticated(&client, manager)?;
//! let _: () = client.set("Az:key1", "value1", None, None, false).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::error::{Error as FredError, ErrorKind as FredErrorKind};
use fred::interfaces::{AuthInterface, ClientLike};
use fred::types::config::{
    Config, CredentialProvider, ReconnectPolicy, Server, ServerConfig, TlsConfig, TlsConnector,
};
use fred::types::{Builder, ClientState, RespVersion};

use super::keep_authenticated::{self, sealed, BoxFuture, Reauthentication};
use super::options::{ConnectOptions, Protocol};
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::manager::TokenManager;

/// A fred [`CredentialProvider`] over a [`TokenManager`]: `fetch` returns the current token's
/// `oid` as the username and the token as the password (waiting for a valid token if there is
/// none yet).
///
/// By default it sets no [`refresh_interval`](CredentialProvider::refresh_interval): pair it with
/// [`keep_authenticated()`], which re-authenticates once per new token. Or opt into fred's own
/// fixed-interval model with [`with_refresh_interval`](Self::with_refresh_interval).
#[derive(Clone)]
pub struct EntraFredCredentials {
    manager: TokenManager,
    refresh_interval: Option<Duration>,
}

impl std::fmt::Debug for EntraFredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: only whose it is and when fred re-sends it.
        f.debug_struct("EntraFredCredentials")
            .field(
                "username",
                &self.manager.current().map(|c| c.username().to_string()),
            )
            .field("refresh_interval", &self.refresh_interval)
            .finish_non_exhaustive()
    }
}

impl EntraFredCredentials {
    /// A provider over `manager`, with no fixed refresh interval.
    pub fn new(manager: TokenManager) -> Self {
        Self {
            manager,
            refresh_interval: None,
        }
    }

    /// Makes fred re-send `AUTH` with the current token every `every` (fred's fixed-interval
    /// model; `None` turns it off). The interval must be well under the token lifetime so that
    /// a new token reaches every connection before the old one expires: see
    /// [`fixed_refresh_interval`]. Each tick costs one `AUTH` per node even when the token has
    /// not changed; [`keep_authenticated()`] avoids that.
    pub fn with_refresh_interval(mut self, every: Option<Duration>) -> Self {
        self.refresh_interval = every;
        self
    }

    /// The token manager behind the provider.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }
}

/// A fixed re-`AUTH` interval for fred's interval model, for tokens living `lifetime`: a quarter
/// of the lifetime, at most 60 s and at least 1 s. The manager refreshes a token at 50-75 % of
/// its life, so a new token reaches every connection within 25 % of its lifetime (60 s for
/// Entra's 60-90 minute tokens), long before the old one expires.
pub fn fixed_refresh_interval(lifetime: Duration) -> Duration {
    (lifetime / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[async_trait]
impl CredentialProvider for EntraFredCredentials {
    async fn fetch(
        &self,
        _server: Option<&Server>,
    ) -> std::result::Result<(Option<String>, Option<String>), FredError> {
        let creds = self
            .manager
            .credentials()
            .await
            .map_err(|e| FredError::new(FredErrorKind::Auth, e.to_string()))?;
        Ok((
            Some(creds.username().to_string()),
            Some(creds.token().to_string()),
        ))
    }

    fn refresh_interval(&self) -> Option<Duration> {
        self.refresh_interval
    }
}

/// A fred configuration for `options` (one server, TLS from [`ConnectOptions::tls`], RESP2 or
/// RESP3, the database) whose credentials come from `manager` (no fixed refresh interval: use
/// [`keep_authenticated()`]).
pub fn config(options: &ConnectOptions, manager: &TokenManager) -> Result<Config> {
    if options.host.is_empty() {
        return Err(Error::Config(
            "no Redis host: set AZURE_REDIS_HOST (e.g. mycache.redis.cache.windows.net)".into(),
        ));
    }
    let database = match options.db {
        0 => None,
        db => Some(
            u8::try_from(db)
                .map_err(|_| Error::Config(format!("database {db} is out of range for fred")))?,
        ),
    };
    let tls: TlsConfig = TlsConnector::from(options.tls.client_config()?).into();
    Ok(Config {
        server: ServerConfig::new_centralized(options.host.clone(), options.port),
        tls: Some(tls),
        version: match options.protocol {
            Protocol::Resp2 => RespVersion::RESP2,
            Protocol::Resp3 => RespVersion::RESP3,
        },
        database,
        credential_provider: Some(Arc::new(EntraFredCredentials::new(manager.clone()))),
        ..Config::default()
    })
}

/// A fred [`Builder`] with [`config`], the connect timeout of `options`, and a reconnect policy
/// that never gives up (exponential backoff from 100 ms to 5 s).
pub fn builder(options: &ConnectOptions, manager: &TokenManager) -> Result<Builder> {
    let mut builder = Builder::from_config(config(options, manager)?);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = options.connect_timeout;
        });
    Ok(builder)
}

/// Sends `AUTH <oid> <token>` on `client` (every node of a cluster) each time `manager`
/// acquires a token, as long as the returned guard lives.
///
/// The rule is [`keep_authenticated()`](crate::keep_authenticated)'s: a failed `AUTH` is retried
/// with backoff; if it keeps failing (5 times, or until only max(lifetime/10, 1 s) is left on the
/// token the client last authenticated with), the client is told to reconnect, which
/// authenticates with the current token through [`EntraFredCredentials`]. While the client is
/// disconnected nothing is sent: fred's reconnect fetches the current token itself. Events name
/// the client by [`Reauthentication::id`].
///
/// # Errors
///
/// [`Error::NoRuntime`] when called outside a Tokio runtime.
pub fn keep_authenticated<C>(client: &C, manager: TokenManager) -> Result<Reauthentication>
where
    C: AuthInterface + ClientLike + Clone + Send + Sync + 'static,
{
    keep_authenticated::spawn(
        crate::connect::next_connection_id(),
        Fred(client.clone()),
        manager,
    )
}

/// A fred client, as [`keep_authenticated()`] drives it.
#[derive(Clone)]
struct Fred<C>(C);

impl<C> sealed::Connection for Fred<C>
where
    C: AuthInterface + ClientLike + Clone + Send + Sync + 'static,
{
    fn auth<'a>(
        &'a mut self,
        creds: &'a RedisCredentials,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            self.0
                .auth(
                    Some(creds.username().to_string()),
                    creds.token().to_string(),
                )
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn replace(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match self.0.force_reconnection().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "reconnecting failed (fred)");
                    false
                }
            }
        })
    }

    fn is_connected(&self) -> bool {
        self.0.state() == ClientState::Connected
    }
}
