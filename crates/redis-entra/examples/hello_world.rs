//! The "hello world" of Microsoft's Azure Cache for Redis Python samples, done right: get an Entra token for Redis, take the username from
//! its `oid` claim (base64url JSON, not plain base64), connect over TLS, SET and GET `Az:key1`.
//!
//! Run it with Service Connector's variables, or the emulator's env file:
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --example hello_world
//! ```

use redis::AsyncCommands;
use redis_entra::config::RedisConfig;
use redis_entra::{EntraConnection, TokenManager, TokenManagerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Where the cache is, and which identity to use: Service Connector's AZURE_REDIS_* variables.
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;

    // The token, and the username Azure expects: the token's `oid` claim.
    let manager = TokenManager::new(credential, TokenManagerOptions::default());
    let creds = manager.credentials().await?;
    println!("username (oid): {}", creds.username());

    // TLS to the cache, AUTH <oid> <token>; the connection stays authenticated as tokens rotate.
    let mut conn = EntraConnection::connect(config.connect_options(), manager).await?;
    let _: () = conn.set("Az:key1", "value1").await?;
    let value: String = conn.get("Az:key1").await?;
    println!("{value}");
    Ok(())
}
