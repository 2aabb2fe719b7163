//! Redis Cluster (Azure Managed Redis with the OSS cluster policy, or a clustered Azure Cache
//! for Redis) with Entra ID tokens.
//!
//! [`EntraClusterConnection`] is redis-rs' cluster-async client (it follows `MOVED` and `ASK`,
//! refreshes the slot map, reconnects lost nodes) with two additions: an
//! [`EntraCredentialsProvider`], redis-rs' `StreamingCredentialsProvider` hook fed by our
//! [`TokenManager`], and a task that re-authenticates every node and retries where redis-rs
//! gives up.
//!
//! # How every node connection stays authenticated
//!
//! redis-rs opens one multiplexed connection per node, at bootstrap, after a `MOVED`/`ASK` to a
//! node it did not know, after a topology change, and after a lost connection. Two mechanisms
//! keep them authenticated:
//!
//! 1. **redis-rs' credentials provider hook.** For each node connection redis-rs asks the
//!    provider for a stream of credentials. The **first** item authenticates the new connection
//!    (`AUTH <oid> <token>`, or `HELLO 3 AUTH` on RESP3); our stream yields
//!    [`TokenManager::credentials`] first, a token that has not expired (waiting for the
//!    manager's next one if the current one has), so a node connection opened at any moment
//!    starts with the current token. Every **later** item is a new token from the manager,
//!    which a redis-rs task per node connection sends as `AUTH` in place, in order with the
//!    application's commands. (The first item of that re-authentication stream is the token
//!    the connection was just opened with, so each new node connection sends one redundant
//!    `AUTH` right after connecting.)
//! 2. **A [`keep_authenticated`](crate::keep_authenticated) guard per
//!    [`EntraClusterConnection`]**, because of a redis-rs (1.8) weakness: when a node
//!    connection's re-`AUTH` fails once (the server refused the token, the reply timed out),
//!    redis-rs logs "Failed to re-authenticate async connection" and never re-authenticates
//!    that connection again, nor closes it. So on each new token the guard also sends `AUTH` to
//!    every node connection the client holds (redis-rs' `route_command` to all nodes), checks
//!    each node's reply, and retries with backoff (100 ms doubling); if that keeps failing, it
//!    sends `QUIT` to every node so that redis-rs reconnects them with the current token before
//!    the old one expires. It emits [`TokenEvent`](crate::TokenEvent)s with
//!    [`EntraClusterConnection::id`]. Each rotation therefore costs two `AUTH`s per node; both
//!    are cheap and in order with the traffic.
//!
//! # Invariants
//!
//! Each with a test that tries to break it (`tests/cluster.rs`, `tests/faults.rs`):
//!
//! - **Every node connection follows every token**, including connections opened after a
//!   `MOVED`/`ASK` or a topology change
//!   (`every_node_connection_follows_ten_token_rotations_without_a_failed_command`,
//!   `a_slot_migration_under_traffic_fails_no_read`).
//! - **A refused re-`AUTH` is retried until every node accepted the token**
//!   (`a_refused_reauth_is_retried_until_every_node_accepts_the_token`).
//! - **No acknowledged write is lost across a node restart**
//!   (`a_restarted_node_loses_no_acknowledged_write_and_the_client_recovers`;
//!   `cluster_connection_recovers_from_random_closes_and_a_node_restart`).
//!
//! # Limits
//!
//! - If every retry fails until the token expires (the identity lost its access policy), the
//!   server closes the node connection at expiry (Azure does, and so does the emulator's
//!   gateway). redis-rs then reconnects that node with the provider's current token and retries
//!   the commands that were in flight, up to its retry limit; a command caught by the close
//!   may still fail once the retries run out, and must then be retried by the caller. We
//!   cannot close a node connection earlier: redis-rs does not expose them.
//! - Cluster mode has one database, 0: [`ConnectOptions::db`] must be 0.
//! - `ConnectOptions::health_check_interval` does not apply: redis-rs notices a lost node
//!   connection when a command on it fails, and reconnects then.
//! - A hand-written `MULTI` ... `EXEC` sent as separate commands is not supported on a cluster
//!   connection (redis-rs may route them to different nodes); use an atomic pipeline, which is
//!   written as one unit, so no `AUTH` lands inside it.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, ProtocolVersion, RedisError, RedisFuture, TlsCertificates, Value};

use super::keep_authenticated::{self, auth_command, BoxFuture, Reauthentication, AUTH_TIMEOUT};
use super::options::{ConnectOptions, Protocol};
use super::provider::EntraCredentialsProvider;
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::manager::TokenManager;

/// A Redis Cluster connection authenticated with Entra ID on every node, that stays
/// authenticated: redis-rs' cluster-async client (redirections, slot map refreshes,
/// reconnection) with an [`EntraCredentialsProvider`] and a re-authentication task that
/// retries. See the [module docs](self) for how and within which limits.
///
/// Use it wherever redis-rs takes an async connection. Clones share the node connections.
///
/// ```no_run
/// # async fn run() -> redis_entra::Result<()> {
/// use redis::AsyncCommands;
/// use redis_entra::{ConnectOptions, EntraClusterConnection, TokenManager, TokenManagerOptions};
/// let credential = redis_entra::credential::from_env(&Default::default())?;
/// let manager = TokenManager::new(credential, TokenManagerOptions::default());
/// // Any node, as a seed: the client learns the others from CLUSTER SLOTS.
/// let options = ConnectOptions::new("mycache.westeurope.redis.azure.net", 10000);
/// let mut conn = EntraClusterConnection::connect(options, manager).await?;
/// let _: () = conn.set("Az:key1", "value1").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EntraClusterConnection {
    conn: ClusterConnection,
    options: ConnectOptions,
    manager: TokenManager,
    id: u64,
    /// Stops the re-authentication task with the last clone.
    _reauthentication: Arc<Reauthentication>,
}

