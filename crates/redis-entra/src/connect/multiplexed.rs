//! An async multiplexed connection that stays authenticated.
//!
//! [`EntraConnection`] wraps redis-rs' `MultiplexedConnection`. A task per connection watches the
//! token manager: when a new token arrives it sends `AUTH <oid> <token>` on the live connection
//! (in order with the application's commands, so a transaction sent as one pipeline is never
//! split), retries a failed re-AUTH, and replaces the connection before its token expires if the
//! re-AUTH keeps failing. When the connection is lost it reconnects with a fresh token at once,
//! without waiting for the next command.
//!
//! A replacement because re-authentication keeps failing is make-before-break: the old
//! connection (still authenticated until its token expires) keeps serving commands while the new
//! one connects, and is closed only after the new one is installed and the commands already sent
//! on it have been answered. The application sees no error and no stall.
//!
//! A command issued while the connection is being replaced either succeeds on the new
//! connection or returns an error the caller can retry; it is never dropped silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, Value,
};
use tokio::sync::Notify;

use super::options::{ConnectOptions, Protocol};
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;
use crate::token::manager::TokenManager;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The live connection and what it is authenticated with.
struct Slot {
    conn: MultiplexedConnection,
    /// Which connection this is (bumped on every reconnect).
    generation: u64,
    /// Set when the connection is known to be dead.
    broken: bool,
    /// The token generation it last authenticated with.
    token_generation: u64,
    /// When that token expires.
    expires_on: SystemTime,
    /// When that token was received.
    token_lifetime: Duration,
}

struct Inner {
    id: u64,
    options: ConnectOptions,
    manager: TokenManager,
    slot: Mutex<Slot>,
    reconnecting: tokio::sync::Mutex<()>,
    /// Signalled by the connection's push sender when it disconnects.
    lost: Arc<Notify>,
    /// The generation whose disconnection counts (older ones are replaced already).
    live_generation: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(t) = task.take() {
                t.abort();
            }
        }
    }
}

/// An async Redis connection authenticated with Entra ID that stays authenticated.
///
/// Use it wherever redis-rs takes an async connection (`AsyncCommands`, `query_async`,
/// pipelines). Clones share one underlying connection.
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
#[derive(Clone)]
pub struct EntraConnection {
    inner: Arc<Inner>,
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

pub(super) fn is_connection_error(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error()
}

pub(super) fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
}

impl EntraConnection {
    /// Connects with the manager's current token and keeps the connection authenticated.
    pub async fn connect(options: ConnectOptions, manager: TokenManager) -> Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let lost = Arc::new(Notify::new());
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
            options,
            manager,
            reconnecting: tokio::sync::Mutex::new(()),
            lost,
            live_generation,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(maintain(Arc::downgrade(&inner)));
        if let Ok(mut slot) = inner.task.lock() {
            *slot = Some(task.abort_handle());
        }
        tracing::debug!(connection = id, "connected with an Entra ID token");
        Ok(Self { inner })
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

