//! fred: the library's credential provider authenticates every connection fred opens, and a
//! guard sends `AUTH` to every node once per new token.
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --features fred --example fred
//! ```

use fred::prelude::*;
use redis_entra::config::RedisConfig;
use redis_entra::connect::fred::{builder, keep_authenticated};
use redis_entra::{TokenManager, TokenManagerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());

    let client = builder(&config.connect_options(), &manager)?.build()?;
    client.init().await?;
    let _guard = keep_authenticated(&client, manager)?;

    let _: () = client.set("Az:fred", "value1", None, None, false).await?;
    let value: String = client.get("Az:fred").await?;
    println!("GET Az:fred -> {value}");
    client.quit().await?;
    Ok(())
}
