//! The async pools' connection, [`EntraPooledConnection`], and what the bb8 and deadpool
//! managers share: the registry of connections and the worker that re-authenticates idle ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::*;
use crate::connect::multiplexed::{is_auth_error, is_connection_error};
use crate::connect::session::{CommandName, SessionState};
use crate::connect::{is_pong, to_redis_error};
use crate::token::credentials::RedisCredentials;
use crate::{ConnectOptions, Result, TokenEvent, TokenManager};

struct State {
    conn: Option<MultiplexedConnection>,
    token_generation: u64,
    expires_on: SystemTime,
    /// The lifetime of that token when the connection authenticated with it.
    token_lifetime: Duration,
    session: SessionState,
    last_used: Instant,
    /// Consecutive failed re-`AUTH`s with a newer token (0 when up to date).
    reauth_failures: u32,
    /// No re-`AUTH` before this (backoff after a failure).
    retry_reauth_at: Option<Instant>,
}

impl State {
    /// Takes on a connection freshly authenticated with `creds`.
    fn install(&mut self, conn: MultiplexedConnection, creds: &RedisCredentials) {
        self.conn = Some(conn);
        // A MULTI or WATCH open on the old connection is gone: the borrower is told.
        self.session.replaced();
        self.authenticated_with(creds);
    }

    /// Notes that the connection is now authenticated with `creds`.
    fn authenticated_with(&mut self, creds: &RedisCredentials) {
        self.token_generation = creds.generation();
        self.expires_on = creds.expires_on();
        self.token_lifetime = creds.time_left();
        self.last_used = Instant::now();
        self.reauth_failures = 0;
        self.retry_reauth_at = None;
    }

    /// Time left on the token the connection is authenticated with.
    fn time_left(&self) -> Duration {
        self.expires_on
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// When re-`AUTH` keeps failing, the connection is replaced once this little time is left
    /// on its token (or after [`MAX_REAUTH_FAILURES`]), as `EntraConnection` does.
    fn replace_at(&self) -> Duration {
        (self.token_lifetime / 10).max(Duration::from_secs(1))
    }

    /// Whether re-`AUTH` has failed long enough that the connection should be replaced.
    fn must_replace(&self) -> bool {
        self.reauth_failures > 0
            && (self.reauth_failures >= MAX_REAUTH_FAILURES
                || self.time_left() <= self.replace_at())
    }
}

/// Failed re-`AUTH`s after which a pooled connection is replaced.
const MAX_REAUTH_FAILURES: u32 = 5;

struct Shared {
    id: u64,
    options: ConnectOptions,
    manager: TokenManager,
    state: tokio::sync::Mutex<State>,
    idle: AtomicBool,
}

/// An async connection for exclusive use (one borrower at a time, as in a pool) that stays
/// authenticated without ever sending `AUTH` in the middle of a borrower's transaction.
///
/// It wraps a redis-rs `MultiplexedConnection` and implements `redis::aio::ConnectionLike`.
/// Before each command it sends `AUTH` if a newer token exists (never between `MULTI` and
/// `EXEC`), and reconnects with a fresh token if the connection died or its token expired.
/// [`EntraAsyncConnectionManager`] adds `AUTH` at checkout and while idle.
///
/// ```no_run
/// # async fn run(manager: redis_entra::TokenManager) -> redis_entra::Result<()> {
/// use redis::AsyncCommands;
/// use redis_entra::connect::pool::EntraPooledConnection;
/// use redis_entra::ConnectOptions;
/// let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
/// let mut conn = EntraPooledConnection::connect(options, manager).await?;
/// let _: () = conn.set("Az:key1", "value1").await?;
/// # Ok(()) }
/// ```
pub struct EntraPooledConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EntraPooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPooledConnection")
            .field("id", &self.shared.id)
            .field("host", &self.shared.options.host)
            .field("port", &self.shared.options.port)
            .finish_non_exhaustive()
    }
}

async fn open(options: &ConnectOptions, creds: &RedisCredentials) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(options.response_timeout);
    options.open_multiplexed(creds, config).await
}

