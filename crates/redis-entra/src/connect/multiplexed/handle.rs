//! The application's side: [`EntraConnection`], its handles, and the command path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::Notify;

use super::errors::is_connection_error;
use super::maintain::maintain;
use super::state::{open, Inner, LostSignal, Slot};
use super::transaction::multi_effect;
use crate::connect::options::ConnectOptions;
use crate::error::Result;
use crate::token::manager::TokenManager;

/// An async Redis connection authenticated with Entra ID that stays authenticated.
///
/// Use it wherever redis-rs takes an async connection (`AsyncCommands`, `query_async`,
/// pipelines). Clones share one underlying connection; the connection and its task end when
/// the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> redis_entra::Result<()> {
/// use redis::AsyncCommands;
/// use redis_entra::{ConnectOptions, EntraConnection, TokenManager, TokenManagerOptions};
/// let credential = redis_entra::credential::from_env(&Default::default())?;
/// let manager = TokenManager::new(credential, TokenManagerOptions::default());
/// let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
/// let mut conn = EntraConnection::connect(options, manager).await?;
/// let _: () = conn.set("Az:key1", "value1").await?;
/// let value: String = conn.get("Az:key1").await?;
/// # Ok(()) }
/// ```
pub struct EntraConnection {
    inner: Arc<Inner>,
    /// The connection this handle last used, its generation, and the epoch it was read at.
    cached: Option<(MultiplexedConnection, u64, u64)>,
}

impl Clone for EntraConnection {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: self.inner.clone(),
            cached: self.cached.clone(),
        }
    }
}

impl Drop for EntraConnection {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.released.notify_waiters();
        }
    }
}

impl std::fmt::Debug for EntraConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraConnection")
            .field("id", &self.inner.id)
            .field("host", &self.inner.options.host)
            .field("port", &self.inner.options.port)
            .finish_non_exhaustive()
    }
}

/// Counts a command in flight for as long as it lives (a cancelled one included).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EntraConnection {
    /// Connects with the manager's current token and keeps the connection authenticated.
    pub async fn connect(options: ConnectOptions, manager: TokenManager) -> Result<Self> {
        let id = crate::connect::next_connection_id();
        let lost = Arc::new(LostSignal::default());
        let live_generation = Arc::new(AtomicU64::new(1));
        let creds = manager.credentials().await?;
        let conn = open(&options, &creds, &lost, &live_generation, 1).await?;
        let inner = Arc::new(Inner {
            id,
            slot: Mutex::new(Slot {
                conn,
                generation: 1,
                broken: false,
                token_generation: creds.generation(),
                expires_on: creds.expires_on(),
                token_lifetime: creds.time_left(),
            }),
            epoch: AtomicU64::new(1),
            options,
            manager,
            reconnecting: tokio::sync::Mutex::new(()),
            lost,
            live_generation,
            handles: AtomicUsize::new(1),
            released: Notify::new(),
            in_flight: AtomicUsize::new(0),
            multi_open: AtomicBool::new(false),
            multi_closed: Notify::new(),
            multi_lost: AtomicBool::new(false),
        });
        tokio::spawn(maintain(inner.clone()));
        tracing::debug!(connection = id, "connected with an Entra ID token");
        Ok(Self {
            inner,
            cached: None,
        })
    }

    /// This connection's id (as events name it).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// When the token this connection last authenticated with expires.
    pub fn token_expires_on(&self) -> SystemTime {
        self.inner.lock().expires_on
    }

    /// The token manager behind this connection.
    pub fn manager(&self) -> &TokenManager {
        &self.inner.manager
    }
}

/// The live connection and its generation. The hot path is one atomic load: the handle's
/// cached connection is used while the epoch hasn't moved (the task moves it when the connection
/// is replaced, found dead, or its token expires).
async fn live<'c>(
    inner: &Inner,
    cached: &'c mut Option<(MultiplexedConnection, u64, u64)>,
) -> redis::RedisResult<(&'c mut MultiplexedConnection, u64)> {
    let epoch = inner.epoch.load(Ordering::Acquire);
    if !matches!(cached, Some((_, _, e)) if *e == epoch) {
        let (conn, generation) = inner.current().await?;
        *cached = Some((conn, generation, epoch));
    }
    match cached.as_mut() {
        Some((conn, generation, _)) => Ok((conn, *generation)),
        None => Err(RedisError::from((redis::ErrorKind::Io, "no connection"))),
    }
}

impl ConnectionLike for EntraConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let Self { inner, cached } = self;
            inner.admit(std::iter::once(multi_effect(cmd)))?;
            let _in_flight = InFlight::new(&inner.in_flight);
            let (conn, generation) = live(inner, cached).await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                if is_connection_error(e) {
                    inner.mark_broken(generation);
                    inner.lost.report(generation);
                }
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Self { inner, cached } = self;
            inner.admit(pipeline.cmd_iter().map(multi_effect))?;
            let _in_flight = InFlight::new(&inner.in_flight);
            let (conn, generation) = live(inner, cached).await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                if is_connection_error(e) {
                    inner.mark_broken(generation);
                    inner.lost.report(generation);
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.options.db
    }
}
