//! The Redis gateway: a TLS listener that enforces Azure Cache for Redis' Entra ID rules in
//! front of a real `redis-server`.
//!
//! What a client sees is what Azure shows it:
//!
//! - TLS only (the emulator's CA), RESP2 and RESP3.
//! - Before authentication (at most [`GatewayConfig::auth_timeout`] after the handshake) only `AUTH <oid> <token>`, `HELLO <v> AUTH <oid> <token>`, `QUIT`
//!   and `RESET` are answered; everything else gets `-NOAUTH Authentication required.`
//! - A token is checked as [`TokenValidator`] describes (signature, audience, issuer, lifetime,
//!   `oid` or its assignment's alias = username, an access policy assigned); a bad one gets
//!   `-WRONGPASS`.
//! - `AUTH <key>`, `AUTH default <key>` and `HELLO <v> AUTH default <key>` are checked against
//!   the cache's [access keys](crate::access_keys) and give full access (the backend user
//!   `entra-access-key`), with no deadline; disabling access keys closes those connections.
//! - Each identity is a real ACL user on the backend, named by its object id, with its access
//!   policy's rules (built-in or custom), so `NOPERM`, `ACL WHOAMI` and every other reply come
//!   from Redis itself.
//! - The identity, its deadline, the access-key epoch and the subscription state change only on
//!   Redis' reply to the request that changes them (a private `pending` module): the `+OK` of
//!   a substituted `AUTH`, `EXEC`'s reply for one queued in `MULTI`, `+RESET`.
//! - Azure's [unsupported commands](crate::unsupported) are refused for everyone, in Redis'
//!   words.
//! - At most [`GatewayConfig::max_connections`] connections; a request the gateway must hold
//!   (`AUTH` 16 KiB, subscribe commands 1 MiB, others 64 KiB) longer than that closes the
//!   connection.
//! - The connection is closed, without a reply, when its token expires, unless the client sent
//!   `AUTH` with a newer valid token first, and as soon as the signing key that verified its
//!   token is removed or replaced.
//! - RSA verification runs off the runtime threads, a bounded number at a time; a connection
//!   gets [`MAX_FAILED_AUTH_PER_CONNECTION`] refused `AUTH`s (see [`validate`]). In RESP2 subscribed mode Redis refuses `AUTH`, so
//!   such connections are closed at every expiry, as on Azure.
//!
//! In [cluster mode](crate::cluster) each node has its own gateway, in front of that node only;
//! the nodes announce their gateway's port, so `CLUSTER SLOTS`, `MOVED` and `ASK` already name
//! gateway endpoints and the gateway rewrites no reply.
//!
//! The modules: [`validate`] checks tokens, [`resp`] frames requests exactly as Redis does, and
//! a private `session` module runs each connection. The listener (on the caller's runtime)
//! hands each connection to one of the gateway's own threads, a single-threaded runtime per
//! core that keeps it for its whole life, as haproxy's threads do; the sessions end with the
//! listener. A bad handshake, garbage bytes or a stalled client only ever end their own
//! connection.
//!
//! ```no_run
//! # async fn run() -> Result<(), redis_entra_emulator::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redis_entra_emulator::backend::Backend;
//! use redis_entra_emulator::directory::Directory;
//! use redis_entra_emulator::gateway::{Gateway, GatewayState, TokenValidator};
//! use redis_entra_emulator::signing::TokenIssuer;
//! use redis_entra_emulator::stats::Stats;
//! use redis_entra_emulator::tls::Pki;
//!
//! let directory = Arc::new(Directory::new());
//! let issuer = TokenIssuer::new(directory.tenant_id(), Duration::from_secs(3600))?;
//! let validator = TokenValidator::new(directory.clone());
//! validator.trust(&issuer)?;
//! let state = GatewayState {
//!     directory,
//!     validator: Arc::new(validator),
//!     backend: Arc::new(Backend::spawn().await?),
//!     stats: Arc::new(Stats::default()),
//!     faults: Arc::default(),
//!     config: Default::default(),
//! };
//! let pki = Pki::generate()?;
//! let gateway = Gateway::bind(([127, 0, 0, 1], 6380).into(), pki.server_config(), state).await?;
//! println!("rediss://localhost:{}", gateway.local_addr().port());
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

mod hello;
mod pending;
mod rejections;
mod replies;
pub mod resp;
mod session;
mod slots;
mod trusted_keys;
pub mod validate;
mod verified;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::backend::Backend;
use crate::directory::Directory;
use crate::faults::Faults;
use crate::stats::Stats;
use crate::Error;
use workers::Workers;

pub use crate::profile::ClusterPolicy;
pub use crate::unsupported::Profile;
pub use validate::{Rejection, TokenValidator, ValidToken};

/// How many refused `AUTH`s (tokens or access keys, `AUTH` or `HELLO … AUTH`) a connection may
/// send. Before authentication, the one that reaches this bound gets its `WRONGPASS` and the
/// connection is closed. On an authenticated connection, every `AUTH` past the bound gets
/// `WRONGPASS` without being verified (no RSA), and the connection keeps serving its identity.
pub const MAX_FAILED_AUTH_PER_CONNECTION: u32 = 10;
/// The reply to a connection past [`GatewayConfig::max_connections`], as Redis words it at
/// `maxclients`.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";
/// How many refusals of connections over the cap may be in progress at once; beyond, the TCP
/// connection is dropped without a handshake.
const MAX_REFUSALS: usize = 64;

