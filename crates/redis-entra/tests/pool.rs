//! r2d2 and bb8 pools against the emulator: several borrowers, ten token rotations, no failed
//! command, transactions never broken, idle connections re-authenticated rather than dropped.
#![cfg(all(feature = "r2d2", feature = "bb8"))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{AsyncCommands, Commands};
use redis_entra::{
    BlockingTokenManager, EntraAsyncConnectionManager, EntraConnectionManager, TokenEvent,
    TokenManager,
};
use tokio::sync::broadcast;

use common::*;

const ROTATIONS: u64 = 10;
const BORROWERS: u64 = 3;

/// What the token events said while the pool ran.
#[derive(Default, Debug)]
struct Seen {
    reauths: u64,
    reconnects: u64,
    took: Vec<Duration>,
}

fn tally(events: &mut broadcast::Receiver<TokenEvent>, seen: &mut Seen) {
    while let Ok(ev) = events.try_recv() {
        match ev {
            TokenEvent::ConnectionReauthenticated { took, .. } => {
                seen.reauths += 1;
                seen.took.push(took);
            }
            TokenEvent::Reconnected { reason, .. } => {
                eprintln!("reconnected: {reason}");
                seen.reconnects += 1;
            }
            _ => {}
        }
    }
}

fn median(took: &mut [Duration]) -> Duration {
    took.sort();
    took.get(took.len() / 2).copied().unwrap_or_default()
}

/// A plain sync program with an r2d2 pool; the emulator runs on a runtime of its own.
#[test]
fn an_r2d2_pool_stays_authenticated_across_ten_rotations() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(emulator(Duration::from_secs(3)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let mut events = tokens.events();
    let first = tokens.credentials().unwrap().generation();
    // One more connection than borrowers: it sits idle and must be re-authenticated there.
    let pool = r2d2::Pool::builder()
        .max_size(BORROWERS as u32 + 1)
        .build(EntraConnectionManager::new(
            connect_options(&emulator),
            tokens.clone(),
        ))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..BORROWERS)
        .map(|w| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let round = (|| -> anyhow::Result<()> {
                        let mut conn = pool.get()?;
                        let key = format!("r2d2:{w}");
                        let _: () = conn.set(&key, i)?;
                        let v: u64 = conn.get(&key)?;
                        anyhow::ensure!(v == i, "read {v}, wrote {i}");
                        // A transaction sent as separate round trips.
                        redis::cmd("MULTI").exec(&mut *conn)?;
                        redis::cmd("INCR")
                            .arg(format!("{key}:n"))
                            .exec(&mut *conn)?;
                        redis::cmd("SET").arg(&key).arg(i + 1).exec(&mut *conn)?;
                        let (n, set): (i64, String) = redis::cmd("EXEC").query(&mut *conn)?;
                        anyhow::ensure!(n >= 1 && set == "OK", "EXEC answered {n}, {set}");
                        Ok(())
                    })();
                    match round {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("borrower {w}, round {i}: {e:#}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait, on the manager's events, for ten new tokens.
    while tokens.current().unwrap().generation() < first + ROTATIONS {
        assert!(Instant::now() < deadline, "ten rotations took over 120 s");
        match events.blocking_recv() {
            Ok(TokenEvent::ConnectionReauthenticated { took, .. }) => {
                seen.reauths += 1;
                seen.took.push(took);
            }
            Ok(TokenEvent::Reconnected { reason, .. }) => {
                eprintln!("reconnected: {reason}");
                seen.reconnects += 1;
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    tally(&mut events, &mut seen);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "r2d2: {ok} rounds, {} re-authentications in {:?}, AUTH median {:?}",
        seen.reauths,
        started.elapsed(),
        median(&mut seen.took)
    );
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100);
    assert_eq!(
        seen.reconnects, 0,
        "connections were re-authenticated, not replaced"
    );
    assert!(seen.reauths >= ROTATIONS * (BORROWERS + 1) - BORROWERS - 1);
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "no connection, busy or idle, reached its token's expiry"
    );
    drop(pool);
    runtime.block_on(emulator.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bb8_pool_stays_authenticated_across_ten_rotations() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap().generation();
    let pool = bb8::Pool::builder()
        .max_size(BORROWERS as u32 + 1)
        .min_idle(Some(BORROWERS as u32 + 1))
        .build(EntraAsyncConnectionManager::new(
            connect_options(&emulator),
            manager.clone(),
        ))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..BORROWERS)
        .map(|w| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let round = async {
                        let mut conn = pool.get().await?;
                        let key = format!("bb8:{w}");
                        let _: () = conn.set(&key, i).await?;
                        let v: u64 = conn.get(&key).await?;
                        anyhow::ensure!(v == i, "read {v}, wrote {i}");
                        redis::cmd("MULTI").exec_async(&mut *conn).await?;
                        redis::cmd("INCR")
                            .arg(format!("{key}:n"))
                            .exec_async(&mut *conn)
                            .await?;
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(i + 1)
                            .exec_async(&mut *conn)
                            .await?;
                        let (n, set): (i64, String) =
                            redis::cmd("EXEC").query_async(&mut *conn).await?;
                        anyhow::ensure!(n >= 1 && set == "OK", "EXEC answered {n}, {set}");
                        Ok(())
                    }
                    .await;
                    match round {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("borrower {w}, round {i}: {e:#}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let mut seen = Seen::default();
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while manager.current().unwrap().generation() < first + ROTATIONS {
            match events.recv().await {
                Ok(TokenEvent::ConnectionReauthenticated { took, .. }) => {
                    seen.reauths += 1;
                    seen.took.push(took);
                }
                Ok(TokenEvent::Reconnected { reason, .. }) => {
                    eprintln!("reconnected: {reason}");
                    seen.reconnects += 1;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "ten rotations took over 120 s");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    tally(&mut events, &mut seen);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "bb8: {ok} rounds, {} re-authentications in {:?}, AUTH median {:?}",
        seen.reauths,
        started.elapsed(),
        median(&mut seen.took)
    );
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100);
    assert_eq!(
        seen.reconnects, 0,
        "connections were re-authenticated, not replaced"
    );
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "no connection, busy or idle, reached its token's expiry"
    );
    drop(pool);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_bb8_transaction_open_across_a_token_arrival_is_not_broken() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let before = manager.credentials().await.unwrap().generation();
    let pool = bb8::Pool::builder()
        .max_size(1)
        .build(EntraAsyncConnectionManager::new(
            connect_options(&emulator),
            manager.clone(),
        ))
        .await
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.del("bb8:tx").await.unwrap();
    redis::cmd("MULTI").exec_async(&mut *conn).await.unwrap();
    redis::cmd("INCR")
        .arg("bb8:tx")
        .exec_async(&mut *conn)
        .await
        .unwrap();
    loop {
        match events.recv().await.unwrap() {
            TokenEvent::Refreshed { generation, .. } if generation > before => break,
            _ => {}
        }
    }
    redis::cmd("INCR")
        .arg("bb8:tx")
        .exec_async(&mut *conn)
        .await
        .unwrap();
    let replies: Vec<i64> = redis::cmd("EXEC").query_async(&mut *conn).await.unwrap();
    assert_eq!(
        replies,
        vec![1, 2],
        "no AUTH was queued inside the transaction"
    );
    drop(conn);
    emulator.shutdown().await;
}
