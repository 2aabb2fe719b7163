//! A synchronous connection that stays authenticated, for programs without an async runtime.
//!
//! Two pieces:
//!
//! - [`BlockingTokenManager`]: a [`TokenManager`] whose background refresh task runs on a small
//!   current-thread Tokio runtime that it owns, on a thread of its own (`redis-entra-tokens`).
//!   A plain `fn main()` creates one and never sees Tokio; the thread stops when the last clone is
//!   dropped.
//! - [`EntraSyncConnection`]: wraps redis-rs' blocking `redis::Connection` (TLS, `AUTH <oid>
//!   <token>` at connect) and implements `redis::ConnectionLike`, so every blocking redis-rs API
//!   (`Commands`, `cmd(..).query(..)`, pipelines, transactions) works on it. It needs no thread of
//!   its own: before each command or pipeline it compares the token it authenticated with to the
//!   manager's current one (a lock-free read) and, when a newer one exists, sends `AUTH` first.
//!   It never does so between a `MULTI` and its `EXEC`. A connection that is known dead, whose token
//!   has expired, or that was idle for longer than
//!   [`health_check_interval`](ConnectOptions::health_check_interval) and doesn't answer `PING`, is
//!   replaced with one authenticated with a fresh token before the command is sent. A command that
//!   fails on the wire is not retried (it may have run): it returns an error the caller can retry,
//!   and the next command reconnects.
//!
//! The invariants of [`EntraSyncConnection`] are the pools' (it is r2d2's connection): see
//! `connect::pool` (its "Invariants") for the list and the tests that attack them.
//!
//! ```no_run
//! use redis::Commands;
//! use redis_entra::{BlockingTokenManager, ConnectOptions, EntraSyncConnection, TokenManagerOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let credential = redis_entra::credential::from_env(&Default::default())?;
//!     let tokens = BlockingTokenManager::new(credential, TokenManagerOptions::default())?;
//!     let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
//!     let mut conn = EntraSyncConnection::connect(options, tokens)?;
//!     let _: () = conn.set("Az:key1", "value1")?;
//!     let value: String = conn.get("Az:key1")?;
//!     println!("{value}");
//!     Ok(())
//! }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use azure_core::credentials::TokenCredential;
use redis::{ConnectionLike, RedisResult, Value};
use tokio::sync::broadcast;

use super::multiplexed::{is_auth_error, is_connection_error};
use super::options::ConnectOptions;
use super::session::{PackedNames, SessionState};
use super::to_redis_error;
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;
use crate::token::manager::{TokenManager, TokenManagerOptions};

/// Stops the runtime thread when dropped (with the last [`BlockingTokenManager`] clone).
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A [`TokenManager`] for synchronous programs: it owns a small Tokio runtime on a background
/// thread, where the manager refreshes tokens, and offers blocking calls.
///
/// Cheap to clone; clones share the thread and the manager. The thread stops when the last
/// clone is dropped.
///
/// ```no_run
/// use redis_entra::{BlockingTokenManager, TokenManagerOptions};
///
/// fn main() -> redis_entra::Result<()> {
///     let credential = redis_entra::credential::from_env(&Default::default())?;
///     let tokens = BlockingTokenManager::new(credential, TokenManagerOptions::default())?;
///     let creds = tokens.credentials()?; // blocks until the first token arrives
///     println!("signed in as {} until {:?}", creds.username(), creds.expires_on());
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct BlockingTokenManager {
    manager: TokenManager,
    runtime: Arc<RuntimeThread>,
}