impl EntraPooledConnection {
    /// Connects with the manager's current token.
    pub async fn connect(options: ConnectOptions, manager: TokenManager) -> Result<Self> {
        let creds = manager.credentials().await?;
        let conn = open(&options, &creds).await?;
        let id = crate::connect::next_connection_id();
        tracing::debug!(connection = id, "connected (pooled) with an Entra ID token");
        Ok(Self {
            shared: Arc::new(Shared {
                id,
                options,
                manager,
                state: tokio::sync::Mutex::new(State {
                    conn: Some(conn),
                    token_generation: creds.generation(),
                    expires_on: creds.expires_on(),
                    token_lifetime: creds.time_left(),
                    session: SessionState::default(),
                    last_used: Instant::now(),
                    reauth_failures: 0,
                    retry_reauth_at: None,
                }),
                idle: AtomicBool::new(false),
            }),
        })
    }

    /// This connection's id (as events name it).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// When the token this connection last authenticated with expires.
    pub async fn token_expires_on(&self) -> SystemTime {
        self.shared.state.lock().await.expires_on
    }

    /// Brings the connection up to date now (see [`EntraPooledConnection`]).
    pub async fn refresh_authentication(&mut self) -> RedisResult<()> {
        let mut state = self.shared.state.lock().await;
        self.shared.prepare(&mut state, false).await
    }
}

impl Shared {
    fn is_stale(&self, state: &State) -> bool {
        self.manager
            .current()
            .is_some_and(|c| c.generation() > state.token_generation)
    }

    /// Opens a new connection with a valid token.
    async fn open_fresh(&self) -> RedisResult<(MultiplexedConnection, Arc<RedisCredentials>)> {
        let creds = self
            .manager
            .credentials()
            .await
            .map_err(|e| to_redis_error("no token to reconnect with", e))?;
        let conn = open(&self.options, &creds).await.map_err(|e| {
            if let crate::Error::Redis(re) = &e {
                if is_auth_error(re) {
                    self.manager.refresh_now();
                }
            }
            to_redis_error("reconnecting with a fresh token failed", e)
        })?;
        Ok((conn, creds))
    }

    async fn reconnect(&self, state: &mut State, reason: &str) -> RedisResult<()> {
        state.conn = None;
        state.session.replaced();
        let (conn, creds) = self.open_fresh().await?;
        state.install(conn, &creds);
        self.reconnected(reason);
        Ok(())
    }

    /// Replaces a connection that still works (its re-`AUTH` keeps failing) with a new one:
    /// the new one is opened first, and if that fails the old one stays for now (its token
    /// is still valid) and the replacement is tried again after a short delay.
    async fn replace(&self, state: &mut State, reason: &str) -> RedisResult<()> {
        match self.open_fresh().await {
            Ok((conn, creds)) => {
                state.install(conn, &creds);
                self.reconnected(reason);
                Ok(())
            }
            Err(e) if state.expires_on > SystemTime::now() => {
                tracing::warn!(connection = self.id, error = %e, "could not replace the connection yet");
                state.retry_reauth_at = Some(Instant::now() + Duration::from_millis(200));
                Ok(())
            }
            Err(e) => {
                state.conn = None;
                state.session.replaced();
                Err(e)
            }
        }
    }

    fn reconnected(&self, reason: &str) {
        tracing::info!(
            connection = self.id,
            reason,
            "reconnected with a fresh token"
        );
        self.manager.emit(TokenEvent::Reconnected {
            connection_id: self.id,
            reason: reason.to_string(),
        });
    }

    async fn reauthenticate(&self, state: &mut State, creds: &RedisCredentials) -> RedisResult<()> {
        let Some(conn) = state.conn.as_mut() else {
            return self.reconnect(state, "the connection was lost").await;
        };
        let started = Instant::now();
        let result = redis::cmd("AUTH")
            .arg(creds.username())
            .arg(creds.token())
            .query_async::<()>(conn)
            .await;
        match result {
            Ok(()) => {
                let took = started.elapsed();
                state.authenticated_with(creds);
                tracing::debug!(connection = self.id, ?took, "re-authenticated (pooled)");
                self.manager.emit(TokenEvent::ConnectionReauthenticated {
                    connection_id: self.id,
                    expires_on: creds.expires_on(),
                    took,
                });
                Ok(())
            }
            Err(e) if is_connection_error(&e) => {
                self.reconnect(state, "the connection was lost during re-authentication")
                    .await
            }
            Err(e) => {
                if is_auth_error(&e) {
                    self.manager.refresh_now();
                }
                tracing::warn!(connection = self.id, error = %e, "re-authentication failed");
                self.manager.emit(TokenEvent::ReauthenticationFailed {
                    connection_id: self.id,
                    error: e.to_string(),
                });
                state.reauth_failures = state.reauth_failures.saturating_add(1);
                if state.must_replace() {
                    return self.replace(state, "re-authentication kept failing").await;
                }
                // Back off (not one failing AUTH per command), keeping time to replace the
                // connection before its token expires.
                let delay = Duration::from_millis(100u64 << state.reauth_failures.min(6))
                    .min(state.time_left().saturating_sub(state.replace_at()) / 2)
                    .max(Duration::from_millis(50));
                state.retry_reauth_at = Some(Instant::now() + delay);
                Ok(())
            }
        }
    }

