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
//!
//! # Invariants
//!
//! What you can rely on, each with a test that tries to break it (in
//! `tests/multiplexed_invariants.rs` unless named otherwise):
//!
//! - **Every new token reaches the live connection** before the old one expires: `AUTH` in
//!   place, or a connection opened with it, including when the token arrives while the
//!   connection is being replaced (`every_new_token_reaches_the_live_connection_even_across_reconnects`;
//!   `tests/end_to_end.rs`: `traffic_across_ten_rotations_has_no_failed_command`).
//! - **No `AUTH` inside a hand-written `MULTI`**: the task waits for `EXEC` or `DISCARD`
//!   (`a_token_arriving_inside_a_hand_written_multi_waits_for_exec`). A `MULTI` still open when
//!   the token nears expiry loses its connection, and the transaction then fails as a whole
//!   until `EXEC`/`DISCARD`, never running in part
//!   (`a_hand_written_multi_outliving_its_token_fails_instead_of_running_piecemeal`). A
//!   transaction sent as one atomic pipeline is never split. (A hand-written `MULTI` on a
//!   connection that other tasks use at the same time interleaves their commands: use atomic
//!   pipelines, or a pool, for that.)
//! - **One lost connection, one reconnect**, however many signals report it
//!   (`one_dead_connection_is_replaced_once`).
//! - **A slow reply is not a dead connection**: the RESP2 probe never runs while commands are in
//!   flight (`a_slow_reply_is_not_taken_for_a_dead_connection`).
//! - **The task stops when the last handle is dropped**, whatever it is doing, and releases the
//!   token manager (`a_connection_dropped_while_refused_stops_its_task_and_releases_the_manager`;
//!   `tests/end_to_end.rs`: `a_connection_dropped_while_its_server_is_down_releases_its_task_and_the_manager`).
//! - **No command is dropped silently**: each gets its reply or an error; during an outage a
//!   command fails after one connect timeout instead of queueing (`tests/faults.rs`).
//! - **Bounded**: no queue of its own; token requests caused by refused `AUTH`s are paced by the
//!   [`TokenManager`] (see [`TokenManager::refresh_now`]).
//! - **The command path** is one atomic load while nothing changed: each handle keeps the
//!   connection it last used, and the task bumps an epoch when it replaces the connection,
//!   finds it dead, or sees its token expire.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// That token's lifetime when the connection authenticated with it.
    token_lifetime: Duration,
}

/// How a dead connection is reported to the task: the generation that died, then a wake-up.
/// Reports of an older generation (already replaced) are ignored, so one death causes one
/// reconnect however many signals report it.
#[derive(Default)]
struct LostSignal {
    generation: AtomicU64,
    wake: Notify,
}

impl LostSignal {
    fn report(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

struct Inner {
    id: u64,
    options: ConnectOptions,
    manager: TokenManager,
    slot: Mutex<Slot>,
    /// Bumped whenever the slot's connection or its health changes; each handle keeps the
    /// connection it last used with the epoch it read, and takes the lock only when it moved.
    epoch: AtomicU64,
    reconnecting: tokio::sync::Mutex<()>,
    lost: Arc<LostSignal>,
    /// The generation whose disconnection counts (older ones are replaced already).
    live_generation: Arc<AtomicU64>,
    /// Handles of the connection; the task stops when the last one is dropped.
    handles: AtomicUsize,
    released: Notify,
    /// Commands sent whose replies have not come yet (the health probe waits while any are).
    in_flight: AtomicUsize,
    /// A `MULTI` sent by hand (as its own round trip) is open: no `AUTH` until it ends.
    multi_open: AtomicBool,
    multi_closed: Notify,
    /// The connection was replaced while a hand-written `MULTI` was open: commands fail until
    /// the application ends the transaction.
    multi_lost: AtomicBool,
}

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

pub(super) fn is_connection_error(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error()
}

pub(super) fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
}

/// What a command does to a hand-written transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MultiEffect {
    None,
    Opens,
    Closes,
}

fn multi_effect(cmd: &Cmd) -> MultiEffect {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) if name.len() <= 7 => {
            if name.eq_ignore_ascii_case(b"MULTI") {
                MultiEffect::Opens
            } else if name.eq_ignore_ascii_case(b"EXEC")
                || name.eq_ignore_ascii_case(b"DISCARD")
                || name.eq_ignore_ascii_case(b"RESET")
            {
                MultiEffect::Closes
            } else {
                MultiEffect::None
            }
        }
        _ => MultiEffect::None,
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
        let id = super::next_connection_id();
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

