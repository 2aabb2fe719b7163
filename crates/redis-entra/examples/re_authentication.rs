//! The "handle re-authentication" sample of Microsoft's Azure Cache for Redis Python samples, done right: a long-running client whose connection is
//! re-authenticated in place before each token expires, and reconnected with a fresh token if it
//! is lost, with no retry limit anywhere. Prints each refresh and re-authentication.
//!
//! `REDIS_ENTRA_RUN_SECS` sets how long it runs (default 60).

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis_entra::config::RedisConfig;
use redis_entra::{EntraConnection, TokenEvent, TokenManager, TokenManagerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = std::env::var("REDIS_ENTRA_RUN_SECS")
        .ok()
        .map(|s| s.parse::<u64>())
        .transpose()?
        .unwrap_or(60);
    let config = RedisConfig::from_env()?;
    let credential = config
        .credential()?
        .ok_or("this sample signs in with Entra ID")?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());

    let mut events = manager.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                TokenEvent::Refreshed { expires_on, .. } => println!(
                    "token refreshed, expires in {:?}",
                    expires_on
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default()
                ),
                TokenEvent::ConnectionReauthenticated { took, .. } => {
                    println!("connection re-authenticated in {took:?}")
                }
                TokenEvent::RefreshFailed {
                    error, retry_in, ..
                } => {
                    println!("token refresh failed ({error}); retrying in {retry_in:?}")
                }
                TokenEvent::Reconnected { reason, .. } => println!("reconnected: {reason}"),
                _ => {}
            }
        }
    });

    let mut conn = EntraConnection::connect(config.connect_options(), manager).await?;
    let deadline = Instant::now() + Duration::from_secs(run_for);
    let (mut ok, mut failed) = (0u64, 0u64);
    while Instant::now() < deadline {
        let result: redis::RedisResult<String> = async {
            let _: () = conn.set("Az:key1", "value1").await?;
            conn.get("Az:key1").await
        }
        .await;
        match result {
            Ok(_) => ok += 1,
            // A command that fails while a connection is replaced can be retried.
            Err(e) => {
                failed += 1;
                eprintln!("command failed (will retry): {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{ok} rounds OK, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
