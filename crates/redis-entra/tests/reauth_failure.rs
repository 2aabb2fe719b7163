//! A connection whose re-`AUTH` keeps failing is replaced before its token expires, and the
//! application never sees an error: the emulator's gateway refuses every re-`AUTH` (the
//! refuse-reauth fault) while new connections still get in.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands;
use redis_entra::{EntraConnection, TokenEvent, TokenManager};

use common::*;

/// One `SET` then `GET` of a fresh value, with a time limit; `true` when both succeeded.
async fn round(conn: &mut EntraConnection, i: u64) -> bool {
    round_on(conn, "reauth:k", i).await
}

async fn round_on(conn: &mut EntraConnection, key: &str, i: u64) -> bool {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let _: () = conn.set(key, i).await?;
        conn.get::<_, String>(key).await
    })
    .await;
    match r {
        Ok(Ok(v)) if v == i.to_string() => true,
        other => {
            eprintln!("round {i}: {other:?}");
            false
        }
    }
}

/// Counters of the background workers.
#[derive(Default)]
struct Workers {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    /// The slowest round, in milliseconds.
    slowest_ms: AtomicU64,
}

/// Commands without pause on clones of `conn` (so some are always in flight on the shared
/// connection when it is replaced).
fn spawn_workers(
    conn: &EntraConnection,
    n: usize,
) -> (Arc<Workers>, Vec<tokio::task::JoinHandle<()>>) {
    let workers = Arc::new(Workers::default());
    let handles = (0..n)
        .map(|w| {
            let mut conn = conn.clone();
            let workers = workers.clone();
            tokio::spawn(async move {
                let key = format!("reauth:worker:{w}");
                let mut i = 0u64;
                while !workers.stop.load(Ordering::SeqCst) {
                    i += 1;
                    let started = Instant::now();
                    if round_on(&mut conn, &key, i).await {
                        workers.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        workers.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    workers.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (workers, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_reauth_keeps_failing_is_replaced_before_expiry() {
    let lifetime = Duration::from_secs(4);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let id = conn.id();

    let (mut ok, mut failed) = (0u64, 0u64);
    let mut i = 0u64;
    // Some traffic first, fault off.
    for _ in 0..10 {
        i += 1;
        if round(&mut conn, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
    }

    let (workers, handles) = spawn_workers(&conn, 3);
    emulator.faults().set_refuse_reauth(true);
    let fault_on = Instant::now();
    let (mut reauth_failures, mut replacements, mut reauths_with_fault) = (0u32, 0u32, 0u32);
    // Three token lifetimes with the fault on, and at least three replacements.
    while fault_on.elapsed() < lifetime * 3 || replacements < 3 {
        assert!(
            fault_on.elapsed() < Duration::from_secs(60),
            "only {replacements} replacements in 60 s"
        );
        let expiry_before = conn.token_expires_on();
        i += 1;
        if round(&mut conn, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
        while let Ok(ev) = events.try_recv() {
            match ev {
                TokenEvent::ReauthenticationFailed { connection_id, .. } if connection_id == id => {
                    reauth_failures += 1;
                }
                TokenEvent::Reconnected {
                    connection_id,
                    reason,
                } if connection_id == id => {
                    assert!(
                        reauth_failures > 0,
                        "replaced ({reason}) before any re-AUTH failed"
                    );
                    assert!(
                        SystemTime::now() < expiry_before,
                        "replaced ({reason}) only after the old token expired"
                    );
                    replacements += 1;
                }
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                    if connection_id == id =>
                {
                    reauths_with_fault += 1;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let with_fault = fault_on.elapsed();
    workers.stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.await.unwrap();
    }
    let (w_ok, w_failed) = (
        workers.ok.load(Ordering::Relaxed),
        workers.failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        w_failed,
        0,
        "{w_failed} of {} worker rounds failed",
        w_ok + w_failed
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} rounds failed ({replacements} replacements)",
        ok + failed
    );
    assert!(ok > 100, "only {ok} rounds in {with_fault:?}");
    assert!(reauth_failures >= 3, "{reauth_failures} re-AUTH failures");
    assert_eq!(
        reauths_with_fault, 0,
        "a re-AUTH succeeded with the fault on"
    );
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close a connection at expiry"
    );

    // Healed: the connection re-authenticates in place again.
    emulator.faults().set_refuse_reauth(false);
    let deadline = Instant::now() + lifetime * 3;
    let mut healed = false;
    while !healed {
        assert!(
            Instant::now() < deadline,
            "no re-AUTH after the fault ended"
        );
        i += 1;
        assert!(round(&mut conn, i).await, "a round failed after the fault");
        while let Ok(ev) = events.try_recv() {
            if let TokenEvent::ConnectionReauthenticated { connection_id, .. } = ev {
                healed |= connection_id == id;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{ok} rounds (+{w_ok} by workers, slowest {} ms), {replacements} replacements and \
         {reauth_failures} refused re-AUTHs in {with_fault:?}",
        workers.slowest_ms.load(Ordering::Relaxed)
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_whose_reauth_keeps_failing_are_replaced_before_expiry() {
    use redis_entra::EntraAsyncConnectionManager;

    let lifetime = Duration::from_secs(4);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    // Three connections for two borrowers: one is idle at any time.
    let pool = bb8::Pool::builder()
        .max_size(3)
        .min_idle(Some(3))
        .build(EntraAsyncConnectionManager::new(
            connect_options(&emulator),
            manager.clone(),
        ))
        .await
        .unwrap();
    emulator.faults().set_refuse_reauth(true);
    let fault_on = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let borrowers: Vec<_> = (0..2)
        .map(|w| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let key = format!("reauth:bb8:{w}");
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let r = tokio::time::timeout(Duration::from_secs(5), async {
                        let mut conn = pool.get().await?;
                        let _: () = conn.set(&key, i).await?;
                        let v: u64 = conn.get(&key).await?;
                        anyhow::ensure!(v == i, "read {v}, wrote {i}");
                        Ok(())
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("borrower {w}, round {i}: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let (mut reauth_failures, mut replacements) = (0u32, 0u32);
    while fault_on.elapsed() < lifetime * 3 || replacements < 3 {
        assert!(
            fault_on.elapsed() < Duration::from_secs(60),
            "only {replacements} replacements in 60 s"
        );
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(TokenEvent::ReauthenticationFailed { .. })) => reauth_failures += 1,
            Ok(Ok(TokenEvent::Reconnected { reason, .. })) => {
                assert_eq!(reason, "re-authentication kept failing");
                replacements += 1;
            }
            Ok(Ok(TokenEvent::ConnectionReauthenticated { .. })) => {
                panic!("a re-AUTH succeeded with the fault on")
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    for b in borrowers {
        b.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100, "only {ok} rounds");
    assert!(reauth_failures >= 3, "{reauth_failures} re-AUTH failures");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close a pooled connection at expiry"
    );
    eprintln!("bb8: {ok} rounds, {replacements} replacements, {reauth_failures} refused re-AUTHs");
    drop(pool);
    emulator.shutdown().await;
}
