//! The token manager: one background task per credential that keeps a fresh token, refreshes
//! it before expiry, retries failures forever, and hands the result to every connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
}

struct Shared {
    credential: Arc<dyn TokenCredential>,
    options: TokenManagerOptions,
    state: watch::Sender<State>,
    events: broadcast::Sender<TokenEvent>,
    wake: Notify,
    forced: AtomicBool,
    started: std::sync::Once,
    alive: watch::Receiver<()>,
}

/// Dropped with the last [`TokenManager`] clone, which stops the background task.
struct Alive(#[allow(dead_code)] watch::Sender<()>);

/// Keeps an Entra ID token fresh for Redis.
///
/// Cheap to clone; every clone shares one background task, which starts on first use and stops
/// when the last clone is dropped. Only that task asks the credential for tokens, so any number
/// of concurrent callers cause one request.
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
                started: std::sync::Once::new(),
                alive,
            }),
            _alive: Arc::new(Alive(alive_tx)),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &TokenManagerOptions {
        &self.shared.options
    }

    /// Starts the background task, if it hasn't started. Called by every async method; call it
    /// yourself to fetch the first token ahead of need. Must run inside a Tokio runtime.
    pub fn start(&self) {
        self.shared.started.call_once(|| {
            tokio::spawn(run(self.shared.clone(), self.shared.alive.clone()));
        });
    }

    /// The current credentials, if a token has been acquired (it may have expired).
    pub fn current(&self) -> Option<Arc<RedisCredentials>> {
        self.shared.state.borrow().credentials.clone()
    }

    /// Valid credentials: the current ones, or, when there are none or they have expired, the
    /// next ones the background task acquires. If that attempt fails, its error is returned
    /// (the task keeps trying).
    pub async fn credentials(&self) -> Result<Arc<RedisCredentials>> {
        self.start();
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
            seen: 0,
        }
    }

    /// Events about tokens and connections.
    pub fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.shared.events.subscribe()
    }

    /// Asks for a new token now (for example after the server refused the current one).
    pub fn refresh_now(&self) {
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

async fn run(shared: Arc<Shared>, mut alive: watch::Receiver<()>) {
    let mut generation = 0u64;
    let mut failures = 0u32;
    let mut error_count = 0u64;
    // When to ask next; `None` means now.
    let mut next_at: Option<Instant> = None;
    loop {
        if let Some(at) = next_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = shared.wake.notified() => {
                    let forced = shared.forced.swap(false, Ordering::SeqCst);
                    let valid = shared
                        .state
                        .borrow()
                        .credentials
                        .as_ref()
                        .is_some_and(|c| !c.is_expired());
                    // A caller waiting for a token wakes the task only when there is none and no
                    // backoff is running; `refresh_now` always does.
                    if !forced && (valid || failures > 0) {
                        continue;
                    }
                }
                _ = alive.changed() => return,
            }
        }
        let current = shared.state.borrow().credentials.clone();
        let received_at = Instant::now();
        let result = tokio::select! {
            r = fetch(&shared, generation + 1) => r,
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
#[derive(Debug)]
pub struct CredentialsWatch {
    rx: watch::Receiver<State>,
    seen: u64,
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
            self.rx.changed().await.ok()?;
        }
    }
}