impl Inner {
    /// Fails a command while a hand-written transaction lost with its connection is not ended;
    /// notes `MULTI` and its end otherwise.
    fn admit(&self, effects: impl Iterator<Item = MultiEffect>) -> redis::RedisResult<()> {
        let mut opens = false;
        let mut closes = false;
        for e in effects {
            match e {
                MultiEffect::Opens => opens = true,
                MultiEffect::Closes => {
                    opens = false;
                    closes = true;
                }
                MultiEffect::None => {}
            }
        }
        if self.multi_lost.load(Ordering::Acquire) {
            if closes {
                self.multi_lost.store(false, Ordering::Release);
                self.set_multi(false);
            }
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "transaction aborted",
                "the connection was replaced inside MULTI (its token was about to expire); the transaction was discarded and nothing of it ran: send it again (EXEC or DISCARD ends this state)".to_string(),
            )));
        }
        if opens {
            self.set_multi(true);
        } else if closes {
            self.set_multi(false);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    fn set_multi(&self, open: bool) {
        self.multi_open.store(open, Ordering::Release);
        if !open {
            self.multi_closed.notify_waiters();
        }
    }

    fn mark_broken(&self, generation: u64) {
        let mut slot = self.lock();
        if slot.generation == generation && !slot.broken {
            slot.broken = true;
            drop(slot);
            self.bump_epoch();
        }
    }

    /// The connection to use now (slow path): the slot's, or a new one if it is dead or its
    /// token expired.
    async fn current(&self) -> redis::RedisResult<(MultiplexedConnection, u64)> {
        let expired = {
            let slot = self.lock();
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
                self.mark_broken(generation);
                "its token expired"
            }
            None => "the connection was lost",
        };
        self.reconnect(reason, false).await.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::Io,
                "reconnecting with a fresh token failed",
                e.to_string(),
            ))
        })?;
        let slot = self.lock();
        Ok((slot.conn.clone(), slot.generation))
    }

    /// Resolves once every handle of the connection is gone.
    async fn released(&self) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.handles.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Replaces the connection with one authenticated with a fresh token. With `forever`, keeps
    /// trying (the background task, which stops when the last handle goes); otherwise gives up
    /// after a few attempts (a caller waits).
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
                Err(e) if !matches!(e, Error::Stopped | Error::NoRuntime) => {
                    tracing::warn!(connection = self.id, attempt, error = %e, "no token to reconnect with");
                    if !forever && attempt >= 3 {
                        return Err(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let generation = self.lock().generation + 1;
            let result = open(
                &self.options,
                &creds,
                &self.lost,
                &self.live_generation,
                generation,
            )
            .await;
            match result {
                Ok(conn) => {
                    self.live_generation.store(generation, Ordering::SeqCst);
                    {
                        let mut slot = self.lock();
                        *slot = Slot {
                            conn,
                            generation,
                            broken: false,
                            token_generation: creds.generation(),
                            expires_on: creds.expires_on(),
                            token_lifetime: creds.time_left(),
                        };
                    }
                    // A hand-written MULTI open on the old connection is gone with it.
                    if self.multi_open.load(Ordering::Acquire) {
                        self.multi_lost.store(true, Ordering::Release);
                    }
                    self.bump_epoch();
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
                            // Paced by the manager: many refused connections cost a bounded
                            // number of token requests.
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

    /// Waits while a hand-written `MULTI` is open, up to `limit`; whether it is still open.
    async fn wait_for_multi_to_close(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let closed = self.multi_closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if !self.multi_open.load(Ordering::Acquire) {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.multi_open.load(Ordering::Acquire)
    }

    /// Brings the connection up to `creds` (or a newer token): `AUTH` on the live connection,
    /// retried; a reconnect if it is dead or its token expired; a replacement if re-`AUTH` keeps
    /// failing as expiry nears. Returns once the connection holds a token at least as new as
    /// `creds`, or is being replaced by a caller.
    async fn reauthenticate(&self, mut creds: Arc<RedisCredentials>) {
        let mut attempt = 0u32;
        loop {
            if let Some(newer) = self.manager.current() {
                if newer.generation() > creds.generation() {
                    creds = newer;
                }
            }
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
            // Replace the connection while there is still time to do it cleanly.
            let replace_at = (lifetime / 10).max(Duration::from_secs(1));
            let left = expires_on
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if broken || left.is_zero() {
                // Dead, or the server has closed (or is about to close) a connection whose token
                // expired: `AUTH` on it would fail; connect afresh with the new token instead.
                self.mark_broken(generation);
                let reason = if broken {
                    "the connection was lost"
                } else {
                    "its token expired"
                };
                if self.reconnect(reason, true).await.is_err() {
                    return;
                }
                // Loop: the reconnect may have been someone else's, with an older token.
                continue;
            }
            // Never inside a hand-written MULTI: its EXEC would answer for our AUTH too.
            if self
                .wait_for_multi_to_close(left.saturating_sub(replace_at))
                .await
            {
                tracing::warn!(
                    connection = self.id,
                    "a MULTI stayed open until the token's expiry neared; replacing the connection"
                );
                if self
                    .reconnect("its token expired inside a MULTI", true)
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            let started = Instant::now();
            let auth = redis::cmd("AUTH")
                .arg(creds.username())
                .arg(creds.token())
                .to_owned();
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                auth.query_async::<Value>(&mut conn),
            )
            .await;
            match result {
                Ok(Ok(Value::Okay)) => {
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
                    continue;
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.mark_broken(generation);
                    continue;
                }
                other => {
                    attempt += 1;
                    let error = match other {
                        Ok(Ok(reply)) => format!("AUTH answered {reply:?}, not OK"),
                        Ok(Err(e)) => {
                            if is_auth_error(&e) {
                                self.manager.refresh_now();
                            }
                            e.to_string()
                        }
                        Err(_) => "AUTH timed out after 10 s".to_string(),
                    };
                    tracing::warn!(connection = self.id, attempt, %error, "re-authentication failed");
                    self.manager.emit(TokenEvent::ReauthenticationFailed {
                        connection_id: self.id,
                        error,
                    });
                    let left = expires_on
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    if left <= replace_at || attempt >= 5 {
                        // The old connection still works until its token expires: leave it in
                        // place (not marked broken), so commands keep flowing on it while the
                        // new one connects and authenticates, instead of waiting for it.
                        // `reconnect` swaps the new one in; the old one closes once the
                        // commands already sent on it have their replies (they hold clones).
                        if self
                            .reconnect("re-authentication kept failing", true)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        attempt = 0;
                        continue;
                    }
                    let delay = Duration::from_millis(100u64 << attempt.min(6))
                        .min(left.saturating_sub(replace_at) / 2)
                        .max(Duration::from_millis(50));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Probes an idle RESP2 connection with `PING`. A connection with commands in flight is not
    /// probed: its own replies (or their failure) tell, and a `PING` queued behind a long
    /// blocking command would take a slow reply for a dead connection.
    async fn probe(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let (mut conn, generation, broken) = {
            let slot = self.lock();
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
        // A command started while the probe waited: the probe's silence proves nothing.
        if !alive && self.in_flight.load(Ordering::Relaxed) == 0 {
            self.mark_broken(generation);
            let _ = self
                .reconnect("the connection stopped answering", true)
                .await;
        }
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

/// Opens a connection authenticated with `creds` whose disconnection is reported to `lost`.
async fn open(
    options: &ConnectOptions,
    creds: &RedisCredentials,
    lost: &Arc<LostSignal>,
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
                lost.report(generation);
            }
            Ok::<(), redis::aio::SendError>(())
        });
    }
    options.open_multiplexed(creds, config).await
}

/// The per-connection task: re-authenticate on every new token, reconnect on loss, mark the
/// connection dead at its token's expiry. It stops when the last handle is dropped, whatever it
/// is doing then (a reconnect that keeps being refused included), and with it its hold on the
/// token manager.
async fn maintain(inner: Arc<Inner>) {
    tokio::select! {
        _ = inner.released() => {}
        _ = maintain_loop(&inner) => {}
    }
    tracing::debug!(connection = inner.id, "connection released; its task stops");
}

async fn maintain_loop(inner: &Inner) {
    let mut tokens = inner.manager.watch();
    let probe_every = match inner.options.protocol {
        Protocol::Resp2 => inner.options.health_check_interval,
        Protocol::Resp3 => None,
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
        // At the token's expiry, handles must stop using the connection (the server closes it):
        // marking it here keeps the clock off the command path.
        let (expires_on, generation) = {
            let slot = inner.lock();
            (slot.expires_on, slot.generation)
        };
        let expiry = async {
            let left = expires_on
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(left).await;
        };
        tokio::select! {
            _ = tick => inner.probe().await,
            creds = tokens.next() => {
                let Some(creds) = creds else { return };
                inner.reauthenticate(creds).await;
            }
            _ = inner.lost.wake.notified() => {
                let lost = inner.lost.generation.load(Ordering::SeqCst);
                // Only the live generation's death counts: an older one is replaced already.
                if lost == inner.lock().generation {
                    inner.mark_broken(lost);
                    // With `forever`, only a terminal error (the manager stopped) comes back.
                    if inner.reconnect("the server closed the connection", true).await.is_err() {
                        return;
                    }
                }
            }
            _ = expiry => {
                let still = {
                    let slot = inner.lock();
                    slot.generation == generation && slot.expires_on <= SystemTime::now()
                };
                if still {
                    inner.mark_broken(generation);
                    if inner.reconnect("its token expired", true).await.is_err() {
                        return;
                    }
                }
            }
        }
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
