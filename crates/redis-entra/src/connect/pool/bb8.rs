//! The bb8 (async) pool's manager of [`EntraPooledConnection`]s.

use super::pooled::AsyncPool;
use super::EntraPooledConnection;
use crate::{ConnectOptions, TokenManager};

/// A [bb8](https://docs.rs/bb8) manager of [`EntraPooledConnection`]s that stay
/// authenticated (see [the module docs](super) for when they send `AUTH`).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis::AsyncCommands;
/// use redis_entra::connect::pool::EntraAsyncConnectionManager;
/// use redis_entra::{ConnectOptions, TokenManager, TokenManagerOptions};
/// let credential = redis_entra::credential::from_env(&Default::default())?;
/// let manager = TokenManager::new(credential, TokenManagerOptions::default());
/// let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
/// let pool = bb8::Pool::builder()
///     .max_size(8)
///     .build(EntraAsyncConnectionManager::new(options, manager))
///     .await?;
/// let mut conn = pool.get().await?;
/// let _: () = conn.set("Az:key1", "value1").await?;
/// # Ok(()) }
/// ```
pub struct EntraAsyncConnectionManager {
    pool: AsyncPool,
}

impl std::fmt::Debug for EntraAsyncConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraAsyncConnectionManager")
            .field("host", &self.pool.options.host)
            .field("port", &self.pool.options.port)
            .finish_non_exhaustive()
    }
}

impl EntraAsyncConnectionManager {
    /// A manager connecting to `options` with tokens from `manager`. The worker that
    /// re-authenticates idle connections starts with the first connection (on the runtime
    /// the pool runs on).
    pub fn new(options: ConnectOptions, manager: TokenManager) -> Self {
        Self {
            pool: AsyncPool::new(options, manager),
        }
    }

    /// The token manager behind the pool.
    pub fn manager(&self) -> &TokenManager {
        &self.pool.manager
    }
}

impl ::bb8::ManageConnection for EntraAsyncConnectionManager {
    type Connection = EntraPooledConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<EntraPooledConnection, redis::RedisError> {
        self.pool.connect().await
    }

    async fn is_valid(&self, conn: &mut EntraPooledConnection) -> Result<(), redis::RedisError> {
        self.pool.check_out(conn).await
    }

    fn has_broken(&self, conn: &mut EntraPooledConnection) -> bool {
        self.pool.give_back(conn)
    }
}
