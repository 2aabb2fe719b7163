//! Where and how to connect: host, port, database, protocol and TLS trust.

use std::time::Duration;

use redis::{IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo, TlsCertificates};

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
        let fragment = if self.tls.danger_accept_invalid_certs {
            "#insecure"
        } else {
            ""
        };
        let url = format!("rediss://{host}:{}/{}{fragment}", self.port, self.db);
        let mut settings = RedisConnectionInfo::default()
            .set_db(self.db)
            .set_password(password)
            .set_protocol(match self.protocol {
                Protocol::Resp2 => ProtocolVersion::RESP2,
                Protocol::Resp3 => ProtocolVersion::RESP3,
            });
        if let Some(user) = username {
            settings = settings.set_username(user);
        }
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
