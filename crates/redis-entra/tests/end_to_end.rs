//! The library against the emulator: real redis-server, real TLS, the fake Entra ID's HTTPS.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis_entra::{EntraConnection, TokenEvent, TokenManager};
use redis_entra_emulator::faults::IdentityFault;

use common::*;

#[tokio::test]
async fn hello_world_with_a_service_principal() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let creds = manager.credentials().await.unwrap();
    assert_eq!(creds.username(), emulator.service_principal().object_id);
    assert_eq!(creds.claims().tid.as_deref(), Some(emulator.tenant_id()));
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("Az:key1", "value1").await.unwrap();
    let v: String = conn.get("Az:key1").await.unwrap();
    assert_eq!(v, "value1");
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        whoami,
        emulator.service_principal().object_id,
        "the identity's ACL user is named by its object id, as on Azure"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn traffic_across_ten_rotations_has_no_failed_command() {
    let lifetime = Duration::from_secs(3);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    // A connection authenticated once and never again, for comparison.
    let first = manager.current().unwrap();
    let mut control = connect_options(&emulator)
        .client(&first)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let mut reauths = 0u32;
    let (mut ok, mut failed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u64;
    while reauths < 10 {
        assert!(
            Instant::now() < deadline,
            "only {reauths} re-authentications in 60 s"
        );
        i += 1;
        let r: redis::RedisResult<String> = async {
            let _: () = conn.set("k", i).await?;
            conn.get("k").await
        }
        .await;
        match r {
            Ok(v) if v == i.to_string() => ok += 1,
            other => {
                failed += 1;
                eprintln!("round {i}: {other:?}");
            }
        }
        while let Ok(ev) = events.try_recv() {
            if let TokenEvent::ConnectionReauthenticated { connection_id, .. } = ev {
                if connection_id == conn.id() {
                    reauths += 1;
                }
            }
            assert!(!matches!(ev, TokenEvent::Reconnected { .. }), "{ev:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 50);
    // The control connection's token expired long ago: the gateway closed it.
    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut control).await;
    assert!(
        ping.is_err(),
        "a connection never re-authenticated must be closed at expiry"
    );
    assert!(emulator.stats().closed_at_expiry.load(Ordering::Relaxed) >= 1);
    // One token request per refresh, not a loop.
    let requests = emulator.stats().token_requests.load(Ordering::Relaxed);
    assert!(
        requests <= u64::from(reauths) + 3,
        "{requests} token requests for {reauths} refreshes"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_identity_outage_longer_than_the_token_is_survived() {
    let lifetime = Duration::from_secs(3);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let first = manager.current().unwrap();
    emulator.faults().set_identity(IdentityFault::Unavailable);
    // Stay down well past the token's expiry (and so past any refresh margin).
    let mut failures = 0u32;
    while failures < 5 || !first.is_expired() {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed { attempt, .. })) => failures = attempt,
            Ok(Ok(_)) => {}
            other => panic!("expected refresh failures, got {other:?}"),
        }
    }
    // The gateway closes the connection once the token (plus its clock skew) has expired.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while emulator.stats().closed_at_expiry.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the gateway did not close the expired connection"
    );
    emulator.faults().set_identity(IdentityFault::None);
    // The manager recovers on its own and the connection comes back with a fresh token.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "no recovery 15 s after the outage ended"
        );
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        if r.is_ok() && manager.current().unwrap().generation() > first.generation() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = manager.current().unwrap();
    assert!(now.generation() > first.generation());
    assert!(!now.is_expired());
    emulator.shutdown().await;
}