    async fn ping(&self, state: &mut State) -> bool {
        let Some(conn) = state.conn.as_mut() else {
            return false;
        };
        // Anything but PONG (QUEUED inside a MULTI) is not a connection in a known state.
        let ok = redis::cmd("PING")
            .query_async::<Value>(conn)
            .await
            .is_ok_and(|v| is_pong(&v));
        if ok {
            state.last_used = Instant::now();
        }
        ok
    }

    async fn prepare(&self, state: &mut State, probe: bool) -> RedisResult<()> {
        if state.conn.is_none() {
            return self.reconnect(state, "the connection was lost").await;
        }
        if state.expires_on <= SystemTime::now() {
            return self.reconnect(state, "its token expired").await;
        }
        if !state.session.in_multi() {
            if let Some(creds) = self.manager.current() {
                let due = state.retry_reauth_at.is_none_or(|at| Instant::now() >= at);
                if creds.generation() > state.token_generation && !creds.is_expired() && due {
                    // A replacement would drop a WATCH; an AUTH doesn't.
                    if state.must_replace() && state.session.replaceable() {
                        self.replace(state, "re-authentication kept failing")
                            .await?;
                    } else {
                        self.reauthenticate(state, &creds).await?;
                    }
                }
            }
        }
        if probe && state.session.replaceable() {
            if let Some(every) = self.options.health_check_interval {
                if state.last_used.elapsed() >= every && !self.ping(state).await {
                    return self
                        .reconnect(state, "the connection stopped answering")
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn validate(&self, state: &mut State) -> RedisResult<()> {
        if !state.session.is_clean() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the pooled connection is not in a clean state",
                state.session.why_unclean().to_string(),
            )));
        }
        self.prepare(state, false).await?;
        if !self.ping(state).await {
            self.reconnect(state, "the connection stopped answering")
                .await?;
        }
        Ok(())
    }

    /// Brings an idle connection up to date. Returns whether it still needs a later pass (a
    /// failed re-`AUTH` to retry or replace).
    async fn reauthenticate_if_idle(&self) -> bool {
        if !self.idle.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(mut state) = self.state.try_lock() else {
            return false;
        };
        if !self.idle.load(Ordering::SeqCst)
            || !(self.is_stale(&state) || state.expires_on <= SystemTime::now())
        {
            return false;
        }
        if let Err(e) = self.prepare(&mut state, false).await {
            tracing::warn!(connection = self.id, error = %e, "could not refresh an idle connection");
        }
        state.reauth_failures > 0
    }

    /// Locks the connection for a command and makes it ready.
    async fn begin(&self) -> RedisResult<tokio::sync::MutexGuard<'_, State>> {
        let mut state = self.state.lock().await;
        self.idle.store(false, Ordering::SeqCst);
        self.prepare(&mut state, true).await?;
        Ok(state)
    }
}

impl State {
    fn conn(&mut self) -> RedisResult<&mut MultiplexedConnection> {
        self.conn.as_mut().ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "the connection is being replaced with a fresh token",
            ))
        })
    }

    /// Notes the outcome of a command.
    fn finish<T>(&mut self, result: &RedisResult<T>) {
        self.session.replied();
        self.last_used = Instant::now();
        if let Err(e) = result {
            if is_connection_error(e) {
                // The next command reconnects; this one may or may not have run, so it is
                // not retried: the caller decides.
                self.conn = None;
                self.session.replaced();
            }
        }
    }
}