impl std::fmt::Debug for BlockingTokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingTokenManager")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl BlockingTokenManager {
    /// Starts the runtime thread and a [`TokenManager`] over `credential` on it. The first token
    /// is requested at once.
    pub fn new(credential: Arc<dyn TokenCredential>, options: TokenManagerOptions) -> Result<Self> {
        let runtime = Arc::new(start_runtime()?);
        let manager = {
            let _context = runtime.handle.enter();
            let manager = TokenManager::new(credential, options);
            manager.start();
            manager
        };
        Ok(Self { manager, runtime })
    }

    /// Wraps an existing manager (for example one shared with async code). If it has not started
    /// yet, its background task starts on this wrapper's runtime thread.
    pub fn with_manager(manager: TokenManager) -> Result<Self> {
        let runtime = Arc::new(start_runtime()?);
        {
            let _context = runtime.handle.enter();
            manager.start();
        }
        Ok(Self { manager, runtime })
    }

    /// The async manager inside (its methods that don't `await` work from any thread).
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The runtime the manager runs on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.runtime.handle
    }

    /// Valid credentials: the current ones, or, when there are none or they have expired, the
    /// next ones the manager acquires (blocking until then). If that attempt fails, its error is
    /// returned; the manager keeps trying.
    pub fn credentials(&self) -> Result<Arc<RedisCredentials>> {
        if let Some(c) = self.manager.current() {
            if !c.is_expired() {
                return Ok(c);
            }
        }
        let manager = self.manager.clone();
        self.block_on(async move { manager.credentials().await })?
    }

    /// The current credentials, if a token has been acquired (it may have expired). Never blocks.
    pub fn current(&self) -> Option<Arc<RedisCredentials>> {
        self.manager.current()
    }

    /// Events about tokens and connections (use `blocking_recv` or `try_recv` on it).
    pub fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.manager.events()
    }

    /// Asks for a new token now.
    pub fn refresh_now(&self) {
        self.manager.refresh_now();
    }

    /// Runs a future on the runtime thread and blocks the calling thread until it finishes. Works
    /// from any thread, even one inside another runtime (it then blocks that thread).
    pub fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| Error::Stopped)
    }
}

fn start_runtime() -> Result<RuntimeThread> {
    let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("redis-entra-tokens".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            // Drives the manager's task (and any `block_on` futures) until the last clone goes.
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })
        .map_err(|e| Error::Config(format!("could not start the token thread: {e}")))?;
    let handle = handle_rx
        .recv()
        .map_err(|_| Error::Config("the token thread did not start".into()))?
        .map_err(|e| Error::Config(format!("could not start a Tokio runtime: {e}")))?;
    Ok(RuntimeThread {
        handle,
        _stop: stop,
    })
}

/// The connection and what it is authenticated with.
pub(crate) struct SyncState {
    conn: Option<redis::Connection>,
    token_generation: u64,
    expires_on: SystemTime,
    session: SessionState,
    last_used: Instant,
    /// Consecutive refused re-`AUTH`s, and no retry before the instant (backoff).
    reauth_failures: u32,
    retry_reauth_at: Option<Instant>,
}

/// What a pool's idle-connection worker shares with the connection.
pub(crate) struct SyncShared {
    id: u64,
    options: ConnectOptions,
    tokens: BlockingTokenManager,
    state: Mutex<SyncState>,
    /// Set while the connection sits in a pool (returned, not yet checked out again).
    idle: AtomicBool,
}

/// A blocking Redis connection authenticated with Entra ID that stays authenticated.
///
/// It implements `redis::ConnectionLike`, so it works with every blocking redis-rs API. It is
/// not `Clone` (a blocking connection serves one caller at a time): use one per thread, or a
/// pool (`EntraConnectionManager`, feature `r2d2`).
///
/// See [the module docs](self) for when it sends `AUTH` and when it reconnects.
///
/// ```no_run
/// use redis::Commands;
/// use redis_entra::{BlockingTokenManager, ConnectOptions, EntraSyncConnection};
///
/// fn run(tokens: BlockingTokenManager) -> redis::RedisResult<()> {
///     let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
///     let mut conn = EntraSyncConnection::connect(options, tokens)
///         .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "connect", e.to_string())))?;
///     // A transaction: no AUTH is ever sent between MULTI and EXEC.
///     let (a, b): (i64, i64) = redis::pipe().atomic().incr("a", 1).incr("b", 1).query(&mut conn)?;
///     let _: () = conn.set("sum", a + b)?;
///     Ok(())
/// }
/// ```
pub struct EntraSyncConnection {
    shared: Arc<SyncShared>,
}

impl std::fmt::Debug for EntraSyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSyncConnection")
            .field("id", &self.shared.id)
            .field("host", &self.shared.options.host)
            .field("port", &self.shared.options.port)
            .finish_non_exhaustive()
    }
}

