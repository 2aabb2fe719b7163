//! The three pools, each with connections that stay authenticated (at checkout, while idle, and
//! never inside a borrower's transaction): r2d2 for sync code, bb8 and deadpool for async code.
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --features r2d2,bb8,deadpool --example pools
//! ```

use redis::{AsyncCommands, Commands};
use redis_entra::config::RedisConfig;
use redis_entra::{
    BlockingTokenManager, EntraAsyncConnectionManager, EntraConnectionManager,
    EntraDeadpoolManager, TokenManager, TokenManagerOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig::from_env()?;
    let options = config.connect_options();

    // r2d2, in sync code: a BlockingTokenManager runs the refreshes on its own thread.
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;
    let tokens = BlockingTokenManager::new(credential, TokenManagerOptions::default())?;
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .build(EntraConnectionManager::new(options.clone(), tokens))?;
    let mut conn = pool.get()?;
    let _: () = conn.set("Az:pool", "r2d2")?;
    let value: String = conn.get("Az:pool")?;
    println!("r2d2: GET Az:pool -> {value}");

    // bb8 and deadpool, in async code, share one TokenManager.
    tokio::runtime::Runtime::new()?.block_on(async {
        let credential = config.credential()?.ok_or("no Entra ID identity")?;
        let manager = TokenManager::new(credential, TokenManagerOptions::default());

        let bb8_pool = bb8::Pool::builder()
            .max_size(4)
            .build(EntraAsyncConnectionManager::new(
                options.clone(),
                manager.clone(),
            ))
            .await?;
        let mut conn = bb8_pool.get().await?;
        let _: () = conn.set("Az:pool", "bb8").await?;
        let value: String = conn.get("Az:pool").await?;
        println!("bb8: GET Az:pool -> {value}");
        drop(conn);

        let deadpool_pool: deadpool::managed::Pool<EntraDeadpoolManager> =
            deadpool::managed::Pool::builder(EntraDeadpoolManager::new(options, manager))
                .max_size(4)
                .build()?;
        let mut conn = deadpool_pool.get().await.map_err(|e| e.to_string())?;
        let _: () = conn.set("Az:pool", "deadpool").await?;
        let value: String = conn.get("Az:pool").await?;
        println!("deadpool: GET Az:pool -> {value}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
