//! Pub/sub that survives token rotations: on RESP3 the subscription re-authenticates in place;
//! on RESP2 (where Redis refuses `AUTH` in subscribed mode) a new connection takes over before
//! the token expires, without losing or repeating a message.
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --example pubsub
//! ```

use redis::AsyncCommands;
use redis_entra::config::RedisConfig;
use redis_entra::{EntraConnection, EntraPubSub, TokenManager, TokenManagerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());

    let mut pubsub = EntraPubSub::connect(config.connect_options(), manager.clone()).await?;
    pubsub.subscribe("Az:news").await?;

    let mut publisher = EntraConnection::connect(config.connect_options(), manager).await?;
    let receivers: i64 = publisher.publish("Az:news", "hello").await?;
    println!("published to {receivers} subscriber(s)");

    let message = pubsub
        .next_message()
        .await
        .ok_or("the subscription ended")?;
    println!(
        "{} -> {}",
        message.channel_str().unwrap_or("?"),
        String::from_utf8_lossy(message.payload())
    );
    Ok(())
}