    async fn live(&self) -> redis::RedisResult<(MultiplexedConnection, u64)> {
        let expired = {
            let slot = self.inner.lock();
            if !slot.broken && slot.expires_on > SystemTime::now() {
                return Ok((slot.conn.clone(), slot.generation));
            }
            (!slot.broken).then_some(slot.generation)
        };
        // The token this connection authenticated with has expired (an identity outage outlasted
        // it): the server closes such a connection, and on RESP2 nothing tells us until a
        // command fails on it. Replace it with a fresh token before sending anything.
        let reason = match expired {
            Some(generation) => {
                self.inner.mark_broken(generation);
                "its token expired"
            }
            None => "the connection was lost",
        };
        self.inner.reconnect(reason, false).await.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::Io,
                "reconnecting with a fresh token failed",
                e.to_string(),
            ))
        })?;
        let slot = self.inner.lock();
        Ok((slot.conn.clone(), slot.generation))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_broken(&self, generation: u64) {
        let mut slot = self.lock();
        if slot.generation == generation {
            slot.broken = true;
        }
    }

    /// Replaces the connection with one authenticated with a fresh token. With `forever`, keeps
    /// trying (the background task); otherwise gives up after a few attempts (a caller waits).
    async fn reconnect(&self, reason: &str, forever: bool) -> Result<()> {
        let seen = self.lock().generation;
        let _guard = if forever {
            self.reconnecting.lock().await
        } else {
            // A caller does not queue behind the background task's endless attempts while the
            // server is unreachable: it waits one connect timeout, then gets an error.
            match tokio::time::timeout(self.options.connect_timeout, self.reconnecting.lock()).await
            {
                Ok(guard) => guard,
                Err(_) => {
                    return Err(Error::from(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the connection to {}:{} is lost and could not be re-established within {:?}; it is retried in the background",
                            self.options.host, self.options.port, self.options.connect_timeout
                        ),
                    ))))
                }
            }
        };
        {
            let slot = self.lock();
            if slot.generation != seen && !slot.broken {
                return Ok(()); // someone else reconnected while we waited
            }
        }
        let mut attempt = 0u32;
        // Failures to connect with a token in hand; they alone grow the backoff.
        let mut connect_failures = 0u32;
        loop {
            attempt += 1;
            let creds = match self.manager.credentials().await {
                Ok(creds) => creds,
                // No token: `credentials` waited for the manager's next attempt, which its retry
                // policy paces, so try again at once: the first token after an identity outage
                // is used as soon as it arrives, not after a backoff grown during the outage.
                Err(e) if !matches!(e, Error::Stopped) => {
                    tracing::warn!(connection = self.id, attempt, error = %e, "no token to reconnect with");
                    if !forever && attempt >= 3 {
                        return Err(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let result = async {
                let generation = self.lock().generation + 1;
                let conn = open(
                    &self.options,
                    &creds,
                    &self.lost,
                    &self.live_generation,
                    generation,
                )
                .await?;
                Ok::<_, Error>((conn, creds, generation))
            }
            .await;
            match result {
                Ok((conn, creds, generation)) => {
                    self.live_generation.store(generation, Ordering::SeqCst);
                    let mut slot = self.lock();
                    *slot = Slot {
                        conn,
                        generation,
                        broken: false,
                        token_generation: creds.generation(),
                        expires_on: creds.expires_on(),
                        token_lifetime: creds.time_left(),
                    };
                    drop(slot);
                    tracing::info!(
                        connection = self.id,
                        reason,
                        "reconnected with a fresh token"
                    );
                    self.manager.emit(TokenEvent::Reconnected {
                        connection_id: self.id,
                        reason: reason.to_string(),
                    });
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Redis(re) = &e {
                        if is_auth_error(re) {
                            self.manager.refresh_now();
                        }
                    }
                    tracing::warn!(connection = self.id, attempt, error = %e, "reconnect failed");
                    if !forever && attempt >= 3 {
                        return Err(e);
                    }
                    connect_failures += 1;
                    let delay = Duration::from_millis(100u64 << connect_failures.min(5))
                        .min(Duration::from_secs(2));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Sends `AUTH` with `creds` on the live connection, retrying; replaces the connection if
    /// re-authentication keeps failing as its token's expiry nears.
    async fn reauthenticate(&self, mut creds: Arc<RedisCredentials>) {
        let mut attempt = 0u32;
        loop {
            let (mut conn, generation, broken, expires_on, lifetime) = {
                let slot = self.lock();
                if slot.token_generation >= creds.generation() && !slot.broken {
                    return;
                }
                (
                    slot.conn.clone(),
                    slot.generation,
                    slot.broken,
                    slot.expires_on,
                    slot.token_lifetime,
                )
            };
            if broken {
                let _ = self.reconnect("the connection was lost", true).await;
                return;
            }
            if expires_on <= SystemTime::now() {
                // The server has closed (or is about to close) a connection whose token expired:
                // `AUTH` on it would fail; connect afresh with the new token instead.
                self.mark_broken(generation);
                let _ = self.reconnect("its token expired", true).await;
                return;
            }
            let started = Instant::now();
            let auth = redis::cmd("AUTH")
                .arg(creds.username())
                .arg(creds.token())
                .to_owned();
            let result =
                tokio::time::timeout(Duration::from_secs(10), auth.query_async::<()>(&mut conn))
                    .await;
            match result {
                Ok(Ok(())) => {
                    let took = started.elapsed();
                    {
                        let mut slot = self.lock();
                        if slot.generation == generation
                            && slot.token_generation < creds.generation()
                        {
                            slot.token_generation = creds.generation();
                            slot.expires_on = creds.expires_on();
                            slot.token_lifetime = creds.time_left();
                        }
                    }
                    tracing::debug!(connection = self.id, ?took, "re-authenticated");
                    self.manager.emit(TokenEvent::ConnectionReauthenticated {
                        connection_id: self.id,
                        expires_on: creds.expires_on(),
                        took,
                    });
                    return;
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.mark_broken(generation);
                    let _ = self
                        .reconnect("the connection was lost during re-authentication", true)
                        .await;
                    return;
                }
                other => {
                    attempt += 1;
                    let error = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "AUTH timed out after 10 s".to_string(),
                    };
                    tracing::warn!(connection = self.id, attempt, %error, "re-authentication failed");
                    self.manager.emit(TokenEvent::ReauthenticationFailed {
                        connection_id: self.id,
                        error,
                    });
                    let left = expires_on
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    // Replace the connection while there is still time to do it cleanly.
                    let replace_at = (lifetime / 10).max(Duration::from_secs(1));
                    if left <= replace_at || attempt >= 5 {
                        // The old connection still works until its token expires: leave it in
                        // place (not marked broken), so commands keep flowing on it while the
                        // new one connects and authenticates, instead of waiting for it.
                        // `reconnect` swaps the new one in; the old one closes once the
                        // commands already sent on it have their replies (they hold clones).
                        let _ = self.reconnect("re-authentication kept failing", true).await;
                        return;
                    }
                    let delay = Duration::from_millis(100u64 << attempt.min(6))
                        .min(left.saturating_sub(replace_at) / 2)
                        .max(Duration::from_millis(50));
                    tokio::time::sleep(delay).await;
                    if let Some(newer) = self.manager.current() {
                        if newer.generation() > creds.generation() {
                            creds = newer;
                        }
                    }
                }
            }
        }
    }
}

/// Opens a connection authenticated with `creds` whose disconnection wakes `lost`.
async fn open(
    options: &ConnectOptions,
    creds: &RedisCredentials,
    lost: &Arc<Notify>,
    live_generation: &Arc<AtomicU64>,
    generation: u64,
) -> Result<MultiplexedConnection> {
    let lost = lost.clone();
    let live = live_generation.clone();
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(options.response_timeout);
    // redis-rs reports a disconnection as a push, which it allows on RESP3 only; on RESP2 the
    // maintenance task probes the connection instead.
    if options.protocol == Protocol::Resp3 {
        config = config.set_push_sender(move |info: PushInfo| {
            if info.kind == PushKind::Disconnection && live.load(Ordering::SeqCst) == generation {
                lost.notify_one();
            }
            Ok::<(), redis::aio::SendError>(())
        });
    }
    options.open_multiplexed(creds, config).await
}

/// Reconnects (trying forever) for as long as some handle of the connection is left; `false`
/// once none is (the application dropped the connection while it was down: the task stops, and
/// with it its hold on the token manager).
async fn reconnect_while_wanted(inner: &Arc<Inner>, reason: &str) -> bool {
    let abandoned = async {
        // This task's own reference is the only one left when every handle is gone.
        while Arc::strong_count(inner) > 1 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = inner.reconnect(reason, true) => true,
        _ = abandoned => false,
    }
}

/// The per-connection task: re-authenticate on every new token, reconnect on loss.
async fn maintain(weak: Weak<Inner>) {
    let (mut tokens, lost, probe_every) = match weak.upgrade() {
        Some(inner) => (
            inner.manager.watch(),
            inner.lost.clone(),
            match inner.options.protocol {
                Protocol::Resp2 => inner.options.health_check_interval,
                Protocol::Resp3 => None,
            },
        ),
        None => return,
    };
    let mut probe = probe_every.map(|every| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let tick = async {
            match probe.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tick => {
                let Some(inner) = weak.upgrade() else { return };
                let (mut conn, generation, broken) = {
                    let slot = inner.lock();
                    (slot.conn.clone(), slot.generation, slot.broken)
                };
                let alive = !broken
                    && matches!(
                        tokio::time::timeout(
                            Duration::from_secs(5),
                            redis::cmd("PING").query_async::<redis::Value>(&mut conn),
                        )
                        .await,
                        Ok(Ok(_))
                    );
                if !alive {
                    inner.mark_broken(generation);
                    if !reconnect_while_wanted(&inner, "the connection stopped answering").await {
                        return;
                    }
                }
            }
            creds = tokens.next() => {
                let Some(creds) = creds else { return };
                let Some(inner) = weak.upgrade() else { return };
                inner.reauthenticate(creds).await;
            }
            _ = lost.notified() => {
                let Some(inner) = weak.upgrade() else { return };
                let generation = inner.lock().generation;
                inner.mark_broken(generation);
                if !reconnect_while_wanted(&inner, "the server closed the connection").await {
                    return;
                }
            }
        }
    }
}

impl ConnectionLike for EntraConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, generation) = self.live().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                if is_connection_error(e) {
                    self.inner.mark_broken(generation);
                    self.inner.lost.notify_one();
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
            let (mut conn, generation) = self.live().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                if is_connection_error(e) {
                    self.inner.mark_broken(generation);
                    self.inner.lost.notify_one();
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.options.db
    }
}
