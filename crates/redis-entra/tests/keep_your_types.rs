//! Keep your redis-rs types: a `MultiplexedConnection` and a `ConnectionManager` built by the
//! user with [`EntraCredentialsProvider`], and a [`keep_authenticated`] guard beside them,
//! through the emulator's gateway across token rotations, with re-`AUTH` refused, and with the
//! guard dropped.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, AsyncConnectionConfig};
use redis_entra::{keep_authenticated, EntraCredentialsProvider, TokenEvent, TokenManager};
use redis_entra_emulator::Emulator;
use tokio::sync::broadcast::error::TryRecvError;

use common::*;

/// One `SET` then `GET` of a fresh value, with a time limit; `true` when both succeeded.
async fn round<C: ConnectionLike + Send + Sync>(conn: &mut C, i: u64) -> bool {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let _: () = conn.set("keep:k", i).await?;
        conn.get::<_, u64>("keep:k").await
    })
    .await;
    match r {
        Ok(Ok(v)) if v == i => true,
        other => {
            eprintln!("round {i}: {other:?}");
            false
        }
    }
}

/// The user's `MultiplexedConnection`, authenticated by the provider.
async fn multiplexed(
    emulator: &Emulator,
    manager: &TokenManager,
) -> redis::aio::MultiplexedConnection {
    let client = connect_options(emulator).redis_client().unwrap();
    let config = AsyncConnectionConfig::new()
        .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// The user's `ConnectionManager`, authenticated by the provider.
async fn connection_manager(emulator: &Emulator, manager: &TokenManager) -> ConnectionManager {
    let client = connect_options(emulator).redis_client().unwrap();
    let config = ConnectionManagerConfig::new()
        .set_credentials_provider(EntraCredentialsProvider::new(manager.clone()));
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

/// What the guard reported while the traffic ran.
#[derive(Default, Debug)]
struct Seen {
    reauthenticated: u32,
    refused: u32,
    replaced: u32,
}

impl Seen {
    fn take(&mut self, events: &mut tokio::sync::broadcast::Receiver<TokenEvent>, id: u64) {
        loop {
            match events.try_recv() {
                Ok(TokenEvent::ConnectionReauthenticated { connection_id, .. })
                    if connection_id == id =>
                {
                    self.reauthenticated += 1
                }
                Ok(TokenEvent::ReauthenticationFailed { connection_id, .. })
                    if connection_id == id =>
                {
                    self.refused += 1
                }
                Ok(TokenEvent::Reconnected { connection_id, .. }) if connection_id == id => {
                    self.replaced += 1
                }
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }
}

/// Traffic until `done(seen)`, a round every 20 ms; (rounds ok, rounds failed).
async fn traffic<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    manager: &TokenManager,
    id: u64,
    seen: &mut Seen,
    done: impl Fn(&Seen, Duration) -> bool,
) -> (u64, u64) {
    let mut events = manager.events();
    let started = Instant::now();
    let (mut ok, mut failed, mut i) = (0u64, 0u64, 0u64);
    while !done(seen, started.elapsed()) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not done in 90 s: {seen:?}"
        );
        i += 1;
        if round(conn, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
        seen.take(&mut events, id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ok, failed)
}

#[tokio::test]
async fn multiplexed_connection_follows_ten_token_rotations_without_a_failed_command() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conn = multiplexed(&emulator, &manager).await;
    let guard = keep_authenticated(&conn, manager.clone()).unwrap();
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(whoami, emulator.service_principal().object_id);

    let mut seen = Seen::default();
    let (ok, failed) = traffic(&mut conn, &manager, guard.id(), &mut seen, |s, _| {
        s.reauthenticated >= 10
    })
    .await;
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert_eq!((seen.refused, seen.replaced), (0, 0), "{seen:?}");
    let stats = emulator.stats();
    assert_eq!(stats.closed_at_expiry.load(Ordering::Relaxed), 0);
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn connection_manager_follows_ten_token_rotations_without_a_failed_command() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conn = connection_manager(&emulator, &manager).await;
    let guard = keep_authenticated(&conn, manager.clone()).unwrap();

    let mut seen = Seen::default();
    let (ok, failed) = traffic(&mut conn, &manager, guard.id(), &mut seen, |s, _| {
        s.reauthenticated >= 10
    })
    .await;
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert_eq!((seen.refused, seen.replaced), (0, 0), "{seen:?}");
    let stats = emulator.stats();
    assert_eq!(stats.closed_at_expiry.load(Ordering::Relaxed), 0);
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn connection_manager_is_replaced_before_expiry_when_reauth_keeps_failing() {
    let lifetime = Duration::from_secs(4);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conn = connection_manager(&emulator, &manager).await;
    let guard = keep_authenticated(&conn, manager.clone()).unwrap();
    // Every AUTH on an authenticated connection is refused; a new connection's first is not.
    emulator.faults().set_refuse_reauth(true);

    let mut seen = Seen::default();
    let (ok, failed) = traffic(&mut conn, &manager, guard.id(), &mut seen, |s, elapsed| {
        elapsed > lifetime * 3 && s.replaced >= 3
    })
    .await;
    eprintln!("{ok} rounds ok, {failed} failed, {seen:?}");
    assert!(seen.refused >= 3, "{seen:?}");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close the connection at expiry: it was not replaced in time"
    );
    // A command in flight when the connection is replaced fails (a ConnectionManager does not
    // retry it); at most the one of the round under way.
    assert!(
        failed <= u64::from(seen.replaced),
        "{failed} failed rounds for {} replacements",
        seen.replaced
    );
    // And the connection in use now holds the current token.
    emulator.faults().set_refuse_reauth(false);
    assert!(round(&mut conn, u64::MAX).await);
    emulator.shutdown().await;
}

#[tokio::test]
async fn dropping_the_guard_stops_its_task() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let conn = multiplexed(&emulator, &manager).await;
    let dropped = keep_authenticated(&conn, manager.clone()).unwrap();
    let kept = keep_authenticated(&conn, manager.clone()).unwrap();
    let dropped_id = dropped.id();
    drop(dropped);

    // Two rotations: the kept guard re-authenticates on each, the dropped one never.
    let mut events = manager.events();
    let mut kept_reauths = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while kept_reauths < 2 {
            match events.recv().await.unwrap() {
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                | TokenEvent::ReauthenticationFailed { connection_id, .. }
                    if connection_id == dropped_id =>
                {
                    panic!("the dropped guard's task still runs")
                }
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                    if connection_id == kept.id() =>
                {
                    kept_reauths += 1
                }
                _ => {}
            }
        }
    })
    .await
    .expect("two rotations");
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_guard_needs_a_runtime_and_says_so() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let conn = multiplexed(&emulator, &manager).await;
    let outside = std::thread::spawn(move || keep_authenticated(&conn, manager).err())
        .join()
        .unwrap();
    assert!(
        matches!(outside, Some(redis_entra::Error::NoRuntime)),
        "{outside:?}"
    );
    emulator.shutdown().await;
}