impl EntraSyncConnection {
    /// Connects with the manager's current token (waiting for the first one if need be).
    pub fn connect(options: ConnectOptions, tokens: BlockingTokenManager) -> Result<Self> {
        let creds = tokens.credentials()?;
        let conn = open(&options, &creds)?;
        let id = crate::connect::next_connection_id();
        tracing::debug!(connection = id, "connected (sync) with an Entra ID token");
        Ok(Self {
            shared: Arc::new(SyncShared {
                id,
                options,
                tokens,
                state: Mutex::new(SyncState {
                    conn: Some(conn),
                    token_generation: creds.generation(),
                    expires_on: creds.expires_on(),
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
    pub fn token_expires_on(&self) -> SystemTime {
        self.shared.lock().expires_on
    }

    /// The token manager behind this connection.
    pub fn tokens(&self) -> &BlockingTokenManager {
        &self.shared.tokens
    }

    /// Brings the connection up to date now: reconnects it if it is dead or its token expired,
    /// and sends `AUTH` if a newer token exists (unless a `MULTI` is open). Commands do this
    /// themselves; call it to move the round trip off a latency-sensitive path.
    pub fn refresh_authentication(&mut self) -> RedisResult<()> {
        let mut state = self.shared.lock();
        self.shared.prepare(&mut state, false)
    }

    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<SyncShared> {
        &self.shared
    }
}

fn open(options: &ConnectOptions, creds: &RedisCredentials) -> Result<redis::Connection> {
    let client = options.client(creds)?;
    let conn = client.get_connection_with_timeout(options.connect_timeout)?;
    if let Some(timeout) = options.response_timeout {
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
    }
    Ok(conn)
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "the connection is being replaced with a fresh token",
    ))
}

impl SyncShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SyncState> {
        // The state is plain data; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, SyncState>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst)
    }

    /// Whether the manager holds a newer token than the connection authenticated with.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn is_stale(&self, state: &SyncState) -> bool {
        self.tokens
            .current()
            .is_some_and(|c| c.generation() > state.token_generation)
    }

    pub(crate) fn is_open(state: &SyncState) -> bool {
        state.conn.as_ref().is_some_and(|c| c.is_open())
    }

    /// Replaces the connection with one authenticated with a fresh token (one attempt).
    fn reconnect(&self, state: &mut SyncState, reason: &str) -> RedisResult<()> {
        state.conn = None;
        // A MULTI or WATCH open on the old connection is gone: the borrower is told.
        state.session.replaced();
        let creds = self
            .tokens
            .credentials()
            .map_err(|e| to_redis_error("no token to reconnect with", e))?;
        let conn = open(&self.options, &creds).map_err(|e| {
            if let Error::Redis(re) = &e {
                if is_auth_error(re) {
                    self.tokens.refresh_now();
                }
            }
            to_redis_error("reconnecting with a fresh token failed", e)
        })?;
        state.conn = Some(conn);
        state.token_generation = creds.generation();
        state.expires_on = creds.expires_on();
        state.last_used = Instant::now();
        state.reauth_failures = 0;
        state.retry_reauth_at = None;
        tracing::info!(
            connection = self.id,
            reason,
            "reconnected with a fresh token"
        );
        self.tokens.manager().emit(TokenEvent::Reconnected {
            connection_id: self.id,
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Sends `AUTH` with `creds`; on a connection error, reconnects (once).
    fn reauthenticate(&self, state: &mut SyncState, creds: &RedisCredentials) -> RedisResult<()> {
        let Some(conn) = state.conn.as_mut() else {
            return self.reconnect(state, "the connection was lost");
        };
        let started = Instant::now();
        let result = redis::cmd("AUTH")
            .arg(creds.username())
            .arg(creds.token())
            .query::<()>(conn);
        match result {
            Ok(()) => {
                let took = started.elapsed();
                state.token_generation = creds.generation();
                state.expires_on = creds.expires_on();
                state.last_used = Instant::now();
                state.reauth_failures = 0;
                state.retry_reauth_at = None;
                tracing::debug!(connection = self.id, ?took, "re-authenticated (sync)");
                self.tokens
                    .manager()
                    .emit(TokenEvent::ConnectionReauthenticated {
                        connection_id: self.id,
                        expires_on: creds.expires_on(),
                        took,
                    });
                Ok(())
            }
            Err(e) if is_connection_error(&e) => {
                self.reconnect(state, "the connection was lost during re-authentication")
            }
            Err(e) => {
                // The connection stays authenticated with its current token; a later command
                // tries again after a backoff (not every command), and the connection is
                // replaced once that token expires.
                if is_auth_error(&e) {
                    self.tokens.refresh_now();
                }
                state.reauth_failures = state.reauth_failures.saturating_add(1);
                let left = state
                    .expires_on
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let delay =
                    std::time::Duration::from_millis(100u64 << state.reauth_failures.min(8))
                        .min(left / 4)
                        .max(std::time::Duration::from_millis(50));
                state.retry_reauth_at = Some(Instant::now() + delay);
                tracing::warn!(connection = self.id, error = %e, "re-authentication failed");
                self.tokens
                    .manager()
                    .emit(TokenEvent::ReauthenticationFailed {
                        connection_id: self.id,
                        error: e.to_string(),
                    });
                Ok(())
            }
        }
    }

    /// Makes the connection ready for a command: alive, and authenticated with the newest token
    /// unless a `MULTI` is open. With `probe`, a connection idle for longer than the health-check
    /// interval is checked with `PING` first.
    pub(crate) fn prepare(&self, state: &mut SyncState, probe: bool) -> RedisResult<()> {
        if !Self::is_open(state) {
            return self.reconnect(state, "the connection was lost");
        }
        if state.expires_on <= SystemTime::now() {
            return self.reconnect(state, "its token expired");
        }
        let due = state.retry_reauth_at.is_none_or(|at| Instant::now() >= at);
        if !state.session.in_multi() && due {
            if let Some(creds) = self.tokens.current() {
                if creds.generation() > state.token_generation && !creds.is_expired() {
                    self.reauthenticate(state, &creds)?;
                }
            }
        }
        if probe && state.session.replaceable() {
            if let Some(every) = self.options.health_check_interval {
                if state.last_used.elapsed() >= every && !self.ping(state) {
                    return self.reconnect(state, "the connection stopped answering");
                }
            }
        }
        Ok(())
    }

    /// Whether the connection answers `PING`.
    pub(crate) fn ping(&self, state: &mut SyncState) -> bool {
        let Some(conn) = state.conn.as_mut() else {
            return false;
        };
        // Anything but PONG (QUEUED inside a MULTI, a subscriber's reply) is not a healthy
        // connection in a known state.
        let ok = redis::cmd("PING")
            .query::<Value>(conn)
            .is_ok_and(|v| super::is_pong(&v));
        if ok {
            state.last_used = Instant::now();
        }
        ok
    }

    /// Checks the connection and pings it, reconnecting if it does not answer (pool checkout).
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn validate(&self, state: &mut SyncState) -> RedisResult<()> {
        if let Err(why) = Self::reusable(state) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the pooled connection is not in a clean state",
                why.to_string(),
            )));
        }
        self.prepare(state, false)?;
        if !self.ping(state) {
            self.reconnect(state, "the connection stopped answering")?;
        }
        Ok(())
    }

    /// For a pool's worker: if the connection sits idle in the pool and a newer token exists,
    /// sends `AUTH` now (or reconnects it if it died). Skips a connection in use.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn reauthenticate_if_idle(&self) {
        if !self.is_idle() {
            return;
        }
        let Some(mut state) = self.try_lock() else {
            return;
        };
        // Checked again under the lock: a checkout clears the flag under the same lock.
        if !self.is_idle() || !(self.is_stale(&state) || state.expires_on <= SystemTime::now()) {
            return;
        }
        if let Err(e) = self.prepare(&mut state, false) {
            tracing::warn!(connection = self.id, error = %e, "could not refresh an idle connection");
        }
    }

    /// Whether a pool may hand the connection to another borrower as it is.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn reusable(state: &SyncState) -> std::result::Result<(), &'static str> {
        if !Self::is_open(state) {
            return Err("the connection is closed");
        }
        if !state.session.is_clean() {
            return Err(state.session.why_unclean());
        }
        Ok(())
    }

    fn run<T>(
        &self,
        packed: &[u8],
        send: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut state = self.lock();
        self.set_idle(false);
        self.prepare(&mut state, true)?;
        // Noted before sending: if `send` panics, the state stays unknown (unclean).
        state.session.admit(PackedNames::new(packed))?;
        let result = match state.conn.as_mut() {
            Some(conn) => send(conn),
            None => Err(not_connected()),
        };
        state.session.replied();
        state.last_used = Instant::now();
        if let Err(e) = &result {
            if is_connection_error(e) {
                // The next command reconnects; this one may or may not have run, so it is
                // not retried: the caller decides.
                state.conn = None;
                state.session.replaced();
            }
        }
        result
    }
}

impl ConnectionLike for EntraSyncConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.shared.run(cmd, |conn| conn.req_packed_command(cmd))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.shared
            .run(cmd, |conn| conn.req_packed_commands(cmd, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.shared.options.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<Value>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        SyncShared::is_open(&self.shared.lock())
    }
}