/// Soak regression (docs/RELIABILITY.md, "Soak"): a connection the gateway closed while no
/// token was left is re-established as soon as the manager gets the first token after the
/// outage, not after a reconnect backoff that grew during it (up to 2 s before the fix, which
/// made recovery slower than the 1 s goal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_regression_a_connection_lost_without_a_token_returns_with_the_first_new_token() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let id = conn.id();
    emulator.faults().set_identity(IdentityFault::Unavailable);
    // The gateway closes the connection once its token has expired (no event of ours says so).
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while emulator.stats().closed_at_expiry.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the gateway did not close the connection");
    // Let the connection's reconnect loop fail for a while (its old backoff reached 1.6-2 s).
    let mut failures = 0u32;
    while failures < 6 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed {
                time_left: None, ..
            })) => failures += 1,
            Ok(Ok(TokenEvent::Reconnected { connection_id, .. })) if connection_id == id => {
                panic!("reconnected without a token")
            }
            Ok(Ok(_)) => {}
            other => panic!("expected refresh failures, got {other:?}"),
        }
    }
    let after_token = heal_and_time_reconnection(&emulator, &mut events, id).await;
    assert!(
        after_token < Duration::from_millis(500),
        "reconnected {after_token:?} after the first new token"
    );
    let mut conn = conn;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    emulator.shutdown().await;
}

/// Soak regression (docs/RELIABILITY.md, "Soak"): every connection asks for the PEM bundle of
/// trusted roots; it is built once (the system's roots read once per process), and still holds
/// the system's roots and the extra CA.
#[tokio::test]
async fn soak_regression_the_pem_bundle_is_built_once_and_holds_the_extra_ca() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let tls = tls(&emulator);
    let first = tls
        .pem_bundle()
        .unwrap()
        .expect("a bundle with an extra CA");
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(tls.pem_bundle().unwrap().as_deref(), Some(&first[..]));
    }
    eprintln!("100 bundles in {:?}", started.elapsed());
    let text = String::from_utf8(first).unwrap();
    let ca_body: String = emulator
        .ca_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        text.replace('\n', "").contains(&ca_body),
        "the extra CA is in the bundle"
    );
    assert_eq!(
        redis_entra::TlsOptions::default().pem_bundle().unwrap(),
        None
    );
    emulator.shutdown().await;
}

/// Soak regression (docs/RELIABILITY.md, "Soak"): on RESP2 nothing tells the client that the
/// server closed a connection whose token expired during an identity outage. The first command
/// after the manager's new token arrived used to be written to that dead connection and fail
/// ("broken pipe") although a valid token existed; the connection now replaces itself first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_regression_the_first_command_after_an_outage_that_expired_the_token_succeeds() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut options = connect_options(&emulator);
    // No probe: only the application's commands would find out that the connection died.
    options.health_check_interval = None;
    let mut conn = EntraConnection::connect(options, manager.clone())
        .await
        .unwrap();
    let _: () = conn.set("soak:k", 1).await.unwrap();
    let first = manager.current().unwrap();
    emulator.faults().set_identity(IdentityFault::Unavailable);
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while emulator.stats().closed_at_expiry.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the gateway did not close the connection");
    assert!(first.is_expired());
    emulator.faults().set_identity(IdentityFault::None);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(TokenEvent::Refreshed { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("a token after the outage");
    // A valid token exists: the very next command must succeed.
    let v: u64 = conn.get("soak:k").await.unwrap();
    assert_eq!(v, 1);
    emulator.shutdown().await;
}

/// Regression (found by the rotation bench's teardown): a connection dropped while its server
/// was unreachable left its background task reconnecting forever, holding the token manager
/// (which kept asking for tokens) long after the application had let go of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_its_server_is_down_releases_its_task_and_the_manager() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut options = connect_options(&emulator);
    options.protocol = redis_entra::Protocol::Resp3;
    options.connect_timeout = Duration::from_secs(1);
    let mut conn = EntraConnection::connect(options, manager).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The server goes away: the connection is lost and its task starts reconnecting.
    emulator.shutdown().await;
    let failed = redis::cmd("GET")
        .arg("k")
        .query_async::<redis::Value>(&mut conn)
        .await;
    assert!(failed.is_err(), "the server is gone: {failed:?}");
    drop(conn);
    // Every handle is gone: the task stops, the manager with it, and its event channel closes.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection's task still holds the token manager"
    );
}