impl ConnectionLike for EntraPooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut state = self.shared.begin().await?;
            let conn = state.conn()?.clone();
            // Noted before sending: a caller cancelled while awaiting the reply leaves the
            // connection unclean, so a pool drops it instead of handing it on.
            state.session.admit([CommandName::of_cmd(cmd)])?;
            let mut conn = conn;
            let result = conn.req_packed_command(cmd).await;
            state.finish(&result);
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
            let mut state = self.shared.begin().await?;
            let mut conn = state.conn()?.clone();
            state
                .session
                .admit(pipeline.cmd_iter().map(CommandName::of_cmd))?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            state.finish(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.options.db
    }
}

/// What an async pool's manager holds, whichever pool crate drives it: where to connect, the
/// tokens, and the worker that re-authenticates idle connections.
pub(super) struct AsyncPool {
    pub(super) options: ConnectOptions,
    pub(super) manager: TokenManager,
    registry: Arc<Registry<Shared>>,
    worker: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for AsyncPool {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.get() {
            worker.abort();
        }
    }
}

impl AsyncPool {
    pub(super) fn new(options: ConnectOptions, manager: TokenManager) -> Self {
        Self {
            options,
            manager,
            registry: Arc::new(Registry::new()),
            worker: OnceLock::new(),
        }
    }

    /// A new connection for the pool (the worker starts with the first, on the pool's runtime).
    pub(super) async fn connect(&self) -> RedisResult<EntraPooledConnection> {
        self.worker.get_or_init(|| {
            tokio::spawn(worker(
                Arc::downgrade(&self.registry),
                self.registry.wake.clone(),
                self.manager.watch(),
            ))
            .abort_handle()
        });
        let conn = EntraPooledConnection::connect(self.options.clone(), self.manager.clone())
            .await
            .map_err(|e| to_redis_error("connecting with an Entra ID token failed", e))?;
        // A new connection goes to the idle list until it is checked out.
        conn.shared.idle.store(true, Ordering::SeqCst);
        self.registry.add(&conn.shared);
        Ok(conn)
    }

    /// At checkout: refused unless clean, then brought up to date and `PING`ed.
    pub(super) async fn check_out(&self, conn: &mut EntraPooledConnection) -> RedisResult<()> {
        let shared = &conn.shared;
        let mut state = shared.state.lock().await;
        shared.idle.store(false, Ordering::SeqCst);
        shared.validate(&mut state).await
    }

    /// Lets the idle worker bring the connection up to date (where no command runs and no
    /// transaction is open).
    pub(super) fn mark_idle(&self, conn: &EntraPooledConnection) {
        conn.shared.idle.store(true, Ordering::SeqCst);
    }

    /// On return: whether the connection must be discarded (lost, or not clean); otherwise it
    /// is idle again, and the worker is woken if its token is old.
    pub(super) fn give_back(&self, conn: &mut EntraPooledConnection) -> bool {
        let shared = &conn.shared;
        shared.idle.store(true, Ordering::SeqCst);
        // The borrower is done, so the lock is free unless the worker holds it.
        let Ok(state) = shared.state.try_lock() else {
            return false;
        };
        if state.conn.is_none() || !state.session.is_clean() {
            // Never handed to the next borrower in a state it did not ask for.
            tracing::debug!(
                connection = shared.id,
                why = state.session.why_unclean(),
                "discarding a returned connection"
            );
            return true;
        }
        if shared.is_stale(&state) {
            self.registry.wake.notify_one();
        }
        false
    }
}

async fn worker(
    registry: Weak<Registry<Shared>>,
    wake: Arc<Notify>,
    mut tokens: crate::CredentialsWatch,
) {
    // Set while an idle connection's re-AUTH failed: it is retried (or the connection
    // replaced) on a short timer, without waiting for the next token.
    let mut retry = false;
    loop {
        let retry_tick = async {
            if retry {
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            creds = tokens.next() => if creds.is_none() { return },
            _ = wake.notified() => {}
            _ = retry_tick => {}
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let conns = registry.live();
        drop(registry);
        let pending =
            futures::future::join_all(conns.iter().map(|c| c.reauthenticate_if_idle())).await;
        retry = pending.into_iter().any(|p| p);
    }
}