/// The limits and the Azure product a gateway plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The most client connections open at once (TLS handshake included); one more gets
    /// `-ERR max number of clients reached` and is closed. Default 10,000, as a Standard C4
    /// (or Premium P2) Azure Cache for Redis.
    pub max_connections: usize,
    /// How long a client has, after its TLS handshake (or a `RESET`), to authenticate.
    /// Default 30 s.
    pub auth_timeout: Duration,
    /// The product whose unsupported commands are refused.
    pub profile: Profile,
    /// The Azure Managed Redis cluster policy this gateway plays, if any: with
    /// [`ClusterPolicy::Enterprise`] it refuses what Redis Enterprise's proxy refuses across
    /// hash slots (docs/EMULATOR.md lists the rules). The others need nothing of the
    /// gateway.
    pub cluster_policy: Option<ClusterPolicy>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            auth_timeout: Duration::from_secs(30),
            profile: Profile::default(),
            cluster_policy: None,
        }
    }
}

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Gateway::shutdown`] waits for connections to close before aborting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway's connections share.
#[derive(Debug, Clone)]
pub struct GatewayState {
    /// The tenant: identities and their access policies.
    pub directory: Arc<Directory>,
    /// Checks the tokens clients present.
    pub validator: Arc<TokenValidator>,
    /// The `redis-server` behind the gateway (in a cluster, the one node this gateway
    /// fronts).
    pub backend: Arc<Backend>,
    /// Counters: connections accepted, authentications, closes at expiry.
    pub stats: Arc<Stats>,
    /// Faults injected at run time (the gateway reads
    /// [`refuse_reauth`](Faults::refuse_reauth), the random-close rate and
    /// [`close_all_connections`](Faults::close_all_connections)).
    pub faults: Arc<Faults>,
    /// Limits and product profile.
    pub config: GatewayConfig,
}

/// A running gateway. Dropping it stops it as [`shutdown`](Self::shutdown) does, without
/// waiting.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Listens on `addr` with `tls` (its ALPN protocols are cleared: Redis clients offer none)
    /// and serves connections until shut down.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        state: GatewayState,
    ) -> Result<Gateway, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("binding the Redis gateway to {addr}"), e))?;
        Self::serve(listener, tls, state)
    }

    /// Serves connections on a listener already bound (a cluster node's gateway is bound
    /// before its `redis-server` starts, which announces the gateway's port), as
    /// [`bind`](Self::bind) does. Must be called within a Tokio runtime.
    pub fn serve(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        state: GatewayState,
    ) -> Result<Gateway, Error> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the Redis gateway's address", e))?;
        let mut config = (*tls).clone();
        config.alpn_protocols.clear();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (stop, stopped) = watch::channel(false);
        let workers = Workers::start()?;
        let task = tokio::spawn(accept_loop(listener, acceptor, state, stopped, workers));
        debug!(%local_addr, "Redis gateway listening");
        Ok(Gateway {
            local_addr,
            stop,
            task,
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, closes the live ones and waits for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: GatewayState,
    mut stop: watch::Receiver<bool>,
    mut workers: Workers,
) {
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) if connections.len() >= state.config.max_connections => {
                    debug!(%peer, "connection refused: max number of clients reached");
                    if refusals.len() < MAX_REFUSALS {
                        refusals.spawn(refuse(tcp, acceptor.clone()));
                    }
                }
                Ok((tcp, peer)) => {
                    next_id += 1;
                    Stats::bump(&state.stats.connections_accepted);
                    debug!(conn = next_id, %peer, "connection accepted");
                    // Off this runtime's poller, onto the session thread's (`connection`).
                    let Ok(tcp) = tcp.into_std() else { continue };
                    workers.spawn(
                        &mut connections,
                        connection(next_id, tcp, acceptor.clone(), state.clone(), stop.clone()),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: breathe, then go on.
                    debug!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stopped(&mut stop) => break,
                    }
                }
            },
        }
    }
    drop(listener);
    refusals.abort_all();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        connections.abort_all();
    }
    debug!("Redis gateway stopped");
}

/// Answers a connection over the cap as Redis does at `maxclients`, then closes it.
async fn refuse(tcp: TcpStream, acceptor: TlsAcceptor) {
    use tokio::io::AsyncWriteExt;
    let refusal = async {
        let mut tls = acceptor.accept(tcp).await.ok()?;
        tls.write_all(MAX_CLIENTS_REACHED).await.ok()?;
        tls.shutdown().await.ok()
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, refusal).await;
}

/// One client connection, on the session thread it was given to: `tcp` is registered with
/// that thread's runtime here.
async fn connection(
    id: u64,
    tcp: std::net::TcpStream,
    acceptor: TlsAcceptor,
    state: GatewayState,
    mut stop: watch::Receiver<bool>,
) {
    let tcp = match TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            debug!(conn = id, error = %e, "registering the connection");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    // Boxed: the handshake's state is freed once done, not kept in every session's task.
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(tcp)));
    let tls = tokio::select! {
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(conn = id, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(conn = id, "TLS handshake timed out");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let (reader, writer) = tokio::io::split(tls);
    session::serve(id, reader, writer, state, stop).await;
}
