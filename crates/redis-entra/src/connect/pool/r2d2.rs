//! The r2d2 (sync) pool: a manager of [`EntraSyncConnection`]s.

use super::*;
use crate::connect::sync::{BlockingTokenManager, EntraSyncConnection, SyncShared};
use crate::connect::to_redis_error;
use crate::ConnectOptions;

/// An [r2d2](https://docs.rs/r2d2) manager of [`EntraSyncConnection`]s that stay
/// authenticated (see [the module docs](super) for when they send `AUTH`).
///
/// ```no_run
/// use redis::Commands;
/// use redis_entra::connect::pool::EntraConnectionManager;
/// use redis_entra::{BlockingTokenManager, ConnectOptions, TokenManagerOptions};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let credential = redis_entra::credential::from_env(&Default::default())?;
///     let tokens = BlockingTokenManager::new(credential, TokenManagerOptions::default())?;
///     let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
///     let pool = r2d2::Pool::builder()
///         .max_size(8)
///         .build(EntraConnectionManager::new(options, tokens))?;
///     let mut conn = pool.get()?;
///     let _: () = conn.set("Az:key1", "value1")?;
///     Ok(())
/// }
/// ```
pub struct EntraConnectionManager {
    options: ConnectOptions,
    tokens: BlockingTokenManager,
    registry: Arc<Registry<SyncShared>>,
    worker: tokio::task::AbortHandle,
}

impl std::fmt::Debug for EntraConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraConnectionManager")
            .field("host", &self.options.host)
            .field("port", &self.options.port)
            .finish_non_exhaustive()
    }
}

impl Drop for EntraConnectionManager {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl EntraConnectionManager {
    /// A manager connecting to `options` with tokens from `tokens`. Starts the worker that
    /// re-authenticates idle connections (on the token manager's runtime thread).
    pub fn new(options: ConnectOptions, tokens: BlockingTokenManager) -> Self {
        let registry = Arc::new(Registry::new());
        let worker = tokens
            .handle()
            .spawn(worker(
                Arc::downgrade(&registry),
                registry.wake.clone(),
                tokens.manager().watch(),
            ))
            .abort_handle();
        Self {
            options,
            tokens,
            registry,
            worker,
        }
    }

    /// The token manager behind the pool.
    pub fn tokens(&self) -> &BlockingTokenManager {
        &self.tokens
    }
}

async fn worker(
    registry: Weak<Registry<SyncShared>>,
    wake: Arc<Notify>,
    mut tokens: crate::CredentialsWatch,
) {
    loop {
        tokio::select! {
            creds = tokens.next() => if creds.is_none() { return },
            _ = wake.notified() => {}
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let conns = registry.live();
        drop(registry);
        if conns.is_empty() {
            continue;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for conn in conns {
                conn.reauthenticate_if_idle();
            }
        })
        .await;
    }
}

impl ::r2d2::ManageConnection for EntraConnectionManager {
    type Connection = EntraSyncConnection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<EntraSyncConnection, redis::RedisError> {
        let conn = EntraSyncConnection::connect(self.options.clone(), self.tokens.clone())
            .map_err(|e| to_redis_error("connecting with an Entra ID token failed", e))?;
        // A new connection goes to the idle list until it is checked out.
        conn.shared().set_idle(true);
        self.registry.add(conn.shared());
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut EntraSyncConnection) -> Result<(), redis::RedisError> {
        let shared = conn.shared();
        let mut state = shared.lock();
        shared.set_idle(false);
        shared.validate(&mut state)
    }

    fn has_broken(&self, conn: &mut EntraSyncConnection) -> bool {
        let shared = conn.shared();
        shared.set_idle(true);
        let state = shared.lock();
        if let Err(why) = SyncShared::reusable(&state) {
            // Never handed to the next borrower in a state it did not ask for.
            tracing::debug!(
                connection = conn.id(),
                why,
                "discarding a returned connection"
            );
            return true;
        }
        if shared.is_stale(&state) {
            // Returned with an old token: the worker re-authenticates it while it is idle.
            self.registry.wake.notify_one();
        }
        false
    }
}
