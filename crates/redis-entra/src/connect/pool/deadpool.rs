//! The deadpool (async) pool's manager of [`EntraPooledConnection`]s.

use ::deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};

use super::pooled::AsyncPool;
use super::EntraPooledConnection;
use crate::{ConnectOptions, TokenManager};

/// A [deadpool](https://docs.rs/deadpool) manager of [`EntraPooledConnection`]s that stay
/// authenticated, with the same rules as the bb8 pool (see [the module docs](super)).
///
/// deadpool checks a connection when it hands it out (`recycle`), not when it is given back:
/// a connection returned inside `MULTI`, after a session-altering command or with a reply never
/// read is discarded at its next checkout, and checkout's `PING` must answer `PONG`. As deadpool
/// does not say when a connection is given back, the worker that keeps idle connections
/// authenticated treats a deadpool connection as idle whenever no command is running on it and
/// no transaction is open, so its `AUTH` may come between two of a borrower's commands, never
/// between `MULTI` and `EXEC`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis::AsyncCommands;
/// use redis_entra::connect::pool::EntraDeadpoolManager;
/// use redis_entra::{ConnectOptions, TokenManager, TokenManagerOptions};
/// let credential = redis_entra::credential::from_env(&Default::default())?;
/// let manager = TokenManager::new(credential, TokenManagerOptions::default());
/// let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
/// let pool: deadpool::managed::Pool<EntraDeadpoolManager> =
///     deadpool::managed::Pool::builder(EntraDeadpoolManager::new(options, manager))
///     .max_size(8)
///     .build()?;
/// let mut conn = pool.get().await?;
/// let _: () = conn.set("Az:key1", "value1").await?;
/// # Ok(()) }
/// ```
pub struct EntraDeadpoolManager {
    pool: AsyncPool,
}

impl std::fmt::Debug for EntraDeadpoolManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraDeadpoolManager")
            .field("host", &self.pool.options.host)
            .field("port", &self.pool.options.port)
            .finish_non_exhaustive()
    }
}

impl EntraDeadpoolManager {
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

impl Manager for EntraDeadpoolManager {
    type Type = EntraPooledConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<EntraPooledConnection, redis::RedisError> {
        self.pool.connect().await
    }

    async fn recycle(
        &self,
        conn: &mut EntraPooledConnection,
        _: &Metrics,
    ) -> RecycleResult<redis::RedisError> {
        // What bb8 checks on return, deadpool lets us check only now.
        if self.pool.give_back(conn) {
            return Err(RecycleError::message(
                "the connection was given back lost or not in a clean state",
            ));
        }
        self.pool
            .check_out(conn)
            .await
            .map_err(RecycleError::Backend)?;
        // Eligible for the idle worker between the borrower's commands (see above).
        self.pool.mark_idle(conn);
        Ok(())
    }
}
