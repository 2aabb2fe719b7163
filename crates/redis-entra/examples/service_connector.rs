//! One program for every Service Connector authentication type: system- or user-assigned
//! managed identity, service principal, workload identity, or an access key (connection string
//! or separate variables). It reads the AZURE_REDIS_* variables and does the right thing.

use redis::AsyncCommands;
use redis_entra::config::RedisConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = match RedisConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "connecting to {}:{} (db {}) with {}",
        config.host,
        config.port,
        config.db,
        config.auth.describe()
    );
    let mut conn = config.connect().await?;
    let _: () = conn.set("Az:key1", "value1").await?;
    let value: String = conn.get("Az:key1").await?;
    println!("GET Az:key1 -> {value}");
    Ok(())
}
