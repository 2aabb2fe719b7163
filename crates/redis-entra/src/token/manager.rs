//! The token manager: one background task per credential that keeps a fresh token, refreshes
//! it before expiry, retries failures forever, and hands the result to every connection.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures::FutureExt;

use azure_core::credentials::TokenCredential;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use super::credentials::RedisCredentials;
use super::events::TokenEvent;
use super::policy::{RefreshPolicy, RetryPolicy};
use crate::claims::TokenClaims;
use crate::error::{Error, Result};

/// The scope of Azure Cache for Redis and Azure Managed Redis.
pub const REDIS_SCOPE: &str = "https://redis.azure.com/.default";

/// How a username is derived from a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Username {
    /// The token's `oid` claim (Azure's rule). A token without one is an error.
    #[default]
    Oid,
    /// A fixed username, for custom setups (for example an access policy's alias, or `default`
    /// with an [access key](crate::credential::AccessKeyCredential)). The password need not be a
    /// JWT then.
    Fixed(String),
}

/// How a [`TokenManager`] behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenManagerOptions {
    /// The scopes to ask for (default: [`REDIS_SCOPE`]).
    pub scopes: Vec<String>,
    /// When to refresh.
    pub refresh: RefreshPolicy,
    /// How to retry.
    pub retry: RetryPolicy,
    /// Where the username comes from.
    pub username: Username,
}

impl Default for TokenManagerOptions {
    fn default() -> Self {
        Self {
            scopes: vec![REDIS_SCOPE.to_string()],
            refresh: RefreshPolicy::default(),
            retry: RetryPolicy::default(),
            username: Username::Oid,
        }
    }
}

/// What the manager knows: the current credentials and the last failure.
#[derive(Clone, Default, Debug)]
struct State {
    credentials: Option<Arc<RedisCredentials>>,
    last_error: Option<(u64, Error)>,
    /// Bumped each time the background task ends (its runtime went away), to wake waiters.
    task_ended: u64,
}

/// Counters of a [`TokenManager`]'s token requests (see [`TokenManager::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenStats {
    /// Token requests made to the credential.
    pub requests: u64,
    /// Of those, requests made because of [`TokenManager::refresh_now`].
    pub forced: u64,
    /// Calls to [`TokenManager::refresh_now`]. Those beyond `forced` caused no request of
    /// their own: folded into one already due, deferred by the pace, or left to a backoff.
    pub forced_calls: u64,
    /// Times the background task was started (more than one: its runtime went away and a
    /// later caller restarted it).
    pub task_starts: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    forced: AtomicU64,
    forced_calls: AtomicU64,
    task_starts: AtomicU64,
}

struct Shared {
    credential: Arc<dyn TokenCredential>,
    options: TokenManagerOptions,
    state: watch::Sender<State>,
    events: broadcast::Sender<TokenEvent>,
    wake: Notify,
    forced: AtomicBool,
    /// Whether the background task is running.
    running: AtomicBool,
    /// When the task was last started (restarts are at least a second apart).
    last_start: Mutex<Option<Instant>>,
    alive: watch::Receiver<()>,
    counters: Counters,
}

impl Shared {
    /// Starts the background task if it is not running (first use, or its runtime went away),
    /// on the current Tokio runtime. `false` if it can't run: no runtime here, or every
    /// [`TokenManager`] is gone.
    fn ensure_running(self: &Arc<Self>) -> bool {
        if self.running.load(Ordering::SeqCst) {
            return true;
        }
        if self.alive.has_changed().is_err() {
            return false; // the last manager was dropped
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return true;
        }
        // A task that keeps dying (its runtimes keep going away) is restarted at most once a
        // second, so waiters never spin.
        let delay = {
            let mut last = self.last_start.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let delay = last
                .map(|at| (at + Duration::from_secs(1)).saturating_duration_since(now))
                .unwrap_or_default();
            *last = Some(now + delay);
            delay
        };
        self.counters.task_starts.fetch_add(1, Ordering::Relaxed);
        // Made before the task is spawned, so that it is dropped (and the task's end noted)
        // even if the runtime drops the task before ever polling it.
        let guard = Running(self.clone());
        runtime.spawn(async move {
            let guard = guard;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            run(&guard.0, guard.0.alive.clone()).await;
        });
        true
    }
}

