//! Synchronous code: an `EntraSyncConnection` sends `AUTH` before the next command once a newer
//! token exists (never inside `MULTI`), and reconnects a dead connection first.
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --example sync
//! ```

use redis::Commands;
use redis_entra::config::RedisConfig;
use redis_entra::{BlockingTokenManager, EntraSyncConnection, TokenManagerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;
    let tokens = BlockingTokenManager::new(credential, TokenManagerOptions::default())?;
    let mut conn = EntraSyncConnection::connect(config.connect_options(), tokens)?;
    let _: () = conn.set("Az:sync", "value1")?;
    let value: String = conn.get("Az:sync")?;
    println!("GET Az:sync -> {value}");
    Ok(())
}
