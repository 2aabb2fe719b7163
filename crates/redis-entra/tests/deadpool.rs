//! The deadpool pool: connections that stay authenticated, busy or idle, across token rotations,
//! and the pools' contract (never a connection in a state its borrower did not ask for),
//! attacked as for bb8 and r2d2.
#![cfg(feature = "deadpool")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::Pool;
use redis::AsyncCommands;
use redis_entra::{EntraConnection, EntraDeadpoolManager, TokenEvent, TokenManager};
use redis_entra_emulator::Emulator;

use common::*;

const BORROWERS: usize = 4;

fn pool(emulator: &Emulator, manager: &TokenManager, size: usize) -> Pool<EntraDeadpoolManager> {
    Pool::builder(EntraDeadpoolManager::new(
        connect_options(emulator),
        manager.clone(),
    ))
    .max_size(size)
    .build()
    .unwrap()
}

/// Reads `key` on a connection of its own (not from the pool under test).
async fn read_fresh(emulator: &Emulator, manager: &TokenManager, key: &str) -> Option<String> {
    let mut conn = EntraConnection::connect(connect_options(emulator), manager.clone())
        .await
        .unwrap();
    conn.get(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadpool_pool_stays_authenticated_across_ten_rotations() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap().generation();
    // Twice as many connections as borrowers: half of them sit idle at any time.
    let pool = pool(&emulator, &manager, BORROWERS * 2);
    let warm: Vec<_> = futures::future::join_all((0..BORROWERS * 2).map(|_| pool.get())).await;
    drop(warm);
    assert_eq!(pool.status().size, BORROWERS * 2);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..BORROWERS)
        .map(|w| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let round = async {
                        let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                        let key = format!("deadpool:{w}");
                        let _: () = conn.set(&key, i).await?;
                        let v: u64 = conn.get(&key).await?;
                        anyhow::ensure!(v == i, "read {v}, wrote {i}");
                        redis::cmd("MULTI").exec_async(&mut *conn).await?;
                        redis::cmd("INCR")
                            .arg(format!("{key}:n"))
                            .exec_async(&mut *conn)
                            .await?;
                        let (n,): (i64,) = redis::cmd("EXEC").query_async(&mut *conn).await?;
                        anyhow::ensure!(n >= 1, "EXEC answered {n}");
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

    let mut reconnects = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while manager.current().unwrap().generation() < first + 10 {
            if let Ok(TokenEvent::Reconnected { reason, .. }) = events.recv().await {
                eprintln!("reconnected: {reason}");
                reconnects += 1;
            }
        }
    })
    .await
    .expect("ten rotations within 120 s");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100, "only {ok} rounds");
    assert_eq!(
        reconnects, 0,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_never_hands_out_a_connection_left_inside_multi() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = pool(&emulator, &manager, 1);
    {
        // Borrower A opens a transaction and returns early (an error, a `?`).
        let mut a = pool.get().await.unwrap();
        redis::cmd("MULTI").exec_async(&mut *a).await.unwrap();
        let _: () = a.set("inv:deadpool:a", 1).await.unwrap();
    }
    let mut b = pool.get().await.unwrap();
    let result: redis::RedisResult<()> = b.set("inv:deadpool:b", 2).await;
    drop(b);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        read_fresh(&emulator, &manager, "inv:deadpool:b")
            .await
            .as_deref(),
        Some("2"),
        "B's SET was acknowledged but never ran"
    );
    assert_eq!(
        read_fresh(&emulator, &manager, "inv:deadpool:a").await,
        None,
        "A's abandoned transaction ran"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_a_borrower_that_panics_inside_multi_does_not_poison_the_next_one() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = pool(&emulator, &manager, 1);
    let p = pool.clone();
    let panicked = tokio::spawn(async move {
        let mut a = p.get().await.unwrap();
        redis::cmd("MULTI").exec_async(&mut *a).await.unwrap();
        let _: () = a.set("inv:deadpool:panic", 1).await.unwrap();
        panic!("the borrower panics inside MULTI");
    })
    .await;
    assert!(panicked.is_err());
    let mut b = pool.get().await.unwrap();
    let _: () = b.set("inv:deadpool:after", 2).await.unwrap();
    drop(b);
    assert_eq!(
        read_fresh(&emulator, &manager, "inv:deadpool:after")
            .await
            .as_deref(),
        Some("2")
    );
    emulator.shutdown().await;
}