/// Held by the running task: when the task ends, however it ends (its runtime dropped it, the
/// last manager went away), the manager knows and wakes whoever waits, so that they can
/// restart it instead of waiting forever.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
        self.0.state.send_modify(|s| s.task_ended += 1);
    }
}

/// Dropped with the last [`TokenManager`] clone, which stops the background task.
struct Alive(#[allow(dead_code)] watch::Sender<()>);

/// Keeps an Entra ID token fresh for Redis.
///
/// Cheap to clone; every clone shares one background task, which starts on first use and stops
/// when the last clone is dropped. Only that task asks the credential for tokens, so any number
/// of concurrent callers cause one request.
///
/// # Invariants
///
/// Each with a test that tries to break it (`tests/token_manager.rs`):
///
/// - **One request for any number of callers** (`concurrent_callers_share_one_request`), and one
///   per refresh (`refreshes_before_expiry_once_per_lifetime`).
/// - **It never gives up**: failures are retried with backoff for as long as a clone lives
///   (`keeps_retrying_through_an_outage_and_recovers`); a credential that panics is a failed
///   request (`a_panicking_credential_is_retried_not_fatal`); nonsense in a policy never panics
///   (`a_nonsense_refresh_policy_neither_panics_nor_stops_refreshing`).
/// - **No caller waits forever**: a task whose runtime went away is restarted by the next caller
///   on its own runtime (`the_task_restarts_after_its_runtime_was_dropped`).
/// - **Forced refreshes are bounded** ([`refresh_now`](Self::refresh_now)):
///   `forced_refreshes_are_rate_limited`, `forced_refreshes_honour_the_backoff_after_a_failure`.
/// - **It stops with the last clone** (`the_background_task_stops_with_the_last_handle`).
///
/// ```no_run
/// # async fn run() -> redis_entra::Result<()> {
/// use redis_entra::{TokenManager, TokenManagerOptions};
/// let credential = redis_entra::credential::from_env(&Default::default())?;
/// let manager = TokenManager::new(credential, TokenManagerOptions::default());
/// let creds = manager.credentials().await?;
/// println!("username {} until {:?}", creds.username(), creds.expires_on());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("credential", &self.shared.credential)
            .field("options", &self.shared.options)
            .field("current", &self.current())
            .finish()
    }
}

