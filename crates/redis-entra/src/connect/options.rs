//! Where and how to connect: host, port, database, protocol and TLS trust.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
    TlsCertificates,
};
use rustls::pki_types::ServerName;

use crate::error::{Error, Result};
use crate::tls::TlsOptions;
use crate::token::credentials::RedisCredentials;

/// The RESP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2 (`AUTH` at connect).
    #[default]
    Resp2,
    /// RESP3 (`HELLO 3 AUTH` at connect; pub/sub messages arrive as pushes).
    Resp3,
}

/// Where a Redis connection goes. TLS is always on: Azure accepts Entra tokens over TLS only.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The host name, e.g. `mycache.redis.cache.windows.net`.
    pub host: String,
    /// The TLS port: 6380 on Azure Cache for Redis, 10000 on Azure Managed Redis.
    pub port: u16,
    /// The database number.
    pub db: i64,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// Whom to trust.
    pub tls: TlsOptions,
    /// How long a TCP+TLS+AUTH connect may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long a reply may take (default: none).
    pub response_timeout: Option<Duration>,
    /// On RESP2, how often an idle connection is probed with `PING` so that a lost connection
    /// is replaced before the next command needs it (default 2 s; RESP3 connections learn of a
    /// disconnection at once and need no probe).
    pub health_check_interval: Option<Duration>,
}

impl ConnectOptions {
    /// Options for `host:port` with defaults for the rest.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            db: 0,
            protocol: Protocol::Resp2,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: None,
            health_check_interval: Some(Duration::from_secs(2)),
        }
    }

    /// Opens a multiplexed connection signed in with `creds`: TCP, TLS with the process-wide
    /// [`TlsOptions::shared_client_config`], then redis-rs' `AUTH`/`HELLO` and `SELECT`, all
    /// within [`connect_timeout`](Self::connect_timeout). Its driver runs on its own task.
    pub(crate) async fn open_multiplexed(
        &self,
        creds: &RedisCredentials,
        config: AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection> {
        let settings = self.redis_settings(Some(creds.username()), Some(creds.token()));
        self.within_connect_timeout(async {
            let stream = self.tls_stream().await?;
            let (conn, driver) =
                MultiplexedConnection::new_with_config(&settings, stream, config).await?;
            tokio::spawn(driver);
            Ok(conn)
        })
        .await
    }

    /// Opens a RESP2 pub/sub connection signed in with `creds` (as [`Self::open_multiplexed`]).
    pub(crate) async fn open_pubsub(&self, creds: &RedisCredentials) -> Result<redis::aio::PubSub> {
        let settings = self.redis_settings(Some(creds.username()), Some(creds.token()));
        self.within_connect_timeout(async {
            let stream = self.tls_stream().await?;
            Ok(redis::aio::PubSub::new(&settings, stream).await?)
        })
        .await
    }

    /// TCP, then TLS with the process-wide [`TlsOptions::shared_client_config`].
    async fn tls_stream(&self) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        if self.host.is_empty() {
            return Err(Error::Config(
                "no Redis host: set AZURE_REDIS_HOST (e.g. mycache.redis.cache.windows.net)".into(),
            ));
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            Error::Config(format!(
                "bad Redis host name {host:?}: {e}; use the cache's DNS name or an IP address"
            ))
        })?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.shared_client_config()?);
        let tcp = tokio::net::TcpStream::connect((host, self.port))
            .await
            .map_err(redis::RedisError::from)?;
        let _ = tcp.set_nodelay(true);
        Ok(tls
            .connect(name, tcp)
            .await
            .map_err(redis::RedisError::from)?)
    }

    async fn within_connect_timeout<T>(
        &self,
        connect: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::from(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {}:{} took longer than {:?}",
                        self.host, self.port, self.connect_timeout
                    ),
                )))
            })?
    }

    fn redis_settings(
        &self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> RedisConnectionInfo {
        let mut settings = RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(match self.protocol {
                Protocol::Resp2 => ProtocolVersion::RESP2,
                Protocol::Resp3 => ProtocolVersion::RESP3,
            });
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        if let Some(user) = username {
            settings = settings.set_username(user);
        }
        settings
    }

    /// A redis client for this host, port, database, protocol and TLS trust, with no
    /// credentials: for redis-rs' own connection types, given an
    /// [`EntraCredentialsProvider`](crate::EntraCredentialsProvider) that authenticates each
    /// connection (see [`provider`](super::provider)).
    pub fn redis_client(&self) -> Result<redis::Client> {
        self.build_client(None, None)
    }

    /// A redis client that authenticates with `creds`.
    pub fn client(&self, creds: &RedisCredentials) -> Result<redis::Client> {
        self.client_with_password(Some(creds.username()), creds.token())
    }

    /// A redis client that authenticates with a username (or none) and a password: an access
    /// key, or a token.
    pub fn client_with_password(
        &self,
        username: Option<&str>,
        password: &str,
    ) -> Result<redis::Client> {
        self.build_client(username, Some(password))
    }

    fn build_client(
        &self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<redis::Client> {
        if self.host.is_empty() {
            return Err(Error::Config(
                "no Redis host: set AZURE_REDIS_HOST (e.g. mycache.redis.cache.windows.net)".into(),
            ));
        }
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        self.tls.check_insecure_supported()?;
        let fragment = if self.tls.danger_accept_invalid_certs {
            "#insecure"
        } else {
            ""
        };
        let url = format!("rediss://{host}:{}/{}{fragment}", self.port, self.db);
        let settings = self.redis_settings(username, password);
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::Config(format!("bad Redis address {host}:{}: {e}", self.port)))?
            .set_redis_settings(settings);
        let client = redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: self.tls.pem_bundle()?,
            },
        )?;
        Ok(client)
    }
}