impl std::fmt::Debug for EntraClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraClusterConnection")
            .field("seed_host", &self.options.host)
            .field("seed_port", &self.options.port)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EntraClusterConnection {
    /// Connects to the cluster through the seed node `options.host:options.port`, with the
    /// manager's current token on every node.
    pub async fn connect(options: ConnectOptions, manager: TokenManager) -> Result<Self> {
        Self::connect_with_seeds(options, &[], manager).await
    }

    /// As [`connect`](Self::connect), with more seed nodes (`host`, `port`) tried after the one
    /// in `options`.
    pub async fn connect_with_seeds(
        options: ConnectOptions,
        more_seeds: &[(String, u16)],
        manager: TokenManager,
    ) -> Result<Self> {
        if options.host.is_empty() {
            return Err(Error::Config(
                "no Redis host: set AZURE_REDIS_HOST (any node of the cluster)".into(),
            ));
        }
        if options.db != 0 {
            return Err(Error::Config(format!(
                "database {} was asked for, but a Redis cluster has only database 0",
                options.db
            )));
        }
        // Fail early, with our error, if no token can be had.
        manager.credentials().await?;
        let seeds: Vec<String> = std::iter::once((options.host.clone(), options.port))
            .chain(more_seeds.iter().cloned())
            .map(|(host, port)| seed_url(&host, port))
            .collect();
        let mut builder = ClusterClientBuilder::new(seeds)
            .certs(TlsCertificates {
                client_tls: None,
                root_cert: options.tls.pem_bundle()?,
            })
            .use_protocol(match options.protocol {
                Protocol::Resp2 => ProtocolVersion::RESP2,
                Protocol::Resp3 => ProtocolVersion::RESP3,
            })
            .connection_timeout(options.connect_timeout)
            .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
        if let Some(timeout) = options.response_timeout {
            builder = builder.response_timeout(timeout);
        }
        options.tls.check_insecure_supported()?;
        if options.tls.danger_accept_invalid_certs {
            builder = builder.tls(redis::TlsMode::Insecure);
        }
        let client = builder.build()?;
        let conn = client.get_async_connection().await?;
        let id = crate::connect::next_connection_id();
        let reauthentication = keep_authenticated::spawn(id, conn.clone(), manager.clone())?;
        tracing::debug!(
            connection = id,
            seed_host = %options.host,
            seed_port = options.port,
            "connected to the cluster with an Entra ID token"
        );
        Ok(Self {
            conn,
            options,
            manager,
            id,
            _reauthentication: Arc::new(reauthentication),
        })
    }

    /// This connection's id within the process (as [`TokenEvent`](crate::TokenEvent)s name it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The token manager the connection takes its tokens from.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// redis-rs' cluster connection underneath (its node connections re-authenticate as
    /// described in the [module docs](self)).
    pub fn inner(&self) -> &ClusterConnection {
        &self.conn
    }
}

/// `AUTH <oid> <token>` on every node connection; the errors (never the token) if any failed.
async fn auth_all_nodes(
    conn: &mut ClusterConnection,
    creds: &RedisCredentials,
) -> std::result::Result<(), String> {
    let auth = auth_command(creds);
    // No response policy: one reply per node, keyed by its address, errors included.
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
    let replies = match tokio::time::timeout(AUTH_TIMEOUT, conn.route_command(auth, routing)).await
    {
        Ok(Ok(replies)) => replies,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no reply within {AUTH_TIMEOUT:?}")),
    };
    let Value::Map(replies) = replies else {
        return Err(format!("unexpected reply to AUTH: {:?}", kind_of(&replies)));
    };
    let failed: Vec<String> = replies
        .into_iter()
        .filter_map(|(node, reply)| {
            let node = match &node {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "a node".to_string(),
            };
            match reply {
                Value::Okay => None,
                Value::SimpleString(s) if s == "OK" => None,
                Value::ServerError(e) => Some(format!("{node}: {}", RedisError::from(e))),
                other => Some(format!("{node}: unexpected reply {}", kind_of(&other))),
            }
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

impl keep_authenticated::sealed::Connection for ClusterConnection {
    fn auth<'a>(
        &'a mut self,
        creds: &'a RedisCredentials,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(auth_all_nodes(self, creds))
    }

    fn replace(&mut self) -> BoxFuture<'_, bool> {
        // Every node closes its connection after `QUIT`'s reply; redis-rs reconnects a node (with
        // the provider's current token) when a command to it meets the closed connection, and
        // retries that command.
        Box::pin(async move {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
            matches!(
                tokio::time::timeout(
                    AUTH_TIMEOUT,
                    self.route_command(redis::cmd("QUIT"), routing)
                )
                .await,
                Ok(Ok(_))
            )
        })
    }
}

/// A reply's type, for messages (a reply to `AUTH` is never printed: it could echo anything).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::SimpleString(_) => "simple string",
        _ => "other",
    }
}

/// `rediss://host:port`, with brackets around an IPv6 address.
fn seed_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("rediss://[{host}]:{port}")
    } else {
        format!("rediss://{host}:{port}")
    }
}

impl ConnectionLike for EntraClusterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_urls_bracket_ipv6() {
        assert_eq!(seed_url("localhost", 6380), "rediss://localhost:6380");
        assert_eq!(seed_url("::1", 10000), "rediss://[::1]:10000");
        assert_eq!(seed_url("[::1]", 10000), "rediss://[::1]:10000");
    }
}
