//! Trace-level logs of every kind of connection across token rotations (this library, redis-rs
//! through `log`, fred, and the emulator, all in one process) hold no token, client secret or
//! access key: the `AUTH` arguments never reach a log line.
//! (Its own test binary: it installs the global subscriber.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use fred::prelude::*;
use redis::AsyncCommands;
use redis_entra::config::RedisConfig;
use redis_entra::connect::fred::{builder, keep_authenticated};
use redis_entra::{
    BlockingTokenManager, EntraAsyncConnectionManager, EntraClusterConnection, EntraConnection,
    EntraConnectionManager, EntraPubSub, EntraSyncConnection, Protocol, TokenManager,
};
use redis_entra_emulator::{Emulator, EmulatorConfig};

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A credential that remembers every token it hands out, so the test knows what to look for.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn TokenCredential>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl TokenCredential for Recording {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = self.inner.get_token(scopes, options).await?;
        self.seen
            .lock()
            .unwrap()
            .push(token.token.secret().to_string());
        Ok(token)
    }
}

/// Waits until the manager has handed out `n` tokens.
async fn tokens(manager: &TokenManager, n: u64) {
    let mut watch = manager.watch();
    tokio::time::timeout(WAIT, async {
        while let Some(c) = watch.next().await {
            if c.generation() >= n {
                return;
            }
        }
    })
    .await
    .expect("the manager keeps refreshing");
}

async fn standalone_kinds(emulator: &Emulator, manager: TokenManager) {
    let options = connect_options(emulator);
    // Multiplexed.
    let mut multiplexed = EntraConnection::connect(options.clone(), manager.clone())
        .await
        .unwrap();
    // bb8.
    let bb8_pool = bb8::Pool::builder()
        .max_size(2)
        .build(EntraAsyncConnectionManager::new(
            options.clone(),
            manager.clone(),
        ))
        .await
        .unwrap();
    // Pub/sub, both protocols.
    let mut subscribers = Vec::new();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut o = options.clone();
        o.protocol = protocol;
        let pubsub = EntraPubSub::connect(o, manager.clone()).await.unwrap();
        pubsub.subscribe("logs").await.unwrap();
        subscribers.push(pubsub);
    }
    // fred, kept authenticated on every token.
    let fred_client = builder(&options, &manager).unwrap().build().unwrap();
    fred_client.init().await.unwrap();
    let _reauth = keep_authenticated(&fred_client, manager.clone()).unwrap();
    // Sync and r2d2, on their own runtime thread.
    let blocking = BlockingTokenManager::with_manager(manager.clone()).unwrap();
    let sync_options = options.clone();
    let sync_side = tokio::task::spawn_blocking(move || {
        let mut conn =
            EntraSyncConnection::connect(sync_options.clone(), blocking.clone()).unwrap();
        let pool = r2d2::Pool::builder()
            .max_size(2)
            .build(EntraConnectionManager::new(sync_options, blocking))
            .unwrap();
        (conn_round(&mut conn), pool)
    })
    .await
    .unwrap();
    let (first, r2d2_pool) = sync_side;
    assert!(first);

    // Use every kind, across two rotations.
    let start = manager.current().map(|c| c.generation()).unwrap_or(0);
    for round in 0..3u64 {
        let _: () = multiplexed.set("logs:m", round).await.unwrap();
        let v: u64 = multiplexed.get("logs:m").await.unwrap();
        assert_eq!(v, round);
        {
            let mut c = bb8_pool.get().await.unwrap();
            let _: () = c.set("logs:b", round).await.unwrap();
        }
        let _: () = fred_client
            .set("logs:f", round, None, None, false)
            .await
            .unwrap();
        let p = r2d2_pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = p.get().unwrap();
            redis::cmd("SET")
                .arg("logs:r")
                .arg(round)
                .exec(&mut *c)
                .unwrap();
        })
        .await
        .unwrap();
        let _: i64 = multiplexed.publish("logs", round).await.unwrap();
        for s in subscribers.iter_mut() {
            let m = tokio::time::timeout(WAIT, s.next_message())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.payload_str(), Some(round.to_string().as_str()));
        }
        if round < 2 {
            tokens(&manager, start + round + 1).await;
        }
    }
}

fn conn_round(conn: &mut EntraSyncConnection) -> bool {
    redis::cmd("SET").arg("logs:s").arg(1).exec(conn).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_every_connection_kind_hold_no_secret() {
    let buffer = LogBuffer::install_trace();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));

    // Standalone: every kind but cluster, tokens living 3 s.
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(3),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let secret = emulator.service_principal().secret.clone().unwrap();
    let manager = TokenManager::new(
        Arc::new(Recording {
            inner: service_principal(&emulator),
            seen: seen.clone(),
        }),
        quick_options(),
    );
    standalone_kinds(&emulator, manager.clone()).await;

    // An access key, through the Service Connector variables.
    let key = emulator.primary_key();
    let vars: std::collections::HashMap<String, String> = emulator
        .env_for(redis_entra_emulator::IdentityKind::AccessKey)
        .into_iter()
        .collect();
    let mut config = RedisConfig::from_vars(|n| vars.get(n).cloned()).unwrap();
    config.tls = tls(&emulator);
    let mut keyed = config.connect().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut keyed).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(keyed);
    emulator.shutdown().await;

    // Cluster, tokens living 3 s, across a rotation.
    let cluster = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(3),
        cluster: Some(3),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let cluster_secret = cluster.service_principal().secret.clone().unwrap();
    let cluster_manager = TokenManager::new(
        Arc::new(Recording {
            inner: service_principal(&cluster),
            seen: seen.clone(),
        }),
        quick_options(),
    );
    let mut conn =
        EntraClusterConnection::connect(connect_options(&cluster), cluster_manager.clone())
            .await
            .unwrap();
    for i in 0..2u64 {
        for k in 0..6 {
            let _: () = conn.set(format!("logs:{k}"), i).await.unwrap();
        }
        if i == 0 {
            tokens(&cluster_manager, 2).await;
        }
    }
    drop(conn);
    cluster.shutdown().await;

    let logs = buffer.text();
    // The capture worked: the library, redis-rs (through `log`) and the emulator all logged.
    assert!(logs.contains("acquired an Entra ID token"), "{logs}");
    for target in [
        "redis::cluster_handling",
        "fred::protocol",
        "gateway::session::authenticate: authenticated",
    ] {
        assert!(logs.contains(target), "records of {target} are captured");
    }
    let tokens = seen.lock().unwrap().clone();
    assert!(tokens.len() >= 4, "tokens were rotated: {}", tokens.len());
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a token is in the logs");
        // Its signature alone is a secret too.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token's signature is in the logs"
        );
    }
    assert!(!logs.contains("eyJ"), "something JWT-shaped is in the logs");
    for (what, s) in [
        ("client secret", secret.as_str()),
        ("cluster client secret", cluster_secret.as_str()),
        ("access key", key.as_str()),
    ] {
        assert!(!logs.contains(s), "the {what} is in the logs");
    }
}