impl TokenManager {
    /// A manager over any Azure credential.
    pub fn new(credential: Arc<dyn TokenCredential>, options: TokenManagerOptions) -> Self {
        let (state, _) = watch::channel(State::default());
        let (events, _) = broadcast::channel(256);
        let (alive_tx, alive) = watch::channel(());
        Self {
            shared: Arc::new(Shared {
                credential,
                options,
                state,
                events,
                wake: Notify::new(),
                forced: AtomicBool::new(false),
                running: AtomicBool::new(false),
                last_start: Mutex::new(None),
                alive,
                counters: Counters::default(),
            }),
            _alive: Arc::new(Alive(alive_tx)),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &TokenManagerOptions {
        &self.shared.options
    }

    /// Starts the background task on the current Tokio runtime, if it isn't running. Called by
    /// every async method; call it yourself to fetch the first token ahead of need. Outside a
    /// runtime it does nothing (the next call from inside one starts the task).
    ///
    /// The task lives on the runtime that started it. If that runtime goes away, the next
    /// caller of [`credentials`](Self::credentials) or [`watch`](Self::watch) restarts it on its
    /// own runtime.
    pub fn start(&self) {
        self.shared.ensure_running();
    }

    /// Counters of token requests, forced refreshes and task starts.
    pub fn stats(&self) -> TokenStats {
        let c = &self.shared.counters;
        TokenStats {
            requests: c.requests.load(Ordering::Relaxed),
            forced: c.forced.load(Ordering::Relaxed),
            forced_calls: c.forced_calls.load(Ordering::Relaxed),
            task_starts: c.task_starts.load(Ordering::Relaxed),
        }
    }

    /// The current credentials, if a token has been acquired (it may have expired).
    pub fn current(&self) -> Option<Arc<RedisCredentials>> {
        self.shared.state.borrow().credentials.clone()
    }

    /// Valid credentials: the current ones, or, when there are none or they have expired, the
    /// next ones the background task acquires. If that attempt fails, its error is returned
    /// (the task keeps trying).
    pub async fn credentials(&self) -> Result<Arc<RedisCredentials>> {
        let mut rx = self.shared.state.subscribe();
        let seen_error = {
            let state = rx.borrow_and_update();
            if let Some(c) = &state.credentials {
                if !c.is_expired() {
                    return Ok(c.clone());
                }
            }
            state.last_error.as_ref().map(|(n, _)| *n)
        };
        self.shared.wake.notify_one();
        loop {
            // (Re)started here if its runtime went away while we waited.
            if !self.shared.ensure_running() {
                return Err(Error::NoRuntime);
            }
            rx.changed().await.map_err(|_| Error::Stopped)?;
            let state = rx.borrow_and_update();
            if let Some(c) = &state.credentials {
                if !c.is_expired() {
                    return Ok(c.clone());
                }
            }
            if let Some((n, e)) = &state.last_error {
                if Some(*n) != seen_error {
                    return Err(e.clone());
                }
            }
        }
    }

    /// A stream of the tokens the manager acquires, from the current one on.
    pub fn watch(&self) -> CredentialsWatch {
        self.start();
        CredentialsWatch {
            rx: self.shared.state.subscribe(),
            shared: Arc::downgrade(&self.shared),
            seen: 0,
        }
    }

    /// Events about tokens and connections.
    pub fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.shared.events.subscribe()
    }

    /// Asks for a new token soon (for example after the server refused the current one).
    ///
    /// Bounded, so that many connections refused at once cannot flood the identity service:
    /// calls that come while a request is already due are folded into it; forced requests are at
    /// least [`RetryPolicy::forced_refresh_interval`] apart, the gap doubling (up to
    /// [`RetryPolicy::max_delay`]) while they keep coming; and while a failed request's backoff
    /// (or a `Retry-After`) runs, the next attempt stays where the backoff put it.
    /// [`stats`](Self::stats) counts them.
    pub fn refresh_now(&self) {
        self.shared
            .counters
            .forced_calls
            .fetch_add(1, Ordering::Relaxed);
        self.start();
        self.shared.forced.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    pub(crate) fn emit(&self, event: TokenEvent) {
        let _ = self.shared.events.send(event);
    }
}

fn unit() -> f64 {
    rand::random::<f64>()
}

/// Finds a `Retry-After` (in seconds) in an Azure error's HTTP response, if there is one.
fn retry_after(error: &Error) -> Option<Duration> {
    let Error::Credential(e) = error else {
        return None;
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = current {
        if let Some(az) = err.downcast_ref::<azure_core::Error>() {
            if let azure_core::error::ErrorKind::HttpResponse {
                raw_response: Some(resp),
                ..
            } = az.kind()
            {
                if let Some(v) = resp.headers().get_optional_str(
                    &azure_core::http::headers::HeaderName::from_static("retry-after"),
                ) {
                    if let Ok(secs) = v.trim().parse::<u64>() {
                        return Some(Duration::from_secs(secs.min(3600)));
                    }
                }
            }
        }
        current = err.source();
    }
    None
}

async fn fetch(shared: &Shared, generation: u64) -> Result<RedisCredentials> {
    let scopes: Vec<&str> = shared.options.scopes.iter().map(String::as_str).collect();
    let timeout = shared.options.retry.request_timeout;
    let token = tokio::time::timeout(timeout, shared.credential.get_token(&scopes, None))
        .await
        .map_err(|_| Error::CredentialTimeout(timeout))??;
    let secret = token.token.secret();
    let (username, claims) = match &shared.options.username {
        Username::Oid => {
            let claims = TokenClaims::from_jwt(secret)?;
            (claims.username()?.to_string(), claims)
        }
        // A fixed username may go with a password that is no JWT (an access key).
        Username::Fixed(u) => (u.clone(), TokenClaims::from_jwt(secret).unwrap_or_default()),
    };
    let expires_on: SystemTime = token.expires_on.into();
    Ok(RedisCredentials::new(username, secret, expires_on, claims).with_generation(generation))
}

/// Paces forced refreshes: at least a gap apart, the gap doubling while they keep coming.
struct ForcedPace {
    gap: Duration,
    /// No forced request before this.
    allowed_at: Option<Instant>,
    /// A forced refresh was deferred to `allowed_at`.
    deferred: bool,
}

impl ForcedPace {
    fn new(policy: &RetryPolicy) -> Self {
        Self {
            gap: policy.forced_refresh_interval,
            allowed_at: None,
            deferred: false,
        }
    }

    /// Whether a forced request may go now; if so, the next one is a gap later.
    fn admit(&mut self, now: Instant, policy: &RetryPolicy) -> bool {
        let first = policy.forced_refresh_interval;
        match self.allowed_at {
            Some(at) if now < at => return false,
            // Quiet for a while since the last one: start again from the shortest gap.
            Some(at) if now > at + self.gap => self.gap = first,
            _ => {}
        }
        self.allowed_at = Some(now + self.gap);
        self.gap = (self.gap * 2).min(policy.max_delay.max(first));
        self.deferred = false;
        true
    }
}

async fn run(shared: &Arc<Shared>, mut alive: watch::Receiver<()>) {
    // A restarted task carries on from what the previous one published.
    let (mut generation, mut error_count, current) = {
        let state = shared.state.borrow();
        let generation = state.credentials.as_ref().map_or(0, |c| c.generation());
        let errors = state.last_error.as_ref().map_or(0, |(n, _)| *n);
        (generation, errors, state.credentials.clone())
    };
    let mut failures = 0u32;
    let mut pace = ForcedPace::new(&shared.options.retry);
    // When to ask next; `None` means now (no valid token yet).
    let mut next_at: Option<Instant> = current
        .filter(|c| !c.is_expired())
        .map(|c| Instant::now() + shared.options.refresh.refresh_after(c.time_left(), unit()));
    loop {
        let mut forced = false;
        if let Some(at) = next_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {
                    // A forced refresh deferred by the pace is due now.
                    if pace.deferred && pace.admit(Instant::now(), &shared.options.retry) {
                        forced = true;
                    }
                }
                _ = shared.wake.notified() => {
                    let asked = shared.forced.swap(false, Ordering::SeqCst);
                    let valid = shared
                        .state
                        .borrow()
                        .credentials
                        .as_ref()
                        .is_some_and(|c| !c.is_expired());
                    if asked {
                        let now = Instant::now();
                        if failures > 0 {
                            // A backoff (or a Retry-After) runs: it decides when to ask next.
                            continue;
                        }
                        if !pace.admit(now, &shared.options.retry) {
                            // Deferred, not lost: asked for when the pace allows, unless the
                            // schedule asks sooner.
                            if let Some(allowed) = pace.allowed_at {
                                pace.deferred = true;
                                next_at = Some(at.min(allowed));
                            }
                            continue;
                        }
                        forced = true;
                    } else if valid || failures > 0 {
                        // A caller waiting for a token wakes the task only when there is none
                        // and no backoff is running.
                        continue;
                    }
                }
                _ = alive.changed() => return,
            }
        }
        if forced {
            shared.counters.forced.fetch_add(1, Ordering::Relaxed);
            // Calls made while this request is on its way are answered by it.
            shared.forced.store(false, Ordering::SeqCst);
        }
        let current = shared.state.borrow().credentials.clone();
        let received_at = Instant::now();
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        // A credential that panics is a failed request (retried with backoff), not the end of
        // the task.
        let request = AssertUnwindSafe(fetch(shared, generation + 1)).catch_unwind();
        let result = tokio::select! {
            r = request => r.unwrap_or(Err(Error::CredentialPanicked)),
            _ = alive.changed() => return,
        };
        match result {
            Ok(creds) => {
                failures = 0;
                let fresher = current
                    .as_ref()
                    .is_none_or(|c| creds.expires_on() > c.expires_on());
                if !fresher {
                    let left = current.as_ref().map(|c| c.time_left()).unwrap_or_default();
                    let retry_in =
                        (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::debug!(
                        ?retry_in,
                        "the credential returned a token no fresher than the current one"
                    );
                    shared.emit(TokenEvent::NotFresher {
                        expires_on: current
                            .as_ref()
                            .map(|c| c.expires_on())
                            .unwrap_or_else(SystemTime::now),
                        retry_in,
                    });
                    next_at = Some(Instant::now() + retry_in);
                    continue;
                }
                generation += 1;
                let lifetime = creds.time_left();
                let refresh_in = shared.options.refresh.refresh_after(lifetime, unit());
                next_at = Some(received_at + refresh_in);
                tracing::info!(
                    username = creds.username(),
                    expires_in = ?lifetime,
                    refresh_in = ?refresh_in,
                    generation,
                    "acquired an Entra ID token"
                );
                let creds = Arc::new(creds);
                shared.emit(TokenEvent::Refreshed {
                    username: creds.username().to_string(),
                    expires_on: creds.expires_on(),
                    generation,
                });
                shared.state.send_modify(|s| s.credentials = Some(creds));
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                error_count += 1;
                let time_left = current
                    .as_ref()
                    .map(|c| c.time_left())
                    .filter(|d| !d.is_zero());
                let retry_in =
                    shared
                        .options
                        .retry
                        .delay(failures, time_left, retry_after(&error), unit());
                tracing::warn!(
                    attempt = failures,
                    ?time_left,
                    ?retry_in,
                    error = %error,
                    "token request failed; retrying"
                );
                shared.emit(TokenEvent::RefreshFailed {
                    error: error.to_string(),
                    attempt: failures,
                    time_left,
                    retry_in,
                });
                shared
                    .state
                    .send_modify(|s| s.last_error = Some((error_count, error)));
                next_at = Some(Instant::now() + retry_in);
            }
        }
    }
}

impl Shared {
    fn emit(&self, event: TokenEvent) {
        let _ = self.events.send(event);
    }
}

/// Yields each new token a [`TokenManager`] acquires, once. See [`TokenManager::watch`].
pub struct CredentialsWatch {
    rx: watch::Receiver<State>,
    /// To restart the manager's task if its runtime went away (weak: a watch alone does not
    /// keep the manager alive).
    shared: Weak<Shared>,
    seen: u64,
}

impl std::fmt::Debug for CredentialsWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsWatch")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl CredentialsWatch {
    /// The next token not yet yielded (the current one first, if there is one), or `None` once
    /// the manager has stopped.
    pub async fn next(&mut self) -> Option<Arc<RedisCredentials>> {
        loop {
            {
                let state = self.rx.borrow_and_update();
                if let Some(c) = &state.credentials {
                    if c.generation() > self.seen {
                        self.seen = c.generation();
                        return Some(c.clone());
                    }
                }
            }
            if let Some(shared) = self.shared.upgrade() {
                shared.ensure_running();
            }
            self.rx.changed().await.ok()?;
        }
    }
}
