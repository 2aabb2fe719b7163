//! Keep your redis-rs types: a `MultiplexedConnection` and a `ConnectionManager`, built as you
//! build them today, authenticated with Entra ID by two additions: the library's credentials
//! provider, and a guard that keeps each connection authenticated.
//!
//! Run it with Service Connector's variables, or the emulator's env file:
//!
//! ```sh
//! redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
//! . /tmp/azure.env && cargo run -p redis-entra --features connection-manager --example keep_your_types
//! ```
//!
//! `REDIS_ENTRA_RUN_SECS=N` keeps both connections busy for N seconds (across token rotations
//! when tokens are short-lived, as the emulator's can be), then prints how many commands failed.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, AsyncConnectionConfig};
use redis_entra::config::RedisConfig;
use redis_entra::{
    keep_authenticated, EntraCredentialsProvider, TokenEvent, TokenManager, TokenManagerOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("AZURE_REDIS_* describe an access key; this sample signs in with Entra ID")?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());
    // Any `redis::Client` will do; this one has the host, port and TLS trust from the variables.
    let client = config.connect_options().redis_client()?;

    // 1. A MultiplexedConnection: the provider goes into its config.
    let conn_config = AsyncConnectionConfig::new()
        .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
    let mut multiplexed = client
        .get_multiplexed_async_connection_with_config(&conn_config)
        .await?;
    let _multiplexed_guard = keep_authenticated(&multiplexed, manager.clone())?;

    // 2. A ConnectionManager: the same, in its own config (its retries and options stay yours).
    let manager_config = ConnectionManagerConfig::new()
        .set_number_of_retries(5)
        .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
    let mut managed = ConnectionManager::new_with_config(client, manager_config).await?;
    let _managed_guard = keep_authenticated(&managed, manager.clone())?;

    let _: () = multiplexed.set("Az:key1", "value1").await?;
    let value: String = managed.get("Az:key1").await?;
    println!("GET Az:key1 -> {value}");

    let run_for: u64 = std::env::var("REDIS_ENTRA_RUN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut events = manager.events();
    let started = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(run_for) {
        let a: redis::RedisResult<()> = multiplexed.incr("Az:counter", 1).await;
        let b: redis::RedisResult<i64> = managed.get("Az:counter").await;
        for result in [a.map(drop), b.map(drop)] {
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("command failed: {e}");
                }
            }
        }
        while let Ok(event) = events.try_recv() {
            if let TokenEvent::ConnectionReauthenticated { connection_id, .. } = event {
                println!("connection {connection_id} re-authenticated");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if run_for > 0 {
        println!("{ok} commands, {failed} failed");
    }
    if failed > 0 {
        return Err(format!("{failed} commands failed").into());
    }
    Ok(())
}
